-- The KEK census that runs at start-up and in every re-wrap poll (Store::kek_backlog) reads only
-- the versions that are not under the current KEK and recovery KEK, as ranges of this index; with
-- the recovery KEK id in the key, "under the current KEK but without the current recovery wrap"
-- is a range too. It replaces the index on kek_id alone, which is a prefix of it.
-- Built inside the migration's transaction (not CONCURRENTLY, which cannot run in one), so writes
-- to secret_versions wait while it builds: 1.6 s at 1M versions on the 2-vCPU benchmark machine.
CREATE INDEX secret_versions_kek_pair ON secret_versions (kek_id, recovery_kek_id);
DROP INDEX secret_versions_kek_id;
