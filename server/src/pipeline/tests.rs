//! The pipeline against the memory store and a fake clock: AWS order, key checks, bucket
//! selection, headers, failure modes (with a Redis URL nobody listens on — a real refusal).
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::*;
use crate::catalog::Catalog;
use crate::clock::FakeClock;
use crate::config;
use crate::store::UsageStore;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;

pub(crate) const NOON: u64 =
    1_795_694_400_000_000 + 43_200_000_000 - 1_795_694_400_000_000 % 86_400_000_000;

const CONFIG: &str = r#"
apis:
  - id: shop
    stages:
      - name: prod
        throttle: { rate_limit: 1000, burst_limit: 3 }
        routes:
          - { method: GET, path: "/items", api_key_required: true }
          - { method: POST, path: "/items", api_key_required: true }
          - { method: GET, path: "/items/{id}", api_key_required: true }
          - { method: ANY, path: "/open/{proxy+}" }
          - { method: GET, path: "/slow", throttle: { rate_limit: 1, burst_limit: 1 } }
          - { method: GET, path: "/secure", authorizer: auth }
      - name: keyed
        api_key_source: AUTHORIZER
        routes:
          - { method: GET, path: "/", api_key_required: true }
authorizers:
  - { name: auth, type: token, identity_source: "header:Authorization", endpoint: "http://127.0.0.1:1/x" }
usage_plans:
  - id: basic
    throttle: { rate_limit: 1, burst_limit: 2 }
    quota: { limit: 5, period: DAY, offset: 1 }
    created_at: "2026-11-26"
    api_stages:
      - api_id: shop
        stage: prod
        method_throttle: { "/items/POST": { rate_limit: 1, burst_limit: 1 } }
  - id: pooled
    throttle: { rate_limit: 1, burst_limit: 2 }
    throttle_scope: per_plan
    failure_mode: closed
    api_stages: [{ api_id: shop, stage: keyed }]
api_keys:
  - { id: k1, value: "key-one-0123456789abcdef", enabled: true, usage_plans: [basic] }
  - { id: k2, value: "key-two-0123456789abcdef", enabled: true, usage_plans: [basic] }
  - { id: off, value: "key-off-0123456789abcdef", enabled: false, usage_plans: [basic] }
  - { id: lonely, value: "key-lonely-0123456789abc", enabled: true }
"#;

/// A checker over `text`'s catalog, on `store` (default: the memory store), with a fake clock
/// at noon UTC (also used by the Envoy handler tests).
pub(crate) struct Fixture {
    pub(crate) checker: Checker,
    pub(crate) clock: FakeClock,
}

pub(crate) fn fixture_with(text: &str, store: Option<AnyStore>) -> Fixture {
    let cfg = config::parse(text, &|_| None).expect("valid test config");
    let clock = FakeClock::new(NOON);
    let store =
        store.unwrap_or_else(|| AnyStore::Memory(MemoryStore::new(Arc::new(clock.clone()))));
    let clock_dyn: Arc<dyn crate::clock::Clock> = Arc::new(clock.clone());
    let auth = crate::auth::Authorizers::empty(
        crate::auth::AuthCache::new(store.clone(), "tg", Duration::from_millis(50)),
        clock_dyn,
    );
    let catalog = Arc::new(ArcSwap::from_pointee(Catalog::build(
        &cfg,
        &crate::defs::test_defs(&cfg),
        Arc::new(auth),
    )));
    Fixture {
        checker: Checker::new(catalog, store, Duration::from_millis(200)),
        clock,
    }
}

fn fixture() -> Fixture {
    fixture_with(CONFIG, None)
}

fn req<'a>(method: &'a str, path: &'a str, key: &'a str) -> CheckInput<'a> {
    CheckInput {
        api_id: "shop",
        stage: "prod",
        method,
        path,
        api_key: key,
        cost: 1,
        ..Default::default()
    }
}

const K1: &str = "key-one-0123456789abcdef";
const K2: &str = "key-two-0123456789abcdef";

impl Fixture {
    async fn check(&self, input: CheckInput<'_>) -> Answer {
        self.checker.check(&input).await.expect("answered")
    }
}

fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
    a.headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn unknown_api_and_stage_are_not_found() {
    let f = fixture();
    let e = f
        .checker
        .check(&CheckInput {
            api_id: "nope",
            ..req("GET", "/items", K1)
        })
        .await;
    assert!(matches!(e, Err(CheckError::NotFound(m)) if m.contains("api \"nope\"")));
    let e = f
        .checker
        .check(&CheckInput {
            stage: "dev",
            ..req("GET", "/items", K1)
        })
        .await;
    assert!(matches!(e, Err(CheckError::NotFound(m)) if m.contains("stage \"dev\"")));
}

#[tokio::test]
async fn unknown_route_is_missing_authentication_token() {
    let f = fixture();
    let a = f.check(req("DELETE", "/items", K1)).await;
    assert_eq!(
        (a.decision, a.http_status, a.message),
        (Decision::Forbidden, 403, "Missing Authentication Token")
    );
    assert_eq!(
        header(&a, "x-amzn-errortype"),
        Some("MissingAuthenticationTokenException")
    );
    // The gateway may name the template itself.
    let a = f
        .check(CheckInput {
            resource_path: "/items/{id}",
            ..req("GET", "/items/9", K1)
        })
        .await;
    assert_eq!(a.decision, Decision::Allow);
    assert_eq!(a.resource_path, "/items/{id}");
}

#[tokio::test]
async fn key_must_be_present_known_enabled_and_in_a_plan() {
    let f = fixture();
    for key in [
        "",
        "no-such-key-0123456789",
        "key-off-0123456789abcdef",
        "key-lonely-0123456789abc",
    ] {
        let a = f.check(req("GET", "/items", key)).await;
        assert_eq!(
            (a.decision, a.http_status, a.message),
            (Decision::Forbidden, 403, "Forbidden"),
            "key {key:?}"
        );
        assert!(a.api_key_id.is_none());
    }
    // Every key's digest is in the catalog: unknown, disabled and planless keys never reach
    // the store (the negative cache is the catalog itself).
    assert_eq!(f.checker.store_calls(), 0);
    let a = f.check(req("GET", "/items", K1)).await;
    assert_eq!(a.decision, Decision::Allow);
    assert_eq!(f.checker.store_calls(), 1);
    assert_eq!(
        (a.api_key_id.as_deref(), a.plan_id.as_deref()),
        (Some("k1"), Some("basic"))
    );
}

#[tokio::test]
async fn per_method_buckets_and_method_override() {
    let f = fixture_with(
        &CONFIG.replace("burst_limit: 3 }", "burst_limit: 100 }"),
        None,
    );
    // Plan burst 2 per method: GET /items and GET /items/{id} have separate buckets.
    for _ in 0..2 {
        assert_eq!(
            f.check(req("GET", "/items", K1)).await.decision,
            Decision::Allow
        );
    }
    let a = f.check(req("GET", "/items", K1)).await;
    assert_eq!(
        (a.decision, a.http_status, a.message),
        (Decision::Throttled, 429, "Too Many Requests")
    );
    assert_eq!(a.retry_after_us, Some(1_000_000));
    assert_eq!(header(&a, "retry-after"), Some("1"));
    assert_eq!(
        f.check(req("GET", "/items/1", K1)).await.decision,
        Decision::Allow
    );
    // POST /items has a method override of burst 1.
    assert_eq!(
        f.check(req("POST", "/items", K1)).await.decision,
        Decision::Allow
    );
    assert_eq!(
        f.check(req("POST", "/items", K1)).await.decision,
        Decision::Throttled
    );
    // Another key has its own buckets.
    assert_eq!(
        f.check(req("POST", "/items", K2)).await.decision,
        Decision::Allow
    );
}

#[tokio::test]
async fn quota_with_offset_in_initial_period_and_headers() {
    let f = fixture();
    // limit 5, offset 1, created today: 4 today. Space requests 1 s apart to stay under the bucket.
    for i in 0..4 {
        let a = f.check(req("GET", "/items", K1)).await;
        assert_eq!(a.decision, Decision::Allow, "request {i}");
        let q = a.quota.expect("quota");
        assert_eq!((q.limit, q.remaining), (4, 3 - i));
        f.clock.advance(1_000_000);
    }
    let a = f.check(req("GET", "/items", K1)).await;
    assert_eq!(
        (a.decision, a.http_status, a.message),
        (Decision::QuotaExceeded, 429, "Limit Exceeded")
    );
    assert_eq!(a.error_type, "LimitExceededException");
    let reset = a.quota.expect("quota").reset_at_us;
    assert_eq!(reset, NOON + 43_200_000_000, "midnight UTC");
    assert_eq!(
        a.retry_after_us,
        Some(reset - f.clock.now_micros_for_test())
    );
    assert_eq!(
        header(&a, "ratelimit-policy"),
        Some("\"burst\";q=2;w=2, \"daily\";q=4;w=86400")
    );
    let state = header(&a, "ratelimit").expect("RateLimit");
    assert!(
        state.starts_with("\"burst\";r=2;t=0, \"daily\";r=0;t=43196"),
        "{state}"
    );
    // Next day: the full limit.
    f.clock.advance(43_200_000_000);
    let a = f.check(req("GET", "/items", K1)).await;
    assert_eq!(a.quota.map(|q| (q.limit, q.remaining)), Some((5, 4)));
}

impl FakeClock {
    fn now_micros_for_test(&self) -> u64 {
        use crate::clock::Clock;
        self.now_micros()
    }
}

#[tokio::test]
async fn stage_limits_are_shared_by_all_clients() {
    let f = fixture();
    // Stage default burst 3 across keys (K1 and K2 each have 2 in their own bucket).
    assert_eq!(
        f.check(req("GET", "/items", K1)).await.decision,
        Decision::Allow
    );
    assert_eq!(
        f.check(req("GET", "/items", K1)).await.decision,
        Decision::Allow
    );
    assert_eq!(
        f.check(req("GET", "/items", K2)).await.decision,
        Decision::Allow
    );
    let a = f.check(req("GET", "/items", K2)).await;
    assert_eq!(
        a.decision,
        Decision::Throttled,
        "stage bucket empty although K2 has a token"
    );
    // A keyless route with its own stage-wide limit replaces the default.
    assert_eq!(
        f.check(req("GET", "/slow", "")).await.decision,
        Decision::Allow
    );
    assert_eq!(
        f.check(req("GET", "/slow", "")).await.decision,
        Decision::Throttled
    );
    // A keyless route without a limit of its own uses the stage default (now empty).
    assert_eq!(
        f.check(req("PUT", "/open/a/b", "")).await.decision,
        Decision::Throttled
    );
}

#[tokio::test]
async fn cost_idempotency_and_dry_run() {
    let f = fixture();
    let dry = f
        .check(CheckInput {
            dry_run: true,
            ..req("GET", "/items/1", K1)
        })
        .await;
    assert_eq!(dry.quota.map(|q| q.remaining), Some(3));
    let first = f
        .check(CheckInput {
            request_id: "abc",
            ..req("GET", "/items/1", K1)
        })
        .await;
    assert!(!first.replayed);
    let again = f
        .check(CheckInput {
            request_id: "abc",
            ..req("GET", "/items/1", K1)
        })
        .await;
    assert!(again.replayed);
    assert_eq!(again.quota, first.quota);
    let big = f
        .check(CheckInput {
            cost: 3,
            ..req("GET", "/items", K1)
        })
        .await;
    assert_eq!(big.decision, Decision::Throttled, "cost 3 > burst 2");
    assert_eq!(big.retry_after_us, None, "never passes");
    assert_eq!(header(&big, "retry-after"), None);
}

#[tokio::test]
async fn routes_without_their_authorizer_fail_closed() {
    // The test catalog has no authorizers built: a route naming one must not let requests in.
    let f = fixture();
    let a = f.check(req("GET", "/secure", "")).await;
    assert_eq!(
        (a.decision, a.http_status),
        (Decision::AuthorizerError, 500)
    );
    // api_key_source AUTHORIZER without an authorizer result: no key, 403.
    let a = f
        .check(CheckInput {
            stage: "keyed",
            ..req("GET", "/", K1)
        })
        .await;
    assert_eq!(a.decision, Decision::Forbidden);
}

#[tokio::test]
async fn failure_modes_when_the_store_is_unreachable() {
    // Nothing listens on port 1: connections are refused, as with a crashed Redis.
    let dead = RedisStore::new("redis://127.0.0.1:1/", 2, "tg").expect("pool");
    let f = fixture_with(CONFIG, Some(AnyStore::Redis(dead.clone())));
    let a = f.check(req("GET", "/items", K1)).await;
    assert_eq!(a.decision, Decision::Allow);
    assert!(a.degraded);
    let closed = CONFIG.replace("apis:", "failure_mode: closed\napis:");
    let f = fixture_with(&closed, Some(AnyStore::Redis(dead)));
    let e = f.checker.check(&req("GET", "/items", K1)).await;
    assert!(matches!(e, Err(CheckError::Unavailable(_))), "{e:?}");
}

#[tokio::test]
async fn plan_buckets_are_per_api_stage() {
    // One plan on two stages of one API; prod has a method throttle of burst 1 for GET /items.
    let text = r#"
apis:
  - id: shop
    stages:
      - name: prod
        routes: [{ method: GET, path: "/items", api_key_required: true }]
      - name: beta
        routes: [{ method: GET, path: "/items", api_key_required: true }]
usage_plans:
  - id: p
    throttle: { rate_limit: 1, burst_limit: 2 }
    api_stages:
      - { api_id: shop, stage: prod, method_throttle: { "/items/GET": { rate_limit: 1, burst_limit: 1 } } }
      - { api_id: shop, stage: beta }
api_keys:
  - { id: k, value: "key-one-0123456789abcdef", enabled: true, usage_plans: [p] }
"#;
    let f = fixture_with(text, None);
    let beta = || CheckInput {
        stage: "beta",
        ..req("GET", "/items", K1)
    };
    assert_eq!(f.check(beta()).await.decision, Decision::Allow);
    // prod's bucket is its own: beta's request did not use it.
    assert_eq!(
        f.check(req("GET", "/items", K1)).await.decision,
        Decision::Allow
    );
    assert_eq!(
        f.check(req("GET", "/items", K1)).await.decision,
        Decision::Throttled
    );
    assert_eq!(
        f.check(beta()).await.decision,
        Decision::Allow,
        "beta has burst 2"
    );
}

fn cached_fixture() -> Fixture {
    let f = fixture();
    let clock: Arc<dyn crate::clock::Clock> = Arc::new(f.clock.clone());
    Fixture {
        checker: f.checker.with_over_limit_cache(1000, clock),
        clock: f.clock,
    }
}

#[tokio::test]
async fn the_over_limit_cache_answers_throttled_keys_without_the_store() {
    let f = cached_fixture();
    // basic: burst 2 at 1 per second.
    for _ in 0..2 {
        assert_eq!(
            f.check(req("GET", "/items", K1)).await.decision,
            Decision::Allow
        );
    }
    let first = f.check(req("GET", "/items", K1)).await;
    assert_eq!(first.decision, Decision::Throttled);
    assert_eq!(first.retry_after_us, Some(1_000_000));
    let calls = f.checker.store_calls();
    assert_eq!(calls, 3);
    f.clock.advance(400_000);
    for _ in 0..100 {
        let a = f.check(req("GET", "/items", K1)).await;
        assert_eq!(a.decision, Decision::Throttled);
        assert_eq!(a.retry_after_us, Some(600_000), "exact wait from the cache");
        assert_eq!(header(&a, "retry-after"), Some("1"));
        assert_eq!(a.api_key_id.as_deref(), Some("k1"));
    }
    assert_eq!(
        f.checker.store_calls(),
        calls,
        "no store call while throttled"
    );
    // Another key, and another method of the same key (its own bucket), still go to the store.
    assert_eq!(
        f.check(req("GET", "/items", K2)).await.decision,
        Decision::Allow
    );
    assert_eq!(
        f.check(req("GET", "/items/3", K1)).await.decision,
        Decision::Allow
    );
    assert_eq!(f.checker.store_calls(), calls + 2);
    // At T exactly the store decides again, and admits.
    f.clock.advance(600_000);
    assert_eq!(
        f.check(req("GET", "/items", K1)).await.decision,
        Decision::Allow
    );
    assert_eq!(f.checker.store_calls(), calls + 3);
    // Idempotent requests always ask the store (a replay may be an allow).
    let _ = f.check(req("GET", "/items", K1)).await;
    let before = f.checker.store_calls();
    let mut r = req("GET", "/items", K1);
    r.request_id = "rid-1";
    let _ = f.check(r).await;
    assert_eq!(f.checker.store_calls(), before + 1);
}

/// Uses up K1's quota (4 left today: limit 5, offset 1), 1 s apart to stay under its bucket,
/// and sees the next check refused.
async fn use_up_k1_quota(checker: &Checker, clock: &FakeClock) {
    for _ in 0..4 {
        let a = checker
            .check(&req("GET", "/items", K1))
            .await
            .expect("answer");
        assert_eq!(a.decision, Decision::Allow);
        clock.advance(1_000_000);
    }
    let a = checker
        .check(&req("GET", "/items", K1))
        .await
        .expect("answer");
    assert_eq!(a.decision, Decision::QuotaExceeded);
}

/// The instance that changes an owner's usage (the admin rules call `invalidate_owner` after
/// UpdateUsage) answers from the new usage at once, with no event from the store.
#[tokio::test]
async fn invalidate_owner_drops_a_cached_denial_without_the_event() {
    let f = cached_fixture();
    let checker = f.checker; // no invalidation follower: events change nothing here
    use_up_k1_quota(&checker, &f.clock).await;
    let cat = checker.catalog();
    let plan = cat.plans.get("basic").expect("plan");
    let owner = cat
        .key_by_digest(&crate::catalog::key_digest(K1))
        .expect("key")
        .hash
        .clone();
    checker
        .store()
        .quota_set_remaining(&owner, &plan.quota_op().expect("quota"), 10)
        .await
        .expect("set");
    f.clock.advance(1_000_000);
    let a = checker
        .check(&req("GET", "/items", K1))
        .await
        .expect("answer");
    assert_eq!(
        a.decision,
        Decision::QuotaExceeded,
        "without the event or the call, the cached denial stands"
    );
    checker.invalidate_owner(&owner);
    let a = checker
        .check(&req("GET", "/items", K1))
        .await
        .expect("answer");
    assert_eq!(a.decision, Decision::Allow, "the store's new remaining");
}

#[tokio::test]
async fn update_usage_invalidates_a_cached_used_up_quota() {
    let f = cached_fixture();
    let checker = Arc::new(f.checker);
    checker.spawn_invalidation();
    // Let the invalidation task subscribe.
    tokio::task::yield_now().await;
    use_up_k1_quota(&checker, &f.clock).await;
    let calls = checker.store_calls();
    f.clock.advance(1_000_000);
    let a = checker
        .check(&req("GET", "/items", K1))
        .await
        .expect("answer");
    assert_eq!(a.decision, Decision::QuotaExceeded);
    assert_eq!(a.quota.map(|q| q.remaining), Some(0));
    assert_eq!(checker.store_calls(), calls, "answered from the cache");
    // UpdateUsage (what the admin API calls) gives 10 more: every instance forgets the denial.
    let cat = checker.catalog();
    let plan = cat.plans.get("basic").expect("plan");
    let owner = checker
        .catalog()
        .key_by_digest(&crate::catalog::key_digest(K1))
        .expect("key")
        .hash
        .clone();
    checker
        .store()
        .quota_set_remaining(&owner, &plan.quota_op().expect("quota"), 10)
        .await
        .expect("set");
    // Let the invalidation task see the event.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let a = checker
        .check(&req("GET", "/items", K1))
        .await
        .expect("answer");
    assert_eq!(a.decision, Decision::Allow, "{a:?}");
    assert_eq!(checker.store_calls(), calls + 1);
}

/// Every denial carries its reason; ALLOW none. A reason names the key by id, never by value.
#[tokio::test]
async fn denials_say_why() {
    use crate::reason::ReasonCode as C;
    let f = fixture_with(
        &CONFIG.replace("burst_limit: 3 }", "burst_limit: 100 }"),
        None,
    );
    let why = |a: &Answer| {
        let r = a.reason.clone().expect("a denial has a reason");
        for value in [
            K1,
            K2,
            "key-off-0123456789abcdef",
            "key-lonely-0123456789abc",
        ] {
            assert!(!r.detail.contains(value), "{r}");
        }
        (r.code, r.detail)
    };
    let a = f.check(req("GET", "/items", K1)).await;
    assert_eq!((a.decision, a.reason), (Decision::Allow, None));

    let (code, detail) = why(&f.check(req("DELETE", "/items", K1)).await);
    assert_eq!(code, C::RouteNotFound);
    assert!(
        detail.contains("DELETE") && detail.contains("/items"),
        "{detail}"
    );
    let cases = [
        ("", C::ApiKeyMissing, "x-api-key"),
        ("no-such-key-0123456789", C::ApiKeyUnknown, "x-api-key"),
        ("key-off-0123456789abcdef", C::ApiKeyDisabled, "\"off\""),
        ("key-lonely-0123456789abc", C::PlanNotOnStage, "\"lonely\""),
    ];
    for (key, want, named) in cases {
        let (code, detail) = why(&f.check(req("GET", "/items", key)).await);
        assert_eq!(code, want, "{key:?}: {detail}");
        assert!(detail.contains(named), "{key:?}: {detail}");
    }
    let (code, detail) = why(&f
        .check(CheckInput {
            stage: "keyed",
            ..req("GET", "/", K1)
        })
        .await);
    assert_eq!(code, C::ApiKeyMissing);
    assert!(detail.contains("usageIdentifierKey"), "{detail}");
    let (code, detail) = why(&f.check(req("GET", "/secure", "")).await);
    assert_eq!(code, C::AuthorizerFailed);
    assert!(detail.contains("\"auth\""), "{detail}");

    // Buckets: the plan's (burst 2; K1 spent one above), the plan's method throttle, the
    // route's, a cost above the burst.
    f.check(req("GET", "/items", K1)).await;
    let (code, detail) = why(&f.check(req("GET", "/items", K1)).await);
    assert_eq!(code, C::ThrottledPlan, "{detail}");
    assert!(
        detail.contains("\"basic\"") && detail.contains("\"k1\""),
        "{detail}"
    );
    f.check(req("POST", "/items", K1)).await;
    let (code, detail) = why(&f.check(req("POST", "/items", K1)).await);
    assert_eq!(code, C::ThrottledMethod, "{detail}");
    assert!(detail.contains("POST /items"), "{detail}");
    f.check(req("GET", "/slow", "")).await;
    let (code, detail) = why(&f.check(req("GET", "/slow", "")).await);
    assert_eq!(code, C::ThrottledRoute, "{detail}");
    assert!(detail.contains("GET /slow"), "{detail}");
    let (code, detail) = why(&f
        .check(CheckInput {
            cost: 3,
            ..req("GET", "/items/1", K2)
        })
        .await);
    assert_eq!(code, C::CostAboveBurst, "{detail}");
    assert!(
        detail.contains("cost 3") && detail.contains("burst 2"),
        "{detail}"
    );
}

#[tokio::test]
async fn stage_and_quota_denials_say_why() {
    use crate::reason::ReasonCode as C;
    let f = fixture();
    // Stage burst 3 across keys.
    f.check(req("GET", "/items", K1)).await;
    f.check(req("GET", "/items", K1)).await;
    f.check(req("GET", "/items", K2)).await;
    let a = f.check(req("GET", "/items", K2)).await;
    let r = a.reason.expect("reason");
    assert_eq!(r.code, C::ThrottledStage, "{r}");
    assert!(r.detail.contains("\"prod\""), "{r}");
    // Quota: limit 5, offset 1 today (K1 used 2).
    f.clock.advance(10_000_000);
    for _ in 0..2 {
        assert_eq!(
            f.check(req("GET", "/items", K1)).await.decision,
            Decision::Allow
        );
        f.clock.advance(1_000_000);
    }
    let a = f
        .check(CheckInput {
            request_id: "q-1",
            ..req("GET", "/items", K1)
        })
        .await;
    let r = a.reason.expect("reason");
    assert_eq!(r.code, C::QuotaExceeded, "{r}");
    assert!(
        r.detail.contains("\"basic\"") && r.detail.contains("daily quota of 4"),
        "{r}"
    );
    assert!(!r.detail.contains("stored answer"), "{r}");
    // Replayed from the idempotency record: the same code, said to be the stored answer.
    let again = f
        .check(CheckInput {
            request_id: "q-1",
            ..req("GET", "/items", K1)
        })
        .await;
    assert!(again.replayed);
    let r = again.reason.expect("reason");
    assert_eq!(r.code, C::QuotaExceeded, "{r}");
    assert!(r.detail.contains("stored answer"), "{r}");
}
