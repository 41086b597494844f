//! Unit tests of [`super`] (`jwt.rs`).
use std::path::Path;
use std::sync::OnceLock;

#[test]
fn the_published_test_keys_are_recognised_also_under_another_kid() {
    let shipped = include_str!("../testdata/jwt/jwks.json");
    assert_eq!(
        published_test_keys(shipped.as_bytes()),
        ["tollgate-test-rsa-1", "tollgate-test-ec-1"]
    );
    let renamed = shipped.replace("tollgate-test-", "prod-");
    assert_eq!(
        published_test_keys(renamed.as_bytes()),
        ["prod-rsa-1", "prod-ec-1"]
    );
    // Other key material under another kid is somebody's real key.
    let mut other: Value = serde_json::from_str(&renamed).unwrap();
    for k in other["keys"].as_array_mut().unwrap() {
        for f in ["n", "x"] {
            if let Some(v) = k.get_mut(f) {
                *v = Value::from(format!("A{}", v.as_str().unwrap()));
            }
        }
    }
    assert!(published_test_keys(other.to_string().as_bytes()).is_empty());
    assert!(published_test_keys(b"not json").is_empty());
}
use std::sync::atomic::AtomicUsize;

use jsonwebtoken::{EncodingKey, Header};
use proptest::prelude::*;
use serde_json::json;

use super::*;

const ISSUER: &str = "https://issuer.example.test/pool-1";
const CLIENT: &str = "app-client-1";
/// Any time works (time is an argument); this one is in 2027.
const NOW: u64 = 1_800_000_000;
const RSA_KID: &str = "tollgate-test-rsa-1";
const EC_KID: &str = "tollgate-test-ec-1";
/// In jwks-rotated.json only.
const ROTATED_KID: &str = "tollgate-test-rsa-2";
/// In no JWKS.
const STRANGER_KID: &str = "tollgate-test-rsa-3";
const RSA_1: &[u8] = include_bytes!("../testdata/jwt/rsa-1.pem");
const RSA_1_PUB: &[u8] = include_bytes!("../testdata/jwt/rsa-1.pub.pem");
const RSA_2: &[u8] = include_bytes!("../testdata/jwt/rsa-2.pem");
const EC_1: &[u8] = include_bytes!("../testdata/jwt/ec-1.pem");
const JWKS: &str = include_str!("../testdata/jwt/jwks.json");
const JWKS_ROTATED: &str = include_str!("../testdata/jwt/jwks-rotated.json");

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/auth/testdata/jwt")
        .join(name)
}

/// A JWKS file of the test's own, which it may rewrite; removed on drop.
struct TempJwks(PathBuf);

impl TempJwks {
    fn new(contents: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("tollgate-jwt-test-{}-{n}.json", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }

    fn source(&self) -> JwksSource {
        JwksSource::File(self.0.clone())
    }

    fn rewrite(&self, contents: impl AsRef<[u8]>) {
        std::fs::write(&self.0, contents).unwrap();
    }
}

impl Drop for TempJwks {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn sign_with(header: Header, pem: &[u8], claims: &Value) -> String {
    let key = match header.alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem).unwrap(),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => EncodingKey::from_secret(pem),
        _ => EncodingKey::from_rsa_pem(pem).unwrap(),
    };
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn sign(alg: Algorithm, kid: &str, pem: &[u8], claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    sign_with(header, pem, claims)
}

/// RS256 with the fixture key the JWKS calls `tollgate-test-rsa-1`.
fn rs(claims: &Value) -> String {
    sign(Algorithm::RS256, RSA_KID, RSA_1, claims)
}

fn id_claims() -> Value {
    json!({
        "sub": "user-1234",
        "iss": ISSUER,
        "aud": CLIENT,
        "token_use": "id",
        "cognito:username": "alice",
        "cognito:groups": ["admins", "users"],
        "email_verified": true,
        "custom:tier": 3,
        "address": {"country": "NZ"},
        "iat": NOW - 10,
        "exp": NOW + 3600,
    })
}

fn access_claims() -> Value {
    json!({
        "sub": "user-1234",
        "iss": ISSUER,
        "client_id": CLIENT,
        "token_use": "access",
        "scope": "openid pets/read pets/write",
        "username": "alice",
        "iat": NOW - 10,
        "exp": NOW + 3600,
    })
}

/// `claims` with `name` set to `value`; `Value::Null` removes it.
fn with(mut claims: Value, name: &str, value: Value) -> Value {
    let map = claims.as_object_mut().unwrap();
    if value.is_null() {
        map.remove(name);
    } else {
        map.insert(name.to_owned(), value);
    }
    claims
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

fn b64(json: &Value) -> String {
    URL_SAFE_NO_PAD.encode(json.to_string())
}

async fn loaded(audiences: &[&str], source: JwksSource) -> JwtAuthorizer {
    let auth = JwtAuthorizer::new(ISSUER, strings(audiences), source);
    auth.load().await.unwrap();
    auth
}

/// The fixture JWKS (rsa-1, ec-1), audience `app-client-1`.
async fn authorizer() -> JwtAuthorizer {
    loaded(&[CLIENT], JwksSource::File(testdata("jwks.json"))).await
}

fn fetches(auth: &JwtAuthorizer) -> u64 {
    auth.fetches.load(Ordering::Relaxed)
}

/// Moves the last refetch `ago` into the past: waiting, without the wait. (Paused tokio
/// time would do too, but the workspace does not enable tokio's `test-util`.)
async fn backdate_refetch(auth: &JwtAuthorizer, ago: Duration) {
    let mut last = auth.last_refetch.lock().await;
    let at = last.expect("a refetch happened");
    *last = Some(
        at.checked_sub(ago)
            .expect("the monotonic clock started long enough ago"),
    );
}

#[tokio::test]
async fn valid_id_tokens_rs256_and_es256() {
    let auth = authorizer().await;
    let tokens = [
        rs(&id_claims()),
        sign(Algorithm::ES256, EC_KID, EC_1, &id_claims()),
    ];
    for token in tokens {
        let id = auth.verify(&token, &[], NOW).await.unwrap();
        assert_eq!(id.principal_id, "user-1234");
        assert_eq!(id.expires_at_s, NOW + 3600);
    }
}

#[tokio::test]
async fn claims_are_exposed_as_strings() {
    let id = authorizer()
        .await
        .verify(&rs(&id_claims()), &[], NOW)
        .await
        .unwrap();
    let exp = (NOW + 3600).to_string();
    let iat = (NOW - 10).to_string();
    let expected: BTreeMap<String, String> = [
        ("address", r#"{"country":"NZ"}"#),
        ("aud", CLIENT),
        ("cognito:groups", r#"["admins","users"]"#),
        ("cognito:username", "alice"),
        ("custom:tier", "3"),
        ("email_verified", "true"),
        ("exp", &exp),
        ("iat", &iat),
        ("iss", ISSUER),
        ("sub", "user-1234"),
        ("token_use", "id"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(id.claims, expected);
    assert_eq!(claim_string(json!(null)), "null");
    assert_eq!(claim_string(json!(1.5)), "1.5");
}

#[tokio::test]
async fn bearer_prefix_is_optional_and_case_insensitive() {
    let auth = authorizer().await;
    let token = rs(&id_claims());
    for value in [
        token.clone(),
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("BEARER   {token}"),
        format!("  Bearer {token}  "),
    ] {
        assert!(auth.verify(&value, &[], NOW).await.is_ok(), "{value:.12}");
    }
    for value in [
        "Bearer",
        "Bearer ",
        "bearer  ",
        &format!("Basic {token}"),
        &format!("Bearer{token}"),
    ] {
        assert_eq!(
            auth.verify(value, &[], NOW).await,
            Err(JwtError::Malformed),
            "{value:.12}"
        );
    }
}

#[tokio::test]
async fn expiry_has_a_60_second_leeway() {
    let auth = authorizer().await;
    let token = rs(&with(id_claims(), "exp", json!(NOW)));
    for now in [NOW - 3600, NOW, NOW + 60] {
        assert!(
            auth.verify(&token, &[], now).await.is_ok(),
            "at exp{:+}",
            now as i64 - NOW as i64
        );
    }
    assert_eq!(
        auth.verify(&token, &[], NOW + 61).await,
        Err(JwtError::Expired)
    );
    assert_eq!(
        auth.verify(&token, &[], u64::MAX).await,
        Err(JwtError::Expired)
    );
    // Huge and fractional NumericDates are numbers too.
    let forever = rs(&with(id_claims(), "exp", json!(u64::MAX)));
    assert_eq!(
        auth.verify(&forever, &[], u64::MAX)
            .await
            .map(|id| id.expires_at_s),
        Ok(u64::MAX)
    );
    let fractional = rs(&with(id_claims(), "exp", json!(NOW as f64 + 0.5)));
    assert_eq!(
        auth.verify(&fractional, &[], NOW)
            .await
            .map(|id| id.expires_at_s),
        Ok(NOW)
    );
}

#[tokio::test]
async fn not_before_has_a_60_second_leeway() {
    let auth = authorizer().await;
    let soon = rs(&with(id_claims(), "nbf", json!(NOW + 60)));
    assert!(auth.verify(&soon, &[], NOW).await.is_ok());
    let later = rs(&with(id_claims(), "nbf", json!(NOW + 61)));
    assert_eq!(
        auth.verify(&later, &[], NOW).await,
        Err(JwtError::NotYetValid)
    );
    assert!(auth.verify(&later, &[], NOW + 1).await.is_ok());
}

#[tokio::test]
async fn issuer_must_match_exactly() {
    let auth = authorizer().await;
    for iss in [
        json!("https://issuer.example.test/pool-2"),
        json!(format!("{ISSUER}/")),
        json!(ISSUER.to_uppercase()),
        json!([ISSUER]),
        Value::Null, // missing
    ] {
        let token = rs(&with(id_claims(), "iss", iss.clone()));
        assert_eq!(
            auth.verify(&token, &[], NOW).await,
            Err(JwtError::WrongIssuer),
            "{iss}"
        );
    }
}

#[tokio::test]
async fn id_token_audience_must_be_allowed() {
    let auth = authorizer().await;
    let other = rs(&with(id_claims(), "aud", json!("app-client-2")));
    assert_eq!(
        auth.verify(&other, &[], NOW).await,
        Err(JwtError::WrongAudience)
    );
    let missing = rs(&with(id_claims(), "aud", Value::Null));
    assert_eq!(
        auth.verify(&missing, &[], NOW).await,
        Err(JwtError::WrongAudience)
    );
    let listed = rs(&with(id_claims(), "aud", json!(["app-client-2", CLIENT])));
    assert!(auth.verify(&listed, &[], NOW).await.is_ok());

    let any = loaded(&[], JwksSource::File(testdata("jwks.json"))).await;
    assert!(any.verify(&other, &[], NOW).await.is_ok());
    let two = loaded(
        &["app-client-2", CLIENT],
        JwksSource::File(testdata("jwks.json")),
    )
    .await;
    assert!(two.verify(&other, &[], NOW).await.is_ok());
}

#[tokio::test]
async fn access_token_needs_one_of_the_scopes_and_an_allowed_client() {
    let auth = authorizer().await;
    let token = rs(&access_claims());
    for wanted in [&["pets/write"][..], &["admin", "pets/read"], &["openid"]] {
        let id = auth.verify(&token, &strings(wanted), NOW).await.unwrap();
        assert_eq!(id.claims["scope"], "openid pets/read pets/write");
    }
    for wanted in [
        &["admin"][..],
        &["pets"],
        &["pets/write/extra"],
        &["PETS/WRITE"],
    ] {
        assert_eq!(
            auth.verify(&token, &strings(wanted), NOW).await,
            Err(JwtError::MissingScope)
        );
    }
    let unscoped = rs(&with(access_claims(), "scope", Value::Null));
    assert_eq!(
        auth.verify(&unscoped, &strings(&["pets/write"]), NOW).await,
        Err(JwtError::MissingScope)
    );
    let other_client = rs(&with(access_claims(), "client_id", json!("app-client-2")));
    let write = strings(&["pets/write"]);
    assert_eq!(
        auth.verify(&other_client, &write, NOW).await,
        Err(JwtError::WrongAudience)
    );
    let any = loaded(&[], JwksSource::File(testdata("jwks.json"))).await;
    assert!(any.verify(&other_client, &write, NOW).await.is_ok());
}

#[tokio::test]
async fn token_use_must_fit_the_route() {
    let auth = authorizer().await;
    let write = strings(&["pets/write"]);
    let id_token = rs(&id_claims());
    assert_eq!(
        auth.verify(&id_token, &write, NOW).await,
        Err(JwtError::WrongTokenUse)
    );
    let access_token = rs(&access_claims());
    assert_eq!(
        auth.verify(&access_token, &[], NOW).await,
        Err(JwtError::WrongTokenUse)
    );
    let no_use = rs(&with(id_claims(), "token_use", Value::Null));
    assert_eq!(
        auth.verify(&no_use, &[], NOW).await,
        Err(JwtError::WrongTokenUse)
    );
}

#[tokio::test]
async fn unknown_kid_refetches_at_most_once_per_30_seconds() {
    let file = TempJwks::new(JWKS);
    let auth = loaded(&[CLIENT], file.source()).await;
    assert_eq!(fetches(&auth), 1);
    let rotated = sign(Algorithm::RS256, ROTATED_KID, RSA_2, &id_claims());

    // The first unknown kid refetches, but the pool has not rotated yet.
    assert_eq!(
        auth.verify(&rotated, &[], NOW).await,
        Err(JwtError::UnknownKey)
    );
    assert_eq!(fetches(&auth), 2);

    // It rotates; within 30 s of that refetch nothing is fetched.
    file.rewrite(JWKS_ROTATED);
    assert_eq!(
        auth.verify(&rotated, &[], NOW).await,
        Err(JwtError::UnknownKey)
    );
    backdate_refetch(&auth, Duration::from_secs(29)).await;
    assert_eq!(
        auth.verify(&rotated, &[], NOW).await,
        Err(JwtError::UnknownKey)
    );
    assert_eq!(fetches(&auth), 2);

    // 30 s after it, the next unknown kid refetches and finds the new key.
    backdate_refetch(&auth, Duration::from_secs(1)).await;
    assert_eq!(
        auth.verify(&rotated, &[], NOW)
            .await
            .map(|id| id.principal_id),
        Ok("user-1234".into())
    );
    assert_eq!(fetches(&auth), 3);

    // Known kids never fetch; a second unknown kid right after does not refetch.
    assert!(auth.verify(&rs(&id_claims()), &[], NOW).await.is_ok());
    assert!(auth.verify(&rotated, &[], NOW).await.is_ok());
    let stranger = sign(Algorithm::RS256, STRANGER_KID, RSA_2, &id_claims());
    assert_eq!(
        auth.verify(&stranger, &[], NOW).await,
        Err(JwtError::UnknownKey)
    );
    assert_eq!(fetches(&auth), 3);
}

#[tokio::test]
async fn key_rotated_right_after_load_is_picked_up_at_once() {
    // load() does not use up the refetch budget.
    let file = TempJwks::new(JWKS);
    let auth = loaded(&[CLIENT], file.source()).await;
    file.rewrite(JWKS_ROTATED);
    let rotated = sign(Algorithm::RS256, ROTATED_KID, RSA_2, &id_claims());
    assert!(auth.verify(&rotated, &[], NOW).await.is_ok());
    assert_eq!(fetches(&auth), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refetches_collapse_into_one() {
    let file = TempJwks::new(JWKS);
    let auth = Arc::new(loaded(&[CLIENT], file.source()).await);
    file.rewrite(JWKS_ROTATED);
    let rotated = sign(Algorithm::RS256, ROTATED_KID, RSA_2, &id_claims());
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (auth, token) = (Arc::clone(&auth), rotated.clone());
            tokio::spawn(async move { auth.verify(&token, &[], NOW).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().is_ok());
    }
    assert_eq!(fetches(&auth), 2);
}

#[tokio::test]
async fn a_refetch_replaces_the_keys_and_a_failed_one_keeps_them() {
    let file = TempJwks::new(JWKS);
    let auth = loaded(&[CLIENT], file.source()).await;
    let old = rs(&id_claims());
    let rotated = sign(Algorithm::RS256, ROTATED_KID, RSA_2, &id_claims());

    file.rewrite("{not json");
    assert!(matches!(
        auth.verify(&rotated, &[], NOW).await,
        Err(JwtError::Jwks(_))
    ));
    assert!(
        auth.verify(&old, &[], NOW).await.is_ok(),
        "old keys stay after a failed refetch"
    );

    // The pool drops rsa-1 and publishes rsa-2 only.
    let mut only_rotated: Value = serde_json::from_str(JWKS_ROTATED).unwrap();
    only_rotated["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["kid"] == ROTATED_KID);
    file.rewrite(only_rotated.to_string());
    backdate_refetch(&auth, REFETCH_INTERVAL).await;
    assert!(auth.verify(&rotated, &[], NOW).await.is_ok());
    assert_eq!(auth.verify(&old, &[], NOW).await, Err(JwtError::UnknownKey));
}

/// Revocation: a key removed from the JWKS is never an unknown kid, so only the refresh
/// finds out. It reports the change, the digest (part of every cache key) moves, and the
/// removed key's tokens are refused. An unchanged JWKS (keys reordered, unusable keys
/// added) is no change.
#[tokio::test]
async fn refresh_reports_a_changed_key_set() {
    let file = TempJwks::new(JWKS);
    let auth = loaded(&[CLIENT], file.source()).await;
    let token = rs(&id_claims());
    assert!(auth.verify(&token, &[], NOW).await.is_ok());
    let before = auth.key_set_digest();
    assert_ne!(before, [0; 32]);
    let mut same: Value = serde_json::from_str(JWKS).unwrap();
    same["keys"].as_array_mut().unwrap().reverse();
    same["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}));
    file.rewrite(same.to_string());
    assert_eq!(auth.refresh().await, Ok(false));
    assert_eq!(auth.key_set_digest(), before);

    let mut without_rsa: Value = serde_json::from_str(JWKS).unwrap();
    without_rsa["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["kid"] != RSA_KID);
    file.rewrite(without_rsa.to_string());
    assert_eq!(auth.refresh().await, Ok(true));
    assert_ne!(auth.key_set_digest(), before);
    assert_eq!(
        auth.verify(&token, &[], NOW).await,
        Err(JwtError::UnknownKey),
        "a token signed by the removed key"
    );
    // A failed refresh keeps the keys and is no change.
    file.rewrite("{not json");
    assert!(matches!(auth.refresh().await, Err(JwtError::Jwks(_))));
}

#[test]
fn the_refresh_interval_is_max_age_within_the_bounds() {
    use reqwest::header::{CACHE_CONTROL, HeaderMap, HeaderValue};
    let headers = |vals: &[&'static str]| {
        let mut h = HeaderMap::new();
        for v in vals {
            h.append(CACHE_CONTROL, HeaderValue::from_static(v));
        }
        h
    };
    assert_eq!(
        cache_max_age(&headers(&["public, max-age=300"])),
        Some(Duration::from_secs(300))
    );
    assert_eq!(
        cache_max_age(&headers(&["max-age=300", "no-cache"])),
        Some(Duration::ZERO)
    );
    assert_eq!(
        cache_max_age(&headers(&["Max-Age=\"7\""])),
        Some(Duration::from_secs(7))
    );
    assert_eq!(cache_max_age(&headers(&["public", "max-age=x"])), None);
    assert_eq!(
        cache_max_age(&headers(&["max-age=99999999999999999999999"])),
        None
    );

    let auth = JwtAuthorizer::new(ISSUER, vec![], JwksSource::File(testdata("jwks.json")));
    let bounds = RefreshBounds {
        min: Duration::from_secs(60),
        max: Duration::from_secs(3600),
    };
    assert_eq!(
        auth.refresh_interval(bounds),
        bounds.min,
        "no max-age: the floor"
    );
    for (ms, want) in [(0, 60), (120_000, 120), (u64::MAX - 1, 3600)] {
        auth.max_age_ms.store(ms, Ordering::Relaxed);
        assert_eq!(auth.refresh_interval(bounds), Duration::from_secs(want));
    }
}

/// The refresh task holds the authorizer weakly: dropping the authorizer (a config reload)
/// frees it, and the task is aborted.
#[tokio::test]
async fn the_refresh_task_does_not_keep_the_authorizer() {
    let auth = Arc::new(authorizer().await);
    auth.spawn_refresh(RefreshBounds::default(), || async {});
    let task = auth.refresh_task.lock().unwrap().clone().expect("a task");
    let weak = Arc::downgrade(&auth);
    drop(auth);
    assert!(
        weak.upgrade().is_none(),
        "the task kept the authorizer alive"
    );
    tokio::task::yield_now().await;
    assert!(task.is_finished(), "the task outlived its authorizer");
}

#[tokio::test]
async fn the_first_token_loads_the_jwks_if_load_was_not_called() {
    let auth = JwtAuthorizer::new(
        ISSUER,
        strings(&[CLIENT]),
        JwksSource::File(testdata("jwks.json")),
    );
    assert!(auth.verify(&rs(&id_claims()), &[], NOW).await.is_ok());
    assert_eq!(fetches(&auth), 1);
}

#[tokio::test]
async fn load_reports_bad_jwks_files() {
    let missing = JwtAuthorizer::new(ISSUER, vec![], JwksSource::File(testdata("nope.json")));
    let Err(JwtError::Jwks(message)) = missing.load().await else {
        panic!("loaded a missing file")
    };
    assert!(message.contains("nope.json"), "{message}");

    let unusable = json!({"keys": [
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "no-use", "use": "enc", "n": "AQAB", "e": "AQAB"},
    ]});
    for (contents, expect) in [
        ("{not json".to_owned(), "is not a JWKS"),
        ("[]".to_owned(), "is not a JWKS"),
        (json!({"keys": []}).to_string(), "no RS256 or ES256"),
        (unusable.to_string(), "no RS256 or ES256"),
        (" ".repeat(MAX_JWKS_BYTES + 1), "larger than"),
    ] {
        let file = TempJwks::new(&contents);
        let auth = JwtAuthorizer::new(ISSUER, vec![], file.source());
        let Err(JwtError::Jwks(message)) = auth.load().await else {
            panic!("loaded {contents:.40}")
        };
        assert!(message.contains(expect), "{message}");
    }
    // Exactly at the limit is fine.
    let mut padded = JWKS.to_owned();
    padded.push_str(&" ".repeat(MAX_JWKS_BYTES - JWKS.len()));
    let file = TempJwks::new(&padded);
    assert!(
        JwtAuthorizer::new(ISSUER, vec![], file.source())
            .load()
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn only_rs256_and_es256_signing_keys_are_used() {
    let jwks: Value = serde_json::from_str(JWKS).unwrap();
    let rsa = jwks["keys"][0].clone();
    let ec = jwks["keys"][1].clone();
    let variant = |base: &Value, kid: &str, field: &str, value: Value| {
        let mut key = with(base.clone(), "kid", json!(kid));
        if value.is_null() {
            key.as_object_mut().unwrap().remove(field);
        } else {
            key[field] = value;
        }
        key
    };
    let short_n = URL_SAFE_NO_PAD.encode([0xffu8; 128]); // 1024 bits
    let keys = json!({"keys": [
        variant(&rsa, "rsa-enc", "use", json!("enc")),
        variant(&rsa, "rsa-rs512", "alg", json!("RS512")),
        variant(&rsa, "rsa-ps256", "alg", json!("PS256")),
        variant(&rsa, "rsa-encrypt-only", "key_ops", json!(["encrypt"])),
        variant(&rsa, "rsa-1024", "n", json!(short_n)),
        variant(&ec, "ec-p384", "crv", json!("P-384")),
        variant(&ec, "ec-short-x", "x", json!(URL_SAFE_NO_PAD.encode([1u8; 31]))),
        variant(&rsa, "rsa-no-alg", "alg", Value::Null),
        variant(&ec, "ec-no-use", "use", Value::Null),
        with(rsa.clone(), "kid", Value::Null),
        rsa,
        ec,
    ]});
    let (keyset, _) = parse_jwks(keys.to_string().as_bytes()).unwrap();
    let mut kids: Vec<_> = keyset.keys().map(String::as_str).collect();
    kids.sort_unstable();
    assert_eq!(kids, ["ec-no-use", "rsa-no-alg", EC_KID, RSA_KID]);
    assert_eq!(keyset["rsa-no-alg"].alg, Algorithm::RS256);
    assert_eq!(keyset["ec-no-use"].alg, Algorithm::ES256);
}

#[tokio::test]
async fn only_rs256_and_es256_tokens_are_accepted() {
    let auth = authorizer().await;
    let claims = id_claims();
    let payload = b64(&claims);
    for alg in [
        json!("none"),
        json!("None"),
        json!(""),
        json!("HS256"),
        json!("RS384"),
        json!("PS256"),
        json!("ES384"),
        json!("EdDSA"),
    ] {
        let header = b64(&json!({"alg": alg, "kid": RSA_KID}));
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}.c2ln"),
        ] {
            assert_eq!(
                auth.verify(&token, &[], NOW).await,
                Err(JwtError::UnsupportedAlgorithm),
                "{alg}"
            );
        }
    }
    // HS256 keyed with the RSA public key: the classic algorithm-confusion forgery.
    let forged = sign(Algorithm::HS256, RSA_KID, RSA_1_PUB, &claims);
    assert_eq!(
        auth.verify(&forged, &[], NOW).await,
        Err(JwtError::UnsupportedAlgorithm)
    );
    for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
        let token = sign(alg, RSA_KID, RSA_1, &claims);
        assert_eq!(
            auth.verify(&token, &[], NOW).await,
            Err(JwtError::UnsupportedAlgorithm),
            "{alg:?}"
        );
    }
    let no_alg = format!("{}.{payload}.c2ln", b64(&json!({"kid": RSA_KID})));
    assert_eq!(
        auth.verify(&no_alg, &[], NOW).await,
        Err(JwtError::Malformed)
    );
}

#[tokio::test]
async fn tampered_or_mismatched_signatures_are_refused() {
    let auth = authorizer().await;
    let token = rs(&id_claims());
    let parts: Vec<&str> = token.split('.').collect();

    let evil = b64(&with(id_claims(), "sub", json!("admin")));
    let tampered = format!("{}.{evil}.{}", parts[0], parts[2]);
    assert_eq!(
        auth.verify(&tampered, &[], NOW).await,
        Err(JwtError::BadSignature)
    );

    let wrong_key = sign(Algorithm::RS256, RSA_KID, RSA_2, &id_claims());
    assert_eq!(
        auth.verify(&wrong_key, &[], NOW).await,
        Err(JwtError::BadSignature)
    );

    let short_signature = format!("{}.{}.{}", parts[0], parts[1], &parts[2][4..]);
    assert_eq!(
        auth.verify(&short_signature, &[], NOW).await,
        Err(JwtError::BadSignature)
    );

    // A kid names one key and one algorithm.
    let ec_as_rsa = sign(Algorithm::ES256, RSA_KID, EC_1, &id_claims());
    assert_eq!(
        auth.verify(&ec_as_rsa, &[], NOW).await,
        Err(JwtError::BadSignature)
    );
    let rsa_as_ec = sign(Algorithm::RS256, EC_KID, RSA_1, &id_claims());
    assert_eq!(
        auth.verify(&rsa_as_ec, &[], NOW).await,
        Err(JwtError::BadSignature)
    );

    let es = sign(Algorithm::ES256, EC_KID, EC_1, &id_claims());
    let es_parts: Vec<&str> = es.split('.').collect();
    let es_tampered = format!("{}.{evil}.{}", es_parts[0], es_parts[2]);
    assert_eq!(
        auth.verify(&es_tampered, &[], NOW).await,
        Err(JwtError::BadSignature)
    );
}

#[tokio::test]
async fn garbage_is_malformed_and_errors_never_echo_the_token() {
    let auth = authorizer().await;
    let valid = rs(&id_claims());
    let (head, rest) = valid.split_once('.').unwrap();
    let mut crit = Header::new(Algorithm::RS256);
    crit.kid = Some(RSA_KID.into());
    crit.crit = Some(vec!["exp".into()]);
    let mut garbage = vec![
        String::new(),
        "   ".into(),
        "abc".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        "..".into(),
        "!!.@@.##".into(),
        "é.é.é".into(),
        "\0.\0.\0".into(),
        format!("{head}.{rest}.extra"),
        format!("{head}..sig"),
        format!(".{rest}"),
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode("not json")),
        format!("{}.{rest}", b64(&json!([1, 2]))),
        format!("{}.{rest}", b64(&json!({"alg": 256}))),
        format!("{}.{rest}", b64(&json!({"alg": "RS256", "kid": 7}))),
        format!("{head}.{}", rest.replace('.', ".%")),
        format!("{}.{rest}", "eyJ".repeat(MAX_HEADER_B64)),
        format!("{valid}{}", "A".repeat(MAX_SIGNATURE_B64)),
        "x".repeat(MAX_TOKEN_BYTES + 1),
        format!("Bearer {}", "x".repeat(MAX_TOKEN_BYTES)),
        sign_with(crit, RSA_1, &id_claims()),
        rs(&json!([1, 2, 3])),
        rs(&json!("a string")),
    ];
    for (claim, value) in [
        ("sub", Value::Null),
        ("sub", json!(1234)),
        ("sub", json!("")),
        ("exp", Value::Null),
        ("exp", json!("tomorrow")),
        ("exp", json!(-1)),
        ("nbf", json!("yesterday")),
    ] {
        garbage.push(rs(&with(id_claims(), claim, value)));
    }
    for token in &garbage {
        let err = auth.verify(token, &[], NOW).await.unwrap_err();
        assert_eq!(err, JwtError::Malformed, "{token:.60}");
        let message = err.to_string();
        assert!(
            token.len() < 8 || !message.contains(token.as_str()),
            "{message}"
        );
    }
    // No kid: nothing to look up, and no reason to refetch.
    let mut no_kid = Header::new(Algorithm::RS256);
    no_kid.kid = None;
    let token = sign_with(no_kid, RSA_1, &id_claims());
    assert_eq!(
        auth.verify(&token, &[], NOW).await,
        Err(JwtError::UnknownKey)
    );
    assert_eq!(fetches(&auth), 1);
}

#[tokio::test]
async fn big_tokens_are_fine_up_to_16_kib() {
    let auth = authorizer().await;
    let big = rs(&with(
        id_claims(),
        "custom:blob",
        json!("b".repeat(11 * 1024)),
    ));
    assert!(big.len() <= MAX_TOKEN_BYTES);
    assert!(auth.verify(&big, &[], NOW).await.is_ok());
    let too_big = rs(&with(
        id_claims(),
        "custom:blob",
        json!("b".repeat(13 * 1024)),
    ));
    assert!(too_big.len() > MAX_TOKEN_BYTES);
    assert_eq!(
        auth.verify(&too_big, &[], NOW).await,
        Err(JwtError::Malformed)
    );
}

/// The pre-signed fixture tokens (made by gen.sh, also handy with the example config)
/// verify against examples/jwks.json, which holds the same keys as the fixture JWKS.
#[tokio::test]
async fn fixture_tokens_verify_against_the_example_jwks() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/jwks.json");
    let example_jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(&example).unwrap()).unwrap();
    assert_eq!(example_jwks, serde_json::from_str::<Value>(JWKS).unwrap());

    let auth = loaded(&[CLIENT], JwksSource::File(example)).await;
    let fixture = |name: &str| std::fs::read_to_string(testdata(name)).unwrap();
    for name in ["id-rsa-1.jwt", "id-ec-1.jwt"] {
        let id = auth.verify(&fixture(name), &[], NOW).await.unwrap();
        assert_eq!(id.principal_id, "user-1234");
        assert_eq!(id.claims["cognito:username"], "alice");
    }
    let id = auth
        .verify(&fixture("access-rsa-1.jwt"), &strings(&["pets/write"]), NOW)
        .await
        .unwrap();
    assert_eq!(id.claims["client_id"], CLIENT);
    for name in ["id-rsa-2.jwt", "id-unknown-kid.jwt"] {
        assert_eq!(
            auth.verify(&fixture(name), &[], NOW).await,
            Err(JwtError::UnknownKey),
            "{name}"
        );
    }
}

#[test]
fn the_authorizer_can_be_shared_across_tasks_and_stays_small() {
    // It is a variant of the authorizer enum in auth/mod.rs (clippy: large_enum_variant).
    assert!(
        std::mem::size_of::<JwtAuthorizer>() <= 256,
        "{}",
        std::mem::size_of::<JwtAuthorizer>()
    );
    fn shareable<T: Send + Sync>() {}
    shareable::<JwtAuthorizer>();
    let auth = JwtAuthorizer::new(
        ISSUER,
        vec![],
        JwksSource::Url("https://user:secret@jwks.example.test/keys".into()),
    );
    let debug = format!("{auth:?}");
    assert!(debug.contains(ISSUER), "{debug}");
    assert_eq!(
        redact_url("https://user:secret@jwks.example.test/keys"),
        "https://user:redacted@jwks.example.test/keys"
    );
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn valid_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| rs(&id_claims()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_input_is_refused_without_panicking(input in any::<String>()) {
        let result = block_on(async {
            let auth = authorizer().await;
            auth.verify(&input, &[], NOW).await
        });
        prop_assert!(result.is_err());
    }

    #[test]
    fn any_one_character_change_is_refused(
        at in any::<prop::sample::Index>(),
        replacement in "[A-Za-z0-9_.=+/ -]",
    ) {
        let token = valid_token();
        let i = at.index(token.len());
        prop_assume!(token[i..=i] != replacement);
        let mut mutated = token.to_owned();
        mutated.replace_range(i..=i, &replacement);
        let result = block_on(async {
            let auth = authorizer().await;
            auth.verify(&mutated, &[], NOW).await
        });
        prop_assert!(result.is_err(), "accepted a change at {}", i);
    }
}
