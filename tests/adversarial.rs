//! Attacks on the module itself, against the real apache2 on loopback (the block file and
//! behaviour under failure): block files in hostile directories, malformed
//! requests, and keys chosen to collide under a naive hash.

mod common;

use common::*;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// Crash signatures that must never appear (a panic is caught by the module and logged as
/// `internal error in <hook>`; a crashed child shows as `exit signal` / AH00052).
const CRASHES: &[&str] = &["panicked", "internal error in", "exit signal", "AH00052"];

fn assert_no_crash(apache: &Apache) {
    for pattern in CRASHES {
        let lines = apache.log_lines(pattern);
        assert!(
            lines.is_empty(),
            "error log has {pattern:?}:\n{}",
            lines.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Block files in hostile directories
// ---------------------------------------------------------------------------------------------

/// Requests `path` as `ip` until refused: exactly `count` are served, then 429 with a
/// Retry-After; two more requests during the block are refused too.
fn get_blocked(apache: &Apache, ip: &str, path: &str, count: usize) {
    let client = apache.client().ip(ip);
    for i in 0..count {
        let r = client.get(path);
        assert!(
            r.status == 200 || r.status == 404,
            "{ip}: request {} of {path} answered {}",
            i + 1,
            r.status
        );
    }
    let r = client.get(path);
    assert_eq!(r.status, 429, "{ip}: request {} not refused", count + 1);
    assert!(
        r.header_u64("Retry-After").is_some_and(|s| s >= 1),
        "{ip}: 429 without Retry-After: {:?}",
        r.headers
    );
    for _ in 0..2 {
        assert_eq!(client.get(path).status, 429, "{ip}: block not held");
    }
}

/// Names in `dir` (empty when it does not exist).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Waits for the block-start line of `ip` (written before the block file is attempted, by
/// the same worker), then for a moment more so a warning would be there too.
fn wait_block_logged(apache: &Apache, ip: &str) {
    let started = format!("blocking period started for IP: {ip} (");
    assert!(
        apache.wait_for_log(&started, Duration::from_secs(3)),
        "no block line for {ip}:\n{}",
        apache.error_log()
    );
    thread::sleep(Duration::from_millis(200));
}

fn warnings_for(apache: &Apache, file: &Path) -> Vec<String> {
    apache.log_lines(&format!("cannot write block file {}", file.display()))
}

/// A block file must be a regular file (not a link) of three lines naming the rule and URI.
fn assert_block_file(file: &Path, uri_line: &str) {
    let meta = fs::symlink_metadata(file)
        .unwrap_or_else(|e| panic!("block file {} missing: {e}", file.display()));
    assert!(
        meta.file_type().is_file(),
        "{} is not a regular file: {:?}",
        file.display(),
        meta.file_type()
    );
    assert_eq!(meta.nlink(), 1, "{} is still hard-linked", file.display());
    let text = fs::read_to_string(file).expect("read block file");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "block file {}:\n{text}", file.display());
    assert!(lines[0].parse::<u32>().is_ok(), "pid line: {text}");
    assert!(lines[1].starts_with("page 1 "), "rule line: {text}");
    assert_eq!(lines[2], uri_line, "uri line: {text}");
}

/// A file outside the block directory that a worker (user nobody) could write if it
/// followed a link to it.
struct Victim(PathBuf);

impl Victim {
    fn new(tag: &str) -> Victim {
        let path = std::env::temp_dir().join(format!(
            "shield-victim-{tag}-{}-{}",
            std::process::id(),
            unix_now()
        ));
        fs::write(&path, "precious contents\n").expect("write victim");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).expect("chmod victim");
        Victim(path)
    }

    fn assert_untouched(&self) {
        assert_eq!(
            fs::read_to_string(&self.0).expect("victim still readable"),
            "precious contents\n",
            "{} was written through the block file",
            self.0.display()
        );
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// One server, its `DOSLogDir` made hostile in turn: missing, read-only, the block file's
/// name taken by a directory, by a symlink to a file outside, by a dangling symlink, by a hard
/// link, and a URI that tries to add lines. Every triggering request is still refused, a
/// failure is explained by exactly one warning, and nothing outside the directory is written.
#[test]
fn block_file_in_hostile_directories() {
    let mut apache = Apache::builder()
        .remoteip()
        .config(
            "DOSPageCount 2\nDOSPageInterval 60\nDOSSiteCount 100000\nDOSSiteInterval 60\n\
             DOSBlockingPeriod 30\nDOSLogDir @ROOT@/bdir",
        )
        .start();
    let dir = apache.root().join("bdir");
    let file = |ip: &str| dir.join(format!("dos-{ip}"));

    // 1. The directory does not exist.
    let ip = "198.51.100.1";
    get_blocked(&apache, ip, "/page.html", 2);
    wait_block_logged(&apache, ip);
    assert_eq!(warnings_for(&apache, &file(ip)).len(), 1, "missing dir");
    assert!(!dir.exists(), "the module created DOSLogDir");

    // 2. Read-only for the workers (root-owned 0555 while they run as nobody; when the tests
    //    do not run as root, the workers are the owner and 0555 still forbids writing).
    fs::create_dir(&dir).expect("mkdir bdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).expect("chmod 0555");
    let ip = "198.51.100.2";
    get_blocked(&apache, ip, "/page.html", 2);
    wait_block_logged(&apache, ip);
    assert_eq!(warnings_for(&apache, &file(ip)).len(), 1, "read-only dir");
    assert!(
        names(&dir).is_empty(),
        "files in read-only dir: {:?}",
        names(&dir)
    );

    // 3. The block file's name is a directory: the rename fails (the "disk full" stand-in).
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod 0777");
    let ip = "198.51.100.3";
    fs::create_dir(file(ip)).expect("mkdir dos-<ip>");
    get_blocked(&apache, ip, "/page.html", 2);
    wait_block_logged(&apache, ip);
    assert_eq!(warnings_for(&apache, &file(ip)).len(), 1, "name is a dir");
    assert!(
        file(ip).is_dir(),
        "the directory named like the block file is gone"
    );
    assert_eq!(
        names(&dir),
        vec![format!("dos-{ip}")],
        "temporary files left behind"
    );

    // 4. A symlink to a file outside: replaced by a regular file, target untouched.
    let victim = Victim::new("link");
    let ip = "198.51.100.4";
    std::os::unix::fs::symlink(&victim.0, file(ip)).expect("symlink");
    get_blocked(&apache, ip, "/page.html", 2);
    wait_block_logged(&apache, ip);
    victim.assert_untouched();
    assert_block_file(&file(ip), "/page.html");
    assert!(warnings_for(&apache, &file(ip)).is_empty());

    // 5. A dangling symlink: its target is never created.
    let missing = std::env::temp_dir().join(format!(
        "shield-victim-missing-{}-{}",
        std::process::id(),
        unix_now()
    ));
    let ip = "198.51.100.5";
    std::os::unix::fs::symlink(&missing, file(ip)).expect("dangling symlink");
    get_blocked(&apache, ip, "/page.html", 2);
    wait_block_logged(&apache, ip);
    assert!(
        fs::symlink_metadata(&missing).is_err(),
        "{} was created through a dangling symlink",
        missing.display()
    );
    assert_block_file(&file(ip), "/page.html");

    // 6. A hard link to a file elsewhere on the same file system: the link is replaced, the
    //    file keeps its contents.
    let linked = Victim::new("hardlink");
    let ip = "198.51.100.6";
    if fs::hard_link(&linked.0, file(ip)).is_ok() {
        get_blocked(&apache, ip, "/page.html", 2);
        wait_block_logged(&apache, ip);
        linked.assert_untouched();
        assert_eq!(fs::metadata(&linked.0).expect("victim").nlink(), 1);
        assert_block_file(&file(ip), "/page.html");
    } else {
        // /tmp on another file system than the server root: link inside the root instead.
        eprintln!("hard link across file systems refused; linking inside the server root");
        let inside = Victim(apache.root().join("inside-victim"));
        fs::write(&inside.0, "precious contents\n").expect("write");
        fs::hard_link(&inside.0, file(ip)).expect("hard link");
        get_blocked(&apache, ip, "/page.html", 2);
        wait_block_logged(&apache, ip);
        inside.assert_untouched();
        assert_block_file(&file(ip), "/page.html");
    }

    // 7. A URI that would add lines and fields to the block file (404s count too).
    let ip = "198.51.100.7";
    get_blocked(&apache, ip, "/nope%0Afake%20line%0D%09x", 2);
    wait_block_logged(&apache, ip);
    assert_block_file(&file(ip), "/nope%0Afake%20line%0D%09x");

    // Nothing else failed, and no temporary file survived.
    let all_warnings = apache.log_lines("cannot write block file");
    assert_eq!(all_warnings.len(), 3, "{}", all_warnings.join("\n"));
    let leftovers: Vec<String> = names(&dir)
        .into_iter()
        .filter(|n| !n.starts_with("dos-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    assert_eq!(apache.get("/index.html").status, 200);
    assert_no_crash(&apache);
    apache.stop();
}

// ---------------------------------------------------------------------------------------------
// Malformed requests
// ---------------------------------------------------------------------------------------------

/// Sends raw bytes on a fresh connection and reads until the server closes it; the status of
/// the first response, or None when there is none (HTTP/0.9, or the connection was dropped).
fn raw(port: u16, request: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.set_write_timeout(Some(Duration::from_secs(5))).ok();
    // The server may answer and close before reading all of a huge request.
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let head = String::from_utf8_lossy(&buf[..buf.len().min(200)]).into_owned();
    head.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
}

fn request(line: &[u8], headers: &[&[u8]]) -> Vec<u8> {
    let mut r = line.to_vec();
    r.extend_from_slice(b"\r\n");
    for h in headers {
        r.extend_from_slice(h);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"Connection: close\r\n\r\n");
    r
}

/// A raw request line, its headers, and the status it must get (None: any answer, or none).
type Case<'a> = (Vec<u8>, Vec<&'a [u8]>, Option<u16>);

/// Malformed or hostile requests never panic the module nor crash a child, and the server
/// keeps serving after each.
#[test]
fn malformed_requests_never_crash() {
    let mut apache = Apache::builder()
        .remoteip()
        .forbid("internal error in")
        .config(
            "DOSPageCount 1000\nDOSPageInterval 60\nDOSSiteCount 100000\nDOSSiteInterval 60\n\
             DOSCanonical off\nDOSIPv6Prefix 128",
        )
        .start();
    let port = apache.port();
    let long_uri = format!("GET /{} HTTP/1.1", "a".repeat(100 * 1024));
    let long_host = format!("Host: {}", "h".repeat(9000));
    let long_query = format!("GET /index.html?{} HTTP/1.1", "q=%ff&".repeat(1200));
    let long_xff = format!("X-Forwarded-For: {}", "1".repeat(4000));
    let host = b"Host: 127.0.0.1".as_slice();
    let cases: Vec<Case> = vec![
        (long_uri.into_bytes(), vec![host], Some(414)),
        (b"GET /%00 HTTP/1.1".to_vec(), vec![host], Some(404)),
        (b"GET /a%00b.html HTTP/1.1".to_vec(), vec![host], Some(404)),
        (
            b"GET /%ff%fe%c3%28.html HTTP/1.1".to_vec(),
            vec![host],
            Some(404),
        ),
        (b"GET /%zz HTTP/1.1".to_vec(), vec![host], Some(400)),
        (
            b"GET /index.html?%ff%00=%c3%28 HTTP/1.1".to_vec(),
            vec![host],
            Some(200),
        ),
        (b"GET /\xff\xfe.html HTTP/1.1".to_vec(), vec![host], None),
        (long_query.into_bytes(), vec![host], Some(200)),
        (
            b"GET /index.html HTTP/1.1".to_vec(),
            vec![b"Host: !!!\x01###"],
            None,
        ),
        (
            b"GET /index.html HTTP/1.1".to_vec(),
            vec![b"Host: :80"],
            None,
        ),
        (
            b"GET /index.html HTTP/1.1".to_vec(),
            vec![long_host.as_bytes()],
            Some(400),
        ),
        (
            b"GET /index.html HTTP/1.1".to_vec(),
            vec![b"Host: [::1"],
            None,
        ),
        (
            b"GET /index.html HTTP/1.1".to_vec(),
            vec![b"Host: [fe80::1%eth0]:80"],
            None,
        ),
        (
            b"GET /index.html HTTP/1.1".to_vec(),
            vec![b"Host: \xc3\x84B.Example.:8080"],
            None,
        ),
        (
            b"GET /index.html HTTP/1.1".to_vec(),
            vec![b"Host: a b"],
            None,
        ),
        (b"GET /index.html HTTP/1.1".to_vec(), vec![b"Host:"], None),
        (
            b"GET /index.html HTTP/1.1".to_vec(),
            vec![b"Host: EXAMPLE.org", b"Host: b"],
            None,
        ),
        (b"GET /index.html HTTP/1.0".to_vec(), vec![], Some(200)),
        (
            b"GET http://[::1%25eth0]:80/index.html HTTP/1.1".to_vec(),
            vec![host],
            None,
        ),
        (b"OPTIONS * HTTP/1.1".to_vec(), vec![host], Some(200)),
        (b"FOO /index.html HTTP/1.1".to_vec(), vec![host], None),
        (
            b"GET /index.html HTTP/1.1".to_vec(),
            vec![host, b"X-Forwarded-For: fe80::1%eth0"],
            Some(200),
        ),
        (
            b"GET /index.html HTTP/1.1".to_vec(),
            vec![host, b"X-Forwarded-For: fe80::1%"],
            None,
        ),
        (
            b"GET /index.html HTTP/1.1".to_vec(),
            vec![host, b"X-Forwarded-For: not-an-ip"],
            None,
        ),
        (
            b"GET /index.html HTTP/1.1".to_vec(),
            vec![host, b"X-Forwarded-For: 1.2.3.4, ::garbage, 999.1.1.1"],
            None,
        ),
        (
            b"GET /index.html HTTP/1.1".to_vec(),
            vec![host, b"X-Forwarded-For: ::ffff:192.0.2.9"],
            Some(200),
        ),
        (
            b"GET /index.html HTTP/1.1".to_vec(),
            vec![host, b"X-Forwarded-For: [2001:db8::1]:443"],
            None,
        ),
        (
            b"GET /index.html HTTP/1.1".to_vec(),
            vec![host, long_xff.as_bytes()],
            None,
        ),
        (
            b"GET /index.html HTTP/1.1".to_vec(),
            vec![host, b"X-Forwarded-For: \xff\xfe"],
            None,
        ),
    ];
    let mut statuses = Vec::new();
    for (line, headers, want) in &cases {
        let extra: Vec<String> = headers
            .iter()
            .filter(|h| **h != host)
            .map(|h| String::from_utf8_lossy(&h[..h.len().min(40)]).into_owned())
            .collect();
        let shown = format!(
            "{} {}",
            String::from_utf8_lossy(&line[..line.len().min(50)]),
            extra.join(" | ")
        );
        let got = raw(port, &request(line, headers));
        if let Some(want) = want {
            assert_eq!(got, Some(*want), "{shown}");
        }
        assert_ne!(got, Some(500), "{shown}: internal server error");
        statuses.push(format!("{shown:?} -> {got:?}"));
        // Still serving after each one.
        assert_eq!(
            apache.get("/index.html").status,
            200,
            "not serving after {shown}"
        );
    }
    // HTTP/0.9 (no Host, no headers, no status line in the answer).
    let _ = raw(port, b"GET /index.html\r\n");
    eprintln!("{}", statuses.join("\n"));
    assert_eq!(apache.get("/index.html").status, 200);
    assert_eq!(
        apache.client().ip("fe80::1%eth0").get("/style.css").status,
        200
    );
    assert_no_crash(&apache);
    apache.stop();
}

// ---------------------------------------------------------------------------------------------
// Colliding keys
// ---------------------------------------------------------------------------------------------

/// mod_evasive's table hash (`h = 5h + c` over the key).
fn naive_hash(s: &str) -> u64 {
    s.bytes()
        .fold(0u64, |h, c| h.wrapping_mul(5).wrapping_add(u64::from(c)))
}

/// `n` distinct query strings of equal length and equal naive hash: each is 11 blocks of
/// "AF" or "BA" (5·'A' + 'F' = 5·'B' + 'A'), the Klink–Wälde construction.
fn colliding_queries(round: u32, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let blocks: String = (0..11)
                .map(|bit| if i >> bit & 1 == 1 { "BA" } else { "AF" })
                .collect();
            format!("r{round}{blocks}")
        })
        .collect()
}

/// `n` random query strings of the same length as the colliding ones.
fn random_queries(round: u32, n: usize, seed: &mut u64) -> Vec<String> {
    (0..n)
        .map(|_| {
            let s: String = (0..22)
                .map(|_| {
                    *seed ^= *seed << 13;
                    *seed ^= *seed >> 7;
                    *seed ^= *seed << 17;
                    char::from(b'A' + (*seed % 26) as u8)
                })
                .collect();
            format!("r{round}{s}")
        })
        .collect()
}

/// Time to send `keys` (query, client) on one keep-alive connection; every answer is 200.
fn run(apache: &Apache, keys: &[(String, String)]) -> Duration {
    let mut conn = apache.conn();
    let t0 = Instant::now();
    for (query, ip) in keys {
        let r = conn.send(
            "GET",
            &format!("/a.txt?{query}"),
            &[("X-Forwarded-For", ip.as_str())],
        );
        assert_eq!(r.status, 200, "{query} from {ip}");
    }
    t0.elapsed()
}

/// Keys that all collide under mod_evasive's hash, or that differ only in the low bits of
/// one IPv6 subnet (DOSIPv6Prefix 128), cost no more than random keys: the table's hash is
/// keyed, so attackers cannot pile keys into one bucket.
#[test]
fn colliding_keys_do_not_slow_the_server() {
    const N: usize = 2000;
    let mut apache = Apache::builder()
        .remoteip()
        .config(
            "DOSPageCount 1000000\nDOSPageInterval 60\nDOSSiteCount 1000000\n\
             DOSSiteInterval 60\nDOSCanonical off\nDOSIPv6Prefix 128\n\
             MaxKeepAliveRequests 0\nKeepAliveTimeout 30",
        )
        .start();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let one_ip = "203.0.113.50".to_string();
    let random_ip = |seed: &mut u64| {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let a = *seed;
        format!(
            "2001:db8:{:x}:{:x}::{:x}:{:x}",
            a >> 48,
            (a >> 32) & 0xffff,
            (a >> 16) & 0xffff,
            a & 0xffff
        )
    };
    // Fill the tables first, so that every measured run pays for evictions alike.
    let warm: Vec<(String, String)> = random_queries(0, 3000, &mut seed)
        .into_iter()
        .map(|q| (q, random_ip(&mut seed)))
        .collect();
    run(&apache, &warm);

    let mut best = [Duration::MAX; 4];
    for round in 1..=2u32 {
        let colliding_paths: Vec<(String, String)> = colliding_queries(round, N)
            .into_iter()
            .map(|q| (q, one_ip.clone()))
            .collect();
        let hash = naive_hash(&format!("{one_ip}_/a.txt?{}", colliding_paths[0].0));
        assert!(colliding_paths
            .iter()
            .all(|(q, ip)| naive_hash(&format!("{ip}_/a.txt?{q}")) == hash));
        let random_paths: Vec<(String, String)> = random_queries(round, N, &mut seed)
            .into_iter()
            .map(|q| (q, one_ip.clone()))
            .collect();
        // One /112, consecutive addresses, each its own client with DOSIPv6Prefix 128.
        let subnet_ips: Vec<(String, String)> = (0..N)
            .map(|i| {
                (
                    format!("r{round}same"),
                    format!("2001:db8:5:{round}::{i:x}"),
                )
            })
            .collect();
        let random_ips: Vec<(String, String)> = (0..N)
            .map(|_| (format!("r{round}same"), random_ip(&mut seed)))
            .collect();
        let runs = [&random_paths, &colliding_paths, &random_ips, &subnet_ips];
        for (slot, keys) in runs.iter().enumerate() {
            best[slot] = best[slot].min(run(&apache, keys));
        }
    }
    let [random_paths, colliding_paths, random_ips, subnet_ips] = best;
    eprintln!(
        "{N} requests each (best of 2): random paths {random_paths:?}, colliding paths \
         {colliding_paths:?}; random IPv6 clients {random_ips:?}, one-subnet clients \
         {subnet_ips:?}"
    );
    let slack = Duration::from_millis(100);
    assert!(
        colliding_paths <= random_paths * 3 + slack,
        "colliding paths {colliding_paths:?} vs random {random_paths:?}"
    );
    assert!(
        subnet_ips <= random_ips * 3 + slack,
        "one-subnet clients {subnet_ips:?} vs random {random_ips:?}"
    );
    assert_no_crash(&apache);
    apache.stop();
}

/// An IPv6 zone id in the forwarded address (`fe80::1%eth0`) is not a different client:
/// whatever mod_remoteip makes of it, the module counts the address without the zone.
#[test]
fn zone_id_client_is_the_address_without_zone() {
    let mut apache = Apache::builder()
        .remoteip()
        .config(
            "DOSPageCount 2\nDOSPageInterval 60\nDOSSiteCount 100000\nDOSSiteInterval 60\n\
             DOSBlockingPeriod 30\nDOSIPv6Prefix 128\nDOSLogDir @BLOCKS@",
        )
        .start();
    let zoned = apache.client().ip("fe80::1%eth0");
    assert_eq!(zoned.get("/page.html").status, 200);
    assert_eq!(zoned.get("/page.html").status, 200);
    // The access log is written after the response: wait for both lines.
    let deadline = Instant::now() + Duration::from_secs(3);
    let seen: Vec<String> = loop {
        let seen: Vec<String> = apache
            .access_entries()
            .into_iter()
            .filter(|e| e.path == "/page.html")
            .map(|e| e.client)
            .collect();
        if seen.len() >= 2 || Instant::now() > deadline {
            break seen;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(seen.len(), 2, "access log: {}", apache.access_log());
    eprintln!("mod_remoteip turned X-Forwarded-For fe80::1%eth0 into {seen:?}");
    let third = apache.client().ip("fe80::1").get("/page.html").status;
    if seen.iter().all(|c| c.starts_with("fe80::1")) {
        // The zone reached the module: same client as plain fe80::1, so the third request
        // (the first without zone) crosses DOSPageCount 2.
        assert_eq!(third, 429, "fe80::1%eth0 and fe80::1 counted apart");
        assert!(apache.blocks_dir().join("dos-fe80::1").is_file());
    } else {
        // mod_remoteip refused the address: the proxy (127.0.0.1) stays the client.
        assert!(seen.iter().all(|c| c == "127.0.0.1"), "{seen:?}");
        assert_eq!(third, 200);
    }
    assert_no_crash(&apache);
    apache.stop();
}
