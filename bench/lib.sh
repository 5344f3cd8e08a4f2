# shellcheck shell=bash disable=SC2034  # the variables set here are read by the sourcing scripts
# Helpers shared by the bench/*.sh scripts (sourced, not run). They expect the sourcing script to
# define say (log to stderr) and die (say, then exit 1), and use its PG_ADMIN_URL and SERVER_PID.

# A free TCP port on 127.0.0.1 (nothing answers a connect there), or status 1 after 100 tries.
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}

# Stops the server $SERVER_PID (SIGTERM, then SIGKILL after 5 s) and clears SERVER_PID.
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}

# Starts the local PostgreSQL cluster if $PG_ADMIN_URL does not answer.
pg_up() {
  if ! timeout 5 psql "$PG_ADMIN_URL" -qXAtc 'select 1' >/dev/null 2>&1; then
    say "PostgreSQL is down: starting the local cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
    for _ in $(seq 1 60); do timeout 5 psql "$PG_ADMIN_URL" -qXAtc 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
  fi
}

# "busy all" CPU ticks of the whole machine from /proc/stat.
machine_ticks() { awk '/^cpu /{busy=$2+$3+$4+$7+$8+$9; print busy, busy+$5+$6; exit}' /proc/stat; }

# field NAME LINE: the value of NAME=value in a "RESULT ..." or similar line.
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2" | head -n 1; }

# wrk_errors RESULT_LINE: the sum of wrk's connect, read, write and timeout socket errors.
wrk_errors() {
  echo $(( $(field err_connect "$1") + $(field err_read "$1") + $(field err_write "$1") + $(field err_timeout "$1") ))
}

# ---------------------------------------------------------------------------------------------
# The rcrt-server HTTP harness shared by bench/http.sh and bench/peers.sh. Besides say/die they
# expect: ROOT, WORK (a private temporary directory), DURATION, THREADS, CONNS, SEED, and for
# build_server BENCH_REV, SKIP_BUILD, TARGET_DIR. Results go into the arrays that results_init
# declares. (bench/rewrap.sh, bench/kms.sh and bench/audit_chain.sh define their own
# start_server, seed and so on after sourcing this file; theirs win.)

# Declares the result arrays: ROWS (table rows "backend|workload|rate|p50_ms|p99_ms|non2xx|
# errors|server_cpu|machine_busy"), COMMANDS, RATE / P50_MS / P99_MS (by "backend/workload")
# and FAILED (1 once any request failed).
results_init() {
  ROWS=()
  COMMANDS=()
  declare -gA RATE=() P50_MS=() P99_MS=()
  FAILED=0
}

# Builds (unless SKIP_BUILD=1) and copies the release rcrt-server to $BIN; sets REVISION to what
# is measured: a commit, or the working tree (then whether it has uncommitted changes).
build_server() {
  SRC=$ROOT
  if [ -n "${BENCH_REV:-}" ]; then
    REVISION="$(git -C "$ROOT" rev-parse --short "$BENCH_REV^{commit}") (clean git archive export)" \
      || die "unknown revision $BENCH_REV"
    SRC="$WORK/src"
    mkdir -p "$SRC"
    git -C "$ROOT" archive --format=tar "$BENCH_REV" | tar -x -C "$SRC"
  else
    if REVISION=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
      local dirty
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
}

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
  # One KEK per backend, so a restart (in the other auth mode) serves the same secrets.
  [ -f "$WORK/$name/kek" ] || (umask 077 && openssl rand -base64 32 >"$WORK/$name/kek")
  kek=$(cat "$WORK/$name/kek")
  local auth_env=()
  export RCRT_BENCH_TOKEN=""
  if [ "$auth" = token ]; then
    [ -f "$WORK/$name/token" ] || (umask 077 && echo "rcrt_$(openssl rand -hex 16)_$(openssl rand -hex 32)" >"$WORK/$name/token")
    auth_env=(AUTH_MODE=token BOOTSTRAP_ADMIN_TOKEN_FILE="$WORK/$name/token")
    RCRT_BENCH_TOKEN=$(cat "$WORK/$name/token")
  fi
  local try log="$WORK/$name/server.log" from
  for try in 1 2 3 4 5; do
    from=1   # this start's first log line
    if [ -f "$log" ]; then from=$(( $(wc -l <"$log") + 1 )); fi
    # A clean environment: only what the server needs (no DATABASE_URL, .env, ...).
    ( cd "$WORK/$name" && exec env -i PATH="$PATH" LOCAL_KEK_BASE64="$kek" RUST_LOG=warn \
        DB_URL="$db_url" BIND_ADDR="127.0.0.1:$PORT" "${auth_env[@]}" "$BIN" ) >>"$WORK/$name/server.log" 2>&1 &
    SERVER_PID=$!
    BASE="http://127.0.0.1:$PORT"
    for _ in $(seq 1 150); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      curl -fsS --max-time 1 "$BASE/health" >/dev/null 2>&1 && { say "rcrt-server ($name) pid $SERVER_PID on $BASE"; return 0; }
      sleep 0.2
    done
    kill -0 "$SERVER_PID" 2>/dev/null && die "rcrt-server ($name) did not answer /health within 30 s"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    # The free port may have been taken meanwhile (it is in the ephemeral range): try another.
    tail -n "+$from" "$log" | grep -q 'ddress already in use' && [ "$try" -lt 5 ] \
      || { cat "$log" >&2; die "rcrt-server ($name) exited"; }
    say "rcrt-server ($name): port $PORT taken, trying another"
    PORT=$(free_port) || die "no free loopback port"
  done
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
  die "${SERVER_LABEL:-rcrt-server} stopped during '$1' (exit status $status; 143 = SIGTERM, 137 = SIGKILL, i.e. killed from outside this script)"
}

add_row() { # backend workload rate p50_ms p99_ms non2xx errors server_cpu machine_busy
  local IFS='|'
  ROWS+=("$*")
}

# Runs wrk against the server $SERVER_PID at $BASE and records the result (a row, RATE, P50_MS,
# P99_MS; FAILED=1 on any non-2xx answer or socket error). The log goes to $WORK/backend/.
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
  P50_MS["$backend/$workload"]=$p50
  P99_MS["$backend/$workload"]=$p99
  # shellcheck disable=SC2086
  add_row "$backend" "$workload" "$(printf '%.0f' "$rps") req/s" "$p50" "$p99" "$non2xx" "$errs" $cpu
  say "  -> $(printf '%.0f' "$rps") req/s, p50 $p50 ms, p99 $p99 ms, non-2xx $non2xx, socket errors $errs, server CPU / machine busy: $cpu"
}

# pgbench with bench/pgbench/<sqlfile> (CONNS clients, THREADS threads, DURATION s) on db_url,
# whose bench_ids table holds SEED ids; p50/p99 from the per-transaction log. Further arguments
# go to pgbench (e.g. -D name=value).
run_pgbench() { # workload sqlfile db_url [pgbench args...]
  local workload=$1 sql=$2 url=$3
  shift 3
  local log="$WORK/postgres/pgbench-$workload.log" prefix="$WORK/postgres/pgblog-$workload"
  local cmd=(pgbench -n -M prepared -c "$CONNS" -j "$THREADS" -T "$DURATION" -D "nids=$SEED"
             "$@" -f "bench/pgbench/$sql")
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
  P50_MS["postgres/$workload"]=${lat% *}
  P99_MS["postgres/$workload"]=${lat#* }
  # shellcheck disable=SC2086
  add_row postgres "$workload" "$(printf '%.0f' "$tps") tps" $lat "$failed (failed tx)" 0 $cpu
  say "  -> $(printf '%.0f' "$tps") tps, p50/p99 ms: $lat, failed $failed, server CPU / machine busy: $cpu"
}
