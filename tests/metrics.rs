//! `/shield-status?metrics` of a real Apache: `promtool check metrics` accepts it, a real
//! Prometheus scraping it with the shipped scrape configuration answers a query for
//! `mod_shield_blocks_active` with the value after a block, the shipped Grafana dashboard's
//! queries name only metrics that exist and evaluate, and the shared tier's backend gauge
//! follows a real memcached going away.

mod common;

use common::command::{run, Output};
use common::*;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const PROMTOOL: &str = "/usr/bin/promtool";
const PROMETHEUS: &str = "/usr/bin/prometheus";
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// Prometheus starts, scrapes (every second) and answers within this.
const PROMETHEUS_WAIT: Duration = Duration::from_secs(60);
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The shipped alerting rules and their promtool unit tests (beside them).
const ALERTS: &str = "packaging/prometheus/mod_shield-alerts.yml";
const ALERTS_TEST: &str = "packaging/prometheus/mod_shield-alerts.test.yml";

const STATUS_LOCATION: &str = "<Location /shield-status>\n\
     \x20   SetHandler shield-handler\n\
     \x20   Require local\n\
     </Location>\n";

/// DOSPageCount 2, long windows and blocks, the status page for local clients, and 127.0.0.1
/// (the scraper) whitelisted so scrapes never count.
fn server_with(extra: &str, modules: &[&str]) -> Apache {
    let mut b = Apache::builder().mpm(Mpm::Event).remoteip();
    for m in modules {
        b = b.module(m);
    }
    b.module("authz_host")
        .config(&format!(
            "DOSPageCount 2\n\
             DOSPageInterval 30\n\
             DOSSiteCount 100\n\
             DOSSiteInterval 30\n\
             DOSBlockingPeriod 300 600\n\
             DOSWhitelist 127.0.0.0/8\n\
             DOSLogDir \"@BLOCKS@\"\n\
             {extra}{STATUS_LOCATION}"
        ))
        .start()
}

fn server() -> Apache {
    server_with("", &[])
}

/// Three requests for one page as `ip`: the third crosses DOSPageCount 2 and is refused.
fn block(apache: &Apache, ip: &str) {
    let client = apache.client().ip(ip);
    let statuses: Vec<u16> = (0..3).map(|_| client.get("/index.html").status).collect();
    assert_eq!(
        statuses,
        [200, 200, 429],
        "{ip}: the 3rd request must block"
    );
}

/// The metrics as served, checking status and content type.
fn metrics(apache: &Apache, query: &str) -> String {
    let r = apache.get(&format!("/shield-status{query}"));
    assert_eq!(r.status, 200, "{query}: {}", r.body_text());
    assert_eq!(r.header("content-type"), Some(CONTENT_TYPE), "{query}");
    r.body_text()
}

/// The value of the sample `series` (name with its labels exactly as written), if present.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|e| panic!("{series}: bad value {v:?}: {e}"))
        })
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("shield-{what}-{}-{nanos:x}", std::process::id()));
        fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `promtool check metrics` with `text` on its standard input.
fn promtool_check(scratch: &Path, name: &str, text: &str) -> Output {
    let file = scratch.join(name);
    fs::write(&file, text).expect("write metrics file");
    run(
        Command::new("sh")
            .arg("-c")
            .arg(format!("exec {PROMTOOL} check metrics < \"$1\""))
            .arg("sh")
            .arg(&file),
        TOOL_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The metric names the shipped Grafana dashboard queries.
fn dashboard_queries() -> Vec<String> {
    let path = Path::new(REPO).join("packaging/grafana/mod_shield.json");
    let text = fs::read_to_string(&path).expect("read the Grafana dashboard");
    let v: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in v["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    assert!(exprs.len() >= 5, "{exprs:?}");
    exprs
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("mod_shield_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.push(name);
    }
    out
}

#[test]
fn promtool_accepts_the_metrics_of_a_real_server() {
    let apache = server();
    block(&apache, "192.0.2.7");
    assert_eq!(
        apache.client().ip("203.0.113.5").get("/style.css").status,
        200
    );

    let text = metrics(&apache, "?metrics");
    // Prometheus' `params: {metrics: ['']}` asks with `?metrics=`: the same page.
    let again = metrics(&apache, "?metrics=");
    assert_eq!(
        sample(&again, "mod_shield_blocks_active"),
        Some(1),
        "{again}"
    );
    for (series, value) in [
        ("mod_shield_blocks_active", 1),
        ("mod_shield_requests_counted_total", 4),
        ("mod_shield_requests_refused_total{rule=\"page\"}", 1),
        ("mod_shield_requests_refused_total{rule=\"site\"}", 0),
        ("mod_shield_blocks_started_total{rule=\"page\"}", 1),
        ("mod_shield_blocks_started_total{rule=\"site\"}", 0),
        ("mod_shield_would_blocks_total", 0),
        ("mod_shield_area_entries{area=\"block\"}", 1),
        ("mod_shield_area_inserted_total{area=\"block\"}", 1),
        ("mod_shield_store_up", 1),
        ("mod_shield_lock_takeovers_total", 0),
        ("mod_shield_fail_opens_total", 0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
    }
    assert!(sample(&text, "mod_shield_area_capacity{area=\"site\"}").is_some_and(|c| c > 1000));
    assert!(
        !text.contains("mod_shield_backend_up"),
        "no shared tier configured:\n{text}"
    );

    let scratch = Scratch::new("promtool");
    let out = promtool_check(&scratch.0, "served.prom", &text);
    assert!(
        out.success,
        "promtool rejects the metrics:\n{}\n{text}",
        out.text()
    );
    assert!(
        out.text().trim().is_empty(),
        "promtool lint findings:\n{}",
        out.text()
    );
    // promtool does fail on a counter without `_total` (so its verdict above means something).
    let bad = text.replace(
        "mod_shield_requests_counted_total",
        "mod_shield_requests_counted",
    );
    let out = promtool_check(&scratch.0, "bad.prom", &bad);
    assert!(
        !out.success && out.text().contains("_total"),
        "promtool accepted a counter without _total:\n{}",
        out.text()
    );

    // A server with a store file and DOSCache on exports their families too: the store's
    // persistence and the challenge's counters.
    let full = server_with(
        "DOSCache shmcb:@ROOT@/shield.store(1048576)\nDOSChallenge on\n",
        &[],
    );
    let full_text = metrics(&full, "?metrics");
    assert_eq!(
        sample(&full_text, "mod_shield_store_persistent"),
        Some(1),
        "{full_text}"
    );
    assert_eq!(
        sample(&full_text, "mod_shield_challenges_issued_total"),
        Some(0)
    );
    let out = promtool_check(&scratch.0, "full.prom", &full_text);
    assert!(
        out.success && out.text().trim().is_empty(),
        "promtool on a file store with DOSChallenge on:\n{}\n{full_text}",
        out.text()
    );
    let exported = |name: &str| {
        [&text, &full_text]
            .iter()
            .any(|t| t.contains(&format!("# TYPE {name} ")))
            || name == "mod_shield_backend_up"
    };
    // The shipped dashboard and alert rules only ask for metrics that exist.
    for expr in dashboard_queries() {
        for name in metric_names(&expr) {
            assert!(
                exported(&name),
                "the dashboard queries {name}, which the server does not export"
            );
        }
    }
    let rules = fs::read_to_string(Path::new(REPO).join(ALERTS)).expect("read the alert rules");
    let named = metric_names(&rules);
    assert!(named.len() >= 5, "{named:?}");
    for name in named {
        assert!(
            exported(&name),
            "an alert rule uses {name}, which the server does not export"
        );
    }
    // The documentation lists every metric the server exports.
    let doc = fs::read_to_string(Path::new(REPO).join("docs/status-page.md")).unwrap();
    for t in [&text, &full_text] {
        for name in t.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let name = name.split(' ').next().unwrap();
            assert!(
                doc.contains(&format!("`{name}")),
                "docs/status-page.md misses {name}"
            );
        }
    }
    // The shipped scrape configuration is valid.
    let config = Path::new(REPO).join("packaging/prometheus/mod_shield.yml");
    let out = run(
        Command::new(PROMTOOL)
            .arg("check")
            .arg("config")
            .arg(&config),
        TOOL_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.success, "promtool check config:\n{}", out.text());
}

/// A Prometheus server of this test, on its own loopback port and storage; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    scratch: Scratch,
}

impl Prometheus {
    /// Scrapes `target` every second with the shipped scrape configuration.
    fn start(target: u16) -> Prometheus {
        let shipped =
            fs::read_to_string(Path::new(REPO).join("packaging/prometheus/mod_shield.yml"))
                .expect("read the shipped scrape configuration");
        assert!(shipped.contains("'localhost:80'") && shipped.contains("scrape_interval: 15s"));
        let config = shipped
            .replace("'localhost:80'", &format!("'127.0.0.1:{target}'"))
            .replace("scrape_interval: 15s", "scrape_interval: 1s");
        let scratch = Scratch::new("prometheus");
        fs::write(scratch.0.join("prometheus.yml"), config).expect("write prometheus.yml");
        let mut last = String::new();
        for attempt in 0..3 {
            let port = free_port();
            let log = scratch.0.join(format!("prometheus-{attempt}.log"));
            let mut child = {
                use std::os::unix::process::CommandExt;
                let out = fs::File::create(&log).expect("prometheus log");
                Command::new(PROMETHEUS)
                    .arg(format!(
                        "--config.file={}",
                        scratch.0.join("prometheus.yml").display()
                    ))
                    .arg(format!(
                        "--storage.tsdb.path={}",
                        scratch.0.join(format!("data-{attempt}")).display()
                    ))
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                    .stdin(Stdio::null())
                    .stdout(out.try_clone().expect("log"))
                    .stderr(out)
                    .process_group(0)
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot run {PROMETHEUS}: {e}"))
            };
            let deadline = Instant::now() + PROMETHEUS_WAIT;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    // E.g. the port was taken between probing and binding: another one.
                    last = format!(
                        "exited with {status}:\n{}",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                    break;
                }
                if http_get(port, "/-/ready").is_some_and(|(status, _)| status == 200) {
                    return Prometheus {
                        child,
                        port,
                        scratch,
                    };
                }
                if Instant::now() > deadline {
                    kill(-(child.id() as i32), libc::SIGKILL);
                    let _ = child.wait();
                    panic!(
                        "prometheus not ready within {PROMETHEUS_WAIT:?}:\n{}",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("prometheus did not start: {last}");
    }

    /// `/api/v1/query` of `expr`: the JSON answer.
    fn query(&self, expr: &str) -> serde_json::Value {
        let (status, body) = http_get(
            self.port,
            &format!("/api/v1/query?query={}", percent_encode(expr)),
        )
        .unwrap_or_else(|| panic!("prometheus on port {} does not answer", self.port));
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("query {expr}: status {status}, not JSON ({e}): {body}"))
    }

    /// Waits until `expr` has exactly one series with value `want`.
    fn wait_for(&self, expr: &str, want: &str) {
        let deadline = Instant::now() + PROMETHEUS_WAIT;
        let mut last;
        loop {
            let v = self.query(expr);
            assert_eq!(v["status"], "success", "{expr}: {v}");
            let result = &v["data"]["result"];
            if result.as_array().is_some_and(|r| r.len() == 1) && result[0]["value"][1] == want {
                return;
            }
            last = v;
            if Instant::now() > deadline {
                let targets = http_get(self.port, "/api/v1/targets").map(|(_, b)| b);
                panic!(
                    "{expr} did not become {want} within {PROMETHEUS_WAIT:?}; last answer {last}\n\
                     targets: {targets:?}\nlog:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        let mut out = String::new();
        for attempt in 0..3 {
            out += &fs::read_to_string(self.scratch.0.join(format!("prometheus-{attempt}.log")))
                .unwrap_or_default();
        }
        out
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Its own process group (the child this test spawned).
        kill(-(self.child.id() as i32), libc::SIGKILL);
        let _ = self.child.wait();
    }
}

/// GET `path` on 127.0.0.1:`port` (HTTP/1.0, read to the end): (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_scrapes_blocks_active() {
    let apache = server();
    let prometheus = Prometheus::start(apache.port());
    // Scraped before any block: 0.
    prometheus.wait_for("mod_shield_blocks_active", "0");
    prometheus.wait_for("up{job=\"mod_shield\"}", "1");

    block(&apache, "192.0.2.7");
    prometheus.wait_for("mod_shield_blocks_active", "1");
    prometheus.wait_for("mod_shield_blocks_started_total{rule=\"page\"}", "1");
    prometheus.wait_for("mod_shield_requests_refused_total{rule=\"page\"}", "1");
    prometheus.wait_for("mod_shield_requests_counted_total", "3");

    // Every query of the shipped dashboard evaluates.
    for expr in dashboard_queries() {
        let v = prometheus.query(&expr.replace("$instance", ".*"));
        assert_eq!(v["status"], "success", "dashboard query {expr}: {v}");
    }
    // The area fill of the dashboard: one block record in the block area.
    let v = prometheus.query("mod_shield_area_entries{area=\"block\"}");
    assert_eq!(v["data"]["result"][0]["value"][1], "1", "{v}");
}

/// A memcached of this test on a free loopback port; killed on drop.
struct Memcached {
    child: Option<Child>,
    port: u16,
}

impl Memcached {
    fn start() -> Memcached {
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new("/usr/bin/memcached");
            cmd.args([
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-m",
                "16",
            ]);
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                cmd.args(["-u", "nobody"]);
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("run memcached");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken: try another
                }
                if Self::ping(port) {
                    return Memcached {
                        child: Some(child),
                        port,
                    };
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("memcached did not start");
    }

    fn ping(port: u16) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 64];
        s.write_all(b"version\r\n").is_ok()
            && s.read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"VERSION"))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn backend_up_follows_the_shared_tier() {
    let mut memcached = Memcached::start();
    let apache = server_with(
        &format!("DOSCache memcache:127.0.0.1:{}\n", memcached.port),
        &[],
    );
    let series = format!(
        "mod_shield_backend_up{{backend=\"memcache:127.0.0.1:{}\"}}",
        memcached.port
    );
    assert_eq!(
        apache.client().ip("203.0.113.30").get("/index.html").status,
        200
    );
    let text = metrics(&apache, "?metrics");
    assert_eq!(sample(&text, &series), Some(1), "{text}");

    // The backend goes away: the next requests that try it find it down (fail open).
    memcached.kill();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 0;
    loop {
        // A fresh client and page each time, so nobody gets near a count.
        let r = apache
            .client()
            .ip(&format!("203.0.113.{}", 40 + i % 200))
            .get(&format!("/index.html?{i}"));
        assert_eq!(r.status, 200, "fail open while the backend is down");
        let text = metrics(&apache, "?metrics");
        match sample(&text, &series) {
            Some(0) => break,
            Some(1) if Instant::now() < deadline => {}
            other => panic!("{series} is {other:?} after the backend was killed:\n{text}"),
        }
        i += 1;
        thread::sleep(Duration::from_millis(200));
    }
    let scratch = Scratch::new("promtool-backend");
    let out = promtool_check(&scratch.0, "down.prom", &metrics(&apache, "?metrics"));
    assert!(
        out.success && out.text().trim().is_empty(),
        "{}",
        out.text()
    );
}

#[test]
fn counters_survive_graceful_and_full_restarts() {
    let mut apache = server();
    block(&apache, "192.0.2.7");
    let counts = |apache: &Apache| {
        let text = metrics(apache, "?metrics");
        [
            "mod_shield_requests_counted_total",
            "mod_shield_blocks_started_total{rule=\"page\"}",
            "mod_shield_requests_refused_total{rule=\"page\"}",
        ]
        .map(|s| sample(&text, s).unwrap_or_else(|| panic!("no {s} in:\n{text}")))
    };
    assert_eq!(counts(&apache), [3, 1, 1]);
    apache.graceful();
    assert_eq!(counts(&apache), [3, 1, 1], "after graceful");
    // The block is still enforced, and its refusal counted on top.
    assert_eq!(
        apache.client().ip("192.0.2.7").get("/index.html").status,
        429
    );
    assert_eq!(counts(&apache), [3, 1, 2]);
    apache.restart();
    assert_eq!(counts(&apache), [3, 1, 2], "after restart");
    // The chart's minutes too.
    let v: serde_json::Value =
        serde_json::from_str(&apache.get("/shield-status?json").body_text()).expect("json");
    let minutes = v["activity"]["per_minute"].as_array().expect("per_minute");
    let sum = |k: &str| minutes.iter().map(|m| m[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        (sum("counted"), sum("refused"), sum("blocks_started")),
        (3, 2, 1)
    );
}

/// A store file that cannot be made (two missing directory levels) leaves the server on
/// anonymous memory: every format says "degraded" with the reason, `store_persistent` is 0
/// while `store_up` stays 1, and the error log has one warning line. Once the directory
/// exists, a graceful restart makes the store the file again (its blocks carried over):
/// persistent 1, state ok.
#[test]
fn a_store_that_fell_back_to_memory_is_reported_degraded() {
    let mut apache = server_with(
        "DOSCache shmcb:@ROOT@/missing/deeper/shield.store(65536)\n",
        &[],
    );
    let path = apache.root().join("missing/deeper/shield.store");
    let named = path.display().to_string();
    let warnings = apache.log_lines(&named);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("[shield:warn]") || warnings[0].contains(":warn]"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[0].contains("degraded to anonymous memory"),
        "{}",
        warnings[0]
    );

    let text = metrics(&apache, "?metrics");
    assert_eq!(
        sample(&text, "mod_shield_store_persistent"),
        Some(0),
        "{text}"
    );
    assert_eq!(sample(&text, "mod_shield_store_up"), Some(1), "{text}");
    let build = format!(
        "mod_shield_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&text, &build), Some(1), "{text}");
    let scratch = Scratch::new("promtool-degraded");
    let out = promtool_check(&scratch.0, "degraded.prom", &text);
    assert!(
        out.success && out.text().trim().is_empty(),
        "{}",
        out.text()
    );

    let auto = apache.get("/shield-status?auto").body_text();
    let state = auto
        .lines()
        .find_map(|l| l.strip_prefix("StoreState: "))
        .unwrap_or_else(|| panic!("{auto}"));
    assert!(
        state.starts_with(&format!(
            "degraded (memory only: cannot use store file {named}: "
        )) && state.ends_with(')'),
        "{state}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&apache.get("/shield-status?json").body_text()).expect("json");
    assert_eq!(v["store"]["state"].as_str(), Some(state), "{}", v["store"]);
    assert_eq!(v["store"]["persistent"], false);
    let html = apache.get("/shield-status").body_text();
    assert!(html.contains("degraded (memory only: "), "{html}");
    // Counting still works on the memory store.
    block(&apache, "192.0.2.9");

    fs::create_dir_all(path.parent().unwrap()).unwrap();
    apache.graceful();
    // The memory store's block was carried into the file.
    assert_eq!(
        apache.client().ip("192.0.2.9").get("/index.html").status,
        429
    );
    let text = metrics(&apache, "?metrics");
    assert_eq!(
        sample(&text, "mod_shield_store_persistent"),
        Some(1),
        "{text}"
    );
    let auto = apache.get("/shield-status?auto").body_text();
    assert!(auto.contains("\nStoreState: ok\n"), "{auto}");
    assert!(path.is_file());
}

/// The shipped alerting rules: `promtool check rules` accepts them, and their unit tests
/// (`promtool test rules`) pass; the same tests fail against a rule with another threshold,
/// so they do test the rules.
#[test]
fn alert_rules_pass_promtool_check_and_test() {
    let rules = Path::new(REPO).join(ALERTS);
    let out = run(
        Command::new(PROMTOOL).arg("check").arg("rules").arg(&rules),
        TOOL_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.success && out.text().contains("SUCCESS: 6 rules found"),
        "promtool check rules:\n{}",
        out.text()
    );
    let out = run(
        Command::new(PROMTOOL)
            .arg("test")
            .arg("rules")
            .arg(Path::new(REPO).join(ALERTS_TEST)),
        TOOL_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.success, "promtool test rules:\n{}", out.text());

    let scratch = Scratch::new("alerts");
    let text = fs::read_to_string(&rules).unwrap();
    assert!(text.contains(") >= 3"));
    let name = Path::new(ALERTS).file_name().unwrap();
    fs::write(scratch.0.join(name), text.replace(") >= 3", ") >= 4")).unwrap();
    let test = Path::new(ALERTS_TEST).file_name().unwrap();
    fs::copy(Path::new(REPO).join(ALERTS_TEST), scratch.0.join(test)).unwrap();
    let out = run(
        Command::new(PROMTOOL)
            .arg("test")
            .arg("rules")
            .arg(scratch.0.join(test)),
        TOOL_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !out.success && out.text().contains("ShieldBlocksOnManyServers"),
        "the rule tests pass against a changed rule:\n{}",
        out.text()
    );
}
