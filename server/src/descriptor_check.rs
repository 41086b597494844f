//! The check of generic rate-limit descriptors (Envoy RLS `descriptors:` rules and
//! `RateLimitOverride`s): which store operations charge them, and what a store failure means.
//!
//! Owns: grouping descriptors into atomic store calls (all of a group admit or none is
//! charged; shadow rules are charged apart, so they never block), the bucket each descriptor
//! charges ([`Keys::DESCRIPTOR_FIELD`] in the descriptor's own hash), and applying the
//! failure-mode policy ([`crate::policy`]) to these calls. The wire layer (`api/envoy.rs`) maps
//! descriptors to [`DescriptorHit`]s and [`DescriptorVerdict`]s back to Envoy's answer.
//! Must not import: `api` (no protos, no `tonic::Status`), the store implementations.
use std::sync::Arc;

use crate::limiter::{Limit, Verdict};
use crate::metrics as m;
use crate::pipeline::{CheckError, Checker};
use crate::policy::{self, OnStoreFailure};
use crate::store::keys::Keys;
use crate::store::{BucketOp, CheckOp};

/// One descriptor to charge: the bucket of its rule.
#[derive(Debug, Clone)]
pub struct DescriptorHit {
    /// The store hash of the descriptor's bucket
    /// ([`DescriptorRules::bucket_hash`](crate::catalog::descriptors::DescriptorRules::bucket_hash)).
    pub hash: Arc<str>,
    /// The rule's limit.
    pub limit: Limit,
    /// Units to take.
    pub cost: u64,
    /// A shadow rule: counted, never denies the request.
    pub shadow: bool,
}

/// What the store said about one [`DescriptorHit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DescriptorVerdict {
    /// This descriptor's bucket denied its group (for a shadow rule: would have denied).
    pub denied: bool,
    /// Units left in the bucket after the call.
    pub remaining: u64,
    /// The group's exact wait when it was denied (`None`: allowed, or it can never pass).
    pub retry_after_us: Option<u64>,
    /// The store failed and `failure_mode` is open: allowed without counting.
    pub degraded: bool,
}

/// The store operation charging `hits` together (one atomic call): every bucket must admit.
/// The first hit's hash owns the call. `None` for no hits.
pub fn descriptor_op(hits: &[&DescriptorHit], cost: u64) -> Option<CheckOp> {
    let first = hits.first()?;
    Some(CheckOp {
        owner: first.hash.clone(),
        buckets: hits
            .iter()
            .map(|h| BucketOp {
                hash: h.hash.clone(),
                field: Keys::DESCRIPTOR_FIELD.into(),
                limit: h.limit,
            })
            .collect(),
        quota: None,
        cost,
        now: None,
        request_id: None,
        dry_run: false,
        usage: None,
        lease: None,
    })
}

/// Groups of `hits` (indexes) charged by one call each: one per (cost, shadow), in the order
/// they first appear.
fn groups(hits: &[DescriptorHit]) -> Vec<(u64, Vec<usize>)> {
    let mut out: Vec<(u64, bool, Vec<usize>)> = Vec::new();
    for (i, h) in hits.iter().enumerate() {
        match out
            .iter_mut()
            .find(|(c, s, _)| *c == h.cost && *s == h.shadow)
        {
            Some(g) => g.2.push(i),
            None => out.push((h.cost, h.shadow, vec![i])),
        }
    }
    out.into_iter().map(|(c, _, m)| (c, m)).collect()
}

impl Checker {
    /// Charges generic descriptors: one atomic store call per (cost, shadow) group. Answers one
    /// verdict per hit, in order. A failed call is allowed degraded when the catalog's
    /// `failure_mode` is open (descriptors have no plan) and is
    /// [`CheckError::Unavailable`] when it is closed.
    pub async fn check_descriptors(
        &self,
        hits: &[DescriptorHit],
    ) -> Result<Vec<DescriptorVerdict>, CheckError> {
        let mut out = vec![DescriptorVerdict::default(); hits.len()];
        for (cost, members) in groups(hits) {
            let refs: Vec<&DescriptorHit> = members.iter().map(|&i| &hits[i]).collect();
            let Some(op) = descriptor_op(&refs, cost) else {
                continue;
            };
            match self.store_check(&op).await {
                Ok(res) => {
                    for (b, &i) in members.iter().enumerate() {
                        let denied =
                            matches!(res.verdict, Verdict::Throttled { bucket } if bucket == b);
                        out[i] = DescriptorVerdict {
                            denied,
                            remaining: res.remaining.get(b).copied().unwrap_or(0),
                            retry_after_us: res.retry_after_us,
                            degraded: false,
                        };
                    }
                }
                Err(e) => {
                    let mode = self.catalog().failure_mode;
                    match policy::on_store_failure(true, None, mode) {
                        OnStoreFailure::Unavailable => return Err(CheckError::Unavailable(e)),
                        OnStoreFailure::AllowDegraded | OnStoreFailure::AllowUncounted => {
                            tracing::warn!(error = %e, "store call failed; descriptors allowed (failure_mode open)");
                            metrics::counter!(m::DEGRADED_TOTAL).increment(members.len() as u64);
                            for i in members {
                                out[i].degraded = true;
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(hash: &str, cost: u64, shadow: bool) -> DescriptorHit {
        DescriptorHit {
            hash: hash.into(),
            limit: Limit::try_new(10.0, 5).expect("limit"),
            cost,
            shadow,
        }
    }

    #[test]
    fn groups_by_cost_and_shadow_in_first_appearance_order() {
        let hits = [
            hit("a", 1, false),
            hit("b", 2, false),
            hit("c", 1, true),
            hit("d", 1, false),
            hit("e", 2, false),
        ];
        assert_eq!(
            groups(&hits),
            vec![(1, vec![0, 3]), (2, vec![1, 4]), (1, vec![2])]
        );
    }

    #[test]
    fn one_op_charges_every_bucket_of_a_group() {
        let hits = [hit("tg:{d:1}", 3, false), hit("tg:{d:2}", 3, false)];
        let op = descriptor_op(&hits.iter().collect::<Vec<_>>(), 3).expect("op");
        assert_eq!(&*op.owner, "tg:{d:1}");
        assert_eq!(op.cost, 3);
        assert_eq!(op.buckets.len(), 2);
        assert!(op.buckets.iter().all(|b| b.field == Keys::DESCRIPTOR_FIELD));
        assert_eq!(&*op.buckets[1].hash, "tg:{d:2}");
        assert!(op.quota.is_none() && op.usage.is_none() && op.request_id.is_none());
        assert!(descriptor_op(&[], 1).is_none());
    }
}
