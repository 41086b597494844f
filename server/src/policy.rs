//! The failure-mode policy: what a check answers when the store could not (timeout, circuit
//! open, connection or backend error). This is the one place that reads
//! [`crate::config::FailureMode`]; the key check (`pipeline`) and the Envoy
//! descriptor check ([`crate::descriptor_check`]) both ask it.
//!
//! Owns: the rule "a plan's `failure_mode` overrides the catalog's; open allows (marked
//! degraded), closed is unavailable; a check that only counts usage is allowed uncounted".
//! Must not import: `api` (no `tonic::Status` here), `pipeline`, the store implementations.
use crate::config::FailureMode;

/// What to do with a check the store could not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreFailure {
    /// Nothing limits the request (the call would only have counted daily usage): allow it, not
    /// degraded — no decision changed, the day's count misses this request.
    AllowUncounted,
    /// `failure_mode: open`: allow, marked degraded in the answer and the metrics.
    AllowDegraded,
    /// `failure_mode: closed`: no decision; the caller answers `UNAVAILABLE`.
    Unavailable,
}

/// The policy for a failed store call: `limits` says whether the call carried any bucket or
/// quota (a decision hung on it), `plan` is the plan's own `failure_mode` (if any; `None` for
/// checks without a plan, such as Envoy's generic descriptors), `catalog` the global one.
pub fn on_store_failure(
    limits: bool,
    plan: Option<FailureMode>,
    catalog: FailureMode,
) -> OnStoreFailure {
    if !limits {
        return OnStoreFailure::AllowUncounted;
    }
    match plan.unwrap_or(catalog) {
        FailureMode::Open => OnStoreFailure::AllowDegraded,
        FailureMode::Closed => OnStoreFailure::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureMode::{Closed, Open};

    #[test]
    fn the_plan_overrides_the_catalog() {
        let table = [
            (None, Open, OnStoreFailure::AllowDegraded),
            (None, Closed, OnStoreFailure::Unavailable),
            (Some(Open), Closed, OnStoreFailure::AllowDegraded),
            (Some(Closed), Open, OnStoreFailure::Unavailable),
            (Some(Open), Open, OnStoreFailure::AllowDegraded),
            (Some(Closed), Closed, OnStoreFailure::Unavailable),
        ];
        for (plan, catalog, want) in table {
            assert_eq!(
                on_store_failure(true, plan, catalog),
                want,
                "{plan:?} {catalog:?}"
            );
        }
    }

    #[test]
    fn counting_only_is_allowed_whatever_the_mode() {
        for plan in [None, Some(Open), Some(Closed)] {
            for catalog in [Open, Closed] {
                assert_eq!(
                    on_store_failure(false, plan, catalog),
                    OnStoreFailure::AllowUncounted
                );
            }
        }
    }
}
