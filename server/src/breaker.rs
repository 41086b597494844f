//! The store circuit breaker (`store.circuit_breaker`): after `failures` store calls in a row
//! fail (timeouts, lost connections, errors such as Redis's OOM), checks stop waiting for the
//! store for `open_for` and are answered at once per the failure mode; then one check is let
//! through as a probe (half-open): its success closes the circuit, its failure opens it again.
//!
//! "In a row" is over all store calls of this instance, so on Redis Cluster the successes of
//! healthy shards keep one failing shard from opening the circuit for everyone (its keys then
//! wait for the deadline, per the failure mode). Lock-free: on the hot path a closed circuit
//! costs one atomic load before the call and one after.
//!
//! Owns: the circuit's state and its timing (read from the injected [`Clock`]'s monotonic
//! time, so tests move time with a [`crate::clock::FakeClock`] instead of sleeping).
//! Must not import: anything from this crate but [`crate::clock`] (it knows nothing of stores,
//! metrics or the failure mode; its caller acts on [`Permit`] and on what
//! [`Breaker::record`] returns).
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::Clock;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Closed: call the store.
    Call,
    /// Half-open: call the store as the one probe.
    Probe,
    /// Open: do not call the store.
    Reject,
}

/// A circuit over the store calls of one instance.
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    clock: Arc<dyn Clock>,
    /// The clock's monotonic time at construction.
    epoch: Duration,
    failures: AtomicU32,
    /// µs since `epoch` until which the circuit is open; 0 = closed.
    open_until_us: AtomicU64,
    probing: AtomicBool,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("threshold", &self.threshold)
            .field("open_for", &self.open_for)
            .field("failures", &self.failures)
            .field("open_until_us", &self.open_until_us)
            .field("probing", &self.probing)
            .finish_non_exhaustive()
    }
}

impl Breaker {
    /// Opens after `threshold` failures in a row, for `open_for` each time, as `clock`'s
    /// monotonic time tells.
    pub fn new(threshold: u32, open_for: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            epoch: clock.monotonic(),
            clock,
            failures: AtomicU32::new(0),
            open_until_us: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    fn now_us(&self) -> u64 {
        // +1: 0 means closed.
        self.clock
            .monotonic()
            .saturating_sub(self.epoch)
            .as_micros() as u64
            + 1
    }

    /// Whether the circuit is open or half-open now (health, metrics).
    pub fn is_open(&self) -> bool {
        self.open_until_us.load(Ordering::Acquire) != 0
    }

    /// May a store call be made?
    pub fn permit(&self) -> Permit {
        let until = self.open_until_us.load(Ordering::Acquire);
        if until == 0 {
            return Permit::Call;
        }
        if self.now_us() < until {
            return Permit::Reject;
        }
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Permit::Probe,
            Err(_) => Permit::Reject,
        }
    }

    /// Reports how a permitted call went. Returns `Some(open)` when the circuit changed.
    pub fn record(&self, permit: Permit, ok: bool) -> Option<bool> {
        if ok {
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            if permit == Permit::Probe || self.is_open() {
                self.open_until_us.store(0, Ordering::Release);
                self.probing.store(false, Ordering::Release);
                return Some(false);
            }
            return None;
        }
        if permit == Permit::Probe {
            self.open_until_us.store(
                self.now_us() + self.open_for.as_micros() as u64,
                Ordering::Release,
            );
            self.probing.store(false, Ordering::Release);
            return None;
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.threshold && !self.is_open() {
            self.open_until_us.store(
                self.now_us() + self.open_for.as_micros() as u64,
                Ordering::Release,
            );
            return Some(true);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    #[test]
    fn opens_after_failures_in_a_row_then_probes_once() {
        let clock = FakeClock::new(0);
        let b = Breaker::new(3, Duration::from_millis(30), Arc::new(clock.clone()));
        for _ in 0..2 {
            assert_eq!(b.permit(), Permit::Call);
            assert_eq!(b.record(Permit::Call, false), None);
        }
        // A success in between resets the count.
        assert_eq!(b.record(Permit::Call, true), None);
        for _ in 0..2 {
            b.record(Permit::Call, false);
        }
        assert!(!b.is_open());
        assert_eq!(b.record(Permit::Call, false), Some(true));
        assert!(b.is_open());
        assert_eq!(b.permit(), Permit::Reject);
        clock.advance_by(Duration::from_millis(29));
        assert_eq!(b.permit(), Permit::Reject, "open for the whole period");
        clock.advance_by(Duration::from_millis(1));
        assert_eq!(b.permit(), Permit::Probe);
        assert_eq!(b.permit(), Permit::Reject, "one probe at a time");
        // The probe fails: open again for the whole period.
        assert_eq!(b.record(Permit::Probe, false), None);
        assert_eq!(b.permit(), Permit::Reject);
        clock.advance_by(Duration::from_millis(29));
        assert_eq!(b.permit(), Permit::Reject, "reopened for the whole period");
        clock.advance_by(Duration::from_millis(1));
        assert_eq!(b.permit(), Permit::Probe);
        assert_eq!(b.record(Permit::Probe, true), Some(false));
        assert!(!b.is_open());
        assert_eq!(b.permit(), Permit::Call);
    }

    /// The circuit times itself by monotonic time: a wall clock stepped back (NTP) neither
    /// keeps it open longer nor closes it early.
    #[test]
    fn a_wall_clock_step_does_not_move_the_circuit() {
        let clock = FakeClock::new(1_000_000_000);
        let b = Breaker::new(1, Duration::from_secs(1), Arc::new(clock.clone()));
        assert_eq!(b.record(Permit::Call, false), Some(true));
        clock.set(1);
        assert_eq!(b.permit(), Permit::Reject);
        clock.advance_by(Duration::from_secs(1));
        assert_eq!(b.permit(), Permit::Probe);
    }
}
