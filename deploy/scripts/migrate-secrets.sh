#!/usr/bin/env bash
# migrate-secrets.sh — move every stored secret of RCRT Secrets from an old KEK to a new one,
# offline (the production guide's "Emergency re-encryption (if old KEK compromised)":
# `./migrate-secrets.sh --old-kek "$OLD_KEK" --new-kek "$NEW_KEK"`, with the keys in files instead
# of on the command line). See docs/operations.md, "Offline rotation" and "Emergency re-encryption".
#
#   migrate-secrets.sh --old-kek-file OLD --new-kek-file NEW [--db-url URL] [--dry-run]
#                      [--reencrypt] [--batch-size N] [--max-rows-per-sec N]
#
#   1. checks both key files (present, private, valid KEKs, different) and prints their KEK ids;
#   2. re-wraps every DEK under the new KEK with `rcrt kek rewrap` (default), or with --reencrypt
#      seals every value again under a fresh DEK with `rcrt secrets reencrypt`;
#   3. proves with `rcrt kek verify`, given the NEW KEK ALONE, that every version opens.
# With --dry-run it only counts the versions not yet under the new KEK (`rcrt kek rewrap
# --dry-run`) and writes nothing.
#
# Which one: a re-wrap keeps the DEKs, so it is enough when the old KEK leaked but the database
# did not (or for a routine rotation). If the old KEK AND the database or a backup of it may have
# leaked, use --reencrypt, then rotate the secret values themselves.
#
# Run it with the service stopped, or with the service running with both KEKs (new current,
# old in LOCAL_KEK_BASE64_OLD; and REWRAP_AUTO=false with --reencrypt). Afterwards start the
# service with the new KEK alone. Both commands are idempotent: an interrupted run is resumed by
# running the script again.
#
# Options:
#   --old-kek-file F      the old KEK(s), one per line (mode 0600 or stricter: a key file that
#                         other users can read is refused)
#   --new-kek-file F      the new KEK (same rule); `rcrt kek generate > F` under `umask 077`
#   --db-url URL          the store: postgres://... or a SQLite path. Default: DB_URL, else
#                         DATABASE_URL (prefer those when the URL holds a password: an argument
#                         shows in `ps`). It reaches rcrt through DB_URL, not its command line.
#   --dry-run             count, write nothing
#   --reencrypt           re-encrypt the values under fresh DEKs instead of re-wrapping the DEKs
#   --batch-size N        rows per transaction (rcrt's default 1000)
#   --max-rows-per-sec N  pace, to spare a live database (rcrt's default 0 = no limit)
# Environment: RCRT_BIN, the rcrt CLI (default: rcrt on PATH).
#
# Exit status: 0 done (and verified), 1 failed (keep the old KEK), 2 usage.
set -euo pipefail

say() { printf 'migrate-secrets: %s\n' "$*" >&2; }
die() {
  say "ERROR: $*"
  exit 1
}
usage() {
  say "$*"
  say "usage: $0 --old-kek-file OLD --new-kek-file NEW [--db-url URL] [--dry-run] [--reencrypt] [--batch-size N] [--max-rows-per-sec N]"
  exit 2
}

old_file='' new_file='' db_url='' dry_run=0 reencrypt=0
pace=()
while [ "$#" -gt 0 ]; do
  case $1 in
    --old-kek-file | --new-kek-file | --db-url | --batch-size | --max-rows-per-sec)
      if [ "$#" -lt 2 ] || [ -z "$2" ]; then usage "$1 needs a value"; fi
      case $1 in
        --old-kek-file) old_file=$2 ;;
        --new-kek-file) new_file=$2 ;;
        --db-url) db_url=$2 ;;
        *)
          case $2 in *[!0-9]*) usage "$1 needs a number" ;; esac
          pace+=("$1" "$2")
          ;;
      esac
      shift 2
      ;;
    --old-kek-file=* | --new-kek-file=* | --db-url=*) usage "write ${1%%=*} VALUE (with a space)" ;;
    --dry-run)
      dry_run=1
      shift
      ;;
    --reencrypt)
      reencrypt=1
      shift
      ;;
    --old-kek | --new-kek | --old-kek=* | --new-kek=*)
      usage "${1%%=*} would put a key on the command line: put it in a file (mode 0600) and use ${1%%=*}-file"
      ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
      exit 0
      ;;
    -*) usage "unknown option ${1%%=*}" ;;
    *) usage "unexpected argument (not shown: it could be a key)" ;;
  esac
done
[ -n "$old_file" ] || usage "--old-kek-file is required"
[ -n "$new_file" ] || usage "--new-kek-file is required"
db_url=${db_url:-${DB_URL:-${DATABASE_URL:-}}}
[ -n "$db_url" ] || usage "no store: pass --db-url or set DB_URL"
RCRT_BIN=${RCRT_BIN:-rcrt}
command -v "$RCRT_BIN" >/dev/null 2>&1 || die "$RCRT_BIN is not installed (or not on PATH)"

# A key file must exist and be private: a key readable by other users is already leaked.
private_file() { # what path
  [ -f "$2" ] || die "$1 $2 does not exist (or is not a regular file)"
  [ -r "$2" ] || die "$1 $2 is not readable"
  local mode
  mode=$(stat -L -c %a "$2")
  [ $((8#$mode & 8#007)) -eq 0 ] ||
    die "$1 $2 is accessible to other users (mode $mode): refusing to use it; run chmod 600 on it (and consider that key exposed)"
}
private_file --old-kek-file "$old_file"
private_file --new-kek-file "$new_file"

# rcrt gets the keys from the two files only, and the store from DB_URL: the caller's
# LOCAL_KEK_BASE64* would otherwise be merged in.
# (A subshell, not `env DB_URL=...`: the URL may hold a password and stays off every argv.)
rcrt() {
  (
    unset LOCAL_KEK_BASE64 LOCAL_KEK_BASE64_FILE LOCAL_KEK_BASE64_OLD LOCAL_KEK_BASE64_OLD_FILE DATABASE_URL
    export DB_URL=$db_url
    exec "$RCRT_BIN" "$@"
  )
}
# The KEK id of each key in a file (one per line), through stdin; the keys are never printed.
# `rcrt kek check` refuses the guide's published example KEK; as an OLD key it is welcome (moving
# a store off it is the point), so its id is taken from that refusal.
ids_of() { # file old|new
  local line out n=0 example='published example KEK \(id ([0-9a-f]{16})\)'
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    line=${line//[[:space:]]/}
    [ -n "$line" ] || continue
    if out=$(printf '%s\n' "$line" | rcrt kek check --stdin 2>"$private/check.err"); then
      printf '%s\n' "${out#KEK OK: id }"
    elif [ "$2" = old ] && [[ "$(<"$private/check.err")" =~ $example ]]; then
      say "the old KEK on line $n of $1 is the production guide's published example: moving off it"
      printf '%s\n' "${BASH_REMATCH[1]}"
    else
      sed 's/^/  /' "$private/check.err" >&2
      die "$1 line $n is not a valid KEK"
    fi
  done <"$1"
}
private=$(umask 077 && mktemp -d)
trap 'rm -rf "$private"' EXIT
new_ids=$(ids_of "$new_file" new)
[ "$(grep -c . <<<"$new_ids")" -eq 1 ] || die "--new-kek-file $new_file must hold exactly one KEK"
old_ids=$(ids_of "$old_file" old)
[ -n "$old_ids" ] || die "--old-kek-file $old_file holds no KEK"
! grep -qxF "$new_ids" <<<"$old_ids" || die "the new KEK (id $new_ids) is also in --old-kek-file: pass a different new KEK"
say "new KEK id $new_ids; old KEK id(s) $(paste -sd, <<<"$old_ids")"

kek_args=(--new-kek-file "$new_file" --old-kek-file "$old_file")
if [ "$dry_run" = 1 ]; then
  say "dry run: counting the versions not under the new KEK (nothing is written)"
  rcrt kek rewrap --dry-run "${kek_args[@]}" "${pace[@]}" || die "rcrt kek rewrap --dry-run failed"
  exit 0
fi

if [ "$reencrypt" = 1 ]; then
  say "re-encrypting every value under a fresh DEK wrapped by KEK $new_ids (rcrt secrets reencrypt)"
  rcrt secrets reencrypt --yes "${kek_args[@]}" "${pace[@]}" ||
    die "rcrt secrets reencrypt failed: keep the old KEK; run this script again to resume"
else
  say "re-wrapping every DEK under KEK $new_ids (rcrt kek rewrap)"
  rcrt kek rewrap "${kek_args[@]}" "${pace[@]}" ||
    die "rcrt kek rewrap failed: keep the old KEK; run this script again to resume"
fi

say "verifying that the new KEK alone opens every version (rcrt kek verify)"
rcrt kek verify --new-kek-file "$new_file" "${pace[@]}" ||
  die "rcrt kek verify failed with the new KEK alone: keep the old KEK configured and investigate"

say "done: every stored version opens with KEK $new_ids alone. Start the service with the new KEK"
say "only (LOCAL_KEK_BASE64_FILE=$new_file, no LOCAL_KEK_BASE64_OLD), then back the new KEK up (backup-kek.sh)."
if [ "$reencrypt" = 1 ]; then
  say "the old KEK was compromised: destroy its copies and backups, and rotate the secret values themselves."
else
  say "keep the old KEK's backup until every database backup taken before now has expired."
fi
