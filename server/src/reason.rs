//! Why a request was denied, for the operator: [`Reason`] is a stable snake_case
//! [`ReasonCode`] and a sentence naming the thing that failed (the claim, the policy
//! statement, the bucket, the key id). The pipeline and the authorizers decide it; `api/`
//! puts it on the wire (`DenialReason`, Envoy's `dynamic_metadata`) and the pipeline logs it at
//! debug level under the target [`LOG_TARGET`].
//!
//! A reason never carries a secret: no API key value, token, signature, secret or full
//! credential — only names the operator configured (claims, statements, plans, routes), ids
//! (API key ids, SigV4 access key ids) and limits. The list of codes is [`ReasonCode::ALL`],
//! and every one is documented in `docs/reference/errors.md` (a unit test checks it).
//!
//! A leaf: imports nothing of the crate; the pipeline, auth and api import it.

/// The `tracing` target of the one debug line per denial: `TOLLGATE_LOG=info,tollgate::denial=debug`
/// shows denials without the rest of the debug output.
pub const LOG_TARGET: &str = "tollgate::denial";

/// Longest detail kept (a policy statement's Sid or an error message can be long).
pub const MAX_DETAIL_LEN: usize = 512;

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident => $code:literal,)*) => {
        /// A denial's machine-readable code. The strings are a contract: add, never rename.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ReasonCode {
            $($(#[$doc])* $name,)*
        }

        impl ReasonCode {
            /// Every code, in documentation order.
            pub const ALL: &'static [ReasonCode] = &[$(ReasonCode::$name,)*];

            /// The stable snake_case code.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ReasonCode::$name => $code,)*
                }
            }
        }
    };
}

codes! {
    /// No route matches the method and path (403 `MissingAuthenticationTokenException`).
    RouteNotFound => "route_not_found",
    /// The route requires an API key and the request has none.
    ApiKeyMissing => "api_key_missing",
    /// No API key has the value sent.
    ApiKeyUnknown => "api_key_unknown",
    /// The API key is disabled.
    ApiKeyDisabled => "api_key_disabled",
    /// The API key is in no usage plan for this API stage.
    PlanNotOnStage => "plan_not_on_stage",
    /// The claim the route's `usage_identifier` names is not in the authorizer's output.
    ClaimMissing => "claim_missing",
    /// The identity has no usage plan for this API stage (or is not a valid identity).
    IdentityNotInPlan => "identity_not_in_plan",
    /// A usage plan's `method_throttle` bucket for this method is empty.
    ThrottledMethod => "throttled_method",
    /// A usage plan's throttle bucket (per API key) is empty.
    ThrottledPlan => "throttled_plan",
    /// The route's stage-wide throttle bucket is empty.
    ThrottledRoute => "throttled_route",
    /// The stage's default throttle bucket is empty.
    ThrottledStage => "throttled_stage",
    /// The request's cost is above a bucket's burst: it can never pass.
    CostAboveBurst => "cost_above_burst",
    /// The usage plan's quota for the period is used up.
    QuotaExceeded => "quota_exceeded",
    /// A generic rate-limit descriptor rule (`descriptors:`, Envoy RLS) is over its limit.
    DescriptorOverLimit => "descriptor_over_limit",
    /// A metered Envoy route saw a second request with an admitted request's `x-request-id`.
    RequestIdDuplicate => "request_id_duplicate",
    /// The request itself is invalid (Envoy ext_authz: bad method, path, size).
    RequestInvalid => "request_invalid",
    /// A value the authorizer reads (its identity source) is absent from the request.
    IdentitySourceMissing => "identity_source_missing",
    /// The token does not match the TOKEN authorizer's `validation_regex`.
    TokenRejectedByRegex => "token_rejected_by_regex",
    /// The JWT is not well formed (shape, base64, JSON, `sub`/`exp`/`nbf`).
    TokenMalformed => "token_malformed",
    /// The JWT's `kid` names no key in the JWKS.
    TokenUnknownKey => "token_unknown_key",
    /// The JWT's signature does not verify.
    TokenBadSignature => "token_bad_signature",
    /// The JWT's algorithm is not RS256 or ES256.
    TokenUnsupportedAlgorithm => "token_unsupported_algorithm",
    /// The JWT has expired.
    TokenExpired => "token_expired",
    /// The JWT's `nbf` is in the future.
    TokenNotYetValid => "token_not_yet_valid",
    /// The JWT's issuer is not the authorizer's.
    TokenWrongIssuer => "token_wrong_issuer",
    /// The JWT's audience / client id is not allowed.
    TokenWrongAudience => "token_wrong_audience",
    /// An access token where an ID token is required, or the reverse.
    TokenWrongUse => "token_wrong_use",
    /// The access token has none of the route's scopes.
    TokenMissingScope => "token_missing_scope",
    /// The JWKS could not be loaded: no token can be verified.
    JwksUnavailable => "jwks_unavailable",
    /// The custom authorizer answered `Unauthorized`.
    AuthorizerUnauthorized => "authorizer_unauthorized",
    /// A `Deny` statement of the authorizer's policy matches the method ARN.
    PolicyDenied => "policy_denied",
    /// No `Allow` statement of the authorizer's policy matches the method ARN.
    PolicyNoMatch => "policy_no_match",
    /// The authorizer's `policyDocument` cannot be evaluated.
    PolicyMalformed => "policy_malformed",
    /// The custom authorizer failed: timeout, connection, status, malformed answer.
    AuthorizerFailed => "authorizer_failed",
    /// The authorizer's context has two names that map to one identity header.
    ContextNameCollision => "context_name_collision",
    /// No SigV4 signature (no `Authorization` header, no `X-Amz-Algorithm`).
    Sigv4Missing => "sigv4_missing",
    /// The SigV4 access key id is not in the credentials file.
    Sigv4UnknownAccessKey => "sigv4_unknown_access_key",
    /// The SigV4 signature does not match the request.
    Sigv4SignatureMismatch => "sigv4_signature_mismatch",
    /// The SigV4 request date is too far from now, or the presigned URL has expired.
    Sigv4Expired => "sigv4_expired",
    /// The SigV4 signature is malformed (header, scope, date, `UNSIGNED-PAYLOAD`, ...).
    Sigv4Malformed => "sigv4_malformed",
    /// The SigV4 credential's `resources` do not cover the method ARN.
    Sigv4ResourceDenied => "sigv4_resource_denied",
}

/// Why a request was denied: a code and a sentence for a human. Never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// The code.
    pub code: ReasonCode,
    /// Which check failed, on what (bounded to [`MAX_DETAIL_LEN`]).
    pub detail: String,
}

impl Reason {
    /// A reason; `detail` is cut to [`MAX_DETAIL_LEN`] on a character boundary, and control
    /// characters become `?` (a detail reaches text logs and Envoy's access log, where a
    /// newline would forge a line).
    pub fn new(code: ReasonCode, detail: impl Into<String>) -> Self {
        let mut detail: String = detail.into();
        if detail.chars().any(char::is_control) {
            detail = detail
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
        }
        if detail.len() > MAX_DETAIL_LEN {
            let mut end = MAX_DETAIL_LEN;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
        }
        Self { code, detail }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}

/// A label from a client or a policy (a Sid), for a detail: printable ASCII only, at most 64
/// characters, quoted.
pub fn label(s: &str) -> String {
    let s: String = s
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    format!("{s:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_bounded_and_single_line() {
        let r = Reason::new(
            ReasonCode::ApiKeyUnknown,
            "a\nforged 2025-01-01T00:00:00Z INFO line\r\u{1b}[31m",
        );
        assert!(!r.detail.chars().any(char::is_control), "{:?}", r.detail);
        assert!(r.detail.starts_with("a?forged"), "{:?}", r.detail);
        let long = Reason::new(ReasonCode::ApiKeyUnknown, "é".repeat(MAX_DETAIL_LEN));
        assert!(long.detail.len() <= MAX_DETAIL_LEN);
        assert_eq!(label("x\ny"), "\"x?y\"");
    }

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for c in ReasonCode::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{s} is not snake_case"
            );
        }
    }

    /// The error table documents every code (and the page is where operators look them up).
    #[test]
    fn every_code_is_in_the_error_table() {
        let doc = include_str!("../../docs/reference/errors.md");
        let missing: Vec<_> = ReasonCode::ALL
            .iter()
            .map(|c| c.as_str())
            .filter(|c| !doc.contains(&format!("`{c}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "codes missing from docs/reference/errors.md: {missing:?}"
        );
    }

    #[test]
    fn detail_is_bounded() {
        let r = Reason::new(ReasonCode::PolicyDenied, "é".repeat(MAX_DETAIL_LEN));
        assert!(r.detail.len() <= MAX_DETAIL_LEN);
        assert_eq!(label("a\u{0}b\"c"), "\"a?b\\\"c\"");
    }
}
