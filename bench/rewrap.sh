#!/usr/bin/env bash
# KEK re-wrap benchmark: re-wrap throughput (rows/s) on PostgreSQL and SQLite, and the decrypt
# p99 of concurrent HTTP traffic while the server's background re-wrap runs, against the same
# traffic without it.
#
# Usage: bench/rewrap.sh
# Knobs (environment): ROWS=1000000 (throughput runs) SQLITE_ROWS=$ROWS  P99_ROWS=300000
#   BATCH=1000 VALUE_BYTES=64  DURATION=10 (seconds per wrk run) THREADS=1 CONNS=8
#   PACE=20000 (REWRAP_MAX_ROWS_PER_SEC of the paced run; 0 skips it)
#   PARTS="pg sqlite p99"  PG_ADMIN_URL=postgres://postgres@127.0.0.1:5432/postgres
#   SKIP_BUILD=1 (use the existing binaries)
#   BENCH_REV=<commit> (build a `git archive` export of that commit with this working tree's
#     examples/rewrap_bench.rs copied in, still into the default target dir; use it when the
#     shared working tree does not build)
#
# What runs:
#   pg:     a throwaway database rcrt_rwb_<random>; `rewrap_bench` seeds ROWS real envelopes under
#           K1 (binary COPY), then runs Maintenance::rewrap to K2 (the code of the background
#           job and `rcrt kek rewrap`) and decrypts a random sample of 1000 rows afterwards.
#   sqlite: the same on a temporary file with SQLITE_ROWS rows.
#   p99:    P99_ROWS rows under K1 in a fresh database; rcrt-server with K2 current and K1 old,
#           REWRAP_AUTO=false. wrk decrypt load (bench/wrk/decrypt.lua over 1000 ids spread over
#           the table) for DURATION s = quiet; then POST /admin/kek/rewrap and the same load at
#           once = during. The re-wrap rate comes from polling /admin/kek/status (remaining)
#           every 0.5 s. Then, if PACE > 0, a server with the keys swapped (K1 current, K2 old)
#           and REWRAP_MAX_ROWS_PER_SEC=PACE re-wraps everything back, measured the same way.
# Everything stays on 127.0.0.1; servers are killed and databases dropped at exit. Every step
# but the cargo build is bounded by a timeout.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

ROWS=${ROWS:-1000000}
SQLITE_ROWS=${SQLITE_ROWS:-$ROWS}
P99_ROWS=${P99_ROWS:-300000}
BATCH=${BATCH:-1000}
VALUE_BYTES=${VALUE_BYTES:-64}
DURATION=${DURATION:-10}
THREADS=${THREADS:-1}
CONNS=${CONNS:-8}
PACE=${PACE:-20000}
PARTS=${PARTS:-"pg sqlite p99"}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
CMDLINE="ROWS=$ROWS SQLITE_ROWS=$SQLITE_ROWS P99_ROWS=$P99_ROWS BATCH=$BATCH VALUE_BYTES=$VALUE_BYTES DURATION=$DURATION THREADS=$THREADS CONNS=$CONNS PACE=$PACE PARTS=\"$PARTS\"${BENCH_REV:+ BENCH_REV=$BENCH_REV} bench/rewrap.sh"

case "$PG_ADMIN_URL" in
  postgres://*@127.0.0.1:*/*|postgres://127.0.0.1:*/*) ;;
  *) echo "bench/rewrap.sh: PG_ADMIN_URL must point at 127.0.0.1" >&2; exit 2 ;;
esac

say() { printf '[rewrap %3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"   # free_port stop_server pg_up machine_ticks field wrk_errors
for tool in wrk curl jq openssl awk psql; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rcrt-rewrap.XXXXXX")
SERVER_PID=""
POLL_PID=""
DBS=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$POLL_PID" ]; then kill "$POLL_PID" 2>/dev/null || true; wait "$POLL_PID" 2>/dev/null || true; fi
  stop_server
  for db in "${DBS[@]}"; do
    timeout 60 psql "$PG_ADMIN_URL" -qX -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 \
      || say "could not drop database $db"
  done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

new_db() { # -> prints the URL of a fresh database
  local db="rcrt_rwb_$(openssl rand -hex 6)"
  timeout 30 psql "$PG_ADMIN_URL" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db" >/dev/null
  DBS+=("$db")
  NEW_DB_URL="${PG_ADMIN_URL%/*}/$db"
}
busy_pct() { # b0 a0 -> % busy since
  local b a; read -r b a < <(machine_ticks)
  awk -v b0="$1" -v a0="$2" -v b1="$b" -v a1="$a" 'BEGIN{printf "%.0f%%", 100*(b1-b0)/(a1-a0)}'
}

# ---------------------------------------------------------------------------------------------
say "$CMDLINE   (machine: $(getconf _NPROCESSORS_ONLN) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg))"
SRC=$ROOT
if [ -n "${BENCH_REV:-}" ]; then
  REVISION="$(git -C "$ROOT" rev-parse --short "$BENCH_REV^{commit}") (git archive export + this tree's rewrap_bench.rs)" \
    || die "unknown revision $BENCH_REV"
  SRC="$WORK/src"
  mkdir -p "$SRC"
  git -C "$ROOT" archive --format=tar "$BENCH_REV" | tar -x -C "$SRC"
  mkdir -p "$SRC/crates/rcrt-core/examples"
  cp "$ROOT/crates/rcrt-core/examples/rewrap_bench.rs" "$SRC/crates/rcrt-core/examples/"
  grep -q '^tokio-postgres' "$SRC/crates/rcrt-core/Cargo.toml" \
    || sed -i 's/^\[dev-dependencies\]$/[dev-dependencies]\ntokio-postgres.workspace = true/' "$SRC/crates/rcrt-core/Cargo.toml"
else
  REVISION="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') (working tree)"
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  say "cargo build --release -p rcrt-core --example rewrap_bench -p rcrt-server --bin rcrt-server (in $SRC)"
  ( cd "$SRC" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release -p rcrt-core --example rewrap_bench \
      -p rcrt-server --bin rcrt-server >&2 ) || die "build failed"
fi
# Private copies: the target dir is shared with other builds.
cp "$TARGET_DIR/release/examples/rewrap_bench" "$WORK/rewrap_bench"
cp "$TARGET_DIR/release/rcrt-server" "$WORK/rcrt-rewrap-server"
BENCH="$WORK/rewrap_bench"
K1=$(openssl rand -base64 32)
K2=$(openssl rand -base64 32)
say "measuring $REVISION"

LINES=()   # markdown table rows
NOTES=()

run_throughput() { # backend url rows
  local backend=$1 url=$2 rows=$3 log="$WORK/throughput-$1.log" b0 a0 busy
  say "$backend: seeding $rows rows under K1, then Maintenance::rewrap to K2 (batch $BATCH)"
  read -r b0 a0 < <(machine_ticks)
  timeout 900 "$BENCH" --db-url "$url" --rows "$rows" --batch-size "$BATCH" --value-bytes "$VALUE_BYTES" \
    --k1 "$K1" --k2 "$K2" --breakdown-batches 20 --verify-sample 1000 >"$log" 2>"$log.err" \
    || { cat "$log" "$log.err" >&2; die "rewrap_bench on $backend failed"; }
  busy=$(busy_pct "$b0" "$a0")
  cat "$log" >&2
  local seed rw bd bt
  seed=$(grep '^SEED backend' "$log"); rw=$(grep '^REWRAP ' "$log"); bd=$(grep '^BREAKDOWN ' "$log"); bt=$(grep '^BATCHES ' "$log")
  LINES+=("| $backend | $(field rows "$rw") | $(field seconds "$rw") | **$(field rows_per_s "$rw")** | $(field p50_ms "$bt") / $(field p99_ms "$bt") | $(field scan_us_per_row "$bd") | $(field crypto_us_per_row "$bd") | $(field bench_process_cpu_pct "$rw")% | $busy | $(field rows_per_s "$seed") |")
  NOTES+=("$backend: $(grep '^VERIFY ' "$log")")
}

for part in $PARTS; do
  case "$part" in
    pg)
      pg_up; new_db
      run_throughput postgres "$NEW_DB_URL" "$ROWS"
      timeout 60 psql "$PG_ADMIN_URL" -qX -c "DROP DATABASE IF EXISTS ${DBS[-1]} WITH (FORCE)" >/dev/null 2>&1 || true
      ;;
    sqlite)
      run_throughput sqlite "$WORK/rewrap.db" "$SQLITE_ROWS"
      rm -f "$WORK"/rewrap.db*
      ;;
    p99) ;;
    *) die "unknown part $part (pg, sqlite, p99)" ;;
  esac
done

# ---------------------------------------------------------------------------------------------
P99_LINES=()
start_server() { # url current old pace
  PORT=$(free_port) || die "no free loopback port"
  mkdir -p "$WORK/srv"
  ( cd "$WORK/srv" && exec env -i PATH="$PATH" LOCAL_KEK_BASE64="$2" LOCAL_KEK_BASE64_OLD="$3" \
      REWRAP_AUTO=false REWRAP_BATCH_SIZE="$BATCH" REWRAP_MAX_ROWS_PER_SEC="$4" RUST_LOG=warn \
      DB_URL="$1" BIND_ADDR="127.0.0.1:$PORT" "$WORK/rcrt-rewrap-server" ) >>"$WORK/srv/server.log" 2>&1 &
  SERVER_PID=$!
  BASE="http://127.0.0.1:$PORT"
  for _ in $(seq 1 150); do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/srv/server.log" >&2; die "rcrt-server exited"; }
    curl -fsS --max-time 1 "$BASE/health" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "rcrt-server did not answer /health within 30 s"
}
wrk_run() { # label -> "rps p50_ms p99_ms non2xx errors"
  local log="$WORK/wrk-$1.log"
  timeout $((DURATION + 60)) wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 5s --latency \
    -s bench/wrk/decrypt.lua "$BASE/secrets" -- "$WORK/ids" >"$log" 2>&1 || { cat "$log" >&2; die "wrk $1 failed"; }
  local res; res=$(grep '^RESULT ' "$log") || { cat "$log" >&2; die "no RESULT from wrk $1"; }
  awk -v r="$(field rps "$res")" -v a="$(field p50_us "$res")" -v b="$(field p99_us "$res")" \
      -v n="$(field non2xx "$res")" -v e="$(wrk_errors "$res")" \
      'BEGIN{printf "%.0f %.2f %.2f %d %d\n", r, a/1000, b/1000, n, e}'
}
poll_status() { # writes "epoch remaining state" lines every 0.5 s until completed/failed
  while :; do
    local s; s=$(curl -fsS --max-time 5 "$BASE/admin/kek/status" 2>/dev/null || echo '{}')
    printf '%s %s %s\n' "$(date +%s.%N)" "$(jq -r '.rewrap.remaining // -1' <<<"$s")" "$(jq -r '.rewrap.state // "?"' <<<"$s")"
    case "$s" in *'"state":"completed"'*|*'"state":"failed"'*) break ;; esac
    sleep 0.5
  done
}
measure_p99() { # label url current old pace
  local label=$1 q d t0 t_end n b0 a0 busy_q busy_d
  start_server "$2" "$3" "$4" "$5"
  say "p99 $label: quiet decrypt load (${DURATION}s, -t$THREADS -c$CONNS)"
  read -r b0 a0 < <(machine_ticks)
  q=$(wrk_run "$label-quiet"); busy_q=$(busy_pct "$b0" "$a0")
  say "  quiet: rps p50 p99 non2xx errors = $q, machine busy $busy_q"
  t0=$(date +%s.%N)
  curl -fsS --max-time 10 -X POST "$BASE/admin/kek/rewrap" >/dev/null || die "POST /admin/kek/rewrap failed"
  poll_status >"$WORK/poll-$label.txt" & POLL_PID=$!
  say "p99 $label: re-wrap triggered, same load at once"
  read -r b0 a0 < <(machine_ticks)
  d=$(wrk_run "$label-during"); busy_d=$(busy_pct "$b0" "$a0")
  local t_wrk_end; t_wrk_end=$(date +%s.%N)
  say "  during: rps p50 p99 non2xx errors = $d, machine busy $busy_d"
  for _ in $(seq 1 600); do kill -0 "$POLL_PID" 2>/dev/null || break; sleep 0.5; done
  kill "$POLL_PID" 2>/dev/null || true; wait "$POLL_PID" 2>/dev/null || true; POLL_PID=""
  # Rate: rows from the trigger to the first poll that saw remaining = 0; the share of the wrk
  # window the re-wrap covered.
  local rate overlap state
  read -r rate overlap state < <(awk -v t0="$t0" -v n="$P99_ROWS" -v wend="$t_wrk_end" -v dur="$DURATION" '
      { t=$1; r=$2; st=$3; if (r == 0 && done == "") done = t; last = st }
      END { if (done == "") { printf "n/a n/a %s\n", last; exit }
            el = done - t0; ov = (done < wend ? done : wend) - (wend - dur); if (ov < 0) ov = 0;
            printf "%.0f %.0f%% %s\n", n / el, 100 * ov / dur, last }' "$WORK/poll-$label.txt")
  stop_server
  read -r qr qp50 qp99 qn qe <<<"$q"; read -r dr dp50 dp99 dn de <<<"$d"
  local ratio; ratio=$(awk -v a="$dp99" -v b="$qp99" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "n/a" }')
  P99_LINES+=("| $label | ${5:-0} | **$rate** ($state) | $overlap | $qr / $dr | $qp50 / $dp50 | $qp99 / $dp99 | **$ratio** | $busy_q / $busy_d | $((qn + dn)) / $((qe + de)) |")
  say "  $label: re-wrap $rate rows/s ($state), covered $overlap of the wrk window; p99 $qp99 -> $dp99 ms (x$ratio)"
}

case " $PARTS " in *" p99 "*)
  pg_up; new_db; P99_URL=$NEW_DB_URL
  say "p99: seeding $P99_ROWS rows under K1"
  timeout 600 "$BENCH" --db-url "$P99_URL" --rows "$P99_ROWS" --value-bytes "$VALUE_BYTES" --k1 "$K1" --k2 "$K2" \
    --seed-only --ids-out "$WORK/ids" --ids-count 1000 >"$WORK/p99-seed.log" 2>&1 \
    || { cat "$WORK/p99-seed.log" >&2; die "seeding for p99 failed"; }
  cat "$WORK/p99-seed.log" >&2
  measure_p99 unpaced "$P99_URL" "$K2" "$K1" 0
  # Everything is under K2 now: swap the keys and re-wrap back to K1, paced.
  [ "$PACE" -gt 0 ] && measure_p99 "paced" "$P99_URL" "$K1" "$K2" "$PACE"
esac

# ---------------------------------------------------------------------------------------------
{
  echo
  echo "### KEK re-wrap benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(getconf _NPROCESSORS_ONLN) CPUs, load average before: see log)"
  echo
  if [ ${#LINES[@]} -gt 0 ]; then
    echo "| backend | rows | seconds | re-wrap rows/s | batch p50 / p99 ms | scan µs/row | crypto µs/row | bench process CPU | machine busy (seed + re-wrap) | seed rows/s |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for l in "${LINES[@]}"; do echo "$l"; done
    echo
    for n in "${NOTES[@]}"; do echo "- $n"; done
    echo
  fi
  if [ ${#P99_LINES[@]} -gt 0 ]; then
    echo "Decrypt latency during the server's background re-wrap (PostgreSQL, $P99_ROWS rows, wrk -t$THREADS -c$CONNS -d${DURATION}s, quiet / during):"
    echo
    echo "| run | REWRAP_MAX_ROWS_PER_SEC | re-wrap rows/s | re-wrap covered wrk window | decrypt req/s | p50 ms | p99 ms | p99 during / quiet | machine busy | non-2xx / socket errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for l in "${P99_LINES[@]}"; do echo "$l"; done
    echo
  fi
  echo "Revision: $REVISION. Command: \`$CMDLINE\` (total ${SECONDS}s including the build)"
}
