//! The check script: a line-by-line copy of `limiter::evaluate` in Lua, so one round trip
//! decides and commits everything about a request.
//!
//! Why a script and not MULTI/WATCH: the decision depends on the values read (GCRA TATs, the
//! quota count), and "check every bucket, then commit all or nothing" must be atomic across
//! concurrent instances. A script runs atomically on the server with no retry loop, in one
//! round trip.
//!
//! Numbers: every value is an integer below 2^53 (µs timestamps ≈ 1.8e15, bounded rates, bursts
//! and costs), so Lua's doubles are exact. Values are written with `%.0f` because Lua's default
//! number-to-string conversion (`%.14g`) would round a µs timestamp.
//!
//! [`CHECK`] and [`SET_REMAINING`] are prefixed with [`PERIODS`] (see [`with_periods`]).
//!
//! KEYS
//!   1     the owner hash (API key, or stage for keyless routes): quota + per-key buckets
//!   2     the idempotency record `<owner>:r:<request_id>` (same slot; unused without an id)
//!   3..   other hashes holding buckets (stage-wide)
//! ARGV
//!   1 now µs (0 = Redis TIME)   2 cost   3 dry_run 0|1   4 use idempotency 0|1
//!   5 idempotency TTL ms        6 TTL margin µs           7 bucket count n
//!   then per bucket: key index (into KEYS), field, T µs, τ µs, burst
//!   then: quota 0|1, field, limit, offset, initial period index, period (1 DAY, 2 WEEK, 3 MONTH),
//!         override field (`UpdateUsage`: `<period index>:<limit>`)
//!   then: usage 0|1, usage base (`<owner>:u:<plan>`, same slot), retention days
//! Reply (integers; see `CheckOutcome::to_wire`)
//!   verdict (0 allow, 1 throttled, 2 quota), denied bucket (1-based, 0 none), retry µs (-1 none),
//!   now µs, period index, quota used, quota limit, replayed 0|1, has quota 0|1, remaining per bucket
pub const CHECK: &str = r#"
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local cost = tonumber(ARGV[2])
local dry = ARGV[3] == '1'
local use_idem = ARGV[4] == '1'
if use_idem then
  local prev = redis.call('GET', KEYS[2])
  if prev then
    local out = {}
    for n in string.gmatch(prev, '[^,]+') do out[#out + 1] = tonumber(n) end
    out[8] = 1
    -- The wait counts from the first answer, not from the replay.
    if out[3] >= 0 then out[3] = math.max(out[4] + out[3] - now, 0) end
    out[4] = now
    return out
  end
end
local margin = tonumber(ARGV[6])
local nb = tonumber(ARGV[7])
local i = 8
-- Read every field with one HMGET per hash (the owner, and the stage hash if any).
local fields, order, pos = {}, {}, {}
local function want(k, f)
  local l = fields[k]
  if not l then l = {}; fields[k] = l; order[#order + 1] = k end
  l[#l + 1] = f
  return #l
end
local bk, bf, bt, btau, bb, old, new = {}, {}, {}, {}, {}, {}, {}
for b = 1, nb do
  bk[b] = KEYS[tonumber(ARGV[i])]
  bf[b] = ARGV[i + 1]
  bt[b] = tonumber(ARGV[i + 2])
  btau[b] = tonumber(ARGV[i + 3])
  bb[b] = tonumber(ARGV[i + 4])
  pos[b] = want(bk[b], bf[b])
  i = i + 5
end
local has_q = ARGV[i] == '1'
local qf, qidx, qused, qlim, qperiod = ARGV[i + 1], 0, 0, 0, tonumber(ARGV[i + 5])
local qpos, qopos = 0, 0
if has_q then
  qpos = want(KEYS[1], qf)
  qopos = want(KEYS[1], ARGV[i + 6])
end
local use_usage = ARGV[i + 7] == '1'
local ubase, uret = ARGV[i + 8], tonumber(ARGV[i + 9])
local vals = {}
for _, k in ipairs(order) do vals[k] = redis.call('HMGET', k, unpack(fields[k])) end

local denied, denied_retry = 0, 0
for b = 1, nb do
  local tat = now
  local stored = vals[bk[b]][pos[b]]
  if stored then tat = math.max(tonumber(stored), now) end
  old[b] = tat
  local retry = nil
  if cost > bb[b] then
    retry = -1
  else
    local allow_at = tat + bt[b] * (cost - 1) - btau[b]
    if now >= allow_at then new[b] = tat + cost * bt[b] else retry = allow_at - now end
  end
  if retry ~= nil then
    new[b] = tat
    local worse
    if denied == 0 then worse = true
    elseif denied_retry == -1 then worse = false
    elseif retry == -1 then worse = true
    else worse = retry > denied_retry end
    if worse then denied, denied_retry = b, retry end
  end
end

if has_q then
  qidx = period_index(qperiod, now)
  local s = vals[KEYS[1]][qpos]
  if s then
    local si, su = string.match(s, '^(-?%d+):(%d+)$')
    if si and tonumber(si) == qidx then qused = tonumber(su) end
  end
  qlim = tonumber(ARGV[i + 2])
  if qidx == tonumber(ARGV[i + 4]) then qlim = math.max(qlim - tonumber(ARGV[i + 3]), 0) end
  local o = vals[KEYS[1]][qopos]
  if o then
    local oi, ol = string.match(o, '^(-?%d+):(%d+)$')
    if oi and tonumber(oi) == qidx then qlim = tonumber(ol) end
  end
end

local verdict, retry = 0, -1
if denied > 0 then
  verdict, retry = 1, denied_retry
elseif has_q and qused + cost > qlim then
  verdict, retry = 2, math.max(period_start(qperiod, qidx + 1) - now, 0)
end
if verdict == 0 and has_q then qused = qused + cost end

if verdict == 0 and not dry then
  -- One HSET per hash; then make sure each hash lives until its state stops mattering.
  local writes, until_ = {}, {}
  local function put(k, f, v, u)
    local l = writes[k]
    if not l then l = {}; writes[k] = l end
    l[#l + 1] = f
    l[#l + 1] = v
    until_[k] = math.max(until_[k] or 0, u)
  end
  for b = 1, nb do put(bk[b], bf[b], fmt(new[b]), new[b]) end
  if has_q then put(KEYS[1], qf, fmt(qidx) .. ':' .. fmt(qused), period_start(qperiod, qidx + 1)) end
  for k, l in pairs(writes) do
    redis.call('HSET', k, unpack(l))
    local ttl = math.floor((until_[k] + margin - now) / 1000) + 1
    -- TTLs only collect garbage: skip the rewrite when the current one is within a second.
    if redis.call('PTTL', k) < ttl - 1000 then redis.call('PEXPIRE', k, ttl) end
  end
  if use_usage then
    -- Daily usage: one hash per month (same hash tag as the owner), a field per day.
    local day = math.floor(now / DAY)
    local mi = month_index(day)
    local uk = ubase .. ':' .. fmt(mi)
    -- The TTL (month end + retention) is set by the day's first request only.
    if redis.call('HINCRBY', uk, fmt(day), cost) == cost then
      redis.call('PEXPIRE', uk, math.floor((period_start(3, mi + 1) + uret * DAY - now) / 1000) + 1)
    end
  end
end

local out = {verdict, denied, retry, now, qidx, qused, qlim, 0, 0}
if has_q then out[9] = 1 end
for b = 1, nb do
  local tat = old[b]
  if verdict == 0 then tat = new[b] end
  local slack = now + btau[b] - tat
  local rem = 0
  if slack >= 0 then rem = math.min(math.floor(slack / bt[b]) + 1, bb[b]) end
  out[9 + b] = rem
end
if use_idem and not dry then
  local parts = {}
  for k = 1, #out do parts[k] = fmt(out[k]) end
  redis.call('SET', KEYS[2], table.concat(parts, ','), 'PX', ARGV[5])
end
return out
"#;

/// Returns the stored creation time of a plan, storing ARGV[1] when there is none.
/// KEYS[1] `tg:plan:<id>:created_at`; ARGV[1] now µs.
pub const PLAN_CREATED: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then return tonumber(v) end
redis.call('SET', KEYS[1], ARGV[1])
return tonumber(ARGV[1])
"#;

/// Reads every definition and the version atomically.
/// KEYS plans hash, keys hash, version. Reply: {version, plans HGETALL, keys HGETALL}.
pub const DEFS_LOAD: &str = r#"
local v = tonumber(redis.call('GET', KEYS[3]) or '0')
return {v, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"#;

/// Applies definition writes if the version is still ARGV[1]; bumps it and publishes.
/// KEYS plans hash, keys hash, version. ARGV expected version, channel, then triples
/// (`p`|`k`, id, JSON or empty to delete). Reply: the new version, or -1 on a conflict.
pub const DEFS_WRITE: &str = r#"
local v = tonumber(redis.call('GET', KEYS[3]) or '0')
if v ~= tonumber(ARGV[1]) then return -1 end
local i = 3
while i <= #ARGV do
  local h = KEYS[1]
  if ARGV[i] == 'k' then h = KEYS[2] end
  if ARGV[i + 2] == '' then redis.call('HDEL', h, ARGV[i + 1])
  else redis.call('HSET', h, ARGV[i + 1], ARGV[i + 2]) end
  i = i + 3
end
v = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[2], 'defs ' .. v)
return v
"#;

/// `UpdateUsage`: sets the current period's limit to used + ARGV remaining.
/// KEYS owner hash. ARGV quota field, override field, period code, remaining, TTL margin µs,
/// largest limit (counts stay exact in doubles).
/// Reply: {period index, used, limit, now µs}.
pub const SET_REMAINING: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local p = tonumber(ARGV[3])
local idx = period_index(p, now)
local used = 0
local s = redis.call('HGET', KEYS[1], ARGV[1])
if s then
  local si, su = string.match(s, '^(-?%d+):(%d+)$')
  if si and tonumber(si) == idx then used = tonumber(su) end
end
local limit = math.min(used + tonumber(ARGV[4]), tonumber(ARGV[6]))
redis.call('HSET', KEYS[1], ARGV[2], fmt(idx) .. ':' .. fmt(limit))
local ttl = math.floor((period_start(p, idx + 1) + tonumber(ARGV[5]) - now) / 1000) + 1
if redis.call('PTTL', KEYS[1]) < ttl - 1000 then redis.call('PEXPIRE', KEYS[1], ttl) end
return {idx, used, limit, now}
"#;

/// Every field of an owner hash and the server time. KEYS owner hash.
/// Reply: {now µs, HGETALL}.
pub const OWNER_STATE: &str = r#"
local t = redis.call('TIME')
return {tonumber(t[1]) * 1000000 + tonumber(t[2]), redis.call('HGETALL', KEYS[1])}
"#;

/// Period helpers shared by the scripts that need the quota calendar.
pub const PERIODS: &str = r#"
local DAY = 86400000000
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m + 9
  if m > 2 then mp = m - 3 end
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end
local function month_index(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp - 9
  if mp < 10 then m = mp + 3 end
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y * 12 + m - 1
end
local function period_index(p, now)
  local days = math.floor(now / DAY)
  if p == 1 then return days end
  if p == 2 then return math.floor((days + 3) / 7) end
  return month_index(days)
end
local function period_start(p, idx)
  if p == 1 then return idx * DAY end
  if p == 2 then return (idx * 7 - 3) * DAY end
  local y = math.floor(idx / 12)
  return days_from_civil(y, idx - y * 12 + 1, 1) * DAY
end
local function fmt(n) return string.format('%.0f', n) end

"#;

/// `PERIODS` followed by `body`.
pub fn with_periods(body: &str) -> String {
    format!("{PERIODS}\n{body}")
}
