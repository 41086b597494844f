//! Unit tests of [`super`] (`dev.rs`).
use super::*;
use clap::Parser;

#[derive(Parser)]
struct T {
    #[command(subcommand)]
    dev: DevCommand,
}

fn token_args(argv: &[&str]) -> TokenArgs {
    let mut all = vec!["t", "token"];
    all.extend_from_slice(argv);
    match T::try_parse_from(all).expect("valid flags").dev {
        DevCommand::Token(a) => a,
        DevCommand::Echo(_) => unreachable!(),
    }
}

const NOW: u64 = 1_800_000_000;

/// Verifies `token` with the public test JWKS the examples ship, as the example
/// authorizers do (issuer and audience checked), and returns its claims.
fn verify(token: &str, aud: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(include_str!("../../../../examples/jwks.json")).expect("jwks");
    let header = jsonwebtoken::decode_header(token).expect("header");
    let kid = header.kid.expect("a kid");
    let jwk = jwks.find(&kid).expect("the kid is in examples/jwks.json");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key");
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_issuer(&[TEST_ISSUER]);
    v.set_audience(&[aud]);
    v.validate_exp = false;
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .expect("verifies against examples/jwks.json")
        .claims
}

#[test]
fn minted_tokens_verify_against_the_example_jwks_with_the_claims_asked_for() {
    let a = token_args(&[
        "--claim",
        "tenant=acme",
        "--claim",
        "n:=42",
        "--claim",
        "groups:=[\"a\",\"b\"]",
        "--claim",
        "eq=x=y",
        "--sub",
        "alice",
        "--expires-in",
        "10m",
    ]);
    let claims = verify(&mint(&a, NOW).expect("mint"), TEST_AUDIENCE);
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["n"], 42);
    assert_eq!(claims["groups"], json!(["a", "b"]));
    assert_eq!(claims["eq"], "x=y", "only the first = splits");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["token_use"], "id");
    assert_eq!(claims["iat"], NOW);
    assert_eq!(claims["exp"], NOW + 600);
}

#[test]
fn access_tokens_carry_client_id_and_claims_override_defaults() {
    let a = token_args(&[
        "--token-use",
        "access",
        "--claim",
        "scope=pets/read",
        "--claim",
        "iss=https://other.test",
    ]);
    let token = mint(&a, NOW).expect("mint");
    let payload = token.split('.').nth(1).expect("payload");
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    let claims: Value = serde_json::from_slice(&payload).expect("json");
    assert_eq!(claims["client_id"], TEST_AUDIENCE);
    assert_eq!(claims["token_use"], "access");
    assert_eq!(claims.get("aud"), None);
    assert_eq!(claims["scope"], "pets/read");
    assert_eq!(claims["iss"], "https://other.test", "a --claim wins");
}

#[test]
fn bad_claims_are_refused_with_the_reason() {
    for (arg, want) in [
        ("tenant", "expected NAME=VALUE"),
        ("=acme", "empty claim name"),
        ("n:=4x", "not JSON"),
    ] {
        let a = token_args(&["--claim", arg]);
        let e = format!("{:#}", mint(&a, NOW).expect_err(arg));
        assert!(e.contains(want), "{arg}: {e}");
    }
    // --key needs --kid; an unreadable key is an error, not a panic.
    assert!(T::try_parse_from(["t", "token", "--key", "/nonexistent"]).is_err());
    let a = token_args(&["--key", "/nonexistent/key.pem", "--kid", "k"]);
    assert!(format!("{:#}", mint(&a, NOW).expect_err("no file")).contains("cannot read"));
}

#[test]
fn echo_answers_with_the_request_and_the_cost_asked_for() {
    let mut h = HeaderMap::new();
    h.insert("x-api-key", HeaderValue::from_static("k"));
    h.append("x-multi", HeaderValue::from_static("1"));
    h.append("x-multi", HeaderValue::from_static("2"));
    let (status, headers, body) =
        echo_answer("POST", "/v1/chat", Some("cost=120&a=%20b+c&a=2"), &h, None);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[COST_HEADER], "120");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        body,
        json!({"method": "POST", "path": "/v1/chat",
                   "query": {"cost": "120", "a": " b c, 2"},
                   "headers": {"x-api-key": "k", "x-multi": "1, 2"}})
    );

    // --cost is the default; the query wins; no cost → no header.
    let (_, headers, _) = echo_answer("GET", "/", None, &h, Some(7));
    assert_eq!(headers[COST_HEADER], "7");
    let (_, headers, _) = echo_answer("GET", "/", Some("cost=9"), &h, Some(7));
    assert_eq!(headers[COST_HEADER], "9");
    let (_, headers, _) = echo_answer("GET", "/", None, &h, None);
    assert!(headers.get(COST_HEADER).is_none());

    let (status, _, _) = echo_answer("GET", "/", Some("status=503"), &h, None);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    for q in ["status=99", "status=x", "status=600", "cost=%0A"] {
        let (status, _, body) = echo_answer("GET", "/", Some(q), &h, None);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {body}");
    }
}
