-- The request path's role, one per database. PostgreSQL roles are cluster-wide: the shared
-- rcrt_app of 0002 was granted to every database owner on the cluster that ran this schema, so
-- another deployment's owner could SET ROLE rcrt_app in this database. The new role has a
-- random name, recorded in rcrt_state ('app_role'): a dropped and recreated database never
-- inherits an old role or its members. Only this database's owner is made a member.
--
-- Creating it needs CREATEROLE (or a superuser). On PostgreSQL 16+ a non-superuser creator gets
-- ADMIN OPTION on the new role (not SET); the GRANT below then gives it SET (and INHERIT, per
-- its own attribute), which `SET ROLE` needs.
DO $$
DECLARE
    app text := 'rcrt_app_' || replace(gen_random_uuid()::text, '-', '');
BEGIN
    EXECUTE format('CREATE ROLE %I NOLOGIN', app);
    EXECUTE format('GRANT %I TO CURRENT_USER', app);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON secrets, secret_versions, vaults TO %I', app);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON auth_tokens TO %I', app);
    -- The audit log is append-only for the request path.
    EXECUTE format('GRANT SELECT, INSERT ON secret_access_log TO %I', app);
    EXECUTE format('GRANT USAGE ON SEQUENCE secret_access_log_id_seq TO %I', app);
    INSERT INTO rcrt_state (key, value) VALUES ('app_role', app);
    -- Databases created before this migration granted the shared role; take it back here (its
    -- membership is cluster-wide and may still serve other databases, so it stays).
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rcrt_app') THEN
        REVOKE ALL ON secrets, secret_versions, vaults, auth_tokens, secret_access_log FROM rcrt_app;
        REVOKE ALL ON SEQUENCE secret_access_log_id_seq FROM rcrt_app;
    END IF;
END $$;

-- Row-level security also binds the owner (FORCE), so a query run as the owner by mistake sees
-- nothing. The owner's maintenance paths (re-wrap, KEK census, token lookup by id, bootstrap)
-- declare themselves with rcrt.maintenance = 'on' and see every tenant; the policy is the
-- owner's only (custom settings are settable by anyone, so it must not apply to the app role).
-- The audit log is not forced: operators read it as the owner (the guide's 30-day query).
ALTER TABLE secrets FORCE ROW LEVEL SECURITY;
CREATE POLICY maintenance ON secrets TO CURRENT_USER
    USING (current_setting('rcrt.maintenance', true) = 'on')
    WITH CHECK (current_setting('rcrt.maintenance', true) = 'on');

ALTER TABLE secret_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY maintenance ON secret_versions TO CURRENT_USER
    USING (current_setting('rcrt.maintenance', true) = 'on')
    WITH CHECK (current_setting('rcrt.maintenance', true) = 'on');

ALTER TABLE vaults FORCE ROW LEVEL SECURITY;
CREATE POLICY maintenance ON vaults TO CURRENT_USER
    USING (current_setting('rcrt.maintenance', true) = 'on')
    WITH CHECK (current_setting('rcrt.maintenance', true) = 'on');

ALTER TABLE auth_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY maintenance ON auth_tokens TO CURRENT_USER
    USING (current_setting('rcrt.maintenance', true) = 'on')
    WITH CHECK (current_setting('rcrt.maintenance', true) = 'on');
