//! A flood of one-request clients against the store: it must not push an abuser's count or
//! an active block out, and when it does push live records out the store says so.
//!
//! The flood is as fast as this machine drives apache2: 8 threads, each on a keep-alive
//! connection, every request from another address (mod_remoteip, `X-Forwarded-For`).
//!
//! A binary of its own, its tests one at a time: a flood drives this machine flat out, and a
//! real-Apache test beside it measures a starved machine, not the product. Seen beside the
//! fastest flood: every worker of another server stalled for 200–350 ms here (apache2's own
//! threads waiting for a CPU), and for over 5 s on a CI machine. Cargo runs test binaries one
//! after another, so nothing else runs beside these.

mod common;

use common::*;
use mod_shield::store::layout::SUBCACHE_BYTES;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const FLOOD_THREADS: usize = 8;
/// The abuser test's store: 88 sub-caches, about 30 ms to turn one over at 45,000 new
/// clients a second.
const STORE_BYTES: usize = 256 * 1024;

/// The status page (its own requests are not counted) and settings that keep the flood's
/// addresses under every site and prefix limit: only page records and blocks matter here.
fn server(extra: &str) -> Apache {
    Apache::builder()
        .remoteip()
        .file("search", b"results\n")
        .file("f", b"f\n")
        .config(&format!(
            "MaxKeepAliveRequests 0\n\
             DOSSiteCount 100000000\nDOSSiteInterval 60\n\
             DOSLogDir @BLOCKS@\n\
             {extra}\n\
             {STATUS_LOCATION}"
        ))
        .start()
}

/// The `?auto` value of `key` (a number).
fn auto(apache: &Apache, key: &str) -> u64 {
    let text = apache.get("/shield-status?auto").body_text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in ?auto:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// The address of flood client `n`: one-request clients, each new (198.18.0.0/15 and up,
/// the benchmarking range, as header text: nothing is sent anywhere but loopback).
fn flood_ip(n: u32) -> String {
    let a = 0xc612_0000u32.wrapping_add(n);
    std::net::Ipv4Addr::from(a).to_string()
}

/// Sends `GET /f`, each from a new address, on keep-alive connections until `stop`; returns
/// how many requests were answered.
fn flood(port: u16, stop: &AtomicBool, next: &AtomicU32) -> usize {
    let done = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..FLOOD_THREADS {
            s.spawn(|| {
                let mut conn = Client::new(port).conn();
                while !stop.load(Ordering::Relaxed) {
                    let ip = flood_ip(next.fetch_add(1, Ordering::Relaxed));
                    match conn.try_send("GET", "/f", &[("X-Forwarded-For", &ip)]) {
                        Ok(r) => {
                            assert_eq!(r.status, 200, "a one-request client is served");
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => conn = Client::new(port).conn(),
                    }
                }
            });
        }
    });
    done.into_inner()
}

/// Whether the abuser was served (200) or refused (429).
fn served(status: u16) -> usize {
    match status {
        200 => 1,
        429 => 0,
        other => panic!("abuser: status {other}"),
    }
}

/// The abuser: a page and its reload (two requests pipelined on one connection, so the
/// server reads the second as soon as it has answered the first), then `requests` more of
/// the page at `every` apart, each on its own connection; how many were served.
fn abuse(port: u16, ip: &str, requests: usize, every: Duration) -> usize {
    let client = Client::new(port).ip(ip);
    let pair = client.conn().send_pipelined(2, "GET", "/search", &[]);
    let mut total: usize = pair
        .expect("the pair")
        .iter()
        .map(|r| served(r.status))
        .sum();
    let start = Instant::now();
    for i in 0..requests {
        if let Some(wait) = (start + every * i as u32).checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        total += served(client.get("/search").status);
    }
    total
}

/// The abuser of the issue: 5 requests a second against `DOSPageCount 10` per 10 s, while
/// one-request clients arrive as fast as the machine drives them. The store is small for
/// that (256 KiB per area: 1,408 records in 88 sub-caches), so each sub-cache takes in many
/// new clients between two requests of the abuser (checked below: over 32, twice what fills
/// it). Once the abuser is counting up it is never the one evicted, so it is served exactly
/// its count. With least-recently-used eviction its record went between two of its requests,
/// and it was served again and again.
///
/// A client's very first request is a one-request record like the flood's: it is counted
/// from its second only if that comes before 16 new clients land in its sub-cache (about
/// 30 ms here at 45,000 a second; docs/directives.md, DOSCache, "Under flood"). So the
/// abuser starts with a page and its reload, pipelined: sent as two separate requests, the
/// second was now and then held up for 20–70 ms on this saturated machine, its first record
/// was gone, and it was served 11 or 50 times (CI saw it).
#[test]
fn an_abuser_is_held_to_its_count_while_a_flood_overflows_the_store() {
    let _alone = one_test_at_a_time();
    let cache = format!("DOSCache shmcb:none({STORE_BYTES})");
    let apache = server(&format!(
        "{cache}\nDOSPageCount 10\nDOSPageInterval 10\nDOSBlockingPeriod 30\n"
    ));
    let capacity = auto(&apache, "PageCapacity");
    let subcaches = (STORE_BYTES / SUBCACHE_BYTES) as u64;
    assert_eq!(capacity, subcaches * 16);
    let stop = AtomicBool::new(false);
    let next = AtomicU32::new(0);
    let started = Instant::now();
    let (served, flooded) = thread::scope(|s| {
        let flood = s.spawn(|| flood(apache.port(), &stop, &next));
        // Let the flood fill the store first.
        thread::sleep(Duration::from_millis(500));
        let served = abuse(apache.port(), "192.0.2.77", 48, Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        (served, flood.join().unwrap())
    });
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "flood: {flooded} one-request clients in {secs:.1} s ({:.0}/s); abuser served {served} of 50",
        flooded as f64 / secs
    );
    assert!(
        flooded as u64 > 2 * capacity,
        "the flood ({flooded}) overflowed the store ({capacity} page records)"
    );
    let per_gap = flooded as f64 / secs * 0.2 / subcaches as f64;
    assert!(
        per_gap > 32.0,
        "{per_gap:.0} new clients a sub-cache between two requests of the abuser"
    );
    let evicted = auto(&apache, "PageEvicted");
    assert!(evicted > 0, "live page records were evicted");
    assert_eq!(served, 10, "the abuser is served exactly DOSPageCount");
    // The store said so, once: the pressure check runs every 10 s, the warning at most once
    // a minute, and this test runs well under a minute after the first one.
    let pattern = format!("{cache} is too small for this traffic: ");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = next.load(Ordering::Relaxed);
    while apache.log_count(&pattern) == 0 && Instant::now() < deadline {
        // Counted requests run the check when it is due.
        n += 1;
        Client::new(apache.port()).ip(&flood_ip(n)).get("/f");
        thread::sleep(Duration::from_millis(200));
    }
    let lines = apache.log_lines(&pattern);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("[shield:warn]") && lines[0].contains("live records and 0 active blocks"),
        "{}",
        lines[0]
    );
}

/// The issue's row "a client blocked for 60 s while ~2,500 other addresses get themselves
/// blocked": with the default store (119,664 block records) nothing has to go.
#[test]
fn a_block_outlives_a_crowd_of_other_blocks_in_the_default_store() {
    let _alone = one_test_at_a_time();
    let apache = server("DOSPageCount 1\nDOSPageInterval 60\nDOSBlockingPeriod 60\n");
    let victim = Client::new(apache.port()).ip("192.0.2.99");
    assert_eq!(victim.get("/search").status, 200);
    assert_eq!(victim.get("/search").status, 429);
    let started = Instant::now();
    let next = AtomicU32::new(0);
    let blocked = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..FLOOD_THREADS {
            s.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= 2_500 {
                    break;
                }
                let c = Client::new(apache.port()).ip(&flood_ip(n));
                assert_eq!(c.get("/search").status, 200);
                assert_eq!(c.get("/search").status, 429);
                blocked.fetch_add(1, Ordering::Relaxed);
            });
        }
    });
    assert_eq!(blocked.load(Ordering::Relaxed), 2_500);
    let r = victim.get("/search");
    assert_eq!(r.status, 429, "still blocked after 2,500 other blocks");
    let left = r.header_u64("Retry-After").unwrap();
    assert!(
        left + started.elapsed().as_secs() + 1 >= 60,
        "Retry-After {left}"
    );
    assert_eq!(auto(&apache, "BlockEvicted"), 0);
    assert_eq!(auto(&apache, "StoreBlocksEvicted"), 0);
}

/// Blocks go last, and among them the one ending soonest: in a store far too small (32
/// block records), 100 short blocks started after a long one push out only each other, the
/// long block stays, and the store counts and reports the active blocks it had to evict.
#[test]
fn when_active_blocks_must_go_the_ones_ending_soonest_go_and_the_store_says_so() {
    let _alone = one_test_at_a_time();
    let apache = server(
        "DOSCache shmcb:none(8192)\n\
         DOSPageCount 1\nDOSPageInterval 60\nDOSBlockingPeriod 2 600\n",
    );
    let victim = Client::new(apache.port()).ip("192.0.2.98");
    // Generation 2 (600 s): blocked once for 2 s, then again.
    assert_eq!(victim.get("/search").status, 200);
    assert_eq!(victim.get("/search").status, 429);
    thread::sleep(Duration::from_millis(2300));
    assert_eq!(victim.get("/search").status, 200);
    let r = victim.get("/search");
    assert_eq!(r.status, 429);
    assert!(r.header_u64("Retry-After").unwrap() > 590);
    for n in 0..100 {
        let c = Client::new(apache.port()).ip(&flood_ip(n));
        assert_eq!(c.get("/search").status, 200);
        assert_eq!(c.get("/search").status, 429);
    }
    let r = victim.get("/search");
    assert_eq!(r.status, 429, "the block ending last was kept");
    assert!(r.header_u64("Retry-After").unwrap() > 580);
    let evicted = auto(&apache, "StoreBlocksEvicted");
    assert!(evicted > 0, "active blocks were evicted");
    let metrics = apache.get("/shield-status?metrics").body_text();
    assert!(
        metrics.contains(&format!("mod_shield_blocks_evicted_total {evicted}")),
        "{metrics}"
    );
}
