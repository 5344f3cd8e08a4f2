#!/usr/bin/env bash
# kek-rotation.sh — online KEK rotation for RCRT Secrets (the production guide's "KEK Rotation
# Strategy", with the service's own commands). See docs/operations.md, "Rotation".
#
#   1. generate a new KEK with `rcrt kek generate` into NEW_KEK_FILE (mode 0600);
#   2. restart the service with LOCAL_KEK_BASE64=<new> and LOCAL_KEK_BASE64_OLD=<old>
#      (through RESTART_CMD, below) and wait until it answers with the new KEK id;
#   3. trigger the background re-wrap (POST /admin/kek/rewrap) and poll GET /admin/kek/status
#      until no version is left under the old KEK;
#   4. if DB_URL is set, prove with `rcrt kek verify` that the new KEK alone opens every version;
#   5. with FINALIZE=1, restart once more with the new KEK alone; otherwise say how to.
#
# Keys are never printed, logged or put on a command line: they travel in files and in the
# environment of RESTART_CMD only. Re-running after a failure resumes: an existing NEW_KEK_FILE is
# reused, and a service already running with the new KEK is not restarted again.
#
# Environment:
#   RCRT_URL        the service's base URL, e.g. http://127.0.0.1:8081 (admin API and /ready)
#   OLD_KEK_FILE    file holding the KEK the service runs with now (one KEK)
#   NEW_KEK_FILE    where to write the new KEK (created 0600; reused if it exists, to resume)
#   RESTART_CMD     shell command (run with `bash -c`) that restarts the service with the KEKs
#                   it finds in its environment, and returns once the restart is under way:
#                     RCRT_ROTATION_PHASE  "rotate" (new + old KEK) or "finalize" (new KEK only)
#                     LOCAL_KEK_BASE64     the new KEK (value)
#                     LOCAL_KEK_BASE64_OLD the old KEK (value; rotate phase only)
#                     RCRT_KEK_FILE        the new KEK's file (NEW_KEK_FILE, absolute)
#                     RCRT_KEK_OLD_FILE    the old KEK's file (OLD_KEK_FILE, absolute; rotate only)
#                   LOCAL_KEK_BASE64_FILE and LOCAL_KEK_BASE64_OLD_FILE are removed from its
#                   environment (the service refuses a variable and its _FILE twin together).
#                   A hook for a service manager that does not inherit the caller's environment
#                   (systemd, Kubernetes) writes the values or the file paths where the service
#                   reads them (EnvironmentFile=, a Secret) and then restarts it.
# Optional:
#   RCRT_TOKEN_FILE file holding a bearer token (a JWT or a service token) with the rcrt.operator
#                   role, for a service with authentication on (sent from a private header file,
#                   never on a command line)
#   DB_URL          the store (postgres://... or a SQLite path) for the `rcrt kek verify` step
#   FINALIZE        1: restart with the new KEK alone at the end (default 0: print how to)
#   RCRT_BIN        the rcrt CLI (default: rcrt on PATH)
#   READY_TIMEOUT   seconds to wait for the restarted service (default 120)
#   REWRAP_TIMEOUT  seconds to wait for the re-wrap (default 3600)
#   POLL_INTERVAL   seconds between status polls (default 5)
#
# Exit status: 0 done, 1 failed (the old KEK is still needed: keep it configured), 2 usage.
set -euo pipefail

say() { printf 'kek-rotation: %s\n' "$*" >&2; }
die() {
  say "ERROR: $*"
  exit 1
}
usage() {
  say "$*"
  say "usage: RCRT_URL=... OLD_KEK_FILE=... NEW_KEK_FILE=... RESTART_CMD=... $0  (see the header)"
  exit 2
}

[ "$#" -eq 0 ] || usage "takes no arguments; configure it through the environment"
for var in RCRT_URL OLD_KEK_FILE NEW_KEK_FILE RESTART_CMD; do
  [ -n "${!var:-}" ] || usage "$var is not set"
done
RCRT_BIN=${RCRT_BIN:-rcrt}
FINALIZE=${FINALIZE:-0}
READY_TIMEOUT=${READY_TIMEOUT:-120}
REWRAP_TIMEOUT=${REWRAP_TIMEOUT:-3600}
POLL_INTERVAL=${POLL_INTERVAL:-5}
RCRT_URL=${RCRT_URL%/}
case $FINALIZE in 0 | 1) ;; *) usage "FINALIZE must be 0 or 1" ;; esac
for tool in "$RCRT_BIN" curl jq; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (or not on PATH)"
done
[ -r "$OLD_KEK_FILE" ] || die "OLD_KEK_FILE $OLD_KEK_FILE is not readable"

# Temporary files: the new KEK while it is written, the Authorization header.
tmp=
private=
cleanup() {
  if [ -n "$tmp" ]; then rm -f "$tmp"; fi
  if [ -n "$private" ]; then rm -rf "$private"; fi
}
trap cleanup EXIT

# curl reads the Authorization header from a 0600 file (-H @file), so the token is on no
# command line.
auth=()
if [ -n "${RCRT_TOKEN_FILE:-}" ]; then
  [ -r "$RCRT_TOKEN_FILE" ] || die "RCRT_TOKEN_FILE $RCRT_TOKEN_FILE is not readable"
  private=$(mktemp -d)
  chmod 700 "$private"
  (
    umask 077
    printf 'Authorization: Bearer '
    tr -d '[:space:]' <"$RCRT_TOKEN_FILE"
    printf '\n'
  ) >"$private/auth-header"
  auth=(-H "@$private/auth-header")
fi

abspath() { # path
  case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$PWD" "$1" ;;
  esac
}
OLD_KEK_FILE=$(abspath "$OLD_KEK_FILE")
NEW_KEK_FILE=$(abspath "$NEW_KEK_FILE")

# The KEK id of a key file (`rcrt kek check` prints the id, never the key).
kek_id() { # file
  local out
  out=$("$RCRT_BIN" kek check --file "$1") || die "$1 does not hold a valid KEK"
  printf '%s\n' "${out#KEK OK: id }"
}

# GET /admin/kek/status (empty output while the service is down).
kek_status() {
  curl -fsS --max-time 10 "${auth[@]}" "$RCRT_URL/admin/kek/status" 2>/dev/null || true
}

# Waits until GET /admin/kek/status satisfies the jq condition (with --arg new/old set).
wait_for_service() { # what jq-condition
  local what=$1 cond=$2 deadline=$((SECONDS + READY_TIMEOUT)) status
  while :; do
    if curl -fsS --max-time 5 "${auth[@]}" "$RCRT_URL/ready" >/dev/null 2>&1; then
      status=$(kek_status)
      if [ -n "$status" ] &&
        jq -e --arg new "$new_id" --arg old "$old_id" "$cond" >/dev/null <<<"$status"; then
        return 0
      fi
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "the service at $RCRT_URL did not come back $what within ${READY_TIMEOUT}s (check its log)"
    sleep 1
  done
}

# Runs RESTART_CMD with the KEKs of a phase in its environment (builtins only: no key on argv).
restart() { # rotate|finalize
  say "restarting the service ($1): RESTART_CMD"
  (
    unset LOCAL_KEK_BASE64_FILE LOCAL_KEK_BASE64_OLD_FILE LOCAL_KEK_BASE64_OLD RCRT_KEK_OLD_FILE
    export RCRT_ROTATION_PHASE=$1 RCRT_KEK_FILE=$NEW_KEK_FILE
    LOCAL_KEK_BASE64=$(tr -d '[:space:]' <"$NEW_KEK_FILE")
    export LOCAL_KEK_BASE64
    if [ "$1" = rotate ]; then
      LOCAL_KEK_BASE64_OLD=$(tr -d '[:space:]' <"$OLD_KEK_FILE")
      export LOCAL_KEK_BASE64_OLD RCRT_KEK_OLD_FILE=$OLD_KEK_FILE
    fi
    bash -c "$RESTART_CMD"
  ) || die "RESTART_CMD failed (exit $?)"
}

# --- 0. Where do we stand? ------------------------------------------------------------------
old_id=$(kek_id "$OLD_KEK_FILE")
new_id=
code=$(curl -sS --max-time 10 "${auth[@]}" -o /dev/null -w '%{http_code}' \
  "$RCRT_URL/admin/kek/status" 2>/dev/null || true)
case $code in
  2??) ;;
  401 | 403) die "the admin API refused GET /admin/kek/status (HTTP $code): set RCRT_TOKEN_FILE to a file holding a token with the rcrt.operator role" ;;
  000 | "") die "cannot reach $RCRT_URL: is the service running at RCRT_URL?" ;;
  *) die "GET $RCRT_URL/admin/kek/status answered HTTP $code" ;;
esac
status=$(kek_status)
[ -n "$status" ] || die "GET $RCRT_URL/admin/kek/status failed"
current_id=$(jq -r .current_kek_id <<<"$status")
say "old KEK id $old_id; the service runs with KEK id $current_id"

# --- 1. The new KEK ---------------------------------------------------------------------------
if [ -e "$NEW_KEK_FILE" ]; then
  new_id=$(kek_id "$NEW_KEK_FILE")
  say "NEW_KEK_FILE exists: resuming the rotation to KEK id $new_id"
else
  [ "$current_id" = "$old_id" ] ||
    die "the service runs with KEK id $current_id, not OLD_KEK_FILE's $old_id: refusing to rotate"
  dir=$(dirname "$NEW_KEK_FILE")
  [ -d "$dir" ] || die "directory $dir does not exist"
  tmp=$(umask 077 && mktemp "$dir/.kek-rotation.XXXXXX")
  (umask 077 && "$RCRT_BIN" kek generate >"$tmp" 2>/dev/null) || die "rcrt kek generate failed"
  chmod 600 "$tmp"
  new_id=$(kek_id "$tmp")
  mv "$tmp" "$NEW_KEK_FILE"
  tmp=
  say "generated a new KEK, id $new_id, in $NEW_KEK_FILE (mode 0600) — back it up now"
fi
[ "$new_id" != "$old_id" ] || die "NEW_KEK_FILE holds the same KEK as OLD_KEK_FILE"
case $current_id in
  "$old_id" | "$new_id") ;;
  *) die "the service runs with KEK id $current_id, neither the old ($old_id) nor the new ($new_id)" ;;
esac

# --- 2. Restart with the new KEK current and the old one kept for unwrapping -------------------
# shellcheck disable=SC2016 # $new and $old are jq variables
rotating='.current_kek_id == $new and any(.configured_kek_ids[]; . == $old)'
if jq -e --arg new "$new_id" --arg old "$old_id" "$rotating" >/dev/null <<<"$status"; then
  say "the service already runs with the new KEK and the old one: not restarting"
elif jq -e --arg new "$new_id" --arg old "$old_id" \
  '.current_kek_id == $new and ((.versions_per_kek[$old] // 0) == 0)' >/dev/null <<<"$status"; then
  say "the service already runs with the new KEK and nothing is left under the old one"
else
  restart rotate
  wait_for_service "with the new and the old KEK" "$rotating"
  say "the service runs with KEK id $new_id and can still unwrap $old_id"
fi

# --- 3. Re-wrap every DEK under the new KEK ---------------------------------------------------
curl -fsS --max-time 10 "${auth[@]}" -X POST "$RCRT_URL/admin/kek/rewrap" >/dev/null ||
  die "POST $RCRT_URL/admin/kek/rewrap failed"
deadline=$((SECONDS + REWRAP_TIMEOUT))
while :; do
  status=$(kek_status)
  [ -n "$status" ] || die "GET $RCRT_URL/admin/kek/status failed during the re-wrap"
  remaining=$(jq -r .rewrap.remaining <<<"$status")
  state=$(jq -r .rewrap.state <<<"$status")
  say "re-wrap: state $state, $remaining versions left under old KEKs"
  [ "$remaining" != 0 ] || break
  if [ "$state" = failed ]; then
    die "the re-wrap failed ($(jq -r .rewrap.failed <<<"$status") versions could not be unwrapped; see the service log and run rcrt kek verify). Keep the old KEK configured."
  fi
  [ "$SECONDS" -lt "$deadline" ] || die "the re-wrap did not finish within ${REWRAP_TIMEOUT}s; run this script again to keep waiting"
  if [ "$state" != running ] && [ "$state" != waiting ]; then
    curl -fsS --max-time 10 "${auth[@]}" -X POST "$RCRT_URL/admin/kek/rewrap" >/dev/null || true
  fi
  sleep "$POLL_INTERVAL"
done
say "every version's DEK is wrapped under KEK id $new_id"

# --- 4. Prove the new KEK alone opens everything ----------------------------------------------
if [ -n "${DB_URL:-}" ]; then
  say "rcrt kek verify with the new KEK alone"
  (
    unset LOCAL_KEK_BASE64 LOCAL_KEK_BASE64_FILE LOCAL_KEK_BASE64_OLD LOCAL_KEK_BASE64_OLD_FILE DATABASE_URL
    "$RCRT_BIN" kek verify --new-kek-file "$NEW_KEK_FILE" --db-url "$DB_URL" >&2
  ) || die "rcrt kek verify failed: keep the old KEK configured and investigate"
else
  say "DB_URL not set: skipping rcrt kek verify (recommended before removing the old KEK)"
fi

# --- 5. Remove the old KEK --------------------------------------------------------------------
if [ "$FINALIZE" = 1 ]; then
  restart finalize
  # shellcheck disable=SC2016 # $new is a jq variable
  wait_for_service "with the new KEK alone" \
    '.current_kek_id == $new and .configured_kek_ids == [$new]'
  say "done: the service runs with KEK id $new_id alone"
else
  say "done re-wrapping. To finish: remove LOCAL_KEK_BASE64_OLD (or _OLD_FILE) from the service's"
  say "configuration and restart it (or run this script again with FINALIZE=1)."
fi
say "keep a backup of the old KEK ($old_id) until backups of the store taken before now have expired"
