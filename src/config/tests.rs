//! Whole-module tests: every directive and alias, every class of bad value, the shipped
//! configuration, and canonical lines parsing back to the same settings.

use super::*;
use crate::client::Whitelist;

/// Splits "Name rest of line" the way httpd hands a RAW_ARGS directive over.
fn split(line: &str) -> (&str, &str) {
    let line = line.trim();
    match line.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (&line[..i], line[i..].trim_start()),
        None => (line, ""),
    }
}

fn parse_line(line: &str) -> Result<Setting, ConfigError> {
    let (name, args) = split(line);
    parse(name, args)
}

/// Applies lines to a server and a directory config, as the FFI does.
fn build(lines: &[&str]) -> (ServerConfig, DirConfig) {
    from_lines(lines).unwrap_or_else(|e| panic!("{e}"))
}

fn err(line: &str) -> String {
    match parse_line(line) {
        Ok(s) => panic!("{line} was accepted as {s:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_directive_in_the_table_parses() {
    let key_file = std::env::temp_dir().join(format!("shield-key-{}", std::process::id()));
    std::fs::write(&key_file, [b'k'; 32]).unwrap();
    let key_file: &'static str = Box::leak(key_file.display().to_string().into_boxed_str());
    let sample = |name: &str| -> &'static str {
        match name {
            "DOSChallenge" => "on",
            "DOSChallengeDifficulty" => "16 2",
            "DOSChallengePassLimit" => "4 2",
            "DOSChallengeKey" => key_file,
            "DOSEnabled" => "on",
            "DOSPageStatus" | "DOSPageStatusPenalty" | "DOSSiteStatusPenalty" => "404 50",
            "DOSPageDeadline" | "DOSDeadlinePenalty" => "0.5 5",
            "DOSCanonical" | "DOSCanonicalize" => "off",
            "DOSBlockingPeriod" => "5 60",
            "DOSHTTPStatus" | "DOSHTTPResponseCode" | "DOSBlockingHttpResponse" => "403",
            "DOSWhitelist" => "127.0.0.1",
            "DOSLogDir" => "/var/log/shield",
            "DOSSystemCommand" => "\"/bin/ban %s\"",
            "DOSEmailNotify" => "root@localhost",
            "DOSCache" => "shmcb:none(524288)",
            "DOSIPv6Prefix" => "48",
            "DOSPrefixCount" => "48 400",
            "DOSUnderAttack" => "auto",
            "DOSUnderAttackThreshold" => "500 90",
            "DOSCacheTimeout" => "50 200",
            _ => "7",
        }
    };
    for d in DIRECTIVES {
        let name = d.name.to_str().unwrap();
        let s = parse(name, sample(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.directive(), d.alias_of.unwrap_or(name), "{name}");
        assert_eq!(s.is_dir_scoped(), d.scope == Scope::All, "{name}");
        // The row's scope names the config that takes the setting, and only that one.
        let (mut srv, mut dir) = (ServerConfig::default(), DirConfig::default());
        if d.scope == Scope::All {
            assert!(
                dir.apply(s.clone()).is_ok() && srv.apply(s.clone()).is_err(),
                "{name}"
            );
        } else {
            assert!(
                srv.apply(s.clone()).is_ok() && dir.apply(s.clone()).is_err(),
                "{name}"
            );
        }
        // Names are case-insensitive, as in httpd.
        assert_eq!(
            parse(&name.to_ascii_lowercase(), sample(name)),
            Ok(s.clone())
        );
        assert_eq!(parse(&name.to_ascii_uppercase(), sample(name)), Ok(s));
    }
    let _ = std::fs::remove_file(key_file);
    assert_eq!(DIRECTIVES.len(), 32);
}

#[test]
fn aliases_mean_the_same() {
    assert_eq!(
        parse("DOSHTTPResponseCode", "403"),
        Ok(Setting::HttpStatus(403))
    );
    assert_eq!(
        parse("DOSBlockingHttpResponse", "503"),
        Ok(Setting::HttpStatus(503))
    );
    assert_eq!(
        parse("DOSPageStatusPenalty", "404 5"),
        parse("DOSPageStatus", "404 5")
    );
    assert_eq!(
        parse("DOSDeadlinePenalty", "1 5"),
        parse("DOSPageDeadline", "1 5")
    );
    assert_eq!(
        parse("DOSCanonicalize", "off"),
        Ok(Setting::Canonical(false))
    );
    assert_eq!(
        parse("DOSWhiteList", "127.0.0.1"),
        parse("DOSWhitelist", "127.0.0.1")
    );
    assert!(parse("DOSHashTableSize", "3097").unwrap().is_ignored());
    assert!(!parse("DOSPageCount", "3").unwrap().is_ignored());
}

#[test]
fn scopes_follow_the_spec_table() {
    let scope = |n: &str| lookup(n).unwrap().scope;
    for n in [
        "DOSEnabled",
        "DOSPageCount",
        "DOSPageInterval",
        "DOSPageStatus",
        "DOSPageStatusPenalty",
        "DOSPageDeadline",
        "DOSDeadlinePenalty",
        "DOSCanonical",
        "DOSCanonicalize",
        "DOSUnderAttack",
    ] {
        assert_eq!(scope(n), Scope::All, "{n}");
    }
    for n in [
        "DOSSiteCount",
        "DOSSiteInterval",
        "DOSPrefixCount",
        "DOSBlockingPeriod",
        "DOSHTTPStatus",
        "DOSHTTPResponseCode",
        "DOSBlockingHttpResponse",
        "DOSSiteStatusPenalty",
        "DOSWhitelist",
        "DOSChallenge",
        "DOSChallengeDifficulty",
        "DOSChallengePassTime",
        "DOSChallengePassLimit",
        "DOSChallengeKey",
    ] {
        assert_eq!(scope(n), Scope::Server, "{n}");
    }
    for n in [
        "DOSIPv6Prefix",
        "DOSLogDir",
        "DOSSystemCommand",
        "DOSEmailNotify",
        "DOSCache",
        "DOSCacheTimeout",
        "DOSHashTableSize",
        "DOSUnderAttackThreshold",
    ] {
        assert_eq!(scope(n), Scope::Global, "{n}");
    }
    assert!(lookup("DOSNoSuch").is_none());
}

#[test]
fn values_of_each_directive() {
    assert_eq!(
        parse("DOSEnabled", "MONITOR"),
        Ok(Setting::Enabled(Enabled::Monitor))
    );
    assert_eq!(
        parse("DOSEnabled", "True"),
        Ok(Setting::Enabled(Enabled::On))
    );
    assert_eq!(
        parse("DOSEnabled", "false"),
        Ok(Setting::Enabled(Enabled::Off))
    );
    assert_eq!(
        parse("DOSEnabled", "Off"),
        Ok(Setting::Enabled(Enabled::Off))
    );
    assert_eq!(parse("DOSCanonical", "true"), Ok(Setting::Canonical(true)));
    assert_eq!(parse("DOSPageCount", "90"), Ok(Setting::PageCount(90)));
    assert_eq!(
        parse("DOSPageInterval", " 60 "),
        Ok(Setting::PageInterval(60))
    );
    assert_eq!(
        parse("DOSSiteCount", "\"500\""),
        Ok(Setting::SiteCount(500))
    );
    assert_eq!(
        parse("DOSSiteInterval", "120"),
        Ok(Setting::SiteInterval(120))
    );
    assert_eq!(
        parse("DOSBlockingPeriod", "5 60 120 300 3600 7200 86400"),
        Ok(Setting::BlockingPeriod(vec![
            5, 60, 120, 300, 3600, 7200, 86400
        ]))
    );
    let sixteen = vec!["1"; 16].join(" ");
    assert_eq!(
        parse("DOSBlockingPeriod", &sixteen),
        Ok(Setting::BlockingPeriod(vec![1; 16]))
    );
    assert_eq!(parse("DOSHTTPStatus", "400"), Ok(Setting::HttpStatus(400)));
    assert_eq!(parse("DOSHTTPStatus", "599"), Ok(Setting::HttpStatus(599)));
    assert_eq!(
        parse("DOSPageStatus", "499 10000000"),
        Ok(Setting::PageStatus(ListItem::Entry(Penalty {
            status: 499,
            score: 10_000_000
        })))
    );
    assert_eq!(
        parse("DOSPageStatus", "204 -5"),
        Ok(Setting::PageStatus(ListItem::Entry(Penalty {
            status: 204,
            score: -5
        })))
    );
    assert_eq!(
        parse("DOSPageStatus", "OFF"),
        Ok(Setting::PageStatus(ListItem::Off))
    );
    assert_eq!(
        parse("DOSSiteStatusPenalty", "off"),
        Ok(Setting::SiteStatusPenalty(ListItem::Off))
    );
    assert_eq!(
        parse("DOSSiteStatusPenalty", "100 1"),
        Ok(Setting::SiteStatusPenalty(ListItem::Entry(Penalty {
            status: 100,
            score: 1
        })))
    );
    assert_eq!(
        parse("DOSPageDeadline", "0.05 0"),
        Ok(Setting::PageDeadline(ListItem::Entry(Deadline {
            threshold_us: 50_000,
            score: 0
        })))
    );
    assert_eq!(
        parse("DOSPageDeadline", "off"),
        Ok(Setting::PageDeadline(ListItem::Off))
    );
    assert_eq!(parse("DOSIPv6Prefix", "1"), Ok(Setting::Ipv6Prefix(1)));
    assert_eq!(parse("DOSIPv6Prefix", "128"), Ok(Setting::Ipv6Prefix(128)));
    assert_eq!(
        parse("DOSLogDir", "/var/log/shield"),
        Ok(Setting::LogDir("/var/log/shield".into()))
    );
    assert_eq!(
        parse("DOSLogDir", "\"/var/log/my dir\""),
        Ok(Setting::LogDir("/var/log/my dir".into()))
    );
    assert_eq!(
        parse("DOSSystemCommand", "\"su - someuser -c '/sbin/ban %s'\""),
        Ok(Setting::SystemCommand(
            "su - someuser -c '/sbin/ban %s'".into()
        ))
    );
    assert_eq!(
        parse("DOSEmailNotify", "a@example.com,b@example.com"),
        Ok(Setting::EmailNotify("a@example.com,b@example.com".into()))
    );
    assert!(matches!(
        parse("DOSCache", "redis:127.0.0.1:6379"),
        Ok(Setting::Cache(CacheSpec::Farm(_)))
    ));
    assert_eq!(
        parse("DOSHashTableSize", "3097"),
        Ok(Setting::HashTableSize(3097))
    );
    match parse(
        "DOSWhitelist",
        "10.0.0.0/8 192.168.*.* 2a03:dead:beef::/48 ::ffff:1.2.3.4",
    ) {
        Ok(Setting::Whitelist(v)) => {
            let mut w = Whitelist::default();
            v.into_iter().for_each(|e| w.push(e));
            assert_eq!(
                w.entries(),
                vec![
                    "10.0.0.0/8",
                    "192.168.*.*",
                    "2a03:dead:beef::/48",
                    "1.2.3.4"
                ]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn foundation_issue_examples_fail_with_directive_and_value() {
    let e = err("DOSPageCount abc");
    assert_eq!(e, "DOSPageCount: 'abc' is not a positive integer");

    let seventeen = format!("DOSBlockingPeriod {}", vec!["10"; 17].join(" "));
    let e = err(&seventeen);
    assert!(e.starts_with("DOSBlockingPeriod:"), "{e}");
    assert!(e.contains("at most 16"), "{e}");
    assert!(e.contains("17 values"), "{e}");

    let e = err("DOSWhitelist 999.1.1.1");
    assert!(
        e.starts_with("DOSWhitelist:") && e.contains("'999.1.1.1'"),
        "{e}"
    );

    let e = err("DOSCache shmcb:none(100)");
    assert!(
        e.starts_with("DOSCache:") && e.contains("'shmcb:none(100)'"),
        "{e}"
    );
    assert!(e.contains("8192"), "{e}");
}

#[test]
fn prefix_counts_parse_per_level_and_off() {
    assert_eq!(
        parse("DOSPrefixCount", "24 400"),
        Ok(Setting::PrefixCount(24, Some(400)))
    );
    assert_eq!(
        parse("DOSPrefixCount", "48 OFF"),
        Ok(Setting::PrefixCount(48, None))
    );
    assert_eq!(
        parse("DOSPrefixCount", "56 \"1000\""),
        Ok(Setting::PrefixCount(56, Some(1000)))
    );
    for args in ["", "24", "24 100 5"] {
        let e = parse("DOSPrefixCount", args).unwrap_err().0;
        assert!(
            e.starts_with("DOSPrefixCount: takes a prefix length"),
            "{args}: {e}"
        );
    }
}

#[test]
fn every_class_of_bad_value_names_directive_and_value() {
    let cases: &[(&str, &str)] = &[
        ("DOSPageCount abc", "abc"),
        ("DOSPageCount 0", "0"),
        ("DOSPageCount -1", "-1"),
        ("DOSPageCount 1.5", "1.5"),
        ("DOSPageCount 4294967296", "4294967296"),
        ("DOSPageInterval 0", "0"),
        ("DOSSiteCount 10s", "10s"),
        ("DOSSiteInterval 0x10", "0x10"),
        ("DOSHashTableSize 0", "0"),
        ("DOSBlockingPeriod 5 0 10", "0"),
        ("DOSBlockingPeriod 5 -1", "-1"),
        ("DOSBlockingPeriod 5 x", "x"),
        ("DOSHTTPStatus 200", "200"),
        ("DOSHTTPStatus 600", "600"),
        ("DOSHTTPStatus 4xx", "4xx"),
        ("DOSHTTPResponseCode 302", "302"),
        ("DOSBlockingHttpResponse 99", "99"),
        ("DOSPageStatus 99 5", "99"),
        ("DOSPageStatus 1000 5", "1000"),
        ("DOSPageStatus 404 abc", "abc"),
        ("DOSPageStatus 404 1.5", "1.5"),
        (
            "DOSPageStatusPenalty 404 99999999999999999999",
            "99999999999999999999",
        ),
        ("DOSSiteStatusPenalty x 5", "x"),
        ("DOSPageDeadline -1 5", "-1"),
        ("DOSPageDeadline 1s 5", "1s"),
        ("DOSDeadlinePenalty 1 x", "x"),
        ("DOSEnabled maybe", "maybe"),
        ("DOSCanonical monitor", "monitor"),
        ("DOSCanonicalize yes", "yes"),
        ("DOSIPv6Prefix 0", "0"),
        ("DOSIPv6Prefix 129", "129"),
        ("DOSIPv6Prefix x", "x"),
        ("DOSWhitelist 10.0.0.0/33", "10.0.0.0/33"),
        ("DOSWhitelist 127.0.0.1 1.2.*", "1.2.*"),
        ("DOSWhiteList 2001:db8::/129", "2001:db8::/129"),
        ("DOSLogDir relative/dir", "relative/dir"),
        ("DOSLogDir \"\"", "''"),
        ("DOSSystemCommand \"\"", "''"),
        ("DOSSystemCommand \"  \"", "'  '"),
        ("DOSEmailNotify root", "root"),
        ("DOSEmailNotify \"a@b\nBcc: c@d\"", "a@b"),
        ("DOSEmailNotify a@b;reboot", "a@b;reboot"),
        ("DOSCache shmcb:none(524288", "shmcb:none(524288"),
        ("DOSCache shmcb:none(abc)", "shmcb:none(abc)"),
        ("DOSCache redis", "redis"),
        ("DOSPageDeadline off 5", "off"),
        ("DOSSiteStatusPenalty off now", "off"),
        ("DOSPrefixCount 64 100", "64"),
        ("DOSPrefixCount 32 100", "32"),
        ("DOSPrefixCount x 100", "x"),
        ("DOSPrefixCount 24 0", "0"),
        ("DOSPrefixCount 48 many", "many"),
        ("DOSPrefixCount 56 -5", "-5"),
    ];
    for (line, value) in cases {
        let (name, _) = split(line);
        let e = err(line);
        assert!(e.starts_with(&format!("{name}: ")), "{line} -> {e}");
        assert!(e.contains(value), "{line} -> {e}");
    }
}

#[test]
fn wrong_number_of_arguments_names_the_directive() {
    for line in [
        "DOSPageCount",
        "DOSPageCount 1 2",
        "DOSEnabled",
        "DOSEnabled on off",
        "DOSPageStatus 404",
        "DOSPageStatus 404 5 6",
        "DOSPageStatus",
        "DOSPageDeadline 1",
        "DOSBlockingPeriod",
        "DOSWhitelist",
        "DOSHTTPStatus",
        "DOSSystemCommand /bin/ban %s",
        "DOSEmailNotify a@b c@d",
        "DOSCache shmcb none",
        "DOSLogDir",
    ] {
        let (name, _) = split(line);
        let e = err(line);
        assert!(e.starts_with(&format!("{name}: takes")), "{line} -> {e}");
    }
    assert!(err("DOSNope 1").contains("DOSNope"));
}

#[test]
fn shipped_config_parses() {
    const CONF: &str = include_str!("../../conf/shield.conf");
    let mut active = Vec::new();
    let mut examples = 0;
    for raw in CONF.lines() {
        let line = raw.trim();
        if line.len() >= 3 && line[..3].eq_ignore_ascii_case("DOS") {
            active.push(line);
        } else if let Some(rest) = line.strip_prefix('#') {
            // Commented examples must work when uncommented.
            let rest = rest.trim_start();
            if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case("DOS") {
                parse_line(rest).unwrap_or_else(|e| panic!("example `{rest}`: {e}"));
                examples += 1;
            }
        }
    }
    assert!(active.len() >= 17, "{}", active.len());
    assert!(examples >= 8, "{examples}");
    let (server, dir) = build(&active);
    let s = server.resolve();
    assert_eq!(s.site_count, 500);
    assert_eq!(s.site_interval, 120);
    assert_eq!(s.site_status_score(301), Some(25));
    assert_eq!(s.site_status_score(302), Some(25));
    assert_eq!(s.site_status_score(404), Some(50));
    assert_eq!(s.blocking_periods, vec![5, 60, 120, 300, 3600, 7200, 86400]);
    assert_eq!(s.http_status, 429);
    assert_eq!(
        s.cache,
        CacheSpec::File {
            path: "/var/lib/mod_shield/shield.store".into(),
            bytes: crate::config::DEFAULT_CACHE_BYTES
        }
    );
    assert_eq!(dir.page_count(), 90);
    assert_eq!(dir.page_interval(), 60);
    assert_eq!(dir.deadline_score(700_000), Some((500_000, 5)));
    assert_eq!(dir.deadline_score(11_000_000), Some((10_000_000, 45)));
    let lines = canonical_lines(&s, &dir);
    for expected in [
        "DOSSiteCount 500",
        "DOSSiteInterval 120",
        "DOSSiteStatusPenalty 301 25",
        "DOSSiteStatusPenalty 302 25",
        "DOSSiteStatusPenalty 404 50",
        "DOSPageCount 90",
        "DOSPageInterval 60",
        "DOSPageDeadline 0.50 5",
        "DOSPageDeadline 1.00 5",
        "DOSPageDeadline 2.50 10",
        "DOSPageDeadline 5.00 20",
        "DOSPageDeadline 10.00 45",
        "DOSBlockingPeriod 5 60 120 300 3600 7200 86400",
        "DOSHTTPStatus 429",
        "DOSCache shmcb:/var/lib/mod_shield/shield.store(22020096)",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected} missing from {lines:#?}"
        );
    }
}

#[test]
fn cloudflare_snippet_lists_valid_ranges() {
    const CONF: &str = include_str!("../../conf/cloudflare-remoteip.conf");
    let mut n = 0;
    for line in CONF.lines().map(str::trim) {
        if let Some(range) = line.strip_prefix("RemoteIPTrustedProxy ") {
            assert!(range.trim().parse::<ipnet::IpNet>().is_ok(), "{range}");
            n += 1;
        }
        if let Some(rest) = line.strip_prefix('#') {
            if rest.trim_start().starts_with("DOSWhitelist") {
                parse_line(rest).unwrap_or_else(|e| panic!("{rest}: {e}"));
            }
        }
    }
    assert_eq!(n, 22);
    assert!(CONF.contains("RemoteIPHeader CF-Connecting-IP"));
}

/// The effective settings of a (server, dir) pair, compared after a round trip.
fn effective(s: &ServerSettings, d: &DirConfig) -> (ServerSettings, String) {
    let dir = format!(
        "{:?} {} {} {} {:?} {:?}",
        d.enabled(),
        d.page_count(),
        d.page_interval(),
        d.canonical(),
        d.page_status_penalties(),
        d.page_deadlines()
    );
    (s.clone(), dir)
}

fn assert_round_trip(lines: &[&str]) {
    let (server, dir) = build(lines);
    let settings = server.resolve();
    let printed = canonical_lines(&settings, &dir);
    let refs: Vec<&str> = printed.iter().map(String::as_str).collect();
    let (server2, dir2) = build(&refs);
    assert_eq!(
        effective(&server2.resolve(), &dir2),
        effective(&settings, &dir),
        "{printed:#?}"
    );
    // And printing again gives the same text.
    assert_eq!(canonical_lines(&server2.resolve(), &dir2), printed);
}

#[test]
fn canonical_lines_round_trip() {
    assert_round_trip(&[]);
    assert_round_trip(&[
        "DOSEnabled monitor",
        "DOSSiteCount 500",
        "DOSSiteInterval 120",
        "DOSSiteStatusPenalty 404 50",
        "DOSSiteStatusPenalty 301 25",
        "DOSSiteStatusPenalty 499 -7",
        "DOSPageCount 90",
        "DOSPageInterval 60",
        "DOSPageStatusPenalty 418 50",
        "DOSPageStatus 204 -5",
        "DOSPageDeadline 0 -2",
        "DOSPageDeadline 0.125 0",
        "DOSPageDeadline 0.000001 1",
        "DOSDeadlinePenalty 2.5 10",
        "DOSCanonicalize off",
        "DOSBlockingPeriod 5 60 120 300 3600 7200 86400",
        "DOSHTTPResponseCode 503",
        "DOSWhitelist 10.0.0.0/8 192.168.*.* 127.0.0.1",
        "DOSWhiteList 2001:db8::/32 ::1 10.*.3.*",
        "DOSIPv6Prefix 48",
        "DOSLogDir \"/var/log/with space\"",
        "DOSSystemCommand \"/usr/bin/logger -t shield \\\"blocked %s\\\"\"",
        "DOSEmailNotify ops@example.com",
        "DOSCache memcache:10.0.0.5:11211,10.0.0.6:11211",
        "DOSHashTableSize 3097",
    ]);
    assert_round_trip(&[
        "DOSPageStatus 404 5",
        "DOSPageStatus off",
        "DOSCache shmcb:/x(8192)",
    ]);
}

#[test]
fn canonical_lines_use_canonical_names() {
    let (server, dir) = build(&[
        "DOSBlockingHttpResponse 403",
        "DOSCanonicalize off",
        "DOSDeadlinePenalty 1 5",
    ]);
    let lines = canonical_lines(&server.resolve(), &dir);
    assert!(lines.contains(&"DOSHTTPStatus 403".to_string()));
    assert!(lines.contains(&"DOSCanonical off".to_string()));
    assert!(lines.contains(&"DOSPageDeadline 1.00 5".to_string()));
    assert!(lines
        .iter()
        .all(|l| !l.contains("Penalty 1") && !l.contains("Canonicalize")));
    let (server, dir) = build(&["DOSWhitelist 10.0.0.0/8 192.168.*.*"]);
    assert!(canonical_lines(&server.resolve(), &dir)
        .contains(&"DOSWhitelist 10.0.0.0/8 192.168.*.*".to_string()));
}

#[test]
fn config_error_displays_its_message() {
    let e = ConfigError("DOSPageCount: 'abc' is not a positive integer".into());
    assert_eq!(e.to_string(), e.0);
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().contains("abc"));
}
