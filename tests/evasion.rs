//! The ways a scanner tries to step around the count, each against the real apache2: another
//! Host header, another spelling of the path, another method or protocol, another connection,
//! another address of the same /64, a refusal httpd makes itself, and many requests at the
//! same instant. Every trick must be refused at exactly the request a plain flood is.

mod common;

use common::*;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Page count used by the trick tests: the 6th request to one page is the first refused.
const PAGE_COUNT: usize = 5;

fn page_limit_server(extra: &str) -> Apache {
    Apache::builder()
        .remoteip()
        .config(&format!(
            "DOSPageCount {PAGE_COUNT}\nDOSPageInterval 60\nDOSSiteCount 1000\n\
             DOSSiteInterval 60\nDOSBlockingPeriod 60\nDOSLogDir @BLOCKS@\n{extra}"
        ))
        .start()
}

/// Sends `n` requests made by `send(i)` (each returns a status) and returns the statuses.
fn statuses(n: usize, mut send: impl FnMut(usize) -> u16) -> Vec<u16> {
    (0..n).map(&mut send).collect()
}

/// The first `PAGE_COUNT` answered as a served page is (200, or what the method gives), the
/// rest 429: the plain flood's pattern.
fn assert_refused_after_count(what: &str, got: &[u16], served_status: &[u16]) {
    for (i, s) in got.iter().enumerate() {
        if i < PAGE_COUNT {
            assert!(
                served_status.contains(s),
                "{what}: request {} must be served, got {got:?}",
                i + 1
            );
        } else {
            assert_eq!(
                *s,
                429,
                "{what}: request {} must be refused (plain flood: the {}th), got {got:?}",
                i + 1,
                PAGE_COUNT + 1
            );
        }
    }
}

#[test]
fn a_plain_flood_is_refused_at_the_count() {
    let apache = page_limit_server("");
    let client = apache.client().ip("192.0.2.10");
    let got = statuses(8, |_| client.get("/index.html").status);
    assert_refused_after_count("plain flood", &got, &[200]);
}

#[test]
fn rotating_host_headers_on_a_catch_all_server_are_one_site_and_one_page() {
    let apache = Apache::builder()
        .remoteip()
        .config(
            "DOSPageCount 5\nDOSPageInterval 60\nDOSSiteCount 500\nDOSSiteInterval 60\n\
             DOSSiteStatusPenalty 404 50\nDOSBlockingPeriod 60\nDOSLogDir @BLOCKS@",
        )
        .start();
    // One page, a new Host every time.
    let base = apache.client().ip("192.0.2.11");
    let got = statuses(8, |i| {
        base.clone()
            .host(&format!("h{i}.rotating.example"))
            .get("/index.html")
            .status
    });
    assert_refused_after_count("rotating Host, one page", &got, &[200]);

    // The seed's WordPress scan: 20 probes, each 404 (1 + 50 points), a new Host each; the
    // site count of 500 is crossed by the 10th probe, so the 11th is refused.
    let scanner = apache.client().ip("192.0.2.12");
    let got = statuses(20, |i| {
        scanner
            .clone()
            .host(&format!("scan{i}.example"))
            .get(&format!("/wp-content/plugins/p{i}/shell.php"))
            .status
    });
    assert_eq!(&got[..10], &[404; 10], "first 10 probes answered: {got:?}");
    assert!(got[10..].iter().all(|&s| s == 429), "then refused: {got:?}");
    // The same scan with one Host ends the same way.
    let plain = apache.client().ip("192.0.2.13");
    let same: Vec<u16> = (0..20)
        .map(|i| {
            plain
                .get(&format!("/wp-content/plugins/p{i}/shell.php"))
                .status
        })
        .collect();
    assert_eq!(
        got, same,
        "rotating Host must not change when the scan is refused"
    );
    // The block names the virtual host, not a Host the scanner made up.
    let text =
        std::fs::read_to_string(apache.blocks_dir().join("dos-192.0.2.12")).expect("block file");
    let host = text.lines().nth(1).and_then(|l| l.split(' ').nth(3));
    assert_eq!(host, Some("127.0.0.1"), "block file:\n{text}");
}

#[test]
fn name_based_virtual_hosts_count_aliases_and_unknown_names_as_their_vhost() {
    let mut apache = Apache::builder()
        .remoteip()
        .config(
            "DOSPageCount 5\nDOSPageInterval 60\nDOSSiteCount 1000\nDOSSiteInterval 60\n\
             DOSBlockingPeriod 60\nDOSLogDir @BLOCKS@\n\
             <VirtualHost 127.0.0.1:@PORT@>\n  ServerName a.example\n  \
             ServerAlias www.a.example alt.a.example\n</VirtualHost>\n\
             <VirtualHost 127.0.0.1:@PORT@>\n  ServerName b.example\n</VirtualHost>\n",
        )
        .build();
    apache.start();
    let port = apache.port();
    // a.example is the first vhost: an unknown name lands there too.
    let names = [
        "a.example",
        "www.a.example",
        "ALT.a.example",
        "nobody.example",
    ];
    let base = apache.client().ip("192.0.2.20");
    let got = statuses(8, |i| {
        base.clone()
            .host(&format!("{}:{port}", names[i % names.len()]))
            .get("/index.html")
            .status
    });
    assert_refused_after_count("aliases of one vhost", &got, &[200]);
    let text =
        std::fs::read_to_string(apache.blocks_dir().join("dos-192.0.2.20")).expect("block file");
    let host = text.lines().nth(1).and_then(|l| l.split(' ').nth(3));
    assert_eq!(
        host,
        Some(&*format!("a.example:{port}")),
        "block file:\n{text}"
    );

    // Another vhost is another site (and page) of its own.
    let other = apache.client().ip("192.0.2.21");
    let a: Vec<u16> = (0..3)
        .map(|_| other.clone().host("a.example").get("/index.html").status)
        .collect();
    let b: Vec<u16> = (0..3)
        .map(|_| other.clone().host("b.example").get("/index.html").status)
        .collect();
    assert_eq!((a, b), (vec![200; 3], vec![200; 3]));
    apache.stop();
}

#[test]
fn query_strings_and_path_spellings_are_one_page() {
    let apache = page_limit_server("");
    let client = apache.client().ip("192.0.2.30");
    let got = statuses(8, |i| client.get(&format!("/index.html?x={i}")).status);
    assert_refused_after_count("rotating query strings", &got, &[200]);

    let spellings = [
        "/index.html",
        "/%69ndex.html",
        "//index.html",
        "/./index.html",
        "/x/../index.html",
        "/%2e/index.html",
        "/index%2Ehtml",
        "///./index.html",
    ];
    let client = apache.client().ip("192.0.2.31");
    let got = statuses(spellings.len(), |i| client.get(spellings[i]).status);
    assert_refused_after_count("path spellings", &got, &[200]);
}

#[test]
fn methods_and_absolute_form_targets_are_one_page() {
    let apache = page_limit_server("");
    let client = apache.client().ip("192.0.2.40");
    let methods = ["GET", "HEAD", "POST", "OPTIONS"];
    let got = statuses(8, |i| {
        client
            .request(methods[i % 4], "/index.html", &[("Content-Length", "0")])
            .status
    });
    // A static file answers POST with 405; the others with 200.
    assert_refused_after_count("rotating methods", &got, &[200, 405]);

    let client = apache.client().ip("192.0.2.41");
    let port = apache.port();
    let got = statuses(8, |i| {
        client
            .request(
                "GET",
                &format!("http://abs{i}.example:{port}/index.html"),
                &[],
            )
            .status
    });
    assert_refused_after_count("absolute-form targets", &got, &[200]);
}

/// A request whose headers trickle in for longer than the page interval: counted when it is
/// decided, not when its request line arrived, so an old arrival time can neither land in a
/// long-gone window nor restart the current one.
#[test]
fn a_request_with_slow_headers_counts_in_the_current_window() {
    use std::io::{Read, Write};
    let apache = Apache::builder()
        .remoteip()
        .config(
            "DOSPageCount 3\nDOSPageInterval 4\nDOSSiteCount 1000\nDOSSiteInterval 60\n\
             DOSBlockingPeriod 60\nDOSLogDir @BLOCKS@\n",
        )
        .start();
    let ip = "192.0.2.44";
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", apache.port())).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET /index.html HTTP/1.1\r\n").unwrap();
    // Longer than the interval: the request line's arrival is a window ago by the time the
    // request is decided.
    thread::sleep(Duration::from_millis(4500));
    let client = apache.client().ip(ip);
    let fast = statuses(3, |_| client.get("/index.html").status);
    assert_eq!(fast, vec![200; 3], "the count of the current window");
    slow.write_all(
        format!("Host: 127.0.0.1\r\nX-Forwarded-For: {ip}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut answer = Vec::new();
    slow.read_to_end(&mut answer).unwrap();
    let status_line = String::from_utf8_lossy(&answer[..answer.len().min(12)]).into_owned();
    assert!(
        status_line.starts_with("HTTP/1.1 429"),
        "the slow request is the 4th of the window: {status_line:?}"
    );
    assert_eq!(client.get("/index.html").status, 429, "and the block holds");
}

#[test]
fn keep_alive_and_new_connections_count_alike() {
    let apache = page_limit_server("KeepAlive On\nMaxKeepAliveRequests 100\n");
    let client = apache.client().ip("192.0.2.50");
    let mut conn = client.conn();
    let mut got = Vec::new();
    for _ in 0..PAGE_COUNT + 1 {
        got.push(conn.get("/index.html").status);
    }
    assert_refused_after_count("one keep-alive connection", &got, &[200]);
    assert!(
        conn.is_closed(Duration::from_secs(2)),
        "the refusal closes the connection"
    );
    // Then on new connections: still refused.
    let more = statuses(3, |_| client.get("/index.html").status);
    assert_eq!(more, vec![429; 3]);

    let client = apache.client().ip("192.0.2.51");
    let got = statuses(8, |_| client.get("/index.html").status);
    assert_refused_after_count("a connection per request", &got, &[200]);
}

#[test]
fn ipv6_addresses_of_one_64_and_ipv4_mapped_forms_are_one_client() {
    let apache = page_limit_server("");
    let got = statuses(8, |i| {
        apache
            .client()
            .ip(&format!("2001:db8:5:5::{:x}", 0x100 + i * 7919))
            .get("/index.html")
            .status
    });
    assert_refused_after_count("rotating inside one /64", &got, &[200]);
    let forms = ["192.0.2.60", "::ffff:192.0.2.60", "::FFFF:c000:023c"];
    let got = statuses(8, |i| {
        apache
            .client()
            .ip(forms[i % forms.len()])
            .get("/index.html")
            .status
    });
    assert_refused_after_count("IPv4 and IPv4-mapped forms", &got, &[200]);
}

/// h2load's `status codes: N 2xx, N 3xx, N 4xx, N 5xx` line.
fn h2load_codes(out: &str) -> [usize; 4] {
    let line = out
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap_or_else(|| panic!("no status codes line in h2load output:\n{out}"));
    let mut codes = [0; 4];
    for (i, part) in line["status codes:".len()..].split(',').enumerate().take(4) {
        codes[i] = part
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad status codes line: {line}"));
    }
    codes
}

#[test]
fn http2_streams_on_one_connection_count_exactly() {
    let mut apache = Apache::builder()
        .mpm(Mpm::Event)
        .remoteip()
        .module("http2")
        .config(
            "Protocols h2c http/1.1\nDOSPageCount 10\nDOSPageInterval 60\n\
             DOSSiteCount 1000\nDOSSiteInterval 60\nDOSBlockingPeriod 60\n",
        )
        .build();
    apache.start();
    for round in 0..5 {
        let url = format!("http://127.0.0.1:{}/index.html", apache.port());
        let out = Command::new("h2load")
            .args(["-n", "40", "-c", "1", "-m", "8", "-H"])
            .arg(format!("X-Forwarded-For: 198.18.0.{}", round + 1))
            .arg(&url)
            .output()
            .expect("run h2load (nghttp2-client)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.contains("h2c"),
            "h2load did not speak h2c (round {round}):\n{text}"
        );
        let codes = h2load_codes(&text);
        assert_eq!(
            codes,
            [10, 0, 30, 0],
            "round {round}: 40 streams, 8 at once, DOSPageCount 10:\n{text}"
        );
    }
    apache.stop();
}

#[test]
fn a_wrong_password_is_counted_and_its_penalty_refuses_the_next_request() {
    let apache = Apache::builder()
        .remoteip()
        .module("authn_core")
        .module("auth_basic")
        .module("authn_file")
        .module("authz_user")
        .config(
            "DOSPageCount 50\nDOSPageInterval 60\nDOSSiteCount 1000\nDOSSiteInterval 60\n\
             DOSBlockingPeriod 60\nDOSSiteStatusPenalty 401 10000\n\
             DOSSiteStatusPenalty 403 10000\n\
             <Location /private>\n  AuthType Basic\n  AuthName shield\n  \
             AuthUserFile @ROOT@/conf/htpasswd\n  Require valid-user\n</Location>\n\
             <Location /denied>\n  Require all denied\n</Location>\n",
        )
        .build();
    let htpasswd = Command::new("htpasswd")
        .args(["-cbB", "-C", "4"])
        .arg(apache.root().join("conf/htpasswd"))
        .args(["admin", "right-password"])
        .output()
        .expect("run htpasswd (apache2-utils)");
    assert!(htpasswd.status.success(), "{htpasswd:?}");
    let mut apache = apache;
    apache.start();
    // "admin:wrong" and "admin:right-password" in Basic form.
    let wrong = ("Authorization", "Basic YWRtaW46d3Jvbmc=");
    let right = ("Authorization", "Basic YWRtaW46cmlnaHQtcGFzc3dvcmQ=");

    let user = apache.client().ip("192.0.2.70");
    assert_eq!(user.request("GET", "/private/", &[right]).status, 404);

    let guesser = apache.client().ip("192.0.2.71");
    assert_eq!(guesser.request("GET", "/private/", &[wrong]).status, 401);
    // The very next request, even with the right password, is refused.
    assert_eq!(guesser.request("GET", "/private/", &[right]).status, 429);
    assert_eq!(guesser.get("/index.html").status, 429);

    let prober = apache.client().ip("192.0.2.72");
    assert_eq!(prober.get("/denied/").status, 403);
    assert_eq!(prober.get("/index.html").status, 429);
    apache.stop();
}

#[test]
fn refusals_httpd_makes_itself_count_toward_the_site() {
    let apache = Apache::builder()
        .remoteip()
        .config(
            "DOSPageCount 100\nDOSPageInterval 60\nDOSSiteCount 4\nDOSSiteInterval 60\n\
             DOSBlockingPeriod 60\n<Location /denied>\n  Require all denied\n</Location>\n",
        )
        .start();
    let prober = apache.client().ip("192.0.2.80");
    // Each 403 counts once (in log_transaction: httpd ends them before fixups), so the
    // 5th crosses the site count and the 6th request is refused.
    let got = statuses(7, |i| prober.get(&format!("/denied/{i}")).status);
    assert_eq!(got, vec![403, 403, 403, 403, 403, 429, 429], "{got:?}");
}

// ---------------------------------------------------------------------------------------------
// Concurrency: one client on 8 parallel connections (ab -c 8), round after round
// ---------------------------------------------------------------------------------------------

const ROUNDS: usize = 100;
const COUNT: usize = 10;

/// `ab`'s complete and non-2xx counts.
fn ab_served(out: &str) -> (usize, usize) {
    let field = |name: &str| -> Option<usize> {
        out.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l[name.len()..].trim().parse().ok())
    };
    let complete = field("Complete requests:")
        .unwrap_or_else(|| panic!("no 'Complete requests' in ab output:\n{out}"));
    let non2xx = field("Non-2xx responses:").unwrap_or(0);
    (complete, complete - non2xx)
}

/// Keeps every core busy with spinning threads until dropped (bounded: at most `limit`).
struct BusyCores {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl BusyCores {
    fn start(limit: Duration) -> BusyCores {
        let stop = Arc::new(AtomicBool::new(false));
        let n = thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                thread::spawn(move || {
                    let t0 = Instant::now();
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) && t0.elapsed() < limit {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(x.wrapping_mul(6364136223846793005) + 1);
                        }
                    }
                })
            })
            .collect();
        BusyCores { stop, threads }
    }
}

impl Drop for BusyCores {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn concurrent_rounds(mpm: Mpm) {
    let sizing = match mpm {
        Mpm::Prefork => {
            "StartServers 10\nMinSpareServers 10\nMaxSpareServers 16\nServerLimit 16\n\
             MaxRequestWorkers 16\n"
        }
        Mpm::Worker | Mpm::Event => {
            "StartServers 2\nServerLimit 2\nThreadLimit 8\nThreadsPerChild 8\n\
             MinSpareThreads 8\nMaxSpareThreads 16\nMaxRequestWorkers 16\n"
        }
    };
    let mut apache = Apache::builder()
        .mpm(mpm)
        .mpm_config(sizing)
        .remoteip()
        .config(&format!(
            "KeepAlive Off\nDOSPageCount {COUNT}\nDOSPageInterval 60\nDOSSiteCount 100000\n\
             DOSSiteInterval 60\nDOSBlockingPeriod 60\nDOSLogDir @BLOCKS@\n\
             <Location /shield-status>\n  SetHandler shield-handler\n  DOSEnabled off\n\
             </Location>\n"
        ))
        .start();
    let url = format!("http://127.0.0.1:{}/index.html", apache.port());
    let mut off = Vec::new();
    for (label, busy) in [("idle", false), ("both cores busy", true)] {
        let _load = busy.then(|| BusyCores::start(Duration::from_secs(300)));
        for round in 0..ROUNDS {
            // A client of its own per round (and per load), so each round starts from zero.
            let ip = format!("2001:db8:{}:{round:x}::1", if busy { "b" } else { "a" });
            let out = Command::new("ab")
                .args(["-q", "-n", "40", "-c", "8", "-s", "10", "-H"])
                .arg(format!("X-Forwarded-For: {ip}"))
                .arg(&url)
                .output()
                .expect("run ab (apache2-utils)");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let (complete, served) = ab_served(&text);
            assert_eq!(complete, 40, "{label} round {round}: ab output:\n{text}");
            if served != COUNT {
                off.push(format!("{label} round {round}: served {served}"));
            }
        }
    }
    eprintln!(
        "{}: {} rounds idle and {} busy, {} off",
        mpm.name(),
        ROUNDS,
        ROUNDS,
        off.len()
    );
    assert!(
        off.is_empty(),
        "{} rounds of {} were not exact under {}: {off:?}",
        off.len(),
        2 * ROUNDS,
        mpm.name()
    );
    let auto = apache.get("/shield-status?auto").body_text();
    assert!(
        auto.lines().any(|l| l == "StoreFailOpens: 0"),
        "no operation may fail open in these runs:\n{auto}"
    );
    apache.stop();
}

#[test]
fn concurrent_rounds_are_exact_under_prefork() {
    concurrent_rounds(Mpm::Prefork);
}

#[test]
fn concurrent_rounds_are_exact_under_worker() {
    concurrent_rounds(Mpm::Worker);
}

#[test]
fn concurrent_rounds_are_exact_under_event() {
    concurrent_rounds(Mpm::Event);
}
