//! The module loads into the real Debian apache2, every directive is parsed and validated,
//! `<IfModule>` sees it, settings merge, and restarts do not crash.

mod common;

use common::*;
use std::thread;
use std::time::Duration;

/// The harness itself against a plain apache2 (no mod_shield): static files, keep-alive,
/// graceful, restart, 404.
#[test]
fn harness_serves_plain_apache() {
    let mut apache = Apache::builder().shield(false).mpm(Mpm::Prefork).start();
    let css = apache.get("/style.css");
    assert_eq!(css.status, 200);
    assert_eq!(css.body, STYLE_CSS);
    assert_eq!(STYLE_CSS.len(), 40);
    let mut conn = apache.conn();
    for _ in 0..3 {
        let r = conn.get("/index.html");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, INDEX_HTML);
    }
    assert!(!apache.pids().is_empty(), "no children found");
    apache.graceful();
    assert_eq!(apache.get("/a.txt").status, 200);
    apache.restart();
    assert_eq!(apache.get("/missing").status, 404);
    apache.stop();
    apache.assert_clean_log();
}

fn loads_and_serves(mpm: Mpm) {
    let mut apache = Apache::builder().mpm(mpm).start();
    let modules = apache.loaded_modules();
    assert!(
        modules.contains("shield_module (shared)"),
        "apache2 -M does not list shield_module:\n{modules}"
    );
    let css = apache.get("/style.css");
    assert_eq!(css.status, 200, "GET /style.css under {mpm:?}");
    assert_eq!(css.body, STYLE_CSS);
    let index = apache.get("/");
    assert_eq!(index.status, 200);
    assert_eq!(index.body, INDEX_HTML);
    apache.stop();
    apache.assert_clean_log();
}

#[test]
fn loads_and_serves_under_prefork() {
    loads_and_serves(Mpm::Prefork);
}

#[test]
fn loads_and_serves_under_event() {
    loads_and_serves(Mpm::Event);
}

#[test]
fn loads_and_serves_under_worker() {
    loads_and_serves(Mpm::Worker);
}

#[test]
fn config_test_accepts_shipped_shield_conf() {
    let shipped = std::path::Path::new(REPO).join("conf/shield.conf");
    assert!(shipped.is_file(), "{} is missing", shipped.display());
    let apache = Apache::builder()
        .module("remoteip")
        .module("headers")
        .module("authz_host")
        .module("status")
        .config("Include @REPO@/conf/shield.conf\nDOSLogDir @BLOCKS@")
        .build();
    let (ok, out) = apache.config_test();
    assert!(ok, "apache2 -t refused conf/shield.conf:\n{out}");
}

/// Every directive and alias, in every context its scope allows, with valid values: accepted
/// by `apache2 -t`, and the server starts and serves with it.
#[test]
fn config_test_accepts_every_directive() {
    let config = r#"
DOSEnabled on
DOSPageCount 50
DOSPageInterval 2
DOSSiteCount 500
DOSSiteInterval 3
DOSBlockingPeriod 5 60 120 300 3600 7200 86400
DOSHTTPStatus 429
DOSHTTPResponseCode 503
DOSBlockingHttpResponse 429
DOSSiteStatusPenalty 404 50
DOSSiteStatusPenalty off
DOSSiteStatusPenalty 301 25
DOSSiteStatusPenalty 302 25
DOSPageStatus 404 50
DOSPageStatusPenalty 499 -3
DOSPageDeadline 0.5 5
DOSDeadlinePenalty 10 45
DOSPageDeadline 0.05 -1
DOSWhitelist 10.0.0.0/8 192.168.*.* 2a03:dead:beef::/48
DOSWhitelist ::1 127.0.0.2
DOSCanonical on
DOSCanonicalize on
DOSIPv6Prefix 48
DOSLogDir @BLOCKS@
DOSSystemCommand "/bin/true %s"
DOSEmailNotify root@localhost
DOSCache shmcb:none(1048576)
DOSHashTableSize 3097
<Directory "@DOCS@/sub">
    DOSEnabled monitor
    DOSPageCount 10
    DOSPageInterval 5
    DOSPageStatus 403 10
    DOSPageDeadline 2 10
    DOSCanonical off
</Directory>
<Location "/api">
    DOSEnabled false
    DOSPageCount 20
    DOSPageDeadline off
    DOSPageStatus off
</Location>
<Files "big.html">
    DOSEnabled true
    DOSPageCount 4
</Files>
<If "%{QUERY_STRING} =~ /debug/">
    DOSEnabled off
</If>
<VirtualHost 127.0.0.1:@PORT@>
    ServerName 127.0.0.1
</VirtualHost>
<VirtualHost 127.0.0.1:@PORT@>
    ServerName other.test
    DOSEnabled on
    DOSSiteCount 100
    DOSSiteInterval 10
    DOSPageCount 5
    DOSBlockingPeriod 30
    DOSHTTPStatus 503
    DOSSiteStatusPenalty 404 10
    DOSWhitelist 172.16.0.0/12
    DOSCanonical off
</VirtualHost>
"#;
    let mut apache = Apache::builder().config(config).start();
    let (ok, out) = apache.config_test();
    assert!(ok, "apache2 -t refused valid directives:\n{out}");
    let r = apache.get("/style.css");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, STYLE_CSS);
    apache.stop();
    apache.assert_clean_log();
}

/// True when `line` contains `value` as a whole token (not part of a longer word or number).
fn has_token(line: &str, value: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '_';
    line.match_indices(value).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + value.len()..].chars().next();
        !before.is_some_and(part) && !after.is_some_and(part)
    })
}

/// The module loads and a config with it passes `apache2 -t`: refusals below are then due
/// to the values, not to a module that failed to load.
fn assert_baseline_config_ok() {
    let (ok, out) = Apache::builder().build().config_test();
    assert!(ok, "baseline config with mod_shield refused:\n{out}");
}

#[test]
fn config_test_refuses_bad_values() {
    assert_baseline_config_ok();
    let periods: Vec<String> = (1..=17).map(|n| n.to_string()).collect();
    let seventeen = format!("DOSBlockingPeriod {}", periods.join(" "));
    // (config line, directive the message must name, value the same line must name)
    let cases: Vec<(String, &str, &str)> = vec![
        ("DOSPageCount abc".into(), "DOSPageCount", "abc"),
        (seventeen, "DOSBlockingPeriod", "17"),
        ("DOSBlockingPeriod 5 0".into(), "DOSBlockingPeriod", "0"),
        ("DOSWhitelist 999.1.1.1".into(), "DOSWhitelist", "999.1.1.1"),
        ("DOSCache shmcb:none(100)".into(), "DOSCache", "100"),
        ("DOSPageInterval 0".into(), "DOSPageInterval", "0"),
        ("DOSHTTPStatus 200".into(), "DOSHTTPStatus", "200"),
        ("DOSEnabled maybe".into(), "DOSEnabled", "maybe"),
        ("DOSIPv6Prefix 129".into(), "DOSIPv6Prefix", "129"),
        (
            "DOSSiteStatusPenalty 404 x".into(),
            "DOSSiteStatusPenalty",
            "x",
        ),
        ("DOSPageDeadline abc 5".into(), "DOSPageDeadline", "abc"),
        // Apache's socache providers are not engines mod_shield speaks.
        ("DOSCache dbm:/tmp/shield.db".into(), "DOSCache", "dbm"),
        ("DOSCache redis:127.0.0.1:0".into(), "DOSCache", "0"),
        ("DOSCache memcache:".into(), "DOSCache", "memcache"),
        ("DOSCacheTimeout 0".into(), "DOSCacheTimeout", "0"),
        ("DOSCacheTimeout 50 soon".into(), "DOSCacheTimeout", "soon"),
    ];
    let mut failures = Vec::new();
    for (line, directive, value) in &cases {
        let apache = Apache::builder().config(line).build();
        let (ok, out) = apache.config_test();
        if ok {
            failures.push(format!("`{line}` was accepted:\n{out}"));
            continue;
        }
        let named = out
            .lines()
            .any(|l| l.contains(directive) && has_token(l, value));
        if !named {
            failures.push(format!(
                "`{line}` refused, but no output line names both {directive} and '{value}':\n{out}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn config_test_refuses_directives_out_of_scope() {
    assert_baseline_config_ok();
    let cases = [
        // Server-scope directive in a per-directory section.
        (
            "<Directory \"@DOCS@\">\n    DOSSiteCount 10\n</Directory>",
            "DOSSiteCount",
        ),
        ("<Location /x>\n    DOSBlockingPeriod 5\n</Location>", "DOSBlockingPeriod"),
        // Global-only directives in a virtual host.
        (
            "<VirtualHost 127.0.0.1:@PORT@>\n    ServerName other.test\n    DOSLogDir /tmp\n</VirtualHost>",
            "DOSLogDir",
        ),
        (
            "<VirtualHost 127.0.0.1:@PORT@>\n    ServerName other.test\n    DOSCache shmcb:none(65536)\n</VirtualHost>",
            "DOSCache",
        ),
    ];
    let mut failures = Vec::new();
    for (config, directive) in cases {
        let apache = Apache::builder().config(config).build();
        let (ok, out) = apache.config_test();
        if ok {
            failures.push(format!("{directive} accepted out of scope:\n{config}"));
        } else if out.contains("Invalid command") || !out.contains(directive) {
            failures.push(format!("refusal does not name {directive}:\n{out}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// No DOS* directive is allowed in `.htaccess`, whatever `AllowOverride` grants: a site owner
/// must not be able to switch the protection off. httpd answers 500 for the directory and
/// names the directive; the rest of the site is served (and counted) as before.
#[test]
fn htaccess_cannot_carry_dos_directives() {
    let mut apache = Apache::builder()
        .config(
            "LogLevel warn shield:info\nDOSPageCount 1000\nDOSSiteCount 1000\n\
             <Directory \"@DOCS@/open\">\n    AllowOverride All\n</Directory>",
        )
        .file("open/a.txt", b"open\n")
        .file("open/.htaccess", b"DOSEnabled off\n")
        .start();
    let r = apache.get("/open/a.txt");
    assert_eq!(r.status, 500, "a DOS* line in .htaccess was accepted");
    assert!(
        apache.wait_for_log("DOSEnabled not allowed here", Duration::from_secs(5)),
        "the error log does not name the directive:\n{}",
        apache.error_log()
    );
    assert_eq!(apache.get("/a.txt").status, 200);
    apache.stop();
    apache.assert_clean_log();
}

/// Both the symbol name and the source-file name make `<IfModule>` true; the negated forms
/// are false. Each section maps a distinct URL, so requests prove which ones were read.
#[test]
fn ifmodule_sees_module_by_symbol_and_by_name() {
    let config = r#"
<IfModule shield_module>
    Alias /by-symbol "@DOCS@/a.txt"
</IfModule>
<IfModule mod_shield.c>
    Alias /by-name "@DOCS@/style.css"
</IfModule>
<IfModule !shield_module>
    Alias /not-by-symbol "@DOCS@/a.txt"
</IfModule>
<IfModule !mod_shield.c>
    Alias /not-by-name "@DOCS@/a.txt"
</IfModule>
DOSPageCount 100
DOSSiteCount 1000
"#;
    let mut apache = Apache::builder().module("alias").config(config).start();
    let by_symbol = apache.get("/by-symbol");
    assert_eq!(by_symbol.status, 200, "<IfModule shield_module> not taken");
    assert_eq!(by_symbol.body, b"plain text a\n");
    let by_name = apache.get("/by-name");
    assert_eq!(by_name.status, 200, "<IfModule mod_shield.c> not taken");
    assert_eq!(by_name.body, STYLE_CSS);
    assert_eq!(apache.get("/not-by-symbol").status, 404);
    assert_eq!(apache.get("/not-by-name").status, 404);
    apache.stop();
}

/// A virtual host and a `<Files>` section override only what they set and inherit the rest
/// (`DOSPageInterval 60` from the server). Each scenario has its own client address (mod_remoteip),
/// so one scenario's block cannot touch another. The pause before the last request is longer
/// than the compiled-in interval (1 s): had the interval not been inherited, the window would
/// have restarted and the last request would pass.
#[test]
fn settings_merge_into_vhost_and_files() {
    let config = r#"
DOSPageCount 2
DOSPageInterval 60
DOSSiteCount 1000
DOSSiteInterval 60
DOSBlockingPeriod 60
<Files "big.html">
    DOSPageCount 4
</Files>
<VirtualHost 127.0.0.1:@PORT@>
    ServerName 127.0.0.1
</VirtualHost>
<VirtualHost 127.0.0.1:@PORT@>
    ServerName other.test
    DOSPageCount 5
</VirtualHost>
"#;
    let mut apache = Apache::builder().remoteip().config(config).start();
    let port = apache.port();
    // (client, Host, path, requests allowed, count, interval the 429 must advertise)
    let scenarios = [
        ("10.1.0.1", "other.test", "/page.html", 5, 5),
        ("10.1.0.2", "127.0.0.1", "/page.html", 2, 2),
        ("10.1.0.3", "127.0.0.1", "/big.html", 4, 4),
        ("10.1.0.4", "127.0.0.1", "/other.html", 2, 2),
        ("10.1.0.5", "other.test", "/big.html", 4, 4),
    ];
    for (ip, host, path, allowed, _) in scenarios {
        let client = Client::new(port).ip(ip).host(host);
        for n in 1..=allowed {
            let r = client.get(path);
            assert_eq!(
                r.status, 200,
                "{ip} Host {host} {path}: request {n} of {allowed}"
            );
        }
    }
    thread::sleep(Duration::from_millis(1300));
    let mut failures = Vec::new();
    for (ip, host, path, allowed, count) in scenarios {
        let client = Client::new(port).ip(ip).host(host);
        let r = client.get(path);
        if r.status != 429 {
            failures.push(format!(
                "{ip} Host {host} {path}: request {} got {}, want 429",
                allowed + 1,
                r.status
            ));
            continue;
        }
        let want = format!("\"shield\";q={count};w=60");
        if r.header("RateLimit-Policy") != Some(want.as_str()) {
            failures.push(format!(
                "{ip} Host {host} {path}: RateLimit-Policy {:?}, want {want}",
                r.header("RateLimit-Policy")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    apache.stop();
}

fn restarts_do_not_crash(mpm: Mpm) {
    let mut apache = Apache::builder()
        .mpm(mpm)
        .config("DOSPageCount 100\nDOSSiteCount 1000\nDOSPageInterval 10\nDOSSiteInterval 10")
        .start();
    assert_eq!(apache.get("/style.css").status, 200);
    for round in 0..2 {
        apache.graceful();
        let r = apache.get("/style.css");
        assert_eq!(r.status, 200, "after graceful {round}");
        assert_eq!(r.body, STYLE_CSS);
        apache.restart();
        let r = apache.get("/index.html");
        assert_eq!(r.status, 200, "after restart {round}");
        assert_eq!(r.body, INDEX_HTML);
    }
    apache.stop();
    apache.assert_clean_log();
}

#[test]
fn graceful_and_restart_under_prefork() {
    restarts_do_not_crash(Mpm::Prefork);
}

#[test]
fn graceful_and_restart_under_event() {
    restarts_do_not_crash(Mpm::Event);
}
