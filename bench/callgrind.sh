#!/usr/bin/env bash
# Instructions (callgrind Ir) per decrypt, create and update of one release rcrt-server binary
# on a fresh SQLite file, AUTH_MODE unset, one keep-alive connection, requests one at a time.
# Instruction counts repeat to about 1% where wall-clock figures do not (see docs/benchmarks.md).
#
# Usage: bench/callgrind.sh BIN [OUT_DIR]   (OUT_DIR keeps the dumps for callgrind_annotate)
# Prints one line: decrypt=<Ir> create=<Ir> update=<Ir> update_v6_10=<Ir> update_v11_15=<Ir>
#
# One server under valgrind --tool=callgrind; counters zeroed before and dumped after each
# measured batch, which runs after its own warm-up:
#   50 secrets created (768-byte values); 200 + 1000 decrypts, cycling over them (cg.out.1);
#   200 + 500 creates of fresh names (768-byte values) (cg.out.2);
#   200 + 2 x 250 updates (PUT, 768-byte values) cycling over the 50 secrets: the first 250
#   take each to versions 6-10 (cg.out.3), the next 250 to 11-15 (cg.out.4), beyond the default
#   MAX_VERSIONS of 10 (since issue 15), so each of those destroys the oldest version.
set -euo pipefail

say() { echo "callgrind.sh: $*" >&2; }
die() { say "$*"; exit 1; }
BIN=$(realpath "${1:?usage: bench/callgrind.sh BIN [OUT_DIR]}")
OUT=${2:-}
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
command -v callgrind_control >/dev/null || die "valgrind missing (apt-get install -y valgrind)"

WORK=$(mktemp -d)
SERVER_PID=""
trap 'stop_server; [ -z "$OUT" ] || { mkdir -p "$OUT"; cp "$WORK"/cg.out* "$WORK/server.log" "$OUT"/; }; rm -rf "$WORK"' EXIT

VALUE=$(printf 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/%.0s' $(seq 1 12))
PORT=$(free_port) || die "no free loopback port"
BASE="http://127.0.0.1:$PORT"
( cd "$WORK" && exec env -i PATH="$PATH" LOCAL_KEK_BASE64="$(openssl rand -base64 32)" \
    RUST_LOG=warn DB_URL=rcrt.db BIND_ADDR="127.0.0.1:$PORT" \
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "$BIN" ) >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
  curl -fsS --max-time 2 "$BASE/health" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; die "server exited"; }
  sleep 1
done
curl -fsS --max-time 5 "$BASE/health" >/dev/null || die "no answer on $BASE/health within 300 s"

# rc FILE METHOD N PATH_FN BODY_FN: a curl config of N requests; request i goes to $(PATH_FN i)
# with body $(BODY_FN i).
rc() {
  local file=$1 method=$2 n=$3 pathf=$4 bodyf=$5 i
  for i in $(seq 1 "$n"); do
    printf 'url = "%s%s"\nrequest = "%s"\nheader = "Content-Type: application/json"\n' \
      "$BASE" "$("$pathf" "$i")" "$method"
    printf 'data = "%s"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' "$("$bodyf" "$i" | sed 's/"/\\"/g')"
    if [ "$i" -lt "$n" ]; then echo next; fi
  done >"$WORK/$file"
}
# send FILE STATUS: runs the config over one connection; every answer must be STATUS.
send() {
  local codes
  codes=$(curl -sS -K "$WORK/$1" | sort | uniq -c)
  [ "$(wc -l <<<"$codes")" -eq 1 ] && [[ $codes == *" $2" ]] || die "$1: answers $codes"
}
cg() { callgrind_control "$1" "$SERVER_PID" >/dev/null 2>&1 || die "callgrind_control $1 failed"; }
ir() { awk -v n="$2" '/^(summary|totals):/ {printf "%.0f", $2 / n; exit}' "$WORK/cg.out.$1"; }

id() { sed -n "$(( ($1 - 1) % 50 + 1 ))p" "$WORK/ids"; }
p_secrets() { echo /secrets; }
p_decrypt() { echo "/secrets/$(id "$1")/decrypt"; }
p_update() { echo "/secrets/$(id "$1")"; }
b_seed() { printf '{"name":"seed-%s","value":"%s","scope_type":"global"}' "$1" "$VALUE"; }
b_warm() { printf '{"name":"warm-%s","value":"%s","scope_type":"global"}' "$1" "$VALUE"; }
b_create() { printf '{"name":"run-%s","value":"%s","scope_type":"global"}' "$1" "$VALUE"; }
b_decrypt() { echo '{"reason":"bench"}'; }
b_update() { printf '{"value":"%s"}' "$VALUE"; }

for i in $(seq 1 50); do
  curl -fsS -H 'Content-Type: application/json' -d "$(b_seed "$i")" "$BASE/secrets" | jq -r .id
done >"$WORK/ids"
[ "$(grep -c . "$WORK/ids")" -eq 50 ] || die "seeding failed"

rc warm_d.rc POST 200 p_decrypt b_decrypt; rc run_d.rc POST 1000 p_decrypt b_decrypt
send warm_d.rc 200; cg -z; send run_d.rc 200; cg -d
rc warm_c.rc POST 200 p_secrets b_warm; rc run_c.rc POST 500 p_secrets b_create
send warm_c.rc 201; cg -z; send run_c.rc 201; cg -d
rc warm_u.rc PUT 200 p_update b_update; rc run_u.rc PUT 250 p_update b_update
send warm_u.rc 200; cg -z; send run_u.rc 200; cg -d; send run_u.rc 200; cg -d
for f in 1 2 3 4; do [ -s "$WORK/cg.out.$f" ] || die "no dump cg.out.$f"; done

echo "decrypt=$(ir 1 1000) create=$(ir 2 500)" \
  "update=$(( ($(ir 3 1) + $(ir 4 1)) / 500 )) update_v6_10=$(ir 3 250) update_v11_15=$(ir 4 250)"
