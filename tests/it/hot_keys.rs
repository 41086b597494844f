//! Hot keys: a plan with `local_lease` lets each instance take a batch of a key's units in one
//! store call and admit from it locally. Two real `tollgate` processes on a real Redis: far
//! fewer store calls, never beyond the quota (leased units are already counted), the unspent
//! units go back, and a bucket is exceeded by at most `units` × instances.
use std::time::{Duration, Instant};

use tollgate_proto::v1::Decision;
use tollgate_tests::checks::{Client, decision, fire, get_pets, tally};
use tollgate_tests::config::{Config, Period, Plan};
use tollgate_tests::redis::{RedisServer, command_calls};
use tollgate_tests::tollgate::TollgateProcess;

const KEY: &str = "hot-key-aaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// Port 0 listeners, this Redis, `failure_mode: closed`, and `GET /pets` of petstore/prod
/// with `plan` and key `k1` = [`KEY`] in it.
fn config(redis: &RedisServer, plan: Plan) -> String {
    Config::redis(redis.url())
        .closed()
        .petstore_with(plan, KEY)
        .to_yaml()
}

fn evalsha_calls(redis: &RedisServer) -> u64 {
    let mut c = redis
        .client()
        .get_connection_with_timeout(Duration::from_secs(1))
        .expect("redis");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .expect("INFO");
    command_calls(&info, "evalsha")
}

/// Key `k1`'s quota state in Redis (default prefix) in plan `hot`: `(quota used, used today)`.
fn stored_usage(redis: &RedisServer) -> (u64, u64) {
    redis.quota_state("tg", "k1", "hot")
}

fn allowed(all: &[tollgate_proto::v1::CheckRequestResponse]) -> usize {
    all.iter()
        .filter(|r| decision(r) == Decision::Allow)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_save_store_calls_and_never_exceed_the_quota() {
    let redis = RedisServer::start();
    let cfg = config(
        &redis,
        Plan::new("hot")
            .quota(1000, Period::Day)
            .local_lease(50, Duration::from_millis(300)),
    );
    let a = TollgateProcess::start(&cfg);
    let b = TollgateProcess::start(&cfg);
    let clients: [Client; 2] = [a.client().await, b.client().await];
    let before = evalsha_calls(&redis);
    let all = fire(&clients, 32, 3_000, get_pets(KEY)).await;
    let calls = evalsha_calls(&redis) - before;
    let first = allowed(&all);
    let counts = tally(&all);
    eprintln!("leased quota: {calls} store calls for 3,000 checks, {first} allowed: {counts:?}");
    assert!(first <= 1_000, "never beyond the quota: {counts:?}");
    assert!(
        first >= 1_000 - 2 * 50,
        "at most one lease per instance unspent: {counts:?}"
    );
    assert!(
        calls < 300,
        "{calls} store calls for 3,000 checks: leases take 50 units a call"
    );
    for r in all.iter().filter(|r| decision(r) == Decision::Allow) {
        let q = r.quota.as_ref().expect("quota on ALLOW");
        assert!(q.remaining < 1_000, "{q:?}");
    }

    // The unspent units go back after max_age; then the quota admits exactly what is left.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (used, today) = stored_usage(&redis);
    assert_eq!(
        (used, today),
        (first as u64, first as u64),
        "the store counts what was admitted, once leases are given back"
    );
    let rest = allowed(&fire(&clients, 4, 300, get_pets(KEY)).await);
    assert_eq!(first + rest, 1_000, "{first} + {rest}: the quota, exactly");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(stored_usage(&redis), (1_000, 1_000));
    let metrics = tollgate_tests::tollgate::http_get(a.metrics_addr(), "/metrics")
        .expect("metrics")
        .1;
    assert!(
        metrics.contains("tollgate_lease_checks_total{result=\"spent\"}"),
        "{metrics}"
    );
}

/// A token bucket (burst 100, 100/s) with leases of 20 units on two instances: however the
/// requests are spread, at most burst + rate × elapsed + 20 × 2 (+1) pass — the documented
/// bound — and the bucket is still enforced (most requests are throttled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_bucket_is_exceeded_by_at_most_units_times_instances() {
    let redis = RedisServer::start();
    let cfg = config(
        &redis,
        Plan::new("hot")
            .throttle(100.0, 100)
            .local_lease(20, Duration::from_millis(200)),
    );
    let a = TollgateProcess::start(&cfg);
    let b = TollgateProcess::start(&cfg);
    let clients: [Client; 2] = [a.client().await, b.client().await];
    let started = Instant::now();
    let all = fire(&clients, 16, 4_000, get_pets(KEY)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let n = allowed(&all);
    let counts = tally(&all);
    let bound = 100.0 + 100.0 * elapsed + 2.0 * 20.0 + 1.0;
    eprintln!("leased bucket: {n} allowed in {elapsed:.2}s (bound {bound:.0}): {counts:?}");
    assert!(n >= 100, "the burst passes: {counts:?}");
    assert!(
        n as f64 <= bound,
        "{n} allowed in {elapsed:.2}s exceeds burst + rate + units × instances ({bound:.0})"
    );
    assert!(
        counts.get("DECISION_THROTTLED").copied().unwrap_or(0) > 0,
        "{counts:?}"
    );
}
