//! Every request counted once, wherever httpd ends it, against the real apache2: a response
//! mod_cache serves from its quick handler, the requests httpd rejects while reading them, a
//! file asked with PATH_INFO, `/` and its DirectoryIndex file, TRACE and `OPTIONS *`.
//!
//! Requests httpd rejects while reading them never reach mod_remoteip (it runs in
//! post_read_request, which httpd skips for them), so those tests tell clients apart by their
//! loopback source address, not by `X-Forwarded-For`.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

const PAGE_COUNT: usize = 5;

fn base_config(extra: &str) -> String {
    format!(
        "DOSPageCount {PAGE_COUNT}\nDOSPageInterval 60\nDOSSiteCount 1000\n\
         DOSSiteInterval 60\nDOSBlockingPeriod 60\nDOSLogDir @BLOCKS@\n{extra}"
    )
}

/// The statuses of `got` are `served` for the first `count`, 429 after.
fn assert_served_then_refused(what: &str, got: &[u16], count: usize, served: u16) {
    let want: Vec<u16> = (0..got.len())
        .map(|i| if i < count { served } else { 429 })
        .collect();
    assert_eq!(got, want, "{what}");
}

// ---------------------------------------------------------------------------------------------
// mod_cache's quick handler
// ---------------------------------------------------------------------------------------------

/// A server with mod_cache + mod_cache_disk caching everything (CacheQuickHandler on, the
/// default), `X-Cache` telling hits from misses.
fn cached_server(files: &[(&str, &[u8])]) -> Apache {
    let mut builder = Apache::builder()
        .remoteip()
        .module("cache")
        .module("cache_disk")
        .config(&base_config(
            "CacheRoot @ROOT@/cache\nCacheEnable disk /\nCacheHeader on\n\
             CacheMaxFileSize 4000000\nCacheIgnoreNoLastMod On\nCacheDefaultExpire 600\n",
        ));
    for (path, bytes) in files {
        builder = builder.file(path, bytes);
    }
    let mut apache = builder.build();
    let cache = apache.root().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    // An old Last-Modified, so the cache's heuristic freshness (a tenth of the file's age)
    // keeps the copy fresh for the whole test.
    let touched = std::process::Command::new("touch")
        .args(["-d", "2 days ago"])
        .args(
            std::fs::read_dir(apache.docs())
                .unwrap()
                .map(|e| e.unwrap().path()),
        )
        .status()
        .unwrap();
    assert!(touched.success());
    apache.start();
    apache
}

/// Fetches `path` from a client of its own until mod_cache answers it from the cache.
fn warm(apache: &Apache, path: &str) {
    let warmer = apache.client().ip("198.51.100.250");
    for _ in 0..4 {
        let r = warmer.get(path);
        assert_eq!(r.status, 200, "warming {path}");
        if r.header("X-Cache").is_some_and(|v| v.starts_with("HIT")) {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let r = warmer.get(path);
    panic!("{path} never served from the cache: {:?}", r.headers);
}

#[test]
fn a_page_served_from_the_cache_is_counted_and_refused_at_the_count() {
    let apache = cached_server(&[]);
    warm(&apache, "/page.html");
    let client = apache.client().ip("192.0.2.10");
    let responses: Vec<Response> = (0..8).map(|_| client.get("/page.html")).collect();
    let got: Vec<u16> = responses.iter().map(|r| r.status).collect();
    eprintln!("cached page, 8 GETs: {got:?}");
    assert_served_then_refused("cached page", &got, PAGE_COUNT, 200);
    for r in &responses[..PAGE_COUNT] {
        assert!(
            r.header("X-Cache").is_some_and(|v| v.starts_with("HIT")),
            "served from the cache: {:?}",
            r.header("X-Cache")
        );
        assert_eq!(r.body_text(), "<html><body>page</body></html>\n");
    }
    assert!(
        responses[PAGE_COUNT].header_u64("Retry-After").is_some(),
        "{:?}",
        responses[PAGE_COUNT].headers
    );
    // The refusal is a whole 429 response, not the cached page behind a 429 status line.
    assert!(
        !responses[PAGE_COUNT]
            .body_text()
            .contains("<body>page</body>"),
        "{}",
        responses[PAGE_COUNT].body_text()
    );
}

#[test]
fn thirty_parallel_readers_of_a_cached_file_get_the_count() {
    const SIZE: usize = 2 << 20;
    let big = vec![b'z'; SIZE];
    let apache = cached_server(&[("big.bin", &big)]);
    warm(&apache, "/big.bin");
    let start = Arc::new(Barrier::new(30));
    let port = apache.port();
    let readers: Vec<_> = (0..30)
        .map(|_| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                slow_get(port, "/big.bin", "192.0.2.20")
            })
        })
        .collect();
    let results: Vec<(u16, usize)> = readers.into_iter().map(|t| t.join().unwrap()).collect();
    let served = results.iter().filter(|(s, _)| *s == 200).count();
    let refused = results.iter().filter(|(s, _)| *s == 429).count();
    eprintln!(
        "30 parallel slow readers of a cached 2 MiB file: {served} served, {refused} refused"
    );
    assert_eq!(
        (served, refused),
        (PAGE_COUNT, 30 - PAGE_COUNT),
        "{results:?}"
    );
    for (status, len) in results {
        if status == 200 {
            assert_eq!(len, SIZE);
        } else {
            assert!(len < 4096, "a refusal carries no file: {len} bytes");
        }
    }
}

/// A GET from `ip` (X-Forwarded-For) whose reader waits a second after the first bytes
/// before it reads the rest: (status, body length). A server that counts only after the
/// response is written sees none of 30 such readers finish before all have been answered.
fn slow_get(port: u16, path: &str, ip: &str) -> (u16, usize) {
    let mut stream = Client::new(port).conn().into_stream();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: {ip}\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).unwrap();
    let mut first = [0u8; 256];
    let n = stream.read(&mut first).unwrap();
    thread::sleep(Duration::from_secs(1));
    let mut out = first[..n].to_vec();
    stream.read_to_end(&mut out).unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&out[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, out.len() - split - 4)
}

// ---------------------------------------------------------------------------------------------
// Requests httpd rejects while reading them
// ---------------------------------------------------------------------------------------------

/// Sends raw bytes on a new connection from `source` and returns the response's status (0:
/// none) once the server has closed the connection, i.e. after its log_transaction ran.
fn raw_status(port: u16, source: Ipv4Addr, bytes: &[u8]) -> u16 {
    let mut stream = Client::new(port).source(source).conn().into_stream();
    stream.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The ways to be rejected while being read, each with the status httpd answers.
fn rejected_kinds() -> Vec<(&'static str, Vec<u8>, u16)> {
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
    let long_header = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(9000)
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
        (0..101)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    vec![
        (
            "garbage request line",
            b"\x01\x02garbage\r\n\r\n".to_vec(),
            400,
        ),
        ("414 URI too long", long_uri.into_bytes(), 414),
        ("oversized header", long_header.into_bytes(), 400),
        ("101 headers", many_headers.into_bytes(), 400),
        (
            "invalid Host",
            b"GET / HTTP/1.1\r\nHost: a b/c\r\n\r\n".to_vec(),
            400,
        ),
        (
            "HTTP/1.1 without Host",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "Expect: junk",
            b"GET / HTTP/1.1\r\nHost: a\r\nExpect: junk\r\n\r\n".to_vec(),
            417,
        ),
        (
            "header line without colon",
            b"GET / HTTP/1.1\r\nHost: a\r\nNoColonHere\r\n\r\n".to_vec(),
            400,
        ),
    ]
}

#[test]
fn requests_httpd_rejects_while_reading_them_are_counted_with_their_penalty() {
    let apache = Apache::builder()
        .config(
            "DOSPageCount 1000\nDOSPageInterval 60\nDOSSiteCount 150\nDOSSiteInterval 60\n\
             DOSBlockingPeriod 60\nDOSLogDir @BLOCKS@\nDOSSiteStatusPenalty 400 100\n\
             DOSSiteStatusPenalty 414 100\nDOSSiteStatusPenalty 417 100\n",
        )
        .start();
    let mut got = Vec::new();
    let mut want = Vec::new();
    for (i, (what, bytes, status)) in rejected_kinds().into_iter().enumerate() {
        // A client of its own per kind (127.0.0.2 is the harness's probe).
        let source = Ipv4Addr::new(127, 0, 0, 10 + i as u8);
        let first = raw_status(apache.port(), source, &bytes);
        let second = raw_status(apache.port(), source, &bytes);
        // 1 + 100 per rejected request: 202 > 150 after the second, on any connection.
        let next = Client::new(apache.port()).source(source).get("/index.html");
        got.push((what, first, second, next.status));
        want.push((what, status, status, 429));
    }
    eprintln!("rejected twice, then a good request: {got:?}");
    assert_eq!(got, want, "(kind, httpd's answers, the next good request)");
}

#[test]
fn one_rejected_request_is_counted_once() {
    // With no penalty, a rejected request counts 1 like any other: DOSSiteCount 3 lets three
    // garbage requests and refuses the fourth request of the client.
    let apache = Apache::builder()
        .config(
            "DOSPageCount 1000\nDOSPageInterval 60\nDOSSiteCount 3\nDOSSiteInterval 60\n\
             DOSBlockingPeriod 60\nDOSLogDir @BLOCKS@\n",
        )
        .start();
    let source = Ipv4Addr::new(127, 0, 0, 30);
    for _ in 0..3 {
        assert_eq!(raw_status(apache.port(), source, b"junk\r\n\r\n"), 400);
    }
    let next = Client::new(apache.port()).source(source).get("/index.html");
    assert_eq!(next.status, 429);
    // A fresh client on the same server is not touched.
    let other = Client::new(apache.port())
        .source(Ipv4Addr::new(127, 0, 0, 31))
        .get("/index.html");
    assert_eq!(other.status, 200);
}

// ---------------------------------------------------------------------------------------------
// PATH_INFO, DirectoryIndex, TRACE, OPTIONS *
// ---------------------------------------------------------------------------------------------

#[test]
fn a_files_rule_counts_the_file_whatever_path_info_follows() {
    let apache = Apache::builder()
        .remoteip()
        .file("xmlrpc.php", b"xmlrpc\n")
        .file("fast", b"fast\n")
        .config(&base_config(
            "<Files xmlrpc.php>\n  DOSPageCount 3\n  AcceptPathInfo On\n</Files>\n\
             <Files fast>\n  AcceptPathInfo On\n</Files>\n",
        ))
        .start();
    let client = apache.client().ip("192.0.2.40");
    let got: Vec<u16> = (0..8)
        .map(|i| client.get(&format!("/xmlrpc.php/{i}")).status)
        .collect();
    eprintln!("/xmlrpc.php/N against <Files> DOSPageCount 3: {got:?}");
    assert_served_then_refused("xmlrpc.php with PATH_INFO", &got, 3, 200);
    // Any file with PATH_INFO (a script routing by it, too) is one page: the file.
    let other = apache.client().ip("192.0.2.41");
    let got: Vec<u16> = (0..8)
        .map(|i| other.get(&format!("/fast/{i}")).status)
        .collect();
    eprintln!("/fast/N against DOSPageCount 5: {got:?}");
    assert_served_then_refused("file with PATH_INFO", &got, PAGE_COUNT, 200);
}

#[test]
fn the_root_and_its_directory_index_file_are_one_page() {
    let apache = Apache::builder()
        .remoteip()
        .config(&base_config(""))
        .start();
    let client = apache.client().ip("192.0.2.50");
    let got: Vec<u16> = (0..12)
        .map(|i| {
            client
                .get(if i % 2 == 0 { "/" } else { "/index.html" })
                .status
        })
        .collect();
    eprintln!("/ and /index.html alternately: {got:?}");
    assert_served_then_refused("/ and /index.html", &got, PAGE_COUNT, 200);
}

#[test]
fn trace_and_options_star_count_like_a_get() {
    let apache = Apache::builder()
        .remoteip()
        .config(&base_config("TraceEnable on\n"))
        .start();
    let tracer = apache.client().ip("192.0.2.60");
    let got: Vec<u16> = (0..8)
        .map(|_| tracer.request("TRACE", "/index.html", &[]).status)
        .collect();
    eprintln!("TRACE: {got:?}");
    assert_served_then_refused("TRACE", &got, PAGE_COUNT, 200);
    let asker = apache.client().ip("192.0.2.61");
    let got: Vec<u16> = (0..8)
        .map(|_| asker.request("OPTIONS", "*", &[]).status)
        .collect();
    eprintln!("OPTIONS *: {got:?}");
    assert_served_then_refused("OPTIONS *", &got, PAGE_COUNT, 200);
}
