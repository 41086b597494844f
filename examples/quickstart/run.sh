#!/usr/bin/env bash
# Runs the quick start: Tollgate alone with the annotated reference configuration
# (examples/tollgate.yaml) on 127.0.0.1 (gRPC 50051, admin 50052, metrics 9090). Ctrl-C stops
# it. Ports and binaries: see ../lib.sh.
source "$(dirname "$0")/../lib.sh"
start_tollgate "$EXAMPLES_DIR/tollgate.yaml"
ready quickstart
