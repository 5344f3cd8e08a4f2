#!/usr/bin/env bash
# Scaling benchmark of rcrt-server (issue 13): the same server at SMALL (10k) and at BIG (1M)
# stored secrets, on SQLite and on PostgreSQL, in one run.
#
#   1. decrypt and create (wrk -t2 -c32 -d10s, 1 KiB values, the shapes of bench/http.sh) at 10k
#      and at 1M, and the ratio 1M / 10k (target: within 20%);
#   2. a listing page, GET /secrets?scope_type=global&limit=100, first page and a page 90% deep
#      into the list (by its cursor), at 10k and at 1M (target: as fast at 1M, read as within 20%);
#   3. rcrt-server's RSS (VmRSS from /proc/PID/status) after start and after the load (target
#      <= 30 MB), and start-up time to the first /health answer on an empty store and on the 1M
#      store (target <= 200 ms);
#   plus, for the scaling model: time to the first /ready answer, one full KEK census (the
#   `GROUP BY kek_id` behind GET /admin/kek/status) and one backlog census (what the server runs
#   at start and every REWRAP poll), each with the client's start, the store's size and the time
#   taken to fill it.
#
# Usage: bench/scale.sh
# Knobs (environment): DURATION=10 THREADS=2 CONNS=32 SEED=1000 (real secrets, made through the
#   API, that decrypt cycles over) SMALL=10000 BIG=1000000 STARTS=3 (start-up samples per store,
#   the median is reported) BACKENDS="sqlite postgres" COMMIT_ROWS="1 8 32" (PostgreSQL: pgbench
#   cost per audit row at R rows per commit, after the 1M stage; empty skips it)
#   SERVER_ENV="VAR=value ..." (extra server environment, e.g. REWRAP_AUTO=false as a diagnostic)
#   PG_ADMIN_URL=postgres://postgres@127.0.0.1:5432/postgres (a superuser: the filler bypasses
#   row-level security) SKIP_BUILD=1 (use the release binary already in the target dir)
#   BENCH_REV=<commit> (build a clean `git archive` export of that commit, in
#   ${TMPDIR:-/tmp}/rcrt-scale-src, kept so a later run rebuilds only what changed)
#   CARGO_TARGET_DIR (default ./target)
#
# The filler: the bulk of each store is made directly in SQL, by copying the columns of one real
# secret (created through the API) into new rows with new ids and names ("fill-00000001", ...),
# in one transaction per step: secrets and secret_versions together, current_version pointing at
# the copied version row. Their ids are UUIDv7-shaped with timestamps from 2020, so they sort
# before every real secret (like an old store that grew). Their ciphertext stays bound (AAD) to
# the original id, so they must never be decrypted: wrk decrypts only the SEED real secrets.
# They write no audit rows: the audit log holds only what the runs wrote.
#
# Everything runs on 127.0.0.1; PostgreSQL gets a throwaway database rcrt_scale_<random>, dropped
# at exit, as is the temporary directory. Every step is bounded by a timeout except the cargo
# build. Prints a markdown table at the end; exits 1 on any non-2xx answer or socket error.
#
# Helpers: free_port stop_server pg_up machine_ticks field wrk_errors and the CPU accounting
# (proc_ticks cpu_begin cpu_end, CLK_TCK, NCPU) come from bench/lib.sh. start_server (timed, no
# token), seed and run_wrk (WAL and the result keys this table needs) differ from lib.sh's and are
# defined below, after it is sourced, so they win.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
SEED=${SEED:-1000}
SMALL=${SMALL:-10000}
BIG=${BIG:-1000000}
STARTS=${STARTS:-3}
COMMIT_ROWS=${COMMIT_ROWS-"1 8 32"}
SERVER_ENV=${SERVER_ENV:-}   # extra VAR=value words for the server's environment (diagnostics)
BACKENDS=${BACKENDS:-"sqlite postgres"}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
CMDLINE="DURATION=$DURATION THREADS=$THREADS CONNS=$CONNS SEED=$SEED SMALL=$SMALL BIG=$BIG STARTS=$STARTS COMMIT_ROWS=\"$COMMIT_ROWS\" BACKENDS=\"$BACKENDS\"${SERVER_ENV:+ SERVER_ENV=\"$SERVER_ENV\"}${BENCH_REV:+ BENCH_REV=$BENCH_REV} bench/scale.sh"

case "$PG_ADMIN_URL" in
  postgres://*@127.0.0.1:*/*|postgres://127.0.0.1:*/*) ;;
  *) echo "bench/scale.sh: PG_ADMIN_URL must point at 127.0.0.1 (postgres://USER@127.0.0.1:PORT/DB)" >&2; exit 2 ;;
esac

say() { printf '[scale %4ds] %s\n' "$SECONDS" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"   # free_port stop_server pg_up machine_ticks field wrk_errors proc_ticks cpu_begin cpu_end

[ "$SEED" -ge 1 ] && [ "$SMALL" -ge "$SEED" ] && [ "$BIG" -gt "$SMALL" ] \
  || die "need 1 <= SEED <= SMALL < BIG (SEED=$SEED SMALL=$SMALL BIG=$BIG)"
for tool in wrk curl jq openssl awk; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (wrk: apt-get install -y wrk)"
done
case " $BACKENDS " in *" postgres "*)
  for tool in psql pgbench; do command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"; done
esac
case " $BACKENDS " in *" sqlite "*)
  if command -v sqlite3 >/dev/null 2>&1; then SQLITE=sqlite3
  else command -v python3 >/dev/null 2>&1 || die "neither sqlite3 nor python3 is installed"; SQLITE=python
  fi
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rcrt-scale.XXXXXX")
SERVER_PID=""
PG_DB=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_server
  exec 8<&- 2>/dev/null || true
  if [ -n "$PG_DB" ]; then
    timeout 60 psql "$PG_ADMIN_URL" -qX -v ON_ERROR_STOP=1 \
      -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 \
      || say "could not drop database $PG_DB"
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A 1 ms pause without a fork: read with a timeout from a FIFO held open read-write (never EOF).
mkfifo "$WORK/tick"
exec 8<>"$WORK/tick"
pause_1ms() { read -r -t 0.001 -u 8 _ || true; }

# ---------------------------------------------------------------------------------------------
# Results
declare -A V=()     # "backend/key" -> value
COMMANDS=()
FAILED=0

rss_mb() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$SERVER_PID/status"; }
# "anon/file/shmem" MB: the parts of the RSS (heap and stacks; mapped files; SQLite's -shm).
rss_parts() {
  awk '/^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 } /^RssShmem:/ { s = $2 }
       END { printf "%.1f/%.1f/%.1f", a / 1024, f / 1024, s / 1024 }' "/proc/$SERVER_PID/status"
}

# One GET /health over bash's /dev/tcp (no fork): status 0 when it answers 200.
health_once() {
  local line=""
  { printf 'GET /health HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$PORT" >&9
    IFS= read -r -t 2 line <&9; } 2>/dev/null 9<>"/dev/tcp/127.0.0.1/$PORT" || return 1
  [[ $line == "HTTP/1."?" 200"* ]]
}

# Starts rcrt-server (AUTH_MODE=disabled, RUST_LOG=warn, a clean environment, one KEK per
# backend) and sets STARTUP_MS: from the fork to the first 200 on /health, polled every ~1 ms.
start_server() { # name db_url
  local name=$1 db_url=$2 kek t0 t1
  PORT=$(free_port) || die "no free loopback port"
  mkdir -p "$WORK/$name"
  [ -f "$WORK/$name/kek" ] || (umask 077 && openssl rand -base64 32 >"$WORK/$name/kek")
  kek=$(cat "$WORK/$name/kek")
  t0=$EPOCHREALTIME
  ( cd "$WORK/$name" && exec env -i PATH="$PATH" LOCAL_KEK_BASE64="$kek" RUST_LOG=warn \
      DB_URL="$db_url" BIND_ADDR="127.0.0.1:$PORT" $SERVER_ENV "$BIN" ) >>"$WORK/$name/server.log" 2>&1 &
  SERVER_PID=$!
  BASE="http://127.0.0.1:$PORT"
  local deadline=$((SECONDS + 60))
  until health_once; do
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$WORK/$name/server.log" >&2; die "rcrt-server ($name) exited"; }
    [ "$SECONDS" -lt "$deadline" ] || die "rcrt-server ($name) did not answer /health within 60 s"
    pause_1ms
  done
  t1=$EPOCHREALTIME
  STARTUP_MS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) * 1000 }')
}

# Time to the first 200 on /ready after a start (the first census of the store).
ready_ms() {
  local t0=$EPOCHREALTIME deadline=$((SECONDS + 120))
  until curl -fsS --max-time 60 -o /dev/null "$BASE/ready" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || die "/ready did not answer 200 within 120 s"
    sleep 0.01
  done
  awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", (b - a) * 1000 }'
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# STARTS restarts of the (stopped) server on db_url; leaves the last one running. Records the
# median start-up and the RSS right after the last start.
timed_starts() { # backend stage db_url
  local backend=$1 stage=$2 url=$3 i samples=()
  for i in $(seq 1 "$STARTS"); do
    stop_server
    start_server "$backend" "$url"
    samples+=("$STARTUP_MS")
  done
  V["$backend/startup_$stage"]=$(printf '%s\n' "${samples[@]}" | median)
  V["$backend/startup_${stage}_all"]=$(IFS=/; echo "${samples[*]}")
  V["$backend/ready_$stage"]=$(ready_ms)
  sleep 1
  V["$backend/rss_start_$stage"]=$(rss_mb)
  V["$backend/rssparts_start_$stage"]=$(rss_parts)
  say "$backend $stage: start-up ${V[$backend/startup_${stage}_all]} ms (median ${V[$backend/startup_$stage]}), RSS ${V[$backend/rss_start_$stage]} MB (pid $SERVER_PID on $BASE)"
}

seed() { # name -> $WORK/name/ids (SEED ids), through the HTTP API, 16 requests in flight
  local name=$1 dir="$WORK/$1" i value
  value=$(printf 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/%.0s' $(seq 1 16))
  mkdir -p "$dir/seed"
  {
    for i in $(seq 1 "$SEED"); do
      printf 'url = "%s/secrets"\nheader = "Content-Type: application/json"\n' "$BASE"
      printf 'data = "{\\"name\\":\\"seed-%s\\",\\"value\\":\\"%s\\",\\"scope_type\\":\\"global\\"}"\n' "$i" "$value"
      printf 'output = "%s/seed/%s.json"\nmax-time = 10\n' "$dir" "$i"
      [ "$i" -lt "$SEED" ] && printf 'next\n'
    done
  } >"$dir/seed.curlrc"
  timeout 600 curl --no-progress-meter --parallel --parallel-max 16 -K "$dir/seed.curlrc" \
    >"$dir/seed.log" 2>&1 || { cat "$dir/seed.log" >&2; die "seeding $name failed"; }
  cat "$dir"/seed/*.json | jq -r 'select(.id != null) | .id' >"$dir/ids"
  local n
  n=$(wc -l <"$dir/ids")
  [ "$n" -eq "$SEED" ] || die "seeding $name: $n of $SEED secrets created (see $dir/seed)"
  say "seeded $n secrets on $name through the API"
}

server_alive() {
  kill -0 "$SERVER_PID" 2>/dev/null && return 0
  local status=0
  wait "$SERVER_PID" 2>/dev/null || status=$?
  SERVER_PID=""
  tail -n 20 "$WORK"/*/server.log >&2 2>/dev/null || true
  die "rcrt-server stopped during '$1' (exit status $status)"
}

# wrk script for one fixed GET (the listing pages), next to the shared common.lua.
cat >"$WORK/get.lua" <<EOF
package.path = "$ROOT/bench/wrk/?.lua;" .. package.path
require("common")
local req
function init(args)
  non2xx = 0
  req = wrk.format("GET", args[1], with_auth({}))
end
function request()
  return req
end
EOF

run_wrk() { # backend key lua path [lua args...] -> V[backend/key_rps|_p50|_p99|_cpu]
  local backend=$1 key=$2 lua=$3 path=$4
  shift 4
  local log="$WORK/$backend/wrk-$key.log"
  local cmd=(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 5s --latency -s "$lua" "$BASE$path")
  [ $# -gt 0 ] && cmd+=(-- "$@")
  COMMANDS+=("$backend/$key: ${cmd[*]}")
  say "$backend: $key (${DURATION}s, $THREADS threads, $CONNS connections)"
  # PostgreSQL: WAL written during the run (cluster-wide, so other databases' traffic counts too).
  local lsn0=""
  [ "$backend" = postgres ] && lsn0=$(sql_pg "SELECT pg_current_wal_lsn()")
  cpu_begin
  timeout $((DURATION + 60)) "${cmd[@]}" >"$log" 2>&1 || { cat "$log" >&2; server_alive "$backend $key"; die "wrk $key on $backend failed"; }
  local cpu res rps p50 p99 non2xx errs
  cpu=$(cpu_end)
  [ -n "$lsn0" ] && V["$backend/${key}_wal"]=$(sql_pg "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0')::bigint")
  server_alive "$backend $key"
  res=$(grep '^RESULT ' "$log") || { cat "$log" >&2; die "no RESULT line from wrk ($backend $key)"; }
  rps=$(field rps "$res"); non2xx=$(field non2xx "$res")
  p50=$(awk -v u="$(field p50_us "$res")" 'BEGIN{printf "%.2f", u/1000}')
  p99=$(awk -v u="$(field p99_us "$res")" 'BEGIN{printf "%.2f", u/1000}')
  errs=$(wrk_errors "$res")
  if [ "$non2xx" -ne 0 ] || [ "$errs" -ne 0 ]; then
    FAILED=1
    say "WARNING: $backend $key: $non2xx non-2xx responses, $errs socket errors"
    tail -n 20 "$WORK/$backend/server.log" >&2 || true
  fi
  V["$backend/${key}_rps"]=$(printf '%.0f' "$rps")
  V["$backend/${key}_p50"]=$p50
  V["$backend/${key}_p99"]=$p99
  V["$backend/${key}_cpu"]=$cpu
  V["$backend/${key}_requests"]=$(field requests "$res")
  [ -z "$lsn0" ] || V["$backend/${key}_walreq"]=$(awk -v w="${V[$backend/${key}_wal]}" -v n="$(field requests "$res")" 'BEGIN { printf "%.0f", (n > 0) ? w / n : 0 }')
  say "  -> $(printf '%.0f' "$rps") req/s, p50 $p50 ms, p99 $p99 ms, non-2xx $non2xx, socket errors $errs, server CPU / machine busy: $cpu"
}

# ---------------------------------------------------------------------------------------------
# Store access for the filler (the server is stopped while the filler runs).
B_MS=1577836800000   # 2020-01-01T00:00:00Z in ms: the filler ids' UUIDv7 timestamps start here

sql_sqlite() { # db sql  (prints the result rows, '|'-separated)
  if [ "$SQLITE" = sqlite3 ]; then
    timeout 900 sqlite3 -batch -bail "$1" "$2"
  else
    timeout 900 python3 - "$1" "$2" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
for stmt in [s for s in sys.argv[2].split(";\n") if s.strip()]:
    for row in c.execute(stmt):
        print("|".join("" if v is None else str(v) for v in row))
c.close()
PY
  fi
}
sql_pg() { timeout 900 psql "$PG_URL" -qXAt -v ON_ERROR_STOP=1 -c "$1"; }

db_sql() { # backend sql
  case "$1" in
    sqlite) sql_sqlite "$WORK/sqlite/rcrt.db" "$2" ;;
    postgres) sql_pg "$2" ;;
  esac
}

# fill backend first last src_id: rows "fill-<first>" .. "fill-<last>" copied from src_id.
fill() {
  local backend=$1 first=$2 last=$3 src=$4
  [ "$last" -ge "$first" ] || { FILL_S=0; VACUUM_S=0; return 0; }
  local t0=$EPOCHREALTIME
  case "$backend" in
    sqlite)
      # Rollback journal while filling: pages appended to the file need no journal (a WAL would
      # hold the whole fill once more before its checkpoint); back to WAL, as the server runs it.
      local id="printf('%08x-%04x-7%03x-8%03x-%012x', ($B_MS + g.n) >> 16, ($B_MS + g.n) & 65535, g.n & 4095, (g.n >> 12) & 4095, g.n)"
      sql_sqlite "$WORK/sqlite/rcrt.db" "
PRAGMA journal_mode=DELETE;
PRAGMA synchronous=OFF;
PRAGMA cache_size=-1048576;
BEGIN;
CREATE TEMP TABLE src AS
  SELECT s.tenant, s.scope_type, s.scope_id, s.current_version, s.created_at, s.updated_at,
         v.version, v.kek_id, v.wrapped_dek, v.sealed_value, v.created_at AS v_created_at,
         v.sealed_at, v.recovery_kek_id, v.recovery_wrapped_dek
  FROM secrets s JOIN secret_versions v ON v.secret_id = s.id AND v.version = s.current_version
  WHERE s.id = '$src';
WITH RECURSIVE g(n) AS (SELECT $first UNION ALL SELECT n + 1 FROM g WHERE n < $last)
INSERT INTO secrets (id, tenant, name, scope_type, scope_id, current_version, created_at, updated_at)
  SELECT $id, src.tenant, printf('fill-%08d', g.n), src.scope_type, src.scope_id,
         src.current_version, src.created_at, src.updated_at
  FROM g, src;
WITH RECURSIVE g(n) AS (SELECT $first UNION ALL SELECT n + 1 FROM g WHERE n < $last)
INSERT INTO secret_versions (secret_id, version, kek_id, wrapped_dek, sealed_value, created_at,
                             sealed_at, recovery_kek_id, recovery_wrapped_dek)
  SELECT $id, src.version, src.kek_id, src.wrapped_dek, src.sealed_value, src.v_created_at,
         src.sealed_at, src.recovery_kek_id, src.recovery_wrapped_dek
  FROM g, src;
COMMIT;
PRAGMA journal_mode=WAL;" >/dev/null
      ;;
    postgres)
      local id="(lpad(to_hex(($B_MS + g) >> 16), 8, '0') || '-' || lpad(to_hex(($B_MS + g) & 65535), 4, '0') || '-7' || lpad(to_hex(g & 4095), 3, '0') || '-8' || lpad(to_hex((g >> 12) & 4095), 3, '0') || '-' || lpad(to_hex(g), 12, '0'))::uuid"
      # As the superuser (row-level security does not apply); no foreign-key triggers
      # (session_replication_role): every version row's secret is inserted by the statement
      # before it, in the same transaction.
      timeout 900 psql "$PG_URL" -qX -v ON_ERROR_STOP=1 >/dev/null <<EOF
SET synchronous_commit = off;
SET session_replication_role = replica;
SET maintenance_work_mem = '256MB';
BEGIN;
CREATE TEMP TABLE src AS
  SELECT s.tenant, s.scope_type, s.scope_id, s.current_version, s.created_at, s.updated_at,
         v.version, v.kek_id, v.wrapped_dek, v.sealed_value, v.created_at AS v_created_at,
         v.sealed_at, v.recovery_kek_id, v.recovery_wrapped_dek
  FROM secrets s JOIN secret_versions v ON v.secret_id = s.id AND v.version = s.current_version
  WHERE s.id = '$src';
INSERT INTO secrets (id, tenant, name, scope_type, scope_id, current_version, created_at, updated_at)
  SELECT $id, src.tenant, 'fill-' || lpad(g::text, 8, '0'), src.scope_type, src.scope_id,
         src.current_version, src.created_at, src.updated_at
  FROM generate_series($first::bigint, $last::bigint) AS g, src;
INSERT INTO secret_versions (secret_id, version, kek_id, wrapped_dek, sealed_value, created_at,
                             sealed_at, recovery_kek_id, recovery_wrapped_dek, tenant)
  SELECT $id, src.version, src.kek_id, src.wrapped_dek, src.sealed_value, src.v_created_at,
         src.sealed_at, src.recovery_kek_id, src.recovery_wrapped_dek, src.tenant
  FROM generate_series($first::bigint, $last::bigint) AS g, src;
COMMIT;
EOF
      ;;
  esac
  local t1=$EPOCHREALTIME
  # Statistics, and on PostgreSQL the visibility map and hint bits, as autovacuum would leave
  # them on a store that grew over time (timed separately).
  case "$backend" in
    sqlite) : ;;  # the server never runs ANALYZE on SQLite; neither does this
    postgres) sql_pg "VACUUM (ANALYZE) secrets, secret_versions" >/dev/null ;;
  esac
  local t2=$EPOCHREALTIME
  FILL_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  VACUUM_S=$(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.1f", b - a }')
  say "$backend: filled $((last - first + 1)) rows in ${FILL_S} s (+ ${VACUUM_S} s VACUUM ANALYZE)"
}

# The invariant the filler must keep: every secret's current_version has its version row.
check_store() { # backend stage
  local backend=$1 stage=$2 n orphans
  n=$(db_sql "$backend" "SELECT count(*) FROM secrets")
  orphans=$(db_sql "$backend" "SELECT count(*) FROM secrets s WHERE NOT EXISTS (SELECT 1 FROM secret_versions v WHERE v.secret_id = s.id AND v.version = s.current_version)")
  [ "$orphans" -eq 0 ] || die "$backend: $orphans secrets without their current version row"
  V["$backend/count_$stage"]=$n
  V["$backend/audit_$stage"]=$(db_sql "$backend" "SELECT count(*) FROM secret_access_log")
  case "$backend" in
    sqlite) V["$backend/size_$stage"]=$(du -cm "$WORK/sqlite"/rcrt.db* | awk 'END{print $1}') ;;
    postgres)
      V["$backend/size_$stage"]=$(sql_pg "SELECT pg_database_size(current_database()) / 1048576")
      # Heap and indexes of the audit log and of the secrets, per row.
      V["$backend/auditrow_$stage"]=$(sql_pg "SELECT pg_total_relation_size('secret_access_log') / greatest(count(*), 1) FROM secret_access_log")
      V["$backend/secretrow_$stage"]=$(sql_pg "SELECT (pg_total_relation_size('secrets') + pg_total_relation_size('secret_versions')) / greatest(count(*), 1) FROM secrets")
      ;;
  esac
  say "$backend $stage: $n secrets, ${V[$backend/audit_$stage]} audit rows, ${V[$backend/size_$stage]} MB"
}

# The full KEK census (Store::kek_usage): since migration 7 only GET /admin/kek/status runs it;
# before, the server ran it at start (check_keks) and at every re-wrap poll (5 s). Timed twice,
# the second (warm) run reported, the client's start included (sqlite3 or psql).
census_ms() { # backend
  timed_query "$1" "SELECT kek_id, recovery_kek_id, COUNT(*) FROM secret_versions GROUP BY kek_id, recovery_kek_id"
}

# The backlog census the server runs at start and at every poll instead (Store::kek_backlog
# without a recovery KEK, as this script runs the server): versions not under the current KEK,
# as two ranges of the (kek_id, recovery_kek_id) index; the store holds none. Timed as above.
backlog_ms() { # backend
  local kek
  kek=$(db_sql "$1" "SELECT kek_id FROM secret_versions LIMIT 1")
  timed_query "$1" "SELECT kek_id, recovery_kek_id, COUNT(*) FROM (
    SELECT kek_id, recovery_kek_id FROM secret_versions WHERE kek_id < '$kek'
    UNION ALL SELECT kek_id, recovery_kek_id FROM secret_versions WHERE kek_id > '$kek') AS backlog
    GROUP BY kek_id, recovery_kek_id"
}

timed_query() { # backend sql -> ms of the second of two runs
  local t0 t1
  db_sql "$1" "$2" >/dev/null
  t0=$EPOCHREALTIME
  db_sql "$1" "$2" >/dev/null
  t1=$EPOCHREALTIME
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", (b - a) * 1000 }'
}

# The cursor of a page 90% deep into the global listing (the id just before it).
deep_cursor() { # backend
  local n off
  n=$(db_sql "$1" "SELECT count(*) FROM secrets WHERE tenant = 'default' AND scope_type = 'global'")
  off=$((n * 9 / 10))
  [ "$off" -le $((n - 101)) ] || off=$((n - 101))
  db_sql "$1" "SELECT id FROM secrets WHERE tenant = 'default' AND scope_type = 'global' ORDER BY id LIMIT 1 OFFSET $off"
}

# One measurement stage at the current store size (server running).
run_stage() { # backend stage
  local backend=$1 stage=$2 cursor items
  cursor=$(deep_cursor "$backend")
  [ -n "$cursor" ] || die "$backend: no cursor for the deep page"
  for p in "/secrets?scope_type=global&limit=100" "/secrets?scope_type=global&limit=100&cursor=$cursor"; do
    items=$(curl -fsS --max-time 30 "$BASE$p" | jq '.items | length') || die "$backend: GET $p failed"
    [ "$items" -eq 100 ] || die "$backend: GET $p gave $items items, not 100"
  done
  # Warm-up, not recorded: the pool's connections, prepared statements and caches of the freshly
  # started server (the first run after a start was otherwise the slowest one on PostgreSQL).
  timeout 60 wrk -t"$THREADS" -c"$CONNS" -d3s -s bench/wrk/decrypt.lua "$BASE/secrets" -- "$WORK/$backend/ids" >/dev/null 2>&1 \
    || say "warm-up wrk failed (ignored)"
  run_wrk "$backend" "list_first_$stage" "$WORK/get.lua" "" "/secrets?scope_type=global&limit=100"
  run_wrk "$backend" "list_deep_$stage" "$WORK/get.lua" "" "/secrets?scope_type=global&limit=100&cursor=$cursor"
  run_wrk "$backend" "decrypt_$stage" bench/wrk/decrypt.lua /secrets "$WORK/$backend/ids"
  run_wrk "$backend" "create_$stage" bench/wrk/create.lua /secrets "s$(openssl rand -hex 4)"
  sleep 2
  V["$backend/rss_load_$stage"]=$(rss_mb)
  V["$backend/rssparts_load_$stage"]=$(rss_parts)
  say "$backend $stage: RSS after the load ${V[$backend/rss_load_$stage]} MB"
}

# PostgreSQL, with the server stopped: what PostgreSQL spends per audited decrypt as a function
# of the rows per commit, for docs/scaling.md's model. pgbench -M prepared, CONNS clients:
#   read   the server's decrypt read (PgStore::get_current, as bench/pgbench/decrypt_tx.sql), autocommit;
#   audit-R  one transaction that moves one chain lane head by R (UPDATE ... RETURNING, as the
#            server's chained insert) and inserts R audit rows with their chain columns (lane per
#            client, no lane waits; the hashes are placeholders: this database is thrown away).
# CPU is that of the backends serving this database (ps, /proc), sampled 1 s before the end; WAL is
# the cluster's (an upper bound when other databases are busy).
pg_db_ticks() {
  local total=0 pid
  for pid in $(ps -eo pid=,args= | awk -v db="$PG_DB" '$2 == "postgres:" { for (i = 3; i <= 5; i++) if ($i == db) { print $1; break } }'); do
    total=$((total + $(proc_ticks "$pid")))
  done
  echo "$total"
}

run_pgbench_cpu() { # key sqlfile rows_per_tx
  local key=$1 sql=$2 rows=$3 log="$WORK/postgres/pgbench-$1.log" lsn0 t0 t1 ticks pid tps wal
  local cmd=(pgbench -n -M prepared -c "$CONNS" -j "$THREADS" -T "$DURATION" -D "nids=$SEED" -f "$sql")
  COMMANDS+=("postgres/pgbench-$key: ${cmd[*]} <bench database>  ($(basename "$sql"): $(grep -c . "$sql") lines, see bench/scale.sh)")
  lsn0=$(sql_pg "SELECT pg_current_wal_lsn()")
  t0=$EPOCHREALTIME
  timeout $((DURATION + 60)) "${cmd[@]}" "$PG_URL" >"$log" 2>&1 &
  pid=$!
  sleep $((DURATION - 1))
  ticks=$(pg_db_ticks)
  t1=$EPOCHREALTIME
  wait "$pid" || { cat "$log" >&2; die "pgbench $key failed"; }
  wal=$(sql_pg "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0')::bigint")
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$log")
  [ -n "$tps" ] || { cat "$log" >&2; die "no tps in pgbench output ($key)"; }
  grep -q '^number of failed transactions: 0' "$log" || { FAILED=1; say "WARNING: pgbench $key had failed transactions"; }
  V["pg/$key/tps"]=$(printf '%.0f' "$tps")
  V["pg/$key/rows"]=$(awk -v t="$tps" -v r="$rows" 'BEGIN { printf "%.0f", t * r }')
  # backend CPU µs per row: (ticks / hz) / (t1 - t0) cores, divided by rows per second
  V["pg/$key/cpu_row"]=$(awk -v k="$ticks" -v hz="$CLK_TCK" -v a="$t0" -v b="$t1" -v t="$tps" -v r="$rows" \
    'BEGIN { printf "%.0f", 1e6 * (k / hz) / (b - a) / (t * r) }')
  V["pg/$key/cores"]=$(awk -v k="$ticks" -v hz="$CLK_TCK" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (k / hz) / (b - a) }')
  V["pg/$key/wal_row"]=$(awk -v w="$wal" -v t="$tps" -v r="$rows" -v d="$DURATION" 'BEGIN { printf "%.0f", w / (t * r * d) }')
  say "  pgbench $key: ${V[pg/$key/tps]} tps, ${V[pg/$key/rows]} rows/s, backends ${V[pg/$key/cores]} cores = ${V[pg/$key/cpu_row]} µs per row, ~${V[pg/$key/wal_row]} WAL bytes per row"
}

commit_rows_experiment() {
  local r
  timeout 60 psql "$PG_URL" -qX -v ON_ERROR_STOP=1 -f bench/pgbench/seed.sql \
    -c "\\copy bench_ids (id) from '$WORK/postgres/ids'" -c 'ANALYZE bench_ids' >/dev/null
  cat >"$WORK/read.sql" <<'SQL'
\set n random(1, :nids)
SELECT s.id, s.tenant, s.name, s.scope_type, s.scope_id, s.current_version,
       s.created_at, s.updated_at,
       v.version, v.kek_id, v.wrapped_dek, v.sealed_value, v.created_at
  FROM secrets s
  JOIN secret_versions v ON v.secret_id = s.id AND v.version = s.current_version
 WHERE s.id = (SELECT id FROM bench_ids WHERE n = :n) AND s.tenant = 'default';
SQL
  say "postgres: rows per commit (pgbench, ${DURATION}s each, $CONNS clients): read, then audit-R for R in $COMMIT_ROWS"
  run_pgbench_cpu read "$WORK/read.sql" 1
  for r in $COMMIT_ROWS; do
    cat >"$WORK/audit-$r.sql" <<SQL
\set n random(1, :nids - $r)
BEGIN;
WITH h AS (UPDATE audit_chain_heads SET seq = seq + $r, hash = sha256(hash)
           WHERE lane = :client_id % 32 RETURNING lane, seq)
INSERT INTO secret_access_log (timestamp, action, secret_id, tenant, user_id, reason, outcome,
                               request_id, chain_lane, chain_seq, chain_hash)
SELECT clock_timestamp(), 'decrypt', b.id, 'default', 'anonymous', 'bench', 'success',
       gen_random_uuid()::text, h.lane, h.seq - $r + b.k, sha256(b.id::text::bytea)
  FROM h, (SELECT id, n - :n AS k FROM bench_ids WHERE n > :n AND n <= :n + $r) AS b;
COMMIT;
SQL
    run_pgbench_cpu "audit-$r" "$WORK/audit-$r.sql" "$r"
  done
}

run_backend() { # backend db_url
  local backend=$1 url=$2 n src
  # Empty store: the first start (runs the migrations), then STARTS restarts.
  start_server "$backend" "$url"
  V["$backend/startup_first"]=$STARTUP_MS
  say "$backend: first start on a new store (with migrations) ${STARTUP_MS} ms"
  timed_starts "$backend" empty "$url"
  seed "$backend"
  stop_server
  src=$(head -n 1 "$WORK/$backend/ids")
  # SMALL secrets: SEED real ones and the filler.
  n=$(db_sql "$backend" "SELECT count(*) FROM secrets")
  fill "$backend" 1 $((SMALL - n)) "$src"
  FILLED=$((SMALL - n))
  check_store "$backend" small
  V["$backend/census_small"]=$(census_ms "$backend")
  V["$backend/backlog_small"]=$(backlog_ms "$backend")
  timed_starts "$backend" small "$url"
  run_stage "$backend" small
  stop_server
  # BIG secrets: whatever the first stage left (its creates) topped up with filler.
  n=$(db_sql "$backend" "SELECT count(*) FROM secrets")
  fill "$backend" $((FILLED + 1)) $((FILLED + BIG - n)) "$src"
  [ "$n" -lt "$BIG" ] || say "$backend: the store already holds $n secrets, more than BIG=$BIG: no filler"
  V["$backend/fill_rows"]=$(( n < BIG ? BIG - n : 0 ))
  V["$backend/fill_s"]=$FILL_S
  V["$backend/vacuum_s"]=$VACUUM_S
  check_store "$backend" big
  V["$backend/census_big"]=$(census_ms "$backend")
  V["$backend/backlog_big"]=$(backlog_ms "$backend")
  timed_starts "$backend" big "$url"
  run_stage "$backend" big
  stop_server
  if [ "$backend" = postgres ] && [ -n "$COMMIT_ROWS" ]; then commit_rows_experiment; fi
}

# ---------------------------------------------------------------------------------------------
say "$CMDLINE   (machine: $NCPU CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg))"
SRC=$ROOT
if [ -n "${BENCH_REV:-}" ]; then
  REVISION="$(git -C "$ROOT" rev-parse --short "$BENCH_REV^{commit}") (clean git archive export)" \
    || die "unknown revision $BENCH_REV"
  SRC="${TMPDIR:-/tmp}/rcrt-scale-src"
  rm -rf "$SRC" && mkdir -p "$SRC"
  git -C "$ROOT" archive --format=tar "$BENCH_REV" | tar -x -C "$SRC"
else
  if REVISION=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
    dirty=$(git -C "$ROOT" --no-optional-locks status --porcelain --untracked-files=no \
      -- crates Cargo.toml Cargo.lock 2>/dev/null | wc -l)
    [ "$dirty" -eq 0 ] && REVISION="$REVISION (working tree, clean)" \
      || REVISION="$REVISION + $dirty uncommitted file(s) in the working tree"
  else
    REVISION="working tree (no git)"
  fi
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  say "cargo build --release --bin rcrt-server  (in $SRC, target dir $TARGET_DIR)"
  ( cd "$SRC" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --bin rcrt-server >&2 ) \
    || die "build failed"
fi
[ -x "$TARGET_DIR/release/rcrt-server" ] || die "no release binary at $TARGET_DIR/release/rcrt-server"
BIN="$WORK/rcrt-scale-server"
cp "$TARGET_DIR/release/rcrt-server" "$BIN"
say "measuring $REVISION; load average $(cut -d' ' -f1-3 /proc/loadavg)"

for backend in $BACKENDS; do
  case "$backend" in
    sqlite) run_backend sqlite rcrt.db ;;
    postgres)
      pg_up
      PG_DB="rcrt_scale_$(openssl rand -hex 6)"
      timeout 30 psql "$PG_ADMIN_URL" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE $PG_DB" >/dev/null
      PG_URL="${PG_ADMIN_URL%/*}/$PG_DB"
      say "database $PG_DB created"
      run_backend postgres "$PG_URL"
      timeout 60 psql "$PG_ADMIN_URL" -qX -v ON_ERROR_STOP=1 -c "DROP DATABASE $PG_DB WITH (FORCE)" >/dev/null \
        && PG_DB=""
      ;;
    *) die "unknown backend $backend (sqlite, postgres)" ;;
  esac
done

# ---------------------------------------------------------------------------------------------
# The table. ratio = big / small; "met" per target.
num() { printf '%s' "${V[$1]:-}" ; }
fmt() { [ -n "$1" ] && printf '%s' "$1" || printf -- '-'; }
ratio_row() { # label backend key kind(rps|p99) target_text
  local label=$1 b=$2 key=$3 kind=$4
  local s b1 r met
  s=$(num "$b/${key}_small_$kind"); b1=$(num "$b/${key}_big_$kind")
  r=$(awk -v s="$s" -v b="$b1" 'BEGIN { if (s > 0) printf "%.2f", b / s; else print "n/a" }')
  if [ "$kind" = rps ]; then
    met=$(awk -v r="$r" 'BEGIN { print (r + 0 >= 0.8) ? "met" : "**not met**" }')
    echo "| $b | $label req/s | $(fmt "$s") | $(fmt "$b1") | ${r}x | >= 0.80x | $met |"
  else
    met=$(awk -v r="$r" 'BEGIN { print (r + 0 <= 1.2) ? "met" : "**not met**" }')
    echo "| $b | $label p99 ms | $s | $b1 | ${r}x | <= 1.20x | $met |"
  fi
}
limit_row() { # label backend key_small key_big limit unit
  local label=$1 b=$2 ks=$3 kb=$4 lim=$5 unit=$6 s b1 met
  s=$(num "$b/$ks"); b1=$(num "$b/$kb")
  met=$(awk -v s="${s:-0}" -v b="${b1:-0}" -v l="$lim" 'BEGIN { print (s <= l && b <= l) ? "met" : "**not met**" }')
  echo "| $b | $label | $s | $b1 | - | <= $lim $unit (both) | $met |"
}
{
  echo
  echo "### rcrt-server at $(fmt "$SMALL") and $(fmt "$BIG") stored secrets ($(date -u +%Y-%m-%dT%H:%MZ), $NCPU CPUs, load generator on the same machine)"
  echo
  echo "| backend | figure | at $(fmt "$SMALL") | at $(fmt "$BIG") | ratio | target | |"
  echo "|---|---|---:|---:|---:|---|---|"
  for b in $BACKENDS; do
    ratio_row "decrypt" "$b" decrypt rps
    ratio_row "decrypt" "$b" decrypt p99
    ratio_row "create" "$b" create rps
    ratio_row "create" "$b" create p99
    ratio_row "list, first page" "$b" list_first rps
    ratio_row "list, first page" "$b" list_first p99
    ratio_row "list, page 90% deep (cursor)" "$b" list_deep rps
    ratio_row "list, page 90% deep (cursor)" "$b" list_deep p99
    limit_row "RSS after start, MB" "$b" rss_start_small rss_start_big 30 MB
    limit_row "RSS after the load, MB" "$b" rss_load_small rss_load_big 30 MB
    echo "| $b | start-up to /health, ms: empty store / at $(fmt "$SMALL") / at $(fmt "$BIG") (median of $STARTS) | $(num "$b/startup_empty") / $(num "$b/startup_small") | $(num "$b/startup_big") | - | <= 200 ms (empty, $(fmt "$BIG")) | $(awk -v e="$(num "$b/startup_empty")" -v g="$(num "$b/startup_big")" 'BEGIN { print (e <= 200 && g <= 200) ? "met" : "**not met**" }') |"
  done
  echo
  echo "| backend | detail | at $(fmt "$SMALL") | at $(fmt "$BIG") |"
  echo "|---|---|---:|---:|"
  for b in $BACKENDS; do
    echo "| $b | secrets / audit rows when measured | $(fmt "$(num "$b/count_small")") / $(fmt "$(num "$b/audit_small")") | $(fmt "$(num "$b/count_big")") / $(fmt "$(num "$b/audit_big")") |"
    echo "| $b | RSS after start; after the load: anon/file/shmem MB | $(num "$b/rssparts_start_small"); $(num "$b/rssparts_load_small") | $(num "$b/rssparts_start_big"); $(num "$b/rssparts_load_big") |"
    echo "| $b | store size, MB | $(num "$b/size_small") | $(fmt "$(num "$b/size_big")") |"
    echo "| $b | start-up samples, ms (first start on a new store: $(num "$b/startup_first"); empty: $(num "$b/startup_empty_all")) | $(num "$b/startup_small_all") | $(num "$b/startup_big_all") |"
    echo "| $b | first /ready after start, ms (empty store: $(num "$b/ready_empty")) | $(num "$b/ready_small") | $(num "$b/ready_big") |"
    [ "$b" = postgres ] && echo "| $b | bytes per row, heap + indexes: audit log; secret + its version | $(num "$b/auditrow_small"); $(num "$b/secretrow_small") | $(num "$b/auditrow_big"); $(num "$b/secretrow_big") |"
    echo "| $b | one full KEK census (GROUP BY kek_id over secret_versions; /admin/kek/status only), ms | $(num "$b/census_small") | $(num "$b/census_big") |"
    echo "| $b | one backlog census (versions not under the current KEK, index ranges; start-up and every poll), ms | $(num "$b/backlog_small") | $(num "$b/backlog_big") |"
    for k in decrypt create list_first list_deep; do
      echo "| $b | $k: p50 ms; server CPU / machine busy | $(num "$b/${k}_small_p50"); $(num "$b/${k}_small_cpu" | sed 's# # / #') | $(num "$b/${k}_big_p50"); $(num "$b/${k}_big_cpu" | sed 's# # / #') |"
    done
    if [ "$b" = postgres ]; then
      for k in decrypt create; do
        echo "| $b | $k: WAL bytes per request (cluster-wide, an upper bound) | $(num "$b/${k}_small_walreq") | $(num "$b/${k}_big_walreq") |"
      done
    fi
    echo "| $b | filler to $(fmt "$BIG"): rows, seconds (+ VACUUM ANALYZE) | | $(fmt "$(num "$b/fill_rows")") rows in $(num "$b/fill_s") s (+ $(num "$b/vacuum_s") s) |"
  done
  if [ -n "${V[pg/read/tps]:-}" ]; then
    echo
    echo "PostgreSQL per audited decrypt, by audit rows per commit (pgbench at $(fmt "$BIG") secrets, server stopped; CPU of this database's backends only; WAL cluster-wide):"
    echo
    echo "| pgbench script | tx/s | rows/s | backends' CPU, cores | CPU µs per row | WAL bytes per row |"
    echo "|---|---:|---:|---:|---:|---:|"
    echo "| read (the decrypt's SELECT, autocommit) | ${V[pg/read/tps]} | ${V[pg/read/rows]} | ${V[pg/read/cores]} | ${V[pg/read/cpu_row]} | ${V[pg/read/wal_row]} |"
    for r in $COMMIT_ROWS; do
      echo "| audit-$r ($r chained audit rows per commit) | ${V[pg/audit-$r/tps]} | ${V[pg/audit-$r/rows]} | ${V[pg/audit-$r/cores]} | ${V[pg/audit-$r/cpu_row]} | ${V[pg/audit-$r/wal_row]} |"
    done
  fi
  echo
  echo "Revision: $REVISION"
  echo
  echo "Command: \`$CMDLINE\` (total ${SECONDS}s including the build)"
  echo
  for c in "${COMMANDS[@]}"; do echo "    $c"; done
  echo
  [ "$FAILED" -eq 0 ] && echo "All requests answered 2xx, no socket errors." \
    || echo "**FAILED: some requests got non-2xx answers or socket errors (see the warnings above).**"
}
exit "$FAILED"
