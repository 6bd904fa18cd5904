//! Passes are not identities (SPEC §2a, §11): a blocked client that solves challenges with a
//! fast native solver (Rust threads, below) gets no more than twice its count per interval;
//! one nonce earns one pass; the passes of one client share its budget; a pass opens only the
//! block generation it was earned in; each further pass costs more work and they are capped;
//! pass holders cannot push their own client's block out of a small store.
//!
//! Each test prints what it measured (`cargo test --test identities passes:: -- --nocapture`).
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mod_shield::challenge::pow;

use crate::common::*;

const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
/// Status page readers use this address (uncounted there: DOSEnabled off).
const READER: &str = "192.0.2.250";

/// A server with the challenge on and mod_remoteip: `DOSPageCount COUNT` per `interval`
/// seconds on each page, a site count far away, `extra` on top.
fn server(count: u32, interval: u32, extra: &str) -> Apache {
    Apache::builder()
        .mpm(Mpm::Event)
        .remoteip()
        .config(&format!(
            "DOSPageCount {count}\n\
             DOSPageInterval {interval}\n\
             DOSSiteCount 100000\n\
             DOSSiteInterval 60\n\
             DOSLogDir \"@BLOCKS@\"\n\
             DOSChallenge on\n\
             {extra}\n\
             {STATUS_LOCATION}"
        ))
        .start()
}

/// `ip` asks /page.html until it is refused: blocked.
fn block(apache: &Apache, ip: &str) {
    let c = apache.client().ip(ip);
    for _ in 0..1000 {
        if c.get("/page.html").status == 429 {
            return;
        }
    }
    panic!("{ip} never blocked");
}

fn get(apache: &Apache, ip: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    apache.client().ip(ip).request("GET", path, headers)
}

fn auto_value(apache: &Apache, key: &str) -> u64 {
    let auto = get(apache, READER, "/shield-status?auto", &[]).body_text();
    auto.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("{key} missing:\n{auto}"))
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The solver: SHA-256("nonce:s") with `bits` leading zero bits, on every core
// ---------------------------------------------------------------------------------------------

/// SHA-256's initial state.
const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// `n` in decimal into `out`, returning how many digits.
fn decimal(mut n: u64, out: &mut [u8]) -> usize {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - i;
    out[..len].copy_from_slice(&digits[i..]);
    len
}

/// Leading zero bits of the digest of the padded one-block message `block` (the digest's
/// bytes are the state words big-endian, so its leading bits are the first words').
fn zero_bits(block: &[u8; 64]) -> u32 {
    let mut state = IV;
    let block = sha2::digest::generic_array::GenericArray::from_slice(block);
    sha2::compress256(&mut state, std::slice::from_ref(block));
    match state[0] {
        0 => 32 + state[1].leading_zeros(),
        w => w.leading_zeros(),
    }
}

/// The smallest solution of at least `start`: one thread per core, each trying every
/// `threads`-th number. `nonce:s` (at most 53 bytes) fits one SHA-256 block, so each try is
/// one compression of a block padded in place, nothing else.
fn solve_from(nonce: &str, bits: u8, start: u64) -> u64 {
    solve_before(nonce, bits, start, None).expect("no deadline")
}

/// [`solve_from`], giving up at `deadline`.
fn solve_before(nonce: &str, bits: u8, start: u64, deadline: Option<Instant>) -> Option<u64> {
    let threads = thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let found = AtomicU64::new(u64::MAX);
    let head = nonce.len() + 1;
    assert!(head + 20 <= 55, "nonce too long for one block");
    thread::scope(|scope| {
        for t in 0..threads {
            let found = &found;
            scope.spawn(move || {
                let mut block = [0u8; 64];
                block[..nonce.len()].copy_from_slice(nonce.as_bytes());
                block[nonce.len()] = b':';
                let mut s = start + t;
                while s < found.load(Ordering::Relaxed) {
                    let len = head + decimal(s, &mut block[head..]);
                    block[len..56].fill(0);
                    block[len] = 0x80;
                    block[56..].copy_from_slice(&(len as u64 * 8).to_be_bytes());
                    if zero_bits(&block) >= u32::from(bits) {
                        found.fetch_min(s, Ordering::Relaxed);
                        return;
                    }
                    s += threads;
                    if s % 65_536 < threads && deadline.is_some_and(|d| Instant::now() > d) {
                        return;
                    }
                }
            });
        }
    });
    let s = found.into_inner();
    if s == u64::MAX {
        return None;
    }
    // The module's own check agrees (guards the padding above).
    assert!(pow::check(nonce, s, bits), "{nonce} {bits} {s}");
    Some(s)
}

/// A challenge as the page carries it.
struct Challenge {
    nonce: String,
    bits: u8,
    /// The submission URL without the solution.
    next: String,
}

/// The value of `data-NAME="…"` in a page (with `&amp;` decoded).
fn data(page: &str, name: &str) -> Option<String> {
    let open = format!("data-{name}=\"");
    let start = page.find(&open)? + open.len();
    let end = start + page[start..].find('"')?;
    Some(page[start..end].replace("&amp;", "&"))
}

/// The challenge page `ip` gets for a navigation to `path`; None for anything else (a plain
/// refusal, or served).
fn challenge(apache: &Apache, ip: &str, path: &str) -> Option<Challenge> {
    let r = get(apache, ip, path, &[("Accept", HTML)]);
    let body = r.body_text();
    Some(Challenge {
        nonce: data(&body, "n")?,
        bits: data(&body, "d")?.parse().ok()?,
        next: data(&body, "next")?,
    })
}

/// Submits solution `s` of `ch`: the pass cookie (`shield_pass=…`) when one was issued.
fn submit(apache: &Apache, ip: &str, ch: &Challenge, s: u64) -> Option<String> {
    let r = get(apache, ip, &format!("{}{s}", ch.next), &[]);
    let cookie = r.header("Set-Cookie")?.split(';').next()?.to_string();
    assert_eq!(r.status, 303, "{cookie}");
    Some(cookie)
}

/// Where a solver starts: anywhere (an attacker's solutions of one nonce differ).
fn random_start() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now()) >> 24
}

/// Page, solve (from a random start), submit: a pass, and the bits it cost; None when no
/// page was given or the solution earned nothing.
fn earn(apache: &Apache, ip: &str) -> Option<(String, u8)> {
    let ch = challenge(apache, ip, "/page.html")?;
    let s = solve_from(&ch.nonce, ch.bits, random_start());
    Some((submit(apache, ip, &ch, s)?, ch.bits))
}

fn with_pass(apache: &Apache, ip: &str, cookie: &str, path: &str) -> u16 {
    get(apache, ip, path, &[("Cookie", cookie), ("Accept", "*/*")]).status
}

// ---------------------------------------------------------------------------------------------
// The attacks
// ---------------------------------------------------------------------------------------------

/// The farm: two threads of one blocked address, each with its own cookie jar, request the
/// page as fast as they can and solve every challenge they are given. Served requests are
/// counted per interval of the page count (buckets from the start).
fn farm(what: &str, ip: &str, extra: &str) {
    let (count, interval) = (5u32, 2u64);
    let apache = server(
        count,
        interval as u32,
        &format!("DOSBlockingPeriod 60\n{extra}"),
    );
    let run = Duration::from_secs(6 * interval);
    let buckets: Vec<AtomicUsize> = (0..6).map(|_| AtomicUsize::new(0)).collect();
    let (passes, requests) = (AtomicUsize::new(0), AtomicUsize::new(0));
    // Hashes tried (from each start to the solution found: the solver tries every number
    // between) and µs spent.
    let (hashes, solving) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let start = Instant::now();
    thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let mut cookie: Option<String> = None;
                while start.elapsed() < run {
                    let mut headers = vec![("Accept", HTML)];
                    if let Some(c) = &cookie {
                        headers.push(("Cookie", c));
                    }
                    let at = start.elapsed();
                    let r = get(&apache, ip, "/page.html", &headers);
                    requests.fetch_add(1, Ordering::Relaxed);
                    if r.status == 200 {
                        let b = (at.as_secs() / interval) as usize;
                        buckets[b.min(buckets.len() - 1)].fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let body = r.body_text();
                    let (Some(n), Some(d), Some(next)) =
                        (data(&body, "n"), data(&body, "d"), data(&body, "next"))
                    else {
                        continue; // a plain refusal: ask again
                    };
                    let ch = Challenge {
                        nonce: n,
                        bits: d.parse().unwrap(),
                        next,
                    };
                    let t0 = Instant::now();
                    let from = random_start();
                    let Some(s) = solve_before(&ch.nonce, ch.bits, from, Some(start + run)) else {
                        break;
                    };
                    solving.fetch_add(t0.elapsed().as_micros() as usize, Ordering::Relaxed);
                    hashes.fetch_add((s - from) as usize + 1, Ordering::Relaxed);
                    if let Some(c) = submit(&apache, ip, &ch, s) {
                        passes.fetch_add(1, Ordering::Relaxed);
                        cookie = Some(c);
                    }
                }
            });
        }
    });
    let took = start.elapsed().as_secs_f64();
    let per_bucket: Vec<usize> = buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
    let served: usize = per_bucket.iter().sum();
    let passes = passes.into_inner();
    println!(
        "passes farm ({what}): DOSPageCount {count} / {interval} s: served {served} of {} requests in \
         {took:.1} s ({:.0} per minute, {:.1} x the count per interval); per interval \
         {per_bucket:?}; {passes} passes ({:.0} per minute); solver {:.1} M hashes/s",
        requests.into_inner(),
        served as f64 / took * 60.0,
        served as f64 / (took / interval as f64) / f64::from(count),
        passes as f64 / took * 60.0,
        hashes.into_inner() as f64 / solving.into_inner().max(1) as f64,
    );
    let most = *per_bucket.iter().max().unwrap();
    assert!(
        most <= 2 * count as usize,
        "an interval served {most}: {per_bucket:?}"
    );
    // It did farm: passes were earned and served.
    assert!(passes >= 1 && served > count as usize, "{passes} {served}");
    drop(apache);
}

#[test]
fn a_farmer_solving_natively_is_served_at_most_twice_its_count_per_interval() {
    farm("defaults", "192.0.2.60", "");
}

/// The same with the cap out of the way and work that hardly rises: the shared budget alone
/// holds the farmer.
#[test]
fn without_the_cap_the_shared_budget_alone_holds_the_farmer() {
    farm(
        "no cap, 4 bits + 1 per pass",
        "192.0.2.66",
        "DOSChallengeDifficulty 4 0\nDOSChallengePassLimit 1000 1",
    );
}

/// Twenty different solutions of one nonce, submitted at once from twenty threads: one pass.
#[test]
fn one_nonce_earns_one_pass_however_many_solutions_it_has() {
    let apache = server(5, 60, "DOSBlockingPeriod 300");
    let ip = "192.0.2.61";
    block(&apache, ip);
    let ch = challenge(&apache, ip, "/page.html").expect("a challenge page");
    let mut solutions = Vec::new();
    let mut from = 0;
    while solutions.len() < 20 {
        let s = solve_from(&ch.nonce, ch.bits, from);
        solutions.push(s);
        from = s + 1;
    }
    let cookies: Vec<Option<String>> = thread::scope(|scope| {
        let handles: Vec<_> = solutions
            .iter()
            .map(|&s| {
                let (apache, ch) = (&apache, &ch);
                scope.spawn(move || submit(apache, ip, ch, s))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let passes: Vec<&String> = cookies.iter().flatten().collect();
    println!(
        "passes: 20 solutions of one nonce ({} bits) gave {} pass(es)",
        ch.bits,
        passes.len()
    );
    assert_eq!(passes.len(), 1, "{passes:?}");
    assert_eq!(apache.log_count("challenge passed by IP: 192.0.2.61"), 1);
    assert_eq!(auto_value(&apache, "ChallengesPassed"), 1);
    assert_eq!(auto_value(&apache, "ChallengesFailed"), 19);
    assert_eq!(auto_value(&apache, "ChallengesIssued"), 1);
    // The one pass works.
    assert_eq!(with_pass(&apache, ip, passes[0], "/a.txt"), 200);
    // A browser submitting one more of them gets a fresh challenge (one bit dearer: one
    // pass earned), not a dead end; a script gets the plain refusal.
    let r = get(
        &apache,
        ip,
        &format!("{}{}", ch.next, solutions[1]),
        &[("Accept", HTML)],
    );
    assert_eq!(r.status, 429);
    assert!(r.header("Set-Cookie").is_none());
    let d = data(&r.body_text(), "d").expect("a fresh challenge");
    assert_eq!(d.parse::<u8>().unwrap(), ch.bits + 1);
    // Leading back to the page first refused, not to the submission.
    let next = data(&r.body_text(), "next").unwrap();
    assert!(next.contains("&r=%2Fpage.html&"), "{next}");
    let r = get(&apache, ip, &format!("{}{}", ch.next, solutions[2]), &[]);
    assert_eq!(r.status, 429);
    assert!(data(&r.body_text(), "n").is_none());
    apache.assert_clean_log();
}

/// Twenty passes of one client (cheap ones: 4 bits and up), then 400 requests using them in
/// turn from four threads: the client's one budget, exactly.
#[test]
fn twenty_passes_used_in_turn_get_no_more_than_one_pass() {
    let count = 5;
    let apache = server(
        count,
        60,
        "DOSBlockingPeriod 300\nDOSChallengeDifficulty 4 2\nDOSChallengePassLimit 20",
    );
    let ip = "192.0.2.62";
    block(&apache, ip);
    let passes: Vec<String> = (0..20)
        .map(|i| earn(&apache, ip).unwrap_or_else(|| panic!("pass {i}")).0)
        .collect();
    let served = AtomicUsize::new(0);
    thread::scope(|scope| {
        for t in 0..4 {
            let (passes, served, apache) = (&passes, &served, &apache);
            scope.spawn(move || {
                for i in 0..100 {
                    let cookie = &passes[(t * 100 + i) % passes.len()];
                    if with_pass(apache, ip, cookie, "/page.html") == 200 {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let served = served.into_inner();
    println!("passes: 20 passes used in turn, DOSPageCount {count}: {served} of 400 served");
    assert_eq!(served, count as usize);
    // The crossing moved the client's own block on: generation 2, one block in the store.
    assert_eq!(
        apache
            .log_lines("blocking period started for IP: 192.0.2.62 ")
            .len(),
        2
    );
    assert!(apache
        .log_lines("blocking period started for IP: fd")
        .is_empty());
    assert_eq!(auto_value(&apache, "BlocksActive"), 1);
    // The ledger's records (passes earned, nonces spent) are no site's top scorers.
    let json = get(&apache, READER, "/shield-status?json", &[]).body_text();
    assert!(json.contains("\"top\""), "{json}");
    assert!(
        !json.contains("\\u0001") && !json.contains("challenge passes"),
        "{json}"
    );
    apache.assert_clean_log();
}

/// Passes earned in generation 1, and a challenge solved at generation 1's difficulty, tried
/// during the client's generation-2 block: nothing is let through.
#[test]
fn passes_of_generation_one_do_not_open_a_generation_two_block() {
    let apache = server(5, 60, "DOSBlockingPeriod 4 300");
    let ip = "192.0.2.63";
    block(&apache, ip);
    let old: Vec<String> = (0..3).map(|_| earn(&apache, ip).unwrap().0).collect();
    // An unused generation-1 challenge, solved at its difficulty.
    let stale = challenge(&apache, ip, "/page.html").unwrap();
    let stale_s = solve_from(&stale.nonce, stale.bits, 0);
    // The block ends; the client floods again: generation 2.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&apache, ip, "/a.txt", &[]).status == 429 {
        assert!(Instant::now() < deadline, "the 4 s block never ended");
        thread::sleep(Duration::from_millis(100));
    }
    block(&apache, ip);
    let starts = apache.log_lines("blocking period started for IP: 192.0.2.63 ");
    assert_eq!(starts.len(), 2, "{starts:?}");
    let served = (0..30)
        .filter(|i| with_pass(&apache, ip, &old[i % old.len()], "/other.html") == 200)
        .count();
    let late = submit(&apache, ip, &stale, stale_s);
    let now = challenge(&apache, ip, "/page.html").unwrap();
    println!(
        "passes: generation-1 passes during the generation-2 block: {served} of 30 served; \
         a generation-1 solution ({} bits) earned {}; generation 2 asks {} bits",
        stale.bits,
        if late.is_some() { "a pass" } else { "nothing" },
        now.bits
    );
    assert_eq!(served, 0);
    assert!(late.is_none());
    // Generation 2: 14 + 2, and one bit for each of the 3 passes already earned.
    assert_eq!((stale.bits, now.bits), (14 + 3, 16 + 3));
    // A pass of generation 2 opens it.
    let (fresh, _) = earn(&apache, ip).unwrap();
    assert_eq!(with_pass(&apache, ip, &fresh, "/other.html"), 200);
    apache.assert_clean_log();
}

/// A client that was never blocked itself, inside a /24 whose block is at generation 2: its
/// challenge asks generation 2's difficulty, and the pass it earns opens the /24's block.
#[test]
fn a_pass_earned_under_a_networks_second_block_opens_it() {
    let apache = server(100, 60, "DOSPrefixCount 24 6\nDOSBlockingPeriod 2 300");
    // Members, one request each, until one crosses the /24's count.
    let cross = |from: usize| {
        let crossed = (from..from + 10)
            .any(|i| get(&apache, &format!("203.0.113.{i}"), "/page.html", &[]).status == 429);
        assert!(crossed, "the /24 was never blocked");
    };
    cross(10);
    // The 2 s block ends; more members cross again: generation 2 (300 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&apache, "203.0.113.30", "/a.txt", &[]).status == 429 {
        assert!(Instant::now() < deadline, "the 2 s block never ended");
        thread::sleep(Duration::from_millis(100));
    }
    cross(40);
    let starts = apache.log_lines("blocking period started for IP: 203.0.113.0/24 ");
    assert_eq!(starts.len(), 2, "{starts:?}");
    let ip = "203.0.113.1";
    assert_eq!(get(&apache, ip, "/a.txt", &[]).status, 429);
    let (pass, bits) = earn(&apache, ip).expect("a challenge and a pass");
    println!("passes: a member of a /24 blocked at generation 2 solved {bits} bits");
    assert_eq!(bits, 16, "generation 2's difficulty (14 + 2)");
    assert_eq!(with_pass(&apache, ip, &pass, "/other.html"), 200);
    apache.assert_clean_log();
}

/// Twenty members of one /24 (mod_remoteip addresses), each on its own, solve every
/// challenge they get and use their passes: the passes count in the /24 too. The /24's count
/// of 40 holds all of them to twice it (40 before the /24's block, 40 of its pass holders
/// before they cross the /24's count, which closes every pass of the /24), where each member
/// alone could get 2 x its page count of 5 (200 together).
#[test]
fn members_of_a_slash24_with_passes_are_held_to_twice_the_slash24_count() {
    let (count, net_count) = (5usize, 40usize);
    let apache = server(
        count as u32,
        60,
        &format!(
            "DOSPrefixCount 24 {net_count}\nDOSBlockingPeriod 60\nDOSChallengeDifficulty 8 2\n\
             DOSChallengePassLimit 4 1"
        ),
    );
    let (served, with_passes, passes) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    thread::scope(|scope| {
        for t in 0..4 {
            let (served, with_passes, passes) = (&served, &with_passes, &passes);
            let apache = &apache;
            scope.spawn(move || {
                for m in 0..5 {
                    let ip = format!("198.51.100.{}", 10 + 5 * t + m);
                    let mut cookie: Option<String> = None;
                    while Instant::now() < deadline {
                        let mut headers = vec![("Accept", HTML)];
                        if let Some(c) = &cookie {
                            headers.push(("Cookie", c));
                        }
                        let r = get(apache, &ip, "/page.html", &headers);
                        if r.status == 200 {
                            served.fetch_add(1, Ordering::Relaxed);
                            if cookie.is_some() {
                                with_passes.fetch_add(1, Ordering::Relaxed);
                            }
                            continue;
                        }
                        let body = r.body_text();
                        let (Some(n), Some(d), Some(next)) =
                            (data(&body, "n"), data(&body, "d"), data(&body, "next"))
                        else {
                            break; // the plain refusal: this member is at its cap
                        };
                        let ch = Challenge {
                            nonce: n,
                            bits: d.parse().unwrap(),
                            next,
                        };
                        let Some(s) = solve_before(&ch.nonce, ch.bits, 0, Some(deadline)) else {
                            break;
                        };
                        if let Some(c) = submit(apache, &ip, &ch, s) {
                            passes.fetch_add(1, Ordering::Relaxed);
                            cookie = Some(c);
                        }
                    }
                }
            });
        }
    });
    let (served, with_passes, passes) = (
        served.into_inner(),
        with_passes.into_inner(),
        passes.into_inner(),
    );
    println!(
        "passes: 20 members of a /24 (DOSPrefixCount 24 {net_count}, DOSPageCount {count}): \
         served {served}, {with_passes} of them with one of {passes} passes"
    );
    assert!(passes >= 1 && with_passes >= 1, "{passes} {with_passes}");
    assert!(served <= 2 * net_count, "served {served}");
    // The /24's block moved on when its pass holders crossed its count.
    let json = get(&apache, READER, "/shield-status?json", &[]).body_text();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let net = v["blocks"]["listed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["client"] == "198.51.100.0" && b["prefix"] == 24)
        .unwrap_or_else(|| panic!("no /24 block: {json}"));
    assert!(net["generation"].as_u64().unwrap() >= 2, "{net}");
    apache.assert_clean_log();
}

/// Solve, flood with the pass until refused (its crossing moves the block on), again: the
/// difficulty rises with every pass and every pass holder's block, until the cap, after
/// which no challenge is given at all.
#[test]
fn difficulty_rises_with_every_pass_and_pass_holder_block_until_the_cap() {
    let limit = 10;
    let apache = server(
        3,
        60,
        &format!(
            "DOSBlockingPeriod 300\nDOSChallengeDifficulty 1 1\nDOSChallengePassLimit {limit} 1"
        ),
    );
    let ip = "192.0.2.64";
    block(&apache, ip);
    let mut bits = Vec::new();
    for round in 0..limit + 2 {
        let Some((cookie, cost)) = earn(&apache, ip) else {
            break;
        };
        bits.push(cost);
        // Each round on a page of its own, so each pass finds a budget and crosses it.
        let path = format!("/r{round}.html");
        apache.add_file(&path[1..], b"round\n");
        let mut n = 0;
        while with_pass(&apache, ip, &cookie, &path) == 200 {
            n += 1;
            assert!(n < 100, "never refused");
        }
        assert_eq!(n, 3, "round {round}");
    }
    println!(
        "passes: bits asked per pass (each pass then flooded until its holder was blocked): \
         {bits:?}; then no challenge"
    );
    // Generation g after g-1 pass-holder blocks, and e passes earned: 1 + (g-1) + e bits.
    let want: Vec<u8> = (0..limit as u8).map(|e| 1 + 2 * e).collect();
    assert_eq!(bits, want);
    // At the cap: a navigation gets the plain refusal, no page.
    let r = get(&apache, ip, "/page.html", &[("Accept", HTML)]);
    assert_eq!(r.status, 429);
    assert!(data(&r.body_text(), "n").is_none());
    assert_eq!(
        apache
            .log_lines("blocking period started for IP: 192.0.2.64 ")
            .len(),
        limit + 1
    );
    apache.assert_clean_log();
}

/// Passes the farmer earns (each one bit dearer than the one before).
const ROUNDS: usize = 20;

/// A farmer's own 120 s block in a 64 KiB store while it farms passes (cheap: no cap, one
/// bit more per pass) and floods with each: no pass holder's block is a record of its own,
/// so the farmer's block stays, the only one in the store.
#[test]
fn pass_holders_cannot_push_their_farmers_block_out_of_a_small_store() {
    let apache = server(
        2,
        60,
        "DOSBlockingPeriod 120\nDOSCache shmcb:none(65536)\nDOSChallengeDifficulty 1 0\n\
         DOSChallengePassLimit 1000 1",
    );
    let ip = "192.0.2.65";
    block(&apache, ip);
    let (mut passes, mut gone_after) = (0, None);
    for round in 0..ROUNDS {
        let (cookie, _) = earn(&apache, ip).unwrap_or_else(|| panic!("round {round}"));
        passes += 1;
        let path = format!("/f{round}.html");
        apache.add_file(&path[1..], b"farm\n");
        while with_pass(&apache, ip, &cookie, &path) == 200 {}
        // Is the farmer's block still there? Without a pass it must be refused.
        if get(&apache, ip, "/a.txt", &[]).status != 429 {
            gone_after = Some(passes);
            break;
        }
    }
    let active = auto_value(&apache, "BlocksActive");
    println!(
        "passes: 64 KiB store: the farmer's block, after {passes} passes each flooded until \
         refused: {}; active blocks {active}",
        gone_after.map_or("still there".to_string(), |n| format!(
            "gone after {n} passes"
        ))
    );
    assert_eq!(gone_after, None);
    assert_eq!(active, 1);
    assert!(apache
        .log_lines("blocking period started for IP: fd")
        .is_empty());
    apache.assert_clean_log();
}

/// The cap's directive: a bad value fails the configuration test, naming it.
#[test]
fn a_bad_pass_limit_fails_the_configuration_test() {
    for (value, want) in [
        ("0", "'0' is not a number of passes between 1 and 1000"),
        ("8 9", "'9' is not a number of bits between 1 and 8"),
    ] {
        let apache = Apache::builder()
            .config(&format!("DOSChallenge on\nDOSChallengePassLimit {value}\n"))
            .build();
        let (ok, out) = apache.config_test();
        assert!(!ok, "{out}");
        assert!(
            out.contains(&format!("DOSChallengePassLimit: {want}")),
            "{out}"
        );
    }
}
