//! `tollgate.v1.AdminService` on the wire: protos in, [`crate::admin`]'s rules, protos out,
//! and [`AdminError`] to `tonic::Status` (one code per kind, the message as is). Scoped bearer
//! tokens ([`AdminAuth`], [`AdminGate`]) are in `admin_auth.rs`.
//!
//! Owns: proto ⇄ domain conversions and the Status mapping. Must not hold admin rules
//! (validation, plan/key invariants, usage arithmetic): those are `crate::admin`'s.
use std::sync::Arc;
use std::time::Duration;

use tollgate_proto::v1 as pb;
use tonic::{Code, Request, Response, Status};

use crate::admin::keys::{KeyUpdate, NewKey};
use crate::admin::usage::UsageQuery;
use crate::admin::{Admin, AdminError, rfc3339};
pub use crate::admin::{
    DEFAULT_PAGE_SIZE, GENERATED_ID_LEN, GENERATED_VALUE_LEN, MAX_ADMIN_MESSAGE_BYTES,
    MAX_CUSTOMER_ID_LEN, MAX_IMPORT_BYTES, MAX_IMPORT_ROWS, MAX_PAGE_SIZE, MAX_PLAN_STAGES,
    MAX_PLANS_PER_KEY, MAX_REQUEST_ID_LEN, MAX_TAG_KEY_LEN, MAX_TAG_VALUE_LEN, MAX_TAGS,
    MAX_USAGE_DAYS, MAX_USAGE_KEY_DAYS,
};
use crate::config::{
    FailureMode, LocalLeaseConfig, MAX_RESERVATION_TTL, MeteringConfig, PlanStageConfig,
    QuotaConfig, ThrottleConfig, ThrottleScope, UsagePlanConfig,
};
use crate::defs::{KeyRecord, PlanRecord};
use crate::limiter::Period;
use crate::pipeline::Checker;
use crate::registry::Registry;

pub use super::admin_auth::{AdminAuth, AdminGate, Caller, Scope};

impl From<AdminError> for Status {
    fn from(e: AdminError) -> Self {
        let code = match &e {
            AdminError::InvalidArgument(_) => Code::InvalidArgument,
            AdminError::NotFound(_) => Code::NotFound,
            AdminError::AlreadyExists(_) => Code::AlreadyExists,
            AdminError::FailedPrecondition(_) => Code::FailedPrecondition,
            AdminError::Aborted(_) => Code::Aborted,
            AdminError::Unavailable(_) => Code::Unavailable,
            AdminError::Internal(_) => Code::Internal,
        };
        Status::new(code, e.message())
    }
}

// ---------------------------------------------------------------- conversions

fn period_to_pb(p: Period) -> pb::QuotaPeriod {
    match p {
        Period::Day => pb::QuotaPeriod::Day,
        Period::Week => pb::QuotaPeriod::Week,
        Period::Month => pb::QuotaPeriod::Month,
    }
}

fn plan_to_pb(r: &PlanRecord) -> pb::UsagePlan {
    let p = &r.plan;
    let th = |t: &ThrottleConfig| pb::Throttle {
        rate_limit: t.rate_limit,
        burst_limit: t.burst_limit,
    };
    pb::UsagePlan {
        id: p.id.clone(),
        name: p.name.clone(),
        description: p.description.clone(),
        throttle: p.throttle.as_ref().map(th),
        quota: p.quota.map(|q| pb::Quota {
            limit: q.limit,
            period: period_to_pb(q.period) as i32,
            offset: q.offset,
        }),
        throttle_scope: match p.throttle_scope {
            ThrottleScope::PerMethod => pb::ThrottleScope::PerMethod,
            ThrottleScope::PerPlan => pb::ThrottleScope::PerPlan,
        } as i32,
        failure_mode: match p.failure_mode {
            None => pb::FailureMode::Unspecified,
            Some(FailureMode::Open) => pb::FailureMode::Open,
            Some(FailureMode::Closed) => pb::FailureMode::Closed,
        } as i32,
        api_stages: p
            .api_stages
            .iter()
            .map(|s| pb::ApiStage {
                api_id: s.api_id.clone(),
                stage: s.stage.clone(),
                method_throttle: s
                    .method_throttle
                    .iter()
                    .map(|(k, t)| (k.clone(), th(t)))
                    .collect(),
            })
            .collect(),
        created_at: rfc3339(r.created_at_us),
        source: r.source.as_str().to_string(),
        local_lease: p.local_lease.map(|l| pb::LocalLease {
            units: l.units,
            max_age_ms: l.max_age.as_millis().min(u128::from(u32::MAX)) as u32,
        }),
        metering: p.metering.map(|m| pb::Metering {
            meter_throttle: m.meter_throttle,
            reservation_ttl_ms: m.reservation_ttl.as_millis().min(u128::from(u32::MAX)) as u32,
            min_reservation: m.min_reservation.unwrap_or(0),
            max_reservation: m.max_reservation.unwrap_or(0),
        }),
    }
}

fn plan_from_pb(p: pb::UsagePlan) -> Result<UsagePlanConfig, Status> {
    if p.api_stages.len() > MAX_PLAN_STAGES {
        return Err(Status::invalid_argument(format!(
            "api_stages: at most {MAX_PLAN_STAGES}"
        )));
    }
    let th = |t: pb::Throttle| ThrottleConfig {
        rate_limit: t.rate_limit,
        burst_limit: t.burst_limit,
    };
    let quota = match p.quota {
        None => None,
        Some(q) => Some(QuotaConfig {
            limit: q.limit,
            offset: q.offset,
            period: match pb::QuotaPeriod::try_from(q.period) {
                Ok(pb::QuotaPeriod::Day) => Period::Day,
                Ok(pb::QuotaPeriod::Week) => Period::Week,
                Ok(pb::QuotaPeriod::Month) => Period::Month,
                _ => {
                    return Err(Status::invalid_argument("quota.period: DAY, WEEK or MONTH"));
                }
            },
        }),
    };
    let throttle_scope = match pb::ThrottleScope::try_from(p.throttle_scope) {
        Ok(pb::ThrottleScope::Unspecified | pb::ThrottleScope::PerMethod) => {
            ThrottleScope::PerMethod
        }
        Ok(pb::ThrottleScope::PerPlan) => ThrottleScope::PerPlan,
        Err(_) => return Err(Status::invalid_argument("throttle_scope: unknown value")),
    };
    let failure_mode = match pb::FailureMode::try_from(p.failure_mode) {
        Ok(pb::FailureMode::Unspecified) => None,
        Ok(pb::FailureMode::Open) => Some(FailureMode::Open),
        Ok(pb::FailureMode::Closed) => Some(FailureMode::Closed),
        Err(_) => return Err(Status::invalid_argument("failure_mode: unknown value")),
    };
    Ok(UsagePlanConfig {
        id: p.id,
        name: p.name,
        description: p.description,
        throttle: p.throttle.map(th),
        quota,
        throttle_scope,
        failure_mode,
        created_at: None,
        api_stages: p
            .api_stages
            .into_iter()
            .map(|s| PlanStageConfig {
                api_id: s.api_id,
                stage: s.stage,
                method_throttle: s
                    .method_throttle
                    .into_iter()
                    .map(|(k, t)| (k, th(t)))
                    .collect(),
            })
            .collect(),
        local_lease: p.local_lease.map(|l| LocalLeaseConfig {
            units: l.units,
            max_age: if l.max_age_ms == 0 {
                LocalLeaseConfig::DEFAULT_MAX_AGE
            } else {
                Duration::from_millis(u64::from(l.max_age_ms))
            },
        }),
        metering: p.metering.map(|m| MeteringConfig {
            meter_throttle: m.meter_throttle,
            reservation_ttl: if m.reservation_ttl_ms == 0 {
                MAX_RESERVATION_TTL
            } else {
                Duration::from_millis(u64::from(m.reservation_ttl_ms))
            },
            min_reservation: (m.min_reservation > 0).then_some(m.min_reservation),
            max_reservation: (m.max_reservation > 0).then_some(m.max_reservation),
        }),
    })
}

fn key_to_pb(k: &KeyRecord, value: Option<String>) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id.clone(),
        value: value.unwrap_or_default(),
        name: k.name.clone(),
        description: k.description.clone(),
        enabled: k.enabled,
        customer_id: k.customer_id.clone(),
        tags: k.tags.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
        usage_plan_ids: k.usage_plans.clone(),
        created_at: rfc3339(k.created_at_us),
        last_updated: rfc3339(k.updated_at_us),
        source: k.source.as_str().to_string(),
        identity: k.identity.clone().unwrap_or_default(),
    }
}

fn plan_key_to_pb(k: &KeyRecord, plan: &str) -> pb::UsagePlanKey {
    pb::UsagePlanKey {
        id: k.id.clone(),
        name: k.name.clone(),
        r#type: "API_KEY".into(),
        usage_plan_id: plan.to_string(),
        enabled: k.enabled,
    }
}

// ---------------------------------------------------------------- the service

/// The admin gRPC service.
pub struct AdminApi {
    admin: Admin,
}

impl AdminApi {
    /// A service editing `registry`'s definitions.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            admin: Admin::new(registry),
        }
    }

    /// Tells `checker` (this instance's) when an admin call changes an owner's usage, so this
    /// instance answers from the new usage at once ([`Admin::with_checker`]).
    pub fn with_checker(mut self, checker: Arc<Checker>) -> Self {
        self.admin = self.admin.with_checker(checker);
        self
    }
}

type R<T> = Result<Response<T>, Status>;

fn plan_required(p: Option<pb::UsagePlan>) -> Result<UsagePlanConfig, Status> {
    plan_from_pb(p.ok_or_else(|| Status::invalid_argument("usage_plan is required"))?)
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminApi {
    async fn create_usage_plan(
        &self,
        req: Request<pb::CreateUsagePlanRequest>,
    ) -> R<pb::UsagePlan> {
        let plan = plan_required(req.into_inner().usage_plan)?;
        let rec = self.admin.create_plan(plan).await?;
        Ok(Response::new(plan_to_pb(&rec)))
    }

    async fn get_usage_plan(&self, req: Request<pb::GetUsagePlanRequest>) -> R<pb::UsagePlan> {
        let rec = self.admin.get_plan(&req.into_inner().id)?;
        Ok(Response::new(plan_to_pb(&rec)))
    }

    async fn list_usage_plans(
        &self,
        req: Request<pb::ListUsagePlansRequest>,
    ) -> R<pb::ListUsagePlansResponse> {
        let r = req.into_inner();
        let (items, next_page_token) = self.admin.list_plans(r.page_size, &r.page_token)?;
        Ok(Response::new(pb::ListUsagePlansResponse {
            items: items.iter().map(plan_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_usage_plan(
        &self,
        req: Request<pb::UpdateUsagePlanRequest>,
    ) -> R<pb::UsagePlan> {
        let plan = plan_required(req.into_inner().usage_plan)?;
        let rec = self.admin.update_plan(plan).await?;
        Ok(Response::new(plan_to_pb(&rec)))
    }

    async fn delete_usage_plan(
        &self,
        req: Request<pb::DeleteUsagePlanRequest>,
    ) -> R<pb::DeleteUsagePlanResponse> {
        self.admin.delete_plan(&req.into_inner().id).await?;
        Ok(Response::new(pb::DeleteUsagePlanResponse {}))
    }

    async fn create_api_key(&self, req: Request<pb::CreateApiKeyRequest>) -> R<pb::ApiKey> {
        let r = req.into_inner();
        let (rec, value) = self
            .admin
            .create_key(NewKey {
                id: r.id,
                value: r.value,
                name: r.name,
                description: r.description,
                enabled: r.enabled,
                customer_id: r.customer_id,
                tags: r.tags,
                usage_plan_ids: r.usage_plan_ids,
                identity: r.identity,
            })
            .await?;
        Ok(Response::new(key_to_pb(&rec, value)))
    }

    async fn get_api_key(&self, req: Request<pb::GetApiKeyRequest>) -> R<pb::ApiKey> {
        let rec = self.admin.get_key(&req.into_inner().id)?;
        Ok(Response::new(key_to_pb(&rec, None)))
    }

    async fn list_api_keys(
        &self,
        req: Request<pb::ListApiKeysRequest>,
    ) -> R<pb::ListApiKeysResponse> {
        let r = req.into_inner();
        let (items, next_page_token) =
            self.admin
                .list_keys(&r.name_prefix, &r.customer_id, r.page_size, &r.page_token)?;
        Ok(Response::new(pb::ListApiKeysResponse {
            items: items.iter().map(|k| key_to_pb(k, None)).collect(),
            next_page_token,
        }))
    }

    async fn update_api_key(&self, req: Request<pb::UpdateApiKeyRequest>) -> R<pb::ApiKey> {
        let r = req.into_inner();
        let rec = self
            .admin
            .update_key(KeyUpdate {
                id: r.id,
                name: r.name,
                enabled: r.enabled,
                description: r.description,
                customer_id: r.customer_id,
            })
            .await?;
        Ok(Response::new(key_to_pb(&rec, None)))
    }

    async fn delete_api_key(
        &self,
        req: Request<pb::DeleteApiKeyRequest>,
    ) -> R<pb::DeleteApiKeyResponse> {
        self.admin.delete_key(&req.into_inner().id).await?;
        Ok(Response::new(pb::DeleteApiKeyResponse {}))
    }

    async fn import_api_keys(
        &self,
        req: Request<pb::ImportApiKeysRequest>,
    ) -> R<pb::ImportApiKeysResponse> {
        let r = req.into_inner();
        let (ids, warnings) = self.admin.import_keys(&r.csv, r.fail_on_warnings).await?;
        Ok(Response::new(pb::ImportApiKeysResponse { ids, warnings }))
    }

    async fn create_usage_plan_key(
        &self,
        req: Request<pb::CreateUsagePlanKeyRequest>,
    ) -> R<pb::UsagePlanKey> {
        let r = req.into_inner();
        let rec = self.admin.add_plan_key(&r.usage_plan_id, &r.key_id).await?;
        Ok(Response::new(plan_key_to_pb(&rec, &r.usage_plan_id)))
    }

    async fn list_usage_plan_keys(
        &self,
        req: Request<pb::ListUsagePlanKeysRequest>,
    ) -> R<pb::ListUsagePlanKeysResponse> {
        let r = req.into_inner();
        let (items, next_page_token) = self.admin.list_plan_keys(
            &r.usage_plan_id,
            &r.name_prefix,
            r.page_size,
            &r.page_token,
        )?;
        Ok(Response::new(pb::ListUsagePlanKeysResponse {
            items: items
                .iter()
                .map(|k| plan_key_to_pb(k, &r.usage_plan_id))
                .collect(),
            next_page_token,
        }))
    }

    async fn delete_usage_plan_key(
        &self,
        req: Request<pb::DeleteUsagePlanKeyRequest>,
    ) -> R<pb::DeleteUsagePlanKeyResponse> {
        let r = req.into_inner();
        self.admin
            .remove_plan_key(&r.usage_plan_id, &r.key_id)
            .await?;
        Ok(Response::new(pb::DeleteUsagePlanKeyResponse {}))
    }

    async fn get_usage(&self, req: Request<pb::GetUsageRequest>) -> R<pb::GetUsageResponse> {
        let r = req.into_inner();
        let q = UsageQuery {
            usage_plan_id: r.usage_plan_id,
            key_id: r.key_id,
            start_date: r.start_date,
            end_date: r.end_date,
            page_size: r.page_size,
            page_token: r.page_token,
        };
        let report = self.admin.get_usage(&q).await?;
        let items = report
            .items
            .into_iter()
            .map(|(id, days)| {
                let days = days
                    .into_iter()
                    .map(|d| pb::DailyUsage {
                        date: d.date,
                        used: d.used,
                        remaining: d.remaining,
                    })
                    .collect();
                (id, pb::KeyUsage { days })
            })
            .collect();
        Ok(Response::new(pb::GetUsageResponse {
            usage_plan_id: q.usage_plan_id,
            start_date: q.start_date,
            end_date: q.end_date,
            items,
            next_page_token: report.next_page_token,
        }))
    }

    async fn update_usage(
        &self,
        req: Request<pb::UpdateUsageRequest>,
    ) -> R<pb::UpdateUsageResponse> {
        let r = req.into_inner();
        let q = self
            .admin
            .update_usage(&r.usage_plan_id, &r.key_id, r.remaining)
            .await?;
        Ok(Response::new(pb::UpdateUsageResponse {
            usage_plan_id: r.usage_plan_id,
            key_id: r.key_id,
            limit: q.limit,
            used: q.used,
            remaining: q.limit.saturating_sub(q.used),
            reset_at: rfc3339(q.reset_at_us),
        }))
    }

    async fn get_throttle_state(
        &self,
        req: Request<pb::GetThrottleStateRequest>,
    ) -> R<pb::GetThrottleStateResponse> {
        let st = self.admin.throttle_state(&req.into_inner().key_id).await?;
        Ok(Response::new(pb::GetThrottleStateResponse {
            key_id: st.key_id,
            buckets: st
                .buckets
                .into_iter()
                .map(|b| pb::BucketState {
                    usage_plan_id: b.usage_plan_id,
                    api_id: b.api_id,
                    stage: b.stage,
                    route: b.route,
                    rate_limit: b.limit.rate(),
                    burst_limit: b.limit.burst().into(),
                    remaining: b.remaining,
                    full_at: rfc3339(b.full_at_us),
                })
                .collect(),
            quotas: st
                .quotas
                .into_iter()
                .map(|(usage_plan_id, q)| pb::QuotaState {
                    usage_plan_id,
                    limit: q.limit,
                    used: q.used,
                    remaining: q.limit.saturating_sub(q.used),
                    period: period_to_pb(q.period) as i32,
                    reset_at: rfc3339(q.reset_at_us),
                })
                .collect(),
            now: rfc3339(st.now_us),
        }))
    }

    async fn get_caller_info(
        &self,
        req: Request<pb::GetCallerInfoRequest>,
    ) -> R<pb::GetCallerInfoResponse> {
        let caller = req
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no authenticated admin caller"))?;
        Ok(Response::new(pb::GetCallerInfoResponse {
            scope: caller.scope.to_pb() as i32,
            allowed_rpcs: super::admin_auth::allowed_rpcs(caller.scope)
                .into_iter()
                .map(String::from)
                .collect(),
            token_fingerprint: caller.fingerprint,
        }))
    }

    async fn flush_authorizer_cache(
        &self,
        req: Request<pb::FlushAuthorizerCacheRequest>,
    ) -> R<pb::FlushAuthorizerCacheResponse> {
        let r = req.into_inner();
        let (authorizers, removed) = self
            .admin
            .flush_authorizer_cache(&r.api_id, &r.stage)
            .await?;
        Ok(Response::new(pb::FlushAuthorizerCacheResponse {
            authorizers,
            removed,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_admin_error_keeps_its_code_and_message() {
        let table = [
            (AdminError::invalid_argument("a"), Code::InvalidArgument),
            (AdminError::not_found("b"), Code::NotFound),
            (AdminError::already_exists("c"), Code::AlreadyExists),
            (
                AdminError::failed_precondition("d"),
                Code::FailedPrecondition,
            ),
            (AdminError::Aborted("e".into()), Code::Aborted),
            (AdminError::Unavailable("f".into()), Code::Unavailable),
            (AdminError::internal("g"), Code::Internal),
        ];
        for (e, code) in table {
            let msg = e.message().to_string();
            let s = Status::from(e);
            assert_eq!((s.code(), s.message()), (code, msg.as_str()));
        }
    }

    #[test]
    fn plans_need_a_known_period() {
        let p = pb::UsagePlan {
            id: "p".into(),
            quota: Some(pb::Quota {
                limit: 1,
                period: 99,
                offset: 0,
            }),
            ..Default::default()
        };
        let e = plan_from_pb(p).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(e.message(), "quota.period: DAY, WEEK or MONTH");
        let too_many = pb::UsagePlan {
            api_stages: vec![pb::ApiStage::default(); MAX_PLAN_STAGES + 1],
            ..Default::default()
        };
        assert_eq!(
            plan_from_pb(too_many).unwrap_err().message(),
            format!("api_stages: at most {MAX_PLAN_STAGES}")
        );
        assert_eq!(
            plan_required(None).unwrap_err().message(),
            "usage_plan is required"
        );
    }
}
