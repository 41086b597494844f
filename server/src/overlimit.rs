//! The local over-limit cache (DESIGN §6): once the store has said a bucket is empty until T,
//! or a quota is used up until its period ends, checks that need that bucket or quota are
//! denied here, with no store call, until then.
//!
//! Exact, never stricter than the store:
//! - A denial is remembered only when it holds for **every** cost: a bucket until the time a
//!   cost-1 request would pass (`allow_at(1)`), a quota only when nothing at all is left.
//! - Times are kept on the local clock, anchored at the moment *before* the store call was
//!   sent: the store decided at or after that moment, so the local expiry is at or before the
//!   store's. Clock skew between this host and Redis plays no part.
//! - Nothing but time can refill a bucket or a quota, except `UpdateUsage` and an admin reset:
//!   those publish an event and every instance drops the owner's entries
//!   ([`OverLimitCache::invalidate_owner`]). A new catalog (plans changed) makes every entry
//!   stale through its generation.
//! - A denial is kept with the owner's invalidation stamp ([`crate::stamps`]) read *before*
//!   the store call that answered it, and served only while that is still the owner's stamp:
//!   a check that started before an `UpdateUsage` cannot leave a denial that outlives it, even
//!   when its answer arrives after the event was handled.
//! - Idempotent replays (`request_id`) always go to the store: a replay must return the stored
//!   answer, which may be an allow.
//!
//! Imports `store` (operations and outcomes), `stamps` and `limiter`; must not import
//! `pipeline` (whose rate-store layer calls it) or `api`.
use std::sync::Arc;

use crate::limiter::evaluate::QuotaReport;
use crate::limiter::{Period, Verdict, quota};
use crate::stamps::Stamps;
use crate::store::{CheckOp, CheckOutcome};

/// One remembered denial.
#[derive(Debug, Clone)]
enum Denial {
    /// Bucket `(hash, field)` admits a cost-1 request at `until_local_us`; `interval_us` per
    /// further unit.
    Bucket {
        hash: Arc<str>,
        field: String,
        until_local_us: u64,
        interval_us: u64,
    },
    /// The quota `field` of the owner is used up until `until_local_us` (its period's end).
    Quota {
        field: Arc<str>,
        until_local_us: u64,
        report: QuotaReport,
        period: Period,
    },
}

#[derive(Debug, Clone, Default)]
struct OwnerDenials {
    generation: u64,
    /// The owner's invalidation stamp before the store calls that answered these.
    stamp: u64,
    denials: Vec<Denial>,
}

/// Remembered denials by owner hash (the API key's, or the stage's, or a descriptor's).
pub struct OverLimitCache {
    map: moka::sync::Cache<Arc<str>, Arc<OwnerDenials>>,
    stamps: Arc<Stamps>,
}

impl std::fmt::Debug for OverLimitCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverLimitCache")
            .field("entries", &self.map.entry_count())
            .finish()
    }
}

/// Longest an owner's entries are kept without being looked at (they are also dropped when
/// every denial in them has expired and the owner is checked again).
const IDLE: std::time::Duration = std::time::Duration::from_secs(3600);

impl OverLimitCache {
    /// A cache of at most `capacity` owners, with stamps of its own.
    pub fn new(capacity: u64) -> Self {
        Self::with_stamps(capacity, Arc::default())
    }

    /// A cache of at most `capacity` owners whose entries hold while `stamps` say so (shared
    /// with the local leases, so one event invalidates both).
    pub fn with_stamps(capacity: u64, stamps: Arc<Stamps>) -> Self {
        Self {
            map: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(IDLE)
                .build(),
            stamps,
        }
    }

    /// `owner`'s invalidation stamp now: read it before the store call whose answer goes to
    /// [`OverLimitCache::record`].
    pub fn stamp(&self, owner: &str) -> u64 {
        self.stamps.of(owner)
    }

    /// The store's answer for `op` if a remembered denial covers it at local time `now_us`.
    pub fn lookup(&self, op: &CheckOp, generation: u64, now_us: u64) -> Option<CheckOutcome> {
        if op.request_id.is_some() {
            return None;
        }
        let entry = self.map.get(&*op.owner)?;
        if entry.generation != generation || entry.stamp != self.stamps.of(&op.owner) {
            return None;
        }
        // The longest wait among the live denials that apply, like the store reports.
        let mut best: Option<CheckOutcome> = None;
        for d in &entry.denials {
            let out = match d {
                Denial::Bucket {
                    hash,
                    field,
                    until_local_us,
                    interval_us,
                } if *until_local_us > now_us => {
                    let Some(i) = op
                        .buckets
                        .iter()
                        .position(|b| *b.hash == **hash && b.field == *field)
                    else {
                        continue;
                    };
                    let retry = until_local_us - now_us + interval_us * (op.cost - 1);
                    CheckOutcome {
                        verdict: Verdict::Throttled { bucket: i },
                        retry_after_us: Some(retry),
                        remaining: vec![0; op.buckets.len()],
                        quota: None,
                        now_us,
                        replayed: false,
                    }
                }
                Denial::Quota {
                    field,
                    until_local_us,
                    report,
                    period,
                } if *until_local_us > now_us => {
                    match &op.quota {
                        Some(q) if q.field == *field && q.period == *period => {}
                        _ => continue,
                    }
                    CheckOutcome {
                        verdict: Verdict::QuotaExceeded,
                        retry_after_us: Some(until_local_us - now_us),
                        remaining: vec![0; op.buckets.len()],
                        quota: Some(*report),
                        now_us,
                        replayed: false,
                    }
                }
                _ => continue,
            };
            let longer = match &best {
                None => true,
                Some(b) => out.retry_after_us > b.retry_after_us,
            };
            if longer {
                best = Some(out);
            }
        }
        best
    }

    /// Remembers what `out` (the store's answer to `op`, sent at local time `sent_local_us`
    /// when the owner's stamp was `stamp`) says about empty buckets and used-up quotas.
    pub fn record(
        &self,
        op: &CheckOp,
        out: &CheckOutcome,
        generation: u64,
        sent_local_us: u64,
        stamp: u64,
    ) {
        if op.request_id.is_some() || out.replayed || stamp != self.stamps.of(&op.owner) {
            // (An invalidation since the call was sent: its answer may predate it.)
            return;
        }
        // Store time → local time, anchored before the call (see the module docs).
        let local = |store_us: u64| sent_local_us + store_us.saturating_sub(out.now_us);
        let denial = match out.verdict {
            Verdict::Throttled { bucket } => {
                let (Some(b), Some(retry)) = (op.buckets.get(bucket), out.retry_after_us) else {
                    return;
                };
                // When a cost-1 request passes: the reported wait is for `op.cost`.
                let extra = b.limit.interval_us() * (op.cost - 1);
                if retry <= extra {
                    return;
                }
                Denial::Bucket {
                    hash: b.hash.clone(),
                    field: b.field.clone(),
                    until_local_us: local(out.now_us + retry - extra),
                    interval_us: b.limit.interval_us(),
                }
            }
            Verdict::QuotaExceeded => {
                let (Some(q), Some(r)) = (&op.quota, out.quota) else {
                    return;
                };
                if r.used < r.limit {
                    // Something is left for a smaller cost.
                    return;
                }
                let end = quota::period_start(q.period, r.index + 1).max(0) as u64;
                Denial::Quota {
                    field: q.field.clone(),
                    until_local_us: local(end),
                    report: r,
                    period: q.period,
                }
            }
            Verdict::Allowed => return,
        };
        let prev = self.map.get(&*op.owner);
        let mut next = match prev {
            Some(p) if p.generation == generation && p.stamp == stamp => (*p).clone(),
            _ => OwnerDenials {
                generation,
                stamp,
                denials: Vec::new(),
            },
        };
        // Drop what has expired and what the new denial replaces.
        let now = sent_local_us;
        next.denials.retain(|d| match (d, &denial) {
            (Denial::Bucket { until_local_us, .. }, _)
            | (Denial::Quota { until_local_us, .. }, _)
                if *until_local_us <= now =>
            {
                false
            }
            (
                Denial::Bucket { hash, field, .. },
                Denial::Bucket {
                    hash: h, field: f, ..
                },
            ) => !(hash == h && field == f),
            (Denial::Quota { field, .. }, Denial::Quota { field: f, .. }) => field != f,
            _ => true,
        });
        next.denials.push(denial);
        self.map.insert(op.owner.clone(), Arc::new(next));
    }

    /// Forgets everything (and bumps every stamp: answers in flight are not kept either).
    pub fn invalidate_all(&self) {
        self.stamps.bump_all();
        self.map.invalidate_all();
    }

    /// Forgets every denial of `owner` (UpdateUsage, an admin reset), and bumps its stamp:
    /// answers to store calls sent before now are not kept either.
    pub fn invalidate_owner(&self, owner: &str) {
        self.stamps.bump(owner);
        self.map.invalidate(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::Limit;
    use crate::store::{BucketOp, QuotaOp};

    fn op(cost: u64, quota: bool) -> CheckOp {
        CheckOp {
            owner: "tg:{k:a}".into(),
            buckets: vec![BucketOp {
                hash: "tg:{k:a}".into(),
                field: "t:p".into(),
                limit: Limit::try_new(1.0, 2).expect("limit"),
            }],
            quota: quota.then(|| QuotaOp {
                field: "q:p".into(),
                override_field: "ql:p".into(),
                limit: 10,
                offset: 0,
                initial_index: 0,
                period: Period::Day,
            }),
            cost,
            now: None,
            request_id: None,
            dry_run: false,
            usage: None,
            lease: None,
        }
    }

    fn throttled(now: u64, retry: u64) -> CheckOutcome {
        CheckOutcome {
            verdict: Verdict::Throttled { bucket: 0 },
            retry_after_us: Some(retry),
            remaining: vec![0],
            quota: None,
            now_us: now,
            replayed: false,
        }
    }

    #[test]
    fn a_bucket_denial_holds_until_a_cost_one_request_passes() {
        let c = OverLimitCache::new(100);
        // Store clock 5 s ahead of ours: the local expiry is anchored at our send time.
        c.record(
            &op(1, false),
            &throttled(5_000_000, 400_000),
            1,
            0,
            c.stamp("tg:{k:a}"),
        );
        let hit = c.lookup(&op(1, false), 1, 100_000).expect("denied locally");
        assert_eq!(hit.verdict, Verdict::Throttled { bucket: 0 });
        assert_eq!(hit.retry_after_us, Some(300_000));
        // A cost of 3 waits two more intervals.
        let hit = c.lookup(&op(3, false), 1, 100_000).expect("denied locally");
        assert_eq!(hit.retry_after_us, Some(300_000 + 2_000_000));
        // At T: the store decides again.
        assert!(c.lookup(&op(1, false), 1, 400_000).is_none());
        // Another catalog generation: stale.
        assert!(c.lookup(&op(1, false), 2, 100_000).is_none());
        // Replays always go to the store.
        let mut replay = op(1, false);
        replay.request_id = Some("r".into());
        assert!(c.lookup(&replay, 1, 100_000).is_none());
    }

    #[test]
    fn only_denials_that_hold_for_every_cost_are_kept() {
        let c = OverLimitCache::new(100);
        // Cost 3 denied for 1.5 s at 1 s per token: a cost-1 request would pass 2 s earlier,
        // i.e. now, so nothing is remembered.
        c.record(
            &op(3, false),
            &throttled(0, 1_500_000),
            1,
            0,
            c.stamp("tg:{k:a}"),
        );
        assert!(c.lookup(&op(1, false), 1, 1).is_none());
        // A quota with units left for a smaller cost is not remembered either.
        let partial = CheckOutcome {
            verdict: Verdict::QuotaExceeded,
            retry_after_us: Some(10),
            remaining: vec![1],
            quota: Some(QuotaReport {
                index: 20_000,
                used: 9,
                limit: 10,
            }),
            now_us: 0,
            replayed: false,
        };
        c.record(&op(5, true), &partial, 1, 0, c.stamp("tg:{k:a}"));
        assert!(c.lookup(&op(1, true), 1, 1).is_none());
    }

    #[test]
    fn a_used_up_quota_is_denied_until_the_period_ends_or_invalidated() {
        let c = OverLimitCache::new(100);
        let day = 20_000i64;
        let now = (day as u64) * 86_400_000_000 + 3_600_000_000;
        let out = CheckOutcome {
            verdict: Verdict::QuotaExceeded,
            retry_after_us: Some(23 * 3_600_000_000),
            remaining: vec![1],
            quota: Some(QuotaReport {
                index: day,
                used: 10,
                limit: 10,
            }),
            now_us: now,
            replayed: false,
        };
        c.record(&op(1, true), &out, 7, now, c.stamp("tg:{k:a}"));
        let hit = c.lookup(&op(1, true), 7, now + 1).expect("denied locally");
        assert_eq!(hit.verdict, Verdict::QuotaExceeded);
        assert_eq!(hit.retry_after_us, Some(23 * 3_600_000_000 - 1));
        assert_eq!(hit.quota.map(|q| q.used), Some(10));
        // An op without the quota (another route, say) is not affected.
        assert!(c.lookup(&op(1, false), 7, now + 1).is_none());
        c.invalidate_owner("tg:{k:a}");
        assert!(c.lookup(&op(1, true), 7, now + 1).is_none());
    }

    fn used_up(now: u64) -> CheckOutcome {
        CheckOutcome {
            verdict: Verdict::QuotaExceeded,
            retry_after_us: Some(3_600_000_000),
            remaining: vec![1],
            quota: Some(QuotaReport {
                index: (now / 86_400_000_000) as i64,
                used: 10,
                limit: 10,
            }),
            now_us: now,
            replayed: false,
        }
    }

    /// The race an `UpdateUsage` must win: a check is sent (stamp read), the UpdateUsage's
    /// event is handled while the check is in flight, then the check's denial arrives. It was
    /// decided before the UpdateUsage, so it is not served after it; a check sent after the
    /// event is remembered again. Time is explicit (a fake local clock in µs).
    #[test]
    fn a_denial_sent_before_an_invalidation_does_not_outlive_it() {
        let c = OverLimitCache::new(100);
        let now = 20_000 * 86_400_000_000 + 1_000_000;
        let before = c.stamp("tg:{k:a}");
        c.invalidate_owner("tg:{k:a}"); // UpdateUsage seen via pub/sub
        c.record(&op(1, true), &used_up(now), 7, now, before);
        assert!(
            c.lookup(&op(1, true), 7, now + 1).is_none(),
            "a denial from before the UpdateUsage is served after it"
        );
        // Recorded first, invalidated while another answer is in flight: neither is served.
        let s = c.stamp("tg:{k:a}");
        c.record(&op(1, true), &used_up(now), 7, now, s);
        assert!(c.lookup(&op(1, true), 7, now + 1).is_some());
        let in_flight = c.stamp("tg:{k:a}");
        c.invalidate_owner("tg:{k:a}");
        c.record(&op(1, true), &used_up(now), 7, now, in_flight);
        assert!(c.lookup(&op(1, true), 7, now + 2).is_none());
        // Everything invalidated (the event stream restarted): the same.
        let s = c.stamp("tg:{k:a}");
        c.invalidate_all();
        c.record(&op(1, true), &used_up(now), 7, now, s);
        assert!(c.lookup(&op(1, true), 7, now + 2).is_none());
        // Sent after the invalidation: remembered.
        let after = c.stamp("tg:{k:a}");
        c.record(&op(1, true), &used_up(now), 7, now, after);
        assert!(c.lookup(&op(1, true), 7, now + 2).is_some());
    }

    /// A stale entry written *after* the stamp was checked (the record/invalidate interleaving)
    /// is caught at lookup: the entry carries the stamp it was recorded against.
    #[test]
    fn an_entry_carries_its_stamp() {
        let stamps = Arc::new(Stamps::new());
        let c = OverLimitCache::with_stamps(100, stamps.clone());
        let now = 20_000 * 86_400_000_000 + 1_000_000;
        let s = c.stamp("tg:{k:a}");
        c.record(&op(1, true), &used_up(now), 7, now, s);
        // The event bumps the shared stamps (the checker's task) before the entry is dropped.
        stamps.bump("tg:{k:a}");
        assert!(c.lookup(&op(1, true), 7, now + 1).is_none());
    }
}
