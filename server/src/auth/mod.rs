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
//!
//! Imports `store` (the `CacheStore` trait), `config` and leaves; must not import `catalog`,
//! `pipeline`, `registry`, `api` (they call in).
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

mod build;
mod cache;
mod outcomes;
use build::*;
pub use cache::*;
use outcomes::*;

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
