#!/usr/bin/env bash
# The three check paths of one Tollgate process on Redis, in one run, all on 127.0.0.1:
#   CheckRequest (tollgate-bench), Envoy ext_authz Check (tollgate-bench --ext-authz) and Envoy
#   RLS ShouldRateLimit (rlsload from ../shared/tools, the peers' load generator), each with
#   KEYS API keys in one usage plan (limits high enough that every check is admitted),
#   CONCURRENCY in flight over CONNECTIONS HTTP/2 connections. Prints a table.
#
# Usage: benches/scripts/envoy.sh      (about a minute after the release build)
# Environment knobs: DURATION [10] WARMUP [2] CONCURRENCY [32] CONNECTIONS [4] KEYS [10000]
#   SKIP_BUILD [0] OUT [mktemp -d] RLSLOAD [built from ../shared/tools/rlsload into
#   /work/rlsload-target when missing] REDIS_SERVER, REDIS_CLI [from PATH]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-32}
CONNECTIONS=${CONNECTIONS:-4}
KEYS=${KEYS:-10000}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=${OUT:-$(mktemp -d /tmp/tollgate-envoy-bench.XXXXXX)}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TOLLGATE=$TARGET_DIR/release/tollgate
BENCH=$TARGET_DIR/release/tollgate-bench
RLS_SRC=${RLS_SRC:-$ROOT/../shared/tools/rlsload}
RLS_TARGET=${RLS_TARGET:-/work/rlsload-target}
RLSLOAD=${RLSLOAD:-$RLS_TARGET/release/rlsload}
mkdir -p "$OUT"

log() { printf '[envoy.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

CHILDREN=()
cleanup() {
  local pid
  for pid in "${CHILDREN[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    sleep 0.2
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  local p i
  for i in $(seq 100); do
    p=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port found"
}
jget() { sed -n "s/.*\"$2\":\([0-9.e+-]*\).*/\1/p" "$1" | head -1; }
rcli() { timeout 10 "$REDIS_CLI" -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.3f}" 'BEGIN { if (b == 0) print "n/a"; else printf f "\n", a / b }'; }

if [ "$SKIP_BUILD" != 1 ]; then
  log "building release (tollgate-server, tollgate-benches)"
  timeout 3600 cargo build --release -p tollgate-server -p tollgate-benches >&2
fi
[ -x "$TOLLGATE" ] && [ -x "$BENCH" ] || die "missing $TOLLGATE or $BENCH (build first)"
if [ ! -x "$RLSLOAD" ]; then
  [ -d "$RLS_SRC" ] || die "rlsload not found: set RLSLOAD or RLS_SRC"
  log "building rlsload (release) into $RLS_TARGET"
  (cd "$RLS_SRC" && CARGO_TARGET_DIR=$RLS_TARGET timeout 3600 cargo build --release >&2)
fi

REDIS_PORT=$(free_port)
"$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --daemonize no --dir "$OUT" --logfile "$OUT/redis.log" &
CHILDREN+=($!)
for i in $(seq 100); do
  [ "$(rcli PING 2>/dev/null)" = PONG ] && break
  [ "$i" = 100 ] && die "redis-server did not answer (see $OUT/redis.log)"
  sleep 0.1
done

# tollgate-bench's keys (bench-key-<i>) plus rlsload's (<prefix>_<i>), all in the bench plan.
RLS_PREFIX=rls-bench-key-0000000
CFG=$OUT/tollgate.yaml
"$BENCH" --gen-config "$KEYS" --store redis --redis-url "redis://127.0.0.1:$REDIS_PORT" >"$CFG"
for i in $(seq 0 $((KEYS - 1))); do
  echo "  - { id: rls-$i, value: \"${RLS_PREFIX}_$i\", enabled: true, usage_plans: [bench] }"
done >>"$CFG"

"$TOLLGATE" serve --config "$CFG" >"$OUT/server.out" 2>"$OUT/server.err" &
SPID=$!
CHILDREN+=("$SPID")
ADDR=""
for i in $(seq 300); do
  ADDR=$(sed -n 's/^tollgate ready grpc=\([^ ]*\) .*/\1/p' "$OUT/server.out")
  [ -n "$ADDR" ] && break
  kill -0 "$SPID" 2>/dev/null || die "tollgate exited (see $OUT/server.err)"
  sleep 0.1
done
[ -n "$ADDR" ] || die "tollgate not ready after 30 s (see $OUT/server.err)"
sleep 0.5
log "tollgate $ADDR on redis 127.0.0.1:$REDIS_PORT, $KEYS keys per path, c=$CONCURRENCY conns=$CONNECTIONS ${WARMUP}+${DURATION}s"

declare -A RES
measure() { # name command...
  local name=$1
  shift
  "$@" >"$OUT/$name.json" 2>"$OUT/$name.err" || die "$name failed: $(cat "$OUT/$name.err")"
  log "$name: $(cat "$OUT/$name.json")"
  RES[$name.rps]=$(jget "$OUT/$name.json" rps)
  RES[$name.p50]=$(jget "$OUT/$name.json" p50_us)
  RES[$name.p99]=$(jget "$OUT/$name.json" p99_us)
  RES[$name.errors]=$(jget "$OUT/$name.json" errors)
}
T=$((WARMUP + DURATION + 60))
measure checkrequest timeout $T "$BENCH" --addr "http://$ADDR" --concurrency "$CONCURRENCY" \
  --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" --keys "$KEYS"
measure ext_authz timeout $T "$BENCH" --ext-authz --addr "http://$ADDR" \
  --concurrency "$CONCURRENCY" --connections "$CONNECTIONS" --duration "$DURATION" \
  --warmup "$WARMUP" --keys "$KEYS"
measure rls timeout $T "$RLSLOAD" --addr "$ADDR" --concurrency "$CONCURRENCY" \
  --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" --domain bench \
  --descriptor stage=prod --descriptor method=GET --descriptor path=/items \
  --descriptor "api_key=$RLS_PREFIX" --keys "$KEYS"

printf '\n%-14s %10s %8s %8s %7s %16s\n' path rps p50_us p99_us errors "vs CheckRequest"
for p in checkrequest ext_authz rls; do
  printf '%-14s %10s %8s %8s %7s %16s\n' "$p" "${RES[$p.rps]}" "${RES[$p.p50]}" \
    "${RES[$p.p99]}" "${RES[$p.errors]:-0}" "$(div "${RES[$p.rps]}" "${RES[checkrequest.rps]}" %.2f)"
done
echo "results, logs and config: $OUT"
