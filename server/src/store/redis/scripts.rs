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
//! [`CHECK`], [`REFUND`], [`SETTLE`] and [`SET_REMAINING`] are prefixed with [`PERIODS`] and
//! [`STATE`] (see [`with_periods`]): the quota calendar, and the one Lua codec of the packed
//! values in an owner hash (the Rust one is [`crate::store::state`]; a plan's state and an
//! override are read and written only through it, so their format is defined once per
//! language).
//!
//! Owns: the Lua. Must not import the store implementations (they load these scripts).
//!
//! KEYS
//!   1     the owner hash (API key, or stage for keyless routes): quota, usage, per-key buckets
//!   2     the idempotency record `<owner>:r:<request_id>` (same slot; unused without an id)
//!   3..   other hashes holding buckets (stage-wide)
//! ARGV
//!   1 now µs (0 = Redis TIME)   2 cost   3 dry_run 0|1   4 use idempotency 0|1
//!   5 bucket count n, then per bucket: key index (into KEYS), field, T µs, τ µs, burst
//!   then: quota limit (-1: no quota), offset, initial period index, period (1 DAY, 2 WEEK,
//!         3 MONTH), override field (`UpdateUsage`: `<period index>:<limit>`)
//!   then: the plan's state field (`q:<plan>`; empty when there is neither quota nor usage),
//!         usage history (`u:<plan>`; empty: no daily usage), retention days
//! The state field holds `<quota index>:<quota used>`, or with daily usage
//! `<day>:<quota used><d|w|m>:<used that day>` (the quota's period index follows from the day,
//! since periods start at midnight UTC; the letter names the period that was counted): today's
//! usage rides on the write the check makes anyway, and the value stays short (a key's hash
//! fits Redis's 48-byte allocation class). Finished days are kept for the retention, and at
//! least 32 days (GetUsage's `remaining` needs the whole current quota period).
//! On the first admitted check of a later day the finished day moves to `<history>:<day>` and
//! days older than the retention (at least 32 days) are deleted.
//! An owner with daily usage (an API key in a plan) has no TTL: its state is bounded by the
//! defined keys and `DeleteApiKey` clears it, and a TTL costs ~40 bytes per key in Redis. Other
//! hashes get a TTL that only ever grows, covering every bucket and quota period in them.
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
    -- A settled reservation carries `;<actual cost>` (SETTLE).
    prev = string.match(prev, '^[^;]*')
    for n in string.gmatch(prev, '[^,]+') do out[#out + 1] = tonumber(n) end
    out[8] = 1
    -- The wait counts from the first answer, not from the replay.
    if out[3] >= 0 then out[3] = math.max(out[4] + out[3] - now, 0) end
    out[4] = now
    return out
  end
end
local format = string.format
-- Fields to read, per hash (by KEYS index); one HMGET per hash.
local owner = {}
local reads = {owner}
local nb = tonumber(ARGV[5])
local bk, bf, bt, btau, bb, bp, old, new = {}, {}, {}, {}, {}, {}, {}, {}
local i = 6
for b = 1, nb do
  local k = tonumber(ARGV[i])
  local l = reads[k]
  if not l then l = {}; reads[k] = l end
  local f = ARGV[i + 1]
  l[#l + 1] = f
  bk[b], bf[b], bp[b] = k, f, #l
  bt[b], btau[b], bb[b] = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  i = i + 5
end
local qlim = tonumber(ARGV[i])
local has_q = qlim >= 0
local qperiod = tonumber(ARGV[i + 3])
local sf, hist, uret = ARGV[i + 5], ARGV[i + 6], tonumber(ARGV[i + 7])
local use_usage = hist ~= ''
local spos, opos = 0, 0
if sf ~= '' then owner[#owner + 1] = sf; spos = #owner end
if has_q then owner[#owner + 1] = ARGV[i + 4]; opos = #owner end
local vals = {}
for k, l in pairs(reads) do
  if #l > 0 then vals[k] = redis.call('HMGET', KEYS[k], unpack(l)) end
end

local denied, denied_retry = 0, 0
for b = 1, nb do
  local tat = now
  local stored = vals[bk[b]][bp[b]]
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

-- The state field: `<quota index>:<used>`, or with daily usage `<day>:<quota used><period
-- letter>:<used that day>` (the quota's index follows from the day — periods start at midnight
-- UTC — and the letter says which period it counted: a plan whose period changed starts at 0).
local si, su, sd, sdu
if spos > 0 then
  local a, b, l, c = state_decode(vals[1][spos])
  if c then
    sd, su, sdu = a, b, c
    if has_q and l == PERIOD_LETTER[qperiod] then si = period_index(qperiod, sd * DAY) end
  elseif a then
    si, su = a, b
  end
end
local qidx, qused = 0, 0
if has_q then
  qidx = period_index(qperiod, now)
  if si == qidx then qused = su end
  if qidx == tonumber(ARGV[i + 2]) then qlim = math.max(qlim - tonumber(ARGV[i + 1]), 0) end
  local oi, ol = override_decode(vals[1][opos])
  if oi == qidx then qlim = ol end
else
  qlim = 0
end

local verdict, retry = 0, -1
if denied > 0 then
  verdict, retry = 1, denied_retry
elseif has_q and qused + cost > qlim then
  verdict, retry = 2, math.max(period_start(qperiod, qidx + 1) - now, 0)
end
if verdict == 0 and has_q then qused = qused + cost end

if verdict == 0 and not dry then
  -- One HSET per hash.
  local writes, until_ = {}, {}
  for b = 1, nb do
    local k = bk[b]
    local l = writes[k]
    if not l then l = {}; writes[k] = l; until_[k] = 0 end
    l[#l + 1] = bf[b]
    l[#l + 1] = format('%.0f', new[b])
    if new[b] > until_[k] then until_[k] = new[b] end
  end
  local ow = writes[1]
  if not ow then ow = {}; writes[1] = ow; until_[1] = 0 end
  if use_usage then
    local day = math.floor(now / DAY)
    local last = sd
    local today = 0
    if last == day then
      today = sdu
    else
      -- A new day: the last active day joins the history, and the history drops the days
      -- older than the retention — kept at least 32 days, so GetUsage always has the whole
      -- current quota period. HKEYS (a small hash, once a day) also catches days a longer
      -- retention left behind.
      local keep = math.max(uret, 32)
      if last and sdu > 0 and last >= day - keep then
        ow[#ow + 1] = hist .. ':' .. format('%.0f', last)
        ow[#ow + 1] = format('%.0f', sdu)
      end
      local hp = hist .. ':'
      local gone = {}
      for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
        if string.sub(f, 1, #hp) == hp then
          local d = tonumber(string.match(string.sub(f, #hp + 1), '^%d+$'))
          if d and d < day - keep then gone[#gone + 1] = f end
        end
      end
      if #gone > 0 then redis.call('HDEL', KEYS[1], unpack(gone)) end
      -- State written before daily usage moved here may carry a TTL: keys in a plan keep none.
      redis.call('PERSIST', KEYS[1])
    end
    ow[#ow + 1] = sf
    ow[#ow + 1] = state_daily(day, qused, has_q and PERIOD_LETTER[qperiod] or '', today + cost)
  elseif has_q then
    ow[#ow + 1] = sf
    ow[#ow + 1] = state_quota(qidx, qused)
    until_[1] = math.max(until_[1], period_start(qperiod, qidx + 1))
  end
  for k, l in pairs(writes) do
    if #l > 0 then
      redis.call('HSET', KEYS[k], unpack(l))
      if k ~= 1 or not use_usage then
        -- TTLs only collect garbage: only ever extend one, and skip it within a second.
        local ttl = math.floor((until_[k] + MARGIN - now) / 1000) + 1
        if redis.call('PTTL', KEYS[k]) < ttl - 1000 then redis.call('PEXPIRE', KEYS[k], ttl) end
      end
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
  for k = 1, #out do parts[k] = format('%.0f', out[k]) end
  redis.call('SET', KEYS[2], table.concat(parts, ','), 'PX', IDEM_TTL_MS)
end
return out
"#;

/// Gives back what an admitted part of a split check took (Redis Cluster: a check whose
/// stage-wide or descriptor buckets live under another hash tag runs as one [`CHECK`] per tag,
/// concurrently; when another part denied, the parts that admitted are refunded so the
/// request counts nowhere), or what a local lease did not spend. Prefixed with [`PERIODS`].
///
/// KEYS: 1 the part's owner hash (its state field), then hashes holding its buckets, then
/// (when ARGV says so) the part's idempotency record.
/// ARGV: 1 cost, 2 the µs the part was decided at, 3 bucket count n, then per bucket: key
/// index, field, T µs; then the plan's state field (empty: none), the charged quota period
/// index, the usage history prefix (`u:<plan>`, empty: none), the idempotency record's key
/// index (0: none), the `UpdateUsage` override field (empty: none).
/// A TAT goes back by cost × T but never below the decision time (a bucket that refilled
/// since is full either way). The quota goes back by cost while the state still counts the
/// charged period; the day's usage goes back in the state when it is still that day, else in
/// that day's history field (a check after midnight moved it there). Units taken before an
/// `UpdateUsage` of the charged period (its stamp, [`SET_REMAINING`], is at or after the
/// decision) lower that override's limit as much as the quota: the remaining it set stays
/// what it set. The idempotency record is deleted: it said "allowed", and a retry must run
/// afresh. Returns 1.
pub const REFUND: &str = r#"
local cost = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local i = 4
for b = 1, n do
  local k, f, t = tonumber(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  local v = tonumber(redis.call('HGET', KEYS[k], f) or '')
  if v then redis.call('HSET', KEYS[k], f, fmt(math.max(v - cost * t, now))) end
end
local sf, qidx, hist, idem, ofield = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4] or ''
if idem > 0 then redis.call('DEL', KEYS[idem]) end
if sf ~= '' then
  local a, u, l, d = state_decode(redis.call('HGET', KEYS[1], sf))
  if d then
    local sday, dday = a, math.floor(now / DAY)
    local qu, today = u, d
    local period = LETTER_PERIOD[l]
    if period and period_index(period, sday * DAY) == qidx then
      lower_override(ofield, qidx, now, math.min(cost, qu))
      qu = math.max(qu - cost, 0)
    end
    if sday == dday then
      today = math.max(today - cost, 0)
    elseif hist ~= '' then
      local hf = hist .. ':' .. fmt(dday)
      local hv = tonumber(redis.call('HGET', KEYS[1], hf) or '')
      if hv then redis.call('HSET', KEYS[1], hf, fmt(math.max(hv - cost, 0))) end
    end
    redis.call('HSET', KEYS[1], sf, state_daily(sday, qu, l, today))
  elseif a and a == qidx then
    lower_override(ofield, qidx, now, math.min(cost, u))
    redis.call('HSET', KEYS[1], sf, state_quota(a, math.max(u - cost, 0)))
  end
end
return 1
"#;

/// `ReportUsage`: settles the reservation an admitted check made under a request id.
/// Prefixed with [`PERIODS`].
///
/// KEYS: 1 the owner hash, 2 the idempotency record `<owner>:r:<request_id>` (same slot).
/// ARGV: 1 reserved cost, 2 actual cost, 3 now µs (0 = Redis TIME), 4 bucket count n, then per
/// bucket (all in the owner hash): field, T µs; then quota limit (-1: none), offset, initial
/// period index, period code, override field, the plan's state field (empty: none), usage
/// history (`u:<plan>`; empty: none), expire 0|1 (a release at the TTL: the record is deleted
/// instead of marked).
///
/// The record is the check's reply (`CheckOutcome::to_wire`); a settled one carries
/// `;<actual>` after it (CHECK's replay ignores it), and keeps its TTL. Missing or a denial:
/// no reservation. Settled already: nothing changes, the first actual cost is answered.
/// Otherwise delta = actual − reserved is applied like [`REFUND`] applies −cost: the quota
/// while the state still counts the charged period (never below 0; a positive delta may take
/// it past the limit: post-paid), the day's usage in the state when it is still that day, else
/// in that day's history field; each bucket's TAT moves by delta × T (back: never below now;
/// forward: from max(TAT, now)). A refund (delta < 0) of a reservation decided before an
/// `UpdateUsage` of the charged period lowers that override's limit as much (see [`REFUND`]).
/// Reply: {status (0 no reservation, 1 settled, 2 already settled), actual, now µs, has quota
/// 0|1, charged period index, quota used, quota limit}.
pub const SETTLE: &str = r#"
local now = tonumber(ARGV[3])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local rec = redis.call('GET', KEYS[2])
if not rec then return {0, 0, now, 0, 0, 0, 0} end
local body, settled = string.match(rec, '^([^;]*);?(%d*)$')
if not body then return {0, 0, now, 0, 0, 0, 0} end
local out = {}
for n in string.gmatch(body, '[^,]+') do out[#out + 1] = tonumber(n) end
if out[1] ~= 0 then return {0, 0, now, 0, 0, 0, 0} end
local decided, qidx, has_charge = out[4], out[5], out[9] == 1
local reserved, actual = tonumber(ARGV[1]), tonumber(ARGV[2])
local status = 1
if settled ~= '' then
  status, actual = 2, tonumber(settled)
end
local nb = tonumber(ARGV[4])
local i = 5 + nb * 2
local qlim, qoff, qinit, qperiod, ofield = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), ARGV[i + 4]
local sf, hist = ARGV[i + 5], ARGV[i + 6]
if status == 1 then
  local delta = actual - reserved
  if delta ~= 0 then
    local j = 5
    for b = 1, nb do
      local f, t = ARGV[j], tonumber(ARGV[j + 1])
      j = j + 2
      local v = tonumber(redis.call('HGET', KEYS[1], f) or '')
      if delta > 0 then
        v = math.max(v or now, now) + delta * t
        redis.call('HSET', KEYS[1], f, fmt(v))
        -- Only a hash that expires gets a longer TTL (a key's hash with daily usage has none).
        local ttl = math.floor((v + MARGIN - now) / 1000) + 1
        local pttl = redis.call('PTTL', KEYS[1])
        if pttl > 0 and pttl < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
      elseif v then
        redis.call('HSET', KEYS[1], f, fmt(math.max(v + delta * t, now)))
      end
    end
    if sf ~= '' then
      local a, u, l, d = state_decode(redis.call('HGET', KEYS[1], sf))
      if d then
        local sday, dday = a, math.floor(decided / DAY)
        local qu, today = u, d
        local period = LETTER_PERIOD[l]
        if has_charge and period and period_index(period, sday * DAY) == qidx then
          if delta < 0 then lower_override(ofield, qidx, decided, math.min(-delta, qu)) end
          qu = math.max(qu + delta, 0)
        end
        if sday == dday then
          today = math.max(today + delta, 0)
        elseif hist ~= '' then
          local hf = hist .. ':' .. fmt(dday)
          local hv = tonumber(redis.call('HGET', KEYS[1], hf) or '')
          if hv or delta > 0 then redis.call('HSET', KEYS[1], hf, fmt(math.max((hv or 0) + delta, 0))) end
        end
        redis.call('HSET', KEYS[1], sf, state_daily(sday, qu, l, today))
      elseif a and has_charge and a == qidx then
        if delta < 0 then lower_override(ofield, qidx, decided, math.min(-delta, u)) end
        redis.call('HSET', KEYS[1], sf, state_quota(a, math.max(u + delta, 0)))
      end
    end
  end
  if ARGV[i + 7] == '1' then
    redis.call('DEL', KEYS[2])
  else
    redis.call('SET', KEYS[2], body .. ';' .. fmt(actual), 'KEEPTTL')
  end
end
local reply = {status, actual, now, 0, 0, 0, 0}
if qlim >= 0 and has_charge then
  reply[4], reply[5] = 1, qidx
  local used = 0
  local a, u, l, d = state_decode(redis.call('HGET', KEYS[1], sf))
  if d then
    if l == PERIOD_LETTER[qperiod] and period_index(qperiod, a * DAY) == qidx then used = u end
  elseif a and a == qidx then
    used = u
  end
  if qidx == qinit then qlim = math.max(qlim - qoff, 0) end
  local oi, ol = override_decode(redis.call('HGET', KEYS[1], ofield))
  if oi == qidx then qlim = ol end
  reply[6], reply[7] = used, qlim
end
return reply
"#;

/// The settle script: [`PERIODS`], the constants it needs, then [`SETTLE`].
pub fn settle() -> String {
    format!(
        "{PERIODS}\n{STATE}\nlocal MARGIN = {}\n{SETTLE}",
        crate::store::TTL_MARGIN_US
    )
}

/// Returns the stored creation time of a plan, storing `ARGV[1]` when there is none.
/// `KEYS[1]` `tg:plan:<id>:created_at`; `ARGV[1]` now µs.
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

/// Applies definition writes if the version is still `ARGV[1]`; bumps it and publishes.
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

/// `UpdateUsage`: sets the current period's limit to used + ARGV remaining, and stamps it
/// (`<override field>:at` = now µs; see [`REFUND`]).
/// KEYS owner hash. ARGV quota field, override field, period code, remaining, TTL margin µs,
/// largest limit (counts stay exact in doubles).
/// Reply: {period index, used, limit, now µs}.
pub const SET_REMAINING: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local p = tonumber(ARGV[3])
local idx = period_index(p, now)
local used = 0
local a, b, l, c = state_decode(redis.call('HGET', KEYS[1], ARGV[1]))
local si = nil
if c then
  if l == PERIOD_LETTER[p] then si = period_index(p, a * DAY) end
elseif a then
  si = a
end
if si == idx then used = b end
local limit = math.min(used + tonumber(ARGV[4]), tonumber(ARGV[6]))
-- The stamp: units taken before it and given back later lower this limit too (REFUND).
redis.call('HSET', KEYS[1], ARGV[2], override_encode(idx, limit), ARGV[2] .. STAMP, fmt(now))
local ttl = math.floor((period_start(p, idx + 1) + tonumber(ARGV[5]) - now) / 1000) + 1
-- Only a hash that expires gets a longer TTL: a key's hash with daily usage keeps none.
local pttl = redis.call('PTTL', KEYS[1])
if pttl ~= -1 and pttl < ttl - 1000 then redis.call('PEXPIRE', KEYS[1], ttl) end
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

/// The codec of the packed values in an owner hash, in Lua: the Rust codec is
/// [`crate::store::state`], and these functions follow it field by field (the format is
/// described there). Every script that reads or writes a plan's state or an override uses
/// them; [`with_periods`], [`check`] and [`settle`] put it after [`PERIODS`] (it needs `fmt`,
/// `DAY` and `period_index`).
pub const STATE: &str = r#"
-- Marks which period a plan's state counted (DAY, WEEK, MONTH), and back.
local PERIOD_LETTER = {'d', 'w', 'm'}
local LETTER_PERIOD = {d = 1, w = 2, m = 3}
-- A plan's state field: `<quota index>:<used>` gives index, used; `<day>:<quota used><letter>:
-- <used that day>` gives day, used, letter ('' without a quota), used that day; anything else
-- (or no value) gives nil.
local function state_decode(s)
  if not s then return nil end
  local a, u, l, d = string.match(s, '^(-?%d+):(%d+)(%a?):?(%d*)$')
  if not a then return nil end
  if d ~= '' then return tonumber(a), tonumber(u), l, tonumber(d) end
  if l == '' then return tonumber(a), tonumber(u) end
  return nil
end
-- (One `string.format` each: the check script writes a state on every call.)
local function state_quota(index, used) return string.format('%.0f:%.0f', index, used) end
local function state_daily(day, used, letter, today)
  return string.format('%.0f:%.0f%s:%.0f', day, used, letter, today)
end
-- An `UpdateUsage` override `<period index>:<limit>`: index, limit; or nil.
local function override_decode(o)
  if not o then return nil end
  local i, l = string.match(o, '^(-?%d+):(%d+)$')
  if not i then return nil end
  return tonumber(i), tonumber(l)
end
local function override_encode(index, limit) return string.format('%.0f:%.0f', index, limit) end
-- `UpdateUsage` stamps its override field `<field>:at` with the time it was set.
local STAMP = ':at'
-- Units taken at `decided` from period `qidx` go back: if an `UpdateUsage` of that period was
-- set at or after `decided`, it counted them as used, so its limit gives up as many (the
-- remaining it set is not raised by units taken before it). KEYS[1] is the owner hash.
local function lower_override(ofield, qidx, decided, units)
  if ofield == '' or units <= 0 then return end
  local at = tonumber(redis.call('HGET', KEYS[1], ofield .. STAMP) or '')
  if not at or at < decided then return end
  local oi, ol = override_decode(redis.call('HGET', KEYS[1], ofield))
  if oi == qidx then
    redis.call('HSET', KEYS[1], ofield, override_encode(oi, math.max(ol - units, 0)))
  end
end
"#;

/// [`PERIODS`] and [`STATE`] followed by `body`.
pub fn with_periods(body: &str) -> String {
    format!("{PERIODS}\n{STATE}\n{body}")
}

/// The check script: [`PERIODS`], the constants it needs, then [`CHECK`].
pub fn check() -> String {
    format!(
        "{PERIODS}\n{STATE}\nlocal MARGIN = {}\nlocal IDEM_TTL_MS = {}\n{CHECK}",
        crate::store::TTL_MARGIN_US,
        crate::store::IDEMPOTENCY_TTL_MS
    )
}

/// Stores a reservation ticket unless one is there under its id (reply 0). KEYS: the shard's
/// `due` sorted set, its `ops` hash. ARGV: ticket id, release time µs, ticket.
pub const TICKET_PUT: &str = r#"
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[3]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
"#;

/// Forgets a ticket. KEYS as [`TICKET_PUT`]; ARGV: ticket id.
pub const TICKET_REMOVE: &str = r#"
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('HDEL', KEYS[2], ARGV[1])
"#;

/// Takes the due tickets of a shard off it. KEYS as [`TICKET_PUT`]; ARGV: now µs (negative:
/// the server's `TIME`), most to take. Reply: id, ticket, id, ticket, …
pub const TICKETS_DUE: &str = r#"
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local v = redis.call('HGET', KEYS[2], id)
  if v then
    out[#out + 1] = id
    out[#out + 1] = v
  end
end
if #ids > 0 then
  redis.call('ZREM', KEYS[1], unpack(ids))
  redis.call('HDEL', KEYS[2], unpack(ids))
end
return out
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every script that touches a plan's state or an override, as loaded.
    fn loaded() -> Vec<(&'static str, String)> {
        vec![
            ("CHECK", check()),
            ("REFUND", with_periods(REFUND)),
            ("SETTLE", settle()),
            ("SET_REMAINING", with_periods(SET_REMAINING)),
        ]
    }

    #[test]
    fn the_packed_values_are_decoded_in_one_place() {
        let state_pattern = "'^(-?%d+):(%d+)(%a?):?(%d*)$'";
        let override_pattern = "'^(-?%d+):(%d+)$'";
        assert_eq!(STATE.matches(state_pattern).count(), 1);
        assert_eq!(STATE.matches(override_pattern).count(), 1);
        for (name, body) in [
            ("CHECK", CHECK),
            ("REFUND", REFUND),
            ("SETTLE", SETTLE),
            ("SET_REMAINING", SET_REMAINING),
            ("PERIODS", PERIODS),
        ] {
            assert!(
                !body.contains(state_pattern),
                "{name} decodes a plan state itself"
            );
            assert!(
                !body.contains(override_pattern),
                "{name} decodes an override itself"
            );
            assert!(!body.contains("string.match(s,"), "{name}");
        }
        for (name, script) in loaded() {
            assert_eq!(
                script.matches(STATE).count(),
                1,
                "{name} has the codec once"
            );
            assert!(
                script.find(PERIODS) < script.find(STATE),
                "{name}: the codec follows the calendar it uses"
            );
        }
    }

    #[test]
    fn the_stamp_suffix_is_the_stores() {
        let line = format!("local STAMP = '{}'", crate::store::OVERRIDE_STAMP_SUFFIX);
        assert!(STATE.contains(&line), "{line}");
    }
}
