#!/usr/bin/env bash
# Authorize latency per cache level: a miss that calls a local HTTP authorizer, a shared-cache
# hit (the output cached by another instance, read from Redis), and a local-cache hit.
# Everything on 127.0.0.1, bounded in time; children are ended on exit.
#   benches/scripts/authz.sh            (SKIP_BUILD=1 to reuse target/release)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DURATION=${DURATION:-5}
CONCURRENCY=${CONCURRENCY:-16}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=${OUT:-$(mktemp -d /tmp/tollgate-authz.XXXXXX)}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TOLLGATE=$TARGET_DIR/release/tollgate
BENCH=$TARGET_DIR/release/tollgate-bench
mkdir -p "$OUT"
log() { printf '[authz.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
CHILDREN=()
cleanup() { local p; for p in "${CHILDREN[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; sleep 0.5
  for p in "${CHILDREN[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { local p i; for i in $(seq 100); do p=$((20000 + RANDOM % 30000))
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi; done; die "no free port"; }
# wait_line FILE PATTERN: the first line matching PATTERN, within 30 s.
wait_line() { local i; for i in $(seq 300); do grep -m1 "$2" "$1" 2>/dev/null && return; sleep 0.1; done; die "no '$2' in $1"; }

if [ "$SKIP_BUILD" != 1 ]; then
  log "building release"; timeout 3600 cargo build --release -p tollgate-server -p tollgate-benches >&2
fi
command -v redis-server >/dev/null || die "redis-server not found (apt-get install redis-server)"

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --logfile "$OUT/redis.log" &
CHILDREN+=($!)
"$BENCH" --serve-authorizer 127.0.0.1:0 > "$OUT/authorizer.out" 2>&1 &
CHILDREN+=($!)
AUTH_URL=$(wait_line "$OUT/authorizer.out" 'authorizer ready' | sed 's/.*ready //')
"$BENCH" --gen-config 1 --store redis --redis-url "redis://127.0.0.1:$REDIS_PORT/" \
  --authorizer-endpoint "$AUTH_URL" > "$OUT/config.yaml"
start_tollgate() { # name: sets URL (not in a subshell, so CHILDREN keeps the pid for cleanup)
  TOLLGATE_LOG=warn "$TOLLGATE" serve --config "$OUT/config.yaml" > "$OUT/$1.out" 2> "$OUT/$1.err" &
  CHILDREN+=($!)
  URL="http://$(wait_line "$OUT/$1.out" 'tollgate ready' | sed 's/.*grpc=\([^ ]*\).*/\1/')"
}
start_tollgate a; A=$URL
start_tollgate b; B=$URL
log "redis :$REDIS_PORT, authorizer $AUTH_URL, tollgate A $A, B $B"
bench() { # name addr args...
  local name=$1 addr=$2; shift 2
  timeout 120 "$BENCH" --addr "$addr" --authorize bench-auth --api bench --stage prod \
    --concurrency "$CONCURRENCY" --connections 2 --warmup "${WARM:-1}" --duration "$DURATION" "$@" > "$OUT/$name.json"
  log "$name: $(cat "$OUT/$name.json")"
}
# Misses: every request a new token (round-robin over 50 M tokens).
bench miss "$A" --keys 50000000 --key-order round-robin --key-prefix miss
# Shared hits: A caches tokens shared-0.., then B asks for them in the same order (first time on B).
bench shared-warm "$A" --keys 50000000 --key-order round-robin --key-prefix shared
WARM=0 bench shared "$B" --keys 50000000 --key-order round-robin --key-prefix shared
# Local hits: 1,000 hot tokens, cached during the warm-up.
bench local "$A" --keys 1000 --key-prefix hot
echo
echo "Authorize latency by cache level (concurrency $CONCURRENCY, ${DURATION}s each; raw: $OUT)"
for f in miss shared local; do
  printf '%-8s %s\n' "$f" "$(sed 's/.*"levels":\({.*}\)}$/\1/' "$OUT/$f.json")"
done
