-- pgbench custom script: the SQL rcrt-server runs for one successful decrypt on PostgreSQL,
-- in one transaction (BEGIN; SELECT; INSERT; COMMIT).
--   * the SELECT is PgStore::get_current (crates/rcrt-store/src/postgres.rs), word for word,
--     with the id taken from the seeded helper table bench_ids(n, id) (:nids rows, n = 1..nids);
--   * the INSERT is INSERT_AUDIT with the values the service writes for a decrypt.
-- Run with: pgbench -n -M prepared -D nids=<rows in bench_ids> -f bench/pgbench/decrypt_tx.sql
-- (-M prepared: the server uses prepared statements too.)
\set n random(1, :nids)
BEGIN;
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
COMMIT;
