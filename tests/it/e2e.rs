//! End-to-end: the real `tollgate` binary against a real `redis-server`, over gRPC and HTTP.
//!
//! Every test starts its own `redis-server` on a free port (and uses its own key prefix), so
//! the tests run in parallel. Nothing sleeps for correctness: waits for asynchronous effects
//! (a config reload, Redis coming back) poll with a deadline.
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tollgate_proto::v1::check_service_client::CheckServiceClient;
use tollgate_proto::v1::{CheckRequestRequest, CheckRequestResponse, Decision};
use tollgate_tests::checks::{allowed_not_degraded, check, decision, fire, get_pets, tally};
use tollgate_tests::config::{Config, FailureMode, Key, Period, Plan, Route, STORE_TIMEOUT, Stage};
use tollgate_tests::redis::RedisServer;
use tollgate_tests::tollgate::{
    TollgateProcess, eventually, http_get, run_tollgate, workspace_root,
};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

type Client = CheckServiceClient<Channel>;

const KEY_A: &str = "e2e-key-aaaaaaaaaaaaaaaaaaaaaaaa";
const KEY_B: &str = "e2e-key-bbbbbbbbbbbbbbbbbbbbbbbb";
const KEY_C: &str = "e2e-key-cccccccccccccccccccccccc";

/// The store timeout for tests that are not about store failures. The machine running the
/// suite may have 2 cores shared by a dozen processes (and a compiler): a 50 ms deadline then
/// fires on a healthy Redis, and a test about quotas would see UNAVAILABLE or degraded answers.
const RELAXED_TIMEOUT: Duration = STORE_TIMEOUT;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Port 0 listeners, a Redis store with `prefix` and `timeout`, `failure_mode`, and API
/// `petstore`, stage `prod` with `GET /pets` (API key required).
fn base(redis: &RedisServer, prefix: &str, failure_mode: FailureMode, timeout: Duration) -> Config {
    Config::redis(redis.url())
        .key_prefix(prefix)
        .store_timeout(timeout)
        .failure_mode(failure_mode)
        .petstore(Stage::prod().route(Route::get_pets()))
}

/// [`base`] with [`RELAXED_TIMEOUT`], `plan` and key `k1` = [`KEY_A`] in it.
fn one_key(redis: &RedisServer, prefix: &str, failure_mode: FailureMode, plan: Plan) -> String {
    let id = plan.id.clone();
    base(redis, prefix, failure_mode, RELAXED_TIMEOUT)
        .plan(plan)
        .key(Key::new("k1", KEY_A, &id))
        .to_yaml()
}

async fn check_err(client: &mut Client, req: CheckRequestRequest) -> tonic::Status {
    match client.check_request(req).await {
        Ok(r) => panic!("expected an error status, got {:?}", r.into_inner()),
        Err(s) => s,
    }
}

/// (a) The quota is exact across instances sharing one Redis: 2,000 concurrent requests through
/// two processes, a quota of 500 → exactly 500 allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_is_exact_across_two_instances() {
    let redis = RedisServer::start();
    let cfg = one_key(
        &redis,
        "quota2",
        FailureMode::Closed,
        Plan::new("metered")
            .throttle(100_000.0, 100_000)
            .quota(500, Period::Month),
    );
    let a = TollgateProcess::start(&cfg);
    let b = TollgateProcess::start(&cfg);
    let clients = [a.client().await, b.client().await];

    let all = fire(&clients, 32, 2_000, get_pets(KEY_A)).await;
    let counts = tally(&all);
    let allowed = all
        .iter()
        .filter(|r| decision(r) == Decision::Allow)
        .count();
    let exceeded: Vec<_> = all
        .iter()
        .filter(|r| decision(r) == Decision::QuotaExceeded)
        .collect();
    // (A UTC day boundary during the run would legitimately reset the quota.)
    assert_eq!(allowed, 500, "decisions: {counts:?}");
    assert_eq!(exceeded.len(), 1_500, "decisions: {counts:?}");
    for r in exceeded {
        assert_eq!(r.http_status, 429);
        assert_eq!(r.message, "Limit Exceeded");
        assert_eq!(r.error_type, "LimitExceededException");
        assert!(r.retry_after.is_some(), "no retry_after: {r:?}");
        assert!(
            r.response_headers.contains_key("retry-after"),
            "no retry-after header: {:?}",
            r.response_headers
        );
        let q = r.quota.as_ref().expect("quota status on QUOTA_EXCEEDED");
        assert_eq!((q.limit, q.remaining), (500, 0));
    }
    // Every allowed answer reports a distinct remaining count: 499 down to 0.
    let mut remaining: Vec<u64> = all
        .iter()
        .filter(|r| decision(r) == Decision::Allow)
        .map(|r| r.quota.as_ref().expect("quota status on ALLOW").remaining)
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..500).collect::<Vec<u64>>());
}

/// (b) One token bucket across instances: burst 20, 1 request/s. However the requests are
/// spread over two processes, no more than burst + rate × elapsed (+1 for the boundary) pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_bound_holds_across_two_instances() {
    let redis = RedisServer::start();
    let cfg = one_key(
        &redis,
        "bucket2",
        FailureMode::Closed,
        Plan::new("slow").throttle(1.0, 20),
    );
    let a = TollgateProcess::start(&cfg);
    let b = TollgateProcess::start(&cfg);
    let clients = [a.client().await, b.client().await];

    let started = Instant::now();
    let all = fire(&clients, 32, 400, get_pets(KEY_A)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let counts = tally(&all);
    let allowed = all
        .iter()
        .filter(|r| decision(r) == Decision::Allow)
        .count();
    let throttled: Vec<_> = all
        .iter()
        .filter(|r| decision(r) == Decision::Throttled)
        .collect();
    assert_eq!(
        allowed + throttled.len(),
        400,
        "only ALLOW and THROTTLED expected: {counts:?}"
    );
    assert!(allowed >= 20, "the full burst must pass: {counts:?}");
    let bound = 20.0 + elapsed * 1.0 + 1.0;
    assert!(
        allowed as f64 <= bound,
        "{allowed} allowed in {elapsed:.3}s exceeds burst 20 + 1/s ({bound:.1}): {counts:?}"
    );
    for r in throttled {
        assert_eq!(r.http_status, 429);
        assert_eq!(r.message, "Too Many Requests");
        let retry = r.retry_after.as_ref().expect("retry_after on THROTTLED");
        let retry = Duration::new(retry.seconds as u64, retry.nanos as u32);
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_secs(1),
            "retry_after {retry:?} must be within one token interval"
        );
        assert!(r.response_headers.contains_key("retry-after"));
    }
}

async fn health(channel: Channel, service: &str) -> ServingStatus {
    let r = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("health check failed: {s:?}"))
        .into_inner();
    ServingStatus::try_from(r.status).unwrap_or(ServingStatus::Unknown)
}

/// (c) Redis dies: `open` allows (degraded), `closed` — globally or per plan — answers
/// UNAVAILABLE, promptly. Redis comes back on the same port: the service recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failure_modes_and_recovery() {
    let mut redis = RedisServer::start();
    let cfg = |failure_mode| {
        base(&redis, "fm", failure_mode, ms(50))
            .plan(Plan::new("inherit").throttle(1000.0, 1000))
            .plan(
                Plan::new("strict")
                    .throttle(1000.0, 1000)
                    .failure_mode(FailureMode::Closed),
            )
            .key(Key::new("k-inherit", KEY_A, "inherit"))
            .key(Key::new("k-strict", KEY_B, "strict"))
            .to_yaml()
    };
    let open = TollgateProcess::start(&cfg(FailureMode::Open));
    let closed = TollgateProcess::start(&cfg(FailureMode::Closed));
    let mut open_c = open.client().await;
    let mut closed_c = closed.client().await;

    // Healthy: everything allowed, nothing degraded. (Polled: on a loaded machine a 50 ms
    // deadline can fire even with Redis up.)
    for (c, k) in [(&open_c, KEY_A), (&open_c, KEY_B), (&closed_c, KEY_A)] {
        eventually(
            &[&open, &closed],
            "a non-degraded ALLOW while Redis is up",
            Duration::from_secs(10),
            || allowed_not_degraded(c.clone(), k),
        )
        .await;
    }
    assert_eq!(
        health(closed.channel().await, "").await,
        ServingStatus::Serving
    );

    redis.kill();
    let deadline = Duration::from_secs(2);
    for _ in 0..5 {
        // Global open, plan inherits: allowed, marked degraded.
        let t = Instant::now();
        let r = check(&mut open_c, get_pets(KEY_A)).await;
        assert!(t.elapsed() < deadline, "open answer took {:?}", t.elapsed());
        assert_eq!(decision(&r), Decision::Allow, "{r:?}");
        assert!(r.degraded, "store down but not marked degraded: {r:?}");

        // Global open, plan overrides with closed: UNAVAILABLE.
        let t = Instant::now();
        let s = check_err(&mut open_c, get_pets(KEY_B)).await;
        assert!(
            t.elapsed() < deadline,
            "override answer took {:?}",
            t.elapsed()
        );
        assert_eq!(s.code(), Code::Unavailable, "{s:?}");

        // Global closed: UNAVAILABLE.
        let t = Instant::now();
        let s = check_err(&mut closed_c, get_pets(KEY_A)).await;
        assert!(
            t.elapsed() < deadline,
            "closed answer took {:?}",
            t.elapsed()
        );
        assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    }
    // Health follows the failure mode: NOT_SERVING when closed, SERVING when open.
    let ch = closed.channel().await;
    eventually(
        &[&open, &closed],
        "closed-mode health turns NOT_SERVING",
        Duration::from_secs(10),
        || {
            let ch = ch.clone();
            async move { health(ch, "").await == ServingStatus::NotServing }
        },
    )
    .await;
    assert_eq!(
        health(open.channel().await, "").await,
        ServingStatus::Serving
    );

    redis.restart();
    eventually(
        &[&open, &closed],
        "open-mode instance answers a non-degraded ALLOW after Redis restarts",
        Duration::from_secs(10),
        || allowed_not_degraded(open_c.clone(), KEY_A),
    )
    .await;
    eventually(
        &[&open, &closed],
        "plan-closed key recovers after Redis restarts",
        Duration::from_secs(10),
        || allowed_not_degraded(open_c.clone(), KEY_B),
    )
    .await;
    eventually(
        &[&open, &closed],
        "closed-mode instance recovers after Redis restarts",
        Duration::from_secs(10),
        || allowed_not_degraded(closed_c.clone(), KEY_A),
    )
    .await;
    eventually(
        &[&open, &closed],
        "closed-mode health returns to SERVING",
        Duration::from_secs(10),
        || {
            let ch = ch.clone();
            async move { health(ch, "").await == ServingStatus::Serving }
        },
    )
    .await;
}

/// (d) Hot reload: a renamed-over file adds a key and a route; an invalid file (plus SIGHUP) is
/// rejected, logged, and the previous config keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_applies_valid_and_rejects_invalid_config() {
    let redis = RedisServer::start();
    let plan = || Plan::new("basic").throttle(1000.0, 1000);
    let v1 = base(&redis, "reload", FailureMode::Closed, RELAXED_TIMEOUT)
        .plan(plan())
        .key(Key::new("k1", KEY_A, "basic"));
    let mut v2 = v1.clone().key(Key::new("k2", KEY_B, "basic"));
    v2.apis[0].stages[0]
        .routes
        .push(Route::keyed("GET", "/toys"));
    let (v1, v2) = (v1.to_yaml(), v2.to_yaml());
    let tg = TollgateProcess::start(&v1);
    let mut c = tg.client().await;
    let toys = |k: &str| CheckRequestRequest {
        path: "/toys".into(),
        ..get_pets(k)
    };

    assert_eq!(
        decision(&check(&mut c, get_pets(KEY_A)).await),
        Decision::Allow
    );
    let r = check(&mut c, get_pets(KEY_B)).await;
    assert_eq!(decision(&r), Decision::Forbidden, "unknown key: {r:?}");
    let r = check(&mut c, toys(KEY_A)).await;
    assert_eq!(decision(&r), Decision::Forbidden, "unknown route: {r:?}");
    assert_eq!(r.message, "Missing Authentication Token");

    tg.replace_config(&v2);
    let mut polls = 0;
    eventually(
        &[&tg],
        "the new key and route are accepted after the file changes",
        Duration::from_secs(10),
        || {
            rewrite_now_and_then(&tg, &v2, &mut polls);
            let mut c = c.clone();
            async move {
                decision(&check(&mut c, get_pets(KEY_B)).await) == Decision::Allow
                    && decision(&check(&mut c, toys(KEY_A)).await) == Decision::Allow
            }
        },
    )
    .await;
    assert!(tg.wait_for_stderr("config reloaded", Duration::from_secs(5)));

    const REJECTED: &str = "config reload rejected";
    let rejections = |tg: &TollgateProcess| tg.stderr_text().matches(REJECTED).count();
    assert_eq!(rejections(&tg), 0);
    tg.replace_config("usage_plans: [{id: \"bad id!\"}]\n");
    eventually(
        &[&tg],
        "the invalid file is rejected",
        Duration::from_secs(10),
        || std::future::ready(rejections(&tg) >= 1),
    )
    .await;
    let before = rejections(&tg);
    tg.sighup();
    eventually(
        &[&tg],
        "SIGHUP re-reads (and again rejects) the invalid file",
        Duration::from_secs(10),
        || std::future::ready(rejections(&tg) > before),
    )
    .await;
    let logs = tg.stderr_text();
    assert!(
        logs.contains("bad id!"),
        "the rejection should name the problem:\n{logs}"
    );

    // Still serving v2: both keys, both routes.
    for req in [get_pets(KEY_A), get_pets(KEY_B), toys(KEY_A), toys(KEY_B)] {
        let r = check(&mut c, req).await;
        assert_eq!(
            decision(&r),
            Decision::Allow,
            "after a rejected reload: {r:?}"
        );
    }
    // A key that was never configured is still refused.
    assert_eq!(
        decision(&check(&mut c, get_pets(KEY_C)).await),
        Decision::Forbidden
    );
}

/// Rewrites the config (same content) every 20th poll (~1 s). The server prints its ready line
/// and answers checks before its file watcher is armed (see
/// `sighup_right_after_ready_does_not_kill`), so the first file event can be missed; a later
/// identical rewrite is picked up once the watcher runs, and is a no-op after the reload.
fn rewrite_now_and_then(tg: &TollgateProcess, yaml: &str, polls: &mut u32) {
    *polls += 1;
    if polls.is_multiple_of(20) {
        tg.replace_config(yaml);
    }
}

/// (e) `check-config` reports every error and exits 64; the shipped example is valid;
/// `serve` with an invalid config exits 64 before binding anything.
#[test]
fn check_config_reports_every_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        r#"bogus_top_level: 1
store: {kind: redis, pool_size: 0}
apis:
  - id: petstore
    stages:
      - name: prod
        routes:
          - {method: FETCH, path: "/pets"}
usage_plans:
  - id: "bad id!"
api_keys:
  - {id: k1, value: "short", enabled: true, usage_plans: [nope]}
"#,
    )
    .expect("write bad config");
    let out = run_tollgate(
        [std::ffi::OsStr::new("check-config"), bad.as_os_str()],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr:\n{stderr}");
    let expected = [
        "unknown top-level key \"bogus_top_level\"",
        "store.url: required",
        "store.pool_size",
        "method must be one of",
        "\"bad id!\"",
        "at least 20 characters",
        "unknown usage plan \"nope\"",
    ];
    let missing: Vec<_> = expected.iter().filter(|e| !stderr.contains(*e)).collect();
    assert!(
        missing.is_empty(),
        "missing errors {missing:?} in:\n{stderr}"
    );
    // One report listing them all (not one error per run), each on its own line.
    assert!(
        stderr.contains("configuration error(s)"),
        "expected a single report:\n{stderr}"
    );
    let listed = stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("- "))
        .count();
    assert!(
        listed >= expected.len(),
        "expected at least {} listed errors:\n{stderr}",
        expected.len()
    );

    let example = workspace_root().join("examples/tollgate.yaml");
    let out = run_tollgate(
        [std::ffi::OsStr::new("check-config"), example.as_os_str()],
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "examples/tollgate.yaml must be valid: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
}

#[test]
fn serve_with_invalid_config_exits_64_without_binding() {
    // Hold the port the config names: if serve tried to bind before validating, it would fail
    // with a bind error (exit 1), not the config error (64).
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        format!(
            "server: {{grpc_addr: \"127.0.0.1:{port}\", metrics_addr: \"127.0.0.1:{port}\"}}\n\
             usage_plans: [{{id: \"bad id!\"}}]\n"
        ),
    )
    .expect("write bad config");
    let out = run_tollgate(
        [
            std::ffi::OsStr::new("serve"),
            std::ffi::OsStr::new("--config"),
            bad.as_os_str(),
        ],
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(64),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(!stdout.contains("tollgate ready"), "{stdout}");
    assert!(!stderr.contains("cannot bind"), "{stderr}");
    assert!(stderr.contains("bad id!"), "{stderr}");
    drop(held);
}

/// (f) grpc.health.v1 and `GET /metrics`.
#[tokio::test]
async fn health_and_metrics() {
    let redis = RedisServer::start();
    let tg = TollgateProcess::start(&one_key(
        &redis,
        "health",
        FailureMode::Closed,
        Plan::new("basic").throttle(1_000.0, 1_000),
    ));
    let ch = tg.channel().await;
    assert_eq!(health(ch.clone(), "").await, ServingStatus::Serving);
    assert_eq!(
        health(ch, "tollgate.v1.CheckService").await,
        ServingStatus::Serving
    );

    let r = check(&mut tg.client().await, get_pets(KEY_A)).await;
    assert_eq!(decision(&r), Decision::Allow);
    let addr = tg.metrics_addr();
    let (status, body) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .expect("join")
        .expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    let line = body
        .lines()
        .find(|l| l.starts_with("tollgate_checks_total{") && l.contains("decision=\"allow\""))
        .unwrap_or_else(|| panic!("no tollgate_checks_total allow sample in:\n{body}"));
    assert!(line.contains("plan=\"basic\""), "{line}");
    // The first load of plans and keys (during start-up) is counted too.
    assert!(
        body.lines()
            .any(|l| l.starts_with("tollgate_definitions_version ") && !l.ends_with(" 0")),
        "no tollgate_definitions_version in:\n{body}"
    );
    // The API key's value never reaches the metrics.
    assert!(!body.contains(KEY_A));
}

/// (g) Bad input over the wire is refused with the right status and consumes nothing.
#[tokio::test]
async fn bad_input_is_rejected_and_consumes_nothing() {
    let redis = RedisServer::start();
    let tg = TollgateProcess::start(&one_key(
        &redis,
        "badinput",
        FailureMode::Closed,
        Plan::new("metered")
            .throttle(1_000.0, 1_000)
            .quota(100, Period::Month),
    ));
    let mut c = tg.client().await;
    let dry = || CheckRequestRequest {
        dry_run: true,
        ..get_pets(KEY_A)
    };
    let remaining = |r: &CheckRequestResponse| r.quota.as_ref().map(|q| q.remaining);

    let r = check(&mut c, get_pets(KEY_A)).await;
    assert_eq!(decision(&r), Decision::Allow);
    assert_eq!(remaining(&r), Some(99));
    // A dry run reports what a real check would leave (98) and commits nothing.
    let before = check(&mut c, dry()).await;
    assert_eq!(decision(&before), Decision::Allow);
    assert_eq!(remaining(&before), Some(98));
    assert_eq!(remaining(&check(&mut c, dry()).await), Some(98));

    let s = check_err(
        &mut c,
        CheckRequestRequest {
            api_id: String::new(),
            ..get_pets(KEY_A)
        },
    )
    .await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("api_id"), "{s:?}");

    let s = check_err(
        &mut c,
        CheckRequestRequest {
            cost: 2_000_000,
            ..get_pets(KEY_A)
        },
    )
    .await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("cost"), "{s:?}");

    let s = check_err(
        &mut c,
        CheckRequestRequest {
            path: format!("/{}", "p".repeat(8_999)),
            ..get_pets(KEY_A)
        },
    )
    .await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("path"), "{s:?}");

    let s = check_err(
        &mut c,
        CheckRequestRequest {
            api_id: "no-such-api".into(),
            ..get_pets(KEY_A)
        },
    )
    .await;
    assert_eq!(s.code(), Code::NotFound, "{s:?}");

    let s = check_err(
        &mut c,
        CheckRequestRequest {
            stage: "no-such-stage".into(),
            ..get_pets(KEY_A)
        },
    )
    .await;
    assert_eq!(s.code(), Code::NotFound, "{s:?}");

    let r = check(
        &mut c,
        CheckRequestRequest {
            path: "/no/such/route".into(),
            ..get_pets(KEY_A)
        },
    )
    .await;
    assert_eq!(decision(&r), Decision::Forbidden, "{r:?}");
    assert_eq!(r.http_status, 403);
    assert_eq!(r.message, "Missing Authentication Token");

    let after = check(&mut c, dry()).await;
    assert_eq!(
        remaining(&after),
        remaining(&before),
        "rejected requests must not consume quota: {after:?}"
    );
    // And the next real check is the second unit charged.
    assert_eq!(remaining(&check(&mut c, get_pets(KEY_A)).await), Some(98));
}

/// (h) SIGTERM: the process drains and exits 0 promptly, even with a client still connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero() {
    let redis = RedisServer::start();
    let mut tg = TollgateProcess::start(&one_key(
        &redis,
        "term",
        FailureMode::Closed,
        Plan::new("basic").throttle(1_000.0, 1_000),
    ));
    let mut c = tg.client().await;
    assert_eq!(
        decision(&check(&mut c, get_pets(KEY_A)).await),
        Decision::Allow
    );

    tg.terminate();
    let status = tokio::task::block_in_place(|| tg.wait_exit(Duration::from_secs(5)));
    let status = status.unwrap_or_else(|| {
        panic!(
            "tollgate did not exit within 5 s of SIGTERM\nstderr:\n{}",
            tg.stderr_text()
        )
    });
    assert!(
        status.success(),
        "exit status {status:?}\nstderr:\n{}",
        tg.stderr_text()
    );
    drop(c);
}

/// (d, quota) Raising a plan's quota by reload keeps the usage of the current period: with 3 of
/// 3 used, a new limit of 5 allows exactly 2 more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloaded_quota_limit_applies_to_current_period() {
    let redis = RedisServer::start();
    let cfg = |limit: u64| {
        one_key(
            &redis,
            "requota",
            FailureMode::Closed,
            Plan::new("metered").quota(limit, Period::Month),
        )
    };
    let tg = TollgateProcess::start(&cfg(3));
    let mut c = tg.client().await;
    let ds: Vec<_> = sequential_decisions(&mut c, 4).await;
    assert_eq!(
        ds,
        [
            Decision::Allow,
            Decision::Allow,
            Decision::Allow,
            Decision::QuotaExceeded
        ]
    );

    let v2 = cfg(5);
    tg.replace_config(&v2);
    let mut polls = 0;
    eventually(
        &[&tg],
        "the new quota limit is in force",
        Duration::from_secs(10),
        || {
            rewrite_now_and_then(&tg, &v2, &mut polls);
            let mut c = c.clone();
            async move {
                let r = check(
                    &mut c,
                    CheckRequestRequest {
                        dry_run: true,
                        ..get_pets(KEY_A)
                    },
                )
                .await;
                r.quota.as_ref().is_some_and(|q| q.limit == 5)
            }
        },
    )
    .await;
    let ds: Vec<_> = sequential_decisions(&mut c, 3).await;
    assert_eq!(
        ds,
        [Decision::Allow, Decision::Allow, Decision::QuotaExceeded],
        "3 used of a new limit of 5"
    );
}

/// `n` sequential `GET /pets` checks with [`KEY_A`].
async fn sequential_decisions(c: &mut Client, n: usize) -> Vec<Decision> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(decision(&check(c, get_pets(KEY_A)).await));
    }
    out
}

/// (c, hang) A Redis that stops answering (SIGSTOP) rather than refusing connections: every
/// check still answers within a bound, via the store timeout; then SIGCONT → recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_store_hits_the_timeout_then_recovers() {
    let redis = RedisServer::start();
    let cfg = base(&redis, "hang", FailureMode::Open, ms(50))
        .plan(Plan::new("basic").throttle(1_000.0, 1_000))
        .key(Key::new("k1", KEY_A, "basic"))
        .to_yaml();
    let tg = TollgateProcess::start(&cfg);
    let c = tg.client().await;
    eventually(
        &[&tg],
        "a non-degraded ALLOW while Redis is up",
        Duration::from_secs(10),
        || allowed_not_degraded(c.clone(), KEY_A),
    )
    .await;

    let pid = redis.pid().expect("redis is running").to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args(["-s", sig, &pid])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -s {sig} {pid}");
    };
    signal("STOP");
    // Resume Redis even if an assertion below fails, so its Drop can kill it.
    struct Cont<F: Fn()>(F);
    impl<F: Fn()> Drop for Cont<F> {
        fn drop(&mut self) {
            (self.0)();
        }
    }
    let cont = Cont(|| signal("CONT"));

    // Concurrent callers, so pooled connections are all stuck at once.
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..16 {
        let mut c = c.clone();
        tasks.spawn(async move {
            let mut worst = Duration::ZERO;
            for _ in 0..5 {
                let t = Instant::now();
                let r = check(&mut c, get_pets(KEY_A)).await;
                worst = worst.max(t.elapsed());
                assert_eq!(decision(&r), Decision::Allow, "{r:?}");
                assert!(r.degraded, "store hung but not degraded: {r:?}");
            }
            worst
        });
    }
    while let Some(worst) = tasks.join_next().await {
        let worst = worst.expect("caller panicked");
        assert!(
            worst < Duration::from_secs(2),
            "a check took {worst:?} with a 50ms store timeout"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(10));

    drop(cont);
    eventually(
        &[&tg],
        "a non-degraded ALLOW after SIGCONT",
        Duration::from_secs(10),
        || allowed_not_degraded(c.clone(), KEY_A),
    )
    .await;
}

/// A config whose startup blocks for ~4 s after the ready line: the store is a TCP listener that
/// never answers (a hung Redis), the timeout is 1 s, and a quota plan makes `build_catalog` ask
/// the store for the plan's creation time (bounded by 4 × the timeout).
fn slow_startup_config(silent: &std::net::TcpListener) -> String {
    let port = silent.local_addr().expect("addr").port();
    Config::redis(format!("redis://127.0.0.1:{port}/"))
        .key_prefix("early")
        .store_timeout(Duration::from_secs(1))
        .petstore(Stage::prod().route(Route::get_pets()))
        .plan(Plan::new("metered").quota(5, Period::Month))
        .to_yaml()
}

/// Regression: the ready line must come only after the SIGHUP/SIGTERM handlers and the file
/// watcher exist (it once came before, and a signal right after "ready" killed the process).
/// `build_catalog` waits up to 4 × `store.timeout` per quota plan when the store is slow, which
/// this test uses to make the old race deterministic.
#[test]
fn sighup_right_after_ready_does_not_kill() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut tg = TollgateProcess::start(&slow_startup_config(&silent));
    tg.sighup();
    if let Some(status) = tg.wait_exit(Duration::from_secs(2)) {
        panic!(
            "SIGHUP right after the ready line killed tollgate ({status:?})\nstderr:\n{}",
            tg.stderr_text()
        );
    }
}

/// The SIGTERM half of [`sighup_right_after_ready_does_not_kill`].
#[test]
fn sigterm_right_after_ready_exits_zero() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut tg = TollgateProcess::start(&slow_startup_config(&silent));
    tg.terminate();
    let status = tg
        .wait_exit(Duration::from_secs(15))
        .expect("tollgate exits after SIGTERM");
    assert!(
        status.success(),
        "SIGTERM right after the ready line must exit 0 via the graceful path, got {status:?}\n\
         stderr:\n{}",
        tg.stderr_text()
    );
}

/// Idempotency across instances: a retry with the same `request_id` through the other process
/// is answered from the record (`replayed`) and charges nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_retry_is_replayed_across_instances() {
    let redis = RedisServer::start();
    let cfg = one_key(
        &redis,
        "idem",
        FailureMode::Closed,
        Plan::new("metered").quota(10, Period::Month),
    );
    let a = TollgateProcess::start(&cfg);
    let b = TollgateProcess::start(&cfg);
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let with_id = |id: &str| CheckRequestRequest {
        request_id: id.into(),
        ..get_pets(KEY_A)
    };
    let remaining = |r: &CheckRequestResponse| r.quota.as_ref().map(|q| q.remaining);

    let first = check(&mut ca, with_id("req-1")).await;
    assert_eq!(decision(&first), Decision::Allow);
    assert!(!first.replayed);
    assert_eq!(remaining(&first), Some(9));

    let retry = check(&mut cb, with_id("req-1")).await;
    assert_eq!(decision(&retry), Decision::Allow);
    assert!(
        retry.replayed,
        "same request_id must be replayed: {retry:?}"
    );
    assert_eq!(remaining(&retry), Some(9));

    let next = check(&mut cb, with_id("req-2")).await;
    assert!(!next.replayed);
    assert_eq!(remaining(&next), Some(8), "the retry charged nothing");
}

/// Logs written to a file (the harness pipes stderr, as a service manager or a container
/// runtime does) are plain text: no ANSI colour codes.
#[test]
fn logs_to_a_file_carry_no_colour_codes() {
    let tg = TollgateProcess::start(&Config::memory().to_yaml());
    // "serving ..." is logged at start, at INFO (a coloured level before the fix).
    assert!(
        tg.wait_for_stderr("serving", Duration::from_secs(10)),
        "no log line:\n{}",
        tg.stderr_text()
    );
    let logs = tg.stderr_text();
    assert!(
        !logs.contains('\u{1b}'),
        "colour codes in a log file:\n{logs:?}"
    );
}
