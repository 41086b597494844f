//! The check pipeline, in AWS API Gateway's order: route → authorizer → API key → throttle
//! buckets → quota. Domain in, domain out: `api/` converts to and from the wire.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use crate::auth::{AuthDecision, AuthInput, AuthOutcome};
use crate::catalog::{ApiKey, Catalog, Plan, Route, Stage, key_digest};
use crate::clock::Clock;
use crate::config::{ApiKeySource, UsageIdentifier};
use crate::limiter::headers::{self, Policy};
use crate::limiter::{Limit, Period, Verdict, quota};
use crate::metrics as m;
use crate::overlimit::OverLimitCache;
use crate::policy::{self, OnStoreFailure};
use crate::reason::{self, Reason, ReasonCode};
use crate::store::{
    AnyStore, BucketOp, CheckOp, CheckOutcome, SettleStatus, Store, StoreError, StoreEvent,
    UsageOp, keys::Keys, ticket,
};
use crate::tasks::Tasks;

/// What the gateway should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let it through.
    Allow,
    /// 429 Too Many Requests.
    Throttled,
    /// 429 Limit Exceeded.
    QuotaExceeded,
    /// 403 Forbidden / Missing Authentication Token.
    Forbidden,
    /// 401 Unauthorized.
    Unauthorized,
    /// 403 authorizer deny.
    AccessDenied,
    /// 500 authorizer failure.
    AuthorizerError,
}

impl Decision {
    /// A bounded label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Throttled => "throttled",
            Decision::QuotaExceeded => "quota_exceeded",
            Decision::Forbidden => "forbidden",
            Decision::Unauthorized => "unauthorized",
            Decision::AccessDenied => "access_denied",
            Decision::AuthorizerError => "authorizer_error",
        }
    }
}

/// One request to check (already validated for size by `api/`).
#[derive(Debug, Clone, Default)]
pub struct CheckInput<'a> {
    /// API id.
    pub api_id: &'a str,
    /// Stage.
    pub stage: &'a str,
    /// Upper-case method.
    pub method: &'a str,
    /// Actual path.
    pub path: &'a str,
    /// Route template, if the gateway matched it ("" otherwise).
    pub resource_path: &'a str,
    /// `x-api-key` value ("" if none).
    pub api_key: &'a str,
    /// Units (≥ 1).
    pub cost: u64,
    /// Idempotency key ("" if none).
    pub request_id: &'a str,
    /// Consume nothing.
    pub dry_run: bool,
    /// Headers (authorizer identity sources).
    pub headers: Option<&'a HashMap<String, String>>,
    /// Header fields in order, one per value, when the gateway sent them.
    pub header_fields: Option<&'a crate::auth::QueryPairs>,
    /// Query parameters.
    pub query: Option<&'a crate::auth::QueryPairs>,
    /// Stage variables.
    pub stage_variables: Option<&'a HashMap<String, String>>,
    /// Request-context values.
    pub context: Option<&'a HashMap<String, String>>,
    /// Client IP.
    pub source_ip: &'a str,
    /// Hex SHA-256 of the body (SigV4).
    pub body_sha256: &'a str,
    /// Envoy's Rate Limit Service: no authorizer (that is ext_authz's job); the key in
    /// `api_key` is charged whatever the route or the stage's key source says; an empty
    /// `method` or `path` charges the stage's catch-all ([`Stage::any_route`]).
    pub rate_limit_only: bool,
    /// The cost is settled by a report that knows nothing but the `request_id` (Envoy's rate
    /// limit filter after the response, [`Checker::report_ticket`]): an admitted reservation
    /// leaves a ticket under [`ticket::envoy_ticket`], whether or not its plan is `metering`.
    pub settle_by_request_id: bool,
}

/// A token bucket's state for the answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleInfo {
    /// The limit.
    pub limit: Limit,
    /// Tokens left.
    pub remaining: u64,
}

/// A quota's state for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaInfo {
    /// Limit in force this period.
    pub limit: u64,
    /// Units left.
    pub remaining: u64,
    /// The period.
    pub period: Period,
    /// When it resets, µs since the epoch.
    pub reset_at_us: u64,
}

/// The answer to a check.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The decision.
    pub decision: Decision,
    /// HTTP status to answer with (200 on allow).
    pub http_status: u16,
    /// AWS error type ("" on allow).
    pub error_type: &'static str,
    /// Message for `{"message": ...}` ("" on allow).
    pub message: &'static str,
    /// When to retry.
    pub retry_after_us: Option<u64>,
    /// The most restrictive bucket.
    pub throttle: Option<ThrottleInfo>,
    /// The quota.
    pub quota: Option<QuotaInfo>,
    /// Response headers.
    pub headers: Vec<(&'static str, String)>,
    /// API key id.
    pub api_key_id: Option<String>,
    /// Usage plan id.
    pub plan_id: Option<String>,
    /// The authorizer's principal.
    pub principal_id: Option<String>,
    /// The authorizer's context.
    pub context: BTreeMap<String, String>,
    /// Answered from an idempotency record.
    pub replayed: bool,
    /// Allowed because the store failed and the failure mode is open.
    pub degraded: bool,
    /// The matched route template.
    pub resource_path: String,
    /// When the store decided, µs since the epoch (0 when no store call was made).
    pub now_us: u64,
    /// Why the request was not allowed: set on every answer but ALLOW, `None` on ALLOW.
    pub reason: Option<Reason>,
    /// The authorizer the route names, when it ran, on a denial (for the denial log; `None` on
    /// ALLOW).
    pub authorizer: Option<String>,
    /// The principal an authorizer named on a request denied before the limits (for the
    /// denial log only: `principal_id`, on the wire, stays unset on those denials).
    pub denied_principal: Option<String>,
}

impl Answer {
    fn new(decision: Decision) -> Self {
        let (http_status, error_type, message) = match decision {
            Decision::Allow => (200, "", ""),
            Decision::Throttled => (429, "TooManyRequestsException", "Too Many Requests"),
            Decision::QuotaExceeded => (429, "LimitExceededException", "Limit Exceeded"),
            Decision::Forbidden => (403, "ForbiddenException", "Forbidden"),
            Decision::Unauthorized => (401, "UnauthorizedException", "Unauthorized"),
            Decision::AccessDenied => (
                403,
                "AccessDeniedException",
                "User is not authorized to access this resource",
            ),
            Decision::AuthorizerError => (
                500,
                "AuthorizerConfigurationException",
                "Internal server error",
            ),
        };
        let mut headers = Vec::new();
        if !error_type.is_empty() {
            headers.push((headers::AMZN_ERROR_TYPE, error_type.to_string()));
        }
        Self {
            decision,
            http_status,
            error_type,
            message,
            retry_after_us: None,
            throttle: None,
            quota: None,
            headers,
            api_key_id: None,
            plan_id: None,
            principal_id: None,
            context: BTreeMap::new(),
            replayed: false,
            degraded: false,
            resource_path: String::new(),
            now_us: 0,
            reason: None,
            authorizer: None,
            denied_principal: None,
        }
    }

    /// A denial with its reason.
    fn deny(decision: Decision, reason: Reason) -> Self {
        let mut a = Self::new(decision);
        a.reason = Some(reason);
        a
    }

    /// 403 Missing Authentication Token (no route).
    fn no_route(reason: Reason) -> Self {
        let mut a = Self::deny(Decision::Forbidden, reason);
        a.error_type = "MissingAuthenticationTokenException";
        a.message = "Missing Authentication Token";
        a.headers = vec![(headers::AMZN_ERROR_TYPE, a.error_type.to_string())];
        a
    }
}

/// Why a check could not be answered with a decision.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CheckError {
    /// Unknown api or stage.
    #[error("{0}")]
    NotFound(String),
    /// The store failed and the failure mode is closed.
    #[error("rate-limit store unavailable and failure_mode is closed: {0}")]
    Unavailable(StoreError),
    /// The request asks for something its plan refuses (a reservation over the plan's
    /// `metering.max_reservation`).
    #[error("{0}")]
    InvalidArgument(String),
}

/// Runs checks against the current catalog and the store.
pub struct Checker {
    catalog: Arc<ArcSwap<Catalog>>,
    store: AnyStore,
    timeout: Duration,
    /// The local over-limit cache and the clock it keeps time with.
    over_limit: Option<(OverLimitCache, Arc<dyn Clock>)>,
    /// Store check calls made (tests and benchmarks read it).
    store_calls: AtomicU64,
    /// Local leases of `local_lease` plans (shared stores only).
    leases: Option<crate::lease::Leases>,
    /// The store circuit breaker.
    breaker: Option<crate::breaker::Breaker>,
    /// Owners' invalidation stamps, shared by the over-limit cache and the leases.
    stamps: Arc<crate::stamps::Stamps>,
    /// Where its background work runs: sweepers, the invalidation follower, ticket removals
    /// and lease give-backs.
    tasks: Tasks,
}

/// The least time the reservation sweeper gives a store call ([`Store::tickets_due`], a
/// release). Not the checks' `store.timeout`: the sweeper runs in the background, and a call
/// cut off after its script ran (Redis still answers it, late) has taken tickets off the store
/// that nobody releases then, so it waits a slow store out instead.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Releases the sweeper runs at once.
const RELEASE_CONCURRENCY: usize = 32;
/// A release that failed is tried again this much later (its ticket goes back to the store).
const RELEASE_RETRY: Duration = Duration::from_secs(5);

impl Checker {
    /// A checker over a swappable catalog.
    pub fn new(catalog: Arc<ArcSwap<Catalog>>, store: AnyStore, timeout: Duration) -> Self {
        Self {
            catalog,
            store,
            timeout,
            over_limit: None,
            store_calls: AtomicU64::new(0),
            leases: None,
            breaker: None,
            stamps: Arc::default(),
            tasks: Tasks::new("checker"),
        }
    }

    /// Runs its background work on `tasks` (by default a set of its own, never shut down: its
    /// tasks end with the checker). Call it before [`with_leases`](Self::with_leases), whose
    /// give-backs run there too.
    pub fn with_tasks(mut self, tasks: Tasks) -> Self {
        self.tasks = tasks;
        self
    }

    /// Gives back what the local leases hold (shutdown, once no check runs any more); returns
    /// the units given back.
    pub async fn flush(&self) -> u64 {
        match &self.leases {
            Some(l) => l.give_back_all(&self.store).await,
            None => 0,
        }
    }

    /// The op a report or a release settles for a check of `key_plan`: the key's own buckets
    /// only, and only when the plan meters them.
    fn metered_op(mut op: CheckOp, key_plan: Option<(&Arc<ApiKey>, &Arc<Plan>)>) -> CheckOp {
        let meter_throttle = key_plan.is_some_and(|(_, p)| p.meter_throttle);
        op.buckets.retain(|b| meter_throttle && b.hash == op.owner);
        op.dry_run = false;
        op
    }

    /// Leaves a ticket for an admitted reservation (`op` as a settlement takes it, decided at
    /// `now_us`): any instance releases it `ttl` later unless a report settles it first.
    /// `false`: another reservation holds a ticket under `id` (nothing written). A ticket that
    /// cannot be written is logged and counted (`true`: that reservation stays charged unless
    /// reported with its whole check).
    async fn put_ticket(&self, id: &str, op: &CheckOp, now_us: u64, ttl: Duration) -> bool {
        let release_at = now_us.saturating_add(ttl.as_micros() as u64);
        let put = self.store.ticket_put(id, op, release_at);
        match tokio::time::timeout(self.timeout, put).await {
            Ok(Ok(written)) => written,
            Ok(Err(e)) => {
                m::usage_report("ticket_failed");
                tracing::warn!(error = %e, "store: a reservation ticket was not written");
                true
            }
            Err(_) => {
                m::usage_report("ticket_failed");
                tracing::warn!("store: writing a reservation ticket timed out");
                true
            }
        }
    }

    /// After an admitted check: a reservation to settle later (a `metering` plan, or an Envoy
    /// `meter` route) leaves its ticket. `true` when another reservation already holds a
    /// ticket under the same Envoy request id: this one was given back at once, and the check
    /// is answered as a repeat (Envoy: 409).
    async fn leave_ticket(
        &self,
        input: &CheckInput<'_>,
        op: &CheckOp,
        out: &CheckOutcome,
        key_plan: Option<(&Arc<ApiKey>, &Arc<Plan>)>,
    ) -> bool {
        let reserved = out.verdict == Verdict::Allowed && !out.replayed && !op.dry_run;
        let Some(rid) = op.request_id.as_deref() else {
            return false;
        };
        if !reserved || !(input.settle_by_request_id || key_plan.is_some_and(|(_, p)| p.metered)) {
            return false;
        }
        // Envoy's report knows the request id as sent; the op's is bound to the route and cost
        // (`idempotency_id`), and request ids are per owner.
        let id = if input.settle_by_request_id {
            ticket::envoy_ticket(input.request_id)
        } else {
            ticket::owner_ticket(&op.owner, rid)
        };
        let metered = Self::metered_op(op.clone(), key_plan);
        let ttl = key_plan.map_or(crate::config::MAX_RESERVATION_TTL, |(_, p)| {
            p.reservation_ttl
        });
        if self.put_ticket(&id, &metered, out.now_us, ttl).await {
            return false;
        }
        if !input.settle_by_request_id {
            // An owner's request id names one record: an older ticket under it belongs to an
            // expired record (the sweep was down). Keep this reservation charged.
            tracing::warn!("store: a reservation ticket was already there under its request id");
            return false;
        }
        let release = self.store.release_reservation(&metered);
        if !matches!(tokio::time::timeout(self.timeout, release).await, Ok(Ok(_))) {
            tracing::warn!("store: a reservation under a duplicate request id was not given back");
        }
        true
    }

    /// Forgets a settled reservation's ticket, in the background (a ticket left behind only
    /// costs its sweeper a release that finds the reservation settled).
    fn drop_ticket(&self, id: String) {
        let store = self.store.clone();
        let timeout = self.timeout;
        self.tasks.spawn("ticket removal", async move {
            let _ = tokio::time::timeout(timeout, store.ticket_remove(&id)).await;
        });
    }

    /// Releases the reservations whose tickets are due at `now_us` (`None`: the store's
    /// clock), from any instance ([`Store::tickets_due`] hands each ticket to one caller);
    /// returns how many were released.
    pub async fn release_due(&self, now_us: Option<u64>) -> usize {
        use futures_util::StreamExt;
        let deadline = self.timeout.saturating_mul(4).max(SWEEP_TIMEOUT);
        let due = match tokio::time::timeout(deadline, self.store.tickets_due(now_us)).await {
            Ok(Ok(due)) => due,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "store: reading due reservation tickets failed");
                return 0;
            }
            Err(_) => {
                tracing::warn!("store: reading due reservation tickets timed out");
                return 0;
            }
        };
        // Several at a time: a backlog must not outlast the records the releases need.
        let results: Vec<_> = futures_util::stream::iter(due)
            .map(|(id, op)| async move {
                let release = self.store.release_reservation(&op);
                let res = tokio::time::timeout(self.timeout.max(SWEEP_TIMEOUT), release).await;
                (id, op, res)
            })
            .buffer_unordered(RELEASE_CONCURRENCY)
            .collect()
            .await;
        let mut released = 0;
        for (id, op, res) in results {
            let failed = match res {
                Ok(Ok(o)) => {
                    if o.status == SettleStatus::Settled {
                        released += 1;
                        m::usage_report("released");
                    }
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_string(),
            };
            // The ticket is off the store: put it back for another try (a release is
            // idempotent, so one that did run late is harmless).
            let now = now_us.unwrap_or_else(|| crate::clock::SystemClock.now_micros());
            let retry_at = now + RELEASE_RETRY.as_micros() as u64;
            let back = self.store.ticket_put(&id, &op, retry_at);
            let back = matches!(tokio::time::timeout(SWEEP_TIMEOUT, back).await, Ok(Ok(_)));
            tracing::warn!(error = %failed, retried = back, "store: releasing a reservation failed");
        }
        released
    }

    /// Releases due reservations every second for as long as the checker lives and its tasks
    /// run. Shutdown lets a sweep in progress finish: the tickets it took off the store are
    /// released by nobody else.
    pub fn spawn_reservation_sweeper(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        self.tasks
            .spawn_graceful("reservation sweeper", |stop| async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let Some(me) = me.upgrade() else { return };
                    me.release_due(None).await;
                }
            });
    }

    /// Turns on the store circuit breaker ([`crate::breaker`]), timed by `clock`; `failures` 0
    /// leaves it off.
    pub fn with_circuit_breaker(
        mut self,
        failures: u32,
        open_for: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        self.breaker =
            (failures > 0).then(|| crate::breaker::Breaker::new(failures, open_for, clock));
        if self.breaker.is_some() {
            metrics::gauge!(m::STORE_CIRCUIT_OPEN).set(0.0);
        }
        self
    }

    /// Whether the store circuit is open (or half-open) now.
    pub fn circuit_open(&self) -> bool {
        self.breaker.as_ref().is_some_and(|b| b.is_open())
    }

    /// Turns on local leases for `local_lease` plans, timed by `clock` — only on a shared store
    /// (Redis), where they save round trips; with the embedded store every check stays exact.
    pub fn with_leases(mut self, clock: Arc<dyn Clock>) -> Self {
        self.leases = self.store.leases_apply().then(|| {
            crate::lease::Leases::new(
                self.store.clone(),
                self.stamps.clone(),
                clock,
                self.tasks.clone(),
            )
        });
        self
    }

    /// Gives back expired leases' units every [`crate::lease::SWEEP_EVERY`] for as long as the
    /// checker lives. Returns at once when leases are off.
    pub fn spawn_lease_sweeper(self: &Arc<Self>) {
        if self.leases.is_none() {
            return;
        }
        let me = Arc::downgrade(self);
        self.tasks.spawn("lease sweeper", async move {
            let mut tick = tokio::time::interval(crate::lease::SWEEP_EVERY);
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                if let Some(l) = &me.leases {
                    l.sweep(&me.store);
                }
            }
        });
    }

    /// Units the local leases hold now (0 when leases are off).
    pub fn leased_units(&self) -> u64 {
        self.leases.as_ref().map_or(0, |l| l.units_held())
    }

    /// [`Checker::store_check`], through the key's local lease when its plan has one.
    pub async fn store_check_leased(
        &self,
        op: &CheckOp,
        lease: Option<&crate::config::LocalLeaseConfig>,
    ) -> Result<CheckOutcome, StoreError> {
        let (Some(cfg), Some(leases)) = (lease, &self.leases) else {
            return self.store_check(op).await;
        };
        if op.request_id.is_some() || op.dry_run {
            return self.store_check(op).await;
        }
        if let Some((cache, clock)) = &self.over_limit
            && let Some(out) = cache.lookup(op, self.catalog.load().generation, clock.now_micros())
        {
            metrics::counter!(m::LOCAL_DENIALS_TOTAL).increment(1);
            return Ok(out);
        }
        use crate::lease::Leased;
        match leases
            .check(op, cfg, &self.store, |batch| async move {
                self.store_call(&batch).await
            })
            .await?
        {
            Leased::Spent(out) => {
                m::lease_check("spent");
                Ok(out)
            }
            Leased::Granted(out) => {
                m::lease_check("granted");
                Ok(out)
            }
            Leased::Exact => {
                m::lease_check("exact");
                self.store_check(op).await
            }
        }
    }

    /// Turns on the local over-limit cache ([`OverLimitCache`]) for up to `capacity` owners,
    /// timed with `clock` (0 leaves it off).
    pub fn with_over_limit_cache(mut self, capacity: u64, clock: Arc<dyn Clock>) -> Self {
        self.over_limit = (capacity > 0).then(|| {
            let cache = OverLimitCache::with_stamps(capacity, self.stamps.clone());
            (cache, clock)
        });
        self
    }

    /// Store check calls made so far.
    pub fn store_calls(&self) -> u64 {
        self.store_calls.load(Ordering::Relaxed)
    }

    /// Follows the store's events: when an owner's usage is set or cleared, bumps its
    /// invalidation stamp (its local leases admit nothing more) and drops its over-limit
    /// entries; everything when the event stream restarts (events may have been missed).
    /// Returns at once when neither the cache nor leases are on; the task ends with the
    /// checker.
    pub fn spawn_invalidation(self: &Arc<Self>) {
        if self.over_limit.is_none() && self.leases.is_none() {
            return;
        }
        let me = Arc::downgrade(self);
        let mut events = self.store.events();
        self.tasks.spawn("checker invalidation", async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let ev = events.recv().await;
                let Some(me) = me.upgrade() else { return };
                let cache = me.over_limit.as_ref().map(|(c, _)| c);
                match ev {
                    Ok(StoreEvent::Usage(owner)) => match cache {
                        Some(c) => c.invalidate_owner(&owner),
                        None => me.stamps.bump(&owner),
                    },
                    // Sent after every (re)subscription; also for every definitions change,
                    // which the catalog generation covers, but clearing is cheap and rare.
                    Ok(StoreEvent::Definitions) | Err(RecvError::Lagged(_)) => match cache {
                        Some(c) => c.invalidate_all(),
                        None => me.stamps.bump_all(),
                    },
                    Ok(StoreEvent::AuthFlush(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }
    /// The store.
    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    /// The catalog in force now.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// One check against the store, unless the local over-limit cache already knows the
    /// answer is a denial.
    pub async fn store_check(&self, op: &CheckOp) -> Result<CheckOutcome, StoreError> {
        let Some((cache, clock)) = &self.over_limit else {
            return self.store_call(op).await;
        };
        let generation = self.catalog.load().generation;
        let sent = clock.now_micros();
        if let Some(out) = cache.lookup(op, generation, sent) {
            metrics::counter!(m::LOCAL_DENIALS_TOTAL).increment(1);
            return Ok(out);
        }
        // Before the call: an UpdateUsage seen while it is in flight voids its answer.
        let stamp = cache.stamp(&op.owner);
        let res = self.store_call(op).await;
        if let Ok(out) = &res {
            cache.record(op, out, generation, sent, stamp);
        }
        res
    }

    /// One store call with the store deadline, recorded in the store metrics.
    async fn store_call(&self, op: &CheckOp) -> Result<CheckOutcome, StoreError> {
        use crate::breaker::Permit;
        let permit = self.breaker.as_ref().map_or(Permit::Call, |b| b.permit());
        if permit == Permit::Reject {
            metrics::counter!(m::STORE_CIRCUIT_REJECTED_TOTAL).increment(1);
            return Err(StoreError::Unreachable(
                "circuit open after repeated store failures (probing again shortly)".into(),
            ));
        }
        self.store_calls.fetch_add(1, Ordering::Relaxed);
        #[allow(clippy::disallowed_methods)] // metrics timing only (a histogram), never a decision
        let started = Instant::now();
        let res = match tokio::time::timeout(self.timeout, self.store.check(op)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout),
        };
        m::store_call(self.store.kind(), started.elapsed(), res.as_ref().err());
        if let Some(b) = &self.breaker
            && let Some(open) = b.record(permit, !res.as_ref().is_err_and(trips_breaker))
        {
            metrics::gauge!(m::STORE_CIRCUIT_OPEN).set(if open { 1.0 } else { 0.0 });
            if open {
                tracing::warn!(
                    "store circuit open: store calls keep failing; answering per the failure mode"
                );
            } else {
                tracing::info!("store circuit closed: the store answers again");
            }
        }
        res
    }

    /// Checks one request. Every answer but ALLOW carries its [`Reason`], logged at debug
    /// level under [`reason::LOG_TARGET`].
    pub async fn check(&self, input: &CheckInput<'_>) -> Result<Answer, CheckError> {
        let answer = self.check_inner(input).await?;
        if let Some(r) = &answer.reason {
            tracing::debug!(
                target: reason::LOG_TARGET,
                code = %r.code.as_str(),
                detail = %r.detail,
                api = %input.api_id,
                stage = %input.stage,
                method = %input.method,
                route = %answer.resource_path,
                status = answer.http_status,
                api_key_id = %answer.api_key_id.as_deref().unwrap_or(""),
                authorizer = %answer.authorizer.as_deref().unwrap_or(""),
                // A label: a principal is whatever an authorizer or a token's `sub` says.
                principal = %reason::label(
                    answer
                        .principal_id
                        .as_deref()
                        .or(answer.denied_principal.as_deref())
                        .unwrap_or("")
                ),
                replayed = answer.replayed,
                "request denied"
            );
        }
        Ok(answer)
    }

    async fn check_inner(&self, input: &CheckInput<'_>) -> Result<Answer, CheckError> {
        let cat = self.catalog.load_full();
        let stage = find_stage(&cat, input)?;
        let Some(route) = find_route(stage, input) else {
            let what = if input.resource_path.is_empty() {
                String::new()
            } else {
                format!(" (route template {})", reason::label(input.resource_path))
            };
            return Ok(Answer::no_route(Reason::new(
                ReasonCode::RouteNotFound,
                format!(
                    "no route of api {:?} stage {:?} matches {} {}{what}",
                    input.api_id,
                    input.stage,
                    reason::label(input.method),
                    reason::label(input.path),
                ),
            )));
        };
        let authorizer = route.authorizer.as_ref().filter(|_| !input.rate_limit_only);
        let mut principal: Option<AuthOutcome> = None;
        if let Some(name) = authorizer {
            let outcome = cat
                .authorizers
                .authorize(name, &auth_input(input, route))
                .await;
            let denied = match &outcome {
                Some(o) if o.decision == AuthDecision::Allow => None,
                Some(o) => {
                    let mut a = auth_answer(o.decision);
                    a.reason = o.reason.clone();
                    a.denied_principal =
                        (!o.principal_id.is_empty()).then(|| o.principal_id.clone());
                    Some(a)
                }
                // Validated config: a route's authorizer exists. Fail closed regardless.
                None => Some(Answer::deny(
                    Decision::AuthorizerError,
                    Reason::new(
                        ReasonCode::AuthorizerFailed,
                        format!("authorizer {name:?} is not configured"),
                    ),
                )),
            };
            if let Some(mut a) = denied {
                a.resource_path = route.template.as_str().to_string();
                a.authorizer = Some(name.clone());
                return Ok(a);
            }
            principal = outcome;
        }
        let mut key_plan: Option<(&Arc<ApiKey>, &Arc<Plan>)> = None;
        let identity_plan;
        if route.usage_identifier != UsageIdentifier::ApiKey && !input.rate_limit_only {
            // Plans meter the authorizer's principal or one of its claims. A route without an
            // authorizer has no identity: stage-wide limits only.
            if let Some(p) = &principal {
                match find_identity_plan(&cat, stage, route, p) {
                    Ok(kp) => {
                        identity_plan = kp;
                        key_plan = Some((&identity_plan.0, &identity_plan.1));
                    }
                    Err(r) => {
                        let mut a = Answer::deny(Decision::Forbidden, r);
                        a.resource_path = route.template.as_str().to_string();
                        a.authorizer = authorizer.cloned();
                        a.denied_principal = Some(p.principal_id.clone());
                        return Ok(a);
                    }
                }
            }
        } else if route.api_key_required || input.rate_limit_only {
            match find_key_plan(&cat, stage, input, principal.as_ref(), true) {
                Ok(kp) => key_plan = Some(kp),
                Err(r) => {
                    let mut a = Answer::deny(Decision::Forbidden, r);
                    a.resource_path = route.template.as_str().to_string();
                    a.authorizer = authorizer.cloned();
                    a.denied_principal = principal.as_ref().map(|p| p.principal_id.clone());
                    return Ok(a);
                }
            }
        }
        let bounded;
        let input = match reservation_cost(input, key_plan)? {
            Some(cost) => {
                bounded = CheckInput {
                    cost,
                    ..input.clone()
                };
                &bounded
            }
            None => input,
        };
        let op = build_op(stage, route, key_plan, input, cat.usage_retention_days);
        let mut answer = match op {
            None => Answer::new(Decision::Allow),
            Some((op, limits)) => {
                let lease = key_plan.and_then(|(_, p)| p.lease.as_ref());
                match self.store_check_leased(&op, lease).await {
                    Ok(out) => {
                        let duplicate = self.leave_ticket(input, &op, &out, key_plan).await;
                        let mut a = answer_from(&out, &limits, op.quota.as_ref().map(|q| q.period));
                        a.reason = store_reason(&out, &op, stage, route, key_plan, input);
                        a.replayed |= duplicate;
                        a
                    }
                    Err(e) => {
                        let limits = !op.buckets.is_empty() || op.quota.is_some();
                        let plan_mode = key_plan.and_then(|(_, p)| p.failure_mode);
                        match policy::on_store_failure(limits, plan_mode, cat.failure_mode) {
                            OnStoreFailure::AllowUncounted => {
                                tracing::debug!(error = %e, "usage not counted: store call failed");
                                Answer::new(Decision::Allow)
                            }
                            OnStoreFailure::AllowDegraded => {
                                tracing::warn!(error = %e, "store call failed; allowed (failure_mode open)");
                                let mut a = Answer::new(Decision::Allow);
                                a.degraded = true;
                                a
                            }
                            OnStoreFailure::Unavailable => {
                                tracing::warn!(error = %e, "store call failed (failure_mode closed)");
                                return Err(CheckError::Unavailable(e));
                            }
                        }
                    }
                }
            }
        };
        answer.resource_path = route.template.as_str().to_string();
        // For the denial log only: no copy of the name on an ALLOW.
        if answer.reason.is_some() {
            answer.authorizer = authorizer.cloned();
        }
        if let Some(p) = principal {
            answer.principal_id = Some(p.principal_id);
            answer.context = p.context;
        }
        if let Some((k, p)) = key_plan {
            answer.api_key_id = Some(k.id.clone());
            answer.plan_id = Some(p.id.clone());
        }
        Ok(answer)
    }

    /// Settles the reservation of an admitted check (`ReportUsage`): `input` is the check as it
    /// was sent (its `cost` was reserved under its `request_id`), `actual` what it really used.
    /// The route, key and plan resolve as for the check, so the same store operation and
    /// idempotency record are found; an authorizer runs only to learn the key when the stage
    /// takes keys from it, and its decision is no gate (a token that expired since settles).
    pub async fn report(
        &self,
        input: &CheckInput<'_>,
        actual: u64,
    ) -> Result<ReportAnswer, ReportError> {
        let cat = self.catalog.load_full();
        let stage = find_stage(&cat, input).map_err(|e| ReportError::NotFound(e.to_string()))?;
        let Some(route) = find_route(stage, input) else {
            return Err(ReportError::NoReservation(
                "no route matches: the check admitted nothing".into(),
            ));
        };
        let mut key_plan = None;
        let identity_plan;
        if route.usage_identifier != UsageIdentifier::ApiKey && !input.rate_limit_only {
            // The authorizer runs only to learn the identity (its decision is no gate, but a
            // rejected token names nobody: such a report finds no reservation).
            if let Some(name) = route.authorizer.as_ref() {
                let principal = cat
                    .authorizers
                    .authorize(name, &auth_input(input, route))
                    .await;
                match principal
                    .as_ref()
                    .and_then(|p| find_identity_plan(&cat, stage, route, p).ok())
                {
                    Some(kp) => {
                        identity_plan = kp;
                        key_plan = Some((&identity_plan.0, &identity_plan.1));
                    }
                    None => {
                        return Err(ReportError::NoReservation(
                            "no identity with a usage plan: the authorizer names none now".into(),
                        ));
                    }
                }
            }
        } else if route.api_key_required || input.rate_limit_only {
            let mut principal = None;
            if stage.key_source == ApiKeySource::Authorizer
                && !input.rate_limit_only
                && let Some(name) = route.authorizer.as_ref()
            {
                principal = cat
                    .authorizers
                    .authorize(name, &auth_input(input, route))
                    .await;
            }
            key_plan = find_key_plan(&cat, stage, input, principal.as_ref(), false).ok();
            if key_plan.is_none() {
                return Err(ReportError::NoReservation(
                    "the API key is unknown or not in a plan for this stage".into(),
                ));
            }
        }
        // The check reserved its cost within the plan's bounds: the same record is found.
        let cost = match reservation_cost(input, key_plan) {
            Ok(c) => c.unwrap_or(input.cost),
            Err(e) => return Err(ReportError::NoReservation(e.to_string())),
        };
        let check = CheckInput {
            dry_run: false,
            cost,
            ..input.clone()
        };
        let Some((op, _)) = build_op(stage, route, key_plan, &check, cat.usage_retention_days)
        else {
            return Err(ReportError::NoReservation(
                "nothing limits or meters this route: the check reserved nothing".into(),
            ));
        };
        let op = Self::metered_op(op, key_plan);
        let ticket = op
            .request_id
            .as_deref()
            .map(|rid| ticket::owner_ticket(&op.owner, rid));
        let api_key_id = key_plan.map(|(k, _)| k.id.clone());
        self.settle_op(&op, actual, ticket, api_key_id).await
    }

    /// Settles the reservation Envoy made on a `settle_by_request_id` route, found by its
    /// request id alone (the rate limit filter's report after the response).
    pub async fn report_ticket(
        &self,
        request_id: &str,
        actual: u64,
    ) -> Result<ReportAnswer, ReportError> {
        let id = ticket::envoy_ticket(request_id);
        let found = match tokio::time::timeout(self.timeout, self.store.ticket_get(&id)).await {
            // A ticket this instance cannot read is no reservation it can settle (the sweep
            // drops it); not a store outage.
            Ok(Err(StoreError::Protocol(e))) => {
                tracing::warn!(error = %e, "an unreadable reservation ticket was reported");
                None
            }
            Ok(r) => r.map_err(ReportError::Unavailable)?,
            Err(_) => return Err(ReportError::Unavailable(StoreError::Timeout)),
        };
        let Some(op) = found else {
            m::usage_report("no_reservation");
            return Err(ReportError::NoReservation(
                "no reservation under this request id: never admitted, already released, or the route has no `meter`"
                    .into(),
            ));
        };
        self.settle_op(&op, actual, Some(id), None).await
    }

    /// Settles `op`'s reservation with `actual` and forgets its ticket.
    async fn settle_op(
        &self,
        op: &CheckOp,
        actual: u64,
        ticket: Option<String>,
        api_key_id: Option<String>,
    ) -> Result<ReportAnswer, ReportError> {
        #[allow(clippy::disallowed_methods)] // metrics timing only (a histogram), never a decision
        let started = Instant::now();
        let res = match tokio::time::timeout(self.timeout, self.store.settle(op, actual)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout),
        };
        m::store_call(self.store.kind(), started.elapsed(), res.as_ref().err());
        let outcome = res.map_err(ReportError::Unavailable)?;
        let result = match outcome.status {
            SettleStatus::Settled => "settled",
            SettleStatus::AlreadySettled => "already",
            SettleStatus::NoReservation => "no_reservation",
        };
        m::usage_report(result);
        if let Some(id) = ticket
            && outcome.status != SettleStatus::NoReservation
        {
            self.drop_ticket(id);
        }
        if outcome.status == SettleStatus::NoReservation {
            return Err(ReportError::NoReservation(
                "no reservation under this request_id: never admitted, expired, or checked with \
                 another route, API key or cost"
                    .into(),
            ));
        }
        let period = op.quota.as_ref().map(|q| q.period);
        let quota = match (outcome.quota, period) {
            (Some(q), Some(period)) => Some(QuotaInfo {
                limit: q.limit,
                remaining: q.limit.saturating_sub(q.used),
                period,
                reset_at_us: quota::period_end(period, q.index).max(0) as u64,
            }),
            _ => None,
        };
        Ok(ReportAnswer {
            reserved: op.cost,
            actual: outcome.actual,
            already_reported: outcome.status == SettleStatus::AlreadySettled,
            quota,
            api_key_id,
        })
    }
}

/// What `ReportUsage` settled.
#[derive(Debug, Clone)]
pub struct ReportAnswer {
    /// Units the check reserved.
    pub reserved: u64,
    /// Units the reservation was settled with (the first report's on a repeat).
    pub actual: u64,
    /// Settled before: nothing changed.
    pub already_reported: bool,
    /// The quota of the period the reservation was charged to, after the settlement.
    pub quota: Option<QuotaInfo>,
    /// The API key charged.
    pub api_key_id: Option<String>,
}

/// Why a report settled nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReportError {
    /// Unknown api or stage.
    #[error("{0}")]
    NotFound(String),
    /// There is no admitted, unexpired reservation to settle.
    #[error("{0}")]
    NoReservation(String),
    /// The store failed.
    #[error("rate-limit store unavailable: {0}")]
    Unavailable(StoreError),
}

/// The stage `input` names.
fn find_stage<'c>(cat: &'c Catalog, input: &CheckInput<'_>) -> Result<&'c Stage, CheckError> {
    cat.stage(input.api_id, input.stage).ok_or_else(|| {
        CheckError::NotFound(if cat.has_api(input.api_id) {
            format!(
                "stage {:?} not found in api {:?}",
                input.stage, input.api_id
            )
        } else {
            format!("api {:?} not found", input.api_id)
        })
    })
}

/// The route `input` is for (`None`: no route matches).
fn find_route<'s>(stage: &'s Stage, input: &CheckInput<'_>) -> Option<&'s Route> {
    if input.rate_limit_only && (input.method.is_empty() || input.path.is_empty()) {
        Some(&stage.any_route)
    } else if input.resource_path.is_empty() {
        stage.match_path(input.method, input.path)
    } else {
        // The gateway's template is taken only where it matches the path: a template that
        // names another route (a public one) must not side-step the path's own.
        stage
            .route_by_template(input.method, input.resource_path)
            .filter(|r| {
                input.path.is_empty()
                    || r.template
                        .matches(crate::catalog::routes::split_path(input.path))
            })
    }
}

/// The API key `input` is charged to and its plan for the stage: the `x-api-key` value, or the
/// authorizer's usage identifier when the stage takes keys from it. `enabled_only`: a disabled
/// key is not found (checks); a report settles what was admitted before the key was disabled.
/// What an authorizer is asked about `input` on `route`.
fn auth_input<'a>(input: &'a CheckInput<'_>, route: &'a Route) -> AuthInput<'a> {
    AuthInput {
        api_id: input.api_id,
        stage: input.stage,
        method: input.method,
        path: input.path,
        resource_path: route.template.as_str(),
        headers: input.headers,
        header_fields: input.header_fields,
        query: input.query,
        stage_variables: input.stage_variables,
        context: input.context,
        source_ip: input.source_ip,
        body_sha256: input.body_sha256,
        scopes: &route.scopes,
    }
}

/// The usage owner and plan of the identity `principal` gives on `route` (its principal, or
/// the claim the route's `usage_identifier` names): [`Catalog::identity_plan`]. The reason
/// (403) when there is no identity or it has no plan.
fn find_identity_plan(
    cat: &Catalog,
    stage: &Stage,
    route: &Route,
    principal: &AuthOutcome,
) -> Result<(Arc<ApiKey>, Arc<Plan>), Reason> {
    let authorizer = route.authorizer.as_deref().unwrap_or("");
    let value = match &route.usage_identifier {
        UsageIdentifier::Claim(name) => principal
            .context
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| {
                Reason::new(
                    ReasonCode::ClaimMissing,
                    format!(
                        "claim {name:?} (the route's usage_identifier) is missing from \
                             authorizer {authorizer:?}'s output"
                    ),
                )
            })?,
        _ => principal.principal_id.as_str(),
    };
    let what = match &route.usage_identifier {
        UsageIdentifier::Claim(name) => format!("claim {name:?}"),
        _ => "the principal".to_string(),
    };
    let no_plan = |detail: String| Reason::new(ReasonCode::IdentityNotInPlan, detail);
    let identity = route.usage_identifier.identity(value).ok_or_else(|| {
        no_plan(format!(
            "{what} is not a usable identity (empty, null, an object or a list, or too long)"
        ))
    })?;
    // Scoped by the authorizer that vouched for it: `alice` from two authorizers is two
    // identities unless the config maps both to one namespace.
    let namespace = route.identity_namespace.as_deref().ok_or_else(|| {
        no_plan(format!(
            "the route's usage_identifier has no identity namespace (authorizer {authorizer:?})"
        ))
    })?;
    let identity = format!("{namespace}/{identity}");
    cat.identity_plan(stage, &identity).ok_or_else(|| {
        // The kind and the derived id, never the value: a claim may be a secret context value
        // or personal data (an e-mail), and the detail reaches logs and Envoy's access log.
        let kind = identity
            .split_once('=')
            .map_or(identity.as_str(), |(k, _)| k);
        let named = format!(
            "{} (id {})",
            reason::label(kind),
            crate::catalog::identity_key_id(&identity)
        );
        no_plan(match cat.identity(&identity) {
            Some(k) if !k.enabled => format!("identity {named} is disabled"),
            _ => format!(
                "identity {named} has no usage plan for api {:?} stage {:?} (and the stage has \
                 no default plan)",
                stage.api_id, stage.name
            ),
        })
    })
}

///
/// The reason (403) names the key by its id, never by its value.
fn find_key_plan<'c>(
    cat: &'c Catalog,
    stage: &Stage,
    input: &CheckInput<'_>,
    principal: Option<&AuthOutcome>,
    enabled_only: bool,
) -> Result<(&'c Arc<ApiKey>, &'c Arc<Plan>), Reason> {
    let from_authorizer = stage.key_source == ApiKeySource::Authorizer && !input.rate_limit_only;
    let value = if from_authorizer {
        principal
            .and_then(|p| p.usage_identifier_key.as_deref())
            .unwrap_or("")
    } else {
        input.api_key
    };
    let source = if from_authorizer {
        "the authorizer's usageIdentifierKey"
    } else {
        "the x-api-key header"
    };
    if value.is_empty() {
        return Err(Reason::new(
            ReasonCode::ApiKeyMissing,
            format!("the route requires an API key and {source} is empty or absent"),
        ));
    }
    let Some(k) = cat.key_by_digest(&key_digest(value)) else {
        return Err(Reason::new(
            ReasonCode::ApiKeyUnknown,
            format!("no API key has the value in {source}"),
        ));
    };
    if !k.enabled && enabled_only {
        return Err(Reason::new(
            ReasonCode::ApiKeyDisabled,
            format!("API key {} is disabled", reason::label(&k.id)),
        ));
    }
    let Some(plan) = k.plan_for(input.api_id, input.stage) else {
        return Err(Reason::new(
            ReasonCode::PlanNotOnStage,
            format!(
                "API key {} is in no usage plan for api {:?} stage {:?}",
                reason::label(&k.id),
                input.api_id,
                input.stage
            ),
        ));
    };
    Ok((k, plan))
}

/// The answer for an authorizer's denial.
pub fn auth_answer(d: AuthDecision) -> Answer {
    match d {
        AuthDecision::Allow => Answer::new(Decision::Allow),
        AuthDecision::Unauthorized => Answer::new(Decision::Unauthorized),
        AuthDecision::ImplicitDeny => Answer::new(Decision::AccessDenied),
        AuthDecision::ExplicitDeny => {
            let mut a = Answer::new(Decision::AccessDenied);
            a.message = "User is not authorized to access this resource with an explicit deny";
            a
        }
        AuthDecision::Forbidden(message, error_type) => {
            let mut a = Answer::new(Decision::AccessDenied);
            a.message = message;
            a.error_type = error_type;
            a.headers = vec![(headers::AMZN_ERROR_TYPE, error_type.to_string())];
            a
        }
        AuthDecision::Error => Answer::new(Decision::AuthorizerError),
    }
}

/// Whether a store error says the store itself is in trouble (and counts toward opening the
/// circuit): timeouts, lost connections, and answers such as Redis's OOM, NOPERM, READONLY,
/// MASTERDOWN, LOADING, BUSY — not an error one request's data could cause.
fn trips_breaker(e: &StoreError) -> bool {
    match e {
        StoreError::Timeout | StoreError::Unreachable(_) => true,
        StoreError::Backend(m) => {
            let m = m.to_ascii_lowercase();
            [
                "oom",
                "noperm",
                "readonly",
                "read only",
                "masterdown",
                "loading",
                "busy",
            ]
            .iter()
            .any(|k| m.contains(k))
        }
        StoreError::Protocol(_) => false,
    }
}

/// The cost a reservation holds under its plan's `metering` bounds: `Some(min)` when a
/// check with a `request_id` asks for less than the plan's `min_reservation` (the caller may
/// not talk its reservation down: the quota must have `min` left to admit it), an error when
/// it asks for more than `max_reservation`, `None` when the cost stands (no request id, no
/// plan, or within the bounds). Checks and reports bound the cost alike, so a report finds
/// the record its check made.
fn reservation_cost(
    input: &CheckInput<'_>,
    key_plan: Option<(&Arc<ApiKey>, &Arc<Plan>)>,
) -> Result<Option<u64>, CheckError> {
    let Some((_, plan)) = key_plan else {
        return Ok(None);
    };
    let (min, max) = plan.reservation_bounds;
    if input.request_id.is_empty() {
        return Ok(None);
    }
    if input.cost > max {
        return Err(CheckError::InvalidArgument(format!(
            "cost {} exceeds the usage plan's max_reservation of {max}",
            input.cost
        )));
    }
    Ok((input.cost < min).then_some(min))
}

/// Builds the store operation; `None` when nothing applies (no bucket, no quota).
fn build_op(
    stage: &Stage,
    route: &Route,
    key_plan: Option<(&Arc<ApiKey>, &Arc<Plan>)>,
    input: &CheckInput<'_>,
    retention_days: u64,
) -> Option<(CheckOp, Vec<Limit>)> {
    let template = route.template.as_str();
    let mut buckets = Vec::with_capacity(2);
    let mut quota = None;
    if let Some((key, plan)) = key_plan {
        if let Some(b) = plan.bucket(input.api_id, input.stage, route, input.method) {
            buckets.push(BucketOp {
                hash: key.hash.clone(),
                field: b.field,
                limit: b.limit,
            });
        }
        quota = plan.quota_op();
    }
    // Stage-wide: the route's own limit replaces the stage default.
    match (route.throttle, stage.throttle) {
        (Some(l), _) => buckets.push(BucketOp {
            hash: stage.hash.clone(),
            field: Keys::route_bucket_field(&route.method, template),
            limit: l,
        }),
        (None, Some(l)) => buckets.push(BucketOp {
            hash: stage.hash.clone(),
            field: Keys::STAGE_BUCKET_FIELD.to_string(),
            limit: l,
        }),
        (None, None) => {}
    }
    // A key in a plan always reaches the store: its daily usage is counted (GetUsage).
    let usage = key_plan.map(|(_, p)| UsageOp {
        field: p.quota_field.clone(),
        history: p.usage_history.clone(),
        retention_days,
    });
    if buckets.is_empty() && quota.is_none() && usage.is_none() {
        return None;
    }
    let owner = key_plan.map_or_else(|| stage.hash.clone(), |(k, _)| k.hash.clone());
    let limits = buckets.iter().map(|b| b.limit).collect();
    Some((
        CheckOp {
            owner,
            buckets,
            quota,
            cost: input.cost,
            now: None,
            request_id: (!input.request_id.is_empty()).then(|| idempotency_id(input, template)),
            dry_run: input.dry_run,
            usage,
        },
        limits,
    ))
}

/// The idempotency record's id: the client's id bound to what the request is (api, stage,
/// method, route, cost), so reusing an id for a different request replays nothing.
fn idempotency_id(input: &CheckInput<'_>, template: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        input.api_id,
        input.stage,
        input.method,
        template,
        input.request_id,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update(input.cost.to_le_bytes());
    hex::encode(h.finalize())
}

/// Why the store denied `op` (`None` when it allowed it): the bucket that was empty (the
/// plan's method throttle, the plan's throttle, the route's or the stage's throttle), a cost
/// above a bucket's burst, or the quota.
fn store_reason(
    out: &CheckOutcome,
    op: &CheckOp,
    stage: &Stage,
    route: &Route,
    key_plan: Option<(&Arc<ApiKey>, &Arc<Plan>)>,
    input: &CheckInput<'_>,
) -> Option<Reason> {
    let replay = if out.replayed {
        " (the stored answer to an earlier request with this request_id)"
    } else {
        ""
    };
    let template = route.template.as_str();
    let reason = match out.verdict {
        Verdict::Allowed => return None,
        Verdict::Throttled { bucket } => {
            let b = op.buckets.get(bucket);
            let (code, what) = match (b, key_plan) {
                (Some(b), _) if b.hash == stage.hash && b.field == Keys::STAGE_BUCKET_FIELD => (
                    ReasonCode::ThrottledStage,
                    format!("the default throttle of stage {:?}", stage.name),
                ),
                (Some(b), _) if b.hash == stage.hash => (
                    ReasonCode::ThrottledRoute,
                    format!("the throttle of route {} {template}", route.method),
                ),
                (_, Some((key, plan))) => {
                    match plan.method_throttle(input.api_id, input.stage, template, input.method) {
                        Some(m) => (
                            ReasonCode::ThrottledMethod,
                            format!(
                                "usage plan {:?}'s method throttle for {} {} (API key {})",
                                plan.id,
                                m.method,
                                m.resource,
                                reason::label(&key.id)
                            ),
                        ),
                        None => (
                            ReasonCode::ThrottledPlan,
                            format!(
                                "usage plan {:?}'s throttle for API key {}",
                                plan.id,
                                reason::label(&key.id)
                            ),
                        ),
                    }
                }
                (_, None) => (ReasonCode::ThrottledStage, "a throttle bucket".to_string()),
            };
            match b.map(|b| b.limit) {
                Some(l) if op.cost > u64::from(l.burst()) => Reason::new(
                    ReasonCode::CostAboveBurst,
                    format!(
                        "the cost {} is above the burst {} of {what}: it can never pass{replay}",
                        op.cost,
                        l.burst()
                    ),
                ),
                Some(l) => Reason::new(
                    code,
                    format!(
                        "{what} is empty (rate {}/s, burst {}, cost {}){replay}",
                        l.rate(),
                        l.burst(),
                        op.cost
                    ),
                ),
                None => Reason::new(code, format!("{what} is empty{replay}")),
            }
        }
        Verdict::QuotaExceeded => {
            let plan = key_plan.map_or("", |(_, p)| p.id.as_str());
            let period = op.quota.as_ref().map_or("", |q| q.period.policy_name());
            let detail = match out.quota {
                Some(q) if op.cost > q.limit => format!(
                    "the cost {} is above usage plan {plan:?}'s {period} quota of {}{replay}",
                    op.cost, q.limit
                ),
                Some(q) => format!(
                    "usage plan {plan:?}'s {period} quota of {} is used up ({} used, cost {}){replay}",
                    q.limit, q.used, op.cost
                ),
                None => format!("usage plan {plan:?}'s {period} quota is used up{replay}"),
            };
            Reason::new(ReasonCode::QuotaExceeded, detail)
        }
    };
    Some(reason)
}

/// Turns a store outcome into the answer with its headers.
pub fn answer_from(out: &CheckOutcome, limits: &[Limit], period: Option<Period>) -> Answer {
    let decision = match out.verdict {
        Verdict::Allowed => Decision::Allow,
        Verdict::Throttled { .. } => Decision::Throttled,
        Verdict::QuotaExceeded => Decision::QuotaExceeded,
    };
    let mut a = Answer::new(decision);
    a.replayed = out.replayed;
    a.now_us = out.now_us;
    a.retry_after_us = out.retry_after_us;
    // The bucket to report: the denying one, else the one with the fewest tokens left.
    let idx = match out.verdict {
        Verdict::Throttled { bucket } => Some(bucket),
        _ => (0..limits.len()).min_by_key(|&i| out.remaining.get(i).copied().unwrap_or(0)),
    };
    let mut policies = Vec::with_capacity(2);
    if let Some(i) = idx.filter(|&i| i < limits.len()) {
        let limit = limits[i];
        let remaining = out.remaining.get(i).copied().unwrap_or(0);
        a.throttle = Some(ThrottleInfo { limit, remaining });
        let missing = u64::from(limit.burst()).saturating_sub(remaining);
        policies.push(Policy {
            name: "burst",
            quota: u64::from(limit.burst()),
            window_s: headers::ceil_secs(limit.fill_time_us()),
            remaining,
            reset_s: headers::ceil_secs(missing * limit.interval_us()),
        });
    }
    if let (Some(q), Some(period)) = (out.quota, period) {
        let start = quota::period_start(period, q.index);
        let end = quota::period_end(period, q.index);
        let remaining = q.limit.saturating_sub(q.used);
        a.quota = Some(QuotaInfo {
            limit: q.limit,
            remaining,
            period,
            reset_at_us: end.max(0) as u64,
        });
        policies.push(Policy {
            name: period.policy_name(),
            quota: q.limit,
            window_s: headers::ceil_secs((end - start).max(0) as u64),
            remaining,
            reset_s: headers::ceil_secs((end - out.now_us as i64).max(0) as u64),
        });
    }
    if let Some((policy, state)) = headers::render(&policies) {
        a.headers.push((headers::RATELIMIT_POLICY, policy));
        a.headers.push((headers::RATELIMIT, state));
    }
    if a.http_status == 429
        && let Some(r) = a.retry_after_us
    {
        a.headers
            .push((headers::RETRY_AFTER, headers::ceil_secs(r).to_string()));
    }
    a
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
pub(crate) mod tests;
