-- Tamper evidence for the audit log (issue 12). Every new row carries its place in one of 32
-- hash chains ("lanes"): its number in the lane and its link hash, SHA-256(previous link ||
-- content hash || lane || seq) (see crates/rcrt-store/src/chain.rs). Several lanes let concurrent
-- writers and replicas commit without queueing on one chain head. Rows written before this
-- migration keep NULL chain columns (the verifier accepts them only before the first chained row).
ALTER TABLE secret_access_log
    ADD COLUMN chain_lane INT,
    ADD COLUMN chain_seq BIGINT,
    ADD COLUMN chain_hash BYTEA,
    ADD CONSTRAINT secret_access_log_chain_all_or_none
        CHECK ((chain_lane IS NULL) = (chain_seq IS NULL)
               AND (chain_seq IS NULL) = (chain_hash IS NULL)),
    ADD CONSTRAINT secret_access_log_chain_hash_len
        CHECK (chain_hash IS NULL OR octet_length(chain_hash) = 32),
    ADD CONSTRAINT secret_access_log_chain_place UNIQUE (chain_lane, chain_seq);
-- GET /audit pages one tenant's rows by id.
CREATE INDEX secret_access_log_tenant_id ON secret_access_log (tenant, id);
-- The verifier lists rows without a link; they are few (pre-chain rows), the table is not.
CREATE INDEX secret_access_log_unchained ON secret_access_log (id) WHERE chain_lane IS NULL;

-- Each lane's newest link. A writer holds its lane (a transaction-level advisory lock, see
-- postgres.rs) for the rest of its transaction, so the lane's rows are numbered (and their ids
-- assigned) in commit order. seq 0 with 32 zero bytes
-- (chain.rs GENESIS) is an empty lane. Updated on every audit row: a low fillfactor keeps the
-- updates HOT (nothing indexed changes), and autovacuum visits it after every few thousand
-- updates (whatever its size), so dead versions do not pile up on 32 live rows.
CREATE TABLE audit_chain_heads (
    lane INT PRIMARY KEY,
    seq  BIGINT NOT NULL,
    hash BYTEA NOT NULL CHECK (octet_length(hash) = 32)
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000);
INSERT INTO audit_chain_heads (lane, seq, hash)
    SELECT g, 0, decode(repeat('00', 32), 'hex') FROM generate_series(0, 31) AS g;

-- Signed statements of every lane's head (so a truncated tail is detected): heads is the JSON of
-- [{"lane":..,"seq":..,"hash":"<hex>"}], the signature is Ed25519 over canonical bytes made in
-- rcrt-core. Written and read by the owner only (maintenance connections).
CREATE TABLE audit_checkpoints (
    id         BIGSERIAL PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL,
    key_id     TEXT NOT NULL,
    heads      TEXT NOT NULL,
    signature  BYTEA NOT NULL
);

-- The checkpoint signing keys: the public key in clear, the seed wrapped like a DEK.
CREATE TABLE audit_signing_keys (
    id          TEXT PRIMARY KEY,
    public_key  BYTEA NOT NULL,
    kek_id      TEXT NOT NULL,
    wrapped_key BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

-- The request path (the app role of 0004) writes audit rows, so it moves the lane heads. The
-- audit log itself stays append-only for it (SELECT, INSERT from 0004; no UPDATE or DELETE), and
-- it gets nothing on checkpoints or signing keys.
DO $$
DECLARE
    app text := (SELECT value FROM rcrt_state WHERE key = 'app_role');
BEGIN
    EXECUTE format('GRANT SELECT, UPDATE ON audit_chain_heads TO %I', app);
END $$;
