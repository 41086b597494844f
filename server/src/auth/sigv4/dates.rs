//! The dates SigV4 signs with: `X-Amz-Date`, HTTP `Date`, and civil-calendar arithmetic (no clock is read here).
//!
//! Part of [`super`]; imports nothing outside it but std and the hashing crates.
use super::*;

/// Parses `yyyymmddThhmmssZ` into seconds since the Unix epoch.
pub(super) fn parse_amz_date(s: &str) -> Result<i64, SigV4Error> {
    let bad = || malformed("X-Amz-Date must look like yyyymmddThhmmssZ");
    let b = s.as_bytes();
    if b.len() != 16 || b.get(8) != Some(&b'T') || b.get(15) != Some(&b'Z') {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| s.get(range).and_then(parse_digits);
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        num(0..4),
        num(4..6),
        num(6..8),
        num(9..11),
        num(11..13),
        num(13..15),
    ) else {
        return Err(bad());
    };
    epoch_seconds(year, month, day, hour, minute, second).ok_or_else(bad)
}

/// Parses an HTTP `Date` header: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), or the
/// `yyyymmddThhmmssZ` form some SigV4 clients put there.
pub(super) fn parse_http_date(s: &str) -> Result<i64, SigV4Error> {
    if let Ok(t) = parse_amz_date(s) {
        return Ok(t);
    }
    let bad =
        || malformed("Date header must be an IMF-fixdate such as 'Sun, 06 Nov 1994 08:49:37 GMT'");
    let mut fields = s.split(' ');
    let mut next = || fields.next().ok_or_else(bad);
    let (weekday, day, month, year, time, zone) =
        (next()?, next()?, next()?, next()?, next()?, next()?);
    if fields.next().is_some() || zone != "GMT" || weekday.len() != 4 || !weekday.ends_with(',') {
        return Err(bad());
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS
        .iter()
        .position(|m| *m == month)
        .and_then(|i| u64::try_from(i + 1).ok())
        .ok_or_else(bad)?;
    let mut hms = time.split(':');
    let mut hms_next = || hms.next().filter(|f| f.len() == 2).and_then(parse_digits);
    let (Some(hour), Some(minute), Some(second)) = (hms_next(), hms_next(), hms_next()) else {
        return Err(bad());
    };
    if hms.next().is_some() || day.len() != 2 || year.len() != 4 {
        return Err(bad());
    }
    let (Some(day), Some(year)) = (parse_digits(day), parse_digits(year)) else {
        return Err(bad());
    };
    epoch_seconds(year, month, day, hour, minute, second).ok_or_else(bad)
}

/// Parses a short run of ASCII digits (no sign, no whitespace).
pub(super) fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Seconds since the epoch for a UTC civil time, or `None` if any field is out of range.
pub(super) fn epoch_seconds(
    year: u64,
    month: u64,
    day: u64,
    hour: u64,
    minute: u64,
    second: u64,
) -> Option<i64> {
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1970..=9999).contains(&year) || !(1..=month_days).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(
        i64::try_from(year).ok()?,
        i64::try_from(month).ok()?,
        i64::try_from(day).ok()?,
    );
    let seconds = i64::try_from(hour * 3600 + minute * 60 + second).ok()?;
    Some(days * 86_400 + seconds)
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(super) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: `(year, month, day)`.
pub(super) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Formats seconds since the epoch as `yyyymmddThhmmssZ`.
pub(super) fn format_amz_date(epoch_s: i64) -> String {
    let (year, month, day) = civil_from_days(epoch_s.div_euclid(86_400));
    let secs = epoch_s.rem_euclid(86_400);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}
