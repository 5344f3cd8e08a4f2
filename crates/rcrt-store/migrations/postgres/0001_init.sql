-- Secrets: one row per secret; the value lives in secret_versions.
CREATE TABLE secrets (
    id              UUID PRIMARY KEY,
    tenant          TEXT NOT NULL,
    name            TEXT NOT NULL,
    scope_type      TEXT NOT NULL CHECK (scope_type IN ('global', 'workspace', 'agent')),
    scope_id        TEXT NOT NULL DEFAULT '',
    current_version BIGINT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant, scope_type, scope_id, name)
);

-- One row per version: the sealed value and its wrapped DEK. Deleting the secret deletes these
-- (crypto-shredding); audit rows stay.
CREATE TABLE secret_versions (
    secret_id    UUID NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
    version      BIGINT NOT NULL,
    kek_id       TEXT NOT NULL,
    wrapped_dek  BYTEA NOT NULL,
    sealed_value BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    -- When the value was last sealed under a fresh DEK (re-encryption moves it; re-wrap does not).
    sealed_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (secret_id, version)
);
CREATE INDEX secret_versions_kek_id ON secret_versions (kek_id);

-- The audit log, named and shaped so the guide's 30-day query runs unchanged.
CREATE TABLE secret_access_log (
    id         BIGSERIAL PRIMARY KEY,
    timestamp  TIMESTAMPTZ NOT NULL,
    action     TEXT NOT NULL,
    secret_id  UUID,
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
    expires_at TIMESTAMPTZ NOT NULL
);
