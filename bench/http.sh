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
. "$ROOT/bench/lib.sh"   # free_port stop_server pg_up field wrk_errors, build_server start_server seed run_wrk run_pgbench ...

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
results_init   # ROWS COMMANDS RATE P50_MS P99_MS FAILED (bench/lib.sh)

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

ratio() { # a b -> "a/b as %"
  awk -v a="${RATE[$1]:-0}" -v b="${RATE[$2]:-0}" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "n/a" }'
}

# ---------------------------------------------------------------------------------------------
say "$CMDLINE   (machine: $NCPU CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg))"
build_server   # -> BIN, REVISION (bench/lib.sh)

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
      # The role: per database since migration 0004 (named in rcrt_state), the shared rcrt_app
      # before it.
      app_role=$(timeout 30 psql "$PG_URL" -qXAt -c "SELECT value FROM rcrt_state WHERE key = 'app_role'" 2>/dev/null || true)
      app_role=${app_role:-rcrt_app}
      [[ "$app_role" =~ ^[a-z0-9_]+$ ]] || die "unexpected app role name '$app_role'"
      rls=$(timeout 30 psql "$PG_URL" -qXAt -c "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = '$app_role')::text
          || (SELECT relrowsecurity::text FROM pg_class WHERE oid = 'secrets'::regclass)")
      if [ "$rls" = "1true" ]; then
        timeout 30 psql "$PG_URL" -qX -v ON_ERROR_STOP=1 -c "GRANT SELECT ON bench_ids TO $app_role" >/dev/null
        run_pgbench pgbench_decrypt_as_server decrypt_as_server.sql "$PG_URL" -D "app_role=$app_role"
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
