#!/usr/bin/env bash
# Run every cargo-fuzz target for SECONDS each (default 5) and print one line per target:
#   fuzz <target>: <runs> executions in <s>s, corpus <n> (seeds: corpus/<target>, committed)
# New inputs go to a scratch directory, never into the committed corpus; a crash stops the
# run with libFuzzer's report and leaves the input in artifacts/<target>/ (minimise it with
# `cargo +nightly fuzz tmin <target> <file>` and add it to the corpus as a regression seed).
set -euo pipefail
SECONDS_EACH="${1:-5}"
cd "$(dirname "$0")"
# The nightly + ASan build of the targets takes minutes from cold; keep it in the machine's
# cache (outside the checkout, so fresh clones on this machine reuse it; cargo rebuilds what
# changed). GATEWAYLAB_FUZZ_TARGET overrides the place.
export CARGO_TARGET_DIR="${GATEWAYLAB_FUZZ_TARGET:-${XDG_CACHE_HOME:-$HOME/.cache}/gatewaylab/fuzz-target}"
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz --locked" >&2; exit 2; }
rustup run nightly rustc --version >/dev/null 2>&1 || { echo "the nightly toolchain is missing (rustup toolchain install nightly)" >&2; exit 2; }
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in $(cargo +nightly fuzz list); do
  mkdir -p "$scratch/$t" "artifacts/$t"
  log="$scratch/$t.log"
  if ! cargo +nightly fuzz run "$t" "$scratch/$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" \
       -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz $t: FAILED (input in artifacts/$t/)" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz $t: $runs executions in ${SECONDS_EACH}s, corpus $(ls "$scratch/$t" | wc -l) new + $(ls "corpus/$t" | wc -l) seeds"
done
