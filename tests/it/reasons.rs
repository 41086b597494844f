//! Denial reasons end to end: the real `tollgate` binary on a real `redis-server` answers every
//! non-ALLOW check with a `DenialReason` whose code says which check failed and whose detail
//! names the thing (the API key id, the claim, the policy statement, the bucket), logs one
//! debug line per denial (target `tollgate::denial`), and never puts a secret — a key value, a
//! token, a signature — in either. One test per code family, and a hostile one that sends
//! credentials carrying a marker and looks for it everywhere the operator can read.
use std::collections::HashMap;

use serde_json::{Value, json};
use tollgate_proto::v1::authorization_service_client::AuthorizationServiceClient;
use tollgate_proto::v1::{
    AuthorizeRequest, CheckRequestRequest, CheckRequestResponse, Decision, DenialReason,
};
use tollgate_tests::authorizer::AuthorizerEndpoint;
use tollgate_tests::checks::{Client, check, decision};
use tollgate_tests::config::{Api, Authorizer, Config, Period, Plan, Route, Stage};
use tollgate_tests::fixtures::{CLIENT, ISSUER, id_claims, now_s, rs256};
use tollgate_tests::redis::RedisServer;
use tollgate_tests::tollgate::{TollgateProcess, workspace_root};

/// Only the denial lines at debug level: what the error table tells operators to set.
const DENIAL_LOG: (&str, &str) = ("TOLLGATE_LOG", "info,tollgate::denial=debug");
/// Polling deadline for a log line the server writes before it answers.
const LOG_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

const KEY_OK: &str = "reasons-key-ok-0123456789";
const KEY_OFF: &str = "reasons-key-off-0123456789";
const KEY_LONELY: &str = "reasons-key-lonely-012345";

/// The server's log without ANSI colour codes (the log may be coloured).
fn log_text(tg: &TollgateProcess) -> String {
    let raw = tg.stderr_text();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Polls the log until it contains `needle` (the server writes a denial's line before it
/// answers; the pipe to this process may lag).
fn wait_log(tg: &TollgateProcess, needle: &str) -> String {
    let deadline = std::time::Instant::now() + LOG_WAIT;
    loop {
        let log = log_text(tg);
        if log.contains(needle) || std::time::Instant::now() >= deadline {
            return log;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn head(redis: &RedisServer, prefix: &str) -> String {
    format!(
        "server: {{grpc_addr: \"127.0.0.1:0\", metrics_addr: \"127.0.0.1:0\"}}\n\
         store: {{kind: redis, url: \"{url}\", timeout: 2s, key_prefix: {prefix}, pool_size: 2}}\n",
        url = redis.url()
    )
}

fn req(method: &str, path: &str, key: &str, hdrs: &[(&str, &str)]) -> CheckRequestRequest {
    CheckRequestRequest {
        api_id: "petstore".into(),
        stage: "prod".into(),
        http_method: method.into(),
        path: path.into(),
        api_key: key.into(),
        headers: hdrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        ..Default::default()
    }
}

/// The reason of a denial (panics on ALLOW or a missing reason).
fn reason(r: &CheckRequestResponse) -> DenialReason {
    assert_ne!(decision(r), Decision::Allow, "expected a denial: {r:?}");
    r.reason
        .clone()
        .unwrap_or_else(|| panic!("a denial without a reason: {r:?}"))
}

/// Checks `req` and asserts the reason's code and that its detail contains every `named`.
async fn expect(c: &mut Client, req: CheckRequestRequest, code: &str, named: &[&str]) {
    let what = format!("{} {}", req.http_method, req.path);
    let r = check(c, req).await;
    let why = reason(&r);
    assert_eq!(why.code, code, "{what}: {why:?}");
    for n in named {
        assert!(why.detail.contains(n), "{what}: {n:?} not in {why:?}");
    }
}

fn keys_config(redis: &RedisServer) -> String {
    head(redis, "reasons-keys")
        + r#"apis:
  - id: petstore
    stages:
      - name: prod
        routes:
          - {method: GET, path: "/pets", api_key_required: true}
          - {method: POST, path: "/pets", api_key_required: true}
          - {method: GET, path: "/pets/{id}", api_key_required: true}
          - {method: GET, path: "/busy", throttle: {rate_limit: 0.001, burst_limit: 1}}
usage_plans:
  - id: basic
    throttle: {rate_limit: 0.001, burst_limit: 2}
    quota: {limit: 3, period: DAY}
    api_stages:
      - api_id: petstore
        stage: prod
        method_throttle: {"/pets/POST": {rate_limit: 0.001, burst_limit: 1}}
api_keys:
  - {id: k-ok, value: "reasons-key-ok-0123456789", enabled: true, usage_plans: [basic]}
  - {id: k-off, value: "reasons-key-off-0123456789", enabled: false, usage_plans: [basic]}
  - {id: k-lonely, value: "reasons-key-lonely-012345", enabled: true}
"#
}

/// Routes and API keys, every throttle bucket family, the quota; ALLOW has no reason; the
/// debug log has one line per denial with the key id and never the key value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_throttle_and_quota_denials_say_why() {
    let redis = RedisServer::start();
    let tg = TollgateProcess::start_with_env(&keys_config(&redis), &[DENIAL_LOG]);
    let mut c = tg.client().await;

    let ok = check(&mut c, req("GET", "/pets", KEY_OK, &[])).await;
    assert_eq!(decision(&ok), Decision::Allow);
    assert_eq!(ok.reason, None, "ALLOW has no reason");

    expect(
        &mut c,
        req("DELETE", "/pets", KEY_OK, &[]),
        "route_not_found",
        &["DELETE", "/pets"],
    )
    .await;
    expect(
        &mut c,
        req("GET", "/pets", "", &[]),
        "api_key_missing",
        &["x-api-key"],
    )
    .await;
    expect(
        &mut c,
        req("GET", "/pets", "no-such-key-0123", &[]),
        "api_key_unknown",
        &[],
    )
    .await;
    expect(
        &mut c,
        req("GET", "/pets", KEY_OFF, &[]),
        "api_key_disabled",
        &["\"k-off\""],
    )
    .await;
    expect(
        &mut c,
        req("GET", "/pets", KEY_LONELY, &[]),
        "plan_not_on_stage",
        &["\"k-lonely\"", "petstore"],
    )
    .await;

    // The plan's bucket (burst 2, one spent above), a cost above the burst, the plan's method
    // throttle for POST /pets (burst 1), the route's own stage-wide bucket.
    assert_eq!(
        decision(&check(&mut c, req("GET", "/pets", KEY_OK, &[])).await),
        Decision::Allow
    );
    expect(
        &mut c,
        req("GET", "/pets", KEY_OK, &[]),
        "throttled_plan",
        &["\"basic\"", "\"k-ok\""],
    )
    .await;
    let mut big = req("GET", "/pets/1", KEY_OK, &[]);
    big.cost = 5;
    expect(&mut c, big, "cost_above_burst", &["cost 5", "burst 2"]).await;
    assert_eq!(
        decision(&check(&mut c, req("POST", "/pets", KEY_OK, &[])).await),
        Decision::Allow
    );
    expect(
        &mut c,
        req("POST", "/pets", KEY_OK, &[]),
        "throttled_method",
        &["\"basic\"", "POST /pets"],
    )
    .await;
    assert_eq!(
        decision(&check(&mut c, req("GET", "/busy", "", &[])).await),
        Decision::Allow
    );
    expect(
        &mut c,
        req("GET", "/busy", "", &[]),
        "throttled_route",
        &["GET /busy"],
    )
    .await;

    // The quota (3 a day; 3 admitted above): a dry run finds it used up.
    let mut dry = req("GET", "/pets/2", KEY_OK, &[]);
    dry.dry_run = true;
    expect(
        &mut c,
        dry,
        "quota_exceeded",
        &["\"basic\"", "daily quota of 3"],
    )
    .await;

    // The tower client library hands the reason to the gateway.
    let client = tollgate_client::Client::builder([tg.grpc_url()])
        .build()
        .expect("a client");
    let result = client
        .check(tollgate_client::Check {
            api_id: "petstore".into(),
            stage: "prod".into(),
            http_method: "GET".into(),
            path: "/pets".into(),
            api_key: KEY_OFF.into(),
            ..Default::default()
        })
        .await;
    let why = result
        .reason
        .expect("the client's CheckResult carries the reason");
    assert_eq!(why.code, "api_key_disabled", "{why:?}");

    // One debug line per denial, with the key id and never the value.
    let log = wait_log(&tg, "code=quota_exceeded");
    assert!(
        log.contains("code=quota_exceeded"),
        "no denial line for the quota: {}",
        log
    );
    let line = log
        .lines()
        .find(|l| l.contains("api_key_disabled"))
        .unwrap_or_else(|| panic!("no denial line for the disabled key: {log}"));
    assert!(
        line.contains("tollgate::denial") && line.contains("k-off"),
        "{line}"
    );
    assert!(
        line.contains("api=petstore") && line.contains("stage=prod"),
        "{line}"
    );
    for value in [KEY_OK, KEY_OFF, KEY_LONELY] {
        assert!(!log.contains(value), "a key value in the log: {log}");
    }
    let denials = log.lines().filter(|l| l.contains("request denied")).count();
    assert_eq!(denials, 11, "one line per denial: {log}");
}

/// The AI-gateway setup: tenants metered by `claim:tenant` from a JWT user pool.
fn jwt_config(redis: &RedisServer) -> String {
    let chat = || Route::new("POST", "/v1/chat").authorizer("users");
    Config::redis(redis.url())
        .key_prefix("reasons-jwt")
        .pool_size(2)
        .authorizer(Authorizer::jwt("users"))
        .api(
            Api::new("petstore")
                .stage(
                    Stage::prod()
                        .usage_identifier("claim:tenant", Some("free"))
                        .route(chat()),
                )
                .stage(
                    Stage::new("strict")
                        .usage_identifier("claim:tenant", None)
                        .route(chat()),
                ),
        )
        .plan(Plan::new("free").quota(100, Period::Day))
        .to_yaml()
}

/// JWT failures and the missing usage-identifier claim (a token without `tenant` used to get a
/// bare 403).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_and_claim_denials_say_why() {
    let redis = RedisServer::start();
    let tg = TollgateProcess::start_with_env(&jwt_config(&redis), &[DENIAL_LOG]);
    let mut c = tg.client().await;
    let chat = |token: &str| req("POST", "/v1/chat", "", &[("authorization", token)]);

    let mut with_tenant = id_claims("alice");
    with_tenant["tenant"] = Value::from("acme");
    let ok = check(&mut c, chat(&rs256(&with_tenant))).await;
    assert_eq!(decision(&ok), Decision::Allow, "{ok:?}");
    assert_eq!(ok.reason, None);

    // A tenant without a plan on a stage without a default: the detail names the claim and
    // the derived identity id, never the claim's value (it may be a secret or personal data).
    let mut unassigned = id_claims("carol");
    unassigned["tenant"] = Value::from("secret-tenant-value-42");
    let mut strict = chat(&rs256(&unassigned));
    strict.stage = "strict".into();
    let why = reason(&check(&mut c, strict).await);
    assert_eq!(why.code, "identity_not_in_plan", "{why:?}");
    assert!(
        why.detail.contains("claim:tenant") && why.detail.contains("(id i-"),
        "{why:?}"
    );
    assert!(!why.detail.contains("secret-tenant-value"), "{why:?}");

    let r = check(&mut c, chat(&rs256(&id_claims("bob")))).await;
    assert_eq!((r.http_status, r.message.as_str()), (403, "Forbidden"));
    let why = reason(&r);
    assert_eq!(why.code, "claim_missing", "{why:?}");
    assert!(
        why.detail.contains("\"tenant\"") && why.detail.contains("\"users\""),
        "{why:?}"
    );

    let mut expired = with_tenant.clone();
    expired["exp"] = Value::from(now_s() - 3600);
    expect(
        &mut c,
        chat(&rs256(&expired)),
        "token_expired",
        &["\"users\""],
    )
    .await;
    let mut stranger = with_tenant.clone();
    stranger["iss"] = Value::from("https://elsewhere.example.test/pool-9");
    expect(
        &mut c,
        chat(&rs256(&stranger)),
        "token_wrong_issuer",
        &[ISSUER],
    )
    .await;
    let mut other_app = with_tenant.clone();
    other_app["aud"] = Value::from("another-client");
    expect(
        &mut c,
        chat(&rs256(&other_app)),
        "token_wrong_audience",
        &[],
    )
    .await;
    // The payload of one token with the signature of another.
    let good = rs256(&with_tenant);
    let forged = rs256(
        &json!({"sub": "mallory", "iss": ISSUER, "aud": CLIENT, "token_use": "id",
        "tenant": "acme", "iat": now_s() - 10, "exp": now_s() + 3600}),
    );
    let mut parts: Vec<&str> = forged.split('.').collect();
    parts[2] = good.rsplit('.').next().expect("a signature");
    expect(&mut c, chat(&parts.join(".")), "token_bad_signature", &[]).await;
    expect(&mut c, chat("not-a-jwt"), "token_malformed", &[]).await;
    let r = check(&mut c, req("POST", "/v1/chat", "", &[])).await;
    assert_eq!(r.http_status, 401);
    let why = reason(&r);
    assert_eq!(why.code, "identity_source_missing", "{why:?}");
    assert!(why.detail.contains("header:authorization"), "{why:?}");

    let log = wait_log(&tg, "claim_missing");
    assert!(
        log.contains("claim_missing"),
        "no denial line for the missing claim: {}",
        log
    );
    let line = log
        .lines()
        .find(|l| l.contains("claim_missing"))
        .expect("a line");
    assert!(
        line.contains("authorizer=users") && line.contains("principal=\"bob\""),
        "{line}"
    );
}

fn custom_config(redis: &RedisServer, endpoint: &AuthorizerEndpoint) -> String {
    head(redis, "reasons-custom")
        + &format!(
            r#"authorizers:
  - {{name: lambda, type: token, identity_source: "header:Authorization", validation_regex: "^[a-z:-]+$", endpoint: "{url}", timeout: 2s, result_ttl: 0s}}
apis:
  - id: petstore
    stages:
      - name: prod
        routes:
          - {{method: GET, path: "/pets/{{id}}", authorizer: lambda}}
          - {{method: GET, path: "/other", authorizer: lambda}}
"#,
            url = endpoint.url()
        )
}

/// Custom TOKEN authorizer outcomes, through CheckRequest and Authorize.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_authorizer_denials_say_why() {
    let redis = RedisServer::start();
    let endpoint = AuthorizerEndpoint::start();
    let tg = TollgateProcess::start_with_env(&custom_config(&redis, &endpoint), &[DENIAL_LOG]);
    let mut c = tg.client().await;
    let get = |path: &str, token: &str| req("GET", path, "", &[("Authorization", token)]);

    let ok = check(&mut c, get("/pets/1", "allow-pets")).await;
    assert_eq!((decision(&ok), ok.reason.clone()), (Decision::Allow, None));
    // `deny-secret`: Allow GET /*, then Deny GET /pets/secret (the statement at index 1).
    expect(
        &mut c,
        get("/pets/secret", "deny-secret"),
        "policy_denied",
        &["statement #1", "\"lambda\""],
    )
    .await;
    expect(
        &mut c,
        get("/other", "allow-pets"),
        "policy_no_match",
        &["\"lambda\""],
    )
    .await;
    expect(
        &mut c,
        get("/pets/1", "unauthorized"),
        "authorizer_unauthorized",
        &["\"lambda\""],
    )
    .await;
    expect(
        &mut c,
        get("/pets/1", "boom"),
        "authorizer_failed",
        &["HTTP 500"],
    )
    .await;
    expect(
        &mut c,
        get("/pets/1", "garbage"),
        "authorizer_failed",
        &["not JSON"],
    )
    .await;
    expect(
        &mut c,
        get("/pets/1", "Not Valid!"),
        "token_rejected_by_regex",
        &["validation_regex"],
    )
    .await;

    let mut authz = AuthorizationServiceClient::new(tg.channel().await);
    let r = authz
        .authorize(AuthorizeRequest {
            api_id: "petstore".into(),
            stage: "prod".into(),
            http_method: "GET".into(),
            path: "/pets/secret".into(),
            headers: HashMap::from([("Authorization".into(), "deny-secret".into())]),
            ..Default::default()
        })
        .await
        .expect("Authorize")
        .into_inner();
    let why = r.reason.expect("Authorize's denial has a reason");
    assert_eq!(why.code, "policy_denied", "{why:?}");
    assert!(why.detail.contains("statement #1"), "{why:?}");
    let r = authz
        .authorize(AuthorizeRequest {
            api_id: "petstore".into(),
            stage: "prod".into(),
            http_method: "GET".into(),
            path: "/pets/1".into(),
            headers: HashMap::from([("Authorization".into(), "allow-pets".into())]),
            ..Default::default()
        })
        .await
        .expect("Authorize")
        .into_inner();
    assert_eq!(r.reason, None, "ALLOW has no reason");
}

const AKID: &str = "AKIDREASONSTEST";
const SIGV4_SECRET: &str = "reasons/test+secret/0123456789abcdefghijklmn";

fn sigv4_config(redis: &RedisServer, dir: &std::path::Path) -> String {
    let creds = dir.join("credentials.yaml");
    std::fs::write(
        &creds,
        format!(
            "credentials:\n  - access_key_id: {AKID}\n    secret_access_key: \"{SIGV4_SECRET}\"\n    principal_id: \"tester\"\n    resources: [\"arn:aws:execute-api:us-east-1:123456789012:petstore/prod/GET/*\"]\n"
        ),
    )
    .expect("write credentials");
    head(redis, "reasons-sigv4")
        + &format!(
            r#"authorizers:
  - {{name: signed, type: sigv4, service: execute-api, credentials_file: "{creds}"}}
apis:
  - id: petstore
    stages:
      - name: prod
        routes:
          - {{method: GET, path: "/pets", authorizer: signed}}
"#,
            creds = creds.display()
        )
}

/// `yyyymmddThhmmssZ` and `yyyymmdd` for now.
fn amz_date() -> (String, String) {
    let s = now_s();
    let (days, secs) = (s.div_euclid(86_400), s.rem_euclid(86_400));
    let (y, m, d) = tollgate_server::limiter::quota::civil_from_days(days);
    let date = format!("{y:04}{m:02}{d:02}");
    let time = format!(
        "{date}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    );
    (time, date)
}

/// A SigV4 `Authorization` header by `akid` with `signature` (64 hex digits).
fn sigv4_headers(akid: &str, signature: &str) -> Vec<(String, String)> {
    let (time, date) = amz_date();
    vec![
        ("host".into(), "api.example.test".into()),
        ("x-amz-date".into(), time),
        (
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential={akid}/{date}/us-east-1/execute-api/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature={signature}"
            ),
        ),
    ]
}

/// The hex a signature carries as the marker: it must appear in no reason and no log line.
const SIG_MARKER: &str = "5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigv4_denials_say_why() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("a temp dir");
    let tg = TollgateProcess::start_with_env(
        &sigv4_config(&redis, dir.path()),
        &[("TOLLGATE_LOG", "debug")],
    );
    let mut c = tg.client().await;
    let signed = |h: Vec<(String, String)>| {
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        req("GET", "/pets", "", &h)
    };
    expect(
        &mut c,
        req("GET", "/pets", "", &[]),
        "sigv4_missing",
        &["\"signed\""],
    )
    .await;
    expect(
        &mut c,
        signed(sigv4_headers("AKIDNOBODY", SIG_MARKER)),
        "sigv4_unknown_access_key",
        &["\"signed\""],
    )
    .await;
    expect(
        &mut c,
        signed(sigv4_headers(AKID, SIG_MARKER)),
        "sigv4_signature_mismatch",
        &["\"signed\""],
    )
    .await;
    expect(
        &mut c,
        signed(sigv4_headers(AKID, "abc")),
        "sigv4_malformed",
        &["Signature must be 64"],
    )
    .await;
    let mut old = sigv4_headers(AKID, SIG_MARKER);
    old[1].1 = "20200101T000000Z".into();
    let date = amz_date().1;
    old[2].1 = old[2].1.replace(&date, "20200101");
    expect(&mut c, signed(old), "sigv4_expired", &[]).await;

    let log = wait_log(&tg, "sigv4_expired");
    assert!(log.contains("sigv4_expired"), "{}", log);
    assert!(!log.contains(SIG_MARKER), "a signature in the log: {log}");
    assert!(!log.contains(SIGV4_SECRET), "the secret in the log");
}

/// Hostile: an API key value and a token carrying a marker, with every log line on (`debug`):
/// the marker is in no reason, no response field, and no log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_reasons_or_logs() {
    const MARKER: &str = "SeCrEtMaRkEr7f3a";
    let redis = RedisServer::start();
    let endpoint = AuthorizerEndpoint::start();
    let config = head(&redis, "reasons-hostile")
        + &format!(
            r#"authorizers:
  - {{name: lambda, type: token, identity_source: "header:Authorization", endpoint: "{url}", timeout: 2s, result_ttl: 0s}}
  - {{name: users, type: jwt, issuer: "{ISSUER}", jwks_file: "{jwks}", audiences: ["{CLIENT}"]}}
apis:
  - id: petstore
    stages:
      - name: prod
        routes:
          - {{method: GET, path: "/pets", api_key_required: true}}
          - {{method: GET, path: "/custom", authorizer: lambda}}
          - {{method: GET, path: "/jwt", authorizer: users}}
usage_plans:
  - id: basic
    api_stages: [{{api_id: petstore, stage: prod}}]
api_keys:
  - {{id: k-hostile, value: "{MARKER}-disabled-key", enabled: false, usage_plans: [basic]}}
"#,
            url = endpoint.url(),
            jwks = workspace_root()
                .join("server/src/auth/testdata/jwt/jwks.json")
                .display(),
        );
    let tg = TollgateProcess::start_with_env(&config, &[("TOLLGATE_LOG", "debug")]);
    let mut c = tg.client().await;
    let mut claims = id_claims(&format!("user-{MARKER}"));
    claims["exp"] = Value::from(now_s() - 3600);
    claims["secret"] = Value::from(MARKER);
    let requests = [
        req("GET", "/pets", &format!("{MARKER}-unknown-key"), &[]),
        req("GET", "/pets", &format!("{MARKER}-disabled-key"), &[]),
        req(
            "GET",
            "/custom",
            "",
            &[("Authorization", &format!("unauthorized:{MARKER}"))],
        ),
        req(
            "GET",
            "/custom",
            "",
            &[("Authorization", &format!("boom:{MARKER}"))],
        ),
        req(
            "GET",
            "/jwt",
            "",
            &[(
                "Authorization",
                &format!("Bearer {MARKER}.{MARKER}.{MARKER}"),
            )],
        ),
        req("GET", "/jwt", "", &[("Authorization", &rs256(&claims))]),
    ];
    let mut codes = Vec::new();
    for r in requests {
        let resp = check(&mut c, r).await;
        let why = reason(&resp);
        let text = format!("{resp:?}");
        assert!(!text.contains(MARKER), "the marker in the response: {text}");
        codes.push(why.code);
    }
    assert_eq!(
        codes,
        [
            "api_key_unknown",
            "api_key_disabled",
            "authorizer_unauthorized",
            "authorizer_failed",
            "token_malformed",
            "token_expired"
        ]
    );
    let log = wait_log(&tg, "token_expired");
    assert!(log.contains("token_expired"), "{}", log);
    let leaks: Vec<&str> = log.lines().filter(|l| l.contains(MARKER)).collect();
    assert!(leaks.is_empty(), "the marker in log lines: {leaks:#?}");
}

/// Envoy ext_authz: the reason reaches Envoy's access log through the CheckResponse's
/// `dynamic_metadata` (`%DYNAMIC_METADATA(envoy.filters.http.ext_authz:reason_code)%`), and
/// neither the client's response headers nor its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_access_log_gets_the_reason_and_the_client_does_not() {
    use tollgate_tests::envoy::{EnvoyConfig, EnvoyProcess, ExtAuthz};
    use tollgate_tests::upstream::EchoUpstream;
    let redis = RedisServer::start();
    let cfg =
        keys_config(&redis).replace("apis:\n", "envoy: {api_id: petstore, stage: prod}\napis:\n");
    let tg = TollgateProcess::start(&cfg);
    let up = EchoUpstream::start();
    let dir = tempfile::tempdir().expect("a temp dir");
    let access_log = dir.path().join("access.log");
    let mut bootstrap = EnvoyConfig::new(tg.grpc_addr(), up.addr())
        .ext_authz(ExtAuthz::default())
        .bootstrap();
    let hcm = bootstrap
        .pointer_mut("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config")
        .expect("the http connection manager");
    hcm["access_log"] = json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": access_log.display().to_string(),
            "log_format": {"text_format_source": {"inline_string":
                "status=%RESPONSE_CODE% code=%DYNAMIC_METADATA(envoy.filters.http.ext_authz:reason_code)% detail=%DYNAMIC_METADATA(envoy.filters.http.ext_authz:reason_detail)%\n"}},
        },
    }]);
    let envoy = EnvoyProcess::start_bootstrap(&bootstrap);
    let c = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client");
    let r = c
        .get(envoy.url("/pets"))
        .header("x-api-key", KEY_OFF)
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status().as_u16(), 403);
    let headers = format!("{:?}", r.headers());
    let body = r.text().await.expect("a body");
    assert_eq!(body, r#"{"message":"Forbidden"}"#);
    assert!(
        !headers.contains("api_key_disabled") && !headers.contains("k-off"),
        "{headers}"
    );

    // Envoy flushes its access log about once a second: poll with a deadline.
    let deadline = std::time::Instant::now() + LOG_WAIT;
    let log = loop {
        let log = std::fs::read_to_string(&access_log).unwrap_or_default();
        if log.contains("status=403") || std::time::Instant::now() >= deadline {
            break log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        log.contains("status=403 code=api_key_disabled detail=API key \"k-off\" is disabled"),
        "access log: {log:?}; envoy: {}",
        envoy.stderr_text()
    );
    assert!(!log.contains(KEY_OFF), "{log}");
}

/// Envoy's rate limit service has no place for a reason: an over-limit answer is logged —
/// an API key descriptor with the pipeline's code, a generic `descriptors:` rule as
/// `descriptor_over_limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_over_limit_answers_are_logged_with_their_reason() {
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
    use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code as RlsCode;
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
    let redis = RedisServer::start();
    let cfg = keys_config(&redis)
        + "descriptors:\n  - domain: edge\n    descriptors:\n      - key: generic_key\n        value: tiny\n        rate_limit: {unit: hour, requests_per_unit: 1, name: tiny-rule}\n";
    let tg = TollgateProcess::start_with_env(&cfg, &[DENIAL_LOG]);
    let mut rls = RateLimitServiceClient::new(tg.channel().await);
    let ask = |domain: &str, entries: &[(&str, &str)]| RateLimitRequest {
        domain: domain.into(),
        descriptors: vec![RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            ..Default::default()
        }],
        hits_addend: 1,
    };
    let key = [
        ("stage", "prod"),
        ("api_key", KEY_OFF),
        ("method", "GET"),
        ("path", "/pets"),
    ];
    let r = rls
        .should_rate_limit(ask("petstore", &key))
        .await
        .expect("rls");
    assert_eq!(r.get_ref().overall_code, RlsCode::OverLimit as i32, "{r:?}");
    let tiny = [("generic_key", "tiny")];
    let r = rls
        .should_rate_limit(ask("edge", &tiny))
        .await
        .expect("rls");
    assert_eq!(r.get_ref().overall_code, RlsCode::Ok as i32, "{r:?}");
    let r = rls
        .should_rate_limit(ask("edge", &tiny))
        .await
        .expect("rls");
    assert_eq!(r.get_ref().overall_code, RlsCode::OverLimit as i32, "{r:?}");

    let log = wait_log(&tg, "descriptor_over_limit");
    assert!(
        log.contains(
            "code=descriptor_over_limit detail=descriptor #0 is over its rule \"tiny-rule\""
        ),
        "{log}"
    );
    assert!(
        log.contains("code=api_key_disabled detail=API key \"k-off\" is disabled"),
        "{log}"
    );
    assert!(!log.contains(KEY_OFF), "{log}");
}
