//! Building one authorizer from its config (JWKS, credentials, the callout client) and the
//! fingerprint that tells a reload whether it changed. Part of `auth`.
use super::*;

/// SHA-256 of an authorizer's settings and the contents of the files it names.
pub(super) fn fingerprint(a: &AuthorizerConfig, dir: &Path) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(format!("{a:?}").as_bytes());
    for f in [&a.jwks_file, &a.credentials_file].into_iter().flatten() {
        if let Ok(bytes) = std::fs::read(resolve_path(dir, f)) {
            h.update(&bytes);
        }
    }
    h.finalize().into()
}

pub(super) async fn build_one(
    a: &AuthorizerConfig,
    dir: &Path,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    region: &str,
) -> Result<Kind, String> {
    sources_of(a)?;
    let timeout = a.timeout.unwrap_or(custom::DEFAULT_TIMEOUT);
    match a.kind {
        AuthorizerKind::Jwt => {
            let issuer = a.issuer.as_deref().ok_or("issuer is required")?;
            let source = match (&a.jwks_file, &a.jwks_url) {
                (Some(f), None) => jwt::JwksSource::File(resolve_path(dir, f)),
                (None, Some(u)) => jwt::JwksSource::Url(u.clone()),
                _ => return Err("exactly one of jwks_file and jwks_url is required".into()),
            };
            let remote = matches!(source, jwt::JwksSource::Url(_));
            let j = Arc::new(jwt::JwtAuthorizer::new(issuer, a.audiences.clone(), source));
            if let Err(e) = j.load().await {
                if !remote {
                    return Err(e.to_string());
                }
                // A JWKS endpoint may be briefly down: keep serving (tokens are refused until
                // a refetch on first use succeeds) rather than refuse to start.
                tracing::warn!(authorizer = %a.name, error = %e, "cannot fetch the JWKS yet");
            }
            Ok(Kind::Jwt(j))
        }
        AuthorizerKind::Token => Ok(Kind::Token {
            endpoint: a.endpoint.clone().ok_or("endpoint is required")?,
            timeout,
            regex: a
                .validation_regex
                .as_deref()
                .map(Regex::new)
                .transpose()
                .map_err(|e| format!("validation_regex: {e}"))?,
        }),
        AuthorizerKind::Request => Ok(Kind::Request {
            endpoint: a.endpoint.clone().ok_or("endpoint is required")?,
            timeout,
        }),
        AuthorizerKind::Sigv4 => {
            let file = a
                .credentials_file
                .as_deref()
                .ok_or("credentials_file is required")?;
            let creds = sigv4::SigV4Verifier::load_credentials(&resolve_path(dir, file), env)?;
            Ok(Kind::SigV4(sigv4::SigV4Verifier::new(
                region,
                a.service.as_deref().unwrap_or("execute-api"),
                creds,
            )))
        }
    }
}
