//! One conformance suite per store trait (`RateStore`, `UsageStore`, `DefsStore`, `TicketStore`,
//! `CacheStore`) for every store: each test is an `async fn` generic over the traits it
//! exercises, and `conformance!` instantiates it against the memory store, a real
//! `redis-server` and a real Redis Cluster. Time is
//! explicit (`CheckOp::now`), driven by one fake clock, so both stores see the same instants.
//! A property test then drives both with the same random operations and requires identical
//! outcomes.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use tollgate_server::clock::FakeClock;
use tollgate_server::limiter::quota::{days_from_civil, period_end, period_index};
use tollgate_server::limiter::{Limit, Period, Verdict};
use tollgate_server::store::memory::MemoryStore;
use tollgate_server::store::redis::{RedisOptions, RedisStore, Topology};
use tollgate_server::store::{
    AnyStore, BucketOp, CacheStore, CheckOp, CheckOutcome, DefKind, DefWrite, DefsStore,
    EventStore, QuotaOp, RateStore, SettleOutcome, SettleStatus, TicketStore, UsageOp, UsageStore,
    ticket,
};
use tollgate_tests::redis::RedisServer;
use tollgate_tests::redis_cluster::RedisCluster;

const DAY_US: u64 = 86_400_000_000;
/// 2026-11-26 12:00:00 UTC.
const NOON: u64 = 1_795_694_400_000_000 + 12 * 3_600_000_000 - 1_795_694_400_000_000 % DAY_US;

fn at(y: i64, m: u32, d: u32, secs: u64) -> u64 {
    days_from_civil(y, m, d) as u64 * DAY_US + secs * 1_000_000
}

fn lim(rate: f64, burst: u64) -> Limit {
    Limit::try_new(rate, burst).expect("valid test limit")
}

/// Unique names so tests sharing a Redis never collide.
fn unique(name: &str) -> Arc<str> {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}:{{k:{name}-{}}}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
    .into()
}

struct Op {
    inner: CheckOp,
}

impl Op {
    fn new(owner: &Arc<str>) -> Self {
        Self {
            inner: CheckOp {
                owner: owner.clone(),
                buckets: vec![],
                quota: None,
                cost: 1,
                now: None,
                request_id: None,
                dry_run: false,
                usage: None,
                lease: None,
            },
        }
    }
    /// Daily usage in plan `plan` (its state field is the quota's, `q:plan`).
    fn usage(mut self, retention_days: u64) -> Self {
        self.inner.usage = Some(UsageOp::new("plan", retention_days));
        self
    }
    /// Uses the store's own clock (Redis `TIME`, the memory store's clock).
    async fn run_now<S: RateStore>(&self, s: &S) -> CheckOutcome {
        s.check(&self.inner).await.expect("store call")
    }
    fn bucket(mut self, hash: &Arc<str>, field: &str, limit: Limit) -> Self {
        self.inner.buckets.push(BucketOp {
            hash: hash.clone(),
            field: field.into(),
            limit,
        });
        self
    }
    fn quota(mut self, limit: u64, offset: u64, period: Period, initial_index: i64) -> Self {
        self.inner.quota = Some(QuotaOp {
            field: "q:plan".into(),
            override_field: "ql:plan".into(),
            limit,
            offset,
            period,
            initial_index,
        });
        self
    }
    fn cost(mut self, c: u64) -> Self {
        self.inner.cost = c;
        self
    }
    fn id(mut self, id: &str) -> Self {
        self.inner.request_id = Some(id.into());
        self
    }
    fn clone_dry(&self) -> Self {
        Self {
            inner: CheckOp {
                dry_run: true,
                ..self.inner.clone()
            },
        }
    }
    fn dry(mut self) -> Self {
        self.inner.dry_run = true;
        self
    }
    async fn run<S: RateStore>(&self, s: &S, now: u64) -> CheckOutcome {
        let mut op = self.inner.clone();
        op.now = Some(now);
        s.check(&op).await.expect("store call")
    }
}

async fn burst_then_exact_retry<S: RateStore>(s: &S) {
    let k = unique("burst");
    let op = Op::new(&k).bucket(&k, "t:a", lim(2.0, 5));
    for i in 0..5 {
        let o = op.run(s, NOON).await;
        assert_eq!(o.verdict, Verdict::Allowed, "request {i}");
        assert_eq!(o.remaining, vec![4 - i]);
    }
    let o = op.run(s, NOON).await;
    assert_eq!(o.verdict, Verdict::Throttled { bucket: 0 });
    assert_eq!(o.retry_after_us, Some(500_000));
    assert_eq!(
        op.run(s, NOON + 499_999).await.verdict,
        Verdict::Throttled { bucket: 0 }
    );
    assert_eq!(op.run(s, NOON + 500_000).await.verdict, Verdict::Allowed);
}

async fn cost_n_consumes_n<S: RateStore>(s: &S) {
    let k = unique("cost");
    let op = Op::new(&k).bucket(&k, "t:a", lim(1.0, 10)).cost(4);
    assert_eq!(op.run(s, NOON).await.remaining, vec![6]);
    assert_eq!(op.run(s, NOON).await.remaining, vec![2]);
    let o = op.run(s, NOON).await;
    assert_eq!(o.verdict, Verdict::Throttled { bucket: 0 });
    assert_eq!(o.retry_after_us, Some(2_000_000));
    assert_eq!(o.remaining, vec![2]);
    // More than the burst can never pass: no retry time is promised.
    let o = Op::new(&k)
        .bucket(&k, "t:b", lim(1.0, 3))
        .cost(4)
        .run(s, NOON)
        .await;
    assert_eq!(o.verdict, Verdict::Throttled { bucket: 0 });
    assert_eq!(o.retry_after_us, None);
}

async fn quota_is_exact_and_resets<S: RateStore>(s: &S) {
    let k = unique("quota");
    let op = Op::new(&k).quota(3, 0, Period::Day, 0);
    for _ in 0..3 {
        assert_eq!(op.run(s, NOON).await.verdict, Verdict::Allowed);
    }
    let o = op.run(s, NOON).await;
    assert_eq!(o.verdict, Verdict::QuotaExceeded);
    assert_eq!(o.retry_after_us, Some(DAY_US / 2), "until midnight UTC");
    let q = o.quota.expect("quota reported");
    assert_eq!((q.used, q.limit), (3, 3));
    // Next day: a fresh count.
    let o = op.run(s, NOON + DAY_US / 2).await;
    assert_eq!(o.verdict, Verdict::Allowed);
    assert_eq!(o.quota.map(|q| q.used), Some(1));
}

async fn offset_only_in_initial_period<S: RateStore>(s: &S) {
    let k = unique("offset");
    let initial = period_index(Period::Month, NOON);
    let op = Op::new(&k).quota(5, 2, Period::Month, initial);
    let mut allowed = 0;
    for _ in 0..6 {
        if op.run(s, NOON).await.verdict == Verdict::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 3, "limit 5 minus offset 2 in the initial month");
    let next = period_end(Period::Month, initial) as u64;
    let mut allowed = 0;
    for _ in 0..6 {
        if op.run(s, next).await.verdict == Verdict::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5, "the full limit afterwards");
}

async fn week_and_month_boundaries<S: RateStore>(s: &S) {
    // 2026-11-29 is a Sunday; the ISO week resets on Monday 2026-11-30 00:00 UTC.
    let k = unique("week");
    let op = Op::new(&k).quota(1, 0, Period::Week, 0);
    assert_eq!(
        op.run(s, at(2026, 11, 23, 0)).await.verdict,
        Verdict::Allowed
    );
    let o = op.run(s, at(2026, 11, 29, 86_399)).await;
    assert_eq!(o.verdict, Verdict::QuotaExceeded);
    assert_eq!(o.retry_after_us, Some(1_000_000));
    assert_eq!(
        op.run(s, at(2026, 11, 30, 0)).await.verdict,
        Verdict::Allowed
    );

    let k = unique("month");
    let op = Op::new(&k).quota(1, 0, Period::Month, 0);
    assert_eq!(op.run(s, at(2028, 2, 1, 0)).await.verdict, Verdict::Allowed);
    assert_eq!(
        op.run(s, at(2028, 2, 29, 86_399)).await.verdict,
        Verdict::QuotaExceeded
    );
    assert_eq!(op.run(s, at(2028, 3, 1, 0)).await.verdict, Verdict::Allowed);
}

async fn throttle_and_quota_are_atomic<S: RateStore>(s: &S) {
    // A throttled request uses no quota.
    let k = unique("atomic1");
    let op = Op::new(&k)
        .bucket(&k, "t:a", lim(1.0, 1))
        .quota(10, 0, Period::Day, 0);
    assert_eq!(op.run(s, NOON).await.verdict, Verdict::Allowed);
    let o = op.run(s, NOON).await;
    assert_eq!(o.verdict, Verdict::Throttled { bucket: 0 });
    assert_eq!(o.quota.map(|q| q.used), Some(1));
    // A quota rejection takes no tokens.
    let k = unique("atomic2");
    let op = Op::new(&k)
        .bucket(&k, "t:a", lim(1.0, 5))
        .quota(1, 0, Period::Day, 0);
    assert_eq!(op.run(s, NOON).await.remaining, vec![4]);
    let o = op.run(s, NOON).await;
    assert_eq!(o.verdict, Verdict::QuotaExceeded);
    assert_eq!(o.remaining, vec![4]);
}

async fn every_bucket_must_admit<S: RateStore>(s: &S) {
    let k = unique("key");
    let stage = unique("stage");
    let op = Op::new(&k)
        .bucket(&k, "t:plan", lim(1.0, 5))
        .bucket(&stage, "t:*", lim(1.0, 2));
    assert_eq!(op.run(s, NOON).await.verdict, Verdict::Allowed);
    assert_eq!(op.run(s, NOON).await.verdict, Verdict::Allowed);
    let o = op.run(s, NOON).await;
    assert_eq!(o.verdict, Verdict::Throttled { bucket: 1 });
    assert_eq!(o.remaining, vec![3, 0], "the key bucket kept its token");
    // The stage bucket is shared by another key.
    let k2 = unique("key2");
    let o = Op::new(&k2)
        .bucket(&k2, "t:plan", lim(1.0, 5))
        .bucket(&stage, "t:*", lim(1.0, 2))
        .run(s, NOON)
        .await;
    assert_eq!(o.verdict, Verdict::Throttled { bucket: 1 });
}

/// A denial by a bucket in another hash (a stage's, under its own hash tag: a second script
/// call on Redis Cluster) charges nothing anywhere: not the key's buckets, quota or daily
/// usage, and a key denial leaves the stage's tokens.
async fn other_hash_denial_charges_nothing<S: RateStore + UsageStore>(s: &S) {
    let k = unique("refund-key");
    let stage = unique("refund-stage");
    let op = Op::new(&k)
        .bucket(&k, "t:plan", lim(1.0, 5))
        .bucket(&stage, "t:*", lim(1.0, 1))
        .quota(10, 0, Period::Day, 0)
        .usage(30);
    let o = op.run(s, NOON).await;
    assert_eq!(o.verdict, Verdict::Allowed);
    assert_eq!(
        (o.remaining, o.quota.map(|q| q.used)),
        (vec![4, 0], Some(1))
    );
    let o = op.cost(1).run(s, NOON + 1).await;
    assert_eq!(o.verdict, Verdict::Throttled { bucket: 1 });
    assert_eq!(o.remaining, vec![4, 0], "the key's bucket kept its token");
    assert_eq!(o.quota.map(|q| q.used), Some(1), "no quota used");
    let day = (NOON / DAY_US) as i64;
    assert_eq!(
        s.usage_read(&k, "plan", day, day).await.expect("usage"),
        vec![(day, 1)],
        "the denied request is not in the daily usage"
    );
    let o = Op::new(&k)
        .bucket(&k, "t:plan", lim(1.0, 5))
        .quota(10, 0, Period::Day, 0)
        .usage(30)
        .run(s, NOON + 2)
        .await;
    assert_eq!((o.remaining, o.quota.map(|q| q.used)), (vec![3], Some(2)));
    // The key's own bucket denies: the stage's token goes back.
    let k2 = unique("refund-key2");
    let stage2 = unique("refund-stage2");
    let op = Op::new(&k2)
        .bucket(&k2, "t:plan", lim(1.0, 1))
        .bucket(&stage2, "t:*", lim(1.0, 3));
    assert_eq!(op.run(s, NOON).await.remaining, vec![0, 2]);
    let o = op.run(s, NOON + 1).await;
    assert_eq!(o.verdict, Verdict::Throttled { bucket: 0 });
    assert_eq!(o.remaining, vec![0, 2], "the stage kept its token");
    let o = Op::new(&stage2)
        .bucket(&stage2, "t:*", lim(1.0, 3))
        .run(s, NOON + 2)
        .await;
    assert_eq!(o.remaining, vec![1]);
}

async fn idempotent_replay_and_dry_run<S: RateStore>(s: &S) {
    let k = unique("idem");
    let op = Op::new(&k)
        .bucket(&k, "t:a", lim(1.0, 5))
        .quota(10, 0, Period::Day, 0);
    let first = op.clone_with_id("req-1").run(s, NOON).await;
    assert!(!first.replayed);
    let again = op.clone_with_id("req-1").run(s, NOON + 1_000).await;
    assert!(again.replayed);
    assert_eq!(again.verdict, first.verdict);
    assert_eq!(again.remaining, first.remaining);
    assert_eq!(again.quota, first.quota);
    // Nothing was charged by the replay, nor by a dry run.
    let dry = Op::new(&k)
        .bucket(&k, "t:a", lim(1.0, 5))
        .quota(10, 0, Period::Day, 0)
        .dry();
    let d = dry.run(s, NOON + 2_000).await;
    assert_eq!(d.verdict, Verdict::Allowed);
    assert_eq!(
        d.quota.map(|q| q.used),
        Some(2),
        "dry run reports as if charged"
    );
    let d2 = dry.run(s, NOON + 3_000).await;
    assert_eq!(d2.quota.map(|q| q.used), Some(2), "but charged nothing");
    assert_eq!(
        d2.remaining,
        vec![3],
        "one token taken by the first request, one as-if"
    );
}

/// Metered costs: a reservation settles once — a refund (quota, daily usage, the key's own
/// buckets; never a stage-wide bucket), an extra post-paid charge, a repeat that changes
/// nothing, and no reservation for unknown ids or denied checks.
async fn settle_refunds_charges_once<S: RateStore + UsageStore>(s: &S) {
    let k = unique("settle");
    let stage = unique("settle-stage");
    let op = |cost: u64| {
        Op::new(&k)
            .bucket(&k, "t:a", lim(1.0, 100))
            .bucket(&stage, "t:*", lim(1.0, 100))
            .quota(1000, 0, Period::Day, 0)
            .usage(30)
            .cost(cost)
    };
    let o = op(10).id("r1").run(s, NOON).await;
    assert_eq!(o.verdict, Verdict::Allowed);
    assert_eq!(
        (o.remaining.clone(), o.quota.map(|q| q.used)),
        (vec![90, 90], Some(10))
    );
    // The upstream used 3 of the 10 reserved.
    let st = op(10).id("r1").settle(s, NOON, 3).await;
    assert_eq!((st.status, st.actual), (SettleStatus::Settled, 3));
    assert_eq!(st.quota.map(|q| (q.used, q.limit)), Some((3, 1000)));
    // Once per request id: the first settlement stands.
    let again = op(10).id("r1").settle(s, NOON, 7).await;
    assert_eq!(
        (again.status, again.actual),
        (SettleStatus::AlreadySettled, 3)
    );
    assert_eq!(again.quota.map(|q| q.used), Some(3));
    let d = op(1).dry().run(s, NOON).await;
    assert_eq!(d.quota.map(|q| q.used), Some(4), "3 used, +1 as if");
    assert_eq!(
        d.remaining,
        vec![96, 89],
        "the key's bucket got 7 back, the stage's none"
    );
    // Used more than reserved: charged after the fact.
    assert_eq!(op(5).id("r2").run(s, NOON).await.verdict, Verdict::Allowed);
    let st = op(5).id("r2").settle(s, NOON, 20).await;
    assert_eq!(
        (st.status, st.quota.map(|q| q.used)),
        (SettleStatus::Settled, Some(23))
    );
    let d = op(1).dry().run(s, NOON).await;
    assert_eq!(d.remaining, vec![76, 84]);
    let day = (NOON / DAY_US) as i64;
    assert_eq!(
        s.usage_read(&k, "plan", day, day).await.expect("usage"),
        vec![(day, 23)],
        "the day's usage is the actual costs"
    );
    // Nothing to settle: an unknown id, a denied check, a dry run.
    let none = op(5).id("never").settle(s, NOON, 1).await;
    assert_eq!((none.status, none.actual), (SettleStatus::NoReservation, 0));
    let denied = op(500).id("r3").run(s, NOON).await;
    assert!(matches!(denied.verdict, Verdict::Throttled { .. }));
    assert_eq!(
        op(500).id("r3").settle(s, NOON, 0).await.status,
        SettleStatus::NoReservation
    );
    assert_eq!(
        op(1).id("r4").dry().run(s, NOON).await.verdict,
        Verdict::Allowed
    );
    assert_eq!(
        op(1).id("r4").settle(s, NOON, 0).await.status,
        SettleStatus::NoReservation
    );
    // Post-paid past the limit: the quota reports none left and later checks are denied.
    let k2 = unique("settle-over");
    let op2 = |cost: u64| {
        Op::new(&k2)
            .quota(10, 0, Period::Day, 0)
            .usage(30)
            .cost(cost)
    };
    assert_eq!(op2(8).id("a").run(s, NOON).await.verdict, Verdict::Allowed);
    let st = op2(8).id("a").settle(s, NOON, 15).await;
    assert_eq!(st.quota.map(|q| (q.used, q.limit)), Some((15, 10)));
    assert_eq!(op2(1).run(s, NOON).await.verdict, Verdict::QuotaExceeded);
}

/// A reservation made before midnight and settled after it (another check moved its day into
/// the usage history): that day's usage and the month's quota get the difference.
async fn settle_after_midnight_fixes_that_day<S: RateStore + UsageStore>(s: &S) {
    let k = unique("settle-midnight");
    let op = |cost: u64| {
        Op::new(&k)
            .quota(1000, 0, Period::Month, 0)
            .usage(90)
            .cost(cost)
    };
    let day1 = at(2026, 11, 10, 86_400 - 30);
    let day2 = at(2026, 11, 11, 5);
    assert_eq!(op(10).id("m1").run(s, day1).await.verdict, Verdict::Allowed);
    assert_eq!(op(1).run(s, day2).await.quota.map(|q| q.used), Some(11));
    let st = op(10).id("m1").settle(s, day2 + 1, 4).await;
    assert_eq!(
        (st.status, st.quota.map(|q| q.used)),
        (SettleStatus::Settled, Some(5))
    );
    let d1 = (day1 / DAY_US) as i64;
    assert_eq!(
        s.usage_read(&k, "plan", d1, d1 + 1).await.expect("usage"),
        vec![(d1, 4), (d1 + 1, 1)]
    );
    // And more than reserved, after midnight too.
    assert_eq!(
        op(2).id("m2").run(s, day2 + 2).await.verdict,
        Verdict::Allowed
    );
    let st = op(2).id("m2").settle(s, day2 + 3, 6).await;
    assert_eq!(st.quota.map(|q| q.used), Some(11));
    assert_eq!(
        s.usage_read(&k, "plan", d1, d1 + 1).await.expect("usage"),
        vec![(d1, 4), (d1 + 1, 7)]
    );
}

/// Release at the TTL: an unreported reservation goes back in full and its record goes (a
/// later report finds nothing); a reported one is left alone.
async fn release_returns_an_unreported_reservation<S: RateStore + UsageStore>(s: &S) {
    let k = unique("release");
    let op = |cost: u64| {
        Op::new(&k)
            .bucket(&k, "t:a", lim(1.0, 100))
            .quota(1000, 0, Period::Day, 0)
            .usage(30)
            .cost(cost)
    };
    assert_eq!(op(10).id("x1").run(s, NOON).await.verdict, Verdict::Allowed);
    assert_eq!(op(10).id("x2").run(s, NOON).await.verdict, Verdict::Allowed);
    assert_eq!(
        op(10)
            .id("x2")
            .settle(s, NOON, 4)
            .await
            .quota
            .map(|q| q.used),
        Some(14)
    );
    let r = op(10).id("x1").release(s, NOON).await;
    assert_eq!((r.status, r.actual), (SettleStatus::Settled, 0));
    assert_eq!(r.quota.map(|q| q.used), Some(4));
    assert_eq!(
        op(10).id("x2").release(s, NOON).await.status,
        SettleStatus::AlreadySettled,
        "a reported reservation stays as reported"
    );
    assert_eq!(
        op(10).id("x1").settle(s, NOON, 3).await.status,
        SettleStatus::NoReservation,
        "released: a late report settles nothing"
    );
    let d = op(1).dry().run(s, NOON).await;
    assert_eq!(d.quota.map(|q| q.used), Some(5), "4 used, +1 as if");
    assert_eq!(
        d.remaining,
        vec![95],
        "100 − 10 − 10, +6 (x2 used 4), +10 released, −1 as if"
    );
    let day = (NOON / DAY_US) as i64;
    assert_eq!(
        s.usage_read(&k, "plan", day, day).await.expect("usage"),
        vec![(day, 4)]
    );
}

impl Op {
    async fn release<S: RateStore>(&self, s: &S, now: u64) -> SettleOutcome {
        let mut op = self.inner.clone();
        op.now = Some(now);
        s.release_reservation(&op).await.expect("store call")
    }

    async fn settle<S: RateStore>(&self, s: &S, now: u64, actual: u64) -> SettleOutcome {
        let mut op = self.inner.clone();
        op.now = Some(now);
        s.settle(&op, actual).await.expect("store call")
    }

    fn clone_with_id(&self, id: &str) -> Op {
        Op {
            inner: self.inner.clone(),
        }
        .id(id)
    }
}

async fn concurrent_callers_are_exact<S: RateStore + Clone>(s: &S) {
    let k = unique("conc");
    let op = Arc::new(
        Op::new(&k)
            .bucket(&k, "t:a", lim(1.0, 1000))
            .quota(20, 0, Period::Day, 0),
    );
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (s, op) = (s.clone(), op.clone());
        tasks.push(tokio::spawn(async move { op.run(&s, NOON).await.verdict }));
    }
    let mut allowed = 0;
    for t in tasks {
        if t.await.expect("task") == Verdict::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 20);
}

async fn plan_created_at_is_first_write<S: DefsStore>(s: &S) {
    let plan = format!("plan-{}", unique("p").len());
    let first = s.plan_created_at(&plan, 1_000).await.expect("store");
    let second = s.plan_created_at(&plan, 2_000).await.expect("store");
    assert_eq!(first, second);
}

/// Daily usage: admitted checks add their cost to the day they happened on; throttled,
/// quota-rejected and dry-run checks add nothing.
async fn daily_usage_counts_admitted_cost<S: RateStore + UsageStore>(s: &S) {
    let k = unique("usage");
    let op = Op::new(&k)
        .bucket(&k, "t:a", lim(1000.0, 3))
        .quota(5, 0, Period::Month, 0)
        .usage(90);
    let day1 = at(2026, 11, 30, 3600);
    let day2 = at(2026, 12, 1, 3600);
    assert_eq!(op.run(s, day1).await.verdict, Verdict::Allowed);
    assert_eq!(op.cost(2).run(s, day1 + 1).await.verdict, Verdict::Allowed);
    let op = Op::new(&k)
        .bucket(&k, "t:a", lim(1000.0, 3))
        .quota(5, 0, Period::Month, 0)
        .usage(90);
    // The bucket is empty now (3 tokens used): throttled, not counted.
    assert!(matches!(
        op.run(s, day1 + 2).await.verdict,
        Verdict::Throttled { .. }
    ));
    assert_eq!(op.clone_dry().run(s, day2).await.verdict, Verdict::Allowed);
    assert_eq!(op.run(s, day2).await.verdict, Verdict::Allowed);
    let d1 = (day1 / DAY_US) as i64;
    let got = s
        .usage_read(&k, "plan", d1 - 3, d1 + 3)
        .await
        .expect("usage");
    assert_eq!(got, vec![(d1, 3), (d1 + 1, 1)]);
    assert_eq!(
        s.usage_read(&k, "plan", d1 + 1, d1 + 1)
            .await
            .expect("usage"),
        vec![(d1 + 1, 1)],
        "range bounds are inclusive and cross the month"
    );
}

/// A plan whose quota period changes starts counting the new period from zero (the state says
/// which period it counted).
async fn quota_period_change_starts_from_zero<S: RateStore + UsageStore>(s: &S) {
    let k = unique("period");
    let t = at(2026, 11, 20, 3600);
    let monthly = Op::new(&k).quota(100, 0, Period::Month, 0).usage(90);
    for i in 0..3 {
        assert_eq!(monthly.run(s, t + i).await.verdict, Verdict::Allowed);
    }
    let daily = Op::new(&k).quota(2, 0, Period::Day, 0).usage(90);
    let o = daily.run(s, t + 10).await;
    assert_eq!(o.verdict, Verdict::Allowed);
    assert_eq!(o.quota.map(|q| (q.used, q.limit)), Some((1, 2)));
    assert_eq!(daily.run(s, t + 11).await.verdict, Verdict::Allowed);
    assert_eq!(daily.run(s, t + 12).await.verdict, Verdict::QuotaExceeded);
    let d = (t / DAY_US) as i64;
    assert_eq!(
        s.usage_read(&k, "plan", d, d).await.expect("usage"),
        vec![(d, 5)],
        "usage counts across the change"
    );
}

/// UpdateUsage: the remaining quota of the current period is set exactly, whatever was used.
async fn set_remaining_admits_exactly_that_many<S: RateStore + UsageStore>(s: &S) {
    let k = unique("grant");
    let op = Op::new(&k).quota(3, 0, Period::Month, 0);
    for _ in 0..3 {
        assert_eq!(op.run_now(s).await.verdict, Verdict::Allowed);
    }
    assert_eq!(op.run_now(s).await.verdict, Verdict::QuotaExceeded);
    let q = op.inner.quota.clone().expect("quota");
    let (r, _) = s.quota_set_remaining(&k, &q, 2).await.expect("set");
    assert_eq!((r.used, r.limit), (3, 5));
    for i in 0..2 {
        assert_eq!(op.run_now(s).await.verdict, Verdict::Allowed, "granted {i}");
    }
    let o = op.run_now(s).await;
    assert_eq!(o.verdict, Verdict::QuotaExceeded);
    assert_eq!(o.quota.map(|q| (q.used, q.limit)), Some((5, 5)));
    // Down as well as up.
    let (r, _) = s.quota_set_remaining(&k, &q, 0).await.expect("set");
    assert_eq!((r.used, r.limit), (5, 5));
    let st = s.owner_state(&k).await.expect("state");
    assert!(
        st.fields
            .iter()
            .any(|(f, v)| f == "q:plan" && v.ends_with(":5")),
        "{st:?}"
    );
    assert!(
        st.fields
            .iter()
            .any(|(f, v)| f == "ql:plan" && v.ends_with(":5")),
        "{st:?}"
    );
}

/// `UpdateUsage(remaining: 0)` stops a key even with a metered reservation pending: the
/// reservation's refund (its units were taken before the UpdateUsage, which counted them as
/// used) goes back to the daily usage but never raises the remaining the UpdateUsage set.
/// Before the fix the refund lowered `used` and the key passed again.
async fn refunds_taken_before_update_usage_do_not_raise_its_remaining<S: RateStore + UsageStore>(
    s: &S,
) {
    let k = unique("cutoff");
    let reserve = |id: &str, cost: u64| {
        Op::new(&k)
            .quota(1_000, 0, Period::Month, 0)
            .usage(90)
            .cost(cost)
            .id(id)
    };
    let plain = Op::new(&k).quota(1_000, 0, Period::Month, 0).usage(90);
    assert_eq!(plain.run_now(s).await.verdict, Verdict::Allowed);
    let r1 = reserve("before-1", 10);
    let r2 = reserve("before-2", 20);
    assert_eq!(r1.run_now(s).await.verdict, Verdict::Allowed);
    assert_eq!(r2.run_now(s).await.verdict, Verdict::Allowed);
    let q = plain.inner.quota.clone().expect("quota");
    let (r, _) = s.quota_set_remaining(&k, &q, 0).await.expect("set");
    assert_eq!((r.used, r.limit), (31, 31), "the cut-off");
    // Report 3 of the 10 reserved (7 back), and release the other reservation in full.
    let st = s.settle(&r1.inner, 3).await.expect("settle");
    assert_eq!(st.status, SettleStatus::Settled);
    assert_eq!(
        st.quota.map(|q| q.limit - q.used),
        Some(0),
        "the remaining stays 0: {st:?}"
    );
    let st = s.release_reservation(&r2.inner).await.expect("release");
    assert_eq!(st.status, SettleStatus::Settled);
    let o = plain.run_now(s).await;
    assert_eq!(o.verdict, Verdict::QuotaExceeded, "stopped: {o:?}");
    assert_eq!(o.quota.map(|q| (q.used, q.limit)), Some((4, 4)), "{o:?}");
    // What was used is what was admitted: 1 + 3.
    let day = (o.now_us / DAY_US) as i64;
    assert_eq!(
        s.usage_read(&k, "plan", day, day).await.expect("usage"),
        vec![(day, 4)]
    );
    // A later UpdateUsage grants exactly what it says.
    let (r, _) = s.quota_set_remaining(&k, &q, 2).await.expect("set");
    assert_eq!((r.used, r.limit), (4, 6));
    for _ in 0..2 {
        assert_eq!(plain.run_now(s).await.verdict, Verdict::Allowed);
    }
    assert_eq!(plain.run_now(s).await.verdict, Verdict::QuotaExceeded);
}

/// Definition writes are compare-and-set on the version, and announced to subscribers.
async fn defs_are_compare_and_set<S: DefsStore + EventStore>(s: &S) {
    let mut events = s.events();
    let before = s.defs_load().await.expect("load");
    let w = |id: &str, json: Option<&str>| DefWrite {
        kind: DefKind::Plan,
        id: id.into(),
        json: json.map(String::from),
    };
    let id = unique("plan").to_string();
    let v = s
        .defs_write(before.version, &[w(&id, Some("{}"))])
        .await
        .expect("write")
        .expect("no conflict");
    assert_eq!(v, before.version + 1);
    assert_eq!(
        s.defs_write(before.version, &[w(&id, None)])
            .await
            .expect("write"),
        None,
        "a stale version is refused"
    );
    let after = s.defs_load().await.expect("load");
    assert_eq!(after.version, v);
    assert!(after.plans.iter().any(|(i, j)| *i == id && j == "{}"));
    let ev = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            if let Ok(tollgate_server::store::StoreEvent::Definitions) = events.recv().await {
                break;
            }
        }
    })
    .await;
    assert!(ev.is_ok(), "a definitions event arrives");
    s.defs_write(v, &[w(&id, None)])
        .await
        .expect("write")
        .expect("no conflict");
    assert!(
        !s.defs_load()
            .await
            .expect("load")
            .plans
            .iter()
            .any(|(i, _)| *i == id)
    );
}

// --- Reservation tickets (`Store::ticket_*`, `Store::tickets_due`) ---------------------------
//
// Tickets live in shared keys (`tg:{t:<shard>}:due|ops`), not under the test's owner, and
// `tickets_due` hands out every due ticket of the store: each test looks only at the tickets of
// its own owner ([`mine`]) and drains what it put, so tests sharing a store (the Cluster run)
// never see each other's.

/// Far past every release time the ticket tests use.
const FAR: u64 = NOON + 10 * DAY_US;

/// A reservation as the pipeline keeps it: a bucket, a quota, daily usage, a request id. Its
/// `now` and `dry_run` are set on purpose: a ticket keeps neither.
fn ticket_op(owner: &Arc<str>, request_id: &str, cost: u64) -> CheckOp {
    let mut op = Op::new(owner)
        .bucket(owner, "t:a", lim(2.5, 7))
        .quota(100, 3, Period::Month, 5)
        .usage(90)
        .cost(cost)
        .id(request_id)
        .inner;
    op.now = Some(NOON);
    op.dry_run = true;
    op
}

/// `got` is `want` as a ticket gives it back: every field equal, no time, not a dry run.
fn assert_same_op(got: &CheckOp, want: &CheckOp) {
    assert_eq!(
        ticket::encode(got),
        ticket::encode(want),
        "every kept field is equal"
    );
    assert_eq!(
        (&*got.owner, got.cost, got.request_id.as_deref()),
        (&*want.owner, want.cost, want.request_id.as_deref())
    );
    assert_eq!(got.buckets.len(), 1);
    assert_eq!(got.buckets[0].limit, want.buckets[0].limit);
    assert_eq!(
        (got.now, got.dry_run),
        (None, false),
        "a ticket keeps no time and is never a dry run"
    );
}

/// The ops of `owner` among those `tickets_due` handed out at `now`.
async fn mine<S: TicketStore>(s: &S, owner: &Arc<str>, now: u64) -> Vec<CheckOp> {
    s.tickets_due(Some(now))
        .await
        .expect("tickets_due")
        .into_iter()
        .filter(|(id, op)| {
            let rid = op.request_id.as_deref().expect("an id");
            assert!(
                *id == ticket::owner_ticket(&op.owner, rid)
                    || id.strip_prefix("e:").is_some_and(|r| rid.ends_with(r)),
                "a due ticket comes with its id: {id:?}"
            );
            op.owner == *owner
        })
        .map(|(_, op)| op)
        .collect()
}

async fn tickets_put_get_remove<S: TicketStore>(s: &S) {
    let k = unique("ticket");
    let id = ticket::owner_ticket(&k, "r-1");
    assert!(s.ticket_get(&id).await.expect("get").is_none(), "never put");
    let op = ticket_op(&k, "r-1", 40);
    s.ticket_put(&id, &op, NOON + 1_000_000).await.expect("put");
    assert_same_op(&s.ticket_get(&id).await.expect("get").expect("kept"), &op);
    // Another id, even of the same request under another owner, is another ticket.
    let other = unique("ticket-other");
    assert!(
        s.ticket_get(&ticket::owner_ticket(&other, "r-1"))
            .await
            .expect("get")
            .is_none()
    );
    s.ticket_remove(&id).await.expect("remove");
    assert!(s.ticket_get(&id).await.expect("get").is_none(), "removed");
    s.ticket_remove(&id)
        .await
        .expect("removing a missing ticket is no error");
    assert!(
        mine(s, &k, FAR).await.is_empty(),
        "a removed ticket is never due"
    );
}

async fn a_second_ticket_put_is_refused<S: TicketStore>(s: &S) {
    let k = unique("ticket-second");
    // Two reservations never share a ticket: the second put writes nothing.
    let id = ticket::owner_ticket(&k, "twice");
    let (first, second) = (ticket_op(&k, "twice", 10), ticket_op(&k, "twice", 20));
    assert!(s.ticket_put(&id, &first, NOON + 9_000).await.expect("put"));
    assert!(
        !s.ticket_put(&id, &second, NOON + 1_000).await.expect("put"),
        "refused"
    );
    assert_same_op(
        &s.ticket_get(&id).await.expect("get").expect("kept"),
        &first,
    );
    assert!(
        mine(s, &k, NOON + 1_000).await.is_empty(),
        "the refused put's release time does not count"
    );
    let due = mine(s, &k, NOON + 9_000).await;
    assert_eq!(due.len(), 1, "one ticket, handed out once");
    assert_same_op(&due[0], &first);
    // Once handed out (or removed), the id is free again: a release that failed puts its
    // ticket back.
    assert!(
        s.ticket_put(&id, &second, NOON + 20_000)
            .await
            .expect("put")
    );
    assert_same_op(&mine(s, &k, NOON + 20_000).await[0], &second);
}

async fn tickets_are_due_at_their_release_time_once<S: TicketStore>(s: &S) {
    let k = unique("ticket-due");
    // An odd microsecond: the release time is kept exactly.
    let at = NOON + 123_457;
    let op = ticket_op(&k, "r", 40);
    let id = ticket::owner_ticket(&k, "r");
    s.ticket_put(&id, &op, at).await.expect("put");
    assert!(mine(s, &k, NOON).await.is_empty(), "not due before");
    assert!(mine(s, &k, at - 1).await.is_empty(), "not due 1 µs before");
    assert!(
        s.ticket_get(&id).await.expect("get").is_some(),
        "a sweep before its time leaves it"
    );
    let due = mine(s, &k, at).await;
    assert_eq!(due.len(), 1, "due at its release time");
    assert_same_op(&due[0], &op);
    assert!(
        s.ticket_get(&id).await.expect("get").is_none(),
        "handed out: gone"
    );
    assert!(mine(s, &k, at).await.is_empty(), "never twice");
    assert!(mine(s, &k, FAR).await.is_empty(), "never twice");
    // Past its time too; and a sweep at the end of time is no error.
    let late = ticket::envoy_ticket(&format!("{k}-late"));
    let mut op2 = ticket_op(&k, "late", 5);
    op2.request_id = Some(format!("{k}-late"));
    s.ticket_put(&late, &op2, at).await.expect("put");
    let never = ticket::owner_ticket(&k, "never");
    s.ticket_put(&never, &ticket_op(&k, "never", 1), FAR + 1)
        .await
        .expect("put");
    let due = mine(s, &k, at + 60_000_000).await;
    assert_eq!(due.len(), 1);
    assert_same_op(&due[0], &op2);
    assert!(mine(s, &k, FAR).await.is_empty());
    let due = mine(s, &k, u64::MAX).await;
    assert_eq!(due.len(), 1, "due at u64::MAX");
    assert_same_op(&due[0], &ticket_op(&k, "never", 1));
}

/// Tickets for `owner` in every shard: `per_shard` each, and `extra` more in shard 0 (past one
/// call's [`ticket::DUE_BATCH`]). Returns the request ids.
fn ticket_ids(owner: &str, per_shard: usize, extra: usize) -> Vec<String> {
    let mut left: Vec<usize> = (0..ticket::SHARDS as usize).map(|_| per_shard).collect();
    left[0] += extra;
    let mut out = Vec::new();
    let mut i = 0u64;
    while left.iter().any(|n| *n > 0) {
        let rid = format!("r-{i}");
        i += 1;
        let shard = ticket::shard(&ticket::owner_ticket(owner, &rid)) as usize;
        if left[shard] > 0 {
            left[shard] -= 1;
            out.push(rid);
        }
    }
    out
}

async fn tickets_drain_from_every_shard_exactly_once<S: TicketStore>(s: &S) {
    let k = unique("ticket-many");
    let ids = ticket_ids(&k, 20, ticket::DUE_BATCH + 44);
    for (i, rid) in ids.iter().enumerate() {
        s.ticket_put(
            &ticket::owner_ticket(&k, rid),
            &ticket_op(&k, rid, 1 + i as u64),
            NOON + i as u64,
        )
        .await
        .expect("put");
    }
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let mut calls = 0;
    loop {
        let due = mine(s, &k, FAR).await;
        if due.is_empty() {
            break;
        }
        calls += 1;
        assert!(
            calls <= 4,
            "draining {} tickets takes a few calls",
            ids.len()
        );
        for op in due {
            let rid = op.request_id.clone().expect("a request id");
            let i = ids.iter().position(|r| *r == rid).expect("one of ours");
            assert_eq!(op.cost, 1 + i as u64, "{rid} kept its own op");
            *seen.entry(rid).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), ids.len(), "every ticket was handed out");
    assert!(seen.values().all(|n| *n == 1), "each exactly once");
}

fn memory() -> AnyStore {
    AnyStore::Memory(MemoryStore::new(Arc::new(FakeClock::new(NOON))))
}

fn redis(server: &RedisServer) -> RedisStore {
    RedisStore::new(&server.url(), 8, "tg").expect("redis store")
}

/// One suite per store trait: `conformance!(suite: tests...)` runs each test (an `async fn`
/// generic over the trait it exercises) against the memory store and a real `redis-server`,
/// and the whole suite on one real Redis Cluster.
macro_rules! conformance {
    ($suite:ident: $($name:ident),* $(,)?) => {
        mod $suite {
            use super::*;
            mod memory_store {
                use super::*;
                $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(&memory()).await; } )*
            }
            mod redis_store {
                use super::*;
                $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = RedisServer::start();
                    super::$name(&redis(&server)).await;
                } )*
            }
            /// The suite on one real Redis Cluster (three masters), one test after another:
            /// checks whose buckets live under other hash tags run split there.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_cluster_store_conforms() {
                let cluster = RedisCluster::start(3, 0);
                let s = RedisStore::connect(&RedisOptions {
                    topology: Topology::Cluster(cluster.urls()),
                    ..RedisOptions::standalone("", 1, "tg")
                })
                .expect("cluster store");
                $( eprintln!("cluster: {}", stringify!($name)); $name(&s).await; )*
            }
        }
    };
}

async fn auth_cache_entries_expire<S: CacheStore>(s: &S) {
    let key = format!("tg:auth:test:{}", unique("auth"));
    assert_eq!(s.auth_get(&key).await.expect("get"), None);
    s.auth_put(&key, b"output", 60_000).await.expect("put");
    assert_eq!(
        s.auth_get(&key).await.expect("get").as_deref(),
        Some(&b"output"[..])
    );
}

// RateStore: checks (buckets, quotas, idempotency, atomicity) and reservations settled or
// released (read back through the usage side).
conformance!(rate_store:
    burst_then_exact_retry,
    cost_n_consumes_n,
    quota_is_exact_and_resets,
    offset_only_in_initial_period,
    week_and_month_boundaries,
    throttle_and_quota_are_atomic,
    every_bucket_must_admit,
    other_hash_denial_charges_nothing,
    idempotent_replay_and_dry_run,
    concurrent_callers_are_exact,
    quota_period_change_starts_from_zero,
    settle_refunds_charges_once,
    settle_after_midnight_fixes_that_day,
    release_returns_an_unreported_reservation,
);

// UsageStore: daily usage, UpdateUsage's remaining quota.
conformance!(usage_store:
    daily_usage_counts_admitted_cost,
    set_remaining_admits_exactly_that_many,
    refunds_taken_before_update_usage_do_not_raise_its_remaining,
);

// DefsStore (+ EventStore): plans and keys compare-and-set, plans' creation times.
conformance!(defs_store: defs_are_compare_and_set, plan_created_at_is_first_write);

// TicketStore: reservation tickets.
conformance!(ticket_store:
    tickets_put_get_remove,
    a_second_ticket_put_is_refused,
    tickets_are_due_at_their_release_time_once,
    tickets_drain_from_every_shard_exactly_once,
);

// CacheStore: the shared authorizer cache.
conformance!(cache_store: auth_cache_entries_expire);

#[tokio::test]
async fn memory_store_collects_expired_state() {
    let store = MemoryStore::new(Arc::new(FakeClock::new(NOON)));
    for i in 0..1000 {
        let k: Arc<str> = format!("tg:{{k:{i}}}").into();
        Op::new(&k)
            .bucket(&k, "t:a", lim(10.0, 10))
            .quota(5, 0, Period::Day, 0)
            .id("r")
            .run(&*store, NOON)
            .await;
    }
    assert_eq!(store.len(), 2000, "1000 hashes + 1000 idempotency records");
    store.sweep(NOON + 2 * DAY_US);
    assert!(store.is_empty(), "everything expired is dropped");
}

/// One random operation for the property test.
#[derive(Debug, Clone)]
struct RandomOp {
    owner: usize,
    buckets: Vec<usize>,
    with_quota: bool,
    cost: u64,
    dt_us: u64,
    dry_run: bool,
    request_id: Option<u8>,
}

fn random_op() -> impl Strategy<Value = RandomOp> {
    (
        0usize..3,
        proptest::sample::subsequence(vec![0usize, 1, 2], 0..=3),
        any::<bool>(),
        1u64..4,
        prop_oneof![Just(0u64), 0u64..400_000, 0u64..3_000_000],
        proptest::bool::weighted(0.1),
        proptest::option::weighted(0.2, 0u8..4),
    )
        .prop_map(
            |(owner, buckets, with_quota, cost, dt_us, dry_run, request_id)| RandomOp {
                owner,
                buckets,
                with_quota,
                cost,
                dt_us,
                dry_run,
                request_id,
            },
        )
}

/// The memory store and the Redis script decide identically on random operation sequences
/// (several owners, shared buckets, costs, dry runs, idempotent retries, a day boundary).
#[test]
fn memory_and_redis_decide_identically() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = RedisServer::start();
    // The Redis store's connections spawn their driver tasks on the current runtime.
    let _runtime = rt.enter();
    let redis = redis(&server);
    let limits = [lim(2.0, 3), lim(10.0, 5), lim(0.5, 2)];
    let case = AtomicU64::new(0);
    let config = ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(random_op(), 1..60))| {
        let n = case.fetch_add(1, Ordering::Relaxed);
        let memory = MemoryStore::new(Arc::new(FakeClock::new(0)));
        // Start 20 s before midnight so some sequences cross into a new quota day.
        let mut now = NOON + DAY_US / 2 - 20_000_000;
        let owners: Vec<Arc<str>> = (0..3).map(|i| Arc::from(format!("pt{n}:{{k:{i}}}"))).collect();
        let shared: Arc<str> = format!("pt{n}:{{s:stage}}").into();
        for (step, r) in ops.iter().enumerate() {
            now += r.dt_us;
            let owner = &owners[r.owner];
            let mut op = Op::new(owner).cost(r.cost);
            for &b in &r.buckets {
                // Bucket 2 is stage-wide, shared by every owner.
                let hash = if b == 2 { &shared } else { owner };
                op = op.bucket(hash, &format!("t:{b}"), limits[b]);
            }
            if r.with_quota {
                op = op.quota(7, 2, Period::Day, period_index(Period::Day, NOON));
            }
            if r.dry_run {
                op = op.dry();
            }
            if let Some(id) = r.request_id {
                op = op.id(&format!("r{id}"));
            }
            let (m, d) = rt.block_on(async { (op.run(&*memory, now).await, op.run(&redis, now).await) });
            prop_assert_eq!(m, d, "step {} of {:?}", step, ops);
        }
    });
}

/// One check is one `EVALSHA` round trip: no PING, no separate reads or writes.
#[tokio::test]
async fn redis_makes_one_call_per_check() {
    let server = RedisServer::start();
    let store = redis(&server);
    let k = unique("calls");
    let stage = unique("stage");
    let op = Op::new(&k)
        .bucket(&k, "t:a", lim(1000.0, 1000))
        .bucket(&stage, "t:*", lim(1000.0, 1000))
        .quota(1000, 0, Period::Day, 0);
    op.run(&store, NOON).await; // loads the script (NOSCRIPT → SCRIPT LOAD) once
    let mut admin = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut admin)
        .await
        .expect("resetstat");
    for _ in 0..100 {
        assert_eq!(op.run(&store, NOON).await.verdict, Verdict::Allowed);
    }
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut admin)
        .await
        .expect("info");
    assert_eq!(
        tollgate_tests::redis::command_calls(&info, "evalsha"),
        100,
        "{info}"
    );
    let others: Vec<&str> = info
        .lines()
        .filter(|l| {
            l.starts_with("cmdstat_")
                && !l.starts_with("cmdstat_evalsha")
                && !l.starts_with("cmdstat_config")
        })
        .collect();
    // Commands run inside the script (HMGET, HSET, PTTL, PEXPIRE, ...) are counted too; no
    // top-level command other than EVALSHA may appear.
    for l in others {
        let name = l
            .trim_start_matches("cmdstat_")
            .split(':')
            .next()
            .unwrap_or("");
        assert!(
            [
                "hmget", "hset", "pttl", "pexpire", "persist", "hdel", "time", "get", "set"
            ]
            .contains(&name),
            "unexpected command {l}"
        );
    }
}

/// Daily usage lives in the key's own hash: today's count in the plan's state field, finished
/// days as `u:plan:<day>` (moved on the first admitted check of a later day), days older than
/// the retention — at least 32 days — deleted then; the hash has no TTL.
#[tokio::test]
async fn redis_usage_history_moves_and_is_pruned() {
    let server = RedisServer::start();
    let store = redis(&server);
    let k = unique("history");
    let op = Op::new(&k)
        .bucket(&k, "t:a", lim(1000.0, 1000))
        .quota(1000, 0, Period::Month, 0)
        .usage(2);
    let nov = |day: u32| at(2026, 11, day, 3600);
    let d1 = (nov(1) / DAY_US) as i64;
    for (day, n) in [(1, 1), (2, 2), (3, 3), (20, 1)] {
        for i in 0..n {
            assert_eq!(op.run(&store, nov(day) + i).await.verdict, Verdict::Allowed);
        }
    }
    assert_eq!(
        store
            .usage_read(&k, "plan", d1, d1 + 40)
            .await
            .expect("usage"),
        vec![(d1, 1), (d1 + 1, 2), (d1 + 2, 3), (d1 + 19, 1)]
    );
    let mut conn = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let fields = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut c = conn.clone();
        let k = k.to_string();
        async move {
            let mut f: Vec<String> = redis::cmd("HKEYS")
                .arg(&k)
                .query_async(&mut c)
                .await
                .expect("hkeys");
            f.sort();
            f
        }
    };
    assert_eq!(
        fields(&mut conn).await,
        vec![
            "q:plan".to_string(),
            "t:a".into(),
            format!("u:plan:{d1}"),
            format!("u:plan:{}", d1 + 1),
            format!("u:plan:{}", d1 + 2)
        ]
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&*k)
        .query_async(&mut conn)
        .await
        .expect("pttl");
    assert_eq!(ttl, -1, "a key's hash with daily usage has no TTL");
    // The quota counted every day of the month (a dry run reports itself as used).
    let o = op.clone_dry().run(&store, nov(20) + 1).await;
    assert_eq!(o.quota.map(|q| q.used), Some(8));
    // December 6: a 2-day retention keeps 32 days, so November 1–3 go and the 20th stays.
    let dec6 = at(2026, 12, 6, 3600);
    assert_eq!(op.run(&store, dec6).await.verdict, Verdict::Allowed);
    assert_eq!(
        store
            .usage_read(&k, "plan", d1, d1 + 40)
            .await
            .expect("usage"),
        vec![(d1 + 19, 1), (d1 + 35, 1)]
    );
    assert_eq!(
        fields(&mut conn).await,
        vec![
            "q:plan".to_string(),
            "t:a".into(),
            format!("u:plan:{}", d1 + 19)
        ]
    );
    assert_eq!(
        op.clone_dry()
            .run(&store, dec6 + 1)
            .await
            .quota
            .map(|q| q.used),
        Some(2),
        "a new month"
    );
}

/// A local lease's unspent units go back (`RedisStore::release`) even after midnight, when a
/// later check has moved the grant's day into the usage history: the month's quota and that
/// day's history both lose what was not admitted.
#[tokio::test]
async fn redis_release_after_midnight_fixes_quota_and_history() {
    let server = RedisServer::start();
    let s = redis(&server);
    let k = unique("lease-midnight");
    let op = || {
        Op::new(&k)
            .bucket(&k, "t:a", lim(1000.0, 1000))
            .quota(1000, 0, Period::Month, 0)
            .usage(90)
    };
    let day1 = at(2026, 11, 10, 86_400 - 30);
    let day2 = at(2026, 11, 11, 5);
    // A grant of 1 request + 100 leased units at 23:59:30.
    let grant = op().cost(101).run(&s, day1).await;
    assert_eq!(grant.verdict, Verdict::Allowed);
    // Another instance checks after midnight: day 1 moves into the history.
    assert_eq!(op().run(&s, day2).await.quota.map(|q| q.used), Some(102));
    s.release(&op().inner, 100, &grant).await.expect("release");
    let d1 = (day1 / DAY_US) as i64;
    assert_eq!(
        s.usage_read(&k, "plan", d1, d1 + 1).await.expect("usage"),
        vec![(d1, 1), (d1 + 1, 1)],
        "the history of day 1 lost the 100 unspent units"
    );
    let o = op().run(&s, day2 + 1).await;
    assert_eq!(
        o.quota.map(|q| q.used),
        Some(3),
        "the month counts what was admitted"
    );
    // (The bucket refilled in the 35 s between; it never goes below the grant's time.)
    assert_eq!(o.remaining, vec![999]);
}

/// A local lease taken before `UpdateUsage(remaining: 0)` gives its unspent units back after
/// it: the key's buckets and daily usage get them back, its remaining does not (before the fix
/// the give-back lowered `used` and 91 requests passed after the cut-off). A lease taken after
/// an UpdateUsage gives back into the remaining it set, as before.
async fn lease_give_back_after_update_usage_keeps_the_cutoff(s: &RedisStore) {
    let k = unique("lease-cutoff");
    let op = || {
        Op::new(&k)
            .bucket(&k, "t:a", lim(1000.0, 1000))
            .quota(10_000, 0, Period::Month, 0)
            .usage(90)
    };
    // A grant of 1 request + 100 leased units.
    let grant = op().cost(101).run_now(s).await;
    assert_eq!(grant.verdict, Verdict::Allowed);
    let q = op().inner.quota.clone().expect("quota");
    let (r, _) = s.quota_set_remaining(&k, &q, 0).await.expect("set");
    assert_eq!((r.used, r.limit), (101, 101));
    s.release(&op().inner, 100, &grant).await.expect("release");
    let o = op().run_now(s).await;
    assert_eq!(o.verdict, Verdict::QuotaExceeded, "stopped: {o:?}");
    assert_eq!(o.quota.map(|q| (q.used, q.limit)), Some((1, 1)), "{o:?}");
    let day = (o.now_us / DAY_US) as i64;
    assert_eq!(
        s.usage_read(&k, "plan", day, day).await.expect("usage"),
        vec![(day, 1)],
        "the unspent units are not usage"
    );
    // The bucket got its 100 units back (1000 − 1 − the denied check takes nothing).
    assert!(o.remaining[0] >= 998, "{o:?}");
    // A lease after the UpdateUsage: its unspent units go back into the remaining it set.
    let (r, _) = s.quota_set_remaining(&k, &q, 50).await.expect("set");
    assert_eq!((r.used, r.limit), (1, 51));
    let grant = op().cost(41).run_now(s).await;
    assert_eq!(grant.verdict, Verdict::Allowed);
    s.release(&op().inner, 40, &grant).await.expect("release");
    let o = op().dry().run_now(s).await;
    assert_eq!(o.quota.map(|q| (q.used, q.limit)), Some((3, 51)), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lease_give_back_after_update_usage_keeps_the_cutoff() {
    let server = RedisServer::start();
    lease_give_back_after_update_usage_keeps_the_cutoff(&redis(&server)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_lease_give_back_after_update_usage_keeps_the_cutoff() {
    let cluster = RedisCluster::start(3, 0);
    let s = RedisStore::connect(&RedisOptions {
        topology: Topology::Cluster(cluster.urls()),
        ..RedisOptions::standalone("", 1, "tg")
    })
    .expect("cluster store");
    lease_give_back_after_update_usage_keeps_the_cutoff(&s).await;
}

/// Two sweepers (two store clients: two instances) race for the same due tickets, more than
/// one call takes from a shard: together they hand out every ticket, each exactly once. With
/// `both_take` (Redis: each call is a round trip per shard) each must have taken some, or they
/// did not race.
async fn two_sweepers_take_each_ticket_once<S: TicketStore + Clone>(a: S, b: S, both_take: bool) {
    let k = unique("ticket-race");
    // Three calls' worth per Redis shard; over two calls' worth for the memory store.
    let ids = ticket_ids(&k, 2 * ticket::DUE_BATCH + 100, 0);
    for chunk in ids.chunks(500) {
        futures::future::join_all(chunk.iter().map(|rid| {
            let i: u64 = rid[2..].parse().expect("r-<n>");
            let a = a.clone();
            let k = k.clone();
            async move {
                a.ticket_put(
                    &ticket::owner_ticket(&k, rid),
                    &ticket_op(&k, rid, 1),
                    NOON + i,
                )
                .await
                .expect("put")
            }
        }))
        .await;
    }
    let start = Arc::new(tokio::sync::Barrier::new(2));
    let sweep = |s: S| {
        let (k, start) = (k.clone(), start.clone());
        tokio::spawn(async move {
            start.wait().await;
            let mut got = Vec::new();
            // A few calls drain them (bounded: a store that hands tickets out again never
            // runs dry).
            for _ in 0..20 {
                let due = mine(&s, &k, FAR).await;
                if due.is_empty() {
                    return got;
                }
                got.extend(due.into_iter().map(|op| op.request_id.expect("an id")));
                tokio::task::yield_now().await;
            }
            panic!(
                "still handing out tickets after 20 calls ({} taken)",
                got.len()
            );
        })
    };
    let (ga, gb) = (sweep(a.clone()), sweep(b));
    let (ga, gb) = (ga.await.expect("sweeper a"), gb.await.expect("sweeper b"));
    eprintln!(
        "{} tickets: sweeper a took {}, b took {}",
        ids.len(),
        ga.len(),
        gb.len()
    );
    if both_take {
        assert!(!ga.is_empty() && !gb.is_empty(), "the sweepers raced");
    }
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for rid in ga.into_iter().chain(gb) {
        *seen.entry(rid).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).take(5).collect();
    assert!(twice.is_empty(), "handed out more than once: {twice:?}");
    assert_eq!(seen.len(), ids.len(), "every ticket was handed out");
    assert!(mine(&a, &k, FAR).await.is_empty());
}

/// A ticket that cannot be read (garbage in the shard's ops hash, or a version this instance
/// does not know) is dropped when due — from both keys — and the rest of the batch is handed
/// out. `raw` is a connection to the node holding shard 0's keys.
async fn unreadable_tickets_are_dropped(
    s: &RedisStore,
    raw: &mut redis::aio::MultiplexedConnection,
) {
    let k = unique("ticket-garbage");
    let keys = tollgate_server::store::keys::Keys::new("tg");
    // Three ids in shard 0: two get garbage, one stays good.
    let ids = ticket_ids(&k, 0, 3);
    let (bad, future, good) = (&ids[0], &ids[1], &ids[2]);
    for rid in &ids {
        s.ticket_put(&ticket::owner_ticket(&k, rid), &ticket_op(&k, rid, 9), NOON)
            .await
            .expect("put");
    }
    for (rid, junk) in [(bad, &b"\xffnot json"[..]), (future, &br#"{"v":2}"#[..])] {
        let _: i64 = redis::cmd("HSET")
            .arg(keys.tickets_ops(0))
            .arg(ticket::owner_ticket(&k, rid))
            .arg(junk)
            .query_async(raw)
            .await
            .expect("hset garbage");
    }
    assert!(
        s.ticket_get(&ticket::owner_ticket(&k, bad)).await.is_err(),
        "reading it is an error, not a panic"
    );
    let due = s
        .tickets_due(Some(NOON))
        .await
        .expect("the batch is no error");
    let due: Vec<_> = due
        .into_iter()
        .map(|(_, op)| op)
        .filter(|op| op.owner == k)
        .collect();
    assert_eq!(due.len(), 1, "only the good ticket");
    assert_same_op(&due[0], &ticket_op(&k, good, 9));
    for rid in [bad, future] {
        let id = ticket::owner_ticket(&k, rid);
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(keys.tickets_due(0))
            .arg(&id)
            .query_async(raw)
            .await
            .expect("zscore");
        let kept: bool = redis::cmd("HEXISTS")
            .arg(keys.tickets_ops(0))
            .arg(&id)
            .query_async(raw)
            .await
            .expect("hexists");
        assert_eq!((score, kept), (None, false), "{rid} was dropped");
        assert!(s.ticket_get(&id).await.expect("get").is_none());
    }
    assert!(mine(s, &k, FAR).await.is_empty());
}

mod tickets {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_two_sweepers_take_each_ticket_once() {
        let s = memory();
        two_sweepers_take_each_ticket_once(s.clone(), s, false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_two_sweepers_take_each_ticket_once() {
        let server = RedisServer::start();
        two_sweepers_take_each_ticket_once(redis(&server), redis(&server), true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_unreadable_tickets_are_dropped() {
        let server = RedisServer::start();
        let mut raw = server
            .client()
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        unreadable_tickets_are_dropped(&redis(&server), &mut raw).await;
    }

    /// Redis Cluster: the 16 shards' keys spread over every master (each shard's two keys on
    /// one slot), two stores race for the same tickets, and an unreadable ticket is dropped.
    /// (The single-store ticket tests run on a cluster in `redis_cluster_store_conforms`.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_cluster_tickets() {
        let cluster = RedisCluster::start(3, 0);
        let keys = tollgate_server::store::keys::Keys::new("tg");
        let mut masters = std::collections::BTreeSet::new();
        for shard in 0..ticket::SHARDS {
            let slot = cluster.slot(&keys.tickets_due(shard));
            assert_eq!(
                cluster.slot(&keys.tickets_ops(shard)),
                slot,
                "shard {shard}"
            );
            masters.insert(cluster.master_of(slot));
        }
        assert_eq!(masters.len(), 3, "the shards spread over every master");
        let store = || {
            RedisStore::connect(&RedisOptions {
                topology: Topology::Cluster(cluster.urls()),
                ..RedisOptions::standalone("", 1, "tg")
            })
            .expect("cluster store")
        };
        two_sweepers_take_each_ticket_once(store(), store(), true).await;
        let port = cluster.master_of(cluster.slot(&keys.tickets_ops(0)));
        let mut raw = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        unreadable_tickets_are_dropped(&store(), &mut raw).await;
    }
}

/// A shard whose keys Redis cannot serve (here: its `due` key holds a string, so every call on
/// it fails with WRONGTYPE) does not cost the other shards their tickets: `tickets_due` hands
/// out what it took from them — it took them off the store, so an error instead would lose
/// them — and the broken shard's own tickets wait there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_failing_shard_loses_no_other_shards_tickets() {
    let server = RedisServer::start();
    let s = redis(&server);
    let k = unique("ticket-broken-shard");
    let ids = ticket_ids(&k, 2, 0);
    for rid in &ids {
        s.ticket_put(&ticket::owner_ticket(&k, rid), &ticket_op(&k, rid, 1), NOON)
            .await
            .expect("put");
    }
    let keys = tollgate_server::store::keys::Keys::new("tg");
    let broken = ticket::SHARDS - 1;
    let mut raw = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("RENAME")
        .arg(keys.tickets_due(broken))
        .arg("stash")
        .query_async(&mut raw)
        .await
        .expect("rename");
    let _: () = redis::cmd("SET")
        .arg(keys.tickets_due(broken))
        .arg("not a sorted set")
        .query_async(&mut raw)
        .await
        .expect("set");
    let due = s
        .tickets_due(Some(FAR))
        .await
        .expect("the other shards answer");
    let on_broken = |rid: &String| ticket::shard(&ticket::owner_ticket(&k, rid)) == broken;
    let mut got: Vec<String> = due
        .into_iter()
        .map(|(_, op)| op)
        .filter(|op| op.owner == k)
        .map(|op| op.request_id.expect("a request id"))
        .collect();
    got.sort();
    let mut want: Vec<String> = ids.iter().filter(|r| !on_broken(r)).cloned().collect();
    want.sort();
    assert_eq!(got, want, "every healthy shard's tickets");
    // Repaired, the broken shard hands out its own.
    let _: () = redis::cmd("RENAME")
        .arg("stash")
        .arg(keys.tickets_due(broken))
        .query_async(&mut raw)
        .await
        .expect("rename back");
    let rest: Vec<_> = mine(&s, &k, FAR).await;
    assert_eq!(rest.len(), 2, "the broken shard's two");
    assert!(mine(&s, &k, FAR).await.is_empty());
}
