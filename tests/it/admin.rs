//! End-to-end tests of `tollgate.v1.AdminService`: the real `tollgate` binary against a real
//! `redis-server`, over gRPC.
//!
//! What is covered:
//!
//! - propagation: a plan and key created through one instance are honoured by another sharing
//!   the Redis within milliseconds, and so are disable / re-enable / delete
//!   ([`key_changes_propagate_across_instances`]);
//! - daily usage: `GetUsage` per day and per key, and its argument checks
//!   ([`get_usage_reports_daily_use_and_checks_its_range`]);
//! - `UpdateUsage` re-admits exactly the granted number of requests on another instance
//!   ([`update_usage_readmits_exactly_the_granted_number`]);
//! - authentication: missing, malformed, wrong and empty tokens, a tokens file, and the admin
//!   service on its own port or on the check port ([`admin_auth_is_enforced`],
//!   [`admin_tokens_file_adds_tokens`], [`admin_service_is_not_on_the_check_port`],
//!   [`admin_port_zero_is_its_own_port`],
//!   [`admin_service_on_the_check_port_when_the_addresses_are_equal`]);
//! - every validation error with its code and message ([`validation_errors`]);
//! - lists, filters and paging ([`lists_filters_and_paging`]);
//! - CSV import ([`import_api_keys_from_csv`]);
//! - live bucket and quota state ([`throttle_state_shows_buckets_and_quota`]);
//! - the authorizer cache flush, on this and on other instances
//!   ([`flush_authorizer_cache`]);
//! - persistence: definitions live in Redis, survive restarts, and a new instance serves them
//!   at once ([`definitions_survive_restart_and_config_is_seeded`]).
//!
//! Every test starts its own `redis-server` (and uses its own key prefix), so the tests run in
//! parallel. Nothing sleeps for correctness: asynchronous effects (another instance applying a
//! change) are polled with a deadline. Tests that compare dates compute "today" (UTC) from the
//! wall clock; run across UTC midnight they may fail once.
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tollgate_proto::v1::admin_service_client::AdminServiceClient;
use tollgate_proto::v1::check_service_client::CheckServiceClient;
use tollgate_proto::v1::{
    AdminScope, ApiKey, ApiStage, CheckRequestRequest, CheckRequestResponse, CreateApiKeyRequest,
    CreateUsagePlanKeyRequest, CreateUsagePlanRequest, DailyUsage, Decision, DeleteApiKeyRequest,
    DeleteUsagePlanRequest, FlushAuthorizerCacheRequest, GetApiKeyRequest, GetCallerInfoRequest,
    GetThrottleStateRequest, GetUsagePlanRequest, GetUsageRequest, ImportApiKeysRequest,
    ListApiKeysRequest, ListUsagePlanKeysRequest, ListUsagePlansRequest, LocalLease, Metering,
    Quota, QuotaPeriod, Throttle, ThrottleScope, UpdateApiKeyRequest, UpdateUsagePlanRequest,
    UpdateUsageRequest, UsagePlan,
};
use tollgate_server::clock::{Clock, SystemClock};
use tollgate_tests::authorizer::AuthorizerEndpoint;
use tollgate_tests::checks::{self, check, decision};
use tollgate_tests::config::{Api, Authorizer, Config, Key, Period, Plan, Route, Stage};
use tollgate_tests::fixtures::date_of;
use tollgate_tests::redis::{RedisServer, free_port};
use tollgate_tests::tollgate::{
    ADMIN_TOKEN, AdminClient, BearerToken, TollgateProcess, eventually,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

type Client = CheckServiceClient<Channel>;

/// How long another instance may take to apply a change (it should take milliseconds).
const PROPAGATION: Duration = Duration::from_secs(2);

/// The plan and key every config file of this suite defines (source "config").
const CONFIG_PLAN: &str = "cfg-plan";
const CONFIG_KEY: &str = "cfg-key";
const CONFIG_KEY_NAME: &str = "Config key";
const CONFIG_KEY_VALUE: &str = "admin-cfg-key-0123456789abcdef";

const DAY_US: u64 = 86_400_000_000;

// ---------------------------------------------------------------- configs

/// `server` (port 0 listeners), `store` (this Redis, `prefix`), `failure_mode: closed`; API `petstore` stage `prod` with `GET /pets` and `POST /pets` (API
/// key required); and the config file's [`CONFIG_PLAN`] and [`CONFIG_KEY`].
fn config(redis: &RedisServer, prefix: &str) -> String {
    config_with(redis, prefix).to_yaml()
}

/// [`config`] as a [`Config`], for a test that adds to it.
fn config_with(redis: &RedisServer, prefix: &str) -> Config {
    Config::redis(redis.url())
        .key_prefix(prefix)
        .closed()
        .petstore(
            Stage::prod()
                .route(Route::get_pets())
                .route(Route::keyed("POST", "/pets")),
        )
        .plan(
            Plan::new(CONFIG_PLAN)
                .name("Config plan")
                .throttle(1000.0, 1000)
                .quota(100_000, Period::Month),
        )
        .key(Key::new(CONFIG_KEY, CONFIG_KEY_VALUE, CONFIG_PLAN).name(CONFIG_KEY_NAME))
}

/// A one-process config with the memory store and no APIs (for the authentication tests), and
/// `admin_tokens_file` when given.
fn memory_config(admin_tokens_file: Option<&std::path::Path>) -> String {
    let mut cfg = Config::memory();
    cfg.server.admin_tokens_file = admin_tokens_file.map(Into::into);
    cfg.to_yaml()
}

// ---------------------------------------------------------------- admin requests

fn throttle(rate_limit: f64, burst_limit: u64) -> Throttle {
    Throttle {
        rate_limit,
        burst_limit,
    }
}

fn quota(limit: u64, period: QuotaPeriod) -> Quota {
    Quota {
        limit,
        period: period as i32,
        offset: 0,
    }
}

fn petstore_prod() -> ApiStage {
    ApiStage {
        api_id: "petstore".into(),
        stage: "prod".into(),
        method_throttle: HashMap::new(),
    }
}

/// A plan `id` on petstore/prod.
fn plan(id: &str, throttle: Option<Throttle>, quota: Option<Quota>) -> UsagePlan {
    UsagePlan {
        id: id.into(),
        name: format!("Plan {id}"),
        throttle,
        quota,
        api_stages: vec![petstore_prod()],
        ..Default::default()
    }
}

/// An enabled key `id` named `name` in `plans`; `value` `None` lets the server generate one.
fn key_req(id: &str, name: &str, value: Option<&str>, plans: &[&str]) -> CreateApiKeyRequest {
    CreateApiKeyRequest {
        id: id.into(),
        name: name.into(),
        value: value.map(String::from),
        enabled: true,
        usage_plan_ids: plans.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

async fn create_plan(admin: &mut AdminClient, p: UsagePlan) -> UsagePlan {
    let id = p.id.clone();
    admin
        .create_usage_plan(CreateUsagePlanRequest {
            usage_plan: Some(p),
        })
        .await
        .unwrap_or_else(|s| panic!("CreateUsagePlan {id:?} failed: {s:?}"))
        .into_inner()
}

async fn create_key(admin: &mut AdminClient, req: CreateApiKeyRequest) -> ApiKey {
    let id = req.id.clone();
    admin
        .create_api_key(req)
        .await
        .unwrap_or_else(|s| panic!("CreateApiKey {id:?} failed: {s:?}"))
        .into_inner()
}

async fn get_key(admin: &mut AdminClient, id: &str) -> Result<ApiKey, Status> {
    admin
        .get_api_key(GetApiKeyRequest {
            id: id.into(),
            include_value: true,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Every API key (walking all pages), as returned.
async fn all_keys(admin: &mut AdminClient) -> Vec<ApiKey> {
    admin
        .list_api_keys(ListApiKeysRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("ListApiKeys")
        .into_inner()
        .items
}

/// Asserts that an admin call failed with `code` and a message containing `needle`.
#[track_caller]
fn assert_status<T: std::fmt::Debug>(
    what: &str,
    r: Result<tonic::Response<T>, Status>,
    code: Code,
    needle: &str,
) {
    match r {
        Ok(ok) => panic!(
            "{what}: expected {code:?} ({needle:?}), got OK: {:?}",
            ok.into_inner()
        ),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {s:?}");
            assert!(
                s.message().contains(needle),
                "{what}: message {:?} does not contain {needle:?}",
                s.message()
            );
        }
    }
}

// ---------------------------------------------------------------- checks

/// `GET /pets` on petstore/prod with `api_key`, costing `cost` units.
fn get_pets(api_key: &str, cost: u64) -> CheckRequestRequest {
    CheckRequestRequest {
        cost,
        ..checks::get_pets(api_key)
    }
}

/// The decision for one `GET /pets` with `api_key` (cost 1).
async fn pets_decision(mut client: Client, api_key: String) -> Decision {
    decision(&check(&mut client, get_pets(&api_key, 1)).await)
}

/// Waits until `client`'s instance answers `GET /pets` with `api_key` by `want`; returns the
/// time it took.
async fn eventually_decision(
    procs: &[&TollgateProcess],
    what: &str,
    client: &Client,
    api_key: &str,
    want: Decision,
) -> Duration {
    eventually(procs, what, PROPAGATION, || {
        let (c, k) = (client.clone(), api_key.to_string());
        async move { pets_decision(c, k).await == want }
    })
    .await
}

// ---------------------------------------------------------------- dates

/// Today's day number (days since 1970-01-01, UTC).
fn today() -> i64 {
    (SystemClock.now_micros() / DAY_US) as i64
}

#[test]
fn date_helper_matches_known_dates() {
    assert_eq!(date_of(0), "1970-01-01");
    assert_eq!(date_of(20_000), "2024-10-04");
    assert_eq!(date_of(19_782), "2024-02-29");
    assert_eq!(date_of(19_783), "2024-03-01");
}

fn day(date: i64, used: u64, remaining: Option<u64>) -> DailyUsage {
    DailyUsage {
        date: date_of(date),
        used,
        remaining,
    }
}

// ---------------------------------------------------------------- 1. propagation

/// A plan and a key (generated value) created on A are honoured by B within milliseconds;
/// disabling, re-enabling and deleting the key on A are too. A applies its own writes before
/// answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_changes_propagate_across_instances() {
    let redis = RedisServer::start();
    let cfg = config(&redis, "adm-prop");
    let a = TollgateProcess::start(&cfg);
    let b = TollgateProcess::start(&cfg);
    let procs = [&a, &b];
    let mut admin = a.admin().await;
    let (mut ca, cb) = (a.client().await, b.client().await);

    let p = create_plan(
        &mut admin,
        plan(
            "prop-plan",
            Some(throttle(1000.0, 1000)),
            Some(quota(100_000, QuotaPeriod::Day)),
        ),
    )
    .await;
    assert_eq!(p.id, "prop-plan");
    assert_eq!(p.source, "admin");
    assert_eq!(p.throttle, Some(throttle(1000.0, 1000)));
    assert_eq!(p.quota, Some(quota(100_000, QuotaPeriod::Day)));
    assert_eq!(p.api_stages, vec![petstore_prod()]);

    let k = create_key(
        &mut admin,
        CreateApiKeyRequest {
            name: "propagated".into(),
            enabled: true,
            usage_plan_ids: vec!["prop-plan".into()],
            ..Default::default()
        },
    )
    .await;
    assert!(
        k.value.len() >= 40 && k.value.bytes().all(|b| b.is_ascii_alphanumeric()),
        "generated value: {:?}",
        k.value
    );
    assert!(!k.id.is_empty());
    assert_eq!(k.name, "propagated");
    assert!(k.enabled);
    assert_eq!(k.usage_plan_ids, vec!["prop-plan".to_string()]);
    assert_eq!(k.source, "admin");
    let value = k.value.clone();

    // Created → allowed on B.
    let took =
        eventually_decision(&procs, "B allows the new key", &cb, &value, Decision::Allow).await;
    println!("propagation of CreateApiKey to B: {} ms", took.as_millis());
    let r = check(&mut cb.clone(), get_pets(&value, 1)).await;
    let identity = r.identity.expect("identity on ALLOW");
    assert_eq!(identity.api_key_id, k.id);
    assert_eq!(identity.usage_plan_id, "prop-plan");

    // Disabled → forbidden on A at once, on B within the deadline.
    let updated = admin
        .update_api_key(UpdateApiKeyRequest {
            id: k.id.clone(),
            enabled: Some(false),
            ..Default::default()
        })
        .await
        .expect("UpdateApiKey enabled=false")
        .into_inner();
    assert!(!updated.enabled);
    assert_eq!(updated.name, "propagated", "untouched fields stay");
    assert_eq!(updated.value, "", "the value is never returned again");
    assert_eq!(
        decision(&check(&mut ca, get_pets(&value, 1)).await),
        Decision::Forbidden,
        "A applies its own write before answering"
    );
    let took = eventually_decision(
        &procs,
        "B forbids the disabled key",
        &cb,
        &value,
        Decision::Forbidden,
    )
    .await;
    println!("propagation of disable to B: {} ms", took.as_millis());

    // Re-enabled → allowed again.
    admin
        .update_api_key(UpdateApiKeyRequest {
            id: k.id.clone(),
            enabled: Some(true),
            ..Default::default()
        })
        .await
        .expect("UpdateApiKey enabled=true");
    let took = eventually_decision(
        &procs,
        "B allows the re-enabled key",
        &cb,
        &value,
        Decision::Allow,
    )
    .await;
    println!("propagation of re-enable to B: {} ms", took.as_millis());

    // Deleted → forbidden on B, and gone from B's admin view too.
    admin
        .delete_api_key(DeleteApiKeyRequest { id: k.id.clone() })
        .await
        .expect("DeleteApiKey");
    assert_status(
        "GetApiKey after delete (A)",
        admin
            .get_api_key(GetApiKeyRequest {
                id: k.id.clone(),
                include_value: false,
            })
            .await,
        Code::NotFound,
        "Invalid API Key identifier specified",
    );
    let took = eventually_decision(
        &procs,
        "B forbids the deleted key",
        &cb,
        &value,
        Decision::Forbidden,
    )
    .await;
    println!("propagation of delete to B: {} ms", took.as_millis());
    let mut admin_b = b.admin().await;
    assert_status(
        "GetApiKey after delete (B)",
        admin_b
            .get_api_key(GetApiKeyRequest {
                id: k.id.clone(),
                include_value: false,
            })
            .await,
        Code::NotFound,
        "Invalid API Key identifier specified",
    );
}

// ---------------------------------------------------------------- 2. GetUsage

/// Seven checks (four of cost 1, three of cost 2) show as 10 used today, 90 remaining of a
/// daily quota of 100, with 0 used on the two days before; the key filter, the other key's
/// usage, and every argument error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_usage_reports_daily_use_and_checks_its_range() {
    let redis = RedisServer::start();
    let tg = TollgateProcess::start(&config(&redis, "adm-usage"));
    let mut admin = tg.admin().await;
    let mut c = tg.client().await;
    create_plan(
        &mut admin,
        plan(
            "usage-plan",
            Some(throttle(1000.0, 1000)),
            Some(quota(100, QuotaPeriod::Day)),
        ),
    )
    .await;
    const V1: &str = "usage-key-one-0123456789";
    const V2: &str = "usage-key-two-0123456789";
    create_key(&mut admin, key_req("u1", "u1", Some(V1), &["usage-plan"])).await;
    create_key(&mut admin, key_req("u2", "u2", Some(V2), &["usage-plan"])).await;

    for cost in [1, 2, 1, 2, 1, 2, 1] {
        let r = check(&mut c, get_pets(V1, cost)).await;
        assert_eq!(decision(&r), Decision::Allow, "{r:?}");
    }
    let r = check(&mut c, get_pets(V2, 3)).await;
    assert_eq!(decision(&r), Decision::Allow, "{r:?}");

    let t = today();
    let usage = |key_id: &str, start: i64, end: i64| GetUsageRequest {
        usage_plan_id: "usage-plan".into(),
        key_id: key_id.into(),
        start_date: date_of(start),
        end_date: date_of(end),
        ..Default::default()
    };

    // Every key of the plan.
    let all = admin
        .get_usage(usage("", t - 2, t))
        .await
        .expect("GetUsage")
        .into_inner();
    assert_eq!(all.usage_plan_id, "usage-plan");
    assert_eq!(all.start_date, date_of(t - 2));
    assert_eq!(all.end_date, date_of(t));
    assert_eq!(
        all.items.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from(["u1".to_string(), "u2".to_string()])
    );
    assert_eq!(
        all.items["u1"].days,
        vec![
            day(t - 2, 0, Some(100)),
            day(t - 1, 0, Some(100)),
            day(t, 10, Some(90)),
        ]
    );
    assert_eq!(
        all.items["u2"].days,
        vec![
            day(t - 2, 0, Some(100)),
            day(t - 1, 0, Some(100)),
            day(t, 3, Some(97)),
        ]
    );

    // One key.
    let one = admin
        .get_usage(usage("u1", t - 2, t))
        .await
        .expect("GetUsage key_id=u1")
        .into_inner();
    assert_eq!(
        one.items.keys().cloned().collect::<Vec<_>>(),
        vec!["u1".to_string()]
    );
    assert_eq!(one.items["u1"].days, all.items["u1"].days);

    // 366 days is the most one call may ask for.
    let year = admin
        .get_usage(usage("u1", t - 365, t))
        .await
        .expect("GetUsage of 366 days")
        .into_inner();
    let days = &year.items["u1"].days;
    assert_eq!(days.len(), 366);
    assert_eq!(days.last(), Some(&day(t, 10, Some(90))));
    assert_eq!(days.iter().map(|d| d.used).sum::<u64>(), 10);

    // Errors.
    assert_status(
        "GetUsage of an unknown plan",
        admin
            .get_usage(GetUsageRequest {
                usage_plan_id: "no-such-plan".into(),
                ..usage("", t - 2, t)
            })
            .await,
        Code::NotFound,
        "Invalid Usage Plan ID specified",
    );
    assert_status(
        "GetUsage with end before start",
        admin.get_usage(usage("", t, t - 1)).await,
        Code::InvalidArgument,
        "end_date must not be before start_date",
    );
    assert_status(
        "GetUsage with a bad date",
        admin
            .get_usage(GetUsageRequest {
                start_date: date_of(t).replace('-', "/"),
                ..usage("", t, t)
            })
            .await,
        Code::InvalidArgument,
        "expected YYYY-MM-DD",
    );
    assert_status(
        "GetUsage with an impossible date",
        admin
            .get_usage(GetUsageRequest {
                start_date: "2024-13-01".into(),
                ..usage("", t, t)
            })
            .await,
        Code::InvalidArgument,
        "start_date",
    );
    assert_status(
        "GetUsage of 367 days",
        admin.get_usage(usage("", t - 366, t)).await,
        Code::InvalidArgument,
        "at most 366 days",
    );
    assert_status(
        "GetUsage of a key that is not in the plan",
        admin.get_usage(usage(CONFIG_KEY, t - 2, t)).await,
        Code::NotFound,
        "is not in usage plan",
    );
}

// ---------------------------------------------------------------- the over-limit cache

/// `EVALSHA` calls Redis has run since the last `CONFIG RESETSTAT`.
async fn evalsha_calls(redis: &RedisServer) -> u64 {
    let mut c = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .expect("info");
    tollgate_tests::redis::command_calls(&info, "evalsha")
}

async fn reset_stats(redis: &RedisServer) {
    let mut c = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut c)
        .await
        .expect("resetstat");
}

/// A throttled key and a used-up quota cost no Redis call while the store's answer holds
/// (DESIGN §6); `UpdateUsage` through one instance makes every instance ask Redis again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_denials_cost_no_redis_call_until_update_usage() {
    let redis = RedisServer::start();
    let cfg = config(&redis, "adm-overlimit");
    let a = TollgateProcess::start(&cfg);
    let b = TollgateProcess::start(&cfg);
    let mut admin = a.admin().await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    create_plan(&mut admin, plan("slow", Some(throttle(0.01, 2)), None)).await;
    create_plan(
        &mut admin,
        plan(
            "two",
            Some(throttle(1000.0, 1000)),
            Some(quota(2, QuotaPeriod::Day)),
        ),
    )
    .await;
    const SLOW: &str = "overlimit-slow-key-0123456789";
    const TWO: &str = "overlimit-two-key-0123456789";
    create_key(
        &mut admin,
        key_req("ol-slow", "slow", Some(SLOW), &["slow"]),
    )
    .await;
    create_key(&mut admin, key_req("ol-two", "two", Some(TWO), &["two"])).await;
    eventually_decision(&[&a, &b], "B knows the key", &cb, SLOW, Decision::Allow).await;
    // Every definitions event has reached both instances (a late one clears the over-limit
    // cache, which would cost the one Redis call this test counts): both serve one version,
    // unchanged for a moment.
    let deadline = std::time::Instant::now() + PROPAGATION;
    loop {
        let v = |p: &TollgateProcess| p.metric("tollgate_definitions_version");
        let before = (v(&a), v(&b));
        tokio::time::sleep(Duration::from_millis(300)).await;
        if before.0 == before.1 && (v(&a), v(&b)) == before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "definitions versions never settled: {before:?}"
        );
    }

    // Throttled: burst 2 (one already spent by B), then a 100 s wait.
    assert_eq!(
        decision(&check(&mut ca, get_pets(SLOW, 1)).await),
        Decision::Allow
    );
    let r = check(&mut ca, get_pets(SLOW, 1)).await;
    assert_eq!(decision(&r), Decision::Throttled, "{r:?}");
    reset_stats(&redis).await;
    for _ in 0..50 {
        let r = check(&mut ca, get_pets(SLOW, 1)).await;
        assert_eq!(decision(&r), Decision::Throttled, "{r:?}");
        assert!(r.retry_after.is_some(), "{r:?}");
    }
    assert_eq!(
        evalsha_calls(&redis).await,
        0,
        "throttled checks answered locally"
    );

    // Quota 2/day used up through A; both instances see the denial once.
    for _ in 0..2 {
        assert_eq!(
            decision(&check(&mut ca, get_pets(TWO, 1)).await),
            Decision::Allow
        );
    }
    assert_eq!(
        decision(&check(&mut ca, get_pets(TWO, 1)).await),
        Decision::QuotaExceeded
    );
    assert_eq!(
        decision(&check(&mut cb, get_pets(TWO, 1)).await),
        Decision::QuotaExceeded
    );
    reset_stats(&redis).await;
    for _ in 0..20 {
        for c in [&mut ca, &mut cb] {
            let r = check(c, get_pets(TWO, 1)).await;
            assert_eq!(decision(&r), Decision::QuotaExceeded, "{r:?}");
            assert_eq!(r.quota.as_ref().map(|q| q.remaining), Some(0), "{r:?}");
        }
    }
    assert_eq!(
        evalsha_calls(&redis).await,
        0,
        "used-up quota answered locally"
    );

    // One more unit through A's admin API: B forgets its denial (pub/sub) and admits it.
    admin
        .update_usage(UpdateUsageRequest {
            usage_plan_id: "two".into(),
            key_id: "ol-two".into(),
            remaining: 1,
        })
        .await
        .expect("UpdateUsage");
    eventually_decision(
        &[&a, &b],
        "B admits after UpdateUsage",
        &cb,
        TWO,
        Decision::Allow,
    )
    .await;
    // Exactly one: A asks Redis again (its own denial was dropped too) and is refused.
    let r = check(&mut ca, get_pets(TWO, 1)).await;
    assert_eq!(decision(&r), Decision::QuotaExceeded, "{r:?}");
    assert!(
        evalsha_calls(&redis).await >= 2,
        "both instances asked Redis again"
    );
}

// ---------------------------------------------------------------- 3. UpdateUsage

/// Quota 3/day: three allowed, the fourth is 429 Limit Exceeded; `UpdateUsage remaining=2` on
/// A lets exactly two more through B, then the quota is exceeded again. Plus its errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_usage_readmits_exactly_the_granted_number() {
    let redis = RedisServer::start();
    let cfg = config(&redis, "adm-update-usage");
    let a = TollgateProcess::start(&cfg);
    let b = TollgateProcess::start(&cfg);
    let mut admin = a.admin().await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    create_plan(
        &mut admin,
        plan(
            "three",
            Some(throttle(1000.0, 1000)),
            Some(quota(3, QuotaPeriod::Day)),
        ),
    )
    .await;
    create_plan(
        &mut admin,
        plan("noquota", Some(throttle(1000.0, 1000)), None),
    )
    .await;
    const V: &str = "update-usage-key-0123456789";
    const V_NOQUOTA: &str = "update-usage-noquota-0123456789";
    create_key(&mut admin, key_req("uu", "uu", Some(V), &["three"])).await;
    create_key(
        &mut admin,
        key_req("uu-nq", "uu-nq", Some(V_NOQUOTA), &["noquota"]),
    )
    .await;
    // B has the key before the quota is spent (so B's answers below are about the quota).
    eventually_decision(
        &[&a, &b],
        "B knows the key",
        &cb,
        V_NOQUOTA,
        Decision::Allow,
    )
    .await;

    for i in 1..=3u64 {
        let r = check(&mut ca, get_pets(V, 1)).await;
        assert_eq!(decision(&r), Decision::Allow, "request {i}: {r:?}");
        assert_eq!(r.quota.as_ref().map(|q| q.remaining), Some(3 - i), "{r:?}");
    }
    let r = check(&mut ca, get_pets(V, 1)).await;
    assert_eq!(decision(&r), Decision::QuotaExceeded, "{r:?}");
    assert_eq!(r.http_status, 429);
    assert_eq!(r.message, "Limit Exceeded");
    assert_eq!(r.error_type, "LimitExceededException");

    let t = today();
    let up = admin
        .update_usage(UpdateUsageRequest {
            usage_plan_id: "three".into(),
            key_id: "uu".into(),
            remaining: 2,
        })
        .await
        .expect("UpdateUsage")
        .into_inner();
    assert_eq!(up.usage_plan_id, "three");
    assert_eq!(up.key_id, "uu");
    assert_eq!(
        (up.limit, up.used, up.remaining),
        (5, 3, 2),
        "limit = used + remaining; the refused fourth request is not counted: {up:?}"
    );
    assert!(
        up.reset_at
            .starts_with(&format!("{}T00:00:00", date_of(t + 1))),
        "a daily quota resets at the next UTC midnight: {up:?}"
    );

    // Exactly two more, through the other instance.
    for left in [1, 0] {
        let r = check(&mut cb, get_pets(V, 1)).await;
        assert_eq!(decision(&r), Decision::Allow, "{r:?}");
        let q = r.quota.as_ref().expect("quota status");
        assert_eq!((q.limit, q.remaining), (5, left), "{r:?}");
    }
    let r = check(&mut cb, get_pets(V, 1)).await;
    assert_eq!(decision(&r), Decision::QuotaExceeded, "{r:?}");
    let r = check(&mut ca, get_pets(V, 1)).await;
    assert_eq!(decision(&r), Decision::QuotaExceeded, "{r:?}");

    // GetUsage agrees: 5 used today, none left.
    let usage = admin
        .get_usage(GetUsageRequest {
            usage_plan_id: "three".into(),
            key_id: "uu".into(),
            start_date: date_of(t),
            end_date: date_of(t),
            ..Default::default()
        })
        .await
        .expect("GetUsage")
        .into_inner();
    assert_eq!(usage.items["uu"].days, vec![day(t, 5, Some(0))]);

    // Errors.
    assert_status(
        "UpdateUsage on a plan without a quota",
        admin
            .update_usage(UpdateUsageRequest {
                usage_plan_id: "noquota".into(),
                key_id: "uu-nq".into(),
                remaining: 5,
            })
            .await,
        Code::FailedPrecondition,
        "has no quota",
    );
    assert_status(
        "UpdateUsage of a key not in the plan",
        admin
            .update_usage(UpdateUsageRequest {
                usage_plan_id: "three".into(),
                key_id: "uu-nq".into(),
                remaining: 5,
            })
            .await,
        Code::NotFound,
        "is not in usage plan",
    );
    assert_status(
        "UpdateUsage of an unknown key",
        admin
            .update_usage(UpdateUsageRequest {
                usage_plan_id: "three".into(),
                key_id: "nobody".into(),
                remaining: 5,
            })
            .await,
        Code::NotFound,
        "Invalid API Key identifier specified",
    );
    assert_status(
        "UpdateUsage of an unknown plan",
        admin
            .update_usage(UpdateUsageRequest {
                usage_plan_id: "nope".into(),
                key_id: "uu".into(),
                remaining: 5,
            })
            .await,
        Code::NotFound,
        "Invalid Usage Plan ID specified",
    );
}

// ---------------------------------------------------------------- 4. authentication

/// Sends `authorization: <value>` verbatim (or nothing), unlike the harness's
/// [`BearerToken`], so malformed headers can be sent.
#[derive(Clone)]
struct RawAuthorization(Option<String>);

impl tonic::service::Interceptor for RawAuthorization {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            let v = v
                .parse()
                .map_err(|_| Status::invalid_argument("header is not ASCII"))?;
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    }
}

/// `ListUsagePlans` at `url` with `authorization: <header>` (or none).
async fn list_plans_with(
    url: String,
    header: Option<&str>,
) -> Result<tonic::Response<tollgate_proto::v1::ListUsagePlansResponse>, Status> {
    let channel = Channel::from_shared(url)
        .expect("a valid url")
        .connect()
        .await
        .expect("connect");
    AdminServiceClient::with_interceptor(channel, RawAuthorization(header.map(String::from)))
        .list_usage_plans(ListUsagePlansRequest::default())
        .await
}

/// Missing, non-Bearer, empty and wrong tokens are UNAUTHENTICATED (PERMISSION_DENIED is a
/// known token outside its scope: [`scoped_tokens_are_enforced`]), the right one works (both `Bearer` and `bearer`); a process whose
/// `TOLLGATE_ADMIN_TOKEN` is empty refuses every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_auth_is_enforced() {
    let tg = TollgateProcess::start(&memory_config(None));
    let url = tg.admin_url();
    let good = format!("Bearer {ADMIN_TOKEN}");
    let lower = format!("bearer {ADMIN_TOKEN}");

    let ok = list_plans_with(url.clone(), Some(&good))
        .await
        .expect("the configured token works");
    assert_eq!(ok.into_inner().items, vec![]);
    list_plans_with(url.clone(), Some(&lower))
        .await
        .expect("the scheme is case-insensitive (\"bearer\")");

    assert_status(
        "no authorization header",
        list_plans_with(url.clone(), None).await,
        Code::Unauthenticated,
        "missing authorization",
    );
    assert_status(
        "Basic scheme",
        list_plans_with(url.clone(), Some("Basic xyz")).await,
        Code::Unauthenticated,
        "malformed authorization",
    );
    assert_status(
        "bare token without a scheme",
        list_plans_with(url.clone(), Some(ADMIN_TOKEN)).await,
        Code::Unauthenticated,
        "malformed authorization",
    );
    assert_status(
        "empty bearer token",
        list_plans_with(url.clone(), Some("Bearer ")).await,
        Code::Unauthenticated,
        "malformed authorization",
    );
    assert_status(
        "wrong token",
        list_plans_with(url.clone(), Some("Bearer not-the-admin-token-0123")).await,
        Code::Unauthenticated,
        "invalid admin token",
    );
    assert_status(
        "the right token with a suffix",
        list_plans_with(url.clone(), Some(&format!("{good}x"))).await,
        Code::Unauthenticated,
        "invalid admin token",
    );
    // Through the harness client too (its interceptor is what the other tests use).
    let mut wrong = tg.admin_with_token(Some("wrong-token-0123456789")).await;
    assert_eq!(
        wrong
            .list_usage_plans(ListUsagePlansRequest::default())
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    drop(tg);

    // No token configured: everything is refused, whatever is sent.
    let off =
        TollgateProcess::start_with_env(&memory_config(None), &[("TOLLGATE_ADMIN_TOKEN", "")]);
    for header in [None, Some("Bearer "), Some(good.as_str()), Some("Bearer x")] {
        assert_status(
            &format!("admin API without tokens, header {header:?}"),
            list_plans_with(off.admin_url(), header).await,
            Code::Unauthenticated,
            "no admin token is configured",
        );
    }
}

/// `server.admin_tokens_file`: both tokens of the file work (blank lines, comments and
/// surrounding spaces ignored), as does `TOLLGATE_ADMIN_TOKEN`; the comment line is no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_tokens_file_adds_tokens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("admin-tokens");
    std::fs::write(
        &file,
        "# admin tokens\n\nfile-token-one-0123456789\n  file-token-two-0123456789  \n",
    )
    .expect("write the tokens file");
    let tg = TollgateProcess::start(&memory_config(Some(&file)));
    let url = tg.admin_url();
    for token in [
        "file-token-one-0123456789",
        "file-token-two-0123456789",
        ADMIN_TOKEN,
    ] {
        list_plans_with(url.clone(), Some(&format!("Bearer {token}")))
            .await
            .unwrap_or_else(|s| panic!("token {token:?} was refused: {s:?}"));
    }
    for token in ["# admin tokens", "file-token-three-0123456789"] {
        assert_status(
            &format!("token {token:?}"),
            list_plans_with(url.clone(), Some(&format!("Bearer {token}"))).await,
            Code::Unauthenticated,
            "invalid admin token",
        );
    }
}

/// Asserts that `tg` serves AdminService on its admin port only: on the check port it is
/// UNIMPLEMENTED.
async fn assert_admin_only_on_admin_port(tg: &TollgateProcess) {
    assert_ne!(
        tg.admin_addr(),
        tg.grpc_addr(),
        "the ready line names one port for admin and grpc"
    );
    let mut on_grpc = AdminServiceClient::with_interceptor(
        tg.channel().await,
        BearerToken(Some(ADMIN_TOKEN.into())),
    );
    assert_status(
        "AdminService on grpc_addr",
        on_grpc
            .list_usage_plans(ListUsagePlansRequest::default())
            .await,
        Code::Unimplemented,
        "",
    );
    tg.admin()
        .await
        .list_usage_plans(ListUsagePlansRequest::default())
        .await
        .expect("AdminService on admin_addr");
}

/// The admin service is on `admin_addr`, not on the check port: there it is UNIMPLEMENTED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_service_is_not_on_the_check_port() {
    let admin_addr = format!("127.0.0.1:{}", free_port());
    let tg = TollgateProcess::start_with_env(
        &memory_config(None),
        &[("TOLLGATE_SERVER_ADMIN_ADDR", &admin_addr)],
    );
    assert_eq!(tg.admin_addr().to_string(), admin_addr);
    assert_admin_only_on_admin_port(&tg).await;
}

/// `grpc_addr` and `admin_addr` both on port 0 (what the harness does for every process) are
/// two ephemeral ports, not one shared port: "127.0.0.1:0" means "any free port" each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_zero_is_its_own_port() {
    let tg = TollgateProcess::start_with_env(
        &memory_config(None),
        &[("TOLLGATE_SERVER_ADMIN_ADDR", "127.0.0.1:0")],
    );
    assert_admin_only_on_admin_port(&tg).await;
}

/// With `admin_addr` equal to `grpc_addr`, one port serves both (with the same auth rules).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_service_on_the_check_port_when_the_addresses_are_equal() {
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = format!(
        "server: {{grpc_addr: \"{addr}\", metrics_addr: \"127.0.0.1:0\"}}\n\
         store: {{kind: memory}}\n"
    );
    let tg = TollgateProcess::start_with_env(&cfg, &[("TOLLGATE_SERVER_ADMIN_ADDR", &addr)]);
    assert_eq!(tg.grpc_addr().to_string(), addr);
    assert_eq!(
        tg.admin_addr(),
        tg.grpc_addr(),
        "the ready line names one port"
    );
    list_plans_with(tg.grpc_url(), Some(&format!("Bearer {ADMIN_TOKEN}")))
        .await
        .expect("AdminService on the shared port");
    assert_status(
        "no token on the shared port",
        list_plans_with(tg.grpc_url(), None).await,
        Code::Unauthenticated,
        "missing authorization",
    );
    // The check service is still there, and needs no admin token.
    let status = tg
        .client()
        .await
        .check_request(get_pets("whatever-key-0123456789", 1))
        .await
        .expect_err("no such api");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

// ---------------------------------------------------------------- 5. validation

/// Every refusal of the admin API, with its code and (part of) its AWS-style message; none of
/// them changes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors() {
    let redis = RedisServer::start();
    let tg = TollgateProcess::start(&config(&redis, "adm-valid"));
    let mut admin = tg.admin().await;
    create_plan(&mut admin, plan("va", Some(throttle(10.0, 10)), None)).await;
    create_plan(&mut admin, plan("vb", Some(throttle(10.0, 10)), None)).await;

    // --- API keys: value length (20..=128), uniqueness of value and id, field lengths.
    assert_status(
        "19-character value",
        admin
            .create_api_key(key_req("v19", "", Some("x".repeat(19).as_str()), &[]))
            .await,
        Code::InvalidArgument,
        "API Key value should be at least 20 characters",
    );
    assert_status(
        "129-character value",
        admin
            .create_api_key(key_req("v129", "", Some("x".repeat(129).as_str()), &[]))
            .await,
        Code::InvalidArgument,
        "API Key value exceeds maximum size of 128 characters",
    );
    let v20 = "a".repeat(20);
    create_key(&mut admin, key_req("v20", "", Some(v20.as_str()), &["va"])).await;
    create_key(
        &mut admin,
        key_req("v128", "", Some("b".repeat(128).as_str()), &[]),
    )
    .await;
    assert_status(
        "duplicate value",
        admin
            .create_api_key(key_req("v20-again", "", Some(v20.as_str()), &[]))
            .await,
        Code::AlreadyExists,
        "API Key value already exists",
    );
    assert_status(
        "the config key's value",
        admin
            .create_api_key(key_req("cfg-again", "", Some(CONFIG_KEY_VALUE), &[]))
            .await,
        Code::AlreadyExists,
        "API Key value already exists",
    );
    assert_status(
        "duplicate id",
        admin.create_api_key(key_req("v20", "", None, &[])).await,
        Code::AlreadyExists,
        "already exists",
    );
    assert_status(
        "the config key's id",
        admin
            .create_api_key(key_req(CONFIG_KEY, "", None, &[]))
            .await,
        Code::AlreadyExists,
        "already exists",
    );
    assert_status(
        "name of 1025 characters",
        admin
            .create_api_key(key_req("long-name", &"n".repeat(1025), None, &[]))
            .await,
        Code::InvalidArgument,
        "name: at most 1024 characters",
    );
    create_key(
        &mut admin,
        key_req("name-1024", &"n".repeat(1024), None, &[]),
    )
    .await;
    assert_status(
        "tag key of 129 characters",
        admin
            .create_api_key(CreateApiKeyRequest {
                tags: HashMap::from([("t".repeat(129), "v".into())]),
                ..key_req("long-tag", "", None, &[])
            })
            .await,
        Code::InvalidArgument,
        "tag key: at most 128 characters",
    );
    assert_status(
        "bad key id",
        admin
            .create_api_key(key_req("bad id!", "", None, &[]))
            .await,
        Code::InvalidArgument,
        "id: 1-128 characters",
    );
    assert_status(
        "key in an unknown plan",
        admin
            .create_api_key(key_req("no-plan", "", None, &["ghost"]))
            .await,
        Code::NotFound,
        "Invalid Usage Plan ID specified",
    );
    assert_status(
        "key in two plans covering one stage",
        admin
            .create_api_key(key_req("two-plans", "", None, &["va", "vb"]))
            .await,
        Code::AlreadyExists,
        "both cover petstore/prod",
    );

    // --- usage plans.
    let mut fine_grained = plan("fine", None, None);
    fine_grained.api_stages[0].method_throttle =
        HashMap::from([("/pets/GET".to_string(), throttle(1.0, 1))]);
    assert_status(
        "method_throttle without a plan throttle",
        admin
            .create_usage_plan(CreateUsagePlanRequest {
                usage_plan: Some(fine_grained),
            })
            .await,
        Code::InvalidArgument,
        "Can not define fine grain throttling if usage plan throttle is not defined",
    );
    let mut elsewhere = plan("elsewhere", None, None);
    elsewhere.api_stages[0].stage = "staging".into();
    assert_status(
        "plan on an unknown stage",
        admin
            .create_usage_plan(CreateUsagePlanRequest {
                usage_plan: Some(elsewhere),
            })
            .await,
        Code::InvalidArgument,
        "no such api stage",
    );
    for (offset, limit) in [(10, 10), (11, 10)] {
        assert_status(
            &format!("quota offset {offset} with limit {limit}"),
            admin
                .create_usage_plan(CreateUsagePlanRequest {
                    usage_plan: Some(plan(
                        "offset",
                        None,
                        Some(Quota {
                            limit,
                            period: QuotaPeriod::Day as i32,
                            offset,
                        }),
                    )),
                })
                .await,
            Code::InvalidArgument,
            "offset: must be below the limit",
        );
    }
    assert_status(
        "quota period UNSPECIFIED",
        admin
            .create_usage_plan(CreateUsagePlanRequest {
                usage_plan: Some(plan(
                    "noperiod",
                    None,
                    Some(quota(10, QuotaPeriod::Unspecified)),
                )),
            })
            .await,
        Code::InvalidArgument,
        "quota.period",
    );
    assert_status(
        "quota limit 0",
        admin
            .create_usage_plan(CreateUsagePlanRequest {
                usage_plan: Some(plan("zero", None, Some(quota(0, QuotaPeriod::Day)))),
            })
            .await,
        Code::InvalidArgument,
        "quota.limit",
    );
    assert_status(
        "duplicate plan id",
        admin
            .create_usage_plan(CreateUsagePlanRequest {
                usage_plan: Some(plan("va", None, None)),
            })
            .await,
        Code::AlreadyExists,
        "already exists",
    );
    assert_status(
        "the config plan's id",
        admin
            .create_usage_plan(CreateUsagePlanRequest {
                usage_plan: Some(plan(CONFIG_PLAN, None, None)),
            })
            .await,
        Code::AlreadyExists,
        "already exists",
    );
    assert_status(
        "CreateUsagePlan without a plan",
        admin
            .create_usage_plan(CreateUsagePlanRequest { usage_plan: None })
            .await,
        Code::InvalidArgument,
        "usage_plan is required",
    );

    // --- not found.
    assert_status(
        "GetUsagePlan unknown",
        admin
            .get_usage_plan(GetUsagePlanRequest { id: "ghost".into() })
            .await,
        Code::NotFound,
        "Invalid Usage Plan ID specified",
    );
    assert_status(
        "GetApiKey unknown",
        admin
            .get_api_key(GetApiKeyRequest {
                id: "ghost".into(),
                include_value: false,
            })
            .await,
        Code::NotFound,
        "Invalid API Key identifier specified",
    );

    // --- plan keys: one plan per key per stage, no double association.
    assert_status(
        "CreateUsagePlanKey into a second plan on the same stage",
        admin
            .create_usage_plan_key(CreateUsagePlanKeyRequest {
                usage_plan_id: "vb".into(),
                key_id: "v20".into(),
            })
            .await,
        Code::AlreadyExists,
        "both cover petstore/prod",
    );
    assert_status(
        "CreateUsagePlanKey twice",
        admin
            .create_usage_plan_key(CreateUsagePlanKeyRequest {
                usage_plan_id: "va".into(),
                key_id: "v20".into(),
            })
            .await,
        Code::AlreadyExists,
        "already in usage plan",
    );
    assert_status(
        "DeleteUsagePlan with a key",
        admin
            .delete_usage_plan(DeleteUsagePlanRequest { id: "va".into() })
            .await,
        Code::FailedPrecondition,
        "still has 1 API key(s)",
    );

    // --- the config file's records are read-only here.
    assert_status(
        "UpdateApiKey of the config key",
        admin
            .update_api_key(UpdateApiKeyRequest {
                id: CONFIG_KEY.into(),
                enabled: Some(false),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "defined in the config file",
    );
    assert_status(
        "DeleteApiKey of the config key",
        admin
            .delete_api_key(DeleteApiKeyRequest {
                id: CONFIG_KEY.into(),
            })
            .await,
        Code::FailedPrecondition,
        "defined in the config file",
    );
    assert_status(
        "UpdateUsagePlan of the config plan",
        admin
            .update_usage_plan(UpdateUsagePlanRequest {
                usage_plan: Some(plan(CONFIG_PLAN, Some(throttle(1.0, 1)), None)),
            })
            .await,
        Code::FailedPrecondition,
        "defined in the config file",
    );
    assert_status(
        "DeleteUsagePlan of the config plan",
        admin
            .delete_usage_plan(DeleteUsagePlanRequest {
                id: CONFIG_PLAN.into(),
            })
            .await,
        Code::FailedPrecondition,
        "defined in the config file",
    );

    // --- page size.
    assert_status(
        "ListApiKeys page_size 501",
        admin
            .list_api_keys(ListApiKeysRequest {
                page_size: 501,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "page_size: at most 500",
    );
    assert_status(
        "ListUsagePlans page_size 501",
        admin
            .list_usage_plans(ListUsagePlansRequest {
                page_size: 501,
                page_token: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "page_size: at most 500",
    );

    // Nothing refused above was written; the config key is untouched.
    let ids: BTreeSet<String> = all_keys(&mut admin)
        .await
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([CONFIG_KEY, "name-1024", "v128", "v20"].map(String::from))
    );
    let plans: BTreeSet<String> = admin
        .list_usage_plans(ListUsagePlansRequest::default())
        .await
        .expect("ListUsagePlans")
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(
        plans,
        BTreeSet::from([CONFIG_PLAN, "va", "vb"].map(String::from))
    );
    let cfg_key = get_key(&mut admin, CONFIG_KEY).await.expect("config key");
    assert!(cfg_key.enabled);
    assert_eq!(cfg_key.source, "config");
    let v20_key = get_key(&mut admin, "v20").await.expect("v20");
    assert_eq!(v20_key.usage_plan_ids, vec!["va".to_string()]);
}

// ---------------------------------------------------------------- 6. lists

/// Filters (name prefix, customer id), paging without duplicates, no values in reads, the
/// plans' sources, plan keys, and DeleteApiKey removing the key's associations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filters_and_paging() {
    let redis = RedisServer::start();
    let tg = TollgateProcess::start(&config(&redis, "adm-lists"));
    let mut admin = tg.admin().await;
    create_plan(&mut admin, plan("lp", Some(throttle(10.0, 10)), None)).await;

    let mut created = Vec::new();
    for (name, customer) in [
        ("acme-1", "c1"),
        ("acme-2", "c1"),
        ("acme-3", ""),
        ("other-1", "c1"),
        ("other-2", "c2"),
    ] {
        let k = create_key(
            &mut admin,
            CreateApiKeyRequest {
                name: name.into(),
                customer_id: customer.into(),
                enabled: true,
                usage_plan_ids: if name.starts_with("acme") {
                    vec!["lp".into()]
                } else {
                    vec![]
                },
                ..Default::default()
            },
        )
        .await;
        assert_eq!(k.customer_id, customer);
        created.push(k);
    }
    let id_of = |name: &str| {
        created
            .iter()
            .find(|k| k.name == name)
            .map(|k| k.id.clone())
            .expect("created")
    };
    let list = |name_prefix: &str, customer_id: &str| ListApiKeysRequest {
        name_prefix: name_prefix.into(),
        customer_id: customer_id.into(),
        ..Default::default()
    };
    let names =
        |items: Vec<ApiKey>| -> BTreeSet<String> { items.into_iter().map(|k| k.name).collect() };

    let acme = admin
        .list_api_keys(list("acme", ""))
        .await
        .expect("ListApiKeys acme")
        .into_inner();
    assert_eq!(acme.next_page_token, "");
    assert_eq!(
        names(acme.items),
        BTreeSet::from(["acme-1", "acme-2", "acme-3"].map(String::from))
    );
    let c1 = admin
        .list_api_keys(list("", "c1"))
        .await
        .expect("ListApiKeys c1")
        .into_inner();
    assert_eq!(
        names(c1.items),
        BTreeSet::from(["acme-1", "acme-2", "other-1"].map(String::from))
    );
    let acme_c1 = admin
        .list_api_keys(list("acme", "c1"))
        .await
        .expect("ListApiKeys acme c1")
        .into_inner();
    assert_eq!(
        names(acme_c1.items),
        BTreeSet::from(["acme-1", "acme-2"].map(String::from))
    );
    let config_only = admin
        .list_api_keys(list("Config", ""))
        .await
        .expect("ListApiKeys Config")
        .into_inner();
    assert_eq!(
        config_only
            .items
            .iter()
            .map(|k| k.id.as_str())
            .collect::<Vec<_>>(),
        vec![CONFIG_KEY]
    );
    assert_eq!(config_only.items[0].source, "config");

    // Pages of 2 over 6 keys (5 + the config key): 3 pages, every key once, no values.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = admin
            .list_api_keys(ListApiKeysRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("ListApiKeys page")
            .into_inner();
        pages += 1;
        assert!(page.items.len() <= 2, "{page:?}");
        for k in &page.items {
            assert_eq!(k.value, "", "a list never returns values: {k:?}");
        }
        seen.extend(page.items.into_iter().map(|k| k.id));
        if page.next_page_token.is_empty() {
            break;
        }
        assert!(pages < 10, "paging does not end");
        token = page.next_page_token;
    }
    assert_eq!(pages, 3, "{seen:?}");
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "duplicates across pages: {seen:?}"
    );
    let mut expected: BTreeSet<String> = created.iter().map(|k| k.id.clone()).collect();
    expected.insert(CONFIG_KEY.into());
    assert_eq!(unique, expected);

    // GetApiKey never returns the value, even when asked to.
    let got = get_key(&mut admin, &id_of("acme-1"))
        .await
        .expect("GetApiKey");
    assert_eq!(got.value, "");
    assert_eq!(got.name, "acme-1");
    assert_eq!(got.customer_id, "c1");
    assert_eq!(got.usage_plan_ids, vec!["lp".to_string()]);
    assert_eq!(got.source, "admin");

    // Plans: the config file's and the admin's, with their sources.
    let plans = admin
        .list_usage_plans(ListUsagePlansRequest::default())
        .await
        .expect("ListUsagePlans")
        .into_inner();
    let sources: Vec<(String, String)> = plans
        .items
        .iter()
        .map(|p| (p.id.clone(), p.source.clone()))
        .collect();
    assert_eq!(
        sources,
        vec![
            (CONFIG_PLAN.to_string(), "config".to_string()),
            ("lp".to_string(), "admin".to_string()),
        ]
    );
    let cfg_plan = &plans.items[0];
    assert_eq!(cfg_plan.name, "Config plan");
    assert_eq!(cfg_plan.throttle, Some(throttle(1000.0, 1000)));
    assert_eq!(cfg_plan.quota, Some(quota(100_000, QuotaPeriod::Month)));
    assert_eq!(cfg_plan.api_stages, vec![petstore_prod()]);
    assert!(!cfg_plan.created_at.is_empty());

    // Plan keys.
    let plan_keys = |plan: &str| ListUsagePlanKeysRequest {
        usage_plan_id: plan.into(),
        ..Default::default()
    };
    let lp = admin
        .list_usage_plan_keys(plan_keys("lp"))
        .await
        .expect("ListUsagePlanKeys lp")
        .into_inner();
    let mut lp_items: Vec<(String, String, String, String, bool)> = lp
        .items
        .iter()
        .map(|k| {
            (
                k.id.clone(),
                k.name.clone(),
                k.r#type.clone(),
                k.usage_plan_id.clone(),
                k.enabled,
            )
        })
        .collect();
    lp_items.sort();
    let mut want: Vec<_> = ["acme-1", "acme-2", "acme-3"]
        .iter()
        .map(|n| {
            (
                id_of(n),
                n.to_string(),
                "API_KEY".to_string(),
                "lp".to_string(),
                true,
            )
        })
        .collect();
    want.sort();
    assert_eq!(lp_items, want);
    let ghost = admin
        .list_usage_plan_keys(plan_keys("ghost"))
        .await
        .expect("ListUsagePlanKeys of an unknown plan is an empty list (AWS)")
        .into_inner();
    assert_eq!(ghost.items, vec![]);
    let cfg_plan_keys = admin
        .list_usage_plan_keys(plan_keys(CONFIG_PLAN))
        .await
        .expect("ListUsagePlanKeys config plan")
        .into_inner();
    assert_eq!(
        cfg_plan_keys
            .items
            .iter()
            .map(|k| k.id.as_str())
            .collect::<Vec<_>>(),
        vec![CONFIG_KEY]
    );

    // DeleteApiKey takes its associations with it.
    admin
        .delete_api_key(DeleteApiKeyRequest {
            id: id_of("acme-2"),
        })
        .await
        .expect("DeleteApiKey");
    let lp = admin
        .list_usage_plan_keys(plan_keys("lp"))
        .await
        .expect("ListUsagePlanKeys lp after delete")
        .into_inner();
    let left: BTreeSet<String> = lp.items.into_iter().map(|k| k.id).collect();
    assert_eq!(left, BTreeSet::from([id_of("acme-1"), id_of("acme-3")]));
    // And the plan can be deleted once its keys are gone (acme-1 and acme-3 leave it).
    for n in ["acme-1", "acme-3"] {
        admin
            .delete_usage_plan_key(tollgate_proto::v1::DeleteUsagePlanKeyRequest {
                usage_plan_id: "lp".into(),
                key_id: id_of(n),
            })
            .await
            .expect("DeleteUsagePlanKey");
    }
    admin
        .delete_usage_plan(DeleteUsagePlanRequest { id: "lp".into() })
        .await
        .expect("DeleteUsagePlan of an empty plan");
    assert_status(
        "GetUsagePlan after delete",
        admin
            .get_usage_plan(GetUsagePlanRequest { id: "lp".into() })
            .await,
        Code::NotFound,
        "Invalid Usage Plan ID specified",
    );
}

// ---------------------------------------------------------------- 7. import

/// CSV import: case-insensitive headers in any order, good rows imported and usable, a bad
/// row reported by line; re-import by value overwrites; `fail_on_warnings` imports nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_api_keys_from_csv() {
    let redis = RedisServer::start();
    let tg = TollgateProcess::start(&config(&redis, "adm-import"));
    let mut admin = tg.admin().await;
    let mut c = tg.client().await;
    create_plan(
        &mut admin,
        plan(
            "imp",
            Some(throttle(1000.0, 1000)),
            Some(quota(1000, QuotaPeriod::Month)),
        ),
    )
    .await;
    const V1: &str = "imported-key-one-0123456789";
    const V2: &str = "imported-key-two-0123456789";
    let csv = format!(
        "usageplanids,KEY,Name,enabled\n\
         imp,{V1},Imported one,true\n\
         \"imp\",{V2},Imported two,TRUE\n\
         imp,too-short,Bad row,true\n"
    );
    let r = admin
        .import_api_keys(ImportApiKeysRequest {
            csv,
            fail_on_warnings: false,
        })
        .await
        .expect("ImportApiKeys")
        .into_inner();
    assert_eq!(r.ids.len(), 2, "{r:?}");
    assert_eq!(r.warnings.len(), 1, "{r:?}");
    assert!(
        r.warnings[0].starts_with("line 4:") && r.warnings[0].contains("at least 20"),
        "{r:?}"
    );
    let (id1, id2) = (r.ids[0].clone(), r.ids[1].clone());
    for (id, name) in [(&id1, "Imported one"), (&id2, "Imported two")] {
        let k = get_key(&mut admin, id).await.expect("imported key");
        assert_eq!(k.name, name);
        assert!(k.enabled);
        assert_eq!(k.usage_plan_ids, vec!["imp".to_string()]);
        assert_eq!(k.source, "admin");
        assert_eq!(k.value, "");
    }
    for v in [V1, V2] {
        let r = check(&mut c, get_pets(v, 1)).await;
        assert_eq!(decision(&r), Decision::Allow, "{v}: {r:?}");
        assert_eq!(r.identity.map(|i| i.usage_plan_id), Some("imp".to_string()));
    }
    let r = check(&mut c, get_pets("too-short", 1)).await;
    assert_eq!(decision(&r), Decision::Forbidden);

    // Re-import of a value overwrites that key (same id, new name, now disabled).
    let r = admin
        .import_api_keys(ImportApiKeysRequest {
            csv: format!("Key,Name,Enabled,UsagePlanIds\n{V1},Renamed,false,imp\n"),
            fail_on_warnings: false,
        })
        .await
        .expect("re-import")
        .into_inner();
    assert_eq!(r.ids, vec![id1.clone()]);
    assert_eq!(r.warnings, Vec::<String>::new());
    let k = get_key(&mut admin, &id1).await.expect("re-imported key");
    assert_eq!(k.name, "Renamed");
    assert!(!k.enabled);
    assert_eq!(
        decision(&check(&mut c, get_pets(V1, 1)).await),
        Decision::Forbidden
    );
    let before = all_keys(&mut admin).await.len();
    assert_eq!(before, 3, "the config key and the two imported");

    // fail_on_warnings: one bad row fails the whole file; the good row is not imported.
    const V3: &str = "imported-key-three-0123456789";
    assert_status(
        "import with fail_on_warnings and a bad row",
        admin
            .import_api_keys(ImportApiKeysRequest {
                csv: format!(
                    "Name,Key,Enabled,UsagePlanIds\nthree,{V3},true,imp\nbad,short,true,imp\n"
                ),
                fail_on_warnings: true,
            })
            .await,
        Code::InvalidArgument,
        "line 3",
    );
    assert_eq!(all_keys(&mut admin).await.len(), before);
    assert_eq!(
        decision(&check(&mut c, get_pets(V3, 1)).await),
        Decision::Forbidden
    );

    // A file without a Key column, or with an unknown column, is refused as a whole.
    assert_status(
        "import without a Key column",
        admin
            .import_api_keys(ImportApiKeysRequest {
                csv: "Name,Enabled\nx,true\n".into(),
                fail_on_warnings: false,
            })
            .await,
        Code::InvalidArgument,
        "no Key column",
    );
    assert_status(
        "import with an unknown column",
        admin
            .import_api_keys(ImportApiKeysRequest {
                csv: format!("Key,Colour\n{V3},blue\n"),
                fail_on_warnings: false,
            })
            .await,
        Code::InvalidArgument,
        "unknown column",
    );
}

// ---------------------------------------------------------------- 8. throttle state

/// After 3 checks: the per-method bucket of burst 5 has 2 tokens left (rate 0.01/s: no
/// noticeable refill) on route "GET /pets", and the quota shows 3 used; a per-plan bucket has
/// an empty route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_state_shows_buckets_and_quota() {
    let redis = RedisServer::start();
    let tg = TollgateProcess::start(&config(&redis, "adm-state"));
    let mut admin = tg.admin().await;
    let mut c = tg.client().await;
    create_plan(
        &mut admin,
        UsagePlan {
            throttle_scope: ThrottleScope::PerMethod as i32,
            ..plan(
                "slow",
                Some(throttle(0.01, 5)),
                Some(quota(100, QuotaPeriod::Day)),
            )
        },
    )
    .await;
    create_plan(
        &mut admin,
        UsagePlan {
            throttle_scope: ThrottleScope::PerPlan as i32,
            ..plan("slow-plan-wide", Some(throttle(0.01, 5)), None)
        },
    )
    .await;
    const V: &str = "state-key-0123456789abc";
    const V_WIDE: &str = "state-key-wide-0123456789";
    create_key(&mut admin, key_req("st", "st", Some(V), &["slow"])).await;
    create_key(
        &mut admin,
        key_req("st-wide", "st-wide", Some(V_WIDE), &["slow-plan-wide"]),
    )
    .await;

    for left in [4, 3, 2] {
        let r = check(&mut c, get_pets(V, 1)).await;
        assert_eq!(decision(&r), Decision::Allow, "{r:?}");
        assert_eq!(
            r.throttle.as_ref().map(|t| t.remaining),
            Some(left),
            "{r:?}"
        );
    }
    let t = today();
    let st = admin
        .get_throttle_state(GetThrottleStateRequest {
            key_id: "st".into(),
        })
        .await
        .expect("GetThrottleState")
        .into_inner();
    assert_eq!(st.key_id, "st");
    assert!(st.now.starts_with(&date_of(t)), "{st:?}");
    assert_eq!(st.buckets.len(), 1, "{st:?}");
    let b = &st.buckets[0];
    assert_eq!(b.usage_plan_id, "slow");
    assert_eq!((b.api_id.as_str(), b.stage.as_str()), ("petstore", "prod"));
    assert_eq!(b.route, "GET /pets");
    assert_eq!(b.rate_limit, 0.01);
    assert_eq!(b.burst_limit, 5);
    assert_eq!(b.remaining, 2, "{st:?}");
    assert!(
        b.full_at > st.now,
        "a bucket with tokens missing fills later: {st:?}"
    );
    assert_eq!(st.quotas.len(), 1, "{st:?}");
    let q = &st.quotas[0];
    assert_eq!(q.usage_plan_id, "slow");
    assert_eq!((q.limit, q.used, q.remaining), (100, 3, 97), "{st:?}");
    assert_eq!(q.period, QuotaPeriod::Day as i32);
    assert!(
        q.reset_at
            .starts_with(&format!("{}T00:00:00", date_of(t + 1))),
        "{st:?}"
    );

    // Per-plan scope: one bucket for the plan, no route.
    for _ in 0..2 {
        let r = check(&mut c, get_pets(V_WIDE, 1)).await;
        assert_eq!(decision(&r), Decision::Allow, "{r:?}");
    }
    let st = admin
        .get_throttle_state(GetThrottleStateRequest {
            key_id: "st-wide".into(),
        })
        .await
        .expect("GetThrottleState per plan")
        .into_inner();
    assert_eq!(st.buckets.len(), 1, "{st:?}");
    let b = &st.buckets[0];
    assert_eq!(b.usage_plan_id, "slow-plan-wide");
    assert_eq!(
        (b.api_id.as_str(), b.stage.as_str(), b.route.as_str()),
        ("", "", "")
    );
    assert_eq!(b.remaining, 3, "{st:?}");
    assert_eq!(st.quotas, vec![]);

    // A key that has made no request: full buckets are not listed, the quota is untouched.
    let st = admin
        .get_throttle_state(GetThrottleStateRequest {
            key_id: CONFIG_KEY.into(),
        })
        .await
        .expect("GetThrottleState of an idle key")
        .into_inner();
    assert_eq!(st.buckets, vec![]);
    assert_eq!(st.quotas.len(), 1, "{st:?}");
    assert_eq!(
        (
            st.quotas[0].limit,
            st.quotas[0].used,
            st.quotas[0].remaining
        ),
        (100_000, 0, 100_000)
    );

    assert_status(
        "GetThrottleState of an unknown key",
        admin
            .get_throttle_state(GetThrottleStateRequest {
                key_id: "ghost".into(),
            })
            .await,
        Code::NotFound,
        "Invalid API Key identifier specified",
    );
}

// ---------------------------------------------------------------- 9. authorizer cache

/// A stage without authorizers flushes nothing; an unknown stage is NOT_FOUND. With a token
/// authorizer cached on two instances, a flush on A removes the shared entries, A calls the
/// authorizer again at once, and B does once the flush reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_authorizer_cache() {
    let redis = RedisServer::start();
    let ep = AuthorizerEndpoint::start();
    let cfg = Config::redis(redis.url())
        .key_prefix("adm-flush")
        .closed()
        .authorizer(
            Authorizer::token("tok", &ep.url())
                .timeout(Duration::from_secs(2))
                .validation_regex("^[A-Za-z0-9:._-]+$")
                .result_ttl(Duration::from_secs(300)),
        )
        .petstore(Stage::prod().route(Route::new("GET", "/pets/{petId}").authorizer("tok")))
        .api(Api::new("plain").stage(Stage::prod().route(Route::new("GET", "/x"))))
        .to_yaml();
    let a = TollgateProcess::start(&cfg);
    let b = TollgateProcess::start(&cfg);
    let mut admin = a.admin().await;
    let (ca, cb) = (a.client().await, b.client().await);
    // `deny-secret` allows GET /pets/1 and carries no usage key, so it is shared in Redis.
    let get_pet = |token: &str| CheckRequestRequest {
        api_id: "petstore".into(),
        stage: "prod".into(),
        http_method: "GET".into(),
        path: "/pets/1".into(),
        headers: HashMap::from([("Authorization".to_string(), token.to_string())]),
        ..Default::default()
    };
    const T: &str = "deny-secret:flush-a";
    const U: &str = "deny-secret:flush-b";
    let allow = |mut c: Client, token: &'static str| {
        let req = get_pet(token);
        async move {
            let r = check(&mut c, req).await;
            assert_eq!(decision(&r), Decision::Allow, "{token}: {r:?}");
        }
    };

    let (ep, allow) = (&ep, &allow);

    // Nothing to flush.
    let r = admin
        .flush_authorizer_cache(FlushAuthorizerCacheRequest {
            api_id: "plain".into(),
            stage: "prod".into(),
        })
        .await
        .expect("flush a stage without authorizers")
        .into_inner();
    assert_eq!((r.authorizers, r.removed), (vec![], 0));
    assert_status(
        "flush an unknown stage",
        admin
            .flush_authorizer_cache(FlushAuthorizerCacheRequest {
                api_id: "petstore".into(),
                stage: "staging".into(),
            })
            .await,
        Code::NotFound,
        "not found",
    );

    // T: cached on A (local and shared), then read by B from the shared cache. U: on B only.
    allow(ca.clone(), T).await;
    allow(cb.clone(), T).await;
    allow(ca.clone(), T).await;
    assert_eq!(ep.calls_for(T), 1, "one call serves both instances");
    allow(cb.clone(), U).await;
    allow(cb.clone(), U).await;
    assert_eq!(ep.calls_for(U), 1);

    let r = admin
        .flush_authorizer_cache(FlushAuthorizerCacheRequest {
            api_id: "petstore".into(),
            stage: "prod".into(),
        })
        .await
        .expect("flush petstore/prod")
        .into_inner();
    assert_eq!(r.authorizers, vec!["tok".to_string()]);
    assert_eq!(r.removed, 2, "the shared entries of T and U");

    // A flushed its own cache before answering.
    allow(ca.clone(), T).await;
    assert_eq!(
        ep.calls_for(T),
        2,
        "A calls the authorizer again after the flush"
    );
    // B flushes on the event (and the shared entry of U is gone): U is loaded again.
    let took = eventually(
        &[&a, &b],
        "B calls the authorizer for U again",
        PROPAGATION,
        || {
            let c = cb.clone();
            async move {
                allow(c, U).await;
                ep.calls_for(U) == 2
            }
        },
    )
    .await;
    println!(
        "propagation of FlushAuthorizerCache to B: {} ms",
        took.as_millis()
    );
}

// ---------------------------------------------------------------- 10. persistence

/// The config file's plan and key are seeded into Redis (source "config"); admin records live
/// in Redis only (the key as a SHA-256, never its value); an instance started later serves
/// them from its first request; everything survives a restart of every instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_survive_restart_and_config_is_seeded() {
    let redis = RedisServer::start();
    let prefix = "adm-persist";
    let cfg = config(&redis, prefix);
    const V: &str = "persisted-admin-key-0123456789";

    let a = TollgateProcess::start(&cfg);
    let mut admin = a.admin().await;
    let created_plan = create_plan(
        &mut admin,
        plan(
            "kept",
            Some(throttle(1000.0, 1000)),
            Some(quota(1000, QuotaPeriod::Week)),
        ),
    )
    .await;
    let created_key = create_key(&mut admin, key_req("kept-key", "Kept", Some(V), &["kept"])).await;
    let plans_on_a = admin
        .list_usage_plans(ListUsagePlansRequest::default())
        .await
        .expect("ListUsagePlans on A")
        .into_inner()
        .items;

    // In Redis: both plans and both keys; values only as SHA-256.
    let mut conn = redis.client().get_connection().expect("redis connection");
    let mut hkeys = |key: String| -> BTreeSet<String> {
        redis::cmd("HKEYS")
            .arg(&key)
            .query::<Vec<String>>(&mut conn)
            .unwrap_or_else(|e| panic!("HKEYS {key}: {e}"))
            .into_iter()
            .collect()
    };
    assert_eq!(
        hkeys(format!("{prefix}:{{defs}}:plans")),
        BTreeSet::from([CONFIG_PLAN, "kept"].map(String::from))
    );
    assert_eq!(
        hkeys(format!("{prefix}:{{defs}}:keys")),
        BTreeSet::from([CONFIG_KEY, "kept-key"].map(String::from))
    );
    let mut conn = redis.client().get_connection().expect("redis connection");
    for (id, value) in [(CONFIG_KEY, CONFIG_KEY_VALUE), ("kept-key", V)] {
        let json: String = redis::cmd("HGET")
            .arg(format!("{prefix}:{{defs}}:keys"))
            .arg(id)
            .query(&mut conn)
            .expect("HGET key record");
        assert!(!json.contains(value), "the value is stored: {json}");
        let digest = hex::encode(Sha256::digest(value.as_bytes()));
        assert!(json.contains(&digest), "no SHA-256 of the value in {json}");
    }

    // B starts after the writes: it serves them from its first request.
    let b = TollgateProcess::start(&cfg);
    let mut cb = b.client().await;
    let r = check(&mut cb, get_pets(V, 1)).await;
    assert_eq!(decision(&r), Decision::Allow, "{r:?}");
    assert_eq!(
        get_key(&mut b.admin().await, "kept-key")
            .await
            .expect("B knows the admin key")
            .name,
        "Kept"
    );

    // Restart everything: a fresh instance has it all, with the same sources and creation times.
    drop(a);
    drop(b);
    let c = TollgateProcess::start(&cfg);
    let mut admin = c.admin().await;
    let plans = admin
        .list_usage_plans(ListUsagePlansRequest::default())
        .await
        .expect("ListUsagePlans after restart")
        .into_inner()
        .items;
    assert_eq!(plans, plans_on_a, "plans changed across the restart");
    assert_eq!(
        plans
            .iter()
            .map(|p| (p.id.as_str(), p.source.as_str()))
            .collect::<Vec<_>>(),
        vec![(CONFIG_PLAN, "config"), ("kept", "admin")]
    );
    assert_eq!(plans[1].created_at, created_plan.created_at);
    let keys = all_keys(&mut admin).await;
    assert_eq!(
        keys.iter()
            .map(|k| (k.id.as_str(), k.name.as_str(), k.source.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (CONFIG_KEY, CONFIG_KEY_NAME, "config"),
            ("kept-key", "Kept", "admin")
        ]
    );
    assert_eq!(keys[1].created_at, created_key.created_at);
    let mut cc = c.client().await;
    for v in [V, CONFIG_KEY_VALUE] {
        let r = check(&mut cc, get_pets(v, 1)).await;
        assert_eq!(decision(&r), Decision::Allow, "{v}: {r:?}");
    }
}

/// A store that lost everything (FLUSHALL: a restart without persistence, a failover to an
/// empty replica): the instance notices the version went back (by polling, no event is sent),
/// seeds the config file's plan and key again, and keeps serving them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_store_is_reseeded_from_the_file() {
    let redis = RedisServer::start();
    let tg = TollgateProcess::start(&config(&redis, "adm-flush"));
    let mut admin = tg.admin().await;
    let p = create_plan(&mut admin, plan("gone", Some(throttle(10.0, 10)), None)).await;
    assert_eq!(p.id, "gone");
    let mut conn = redis.client().get_connection().expect("redis connection");
    redis::cmd("FLUSHALL")
        .query::<()>(&mut conn)
        .expect("FLUSHALL");
    let took = eventually(
        &[&tg],
        "the config plan is seeded again",
        Duration::from_secs(15),
        || {
            let redis = redis.client();
            async move {
                let Ok(mut c) = redis.get_connection() else {
                    return false;
                };
                redis::cmd("HEXISTS")
                    .arg("adm-flush:{defs}:plans")
                    .arg(CONFIG_PLAN)
                    .query::<bool>(&mut c)
                    .unwrap_or(false)
            }
        },
    )
    .await;
    println!("re-seeded {took:?} after FLUSHALL");
    let mut c = tg.client().await;
    let r = check(&mut c, get_pets(CONFIG_KEY_VALUE, 1)).await;
    assert_eq!(decision(&r), Decision::Allow, "{r:?}");
    let plans = all_plan_ids(&mut admin).await;
    assert_eq!(
        plans,
        vec![CONFIG_PLAN.to_string()],
        "the admin plan was lost with the store"
    );
}

async fn all_plan_ids(admin: &mut AdminClient) -> Vec<String> {
    admin
        .list_usage_plans(ListUsagePlansRequest::default())
        .await
        .expect("ListUsagePlans")
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect()
}

/// A deleted key's quota use does not pass to a new key created with the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_key_id_starts_clean() {
    let redis = RedisServer::start();
    let tg = TollgateProcess::start(&config(&redis, "adm-recreate"));
    let mut admin = tg.admin().await;
    create_plan(
        &mut admin,
        plan("tiny", None, Some(quota(2, QuotaPeriod::Month))),
    )
    .await;
    const V1: &str = "recreate-value-one-0123456789";
    const V2: &str = "recreate-value-two-0123456789";
    create_key(&mut admin, key_req("same-id", "first", Some(V1), &["tiny"])).await;
    let mut c = tg.client().await;
    for want in [Decision::Allow, Decision::Allow, Decision::QuotaExceeded] {
        assert_eq!(decision(&check(&mut c, get_pets(V1, 1)).await), want);
    }
    admin
        .delete_api_key(DeleteApiKeyRequest {
            id: "same-id".into(),
        })
        .await
        .expect("DeleteApiKey");
    create_key(
        &mut admin,
        key_req("same-id", "second", Some(V2), &["tiny"]),
    )
    .await;
    let r = check(&mut c, get_pets(V2, 1)).await;
    assert_eq!(decision(&r), Decision::Allow, "{r:?}");
    assert_eq!(r.quota.map(|q| q.remaining), Some(1));
}

/// `metering` (with reservation bounds) and `local_lease` through the admin API: created, read
/// back, refused out of range, dropped by an update without them — and in force: a reservation of an admin-created
/// metered plan (reservation TTL 2 s) made on one instance is released by the sweep of either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metering_and_local_lease_through_the_admin_api() {
    let redis = RedisServer::start();
    let cfg = config(&redis, "meter-admin");
    let a = TollgateProcess::start(&cfg);
    let b = TollgateProcess::start(&cfg);
    let mut admin = a.admin().await;
    let metered = UsagePlan {
        local_lease: Some(LocalLease {
            units: 20,
            max_age_ms: 0,
        }),
        metering: Some(Metering {
            meter_throttle: true,
            reservation_ttl_ms: 2_000,
            min_reservation: 10,
            max_reservation: 50,
        }),
        ..plan("metered", None, Some(quota(100, QuotaPeriod::Day)))
    };
    let created = create_plan(&mut admin, metered.clone()).await;
    assert_eq!(
        created.local_lease,
        Some(LocalLease {
            units: 20,
            max_age_ms: 500
        }),
        "0 is the default max_age"
    );
    assert_eq!(created.metering, metered.metering);
    let got = admin
        .get_usage_plan(GetUsagePlanRequest {
            id: "metered".into(),
        })
        .await
        .expect("GetUsagePlan")
        .into_inner();
    assert_eq!(
        (got.local_lease, got.metering),
        (created.local_lease, created.metering)
    );

    for (what, p, needle) in [
        (
            "reservation_ttl 100 ms",
            UsagePlan {
                metering: Some(Metering {
                    meter_throttle: false,
                    reservation_ttl_ms: 100,
                    ..Default::default()
                }),
                ..plan("bad1", None, Some(quota(100, QuotaPeriod::Day)))
            },
            "metering.reservation_ttl",
        ),
        (
            "reservation_ttl 10 min",
            UsagePlan {
                metering: Some(Metering {
                    meter_throttle: false,
                    reservation_ttl_ms: 600_000,
                    ..Default::default()
                }),
                ..plan("bad2", None, Some(quota(100, QuotaPeriod::Day)))
            },
            "metering.reservation_ttl",
        ),
        (
            "min_reservation above max_reservation",
            UsagePlan {
                metering: Some(Metering {
                    min_reservation: 60,
                    max_reservation: 50,
                    ..Default::default()
                }),
                ..plan("bad4", None, Some(quota(100, QuotaPeriod::Day)))
            },
            "min_reservation (60) must not exceed max_reservation (50)",
        ),
        (
            "max_reservation over the cost limit",
            UsagePlan {
                metering: Some(Metering {
                    max_reservation: 1_000_001,
                    ..Default::default()
                }),
                ..plan("bad5", None, Some(quota(100, QuotaPeriod::Day)))
            },
            "metering.max_reservation: must be 1..=1000000",
        ),
        (
            "lease of 0 units",
            UsagePlan {
                local_lease: Some(LocalLease {
                    units: 0,
                    max_age_ms: 0,
                }),
                ..plan("bad3", None, Some(quota(100, QuotaPeriod::Day)))
            },
            "local_lease.units",
        ),
    ] {
        let r = admin
            .create_usage_plan(CreateUsagePlanRequest {
                usage_plan: Some(p),
            })
            .await;
        assert_status(what, r, Code::InvalidArgument, needle);
    }

    // In force on both instances: a reservation made through `a`, never reported, is given
    // back within the TTL plus a sweep.
    let value = "meter-admin-key-0123456789abcdef";
    create_key(
        &mut admin,
        key_req("mk", "Metered", Some(value), &["metered"]),
    )
    .await;
    let mut ca = a.client().await;
    // Reserving 3 on a plan with min_reservation 10 reserves 10.
    let reserve = CheckRequestRequest {
        request_id: "r-1".into(),
        ..get_pets(value, 3)
    };
    let left = |r: &CheckRequestResponse| r.quota.as_ref().map(|q| q.remaining);
    eventually(&[&a], "the new key is admitted", PROPAGATION, || {
        let (mut ca, value) = (ca.clone(), value.to_string());
        async move {
            let dry = CheckRequestRequest {
                dry_run: true,
                ..get_pets(&value, 1)
            };
            decision(&check(&mut ca, dry).await) == Decision::Allow
        }
    })
    .await;
    let r = check(&mut ca, reserve).await;
    assert_eq!(decision(&r), Decision::Allow, "{r:?}");
    assert_eq!(left(&r), Some(90), "raised to the plan's min_reservation");
    let cb = b.client().await;
    eventually(
        &[&a, &b],
        "the reservation is released",
        Duration::from_secs(15),
        || {
            let mut cb = cb.clone();
            async move {
                let dry = CheckRequestRequest {
                    dry_run: true,
                    ..get_pets(value, 1)
                };
                left(&check(&mut cb, dry).await) == Some(99)
            }
        },
    )
    .await;
    let r = check(&mut ca, get_pets(value, 1)).await;
    assert_eq!(left(&r), Some(99));

    // An update without them drops both (UpdateUsagePlan replaces the whole plan).
    let updated = admin
        .update_usage_plan(UpdateUsagePlanRequest {
            usage_plan: Some(plan("metered", None, Some(quota(100, QuotaPeriod::Day)))),
        })
        .await
        .expect("UpdateUsagePlan")
        .into_inner();
    assert_eq!((updated.local_lease, updated.metering), (None, None));
}

/// Scoped tokens (`<scope> <token>` lines of the tokens file) against a read RPC, a usage RPC
/// and a definition-changing RPC: out of scope is PERMISSION_DENIED naming the scope needed, an
/// unknown token UNAUTHENTICATED; `GetCallerInfo` and `tollgate whoami` show what a token may
/// do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_are_enforced() {
    const READ: &str = "scoped-read-token-0123456789";
    const USAGE: &str = "scoped-usage-token-0123456789";
    const FULL: &str = "scoped-full-token-0123456789";
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("admin-tokens");
    std::fs::write(
        &file,
        format!("# dashboards\nread {READ}\nusage\t{USAGE}\n{FULL}\n"),
    )
    .expect("write the tokens file");
    let mut cfg = config_with(&redis, "scoped");
    cfg.server.admin_tokens_file = Some(file.clone());
    let tg = TollgateProcess::start(&cfg.to_yaml());

    // (what, scope needed) for each token: Ok, or the status code.
    for (token, read_ok, usage_ok, admin_ok) in [
        (READ, true, false, false),
        (USAGE, true, true, false),
        (FULL, true, true, true),
        (ADMIN_TOKEN, true, true, true),
    ] {
        let mut c = tg.admin_with_token(Some(token)).await;
        let read = c
            .get_usage(GetUsageRequest {
                usage_plan_id: CONFIG_PLAN.into(),
                start_date: "2024-01-01".into(),
                end_date: "2024-01-02".into(),
                ..Default::default()
            })
            .await;
        let usage = c
            .update_usage(UpdateUsageRequest {
                usage_plan_id: CONFIG_PLAN.into(),
                key_id: CONFIG_KEY.into(),
                remaining: 10,
            })
            .await;
        let admin = c
            .create_usage_plan(CreateUsagePlanRequest {
                usage_plan: Some(UsagePlan {
                    id: format!("plan-{}", &token[..10]),
                    name: "scoped".into(),
                    throttle: Some(throttle(10.0, 10)),
                    ..Default::default()
                }),
            })
            .await;
        for (what, r, ok, needed) in [
            ("GetUsage", read.map(|_| ()), read_ok, "read"),
            ("UpdateUsage", usage.map(|_| ()), usage_ok, "usage"),
            ("CreateUsagePlan", admin.map(|_| ()), admin_ok, "admin"),
        ] {
            match (r, ok) {
                (Ok(()), true) => {}
                (Err(s), false) => {
                    assert_eq!(s.code(), Code::PermissionDenied, "{token} {what}: {s:?}");
                    assert!(
                        s.message()
                            .contains(&format!("{what} needs an admin token with scope {needed}")),
                        "{token} {what}: {:?}",
                        s.message()
                    );
                }
                (r, ok) => panic!("{token} {what}: expected ok={ok}, got {r:?}"),
            }
        }
    }
    let mut unknown = tg.admin_with_token(Some("scoped-nobody-0123456789")).await;
    let e = unknown
        .get_caller_info(GetCallerInfoRequest {})
        .await
        .expect_err("unknown token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    let info = tg
        .admin_with_token(Some(READ))
        .await
        .get_caller_info(GetCallerInfoRequest {})
        .await
        .expect("a read token may ask")
        .into_inner();
    assert_eq!(info.scope, AdminScope::Read as i32);
    assert!(info.allowed_rpcs.contains(&"GetUsage".to_string()));
    assert!(!info.allowed_rpcs.contains(&"UpdateUsage".to_string()));
    let digest = hex::encode(Sha256::digest(READ.as_bytes()));
    assert_eq!(info.token_fingerprint, digest[..12]);

    // The CLI: `tollgate whoami`, as a table and as JSON.
    let run = |token: &str, json: bool| {
        let mut args = vec!["whoami", "--admin-addr", &tg.admin_url()]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        if json {
            args.extend(["-o".into(), "json".into()]);
        }
        let mut cmd = tollgate_tests::tollgate::tollgate_command(&args);
        cmd.env("TOLLGATE_ADMIN_TOKEN", token);
        let out = cmd.output().expect("run tollgate whoami");
        assert!(
            out.status.success(),
            "whoami: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let json: serde_json::Value =
        serde_json::from_str(&run(USAGE, true)).expect("whoami -o json is JSON");
    assert_eq!(json["scope"], "usage");
    let rpcs: Vec<&str> = json["allowed_rpcs"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(rpcs.contains(&"UpdateUsage") && rpcs.contains(&"FlushAuthorizerCache"));
    assert!(!rpcs.contains(&"CreateApiKey"), "{rpcs:?}");
    let table = run(READ, false);
    assert!(table.contains("scope") && table.contains("read"), "{table}");
    assert!(
        !table.contains(READ),
        "whoami never shows the token: {table}"
    );
}

/// A tokens file with a line that is neither a token nor `<scope> <token>` stops the server
/// before it serves, naming the line (not its text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tokens_file_line_is_a_config_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("admin-tokens");
    std::fs::write(
        &file,
        "good-token-0123456789\nwrite secret-token-0123456789\n",
    )
    .expect("write");
    let cfg = dir.path().join("tollgate.yaml");
    std::fs::write(&cfg, memory_config(Some(&file))).expect("write config");
    let out = tollgate_tests::tollgate::run_tollgate(
        ["serve", "--config", cfg.to_str().expect("utf-8 path")],
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.admin_tokens_file: line 2"), "{err}");
    assert!(!err.contains("secret-token"), "{err}");
}

/// `GetUsage` is bounded by keys × days before anything is read, and an import by bytes and
/// rows before it is parsed: `INVALID_ARGUMENT` naming the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_import_are_bounded_before_the_work() {
    let tg = TollgateProcess::start(&memory_config(None));
    let mut c = tg.admin().await;
    c.create_usage_plan(CreateUsagePlanRequest {
        usage_plan: Some(UsagePlan {
            id: "bounded".into(),
            name: "bounded".into(),
            throttle: Some(throttle(10.0, 10)),
            ..Default::default()
        }),
    })
    .await
    .expect("plan");
    let usage = |page_size: u32, end: &str| GetUsageRequest {
        usage_plan_id: "bounded".into(),
        start_date: "2024-01-01".into(),
        end_date: end.into(),
        page_size,
        ..Default::default()
    };
    assert_status(
        "500 keys x 366 days",
        c.get_usage(usage(500, "2024-12-31")).await,
        Code::InvalidArgument,
        "at most 36600 per call (MAX_USAGE_KEY_DAYS)",
    );
    c.get_usage(usage(100, "2024-12-31"))
        .await
        .expect("the default page over a year fits");
    c.get_usage(usage(0, "2024-12-31"))
        .await
        .expect("no page_size: as many keys as fit");

    let big = format!("Key\n{}", "x".repeat(4 * 1024 * 1024));
    assert_status(
        "a CSV over 4 MiB",
        c.import_api_keys(ImportApiKeysRequest {
            csv: big,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "at most 4194304 bytes per import (MAX_IMPORT_BYTES)",
    );
    let mut rows = String::from("Key\n");
    for i in 0..10_001 {
        rows.push_str(&format!("row-value-{i:020}\n"));
    }
    assert_status(
        "10,001 rows",
        c.import_api_keys(ImportApiKeysRequest {
            csv: rows,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "at most 10000 rows per import (MAX_IMPORT_ROWS)",
    );
}

/// Every admin write is visible to the next read on the same instance, also right after
/// start, while the start-up load and the follower's first load are still reading and seeding
/// (a load that read the store just before a write must not reinstall what it read over the
/// write's result).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_write_is_visible_to_the_next_read() {
    let redis = RedisServer::start();
    // Enough file keys that seeding and loading take a while: the window the race needs.
    let file_keys: Vec<Key> = (0..1500)
        .map(|i| {
            let (id, value) = (format!("file-{i}"), format!("file-key-value-{i:020}"));
            Key::new(&id, &value, CONFIG_PLAN).disabled()
        })
        .collect();
    for round in 0..8 {
        let mut cfg = config_with(&redis, &format!("adm-visible-{round}"));
        cfg.api_keys.extend(file_keys.iter().cloned());
        let tg = TollgateProcess::start(&cfg.to_yaml());
        let mut admin = tg.admin().await;
        for i in 0..5 {
            let id = format!("visible-{i}");
            create_plan(&mut admin, plan(&id, Some(throttle(10.0, 10)), None)).await;
            admin
                .get_usage_plan(GetUsagePlanRequest { id: id.clone() })
                .await
                .unwrap_or_else(|s| {
                    panic!("round {round}: the plan {id} just created is gone: {s:?}")
                });
        }
        let logs = tg.stderr_text();
        assert!(
            !logs.contains("went back in time"),
            "a false alarm:\n{logs}"
        );
    }
}
/// Instances that start at the same moment on an empty store all seed the config file's plans
/// and keys; only one seed lands, and nobody reports the others' seed as the store going back.
#[test]
fn instances_starting_together_on_an_empty_store_raise_no_alarm() {
    let redis = RedisServer::start();
    for round in 0..3 {
        let cfg = config(&redis, &format!("adm-together-{round}"));
        let procs: Vec<TollgateProcess> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|_| s.spawn(|| TollgateProcess::start(&cfg)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Let every follower see the others' seeds.
        std::thread::sleep(Duration::from_millis(500));
        for (i, p) in procs.iter().enumerate() {
            let logs = p.stderr_text();
            assert!(
                !logs.contains("went back in time"),
                "round {round}, instance {i}: a false alarm:\n{logs}"
            );
        }
    }
}
