//! From one directive line to a validated [`Setting`]: one parser per directive, named by its
//! row of the directive table. Every error names the directive as the user wrote it and the
//! offending value.

use super::cache::parse_cache;
use super::{
    lookup, ConfigError, Deadline, Enabled, ListItem, Penalty, Setting, MAX_BLOCKING_PERIODS,
};
use crate::client::Whitelist;

/// Parses one directive line: `name` (case-insensitive, aliases allowed) and the unparsed rest
/// of the line, tokenised like httpd does.
pub fn parse(name: &str, raw_args: &str) -> Result<Setting, ConfigError> {
    lookup(name)
        .ok_or_else(|| ConfigError(format!("{name}: unknown directive")))?
        .parse(name, raw_args)
}

pub(super) fn enabled(l: &Line) -> Result<Setting, ConfigError> {
    let v = l.one("on|off|monitor")?;
    let e =
        enabled_value(v).ok_or_else(|| l.bad(v, "is not one of on, off, true, false, monitor"))?;
    Ok(Setting::Enabled(e))
}

pub(super) fn page_count(l: &Line) -> Result<Setting, ConfigError> {
    Ok(Setting::PageCount(l.positive("COUNT")?))
}

pub(super) fn page_interval(l: &Line) -> Result<Setting, ConfigError> {
    Ok(Setting::PageInterval(l.positive("SECONDS")?))
}

pub(super) fn site_count(l: &Line) -> Result<Setting, ConfigError> {
    Ok(Setting::SiteCount(l.positive("COUNT")?))
}

pub(super) fn site_interval(l: &Line) -> Result<Setting, ConfigError> {
    Ok(Setting::SiteInterval(l.positive("SECONDS")?))
}

pub(super) fn prefix_count(l: &Line) -> Result<Setting, ConfigError> {
    let [len, count] = l.args else {
        return Err(l.arity("a prefix length (24, 56 or 48) and a count or off"));
    };
    let level = match len.parse::<u8>() {
        Ok(n) if crate::prefix::is_level(n) => n,
        _ => return Err(l.bad(len, "is not a counted prefix length (24, 56 or 48)")),
    };
    if count.eq_ignore_ascii_case("off") {
        return Ok(Setting::PrefixCount(level, None));
    }
    let n = positive(count).map_err(|why| l.bad(count, why))?;
    Ok(Setting::PrefixCount(level, Some(n)))
}

pub(super) fn under_attack(l: &Line) -> Result<Setting, ConfigError> {
    let v = l.one("off|on|auto")?;
    let mode =
        crate::attack::Mode::parse(v).ok_or_else(|| l.bad(v, "is not one of off, on, auto"))?;
    Ok(Setting::UnderAttack(mode))
}

/// `REQUESTS_PER_SECOND [BUSY_PERCENT]`: a rate > 0, a percentage 1..=100.
pub(super) fn under_attack_threshold(l: &Line) -> Result<Setting, ConfigError> {
    let rate = |v: &str| positive(v).map_err(|why| l.bad(v, why));
    let busy = |v: &str| match positive(v) {
        Ok(p @ 1..=100) => Ok(p as u8),
        _ => Err(l.bad(v, "is not a percentage of busy workers between 1 and 100")),
    };
    let threshold = match l.args {
        [r] => crate::attack::Threshold {
            rate: rate(r)?,
            busy_percent: None,
        },
        [r, b] => crate::attack::Threshold {
            rate: rate(r)?,
            busy_percent: Some(busy(b)?),
        },
        _ => return Err(l.arity("REQUESTS_PER_SECOND [BUSY_PERCENT]")),
    };
    Ok(Setting::UnderAttackThreshold(threshold))
}

/// `COMMAND_MS [CONNECT_MS]`: milliseconds, 1 to 60000.
pub(super) fn cache_timeout(l: &Line) -> Result<Setting, ConfigError> {
    let ms = |v: &str| match positive(v) {
        Ok(n @ 1..=60_000) => Ok(n),
        _ => Err(l.bad(v, "is not a number of milliseconds between 1 and 60000")),
    };
    match l.args {
        [c] => Ok(Setting::CacheTimeout(
            ms(c)?,
            crate::farm::CONNECT_TIMEOUT_MS,
        )),
        [c, k] => Ok(Setting::CacheTimeout(ms(c)?, ms(k)?)),
        _ => Err(l.arity("COMMAND_MS [CONNECT_MS]")),
    }
}

pub(super) fn hash_table_size(l: &Line) -> Result<Setting, ConfigError> {
    Ok(Setting::HashTableSize(l.positive("SIZE")?))
}

pub(super) fn page_status(l: &Line) -> Result<Setting, ConfigError> {
    Ok(Setting::PageStatus(l.penalty()?))
}

pub(super) fn site_status_penalty(l: &Line) -> Result<Setting, ConfigError> {
    Ok(Setting::SiteStatusPenalty(l.penalty()?))
}

pub(super) fn page_deadline(l: &Line) -> Result<Setting, ConfigError> {
    Ok(Setting::PageDeadline(l.deadline()?))
}

pub(super) fn canonical(l: &Line) -> Result<Setting, ConfigError> {
    let v = l.one("on|off")?;
    let on = flag(v).ok_or_else(|| l.bad(v, "is not one of on, off, true, false"))?;
    Ok(Setting::Canonical(on))
}

pub(super) fn blocking_period(l: &Line) -> Result<Setting, ConfigError> {
    Ok(Setting::BlockingPeriod(l.periods()?))
}

pub(super) fn http_status(l: &Line) -> Result<Setting, ConfigError> {
    let v = l.one("STATUS")?;
    match status(v) {
        Some(s) if (400..=599).contains(&s) => Ok(Setting::HttpStatus(s)),
        _ => Err(l.bad(v, "is not an HTTP error status (400-599)")),
    }
}

pub(super) fn whitelist(l: &Line) -> Result<Setting, ConfigError> {
    if l.args.is_empty() {
        return Err(l.arity("one or more addresses"));
    }
    let entries = l
        .args
        .iter()
        .map(|a| Whitelist::parse_entry(a).map_err(|why| ConfigError(format!("{}: {why}", l.name))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Setting::Whitelist(entries))
}

pub(super) fn ipv6_prefix(l: &Line) -> Result<Setting, ConfigError> {
    let v = l.one("BITS")?;
    match positive(v) {
        Ok(p @ 1..=128) => Ok(Setting::Ipv6Prefix(p as u8)),
        _ => Err(l.bad(v, "is not a prefix length between 1 and 128")),
    }
}

pub(super) fn log_dir(l: &Line) -> Result<Setting, ConfigError> {
    let v = l.one("DIRECTORY")?;
    if !v.starts_with('/') {
        return Err(l.bad(v, "is not an absolute directory path"));
    }
    if v.contains('\0') {
        return Err(l.bad(v, "contains a NUL byte"));
    }
    Ok(Setting::LogDir(v.to_string()))
}

pub(super) fn system_command(l: &Line) -> Result<Setting, ConfigError> {
    let v = l.one("COMMAND (quote a command containing spaces)")?;
    if v.trim().is_empty() {
        return Err(l.bad(v, "is empty"));
    }
    if v.contains(['\0', '\n', '\r']) {
        return Err(l.bad(v, "contains a control character"));
    }
    Ok(Setting::SystemCommand(v.to_string()))
}

pub(super) fn email_notify(l: &Line) -> Result<Setting, ConfigError> {
    let v = l.one("ADDRESS")?;
    if !email_list(v) {
        return Err(l.bad(
            v,
            "is not a mail address (user@domain; several separated by commas, no spaces)",
        ));
    }
    Ok(Setting::EmailNotify(v.to_string()))
}

pub(super) fn cache(l: &Line) -> Result<Setting, ConfigError> {
    let v = l.one("shmcb[:none](BYTES) or PROVIDER:ARGS")?;
    Ok(Setting::Cache(
        parse_cache(v).map_err(|why| l.bad(v, &why))?,
    ))
}

pub(super) fn challenge(l: &Line) -> Result<Setting, ConfigError> {
    let v = l.one("on|off")?;
    let on = flag(v).ok_or_else(|| l.bad(v, "is not one of on, off, true, false"))?;
    Ok(Setting::Challenge(on))
}

pub(super) fn challenge_difficulty(l: &Line) -> Result<Setting, ConfigError> {
    l.difficulty()
}

pub(super) fn challenge_pass_time(l: &Line) -> Result<Setting, ConfigError> {
    Ok(Setting::ChallengePassTime(l.positive("SECONDS")?))
}

pub(super) fn challenge_pass_limit(l: &Line) -> Result<Setting, ConfigError> {
    l.pass_limit()
}

pub(super) fn challenge_key(l: &Line) -> Result<Setting, ConfigError> {
    let v = l.one("FILE")?;
    if !v.starts_with('/') {
        return Err(l.bad(v, "is not an absolute file path"));
    }
    let key = crate::challenge::Key::read_file(v).map_err(|why| l.bad(v, &why.to_string()))?;
    Ok(Setting::ChallengeKey {
        path: v.to_string(),
        key,
    })
}

/// A directive line being parsed: the name as written and its words.
pub(crate) struct Line<'a> {
    name: &'a str,
    args: &'a [String],
}

impl<'a> Line<'a> {
    pub(super) fn new(name: &'a str, args: &'a [String]) -> Line<'a> {
        Line { name, args }
    }
}

impl Line<'_> {
    fn bad(&self, value: &str, why: &str) -> ConfigError {
        ConfigError(format!("{}: '{}' {}", self.name, value, why))
    }

    fn arity(&self, expected: &str) -> ConfigError {
        let got = match self.args.len() {
            0 => "none".to_string(),
            n => format!("{n}: '{}'", self.args.join(" ")),
        };
        ConfigError(format!("{}: takes {expected}, got {got}", self.name))
    }

    fn one(&self, what: &str) -> Result<&str, ConfigError> {
        match self.args {
            [v] => Ok(v),
            _ => Err(self.arity(&format!("one argument, {what}"))),
        }
    }

    fn positive(&self, what: &str) -> Result<u32, ConfigError> {
        let v = self.one(what)?;
        positive(v).map_err(|why| self.bad(v, why))
    }

    fn penalty(&self) -> Result<ListItem<Penalty>, ConfigError> {
        match self.args {
            [off] if off.eq_ignore_ascii_case("off") => Ok(ListItem::Off),
            [st, sc] => {
                let status = match status(st) {
                    Some(s) if (100..=999).contains(&s) => s,
                    _ => return Err(self.bad(st, "is not an HTTP status (100-999)")),
                };
                let score = score(sc).map_err(|why| self.bad(sc, why))?;
                Ok(ListItem::Entry(Penalty { status, score }))
            }
            _ => Err(self.arity("STATUS SCORE, or off")),
        }
    }

    fn deadline(&self) -> Result<ListItem<Deadline>, ConfigError> {
        match self.args {
            [off] if off.eq_ignore_ascii_case("off") => Ok(ListItem::Off),
            [secs, sc] => {
                let threshold_us = seconds_us(secs).map_err(|why| self.bad(secs, why))?;
                let score = score(sc).map_err(|why| self.bad(sc, why))?;
                Ok(ListItem::Entry(Deadline {
                    threshold_us,
                    score,
                }))
            }
            _ => Err(self.arity("SECONDS SCORE, or off")),
        }
    }

    /// `BITS [STEP]`: BITS 1..=MAX_BITS, STEP 0..=8.
    fn difficulty(&self) -> Result<Setting, ConfigError> {
        use crate::challenge::{DEFAULT_STEP_BITS, MAX_BITS};
        let bits = |v: &str, lo: u32, hi: u32| match v.parse::<u32>() {
            Ok(b) if (lo..=hi).contains(&b) && v.bytes().all(|c| c.is_ascii_digit()) => Ok(b as u8),
            _ => Err(self.bad(v, &format!("is not a number of bits between {lo} and {hi}"))),
        };
        match self.args {
            [base] => Ok(Setting::ChallengeDifficulty(
                bits(base, 1, u32::from(MAX_BITS))?,
                DEFAULT_STEP_BITS,
            )),
            [base, step] => Ok(Setting::ChallengeDifficulty(
                bits(base, 1, u32::from(MAX_BITS))?,
                bits(step, 0, 8)?,
            )),
            _ => Err(self.arity("BITS [STEP]")),
        }
    }

    /// `PASSES [BITS]`: PASSES 1..=1000, BITS 1..=8 (each further pass must cost more).
    fn pass_limit(&self) -> Result<Setting, ConfigError> {
        use crate::challenge::DEFAULT_PASS_STEP_BITS;
        let number = |v: &str, lo: u32, hi: u32, what: &str| match v.parse::<u32>() {
            Ok(n) if (lo..=hi).contains(&n) && v.bytes().all(|c| c.is_ascii_digit()) => Ok(n),
            _ => Err(self.bad(
                v,
                &format!("is not a number of {what} between {lo} and {hi}"),
            )),
        };
        let passes = |v| number(v, 1, 1000, "passes");
        match self.args {
            [limit] => Ok(Setting::ChallengePassLimit(
                passes(limit)?,
                DEFAULT_PASS_STEP_BITS,
            )),
            [limit, step] => Ok(Setting::ChallengePassLimit(
                passes(limit)?,
                number(step, 1, 8, "bits")? as u8,
            )),
            _ => Err(self.arity("PASSES [BITS]")),
        }
    }

    fn periods(&self) -> Result<Vec<u32>, ConfigError> {
        if self.args.is_empty() {
            return Err(self.arity("1 to 16 values in seconds"));
        }
        if self.args.len() > MAX_BLOCKING_PERIODS {
            return Err(ConfigError(format!(
                "{}: '{}' has {} values; at most {MAX_BLOCKING_PERIODS} block generations are allowed",
                self.name,
                self.args.join(" "),
                self.args.len()
            )));
        }
        self.args
            .iter()
            .map(|v| positive(v).map_err(|why| self.bad(v, why)))
            .collect()
    }
}

fn enabled_value(v: &str) -> Option<Enabled> {
    if v.eq_ignore_ascii_case("monitor") {
        return Some(Enabled::Monitor);
    }
    flag(v).map(|on| if on { Enabled::On } else { Enabled::Off })
}

fn flag(v: &str) -> Option<bool> {
    if v.eq_ignore_ascii_case("on") || v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Decimal digits only (no sign, no hex, no trailing unit: mod_evasive's `strtol` read
/// "10s" as 10 and "0x10" as 16; here both are errors), value > 0.
pub(crate) fn positive(v: &str) -> Result<u32, &'static str> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is not a positive integer");
    }
    match v.parse::<u32>() {
        Ok(0) => Err("is not a positive integer"),
        Ok(n) => Ok(n),
        Err(_) => Err("is too large (at most 4294967295)"),
    }
}

/// Three decimal digits.
fn status(v: &str) -> Option<u16> {
    if v.len() == 3 && v.bytes().all(|b| b.is_ascii_digit()) {
        v.parse().ok()
    } else {
        None
    }
}

/// An integer, optionally signed.
pub(crate) fn score(v: &str) -> Result<i64, &'static str> {
    let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is not an integer score");
    }
    v.parse().map_err(|_| "is out of range for a score")
}

/// Seconds as a decimal (`2`, `0.5`, `.25`, `10.`), to microseconds, exactly (no float
/// rounding: `2.3` is 2 300 000 µs). Digits past the sixth decimal are below the clock's
/// resolution and ignored.
pub(crate) fn seconds_us(v: &str) -> Result<u64, &'static str> {
    const WHY: &str = "is not a duration in seconds >= 0 (e.g. 0.5)";
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return Err(WHY);
    }
    let whole: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| "is too large a duration")?
    };
    let mut micros = 0u64;
    for i in 0..6 {
        let d = frac.as_bytes().get(i).map_or(0, |b| u64::from(b - b'0'));
        micros = micros * 10 + d;
    }
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(micros))
        .ok_or("is too large a duration")
}

/// `user@domain[,user@domain…]`: characters that are safe in a mail header and in a command
/// line (no spaces, quotes, `;`, `|`, `$`, `<`, `>`, newlines, …).
fn email_list(v: &str) -> bool {
    !v.is_empty() && v.split(',').all(email)
}

fn email(a: &str) -> bool {
    let Some((local, domain)) = a.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._%+-=".contains(&b));
    let domain_ok = !domain.is_empty()
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    local_ok && domain_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_integers() {
        assert_eq!(positive("1"), Ok(1));
        assert_eq!(positive("010"), Ok(10));
        assert_eq!(positive("4294967295"), Ok(u32::MAX));
        for bad in ["", "0", "-1", "+1", "1.5", "abc", "10s", "0x10", " 1", "00"] {
            assert!(positive(bad).is_err(), "{bad}");
        }
        assert_eq!(
            positive("4294967296"),
            Err("is too large (at most 4294967295)")
        );
    }

    #[test]
    fn scores() {
        assert_eq!(score("50"), Ok(50));
        assert_eq!(score("-5"), Ok(-5));
        assert_eq!(score("+7"), Ok(7));
        assert_eq!(score("0"), Ok(0));
        assert_eq!(score("9223372036854775807"), Ok(i64::MAX));
        assert_eq!(score("-9223372036854775808"), Ok(i64::MIN));
        for bad in ["", "-", "+", "1.5", "x", "--1", "9223372036854775808"] {
            assert!(score(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seconds() {
        assert_eq!(seconds_us("0"), Ok(0));
        assert_eq!(seconds_us("0.5"), Ok(500_000));
        assert_eq!(seconds_us(".25"), Ok(250_000));
        assert_eq!(seconds_us("10."), Ok(10_000_000));
        assert_eq!(seconds_us("2.3"), Ok(2_300_000));
        assert_eq!(seconds_us("0.000001"), Ok(1));
        assert_eq!(seconds_us("0.0000019"), Ok(1));
        assert_eq!(seconds_us("1.000001"), Ok(1_000_001));
        for bad in [
            "",
            ".",
            "-1",
            "1e3",
            "1,5",
            "a",
            "1.2.3",
            " 1",
            "+1",
            "99999999999999999999",
        ] {
            assert!(seconds_us(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mail_addresses() {
        for ok in [
            "root@localhost",
            "ops+dos@example.com",
            "a@b.c,d@e.f",
            "first.last@sub-1.example.org",
        ] {
            assert!(email_list(ok), "{ok}");
        }
        for bad in [
            "",
            "root",
            "@x",
            "x@",
            "a@b@c",
            "a b@c",
            "a@b c",
            "a@b;rm",
            "a@b\nBcc: x@y",
            "$(id)@x",
            "a@b,",
            "a@.b",
            "a@b.",
            "<a@b>",
            "a@b|c",
            "`a`@b",
        ] {
            assert!(!email_list(bad), "{bad}");
        }
    }
}
