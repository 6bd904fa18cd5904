//! `DOSChallenge` against the real apache2 and a real headless Chromium, driven over the
//! DevTools protocol (a small client over the `--remote-debugging-port` WebSocket): a blocked
//! browser solves the proof of work and lands on the page it asked for, with no console
//! error on the way; everything else stays refused; passes that are forged, expired, for
//! another address or tampered with change nothing; a pass holder that floods is blocked
//! under its own records and must solve again.
mod common;

use std::fs;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{kill, unix_now, Apache, Mpm, Response, STATUS_LOCATION};
use mod_shield::challenge::{self, nonce, pass, pow, Key};
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

const CHROMIUM: &str = "/usr/bin/chromium";
const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
/// Status page readers use this address (uncounted there: DOSEnabled off).
const READER: &str = "192.0.2.250";

/// The key file content every server of these tests shares, so the tests can mint passes.
const KEY_TEXT: &[u8] = b"0123456789abcdef0123456789abcdef-test-key\n";

fn key() -> Key {
    Key::from_file_contents(KEY_TEXT).unwrap()
}

/// A server with the challenge on: DOSPageCount 2 within a minute, 5-minute blocks, mod_remoteip
/// trusting 127.0.0.1 (Chromium itself sends no X-Forwarded-For, so it is 127.0.0.1).
fn server(extra: &str) -> Apache {
    let mut b = Apache::builder()
        .mpm(Mpm::Event)
        .remoteip()
        .config(&format!(
            "DOSPageCount 2\n\
         DOSPageInterval 60\n\
         DOSSiteCount 100\n\
         DOSSiteInterval 60\n\
         DOSBlockingPeriod 300 600\n\
         DOSLogDir \"@BLOCKS@\"\n\
         DOSChallenge on\n\
         {extra}\n\
         {STATUS_LOCATION}"
        ));
    b = b.file("favicon.ico", b"\0");
    let mut apache = b.build();
    // Written before the start: the configuration test reads it.
    fs::write(apache.root().join("conf/shield.key"), KEY_TEXT).unwrap();
    apache.start();
    apache
}

/// Blocks `ip` (None: 127.0.0.1 itself) on /page.html: the third request is refused.
fn block(apache: &Apache, ip: Option<&str>) {
    let mut c = apache.client();
    if let Some(ip) = ip {
        c = c.ip(ip);
    }
    let statuses: Vec<u16> = (0..3).map(|_| c.get("/page.html").status).collect();
    assert_eq!(statuses, [200, 200, 429], "blocking {ip:?}");
}

fn get(apache: &Apache, ip: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    apache.client().ip(ip).request("GET", path, headers)
}

/// The value of `data-NAME="…"` in the page (with `&amp;` decoded).
fn data(page: &str, name: &str) -> String {
    let open = format!("data-{name}=\"");
    let start = page
        .find(&open)
        .unwrap_or_else(|| panic!("no {open} in\n{page}"))
        + open.len();
    let end = start + page[start..].find('"').unwrap();
    page[start..end].replace("&amp;", "&")
}

/// Fetches the challenge page as a navigation of `ip`, solves it here, submits the solution:
/// returns the submission's response.
fn solve_and_submit(apache: &Apache, ip: &str, path: &str) -> Response {
    let page = get(apache, ip, path, &[("Accept", HTML)]);
    assert_eq!(page.status, 429);
    let body = page.body_text();
    let (n, d) = (data(&body, "n"), data(&body, "d").parse::<u8>().unwrap());
    let s = pow::solve(&n, d);
    get(apache, ip, &format!("{}{s}", data(&body, "next")), &[])
}

fn status_auto(apache: &Apache) -> String {
    get(apache, READER, "/shield-status?auto", &[]).body_text()
}

fn auto_value(auto: &str, key: &str) -> u64 {
    auto.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("{key} missing:\n{auto}"))
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// A minimal DevTools-protocol client
// ---------------------------------------------------------------------------------------------

struct Browser {
    child: Child,
    profile: PathBuf,
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    events: Vec<Value>,
    /// One Chromium at a time in this binary: two solving at once on the 2 cores (the
    /// solve-time test solves for seconds) would make either's timings the other's.
    _alone: std::sync::MutexGuard<'static, ()>,
}

/// Held by each [`Browser`] for its life.
static ONE_CHROMIUM: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Browser {
    fn launch() -> Browser {
        use std::os::unix::process::CommandExt;
        // A test that failed while holding it poisons nothing the next one needs.
        let alone = ONE_CHROMIUM.lock().unwrap_or_else(|e| e.into_inner());
        let profile = std::env::temp_dir().join(format!(
            "shield-challenge-chromium-{}-{}-{:?}",
            std::process::id(),
            unix_now(),
            thread::current().id()
        ));
        let _ = fs::remove_dir_all(&profile);
        fs::create_dir_all(&profile).unwrap();
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .env("HOME", &profile)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {CHROMIUM}: {e}"));
        // Chromium writes "PORT\n/devtools/browser/ID" there once it listens.
        let active = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let (port, path) = loop {
            if let Ok(text) = fs::read_to_string(&active) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break (port.to_string(), path.to_string());
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromium never opened its DevTools port"
            );
            thread::sleep(Duration::from_millis(50));
        };
        let stream = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
        let (ws, _) = tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream)
            .expect("DevTools WebSocket handshake");
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut b = Browser {
            child,
            profile,
            ws,
            session: String::new(),
            next_id: 0,
            events: Vec::new(),
            _alone: alone,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        for domain in [
            "Runtime.enable",
            "Log.enable",
            "Page.enable",
            "Network.enable",
        ] {
            b.call(domain, json!({}));
        }
        b
    }

    /// One message, or None after the read timeout.
    fn read(&mut self) -> Option<Value> {
        match self.ws.read() {
            Ok(Message::Text(t)) => Some(serde_json::from_str(&t).unwrap()),
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                None
            }
            Err(e) => panic!("DevTools connection: {e}"),
        }
    }

    /// Sends a command (to the page session once attached) and waits for its answer; events
    /// read meanwhile are kept.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws.send(Message::Text(msg.to_string())).unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            assert!(Instant::now() < deadline, "no answer to {method}");
            let Some(m) = self.read() else { continue };
            if m["id"] == json!(id) {
                return match m.get("error") {
                    Some(e) => Err(e.clone()),
                    None => Ok(m["result"].clone()),
                };
            }
            if m.get("method").is_some() {
                self.events.push(m);
            }
        }
    }

    /// Evaluates an expression (awaiting a promise) and returns its value.
    fn eval(&mut self, expr: &str) -> Result<Value, String> {
        let r = self
            .try_call(
                "Runtime.evaluate",
                json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
            )
            .map_err(|e| e.to_string())?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(ex.to_string());
        }
        Ok(r["result"]["value"].clone())
    }

    /// Console errors, uncaught exceptions and error log entries (CSP violations among them)
    /// seen so far. A failed load reported by the network layer is not one: the challenge page
    /// itself comes with status 429 by design.
    fn console_errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| {
                let p = &e["params"];
                match e["method"].as_str()? {
                    "Runtime.exceptionThrown" => Some(p["exceptionDetails"].to_string()),
                    "Runtime.consoleAPICalled"
                        if matches!(p["type"].as_str(), Some("error" | "warning" | "assert")) =>
                    {
                        Some(p["args"].to_string())
                    }
                    "Log.entryAdded"
                        if matches!(p["entry"]["level"].as_str(), Some("error" | "warning"))
                            && p["entry"]["source"] != json!("network") =>
                    {
                        Some(p["entry"].to_string())
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// Network responses seen so far for URLs ending in `suffix`: (status, headers).
    fn responses(&self, suffix: &str) -> Vec<(u64, Value)> {
        self.events
            .iter()
            .filter(|e| e["method"] == json!("Network.responseReceived"))
            .map(|e| &e["params"]["response"])
            .filter(|r| r["url"].as_str().is_some_and(|u| u.ends_with(suffix)))
            .map(|r| (r["status"].as_u64().unwrap_or(0), r["headers"].clone()))
            .collect()
    }

    /// Redirect responses seen so far for URLs containing `part`: (status, headers).
    fn redirects(&self, part: &str) -> Vec<(u64, Value)> {
        self.events
            .iter()
            .filter(|e| e["method"] == json!("Network.requestWillBeSent"))
            .map(|e| &e["params"]["redirectResponse"])
            .filter(|r| r["url"].as_str().is_some_and(|u| u.contains(part)))
            .map(|r| (r["status"].as_u64().unwrap_or(0), r["headers"].clone()))
            .collect()
    }

    /// Navigates and waits until the page at `path` shows just `text`; returns the time it took.
    fn navigate_until(&mut self, url: &str, path: &str, text: &str) -> Duration {
        let start = Instant::now();
        self.call("Page.navigate", json!({"url": url}));
        let deadline = start + Duration::from_secs(90);
        loop {
            let probe =
                "location.pathname + '\\n' + (document.body ? document.body.innerText : '')";
            if let Ok(v) = self.eval(probe) {
                let v = v.as_str().unwrap_or_default().to_string();
                if let Some((p, body)) = v.split_once('\n') {
                    if p == path && body.trim() == text {
                        return start.elapsed();
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "never reached {path} showing {text:?}; errors: {:?}",
                self.console_errors()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium's own process group (pgid = the child we spawned): its helpers go with it.
        kill(-(self.child.id() as i32), libc::SIGKILL);
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.profile);
    }
}

/// The solver function of the page (the script without its start-up part).
fn solver_source(page: &str) -> String {
    let start = page.find("<script>").unwrap() + "<script>".len();
    let script = &page[start..page.find("</script>").unwrap()];
    script.split("\n(function () {").next().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn chromium_solves_the_challenge_and_lands_on_the_page_it_asked_for() {
    let apache = server("");
    block(&apache, None);
    let mut browser = Browser::launch();
    let url = format!("http://127.0.0.1:{}/page.html?from=test", apache.port());
    let took = browser.navigate_until(&url, "/page.html", "page");
    println!(
        "chromium: blocked navigation to landing on the page at the default difficulty ({} bits): {took:?}",
        challenge::DEFAULT_BASE_BITS
    );
    // It went through the challenge: the first answer was the page with status 429, its CSP
    // and no-store, then the submission's 303, then the page itself.
    let first = browser.responses("/page.html?from=test");
    assert!(first.len() >= 2, "{first:?}");
    let (status, headers) = &first[0];
    assert_eq!(*status, 429, "{first:?}");
    let h = |name: &str| headers[name].as_str().unwrap_or_default().to_string();
    assert!(
        h("Content-Security-Policy").contains("worker-src blob:"),
        "{headers}"
    );
    assert_eq!(h("Cache-Control"), "no-store");
    assert!(h("Retry-After").parse::<u64>().unwrap() > 0);
    assert!(first.iter().skip(1).any(|(s, _)| *s == 200), "{first:?}");
    let redirects = browser.redirects(challenge::SUBMIT_PATH);
    assert_eq!(redirects.len(), 1, "{redirects:?}");
    let (status, headers) = &redirects[0];
    assert_eq!(*status, 303);
    assert_eq!(headers["Location"], json!("/page.html?from=test"));
    // No console error, exception or CSP violation on the way (a blocked Worker would be one).
    assert_eq!(browser.console_errors(), Vec::<String>::new());
    // The pass cookie as the browser keeps it.
    let cookies = browser.call("Network.getCookies", json!({"urls": [url]}));
    let pass = cookies["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == json!("shield_pass"))
        .unwrap_or_else(|| panic!("no pass cookie: {cookies}"))
        .clone();
    assert_eq!(pass["httpOnly"], json!(true));
    assert_eq!(pass["sameSite"], json!("Lax"));
    assert_eq!(pass["path"], json!("/"));
    // The browser now browses the site despite the block; without its cookie, curl does not.
    let took = browser.navigate_until(
        &format!("http://127.0.0.1:{}/other.html", apache.port()),
        "/other.html",
        "other",
    );
    println!("chromium: next page with the pass: {took:?}");
    let curl = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{}/other.html", apache.port()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "429");
    let with_pass = apache.client().request(
        "GET",
        "/a.txt",
        &[(
            "Cookie",
            &format!("shield_pass={}", pass["value"].as_str().unwrap()),
        )],
    );
    assert_eq!(with_pass.status, 200);
    assert_eq!(apache.log_count("challenge passed by IP: 127.0.0.1"), 1);
    let auto = status_auto(&apache);
    assert!(auto_value(&auto, "ChallengesIssued") >= 1, "{auto}");
    assert_eq!(auto_value(&auto, "ChallengesPassed"), 1, "{auto}");
    assert_eq!(auto_value(&auto, "ChallengesFailed"), 0, "{auto}");
    assert!(auto_value(&auto, "ChallengePassRequests") >= 2, "{auto}");
    let html = get(&apache, READER, "/shield-status", &[]).body_text();
    assert!(
        html.contains("<section id=\"challenge\"><h2>Challenge</h2>") && html.contains(" 1 solved"),
        "{html}"
    );
    drop(browser);
    apache.assert_clean_log();
}

#[test]
fn the_page_renders_in_chromium_without_console_errors_and_its_solver_agrees() {
    // 28 bits: the page's own Worker keeps working (minutes) while the page is examined.
    let apache = server("DOSChallengeDifficulty 28 0");
    block(&apache, None);
    let page = get(&apache, "127.0.0.1", "/page.html", &[("Accept", HTML)]).body_text();
    let solver = solver_source(&page);
    let mut browser = Browser::launch();
    // The challenge page, its Worker running.
    let url = format!("http://127.0.0.1:{}/page.html", apache.port());
    browser.call("Page.navigate", json!({"url": url}));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(v) = browser.eval("document.title") {
            if v == json!("One moment, please") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "challenge page never shown");
        thread::sleep(Duration::from_millis(20));
    }
    let text = browser.eval("document.body.innerText").unwrap();
    assert!(text.as_str().unwrap().contains("blocked for now"), "{text}");
    assert_eq!(
        browser
            .eval("document.getElementById('c').dataset.d")
            .unwrap(),
        json!("28")
    );
    // The Worker was made from its Blob (the CSP allowed it): its script load shows up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !browser.events.iter().any(|e| {
        e["method"] == json!("Network.requestWillBeSent")
            && e["params"]["request"]["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("blob:http://127.0.0.1"))
    }) {
        assert!(Instant::now() < deadline, "no Worker script was loaded");
        browser.eval("1").unwrap();
        thread::sleep(Duration::from_millis(20));
    }
    // The solver with and without WebCrypto (a plain-HTTP site) finds the smallest solution,
    // the one the module's own check would find.
    let nonces: Vec<String> = (0..3)
        .map(|i| nonce::issue(&key(), "192.0.2.1".parse().unwrap(), i, 10))
        .collect();
    let expr = format!(
        "(async () => {{ {solver}\n\
           const plain = new Function('self', {src} + '\\nreturn solve;')({{}});\n\
           const out = [];\n\
           for (const n of {nonces}) {{\n\
             out.push([await new Promise(r => solve(n, 10, r)), await new Promise(r => plain(n, 10, r))]);\n\
           }}\n\
           return out; }})()",
        src = serde_json::to_string(&solver).unwrap(),
        nonces = serde_json::to_string(&nonces).unwrap(),
    );
    let got = browser.eval(&expr).unwrap();
    for (n, pair) in nonces.iter().zip(got.as_array().unwrap()) {
        let want = pow::solve(n, 10);
        assert_eq!(pair, &json!([want, want]), "{n}");
    }
    // Still on the page, and nothing went wrong: no exception, console error or CSP report.
    assert_eq!(
        browser.eval("document.title").unwrap(),
        json!("One moment, please")
    );
    assert_eq!(browser.console_errors(), Vec::<String>::new());
    // The check sees errors when there are some.
    browser.eval("console.error('probe')").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while browser.console_errors().is_empty() {
        assert!(Instant::now() < deadline, "console.error not seen");
        browser.eval("1").unwrap();
    }
    assert!(browser.console_errors()[0].contains("probe"));
    drop(browser);
    apache.assert_clean_log();
}

#[test]
fn only_browser_navigations_get_the_page_and_the_headers_stay_true() {
    let apache = server("");
    let ip = "192.0.2.10";
    block(&apache, Some(ip));
    let plain = get(&apache, ip, "/page.html", &[]);
    let page = get(&apache, ip, "/page.html", &[("Accept", HTML)]);
    assert_eq!(page.status, 429);
    for h in ["Retry-After", "RateLimit-Policy", "RateLimit"] {
        assert!(page.header(h).is_some(), "{h} missing: {:?}", page.headers);
        assert_eq!(page.header(h).is_some(), plain.header(h).is_some(), "{h}");
    }
    assert_eq!(page.header("Cache-Control"), Some("no-store"));
    assert_eq!(page.header("Content-Type"), Some("text/html"));
    let csp = page.header("Content-Security-Policy").unwrap();
    assert!(
        csp.starts_with("default-src 'none'; script-src 'sha256-"),
        "{csp}"
    );
    let body = page.body_text();
    assert!(
        body.len() < 16 * 1024 && body.contains("<noscript>"),
        "{body}"
    );
    assert!(body.contains(&format!(
        "Retry-After: {} seconds",
        page.header_u64("Retry-After").unwrap()
    )));
    // HEAD: the same headers, no body.
    let head = apache
        .client()
        .ip(ip)
        .request("HEAD", "/page.html", &[("Accept", HTML)]);
    assert_eq!(head.status, 429);
    assert!(head.header("Content-Security-Policy").is_some());
    assert!(head.body.is_empty());
    // Scripts, APIs, feeds, POSTs, */*: today's plain refusal.
    for (method, accept) in [
        ("GET", "*/*"),
        ("GET", "application/json"),
        ("GET", "application/rss+xml, */*;q=0.1"),
        ("GET", "text/html;q=0, */*"),
        ("POST", HTML),
    ] {
        let r = apache
            .client()
            .ip(ip)
            .request(method, "/page.html", &[("Accept", accept)]);
        assert_eq!(r.status, 429, "{method} {accept}");
        assert!(
            r.header("Content-Security-Policy").is_none(),
            "{method} {accept}"
        );
        assert!(!r.body_text().contains("<script"), "{method} {accept}");
        assert_eq!(r.body, plain.body, "{method} {accept}");
    }
    let curl = Command::new("curl")
        .args(["-s", "-i", "-H", &format!("X-Forwarded-For: {ip}")])
        .arg(format!("http://127.0.0.1:{}/page.html", apache.port()))
        .output()
        .unwrap();
    let curl = String::from_utf8_lossy(&curl.stdout);
    assert!(curl.starts_with("HTTP/1.1 429"), "{curl}");
    assert!(!curl.contains("<script"), "{curl}");
    let auto = status_auto(&apache);
    assert_eq!(auto_value(&auto, "ChallengesIssued"), 2, "{auto}");
    assert_eq!(auto_value(&auto, "ChallengesPassed"), 0, "{auto}");
    apache.assert_clean_log();
}

#[test]
fn forged_expired_other_address_and_tampered_passes_are_refused() {
    let apache = server("DOSChallengeKey \"@ROOT@/conf/shield.key\"");
    let (ip, other) = ("192.0.2.20", "192.0.2.21");
    block(&apache, Some(ip));
    block(&apache, Some(other));
    let client: std::net::IpAddr = ip.parse().unwrap();
    let now = unix_now() as i64;
    let with = |cookie: &str, from: &str| {
        get(
            &apache,
            from,
            "/a.txt",
            &[("Cookie", &format!("shield_pass={cookie}"))],
        )
        .status
    };
    // A pass minted with the shared key file is honoured (several servers, one key)...
    let genuine = pass::issue(&key(), client, 1, now + 600);
    assert_eq!(with(&genuine, ip), 200);
    // ...and nothing else is.
    let forged = pass::issue(&Key([9; 32]), client, 1, now + 600);
    let expired = pass::issue(&key(), client, 1, now - 1);
    // A genuine pass of the next generation opens no block of this one.
    let next_generation = pass::issue(&key(), client, 2, now + 600);
    let mut tampered = genuine.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (exp, rest) = genuine.split_once('.').unwrap();
    let extended = format!("{}.{rest}", exp.parse::<i64>().unwrap() + 86_400);
    for (what, cookie, from) in [
        ("forged", forged.as_str(), ip),
        ("expired", expired.as_str(), ip),
        ("tampered", tampered.as_str(), ip),
        ("extended", extended.as_str(), ip),
        ("next generation", next_generation.as_str(), ip),
        ("other address", genuine.as_str(), other),
        ("garbage", "x.y.z", ip),
    ] {
        assert_eq!(with(cookie, from), 429, "{what}");
    }
    assert_eq!(get(&apache, ip, "/a.txt", &[]).status, 429);
    // Bogus solutions: plain refusals, each counted as failed.
    let page = get(&apache, ip, "/page.html", &[("Accept", HTML)]).body_text();
    let next = data(&page, "next");
    let n = data(&page, "n");
    let d: u8 = data(&page, "d").parse().unwrap();
    assert_eq!(d, challenge::DEFAULT_BASE_BITS);
    let good = pow::solve(&n, d);
    let bad = (0..).find(|&s| !pow::check(&n, s, d)).unwrap();
    let t = data(&page, "next")
        .split("&t=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    let stale_t = (now - 3600).to_string();
    let weak_n = nonce::issue(&key(), client, now, 4);
    let weak = format!(
        "{}?n={weak_n}&t={now}&d=4&r=%2F&s={}",
        challenge::SUBMIT_PATH,
        pow::solve(&weak_n, 4)
    );
    for (what, url, from) in [
        ("wrong solution", format!("{next}{bad}"), ip),
        ("other address", format!("{next}{good}"), other),
        (
            "stale",
            format!("{next}{good}").replace(&format!("&t={t}"), &format!("&t={stale_t}")),
            ip,
        ),
        ("too easy", weak, ip),
        ("malformed", format!("{}?n=zz", challenge::SUBMIT_PATH), ip),
    ] {
        let r = get(&apache, from, &url, &[]);
        assert_eq!(r.status, 429, "{what}");
        assert!(r.header("Set-Cookie").is_none(), "{what}");
    }
    assert_eq!(apache.log_count("challenge passed by IP"), 0);
    // The genuine solution: a pass and a redirect back.
    let ok = get(&apache, ip, &format!("{next}{good}"), &[]);
    assert_eq!(ok.status, 303);
    assert_eq!(ok.header("Location"), Some("/page.html"));
    let set = ok.header("Set-Cookie").unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=3600"] {
        assert!(set.contains(attr), "{set}");
    }
    let value = set
        .strip_prefix("shield_pass=")
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    let p = pass::verify(&key(), client, value, now).unwrap();
    assert!(p.expires >= now + 3599 && p.expires <= now + 3700, "{p:?}");
    assert_eq!(with(value, ip), 200);
    assert_eq!(with(value, other), 429);
    assert_eq!(
        apache.log_count(&format!("challenge passed by IP: {ip}")),
        1
    );
    // The challenge is spent: the same solution again earns nothing.
    let r = get(&apache, ip, &format!("{next}{good}"), &[]);
    assert_eq!(r.status, 429);
    assert!(r.header("Set-Cookie").is_none());
    // An open redirect is not one (a new challenge: one pass earned, so one bit dearer).
    let page = get(&apache, ip, "/page.html", &[("Accept", HTML)]).body_text();
    let d: u8 = data(&page, "d").parse().unwrap();
    assert_eq!(d, challenge::DEFAULT_BASE_BITS + 1);
    let next = data(&page, "next");
    let evil = format!("{next}{}", pow::solve(&data(&page, "n"), d))
        .replace("r=%2Fpage.html", "r=%2F%2Fevil.example%2F");
    let r = get(&apache, ip, &evil, &[]);
    assert_eq!((r.status, r.header("Location")), (303, Some("/")));
    // A client that is not blocked (its block ended while it solved): a valid solution still
    // earns the pass and the way back; anything else is a plain 400, never the handler's 404.
    let free = "192.0.2.22";
    let free_n = nonce::issue(&key(), free.parse().unwrap(), now, 14);
    let url = format!(
        "{}?n={free_n}&t={now}&d=14&r=%2Fother.html&s={}",
        challenge::SUBMIT_PATH,
        pow::solve(&free_n, 14)
    );
    let r = get(&apache, free, &url, &[]);
    assert_eq!((r.status, r.header("Location")), (303, Some("/other.html")));
    assert!(r.header("Set-Cookie").is_some());
    let r = get(
        &apache,
        free,
        &format!("{}?n=zz", challenge::SUBMIT_PATH),
        &[],
    );
    assert_eq!(r.status, 400);
    // ...and such submissions are counted like any other request: DOSPageCount 2 holds.
    let r = get(
        &apache,
        free,
        &format!("{}?n=zz", challenge::SUBMIT_PATH),
        &[],
    );
    assert_eq!(r.status, 429);
    let auto = status_auto(&apache);
    assert_eq!(auto_value(&auto, "ChallengesFailed"), 7, "{auto}");
    assert_eq!(auto_value(&auto, "ChallengesPassed"), 3, "{auto}");
    apache.assert_clean_log();
}

#[test]
fn a_pass_holder_that_floods_moves_its_clients_block_on_and_must_solve_again() {
    let apache = server("");
    let ip = "192.0.2.30";
    block(&apache, Some(ip));
    let cookie_of = |r: &Response| {
        r.header("Set-Cookie")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string()
    };
    let ok = solve_and_submit(&apache, ip, "/page.html");
    assert_eq!(ok.status, 303);
    let cookie = cookie_of(&ok);
    let with = |cookie: &str, path: &str, accept: &str| {
        get(&apache, ip, path, &[("Cookie", cookie), ("Accept", accept)])
    };
    // Counted under the client's pass-holder records: DOSPageCount 2 holds for it too.
    let statuses: Vec<u16> = (0..3)
        .map(|_| with(&cookie, "/other.html", "*/*").status)
        .collect();
    assert_eq!(statuses, [200, 200, 429]);
    // The block it crossed into is its client's own, one generation on (no block of an
    // address of its own).
    let starts = apache.log_lines(&format!("blocking period started for IP: {ip} "));
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert!(apache
        .log_lines("blocking period started for IP: fd")
        .is_empty());
    // Its pass is of the old generation: a navigation gets the challenge again, at the next
    // generation's difficulty plus one bit for the pass already earned.
    let again = with(&cookie, "/other.html", HTML);
    assert_eq!(again.status, 429);
    assert!(again.header("Content-Security-Policy").is_some());
    assert_eq!(
        data(&again.body_text(), "d").parse::<u8>().unwrap(),
        challenge::DEFAULT_BASE_BITS + challenge::DEFAULT_STEP_BITS + 1
    );
    assert_eq!(with(&cookie, "/other.html", "*/*").status, 429);
    // Solving again earns a new pass, but not a new budget: the page's count is spent for
    // this window, so its first request moves the block on once more.
    let ok = solve_and_submit(&apache, ip, "/other.html");
    assert_eq!(ok.status, 303);
    let fresh = cookie_of(&ok);
    assert_ne!(fresh, cookie);
    assert_eq!(with(&fresh, "/other.html", "*/*").status, 429);
    assert_eq!(
        apache
            .log_lines(&format!("blocking period started for IP: {ip} "))
            .len(),
        3
    );
    // A pass of the current generation is served where its budget is not spent.
    let ok = solve_and_submit(&apache, ip, "/page.html");
    assert_eq!(ok.status, 303);
    let third = cookie_of(&ok);
    assert_eq!(with(&third, "/a.txt", "*/*").status, 200);
    // The address itself stays blocked for requests without a pass.
    assert_eq!(get(&apache, ip, "/other.html", &[]).status, 429);
    apache.assert_clean_log();
}

#[test]
fn off_keeps_the_plain_refusal_and_bad_keys_fail_the_config_test() {
    let apache = Apache::builder()
        .mpm(Mpm::Event)
        .remoteip()
        .config(
            "DOSPageCount 2\nDOSPageInterval 60\nDOSBlockingPeriod 300\nDOSLogDir \"@BLOCKS@\"\n",
        )
        .start();
    block(&apache, Some("192.0.2.40"));
    let r = get(&apache, "192.0.2.40", "/page.html", &[("Accept", HTML)]);
    assert_eq!(r.status, 429);
    assert!(r.header("Content-Security-Policy").is_none());
    assert!(!r.body_text().contains("<script"));
    // Without DOSChallenge the reserved path is nothing special.
    assert_eq!(
        get(&apache, "192.0.2.41", "/.shield/challenge?n=x", &[]).status,
        404
    );
    let auto = get(&apache, "192.0.2.42", "/shield-status?auto", &[]);
    assert!(!auto.body_text().contains("Challenges"));
    drop(apache);

    for (content, want) in [
        (None, "cannot be read"),
        (
            Some(&b"short\n"[..]),
            "holds 5 bytes; at least 32 are needed",
        ),
    ] {
        let apache = Apache::builder()
            .config("DOSChallenge on\nDOSChallengeKey \"@ROOT@/conf/key\"\n")
            .build();
        let path = apache.root().join("conf/key");
        if let Some(c) = content {
            fs::write(&path, c).unwrap();
        }
        let (ok, out) = apache.config_test();
        assert!(!ok, "{out}");
        assert!(
            out.contains("DOSChallengeKey") && out.contains(want),
            "{out}"
        );
        assert!(out.contains(&path.display().to_string()), "{out}");
    }
}

#[test]
fn fail2ban_does_not_match_the_pass_line() {
    let apache = server("");
    let ip = "192.0.2.50";
    block(&apache, Some(ip));
    assert_eq!(solve_and_submit(&apache, ip, "/page.html").status, 303);
    let passed = apache.log_lines("challenge passed by IP");
    let started = apache.log_lines(&format!("blocking period started for IP: {ip} "));
    assert_eq!((passed.len(), started.len()), (1, 1));
    let filter = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/fail2ban/filter.d/shield.conf"
    );
    let dir = apache.root().join("f2b");
    fs::create_dir_all(&dir).unwrap();
    let matched = |lines: &[String], name: &str| -> usize {
        let log = dir.join(name);
        fs::write(&log, lines.join("\n") + "\n").unwrap();
        let out = Command::new("fail2ban-regex")
            .arg(&log)
            .arg(filter)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{text}");
        let line = text.lines().find(|l| l.starts_with("Lines:")).unwrap();
        // "Lines: 1 lines, 0 ignored, 1 matched, 0 missed"
        line.split(',')
            .find(|p| p.contains("matched"))
            .and_then(|p| p.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(matched(&passed, "passed.log"), 0, "{passed:?}");
    assert_eq!(matched(&started, "started.log"), 1, "{started:?}");
}

/// Generation, bits, WebCrypto times (ms), plain-JS times (ms), hashes done.
type GenTimes = (u32, u8, Vec<f64>, Vec<f64>, u64);

#[test]
fn solve_times_per_generation_in_chromium() {
    // Timed in a Worker, like the page: with WebCrypto, and with the page's own SHA-256 (what
    // a plain-HTTP site that is not localhost gets: no WebCrypto outside secure contexts).
    let apache = server("");
    block(&apache, None);
    let page = get(&apache, "127.0.0.1", "/page.html", &[("Accept", HTML)]).body_text();
    let solver = solver_source(&page);
    let settings = challenge::Settings::default();
    assert_eq!(
        data(&page, "d").parse::<u8>().unwrap(),
        settings.bits_for_generation(1)
    );
    let mut browser = Browser::launch();
    let url = format!("http://127.0.0.1:{}/page.html", apache.port());
    browser.navigate_until(&url, "/page.html", "page");
    let runs = 3;
    let mut jobs = Vec::new();
    for generation in 1..=3u32 {
        let bits = settings.bits_for_generation(generation);
        for i in 0..runs {
            let issued = i64::from(i) + 1000 * i64::from(generation);
            let n = nonce::issue(&key(), "192.0.2.1".parse().unwrap(), issued, bits);
            jobs.push((generation, n, bits));
        }
    }
    let list: Vec<Value> = jobs.iter().map(|(_, n, b)| json!([n, b])).collect();
    // The Worker runs the page's solver, or the same solver with no WebCrypto in sight.
    let worker = format!(
        "{solver}\nconst plain = new Function('self', solve.toString() + '\\nreturn solve;')({{}});\n\
         onmessage = function (e) {{ (e.data[2] ? plain : solve)(e.data[0], e.data[1], postMessage); }};"
    );
    let expr = format!(
        "(async () => {{\n\
           const url = URL.createObjectURL(new Blob([{src}], {{type: 'text/javascript'}}));\n\
           const out = [];\n\
           for (const [n, d] of {list}) {{\n\
             const row = [];\n\
             for (const js of [false, true]) {{\n\
               const w = new Worker(url); const t0 = performance.now();\n\
               const s = await new Promise((ok, fail) => {{\n\
                 w.onmessage = e => ok(e.data); w.onerror = e => fail(e.message);\n\
                 w.postMessage([n, d, js]); }});\n\
               row.push(s, performance.now() - t0); w.terminate();\n\
             }}\n\
             out.push(row);\n\
           }}\n\
           return out; }})()",
        src = serde_json::to_string(&worker).unwrap(),
        list = serde_json::to_string(&list).unwrap(),
    );
    let got = browser.eval(&expr).unwrap();
    let got = got.as_array().unwrap();
    assert_eq!(got.len(), jobs.len());
    // generation -> (bits, WebCrypto ms, plain ms, hashes)
    let mut per_gen: Vec<GenTimes> = Vec::new();
    for ((generation, n, bits), r) in jobs.iter().zip(got) {
        let (s, ms, s_js, ms_js) = (
            r[0].as_u64().unwrap(),
            r[1].as_f64().unwrap(),
            r[2].as_u64().unwrap(),
            r[3].as_f64().unwrap(),
        );
        // Both find the smallest solution, which the module accepts.
        assert!(pow::check(n, s, *bits), "{n} {bits} {s}");
        assert_eq!(s, s_js, "{n} {bits}");
        match per_gen.last_mut() {
            Some((g, _, wc, js, hashes)) if g == generation => {
                wc.push(ms);
                js.push(ms_js);
                *hashes += s + 1;
            }
            _ => per_gen.push((*generation, *bits, vec![ms], vec![ms_js], s + 1)),
        }
    }
    let ms = |v: &[f64]| v.iter().map(|t| t.round() as u64).collect::<Vec<_>>();
    // A solve takes 2^bits hashes on average (geometric: single runs vary widely), so the
    // expected time per generation follows from the rate measured over all runs.
    let all = |f: fn(&GenTimes) -> f64| per_gen.iter().map(f).sum::<f64>();
    let hashes = all(|g| g.4 as f64);
    let rate_wc = hashes / (all(|g| g.2.iter().sum()) / 1000.0);
    let rate_js = hashes / (all(|g| g.3.iter().sum()) / 1000.0);
    for (generation, bits, _, _, _) in &per_gen {
        let expected = (1u64 << bits) as f64;
        println!(
            "chromium worker: generation {generation} ({bits} bits): expected {:.0} ms with \
             WebCrypto ({rate_wc:.0} hashes/s), {:.0} ms with plain JS ({rate_js:.0} hashes/s)",
            expected / rate_wc * 1000.0,
            expected / rate_js * 1000.0
        );
    }
    for (generation, bits, wc, js, hashes) in per_gen {
        let (t_wc, t_js): (f64, f64) = (wc.iter().sum(), js.iter().sum());
        println!(
            "chromium worker: generation {generation} ({bits} bits), {runs} runs, {hashes} hashes: \
             WebCrypto mean {:.0} ms {:?} ({:.0} hashes/s); plain JS mean {:.0} ms {:?} ({:.0} hashes/s)",
            t_wc / wc.len() as f64,
            ms(&wc),
            hashes as f64 / (t_wc / 1000.0),
            t_js / js.len() as f64,
            ms(&js),
            hashes as f64 / (t_js / 1000.0),
        );
    }
    drop(browser);
}

// `DOSUnderAttack`: every browser without a pass is challenged while the server is flooded.
#[path = "challenge/under_attack.rs"]
mod under_attack;
