-- Helper table for the pgbench scripts: the ids the HTTP benchmark seeded, numbered 1..N.
-- bench/http.sh fills it with \copy from the same ids file wrk's decrypt.lua cycles over.
SET client_min_messages = warning;
DROP TABLE IF EXISTS bench_ids;
CREATE TABLE bench_ids (n serial PRIMARY KEY, id uuid NOT NULL);
