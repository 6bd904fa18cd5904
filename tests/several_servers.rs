//! Several servers sharing counts and blocks through a real memcached or redis:
//! `DOSCache memcache:…` / `redis:…` with Apache's socache providers.
//!
//! Every test starts its own backend process and two event-MPM Apaches (A and B) on free
//! loopback ports, and stops them all at the end, also when it fails (Drop guards). The
//! harness allows two running servers per test binary, so the tests here take turns
//! ([`serial`]).
//!
//! The module reads a client's shared record once per request (post_read_request) and writes it
//! back in log_transaction, after the response has gone out. A client's next request therefore
//! sees the previous one only once that request has fully settled: [`settled_get`] asks for
//! `Connection: close` and waits for the server to close the connection, which httpd does after
//! logging the request.

mod common;

use common::*;
use mod_shield::remote::RemoteRecord;
use mod_shield::store::Rule;
use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Host header of every counted request, the same on both servers.
const HOST: &str = "shop.test";
/// The site both servers count it under: their virtual host (ServerName and port).
const SITE: &str = "www.example.com:80";
/// The page clients X, Y and Z request.
const PAGE: &str = "/page.html";
/// How long a backend may take to accept connections after being spawned.
const BACKEND_START: Duration = Duration::from_secs(5);
/// How long after the server closed the connection the write-back is given to land.
const SETTLE_MARGIN: Duration = Duration::from_millis(50);

/// Tests of this file run one at a time: each holds two servers, the harness's limit.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The backends
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Memcache,
    Redis,
}

impl Kind {
    /// The socache provider name, as written after `DOSCache`.
    fn provider(self) -> &'static str {
        match self {
            Kind::Memcache => "memcache",
            Kind::Redis => "redis",
        }
    }

    /// The httpd module that registers the provider (`mod_<name>.so`).
    fn module(self) -> &'static str {
        match self {
            Kind::Memcache => "socache_memcache",
            Kind::Redis => "socache_redis",
        }
    }

    fn directive(self, port: u16) -> String {
        format!("DOSCache {}:127.0.0.1:{port}", self.provider())
    }
}

/// Reads and writes the backend has served, from its own statistics.
#[derive(Clone, Copy, Debug, Default)]
struct Ops {
    reads: u64,
    hits: u64,
    writes: u64,
}

/// A memcached or redis-server process of this test; killed on drop.
struct Backend {
    kind: Kind,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Backend {
    /// Spawn on a free port and wait until it answers.
    fn start(kind: Kind) -> Backend {
        let dir = std::env::temp_dir().join(format!(
            "shield-backend-{}-{}-{:x}",
            kind.provider(),
            std::process::id(),
            unix_micros()
        ));
        fs::create_dir_all(&dir).expect("create backend dir");
        let mut b = Backend {
            kind,
            port: 0,
            dir,
            child: None,
            starts: 0,
        };
        let mut last = String::new();
        for _ in 0..5 {
            b.port = free_port();
            match b.spawn() {
                Ok(()) => return b,
                // The port was taken between probing and binding: try another one.
                Err(e) => last = e,
            }
        }
        panic!("{kind:?} backend did not start: {last}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        self.starts += 1;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("backend.log"))
            .map_err(|e| format!("backend log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("backend log: {e}"))?;
        let port = self.port.to_string();
        let mut cmd = match self.kind {
            Kind::Memcache => {
                let mut c = Command::new("/usr/bin/memcached");
                c.args(["-l", "127.0.0.1", "-p", &port, "-U", "0", "-m", "16"]);
                if is_root() {
                    c.args(["-u", "nobody"]);
                }
                c
            }
            Kind::Redis => {
                let mut c = Command::new("/usr/bin/redis-server");
                c.args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
                    .args(["--appendonly", "no", "--daemonize", "no", "--dir"])
                    .arg(&self.dir);
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawn {:?}: {e}", self.kind))?;
        self.child = Some(child);
        let deadline = Instant::now() + BACKEND_START;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "exited with {status} on port {}:\n{}",
                        self.port,
                        self.log()
                    ));
                }
            }
            if self.ping() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "no answer on port {} within {BACKEND_START:?}:\n{}",
                    self.port,
                    self.log()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("backend.log")).unwrap_or_default()
    }

    fn ping(&self) -> bool {
        match self.kind {
            Kind::Memcache => self
                .query(b"version\r\n", |b| b.ends_with(b"\r\n"))
                .is_ok_and(|r| r.starts_with(b"VERSION")),
            Kind::Redis => self
                .query(b"PING\r\n", |b| b.ends_with(b"\r\n"))
                .is_ok_and(|r| r.starts_with(b"+PONG")),
        }
    }

    /// SIGKILL the process (an outage without goodbye) and reap it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running backend");
        if let Err(e) = self.spawn() {
            panic!(
                "{:?} backend did not restart on port {}: {e}",
                self.kind, self.port
            );
        }
    }

    /// Send `request` on a fresh connection and read until `complete` says the answer is whole.
    fn query(&self, request: &[u8], complete: impl Fn(&[u8]) -> bool) -> io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.set_write_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(request)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        while !complete(&buf) {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "backend closed",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok(buf)
    }

    /// The backend's own operation counters (gets, hits, sets).
    fn ops(&self) -> Ops {
        match self.kind {
            Kind::Memcache => {
                let text = self
                    .query(b"stats\r\n", |b| b.ends_with(b"END\r\n"))
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .expect("memcached stats");
                let stat = |name: &str| -> u64 {
                    text.lines()
                        .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or_else(|| panic!("no STAT {name} in:\n{text}"))
                };
                Ops {
                    reads: stat("cmd_get"),
                    hits: stat("get_hits"),
                    writes: stat("cmd_set"),
                }
            }
            Kind::Redis => {
                let text = self
                    .redis_bulk(&["INFO", "everything"])
                    .expect("redis INFO");
                let text = String::from_utf8_lossy(&text.unwrap_or_default()).into_owned();
                // cmdstat_get:calls=12,usec=…; absent until the command was used once.
                let calls = |cmd: &str| -> u64 {
                    text.lines()
                        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
                        .and_then(|v| v.split(',').next())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                let hits = text
                    .lines()
                    .find_map(|l| l.strip_prefix("keyspace_hits:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or_else(|| panic!("no keyspace_hits in redis INFO:\n{text}"));
                Ops {
                    reads: calls("get"),
                    hits,
                    writes: calls("set") + calls("setex") + calls("psetex"),
                }
            }
        }
    }

    /// A redis command whose answer is a bulk string (None for the nil answer).
    fn redis_bulk(&self, args: &[&str]) -> io::Result<Option<Vec<u8>>> {
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        let parse = |b: &[u8]| -> Option<Option<Vec<u8>>> {
            let end = b.windows(2).position(|w| w == b"\r\n")?;
            let head = std::str::from_utf8(&b[..end]).ok()?;
            let len: i64 = head.strip_prefix('$')?.parse().ok()?;
            if len < 0 {
                return Some(None);
            }
            let start = end + 2;
            let stop = start + len as usize;
            (b.len() >= stop + 2).then(|| Some(b[start..stop].to_vec()))
        };
        let raw = self.query(req.as_bytes(), |b| {
            parse(b).is_some() || (b.ends_with(b"\r\n") && !b.starts_with(b"$"))
        })?;
        parse(&raw).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                String::from_utf8_lossy(&raw).into_owned(),
            )
        })
    }

    /// The raw value under `key` (None when absent).
    fn value(&self, key: &str) -> Option<Vec<u8>> {
        match self.kind {
            Kind::Memcache => {
                let parse = |b: &[u8]| -> Option<Option<Vec<u8>>> {
                    if b == b"END\r\n" {
                        return Some(None);
                    }
                    let end = b.windows(2).position(|w| w == b"\r\n")?;
                    let head = std::str::from_utf8(&b[..end]).ok()?;
                    // VALUE <key> <flags> <bytes>
                    let len: usize = head.split(' ').nth(3)?.parse().ok()?;
                    let start = end + 2;
                    (b.len() >= start + len + 7).then(|| Some(b[start..start + len].to_vec()))
                };
                let raw = self
                    .query(format!("get {key}\r\n").as_bytes(), |b| parse(b).is_some())
                    .expect("memcached get");
                parse(&raw).flatten()
            }
            Kind::Redis => self.redis_bulk(&["GET", key]).expect("redis GET"),
        }
    }

    /// The shared record of `client`, decoded with the module's own layout. The socache
    /// providers store an id under `<namespace>:<hex of the id>`; the namespace is "mod_shield".
    fn record(&self, client: std::net::IpAddr) -> Option<RemoteRecord> {
        let id = mod_shield::remote::record_id(client);
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let bytes = self.value(&format!("mod_shield:{hex}"))?;
        RemoteRecord::decode(&bytes)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "{:?} backend log ({}):\n{}",
                self.kind,
                self.dir.display(),
                self.log()
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// The two servers
// ---------------------------------------------------------------------------------------------

/// The status page, not counted, reachable from the loopback (no X-Forwarded-For).
const STATUS_LOCATION: &str = "<Location /shield>\n    SetHandler shield-handler\n    \
    DOSEnabled off\n    Require ip 127.0.0.1\n</Location>\n";

/// The shared-tier configuration of both servers: the provider's module, mod_remoteip, the
/// brief's thresholds, and `extra`. Both serve one site, `www.example.com:80`, as two
/// machines of one farm do (here on two loopback ports: the ServerName names the site).
fn server(kind: Kind, backend_port: u16, limits: &str) -> Apache {
    Apache::builder()
        .mpm(Mpm::Event)
        .module(kind.module())
        .module("authz_host")
        .remoteip()
        .config(
            "ServerName www.example.com:80
",
        )
        .config(limits)
        .config("DOSBlockingPeriod 30\nDOSLogDir \"@BLOCKS@\"\n")
        .config(&kind.directive(backend_port))
        .config(STATUS_LOCATION)
        .start()
}

const LIMITS: &str = "DOSPageCount 5\nDOSPageInterval 60\nDOSSiteCount 1000\nDOSSiteInterval 60\n";

fn pair(kind: Kind, backend: &Backend, limits: &str) -> (Apache, Apache) {
    let a = server(kind, backend.port, limits);
    let b = server(kind, backend.port, limits);
    (a, b)
}

/// A client of `server` seen as `ip`, on the shared Host.
fn visitor(server: &Apache, ip: &str) -> Client {
    server.client().host(HOST).ip(ip)
}

/// One request with `Connection: close`, waiting until the server has closed the connection
/// (so log_transaction, and the write-back, have run) plus a margin. Returns the response and
/// the time until the response was read.
fn settled_get(client: &Client, path: &str) -> (Response, Duration) {
    let t0 = Instant::now();
    let mut conn = client
        .try_conn()
        .unwrap_or_else(|e| panic!("connect to port {}: {e}", client.port));
    let r = conn
        .try_send("GET", path, &[("Connection", "close")])
        .unwrap_or_else(|e| panic!("GET {path} on port {}: {e}", client.port));
    let took = t0.elapsed();
    assert!(
        conn.is_closed(Duration::from_secs(5)),
        "port {}: connection not closed after `Connection: close`",
        client.port
    );
    thread::sleep(SETTLE_MARGIN);
    (r, took)
}

/// `?auto` of the status page.
fn status_auto(server: &Apache) -> String {
    let r = server.get("/shield?auto");
    assert_eq!(r.status, 200, "status page: {}", r.body_text());
    r.body_text()
}

/// The value of a `Key: value` line of `?auto`.
fn auto_value(auto: &str, key: &str) -> Option<String> {
    auto.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .map(|v| v.trim().to_owned())
}

/// Lines a server logged about the backend going away (the warning, not the recovery notice).
fn outage_lines(server: &Apache) -> Vec<String> {
    server
        .log_lines("unavailable")
        .into_iter()
        .filter(|l| l.contains("DOSCache"))
        .collect()
}

fn recovery_lines(server: &Apache) -> Vec<String> {
    server.log_lines("available again")
}

/// Requests alternating as `plan` says ('A' or 'B'), each settled; the statuses.
fn walk(a: &Apache, b: &Apache, ip: &str, plan: &str) -> Vec<u16> {
    plan.chars()
        .map(|c| {
            let server = if c == 'A' { a } else { b };
            settled_get(&visitor(server, ip), PAGE).0.status
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Sharing counts and blocks
// ---------------------------------------------------------------------------------------------

/// Steps 1 and 2: a count made on A continues on B; a block made on A refuses on B.
fn counts_and_blocks_are_shared(kind: Kind) {
    let _serial = serial();
    let backend = Backend::start(kind);
    let (a, b) = pair(kind, &backend, LIMITS);

    // 1. Client X: three requests on A, then three on B, each settled before the next. Six
    //    requests exceed DOSPageCount 5 only when B sees A's three.
    let x = "203.0.113.10";
    let statuses = walk(&a, &b, x, "AAABBB");
    println!("{kind:?}: client X, A A A B B B -> {statuses:?}");
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 429],
        "{kind:?}: the 6th request (3rd on B) must be refused from the shared count"
    );
    let record = backend
        .record(x.parse().unwrap())
        .unwrap_or_else(|| panic!("{kind:?}: no decodable record of X in the backend"));
    let blk = record
        .active_block(unix_micros())
        .unwrap_or_else(|| panic!("{kind:?}: X's record holds no active block: {record:?}"));
    println!("{kind:?}: X's shared block: {blk:?}");
    assert_eq!(blk.generation, 1, "first block of X");

    // 2. Client Y blocked on A (B never saw it), then one request on B.
    let y = "203.0.113.20";
    let on_a = walk(&a, &b, y, "AAAAAA");
    println!("{kind:?}: client Y on A -> {on_a:?}");
    assert_eq!(on_a, [200, 200, 200, 200, 200, 429], "{kind:?}: Y on A");
    let (r, _) = settled_get(&visitor(&b, y), PAGE);
    let retry = r.header_u64("Retry-After");
    println!(
        "{kind:?}: client Y on B -> {} Retry-After {retry:?} RateLimit {:?}",
        r.status,
        r.header("RateLimit")
    );
    assert_eq!(
        r.status, 429,
        "{kind:?}: the block made on A must refuse Y on B"
    );
    let retry = retry.unwrap_or_else(|| panic!("429 without an integer Retry-After: {r:?}"));
    assert!(
        (1..=30).contains(&retry),
        "{kind:?}: Retry-After {retry} outside the 30 s block"
    );
    // B did not count Y: it has no local block of Y, only the shared one.
    let auto_b = status_auto(&b);
    assert!(
        !auto_b.lines().any(|l| l.starts_with("Block: ") && l.contains(y)),
        "{kind:?}: B started a block of Y itself; it should only have refused from the record:\n{auto_b}"
    );

    for s in [&a, &b] {
        s.assert_clean_log();
        assert!(
            outage_lines(s).is_empty(),
            "{kind:?}: backend reported unavailable while it was up:\n{}",
            outage_lines(s).join("\n")
        );
    }
}

#[test]
fn memcache_counts_and_blocks_are_shared() {
    counts_and_blocks_are_shared(Kind::Memcache);
}

#[test]
fn redis_counts_and_blocks_are_shared() {
    counts_and_blocks_are_shared(Kind::Redis);
}

// ---------------------------------------------------------------------------------------------
// Outage and recovery
// ---------------------------------------------------------------------------------------------

/// Steps 3 and 4: the backend killed, both servers keep serving fast and say so once; the
/// backend back on the same port, the status page says so within 10 s and sharing resumes
/// (measured and printed): Apache's memcache and redis clients retry a server they marked dead
/// only after 5 s (per worker process), and mod_shield probes a down backend once a second.
fn outage_fails_open_and_sharing_resumes(kind: Kind) {
    let _serial = serial();
    let mut backend = Backend::start(kind);
    let (a, b) = pair(kind, &backend, LIMITS);

    // The tier works before the outage.
    assert_eq!(walk(&a, &b, "203.0.113.30", "AB"), [200, 200]);
    for s in [&a, &b] {
        let auto = status_auto(s);
        let line = auto_value(&auto, "Backend")
            .unwrap_or_else(|| panic!("{kind:?}: no `Backend:` line in ?auto:\n{auto}"));
        assert!(
            line.contains(kind.provider()) && line.contains(&backend.port.to_string()),
            "{kind:?}: `Backend: {line}` should name the provider and its port"
        );
        assert_eq!(
            auto_value(&auto, "BackendState").as_deref(),
            Some("up"),
            "{kind:?}: before the outage:\n{auto}"
        );
    }

    // 3. SIGKILL the backend. A fresh client alternates between the servers for about 2.5 s,
    //    so that each server also retries (at most once a second) during the outage.
    backend.kill();
    let killed = Instant::now();
    let f = "203.0.113.40";
    let mut slowest = Duration::ZERO;
    let mut seen = Vec::new();
    for i in 0..8 {
        let server = if i % 2 == 0 { &a } else { &b };
        // Distinct pages: the fresh client stays under DOSPageCount on each server.
        let page = if i < 4 { "/index.html" } else { "/other.html" };
        let (r, took) = settled_get(&visitor(server, f), page);
        seen.push((
            if i % 2 == 0 { 'A' } else { 'B' },
            r.status,
            took.as_millis(),
        ));
        slowest = slowest.max(took);
        assert_eq!(
            r.status, 200,
            "{kind:?}: request {i} during the outage (fail open)"
        );
        assert!(
            took < Duration::from_secs(1),
            "{kind:?}: request {i} during the outage took {took:?}"
        );
        thread::sleep(Duration::from_millis(250));
    }
    println!(
        "{kind:?}: outage requests (server, status, ms): {seen:?}; slowest {slowest:?}, over {:?}",
        killed.elapsed()
    );
    for (name, s) in [("A", &a), ("B", &b)] {
        assert!(
            s.wait_for_log("unavailable", Duration::from_secs(2)),
            "{kind:?}: {name} logged no `unavailable` warning"
        );
        let lines = outage_lines(s);
        println!("{kind:?}: {name} outage lines: {lines:#?}");
        assert_eq!(
            lines.len(),
            1,
            "{kind:?}: {name} must log exactly one warning for one outage"
        );
        assert!(
            lines[0].contains(":warn]"),
            "{kind:?}: the outage line should be a warning: {}",
            lines[0]
        );
        let auto = status_auto(s);
        assert_eq!(
            auto_value(&auto, "BackendState").as_deref(),
            Some("down"),
            "{kind:?}: {name} during the outage:\n{auto}"
        );
        s.assert_clean_log();
    }

    // 4. Back on the same port. Traffic of other clients keeps coming (as it would), and the
    //    status pages are polled until both servers say the backend is up.
    backend.restart();
    let restarted = Instant::now();
    let mut up_after: [Option<Duration>; 2] = [None, None];
    let mut n = 0u32;
    while up_after.iter().any(Option::is_none) && restarted.elapsed() < Duration::from_secs(15) {
        n += 1;
        let ip = format!("198.51.100.{}", n % 250 + 1);
        for (i, s) in [&a, &b].into_iter().enumerate() {
            let r = visitor(s, &ip).get("/a.txt");
            assert_eq!(r.status, 200, "{kind:?}: traffic after the restart");
            if up_after[i].is_none()
                && auto_value(&status_auto(s), "BackendState").as_deref() == Some("up")
            {
                up_after[i] = Some(restarted.elapsed());
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    println!("{kind:?}: BackendState up again after (A, B) = {up_after:?}");
    for (name, t) in ["A", "B"].into_iter().zip(up_after) {
        let t = t.unwrap_or_else(|| panic!("{kind:?}: {name} still down 15 s after the restart"));
        assert!(
            t <= Duration::from_secs(10),
            "{kind:?}: {name} took {t:?} to use the restarted backend (promised: 10 s)"
        );
    }

    // Fresh clients Z1, Z2, …: the count is shared again once every worker process's
    // memcache/redis client has reconnected. Those clients retry a server they marked dead
    // only 5 s after marking it, and a pooled connection broken by the restart is found dead
    // on its first use after it, so a process can need up to ~5 s after that first use.
    let mut statuses = Vec::new();
    let mut tries = 0;
    while restarted.elapsed() < Duration::from_secs(20) {
        tries += 1;
        statuses = walk(&a, &b, &format!("203.0.113.{}", 100 + tries), "AAABBB");
        if statuses == [200, 200, 200, 200, 200, 429] {
            break;
        }
        thread::sleep(Duration::from_millis(500));
    }
    println!(
        "{kind:?}: sharing resumed {:?} after the restart ({tries} clients tried), last A A A B B B -> {statuses:?}",
        restarted.elapsed()
    );
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 429],
        "{kind:?}: sharing must resume within 20 s after the backend returns"
    );
    for (name, s) in [("A", &a), ("B", &b)] {
        let back = recovery_lines(s);
        println!("{kind:?}: {name} recovery lines: {back:#?}");
        assert_eq!(
            back.len(),
            1,
            "{kind:?}: {name} must log `available again` once"
        );
        // Still one warning for the one outage: no flapping after the return.
        assert_eq!(
            outage_lines(s).len(),
            1,
            "{kind:?}: {name} outage lines after the recovery:\n{}",
            outage_lines(s).join("\n")
        );
        s.assert_clean_log();
    }
}

#[test]
fn memcache_outage_fails_open_and_sharing_resumes() {
    outage_fails_open_and_sharing_resumes(Kind::Memcache);
}

#[test]
fn redis_outage_fails_open_and_sharing_resumes() {
    outage_fails_open_and_sharing_resumes(Kind::Redis);
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Without `LoadModule socache_<name>_module` there is no provider: `apache2 -t` fails and
/// says which directive and which provider.
fn refused_without_provider(kind: Kind) {
    let apache = Apache::builder()
        .mpm(Mpm::Event)
        .config(&kind.directive(11211))
        .build();
    let (ok, text) = apache.config_test();
    println!("{kind:?} without its module: ok={ok}\n{text}");
    assert!(
        !ok,
        "apache2 -t accepted `{}` without the provider module",
        kind.directive(11211)
    );
    assert!(
        text.contains("DOSCache"),
        "the error should name DOSCache:\n{text}"
    );
    assert!(
        text.contains(kind.provider()),
        "the error should name the provider `{}`:\n{text}",
        kind.provider()
    );

    // The same line with the module loaded is accepted (the backend need not be up for -t).
    let with = Apache::builder()
        .mpm(Mpm::Event)
        .module(kind.module())
        .config(&kind.directive(11211))
        .build();
    let (ok, text) = with.config_test();
    assert!(
        ok,
        "apache2 -t refused `{}` with its module:\n{text}",
        kind.directive(11211)
    );
}

#[test]
fn memcache_without_its_module_is_a_configuration_error() {
    refused_without_provider(Kind::Memcache);
}

#[test]
fn redis_without_its_module_is_a_configuration_error() {
    refused_without_provider(Kind::Redis);
}

/// mod_socache_dbm is not safe across processes on its own (`AP_SOCACHE_FLAG_NOTMPSAFE`), so
/// every provider call runs under the `shield-cache` global mutex. Clients on parallel
/// connections to a prefork server (several processes) are all answered and refused at their
/// count: a call that kept the mutex would leave the other processes waiting for it. (The dbm
/// file is in the 0777 blocks dir: the children, running as `nobody`, create it.)
#[test]
fn dbm_provider_calls_take_and_release_the_mutex() {
    let _serial = serial();
    let apache = Apache::builder()
        .mpm(Mpm::Prefork)
        .module("socache_dbm")
        .remoteip()
        .config(LIMITS)
        .config("DOSBlockingPeriod 30\nDOSLogDir \"@BLOCKS@\"\nDOSCache dbm:@BLOCKS@/shield-dbm\n")
        .start();
    let clients: Vec<Client> = (1..=6)
        .map(|i| visitor(&apache, &format!("10.77.0.{i}")))
        .collect();
    let handles: Vec<_> = clients
        .into_iter()
        .map(|client| {
            thread::spawn(move || {
                (0..8)
                    .map(|_| settled_get(&client, PAGE).0.status)
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    for h in handles {
        let statuses = h.join().expect("client thread");
        assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    }
    let served_by: std::collections::HashSet<i32> =
        apache.access_entries().iter().map(|e| e.pid).collect();
    assert!(
        served_by.len() > 1,
        "one process served everything, so the mutex was never contended: {served_by:?}"
    );
    assert!(
        outage_lines(&apache).is_empty(),
        "the dbm tier failed:\n{}",
        apache.error_log()
    );
    assert!(
        fs::read_dir(apache.blocks_dir())
            .expect("read the blocks dir")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("shield-dbm")),
        "no dbm file was written"
    );
}

// ---------------------------------------------------------------------------------------------
// The read-modify-write race, measured
// ---------------------------------------------------------------------------------------------

const THREADS: usize = 4;
const PER_THREAD: usize = 50;

/// One client, 4 threads × 50 requests alternating between A and B at once: every request reads
/// the record and writes it back; concurrent ones overwrite each other's increments. Prints
/// the backend's reads and writes per request and what the shared site count ended at.
fn race_is_measured(kind: Kind) {
    let _serial = serial();
    let backend = Backend::start(kind);
    let limits =
        "DOSPageCount 100000\nDOSPageInterval 60\nDOSSiteCount 100000\nDOSSiteInterval 60\n";
    let (a, b) = pair(kind, &backend, limits);
    for t in 0..THREADS {
        for s in [&a, &b] {
            s.add_file(&format!("t{t}.html"), b"<html><body>race</body></html>\n");
        }
    }
    let ip = "203.0.113.60";
    // The harness's readiness probe writes its record back after its response: let it land
    // before the counters are read.
    thread::sleep(Duration::from_millis(500));
    let before = backend.ops();
    let started = Instant::now();
    let statuses: Vec<u16> = thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (ca, cb) = (visitor(&a, ip), visitor(&b, ip));
                scope.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| {
                            let c = if (i + t) % 2 == 0 { &ca } else { &cb };
                            c.get(&format!("/t{t}.html")).status
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("request thread"))
            .collect()
    });
    let elapsed = started.elapsed();
    // The last write-backs happen after the last responses.
    thread::sleep(Duration::from_millis(500));
    let after = backend.ops();
    let requests = (THREADS * PER_THREAD) as u64;
    assert_eq!(statuses.len() as u64, requests);
    assert!(
        statuses.iter().all(|&s| s == 200),
        "{kind:?}: nothing should block in the race run: {statuses:?}"
    );
    let reads = after.reads - before.reads;
    let hits = after.hits - before.hits;
    let writes = after.writes - before.writes;
    let shared_site = backend.record(ip.parse().unwrap()).map(|mut rec| {
        // Adding 0 to the live window reads its score.
        rec.add(Rule::Site, SITE, "", 0, 60, unix_micros())
    });
    println!(
        "{kind:?} race: {requests} requests ({THREADS} threads x {PER_THREAD}, A/B alternating) in {elapsed:?}; \
         backend reads {reads} ({:.2}/request, {hits} hits), writes {writes} ({:.2}/request); \
         shared site score {shared_site:?} of {requests} (lost to the race: {:?})",
        reads as f64 / requests as f64,
        writes as f64 / requests as f64,
        shared_site.map(|s| requests as i64 - s)
    );
    for s in [&a, &b] {
        let auto = status_auto(s);
        for l in auto
            .lines()
            .filter(|l| l.starts_with("TopSite:") && l.contains(ip))
        {
            println!("{kind:?} race, port {}: {l}", s.port());
        }
        s.assert_clean_log();
    }
    assert!(
        reads > 0 && writes > 0,
        "{kind:?}: the backend was not used at all"
    );
    assert!(
        reads <= requests,
        "{kind:?}: {reads} reads for {requests} requests (at most one each)"
    );
    assert!(
        writes <= requests,
        "{kind:?}: {writes} writes for {requests} requests (at most one each)"
    );
    let score =
        shared_site.unwrap_or_else(|| panic!("{kind:?}: no decodable record of the race client"));
    assert!(
        (1..=requests as i64).contains(&score),
        "{kind:?}: shared site score {score} outside 1..={requests}"
    );
}

#[test]
fn memcache_read_modify_write_race_is_measured() {
    race_is_measured(Kind::Memcache);
}

#[test]
fn redis_read_modify_write_race_is_measured() {
    race_is_measured(Kind::Redis);
}
