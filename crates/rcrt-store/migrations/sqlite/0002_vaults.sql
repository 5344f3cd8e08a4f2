CREATE TABLE vaults (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    workspace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (tenant, workspace, name)
);
ALTER TABLE secrets ADD COLUMN vault_id TEXT REFERENCES vaults (id) ON DELETE CASCADE;
CREATE INDEX secrets_vault ON secrets (vault_id) WHERE vault_id IS NOT NULL;
