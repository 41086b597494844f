# Shared by the benchmark scripts (sourced, not run): logging, children ended on exit, free
# ports, JSON and INFO readers, redis-server, the release build and rlsload.
# The sourcing script sets SCRIPT (its name for log lines), ROOT and OUT first.

log() { printf '[%s %s] %s\n' "$SCRIPT" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Every process we start is recorded here and ended by pid on exit.
CHILDREN=()
stop_pid() { # pid: TERM, up to 5 s, then KILL
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() { local pid; for pid in "${CHILDREN[@]}"; do stop_pid "$pid"; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}
REDIS_BENCHMARK=${REDIS_BENCHMARK:-redis-benchmark}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TOLLGATE=$TARGET_DIR/release/tollgate
BENCH=$TARGET_DIR/release/tollgate-bench
RLS_SRC=${RLS_SRC:-$ROOT/../shared/tools/rlsload}
RLS_TARGET=${RLS_TARGET:-/work/rlsload-target}
RLSLOAD=${RLSLOAD:-$RLS_TARGET/release/rlsload}

# A loopback port nobody answers on.
free_port() {
  local p i
  for i in $(seq 100); do
    p=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port found"
}
# jget FILE KEY: a number from a one-line JSON result (keys are unique).
jget() { sed -n "s/.*\"$2\":\([0-9.e+-]*\).*/\1/p" "$1" | head -1; }
# div A B [FORMAT]: A / B, or n/a.
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" 'BEGIN { if (b == 0 || b == "") print "n/a"; else printf f "\n", a / b }'; }
# cpu_ticks PID: user + system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)
rcli() { timeout 10 "$REDIS_CLI" -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
cmd_calls() { # command -> calls since the last CONFIG RESETSTAT (0 if never called)
  rcli INFO commandstats | tr -d '\r' | sed -n "s/^cmdstat_$1:calls=\([0-9]*\),.*/\1/p" | grep . || echo 0
}
used_memory() { rcli INFO memory | tr -d '\r' | sed -n 's/^used_memory:\([0-9]*\)$/\1/p'; }

# start_redis: a private redis-server on a free port (REDIS_PORT, REDIS_PID), no persistence.
start_redis() {
  local i
  command -v "$REDIS_SERVER" >/dev/null || die "$REDIS_SERVER not found (apt-get install redis-server)"
  REDIS_PORT=$(free_port)
  "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize no --dir "$OUT" --logfile "$OUT/redis.log" &
  REDIS_PID=$!
  CHILDREN+=("$REDIS_PID")
  for i in $(seq 100); do
    [ "$(rcli PING 2>/dev/null)" = PONG ] && return
    sleep 0.1
  done
  die "redis-server did not answer on port $REDIS_PORT (see $OUT/redis.log)"
}

# build_release: the server and tollgate-bench, unless SKIP_BUILD=1.
build_release() {
  if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building release (tollgate-server, tollgate-benches)"
    (cd "$ROOT" && timeout 3600 cargo build --release -p tollgate-server -p tollgate-benches >&2)
  fi
  [ -x "$TOLLGATE" ] && [ -x "$BENCH" ] || die "missing $TOLLGATE or $BENCH (build first)"
}

# build_rlsload: the shared RLS load generator, built once into RLS_TARGET.
build_rlsload() {
  [ -x "$RLSLOAD" ] && return
  [ -d "$RLS_SRC" ] || die "rlsload not found: set RLSLOAD or RLS_SRC"
  log "building rlsload (release) into $RLS_TARGET"
  (cd "$RLS_SRC" && CARGO_TARGET_DIR=$RLS_TARGET timeout 3600 cargo build --release >&2)
}

# wait_ready OUTFILE PID: the gRPC address from tollgate's ready line (30 s at most).
wait_ready() {
  local addr i
  for i in $(seq 300); do
    addr=$(sed -n 's/^tollgate ready grpc=\([^ ]*\) .*/\1/p' "$1")
    [ -n "$addr" ] && { echo "$addr"; return; }
    kill -0 "$2" 2>/dev/null || die "tollgate exited (see ${1%.out}.err)"
    sleep 0.1
  done
  die "tollgate not ready after 30 s (see ${1%.out}.err)"
}

# wait_defs OUTFILE: until the tollgate that printed OUTFILE's ready line has loaded its plans and
# keys from the store (seeding a big config file into Redis takes a while; checks made before
# then may time out). 120 s at most. Prints the seconds it waited.
wait_defs() {
  local metrics i
  metrics=$(sed -n 's/^tollgate ready .* metrics=\([^ ]*\) .*/\1/p' "$1")
  for i in $(seq 1200); do
    if curl -s "http://$metrics/metrics" | grep -q '^tollgate_definitions_version [1-9]'; then
      awk -v i="$i" 'BEGIN { printf "%.1f\n", (i - 1) / 10 }'
      return
    fi
    sleep 0.1
  done
  die "plans and keys not loaded from the store after 120 s"
}
