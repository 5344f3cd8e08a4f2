-- Secret lifecycle (issue 15, docs/lifecycle.md): descriptive metadata, expiry, a version cap,
-- soft delete with a recovery window, records of destroyed versions, idempotency keys, and the
-- secret version an audit row names.

-- Metadata (not secret, tenant-isolated by the existing policies and covered by the existing
-- grants). deleted_at and purge_at are set together, exactly while the secret is soft-deleted.
ALTER TABLE secrets
    ADD COLUMN description  TEXT NOT NULL DEFAULT '',
    ADD COLUMN labels       JSONB NOT NULL DEFAULT '{}',
    ADD COLUMN expires_at   TIMESTAMPTZ,
    ADD COLUMN max_versions BIGINT,
    ADD COLUMN deleted_at   TIMESTAMPTZ,
    ADD COLUMN purge_at     TIMESTAMPTZ,
    ADD CONSTRAINT secrets_labels_object CHECK (jsonb_typeof(labels) = 'object'),
    ADD CONSTRAINT secrets_deletion_pair CHECK ((deleted_at IS NULL) = (purge_at IS NULL));
-- The purge job reads the secrets whose window ended; the expiring gauge and the listing's
-- expires_before filter read the secrets with an expiry. Both are few; the secrets are not.
CREATE INDEX secrets_purge_at ON secrets (purge_at) WHERE purge_at IS NOT NULL;
CREATE INDEX secrets_expires_at ON secrets (expires_at) WHERE expires_at IS NOT NULL;

-- Who wrote a version (the audit log's user_id; empty for versions written before this).
ALTER TABLE secret_versions ADD COLUMN created_by TEXT NOT NULL DEFAULT '';

-- What remains of a destroyed version: when it was written, by whom, and when it was destroyed.
-- No key or value material, so no KEK census or re-wrap scan reads it.
CREATE TABLE destroyed_versions (
    secret_id    UUID NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
    version      BIGINT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    created_by   TEXT NOT NULL,
    destroyed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (secret_id, version)
);

-- The first answer to a write sent with an Idempotency-Key, per (tenant, principal, key), until
-- expires_at. The outcome is metadata only, never a value.
CREATE TABLE idempotency_keys (
    tenant      TEXT NOT NULL,
    principal   TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint BYTEA NOT NULL CHECK (octet_length(fingerprint) = 32),
    outcome     TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, principal, key)
);
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);

-- The secret version an audit row names (a decrypt of a given version, a rollback's source, a
-- destroyed version); covered by the chain's content hash.
ALTER TABLE secret_access_log ADD COLUMN version BIGINT;

-- Row-level security as on the existing tables (0002, 0004): a destroyed version's record is
-- visible exactly when its secret is; an idempotency key by its tenant. FORCE binds the owner
-- too; its maintenance policy (the purge jobs) is the owner's only.
ALTER TABLE destroyed_versions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON destroyed_versions
    USING (EXISTS (SELECT 1 FROM secrets s WHERE s.id = secret_id));
ALTER TABLE destroyed_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY maintenance ON destroyed_versions TO CURRENT_USER
    USING (current_setting('rcrt.maintenance', true) = 'on')
    WITH CHECK (current_setting('rcrt.maintenance', true) = 'on');

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON idempotency_keys
    USING (tenant = current_setting('rcrt.tenant', true))
    WITH CHECK (tenant = current_setting('rcrt.tenant', true));
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY maintenance ON idempotency_keys TO CURRENT_USER
    USING (current_setting('rcrt.maintenance', true) = 'on')
    WITH CHECK (current_setting('rcrt.maintenance', true) = 'on');

-- The request path (the app role of 0004) reads, writes and deletes both; it updates only an
-- expired remembered answer, when a new write takes its key over.
DO $$
DECLARE
    app text := (SELECT value FROM rcrt_state WHERE key = 'app_role');
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON destroyed_versions, idempotency_keys TO %I', app);
    -- A write with a key whose record expired (not purged yet) takes the key over in place.
    EXECUTE format('GRANT UPDATE ON idempotency_keys TO %I', app);
END $$;
