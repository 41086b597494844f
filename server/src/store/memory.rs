//! The embedded store: all state in one process, under one lock.
//!
//! A single `parking_lot::Mutex` (never held across an await) keeps a check atomic across the
//! key's buckets, the stage-wide buckets and the quota, exactly like the Redis script does. The
//! layout mirrors Redis — hashes of fields with an expiry — so both stores keep the same TTL
//! rules, and a background sweep drops expired hashes so memory stays bounded.
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use super::{
    CheckOp, CheckOutcome, IDEMPOTENCY_TTL_MS, Store, StoreError, TTL_MARGIN_US, keys::Keys,
};
use crate::clock::Clock;
use crate::limiter::evaluate::{BucketInput, QuotaInput, QuotaState, evaluate};
use crate::limiter::quota;

/// How often the background sweep runs.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
enum Field {
    Tat(u64),
    Quota(QuotaState),
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
    plans: HashMap<String, u64>,
    auth: HashMap<String, (u64, Vec<u8>)>,
}

/// The embedded in-memory store.
pub struct MemoryStore {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl MemoryStore {
    /// A store reading time from `clock`. Inside a tokio runtime it also starts the sweep task,
    /// which ends when the store is dropped.
    pub fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
        let store = Arc::new(Self {
            clock,
            state: Mutex::new(State::default()),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak: Weak<Self> = Arc::downgrade(&store);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(SWEEP_INTERVAL);
                loop {
                    tick.tick().await;
                    let Some(s) = weak.upgrade() else { break };
                    let now = s.clock.now_micros();
                    s.sweep(now);
                }
            });
        }
        store
    }

    /// Drops every hash and record that expired at `now` (µs).
    pub fn sweep(&self, now: u64) {
        let mut st = self.state.lock();
        st.hashes.retain(|_, h| h.expires_at > now);
        st.records.retain(|_, (exp, _)| *exp > now);
        st.auth.retain(|_, (exp, _)| *exp > now);
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
                h.fields.insert(q.field.clone(), Field::Quota(s));
                h.expires_at = h.expires_at.max(end + TTL_MARGIN_US);
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
            st.records
                .insert(rk, (now + IDEMPOTENCY_TTL_MS * 1000, out.clone()));
        }
        out
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

impl Store for MemoryStore {
    async fn check(&self, op: &CheckOp) -> Result<CheckOutcome, StoreError> {
        Ok(self.check_locked(op))
    }

    async fn plan_created_at(&self, plan_id: &str, now_us: u64) -> Result<u64, StoreError> {
        Ok(*self
            .state
            .lock()
            .plans
            .entry(plan_id.to_string())
            .or_insert(now_us))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

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
}
