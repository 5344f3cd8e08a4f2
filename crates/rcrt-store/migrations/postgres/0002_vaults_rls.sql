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

-- Row-level security: request-path connections run as rcrt_app with rcrt.tenant set, so a query
-- that forgot its tenant filter still sees only that tenant's rows. Maintenance jobs (re-wrap)
-- run as the owner, which RLS does not restrict.
DO $$ BEGIN
    CREATE ROLE rcrt_app NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
GRANT rcrt_app TO CURRENT_USER;
GRANT SELECT, INSERT, UPDATE, DELETE ON secrets, secret_versions, secret_access_log, vaults TO rcrt_app;
GRANT USAGE ON SEQUENCE secret_access_log_id_seq TO rcrt_app;

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
