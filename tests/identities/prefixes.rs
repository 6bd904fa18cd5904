//! Prefixes: one attacker rotating through the addresses of one network, against the real
//! apache2 with mod_remoteip supplying the addresses. `DOSSiteCount 20` per 10 s holds every
//! single address; the network's own count (`DOSPrefixCount`, by default 8 x the site count
//! for an IPv4 /24 and an IPv6 /56, 32 x for a /48) must hold the network, exactly: the
//! number served is the threshold, however the requests interleave on parallel connections.

use crate::common::*;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const SHIELDCTL: &str = env!("CARGO_BIN_EXE_shieldctl");
/// Requests of each attack, as the table has them.
const ATTACK: usize = 500;
/// Parallel connections the attack is spread over (each its own thread).
const THREADS: usize = 8;
/// `DOSSiteCount` of these tests, and the default thresholds that follow from it.
const SITE_COUNT: usize = 20;
const SLASH24_DEFAULT: usize = 8 * SITE_COUNT;
const SLASH56_DEFAULT: usize = 8 * SITE_COUNT;

/// The attacks' server: site 20 per 10 s, a page count no attack reaches, 60 s blocks, a
/// file-backed store (for shieldctl), the status page for 127.0.0.1 (whitelisted, so reading
/// it never counts), and `extra` lines.
fn server(extra: &str) -> Apache {
    Apache::builder()
        .remoteip()
        .config(&format!(
            "LogLevel warn shield:info\n\
             DOSSiteCount {SITE_COUNT}\nDOSSiteInterval 10\n\
             DOSPageCount 100000\nDOSPageInterval 10\nDOSBlockingPeriod 60\n\
             DOSCache shmcb:@ROOT@/shield.store(1048576)\n\
             DOSLogDir @BLOCKS@\nDOSWhitelist 127.0.0.1\n\
             <Location /shield-status>\n  SetHandler shield-handler\n</Location>\n{extra}"
        ))
        .start()
}

/// Sends request `i` of the attack as `addr(i)` for i in 0..ATTACK, spread over THREADS
/// truly parallel connections; returns how many were served (200).
fn attack(apache: &Apache, addr: fn(usize) -> String) -> usize {
    let served = Arc::new(AtomicUsize::new(0));
    let port = apache.port();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let served = served.clone();
            thread::spawn(move || {
                for i in (t..ATTACK).step_by(THREADS) {
                    let r = Client::new(port).ip(&addr(i)).get("/index.html");
                    assert!(
                        r.status == 200 || r.status == 429,
                        "request {i} as {}: {}",
                        addr(i),
                        r.status
                    );
                    if r.status == 200 {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    served.load(Ordering::Relaxed)
}

/// Request i from another /64 of 2001:db8:aa::/48, in order (so /64s 0..=255 are one /56).
fn consecutive_slash64(i: usize) -> String {
    format!("2001:db8:aa:{i:x}::1")
}

/// Request i from another /64 of 2001:db8:aa::/48, each /56 of the /48 in turn, so that no
/// /56 sees more than two of them.
fn spread_slash64(i: usize) -> String {
    format!("2001:db8:aa:{:x}::1", ((i % 256) << 8) | (i / 256))
}

/// Request i from address i % 256 of 203.0.113.0/24.
fn slash24(i: usize) -> String {
    format!("203.0.113.{}", i % 256)
}

fn shieldctl(apache: &Apache, args: &[&str]) -> (i32, String) {
    let out = Command::new(SHIELDCTL)
        .arg("--store")
        .arg(apache.root().join("shield.store"))
        .arg("--log-dir")
        .arg(apache.blocks_dir())
        .args(args)
        .output()
        .expect("run shieldctl");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn status_json(apache: &Apache) -> serde_json::Value {
    let r = apache.get("/shield-status?json");
    assert_eq!(r.status, 200, "{}", r.body_text());
    serde_json::from_str(&r.body_text()).expect("?json parses")
}

/// The listed active block of `client` with prefix length `prefix` on the status page.
fn listed_block(json: &serde_json::Value, client: &str, prefix: u64) -> Option<serde_json::Value> {
    json["blocks"]["listed"]
        .as_array()?
        .iter()
        .find(|b| b["client"] == client && b["prefix"].as_u64() == Some(prefix))
        .cloned()
}

#[test]
fn a_slash48_rotating_through_consecutive_slash64s_is_held_to_its_slash56_counts() {
    let apache = server("");
    // /64s 0..=255 are 2001:db8:aa::/56, 256..=499 are 2001:db8:aa:100::/56: each /56
    // serves its default count (8 x 20), then its block refuses the rest of it.
    let served = attack(&apache, consecutive_slash64);
    eprintln!("/48 through consecutive /64s: served {served} of {ATTACK}");
    assert_eq!(served, 2 * SLASH56_DEFAULT);
    for net in ["2001:db8:aa::/56", "2001:db8:aa:100::/56"] {
        assert!(
            apache.wait_for_log(
                &format!("blocking period started for IP: {net} (expiry: "),
                Duration::from_secs(3)
            ),
            "no block line for {net}:\n{}",
            apache.error_log()
        );
    }
    // A new /64 of a blocked /56 is refused at once; one of another /56 is served.
    assert_eq!(apache.client().ip("2001:db8:aa:ff::7").get("/").status, 429);
    assert_eq!(
        apache.client().ip("2001:db8:aa:200::7").get("/").status,
        200
    );
}

#[test]
fn a_slash48_spread_over_its_slash56s_is_held_to_its_slash48_count() {
    let mut apache = server("DOSPrefixCount 48 100\n");
    let served = attack(&apache, spread_slash64);
    eprintln!("/48 spread over its /56s: served {served} of {ATTACK}");
    assert_eq!(served, 100);
    // Its own log line, block file and status-page row, generation 1.
    assert!(
        apache.wait_for_log(
            "blocking period started for IP: 2001:db8:aa::/48 (expiry: ",
            Duration::from_secs(3)
        ),
        "{}",
        apache.error_log()
    );
    let file = apache.blocks_dir().join("dos-2001:db8:aa::_48");
    let text = std::fs::read_to_string(&file).expect("block file of the /48");
    let second = text.lines().nth(1).unwrap_or_default();
    assert!(second.starts_with("site 1 101 "), "{text}");
    let json = status_json(&apache);
    let row = listed_block(&json, "2001:db8:aa::", 48).unwrap_or_else(|| panic!("{json}"));
    assert_eq!(
        (row["rule"].as_str(), row["generation"].as_u64()),
        (Some("site"), Some(1))
    );
    assert_eq!(row["count"].as_u64(), Some(100));
    let metrics = apache.get("/shield-status?metrics").body_text();
    assert!(
        metrics.contains("mod_shield_network_blocks_active{prefix=\"48\"} 1"),
        "{metrics}"
    );
    let auto = apache.get("/shield-status?auto").body_text();
    assert!(
        auto.contains("Block: 2001:db8:aa::/48 rule=site gen=1"),
        "{auto}"
    );
    // Any address of the /48 is refused; the next /48 is not.
    assert_eq!(
        apache.client().ip("2001:db8:aa:ffff::1").get("/").status,
        429
    );
    assert_eq!(apache.client().ip("2001:db8:ab::1").get("/").status, 200);

    // shieldctl lists the network and lifts its block.
    let (code, list) = shieldctl(&apache, &["list"]);
    assert_eq!(code, 0, "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with("2001:db8:aa::/48 site 1 ")),
        "{list}"
    );
    let (code, show) = shieldctl(&apache, &["show", "2001:db8:aa:1234::/48"]);
    assert_eq!(code, 0, "{show}");
    assert!(
        show.contains("client 2001:db8:aa::/48")
            && show.contains("blocked: rule site, generation 1"),
        "{show}"
    );
    let (code, out) = shieldctl(&apache, &["unblock", "2001:db8:aa::/48"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("unblocked 2001:db8:aa::/48"), "{out}");
    assert!(!file.exists(), "the /48's block file is removed");
    assert_eq!(
        apache.client().ip("2001:db8:aa:ffff::1").get("/").status,
        200
    );
    let (code, out) = shieldctl(&apache, &["unblock", "2001:db8:aa::/40"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("bad address '2001:db8:aa::/40'"), "{out}");
    apache.stop();
}

#[test]
fn without_prefix_counts_the_same_attacks_are_served_in_full() {
    // What the server did before networks were counted (and what `off` means).
    let apache = server("DOSPrefixCount 24 off\nDOSPrefixCount 56 off\nDOSPrefixCount 48 off\n");
    let v6 = attack(&apache, spread_slash64);
    let v4 = attack(&apache, slash24);
    eprintln!("prefixes off: /48 served {v6} of {ATTACK}, /24 served {v4} of {ATTACK}");
    assert_eq!((v6, v4), (ATTACK, ATTACK));
}

#[test]
fn a_slash24_rotating_through_its_addresses_is_held_to_its_count() {
    let apache = server("");
    // 500 requests over 256 addresses: at most 2 per address, far under its 20.
    let served = attack(&apache, slash24);
    eprintln!("/24 through its addresses: served {served} of {ATTACK}");
    assert_eq!(served, SLASH24_DEFAULT);
    assert!(
        apache.wait_for_log(
            "blocking period started for IP: 203.0.113.0/24 (expiry: ",
            Duration::from_secs(3)
        ),
        "{}",
        apache.error_log()
    );
    assert!(apache.blocks_dir().join("dos-203.0.113.0_24").is_file());
    assert_eq!(apache.client().ip("203.0.113.77").get("/").status, 429);
    assert_eq!(apache.client().ip("203.0.114.77").get("/").status, 200);
    let json = status_json(&apache);
    assert!(listed_block(&json, "203.0.113.0", 24).is_some(), "{json}");
}

#[test]
fn a_whitelisted_address_inside_a_blocked_network_is_still_served() {
    let apache = server("DOSWhitelist 203.0.113.7 2001:db8:aa:5::/64\n");
    // The whitelisted address's own requests of the attack (2 of them) are served and not
    // counted; the rest of the /24 is held to its count. Likewise the whitelisted /64's one.
    assert_eq!(attack(&apache, slash24), SLASH24_DEFAULT + 2);
    assert_eq!(
        attack(&apache, consecutive_slash64),
        2 * SLASH56_DEFAULT + 1
    );
    assert_eq!(apache.client().ip("203.0.113.8").get("/").status, 429);
    assert_eq!(apache.client().ip("2001:db8:aa:6::1").get("/").status, 429);
    for ip in ["203.0.113.7", "2001:db8:aa:5::1"] {
        let c = apache.client().ip(ip);
        for _ in 0..5 {
            assert_eq!(c.get("/").status, 200, "{ip}");
        }
    }
}

#[test]
fn monitor_mode_logs_the_network_it_would_block_and_serves_it() {
    let apache = server("DOSEnabled monitor\n");
    assert_eq!(attack(&apache, slash24), ATTACK);
    assert!(
        apache.wait_for_log(
            &format!(
                "would block IP: 203.0.113.0/24 (site score {} > {SLASH24_DEFAULT}, monitor mode)",
                SLASH24_DEFAULT + 1
            ),
            Duration::from_secs(3)
        ),
        "{}",
        apache.error_log()
    );
    assert_eq!(apache.log_count("blocking period started"), 0);
    assert!(!apache.blocks_dir().join("dos-203.0.113.0_24").exists());
    let json = status_json(&apache);
    let would = json["would_blocks"].as_array().cloned().unwrap_or_default();
    assert!(
        would
            .iter()
            .any(|w| w["client"] == "203.0.113.0" && w["prefix"] == 24),
        "{json}"
    );
}

#[test]
fn a_bad_prefix_count_fails_the_configuration_test() {
    for (line, value) in [
        ("DOSPrefixCount 32 100", "'32'"),
        ("DOSPrefixCount 48 lots", "'lots'"),
        ("DOSPrefixCount 24 0", "'0'"),
    ] {
        let apache = Apache::builder().config(line).build();
        let (ok, out) = apache.config_test();
        assert!(!ok, "{line}: {out}");
        assert!(
            out.contains(&format!("DOSPrefixCount: {value}")),
            "{line}: {out}"
        );
    }
}
