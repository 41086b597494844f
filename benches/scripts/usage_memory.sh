#!/usr/bin/env bash
# Redis memory of daily usage history (GetUsage), in the exact layout the check script writes:
# finished days are fields `u:<plan>:<day>` (days since the epoch → units used) of the key's own
# hash `tg:{k:<key id>}`, next to its bucket and its plan's state field; no TTL.
#
# Starts a throwaway redis-server on a free loopback port, fills KEYS keys with a bucket, a state
# field and MONTHS × DAYS_PER_MONTH days, and prints used_memory growth per key and per key-day.
#
# Usage: benches/scripts/usage_memory.sh   (KEYS [100000] MONTHS [3] DAYS_PER_MONTH [30])
set -euo pipefail
KEYS=${KEYS:-100000}
MONTHS=${MONTHS:-3}
DAYS_PER_MONTH=${DAYS_PER_MONTH:-30}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}
command -v "$REDIS_SERVER" >/dev/null || { echo "redis-server not found (apt-get install redis-server)" >&2; exit 1; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DIR=$(mktemp -d /tmp/tollgate-usage-mem.XXXXXX)
"$REDIS_SERVER" --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$DIR" >"$DIR/redis.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
for _ in $(seq 50); do "$REDIS_CLI" -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

mem() { "$REDIS_CLI" -p "$PORT" info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r'; }
before=$(mem)
# Fill in batches of 1000 keys per EVAL (each call stays short).
FILL='
local first, n, months, days = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for k = first, first + n - 1 do
  local key = "tg:{k:key-" .. k .. "}"
  redis.call("HSET", key, "tAb3dEfG", "1795750728796407", "q:gold", "24322:29:20784:29")
  for d = 1, months * days do
    redis.call("HSET", key, "u:gold:" .. tostring(20400 + d), tostring(100 + (k + d) % 900))
  end
end
return 1'
for ((first = 0; first < KEYS; first += 1000)); do
  "$REDIS_CLI" -p "$PORT" eval "$FILL" 0 "$first" 1000 "$MONTHS" "$DAYS_PER_MONTH" >/dev/null
done
after=$(mem)
python3 - "$before" "$after" "$KEYS" "$MONTHS" "$DAYS_PER_MONTH" <<'EOF'
import sys
b, a, keys, months, days = map(int, sys.argv[1:])
grow = a - b
print(f"keys={keys} months={months} days/month={days}")
print(f"used_memory growth: {grow/1e6:.1f} MB")
print(f"per key: {grow/keys:.0f} B; per key-day: {grow/(keys*months*days):.1f} B")
print(f"1M keys x 90 days would be about {grow/(keys*months*days)*1e6*90/1e9:.2f} GB")
EOF
