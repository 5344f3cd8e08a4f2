-- Same shape as the PostgreSQL schema. Ids are lowercase hyphenated UUID text (sorts like the
-- bytes); timestamps are RFC 3339 UTC text with 6 fractional digits (sorts chronologically).
CREATE TABLE secrets (
    id              TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL,
    name            TEXT NOT NULL,
    scope_type      TEXT NOT NULL CHECK (scope_type IN ('global', 'workspace', 'agent')),
    scope_id        TEXT NOT NULL DEFAULT '',
    current_version INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    UNIQUE (tenant, scope_type, scope_id, name)
);

CREATE TABLE secret_versions (
    secret_id    TEXT NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    kek_id       TEXT NOT NULL,
    wrapped_dek  BLOB NOT NULL,
    sealed_value BLOB NOT NULL,
    created_at   TEXT NOT NULL,
    -- When the value was last sealed under a fresh DEK (re-encryption moves it; re-wrap does not).
    sealed_at    TEXT NOT NULL,
    PRIMARY KEY (secret_id, version)
);
CREATE INDEX secret_versions_kek_id ON secret_versions (kek_id);

CREATE TABLE secret_access_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp  TEXT NOT NULL,
    action     TEXT NOT NULL,
    secret_id  TEXT,
    tenant     TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    reason     TEXT,
    outcome    TEXT NOT NULL,
    request_id TEXT NOT NULL
);
CREATE INDEX secret_access_log_timestamp ON secret_access_log (timestamp);
CREATE INDEX secret_access_log_secret ON secret_access_log (secret_id);

-- Small durable state for maintenance jobs (e.g. the cut-off of an interrupted re-encryption).
CREATE TABLE rcrt_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Leases: which replica runs a background job (the background re-wrap) until when.
CREATE TABLE rcrt_leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
