#!/usr/bin/env bash
# The README's test command: installs what the suite needs when it is missing, then runs every
# test in the workspace. Tests spawn their own redis-server processes on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v redis-server >/dev/null 2>&1 && [ -z "${REDIS_SERVER_BIN:-}" ]; then
  echo "test.sh: redis-server not found; installing it from the OS packages (apt-get)" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
redis-server --version

# The end-to-end suites run the real `tollgate` binary.
cargo build --workspace --bins --examples
# The harness would otherwise run `cargo build -p tollgate-server --bin tollgate`, whose feature
# set differs from the workspace build's: a second full build of the server (a minute or more).
export TOLLGATE_BIN="${TOLLGATE_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/tollgate}"
export GATEWAY_BIN="${GATEWAY_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/examples/gateway}"
cargo test --workspace "$@"
