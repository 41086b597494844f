//! The hot path's add-ons as decorators around the rate store: each is a [`RateStore`] that
//! wraps an inner [`RateStore`], and [`Checker`](super::Checker) holds one composed stack
//! ([`RateStack`]), outermost first:
//!
//! 1. [`OverLimit`] — a denial the store already gave is answered locally, at no cost.
//! 2. [`Leases`] — a hot key's check is answered from units a lease took earlier.
//! 3. [`Breaker`] — after repeated store failures, calls fail at once for a while.
//! 4. [`Metered`] — counts and times the calls that go to the store.
//! 5. [`Timeout`] — the deadline of every store call (`store.timeout`).
//!
//! Why plain decorators and not tower layers: a store call borrows its op (`&CheckOp`) and is
//! made through `&self` by many checks at once; a tower `Service` takes its request by value
//! and `&mut self` after `poll_ready`, which would cost a clone of every op and a clone (or a
//! lock) of the stack per call. Decorators over the same trait compose statically — no box,
//! no allocation on the hot path — and each is tested alone around a fault-injecting store
//! (`store::fault`) under paused tokio time. A layer the configuration turns off holds `None`
//! and passes every call through, so the stack keeps one type.
//!
//! Only [`RateStore::check`] is decorated by all of them; settlements and pings go through
//! [`Timeout`] and [`Metered`] only (a report is never answered from a cache or a lease, and
//! the breaker guards checks, as before).
//!
//! Imports: the store traits, `breaker`, `overlimit`, `lease`, `stamps`, `clock`, `metrics`;
//! never `catalog`, `auth` or `api` (the catalog's generation comes in as a function).
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::breaker::{self, Permit};
use crate::clock::Clock;
use crate::config::LocalLeaseConfig;
use crate::lease::{self, Leased};
use crate::metrics as m;
use crate::overlimit::OverLimitCache;
use crate::store::{AnyStore, CheckOp, CheckOutcome, RateStore, SettleOutcome, StoreError};

/// The stack the checker runs every check through.
pub type RateStack = OverLimit<Leases<Breaker<Metered<Timeout<AnyStore>>>>>;

/// Bounds every store call by a deadline: a call that has not answered by then fails with
/// [`StoreError::Timeout`] (and is dropped: the store may still apply it).
pub struct Timeout<S> {
    inner: S,
    limit: Duration,
}

impl<S> Timeout<S> {
    /// Calls to `inner` get `limit` each.
    pub fn new(inner: S, limit: Duration) -> Self {
        Self { inner, limit }
    }

    async fn bound<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.limit, call)
            .await
            .unwrap_or(Err(StoreError::Timeout))
    }
}

impl<S: RateStore> RateStore for Timeout<S> {
    async fn check(&self, op: &CheckOp) -> Result<CheckOutcome, StoreError> {
        self.bound(self.inner.check(op)).await
    }
    async fn settle(&self, op: &CheckOp, actual: u64) -> Result<SettleOutcome, StoreError> {
        self.bound(self.inner.settle(op, actual)).await
    }
    async fn release_reservation(&self, op: &CheckOp) -> Result<SettleOutcome, StoreError> {
        self.bound(self.inner.release_reservation(op)).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.bound(self.inner.ping()).await
    }
}

/// Records every call's latency and failures in the store metrics (labelled with the store's
/// kind), and counts the checks that reach it ([`Metered::calls`]).
pub struct Metered<S> {
    inner: S,
    kind: &'static str,
    checks: Arc<AtomicU64>,
}

impl<S> Metered<S> {
    /// Calls to `inner` (a store of `kind`: "memory", "redis") are recorded; checks are
    /// counted in `checks` (shared, so the owner can read it).
    pub fn new(inner: S, kind: &'static str, checks: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            kind,
            checks,
        }
    }

    /// Check calls made so far.
    pub fn calls(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    async fn record<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        #[allow(clippy::disallowed_methods)] // metrics timing only (a histogram), never a decision
        let started = Instant::now();
        let res = call.await;
        m::store_call(self.kind, started.elapsed(), res.as_ref().err());
        res
    }
}

impl<S: RateStore> RateStore for Metered<S> {
    async fn check(&self, op: &CheckOp) -> Result<CheckOutcome, StoreError> {
        self.checks.fetch_add(1, Ordering::Relaxed);
        self.record(self.inner.check(op)).await
    }
    async fn settle(&self, op: &CheckOp, actual: u64) -> Result<SettleOutcome, StoreError> {
        self.record(self.inner.settle(op, actual)).await
    }
    async fn release_reservation(&self, op: &CheckOp) -> Result<SettleOutcome, StoreError> {
        self.record(self.inner.release_reservation(op)).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.record(self.inner.ping()).await
    }
}

/// The store circuit breaker ([`crate::breaker`]) around checks: an open circuit fails a
/// check at once (`Unreachable`, answered per the failure mode) instead of waiting for the
/// store. Only errors that say the store itself is in trouble
/// ([`StoreError::is_store_fault`]) count as failures — never one request's bad data.
pub struct Breaker<S> {
    inner: S,
    circuit: Option<Arc<breaker::Breaker>>,
}

impl<S> Breaker<S> {
    /// Checks to `inner` go through `circuit` (`None`: no breaker, every call passes).
    pub fn new(inner: S, circuit: Option<Arc<breaker::Breaker>>) -> Self {
        if circuit.is_some() {
            metrics::gauge!(m::STORE_CIRCUIT_OPEN).set(0.0);
        }
        Self { inner, circuit }
    }

    /// Whether the circuit is open (or half-open) now.
    pub fn is_open(&self) -> bool {
        self.circuit.as_ref().is_some_and(|c| c.is_open())
    }
}

impl<S: RateStore> RateStore for Breaker<S> {
    async fn check(&self, op: &CheckOp) -> Result<CheckOutcome, StoreError> {
        let Some(circuit) = &self.circuit else {
            return self.inner.check(op).await;
        };
        let permit = circuit.permit();
        if permit == Permit::Reject {
            metrics::counter!(m::STORE_CIRCUIT_REJECTED_TOTAL).increment(1);
            return Err(StoreError::Unreachable(
                "circuit open after repeated store failures (probing again shortly)".into(),
            ));
        }
        let res = self.inner.check(op).await;
        let ok = !res.as_ref().is_err_and(StoreError::is_store_fault);
        if let Some(open) = circuit.record(permit, ok) {
            metrics::gauge!(m::STORE_CIRCUIT_OPEN).set(if open { 1.0 } else { 0.0 });
            if open {
                tracing::warn!(
                    "store circuit open: store calls keep failing; answering per the failure mode"
                );
            } else {
                tracing::info!("store circuit closed: the store answers again");
            }
        }
        res
    }
    async fn settle(&self, op: &CheckOp, actual: u64) -> Result<SettleOutcome, StoreError> {
        self.inner.settle(op, actual).await
    }
    async fn release_reservation(&self, op: &CheckOp) -> Result<SettleOutcome, StoreError> {
        self.inner.release_reservation(op).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// The catalog generation now: the over-limit cache forgets denials of older catalogs.
pub type Generation = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The local over-limit cache ([`OverLimitCache`]) around checks: a check a remembered
/// denial covers is answered with it and reaches nothing below; every other check's answer
/// is remembered (when it is a denial that holds for every cost).
pub struct OverLimit<S> {
    inner: S,
    cache: Option<(Arc<OverLimitCache>, Arc<dyn Clock>)>,
    generation: Generation,
}

impl<S> OverLimit<S> {
    /// Checks to `inner` go through `cache`, timed with its clock (`None`: no cache), its
    /// entries valid while `generation` says the same.
    pub fn new(
        inner: S,
        cache: Option<(Arc<OverLimitCache>, Arc<dyn Clock>)>,
        generation: Generation,
    ) -> Self {
        Self {
            inner,
            cache,
            generation,
        }
    }
}

impl<S: RateStore> RateStore for OverLimit<S> {
    async fn check(&self, op: &CheckOp) -> Result<CheckOutcome, StoreError> {
        let Some((cache, clock)) = &self.cache else {
            return self.inner.check(op).await;
        };
        let generation = (self.generation)();
        let sent = clock.now_micros();
        if let Some(out) = cache.lookup(op, generation, sent) {
            metrics::counter!(m::LOCAL_DENIALS_TOTAL).increment(1);
            return Ok(out);
        }
        // Before the call: an UpdateUsage seen while it is in flight voids its answer.
        let stamp = cache.stamp(&op.owner);
        let res = self.inner.check(op).await;
        if let Ok(out) = &res {
            cache.record(op, out, generation, sent, stamp);
        }
        res
    }
    async fn settle(&self, op: &CheckOp, actual: u64) -> Result<SettleOutcome, StoreError> {
        self.inner.settle(op, actual).await
    }
    async fn release_reservation(&self, op: &CheckOp) -> Result<SettleOutcome, StoreError> {
        self.inner.release_reservation(op).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// Local leases ([`crate::lease`]) around checks of `local_lease` plans (an op's
/// [`CheckOp::lease`]): a check is answered from units a lease holds, or takes a new lease
/// through the layers below. Idempotent checks and dry runs always go below.
pub struct Leases<S> {
    inner: S,
    leases: Option<Arc<lease::Leases>>,
    /// Where unspent units go back (the store itself, not through the stack).
    store: AnyStore,
}

impl<S> Leases<S> {
    /// Checks to `inner` go through `leases` (`None`: no leases), whose unspent units go
    /// back to `store`.
    pub fn new(inner: S, leases: Option<Arc<lease::Leases>>, store: AnyStore) -> Self {
        Self {
            inner,
            leases,
            store,
        }
    }
}

impl<S: RateStore> RateStore for Leases<S> {
    async fn check(&self, op: &CheckOp) -> Result<CheckOutcome, StoreError> {
        let (Some(terms), Some(leases)) = (&op.lease, &self.leases) else {
            return self.inner.check(op).await;
        };
        if op.request_id.is_some() || op.dry_run {
            return self.inner.check(op).await;
        }
        let cfg = LocalLeaseConfig {
            units: terms.units,
            max_age: terms.max_age,
        };
        let inner = &self.inner;
        let leased = leases
            .check(op, &cfg, &self.store, |batch| async move {
                inner.check(&batch).await
            })
            .await?;
        match leased {
            Leased::Spent(out) => {
                m::lease_check("spent");
                Ok(out)
            }
            Leased::Granted(out) => {
                m::lease_check("granted");
                Ok(out)
            }
            Leased::Exact => {
                m::lease_check("exact");
                self.inner.check(op).await
            }
        }
    }
    async fn settle(&self, op: &CheckOp, actual: u64) -> Result<SettleOutcome, StoreError> {
        self.inner.settle(op, actual).await
    }
    async fn release_reservation(&self, op: &CheckOp) -> Result<SettleOutcome, StoreError> {
        self.inner.release_reservation(op).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

#[cfg(test)]
#[path = "layers_tests.rs"]
mod tests;
