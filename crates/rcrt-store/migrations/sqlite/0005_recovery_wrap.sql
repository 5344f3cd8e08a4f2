-- A second wrapping of each version's DEK, under the recovery KEK (when one is configured), so
-- that losing the main KEK's KMS or HSM is survivable. Both columns are NULL on versions written
-- without a recovery KEK (or before one was configured: the background re-wrap fills them in),
-- and both are set together.
ALTER TABLE secret_versions ADD COLUMN recovery_kek_id TEXT;
ALTER TABLE secret_versions ADD COLUMN recovery_wrapped_dek BLOB
    CHECK ((recovery_kek_id IS NULL) = (recovery_wrapped_dek IS NULL));
