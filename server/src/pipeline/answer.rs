//! The answer to a check: decision, HTTP status, AWS error type and message, the throttle and
//! quota state, the IETF `RateLimit` headers, and why a request was denied.
//!
//! Pure shaping: imports the limiter (headers, periods), the catalog's types and the store's
//! outcome type; never the store traits, `auth` beyond its decision type, or `api`.
use std::collections::BTreeMap;
use std::sync::Arc;

use super::{CheckInput, Decision};
use crate::auth::AuthDecision;
use crate::catalog::{ApiKey, Plan, Route, Stage};
use crate::limiter::headers::{self, Policy};
use crate::limiter::{Limit, Period, Verdict, quota};
use crate::reason::{self, Reason, ReasonCode};
use crate::store::{CheckOp, CheckOutcome, keys::Keys};

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
    pub(crate) fn new(decision: Decision) -> Self {
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
    pub(crate) fn deny(decision: Decision, reason: Reason) -> Self {
        let mut a = Self::new(decision);
        a.reason = Some(reason);
        a
    }

    /// 403 Missing Authentication Token (no route).
    pub(crate) fn no_route(reason: Reason) -> Self {
        let mut a = Self::deny(Decision::Forbidden, reason);
        a.error_type = "MissingAuthenticationTokenException";
        a.message = "Missing Authentication Token";
        a.headers = vec![(headers::AMZN_ERROR_TYPE, a.error_type.to_string())];
        a
    }
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

/// Why the store denied `op` (`None` when it allowed it): the bucket that was empty (the
/// plan's method throttle, the plan's throttle, the route's or the stage's throttle), a cost
/// above a bucket's burst, or the quota.
pub(super) fn store_reason(
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
