//! The one place that reads the clocks: wall time and monotonic time.
//!
//! Owns: the [`Clock`] trait, the system clock, and the fake clock tests drive.
//! Must not import: anything from this crate (a leaf; `tests/it/architecture.rs` checks).
//!
//! Two kinds of time, one source, so one [`FakeClock`] drives both in tests:
//! - **Wall** ([`Clock::now_micros`]): rate-limit state is shared across replicas through the
//!   store, so its times are epoch-based (a monotonic `Instant` cannot be compared across
//!   processes). Microseconds, not milliseconds: a 10,000 rps bucket has a 100 µs emission
//!   interval, and Redis `TIME` gives microseconds too.
//! - **Monotonic** ([`Clock::monotonic`]): local durations that must not jump when the wall
//!   clock is stepped (NTP, a VM resumed): how long the store circuit stays open
//!   ([`crate::breaker`]), when a local lease expires ([`crate::lease`]).
//!
//! Clippy's `disallowed-methods` (`clippy.toml`, and `server/clippy.toml` for this crate's
//! `Instant::now`) keeps every other module off `SystemTime::now` and `Instant::now`. Timing a
//! call for a latency histogram may read `Instant` where it says so; async timers (timeouts,
//! intervals) use tokio's time.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A source of "now": wall time for state shared across replicas, monotonic time for local
/// durations.
pub trait Clock: Send + Sync + 'static {
    /// Microseconds since 1970-01-01T00:00:00Z.
    fn now_micros(&self) -> u64;

    /// Time since an arbitrary origin fixed for this clock (the first read in this process, for
    /// [`SystemClock`]); never goes back. Only differences of two readings mean anything.
    fn monotonic(&self) -> Duration;
}

/// The system's wall and monotonic clocks.
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

    fn monotonic(&self) -> Duration {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        #[allow(clippy::disallowed_methods)] // the one sanctioned call
        let origin = ORIGIN.get_or_init(Instant::now);
        origin.elapsed()
    }
}

/// A clock that only moves when told to; clones share the same time.
///
/// Its monotonic time starts at zero and moves with [`advance`](Self::advance) (and with a
/// forward [`set`](Self::set)); a backward `set` steps only the wall clock, as NTP can.
#[derive(Debug, Clone, Default)]
pub struct FakeClock(Arc<FakeTime>);

#[derive(Debug, Default)]
struct FakeTime {
    wall_us: AtomicU64,
    monotonic_us: AtomicU64,
}

impl FakeClock {
    /// A fake clock whose wall time starts at `micros` since the epoch.
    pub fn new(micros: u64) -> Self {
        Self(Arc::new(FakeTime {
            wall_us: AtomicU64::new(micros),
            monotonic_us: AtomicU64::new(0),
        }))
    }

    /// Moves wall and monotonic time forward by `micros`.
    pub fn advance(&self, micros: u64) {
        self.0.monotonic_us.fetch_add(micros, Ordering::SeqCst);
        self.0.wall_us.fetch_add(micros, Ordering::SeqCst);
    }

    /// Moves wall and monotonic time forward by `d`.
    pub fn advance_by(&self, d: Duration) {
        self.advance(d.as_micros() as u64);
    }

    /// Sets the wall time. Forward, monotonic time moves as far; backward, it stays.
    pub fn set(&self, micros: u64) {
        let before = self.0.wall_us.swap(micros, Ordering::SeqCst);
        self.0
            .monotonic_us
            .fetch_add(micros.saturating_sub(before), Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now_micros(&self) -> u64 {
        self.0.wall_us.load(Ordering::SeqCst)
    }

    fn monotonic(&self) -> Duration {
        Duration::from_micros(self.0.monotonic_us.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_advance_moves_wall_and_monotonic_time() {
        let c = FakeClock::new(1_000);
        assert_eq!((c.now_micros(), c.monotonic()), (1_000, Duration::ZERO));
        c.advance(500);
        c.clone().advance_by(Duration::from_millis(2));
        assert_eq!(c.now_micros(), 3_500);
        assert_eq!(c.monotonic(), Duration::from_micros(2_500));
    }

    #[test]
    fn fake_set_back_steps_only_the_wall_clock() {
        let c = FakeClock::new(10_000);
        c.set(4_000);
        assert_eq!((c.now_micros(), c.monotonic()), (4_000, Duration::ZERO));
        c.set(9_000);
        assert_eq!(c.now_micros(), 9_000);
        assert_eq!(c.monotonic(), Duration::from_micros(5_000));
    }

    #[test]
    fn system_monotonic_never_goes_back() {
        let a = SystemClock.monotonic();
        let b = SystemClock.monotonic();
        assert!(b >= a);
        assert!(SystemClock.now_micros() > 1_600_000_000_000_000);
    }
}
