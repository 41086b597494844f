//! Envoy's own APIs, so an unmodified Envoy can use Tollgate:
//! - `envoy.service.auth.v3.Authorization/Check` (the ext_authz filter) runs the whole pipeline
//!   (authorizer → API key → throttle → quota) for the request Envoy describes and answers with
//!   AWS's status, body and headers;
//! - `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` (the ratelimit filter)
//!   charges API keys' usage plans (descriptor entries `stage`, `api_key`, `method`, `path`, in
//!   the api whose id is the `domain`) and generic descriptor rules (`descriptors:`).
//!
//! The protos come from the `envoy-types` crate.
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
    authorization_server::Authorization, check_response::HttpResponse,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{
    RateLimitRequest, RateLimitResponse, rate_limit_response,
    rate_limit_service_server::RateLimitService,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

use super::limits::{
    self, MAX_API_KEY_LEN, MAX_COST, MAX_ENVOY_BODY_BYTES, MAX_ID_LEN, MAX_METHOD_LEN,
    MAX_PATH_LEN, MAX_REQUEST_ID_LEN, QueryList,
};
use crate::canonical::{self, PathError};
use crate::catalog::Catalog;
use crate::catalog::descriptors::Rule;
use crate::config::envoy::{RateUnit, UnknownKey};
use crate::descriptor_check::{DescriptorHit, DescriptorVerdict};
use crate::limiter::headers::{self, Policy};
use crate::limiter::{Limit, Period};
use crate::metrics as m;
use crate::pipeline::{Answer, CheckError, CheckInput, Checker, Decision, ReportError};
use crate::reason::{self, Reason, ReasonCode};

use rate_limit_response::{Code, DescriptorStatus, RateLimit, rate_limit::Unit};

/// Descriptors in one `ShouldRateLimit` request.
pub const MAX_DESCRIPTORS: usize = 32;
/// The descriptor entry that makes a descriptor a usage report: its value is the request id
/// of a `meter` route's check, its `hits_addend` the actual cost.
pub const REPORT_ENTRY: &str = "report_request_id";
/// Entries in one descriptor.
pub const MAX_ENTRIES: usize = 32;
/// A descriptor entry's key.
pub const MAX_ENTRY_KEY_LEN: usize = 256;

/// The RLS descriptor entry that says the request has no API key (see `missing_key`).
pub const MISSING_KEY_ENTRY: &str = "missing_api_key";

/// The prefix of every identity header: a client's own are removed on allow.
pub const H_PREFIX: &str = "x-tollgate-";
/// Upstream header: the API key's id.
pub const H_KEY_ID: &str = "x-tollgate-api-key-id";
/// Upstream header: the usage plan's id.
pub const H_PLAN_ID: &str = "x-tollgate-usage-plan-id";
/// Upstream header: the authorizer's principal.
pub const H_PRINCIPAL: &str = "x-tollgate-principal-id";
/// Upstream header prefix: one per authorizer context value.
pub const H_CONTEXT_PREFIX: &str = "x-tollgate-context-";

/// Both Envoy services (clone per service: they share the checker).
#[derive(Clone)]
pub struct EnvoyApi {
    checker: Arc<Checker>,
}

impl EnvoyApi {
    /// Serves Envoy with `checker`.
    pub fn new(checker: Arc<Checker>) -> Self {
        Self { checker }
    }
}

fn count(api: &'static str, result: &'static str) {
    metrics::counter!(m::ENVOY_TOTAL, "api" => api, "result" => result).increment(1);
}

fn header(key: &str, value: String, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            value,
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

fn plain(key: &str, value: String) -> HeaderValue {
    HeaderValue {
        key: key.to_string(),
        value,
        ..Default::default()
    }
}

/// `{"message": ...}`, AWS's error body.
fn message_body(message: &str) -> String {
    serde_json::json!({ "message": message }).to_string()
}

/// A header value Envoy accepts: no control characters.
fn header_safe(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

/// `x-tollgate-context-<name>` with the name reduced to `[a-z0-9-]`.
fn context_header(name: &str) -> String {
    let mut h = String::with_capacity(H_CONTEXT_PREFIX.len() + name.len());
    h.push_str(H_CONTEXT_PREFIX);
    h.extend(name.chars().map(|c| match c.to_ascii_lowercase() {
        c @ ('a'..='z' | '0'..='9' | '-') => c,
        _ => '-',
    }));
    h
}

/// The denial's reason as the ext_authz `dynamic_metadata` (`reason_code`, `reason_detail`):
/// Envoy's access log reads it (`%DYNAMIC_METADATA(envoy.filters.http.ext_authz:reason_code)%`);
/// it never reaches the client.
fn reason_metadata(r: &Reason) -> envoy_types::pb::google::protobuf::Struct {
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    let text = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_string())),
    };
    Struct {
        fields: [
            ("reason_code".to_string(), text(r.code.as_str())),
            ("reason_detail".to_string(), text(&r.detail)),
        ]
        .into_iter()
        .collect(),
    }
}

/// A denial the ext_authz handler decides itself (the pipeline logs its own), logged at debug
/// level like the pipeline's.
fn envoy_denial(status: u16, message: &str, r: Reason) -> CheckResponse {
    tracing::debug!(
        target: reason::LOG_TARGET,
        code = %r.code.as_str(),
        detail = %r.detail,
        status,
        "request denied (Envoy ext_authz)"
    );
    denied(status, message, Vec::new(), Some(&r))
}

fn denied(
    status: u16,
    message: &str,
    extra: Vec<(&'static str, String)>,
    reason: Option<&Reason>,
) -> CheckResponse {
    let mut hs = vec![header(
        "content-type",
        "application/json".into(),
        HeaderAppendAction::OverwriteIfExistsOrAdd,
    )];
    hs.extend(
        extra
            .into_iter()
            .map(|(k, v)| header(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd)),
    );
    CheckResponse {
        status: Some(rpc::Status {
            code: if status == 401 {
                tonic::Code::Unauthenticated as i32
            } else {
                tonic::Code::PermissionDenied as i32
            },
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(status),
            }),
            headers: hs,
            body: message_body(message),
        })),
        dynamic_metadata: reason.map(reason_metadata),
    }
}

/// Whether a client header name is a spelling of one of Tollgate's identity headers: any case,
/// with `_` for `-` (CGI, WSGI, Rack and PHP servers read `x_tollgate_principal_id` as
/// `X-Tollgate-Principal-Id`).
fn is_ours(name: &str) -> bool {
    let n = name.as_bytes();
    n.len() >= H_PREFIX.len()
        && n.iter()
            .zip(H_PREFIX.as_bytes())
            .all(|(&c, &p)| c.to_ascii_lowercase() == p || (c == b'_' && p == b'-'))
}

/// The identity headers an allowed request carries upstream, or `Err` naming two context
/// names that would be sent as one header (`Role` and `role`): an ambiguous identity is
/// refused, not resolved by whichever name sorts last.
fn identity_headers(a: &Answer) -> Result<Vec<HeaderValueOption>, (String, String)> {
    let mut up = Vec::with_capacity(3 + a.context.len());
    for (name, value) in [
        (H_KEY_ID, &a.api_key_id),
        (H_PLAN_ID, &a.plan_id),
        (H_PRINCIPAL, &a.principal_id),
    ] {
        if let Some(v) = value {
            up.push(header(
                name,
                header_safe(v),
                HeaderAppendAction::OverwriteIfExistsOrAdd,
            ));
        }
    }
    let mut names: HashMap<String, &str> = HashMap::with_capacity(a.context.len());
    for (k, v) in &a.context {
        let h = context_header(k);
        if let Some(other) = names.insert(h.clone(), k) {
            return Err((other.to_string(), k.clone()));
        }
        up.push(header(
            &h,
            header_safe(v),
            HeaderAppendAction::OverwriteIfExistsOrAdd,
        ));
    }
    Ok(up)
}

/// `incoming`: the request's header names. Every one that spells an `x-tollgate-*` name
/// (any case, `_` for `-`) is removed before the upstream sees it — always, whether or not
/// `identity_headers` is on — and the ones Tollgate sets are set fresh.
fn allowed<'h>(
    a: Answer,
    up: Vec<HeaderValueOption>,
    incoming: impl Iterator<Item = &'h String>,
) -> CheckResponse {
    // A name Tollgate sets is overwritten, not removed (Envoy removes after it sets).
    let set = |name: &str| {
        up.iter().any(|h| {
            h.header
                .as_ref()
                .is_some_and(|h| h.key.eq_ignore_ascii_case(name))
        })
    };
    let remove = incoming
        .filter(|name| is_ours(name) && !set(name))
        .map(|name| name.to_ascii_lowercase())
        .collect();
    let down = a
        .headers
        .into_iter()
        .map(|(k, v)| header(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .collect();
    CheckResponse {
        status: Some(rpc::Status::default()),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: up,
            headers_to_remove: remove,
            response_headers_to_add: down,
            ..Default::default()
        })),
        dynamic_metadata: None,
    }
}

/// Splits Envoy's `:path` (path + query) into the canonical path ([`crate::canonical::path`])
/// and the query's decoded pairs, in order, every value of a repeated name.
fn split_path(raw: &str) -> Result<(Cow<'_, str>, QueryList), PathError> {
    let (path, query) = canonical::split_target(raw);
    let path = canonical::path(path)?;
    let dec = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    let pairs = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (dec(k), dec(v))
        })
        .collect();
    Ok((path, pairs))
}

/// The answer to a descriptor with the entry [`MISSING_KEY_ENTRY`] (Envoy sends it when the
/// request has no `x-api-key`, through `header_value_match` with `expect_match: false`): over
/// the limit (`Forbidden`) when the route its `method` and `path` entries name requires a key,
/// when no route matches, or when the descriptor names no route (it was put on a keyed route);
/// OK on a route that takes no key.
fn missing_key(cat: &Catalog, domain: &str, d: &RateLimitDescriptor) -> Outcome {
    let forbidden = || {
        count("rls", "missing_api_key");
        tracing::debug!(
            target: reason::LOG_TARGET,
            code = %ReasonCode::ApiKeyMissing.as_str(),
            detail = "Envoy RLS: the request has no API key and its route requires one (or no route matches)",
            domain,
            "request over the limit (Envoy RLS)"
        );
        Outcome {
            over: true,
            message: Some("Forbidden"),
            error_type: Some("ForbiddenException"),
            ..Default::default()
        }
    };
    let Some(stage) = entry(d, "stage")
        .or(cat.envoy.stage.as_deref())
        .and_then(|s| cat.stage(domain, s))
    else {
        return forbidden();
    };
    let method = entry(d, "method").unwrap_or("").to_ascii_uppercase();
    let (Some(raw_path), false) = (entry(d, "path"), method.is_empty()) else {
        return forbidden();
    };
    if raw_path.len() > MAX_PATH_LEN || method.len() > MAX_METHOD_LEN {
        return refused_path();
    }
    let Ok((path, _)) = split_path(raw_path) else {
        return refused_path();
    };
    match stage.match_path(&method, &path) {
        Some(route) if !route.api_key_required => {
            count("rls", "ok");
            Outcome::default()
        }
        _ => forbidden(),
    }
}

/// The RLS answer for a `path` entry that [`canonical::path`] refuses: over the limit, with
/// a message (the RLS protocol has no 400).
fn refused_path() -> Outcome {
    count("rls", "invalid_path");
    metrics::counter!(m::INVALID_REQUESTS_TOTAL).increment(1);
    Outcome {
        over: true,
        message: Some("Invalid request path"),
        error_type: Some("BadRequestException"),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Authorization for EnvoyApi {
    async fn check(&self, req: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        #[allow(clippy::disallowed_methods)] // metrics timing only (a histogram), never a decision
        let started = Instant::now();
        let attrs = req.into_inner().attributes.unwrap_or_default();
        let Some(http) = attrs.request.and_then(|r| r.http) else {
            count("ext_authz", "error");
            return Err(Status::invalid_argument(
                "attributes.request.http is required (an HTTP request from the ext_authz filter)",
            ));
        };
        let cat = self.checker.catalog();
        let ctx = &attrs.context_extensions;
        let Some(api_id) = ctx.get("api_id").or(cat.envoy.api_id.as_ref()) else {
            count("ext_authz", "error");
            return Err(Status::failed_precondition(
                "no api: set context_extensions.api_id on the Envoy route, or envoy.api_id in the Tollgate config",
            ));
        };
        let Some(stage) = ctx.get("stage").or(cat.envoy.stage.as_ref()) else {
            count("ext_authz", "error");
            return Err(Status::failed_precondition(
                "no stage: set context_extensions.stage on the Envoy route, or envoy.stage in the Tollgate config",
            ));
        };
        let mut hdrs = http.headers;
        if hdrs.is_empty()
            && let Some(map) = http.header_map
        {
            // `encode_raw_headers: true` sends bytes in `header_map` instead.
            for h in map.headers {
                let v = if h.raw_value.is_empty() {
                    h.value
                } else {
                    String::from_utf8_lossy(&h.raw_value).into_owned()
                };
                hdrs.entry(h.key.to_ascii_lowercase()).or_insert(v);
            }
        }
        let method = http.method.to_ascii_uppercase();
        // What the client sent is checked here, and answered as a denial: an error would let
        // Envoy's failure_mode_allow wave an oversized request through.
        let bad = |msg: String| {
            metrics::counter!(m::INVALID_REQUESTS_TOTAL).increment(1);
            count("ext_authz", "deny");
            let r = Reason::new(ReasonCode::RequestInvalid, msg.clone());
            Ok(Response::new(envoy_denial(400, &msg, r)))
        };
        if method.is_empty()
            || method.len() > MAX_METHOD_LEN
            || !method.bytes().all(|b| b.is_ascii_alphabetic())
        {
            return bad(format!("Invalid HTTP method {:?}", header_safe(&method)));
        }
        if http.body.len().max(http.raw_body.len()) > MAX_ENVOY_BODY_BYTES {
            metrics::counter!(m::INVALID_REQUESTS_TOTAL).increment(1);
            count("ext_authz", "deny");
            return Ok(Response::new(envoy_denial(
                413,
                "Request body too large",
                Reason::new(
                    ReasonCode::RequestInvalid,
                    format!("the request body is larger than {MAX_ENVOY_BODY_BYTES} bytes"),
                ),
            )));
        }
        if http.path.len() > MAX_PATH_LEN {
            return bad(format!(
                "Invalid request path: it must be at most {MAX_PATH_LEN} bytes"
            ));
        }
        // The one canonical path every later stage sees (routing, the authorizer's method
        // ARN, SigV4, the decision cache); a path that cannot be decided is refused.
        let (path, query) = match split_path(&http.path) {
            Ok(pq) => pq,
            Err(e) => return bad(format!("Invalid request path: {e}")),
        };
        let empty = HashMap::new();
        if let Err(s) = limits::identity_maps(&hdrs, &query, &empty, ctx) {
            return bad(s.message().to_string());
        }
        let api_key = hdrs
            .get(cat.envoy.api_key_header.as_str())
            .map_or("", String::as_str);
        let api_key = if api_key.len() > MAX_API_KEY_LEN {
            // No key is that long: unknown (403), without hashing megabytes.
            "\u{0}too-long"
        } else {
            api_key
        };
        let cost = match ctx.get("cost").map(|c| c.parse::<u64>()) {
            None => 1,
            Some(Ok(c)) if (1..=MAX_COST).contains(&c) => c,
            Some(_) => {
                count("ext_authz", "error");
                return Err(Status::failed_precondition(format!(
                    "context_extensions.cost must be 1..={MAX_COST}"
                )));
            }
        };
        // `meter`: the cost is settled after the response by the rate limit filter's report
        // (a descriptor with `report_request_id`), which knows the request id only.
        let meter = match ctx.get("meter").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                count("ext_authz", "error");
                return Err(Status::failed_precondition(format!(
                    "context_extensions.meter must be \"true\" or \"false\", got {:?}",
                    header_safe(other)
                )));
            }
        };
        let request_id = if meter {
            match hdrs.get("x-request-id").map(String::as_str) {
                Some(id)
                    if !id.is_empty()
                        && id.len() <= MAX_REQUEST_ID_LEN
                        && id.bytes().all(|b| b.is_ascii_graphic()) =>
                {
                    id
                }
                Some(_) => {
                    return bad(format!(
                        "Invalid x-request-id: a metered route needs 1 to {MAX_REQUEST_ID_LEN} \
                         printable ASCII characters"
                    ));
                }
                None => {
                    count("ext_authz", "error");
                    return Err(Status::failed_precondition(
                        "context_extensions.meter is set but the request has no x-request-id \
                         (keep Envoy's generate_request_id on)",
                    ));
                }
            }
        } else {
            ""
        };
        let source_ip = attrs
            .source
            .and_then(|s| s.address)
            .and_then(|a| a.address)
            .and_then(|a| match a {
                envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(s) => {
                    Some(s.address)
                }
                _ => None,
            })
            .unwrap_or_default();
        let body_sha256 = if !http.raw_body.is_empty() {
            sha_hex(&http.raw_body)
        } else if !http.body.is_empty() {
            sha_hex(http.body.as_bytes())
        } else {
            String::new()
        };
        let input = CheckInput {
            api_id,
            stage,
            method: &method,
            path: &path,
            resource_path: "",
            api_key,
            cost,
            request_id,
            dry_run: false,
            headers: Some(&hdrs),
            header_fields: None,
            query: Some(&query[..]),
            stage_variables: None,
            context: Some(ctx),
            source_ip: &source_ip,
            body_sha256: &body_sha256,
            rate_limit_only: false,
            settle_by_request_id: meter,
        };
        match self.checker.check(&input).await {
            Ok(a) if meter && a.replayed => {
                // A metered route's request id names one reservation: a second request with
                // it would ride on the first one's (Envoy regenerates external ids at the
                // edge unless preserve_external_request_id is set).
                count("ext_authz", "deny");
                Ok(Response::new(envoy_denial(
                    409,
                    "Duplicate x-request-id: a request with this id was already admitted",
                    Reason::new(
                        ReasonCode::RequestIdDuplicate,
                        format!(
                            "x-request-id {} names a reservation already admitted on this metered route",
                            reason::label(request_id)
                        ),
                    ),
                )))
            }
            Ok(a) => {
                super::check::observe(&a, Some(started));
                if a.decision == Decision::Allow {
                    let up = if cat.envoy.identity_headers {
                        match identity_headers(&a) {
                            Ok(up) => up,
                            Err((x, y)) => {
                                tracing::warn!(
                                    first = %x, second = %y,
                                    "authorizer context names collide as one x-tollgate-context- header; request refused"
                                );
                                count("ext_authz", "deny");
                                let r = Reason::new(
                                    ReasonCode::ContextNameCollision,
                                    format!(
                                        "authorizer context names {} and {} would be sent as one x-tollgate-context- header",
                                        reason::label(&x),
                                        reason::label(&y)
                                    ),
                                );
                                return Ok(Response::new(denied(
                                    500,
                                    "Internal server error",
                                    vec![(
                                        headers::AMZN_ERROR_TYPE,
                                        "AuthorizerConfigurationException".to_string(),
                                    )],
                                    Some(&r),
                                )));
                            }
                        }
                    } else {
                        Vec::new()
                    };
                    count("ext_authz", "allow");
                    Ok(Response::new(allowed(a, up, hdrs.keys())))
                } else {
                    count("ext_authz", "deny");
                    let r = a.reason.as_ref();
                    Ok(Response::new(denied(
                        a.http_status,
                        a.message,
                        a.headers,
                        r,
                    )))
                }
            }
            Err(CheckError::NotFound(msg)) => {
                count("ext_authz", "error");
                Err(Status::not_found(msg))
            }
            // A reservation over the plan's max_reservation: the request's fault.
            Err(CheckError::InvalidArgument(msg)) => bad(msg),
            Err(e @ CheckError::Unavailable(_)) => {
                count("ext_authz", "error");
                super::check::observe_unavailable();
                Err(Status::unavailable(e.to_string()))
            }
        }
    }
}

fn sha_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// What one descriptor came to.
#[derive(Default)]
struct Outcome {
    over: bool,
    status: DescriptorStatus,
    /// RateLimit policy for the headers.
    policy: Option<Policy>,
    retry_after_us: Option<u64>,
    /// The AWS body when over the limit.
    message: Option<&'static str>,
    /// `x-amzn-ErrorType` when over the limit.
    error_type: Option<&'static str>,
    /// Ready-made response headers (a key's answer: RateLimit, Retry-After, error type).
    headers: Vec<(&'static str, String)>,
}

fn unit_of(p: Period) -> Unit {
    match p {
        Period::Day => Unit::Day,
        Period::Week => Unit::Week,
        Period::Month => Unit::Month,
    }
}

fn rate_unit(u: RateUnit) -> Unit {
    match u {
        RateUnit::Second => Unit::Second,
        RateUnit::Minute => Unit::Minute,
        RateUnit::Hour => Unit::Hour,
        RateUnit::Day => Unit::Day,
        RateUnit::Week => Unit::Week,
        RateUnit::Month => Unit::Month,
        RateUnit::Year => Unit::Year,
    }
}

fn pb_duration(us: u64) -> envoy_types::pb::google::protobuf::Duration {
    envoy_types::pb::google::protobuf::Duration {
        seconds: (us / 1_000_000) as i64,
        nanos: ((us % 1_000_000) * 1000) as i32,
    }
}

/// A bucket's limit as Envoy's `RateLimit`: whole requests per the smallest unit that holds at
/// least one (a bucket is a rate, Envoy's limits are counts per unit).
fn bucket_rate_limit(l: &Limit, name: String) -> RateLimit {
    let rate = l.rate();
    let (rpu, unit) = [
        (1.0, Unit::Second),
        (60.0, Unit::Minute),
        (3600.0, Unit::Hour),
        (86_400.0, Unit::Day),
    ]
    .into_iter()
    .map(|(secs, u)| (rate * secs, u))
    .find(|(n, _)| *n >= 1.0)
    .unwrap_or((rate * 86_400.0, Unit::Day));
    RateLimit {
        name,
        requests_per_unit: rpu.round().clamp(0.0, f64::from(u32::MAX)) as u32,
        unit: unit as i32,
    }
}

/// The answer of the key pipeline for one descriptor.
fn key_outcome(a: &Answer) -> Outcome {
    let over = matches!(a.decision, Decision::Throttled | Decision::QuotaExceeded);
    // Report what limits the request: the quota when it denied, else the bucket when it
    // denied, else whichever has fewer units left.
    let use_quota = match (a.decision, a.throttle, a.quota) {
        (Decision::QuotaExceeded, _, Some(_)) => true,
        (Decision::Throttled, Some(_), _) => false,
        (_, Some(t), Some(q)) => q.remaining < t.remaining,
        (_, None, Some(_)) => true,
        _ => false,
    };
    let now_us = a.now_us;
    let mut o = Outcome {
        over,
        retry_after_us: a.retry_after_us,
        headers: a.headers.clone(),
        ..Default::default()
    };
    if use_quota {
        if let Some(q) = a.quota {
            let reset = q.reset_at_us.saturating_sub(now_us);
            o.status.current_limit = Some(RateLimit {
                name: format!("{}:quota", a.plan_id.as_deref().unwrap_or("")),
                requests_per_unit: q.limit.min(u64::from(u32::MAX)) as u32,
                unit: unit_of(q.period) as i32,
            });
            o.status.limit_remaining = q.remaining.min(u64::from(u32::MAX)) as u32;
            o.status.duration_until_reset = Some(pb_duration(reset));
        }
    } else if let Some(t) = a.throttle {
        let missing = u64::from(t.limit.burst()).saturating_sub(t.remaining);
        o.status.current_limit = Some(bucket_rate_limit(
            &t.limit,
            format!("{}:throttle", a.plan_id.as_deref().unwrap_or("")),
        ));
        o.status.limit_remaining = t.remaining.min(u64::from(u32::MAX)) as u32;
        o.status.duration_until_reset = Some(pb_duration(
            a.retry_after_us.unwrap_or(missing * t.limit.interval_us()),
        ));
    }
    if over {
        o.message = Some(a.message);
        o.error_type = Some(a.error_type);
    }
    o
}

/// A generic descriptor waiting for its bucket's answer.
struct Pending {
    index: usize,
    rule: Arc<Rule>,
    limit: Limit,
    cost: u64,
    hash: Arc<str>,
}

fn generic_outcome(p: &Pending, v: &DescriptorVerdict) -> Outcome {
    let remaining = v.remaining;
    let denied_here = v.denied;
    let missing = u64::from(p.limit.burst()).saturating_sub(remaining);
    let until_full = missing * p.limit.interval_us();
    let reset_us = if denied_here {
        v.retry_after_us.unwrap_or(until_full)
    } else {
        until_full
    };
    let current_limit = RateLimit {
        name: p.rule.name.clone().unwrap_or_default(),
        requests_per_unit: p.rule.requests_per_unit.min(u64::from(u32::MAX)) as u32,
        unit: p.rule.unit.map_or(Unit::Unknown, rate_unit) as i32,
    };
    if denied_here && !p.rule.shadow {
        // The RLS protocol has no place for a reason: the log only.
        let rule = p
            .rule
            .name
            .as_deref()
            .map_or_else(String::new, reason::label);
        tracing::debug!(
            target: reason::LOG_TARGET,
            code = %ReasonCode::DescriptorOverLimit.as_str(),
            detail = %format!(
                "descriptor #{} is over its rule {rule}'s limit of {} per {:?}",
                p.index,
                p.rule.requests_per_unit,
                p.rule.unit
            ),
            "request over the limit (Envoy RLS)"
        );
    }
    Outcome {
        over: denied_here && !p.rule.shadow,
        status: DescriptorStatus {
            code: Code::Ok as i32,
            current_limit: Some(current_limit),
            limit_remaining: remaining.min(u64::from(u32::MAX)) as u32,
            duration_until_reset: Some(pb_duration(reset_us)),
            ..Default::default()
        },
        policy: Some(Policy {
            name: "descriptor",
            quota: u64::from(p.limit.burst()),
            window_s: headers::ceil_secs(p.limit.fill_time_us()),
            remaining,
            reset_s: headers::ceil_secs(until_full),
        }),
        retry_after_us: if denied_here { v.retry_after_us } else { None },
        message: denied_here.then_some("Too Many Requests"),
        error_type: denied_here.then_some("TooManyRequestsException"),
        headers: Vec::new(),
    }
}

fn entry<'a>(d: &'a RateLimitDescriptor, key: &str) -> Option<&'a str> {
    d.entries
        .iter()
        .find(|e| e.key == key)
        .map(|e| e.value.as_str())
}

fn validate_rls(r: &RateLimitRequest) -> Result<(), Status> {
    limits::required("domain", &r.domain)?;
    limits::len("domain", &r.domain, MAX_ID_LEN)?;
    if r.descriptors.is_empty() {
        return Err(Status::invalid_argument(
            "descriptors: at least one is required",
        ));
    }
    if r.descriptors.len() > MAX_DESCRIPTORS {
        return Err(Status::invalid_argument(format!(
            "descriptors has {} entries; the limit is {MAX_DESCRIPTORS}",
            r.descriptors.len()
        )));
    }
    if u64::from(r.hits_addend) > MAX_COST {
        return Err(Status::invalid_argument(format!(
            "hits_addend {} exceeds the limit of {MAX_COST}",
            r.hits_addend
        )));
    }
    for (i, d) in r.descriptors.iter().enumerate() {
        if d.entries.is_empty() || d.entries.len() > MAX_ENTRIES {
            return Err(Status::invalid_argument(format!(
                "descriptors[{i}] has {} entries; 1 to {MAX_ENTRIES} are accepted",
                d.entries.len()
            )));
        }
        for e in &d.entries {
            if e.key.is_empty() || e.key.len() > MAX_ENTRY_KEY_LEN {
                return Err(Status::invalid_argument(format!(
                    "descriptors[{i}]: entry keys must be 1 to {MAX_ENTRY_KEY_LEN} bytes"
                )));
            }
        }
        if let Some(h) = &d.hits_addend
            && h.value > MAX_COST
        {
            return Err(Status::invalid_argument(format!(
                "descriptors[{i}].hits_addend {} exceeds the limit of {MAX_COST}",
                h.value
            )));
        }
    }
    Ok(())
}

/// Envoy's `RateLimitOverride` as a bucket (the route asked for this limit).
fn override_rule(
    o: &envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride,
) -> Option<Arc<Rule>> {
    use crate::config::envoy::DescriptorLimitConfig;
    let unit = match Unit::try_from(o.unit).ok()? {
        Unit::Second => RateUnit::Second,
        Unit::Minute => RateUnit::Minute,
        Unit::Hour => RateUnit::Hour,
        Unit::Day => RateUnit::Day,
        Unit::Week => RateUnit::Week,
        Unit::Month => RateUnit::Month,
        Unit::Year => RateUnit::Year,
        Unit::Unknown => return None,
    };
    let cfg = DescriptorLimitConfig {
        unit: Some(unit),
        requests_per_unit: u64::from(o.requests_per_unit),
        unlimited: false,
        name: None,
    };
    Some(Arc::new(Rule {
        limit: Some(cfg.limit().ok()??),
        shadow: false,
        requests_per_unit: cfg.requests_per_unit,
        unit: Some(unit),
        name: None,
    }))
}

impl EnvoyApi {
    /// A report descriptor (entry [`REPORT_ENTRY`]): settles the reservation ext_authz made
    /// under that request id on a `meter` route with the descriptor's `hits_addend` as the
    /// actual cost. Sent by the rate limit filter after the response (`apply_on_stream_done`),
    /// which ignores the answer: it is always OK unless the report itself is malformed or the
    /// store failed (errors, so Envoy's error counters see them).
    async fn report(&self, rid: &str, d: &RateLimitDescriptor) -> Result<Outcome, Status> {
        let bad = |msg: String| {
            count("rls", "error");
            metrics::counter!(m::INVALID_REQUESTS_TOTAL).increment(1);
            Err(Status::invalid_argument(msg))
        };
        if rid.is_empty()
            || rid.len() > MAX_REQUEST_ID_LEN
            || !rid.bytes().all(|b| b.is_ascii_graphic())
        {
            return bad(format!(
                "{REPORT_ENTRY} must be 1 to {MAX_REQUEST_ID_LEN} printable ASCII characters"
            ));
        }
        let Some(actual) = d.hits_addend.as_ref().map(|h| h.value) else {
            return bad(format!(
                "a {REPORT_ENTRY} descriptor needs its own hits_addend (the actual cost, e.g. \
                 hits_addend.format \"%DYNAMIC_METADATA(tollgate:usage_cost)%\" on a rate limit \
                 of the route's RateLimitPerRoute)"
            ));
        };
        match self.checker.report_ticket(rid, actual).await {
            Ok(_) => {
                count("rls", "report");
                Ok(Outcome::default())
            }
            Err(ReportError::Unavailable(e)) => {
                count("rls", "error");
                Err(Status::unavailable(format!(
                    "rate-limit store unavailable; the reservation is released at its TTL: {e}"
                )))
            }
            Err(e) => {
                tracing::debug!(request_id = rid, error = %e, "usage report settled nothing");
                count("rls", "report_no_reservation");
                Ok(Outcome::default())
            }
        }
    }

    /// One key descriptor through the pipeline. `Ok(None)`: the key is unknown and the rule
    /// says "evaluate the generic descriptors".
    async fn key_descriptor(
        &self,
        cat: &Catalog,
        domain: &str,
        d: &RateLimitDescriptor,
        key: &str,
        cost: u64,
    ) -> Result<Option<Outcome>, Status> {
        let Some(stage) = entry(d, "stage").or(cat.envoy.stage.as_deref()) else {
            return Err(Status::failed_precondition(
                "a descriptor with api_key needs a stage entry, or envoy.stage in the Tollgate config",
            ));
        };
        let method = entry(d, "method").unwrap_or("").to_ascii_uppercase();
        let raw_path = entry(d, "path").unwrap_or("");
        // The canonical path, as on every entry point; one that cannot be decided is denied
        // whatever `unknown_key` says (it is not an unknown key: it is a request to refuse).
        let path = match raw_path {
            "" => Cow::Borrowed(""),
            p if p.len() > MAX_PATH_LEN => return Ok(Some(refused_path())),
            p => match split_path(p) {
                Ok((path, _)) => path,
                Err(_) => return Ok(Some(refused_path())),
            },
        };
        let unusable = key.is_empty()
            || key.len() > MAX_API_KEY_LEN
            || method.len() > MAX_METHOD_LEN
            || !method.bytes().all(|b| b.is_ascii_alphabetic());
        let answer = if unusable {
            None
        } else {
            let input = CheckInput {
                api_id: domain,
                stage,
                method: &method,
                path: &path,
                api_key: key,
                cost,
                rate_limit_only: true,
                ..Default::default()
            };
            match self.checker.check(&input).await {
                Ok(a) => Some(a),
                Err(CheckError::NotFound(msg)) => return Err(Status::not_found(msg)),
                Err(CheckError::InvalidArgument(msg)) => return Err(Status::invalid_argument(msg)),
                Err(e @ CheckError::Unavailable(_)) => {
                    return Err(Status::unavailable(e.to_string()));
                }
            }
        };
        match answer {
            Some(a) if a.decision != Decision::Forbidden => {
                super::check::observe(&a, None);
                let o = key_outcome(&a);
                count("rls", if o.over { "over_limit" } else { "ok" });
                Ok(Some(o))
            }
            // Unknown, disabled, not in a plan for the stage, or no such route.
            _ => {
                count("rls", "unknown_key");
                match cat.envoy.unknown_key {
                    UnknownKey::Allow => Ok(Some(Outcome::default())),
                    UnknownKey::Deny => Ok(Some(Outcome {
                        over: true,
                        message: Some("Forbidden"),
                        error_type: Some("ForbiddenException"),
                        ..Default::default()
                    })),
                    UnknownKey::Descriptors => Ok(None),
                }
            }
        }
    }
}

#[tonic::async_trait]
impl RateLimitService for EnvoyApi {
    async fn should_rate_limit(
        &self,
        req: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let r = req.into_inner();
        if let Err(s) = validate_rls(&r) {
            metrics::counter!(m::INVALID_REQUESTS_TOTAL).increment(1);
            return Err(s);
        }
        let cat = self.checker.catalog();
        let domain = r.domain.as_str();
        let request_cost = u64::from(r.hits_addend).max(1);
        let is_api = cat.has_api(domain);
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(r.descriptors.len());
        let mut pending: Vec<Pending> = Vec::new();
        for (i, d) in r.descriptors.iter().enumerate() {
            if let Some(rid) = entry(d, REPORT_ENTRY) {
                outcomes.push(Some(self.report(rid, d).await?));
                continue;
            }
            if d.is_negative_hits {
                // Refunds are not supported: answered OK, nothing charged.
                outcomes.push(Some(Outcome::default()));
                continue;
            }
            let cost = d
                .hits_addend
                .as_ref()
                .map_or(request_cost, |h| h.value.max(1));
            if is_api && entry(d, MISSING_KEY_ENTRY).is_some() {
                outcomes.push(Some(missing_key(&cat, domain, d)));
                continue;
            }
            if is_api && let Some(key) = entry(d, "api_key") {
                let o = self
                    .key_descriptor(&cat, domain, d, key, cost)
                    .await
                    .inspect_err(|_| count("rls", "error"))?;
                if o.is_some() {
                    outcomes.push(o);
                    continue;
                }
            }
            let entries = || d.entries.iter().map(|e| (e.key.as_str(), e.value.as_str()));
            let rule = match &d.limit {
                Some(o) => override_rule(o),
                None => cat.descriptors.lookup(domain, entries()),
            };
            match rule.and_then(|r| Some((r.limit?, r))) {
                Some((limit, rule)) => {
                    pending.push(Pending {
                        index: i,
                        rule,
                        limit,
                        cost,
                        hash: cat.descriptors.bucket_hash(domain, entries()),
                    });
                    outcomes.push(None);
                }
                None => {
                    count("rls", "no_rule");
                    outcomes.push(Some(Outcome::default()));
                }
            }
        }
        // Generic buckets: the domain charges them (one atomic call per group) and applies
        // the failure mode.
        let hits: Vec<DescriptorHit> = pending
            .iter()
            .map(|p| DescriptorHit {
                hash: p.hash.clone(),
                limit: p.limit,
                cost: p.cost,
                shadow: p.rule.shadow,
            })
            .collect();
        let verdicts = match self.checker.check_descriptors(&hits).await {
            Ok(v) => v,
            Err(e) => {
                count("rls", "error");
                return Err(Status::unavailable(e.to_string()));
            }
        };
        for (p, v) in pending.iter().zip(&verdicts) {
            if v.degraded {
                outcomes[p.index] = Some(Outcome::default());
                continue;
            }
            count(
                "rls",
                match (v.denied, p.rule.shadow) {
                    (true, true) => "shadow_over_limit",
                    (true, false) => "over_limit",
                    _ => "ok",
                },
            );
            outcomes[p.index] = Some(generic_outcome(p, v));
        }
        Ok(Response::new(respond(outcomes)))
    }
}

/// Folds the descriptors' outcomes into Envoy's answer: OVER_LIMIT if any is; the headers of
/// the denying descriptor (or of the one with the fewest units left) and AWS's body.
fn respond(outcomes: Vec<Option<Outcome>>) -> RateLimitResponse {
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    let over = outcomes.iter().any(|o| o.over);
    let lead = outcomes.iter().filter(|o| o.over == over).min_by_key(|o| {
        (
            o.policy.is_none() && o.status.current_limit.is_none(),
            o.status.limit_remaining,
        )
    });
    let mut hdrs = Vec::new();
    let mut body = Vec::new();
    if let Some(l) = lead {
        if !l.headers.is_empty() {
            hdrs.extend(l.headers.iter().map(|(k, v)| plain(k, v.clone())));
        } else {
            if let Some((policy, state)) = l
                .policy
                .as_ref()
                .and_then(|p| headers::render(std::slice::from_ref(p)))
            {
                hdrs.push(plain(headers::RATELIMIT_POLICY, policy));
                hdrs.push(plain(headers::RATELIMIT, state));
            }
            if over {
                if let Some(r) = l.retry_after_us {
                    hdrs.push(plain(
                        headers::RETRY_AFTER,
                        headers::ceil_secs(r).to_string(),
                    ));
                }
                if let Some(t) = l.error_type.filter(|t| !t.is_empty()) {
                    hdrs.push(plain(headers::AMZN_ERROR_TYPE, t.to_string()));
                }
            }
        }
        if over {
            hdrs.push(plain("content-type", "application/json".into()));
            body = message_body(l.message.unwrap_or("Too Many Requests")).into_bytes();
        }
    }
    RateLimitResponse {
        overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
        statuses: outcomes
            .into_iter()
            .map(|o| DescriptorStatus {
                code: if o.over { Code::OverLimit } else { Code::Ok } as i32,
                ..o.status
            })
            .collect(),
        response_headers_to_add: hdrs,
        raw_body: body,
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "envoy_tests.rs"]
mod tests;
