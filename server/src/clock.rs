//! The one place that reads the wall clock.
//!
//! Rate-limit state is shared across replicas through the store, so times are epoch-based (a
//! monotonic `Instant` cannot be compared across processes). Microseconds, not milliseconds: a
//! 10,000 rps bucket has a 100 µs emission interval, and Redis `TIME` gives microseconds too.
//! Clippy's `disallowed-methods` keeps every other module off `SystemTime::now`.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A source of "now" in microseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Microseconds since 1970-01-01T00:00:00Z.
    fn now_micros(&self) -> u64;
}

/// The system wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one sanctioned call
    fn now_micros(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct FakeClock(Arc<AtomicU64>);

impl FakeClock {
    /// A fake clock starting at `micros` since the epoch.
    pub fn new(micros: u64) -> Self {
        Self(Arc::new(AtomicU64::new(micros)))
    }
    /// Moves time forward by `micros`.
    pub fn advance(&self, micros: u64) {
        self.0.fetch_add(micros, Ordering::SeqCst);
    }
    /// Sets the time.
    pub fn set(&self, micros: u64) {
        self.0.store(micros, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now_micros(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}
