-- pgbench custom script: the same two statements as decrypt_tx.sql, without BEGIN/COMMIT.
-- This is what rcrt-server sent for one decrypt before row-level security (up to commit 3ce28a2):
-- PgStore::get_current and PgStore::append_audit as separate autocommit statements (two round
-- trips, one WAL flush), where decrypt_tx.sql costs four round trips for the same single WAL
-- flush. Since commit 39a07bc the server's exact sequence is decrypt_as_server.sql.
-- Run with: pgbench -n -M prepared -D nids=<rows in bench_ids> -f bench/pgbench/decrypt_autocommit.sql
\set n random(1, :nids)
SELECT s.id, s.tenant, s.name, s.scope_type, s.scope_id, s.current_version,
       s.created_at, s.updated_at,
       v.version, v.kek_id, v.wrapped_dek, v.sealed_value, v.created_at
  FROM secrets s
  JOIN secret_versions v ON v.secret_id = s.id AND v.version = s.current_version
 WHERE s.id = (SELECT id FROM bench_ids WHERE n = :n) AND s.tenant = 'default';
INSERT INTO secret_access_log
    (timestamp, action, secret_id, tenant, user_id, reason, outcome, request_id)
    VALUES (now(), 'decrypt', (SELECT id FROM bench_ids WHERE n = :n), 'default', 'anonymous',
            'bench', 'success', '0190f7a4-5b6c-7d8e-9f00-112233445566');
