//! A fault-injecting rate store for tests: wraps a real store (the memory store, usually) and
//! answers its next calls from a script — fail with a given error, hang, or answer late — so
//! the decorators around the rate store can be tested without a broken Redis and without
//! sleeping (`tokio::time::pause()` drives the delays and the hangs' deadlines).
//!
//! Owns nothing but the script; imports only the store traits and tokio's time.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::{CheckOp, CheckOutcome, RateStore, SettleOutcome, StoreError};

/// What the next call does instead of (or before) reaching the inner store.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// Fails with this error; the inner store is not called.
    Fail(StoreError),
    /// Never answers.
    Hang,
    /// Answers (from the inner store) after this long.
    Delay(Duration),
}

/// A store whose next calls fail, hang or are late as scripted; every other call goes to
/// `inner`.
pub(crate) struct FaultStore<S> {
    inner: S,
    script: Mutex<VecDeque<Fault>>,
    calls: AtomicU64,
    reached: AtomicU64,
}

impl<S> FaultStore<S> {
    /// No faults scripted yet.
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            script: Mutex::default(),
            calls: AtomicU64::new(0),
            reached: AtomicU64::new(0),
        }
    }

    /// The next `n` calls do `fault` (after what is scripted already).
    pub(crate) fn next(&self, n: usize, fault: Fault) -> &Self {
        self.script.lock().extend(std::iter::repeat_n(fault, n));
        self
    }

    /// Calls made to this store (faulty or not).
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Calls that reached the inner store.
    pub(crate) fn reached(&self) -> u64 {
        self.reached.load(Ordering::Relaxed)
    }

    /// Runs the next scripted fault, then `call` unless the fault ends the call.
    async fn run<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let fault = self.script.lock().pop_front();
        match fault {
            Some(Fault::Fail(e)) => return Err(e),
            Some(Fault::Hang) => std::future::pending::<()>().await,
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            None => {}
        }
        self.reached.fetch_add(1, Ordering::Relaxed);
        call.await
    }
}

impl<S: RateStore> RateStore for FaultStore<S> {
    async fn check(&self, op: &CheckOp) -> Result<CheckOutcome, StoreError> {
        self.run(self.inner.check(op)).await
    }

    async fn settle(&self, op: &CheckOp, actual: u64) -> Result<SettleOutcome, StoreError> {
        self.run(self.inner.settle(op, actual)).await
    }

    async fn release_reservation(&self, op: &CheckOp) -> Result<SettleOutcome, StoreError> {
        self.run(self.inner.release_reservation(op)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(self.inner.ping()).await
    }
}
