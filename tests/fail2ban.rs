//! The shipped fail2ban filter and jail (`packaging/fail2ban/`) against the real thing: a real
//! Apache with mod_shield and mod_remoteip blocks two clients (IPv4 and IPv6) and two networks
//! (an IPv4 /24 and an IPv6 /48, each rotating through its addresses) while an innocent one
//! makes a single request; Debian's `fail2ban-regex` must find exactly the blocked clients
//! in that error log, the stock `apache-auth` filter must find nothing, and a real
//! `fail2ban-server` running the shipped jail must ban the blocked address.
//!
//! Every external command runs under a deadline; the fail2ban server is stopped (and killed
//! by its pid if it does not stop) whatever the outcome.

mod common;

use common::command::{kill_group, run, Output};
use common::{Apache, Response};
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv6Addr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

const FILTER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/packaging/fail2ban/filter.d/shield.conf"
);
const JAIL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/packaging/fail2ban/jail.d/shield.conf"
);
const APACHE_AUTH: &str = "/etc/fail2ban/filter.d/apache-auth.conf";
/// Debian's fail2ban configuration, the base the shipped jail is loaded on.
const SYSTEM_F2B: &str = "/etc/fail2ban";

const BLOCKED_V4: &str = "192.0.2.10";
const BLOCKED_V6: &str = "2001:db8:1::5";
/// The /64 mod_shield groups `BLOCKED_V6` into (DOSIPv6Prefix default).
const V6_GROUP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0);
const INNOCENT: &str = "192.0.2.20";
/// The networks blocked by `DOSPrefixCount` (their addresses make one request each).
const BLOCKED_NET_V4: &str = "198.51.100.0/24";
const BLOCKED_NET_V6: &str = "2001:db8:aa::/48";
/// Threshold of both networks, and how many of their addresses make one request each.
const NET_COUNT: usize = 5;
const NET_CLIENTS: usize = 7;
const BLOCK_EVENT: &str = "blocking period started for IP:";

const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
const BAN_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Scratch directories
// ---------------------------------------------------------------------------------------------

/// A directory under the temp dir, removed on drop unless the test is failing.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "shield-f2b-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir).expect("create scratch subdir");
        }
        fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("scratch dir kept for inspection: {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The traffic: one real Apache run shared by the tests of this binary
// ---------------------------------------------------------------------------------------------

struct Traffic {
    /// The complete error log of the run.
    error_log: String,
    /// What each client saw, for failure messages.
    statuses: Vec<(String, Vec<u16>)>,
}

impl Traffic {
    fn block_lines(&self) -> Vec<&str> {
        self.error_log
            .lines()
            .filter(|l| l.contains(BLOCK_EVENT))
            .collect()
    }

    fn describe(&self) -> String {
        format!(
            "statuses per client: {:?}\nerror log:\n{}",
            self.statuses, self.error_log
        )
    }
}

/// Apache with mod_shield (`DOSPageCount 2`, `DOSPageInterval 60`) behind mod_remoteip: the
/// two abusers request one page until they are refused, the innocent client asks once.
fn traffic() -> &'static Traffic {
    static TRAFFIC: OnceLock<Result<Traffic, String>> = OnceLock::new();
    let result = TRAFFIC.get_or_init(|| {
        std::panic::catch_unwind(produce_traffic).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic while producing traffic".to_owned())
        })
    });
    match result {
        Ok(t) => t,
        Err(e) => panic!("the Apache run that feeds the fail2ban tests failed: {e}"),
    }
}

/// GET /page.html as `ip` (mod_remoteip trusts 127.0.0.1's X-Forwarded-For).
fn get_as(apache: &Apache, ip: &str) -> Response {
    apache.request("GET", "/page.html", &[("X-Forwarded-For", ip)])
}

fn produce_traffic() -> Traffic {
    let mut apache = Apache::builder()
        .remoteip()
        .config(&format!(
            "LogLevel warn shield:info\nDOSPageCount 2\nDOSPageInterval 60\n\
             DOSSiteInterval 60\nDOSPrefixCount 24 {NET_COUNT}\nDOSPrefixCount 48 {NET_COUNT}\n\
             DOSPrefixCount 56 off\n"
        ))
        .start();
    let mut statuses = Vec::new();
    for ip in [BLOCKED_V4, BLOCKED_V6] {
        let mut seen = Vec::new();
        // The 3rd request to the page is over the count; a few more make a missing refusal
        // obvious in the failure message rather than a matter of one request.
        for _ in 0..5 {
            let status = get_as(&apache, ip).status;
            seen.push(status);
            if status != 200 {
                break;
            }
        }
        statuses.push((ip.to_owned(), seen));
    }
    // One request from each of a few addresses of one /24 and of one /48 (another /64 each):
    // the request after the network's count is refused and blocks the network.
    for (net, ip_of) in [
        (
            BLOCKED_NET_V4,
            (|i| format!("198.51.100.{}", i + 1)) as fn(usize) -> String,
        ),
        (BLOCKED_NET_V6, |i| format!("2001:db8:aa:{:x}::9", i + 1)),
    ] {
        let seen = (0..NET_CLIENTS)
            .map(|i| get_as(&apache, &ip_of(i)).status)
            .collect();
        statuses.push((net.to_owned(), seen));
    }
    let innocent = get_as(&apache, INNOCENT);
    statuses.push((INNOCENT.to_owned(), vec![innocent.status]));
    // The block line is written while the refused request is served; give slow loggers a
    // moment before stopping.
    apache.wait_for_log(BLOCK_EVENT, Duration::from_secs(3));
    apache.stop();
    Traffic {
        error_log: apache.error_log(),
        statuses,
    }
}

// ---------------------------------------------------------------------------------------------
// fail2ban-regex
// ---------------------------------------------------------------------------------------------

struct RegexRun {
    matched: usize,
    ips: Vec<String>,
    report: String,
}

/// `fail2ban-regex` on a log file: the "Lines: … matched" count (from the full report with
/// `--print-all-matched`) and the captured addresses (`-o ip`, one per matched line).
fn fail2ban_regex(log: &Path, filter: &str) -> RegexRun {
    let report = run(
        Command::new("fail2ban-regex")
            .arg("--print-all-matched")
            .arg(log)
            .arg(filter),
        TOOL_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.success,
        "fail2ban-regex {} {filter} failed:\n{}",
        log.display(),
        report.text()
    );
    let matched = matched_count(&report.stdout).unwrap_or_else(|| {
        panic!(
            "no 'Lines: …' summary in fail2ban-regex output:\n{}",
            report.text()
        )
    });
    let ips = run(
        Command::new("fail2ban-regex")
            .args(["-o", "ip"])
            .arg(log)
            .arg(filter),
        TOOL_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(ips.success, "fail2ban-regex -o ip failed:\n{}", ips.text());
    RegexRun {
        matched,
        ips: ips
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        report: report.stdout,
    }
}

/// "Lines: 6 lines, 0 ignored, 4 matched, 2 missed" → 4.
fn matched_count(report: &str) -> Option<usize> {
    let line = report.lines().find(|l| l.starts_with("Lines:"))?;
    line.split(',')
        .find_map(|part| part.trim().strip_suffix(" matched"))
        .and_then(|n| n.trim().parse().ok())
}

/// An address fail2ban captured, with an optional "/prefix".
fn parse_capture(text: &str) -> Option<(IpAddr, Option<u8>)> {
    match text.split_once('/') {
        Some((addr, len)) => Some((addr.parse().ok()?, Some(len.parse().ok()?))),
        None => Some((text.parse().ok()?, None)),
    }
}

/// Whether a capture names the blocked IPv6 client's /64 (as its network address, or in CIDR
/// form with a prefix of at most 64 bits).
fn is_v6_group(capture: &str) -> bool {
    match parse_capture(capture) {
        Some((IpAddr::V6(addr), len)) => {
            let net = u128::from(V6_GROUP) >> 64;
            u128::from(addr) >> 64 == net && len.unwrap_or(64) <= 64
        }
        _ => false,
    }
}

fn write_log(scratch: &Scratch, text: &str) -> PathBuf {
    scratch.write("error.log", text)
}

/// (a) The shipped filter finds every block event of the run, captures the blocked clients'
/// addresses from the message, and nothing of the innocent client.
#[test]
fn shield_filter_matches_the_blocked_clients_of_a_real_apache() {
    let traffic = traffic();
    let block_lines = traffic.block_lines();
    assert!(
        block_lines.len() >= 2,
        "expected a '{BLOCK_EVENT}' line for {BLOCKED_V4} and for {BLOCKED_V6} (LogLevel \
         shield:info), found {}.\n{}",
        block_lines.len(),
        traffic.describe()
    );
    // Each network served exactly its count, then its block refused the rest.
    for net in [BLOCKED_NET_V4, BLOCKED_NET_V6] {
        let seen = traffic
            .statuses
            .iter()
            .find(|(c, _)| c == net)
            .map(|s| &s.1);
        let want: Vec<u16> = (0..NET_CLIENTS)
            .map(|i| if i < NET_COUNT { 200 } else { 429 })
            .collect();
        assert_eq!(seen, Some(&want), "{net}\n{}", traffic.describe());
    }
    eprintln!("block lines:\n{}", block_lines.join("\n"));
    let scratch = Scratch::new("filter");
    let log = write_log(&scratch, &traffic.error_log);
    let result = fail2ban_regex(&log, FILTER);

    assert_eq!(
        result.matched,
        block_lines.len(),
        "the filter must match every block line and nothing else.\nblock lines:\n{}\n\
         fail2ban-regex report:\n{}",
        block_lines.join("\n"),
        result.report
    );
    assert_eq!(
        result.ips.len(),
        result.matched,
        "one capture per matched line: {:?}",
        result.ips
    );
    assert!(
        result.ips.iter().any(|ip| ip == BLOCKED_V4),
        "{BLOCKED_V4} not captured: {:?}\n{}",
        result.ips,
        traffic.describe()
    );
    assert!(
        result.ips.iter().any(|ip| is_v6_group(ip)),
        "{BLOCKED_V6} (its /64 {V6_GROUP}) not captured: {:?}\n{}",
        result.ips,
        traffic.describe()
    );
    for net in [BLOCKED_NET_V4, BLOCKED_NET_V6] {
        assert!(
            result.ips.iter().any(|ip| ip == net),
            "the network {net} not captured: {:?}\n{}",
            result.ips,
            traffic.describe()
        );
    }
    for ip in &result.ips {
        assert!(
            ip == BLOCKED_V4 || is_v6_group(ip) || ip == BLOCKED_NET_V4 || ip == BLOCKED_NET_V6,
            "captured {ip}, which is neither blocked client (innocent {INNOCENT}, proxy \
             127.0.0.1): {:?}",
            result.ips
        );
    }
    // The [client …] prefix shows what mod_remoteip restored: the blocked client itself, so
    // the capture above came from the message and agrees with the prefix.
    assert!(
        block_lines
            .iter()
            .any(|l| l.contains(&format!("[client {BLOCKED_V4}:"))),
        "no block line names [client {BLOCKED_V4}:…]:\n{}",
        block_lines.join("\n")
    );
}

/// (b) mod_shield's lines never look like authentication failures to the stock `apache-auth`
/// filter — checked on the real log, with a control line proving that the
/// filter would see the mod_evasive-style wording under a `shield` tag.
#[test]
fn stock_apache_auth_filter_ignores_mod_shield() {
    let traffic = traffic();
    let shield_lines = traffic
        .error_log
        .lines()
        .filter(|l| l.contains("[shield:"))
        .count();
    assert!(
        shield_lines >= 2,
        "the run logged no mod_shield lines to test against.\n{}",
        traffic.describe()
    );
    let scratch = Scratch::new("auth");
    let log = write_log(&scratch, &traffic.error_log);
    let result = fail2ban_regex(&log, APACHE_AUTH);
    assert_eq!(
        result.matched, 0,
        "apache-auth matched mod_shield's log (captures {:?}):\n{}",
        result.ips, result.report
    );

    // Control: the wording mod_evasive used, under the shield tag, is an "auth failure".
    let control = scratch.write(
        "control.log",
        "[Mon Nov 23 13:00:00.123456 2026] [shield:error] [pid 123:tid 456] [client 198.51.100.9:40000] \
         client denied by server configuration: /srv/www/index.html\n",
    );
    let control = fail2ban_regex(&control, APACHE_AUTH);
    assert_eq!(
        control.matched, 1,
        "control line not matched by apache-auth; this test would prove nothing:\n{}",
        control.report
    );
}

/// The filter on hand-written lines of every shape httpd produces, plus lines that must not
/// match (other messages, other modules echoing client-controlled text, trailing garbage).
/// Independent of the module: it pins the filter's contract.
#[test]
fn shield_filter_accepts_httpd_line_shapes_and_nothing_else() {
    let date = "[Mon Nov 23 13:00:00.123456 2026]";
    let matching = [
        // event/worker MPM, behind a proxy without mod_remoteip: the message decides.
        (
            format!("{date} [shield:info] [pid 123:tid 456] [client 10.0.0.1:51234] {BLOCK_EVENT} 198.51.100.7 (expiry: 1795000000000000)"),
            "198.51.100.7",
        ),
        // prefork: no tid.
        (
            format!("{date} [shield:info] [pid 123] [client 198.51.100.8:1] {BLOCK_EVENT} 198.51.100.8 (expiry: 1795000000000000)"),
            "198.51.100.8",
        ),
        // IPv6 client with port in the prefix, the /64 in the message.
        (
            format!("{date} [shield:info] [pid 7:tid 8] [client 2001:db8:2::1:51234] {BLOCK_EVENT} 2001:db8:2:: (expiry: 1795000000000000)"),
            "2001:db8:2::",
        ),
        // The same group in CIDR form.
        (
            format!("{date} [shield:info] [pid 7:tid 8] [client 2001:db8:3::1:51234] {BLOCK_EVENT} 2001:db8:3::/64 (expiry: 1795000000000000)"),
            "2001:db8:3::/64",
        ),
        // Logged without a request (no [client …]).
        (
            format!("{date} [shield:info] [pid 9:tid 10] {BLOCK_EVENT} 203.0.113.5 (expiry: 1795000000000000)"),
            "203.0.113.5",
        ),
        // A higher level still counts.
        (
            format!("{date} [shield:notice] [pid 9:tid 10] [client 203.0.113.6:2] {BLOCK_EVENT} 203.0.113.6 (expiry: 1795000000000000)"),
            "203.0.113.6",
        ),
    ];
    let not_matching = [
        format!("{date} [shield:info] [pid 1:tid 2] [client 192.0.2.30:1] Request status 404 flagged with score 50"),
        format!("{date} [shield:notice] [pid 1:tid 2] [client 192.0.2.31:1] Request round-trip 1069 ms exceeds limit 1000 ms. Scoring 1 /x (proto: HTTP/1.1)"),
        // Another module echoing a client-chosen path that imitates the message.
        format!("{date} [core:info] [pid 1:tid 2] [client 192.0.2.32:1] AH00128: File does not exist: /srv/www/[shield:info] {BLOCK_EVENT} 192.0.2.99 (expiry: 1)"),
        format!("{date} [core:error] [pid 1:tid 2] [client 192.0.2.33:1] {BLOCK_EVENT} 192.0.2.33 (expiry: 1)"),
        format!("{date} [shield:info] [pid 1:tid 2] [client 192.0.2.34:1] {BLOCK_EVENT} 192.0.2.34 (expiry: 1) and more"),
        format!("{date} [shield:info] [pid 1:tid 2] [client 192.0.2.35:1] {BLOCK_EVENT} not-an-address (expiry: 1)"),
    ];
    let mut text = String::new();
    for (line, _) in &matching {
        text.push_str(line);
        text.push('\n');
    }
    for line in &not_matching {
        text.push_str(line);
        text.push('\n');
    }
    let scratch = Scratch::new("shapes");
    let log = write_log(&scratch, &text);
    let result = fail2ban_regex(&log, FILTER);
    assert_eq!(
        result.matched,
        matching.len(),
        "fail2ban-regex report:\n{}",
        result.report
    );
    let expected: BTreeSet<&str> = matching.iter().map(|(_, ip)| *ip).collect();
    let got: BTreeSet<&str> = result.ips.iter().map(String::as_str).collect();
    assert_eq!(got, expected, "captured addresses");
}

// ---------------------------------------------------------------------------------------------
// fail2ban-client / fail2ban-server with the shipped jail
// ---------------------------------------------------------------------------------------------

/// A fail2ban configuration directory: Debian's stock configuration (jail.conf, paths, action.d,
/// filter.d) without the admin's jails and local overrides, plus the shipped filter and the
/// shipped jail file unchanged. `%(apache_error_log)s` is pointed at `logs_glob` through
/// paths-overrides.local, the file Debian's paths-debian.conf reads last.
fn fail2ban_config(scratch: &Scratch, logs_glob: &Path) -> PathBuf {
    let conf = scratch.path("fail2ban");
    let out = run(
        Command::new("cp").arg("-a").arg(SYSTEM_F2B).arg(&conf),
        TOOL_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.success, "cp -a {SYSTEM_F2B}: {}", out.text());
    for dir in ["jail.d", "fail2ban.d"] {
        let _ = fs::remove_dir_all(conf.join(dir));
        fs::create_dir_all(conf.join(dir)).expect("recreate conf subdir");
    }
    for local in ["jail.local", "fail2ban.local", "paths-overrides.local"] {
        let _ = fs::remove_file(conf.join(local));
    }
    fs::copy(FILTER, conf.join("filter.d/shield.conf")).expect("copy shipped filter");
    fs::copy(JAIL, conf.join("jail.d/shield.conf")).expect("copy shipped jail");
    fs::write(
        conf.join("paths-overrides.local"),
        format!("[DEFAULT]\napache_error_log = {}\n", logs_glob.display()),
    )
    .expect("write paths-overrides.local");
    conf
}

/// The shipped jail file loads on Debian's fail2ban as it is, with the documented settings.
#[test]
fn shipped_jail_loads_with_documented_settings() {
    let scratch = Scratch::new("jail");
    let logs = scratch.path("logs");
    fs::create_dir_all(&logs).expect("logs dir");
    // Debian's glob is /var/log/apache2/*error.log: the main log and per-vhost logs.
    fs::write(logs.join("error.log"), "").expect("error.log");
    fs::write(logs.join("shop-error.log"), "").expect("shop-error.log");
    let conf = fail2ban_config(&scratch, &logs.join("*error.log"));

    let test = run(
        Command::new("fail2ban-client")
            .arg("-c")
            .arg(&conf)
            .arg("-t"),
        TOOL_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        test.success,
        "fail2ban-client -t rejects the jail:\n{}",
        test.text()
    );

    let dump = run(
        Command::new("fail2ban-client")
            .arg("-c")
            .arg(&conf)
            .arg("-d"),
        TOOL_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(dump.success, "fail2ban-client -d failed:\n{}", dump.text());
    let d = dump.stdout;
    for expected in [
        "['add', 'shield', ".to_owned(),
        "['set', 'shield', 'maxretry', 1]".to_owned(),
        "['set', 'shield', 'findtime', '3600']".to_owned(),
        "['set', 'shield', 'bantime', '600']".to_owned(),
        "['set', 'shield', 'datepattern', '{^LN-BEG}']".to_owned(),
        "['port', 'http,https']".to_owned(),
        format!(
            "['set', 'shield', 'addlogpath', '{}', ",
            logs.join("error.log").display()
        ),
        format!(
            "['set', 'shield', 'addlogpath', '{}', ",
            logs.join("shop-error.log").display()
        ),
        "['start', 'shield']".to_owned(),
    ] {
        assert!(d.contains(&expected), "dump lacks {expected}:\n{d}");
    }
    assert!(
        d.lines()
            .any(|l| l.starts_with("['set', 'shield', 'addfailregex'")
                && l.contains("blocking period started for IP")),
        "the jail does not use the shield filter:\n{d}"
    );
}

/// A running `fail2ban-server` (own socket, pid file, in-memory database, log file).
struct Server {
    child: Child,
    socket: PathBuf,
}

impl Server {
    fn client(&self, args: &[&str]) -> Result<Output, String> {
        run(
            Command::new("fail2ban-client")
                .arg("-s")
                .arg(&self.socket)
                .args(args),
            TOOL_TIMEOUT,
        )
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Err(e) = self.client(&["stop"]) {
            eprintln!("fail2ban-client stop: {e}");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("fail2ban-server did not stop; killing it");
        kill_group(&self.child);
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// (c) fail2ban-server with the shipped filter and jail bans the blocked clients from lines
/// that came out of the real Apache run, within seconds of them being appended.
#[test]
fn fail2ban_server_bans_a_blocked_client() {
    let traffic = traffic();
    let block_lines = traffic.block_lines();
    assert!(
        !block_lines.is_empty(),
        "the Apache run logged no '{BLOCK_EVENT}' line.\n{}",
        traffic.describe()
    );

    let scratch = Scratch::new("server");
    let logs = scratch.path("logs");
    fs::create_dir_all(&logs).expect("logs dir");
    let log = logs.join("error.log");
    fs::write(&log, "").expect("create watched log");
    let conf = fail2ban_config(&scratch, &logs.join("*error.log"));
    let bans = scratch.path("bans.txt");
    // The shipped jail stays as it is; a .local file only swaps the firewall action for one
    // that records the ban, as an administrator would override it.
    fs::write(
        conf.join("action.d/shield-test-record.conf"),
        format!(
            "[Definition]\nactionstart =\nactionstop =\nactioncheck =\n\
             actionban = echo <ip> >> {0}\nactionunban = echo unban <ip> >> {0}\n",
            bans.display()
        ),
    )
    .expect("write test action");
    fs::write(
        conf.join("jail.d/shield.local"),
        "[shield]\naction = shield-test-record\nbackend = polling\n",
    )
    .expect("write jail override");
    let socket = scratch.path("f2b.sock");
    let pidfile = scratch.path("f2b.pid");
    let server_log = scratch.path("fail2ban.log");
    fs::write(
        conf.join("fail2ban.local"),
        format!(
            "[Definition]\nloglevel = INFO\nlogtarget = {}\nsocket = {}\npidfile = {}\n\
             dbfile = :memory:\n",
            server_log.display(),
            socket.display(),
            pidfile.display()
        ),
    )
    .expect("write fail2ban.local");

    let child = Command::new("fail2ban-server")
        .arg("-f")
        .arg("-x")
        .arg("-c")
        .arg(&conf)
        .arg("-s")
        .arg(&socket)
        .arg("-p")
        .arg(&pidfile)
        .arg("--logtarget")
        .arg(&server_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start fail2ban-server");
    let mut server = Server { child, socket };
    let server_log_text = || fs::read_to_string(&server_log).unwrap_or_default();

    // Up when the jail answers.
    let deadline = Instant::now() + BAN_TIMEOUT;
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("fail2ban-server exited ({status}):\n{}", server_log_text());
        }
        if server
            .client(&["status", "shield"])
            .is_ok_and(|o| o.success)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fail2ban-server did not start the shield jail within {BAN_TIMEOUT:?}:\n{}",
            server_log_text()
        );
        thread::sleep(Duration::from_millis(200));
    }

    // Append the real log as Apache would: every line of the run, block lines included.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open watched log");
    f.write_all(traffic.error_log.as_bytes())
        .expect("append log lines");
    f.flush().expect("flush");
    drop(f);

    let deadline = Instant::now() + BAN_TIMEOUT;
    let banned = |bans: &str| -> (bool, bool, bool) {
        let lines: Vec<&str> = bans.lines().map(str::trim).collect();
        (
            lines.contains(&BLOCKED_V4),
            lines.iter().any(|l| is_v6_group(l)),
            lines.contains(&BLOCKED_NET_V4) && lines.contains(&BLOCKED_NET_V6),
        )
    };
    loop {
        let text = fs::read_to_string(&bans).unwrap_or_default();
        if banned(&text) == (true, true, true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "within {BAN_TIMEOUT:?} the jail banned {:?} (want {BLOCKED_V4}, {V6_GROUP}/64, \
             {BLOCKED_NET_V4} and {BLOCKED_NET_V6}).\n\
             block lines:\n{}\nfail2ban log:\n{}",
            text,
            block_lines.join("\n"),
            server_log_text()
        );
        thread::sleep(Duration::from_millis(200));
    }
    let bans_text = fs::read_to_string(&bans).unwrap_or_default();
    assert!(
        !bans_text
            .lines()
            .any(|l| l.trim() == INNOCENT || l.trim() == "127.0.0.1"),
        "banned an innocent address: {bans_text}"
    );
    let status = server
        .client(&["status", "shield"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        status.stdout.contains(BLOCKED_V4),
        "fail2ban-client status shield does not list {BLOCKED_V4}:\n{}",
        status.text()
    );
    server.stop();
    assert!(
        server.child.try_wait().is_ok_and(|s| s.is_some()),
        "fail2ban-server still running after stop"
    );
}
