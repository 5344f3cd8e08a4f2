#!/usr/bin/env bash
# setup-rcrt-secrets.sh — production set-up check for RCRT Secrets (the production guide's
# "Example Production Setup Script", with the service's own commands). See deploy/scripts/README.md.
#
#   1. refuses to run unless ENVIRONMENT=production;
#   2. retrieves the KEK from the first secure source found, in the guide's order:
#        HashiCorp Vault   when `vault` is on PATH:  vault kv get -field=kek secret/rcrt/production
#        AWS Secrets Mgr   when AWS_REGION is set:   aws secretsmanager get-secret-value
#                                                      --secret-id rcrt-kek-production
#        a secret file     when it exists:           /run/secrets/rcrt_kek (Docker / Kubernetes)
#      and fails when none is available (a source that is found but fails is an error: the
#      script never falls through to another source, which could hold another KEK);
#   3. validates the KEK: the guide's format (44 characters of base64 ending in `=`) and
#      `rcrt kek check --stdin` (32 bytes, not the guide's published example), which gives its
#      KEK id;
#   4. checks that the running service uses this same KEK: the `kek_id` of GET /ready must be the
#      retrieved KEK's id (a service started with another KEK would write secrets that the
#      secure source's KEK cannot open);
#   5. smoke test: creates a uniquely named global secret (POST /secrets), decrypts it with a
#      reason and compares the value, deletes it (DELETE /secrets/{id});
#   6. appends one line (time, KEK id, source, URL; never the KEK) to RCRT_SETUP_LOG.
#
# The script configures nothing: the service reads its KEK itself (LOCAL_KEK_BASE64 or
# LOCAL_KEK_BASE64_FILE). It proves that the KEK in the secure source is the one the service runs
# with, and that the service encrypts, decrypts and deletes. The KEK stays in a shell variable that
# is not exported: it reaches `rcrt kek check` on stdin and is never printed, logged or put on a
# command line (the `vault` and `aws` commands carry only paths and ids on theirs).
#
# Environment:
#   ENVIRONMENT          must be "production"
#   RCRT_KEK_SOURCE      auto (default: the guide's order above), vault, aws or file
#   RCRT_KEK_VAULT_PATH  Vault KV path (default secret/rcrt/production); the vault CLI reads
#                        VAULT_ADDR, VAULT_TOKEN (or its token helper), VAULT_NAMESPACE itself
#   RCRT_KEK_VAULT_FIELD field of that entry holding the KEK (default kek)
#   RCRT_KEK_SECRET_ID   AWS Secrets Manager secret id or ARN (default rcrt-kek-production); the
#                        aws CLI reads AWS_REGION, AWS_PROFILE, credentials, AWS_ENDPOINT_URL itself
#   RCRT_KEK_FILE        the secret file (default /run/secrets/rcrt_kek)
#   RCRT_URL             the service's base URL (default http://localhost:8081)
#   RCRT_TOKEN           a bearer token (service token or JWT) with the secrets.write and
#                        secrets.decrypt roles, for a service with authentication on; or
#   RCRT_TOKEN_FILE      a file holding it (sent from a private header file, never on a command line)
#   RCRT_SETUP_LOG       where the success line is appended (default /var/log/rcrt-setup.log)
#   RCRT_BIN             the rcrt CLI (default: rcrt on PATH)
#   CURL_MAX_TIME        seconds per HTTP request (default 15)
#
# Exit status: 0 the service is operational with the secure source's KEK, 1 failed, 2 usage.
set -euo pipefail

say() { printf 'setup-rcrt-secrets: %s\n' "$*" >&2; }
die() {
  say "ERROR: $*"
  exit 1
}
usage() {
  say "$*"
  say "usage: ENVIRONMENT=production $0  (configured through the environment; see the header)"
  exit 2
}

[ "$#" -eq 0 ] || usage "takes no arguments; configure it through the environment"

# --- 1. Production only ------------------------------------------------------------------------
if [[ "${ENVIRONMENT:-}" != "production" ]]; then
  die "This script is for production only (ENVIRONMENT=${ENVIRONMENT:-<unset>}, expected production)"
fi

RCRT_KEK_SOURCE=${RCRT_KEK_SOURCE:-auto}
RCRT_KEK_VAULT_PATH=${RCRT_KEK_VAULT_PATH:-secret/rcrt/production}
RCRT_KEK_VAULT_FIELD=${RCRT_KEK_VAULT_FIELD:-kek}
RCRT_KEK_SECRET_ID=${RCRT_KEK_SECRET_ID:-rcrt-kek-production}
RCRT_KEK_FILE=${RCRT_KEK_FILE:-/run/secrets/rcrt_kek}
RCRT_URL=${RCRT_URL:-http://localhost:8081}
RCRT_URL=${RCRT_URL%/}
RCRT_SETUP_LOG=${RCRT_SETUP_LOG:-/var/log/rcrt-setup.log}
RCRT_BIN=${RCRT_BIN:-rcrt}
CURL_MAX_TIME=${CURL_MAX_TIME:-15}
case $RCRT_KEK_SOURCE in auto | vault | aws | file) ;; *) usage "RCRT_KEK_SOURCE must be auto, vault, aws or file" ;; esac
case $CURL_MAX_TIME in '' | *[!0-9]*) usage "CURL_MAX_TIME must be a number of seconds" ;; esac
if [ -n "${RCRT_TOKEN:-}" ] && [ -n "${RCRT_TOKEN_FILE:-}" ]; then
  usage "set RCRT_TOKEN or RCRT_TOKEN_FILE, not both"
fi
for tool in "$RCRT_BIN" curl jq; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (or not on PATH)"
done
# Fail before touching anything if the success line could not be written at the end.
(: >>"$RCRT_SETUP_LOG") 2>/dev/null || die "cannot append to RCRT_SETUP_LOG $RCRT_SETUP_LOG"

private=$(umask 077 && mktemp -d)
test_id=
cleanup() {
  # A smoke-test secret left behind by a failure is deleted (best effort).
  if [ -n "$test_id" ]; then
    curl -sS --max-time "$CURL_MAX_TIME" "${auth[@]}" -X DELETE -o /dev/null \
      "$RCRT_URL/secrets/$test_id" 2>/dev/null || say "could not delete the test secret $test_id: delete it by hand"
  fi
  rm -rf "$private"
}
auth=()
trap cleanup EXIT

# --- 2. Retrieve the KEK from a secure source --------------------------------------------------
# Each source prints the KEK on stdout into a command substitution; nothing is exported.
kek=
source_name=
from_vault() {
  command -v vault >/dev/null 2>&1 || die "RCRT_KEK_SOURCE=vault but the vault CLI is not on PATH"
  source_name="HashiCorp Vault ($RCRT_KEK_VAULT_PATH, field $RCRT_KEK_VAULT_FIELD)"
  say "Retrieving KEK from $source_name..."
  kek=$(vault kv get -field="$RCRT_KEK_VAULT_FIELD" "$RCRT_KEK_VAULT_PATH") ||
    die "vault kv get -field=$RCRT_KEK_VAULT_FIELD $RCRT_KEK_VAULT_PATH failed (check VAULT_ADDR, VAULT_TOKEN and the policy)"
}
from_aws() {
  command -v aws >/dev/null 2>&1 || die "the AWS CLI (aws) is not on PATH"
  [ -n "${AWS_REGION:-}" ] || die "AWS_REGION is not set"
  source_name="AWS Secrets Manager ($RCRT_KEK_SECRET_ID, $AWS_REGION)"
  say "Retrieving KEK from $source_name..."
  # AWS CLI v1 reads only AWS_DEFAULT_REGION; v2 reads AWS_REGION first.
  kek=$(AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-$AWS_REGION} aws secretsmanager get-secret-value --secret-id "$RCRT_KEK_SECRET_ID" \
    --query SecretString --output text) ||
    die "aws secretsmanager get-secret-value --secret-id $RCRT_KEK_SECRET_ID failed (check the region, credentials and IAM policy)"
}
from_file() {
  [ -f "$RCRT_KEK_FILE" ] || die "the secret file $RCRT_KEK_FILE does not exist"
  [ -r "$RCRT_KEK_FILE" ] || die "the secret file $RCRT_KEK_FILE is not readable by $(id -un)"
  source_name="secret file $RCRT_KEK_FILE"
  say "Retrieving KEK from $source_name..."
  kek=$(<"$RCRT_KEK_FILE")
}
case $RCRT_KEK_SOURCE in
  vault) from_vault ;;
  aws) from_aws ;;
  file) from_file ;;
  auto)
    if command -v vault >/dev/null 2>&1; then
      from_vault
    elif [[ -n "${AWS_REGION:-}" ]]; then
      from_aws
    elif [[ -f "$RCRT_KEK_FILE" ]]; then
      from_file
    else
      die "No secure KEK source available: no vault CLI on PATH, AWS_REGION not set, no file $RCRT_KEK_FILE (set RCRT_KEK_SOURCE / RCRT_KEK_FILE, see the header)"
    fi
    ;;
esac
# Surrounding whitespace (a file's newline, a CRLF) is not part of the key.
kek=${kek#"${kek%%[![:space:]]*}"}
kek=${kek%"${kek##*[![:space:]]}"}

# --- 3. Validate the KEK -----------------------------------------------------------------------
[ -n "$kek" ] || die "Invalid KEK format: $source_name holds an empty value"
if [[ ! "$kek" =~ ^[A-Za-z0-9+/]{43}=$ ]]; then
  die "Invalid KEK format: $source_name does not hold 32 bytes of standard base64 (44 characters ending in '='); generate one with: rcrt kek generate"
fi
# printf is a builtin: the KEK goes through a pipe, not an argument list.
check=$(printf '%s\n' "$kek" | "$RCRT_BIN" kek check --stdin 2>"$private/check.err") || {
  sed 's/^/  /' "$private/check.err" >&2
  die "Invalid KEK: rcrt kek check refused the KEK from $source_name"
}
kek=
kek_id=${check#KEK OK: id }
[[ "$kek_id" =~ ^[0-9a-f]{16}$ ]] || die "unexpected output from rcrt kek check"
say "KEK configured successfully: KEK id $kek_id (from $source_name)"

# --- 4. The service must run with this KEK -----------------------------------------------------
# curl reads the Authorization header from a 0600 file (-H @file): the token is on no command line.
if [ -n "${RCRT_TOKEN_FILE:-}" ]; then
  [ -r "$RCRT_TOKEN_FILE" ] || die "RCRT_TOKEN_FILE $RCRT_TOKEN_FILE is not readable"
  token=$(tr -d '[:space:]' <"$RCRT_TOKEN_FILE")
  [ -n "$token" ] || die "RCRT_TOKEN_FILE $RCRT_TOKEN_FILE is empty"
elif [ -n "${RCRT_TOKEN:-}" ]; then
  token=${RCRT_TOKEN//[[:space:]]/}
else
  token=
fi
unset RCRT_TOKEN # kept out of the environment of curl and jq
if [ -n "$token" ]; then
  printf 'Authorization: Bearer %s\n' "$token" >"$private/auth-header"
  auth=(-H "@$private/auth-header")
fi
token=

# api METHOD PATH [JSON]: the status in $code, the body in $private/body.
api() {
  local data=()
  if [ "$#" -ge 3 ]; then data=(-H 'Content-Type: application/json' --data-binary "@$private/request"); fi
  if [ "$#" -ge 3 ]; then printf '%s' "$3" >"$private/request"; fi
  code=$(curl -sS --fail-with-body --connect-timeout 5 --max-time "$CURL_MAX_TIME" \
    "${auth[@]}" "${data[@]}" -X "$1" -o "$private/body" -w '%{http_code}' \
    "$RCRT_URL$2" 2>"$private/curl.err") || true
  code=${code:-000}
}
# Says why a request was refused, and exits.
refused() { # what
  local detail
  detail=$(jq -r '.error | "\(.code): \(.message)"' "$private/body" 2>/dev/null || true)
  case $code in
    000) die "$1: cannot reach $RCRT_URL ($(head -c 300 "$private/curl.err")): is the service running at RCRT_URL?" ;;
    401)
      if [ "${#auth[@]}" -eq 0 ]; then
        die "$1: the service requires authentication (HTTP 401): set RCRT_TOKEN_FILE (or RCRT_TOKEN) to a token with the secrets.write and secrets.decrypt roles"
      fi
      die "$1: the service refused the token (HTTP 401: unknown, expired or revoked): check RCRT_TOKEN_FILE / RCRT_TOKEN"
      ;;
    403) die "$1: the token lacks a role (HTTP 403 ${detail:-forbidden}): it needs secrets.write and secrets.decrypt" ;;
    *) die "$1: HTTP $code ${detail:-}" ;;
  esac
}

say "Checking that the service at $RCRT_URL runs with this KEK..."
api GET /ready
[ "$code" = 200 ] || refused "GET /ready (the service is not ready)"
server_kek_id=$(jq -r '.kek_id // empty' "$private/body" 2>/dev/null || true)
[ -n "$server_kek_id" ] || die "GET $RCRT_URL/ready did not report a kek_id: is this an RCRT Secrets service?"
if [ "$server_kek_id" != "$kek_id" ]; then
  die "the service at $RCRT_URL runs with KEK id $server_kek_id, but the KEK from $source_name has id $kek_id: the service was started with another KEK. Restart it with the secure source's KEK (or update the source) before storing secrets"
fi
say "the service runs with KEK id $kek_id"

# --- 5. Smoke test: create, decrypt, delete ----------------------------------------------------
say "Testing secrets service..."
suffix=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
name="rcrt-setup-smoke-$(date -u +%Y%m%dT%H%M%SZ)-$suffix"
value="smoke-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
api POST /secrets "{\"name\":\"$name\",\"value\":\"$value\",\"scope_type\":\"global\"}"
[ "$code" = 201 ] || refused "creating the test secret $name (POST /secrets)"
test_id=$(jq -r '.id // empty' "$private/body" 2>/dev/null || true)
[ -n "$test_id" ] || die "POST /secrets answered 201 without an id"

api POST "/secrets/$test_id/decrypt" '{"reason":"setup-rcrt-secrets.sh smoke test"}'
[ "$code" = 200 ] || refused "decrypting the test secret (POST /secrets/$test_id/decrypt)"
got=$(jq -r '.value // empty' "$private/body" 2>/dev/null || true)
[ "$got" = "$value" ] || die "the test secret decrypted to a different value: the service is not working"

api DELETE "/secrets/$test_id"
[ "$code" = 204 ] || refused "deleting the test secret (DELETE /secrets/$test_id)"
deleted=$test_id
test_id=
api POST "/secrets/$deleted/decrypt" '{"reason":"setup-rcrt-secrets.sh smoke test, after delete"}'
[ "$code" = 404 ] || die "the deleted test secret still answers (HTTP $code to a decrypt)"
say "✅ RCRT secrets service is operational (created, decrypted and deleted a test secret)"

# --- 6. Log the success (never the KEK) --------------------------------------------------------
printf '%s Production secrets service initialized: KEK id %s from %s; service %s\n' \
  "$(date -Iseconds)" "$kek_id" "$source_name" "$RCRT_URL" >>"$RCRT_SETUP_LOG" ||
  die "cannot append to RCRT_SETUP_LOG $RCRT_SETUP_LOG"
say "logged to $RCRT_SETUP_LOG"
