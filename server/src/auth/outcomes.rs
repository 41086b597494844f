//! A JWT or SigV4 verdict into an [`AuthOutcome`] with its [`Reason`]. Part of `auth`.
use super::*;

/// The reason for a refused JWT: what was wrong, never the token or its claims' values.
pub(super) fn jwt_reason(name: &str, j: &jwt::JwtAuthorizer, e: &jwt::JwtError) -> Reason {
    use jwt::JwtError as E;
    let code = match e {
        E::Malformed => ReasonCode::TokenMalformed,
        E::UnknownKey => ReasonCode::TokenUnknownKey,
        E::BadSignature => ReasonCode::TokenBadSignature,
        E::Expired => ReasonCode::TokenExpired,
        E::NotYetValid => ReasonCode::TokenNotYetValid,
        E::WrongIssuer => ReasonCode::TokenWrongIssuer,
        E::WrongTokenUse => ReasonCode::TokenWrongUse,
        E::WrongAudience => ReasonCode::TokenWrongAudience,
        E::MissingScope => ReasonCode::TokenMissingScope,
        E::UnsupportedAlgorithm => ReasonCode::TokenUnsupportedAlgorithm,
        E::Jwks(_) => ReasonCode::JwksUnavailable,
    };
    let detail = match e {
        E::WrongIssuer => format!(
            "authorizer {name:?}: the token's iss is not {:?}",
            j.issuer()
        ),
        E::Jwks(_) => {
            format!("authorizer {name:?}: the JWKS cannot be loaded (see the server log)")
        }
        _ => format!("authorizer {name:?}: {e}"),
    };
    Reason::new(code, detail)
}

pub(super) fn sigv4_outcome(
    v: &sigv4::SigV4Verifier,
    name: &str,
    input: &AuthInput<'_>,
    arn: &str,
    now: u64,
) -> AuthOutcome {
    let headers: Vec<(String, String)> = input
        .headers
        .map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let query = input.query.unwrap_or_default();
    let req = sigv4::SigV4Request {
        method: input.method,
        path: input.path,
        query,
        headers: &headers,
        payload_sha256: (!input.body_sha256.is_empty()).then_some(input.body_sha256),
    };
    match v.verify(&req, now) {
        Ok(cred) => {
            let (decision, reason) = match Policy::allow(cred.resources.clone()).evaluate(arn) {
                PolicyDecision::Allow => (AuthDecision::Allow, None),
                _ => (
                    AuthDecision::ImplicitDeny,
                    Some(Reason::new(
                        ReasonCode::Sigv4ResourceDenied,
                        format!(
                            "authorizer {name:?}: the resources of principal {} do not cover {} on this resource",
                            crate::reason::label(&cred.principal_id),
                            input.method
                        ),
                    )),
                ),
            };
            AuthOutcome {
                decision,
                principal_id: cred.principal_id.clone(),
                reason,
                ..AuthOutcome::bare(decision)
            }
        }
        Err(e) => {
            let reason = match &e {
                sigv4::SigV4Error::MissingAuthenticationToken => Reason::new(
                    ReasonCode::Sigv4Missing,
                    format!(
                        "authorizer {name:?}: the request has no SigV4 Authorization header or X-Amz-Algorithm parameter"
                    ),
                ),
                sigv4::SigV4Error::UnknownAccessKey => Reason::new(
                    ReasonCode::Sigv4UnknownAccessKey,
                    format!(
                        "authorizer {name:?}: the access key id is not in its credentials file"
                    ),
                ),
                sigv4::SigV4Error::InvalidSignature => Reason::new(
                    ReasonCode::Sigv4SignatureMismatch,
                    format!(
                        "authorizer {name:?}: the signature does not match the request (check the secret, the signed headers and the canonical request)"
                    ),
                ),
                sigv4::SigV4Error::Expired => Reason::new(
                    ReasonCode::Sigv4Expired,
                    format!(
                        "authorizer {name:?}: the request date is more than 5 minutes from now, or the presigned URL has expired"
                    ),
                ),
                sigv4::SigV4Error::Malformed(m) => Reason::new(
                    ReasonCode::Sigv4Malformed,
                    format!("authorizer {name:?}: {m}"),
                ),
            };
            let (msg, kind) = match e {
                sigv4::SigV4Error::MissingAuthenticationToken => (
                    "Missing Authentication Token",
                    "MissingAuthenticationTokenException",
                ),
                sigv4::SigV4Error::UnknownAccessKey => (
                    "The security token included in the request is invalid.",
                    "UnrecognizedClientException",
                ),
                sigv4::SigV4Error::InvalidSignature => (
                    "The request signature we calculated does not match the signature you provided.",
                    "InvalidSignatureException",
                ),
                sigv4::SigV4Error::Expired => ("Signature expired", "InvalidSignatureException"),
                sigv4::SigV4Error::Malformed(_) => (
                    "Authorization header is malformed",
                    "IncompleteSignatureException",
                ),
            };
            AuthOutcome::denied(AuthDecision::Forbidden(msg, kind), reason)
        }
    }
}
