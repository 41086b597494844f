//! `envoy:` (how Envoy's ext_authz and Rate Limit Service requests map onto APIs and keys) and
//! `descriptors:` (generic descriptor rules in the format of Envoy's own ratelimit service, so
//! its config files can be pasted in).
use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use super::validate::valid_id;
use crate::limiter::Limit;
use crate::limiter::gcra::{LimitError, MAX_BURST, MAX_RATE};

/// Default header ext_authz reads the API key from.
pub const DEFAULT_API_KEY_HEADER: &str = "x-api-key";
/// Deepest `descriptors:` nesting accepted.
pub const MAX_DESCRIPTOR_DEPTH: usize = 8;

/// `envoy:`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvoyConfig {
    /// ext_authz: the API when the route's `context_extensions` has no `api_id`.
    pub api_id: Option<String>,
    /// ext_authz and RLS: the stage when none is given (`context_extensions["stage"]`, or a
    /// `stage` descriptor entry).
    pub stage: Option<String>,
    /// ext_authz: the header holding the API key (lower case, as Envoy sends headers).
    pub api_key_header: String,
    /// ext_authz: on allow, add `x-tollgate-*` identity headers to the upstream request.
    pub identity_headers: bool,
    /// RLS: how a descriptor whose `api_key` names no usable key is answered.
    pub unknown_key: UnknownKey,
}

impl Default for EnvoyConfig {
    fn default() -> Self {
        Self {
            api_id: None,
            stage: None,
            api_key_header: DEFAULT_API_KEY_HEADER.into(),
            identity_headers: true,
            unknown_key: UnknownKey::Deny,
        }
    }
}

/// `envoy.unknown_key`: RLS descriptors naming an API key that is unknown, disabled, or not in a
/// usage plan for the stage (or a route the stage does not have).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnknownKey {
    /// `OVER_LIMIT`: Envoy answers 429. Pair with ext_authz for AWS's 403.
    #[default]
    Deny,
    /// `OK`: not limited here (ext_authz, or nothing, rejects it).
    Allow,
    /// Evaluated against the domain's generic `descriptors:` rules, like a descriptor without
    /// an `api_key` entry (e.g. an anonymous tier keyed on `remote_address`).
    Descriptors,
}

/// `descriptors[]`: one domain's rules, the same shape as a config file of Envoy's ratelimit
/// service (`domain` + `descriptors`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptorDomainConfig {
    /// The `domain` of the Envoy rate-limit filter.
    pub domain: String,
    /// Rules, matched entry by entry.
    #[serde(default)]
    pub descriptors: Vec<DescriptorConfig>,
}

/// One descriptor rule (and its nested rules).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptorConfig {
    /// The entry key, e.g. `remote_address`, `generic_key`, `header_match`.
    pub key: String,
    /// The entry value; absent = any value, each value counted on its own.
    pub value: Option<String>,
    /// The limit when the request's descriptor ends at this entry.
    pub rate_limit: Option<DescriptorLimitConfig>,
    /// Rules for the next entry.
    #[serde(default)]
    pub descriptors: Vec<DescriptorConfig>,
    /// Count and report, never answer `OVER_LIMIT`.
    #[serde(default)]
    pub shadow_mode: bool,
    /// Accepted for compatibility with Envoy's ratelimit service; no effect here.
    #[serde(default)]
    pub detailed_metric: bool,
}

/// `rate_limit:` of a descriptor rule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptorLimitConfig {
    /// `second` | `minute` | `hour` | `day` | `week` | `month` (30 days) | `year` (365 days).
    pub unit: Option<RateUnit>,
    /// Requests per unit: the bucket's capacity, refilled over one unit.
    #[serde(default)]
    pub requests_per_unit: u64,
    /// No limit: the descriptor always answers OK (and stops the match).
    #[serde(default)]
    pub unlimited: bool,
    /// A name reported in the answer's `current_limit`.
    pub name: Option<String>,
}

/// The unit of a descriptor limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RateUnit {
    /// One second.
    #[serde(alias = "second", alias = "SECOND")]
    Second,
    /// One minute.
    #[serde(alias = "minute", alias = "MINUTE")]
    Minute,
    /// One hour.
    #[serde(alias = "hour", alias = "HOUR")]
    Hour,
    /// One day.
    #[serde(alias = "day", alias = "DAY")]
    Day,
    /// Seven days.
    #[serde(alias = "week", alias = "WEEK")]
    Week,
    /// Thirty days.
    #[serde(alias = "month", alias = "MONTH")]
    Month,
    /// 365 days.
    #[serde(alias = "year", alias = "YEAR")]
    Year,
}

impl RateUnit {
    /// The unit's length.
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            RateUnit::Second => 1,
            RateUnit::Minute => 60,
            RateUnit::Hour => 3600,
            RateUnit::Day => 86_400,
            RateUnit::Week => 7 * 86_400,
            RateUnit::Month => 30 * 86_400,
            RateUnit::Year => 365 * 86_400,
        })
    }
}

impl DescriptorLimitConfig {
    /// The token bucket that enforces it: capacity `requests_per_unit`, refilled at
    /// `requests_per_unit` per unit. `None` for `unlimited`.
    pub fn limit(&self) -> Result<Option<Limit>, String> {
        if self.unlimited {
            return Ok(None);
        }
        let unit = self
            .unit
            .ok_or("unit is required (second, minute, hour, day, week, month, year)")?;
        if self.requests_per_unit == 0 {
            return Err("requests_per_unit must be at least 1 (or set unlimited: true)".into());
        }
        Limit::per_window(self.requests_per_unit, unit.duration().as_micros() as u64)
            .map(Some)
            .map_err(|e| match e {
                LimitError::Burst(n) => {
                    format!("requests_per_unit must be 1..={MAX_BURST}, got {n}")
                }
                LimitError::Rate(r) => {
                    format!("{r} requests per second is above the limit of {MAX_RATE}")
                }
            })
    }
}

/// Checks `envoy:` against the APIs (`stages`: every (api, stage)).
pub fn validate_envoy(
    e: &EnvoyConfig,
    apis: &HashSet<&str>,
    stages: &HashSet<(&str, &str)>,
    errors: &mut Vec<String>,
) {
    if let Some(api) = &e.api_id
        && !apis.contains(api.as_str())
    {
        errors.push(format!("envoy.api_id: no api {api:?} in apis"));
    }
    if let (Some(api), Some(stage)) = (&e.api_id, &e.stage)
        && apis.contains(api.as_str())
        && !stages.contains(&(api.as_str(), stage.as_str()))
    {
        errors.push(format!("envoy.stage: api {api:?} has no stage {stage:?}"));
    }
    if let Some(stage) = &e.stage
        && !valid_id(stage)
    {
        errors.push(format!("envoy.stage: {stage:?} is not a valid stage name"));
    }
    let h = &e.api_key_header;
    if h.is_empty()
        || h.len() > 256
        || !h
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        errors.push(format!(
            "envoy.api_key_header: {h:?} is not a header name (letters, digits, '-', '_', '.')"
        ));
    }
}

/// Checks `descriptors:`: domains unique, every rule well formed.
pub fn validate_descriptors(domains: &[DescriptorDomainConfig], errors: &mut Vec<String>) {
    let mut seen = HashSet::new();
    for (i, d) in domains.iter().enumerate() {
        let at = format!("descriptors[{i}]");
        if d.domain.is_empty() || d.domain.len() > 128 {
            errors.push(format!("{at}.domain: 1 to 128 characters"));
        }
        if !seen.insert(d.domain.as_str()) {
            errors.push(format!(
                "{at}.domain: {:?} appears more than once",
                d.domain
            ));
        }
        rules(&d.descriptors, &format!("{at}.descriptors"), 1, errors);
    }
}

fn rules(list: &[DescriptorConfig], at: &str, depth: usize, errors: &mut Vec<String>) {
    if depth > MAX_DESCRIPTOR_DEPTH {
        errors.push(format!(
            "{at}: nested deeper than {MAX_DESCRIPTOR_DEPTH} levels"
        ));
        return;
    }
    let mut seen = HashSet::new();
    for (i, r) in list.iter().enumerate() {
        let rat = format!("{at}[{i}]");
        if r.key.is_empty() || r.key.len() > 256 {
            errors.push(format!("{rat}.key: 1 to 256 characters"));
        }
        if r.value.as_ref().is_some_and(|v| v.len() > 1024) {
            errors.push(format!("{rat}.value: at most 1024 characters"));
        }
        if !seen.insert((r.key.as_str(), r.value.as_deref())) {
            errors.push(format!(
                "{rat}: duplicate rule for key {:?} value {:?}",
                r.key, r.value
            ));
        }
        if let Some(l) = &r.rate_limit
            && let Err(e) = l.limit()
        {
            errors.push(format!("{rat}.rate_limit: {e}"));
        }
        if r.rate_limit.is_none() && r.descriptors.is_empty() {
            errors.push(format!(
                "{rat}: has neither rate_limit nor nested descriptors"
            ));
        }
        rules(
            &r.descriptors,
            &format!("{rat}.descriptors"),
            depth + 1,
            errors,
        );
    }
}
