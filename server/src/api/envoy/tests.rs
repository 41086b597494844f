//! The Envoy handlers called directly (no socket), on the memory store with a fake clock.

use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::{
    Entry, RateLimitOverride,
};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, attribute_context};

use super::*;
use crate::clock::FakeClock;
use crate::store::AnyStore;

const CONFIG: &str = r#"
envoy:
  api_id: shop
  stage: prod
apis:
  - id: shop
    stages:
      - name: prod
        routes:
          - { method: GET, path: "/items", api_key_required: true }
          - { method: GET, path: "/items/{id}", api_key_required: true }
          - { method: GET, path: "/open" }
          - { method: GET, path: "/secure", authorizer: auth, api_key_required: true }
      - name: beta
        routes:
          - { method: ANY, path: "/{proxy+}" }
authorizers:
  - { name: auth, type: token, identity_source: "header:Authorization", endpoint: "http://127.0.0.1:1/x" }
usage_plans:
  - id: basic
    throttle: { rate_limit: 1, burst_limit: 2 }
    api_stages: [{ api_id: shop, stage: prod }]
  - id: daily
    quota: { limit: 3, period: DAY }
    created_at: "2026-01-01"
    api_stages: [{ api_id: shop, stage: beta }]
api_keys:
  - { id: k1, value: "key-one-0123456789abcdef", enabled: true, usage_plans: [basic, daily] }
  - { id: k2, value: "key-two-0123456789abcdef", enabled: true, usage_plans: [basic] }
descriptors:
  - domain: edge
    descriptors:
      - key: remote_address
        rate_limit: { unit: minute, requests_per_unit: 2 }
      - key: generic_key
        value: big
        rate_limit: { unit: second, requests_per_unit: 100 }
      - key: generic_key
        value: watch
        shadow_mode: true
        rate_limit: { unit: hour, requests_per_unit: 1 }
  - domain: shop
    descriptors:
      - key: api_key
        descriptors:
          - key: remote_address
            rate_limit: { unit: minute, requests_per_unit: 1 }
"#;

const K1: &str = "key-one-0123456789abcdef";

struct Fixture {
    api: EnvoyApi,
    clock: FakeClock,
}

fn fixture_with(text: &str) -> Fixture {
    fixture_store(text, None)
}

fn fixture_store(text: &str, store: Option<AnyStore>) -> Fixture {
    let f = crate::pipeline::tests::fixture_with(text, store);
    Fixture {
        api: EnvoyApi::new(Arc::new(f.checker)),
        clock: f.clock,
    }
}

fn fixture() -> Fixture {
    fixture_with(CONFIG)
}

fn authz_req(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    ctx: &[(&str, &str)],
) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(attribute_context::Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: "10.1.2.3".into(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: ctx
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }),
    }
}

impl Fixture {
    async fn authz(&self, r: CheckRequest) -> Result<CheckResponse, Status> {
        Authorization::check(&self.api, Request::new(r))
            .await
            .map(Response::into_inner)
    }
    async fn rls(&self, r: RateLimitRequest) -> Result<RateLimitResponse, Status> {
        self.api
            .should_rate_limit(Request::new(r))
            .await
            .map(Response::into_inner)
    }
}

/// (HTTP status, body, headers) of a denial.
type Denied<'a> = (i32, &'a str, Vec<(&'a str, &'a str)>);

fn denied_parts(r: &CheckResponse) -> Option<Denied<'_>> {
    match r.http_response.as_ref()? {
        HttpResponse::DeniedResponse(d) => Some((
            d.status.as_ref()?.code,
            d.body.as_str(),
            d.headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.as_str(), h.value.as_str()))
                .collect(),
        )),
        _ => None,
    }
}

fn ok_parts(r: &CheckResponse) -> Option<&OkHttpResponse> {
    match r.http_response.as_ref()? {
        HttpResponse::OkResponse(o) => Some(o),
        _ => None,
    }
}

fn find<'a>(hs: &'a [HeaderValueOption], name: &str) -> Option<&'a str> {
    hs.iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

#[tokio::test]
async fn ext_authz_runs_the_pipeline_with_aws_answers() {
    let f = fixture();
    // No key → 403 Forbidden, AWS body, PERMISSION_DENIED.
    let r = f
        .authz(authz_req("GET", "/items", &[], &[]))
        .await
        .expect("answered");
    let (code, body, hs) = denied_parts(&r).expect("denied");
    assert_eq!(code, 403);
    assert_eq!(body, r#"{"message":"Forbidden"}"#);
    assert!(hs.contains(&("content-type", "application/json")));
    assert!(hs.contains(&("x-amzn-errortype", "ForbiddenException")));
    assert_eq!(
        r.status.as_ref().map(|s| s.code),
        Some(tonic::Code::PermissionDenied as i32)
    );

    // Unknown path → Missing Authentication Token.
    let r = f
        .authz(authz_req("GET", "/nope", &[("x-api-key", K1)], &[]))
        .await
        .expect("answered");
    let (code, body, _) = denied_parts(&r).expect("denied");
    assert_eq!(
        (code, body),
        (403, r#"{"message":"Missing Authentication Token"}"#)
    );

    // A key: burst 2 → two allows with identity headers upstream and RateLimit downstream.
    for left in ["1", "0"] {
        let r = f
            .authz(authz_req(
                "GET",
                "/items/7?x=1",
                &[
                    ("x-api-key", K1),
                    (H_PRINCIPAL, "spoofed"),
                    ("X-Tollgate-Context-Tier", "gold"),
                ],
                &[],
            ))
            .await
            .expect("answered");
        let ok = ok_parts(&r).expect("allowed");
        assert_eq!(find(&ok.headers, H_KEY_ID), Some("k1"));
        assert_eq!(find(&ok.headers, H_PLAN_ID), Some("basic"));
        // No authorizer ran: a client's own principal header is removed.
        assert!(ok.headers_to_remove.iter().any(|h| h == H_PRINCIPAL));
        // So is any other x-tollgate-* header a client sent.
        assert!(
            ok.headers_to_remove
                .iter()
                .any(|h| h == "x-tollgate-context-tier"),
            "{:?}",
            ok.headers_to_remove
        );
        assert!(!ok.headers_to_remove.iter().any(|h| h == H_KEY_ID));
        let state = find(&ok.response_headers_to_add, "RateLimit").expect("RateLimit");
        assert!(state.contains(&format!("r={left}")), "{state}");
    }
    // Then 429 with Retry-After (1 token per second: 1 s).
    let r = f
        .authz(authz_req("GET", "/items/8", &[("x-api-key", K1)], &[]))
        .await
        .expect("answered");
    let (code, body, hs) = denied_parts(&r).expect("throttled");
    assert_eq!((code, body), (429, r#"{"message":"Too Many Requests"}"#));
    assert!(hs.contains(&("retry-after", "1")), "{hs:?}");
    assert!(hs.contains(&("x-amzn-errortype", "TooManyRequestsException")));
    assert!(hs.iter().any(|(k, _)| *k == "ratelimit"));

    // A keyless route is allowed without identity.
    f.clock.advance(10_000_000);
    let r = f
        .authz(authz_req("GET", "/open", &[], &[]))
        .await
        .expect("answered");
    assert!(ok_parts(&r).is_some());
}

#[tokio::test]
async fn context_extensions_choose_api_stage_and_cost() {
    let f = fixture();
    // The beta stage has a keyless catch-all route; the default stage (prod) would say 403.
    let ctx = [("api_id", "shop"), ("stage", "beta")];
    let r = f
        .authz(authz_req("POST", "/anything/here", &[], &ctx))
        .await
        .expect("answered");
    assert!(ok_parts(&r).is_some(), "{r:?}");
    // An unknown stage is NOT_FOUND (Envoy applies its failure mode), not a denial.
    let e = f
        .authz(authz_req("GET", "/", &[], &[("stage", "nope")]))
        .await
        .expect_err("not found");
    assert_eq!(e.code(), tonic::Code::NotFound);
    // A bad cost is the operator's mistake.
    let e = f
        .authz(authz_req("GET", "/open", &[], &[("cost", "0")]))
        .await
        .expect_err("bad cost");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    // A cost of 2 takes the whole burst of 2 at once.
    let r = f
        .authz(authz_req(
            "GET",
            "/items",
            &[("x-api-key", K1)],
            &[("cost", "2")],
        ))
        .await
        .expect("answered");
    assert!(ok_parts(&r).is_some());
    let r = f
        .authz(authz_req("GET", "/items", &[("x-api-key", K1)], &[]))
        .await
        .expect("answered");
    assert_eq!(denied_parts(&r).map(|d| d.0), Some(429));
}

#[tokio::test]
async fn ext_authz_without_defaults_or_http_is_an_error() {
    let f = fixture_with(
        "apis:\n  - id: a\n    stages:\n      - name: s\n        routes: [{ method: GET, path: /x }]\n",
    );
    let e = f
        .authz(authz_req("GET", "/x", &[], &[]))
        .await
        .expect_err("no api");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("context_extensions.api_id"));
    let e = f.authz(CheckRequest::default()).await.expect_err("no http");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn hostile_requests_are_denied_not_errors() {
    let f = fixture();
    let long_path = format!("/{}", "a".repeat(limits::MAX_PATH_LEN));
    let big = "v".repeat(limits::MAX_MAP_VALUE_LEN + 1);
    let long_key = "k".repeat(MAX_API_KEY_LEN + 10);
    for (method, path, headers) in [
        ("GET", long_path.as_str(), vec![]),
        ("G\u{0}T", "/items", vec![]),
        ("GET", "/items", vec![("x-big", big.as_str())]),
    ] {
        let r = f
            .authz(authz_req(method, path, &headers, &[]))
            .await
            .expect("answered as a denial");
        let (code, body, _) = denied_parts(&r).expect("denied");
        assert_eq!(code, 400, "{body}");
        assert!(body.contains("message"));
    }
    // An absurd key is just unknown.
    let r = f
        .authz(authz_req(
            "GET",
            "/items",
            &[("x-api-key", long_key.as_str())],
            &[],
        ))
        .await
        .expect("answered");
    assert_eq!(denied_parts(&r).map(|d| d.0), Some(403));
}

fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

fn rls_req(domain: &str, ds: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors: ds,
        hits_addend: 0,
    }
}

fn key_descriptor(key: &str) -> RateLimitDescriptor {
    descriptor(&[
        ("stage", "prod"),
        ("api_key", key),
        ("method", "GET"),
        ("path", "/items/3?q=1"),
    ])
}

fn rheader<'a>(r: &'a RateLimitResponse, name: &str) -> Option<&'a str> {
    r.response_headers_to_add
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

#[tokio::test]
async fn rls_charges_the_keys_plan_and_reports_the_bucket() {
    let f = fixture();
    for left in [1u32, 0] {
        let r = f
            .rls(rls_req("shop", vec![key_descriptor(K1)]))
            .await
            .expect("answered");
        assert_eq!(r.overall_code, Code::Ok as i32);
        let st = &r.statuses[0];
        assert_eq!(st.code, Code::Ok as i32);
        assert_eq!(st.limit_remaining, left);
        let cl = st.current_limit.as_ref().expect("limit");
        assert_eq!((cl.requests_per_unit, cl.unit), (1, Unit::Second as i32));
        assert!(rheader(&r, "RateLimit").is_some());
    }
    let r = f
        .rls(rls_req("shop", vec![key_descriptor(K1)]))
        .await
        .expect("answered");
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32);
    let reset = r.statuses[0].duration_until_reset.as_ref().expect("reset");
    assert_eq!((reset.seconds, reset.nanos), (1, 0));
    assert_eq!(rheader(&r, "Retry-After"), Some("1"));
    assert_eq!(
        String::from_utf8_lossy(&r.raw_body),
        r#"{"message":"Too Many Requests"}"#
    );
    // The same key through ext_authz shares the bucket (same plan, method and route).
    let a = f
        .authz(authz_req("GET", "/items/9", &[("x-api-key", K1)], &[]))
        .await
        .expect("answered");
    assert_eq!(denied_parts(&a).map(|d| d.0), Some(429));
    // Another key has its own bucket; the authorizer route is not authorized here.
    let r = f
        .rls(rls_req(
            "shop",
            vec![descriptor(&[
                ("api_key", "key-two-0123456789abcdef"),
                ("method", "GET"),
                ("path", "/secure"),
            ])],
        ))
        .await
        .expect("answered");
    assert_eq!(r.overall_code, Code::Ok as i32, "{r:?}");
}

#[tokio::test]
async fn rls_quota_is_reported_in_days_and_hits_addend_is_the_cost() {
    let f = fixture();
    // No method/path: the stage's catch-all; the beta plan has a quota of 3 per DAY.
    let d = || descriptor(&[("stage", "beta"), ("api_key", K1)]);
    let mut req = rls_req("shop", vec![d()]);
    req.hits_addend = 2;
    let r = f.rls(req).await.expect("answered");
    assert_eq!(r.overall_code, Code::Ok as i32);
    let st = &r.statuses[0];
    let cl = st.current_limit.as_ref().expect("quota");
    assert_eq!((cl.requests_per_unit, cl.unit), (3, Unit::Day as i32));
    assert_eq!(st.limit_remaining, 1);
    // Noon → midnight UTC.
    assert_eq!(
        st.duration_until_reset.as_ref().map(|d| d.seconds),
        Some(12 * 3600)
    );
    let mut req = rls_req("shop", vec![d()]);
    req.hits_addend = 2;
    let r = f.rls(req).await.expect("answered");
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(
        String::from_utf8_lossy(&r.raw_body),
        r#"{"message":"Limit Exceeded"}"#
    );
    assert_eq!(
        rheader(&r, "x-amzn-ErrorType"),
        Some("LimitExceededException")
    );
    // The one unit left still passes with cost 1.
    let r = f.rls(rls_req("shop", vec![d()])).await.expect("answered");
    assert_eq!(r.overall_code, Code::Ok as i32);
}

#[tokio::test]
async fn rls_unknown_keys_follow_the_configured_rule() {
    let unknown = || {
        rls_req(
            "shop",
            vec![descriptor(&[
                ("api_key", "not-a-key-at-all-000000"),
                ("remote_address", "10.0.0.1"),
            ])],
        )
    };
    let f = fixture();
    let r = f.rls(unknown()).await.expect("answered");
    assert_eq!(
        r.overall_code,
        Code::OverLimit as i32,
        "deny is the default"
    );
    assert_eq!(
        String::from_utf8_lossy(&r.raw_body),
        r#"{"message":"Forbidden"}"#
    );
    let f =
        fixture_with(&CONFIG.replace("  stage: prod\n", "  stage: prod\n  unknown_key: allow\n"));
    for _ in 0..5 {
        let r = f.rls(unknown()).await.expect("answered");
        assert_eq!(r.overall_code, Code::Ok as i32);
    }
    // `descriptors`: the shop domain's generic rules apply (1 per minute per key value and
    // address here).
    let f = fixture_with(&CONFIG.replace(
        "  stage: prod\n",
        "  stage: prod\n  unknown_key: descriptors\n",
    ));
    let r = f.rls(unknown()).await.expect("answered");
    assert_eq!(r.overall_code, Code::Ok as i32);
    let r = f.rls(unknown()).await.expect("answered");
    assert_eq!(r.overall_code, Code::OverLimit as i32, "{r:?}");
    // A known key is still charged to its plan, not to the rules.
    for _ in 0..2 {
        let r = f
            .rls(rls_req(
                "shop",
                vec![descriptor(&[
                    ("api_key", K1),
                    ("remote_address", "10.0.0.1"),
                ])],
            ))
            .await
            .expect("answered");
        assert_eq!(r.overall_code, Code::Ok as i32);
    }
}

#[tokio::test]
async fn generic_descriptors_match_like_envoys_ratelimit_service() {
    let f = fixture();
    let ip = |v: &str| descriptor(&[("remote_address", v)]);
    for _ in 0..2 {
        let r = f
            .rls(rls_req("edge", vec![ip("10.0.0.1")]))
            .await
            .expect("answered");
        assert_eq!(r.overall_code, Code::Ok as i32);
    }
    let r = f
        .rls(rls_req("edge", vec![ip("10.0.0.1")]))
        .await
        .expect("answered");
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    let st = &r.statuses[0];
    let cl = st.current_limit.as_ref().expect("limit");
    assert_eq!((cl.requests_per_unit, cl.unit), (2, Unit::Minute as i32));
    // 2 per minute: one comes back every 30 s.
    assert_eq!(rheader(&r, "Retry-After"), Some("30"));
    assert_eq!(
        st.duration_until_reset.as_ref().map(|d| d.seconds),
        Some(30)
    );
    // Each value has its own bucket.
    let r = f
        .rls(rls_req("edge", vec![ip("10.0.0.2")]))
        .await
        .expect("answered");
    assert_eq!(r.overall_code, Code::Ok as i32);
    // No rule → OK with no limit; an unknown domain too.
    for (dom, d) in [
        ("edge", descriptor(&[("generic_key", "unlisted")])),
        ("other", ip("10.0.0.1")),
    ] {
        let r = f.rls(rls_req(dom, vec![d])).await.expect("answered");
        assert_eq!(r.overall_code, Code::Ok as i32);
        assert!(r.statuses[0].current_limit.is_none());
    }
    // After 30 s one more passes.
    f.clock.advance(30_000_000);
    let r = f
        .rls(rls_req("edge", vec![ip("10.0.0.1")]))
        .await
        .expect("answered");
    assert_eq!(r.overall_code, Code::Ok as i32);
}

#[tokio::test]
async fn descriptors_in_one_request_are_all_or_nothing_and_shadow_never_denies() {
    let f = fixture();
    let big = || descriptor(&[("generic_key", "big")]);
    let ip = || descriptor(&[("remote_address", "10.9.9.9")]);
    let watch = || descriptor(&[("generic_key", "watch")]);
    for _ in 0..2 {
        let r = f
            .rls(rls_req("edge", vec![big(), ip(), watch()]))
            .await
            .expect("answered");
        assert_eq!(
            r.overall_code,
            Code::Ok as i32,
            "shadow over limit never denies"
        );
    }
    // The IP bucket denies; the big bucket must not have been charged for it.
    let r = f
        .rls(rls_req("edge", vec![big(), ip()]))
        .await
        .expect("answered");
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::Ok as i32);
    assert_eq!(r.statuses[1].code, Code::OverLimit as i32);
    assert_eq!(
        r.statuses[0].limit_remaining, 98,
        "two charged, the denied one not"
    );
}

#[tokio::test]
async fn rls_limit_override_and_bad_input() {
    let f = fixture();
    let mut d = descriptor(&[("anything", "x")]);
    d.limit = Some(RateLimitOverride {
        requests_per_unit: 1,
        unit: Unit::Hour as i32,
    });
    let r = f
        .rls(rls_req("edge", vec![d.clone()]))
        .await
        .expect("answered");
    assert_eq!(r.overall_code, Code::Ok as i32);
    let r = f.rls(rls_req("edge", vec![d])).await.expect("answered");
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(rheader(&r, "Retry-After"), Some("3600"));

    let cases = [
        (
            rls_req("", vec![descriptor(&[("a", "b")])]),
            "domain is required",
        ),
        (rls_req("edge", vec![]), "at least one"),
        (
            rls_req(
                "edge",
                (0..=MAX_DESCRIPTORS)
                    .map(|_| descriptor(&[("a", "b")]))
                    .collect(),
            ),
            "descriptors has",
        ),
        (rls_req("edge", vec![descriptor(&[])]), "entries"),
        (
            RateLimitRequest {
                hits_addend: u32::MAX,
                ..rls_req("edge", vec![descriptor(&[("a", "b")])])
            },
            "hits_addend",
        ),
    ];
    for (req, needle) in cases {
        let e = f.rls(req).await.expect_err("invalid");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains(needle), "{} vs {needle}", e.message());
    }
    // A stage that does not exist is NOT_FOUND.
    let e = f
        .rls(rls_req(
            "shop",
            vec![descriptor(&[("stage", "nope"), ("api_key", K1)])],
        ))
        .await
        .expect_err("no stage");
    assert_eq!(e.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn store_failure_follows_the_failure_mode() {
    // Nothing listens on port 1: connections are refused, as with a crashed Redis.
    let dead = crate::store::redis::RedisStore::new("redis://127.0.0.1:1/", 2, "tg").expect("pool");
    let f = fixture_store(CONFIG, Some(AnyStore::Redis(dead.clone())));
    let r = f
        .rls(rls_req(
            "edge",
            vec![descriptor(&[("remote_address", "1")])],
        ))
        .await
        .expect("open: allowed");
    assert_eq!(r.overall_code, Code::Ok as i32);
    let r = f
        .rls(rls_req("shop", vec![key_descriptor(K1)]))
        .await
        .expect("open");
    assert_eq!(r.overall_code, Code::Ok as i32);
    let a = f
        .authz(authz_req("GET", "/items", &[("x-api-key", K1)], &[]))
        .await
        .expect("open: allowed");
    assert!(ok_parts(&a).is_some());

    let closed = CONFIG.replace("envoy:", "failure_mode: closed\nenvoy:");
    let f = fixture_store(&closed, Some(AnyStore::Redis(dead)));
    let e = f
        .rls(rls_req(
            "edge",
            vec![descriptor(&[("remote_address", "1")])],
        ))
        .await
        .expect_err("closed");
    assert_eq!(e.code(), tonic::Code::Unavailable);
    let e = f
        .rls(rls_req("shop", vec![key_descriptor(K1)]))
        .await
        .expect_err("closed");
    assert_eq!(e.code(), tonic::Code::Unavailable);
    let e = f
        .authz(authz_req("GET", "/items", &[("x-api-key", K1)], &[]))
        .await
        .expect_err("closed");
    assert_eq!(e.code(), tonic::Code::Unavailable);
}

const METERED: &str = r#"
apis:
  - id: llm
    stages:
      - name: prod
        routes:
          - { method: POST, path: "/v1/{proxy+}", api_key_required: true }
usage_plans:
  - id: tokens
    quota: { limit: 100, period: DAY }
    metering: { reservation_ttl: 30s }
    api_stages: [{ api_id: llm, stage: prod }]
api_keys:
  - { id: k1, value: "key-one-0123456789abcdef", enabled: true, usage_plans: [tokens] }
  - { id: k2, value: "key-two-0123456789abcdef", enabled: true, usage_plans: [tokens] }
"#;

/// The quota units left for K1 on the metered route (a dry run, as if charged 1).
async fn tokens_left(f: &Fixture) -> u64 {
    tokens_left_of(f, K1).await
}

async fn tokens_left_of(f: &Fixture, key: &str) -> u64 {
    let input = CheckInput {
        api_id: "llm",
        stage: "prod",
        method: "POST",
        path: "/v1/chat",
        api_key: key,
        cost: 1,
        dry_run: true,
        ..Default::default()
    };
    let a = f.api.checker.check(&input).await.expect("dry run");
    a.quota.expect("quota").remaining + 1
}

fn metered_req(request_id: Option<&str>, meter: &str) -> CheckRequest {
    let mut headers = vec![("x-api-key", K1)];
    if let Some(id) = request_id {
        headers.push(("x-request-id", id));
    }
    let ctx = [
        ("api_id", "llm"),
        ("stage", "prod"),
        ("cost", "40"),
        ("meter", meter),
    ];
    authz_req("POST", "/v1/chat", &headers, &ctx)
}

fn report_descriptor(request_id: &str, actual: Option<u64>) -> RateLimitDescriptor {
    let mut d = descriptor(&[(REPORT_ENTRY, request_id)]);
    d.hits_addend = actual.map(|value| envoy_types::pb::google::protobuf::UInt64Value { value });
    d
}

#[tokio::test]
async fn a_metered_route_reserves_and_the_rls_report_settles_it() {
    let f = fixture_with(METERED);
    assert_eq!(tokens_left(&f).await, 100);
    let r = f
        .authz(metered_req(Some("req-1"), "true"))
        .await
        .expect("answered");
    assert!(ok_parts(&r).is_some(), "{r:?}");
    assert_eq!(tokens_left(&f).await, 60, "40 reserved");
    // The same request id again would ride on the first reservation: 409.
    let r = f
        .authz(metered_req(Some("req-1"), "true"))
        .await
        .expect("answered");
    assert_eq!(denied_parts(&r).map(|d| d.0), Some(409), "{r:?}");
    assert_eq!(tokens_left(&f).await, 60);

    // The report after the response: 7 used, 33 back; once.
    for _ in 0..2 {
        let r = f
            .rls(rls_req("llm", vec![report_descriptor("req-1", Some(7))]))
            .await
            .expect("report");
        assert_eq!(r.overall_code, Code::Ok as i32);
        assert_eq!(tokens_left(&f).await, 93);
    }
    // A report for an id with no reservation is OK and changes nothing; one without its own
    // hits_addend, or with a bad id, is refused.
    let r = f
        .rls(rls_req("llm", vec![report_descriptor("nobody", Some(5))]))
        .await
        .expect("report");
    assert_eq!(r.overall_code, Code::Ok as i32);
    for d in [
        report_descriptor("req-1", None),
        report_descriptor("has space", Some(1)),
        report_descriptor(&"x".repeat(129), Some(1)),
    ] {
        let e = f.rls(rls_req("llm", vec![d])).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    }
    assert_eq!(tokens_left(&f).await, 93);

    // Never reported: released at the plan's reservation_ttl, from the store's ticket.
    let r = f
        .authz(metered_req(Some("req-2"), "true"))
        .await
        .expect("answered");
    assert!(ok_parts(&r).is_some(), "{r:?}");
    assert_eq!(tokens_left(&f).await, 53);
    let now = crate::clock::Clock::now_micros(&f.clock);
    assert_eq!(f.api.checker.release_due(Some(now + 29_000_000)).await, 0);
    assert_eq!(f.api.checker.release_due(Some(now + 30_000_000)).await, 1);
    assert_eq!(tokens_left(&f).await, 93);
    let r = f
        .rls(rls_req("llm", vec![report_descriptor("req-2", Some(1))]))
        .await
        .expect("a late report");
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(
        tokens_left(&f).await,
        93,
        "released: nothing left to settle"
    );
}

#[tokio::test]
async fn a_metered_route_needs_a_request_id_and_a_clear_flag() {
    let f = fixture_with(METERED);
    let e = f.authz(metered_req(None, "true")).await.expect_err("no id");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("x-request-id"), "{e:?}");
    let e = f
        .authz(metered_req(Some("req-1"), "yes"))
        .await
        .expect_err("bad flag");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("meter"), "{e:?}");
    let r = f
        .authz(metered_req(Some("bad id"), "true"))
        .await
        .expect("answered");
    assert_eq!(denied_parts(&r).map(|d| d.0), Some(400), "{r:?}");
    // Not metered: no request id needed, nothing to settle.
    let r = f.authz(metered_req(None, "false")).await.expect("answered");
    assert!(ok_parts(&r).is_some(), "{r:?}");
    assert_eq!(tokens_left(&f).await, 60);
}

#[tokio::test]
async fn one_request_id_for_two_keys_is_one_reservation() {
    let f = fixture_with(METERED);
    let r = f
        .authz(metered_req(Some("shared"), "true"))
        .await
        .expect("answered");
    assert!(ok_parts(&r).is_some(), "{r:?}");
    // Another key, the same x-request-id: its record is its own, but the ticket is taken.
    let other = authz_req(
        "POST",
        "/v1/chat",
        &[
            ("x-api-key", "key-two-0123456789abcdef"),
            ("x-request-id", "shared"),
        ],
        &[
            ("api_id", "llm"),
            ("stage", "prod"),
            ("cost", "40"),
            ("meter", "true"),
        ],
    );
    let r = f.authz(other).await.expect("answered");
    assert_eq!(denied_parts(&r).map(|d| d.0), Some(409), "{r:?}");
    assert_eq!(
        tokens_left_of(&f, "key-two-0123456789abcdef").await,
        100,
        "given back at once"
    );
    // The report settles the first key's reservation.
    let r = f
        .rls(rls_req("llm", vec![report_descriptor("shared", Some(5))]))
        .await
        .expect("report");
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(tokens_left(&f).await, 95);
    assert_eq!(tokens_left_of(&f, "key-two-0123456789abcdef").await, 100);
}

/// A plan's reservation bounds hold on Envoy `meter` routes too: a route cost below
/// `min_reservation` reserves the min (and the report settles against it); above
/// `max_reservation` the request is denied 400 and nothing is reserved.
#[tokio::test]
async fn a_metered_route_is_held_to_the_plans_reservation_bounds() {
    let f = fixture_with(&METERED.replace(
        "metering: { reservation_ttl: 30s }",
        "metering: { reservation_ttl: 30s, min_reservation: 50, max_reservation: 60 }",
    ));
    // The route reserves 40 (context_extensions.cost): raised to 50.
    let r = f
        .authz(metered_req(Some("b-1"), "true"))
        .await
        .expect("answered");
    assert!(ok_parts(&r).is_some(), "{r:?}");
    assert_eq!(tokens_left(&f).await, 50, "the plan's min was reserved");
    let r = f
        .rls(rls_req("llm", vec![report_descriptor("b-1", Some(7))]))
        .await
        .expect("report");
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(tokens_left(&f).await, 93, "settled against the 50 reserved");
    // A route cost of 61: over the plan's max.
    let mut req = metered_req(Some("b-2"), "true");
    if let Some(ctx) = req.attributes.as_mut().map(|a| &mut a.context_extensions) {
        ctx.insert("cost".into(), "61".into());
    }
    let r = f.authz(req).await.expect("answered");
    let (status, body, _) = denied_parts(&r).expect("denied");
    assert_eq!(status, 400, "{r:?}");
    assert!(body.contains("max_reservation"), "{body}");
    assert_eq!(tokens_left(&f).await, 93);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_a_message_envoy_may_send_is_decoded() {
    let f = fixture();
    let mut r = authz_req("POST", "/items", &[("x-api-key", K1)], &[]);
    if let Some(http) = r
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.raw_body = vec![b'x'; limits::MAX_ENVOY_BODY_BYTES + 1];
    }
    let r = f.authz(r).await.expect("answered as a denial");
    assert_eq!(denied_parts(&r).map(|d| d.0), Some(413));
    // The decode limit has room for the largest body plus headers.
    const { assert!(limits::MAX_ENVOY_MESSAGE_BYTES > limits::MAX_ENVOY_BODY_BYTES + 64 * 1024) };
}

#[tokio::test]
async fn missing_api_key_descriptors_deny_on_keyed_routes_only() {
    let f = fixture();
    let ask = |entries: &[(&str, &str)]| rls_req("shop", vec![descriptor(entries)]);
    let over = |r: &RateLimitResponse| r.overall_code == Code::OverLimit as i32;
    for (what, entries, denied) in [
        (
            "keyed route",
            vec![
                ("stage", "prod"),
                ("missing_api_key", "true"),
                ("method", "GET"),
                ("path", "/items/1"),
            ],
            true,
        ),
        (
            "open route",
            vec![
                ("stage", "prod"),
                ("missing_api_key", "true"),
                ("method", "GET"),
                ("path", "/open?x=1"),
            ],
            false,
        ),
        (
            "no such route",
            vec![
                ("stage", "prod"),
                ("missing_api_key", "true"),
                ("method", "GET"),
                ("path", "/nowhere"),
            ],
            true,
        ),
        (
            "no route named",
            vec![("stage", "prod"), ("missing_api_key", "true")],
            true,
        ),
        (
            "a refused path",
            vec![
                ("stage", "prod"),
                ("missing_api_key", "true"),
                ("method", "GET"),
                ("path", "/open/../items/1"),
            ],
            true,
        ),
    ] {
        let r = f.rls(ask(&entries)).await.expect("answered");
        assert_eq!(over(&r), denied, "{what}: {r:?}");
    }
}

#[test]
fn every_spelling_of_an_identity_header_is_ours() {
    for name in [
        "x-tollgate-principal-id",
        "X-Tollgate-Principal-Id",
        "x_tollgate_principal_id",
        "X_TOLLGATE_context_role",
        "x-tollgate_api-key-id",
    ] {
        assert!(is_ours(name), "{name}");
    }
    for name in ["x-tollgat", "x-other", "tollgate-x", "xx-tollgate-a"] {
        assert!(!is_ours(name), "{name}");
    }
}

#[test]
fn context_names_that_collide_as_one_header_are_refused() {
    let mut a = crate::pipeline::auth_answer(crate::auth::AuthDecision::Allow);
    a.context = [("Role", "user"), ("role", "admin")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(identity_headers(&a).is_err());
    a.context = [("role", "user"), ("tenant", "acme")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let up = identity_headers(&a).expect("distinct names");
    assert_eq!(find(&up, "x-tollgate-context-role"), Some("user"));
    // Removed even with identity headers off: a client's spelling of ours never passes.
    let r = allowed(
        crate::pipeline::auth_answer(crate::auth::AuthDecision::Allow),
        Vec::new(),
        ["x_tollgate_principal_id".to_string(), "accept".to_string()].iter(),
    );
    let ok = ok_parts(&r).expect("allowed");
    assert_eq!(ok.headers_to_remove, ["x_tollgate_principal_id"]);
}

/// A denial's reason is in the CheckResponse's `dynamic_metadata` (for Envoy's access log),
/// never in a header or the body the client gets; an allow has none.
#[tokio::test]
async fn ext_authz_denials_carry_their_reason_in_dynamic_metadata() {
    use envoy_types::pb::google::protobuf::value::Kind;
    let f = fixture();
    let meta = |r: &CheckResponse, field: &str| {
        r.dynamic_metadata
            .as_ref()
            .and_then(|m| m.fields.get(field))
            .and_then(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
    };
    let cases = [
        (authz_req("GET", "/items", &[], &[]), "api_key_missing"),
        (
            authz_req("GET", "/nope", &[("x-api-key", K1)], &[]),
            "route_not_found",
        ),
        (
            authz_req(
                "GET",
                "/items",
                &[("x-api-key", "no-such-key-0123456789")],
                &[],
            ),
            "api_key_unknown",
        ),
        (authz_req("G3T", "/items", &[], &[]), "request_invalid"),
    ];
    for (req, code) in cases {
        let r = f.authz(req).await.expect("answered");
        let (_, body, hs) = denied_parts(&r).expect("denied");
        assert_eq!(meta(&r, "reason_code").as_deref(), Some(code), "{r:?}");
        let detail = meta(&r, "reason_detail").expect("a detail");
        assert!(!body.contains(code) && !body.contains(&detail), "{body}");
        assert!(
            hs.iter()
                .all(|(k, v)| !k.contains("reason") && !v.contains(code)),
            "{hs:?}"
        );
        assert!(!detail.contains("no-such-key-0123456789"), "{detail}");
    }
    let r = f
        .authz(authz_req("GET", "/items", &[("x-api-key", K1)], &[]))
        .await
        .expect("answered");
    assert!(ok_parts(&r).is_some());
    assert_eq!(r.dynamic_metadata, None, "an allow has no reason");
}
