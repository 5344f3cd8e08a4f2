-- Vaults: named sets of secrets in a workspace. A vault's secrets are ordinary secrets (scope
-- workspace, name "<vault>/<KEY>") that point at it.
CREATE TABLE vaults (
    id         UUID PRIMARY KEY,
    tenant     TEXT NOT NULL,
    workspace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant, workspace, name)
);
ALTER TABLE secrets ADD COLUMN vault_id UUID REFERENCES vaults (id) ON DELETE CASCADE;
CREATE INDEX secrets_vault ON secrets (vault_id) WHERE vault_id IS NOT NULL;

-- Row-level security: request-path connections run as the database's app role (0004) with
-- rcrt.tenant set, so a query that forgot its tenant filter still sees only that tenant's rows.
-- (This migration used to create a cluster-wide role rcrt_app and grant it here; 0004 replaces
-- it with a role per database and revokes rcrt_app's privileges where they were granted.)

ALTER TABLE secrets ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON secrets
    USING (tenant = current_setting('rcrt.tenant', true))
    WITH CHECK (tenant = current_setting('rcrt.tenant', true));

ALTER TABLE vaults ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON vaults
    USING (tenant = current_setting('rcrt.tenant', true))
    WITH CHECK (tenant = current_setting('rcrt.tenant', true));

ALTER TABLE secret_access_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON secret_access_log
    USING (tenant = current_setting('rcrt.tenant', true))
    WITH CHECK (tenant = current_setting('rcrt.tenant', true));

-- A version is visible exactly when its secret is (the subquery is itself filtered by RLS).
ALTER TABLE secret_versions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON secret_versions
    USING (EXISTS (SELECT 1 FROM secrets s WHERE s.id = secret_id));
