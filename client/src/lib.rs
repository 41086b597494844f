//! `tollgate-client`: a client for Tollgate's `CheckService` and `AuthorizationService`.
//!
//! * [`Client`] — cheap to clone (an `Arc`), over one tonic `Channel` that balances across one or
//!   many server replicas, with a per-call deadline (default 50 ms), typed results
//!   ([`CheckResult`], [`AuthorizeResult`]), a caller-chosen [`FailurePolicy`], a circuit
//!   [`Breaker`] so that a dead Tollgate costs microseconds rather than the deadline, and an
//!   optional local deny cache.
//! * [`TollgateLayer`] — a tower layer for `http::Request<B>` services (axum, hyper) that checks
//!   each request and answers denials itself.
//!
//! This example runs as a doctest. Nothing listens on port 1, so the call fails fast and the
//! [`FailurePolicy`] decides: fail-open lets the request through and says so in its
//! [`Source`]. Point the builder at your Tollgate replicas (`server.grpc_addr`) instead.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tollgate_client::Error> {
//! use tollgate_client::{Check, Client, FailurePolicy, Source};
//!
//! let client = Client::builder(["http://127.0.0.1:1"])
//!     .failure_policy(FailurePolicy::FailOpen)
//!     .deny_cache(10_000)
//!     .build()?;
//! let result = client
//!     .check(Check {
//!         api_id: "petstore".into(),
//!         stage: "prod".into(),
//!         http_method: "GET".into(),
//!         path: "/pets".into(),
//!         api_key: "k-123".into(),
//!         ..Check::default()
//!     })
//!     .await;
//! if result.is_allowed() {
//!     // forward the request; on a denial answer with result.http_status and result.message
//! }
//! assert!(result.is_allowed());
//! assert!(matches!(result.source, Source::FailOpen(_)));
//! # Ok(())
//! # }
//! ```
//!
//! With several replicas, `Client::builder(["http://10.0.0.1:50051", "http://10.0.0.2:50051"])`
//! balances across them over one channel.
#![deny(missing_docs)]

mod breaker;
mod cache;
mod layer;
mod request;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use layer::{BoxError, ResponseBody, SourceIp, Tollgate, TollgateLayer};
pub use tollgate_proto::v1;
/// The generated gRPC client for `tollgate.v1.AuthorizationService`.
pub use tollgate_proto::v1::authorization_service_client::AuthorizationServiceClient;
/// The generated gRPC client for `tollgate.v1.CheckService`.
pub use tollgate_proto::v1::check_service_client::CheckServiceClient;

use cache::{DenyCache, DenyKey};

/// The default per-call deadline.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(50);

/// Errors building a [`Client`].
#[derive(Debug)]
pub enum Error {
    /// No endpoint was given.
    NoEndpoints,
    /// An endpoint is not a valid URI.
    InvalidEndpoint(String, tonic::transport::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NoEndpoints => write!(f, "no Tollgate endpoint given"),
            Error::InvalidEndpoint(uri, e) => write!(f, "invalid Tollgate endpoint {uri:?}: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::NoEndpoints => None,
            Error::InvalidEndpoint(_, e) => Some(e),
        }
    }
}

/// What to answer when Tollgate cannot be asked (transport failure, deadline, open breaker, or an
/// error status from the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Allow the request; the result says so ([`Source::FailOpen`]).
    FailOpen,
    /// Deny with 503 ([`Decision::Unavailable`], [`Source::FailClosed`]).
    #[default]
    FailClosed,
}

/// Why Tollgate could not be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The call did not finish within the deadline.
    Timeout,
    /// The circuit breaker is open: the call was not made.
    BreakerOpen,
    /// A transport-level failure (connection refused, reset, …): gRPC code and message.
    Transport(tonic::Code, String),
    /// The server answered with an error status (for instance `INVALID_ARGUMENT`).
    Status(tonic::Code, String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => write!(f, "deadline exceeded"),
            Failure::BreakerOpen => write!(f, "circuit breaker open"),
            Failure::Transport(code, msg) => write!(f, "transport failure ({code:?}): {msg}"),
            Failure::Status(code, msg) => write!(f, "server error ({code:?}): {msg}"),
        }
    }
}

/// Where a result came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Source {
    /// Tollgate answered.
    #[default]
    Server,
    /// The local deny cache answered (no RPC).
    DenyCache,
    /// Tollgate could not be asked and the policy is fail-open: allowed.
    FailOpen(Failure),
    /// Tollgate could not be asked and the policy is fail-closed: denied with 503.
    FailClosed(Failure),
    /// Tollgate answered with an error status ([`Failure::Status`], e.g. `INVALID_ARGUMENT`
    /// for a path it refuses): denied whatever the failure policy (400, 403 or 500).
    Refused(Failure),
}

/// The decision, as a Rust enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Over the rate limit (429 "Too Many Requests").
    Throttled,
    /// Over the quota (429 "Limit Exceeded").
    QuotaExceeded,
    /// Missing or unknown API key (403 "Forbidden").
    Forbidden,
    /// The authorizer says unauthenticated (401 "Unauthorized").
    Unauthorized,
    /// The authorizer denied access (403).
    AccessDenied,
    /// The authorizer failed (500).
    AuthorizerError,
    /// Fail-closed: Tollgate could not be asked (503). Never sent by the server.
    Unavailable,
    /// The server sent `DECISION_UNSPECIFIED` or a value this client does not know: denied.
    #[default]
    Unknown,
}

impl Decision {
    fn from_proto(value: i32) -> Self {
        use v1::Decision as P;
        match P::try_from(value) {
            Ok(P::Allow) => Decision::Allow,
            Ok(P::Throttled) => Decision::Throttled,
            Ok(P::QuotaExceeded) => Decision::QuotaExceeded,
            Ok(P::Forbidden) => Decision::Forbidden,
            Ok(P::Unauthorized) => Decision::Unauthorized,
            Ok(P::AccessDenied) => Decision::AccessDenied,
            Ok(P::AuthorizerError) => Decision::AuthorizerError,
            Ok(P::Unspecified) | Err(_) => Decision::Unknown,
        }
    }

    /// The HTTP status and message used when the server did not give one.
    pub fn default_status(self) -> (u16, &'static str) {
        match self {
            Decision::Allow => (200, ""),
            Decision::Throttled => (429, "Too Many Requests"),
            Decision::QuotaExceeded => (429, "Limit Exceeded"),
            Decision::Forbidden | Decision::AccessDenied => (403, "Forbidden"),
            Decision::Unauthorized => (401, "Unauthorized"),
            Decision::AuthorizerError | Decision::Unknown => (500, "Internal server error"),
            Decision::Unavailable => (503, "Service Unavailable"),
        }
    }
}

/// Why Tollgate denied a request, for the operator's logs: never send it to the client as is.
/// The codes are listed in Tollgate's error table (`docs/reference/errors.md`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DenialReason {
    /// A stable snake_case code, e.g. `api_key_disabled`, `claim_missing`, `throttled_plan`.
    pub code: String,
    /// Which check failed, on what (a key id, a claim, a policy statement, a bucket); never a
    /// secret.
    pub detail: String,
}

impl From<v1::DenialReason> for DenialReason {
    fn from(r: v1::DenialReason) -> Self {
        Self {
            code: r.code,
            detail: r.detail,
        }
    }
}

/// Who the caller is, as Tollgate resolved it. The layer puts it in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The API key's id (never the key itself).
    pub api_key_id: String,
    /// The usage plan the key is on.
    pub usage_plan_id: String,
    /// The authorizer's principal.
    pub principal_id: String,
    /// The authorizer's context.
    pub context: HashMap<String, String>,
}

impl From<v1::Identity> for Identity {
    fn from(i: v1::Identity) -> Self {
        Self {
            api_key_id: i.api_key_id,
            usage_plan_id: i.usage_plan_id,
            principal_id: i.principal_id,
            context: i.context,
        }
    }
}

/// A request to check. Fields over the server's size limits are cut or dropped client-side (long
/// strings cut, map entries over the bounds skipped): a request is never refused for its size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    /// The API (`api_id`).
    pub api_id: String,
    /// The stage.
    pub stage: String,
    /// The HTTP method.
    pub http_method: String,
    /// The request path (without query string).
    pub path: String,
    /// The route template, if the caller knows it (else the server matches `path`).
    pub resource_path: String,
    /// The API key (may be empty).
    pub api_key: String,
    /// Request headers (names lowercase). At most 128 are sent.
    pub headers: Vec<(String, String)>,
    /// Query string parameters. At most 128 are sent.
    pub query: Vec<(String, String)>,
    /// The client's IP.
    pub source_ip: String,
    /// The gateway's id for this request (its retries of the check reuse it; a repeat is
    /// answered from the first one's record, `replayed`). Never a client's: a client choosing
    /// it would have its repeats answered without being counted.
    pub request_id: String,
    /// Units this request costs (0 means 1).
    pub cost: u64,
    /// Count nothing; just say what would be answered.
    pub dry_run: bool,
}

/// What [`Client::report_usage`] settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageReport {
    /// Units the check reserved.
    pub reserved: u64,
    /// Units it was settled with (a repeat: the first report's).
    pub actual: u64,
    /// The request id had been settled before: nothing changed.
    pub already_reported: bool,
}

/// A check's answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CheckResult {
    /// The decision.
    pub decision: Decision,
    /// The HTTP status to answer with (the server's, or [`Decision::default_status`]).
    pub http_status: u16,
    /// The message for the `{"message": …}` body.
    pub message: String,
    /// The AWS error type (`x-amzn-ErrorType`), if any.
    pub error_type: String,
    /// Why the server denied the request (`None` on allow and on answers it did not give).
    pub reason: Option<DenialReason>,
    /// When to retry, for throttled/quota answers.
    pub retry_after: Option<Duration>,
    /// Headers to put on the response (RateLimit-*, Retry-After, …), as the server sent them.
    pub response_headers: Vec<(String, String)>,
    /// Who the caller is (allowed requests).
    pub identity: Option<Identity>,
    /// The server answered from a degraded path (store unavailable).
    pub degraded: bool,
    /// Answered from the idempotency record of an earlier check with the same `request_id`
    /// (nothing was counted now). Expected for the caller's own retry of a check; for anything
    /// else, another request is reusing an id ([`TollgateLayer`] answers it 409).
    pub replayed: bool,
    /// Where this answer came from.
    pub source: Source,
}

impl CheckResult {
    /// Whether to let the request through (server allow, or fail-open).
    pub fn is_allowed(&self) -> bool {
        self.decision == Decision::Allow
    }

    fn from_proto(r: v1::CheckRequestResponse) -> Self {
        let decision = Decision::from_proto(r.decision);
        let (status, message) = decision.default_status();
        let mut response_headers: Vec<(String, String)> = r.response_headers.into_iter().collect();
        response_headers.sort();
        Self {
            decision,
            http_status: u16::try_from(r.http_status)
                .ok()
                .filter(|s| (100..=599).contains(s))
                .unwrap_or(status),
            message: if r.message.is_empty() {
                message.to_owned()
            } else {
                r.message
            },
            error_type: r.error_type,
            reason: r.reason.map(DenialReason::from),
            retry_after: r.retry_after.and_then(duration_from_proto),
            response_headers,
            identity: r.identity.map(Identity::from),
            degraded: r.degraded,
            replayed: r.replayed,
            source: Source::Server,
        }
    }

    fn on_failure(policy: FailurePolicy, failure: Failure) -> Self {
        // Tollgate answered with an error status: it is up and refused the request (a path it
        // cannot decide, a field over a limit, an unknown api). The failure policy is for a
        // Tollgate that cannot be asked; a refusal is never waved through by fail-open.
        if let Failure::Status(code, _) = &failure {
            let (status, message) = match code {
                tonic::Code::InvalidArgument
                | tonic::Code::OutOfRange
                | tonic::Code::FailedPrecondition => (400, "Bad Request"),
                tonic::Code::NotFound => (403, "Forbidden"),
                _ => (500, "Internal server error"),
            };
            return Self {
                decision: Decision::Unknown,
                http_status: status,
                message: message.to_owned(),
                source: Source::Refused(failure),
                ..Self::default()
            };
        }
        match policy {
            FailurePolicy::FailOpen => Self {
                decision: Decision::Allow,
                http_status: 200,
                source: Source::FailOpen(failure),
                ..Self::default()
            },
            FailurePolicy::FailClosed => {
                let (status, message) = Decision::Unavailable.default_status();
                Self {
                    decision: Decision::Unavailable,
                    http_status: status,
                    message: message.to_owned(),
                    source: Source::FailClosed(failure),
                    ..Self::default()
                }
            }
        }
    }
}

/// A request to `AuthorizationService.Authorize`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorize {
    /// The authorizer's name.
    pub authorizer: String,
    /// The API.
    pub api_id: String,
    /// The stage.
    pub stage: String,
    /// The HTTP method.
    pub http_method: String,
    /// The request path.
    pub path: String,
    /// Request headers (names lowercase).
    pub headers: Vec<(String, String)>,
    /// Query string parameters.
    pub query: Vec<(String, String)>,
    /// The client's IP.
    pub source_ip: String,
    /// Scopes the route requires.
    pub scopes: Vec<String>,
}

/// An authorization's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthorizeResult {
    /// The decision.
    pub decision: Decision,
    /// The HTTP status to answer with when denied.
    pub http_status: u16,
    /// The message for the `{"message": …}` body.
    pub message: String,
    /// Why the server denied the request (`None` on allow and on answers it did not give).
    pub reason: Option<DenialReason>,
    /// The principal.
    pub principal_id: String,
    /// The authorizer's context.
    pub context: HashMap<String, String>,
    /// The API key the authorizer chose for usage plans, if any.
    pub usage_identifier_key: String,
    /// Where this answer came from.
    pub source: Source,
}

impl AuthorizeResult {
    /// Whether access is allowed (server allow, or fail-open).
    pub fn is_allowed(&self) -> bool {
        self.decision == Decision::Allow
    }

    fn from_proto(r: v1::AuthorizeResponse) -> Self {
        let decision = Decision::from_proto(r.decision);
        let (status, message) = decision.default_status();
        Self {
            decision,
            http_status: u16::try_from(r.http_status)
                .ok()
                .filter(|s| (100..=599).contains(s))
                .unwrap_or(status),
            message: if r.message.is_empty() {
                message.to_owned()
            } else {
                r.message
            },
            reason: r.reason.map(DenialReason::from),
            principal_id: r.principal_id,
            context: r.context,
            usage_identifier_key: r.usage_identifier_key,
            source: Source::Server,
        }
    }

    fn on_failure(policy: FailurePolicy, failure: Failure) -> Self {
        let c = CheckResult::on_failure(policy, failure);
        Self {
            decision: c.decision,
            http_status: c.http_status,
            message: c.message,
            source: c.source,
            ..Self::default()
        }
    }
}

fn duration_from_proto(d: prost_types::Duration) -> Option<Duration> {
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok()?;
    let d = Duration::new(secs, 0).checked_add(Duration::from_nanos(u64::from(nanos)))?;
    (!d.is_zero()).then_some(d)
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    deadline: Duration,
    connect_timeout: Duration,
    policy: FailurePolicy,
    breaker: BreakerConfig,
    deny_cache: usize,
    #[cfg(feature = "tls")]
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl ClientBuilder {
    /// The per-call deadline (default [`DEFAULT_DEADLINE`]).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The TCP connect timeout (default 1 s; calls are bounded by the deadline anyway).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// What to answer when Tollgate cannot be asked (default [`FailurePolicy::FailClosed`]).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Circuit breaker settings (default: open after 5 consecutive failures, probe after 1 s).
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// Enables the local deny cache with at most `capacity` entries (0, the default, disables it).
    pub fn deny_cache(mut self, capacity: usize) -> Self {
        self.deny_cache = capacity;
        self
    }

    /// TLS (and, with an identity, mutual TLS) to every endpoint; use `https://` endpoints.
    /// Needs the `tls` feature.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: tonic::transport::ClientTlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Builds the client. Connections are made lazily (the first call connects), so this does not
    /// fail when Tollgate is down. Must be called inside a tokio runtime.
    pub fn build(self) -> Result<Client, Error> {
        let endpoints = self
            .endpoints
            .iter()
            .map(|uri| {
                let e = Endpoint::from_shared(uri.clone())
                    .map_err(|e| Error::InvalidEndpoint(uri.clone(), e))?
                    .connect_timeout(self.connect_timeout)
                    .tcp_nodelay(true)
                    .timeout(self.deadline);
                #[cfg(feature = "tls")]
                let e = match &self.tls {
                    Some(tls) => e
                        .tls_config(tls.clone())
                        .map_err(|e| Error::InvalidEndpoint(uri.clone(), e))?,
                    None => e,
                };
                Ok(e)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let channel = match endpoints.as_slice() {
            [] => return Err(Error::NoEndpoints),
            [one] => one.connect_lazy(),
            _ => Channel::balance_list(endpoints.into_iter()),
        };
        Ok(Client {
            inner: Arc::new(Inner {
                check: CheckServiceClient::new(channel.clone()),
                auth: AuthorizationServiceClient::new(channel),
                deadline: self.deadline,
                policy: self.policy,
                breaker: Breaker::new(self.breaker),
                deny_cache: (self.deny_cache > 0).then(|| DenyCache::new(self.deny_cache)),
            }),
        })
    }
}

#[derive(Debug)]
struct Inner {
    check: CheckServiceClient<Channel>,
    auth: AuthorizationServiceClient<Channel>,
    deadline: Duration,
    policy: FailurePolicy,
    breaker: Breaker,
    deny_cache: Option<DenyCache>,
}

/// A Tollgate client. Cloning is cheap (an `Arc`); clones share the channel, breaker and cache.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// A builder over one or many endpoints (`http://host:port`); with several, calls are balanced
    /// across them (`Channel::balance_list`).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), tollgate_client::Error> {
    /// let client = tollgate_client::Client::builder(["http://127.0.0.1:50051"])
    ///     .deadline(std::time::Duration::from_millis(20))
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder<I, S>(endpoints: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            deadline: DEFAULT_DEADLINE,
            connect_timeout: Duration::from_secs(1),
            policy: FailurePolicy::default(),
            breaker: BreakerConfig::default(),
            deny_cache: 0,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// The failure policy.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.inner.policy
    }

    /// The circuit breaker's state.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// Checks a request: rate limits, quotas, API key, authorizer. Never fails: when Tollgate cannot
    /// be asked, the failure policy answers (see [`CheckResult::source`]).
    pub async fn check(&self, check: Check) -> CheckResult {
        let cache_key = self.inner.deny_cache.as_ref().map(|cache| {
            let route = if check.resource_path.is_empty() {
                &check.path
            } else {
                &check.resource_path
            };
            let key = DenyKey::new(
                &check.api_id,
                &check.stage,
                &check.http_method,
                route,
                &check.api_key,
            );
            (cache, key)
        });
        if let Some((cache, key)) = &cache_key
            && let Some(hit) = cache.get(key)
        {
            return CheckResult {
                source: Source::DenyCache,
                ..hit
            };
        }
        let request = request::check_request(check);
        let mut rpc = self.inner.check.clone();
        let result = self
            .call(async move { rpc.check_request(request).await })
            .await;
        let result = match result {
            Ok(r) => CheckResult::from_proto(r),
            Err(failure) => return CheckResult::on_failure(self.inner.policy, failure),
        };
        if let Some((cache, key)) = cache_key
            && matches!(
                result.decision,
                Decision::Throttled | Decision::QuotaExceeded
            )
            && let Some(retry_after) = result.retry_after
            && !result.degraded
        {
            let mut cached = result.clone();
            cached
                .response_headers
                .retain(|(name, _)| !name.eq_ignore_ascii_case("retry-after"));
            cache.insert(key, cached, retry_after);
        }
        result
    }

    /// Settles the cost `check` reserved (`ReportUsage`): `check` is the request as it was
    /// checked (with its `request_id` and reserved `cost`), `actual_cost` what it really used
    /// (0 when the upstream failed: a full refund). Once per request id; a repeat answers
    /// [`UsageReport::already_reported`]. Under the breaker and the deadline like checks; an
    /// error is the server's status (`FAILED_PRECONDITION`: no reservation) or the failure.
    pub async fn report_usage(
        &self,
        check: Check,
        actual_cost: u64,
    ) -> Result<UsageReport, Failure> {
        let request = v1::ReportUsageRequest {
            request: Some(request::check_request(check)),
            actual_cost: actual_cost.min(request::MAX_COST),
        };
        let mut rpc = self.inner.check.clone();
        let r = self
            .call(async move { rpc.report_usage(request).await })
            .await?;
        Ok(UsageReport {
            reserved: r.reserved,
            actual: r.actual,
            already_reported: r.already_reported,
        })
    }

    /// Asks an authorizer. Never fails: when Tollgate cannot be asked, the failure policy answers.
    pub async fn authorize(&self, authorize: Authorize) -> AuthorizeResult {
        let request = request::authorize_request(authorize);
        let mut rpc = self.inner.auth.clone();
        match self.call(async move { rpc.authorize(request).await }).await {
            Ok(r) => AuthorizeResult::from_proto(r),
            Err(failure) => AuthorizeResult::on_failure(self.inner.policy, failure),
        }
    }

    /// One RPC under the breaker and the deadline.
    async fn call<T>(
        &self,
        rpc: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Failure> {
        let breaker = &self.inner.breaker;
        if !breaker.allow() {
            return Err(Failure::BreakerOpen);
        }
        let started = Instant::now();
        match tokio::time::timeout(self.inner.deadline, rpc).await {
            Ok(Ok(response)) => {
                breaker.on_success();
                Ok(response.into_inner())
            }
            Ok(Err(status)) => {
                let code = status.code();
                let message = status.message().to_owned();
                if is_transport_failure(code) {
                    breaker.on_failure();
                    if code == tonic::Code::Cancelled && started.elapsed() >= self.inner.deadline {
                        return Err(Failure::Timeout);
                    }
                    Err(Failure::Transport(code, message))
                } else {
                    // The server answered: it is alive.
                    breaker.on_success();
                    Err(Failure::Status(code, message))
                }
            }
            Err(_elapsed) => {
                breaker.on_failure();
                Err(Failure::Timeout)
            }
        }
    }
}

/// Codes that mean "Tollgate is not answering" rather than "Tollgate said no".
fn is_transport_failure(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
    )
}
