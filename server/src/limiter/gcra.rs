//! GCRA: the token bucket with one integer of state.
//!
//! With emission interval `T = 1/rate` and tolerance `τ = T·(burst−1)`, a cost-`n` request at
//! time `t` is admitted iff `t ≥ TAT + T·(n−1) − τ`; then `TAT = max(TAT, t) + n·T`. That is
//! exactly a bucket of capacity `burst` refilled at `rate` tokens per second, and the wait until
//! a denied request would pass is exact: `TAT + T·(n−1) − τ − t`.
//!
//! All values are integer microseconds so the Lua copy computes bit-identical answers (the
//! bounds below keep every intermediate under 2^53, where Lua's doubles are exact).
use std::fmt;

/// Lowest accepted rate, requests per second (one request per ~16.7 minutes).
pub const MIN_RATE: f64 = 0.001;
/// Highest accepted rate, requests per second (the emission interval bottoms out at 1 µs).
pub const MAX_RATE: f64 = 1_000_000.0;
/// Longest window of [`Limit::per_window`]: 366 days.
pub const MAX_WINDOW_US: u64 = 366 * 86_400 * 1_000_000;
/// Largest accepted burst.
pub const MAX_BURST: u32 = 1_000_000;

/// A validated token-bucket limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    rate: f64,
    burst: u32,
    interval_us: u64,
}

/// Why a limit is invalid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitError {
    /// The rate is outside `MIN_RATE..=MAX_RATE` (or not a number).
    #[error("rate_limit must be between {MIN_RATE} and {MAX_RATE} requests per second, got {0}")]
    Rate(f64),
    /// The burst is outside `1..=MAX_BURST`.
    #[error("burst_limit must be between 1 and {MAX_BURST}, got {0}")]
    Burst(u64),
}

impl Limit {
    /// A limit of `rate` tokens per second and capacity `burst`.
    pub fn try_new(rate: f64, burst: u64) -> Result<Self, LimitError> {
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return Err(LimitError::Rate(rate));
        }
        if burst == 0 || burst > u64::from(MAX_BURST) {
            return Err(LimitError::Burst(burst));
        }
        let interval_us = ((1_000_000.0 / rate).round() as u64).max(1);
        Ok(Self {
            rate,
            burst: burst as u32,
            interval_us,
        })
    }
    /// `count` tokens per `window_us`, refilled evenly, capacity `count`: a descriptor limit
    /// ("N per day"), whose rate may fall below [`MIN_RATE`]. The window is at most
    /// [`MAX_WINDOW_US`], so every time the bucket holds stays far below 2^53 µs.
    pub fn per_window(count: u64, window_us: u64) -> Result<Self, LimitError> {
        if count == 0 || count > u64::from(MAX_BURST) {
            return Err(LimitError::Burst(count));
        }
        let rate = count as f64 * 1_000_000.0 / window_us as f64;
        if window_us == 0 || window_us > MAX_WINDOW_US || rate > MAX_RATE {
            return Err(LimitError::Rate(rate));
        }
        Ok(Self {
            rate,
            burst: count as u32,
            interval_us: ((window_us as f64 / count as f64).round() as u64).max(1),
        })
    }
    /// A limit from its parts as [`Limit::rate`], [`Limit::burst`] and [`Limit::interval_us`]
    /// give them (a stored reservation ticket); `None` unless they could have come from
    /// [`Limit::try_new`] or [`Limit::per_window`].
    pub fn from_parts(rate: f64, burst: u32, interval_us: u64) -> Option<Self> {
        let ok = rate.is_finite()
            && rate > 0.0
            && rate <= MAX_RATE
            && (1..=MAX_BURST).contains(&burst)
            && (1..=MAX_WINDOW_US).contains(&interval_us);
        ok.then_some(Self {
            rate,
            burst,
            interval_us,
        })
    }
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }
    /// Bucket capacity.
    pub fn burst(&self) -> u32 {
        self.burst
    }
    /// `T`, microseconds per token.
    pub fn interval_us(&self) -> u64 {
        self.interval_us
    }
    /// `τ = T·(burst−1)`, microseconds.
    pub fn tolerance_us(&self) -> u64 {
        self.interval_us * u64::from(self.burst - 1)
    }
    /// Microseconds an empty bucket takes to fill completely.
    pub fn fill_time_us(&self) -> u64 {
        self.interval_us * u64::from(self.burst)
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s burst {}", self.rate, self.burst)
    }
}

/// The outcome of one bucket for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gcra {
    /// Admitted; `tat` is the new state to store if the whole check commits.
    Allowed {
        /// The new theoretical arrival time.
        tat: u64,
    },
    /// Not admitted. `retry_after_us` is `None` when the cost exceeds the burst (never passes).
    Denied {
        /// Exact wait until the same request would be admitted.
        retry_after_us: Option<u64>,
    },
}

/// Decides a cost-`cost` request at `now` against a bucket whose stored TAT is `tat`
/// (`None`: never used or expired, i.e. full).
pub fn check(limit: &Limit, tat: Option<u64>, now: u64, cost: u64) -> Gcra {
    let t = limit.interval_us;
    let tat = tat.unwrap_or(now).max(now);
    if cost > u64::from(limit.burst) {
        return Gcra::Denied {
            retry_after_us: None,
        };
    }
    // admitted iff now >= tat + T(n-1) - τ, written without negative intermediates.
    let need = tat + t * (cost - 1);
    let allow_at = need.saturating_sub(limit.tolerance_us());
    if now >= allow_at {
        Gcra::Allowed {
            tat: tat + cost * t,
        }
    } else {
        Gcra::Denied {
            retry_after_us: Some(allow_at - now),
        }
    }
}

/// Tokens a bucket holds at `now`: how many cost-1 requests would pass in a row.
pub fn remaining(limit: &Limit, tat: Option<u64>, now: u64) -> u64 {
    let tat = tat.unwrap_or(now).max(now);
    let slack = (now + limit.tolerance_us()).checked_sub(tat);
    match slack {
        Some(s) => (s / limit.interval_us + 1).min(u64::from(limit.burst)),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(rate: f64, burst: u64) -> Limit {
        Limit::try_new(rate, burst).expect("valid test limit")
    }

    #[test]
    fn rejects_invalid_limits() {
        assert!(Limit::try_new(0.0, 1).is_err());
        assert!(Limit::try_new(f64::NAN, 1).is_err());
        assert!(Limit::try_new(1.0, 0).is_err());
        assert!(Limit::try_new(2_000_000.0, 1).is_err());
        assert!(Limit::try_new(0.1, 1).is_ok());
        assert_eq!(lim(0.1, 1).interval_us(), 10_000_000);
    }

    #[test]
    fn burst_then_rate() {
        // rate 2/s burst 5: five pass at once, the sixth waits exactly 500 ms.
        let l = lim(2.0, 5);
        let mut tat = None;
        let now = 1_000_000_000;
        for _ in 0..5 {
            match check(&l, tat, now, 1) {
                Gcra::Allowed { tat: t } => tat = Some(t),
                d => panic!("expected allow, got {d:?}"),
            }
        }
        assert_eq!(remaining(&l, tat, now), 0);
        assert_eq!(
            check(&l, tat, now, 1),
            Gcra::Denied {
                retry_after_us: Some(500_000)
            }
        );
        assert!(matches!(
            check(&l, tat, now + 500_000, 1),
            Gcra::Allowed { .. }
        ));
        assert!(matches!(
            check(&l, tat, now + 499_999, 1),
            Gcra::Denied { .. }
        ));
    }

    #[test]
    fn cost_above_burst_never_passes() {
        let l = lim(10.0, 3);
        assert_eq!(
            check(&l, None, 5, 4),
            Gcra::Denied {
                retry_after_us: None
            }
        );
        assert!(matches!(check(&l, None, 5, 3), Gcra::Allowed { .. }));
    }

    #[test]
    fn full_bucket_reports_burst() {
        let l = lim(1.0, 7);
        assert_eq!(remaining(&l, None, 100), 7);
        assert_eq!(remaining(&l, Some(50), 100), 7);
    }
}
