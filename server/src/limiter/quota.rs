//! Quota periods in UTC: DAY (calendar day), WEEK (ISO week, from Monday 00:00) and MONTH
//! (calendar month). A period is named by an integer index so state can store "which period
//! this count belongs to" and never needs a reset job: a count for an older index is simply 0.
//!
//! The Lua script carries a copy of [`period_index`]; both use Howard Hinnant's
//! `civil_from_days` so months need no calendar library.
use serde::{Deserialize, Serialize};

const US_PER_DAY: i64 = 86_400_000_000;

/// Largest quota limit: counts stay exact in the Redis script's doubles (2^53 minus a cost).
pub const MAX_QUOTA_LIMIT: u64 = (1 << 53) - 1_000_000;

/// A quota period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Period {
    /// UTC calendar day.
    Day,
    /// ISO week, Monday 00:00 UTC to the next Monday.
    Week,
    /// UTC calendar month.
    Month,
}

impl Period {
    /// The code the Lua script uses for this period.
    pub fn code(self) -> u8 {
        match self {
            Period::Day => 1,
            Period::Week => 2,
            Period::Month => 3,
        }
    }
    /// The name used in `RateLimit` header policies.
    pub fn policy_name(self) -> &'static str {
        match self {
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
        }
    }
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month 1..=12, day) → days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The index of the period containing `now_us` (microseconds since the epoch).
pub fn period_index(period: Period, now_us: u64) -> i64 {
    let days = (now_us as i64).div_euclid(US_PER_DAY);
    match period {
        Period::Day => days,
        // 1970-01-01 was a Thursday: shift so weeks start on Monday (1969-12-29 = week 0).
        Period::Week => (days + 3).div_euclid(7),
        Period::Month => {
            let (y, m, _) = civil_from_days(days);
            y * 12 + i64::from(m) - 1
        }
    }
}

/// Start of period `index`, microseconds since the epoch (negative before 1970).
pub fn period_start(period: Period, index: i64) -> i64 {
    let days = match period {
        Period::Day => index,
        Period::Week => index * 7 - 3,
        Period::Month => {
            days_from_civil(index.div_euclid(12), (index.rem_euclid(12) + 1) as u32, 1)
        }
    };
    days * US_PER_DAY
}

/// End (exclusive) of period `index`: the moment the quota resets.
pub fn period_end(period: Period, index: i64) -> i64 {
    period_start(period, index + 1)
}

/// The limit that applies in period `index`: `offset` is subtracted in the plan's initial period
/// only (AWS semantics: it is a count, not a time shift).
pub fn effective_limit(limit: u64, offset: u64, index: i64, initial_index: i64) -> u64 {
    if index == initial_index {
        limit.saturating_sub(offset)
    } else {
        limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i64, m: u32, d: u32, h: i64) -> u64 {
        (days_from_civil(y, m, d) * US_PER_DAY + h * 3_600_000_000) as u64
    }

    #[test]
    fn civil_roundtrip() {
        for days in -800_000..800_000i64 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn day_boundaries() {
        let i = period_index(Period::Day, at(2026, 11, 26, 23));
        assert_eq!(period_index(Period::Day, at(2026, 11, 27, 0)), i + 1);
        assert_eq!(period_end(Period::Day, i), at(2026, 11, 27, 0) as i64);
    }

    #[test]
    fn weeks_start_monday() {
        // 2026-11-23 is a Monday, 2026-11-29 a Sunday.
        let mon = period_index(Period::Week, at(2026, 11, 23, 0));
        assert_eq!(period_index(Period::Week, at(2026, 11, 29, 23)), mon);
        assert_eq!(period_index(Period::Week, at(2026, 11, 22, 23)), mon - 1);
        assert_eq!(period_start(Period::Week, mon), at(2026, 11, 23, 0) as i64);
        assert_eq!(period_end(Period::Week, mon), at(2026, 11, 30, 0) as i64);
    }

    #[test]
    fn months_are_calendar() {
        let feb = period_index(Period::Month, at(2024, 2, 29, 12));
        assert_eq!(period_index(Period::Month, at(2024, 2, 1, 0)), feb);
        assert_eq!(period_index(Period::Month, at(2024, 3, 1, 0)), feb + 1);
        assert_eq!(period_end(Period::Month, feb), at(2024, 3, 1, 0) as i64);
        let dec = period_index(Period::Month, at(2026, 12, 31, 23));
        assert_eq!(period_end(Period::Month, dec), at(2027, 1, 1, 0) as i64);
    }

    #[test]
    fn offset_only_in_initial_period() {
        assert_eq!(effective_limit(1000, 300, 5, 5), 700);
        assert_eq!(effective_limit(1000, 300, 6, 5), 1000);
    }
}
