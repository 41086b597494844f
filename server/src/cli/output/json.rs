//! `--output json`: stable JSON views built by hand from the prost messages (which do not
//! derive serde). Part of [`super`].
use super::*;

/// `throttle` / `method_throttle` values.
#[derive(Debug, Serialize)]
pub struct ThrottleJson {
    rate_limit: f64,
    burst_limit: u64,
}

/// [`pb::Throttle`] as JSON.
pub fn throttle_json(t: &pb::Throttle) -> ThrottleJson {
    ThrottleJson {
        rate_limit: t.rate_limit,
        burst_limit: t.burst_limit,
    }
}

/// `quota`.
#[derive(Debug, Serialize)]
pub struct QuotaJson {
    limit: u64,
    period: Option<&'static str>,
    offset: u64,
}

/// `api_stages[]`.
#[derive(Debug, Serialize)]
pub struct StageJson<'a> {
    api_id: &'a str,
    stage: &'a str,
    method_throttle: BTreeMap<&'a str, ThrottleJson>,
}

/// A usage plan, in the plan file's shape plus `created_at` and `source`.
#[derive(Debug, Serialize)]
pub struct PlanJson<'a> {
    id: &'a str,
    name: &'a str,
    description: &'a str,
    throttle: Option<ThrottleJson>,
    quota: Option<QuotaJson>,
    throttle_scope: &'static str,
    failure_mode: Option<&'static str>,
    api_stages: Vec<StageJson<'a>>,
    local_lease: Option<LeaseJson>,
    metering: Option<MeteringJson>,
    created_at: &'a str,
    source: &'a str,
}

/// `local_lease`, in the config file's shape.
#[derive(Debug, Serialize)]
pub struct LeaseJson {
    units: u64,
    max_age: String,
}

/// `metering`, in the config file's shape.
#[derive(Debug, Serialize)]
pub struct MeteringJson {
    meter_throttle: bool,
    reservation_ttl: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_reservation: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_reservation: Option<u64>,
}

/// A protobuf millisecond count as the config file writes durations (`500ms`, `9m 55s`).
pub(super) fn ms_text(ms: u32) -> String {
    humantime::format_duration(std::time::Duration::from_millis(u64::from(ms))).to_string()
}

/// [`pb::UsagePlan`] as JSON.
pub fn plan_json(p: &pb::UsagePlan) -> PlanJson<'_> {
    PlanJson {
        id: &p.id,
        name: &p.name,
        description: &p.description,
        throttle: p.throttle.as_ref().map(throttle_json),
        quota: p.quota.as_ref().map(|q| QuotaJson {
            limit: q.limit,
            period: period_name(q.period),
            offset: q.offset,
        }),
        throttle_scope: scope_name(p.throttle_scope),
        failure_mode: failure_name(p.failure_mode),
        api_stages: p
            .api_stages
            .iter()
            .map(|s| StageJson {
                api_id: &s.api_id,
                stage: &s.stage,
                method_throttle: s
                    .method_throttle
                    .iter()
                    .map(|(k, t)| (k.as_str(), throttle_json(t)))
                    .collect(),
            })
            .collect(),
        local_lease: p.local_lease.as_ref().map(|l| LeaseJson {
            units: l.units,
            max_age: ms_text(l.max_age_ms),
        }),
        metering: p.metering.as_ref().map(|m| MeteringJson {
            meter_throttle: m.meter_throttle,
            reservation_ttl: ms_text(m.reservation_ttl_ms),
            min_reservation: (m.min_reservation > 0).then_some(m.min_reservation),
            max_reservation: (m.max_reservation > 0).then_some(m.max_reservation),
        }),
        created_at: &p.created_at,
        source: &p.source,
    }
}

/// An API key; `value` is `null` except in the answer to `keys create`.
#[derive(Debug, Serialize)]
pub struct KeyJson<'a> {
    id: &'a str,
    value: Option<&'a str>,
    name: &'a str,
    description: &'a str,
    enabled: bool,
    customer_id: &'a str,
    tags: BTreeMap<&'a str, &'a str>,
    usage_plan_ids: &'a [String],
    identity: Option<&'a str>,
    created_at: &'a str,
    last_updated: &'a str,
    source: &'a str,
}

/// [`pb::ApiKey`] as JSON.
pub fn key_json(k: &pb::ApiKey) -> KeyJson<'_> {
    KeyJson {
        id: &k.id,
        value: (!k.value.is_empty()).then_some(k.value.as_str()),
        name: &k.name,
        description: &k.description,
        enabled: k.enabled,
        customer_id: &k.customer_id,
        tags: k
            .tags
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect(),
        usage_plan_ids: &k.usage_plan_ids,
        identity: (!k.identity.is_empty()).then_some(k.identity.as_str()),
        created_at: &k.created_at,
        last_updated: &k.last_updated,
        source: &k.source,
    }
}

/// A plan's key.
#[derive(Debug, Serialize)]
pub struct PlanKeyJson<'a> {
    id: &'a str,
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    usage_plan_id: &'a str,
    enabled: bool,
}

/// [`pb::UsagePlanKey`] as JSON.
pub fn plan_key_json(k: &pb::UsagePlanKey) -> PlanKeyJson<'_> {
    PlanKeyJson {
        id: &k.id,
        name: &k.name,
        kind: &k.r#type,
        usage_plan_id: &k.usage_plan_id,
        enabled: k.enabled,
    }
}

/// One day of one key's usage.
#[derive(Debug, Serialize)]
pub struct DayJson<'a> {
    date: &'a str,
    used: u64,
    remaining: Option<u64>,
}

/// `usage get`: key id → days (sorted by key, then date).
#[derive(Debug, Serialize)]
pub struct UsageJson<'a> {
    usage_plan_id: &'a str,
    start_date: &'a str,
    end_date: &'a str,
    items: BTreeMap<&'a str, Vec<DayJson<'a>>>,
}

/// The days of `u` sorted by date.
pub(super) fn sorted_days(u: &pb::KeyUsage) -> Vec<&pb::DailyUsage> {
    let mut days: Vec<&pb::DailyUsage> = u.days.iter().collect();
    days.sort_by(|a, b| a.date.cmp(&b.date));
    days
}

/// [`pb::GetUsageResponse`] as JSON (the page token is dropped: pages are merged).
pub fn usage_json(r: &pb::GetUsageResponse) -> UsageJson<'_> {
    UsageJson {
        usage_plan_id: &r.usage_plan_id,
        start_date: &r.start_date,
        end_date: &r.end_date,
        items: r
            .items
            .iter()
            .map(|(key, u)| {
                let days = sorted_days(u)
                    .into_iter()
                    .map(|d| DayJson {
                        date: &d.date,
                        used: d.used,
                        remaining: d.remaining,
                    })
                    .collect();
                (key.as_str(), days)
            })
            .collect(),
    }
}

/// `usage update`.
#[derive(Debug, Serialize)]
pub struct UsageUpdatedJson<'a> {
    usage_plan_id: &'a str,
    key_id: &'a str,
    limit: u64,
    used: u64,
    remaining: u64,
    reset_at: &'a str,
}

/// A token bucket's live state.
#[derive(Debug, Serialize)]
pub struct BucketJson<'a> {
    usage_plan_id: &'a str,
    api_id: &'a str,
    stage: &'a str,
    route: &'a str,
    rate_limit: f64,
    burst_limit: u64,
    remaining: u64,
    full_at: &'a str,
}

/// A quota's live state.
#[derive(Debug, Serialize)]
pub struct QuotaStateJson<'a> {
    usage_plan_id: &'a str,
    limit: u64,
    used: u64,
    remaining: u64,
    period: Option<&'static str>,
    reset_at: &'a str,
}

/// `keys state`.
#[derive(Debug, Serialize)]
pub struct StateJson<'a> {
    key_id: &'a str,
    now: &'a str,
    buckets: Vec<BucketJson<'a>>,
    quotas: Vec<QuotaStateJson<'a>>,
}

/// [`pb::GetThrottleStateResponse`] as JSON.
pub fn state_json(r: &pb::GetThrottleStateResponse) -> StateJson<'_> {
    StateJson {
        key_id: &r.key_id,
        now: &r.now,
        buckets: r
            .buckets
            .iter()
            .map(|b| BucketJson {
                usage_plan_id: &b.usage_plan_id,
                api_id: &b.api_id,
                stage: &b.stage,
                route: &b.route,
                rate_limit: b.rate_limit,
                burst_limit: b.burst_limit,
                remaining: b.remaining,
                full_at: &b.full_at,
            })
            .collect(),
        quotas: r
            .quotas
            .iter()
            .map(|q| QuotaStateJson {
                usage_plan_id: &q.usage_plan_id,
                limit: q.limit,
                used: q.used,
                remaining: q.remaining,
                period: period_name(q.period),
                reset_at: &q.reset_at,
            })
            .collect(),
    }
}

/// `{"items": [...]}` for listings.
#[derive(Debug, Serialize)]
pub(super) struct Items<T> {
    items: Vec<T>,
}

/// `keys import`.
#[derive(Debug, Serialize)]
pub(super) struct ImportedJson<'a> {
    ids: &'a [String],
    warnings: &'a [String],
}

/// `authorizers flush`.
#[derive(Debug, Serialize)]
pub(super) struct FlushedJson<'a> {
    authorizers: &'a [String],
    removed: u64,
}

/// `whoami`.
#[derive(Debug, Serialize)]
pub(super) struct CallerJson<'a> {
    scope: &'static str,
    allowed_rpcs: &'a [String],
    token_fingerprint: &'a str,
}

/// The name of an admin token scope (`read`, `usage`, `admin`).
pub fn admin_scope_name(s: i32) -> &'static str {
    match pb::AdminScope::try_from(s) {
        Ok(pb::AdminScope::Read) => "read",
        Ok(pb::AdminScope::Usage) => "usage",
        Ok(pb::AdminScope::Admin) => "admin",
        _ => "unknown",
    }
}

/// The pretty JSON text of any output (no trailing newline). Fields come in the order the view
/// structs declare them; maps (`method_throttle`, `tags`, usage `items`) are sorted by key.
pub fn json_text(out: &Output) -> Result<String, serde_json::Error> {
    use serde_json::to_string_pretty as pretty;
    match out {
        Output::Plan(p) => pretty(&plan_json(p)),
        Output::Plans(ps) => pretty(&Items {
            items: ps.iter().map(plan_json).collect(),
        }),
        Output::Key(k) | Output::CreatedKey(k) => pretty(&key_json(k)),
        Output::Keys(ks) => pretty(&Items {
            items: ks.iter().map(key_json).collect(),
        }),
        Output::PlanKey(k) => pretty(&plan_key_json(k)),
        Output::PlanKeys(ks) => pretty(&Items {
            items: ks.iter().map(plan_key_json).collect(),
        }),
        Output::Imported(r) => pretty(&ImportedJson {
            ids: &r.ids,
            warnings: &r.warnings,
        }),
        Output::Usage(r) => pretty(&usage_json(r)),
        Output::UsageUpdated(r) => pretty(&UsageUpdatedJson {
            usage_plan_id: &r.usage_plan_id,
            key_id: &r.key_id,
            limit: r.limit,
            used: r.used,
            remaining: r.remaining,
            reset_at: &r.reset_at,
        }),
        Output::ThrottleState(r) => pretty(&state_json(r)),
        Output::Flushed(r) => pretty(&FlushedJson {
            authorizers: &r.authorizers,
            removed: r.removed,
        }),
        Output::Caller(r) => pretty(&CallerJson {
            scope: admin_scope_name(r.scope),
            allowed_rpcs: &r.allowed_rpcs,
            token_fingerprint: &r.token_fingerprint,
        }),
        Output::Done(_) => Ok("{}".into()),
    }
}

/// The JSON value of any output (for assertions).
#[cfg(test)]
pub fn to_json(out: &Output) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::from_str(&json_text(out)?)
}
