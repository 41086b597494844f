//! A token's shape before its signature is checked: the `Bearer ` prefix, the header (algorithm
//! and key id, size-bounded), the claims' dates and strings, jsonwebtoken's errors. Part of
//! `auth::jwt`.
use super::*;

/// jsonwebtoken checks the signature and that `exp` and `sub` exist; `check_claims` judges
/// every claim, time against the caller's `now_s` rather than the system clock.
pub(super) fn signature_only(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.leeway = 0;
    v.required_spec_claims = HashSet::from(["exp", "sub"].map(String::from));
    v
}

pub(super) fn map_decode_error(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_) => JwtError::Malformed,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm => JwtError::UnsupportedAlgorithm,
        // InvalidSignature, and key errors (a JWKS key the crypto backend cannot use).
        _ => JwtError::BadSignature,
    }
}

/// Trims, drops an optional case-insensitive `Bearer ` and bounds the size.
pub(super) fn strip_bearer(raw: &str) -> Result<&str, JwtError> {
    if raw.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Malformed);
    }
    let token = raw.trim();
    let token = match token.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => token[7..].trim_start(),
        _ => token,
    };
    if token.is_empty() {
        return Err(JwtError::Malformed);
    }
    Ok(token)
}

/// The parts of a JOSE header this module reads; others are ignored.
#[derive(Deserialize)]
pub(super) struct RawHeader {
    alg: String,
    kid: Option<String>,
    /// Critical extensions: none is understood, so any is a reason to refuse (RFC 7515 §4.1.11).
    crit: Option<Value>,
}

/// Checks the token's shape and returns its algorithm and `kid`. Runs before any key lookup,
/// so a token with `alg: none` or HS256 never gets near a key.
pub(super) fn parse_header(token: &str) -> Result<(Algorithm, String), JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    if header.is_empty()
        || payload.is_empty()
        || header.len() > MAX_HEADER_B64
        || signature.len() > MAX_SIGNATURE_B64
    {
        return Err(JwtError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwtError::Malformed)?;
    let header: RawHeader = serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)?;
    let alg = match header.alg.as_str() {
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        _ => return Err(JwtError::UnsupportedAlgorithm),
    };
    if header.crit.is_some() || signature.is_empty() {
        return Err(JwtError::Malformed);
    }
    let kid = header.kid.ok_or(JwtError::UnknownKey)?;
    Ok((alg, kid))
}

/// A NumericDate: a non-negative number of seconds (fractions are dropped).
pub(super) fn numeric_date(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// Strings as-is; anything else as compact JSON (which is also how numbers and booleans
/// print).
pub(super) fn claim_string(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => other.to_string(),
    }
}
