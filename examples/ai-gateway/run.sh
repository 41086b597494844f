#!/usr/bin/env bash
# Runs this example on 127.0.0.1: Tollgate (tollgate.yaml), an echo upstream (`tollgate dev
# echo`) and Envoy (envoy.yaml) on http://127.0.0.1:8080. Ctrl-C stops all three.
# Ports and binaries: see ../lib.sh.
source "$(dirname "$0")/../lib.sh"
here="$(cd "$(dirname "$0")" && pwd)"
start_tollgate "$here/tollgate.yaml"
start_echo
start_envoy "$here/envoy.yaml"
ready ai-gateway
