#!/usr/bin/env bash
# How fast an admin change reaches another instance, with KEYS existing keys.
#
# Starts redis-server and two `tollgate serve` (release) on free loopback ports sharing it,
# imports KEYS keys through instance A (one CSV import), then ROUNDS times: creates one key on
# A (`tollgate keys create`, timed: the compare-and-set write and A's own catalog rebuild) and
# polls `tollgate keys get` on B until B knows it (the pub/sub reload of every plan and key).
#
# Usage: benches/scripts/admin_propagation.sh   (KEYS [10000] ROUNDS [10] SKIP_BUILD [0])
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
KEYS=${KEYS:-10000}
ROUNDS=${ROUNDS:-10}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TG=$TARGET_DIR/release/tollgate
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release -p tollgate-server --bin tollgate
command -v redis-server >/dev/null || { echo "redis-server not found (apt-get install redis-server)" >&2; exit 1; }

DIR=$(mktemp -d /tmp/tollgate-admin-prop.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }

RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$DIR" >"$DIR/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

cat >"$DIR/tollgate.yaml" <<EOF
server: {grpc_addr: "127.0.0.1:0", admin_addr: "127.0.0.1:0", metrics_addr: "127.0.0.1:0"}
store: {kind: redis, url: "redis://127.0.0.1:$RPORT/", timeout: 1s}
apis:
  - id: petstore
    stages:
      - name: prod
        routes: [{method: GET, path: "/pets", api_key_required: true}]
usage_plans:
  - id: gold
    throttle: {rate_limit: 100, burst_limit: 200}
    api_stages: [{api_id: petstore, stage: prod}]
EOF
export TOLLGATE_ADMIN_TOKEN=bench-admin-token
start() { # name → prints the admin address
  "$TG" serve --config "$DIR/tollgate.yaml" >"$DIR/$1.out" 2>"$DIR/$1.err" &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q "tollgate ready" "$DIR/$1.out" 2>/dev/null && break; sleep 0.1; done
  grep -o 'admin=[0-9.:]*' "$DIR/$1.out" | cut -d= -f2
}
A=$(start a)
B=$(start b)

python3 - "$KEYS" >"$DIR/keys.csv" <<'EOF'
import sys
print("Name,Key,Enabled,UsagePlanIds")
for i in range(int(sys.argv[1])):
    print(f"bulk-{i},bulk-value-{i:012d}-abcdefgh,true,gold")
EOF
t0=$(now_ms)
"$TG" keys import "$DIR/keys.csv" --admin-addr "$A" -o json >/dev/null
echo "import of $KEYS keys through A: $(( $(now_ms) - t0 )) ms"

write_ms=(); prop_ms=()
for r in $(seq "$ROUNDS"); do
  t0=$(now_ms)
  "$TG" keys create --id "probe-$r" --enabled --plan gold --admin-addr "$A" -o json >/dev/null
  t1=$(now_ms)
  until "$TG" keys get "probe-$r" --admin-addr "$B" -o json >/dev/null 2>&1; do :; done
  t2=$(now_ms)
  write_ms+=($((t1 - t0))); prop_ms+=($((t2 - t0)))
done
python3 - "${write_ms[*]}" "${prop_ms[*]}" "$KEYS" <<'EOF'
import statistics, sys
w = [int(x) for x in sys.argv[1].split()]; p = [int(x) for x in sys.argv[2].split()]
print(f"with {sys.argv[3]} keys: create on A (CLI round trip incl. process start) median {statistics.median(w)} ms, max {max(w)} ms")
print(f"known on B after (from the start of the create) median {statistics.median(p)} ms, max {max(p)} ms")
EOF
