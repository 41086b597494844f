//! End-to-end authorization: the real `tollgate` binary against a real `redis-server` and a real
//! HTTP authorizer endpoint ([`AuthorizerEndpoint`]), through `CheckService/CheckRequest` and
//! `AuthorizationService/Authorize`.
//!
//! Every test starts its own `redis-server` and authorizer endpoint on free ports and uses its
//! own key prefix, so the tests run in parallel. Waits for asynchronous effects poll with a
//! deadline; the one deliberate sleep is the 1 s `result_ttl` expiry.
//!
//! The endpoint answers by a *behaviour token* (see `tollgate_tests::authorizer`): the part of
//! the token before the first `:` picks the answer, the rest makes it a new identity, so each
//! test can start from a cold cache with e.g. `allow-pets:shared-1`.
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::task::JoinSet;
use tollgate_proto::v1::authorization_service_client::AuthorizationServiceClient;
use tollgate_proto::v1::check_service_client::CheckServiceClient;
use tollgate_proto::v1::{
    AuthorizeRequest, AuthorizeResponse, CacheLevel, CheckRequestRequest, CheckRequestResponse,
    Decision,
};
use tollgate_server::clock::{Clock, SystemClock};
use tollgate_tests::authorizer::{ARN_PREFIX, AuthorizerEndpoint, PRINCIPAL, SLOW, USAGE_KEY};
use tollgate_tests::config::{ApiKeySource, Authorizer, Config, Key, Period, Plan, Route, Stage};
use tollgate_tests::fixtures::{CLIENT, ISSUER, es256, now_s, rs256, with};
use tollgate_tests::redis::RedisServer;
use tollgate_tests::tollgate::{TollgateProcess, eventually, http_get};
use tonic::Code;
use tonic::transport::Channel;

type Check = CheckServiceClient<Channel>;
type Authz = AuthorizationServiceClient<Channel>;

/// The token authorizer's validation regex: behaviour tokens, nothing with spaces.
const TOKEN_REGEX: &str = "^[A-Za-z0-9:._-]+$";

const DENIED: &str = "User is not authorized to access this resource";
const EXPLICITLY_DENIED: &str =
    "User is not authorized to access this resource with an explicit deny";

/// The authorizer call timeout of most tests.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The decision cache TTL of most tests.
const TTL: Duration = Duration::from_secs(300);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Port 0 listeners, a Redis store with its own `prefix` (pool of 2), `failure_mode: closed`.
fn base(redis: &RedisServer, prefix: &str) -> Config {
    Config::redis(redis.url())
        .key_prefix(prefix)
        .pool_size(2)
        .closed()
}

/// A `token` authorizer reading `Authorization`, with [`TOKEN_REGEX`].
fn token_authorizer(
    name: &str,
    endpoint: &AuthorizerEndpoint,
    timeout: Duration,
    ttl: Duration,
) -> Authorizer {
    Authorizer::token(name, &endpoint.url())
        .timeout(timeout)
        .validation_regex(TOKEN_REGEX)
        .result_ttl(ttl)
}

/// [`base`] with the token authorizer `pets-token` ([`TIMEOUT`], [`TTL`]).
fn pets_token(redis: &RedisServer, prefix: &str, endpoint: &AuthorizerEndpoint) -> Config {
    base(redis, prefix).authorizer(token_authorizer("pets-token", endpoint, TIMEOUT, TTL))
}

/// [`pets_token`] guarding `ANY /pets/{id}` of petstore/prod.
fn pets_token_on_pets(redis: &RedisServer, prefix: &str, endpoint: &AuthorizerEndpoint) -> String {
    pets_token(redis, prefix, endpoint)
        .petstore(Stage::prod().route(Route::new("ANY", "/pets/{id}").authorizer("pets-token")))
        .to_yaml()
}

fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A check of `method path` on petstore/prod with these headers.
fn check_req(method: &str, path: &str, hdrs: &[(&str, &str)]) -> CheckRequestRequest {
    CheckRequestRequest {
        api_id: "petstore".into(),
        stage: "prod".into(),
        http_method: method.into(),
        path: path.into(),
        headers: headers(hdrs),
        source_ip: "198.51.100.7".into(),
        ..Default::default()
    }
}

/// `GET /pets/1` with `Authorization: token`.
fn get_pet(token: &str) -> CheckRequestRequest {
    check_req("GET", "/pets/1", &[("Authorization", token)])
}

/// An Authorize of `method path` on petstore/prod with `Authorization: token`, by the
/// authorizer named `authorizer` ("" = the route's).
fn authz_req(authorizer: &str, method: &str, path: &str, token: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        authorizer: authorizer.into(),
        api_id: "petstore".into(),
        stage: "prod".into(),
        http_method: method.into(),
        path: path.into(),
        headers: headers(&[("Authorization", token)]),
        ..Default::default()
    }
}

fn decision(d: i32) -> Decision {
    Decision::try_from(d).unwrap_or(Decision::Unspecified)
}

fn level(r: &AuthorizeResponse) -> CacheLevel {
    r.cache.as_ref().map_or(CacheLevel::None, |c| {
        CacheLevel::try_from(c.level).unwrap_or(CacheLevel::None)
    })
}

fn hit(r: &AuthorizeResponse) -> bool {
    r.cache.as_ref().is_some_and(|c| c.hit)
}

/// The wall clock (through the server's one sanctioned reader of it).
fn wall_clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(SystemClock.now_micros())
}

fn expires_at(r: &AuthorizeResponse) -> Option<SystemTime> {
    let t = r.cache.as_ref()?.expires_at.as_ref()?;
    Some(UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos as u32))
}

async fn check(c: &mut Check, req: CheckRequestRequest) -> CheckRequestResponse {
    c.check_request(req)
        .await
        .unwrap_or_else(|s| panic!("CheckRequest failed: {s:?}"))
        .into_inner()
}

async fn authorize(c: &mut Authz, req: AuthorizeRequest) -> AuthorizeResponse {
    c.authorize(req)
        .await
        .unwrap_or_else(|s| panic!("Authorize failed: {s:?}"))
        .into_inner()
}

async fn authorize_err(c: &mut Authz, req: AuthorizeRequest) -> tonic::Status {
    match c.authorize(req).await {
        Ok(r) => panic!("expected an error status, got {:?}", r.into_inner()),
        Err(s) => s,
    }
}

async fn authz_client(tg: &TollgateProcess) -> Authz {
    AuthorizationServiceClient::new(tg.channel().await)
}

/// Asserts the answer to a denied check: decision, status, message, and the error-type header.
#[track_caller]
fn assert_denied(r: &CheckRequestResponse, d: Decision, status: u32, message: &str) {
    assert_eq!(decision(r.decision), d, "{r:?}");
    assert_eq!(r.http_status, status, "{r:?}");
    assert_eq!(r.message, message, "{r:?}");
    assert!(!r.error_type.is_empty(), "{r:?}");
    assert_eq!(
        r.response_headers.get("x-amzn-errortype"),
        Some(&r.error_type),
        "{r:?}"
    );
}

/// (a) A `token` authorizer in front of CheckRequest: allow with principal and context; the
/// cached output re-evaluated for another method (one call); explicit deny; 401 (HTTP and body
/// forms) and every failure (5xx, non-JSON, nested context, timeout) are answered and never
/// cached; the validation regex and a missing header refuse without a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_authorizer_through_check_request() {
    let redis = RedisServer::start();
    let ep = AuthorizerEndpoint::start();
    let cfg = pets_token(&redis, "authz-token", &ep)
        .authorizer(token_authorizer("pets-token-short", &ep, ms(200), TTL))
        .petstore(
            Stage::prod()
                .route(Route::new("ANY", "/pets/{id}").authorizer("pets-token"))
                .route(Route::new("GET", "/short/{id}").authorizer("pets-token-short")),
        )
        .to_yaml();
    let tg = TollgateProcess::start(&cfg);
    let mut c = tg.client().await;

    // Allow: principal and context (numbers as strings) come back in `identity`.
    let r = check(&mut c, get_pet("allow-pets")).await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    assert_eq!(r.http_status, 200);
    assert_eq!(r.resource_path, "/pets/{id}");
    let id = r
        .identity
        .as_ref()
        .expect("identity on an authorized ALLOW");
    assert_eq!(id.principal_id, PRINCIPAL);
    assert_eq!(id.context.get("tier").map(String::as_str), Some("gold"));
    assert_eq!(id.context.get("n").map(String::as_str), Some("3"));
    assert_eq!(ep.calls_for("allow-pets"), 1);
    let event = ep.last_event().expect("an event");
    assert_eq!(event["type"], "TOKEN");
    assert_eq!(event["authorizationToken"], "allow-pets");
    assert_eq!(
        event["methodArn"],
        format!("{ARN_PREFIX}:petstore/prod/GET/pets/1")
    );

    // The same identity on DELETE: the cached output's policy (GET /pets/*) is evaluated
    // against this request's ARN → implicit deny, without calling the authorizer again.
    let r = check(
        &mut c,
        check_req("DELETE", "/pets/1", &[("Authorization", "allow-pets")]),
    )
    .await;
    assert_denied(&r, Decision::AccessDenied, 403, DENIED);
    assert_eq!(r.error_type, "AccessDeniedException");
    // And GET again: allowed from the cache.
    let r = check(
        &mut c,
        check_req("GET", "/pets/2", &[("Authorization", "allow-pets")]),
    )
    .await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    assert_eq!(ep.calls_for("allow-pets"), 1, "the output must be cached");

    // Explicit deny wins over a matching Allow; the Allow still applies elsewhere.
    let r = check(
        &mut c,
        check_req("GET", "/pets/secret", &[("Authorization", "deny-secret")]),
    )
    .await;
    assert_denied(&r, Decision::AccessDenied, 403, EXPLICITLY_DENIED);
    let r = check(&mut c, get_pet("deny-secret")).await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    assert_eq!(ep.calls_for("deny-secret"), 1);

    // "Unauthorized" (HTTP 401, or the Lambda error body): 401, never cached.
    for token in ["unauthorized", "unauthorized-body"] {
        for n in 1..=2 {
            let r = check(&mut c, get_pet(token)).await;
            assert_denied(&r, Decision::Unauthorized, 401, "Unauthorized");
            assert_eq!(r.error_type, "UnauthorizedException");
            assert_eq!(ep.calls_for(token), n, "{token}: a 401 must not be cached");
        }
    }

    // Failures: 500 AUTHORIZER_ERROR, never cached.
    for token in ["boom", "garbage", "nested"] {
        for n in 1..=2 {
            let r = check(&mut c, get_pet(token)).await;
            assert_denied(&r, Decision::AuthorizerError, 500, "Internal server error");
            assert_eq!(
                ep.calls_for(token),
                n,
                "{token}: a failure must not be cached"
            );
        }
    }

    // Timeout (200 ms; the endpoint takes `SLOW`): 500, promptly, and not cached.
    for n in 1..=2 {
        let started = Instant::now();
        let r = check(
            &mut c,
            check_req("GET", "/short/1", &[("Authorization", "slow")]),
        )
        .await;
        let took = started.elapsed();
        assert_denied(&r, Decision::AuthorizerError, 500, "Internal server error");
        assert!(
            took < SLOW,
            "a 200ms timeout answered after {took:?} (the endpoint sleeps {SLOW:?})"
        );
        eventually(
            &[&tg],
            "the slow endpoint was called again",
            Duration::from_secs(5),
            || std::future::ready(ep.calls_for("slow") == n),
        )
        .await;
    }

    // No call at all: the validation regex does not match, the header is missing or empty.
    let before = ep.calls();
    let r = check(&mut c, get_pet("not a valid token!")).await;
    assert_denied(&r, Decision::Unauthorized, 401, "Unauthorized");
    let r = check(&mut c, check_req("GET", "/pets/1", &[])).await;
    assert_denied(&r, Decision::Unauthorized, 401, "Unauthorized");
    let r = check(
        &mut c,
        check_req("GET", "/pets/1", &[("Authorization", "")]),
    )
    .await;
    assert_denied(&r, Decision::Unauthorized, 401, "Unauthorized");
    let r = check(
        &mut c,
        check_req("GET", "/pets/1", &[("X-Other", "allow-pets")]),
    )
    .await;
    assert_denied(&r, Decision::Unauthorized, 401, "Unauthorized");
    // The header name is case-insensitive.
    let r = check(
        &mut c,
        check_req("GET", "/pets/1", &[("authorization", "allow-pets")]),
    )
    .await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    assert_eq!(ep.calls(), before, "none of these may call the authorizer");
}

/// (b) `AuthorizationService/Authorize`, by name and resolved from the route: the decision,
/// principal, context and usage key, and the cache levels (NONE, then LOCAL with expires_at).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_rpc_named_and_from_route() {
    let redis = RedisServer::start();
    let ep = AuthorizerEndpoint::start();
    let cfg = pets_token(&redis, "authz-rpc", &ep)
        .petstore(
            Stage::prod()
                .route(Route::new("ANY", "/pets/{id}").authorizer("pets-token"))
                .route(Route::new("GET", "/open")),
        )
        .to_yaml();
    let tg = TollgateProcess::start(&cfg);
    let mut c = authz_client(&tg).await;

    // Named: first a miss.
    let t = "allow-pets:named";
    let r = authorize(&mut c, authz_req("pets-token", "GET", "/pets/1", t)).await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    assert_eq!(r.http_status, 200);
    assert_eq!(r.message, "");
    assert_eq!(r.error_type, "");
    assert_eq!(r.principal_id, PRINCIPAL);
    assert_eq!(r.context.get("tier").map(String::as_str), Some("gold"));
    assert_eq!(r.context.get("n").map(String::as_str), Some("3"));
    assert_eq!(r.usage_identifier_key, USAGE_KEY);
    assert!(!hit(&r), "{r:?}");
    assert_eq!(level(&r), CacheLevel::None, "{r:?}");
    assert_eq!(ep.calls_for(t), 1);

    // Then a local hit, with its expiry ≈ now + 300 s.
    let asked = wall_clock();
    let r = authorize(&mut c, authz_req("pets-token", "GET", "/pets/1", t)).await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    assert!(hit(&r), "{r:?}");
    assert_eq!(level(&r), CacheLevel::Local, "{r:?}");
    let exp = expires_at(&r).unwrap_or_else(|| panic!("expires_at on a cache hit: {r:?}"));
    assert!(
        exp > asked + Duration::from_secs(240) && exp <= asked + Duration::from_secs(301),
        "expires_at {exp:?} is not about 300 s after {asked:?}"
    );
    assert_eq!(r.principal_id, PRINCIPAL);
    assert_eq!(r.usage_identifier_key, USAGE_KEY);

    // The cached policy is evaluated for the request at hand.
    let r = authorize(&mut c, authz_req("pets-token", "DELETE", "/pets/1", t)).await;
    assert_eq!(decision(r.decision), Decision::AccessDenied, "{r:?}");
    assert_eq!(r.http_status, 403);
    assert_eq!(r.message, DENIED);
    assert_eq!(r.error_type, "AccessDeniedException");
    assert_eq!(level(&r), CacheLevel::Local, "{r:?}");
    assert_eq!(r.principal_id, PRINCIPAL);

    // Resolved from the route (no authorizer named): the same cache entry (same authorizer,
    // api, stage and identity)...
    let r = authorize(&mut c, authz_req("", "GET", "/pets/9", t)).await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    assert_eq!(level(&r), CacheLevel::Local, "{r:?}");
    assert_eq!(ep.calls_for(t), 1);
    // ...and a new identity: NONE then LOCAL.
    let t2 = "allow-pets:from-route";
    let r = authorize(&mut c, authz_req("", "GET", "/pets/9", t2)).await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    assert_eq!((hit(&r), level(&r)), (false, CacheLevel::None), "{r:?}");
    let r = authorize(&mut c, authz_req("", "get", "/pets/10", t2)).await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    assert_eq!((hit(&r), level(&r)), (true, CacheLevel::Local), "{r:?}");
    assert!(expires_at(&r).is_some(), "{r:?}");
    assert_eq!(ep.calls_for(t2), 1);

    // Denials are decisions.
    let r = authorize(&mut c, authz_req("", "GET", "/pets/9", "unauthorized")).await;
    assert_eq!(decision(r.decision), Decision::Unauthorized, "{r:?}");
    assert_eq!((r.http_status, r.message.as_str()), (401, "Unauthorized"));
    assert_eq!(r.error_type, "UnauthorizedException");
    assert_eq!((hit(&r), level(&r)), (false, CacheLevel::None), "{r:?}");
    assert!(expires_at(&r).is_none(), "{r:?}");
    let r = authorize(&mut c, authz_req("", "GET", "/pets/9", "boom")).await;
    assert_eq!(decision(r.decision), Decision::AuthorizerError, "{r:?}");
    assert_eq!(r.http_status, 500);

    // Errors are statuses.
    let s = authorize_err(&mut c, authz_req("no-such", "GET", "/pets/1", t)).await;
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let s = authorize_err(&mut c, authz_req("", "GET", "/open", t)).await;
    assert_eq!(
        s.code(),
        Code::NotFound,
        "a route without an authorizer: {s:?}"
    );
    let s = authorize_err(&mut c, authz_req("", "GET", "/nowhere", t)).await;
    assert_eq!(s.code(), Code::NotFound, "no route: {s:?}");
    let s = authorize_err(
        &mut c,
        AuthorizeRequest {
            stage: "nope".into(),
            ..authz_req("", "GET", "/pets/1", t)
        },
    )
    .await;
    assert_eq!(s.code(), Code::NotFound, "unknown stage: {s:?}");
    let s = authorize_err(&mut c, authz_req("", "GET", "", t)).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("path"), "{s:?}");
    let s = authorize_err(&mut c, authz_req("pets-token", "G3T", "/pets/1", t)).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
}

/// (c) Two processes on one Redis share decisions: A's miss is B's SHARED hit (no second
/// call), then B's LOCAL hit. The shared entry is keyed by a digest, never the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_cache_across_two_instances() {
    let redis = RedisServer::start();
    let ep = AuthorizerEndpoint::start();
    let cfg = pets_token_on_pets(&redis, "authz-shared", &ep);
    let a = TollgateProcess::start(&cfg);
    let b = TollgateProcess::start(&cfg);
    let (mut ca, mut cb) = (authz_client(&a).await, authz_client(&b).await);

    // Warm up both processes' Redis connections (dialled lazily), so the shared-cache
    // round trips below are not the first use of a connection.
    for (c, t) in [
        (&mut ca, "allow-nokey:warm-a"),
        (&mut cb, "allow-nokey:warm-b"),
    ] {
        for _ in 0..4 {
            authorize(c, authz_req("pets-token", "GET", "/pets/1", t)).await;
        }
    }

    let x = "allow-nokey:shared-7c1d";
    let r = authorize(&mut ca, authz_req("pets-token", "GET", "/pets/1", x)).await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    assert_eq!(level(&r), CacheLevel::None, "{r:?}");
    assert_eq!(ep.calls_for(x), 1);

    let r = authorize(&mut cb, authz_req("pets-token", "GET", "/pets/1", x)).await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    assert_eq!(
        (hit(&r), level(&r)),
        (true, CacheLevel::Shared),
        "B must find A's decision in Redis: {r:?}\n--- A:\n{}\n--- B:\n{}",
        a.stderr_text(),
        b.stderr_text()
    );
    assert_eq!(r.principal_id, PRINCIPAL);
    assert_eq!(r.context.get("tier").map(String::as_str), Some("gold"));
    assert_eq!(r.usage_identifier_key, "", "allow-nokey names no usage key");
    assert!(expires_at(&r).is_some(), "{r:?}");
    assert_eq!(
        ep.calls_for(x),
        1,
        "a shared hit must not call the authorizer"
    );

    let r = authorize(&mut cb, authz_req("pets-token", "GET", "/pets/1", x)).await;
    assert_eq!((hit(&r), level(&r)), (true, CacheLevel::Local), "{r:?}");
    let r = authorize(&mut ca, authz_req("pets-token", "GET", "/pets/1", x)).await;
    assert_eq!((hit(&r), level(&r)), (true, CacheLevel::Local), "{r:?}");
    // The shared output carries the policy: B evaluates it for DELETE too.
    let r = authorize(&mut cb, authz_req("pets-token", "DELETE", "/pets/1", x)).await;
    assert_eq!(decision(r.decision), Decision::AccessDenied, "{r:?}");
    assert_eq!(ep.calls_for(x), 1);

    // In Redis: `<prefix>:auth:<authorizer>:<hex digest>`, and no token anywhere.
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("authz-shared:auth:*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert_eq!(keys.len(), 3, "warm-a, warm-b and x: {keys:?}");
    for k in &keys {
        let digest = k
            .strip_prefix("authz-shared:auth:pets-token:")
            .unwrap_or_else(|| panic!("unexpected key {k:?}"));
        assert!(
            digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "{k:?}"
        );
        let value: Vec<u8> = redis::cmd("GET")
            .arg(k)
            .query_async(&mut conn)
            .await
            .expect("GET");
        let value = String::from_utf8_lossy(&value);
        assert!(!value.contains("allow-pets"), "a token in {k}: {value}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(k)
            .query_async(&mut conn)
            .await
            .expect("PTTL");
        assert!(ttl > 0 && ttl <= 300_000, "{k} PTTL {ttl}");
    }

    // An output naming a usage key carries an API key value: it is cached per instance only,
    // never written to the store, so B calls the authorizer itself.
    let y = "allow-pets:keyed-42";
    let r = authorize(&mut ca, authz_req("pets-token", "GET", "/pets/1", y)).await;
    assert_eq!(r.usage_identifier_key, USAGE_KEY);
    let r = authorize(&mut cb, authz_req("pets-token", "GET", "/pets/1", y)).await;
    assert_eq!(
        (level(&r), r.usage_identifier_key.as_str()),
        (CacheLevel::None, USAGE_KEY)
    );
    assert_eq!(ep.calls_for(y), 2);
    let dump: Vec<String> = redis::cmd("KEYS")
        .arg("authz-shared:auth:*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    for k in &dump {
        let v: Vec<u8> = redis::cmd("GET")
            .arg(k)
            .query_async(&mut conn)
            .await
            .expect("GET");
        assert!(
            !String::from_utf8_lossy(&v).contains(USAGE_KEY),
            "a usage key value reached Redis under {k}"
        );
    }
}

/// (d) `result_ttl: 1s` expires (local and shared); `result_ttl: 0s` calls every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_ttl_expiry_and_zero() {
    let redis = RedisServer::start();
    let ep = AuthorizerEndpoint::start();
    let cfg = base(&redis, "authz-ttl")
        .authorizer(token_authorizer(
            "pets-1s",
            &ep,
            TIMEOUT,
            Duration::from_secs(1),
        ))
        .authorizer(token_authorizer(
            "pets-nocache",
            &ep,
            TIMEOUT,
            Duration::ZERO,
        ))
        .petstore(Stage::prod().route(Route::new("ANY", "/pets/{id}").authorizer("pets-1s")))
        .to_yaml();
    let tg = TollgateProcess::start(&cfg);
    let mut c = authz_client(&tg).await;

    let t = "allow-pets:ttl-1s";
    let first = authorize(&mut c, authz_req("pets-1s", "GET", "/pets/1", t)).await;
    assert_eq!(decision(first.decision), Decision::Allow, "{first:?}");
    assert_eq!(level(&first), CacheLevel::None, "{first:?}");
    let second = authorize(&mut c, authz_req("pets-1s", "GET", "/pets/1", t)).await;
    assert_eq!(ep.calls_for(t), 1, "within 1 s: {second:?}");
    assert_eq!(level(&second), CacheLevel::Local, "{second:?}");
    let exp = expires_at(&second).expect("expires_at on a hit");
    let left = exp.duration_since(wall_clock()).unwrap_or(Duration::ZERO);
    assert!(left <= Duration::from_secs(1), "TTL 1s, {left:?} left");

    // Wait out the TTL (the one sleep of the suite), then it is a miss again.
    tokio::time::sleep(left + Duration::from_millis(200)).await;
    let third = authorize(&mut c, authz_req("pets-1s", "GET", "/pets/1", t)).await;
    assert_eq!(decision(third.decision), Decision::Allow, "{third:?}");
    assert_eq!(
        (hit(&third), level(&third)),
        (false, CacheLevel::None),
        "{third:?}"
    );
    assert_eq!(ep.calls_for(t), 2, "an expired entry must be reloaded");
    // The shared entry expired with it (Redis PX).
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let ttl: Vec<i64> = {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("authz-ttl:auth:pets-1s:*")
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        let mut out = Vec::new();
        for k in keys {
            out.push(
                redis::cmd("PTTL")
                    .arg(&k)
                    .query_async(&mut conn)
                    .await
                    .expect("PTTL"),
            );
        }
        out
    };
    assert!(
        ttl.iter().all(|&ms| ms > 0 && ms <= 1_000),
        "shared entries of a 1s authorizer: PTTLs {ttl:?}"
    );

    // TTL 0: every request calls, nothing is reported as cached.
    let t = "allow-pets:ttl-0";
    for n in 1..=3 {
        let r = authorize(&mut c, authz_req("pets-nocache", "GET", "/pets/1", t)).await;
        assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
        assert_eq!((hit(&r), level(&r)), (false, CacheLevel::None), "{r:?}");
        assert!(expires_at(&r).is_none(), "nothing cached: {r:?}");
        assert_eq!(ep.calls_for(t), n);
    }
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("authz-ttl:auth:pets-nocache:*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert!(
        keys.is_empty(),
        "TTL 0 must not write the shared cache: {keys:?}"
    );
}

/// (e) 20 concurrent Authorize calls for one new identity on one instance make ONE call (the
/// endpoint takes 300 ms); one caller reports the miss, the others a local hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_collapse_into_one_call() {
    let redis = RedisServer::start();
    let ep = AuthorizerEndpoint::start();
    let cfg = pets_token_on_pets(&redis, "authz-collapse", &ep);
    let tg = TollgateProcess::start(&cfg);
    let c = authz_client(&tg).await;

    let t = "slow-ok:collapse-1";
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let mut c = c.clone();
        tasks.spawn(async move {
            authorize(&mut c, authz_req("pets-token", "GET", "/pets/1", t)).await
        });
    }
    let mut levels = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.expect("a caller panicked");
        assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
        assert_eq!(r.principal_id, PRINCIPAL);
        levels.push(level(&r));
    }
    assert_eq!(ep.calls_for(t), 1, "levels: {levels:?}");
    assert_eq!(ep.calls(), 1);
    let misses = levels.iter().filter(|l| **l == CacheLevel::None).count();
    assert_eq!(
        misses, 1,
        "exactly one caller ran the authorizer: {levels:?}"
    );
}

/// (f) A `request` authorizer with a header and a query identity source: missing either →
/// 401 without a call; with both, the endpoint gets the Lambda REQUEST event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_authorizer_event_and_identity_sources() {
    let redis = RedisServer::start();
    let ep = AuthorizerEndpoint::start();
    let cfg = base(&redis, "authz-request")
        .authorizer(Authorizer::request(
            "pets-request",
            &["header:X-Tenant", "query:sig"],
            &ep.url(),
            TIMEOUT,
        ))
        .petstore(Stage::prod().route(Route::new("GET", "/pets/{id}").authorizer("pets-request")))
        .to_yaml();
    let tg = TollgateProcess::start(&cfg);
    let mut c = tg.client().await;
    let req = |hdrs: &[(&str, &str)], query: &[(&str, &str)]| CheckRequestRequest {
        query: headers(query),
        ..check_req("GET", "/pets/1", hdrs)
    };

    for (what, r) in [
        ("no header", req(&[], &[("sig", "abc")])),
        ("no query", req(&[("X-Tenant", "allow-pets")], &[])),
        ("empty header", req(&[("X-Tenant", "")], &[("sig", "abc")])),
        (
            "empty query",
            req(&[("X-Tenant", "allow-pets")], &[("sig", "")]),
        ),
        (
            "other query",
            req(&[("X-Tenant", "allow-pets")], &[("SIG", "abc")]),
        ),
    ] {
        let r = check(&mut c, r).await;
        assert_denied(&r, Decision::Unauthorized, 401, "Unauthorized");
        assert_eq!(
            ep.calls(),
            0,
            "{what}: no call without every identity source"
        );
    }

    let r = check(
        &mut c,
        req(
            &[("X-Tenant", "allow-pets"), ("User-Agent", "authz-test")],
            &[("sig", "abc"), ("page", "2")],
        ),
    )
    .await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    let id = r.identity.as_ref().expect("identity");
    assert_eq!(id.principal_id, PRINCIPAL);
    assert_eq!(id.context.get("tier").map(String::as_str), Some("gold"));
    assert_eq!(ep.calls(), 1);

    let e = ep.last_event().expect("an event");
    assert_eq!(e["type"], "REQUEST", "{e:#}");
    assert_eq!(
        e["methodArn"],
        format!("{ARN_PREFIX}:petstore/prod/GET/pets/1"),
        "{e:#}"
    );
    assert_eq!(e["httpMethod"], "GET", "{e:#}");
    assert_eq!(e["path"], "/pets/1", "{e:#}");
    assert_eq!(e["resource"], "/pets/{id}", "{e:#}");
    assert_eq!(e["headers"]["X-Tenant"], "allow-pets", "{e:#}");
    assert_eq!(e["headers"]["User-Agent"], "authz-test", "{e:#}");
    assert_eq!(
        e["multiValueHeaders"]["X-Tenant"],
        json!(["allow-pets"]),
        "{e:#}"
    );
    assert_eq!(
        e["queryStringParameters"],
        json!({"sig": "abc", "page": "2"}),
        "{e:#}"
    );
    assert_eq!(e["requestContext"]["stage"], "prod", "{e:#}");
    assert_eq!(e["requestContext"]["apiId"], "petstore", "{e:#}");
    assert_eq!(e["requestContext"]["httpMethod"], "GET", "{e:#}");
    assert_eq!(e["requestContext"]["resourcePath"], "/pets/{id}", "{e:#}");
    assert_eq!(e["requestContext"]["accountId"], "123456789012", "{e:#}");
    assert_eq!(
        e["requestContext"]["identity"]["sourceIp"], "198.51.100.7",
        "{e:#}"
    );
    assert!(e.get("authorizationToken").is_none(), "{e:#}");

    // The default TTL caches it by both values; a new `sig` is a new identity.
    let r = check(
        &mut c,
        req(&[("x-tenant", "allow-pets")], &[("sig", "abc")]),
    )
    .await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    assert_eq!(ep.calls(), 1, "same identity values: cached");
    let r = check(
        &mut c,
        req(&[("X-Tenant", "allow-pets")], &[("sig", "xyz")]),
    )
    .await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    assert_eq!(ep.calls(), 2, "another sig: another identity");
    // `query_params`: every value of a repeated name, in order, reaches the authorizer
    // (`queryStringParameters` keeps the last, as AWS sends it); the lossy map is ignored.
    let r = check(
        &mut c,
        CheckRequestRequest {
            query_params: [("sig", "m1"), ("amount", "1"), ("amount", "1000")]
                .into_iter()
                .map(|(k, v)| tollgate_proto::v1::QueryParam {
                    name: k.into(),
                    value: v.into(),
                })
                .collect(),
            ..req(&[("X-Tenant", "allow-pets")], &[("sig", "ignored")])
        },
    )
    .await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    let e = ep.last_event().expect("an event");
    assert_eq!(
        e["multiValueQueryStringParameters"],
        json!({"sig": ["m1"], "amount": ["1", "1000"]}),
        "{e:#}"
    );
    assert_eq!(
        e["queryStringParameters"],
        json!({"sig": "m1", "amount": "1000"}),
        "{e:#}"
    );

    // `header_fields`: a repeated header keeps every value in `multiValueHeaders`.
    let r = check(
        &mut c,
        CheckRequestRequest {
            header_fields: [
                ("X-Tenant", "allow-pets"),
                ("X-Multi", "a"),
                ("X-Multi", "b"),
            ]
            .into_iter()
            .map(|(k, v)| tollgate_proto::v1::HeaderField {
                name: k.into(),
                value: v.into(),
            })
            .collect(),
            ..req(&[("X-Tenant", "ignored")], &[("sig", "h1")])
        },
    )
    .await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    let e = ep.last_event().expect("an event");
    assert_eq!(
        e["multiValueHeaders"]["X-Multi"],
        json!(["a", "b"]),
        "{e:#}"
    );
    assert_eq!(e["headers"]["x-multi"], "a, b", "{e:#}");
}

/// (g) `api_key_source: AUTHORIZER`: the usage plan is metered by the authorizer's
/// `usageIdentifierKey`; the client's `x-api-key` is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_from_the_authorizer_meters_the_plan() {
    const CLIENT_KEY: &str = "authz-client-key-0123456789abcdef";
    let redis = RedisServer::start();
    let ep = AuthorizerEndpoint::start();
    let cfg = pets_token(&redis, "authz-keysrc", &ep)
        .petstore(
            Stage::prod()
                .api_key_source(ApiKeySource::Authorizer)
                .route(Route::keyed("GET", "/pets/{id}").authorizer("pets-token")),
        )
        .plan(Plan::new("gold").quota(2, Period::Month))
        .plan(Plan::new("big").quota(1000, Period::Month))
        .key(Key::new("k-authz", USAGE_KEY, "gold"))
        .key(Key::new("k-client", CLIENT_KEY, "big"))
        .to_yaml();
    let tg = TollgateProcess::start(&cfg);
    let mut c = tg.client().await;
    let with_key = |token: &str, key: &str| CheckRequestRequest {
        api_key: key.into(),
        ..get_pet(token)
    };

    let mut decisions = Vec::new();
    for key in [CLIENT_KEY, "", CLIENT_KEY] {
        let r = check(&mut c, with_key("allow-pets", key)).await;
        decisions.push(decision(r.decision));
        let id = r.identity.as_ref().expect("identity");
        assert_eq!(id.principal_id, PRINCIPAL, "{r:?}");
        assert_eq!(
            id.api_key_id, "k-authz",
            "the authorizer's key, not x-api-key: {r:?}"
        );
        assert_eq!(id.usage_plan_id, "gold", "{r:?}");
        assert_eq!(r.quota.as_ref().map(|q| q.limit), Some(2), "{r:?}");
    }
    assert_eq!(
        decisions,
        [Decision::Allow, Decision::Allow, Decision::QuotaExceeded]
    );
    assert_eq!(ep.calls_for("allow-pets"), 1);

    // An authorizer answer without a usageIdentifierKey: 403 Forbidden, even with a valid
    // x-api-key.
    let r = check(&mut c, with_key("deny-secret", CLIENT_KEY)).await;
    assert_denied(&r, Decision::Forbidden, 403, "Forbidden");
}

// ---------------------------------------------------------------------------------------------
// JWT

fn id_claims(sub: &str) -> Value {
    json!({
        "sub": sub, "iss": ISSUER, "aud": CLIENT, "token_use": "id",
        "cognito:username": "alice", "email": "alice@example.test", "email_verified": true,
        "iat": now_s() - 10, "exp": now_s() + 3600,
    })
}

fn access_claims(sub: &str, scope: &str) -> Value {
    json!({
        "sub": sub, "iss": ISSUER, "client_id": CLIENT, "token_use": "access",
        "scope": scope, "username": "alice",
        "iat": now_s() - 10, "exp": now_s() + 3600,
    })
}

/// A `jwt` authorizer (the fixture JWKS) on `GET /pets/{id}`, and on `POST /pets` with
/// `scopes: ["pets/write"]`; `result_ttl` as given.
fn jwt_config(redis: &RedisServer, prefix: &str, ttl: Duration) -> String {
    base(redis, prefix)
        .authorizer(Authorizer::jwt("users").result_ttl(ttl))
        .petstore(
            Stage::prod()
                .route(Route::new("GET", "/pets/{id}").authorizer("users"))
                .route(
                    Route::new("POST", "/pets")
                        .authorizer("users")
                        .scopes(&["pets/write"]),
                ),
        )
        .to_yaml()
}

/// (h) A Cognito-style `jwt` authorizer: claims as context and `sub` as principal; expired,
/// wrong-audience and wrong-use tokens are 401; a scoped route wants an access token with one
/// of its scopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_authorizer_through_check_request() {
    let redis = RedisServer::start();
    let tg = TollgateProcess::start(&jwt_config(&redis, "authz-jwt", TTL));
    let mut c = tg.client().await;
    let bearer = |t: &str| format!("Bearer {t}");

    let id = rs256(&id_claims("user-e2e-1"));
    let r = check(&mut c, get_pet(&bearer(&id))).await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    let ident = r.identity.as_ref().expect("identity");
    assert_eq!(ident.principal_id, "user-e2e-1");
    for (claim, value) in [
        ("sub", "user-e2e-1"),
        ("iss", ISSUER),
        ("aud", CLIENT),
        ("token_use", "id"),
        ("cognito:username", "alice"),
        ("email", "alice@example.test"),
        ("email_verified", "true"),
    ] {
        assert_eq!(
            ident.context.get(claim).map(String::as_str),
            Some(value),
            "claim {claim}: {:?}",
            ident.context
        );
    }
    // Without the Bearer prefix, and cached: the same answer.
    let r = check(&mut c, get_pet(&id)).await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    // ES256 works too.
    let r = check(&mut c, get_pet(&bearer(&es256(&id_claims("user-e2e-ec"))))).await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    assert_eq!(
        r.identity.as_ref().map(|i| i.principal_id.as_str()),
        Some("user-e2e-ec")
    );

    let unauthorized = [
        (
            "expired",
            rs256(&with(id_claims("u"), "exp", json!(now_s() - 3600))),
        ),
        (
            "wrong audience",
            rs256(&with(id_claims("u"), "aud", json!("app-client-2"))),
        ),
        (
            "wrong issuer",
            rs256(&with(id_claims("u"), "iss", json!("https://evil.test/"))),
        ),
        (
            "not yet valid",
            rs256(&with(id_claims("u"), "nbf", json!(now_s() + 3600))),
        ),
        (
            "access token on an unscoped route",
            rs256(&access_claims("u", "pets/write")),
        ),
        ("bad signature", {
            let t = rs256(&id_claims("u"));
            let (rest, sig) = t.rsplit_once('.').expect("three parts");
            let flipped = if sig.starts_with('A') { "B" } else { "A" };
            format!("{rest}.{flipped}{}", &sig[1..])
        }),
        ("not a JWT", "not-a-jwt".to_string()),
    ];
    for (what, token) in &unauthorized {
        let r = check(&mut c, get_pet(&bearer(token))).await;
        assert_denied(&r, Decision::Unauthorized, 401, "Unauthorized");
        assert!(
            r.identity
                .as_ref()
                .is_none_or(|i| i.principal_id.is_empty()),
            "{what}: {r:?}"
        );
    }

    // POST /pets needs an access token with pets/write.
    let post = |token: &str| check_req("POST", "/pets", &[("Authorization", &bearer(token))]);
    let r = check(&mut c, post(&id)).await;
    assert_denied(&r, Decision::Unauthorized, 401, "Unauthorized");
    let write = rs256(&access_claims("user-e2e-1", "openid pets/write"));
    let r = check(&mut c, post(&write)).await;
    assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
    let ident = r.identity.as_ref().expect("identity");
    assert_eq!(ident.principal_id, "user-e2e-1");
    assert_eq!(
        ident.context.get("token_use").map(String::as_str),
        Some("access")
    );
    assert_eq!(
        ident.context.get("scope").map(String::as_str),
        Some("openid pets/write")
    );
    let read = rs256(&access_claims("user-e2e-1", "openid pets/read"));
    let r = check(&mut c, post(&read)).await;
    assert_denied(&r, Decision::Unauthorized, 401, "Unauthorized");
    let other_client = rs256(&with(
        access_claims("user-e2e-1", "pets/write"),
        "client_id",
        json!("app-client-2"),
    ));
    let r = check(&mut c, post(&other_client)).await;
    assert_denied(&r, Decision::Unauthorized, 401, "Unauthorized");
    // The same access token on the unscoped route is the wrong token_use (the cache is keyed by
    // the route's scopes, so the scoped ALLOW above does not leak here).
    let r = check(&mut c, get_pet(&bearer(&write))).await;
    assert_denied(&r, Decision::Unauthorized, 401, "Unauthorized");
}

/// (h, leeway) A token expired less than 60 s ago is still accepted (the documented leeway):
/// with `result_ttl: 0s` it is; with the decision cache on (the default) it must be too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_within_the_expiry_leeway_is_allowed() {
    let redis = RedisServer::start();
    let uncached = TollgateProcess::start(&jwt_config(&redis, "authz-jwt-leeway0", Duration::ZERO));
    let cached = TollgateProcess::start(&jwt_config(&redis, "authz-jwt-leeway", TTL));
    let token = rs256(&with(id_claims("user-leeway"), "exp", json!(now_s() - 20)));
    for (what, tg) in [("result_ttl 0s", &uncached), ("result_ttl 300s", &cached)] {
        let r = check(&mut tg.client().await, get_pet(&format!("Bearer {token}"))).await;
        assert_eq!(
            decision(r.decision),
            Decision::Allow,
            "{what}: expired 20 s ago, within the 60 s leeway: {r:?}\n{}",
            tg.stderr_text()
        );
        assert_eq!(
            r.identity.as_ref().map(|i| i.principal_id.as_str()),
            Some("user-leeway")
        );
    }
}

/// (i) `/metrics` counts authorizations and cache use, and never shows a token or key value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_authorizations_without_secrets() {
    let redis = RedisServer::start();
    let ep = AuthorizerEndpoint::start();
    let cfg = pets_token_on_pets(&redis, "authz-metrics", &ep);
    let tg = TollgateProcess::start(&cfg);
    let mut c = tg.client().await;
    let mut a = authz_client(&tg).await;
    let secret = "allow-pets:s3cr3t-t0ken-9f8e7d";
    let bad = "unauthorized:s3cr3t-t0ken-1a2b3c";
    let failing = "boom:s3cr3t-t0ken-4d5e6f";

    for _ in 0..2 {
        assert_eq!(
            decision(check(&mut c, get_pet(secret)).await.decision),
            Decision::Allow
        );
    }
    let r = check(
        &mut c,
        check_req("DELETE", "/pets/1", &[("Authorization", secret)]),
    )
    .await;
    assert_eq!(decision(r.decision), Decision::AccessDenied);
    assert_eq!(
        decision(check(&mut c, get_pet(bad)).await.decision),
        Decision::Unauthorized
    );
    assert_eq!(
        decision(check(&mut c, get_pet(failing)).await.decision),
        Decision::AuthorizerError
    );
    let r = authorize(&mut a, authz_req("pets-token", "GET", "/pets/1", secret)).await;
    assert_eq!(level(&r), CacheLevel::Local);

    let addr = tg.metrics_addr();
    let (status, body) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .expect("join")
        .expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    let sample = |name: &str, labels: &[&str]| -> Option<f64> {
        body.lines()
            .find(|l| {
                l.starts_with(&format!("{name}{{")) && labels.iter().all(|lab| l.contains(lab))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let auth = "authorizer=\"pets-token\"";
    for (decision, n) in [
        ("allow", 3.0),
        ("access_denied", 1.0),
        ("unauthorized", 1.0),
        ("error", 1.0),
    ] {
        let label = format!("decision=\"{decision}\"");
        assert_eq!(
            sample("tollgate_authorizations_total", &[auth, &label]),
            Some(n),
            "tollgate_authorizations_total {decision}:\n{body}"
        );
    }
    // Cache: 1 miss for the allowing identity (401s and errors fail inside the load and are
    // not counted as cache events), then 3 local hits.
    assert_eq!(
        sample(
            "tollgate_authorizer_cache_total",
            &[auth, "level=\"local\""]
        ),
        Some(3.0),
        "{body}"
    );
    assert!(
        sample("tollgate_authorizer_cache_total", &[auth, "level=\"miss\""])
            .is_some_and(|n| n >= 1.0),
        "{body}"
    );
    assert!(
        body.contains("tollgate_authorizer_call_duration_seconds"),
        "{body}"
    );
    assert!(body.contains("tollgate_authorizer_errors_total"), "{body}");
    for needle in ["s3cr3t", "allow-pets", "unauthorized:", "boom:", USAGE_KEY] {
        assert!(!body.contains(needle), "{needle:?} in /metrics:\n{body}");
    }
    // Nor in the logs.
    let logs = tg.stderr_text();
    assert!(!logs.contains("s3cr3t"), "a token in the logs:\n{logs}");
}

// ---------------------------------------------------------------------------------------------
// Latency (manual): cargo test -p tollgate-tests --test authz -- --ignored --nocapture latency

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    println!(
        "{what:>12}: n={} p50={:?} p99={:?} max={:?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default()
    );
}

/// Prints p50/p99 of sequential Authorize calls (debug build, shared machine: indicative only,
/// nothing asserted): misses on A (each calls the endpoint), shared hits on B for the same
/// identities, then local hits on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "manual: prints Authorize latency percentiles"]
async fn latency_of_authorize() {
    const N: usize = 2_000;
    let redis = RedisServer::start();
    let ep = AuthorizerEndpoint::start();
    let cfg = pets_token_on_pets(&redis, "authz-latency", &ep);
    let a = TollgateProcess::start(&cfg);
    let b = TollgateProcess::start(&cfg);
    let (mut ca, mut cb) = (authz_client(&a).await, authz_client(&b).await);
    let tokens: Vec<String> = (0..N).map(|i| format!("allow-pets:lat-{i}")).collect();

    async fn timed(c: &mut Authz, tokens: &[String], want: CacheLevel) -> Vec<Duration> {
        let mut out = Vec::with_capacity(tokens.len());
        for t in tokens {
            let started = Instant::now();
            let r = authorize(c, authz_req("pets-token", "GET", "/pets/1", t)).await;
            out.push(started.elapsed());
            assert_eq!(decision(r.decision), Decision::Allow, "{r:?}");
            if level(&r) != want {
                eprintln!("{t}: expected {want:?}, got {:?}", level(&r));
            }
        }
        out
    }
    let miss = timed(&mut ca, &tokens, CacheLevel::None).await;
    let shared = timed(&mut cb, &tokens, CacheLevel::Shared).await;
    let local = timed(&mut cb, &tokens, CacheLevel::Local).await;
    report("miss", miss);
    report("shared hit", shared);
    report("local hit", local);
    println!("endpoint calls: {} (want {N})", ep.calls());
}
