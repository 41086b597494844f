#!/usr/bin/env bash
# Redis memory per active API key (bucket + quota + today's usage), measured on the real thing:
# one release Tollgate on a throwaway redis-server, KEYS API keys in one plan (a per-method
# throttle and a monthly quota, as `tollgate-bench --gen-config`), checked round-robin for
# FILL_DURATION s — enough to reach every key (the Redis key count shows it) — then used_memory growth over the traffic ÷ KEYS, the number of
# Redis keys, and MEMORY USAGE of one key's hash. Also how cost grows with keys: the same
# CheckRequest load (c=CONCURRENCY) at each of SCALE keys, one line each.
#
# Usage: benches/scripts/key_memory.sh   (KEYS [100000] FILL_DURATION [30] SCALE ["1 10000 100000"]
#        CONCURRENCY [32] CONNECTIONS [4] DURATION [10] SKIP_BUILD [0] OUT [mktemp -d])
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
KEYS=${KEYS:-100000}
FILL_DURATION=${FILL_DURATION:-30}
SCALE=${SCALE:-"1 10000 100000"}
CONCURRENCY=${CONCURRENCY:-32}
CONNECTIONS=${CONNECTIONS:-4}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=${OUT:-$(mktemp -d /tmp/tollgate-keymem.XXXXXX)}
mkdir -p "$OUT"
SCRIPT=key_memory.sh
# shellcheck source=common.sh
. "$HERE/common.sh"

build_release
start_redis

SPID=""
ADDR=""
start_tollgate() { # keys
  local cfg="$OUT/keys-$1.yaml"
  "$BENCH" --gen-config "$1" --store redis --redis-url "redis://127.0.0.1:$REDIS_PORT" >"$cfg"
  rcli FLUSHALL >/dev/null
  "$TOLLGATE" serve --config "$cfg" >"$OUT/tollgate-$1.out" 2>"$OUT/tollgate-$1.err" &
  SPID=$!
  CHILDREN+=("$SPID")
  ADDR=$(wait_ready "$OUT/tollgate-$1.out" "$SPID")
  sleep 0.5
}

# --- bytes per key ----------------------------------------------------------------------------
start_tollgate "$KEYS"
before_keys=$(rcli DBSIZE)
mem0=$(used_memory)
log "checking $KEYS keys round-robin for $FILL_DURATION s"
timeout 900 "$BENCH" --addr "http://$ADDR" --concurrency "$CONCURRENCY" --connections "$CONNECTIONS" \
  --duration "$FILL_DURATION" --warmup 0 --keys "$KEYS" --key-order round-robin \
  >"$OUT/fill.json" 2>"$OUT/fill.err" || die "fill: $(cat "$OUT/fill.err")"
mem1=$(used_memory)
after_keys=$(rcli DBSIZE)
sample='tg:{k:key-12}'
{
  printf 'keys: %s; Redis keys before/after the traffic: %s / %s\n' "$KEYS" "$before_keys" "$after_keys"
  printf 'used_memory growth per API key: %s B (%s bytes)\n' "$(div $((mem1 - mem0)) "$KEYS" %.1f)" $((mem1 - mem0))
  printf 'MEMORY USAGE %s: %s B; fields: %s; TTL: %s\n' "$sample" "$(rcli MEMORY USAGE "$sample")" \
    "$(rcli HGETALL "$sample" | paste -sd' ')" "$(rcli PTTL "$sample")"
  printf 'fill: %s\n' "$(cut -c1-140 "$OUT/fill.json")"
} | tee "$OUT/summary.txt"
stop_pid "$SPID"

# --- cost against the number of keys ---------------------------------------------------------
for n in $SCALE; do
  start_tollgate "$n"
  timeout $((DURATION + WARMUP + 60)) "$BENCH" --addr "http://$ADDR" --concurrency "$CONCURRENCY" \
    --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" --keys "$n" \
    >"$OUT/scale-$n.json" 2>"$OUT/scale-$n.err" || die "scale $n: $(cat "$OUT/scale-$n.err")"
  printf 'keys %-8s rps %-8s p50_us %-6s p99_us %-6s\n' "$n" "$(jget "$OUT/scale-$n.json" rps)" \
    "$(jget "$OUT/scale-$n.json" p50_us)" "$(jget "$OUT/scale-$n.json" p99_us)" | tee -a "$OUT/summary.txt"
  stop_pid "$SPID"
done
echo "results: $OUT"
