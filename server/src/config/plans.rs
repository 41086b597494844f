//! `usage_plans:` and `api_keys:` — throttles, quotas, stages, metering, local leases and key
//! values (literal, `value_env`, `value_file`). Part of the config contract.
use super::*;

/// How a plan's per-key bucket is scoped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleScope {
    /// One bucket per key per method (AWS default).
    #[default]
    PerMethod,
    /// One bucket per key per plan.
    PerPlan,
}

/// `usage_plans[].quota`
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Requests per period.
    pub limit: u64,
    /// DAY | WEEK | MONTH.
    pub period: Period,
    /// Subtracted from the limit in the plan's initial period.
    #[serde(default)]
    pub offset: u64,
}

/// `usage_plans[].api_stages[]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanStageConfig {
    /// API id.
    pub api_id: String,
    /// Stage name.
    pub stage: String,
    /// `"/resource/path/METHOD"` → limit (`*` for any path or method).
    #[serde(default)]
    pub method_throttle: BTreeMap<String, ThrottleConfig>,
}

/// `usage_plans[]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UsagePlanConfig {
    /// Plan id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Per-key token bucket.
    pub throttle: Option<ThrottleConfig>,
    /// Per-key period quota.
    pub quota: Option<QuotaConfig>,
    /// Bucket scope.
    #[serde(default)]
    pub throttle_scope: ThrottleScope,
    /// Overrides the global failure mode for this plan's keys.
    pub failure_mode: Option<FailureMode>,
    /// Start of the plan's initial quota period (`YYYY-MM-DD` or RFC 3339); where `offset`
    /// applies. Default: when the store first saw the plan.
    pub created_at: Option<String>,
    /// The stages the plan covers.
    #[serde(default)]
    pub api_stages: Vec<PlanStageConfig>,
    /// Hot keys (opt-in): each instance takes `units` at once from the store and spends them
    /// locally. Off by default (every check exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_lease: Option<LocalLeaseConfig>,
    /// Metered costs (`ReportUsage`): what a report adjusts besides the quota and the daily
    /// usage. Absent: the quota and the usage only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metering: Option<MeteringConfig>,
}

/// `usage_plans[].metering`: how `ReportUsage` settles a reservation of this plan's keys.
/// Present (even empty), the keys' checks with a `request_id` are reservations: one nobody
/// reports is released in full after `reservation_ttl` (by whichever instance sweeps first;
/// the reservation's ticket is in the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MeteringConfig {
    /// Adjust the key's own token buckets by `actual - reserved` too (TAT back or forward by
    /// that many units). Stage-wide buckets are never adjusted.
    #[serde(default)]
    pub meter_throttle: bool,
    /// How long a reservation waits for its report before it is released (1s to
    /// [`MAX_RESERVATION_TTL`], the default: the idempotency record lives 600 s and the
    /// release needs it).
    #[serde(with = "duration", default = "default_reservation_ttl")]
    pub reservation_ttl: Duration,
    /// The least a reservation of this plan's keys holds: a check with a `request_id` and a
    /// smaller `cost` reserves this many units instead (on every path: `CheckRequest`, the
    /// client layer, Envoy `meter` routes), so a caller cannot reserve 1 and be post-paid far
    /// past the quota. 1 to [`MAX_RESERVATION`](validate::MAX_RESERVATION); absent: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_reservation: Option<u64>,
    /// The most one reservation may hold: a check with a `request_id` and a larger `cost` is
    /// refused (`INVALID_ARGUMENT`; 400 through Envoy). At least `min_reservation`, at most
    /// [`MAX_RESERVATION`](validate::MAX_RESERVATION); absent: the cost limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_reservation: Option<u64>,
}

impl Default for MeteringConfig {
    fn default() -> Self {
        Self {
            meter_throttle: false,
            reservation_ttl: MAX_RESERVATION_TTL,
            min_reservation: None,
            max_reservation: None,
        }
    }
}

/// The longest (and default) `metering.reservation_ttl`: the idempotency record's 600 s less
/// the release margin.
pub const MAX_RESERVATION_TTL: Duration =
    Duration::from_millis(crate::limiter::IDEMPOTENCY_TTL_MS - crate::limiter::RELEASE_MARGIN_MS);

pub(super) fn default_reservation_ttl() -> Duration {
    MAX_RESERVATION_TTL
}

/// `usage_plans[].local_lease`: an instance takes `units` requests' worth of the key's buckets
/// and quota in one store call and admits the next requests of that key locally, until they
/// are spent or `max_age` passes (what is left then goes back to the store). Bound: at any
/// moment at most `units` × instances requests are admitted ahead of the store's own
/// schedule (never beyond the quota: leased units are already counted); a lease another
/// instance holds can make a key wait up to `max_age` for units it does not use.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalLeaseConfig {
    /// Units (requests of cost 1) one store call takes.
    pub units: u64,
    /// How long an instance may spend a lease.
    #[serde(with = "duration", default = "default_lease_max_age")]
    pub max_age: Duration,
}

/// A secret scalar as a string (a numeric password is a password too); an error never echoes
/// the value.
pub(super) fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d) {
        Ok(Value::String(s)) => Ok(Some(s)),
        Ok(Value::Number(n)) => Ok(Some(n.to_string())),
        Ok(Value::Bool(b)) => Ok(Some(b.to_string())),
        Ok(Value::Null) => Ok(None),
        _ => Err(serde::de::Error::custom("expected a string")),
    }
}

pub(super) fn default_lease_max_age() -> Duration {
    LocalLeaseConfig::DEFAULT_MAX_AGE
}

impl LocalLeaseConfig {
    /// `max_age` when none is given.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_millis(500);
}

/// `api_keys[]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Key id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Env var holding the value (wins over `value_file` and `value`).
    pub value_env: Option<String>,
    /// File holding the value (trimmed).
    pub value_file: Option<PathBuf>,
    /// Literal value: for local demos only.
    pub value: Option<String>,
    /// AWS defaults to disabled.
    #[serde(default)]
    pub enabled: bool,
    /// External customer id.
    pub customer_id: Option<String>,
    /// Plan ids.
    #[serde(default)]
    pub usage_plans: Vec<String>,
    /// The value, resolved from `value_env` / `value` by [`parse`] and from `value_file` by
    /// [`crate::preflight`] (empty until then).
    #[serde(skip)]
    pub resolved_value: String,
}

/// Where an API key's value comes from, by the precedence of its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValue {
    /// `value_env` (set and non-empty) or the literal `value`.
    Known(String),
    /// `value_file`, as written (the preflight resolves it against the config's directory
    /// and reads it).
    File(PathBuf),
}

impl ApiKeyConfig {
    /// Where this key's value comes from: `value_env` when the variable is set and non-empty,
    /// else `value_file`, else `value`.
    pub fn value_source(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<KeyValue, String> {
        if let Some(var) = &self.value_env
            && let Some(v) = env(var).filter(|v| !v.is_empty())
        {
            return Ok(KeyValue::Known(v));
        }
        if let Some(file) = &self.value_file {
            return Ok(KeyValue::File(file.clone()));
        }
        if let Some(v) = &self.value {
            return Ok(KeyValue::Known(v.clone()));
        }
        match &self.value_env {
            Some(var) => Err(format!("environment variable {var} (value_env) is not set")),
            None => Err("one of value_env, value_file or value is required".into()),
        }
    }
}
