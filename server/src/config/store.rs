//! `store:` — which store, where, its pool, timeouts, TLS and circuit breaker, and the
//! failure mode. Part of the config contract.
use super::*;

/// Default per-call store deadline.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(50);

/// Default Redis connection pool size.
pub const DEFAULT_POOL_SIZE: usize = 32;

/// Default size of the local over-limit cache (owners).
pub const DEFAULT_OVER_LIMIT_CACHE: u64 = 100_000;

/// Default key prefix in the store.
pub const DEFAULT_KEY_PREFIX: &str = "tg";

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
