-- Tamper evidence for the audit log (issue 12): every new row carries its place in the hash
-- chain (see crates/rcrt-store/src/chain.rs). SQLite has one writer, so one lane (0). Rows
-- written before this migration keep NULL chain columns.
ALTER TABLE secret_access_log ADD COLUMN chain_lane INTEGER;
ALTER TABLE secret_access_log ADD COLUMN chain_seq INTEGER
    CHECK ((chain_lane IS NULL) = (chain_seq IS NULL));
ALTER TABLE secret_access_log ADD COLUMN chain_hash BLOB
    CHECK ((chain_seq IS NULL) = (chain_hash IS NULL)
           AND (chain_hash IS NULL OR length(chain_hash) = 32));
CREATE UNIQUE INDEX secret_access_log_chain_place ON secret_access_log (chain_lane, chain_seq);
CREATE INDEX secret_access_log_tenant_id ON secret_access_log (tenant, id);
CREATE INDEX secret_access_log_unchained ON secret_access_log (id) WHERE chain_lane IS NULL;

-- The lane's newest link; seq 0 with 32 zero bytes (GENESIS) is an empty lane.
CREATE TABLE audit_chain_heads (
    lane INTEGER PRIMARY KEY,
    seq  INTEGER NOT NULL,
    hash BLOB NOT NULL CHECK (length(hash) = 32)
);
INSERT INTO audit_chain_heads (lane, seq, hash) VALUES (0, 0, zeroblob(32));

-- Signed statements of the lane heads; heads is JSON [{"lane":..,"seq":..,"hash":"<hex>"}].
CREATE TABLE audit_checkpoints (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    heads      TEXT NOT NULL,
    signature  BLOB NOT NULL
);

-- The checkpoint signing keys: the public key in clear, the seed wrapped like a DEK.
CREATE TABLE audit_signing_keys (
    id          TEXT PRIMARY KEY,
    public_key  BLOB NOT NULL,
    kek_id      TEXT NOT NULL,
    wrapped_key BLOB NOT NULL,
    created_at  TEXT NOT NULL
);
