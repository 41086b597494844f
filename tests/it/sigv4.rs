//! Cross-checks Tollgate's SigV4 verifier against AWS's own signer.
//!
//! Every request here is signed by the `aws-sigv4` crate (the implementation inside the AWS SDK
//! for Rust), turned into what a gateway sees — the raw path as on the wire, the query pairs
//! percent-decoded, the headers and the body hash — and handed to
//! `tollgate_server::auth::sigv4::SigV4Verifier`. The unit tests next to the verifier pin it to
//! AWS's published vectors; these tests make sure it also agrees with a real client, for both
//! the `Authorization` header and presigned URLs, including the double-encoded paths that the
//! vectors do not cover.

use std::time::{Duration, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use tollgate_server::auth::sigv4::{SigV4Credential, SigV4Error, SigV4Request, SigV4Verifier};

const REGION: &str = "us-east-1";
const SERVICE: &str = "execute-api";
const AKID: &str = "AKIDTOLLGATETEST";
const SECRET: &str = "tollgate/test+secret/0123456789abcdefghijklmn";
const PRINCIPAL: &str = "arn:aws:iam::123456789012:user/tester";
/// 2023-11-14T22:13:20Z: the signing time of every request below.
const SIGNED_AT_S: u64 = 1_700_000_000;
const SIGNED_AT_US: u64 = SIGNED_AT_S * 1_000_000;
const SECOND_US: u64 = 1_000_000;

fn verifier() -> SigV4Verifier {
    SigV4Verifier::new(
        REGION,
        SERVICE,
        vec![SigV4Credential {
            access_key_id: AKID.to_owned(),
            secret_access_key: SECRET.to_owned(),
            principal_id: PRINCIPAL.to_owned(),
            resources: vec!["arn:aws:execute-api:us-east-1:123456789012:petstore/*".to_owned()],
            accept_unsigned_payload: false,
        }],
    )
}

/// How to sign a request.
#[derive(Clone)]
struct Signing {
    access_key_id: &'static str,
    secret: &'static str,
    session_token: Option<&'static str>,
    /// `Some(seconds)` presigns (query form); `None` signs the `Authorization` header.
    presign_expires: Option<u64>,
    /// Add and sign an `x-amz-content-sha256` header.
    content_sha256_header: bool,
    /// Sign `UNSIGNED-PAYLOAD` instead of the body.
    unsigned_payload: bool,
    /// Signing time, seconds since the epoch.
    at_s: u64,
}

impl Default for Signing {
    fn default() -> Self {
        Self {
            access_key_id: AKID,
            secret: SECRET,
            session_token: None,
            presign_expires: None,
            content_sha256_header: false,
            unsigned_payload: false,
            at_s: SIGNED_AT_S,
        }
    }
}

/// A signed request as a gateway receives it.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    /// Raw path, percent-encoded as on the wire.
    path: String,
    /// Query pairs, percent-decoded.
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body_sha256: String,
}

impl Received {
    fn as_request(&self) -> SigV4Request<'_> {
        SigV4Request {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            payload_sha256: Some(&self.body_sha256),
        }
    }

    fn verify_at(&self, now_us: u64) -> Result<String, SigV4Error> {
        verifier()
            .verify(&self.as_request(), now_us)
            .map(|c| c.principal_id.clone())
    }

    fn verify(&self) -> Result<String, SigV4Error> {
        self.verify_at(SIGNED_AT_US)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Signs `method uri` with `aws-sigv4`, applies the result to an `http::Request`, and returns
/// what the gateway would see.
fn sign_with_aws(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    how: &Signing,
) -> Received {
    let identity = Credentials::new(
        how.access_key_id,
        how.secret,
        how.session_token.map(str::to_owned),
        None,
        "tollgate-tests",
    )
    .into();
    let mut settings = SigningSettings::default();
    if let Some(expires) = how.presign_expires {
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(expires));
    }
    if how.content_sha256_header {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name(SERVICE)
        .time(UNIX_EPOCH + Duration::from_secs(how.at_s))
        .settings(settings)
        .build()
        .expect("complete signing params")
        .into();
    let signable_body = if how.unsigned_payload {
        SignableBody::UnsignedPayload
    } else {
        SignableBody::Bytes(body)
    };
    let signable = SignableRequest::new(method, uri, headers.iter().copied(), signable_body)
        .expect("signable request");
    let (instructions, _signature) = sign(signable, &params).expect("signing").into_parts();

    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut request = builder.body(()).expect("valid request");
    instructions.apply_to_request_http1x(&mut request);

    received(&request, body)
}

/// What a gateway hands the verifier: HTTP clients send `Host` from the URI authority; header
/// names arrive in whatever case (here Title-Case, to exercise case-insensitivity).
fn received(request: &http::Request<()>, body: &[u8]) -> Received {
    let uri = request.uri();
    let mut headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = value.to_str().expect("ASCII header").to_owned();
            (title_case(name.as_str()), value)
        })
        .collect();
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        let authority = uri.authority().expect("absolute URI").as_str().to_owned();
        headers.push(("Host".to_owned(), authority));
    }
    Received {
        method: request.method().as_str().to_owned(),
        path: uri.path().to_owned(),
        query: decode_query(uri.query().unwrap_or("")),
        headers,
        body_sha256: hex::encode(Sha256::digest(body)),
    }
}

fn title_case(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Splits and percent-decodes a raw query string, as the gateway does before calling the
/// verifier. (`+` is left alone: the URIs in these tests always encode it as `%2B`.)
fn decode_query(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .expect("UTF-8 query")
            .into_owned()
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

const BASE: &str = "https://abc123.execute-api.us-east-1.amazonaws.com";

#[test]
fn header_form_get_with_several_query_params() {
    let uri = format!(
        "{BASE}/prod/pets?limit=10&name=J%C3%BCrgen&tag=b&tag=a&empty=&q=hello%20world%2Bmore&sym=%21%2A%27%28%29"
    );
    let req = sign_with_aws(
        "GET",
        &uri,
        &[("accept", "application/json")],
        b"",
        &Signing::default(),
    );
    assert!(req.header("authorization").is_some_and(|a| a.starts_with(
        "AWS4-HMAC-SHA256 Credential=AKIDTOLLGATETEST/20231114/us-east-1/execute-api/aws4_request"
    )));
    assert_eq!(req.verify(), Ok(PRINCIPAL.to_owned()));

    // The verifier sorts: arrival order does not matter.
    let mut reordered = req.clone();
    reordered.query.reverse();
    reordered.headers.reverse();
    assert_eq!(reordered.verify(), Ok(PRINCIPAL.to_owned()));

    let mut tampered = req.clone();
    tampered.query.retain(|(k, _)| k != "limit");
    tampered.query.push(("limit".to_owned(), "1000".to_owned()));
    assert_eq!(tampered.verify(), Err(SigV4Error::InvalidSignature));

    let mut tampered = req.clone();
    tampered.query.push(("admin".to_owned(), "true".to_owned()));
    assert_eq!(tampered.verify(), Err(SigV4Error::InvalidSignature));

    let mut tampered = req.clone();
    tampered.method = "DELETE".to_owned();
    assert_eq!(tampered.verify(), Err(SigV4Error::InvalidSignature));
}

#[test]
fn header_form_post_with_body_hash() {
    let body = br#"{"name":"rex","type":"dog"}"#;
    let uri = format!("{BASE}/prod/pets?dry_run=true");
    let headers = [("content-type", "application/json")];

    // The SDK's usual shape for API Gateway: no x-amz-content-sha256 header, the body hash only
    // inside the canonical request, so the gateway must supply it.
    let req = sign_with_aws("POST", &uri, &headers, body, &Signing::default());
    assert!(req.header("x-amz-content-sha256").is_none());
    assert_eq!(req.verify(), Ok(PRINCIPAL.to_owned()));
    let mut other_body = req.clone();
    other_body.body_sha256 = hex::encode(Sha256::digest(br#"{"name":"rex","type":"cat"}"#));
    assert_eq!(other_body.verify(), Err(SigV4Error::InvalidSignature));
    let unknown_body = SigV4Request {
        payload_sha256: None,
        ..req.as_request()
    };
    assert!(
        matches!(
            verifier().verify(&unknown_body, SIGNED_AT_US).err(),
            Some(SigV4Error::Malformed(m)) if m.contains("body_sha256")
        ),
        "without the gateway's body hash, a POST is refused"
    );

    // With a signed x-amz-content-sha256 header the verifier can fall back to it ...
    let how = Signing {
        content_sha256_header: true,
        ..Signing::default()
    };
    let req = sign_with_aws("POST", &uri, &headers, body, &how);
    assert_eq!(
        req.header("x-amz-content-sha256"),
        Some(req.body_sha256.as_str())
    );
    assert_eq!(req.verify(), Ok(PRINCIPAL.to_owned()));
    let header_only = SigV4Request {
        payload_sha256: None,
        ..req.as_request()
    };
    // ... only where the credential accepts a body the gateway did not hash: the header is
    // the client's claim, not proof of the body it sent.
    assert!(matches!(
        verifier().verify(&header_only, SIGNED_AT_US),
        Err(SigV4Error::Malformed(_))
    ));
    let lenient = SigV4Verifier::new(
        REGION,
        SERVICE,
        vec![SigV4Credential {
            access_key_id: AKID.to_owned(),
            secret_access_key: SECRET.to_owned(),
            principal_id: PRINCIPAL.to_owned(),
            resources: vec!["arn:aws:execute-api:us-east-1:123456789012:petstore/*".to_owned()],
            accept_unsigned_payload: true,
        }],
    );
    assert!(lenient.verify(&header_only, SIGNED_AT_US).is_ok());
    // ... but a body that does not match what was signed still fails.
    let mut other_body = req.clone();
    other_body.body_sha256 = hex::encode(Sha256::digest(b"{}"));
    assert_eq!(other_body.verify(), Err(SigV4Error::InvalidSignature));
}

#[test]
fn paths_with_spaces_unicode_and_reserved_characters() {
    for path in [
        "/prod/pets/a%20b",
        "/prod/pets/%E2%9C%93/caf%C3%A9",
        "/prod/pets/J%C3%BCrgen%20M%C3%BCller/toys",
        "/prod/files/report%2F2024.pdf",
        "/prod/a%2Bb/c+d/e%25f",
        "/prod/at@sign/colon:x/comma,y/semi;z/eq=1",
        "/prod/./pets/../pets//dogs/",
        "/",
    ] {
        let uri = format!("{BASE}{path}?k=v");
        let req = sign_with_aws("GET", &uri, &[], b"", &Signing::default());
        assert_eq!(req.path, path, "the gateway passes the wire path through");
        assert_eq!(req.verify(), Ok(PRINCIPAL.to_owned()), "{path}");

        let mut tampered = req.clone();
        tampered.path = format!("{path}x");
        assert_eq!(
            tampered.verify(),
            Err(SigV4Error::InvalidSignature),
            "{path}"
        );
    }

    // Passing the *decoded* path instead of the raw one breaks verification: the SDK signs the
    // wire form encoded once more ("double encoding").
    let req = sign_with_aws(
        "GET",
        &format!("{BASE}/prod/pets/a%20b"),
        &[],
        b"",
        &Signing::default(),
    );
    let mut decoded = req.clone();
    decoded.path = "/prod/pets/a b".to_owned();
    assert_eq!(decoded.verify(), Err(SigV4Error::InvalidSignature));
}

#[test]
fn presigned_get_and_expiry() {
    let how = Signing {
        presign_expires: Some(300),
        ..Signing::default()
    };
    let uri = format!("{BASE}/prod/pets/a%20b?format=json&ids=1%2C2%2C3");
    let req = sign_with_aws("GET", &uri, &[], b"", &how);
    assert!(req.header("authorization").is_none());
    let param = |name: &str| {
        req.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(param("X-Amz-Algorithm"), Some("AWS4-HMAC-SHA256"));
    assert_eq!(param("X-Amz-Expires"), Some("300"));
    assert!(param("X-Amz-Signature").is_some());

    assert_eq!(req.verify(), Ok(PRINCIPAL.to_owned()));
    assert_eq!(
        req.verify_at(SIGNED_AT_US + 300 * SECOND_US),
        Ok(PRINCIPAL.to_owned())
    );
    assert_eq!(
        req.verify_at(SIGNED_AT_US + 301 * SECOND_US),
        Err(SigV4Error::Expired)
    );
    assert_eq!(
        req.verify_at(SIGNED_AT_US - 360 * SECOND_US),
        Err(SigV4Error::Expired),
        "dated more than 5 minutes in the future"
    );

    let mut tampered = req.clone();
    for (k, v) in &mut tampered.query {
        if k == "ids" {
            *v = "1,2,3,4".to_owned();
        }
    }
    assert_eq!(tampered.verify(), Err(SigV4Error::InvalidSignature));

    let mut stretched = req.clone();
    for (k, v) in &mut stretched.query {
        if k == "X-Amz-Expires" {
            *v = "604800".to_owned();
        }
    }
    assert_eq!(
        stretched.verify_at(SIGNED_AT_US + 3600 * SECOND_US),
        Err(SigV4Error::InvalidSignature)
    );
}

#[test]
fn presigned_with_body_hash_unsigned_payload_and_session_token() {
    let body = b"name=rex&type=dog";
    let uri = format!("{BASE}/prod/pets");
    let headers = [("content-type", "application/x-www-form-urlencoded")];

    let how = Signing {
        presign_expires: Some(3600),
        ..Signing::default()
    };
    let req = sign_with_aws("POST", &uri, &headers, body, &how);
    assert_eq!(req.verify(), Ok(PRINCIPAL.to_owned()));
    let mut other_body = req.clone();
    other_body.body_sha256 = hex::encode(Sha256::digest(b"name=rex&type=cat"));
    assert_eq!(other_body.verify(), Err(SigV4Error::InvalidSignature));

    // UNSIGNED-PAYLOAD: the body is not covered, so any body verifies.
    let how = Signing {
        presign_expires: Some(3600),
        unsigned_payload: true,
        ..Signing::default()
    };
    let req = sign_with_aws("PUT", &uri, &headers, body, &how);
    assert_eq!(req.verify(), Ok(PRINCIPAL.to_owned()));
    let mut other_body = req.clone();
    other_body.body_sha256 = hex::encode(Sha256::digest(b"anything"));
    assert_eq!(other_body.verify(), Ok(PRINCIPAL.to_owned()));

    // Temporary credentials: the token travels (and is signed) as X-Amz-Security-Token.
    let how = Signing {
        presign_expires: Some(60),
        session_token: Some("FwoGZXIvYXdzEXAMPLE//token+with/slashes=="),
        ..Signing::default()
    };
    let req = sign_with_aws("GET", &format!("{BASE}/prod/pets?x=1"), &[], b"", &how);
    assert!(req.query.iter().any(|(k, _)| k == "X-Amz-Security-Token"));
    assert_eq!(req.verify(), Ok(PRINCIPAL.to_owned()));
    let mut tampered = req.clone();
    for (k, v) in &mut tampered.query {
        if k == "X-Amz-Security-Token" {
            v.push('x');
        }
    }
    assert_eq!(tampered.verify(), Err(SigV4Error::InvalidSignature));
}

#[test]
fn header_form_with_session_token() {
    let how = Signing {
        session_token: Some("FwoGZXIvYXdzEXAMPLE//token+with/slashes=="),
        ..Signing::default()
    };
    let req = sign_with_aws("DELETE", &format!("{BASE}/prod/pets/7"), &[], b"", &how);
    assert!(
        req.header("authorization")
            .is_some_and(|a| a.contains("x-amz-security-token"))
    );
    assert_eq!(req.verify(), Ok(PRINCIPAL.to_owned()));
    let mut tampered = req.clone();
    tampered
        .headers
        .retain(|(n, _)| n != "X-Amz-Security-Token");
    tampered
        .headers
        .push(("X-Amz-Security-Token".to_owned(), "other".to_owned()));
    assert_eq!(tampered.verify(), Err(SigV4Error::InvalidSignature));
}

#[test]
fn clock_skew_is_limited_to_five_minutes() {
    let req = sign_with_aws(
        "GET",
        &format!("{BASE}/prod/pets"),
        &[],
        b"",
        &Signing::default(),
    );
    for (offset_s, ok) in [
        (-299i64, true),
        (299, true),
        (300, true),
        (-301, false),
        (360, false),
    ] {
        let now = SIGNED_AT_US.saturating_add_signed(offset_s * 1_000_000);
        let expected = if ok {
            Ok(PRINCIPAL.to_owned())
        } else {
            Err(SigV4Error::Expired)
        };
        assert_eq!(req.verify_at(now), expected, "offset {offset_s}s");
    }
}

#[test]
fn unknown_key_wrong_secret_and_wrong_scope() {
    let uri = format!("{BASE}/prod/pets");
    let unknown = Signing {
        access_key_id: "AKIDSOMEONEELSE",
        ..Signing::default()
    };
    let req = sign_with_aws("GET", &uri, &[], b"", &unknown);
    assert_eq!(req.verify(), Err(SigV4Error::UnknownAccessKey));

    let wrong_secret = Signing {
        secret: "not-the-secret",
        ..Signing::default()
    };
    let req = sign_with_aws("GET", &uri, &[], b"", &wrong_secret);
    assert_eq!(req.verify(), Err(SigV4Error::InvalidSignature));

    let req = sign_with_aws("GET", &uri, &[], b"", &Signing::default());
    let eu = SigV4Verifier::new("eu-west-1", SERVICE, vec![]);
    assert!(matches!(
        eu.verify(&req.as_request(), SIGNED_AT_US),
        Err(SigV4Error::Malformed(_))
    ));
    let lambda = SigV4Verifier::new(REGION, "lambda", vec![]);
    assert!(matches!(
        lambda.verify(&req.as_request(), SIGNED_AT_US),
        Err(SigV4Error::Malformed(_))
    ));

    let mut unsigned = req.clone();
    unsigned
        .headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case("authorization"));
    assert_eq!(
        unsigned.verify(),
        Err(SigV4Error::MissingAuthenticationToken)
    );
}

#[test]
fn example_credentials_file_verifies_sdk_requests() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/credentials.yaml");
    let env = |_: &str| None;
    let credentials = SigV4Verifier::load_credentials(&path, &env).expect("example file loads");
    let demo = SigV4Verifier::new(REGION, SERVICE, credentials);
    let how = Signing {
        access_key_id: "AKIDEXAMPLE",
        secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        ..Signing::default()
    };
    let req = sign_with_aws("GET", &format!("{BASE}/prod/admin/users"), &[], b"", &how);
    let credential = demo
        .verify(&req.as_request(), SIGNED_AT_US)
        .expect("demo credential verifies");
    assert_eq!(
        credential.principal_id,
        "arn:aws:iam::123456789012:user/demo"
    );
    assert_eq!(
        credential.resources,
        ["arn:aws:execute-api:us-east-1:123456789012:petstore/prod/*/admin/*"]
    );
}

/// Characters left raw in generated wire paths (beyond unreserved): sub-delims and `:`/`@`,
/// which RFC 3986 allows in a path and `http::Uri` accepts.
const WIRE_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever path and query the SDK signs, the verifier accepts it, in both forms.
    #[test]
    fn sdk_signed_requests_always_verify(
        segments in prop::collection::vec(
            prop_oneof![
                Just(".".to_owned()),
                Just("..".to_owned()),
                Just(String::new()),
                "\\PC{0,8}",
                "[ -~]{0,8}",
            ],
            0..6,
        ),
        query in prop::collection::vec(("\\PC{0,6}", "[ -~]{0,6}"), 0..5),
        method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]),
        body in prop::collection::vec(any::<u8>(), 0..32),
        presign in any::<bool>(),
    ) {
        let path: String = segments
            .iter()
            .map(|s| format!("/{}", utf8_percent_encode(s, WIRE_PATH)))
            .collect();
        let query_string = query
            .iter()
            .map(|(k, v)| format!("{}={}", utf8_percent_encode(k, NON_ALPHANUMERIC), utf8_percent_encode(v, NON_ALPHANUMERIC)))
            .collect::<Vec<_>>()
            .join("&");
        let uri = if query_string.is_empty() {
            format!("{BASE}{path}")
        } else {
            format!("{BASE}{path}?{query_string}")
        };
        let how = Signing {
            presign_expires: presign.then_some(900),
            ..Signing::default()
        };
        let req = sign_with_aws(method, &uri, &[("x-custom", " spaced   value ")], &body, &how);
        prop_assert_eq!(req.verify(), Ok(PRINCIPAL.to_owned()), "uri {}", uri);
    }
}

/// End to end: requests signed by `aws-sigv4` *now*, sent through `CheckRequest` to a real
/// `tollgate` process whose route uses a `sigv4` authorizer.
#[test]
fn sigv4_through_check_request_end_to_end() {
    use tollgate_proto::v1::{
        CheckRequestRequest, Decision, check_service_client::CheckServiceClient,
    };
    use tollgate_server::clock::{Clock, SystemClock};
    use tollgate_tests::redis::RedisServer;
    use tollgate_tests::tollgate::TollgateProcess;

    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("tollgate-sigv4-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let creds = dir.join("credentials.yaml");
    std::fs::write(
        &creds,
        format!(
            "credentials:\n  - access_key_id: {AKID}\n    secret_access_key: \"{SECRET}\"\n    principal_id: \"{PRINCIPAL}\"\n    resources: [\"arn:aws:execute-api:us-east-1:123456789012:petstore/prod/*/admin/*\"]\n"
        ),
    )
    .expect("write credentials");
    let tg = TollgateProcess::start(&format!(
        r#"server: {{grpc_addr: "127.0.0.1:0", metrics_addr: "127.0.0.1:0"}}
store: {{kind: redis, url: "{url}", timeout: 2s, key_prefix: sigv4e2e}}
authorizers:
  - {{name: signed, type: sigv4, service: execute-api, credentials_file: "{creds}"}}
apis:
  - id: petstore
    stages:
      - name: prod
        routes:
          - {{method: ANY, path: "/admin/{{proxy+}}", authorizer: signed}}
          - {{method: GET, path: "/other", authorizer: signed}}
"#,
        url = redis.url(),
        creds = creds.display()
    ));
    let now_s = SystemClock.now_micros() / 1_000_000;
    let how = Signing {
        at_s: now_s,
        ..Signing::default()
    };
    let to_check = |r: &Received| CheckRequestRequest {
        api_id: "petstore".into(),
        stage: "prod".into(),
        http_method: r.method.clone(),
        path: r.path.clone(),
        headers: r.headers.iter().cloned().collect(),
        query: r.query.iter().cloned().collect(),
        body_sha256: r.body_sha256.clone(),
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let c: CheckServiceClient<_> = tg.client().await;
        let check = |req: CheckRequestRequest| {
            let mut c = c.clone();
            async move { c.check_request(req).await.expect("check").into_inner() }
        };
        // Signed and allowed by the principal's resources.
        let ok = sign_with_aws("POST", &format!("{BASE}/admin/users?x=1"), &[], b"{}", &how);
        let r = check(to_check(&ok)).await;
        assert_eq!(r.decision, Decision::Allow as i32, "{r:?}");
        assert_eq!(
            r.identity.map(|i| i.principal_id).as_deref(),
            Some(PRINCIPAL)
        );
        // The same signature on another path: the signature no longer matches.
        let mut tampered = to_check(&ok);
        tampered.path = "/admin/root".into();
        let r = check(tampered).await;
        assert_eq!(
            (r.decision, r.http_status),
            (Decision::AccessDenied as i32, 403)
        );
        assert_eq!(
            r.message,
            "The request signature we calculated does not match the signature you provided."
        );
        // A valid signature for a resource the principal may not invoke.
        let other = sign_with_aws("GET", &format!("{BASE}/other"), &[], b"", &how);
        let r = check(to_check(&other)).await;
        assert_eq!(
            (r.decision, r.http_status),
            (Decision::AccessDenied as i32, 403)
        );
        assert_eq!(r.message, "User is not authorized to access this resource");
        // Unsigned.
        let mut bare = to_check(&ok);
        bare.headers.clear();
        let r = check(bare).await;
        assert_eq!(r.message, "Missing Authentication Token");
        assert_eq!(r.http_status, 403);
        // Presigned URL form.
        let pre = sign_with_aws(
            "GET",
            &format!("{BASE}/admin/report"),
            &[],
            b"",
            &Signing {
                presign_expires: Some(300),
                ..how.clone()
            },
        );
        let r = check(to_check(&pre)).await;
        assert_eq!(r.decision, Decision::Allow as i32, "{r:?}");

        // Every query pair is signed: sent as `query_params`, a second `amount=` the client
        // appended fails the signature (the lossy map would have kept only one of them).
        let pairs = |r: &Received, extra: &[(&str, &str)]| {
            r.query
                .iter()
                .cloned()
                .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
                .map(|(name, value)| tollgate_proto::v1::QueryParam { name, value })
                .collect::<Vec<_>>()
        };
        let signed = sign_with_aws("GET", &format!("{BASE}/admin/pay?amount=1"), &[], b"", &how);
        let mut req = to_check(&signed);
        req.query_params = pairs(&signed, &[]);
        let r = check(req.clone()).await;
        assert_eq!(r.decision, Decision::Allow as i32, "{r:?}");
        req.query_params = pairs(&signed, &[("amount", "1000")]);
        let r = check(req).await;
        assert_eq!(
            (r.decision, r.http_status),
            (Decision::AccessDenied as i32, 403),
            "{r:?}"
        );
        // A body the gateway did not hash: refused, not verified against the client's claim.
        let mut unhashed = to_check(&ok);
        unhashed.body_sha256.clear();
        let r = check(unhashed).await;
        assert_eq!(
            (r.decision, r.http_status),
            (Decision::AccessDenied as i32, 403),
            "{r:?}"
        );
        assert_eq!(r.message, "Authorization header is malformed");
    });
    let _ = std::fs::remove_dir_all(dir);
}
