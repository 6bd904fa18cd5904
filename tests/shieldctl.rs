//! shieldctl against a real running apache2 with a file-backed store, while a flood of other
//! clients runs: every command, the refusal that follows `block`, the request served after
//! `unblock`, `--forget`, the IPv6 group, JSON, errors, and shieldctl killed mid-operation.

mod common;

use common::{Apache, Client};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const SHIELDCTL: &str = env!("CARGO_BIN_EXE_shieldctl");

struct Ctl {
    store: PathBuf,
    blocks: PathBuf,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ctl {
    fn run(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(SHIELDCTL);
        cmd.arg("--store")
            .arg(&self.store)
            .arg("--log-dir")
            .arg(&self.blocks)
            .args(args);
        to_run(cmd.output().expect("run shieldctl"))
    }

    /// Runs and asserts exit 0; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, 0, "shieldctl {args:?}: {}{}", r.stdout, r.stderr);
        r.stdout
    }
}

fn to_run(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Clients 10.9.x.y hammering the server from threads until dropped (some get blocked,
/// which is part of the point: shieldctl shares the block area with them). 50 addresses per
/// thread: their records fit the test's areas, so the flood never evicts the records a test
/// looks at.
struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Flood {
    fn start(port: u16, threads: u8) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|t| {
                let (stop, sent) = (stop.clone(), sent.clone());
                thread::spawn(move || {
                    let mut i = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let ip = format!("10.9.{t}.{}", i % 50);
                        let path = if i.is_multiple_of(3) {
                            "/page.html"
                        } else {
                            "/"
                        };
                        let _ = Client::new(port).ip(&ip).try_get(path);
                        sent.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                })
            })
            .collect();
        let flood = Flood {
            stop,
            sent,
            threads,
        };
        // Under way before the test goes on.
        let deadline = Instant::now() + Duration::from_secs(30);
        while flood.sent() < 20 {
            assert!(Instant::now() < deadline, "the flood does not get going");
            thread::sleep(Duration::from_millis(5));
        }
        flood
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn server() -> (Apache, Ctl) {
    let apache = Apache::builder()
        .remoteip()
        .config(
            "DOSCache shmcb:@ROOT@/shield.store(262144)\n\
             DOSPageCount 5\nDOSPageInterval 10\nDOSSiteCount 1000\nDOSSiteInterval 10\n\
             DOSBlockingPeriod 2 100\nDOSLogDir @BLOCKS@\n",
        )
        .start();
    let ctl = Ctl {
        store: apache.root().join("shield.store"),
        blocks: apache.blocks_dir(),
    };
    (apache, ctl)
}

/// Seconds since the epoch of an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339_secs(text: &str) -> u64 {
    let n = |range: std::ops::Range<usize>| -> i64 { text[range].parse().unwrap() };
    assert!(
        text.len() == 20 && &text[10..11] == "T" && text.ends_with('Z'),
        "{text}"
    );
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (proleptic Gregorian), March-based years.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let days = 365 * y + y / 4 - y / 100 + y / 400 + (153 * m + 2) / 5 + d - 1 - 719_468;
    (days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)) as u64
}

fn line_of<'a>(list: &'a str, client: &str) -> Option<&'a str> {
    list.lines().find(|l| l.split(' ').next() == Some(client))
}

/// Requests /page.html until refused (at most 8); the refusal's Retry-After.
fn trigger_block(client: &Client) -> u64 {
    for _ in 0..8 {
        let r = client.get("/page.html");
        if r.status == 429 {
            return r.header_u64("Retry-After").unwrap();
        }
    }
    panic!("no block after 8 requests at DOSPageCount 5");
}

#[test]
fn block_list_show_unblock_under_a_flood() {
    let (apache, ctl) = server();
    let flood = Flood::start(apache.port(), 4);
    let client = Client::new(apache.port()).ip("192.0.2.50");
    assert_eq!(client.get("/").status, 200);
    let sent_before = flood.sent();

    // block: the next request is refused, with a true Retry-After.
    let out = ctl.ok(&["block", "192.0.2.50", "100"]);
    assert!(
        out.contains("blocked 192.0.2.50 for 100s (generation 1)"),
        "{out}"
    );
    let r = client.get("/");
    assert_eq!(r.status, 429);
    let retry = r.header_u64("Retry-After").unwrap();
    assert!((98..=100).contains(&retry), "Retry-After {retry}");
    let file = apache.blocks_dir().join("dos-192.0.2.50");
    assert!(file.is_file(), "block file written");

    // list: one line starting with the client, then rule, generation, time left, host, URI.
    let list = ctl.ok(&["list"]);
    let line = line_of(&list, "192.0.2.50").unwrap_or_else(|| panic!("{list}"));
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[1..3], ["manual", "1"], "{line}");
    let left: u64 = fields[3].trim_end_matches('s').parse().unwrap();
    assert!((95..=100).contains(&left), "{line}");
    let json: serde_json::Value = serde_json::from_str(&ctl.ok(&["list", "--json"])).unwrap();
    let entry = json
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["client"] == "192.0.2.50")
        .expect("in --json");
    assert_eq!(
        (entry["rule"].as_str(), entry["generation"].as_u64()),
        (Some("manual"), Some(1))
    );
    // Times in RFC 3339 (UTC), 100 s apart.
    let started = rfc3339_secs(entry["started"].as_str().unwrap());
    let until = rfc3339_secs(entry["until"].as_str().unwrap());
    assert_eq!(until - started, 100, "{entry}");
    assert!(started.abs_diff(common::unix_now()) < 60, "{entry}");

    // show: block and generation.
    let show = ctl.ok(&["show", "192.0.2.50"]);
    assert!(
        show.contains("blocked: rule manual, generation 1"),
        "{show}"
    );

    // unblock: the next request is served, the block file is gone.
    let out = ctl.ok(&["unblock", "192.0.2.50"]);
    assert!(out.contains("unblocked 192.0.2.50"), "{out}");
    assert_eq!(client.get("/").status, 200);
    assert!(!file.exists(), "block file removed");
    let show = ctl.ok(&["show", "192.0.2.50"]);
    assert!(
        show.contains("not blocked; generation 1 remembered"),
        "{show}"
    );
    // And again: not blocked is no error (as fail2ban-client's unban), with a message.
    let out = ctl.ok(&["unblock", "192.0.2.50"]);
    assert_eq!(out, "192.0.2.50 was not blocked\n");
    let v: serde_json::Value =
        serde_json::from_str(&ctl.ok(&["unblock", "192.0.2.50", "--json"])).unwrap();
    assert_eq!(
        (v["was_blocked"].as_bool(), v["generation"].as_u64()),
        (Some(false), Some(1))
    );

    // stats: the three areas with the status page's figures, while the flood counts.
    let stats = ctl.ok(&["stats"]);
    assert!(
        stats.contains("area capacity entries inserted expired evicted hits"),
        "{stats}"
    );
    for area in ["site", "page", "block"] {
        let row = stats
            .lines()
            .find(|l| l.starts_with(&format!("{area} ")))
            .unwrap_or_else(|| panic!("{stats}"));
        let n: Vec<u64> = row.split(' ').skip(1).map(|v| v.parse().unwrap()).collect();
        assert_eq!(n[0], 262_144 / 2944 * 16, "{row}: capacity of 262144 bytes");
        assert!(n[2] > 0, "{row}: inserted");
    }
    let json: serde_json::Value = serde_json::from_str(&ctl.ok(&["stats", "--json"])).unwrap();
    assert_eq!(json["areas"][0]["area"], "site");
    assert!(json["areas"][0]["hits"].as_u64().unwrap() > 0);
    assert!(flood.sent() > sent_before, "the flood ran all along");
}

#[test]
fn automatic_blocks_generations_and_forget() {
    let (apache, ctl) = server();
    let _flood = Flood::start(apache.port(), 4);
    let client = Client::new(apache.port()).ip("192.0.2.60");

    // The server's block: shown with its rule, host and URI; the server wrote its block file.
    assert!(trigger_block(&client) <= 2);
    let list = ctl.ok(&["list"]);
    let line = line_of(&list, "192.0.2.60").unwrap_or_else(|| panic!("{list}"));
    assert!(
        line.starts_with("192.0.2.60 page 1 ") && line.ends_with(" 127.0.0.1 /page.html"),
        "{line}"
    );
    let file = apache.blocks_dir().join("dos-192.0.2.60");
    assert!(file.is_file());
    ctl.ok(&["unblock", "192.0.2.60"]);
    assert!(!file.exists());
    assert_eq!(client.get("/page.html").status, 200);

    // Its generation is remembered: the next block is the second (100 s).
    let retry = trigger_block(&client);
    assert!((98..=100).contains(&retry), "generation 2: {retry}");
    let show = ctl.ok(&["show", "192.0.2.60", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(
        (v["blocked"].as_bool(), v["generation"].as_u64()),
        (Some(true), Some(2))
    );

    assert!(
        v["remembered_until"].as_str().unwrap().ends_with('Z'),
        "{v}"
    );

    // --forget: unblocked and the generation is dropped, so the next block is the first.
    let out = ctl.ok(&["unblock", "192.0.2.60", "--forget"]);
    assert!(out.contains("generation 2 forgotten"), "{out}");
    assert!(ctl
        .ok(&["show", "192.0.2.60"])
        .contains("no generation remembered"));
    assert_eq!(client.get("/page.html").status, 200);
    assert!(
        trigger_block(&client) <= 2,
        "generation 1 again after --forget"
    );

    // show lists the client's scores: its site record and its page records.
    let other = Client::new(apache.port()).ip("192.0.2.61");
    for _ in 0..3 {
        assert_eq!(other.get("/other.html").status, 200);
    }
    let show = ctl.ok(&["show", "192.0.2.61"]);
    assert!(
        show.contains("not blocked; no generation remembered"),
        "{show}"
    );
    assert!(
        show.contains("page 127.0.0.1 /other.html score 3 (window 10s"),
        "{show}"
    );
    assert!(show.contains("site 127.0.0.1 score 3 "), "{show}");
}

#[test]
fn ipv6_groups_are_blocked_and_unblocked_as_the_server_groups_them() {
    let (apache, ctl) = server();
    let _flood = Flood::start(apache.port(), 2);
    ctl.ok(&["block", "2001:db8:7:7::1", "60"]);
    // Another address of the same /64 is refused; another /64 is not.
    let r = Client::new(apache.port())
        .ip("2001:db8:7:7:abcd::9")
        .get("/");
    assert_eq!(r.status, 429);
    assert_eq!(
        Client::new(apache.port())
            .ip("2001:db8:7:8::1")
            .get("/")
            .status,
        200
    );
    let list = ctl.ok(&["list"]);
    assert!(line_of(&list, "2001:db8:7:7::/64").is_some(), "{list}");
    // The group as list prints it is accepted back.
    assert!(ctl
        .ok(&["show", "2001:db8:7:7::/64"])
        .contains("client 2001:db8:7:7::/64"));
    let r = ctl.run(&["unblock", "2001:db8:7:7::/40"]);
    assert_eq!(
        r.code, 2,
        "a prefix other than the server's and no counted network"
    );
    assert!(r.stderr.contains("/64"), "{}", r.stderr);
    // A counted network (DOSPrefixCount) is a target of its own: not blocked here.
    let r = ctl.run(&["unblock", "2001:db8:7:7::/48"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("2001:db8:7::/48 was not blocked"),
        "{}",
        r.stdout
    );
    ctl.ok(&["unblock", "2001:db8:7:7:ffff::1"]);
    assert_eq!(
        Client::new(apache.port())
            .ip("2001:db8:7:7:abcd::9")
            .get("/")
            .status,
        200
    );
}

#[test]
fn errors_exit_non_zero_naming_the_thing() {
    let (apache, ctl) = server();
    let _flood = Flood::start(apache.port(), 2);
    let check = |r: Run, code: i32, culprit: &str| {
        assert_eq!(r.code, code, "{culprit}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains(culprit), "{culprit} not in: {}", r.stderr);
    };
    check(ctl.run(&["block", "300.1.2.3", "10"]), 2, "'300.1.2.3'");
    check(ctl.run(&["block", "192.0.2.1", "ten"]), 2, "'ten'");
    check(ctl.run(&["block", "192.0.2.1", "0"]), 2, "'0'");
    check(ctl.run(&["show", "not-an-ip"]), 2, "'not-an-ip'");
    check(ctl.run(&["block", "192.0.2.1", "1w"]), 2, "'1w'");
    check(ctl.run(&["frob"]), 2, "'frob'");
    check(ctl.run(&["unblock", "10.0.0.0/33"]), 2, "'33'");
    // A prefix that is neither a client nor a counted network (DOSPrefixCount's 24, 56, 48).
    check(ctl.run(&["unblock", "192.0.2.0/16"]), 2, "'192.0.2.0/16'");
    let missing = apache.root().join("no-such.store");
    let other = Ctl {
        store: missing.clone(),
        blocks: ctl.blocks.clone(),
    };
    let r = other.run(&["list"]);
    assert_eq!(r.stdout, "", "nothing on stdout when a command fails");
    check(r, 1, &missing.display().to_string());
    // With --json the failure is a JSON object on stdout too.
    let r = other.run(&["list", "--json"]);
    assert_eq!(r.code, 1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("a JSON error");
    assert_eq!(v["exit_status"], 1);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains(&missing.display().to_string()),
        "{v}"
    );
    let r = ctl.run(&["block", "300.1.2.3", "10", "--json"]);
    assert_eq!(r.code, 2);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("a JSON error");
    assert!(v["error"].as_str().unwrap().contains("'300.1.2.3'"), "{v}");
    let garbage = apache.root().join("garbage.store");
    std::fs::write(&garbage, vec![0x42u8; 4096]).unwrap();
    let other = Ctl {
        store: garbage.clone(),
        blocks: ctl.blocks.clone(),
    };
    let r = other.run(&["stats"]);
    check(
        r,
        1,
        &format!("{}: not a mod_shield store", garbage.display()),
    );
    // --help and --version work without a store.
    let help = to_run(Command::new(SHIELDCTL).arg("--help").output().unwrap());
    assert_eq!(help.code, 0);
    for command in ["list", "show", "block", "unblock", "stats"] {
        assert!(
            help.stdout.contains(&format!("\n  {command} ")),
            "{}",
            help.stdout
        );
    }
    let version = to_run(Command::new(SHIELDCTL).arg("--version").output().unwrap());
    assert_eq!(
        (version.code, version.stdout.as_str()),
        (0, concat!("shieldctl ", env!("CARGO_PKG_VERSION"), "\n"))
    );
    // Nothing above disturbed the server.
    assert_eq!(
        Client::new(apache.port()).ip("192.0.2.98").get("/").status,
        200
    );
}

#[test]
fn shieldctl_killed_mid_operation_corrupts_nothing() {
    let (apache, ctl) = server();
    let _flood = Flood::start(apache.port(), 4);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut n = 0u32;
    while Instant::now() < deadline {
        let addr = format!("192.0.2.{}", 100 + n % 50);
        let mut child = Command::new(SHIELDCTL)
            .arg("--store")
            .arg(&ctl.store)
            .arg("--log-dir")
            .arg(&ctl.blocks)
            .args(if n.is_multiple_of(2) {
                vec!["block", addr.as_str(), "30"]
            } else {
                vec!["unblock", addr.as_str(), "--forget"]
            })
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        thread::sleep(Duration::from_micros(u64::from(n % 7) * 300));
        let _ = child.kill();
        let _ = child.wait();
        n += 1;
    }
    assert!(n > 20, "{n} runs");
    // The store still works for the server and for shieldctl.
    ctl.ok(&["list"]);
    ctl.ok(&["block", "192.0.2.200", "50"]);
    assert_eq!(
        Client::new(apache.port()).ip("192.0.2.200").get("/").status,
        429
    );
    ctl.ok(&["unblock", "192.0.2.200"]);
    assert_eq!(
        Client::new(apache.port()).ip("192.0.2.200").get("/").status,
        200
    );
    let fresh = Client::new(apache.port()).ip("192.0.2.201");
    assert!(
        trigger_block(&fresh) <= 2,
        "the server still counts and blocks"
    );
}

#[test]
fn durations_take_units() {
    let (apache, ctl) = server();
    for (duration, secs) in [("90s", 90), ("30m", 1800), ("1h", 3600), ("1d", 86_400)] {
        let out = ctl.ok(&["block", "192.0.2.70", duration]);
        assert!(out.contains(&format!("for {secs}s")), "{duration}: {out}");
        let r = Client::new(apache.port()).ip("192.0.2.70").get("/");
        assert_eq!(r.status, 429, "{duration}");
        let retry = r.header_u64("Retry-After").unwrap();
        assert!((secs - 2..=secs).contains(&retry), "{duration}: {retry}");
    }
}

/// list, show and stats need only read permission on the store; block and unblock say
/// which permission they miss.
#[test]
fn a_reader_without_write_permission_lists_shows_and_counts() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let (apache, ctl) = server();
    let _flood = Flood::start(apache.port(), 2);
    ctl.ok(&["block", "192.0.2.80", "300"]);
    // Root may write any file: the reader is then `nobody`; otherwise the owner of a
    // read-only file.
    let mode = if common::is_root() { 0o644 } else { 0o444 };
    std::fs::set_permissions(&ctl.store, std::fs::Permissions::from_mode(mode)).unwrap();
    let reader = |args: &[&str]| {
        let mut cmd = Command::new(SHIELDCTL);
        cmd.arg("--store").arg(&ctl.store).args(args);
        if common::is_root() {
            cmd.uid(65534).gid(65534);
        }
        to_run(cmd.output().expect("run shieldctl"))
    };
    let r = reader(&["list"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(line_of(&r.stdout, "192.0.2.80").is_some(), "{}", r.stdout);
    let r = reader(&["show", "192.0.2.80"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("blocked: rule manual"), "{}", r.stdout);
    let r = reader(&["stats", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(v["areas"][0]["inserted"].as_u64().unwrap() > 0, "{v}");
    // A write is refused by the file's mode, with a hint and the file's name.
    let r = reader(&["unblock", "192.0.2.80"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "");
    let store = ctl.store.display().to_string();
    assert!(
        r.stderr
            .contains(&format!("cannot open store {store}: Permission denied"))
            && r.stderr.contains("need write permission"),
        "{}",
        r.stderr
    );
    // The reader changed nothing: the block is still there for the server.
    assert_eq!(
        Client::new(apache.port()).ip("192.0.2.80").get("/").status,
        429
    );
}

/// shieldctl-gen writes the man page and the completions the packages install: `man`
/// renders the page without a warning and it shows every command and option; bash accepts
/// the completion script and completes the commands and an option from it.
#[test]
fn man_page_and_completions_are_generated() {
    let dir = std::env::temp_dir().join(format!("shieldctl-gen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let gen = to_run(
        Command::new(env!("CARGO_BIN_EXE_shieldctl-gen"))
            .arg(&dir)
            .output()
            .unwrap(),
    );
    assert_eq!(gen.code, 0, "{}", gen.stderr);
    let (page, bash, zsh) = (
        dir.join("shieldctl.8"),
        dir.join("completions/shieldctl.bash"),
        dir.join("completions/_shieldctl"),
    );
    for f in [&page, &bash, &zsh] {
        assert!(f.is_file(), "{} not written", f.display());
    }

    let man = to_run(
        Command::new("man")
            .args(["--warnings", "-l", "-P", "cat"])
            .arg(&page)
            .env("MANWIDTH", "100")
            .output()
            .expect("run man"),
    );
    assert_eq!(man.code, 0, "{}", man.stderr);
    assert_eq!(man.stderr, "", "groff warnings");
    assert!(man.stdout.starts_with("shieldctl(8)"), "{}", man.stdout);
    let cli = mod_shield::cli::command();
    let commands: Vec<&str> = cli
        .get_subcommands()
        .map(|c| c.get_name())
        .filter(|&n| n != "help")
        .collect();
    assert_eq!(
        commands,
        ["list", "show", "block", "unblock", "stats", "under-attack"]
    );
    let section = man
        .stdout
        .split("\nCOMMANDS\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no COMMANDS section:\n{}", man.stdout));
    for name in &commands {
        assert!(
            section
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{name} ")) || l.trim() == *name),
            "{name} not in the man page's COMMANDS:\n{section}"
        );
    }
    for option in [
        "--store",
        "--json",
        "--ipv6-prefix",
        "--log-dir",
        "--version",
        "--forget",
    ] {
        assert!(man.stdout.contains(option), "{option} not in the man page");
    }
    assert!(man.stdout.contains("\nEXIT STATUS\n"));

    let syntax = to_run(Command::new("bash").arg("-n").arg(&bash).output().unwrap());
    assert_eq!(syntax.code, 0, "bash -n: {}", syntax.stderr);
    // Complete `shieldctl un`, `shieldctl unb` and `shieldctl unblock 192.0.2.1 --f` the way
    // bash would.
    let script = r#"source "$1"
        COMP_WORDS=(shieldctl un); COMP_CWORD=1; _shieldctl shieldctl un shieldctl
        echo "${COMPREPLY[*]}"
        COMP_WORDS=(shieldctl unb); COMP_CWORD=1; _shieldctl shieldctl unb shieldctl
        echo "${COMPREPLY[*]}"
        COMP_WORDS=(shieldctl unblock 192.0.2.1 --f); COMP_CWORD=3
        _shieldctl shieldctl --f 192.0.2.1
        echo "${COMPREPLY[*]}""#;
    let done = to_run(
        Command::new("bash")
            .args(["-c", script, "bash"])
            .arg(&bash)
            .output()
            .unwrap(),
    );
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert_eq!(done.stdout, "unblock under-attack\nunblock\n--forget\n");
    let zsh = std::fs::read_to_string(&zsh).unwrap();
    assert!(zsh.starts_with("#compdef shieldctl"), "{zsh}");
    for name in &commands {
        assert!(
            zsh.contains(&format!("'{name}:")),
            "{name} not in the zsh completion"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
