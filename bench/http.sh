#!/usr/bin/env bash
# HTTP benchmark of rcrt-server on SQLite and PostgreSQL, with its baselines measured in the
# same run: the /health ceiling of the same server at the same concurrency, and pgbench running
# the same SQL as one decrypt (with its audit row) on the same database and rows.
#
# Usage: bench/http.sh
# Knobs (environment): DURATION=10 (seconds per measurement) THREADS=2 CONNS=32 SEED=1000
#   BACKENDS="sqlite postgres"  PG_ADMIN_URL=postgres://postgres@127.0.0.1:5432/postgres
#   AUTH_ROUNDS=0 (N > 0: after the suite, N alternating rounds of decrypt with AUTH_MODE=disabled
#     and with AUTH_MODE=token on the same database and KEK, and their ratio)
#   SKIP_BUILD=1 (use the existing release binary)
#   BENCH_REV=<commit> (build a clean `git archive` export of that commit instead of the working
#     tree, still into the default target dir; the working tree is shared with other sessions)
#
# Everything runs on 127.0.0.1: the servers listen on a free loopback port, PostgreSQL is the
# local cluster (started with pg_ctlcluster if it is down) and gets a throwaway database
# rcrt_bench_<random>, dropped at exit. Every step is bounded by a timeout except the cargo
# build (which may wait for the build-directory lock). Prints a markdown table at the end and
# exits 1 if any request got a non-2xx answer or a socket error.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
SEED=${SEED:-1000}
BACKENDS=${BACKENDS:-"sqlite postgres"}
AUTH_ROUNDS=${AUTH_ROUNDS:-0}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
CMDLINE="DURATION=$DURATION THREADS=$THREADS CONNS=$CONNS SEED=$SEED BACKENDS=\"$BACKENDS\" AUTH_ROUNDS=$AUTH_ROUNDS${BENCH_REV:+ BENCH_REV=$BENCH_REV} bench/http.sh"

case "$PG_ADMIN_URL" in
  postgres://*@127.0.0.1:*/*|postgres://127.0.0.1:*/*) ;;
  *) echo "bench/http.sh: PG_ADMIN_URL must point at 127.0.0.1 (postgres://USER@127.0.0.1:PORT/DB)" >&2; exit 2 ;;
esac

say() { printf '[bench %3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"   # free_port stop_server pg_up machine_ticks field wrk_errors

for tool in wrk curl jq openssl awk; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (wrk: apt-get install -y wrk)"
done
case " $BACKENDS " in *" postgres "*)
  for tool in psql pgbench; do command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"; done
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rcrt-bench.XXXXXX")
SERVER_PID=""
PG_DB=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_server
  if [ -n "$PG_DB" ]; then
    timeout 30 psql "$PG_ADMIN_URL" -qX -v ON_ERROR_STOP=1 \
      -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 \
      || say "could not drop database $PG_DB"
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Results: one row per measurement, printed as a markdown table at the end.
ROWS=()       # "backend|workload|rate|p50_ms|p99_ms|non2xx|errors|server_cpu|machine_busy"
COMMANDS=()
declare -A RATE=()
FAILED=0

# CPU accounting from /proc: the server's own CPU (in % of one core) and the whole machine's busy
# share (in % of all cores) during a measurement, to see who is saturated.
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(getconf _NPROCESSORS_ONLN)

cpu_begin() {
  T0_SRV=$( [ -n "$SERVER_PID" ] && proc_ticks "$SERVER_PID" || echo 0 )
  read -r T0_BUSY T0_ALL < <(machine_ticks)
  T0_WALL=$(date +%s.%N)
}
cpu_end() { # prints "server_cpu_pct machine_busy_pct"
  local srv busy all wall
  srv=$( [ -n "$SERVER_PID" ] && proc_ticks "$SERVER_PID" || echo 0 )
  read -r busy all < <(machine_ticks)
  wall=$(date +%s.%N)
  awk -v s0="$T0_SRV" -v s1="$srv" -v b0="$T0_BUSY" -v b1="$busy" -v a0="$T0_ALL" -v a1="$all" \
      -v w0="$T0_WALL" -v w1="$wall" -v hz="$CLK_TCK" -v srvon="${SERVER_PID:+1}" \
      'BEGIN { sc = srvon ? sprintf("%.0f%%", 100 * (s1 - s0) / hz / (w1 - w0)) : "-";
               printf "%s %.0f%%\n", sc, 100 * (b1 - b0) / (a1 - a0) }'
}

start_server() { # name db_url [disabled|token]
  local name=$1 db_url=$2 auth=${3:-disabled} kek
  PORT=$(free_port) || die "no free loopback port"
  mkdir -p "$WORK/$name"
  # One KEK per backend, so a restart in the other auth mode serves the same secrets.
  [ -f "$WORK/$name/kek" ] || (umask 077 && openssl rand -base64 32 >"$WORK/$name/kek")
  kek=$(cat "$WORK/$name/kek")
  local auth_env=()
  export RCRT_BENCH_TOKEN=""
  if [ "$auth" = token ]; then
    [ -f "$WORK/$name/token" ] || (umask 077 && echo "rcrt_$(openssl rand -hex 16)_$(openssl rand -hex 32)" >"$WORK/$name/token")
    auth_env=(AUTH_MODE=token BOOTSTRAP_ADMIN_TOKEN_FILE="$WORK/$name/token")
    RCRT_BENCH_TOKEN=$(cat "$WORK/$name/token")
  fi
  # A clean environment: only what the server needs (no DATABASE_URL, .env, ...).
  ( cd "$WORK/$name" && exec env -i PATH="$PATH" LOCAL_KEK_BASE64="$kek" RUST_LOG=warn \
      DB_URL="$db_url" BIND_ADDR="127.0.0.1:$PORT" "${auth_env[@]}" "$BIN" ) >>"$WORK/$name/server.log" 2>&1 &
  SERVER_PID=$!
  BASE="http://127.0.0.1:$PORT"
  for _ in $(seq 1 150); do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/$name/server.log" >&2; die "rcrt-server ($name) exited"; }
    curl -fsS --max-time 1 "$BASE/health" >/dev/null 2>&1 && { say "rcrt-server ($name) pid $SERVER_PID on $BASE"; return 0; }
    sleep 0.2
  done
  die "rcrt-server ($name) did not answer /health within 30 s"
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
  [ -z "${RCRT_BENCH_TOKEN:-}" ] || die "seed with AUTH_MODE=disabled"
  timeout 300 curl --no-progress-meter --parallel --parallel-max 16 -K "$dir/seed.curlrc" \
    >"$dir/seed.log" 2>&1 || { cat "$dir/seed.log" >&2; die "seeding $name failed"; }
  cat "$dir"/seed/*.json | jq -r 'select(.id != null) | .id' >"$dir/ids"
  local n
  n=$(wc -l <"$dir/ids")
  [ "$n" -eq "$SEED" ] || die "seeding $name: $n of $SEED secrets created (see $dir/seed)"
  say "seeded $n secrets on $name"
}

server_alive() { # what -> dies with the server's exit status if it stopped during a measurement
  kill -0 "$SERVER_PID" 2>/dev/null && return 0
  local status=0
  wait "$SERVER_PID" 2>/dev/null || status=$?
  SERVER_PID=""
  tail -n 20 "$WORK"/*/server.log >&2 2>/dev/null || true
  die "rcrt-server stopped during '$1' (exit status $status; 143 = SIGTERM, 137 = SIGKILL, i.e. killed from outside this script)"
}

add_row() { # backend workload rate p50_ms p99_ms non2xx errors server_cpu machine_busy
  local IFS='|'
  ROWS+=("$*")
}

run_wrk() { # backend workload lua path [lua args...]
  local backend=$1 workload=$2 lua=$3 path=$4
  shift 4
  local log="$WORK/$backend/wrk-$workload.log"
  local cmd=(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 5s --latency
             -s "bench/wrk/$lua" "$BASE$path")
  [ $# -gt 0 ] && cmd+=(-- "$@")
  COMMANDS+=("$backend/$workload: ${cmd[*]}")
  say "$backend: $workload (${DURATION}s, $THREADS threads, $CONNS connections)"
  cpu_begin
  timeout $((DURATION + 60)) "${cmd[@]}" >"$log" 2>&1 || { cat "$log" >&2; server_alive "$backend $workload"; die "wrk $workload on $backend failed"; }
  local cpu
  cpu=$(cpu_end)
  server_alive "$backend $workload"
  local res
  res=$(grep '^RESULT ' "$log") || { cat "$log" >&2; die "no RESULT line from wrk ($backend $workload)"; }
  local rps p50 p99 non2xx errs
  rps=$(field rps "$res"); non2xx=$(field non2xx "$res")
  p50=$(awk -v u="$(field p50_us "$res")" 'BEGIN{printf "%.2f", u/1000}')
  p99=$(awk -v u="$(field p99_us "$res")" 'BEGIN{printf "%.2f", u/1000}')
  errs=$(wrk_errors "$res")
  if [ "$non2xx" -ne 0 ] || [ "$errs" -ne 0 ]; then
    FAILED=1
    say "WARNING: $backend $workload: $non2xx non-2xx responses, $errs socket errors"
    say "server log tail:"; tail -n 20 "$WORK/$backend/server.log" >&2 || true
  fi
  RATE["$backend/$workload"]=$rps
  add_row "$backend" "$workload" "$(printf '%.0f' "$rps") req/s" "$p50" "$p99" "$non2xx" "$errs" $cpu
  say "  -> $(printf '%.0f' "$rps") req/s, p50 $p50 ms, p99 $p99 ms, non-2xx $non2xx, socket errors $errs, server CPU / machine busy: $cpu"
}

run_http_suite() { # backend
  local backend=$1
  seed "$backend"
  run_wrk "$backend" "health" health.lua /health
  run_wrk "$backend" "create" create.lua /secrets "b$(openssl rand -hex 4)"
  run_wrk "$backend" "decrypt" decrypt.lua /secrets "$WORK/$backend/ids"
}

# AUTH_ROUNDS rounds of decrypt without and with token authentication (ABBA order), each on a
# freshly started server over the same database and KEK (start with the server stopped).
run_auth_rounds() { # backend db_url
  local backend=$1 url=$2 round
  [ "$AUTH_ROUNDS" -gt 0 ] || return 0
  for round in $(seq 1 "$AUTH_ROUNDS"); do
    # ABBA order: the database grows (audit rows) during the rounds, so neither mode always
    # runs second.
    local order="disabled token"
    [ $((round % 2)) -eq 0 ] && order="token disabled"
    for auth in $order; do
      start_server "$backend" "$url" "$auth"
      run_wrk "$backend" "decrypt-$auth-$round" decrypt.lua /secrets "$WORK/$backend/ids"
      stop_server
    done
  done
  export RCRT_BENCH_TOKEN=""
}

# The median of the AUTH_ROUNDS rates of backend/decrypt-<auth>-<round>.
median_rate() { # backend auth
  local round
  for round in $(seq 1 "$AUTH_ROUNDS"); do echo "${RATE[$1/decrypt-$2-$round]}"; done \
    | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}

run_pgbench() { # workload sqlfile db_url
  local workload=$1 sql=$2 url=$3
  local log="$WORK/postgres/pgbench-$workload.log" prefix="$WORK/postgres/pgblog-$workload"
  local cmd=(pgbench -n -M prepared -c "$CONNS" -j "$THREADS" -T "$DURATION" -D "nids=$SEED"
             -f "bench/pgbench/$sql")
  COMMANDS+=("postgres/$workload: ${cmd[*]} -l --log-prefix=<tmp> <bench database>")
  say "postgres: $workload (pgbench, ${DURATION}s, $CONNS clients, $THREADS threads)"
  cpu_begin
  timeout $((DURATION + 60)) "${cmd[@]}" -l --log-prefix="$prefix" "$url" >"$log" 2>&1 \
    || { cat "$log" >&2; die "pgbench $workload failed"; }
  local cpu tps failed lat
  cpu=$(cpu_end)
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$log")
  [ -n "$tps" ] || { cat "$log" >&2; die "no tps in pgbench output"; }
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$log")
  failed=${failed:-0}
  # Per-transaction log: field 3 is the latency in microseconds.
  lat=$(cat "$prefix".* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {
          i50 = int(NR * 0.50); if (i50 < 1) i50 = 1; i99 = int(NR * 0.99); if (i99 < 1) i99 = 1;
          printf "%.2f %.2f", a[i50] / 1000, a[i99] / 1000 }')
  [ "$failed" -eq 0 ] || { FAILED=1; say "WARNING: pgbench $workload: $failed failed transactions"; }
  RATE["postgres/$workload"]=$tps
  # shellcheck disable=SC2086
  add_row postgres "$workload" "$(printf '%.0f' "$tps") tps" $lat "$failed (failed tx)" 0 $cpu
  say "  -> $(printf '%.0f' "$tps") tps, p50/p99 ms: $lat, failed $failed, server CPU / machine busy: $cpu"
}

ratio() { # a b -> "a/b as %"
  awk -v a="${RATE[$1]:-0}" -v b="${RATE[$2]:-0}" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "n/a" }'
}

# ---------------------------------------------------------------------------------------------
say "$CMDLINE   (machine: $NCPU CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg))"
# What is measured: a commit, or the working tree (then say whether it has uncommitted changes).
SRC=$ROOT
if [ -n "${BENCH_REV:-}" ]; then
  REVISION="$(git -C "$ROOT" rev-parse --short "$BENCH_REV^{commit}") (clean git archive export)" \
    || die "unknown revision $BENCH_REV"
  SRC="$WORK/src"
  mkdir -p "$SRC"
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
# A private copy: the target dir is shared, another build may replace the binary mid-run.
BIN="$WORK/rcrt-bench-server"
cp "$TARGET_DIR/release/rcrt-server" "$BIN"
say "measuring $REVISION"

for backend in $BACKENDS; do
  case "$backend" in
    sqlite)
      start_server sqlite rcrt.db   # the default file name, in a fresh temporary directory
      run_http_suite sqlite
      stop_server
      run_auth_rounds sqlite rcrt.db
      ;;
    postgres)
      pg_up
      PG_DB="rcrt_bench_$(openssl rand -hex 6)"
      timeout 30 psql "$PG_ADMIN_URL" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE $PG_DB" >/dev/null
      PG_URL="${PG_ADMIN_URL%/*}/$PG_DB"
      say "database $PG_DB created"
      start_server postgres "$PG_URL"
      run_http_suite postgres
      # pgbench gets the machine to itself, like wrk had: stop the server first.
      stop_server
      run_auth_rounds postgres "$PG_URL"
      timeout 30 psql "$PG_URL" -qX -v ON_ERROR_STOP=1 -f bench/pgbench/seed.sql \
        -c "\\copy bench_ids (id) from '$WORK/postgres/ids'" -c 'ANALYZE' >/dev/null
      run_pgbench pgbench_decrypt_tx decrypt_tx.sql "$PG_URL"
      run_pgbench pgbench_decrypt_autocommit decrypt_autocommit.sql "$PG_URL"
      # With row-level security (migration 0002) the server also switches role and tenant before
      # each statement: measure that exact sequence too.
      rls=$(timeout 30 psql "$PG_URL" -qXAt -c "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = 'rcrt_app')::text
          || (SELECT relrowsecurity::text FROM pg_class WHERE oid = 'secrets'::regclass)")
      if [ "$rls" = "1true" ]; then
        timeout 30 psql "$PG_URL" -qX -v ON_ERROR_STOP=1 -c 'GRANT SELECT ON bench_ids TO rcrt_app' >/dev/null
        run_pgbench pgbench_decrypt_as_server decrypt_as_server.sql "$PG_URL"
      else
        say "no row-level security in this revision: decrypt_autocommit.sql is the server's exact SQL"
      fi
      ;;
    *) die "unknown backend $backend (sqlite, postgres)" ;;
  esac
done

# ---------------------------------------------------------------------------------------------
{
  echo
  echo "### rcrt-server HTTP benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $NCPU CPUs, load generator on the same machine)"
  echo
  echo "| backend | workload | rate | p50 ms | p99 ms | non-2xx | socket errors | server CPU (% of 1 core) | machine busy |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
  for r in "${ROWS[@]}"; do echo "| ${r//|/ | } |"; done
  echo
  echo "| ratio | value |"
  echo "|---|---:|"
  for b in $BACKENDS; do
    echo "| $b create / $b /health | $(ratio "$b/create" "$b/health") |"
    echo "| $b decrypt / $b /health | $(ratio "$b/decrypt" "$b/health") |"
    if [ "$AUTH_ROUNDS" -gt 0 ]; then
      RATE["$b/decrypt-token-median"]=$(median_rate "$b" token)
      RATE["$b/decrypt-disabled-median"]=$(median_rate "$b" disabled)
      echo "| $b decrypt with a service token / without authentication (medians of $AUTH_ROUNDS alternating rounds; target >= 95%) | $(ratio "$b/decrypt-token-median" "$b/decrypt-disabled-median") |"
    fi
  done
  case " $BACKENDS " in *" postgres "*)
    echo "| postgres HTTP decrypt / pgbench decrypt_tx tps (target >= 70%) | $(ratio postgres/decrypt postgres/pgbench_decrypt_tx) |"
    echo "| postgres HTTP decrypt / pgbench decrypt_autocommit tps | $(ratio postgres/decrypt postgres/pgbench_decrypt_autocommit) |"
    [ -n "${RATE[postgres/pgbench_decrypt_as_server]:-}" ] &&
      echo "| postgres HTTP decrypt / pgbench decrypt_as_server tps (the server's exact SQL) | $(ratio postgres/decrypt postgres/pgbench_decrypt_as_server) |"
  esac
  echo
  echo "Revision: $REVISION"
  echo
  echo "Command: \`$CMDLINE\` (total ${SECONDS}s including the build)"
  echo
  for c in "${COMMANDS[@]}"; do echo "    $c"; done
  echo
  [ "$FAILED" -eq 0 ] && echo "All requests answered 2xx, no socket errors, no failed pgbench transactions." \
    || echo "**FAILED: some requests got non-2xx answers or socket errors (see the warnings above).**"
}
exit "$FAILED"
