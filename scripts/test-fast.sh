#!/usr/bin/env bash
# The fast tier, for the edit loop: every unit test and doctest (no binaries spawned), then the
# store conformance suite (memory, and Redis on a redis-server the harness spawns) and the
# architecture check. The README's test command (scripts/test.sh) still runs everything.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1 && [ -z "${REDIS_SERVER_BIN:-}" ]; then
  echo "test-fast.sh: redis-server not found; run scripts/test.sh once (it installs it)" >&2
  exit 1
fi
cargo test --workspace --lib --bins "$@"
cargo test --workspace --doc "$@"
cargo test -p tollgate-tests --test it "$@" -- conformance:: architecture::
