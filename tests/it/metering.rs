//! Metered costs (`ReportUsage`): a check reserves its `cost`, the report settles the actual
//! cost once per request id. Real `tollgate` processes on a real `redis-server`: with two
//! instances checking and reporting concurrently (each report through the other instance), the
//! quota ends exactly at the sum of the admitted requests' actual costs, and repeated reports
//! change nothing.
use std::time::Duration;

use tokio::task::JoinSet;
use tollgate_proto::v1::{CheckRequestRequest, Decision, ReportUsageRequest};
use tollgate_tests::checks::{Client, check, decision, get_pets};
use tollgate_tests::config::{
    Config, Key, MeteringConfig, Period, Plan, Route, STORE_TIMEOUT, Stage,
};
use tollgate_tests::redis::RedisServer;
use tollgate_tests::tollgate::TollgateProcess;

const KEY: &str = "meter-key-aaaaaaaaaaaaaaaaaaaaaaaaaaa";
const KEY2: &str = "meter-key-bbbbbbbbbbbbbbbbbbbbbbbbbbb";
const KEY3: &str = "meter-key-ccccccccccccccccccccccccccc";
const KEY5: &str = "meter-key-eeeeeeeeeeeeeeeeeeeeeeeeeee";
/// The `floored` plan's `metering.min_reservation` and `max_reservation`.
const MIN: u64 = 5_000;
const MAX: u64 = 8_000;
const LIMIT: u64 = 10_000;
/// The quota of the `bulk` plan (no throttle) the concurrent test runs against.
const BULK: u64 = 6_000;

/// Four plans on petstore/prod's `GET /pets`, one key each: `metered` (throttle metered too),
/// `plain` (quota and throttle, no metering), `bulk` (a quota of [`BULK`]) and `floored`
/// (reservations between [`MIN`] and [`MAX`]); on the store of `base`.
fn config(base: Config) -> String {
    let quota_and_bucket = |id: &str| Plan::new(id).quota(LIMIT, Period::Day).throttle(0.01, 1000);
    base.closed()
        .petstore(Stage::prod().route(Route::get_pets()))
        .plan(quota_and_bucket("metered").metering(MeteringConfig {
            meter_throttle: true,
            ..MeteringConfig::default()
        }))
        .plan(quota_and_bucket("plain"))
        .plan(Plan::new("bulk").quota(BULK, Period::Day))
        .plan(
            Plan::new("floored")
                .quota(LIMIT, Period::Day)
                .metering(MeteringConfig {
                    min_reservation: Some(MIN),
                    max_reservation: Some(MAX),
                    ..MeteringConfig::default()
                }),
        )
        .key(Key::new("k1", KEY, "metered"))
        .key(Key::new("k2", KEY2, "plain"))
        .key(Key::new("k3", KEY3, "bulk"))
        .key(Key::new("k5", KEY5, "floored"))
        .to_yaml()
}

fn redis_config(redis: &RedisServer) -> String {
    config(Config::redis(redis.url()))
}

fn metered(key: &str, id: &str, cost: u64) -> CheckRequestRequest {
    CheckRequestRequest {
        request_id: id.into(),
        cost,
        ..get_pets(key)
    }
}

fn report(req: &CheckRequestRequest, actual: u64) -> ReportUsageRequest {
    ReportUsageRequest {
        request: Some(req.clone()),
        actual_cost: actual,
    }
}

/// The quota units left for `key`, read with a dry-run check (which reports as if charged 1).
async fn quota_left(c: &mut Client, key: &str) -> u64 {
    let r = check(
        c,
        CheckRequestRequest {
            dry_run: true,
            ..get_pets(key)
        },
    )
    .await;
    r.quota.expect("quota").remaining + 1
}

/// The key bucket's tokens left, read with a dry-run check (as if charged 1).
async fn tokens_left(c: &mut Client, key: &str) -> u64 {
    let r = check(
        c,
        CheckRequestRequest {
            dry_run: true,
            ..get_pets(key)
        },
    )
    .await;
    r.throttle.expect("throttle").remaining + 1
}

/// A small deterministic generator (no extra dependency): xorshift64*.
fn random(seed: u64) -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_end_at_the_sum_of_actual_costs() {
    let redis = RedisServer::start();
    let cfg = redis_config(&redis);
    let a = TollgateProcess::start(&cfg);
    let b = TollgateProcess::start(&cfg);
    let clients: [Client; 2] = [a.client().await, b.client().await];
    // 600 requests reserving up to 40 units each (~12,000 in all, twice the quota), all at
    // once: reservations fill the quota before most reports come back, so about half are
    // denied, while reports refund and charge extra concurrently on both instances.
    const REQUESTS: u64 = 600;
    let mut set = JoinSet::new();
    for i in 0..REQUESTS {
        let mut checker = clients[(i % 2) as usize].clone();
        let mut reporter = clients[((i + 1) % 2) as usize].clone();
        set.spawn(async move {
            let r = random(i);
            let cost = 1 + r % 40;
            // A quarter of the upstreams fail (actual 0); the rest use up to 1.5× the reserve.
            let actual = if r.is_multiple_of(4) {
                0
            } else {
                (r >> 8) % (cost * 3 / 2 + 1)
            };
            let req = metered(KEY3, &format!("req-{i}"), cost);
            let answer = check(&mut checker, req.clone()).await;
            let admitted = decision(&answer) == Decision::Allow;
            let res = reporter.report_usage(report(&req, actual)).await;
            match (admitted, res) {
                (true, Ok(r)) => {
                    let r = r.into_inner();
                    assert_eq!(
                        (r.reserved, r.actual, r.already_reported),
                        (cost, actual, false)
                    );
                    Some((req, actual))
                }
                (false, Err(s)) => {
                    assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
                    None
                }
                (admitted, res) => panic!("admitted {admitted}: report answered {res:?}"),
            }
        });
    }
    let mut settled = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Some(x) = r.expect("task") {
            settled.push(x);
        }
    }
    let sum: u64 = settled.iter().map(|(_, a)| a).sum();
    eprintln!(
        "{} of {REQUESTS} admitted; actual costs sum to {sum}",
        settled.len()
    );
    assert!(settled.len() > 100 && settled.len() < REQUESTS as usize);
    let mut c = clients[0].clone();
    let dry = check(
        &mut c,
        CheckRequestRequest {
            dry_run: true,
            ..get_pets(KEY3)
        },
    )
    .await;
    if sum < BULK {
        assert_eq!(dry.quota.expect("quota").remaining, BULK - sum - 1);
    } else {
        assert_eq!(
            decision(&dry),
            Decision::QuotaExceeded,
            "post-paid past the limit"
        );
    }
    // The stored count itself (the answers clamp at the limit).
    let mut conn = redis
        .client()
        .get_connection_with_timeout(Duration::from_secs(1))
        .expect("redis");
    let state: String = redis::cmd("HGET")
        .arg("tg:{k:k3}")
        .arg("q:bulk")
        .query(&mut conn)
        .expect("the key's state");
    // `<day>:<quota used>d:<used today>`
    let p: Vec<&str> = state.split(':').collect();
    assert_eq!(
        p[1],
        format!("{sum}d"),
        "quota used = Σ actual costs: {state}"
    );
    assert_eq!(
        p[2],
        sum.to_string(),
        "today's usage = Σ actual costs: {state}"
    );

    // Every report again, through either instance, with another actual: nothing changes.
    let mut set = JoinSet::new();
    for (n, (req, actual)) in settled.into_iter().enumerate() {
        let mut c = clients[n % 2].clone();
        set.spawn(async move {
            let r = c
                .report_usage(report(&req, actual + 7))
                .await
                .expect("repeat report")
                .into_inner();
            assert!(r.already_reported);
            assert_eq!(r.actual, actual, "the first settlement stands");
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("task");
    }
    let state2: String = redis::cmd("HGET")
        .arg("tg:{k:k3}")
        .arg("q:bulk")
        .query(&mut conn)
        .expect("the key's state");
    assert_eq!(state2, state, "repeated reports changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_throttle_adjusts_the_key_bucket_and_bad_reports_are_refused() {
    let redis = RedisServer::start();
    let a = TollgateProcess::start(&redis_config(&redis));
    let mut c = a.client().await;

    // metering.meter_throttle: the bucket gets the unused units back.
    let req = metered(KEY, "t-1", 300);
    assert_eq!(decision(&check(&mut c, req.clone()).await), Decision::Allow);
    assert_eq!(tokens_left(&mut c, KEY).await, 700);
    let r = c
        .report_usage(report(&req, 100))
        .await
        .expect("report")
        .into_inner();
    assert_eq!(
        (r.reserved, r.actual, r.already_reported),
        (300, 100, false)
    );
    let q = r.quota.expect("quota");
    assert_eq!((q.limit, q.remaining), (LIMIT, LIMIT - 100));
    assert_eq!(tokens_left(&mut c, KEY).await, 900, "200 tokens back");
    // More than reserved: the bucket is charged the extra too.
    let req = metered(KEY, "t-2", 100);
    assert_eq!(decision(&check(&mut c, req.clone()).await), Decision::Allow);
    c.report_usage(report(&req, 500)).await.expect("report");
    assert_eq!(tokens_left(&mut c, KEY).await, 400);
    assert_eq!(quota_left(&mut c, KEY).await, LIMIT - 600);

    // Without it, only the quota moves.
    let req = metered(KEY2, "t-1", 300);
    assert_eq!(decision(&check(&mut c, req.clone()).await), Decision::Allow);
    c.report_usage(report(&req, 100)).await.expect("report");
    assert_eq!(
        tokens_left(&mut c, KEY2).await,
        700,
        "the bucket is not metered"
    );
    assert_eq!(quota_left(&mut c, KEY2).await, LIMIT - 100);

    // Bad reports.
    let code = |r: Result<tonic::Response<_>, tonic::Status>| match r {
        Ok(_) => panic!("accepted"),
        Err(s) => (s.code(), s.message().to_string()),
    };
    let (c1, m1) = code(c.report_usage(report(&metered(KEY, "", 10), 1)).await);
    assert_eq!(c1, tonic::Code::InvalidArgument);
    assert!(m1.contains("request_id"), "{m1}");
    let (c2, m2) = code(
        c.report_usage(report(&metered(KEY, "t-1", 300), 1_000_001))
            .await,
    );
    assert_eq!(c2, tonic::Code::InvalidArgument);
    assert!(m2.contains("actual_cost"), "{m2}");
    let (c3, _) = code(
        c.report_usage(ReportUsageRequest {
            request: None,
            actual_cost: 1,
        })
        .await,
    );
    assert_eq!(c3, tonic::Code::InvalidArgument);
    let (c4, m4) = code(c.report_usage(report(&metered(KEY, "nope", 10), 1)).await);
    assert_eq!(c4, tonic::Code::FailedPrecondition);
    assert!(m4.contains("no reservation"), "{m4}");
    // Another cost than the check reserved is another request: nothing to settle.
    let (c5, _) = code(c.report_usage(report(&metered(KEY, "t-1", 299), 1)).await);
    assert_eq!(c5, tonic::Code::FailedPrecondition);
    // Unknown stage.
    let (c6, _) = code(
        c.report_usage(report(
            &CheckRequestRequest {
                stage: "nope".into(),
                ..metered(KEY, "t-1", 300)
            },
            1,
        ))
        .await,
    );
    assert_eq!(c6, tonic::Code::NotFound);
    // The counter saw it all.
    let (_, metrics) =
        tollgate_tests::tollgate::http_get(a.metrics_addr(), "/metrics").expect("metrics");
    assert!(
        metrics.contains(r#"tollgate_usage_reports_total{result="settled"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"tollgate_usage_reports_total{result="no_reservation"} 2"#),
        "{metrics}"
    );
}

/// The attack: a caller reserves 1 unit with a raw `CheckRequest` and has the upstream do far
/// more, then reports it (post-paid). Each check is admitted while 1 unit is left, so without
/// a floor the key is served far past its quota. The plan's `min_reservation` raises every
/// reservation to 5,000: the second request finds 1 unit left and is denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plans_minimum_reservation_cannot_be_talked_down() {
    let redis = RedisServer::start();
    let a = TollgateProcess::start(&redis_config(&redis));
    let mut c = a.client().await;

    let first = metered(KEY5, "m-1", 1);
    assert_eq!(
        decision(&check(&mut c, first.clone()).await),
        Decision::Allow
    );
    let r = c
        .report_usage(report(&first, LIMIT - 1))
        .await
        .expect("report with the check's own cost finds its reservation")
        .into_inner();
    let mut served = LIMIT - 1;
    // 1 unit left: a reservation of 1 would be admitted, then post-paid 100,000.
    let second = metered(KEY5, "m-2", 1);
    let answer = check(&mut c, second.clone()).await;
    if decision(&answer) == Decision::Allow {
        c.report_usage(report(&second, 100_000))
            .await
            .expect("report");
        served += 100_000;
    }
    assert!(
        served <= LIMIT,
        "the key was served {served} units on a quota of {LIMIT}"
    );
    assert_eq!(
        (r.reserved, r.actual),
        (MIN, LIMIT - 1),
        "raised to the plan's min"
    );
    assert_eq!(decision(&answer), Decision::QuotaExceeded);
    assert_eq!(
        quota_left(&mut c, KEY5).await,
        1,
        "the denial charged nothing"
    );

    // Over the plan's max: refused, naming the bound; at the max: evaluated.
    let over = c.check_request(metered(KEY5, "m-3", MAX + 1)).await;
    let status = over.expect_err("a reservation over max_reservation");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("max_reservation"), "{status:?}");
    assert_eq!(
        decision(&check(&mut c, metered(KEY5, "m-4", MAX)).await),
        Decision::QuotaExceeded
    );
    // Not a reservation (no request id): the cost stands as sent.
    let plain = check(
        &mut c,
        CheckRequestRequest {
            cost: 1,
            ..get_pets(KEY5)
        },
    )
    .await;
    assert_eq!(decision(&plain), Decision::Allow);
    assert_eq!(plain.quota.expect("quota").remaining, 0);
}

/// The client's tower layer: each request reserves 10 (or its `x-usage-reserve`), and the
/// upstream's `x-usage-cost` is reported once it answered; an upstream error or a 5xx without
/// the header refunds, an answer without it keeps the reservation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_layer_reports_the_upstreams_cost() {
    use http::header::HeaderName;
    use tollgate_client::{BoxError, TollgateLayer};
    use tower::{Layer, ServiceExt};

    let tg = TollgateProcess::start(&config(Config::memory()));
    let client = tollgate_client::Client::builder([tg.grpc_url()])
        .deadline(Duration::from_secs(2))
        .build()
        .expect("client");
    let upstream = tower::service_fn(|req: http::Request<String>| async move {
        let query = req.uri().query().unwrap_or_default().to_string();
        let mut response = http::Response::new(String::from("ok"));
        match query.split_once('=') {
            Some(("cost", n)) => {
                response
                    .headers_mut()
                    .insert("x-usage-cost", n.parse().expect("a header value"));
            }
            _ if query == "fail" => *response.status_mut() = http::StatusCode::BAD_GATEWAY,
            _ if query == "error" => return Err::<_, BoxError>("upstream unreachable".into()),
            _ => {}
        }
        Ok(response)
    });
    let gateway = TollgateLayer::new(client, "petstore", "prod")
        .metered(
            10,
            Some(HeaderName::from_static("x-usage-reserve")),
            HeaderName::from_static("x-usage-cost"),
        )
        .layer(upstream);
    let mut c = tg.client().await;
    let before = quota_left(&mut c, KEY3).await;
    // (query, x-usage-reserve, what the request finally costs)
    let cases = [
        ("cost=7", None, 7),
        ("fail", None, 0),
        ("cost=15", None, 15),
        ("none", None, 10),
        ("cost=4", Some("4"), 4),
        ("error", Some("30"), 0),
    ];
    for (query, reserve, _) in cases {
        let mut req = http::Request::builder()
            .uri(format!("http://gateway/pets?{query}"))
            .header("x-api-key", KEY3);
        if let Some(r) = reserve {
            req = req.header("x-usage-reserve", r);
        }
        let res = gateway
            .clone()
            .oneshot(req.body(String::new()).expect("request"))
            .await;
        assert_eq!(
            res.is_err(),
            query == "error",
            "{query}: {:?}",
            res.map(|r| r.status())
        );
    }
    let spent: u64 = cases.iter().map(|c| c.2).sum();
    let mut settled = 0;
    for _ in 0..200 {
        settled = before - quota_left(&mut c, KEY3).await;
        if settled == spent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(settled, spent, "the quota moved by the upstream's costs");
}

const KEY4: &str = "meter-key-ddddddddddddddddddddddddddd";
/// The quota of [`short_ttl_config`]'s plan (reservations released 2 s after their check).
const SHORT: u64 = 1_000;

/// Two instances' config: one key on a plan whose unreported reservations are released 2 s
/// after their check.
fn short_ttl_config(redis: &RedisServer) -> String {
    short_ttl_config_with(redis, STORE_TIMEOUT)
}

/// [`short_ttl_config`] with another `store.timeout`.
fn short_ttl_config_with(redis: &RedisServer, store_timeout: Duration) -> String {
    let plan = Plan::new("metered")
        .quota(SHORT, Period::Day)
        .metering(MeteringConfig {
            reservation_ttl: Duration::from_secs(2),
            ..MeteringConfig::default()
        });
    Config::redis(redis.url())
        .store_timeout(store_timeout)
        .closed()
        .petstore_with(plan, KEY4)
        .to_yaml()
}

/// `tollgate_usage_reports_total{result="<result>"}` on `tg`'s `/metrics` (0 when absent).
fn reports_total(tg: &TollgateProcess, result: &str) -> u64 {
    tg.metric(&format!(
        r#"tollgate_usage_reports_total{{result="{result}"}}"#
    )) as u64
}

/// Reservation tickets in the store (every shard's `due` set).
fn tickets_in_store(redis: &RedisServer) -> u64 {
    let mut conn = redis
        .client()
        .get_connection_with_timeout(Duration::from_secs(1))
        .expect("redis");
    (0..tollgate_server::store::ticket::SHARDS)
        .map(|s| {
            redis::cmd("ZCARD")
                .arg(format!("tg:{{t:{s}}}:due"))
                .query::<u64>(&mut conn)
                .expect("zcard")
        })
        .sum()
}

/// A reservation whose instance dies (SIGKILL) before anyone reports it is released by the
/// other instance at its `reservation_ttl`: its ticket is in the store, not in the dead
/// process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_releases_a_dead_instances_reservation() {
    let redis = RedisServer::start();
    let cfg = short_ttl_config(&redis);
    let mut a = TollgateProcess::start(&cfg);
    let b = TollgateProcess::start(&cfg);
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let before = quota_left(&mut cb, KEY4).await;
    assert_eq!(before, SHORT);
    let req = metered(KEY4, "dies-with-a", 50);
    assert_eq!(
        decision(&check(&mut ca, req.clone()).await),
        Decision::Allow
    );
    assert_eq!(quota_left(&mut cb, KEY4).await, before - 50, "reserved");
    assert_eq!(tickets_in_store(&redis), 1, "its ticket is in the store");
    a.kill();
    tollgate_tests::tollgate::eventually(
        &[&b],
        "b released a's reservation",
        Duration::from_secs(15),
        || {
            let mut cb = cb.clone();
            async move { quota_left(&mut cb, KEY4).await == before }
        },
    )
    .await;
    // The sweeper counts a release after the store applied it: the quota can be seen back
    // before the counter moves.
    tollgate_tests::tollgate::eventually(
        &[&b],
        "b counted the release",
        Duration::from_secs(5),
        || std::future::ready(reports_total(&b, "released") >= 1),
    )
    .await;
    assert_eq!(
        tickets_in_store(&redis),
        0,
        "the ticket went with its release"
    );
    // Released: the record is gone, a late report finds nothing.
    let late = cb
        .report_usage(report(&req, 7))
        .await
        .expect_err("released");
    assert_eq!(late.code(), tonic::Code::FailedPrecondition, "{late:?}");
    assert_eq!(
        quota_left(&mut cb, KEY4).await,
        before,
        "the late report changed nothing"
    );
}

/// A reported reservation is not released at its TTL (the quota keeps exactly the reported
/// cost), while an unreported one checked alongside it is; a report after that release answers
/// FAILED_PRECONDITION.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_reservation_is_not_released_at_its_ttl() {
    let redis = RedisServer::start();
    let cfg = short_ttl_config(&redis);
    let a = TollgateProcess::start(&cfg);
    let b = TollgateProcess::start(&cfg);
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let before = quota_left(&mut ca, KEY4).await;
    let reported = metered(KEY4, "reported", 50);
    let unreported = metered(KEY4, "unreported", 50);
    assert_eq!(
        decision(&check(&mut ca, reported.clone()).await),
        Decision::Allow
    );
    assert_eq!(
        decision(&check(&mut ca, unreported.clone()).await),
        Decision::Allow
    );
    let r = cb
        .report_usage(report(&reported, 7))
        .await
        .expect("report")
        .into_inner();
    assert_eq!((r.reserved, r.actual, r.already_reported), (50, 7, false));
    assert_eq!(quota_left(&mut ca, KEY4).await, before - 57);
    tollgate_tests::tollgate::eventually(
        &[&a, &b],
        "the unreported reservation is released",
        Duration::from_secs(15),
        || {
            let mut ca = ca.clone();
            async move { quota_left(&mut ca, KEY4).await == before - 7 }
        },
    )
    .await;
    // Both tickets are due by now; give the sweepers (every second) time to act on them.
    tollgate_tests::tollgate::eventually(
        &[&a, &b],
        "no ticket left in the store",
        Duration::from_secs(15),
        || async { tickets_in_store(&redis) == 0 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        quota_left(&mut ca, KEY4).await,
        before - 7,
        "exactly the reported 7 stays charged"
    );
    let released = reports_total(&a, "released") + reports_total(&b, "released");
    assert_eq!(released, 1, "only the unreported reservation was released");
    let late = ca
        .report_usage(report(&unreported, 7))
        .await
        .expect_err("released");
    assert_eq!(late.code(), tonic::Code::FailedPrecondition, "{late:?}");
    let again = cb
        .report_usage(report(&reported, 9))
        .await
        .expect("the settled one still answers")
        .into_inner();
    assert_eq!((again.actual, again.already_reported), (7, true));
    assert_eq!(quota_left(&mut ca, KEY4).await, before - 7);
}

/// A sweep that Redis holds up for longer than `store.timeout` (a busy or paused server) still
/// releases what it took: the sweeper's calls are not cut off at the checks' deadline, since a
/// cut-off call whose script runs later has taken its tickets off the store for nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_held_up_by_redis_loses_no_reservation() {
    let redis = RedisServer::start();
    let tg = TollgateProcess::start(&short_ttl_config_with(&redis, Duration::from_millis(200)));
    let mut c = tg.client().await;
    let before = quota_left(&mut c, KEY4).await;
    let mut conn = redis
        .client()
        .get_connection_with_timeout(Duration::from_secs(1))
        .expect("redis");
    // Reservations until two tickets are in shard 0, the first script a sweep runs (a ticket's
    // shard follows a digest of the request: which one is not up to the test).
    let mut n = 0;
    while redis::cmd("ZCARD")
        .arg("tg:{t:0}:due")
        .query::<u64>(&mut conn)
        .expect("zcard")
        < 2
    {
        assert!(n < 200, "200 reservations and not two in shard 0");
        let req = metered(KEY4, &format!("held-{n}"), 1);
        assert_eq!(decision(&check(&mut c, req).await), Decision::Allow);
        n += 1;
    }
    assert_eq!(tickets_in_store(&redis), n);
    // Hold every script (they may write) for 1.5 s, from before the tickets are due (2 s after
    // their checks) to after: a sweep in that window waits on shard 0's script, which then
    // runs with them due.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1_500)
        .arg("WRITE")
        .query(&mut conn)
        .expect("client pause");
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    tollgate_tests::tollgate::eventually(
        &[&tg],
        "the held-up sweep released every reservation",
        Duration::from_secs(10),
        || {
            let mut c = c.clone();
            async move { quota_left(&mut c, KEY4).await == before }
        },
    )
    .await;
    assert_eq!(reports_total(&tg, "released"), n);
    assert_eq!(tickets_in_store(&redis), 0);
}
