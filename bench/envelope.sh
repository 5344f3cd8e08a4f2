#!/usr/bin/env bash
# Criterion bench of the envelope (new DEK, seal, wrap, unwrap, open; 1 KiB) against one raw
# AES-256-GCM seal+open with a random nonce, measured in the same run. Prints both medians and
# their ratio (target: envelope <= 2x baseline).
#
# Usage: bench/envelope.sh   (about 10 s after the bench build)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
command -v jq >/dev/null 2>&1 || { echo "bench/envelope.sh: jq is not installed" >&2; exit 1; }

CMD=(cargo bench -p rcrt-crypto --bench envelope -- --warm-up-time 1 --measurement-time 3)
echo "\$ ${CMD[*]}" >&2
"${CMD[@]}" >&2

DIR="${CARGO_TARGET_DIR:-$ROOT/target}/criterion/1KiB"
est() { # bench-name field -> nanoseconds
  jq -r ".$2.point_estimate" "$DIR/$1/new/estimates.json"
}
base_med=$(est baseline_raw_aes256gcm_seal_open median)
env_med=$(est envelope_seal_wrap_unwrap_open median)
base_mean=$(est baseline_raw_aes256gcm_seal_open mean)
env_mean=$(est envelope_seal_wrap_unwrap_open mean)
awk -v bm="$base_med" -v em="$env_med" -v ba="$base_mean" -v ea="$env_mean" 'BEGIN {
  printf "\n| bench (1 KiB) | median | mean |\n|---|---:|---:|\n"
  printf "| baseline_raw_aes256gcm_seal_open | %.2f us | %.2f us |\n", bm / 1000, ba / 1000
  printf "| envelope_seal_wrap_unwrap_open | %.2f us | %.2f us |\n", em / 1000, ea / 1000
  printf "| ratio envelope / baseline (target <= 2x) | %.2fx | %.2fx |\n", em / bm, ea / ba
}'
