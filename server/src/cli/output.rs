//! Rendering admin answers: `--output table` (aligned columns, `field: value` lines) and
//! `--output json` (pretty, stable JSON built by hand from the prost messages, which do not
//! derive serde).
use std::collections::BTreeMap;

use clap::ValueEnum;
use serde::Serialize;
use tollgate_proto::v1 as pb;

mod json;
mod table;
pub use json::*;
pub use table::*;

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
