//! Scoring end to end against the real apache2: status and deadline
//! penalties, the shipped configuration under browser traffic, mod_remoteip clients, the
//! whitelist, IPv6 grouping, monitor mode, per-file rules (the WordPress login pattern) and
//! `DOSCanonical`.
//!
//! Distinct clients are simulated with mod_remoteip (`X-Forwarded-For` from the trusted
//! 127.0.0.1). Requests whose penalty decides the fate of the next one go through
//! [`request_settled`], which waits for the server to close the connection: httpd runs
//! `log_transaction` (where penalties are scored) before it closes a `Connection: close`
//! connection, so the next request cannot overtake the scoring of the previous one.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Probe paths of the 404 scanner in seeds/announcement-mod-shield.txt, in the order it sent
/// them (the first ten were answered 404, the rest 429).
const SCANNER_PROBES: [&str; 20] = [
    "/xx.php",
    "/flower.php",
    "/admin.php",
    "/alfa.php",
    "/autoload_classmap.php",
    "/xxx.php",
    "/NewFile.php",
    "/css.php",
    "/info.php",
    "/gecko.php",
    "/admin/controller/extension/extension/ultra.php",
    "/classwithtostring.php",
    "/moon.php",
    "/ioxi-o.php",
    "/chosen",
    "/cong.php",
    "/item.php",
    "/x.php",
    "/k.php",
    "/lv.php",
];

/// How long to wait for the server to close a `Connection: close` connection.
const SETTLE: Duration = Duration::from_secs(5);

/// One request on its own `Connection: close` connection; returns once the server has closed
/// it, i.e. after `log_transaction` of that request has run.
fn request_settled(
    client: &Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let mut conn = client.conn();
    let mut all = headers.to_vec();
    all.push(("Connection", "close"));
    let r = conn.send(method, path, &all);
    assert!(
        conn.is_closed(SETTLE),
        "{method} {path}: server kept a Connection: close connection open for {SETTLE:?}"
    );
    r
}

fn get_settled(client: &Client, path: &str) -> Response {
    request_settled(client, "GET", path, &[])
}

/// Statuses of `n` GETs of `path` by `client`, each on its own connection.
fn statuses(client: &Client, path: &str, n: usize) -> Vec<u16> {
    (0..n).map(|_| client.get(path).status).collect()
}

/// A refusal carries 429, Retry-After and the RateLimit headers (values are checked in
/// tests/blocking.rs).
fn assert_refusal(r: &Response, what: &str) {
    assert_eq!(r.status, 429, "{what}: expected a refusal");
    let retry = r.header_u64("Retry-After");
    assert!(
        retry.is_some_and(|s| s >= 1),
        "{what}: 429 without a positive Retry-After: {:?}",
        r.headers
    );
    assert!(
        r.header("RateLimit-Policy").is_some() && r.header("RateLimit").is_some(),
        "{what}: 429 without RateLimit headers: {:?}",
        r.headers
    );
}

fn write_executable(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("create script dir");
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod script dir");
    }
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    // The cgid daemon runs the script as `nobody`: readable and executable by all.
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod script");
}

/// Millisecond figures of `Request round-trip N ms exceeds limit M ms` lines.
fn round_trip_ms(line: &str) -> Option<(u64, u64)> {
    let rest = line.split("Request round-trip ").nth(1)?;
    let mut words = rest.split_whitespace();
    let took = words.next()?.parse().ok()?;
    let limit = rest
        .split("exceeds limit ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((took, limit))
}

// ---------------------------------------------------------------------------------------------
// 1. Status penalty: the 404 scanner of the announcement
// ---------------------------------------------------------------------------------------------

/// Each 404 costs 1 (fixups) + 50 (log_transaction) on the site record. After ten probes the
/// site score is 510 > 500: the block starts in log_transaction of the 10th, so the 11th and
/// every later probe is refused, exactly like the seed's access log.
#[test]
fn scanner_404_probes_block_at_the_eleventh() {
    let mut apache = Apache::builder()
        .remoteip()
        .config(
            "LogLevel warn shield:info\n\
             DOSSiteCount 500\nDOSSiteInterval 120\nDOSSiteStatusPenalty 404 50\n\
             DOSPageCount 1000\nDOSPageInterval 120\nDOSBlockingPeriod 60\n\
             DOSLogDir \"@BLOCKS@\"",
        )
        .start();
    let scanner = apache.client().ip("52.169.150.195");
    let mut seen = Vec::new();
    for path in SCANNER_PROBES {
        let r = get_settled(&scanner, path);
        seen.push((path, r.status));
        if seen.len() > 10 {
            assert_refusal(&r, &format!("probe {} {path}", seen.len()));
        }
    }
    let got: Vec<u16> = seen.iter().map(|(_, s)| *s).collect();
    let mut want = vec![404u16; 10];
    want.extend([429u16; 10]);
    assert_eq!(got, want, "probe statuses: {seen:?}");

    let flagged = apache.log_lines("Request status 404 flagged with score 50");
    assert_eq!(
        flagged.len(),
        10,
        "one flag line per 404 (none for refused probes):\n{}",
        apache.error_log()
    );
    assert!(
        flagged.iter().all(|l| l.contains("[shield:info]")),
        "flag lines must be at info level: {flagged:#?}"
    );
    assert_eq!(
        apache.log_count("blocking period started for IP: 52.169.150.195 "),
        1,
        "one block event:\n{}",
        apache.error_log()
    );
    // Another client on the same host is untouched by the scanner's score.
    assert_eq!(
        apache
            .client()
            .ip("52.169.150.196")
            .get("/index.html")
            .status,
        200
    );
    apache.stop();
}

// ---------------------------------------------------------------------------------------------
// 2. The shipped configuration does not refuse a browser
// ---------------------------------------------------------------------------------------------

/// A page with 40 assets and a favicon, loaded five times over one keep-alive connection with
/// conf/shield.conf: 210 requests, each asset 5 times; nothing is refused.
#[test]
fn browser_with_shipped_conf_is_never_refused() {
    let mut builder = Apache::builder().remoteip().config(
        "Include \"@REPO@/conf/shield.conf\"\nDOSLogDir \"@BLOCKS@\"\n\
         DOSCache shmcb:@ROOT@/shield.store(524288)\nKeepAlive On\n\
         MaxKeepAliveRequests 0\nKeepAliveTimeout 10",
    );
    let assets: Vec<String> = (0..40)
        .map(|i| match i % 4 {
            0 => format!("/assets/css/part{i}.css"),
            1 => format!("/assets/js/chunk{i}.js"),
            2 => format!("/assets/img/pic{i}.png"),
            _ => format!("/assets/font/face{i}.woff2"),
        })
        .collect();
    let mut html = String::from("<html><head>\n");
    for a in &assets {
        html.push_str(&format!("<link href=\"{a}\">\n"));
        builder = builder.file(a, format!("asset {a}\n").as_bytes());
    }
    html.push_str("</head><body>article</body></html>\n");
    builder = builder
        .file("article.html", html.as_bytes())
        .file("favicon.ico", &[0u8; 318]);
    let mut apache = builder.start();

    let browser = apache.client().ip("198.18.7.7").host("www.example.test");
    let mut conn = browser.conn();
    let mut answered = Vec::new();
    for visit in 1..=5 {
        let page = conn.get("/article.html");
        answered.push((visit, "/article.html".to_owned(), page.status));
        for a in &assets {
            answered.push((visit, a.clone(), conn.get(a).status));
        }
        answered.push((
            visit,
            "/favicon.ico".to_owned(),
            conn.get("/favicon.ico").status,
        ));
    }
    assert_eq!(answered.len(), 5 * 42);
    let bad: Vec<_> = answered.iter().filter(|(_, _, s)| *s != 200).collect();
    assert!(bad.is_empty(), "browser requests not served: {bad:?}");
    assert!(
        !conn.is_closed(Duration::from_millis(200)),
        "keep-alive connection was closed by the server"
    );
    assert_eq!(apache.log_count("blocking period started"), 0);
    apache.stop();
}

// ---------------------------------------------------------------------------------------------
// 3. Deadline penalty on a slow CGI
// ---------------------------------------------------------------------------------------------

/// The CGI sleeps 1.1 s. 1st request: +1 (fixups) +100 (deadline) = 101. 2nd: +1 = 102 ≤ 150,
/// served; then +100 = 202 > 150 starts the block. 3rd: refused.
#[test]
fn slow_cgi_deadline_penalty_blocks_the_third_request() {
    let mut apache = Apache::builder()
        .remoteip()
        .module("alias")
        .module("cgid")
        .config(
            "LogLevel warn shield:info\n\
             ScriptSock \"@ROOT@/run/cgisock\"\n\
             ScriptAlias /cgi-bin/ \"@ROOT@/cgi-bin/\"\n\
             <Directory \"@ROOT@/cgi-bin\">\n    Require all granted\n</Directory>\n\
             DOSPageDeadline 1 100\nDOSPageCount 150\nDOSPageInterval 60\n\
             DOSSiteCount 1000\nDOSSiteInterval 60\nDOSBlockingPeriod 60\n\
             DOSLogDir \"@BLOCKS@\"",
        )
        .build();
    write_executable(
        &apache.root().join("cgi-bin/slow.sh"),
        "#!/bin/sh\nsleep 1.1\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslow answer\\n'\n",
    );
    apache.start();

    let client = apache.client().ip("203.0.113.44");
    let mut seen = Vec::new();
    for n in 1..=2 {
        let started = Instant::now();
        let r = get_settled(&client, "/cgi-bin/slow.sh");
        let took = started.elapsed();
        assert_eq!(r.status, 200, "request {n}: {:?}", r.headers);
        assert_eq!(r.body_text(), "slow answer\n", "request {n}");
        assert!(
            took >= Duration::from_millis(1100),
            "request {n} took only {took:?}: the CGI did not sleep"
        );
        seen.push(r.status);
    }
    let third = get_settled(&client, "/cgi-bin/slow.sh");
    assert_refusal(&third, "3rd request after two slow ones (score 202 > 150)");

    let lines = apache.log_lines("Request round-trip ");
    assert_eq!(
        lines.len(),
        2,
        "one deadline line per served request:\n{}",
        apache.error_log()
    );
    for line in &lines {
        assert!(line.contains("[shield:notice]"), "{line}");
        assert!(
            line.contains("Scoring 100 /cgi-bin/slow.sh (proto: HTTP/1.1)"),
            "{line}"
        );
        let (took, limit) =
            round_trip_ms(line).unwrap_or_else(|| panic!("unparsable deadline line: {line}"));
        assert_eq!(limit, 1000, "{line}");
        assert!((1100..10_000).contains(&took), "{line}");
    }
    // The block is the client's, not the page's: its other pages are refused too.
    assert_refusal(
        &client.get("/index.html"),
        "other page of the blocked client",
    );
    apache.stop();
}

// ---------------------------------------------------------------------------------------------
// 4. Clients behind a trusted proxy
// ---------------------------------------------------------------------------------------------

/// Both clients arrive from 127.0.0.1 (the proxy); mod_remoteip restores each one, and only
/// the one that crossed the count is refused.
#[test]
fn remoteip_clients_behind_one_proxy_are_counted_apart() {
    let mut apache = Apache::builder()
        .remoteip()
        .config(
            "DOSPageCount 2\nDOSPageInterval 60\nDOSSiteCount 100\nDOSSiteInterval 60\n\
             DOSBlockingPeriod 60\nDOSLogDir \"@BLOCKS@\"",
        )
        .start();
    let a = apache.client().ip("203.0.113.5");
    let b = apache.client().ip("203.0.113.6");
    let got = statuses(&a, "/page.html", 2);
    assert_eq!(got, [200, 200], "203.0.113.5, requests 1-2");
    assert_refusal(&a.get("/page.html"), "203.0.113.5, request 3");
    assert_eq!(b.get("/page.html").status, 200, "203.0.113.6, request 1");
    assert_eq!(b.get("/page.html").status, 200, "203.0.113.6, request 2");
    // The proxy itself (no forwarding header) is a third client.
    assert_eq!(apache.get("/page.html").status, 200, "127.0.0.1 direct");
    assert_refusal(&a.get("/other.html"), "203.0.113.5 stays blocked");

    std::thread::sleep(Duration::from_millis(200)); // access log is written after the answer
    let clients: Vec<String> = apache
        .access_entries()
        .into_iter()
        .filter(|e| e.path == "/page.html")
        .map(|e| e.client)
        .collect();
    assert!(
        clients.iter().any(|c| c == "203.0.113.5") && clients.iter().any(|c| c == "203.0.113.6"),
        "mod_remoteip did not restore the clients: {clients:?}"
    );
    apache.stop();
}

// ---------------------------------------------------------------------------------------------
// 5. Whitelist
// ---------------------------------------------------------------------------------------------

#[test]
fn whitelisted_clients_are_never_counted() {
    let mut apache = Apache::builder()
        .remoteip()
        .config(
            "DOSWhitelist 198.51.100.0/24 192.0.2.*\nDOSWhitelist 2001:db8:aaaa::/48\n\
             DOSPageCount 2\nDOSPageInterval 60\nDOSSiteCount 100\nDOSSiteInterval 60\n\
             DOSBlockingPeriod 60\nDOSLogDir \"@BLOCKS@\"",
        )
        .start();
    for ip in [
        "198.51.100.200",      // v4 CIDR (outside the /25)
        "192.0.2.200",         // octet wildcard
        "2001:db8:aaaa:17::5", // v6 CIDR
        // IPv4-mapped, matches the v4 CIDR. (APR already prints such an address in dotted
        // form, so here the module sees 198.51.100.9; its own mapping is unit-tested.)
        "::ffff:198.51.100.9",
    ] {
        let got = statuses(&apache.client().ip(ip), "/page.html", 20);
        assert_eq!(got, [200; 20], "whitelisted {ip}");
    }
    // Just outside each entry: counted, refused at the 3rd.
    for ip in ["198.51.101.1", "192.0.3.200", "2001:db8:aaab::5"] {
        let c = apache.client().ip(ip);
        assert_eq!(statuses(&c, "/page.html", 2), [200, 200], "{ip}");
        assert_refusal(&c.get("/page.html"), &format!("non-whitelisted {ip}, 3rd"));
    }
    assert_eq!(
        apache.log_count("blocking period started"),
        3,
        "only the three outsiders are blocked:\n{}",
        apache.error_log()
    );
    apache.stop();
}

// ---------------------------------------------------------------------------------------------
// 6. IPv6 grouping
// ---------------------------------------------------------------------------------------------

/// Six addresses of one /64 are one client: with DOSPageCount 5 the 6th is refused, and the
/// block covers the whole /64; another /64 is a different client.
#[test]
fn ipv6_addresses_of_one_64_are_one_client() {
    let mut apache = Apache::builder()
        .remoteip()
        .config(
            "DOSPageCount 5\nDOSPageInterval 60\nDOSSiteCount 100\nDOSSiteInterval 60\n\
             DOSBlockingPeriod 60\nDOSLogDir \"@BLOCKS@\"",
        )
        .start();
    let mut last = None;
    for i in 1..=6 {
        let ip = format!("2001:db8:1:2::{i}");
        let r = apache.client().ip(&ip).get("/page.html");
        if i <= 5 {
            assert_eq!(r.status, 200, "{ip}: request {i} of the /64");
        }
        last = Some(r);
    }
    assert_refusal(
        &last.expect("six requests"),
        "2001:db8:1:2::6, 6th request of the /64",
    );
    // The block is for the /64, whatever the interface id.
    assert_refusal(
        &apache
            .client()
            .ip("2001:db8:1:2:ffff::99")
            .get("/other.html"),
        "another address of the blocked /64",
    );
    // The neighbouring /64 is another client.
    let other = apache.client().ip("2001:db8:1:3::1");
    assert_eq!(other.get("/page.html").status, 200, "2001:db8:1:3::1");
    let blocks = apache.log_lines("blocking period started for IP: ");
    assert_eq!(blocks.len(), 1, "{blocks:#?}");
    assert!(
        blocks[0].contains("2001:db8:1:2::"),
        "block line must name the /64: {}",
        blocks[0]
    );
    apache.stop();
}

// ---------------------------------------------------------------------------------------------
// 7. Monitor mode
// ---------------------------------------------------------------------------------------------

#[test]
fn monitor_mode_logs_would_block_and_serves() {
    let mut apache = Apache::builder()
        .remoteip()
        .config(
            "DOSEnabled monitor\nDOSPageCount 2\nDOSPageInterval 60\nDOSSiteCount 100\n\
             DOSSiteInterval 60\nDOSBlockingPeriod 60\nDOSLogDir \"@BLOCKS@\"\n\
             <Location /shield-status>\nSetHandler shield-handler\nDOSEnabled off\n</Location>",
        )
        .start();
    let client = apache.client().ip("203.0.113.77");
    assert_eq!(statuses(&client, "/page.html", 10), [200; 10]);
    // The status page lists the would-be blocks (one per crossed window: 3 of 10 requests).
    let page = apache
        .client()
        .ip("198.51.100.250")
        .get("/shield-status?auto");
    let text = page.body_text();
    assert!(
        text.contains("\nWouldBlocks: 3\n")
            && text.contains("WouldBlock: 203.0.113.77 rule=page score=3 count=2"),
        "status page:\n{text}"
    );
    let would = apache.log_lines("would block IP: 203.0.113.77");
    assert!(
        !would.is_empty(),
        "no 'would block' line for 10 requests over DOSPageCount 2:\n{}",
        apache.error_log()
    );
    assert!(
        would.iter().all(|l| l.contains("[shield:notice]")),
        "{would:#?}"
    );
    assert_eq!(apache.log_count("blocking period started"), 0);
    assert!(
        !apache.blocks_dir().join("dos-203.0.113.77").exists(),
        "monitor mode wrote a block file"
    );
    apache.stop();
}

// ---------------------------------------------------------------------------------------------
// 8. Per-file rule: the WordPress login form
// ---------------------------------------------------------------------------------------------

/// wp-login.php (a CGI, so it answers GET and POST) counts only POSTs, with its own count of
/// 3; other pages keep the server's count of 90.
#[test]
fn wordpress_login_counts_only_posts() {
    let mut apache = Apache::builder()
        .remoteip()
        .module("cgid")
        .config(
            "ScriptSock \"@ROOT@/run/cgisock\"\n\
             <Directory \"@DOCS@\">\n\
             \x20   <Files \"wp-login.php\">\n\
             \x20       SetHandler cgi-script\n\
             \x20       Options +ExecCGI\n\
             \x20   </Files>\n\
             </Directory>\n\
             DOSPageCount 90\nDOSPageInterval 60\nDOSSiteCount 500\nDOSSiteInterval 60\n\
             DOSBlockingPeriod 60\nDOSLogDir \"@BLOCKS@\"\n\
             <Files \"wp-login.php\">\n\
             \x20   DOSPageCount 3\n\
             \x20   <If \"%{REQUEST_METHOD} != 'POST'\">\n\
             \x20       DOSEnabled off\n\
             \x20   </If>\n\
             </Files>",
        )
        .build();
    let (ok, text) = apache.config_test();
    assert!(ok, "apache2 -t refused the WordPress pattern:\n{text}");
    write_executable(
        &apache.docs().join("wp-login.php"),
        "#!/bin/sh\nprintf 'Content-Type: text/html\\r\\n\\r\\nlogin form %s\\n' \"$REQUEST_METHOD\"\n",
    );
    apache.start();

    let wp = apache.client().ip("203.0.113.88");
    for n in 1..=20 {
        let r = wp.get("/wp-login.php");
        assert_eq!(r.status, 200, "GET {n} of wp-login.php");
        assert_eq!(r.body_text(), "login form GET\n", "GET {n}");
    }
    // Other pages: the server's count (90), not the login form's 3.
    assert_eq!(statuses(&wp, "/page.html", 10), [200; 10], "/page.html");
    let post = |n: usize| {
        let r = wp.request(
            "POST",
            "/wp-login.php",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Content-Length", "0"),
            ],
        );
        assert!(
            r.status == 200 || r.status == 429,
            "POST {n}: unexpected status {} {:?}",
            r.status,
            r.headers
        );
        r
    };
    for n in 1..=3 {
        let r = post(n);
        assert_eq!(r.status, 200, "POST {n}");
        assert_eq!(r.body_text(), "login form POST\n", "POST {n}");
    }
    assert_refusal(&post(4), "POST 4 with DOSPageCount 3");
    // Blocks are checked before the per-directory exemption: the GET is refused too.
    assert_refusal(&wp.get("/wp-login.php"), "GET by the blocked client");
    // Another client's GETs and page views are unaffected.
    let other = apache.client().ip("203.0.113.89");
    assert_eq!(other.get("/wp-login.php").status, 200);
    assert_eq!(statuses(&other, "/page.html", 5), [200; 5]);
    apache.stop();
}

// ---------------------------------------------------------------------------------------------
// 9. DOSCanonical
// ---------------------------------------------------------------------------------------------

fn canonical_server(canonical: &str) -> Apache {
    Apache::builder()
        .remoteip()
        .file("search", b"search results\n")
        .config(&format!(
            "DOSCanonical {canonical}\nDOSPageCount 2\nDOSPageInterval 60\nDOSSiteCount 100\n\
             DOSSiteInterval 60\nDOSBlockingPeriod 60\nDOSLogDir \"@BLOCKS@\""
        ))
        .start()
}

/// With `DOSCanonical off` the query string is part of the page: each query is its own page,
/// while one query repeated is still counted.
#[test]
fn canonical_off_counts_each_query_as_a_page() {
    let mut apache = canonical_server("off");
    let client = apache.client().ip("203.0.113.101");
    for q in 1..=6 {
        let r = client.get(&format!("/search?q={q}"));
        assert_eq!(r.status, 200, "/search?q={q} with DOSCanonical off");
    }
    let repeat = apache.client().ip("203.0.113.102");
    assert_eq!(statuses(&repeat, "/search?q=same", 2), [200, 200]);
    assert_refusal(
        &repeat.get("/search?q=same"),
        "3rd /search?q=same with DOSCanonical off",
    );
    apache.stop();
}

/// With `DOSCanonical on` (the default) the query string is ignored: three queries of one path
/// are three hits of one page.
#[test]
fn canonical_on_ignores_the_query_string() {
    let mut apache = canonical_server("on");
    let client = apache.client().ip("203.0.113.103");
    assert_eq!(client.get("/search?q=1").status, 200);
    assert_eq!(client.get("/search?q=2").status, 200);
    assert_refusal(
        &client.get("/search?q=3"),
        "3rd query of /search with DOSCanonical on",
    );
    apache.stop();
}
