-- pgbench custom script: exactly what rcrt-server sends to PostgreSQL for one successful decrypt
-- since row-level security landed (migration 0002_vaults_rls, commit 39a07bc): each store call
-- first switches the pooled connection to the database's app role and the caller's tenant, out
-- of maintenance (SET_TENANT in PgStore::tenant_client / as_tenant), then runs its statement;
-- get_current and append_audit are separate autocommit calls. RLS policies are evaluated on
-- every statement. The app role is per database since migration 0004 (rcrt_app_<random>, named
-- in rcrt_state under 'app_role'; the shared rcrt_app before it).
-- bench/http.sh runs it only when the database has that role and RLS on secrets, and grants the
-- role SELECT on the helper table bench_ids.
-- Run with: pgbench -n -M prepared -D nids=<rows in bench_ids> -D app_role=<role>
--   -f bench/pgbench/decrypt_as_server.sql
\set n random(1, :nids)
SELECT set_config('role', :app_role, false), set_config('rcrt.tenant', 'default', false),
       set_config('rcrt.maintenance', '', false);
SELECT s.id, s.tenant, s.name, s.scope_type, s.scope_id, s.current_version,
       s.created_at, s.updated_at,
       v.version, v.kek_id, v.wrapped_dek, v.sealed_value, v.created_at
  FROM secrets s
  JOIN secret_versions v ON v.secret_id = s.id AND v.version = s.current_version
 WHERE s.id = (SELECT id FROM bench_ids WHERE n = :n) AND s.tenant = 'default';
SELECT set_config('role', :app_role, false), set_config('rcrt.tenant', 'default', false),
       set_config('rcrt.maintenance', '', false);
INSERT INTO secret_access_log
    (timestamp, action, secret_id, tenant, user_id, reason, outcome, request_id)
    VALUES (now(), 'decrypt', (SELECT id FROM bench_ids WHERE n = :n), 'default', 'anonymous',
            'bench', 'success', '0190f7a4-5b6c-7d8e-9f00-112233445566');
