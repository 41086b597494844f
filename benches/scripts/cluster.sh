#!/usr/bin/env bash
# Capacity on Redis Cluster, measured on the real thing: a local cluster of MASTERS masters
# (`redis-server --cluster-enabled yes`, `redis-cli --cluster create`), one release Tollgate
# (`store.kind: redis-cluster`) and tollgate-bench (KEYS keys, c=CONCURRENCY) — then the same
# load on one standalone redis-server for comparison. Per node: EVALSHA calls (how the keys
# spread) and Redis CPU per call (used_cpu_user + used_cpu_sys over the run); Tollgate CPU per
# check. Then one hot key (every request the same key) without and with `local_lease`
# (LEASE_UNITS units): rps and store calls per check.
#
# Everything shares this machine's cores: the numbers are costs per check (CPU µs), which is
# what the capacity model in docs/operations/capacity.md scales; rps here is bounded by the 2 cores.
#
# Usage: benches/scripts/cluster.sh   (MASTERS [3] KEYS [10000] CONCURRENCY [32] CONNECTIONS [4]
#        DURATION [10] WARMUP [2] LEASE_UNITS [100] SKIP_BUILD [0] OUT [mktemp -d])
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
MASTERS=${MASTERS:-3}
KEYS=${KEYS:-10000}
CONCURRENCY=${CONCURRENCY:-32}
CONNECTIONS=${CONNECTIONS:-4}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
LEASE_UNITS=${LEASE_UNITS:-100}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=${OUT:-$(mktemp -d /tmp/tollgate-cluster.XXXXXX)}
mkdir -p "$OUT"
SCRIPT=cluster.sh
# shellcheck source=common.sh
. "$HERE/common.sh"

build_release

# --- the cluster ------------------------------------------------------------------------------
PORTS=()
for i in $(seq "$MASTERS"); do
  p=$(free_port)
  mkdir -p "$OUT/node-$p"
  "$REDIS_SERVER" --port "$p" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    --cluster-enabled yes --cluster-config-file "$OUT/node-$p/nodes.conf" \
    --cluster-node-timeout 2000 --dir "$OUT/node-$p" --logfile "$OUT/node-$p/redis.log" &
  CHILDREN+=("$!")
  PORTS+=("$p")
done
for p in "${PORTS[@]}"; do
  for i in $(seq 100); do
    [ "$(timeout 2 "$REDIS_CLI" -p "$p" PING 2>/dev/null)" = PONG ] && break
    sleep 0.1
  done
done
nodes=()
for p in "${PORTS[@]}"; do nodes+=("127.0.0.1:$p"); done
timeout 60 "$REDIS_CLI" --cluster create "${nodes[@]}" --cluster-yes >"$OUT/create.log" 2>&1 \
  || die "redis-cli --cluster create failed (see $OUT/create.log)"
for i in $(seq 200); do
  ok=1
  for p in "${PORTS[@]}"; do
    timeout 2 "$REDIS_CLI" -p "$p" CLUSTER INFO | grep -q cluster_state:ok || ok=0
  done
  [ "$ok" = 1 ] && break
  sleep 0.1
done
[ "$ok" = 1 ] || die "the cluster did not reach cluster_state:ok"
log "cluster of $MASTERS masters on ports ${PORTS[*]}"
start_redis

node_cpu() { # port -> used_cpu_user + used_cpu_sys (seconds)
  timeout 5 "$REDIS_CLI" -p "$1" INFO cpu | tr -d '\r' |
    awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.6f\n", s }'
}
node_evalsha() {
  timeout 5 "$REDIS_CLI" -p "$1" INFO commandstats | tr -d '\r' |
    sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p' | grep . || echo 0
}

SPID=""
ADDR=""
# start_tollgate NAME KIND KEYS [LEASE]: a release Tollgate on the cluster or the standalone Redis.
start_tollgate() {
  local name=$1 kind=$2 keys=$3 lease=${4:-} cfg="$OUT/$1.yaml" urls
  "$BENCH" --gen-config "$keys" --store redis --redis-url "redis://127.0.0.1:$REDIS_PORT" >"$cfg"
  if [ "$kind" = cluster ]; then
    urls=$(printf '"redis://127.0.0.1:%s", ' "${PORTS[@]}")
    sed -i "s|^  kind: redis\$|  kind: redis-cluster|; s|^  url: .*|  url: [${urls%, }]|" "$cfg"
    for p in "${PORTS[@]}"; do timeout 10 "$REDIS_CLI" -p "$p" FLUSHALL >/dev/null; done
  else
    rcli FLUSHALL >/dev/null
  fi
  if [ -n "$lease" ]; then
    sed -i "s|^    name: Benchmark\$|    name: Benchmark\n    local_lease: { units: $lease, max_age: \"500ms\" }|" "$cfg"
  fi
  "$TOLLGATE" serve --config "$cfg" >"$OUT/$name.out" 2>"$OUT/$name.err" &
  SPID=$!
  CHILDREN+=("$SPID")
  ADDR=$(wait_ready "$OUT/$name.out" "$SPID")
  wait_defs "$OUT/$name.out" >/dev/null
}

# run NAME KIND KEYS [LEASE]: one measured load; prints a summary line.
run() {
  local name=$1 kind=$2 keys=$3 lease=${4:-} p calls=0 cpu=0 t0 t1 c0 c1 rps checks ports
  start_tollgate "$name" "$kind" "$keys" "$lease"
  if [ "$kind" = cluster ]; then ports=("${PORTS[@]}"); else ports=("$REDIS_PORT"); fi
  # Warm up (loads the scripts), then count from zero.
  timeout 60 "$BENCH" --addr "http://$ADDR" --concurrency 4 --duration 1 --warmup 0 --keys "$keys" \
    >/dev/null 2>&1 || true
  declare -A cpu0
  for p in "${ports[@]}"; do
    timeout 5 "$REDIS_CLI" -p "$p" CONFIG RESETSTAT >/dev/null
    cpu0[$p]=$(node_cpu "$p")
  done
  c0=$(cpu_ticks "$SPID")
  timeout $((DURATION + WARMUP + 60)) "$BENCH" --addr "http://$ADDR" --concurrency "$CONCURRENCY" \
    --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" --keys "$keys" \
    >"$OUT/$name.json" 2>"$OUT/$name.bench.err" || die "$name: $(cat "$OUT/$name.bench.err")"
  c1=$(cpu_ticks "$SPID")
  rps=$(jget "$OUT/$name.json" rps)
  checks=$(awk -v r="$rps" -v d="$((DURATION + WARMUP))" 'BEGIN { printf "%d\n", r * d }')
  {
    printf '%-22s rps %-8s p50_us %-6s p99_us %-6s tollgate_cpu_us_per_check %s\n' "$name" "$rps" \
      "$(jget "$OUT/$name.json" p50_us)" "$(jget "$OUT/$name.json" p99_us)" \
      "$(div "$(((c1 - c0) * 1000000 / CLK_TCK))" "$checks" %.1f)"
    for p in "${ports[@]}"; do
      local n cpu_us
      n=$(node_evalsha "$p")
      calls=$((calls + n))
      cpu_us=$(awk -v a="${cpu0[$p]}" -v b="$(node_cpu "$p")" 'BEGIN { printf "%d\n", (b - a) * 1000000 }')
      printf '    node %-6s evalsha %-9s redis_cpu_us_per_call %s\n' "$p" "$n" "$(div "$cpu_us" "$n" %.1f)"
    done
    printf '    store calls per check: %s\n' "$(div "$calls" "$checks" %.3f)"
  } | tee -a "$OUT/summary.txt"
  stop_pid "$SPID"
}

run "cluster-$KEYS-keys" cluster "$KEYS"
run "standalone-$KEYS-keys" standalone "$KEYS"
run cluster-hot-key cluster 1
run cluster-hot-key-leased cluster 1 "$LEASE_UNITS"
echo "results: $OUT"
