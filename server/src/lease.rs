//! Local leases for hot keys (`usage_plans[].local_lease`, opt-in; DESIGN §6's exact path is
//! the default).
//!
//! A key at tens of thousands of requests per second would make every instance call the one
//! Redis shard that holds its slot for every request. With a lease, an instance charges the
//! key's buckets and quota for `cost + units` in one store call (the same atomic script: the
//! units are counted in Redis at once) and admits that key's next requests from the units it
//! holds, with no store call, until they are spent or `max_age` passes; what is left then goes
//! back to the store ([`crate::store::AnyStore::release`]).
//!
//! What it costs in exactness (docs/guides/redis-cluster-sentinel.md, "Hot keys"):
//! - Never beyond a quota: leased units are already counted in the store.
//! - A bucket's shape: units taken at one moment are spent a little later, so in any window at
//!   most `units` × instances requests more than the bucket's own schedule pass.
//! - Units one instance holds are missing to the others until spent or given back (at most
//!   `max_age`): a key spread thinly over many instances may be denied a little early.
//!
//! Near a limit a batch is denied where a single request would pass: the lease then stands
//! aside for `max_age` and every check of that key is exact again. Idempotent requests
//! (`request_id`) and dry runs always go to the store.
//!
//! Revocation: a lease is kept with the owner's invalidation stamp ([`crate::stamps`]) read
//! before the call that granted it. Once an `UpdateUsage` (or a reset) of the key is seen, the
//! stamp moves on and the lease admits nothing more: its units go back (the store keeps the
//! remaining the UpdateUsage set — units taken before it do not raise it) and the next check
//! asks the store.
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::LocalLeaseConfig;
use crate::limiter::Verdict;
use crate::stamps::Stamps;
use crate::store::{AnyStore, CheckOp, CheckOutcome};

/// Most leases kept (one per hot key and route shape); the least recently used go first.
pub const MAX_LEASES: u64 = 100_000;

/// How often expired leases are given back.
pub const SWEEP_EVERY: Duration = Duration::from_millis(200);

/// One lease: units taken from the store and not spent yet.
#[derive(Default)]
pub struct Lease {
    units: u64,
    until: Option<Instant>,
    /// The op that took the units and the store's answer to it.
    grant: Option<(CheckOp, CheckOutcome, Instant)>,
    /// A batch was denied (the key is near a limit): exact checks until then.
    no_batch_until: Option<Instant>,
    /// The owner's invalidation stamp before the grant's store call.
    stamp: u64,
}

impl Lease {
    /// Spends `cost` units if the lease holds them and is still valid.
    fn spend(&mut self, cost: u64, now: Instant) -> Option<CheckOutcome> {
        if self.units < cost || self.until.is_none_or(|t| now >= t) {
            return None;
        }
        self.units -= cost;
        let (op, out, at) = self.grant.as_ref()?;
        Some(view(op, out, self.units, *at, now))
    }

    /// The units left when the lease has expired (and forgets them): to give back.
    fn take_expired(&mut self, now: Instant) -> Option<(CheckOp, CheckOutcome, u64)> {
        if self.until.is_some_and(|t| now < t) {
            return None;
        }
        self.take_rest()
    }

    /// The units left (and forgets them): to give back.
    fn take_rest(&mut self) -> Option<(CheckOp, CheckOutcome, u64)> {
        if self.units == 0 {
            return None;
        }
        let units = std::mem::take(&mut self.units);
        let (op, out, _) = self.grant.as_ref()?;
        Some((op.clone(), out.clone(), units))
    }
}

/// What a check answered from a lease reports: the store's answer to the lease call, with the
/// units still held counted as available (they are this instance's to admit).
fn view(op: &CheckOp, grant: &CheckOutcome, left: u64, at: Instant, now: Instant) -> CheckOutcome {
    let mut out = grant.clone();
    for (r, b) in out.remaining.iter_mut().zip(&op.buckets) {
        *r = (*r + left).min(u64::from(b.limit.burst()));
    }
    if let Some(q) = &mut out.quota {
        q.used = q.used.saturating_sub(left);
    }
    out.now_us += now.saturating_duration_since(at).as_micros() as u64;
    out
}

/// Leases by key and route shape.
pub struct Leases {
    map: moka::sync::Cache<Arc<str>, Arc<tokio::sync::Mutex<Lease>>>,
    stamps: Arc<Stamps>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("entries", &self.map.entry_count())
            .finish()
    }
}

impl Leases {
    /// Leases whose unspent units go back to `store` (also when an entry is evicted), and
    /// that admit nothing once `stamps` say their owner was invalidated.
    pub fn new(store: AnyStore, stamps: Arc<Stamps>) -> Self {
        let map = moka::sync::Cache::builder()
            .max_capacity(MAX_LEASES)
            .eviction_listener(move |_, lease: Arc<tokio::sync::Mutex<Lease>>, _| {
                if let Ok(mut lease) = lease.try_lock()
                    && let Some(back) = lease.take_rest()
                {
                    give_back(&store, back);
                }
            })
            .build();
        Self { map, stamps }
    }
}

/// What a lease answered, or why the caller must ask the store itself.
pub enum Leased {
    /// Admitted from the lease.
    Spent(CheckOutcome),
    /// The store's answer to a lease call (admitted; the lease now holds units).
    Granted(CheckOutcome),
    /// Check exactly (no lease, or a batch was refused).
    Exact,
}

impl Leases {
    /// The lease for `op`'s owner and buckets.
    fn entry(&self, op: &CheckOp) -> Arc<tokio::sync::Mutex<Lease>> {
        let mut key = String::with_capacity(op.owner.len() + 16 * op.buckets.len());
        key.push_str(&op.owner);
        for b in &op.buckets {
            key.push('|');
            key.push_str(&b.hash);
            key.push(' ');
            key.push_str(&b.field);
        }
        if let Some(q) = &op.quota {
            key.push('|');
            key.push_str(&q.field);
        }
        self.map.get_with(key.into(), Default::default)
    }

    /// Answers `op` from its lease, or takes a new lease through `call` (the store call with
    /// the given op) — one caller at a time per lease; the others wait for its units.
    pub async fn check<F, Fut>(
        &self,
        op: &CheckOp,
        cfg: &LocalLeaseConfig,
        store: &AnyStore,
        call: F,
    ) -> Result<Leased, crate::store::StoreError>
    where
        F: FnOnce(CheckOp) -> Fut,
        Fut: std::future::Future<Output = Result<CheckOutcome, crate::store::StoreError>>,
    {
        let entry = self.entry(op);
        let mut lease = entry.lock().await;
        let now = Instant::now();
        // Read before the grant's store call below, like the over-limit cache does.
        let stamp = self.stamps.of(&op.owner);
        if lease.stamp == stamp
            && let Some(out) = lease.spend(op.cost, now)
        {
            return Ok(Leased::Spent(out));
        }
        // Expired, or too few for this cost: what is left goes back before a new grant.
        if let Some(back) = lease.take_rest() {
            give_back(store, back);
        }
        // A batch larger than a bucket's burst could never pass.
        let headroom = op
            .buckets
            .iter()
            .map(|b| u64::from(b.limit.burst()))
            .min()
            .unwrap_or(u64::MAX)
            .saturating_sub(op.cost);
        let units = cfg.units.min(headroom);
        if units == 0 || lease.no_batch_until.is_some_and(|t| now < t) {
            return Ok(Leased::Exact);
        }
        let mut batch = op.clone();
        batch.cost = op.cost + units;
        let out = match call(batch.clone()).await {
            Ok(out) => out,
            Err(e) => {
                // A slow or failing store: the next checks of this key go exact (each bounded
                // by the store deadline) instead of queueing for batches. A batch whose answer
                // was lost may have been charged; those units are not given back.
                lease.no_batch_until = Some(now + cfg.max_age);
                return Err(e);
            }
        };
        if out.verdict != Verdict::Allowed {
            lease.no_batch_until = Some(now + cfg.max_age);
            return Ok(Leased::Exact);
        }
        let at = Instant::now();
        let answer = view(&batch, &out, units, at, at);
        lease.units = units;
        lease.until = Some(now + cfg.max_age);
        lease.no_batch_until = None;
        lease.stamp = stamp;
        batch.cost = 1;
        lease.grant = Some((batch, out, at));
        Ok(Leased::Granted(answer))
    }

    /// Gives back what expired leases still hold.
    pub fn sweep(&self, store: &AnyStore) {
        let now = Instant::now();
        for (_, entry) in self.map.iter() {
            if let Ok(mut lease) = entry.try_lock()
                && let Some(back) = lease.take_expired(now)
            {
                give_back(store, back);
            }
        }
    }

    /// Units held by all leases (tests, metrics).
    pub fn units_held(&self) -> u64 {
        self.map
            .iter()
            .filter_map(|(_, e)| e.try_lock().ok().map(|l| l.units))
            .sum()
    }
}

fn give_back(store: &AnyStore, (op, out, units): (CheckOp, CheckOutcome, u64)) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(units, "no runtime to give back a lease's unspent units");
        return;
    };
    let store = store.clone();
    crate::metrics::lease_returned(units);
    rt.spawn(async move {
        if let Err(e) = store.release(&op, units, &out).await {
            tracing::warn!(error = %e, units, "could not give back a lease's unspent units");
        }
    });
}
