-- Secret lifecycle (issue 15): descriptive attributes, soft delete, destroyed versions,
-- idempotency keys and the version an audit row names. Same shape as the PostgreSQL migration.
-- Times are RFC 3339 UTC text with 6 fractional digits, like every other time column.

-- Attributes (not secret, tenant-isolated like the row): labels is a JSON object of strings.
ALTER TABLE secrets ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE secrets ADD COLUMN labels TEXT NOT NULL DEFAULT '{}'
    CHECK (json_valid(labels) AND json_type(labels) = 'object');
ALTER TABLE secrets ADD COLUMN expires_at TEXT;
ALTER TABLE secrets ADD COLUMN max_versions INTEGER;
-- Soft delete: both set exactly while the secret is in its recovery window.
ALTER TABLE secrets ADD COLUMN deleted_at TEXT;
ALTER TABLE secrets ADD COLUMN purge_at TEXT
    CHECK ((deleted_at IS NULL) = (purge_at IS NULL));
-- The purge job reads due secrets from this index; the expiring gauge and the expires_before
-- listing filter read ranges of the other. Both hold only the rows that have a value.
CREATE INDEX secrets_purge_at ON secrets (purge_at) WHERE purge_at IS NOT NULL;
CREATE INDEX secrets_expires_at ON secrets (expires_at) WHERE expires_at IS NOT NULL;

-- Who wrote each version (the audit log's user_id; '' for versions written before this).
ALTER TABLE secret_versions ADD COLUMN created_by TEXT NOT NULL DEFAULT '';

-- What remains of a destroyed version: when it was written, by whom, when it was destroyed.
-- No key or value material, so the KEK census and the re-wrap (which read secret_versions only)
-- never see it.
CREATE TABLE destroyed_versions (
    secret_id    TEXT NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    created_by   TEXT NOT NULL DEFAULT '',
    destroyed_at TEXT NOT NULL,
    PRIMARY KEY (secret_id, version)
);

-- Remembered answers to writes sent with an Idempotency-Key, per (tenant, principal, key),
-- written in the write's own transaction; the purge deletes expired ones by expires_at.
CREATE TABLE idempotency_keys (
    tenant      TEXT NOT NULL,
    principal   TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint BLOB NOT NULL CHECK (length(fingerprint) = 32),
    outcome     TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    PRIMARY KEY (tenant, principal, key)
);
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);

-- The secret version an audit row names (a decrypt of a given version, a rollback's source, a
-- destroyed version); NULL otherwise and on older rows.
ALTER TABLE secret_access_log ADD COLUMN version INTEGER;
