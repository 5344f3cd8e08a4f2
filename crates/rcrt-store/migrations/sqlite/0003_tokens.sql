-- Service tokens: only the SHA-256 verifier of the secret is stored, never the token.
-- roles and workspaces are JSON arrays of strings; times are RFC 3339 UTC text.
CREATE TABLE auth_tokens (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    name        TEXT NOT NULL,
    principal   TEXT NOT NULL,
    roles       TEXT NOT NULL,
    workspaces  TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    revoked_at  TEXT
);
CREATE INDEX auth_tokens_tenant ON auth_tokens (tenant, id);

-- Token actions name their token; secret_id stays for secret actions.
ALTER TABLE secret_access_log ADD COLUMN token_id TEXT;
