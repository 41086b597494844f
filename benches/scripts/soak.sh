#!/usr/bin/env bash
# Soak: one release Tollgate on a throwaway redis-server, KEYS API keys, c=CONCURRENCY for
# DURATION seconds of tollgate-bench (random keys), with the server's RSS sampled every
# SAMPLE seconds. Prints the RSS series, the bench result (errors included) and the growth
# from the first sample after warm-up to the last. Bounded, loopback only.
#
# Usage: benches/scripts/soak.sh   (KEYS [50000] CONCURRENCY [32] CONNECTIONS [4] DURATION [240]
#        SAMPLE [10] STORE_TIMEOUT [1s] SKIP_BUILD [0] OUT [mktemp -d])
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
KEYS=${KEYS:-50000}
CONCURRENCY=${CONCURRENCY:-32}
CONNECTIONS=${CONNECTIONS:-4}
DURATION=${DURATION:-240}
SAMPLE=${SAMPLE:-10}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=${OUT:-$(mktemp -d /tmp/tollgate-soak.XXXXXX)}
mkdir -p "$OUT"
SCRIPT=soak.sh
# shellcheck source=common.sh
. "$HERE/common.sh"

build_release
start_redis
cfg="$OUT/soak.yaml"
# A store timeout that a shared 2-core machine meets: the soak is about memory and errors.
"$BENCH" --gen-config "$KEYS" --store redis --redis-url "redis://127.0.0.1:$REDIS_PORT" \
  --store-timeout "${STORE_TIMEOUT:-1s}" >"$cfg"
"$TOLLGATE" serve --config "$cfg" >"$OUT/tollgate.out" 2>"$OUT/tollgate.err" &
SPID=$!
CHILDREN+=("$SPID")
ADDR=$(wait_ready "$OUT/tollgate.out" "$SPID")
wait_defs "$OUT/tollgate.out" >/dev/null
# Seeding a big file keeps Redis busy a little longer (a cancelled first attempt still runs).
sleep 3
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

log "soak: $KEYS keys, c=$CONCURRENCY, $DURATION s"
timeout $((DURATION + 120)) "$BENCH" --addr "http://$ADDR" --concurrency "$CONCURRENCY" \
  --connections "$CONNECTIONS" --duration "$DURATION" --warmup 5 --keys "$KEYS" \
  --key-order random >"$OUT/bench.json" 2>"$OUT/bench.err" &
BPID=$!
CHILDREN+=("$BPID")
: >"$OUT/rss.txt"
t=0
while kill -0 "$BPID" 2>/dev/null; do
  printf '%s %s\n' "$t" "$(rss_kb "$SPID")" >>"$OUT/rss.txt"
  sleep "$SAMPLE"
  t=$((t + SAMPLE))
done
wait "$BPID" || die "bench failed: $(cat "$OUT/bench.err")"
kill -0 "$SPID" 2>/dev/null || die "tollgate died (see $OUT/tollgate.err)"
{
  echo "rss_kb by second:"; paste -sd' ' "$OUT/rss.txt"
  # Growth: from the sample after warm-up (the 3rd) to the last.
  awk 'NR == 3 { a = $2 } { b = $2 } END { printf "rss growth after warm-up: %d kB (%d -> %d)\n", b - a, a, b }' "$OUT/rss.txt"
  echo "bench: $(cat "$OUT/bench.json")"
  echo "server warnings/errors logged: $(grep -c -E 'WARN|ERROR' "$OUT/tollgate.err" || true)"
} | tee "$OUT/summary.txt"
echo "results: $OUT"
