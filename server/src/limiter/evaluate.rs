//! One whole check, as pure math: every bucket first, then the quota; commit only if all admit.
//!
//! A throttled request uses no quota and a quota rejection takes no tokens. Stores read the
//! state, call [`evaluate`], and write back `new_tats` / `new_quota` when `commit` is true — the
//! memory store under one lock, the Redis store inside one Lua script that mirrors this file.
use super::gcra::{self, Gcra, Limit};
use super::quota::{self, Period};

/// One bucket's limit and stored theoretical arrival time.
#[derive(Debug, Clone, Copy)]
pub struct BucketInput {
    /// The bucket's limit.
    pub limit: Limit,
    /// Stored TAT, `None` when absent (a full bucket).
    pub tat: Option<u64>,
}

/// A quota's definition and stored count.
#[derive(Debug, Clone, Copy)]
pub struct QuotaInput {
    /// Requests per period.
    pub limit: u64,
    /// Subtracted from the limit in the initial period.
    pub offset: u64,
    /// The period.
    pub period: Period,
    /// Index of the plan's initial period (where `offset` applies).
    pub initial_index: i64,
    /// Stored count, `None` when absent.
    pub state: Option<QuotaState>,
    /// An `UpdateUsage` override: `(period index, limit)` (ignored in other periods).
    pub override_limit: Option<(i64, u64)>,
}

/// A stored quota count: `used` units in period `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaState {
    /// Period index the count belongs to.
    pub index: i64,
    /// Units used in that period.
    pub used: u64,
}

/// The quota as reported after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaReport {
    /// Current period index.
    pub index: i64,
    /// Units used in the current period (after this request if it was admitted).
    pub used: u64,
    /// The limit in force in the current period.
    pub limit: u64,
}

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every bucket and the quota admitted the request.
    Allowed,
    /// Bucket number `bucket` (index into the check's buckets) is empty.
    Throttled {
        /// The denying bucket with the longest wait.
        bucket: usize,
    },
    /// The quota is used up for this period.
    QuotaExceeded,
}

/// The full result of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The decision.
    pub verdict: Verdict,
    /// Exact wait before retrying (`None` on allow, or when the request can never pass).
    pub retry_after_us: Option<u64>,
    /// Tokens left per bucket after this request.
    pub remaining: Vec<u64>,
    /// The quota after this request.
    pub quota: Option<QuotaReport>,
    /// New TAT per bucket, to write if `commit`.
    pub new_tats: Vec<u64>,
    /// New quota count, to write if `commit`.
    pub new_quota: Option<QuotaState>,
}

impl CheckResult {
    /// Whether the store must write `new_tats` / `new_quota` (allowed and not a dry run).
    pub fn allowed(&self) -> bool {
        self.verdict == Verdict::Allowed
    }
}

/// Decides a cost-`cost` request at `now` (µs) against `buckets` and `quota`.
pub fn evaluate(
    buckets: &[BucketInput],
    quota: Option<&QuotaInput>,
    now: u64,
    cost: u64,
) -> CheckResult {
    let mut new_tats = Vec::with_capacity(buckets.len());
    let mut denied: Option<(usize, Option<u64>)> = None;
    for (i, b) in buckets.iter().enumerate() {
        match gcra::check(&b.limit, b.tat, now, cost) {
            Gcra::Allowed { tat } => new_tats.push(tat),
            Gcra::Denied { retry_after_us } => {
                new_tats.push(b.tat.unwrap_or(now));
                // Report the bucket with the longest wait; "never" beats any wait.
                let worse = match (denied, retry_after_us) {
                    (None, _) => true,
                    (Some((_, None)), _) => false,
                    (Some(_), None) => true,
                    (Some((_, Some(a))), Some(b)) => b > a,
                };
                if worse {
                    denied = Some((i, retry_after_us));
                }
            }
        }
    }

    let quota_now = quota.map(|q| {
        let index = quota::period_index(q.period, now);
        let used = match q.state {
            Some(s) if s.index == index => s.used,
            _ => 0,
        };
        let limit = match q.override_limit {
            Some((i, l)) if i == index => l,
            _ => quota::effective_limit(q.limit, q.offset, index, q.initial_index),
        };
        (q.period, QuotaReport { index, used, limit })
    });

    let (verdict, retry_after_us) = match denied {
        Some((bucket, retry)) => (Verdict::Throttled { bucket }, retry),
        None => match quota_now {
            Some((period, r)) if r.used + cost > r.limit => {
                let end = quota::period_end(period, r.index);
                (
                    Verdict::QuotaExceeded,
                    Some((end - now as i64).max(0) as u64),
                )
            }
            _ => (Verdict::Allowed, None),
        },
    };

    let allowed = verdict == Verdict::Allowed;
    let remaining = buckets
        .iter()
        .zip(&new_tats)
        .map(|(b, &t)| {
            gcra::remaining(
                &b.limit,
                Some(if allowed { t } else { b.tat.unwrap_or(now) }),
                now,
            )
        })
        .collect();
    let report = quota_now.map(|(_, mut r)| {
        if allowed {
            r.used += cost;
        }
        r
    });
    CheckResult {
        verdict,
        retry_after_us,
        remaining,
        quota: report,
        new_tats,
        new_quota: report.map(|r| QuotaState {
            index: r.index,
            used: r.used,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lim(rate: f64, burst: u64) -> Limit {
        Limit::try_new(rate, burst).expect("valid test limit")
    }

    #[test]
    fn throttle_takes_no_quota_and_quota_takes_no_tokens() {
        let now = 1_800_000_000_000_000;
        let q = QuotaInput {
            limit: 1,
            offset: 0,
            period: Period::Day,
            initial_index: 0,
            state: None,
            override_limit: None,
        };
        // Empty bucket: throttled, the quota count stays 0.
        let empty = BucketInput {
            limit: lim(1.0, 1),
            tat: Some(now + 1_000_000),
        };
        let r = evaluate(&[empty], Some(&q), now, 1);
        assert_eq!(r.verdict, Verdict::Throttled { bucket: 0 });
        assert_eq!(r.quota.map(|q| q.used), Some(0));
        assert_eq!(r.retry_after_us, Some(1_000_000));
        // Quota used up: rejected, the bucket keeps its tokens.
        let full = BucketInput {
            limit: lim(1.0, 5),
            tat: None,
        };
        let used = QuotaInput {
            state: Some(QuotaState {
                index: quota::period_index(Period::Day, now),
                used: 1,
            }),
            ..q
        };
        let r = evaluate(&[full], Some(&used), now, 1);
        assert_eq!(r.verdict, Verdict::QuotaExceeded);
        assert_eq!(r.remaining, vec![5]);
    }

    #[test]
    fn stale_period_counts_as_zero() {
        let now = 1_800_000_000_000_000;
        let q = QuotaInput {
            limit: 3,
            offset: 0,
            period: Period::Day,
            initial_index: 0,
            state: Some(QuotaState { index: 1, used: 3 }),
            override_limit: None,
        };
        let r = evaluate(&[], Some(&q), now, 2);
        assert!(r.allowed());
        assert_eq!(r.quota.map(|q| (q.used, q.limit)), Some((2, 3)));
    }

    #[test]
    fn override_replaces_the_limit_in_its_period_only() {
        let now = 1_800_000_000_000_000;
        let index = quota::period_index(Period::Day, now);
        let q = QuotaInput {
            limit: 3,
            offset: 0,
            period: Period::Day,
            initial_index: 0,
            state: Some(QuotaState { index, used: 3 }),
            override_limit: Some((index, 5)),
        };
        let r = evaluate(&[], Some(&q), now, 2);
        assert!(r.allowed());
        assert_eq!(r.quota.map(|q| (q.used, q.limit)), Some((5, 5)));
        assert_eq!(
            evaluate(&[], Some(&q), now, 3).verdict,
            Verdict::QuotaExceeded
        );
        let stale = QuotaInput {
            override_limit: Some((index - 1, 100)),
            ..q
        };
        assert_eq!(
            evaluate(&[], Some(&stale), now, 1).verdict,
            Verdict::QuotaExceeded
        );
    }

    #[test]
    fn stale_override_is_ignored() {
        let now = 1_800_000_000_000_000;
        let q = QuotaInput {
            limit: 3,
            offset: 0,
            period: Period::Day,
            initial_index: 0,
            state: Some(QuotaState { index: 1, used: 3 }),
            override_limit: Some((1, 0)),
        };
        let r = evaluate(&[], Some(&q), now, 2);
        assert!(r.allowed());
        assert_eq!(r.quota.map(|q| (q.used, q.limit)), Some((2, 3)));
    }

    /// A naive token bucket with fractional tokens, refilled continuously.
    struct Naive {
        tokens: f64,
        last: u64,
        rate_per_us: f64,
        burst: f64,
    }

    impl Naive {
        fn take(&mut self, now: u64, n: u64) -> bool {
            self.tokens =
                (self.tokens + (now - self.last) as f64 * self.rate_per_us).min(self.burst);
            self.last = now;
            if self.tokens + 1e-9 >= n as f64 {
                self.tokens -= n as f64;
                true
            } else {
                false
            }
        }
    }

    proptest! {
        /// GCRA agrees with a naive token bucket whenever the naive one is far from a boundary,
        /// the burst is never exceeded, and the promised retry_after is exact.
        #[test]
        fn gcra_is_a_token_bucket(
            interval in 1_000u64..2_000_000,
            burst in 1u64..20,
            steps in proptest::collection::vec((0u64..3_000_000, 1u64..4), 1..60),
        ) {
            let limit = Limit::try_new(1_000_000.0 / interval as f64, burst).unwrap();
            let t = limit.interval_us();
            let mut naive = Naive { tokens: burst as f64, last: 0, rate_per_us: 1.0 / t as f64, burst: burst as f64 };
            let mut tat = None;
            let mut now = 1_000_000u64;
            naive.last = now;
            let mut admitted_in_window: Vec<(u64, u64)> = vec![];
            for (dt, cost) in steps {
                now += dt;
                let r = evaluate(&[BucketInput { limit, tat }], None, now, cost);
                let naive_ok = naive.take(now, cost);
                prop_assert_eq!(r.allowed(), naive_ok, "gcra and naive disagree at {} cost {}", now, cost);
                if r.allowed() {
                    tat = Some(r.new_tats[0]);
                    admitted_in_window.push((now, cost));
                } else if let Some(wait) = r.retry_after_us {
                    // Exact: at now+wait it passes, at now+wait-1 it does not.
                    let at = evaluate(&[BucketInput { limit, tat }], None, now + wait, cost);
                    prop_assert!(at.allowed());
                    if wait > 0 {
                        let before = evaluate(&[BucketInput { limit, tat }], None, now + wait - 1, cost);
                        prop_assert!(!before.allowed());
                    }
                }
                // Never more than burst + rate·window in any window ending now.
                for &(start, _) in &admitted_in_window {
                    let sum: u64 = admitted_in_window.iter().filter(|(at, _)| *at >= start).map(|(_, c)| c).sum();
                    let allowance = burst + (now - start) / t;
                    prop_assert!(sum <= allowance, "admitted {} > {} since {}", sum, allowance, start);
                }
            }
        }
    }
}
