//! `authorizers[]`: the authorizer definitions as typed values, the identity-source grammar
//! (`header:Authorization`, `query:sig`, ...) and the bounds the file's values are checked
//! against. [`crate::auth`] builds and runs authorizers from these and imports its bounds from
//! here (auth → config); this module must not import `auth` (config is a pure parse below it).
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// Default `result_ttl`: how long a decision is cached.
pub const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(300);
/// Largest `result_ttl`.
pub const MAX_RESULT_TTL: Duration = Duration::from_secs(3600);
/// Default least time between background JWKS refreshes (`jwks_refresh.min_interval`).
pub const DEFAULT_REFRESH_MIN: Duration = Duration::from_secs(60);
/// Default longest time between background JWKS refreshes (`jwks_refresh.max_interval`).
pub const DEFAULT_REFRESH_MAX: Duration = Duration::from_secs(3600);
/// The smallest `jwks_refresh.min_interval` accepted (the JWKS endpoint is someone's server).
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// The largest `jwks_refresh.max_interval` accepted.
pub const MAX_REFRESH_INTERVAL: Duration = Duration::from_secs(86_400);

/// `authorizers[]` — parsed and validated; the authorizers run in a later release.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizerConfig {
    /// Name routes refer to.
    pub name: String,
    /// The identity namespace of the principals and claims this authorizer yields (default:
    /// its name). Two authorizers share identities (counters, assignments) only when they
    /// name the same namespace.
    #[serde(default)]
    pub identity_namespace: Option<String>,
    /// `jwt` | `token` | `request` | `sigv4`.
    #[serde(rename = "type")]
    pub kind: AuthorizerKind,
    /// `header:Name` (jwt, token).
    pub identity_source: Option<String>,
    /// `header:Name`, `query:name`, ... (request).
    #[serde(default)]
    pub identity_sources: Vec<String>,
    /// JWT issuer.
    pub issuer: Option<String>,
    /// JWKS file.
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL.
    pub jwks_url: Option<String>,
    /// Allowed audiences / client ids.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Decision cache TTL.
    #[serde(default, with = "duration::option")]
    pub result_ttl: Option<Duration>,
    /// TOKEN validation regex.
    pub validation_regex: Option<String>,
    /// Custom authorizer endpoint.
    pub endpoint: Option<String>,
    /// Custom authorizer call timeout.
    #[serde(default, with = "duration::option")]
    pub timeout: Option<Duration>,
    /// SigV4 service name.
    pub service: Option<String>,
    /// SigV4 credentials file.
    pub credentials_file: Option<PathBuf>,
    /// Add the route (method + resource) to the decision-cache key, so a cached policy is never
    /// reused for another route (AWS keys by identity only).
    #[serde(default)]
    pub cache_key_includes_route: bool,
    /// JWT: how often the JWKS is refetched in the background, so a key removed from it stops
    /// validating tokens (absent: [`JwksRefreshConfig::default`]).
    #[serde(default)]
    pub jwks_refresh: Option<JwksRefreshConfig>,
}

/// `authorizers[].jwks_refresh`: the JWKS is refetched every `Cache-Control: max-age` of its
/// last response, clamped to `[min_interval, max_interval]` (`min_interval` without one, and
/// for a `jwks_file`). A changed key set drops the authorizer's cached decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksRefreshConfig {
    /// The floor (at least 1 s; default 60 s).
    #[serde(with = "duration", default = "default_refresh_min")]
    pub min_interval: Duration,
    /// The ceiling (at most 24 h; default 1 h).
    #[serde(with = "duration", default = "default_refresh_max")]
    pub max_interval: Duration,
}

impl Default for JwksRefreshConfig {
    fn default() -> Self {
        Self {
            min_interval: default_refresh_min(),
            max_interval: default_refresh_max(),
        }
    }
}

fn default_refresh_min() -> Duration {
    DEFAULT_REFRESH_MIN
}

fn default_refresh_max() -> Duration {
    DEFAULT_REFRESH_MAX
}

/// `authorizers[].type`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizerKind {
    /// Cognito-style user-pool JWTs.
    Jwt,
    /// Custom TOKEN authorizer.
    Token,
    /// Custom REQUEST authorizer.
    Request,
    /// IAM-style SigV4.
    Sigv4,
}

/// Where an identity value is read from (`identity_source`, `identity_sources[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// `header:Name` (case-insensitive).
    Header(String),
    /// `query:name`.
    Query(String),
    /// `stageVariables:name` (or `stage:name`).
    StageVariable(String),
    /// `context:name`.
    Context(String),
}

impl IdentitySource {
    /// Parses `header:Authorization`, `query:sig`, `stageVariables:x`, `context:y`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (kind, name) = s
            .split_once(':')
            .filter(|(_, n)| !n.is_empty())
            .ok_or_else(|| format!("identity source {s:?}: expected header:NAME, query:NAME, stageVariables:NAME or context:NAME"))?;
        match kind {
            "header" => Ok(Self::Header(name.to_ascii_lowercase())),
            "query" => Ok(Self::Query(name.to_string())),
            "stageVariables" | "stage" => Ok(Self::StageVariable(name.to_string())),
            "context" => Ok(Self::Context(name.to_string())),
            _ => Err(format!("identity source {s:?}: unknown kind {kind:?}")),
        }
    }

    /// How a denial reason names the source (`header:authorization`), never its value.
    pub fn describe(&self) -> String {
        match self {
            Self::Header(n) => format!("header:{n}"),
            Self::Query(n) => format!("query:{n}"),
            Self::StageVariable(n) => format!("stageVariables:{n}"),
            Self::Context(n) => format!("context:{n}"),
        }
    }
}

/// The identity sources an authorizer reads.
pub fn sources_of(a: &AuthorizerConfig) -> Result<Vec<IdentitySource>, String> {
    match a.kind {
        AuthorizerKind::Jwt | AuthorizerKind::Token => {
            let s = a
                .identity_source
                .as_deref()
                .unwrap_or("header:Authorization");
            let src = IdentitySource::parse(s)?;
            if a.kind == AuthorizerKind::Token && !matches!(src, IdentitySource::Header(_)) {
                return Err("a token authorizer's identity_source must be a header".into());
            }
            Ok(vec![src])
        }
        AuthorizerKind::Request => {
            if a.identity_sources.is_empty() {
                return Err("identity_sources is required for a request authorizer".into());
            }
            a.identity_sources
                .iter()
                .map(|s| IdentitySource::parse(s))
                .collect()
        }
        AuthorizerKind::Sigv4 => Ok(Vec::new()),
    }
}
