//! The bypass battery: every spelling of a request path, on every entry point, gets the
//! decision of its canonical path or a refusal — never an ALLOW the canonical path would not
//! get. Each test runs the real `tollgate` binary against a real `redis-server`, a real HTTP
//! authorizer endpoint and (for ext_authz) a real Envoy that does **not** normalise paths
//! (no `normalize_path`, no `merge_slashes`, escaped slashes kept), to prove Tollgate is safe
//! behind such an Envoy.
//!
//! The config: `ANY /public/{proxy+}` needs nothing; `GET /private/{id}` and
//! `GET /pets/{proxy+}` need the TOKEN authorizer `lambda`, whose behaviour token
//! `deny-secret` allows `GET /*` and explicitly denies `GET /pets/secret`.
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code as RlsCode;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use tollgate_proto::v1::authorization_service_client::AuthorizationServiceClient;
use tollgate_proto::v1::check_service_client::CheckServiceClient;
use tollgate_proto::v1::{AuthorizeRequest, CheckRequestRequest, Decision};
use tollgate_tests::authorizer::AuthorizerEndpoint;
use tollgate_tests::config::{Authorizer, Config, Envoy, Key, Plan, Route, Stage};
use tollgate_tests::envoy::{EnvoyConfig, EnvoyProcess, ExtAuthz};
use tollgate_tests::redis::RedisServer;
use tollgate_tests::tollgate::TollgateProcess;
use tollgate_tests::upstream::EchoUpstream;
use tonic::Code;

const KEY: &str = "bypass-key-0123456789abcdef";

/// Spellings of `/pets/secret` (explicitly denied to `deny-secret`), some of which a
/// non-normalising router and ARN builder would have told apart.
const SECRET_SPELLINGS: &[&str] = &[
    "/pets/secret",
    "/pets/secret/",
    "/pets//secret",
    "//pets/secret",
    "/pets/secret//",
    "/pets/%73ecret",
    "/pets/%73%65%63%72%65%74",
    "/%70ets/secret",
    "/pets/./secret",
    "/pets/x/../secret",
    "/pets/%2e/secret",
    "/pets/x/%2e%2e/secret",
    "/pets/x/%2E%2E/secret",
    "/pets/x/.%2e/secret",
    "/pets%2fsecret",
    "/pets%2Fsecret",
    "/pets/secret;jsessionid=1",
    "/pets/secret;/",
    "/pets%5csecret",
    "/pets/secret%00",
];

/// Spellings that climb from the public route into the private one.
const CLIMBS: &[&str] = &[
    "/public/../private/1",
    "/public/%2e%2e/private/1",
    "/public/%2E%2E/private/1",
    "/public/.%2e/private/1",
    "/public/..%2fprivate/1",
    "/public/..%2Fprivate/1",
    "/public/..;/private/1",
    "/public/..%5cprivate/1",
    "/public/%2e%2e%2fprivate/1",
    "/public/x/../../private/1",
    "/public/..%3B/private/1",
    "/public/%C0%AE%C0%AE/private/1",
];

fn config(redis: &RedisServer, prefix: &str, auth: &AuthorizerEndpoint) -> String {
    let lambda = |method: &str, path: &str| Route::new(method, path).authorizer("lambda");
    Config::redis(redis.url())
        .key_prefix(prefix)
        .pool_size(2)
        .closed()
        .envoy(Envoy::new("petstore", "prod").identity_headers())
        .authorizer(
            Authorizer::token("lambda", &auth.url())
                .timeout(Duration::from_secs(2))
                .result_ttl(Duration::from_secs(300)),
        )
        .petstore(
            Stage::prod()
                .route(Route::new("ANY", "/public/{proxy+}"))
                .route(lambda("GET", "/private/{id}"))
                .route(lambda("GET", "/pets/{proxy+}"))
                .route(Route::keyed("ANY", "/keyed/{proxy+}")),
        )
        .plan(Plan::new("tight").throttle(0.001, 2))
        .key(Key::new("k1", KEY, "tight"))
        .to_yaml()
}

fn check_req(method: &str, path: &str, token: Option<&str>) -> CheckRequestRequest {
    CheckRequestRequest {
        api_id: "petstore".into(),
        stage: "prod".into(),
        http_method: method.into(),
        path: path.into(),
        headers: token
            .map(|t| HashMap::from([("Authorization".to_string(), t.to_string())]))
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// The decision, or the gRPC code of a refusal (which must be INVALID_ARGUMENT).
async fn check_outcome(
    c: &mut CheckServiceClient<tonic::transport::Channel>,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<Decision, Code> {
    match c.check_request(check_req(method, path, token)).await {
        Ok(r) => Ok(Decision::try_from(r.into_inner().decision).unwrap_or(Decision::Unspecified)),
        Err(s) => Err(s.code()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_gets_the_canonical_decision_on_check_and_authorize() {
    let redis = RedisServer::start();
    let auth = AuthorizerEndpoint::start();
    let tg = TollgateProcess::start(&config(&redis, "bypass-grpc", &auth));
    let mut c = tg.client().await;
    let mut a = AuthorizationServiceClient::new(tg.channel().await);

    // The control: the battery can fail — the canonical secret is denied, a sibling allowed.
    assert_eq!(
        check_outcome(&mut c, "GET", "/pets/1", Some("deny-secret")).await,
        Ok(Decision::Allow)
    );
    assert_eq!(
        check_outcome(&mut c, "GET", "/pets/secret", Some("deny-secret")).await,
        Ok(Decision::AccessDenied)
    );
    for path in SECRET_SPELLINGS {
        let got = check_outcome(&mut c, "GET", path, Some("deny-secret")).await;
        assert!(
            matches!(got, Ok(Decision::AccessDenied) | Err(Code::InvalidArgument)),
            "CheckRequest GET {path:?}: {got:?}"
        );
        let r = a
            .authorize(AuthorizeRequest {
                api_id: "petstore".into(),
                stage: "prod".into(),
                http_method: "GET".into(),
                path: path.to_string(),
                headers: HashMap::from([("Authorization".into(), "deny-secret".into())]),
                ..Default::default()
            })
            .await;
        match r {
            Ok(r) => assert_eq!(
                Decision::try_from(r.get_ref().decision),
                Ok(Decision::AccessDenied),
                "Authorize GET {path:?}: {r:?}"
            ),
            Err(s) => assert_eq!(s.code(), Code::InvalidArgument, "Authorize {path:?}: {s:?}"),
        }
    }
    // The public route is public; climbing out of it to the private one is refused (no token).
    assert_eq!(
        check_outcome(&mut c, "GET", "/public/x", None).await,
        Ok(Decision::Allow)
    );
    assert_eq!(
        check_outcome(&mut c, "GET", "/private/1", None).await,
        Ok(Decision::Unauthorized)
    );
    for path in CLIMBS {
        let got = check_outcome(&mut c, "GET", path, None).await;
        assert_eq!(got, Err(Code::InvalidArgument), "CheckRequest GET {path:?}");
        let got = a
            .authorize(AuthorizeRequest {
                api_id: "petstore".into(),
                stage: "prod".into(),
                http_method: "GET".into(),
                path: path.to_string(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().decision);
        assert!(
            matches!(&got, Err(s) if s.code() == Code::InvalidArgument),
            "Authorize GET {path:?}: {got:?}"
        );
    }
    // A gateway's `resource_path` is taken only where it matches the path: naming the public
    // template for a private path does not skip the private route's authorizer.
    let r = c
        .check_request(CheckRequestRequest {
            resource_path: "/public/{proxy+}".into(),
            ..check_req("GET", "/private/1", None)
        })
        .await
        .map(|r| Decision::try_from(r.into_inner().decision));
    assert!(
        !matches!(r, Ok(Ok(Decision::Allow))),
        "resource_path chose the public route: {r:?}"
    );

    // The authorizer saw only canonical paths and method ARNs.
    for e in auth.events() {
        let arn = e["methodArn"].as_str().unwrap_or_default();
        assert!(
            arn.ends_with("/GET/pets/1") || arn.ends_with("/GET/pets/secret"),
            "a non-canonical method ARN reached the authorizer: {arn}"
        );
    }
}

/// A raw HTTP/1.1 request (no client library that would normalise the target); returns the
/// status code.
fn raw_http(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> u16 {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .expect("connect to envoy");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut req = format!("{method} {target} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write request");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response to {target:?}: {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_normalising_envoy_forwards_no_spelling_tollgate_would_deny() {
    let redis = RedisServer::start();
    let auth = AuthorizerEndpoint::start();
    let tg = TollgateProcess::start(&config(&redis, "bypass-envoy", &auth));
    let up = EchoUpstream::start();
    let envoy = EnvoyProcess::start(
        &EnvoyConfig::new(tg.grpc_addr(), up.addr()).ext_authz(ExtAuthz::default()),
    );
    let addr = envoy.listener_addr();
    let tok = [("authorization", "deny-secret")];
    // Controls: allowed paths reach the upstream, the canonical secret does not.
    assert_eq!(raw_http(addr, "GET", "/pets/1", &tok), 200);
    assert_eq!(raw_http(addr, "GET", "/public/x", &[]), 200);
    assert_eq!(raw_http(addr, "GET", "/pets/secret", &tok), 403);
    assert_eq!(up.count(), 2, "{:?}", up.requests());
    for path in SECRET_SPELLINGS {
        let status = raw_http(addr, "GET", path, &tok);
        assert!(
            status == 403 || status == 400,
            "GET {path:?} through Envoy: {status}"
        );
    }
    for path in CLIMBS {
        let status = raw_http(addr, "GET", path, &[]);
        assert!(
            status == 400 || status == 401,
            "GET {path:?} through Envoy: {status}"
        );
    }
    assert_eq!(
        up.count(),
        2,
        "a denied spelling reached the upstream: {:?}",
        up.requests()
    );

    // Identity headers in any spelling a client may send are not passed on: only Tollgate's.
    let spoof = [
        ("authorization", "deny-secret"),
        ("x_tollgate_principal_id", "admin"),
        ("X-Tollgate-Principal-Id", "admin"),
        ("x-tollgate-context-role", "admin"),
        ("X_TOLLGATE_API_KEY_ID", "k-admin"),
    ];
    assert_eq!(raw_http(addr, "GET", "/pets/2", &spoof), 200);
    let seen = up.requests();
    let last = seen.last().expect("the request reached the upstream");
    let hdrs = last["headers"].as_object().expect("echoed headers");
    for (name, value) in hdrs {
        let norm = name.to_ascii_lowercase().replace('_', "-");
        if norm.starts_with("x-tollgate-") {
            assert_ne!(
                value, "admin",
                "{name}: a spoofed identity reached the upstream"
            );
            assert_ne!(
                value, "k-admin",
                "{name}: a spoofed identity reached the upstream"
            );
            assert!(
                !name.contains('_'),
                "{name}: a spoofed header reached the upstream"
            );
        }
    }
    assert_eq!(
        hdrs.get("x-tollgate-principal-id").and_then(|v| v.as_str()),
        Some(tollgate_tests::authorizer::PRINCIPAL),
        "{last}"
    );
}

/// One RLS key descriptor for [`KEY`] on petstore/prod: `method` and `path` entries as given.
fn key_request(method: &str, path: &str) -> RateLimitRequest {
    RateLimitRequest {
        domain: "petstore".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: [
                ("stage", "prod"),
                ("api_key", KEY),
                ("method", method),
                ("path", path),
            ]
            .into_iter()
            .map(|(k, v)| Entry {
                key: k.into(),
                value: v.into(),
            })
            .collect(),
            ..Default::default()
        }],
        hits_addend: 1,
    }
}

/// An `ANY` route is one method: a client inventing method names meets one bucket, on
/// CheckRequest and on the RLS `method` entry alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_methods_share_one_bucket() {
    let redis = RedisServer::start();
    let auth = AuthorizerEndpoint::start();
    let tg = TollgateProcess::start(&config(&redis, "bypass-methods", &auth));
    let mut c = tg.client().await;
    let methods = [
        "GET", "FOO", "BAR", "BAZ", "QUUX", "POST", "PUT", "DELETE", "PATCH", "A", "B",
    ];
    let mut allowed = 0;
    for m in methods {
        let mut r = check_req(m, "/keyed/x", None);
        r.api_key = KEY.into();
        let d = c.check_request(r).await.expect("check").into_inner();
        if Decision::try_from(d.decision) == Ok(Decision::Allow) {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 2, "burst 2, {} methods", methods.len());

    // The RLS path: the same key and route through descriptors, more invented methods.
    let mut rls = RateLimitServiceClient::new(tg.channel().await);
    let mut ok = 0;
    for m in ["ZZZ", "YYY", "XXX", "WWW"] {
        let r = rls
            .should_rate_limit(key_request(m, "/keyed/y"))
            .await
            .expect("rls")
            .into_inner();
        if r.overall_code == RlsCode::Ok as i32 {
            ok += 1;
        }
    }
    assert_eq!(ok, 0, "the bucket was empty; invented methods got through");
}

/// The RLS `path` entry is canonicalised too; a path that must be refused is over the limit
/// (the RLS protocol has no 400), whatever `unknown_key` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_refuses_paths_that_cannot_be_decided() {
    let redis = RedisServer::start();
    let auth = AuthorizerEndpoint::start();
    let tg = TollgateProcess::start(&config(&redis, "bypass-rls", &auth));
    let mut rls = RateLimitServiceClient::new(tg.channel().await);
    let ask = |path: &'static str| key_request("GET", path);
    let r = rls
        .should_rate_limit(ask("/keyed//a/?q=1"))
        .await
        .expect("rls");
    assert_eq!(r.get_ref().overall_code, RlsCode::Ok as i32, "{r:?}");
    for path in [
        "/keyed/../a",
        "/keyed/%2e%2e/a",
        "/keyed%2fa",
        "/keyed/a;x",
        "/keyed/a%00",
    ] {
        let r = rls.should_rate_limit(ask(path)).await.expect("rls");
        assert_eq!(
            r.get_ref().overall_code,
            RlsCode::OverLimit as i32,
            "{path}: {r:?}"
        );
    }
}

/// A request body too big for a 256 KiB gRPC message used to make tonic refuse the ext_authz
/// call before Tollgate ran; Envoy with `failure_mode_allow: true` then forwarded the request
/// with no key check at all. Now the message is decoded and the request denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_body_behind_failure_mode_allow_is_still_checked() {
    let redis = RedisServer::start();
    let auth = AuthorizerEndpoint::start();
    let tg = TollgateProcess::start(&config(&redis, "bypass-body", &auth));
    let up = EchoUpstream::start();
    let mut boot = EnvoyConfig::new(tg.grpc_addr(), up.addr())
        .ext_authz(ExtAuthz {
            failure_mode_allow: true,
            ..ExtAuthz::default()
        })
        .bootstrap();
    let filter = &mut boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"][0]["typed_config"];
    assert_eq!(filter["failure_mode_allow"], true, "{filter}");
    filter["with_request_body"] = serde_json::json!({"max_request_bytes": 1_048_576});
    let envoy = EnvoyProcess::start_bootstrap(&boot);
    let addr = envoy.listener_addr();
    let post = |len: usize| {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .expect("connect to envoy");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let head = format!(
            "POST /keyed/x HTTP/1.1\r\nhost: test\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).expect("write head");
        s.write_all(&vec![b'a'; len]).expect("write body");
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).to_string();
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .unwrap_or(0)
    };
    // No API key on a keyed route: 403, with a small body and with a 300 KiB one.
    assert_eq!(post(10), 403);
    assert_eq!(post(300 * 1024), 403);
    assert_eq!(up.count(), 0, "reached the upstream: {:?}", up.requests());
}
