//! `envoy.service.auth.v3.Authorization/Check` (the ext_authz filter): Envoy's request into a
//! check, the answer into Envoy's allow (identity headers upstream, rate-limit headers
//! downstream) or denial (AWS's status, body and headers). Part of `api::envoy`.
use super::*;

pub(super) fn header(key: &str, value: String, action: HeaderAppendAction) -> HeaderValueOption {
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

pub(super) fn plain(key: &str, value: String) -> HeaderValue {
    HeaderValue {
        key: key.to_string(),
        value,
        ..Default::default()
    }
}

/// `{"message": ...}`, AWS's error body.
pub(super) fn message_body(message: &str) -> String {
    serde_json::json!({ "message": message }).to_string()
}

/// A header value Envoy accepts: no control characters.
pub(super) fn header_safe(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

/// `x-tollgate-context-<name>` with the name reduced to `[a-z0-9-]`.
pub(super) fn context_header(name: &str) -> String {
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
pub(super) fn reason_metadata(r: &Reason) -> envoy_types::pb::google::protobuf::Struct {
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
pub(super) fn envoy_denial(status: u16, message: &str, r: Reason) -> CheckResponse {
    tracing::debug!(
        target: reason::LOG_TARGET,
        code = %r.code.as_str(),
        detail = %r.detail,
        status,
        "request denied (Envoy ext_authz)"
    );
    denied(status, message, Vec::new(), Some(&r))
}

pub(super) fn denied(
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
pub(super) fn is_ours(name: &str) -> bool {
    let n = name.as_bytes();
    n.len() >= H_PREFIX.len()
        && n.iter()
            .zip(H_PREFIX.as_bytes())
            .all(|(&c, &p)| c.to_ascii_lowercase() == p || (c == b'_' && p == b'-'))
}

/// The identity headers an allowed request carries upstream, or `Err` naming two context
/// names that would be sent as one header (`Role` and `role`): an ambiguous identity is
/// refused, not resolved by whichever name sorts last.
pub(super) fn identity_headers(a: &Answer) -> Result<Vec<HeaderValueOption>, (String, String)> {
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
pub(super) fn allowed<'h>(
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
pub(super) fn split_path(raw: &str) -> Result<(Cow<'_, str>, QueryList), PathError> {
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
                crate::api::check::observe(&a, Some(started));
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
                crate::api::check::observe_unavailable();
                Err(Status::unavailable(e.to_string()))
            }
        }
    }
}
