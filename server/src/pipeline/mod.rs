//! The check pipeline, in AWS API Gateway's order: route → authorizer → API key → throttle
//! buckets → quota. Domain in, domain out: `api/` converts to and from the wire.
//!
//! Owns the [`Checker`] (a check, a report) and splits the rest by job:
//! - `resolve`: route → authorizer → (API key or identity) → plan, and the store operation,
//!   one owner for checks and reports alike.
//! - [`layers`]: the decorators around the rate store (over-limit cache, leases, circuit
//!   breaker, metrics, timeout), composed once per checker.
//! - `tickets`: reservation tickets and the sweeper that releases unreported ones.
//! - [`answer`]: the answer's shape (status, AWS error type, headers, the denial's reason).
//!
//! Imports the catalog, auth, the store traits and the limiter; never `api` (which calls it)
//! or `admin`.
pub mod answer;
pub mod layers;
mod resolve;
mod tickets;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::limiter::quota;
use crate::metrics as m;
use crate::overlimit::OverLimitCache;
use crate::policy::{self, OnStoreFailure};
use crate::reason;
use crate::store::{
    AnyStore, CheckOp, CheckOutcome, EventStore, RateStore, SettleStatus, StoreError, StoreEvent,
    TicketStore, ticket,
};
use crate::tasks::Tasks;
use answer::store_reason;
pub use answer::{Answer, QuotaInfo, ThrottleInfo, answer_from, auth_answer};
use layers::RateStack;
use resolve::{Purpose, Resolved, Unresolved, build_op, reservation_cost, resolve};

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
    /// `method` or `path` charges the stage's catch-all ([`crate::catalog::Stage::any_route`]).
    pub rate_limit_only: bool,
    /// The cost is settled by a report that knows nothing but the `request_id` (Envoy's rate
    /// limit filter after the response, [`Checker::report_ticket`]): an admitted reservation
    /// leaves a ticket under [`ticket::envoy_ticket`], whether or not its plan is `metering`.
    pub settle_by_request_id: bool,
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
    /// The store itself: tickets, and the sweeper's releases (with deadlines of their own).
    store: AnyStore,
    /// Checks and settlements go through this stack around `store` ([`layers`]).
    rate: RateStack,
    timeout: Duration,
    /// The local over-limit cache and the clock it keeps time with (shared with `rate`).
    over_limit: Option<(Arc<OverLimitCache>, Arc<dyn Clock>)>,
    /// Store check calls made (tests and benchmarks read it; `rate` counts them).
    store_calls: Arc<AtomicU64>,
    /// Local leases of `local_lease` plans (shared stores only; shared with `rate`).
    leases: Option<Arc<crate::lease::Leases>>,
    /// The store circuit breaker (shared with `rate`).
    breaker: Option<Arc<crate::breaker::Breaker>>,
    /// Owners' invalidation stamps, shared by the over-limit cache and the leases.
    stamps: Arc<crate::stamps::Stamps>,
    /// Where its background work runs: sweepers, the invalidation follower, ticket removals
    /// and lease give-backs.
    tasks: Tasks,
}

impl Checker {
    /// A checker over a swappable catalog.
    pub fn new(catalog: Arc<ArcSwap<Catalog>>, store: AnyStore, timeout: Duration) -> Self {
        let store_calls = Arc::new(AtomicU64::new(0));
        let rate = Self::stack(&catalog, &store, timeout, &store_calls, None, None, None);
        Self {
            catalog,
            store,
            rate,
            timeout,
            over_limit: None,
            store_calls,
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

    /// The decorators around `store`, outermost first: over-limit cache, leases, breaker,
    /// metrics, timeout (see [`layers`] for why in this order).
    fn stack(
        catalog: &Arc<ArcSwap<Catalog>>,
        store: &AnyStore,
        timeout: Duration,
        calls: &Arc<AtomicU64>,
        breaker: Option<Arc<crate::breaker::Breaker>>,
        leases: Option<Arc<crate::lease::Leases>>,
        over_limit: Option<(Arc<OverLimitCache>, Arc<dyn Clock>)>,
    ) -> RateStack {
        let timed = layers::Timeout::new(store.clone(), timeout);
        let metered = layers::Metered::new(timed, store.kind(), calls.clone());
        let guarded = layers::Breaker::new(metered, breaker);
        let leased = layers::Leases::new(guarded, leases, store.clone());
        let catalog = catalog.clone();
        layers::OverLimit::new(
            leased,
            over_limit,
            Arc::new(move || catalog.load().generation),
        )
    }

    /// Builds the stack again after a layer was turned on.
    fn restack(&mut self) {
        self.rate = Self::stack(
            &self.catalog,
            &self.store,
            self.timeout,
            &self.store_calls,
            self.breaker.clone(),
            self.leases.clone(),
            self.over_limit.clone(),
        );
    }

    /// Turns on the store circuit breaker ([`crate::breaker`]), timed by `clock`; `failures` 0
    /// leaves it off.
    pub fn with_circuit_breaker(
        mut self,
        failures: u32,
        open_for: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        self.breaker = (failures > 0)
            .then(|| Arc::new(crate::breaker::Breaker::new(failures, open_for, clock)));
        self.restack();
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
            Arc::new(crate::lease::Leases::new(
                self.store.clone(),
                self.stamps.clone(),
                clock,
                self.tasks.clone(),
            ))
        });
        self.restack();
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

    /// Turns on the local over-limit cache ([`OverLimitCache`]) for up to `capacity` owners,
    /// timed with `clock` (0 leaves it off).
    pub fn with_over_limit_cache(mut self, capacity: u64, clock: Arc<dyn Clock>) -> Self {
        self.over_limit = (capacity > 0).then(|| {
            let cache = OverLimitCache::with_stamps(capacity, self.stamps.clone());
            (Arc::new(cache), clock)
        });
        self.restack();
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
                    Ok(StoreEvent::Usage(owner)) => me.invalidate_owner(&owner),
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
    /// Forgets what this instance knows of `owner`'s usage — its over-limit denials; its local
    /// leases admit nothing more — as the usage event does when it comes back from the store.
    /// The admin rules call it after changing an owner's usage, so the instance that made the
    /// change is exact at once (the others when the event reaches them).
    pub fn invalidate_owner(&self, owner: &str) {
        match self.over_limit.as_ref().map(|(c, _)| c) {
            Some(c) => c.invalidate_owner(owner),
            None => self.stamps.bump(owner),
        }
    }

    /// The store.
    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    /// The catalog in force now.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// One check through the stack around the store ([`layers`]): answered locally when the
    /// over-limit cache or a lease can, else by the store within its deadline.
    pub async fn store_check(&self, op: &CheckOp) -> Result<CheckOutcome, StoreError> {
        self.rate.check(op).await
    }

    /// Checks one request. Every answer but ALLOW carries its [`reason::Reason`], logged at debug
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
        let resolved = match resolve(&cat, input, Purpose::Check).await {
            Ok(r) => r,
            Err(Unresolved::NotFound(e)) => return Err(CheckError::NotFound(e)),
            Err(Unresolved::NoRoute(r)) => return Ok(Answer::no_route(r)),
            Err(Unresolved::AuthDenied(a)) => return Ok(*a),
            Err(Unresolved::NoPlan {
                reason,
                route,
                authorizer,
                principal,
                ..
            }) => {
                let mut a = Answer::deny(Decision::Forbidden, reason);
                a.resource_path = route.template.as_str().to_string();
                a.authorizer = authorizer.cloned();
                a.denied_principal = principal;
                return Ok(a);
            }
        };
        let Resolved {
            stage,
            route,
            authorizer,
            principal,
            ..
        } = &resolved;
        let (stage, route, authorizer) = (*stage, *route, *authorizer);
        let key_plan = resolved.key_plan();
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
            Some((op, limits)) => match self.store_check(&op).await {
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
            },
        };
        answer.resource_path = route.template.as_str().to_string();
        // For the denial log only: no copy of the name on an ALLOW.
        if answer.reason.is_some() {
            answer.authorizer = authorizer.cloned();
        }
        if let Some(p) = principal {
            answer.principal_id = Some(p.principal_id.clone());
            answer.context = p.context.clone();
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
        let resolved = match resolve(&cat, input, Purpose::Report).await {
            Ok(r) => r,
            Err(Unresolved::NotFound(e)) => return Err(ReportError::NotFound(e)),
            Err(e) => {
                let why = match e {
                    Unresolved::NoPlan { identity: true, .. } => {
                        "no identity with a usage plan: the authorizer names none now"
                    }
                    Unresolved::NoPlan { .. } => {
                        "the API key is unknown or not in a plan for this stage"
                    }
                    // (A report runs the authorizer only to learn the identity: never a gate.)
                    _ => "no route matches: the check admitted nothing",
                };
                return Err(ReportError::NoReservation(why.into()));
            }
        };
        let (stage, route) = (resolved.stage, resolved.route);
        let key_plan = resolved.key_plan();
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
        let outcome = self
            .rate
            .settle(op, actual)
            .await
            .map_err(ReportError::Unavailable)?;
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

#[cfg(test)]
pub(crate) mod tests;
