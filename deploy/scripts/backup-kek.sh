#!/usr/bin/env bash
# backup-kek.sh — back up a KEK of RCRT Secrets (the production guide's "Backup and Recovery",
# with the service's own commands). See docs/operations.md, "Backup" and "Recovery".
#
# Writes into BACKUP_DIR (created 0700 if missing; existing outputs are never overwritten):
#   kek-backup.gpg        the KEK encrypted with GPG: to BACKUP_GPG_RECIPIENT's public key
#                         (gpg --encrypt --recipient), else with the passphrase in
#                         BACKUP_PASSPHRASE_FILE (gpg --symmetric, AES256)
#   kek-share-<i>.txt     Shamir shares (`rcrt kek split -t 3 -n 5`, the guide's `ssss-split`
#                         scheme), one share per file, mode 0600: any 3 of the 5 recover the KEK
#   kek-backup-info.txt   the KEK id (not secret), the date and the scheme, to check a restore
# and then proves each backup: the first THRESHOLD shares are combined again, and a symmetric
# backup is decrypted again, and each must give the same KEK id. The KEK is read from the
# environment or a file, goes to gpg and rcrt on stdin, and is never printed or put on a command
# line; so is the passphrase (gpg --passphrase-file). Hand each share to its own custodian or
# place (the guide: AWS Secrets Manager, Azure Key Vault, the HSM, offline cold storage, the
# security team's vault) and remove it from BACKUP_DIR.
#
# Restore (see docs/operations.md, "Recovery"):
#   umask 077
#   gpg --decrypt kek-backup.gpg > recovered-kek.txt
#   cat kek-share-1.txt kek-share-3.txt kek-share-5.txt | rcrt kek combine -t 3 > recovered-kek.txt
#   cat kek-share-2.txt kek-share-3.txt kek-share-4.txt | ssss-combine -t 3 -Q 2> recovered-kek.txt
#   rcrt kek check --file recovered-kek.txt   # must print the KEK id in kek-backup-info.txt
#
# Environment:
#   LOCAL_KEK_BASE64       the KEK (value), or
#   LOCAL_KEK_BASE64_FILE  a file holding it (as the service reads it; not readable by others)
#   BACKUP_DIR             where the backups go (default ./kek-backup; created 0700 if missing)
#   BACKUP_GPG_RECIPIENT   encrypt to this GPG key (user id or fingerprint; its public key must
#                          be in the keyring and trusted), or
#   BACKUP_PASSPHRASE_FILE encrypt with the passphrase held in this file (not readable by others)
#   SHARES_THRESHOLD       shares needed to recover (default 3)
#   SHARES_COUNT           shares made (default 5; SHARES_COUNT=0 makes no shares)
#   RCRT_BIN               the rcrt CLI (default: rcrt on PATH)
#   GNUPGHOME              gpg's home, as usual
#
# Exit status: 0 done, 1 failed (nothing is left half-written), 2 usage.
set -euo pipefail

say() { printf 'backup-kek: %s\n' "$*" >&2; }
die() {
  say "ERROR: $*"
  exit 1
}
usage() {
  say "$*"
  say "usage: LOCAL_KEK_BASE64_FILE=... (BACKUP_GPG_RECIPIENT=... | BACKUP_PASSPHRASE_FILE=...) [BACKUP_DIR=...] $0  (see the header)"
  exit 2
}

[ "$#" -eq 0 ] || usage "takes no arguments; configure it through the environment"
RCRT_BIN=${RCRT_BIN:-rcrt}
BACKUP_DIR=${BACKUP_DIR:-./kek-backup}
SHARES_THRESHOLD=${SHARES_THRESHOLD:-3}
SHARES_COUNT=${SHARES_COUNT:-5}
recipient=${BACKUP_GPG_RECIPIENT:-}
passfile=${BACKUP_PASSPHRASE_FILE:-}

if [ -n "${LOCAL_KEK_BASE64:-}" ] && [ -n "${LOCAL_KEK_BASE64_FILE:-}" ]; then
  usage "set LOCAL_KEK_BASE64 or LOCAL_KEK_BASE64_FILE, not both"
fi
[ -n "${LOCAL_KEK_BASE64:-}" ] || [ -n "${LOCAL_KEK_BASE64_FILE:-}" ] ||
  usage "set LOCAL_KEK_BASE64_FILE (or LOCAL_KEK_BASE64) to the KEK to back up"
[ -n "$recipient" ] || [ -n "$passfile" ] ||
  usage "set BACKUP_GPG_RECIPIENT (encrypt to a GPG key) or BACKUP_PASSPHRASE_FILE (a passphrase in a file)"
[ -z "$recipient" ] || [ -z "$passfile" ] ||
  usage "set BACKUP_GPG_RECIPIENT or BACKUP_PASSPHRASE_FILE, not both"
case $SHARES_THRESHOLD$SHARES_COUNT in *[!0-9]*) usage "SHARES_THRESHOLD and SHARES_COUNT must be numbers" ;; esac
if [ "$SHARES_COUNT" -ne 0 ] && { [ "$SHARES_THRESHOLD" -lt 2 ] || [ "$SHARES_THRESHOLD" -gt "$SHARES_COUNT" ] || [ "$SHARES_COUNT" -gt 255 ]; }; then
  usage "need 2 <= SHARES_THRESHOLD <= SHARES_COUNT <= 255 (or SHARES_COUNT=0 for no shares)"
fi
for tool in "$RCRT_BIN" gpg; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (or not on PATH)"
done

# A file holding key material must not be readable by every user.
private_file() { # var path
  [ -f "$2" ] || die "$1 $2 does not exist"
  [ -r "$2" ] || die "$1 $2 is not readable"
  local mode
  mode=$(stat -L -c %a "$2")
  [ $((8#$mode & 8#007)) -eq 0 ] || die "$1 $2 is accessible to other users (mode $mode): chmod 600 it"
}

# The KEK, in a variable that is not exported.
if [ -n "${LOCAL_KEK_BASE64_FILE:-}" ]; then
  private_file LOCAL_KEK_BASE64_FILE "$LOCAL_KEK_BASE64_FILE"
  kek=$(<"$LOCAL_KEK_BASE64_FILE")
else
  kek=$LOCAL_KEK_BASE64
fi
unset LOCAL_KEK_BASE64 LOCAL_KEK_BASE64_FILE
kek=${kek#"${kek%%[![:space:]]*}"}
kek=${kek%"${kek##*[![:space:]]}"}
if [ -n "$passfile" ]; then private_file BACKUP_PASSPHRASE_FILE "$passfile"; fi

# rcrt kek check validates the KEK (32 bytes of base64, not the published example) and gives its id.
id_of() { # reads a KEK on stdin, prints its id
  local out
  out=$("$RCRT_BIN" kek check --stdin) || return 1
  printf '%s\n' "${out#KEK OK: id }"
}
kek_id=$(printf '%s\n' "$kek" | id_of) || die "the KEK is not valid (see rcrt's message above)"
say "backing up KEK id $kek_id"

# --- Outputs: refuse to overwrite, write to temporary names, rename at the end -----------------
umask 077
# A new directory is made 0700; an existing one keeps its mode (the files are 0600 either way).
if [ ! -d "$BACKUP_DIR" ]; then
  mkdir -p "$BACKUP_DIR" || die "cannot create BACKUP_DIR $BACKUP_DIR"
  chmod 700 "$BACKUP_DIR"
fi
outputs=("$BACKUP_DIR/kek-backup.gpg" "$BACKUP_DIR/kek-backup-info.txt")
for i in $(seq 1 "$SHARES_COUNT"); do outputs+=("$BACKUP_DIR/kek-share-$i.txt"); done
for f in "${outputs[@]}"; do
  [ ! -e "$f" ] || die "$f exists: refusing to overwrite a backup (move it away or choose another BACKUP_DIR)"
done
work=$(mktemp -d "$BACKUP_DIR/.backup-kek.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

# --- GPG ---------------------------------------------------------------------------------------
if [ -n "$recipient" ]; then
  say "encrypting to GPG key $recipient"
  printf '%s\n' "$kek" | gpg --batch --quiet --encrypt --recipient "$recipient" \
    --output "$work/kek-backup.gpg" || die "gpg --encrypt --recipient $recipient failed (is its public key imported and trusted?)"
  method="gpg --encrypt --recipient $recipient"
else
  say "encrypting with the passphrase in $passfile (gpg --symmetric, AES256)"
  printf '%s\n' "$kek" | gpg --batch --quiet --pinentry-mode loopback --passphrase-file "$passfile" \
    --symmetric --cipher-algo AES256 --output "$work/kek-backup.gpg" || die "gpg --symmetric failed"
  # Decrypt again: a backup that cannot be opened is worse than none.
  got=$(gpg --batch --quiet --pinentry-mode loopback --passphrase-file "$passfile" \
    --decrypt "$work/kek-backup.gpg" 2>/dev/null | id_of 2>/dev/null) || got=
  [ "$got" = "$kek_id" ] || die "the GPG backup does not decrypt back to KEK id $kek_id"
  method="gpg --symmetric (AES256), passphrase from $passfile"
fi

# --- Shamir shares -----------------------------------------------------------------------------
shares_line="no Shamir shares"
if [ "$SHARES_COUNT" -ne 0 ]; then
  say "splitting into $SHARES_COUNT Shamir shares, any $SHARES_THRESHOLD of which recover the KEK"
  printf '%s\n' "$kek" | "$RCRT_BIN" kek split -t "$SHARES_THRESHOLD" -n "$SHARES_COUNT" \
    >"$work/shares" 2>/dev/null || die "rcrt kek split failed"
  [ "$(grep -c . "$work/shares")" -eq "$SHARES_COUNT" ] || die "rcrt kek split did not print $SHARES_COUNT shares"
  for i in $(seq 1 "$SHARES_COUNT"); do sed -n "${i}p" "$work/shares" >"$work/kek-share-$i.txt"; done
  rm -f "$work/shares"
  # Combine the first THRESHOLD shares again (through a pipe only) and compare the KEK id.
  got=$(for i in $(seq 1 "$SHARES_THRESHOLD"); do cat "$work/kek-share-$i.txt"; done |
    "$RCRT_BIN" kek combine -t "$SHARES_THRESHOLD" 2>/dev/null | id_of 2>/dev/null) || got=
  [ "$got" = "$kek_id" ] || die "the shares do not combine back to KEK id $kek_id"
  shares_line="$SHARES_THRESHOLD of $SHARES_COUNT Shamir shares (rcrt kek split, ssss-split compatible): kek-share-1.txt .. kek-share-$SHARES_COUNT.txt"
fi
kek=

{
  printf 'KEK id: %s\n' "$kek_id"
  printf 'backed up: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf 'kek-backup.gpg: %s\n' "$method"
  printf 'shares: %s\n' "$shares_line"
  printf 'restore: gpg --decrypt kek-backup.gpg > kek.txt, or: cat <%s shares> | rcrt kek combine -t %s > kek.txt; then rcrt kek check --file kek.txt must print the KEK id above\n' \
    "$SHARES_THRESHOLD" "$SHARES_THRESHOLD"
} >"$work/kek-backup-info.txt"

# Every output is complete: move them in place (no overwrite: mv -n, checked).
for f in "${outputs[@]}"; do
  chmod 600 "$work/$(basename "$f")"
  mv -n "$work/$(basename "$f")" "$f" || true
  [ ! -e "$work/$(basename "$f")" ] || die "$f appeared meanwhile: not overwritten"
done
say "wrote ${#outputs[@]} files to $BACKUP_DIR (mode 0600); record KEK id $kek_id with them"
if [ "$SHARES_COUNT" -ne 0 ]; then
  say "give each kek-share-<i>.txt to a different custodian or place, then delete it here (shred -u)"
fi
