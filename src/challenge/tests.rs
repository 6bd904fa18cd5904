use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::nonce::{self, NonceError};
use super::page::{self, Challenge};
use super::pass::{self, PassError};
use super::pow;
use super::*;

const KEY: Key = Key([7u8; 32]);
const OTHER_KEY: Key = Key([8u8; 32]);
const NOW: i64 = 1_800_000_000;

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse::<Ipv4Addr>().unwrap())
}

#[test]
fn difficulty_grows_with_the_generation_and_is_capped() {
    let s = Settings::default();
    assert_eq!(s.bits_for_generation(0), 14);
    assert_eq!(s.bits_for_generation(1), 14);
    assert_eq!(s.bits_for_generation(2), 16);
    assert_eq!(s.bits_for_generation(4), 20);
    assert_eq!(s.bits_for_generation(100), MAX_BITS);
    assert_eq!(s.bits_for_generation(u32::MAX), MAX_BITS);
    let flat = Settings {
        step_bits: 0,
        base_bits: 10,
        ..Settings::default()
    };
    assert_eq!(flat.bits_for_generation(9), 10);
}

#[test]
fn nonce_binds_client_time_and_difficulty() {
    let c = v4("192.0.2.7");
    let n = nonce::issue(&KEY, c, NOW, 16);
    assert_eq!(n.len(), nonce::HEX_LEN);
    assert_eq!(nonce::check(&KEY, c, &n, NOW, 16, NOW + 3), Ok(()));
    // Same inputs, same nonce (no state: the check recomputes it).
    assert_eq!(n, nonce::issue(&KEY, c, NOW, 16));
    let forged = Err(NonceError::Forged);
    assert_eq!(
        nonce::check(&KEY, v4("192.0.2.8"), &n, NOW, 16, NOW),
        forged
    );
    assert_eq!(nonce::check(&KEY, c, &n, NOW + 1, 16, NOW + 1), forged);
    assert_eq!(nonce::check(&KEY, c, &n, NOW, 12, NOW), forged);
    assert_eq!(nonce::check(&OTHER_KEY, c, &n, NOW, 16, NOW), forged);
    let mut flipped = n.clone().into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    assert_eq!(nonce::check(&KEY, c, &flipped, NOW, 16, NOW), forged);
    assert_eq!(nonce::check(&KEY, c, "zz", NOW, 16, NOW), forged);
    assert_eq!(nonce::check(&KEY, c, &n[..30], NOW, 16, NOW), forged);
    // Upper-case hex is the same bytes.
    assert_eq!(
        nonce::check(&KEY, c, &n.to_uppercase(), NOW, 16, NOW),
        Ok(())
    );
}

#[test]
fn nonce_expires() {
    let c = v4("192.0.2.7");
    let n = nonce::issue(&KEY, c, NOW, 16);
    assert_eq!(nonce::check(&KEY, c, &n, NOW, 16, NOW + NONCE_SECS), Ok(()));
    assert_eq!(
        nonce::check(&KEY, c, &n, NOW, 16, NOW + NONCE_SECS + 1),
        Err(NonceError::Stale)
    );
    // Issued in the future (beyond clock skew): refused before any MAC.
    assert_eq!(
        nonce::check(&KEY, c, &n, NOW, 16, NOW - 60),
        Err(NonceError::Stale)
    );
}

#[test]
fn pow_counts_leading_zero_bits() {
    assert_eq!(pow::leading_zero_bits(&[0x80]), 0);
    assert_eq!(pow::leading_zero_bits(&[0x01]), 7);
    assert_eq!(pow::leading_zero_bits(&[0, 0, 0x10]), 19);
    assert_eq!(pow::leading_zero_bits(&[0; 32]), 256);
    // A known vector: SHA-256("abc:0").
    let d = pow::digest("abc", 0);
    let expected = sha2::Sha256::digest(b"abc:0");
    assert_eq!(&d[..], &expected[..]);
}

#[test]
fn pow_solutions_check_and_non_solutions_do_not() {
    let n = nonce::issue(&KEY, v4("192.0.2.7"), NOW, 12);
    let s = pow::solve(&n, 12);
    assert!(pow::check(&n, s, 12));
    assert!(pow::leading_zero_bits(&pow::digest(&n, s)) >= 12);
    // The smallest: everything below fails.
    assert!((0..s).all(|x| !pow::check(&n, x, 12)));
    // Work for another nonce proves nothing here (overwhelmingly likely at 12 bits).
    let other = nonce::issue(&KEY, v4("192.0.2.8"), NOW, 12);
    let s2 = pow::solve(&other, 12);
    assert!(s2 == s || !pow::check(&n, s2, 12));
}

#[test]
fn pass_round_trip_and_expiry() {
    let c = v4("198.51.100.4");
    let v = pass::issue(&KEY, c, 3, NOW + 60);
    assert_eq!(
        pass::verify(&KEY, c, &v, NOW),
        Ok(pass::Pass {
            expires: NOW + 60,
            generation: 3
        })
    );
    assert_eq!(
        pass::verify(&KEY, c, &v, NOW + 59).map(|p| p.generation),
        Ok(3)
    );
    assert_eq!(pass::verify(&KEY, c, &v, NOW + 60), Err(PassError::Expired));
    // No identity of its own: the same client, generation and expiry give the same pass.
    assert_eq!(pass::issue(&KEY, c, 3, NOW + 60), v);
}

#[test]
fn forged_tampered_other_client_and_other_key_passes_fail() {
    let c = v4("198.51.100.4");
    let v = pass::issue(&KEY, c, 1, NOW + 60);
    let forged = Err(PassError::Forged);
    assert_eq!(pass::verify(&KEY, v4("198.51.100.5"), &v, NOW), forged);
    assert_eq!(pass::verify(&OTHER_KEY, c, &v, NOW), forged);
    // A later expiry, another generation, a changed MAC: all forged.
    let (exp, rest) = v.split_once('.').unwrap();
    let later = format!("{}.{rest}", exp.parse::<i64>().unwrap() + 3600);
    assert_eq!(pass::verify(&KEY, c, &later, NOW), forged);
    let (generation, mac) = rest.split_once('.').unwrap();
    assert_eq!(generation, "1");
    let next_generation = format!("{exp}.2.{mac}");
    assert_eq!(pass::verify(&KEY, c, &next_generation, NOW), forged);
    let mut m = mac.to_string().into_bytes();
    m[63] = if m[63] == b'a' { b'b' } else { b'a' };
    let tampered = format!("{exp}.1.{}", String::from_utf8(m).unwrap());
    assert_eq!(pass::verify(&KEY, c, &tampered, NOW), forged);
    // Zero MAC of the right length: forged (the comparison itself decides, not the shape).
    let zero = format!("{exp}.1.{}", "0".repeat(64));
    assert_eq!(pass::verify(&KEY, c, &zero, NOW), forged);
    for bad in [
        "",
        "x",
        "1.2",
        "1.2.3.4",
        &format!("-5.1.{mac}"),
        &format!("{exp}.-1.{mac}"),
        &format!("{exp}..{mac}"),
        &format!("{exp}.99999999999.{mac}"),
        &format!("{exp}.1.{}", &mac[..62]),
        &format!("{exp}.1.{}zz", &mac[..62]),
    ] {
        assert_eq!(
            pass::verify(&KEY, c, bad, NOW),
            Err(PassError::Malformed),
            "{bad}"
        );
    }
}

#[test]
fn verify_uses_the_constant_time_comparison() {
    // The MAC check is `mac::Message::verify_prefix` (constant_time_eq); guard that the code
    // keeps calling it rather than comparing bytes itself.
    let src = include_str!("pass.rs");
    let body = src.split("pub fn verify(").nth(1).unwrap();
    let body = body.split("\n}\n").next().unwrap();
    assert!(body.contains(".verify_prefix(key, &tag)"), "{body}");
    assert!(
        !body.contains("== tag") && !body.contains("tag =="),
        "{body}"
    );
    let nonce_src = include_str!("nonce.rs");
    assert!(nonce_src.contains(".verify_prefix(key, &tag)"));
}

#[test]
fn cookies() {
    let c = v4("198.51.100.4");
    let v = pass::issue(&KEY, c, 2, NOW + 60);
    let old = pass::issue(&KEY, c, 1, NOW + 60);
    let header = format!("a=b; shield_pass=junk; shield_pass={old}; shield_pass={v}; z=1");
    assert_eq!(pass::cookie_values(&header).count(), 3);
    // The pass of the block's generation, not the one of an earlier block.
    assert_eq!(
        pass::from_cookies(&KEY, c, &header, 2, NOW).map(|p| p.generation),
        Some(2)
    );
    assert_eq!(
        pass::from_cookies(&KEY, c, &header, 1, NOW).map(|p| p.generation),
        Some(1)
    );
    assert_eq!(pass::from_cookies(&KEY, c, &header, 3, NOW), None);
    assert_eq!(
        pass::from_cookies(&KEY, c, "shield_pass=junk", 1, NOW),
        None
    );
    assert_eq!(pass::from_cookies(&KEY, c, "", 1, NOW), None);
    let set = pass::set_cookie(&v, 3600, false);
    assert!(set.starts_with(&format!("shield_pass={v}; ")), "{set}");
    for attr in ["Path=/", "Max-Age=3600", "HttpOnly", "SameSite=Lax"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"));
    assert!(pass::set_cookie(&v, 1, true).ends_with("; Secure"));
}

#[test]
fn every_pass_of_a_client_counts_under_one_unique_local_address() {
    let c = v4("198.51.100.4");
    let a = pass_client(&KEY, c);
    let other = pass_client(&KEY, v4("198.51.100.5"));
    assert_ne!(a, other);
    assert_ne!(pass_client(&OTHER_KEY, c), a);
    let IpAddr::V6(v6) = a else { panic!("{a}") };
    assert_eq!(v6.octets()[0], 0xfd);
    assert_eq!(&v6.octets()[8..], &[0; 8]);
    // Its own /64 group.
    assert_eq!(crate::client::group(a, 64), a);
    assert_eq!(pass_client(&KEY, c), a);
}

#[test]
fn each_pass_earned_makes_the_next_dearer() {
    let s = Settings::default();
    assert_eq!(s.bits_for(1, 0), 14);
    assert_eq!(s.bits_for(1, 1), 15);
    assert_eq!(s.bits_for(1, 7), 21);
    assert_eq!(s.bits_for(2, 1), 17);
    assert_eq!(s.bits_for(1, u32::MAX), MAX_BITS);
    assert_eq!(s.bits_for(u32::MAX, u32::MAX), MAX_BITS);
    let steep = Settings {
        pass_step_bits: 3,
        ..Settings::default()
    };
    assert_eq!(steep.bits_for(1, 2), 20);
}

#[test]
fn navigations() {
    let html = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    assert!(is_navigation("GET", Some(html)));
    assert!(is_navigation("HEAD", Some("TEXT/HTML")));
    assert!(!is_navigation("POST", Some(html)));
    assert!(!is_navigation("GET", Some("*/*")));
    assert!(!is_navigation("GET", Some("application/json")));
    assert!(!is_navigation("GET", Some("text/html;q=0, */*")));
    assert!(!is_navigation("GET", Some("text/htmlx")));
    assert!(!is_navigation("GET", None));
}

#[test]
fn return_urls_stay_local() {
    assert_eq!(safe_return("/a/b?c=d&e"), "/a/b?c=d&e");
    for bad in [
        "",
        "//evil.example/",
        "/\\evil.example",
        "http://evil.example/",
        "evil",
        "/a b",
        "/a\"b",
        "/a<b",
        "/\u{e9}",
        "/a\r\nSet-Cookie: x",
    ] {
        assert_eq!(safe_return(bad), "/", "{bad:?}");
    }
    assert_eq!(safe_return(&format!("/{}", "a".repeat(3000))), "/");
}

#[test]
fn submissions_parse() {
    let n = "0123456789abcdef0123456789abcdef";
    let q = format!("n={n}&t=17&d=16&r=%2Fpage%3Fa%3D1%26b&s=12345");
    assert_eq!(
        Submission::parse(&q),
        Some(Submission {
            nonce: n.to_string(),
            issued: 17,
            bits: 16,
            solution: 12345,
            return_to: "/page?a=1&b".to_string()
        })
    );
    // An open redirect becomes "/".
    let q = format!("n={n}&t=17&d=16&r=%2F%2Fevil.example&s=1");
    assert_eq!(Submission::parse(&q).unwrap().return_to, "/");
    for bad in [
        "t=17&d=16&r=%2F&s=1".to_string(),
        format!("n={n}&d=16&r=%2F&s=1"),
        format!("n={n}&t=17&r=%2F&s=1"),
        format!("n={n}&t=17&d=16&r=%2F"),
        format!("n={n}&t=17&d=16&s=1"),
        format!("n={n}&t=17&d=999&r=%2F&s=1"),
        format!("n={n}&t=17&d=16&r=%2F&s=-1"),
        "n=abc&t=17&d=16&r=%2F&s=1".to_string(),
        format!("n={n}&t=17&d=16&r=%zz&s=1"),
    ] {
        assert_eq!(Submission::parse(&bad), None, "{bad}");
    }
    assert_eq!(percent_decode("a%20b+c"), Some("a b c".to_string()));
    assert_eq!(percent_encode("/a b?c=d"), "%2Fa%20b%3Fc%3Dd");
}

#[test]
fn key_files() {
    let k = Key::from_file_contents(&[b'x'; 32]).unwrap();
    assert_eq!(
        Key::from_file_contents(b"  xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n").unwrap(),
        k
    );
    assert_ne!(Key::from_file_contents(&[b'y'; 32]).unwrap(), k);
    let e = Key::from_file_contents(b"short\n").unwrap_err().to_string();
    assert!(e.contains("holds 5 bytes; at least 32"), "{e}");
    assert!(Key::read_file("/nonexistent/key")
        .unwrap_err()
        .to_string()
        .starts_with("cannot be read:"));
    assert_eq!(format!("{k:?}"), "Key(..)");
    assert_eq!(
        Key::read_file("/dev/zero").unwrap_err().to_string(),
        "is not a regular file"
    );
    assert_eq!(
        Key::read_file("/").unwrap_err().to_string(),
        "is not a regular file"
    );
    let big = std::env::temp_dir().join(format!("shield-big-key-{}", std::process::id()));
    std::fs::write(&big, vec![b'k'; MAX_KEY_FILE_BYTES + 1]).unwrap();
    let e = Key::read_file(&big.display().to_string())
        .unwrap_err()
        .to_string();
    let _ = std::fs::remove_file(&big);
    assert!(e.contains("is larger than 65536 bytes"), "{e}");
}

#[test]
fn page_is_small_self_contained_and_matches_its_csp() {
    let n = nonce::issue(&KEY, v4("192.0.2.7"), NOW, 16);
    let c = Challenge {
        nonce: &n,
        issued: NOW,
        bits: 16,
        return_to: "/page.html?x=1&y=2",
        retry_after: 300,
    };
    let html = page::html(&c);
    assert!(html.len() < 16 * 1024, "{} bytes", html.len());
    assert!(html.is_ascii());
    assert!(html.contains(&format!("data-n=\"{n}\"")));
    assert!(html.contains("data-d=\"16\""));
    assert!(html.contains(&format!(
        "data-next=\"/.shield/challenge?n={n}&amp;t={NOW}&amp;d=16&amp;r=%2Fpage.html%3Fx%3D1%26y%3D2&amp;s=\""
    )));
    assert!(html.contains("<noscript>") && html.contains("retry in 5 minutes"));
    for external in ["src=", "href=", "http:", "https:", "@import", "url("] {
        assert!(!html.contains(external), "{external}");
    }
    // The CSP hashes are those of the one script and the one style in the page.
    let between = |open: &str, close: &str| {
        let start = html.find(open).unwrap() + open.len();
        let end = start + html[start..].find(close).unwrap();
        html[start..end].to_string()
    };
    let csp = page::content_security_policy();
    for (open, close, directive) in [
        ("<script>", "</script>", "script-src"),
        ("<style>", "</style>", "style-src"),
    ] {
        let hash = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            sha2::Sha256::digest(between(open, close).as_bytes()),
        );
        assert!(
            csp.contains(&format!("{directive} 'sha256-{hash}'")),
            "{csp}"
        );
        assert_eq!(html.matches(open).count(), 1);
    }
    assert!(csp.contains("default-src 'none'") && csp.contains("worker-src blob:"));
    // A parameter that would need escaping never gets in: the return URL is percent-encoded.
    let sneaky = Challenge {
        return_to: "/\"><script>",
        ..c.clone()
    };
    assert_eq!(page::html(&sneaky).matches("<script>").count(), 1);
}

#[test]
fn ipv6_clients_bind_too() {
    let a = IpAddr::V6("2001:db8::".parse::<Ipv6Addr>().unwrap());
    let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
    let n = nonce::issue(&KEY, a, NOW, 16);
    assert_eq!(nonce::check(&KEY, a, &n, NOW, 16, NOW), Ok(()));
    // The family is part of the binding: an IPv4 client and its mapped form differ.
    let n4 = nonce::issue(&KEY, v4("192.0.2.7"), NOW, 16);
    assert_eq!(
        nonce::check(&KEY, mapped, &n4, NOW, 16, NOW),
        Err(NonceError::Forged)
    );
}

#[test]
fn stats_count() {
    let s = Stats::new().unwrap();
    s.issued();
    s.issued();
    s.passed();
    s.failed();
    s.pass_request();
    assert_eq!(
        s.counts(),
        stats::Counts {
            issued: 2,
            passed: 1,
            failed: 1,
            pass_requests: 1
        }
    );
}

mod directives {
    use crate::config::{parse, ServerConfig, Setting};

    fn server(lines: &[&str]) -> ServerConfig {
        crate::config::from_lines(lines).unwrap().0
    }

    #[test]
    fn off_by_default_with_sane_defaults() {
        let c = ServerConfig::default().resolve().challenge;
        assert_eq!(c, super::Settings::default());
        assert!(!c.enabled);
        assert_eq!((c.base_bits, c.step_bits, c.pass_secs), (14, 2, 3600));
        assert_eq!((c.pass_limit, c.pass_step_bits), (8, 1));
    }

    #[test]
    fn values_and_vhost_inheritance() {
        assert_eq!(
            parse("DOSChallengeDifficulty", "12"),
            Ok(Setting::ChallengeDifficulty(12, 2))
        );
        assert_eq!(
            parse("DOSChallengeDifficulty", "20 0"),
            Ok(Setting::ChallengeDifficulty(20, 0))
        );
        assert_eq!(
            parse("DOSChallengePassLimit", "20"),
            Ok(Setting::ChallengePassLimit(20, 1))
        );
        assert_eq!(
            parse("DOSChallengePassLimit", "3 4"),
            Ok(Setting::ChallengePassLimit(3, 4))
        );
        let main = server(&[
            "DOSChallenge on",
            "DOSChallengeDifficulty 14 3",
            "DOSChallengePassLimit 4 2",
        ]);
        let vhost = server(&["DOSChallengePassTime 600"]);
        let c = ServerConfig::merge(&main, &vhost).resolve().challenge;
        assert!(c.enabled);
        assert_eq!((c.base_bits, c.step_bits, c.pass_secs), (14, 3, 600));
        assert_eq!((c.pass_limit, c.pass_step_bits), (4, 2));
        let off = server(&["DOSChallenge off"]);
        assert!(!ServerConfig::merge(&main, &off).resolve().challenge.enabled);
        let s = ServerConfig::merge(&main, &vhost).resolve();
        let lines = crate::config::canonical_lines(&s, &crate::config::DirConfig::default());
        assert!(lines.iter().any(|l| l == "DOSChallengeDifficulty 14 3"));
        assert!(lines.iter().any(|l| l == "DOSChallengePassLimit 4 2"));
        // Off: no challenge line at all (the settings read exactly as before).
        let plain = crate::config::canonical_lines(
            &ServerConfig::default().resolve(),
            &crate::config::DirConfig::default(),
        );
        assert!(!plain.iter().any(|l| l.starts_with("DOSChallenge")));
    }

    #[test]
    fn bad_values_name_directive_and_value() {
        let err = |n: &str, a: &str| parse(n, a).unwrap_err().to_string();
        for (n, a, want) in [
            (
                "DOSChallenge",
                "maybe",
                "DOSChallenge: 'maybe' is not one of",
            ),
            (
                "DOSChallengeDifficulty",
                "0",
                "DOSChallengeDifficulty: '0' is not a number of bits between 1 and 28",
            ),
            (
                "DOSChallengeDifficulty",
                "29",
                "'29' is not a number of bits between 1 and 28",
            ),
            (
                "DOSChallengeDifficulty",
                "16 9",
                "'9' is not a number of bits between 0 and 8",
            ),
            (
                "DOSChallengeDifficulty",
                "+16",
                "'+16' is not a number of bits",
            ),
            ("DOSChallengeDifficulty", "1 2 3", "takes BITS [STEP]"),
            (
                "DOSChallengePassTime",
                "0",
                "DOSChallengePassTime: '0' is not a positive integer",
            ),
            (
                "DOSChallengePassLimit",
                "0",
                "DOSChallengePassLimit: '0' is not a number of passes between 1 and 1000",
            ),
            (
                "DOSChallengePassLimit",
                "8 0",
                "DOSChallengePassLimit: '0' is not a number of bits between 1 and 8",
            ),
            ("DOSChallengePassLimit", "8 1 1", "takes PASSES [BITS]"),
            (
                "DOSChallengeKey",
                "key.txt",
                "DOSChallengeKey: 'key.txt' is not an absolute file path",
            ),
            (
                "DOSChallengeKey",
                "/nonexistent/shield.key",
                "DOSChallengeKey: '/nonexistent/shield.key' cannot be read: No such file",
            ),
        ] {
            let e = err(n, a);
            assert!(e.contains(want), "{n} {a}: {e}");
        }
        let short = std::env::temp_dir().join(format!("shield-short-key-{}", std::process::id()));
        std::fs::write(&short, b"0123456789\n").unwrap();
        let e = err("DOSChallengeKey", &short.display().to_string());
        let _ = std::fs::remove_file(&short);
        assert!(e.contains("holds 10 bytes; at least 32 are needed"), "{e}");
    }
}

#[test]
fn the_store_keeps_a_random_challenge_key() {
    use crate::store::Store;
    let a = Store::create(8192).unwrap();
    let b = Store::create(8192).unwrap();
    let key = a.challenge_key();
    assert_ne!(key, [0; 32]);
    assert_ne!(key, b.challenge_key());
    // Kept across a re-attach (a graceful restart).
    let a = Store::attach(a.into_region()).unwrap();
    assert_eq!(a.challenge_key(), key);
}

/// Pass holders against the real decisions (policy over the store): all of a client's pass
/// holders share one budget, their crossing moves the client's own block on a generation
/// (no block record of their own), and the spent budget is not restarted by it.
#[test]
fn pass_holders_share_their_clients_budget_and_block() {
    use crate::policy::{count, Outcome, Request};
    use crate::store::{Counter, Epoch, Store};
    const T0: i64 = 1_800_000_000_000_000;
    const SEC: i64 = 1_000_000;
    let store = Store::create(65536).unwrap();
    let (server, dir) = crate::config::from_lines(&[
        "DOSPageCount 2",
        "DOSPageInterval 60",
        "DOSBlockingPeriod 30 60 90",
    ])
    .unwrap();
    let server = server.resolve();
    let c = v4("192.0.2.1");
    let owner = store.client_key(c);
    let request = |key| Request {
        client: c,
        host: "example.com",
        path: "/page",
        key: Some(key),
    };
    // The client crosses its count: generation 1.
    for i in 0..3 {
        let _ = count(&store, &server, &dir, &request(&owner), T0 + i, None);
    }
    let first = store.active_block(c, T0 + 3).unwrap();
    assert_eq!(first.generation, 1);
    // Two pass holders of generation 1 (say two browsers) share one budget of 2.
    let holder = pass_client(&KEY, c);
    let keys = [
        store.holder_key(holder, &owner, Epoch([1, 0, 0])),
        store.holder_key(holder, &owner, Epoch([1, 0, 0])),
    ];
    let mut served = 0;
    let mut started = Vec::new();
    for i in 0..10 {
        match count(
            &store,
            &server,
            &dir,
            &request(&keys[i % 2]),
            T0 + SEC + i as i64,
            None,
        ) {
            Outcome::Pass => served += 1,
            Outcome::Refuse(r) => started.extend(r.started),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(served, 2);
    // One crossing, once: the client's own block moved on to generation 2 and 60 s.
    assert_eq!(started.len(), 1, "{started:?}");
    let second = store.active_block(c, T0 + 2 * SEC).unwrap();
    assert_eq!((second.client, second.generation), (c, 2));
    assert_eq!(second.rule, Counter::Page);
    assert_eq!(second.until, T0 + SEC + 2 + 60 * SEC);
    assert!(store.active_block(holder, T0 + 2 * SEC).is_none());
    assert_eq!(store.active_blocks(T0 + 2 * SEC, 10).len(), 1);
    // A pass of generation 2 finds the budget still spent in this window: its first request
    // moves the block on again, and nothing is served.
    let fresh = store.holder_key(holder, &owner, Epoch([2, 0, 0]));
    assert!(matches!(
        count(&store, &server, &dir, &request(&fresh), T0 + 3 * SEC, None),
        Outcome::Refuse(_)
    ));
    assert_eq!(store.active_block(c, T0 + 3 * SEC).unwrap().generation, 3);
    // The window over, a pass of the current generation gets the budget again.
    let third = store.holder_key(holder, &owner, Epoch([3, 0, 0]));
    let later = T0 + 62 * SEC;
    assert!(matches!(
        count(&store, &server, &dir, &request(&third), later, None),
        Outcome::Pass
    ));
}

/// Counts far away for a client, `DOSPrefixCount 24 6`, blocks of 30, 60, 90 s.
fn slash24_of_six() -> (crate::config::ServerSettings, crate::config::DirConfig) {
    let (server, dir) = crate::config::from_lines(&[
        "DOSSiteCount 100",
        "DOSSiteInterval 60",
        "DOSPageCount 100",
        "DOSPrefixCount 24 6",
        "DOSBlockingPeriod 30 60 90",
    ])
    .unwrap();
    (server.resolve(), dir)
}

/// Pass holders count in their client's networks too: many clients of one /24, each with
/// passes, are held by the /24's count. A pass earned while the /24 is blocked opens that
/// block (its epoch names the /24's generation); pass holders crossing the /24's count move
/// the /24's block on, which closes every pass of the /24, and leave its window spent.
#[test]
fn pass_holders_count_in_their_clients_networks_and_move_the_network_block_on() {
    use crate::policy::{client_key, count, Outcome, Request};
    use crate::store::{ClientKey, Epoch, Store};
    const T0: i64 = 1_800_000_000_000_000;
    const SEC: i64 = 1_000_000;
    let store = Store::create(1 << 20).unwrap();
    let (server, dir) = slash24_of_six();
    fn request(client: IpAddr, key: &ClientKey) -> Request<'_> {
        Request {
            client,
            host: "example.com",
            path: "/page",
            key: Some(key),
        }
    }
    // Seven members of 192.0.2.0/24, one request each: the seventh crosses the /24's count.
    for i in 0..7 {
        let m = v4(&format!("192.0.2.{}", 10 + i));
        let key = client_key(&store, &server, m);
        let outcome = count(&store, &server, &dir, &request(m, &key), T0 + i, None);
        assert_eq!(
            matches!(outcome, Outcome::Refuse(_)),
            i == 6,
            "{i}: {outcome:?}"
        );
    }
    // A member that was never blocked itself is under the /24's block: epoch [0, 1, 0].
    let c = v4("192.0.2.1");
    let owner = client_key(&store, &server, c);
    let at = T0 + SEC;
    let epoch = store.epoch(&owner, at);
    assert_eq!(epoch, Epoch([0, 1, 0]));
    assert_ne!(epoch.stamp(), Epoch([1, 0, 0]).stamp());
    assert_eq!(epoch.generation(), 1);
    // Its pass holder counts in the /24 (restarted when the block started): 6 served, the
    // seventh moves the /24's block on to generation 2; no block of the member's own.
    let holder = pass_client(&KEY, c);
    let held = store.holder_key(holder, &owner, epoch);
    let mut served = 0;
    for i in 0..10 {
        match count(&store, &server, &dir, &request(c, &held), at + i, None) {
            Outcome::Pass => served += 1,
            Outcome::Refuse(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(served, 6);
    let moved = store.epoch(&owner, at + 10);
    assert_eq!(moved, Epoch([0, 2, 0]));
    assert!(store.active_block(c, at + 10).is_none());
    assert_eq!(store.active_blocks(at + 10, 10).len(), 1);
    // Another member's pass of the old epoch opens nothing now ...
    let other = v4("192.0.2.99");
    let other_key = client_key(&store, &server, other);
    let stale = store.holder_key(pass_client(&KEY, other), &other_key, epoch);
    assert!(matches!(
        count(
            &store,
            &server,
            &dir,
            &request(other, &stale),
            at + 11,
            None
        ),
        Outcome::Refuse(_)
    ));
    // ... and one of the new epoch finds the /24's window still spent: its first request
    // moves the block on again.
    let fresh = store.holder_key(pass_client(&KEY, other), &other_key, moved);
    assert!(matches!(
        count(
            &store,
            &server,
            &dir,
            &request(other, &fresh),
            at + 12,
            None
        ),
        Outcome::Refuse(_)
    ));
    assert_eq!(store.epoch(&owner, at + 13), Epoch([0, 3, 0]));
}

/// In a farm, the pass holders of a blocked /24 count toward the /24 for all servers
/// together (under `192.0.2.0/24~pass` in the engine): members with passes asking three
/// servers in turn are served the /24's count, not one count per server, and every server
/// that finds the count spent moves its /24 block on.
#[test]
fn in_a_farm_pass_holders_count_in_their_networks_for_all_servers() {
    use crate::farm::FakeEngine;
    use crate::policy::{client_key, count, Outcome, Request, Shared};
    use crate::store::{BlockInfo, Counter, Epoch, Store};
    const T0: i64 = 1_800_000_000_000_000;
    const SEC: i64 = 1_000_000;
    let (server, dir) = slash24_of_six();
    let engine = FakeEngine::default();
    let farm = Some(&engine as &dyn Shared);
    // The /24's block, on every server (as its announcement writes it).
    let stores: Vec<Store> = (0..3).map(|_| Store::create(1 << 20).unwrap()).collect();
    let net = v4("192.0.2.0");
    let info = BlockInfo {
        rule: Counter::Site,
        score: 7,
        count: 6,
        interval: 60,
        host: "example.com",
        uri: "/page",
    };
    for store in &stores {
        assert!(store
            .adopt_block(net, 24, &info, (T0, T0 + 30 * SEC), 1, 60, T0)
            .unwrap());
    }
    // Members that were never blocked themselves, with passes of the /24's first block
    // (epoch [0, 1, 0]), one request each in turn over the three servers.
    let at = T0 + SEC;
    let mut served = 0;
    for i in 0..18 {
        let store = &stores[i % 3];
        let c = v4(&format!("192.0.2.{}", 10 + i));
        let owner = client_key(store, &server, c);
        let held = store.holder_key(pass_client(&KEY, c), &owner, Epoch([0, 1, 0]));
        let r = Request {
            client: c,
            host: "example.com",
            path: "/page",
            key: Some(&held),
        };
        match count(store, &server, &dir, &r, at + i as i64, farm) {
            Outcome::Pass => served += 1,
            Outcome::Refuse(_) => {}
            other => panic!("{other:?}"),
        }
    }
    // Alone, each server would have served its own six (18 in all).
    assert_eq!(served, 6);
    for (k, store) in stores.iter().enumerate() {
        let c = v4("192.0.2.200");
        let owner = client_key(store, &server, c);
        assert_eq!(store.epoch(&owner, at + 20), Epoch([0, 2, 0]), "server {k}");
    }
}

/// The /24's record keeps one farm lease for two budgets, its members' and its pass
/// holders': once the /24's block has ended, members without a pass spend nothing the
/// holders were granted during it, so the farm serves them exactly the /24's count.
#[test]
fn after_a_network_block_its_members_do_not_spend_its_pass_holders_lease() {
    use crate::farm::FakeEngine;
    use crate::policy::{client_key, count, Outcome, Request, Shared};
    use crate::store::{BlockInfo, Counter, Epoch, Store};
    const T0: i64 = 1_800_000_000_000_000;
    const SEC: i64 = 1_000_000;
    let (server, dir) = crate::config::from_lines(&[
        "DOSSiteCount 1000",
        "DOSSiteInterval 60",
        "DOSPageCount 1000",
        "DOSPrefixCount 24 80",
    ])
    .unwrap();
    let server = server.resolve();
    let engine = FakeEngine::default();
    let farm = Some(&engine as &dyn Shared);
    let stores: Vec<Store> = (0..3).map(|_| Store::create(1 << 20).unwrap()).collect();
    let info = BlockInfo {
        rule: Counter::Site,
        score: 81,
        count: 80,
        interval: 60,
        host: "example.com",
        uri: "/page",
    };
    let ask = |store: &Store, c: IpAddr, key: Option<&crate::store::ClientKey>, at| {
        let owner;
        let key = match key {
            Some(k) => k,
            None => {
                owner = client_key(store, &server, c);
                &owner
            }
        };
        let r = Request {
            client: c,
            host: "example.com",
            path: "/page",
            key: Some(key),
        };
        count(store, &server, &dir, &r, at, farm)
    };
    for store in &stores {
        assert!(store
            .adopt_block(v4("192.0.2.0"), 24, &info, (T0, T0 + 30 * SEC), 1, 60, T0)
            .unwrap());
    }
    // During the block, one pass holder on each server: each takes a lease of the holders'
    // budget (a tenth of 80 and less), and spends one unit of it.
    for (k, store) in stores.iter().enumerate() {
        let c = v4(&format!("192.0.2.{}", 200 + k));
        let owner = client_key(store, &server, c);
        let held = store.holder_key(pass_client(&KEY, c), &owner, Epoch([0, 1, 0]));
        let outcome = ask(store, c, Some(&held), T0 + SEC);
        assert!(matches!(outcome, Outcome::Pass), "{outcome:?}");
    }
    // After the block, members without a pass, in turn over the servers.
    let served = (0..120)
        .filter(|&i| {
            let at = T0 + 31 * SEC + i;
            let c = v4(&format!("192.0.2.{}", 1 + i % 150));
            matches!(ask(&stores[i as usize % 3], c, None, at), Outcome::Pass)
        })
        .count();
    // Spending the holders' leftover leases too, they were served 80 + 22.
    assert_eq!(served, 80);
}

#[test]
fn the_page_is_sent_in_pieces_whose_fixed_parts_are_made_once() {
    let n = nonce::issue(&KEY, v4("192.0.2.7"), NOW, 16);
    let c = Challenge {
        nonce: &n,
        issued: NOW,
        bits: 16,
        return_to: "/page.html?x=1",
        retry_after: 0,
    };
    let (a, b) = (page::pieces(&c), page::pieces(&c));
    assert_eq!(a.concat(), page::html(&c));
    assert_eq!(a.len(), page::html(&c).len());
    // The fixed parts are the same memory each time (sent without a copy) ...
    assert!(std::ptr::eq(a.head, b.head) && std::ptr::eq(a.tail, b.tail));
    // ... and hold all but a short middle: the wait, the nonce, the difficulty, the URL.
    assert!(a.middle.len() < 512, "{}", a.middle);
    assert!(a.middle.contains(&n) && !a.head.contains(&n) && !a.tail.contains(&n));
    // A blocked client's page has its own head (why it is asked), and the wait in the middle.
    let blocked = page::pieces(&Challenge {
        retry_after: 90,
        ..c.clone()
    });
    assert!(!std::ptr::eq(blocked.head, a.head));
    assert!(blocked.head.contains("is blocked for now"));
    assert!(blocked.middle.contains("retry in 90 seconds"));
}
