#!/usr/bin/env bash
# What metering costs, in one run on one machine: tollgate-bench CheckRequest on the same
# server binary and store, ROUNDS interleaved rounds of three modes:
#   plain     no request_id;
#   idem      a unique request_id per check (an idempotency record per check);
#   metered   the same in a `metering: {}` plan (each check is a reservation and also writes a
#             reservation ticket to the store, swept at the TTL by every instance);
# prints rps, p99 and server CPU µs per check per round, the medians, the ratios to plain,
# and (Redis) the memory the pending records and tickets take per check.
#
# Usage: benches/scripts/metered.sh          (release binaries; SKIP_BUILD=1 to reuse them)
# Knobs: ROUNDS [3] DURATION [8] WARMUP [2] CONCURRENCY [32] CONNECTIONS [4] KEYS [10000]
#   STORES ["memory redis"]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SCRIPT=metered.sh
OUT=$(mktemp -d /tmp/tollgate-metered.XXXXXX)
source "$HERE/common.sh"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-32}
CONNECTIONS=${CONNECTIONS:-4}
KEYS=${KEYS:-10000}
STORES=${STORES:-"memory redis"}
SKIP_BUILD=${SKIP_BUILD:-0}
TOLLGATE=$TARGET_DIR/release/tollgate
BENCH=$TARGET_DIR/release/tollgate-bench
[ "$SKIP_BUILD" = 1 ] || build_release
start_redis

one() { # store mode round
  local store=$1 mode=$2 tag="$1-$2-$3" cfg pid addr t0 t1 m0 m1 n
  cfg="$OUT/$tag.yaml"
  local gen=(--gen-config "$KEYS" --store "$store" --redis-url "redis://127.0.0.1:$REDIS_PORT")
  [ "$mode" = metered ] && gen+=(--metered)
  "$BENCH" "${gen[@]}" >"$cfg"
  rcli FLUSHALL >/dev/null
  "$TOLLGATE" serve --config "$cfg" >"$OUT/$tag.out" 2>"$OUT/$tag.err" &
  pid=$!
  CHILDREN+=("$pid")
  addr=$(wait_ready "$OUT/$tag.out" "$pid")
  [ "$store" = redis ] && wait_defs "$OUT/$tag.out" >/dev/null
  m0=$(used_memory)
  t0=$(cpu_ticks "$pid")
  local run=(--addr "http://$addr" --concurrency "$CONCURRENCY" --connections "$CONNECTIONS"
    --duration "$DURATION" --warmup "$WARMUP" --keys "$KEYS")
  [ "$mode" = plain ] || run+=(--request-ids)
  timeout $((DURATION + WARMUP + 60)) "$BENCH" "${run[@]}" >"$OUT/$tag.json" 2>/dev/null
  t1=$(cpu_ticks "$pid")
  m1=$(used_memory)
  stop_pid "$pid"
  n=$(($(jget "$OUT/$tag.json" requests) + $(jget "$OUT/$tag.json" warmup_requests)))
  printf '%s %s %s rps=%s p99_us=%s cpu_us_per_check=%s redis_bytes_per_check=%s errors=%s\n' \
    "$store" "$mode" "$3" "$(jget "$OUT/$tag.json" rps)" "$(jget "$OUT/$tag.json" p99_us)" \
    "$(div $(((t1 - t0) * 10000)) "$n" %.1f)" \
    "$([ "$store" = redis ] && div $((m1 - m0)) "$n" %.0f || echo n/a)" \
    "$(jget "$OUT/$tag.json" errors)"
}

for store in $STORES; do
  for r in $(seq "$ROUNDS"); do
    for mode in plain idem metered; do one "$store" "$mode" "$r"; done
  done
done | tee "$OUT/rounds.txt"

echo "median per store and mode (ratio to plain):"
for store in $STORES; do
  for mode in plain idem metered; do
    med() { grep "^$store $mode " "$OUT/rounds.txt" | sed -n "s/.*$1=\([0-9.]*\).*/\1/p" | sort -g \
      | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    printf '%s\n' "$store $mode rps=$(med rps) p99_us=$(med p99_us) cpu_us_per_check=$(med cpu_us_per_check) redis_bytes_per_check=$(med redis_bytes_per_check)"
  done
done | tee "$OUT/medians.txt"
awk '{split($3,r,"="); split($5,c,"="); if ($2=="plain") {pr[$1]=r[2]; pc[$1]=c[2]}
      printf "%s %s rps/plain=%.2f cpu/plain=%.2f\n", $1, $2, r[2]/pr[$1], c[2]/pc[$1]}' "$OUT/medians.txt"
log "results in $OUT"
