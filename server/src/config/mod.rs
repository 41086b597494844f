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

/// Default per-call store deadline.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(50);
/// Default Redis connection pool size.
pub const DEFAULT_POOL_SIZE: usize = 32;
/// Default retention of daily usage counters.
pub const DEFAULT_USAGE_RETENTION: Duration = Duration::from_secs(90 * 86_400);
/// Default size of the local over-limit cache (owners).
pub const DEFAULT_OVER_LIMIT_CACHE: u64 = 100_000;
/// Default key prefix in the store.
pub const DEFAULT_KEY_PREFIX: &str = "tg";

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

/// `server:`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// CheckService, health, reflection.
    pub grpc_addr: SocketAddr,
    /// AdminService (may equal `grpc_addr`).
    pub admin_addr: SocketAddr,
    /// `GET /metrics`.
    pub metrics_addr: SocketAddr,
    /// File with one admin bearer token per line.
    pub admin_tokens_file: Option<PathBuf>,
    /// AWS-style region for method ARNs.
    pub region: String,
    /// AWS-style account id for method ARNs.
    pub account_id: String,
    /// Grace period for in-flight requests on SIGTERM.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// Tokio worker threads; 0 = one per CPU.
    pub worker_threads: usize,
    /// TLS on the gRPC listener, and on the admin listener unless `admin_tls` is set.
    pub tls: Option<ListenerTls>,
    /// TLS on the admin listener (defaults to `tls`).
    pub admin_tls: Option<ListenerTls>,
    /// How long a new connection (gRPC and admin listeners) may stay silent before its first
    /// byte; silent ones are closed.
    #[serde(with = "duration")]
    pub first_byte_timeout: Duration,
    /// Connections from one source address that may wait for their first byte (or TLS
    /// handshake) at once, per listener; more are closed at once.
    pub pending_connections_per_source: usize,
    /// Interval of the HTTP/2 keepalive pings the server sends on every connection; `0s` turns
    /// them off.
    #[serde(with = "duration")]
    pub http2_keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered before the connection is closed.
    #[serde(with = "duration")]
    pub http2_keepalive_timeout: Duration,
    /// A connection with no call in flight for this long is closed; `0s` never closes one.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
}

/// Default `server.first_byte_timeout`.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(3);
/// Default `server.pending_connections_per_source`.
pub const DEFAULT_PENDING_CONNECTIONS_PER_SOURCE: usize = 64;
/// Default `server.http2_keepalive_interval`.
pub const DEFAULT_HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// Default `server.http2_keepalive_timeout`.
pub const DEFAULT_HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default `server.idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

impl ServerConfig {
    /// Whether the admin API is served on the gRPC listener (`admin_addr` equals `grpc_addr`
    /// and is not port 0, which gives each its own free port).
    pub fn admin_on_grpc(&self) -> bool {
        self.admin_addr == self.grpc_addr && self.grpc_addr.port() != 0
    }

    /// The admin listener's TLS: `admin_tls`, else `tls`.
    pub fn admin_tls(&self) -> Option<&ListenerTls> {
        self.admin_tls.as_ref().or(self.tls.as_ref())
    }
}

/// `server.tls`, `server.admin_tls`: a listener's certificate and, for mutual TLS, the CA its
/// clients' certificates must chain to. The files are re-read when they change (certificate
/// rotation needs no restart).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates; set, clients must present a certificate signed by one (mTLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: `required` (default) or `optional` (a certificate, if presented,
    /// must be valid).
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// `server.tls.client_auth`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Every client must present a valid certificate.
    #[default]
    Required,
    /// A client may present one; if it does, it must be valid.
    Optional,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 50052)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
            admin_tokens_file: None,
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            shutdown_grace: Duration::from_secs(10),
            worker_threads: 0,
            tls: None,
            admin_tls: None,
            first_byte_timeout: DEFAULT_FIRST_BYTE_TIMEOUT,
            pending_connections_per_source: DEFAULT_PENDING_CONNECTIONS_PER_SOURCE,
            http2_keepalive_interval: DEFAULT_HTTP2_KEEPALIVE_INTERVAL,
            http2_keepalive_timeout: DEFAULT_HTTP2_KEEPALIVE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// `store.kind`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// Embedded, in-process (the default): one instance only.
    #[default]
    Memory,
    /// A standalone Redis.
    Redis,
    /// Redis Cluster: `url` lists seed nodes (any reachable one finds the rest).
    RedisCluster,
    /// Redis behind Sentinel: `url` lists the sentinels, `master_name` names the master.
    RedisSentinel,
}

/// `store.url`: one URL, a list of them, or one string of comma-separated URLs (what
/// `TOLLGATE_STORE_URL` carries).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreUrls(pub Vec<String>);

impl StoreUrls {
    /// The first URL (standalone Redis uses only that one).
    pub fn first(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }
}

impl<'de> Deserialize<'de> for StoreUrls {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let list = match OneOrMany::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a URL, a list of URLs or comma-separated URLs")
        })? {
            OneOrMany::One(s) => s.split(',').map(|u| u.trim().to_string()).collect(),
            OneOrMany::Many(v) => v.into_iter().map(|u| u.trim().to_string()).collect(),
        };
        Ok(Self(list))
    }
}

/// `store.tls`: trust and client certificates for `rediss://` (every store kind). Without it,
/// `rediss://` verifies the server against the system's trust store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreTlsConfig {
    /// PEM file of the CA(s) that signed the Redis servers' certificates.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for Redis's `tls-auth-clients yes` (mutual TLS).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// `store:`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Backend kind.
    pub kind: StoreKind,
    /// `redis://[[user]:password@]host:port/db` (or `rediss://`); for `redis-cluster` the seed
    /// nodes, for `redis-sentinel` the sentinels.
    pub url: Option<StoreUrls>,
    /// `redis-sentinel`: the name the sentinels monitor the master under.
    pub master_name: Option<String>,
    /// ACL user for the data nodes (overrides one in the URL); `TOLLGATE_STORE_USERNAME`.
    pub username: Option<String>,
    /// Password for the data nodes (overrides one in the URL); best set through
    /// `TOLLGATE_STORE_PASSWORD` rather than in the file.
    #[serde(deserialize_with = "secret")]
    pub password: Option<String>,
    /// TLS files for `rediss://`.
    pub tls: Option<StoreTlsConfig>,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Deadline for one store call.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Prefix of every key Tollgate writes.
    pub key_prefix: String,
    /// How long daily usage (GetUsage) is kept: whole days.
    #[serde(with = "duration")]
    pub usage_retention: Duration,
    /// Owners (API keys, stages, descriptors) the local over-limit cache remembers denials
    /// for; 0 turns it off.
    pub over_limit_cache: u64,
    /// The store circuit breaker.
    pub circuit_breaker: CircuitBreakerConfig,
}

/// `store.circuit_breaker`: after `failures` store calls in a row fail, checks are answered per
/// the failure mode without waiting for the store for `open_for`, then one probe is let
/// through. `failures: 0` turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Failures in a row that open the circuit (0: never).
    pub failures: u32,
    /// How long it stays open before a probe.
    #[serde(with = "duration")]
    pub open_for: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            open_for: Duration::from_secs(1),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Memory,
            url: None,
            master_name: None,
            username: None,
            password: None,
            tls: None,
            pool_size: DEFAULT_POOL_SIZE,
            timeout: DEFAULT_STORE_TIMEOUT,
            key_prefix: DEFAULT_KEY_PREFIX.into(),
            usage_retention: DEFAULT_USAGE_RETENTION,
            over_limit_cache: DEFAULT_OVER_LIMIT_CACHE,
            circuit_breaker: CircuitBreakerConfig::default(),
        }
    }
}

/// `failure_mode`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Allow (marked degraded) when the store is unreachable.
    #[default]
    Open,
    /// Answer `UNAVAILABLE` when the store is unreachable.
    Closed,
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

/// How a plan's per-key bucket is scoped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleScope {
    /// One bucket per key per method (AWS default).
    #[default]
    PerMethod,
    /// One bucket per key per plan.
    PerPlan,
}

/// `usage_plans[].quota`
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Requests per period.
    pub limit: u64,
    /// DAY | WEEK | MONTH.
    pub period: Period,
    /// Subtracted from the limit in the plan's initial period.
    #[serde(default)]
    pub offset: u64,
}

/// `usage_plans[].api_stages[]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanStageConfig {
    /// API id.
    pub api_id: String,
    /// Stage name.
    pub stage: String,
    /// `"/resource/path/METHOD"` → limit (`*` for any path or method).
    #[serde(default)]
    pub method_throttle: BTreeMap<String, ThrottleConfig>,
}

/// `usage_plans[]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UsagePlanConfig {
    /// Plan id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Per-key token bucket.
    pub throttle: Option<ThrottleConfig>,
    /// Per-key period quota.
    pub quota: Option<QuotaConfig>,
    /// Bucket scope.
    #[serde(default)]
    pub throttle_scope: ThrottleScope,
    /// Overrides the global failure mode for this plan's keys.
    pub failure_mode: Option<FailureMode>,
    /// Start of the plan's initial quota period (`YYYY-MM-DD` or RFC 3339); where `offset`
    /// applies. Default: when the store first saw the plan.
    pub created_at: Option<String>,
    /// The stages the plan covers.
    #[serde(default)]
    pub api_stages: Vec<PlanStageConfig>,
    /// Hot keys (opt-in): each instance takes `units` at once from the store and spends them
    /// locally. Off by default (every check exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_lease: Option<LocalLeaseConfig>,
    /// Metered costs (`ReportUsage`): what a report adjusts besides the quota and the daily
    /// usage. Absent: the quota and the usage only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metering: Option<MeteringConfig>,
}

/// `usage_plans[].metering`: how `ReportUsage` settles a reservation of this plan's keys.
/// Present (even empty), the keys' checks with a `request_id` are reservations: one nobody
/// reports is released in full after `reservation_ttl` (by whichever instance sweeps first;
/// the reservation's ticket is in the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MeteringConfig {
    /// Adjust the key's own token buckets by `actual - reserved` too (TAT back or forward by
    /// that many units). Stage-wide buckets are never adjusted.
    #[serde(default)]
    pub meter_throttle: bool,
    /// How long a reservation waits for its report before it is released (1s to
    /// [`MAX_RESERVATION_TTL`], the default: the idempotency record lives 600 s and the
    /// release needs it).
    #[serde(with = "duration", default = "default_reservation_ttl")]
    pub reservation_ttl: Duration,
    /// The least a reservation of this plan's keys holds: a check with a `request_id` and a
    /// smaller `cost` reserves this many units instead (on every path: `CheckRequest`, the
    /// client layer, Envoy `meter` routes), so a caller cannot reserve 1 and be post-paid far
    /// past the quota. 1 to [`MAX_RESERVATION`](validate::MAX_RESERVATION); absent: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_reservation: Option<u64>,
    /// The most one reservation may hold: a check with a `request_id` and a larger `cost` is
    /// refused (`INVALID_ARGUMENT`; 400 through Envoy). At least `min_reservation`, at most
    /// [`MAX_RESERVATION`](validate::MAX_RESERVATION); absent: the cost limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_reservation: Option<u64>,
}

impl Default for MeteringConfig {
    fn default() -> Self {
        Self {
            meter_throttle: false,
            reservation_ttl: MAX_RESERVATION_TTL,
            min_reservation: None,
            max_reservation: None,
        }
    }
}

/// The longest (and default) `metering.reservation_ttl`: the idempotency record's 600 s less
/// the release margin.
pub const MAX_RESERVATION_TTL: Duration =
    Duration::from_millis(crate::limiter::IDEMPOTENCY_TTL_MS - crate::limiter::RELEASE_MARGIN_MS);

fn default_reservation_ttl() -> Duration {
    MAX_RESERVATION_TTL
}

/// `usage_plans[].local_lease`: an instance takes `units` requests' worth of the key's buckets
/// and quota in one store call and admits the next requests of that key locally, until they
/// are spent or `max_age` passes (what is left then goes back to the store). Bound: at any
/// moment at most `units` × instances requests are admitted ahead of the store's own
/// schedule (never beyond the quota: leased units are already counted); a lease another
/// instance holds can make a key wait up to `max_age` for units it does not use.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalLeaseConfig {
    /// Units (requests of cost 1) one store call takes.
    pub units: u64,
    /// How long an instance may spend a lease.
    #[serde(with = "duration", default = "default_lease_max_age")]
    pub max_age: Duration,
}

/// A secret scalar as a string (a numeric password is a password too); an error never echoes
/// the value.
fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d) {
        Ok(Value::String(s)) => Ok(Some(s)),
        Ok(Value::Number(n)) => Ok(Some(n.to_string())),
        Ok(Value::Bool(b)) => Ok(Some(b.to_string())),
        Ok(Value::Null) => Ok(None),
        _ => Err(serde::de::Error::custom("expected a string")),
    }
}

fn default_lease_max_age() -> Duration {
    LocalLeaseConfig::DEFAULT_MAX_AGE
}

impl LocalLeaseConfig {
    /// `max_age` when none is given.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_millis(500);
}

/// `api_keys[]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Key id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Env var holding the value (wins over `value_file` and `value`).
    pub value_env: Option<String>,
    /// File holding the value (trimmed).
    pub value_file: Option<PathBuf>,
    /// Literal value: for local demos only.
    pub value: Option<String>,
    /// AWS defaults to disabled.
    #[serde(default)]
    pub enabled: bool,
    /// External customer id.
    pub customer_id: Option<String>,
    /// Plan ids.
    #[serde(default)]
    pub usage_plans: Vec<String>,
    /// The value, resolved from `value_env` / `value` by [`parse`] and from `value_file` by
    /// [`crate::preflight`] (empty until then).
    #[serde(skip)]
    pub resolved_value: String,
}

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} configuration error(s):\n  - {}", .0.len(), .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

/// Parses and validates config text, with `TOLLGATE_*` overrides and `value_env` keys from
/// `env`: every error at once. Touches no file: a key's `value_file` is not read (its
/// `resolved_value` stays empty) and the files the config names are not looked at; a config
/// to serve from goes through [`crate::preflight`], which does both.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    parse_partial(text, env)?.into_result()
}

/// What [`parse_partial`] read: the config as far as it could be typed (a list item or section
/// that did not deserialize is left out or at its default) and every error found in it.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The config, complete only when `errors` is empty.
    pub config: Config,
    /// Every problem found, in the order the file's sections are checked.
    pub errors: Vec<String>,
}

impl Parsed {
    /// The config, or every error.
    pub fn into_result(self) -> Result<Config, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(self.config)
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}

/// [`parse`], keeping the partial config next to its errors, so that the preflight can report
/// the problems of the files it names in the same run (one report, not one per fix). `Err`
/// only when there is no config at all: the text is not YAML, or its top level no mapping.
pub fn parse_partial(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, ConfigErrors> {
    let mut root: Value = if text.trim().is_empty() {
        Value::Mapping(Default::default())
    } else {
        serde_norway::from_str(text).map_err(|e| ConfigErrors(vec![format!("YAML: {e}")]))?
    };
    if root.is_null() {
        root = Value::Mapping(Default::default());
    }
    let Value::Mapping(map) = &mut root else {
        return Err(ConfigErrors(vec!["the top level must be a mapping".into()]));
    };
    let mut errors = Vec::new();
    env::apply(map, env, &mut errors);

    const KNOWN: [&str; 10] = [
        "server",
        "store",
        "failure_mode",
        "authorizers",
        "apis",
        "usage_plans",
        "api_keys",
        "identities",
        "envoy",
        "descriptors",
    ];
    for k in map.keys() {
        match k.as_str() {
            Some(k) if KNOWN.contains(&k) => {}
            other => errors.push(format!(
                "unknown top-level key {:?} (known: {})",
                other.unwrap_or("<non-string>"),
                KNOWN.join(", ")
            )),
        }
    }
    let server = section::<ServerConfig>(map, "server", &mut errors).unwrap_or_default();
    let store = section::<StoreConfig>(map, "store", &mut errors).unwrap_or_default();
    let failure_mode = section::<FailureMode>(map, "failure_mode", &mut errors).unwrap_or_default();
    let authorizers = list::<AuthorizerConfig>(map, "authorizers", &mut errors);
    let apis = list::<ApiConfig>(map, "apis", &mut errors);
    let usage_plans = list::<UsagePlanConfig>(map, "usage_plans", &mut errors);
    let mut api_keys = list::<ApiKeyConfig>(map, "api_keys", &mut errors);
    let identities = list::<IdentityConfig>(map, "identities", &mut errors);
    let envoy = section::<EnvoyConfig>(map, "envoy", &mut errors).unwrap_or_default();
    let descriptors = list::<DescriptorDomainConfig>(map, "descriptors", &mut errors);
    for (i, k) in api_keys.iter_mut().enumerate() {
        match k.value_source(env) {
            Ok(KeyValue::Known(v)) => k.resolved_value = v,
            // The preflight reads it.
            Ok(KeyValue::File(_)) => {}
            Err(e) => errors.push(format!("api_keys[{i}] ({}): {e}", k.id)),
        }
    }
    let config = Config {
        server,
        store,
        failure_mode,
        authorizers,
        apis,
        usage_plans,
        api_keys,
        identities,
        envoy,
        descriptors,
    };
    validate::validate(&config, &mut errors);
    Ok(Parsed { config, errors })
}

fn section<T: DeserializeOwned>(
    map: &serde_norway::Mapping,
    key: &str,
    errors: &mut Vec<String>,
) -> Option<T> {
    let v = map.get(key)?;
    if v.is_null() {
        return None;
    }
    serde_norway::from_value(v.clone())
        .map_err(|e| errors.push(format!("{key}: {e}")))
        .ok()
}

fn list<T: DeserializeOwned>(
    map: &serde_norway::Mapping,
    key: &str,
    errors: &mut Vec<String>,
) -> Vec<T> {
    let Some(v) = map.get(key) else {
        return Vec::new();
    };
    match v {
        Value::Null => Vec::new(),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                serde_norway::from_value(item.clone())
                    .map_err(|e| {
                        let id = item
                            .get("id")
                            .or_else(|| item.get("name"))
                            .and_then(Value::as_str)
                            .map(|s| format!(" ({s})"))
                            .unwrap_or_default();
                        errors.push(format!("{key}[{i}]{id}: {e}"))
                    })
                    .ok()
            })
            .collect(),
        _ => {
            errors.push(format!("{key}: expected a list"));
            Vec::new()
        }
    }
}

/// Where an API key's value comes from, by the precedence of its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValue {
    /// `value_env` (set and non-empty) or the literal `value`.
    Known(String),
    /// `value_file`, as written (the preflight resolves it against the config's directory
    /// and reads it).
    File(PathBuf),
}

impl ApiKeyConfig {
    /// Where this key's value comes from: `value_env` when the variable is set and non-empty,
    /// else `value_file`, else `value`.
    pub fn value_source(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<KeyValue, String> {
        if let Some(var) = &self.value_env
            && let Some(v) = env(var).filter(|v| !v.is_empty())
        {
            return Ok(KeyValue::Known(v));
        }
        if let Some(file) = &self.value_file {
            return Ok(KeyValue::File(file.clone()));
        }
        if let Some(v) = &self.value {
            return Ok(KeyValue::Known(v.clone()));
        }
        match &self.value_env {
            Some(var) => Err(format!("environment variable {var} (value_env) is not set")),
            None => Err("one of value_env, value_file or value is required".into()),
        }
    }
}

#[cfg(test)]
mod tests;
