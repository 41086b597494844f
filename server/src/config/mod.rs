//! The configuration contract (`examples/tollgate.yaml`): typed structs, a pure parse, and a
//! validation that reports every error at once.
//!
//! [`parse`] takes the file text and an environment lookup, so tests never touch the process
//! environment, and nothing else: it reads no file (not even the config file: that is
//! [`crate::preflight::load`]). Each top-level section, and each item of the list sections, is
//! deserialized on its own, so one typo does not hide the next one.
//!
//! Layering: `config` is read by every layer above it and imports only leaves (`limiter` for
//! the math's bounds and `Period`, `routes` for route templates, `ids` for id shapes). It must
//! not import `auth`, `tls`, `listener`, `store` or anything that touches files; the bounds
//! those modules share with the file (`authorizer::MAX_RESULT_TTL`, the JWKS refresh bounds,
//! `validate::MAX_PENDING_CONNECTIONS_PER_SOURCE`) live here and they import them. What needs
//! the file system (the files the config names, the rustls configs, credentials) is
//! [`crate::preflight`]'s job, a layer above `config`, `auth` and `tls`.
pub mod authorizer;
mod duration;
mod env;
pub mod envoy;
pub mod validate;

mod parse;
mod plans;
mod server;
mod store;
pub use parse::*;
pub use plans::*;
pub use server::*;
pub use store::*;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_norway::Value;

pub use authorizer::{AuthorizerConfig, AuthorizerKind, IdentitySource, JwksRefreshConfig};
pub use env::ENV_OVERRIDES;
pub use envoy::{DescriptorDomainConfig, EnvoyConfig, UnknownKey};

use crate::limiter::Period;

/// Default retention of daily usage counters.
pub const DEFAULT_USAGE_RETENTION: Duration = Duration::from_secs(90 * 86_400);

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Listeners and identity.
    pub server: ServerConfig,
    /// Where state lives.
    pub store: StoreConfig,
    /// What to do when the store is unreachable.
    pub failure_mode: FailureMode,
    /// Authorizer definitions.
    pub authorizers: Vec<AuthorizerConfig>,
    /// APIs, stages and routes.
    pub apis: Vec<ApiConfig>,
    /// Usage plans.
    pub usage_plans: Vec<UsagePlanConfig>,
    /// Static API keys (seeded at startup).
    pub api_keys: Vec<ApiKeyConfig>,
    /// Usage plan assignments of principals and claim values (seeded like `api_keys`).
    pub identities: Vec<IdentityConfig>,
    /// How Envoy's ext_authz and Rate Limit Service requests map onto APIs and keys.
    pub envoy: EnvoyConfig,
    /// Generic descriptor rules for Envoy's Rate Limit Service (Envoy ratelimit format).
    pub descriptors: Vec<DescriptorDomainConfig>,
}

/// A token-bucket limit as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Requests per second (fractional allowed).
    pub rate_limit: f64,
    /// Bucket capacity.
    pub burst_limit: u64,
}

/// `apis[]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// API id.
    pub id: String,
    /// Stages.
    #[serde(default)]
    pub stages: Vec<StageConfig>,
}

/// Where a stage takes API keys from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum ApiKeySource {
    /// The `x-api-key` header.
    #[default]
    #[serde(rename = "HEADER")]
    Header,
    /// The authorizer's `usage_identifier_key`.
    #[serde(rename = "AUTHORIZER")]
    Authorizer,
}

/// `apis[].stages[]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Stage name.
    pub name: String,
    /// Where API keys come from.
    #[serde(default)]
    pub api_key_source: ApiKeySource,
    /// Stage-wide default limit shared by all clients.
    pub throttle: Option<ThrottleConfig>,
    /// Routes.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// What usage plans meter on this stage: `api_key` (the default, as AWS), `principal`
    /// (the authorizer's principal) or `claim:<name>` (a JWT claim or custom-authorizer context
    /// value).
    #[serde(default)]
    pub usage_identifier: UsageIdentifier,
    /// With `principal` / `claim:<name>`: the plan of identities that have no assignment
    /// (`identities[]`); without one, such identities are answered 403.
    pub default_usage_plan: Option<String>,
}

/// `apis[].stages[].usage_identifier`: who a usage plan's throttle and quota count against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UsageIdentifier {
    /// The API key (`x-api-key`, or the authorizer's `usageIdentifierKey`).
    #[default]
    ApiKey,
    /// The authorizer's principal id.
    Principal,
    /// A claim of the JWT (or a context value of a custom authorizer).
    Claim(String),
}

impl UsageIdentifier {
    /// Parses `api_key`, `principal` or `claim:<name>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "api_key" => Ok(Self::ApiKey),
            "principal" => Ok(Self::Principal),
            _ => match s.strip_prefix("claim:") {
                Some(name) if !name.is_empty() && name.len() <= 128 && !name.contains('=') => {
                    Ok(Self::Claim(name.to_string()))
                }
                _ => Err(format!(
                    "usage_identifier {s:?}: expected api_key, principal or claim:<name>"
                )),
            },
        }
    }

    /// The identity string of `value` under this identifier: `principal=<v>`,
    /// `claim:<name>=<v>` (what `identities[].identity` names). `None` — no identity — for an
    /// empty value, one an assignment could not name (over
    /// [`validate::MAX_IDENTITY_LEN`], control characters), and the JSON text of a claim that
    /// is not a string, number or boolean (`null`, objects, arrays: the JWT authorizer gives
    /// claims as compact JSON), so every token with a null claim does not share one identity.
    pub fn identity(&self, value: &str) -> Option<String> {
        if value.is_empty() || value == "null" || value.starts_with('{') || value.starts_with('[') {
            return None;
        }
        let identity = match self {
            Self::ApiKey => return None,
            Self::Principal => format!("principal={value}"),
            Self::Claim(n) => format!("claim:{n}={value}"),
        };
        validate::validate_identity(&identity).ok()?;
        Some(identity)
    }
}

impl<'de> Deserialize<'de> for UsageIdentifier {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Config {
    /// The identity namespace of authorizer `name`: its `identity_namespace`, else its name.
    pub fn identity_namespace_of<'a>(&'a self, name: &'a str) -> &'a str {
        self.authorizers
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.identity_namespace.as_deref())
            .unwrap_or(name)
    }

    /// The identity namespaces of the authorizers on routes that meter by identity
    /// (`usage_identifier: principal | claim:<name>`).
    pub fn identity_namespaces(&self) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        for st in self.apis.iter().flat_map(|a| &a.stages) {
            for r in &st.routes {
                let by_identity = r.usage_identifier.as_ref().unwrap_or(&st.usage_identifier)
                    != &UsageIdentifier::ApiKey;
                if let (true, Some(a)) = (by_identity, &r.authorizer) {
                    out.insert(self.identity_namespace_of(a).to_string());
                }
            }
        }
        out
    }
}

/// The canonical form of an identity: `<namespace>/principal=<v>` or
/// `<namespace>/claim:<name>=<v>`. A bare `principal=<v>` (no namespace) is taken to be in
/// the only namespace of `namespaces` (kept bare when there is none: no route could match
/// it); with several it is ambiguous (`Err` names them). The namespace is everything before
/// the first `/` and must be an id (`A-Z a-z 0-9 . _ -`), so no principal or claim value can
/// forge another namespace.
pub fn canonical_identity(
    namespaces: &std::collections::BTreeSet<String>,
    identity: &str,
) -> Result<String, String> {
    validate::validate_identity(identity)?;
    if namespaced(identity).is_some() {
        return Ok(identity.to_string());
    }
    match namespaces.iter().collect::<Vec<_>>().as_slice() {
        [one] => Ok(format!("{one}/{identity}")),
        // No route meters by identity through an authorizer: nothing can match it either way.
        [] => Ok(identity.to_string()),
        many => Err(format!(
            "identity {:?} is ambiguous: name its authorizer's identity namespace, one of {}, as <namespace>/{}",
            validate::truncated(identity),
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            validate::truncated(identity)
        )),
    }
}

/// `Some((namespace, rest))` when `identity` starts with `<namespace>/`, the namespace an id
/// (`A-Z a-z 0-9 . _ -`): `claim:https://example.com/tenant=acme` is not namespaced.
pub fn namespaced(identity: &str) -> Option<(&str, &str)> {
    let (ns, rest) = identity.split_once('/')?;
    validate::valid_id(ns).then_some((ns, rest))
}

/// `identities[]`: a usage plan assignment for a principal or claim value (stages whose
/// `usage_identifier` is `principal` or `claim:<name>`). Stored like an API key without a
/// value: its id is derived from the identity (`i-` and 24 hex digits).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// `principal=<id>` or `claim:<name>=<value>`, optionally prefixed by the authorizer's
    /// identity namespace (`cognito/principal=<id>`; required when there are several).
    pub identity: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Disabled identities are answered 403 (default: enabled).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// External customer id.
    pub customer_id: Option<String>,
    /// Plan ids (at most one per api stage).
    #[serde(default)]
    pub usage_plans: Vec<String>,
}

fn yes() -> bool {
    true
}

/// `apis[].stages[].routes[]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// HTTP method or `ANY`.
    pub method: String,
    /// Path template: literal segments, `{param}`, a final `{proxy+}`.
    pub path: String,
    /// Whether a valid API key in a plan for the stage is required.
    #[serde(default)]
    pub api_key_required: bool,
    /// Authorizer name.
    pub authorizer: Option<String>,
    /// OAuth scopes (jwt authorizers).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Stage-wide limit for this route (all clients); replaces the stage default.
    pub throttle: Option<ThrottleConfig>,
    /// Overrides the stage's `usage_identifier` for this route.
    pub usage_identifier: Option<UsageIdentifier>,
}

#[cfg(test)]
mod tests;
