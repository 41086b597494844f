//! `--output table`: aligned columns and `field: value` lines. Part of [`super`].
use super::*;

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
pub(super) fn throttle_text(t: &pb::Throttle) -> String {
    format!("{} req/s, burst {}", t.rate_limit, t.burst_limit)
}

/// `1000 per DAY (offset 10)`.
pub(super) fn quota_text(q: &pb::Quota) -> String {
    let period = period_name(q.period).unwrap_or("?");
    if q.offset == 0 {
        format!("{} per {period}", q.limit)
    } else {
        format!("{} per {period} (offset {})", q.limit, q.offset)
    }
}

/// `yes` / `no`.
pub(super) fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// A plan as `field: value` lines; stages and their method throttles indented below.
pub(super) fn plan_text(p: &pb::UsagePlan) -> String {
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
pub(super) fn key_text(k: &pb::ApiKey) -> String {
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
