//! Rendering admin answers: `--output table` (aligned columns, `field: value` lines) and
//! `--output json` (pretty, stable JSON built by hand from the prost messages, which do not
//! derive serde).
use std::collections::BTreeMap;

use clap::ValueEnum;
use serde::Serialize;
use tollgate_proto::v1 as pb;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// Human-readable columns and `field: value` lines.
    #[default]
    Table,
    /// Pretty JSON.
    Json,
}

/// What a command produced.
#[derive(Debug)]
pub enum Output {
    /// One usage plan.
    Plan(pb::UsagePlan),
    /// Every usage plan.
    Plans(Vec<pb::UsagePlan>),
    /// One API key.
    Key(pb::ApiKey),
    /// A key just created: its value is shown this once.
    CreatedKey(pb::ApiKey),
    /// API keys.
    Keys(Vec<pb::ApiKey>),
    /// A key associated with a plan.
    PlanKey(pb::UsagePlanKey),
    /// A plan's keys.
    PlanKeys(Vec<pb::UsagePlanKey>),
    /// The result of a CSV import.
    Imported(pb::ImportApiKeysResponse),
    /// Usage, every page merged (`next_page_token` empty).
    Usage(pb::GetUsageResponse),
    /// The quota after `usage update`.
    UsageUpdated(pb::UpdateUsageResponse),
    /// A key's live buckets and quotas.
    ThrottleState(pb::GetThrottleStateResponse),
    /// The result of an authorizer cache flush.
    Flushed(pb::FlushAuthorizerCacheResponse),
    /// What the admin token may do (`whoami`).
    Caller(pb::GetCallerInfoResponse),
    /// An empty answer (a delete): `{}` in JSON, this confirmation line in a table.
    Done(String),
}

/// Renders `out` in `format`; the text ends with a newline.
pub fn render(out: &Output, format: Format) -> Result<String, serde_json::Error> {
    match format {
        Format::Json => {
            let mut s = json_text(out)?;
            s.push('\n');
            Ok(s)
        }
        Format::Table => Ok(table(out)),
    }
}

// ---------- enum names ----------

/// `DAY` / `WEEK` / `MONTH`; `None` when unset (no quota applies).
pub fn period_name(p: i32) -> Option<&'static str> {
    match pb::QuotaPeriod::try_from(p) {
        Ok(pb::QuotaPeriod::Day) => Some("DAY"),
        Ok(pb::QuotaPeriod::Week) => Some("WEEK"),
        Ok(pb::QuotaPeriod::Month) => Some("MONTH"),
        _ => None,
    }
}

/// `per_method` / `per_plan` (unset means per method, AWS's default).
pub fn scope_name(s: i32) -> &'static str {
    match pb::ThrottleScope::try_from(s) {
        Ok(pb::ThrottleScope::PerPlan) => "per_plan",
        _ => "per_method",
    }
}

/// `open` / `closed`; `None` when unset (the global failure mode applies).
pub fn failure_name(f: i32) -> Option<&'static str> {
    match pb::FailureMode::try_from(f) {
        Ok(pb::FailureMode::Open) => Some("open"),
        Ok(pb::FailureMode::Closed) => Some("closed"),
        _ => None,
    }
}

// ---------- JSON views ----------

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
fn ms_text(ms: u32) -> String {
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
fn sorted_days(u: &pb::KeyUsage) -> Vec<&pb::DailyUsage> {
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
struct Items<T> {
    items: Vec<T>,
}

/// `keys import`.
#[derive(Debug, Serialize)]
struct ImportedJson<'a> {
    ids: &'a [String],
    warnings: &'a [String],
}

/// `authorizers flush`.
#[derive(Debug, Serialize)]
struct FlushedJson<'a> {
    authorizers: &'a [String],
    removed: u64,
}

/// `whoami`.
#[derive(Debug, Serialize)]
struct CallerJson<'a> {
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

// ---------- tables ----------

/// A tiny column formatter: a header row and cells left-aligned in columns two spaces apart.
/// Empty cells print as `-`; lines carry no trailing spaces.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&'static str]) -> Self {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty, extra ones dropped).
    pub fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.header.len(), String::new());
        for c in &mut cells {
            if c.is_empty() {
                *c = "-".into();
            }
        }
        self.rows.push(cells);
    }

    /// The aligned text, one line per row after the header, each ending in a newline.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = w.saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `field: value` lines with the values aligned; empty values print as `-`.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let v = if v.is_empty() { "-" } else { v.as_str() };
        let pad = width - k.chars().count();
        out.push_str(&format!("{k}:{} {v}\n", " ".repeat(pad)));
    }
    out
}

/// `2 req/s, burst 5`.
fn throttle_text(t: &pb::Throttle) -> String {
    format!("{} req/s, burst {}", t.rate_limit, t.burst_limit)
}

/// `1000 per DAY (offset 10)`.
fn quota_text(q: &pb::Quota) -> String {
    let period = period_name(q.period).unwrap_or("?");
    if q.offset == 0 {
        format!("{} per {period}", q.limit)
    } else {
        format!("{} per {period} (offset {})", q.limit, q.offset)
    }
}

/// `yes` / `no`.
fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// A plan as `field: value` lines; stages and their method throttles indented below.
fn plan_text(p: &pb::UsagePlan) -> String {
    let mut out = fields(&[
        ("id", p.id.clone()),
        ("name", p.name.clone()),
        ("description", p.description.clone()),
        (
            "throttle",
            p.throttle.as_ref().map(throttle_text).unwrap_or_default(),
        ),
        (
            "quota",
            p.quota.as_ref().map(quota_text).unwrap_or_default(),
        ),
        ("throttle_scope", scope_name(p.throttle_scope).into()),
        (
            "failure_mode",
            failure_name(p.failure_mode).unwrap_or("(global)").into(),
        ),
        (
            "local_lease",
            p.local_lease
                .as_ref()
                .map(|l| format!("{} units, max_age {}", l.units, ms_text(l.max_age_ms)))
                .unwrap_or_default(),
        ),
        (
            "metering",
            p.metering
                .as_ref()
                .map(|m| {
                    let mut s = format!(
                        "meter_throttle {}, reservation_ttl {}",
                        yes_no(m.meter_throttle),
                        ms_text(m.reservation_ttl_ms)
                    );
                    if m.min_reservation > 0 {
                        s.push_str(&format!(", min_reservation {}", m.min_reservation));
                    }
                    if m.max_reservation > 0 {
                        s.push_str(&format!(", max_reservation {}", m.max_reservation));
                    }
                    s
                })
                .unwrap_or_default(),
        ),
        ("created_at", p.created_at.clone()),
        ("source", p.source.clone()),
        (
            "api_stages",
            if p.api_stages.is_empty() {
                String::new()
            } else {
                p.api_stages.len().to_string()
            },
        ),
    ]);
    for s in &p.api_stages {
        out.push_str(&format!("  {}:{}\n", s.api_id, s.stage));
        let methods: BTreeMap<&String, &pb::Throttle> = s.method_throttle.iter().collect();
        for (m, t) in methods {
            out.push_str(&format!("    {m}: {}\n", throttle_text(t)));
        }
    }
    out
}

/// A key as `field: value` lines (never the value).
fn key_text(k: &pb::ApiKey) -> String {
    let tags: BTreeMap<&String, &String> = k.tags.iter().collect();
    fields(&[
        ("id", k.id.clone()),
        ("name", k.name.clone()),
        ("identity", k.identity.clone()),
        ("description", k.description.clone()),
        ("enabled", yes_no(k.enabled)),
        ("customer_id", k.customer_id.clone()),
        (
            "tags",
            tags.iter()
                .map(|(a, b)| format!("{a}={b}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("usage_plan_ids", k.usage_plan_ids.join(", ")),
        ("created_at", k.created_at.clone()),
        ("last_updated", k.last_updated.clone()),
        ("source", k.source.clone()),
    ])
}

/// The table text of any output.
pub fn table(out: &Output) -> String {
    match out {
        Output::Plan(p) => plan_text(p),
        Output::Plans(ps) => {
            let mut t = Table::new(&[
                "ID", "NAME", "RATE", "BURST", "QUOTA", "SCOPE", "STAGES", "SOURCE",
            ]);
            for p in ps {
                t.row(vec![
                    p.id.clone(),
                    p.name.clone(),
                    p.throttle
                        .map(|t| t.rate_limit.to_string())
                        .unwrap_or_default(),
                    p.throttle
                        .map(|t| t.burst_limit.to_string())
                        .unwrap_or_default(),
                    p.quota
                        .map(|q| format!("{}/{}", q.limit, period_name(q.period).unwrap_or("?")))
                        .unwrap_or_default(),
                    scope_name(p.throttle_scope).into(),
                    p.api_stages
                        .iter()
                        .map(|s| format!("{}:{}", s.api_id, s.stage))
                        .collect::<Vec<_>>()
                        .join(","),
                    p.source.clone(),
                ]);
            }
            t.render()
        }
        Output::Key(k) => key_text(k),
        Output::CreatedKey(k) => {
            let mut s = key_text(k);
            if !k.value.is_empty() {
                s.push_str(&format!(
                    "\nAPI key value (shown only once; store it now):\n\n    {}\n\n",
                    k.value
                ));
            }
            s
        }
        Output::Keys(ks) => {
            let mut t = Table::new(&[
                "ID", "NAME", "IDENTITY", "ENABLED", "CUSTOMER", "PLANS", "CREATED",
            ]);
            for k in ks {
                t.row(vec![
                    k.id.clone(),
                    k.name.clone(),
                    k.identity.clone(),
                    yes_no(k.enabled),
                    k.customer_id.clone(),
                    k.usage_plan_ids.join(","),
                    k.created_at.clone(),
                ]);
            }
            t.render()
        }
        Output::PlanKey(k) => fields(&[
            ("id", k.id.clone()),
            ("name", k.name.clone()),
            ("type", k.r#type.clone()),
            ("usage_plan_id", k.usage_plan_id.clone()),
            ("enabled", yes_no(k.enabled)),
        ]),
        Output::PlanKeys(ks) => {
            let mut t = Table::new(&["ID", "NAME", "TYPE", "ENABLED"]);
            for k in ks {
                t.row(vec![
                    k.id.clone(),
                    k.name.clone(),
                    k.r#type.clone(),
                    yes_no(k.enabled),
                ]);
            }
            t.render()
        }
        Output::Imported(r) => {
            let mut s = format!("imported {} key(s)", r.ids.len());
            if !r.ids.is_empty() {
                s.push_str(&format!(": {}", r.ids.join(", ")));
            }
            s.push('\n');
            for w in &r.warnings {
                s.push_str(&format!("warning: {w}\n"));
            }
            s
        }
        Output::Usage(r) => {
            let mut t = Table::new(&["KEY", "DATE", "USED", "REMAINING"]);
            let keys: BTreeMap<&String, &pb::KeyUsage> = r.items.iter().collect();
            for (key, u) in keys {
                for d in sorted_days(u) {
                    t.row(vec![
                        key.clone(),
                        d.date.clone(),
                        d.used.to_string(),
                        d.remaining.map(|n| n.to_string()).unwrap_or_default(),
                    ]);
                }
            }
            t.render()
        }
        Output::UsageUpdated(r) => fields(&[
            ("usage_plan_id", r.usage_plan_id.clone()),
            ("key_id", r.key_id.clone()),
            ("limit", r.limit.to_string()),
            ("used", r.used.to_string()),
            ("remaining", r.remaining.to_string()),
            ("reset_at", r.reset_at.clone()),
        ]),
        Output::ThrottleState(r) => {
            let mut s = fields(&[("key_id", r.key_id.clone()), ("now", r.now.clone())]);
            s.push_str("\nbuckets:\n");
            if r.buckets.is_empty() {
                s.push_str("(none)\n");
            } else {
                let mut t = Table::new(&[
                    "PLAN",
                    "API",
                    "STAGE",
                    "ROUTE",
                    "RATE",
                    "BURST",
                    "REMAINING",
                    "FULL_AT",
                ]);
                for b in &r.buckets {
                    t.row(vec![
                        b.usage_plan_id.clone(),
                        b.api_id.clone(),
                        b.stage.clone(),
                        b.route.clone(),
                        b.rate_limit.to_string(),
                        b.burst_limit.to_string(),
                        b.remaining.to_string(),
                        b.full_at.clone(),
                    ]);
                }
                s.push_str(&t.render());
            }
            s.push_str("\nquotas:\n");
            if r.quotas.is_empty() {
                s.push_str("(none)\n");
            } else {
                let mut t =
                    Table::new(&["PLAN", "PERIOD", "LIMIT", "USED", "REMAINING", "RESET_AT"]);
                for q in &r.quotas {
                    t.row(vec![
                        q.usage_plan_id.clone(),
                        period_name(q.period).unwrap_or_default().into(),
                        q.limit.to_string(),
                        q.used.to_string(),
                        q.remaining.to_string(),
                        q.reset_at.clone(),
                    ]);
                }
                s.push_str(&t.render());
            }
            s
        }
        Output::Flushed(r) => fields(&[
            ("authorizers", r.authorizers.join(", ")),
            ("removed", r.removed.to_string()),
        ]),
        Output::Caller(r) => fields(&[
            ("scope", admin_scope_name(r.scope).to_string()),
            ("token", format!("sha256:{}…", r.token_fingerprint)),
            ("allowed", r.allowed_rpcs.join(", ")),
        ]),
        Output::Done(msg) => format!("{msg}\n"),
    }
}
