//! Criterion micro-benchmarks of the rate-limit math and the embedded store.
//!
//! - `gcra/check/*`: one GCRA bucket decision (`limiter::gcra::check`).
//! - `evaluate/2_buckets_quota/*`: one whole check (`limiter::evaluate`): a per-key bucket, a
//!   stage-wide bucket and a monthly quota.
//! - `memory_store/check/{1,10000}_keys`: `MemoryStore::check` with the system clock and the
//!   `CheckOp` the pipeline builds for a key in a plan with a per-method throttle and a quota
//!   (one bucket + quota, as in the config `tollgate-bench --gen-config` writes), over 1 key or
//!   over 10,000 keys picked by a seeded RNG.
//!
//! Runs are kept short (3 s measurement, 20 samples): `cargo bench -p tollgate-benches`.
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tollgate_server::clock::{Clock, SystemClock};
use tollgate_server::limiter::gcra::{self, Limit};
use tollgate_server::limiter::{BucketInput, Period, QuotaInput, QuotaState, evaluate, quota};
use tollgate_server::store::keys::Keys;
use tollgate_server::store::memory::MemoryStore;
use tollgate_server::store::{BucketOp, CheckOp, QuotaOp, Store};

/// A fixed "now" (2027-01-15), so the math benchmarks do not depend on the date.
const NOW: u64 = 1_800_000_000_000_000;

fn limit(rate: f64, burst: u64) -> Limit {
    Limit::try_new(rate, burst).expect("valid benchmark limit")
}

/// Runs a future that must complete without suspending (the memory store never awaits), without
/// a runtime, so the measurement is the store and nothing else.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the memory store suspended"),
    }
}

fn bench_gcra(c: &mut Criterion) {
    let mut g = c.benchmark_group("gcra/check");
    let l = limit(100.0, 200);
    // A bucket with tokens left: admitted.
    let tat = Some(NOW + 10 * l.interval_us());
    g.bench_function("allow", |b| {
        b.iter(|| gcra::check(black_box(&l), black_box(tat), black_box(NOW), black_box(1)))
    });
    // An empty bucket: denied with an exact retry time.
    let empty = Some(NOW + l.tolerance_us() + l.interval_us());
    g.bench_function("deny", |b| {
        b.iter(|| {
            gcra::check(
                black_box(&l),
                black_box(empty),
                black_box(NOW),
                black_box(1),
            )
        })
    });
    g.finish();
}

fn bench_evaluate(c: &mut Criterion) {
    let mut g = c.benchmark_group("evaluate/2_buckets_quota");
    let key = limit(100.0, 200);
    let stage = limit(10_000.0, 5_000);
    let buckets = [
        BucketInput {
            limit: key,
            tat: Some(NOW + 3 * key.interval_us()),
        },
        BucketInput {
            limit: stage,
            tat: Some(NOW + 100 * stage.interval_us()),
        },
    ];
    let index = quota::period_index(Period::Month, NOW);
    let q = QuotaInput {
        limit: 1_000_000,
        offset: 0,
        period: Period::Month,
        initial_index: index,
        state: Some(QuotaState {
            index,
            used: 12_345,
        }),
        override_limit: None,
    };
    g.bench_function("allow", |b| {
        b.iter(|| evaluate(black_box(&buckets), Some(black_box(&q)), black_box(NOW), 1))
    });
    let used_up = QuotaInput {
        state: Some(QuotaState {
            index,
            used: 1_000_000,
        }),
        ..q
    };
    g.bench_function("quota_exceeded", |b| {
        b.iter(|| {
            evaluate(
                black_box(&buckets),
                Some(black_box(&used_up)),
                black_box(NOW),
                1,
            )
        })
    });
    g.finish();
}

/// The op `pipeline::build_op` makes for API key `key-<i>` in plan `bench` (per-method throttle,
/// monthly quota) on `GET /items`, with no stage-wide limit.
fn op_for(keys: &Keys, i: usize, initial_index: i64) -> CheckOp {
    let owner = keys.api_key(&format!("key-{i}"));
    CheckOp {
        owner: owner.clone(),
        buckets: vec![BucketOp {
            hash: owner,
            field: "t:bench:GET /items".to_string(),
            limit: limit(1_000_000.0, 1_000_000),
        }],
        quota: Some(QuotaOp {
            field: "q:bench".into(),
            override_field: "ql:bench".into(),
            limit: 1_000_000_000_000,
            offset: 0,
            period: Period::Month,
            initial_index,
        }),
        cost: 1,
        now: None,
        request_id: None,
        dry_run: false,
        usage: None,
    }
}

fn bench_memory_store(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory_store/check");
    let keys = Keys::new("tg");
    let clock = SystemClock;
    let initial = quota::period_index(Period::Month, clock.now_micros());
    for n in [1usize, 10_000] {
        // Created outside a runtime: no sweep task, nothing but the checks touches the lock.
        let store = MemoryStore::new(Arc::new(SystemClock));
        let ops: Vec<CheckOp> = (0..n).map(|i| op_for(&keys, i, initial)).collect();
        // Fill every key first so the measurement is the steady state, not first inserts.
        for op in &ops {
            ready(store.check(op)).expect("memory store check");
        }
        // A seeded, precomputed key order: the RNG itself stays out of the measurement.
        let mut rng = StdRng::seed_from_u64(42);
        let order: Vec<usize> = (0..1 << 16).map(|_| rng.random_range(0..n)).collect();
        let mut at = 0usize;
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{n}_keys")),
            &n,
            |b, _| {
                b.iter(|| {
                    at = (at + 1) & ((1 << 16) - 1);
                    ready(store.check(black_box(&ops[order[at]])))
                })
            },
        );
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_gcra, bench_evaluate, bench_memory_store
}
criterion_main!(benches);
