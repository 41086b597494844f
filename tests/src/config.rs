//! A typed builder for the config files the end-to-end suites hand to
//! [`TollgateProcess::start`](crate::tollgate::TollgateProcess::start).
//!
//! The server's own `tollgate_server::config::Config` is deserialize-only and has no
//! constructors (it is the parsed, validated result), so this module keeps a small typed mirror
//! of the parts the suites write: the field names are Rust fields here, so a misspelt one is a
//! compile error, not a config rejected at startup. The leaf values the server can serialize
//! itself ([`ThrottleConfig`], [`QuotaConfig`], [`MeteringConfig`], [`LocalLeaseConfig`],
//! [`FailureMode`], [`Period`]) are the server's own types. [`Config::to_yaml`] renders the
//! file; the `harness::` suite parses what it renders with the server's parser.
//!
//! A suite that tests YAML parsing itself (hostile configs, the docs' examples) keeps its text.
//!
//! Owns: the shape of the test configs. Must not import: the suites (`it/`) or the process
//! modules of this harness (it renders text, it runs nothing).
use std::path::PathBuf;
use std::time::Duration;

use serde::{Serialize, Serializer};
pub use tollgate_server::config::{
    FailureMode, LocalLeaseConfig, MeteringConfig, QuotaConfig, ThrottleConfig,
};
pub use tollgate_server::limiter::Period;

use crate::fixtures;

/// The store timeout of Redis-backed test configs: the machine running the suite may be a
/// shared 2-core box, where the default 50 ms deadline fires on a healthy Redis.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// Port 0 on loopback: every listener of a test process gets a free port.
const ANY_PORT: &str = "127.0.0.1:0";

/// A whole config file.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// `server:`
    pub server: Server,
    /// `store:`
    pub store: Store,
    /// `failure_mode:` (absent: the server's default, open).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_mode: Option<FailureMode>,
    /// `envoy:`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy: Option<Envoy>,
    /// `authorizers:`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub authorizers: Vec<Authorizer>,
    /// `apis:`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub apis: Vec<Api>,
    /// `usage_plans:`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub usage_plans: Vec<Plan>,
    /// `api_keys:`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<Key>,
    /// `identities:`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<Identity>,
}

impl Config {
    /// Listeners on port 0 and the memory store; nothing else.
    pub fn memory() -> Self {
        Self::with_store(Store {
            kind: StoreKind::Memory,
            ..Store::default()
        })
    }

    /// Listeners on port 0 and the Redis store at `url` with [`STORE_TIMEOUT`].
    pub fn redis(url: impl Into<String>) -> Self {
        Self::with_store(Store {
            kind: StoreKind::Redis,
            url: Some(url.into()),
            timeout: Some(STORE_TIMEOUT),
            ..Store::default()
        })
    }

    fn with_store(store: Store) -> Self {
        Self {
            server: Server::default(),
            store,
            failure_mode: None,
            envoy: None,
            authorizers: Vec::new(),
            apis: Vec::new(),
            usage_plans: Vec::new(),
            api_keys: Vec::new(),
            identities: Vec::new(),
        }
    }

    /// `store.key_prefix`.
    pub fn key_prefix(mut self, prefix: &str) -> Self {
        self.store.key_prefix = Some(prefix.into());
        self
    }

    /// `store.pool_size`.
    pub fn pool_size(mut self, n: usize) -> Self {
        self.store.pool_size = Some(n);
        self
    }

    /// `store.timeout`.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store.timeout = Some(timeout);
        self
    }

    /// `failure_mode`.
    pub fn failure_mode(mut self, mode: FailureMode) -> Self {
        self.failure_mode = Some(mode);
        self
    }

    /// `failure_mode: closed`.
    pub fn closed(self) -> Self {
        self.failure_mode(FailureMode::Closed)
    }

    /// `envoy:`
    pub fn envoy(mut self, envoy: Envoy) -> Self {
        self.envoy = Some(envoy);
        self
    }

    /// Adds an authorizer.
    pub fn authorizer(mut self, a: Authorizer) -> Self {
        self.authorizers.push(a);
        self
    }

    /// Adds an API.
    pub fn api(mut self, api: Api) -> Self {
        self.apis.push(api);
        self
    }

    /// Adds API `petstore` with the one stage `prod` given.
    pub fn petstore(self, prod: Stage) -> Self {
        self.api(Api::new("petstore").stage(prod))
    }

    /// Adds a usage plan.
    pub fn plan(mut self, plan: Plan) -> Self {
        self.usage_plans.push(plan);
        self
    }

    /// Adds an API key.
    pub fn key(mut self, key: Key) -> Self {
        self.api_keys.push(key);
        self
    }

    /// Adds a plan assignment of an identity.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identities.push(identity);
        self
    }

    /// Adds what most suites check against: API `petstore`, stage `prod` with `GET /pets` (API
    /// key required), `plan` (it covers petstore/prod) and key `k1` = `key_value` in it.
    pub fn petstore_with(self, plan: Plan, key_value: &str) -> Self {
        let key = Key::new("k1", key_value, &plan.id);
        self.petstore(Stage::prod().route(Route::get_pets()))
            .plan(plan)
            .key(key)
    }

    /// The config file's text.
    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).expect("a test config serializes")
    }

    /// Only the definitions (`authorizers`, `apis`, `usage_plans`, `api_keys`) as YAML, for a
    /// suite whose `server` or `store` section is what it tests and stays text (TLS, Sentinel).
    pub fn definitions_yaml(&self) -> String {
        #[derive(Serialize)]
        struct Definitions<'a> {
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            authorizers: &'a [Authorizer],
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            apis: &'a [Api],
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            usage_plans: &'a [Plan],
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            api_keys: &'a [Key],
        }
        serde_norway::to_string(&Definitions {
            authorizers: &self.authorizers,
            apis: &self.apis,
            usage_plans: &self.usage_plans,
            api_keys: &self.api_keys,
        })
        .expect("test definitions serialize")
    }
}

/// `server:` — every listener on port 0 unless set.
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    /// The check listener.
    pub grpc_addr: String,
    /// `GET /metrics`.
    pub metrics_addr: String,
    /// The admin listener (absent: the harness's `TOLLGATE_SERVER_ADMIN_ADDR`, port 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_addr: Option<String>,
    /// One admin bearer token per line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_tokens_file: Option<PathBuf>,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            grpc_addr: ANY_PORT.into(),
            metrics_addr: ANY_PORT.into(),
            admin_addr: None,
            admin_tokens_file: None,
        }
    }
}

/// `store.kind`
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// In-process.
    #[default]
    Memory,
    /// One Redis server.
    Redis,
    /// A Redis Cluster.
    RedisCluster,
}

/// `store:`
#[derive(Debug, Clone, Default, Serialize)]
pub struct Store {
    /// Backend.
    pub kind: StoreKind,
    /// Redis URL(s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Per-call deadline.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_duration"
    )]
    pub timeout: Option<Duration>,
    /// Key prefix (gives a test its own keys on a shared Redis).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// Connection pool size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<usize>,
    /// `circuit_breaker:`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
}

/// `store.circuit_breaker:`
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CircuitBreaker {
    /// Consecutive transient failures that open it.
    pub failures: u32,
    /// How long it stays open.
    #[serde(serialize_with = "duration")]
    pub open_for: Duration,
}

/// `envoy:`
#[derive(Debug, Clone, Default, Serialize)]
pub struct Envoy {
    /// The API of requests without a `tollgate-api-id` context extension.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_id: Option<String>,
    /// Their stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Send the principal and context upstream as headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_headers: Option<bool>,
    /// What RLS does with an API key it does not know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_key: Option<UnknownKey>,
}

impl Envoy {
    /// Requests map onto `api_id`/`stage` unless their context extensions say otherwise.
    pub fn new(api_id: &str, stage: &str) -> Self {
        Self {
            api_id: Some(api_id.into()),
            stage: Some(stage.into()),
            ..Self::default()
        }
    }

    /// `identity_headers: true`.
    pub fn identity_headers(mut self) -> Self {
        self.identity_headers = Some(true);
        self
    }

    /// `unknown_key`.
    pub fn unknown_key(mut self, unknown_key: UnknownKey) -> Self {
        self.unknown_key = Some(unknown_key);
        self
    }
}

/// `envoy.unknown_key`
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownKey {
    /// Over the limit.
    Deny,
    /// Not limited.
    Allow,
}

/// `authorizers[].type`
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizerKind {
    /// User-pool JWTs.
    Jwt,
    /// Custom TOKEN authorizer.
    Token,
    /// Custom REQUEST authorizer.
    Request,
}

/// `authorizers[]`
#[derive(Debug, Clone, Serialize)]
pub struct Authorizer {
    /// The name routes refer to.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: AuthorizerKind,
    /// The identity namespace of its principals and claims (absent: its name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_namespace: Option<String>,
    /// `header:Name` (jwt, token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_source: Option<String>,
    /// `header:Name`, `query:name`, ... (request).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub identity_sources: Vec<String>,
    /// JWT issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// JWKS file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// Allowed audiences.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// TOKEN validation regex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_regex: Option<String>,
    /// Custom authorizer endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Custom authorizer call timeout.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_duration"
    )]
    pub timeout: Option<Duration>,
    /// Decision cache TTL.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_duration"
    )]
    pub result_ttl: Option<Duration>,
}

impl Authorizer {
    /// A `token` authorizer reading `Authorization`, calling `endpoint`.
    pub fn token(name: &str, endpoint: &str) -> Self {
        Self {
            identity_source: Some("header:Authorization".into()),
            endpoint: Some(endpoint.into()),
            ..Self::empty(name, AuthorizerKind::Token)
        }
    }

    /// A `request` authorizer reading `sources` (`header:Name`, `query:name`, ...), calling
    /// `endpoint` with `timeout`.
    pub fn request(name: &str, sources: &[&str], endpoint: &str, timeout: Duration) -> Self {
        Self {
            identity_sources: sources.iter().map(|s| s.to_string()).collect(),
            endpoint: Some(endpoint.into()),
            timeout: Some(timeout),
            ..Self::empty(name, AuthorizerKind::Request)
        }
    }

    /// A `jwt` authorizer for the fixture user pool: [`fixtures::ISSUER`], the fixture JWKS file
    /// and audience [`fixtures::CLIENT`].
    pub fn jwt(name: &str) -> Self {
        Self {
            issuer: Some(fixtures::ISSUER.into()),
            jwks_file: Some(fixtures::jwks_path()),
            audiences: vec![fixtures::CLIENT.into()],
            ..Self::empty(name, AuthorizerKind::Jwt)
        }
    }

    fn empty(name: &str, kind: AuthorizerKind) -> Self {
        Self {
            name: name.into(),
            kind,
            identity_namespace: None,
            identity_source: None,
            identity_sources: Vec::new(),
            issuer: None,
            jwks_file: None,
            audiences: Vec::new(),
            validation_regex: None,
            endpoint: None,
            timeout: None,
            result_ttl: None,
        }
    }

    /// The call `timeout` of a custom authorizer.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// `result_ttl`.
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = Some(ttl);
        self
    }

    /// `identity_namespace`.
    pub fn identity_namespace(mut self, namespace: &str) -> Self {
        self.identity_namespace = Some(namespace.into());
        self
    }

    /// `validation_regex`.
    pub fn validation_regex(mut self, regex: &str) -> Self {
        self.validation_regex = Some(regex.into());
        self
    }
}

/// `apis[]`
#[derive(Debug, Clone, Serialize)]
pub struct Api {
    /// API id.
    pub id: String,
    /// Its stages.
    pub stages: Vec<Stage>,
}

impl Api {
    /// An API without stages.
    pub fn new(id: &str) -> Self {
        Self {
            id: id.into(),
            stages: Vec::new(),
        }
    }

    /// Adds a stage.
    pub fn stage(mut self, stage: Stage) -> Self {
        self.stages.push(stage);
        self
    }
}

/// `apis[].stages[]`
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    /// Stage name.
    pub name: String,
    /// Where API keys come from (absent: `HEADER`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_source: Option<ApiKeySource>,
    /// Stage-wide default limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleConfig>,
    /// `api_key`, `principal` or `claim:<name>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_identifier: Option<String>,
    /// The plan of identities without an assignment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_usage_plan: Option<String>,
    /// Routes.
    pub routes: Vec<Route>,
}

impl Stage {
    /// A stage without routes.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            api_key_source: None,
            throttle: None,
            usage_identifier: None,
            default_usage_plan: None,
            routes: Vec::new(),
        }
    }

    /// Stage `prod` without routes.
    pub fn prod() -> Self {
        Self::new("prod")
    }

    /// Adds a route.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// Stage-wide `throttle`.
    pub fn throttle(mut self, rate_limit: f64, burst_limit: u64) -> Self {
        self.throttle = Some(throttle(rate_limit, burst_limit));
        self
    }

    /// `api_key_source`.
    pub fn api_key_source(mut self, source: ApiKeySource) -> Self {
        self.api_key_source = Some(source);
        self
    }

    /// `usage_identifier` (`principal`, `claim:<name>`) and, when given, `default_usage_plan`.
    pub fn usage_identifier(mut self, identifier: &str, default_plan: Option<&str>) -> Self {
        self.usage_identifier = Some(identifier.into());
        self.default_usage_plan = default_plan.map(Into::into);
        self
    }
}

/// `apis[].stages[].api_key_source`
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ApiKeySource {
    /// The `x-api-key` header.
    Header,
    /// The authorizer's `usageIdentifierKey`.
    Authorizer,
}

/// `apis[].stages[].routes[]`
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// HTTP method or `ANY`.
    pub method: String,
    /// Path template.
    pub path: String,
    /// Whether an API key in a plan for the stage is required.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub api_key_required: bool,
    /// Authorizer name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorizer: Option<String>,
    /// OAuth scopes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Route-wide limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleConfig>,
    /// Overrides the stage's `usage_identifier`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_identifier: Option<String>,
}

impl Route {
    /// `method path`, open (no key, no authorizer).
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.into(),
            path: path.into(),
            api_key_required: false,
            authorizer: None,
            scopes: Vec::new(),
            throttle: None,
            usage_identifier: None,
        }
    }

    /// `method path` with `api_key_required: true`.
    pub fn keyed(method: &str, path: &str) -> Self {
        Self {
            api_key_required: true,
            ..Self::new(method, path)
        }
    }

    /// `GET /pets` with `api_key_required: true`: the route most suites check.
    pub fn get_pets() -> Self {
        Self::keyed("GET", "/pets")
    }

    /// Behind authorizer `name`.
    pub fn authorizer(mut self, name: &str) -> Self {
        self.authorizer = Some(name.into());
        self
    }

    /// OAuth `scopes`.
    pub fn scopes(mut self, scopes: &[&str]) -> Self {
        self.scopes = scopes.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Route-wide `throttle`.
    pub fn throttle(mut self, rate_limit: f64, burst_limit: u64) -> Self {
        self.throttle = Some(throttle(rate_limit, burst_limit));
        self
    }

    /// The route's own `usage_identifier`.
    pub fn usage_identifier(mut self, identifier: &str) -> Self {
        self.usage_identifier = Some(identifier.into());
        self
    }
}

/// `usage_plans[].api_stages[]`
#[derive(Debug, Clone, Serialize)]
pub struct PlanStage {
    /// API id.
    pub api_id: String,
    /// Stage name.
    pub stage: String,
}

/// `usage_plans[]`
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Plan id.
    pub id: String,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Per-key token bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleConfig>,
    /// Per-key period quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaConfig>,
    /// Overrides the global failure mode for the plan's keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_mode: Option<FailureMode>,
    /// Hot keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_lease: Option<LocalLeaseConfig>,
    /// Metered costs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metering: Option<MeteringConfig>,
    /// The stages the plan covers.
    pub api_stages: Vec<PlanStage>,
}

impl Plan {
    /// A plan covering petstore/prod, without limits.
    pub fn new(id: &str) -> Self {
        Self {
            id: id.into(),
            name: None,
            throttle: None,
            quota: None,
            failure_mode: None,
            local_lease: None,
            metering: None,
            api_stages: vec![PlanStage {
                api_id: "petstore".into(),
                stage: "prod".into(),
            }],
        }
    }

    /// Display `name`.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The per-key `throttle`.
    pub fn throttle(mut self, rate_limit: f64, burst_limit: u64) -> Self {
        self.throttle = Some(throttle(rate_limit, burst_limit));
        self
    }

    /// A `quota` of `limit` per `period`.
    pub fn quota(mut self, limit: u64, period: Period) -> Self {
        self.quota = Some(QuotaConfig {
            limit,
            period,
            offset: 0,
        });
        self
    }

    /// The plan's own `failure_mode`.
    pub fn failure_mode(mut self, mode: FailureMode) -> Self {
        self.failure_mode = Some(mode);
        self
    }

    /// `local_lease`.
    pub fn local_lease(mut self, units: u64, max_age: Duration) -> Self {
        self.local_lease = Some(LocalLeaseConfig { units, max_age });
        self
    }

    /// `metering`.
    pub fn metering(mut self, metering: MeteringConfig) -> Self {
        self.metering = Some(metering);
        self
    }
}

/// `api_keys[]` — enabled unless [`Key::disabled`].
#[derive(Debug, Clone, Serialize)]
pub struct Key {
    /// Key id.
    pub id: String,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The literal value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The env var holding the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_env: Option<String>,
    /// Enabled (the config's own default is disabled, as AWS).
    pub enabled: bool,
    /// Plan ids.
    pub usage_plans: Vec<String>,
}

impl Key {
    /// An enabled key `id` with the literal `value`, in `plan`.
    pub fn new(id: &str, value: &str, plan: &str) -> Self {
        Self {
            id: id.into(),
            name: None,
            value: Some(value.into()),
            value_env: None,
            enabled: true,
            usage_plans: vec![plan.into()],
        }
    }

    /// An enabled key `id` whose value is in the env var `var`, in `plan`.
    pub fn from_env(id: &str, var: &str, plan: &str) -> Self {
        Self {
            value: None,
            value_env: Some(var.into()),
            ..Self::new(id, "", plan)
        }
    }

    /// Display `name`.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    /// `enabled: false`.
    pub fn disabled(mut self) -> Self {
        self.enabled = false;
        self
    }
}

/// `identities[]`: a plan assignment of a principal or claim value.
#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    /// `principal=<id>` or `claim:<name>=<value>`, optionally `<namespace>/`-prefixed.
    pub identity: String,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Plan ids.
    pub usage_plans: Vec<String>,
}

impl Identity {
    /// `identity` in `plan`.
    pub fn new(identity: &str, plan: &str) -> Self {
        Self {
            identity: identity.into(),
            name: None,
            usage_plans: vec![plan.into()],
        }
    }

    /// Display `name`.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// A token bucket: `rate_limit` per second, `burst_limit` deep.
pub fn throttle(rate_limit: f64, burst_limit: u64) -> ThrottleConfig {
    ThrottleConfig {
        rate_limit,
        burst_limit,
    }
}

/// Durations as the config writes them: whole milliseconds (`2000ms`).
fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", d.as_millis()))
}

fn optional_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => duration(d, s),
        None => s.serialize_none(),
    }
}
