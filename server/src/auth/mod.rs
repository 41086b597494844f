//! Authorizers: Cognito-style JWT user pools ([`jwt`]), Lambda-style custom TOKEN and REQUEST
//! authorizers called over HTTP ([`custom`]), and IAM-style SigV4 request signing ([`sigv4`]);
//! policies ([`policy`]) and the decision cache.
//!
//! # The decision cache
//! An authorizer's *output* (principal, context, usage key, policy) is cached by TTL under a key
//! made of the authorizer, the api/stage, the identity-source values and — when
//! `cache_key_includes_route` is set — the route. Lookups go local (moka, bounded) → shared
//! (the store, so one identity costs one call across all instances) → the authorizer;
//! concurrent misses for one key on one instance collapse into one call (moka's entry API).
//! Only successful outputs are cached: errors, 401s and malformed outputs never are. The policy
//! is re-evaluated against each request's method ARN on every hit, so an Allow for
//! `GET /pets/*` cached by one request does not open `DELETE /pets/1` to the next.
//! SigV4 is never cached: every request carries a new signature.
//!
//! A JWT authorizer's cache keys also hold the digest of its current JWKS key set, and its
//! background JWKS refresh flushes the authorizer's entries (as `FlushAuthorizerCache` does)
//! when the key set changes: a decision made with a key since removed is not served again.
pub mod custom;
pub mod jwt;
pub mod policy;
pub mod sigv4;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::Regex;
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::config::authorizer::{DEFAULT_RESULT_TTL, MAX_RESULT_TTL};
pub use crate::config::authorizer::{IdentitySource, sources_of};
use crate::config::{AuthorizerConfig, AuthorizerKind, Config};
use crate::metrics as m;
use crate::paths::resolve_path;
use crate::reason::{Reason, ReasonCode};
use crate::store::keys::Keys;
use crate::store::{AnyStore, CacheStore};
use policy::{Policy, PolicyDecision};

/// Set to `1` to let a JWT authorizer trust Tollgate's published test keys on a check listener
/// that is not on loopback (a demo behind a firewall); see [`Authorizers::build`].
pub const ALLOW_TEST_KEYS_ENV: &str = "TOLLGATE_ALLOW_TEST_KEYS";
/// Entries in each instance's local decision cache.
pub const LOCAL_CACHE_ENTRIES: u64 = 100_000;

/// Query-string parameters in request order, decoded; a repeated name has several pairs.
pub type QueryPairs = [(String, String)];

/// The value of `name` in `query`: the last one for a repeated name, as in AWS's
/// `queryStringParameters`.
pub fn query_value<'a>(query: &'a QueryPairs, name: &str) -> Option<&'a str> {
    query
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The non-empty value `source` names in `input`.
fn read_source<'a>(source: &IdentitySource, input: &AuthInput<'a>) -> Option<&'a str> {
    let v = match source {
        IdentitySource::Header(n) => input.headers.and_then(|h| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.as_str())
        }),
        IdentitySource::Query(n) => input.query.and_then(|q| query_value(q, n)),
        IdentitySource::StageVariable(n) => input
            .stage_variables
            .and_then(|q| q.get(n))
            .map(String::as_str),
        IdentitySource::Context(n) => input.context.and_then(|q| q.get(n)).map(String::as_str),
    };
    v.filter(|v| !v.is_empty())
}

/// One request, as an authorizer sees it.
#[derive(Debug, Clone, Default)]
pub struct AuthInput<'a> {
    /// API id.
    pub api_id: &'a str,
    /// Stage.
    pub stage: &'a str,
    /// Upper-case method.
    pub method: &'a str,
    /// Actual path (as received).
    pub path: &'a str,
    /// Route template ("" when unknown).
    pub resource_path: &'a str,
    /// Headers.
    pub headers: Option<&'a HashMap<String, String>>,
    /// Header fields in order, one per value, when the gateway sent them (for
    /// `multiValueHeaders`); `headers` holds them folded.
    pub header_fields: Option<&'a QueryPairs>,
    /// Query parameters (decoded), in request order; a repeated name has several pairs.
    pub query: Option<&'a QueryPairs>,
    /// Stage variables.
    pub stage_variables: Option<&'a HashMap<String, String>>,
    /// Request context values.
    pub context: Option<&'a HashMap<String, String>>,
    /// Client IP.
    pub source_ip: &'a str,
    /// Hex SHA-256 of the body ("" when unknown).
    pub body_sha256: &'a str,
    /// Scopes the route requires (JWT).
    pub scopes: &'a [String],
}

/// What an authorizer decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthDecision {
    /// Allowed.
    Allow,
    /// 401: identity missing or invalid.
    Unauthorized,
    /// 403: a matching Deny.
    ExplicitDeny,
    /// 403: no matching Allow.
    ImplicitDeny,
    /// 403 with an IAM-style message (SigV4 failures): (message, error type).
    Forbidden(&'static str, &'static str),
    /// 500: the authorizer failed or answered garbage.
    Error,
}

/// Which cache answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum CacheLevel {
    /// The authorizer ran (or caching is off).
    #[default]
    None,
    /// This instance's cache.
    Local,
    /// The shared cache in the store.
    Shared,
}

impl CacheLevel {
    fn label(self) -> &'static str {
        match self {
            CacheLevel::None => "miss",
            CacheLevel::Local => "local",
            CacheLevel::Shared => "shared",
        }
    }
}

/// The result of authorizing one request.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthOutcome {
    /// The decision.
    pub decision: AuthDecision,
    /// Principal (empty unless known).
    pub principal_id: String,
    /// Context values (JWT claims for user pools).
    pub context: BTreeMap<String, String>,
    /// `usageIdentifierKey`.
    pub usage_identifier_key: Option<String>,
    /// Cache level.
    pub cache_level: CacheLevel,
    /// When the cached output expires (µs), if cached.
    pub cache_expires_at_us: Option<u64>,
    /// Why the request was not allowed (`None` on allow).
    pub reason: Option<Reason>,
}

impl AuthOutcome {
    fn bare(decision: AuthDecision) -> Self {
        Self {
            decision,
            principal_id: String::new(),
            context: BTreeMap::new(),
            usage_identifier_key: None,
            cache_level: CacheLevel::None,
            cache_expires_at_us: None,
            reason: None,
        }
    }

    fn denied(decision: AuthDecision, reason: Reason) -> Self {
        Self {
            reason: Some(reason),
            ..Self::bare(decision)
        }
    }
}

/// A cacheable authorizer output.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Output {
    principal_id: String,
    context: BTreeMap<String, String>,
    usage_identifier_key: Option<String>,
    policy: Option<Policy>,
    expires_at_us: u64,
    #[serde(skip)]
    level: CacheLevel,
}

/// A non-cacheable result of running an authorizer, with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    Unauthorized(Reason),
    Error(Reason),
}

enum Kind {
    Jwt(Arc<jwt::JwtAuthorizer>),
    Token {
        endpoint: String,
        timeout: Duration,
        regex: Option<Regex>,
    },
    Request {
        endpoint: String,
        timeout: Duration,
    },
    SigV4(sigv4::SigV4Verifier),
}

/// One configured authorizer.
pub struct Authorizer {
    name: String,
    /// SHA-256 of the authorizer's settings and the files they name: part of every cache key,
    /// so a changed issuer, audience, endpoint or key file never serves outputs cached before.
    fingerprint: [u8; 32],
    kind: Kind,
    ttl: Duration,
    sources: Vec<IdentitySource>,
    route_key: bool,
}

/// The shared decision cache (local moka + the store). Created once, kept across reloads.
pub struct AuthCache {
    local: moka::future::Cache<String, Arc<Output>>,
    store: AnyStore,
    keys: Keys,
    /// Deadline of a shared-cache read or write (`store.timeout`).
    timeout: Duration,
}

impl AuthCache {
    /// A cache in front of `store`, with keys under `key_prefix`; shared reads and writes get
    /// `timeout` each (a slow store costs a miss, never an error).
    pub fn new(store: AnyStore, key_prefix: &str, timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            local: moka::future::Cache::builder()
                .max_capacity(LOCAL_CACHE_ENTRIES)
                .time_to_live(MAX_RESULT_TTL)
                .support_invalidation_closures()
                .build(),
            store,
            keys: Keys::new(key_prefix),
            timeout,
        })
    }
}

impl AuthCache {
    /// The prefix of `authorizer`'s cache entries (local and shared).
    pub fn prefix(&self, authorizer: &str) -> String {
        self.keys.auth(authorizer, "")
    }

    /// Drops every decision this instance cached.
    pub fn flush_all_local(&self) {
        self.local.invalidate_all();
    }

    /// Drops `authorizer`'s cached decisions everywhere: this instance's, the shared ones,
    /// and (the store's event) every other instance's — what `FlushAuthorizerCache` does.
    pub async fn flush(&self, authorizer: &str) {
        self.flush_local(authorizer);
        let prefix = self.prefix(authorizer);
        let flush = self.store.auth_flush(&prefix, authorizer);
        match tokio::time::timeout(self.timeout.max(Duration::from_secs(5)), flush).await {
            Ok(Ok(n)) => tracing::debug!(authorizer, entries = n, "authorizer cache flushed"),
            Ok(Err(e)) => {
                tracing::warn!(authorizer, error = %e, "cannot flush the shared authorizer cache")
            }
            Err(_) => tracing::warn!(authorizer, "timed out flushing the shared authorizer cache"),
        }
    }

    /// Drops this instance's cached decisions of `authorizer`.
    pub fn flush_local(&self, authorizer: &str) {
        let prefix = self.prefix(authorizer);
        if let Err(e) = self
            .local
            .invalidate_entries_if(move |k, _| k.starts_with(&prefix))
        {
            tracing::warn!(error = %e, "cannot flush the local authorizer cache");
        }
    }
}

/// Every configured authorizer, by name.
pub struct Authorizers {
    map: HashMap<String, Authorizer>,
    cache: Arc<AuthCache>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    region: String,
    account: String,
}

impl std::fmt::Debug for Authorizers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizers")
            .field("names", &self.map.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Authorizers {
    /// No authorizers (tests, and configs without any).
    pub fn empty(cache: Arc<AuthCache>, clock: Arc<dyn Clock>) -> Self {
        Self {
            map: HashMap::new(),
            cache,
            http: reqwest::Client::new(),
            clock,
            region: String::new(),
            account: String::new(),
        }
    }

    /// Builds every authorizer of `config` (loading JWKS and credential files); all errors.
    ///
    /// A JWT authorizer whose JWKS holds Tollgate's published test keys
    /// ([`jwt::published_test_keys`]) is refused when the check listener is not on loopback,
    /// unless [`ALLOW_TEST_KEYS_ENV`] is `1`; on loopback (the examples) it is logged.
    pub async fn build(
        config: &Config,
        dir: &Path,
        env: &(dyn Fn(&str) -> Option<String> + Sync),
        cache: Arc<AuthCache>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Vec<String>> {
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| vec![format!("http client: {e}")])?;
        let mut map = HashMap::new();
        let mut errors = Vec::new();
        for a in &config.authorizers {
            match build_one(a, dir, env, &config.server.region).await {
                Ok(Kind::Jwt(j))
                    if !j.test_keys().is_empty()
                        && !config.server.grpc_addr.ip().is_loopback()
                        && env(ALLOW_TEST_KEYS_ENV).as_deref() != Some("1") =>
                {
                    errors.push(format!(
                        "authorizers[{}]: its JWKS holds Tollgate's published test keys ({}), \
                         whose private halves are in the repository, and the check listener is \
                         not on loopback ({}): anyone could mint tokens it accepts. Use your \
                         identity provider's JWKS, or set {ALLOW_TEST_KEYS_ENV}=1 for a demo",
                        a.name,
                        j.test_keys().join(", "),
                        config.server.grpc_addr
                    ));
                }
                Ok(kind) => {
                    if let Kind::Jwt(j) = &kind {
                        let bounds =
                            a.jwks_refresh
                                .map_or_else(Default::default, |r| jwt::RefreshBounds {
                                    min: r.min_interval,
                                    max: r.max_interval,
                                });
                        let (cache, name) = (cache.clone(), a.name.clone());
                        j.spawn_refresh(bounds, move || {
                            let (cache, name) = (cache.clone(), name.clone());
                            async move { cache.flush(&name).await }
                        });
                    }
                    let sources = sources_of(a).unwrap_or_default();
                    map.insert(
                        a.name.clone(),
                        Authorizer {
                            name: a.name.clone(),
                            fingerprint: fingerprint(a, dir),
                            kind,
                            ttl: a
                                .result_ttl
                                .unwrap_or(DEFAULT_RESULT_TTL)
                                .min(MAX_RESULT_TTL),
                            sources,
                            route_key: a.cache_key_includes_route,
                        },
                    );
                }
                Err(e) => errors.push(format!("authorizers[{}]: {e}", a.name)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            map,
            cache,
            http,
            clock,
            region: config.server.region.clone(),
            account: config.server.account_id.clone(),
        })
    }

    /// Whether `name` is configured.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Runs authorizer `name` (which must exist: `None` otherwise) for `input`.
    pub async fn authorize(&self, name: &str, input: &AuthInput<'_>) -> Option<AuthOutcome> {
        let a = self.map.get(name)?;
        #[allow(clippy::disallowed_methods)] // metrics timing only (a histogram), never a decision
        let started = Instant::now();
        let out = self.run(a, input).await;
        let decision = match out.decision {
            AuthDecision::Allow => "allow",
            AuthDecision::Unauthorized => "unauthorized",
            AuthDecision::ExplicitDeny
            | AuthDecision::ImplicitDeny
            | AuthDecision::Forbidden(..) => "access_denied",
            AuthDecision::Error => "error",
        };
        metrics::counter!(m::AUTHORIZATIONS_TOTAL, "authorizer" => a.name.clone(), "decision" => decision).increment(1);
        metrics::histogram!(m::AUTHORIZE_DURATION, "authorizer" => a.name.clone())
            .record(started.elapsed().as_secs_f64());
        Some(out)
    }

    async fn run(&self, a: &Authorizer, input: &AuthInput<'_>) -> AuthOutcome {
        let now = self.clock.now_micros();
        let arn = policy::method_arn(
            &self.region,
            &self.account,
            input.api_id,
            input.stage,
            input.method,
            input.path,
        );
        if let Kind::SigV4(v) = &a.kind {
            return sigv4_outcome(v, &a.name, input, &arn, now);
        }
        // Identity sources: all must be present (401 without a call otherwise).
        let mut values = Vec::with_capacity(a.sources.len());
        for s in &a.sources {
            match read_source(s, input) {
                Some(v) => values.push(v),
                None => {
                    return AuthOutcome::denied(
                        AuthDecision::Unauthorized,
                        Reason::new(
                            ReasonCode::IdentitySourceMissing,
                            format!(
                                "authorizer {:?}: the request has no {} (its identity source)",
                                a.name,
                                s.describe()
                            ),
                        ),
                    );
                }
            }
        }
        if let Kind::Token {
            regex: Some(re), ..
        } = &a.kind
            && !values.first().is_some_and(|t| re.is_match(t))
        {
            return AuthOutcome::denied(
                AuthDecision::Unauthorized,
                Reason::new(
                    ReasonCode::TokenRejectedByRegex,
                    format!(
                        "authorizer {:?}: the token does not match its validation_regex",
                        a.name
                    ),
                ),
            );
        }
        let output = if a.ttl.is_zero() {
            self.load(a, input, &values, &arn, now).await
        } else {
            self.cached(a, input, &values, &arn, now).await
        };
        match output {
            Err(Failure::Unauthorized(r)) => AuthOutcome::denied(AuthDecision::Unauthorized, r),
            Err(Failure::Error(r)) => AuthOutcome::denied(AuthDecision::Error, r),
            Ok(o) => {
                let (decision, reason) = match &o.policy {
                    None => (AuthDecision::Allow, None),
                    Some(p) => match p.evaluate_why(&arn) {
                        (PolicyDecision::Allow, _) => (AuthDecision::Allow, None),
                        (PolicyDecision::ExplicitDeny, s) => (
                            AuthDecision::ExplicitDeny,
                            Some(Reason::new(
                                ReasonCode::PolicyDenied,
                                format!(
                                    "authorizer {:?}: {} of its policy denies {} on this resource",
                                    a.name,
                                    s.map_or_else(|| "a statement".to_string(), |s| s.label()),
                                    input.method
                                ),
                            )),
                        ),
                        (PolicyDecision::ImplicitDeny, _) => (
                            AuthDecision::ImplicitDeny,
                            Some(Reason::new(
                                ReasonCode::PolicyNoMatch,
                                format!(
                                    "authorizer {:?}: none of the {} Allow/Deny statements of its \
                                     policy for execute-api:Invoke matches {} on this resource",
                                    a.name,
                                    p.len(),
                                    input.method
                                ),
                            )),
                        ),
                    },
                };
                AuthOutcome {
                    decision,
                    principal_id: o.principal_id.clone(),
                    context: o.context.clone(),
                    usage_identifier_key: o.usage_identifier_key.clone(),
                    cache_level: o.level,
                    cache_expires_at_us: (!a.ttl.is_zero()).then_some(o.expires_at_us),
                    reason,
                }
            }
        }
    }

    /// Local → shared → authorizer; concurrent local misses for one key make one load.
    async fn cached(
        &self,
        a: &Authorizer,
        input: &AuthInput<'_>,
        values: &[&str],
        arn: &str,
        now: u64,
    ) -> Result<Arc<Output>, Failure> {
        let digest = cache_key(a, input, values);
        // Local entries are named like shared ones, so one authorizer's can be flushed.
        let key = self.cache.keys.auth(&a.name, &digest);
        for _ in 0..2 {
            let entry = self
                .cache
                .local
                .entry(key.clone())
                .or_try_insert_with(async {
                    let shared_key = key.clone();
                    let shared = tokio::time::timeout(
                        self.cache.timeout,
                        self.cache.store.auth_get(&shared_key),
                    )
                    .await;
                    if let Ok(Ok(Some(bytes))) = shared
                        && let Ok(mut o) = serde_json::from_slice::<Output>(&bytes)
                        && o.expires_at_us > now
                    {
                        o.level = CacheLevel::Shared;
                        return Ok(Arc::new(o));
                    }
                    let o = self.load(a, input, values, arn, now).await?;
                    // An output naming a usage key carries an API key value: it stays in this
                    // process, never in the store (values are only ever stored as hashes).
                    if o.usage_identifier_key.is_some() {
                        return Ok(o);
                    }
                    if let Ok(bytes) = serde_json::to_vec(&*o) {
                        let ttl_ms = o.expires_at_us.saturating_sub(now) / 1000;
                        if ttl_ms > 0 {
                            let put = self.cache.store.auth_put(&shared_key, &bytes, ttl_ms);
                            if let Ok(Err(e)) | Err(e) =
                                tokio::time::timeout(self.cache.timeout, put)
                                    .await
                                    .map_err(|_| crate::store::StoreError::Timeout)
                            {
                                tracing::debug!(error = %e, "shared authorizer cache write failed");
                            }
                        }
                    }
                    Ok(o)
                })
                .await
                .map_err(|e: Arc<Failure>| (*e).clone())?;
            let fresh = entry.is_fresh();
            let o = entry.into_value();
            if o.expires_at_us <= now {
                self.cache.local.invalidate(&key).await;
                if fresh {
                    // Just loaded but already past its expiry (a JWT in its exp leeway): valid
                    // for this request, not worth keeping.
                    return Ok(o);
                }
                continue;
            }
            let level = if fresh { o.level } else { CacheLevel::Local };
            metrics::counter!(m::AUTHORIZER_CACHE_TOTAL, "authorizer" => a.name.clone(), "level" => level.label()).increment(1);
            if level == o.level {
                return Ok(o);
            }
            let mut copy = (*o).clone();
            copy.level = level;
            return Ok(Arc::new(copy));
        }
        Err(Failure::Error(Reason::new(
            ReasonCode::AuthorizerFailed,
            format!(
                "authorizer {:?}: its cached output expired twice while being read",
                a.name
            ),
        )))
    }

    /// Runs the authorizer itself.
    async fn load(
        &self,
        a: &Authorizer,
        input: &AuthInput<'_>,
        values: &[&str],
        arn: &str,
        now: u64,
    ) -> Result<Arc<Output>, Failure> {
        let ttl_us = a.ttl.as_micros() as u64;
        #[allow(clippy::disallowed_methods)] // metrics timing only (a histogram), never a decision
        let started = Instant::now();
        let result = match &a.kind {
            Kind::Jwt(j) => {
                let token = values.first().copied().unwrap_or("");
                match j.verify(token, input.scopes, now / 1_000_000).await {
                    Ok(id) => Ok(Output {
                        principal_id: id.principal_id,
                        context: id.claims,
                        usage_identifier_key: None,
                        policy: None,
                        expires_at_us: (now + ttl_us)
                            .min(id.expires_at_s.saturating_mul(1_000_000)),
                        level: CacheLevel::None,
                    }),
                    Err(e) => {
                        tracing::debug!(authorizer = %a.name, error = %e, "token rejected");
                        Err(Failure::Unauthorized(jwt_reason(&a.name, j, &e)))
                    }
                }
            }
            Kind::Token {
                endpoint, timeout, ..
            } => {
                let event = custom::token_event(values.first().copied().unwrap_or(""), arn);
                self.callout(a, endpoint, &event, *timeout, now + ttl_us)
                    .await
            }
            Kind::Request { endpoint, timeout } => {
                let event = custom::request_event(&custom::RequestEvent {
                    method_arn: arn,
                    resource: input.resource_path,
                    path: input.path,
                    http_method: input.method,
                    headers: input.headers,
                    header_fields: input.header_fields,
                    query: input.query,
                    stage_variables: input.stage_variables,
                    api_id: input.api_id,
                    stage: input.stage,
                    account_id: &self.account,
                    source_ip: input.source_ip,
                });
                self.callout(a, endpoint, &event, *timeout, now + ttl_us)
                    .await
            }
            // Never cached, handled before.
            Kind::SigV4(_) => Err(Failure::Error(Reason::new(
                ReasonCode::AuthorizerFailed,
                "a SigV4 authorizer has no output to load",
            ))),
        };
        if !matches!(a.kind, Kind::Jwt(_)) {
            metrics::histogram!(m::AUTHORIZER_CALL_DURATION, "authorizer" => a.name.clone())
                .record(started.elapsed().as_secs_f64());
        }
        result.map(Arc::new)
    }

    async fn callout(
        &self,
        a: &Authorizer,
        endpoint: &str,
        event: &serde_json::Value,
        timeout: Duration,
        expires_at_us: u64,
    ) -> Result<Output, Failure> {
        match custom::call(&self.http, endpoint, event, timeout).await {
            Ok(o) => Ok(Output {
                principal_id: o.principal_id,
                context: o.context,
                usage_identifier_key: o.usage_identifier_key,
                policy: Some(o.policy),
                expires_at_us,
                level: CacheLevel::None,
            }),
            Err(custom::CalloutError::Unauthorized) => Err(Failure::Unauthorized(Reason::new(
                ReasonCode::AuthorizerUnauthorized,
                format!("authorizer {:?} answered Unauthorized", a.name),
            ))),
            Err(e) => {
                metrics::counter!(m::AUTHORIZER_ERRORS_TOTAL, "authorizer" => a.name.clone())
                    .increment(1);
                tracing::warn!(authorizer = %a.name, error = %e, "authorizer call failed");
                let (code, what) = match e {
                    custom::CalloutError::Policy(e) => {
                        (ReasonCode::PolicyMalformed, format!("policyDocument: {e}"))
                    }
                    custom::CalloutError::Failed(e) => (ReasonCode::AuthorizerFailed, e),
                    custom::CalloutError::Unauthorized => (
                        ReasonCode::AuthorizerUnauthorized,
                        "answered Unauthorized".to_string(),
                    ),
                };
                Err(Failure::Error(Reason::new(
                    code,
                    format!("authorizer {:?}: {what}", a.name),
                )))
            }
        }
    }
}

/// SHA-256 of an authorizer's settings and the contents of the files it names.
fn fingerprint(a: &AuthorizerConfig, dir: &Path) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(format!("{a:?}").as_bytes());
    for f in [&a.jwks_file, &a.credentials_file].into_iter().flatten() {
        if let Ok(bytes) = std::fs::read(resolve_path(dir, f)) {
            h.update(&bytes);
        }
    }
    h.finalize().into()
}

/// Hex SHA-256 over the cache scope and the identity values (never stored in clear).
fn cache_key(a: &Authorizer, input: &AuthInput<'_>, values: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(a.fingerprint);
    // The keys a JWT was verified with: another key set never finds this decision.
    if let Kind::Jwt(j) = &a.kind {
        h.update(j.key_set_digest());
    }
    for part in [a.name.as_str(), input.api_id, input.stage] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for v in values {
        h.update((v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    // JWT decisions depend on the route's scopes.
    for s in input.scopes {
        h.update([1]);
        h.update(s.as_bytes());
    }
    if a.route_key {
        h.update([2]);
        h.update(input.method.as_bytes());
        h.update([0]);
        h.update(
            if input.resource_path.is_empty() {
                input.path
            } else {
                input.resource_path
            }
            .as_bytes(),
        );
    }
    hex::encode(h.finalize())
}

/// The reason for a refused JWT: what was wrong, never the token or its claims' values.
fn jwt_reason(name: &str, j: &jwt::JwtAuthorizer, e: &jwt::JwtError) -> Reason {
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

fn sigv4_outcome(
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

async fn build_one(
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
