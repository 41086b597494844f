//! Unit tests of [`super`] (`sigv4.rs`).
use super::*;
use percent_encoding::percent_decode_str;
use proptest::prelude::*;
use std::path::PathBuf;

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// 2015-08-30T12:36:00Z, the suite's signing time.
const SUITE_TIME_US: u64 = 1_440_938_160 * 1_000_000;
const MINUTE_US: u64 = 60 * 1_000_000;

/// Vectors from the AWS signing test suite that use its standard context: AKIDEXAMPLE,
/// us-east-1, service "service", 2015-08-30T12:36:00Z, 3600 s presign expiry.
const SUITE: &[&str] = &[
    "get-vanilla",
    "get-vanilla-query-order-key-case",
    "get-vanilla-query-order-encoded",
    "get-vanilla-query-unreserved",
    "get-vanilla-utf8-query",
    "get-vanilla-with-session-token",
    "get-unreserved",
    "get-utf8",
    "get-space-normalized",
    "get-relative-normalized",
    "get-relative-relative-normalized",
    "get-slashes-normalized",
    "get-slash-dot-slash-normalized",
    "get-slash-pointless-dot-normalized",
    "get-header-key-duplicate",
    "get-header-value-order",
    "get-header-value-trim",
    "post-vanilla",
    "post-vanilla-query",
    "post-header-key-case",
    "post-header-key-sort",
    "post-header-value-case",
    "post-sts-header-after",
    "post-sts-header-before",
    "post-x-www-form-urlencoded",
    "post-x-www-form-urlencoded-parameters",
];

fn testdata(vector: &str, file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/auth/testdata/sigv4")
        .join(vector)
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn credential(secret: &str) -> SigV4Credential {
    SigV4Credential {
        access_key_id: AKID.to_owned(),
        secret_access_key: secret.to_owned(),
        principal_id: "arn:aws:iam::123456789012:user/example".to_owned(),
        resources: vec!["arn:aws:execute-api:us-east-1:123456789012:*".to_owned()],
        accept_unsigned_payload: false,
    }
}

fn verifier() -> SigV4Verifier {
    SigV4Verifier::new("us-east-1", "service", vec![credential(SECRET)])
}

/// A request as a gateway hands it over: raw path, decoded query, raw headers, body hash.
#[derive(Clone, Debug)]
struct Http {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body_sha256: String,
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8().unwrap().into_owned()
}

impl Http {
    /// Parses the suite's `*-signed-request.txt` format.
    fn parse(text: &str) -> Self {
        let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let request_line = lines.next().unwrap();
        let (method, rest) = request_line.split_once(' ').unwrap();
        let target = rest.strip_suffix(" HTTP/1.1").unwrap_or(rest);
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let query = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect();
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.to_owned(), value.trim_start().to_owned())
            })
            .collect();
        Http {
            method: method.to_owned(),
            path: path.to_owned(),
            query,
            headers,
            body_sha256: hex::encode(Sha256::digest(body.as_bytes())),
        }
    }

    fn vector(name: &str, form: &str) -> Self {
        Self::parse(&testdata(name, &format!("{form}-signed-request.txt")))
    }

    fn view(&self) -> SigV4Request<'_> {
        SigV4Request {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            payload_sha256: Some(&self.body_sha256),
        }
    }

    fn verify_with(&self, v: &SigV4Verifier, now_us: u64) -> Result<String, SigV4Error> {
        v.verify(&self.view(), now_us)
            .map(|c| c.access_key_id.clone())
    }

    fn verify_at(&self, now_us: u64) -> Result<String, SigV4Error> {
        self.verify_with(&verifier(), now_us)
    }

    fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_owned()));
    }

    fn header(&self, name: &str) -> String {
        single_header(&self.headers, name)
            .unwrap()
            .unwrap()
            .to_owned()
    }

    fn set_param(&mut self, name: &str, value: &str) {
        self.query.retain(|(k, _)| k != name);
        self.query.push((name.to_owned(), value.to_owned()));
    }

    /// Signs with this module's own canonicalization (proven by the vectors), for cases the
    /// suite does not cover. Header form signs every header present; presigned signs `host`.
    fn sign(&mut self, secret: &str, presign_expires: Option<u64>, payload: &str) {
        self.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("authorization"));
        let (amz_date, signed) = match presign_expires {
            None => {
                let amz_date = match single_header(&self.headers, "x-amz-date").unwrap() {
                    Some(d) => d.to_owned(),
                    None => format_amz_date(parse_http_date(&self.header("date")).unwrap()),
                };
                let mut names: Vec<String> = self
                    .headers
                    .iter()
                    .map(|(n, _)| n.to_ascii_lowercase())
                    .collect();
                names.sort();
                names.dedup();
                (amz_date, names.join(";"))
            }
            Some(expires) => {
                let amz_date = single_param(&self.query, "X-Amz-Date")
                    .unwrap()
                    .unwrap()
                    .to_owned();
                let scope = format!("{AKID}/{}/us-east-1/service/aws4_request", &amz_date[..8]);
                self.set_param("X-Amz-Algorithm", ALGORITHM);
                self.set_param("X-Amz-Credential", &scope);
                self.set_param("X-Amz-Expires", &expires.to_string());
                self.set_param("X-Amz-SignedHeaders", "host");
                self.query.retain(|(k, _)| k != "X-Amz-Signature");
                (amz_date, "host".to_owned())
            }
        };
        let parts = SignedParts {
            form: match presign_expires {
                None => Form::Header,
                Some(expires_s) => Form::Presigned { expires_s },
            },
            access_key_id: AKID,
            scope_date: &amz_date[..8],
            scope_region: "us-east-1",
            scope_service: "service",
            signed_headers: signed.split(';').collect(),
            signed_headers_raw: &signed,
            signature: [0; 32],
            amz_date: amz_date.clone(),
            request_time_s: 0,
        };
        let creq = canonical_request(&self.view(), &parts, payload).unwrap();
        let scope = credential_scope(&amz_date[..8], "us-east-1", "service");
        let sts = string_to_sign(&amz_date, &scope, &creq);
        let key = signing_key(secret, &amz_date[..8], "us-east-1", "service");
        let signature = hex::encode(hmac(&key, sts.as_bytes()));
        match presign_expires {
                None => self.headers.push((
                    "Authorization".to_owned(),
                    format!("{ALGORITHM} Credential={AKID}/{scope}, SignedHeaders={signed}, Signature={signature}"),
                )),
                Some(_) => self.set_param("X-Amz-Signature", &signature),
            }
    }
}

/// Recomputes canonical request, string to sign and signature for one suite vector and form.
fn check_vector(name: &str, form: &str) {
    let http = Http::vector(name, form);
    let req = http.view();
    let parts = parse_signed_parts(&req).unwrap_or_else(|e| panic!("{name}/{form}: {e}"));
    let payload = payload_hash_candidates(&req, &parts).unwrap()[0];
    let creq = canonical_request(&req, &parts, payload).unwrap();
    assert_eq!(
        creq,
        testdata(name, &format!("{form}-canonical-request.txt")),
        "{name}/{form}: canonical request"
    );
    let scope = credential_scope(parts.scope_date, "us-east-1", "service");
    let sts = string_to_sign(&parts.amz_date, &scope, &creq);
    assert_eq!(
        sts,
        testdata(name, &format!("{form}-string-to-sign.txt")),
        "{name}/{form}: string to sign"
    );
    let key = signing_key(SECRET, parts.scope_date, "us-east-1", "service");
    assert_eq!(
        hex::encode(hmac(&key, sts.as_bytes())),
        testdata(name, &format!("{form}-signature.txt")),
        "{name}/{form}: signature"
    );
    assert_eq!(
        http.verify_at(SUITE_TIME_US),
        Ok(AKID.to_owned()),
        "{name}/{form}: verify"
    );
}

#[test]
fn suite_vectors_header_form() {
    for name in SUITE {
        check_vector(name, "header");
    }
}

#[test]
fn suite_vectors_presigned_form() {
    for name in SUITE.iter().filter(|n| **n != "post-sts-header-after") {
        check_vector(name, "query");
    }
    // That vector appends X-Amz-Security-Token to the URL *after* signing (as AWS IoT
    // does). API Gateway signs every query parameter but X-Amz-Signature, so an unsigned
    // token is a changed query and must fail.
    let http = Http::vector("post-sts-header-after", "query");
    assert_eq!(
        http.verify_at(SUITE_TIME_US),
        Err(SigV4Error::InvalidSignature)
    );
    let mut without_token = http.clone();
    without_token
        .query
        .retain(|(k, _)| k != "X-Amz-Security-Token");
    assert_eq!(without_token.verify_at(SUITE_TIME_US), Ok(AKID.to_owned()));
}

/// The two extra smithy-rs vectors pin down double encoding of an already-encoded path.
#[test]
fn double_encoding_vectors() {
    let expected = testdata("double-encode-path", "header-canonical-request.txt");
    let http = Http::vector("double-encode-path", "header");
    assert_eq!(http.path, "/test/@connections/JBDvjfGEIAMCERw%3D");
    assert_eq!(
        Some(canonical_uri(&http.path).unwrap().as_str()),
        expected.lines().nth(1)
    );

    // A complete Lambda vector: us-east-2, service "lambda", 2021-05-11T15:40:45Z.
    let http = Http::vector("double-url-encode", "header");
    let lambda = SigV4Verifier::new("us-east-2", "lambda", vec![credential(SECRET)]);
    let req = http.view();
    let parts = parse_signed_parts(&req).unwrap();
    let creq = canonical_request(&req, &parts, EMPTY_PAYLOAD_SHA256).unwrap();
    assert_eq!(
        creq,
        testdata("double-url-encode", "header-canonical-request.txt")
    );
    let scope = credential_scope(parts.scope_date, "us-east-2", "lambda");
    assert_eq!(
        string_to_sign(&parts.amz_date, &scope, &creq),
        testdata("double-url-encode", "header-string-to-sign.txt").trim_end()
    );
    assert_eq!(
        http.verify_with(&lambda, 1_620_747_645 * 1_000_000),
        Ok(AKID.to_owned())
    );
}

#[test]
fn canonical_uri_normalizes_then_encodes_the_wire_path_again() {
    for (path, expected) in [
        ("", "/"),
        ("/", "/"),
        ("/pets/a%20b", "/pets/a%2520b"),
        ("/pets/a b", "/pets/a%20b"),
        ("/a/./b/../c/", "/a/c/"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("//a//b//", "/a/b/"),
        ("/../../x", "/x"),
        ("relative", "/relative"),
        ("/%2E%2E/x", "/%252E%252E/x"),
        ("/caf\u{e9}", "/caf%C3%A9"),
        ("/q?x=1", "/q%3Fx%3D1"),
        ("/-._~AZaz09", "/-._~AZaz09"),
    ] {
        assert_eq!(canonical_uri(path).unwrap(), expected, "{path:?}");
    }
}

#[test]
fn canonical_query_sorts_encoded_pairs() {
    let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let query = q(&[
        ("b", "2"),
        ("a", "z"),
        ("a", "y"),
        ("a b", "c/d+e"),
        ("", ""),
    ]);
    assert_eq!(
        canonical_query(&query, false).unwrap(),
        "=&a=y&a=z&a%20b=c%2Fd%2Be&b=2"
    );
    let query = q(&[("X-Amz-Signature", "abc"), ("k", "")]);
    assert_eq!(canonical_query(&query, true).unwrap(), "k=");
    assert_eq!(
        canonical_query(&query, false).unwrap(),
        "X-Amz-Signature=abc&k="
    );
}

#[test]
fn tampering_is_rejected() {
    let good = Http::vector("post-header-key-sort", "header");
    assert_eq!(good.verify_at(SUITE_TIME_US), Ok(AKID.to_owned()));

    let mut http = good.clone();
    http.set_header("My-Header1", "value2");
    assert_eq!(
        http.verify_at(SUITE_TIME_US),
        Err(SigV4Error::InvalidSignature)
    );

    let mut http = good.clone();
    http.set_header("Host", "evil.example.com");
    assert_eq!(
        http.verify_at(SUITE_TIME_US),
        Err(SigV4Error::InvalidSignature)
    );

    let mut http = good.clone();
    http.path = "/admin".to_owned();
    assert_eq!(
        http.verify_at(SUITE_TIME_US),
        Err(SigV4Error::InvalidSignature)
    );

    let mut http = good.clone();
    http.method = "GET".to_owned();
    assert_eq!(
        http.verify_at(SUITE_TIME_US),
        Err(SigV4Error::InvalidSignature)
    );

    let mut http = good.clone();
    http.query.push(("extra".to_owned(), "1".to_owned()));
    assert_eq!(
        http.verify_at(SUITE_TIME_US),
        Err(SigV4Error::InvalidSignature)
    );

    let mut http = good.clone();
    http.body_sha256 = hex::encode(Sha256::digest(b"smuggled"));
    assert_eq!(
        http.verify_at(SUITE_TIME_US),
        Err(SigV4Error::InvalidSignature)
    );

    // Headers outside SignedHeaders may change freely.
    let mut http = good.clone();
    http.set_header("User-Agent", "curl/8");
    assert_eq!(http.verify_at(SUITE_TIME_US), Ok(AKID.to_owned()));

    let mut http = good.clone();
    http.headers.retain(|(n, _)| n != "My-Header1");
    assert!(matches!(
        http.verify_at(SUITE_TIME_US),
        Err(SigV4Error::Malformed(_))
    ));

    let wrong_secret = SigV4Verifier::new("us-east-1", "service", vec![credential("not-it")]);
    assert_eq!(
        good.verify_with(&wrong_secret, SUITE_TIME_US),
        Err(SigV4Error::InvalidSignature)
    );
    let nobody = SigV4Verifier::new("us-east-1", "service", vec![]);
    assert_eq!(
        good.verify_with(&nobody, SUITE_TIME_US),
        Err(SigV4Error::UnknownAccessKey)
    );

    // Flip one signature digit.
    let mut http = good.clone();
    let auth = http.header("authorization");
    let flipped = match auth.strip_suffix('a') {
        Some(rest) => format!("{rest}b"),
        None => format!("{}a", &auth[..auth.len() - 1]),
    };
    http.set_header("Authorization", &flipped);
    assert_eq!(
        http.verify_at(SUITE_TIME_US),
        Err(SigV4Error::InvalidSignature)
    );
}

#[test]
fn request_date_must_be_within_five_minutes() {
    let http = Http::vector("get-vanilla", "header");
    for (now, ok) in [
        (SUITE_TIME_US, true),
        (SUITE_TIME_US + 5 * MINUTE_US, true),
        (SUITE_TIME_US - 5 * MINUTE_US, true),
        (SUITE_TIME_US + 5 * MINUTE_US + 1, false),
        (SUITE_TIME_US + 6 * MINUTE_US, false),
        (SUITE_TIME_US - 6 * MINUTE_US, false),
        (0, false),
        (u64::MAX, false),
    ] {
        let expected = if ok {
            Ok(AKID.to_owned())
        } else {
            Err(SigV4Error::Expired)
        };
        assert_eq!(http.verify_at(now), expected, "now = {now}");
    }
}

#[test]
fn presigned_urls_expire() {
    let http = Http::vector("get-vanilla-query-order-key-case", "query");
    let expires = 3600 * 1_000_000;
    assert_eq!(http.verify_at(SUITE_TIME_US + expires), Ok(AKID.to_owned()));
    assert_eq!(
        http.verify_at(SUITE_TIME_US + expires + 1),
        Err(SigV4Error::Expired)
    );
    assert_eq!(
        http.verify_at(SUITE_TIME_US - 5 * MINUTE_US),
        Ok(AKID.to_owned())
    );
    assert_eq!(
        http.verify_at(SUITE_TIME_US - 6 * MINUTE_US),
        Err(SigV4Error::Expired)
    );

    // X-Amz-Expires is signed: stretching it breaks the signature.
    let mut stretched = http.clone();
    stretched.set_param("X-Amz-Expires", "7200");
    assert_eq!(
        stretched.verify_at(SUITE_TIME_US + expires + 1),
        Err(SigV4Error::InvalidSignature)
    );
    let mut tampered = http.clone();
    tampered.set_param("Param1", "value3");
    assert_eq!(
        tampered.verify_at(SUITE_TIME_US),
        Err(SigV4Error::InvalidSignature)
    );

    for bad in ["0", "604801", "-1", "+5", "1e3", ""] {
        let mut http = http.clone();
        http.set_param("X-Amz-Expires", bad);
        assert!(
            matches!(http.verify_at(SUITE_TIME_US), Err(SigV4Error::Malformed(_))),
            "{bad:?}"
        );
    }

    // The longest allowed lifetime is accepted right up to its end.
    let mut week = Http::vector("get-vanilla", "query");
    week.sign(SECRET, Some(604_800), EMPTY_PAYLOAD_SHA256);
    assert_eq!(
        week.verify_at(SUITE_TIME_US + 604_800 * 1_000_000),
        Ok(AKID.to_owned())
    );
    assert_eq!(
        week.verify_at(SUITE_TIME_US + 604_800 * 1_000_000 + 1),
        Err(SigV4Error::Expired)
    );
}

#[test]
fn presigned_unsigned_payload_is_accepted_but_not_in_the_header_form() {
    let mut http = Http::vector("post-vanilla", "query");
    http.body_sha256 = hex::encode(Sha256::digest(b"{\"any\":\"body\"}"));
    http.sign(SECRET, Some(60), UNSIGNED_PAYLOAD);
    assert_eq!(http.verify_at(SUITE_TIME_US), Ok(AKID.to_owned()));

    let mut http = Http::vector("post-vanilla", "header");
    http.set_header("x-amz-content-sha256", UNSIGNED_PAYLOAD);
    http.sign(SECRET, None, UNSIGNED_PAYLOAD);
    let req = SigV4Request {
        payload_sha256: None,
        ..http.view()
    };
    assert!(matches!(
        verifier().verify(&req, SUITE_TIME_US),
        Err(SigV4Error::Malformed(_))
    ));
}

#[test]
fn a_body_the_gateway_did_not_hash_is_refused_unless_the_credential_accepts_it() {
    // post-x-www-form-urlencoded carries (and signs) x-amz-content-sha256: the client's
    // claim about its body, which proves nothing without the gateway's hash.
    let http = Http::vector("post-x-www-form-urlencoded", "header");
    let req = SigV4Request {
        payload_sha256: None,
        ..http.view()
    };
    assert!(matches!(
        verifier().verify(&req, SUITE_TIME_US),
        Err(SigV4Error::Malformed(m)) if m.contains("body_sha256")
    ));
    // With the gateway's hash of the body that was signed: verified.
    assert!(verifier().verify(&http.view(), SUITE_TIME_US).is_ok());
    // A different body under the same signed header: the signature fails.
    let other = hex::encode(Sha256::digest(b"amount=1000000"));
    let req = SigV4Request {
        payload_sha256: Some(&other),
        ..http.view()
    };
    assert_eq!(
        verifier().verify(&req, SUITE_TIME_US).map(|_| ()),
        Err(SigV4Error::InvalidSignature)
    );
    // A GET whose headers announce a body counts as one too.
    let mut get = Http::vector("get-vanilla", "header");
    get.set_header("Content-Length", "12");
    let req = SigV4Request {
        payload_sha256: None,
        ..get.view()
    };
    assert!(matches!(
        verifier().verify(&req, SUITE_TIME_US),
        Err(SigV4Error::Malformed(_))
    ));
}

#[test]
fn payload_hash_falls_back_to_header_then_empty_body() {
    // post-x-www-form-urlencoded carries (and signs) x-amz-content-sha256; the credential
    // accepts a body the gateway did not hash.
    let http = Http::vector("post-x-www-form-urlencoded", "header");
    let req = SigV4Request {
        payload_sha256: None,
        ..http.view()
    };
    let mut c = credential(SECRET);
    c.accept_unsigned_payload = true;
    let lenient = SigV4Verifier::new("us-east-1", "service", vec![c]);
    assert_eq!(
        lenient
            .verify(&req, SUITE_TIME_US)
            .map(|c| !c.principal_id.is_empty()),
        Ok(true)
    );

    let http = Http::vector("get-vanilla", "header");
    let req = SigV4Request {
        payload_sha256: None,
        ..http.view()
    };
    assert!(verifier().verify(&req, SUITE_TIME_US).is_ok());

    let mut http = Http::vector("get-vanilla", "header");
    http.set_header("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD");
    let req = SigV4Request {
        payload_sha256: None,
        ..http.view()
    };
    assert!(matches!(
        verifier().verify(&req, SUITE_TIME_US),
        Err(SigV4Error::Malformed(_))
    ));
}

#[test]
fn date_header_and_security_token_forms() {
    let mut http = Http::vector("get-vanilla", "header");
    http.headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case("x-amz-date"));
    http.set_header("Date", "Sun, 30 Aug 2015 12:36:00 GMT");
    http.set_header("X-Amz-Security-Token", "session-token");
    http.sign(SECRET, None, &http.body_sha256.clone());
    assert!(
        http.header("authorization")
            .contains("SignedHeaders=date;host;x-amz-security-token,")
    );
    assert_eq!(http.verify_at(SUITE_TIME_US), Ok(AKID.to_owned()));
    assert_eq!(
        http.verify_at(SUITE_TIME_US + 6 * MINUTE_US),
        Err(SigV4Error::Expired)
    );
    http.set_header("X-Amz-Security-Token", "other-token");
    assert_eq!(
        http.verify_at(SUITE_TIME_US),
        Err(SigV4Error::InvalidSignature)
    );
}

#[test]
fn http2_authority_stands_in_for_host() {
    let mut http = Http::vector("get-vanilla", "header");
    let host = http.header("host");
    http.headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case("host"));
    http.headers.push((":authority".to_owned(), host));
    assert_eq!(http.verify_at(SUITE_TIME_US), Ok(AKID.to_owned()));
}

#[test]
fn scope_must_match_date_region_and_service() {
    let http = Http::vector("get-vanilla", "header");
    let other_region = SigV4Verifier::new("eu-west-1", "service", vec![credential(SECRET)]);
    let other_service = SigV4Verifier::new("us-east-1", "execute-api", vec![credential(SECRET)]);
    for v in [&other_region, &other_service] {
        assert!(matches!(
            http.verify_with(v, SUITE_TIME_US),
            Err(SigV4Error::Malformed(_))
        ));
    }

    // Re-signed for the next day with a scope still naming 20150830.
    let mut http = Http::vector("get-vanilla", "header");
    http.set_header("X-Amz-Date", "20150831T000100Z");
    http.sign(SECRET, None, EMPTY_PAYLOAD_SHA256);
    let next_day = 1_440_979_260 * 1_000_000;
    assert_eq!(http.verify_at(next_day), Ok(AKID.to_owned()));
    let auth = http
        .header("authorization")
        .replace("/20150831/", "/20150830/");
    http.set_header("Authorization", &auth);
    assert_eq!(
        http.verify_at(next_day),
        Err(malformed(
            "credential scope date does not match the request date"
        ))
    );
}

#[test]
fn missing_and_malformed_authentication() {
    let good = Http::vector("get-vanilla", "header");
    let mut none = good.clone();
    none.headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case("authorization"));
    assert_eq!(
        none.verify_at(SUITE_TIME_US),
        Err(SigV4Error::MissingAuthenticationToken)
    );

    let mut both = good.clone();
    both.set_param("X-Amz-Algorithm", ALGORITHM);
    assert!(matches!(
        both.verify_at(SUITE_TIME_US),
        Err(SigV4Error::Malformed(_))
    ));

    let mut twice = good.clone();
    let auth = good.header("authorization");
    twice
        .headers
        .push(("authorization".to_owned(), auth.clone()));
    assert!(matches!(
        twice.verify_at(SUITE_TIME_US),
        Err(SigV4Error::Malformed(_))
    ));

    let sig = auth.rsplit("Signature=").next().unwrap().to_owned();
    let cred = format!("Credential={AKID}/20150830/us-east-1/service/aws4_request");
    let cases = [
        format!("AWS4-HMAC-SHA512 {cred}, SignedHeaders=host;x-amz-date, Signature={sig}"),
        format!("Bearer {sig}"),
        "AWS4-HMAC-SHA256".to_owned(),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date"),
        format!("AWS4-HMAC-SHA256 {cred}, {cred}, SignedHeaders=host;x-amz-date, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date, Signature={sig}, Extra=1"),
        format!(
            "AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date, Signature={}",
            &sig[1..]
        ),
        format!(
            "AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date, Signature=zz{}",
            &sig[2..]
        ),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=x-amz-date, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=x-amz-date;host, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=Host;x-amz-date, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;host;x-amz-date, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;;x-amz-date, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host, Signature={sig}"),
        format!(
            "AWS4-HMAC-SHA256 Credential={AKID}/20150830/us-east-1/service, SignedHeaders=host;x-amz-date, Signature={sig}"
        ),
        format!(
            "AWS4-HMAC-SHA256 Credential={AKID}/20150830/us-east-1/service/aws4_reques, SignedHeaders=host;x-amz-date, Signature={sig}"
        ),
        format!("AWS4-HMAC-SHA256 {cred}/x, SignedHeaders=host;x-amz-date, Signature={sig}"),
        format!(
            "AWS4-HMAC-SHA256 Credential=/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}"
        ),
        format!(
            "AWS4-HMAC-SHA256 Credential={AKID}/2015083a/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}"
        ),
        format!(
            "AWS4-HMAC-SHA256 {cred}, SignedHeaders={}, Signature={sig}",
            "a;".repeat(64) + "host"
        ),
        format!(
            "AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date, Signature={sig}{}",
            " ".repeat(MAX_AUTHORIZATION_LEN)
        ),
    ];
    for case in &cases {
        let mut http = good.clone();
        http.set_header("Authorization", case);
        let result = http.verify_at(SUITE_TIME_US);
        assert!(
            matches!(result, Err(SigV4Error::Malformed(_))),
            "{case}: {result:?}"
        );
    }

    for bad_date in [
        "20150830T123600",
        "2015-08-30T12:36:00Z",
        "20150230T123600Z",
        "20150830T246000Z",
        "+0150830T123600Z",
        "20150830T12360Z0",
    ] {
        let mut http = good.clone();
        http.set_header("X-Amz-Date", bad_date);
        assert!(
            matches!(http.verify_at(SUITE_TIME_US), Err(SigV4Error::Malformed(_))),
            "{bad_date}"
        );
    }

    // An unsigned date would let a captured request be replayed with a fresh date.
    let mut http = good.clone();
    http.set_header(
        "Authorization",
        &format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host, Signature={sig}"),
    );
    assert_eq!(
        http.verify_at(SUITE_TIME_US),
        Err(malformed(
            "the x-amz-date header must be listed in SignedHeaders"
        ))
    );

    // Oversized inputs are refused before any work.
    let mut http = good.clone();
    http.path = "/a".repeat(MAX_PATH_LEN);
    assert!(matches!(
        http.verify_at(SUITE_TIME_US),
        Err(SigV4Error::Malformed(_))
    ));
    let mut http = good.clone();
    http.query = (0..=MAX_QUERY_PAIRS)
        .map(|i| (i.to_string(), String::new()))
        .collect();
    assert!(matches!(
        http.verify_at(SUITE_TIME_US),
        Err(SigV4Error::Malformed(_))
    ));
    let mut http = good.clone();
    http.set_header("host", &"h".repeat(MAX_SIGNED_HEADER_BYTES + 1));
    assert!(matches!(
        http.verify_at(SUITE_TIME_US),
        Err(SigV4Error::Malformed(_))
    ));
}

#[test]
fn presigned_parameters_are_required_and_unique() {
    let good = Http::vector("get-vanilla", "query");
    assert_eq!(good.verify_at(SUITE_TIME_US), Ok(AKID.to_owned()));
    for name in [
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
    ] {
        let mut missing = good.clone();
        missing.query.retain(|(k, _)| k != name);
        assert!(
            matches!(
                missing.verify_at(SUITE_TIME_US),
                Err(SigV4Error::Malformed(_))
            ),
            "{name}"
        );
        let mut repeated = good.clone();
        let value = single_param(&good.query, name).unwrap().unwrap().to_owned();
        repeated.query.push((name.to_owned(), value));
        assert!(
            matches!(
                repeated.verify_at(SUITE_TIME_US),
                Err(SigV4Error::Malformed(_))
            ),
            "{name}"
        );
    }
    let mut sha512 = good.clone();
    sha512.set_param("X-Amz-Algorithm", "AWS4-HMAC-SHA512");
    assert!(matches!(
        sha512.verify_at(SUITE_TIME_US),
        Err(SigV4Error::Malformed(_))
    ));
}

#[test]
fn errors_never_contain_secrets_or_signatures() {
    let good = Http::vector("get-vanilla", "header");
    let sig = testdata("get-vanilla", "header-signature.txt");
    let mut outcomes = Vec::new();
    let wrong = SigV4Verifier::new("us-east-1", "service", vec![credential("not-it")]);
    outcomes.push(good.verify_with(&wrong, SUITE_TIME_US));
    outcomes.push(good.verify_at(SUITE_TIME_US + 6 * MINUTE_US));
    for truncate in 0..good.header("authorization").len() {
        let mut http = good.clone();
        let auth = http.header("authorization");
        http.set_header("Authorization", &auth[..truncate]);
        outcomes.push(http.verify_at(SUITE_TIME_US));
    }
    for outcome in outcomes {
        let message = outcome.expect_err("every case fails").to_string();
        assert!(
            !message.contains(SECRET) && !message.contains(&sig),
            "{message}"
        );
        assert!(!message.contains(&sig[..16]), "{message}");
    }
    let debug = format!("{:?} {:?}", credential(SECRET), verifier());
    assert!(!debug.contains(SECRET), "{debug}");
}

#[test]
fn dates_round_trip() {
    assert_eq!(parse_amz_date("20150830T123600Z"), Ok(1_440_938_160));
    assert_eq!(parse_amz_date("19700101T000000Z"), Ok(0));
    assert_eq!(parse_amz_date("20000229T235959Z"), Ok(951_868_799));
    assert!(parse_amz_date("19000229T000000Z").is_err());
    assert!(parse_amz_date("21000229T000000Z").is_err());
    assert_eq!(format_amz_date(1_440_938_160), "20150830T123600Z");
    assert_eq!(
        parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT"),
        Ok(1_440_938_160)
    );
    assert_eq!(parse_http_date("20150830T123600Z"), Ok(1_440_938_160));
    for bad in [
        "Sun, 30 Aug 2015 12:36:00 UTC",
        "Sun, 30 Aug 2015 12:36 GMT",
        "Sunday, 30 Aug 2015 12:36:00 GMT",
        "Sun, 30 Foo 2015 12:36:00 GMT",
        "Sun, 30 Aug 2015 12:36:00 GMT extra",
        "",
    ] {
        assert!(parse_http_date(bad).is_err(), "{bad}");
    }
}

proptest! {
    #[test]
    fn civil_date_conversion_round_trips(days in 0i64..2_932_896) {
        let (y, m, d) = civil_from_days(days);
        prop_assert_eq!(days_from_civil(y, m, d), days);
        let s = format_amz_date(days * 86_400 + 45_296);
        prop_assert_eq!(parse_amz_date(&s), Ok(days * 86_400 + 45_296));
    }

    #[test]
    fn arbitrary_input_never_panics(
        auth in "\\PC{0,300}",
        suffix in "[ -~]{0,80}",
        path in "\\PC{0,64}",
        key in "\\PC{0,16}",
        value in "\\PC{0,16}",
        date in "[0-9TZ]{0,18}",
        now in any::<u64>(),
    ) {
        let query = vec![(key.clone(), value.clone())];
        let headers = vec![
            ("Authorization".to_owned(), format!("AWS4-HMAC-SHA256 Credential={AKID}/20150830/us-east-1/service/aws4_request, SignedHeaders={suffix}, Signature={auth}")),
            ("Authorization-2".to_owned(), auth.clone()),
            ("X-Amz-Date".to_owned(), date.clone()),
            ("Host".to_owned(), value.clone()),
        ];
        let req = SigV4Request { method: "GET", path: &path, query: &query, headers: &headers, payload_sha256: None };
        let _ = verifier().verify(&req, now);
        let headers = vec![("authorization".to_owned(), auth.clone()), ("date".to_owned(), value.clone())];
        let req = SigV4Request { headers: &headers, ..req };
        let _ = verifier().verify(&req, now);
        let query = vec![
            ("X-Amz-Algorithm".to_owned(), ALGORITHM.to_owned()),
            ("X-Amz-Credential".to_owned(), auth.clone()),
            ("X-Amz-Date".to_owned(), date),
            ("X-Amz-Expires".to_owned(), key),
            ("X-Amz-SignedHeaders".to_owned(), suffix),
            ("X-Amz-Signature".to_owned(), value),
        ];
        let req = SigV4Request { query: &query, headers: &[], ..req };
        let _ = verifier().verify(&req, now);
    }
}

// ---- credentials file ----

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn example_credentials_file_loads() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/credentials.yaml");
    let creds = SigV4Verifier::load_credentials(&path, &no_env).unwrap();
    assert_eq!(creds.len(), 1);
    assert_eq!(creds[0].access_key_id, AKID);
    assert_eq!(creds[0].secret_access_key, SECRET);
    assert_eq!(creds[0].principal_id, "arn:aws:iam::123456789012:user/demo");
    assert_eq!(
        creds[0].resources,
        ["arn:aws:execute-api:us-east-1:123456789012:petstore/prod/*/admin/*"]
    );

    let env = |name: &str| (name == "TOLLGATE_DEMO_SECRET").then(|| "from-env".to_owned());
    let creds = SigV4Verifier::load_credentials(&path, &env).unwrap();
    assert_eq!(creds[0].secret_access_key, "from-env");

    let missing = SigV4Verifier::load_credentials(Path::new("/nonexistent/creds.yaml"), &no_env);
    assert!(missing.unwrap_err().contains("/nonexistent/creds.yaml"));
}

#[test]
fn credentials_file_reports_every_problem_without_secrets() {
    let text = r#"
credentials:
  - access_key_id: AKIDONE
    secret_access_key: "first-secret-value"
    principal_id: "user/one"
  - access_key_id: AKIDONE
    secret_access_key: "second-secret-value"
    principal_id: "user/one-again"
  - access_key_id: "bad/id"
    secret_access_key: "third-secret-value"
    principal_id: ""
  - access_key_id: AKIDENV
    secret_access_key_env: MISSING_VAR
    principal_id: "user/env"
    resources: ["arn:aws:execute-api:*", " "]
  - access_key_id: AKIDNONE
    principal_id: "user/none"
"#;
    let errors = parse_credentials(text, &no_env).unwrap_err();
    let joined = errors.join("\n");
    assert_eq!(errors.len(), 6, "{joined}");
    assert!(
        joined.contains("credential AKIDONE: duplicate access_key_id"),
        "{joined}"
    );
    assert!(
        joined.contains("credentials[2]: access_key_id must be"),
        "{joined}"
    );
    assert!(
        joined.contains("credentials[2]: principal_id must not be empty"),
        "{joined}"
    );
    assert!(joined.contains("MISSING_VAR"), "{joined}");
    assert!(
        joined.contains("credential AKIDENV: resources must not contain empty"),
        "{joined}"
    );
    assert!(
        joined.contains("credential AKIDNONE: set secret_access_key_env"),
        "{joined}"
    );
    assert!(!joined.contains("secret-value"), "{joined}");

    for text in [
        "credentials:\n  - access_key_id: AKID\n    secret_access_key: 123456789\n    principal_id: p\n",
        "credentials:\n  - access_key_id: AKID\n    secret_access_key: [\"987654321\"]\n    principal_id: p\n",
    ] {
        if let Err(errors) = parse_credentials(text, &no_env) {
            let joined = errors.join("\n");
            assert!(
                !joined.contains("123456789") && !joined.contains("987654321"),
                "{joined}"
            );
        }
    }
    let unknown = "credentials:\n  - access_key_id: AKID\n    secret: x\n    principal_id: p\n";
    assert!(parse_credentials(unknown, &no_env).is_err());
    assert!(parse_credentials("credentials: []\n", &no_env).is_err());
}
