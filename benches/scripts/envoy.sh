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
OUT=${OUT:-$(mktemp -d /tmp/tollgate-envoy-bench.XXXXXX)}
mkdir -p "$OUT"
SCRIPT=envoy.sh
# shellcheck source=common.sh
. "$HERE/common.sh"

build_release
build_rlsload
start_redis

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
ADDR=$(wait_ready "$OUT/server.out" "$SPID")
sleep 0.5
log "tollgate $ADDR on redis 127.0.0.1:$REDIS_PORT, $KEYS keys per path, c=$CONCURRENCY conns=$CONNECTIONS ${WARMUP}+${DURATION}s"

declare -A RES
measure() { # name command...
  local name=$1 t0 t1 n
  shift
  t0=$(cpu_ticks "$SPID")
  "$@" >"$OUT/$name.json" 2>"$OUT/$name.err" || die "$name failed: $(cat "$OUT/$name.err")"
  t1=$(cpu_ticks "$SPID")
  n=$(($(jget "$OUT/$name.json" requests) + $(jget "$OUT/$name.json" warmup_requests)))
  # Server CPU per request (warm-up included): steadier than rps on a shared machine.
  RES[$name.cpu]=$(div "$(awk -v t=$((t1 - t0)) -v h="$CLK_TCK" 'BEGIN{print t * 1e6 / h}')" "$n" %.1f)
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

printf '\n%-14s %10s %8s %8s %7s %16s %18s\n' path rps p50_us p99_us errors "vs CheckRequest" "server CPU µs/req"
for p in checkrequest ext_authz rls; do
  printf '%-14s %10s %8s %8s %7s %16s %18s\n' "$p" "${RES[$p.rps]}" "${RES[$p.p50]}" \
    "${RES[$p.p99]}" "${RES[$p.errors]:-0}" "$(div "${RES[$p.rps]}" "${RES[checkrequest.rps]}" %.2f)" "${RES[$p.cpu]}"
done
echo "results, logs and config: $OUT"
