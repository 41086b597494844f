//! A small circuit breaker: opens after N consecutive failures, lets one probe through after a
//! cool-down (half-open), closes again when the probe succeeds.
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Circuit breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive transport failures or timeouts that open the breaker (0 disables it).
    pub failure_threshold: u32,
    /// How long the breaker stays open before one probe call is let through.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cool_down: Duration::from_secs(1),
        }
    }
}

/// The breaker's state, as reported by [`Breaker::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go to the server.
    Closed,
    /// Calls are answered locally by the failure policy.
    Open,
    /// The cool-down is over: one probe call is (or may be) in flight.
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// `probe_started`: when the last probe was let through; another one is allowed when that one
    /// has not reported back within a cool-down (it was cancelled, for instance).
    HalfOpen {
        probe_started: Instant,
    },
}

/// A consecutive-failure circuit breaker on the tokio clock (so tests can pause time).
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Whether a call may go to the server now. When the cool-down is over, the first caller gets
    /// `true` (the probe) and the others `false` until the probe reports back.
    pub fn allow(&self) -> bool {
        if self.config.failure_threshold == 0 {
            return true;
        }
        let now = Instant::now();
        let mut state = self.state.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                *state = State::HalfOpen { probe_started: now };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { probe_started } => {
                if now.duration_since(probe_started) >= self.config.cool_down {
                    *state = State::HalfOpen { probe_started: now };
                    true
                } else {
                    false
                }
            }
        }
    }

    /// The server answered: close the breaker.
    pub fn on_success(&self) {
        let mut state = self.state.lock();
        *state = State::Closed { failures: 0 };
    }

    /// A transport failure or timeout: count it; open the breaker at the threshold (or at once
    /// when a half-open probe failed).
    pub fn on_failure(&self) {
        if self.config.failure_threshold == 0 {
            return;
        }
        let now = Instant::now();
        let mut state = self.state.lock();
        let open = State::Open {
            until: now + self.config.cool_down,
        };
        *state = match *state {
            State::Closed { failures } if failures + 1 < self.config.failure_threshold => {
                State::Closed {
                    failures: failures + 1,
                }
            }
            State::Closed { .. } | State::HalfOpen { .. } => open,
            // A call started before the breaker opened: keep the current cool-down.
            State::Open { until } => State::Open { until },
        };
    }

    /// The current state (`Open` turns into `HalfOpen` only when a call asks, after the cool-down).
    pub fn state(&self) -> BreakerState {
        match *self.state.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: 3,
            cool_down: Duration::from_millis(500),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_consecutive_failures() {
        let b = breaker();
        b.on_failure();
        b.on_failure();
        assert!(b.allow());
        assert_eq!(b.state(), BreakerState::Closed);
        b.on_failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let b = breaker();
        b.on_failure();
        b.on_failure();
        b.on_success();
        b.on_failure();
        b.on_failure();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_one_probe_through_after_the_cool_down() {
        let b = breaker();
        for _ in 0..3 {
            b.on_failure();
        }
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(!b.allow());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(b.allow(), "the probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.allow(), "only one probe at a time");
        b.on_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_a_full_cool_down() {
        let b = breaker();
        for _ in 0..3 {
            b.on_failure();
        }
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(b.allow());
        b.on_failure();
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(!b.allow());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(b.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_probe_is_replaced_after_a_cool_down() {
        let b = breaker();
        for _ in 0..3 {
            b.on_failure();
        }
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(b.allow());
        // The probe never reports (cancelled).
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(b.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn threshold_zero_disables_the_breaker() {
        let b = Breaker::new(BreakerConfig {
            failure_threshold: 0,
            cool_down: Duration::from_secs(1),
        });
        for _ in 0..100 {
            b.on_failure();
        }
        assert!(b.allow());
    }
}
