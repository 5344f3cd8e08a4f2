//! Embedded migrations, applied in order at open; each runs once, recorded in
//! `rcrt_schema_migrations`.

/// (version, SQL) for SQLite.
pub(crate) const SQLITE: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_vaults.sql")),
    (3, include_str!("../migrations/sqlite/0003_tokens.sql")),
    (
        4,
        include_str!("../migrations/sqlite/0004_list_indexes.sql"),
    ),
    (
        5,
        include_str!("../migrations/sqlite/0005_recovery_wrap.sql"),
    ),
    (6, include_str!("../migrations/sqlite/0006_audit_chain.sql")),
    (
        7,
        include_str!("../migrations/sqlite/0007_kek_pair_index.sql"),
    ),
    (8, include_str!("../migrations/sqlite/0008_lifecycle.sql")),
    (
        9,
        include_str!("../migrations/sqlite/0009_console_sessions.sql"),
    ),
    (
        10,
        include_str!("../migrations/sqlite/0010_vault_list_index.sql"),
    ),
];

/// (version, SQL) for PostgreSQL.
pub(crate) const POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("../migrations/postgres/0002_vaults_rls.sql"),
    ),
    (3, include_str!("../migrations/postgres/0003_tokens.sql")),
    (
        4,
        include_str!("../migrations/postgres/0004_app_role_per_database.sql"),
    ),
    (
        5,
        include_str!("../migrations/postgres/0005_recovery_wrap.sql"),
    ),
    (
        6,
        include_str!("../migrations/postgres/0006_audit_chain.sql"),
    ),
    (
        7,
        include_str!("../migrations/postgres/0007_kek_pair_index.sql"),
    ),
    (8, include_str!("../migrations/postgres/0008_lifecycle.sql")),
    (
        9,
        include_str!("../migrations/postgres/0009_console_sessions.sql"),
    ),
    (
        10,
        include_str!("../migrations/postgres/0010_vault_list_index.sql"),
    ),
    (
        11,
        include_str!("../migrations/postgres/0011_version_tenant.sql"),
    ),
    (
        12,
        include_str!("../migrations/postgres/0012_audit_append_function.sql"),
    ),
];

/// The table that records applied migrations (same DDL on both databases).
pub(crate) const LEDGER: &str = "CREATE TABLE IF NOT EXISTS rcrt_schema_migrations (
    version BIGINT PRIMARY KEY,
    applied_at TEXT NOT NULL
)";
