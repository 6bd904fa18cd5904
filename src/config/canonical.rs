//! The effective settings written back as directive lines (canonical names), for the status
//! page and for logs. Every line parses back to the same value.

use super::rows::*;
use super::tokens::quote;
use super::{DirConfig, DirectiveInfo, ServerSettings};

/// The effective settings as `shield.conf` lines: `DOSSiteCount 500`,
/// `DOSSiteStatusPenalty 404 50`, `DOSPageDeadline 0.50 5`, `DOSBlockingPeriod 5 60 120`,
/// `DOSWhitelist 10.0.0.0/8 192.168.*.*`, `DOSCache shmcb:none(524288)`, …
/// Unset optional directives (command, mail, empty lists) produce no line.
pub fn canonical_lines(server: &ServerSettings, dir: &DirConfig) -> Vec<String> {
    let mut out = Vec::with_capacity(24);
    out.push(line(&ENABLED, dir.enabled().as_str()));
    out.push(line(&SITE_COUNT, server.site_count));
    out.push(line(&SITE_INTERVAL, server.site_interval));
    out.extend(server.prefix_counts.lines());
    for p in &server.site_status_penalties {
        out.push(line(
            &SITE_STATUS_PENALTY,
            format_args!("{} {}", p.status, p.score),
        ));
    }
    out.push(line(&PAGE_COUNT, dir.page_count()));
    out.push(line(&PAGE_INTERVAL, dir.page_interval()));
    for p in dir.page_status_penalties() {
        out.push(line(&PAGE_STATUS, format_args!("{} {}", p.status, p.score)));
    }
    for d in dir.page_deadlines() {
        out.push(line(
            &PAGE_DEADLINE,
            format_args!("{} {}", seconds(d.threshold_us), d.score),
        ));
    }
    out.push(line(&CANONICAL, if dir.canonical() { "on" } else { "off" }));
    let periods: Vec<String> = server.blocking_periods.iter().map(u32::to_string).collect();
    out.push(line(&BLOCKING_PERIOD, periods.join(" ")));
    out.push(line(&HTTP_STATUS, server.http_status));
    if !server.whitelist.is_empty() {
        out.push(line(&WHITELIST, server.whitelist.entries().join(" ")));
    }
    out.push(line(&IPV6_PREFIX, server.ipv6_prefix));
    out.push(line(&LOG_DIR, quote(&server.log_dir)));
    if let Some(c) = &server.system_command {
        out.push(line(&SYSTEM_COMMAND, quote(c)));
    }
    if let Some(m) = &server.email_notify {
        out.push(line(&EMAIL_NOTIFY, quote(m)));
    }
    out.push(line(&CACHE, quote(&server.cache.to_string())));
    if let crate::config::CacheSpec::Farm(f) = &server.cache {
        out.push(line(
            &CACHE_TIMEOUT,
            format!("{} {}", f.command_timeout_ms, f.connect_timeout_ms),
        ));
    }
    // Challenge lines: all of them when it is on, else only what differs from the defaults.
    let ch = &server.challenge;
    let d = crate::challenge::Settings::default();
    if ch.enabled {
        out.push(line(&CHALLENGE, "on"));
    }
    if ch.enabled || (ch.base_bits, ch.step_bits) != (d.base_bits, d.step_bits) {
        out.push(line(
            &CHALLENGE_DIFFICULTY,
            format_args!("{} {}", ch.base_bits, ch.step_bits),
        ));
    }
    if ch.enabled || ch.pass_secs != d.pass_secs {
        out.push(line(&CHALLENGE_PASS_TIME, ch.pass_secs));
    }
    if ch.enabled || (ch.pass_limit, ch.pass_step_bits) != (d.pass_limit, d.pass_step_bits) {
        out.push(line(
            &CHALLENGE_PASS_LIMIT,
            format_args!("{} {}", ch.pass_limit, ch.pass_step_bits),
        ));
    }
    if let Some(path) = &ch.key_file {
        out.push(line(&CHALLENGE_KEY, quote(path)));
    }
    if let Some(mode) = dir.under_attack() {
        out.push(line(&UNDER_ATTACK, mode.as_str()));
    }
    let t = &server.under_attack;
    if dir.under_attack().is_some() || *t != crate::attack::Threshold::default() {
        match t.busy_percent {
            Some(b) => out.push(line(
                &UNDER_ATTACK_THRESHOLD,
                format_args!("{} {b}", t.rate),
            )),
            None => out.push(line(&UNDER_ATTACK_THRESHOLD, t.rate)),
        }
    }
    out
}

/// One directive line: the row's name, a space, the arguments.
fn line(row: &DirectiveInfo, args: impl std::fmt::Display) -> String {
    format!("{} {args}", row.name_str())
}

/// Microseconds as seconds with two decimals, more only when needed to be exact
/// (500 000 → "0.50", 125 000 → "0.125").
pub(crate) fn seconds(us: u64) -> String {
    let mut frac = format!("{:06}", us % 1_000_000);
    while frac.len() > 2 && frac.ends_with('0') {
        frac.pop();
    }
    format!("{}.{}", us / 1_000_000, frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_two_decimals_or_exact() {
        assert_eq!(seconds(500_000), "0.50");
        assert_eq!(seconds(1_000_000), "1.00");
        assert_eq!(seconds(2_500_000), "2.50");
        assert_eq!(seconds(10_000_000), "10.00");
        assert_eq!(seconds(0), "0.00");
        assert_eq!(seconds(125_000), "0.125");
        assert_eq!(seconds(1), "0.000001");
        assert_eq!(seconds(u64::MAX), "18446744073709.551615");
    }

    #[test]
    fn defaults_print_as_documented() {
        let lines = canonical_lines(&ServerSettings::default(), &DirConfig::default());
        assert_eq!(
            lines,
            vec![
                "DOSEnabled on",
                "DOSSiteCount 50",
                "DOSSiteInterval 1",
                "DOSPrefixCount 24 400",
                "DOSPrefixCount 56 400",
                "DOSPrefixCount 48 1600",
                "DOSPageCount 2",
                "DOSPageInterval 1",
                "DOSCanonical on",
                "DOSBlockingPeriod 10",
                "DOSHTTPStatus 429",
                "DOSIPv6Prefix 64",
                "DOSLogDir /tmp",
                "DOSCache shmcb:none(22020096)",
            ]
        );
    }
}
