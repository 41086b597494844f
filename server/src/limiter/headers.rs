//! `RateLimit-Policy` and `RateLimit` response fields (draft-ietf-httpapi-ratelimit-headers-10,
//! structured-field lists) and `Retry-After`.
//!
//! ```text
//! RateLimit-Policy: "burst";q=200;w=2, "monthly";q=1000000;w=2592000
//! RateLimit: "burst";r=199;t=1, "monthly";r=999999;t=1843200
//! ```
//! The throttle policy's window `w` is the time an empty bucket takes to fill (`burst / rate`);
//! its `t` is the time until it is full again. The quota policy's `w` is the period length and
//! `t` the time until the period resets. Seconds are rounded up, so a client that waits `t`
//! never retries early.
use std::fmt::Write;

/// Header names, lower-case as HTTP/2 requires.
pub const RATELIMIT_POLICY: &str = "ratelimit-policy";
/// See [`RATELIMIT_POLICY`].
pub const RATELIMIT: &str = "ratelimit";
/// Sent on 429 answers.
pub const RETRY_AFTER: &str = "retry-after";
/// AWS's error type header.
pub const AMZN_ERROR_TYPE: &str = "x-amzn-errortype";

/// One policy to advertise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The policy's name (an sf-string): "burst", "daily", ...
    pub name: &'static str,
    /// Quota units in the window.
    pub quota: u64,
    /// Window, seconds.
    pub window_s: u64,
    /// Units left.
    pub remaining: u64,
    /// Seconds until the units are all back.
    pub reset_s: u64,
}

/// Microseconds → whole seconds, rounded up.
pub fn ceil_secs(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

/// Renders `(RateLimit-Policy, RateLimit)` values; `None` when there is no policy.
pub fn render(policies: &[Policy]) -> Option<(String, String)> {
    if policies.is_empty() {
        return None;
    }
    let mut policy = String::with_capacity(48 * policies.len());
    let mut state = String::with_capacity(40 * policies.len());
    for (i, p) in policies.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        // Writing to a String cannot fail.
        let _ = write!(
            policy,
            "{sep}\"{}\";q={};w={}",
            p.name,
            p.quota,
            p.window_s.max(1)
        );
        let _ = write!(
            state,
            "{sep}\"{}\";r={};t={}",
            p.name, p.remaining, p.reset_s
        );
    }
    Some((policy, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_structured_field_lists() {
        let (p, s) = render(&[
            Policy {
                name: "burst",
                quota: 100,
                window_s: 1,
                remaining: 99,
                reset_s: 1,
            },
            Policy {
                name: "daily",
                quota: 1000,
                window_s: 86_400,
                remaining: 42,
                reset_s: 3_600,
            },
        ])
        .expect("two policies");
        assert_eq!(p, "\"burst\";q=100;w=1, \"daily\";q=1000;w=86400");
        assert_eq!(s, "\"burst\";r=99;t=1, \"daily\";r=42;t=3600");
        assert!(render(&[]).is_none());
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(2_000_000), 2);
    }
}
