-- A batch of audit rows (the decrypt path's group commit) in one statement: the writer calls
-- this function outside an explicit transaction, so the lane, the links, the rows and the moved
-- head are written and committed in one round trip. The writer used to send them as four round
-- trips (BEGIN; tenant, lane, head; rows and head; COMMIT), later two; on a machine whose cores
-- are busy, every round trip waits for PostgreSQL and the server to be scheduled again.
--
-- The rows arrive sorted by tenant, each tenant's rows in one run. A run is inserted under its
-- tenant's setting (row-level security checks every row against it) and the runs in order, so
-- that within a lane ids grow with seq (`rcrt audit verify` relies on it). A link is
-- sha256(previous hash || content hash || lane (4 bytes, big-endian) || seq (8 bytes,
-- big-endian)), as in crates/rcrt-store/src/chain.rs and the single-row insert.
--
-- SECURITY INVOKER (the default): it runs with the caller's rights, so the app role's grants
-- and row-level security apply to every statement in it, as to the statements it replaces.
CREATE FUNCTION rcrt_append_audit(
    timestamps  TIMESTAMPTZ[],
    actions     TEXT[],
    secret_ids  UUID[],
    tenants     TEXT[],
    user_ids    TEXT[],
    reasons     TEXT[],
    outcomes    TEXT[],
    request_ids TEXT[],
    token_ids   UUID[],
    contents    BYTEA[],
    versions    INT8[]
) RETURNS INT4
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    n       INT4 := cardinality(contents);
    v_lane  INT4;
    v_seq   INT8;
    v_hash  BYTEA;
    v_seqs  INT8[] := '{}';
    v_links BYTEA[] := '{}';
    i       INT4;
    run     INT4 := 1;
BEGIN
    IF n IS NULL OR n = 0 THEN
        RETURN NULL;
    END IF;
    -- The first lane no other transaction holds, from one that depends on the connection; when
    -- every lane is held, wait for the connection's own.
    SELECT o.lane INTO v_lane
      FROM generate_series(0, 31) AS g(k),
           LATERAL (SELECT (g.k + pg_backend_pid()) % 32 AS lane) AS o
     WHERE pg_try_advisory_xact_lock(1919118446, o.lane)
     LIMIT 1;
    IF v_lane IS NULL THEN
        v_lane := pg_backend_pid() % 32;
        PERFORM pg_advisory_xact_lock(1919118446, v_lane);
    END IF;
    -- A statement of its own, after the lock: its snapshot sees the previous holder's commit.
    SELECT h.seq, h.hash INTO STRICT v_seq, v_hash FROM audit_chain_heads h WHERE h.lane = v_lane;
    FOR i IN 1..n LOOP
        v_seq := v_seq + 1;
        v_hash := sha256(v_hash || contents[i] || int4send(v_lane) || int8send(v_seq));
        v_seqs := v_seqs || v_seq;
        v_links := v_links || v_hash;
    END LOOP;
    FOR i IN 1..n LOOP
        IF i = n OR tenants[i + 1] IS DISTINCT FROM tenants[i] THEN
            PERFORM set_config('rcrt.tenant', tenants[i], true);
            INSERT INTO secret_access_log
                (timestamp, action, secret_id, tenant, user_id, reason, outcome, request_id,
                 token_id, version, chain_lane, chain_seq, chain_hash)
            SELECT timestamps[k], actions[k], secret_ids[k], tenants[k], user_ids[k], reasons[k],
                   outcomes[k], request_ids[k], token_ids[k], versions[k], v_lane, v_seqs[k],
                   v_links[k]
              FROM generate_series(run, i) AS k
             ORDER BY k;
            run := i + 1;
        END IF;
    END LOOP;
    UPDATE audit_chain_heads SET seq = v_seq, hash = v_hash WHERE lane = v_lane;
    RETURN v_lane;
END
$$;

-- Only the app role of 0004 calls it (and the owner, who owns it).
REVOKE EXECUTE ON FUNCTION rcrt_append_audit(TIMESTAMPTZ[], TEXT[], UUID[], TEXT[], TEXT[], TEXT[],
    TEXT[], TEXT[], UUID[], BYTEA[], INT8[]) FROM PUBLIC;
DO $$
DECLARE
    app text := (SELECT value FROM rcrt_state WHERE key = 'app_role');
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION rcrt_append_audit(TIMESTAMPTZ[], TEXT[], UUID[], '
                   'TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], UUID[], BYTEA[], INT8[]) TO %I', app);
END $$;
