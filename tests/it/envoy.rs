//! End-to-end through a real, unmodified Envoy: its `envoy.filters.http.ext_authz` and
//! `envoy.filters.http.ratelimit` filters call Tollgate's `envoy.service.auth.v3.Authorization/
//! Check` and `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` on the gRPC port,
//! and the router forwards what they allow to an echo upstream ([`EchoUpstream`]), which shows
//! the headers Envoy added.
//!
//! Every test starts its own Tollgate (memory store, or its own `redis-server`), upstream and
//! Envoy (see `tollgate_tests::envoy`), so the tests run in parallel. Envoy is required: without
//! it (`ENVOY_BIN`, `envoy` on PATH, or `.venv-envoy/`) the tests fail with an install hint.
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tollgate_tests::config::{self, Api, Authorizer, Config, Envoy, Key, Plan, Stage, UnknownKey};
use tollgate_tests::envoy::{
    Action, EnvoyConfig, EnvoyProcess, ExtAuthz, RateLimit, Route, tollgate_key_actions,
};
use tollgate_tests::fixtures::{id_claims, rs256, with};
use tollgate_tests::redis::{RedisServer, free_port};
use tollgate_tests::tollgate::{TollgateProcess, workspace_root};
use tollgate_tests::upstream::EchoUpstream;

const KEY: &str = "envoy-key-0123456789abcdef";
const UNKNOWN_KEY: &str = "envoy-key-unknown-0123456789";

// ---------------------------------------------------------------------------------------------
// Helpers

/// This Redis with its own key prefix, `failure_mode: closed`, and API `petstore`, stage `prod`,
/// `GET /pets` (API key required); plan `small` (burst 3, one token every 100 s, so a slow
/// machine cannot refill the bucket mid-test) with key `k1` = [`KEY`].
fn redis_with_small_plan(redis: &RedisServer, prefix: &str) -> Config {
    Config::redis(redis.url())
        .key_prefix(prefix)
        .closed()
        .petstore_with(Plan::new("small").throttle(0.01, 3), KEY)
}

/// An HTTP client that never uses a proxy (the tests talk to loopback only).
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("a reqwest client")
}

/// A response, read completely.
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (panics with the reply when it is not).
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {self:?}"))
    }

    /// The request as the echo upstream saw it (the body of a forwarded request).
    fn echoed_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_string)
    }

    /// `retry-after` as a whole number of seconds (panics when missing or not a number).
    fn retry_after(&self) -> u64 {
        self.header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no integer retry-after: {self:?}"))
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.headers, self.body)
    }
}

/// `GET path` through `envoy` with `headers`.
async fn get(
    c: &reqwest::Client,
    envoy: &EnvoyProcess,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    send(c, envoy, reqwest::Method::GET, path, headers).await
}

/// `method path` through `envoy` with `headers` (no body).
async fn send(
    c: &reqwest::Client,
    envoy: &EnvoyProcess,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = c.request(method.clone(), envoy.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap_or_else(|e| {
        panic!(
            "{method} {path} through Envoy failed: {e}\n{}",
            envoy.stderr_text()
        )
    });
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.expect("a response body");
    Reply {
        status,
        headers,
        body,
    }
}

/// Asserts an AWS-style JSON error: `status`, body `{"message": message}`, `content-type:
/// application/json` and an `x-amzn-errortype`.
fn assert_aws_error(r: &Reply, status: u16, message: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.json(), json!({ "message": message }), "{r:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "content-type: {r:?}"
    );
    assert!(
        r.header("x-amzn-errortype").is_some(),
        "x-amzn-errortype: {r:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The harness itself

/// Envoy with no Tollgate filter proxies to the upstream: the harness works (Envoy starts, its
/// listener is found, the router forwards method, path, query and headers, exactly once each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_without_tollgate_filters_proxies_to_the_upstream() {
    let up = EchoUpstream::start();
    // Nothing listens on the `tollgate` cluster: no filter calls it.
    let nowhere = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let envoy = EnvoyProcess::start(&EnvoyConfig::new(nowhere, up.addr()));
    let c = http();

    let r = get(&c, &envoy, "/hello/world?x=1&y=2", &[("x-test", "yes")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let echo = r.json();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/hello/world?x=1&y=2");
    assert_eq!(r.echoed_header("x-test").as_deref(), Some("yes"));
    let resp = c
        .post(envoy.url("/things"))
        .body("payload")
        .send()
        .await
        .expect("POST through Envoy");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(up.count(), 2, "{:?}", up.requests());
    assert_eq!(up.last().expect("a request")["method"], "POST");
}

// ---------------------------------------------------------------------------------------------
// ext_authz

/// ext_authz on Redis: no key → 403 Forbidden (upstream not reached); an unknown path → 403
/// Missing Authentication Token; a key with burst 3 → 3 × 200 with identity headers upstream
/// and RateLimit headers downstream, then 429 Too Many Requests with `retry-after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext_authz_key_and_throttle_on_redis() {
    let redis = RedisServer::start();
    let cfg = redis_with_small_plan(&redis, "envoy-authz")
        .envoy(Envoy::new("petstore", "prod").identity_headers())
        .to_yaml();
    let tg = TollgateProcess::start(&cfg);
    let up = EchoUpstream::start();
    let envoy = EnvoyProcess::start(
        &EnvoyConfig::new(tg.grpc_addr(), up.addr()).ext_authz(ExtAuthz::default()),
    );
    let c = http();

    let r = get(&c, &envoy, "/pets", &[]).await;
    assert_aws_error(&r, 403, "Forbidden");
    let r = get(&c, &envoy, "/pets", &[("x-api-key", UNKNOWN_KEY)]).await;
    assert_aws_error(&r, 403, "Forbidden");
    let r = get(&c, &envoy, "/no/such/route", &[("x-api-key", KEY)]).await;
    assert_aws_error(&r, 403, "Missing Authentication Token");
    assert_eq!(
        up.count(),
        0,
        "denied requests reached the upstream: {:?}",
        up.requests()
    );

    // Client-sent identity headers are replaced (key id) or removed (no principal here), never
    // passed on.
    let spoofed = [
        ("x-api-key", KEY),
        ("x-tollgate-api-key-id", "spoofed"),
        ("x-tollgate-principal-id", "spoofed"),
    ];
    for i in 0..3 {
        let r = get(&c, &envoy, "/pets?limit=5", &spoofed).await;
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.json()["path"], "/pets?limit=5");
        assert_eq!(r.echoed_header("x-tollgate-principal-id"), None, "{r:?}");
        assert_eq!(
            r.echoed_header("x-tollgate-api-key-id").as_deref(),
            Some("k1"),
            "{r:?}"
        );
        assert_eq!(
            r.echoed_header("x-tollgate-usage-plan-id").as_deref(),
            Some("small"),
            "{r:?}"
        );
        assert!(
            r.header("ratelimit").is_some(),
            "ratelimit downstream: {r:?}"
        );
        assert!(
            r.header("ratelimit-policy").is_some(),
            "ratelimit-policy downstream: {r:?}"
        );
    }
    let r = get(&c, &envoy, "/pets?limit=5", &[("x-api-key", KEY)]).await;
    assert_aws_error(&r, 429, "Too Many Requests");
    let retry = r.retry_after();
    assert!((1..=100).contains(&retry), "retry-after {retry}: {r:?}");
    assert!(r.header("ratelimit").is_some(), "ratelimit on 429: {r:?}");
    assert!(
        r.header("ratelimit-policy").is_some(),
        "ratelimit-policy on 429: {r:?}"
    );
    assert_eq!(up.count(), 3, "{:?}", up.requests());
}

/// An RS256 ID token for `sub` from the fixture key, valid for an hour.
fn id_token(sub: &str) -> String {
    rs256(&with(id_claims(sub), "email", json!("alice@example.test")))
}

/// ext_authz with a `jwt` authorizer on the route: no token → 401 Unauthorized (upstream not
/// reached); a valid token → 200 with the principal and a claim as identity headers upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext_authz_authorizer_route_without_token_is_401() {
    let cfg = Config::memory()
        .envoy(Envoy::new("petstore", "prod").identity_headers())
        .authorizer(Authorizer::jwt("users").result_ttl(Duration::from_secs(300)))
        .petstore(Stage::prod().route(config::Route::new("GET", "/pets/{id}").authorizer("users")))
        .to_yaml();
    let tg = TollgateProcess::start(&cfg);
    let up = EchoUpstream::start();
    let envoy = EnvoyProcess::start(
        &EnvoyConfig::new(tg.grpc_addr(), up.addr()).ext_authz(ExtAuthz::default()),
    );
    let c = http();

    let r = get(&c, &envoy, "/pets/1", &[]).await;
    assert_aws_error(&r, 401, "Unauthorized");
    let r = get(
        &c,
        &envoy,
        "/pets/1",
        &[("authorization", "Bearer not-a-jwt")],
    )
    .await;
    assert_aws_error(&r, 401, "Unauthorized");
    assert_eq!(up.count(), 0, "{:?}", up.requests());

    let bearer = format!("Bearer {}", id_token("user-envoy-1"));
    let r = get(&c, &envoy, "/pets/1", &[("authorization", &bearer)]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.echoed_header("x-tollgate-principal-id").as_deref(),
        Some("user-envoy-1"),
        "{r:?}"
    );
    assert_eq!(
        r.echoed_header("x-tollgate-context-email").as_deref(),
        Some("alice@example.test"),
        "{r:?}"
    );
    assert_eq!(up.count(), 1);
}

/// Per-route `context_extensions` pick the Tollgate API and stage: `/public/` → api `public`
/// stage `v1` (no key needed); `/beta/` → stage `beta` of the default api (no key needed);
/// `/prod/` → the defaults, petstore/prod, where every route wants a key. Each path also exists
/// in petstore/prod with a key required, so a 200 proves the selection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext_authz_context_extensions_select_api_and_stage() {
    let keyed = |path: &str| config::Route::keyed("GET", path);
    let cfg = Config::memory()
        .envoy(Envoy::new("petstore", "prod"))
        .api(
            Api::new("petstore")
                .stage(
                    Stage::prod()
                        .route(keyed("/public/pets"))
                        .route(keyed("/beta/pets"))
                        .route(keyed("/prod/pets")),
                )
                .stage(Stage::new("beta").route(config::Route::new("GET", "/beta/pets"))),
        )
        .api(
            Api::new("public")
                .stage(Stage::new("v1").route(config::Route::new("GET", "/public/pets"))),
        )
        .to_yaml();
    let tg = TollgateProcess::start(&cfg);
    let up = EchoUpstream::start();
    let envoy = EnvoyProcess::start(
        &EnvoyConfig::new(tg.grpc_addr(), up.addr())
            .ext_authz(ExtAuthz::default())
            .route(
                Route::prefix("/public/")
                    .context_extension("api_id", "public")
                    .context_extension("stage", "v1"),
            )
            .route(Route::prefix("/beta/").context_extension("stage", "beta"))
            .route(Route::prefix("/")),
    );
    let c = http();

    let r = get(&c, &envoy, "/public/pets", &[]).await;
    assert_eq!(r.status, 200, "public/v1 needs no key: {r:?}");
    let r = get(&c, &envoy, "/beta/pets", &[]).await;
    assert_eq!(r.status, 200, "petstore/beta needs no key: {r:?}");
    let r = get(&c, &envoy, "/prod/pets", &[]).await;
    assert_aws_error(&r, 403, "Forbidden");
    assert_eq!(up.count(), 2, "{:?}", up.requests());
}

// ---------------------------------------------------------------------------------------------
// Rate Limit Service

/// RLS only (no ext_authz), on Redis: the key descriptor of a key with burst 3 → 3 × 200, then
/// 429 with `retry-after`. An unknown key is OVER_LIMIT (`unknown_key: deny`); a request
/// without the key header produces no descriptor, so Envoy does not ask and forwards it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_key_descriptor_burst_then_429_on_redis() {
    let redis = RedisServer::start();
    let cfg = redis_with_small_plan(&redis, "envoy-rls")
        .envoy(Envoy {
            stage: Some("prod".into()),
            unknown_key: Some(UnknownKey::Deny),
            ..Envoy::default()
        })
        .to_yaml();
    let tg = TollgateProcess::start(&cfg);
    let up = EchoUpstream::start();
    let envoy = EnvoyProcess::start(
        &EnvoyConfig::new(tg.grpc_addr(), up.addr())
            .rate_limit(RateLimit::domain("petstore"))
            .route(Route::prefix("/").rate_limit(tollgate_key_actions("prod"))),
    );
    let c = http();

    for i in 0..3 {
        let r = get(&c, &envoy, "/pets", &[("x-api-key", KEY)]).await;
        assert_eq!(r.status, 200, "request {i}: {r:?}");
    }
    assert_eq!(up.count(), 3);
    let r = get(&c, &envoy, "/pets", &[("x-api-key", KEY)]).await;
    assert_eq!(r.status, 429, "{r:?}");
    let retry = r.retry_after();
    assert!((1..=100).contains(&retry), "retry-after {retry}: {r:?}");
    assert!(r.header("ratelimit").is_some(), "ratelimit on 429: {r:?}");
    assert_eq!(up.count(), 3, "a 429 reached the upstream");

    let r = get(&c, &envoy, "/pets", &[("x-api-key", UNKNOWN_KEY)]).await;
    assert_eq!(r.status, 429, "unknown key with unknown_key: deny: {r:?}");
    let r = get(&c, &envoy, "/pets", &[]).await;
    assert_eq!(
        r.status, 200,
        "no x-api-key → no descriptor → not limited: {r:?}"
    );
    assert_eq!(up.count(), 4);
}

/// RLS generic descriptors (`descriptors:` rules, Envoy ratelimit style): a `remote_address`
/// rule of 2 per minute → 2 × 200, then 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_remote_address_descriptor_two_per_minute() {
    let cfg = format!(
        r#"{}descriptors:
  - domain: edge
    descriptors:
      - key: remote_address
        rate_limit: {{unit: minute, requests_per_unit: 2}}
"#,
        Config::memory().to_yaml()
    );
    let tg = TollgateProcess::start(&cfg);
    let up = EchoUpstream::start();
    let envoy = EnvoyProcess::start(
        &EnvoyConfig::new(tg.grpc_addr(), up.addr())
            .rate_limit(RateLimit::domain("edge"))
            .route(Route::prefix("/").rate_limit(vec![Action::RemoteAddress])),
    );
    let c = http();

    for i in 0..2 {
        let r = get(&c, &envoy, "/anything", &[]).await;
        assert_eq!(r.status, 200, "request {i}: {r:?}");
    }
    let r = get(&c, &envoy, "/anything", &[]).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(up.count(), 2);
}

/// RLS generic descriptors: a key+value rule beats the key-only rule of the same key.
/// `generic_key: slow` is 1 per minute, any other `generic_key` 100 per minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_value_rule_beats_key_only_rule() {
    let cfg = format!(
        r#"{}descriptors:
  - domain: edge
    descriptors:
      - key: generic_key
        rate_limit: {{unit: minute, requests_per_unit: 100}}
      - key: generic_key
        value: slow
        rate_limit: {{unit: minute, requests_per_unit: 1}}
"#,
        Config::memory().to_yaml()
    );
    let tg = TollgateProcess::start(&cfg);
    let up = EchoUpstream::start();
    let envoy = EnvoyProcess::start(
        &EnvoyConfig::new(tg.grpc_addr(), up.addr())
            .rate_limit(RateLimit::domain("edge"))
            .route(
                Route::prefix("/slow").rate_limit(vec![Action::generic_key("generic_key", "slow")]),
            )
            .route(
                Route::prefix("/fast").rate_limit(vec![Action::generic_key("generic_key", "fast")]),
            ),
    );
    let c = http();

    let r = get(&c, &envoy, "/slow", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = get(&c, &envoy, "/slow", &[]).await;
    assert_eq!(r.status, 429, "generic_key=slow is 1/minute: {r:?}");
    for i in 0..3 {
        let r = get(&c, &envoy, "/fast", &[]).await;
        assert_eq!(r.status, 200, "fast request {i}: {r:?}");
    }
    assert_eq!(up.count(), 4);
}

// ---------------------------------------------------------------------------------------------
// Failure modes: Tollgate killed, Envoy's own setting decides.

/// A Tollgate for the failure-mode tests: petstore/prod `GET /authz/pets` and `GET /rls/pets`,
/// key [`KEY`] in a generous plan; unknown RLS keys denied.
fn failure_mode_config() -> String {
    Config::memory()
        .envoy(Envoy::new("petstore", "prod").unknown_key(UnknownKey::Deny))
        .petstore(
            Stage::prod()
                .route(config::Route::keyed("GET", "/authz/pets"))
                .route(config::Route::keyed("GET", "/rls/pets")),
        )
        .plan(Plan::new("big").throttle(1000.0, 1000))
        .key(Key::new("k1", KEY, "big"))
        .to_yaml()
}

/// Envoy with ext_authz on `/authz/` and RLS (ext_authz off) on `/rls/`.
fn failure_mode_envoy(tg: &TollgateProcess, up: &EchoUpstream, fail_open: bool) -> EnvoyProcess {
    EnvoyProcess::start(
        &EnvoyConfig::new(tg.grpc_addr(), up.addr())
            .ext_authz(ExtAuthz {
                failure_mode_allow: fail_open,
                ..ExtAuthz::default()
            })
            .rate_limit(RateLimit::domain("petstore").failure_mode_deny(!fail_open))
            .route(Route::prefix("/authz/"))
            .route(
                Route::prefix("/rls/")
                    .without_ext_authz()
                    .rate_limit(tollgate_key_actions("prod")),
            ),
    )
}

/// Fail closed: with Tollgate up, a key passes both filters; killed, ext_authz
/// (`failure_mode_allow: false`) answers 403 and RLS (`failure_mode_deny: true`) 500, and
/// neither request reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_modes_closed_when_tollgate_is_down() {
    let mut tg = TollgateProcess::start(&failure_mode_config());
    let up = EchoUpstream::start();
    let envoy = failure_mode_envoy(&tg, &up, false);
    let c = http();
    let key = [("x-api-key", KEY)];

    let r = get(&c, &envoy, "/authz/pets", &key).await;
    assert_eq!(r.status, 200, "Tollgate up, ext_authz: {r:?}");
    let r = get(&c, &envoy, "/rls/pets", &key).await;
    assert_eq!(r.status, 200, "Tollgate up, RLS: {r:?}");
    assert_eq!(up.count(), 2);

    tg.kill();
    let r = get(&c, &envoy, "/authz/pets", &key).await;
    assert_eq!(r.status, 403, "ext_authz failure_mode_allow: false: {r:?}");
    let r = get(&c, &envoy, "/rls/pets", &key).await;
    assert_eq!(r.status, 500, "RLS failure_mode_deny: true: {r:?}");
    assert_eq!(up.count(), 2, "{:?}", up.requests());
}

/// Fail open: with Tollgate up, a keyless ext_authz request is 403 and an unknown key's RLS
/// request 429; killed, ext_authz (`failure_mode_allow: true`) and RLS (`failure_mode_deny:
/// false`) both forward them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_modes_open_when_tollgate_is_down() {
    let mut tg = TollgateProcess::start(&failure_mode_config());
    let up = EchoUpstream::start();
    let envoy = failure_mode_envoy(&tg, &up, true);
    let c = http();
    let unknown = [("x-api-key", UNKNOWN_KEY)];

    let r = get(&c, &envoy, "/authz/pets", &[]).await;
    assert_aws_error(&r, 403, "Forbidden");
    let r = get(&c, &envoy, "/rls/pets", &unknown).await;
    assert_eq!(r.status, 429, "Tollgate up, unknown key: {r:?}");
    assert_eq!(up.count(), 0);

    tg.kill();
    let r = get(&c, &envoy, "/authz/pets", &[]).await;
    assert_eq!(r.status, 200, "ext_authz failure_mode_allow: true: {r:?}");
    let r = get(&c, &envoy, "/rls/pets", &unknown).await;
    assert_eq!(r.status, 200, "RLS failure_mode_deny: false: {r:?}");
    assert_eq!(up.count(), 2, "{:?}", up.requests());
}

// ---------------------------------------------------------------------------------------------
// The shipped example (examples/envoy/) works as documented.

/// Replaces `from` with `to` in `text`, panicking when `from` is absent (the example changed
/// shape: update this test rather than silently run it on fixed ports).
fn rewrite(text: &str, from: &str, to: &str, file: &str) -> String {
    assert!(
        text.contains(from),
        "{file} no longer contains {from:?}; update the example test"
    );
    text.replace(from, to)
}

/// Starts `examples/<dir>/tollgate.yaml` and `envoy.yaml` unchanged but for addresses
/// (loopback, port 0, the test's Tollgate and upstream), the ext_authz/RLS timeouts (0.25 s →
/// 2 s: a debug build on a shared machine) and `tollgate_edits` (each must apply).
fn start_shipped(
    dir: &str,
    tollgate_edits: &[(&str, &str)],
) -> (TollgateProcess, EchoUpstream, EnvoyProcess) {
    let root = workspace_root().join("examples").join(dir);
    let read = |name: &str| {
        std::fs::read_to_string(root.join(name))
            .unwrap_or_else(|e| panic!("cannot read examples/{dir}/{name}: {e}"))
    };
    let mut tg_cfg = read("tollgate.yaml");
    for addr in ["127.0.0.1:50051", "127.0.0.1:50052", "127.0.0.1:9090"] {
        tg_cfg = rewrite(&tg_cfg, addr, "127.0.0.1:0", "tollgate.yaml");
    }
    for (from, to) in tollgate_edits {
        tg_cfg = rewrite(&tg_cfg, from, to, "tollgate.yaml");
    }
    let tg = TollgateProcess::start(&tg_cfg);
    let up = EchoUpstream::start();
    let mut envoy_cfg = read("envoy.yaml");
    for (from, to) in [
        (
            "address: 127.0.0.1, port_value: 8080",
            "address: 127.0.0.1, port_value: 0".to_string(),
        ),
        (
            "port_value: 50051",
            format!("port_value: {}", tg.grpc_addr().port()),
        ),
        (
            "port_value: 9000",
            format!("port_value: {}", up.addr().port()),
        ),
        ("port_value: 9901", "port_value: 0".to_string()),
        ("timeout: 0.25s", "timeout: 2s".to_string()),
    ] {
        envoy_cfg = rewrite(&envoy_cfg, from, &to, "envoy.yaml");
    }
    let envoy = EnvoyProcess::start_yaml(&envoy_cfg);
    (tg, up, envoy)
}

/// `examples/envoy/`: ext_authz on `/pets`, RLS on `/v2/pets`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_example_works() {
    let (_tg, up, envoy) = start_shipped("envoy", &[]);
    let c = http();
    const DEMO: &str = "demo-key-0123456789abcdef";

    let r = get(&c, &envoy, "/pets", &[]).await;
    assert_aws_error(&r, 403, "Forbidden");
    let r = get(&c, &envoy, "/pets/7", &[("x-api-key", DEMO)]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.echoed_header("x-tollgate-api-key-id").as_deref(),
        Some("demo")
    );
    assert_eq!(
        r.echoed_header("x-tollgate-usage-plan-id").as_deref(),
        Some("basic")
    );

    let r = get(&c, &envoy, "/v2/pets", &[("x-api-key", DEMO)]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = get(&c, &envoy, "/v2/pets", &[("x-api-key", UNKNOWN_KEY)]).await;
    assert_eq!(r.status, 429, "unknown_key: deny: {r:?}");
    // Without a key, the missing_api_key descriptor: the route requires a key.
    let r = get(&c, &envoy, "/v2/pets", &[]).await;
    assert_eq!(r.status, 429, "no key on the RLS route: {r:?}");
    assert_eq!(up.count(), 2, "{:?}", up.requests());

    // A client's x-tollgate-* headers never reach the upstream, also on the RLS-only route
    // (which skips ext_authz); header names with underscores are refused by Envoy.
    let spoof = [
        ("x-api-key", DEMO),
        ("x-tollgate-principal-id", "admin"),
        ("x-tollgate-context-role", "admin"),
    ];
    for path in ["/v2/pets", "/pets/8"] {
        let r = get(&c, &envoy, path, &spoof).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.echoed_header("x-tollgate-principal-id"), None, "{r:?}");
        assert_eq!(r.echoed_header("x-tollgate-context-role"), None, "{r:?}");
    }
    let r = get(
        &c,
        &envoy,
        "/v2/pets",
        &[("x-api-key", DEMO), ("x_tollgate_principal_id", "admin")],
    )
    .await;
    assert_eq!(r.status, 400, "underscore header: {r:?}");
    // Envoy normalises first: a dot segment climbing out of /v2 is resolved before routing.
    let r = get(&c, &envoy, "/v2/%2e%2e/pets/9", &[("x-api-key", DEMO)]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "/pets/9", "{r:?}");
    let r = get(&c, &envoy, "/v2%2Fpets", &[("x-api-key", DEMO)]).await;
    assert_eq!(r.status, 400, "escaped slash: {r:?}");
    assert_eq!(up.count(), 5, "{:?}", up.requests());
}

// ---------------------------------------------------------------------------------------------
// Metered costs through Envoy (examples/envoy-metered/): ext_authz reserves, the rate limit
// filter reports after the response.

const TEAM_KEY: &str = "team-a-key-0123456789abcdef";
/// What ext_authz reserves per request (`context_extensions.cost` of the example).
const RESERVE: u64 = 4000;
/// The example plan's monthly token quota.
const TOKENS: u64 = 1_000_000;

/// Tokens used this month by the example's key, read from Tollgate with a dry-run check
/// (which answers as if it were charged 1).
async fn tokens_used(tg: &TollgateProcess) -> u64 {
    let mut c = tg.client().await;
    let r = c
        .check_request(tollgate_proto::v1::CheckRequestRequest {
            api_id: "llm".into(),
            stage: "prod".into(),
            http_method: "POST".into(),
            path: "/v1/chat/completions".into(),
            api_key: TEAM_KEY.into(),
            dry_run: true,
            ..Default::default()
        })
        .await
        .expect("dry-run check")
        .into_inner();
    TOKENS - (r.quota.expect("the plan has a quota").remaining + 1)
}

/// Polls until the key's used tokens are `want` (reports come after the responses), failing
/// with the last value after 15 s.
async fn until_used(tg: &TollgateProcess, want: u64, what: &str) {
    let mut last = 0;
    for _ in 0..150 {
        last = tokens_used(tg).await;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: {last} tokens used, expected {want}");
}

/// One chat request whose upstream answers `status` and, when given, `x-usage-cost: cost`.
async fn chat(
    c: &reqwest::Client,
    envoy: &EnvoyProcess,
    status: u16,
    cost: Option<&str>,
    extra: &[(&str, &str)],
) -> Reply {
    let status = status.to_string();
    let mut headers = vec![("x-api-key", TEAM_KEY), ("x-echo-status", status.as_str())];
    if let Some(cost) = cost {
        headers.push(("x-echo-set-x-usage-cost", cost));
    }
    headers.extend_from_slice(extra);
    send(
        c,
        envoy,
        reqwest::Method::POST,
        "/v1/chat/completions",
        &headers,
    )
    .await
}

/// `examples/envoy-metered/` (reservation TTL cut from 5m to 2s): each request reserves 4000
/// tokens, and the report after the response settles what the upstream says it used — a
/// refund when it failed without saying, the whole reservation released at the TTL when its
/// report never comes (a cost header that is not a number) — exactly, under concurrency.
/// Envoy replaces a client's own x-request-id, so repeating one is charged twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_metered_example_settles_after_the_response() {
    let (tg, up, envoy) = start_shipped(
        "envoy-metered",
        &[("reservation_ttl: 5m", "reservation_ttl: 2s")],
    );
    let c = http();
    assert_eq!(tokens_used(&tg).await, 0);

    // Reserved while the request runs, settled to the reported cost after it.
    let r = chat(&c, &envoy, 200, Some("120"), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.echoed_header("x-request-id").is_some(),
        "Envoy sends its request id upstream: {r:?}"
    );
    until_used(&tg, 120, "settled to x-usage-cost 120").await;
    // More than reserved: charged post-paid.
    let r = chat(&c, &envoy, 200, Some("4500"), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    until_used(&tg, 4620, "4500 more, past the 4000 reserved").await;
    // An upstream error without the header reports 0: refunded.
    let r = chat(&c, &envoy, 503, None, &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    until_used(&tg, 4620, "a 503 without x-usage-cost is refunded").await;
    // A client's own x-request-id is replaced at the edge: the same one twice is two requests.
    for _ in 0..2 {
        let r = chat(
            &c,
            &envoy,
            200,
            Some("10"),
            &[("x-request-id", "client-chosen-id")],
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_ne!(
            r.echoed_header("x-request-id").as_deref(),
            Some("client-chosen-id"),
            "{r:?}"
        );
    }
    until_used(&tg, 4640, "two requests with one client id, 10 each").await;

    // A cost that is not a number sends no report: the 4000 stay reserved until the sweeper
    // releases them (reservation_ttl 2s).
    let r = chat(&c, &envoy, 200, Some("lots"), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        tokens_used(&tg).await,
        4640 + RESERVE,
        "reserved, unreported"
    );
    until_used(&tg, 4640, "released at the reservation TTL").await;

    // 24 concurrent requests through one Envoy: the token bucket (40,000) holds 10
    // reservations of 4000, so some are throttled (429, never reaching the upstream); the
    // quota ends at exactly the sum of the admitted ones' costs.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24u64 {
        let cost = (i * 37) % 900 + 1;
        let (c, url) = (c.clone(), envoy.url("/v1/chat/completions"));
        tasks.spawn(async move {
            let r = c
                .post(url)
                .header("x-api-key", TEAM_KEY)
                .header("x-echo-set-x-usage-cost", cost.to_string())
                .send()
                .await
                .expect("request");
            (r.status().as_u16(), cost)
        });
    }
    let (mut sum, mut admitted, mut throttled) = (4640, 0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            (200, cost) => {
                sum += cost;
                admitted += 1;
            }
            (429, _) => throttled += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(admitted >= 5, "{admitted} admitted, {throttled} throttled");
    until_used(&tg, sum, "the admitted concurrent requests").await;
    assert_eq!(
        up.count(),
        6 + admitted,
        "every admitted request, and only those, reached the upstream"
    );

    // Every admitted request's report settled (the 503's refund among them: a release at the
    // TTL would count as released instead), and the unreported one was released.
    for (result, want) in [("settled", 5.0 + admitted as f64), ("released", 1.0)] {
        let series = format!(r#"tollgate_usage_reports_total{{result="{result}"}}"#);
        assert_eq!(tg.metric(&series), want, "{series}");
    }
}

/// The docs book shows the shipped examples verbatim (in `file=` blocks, which
/// `tests/it/docs.rs` also checks and re-blesses), so what users copy is what
/// `shipped_example_works` and `shipped_metered_example_settles_after_the_response` run.
#[test]
fn docs_show_the_shipped_examples_verbatim() {
    let root = workspace_root();
    let docs: String = [
        "docs/guides/envoy-ext-authz.md",
        "docs/guides/ai-gateway.md",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(root.join(f)).expect("docs page"))
    .collect();
    for file in [
        "examples/envoy/envoy.yaml",
        "examples/envoy/tollgate.yaml",
        "examples/envoy-metered/envoy.yaml",
        "examples/envoy-metered/tollgate.yaml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).expect("example file");
        assert!(
            docs.contains(&format!("file={file}\n{text}```")),
            "the docs book must contain {file} verbatim in a ```yaml ... file={file} block"
        );
    }
}
