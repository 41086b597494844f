#!/usr/bin/env bash
# The whole comparison of issue 7 in one run, all on 127.0.0.1, every step bounded in time:
#   1. the ceiling: redis-benchmark running token_bucket.lua with EVALSHA
#      (-n RB_REQUESTS -c 50 -P 1 -r 10000), i.e. one script call per check and nothing else;
#   2. Tollgate on the memory store and on Redis, CheckRequest (tollgate-bench) and the Envoy RLS
#      path (rlsload), KEYS keys, c=CONCURRENCY over CONNECTIONS connections; EVALSHA calls per
#      admitted check from INFO commandstats; Redis used_memory per key;
#   3. tokio worker threads 1 vs 2 (memory store);
#   4. a concurrency sweep (SWEEP) for memory and Redis → sweep.csv and sweep.png (rps and p99
#      against concurrency; drawn with matplotlib from a private virtualenv, benches/.venv-plot);
#   5. a table of ratios to the ceiling.
#
# Usage: benches/scripts/compare.sh        (about 5 minutes after the release build)
# Knobs: DURATION [10] WARMUP [2] CONCURRENCY [32] CONNECTIONS [4] KEYS [10000]
#   RB_REQUESTS [1000000] SWEEP ["1 4 16 32 64 128 256"] SWEEP_DURATION [5] SKIP_BUILD [0]
#   PLOT [1] OUT [mktemp -d] RLSLOAD, RLS_SRC, RLS_TARGET (as envoy.sh) REDIS_SERVER, REDIS_CLI,
#   REDIS_BENCHMARK
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-32}
CONNECTIONS=${CONNECTIONS:-4}
KEYS=${KEYS:-10000}
RB_REQUESTS=${RB_REQUESTS:-1000000}
SWEEP=${SWEEP:-"1 4 16 32 64 128 256"}
SWEEP_DURATION=${SWEEP_DURATION:-5}
SKIP_BUILD=${SKIP_BUILD:-0}
PLOT=${PLOT:-1}
OUT=${OUT:-$(mktemp -d /tmp/tollgate-compare.XXXXXX)}
RLS_PREFIX=rls-bench-key-0000000
mkdir -p "$OUT"
SCRIPT=compare.sh
# shellcheck source=common.sh
. "$HERE/common.sh"

command -v "$REDIS_BENCHMARK" >/dev/null || die "$REDIS_BENCHMARK not found (apt-get install redis-tools)"
build_release
build_rlsload

# --- redis and the ceiling ------------------------------------------------------------------
start_redis
SHA=$(rcli SCRIPT LOAD "$(cat "$HERE/token_bucket.lua")")
log "ceiling: redis-benchmark EVALSHA token_bucket.lua -n $RB_REQUESTS -c 50 -P 1 -r 10000"
timeout 600 "$REDIS_BENCHMARK" -h 127.0.0.1 -p "$REDIS_PORT" -n "$RB_REQUESTS" -c 50 -P 1 \
  -r 10000 --csv EVALSHA "$SHA" 1 tb:__rand_int__ 1000000000 1000000000 1 \
  >"$OUT/ceiling.csv"
CEIL=$(sed -n 2p "$OUT/ceiling.csv" | awk -F'","' '{print $2}')
CEIL_P99=$(sed -n 2p "$OUT/ceiling.csv" | awk -F'","' '{print $7}')
[ -n "$CEIL" ] || die "cannot read $OUT/ceiling.csv"
log "ceiling: $CEIL rps (p99 $CEIL_P99 ms)"
rcli FLUSHALL >/dev/null

# --- one tollgate per store -----------------------------------------------------------------
SPID=""
ADDR=""
start_tollgate() { # store workers
  local store=$1 workers=$2 cfg="$OUT/$1-w$2.yaml" i
  "$BENCH" --gen-config "$KEYS" --store "$store" \
    --redis-url "redis://127.0.0.1:$REDIS_PORT" >"$cfg"
  for i in $(seq 0 $((KEYS - 1))); do
    echo "  - { id: rls-$i, value: \"${RLS_PREFIX}_$i\", enabled: true, usage_plans: [bench] }"
  done >>"$cfg"
  [ "$store" = redis ] && rcli FLUSHALL >/dev/null
  TOLLGATE_SERVER_WORKER_THREADS=$workers "$TOLLGATE" serve --config "$cfg" \
    >"$OUT/$store-w$workers.out" 2>"$OUT/$store-w$workers.err" &
  SPID=$!
  CHILDREN+=("$SPID")
  ADDR=$(wait_ready "$OUT/$store-w$workers.out" "$SPID")
  sleep 0.5
}
bench() { # name concurrency duration [--rls]
  local name=$1 c=$2 d=$3 t=$(($3 + WARMUP + 60))
  if [ "${4:-}" = --rls ]; then
    timeout $t "$RLSLOAD" --addr "$ADDR" --concurrency "$c" --connections "$CONNECTIONS" \
      --duration "$d" --warmup "$WARMUP" --domain bench --descriptor stage=prod \
      --descriptor method=GET --descriptor path=/items --descriptor "api_key=$RLS_PREFIX" \
      --keys "$KEYS" >"$OUT/$name.json" 2>"$OUT/$name.err" || die "$name: $(cat "$OUT/$name.err")"
  else
    timeout $t "$BENCH" --addr "http://$ADDR" --concurrency "$c" --connections "$CONNECTIONS" \
      --duration "$d" --warmup "$WARMUP" --keys "$KEYS" >"$OUT/$name.json" \
      2>"$OUT/$name.err" || die "$name: $(cat "$OUT/$name.err")"
  fi
  log "$name: $(cut -c1-160 "$OUT/$name.json")"
}
declare -A R
record() { # name
  R[$1.rps]=$(jget "$OUT/$1.json" rps)
  R[$1.p50]=$(jget "$OUT/$1.json" p50_us)
  R[$1.p99]=$(jget "$OUT/$1.json" p99_us)
}

echo "store,path,concurrency,rps,p50_us,p99_us" >"$OUT/sweep.csv"
sweep() { # store
  local c
  for c in $SWEEP; do
    bench "sweep-$1-c$c" "$c" "$SWEEP_DURATION"
    echo "$1,checkrequest,$c,$(jget "$OUT/sweep-$1-c$c.json" rps),$(jget "$OUT/sweep-$1-c$c.json" p50_us),$(jget "$OUT/sweep-$1-c$c.json" p99_us)" >>"$OUT/sweep.csv"
  done
}

# memory, default workers (one per CPU)
start_tollgate memory 0
bench memory "$CONCURRENCY" "$DURATION"; record memory
bench memory-rls "$CONCURRENCY" "$DURATION" --rls; record memory-rls
sweep memory
stop_pid "$SPID"
# memory, one worker
start_tollgate memory 1
bench memory-w1 "$CONCURRENCY" "$DURATION"; record memory-w1
stop_pid "$SPID"
# redis
start_tollgate redis 0
mem0=$(used_memory)
rcli CONFIG RESETSTAT >/dev/null
bench redis "$CONCURRENCY" "$DURATION"; record redis
EVALSHA=$(cmd_calls evalsha)
ADMITTED=$(($(jget "$OUT/redis.json" allowed_total)))
KEYS_LIVE=$(rcli DBSIZE)
mem1=$(used_memory)
bench redis-rls "$CONCURRENCY" "$DURATION" --rls; record redis-rls
sweep redis
stop_pid "$SPID"

# --- table ----------------------------------------------------------------------------------
{
  printf '\nmachine: %s, %s CPUs; ceiling %s rps (redis-benchmark EVALSHA, p99 %s ms)\n' \
    "$(uname -m)" "$(nproc)" "$CEIL" "$CEIL_P99"
  printf '%-34s %9s %8s %8s %12s\n' run rps p50_us p99_us "x ceiling"
  for r in memory memory-w1 memory-rls redis redis-rls; do
    printf '%-34s %9s %8s %8s %12s\n' "$r (c=$CONCURRENCY, $KEYS keys)" "${R[$r.rps]}" \
      "${R[$r.p50]}" "${R[$r.p99]}" "$(div "${R[$r.rps]}" "$CEIL")"
  done
  printf 'EVALSHA per admitted check (redis CheckRequest run): %s (%s / %s)\n' \
    "$(div "$EVALSHA" "$ADMITTED" %.3f)" "$EVALSHA" "$ADMITTED"
  printf 'Redis used_memory per key after the run: %s B (%s keys, %s bytes)\n' \
    "$(div $((mem1 - mem0)) "$KEYS" %.0f)" "$KEYS_LIVE" $((mem1 - mem0))
  echo "sweep: $OUT/sweep.csv"
} | tee "$OUT/summary.txt"

# --- plot -----------------------------------------------------------------------------------
if [ "$PLOT" = 1 ]; then
  VENV=$ROOT/benches/.venv-plot
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
    log "installing matplotlib into $VENV (PyPI)"
    python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet matplotlib >&2
  fi
  "$VENV/bin/python" "$HERE/plot_sweep.py" "$OUT/sweep.csv" "$OUT/sweep.png" \
    "ceiling $CEIL rps" && log "plot: $OUT/sweep.png"
fi
echo "results: $OUT"
