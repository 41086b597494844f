#!/usr/bin/env bash
# Runs every cargo fuzz target (fuzz/fuzz_targets: config, route, jwt, sigv4, policy) for
# SECONDS_EACH seconds (default 60), starting from the seeds in fuzz/seeds. Needs the nightly
# toolchain and cargo-fuzz; installs cargo-fuzz when missing. A crash stops the run (exit 1)
# with its input in fuzz/artifacts/<target>/; fix it and keep the input as a regression test.
#
# Usage: scripts/fuzz.sh [target ...]   (SECONDS_EACH [60])
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${SECONDS_EACH:-60}
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config route jwt sigv4 policy)
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "fuzz.sh: $t for ${SECONDS_EACH}s" >&2
  cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$SECONDS_EACH" -max_len=65536 -timeout=10 -rss_limit_mb=4096
done
echo "fuzz.sh: no crash in ${targets[*]} (${SECONDS_EACH}s each)" >&2
