//! Hostile input on every RPC of the real binary — CheckService, AuthorizationService, the admin
//! API, Envoy ext_authz and RLS: oversized strings and maps, NUL bytes, invalid UTF-8 (sent as raw
//! protobuf bytes), absurd costs, deep and huge JWTs, malformed SigV4 headers, oversized
//! messages. Every case gets a clear status (or a denial, where the API answers with one), the
//! process never panics, and nothing is counted: the key's quota moves only for the valid checks.
use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use tollgate_proto::v1::authorization_service_client::AuthorizationServiceClient;
use tollgate_proto::v1::check_service_client::CheckServiceClient;
use tollgate_proto::v1::{
    AuthorizeRequest, CheckRequestRequest, CreateApiKeyRequest, CreateUsagePlanRequest, Decision,
    GetUsageRequest, ImportApiKeysRequest, ListApiKeysRequest, Quota, Throttle, UpdateUsageRequest,
    UsagePlan,
};
use tollgate_tests::checks::{decision, get_pets};
use tollgate_tests::tollgate::{ADMIN_TOKEN, TollgateProcess, workspace_root};
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

const KEY: &str = "hostile-key-aaaaaaaaaaaaaaaaaaaaaaaa";

fn config() -> String {
    let root = workspace_root();
    let r = root.display();
    format!(
        r#"server: {{grpc_addr: "127.0.0.1:0", metrics_addr: "127.0.0.1:0"}}
authorizers:
  - name: users
    type: jwt
    identity_source: "header:Authorization"
    issuer: "https://issuer.example.test/pool-1"
    jwks_file: "{r}/examples/jwks.json"
    audiences: ["app-client-1"]
  - name: signed
    type: sigv4
    service: execute-api
    credentials_file: "{r}/examples/credentials.yaml"
apis:
  - id: petstore
    stages:
      - name: prod
        routes:
          - {{method: GET, path: "/pets", api_key_required: true}}
          - {{method: GET, path: "/pets/{{petId}}", authorizer: users}}
          - {{method: ANY, path: "/admin/{{proxy+}}", authorizer: signed}}
envoy: {{api_id: petstore, stage: prod}}
descriptors:
  - domain: edge
    descriptors:
      - {{key: remote_address, rate_limit: {{unit: minute, requests_per_unit: 100}}}}
usage_plans:
  - id: metered
    quota: {{limit: 1000, period: DAY}}
    api_stages: [{{api_id: petstore, stage: prod}}]
api_keys:
  - {{id: k1, value: "{KEY}", enabled: true, usage_plans: [metered]}}
"#
    )
}

/// The same fields as `CheckRequestRequest` / `AuthorizeRequest` / `ImportApiKeysRequest`, as
/// raw bytes: what a client that ignores the schema can send.
#[derive(Clone, PartialEq, prost::Message)]
struct RawStrings {
    #[prost(bytes = "vec", tag = "1")]
    f1: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    f2: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    f3: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    f4: Vec<u8>,
    #[prost(bytes = "vec", tag = "6")]
    f6: Vec<u8>,
}

async fn raw_call(ch: Channel, path: &'static str, msg: RawStrings) -> Result<(), tonic::Status> {
    raw_call_as(ch, path, msg, None).await
}

async fn raw_call_as(
    ch: Channel,
    path: &'static str,
    msg: RawStrings,
    token: Option<&str>,
) -> Result<(), tonic::Status> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("ascii token"),
        );
    }
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<RawStrings, ()>::default();
    grpc.unary(req, PathAndQuery::from_static(path), codec)
        .await
        .map(|_| ())
}

/// Mismatches, reported together at the end (one run shows every case that is off).
static FAILURES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn fail(msg: String) {
    FAILURES.lock().expect("lock").push(msg);
}

/// Checks that `r` failed with `code` and a short message containing `needle`.
fn expect_status<T: std::fmt::Debug>(
    what: &str,
    r: Result<T, tonic::Status>,
    code: Code,
    needle: &str,
) {
    match r {
        Err(s) if s.code() != code => fail(format!("{what}: {s:?}, expected {code:?}")),
        Err(s) if !s.message().contains(needle) => fail(format!(
            "{what}: message {:?} lacks {needle:?}",
            s.message()
        )),
        Err(s) if s.message().len() > 1024 => {
            fail(format!("{what}: a message of {} bytes", s.message().len()))
        }
        Err(_) => {}
        Ok(v) => fail(format!("{what}: answered {v:?}, expected {code:?}")),
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// The key's quota left, from an allowed check (which itself costs 1).
async fn remaining(c: &mut CheckServiceClient<Channel>) -> u64 {
    let r = c
        .check_request(get_pets(KEY))
        .await
        .expect("valid check")
        .into_inner();
    assert_eq!(decision(&r), Decision::Allow, "{r:?}");
    r.quota.expect("quota").remaining
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_on_every_rpc_gets_a_clear_answer_and_counts_nothing() {
    let tg = TollgateProcess::start(&config());
    let ch = tg.channel().await;
    let mut check = CheckServiceClient::new(ch.clone());
    let before = remaining(&mut check).await;

    // --- CheckService.CheckRequest ---
    let long = |n: usize| "a".repeat(n);
    let mut many_headers = HashMap::new();
    for i in 0..129 {
        many_headers.insert(format!("h{i}"), "v".into());
    }
    let mut big_maps = HashMap::new();
    for i in 0..100 {
        big_maps.insert(format!("h{i}"), "v".repeat(700));
    }
    let cases: Vec<(&str, CheckRequestRequest, &str)> = vec![
        (
            "api_id over 128",
            CheckRequestRequest {
                api_id: long(129),
                ..get_pets(KEY)
            },
            "api_id",
        ),
        (
            "stage over 128",
            CheckRequestRequest {
                stage: long(129),
                ..get_pets(KEY)
            },
            "stage",
        ),
        (
            "method over 16",
            CheckRequestRequest {
                http_method: long(17),
                ..get_pets(KEY)
            },
            "http_method",
        ),
        (
            "path over 8 KiB",
            CheckRequestRequest {
                path: format!("/{}", long(8192)),
                ..get_pets(KEY)
            },
            "path",
        ),
        (
            "resource_path over 1 KiB",
            CheckRequestRequest {
                resource_path: format!("/{}", long(1024)),
                ..get_pets(KEY)
            },
            "resource_path",
        ),
        (
            "api_key over 1 KiB",
            CheckRequestRequest {
                api_key: long(1025),
                ..get_pets(KEY)
            },
            "api_key",
        ),
        (
            "request_id over 128",
            CheckRequestRequest {
                request_id: long(129),
                ..get_pets(KEY)
            },
            "request_id",
        ),
        (
            "source_ip over 64",
            CheckRequestRequest {
                source_ip: long(65),
                ..get_pets(KEY)
            },
            "source_ip",
        ),
        (
            "129 headers",
            CheckRequestRequest {
                headers: many_headers.clone(),
                ..get_pets(KEY)
            },
            "headers",
        ),
        (
            "129 query parameters",
            CheckRequestRequest {
                query: many_headers,
                ..get_pets(KEY)
            },
            "query",
        ),
        (
            "header value over 8 KiB",
            CheckRequestRequest {
                headers: HashMap::from([("x".into(), long(8193))]),
                ..get_pets(KEY)
            },
            "headers",
        ),
        (
            "header name over 256",
            CheckRequestRequest {
                headers: HashMap::from([(long(257), "v".into())]),
                ..get_pets(KEY)
            },
            "headers",
        ),
        (
            "maps over 64 KiB",
            CheckRequestRequest {
                headers: big_maps,
                ..get_pets(KEY)
            },
            "65536",
        ),
        (
            "cost u64::MAX",
            CheckRequestRequest {
                cost: u64::MAX,
                ..get_pets(KEY)
            },
            "cost",
        ),
        (
            "cost one over the limit",
            CheckRequestRequest {
                cost: 1_000_001,
                ..get_pets(KEY)
            },
            "cost",
        ),
        (
            "no api_id",
            CheckRequestRequest {
                api_id: String::new(),
                ..get_pets(KEY)
            },
            "api_id",
        ),
        (
            "relative path",
            CheckRequestRequest {
                path: "pets".into(),
                ..get_pets(KEY)
            },
            "path",
        ),
        (
            "NUL in method",
            CheckRequestRequest {
                http_method: "GE\0T".into(),
                ..get_pets(KEY)
            },
            "http_method",
        ),
    ];
    for (what, req, needle) in cases {
        expect_status(
            what,
            check.check_request(req).await,
            Code::InvalidArgument,
            needle,
        );
    }
    // NUL inside a key or a path is just input: an unknown key, a path no route has.
    let r = check
        .check_request(CheckRequestRequest {
            api_key: format!("{KEY}\0"),
            ..get_pets(KEY)
        })
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(
        (decision(&r), r.http_status),
        (Decision::Forbidden, 403),
        "{r:?}"
    );
    // A NUL in the path is refused by the canonical-path rules, nothing counted.
    expect_status(
        "NUL in the path",
        check
            .check_request(CheckRequestRequest {
                path: "/pets\0/x".into(),
                ..get_pets(KEY)
            })
            .await,
        Code::InvalidArgument,
        "NUL",
    );
    // A message over 256 KiB is refused before it is decoded.
    expect_status(
        "a 300 KiB message",
        check
            .check_request(CheckRequestRequest {
                stage_variables: HashMap::from([("x".into(), long(300 * 1024))]),
                ..get_pets(KEY)
            })
            .await,
        Code::OutOfRange,
        "too large",
    );
    // Invalid UTF-8 where the schema says string: a decode error (INTERNAL, as gRPC's status
    // code guide has it for unparseable requests) naming the field.
    let raw = RawStrings {
        f1: b"petstore".to_vec(),
        f2: b"prod".to_vec(),
        f3: b"GET".to_vec(),
        f4: b"/pets/\xff\xfe".to_vec(),
        f6: KEY.as_bytes().to_vec(),
    };
    expect_status(
        "invalid UTF-8 path",
        raw_call(
            ch.clone(),
            "/tollgate.v1.CheckService/CheckRequest",
            raw.clone(),
        )
        .await,
        Code::Internal,
        "UTF-8",
    );

    // --- AuthorizationService.Authorize: JWTs ---
    let mut auth = AuthorizationServiceClient::new(ch.clone());
    let authz = |token: String| AuthorizeRequest {
        authorizer: "users".into(),
        api_id: "petstore".into(),
        stage: "prod".into(),
        http_method: "GET".into(),
        path: "/pets/7".into(),
        headers: HashMap::from([("authorization".into(), token)]),
        ..Default::default()
    };
    let header = b64(r#"{"alg":"RS256","typ":"JWT","kid":"test-rsa-1"}"#);
    let deep = format!("{}1{}", r#"{"a":"#.repeat(600), "}".repeat(600));
    let tokens = [
        ("deep JSON payload", format!("{header}.{}.c2ln", b64(&deep))),
        ("5,000 segments", ".".repeat(5000)),
        (
            "alg none",
            format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(r#"{"sub":"x"}"#)),
        ),
        ("not base64", "@@@.###.$$$".into()),
        ("NUL bytes", "a\0b.c\0d.e\0f".into()),
        (
            "huge exponent",
            format!("{header}.{}.c2ln", b64(r#"{"exp":1e999999,"sub":"x"}"#)),
        ),
    ];
    for (what, token) in tokens {
        let r = auth.authorize(authz(token)).await.expect(what).into_inner();
        assert_ne!(r.decision, 1, "{what}: allowed: {r:?}");
    }
    expect_status(
        "a 20 KiB token",
        auth.authorize(authz(format!("{header}.{}.sig", "A".repeat(20 * 1024))))
            .await,
        Code::InvalidArgument,
        "headers",
    );
    expect_status(
        "invalid UTF-8 authorizer name",
        raw_call(
            ch.clone(),
            "/tollgate.v1.AuthorizationService/Authorize",
            RawStrings {
                f1: b"\xc3\x28".to_vec(),
                ..Default::default()
            },
        )
        .await,
        Code::Internal,
        "UTF-8",
    );

    // --- SigV4 through CheckRequest on the signed route ---
    let signed = |authorization: &str, date: &str| CheckRequestRequest {
        path: "/admin/x".into(),
        api_key: String::new(),
        headers: HashMap::from([
            ("authorization".into(), authorization.into()),
            ("x-amz-date".into(), date.into()),
            ("host".into(), "api.example.test".into()),
        ]),
        ..get_pets(KEY)
    };
    let slashes = format!(
        "AWS4-HMAC-SHA256 Credential={}, SignedHeaders=host, Signature=00",
        "/".repeat(2000)
    );
    let many_signed = format!(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/execute-api/aws4_request, SignedHeaders={}, Signature=00",
        (0..600)
            .map(|i| format!("h{i}"))
            .collect::<Vec<_>>()
            .join(";")
    );
    for (what, authz_header, date) in [
        ("no parts", "AWS4-HMAC-SHA256", "20261127T000000Z"),
        (
            "empty credential",
            "AWS4-HMAC-SHA256 Credential=, SignedHeaders=, Signature=",
            "20261127T000000Z",
        ),
        ("2,000 slashes", slashes.as_str(), "20261127T000000Z"),
        (
            "600 signed headers",
            many_signed.as_str(),
            "20261127T000000Z",
        ),
        (
            "non-hex signature",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=zz",
            "20261127T000000Z",
        ),
        (
            "garbage date",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
            "99999999T999999Z",
        ),
        ("NUL in header", "AWS4-HMAC-SHA256\0Credential=\0", "\0"),
    ] {
        let r = check
            .check_request(signed(authz_header, date))
            .await
            .expect(what)
            .into_inner();
        assert!(
            matches!(r.http_status, 401 | 403),
            "{what}: {} {:?}",
            r.http_status,
            decision(&r)
        );
    }

    // --- AdminService ---
    let mut admin = tg.admin().await;
    let key = |f: fn(&mut CreateApiKeyRequest)| {
        let mut k = CreateApiKeyRequest {
            name: "n".into(),
            ..Default::default()
        };
        f(&mut k);
        k
    };
    expect_status(
        "key name of 10 KiB",
        admin
            .create_api_key(key(|k| k.name = "n".repeat(10 * 1024)))
            .await,
        Code::InvalidArgument,
        "name",
    );
    expect_status(
        "key description of 100 KiB",
        admin
            .create_api_key(key(|k| k.description = "d".repeat(100 * 1024)))
            .await,
        Code::InvalidArgument,
        "description",
    );
    expect_status(
        "key value with NUL",
        admin
            .create_api_key(key(|k| k.value = Some(format!("{}\0", "v".repeat(30)))))
            .await,
        Code::InvalidArgument,
        "value",
    );
    expect_status(
        "key value of 129",
        admin
            .create_api_key(key(|k| k.value = Some("v".repeat(129))))
            .await,
        Code::InvalidArgument,
        "value",
    );
    expect_status(
        "key id with a slash",
        admin.create_api_key(key(|k| k.id = "a/b".into())).await,
        Code::InvalidArgument,
        "id",
    );
    let plan = |t: Option<Throttle>, q: Option<Quota>| CreateUsagePlanRequest {
        usage_plan: Some(UsagePlan {
            id: "p".into(),
            throttle: t,
            quota: q,
            ..Default::default()
        }),
    };
    for (what, t) in [
        (
            "NaN rate",
            Throttle {
                rate_limit: f64::NAN,
                burst_limit: 1,
            },
        ),
        (
            "infinite rate",
            Throttle {
                rate_limit: f64::INFINITY,
                burst_limit: 1,
            },
        ),
        (
            "negative rate",
            Throttle {
                rate_limit: -1.0,
                burst_limit: 1,
            },
        ),
        (
            "burst u64::MAX",
            Throttle {
                rate_limit: 1.0,
                burst_limit: u64::MAX,
            },
        ),
    ] {
        expect_status(
            what,
            admin.create_usage_plan(plan(Some(t), None)).await,
            Code::InvalidArgument,
            "throttle",
        );
    }
    expect_status(
        "quota limit 0",
        admin
            .create_usage_plan(plan(
                None,
                Some(Quota {
                    limit: 0,
                    period: 1,
                    offset: 0,
                }),
            ))
            .await,
        Code::InvalidArgument,
        "quota",
    );
    expect_status(
        "quota period 99",
        admin
            .create_usage_plan(plan(
                None,
                Some(Quota {
                    limit: 1,
                    period: 99,
                    offset: 0,
                }),
            ))
            .await,
        Code::InvalidArgument,
        "period",
    );
    let nul_rows = format!("Key,Name,Enabled\n{}\0,n,true\n", "v".repeat(30));
    let r = admin
        .import_api_keys(ImportApiKeysRequest {
            csv: nul_rows,
            fail_on_warnings: true,
        })
        .await;
    expect_status("CSV with NUL", r, Code::InvalidArgument, "");
    expect_status(
        "CSV over 4 MiB",
        admin
            .import_api_keys(ImportApiKeysRequest {
                csv: "x".repeat(5 * 1024 * 1024),
                fail_on_warnings: false,
            })
            .await,
        Code::OutOfRange,
        "too large",
    );
    expect_status(
        "usage for 10 years",
        admin
            .get_usage(GetUsageRequest {
                usage_plan_id: "metered".into(),
                start_date: "2020-01-01".into(),
                end_date: "2030-01-01".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "366",
    );
    expect_status(
        "usage with a garbage date",
        admin
            .get_usage(GetUsageRequest {
                usage_plan_id: "metered".into(),
                start_date: "9999-99-99".into(),
                end_date: "2026-13-01\0".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "date",
    );
    for (what, size, token, needle) in [
        ("page_size u32::MAX", u32::MAX, "", "page_size"),
        ("garbage page token", 10, "\0garbage\u{7f}", "page_token"),
    ] {
        let r = admin
            .list_api_keys(ListApiKeysRequest {
                page_size: size,
                page_token: token.into(),
                ..Default::default()
            })
            .await;
        expect_status(what, r, Code::InvalidArgument, needle);
    }
    let admin_ch = Channel::from_shared(tg.admin_url())
        .expect("uri")
        .connect()
        .await
        .expect("admin channel");
    expect_status(
        "invalid UTF-8 CSV",
        raw_call_as(
            admin_ch,
            "/tollgate.v1.AdminService/ImportApiKeys",
            RawStrings {
                f1: b"Key\n\xff\xff".to_vec(),
                ..Default::default()
            },
            Some(ADMIN_TOKEN),
        )
        .await,
        Code::Internal,
        "UTF-8",
    );
    // UpdateUsage beyond the plan's limit: refused, not stored.
    expect_status(
        "remaining above the limit",
        admin
            .update_usage(UpdateUsageRequest {
                usage_plan_id: "metered".into(),
                key_id: "k1".into(),
                remaining: u64::MAX,
            })
            .await,
        Code::InvalidArgument,
        "remaining",
    );

    // --- Envoy ext_authz and RLS ---
    let mut ext = AuthorizationClient::new(ch.clone());
    let http = |path: String, headers: HashMap<String, String>| CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path,
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    for (what, req) in [
        (
            "a 9 KiB path",
            http(format!("/pets/{}", long(9 * 1024)), HashMap::new()),
        ),
        (
            "200 headers",
            http(
                "/pets".into(),
                (0..200).map(|i| (format!("h{i}"), "v".into())).collect(),
            ),
        ),
        (
            "NUL in the path",
            http(
                "/pe\0ts".into(),
                HashMap::from([("x-api-key".into(), KEY.into())]),
            ),
        ),
    ] {
        let r = ext.check(req).await.expect(what).into_inner();
        let status = r.status.map(|s| s.code).unwrap_or_default();
        assert_ne!(status, 0, "{what}: allowed");
    }
    let mut rls = RateLimitServiceClient::new(ch.clone());
    let descriptor = |v: String| RateLimitDescriptor {
        entries: vec![Entry {
            key: "remote_address".into(),
            value: v,
        }],
        ..Default::default()
    };
    let r = rls
        .should_rate_limit(RateLimitRequest {
            domain: "edge".into(),
            descriptors: (0..1000)
                .map(|i| descriptor(format!("10.0.0.{i}")))
                .collect(),
            hits_addend: u32::MAX,
        })
        .await;
    expect_status(
        "1,000 descriptors, hits u32::MAX",
        r,
        Code::InvalidArgument,
        "descriptors",
    );
    let r = rls
        .should_rate_limit(RateLimitRequest {
            domain: "edge".into(),
            descriptors: vec![descriptor("1.2.3.4".into())],
            hits_addend: u32::MAX,
        })
        .await;
    expect_status(
        "hits_addend u32::MAX",
        r,
        Code::InvalidArgument,
        "hits_addend",
    );

    // Usage reports (the rate limit filter after the response): a hostile request id or cost
    // is refused, a report for an id nobody reserved settles nothing.
    let report = |id: String, hits: Option<u64>| RateLimitRequest {
        domain: "petstore".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "report_request_id".into(),
                value: id,
            }],
            hits_addend: hits.map(|value| envoy_types::pb::google::protobuf::UInt64Value { value }),
            ..Default::default()
        }],
        hits_addend: 0,
    };
    for (what, req, needle) in [
        (
            "report: NUL in the id",
            report("r\0".into(), Some(1)),
            "report_request_id",
        ),
        (
            "report: a 1 KiB id",
            report(long(1024), Some(1)),
            "report_request_id",
        ),
        (
            "report: no hits_addend",
            report("r-1".into(), None),
            "hits_addend",
        ),
        (
            "report: cost u64::MAX",
            report("r-1".into(), Some(u64::MAX)),
            "hits_addend",
        ),
    ] {
        expect_status(
            what,
            rls.should_rate_limit(req).await,
            Code::InvalidArgument,
            needle,
        );
    }
    let r = rls
        .should_rate_limit(report("nobody-reserved-this".into(), Some(0)))
        .await
        .expect("a report for an unknown id")
        .into_inner();
    assert_eq!(r.overall_code, 1, "OK: {r:?}");
    // ext_authz on a metered route with a hostile x-request-id: a 400 denial.
    let mut metered = http(
        "/pets".into(),
        HashMap::from([
            ("x-api-key".into(), KEY.into()),
            ("x-request-id".into(), "id with spaces".into()),
        ]),
    );
    if let Some(a) = metered.attributes.as_mut() {
        a.context_extensions = HashMap::from([("meter".into(), "true".into())]);
    }
    let r = ext.check(metered).await.expect("metered").into_inner();
    assert_ne!(
        r.status.map(|s| s.code).unwrap_or_default(),
        0,
        "hostile x-request-id allowed"
    );

    // Nothing above was counted: the quota moved by the two valid checks only.
    let after = remaining(&mut check).await;
    assert_eq!(after, before - 1, "hostile input consumed quota");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = tg.stderr_text();
    assert!(!logs.contains("panicked"), "{logs}");
    let failures = FAILURES.lock().expect("lock");
    assert!(
        failures.is_empty(),
        "{} cases off:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
