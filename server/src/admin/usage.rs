//! Usage: `GetUsage` (per key per day, `used` and the quota `remaining` after that day) and
//! `UpdateUsage` (the remaining quota of the current period), for API keys and identities.
//!
//! Reads the key's hash through the names the check writes ([`crate::catalog::Plan`]'s
//! fields, from [`crate::store::keys`]) and decodes the values with [`crate::store::state`].
//! Must not import `api`, protos or `tonic`.
use std::collections::{BTreeMap, HashMap};

use super::{
    Admin, AdminError, DEFAULT_PAGE_SIZE, KEY_NOT_FOUND, MAX_REQUEST_ID_LEN, MAX_USAGE_DAYS,
    MAX_USAGE_KEY_DAYS, PLAN_NOT_FOUND, Result, check_field, page, rfc3339,
};
use crate::catalog::is_identity_key_id;
use crate::config::validate::{MAX_QUOTA_LIMIT, parse_timestamp};
use crate::defs::Definitions;
use crate::limiter::quota;
use crate::store::keys::Keys;
use crate::store::state::Override;
use crate::store::{QuotaOp, UsageStore};

const DAY_US: i64 = 86_400_000_000;

/// `YYYY-MM-DD` of a day (days since the epoch).
pub fn date_of_day(day: i64) -> String {
    let s = rfc3339((day.max(0) * DAY_US) as u64);
    s[..10].to_string()
}

/// The day (since the epoch) of a strict `YYYY-MM-DD`; `field` names it in the error.
pub fn parse_date(field: &str, s: &str) -> Result<i64> {
    let shape = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !shape {
        return Err(AdminError::invalid_argument(format!(
            "{field}: expected YYYY-MM-DD, got {s:?}"
        )));
    }
    let us =
        parse_timestamp(s).map_err(|e| AdminError::invalid_argument(format!("{field}: {e}")))?;
    Ok((us / DAY_US as u64) as i64)
}

/// The page size of a `GetUsage` call over `days` days, so keys × days stays within
/// [`MAX_USAGE_KEY_DAYS`]: an explicit `page_size` past it is refused (naming the bound and the
/// largest page that fits); 0 means the default page, shrunk to fit. One key (`key_id`) always
/// fits (`days` ≤ [`MAX_USAGE_DAYS`]).
pub fn usage_page_size(page_size: u32, days: i64, one_key: bool) -> Result<u32> {
    let fits = (MAX_USAGE_KEY_DAYS / days.max(1)).max(1);
    if one_key {
        return Ok(page_size);
    }
    match i64::from(page_size) {
        0 => Ok(fits.min(DEFAULT_PAGE_SIZE as i64) as u32),
        n if n * days > MAX_USAGE_KEY_DAYS => Err(AdminError::invalid_argument(format!(
            "page_size {n} x {days} days = {} key-days; at most {MAX_USAGE_KEY_DAYS} per call \
             (MAX_USAGE_KEY_DAYS): use page_size <= {fits} for this range, or a shorter range",
            n * days
        ))),
        _ => Ok(page_size),
    }
}

/// `GetUsage`'s input.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    /// The plan.
    pub usage_plan_id: String,
    /// One key or identity (empty: the plan's keys, a page of them).
    pub key_id: String,
    /// First day, `YYYY-MM-DD`.
    pub start_date: String,
    /// Last day, `YYYY-MM-DD`.
    pub end_date: String,
    /// Keys per page (0: the default, shrunk to fit [`MAX_USAGE_KEY_DAYS`]).
    pub page_size: u32,
    /// The previous page's token.
    pub page_token: String,
}

/// One day of one key's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayUsage {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Units used that day.
    pub used: u64,
    /// The quota left after that day (`None`: the plan has no quota).
    pub remaining: Option<u64>,
}

/// `GetUsage`'s answer: days per key id, and the next page's token.
#[derive(Debug, Clone, Default)]
pub struct UsageReport {
    /// Key id → its days, in order.
    pub items: HashMap<String, Vec<DayUsage>>,
    /// Empty: no more keys.
    pub next_page_token: String,
}

/// `UpdateUsage`'s answer: the quota of the current period after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaNow {
    /// The period's limit.
    pub limit: u64,
    /// Used so far.
    pub used: u64,
    /// When the period ends (µs).
    pub reset_at_us: u64,
}

impl Admin {
    /// The usage owner's id for `key_id` in `plan_id`: an API key (or identity assignment) in
    /// the plan, or an identity — by its id or as `principal=<v>` / `claim:<name>=<v>` — when
    /// the plan is a stage's `default_usage_plan` (identities without an assignment count
    /// there).
    fn usage_owner(&self, defs: &Definitions, plan_id: &str, key_id: &str) -> Result<String> {
        let id = self.key_ref(key_id)?;
        match defs.keys.get(&id) {
            Some(k) if k.usage_plans.iter().any(|p| p == plan_id) => return Ok(id),
            Some(k) if k.identity.is_none() => {
                return Err(AdminError::not_found(format!(
                    "API key {key_id:?} is not in usage plan {plan_id:?}"
                )));
            }
            None if !is_identity_key_id(&id) => {
                return Err(AdminError::not_found(format!(
                    "{KEY_NOT_FOUND}: {key_id:?}"
                )));
            }
            _ => {}
        }
        if self.registry.catalog.load().is_default_plan(plan_id) {
            Ok(id)
        } else {
            Err(AdminError::not_found(format!(
                "identity {key_id:?} is not assigned to usage plan {plan_id:?}, and that plan is no stage's default_usage_plan"
            )))
        }
    }

    /// The plan's quota operation, from the catalog (what the check path uses).
    fn quota_op(&self, plan_id: &str) -> Result<QuotaOp> {
        self.registry
            .catalog
            .load()
            .plans
            .get(plan_id)
            .and_then(|p| p.quota_op())
            .ok_or_else(|| {
                AdminError::failed_precondition(format!("usage plan {plan_id:?} has no quota"))
            })
    }

    /// `GetUsage`.
    pub async fn get_usage(&self, r: &UsageQuery) -> Result<UsageReport> {
        check_field("usage_plan_id", &r.usage_plan_id, MAX_REQUEST_ID_LEN)?;
        check_field("page_token", &r.page_token, MAX_REQUEST_ID_LEN)?;
        let from = parse_date("start_date", &r.start_date)?;
        let to = parse_date("end_date", &r.end_date)?;
        if to < from {
            return Err(AdminError::invalid_argument(
                "end_date must not be before start_date",
            ));
        }
        let days = to - from + 1;
        if days > MAX_USAGE_DAYS {
            return Err(AdminError::invalid_argument(format!(
                "at most {MAX_USAGE_DAYS} days per call"
            )));
        }
        let page_size = usage_page_size(r.page_size, days, !r.key_id.is_empty())?;
        let defs = self.registry.defs();
        let plan = defs.plans.get(&r.usage_plan_id).ok_or_else(|| {
            AdminError::not_found(format!("{PLAN_NOT_FOUND}: {:?}", r.usage_plan_id))
        })?;
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
        let override_field = Keys::quota_override_field(&r.usage_plan_id);
        // Days past the retention (at least 32 are kept): the memory store has swept them, Redis
        // deletes them at the key's next day change — an idle key's would linger.
        let kept_from = (self.now() / DAY_US as u64) as i64
            - self.registry.catalog.load().usage_retention_days.max(32) as i64;
        let mut items = HashMap::new();
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
                        .and_then(|(_, v)| Override::decode(v))
                }
                None => None,
            };
            let mut out = Vec::new();
            for day in from..=to {
                let used = days.get(&day).copied().unwrap_or(0);
                let remaining = quota.map(|q| {
                    let idx = quota::period_index(q.period, (day * DAY_US) as u64);
                    let start = quota::period_start(q.period, idx) / DAY_US;
                    let limit = over.and_then(|o| o.limit_for(idx)).unwrap_or_else(|| {
                        quota::effective_limit(
                            q.limit,
                            q.offset,
                            idx,
                            quota::period_index(q.period, plan.created_at_us),
                        )
                    });
                    let cum: u64 = days.range(start..=day).map(|(_, n)| n).sum();
                    limit.saturating_sub(cum)
                });
                out.push(DayUsage {
                    date: date_of_day(day),
                    used,
                    remaining,
                });
            }
            items.insert(id, out);
        }
        Ok(UsageReport {
            items,
            next_page_token,
        })
    }

    /// `UpdateUsage`: sets the remaining quota of `key_id` (an API key or identity) in
    /// `plan_id` for the current period.
    pub async fn update_usage(
        &self,
        plan_id: &str,
        key_id: &str,
        remaining: u64,
    ) -> Result<QuotaNow> {
        check_field("usage_plan_id", plan_id, MAX_REQUEST_ID_LEN)?;
        if remaining > MAX_QUOTA_LIMIT {
            return Err(AdminError::invalid_argument(format!(
                "remaining: at most {MAX_QUOTA_LIMIT}"
            )));
        }
        let defs = self.registry.defs();
        if !defs.plans.contains_key(plan_id) {
            return Err(AdminError::not_found(format!(
                "{PLAN_NOT_FOUND}: {plan_id:?}"
            )));
        }
        let owner_id = self.usage_owner(&defs, plan_id, key_id)?;
        let op = self.quota_op(plan_id)?;
        let owner = self.owner(&owner_id);
        let (report, _now) = self
            .call(
                self.registry
                    .store()
                    .quota_set_remaining(&owner, &op, remaining),
            )
            .await?;
        self.usage_changed(&owner);
        Ok(QuotaNow {
            limit: report.limit,
            used: report.used,
            reset_at_us: quota::period_end(op.period, report.index).max(0) as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(e, AdminError::InvalidArgument(_)), "{e:?}");
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
        assert_eq!(
            parse_date("start_date", "2024/01/01"),
            Err(AdminError::invalid_argument(
                "start_date: expected YYYY-MM-DD, got \"2024/01/01\""
            ))
        );
    }
}
