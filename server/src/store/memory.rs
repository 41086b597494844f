//! The embedded store: all state in one process, under one lock.
//!
//! A single `parking_lot::Mutex` (never held across an await) keeps a check atomic across the
//! key's buckets, the stage-wide buckets and the quota, exactly like the Redis script does. The
//! layout mirrors Redis — hashes of fields with an expiry — so both stores keep the same TTL
//! rules, and a background sweep drops expired hashes so memory stays bounded.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use super::{
    CacheStore, CheckOp, CheckOutcome, DefKind, DefWrite, DefsStore, EventStore,
    IDEMPOTENCY_TTL_MS, OwnerState, QuotaOp, RateStore, RawDefs, SettleOutcome, SettleStatus,
    StoreError, StoreEvent, TTL_MARGIN_US, TicketStore, UsageStore, keys::Keys, state, ticket,
};
use crate::clock::Clock;
use crate::limiter::evaluate::QuotaReport;
use crate::limiter::evaluate::{BucketInput, QuotaInput, QuotaState, evaluate};
use crate::limiter::quota;

/// How often the background sweep runs.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
enum Field {
    Tat(u64),
    Quota(QuotaState),
    /// `UpdateUsage`: (period index, limit).
    Override(i64, u64),
    /// When the `UpdateUsage` override next to it was set (µs; see
    /// [`super::OVERRIDE_STAMP_SUFFIX`]).
    Stamp(u64),
}

impl Field {
    /// The value as the Redis store writes it ([`state`]'s codec).
    fn render(&self) -> String {
        match *self {
            Field::Tat(t) | Field::Stamp(t) => state::encode_us(t),
            Field::Quota(q) => state::PlanState::Quota {
                index: q.index,
                used: q.used,
            }
            .encode(),
            Field::Override(index, limit) => state::Override { index, limit }.encode(),
        }
    }
}

const DAY_US: u64 = 86_400_000_000;

/// One usage base: retention in days and used units per day.
#[derive(Debug, Default)]
struct Usage {
    retention_days: u64,
    days: BTreeMap<i64, u64>,
}

#[derive(Debug, Default)]
struct Hash {
    fields: HashMap<String, Field>,
    expires_at: u64,
}

#[derive(Default)]
struct State {
    hashes: HashMap<Arc<str>, Hash>,
    records: HashMap<String, (u64, CheckOutcome)>,
    /// Record key → the actual cost its reservation was settled with (`ReportUsage`); goes
    /// with its record.
    settled: HashMap<String, u64>,
    plans: HashMap<String, u64>,
    auth: HashMap<String, (u64, Vec<u8>)>,
    defs_version: u64,
    defs_plans: BTreeMap<String, String>,
    defs_keys: BTreeMap<String, String>,
    /// (owner, usage history name) → days.
    usage: HashMap<(Arc<str>, Arc<str>), Usage>,
    /// Reservation tickets: id → (release time µs, op), and the same by release time.
    tickets: HashMap<String, (u64, CheckOp)>,
    tickets_due: BTreeSet<(u64, String)>,
}

/// The embedded in-memory store.
pub struct MemoryStore {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    events: tokio::sync::broadcast::Sender<StoreEvent>,
}

impl MemoryStore {
    /// A store reading time from `clock`, with no background task: expired state is dropped
    /// when [`sweep`](Self::sweep) is called (tests), or see [`with_sweeper`](Self::with_sweeper).
    pub fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            clock,
            state: Mutex::new(State::default()),
            events: tokio::sync::broadcast::channel(64).0,
        })
    }

    /// A store reading time from `clock` that sweeps expired state every [`SWEEP_INTERVAL`] on
    /// `tasks` (until they are shut down or the store is dropped). Must be called within a
    /// tokio runtime.
    pub fn with_sweeper(clock: Arc<dyn Clock>, tasks: &crate::tasks::Tasks) -> Arc<Self> {
        let store = Self::new(clock);
        let weak: Weak<Self> = Arc::downgrade(&store);
        tasks.spawn("memory store sweep", async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                let Some(s) = weak.upgrade() else { break };
                let now = s.clock.now_micros();
                s.sweep(now);
            }
        });
        store
    }

    /// Drops every hash and record that expired at `now` (µs).
    pub fn sweep(&self, now: u64) {
        let mut st = self.state.lock();
        st.hashes.retain(|_, h| h.expires_at > now);
        st.records.retain(|_, (exp, _)| *exp > now);
        let State {
            records, settled, ..
        } = &mut *st;
        settled.retain(|k, _| records.contains_key(k));
        st.auth.retain(|_, (exp, _)| *exp > now);
        // A day of usage is kept for the retention after it ends, at least 32 days (Redis
        // deletes it on the key's first check after that).
        st.usage.retain(|_, u| {
            let retention = u.retention_days.max(32) * DAY_US;
            u.days
                .retain(|d, _| (*d as u64 + 1) * DAY_US + retention > now);
            !u.days.is_empty()
        });
    }

    /// Number of live hashes plus records (for tests of boundedness).
    pub fn len(&self) -> usize {
        let st = self.state.lock();
        st.hashes.len() + st.records.len()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check_locked(&self, op: &CheckOp) -> CheckOutcome {
        // Lock first, then read the clock: decisions are ordered as their times are.
        let mut st = self.state.lock();
        let now = op.now.unwrap_or_else(|| self.clock.now_micros());
        let record_key = op
            .request_id
            .as_deref()
            .map(|r| Keys::idempotency(&op.owner, r));
        if let Some(rk) = &record_key
            && let Some((exp, out)) = st.records.get(rk)
            && *exp > now
        {
            let mut out = out.clone();
            out.replayed = true;
            // The wait counts from the first answer, not from the replay.
            out.retry_after_us = out
                .retry_after_us
                .map(|r| (out.now_us + r).saturating_sub(now));
            out.now_us = now;
            return out;
        }
        let live = |st: &State, hash: &str, field: &str| -> Option<Field> {
            st.hashes
                .get(hash)
                .filter(|h| h.expires_at > now)
                .and_then(|h| h.fields.get(field).copied())
        };
        let buckets: Vec<BucketInput> = op
            .buckets
            .iter()
            .map(|b| BucketInput {
                limit: b.limit,
                tat: match live(&st, &b.hash, &b.field) {
                    Some(Field::Tat(t)) => Some(t),
                    _ => None,
                },
            })
            .collect();
        let quota = op.quota.as_ref().map(|q| QuotaInput {
            limit: q.limit,
            offset: q.offset,
            period: q.period,
            initial_index: q.initial_index,
            state: match live(&st, &op.owner, &q.field) {
                Some(Field::Quota(s)) => Some(s),
                _ => None,
            },
            override_limit: match live(&st, &op.owner, &q.override_field) {
                Some(Field::Override(i, l)) => Some((i, l)),
                _ => None,
            },
        });
        let r = evaluate(&buckets, quota.as_ref(), now, op.cost);
        if r.allowed() && !op.dry_run {
            for (b, &tat) in op.buckets.iter().zip(&r.new_tats) {
                let h = hash_mut(&mut st, &b.hash, now);
                h.fields.insert(b.field.clone(), Field::Tat(tat));
                h.expires_at = h.expires_at.max(tat + TTL_MARGIN_US);
            }
            if let (Some(q), Some(s)) = (&op.quota, r.new_quota) {
                let end = quota::period_end(q.period, s.index).max(0) as u64;
                let h = hash_mut(&mut st, &op.owner, now);
                h.fields.insert(q.field.to_string(), Field::Quota(s));
                h.expires_at = h.expires_at.max(end + TTL_MARGIN_US);
            }
            if let Some(u) = &op.usage {
                let usage = st
                    .usage
                    .entry((op.owner.clone(), u.history.clone()))
                    .or_default();
                usage.retention_days = u.retention_days;
                *usage.days.entry((now / DAY_US) as i64).or_default() += op.cost;
            }
        }
        let out = CheckOutcome {
            verdict: r.verdict,
            retry_after_us: r.retry_after_us,
            remaining: r.remaining,
            quota: r.quota,
            now_us: now,
            replayed: false,
        };
        if let (Some(rk), false) = (record_key, op.dry_run) {
            st.settled.remove(&rk);
            st.records
                .insert(rk, (now + IDEMPOTENCY_TTL_MS * 1000, out.clone()));
        }
        out
    }

    /// [`RateStore::settle`]: the same steps as the Redis SETTLE script, under the lock.
    /// `expire`: a release at the TTL (actual 0; the record goes).
    fn settle_locked(&self, op: &CheckOp, actual: u64, expire: bool) -> SettleOutcome {
        let mut st = self.state.lock();
        let now = op.now.unwrap_or_else(|| self.clock.now_micros());
        let none = SettleOutcome {
            status: SettleStatus::NoReservation,
            actual: 0,
            quota: None,
            now_us: now,
        };
        let Some(rk) = op
            .request_id
            .as_deref()
            .map(|r| Keys::idempotency(&op.owner, r))
        else {
            return none;
        };
        let decided = match st.records.get(&rk) {
            Some((exp, out)) if *exp > now && out.verdict == crate::limiter::Verdict::Allowed => {
                out.clone()
            }
            _ => return none,
        };
        let (status, actual) = match st.settled.get(&rk) {
            Some(&first) => (SettleStatus::AlreadySettled, first),
            None => (SettleStatus::Settled, actual),
        };
        let charged = decided.quota.map(|q| q.index);
        if status == SettleStatus::Settled {
            let (up, units) = if actual >= op.cost {
                (true, actual - op.cost)
            } else {
                (false, op.cost - actual)
            };
            let adjust = |v: u64| {
                if up {
                    v.saturating_add(units)
                } else {
                    v.saturating_sub(units)
                }
            };
            if units > 0 {
                // Buckets in the owner hash only (the owner's slot on Redis).
                for b in op.buckets.iter().filter(|b| b.hash == op.owner) {
                    let Some(h) = st.hashes.get_mut(&op.owner).filter(|h| h.expires_at > now)
                    else {
                        break;
                    };
                    let t = b.limit.interval_us();
                    let tat = match (h.fields.get(&b.field), up) {
                        (Some(Field::Tat(tat)), true) => (*tat).max(now) + units * t,
                        (None, true) => now + units * t,
                        (Some(Field::Tat(tat)), false) => tat.saturating_sub(units * t).max(now),
                        _ => continue,
                    };
                    h.fields.insert(b.field.clone(), Field::Tat(tat));
                    h.expires_at = h.expires_at.max(tat + TTL_MARGIN_US);
                }
                if let (Some(q), Some(idx)) = (&op.quota, charged)
                    && let Some(h) = st.hashes.get_mut(&op.owner).filter(|h| h.expires_at > now)
                    && let Some(Field::Quota(s)) = h.fields.get_mut(&*q.field)
                    && s.index == idx
                {
                    let before = s.used;
                    s.used = adjust(s.used);
                    // Units decided before an `UpdateUsage` of this period were counted in
                    // the limit it set: they come off that limit too (as the Redis SETTLE).
                    let back = before.saturating_sub(s.used);
                    let stamp = Keys::override_stamp_field(&q.override_field);
                    if back > 0
                        && let Some(Field::Stamp(at)) = h.fields.get(&stamp)
                        && *at >= decided.now_us
                        && let Some(Field::Override(i, l)) = h.fields.get_mut(&*q.override_field)
                        && *i == idx
                    {
                        *l = l.saturating_sub(back);
                    }
                }
                if let Some(u) = &op.usage
                    && let Some(usage) = st.usage.get_mut(&(op.owner.clone(), u.history.clone()))
                {
                    let day = (decided.now_us / DAY_US) as i64;
                    let d = usage.days.entry(day).or_default();
                    *d = adjust(*d);
                }
            }
            if expire {
                st.records.remove(&rk);
            } else {
                st.settled.insert(rk, actual);
            }
        }
        let quota = match (&op.quota, charged) {
            (Some(q), Some(index)) => {
                let live = st.hashes.get(&op.owner).filter(|h| h.expires_at > now);
                let used = match live.and_then(|h| h.fields.get(&*q.field)) {
                    Some(Field::Quota(s)) if s.index == index => s.used,
                    _ => 0,
                };
                let limit = match live.and_then(|h| h.fields.get(&*q.override_field)) {
                    Some(Field::Override(i, l)) if *i == index => *l,
                    _ => quota::effective_limit(q.limit, q.offset, index, q.initial_index),
                };
                Some(QuotaReport { index, used, limit })
            }
            _ => None,
        };
        SettleOutcome {
            status,
            actual,
            quota,
            now_us: now,
        }
    }
}

/// The hash at `key`, created (or reset, if expired) as needed.
fn hash_mut<'a>(st: &'a mut State, key: &Arc<str>, now: u64) -> &'a mut Hash {
    let h = st.hashes.entry(key.clone()).or_default();
    if h.expires_at <= now {
        *h = Hash::default();
    }
    h
}

impl RateStore for MemoryStore {
    async fn check(&self, op: &CheckOp) -> Result<CheckOutcome, StoreError> {
        Ok(self.check_locked(op))
    }

    async fn settle(&self, op: &CheckOp, actual: u64) -> Result<SettleOutcome, StoreError> {
        let out = self.settle_locked(op, actual, false);
        if out.status == SettleStatus::Settled && actual < op.cost {
            let _ = self.events.send(StoreEvent::Usage(op.owner.to_string()));
        }
        Ok(out)
    }

    async fn release_reservation(&self, op: &CheckOp) -> Result<SettleOutcome, StoreError> {
        let out = self.settle_locked(op, 0, true);
        if out.status == SettleStatus::Settled {
            let _ = self.events.send(StoreEvent::Usage(op.owner.to_string()));
        }
        Ok(out)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl TicketStore for MemoryStore {
    async fn ticket_put(
        &self,
        id: &str,
        op: &CheckOp,
        release_at_us: u64,
    ) -> Result<bool, StoreError> {
        let mut st = self.state.lock();
        if st.tickets.contains_key(id) {
            return Ok(false);
        }
        if st.tickets.len() >= ticket::MAX_MEMORY_TICKETS {
            return Err(StoreError::backend(format!(
                "{} reservations are pending: no room for another ticket",
                ticket::MAX_MEMORY_TICKETS
            )));
        }
        let mut op = op.clone();
        op.now = None;
        op.dry_run = false;
        st.tickets.insert(id.to_string(), (release_at_us, op));
        st.tickets_due.insert((release_at_us, id.to_string()));
        Ok(true)
    }

    async fn ticket_get(&self, id: &str) -> Result<Option<CheckOp>, StoreError> {
        Ok(self.state.lock().tickets.get(id).map(|(_, op)| op.clone()))
    }

    async fn ticket_remove(&self, id: &str) -> Result<(), StoreError> {
        let mut st = self.state.lock();
        if let Some((at, _)) = st.tickets.remove(id) {
            st.tickets_due.remove(&(at, id.to_string()));
        }
        Ok(())
    }

    async fn tickets_due(&self, now_us: Option<u64>) -> Result<Vec<(String, CheckOp)>, StoreError> {
        let mut st = self.state.lock();
        let now = now_us.unwrap_or_else(|| self.clock.now_micros());
        let batch = ticket::DUE_BATCH * ticket::SHARDS as usize;
        let mut ops = Vec::new();
        while ops.len() < batch {
            match st.tickets_due.first() {
                Some((at, _)) if *at <= now => {}
                _ => break,
            }
            let Some((_, id)) = st.tickets_due.pop_first() else {
                break;
            };
            if let Some((_, op)) = st.tickets.remove(&id) {
                ops.push((id, op));
            }
        }
        Ok(ops)
    }
}

impl DefsStore for MemoryStore {
    async fn defs_load(&self) -> Result<RawDefs, StoreError> {
        let st = self.state.lock();
        let pairs = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        Ok(RawDefs {
            version: st.defs_version,
            plans: pairs(&st.defs_plans),
            keys: pairs(&st.defs_keys),
        })
    }

    async fn defs_version(&self) -> Result<u64, StoreError> {
        Ok(self.state.lock().defs_version)
    }

    async fn defs_write(
        &self,
        expected: u64,
        writes: &[DefWrite],
    ) -> Result<Option<u64>, StoreError> {
        let version = {
            let mut st = self.state.lock();
            if st.defs_version != expected {
                return Ok(None);
            }
            for w in writes {
                let map = match w.kind {
                    DefKind::Plan => &mut st.defs_plans,
                    DefKind::Key => &mut st.defs_keys,
                };
                match &w.json {
                    Some(j) => {
                        map.insert(w.id.clone(), j.clone());
                    }
                    None => {
                        map.remove(&w.id);
                    }
                }
            }
            st.defs_version += 1;
            st.defs_version
        };
        let _ = self.events.send(StoreEvent::Definitions);
        Ok(Some(version))
    }

    async fn plan_created_at(&self, plan_id: &str, now_us: u64) -> Result<u64, StoreError> {
        Ok(*self
            .state
            .lock()
            .plans
            .entry(plan_id.to_string())
            .or_insert(now_us))
    }
}

impl EventStore for MemoryStore {
    fn events(&self) -> tokio::sync::broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }
}

impl UsageStore for MemoryStore {
    async fn usage_read(
        &self,
        owner: &str,
        plan_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        let st = self.state.lock();
        Ok(st
            .usage
            .get(&(owner.into(), Keys::usage_history(plan_id).into()))
            .map(|u| u.days.range(from..=to).map(|(d, n)| (*d, *n)).collect())
            .unwrap_or_default())
    }

    async fn quota_set_remaining(
        &self,
        owner: &str,
        quota: &QuotaOp,
        remaining: u64,
    ) -> Result<(QuotaReport, u64), StoreError> {
        let mut st = self.state.lock();
        let now = self.clock.now_micros();
        let index = quota::period_index(quota.period, now);
        let owner: Arc<str> = owner.into();
        let used = match st
            .hashes
            .get(&owner)
            .filter(|h| h.expires_at > now)
            .and_then(|h| h.fields.get(&*quota.field))
        {
            Some(Field::Quota(s)) if s.index == index => s.used,
            _ => 0,
        };
        let limit = used
            .saturating_add(remaining)
            .min(crate::limiter::quota::MAX_QUOTA_LIMIT);
        let end = quota::period_end(quota.period, index).max(0) as u64;
        let h = hash_mut(&mut st, &owner, now);
        h.fields.insert(
            quota.override_field.to_string(),
            Field::Override(index, limit),
        );
        h.fields.insert(
            Keys::override_stamp_field(&quota.override_field),
            Field::Stamp(now),
        );
        h.expires_at = h.expires_at.max(end + TTL_MARGIN_US);
        drop(st);
        let _ = self.events.send(StoreEvent::Usage(owner.to_string()));
        Ok((QuotaReport { index, used, limit }, now))
    }

    async fn owner_state(&self, owner: &str) -> Result<OwnerState, StoreError> {
        let st = self.state.lock();
        let now = self.clock.now_micros();
        Ok(OwnerState {
            now_us: now,
            fields: st
                .hashes
                .get(owner)
                .filter(|h| h.expires_at > now)
                .map(|h| {
                    h.fields
                        .iter()
                        .map(|(k, v)| (k.clone(), v.render()))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    async fn owner_clear(&self, owner: &str) -> Result<(), StoreError> {
        let mut st = self.state.lock();
        st.hashes.remove(owner);
        st.usage.retain(|(o, _), _| &**o != owner);
        drop(st);
        let _ = self.events.send(StoreEvent::Usage(owner.to_string()));
        Ok(())
    }
}

impl CacheStore for MemoryStore {
    async fn auth_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = self.clock.now_micros();
        Ok(self
            .state
            .lock()
            .auth
            .get(key)
            .filter(|(exp, _)| *exp > now)
            .map(|(_, v)| v.clone()))
    }

    async fn auth_put(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StoreError> {
        let exp = self.clock.now_micros() + ttl_ms * 1000;
        self.state
            .lock()
            .auth
            .insert(key.to_string(), (exp, value.to_vec()));
        Ok(())
    }

    async fn auth_flush(&self, prefix: &str, authorizer: &str) -> Result<u64, StoreError> {
        let removed = {
            let mut st = self.state.lock();
            let before = st.auth.len();
            st.auth.retain(|k, _| !k.starts_with(prefix));
            (before - st.auth.len()) as u64
        };
        let _ = self
            .events
            .send(StoreEvent::AuthFlush(authorizer.to_string()));
        Ok(removed)
    }
}
