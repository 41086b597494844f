//! Each decorator alone around a fault-injecting memory store, under paused tokio time: no
//! test sleeps (a `Delay` or a `Hang` only moves paused time; the breaker and the leases read
//! the injected `FakeClock`, which the tests move), and the inner store counts the calls that
//! reached it.
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::*;
use crate::clock::FakeClock;
use crate::limiter::{Limit, Verdict};
use crate::stamps::Stamps;
use crate::store::fault::{Fault, FaultStore};
use crate::store::memory::MemoryStore;
use crate::store::{BackendKind, BucketOp, LeaseTerms};

const NOON: u64 = crate::pipeline::tests::NOON;
const DEADLINE: Duration = Duration::from_millis(50);

fn memory(clock: &FakeClock) -> AnyStore {
    AnyStore::Memory(MemoryStore::new(Arc::new(clock.clone())))
}

/// A check of one bucket (rate 1/s, burst `burst`) in `owner`'s hash.
fn op(owner: &str, burst: u32) -> CheckOp {
    let owner: Arc<str> = owner.into();
    CheckOp {
        owner: owner.clone(),
        buckets: vec![BucketOp {
            hash: owner,
            field: "t:a".into(),
            limit: Limit::try_new(1.0, u64::from(burst)).expect("valid limit"),
        }],
        quota: None,
        cost: 1,
        now: None,
        request_id: None,
        dry_run: false,
        usage: None,
        lease: None,
    }
}

fn oom() -> StoreError {
    StoreError::Backend {
        kind: BackendKind::Oom,
        message: "OOM command not allowed".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn timeout_turns_a_hang_into_a_timeout_at_the_deadline() {
    let clock = FakeClock::new(NOON);
    let store = Timeout::new(FaultStore::new(memory(&clock)), DEADLINE);
    store.inner.next(1, Fault::Hang);
    let started = tokio::time::Instant::now();
    let err = store
        .check(&op("k", 5))
        .await
        .expect_err("a hang times out");
    assert!(matches!(err, StoreError::Timeout), "{err:?}");
    assert_eq!(started.elapsed(), DEADLINE, "exactly the deadline");
    // The next call is not affected.
    let out = store.check(&op("k", 5)).await.expect("answers");
    assert_eq!(out.verdict, Verdict::Allowed);
    // Settlements are bounded too.
    store.inner.next(1, Fault::Hang);
    let err = store.settle(&op("k", 5), 1).await.expect_err("times out");
    assert!(matches!(err, StoreError::Timeout));
}

#[tokio::test(start_paused = true)]
async fn timeout_waits_for_an_answer_within_the_deadline() {
    let clock = FakeClock::new(NOON);
    let store = Timeout::new(FaultStore::new(memory(&clock)), DEADLINE);
    store
        .inner
        .next(1, Fault::Delay(DEADLINE - Duration::from_millis(1)));
    let out = store.check(&op("k", 5)).await.expect("late but in time");
    assert_eq!(out.remaining, vec![4]);
    store
        .inner
        .next(1, Fault::Delay(DEADLINE + Duration::from_millis(1)));
    assert!(matches!(
        store.check(&op("k", 5)).await,
        Err(StoreError::Timeout)
    ));
}

#[tokio::test(start_paused = true)]
async fn metered_counts_checks_that_reach_it_not_settlements() {
    let clock = FakeClock::new(NOON);
    let calls = Arc::new(AtomicU64::new(0));
    let store = Metered::new(FaultStore::new(memory(&clock)), "memory", calls.clone());
    store.check(&op("k", 5)).await.expect("check");
    store.inner.next(1, Fault::Fail(oom()));
    store.check(&op("k", 5)).await.expect_err("fails");
    let _ = store.settle(&op("k", 5), 1).await;
    assert_eq!(
        store.calls(),
        2,
        "both checks, failed or not; no settlement"
    );
    assert_eq!(calls.load(Ordering::Relaxed), 2, "shared with the owner");
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_after_store_faults_in_a_row_then_probes_once() {
    let clock = FakeClock::new(NOON);
    let open_for = Duration::from_millis(500);
    let circuit = Arc::new(breaker::Breaker::new(3, open_for, Arc::new(clock.clone())));
    let store = Breaker::new(FaultStore::new(memory(&clock)), Some(circuit.clone()));
    let fault = &store.inner;
    fault.next(2, Fault::Fail(oom()));
    for _ in 0..2 {
        store.check(&op("k", 5)).await.expect_err("OOM");
    }
    // A success in between resets the count.
    store.check(&op("k", 5)).await.expect("answers");
    fault.next(3, Fault::Fail(StoreError::Timeout));
    for _ in 0..3 {
        store.check(&op("k", 5)).await.expect_err("timeout");
    }
    assert!(store.is_open(), "three faults in a row open it");
    let reached = fault.calls();
    let err = store.check(&op("k", 5)).await.expect_err("rejected");
    assert!(matches!(err, StoreError::Unreachable(_)), "{err:?}");
    assert_eq!(
        fault.calls(),
        reached,
        "an open circuit does not call the store"
    );
    clock.advance_by(open_for - Duration::from_millis(1));
    store.check(&op("k", 5)).await.expect_err("still open");
    assert_eq!(fault.calls(), reached);
    clock.advance_by(Duration::from_millis(1));
    // The probe fails: open again for the whole period.
    fault.next(1, Fault::Fail(StoreError::Unreachable("refused".into())));
    store.check(&op("k", 5)).await.expect_err("the probe fails");
    assert_eq!(fault.calls(), reached + 1, "one probe went through");
    store.check(&op("k", 5)).await.expect_err("open again");
    assert_eq!(fault.calls(), reached + 1);
    clock.advance_by(open_for);
    store.check(&op("k", 5)).await.expect("the probe succeeds");
    assert!(!store.is_open(), "and closes the circuit");
    assert_eq!(circuit.permit(), Permit::Call);
}

#[tokio::test(start_paused = true)]
async fn breaker_counts_store_faults_by_kind_not_by_message() {
    let clock = FakeClock::new(NOON);
    let circuit = Arc::new(breaker::Breaker::new(
        2,
        Duration::from_secs(1),
        Arc::new(clock.clone()),
    ));
    let store = Breaker::new(FaultStore::new(memory(&clock)), Some(circuit));
    // Errors one request's data could cause never open it, whatever their message says.
    let data = |message: &str| StoreError::Backend {
        kind: BackendKind::Other,
        message: message.into(),
    };
    store
        .inner
        .next(1, Fault::Fail(data("OOM busy readonly: a key's name")));
    store.inner.next(1, Fault::Fail(data("WRONGTYPE")));
    store
        .inner
        .next(1, Fault::Fail(StoreError::Protocol("short reply".into())));
    store.inner.next(1, Fault::Fail(data("ERR")));
    for _ in 0..4 {
        store.check(&op("k", 5)).await.expect_err("fails");
    }
    assert!(!store.is_open(), "no store fault among them");
    for kind in [
        BackendKind::Busy,
        BackendKind::ReadOnly,
        BackendKind::NoPerm,
        BackendKind::MasterDown,
        BackendKind::Loading,
        BackendKind::Oom,
    ] {
        let circuit = Arc::new(breaker::Breaker::new(
            1,
            Duration::from_secs(1),
            Arc::new(clock.clone()),
        ));
        let store = Breaker::new(FaultStore::new(memory(&clock)), Some(circuit));
        store.inner.next(
            1,
            Fault::Fail(StoreError::Backend {
                kind,
                message: "x".into(),
            }),
        );
        store.check(&op("k", 5)).await.expect_err("fails");
        assert!(store.is_open(), "{kind:?} is the store's own trouble");
    }
}

#[tokio::test(start_paused = true)]
async fn breaker_off_passes_everything() {
    let clock = FakeClock::new(NOON);
    let store = Breaker::new(FaultStore::new(memory(&clock)), None);
    store.inner.next(10, Fault::Fail(oom()));
    for _ in 0..10 {
        store.check(&op("k", 5)).await.expect_err("fails");
    }
    store.check(&op("k", 5)).await.expect("reaches the store");
    assert!(!store.is_open());
    assert_eq!(store.inner.calls(), 11);
}

fn over_limit(
    clock: &FakeClock,
    inner: FaultStore<AnyStore>,
    generation: Arc<AtomicU64>,
) -> (OverLimit<FaultStore<AnyStore>>, Arc<OverLimitCache>) {
    let cache = Arc::new(OverLimitCache::new(100));
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let store = OverLimit::new(
        inner,
        Some((cache.clone(), clock)),
        Arc::new(move || generation.load(Ordering::Relaxed)),
    );
    (store, cache)
}

#[tokio::test(start_paused = true)]
async fn over_limit_answers_a_known_denial_without_the_store_until_it_expires() {
    let clock = FakeClock::new(NOON);
    let generation = Arc::new(AtomicU64::new(1));
    let (store, _) = over_limit(&clock, FaultStore::new(memory(&clock)), generation.clone());
    assert_eq!(
        store.check(&op("k", 1)).await.expect("check").verdict,
        Verdict::Allowed
    );
    let denied = store.check(&op("k", 1)).await.expect("check");
    assert_eq!(denied.verdict, Verdict::Throttled { bucket: 0 });
    assert_eq!(store.inner.reached(), 2);
    // Known now: answered locally, with the wait left.
    clock.advance(400_000);
    let local = store.check(&op("k", 1)).await.expect("local");
    assert_eq!(local.verdict, Verdict::Throttled { bucket: 0 });
    assert_eq!(local.retry_after_us, Some(600_000));
    assert_eq!(store.inner.calls(), 2, "the store was not called");
    // Another owner is not covered.
    store.check(&op("other", 1)).await.expect("check");
    assert_eq!(store.inner.calls(), 3);
    // A new catalog generation forgets it.
    generation.store(2, Ordering::Relaxed);
    store.check(&op("k", 1)).await.expect("check");
    assert_eq!(store.inner.calls(), 4, "asked the store again");
    // Once the bucket refills, the store is asked (and admits).
    clock.advance(1_000_000);
    let out = store.check(&op("k", 1)).await.expect("check");
    assert_eq!(out.verdict, Verdict::Allowed);
    assert_eq!(store.inner.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn over_limit_keeps_nothing_from_a_failed_call_and_not_an_answer_invalidated_in_flight() {
    let clock = FakeClock::new(NOON);
    let (store, cache) = over_limit(
        &clock,
        FaultStore::new(memory(&clock)),
        Arc::new(AtomicU64::new(1)),
    );
    store.check(&op("k", 1)).await.expect("allowed");
    store.inner.next(1, Fault::Fail(oom()));
    store.check(&op("k", 1)).await.expect_err("fails");
    store.check(&op("k", 1)).await.expect("denied by the store");
    assert_eq!(store.inner.calls(), 3, "the failure remembered nothing");
    // An UpdateUsage while the next answer is in flight: it must not be kept.
    cache.invalidate_owner("k");
    store.inner.next(1, Fault::Delay(Duration::from_millis(10)));
    let in_flight = op("k", 1);
    let (out, ()) = tokio::join!(store.check(&in_flight), async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        cache.invalidate_owner("k");
    });
    assert_eq!(
        out.expect("denied").verdict,
        Verdict::Throttled { bucket: 0 }
    );
    store.check(&op("k", 1)).await.expect("denied");
    assert_eq!(store.inner.calls(), 5, "asked the store: nothing was kept");
    store.check(&op("k", 1)).await.expect("denied");
    assert_eq!(store.inner.calls(), 5, "the last denial was kept");
}

/// The lease layer over a fault store on the memory store (the lease's give-backs go to the
/// memory store, which takes nothing back: these tests count store calls, not units).
fn leased(clock: &FakeClock) -> Leases<FaultStore<AnyStore>> {
    let store = memory(clock);
    let leases = Arc::new(lease::Leases::new(
        store.clone(),
        Arc::new(Stamps::new()),
        Arc::new(clock.clone()),
        crate::tasks::Tasks::new("test leases"),
    ));
    Leases::new(FaultStore::new(store.clone()), Some(leases), store)
}

fn lease_op(units: u64, max_age: Duration) -> CheckOp {
    let mut op = op("hot", 100);
    op.lease = Some(LeaseTerms { units, max_age });
    op
}

#[tokio::test(start_paused = true)]
async fn leases_answer_from_held_units_until_spent_or_expired() {
    let clock = FakeClock::new(NOON);
    let store = leased(&clock);
    let max_age = Duration::from_millis(200);
    let op = lease_op(10, max_age);
    let granted = store.check(&op).await.expect("granted");
    assert_eq!(granted.verdict, Verdict::Allowed);
    assert_eq!(store.inner.calls(), 1, "one call took 1 + 10 units");
    for _ in 0..10 {
        let out = store.check(&op).await.expect("spent");
        assert_eq!(out.verdict, Verdict::Allowed);
    }
    assert_eq!(store.inner.calls(), 1, "ten checks from the lease");
    store.check(&op).await.expect("a new grant");
    assert_eq!(store.inner.calls(), 2, "spent: a new lease");
    // Expired: the next check takes a new lease even with units left.
    clock.advance_by(max_age);
    store.check(&op).await.expect("a new grant");
    assert_eq!(store.inner.calls(), 3, "expired: a new lease");
}

#[tokio::test(start_paused = true)]
async fn leases_step_aside_after_a_failed_grant_and_pass_exact_ops_through() {
    let clock = FakeClock::new(NOON);
    let store = leased(&clock);
    let max_age = Duration::from_millis(200);
    let op = lease_op(10, max_age);
    store.inner.next(1, Fault::Fail(StoreError::Timeout));
    store.check(&op).await.expect_err("the grant failed");
    // Exact checks (cost 1, one store call each) until max_age.
    for n in 0..3 {
        store.check(&op).await.expect("exact");
        assert_eq!(store.inner.calls(), 2 + n);
    }
    clock.advance_by(max_age);
    store.check(&op).await.expect("a grant again");
    for _ in 0..10 {
        store.check(&op).await.expect("spent");
    }
    assert_eq!(store.inner.calls(), 5, "leasing again");
    // Idempotent checks, dry runs and ops without lease terms always reach the store.
    let mut exact = op.clone();
    exact.request_id = Some("r1".into());
    store.check(&exact).await.expect("exact");
    exact.request_id = None;
    exact.dry_run = true;
    store.check(&exact).await.expect("exact");
    exact.dry_run = false;
    exact.lease = None;
    store.check(&exact).await.expect("exact");
    assert_eq!(store.inner.calls(), 8);
}

/// The stack as the checker builds it, over a fault store: a hang costs the deadline, is
/// counted and metered, and enough of them open the circuit, after which a check fails at
/// once; a remembered denial is answered before any of it.
#[tokio::test(start_paused = true)]
async fn the_composed_stack_times_out_counts_and_opens() {
    let clock = FakeClock::new(NOON);
    let calls = Arc::new(AtomicU64::new(0));
    let circuit = Arc::new(breaker::Breaker::new(
        2,
        Duration::from_secs(1),
        Arc::new(clock.clone()),
    ));
    let stack = Breaker::new(
        Metered::new(
            Timeout::new(FaultStore::new(memory(&clock)), DEADLINE),
            "memory",
            calls.clone(),
        ),
        Some(circuit.clone()),
    );
    let (stack, _) = {
        let cache = Arc::new(OverLimitCache::new(100));
        let c: Arc<dyn Clock> = Arc::new(clock.clone());
        (
            OverLimit::new(stack, Some((cache.clone(), c)), Arc::new(|| 1)),
            cache,
        )
    };
    let fault = || &stack.inner.inner.inner.inner;
    stack.check(&op("k", 1)).await.expect("allowed");
    stack.check(&op("k", 1)).await.expect("denied, remembered");
    stack.check(&op("k", 1)).await.expect("denied locally");
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    fault().next(2, Fault::Hang);
    let started = tokio::time::Instant::now();
    for _ in 0..2 {
        let e = stack.check(&op("other", 1)).await.expect_err("hangs");
        assert!(matches!(e, StoreError::Timeout));
    }
    assert_eq!(started.elapsed(), DEADLINE * 2);
    assert!(circuit.is_open());
    let started = tokio::time::Instant::now();
    stack.check(&op("other", 1)).await.expect_err("open");
    assert_eq!(started.elapsed(), Duration::ZERO, "failed at once");
    assert_eq!(
        calls.load(Ordering::Relaxed),
        4,
        "the rejected check made no call"
    );
    assert_eq!(fault().calls(), 4);
}
