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
start_tollgate() { # keys [name]
  local cfg="$OUT/keys-$1.yaml" name=${2:-$1}
  "$BENCH" --gen-config "$1" --store redis --redis-url "redis://127.0.0.1:$REDIS_PORT" >"$cfg"
  rcli FLUSHALL >/dev/null
  "$TOLLGATE" serve --config "$cfg" >"$OUT/tollgate-$name.out" 2>"$OUT/tollgate-$name.err" &
  SPID=$!
  CHILDREN+=("$SPID")
  ADDR=$(wait_ready "$OUT/tollgate-$name.out" "$SPID")
  log "$1 keys: plans and keys loaded from Redis after $(wait_defs "$OUT/tollgate-$name.out") s"
  # Seeding a big file keeps Redis busy a little longer (a cancelled first attempt still runs).
  sleep 3
}

# --- bytes per key ----------------------------------------------------------------------------
start_tollgate "$KEYS" fill
before_keys=$(rcli DBSIZE)
mem0=$(used_memory)
log "checking $KEYS keys round-robin for $FILL_DURATION s"
timeout 900 "$BENCH" --addr "http://$ADDR" --concurrency "$CONCURRENCY" --connections "$CONNECTIONS" \
  --duration "$FILL_DURATION" --warmup 0 --keys "$KEYS" --key-order round-robin \
  >"$OUT/fill.json" 2>"$OUT/fill.err" || die "fill: $(cat "$OUT/fill.err")"
stop_pid "$SPID"
after_keys=$(rcli DBSIZE)
sample='tg:{k:key-12}'
sample_usage=$(rcli MEMORY USAGE "$sample")
sample_fields=$(rcli HGETALL "$sample" | paste -sd' ')
sample_ttl=$(rcli PTTL "$sample")
# Exact: used_memory with the keys' hashes, then without them (DEL, not the lazy UNLINK).
mem1=$(used_memory)
deleted=$(rcli EVAL "local n = 0
local cursor = '0'
repeat
  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 10000)
  cursor = r[1]
  for _, k in ipairs(r[2]) do n = n + redis.call('DEL', k) end
until cursor == '0'
return n" 0 'tg:{k:*}')
mem2=$(used_memory)
{
  printf 'keys: %s; Redis keys before/after the traffic: %s / %s; API-key hashes: %s\n' \
    "$KEYS" "$before_keys" "$after_keys" "$deleted"
  printf 'Redis memory per API key: %s B growth of used_memory over the traffic (%s bytes); %s B freed by deleting the hashes\n' \
    "$(div $((mem1 - mem0)) "$deleted" %.1f)" $((mem1 - mem0)) "$(div $((mem1 - mem2)) "$deleted" %.1f)"
  printf 'MEMORY USAGE %s: %s B; fields: %s; TTL: %s\n' "$sample" "$sample_usage" \
    "$sample_fields" "$sample_ttl"
  printf 'fill: %s\n' "$(cut -c1-160 "$OUT/fill.json")"
} | tee "$OUT/summary.txt"

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
