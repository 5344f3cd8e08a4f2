-- pgbench custom script: exactly what rcrt-server sends to PostgreSQL for one successful decrypt
-- since row-level security landed (migration 0002_vaults_rls, commit 39a07bc): each store call
-- first switches the pooled connection to role rcrt_app and the caller's tenant
-- (PgStore::tenant_client), then runs its statement; get_current and append_audit are separate
-- autocommit calls. Four round trips, one WAL flush, RLS policies evaluated on every statement.
-- bench/http.sh runs it only when the database has the rcrt_app role and RLS on secrets, and
-- grants rcrt_app SELECT on the helper table bench_ids.
-- Run with: pgbench -n -M prepared -D nids=<rows in bench_ids> -f bench/pgbench/decrypt_as_server.sql
\set n random(1, :nids)
SELECT set_config('role', 'rcrt_app', false), set_config('rcrt.tenant', 'default', false);
SELECT s.id, s.tenant, s.name, s.scope_type, s.scope_id, s.current_version,
       s.created_at, s.updated_at,
       v.version, v.kek_id, v.wrapped_dek, v.sealed_value, v.created_at
  FROM secrets s
  JOIN secret_versions v ON v.secret_id = s.id AND v.version = s.current_version
 WHERE s.id = (SELECT id FROM bench_ids WHERE n = :n) AND s.tenant = 'default';
SELECT set_config('role', 'rcrt_app', false), set_config('rcrt.tenant', 'default', false);
INSERT INTO secret_access_log
    (timestamp, action, secret_id, tenant, user_id, reason, outcome, request_id)
    VALUES (now(), 'decrypt', (SELECT id FROM bench_ids WHERE n = :n), 'default', 'anonymous',
            'bench', 'success', '0190f7a4-5b6c-7d8e-9f00-112233445566');
