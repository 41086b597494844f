//! `tollgate.v1.CheckService`.
use std::sync::Arc;
use std::time::Instant;

use tollgate_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::limits::{self, *};
use crate::limiter::Period;
use crate::metrics as m;
use crate::pipeline::{
    Answer, CheckError, CheckInput, Checker, Decision, QuotaInfo, ReportAnswer, ReportError,
};

/// The CheckService implementation.
#[derive(Clone)]
pub struct CheckApi {
    checker: Arc<Checker>,
}

impl CheckApi {
    /// Serves checks with `checker`.
    pub fn new(checker: Arc<Checker>) -> Self {
        Self { checker }
    }
}

/// Records an answered check in the metrics (CheckRequest, ext_authz, RLS key descriptors):
/// its decision and plan, whether it was degraded, and its latency from `started`.
pub(crate) fn observe(a: &Answer, started: Option<Instant>) {
    let plan = a.plan_id.clone().unwrap_or_default();
    metrics::counter!(m::CHECKS_TOTAL, "decision" => a.decision.label(), "plan" => plan)
        .increment(1);
    if a.degraded {
        metrics::counter!(m::DEGRADED_TOTAL).increment(1);
    }
    if let Some(t) = started {
        metrics::histogram!(m::CHECK_DURATION).record(t.elapsed().as_secs_f64());
    }
}

/// Records a check the store could not answer (failure_mode closed).
pub(crate) fn observe_unavailable() {
    metrics::counter!(m::CHECKS_TOTAL, "decision" => "unavailable", "plan" => "").increment(1);
}

fn invalid(s: Status) -> Status {
    metrics::counter!(m::INVALID_REQUESTS_TOTAL).increment(1);
    s
}

/// Validates sizes and shapes; returns the upper-cased method and the canonical path
/// ([`crate::canonical::path`]): everything after this sees only those.
fn validate(r: &pb::CheckRequestRequest) -> Result<Canonical<'_>, Status> {
    required("api_id", &r.api_id)?;
    required("stage", &r.stage)?;
    required("http_method", &r.http_method)?;
    required("path", &r.path)?;
    len("api_id", &r.api_id, MAX_ID_LEN)?;
    len("stage", &r.stage, MAX_ID_LEN)?;
    len("http_method", &r.http_method, MAX_METHOD_LEN)?;
    len("path", &r.path, MAX_PATH_LEN)?;
    len("resource_path", &r.resource_path, MAX_RESOURCE_PATH_LEN)?;
    len("api_key", &r.api_key, MAX_API_KEY_LEN)?;
    len("source_ip", &r.source_ip, MAX_SOURCE_IP_LEN)?;
    len("request_id", &r.request_id, MAX_REQUEST_ID_LEN)?;
    if !r.http_method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(Status::invalid_argument(
            "http_method must be letters only, e.g. GET",
        ));
    }
    let path = canonical_path("path", &r.path)?;
    if !r.resource_path.is_empty() && !r.resource_path.starts_with('/') {
        return Err(Status::invalid_argument(
            "resource_path must start with '/'",
        ));
    }
    if !r.request_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Status::invalid_argument(
            "request_id must be printable ASCII without spaces",
        ));
    }
    if r.cost > MAX_COST {
        return Err(Status::invalid_argument(format!(
            "cost {} exceeds the limit of {MAX_COST}",
            r.cost
        )));
    }
    len("body_sha256", &r.body_sha256, 64)?;
    limits::canonical(
        &r.http_method,
        path,
        limits::Sources {
            headers: &r.headers,
            header_fields: &r.header_fields,
            query: &r.query,
            query_params: &r.query_params,
            stage_variables: &r.stage_variables,
            context: &r.context,
        },
    )
}

impl From<Decision> for pb::Decision {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Allow => pb::Decision::Allow,
            Decision::Throttled => pb::Decision::Throttled,
            Decision::QuotaExceeded => pb::Decision::QuotaExceeded,
            Decision::Forbidden => pb::Decision::Forbidden,
            Decision::Unauthorized => pb::Decision::Unauthorized,
            Decision::AccessDenied => pb::Decision::AccessDenied,
            Decision::AuthorizerError => pb::Decision::AuthorizerError,
        }
    }
}

impl From<Period> for pb::QuotaPeriod {
    fn from(p: Period) -> Self {
        match p {
            Period::Day => pb::QuotaPeriod::Day,
            Period::Week => pb::QuotaPeriod::Week,
            Period::Month => pb::QuotaPeriod::Month,
        }
    }
}

fn duration(us: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (us / 1_000_000) as i64,
        nanos: ((us % 1_000_000) * 1000) as i32,
    }
}

fn quota_to_proto(q: QuotaInfo) -> pb::QuotaStatus {
    pb::QuotaStatus {
        limit: q.limit,
        remaining: q.remaining,
        period: pb::QuotaPeriod::from(q.period) as i32,
        reset_at: Some(prost_types::Timestamp {
            seconds: (q.reset_at_us / 1_000_000) as i64,
            nanos: ((q.reset_at_us % 1_000_000) * 1000) as i32,
        }),
    }
}

/// Domain report answer → wire response.
pub fn report_to_proto(a: ReportAnswer) -> pb::ReportUsageResponse {
    pb::ReportUsageResponse {
        reserved: a.reserved,
        actual: a.actual,
        already_reported: a.already_reported,
        quota: a.quota.map(quota_to_proto),
    }
}

/// The pipeline's view of a (validated) wire request.
fn check_input<'a>(r: &'a pb::CheckRequestRequest, e: &'a Canonical<'a>) -> CheckInput<'a> {
    CheckInput {
        api_id: &r.api_id,
        stage: &r.stage,
        method: &e.method,
        path: &e.path,
        resource_path: &r.resource_path,
        api_key: &r.api_key,
        cost: r.cost.max(1),
        request_id: &r.request_id,
        dry_run: r.dry_run,
        headers: Some(&e.headers),
        header_fields: (!e.header_fields.is_empty()).then_some(&e.header_fields[..]),
        query: Some(&e.query[..]),
        stage_variables: Some(&r.stage_variables),
        context: Some(&r.context),
        source_ip: &r.source_ip,
        body_sha256: &r.body_sha256,
        rate_limit_only: false,
        settle_by_request_id: false,
    }
}

/// A denial's reason on the wire.
pub(crate) fn reason_to_proto(r: &crate::reason::Reason) -> pb::DenialReason {
    pb::DenialReason {
        code: r.code.as_str().to_string(),
        detail: r.detail.clone(),
    }
}

/// Domain answer → wire response.
pub fn to_proto(a: Answer) -> pb::CheckRequestResponse {
    pb::CheckRequestResponse {
        decision: pb::Decision::from(a.decision) as i32,
        http_status: u32::from(a.http_status),
        error_type: a.error_type.to_string(),
        message: a.message.to_string(),
        reason: a.reason.as_ref().map(reason_to_proto),
        retry_after: a.retry_after_us.map(duration),
        throttle: a.throttle.map(|t| pb::ThrottleStatus {
            rate_limit: t.limit.rate(),
            burst_limit: t.limit.burst(),
            remaining: t.remaining,
        }),
        quota: a.quota.map(quota_to_proto),
        response_headers: a
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        identity: (a.api_key_id.is_some() || a.plan_id.is_some() || a.principal_id.is_some()).then(
            || pb::Identity {
                api_key_id: a.api_key_id.unwrap_or_default(),
                usage_plan_id: a.plan_id.unwrap_or_default(),
                principal_id: a.principal_id.unwrap_or_default(),
                context: a.context.into_iter().collect(),
            },
        ),
        replayed: a.replayed,
        degraded: a.degraded,
        resource_path: a.resource_path,
    }
}

#[tonic::async_trait]
impl pb::check_service_server::CheckService for CheckApi {
    // Debug level: at the default `info` the span (and its formatted fields) is never built.
    #[tracing::instrument(level = "debug", skip_all, fields(api = %req.get_ref().api_id, stage = %req.get_ref().stage, decision))]
    async fn check_request(
        &self,
        req: Request<pb::CheckRequestRequest>,
    ) -> Result<Response<pb::CheckRequestResponse>, Status> {
        #[allow(clippy::disallowed_methods)] // metrics timing only (a histogram), never a decision
        let started = Instant::now();
        let r = req.get_ref();
        let edge = validate(r).map_err(invalid)?;
        let input = check_input(r, &edge);
        match self.checker.check(&input).await {
            Ok(answer) => {
                observe(&answer, Some(started));
                tracing::Span::current().record("decision", answer.decision.label());
                Ok(Response::new(to_proto(answer)))
            }
            Err(CheckError::NotFound(msg)) => Err(Status::not_found(msg)),
            Err(CheckError::InvalidArgument(msg)) => Err(invalid(Status::invalid_argument(msg))),
            Err(e @ CheckError::Unavailable(_)) => {
                observe_unavailable();
                Err(Status::unavailable(e.to_string()))
            }
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(api = %req.get_ref().request.as_ref().map_or("", |r| r.api_id.as_str())))]
    async fn report_usage(
        &self,
        req: Request<pb::ReportUsageRequest>,
    ) -> Result<Response<pb::ReportUsageResponse>, Status> {
        let rr = req.get_ref();
        let Some(r) = rr.request.as_ref() else {
            return Err(invalid(Status::invalid_argument("request is required")));
        };
        let edge = validate(r).map_err(invalid)?;
        required("request.request_id", &r.request_id).map_err(invalid)?;
        if rr.actual_cost > MAX_COST {
            return Err(invalid(Status::invalid_argument(format!(
                "actual_cost {} exceeds the limit of {MAX_COST}",
                rr.actual_cost
            ))));
        }
        let input = check_input(r, &edge);
        match self.checker.report(&input, rr.actual_cost).await {
            Ok(a) => Ok(Response::new(report_to_proto(a))),
            Err(ReportError::NotFound(msg)) => Err(Status::not_found(msg)),
            Err(ReportError::NoReservation(msg)) => Err(Status::failed_precondition(msg)),
            Err(e @ ReportError::Unavailable(_)) => Err(Status::unavailable(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use arc_swap::ArcSwap;
    use pb::check_service_server::CheckService;

    use super::*;
    use crate::catalog::Catalog;
    use crate::clock::SystemClock;
    use crate::store::AnyStore;
    use crate::store::memory::MemoryStore;

    fn api() -> CheckApi {
        api_with(
            "apis:\n  - id: a\n    stages:\n      - name: s\n        routes: [{ method: GET, path: /x }]\n",
        )
    }

    /// A CheckApi over the embedded store, with the config `text`.
    fn api_with(text: &str) -> CheckApi {
        let cfg = crate::config::parse(text, &|_| None).expect("valid");
        let store = AnyStore::Memory(MemoryStore::new(Arc::new(SystemClock)));
        let auth = crate::auth::Authorizers::empty(
            crate::auth::AuthCache::new(store.clone(), "tg", Duration::from_millis(50)),
            Arc::new(SystemClock),
        );
        let catalog = Arc::new(ArcSwap::from_pointee(Catalog::build(
            &cfg,
            &crate::defs::test_defs(&cfg),
            Arc::new(auth),
        )));
        CheckApi::new(Arc::new(Checker::new(
            catalog,
            store,
            Duration::from_millis(50),
        )))
    }

    fn ok_req() -> pb::CheckRequestRequest {
        pb::CheckRequestRequest {
            api_id: "a".into(),
            stage: "s".into(),
            http_method: "get".into(),
            path: "/x".into(),
            ..Default::default()
        }
    }

    async fn code(
        r: pb::CheckRequestRequest,
    ) -> Result<pb::CheckRequestResponse, (tonic::Code, String)> {
        api()
            .check_request(Request::new(r))
            .await
            .map(Response::into_inner)
            .map_err(|s| (s.code(), s.message().to_string()))
    }

    #[tokio::test]
    async fn valid_request_is_allowed() {
        let r = code(ok_req()).await.expect("ok");
        assert_eq!(r.decision, pb::Decision::Allow as i32);
        assert_eq!(r.http_status, 200);
        assert_eq!(r.resource_path, "/x");
    }

    #[tokio::test]
    async fn bad_input_is_invalid_argument_with_a_message() {
        let cases: Vec<(pb::CheckRequestRequest, &str)> = vec![
            (
                pb::CheckRequestRequest {
                    api_id: String::new(),
                    ..ok_req()
                },
                "api_id is required",
            ),
            (
                pb::CheckRequestRequest {
                    path: "x".into(),
                    ..ok_req()
                },
                "path must start",
            ),
            (
                pb::CheckRequestRequest {
                    path: format!("/{}", "a".repeat(MAX_PATH_LEN)),
                    ..ok_req()
                },
                "path is",
            ),
            (
                pb::CheckRequestRequest {
                    http_method: "G T".into(),
                    ..ok_req()
                },
                "http_method",
            ),
            (
                pb::CheckRequestRequest {
                    cost: MAX_COST + 1,
                    ..ok_req()
                },
                "cost",
            ),
            (
                pb::CheckRequestRequest {
                    request_id: "a b".into(),
                    ..ok_req()
                },
                "request_id",
            ),
            (
                pb::CheckRequestRequest {
                    api_key: "k".repeat(MAX_API_KEY_LEN + 1),
                    ..ok_req()
                },
                "api_key",
            ),
            (
                pb::CheckRequestRequest {
                    headers: (0..=MAX_MAP_ENTRIES)
                        .map(|i| (format!("h{i}"), String::new()))
                        .collect(),
                    ..ok_req()
                },
                "headers has",
            ),
            (
                pb::CheckRequestRequest {
                    query: [("q".to_string(), "v".repeat(MAX_MAP_VALUE_LEN + 1))].into(),
                    ..ok_req()
                },
                "query[q]",
            ),
        ];
        for (r, needle) in cases {
            let (c, msg) = code(r).await.expect_err("invalid");
            assert_eq!(c, tonic::Code::InvalidArgument, "{needle}");
            assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        }
    }

    /// A route with an API key in a plan with a quota, on the embedded store.
    fn metered_api() -> CheckApi {
        api_with(
            "apis:\n  - id: a\n    stages:\n      - name: s\n        routes: [{ method: GET, path: /x, api_key_required: true }]\nusage_plans:\n  - id: p\n    quota: { limit: 100, period: DAY }\n    metering: {}\n    api_stages: [{ api_id: a, stage: s }]\napi_keys:\n  - { id: k, value: \"metered-key-aaaaaaaaaaaaaaaaaaaaaaa\", enabled: true, usage_plans: [p] }\n",
        )
    }

    #[tokio::test]
    async fn report_settles_once_on_the_embedded_store() {
        let api = metered_api();
        let req = pb::CheckRequestRequest {
            api_key: "metered-key-aaaaaaaaaaaaaaaaaaaaaaa".into(),
            request_id: "r-1".into(),
            cost: 30,
            ..ok_req()
        };
        let r = api
            .check_request(Request::new(req.clone()))
            .await
            .expect("check")
            .into_inner();
        assert_eq!(r.quota.map(|q| q.remaining), Some(70));
        let report = |actual| pb::ReportUsageRequest {
            request: Some(req.clone()),
            actual_cost: actual,
        };
        let r = api
            .report_usage(Request::new(report(12)))
            .await
            .expect("report")
            .into_inner();
        assert_eq!((r.reserved, r.actual, r.already_reported), (30, 12, false));
        assert_eq!(r.quota.map(|q| q.remaining), Some(88));
        let r = api
            .report_usage(Request::new(report(0)))
            .await
            .expect("repeat")
            .into_inner();
        assert_eq!((r.actual, r.already_reported), (12, true));
        assert_eq!(r.quota.map(|q| q.remaining), Some(88));
        // Bad reports.
        let code =
            |r: Result<Response<pb::ReportUsageResponse>, Status>| r.expect_err("refused").code();
        let no_id = pb::ReportUsageRequest {
            request: Some(pb::CheckRequestRequest {
                request_id: String::new(),
                ..req.clone()
            }),
            actual_cost: 1,
        };
        assert_eq!(
            code(api.report_usage(Request::new(no_id)).await),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(api.report_usage(Request::new(report(MAX_COST + 1))).await),
            tonic::Code::InvalidArgument
        );
        let unknown = pb::ReportUsageRequest {
            request: Some(pb::CheckRequestRequest {
                request_id: "r-2".into(),
                ..req.clone()
            }),
            actual_cost: 1,
        };
        assert_eq!(
            code(api.report_usage(Request::new(unknown)).await),
            tonic::Code::FailedPrecondition
        );

        // An unreported reservation is released at its TTL; the reported one is not.
        let r3 = pb::CheckRequestRequest {
            request_id: "r-3".into(),
            cost: 50,
            ..req.clone()
        };
        let r = api
            .check_request(Request::new(r3.clone()))
            .await
            .expect("check")
            .into_inner();
        assert_eq!(r.quota.map(|q| q.remaining), Some(38));
        let now = crate::clock::Clock::now_micros(&SystemClock);
        let later = now + crate::store::IDEMPOTENCY_TTL_MS * 1000;
        assert_eq!(api.checker.release_due(Some(now)).await, 0, "not due yet");
        assert_eq!(api.checker.release_due(Some(later)).await, 1, "r-3 only");
        let dry = pb::CheckRequestRequest {
            request_id: String::new(),
            dry_run: true,
            cost: 1,
            ..req.clone()
        };
        let r = api
            .check_request(Request::new(dry))
            .await
            .expect("check")
            .into_inner();
        assert_eq!(r.quota.map(|q| q.remaining), Some(87), "12 used, +1 as if");
        let late = pb::ReportUsageRequest {
            request: Some(r3),
            actual_cost: 50,
        };
        assert_eq!(
            code(api.report_usage(Request::new(late)).await),
            tonic::Code::FailedPrecondition,
            "released: nothing to settle"
        );
    }

    #[tokio::test]
    async fn unknown_api_is_not_found() {
        let (c, msg) = code(pb::CheckRequestRequest {
            api_id: "zz".into(),
            ..ok_req()
        })
        .await
        .expect_err("not found");
        assert_eq!(c, tonic::Code::NotFound);
        assert!(msg.contains("zz"));
    }
}
