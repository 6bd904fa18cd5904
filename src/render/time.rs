//! Calendar arithmetic and the small number formats of the page. Times come from shared
//! memory, so any i64 must work without overflow or panic.
#![forbid(unsafe_code)]

use crate::store::Micros;

pub const MICROS: i64 = 1_000_000;

/// A UTC time `YYYY-MM-DD<sep>HH:MM:SS` from µs since the epoch.
pub fn utc(us: Micros, sep: char) -> String {
    let secs = us.div_euclid(MICROS);
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_date(days);
    format!(
        "{y:04}-{m:02}-{d:02}{sep}{:02}:{:02}:{:02}",
        day_secs / 3600,
        day_secs % 3600 / 60,
        day_secs % 60
    )
}

/// `HH:MM` (UTC), for the chart's axis.
pub fn hour_minute(us: Micros) -> String {
    let day_secs = us.div_euclid(MICROS).rem_euclid(86_400);
    format!("{:02}:{:02}", day_secs / 3600, day_secs % 3600 / 60)
}

/// ISO 8601 form for `?auto` and `?json`.
pub fn iso(us: Micros) -> String {
    utc(us, 'T') + "Z"
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01. Works on 400-year
/// cycles counted from 0000-03-01, so that leap days fall at the end of a cycle's year.
fn civil_date(days: i64) -> (i64, u32, u32) {
    const DAYS_PER_CYCLE: i64 = 146_097;
    // 0000-03-01 is 719 468 days before the epoch.
    let shifted = days + 719_468;
    let cycle = shifted.div_euclid(DAYS_PER_CYCLE);
    let day_of_cycle = shifted.rem_euclid(DAYS_PER_CYCLE); // 0..=146096
    let year_of_cycle =
        (day_of_cycle - day_of_cycle / 1460 + day_of_cycle / 36_524 - day_of_cycle / 146_096) / 365;
    let day_of_year =
        day_of_cycle - (365 * year_of_cycle + year_of_cycle / 4 - year_of_cycle / 100);
    let month_from_march = (5 * day_of_year + 2) / 153; // 0 = March … 11 = February
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = cycle * 400 + year_of_cycle + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// Whole seconds until `until`, rounded up (like `Retry-After`), never negative.
pub fn secs_until(until: Micros, now: Micros) -> i64 {
    let left = until.saturating_sub(now).max(0);
    left / MICROS + i64::from(left % MICROS != 0)
}

/// `part` of `whole` in tenths of a percent (0 when `whole` is 0).
pub fn permille(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        0
    } else {
        (u128::from(part) * 1000 / u128::from(whole)).min(u128::from(u64::MAX)) as u64
    }
}

/// `33.3` from 333 ‰.
pub fn percent_number(permille: u64) -> String {
    format!("{}.{}", permille / 10, permille % 10)
}

pub fn percent_text(permille: u64) -> String {
    percent_number(permille) + "%"
}

pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
