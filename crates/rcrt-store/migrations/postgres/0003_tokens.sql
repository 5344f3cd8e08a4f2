-- Service tokens: only the SHA-256 verifier of the secret is stored, never the token.
CREATE TABLE auth_tokens (
    id          UUID PRIMARY KEY,
    tenant      TEXT NOT NULL,
    name        TEXT NOT NULL,
    principal   TEXT NOT NULL,
    roles       TEXT[] NOT NULL,
    workspaces  TEXT[] NOT NULL,
    secret_hash BYTEA NOT NULL CHECK (octet_length(secret_hash) = 32),
    created_by  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX auth_tokens_tenant ON auth_tokens (tenant, id);

-- Token actions name their token; secret_id stays for secret actions.
ALTER TABLE secret_access_log ADD COLUMN token_id UUID;

-- Managing tokens runs as the app role (0004) for one tenant, like every request path.
-- Verifying a presented token (the tenant is not known yet) reads by id as the owner. (The grant
-- to the old cluster-wide rcrt_app that stood here is revoked by 0004.)
ALTER TABLE auth_tokens ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON auth_tokens
    USING (tenant = current_setting('rcrt.tenant', true))
    WITH CHECK (tenant = current_setting('rcrt.tenant', true));
