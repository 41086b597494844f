//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` (the ratelimit filter): API-key
//! descriptors charge the key's usage plan, generic descriptors the `descriptors:` rules (the
//! domain charges them: `descriptor_check`); this maps requests and answers. Part of
//! `api::envoy`.
use super::*;

/// The answer to a descriptor with the entry [`MISSING_KEY_ENTRY`] (Envoy sends it when the
/// request has no `x-api-key`, through `header_value_match` with `expect_match: false`): over
/// the limit (`Forbidden`) when the route its `method` and `path` entries name requires a key,
/// when no route matches, or when the descriptor names no route (it was put on a keyed route);
/// OK on a route that takes no key.
pub(super) fn missing_key(cat: &Catalog, domain: &str, d: &RateLimitDescriptor) -> Outcome {
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

pub(super) fn sha_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// What one descriptor came to.
#[derive(Default)]
pub(super) struct Outcome {
    pub(super) over: bool,
    pub(super) status: DescriptorStatus,
    /// RateLimit policy for the headers.
    pub(super) policy: Option<Policy>,
    pub(super) retry_after_us: Option<u64>,
    /// The AWS body when over the limit.
    pub(super) message: Option<&'static str>,
    /// `x-amzn-ErrorType` when over the limit.
    pub(super) error_type: Option<&'static str>,
    /// Ready-made response headers (a key's answer: RateLimit, Retry-After, error type).
    pub(super) headers: Vec<(&'static str, String)>,
}

pub(super) fn unit_of(p: Period) -> Unit {
    match p {
        Period::Day => Unit::Day,
        Period::Week => Unit::Week,
        Period::Month => Unit::Month,
    }
}

pub(super) fn rate_unit(u: RateUnit) -> Unit {
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

pub(super) fn pb_duration(us: u64) -> envoy_types::pb::google::protobuf::Duration {
    envoy_types::pb::google::protobuf::Duration {
        seconds: (us / 1_000_000) as i64,
        nanos: ((us % 1_000_000) * 1000) as i32,
    }
}

/// A bucket's limit as Envoy's `RateLimit`: whole requests per the smallest unit that holds at
/// least one (a bucket is a rate, Envoy's limits are counts per unit).
pub(super) fn bucket_rate_limit(l: &Limit, name: String) -> RateLimit {
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
pub(super) fn key_outcome(a: &Answer) -> Outcome {
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
pub(super) struct Pending {
    pub(super) index: usize,
    pub(super) rule: Arc<Rule>,
    pub(super) limit: Limit,
    pub(super) cost: u64,
    pub(super) hash: Arc<str>,
}

pub(super) fn generic_outcome(p: &Pending, v: &DescriptorVerdict) -> Outcome {
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

pub(super) fn entry<'a>(d: &'a RateLimitDescriptor, key: &str) -> Option<&'a str> {
    d.entries
        .iter()
        .find(|e| e.key == key)
        .map(|e| e.value.as_str())
}

pub(super) fn validate_rls(r: &RateLimitRequest) -> Result<(), Status> {
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
pub(super) fn override_rule(
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
                crate::api::check::observe(&a, None);
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
pub(super) fn respond(outcomes: Vec<Option<Outcome>>) -> RateLimitResponse {
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

/// The RLS answer for a `path` entry that [`canonical::path`] refuses: over the limit, with
/// a message (the RLS protocol has no 400).
pub(super) fn refused_path() -> Outcome {
    count("rls", "invalid_path");
    metrics::counter!(m::INVALID_REQUESTS_TOTAL).increment(1);
    Outcome {
        over: true,
        message: Some("Invalid request path"),
        error_type: Some("BadRequestException"),
        ..Default::default()
    }
}
