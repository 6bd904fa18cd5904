//! The status page served by a real Apache: blocked clients (one behind an injected
//! `<script>` URI) appear in `?auto`, `?json` and the HTML page, and the HTML page, rendered
//! by headless Chromium, holds the blocks and the settings as text, the last-hour chart as
//! inline SVG, and no script element.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The path a hostile client asks for; decoded it is `/<script>alert(1)</script>`.
const SCRIPT_PATH: &str = "/%3Cscript%3Ealert(1)%3C/script%3E";
const SCRIPT_URI: &str = "/<script>alert(1)</script>";
/// IPv6 clients are counted by their /64 (DOSIPv6Prefix 64).
const V6_CLIENT: &str = "2001:db8::7";
const V6_GROUP: &str = "2001:db8::";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(30);

/// The server of these tests: mod_remoteip trusting 127.0.0.1, DOSPageCount 2, long windows
/// and blocks (so nothing ends while a test looks), the status page for local clients only,
/// and 127.0.0.1 itself whitelisted so reading the page never counts.
fn server() -> Apache {
    Apache::builder()
        .mpm(Mpm::Event)
        .remoteip()
        .module("authz_host")
        .config(
            "DOSPageCount 2\n\
             DOSPageInterval 30\n\
             DOSSiteCount 100\n\
             DOSSiteInterval 30\n\
             DOSBlockingPeriod 300 600\n\
             DOSSiteStatusPenalty 404 1\n\
             DOSWhitelist 127.0.0.0/8\n\
             DOSLogDir \"@BLOCKS@\"\n\
             <Location /shield-status>\n\
             \x20   SetHandler shield-handler\n\
             \x20   Require local\n\
             </Location>\n",
        )
        .start()
}

/// Requests `path` three times as `ip`: the third crosses DOSPageCount 2 and is refused.
fn block(apache: &Apache, ip: &str, path: &str, first_status: u16) {
    let client = apache.client().ip(ip);
    let statuses: Vec<u16> = (0..3).map(|_| client.get(path).status).collect();
    assert_eq!(
        statuses,
        [first_status, first_status, 429],
        "{ip} {path}: the 3rd request must start a block"
    );
}

/// Two blocked clients (one by a `<script>` URI, one IPv6) and one client that only scores.
fn with_blocks() -> Apache {
    let apache = server();
    block(&apache, "192.0.2.7", SCRIPT_PATH, 404);
    block(&apache, V6_CLIENT, "/index.html", 200);
    let scorer = apache.client().ip("203.0.113.5");
    assert_eq!(scorer.get("/style.css").status, 200);
    apache
}

fn status(apache: &Apache, query: &str) -> Response {
    let r = apache.get(&format!("/shield-status{query}"));
    assert_eq!(
        r.status,
        200,
        "GET /shield-status{query}: {}",
        r.body_text()
    );
    r
}

/// `Key: value` lines of a `?auto` body with that key.
fn values<'a>(body: &'a str, key: &str) -> Vec<&'a str> {
    body.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .collect()
}

#[test]
fn auto_and_json_list_the_blocked_clients() {
    let apache = with_blocks();

    let auto = status(&apache, "?auto");
    assert!(
        auto.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        auto.headers
    );
    let text = auto.body_text();
    assert_eq!(values(&text, "BlocksActive"), ["2"], "{text}");
    assert_eq!(values(&text, "Verdict"), ["2 clients blocked now"]);
    assert_eq!(values(&text, "StoreState"), ["ok"]);
    assert_eq!(values(&text, "Store"), ["shared memory"]);
    let blocks = values(&text, "Block");
    assert_eq!(blocks.len(), 2, "{text}");
    let v4 = blocks
        .iter()
        .find(|b| b.starts_with("192.0.2.7 "))
        .unwrap_or_else(|| panic!("no block of 192.0.2.7 in:\n{text}"));
    assert!(
        v4.starts_with("192.0.2.7 rule=page gen=1 score=3 count=2 interval=30 "),
        "{v4}"
    );
    assert!(v4.ends_with(&format!("uri={SCRIPT_URI}")), "{v4}");
    let ends_in: u64 = v4
        .split(' ')
        .find_map(|f| f.strip_prefix("ends_in="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no ends_in in {v4}"));
    assert!((290..=300).contains(&ends_in), "{v4}");
    assert!(
        blocks.iter().any(
            |b| b.starts_with(&format!("{V6_GROUP} rule=page gen=1 score=3 "))
                && b.ends_with("uri=/index.html")
        ),
        "{text}"
    );
    let settings = values(&text, "Setting");
    for line in [
        "DOSPageCount 2",
        "DOSPageInterval 30",
        "DOSBlockingPeriod 300 600",
        "DOSSiteStatusPenalty 404 1",
        "DOSWhitelist 127.0.0.0/8",
    ] {
        assert!(settings.contains(&line), "no {line:?} in {settings:?}");
    }
    // The scorer that was not blocked is among the top page records.
    assert!(
        values(&text, "TopPage")
            .iter()
            .any(|t| t.starts_with("203.0.113.5 score=1 count=2 ")),
        "{text}"
    );
    // Every line is `Key: value`: the hostile URI did not break a record over lines.
    for l in text.lines() {
        let key = l.split_once(": ").map(|(k, _)| k).unwrap_or("");
        assert!(
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()),
            "bad ?auto line {l:?}"
        );
    }

    let json = status(&apache, "?json");
    assert!(json
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/json")));
    let body = json.body_text();
    assert!(
        !body.contains('<'),
        "markup characters must be escaped: {body}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("invalid JSON ({e}):\n{body}"));
    assert_eq!(v["blocks"]["active"], 2);
    let listed = v["blocks"]["listed"].as_array().expect("blocks.listed");
    let v4 = listed
        .iter()
        .find(|b| b["client"] == "192.0.2.7")
        .expect("192.0.2.7 listed");
    assert_eq!(v4["uri"], SCRIPT_URI);
    assert_eq!(v4["rule"], "page");
    assert_eq!(v4["generation"], 1);
    assert_eq!(v4["score"], 3);
    assert!(listed.iter().any(|b| b["client"] == V6_GROUP));
    assert_eq!(v["store"]["available"], true);
    assert_eq!(v["areas"]["block"]["live"], 2);
    // The counters: 3 + 3 + 1 requests counted (the readers of this page are whitelisted),
    // the two third requests refused and each starting a page block.
    let a = &v["activity"];
    assert_eq!(a["since_start"]["counted"], 7, "{body}");
    assert_eq!(a["since_start"]["refused_page"], 2);
    assert_eq!(a["since_start"]["refused_site"], 0);
    assert_eq!(a["since_start"]["blocks_started_page"], 2);
    let minutes = a["per_minute"].as_array().expect("activity.per_minute");
    assert_eq!(minutes.len(), 60);
    let sum = |k: &str| minutes.iter().map(|m| m[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        (sum("counted"), sum("refused"), sum("blocks_started")),
        (7, 2, 2)
    );
    assert_eq!(values(&text, "LastHourBlocksStarted"), ["2"]);
    assert!(v["settings"]
        .as_array()
        .expect("settings")
        .iter()
        .any(|s| s == "DOSPageCount 2"));

    // The HTML as served: the URI is text, not markup.
    let html = status(&apache, "");
    assert!(html
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    let page = html.body_text();
    assert!(
        page.contains("/&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.to_ascii_lowercase().contains("<script"), "{page}");
}

/// A scratch directory for Chromium's profile and output, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "shield-chromium-{}-{}",
            std::process::id(),
            unix_now()
        ));
        fs::create_dir_all(&dir).expect("create chromium scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs headless Chromium with `args` + `url` in its own process group, at most
/// [`CHROMIUM_TIMEOUT`]; afterwards the whole group is killed (Chromium leaves helper
/// processes behind otherwise). Returns stdout.
fn chromium(scratch: &Path, name: &str, args: &[String], url: &str) -> String {
    use std::os::unix::process::CommandExt;
    let profile = scratch.join(format!("profile-{name}"));
    let stdout_path = scratch.join(format!("{name}.out"));
    let stderr_path = scratch.join(format!("{name}.err"));
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .env("HOME", scratch)
    .stdin(Stdio::null())
    .stdout(fs::File::create(&stdout_path).expect("chromium stdout file"))
    .stderr(fs::File::create(&stderr_path).expect("chromium stderr file"))
    .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {CHROMIUM}: {e}"));
    let pgid = child.id() as i32;
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
            _ => break None,
        }
    };
    // Our own process group (pgid = the child we spawned): its helpers go with it.
    kill(-pgid, libc::SIGKILL);
    let _ = child.wait();
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("chromium ({name}) exited with {s}:\n{stderr}"),
        None => panic!("chromium ({name}) did not finish within {CHROMIUM_TIMEOUT:?}:\n{stderr}"),
    }
    fs::read_to_string(&stdout_path).unwrap_or_default()
}

#[test]
fn chromium_renders_the_status_page() {
    let apache = with_blocks();
    let url = format!("http://127.0.0.1:{}/shield-status", apache.port());
    let scratch = Scratch::new();

    let dom = chromium(&scratch.0, "dom", &["--dump-dom".to_string()], &url);
    assert!(
        dom.contains("2 clients blocked now"),
        "verdict missing:\n{dom}"
    );
    assert!(dom.contains("<td>192.0.2.7</td>"), "{dom}");
    assert!(dom.contains(&format!("<td>{V6_GROUP}</td>")), "{dom}");
    // The injected URI is text in the rendered DOM: no script element anywhere.
    assert!(
        dom.contains("/&lt;script&gt;alert(1)&lt;/script&gt;"),
        "URI not shown as text:\n{dom}"
    );
    assert!(!dom.to_ascii_lowercase().contains("<script"), "{dom}");
    for line in [
        "DOSPageCount 2",
        "DOSBlockingPeriod 300 600",
        "DOSWhitelist 127.0.0.0/8",
    ] {
        assert!(dom.contains(line), "setting {line:?} missing:\n{dom}");
    }
    // The last hour as an inline SVG chart, with the blocks of this test in it.
    assert!(
        dom.contains("<svg class=\"chart\" id=\"chart\""),
        "no chart in:\n{dom}"
    );
    assert!(
        dom.contains(
            "aria-label=\"Last 60 minutes: 7 requests counted, 2 refused, 2 blocks started\""
        ),
        "{dom}"
    );
    assert!(dom.contains("class=\"c-started\""), "{dom}");

    let png = scratch.0.join("status.png");
    chromium(
        &scratch.0,
        "shot",
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,1600".to_string(),
            "--hide-scrollbars".to_string(),
        ],
        &url,
    );
    let bytes = fs::read(&png).unwrap_or_else(|e| panic!("no screenshot {}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 20_000, "screenshot of {} bytes", bytes.len());
    // Keep the screenshot where asked (e.g. to look at the page), best effort.
    if let Some(keep) = std::env::var_os("SHIELD_STATUS_SCREENSHOT") {
        let _ = fs::copy(&png, keep);
    }
}
