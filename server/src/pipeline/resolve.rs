//! One owner for resolving a request: route → authorizer → (API key or identity) → plan, and
//! the store operation that charges it. [`resolve`] serves checks and reports alike — their
//! differences are its [`Purpose`] — so a report finds the record its check made.
//!
//! Imports the catalog, auth (to run the route's authorizer), the config's enums and the
//! store's operation types; never the store traits (no store call is made here) or `api`.
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{Answer, CheckError, CheckInput, Decision, auth_answer};
use crate::auth::{AuthDecision, AuthInput, AuthOutcome};
use crate::catalog::{ApiKey, Catalog, Plan, Route, Stage, key_digest};
use crate::config::{ApiKeySource, UsageIdentifier};
use crate::limiter::Limit;
use crate::reason::{self, Reason, ReasonCode};
use crate::store::{BucketOp, CheckOp, LeaseTerms, UsageOp, keys::Keys};

/// What a resolution is for: the two callers differ only in these respects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// A check: the route's authorizer is its gate (a denial is the answer), and a disabled
    /// key is refused.
    Check,
    /// A report (`ReportUsage`): the authorizer runs only when it names who to charge, and its
    /// decision is no gate (a token that expired since settles); a key disabled since its
    /// check still settles what was admitted.
    Report,
}

/// Who a request is charged to: its stage, route, the authorizer's outcome and the API key
/// (or identity) with its plan.
pub(super) struct Resolved<'c> {
    pub(super) stage: &'c Stage,
    pub(super) route: &'c Route,
    /// The route's authorizer, when it runs for this request (not for rate-limit-only ones).
    pub(super) authorizer: Option<&'c String>,
    /// What the authorizer said (a check: only when it allowed).
    pub(super) principal: Option<AuthOutcome>,
    /// The key or identity charged and its plan (`None`: stage-wide limits only).
    pub(super) key_plan: Option<(Arc<ApiKey>, Arc<Plan>)>,
}

impl Resolved<'_> {
    /// The key or identity charged and its plan, borrowed.
    pub(super) fn key_plan(&self) -> Option<(&Arc<ApiKey>, &Arc<Plan>)> {
        self.key_plan.as_ref().map(|(k, p)| (k, p))
    }
}

/// Why a request resolves to no plan.
pub(super) enum Unresolved<'c> {
    /// Unknown api or stage.
    NotFound(String),
    /// No route of the stage matches (the reason of a check's 403).
    NoRoute(Reason),
    /// The authorizer denied a check (its answer, with its reason).
    AuthDenied(Box<Answer>),
    /// The route needs an API key or an identity, and none with a plan for the stage was
    /// found.
    NoPlan {
        /// Why (a check's 403).
        reason: Reason,
        /// An identity from the authorizer was looked for (else an API key).
        identity: bool,
        route: &'c Route,
        authorizer: Option<&'c String>,
        /// The principal the authorizer named, for the denial log.
        principal: Option<String>,
    },
}

/// The one resolution of a request, route → authorizer → (API key or identity) → plan, for
/// [`Checker::check`] and [`Checker::report`] alike, so a report finds the record its check
/// made.
pub(super) async fn resolve<'c>(
    cat: &'c Catalog,
    input: &CheckInput<'_>,
    purpose: Purpose,
) -> Result<Resolved<'c>, Unresolved<'c>> {
    let check = purpose == Purpose::Check;
    let stage = find_stage(cat, input).map_err(|e| Unresolved::NotFound(e.to_string()))?;
    let Some(route) = find_route(stage, input) else {
        let what = if input.resource_path.is_empty() {
            String::new()
        } else {
            format!(" (route template {})", reason::label(input.resource_path))
        };
        return Err(Unresolved::NoRoute(Reason::new(
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
    // Plans meter the authorizer's principal or one of its claims, or an API key.
    let by_identity = route.usage_identifier != UsageIdentifier::ApiKey && !input.rate_limit_only;
    let by_key = !by_identity && (route.api_key_required || input.rate_limit_only);
    let authorizer = route.authorizer.as_ref().filter(|_| !input.rate_limit_only);
    let names_owner = by_identity || (by_key && stage.key_source == ApiKeySource::Authorizer);
    let mut principal: Option<AuthOutcome> = None;
    if let Some(name) = authorizer.filter(|_| check || names_owner) {
        let outcome = cat
            .authorizers
            .authorize(name, &auth_input(input, route))
            .await;
        if check {
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
                return Err(Unresolved::AuthDenied(Box::new(a)));
            }
        }
        principal = outcome;
    }
    let no_plan = |reason: Reason, principal: Option<&AuthOutcome>| Unresolved::NoPlan {
        reason,
        identity: by_identity,
        route,
        authorizer,
        principal: principal.map(|p| p.principal_id.clone()),
    };
    let key_plan = if by_identity {
        match &principal {
            Some(p) => match find_identity_plan(cat, stage, route, p) {
                Ok(kp) => Some(kp),
                Err(r) => return Err(no_plan(r, Some(p))),
            },
            // A report whose authorizer named nobody finds no reservation.
            None if authorizer.is_some() => {
                return Err(no_plan(
                    Reason::new(
                        ReasonCode::IdentityNotInPlan,
                        "the authorizer names no identity".to_string(),
                    ),
                    None,
                ));
            }
            // A route without an authorizer has no identity: stage-wide limits only.
            None => None,
        }
    } else if by_key {
        match find_key_plan(cat, stage, input, principal.as_ref(), check) {
            Ok((k, p)) => Some((k.clone(), p.clone())),
            Err(r) => return Err(no_plan(r, principal.as_ref())),
        }
    } else {
        None
    };
    Ok(Resolved {
        stage,
        route,
        authorizer,
        principal,
        key_plan,
    })
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

/// The API key `input` is charged to and its plan for the stage: the `x-api-key` value, or the
/// authorizer's usage identifier when the stage takes keys from it. `enabled_only`: a disabled
/// key is not found (checks); a report settles what was admitted before the key was disabled.
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

/// The cost a reservation holds under its plan's `metering` bounds: `Some(min)` when a
/// check with a `request_id` asks for less than the plan's `min_reservation` (the caller may
/// not talk its reservation down: the quota must have `min` left to admit it), an error when
/// it asks for more than `max_reservation`, `None` when the cost stands (no request id, no
/// plan, or within the bounds). Checks and reports bound the cost alike, so a report finds
/// the record its check made.
pub(super) fn reservation_cost(
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
pub(super) fn build_op(
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
            lease: key_plan
                .and_then(|(_, p)| p.lease.as_ref())
                .map(|l| LeaseTerms {
                    units: l.units,
                    max_age: l.max_age,
                }),
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
