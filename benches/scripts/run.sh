#!/usr/bin/env bash
# End-to-end benchmark of Tollgate, all on 127.0.0.1, every step bounded in time.
#
#   1. builds release (`cargo build --release -p tollgate-server -p tollgate-benches`);
#   2. starts redis-server on a free port and measures the "one EVALSHA per check" ceiling with
#      redis-benchmark and token_bucket.lua (beside this script);
#   3. for store in memory, redis and keys in 1, 10000: writes a config with
#      `tollgate-bench --gen-config`, starts `tollgate serve`, waits for its ready line, runs
#      tollgate-bench (closed loop, CONCURRENCY in flight, WARMUP + DURATION seconds), stops it;
#      with Redis it also reads INFO commandstats (EVALSHA calls per admitted check) and
#      INFO memory (used_memory growth per key);
#   4. prints a summary table and tollgate-redis rps / redis-benchmark rps.
#
# Usage: benches/scripts/run.sh            (from anywhere; about 2 minutes after the build)
# Environment knobs (defaults in brackets):
#   DURATION [10] WARMUP [2] CONCURRENCY [64] CONNECTIONS [4]  tollgate-bench settings
#   RB_REQUESTS [300000] RB_CLIENTS [50]                          redis-benchmark settings
#   STORES ["memory redis"] KEYS_LIST ["1 10000"]                 which runs
#   POOL_SIZE [server default]  store.pool_size (Redis connections) in the generated configs
#   TOLLGATE_LOG [server default: info]  passed through to the server
#   SKIP_BUILD [0]       1: use the binaries already in target/release
#   PERF [0]             1: `perf record` the server for 5 s in each run (reports in OUT)
#   OUT [mktemp -d]      where configs, logs, JSON results and perf reports go
#   REDIS_SERVER, REDIS_CLI, REDIS_BENCHMARK  binaries [from PATH]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-64}
CONNECTIONS=${CONNECTIONS:-4}
RB_REQUESTS=${RB_REQUESTS:-300000}
RB_CLIENTS=${RB_CLIENTS:-50}
STORES=${STORES:-"memory redis"}
KEYS_LIST=${KEYS_LIST:-"1 10000"}
POOL_SIZE=${POOL_SIZE:-}
SKIP_BUILD=${SKIP_BUILD:-0}
PERF=${PERF:-0}
OUT=${OUT:-$(mktemp -d /tmp/tollgate-bench.XXXXXX)}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}
REDIS_BENCHMARK=${REDIS_BENCHMARK:-redis-benchmark}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TOLLGATE=$TARGET_DIR/release/tollgate
BENCH=$TARGET_DIR/release/tollgate-bench
mkdir -p "$OUT"

log() { printf '[run.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- children: every process we start is recorded here and ended by pid on exit -------------
CHILDREN=()
stop_pid() { # pid: TERM, up to 5 s, then KILL
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local pid
  for pid in "${CHILDREN[@]}"; do stop_pid "$pid"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for b in "$REDIS_SERVER" "$REDIS_CLI" "$REDIS_BENCHMARK"; do
  command -v "$b" >/dev/null || die "$b not found (apt-get install redis-server redis-tools)"
done

# A loopback port nobody answers on (and that the kernel does not reserve).
free_port() {
  local p i
  for i in $(seq 100); do
    p=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port found"
}

# jget FILE KEY: a number from the one-line JSON of tollgate-bench (keys are unique).
jget() { sed -n "s/.*\"$2\":\([0-9.e+-]*\).*/\1/p" "$1" | head -1; }
# info_field SECTION FIELD: from redis INFO, "cmdstat_evalsha" -> calls, else field value.
rcli() { timeout 10 "$REDIS_CLI" -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
cmd_calls() { # cmd -> calls (0 if never called)
  rcli INFO commandstats | tr -d '\r' | sed -n "s/^cmdstat_$1:calls=\([0-9]*\),.*/\1/p" | grep . || echo 0
}
cmd_usec_per_call() {
  rcli INFO commandstats | tr -d '\r' | sed -n "s/^cmdstat_$1:.*usec_per_call=\([0-9.]*\),.*/\1/p" | grep . || echo 0
}
inner_calls() { # every command except the ones a client sends itself
  rcli INFO commandstats | tr -d '\r' |
    grep -vE '^cmdstat_(evalsha|eval|ping|info|hello|select|auth|config\|.*|script\|.*|client\|.*|flushall|dbsize):' |
    sed -n 's/^cmdstat_[^:]*:calls=\([0-9]*\),.*/\1/p' | awk '{s+=$1} END {print s+0}'
}
# cpu_ticks PID: user + system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)
# cpu_us_per TICKS N: CPU microseconds per item.
cpu_us_per() { div "$(awk -v t="$1" -v h="$CLK_TCK" 'BEGIN{print t * 1e6 / h}')" "$2" %.1f; }
used_memory() { rcli INFO memory | tr -d '\r' | sed -n 's/^used_memory:\([0-9]*\)$/\1/p'; }
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" 'BEGIN { if (b == 0) print "n/a"; else printf f "\n", a / b }'; }

# --- 1. build -----------------------------------------------------------------------------------
if [ "$SKIP_BUILD" != 1 ]; then
  log "building release (tollgate-server, tollgate-benches)"
  timeout 3600 cargo build --release -p tollgate-server -p tollgate-benches >&2
fi
[ -x "$TOLLGATE" ] && [ -x "$BENCH" ] || die "missing $TOLLGATE or $BENCH (build first)"

# --- 2. redis + the EVALSHA ceiling -------------------------------------------------------------
REDIS_PORT=$(free_port)
"$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --daemonize no --dir "$OUT" --logfile "$OUT/redis.log" &
REDIS_PID=$!
CHILDREN+=("$REDIS_PID")
for i in $(seq 100); do
  [ "$(rcli PING 2>/dev/null)" = PONG ] && break
  [ "$i" = 100 ] && die "redis-server did not answer on port $REDIS_PORT (see $OUT/redis.log)"
  sleep 0.1
done
log "redis-server $("$REDIS_SERVER" --version | awk '{print $3}') on 127.0.0.1:$REDIS_PORT"

SHA=$(rcli SCRIPT LOAD "$(cat "$HERE/token_bucket.lua")")
log "redis-benchmark: EVALSHA token_bucket.lua, -n $RB_REQUESTS -c $RB_CLIENTS -P 1 -r 10000"
rcli CONFIG RESETSTAT >/dev/null
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
rt0=$(cpu_ticks "$REDIS_PID")
timeout 300 "$REDIS_BENCHMARK" -h 127.0.0.1 -p "$REDIS_PORT" -n "$RB_REQUESTS" -c "$RB_CLIENTS" \
  -P 1 -r 10000 --csv EVALSHA "$SHA" 1 tb:__rand_int__ 1000000000 1000000000 1 \
  >"$OUT/redis-benchmark.csv"
RB_REDIS_CPU=$(cpu_us_per $(($(cpu_ticks "$REDIS_PID") - rt0)) "$RB_REQUESTS")
RB_RPS=$(sed -n 2p "$OUT/redis-benchmark.csv" | awk -F'","' '{print $2}')
RB_P50=$(sed -n 2p "$OUT/redis-benchmark.csv" | awk -F'","' '{print $5}')
RB_P99=$(sed -n 2p "$OUT/redis-benchmark.csv" | awk -F'","' '{print $7}')
RB_SCRIPT_US=$(cmd_usec_per_call evalsha)
RB_INNER=$(div "$(inner_calls)" "$(cmd_calls evalsha)")
[ -n "$RB_RPS" ] || die "cannot read redis-benchmark output ($OUT/redis-benchmark.csv)"
log "redis-benchmark: $RB_RPS rps (p50 ${RB_P50} ms, p99 ${RB_P99} ms, ${RB_SCRIPT_US} µs/script)"

# --- 3. tollgate runs ---------------------------------------------------------------------------
declare -A RES
run_one() { # store keys
  local store=$1 keys=$2 name="$1-$2" cfg spid addr i mem0 mem1 dbsize
  cfg="$OUT/$name.yaml"
  "$BENCH" --gen-config "$keys" --store "$store" \
    --redis-url "redis://127.0.0.1:$REDIS_PORT" ${POOL_SIZE:+--pool-size "$POOL_SIZE"} >"$cfg"
  if [ "$store" = redis ]; then
    rcli FLUSHALL >/dev/null
    mem0=$(used_memory)
  fi
  "$TOLLGATE" serve --config "$cfg" >"$OUT/$name.server.out" \
    2>"$OUT/$name.server.err" &
  spid=$!
  CHILDREN+=("$spid")
  addr=""
  for i in $(seq 200); do
    addr=$(sed -n 's/^tollgate ready grpc=\([^ ]*\) .*/\1/p' "$OUT/$name.server.out")
    [ -n "$addr" ] && break
    kill -0 "$spid" 2>/dev/null || die "tollgate exited (see $OUT/$name.server.err)"
    sleep 0.1
  done
  [ -n "$addr" ] || die "tollgate not ready after 20 s (see $OUT/$name.server.err)"
  # Let run() build the catalog (one store call) before the counters are zeroed.
  sleep 0.5
  [ "$store" = redis ] && rcli CONFIG RESETSTAT >/dev/null
  if [ "$PERF" = 1 ] && command -v perf >/dev/null; then
    (sleep "$WARMUP"; timeout 20 perf record -F 999 -g -p "$spid" -o "$OUT/$name.perf.data" \
      -- sleep 5 >/dev/null 2>&1) &
    CHILDREN+=($!)
  fi
  local st0 rt0 st1 rt1 total
  st0=$(cpu_ticks "$spid")
  rt0=$(cpu_ticks "$REDIS_PID")
  log "$name: tollgate at $addr, tollgate-bench -c $CONCURRENCY --connections $CONNECTIONS --keys $keys, ${WARMUP}+${DURATION} s"
  timeout $((WARMUP + DURATION + 60)) "$BENCH" --addr "http://$addr" \
    --concurrency "$CONCURRENCY" --connections "$CONNECTIONS" --duration "$DURATION" \
    --warmup "$WARMUP" --keys "$keys" >"$OUT/$name.json" 2>"$OUT/$name.bench.err" ||
    die "tollgate-bench failed: $(cat "$OUT/$name.bench.err")"
  st1=$(cpu_ticks "$spid")
  rt1=$(cpu_ticks "$REDIS_PID")
  log "$name: $(cat "$OUT/$name.json")"
  # CPU per check over the whole bench run (warm-up included): steadier than rps on a busy box.
  total=$(($(jget "$OUT/$name.json" requests) + $(jget "$OUT/$name.json" warmup_requests)))
  RES[$name.srv_cpu]=$(cpu_us_per $((st1 - st0)) "$total")
  RES[$name.cli_cpu]=$(div "$(awk -v c="$(jget "$OUT/$name.json" client_cpu_s)" 'BEGIN{print c * 1e6}')" "$total" %.1f)
  RES[$name.redis_cpu]="-"
  [ "$store" = redis ] && RES[$name.redis_cpu]=$(cpu_us_per $((rt1 - rt0)) "$total")
  RES[$name.rps]=$(jget "$OUT/$name.json" rps)
  RES[$name.p50]=$(jget "$OUT/$name.json" p50_us)
  RES[$name.p99]=$(jget "$OUT/$name.json" p99_us)
  RES[$name.p999]=$(jget "$OUT/$name.json" p999_us)
  RES[$name.errors]=$(jget "$OUT/$name.json" errors)
  RES[$name.allow]=$(jget "$OUT/$name.json" ALLOW)
  RES[$name.calls]="-"
  RES[$name.inner]="-"
  RES[$name.script_us]="-"
  RES[$name.mem]="-"
  if [ "$store" = redis ]; then
    # Every ALLOW of the run, warm-up included, against every EVALSHA since the reset.
    local allowed_total evalsha
    allowed_total=$(jget "$OUT/$name.json" allowed_total)
    evalsha=$(cmd_calls evalsha)
    RES[$name.calls]=$(div "$evalsha" "$allowed_total" %.3f)
    RES[$name.inner]=$(div "$(inner_calls)" "$evalsha")
    RES[$name.script_us]=$(cmd_usec_per_call evalsha)
    rcli INFO commandstats | tr -d '\r' >"$OUT/$name.commandstats.txt"
    mem1=$(used_memory)
    dbsize=$(rcli DBSIZE)
    # Minus the plan's created_at key: what is left is one hash per API key. Only meaningful
    # with many keys (with one, the delta is client buffers and the script cache).
    if [ "$keys" -ge 1000 ]; then
      RES[$name.mem]=$(div $((mem1 - mem0)) $((dbsize > 1 ? dbsize - 1 : 1)) %.0f)
    fi
    echo "used_memory before=$mem0 after=$mem1 dbsize=$dbsize" >"$OUT/$name.memory.txt"
  fi
  stop_pid "$spid"
  if [ -f "$OUT/$name.perf.data" ]; then
    perf report -i "$OUT/$name.perf.data" --no-children --percent-limit 0.7 --stdio \
      --sort symbol 2>/dev/null | grep -v '^$' >"$OUT/$name.perf.txt" || true
  fi
}

for store in $STORES; do
  for keys in $KEYS_LIST; do
    run_one "$store" "$keys"
  done
done

# --- 4. summary ---------------------------------------------------------------------------------
{
  echo
  echo "Tollgate end-to-end, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, c=$CONCURRENCY conns=$CONNECTIONS ${DURATION}s (+${WARMUP}s warm-up)"
  echo "store.pool_size: ${POOL_SIZE:-server default}; TOLLGATE_LOG: ${TOLLGATE_LOG:-server default}"
  echo "load average at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  printf '%-15s %9s %7s %7s %7s %6s %9s %9s %11s %10s %9s %9s %6s\n' \
    run rps p50_us p99_us p999_us errors srvcpu_us clicpu_us rediscpu_us evalsha/ok calls/chk us/script B/key
  for store in $STORES; do
    for keys in $KEYS_LIST; do
      n="$store-$keys"
      printf '%-15s %9s %7s %7s %7s %6s %9s %9s %11s %10s %9s %9s %6s\n' "$n" "${RES[$n.rps]}" \
        "${RES[$n.p50]}" "${RES[$n.p99]}" "${RES[$n.p999]}" "${RES[$n.errors]}" \
        "${RES[$n.srv_cpu]}" "${RES[$n.cli_cpu]}" "${RES[$n.redis_cpu]}" "${RES[$n.calls]}" "${RES[$n.inner]}" \
        "${RES[$n.script_us]}" "${RES[$n.mem]}"
    done
  done
  printf '%-15s %9.0f %7s %7s %7s %6s %9s %9s %11s %10s %9s %9s %6s\n' redis-benchmark "$RB_RPS" \
    "$(awk -v m="$RB_P50" 'BEGIN{printf "%.0f", m*1000}')" \
    "$(awk -v m="$RB_P99" 'BEGIN{printf "%.0f", m*1000}')" - 0 - - "$RB_REDIS_CPU" 1 "$RB_INNER" \
    "$RB_SCRIPT_US" -
  for keys in $KEYS_LIST; do
    if [ -n "${RES[redis-$keys.rps]:-}" ]; then
      echo "ratio tollgate-redis-$keys rps / redis-benchmark rps = $(div "${RES[redis-$keys.rps]}" "$RB_RPS" %.3f)"
    fi
  done
  echo "(redis-benchmark: EVALSHA token_bucket.lua, -c $RB_CLIENTS -P 1 -r 10000, -n $RB_REQUESTS)"
  echo "srvcpu_us / clicpu_us / rediscpu_us: CPU µs per check of tollgate / tollgate-bench /"
  echo "redis-server (whole run, warm-up included); evalsha/ok: EVALSHA"
  echo "calls per admitted check; calls/chk: redis.call()s inside the script per EVALSHA;"
  echo "us/script: Redis-side µs per EVALSHA; B/key: used_memory growth per API key."
  echo "raw results: $OUT"
} | tee "$OUT/summary.txt"
