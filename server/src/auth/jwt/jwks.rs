//! Key sets: parsing a JWKS into verifying keys (RSA ≥ 2048 bits, P-256), reading it from a file
//! or fetching it (size-bounded, `Cache-Control: max-age`), Tollgate's published test keys.
//! Part of `auth::jwt`.
use super::*;

/// The public halves of the test keys whose private halves ship in this repository
/// (`testdata/jwt/*.pem`, used by `tollgate dev token` and the examples).
pub(super) const PUBLISHED_TEST_JWKS: &str = include_str!("../testdata/jwt/jwks-rotated.json");

/// Kids of the keys in a JWKS that are Tollgate's published test keys: a kid starting with
/// `tollgate-test-`, or the key material of one (a copy under another kid). Anyone can sign
/// tokens with them.
pub fn published_test_keys(jwks: &[u8]) -> Vec<String> {
    let material = |k: &Value| -> Option<String> {
        match k.get("kty")?.as_str()? {
            "RSA" => Some(format!("RSA {}", k.get("n")?.as_str()?)),
            "EC" => Some(format!(
                "EC {} {}",
                k.get("x")?.as_str()?,
                k.get("y")?.as_str()?
            )),
            _ => None,
        }
    };
    let keys = |text: &[u8]| -> Vec<Value> {
        serde_json::from_slice::<Value>(text)
            .ok()
            .and_then(|v| v.get("keys")?.as_array().cloned())
            .unwrap_or_default()
    };
    let published: Vec<String> = keys(PUBLISHED_TEST_JWKS.as_bytes())
        .iter()
        .filter_map(material)
        .collect();
    keys(jwks)
        .iter()
        .filter(|k| {
            let kid = k.get("kid").and_then(Value::as_str).unwrap_or("");
            kid.starts_with("tollgate-test-") || material(k).is_some_and(|m| published.contains(&m))
        })
        .map(|k| {
            k.get("kid")
                .and_then(Value::as_str)
                .unwrap_or("(no kid)")
                .to_owned()
        })
        .collect()
}

/// The usable keys of a JWKS: RS256 (modulus of at least 2048 bits) and ES256 (P-256) signing
/// keys with a `kid`. Other keys are skipped rather than refused, since pools may publish more
/// kinds than this verifier accepts; a JWKS with no usable key is an error. With the digest of
/// the usable keys' entries (by kid; other keys and the order do not change it).
pub(super) fn parse_jwks(bytes: &[u8]) -> Result<(KeySet, [u8; 32]), String> {
    use sha2::Digest as _;
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| format!("is not a JWKS: {e}"))?;
    let mut keys = KeySet::new();
    let mut entries = BTreeMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.as_deref() else {
            continue;
        };
        match verifying_key(jwk) {
            Some(key) => {
                if keys.contains_key(kid) {
                    tracing::debug!(kid, "JWKS has this kid twice; the first key wins");
                } else {
                    keys.insert(kid.to_owned(), Arc::new(key));
                    entries.insert(kid.to_owned(), serde_json::to_vec(jwk).unwrap_or_default());
                }
            }
            None => tracing::debug!(kid, "JWKS key skipped: not an RS256 or ES256 signing key"),
        }
    }
    if keys.is_empty() {
        return Err("has no RS256 or ES256 signing key with a kid".into());
    }
    let mut h = sha2::Sha256::new();
    for (kid, entry) in &entries {
        h.update((kid.len() as u64).to_le_bytes());
        h.update(kid.as_bytes());
        h.update((entry.len() as u64).to_le_bytes());
        h.update(entry);
    }
    Ok((keys, h.finalize().into()))
}

/// `Cache-Control`'s `max-age` (`no-store` and `no-cache`: 0); the smallest when several.
pub(super) fn cache_max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let mut age: Option<u64> = None;
    for v in headers.get_all(reqwest::header::CACHE_CONTROL) {
        let Ok(v) = v.to_str() else { continue };
        for d in v.split(',') {
            let d = d.trim().to_ascii_lowercase();
            let secs = if d == "no-store" || d == "no-cache" {
                Some(0)
            } else {
                d.strip_prefix("max-age=")
                    .and_then(|n| n.trim_matches('"').parse::<u64>().ok())
            };
            if let Some(s) = secs {
                age = Some(age.map_or(s, |a| a.min(s)));
            }
        }
    }
    age.map(Duration::from_secs)
}

pub(super) fn verifying_key(jwk: &Jwk) -> Option<VerifyingKey> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let decoded_len = |b64: &str| {
        URL_SAFE_NO_PAD
            .decode(b64)
            .ok()
            .map(|bytes| bytes.iter().skip_while(|b| **b == 0).count())
    };
    let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(rsa), None | Some(KeyAlgorithm::RS256)) => {
            if decoded_len(&rsa.n)? < MIN_RSA_MODULUS_BYTES {
                return None;
            }
            Algorithm::RS256
        }
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            // Raw lengths: leading zero bytes are part of a fixed-width coordinate.
            let raw_len = |b64: &str| URL_SAFE_NO_PAD.decode(b64).ok().map(|b| b.len());
            if raw_len(&ec.x)? != P256_COORDINATE_BYTES || raw_len(&ec.y)? != P256_COORDINATE_BYTES
            {
                return None;
            }
            Algorithm::ES256
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyingKey { alg, key })
}

pub(super) async fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    let at = path.display();
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("{at}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_JWKS_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("{at}: {e}"))?;
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!("{at}: larger than {MAX_JWKS_BYTES} bytes"));
    }
    Ok(bytes)
}

/// The body and `Cache-Control: max-age` of a JWKS URL.
pub(super) async fn fetch_url(
    client: &reqwest::Client,
    url: &str,
) -> Result<(Vec<u8>, Option<Duration>), String> {
    let at = redact_url(url);
    let failed = |e: reqwest::Error| format!("{at}: {}", error_chain(&e.without_url()));
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(failed)?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("{at}: HTTP {status}"));
    }
    let max_age = cache_max_age(response.headers());
    if response
        .content_length()
        .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
    {
        return Err(format!("{at}: larger than {MAX_JWKS_BYTES} bytes"));
    }
    let mut bytes = Vec::new();
    // Chunk by chunk, so a body without (or lying about) Content-Length stays bounded.
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if bytes.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("{at}: larger than {MAX_JWKS_BYTES} bytes"));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, max_age))
}

/// The URL for messages, without a password.
pub(super) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only fails for URLs that cannot have credentials, which this one has.
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// `error: cause: cause`, since reqwest's own message ("error sending request") hides why.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
