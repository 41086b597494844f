//! Whole-config validation: every rule, every error, one pass, over the typed values alone.
//!
//! Nothing here reads a file or builds a TLS config: the files the config names (TLS
//! certificates, JWKS, SigV4 credentials, `value_file`s) are checked by [`crate::preflight`].
//! Like the rest of `config`, this module imports only leaves (`limiter`, `routes`, `ids`).
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::authorizer::{MAX_REFRESH_INTERVAL, MAX_RESULT_TTL, MIN_REFRESH_INTERVAL};
use super::{ApiKeyConfig, AuthorizerKind, Config, StoreKind, ThrottleConfig, UsagePlanConfig};
use crate::limiter::Limit;
use crate::routes::Template;

/// HTTP methods a route may name.
pub const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "ANY",
];
pub use crate::limiter::quota::MAX_QUOTA_LIMIT;
/// The largest `metering.min_reservation` / `max_reservation`: a check's cost limit
/// (`api::limits::MAX_COST`, which asserts they agree).
pub const MAX_RESERVATION: u64 = 1_000_000;
/// Longest daily-usage retention.
pub const MAX_USAGE_RETENTION_DAYS: u64 = 3660;
/// Names (plans, keys): AWS's bound.
pub const MAX_NAME_LEN: usize = 1024;
/// Descriptions.
pub const MAX_DESCRIPTION_LEN: usize = 4096;
/// Method throttles per plan stage (AWS's cap).
pub const MAX_METHOD_THROTTLES: usize = 20;
/// API key values: AWS's bounds.
pub const KEY_VALUE_MIN: usize = 20;
/// See [`KEY_VALUE_MIN`].
pub const KEY_VALUE_MAX: usize = 128;

/// Ids (api, stage, plan, key, authorizer): 1..=128 of `[A-Za-z0-9._-]`, so they are safe inside
/// Redis hash tags and metric-free log lines.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses `YYYY-MM-DD` or an RFC 3339 timestamp into microseconds since the epoch.
pub fn parse_timestamp(s: &str) -> Result<u64, String> {
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    humantime::parse_rfc3339_weak(full.trim_end_matches('Z'))
        .map_err(|e| format!("invalid timestamp {s:?}: {e}"))
        .and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .map_err(|_| format!("timestamp {s:?} is before 1970"))
        })
}

fn limit(t: &ThrottleConfig, at: &str, errors: &mut Vec<String>) {
    if let Err(e) = Limit::try_new(t.rate_limit, t.burst_limit) {
        errors.push(format!("{at}: {e}"));
    }
}

fn id(kind: &str, s: &str, errors: &mut Vec<String>) {
    if !valid_id(s) {
        errors.push(format!(
            "{kind} {s:?}: ids are 1-128 characters of A-Z a-z 0-9 . _ -"
        ));
    }
}

/// Splits a `method_throttle` key `"/resource/path/METHOD"` into (resource, method).
/// `"//GET"` is the root; `*` stands for any resource or method (`"*/*"`).
pub fn split_method_key(key: &str) -> Option<(&str, &str)> {
    let (res, method) = key.rsplit_once('/')?;
    let res = if res.is_empty() { "/" } else { res };
    if method.is_empty() || res.is_empty() {
        return None;
    }
    Some((res, method))
}

/// Most units one `local_lease` takes.
pub const MAX_LEASE_UNITS: u64 = 100_000;

/// Most URLs a `store.url` list may hold.
pub const MAX_STORE_URLS: usize = 64;

fn validate_store(s: &super::StoreConfig, errors: &mut Vec<String>) {
    let kind = match s.kind {
        StoreKind::Memory => return,
        StoreKind::Redis => "redis",
        StoreKind::RedisCluster => "redis-cluster",
        StoreKind::RedisSentinel => "redis-sentinel",
    };
    let urls = s.url.as_ref().map(|u| u.0.as_slice()).unwrap_or_default();
    if urls.is_empty() || urls.iter().all(String::is_empty) {
        errors.push(format!("store.url: required when store.kind is {kind}"));
        return;
    }
    if urls.len() > MAX_STORE_URLS {
        errors.push(format!("store.url: at most {MAX_STORE_URLS} URLs"));
    }
    let unix = s.kind == StoreKind::Redis;
    for u in urls {
        let ok = u.starts_with("redis://")
            || u.starts_with("rediss://")
            || (unix && u.starts_with("redis+unix://"));
        if !ok {
            errors.push(if unix {
                "store.url: expected redis://, rediss:// or redis+unix://".into()
            } else {
                format!("store.url: expected redis:// or rediss:// URLs for {kind}")
            });
            break;
        }
    }
    if s.kind == StoreKind::Redis && urls.len() > 1 {
        errors.push(
            "store.url: one URL for kind redis (a list is for redis-cluster seeds or \
             redis-sentinel sentinels)"
                .into(),
        );
    }
    let tls: Vec<bool> = urls.iter().map(|u| u.starts_with("rediss://")).collect();
    if tls.iter().any(|t| *t) && !tls.iter().all(|t| *t) {
        errors.push("store.url: mix of redis:// and rediss:// URLs".into());
    }
    match (s.kind, &s.master_name) {
        (StoreKind::RedisSentinel, None) => {
            errors.push("store.master_name: required when store.kind is redis-sentinel".into())
        }
        (StoreKind::RedisSentinel, Some(m)) if m.is_empty() || m.len() > 128 => {
            errors.push("store.master_name: 1-128 characters".into())
        }
        (StoreKind::RedisSentinel, Some(_)) => {}
        (_, Some(_)) => errors.push(format!(
            "store.master_name: only for redis-sentinel (store.kind is {kind})"
        )),
        (_, None) => {}
    }
    if let Some(t) = &s.tls {
        if !tls.iter().all(|t| *t) {
            errors.push("store.tls: needs rediss:// URLs".into());
        }
        if t.cert_file.is_some() != t.key_file.is_some() {
            errors.push("store.tls: cert_file and key_file go together".into());
        }
    }
}

/// Largest `server.pending_connections_per_source`: the listener's bound on connections
/// waiting for their first byte, all sources together (`listener::MAX_PENDING`).
pub const MAX_PENDING_CONNECTIONS_PER_SOURCE: usize = 1024;

pub(crate) fn validate(c: &Config, errors: &mut Vec<String>) {
    // server
    if c.server.admin_tls.is_some() && c.server.admin_on_grpc() {
        errors.push(
            "server.admin_tls: the admin API is served on grpc_addr (admin_addr equals it), \
             with server.tls; give it its own admin_addr to use other TLS settings"
                .into(),
        );
    }

    // store
    validate_store(&c.store, errors);
    if c.store.pool_size == 0 || c.store.pool_size > 4096 {
        errors.push("store.pool_size: must be 1..=4096".into());
    }
    let s = &c.server;
    if s.first_byte_timeout < Duration::from_millis(100)
        || s.first_byte_timeout > Duration::from_secs(60)
    {
        errors.push("server.first_byte_timeout: 100ms to 60s".into());
    }
    if !(1..=MAX_PENDING_CONNECTIONS_PER_SOURCE).contains(&s.pending_connections_per_source) {
        errors.push(format!(
            "server.pending_connections_per_source: 1 to {MAX_PENDING_CONNECTIONS_PER_SOURCE}"
        ));
    }
    if !s.http2_keepalive_interval.is_zero()
        && (s.http2_keepalive_interval < Duration::from_secs(1)
            || s.http2_keepalive_interval > Duration::from_secs(86_400))
    {
        errors.push("server.http2_keepalive_interval: 1s to 24h (0s turns the pings off)".into());
    }
    if s.http2_keepalive_timeout < Duration::from_secs(1)
        || s.http2_keepalive_timeout > Duration::from_secs(600)
    {
        errors.push("server.http2_keepalive_timeout: 1s to 10m".into());
    }
    if !s.idle_timeout.is_zero()
        && (s.idle_timeout < Duration::from_secs(1)
            || s.idle_timeout > Duration::from_secs(7 * 86_400))
    {
        errors.push("server.idle_timeout: 1s to 7d (0s never closes an idle connection)".into());
    }
    if c.server.worker_threads > 1024 {
        errors.push("server.worker_threads: at most 1024 (0 = one per CPU)".into());
    }
    if c.store.over_limit_cache > 10_000_000 {
        errors.push("store.over_limit_cache: at most 10000000 owners (0 turns it off)".into());
    }
    let cb = c.store.circuit_breaker;
    if cb.failures > 1_000_000 {
        errors.push("store.circuit_breaker.failures: at most 1000000 (0 turns it off)".into());
    }
    if cb.failures > 0
        && (cb.open_for < Duration::from_millis(10) || cb.open_for > Duration::from_secs(600))
    {
        errors.push("store.circuit_breaker.open_for: 10ms to 10m".into());
    }
    if c.store.timeout.is_zero() {
        errors.push("store.timeout: must be above zero".into());
    }
    if !valid_id(&c.store.key_prefix) {
        errors.push("store.key_prefix: 1-128 characters of A-Z a-z 0-9 . _ -".into());
    }
    let days = c.store.usage_retention.as_secs() / 86_400;
    if !c.store.usage_retention.as_secs().is_multiple_of(86_400)
        || c.store.usage_retention.subsec_nanos() != 0
        || !(1..=MAX_USAGE_RETENTION_DAYS).contains(&days)
    {
        errors.push(format!(
            "store.usage_retention: whole days from 1d to {MAX_USAGE_RETENTION_DAYS}d"
        ));
    }

    // authorizers
    let mut authorizers = HashSet::new();
    for a in &c.authorizers {
        let at = format!("authorizers[{}]", a.name);
        id("authorizer", &a.name, errors);
        if !authorizers.insert(a.name.as_str()) {
            errors.push(format!("authorizers: duplicate name {:?}", a.name));
        }
        if let Err(e) = super::authorizer::sources_of(a) {
            errors.push(format!("{at}: {e}"));
        }
        if let Some(ns) = &a.identity_namespace
            && !valid_id(ns)
        {
            errors.push(format!(
                "{at}.identity_namespace: 1-128 characters of A-Z a-z 0-9 . _ -"
            ));
        }
        if a.result_ttl.is_some_and(|t| t > MAX_RESULT_TTL) {
            errors.push(format!("{at}.result_ttl: at most 3600s"));
        }
        if let Some(r) = a.jwks_refresh {
            if a.kind != AuthorizerKind::Jwt {
                errors.push(format!("{at}.jwks_refresh: only for type jwt"));
            }
            if r.min_interval < MIN_REFRESH_INTERVAL {
                errors.push(format!("{at}.jwks_refresh.min_interval: at least 1s"));
            }
            if r.max_interval > MAX_REFRESH_INTERVAL {
                errors.push(format!("{at}.jwks_refresh.max_interval: at most 24h"));
            }
            if r.min_interval > r.max_interval {
                errors.push(format!(
                    "{at}.jwks_refresh: min_interval must not exceed max_interval"
                ));
            }
        }
        let missing = |what: &str, errors: &mut Vec<String>| {
            errors.push(format!("{at}: {what} is required for type {:?}", a.kind))
        };
        match a.kind {
            AuthorizerKind::Jwt => {
                if a.issuer.is_none() {
                    missing("issuer", errors);
                }
                if a.jwks_file.is_some() == a.jwks_url.is_some() {
                    errors.push(format!(
                        "{at}: exactly one of jwks_file and jwks_url is required"
                    ));
                }
            }
            AuthorizerKind::Token | AuthorizerKind::Request => {
                match a.endpoint.as_deref() {
                    None => missing("endpoint", errors),
                    Some(e) if !(e.starts_with("http://") || e.starts_with("https://")) => errors
                        .push(format!(
                            "{at}.endpoint: expected an http:// or https:// URL"
                        )),
                    Some(_) => {}
                }
                if let Some(re) = &a.validation_regex
                    && let Err(e) = regex::Regex::new(re)
                {
                    errors.push(format!("{at}.validation_regex: {e}"));
                }
            }
            AuthorizerKind::Sigv4 => {
                if a.credentials_file.is_none() {
                    missing("credentials_file", errors);
                }
            }
        }
    }

    // apis, stages, routes
    let mut stages: HashMap<(&str, &str), Vec<(&str, &str)>> = HashMap::new();
    let mut api_ids = HashSet::new();
    for api in &c.apis {
        id("api", &api.id, errors);
        if !api_ids.insert(api.id.as_str()) {
            errors.push(format!("apis: duplicate id {:?}", api.id));
        }
        for st in &api.stages {
            let at = format!("apis[{}].stages[{}]", api.id, st.name);
            id("stage", &st.name, errors);
            if let Some(t) = &st.throttle {
                limit(t, &format!("{at}.throttle"), errors);
            }
            let mut seen = HashSet::new();
            let mut routes = Vec::new();
            for r in &st.routes {
                let rat = format!("{at}.routes[{} {}]", r.method, r.path);
                if !METHODS.contains(&r.method.as_str()) {
                    errors.push(format!(
                        "{rat}: method must be one of {}",
                        METHODS.join(", ")
                    ));
                }
                if let Err(e) = Template::parse(&r.path) {
                    errors.push(format!("{rat}: {e}"));
                }
                if !seen.insert((r.method.as_str(), r.path.as_str())) {
                    errors.push(format!("{rat}: duplicate route"));
                }
                if let Some(a) = &r.authorizer
                    && !authorizers.contains(a.as_str())
                {
                    errors.push(format!("{rat}: unknown authorizer {a:?}"));
                }
                if let Some(t) = &r.throttle {
                    limit(t, &format!("{rat}.throttle"), errors);
                }
                let ident = r.usage_identifier.as_ref().unwrap_or(&st.usage_identifier);
                if r.api_key_required && *ident != super::UsageIdentifier::ApiKey {
                    errors.push(format!(
                        "{rat}: api_key_required with a usage_identifier other than api_key \
                         (the identity's usage plan meters this route; set usage_identifier: \
                         api_key on the route to meter it by key)"
                    ));
                }
                routes.push((r.method.as_str(), r.path.as_str()));
            }
            if stages
                .insert((api.id.as_str(), st.name.as_str()), routes)
                .is_some()
            {
                errors.push(format!("{at}: duplicate stage"));
            }
        }
    }

    // envoy, descriptors
    let stage_set: HashSet<(&str, &str)> = stages.keys().copied().collect();
    super::envoy::validate_envoy(&c.envoy, &api_ids, &stage_set, errors);
    super::envoy::validate_descriptors(&c.descriptors, errors);

    for api in &c.apis {
        for st in &api.stages {
            let Some(p) = &st.default_usage_plan else {
                continue;
            };
            let at = format!("apis[{}].stages[{}].default_usage_plan", api.id, st.name);
            match c.usage_plans.iter().find(|up| &up.id == p) {
                None => errors.push(format!(
                    "{at}: unknown usage plan {p:?} (a plan of this file)"
                )),
                Some(up)
                    if !up
                        .api_stages
                        .iter()
                        .any(|s| s.api_id == api.id && s.stage == st.name) =>
                {
                    errors.push(format!(
                        "{at}: plan {p:?} does not list this stage in its api_stages"
                    ))
                }
                Some(_) => {}
            }
            let by_identity = st.usage_identifier != super::UsageIdentifier::ApiKey
                || st.routes.iter().any(|r| {
                    r.usage_identifier
                        .as_ref()
                        .is_some_and(|u| *u != super::UsageIdentifier::ApiKey)
                });
            if !by_identity {
                errors.push(format!(
                    "{at}: only where the stage or one of its routes has a usage_identifier \
                     other than api_key"
                ));
            }
        }
    }

    // usage plans
    let mut plan_stages: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
    for p in &c.usage_plans {
        let at = format!("usage_plans[{}]", p.id);
        if plan_stages.contains_key(p.id.as_str()) {
            errors.push(format!("{at}: duplicate id"));
        }
        validate_plan(p, &at, &stages, errors);
        plan_stages.insert(
            p.id.as_str(),
            p.api_stages
                .iter()
                .map(|s| (s.api_id.as_str(), s.stage.as_str()))
                .collect(),
        );
    }

    // api keys
    let mut key_ids = HashSet::new();
    for k in &c.api_keys {
        let at = format!("api_keys[{}]", k.id);
        id("api key", &k.id, errors);
        if crate::ids::is_identity_key_id(&k.id) {
            errors.push(format!(
                "{at}: i- and 24 hex digits is the shape of identity ids"
            ));
        }
        if !key_ids.insert(k.id.as_str()) {
            errors.push(format!("{at}: duplicate id"));
        }
        one_plan_per_stage(&at, &k.usage_plans, &plan_stages, errors);
    }
    // The values the parse knows; those of `value_file`s are checked once the preflight has
    // read them.
    key_values(&c.api_keys, &|k| !k.resolved_value.is_empty(), errors);

    // identities
    let mut identities = HashSet::new();
    let namespaces = c.identity_namespaces();
    for (i, ident) in c.identities.iter().enumerate() {
        let at = format!("identities[{i}]");
        match super::canonical_identity(&namespaces, &ident.identity) {
            Err(e) => errors.push(format!("{at}: {e}")),
            Ok(canonical) => {
                if !identities.insert(canonical) {
                    errors.push(format!("{at}: duplicate identity {:?}", ident.identity));
                }
            }
        }
        if ident.name.len() > MAX_NAME_LEN {
            errors.push(format!("{at}.name: at most {MAX_NAME_LEN} characters"));
        }
        if ident.description.len() > MAX_DESCRIPTION_LEN {
            errors.push(format!(
                "{at}.description: at most {MAX_DESCRIPTION_LEN} characters"
            ));
        }
        one_plan_per_stage(&at, &ident.usage_plans, &plan_stages, errors);
    }
}

/// Checks API key values: their length, and that no two keys share one. A key's problems are
/// reported only when `report(key)` holds, a shared value when it holds for either key: the
/// parse reports the values it knows (`value_env`, `value`), the preflight those it read from
/// `value_file`s, so none is reported twice. Keys without a value yet (empty) are skipped.
pub fn key_values(
    keys: &[ApiKeyConfig],
    report: &dyn Fn(&ApiKeyConfig) -> bool,
    errors: &mut Vec<String>,
) {
    let mut values: HashMap<&str, &ApiKeyConfig> = HashMap::new();
    for k in keys {
        let v = &k.resolved_value;
        if v.is_empty() {
            continue;
        }
        let at = format!("api_keys[{}]", k.id);
        if report(k) {
            if v.len() < KEY_VALUE_MIN {
                errors.push(format!(
                    "{at}: API Key value should be at least {KEY_VALUE_MIN} characters"
                ));
            } else if v.len() > KEY_VALUE_MAX {
                errors.push(format!(
                    "{at}: API Key value exceeds maximum size of {KEY_VALUE_MAX} characters"
                ));
            }
        }
        match values.get(v.as_str()) {
            Some(first) if report(k) || report(first) => {
                errors.push(format!("{at}: another key has the same value"));
            }
            Some(_) => {}
            None => {
                values.insert(v.as_str(), k);
            }
        }
    }
}

/// At most 64 characters of `s`, for messages.
pub fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Longest identity string (`claim:<name>=<value>`).
pub const MAX_IDENTITY_LEN: usize = 1024;

/// Checks an identity string: `principal=<value>` or `claim:<name>=<value>`, value non-empty,
/// at most [`MAX_IDENTITY_LEN`] bytes, no control characters.
pub fn validate_identity(identity: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "identity {:?}: expected principal=<value> or claim:<name>=<value>",
            identity.chars().take(64).collect::<String>()
        )
    };
    if identity.len() > MAX_IDENTITY_LEN {
        return Err(format!("identity: at most {MAX_IDENTITY_LEN} bytes"));
    }
    if identity.chars().any(char::is_control) {
        return Err("identity: control characters are not allowed".into());
    }
    let identity = super::namespaced(identity).map_or(identity, |(_, rest)| rest);
    let (kind, value) = identity.split_once('=').ok_or_else(bad)?;
    if value.is_empty() || super::UsageIdentifier::parse(kind).is_err() || kind == "api_key" {
        return Err(bad());
    }
    Ok(())
}

/// A key's or identity's plans: each known, at most one per api stage.
fn one_plan_per_stage(
    at: &str,
    plans: &[String],
    plan_stages: &HashMap<&str, Vec<(&str, &str)>>,
    errors: &mut Vec<String>,
) {
    let mut stage_plan: HashMap<(&str, &str), &str> = HashMap::new();
    for plan in plans {
        let Some(covered) = plan_stages.get(plan.as_str()) else {
            errors.push(format!("{at}: unknown usage plan {plan:?}"));
            continue;
        };
        for st in covered {
            if let Some(other) = stage_plan.insert(*st, plan.as_str()) {
                errors.push(format!(
                    "{at}: plans {other:?} and {plan:?} both cover {}/{}; a key may be in at most one plan per api stage",
                    st.0, st.1
                ));
            }
        }
    }
}

/// Checks one usage plan against the stages that exist (`(api, stage)` → its routes as
/// `(method, path)`): the file's rules and the admin API's, with AWS's messages. Errors are
/// prefixed with `at`.
pub fn validate_plan(
    p: &UsagePlanConfig,
    at: &str,
    stages: &HashMap<(&str, &str), Vec<(&str, &str)>>,
    errors: &mut Vec<String>,
) {
    id("usage plan", &p.id, errors);
    if p.name.len() > MAX_NAME_LEN {
        errors.push(format!("{at}.name: at most {MAX_NAME_LEN} characters"));
    }
    if p.description.len() > MAX_DESCRIPTION_LEN {
        errors.push(format!(
            "{at}.description: at most {MAX_DESCRIPTION_LEN} characters"
        ));
    }
    if let Some(l) = &p.local_lease {
        if !(1..=MAX_LEASE_UNITS).contains(&l.units) {
            errors.push(format!(
                "{at}.local_lease.units: must be 1..={MAX_LEASE_UNITS}"
            ));
        }
        if l.max_age < Duration::from_millis(10) || l.max_age > Duration::from_secs(60) {
            errors.push(format!("{at}.local_lease.max_age: 10ms to 60s"));
        }
    }
    if let Some(m) = &p.metering {
        if m.reservation_ttl < Duration::from_secs(1)
            || m.reservation_ttl > super::MAX_RESERVATION_TTL
        {
            errors.push(format!(
                "{at}.metering.reservation_ttl: 1s to {}",
                humantime::format_duration(super::MAX_RESERVATION_TTL)
            ));
        }
        for (name, v) in [
            ("min_reservation", m.min_reservation),
            ("max_reservation", m.max_reservation),
        ] {
            if let Some(v) = v
                && !(1..=MAX_RESERVATION).contains(&v)
            {
                errors.push(format!(
                    "{at}.metering.{name}: must be 1..={MAX_RESERVATION}, got {v}"
                ));
            }
        }
        if let (Some(min), Some(max)) = (m.min_reservation, m.max_reservation)
            && min > max
        {
            errors.push(format!(
                "{at}.metering: min_reservation ({min}) must not exceed max_reservation ({max})"
            ));
        }
    }
    if let Some(t) = &p.throttle {
        limit(t, &format!("{at}.throttle"), errors);
    }
    if let Some(q) = &p.quota {
        if q.limit == 0 || q.limit > MAX_QUOTA_LIMIT {
            errors.push(format!("{at}.quota.limit: must be 1..={MAX_QUOTA_LIMIT}"));
        }
        if q.offset >= q.limit.max(1) {
            errors.push(format!(
                "{at}.quota.offset: must be below the limit (0 <= offset < limit)"
            ));
        }
    }
    if let Some(ts) = &p.created_at
        && let Err(e) = parse_timestamp(ts)
    {
        errors.push(format!("{at}.created_at: {e}"));
    }
    let mut covered = Vec::new();
    for s in &p.api_stages {
        let sat = format!("{at}.api_stages[{}/{}]", s.api_id, s.stage);
        let Some(routes) = stages.get(&(s.api_id.as_str(), s.stage.as_str())) else {
            errors.push(format!("{sat}: no such api stage"));
            continue;
        };
        if covered.contains(&(s.api_id.as_str(), s.stage.as_str())) {
            errors.push(format!("{sat}: stage listed twice"));
        }
        covered.push((s.api_id.as_str(), s.stage.as_str()));
        if !s.method_throttle.is_empty() && p.throttle.is_none() {
            errors.push(format!(
                "{sat}: Can not define fine grain throttling if usage plan throttle is not defined"
            ));
        }
        if s.method_throttle.len() > MAX_METHOD_THROTTLES {
            errors.push(format!(
                "{sat}.method_throttle: at most {MAX_METHOD_THROTTLES} per stage"
            ));
        }
        for (key, t) in &s.method_throttle {
            limit(t, &format!("{sat}.method_throttle[{key}]"), errors);
            match split_method_key(key) {
                None => errors.push(format!(
                    "{sat}.method_throttle[{key}]: expected \"/resource/path/METHOD\" (e.g. \"/pets/GET\", \"//GET\", \"*/*\")"
                )),
                Some((res, m)) => {
                    let known = routes.iter().any(|(rm, rp)| {
                        (res == "*" || res == *rp) && (m == "*" || m == *rm || *rm == "ANY")
                    });
                    if !known {
                        errors.push(format!(
                            "{sat}.method_throttle[{key}]: no route {m} {res} in this stage"
                        ));
                    }
                }
            }
        }
    }
}
