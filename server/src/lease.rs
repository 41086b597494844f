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
//!
//! Owns: the leases (units held, their deadlines, giving back what is left). Times come from
//! the injected [`Clock`]'s monotonic time, so tests move time with a
//! [`crate::clock::FakeClock`]; give-backs run on the owner's [`Tasks`] set.
//! Must not import: `pipeline`, `api`, `registry` (the checker calls in; nothing here calls
//! back up).
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::LocalLeaseConfig;
use crate::limiter::Verdict;
use crate::stamps::Stamps;
use crate::store::{AnyStore, CheckOp, CheckOutcome};
use crate::tasks::Tasks;

/// Most leases kept (one per hot key and route shape); the least recently used go first.
pub const MAX_LEASES: u64 = 100_000;

/// How often expired leases are given back.
pub const SWEEP_EVERY: Duration = Duration::from_millis(200);

/// One lease: units taken from the store and not spent yet. Times are the clock's monotonic
/// time ([`Clock::monotonic`]).
#[derive(Default)]
pub struct Lease {
    units: u64,
    until: Option<Duration>,
    /// The op that took the units and the store's answer to it.
    grant: Option<(CheckOp, CheckOutcome, Duration)>,
    /// A batch was denied (the key is near a limit): exact checks until then.
    no_batch_until: Option<Duration>,
    /// The owner's invalidation stamp before the grant's store call.
    stamp: u64,
}

impl Lease {
    /// Spends `cost` units if the lease holds them and is still valid.
    fn spend(&mut self, cost: u64, now: Duration) -> Option<CheckOutcome> {
        if self.units < cost || self.until.is_none_or(|t| now >= t) {
            return None;
        }
        self.units -= cost;
        let (op, out, at) = self.grant.as_ref()?;
        Some(view(op, out, self.units, *at, now))
    }

    /// The units left when the lease has expired (and forgets them): to give back.
    fn take_expired(&mut self, now: Duration) -> Option<(CheckOp, CheckOutcome, u64)> {
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
fn view(
    op: &CheckOp,
    grant: &CheckOutcome,
    left: u64,
    at: Duration,
    now: Duration,
) -> CheckOutcome {
    let mut out = grant.clone();
    for (r, b) in out.remaining.iter_mut().zip(&op.buckets) {
        *r = (*r + left).min(u64::from(b.limit.burst()));
    }
    if let Some(q) = &mut out.quota {
        q.used = q.used.saturating_sub(left);
    }
    out.now_us += now.saturating_sub(at).as_micros() as u64;
    out
}

/// Leases by key and route shape.
pub struct Leases {
    map: moka::sync::Cache<Arc<str>, Arc<tokio::sync::Mutex<Lease>>>,
    stamps: Arc<Stamps>,
    clock: Arc<dyn Clock>,
    tasks: Tasks,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("entries", &self.map.entry_count())
            .finish()
    }
}

impl Leases {
    /// Leases whose unspent units go back to `store` (also when an entry is evicted) on
    /// `tasks`, that admit nothing once `stamps` say their owner was invalidated, and that
    /// expire as `clock`'s monotonic time tells.
    pub fn new(store: AnyStore, stamps: Arc<Stamps>, clock: Arc<dyn Clock>, tasks: Tasks) -> Self {
        let on_evict = tasks.clone();
        let map = moka::sync::Cache::builder()
            .max_capacity(MAX_LEASES)
            .eviction_listener(move |_, lease: Arc<tokio::sync::Mutex<Lease>>, _| {
                if let Ok(mut lease) = lease.try_lock()
                    && let Some(back) = lease.take_rest()
                {
                    give_back(&on_evict, &store, back);
                }
            })
            .build();
        Self {
            map,
            stamps,
            clock,
            tasks,
        }
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
        let now = self.clock.monotonic();
        // Read before the grant's store call below, like the over-limit cache does.
        let stamp = self.stamps.of(&op.owner);
        if lease.stamp == stamp
            && let Some(out) = lease.spend(op.cost, now)
        {
            return Ok(Leased::Spent(out));
        }
        // Expired, or too few for this cost: what is left goes back before a new grant.
        if let Some(back) = lease.take_rest() {
            give_back(&self.tasks, store, back);
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
        let at = self.clock.monotonic();
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
        let now = self.clock.monotonic();
        for (_, entry) in self.map.iter() {
            if let Ok(mut lease) = entry.try_lock()
                && let Some(back) = lease.take_expired(now)
            {
                give_back(&self.tasks, store, back);
            }
        }
    }

    /// Gives back what every lease still holds, expired or not, and waits for the store's
    /// answers (shutdown: units held by an instance that stops would be missing to the others
    /// until their period ends). Returns the units given back.
    pub async fn give_back_all(&self, store: &AnyStore) -> u64 {
        let entries: Vec<_> = self.map.iter().map(|(_, e)| e).collect();
        let mut backs = Vec::new();
        for entry in entries {
            if let Some(back) = entry.lock().await.take_rest() {
                backs.push(back);
            }
        }
        let given = futures_util::future::join_all(backs.into_iter().map(|(op, out, units)| {
            crate::metrics::lease_returned(units);
            async move {
                match store.release(&op, units, &out).await {
                    Ok(()) => units,
                    Err(e) => {
                        tracing::warn!(error = %e, units, "could not give back a lease's unspent units");
                        0
                    }
                }
            }
        }))
        .await;
        given.into_iter().sum()
    }

    /// Units held by all leases (tests, metrics).
    pub fn units_held(&self) -> u64 {
        self.map
            .iter()
            .filter_map(|(_, e)| e.try_lock().ok().map(|l| l.units))
            .sum()
    }
}

fn give_back(tasks: &Tasks, store: &AnyStore, (op, out, units): (CheckOp, CheckOutcome, u64)) {
    if tokio::runtime::Handle::try_current().is_err() {
        tracing::warn!(units, "no runtime to give back a lease's unspent units");
        return;
    }
    let store = store.clone();
    crate::metrics::lease_returned(units);
    tasks.spawn("lease give-back", async move {
        if let Err(e) = store.release(&op, units, &out).await {
            tracing::warn!(error = %e, units, "could not give back a lease's unspent units");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::limiter::Limit;
    use crate::store::BucketOp;
    use std::sync::atomic::{AtomicU64, Ordering};

    const MAX_AGE: Duration = Duration::from_secs(1);

    fn leases(clock: &FakeClock) -> (Leases, AnyStore, Tasks) {
        let tasks = Tasks::new("test");
        let store = AnyStore::Memory(crate::store::memory::MemoryStore::new(Arc::new(
            clock.clone(),
        )));
        let leases = Leases::new(
            store.clone(),
            Arc::default(),
            Arc::new(clock.clone()),
            tasks.clone(),
        );
        (leases, store, tasks)
    }

    fn op() -> CheckOp {
        CheckOp {
            owner: "k:1".into(),
            buckets: vec![BucketOp {
                hash: "k:1".into(),
                field: "b".into(),
                limit: Limit::try_new(100.0, 100).unwrap(),
            }],
            quota: None,
            cost: 1,
            now: None,
            request_id: None,
            dry_run: false,
            usage: None,
            lease: None,
        }
    }

    fn cfg(units: u64) -> LocalLeaseConfig {
        LocalLeaseConfig {
            units,
            max_age: MAX_AGE,
        }
    }

    /// A store that admits everything and counts its calls.
    async fn admit(
        calls: &AtomicU64,
        _: CheckOp,
    ) -> Result<CheckOutcome, crate::store::StoreError> {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(CheckOutcome {
            verdict: Verdict::Allowed,
            retry_after_us: None,
            remaining: vec![50],
            quota: None,
            now_us: 1,
            replayed: false,
        })
    }

    async fn check(l: &Leases, store: &AnyStore, units: u64, calls: &AtomicU64) -> &'static str {
        match l
            .check(&op(), &cfg(units), store, |b| admit(calls, b))
            .await
            .unwrap()
        {
            Leased::Spent(_) => "spent",
            Leased::Granted(_) => "granted",
            Leased::Exact => "exact",
        }
    }

    #[tokio::test]
    async fn a_lease_admits_locally_until_spent_or_max_age() {
        let clock = FakeClock::new(1_000_000);
        let (l, store, _tasks) = leases(&clock);
        let calls = AtomicU64::new(0);
        assert_eq!(check(&l, &store, 3, &calls).await, "granted");
        for _ in 0..3 {
            assert_eq!(check(&l, &store, 3, &calls).await, "spent");
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "spent without a store call"
        );
        assert_eq!(check(&l, &store, 3, &calls).await, "granted", "units gone");
        assert_eq!(l.units_held(), 3);
        // Just before max_age the lease still admits; at max_age it does not.
        clock.advance_by(MAX_AGE - Duration::from_micros(1));
        assert_eq!(check(&l, &store, 3, &calls).await, "spent");
        clock.advance(1);
        assert_eq!(check(&l, &store, 3, &calls).await, "granted", "expired");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_denied_batch_goes_exact_for_max_age() {
        let clock = FakeClock::new(1_000_000);
        let (l, store, _tasks) = leases(&clock);
        let deny = |_| async {
            Ok(CheckOutcome {
                verdict: Verdict::QuotaExceeded,
                retry_after_us: None,
                remaining: vec![0],
                quota: None,
                now_us: 1,
                replayed: false,
            })
        };
        assert!(matches!(
            l.check(&op(), &cfg(3), &store, deny).await.unwrap(),
            Leased::Exact
        ));
        let calls = AtomicU64::new(0);
        clock.advance_by(MAX_AGE - Duration::from_micros(1));
        assert_eq!(check(&l, &store, 3, &calls).await, "exact");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        clock.advance(1);
        assert_eq!(check(&l, &store, 3, &calls).await, "granted");
    }

    #[tokio::test]
    async fn the_sweep_takes_back_expired_leases_only() {
        let clock = FakeClock::new(1_000_000);
        let (l, store, tasks) = leases(&clock);
        let calls = AtomicU64::new(0);
        assert_eq!(check(&l, &store, 5, &calls).await, "granted");
        l.sweep(&store);
        assert_eq!(l.units_held(), 5, "not expired yet");
        clock.advance_by(MAX_AGE);
        l.sweep(&store);
        assert_eq!(l.units_held(), 0);
        tasks.shutdown(Duration::from_secs(5)).await.unwrap();
    }

    #[tokio::test]
    async fn give_back_all_empties_every_lease() {
        let clock = FakeClock::new(1_000_000);
        let (l, store, _tasks) = leases(&clock);
        let calls = AtomicU64::new(0);
        assert_eq!(check(&l, &store, 5, &calls).await, "granted");
        assert_eq!(check(&l, &store, 5, &calls).await, "spent");
        assert_eq!(l.give_back_all(&store).await, 4);
        assert_eq!(l.units_held(), 0);
    }
}
