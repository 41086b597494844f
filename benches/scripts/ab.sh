#!/usr/bin/env bash
# A/B of two tollgate binaries on the same machine in one run: for each store (memory, redis),
# ROUNDS rounds of A then B (interleaved, so drift hits both), tollgate-bench CheckRequest with
# KEYS keys at c=CONCURRENCY; prints rps, p99, the server's CPU per request and Redis's µs per
# EVALSHA (INFO commandstats) per round, and the median ratios B/A.
#
# Usage: benches/scripts/ab.sh BIN_A BIN_B
# Knobs: ROUNDS [3] DURATION [8] WARMUP [2] CONCURRENCY [32] CONNECTIONS [4] KEYS [10000]
#   STORES ["memory redis"] BENCH [target/release/tollgate-bench]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
A=${1:?usage: ab.sh BIN_A BIN_B}
B=${2:?usage: ab.sh BIN_A BIN_B}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-32}
CONNECTIONS=${CONNECTIONS:-4}
KEYS=${KEYS:-10000}
STORES=${STORES:-"memory redis"}
BENCH=${BENCH:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate-bench}
OUT=$(mktemp -d /tmp/tollgate-ab.XXXXXX)
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 30000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
jget() { sed -n "s/.*\"$2\":\([0-9.e+-]*\).*/\1/p" "$1" | head -1; }
RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$OUT" \
  --logfile "$OUT/redis.log" &
PIDS+=($!)
sleep 0.5
one() { # bin store tag
  local cfg="$OUT/$2.yaml" pid addr i
  "$BENCH" --gen-config "$KEYS" --store "$2" --redis-url "redis://127.0.0.1:$RPORT" >"$cfg"
  redis-cli -p "$RPORT" FLUSHALL >/dev/null
  redis-cli -p "$RPORT" CONFIG RESETSTAT >/dev/null
  "$1" serve --config "$cfg" >"$OUT/$3.out" 2>"$OUT/$3.err" &
  pid=$!
  for i in $(seq 300); do
    addr=$(sed -n 's/^tollgate ready grpc=\([^ ]*\) .*/\1/p' "$OUT/$3.out")
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "not ready: $(cat "$OUT/$3.err")" >&2; exit 1; }
  sleep 0.3
  local t0 t1
  t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  timeout $((DURATION + WARMUP + 60)) "$BENCH" --addr "http://$addr" --concurrency "$CONCURRENCY" \
    --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" --keys "$KEYS" \
    >"$OUT/$3.json" 2>/dev/null
  t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  # Server CPU µs per request, warm-up included: steadier than rps on a shared machine.
  local n=$(($(jget "$OUT/$3.json" requests) + $(jget "$OUT/$3.json" warmup_requests)))
  # Redis's own µs per EVALSHA (the scripts' cost, which the server's CPU does not include).
  local script
  script=$(redis-cli -p "$RPORT" INFO commandstats | tr -d '\r' |
    sed -n 's/^cmdstat_evalsha:.*usec_per_call=\([0-9.]*\).*/\1/p')
  echo "$(jget "$OUT/$3.json" rps) $(jget "$OUT/$3.json" p99_us) $(awk -v t=$((t1 - t0)) -v h="$(getconf CLK_TCK)" -v n="$n" 'BEGIN{printf "%.1f", t * 1e6 / h / n}') ${script:-0}"
}
for store in $STORES; do
  ratios=()
  cpu=()
  lua=()
  for r in $(seq "$ROUNDS"); do
    read -r ra pa ca la <<<"$(one "$A" "$store" "$store-a-$r")"
    read -r rb pb cb lb <<<"$(one "$B" "$store" "$store-b-$r")"
    ratio=$(awk -v a="$ra" -v b="$rb" 'BEGIN{printf "%.3f", b / a}')
    ratios+=("$ratio")
    cpu+=("$(awk -v a="$ca" -v b="$cb" 'BEGIN{printf "%.3f", b / a}')")
    lua+=("$(awk -v a="$la" -v b="$lb" 'BEGIN{printf "%.3f", (a > 0 ? b / a : 0)}')")
    echo "$store round $r: A $ra rps (p99 $pa µs, $ca µs CPU/req, $la µs/EVALSHA)  B $rb rps (p99 $pb µs, $cb µs CPU/req, $lb µs/EVALSHA)  rps B/A $ratio"
  done
  med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
  echo "$store median rps B/A: $(med "${ratios[@]}"); median server CPU per request B/A: $(med "${cpu[@]}"); median Redis µs per EVALSHA B/A: $(med "${lua[@]}")"
done
