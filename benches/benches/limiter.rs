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
//! - `quota/period/{DAY,WEEK,MONTH}`: a quota period's index and end for a timestamp.
//! - `routes/match/{10,100}_routes`: the best route of a stage for `GET /items/42/reviews`
//!   among N templates (literal, `{param}` and `{proxy+}`).
//! - `over_limit_cache/lookup/{hit,miss}`: the local over-limit cache in front of the store.
//! - `redis_store/check/{1,10000}_keys`: `RedisStore::check` (one EVALSHA, pipelined on one
//!   connection, one request at a time) against the Redis at `TOLLGATE_BENCH_REDIS_URL`
//!   (skipped with a message when it is not set; it writes `tgbench:*` keys).
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
use tollgate_server::store::{BucketOp, CheckOp, QuotaOp, RateStore};

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
        lease: None,
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

fn bench_quota(c: &mut Criterion) {
    let mut g = c.benchmark_group("quota/period");
    for p in [Period::Day, Period::Week, Period::Month] {
        g.bench_function(format!("{p:?}").to_uppercase(), |b| {
            b.iter(|| {
                let i = quota::period_index(p, black_box(NOW));
                (quota::period_start(p, i), quota::period_end(p, i))
            })
        });
    }
    g.finish();
}

fn bench_routes(c: &mut Criterion) {
    use tollgate_server::catalog::routes::{Template, best_match};
    let mut g = c.benchmark_group("routes/match");
    for n in [10usize, 100] {
        let mut routes: Vec<(String, Template)> = Vec::new();
        for i in 0..n {
            let raw = match i % 4 {
                0 => format!("/r{i}"),
                1 => format!("/r{i}/{{id}}"),
                2 => format!("/r{i}/{{id}}/reviews"),
                _ => format!("/r{i}/{{proxy+}}"),
            };
            routes.push(("GET".into(), Template::parse(&raw).expect("template")));
        }
        routes.push((
            "GET".into(),
            Template::parse("/items/{id}/reviews").expect("t"),
        ));
        routes.push(("ANY".into(), Template::parse("/{proxy+}").expect("t")));
        g.bench_function(format!("{n}_routes"), |b| {
            b.iter(|| {
                best_match(
                    routes.iter().map(|(m, t)| (m.as_str(), t)),
                    "GET",
                    black_box("/items/42/reviews"),
                )
            })
        });
    }
    g.finish();
}

fn bench_over_limit_cache(c: &mut Criterion) {
    use tollgate_server::limiter::Verdict;
    use tollgate_server::overlimit::OverLimitCache;
    use tollgate_server::store::CheckOutcome;
    let mut g = c.benchmark_group("over_limit_cache/lookup");
    let keys = Keys::new("tg");
    let cache = OverLimitCache::new(100_000);
    let denied = op_for(&keys, 1, 0);
    let other = op_for(&keys, 2, 0);
    let out = CheckOutcome {
        verdict: Verdict::Throttled { bucket: 0 },
        retry_after_us: Some(3_600_000_000),
        remaining: vec![0],
        quota: None,
        now_us: NOW,
        replayed: false,
    };
    cache.record(&denied, &out, 1, NOW, cache.stamp(&denied.owner));
    g.bench_function("hit", |b| {
        b.iter(|| cache.lookup(black_box(&denied), 1, NOW + 1))
    });
    g.bench_function("miss", |b| {
        b.iter(|| cache.lookup(black_box(&other), 1, NOW + 1))
    });
    g.finish();
}

fn bench_redis_store(c: &mut Criterion) {
    use tollgate_server::store::redis::RedisStore;
    let Ok(url) = std::env::var("TOLLGATE_BENCH_REDIS_URL") else {
        eprintln!(
            "redis_store/check: skipped (set TOLLGATE_BENCH_REDIS_URL=redis://127.0.0.1:PORT/)"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = rt.block_on(async { RedisStore::new(&url, 1, "tgbench").expect("redis store") });
    let keys = Keys::new("tgbench");
    let initial = quota::period_index(Period::Month, SystemClock.now_micros());
    let mut g = c.benchmark_group("redis_store/check");
    for n in [1usize, 10_000] {
        let ops: Vec<CheckOp> = (0..n).map(|i| op_for(&keys, i, initial)).collect();
        rt.block_on(async {
            for op in &ops {
                store.check(op).await.expect("redis check");
            }
        });
        let mut at = 0usize;
        g.bench_function(format!("{n}_keys"), |b| {
            b.to_async(&rt).iter(|| {
                at = (at + 7919) % n;
                store.check(black_box(&ops[at]))
            })
        });
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
    targets = bench_gcra, bench_evaluate, bench_memory_store, bench_quota, bench_routes,
        bench_over_limit_cache, bench_redis_store
}
criterion_main!(benches);
