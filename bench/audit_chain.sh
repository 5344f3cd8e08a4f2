#!/usr/bin/env bash
# What the audit hash chain costs the decrypt path: decrypt throughput and p99 of the server
# with the chain (CHAIN_REV, default HEAD) against the same code without it (BASE_REV, default
# a2965ba~1 = b3472d9, the commit before the chain's skeleton), on SQLite and PostgreSQL, in one
# run, rounds alternating (ABBA) to average out a noisy machine.
#
# Usage: bench/audit_chain.sh
# Knobs (environment): ROUNDS=2 (runs of each build per backend) DURATION=10 THREADS=2 CONNS=32
#   SEED=1000 (1 KiB secrets per store) BACKENDS="sqlite postgres"
#   BASE_REV=a2965ba~1 CHAIN_REV=HEAD
#   BENCH_CACHE=/tmp/rcrt-audit-bench (each revision is checked out in a git worktree
#     $BENCH_CACHE-src-{base,chain} and built in release into its own target dir
#     $BENCH_CACHE-target-{base,chain}: cargo names a workspace crate's build independently of its path, so one shared target dir
#     would rebuild both revisions' crates on every run; all kept between runs, so a second run
#     builds only what changed)
#   PG_ADMIN_URL=postgres://postgres@127.0.0.1:5432/postgres
#
# Each run: a fresh store (SQLite rcrt.db in a new temporary directory, or a new PostgreSQL
# database rcrt_chain_<random>, dropped after the run), the server on a free loopback port with
# AUTH_MODE=disabled and a fresh KEK, SEED secrets created through the HTTP API, then wrk
# decrypt (bench/wrk/decrypt.lua over the seeded ids; every decrypt writes one audit row, which
# is what the chain adds work to). Every step is bounded by a timeout except the cargo builds.
# Prints a markdown table and the chain/baseline ratios of the means and of the medians (one slow
# run on a shared machine moves a mean); exits 1 if any request failed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
SEED=${SEED:-1000}
BACKENDS=${BACKENDS:-"sqlite postgres"}
BASE_REV=${BASE_REV:-a2965ba~1}
CHAIN_REV=${CHAIN_REV:-HEAD}
BENCH_CACHE=${BENCH_CACHE:-/tmp/rcrt-audit-bench}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
CMDLINE="ROUNDS=$ROUNDS DURATION=$DURATION THREADS=$THREADS CONNS=$CONNS SEED=$SEED BACKENDS=\"$BACKENDS\" BASE_REV=$BASE_REV CHAIN_REV=$CHAIN_REV bench/audit_chain.sh"

case "$PG_ADMIN_URL" in
  postgres://*@127.0.0.1:*/*|postgres://127.0.0.1:*/*) ;;
  *) echo "bench/audit_chain.sh: PG_ADMIN_URL must point at 127.0.0.1" >&2; exit 2 ;;
esac

say() { printf '[chain %3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"   # free_port stop_server pg_up field wrk_errors

for tool in wrk curl jq openssl awk git; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"
done
case " $BACKENDS " in *" postgres "*) command -v psql >/dev/null 2>&1 || die "psql is not installed" ;; esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rcrt-chain-bench.XXXXXX")
SERVER_PID=""
PG_DB=""

drop_db() {
  [ -n "$PG_DB" ] || return 0
  timeout 30 psql "$PG_ADMIN_URL" -qX -v ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || say "could not drop database $PG_DB"
  PG_DB=""
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_server
  drop_db
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# build LABEL REV: checks REV out in the label's worktree (created on first use), builds it in
# release into the label's own target dir and copies the binary to $WORK/rcrt-server-LABEL.
declare -A SHA=()
build() {
  local label=$1 rev=$2 src="$BENCH_CACHE-src-$1" sha
  sha=$(git -C "$ROOT" rev-parse --verify "$rev^{commit}") || die "unknown revision $rev"
  SHA[$label]=$(git -C "$ROOT" rev-parse --short "$sha")
  if [ -d "$src" ]; then
    # --force: the worktree is this script's own; a build may have rewritten its Cargo.lock.
    git -C "$src" checkout --quiet --force --detach "$sha" || die "cannot check out $rev in $src"
  else
    git -C "$ROOT" worktree add --quiet --detach "$src" "$sha" || die "cannot create the worktree $src"
  fi
  say "$label = $rev (${SHA[$label]}): cargo build --release --bin rcrt-server in $src"
  ( cd "$src" && CARGO_TARGET_DIR="$BENCH_CACHE-target-$label" cargo build --release --bin rcrt-server >&2 ) \
    || die "build of $rev failed"
  cp "$BENCH_CACHE-target-$label/release/rcrt-server" "$WORK/rcrt-server-$label"
}

start_server() { # label db_url dir
  local label=$1 db_url=$2 dir=$3 kek
  PORT=$(free_port) || die "no free loopback port"
  kek=$(openssl rand -base64 32)
  ( cd "$dir" && exec env -i PATH="$PATH" LOCAL_KEK_BASE64="$kek" RUST_LOG=warn AUTH_MODE=disabled \
      DB_URL="$db_url" BIND_ADDR="127.0.0.1:$PORT" "$WORK/rcrt-server-$label" ) >>"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  BASE="http://127.0.0.1:$PORT"
  for _ in $(seq 1 150); do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$dir/server.log" >&2; die "rcrt-server ($label) exited"; }
    curl -fsS --max-time 1 "$BASE/health" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "rcrt-server ($label) did not answer /health within 30 s"
}

seed() { # dir -> dir/ids: SEED secrets of 1 KiB, 16 creates in flight
  local dir=$1 i value n
  value=$(head -c 768 /dev/urandom | base64 -w0)   # 1024 characters
  for i in $(seq 1 "$SEED"); do
    printf 'url = "%s/secrets"\nheader = "Content-Type: application/json"\n' "$BASE"
    printf 'data = "{\\"name\\":\\"seed-%s\\",\\"value\\":\\"%s\\",\\"scope_type\\":\\"global\\"}"\n' "$i" "$value"
    printf 'output = "%s/seed-%s.json"\nmax-time = 10\n' "$dir" "$i"
    [ "$i" -lt "$SEED" ] && printf 'next\n'
  done >"$dir/seed.curlrc"
  timeout 300 curl --no-progress-meter --parallel --parallel-max 16 -K "$dir/seed.curlrc" \
    >"$dir/seed.log" 2>&1 || { cat "$dir/seed.log" >&2; die "seeding failed"; }
  cat "$dir"/seed-*.json | jq -r 'select(.id != null) | .id' >"$dir/ids"
  n=$(wc -l <"$dir/ids")
  [ "$n" -eq "$SEED" ] || die "seeding: $n of $SEED secrets created (see $dir)"
}

ROWS=()             # "backend|build|round|rps|p50|p99|non2xx|errors"
declare -A SUM_RPS=() SUM_P99=() RPS_LIST=()
FAILED=0

run_one() { # backend label round
  local backend=$1 label=$2 round=$3 dir url log res rps p50 p99 non2xx errs
  dir="$WORK/$backend-$label-$round"
  mkdir -p "$dir"
  case "$backend" in
    sqlite) url=rcrt.db ;;
    postgres)
      PG_DB="rcrt_chain_$(openssl rand -hex 6)"
      timeout 30 psql "$PG_ADMIN_URL" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE $PG_DB" >/dev/null
      url="${PG_ADMIN_URL%/*}/$PG_DB" ;;
  esac
  start_server "$label" "$url" "$dir"
  seed "$dir"
  log="$dir/wrk.log"
  say "$backend $label round $round: wrk -t$THREADS -c$CONNS -d${DURATION}s decrypt"
  timeout $((DURATION + 60)) wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 5s --latency \
      -s bench/wrk/decrypt.lua "$BASE/secrets" -- "$dir/ids" >"$log" 2>&1 \
    || { cat "$log" >&2; die "wrk failed ($backend $label)"; }
  kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$dir/server.log" >&2; die "rcrt-server stopped during the run"; }
  stop_server
  drop_db
  res=$(grep '^RESULT ' "$log") || { cat "$log" >&2; die "no RESULT line from wrk"; }
  rps=$(field rps "$res"); non2xx=$(field non2xx "$res"); errs=$(wrk_errors "$res")
  p50=$(awk -v u="$(field p50_us "$res")" 'BEGIN{printf "%.2f", u/1000}')
  p99=$(awk -v u="$(field p99_us "$res")" 'BEGIN{printf "%.2f", u/1000}')
  if [ "$non2xx" -ne 0 ] || [ "$errs" -ne 0 ]; then
    FAILED=1; say "WARNING: $non2xx non-2xx answers, $errs socket errors"; tail -n 20 "$dir/server.log" >&2 || true
  fi
  ROWS+=("$backend|$label (${SHA[$label]})|$round|$(printf '%.0f' "$rps")|$p50|$p99|$non2xx|$errs")
  RPS_LIST[$backend/$label]="${RPS_LIST[$backend/$label]:-} $rps"
  SUM_RPS[$backend/$label]=$(awk -v a="${SUM_RPS[$backend/$label]:-0}" -v b="$rps" 'BEGIN{print a + b}')
  SUM_P99[$backend/$label]=$(awk -v a="${SUM_P99[$backend/$label]:-0}" -v b="$p99" 'BEGIN{print a + b}')
  say "  -> $(printf '%.0f' "$rps") req/s, p50 $p50 ms, p99 $p99 ms"
}

# ---------------------------------------------------------------------------------------------
say "$CMDLINE   (machine: $(getconf _NPROCESSORS_ONLN) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg))"
build base "$BASE_REV"
build chain "$CHAIN_REV"
case " $BACKENDS " in *" postgres "*) pg_up ;; esac

for backend in $BACKENDS; do
  case "$backend" in sqlite|postgres) ;; *) die "unknown backend $backend (sqlite, postgres)" ;; esac
  for round in $(seq 1 "$ROUNDS"); do
    # ABBA: neither build always runs first (page cache, PostgreSQL's state, thermal drift).
    order="base chain"
    [ $((round % 2)) -eq 0 ] && order="chain base"
    for label in $order; do run_one "$backend" "$label" "$round"; done
  done
done

mean() { awk -v s="$1" -v n="$ROUNDS" 'BEGIN{printf "%.0f", s / n}'; }
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {printf "%.0f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
mean2() { awk -v s="$1" -v n="$ROUNDS" 'BEGIN{printf "%.2f", s / n}'; }
{
  echo
  echo "### Decrypt with and without the audit hash chain ($(date -u +%Y-%m-%dT%H:%MZ), $(getconf _NPROCESSORS_ONLN) CPUs, wrk on the same machine)"
  echo
  echo "| backend | build | round | req/s | p50 ms | p99 ms | non-2xx | socket errors |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  for r in "${ROWS[@]}"; do echo "| ${r//|/ | } |"; done
  echo
  echo "| backend | baseline req/s (mean / median) | chain req/s (mean / median) | chain / baseline (means / medians) | baseline p99 ms (mean) | chain p99 ms (mean) |"
  echo "|---|---:|---:|---:|---:|---:|"
  for b in $BACKENDS; do
    mb=$(median "${RPS_LIST[$b/base]}"); mc=$(median "${RPS_LIST[$b/chain]}")
    echo "| $b | $(mean "${SUM_RPS[$b/base]}") / $mb | $(mean "${SUM_RPS[$b/chain]}") / $mc | $(awk -v c="${SUM_RPS[$b/chain]}" -v a="${SUM_RPS[$b/base]}" -v mc="$mc" -v mb="$mb" 'BEGIN{printf "%.1f%% / %.1f%%", 100 * c / a, 100 * mc / mb}') | $(mean2 "${SUM_P99[$b/base]}") | $(mean2 "${SUM_P99[$b/chain]}") |"
  done
  echo
  echo "Baseline: ${SHA[base]} ($BASE_REV), chain: ${SHA[chain]} ($CHAIN_REV). Command: \`$CMDLINE\` (${SECONDS}s including builds)"
  echo
  [ "$FAILED" -eq 0 ] && echo "All requests answered 2xx, no socket errors." \
    || echo "**FAILED: some requests got non-2xx answers or socket errors (see the warnings above).**"
}
exit "$FAILED"
