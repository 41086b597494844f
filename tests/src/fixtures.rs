//! Fixtures the end-to-end suites share: the test user pool (issuer, audience, signing keys,
//! JWKS, pre-signed tokens) and fresh JWTs signed with its keys.
//!
//! The key material lives in `server/src/auth/testdata/jwt/` (the server's unit tests use it
//! too); the published test keys are refused by a server listening beyond loopback, so they
//! are safe to ship.
//!
//! Owns: the fixture constants and token minting. Must not import: the suites (`it/`) or the
//! process modules of this harness.
use std::path::PathBuf;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tollgate_server::clock::{Clock, SystemClock};

use crate::tollgate::workspace_root;

/// The fixture user pool's issuer (`iss`).
pub const ISSUER: &str = "https://issuer.example.test/pool-1";
/// The fixture app client: the ID tokens' `aud`, the access tokens' `client_id`.
pub const CLIENT: &str = "app-client-1";
/// The kid of [`RSA_1`] in the fixture JWKS.
pub const RSA_KID: &str = "tollgate-test-rsa-1";
/// The kid of [`EC_1`] in the fixture JWKS.
pub const EC_KID: &str = "tollgate-test-ec-1";
/// The RSA private key (PEM) behind [`RSA_KID`].
pub const RSA_1: &[u8] = include_bytes!("../../server/src/auth/testdata/jwt/rsa-1.pem");
/// The EC P-256 private key (PEM) behind [`EC_KID`].
pub const EC_1: &[u8] = include_bytes!("../../server/src/auth/testdata/jwt/ec-1.pem");
/// The fixture JWKS (the public halves of [`RSA_1`] and [`EC_1`]); on disk at [`jwks_path`].
pub const JWKS: &str = include_str!("../../server/src/auth/testdata/jwt/jwks.json");
/// An ID token for `user-1234`, RS256 with kid [`RSA_KID`], valid until 2100.
pub const ID_RSA_1: &str = include_str!("../../server/src/auth/testdata/jwt/id-rsa-1.jwt");
/// The same claims, ES256 with kid [`EC_KID`].
pub const ID_EC_1: &str = include_str!("../../server/src/auth/testdata/jwt/id-ec-1.jwt");

/// Path of the fixture JWKS file (for a `jwks_file`).
pub fn jwks_path() -> PathBuf {
    workspace_root().join("server/src/auth/testdata/jwt/jwks.json")
}

/// Seconds since the epoch, from the server's clock.
pub fn now_s() -> i64 {
    (SystemClock.now_micros() / 1_000_000) as i64
}

/// `YYYY-MM-DD` of day number `days` (days since 1970-01-01), by the server's own calendar.
pub fn date_of(days: i64) -> String {
    let (y, m, d) = tollgate_server::limiter::quota::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Today's UTC date, `YYYY-MM-DD`: GetUsage takes dates of the process under test's wall clock.
pub fn today() -> String {
    date_of(now_s().div_euclid(86_400))
}

/// `claims` signed RS256 with [`RSA_1`] (kid [`RSA_KID`]).
pub fn rs256(claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(RSA_KID.into());
    let key = EncodingKey::from_rsa_pem(RSA_1).expect("the fixture RSA key");
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// `claims` signed ES256 with [`EC_1`] (kid [`EC_KID`]).
pub fn es256(claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(EC_KID.into());
    let key = EncodingKey::from_ec_pem(EC_1).expect("the fixture EC key");
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// The claims of an ID token of the fixture pool for `sub`, issued 10 s ago, valid for an hour.
pub fn id_claims(sub: &str) -> Value {
    json!({
        "sub": sub, "iss": ISSUER, "aud": CLIENT, "token_use": "id",
        "iat": now_s() - 10, "exp": now_s() + 3600,
    })
}

/// `claims` with `name` set to `value`.
pub fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims
        .as_object_mut()
        .expect("claims are an object")
        .insert(name.into(), value);
    claims
}
