//! The packed format of the values in an owner hash: the one Rust codec (the Lua scripts have
//! their one copy, [`super::redis::scripts::STATE`], which follows it field by field).
//!
//! - a plan's state field (`q:<plan>`, [`PlanState`]): `<period index>:<quota used>`, or when
//!   the key's daily usage is recorded `<day>:<quota used><d|w|m>:<used that day>` — the quota's
//!   period index follows from the day (periods start at midnight UTC), the letter names the
//!   period that was counted (none: a plan without a quota), so a plan whose period changed
//!   starts at 0;
//! - an `UpdateUsage` override (`ql:<plan>`, [`Override`]): `<period index>:<limit>`;
//! - a token bucket's theoretical arrival time and an override's stamp: µs as a decimal.
//!
//! Decoding accepts exactly what the scripts' patterns accept (`^(-?%d+):(%d+)(%a?):?(%d*)$`
//! and `^(-?%d+):(%d+)$`): data written by any version still reads. Must not import anything
//! but the limiter's [`Period`] and [`quota`] calendar.
use crate::limiter::{Period, quota};

/// µs in a day.
const DAY_US: u64 = 86_400_000_000;

/// A plan's state field (`q:<plan>`) in an owner hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanState {
    /// `<period index>:<used>`: a quota, no daily usage.
    Quota {
        /// The quota period counted.
        index: i64,
        /// Units used in it.
        used: u64,
    },
    /// `<day>:<used><letter>:<today>`: daily usage, and the quota (if any) riding on it.
    Daily {
        /// The last active day (days since the epoch).
        day: i64,
        /// Quota units used in the period holding `day`.
        used: u64,
        /// The period the quota counted (`None`: the plan had no quota, or a letter this
        /// version does not know).
        period: Option<Period>,
        /// Units used on `day`.
        today: u64,
    },
}

/// The letter naming a quota period in a [`PlanState::Daily`] value.
pub fn period_letter(p: Period) -> char {
    match p {
        Period::Day => 'd',
        Period::Week => 'w',
        Period::Month => 'm',
    }
}

fn letter_period(c: char) -> Option<Period> {
    match c {
        'd' => Some(Period::Day),
        'w' => Some(Period::Week),
        'm' => Some(Period::Month),
        _ => None,
    }
}

/// Splits a leading run of ASCII digits off `s` (possibly empty).
fn digits(s: &str) -> (&str, &str) {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    s.split_at(n)
}

/// `-?%d+` then `rest`.
fn signed(s: &str) -> Option<(i64, &str)> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let (d, rest) = digits(body);
    if d.is_empty() {
        return None;
    }
    let v: i64 = d.parse().ok()?;
    Some((if neg { -v } else { v }, rest))
}

/// `%d+` then `rest`.
fn unsigned(s: &str) -> Option<(u64, &str)> {
    let (d, rest) = digits(s);
    if d.is_empty() {
        return None;
    }
    Some((d.parse().ok()?, rest))
}

impl PlanState {
    /// Reads a stored value; `None` for anything the scripts would not read either.
    pub fn decode(s: &str) -> Option<Self> {
        let (a, rest) = signed(s)?;
        let rest = rest.strip_prefix(':')?;
        let (used, rest) = unsigned(rest)?;
        // `(%a?)`: one optional letter.
        let (letter, rest) = match rest.chars().next() {
            Some(c) if c.is_ascii_alphabetic() => (Some(c), &rest[1..]),
            _ => (None, rest),
        };
        let rest = rest.strip_prefix(':').unwrap_or(rest);
        let (today, rest) = digits(rest);
        if !rest.is_empty() {
            return None;
        }
        match (today.is_empty(), letter) {
            (false, _) => Some(PlanState::Daily {
                day: a,
                used,
                period: letter.and_then(letter_period),
                today: today.parse().ok()?,
            }),
            (true, None) => Some(PlanState::Quota { index: a, used }),
            // A letter without the day's usage: not a value any script reads.
            (true, Some(_)) => None,
        }
    }

    /// The stored value.
    pub fn encode(&self) -> String {
        match *self {
            PlanState::Quota { index, used } => format!("{index}:{used}"),
            PlanState::Daily {
                day,
                used,
                period,
                today,
            } => {
                let letter = period.map(period_letter).map(String::from);
                format!("{day}:{used}{}:{today}", letter.unwrap_or_default())
            }
        }
    }

    /// The quota this state counts for a plan whose quota has `period`: `(period index, used)`.
    /// `None` when the state counted another period (or none): the plan starts at 0.
    pub fn quota(&self, period: Period) -> Option<(i64, u64)> {
        match *self {
            PlanState::Quota { index, used } => Some((index, used)),
            PlanState::Daily {
                day,
                used,
                period: Some(p),
                ..
            } if p == period => Some((quota::period_index(p, day.max(0) as u64 * DAY_US), used)),
            PlanState::Daily { .. } => None,
        }
    }

    /// The last active day and its usage, `(day, used that day)`, when daily usage is recorded.
    pub fn last_day(&self) -> Option<(i64, u64)> {
        match *self {
            PlanState::Daily { day, today, .. } => Some((day, today)),
            PlanState::Quota { .. } => None,
        }
    }
}

/// An `UpdateUsage` override (`ql:<plan>`): the limit of one quota period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Override {
    /// The period it applies to.
    pub index: i64,
    /// The period's limit.
    pub limit: u64,
}

impl Override {
    /// Reads a stored value (`^(-?%d+):(%d+)$`).
    pub fn decode(s: &str) -> Option<Self> {
        let (index, rest) = signed(s)?;
        let (limit, rest) = unsigned(rest.strip_prefix(':')?)?;
        rest.is_empty().then_some(Override { index, limit })
    }

    /// The stored value.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.index, self.limit)
    }

    /// The limit when the override applies to period `index`.
    pub fn limit_for(&self, index: i64) -> Option<u64> {
        (self.index == index).then_some(self.limit)
    }
}

/// Reads a µs value (a bucket's theoretical arrival time, an override's stamp).
pub fn decode_us(s: &str) -> Option<u64> {
    s.parse().ok()
}

/// A µs value as stored.
pub fn encode_us(us: u64) -> String {
    us.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_state_round_trips() {
        let values = [
            PlanState::Quota { index: 0, used: 0 },
            PlanState::Quota {
                index: -3,
                used: 42,
            },
            PlanState::Daily {
                day: 20_000,
                used: 7,
                period: Some(Period::Week),
                today: 3,
            },
            PlanState::Daily {
                day: 20_000,
                used: 0,
                period: None,
                today: 9,
            },
        ];
        for v in values {
            assert_eq!(PlanState::decode(&v.encode()), Some(v), "{}", v.encode());
        }
    }

    #[test]
    fn plan_state_reads_what_the_scripts_wrote() {
        // Values exactly as the Lua scripts write them (`%.0f`).
        assert_eq!(
            PlanState::decode("20000:5m:2"),
            Some(PlanState::Daily {
                day: 20_000,
                used: 5,
                period: Some(Period::Month),
                today: 2,
            })
        );
        assert_eq!(
            PlanState::decode("20000:0:4"),
            Some(PlanState::Daily {
                day: 20_000,
                used: 0,
                period: None,
                today: 4,
            })
        );
        assert_eq!(
            PlanState::decode("657:12"),
            Some(PlanState::Quota {
                index: 657,
                used: 12
            })
        );
        // The pattern's corners: a trailing colon, a letter without its colon.
        assert_eq!(
            PlanState::decode("5:3:"),
            Some(PlanState::Quota { index: 5, used: 3 })
        );
        assert_eq!(
            PlanState::decode("5:3d4").and_then(|s| s.last_day()),
            Some((5, 4))
        );
        for bad in [
            "", "5", "5:", ":3", "5:3d", "5:-3", "+5:3", "5:3:x", "5:3dd:1", "a:b",
        ] {
            assert_eq!(PlanState::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_quota_counts_only_its_own_period() {
        let day = 20_000; // 2024-10-04, a Friday
        let s = PlanState::Daily {
            day,
            used: 5,
            period: Some(Period::Week),
            today: 1,
        };
        let week = quota::period_index(Period::Week, day as u64 * DAY_US);
        assert_eq!(s.quota(Period::Week), Some((week, 5)));
        assert_eq!(s.quota(Period::Day), None, "the plan's period changed");
        let no_quota = PlanState::Daily {
            day,
            used: 5,
            period: None,
            today: 1,
        };
        assert_eq!(no_quota.quota(Period::Week), None);
        assert_eq!(
            PlanState::Quota { index: 9, used: 2 }.quota(Period::Month),
            Some((9, 2))
        );
        assert_eq!(PlanState::Quota { index: 9, used: 2 }.last_day(), None);
        assert_eq!(s.last_day(), Some((day, 1)));
    }

    #[test]
    fn overrides() {
        let o = Override {
            index: 657,
            limit: 10,
        };
        assert_eq!(o.encode(), "657:10");
        assert_eq!(Override::decode("657:10"), Some(o));
        assert_eq!(Override::decode("-1:0").map(|o| o.index), Some(-1));
        assert_eq!(o.limit_for(657), Some(10));
        assert_eq!(o.limit_for(658), None);
        for bad in ["657", "657:", "657:10:1", "657:10d", "x:1"] {
            assert_eq!(Override::decode(bad), None, "{bad:?}");
        }
        assert_eq!(
            decode_us(&encode_us(1_733_600_000_000_000)),
            Some(1_733_600_000_000_000)
        );
    }
}
