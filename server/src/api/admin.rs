//! `tollgate.v1.AdminService`: usage plans, API keys, plan keys, usage, live throttle state and
//! the authorizer cache, behind scoped bearer tokens ([`AdminAuth`], [`AdminGate`]: in
//! `admin_auth.rs`).
//!
//! Every change is one compare-and-set write of the definitions ([`Registry::write`]), so
//! validation (value uniqueness, one plan per key per api stage) holds under concurrent admin
//! calls on any number of instances, and every instance applies it within milliseconds.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rand::Rng;
use tollgate_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::catalog::{Catalog, identity_digest, identity_key_id, is_identity_key_id, key_digest};
use crate::config::validate::{
    KEY_VALUE_MAX, KEY_VALUE_MIN, MAX_DESCRIPTION_LEN, MAX_NAME_LEN, MAX_QUOTA_LIMIT,
    parse_timestamp, valid_id, validate_plan,
};
use crate::config::{
    FailureMode, LocalLeaseConfig, MAX_RESERVATION_TTL, MeteringConfig, PlanStageConfig,
    QuotaConfig, ThrottleConfig, ThrottleScope, UsagePlanConfig,
};
use crate::defs::{Change, Definitions, KeyRecord, PlanRecord, Source};
use crate::limiter::{Limit, Period, gcra, quota};
use crate::registry::{Registry, WriteError};
use crate::store::keys::Keys;
use crate::store::{QuotaOp, Store, StoreError};

/// Default page size of list calls.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page size (AWS's cap for usage).
pub const MAX_PAGE_SIZE: usize = 500;
/// Longest `customer_id`.
pub const MAX_CUSTOMER_ID_LEN: usize = 1024;
/// Tags per key.
pub const MAX_TAGS: usize = 50;
/// Tag key length (AWS).
pub const MAX_TAG_KEY_LEN: usize = 128;
/// Tag value length (AWS).
pub const MAX_TAG_VALUE_LEN: usize = 256;
/// Plans one create/import row may name.
pub const MAX_PLANS_PER_KEY: usize = 10;
/// Stages per plan.
pub const MAX_PLAN_STAGES: usize = 100;
/// Rows of one CSV import (the header not counted): the parser stops at the first row past it.
pub const MAX_IMPORT_ROWS: usize = 10_000;
/// Bytes of one CSV import, checked before the text is parsed.
pub const MAX_IMPORT_BYTES: usize = 4 * 1024 * 1024;
/// Whole admin message, bytes: the CSV's bound plus room for the rest of the request, so an
/// oversized CSV is answered by [`MAX_IMPORT_BYTES`]'s message rather than the wire's.
pub const MAX_ADMIN_MESSAGE_BYTES: usize = MAX_IMPORT_BYTES + 64 * 1024;
/// Longest `GetUsage` range, days.
pub const MAX_USAGE_DAYS: i64 = 366;
/// Most key-days one `GetUsage` call may read (keys of the page × days of the range), checked
/// before any is read: the default page (100 keys) over the longest range (366 days), so a call
/// without `page_size` always fits.
pub const MAX_USAGE_KEY_DAYS: i64 = DEFAULT_PAGE_SIZE as i64 * MAX_USAGE_DAYS;
/// Length of generated key values.
pub const GENERATED_VALUE_LEN: usize = 40;
/// Length of generated ids.
pub const GENERATED_ID_LEN: usize = 10;

const DAY_US: i64 = 86_400_000_000;
const KEY_NOT_FOUND: &str = "Invalid API Key identifier specified";
const PLAN_NOT_FOUND: &str = "Invalid Usage Plan ID specified";

// ---------------------------------------------------------------- authentication

pub use super::admin_auth::{AdminAuth, AdminGate, Caller, Scope};

// ---------------------------------------------------------------- helpers

fn rfc3339(us: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_micros(us)).to_string()
}

fn date_of_day(day: i64) -> String {
    let s = rfc3339((day.max(0) * DAY_US) as u64);
    s[..10].to_string()
}

fn parse_date(field: &str, s: &str) -> Result<i64, Status> {
    let shape = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !shape {
        return Err(Status::invalid_argument(format!(
            "{field}: expected YYYY-MM-DD, got {s:?}"
        )));
    }
    let us = parse_timestamp(s).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))?;
    Ok((us / DAY_US as u64) as i64)
}

fn random_string(len: usize, alphabet: &[u8]) -> String {
    // `rand::rng()` is a CSPRNG (ChaCha12) seeded from the OS.
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn new_id(taken: impl Fn(&str) -> bool) -> String {
    loop {
        let id = random_string(GENERATED_ID_LEN, LOWER_ALNUM);
        if !taken(&id) {
            return id;
        }
    }
}

fn check_len(field: &str, s: &str, max: usize) -> Result<(), Status> {
    if s.chars().count() > max {
        return Err(Status::invalid_argument(format!(
            "{field}: at most {max} characters"
        )));
    }
    Ok(())
}

fn check_value(v: &str) -> Result<(), Status> {
    let n = v.chars().count();
    if n < KEY_VALUE_MIN {
        return Err(Status::invalid_argument(format!(
            "API Key value should be at least {KEY_VALUE_MIN} characters"
        )));
    }
    if n > KEY_VALUE_MAX {
        return Err(Status::invalid_argument(format!(
            "API Key value exceeds maximum size of {KEY_VALUE_MAX} characters"
        )));
    }
    if !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Status::invalid_argument(
            "API Key value: printable ASCII without spaces only",
        ));
    }
    Ok(())
}

fn check_tags(tags: &std::collections::HashMap<String, String>) -> Result<(), Status> {
    if tags.len() > MAX_TAGS {
        return Err(Status::invalid_argument(format!(
            "tags: at most {MAX_TAGS}"
        )));
    }
    for (k, v) in tags {
        if k.is_empty() {
            return Err(Status::invalid_argument("tags: empty tag key"));
        }
        check_len("tag key", k, MAX_TAG_KEY_LEN)?;
        check_len("tag value", v, MAX_TAG_VALUE_LEN)?;
    }
    Ok(())
}

fn page<'a, T>(
    items: impl Iterator<Item = (&'a String, T)>,
    size: u32,
    token: &str,
) -> Result<(Vec<T>, String), Status> {
    let size = match size as usize {
        0 => DEFAULT_PAGE_SIZE,
        n if n > MAX_PAGE_SIZE => {
            return Err(Status::invalid_argument(format!(
                "page_size: at most {MAX_PAGE_SIZE}"
            )));
        }
        n => n,
    };
    // A token is the last id of the previous page.
    if !token.is_empty() && !crate::config::validate::valid_id(token) {
        return Err(Status::invalid_argument(
            "page_token: not a next_page_token this API returned",
        ));
    }
    // Items come in id order (BTreeMap): skip to the token, convert only the page.
    let mut out = Vec::new();
    let mut last = String::new();
    let mut more = false;
    for (id, item) in items.skip_while(|(id, _)| !token.is_empty() && id.as_str() <= token) {
        if out.len() == size {
            more = true;
            break;
        }
        last = id.clone();
        out.push(item);
    }
    Ok((out, if more { last } else { String::new() }))
}

fn write_error(e: WriteError<Status>) -> Status {
    match e {
        WriteError::Rejected(s) => s,
        WriteError::Store(e) => store_error(e),
        WriteError::Contended => Status::aborted("concurrent changes to plans and keys; retry"),
    }
}

fn store_error(e: StoreError) -> Status {
    Status::unavailable(format!("store unavailable: {e}"))
}

fn not_admin(source: Source, what: &str, id: &str) -> Result<(), Status> {
    if source == Source::Config {
        return Err(Status::failed_precondition(format!(
            "{what} {id:?} is defined in the config file; change it there"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------- conversions

fn period_to_pb(p: Period) -> pb::QuotaPeriod {
    match p {
        Period::Day => pb::QuotaPeriod::Day,
        Period::Week => pb::QuotaPeriod::Week,
        Period::Month => pb::QuotaPeriod::Month,
    }
}

fn plan_to_pb(r: &PlanRecord) -> pb::UsagePlan {
    let p = &r.plan;
    let th = |t: &ThrottleConfig| pb::Throttle {
        rate_limit: t.rate_limit,
        burst_limit: t.burst_limit,
    };
    pb::UsagePlan {
        id: p.id.clone(),
        name: p.name.clone(),
        description: p.description.clone(),
        throttle: p.throttle.as_ref().map(th),
        quota: p.quota.map(|q| pb::Quota {
            limit: q.limit,
            period: period_to_pb(q.period) as i32,
            offset: q.offset,
        }),
        throttle_scope: match p.throttle_scope {
            ThrottleScope::PerMethod => pb::ThrottleScope::PerMethod,
            ThrottleScope::PerPlan => pb::ThrottleScope::PerPlan,
        } as i32,
        failure_mode: match p.failure_mode {
            None => pb::FailureMode::Unspecified,
            Some(FailureMode::Open) => pb::FailureMode::Open,
            Some(FailureMode::Closed) => pb::FailureMode::Closed,
        } as i32,
        api_stages: p
            .api_stages
            .iter()
            .map(|s| pb::ApiStage {
                api_id: s.api_id.clone(),
                stage: s.stage.clone(),
                method_throttle: s
                    .method_throttle
                    .iter()
                    .map(|(k, t)| (k.clone(), th(t)))
                    .collect(),
            })
            .collect(),
        created_at: rfc3339(r.created_at_us),
        source: r.source.as_str().to_string(),
        local_lease: p.local_lease.map(|l| pb::LocalLease {
            units: l.units,
            max_age_ms: l.max_age.as_millis().min(u128::from(u32::MAX)) as u32,
        }),
        metering: p.metering.map(|m| pb::Metering {
            meter_throttle: m.meter_throttle,
            reservation_ttl_ms: m.reservation_ttl.as_millis().min(u128::from(u32::MAX)) as u32,
            min_reservation: m.min_reservation.unwrap_or(0),
            max_reservation: m.max_reservation.unwrap_or(0),
        }),
    }
}

fn plan_from_pb(p: pb::UsagePlan) -> Result<UsagePlanConfig, Status> {
    if p.api_stages.len() > MAX_PLAN_STAGES {
        return Err(Status::invalid_argument(format!(
            "api_stages: at most {MAX_PLAN_STAGES}"
        )));
    }
    let th = |t: pb::Throttle| ThrottleConfig {
        rate_limit: t.rate_limit,
        burst_limit: t.burst_limit,
    };
    let quota = match p.quota {
        None => None,
        Some(q) => Some(QuotaConfig {
            limit: q.limit,
            offset: q.offset,
            period: match pb::QuotaPeriod::try_from(q.period) {
                Ok(pb::QuotaPeriod::Day) => Period::Day,
                Ok(pb::QuotaPeriod::Week) => Period::Week,
                Ok(pb::QuotaPeriod::Month) => Period::Month,
                _ => {
                    return Err(Status::invalid_argument("quota.period: DAY, WEEK or MONTH"));
                }
            },
        }),
    };
    let throttle_scope = match pb::ThrottleScope::try_from(p.throttle_scope) {
        Ok(pb::ThrottleScope::Unspecified | pb::ThrottleScope::PerMethod) => {
            ThrottleScope::PerMethod
        }
        Ok(pb::ThrottleScope::PerPlan) => ThrottleScope::PerPlan,
        Err(_) => return Err(Status::invalid_argument("throttle_scope: unknown value")),
    };
    let failure_mode = match pb::FailureMode::try_from(p.failure_mode) {
        Ok(pb::FailureMode::Unspecified) => None,
        Ok(pb::FailureMode::Open) => Some(FailureMode::Open),
        Ok(pb::FailureMode::Closed) => Some(FailureMode::Closed),
        Err(_) => return Err(Status::invalid_argument("failure_mode: unknown value")),
    };
    Ok(UsagePlanConfig {
        id: p.id,
        name: p.name,
        description: p.description,
        throttle: p.throttle.map(th),
        quota,
        throttle_scope,
        failure_mode,
        created_at: None,
        api_stages: p
            .api_stages
            .into_iter()
            .map(|s| PlanStageConfig {
                api_id: s.api_id,
                stage: s.stage,
                method_throttle: s
                    .method_throttle
                    .into_iter()
                    .map(|(k, t)| (k, th(t)))
                    .collect(),
            })
            .collect(),
        local_lease: p.local_lease.map(|l| LocalLeaseConfig {
            units: l.units,
            max_age: if l.max_age_ms == 0 {
                LocalLeaseConfig::DEFAULT_MAX_AGE
            } else {
                Duration::from_millis(u64::from(l.max_age_ms))
            },
        }),
        metering: p.metering.map(|m| MeteringConfig {
            meter_throttle: m.meter_throttle,
            reservation_ttl: if m.reservation_ttl_ms == 0 {
                MAX_RESERVATION_TTL
            } else {
                Duration::from_millis(u64::from(m.reservation_ttl_ms))
            },
            min_reservation: (m.min_reservation > 0).then_some(m.min_reservation),
            max_reservation: (m.max_reservation > 0).then_some(m.max_reservation),
        }),
    })
}

fn key_to_pb(k: &KeyRecord, value: Option<String>) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id.clone(),
        value: value.unwrap_or_default(),
        name: k.name.clone(),
        description: k.description.clone(),
        enabled: k.enabled,
        customer_id: k.customer_id.clone(),
        tags: k.tags.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
        usage_plan_ids: k.usage_plans.clone(),
        created_at: rfc3339(k.created_at_us),
        last_updated: rfc3339(k.updated_at_us),
        source: k.source.as_str().to_string(),
        identity: k.identity.clone().unwrap_or_default(),
    }
}

fn plan_key_to_pb(k: &KeyRecord, plan: &str) -> pb::UsagePlanKey {
    pb::UsagePlanKey {
        id: k.id.clone(),
        name: k.name.clone(),
        r#type: "API_KEY".into(),
        usage_plan_id: plan.to_string(),
        enabled: k.enabled,
    }
}

// ---------------------------------------------------------------- rules

/// Checks a plan (not its id's uniqueness) against the stages in force.
fn check_plan(p: &UsagePlanConfig, catalog: &Catalog) -> Result<(), Status> {
    let mut errors = Vec::new();
    check_len("name", &p.name, MAX_NAME_LEN)?;
    validate_plan(p, "usage_plan", &catalog.stage_routes(), &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Status::invalid_argument(errors.join("; ")))
    }
}

/// The stages `plan_ids` cover; `ALREADY_EXISTS` when two cover one stage (a key may be in at
/// most one plan per api stage), `NOT_FOUND` for an unknown plan.
fn check_plan_set(defs: &Definitions, plan_ids: &[String]) -> Result<(), Status> {
    let mut seen: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for pid in plan_ids {
        let p = defs
            .plans
            .get(pid)
            .ok_or_else(|| Status::not_found(format!("{PLAN_NOT_FOUND}: {pid:?}")))?;
        for s in &p.plan.api_stages {
            if let Some(other) = seen.insert((s.api_id.as_str(), s.stage.as_str()), pid.as_str()) {
                if other == pid {
                    return Err(Status::already_exists(format!(
                        "the key is already in usage plan {pid:?}"
                    )));
                }
                return Err(Status::already_exists(format!(
                    "usage plans {other:?} and {pid:?} both cover {}/{}; a key may be in at most one plan per api stage",
                    s.api_id, s.stage
                )));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- CSV

/// Why CSV text was refused.
#[derive(Debug, PartialEq)]
enum CsvError {
    /// More rows than the parser was allowed.
    TooManyRows,
    /// A quoted field never closed (the line it started on).
    Unterminated(usize),
}

/// Splits CSV text into rows of fields (RFC 4180 quoting; CRLF or LF); blank lines are skipped.
/// More than `max_rows` rows is an error as soon as the next one ends (no more is parsed).
fn parse_csv(text: &str, max_rows: usize) -> Result<Vec<Vec<String>>, CsvError> {
    let too_many = || CsvError::TooManyRows;
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut line = 1;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                if row.iter().any(|f| !f.is_empty()) {
                    if rows.len() == max_rows {
                        return Err(too_many());
                    }
                    rows.push(std::mem::take(&mut row));
                } else {
                    row.clear();
                }
                line += 1;
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(CsvError::Unterminated(line));
    }
    row.push(field);
    if row.iter().any(|f| !f.is_empty()) {
        if rows.len() == max_rows {
            return Err(too_many());
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The page size of a `GetUsage` call over `days` days, so keys × days stays within
/// [`MAX_USAGE_KEY_DAYS`]: an explicit `page_size` past it is refused (naming the bound and the
/// largest page that fits); 0 means the default page, shrunk to fit. One key (`key_id`) always
/// fits (`days` ≤ [`MAX_USAGE_DAYS`]).
fn usage_page_size(page_size: u32, days: i64, one_key: bool) -> Result<u32, Status> {
    let fits = (MAX_USAGE_KEY_DAYS / days.max(1)).max(1);
    if one_key {
        return Ok(page_size);
    }
    match i64::from(page_size) {
        0 => Ok(fits.min(DEFAULT_PAGE_SIZE as i64) as u32),
        n if n * days > MAX_USAGE_KEY_DAYS => Err(Status::invalid_argument(format!(
            "page_size {n} x {days} days = {} key-days; at most {MAX_USAGE_KEY_DAYS} per call \
             (MAX_USAGE_KEY_DAYS): use page_size <= {fits} for this range, or a shorter range",
            n * days
        ))),
        _ => Ok(page_size),
    }
}

/// `v` without repeats, first occurrence kept.
fn dedup(v: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    v.iter()
        .filter(|x| seen.insert(x.as_str()))
        .cloned()
        .collect()
}

/// Bounds an identifier or filter taken from a request (so no message echoes megabytes).
fn check_field(field: &str, s: &str, max: usize) -> Result<(), Status> {
    if s.len() > max {
        return Err(Status::invalid_argument(format!(
            "{field}: at most {max} bytes"
        )));
    }
    Ok(())
}

/// Why an API key may not have an id like `i-0123…`: identities' counters live under those.
const IDENTITY_SHAPED_ID: &str = "i- and 24 hex digits is the shape of identity ids";

/// Longest id, page token or filter in a request.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// A stored `<period index>:<count>` value (`ql:*` overrides, `q:*` without daily usage).
fn index_pair(v: &str) -> Option<(i64, u64)> {
    let (i, n) = v.split_once(':')?;
    Some((i.parse().ok()?, n.parse().ok()?))
}

/// A plan's state field as `(quota period index, quota used)`: `<index>:<used>`, or with daily
/// usage `<day>:<used><d|w|m>:<used that day>`, whose period index follows from the day (and
/// counts only if the letter is still the plan's period).
fn quota_state(v: &str, period: Period) -> Option<(i64, u64)> {
    match v.split(':').collect::<Vec<_>>()[..] {
        [i, n] => Some((i.parse().ok()?, n.parse().ok()?)),
        [day, n, _] => {
            let letter = match period {
                Period::Day => 'd',
                Period::Week => 'w',
                Period::Month => 'm',
            };
            let day: u64 = day.parse().ok()?;
            Some((
                quota::period_index(period, day * DAY_US as u64),
                n.strip_suffix(letter)?.parse().ok()?,
            ))
        }
        _ => None,
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "" | "false" | "0" | "no" => Some(false),
        "true" | "1" | "yes" => Some(true),
        _ => None,
    }
}

// ---------------------------------------------------------------- the service

/// The admin gRPC service.
pub struct AdminApi {
    registry: Arc<Registry>,
}

impl AdminApi {
    /// A service editing `registry`'s definitions.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }

    fn now(&self) -> u64 {
        crate::clock::Clock::now_micros(&crate::clock::SystemClock)
    }

    async fn write(
        &self,
        f: impl Fn(&Definitions) -> Result<Vec<Change>, Status>,
    ) -> Result<Arc<Definitions>, Status> {
        self.registry.write(f).await.map_err(write_error)
    }

    fn key_in_plan(&self, defs: &Definitions, plan_id: &str, key_id: &str) -> Result<(), Status> {
        let k = defs
            .keys
            .get(key_id)
            .ok_or_else(|| Status::not_found(format!("{KEY_NOT_FOUND}: {key_id:?}")))?;
        if !k.usage_plans.iter().any(|p| p == plan_id) {
            return Err(Status::not_found(format!(
                "API key {key_id:?} is not in usage plan {plan_id:?}"
            )));
        }
        Ok(())
    }

    /// The usage owner's id for `key_id` in `plan_id`: an API key (or identity assignment) in
    /// the plan, or an identity — by its id or as `principal=<v>` / `claim:<name>=<v>` — when
    /// the plan is a stage's `default_usage_plan` (identities without an assignment count
    /// there).
    fn usage_owner(
        &self,
        defs: &Definitions,
        plan_id: &str,
        key_id: &str,
    ) -> Result<String, Status> {
        let id = if key_id.contains('=') {
            let identity = self
                .registry
                .catalog
                .load()
                .canonical_identity(key_id)
                .map_err(Status::invalid_argument)?;
            identity_key_id(&identity)
        } else {
            check_field("key_id", key_id, MAX_REQUEST_ID_LEN)?;
            key_id.to_string()
        };
        match defs.keys.get(&id) {
            Some(k) if k.usage_plans.iter().any(|p| p == plan_id) => return Ok(id),
            Some(k) if k.identity.is_none() => {
                return Err(Status::not_found(format!(
                    "API key {key_id:?} is not in usage plan {plan_id:?}"
                )));
            }
            None if !is_identity_key_id(&id) => {
                return Err(Status::not_found(format!("{KEY_NOT_FOUND}: {key_id:?}")));
            }
            _ => {}
        }
        if self.registry.catalog.load().is_default_plan(plan_id) {
            Ok(id)
        } else {
            Err(Status::not_found(format!(
                "identity {key_id:?} is not assigned to usage plan {plan_id:?}, and that plan is no stage's default_usage_plan"
            )))
        }
    }

    /// The plan's quota operation, from the catalog (what the check path uses).
    fn quota_op(&self, plan_id: &str) -> Result<QuotaOp, Status> {
        self.registry
            .catalog
            .load()
            .plans
            .get(plan_id)
            .and_then(|p| p.quota_op())
            .ok_or_else(|| {
                Status::failed_precondition(format!("usage plan {plan_id:?} has no quota"))
            })
    }

    /// A store call bounded by the registry's deadline.
    async fn call<T>(&self, f: impl Future<Output = Result<T, StoreError>>) -> Result<T, Status> {
        self.registry.timed(f).await.map_err(store_error)
    }

    fn owner(&self, key_id: &str) -> Arc<str> {
        Keys::new(&self.registry.config().store.key_prefix).api_key(key_id)
    }
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminApi {
    async fn create_usage_plan(
        &self,
        req: Request<pb::CreateUsagePlanRequest>,
    ) -> R<pb::UsagePlan> {
        let p = req
            .into_inner()
            .usage_plan
            .ok_or_else(|| Status::invalid_argument("usage_plan is required"))?;
        let mut plan = plan_from_pb(p)?;
        if plan.id.is_empty() {
            let defs = self.registry.defs();
            plan.id = new_id(|id| defs.plans.contains_key(id));
        }
        let catalog = self.registry.catalog.load_full();
        check_plan(&plan, &catalog)?;
        let now = self.now();
        let defs = self
            .write(|d| {
                if d.plans.contains_key(&plan.id) {
                    return Err(Status::already_exists(format!(
                        "usage plan {:?} already exists",
                        plan.id
                    )));
                }
                Ok(vec![Change::PutPlan(PlanRecord {
                    plan: plan.clone(),
                    created_at_us: now,
                    updated_at_us: now,
                    source: Source::Admin,
                })])
            })
            .await?;
        let rec = defs
            .plans
            .get(&plan.id)
            .ok_or_else(|| Status::internal("created plan not found"))?;
        Ok(Response::new(plan_to_pb(rec)))
    }

    async fn get_usage_plan(&self, req: Request<pb::GetUsagePlanRequest>) -> R<pb::UsagePlan> {
        let id = req.into_inner().id;
        check_field("id", &id, MAX_REQUEST_ID_LEN)?;
        let defs = self.registry.defs();
        let p = defs
            .plans
            .get(&id)
            .ok_or_else(|| Status::not_found(format!("{PLAN_NOT_FOUND}: {id:?}")))?;
        Ok(Response::new(plan_to_pb(p)))
    }

    async fn list_usage_plans(
        &self,
        req: Request<pb::ListUsagePlansRequest>,
    ) -> R<pb::ListUsagePlansResponse> {
        let r = req.into_inner();
        check_field("page_token", &r.page_token, MAX_REQUEST_ID_LEN)?;
        let defs = self.registry.defs();
        let (items, next_page_token) = page(defs.plans.iter(), r.page_size, &r.page_token)?;
        let items = items.into_iter().map(plan_to_pb).collect();
        Ok(Response::new(pb::ListUsagePlansResponse {
            items,
            next_page_token,
        }))
    }

    async fn update_usage_plan(
        &self,
        req: Request<pb::UpdateUsagePlanRequest>,
    ) -> R<pb::UsagePlan> {
        let p = req
            .into_inner()
            .usage_plan
            .ok_or_else(|| Status::invalid_argument("usage_plan is required"))?;
        let plan = plan_from_pb(p)?;
        let catalog = self.registry.catalog.load_full();
        check_plan(&plan, &catalog)?;
        let now = self.now();
        let defs = self
            .write(|d| {
                let old = d
                    .plans
                    .get(&plan.id)
                    .ok_or_else(|| Status::not_found(format!("{PLAN_NOT_FOUND}: {:?}", plan.id)))?;
                not_admin(old.source, "usage plan", &plan.id)?;
                // A stage added to the plan must not collide with another plan of its keys.
                let mut next = d.clone();
                let rec = PlanRecord {
                    plan: plan.clone(),
                    created_at_us: old.created_at_us,
                    updated_at_us: now,
                    source: Source::Admin,
                };
                next.plans.insert(plan.id.clone(), rec.clone());
                for k in d.keys.values().filter(|k| k.usage_plans.contains(&plan.id)) {
                    check_plan_set(&next, &k.usage_plans).map_err(|e| {
                        Status::already_exists(format!("key {:?}: {}", k.id, e.message()))
                    })?;
                }
                Ok(vec![Change::PutPlan(rec)])
            })
            .await?;
        let rec = defs
            .plans
            .get(&plan.id)
            .ok_or_else(|| Status::not_found(PLAN_NOT_FOUND))?;
        Ok(Response::new(plan_to_pb(rec)))
    }

    async fn delete_usage_plan(
        &self,
        req: Request<pb::DeleteUsagePlanRequest>,
    ) -> R<pb::DeleteUsagePlanResponse> {
        let id = req.into_inner().id;
        check_field("id", &id, MAX_REQUEST_ID_LEN)?;
        self.write(|d| {
            let old = d
                .plans
                .get(&id)
                .ok_or_else(|| Status::not_found(format!("{PLAN_NOT_FOUND}: {id:?}")))?;
            not_admin(old.source, "usage plan", &id)?;
            let n = d.keys.values().filter(|k| k.usage_plans.contains(&id)).count();
            if n > 0 {
                return Err(Status::failed_precondition(format!(
                    "usage plan {id:?} still has {n} API key(s); remove them first (DeleteUsagePlanKey)"
                )));
            }
            Ok(vec![Change::DeletePlan(id.clone())])
        })
        .await?;
        Ok(Response::new(pb::DeleteUsagePlanResponse {}))
    }

    async fn create_api_key(&self, req: Request<pb::CreateApiKeyRequest>) -> R<pb::ApiKey> {
        let r = req.into_inner();
        check_len("name", &r.name, MAX_NAME_LEN)?;
        check_len("description", &r.description, MAX_DESCRIPTION_LEN)?;
        check_len("customer_id", &r.customer_id, MAX_CUSTOMER_ID_LEN)?;
        check_tags(&r.tags)?;
        if r.usage_plan_ids.len() > MAX_PLANS_PER_KEY {
            return Err(Status::invalid_argument(format!(
                "usage_plan_ids: at most {MAX_PLANS_PER_KEY}"
            )));
        }
        if !r.id.is_empty() && !valid_id(&r.id) {
            return Err(Status::invalid_argument(
                "id: 1-128 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        let identity = match r.identity.as_deref().filter(|i| !i.is_empty()) {
            Some(i) => Some(
                self.registry
                    .catalog
                    .load()
                    .canonical_identity(i)
                    .map_err(Status::invalid_argument)?,
            ),
            None => None,
        };
        let (value, digest, fixed_id) = match &identity {
            Some(ident) => {
                if r.value.is_some() {
                    return Err(Status::invalid_argument(
                        "identity: an identity's assignment has no value",
                    ));
                }
                let id = identity_key_id(ident);
                if !r.id.is_empty() && r.id != id {
                    return Err(Status::invalid_argument(format!(
                        "id: an identity's id is derived from it ({id})"
                    )));
                }
                (None, hex::encode(identity_digest(ident)), Some(id))
            }
            None => {
                if is_identity_key_id(&r.id) {
                    return Err(Status::invalid_argument(format!(
                        "id: {IDENTITY_SHAPED_ID}"
                    )));
                }
                if let Some(v) = &r.value {
                    check_value(v)?;
                }
                let value = r
                    .value
                    .clone()
                    .unwrap_or_else(|| random_string(GENERATED_VALUE_LEN, ALNUM));
                let digest = hex::encode(key_digest(&value));
                (Some(value), digest, None)
            }
        };
        let r = pb::CreateApiKeyRequest {
            id: fixed_id.unwrap_or(r.id),
            ..r
        };
        let now = self.now();
        let plans = dedup(&r.usage_plan_ids);
        let id_cell = parking_lot::Mutex::new(String::new());
        let defs = self
            .write(|d| {
                let id = if r.id.is_empty() {
                    new_id(|id| d.keys.contains_key(id))
                } else if d.keys.contains_key(&r.id) {
                    return Err(Status::already_exists(format!(
                        "API key {:?} already exists",
                        r.id
                    )));
                } else {
                    r.id.clone()
                };
                if d.key_by_digest(&digest).is_some() {
                    return Err(Status::already_exists(if identity.is_some() {
                        "this identity already has an assignment"
                    } else {
                        "API Key value already exists"
                    }));
                }
                check_plan_set(d, &plans)?;
                *id_cell.lock() = id.clone();
                Ok(vec![Change::PutKey(KeyRecord {
                    id,
                    name: r.name.clone(),
                    description: r.description.clone(),
                    // An identity is served (by a default plan) before it has an assignment:
                    // a new assignment must not lock it out, so it starts enabled.
                    enabled: r.enabled || identity.is_some(),
                    customer_id: r.customer_id.clone(),
                    tags: r.tags.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
                    value_sha256: digest.clone(),
                    usage_plans: plans.clone(),
                    created_at_us: now,
                    updated_at_us: now,
                    source: Source::Admin,
                    identity: identity.clone(),
                })])
            })
            .await?;
        let id = id_cell.into_inner();
        let k = defs
            .keys
            .get(&id)
            .ok_or_else(|| Status::internal("created key not found"))?;
        Ok(Response::new(key_to_pb(k, value)))
    }

    async fn get_api_key(&self, req: Request<pb::GetApiKeyRequest>) -> R<pb::ApiKey> {
        let id = req.into_inner().id;
        check_field("id", &id, MAX_REQUEST_ID_LEN)?;
        let defs = self.registry.defs();
        let k = defs
            .keys
            .get(&id)
            .ok_or_else(|| Status::not_found(format!("{KEY_NOT_FOUND}: {id:?}")))?;
        Ok(Response::new(key_to_pb(k, None)))
    }

    async fn list_api_keys(
        &self,
        req: Request<pb::ListApiKeysRequest>,
    ) -> R<pb::ListApiKeysResponse> {
        let r = req.into_inner();
        check_field("name_prefix", &r.name_prefix, MAX_NAME_LEN)?;
        check_field("customer_id", &r.customer_id, MAX_CUSTOMER_ID_LEN)?;
        check_field("page_token", &r.page_token, MAX_REQUEST_ID_LEN)?;
        let defs = self.registry.defs();
        let (items, next_page_token) = page(
            defs.keys.iter().filter(|(_, k)| {
                k.name.starts_with(&r.name_prefix)
                    && (r.customer_id.is_empty() || k.customer_id == r.customer_id)
            }),
            r.page_size,
            &r.page_token,
        )?;
        let items = items.into_iter().map(|k| key_to_pb(k, None)).collect();
        Ok(Response::new(pb::ListApiKeysResponse {
            items,
            next_page_token,
        }))
    }

    async fn update_api_key(&self, req: Request<pb::UpdateApiKeyRequest>) -> R<pb::ApiKey> {
        let r = req.into_inner();
        check_field("id", &r.id, MAX_REQUEST_ID_LEN)?;
        if let Some(n) = &r.name {
            check_len("name", n, MAX_NAME_LEN)?;
        }
        if let Some(d) = &r.description {
            check_len("description", d, MAX_DESCRIPTION_LEN)?;
        }
        if let Some(c) = &r.customer_id {
            check_len("customer_id", c, MAX_CUSTOMER_ID_LEN)?;
        }
        let now = self.now();
        let defs = self
            .write(|d| {
                let mut k = d
                    .keys
                    .get(&r.id)
                    .cloned()
                    .ok_or_else(|| Status::not_found(format!("{KEY_NOT_FOUND}: {:?}", r.id)))?;
                not_admin(k.source, "API key", &r.id)?;
                if let Some(n) = &r.name {
                    k.name = n.clone();
                }
                if let Some(e) = r.enabled {
                    k.enabled = e;
                }
                if let Some(x) = &r.description {
                    k.description = x.clone();
                }
                if let Some(c) = &r.customer_id {
                    k.customer_id = c.clone();
                }
                k.updated_at_us = now;
                Ok(vec![Change::PutKey(k)])
            })
            .await?;
        let k = defs
            .keys
            .get(&r.id)
            .ok_or_else(|| Status::not_found(KEY_NOT_FOUND))?;
        Ok(Response::new(key_to_pb(k, None)))
    }

    async fn delete_api_key(
        &self,
        req: Request<pb::DeleteApiKeyRequest>,
    ) -> R<pb::DeleteApiKeyResponse> {
        let id = req.into_inner().id;
        check_field("id", &id, MAX_REQUEST_ID_LEN)?;
        let identity = parking_lot::Mutex::new(false);
        self.write(|d| {
            let k = d
                .keys
                .get(&id)
                .ok_or_else(|| Status::not_found(format!("{KEY_NOT_FOUND}: {id:?}")))?;
            not_admin(k.source, "API key", &id)?;
            *identity.lock() = k.identity.is_some();
            // The record carries its plan associations: they go with it.
            Ok(vec![Change::DeleteKey(id.clone())])
        })
        .await?;
        // A key's buckets, quotas and usage go too, so a new key with this id starts clean. An
        // identity keeps counting under the same id without its assignment (the stages' default
        // plans): removing an assignment must not reset what it used.
        if !identity.into_inner() {
            self.call(self.registry.store().owner_clear(&self.owner(&id)))
                .await?;
        }
        Ok(Response::new(pb::DeleteApiKeyResponse {}))
    }

    async fn import_api_keys(
        &self,
        req: Request<pb::ImportApiKeysRequest>,
    ) -> R<pb::ImportApiKeysResponse> {
        let r = req.into_inner();
        if r.csv.len() > MAX_IMPORT_BYTES {
            return Err(Status::invalid_argument(format!(
                "csv: {} bytes; at most {MAX_IMPORT_BYTES} bytes per import (MAX_IMPORT_BYTES): split the file",
                r.csv.len()
            )));
        }
        // The header row plus MAX_IMPORT_ROWS.
        let rows = parse_csv(&r.csv, MAX_IMPORT_ROWS + 1).map_err(|e| match e {
            CsvError::TooManyRows => Status::invalid_argument(format!(
                "csv: at most {MAX_IMPORT_ROWS} rows per import (MAX_IMPORT_ROWS), after the header row: split the file"
            )),
            CsvError::Unterminated(line) => Status::invalid_argument(format!(
                "csv: line {line}: unterminated quoted field"
            )),
        })?;
        let Some((header, body)) = rows.split_first() else {
            return Err(Status::invalid_argument(
                "csv: empty (a header row is required)",
            ));
        };
        let col = |name: &str| {
            header
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
        };
        let (c_key, c_name, c_desc, c_enabled, c_plans, c_id, c_customer) = (
            col("key").or_else(|| col("value")),
            col("name"),
            col("description"),
            col("enabled"),
            col("usageplanids"),
            col("id"),
            col("customerid"),
        );
        let Some(c_key) = c_key else {
            return Err(Status::invalid_argument("csv: no Key column"));
        };
        for (i, h) in header.iter().enumerate() {
            let known = [
                "key",
                "value",
                "name",
                "description",
                "enabled",
                "usageplanids",
                "id",
                "customerid",
            ];
            if !known.contains(&h.trim().to_ascii_lowercase().as_str()) {
                return Err(Status::invalid_argument(format!(
                    "csv: unknown column {h:?} (column {})",
                    i + 1
                )));
            }
        }
        let now = self.now();
        let out = parking_lot::Mutex::new((Vec::new(), Vec::new()));
        self.write(|d| {
            let mut next = d.clone();
            let mut changes = Vec::new();
            let mut ids = Vec::new();
            let mut warnings = Vec::new();
            let mut seen_values = BTreeSet::new();
            for (n, row) in body.iter().enumerate() {
                let line = n + 2;
                let get = |c: Option<usize>| {
                    c.and_then(|i| row.get(i))
                        .map(|s| s.trim().to_string())
                        .unwrap_or_default()
                };
                let value = get(Some(c_key));
                let row_result = (|| -> Result<KeyRecord, String> {
                    check_value(&value).map_err(|e| e.message().to_string())?;
                    if !seen_values.insert(value.clone()) {
                        return Err("the same value appears twice in the file".into());
                    }
                    let keep = |c: Option<usize>, old: Option<&String>| match (c, old) {
                        (None, Some(o)) => o.clone(),
                        _ => get(c),
                    };
                    let existing_now = next
                        .key_by_digest(&hex::encode(key_digest(&value)))
                        .cloned();
                    let name = keep(c_name, existing_now.as_ref().map(|e| &e.name));
                    let description = keep(c_desc, existing_now.as_ref().map(|e| &e.description));
                    let customer_id =
                        keep(c_customer, existing_now.as_ref().map(|e| &e.customer_id));
                    check_len("Name", &name, MAX_NAME_LEN).map_err(|e| e.message().to_string())?;
                    check_len("Description", &description, MAX_DESCRIPTION_LEN)
                        .map_err(|e| e.message().to_string())?;
                    check_len("CustomerId", &customer_id, MAX_CUSTOMER_ID_LEN)
                        .map_err(|e| e.message().to_string())?;
                    let enabled = match (c_enabled, &existing_now) {
                        (None, Some(e)) => e.enabled,
                        _ => parse_bool(&get(c_enabled))
                            .ok_or_else(|| "Enabled: expected true or false".to_string())?,
                    };
                    let digest = hex::encode(key_digest(&value));
                    // Re-import overwrites the key with the same value; columns the file does
                    // not have keep the key's values.
                    let existing = existing_now.clone();
                    let plans: Vec<String> = match (c_plans, &existing) {
                        (None, Some(e)) => e.usage_plans.clone(),
                        _ => dedup(
                            &get(c_plans)
                                .split([',', ';'])
                                .map(str::trim)
                                .filter(|s| !s.is_empty())
                                .map(String::from)
                                .collect::<Vec<_>>(),
                        ),
                    };
                    if plans.len() > MAX_PLANS_PER_KEY {
                        return Err(format!("UsagePlanIds: at most {MAX_PLANS_PER_KEY}"));
                    }
                    check_plan_set(&next, &plans).map_err(|e| e.message().to_string())?;
                    let id = match (&existing, get(c_id)) {
                        (Some(e), id) if id.is_empty() || id == e.id => e.id.clone(),
                        (Some(e), id) => {
                            return Err(format!("value belongs to key {:?}, not {id:?}", e.id));
                        }
                        (None, id) if id.is_empty() => new_id(|x| next.keys.contains_key(x)),
                        (None, id) if !valid_id(&id) => {
                            return Err("Id: 1-128 characters of A-Z a-z 0-9 . _ -".into());
                        }
                        (None, id) if is_identity_key_id(&id) => {
                            return Err(IDENTITY_SHAPED_ID.into());
                        }
                        (None, id) if next.keys.contains_key(&id) => {
                            return Err(format!("key {id:?} exists with another value"));
                        }
                        (None, id) => id,
                    };
                    if let Some(e) = &existing
                        && e.source == Source::Config
                    {
                        return Err(format!(
                            "key {:?} is defined in the config file; change it there",
                            e.id
                        ));
                    }
                    Ok(KeyRecord {
                        id,
                        name,
                        description,
                        enabled,
                        customer_id,
                        tags: existing
                            .as_ref()
                            .map(|e| e.tags.clone())
                            .unwrap_or_default(),
                        value_sha256: digest,
                        usage_plans: plans,
                        created_at_us: existing.as_ref().map_or(now, |e| e.created_at_us),
                        updated_at_us: now,
                        source: Source::Admin,
                        identity: None,
                    })
                })();
                match row_result {
                    Ok(rec) => {
                        ids.push(rec.id.clone());
                        let c = Change::PutKey(rec);
                        next.apply(std::slice::from_ref(&c));
                        changes.push(c);
                    }
                    Err(e) => warnings.push(format!("line {line}: {e}")),
                }
            }
            if r.fail_on_warnings && !warnings.is_empty() {
                return Err(Status::invalid_argument(warnings.join("; ")));
            }
            *out.lock() = (ids, warnings);
            Ok(changes)
        })
        .await?;
        let (ids, warnings) = out.into_inner();
        Ok(Response::new(pb::ImportApiKeysResponse { ids, warnings }))
    }

    async fn create_usage_plan_key(
        &self,
        req: Request<pb::CreateUsagePlanKeyRequest>,
    ) -> R<pb::UsagePlanKey> {
        let r = req.into_inner();
        check_field("usage_plan_id", &r.usage_plan_id, MAX_REQUEST_ID_LEN)?;
        check_field("key_id", &r.key_id, MAX_REQUEST_ID_LEN)?;
        let now = self.now();
        let defs = self
            .write(|d| {
                if !d.plans.contains_key(&r.usage_plan_id) {
                    return Err(Status::not_found(format!(
                        "{PLAN_NOT_FOUND}: {:?}",
                        r.usage_plan_id
                    )));
                }
                let mut k =
                    d.keys.get(&r.key_id).cloned().ok_or_else(|| {
                        Status::not_found(format!("{KEY_NOT_FOUND}: {:?}", r.key_id))
                    })?;
                not_admin(k.source, "API key", &r.key_id)?;
                if k.usage_plans.contains(&r.usage_plan_id) {
                    return Err(Status::already_exists(format!(
                        "API key {:?} is already in usage plan {:?}",
                        r.key_id, r.usage_plan_id
                    )));
                }
                if k.usage_plans.len() >= MAX_PLANS_PER_KEY {
                    return Err(Status::failed_precondition(format!(
                        "API key {:?} is already in {MAX_PLANS_PER_KEY} usage plans (the limit)",
                        r.key_id
                    )));
                }
                k.usage_plans.push(r.usage_plan_id.clone());
                check_plan_set(d, &k.usage_plans)?;
                k.updated_at_us = now;
                Ok(vec![Change::PutKey(k)])
            })
            .await?;
        let k = defs
            .keys
            .get(&r.key_id)
            .ok_or_else(|| Status::not_found(KEY_NOT_FOUND))?;
        Ok(Response::new(plan_key_to_pb(k, &r.usage_plan_id)))
    }

    async fn list_usage_plan_keys(
        &self,
        req: Request<pb::ListUsagePlanKeysRequest>,
    ) -> R<pb::ListUsagePlanKeysResponse> {
        let r = req.into_inner();
        check_field("usage_plan_id", &r.usage_plan_id, MAX_REQUEST_ID_LEN)?;
        check_field("name_prefix", &r.name_prefix, MAX_NAME_LEN)?;
        check_field("page_token", &r.page_token, MAX_REQUEST_ID_LEN)?;
        let defs = self.registry.defs();
        let (items, next_page_token) = page(
            defs.keys.iter().filter(|(_, k)| {
                k.usage_plans.contains(&r.usage_plan_id) && k.name.starts_with(&r.name_prefix)
            }),
            r.page_size,
            &r.page_token,
        )?;
        let items = items
            .into_iter()
            .map(|k| plan_key_to_pb(k, &r.usage_plan_id))
            .collect();
        Ok(Response::new(pb::ListUsagePlanKeysResponse {
            items,
            next_page_token,
        }))
    }

    async fn delete_usage_plan_key(
        &self,
        req: Request<pb::DeleteUsagePlanKeyRequest>,
    ) -> R<pb::DeleteUsagePlanKeyResponse> {
        let r = req.into_inner();
        check_field("usage_plan_id", &r.usage_plan_id, MAX_REQUEST_ID_LEN)?;
        check_field("key_id", &r.key_id, MAX_REQUEST_ID_LEN)?;
        let now = self.now();
        self.write(|d| {
            if !d.plans.contains_key(&r.usage_plan_id) {
                return Err(Status::not_found(format!(
                    "{PLAN_NOT_FOUND}: {:?}",
                    r.usage_plan_id
                )));
            }
            self.key_in_plan(d, &r.usage_plan_id, &r.key_id)?;
            let mut k = d.keys[&r.key_id].clone();
            not_admin(k.source, "API key", &r.key_id)?;
            k.usage_plans.retain(|p| p != &r.usage_plan_id);
            k.updated_at_us = now;
            Ok(vec![Change::PutKey(k)])
        })
        .await?;
        Ok(Response::new(pb::DeleteUsagePlanKeyResponse {}))
    }

    async fn get_usage(&self, req: Request<pb::GetUsageRequest>) -> R<pb::GetUsageResponse> {
        let r = req.into_inner();
        check_field("usage_plan_id", &r.usage_plan_id, MAX_REQUEST_ID_LEN)?;
        check_field("page_token", &r.page_token, MAX_REQUEST_ID_LEN)?;
        let from = parse_date("start_date", &r.start_date)?;
        let to = parse_date("end_date", &r.end_date)?;
        if to < from {
            return Err(Status::invalid_argument(
                "end_date must not be before start_date",
            ));
        }
        let days = to - from + 1;
        if days > MAX_USAGE_DAYS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_USAGE_DAYS} days per call"
            )));
        }
        let page_size = usage_page_size(r.page_size, days, !r.key_id.is_empty())?;
        let defs = self.registry.defs();
        let plan = defs
            .plans
            .get(&r.usage_plan_id)
            .ok_or_else(|| Status::not_found(format!("{PLAN_NOT_FOUND}: {:?}", r.usage_plan_id)))?;
        let (key_ids, next_page_token) = if r.key_id.is_empty() {
            let (keys, next) = page(
                defs.keys
                    .iter()
                    .filter(|(_, k)| k.usage_plans.contains(&r.usage_plan_id)),
                page_size,
                &r.page_token,
            )?;
            (keys.into_iter().map(|k| k.id.clone()).collect(), next)
        } else {
            (
                vec![self.usage_owner(&defs, &r.usage_plan_id, &r.key_id)?],
                String::new(),
            )
        };
        let quota = plan.plan.quota;
        // Remaining needs the whole period up to each day: read from the first period's start.
        let read_from = match quota {
            Some(q) => {
                quota::period_start(
                    q.period,
                    quota::period_index(q.period, (from * DAY_US) as u64),
                ) / DAY_US
            }
            None => from,
        };
        let store = self.registry.store();
        let override_field = format!("ql:{}", r.usage_plan_id);
        // Days past the retention (at least 32 are kept): the memory store has swept them, Redis
        // deletes them at the key's next day change — an idle key's would linger.
        let kept_from = (self.now() / DAY_US as u64) as i64
            - self.registry.catalog.load().usage_retention_days.max(32) as i64;
        let mut items = std::collections::HashMap::new();
        for id in key_ids {
            let owner = self.owner(&id);
            let days: BTreeMap<i64, u64> = self
                .call(store.usage_read(&owner, &r.usage_plan_id, read_from, to))
                .await?
                .into_iter()
                .filter(|(d, _)| *d >= kept_from)
                .collect();
            let over = match quota {
                Some(_) => {
                    let st = self.call(store.owner_state(&owner)).await?;
                    st.fields
                        .iter()
                        .find(|(f, _)| *f == override_field)
                        .and_then(|(_, v)| index_pair(v))
                }
                None => None,
            };
            let mut out = Vec::new();
            for day in from..=to {
                let used = days.get(&day).copied().unwrap_or(0);
                let remaining = quota.map(|q| {
                    let idx = quota::period_index(q.period, (day * DAY_US) as u64);
                    let start = quota::period_start(q.period, idx) / DAY_US;
                    let limit = match over {
                        Some((i, l)) if i == idx => l,
                        _ => quota::effective_limit(
                            q.limit,
                            q.offset,
                            idx,
                            quota::period_index(q.period, plan.created_at_us),
                        ),
                    };
                    let cum: u64 = days.range(start..=day).map(|(_, n)| n).sum();
                    limit.saturating_sub(cum)
                });
                out.push(pb::DailyUsage {
                    date: date_of_day(day),
                    used,
                    remaining,
                });
            }
            items.insert(id, pb::KeyUsage { days: out });
        }
        Ok(Response::new(pb::GetUsageResponse {
            usage_plan_id: r.usage_plan_id,
            start_date: r.start_date,
            end_date: r.end_date,
            items,
            next_page_token,
        }))
    }

    async fn update_usage(
        &self,
        req: Request<pb::UpdateUsageRequest>,
    ) -> R<pb::UpdateUsageResponse> {
        let r = req.into_inner();
        check_field("usage_plan_id", &r.usage_plan_id, MAX_REQUEST_ID_LEN)?;
        if r.remaining > MAX_QUOTA_LIMIT {
            return Err(Status::invalid_argument(format!(
                "remaining: at most {MAX_QUOTA_LIMIT}"
            )));
        }
        let defs = self.registry.defs();
        if !defs.plans.contains_key(&r.usage_plan_id) {
            return Err(Status::not_found(format!(
                "{PLAN_NOT_FOUND}: {:?}",
                r.usage_plan_id
            )));
        }
        let owner_id = self.usage_owner(&defs, &r.usage_plan_id, &r.key_id)?;
        let op = self.quota_op(&r.usage_plan_id)?;
        let (report, _now) = self
            .call(self.registry.store().quota_set_remaining(
                &self.owner(&owner_id),
                &op,
                r.remaining,
            ))
            .await?;
        Ok(Response::new(pb::UpdateUsageResponse {
            usage_plan_id: r.usage_plan_id,
            key_id: r.key_id,
            limit: report.limit,
            used: report.used,
            remaining: report.limit.saturating_sub(report.used),
            reset_at: rfc3339(quota::period_end(op.period, report.index).max(0) as u64),
        }))
    }

    async fn get_throttle_state(
        &self,
        req: Request<pb::GetThrottleStateRequest>,
    ) -> R<pb::GetThrottleStateResponse> {
        let key_id = req.into_inner().key_id;
        // An identity by name (`principal=<v>`, `claim:<name>=<v>`) or id.
        let key_id = if key_id.contains('=') {
            let identity = self
                .registry
                .catalog
                .load()
                .canonical_identity(&key_id)
                .map_err(Status::invalid_argument)?;
            identity_key_id(&identity)
        } else {
            check_field("key_id", &key_id, MAX_REQUEST_ID_LEN)?;
            key_id
        };
        let defs = self.registry.defs();
        let catalog = self.registry.catalog.load_full();
        // An identity counts under its assignment's plans and the stages' default plans.
        let mut plan_ids = match defs.keys.get(&key_id) {
            Some(k) => k.usage_plans.clone(),
            None if is_identity_key_id(&key_id) => Vec::new(),
            None => return Err(Status::not_found(format!("{KEY_NOT_FOUND}: {key_id:?}"))),
        };
        if is_identity_key_id(&key_id) {
            for p in catalog.default_plan_ids() {
                if !plan_ids.iter().any(|x| x == p) {
                    plan_ids.push(p.to_string());
                }
            }
        }
        let st = self
            .call(self.registry.store().owner_state(&self.owner(&key_id)))
            .await?;
        let now = st.now_us;
        let field = |name: &str| {
            st.fields
                .iter()
                .find(|(f, _)| f == name)
                .map(|(_, v)| v.as_str())
        };
        let mut buckets = Vec::new();
        let mut quotas = Vec::new();
        for pid in &plan_ids {
            let Some(plan) = catalog.plans.get(pid) else {
                continue;
            };
            let bucket =
                |limit: Limit, tat: u64, api: &str, stage: &str, route: &str| pb::BucketState {
                    usage_plan_id: pid.clone(),
                    api_id: api.to_string(),
                    stage: stage.to_string(),
                    route: route.to_string(),
                    rate_limit: limit.rate(),
                    burst_limit: limit.burst().into(),
                    remaining: gcra::remaining(&limit, Some(tat), now),
                    full_at: rfc3339(tat.max(now)),
                };
            // Bucket fields are digests (`Keys::bucket_field`): look up every bucket the plan can
            // have (plan-wide, and per method of each route of its stages).
            let tat_of = |f: &str| field(f).and_then(|v| v.parse::<u64>().ok());
            if let (Some(l), Some(tat)) = (plan.throttle, tat_of(&plan.bucket_field)) {
                buckets.push(bucket(l, tat, "", "", ""));
            }
            let mut seen = std::collections::HashSet::new();
            for (api, stage) in &plan.stages {
                let Some(st) = catalog.stage(api, stage) else {
                    continue;
                };
                // The Envoy RLS catch-all too; an ANY route's buckets are per request method.
                for route in st.routes.iter().chain([&st.any_route]) {
                    let template = route.template.as_str();
                    let methods: Vec<&str> = if route.method == "ANY" {
                        // Envoy RLS descriptors without a method reach the catch-all
                        // with none.
                        let mut m = crate::config::validate::METHODS.to_vec();
                        m.push("");
                        m
                    } else {
                        vec![route.method.as_str()]
                    };
                    for method in methods {
                        let f = Keys::bucket_field(&[pid, api, stage, method, template]);
                        let Some(tat) = tat_of(&f).filter(|_| seen.insert(f)) else {
                            continue;
                        };
                        let limit = plan
                            .method_throttle(api, stage, template, method)
                            .map(|m| m.limit)
                            .or(plan.throttle);
                        if let Some(l) = limit {
                            let route = format!("{method} {template}");
                            buckets.push(bucket(l, tat, api, stage, &route));
                        }
                    }
                }
            }
            if let Some(q) = plan.quota {
                let idx = quota::period_index(q.period, now);
                let used = field(&plan.quota_field)
                    .and_then(|v| quota_state(v, q.period))
                    .filter(|(i, _)| *i == idx)
                    .map_or(0, |(_, n)| n);
                let limit = match field(&plan.quota_override_field).and_then(index_pair) {
                    Some((i, l)) if i == idx => l,
                    _ => quota::effective_limit(q.limit, q.offset, idx, q.initial_index),
                };
                quotas.push(pb::QuotaState {
                    usage_plan_id: pid.clone(),
                    limit,
                    used,
                    remaining: limit.saturating_sub(used),
                    period: period_to_pb(q.period) as i32,
                    reset_at: rfc3339(quota::period_end(q.period, idx).max(0) as u64),
                });
            }
        }
        Ok(Response::new(pb::GetThrottleStateResponse {
            key_id,
            buckets,
            quotas,
            now: rfc3339(now),
        }))
    }

    async fn get_caller_info(
        &self,
        req: Request<pb::GetCallerInfoRequest>,
    ) -> R<pb::GetCallerInfoResponse> {
        let caller = req
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no authenticated admin caller"))?;
        Ok(Response::new(pb::GetCallerInfoResponse {
            scope: caller.scope.to_pb() as i32,
            allowed_rpcs: super::admin_auth::allowed_rpcs(caller.scope)
                .into_iter()
                .map(String::from)
                .collect(),
            token_fingerprint: caller.fingerprint,
        }))
    }

    async fn flush_authorizer_cache(
        &self,
        req: Request<pb::FlushAuthorizerCacheRequest>,
    ) -> R<pb::FlushAuthorizerCacheResponse> {
        let r = req.into_inner();
        check_field("api_id", &r.api_id, MAX_REQUEST_ID_LEN)?;
        check_field("stage", &r.stage, MAX_REQUEST_ID_LEN)?;
        let catalog = self.registry.catalog.load_full();
        let stage = catalog.stage(&r.api_id, &r.stage).ok_or_else(|| {
            Status::not_found(format!(
                "stage {:?} of api {:?} not found",
                r.stage, r.api_id
            ))
        })?;
        let names: BTreeSet<String> = stage
            .routes
            .iter()
            .filter_map(|r| r.authorizer.clone())
            .collect();
        let cache = self.registry.auth_cache();
        let mut removed = 0;
        for name in &names {
            cache.flush_local(name);
            removed += self
                .call(self.registry.store().auth_flush(&cache.prefix(name), name))
                .await?;
        }
        Ok(Response::new(pb::FlushAuthorizerCacheResponse {
            authorizers: names.into_iter().collect(),
            removed,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_crlf_and_blank_lines() {
        let rows = parse_csv("Key,Name\r\n\"a,b\",\"say \"\"hi\"\"\"\r\n\r\nx,y", 10).expect("csv");
        assert_eq!(
            rows,
            vec![
                vec!["Key".to_string(), "Name".into()],
                vec!["a,b".into(), "say \"hi\"".into()],
                vec!["x".into(), "y".into()],
            ]
        );
        assert!(parse_csv("Key\n\"open", 10).is_err());
    }

    #[test]
    fn csv_rows_are_bounded_while_parsing() {
        assert_eq!(parse_csv("Key\na\n\nb\n", 3).expect("fits").len(), 3);
        assert_eq!(parse_csv("Key\na\nb\nc", 3), Err(CsvError::TooManyRows));
        // Stops at the first row past the bound: what follows (unterminated quote) is never read.
        assert_eq!(
            parse_csv("Key\na\nb\nc\n\"open", 3),
            Err(CsvError::TooManyRows)
        );
        assert_eq!(parse_csv("Key\n\"open", 3), Err(CsvError::Unterminated(2)));
    }

    #[test]
    fn usage_key_days_are_bounded_before_reading() {
        // Default page over the longest range fits exactly; a longer page does not.
        assert_eq!(
            usage_page_size(0, MAX_USAGE_DAYS, false).expect("fits"),
            100
        );
        assert_eq!(usage_page_size(0, 30, false).expect("fits"), 100);
        assert_eq!(usage_page_size(500, 73, false).expect("fits"), 500);
        let e = usage_page_size(500, MAX_USAGE_DAYS, false).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains("MAX_USAGE_KEY_DAYS"),
            "{}",
            e.message()
        );
        assert!(e.message().contains("page_size <= 100"), "{}", e.message());
        assert!(usage_page_size(101, MAX_USAGE_DAYS, false).is_err());
        // One key: any range up to MAX_USAGE_DAYS.
        assert!(usage_page_size(500, MAX_USAGE_DAYS, true).is_ok());
    }

    #[test]
    fn dates_are_strict() {
        assert_eq!(parse_date("d", "1970-01-02").expect("date"), 1);
        assert_eq!(date_of_day(20_000), "2024-10-04");
        for bad in [
            "2024-1-01",
            "2024/01/01",
            "2024-13-01",
            "",
            "2024-01-01T00:00:00Z",
        ] {
            assert!(parse_date("d", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_values_are_long_and_distinct() {
        let a = random_string(GENERATED_VALUE_LEN, ALNUM);
        let b = random_string(GENERATED_VALUE_LEN, ALNUM);
        assert_eq!(a.len(), 40);
        assert_ne!(a, b);
        assert!(check_value(&a).is_ok());
    }

    #[test]
    fn pages_follow_the_token() {
        let ids: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
        let (p1, t1) = page(ids.iter().map(|i| (i, i.clone())), 2, "").expect("page");
        assert_eq!(p1, vec!["k0", "k1"]);
        assert_eq!(t1, "k1");
        let (p3, t3) = page(ids.iter().map(|i| (i, i.clone())), 2, "k3").expect("page");
        assert_eq!(p3, vec!["k4"]);
        assert_eq!(t3, "");
        assert!(page(ids.iter().map(|i| (i, i.clone())), 501, "").is_err());
    }
}
