//! Unit tests of the store (single process; `tests/store_processes.rs` forks).

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

const T0: Micros = 1_700_000_000_000_000;
const SEC: Micros = 1_000_000;

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

fn site(client: IpAddr) -> KeyParts<'static> {
    KeyParts {
        client,
        host: "example.org",
        path: "",
    }
}

fn block_key(client: IpAddr) -> KeyParts<'static> {
    KeyParts {
        client,
        host: "",
        path: "",
    }
}

fn info() -> BlockInfo<'static> {
    BlockInfo {
        rule: Counter::Page,
        score: 3,
        count: 2,
        interval: 1,
        host: "example.org",
        uri: "/login",
    }
}

fn periods(generation: u32) -> u32 {
    [5, 60, 120][(generation.max(1) as usize - 1).min(2)]
}

/// `n` clients whose `key(client)` records all fall in one sub-cache of `area`.
fn colliding(
    store: &Store,
    area: Area,
    n: usize,
    key: fn(IpAddr) -> KeyParts<'static>,
) -> Vec<IpAddr> {
    let mut by_sub: HashMap<usize, Vec<IpAddr>> = HashMap::new();
    for i in 0.. {
        let client = ip(i);
        let sub = store.sub_index(store.key_id(area, &key(client)));
        let list = by_sub.entry(sub).or_default();
        list.push(client);
        if list.len() == n {
            return list.clone();
        }
    }
    unreachable!()
}

/// Whether `key` has an unexpired record (inspects the table directly, changes nothing).
fn present(store: &Store, area: Area, key: &KeyParts, now: Micros) -> bool {
    let id = store.key_id(area, key);
    let sub = store.sub(area, id);
    sub.find(id, area)
        .is_some_and(|slot| sub.rec(slot).get_i64(R_EXPIRES) > now)
}

/// Byte offset of the record holding `key`.
fn record_at(store: &Store, area: Area, key: &KeyParts) -> usize {
    let id = store.key_id(area, key);
    let sub = store.sub(area, id);
    let slot = sub.find(id, area).expect("record present");
    store.geo.subcache_offset(area.index(), store.sub_index(id)) + record_offset(slot)
}

#[test]
fn sizes_are_checked() {
    assert!(Store::create(8191).is_err());
    let s = Store::create(8192).unwrap();
    assert_eq!(s.area_bytes(), 8192);
    assert_eq!(s.capacity(), 2 * SLOTS);
    assert_eq!(s.stats(Area::Page).capacity, 2 * SLOTS as u64);
    assert_eq!(Store::region_bytes(8192), HEADER_BYTES + 3 * 8192);
    let s = Store::create(524_288).unwrap();
    assert_eq!(s.capacity(), 524_288 / SUBCACHE_BYTES * SLOTS);
    assert_eq!(s.into_region().len(), Store::region_bytes(524_288));
}

#[test]
fn window_is_fixed_and_restarts_at_interval() {
    let s = Store::create(65536).unwrap();
    let k = site(ip(1));
    let h = s.add(Counter::Site, &k, 1, 2, T0).unwrap();
    assert_eq!((h.score, h.origin), (1, T0));
    let h = s.add(Counter::Site, &k, 1, 2, T0 + SEC).unwrap();
    assert_eq!((h.score, h.origin), (2, T0));
    let h = s.add(Counter::Site, &k, 1, 2, T0 + 2 * SEC - 1).unwrap();
    assert_eq!((h.score, h.origin), (3, T0), "still inside the window");
    let h = s.add(Counter::Site, &k, 1, 2, T0 + 2 * SEC).unwrap();
    assert_eq!((h.score, h.origin), (1, T0 + 2 * SEC), "window restarted");
    // The other areas and other keys are independent.
    let p = KeyParts { path: "/a", ..k };
    assert_eq!(
        s.add(Counter::Page, &p, 1, 2, T0 + 2 * SEC).unwrap().score,
        1
    );
    assert_eq!(
        s.add(Counter::Site, &site(ip(2)), 1, 2, T0).unwrap().score,
        1
    );
}

#[test]
fn fields_cannot_be_confused() {
    let s = Store::create(65536).unwrap();
    let a = KeyParts {
        client: ip(1),
        host: "ab",
        path: "c",
    };
    let b = KeyParts {
        client: ip(1),
        host: "a",
        path: "bc",
    };
    assert_ne!(s.key_id(Area::Page, &a), s.key_id(Area::Page, &b));
    assert_ne!(s.key_id(Area::Page, &a), s.key_id(Area::Site, &a));
    let v6 = IpAddr::V6(Ipv4Addr::from(0x0a00_0001).to_ipv6_mapped());
    assert_ne!(
        s.key_id(Area::Site, &site(ip(1))),
        s.key_id(Area::Site, &site(v6))
    );
    s.add(Counter::Page, &a, 5, 60, T0).unwrap();
    assert_eq!(s.add(Counter::Page, &b, 1, 60, T0).unwrap().score, 1);
}

#[test]
fn keys_hash_apart_and_long_keys_work() {
    let s = Store::create(8192).unwrap();
    let long = format!("/{}", "x".repeat(300));
    let id = |host: &str, path: &str| {
        s.key_id(
            Area::Page,
            &KeyParts {
                client: ip(1),
                host,
                path,
            },
        )
    };
    // Length prefixes: moving a byte between host and path is another key.
    assert_ne!(id("example.or", "g/a"), id("example.org", "/a"));
    assert_ne!(id("example.org", "/a"), id("example.org", &long));
    assert_eq!(id("example.org", &long), id("example.org", &long.clone()));
    // Another region (another random key) gives other ids.
    let t = Store::create(8192).unwrap();
    let k = KeyParts {
        client: ip(1),
        host: "example.org",
        path: "/a",
    };
    assert_ne!(s.key_id(Area::Page, &k), t.key_id(Area::Page, &k));
}

#[test]
fn scores_clamp_at_zero_and_take_negative_deltas() {
    let s = Store::create(65536).unwrap();
    let k = site(ip(1));
    assert_eq!(s.add(Counter::Site, &k, -5, 60, T0).unwrap().score, 0);
    assert_eq!(s.add(Counter::Site, &k, 3, 60, T0).unwrap().score, 3);
    assert_eq!(s.add(Counter::Site, &k, -1, 60, T0).unwrap().score, 2);
    assert_eq!(s.add(Counter::Site, &k, -10, 60, T0).unwrap().score, 0);
    assert_eq!(s.add(Counter::Site, &k, 1, 60, T0).unwrap().score, 1);
    assert_eq!(
        s.add(Counter::Site, &k, i64::MAX, 60, T0).unwrap().score,
        i64::MAX
    );
    assert_eq!(s.add(Counter::Site, &k, 1, 60, T0).unwrap().score, i64::MAX);
}

#[test]
fn reset_restarts_the_window_only_when_present() {
    let s = Store::create(65536).unwrap();
    let k = site(ip(1));
    s.reset(Counter::Site, &k, T0);
    assert_eq!(
        s.stats(Area::Site).entries,
        0,
        "reset of an absent key creates nothing"
    );
    s.add(Counter::Site, &k, 7, 10, T0).unwrap();
    s.reset(Counter::Site, &k, T0 + 4 * SEC);
    let h = s.add(Counter::Site, &k, 1, 10, T0 + 12 * SEC).unwrap();
    assert_eq!(
        (h.score, h.origin),
        (1, T0 + 4 * SEC),
        "window runs from the reset"
    );
}

#[test]
fn block_generations_count_up_and_are_forgotten() {
    let s = Store::create(65536).unwrap();
    let c = ip(1);
    let b1 = s.start_block(c, &info(), T0, &periods, 3600).unwrap();
    assert_eq!((b1.generation, b1.started, b1.until), (1, T0, T0 + 5 * SEC));
    assert_eq!(
        (b1.rule, b1.score, b1.count, b1.interval),
        (Counter::Page, 3, 2, 1)
    );
    assert_eq!(
        (b1.host.as_str(), b1.uri.as_str()),
        ("example.org", "/login")
    );
    assert!(s
        .start_block(c, &info(), T0 + SEC, &periods, 3600)
        .is_none());
    assert_eq!(s.active_block(c, T0 + SEC), Some(b1.clone()));
    assert_eq!(s.active_block(c, T0 + 5 * SEC), None, "until is exclusive");
    assert_eq!(s.active_block(ip(2), T0), None);

    let b2 = s
        .start_block(c, &info(), T0 + 10 * SEC, &periods, 3600)
        .unwrap();
    assert_eq!((b2.generation, b2.until), (2, T0 + 70 * SEC));
    let b3 = s.start_block(c, &info(), b2.until, &periods, 3600).unwrap();
    assert_eq!((b3.generation, b3.until - b3.started), (3, 120 * SEC));
    let b4 = s
        .start_block(c, &info(), b3.until + 3600 * SEC - 1, &periods, 3600)
        .unwrap();
    assert_eq!(
        b4.generation, 4,
        "still remembered one µs before the memory ends"
    );
    let b5 = s
        .start_block(c, &info(), b4.until + 3600 * SEC, &periods, 3600)
        .unwrap();
    assert_eq!(b5.generation, 1, "forgotten once the memory has passed");
}

#[test]
fn long_texts_are_truncated() {
    let s = Store::create(65536).unwrap();
    let host = "h".repeat(100);
    let uri = format!("/{}", "u".repeat(200));
    let i = BlockInfo {
        host: &host,
        uri: &uri,
        ..info()
    };
    let b = s.start_block(ip(1), &i, T0, &periods, 60).unwrap();
    assert_eq!(b.host, "h".repeat(HOST_TEXT_MAX));
    assert_eq!(b.uri.len(), TEXT_BYTES - HOST_TEXT_MAX);
    assert!(uri.starts_with(&b.uri));
    assert_eq!(s.active_block(ip(1), T0), Some(b));
}

#[test]
fn start_block_succeeds_exactly_once_under_races() {
    let s = Store::create(524_288).unwrap(); // room for all 200 without evictions
    let threads = 4;
    let clients = 200;
    let started: Vec<AtomicUsize> = (0..clients).map(|_| AtomicUsize::new(0)).collect();
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for (n, count) in started.iter().enumerate() {
                    barrier.wait();
                    if s.start_block(ip(n as u32), &info(), T0, &periods, 60)
                        .is_some()
                    {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert!(started.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    assert_eq!(s.stats(Area::Block).entries, clients as u64);
}

#[test]
fn eviction_takes_an_expired_record_first() {
    let s = Store::create(65536).unwrap();
    let clients = colliding(&s, Area::Site, SLOTS + 1, site);
    for (i, c) in clients[..SLOTS].iter().enumerate() {
        let interval = if i == 7 { 1 } else { 100 };
        s.add(Counter::Site, &site(*c), 1, interval, T0 + i as i64)
            .unwrap();
    }
    let before = s.stats(Area::Site);
    assert_eq!(before.entries, SLOTS as u64);
    let now = T0 + 2 * SEC;
    s.add(Counter::Site, &site(clients[SLOTS]), 1, 100, now)
        .unwrap();
    let after = s.stats(Area::Site);
    assert_eq!(after.expired - before.expired, 1);
    assert_eq!(after.evicted, before.evicted);
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(
            present(&s, Area::Site, &site(*c), now),
            i != 7,
            "client {i}"
        );
    }
}

#[test]
fn eviction_takes_the_lowest_score_then_the_least_recently_used() {
    let s = Store::create(65536).unwrap();
    let key = |c: IpAddr| KeyParts {
        client: c,
        host: "h",
        path: "/p",
    };
    let clients = colliding(&s, Area::Page, SLOTS + 3, key);
    for (i, c) in clients[..SLOTS].iter().enumerate() {
        s.add(Counter::Page, &key(*c), 1, 100, T0 + i as i64)
            .unwrap();
    }
    // Touch all but #3 again, #0 first: they score 2, #3 scores 1.
    for (i, c) in clients[..SLOTS].iter().enumerate().filter(|(i, _)| *i != 3) {
        s.add(Counter::Page, &key(*c), 1, 100, T0 + SEC + i as i64)
            .unwrap();
    }
    let now = T0 + 2 * SEC;
    s.add(Counter::Page, &key(clients[SLOTS]), 1, 100, now)
        .unwrap();
    assert!(!present(&s, Area::Page, &key(clients[3]), now));
    // A one-request newcomer pushes out the other one-request client, the most recent one,
    // rather than any client that is counting up.
    s.add(Counter::Page, &key(clients[SLOTS + 1]), 1, 100, now + 1)
        .unwrap();
    assert!(!present(&s, Area::Page, &key(clients[SLOTS]), now));
    for c in clients[..SLOTS].iter().enumerate().filter(|(i, _)| *i != 3) {
        assert!(present(&s, Area::Page, &key(*c.1), now), "client {}", c.0);
    }
    // Raise the newcomer to 2 as well: now every score is 2, and the least recently used
    // (#0, touched first) goes.
    s.add(Counter::Page, &key(clients[SLOTS + 1]), 1, 100, now + 2)
        .unwrap();
    s.add(Counter::Page, &key(clients[SLOTS + 2]), 1, 100, now + 3)
        .unwrap();
    assert!(!present(&s, Area::Page, &key(clients[0]), now));
    let live = clients
        .iter()
        .filter(|c| present(&s, Area::Page, &key(**c), now));
    assert_eq!(live.count(), SLOTS);
    assert_eq!(s.stats(Area::Page).evicted, 3);
    assert_eq!(s.blocks_evicted(), 0, "no block was evicted");
    assert_eq!(s.live_evicted(), 3);
}

/// The flood of the many-identities attack, in miniature: one sub-cache, a client counting
/// up towards its limit, and many times the sub-cache's size of one-request clients between
/// each of its requests. The counting client is never pushed out, so it is held to its count.
#[test]
fn a_flood_of_one_request_clients_never_evicts_a_client_counting_up() {
    let s = Store::create(65536).unwrap();
    let key = |c: IpAddr| KeyParts {
        client: c,
        host: "h",
        path: "/p",
    };
    let clients = colliding(&s, Area::Page, 20 * SLOTS + 1, key);
    let (abuser, flood) = clients.split_first().unwrap();
    // Counting up: its second request comes before 16 others land in its sub-cache. (At
    // score 1 it is one of many one-request records, and the least recently used of those
    // goes first: a store sized for the flood makes that gap long, see docs/directives.md.)
    s.add(Counter::Page, &key(*abuser), 1, 100, T0).unwrap();
    let mut now = T0 + 1;
    for round in 2..=10 {
        let hit = s.add(Counter::Page, &key(*abuser), 1, 100, now).unwrap();
        assert_eq!(hit.score, round, "the abuser's count is kept");
        for c in flood {
            now += 1;
            s.add(Counter::Page, &key(*c), 1, 100, now).unwrap();
        }
    }
}

#[test]
fn active_blocks_outlive_remembered_ones() {
    let s = Store::create(65536).unwrap();
    let clients = colliding(&s, Area::Block, SLOTS + 1, block_key);
    for (i, c) in clients[..SLOTS - 1].iter().enumerate() {
        s.start_block(*c, &info(), T0 + i as i64, &|_| 100, 1000)
            .unwrap();
    }
    // The most recently used record, but its block is over (remembered only).
    let remembered = clients[SLOTS - 1];
    s.start_block(remembered, &info(), T0 + 50 * SEC, &|_| 0, 1000)
        .unwrap();
    let now = T0 + 60 * SEC;
    s.start_block(clients[SLOTS], &info(), now, &|_| 100, 1000)
        .unwrap();
    assert!(!present(&s, Area::Block, &block_key(remembered), now));
    for c in clients.iter().filter(|c| **c != remembered) {
        assert!(s.active_block(*c, now).is_some());
    }
    assert_eq!(s.stats(Area::Block).evicted, 1);
}

#[test]
fn a_sub_cache_of_active_blocks_drops_the_one_ending_first() {
    let s = Store::create(65536).unwrap();
    let clients = colliding(&s, Area::Block, SLOTS + 1, block_key);
    // Later starters get shorter blocks: the earliest end is the most recently used.
    for (i, c) in clients[..SLOTS].iter().enumerate() {
        let period = 1000 - 10 * i as u32;
        s.start_block(*c, &info(), T0 + i as i64, &move |_| period, 1000)
            .unwrap();
    }
    let now = T0 + SEC;
    s.start_block(clients[SLOTS], &info(), now, &|_| 1000, 1000)
        .unwrap();
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(
            s.active_block(*c, now).is_some(),
            i != SLOTS - 1,
            "client {i}"
        );
    }
    assert_eq!(s.blocks_evicted(), 1, "the active block evicted is counted");
}

#[test]
fn flood_keeps_capacity_and_an_earlier_block() {
    let s = Store::create(16384).unwrap();
    let cap = s.capacity();
    let blocked: IpAddr = "2001:db8::66".parse().unwrap();
    s.start_block(blocked, &info(), T0, &|_| 3600, 86400)
        .unwrap();
    let flood = 10 * cap as u32;
    for i in 0..flood {
        let now = T0 + i64::from(i);
        let c = IpAddr::V6(Ipv6Addr::from(
            0x2001_0db8_0000_0000_0000_0000_0001_0000u128 + u128::from(i),
        ));
        s.add(Counter::Site, &site(c), 1, 60, now).unwrap();
        let path = format!("/p{i}");
        let k = KeyParts {
            client: ip(1),
            host: "example.org",
            path: &path,
        };
        s.add(Counter::Page, &k, 1, 60, now).unwrap();
        // Blocks that end at once: remembered, never active.
        s.start_block(c, &info(), now, &|_| 0, 86400).unwrap();
    }
    let now = T0 + i64::from(flood);
    assert_eq!(s.active_block(blocked, now).map(|b| b.generation), Some(1));
    assert_summaries_exact(&s);
    for area in Area::ALL {
        let st = s.stats(area);
        assert_eq!(st.capacity, cap as u64);
        assert_eq!(st.entries, cap as u64, "{area:?} is full");
        assert!(
            st.evicted >= u64::from(flood) - cap as u64,
            "{area:?}: {st:?}"
        );
    }
    assert_eq!(s.stats(Area::Site).inserted, u64::from(flood));
    assert_eq!(s.stats(Area::Block).inserted, u64::from(flood) + 1);
}

#[test]
fn statistics_follow_operations() {
    let s = Store::create(65536).unwrap();
    let k = site(ip(1));
    s.add(Counter::Site, &k, 1, 10, T0).unwrap();
    s.add(Counter::Site, &k, 1, 10, T0 + 1).unwrap();
    s.add(Counter::Site, &k, 1, 10, T0 + 10 * SEC).unwrap(); // expired: new window
    s.add(Counter::Site, &site(ip(2)), 1, 10, T0).unwrap();
    let st = s.stats(Area::Site);
    assert_eq!(
        (
            st.entries,
            st.inserted,
            st.hits,
            st.misses,
            st.expired,
            st.evicted
        ),
        (2, 2, 1, 3, 1, 0)
    );
    assert_eq!(s.live_entries(Area::Site, T0 + 10 * SEC), 1);
    assert!(s.active_block(ip(1), T0).is_none());
    s.start_block(ip(1), &info(), T0, &periods, 60).unwrap();
    assert!(s.active_block(ip(1), T0).is_some());
    let st = s.stats(Area::Block);
    assert_eq!((st.entries, st.inserted, st.hits, st.misses), (1, 1, 1, 1));
    assert_eq!(s.stats(Area::Page).inserted, 0);
}

#[test]
fn a_corrupt_record_is_dropped() {
    let s = Store::create(16384).unwrap();
    let k = KeyParts {
        client: ip(1),
        host: "example.org",
        path: "/a",
    };
    s.add(Counter::Page, &k, 5, 60, T0).unwrap();
    let rec = record_at(&s, Area::Page, &k);
    // Host length 200: longer than the text field.
    s.region()
        .u8_at(rec + R_META + 3)
        .store(200, Ordering::Relaxed);
    assert!(s.snapshot(Area::Page, T0, 10).is_empty());
    assert_eq!(s.stats(Area::Page).entries, 0);
    let h = s.add(Counter::Page, &k, 1, 60, T0 + 1).unwrap();
    assert_eq!(
        (h.score, h.origin),
        (1, T0 + 1),
        "a fresh record replaced it"
    );
    assert_eq!(s.repairs(Area::Page).0, 1);

    // A block record whose rule byte is scribbled is not reported as a block.
    s.start_block(ip(1), &info(), T0, &periods, 60).unwrap();
    let rec = record_at(&s, Area::Block, &block_key(ip(1)));
    s.region()
        .u8_at(rec + R_META + 2)
        .store(9, Ordering::Relaxed);
    assert!(s.active_block(ip(1), T0).is_none());
    assert!(s.snapshot(Area::Block, T0, 10).is_empty());
}

#[test]
fn taking_over_a_dead_holders_lock_repairs_its_sub_cache() {
    let s = Store::create(65536).unwrap();
    let clients = colliding(&s, Area::Site, 2, site);
    s.add(Counter::Site, &site(clients[0]), 1, 60, T0).unwrap();
    // The holder died half-way through rewriting that record (id no longer matches its tag)…
    let rec = record_at(&s, Area::Site, &site(clients[0]));
    s.region()
        .u64_at(rec + R_ID0)
        .store(12345, Ordering::Relaxed);
    // …and its lock word names no live process.
    let id = s.key_id(Area::Site, &site(clients[1]));
    s.sub(Area::Site, id)
        .lock_word()
        .store(7 << 16, Ordering::Relaxed);
    let t = Instant::now();
    let hit = s.add(Counter::Site, &site(clients[1]), 1, 60, T0).unwrap();
    assert!(t.elapsed() < Duration::from_millis(50));
    assert_eq!(hit.score, 1);
    assert_eq!(
        s.repairs(Area::Site),
        (1, 1),
        "one record dropped, one lock taken over"
    );
    assert_eq!(s.stats(Area::Site).entries, 1);
}

#[test]
fn store_and_region_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
    check::<Region>();
}

#[test]
fn garbage_everywhere_never_panics() {
    let s = Store::create(16384).unwrap();
    for i in 0..100 {
        s.add(Counter::Site, &site(ip(i)), 1, 60, T0).unwrap();
        s.start_block(ip(i), &info(), T0, &periods, 60).unwrap();
    }
    // xorshift over every byte after the header, lock words and counters included.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for off in HEADER_BYTES..s.region().len() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.region().u8_at(off).store(x as u8, Ordering::Relaxed);
    }
    for round in 0..2 {
        let mut ok = 0;
        for i in 0..200 {
            let k = KeyParts {
                client: ip(i),
                host: "example.org",
                path: "/x",
            };
            ok += usize::from(s.add(Counter::Page, &k, 1, 60, T0).is_some());
            ok += usize::from(s.add(Counter::Site, &site(ip(i)), 1, 60, T0).is_some());
            let _ = s.active_block(ip(i), T0);
            let _ = s.start_block(ip(i), &info(), T0, &periods, 60);
            s.reset(Counter::Page, &k, T0);
        }
        if round == 1 {
            assert_eq!(ok, 400, "every lock was recovered in the first round");
        }
    }
    for area in Area::ALL {
        let _ = s.snapshot(area, T0, 1000);
        assert!(s.stats(area).entries <= s.capacity() as u64);
    }
    assert!(
        s.repairs(Area::Block).1 > 0,
        "garbage lock words were taken over"
    );
}

#[test]
fn attach_keeps_state_and_rejects_foreign_regions() {
    let s = Store::create(8192).unwrap();
    let k = site(ip(1));
    s.add(Counter::Site, &k, 5, 60, T0).unwrap();
    s.start_block(ip(1), &info(), T0, &periods, 60).unwrap();
    let created = s.created();
    let s = Store::attach(s.into_region()).unwrap();
    assert_eq!(
        s.add(Counter::Site, &k, 1, 60, T0 + 1).unwrap().score,
        6,
        "same key"
    );
    assert!(s.active_block(ip(1), T0 + 1).is_some());
    assert_eq!((s.created(), s.attaches()), (created, 1));

    let (ptr, len) = s.into_region().into_raw();
    // SAFETY: straight back from into_raw.
    let region = unsafe { Region::from_raw(ptr, len) };
    let s = Store::attach(region).unwrap();

    let region = s.into_region();
    region
        .u64_at(H_VERSION)
        .store(u64::from(VERSION + 1) | (176 << 32), Ordering::Relaxed);
    assert_eq!(
        Store::attach(region).unwrap_err(),
        StoreError::BadVersion(VERSION + 1)
    );

    let s = Store::create(8192).unwrap();
    let region = s.into_region();
    region.u64_at(H_AREA_BYTES).store(16384, Ordering::Relaxed);
    assert!(matches!(
        Store::attach(region),
        Err(StoreError::BadGeometry(_))
    ));

    let s = Store::create(8192).unwrap();
    let region = s.into_region();
    region.u64_at(H_MAGIC).store(0, Ordering::Relaxed);
    let err = Store::attach(region).unwrap_err();
    assert_eq!(err, StoreError::BadMagic);
    assert!(err.to_string().contains("mod_shield"));

    assert_eq!(
        Store::attach(Region::new(64).unwrap()).unwrap_err(),
        StoreError::TooSmall(64)
    );
    assert_eq!(
        Store::attach(Region::new(1 << 16).unwrap()).unwrap_err(),
        StoreError::BadMagic
    );
}

#[test]
fn new_regions_get_different_keys() {
    let a = Store::create(8192).unwrap();
    let b = Store::create(8192).unwrap();
    assert_ne!(
        a.key_id(Area::Site, &site(ip(1))),
        b.key_id(Area::Site, &site(ip(1)))
    );
}

#[test]
fn blocks_carry_over_to_a_resized_store() {
    let old = Store::create(8192).unwrap();
    let new = Store::create(65536).unwrap();
    let (active, remembered, forgotten, newer) = (ip(1), ip(2), ip(3), ip(4));
    let b1 = old
        .start_block(active, &info(), T0, &periods, 3600)
        .unwrap();
    old.start_block(remembered, &info(), T0 - 100 * SEC, &periods, 3600)
        .unwrap();
    old.start_block(forgotten, &info(), T0 - 10_000 * SEC, &periods, 3600)
        .unwrap();
    old.start_block(newer, &info(), T0 - 100 * SEC, &periods, 3600)
        .unwrap();
    // The new store already knows `newer` at a higher generation: that one stays.
    for g in 0..3 {
        new.start_block(
            newer,
            &info(),
            T0 - 1000 * SEC + g * 200 * SEC,
            &periods,
            3600,
        )
        .unwrap();
    }
    assert_eq!(new.copy_blocks_from(&old, T0 + 1), 2);
    assert_eq!(new.active_block(active, T0 + 1), Some(b1));
    let now = T0 + 10 * SEC;
    assert_eq!(
        new.start_block(remembered, &info(), now, &periods, 3600)
            .unwrap()
            .generation,
        2
    );
    assert_eq!(
        new.start_block(forgotten, &info(), now, &periods, 3600)
            .unwrap()
            .generation,
        1
    );
    assert_eq!(
        new.start_block(newer, &info(), now, &periods, 3600)
            .unwrap()
            .generation,
        4
    );
    assert_eq!(new.copy_blocks_from(&new, now), 0);
}

#[test]
fn snapshot_orders_and_limits() {
    let s = Store::create(65536).unwrap();
    for (n, score) in [(1, 3), (2, 1), (3, 2)] {
        let k = KeyParts {
            client: ip(n),
            host: "example.org",
            path: "/a",
        };
        s.add(Counter::Page, &k, score, 60, T0).unwrap();
    }
    s.add(Counter::Page, &site(ip(9)), 50, 1, T0).unwrap(); // expires before `now`
    let now = T0 + 2 * SEC;
    let top = s.snapshot(Area::Page, now, 2);
    assert_eq!(top.iter().map(|r| r.score).collect::<Vec<_>>(), vec![3, 2]);
    assert_eq!(
        (top[0].client, top[0].host.as_str(), top[0].path.as_str()),
        (ip(1), "example.org", "/a")
    );
    assert_eq!(top[0].expires, T0 + 60 * SEC);

    s.start_block(ip(1), &info(), T0, &|_| 10, 60).unwrap();
    s.start_block(ip(2), &info(), T0, &|_| 30, 60).unwrap();
    s.start_block(ip(3), &info(), T0, &|_| 0, 60).unwrap(); // remembered only
    let blocks = s.snapshot(Area::Block, now, 10);
    let order: Vec<_> = blocks.iter().map(|b| b.client).collect();
    assert_eq!(order, vec![ip(2), ip(1), ip(3)]);
    assert_eq!(
        (blocks[0].rule, blocks[0].path.as_str()),
        (Some(Counter::Page), "/login")
    );
    let active = s.active_blocks(now, 10);
    assert_eq!(
        active.iter().map(|b| b.client).collect::<Vec<_>>(),
        vec![ip(2), ip(1)]
    );
}

#[test]
fn a_held_lock_fails_open_for_counts_and_closed_for_blocks() {
    let s = Store::create(65536).unwrap();
    let k = site(ip(1));
    assert!(s.debug_hold_lock(Area::Site, &k));
    let t0 = Instant::now();
    assert!(s.add(Counter::Site, &k, 1, 60, T0).is_none());
    let waited = t0.elapsed();
    assert!(
        waited >= lock::LOCK_TIMEOUT && waited < lock::LOCK_TIMEOUT + Duration::from_millis(300),
        "{waited:?}"
    );
    assert_eq!(s.fail_opens(), 1, "the give-up is counted");

    // A block starts under its client's site lock (as a request's does): a client whose site
    // record is not in the held sub-cache.
    let held = s.sub_index(s.key_id(Area::Site, &k));
    let c = (7..)
        .map(ip)
        .find(|&c| s.sub_index(s.key_id(Area::Site, &site(c))) != held)
        .unwrap();
    let b = s.start_block(c, &info(), T0, &periods, 60).unwrap();
    assert!(s.debug_hold_lock(Area::Block, &block_key(c)));
    assert_eq!(
        s.active_block(c, T0 + 1),
        Some(b),
        "known block read without the lock"
    );
    assert!(s
        .start_block(c, &info(), T0 + 10 * SEC, &periods, 60)
        .is_none());
}

#[derive(Clone, Debug)]
enum Op {
    Add {
        site: bool,
        client: u8,
        path: u8,
        delta: i64,
    },
    Reset {
        site: bool,
        client: u8,
        path: u8,
    },
    Advance(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0u8..4, 0u8..3, -3i64..6)
            .prop_map(|(site, client, path, delta)| Op::Add { site, client, path, delta }),
        1 => (any::<bool>(), 0u8..4, 0u8..3)
            .prop_map(|(site, client, path)| Op::Reset { site, client, path }),
        2 => (0i64..1_500_000).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Against a HashMap model: fixed windows, clamping, resets (no eviction: few keys).
    #[test]
    fn add_and_reset_match_a_model(ops in prop::collection::vec(op(), 1..120)) {
        let s = Store::create(65536).unwrap();
        let mut model: HashMap<(bool, u8, u8), (i64, Micros)> = HashMap::new();
        let mut now = T0;
        let paths = ["/a", "/b", "/c/d"];
        // Area, interval (s), model key and store key of an operation's target.
        let target = |site: bool, client: u8, path: u8| {
            let key = KeyParts {
                client: ip(u32::from(client)),
                host: "h",
                path: if site { "" } else { paths[usize::from(path)] },
            };
            if site {
                (Counter::Site, 2, (true, client, 0), key)
            } else {
                (Counter::Page, 1, (false, client, path), key)
            }
        };
        for op in ops {
            match op {
                Op::Advance(us) => now += us,
                Op::Add { site, client, path, delta } => {
                    let (area, span, mk, key) = target(site, client, path);
                    let entry = model.entry(mk).or_insert((0, now));
                    if now - entry.1 >= span * SEC {
                        *entry = (0, now);
                    }
                    entry.0 = (entry.0 + delta).max(0);
                    let hit = s.add(area, &key, delta, span as u32, now).unwrap();
                    prop_assert_eq!((hit.score, hit.origin), *entry);
                }
                Op::Reset { site, client, path } => {
                    let (area, span, mk, key) = target(site, client, path);
                    if let Some(entry) = model.get_mut(&mk) {
                        if now - entry.1 < span * SEC {
                            *entry = (0, now);
                        }
                    }
                    s.reset(area, &key, now);
                }
            }
        }
        prop_assert_eq!(s.live_entries(Area::Site, now) + s.live_entries(Area::Page, now),
            model.iter().filter(|((site, _, _), (_, origin))| now - origin < if *site { 2 * SEC } else { SEC }).count() as u64);
    }
}

/// Every block sub-cache's tag summary covers the bits of its present tags, and has no
/// other bits after writes by lock holders (a missing bit would hide a block from the
/// lock-free check).
/// Every sub-cache's last control word is what its tags say: the tag summary of a block
/// sub-cache, the occupied slots of a site or page sub-cache.
fn assert_summaries_exact(s: &Store) {
    for area in Area::ALL {
        for (i, sub) in s.subs(area).enumerate() {
            let tags = (0..SLOTS).map(|slot| {
                s.region()
                    .u32_at(sub.base() + tag_offset(slot))
                    .load(Ordering::Relaxed)
            });
            let want = if area == Area::Block {
                tags.filter(|&t| t != 0)
                    .fold(0u64, |m, t| m | 1 << (t >> 26))
            } else {
                tags.enumerate()
                    .filter(|&(_, t)| t != 0)
                    .fold(0u64, |m, (slot, _)| m | 1 << slot)
            };
            let have = s
                .region()
                .u64_at(sub.base() + C_TAGS)
                .load(Ordering::Relaxed);
            assert_eq!(have, want, "{area:?} sub-cache {i}");
        }
    }
}

#[test]
fn tag_summaries_follow_inserts_evictions_and_removals() {
    let s = Store::create(16384).unwrap();
    assert_summaries_exact(&s);
    for i in 0..200u32 {
        s.add(Counter::Site, &site(ip(i)), 1, 60, T0).unwrap();
        s.start_block(ip(i), &info(), T0, &periods, 60).unwrap();
    }
    assert_summaries_exact(&s);
    let found = (0..200u32)
        .filter(|&i| s.active_block(ip(i), T0).is_some())
        .count();
    assert!(found > 0);
    // Forgotten by an administrator: the summary loses the bits nobody else has.
    for i in 0..200u32 {
        s.end_block(ip(i), T0, true).unwrap();
    }
    assert_summaries_exact(&s);
    assert!((0..200u32).all(|i| s.active_block(ip(i), T0).is_none()));
    assert_eq!(
        s.subs(Area::Block)
            .map(|sub| s
                .region()
                .u64_at(sub.base() + C_TAGS)
                .load(Ordering::Relaxed))
            .sum::<u64>(),
        0,
        "an emptied block area rules every tag out"
    );
}

#[test]
fn a_scribbled_tag_summary_hides_a_block_until_its_next_write_and_never_duplicates_it() {
    let s = Store::create(16384).unwrap();
    s.start_block(ip(9), &info(), T0, &|_| 1, 60).unwrap();
    let (id, _, _) = s.block_id(ip(9));
    let sub = s.sub(Area::Block, id);
    let summary = s.region().u64_at(sub.base() + C_TAGS);
    summary.store(0, Ordering::Relaxed);
    assert!(
        s.active_block(ip(9), T0).is_none(),
        "the lock-free check trusts the mask"
    );
    // The block ended; the next one is found under the lock (not inserted again), takes the
    // next generation and puts its bit back.
    let b = s
        .start_block(ip(9), &info(), T0 + 2_000_000, &|_| 60, 60)
        .unwrap();
    assert_eq!(b.generation, 2);
    assert!(s.active_block(ip(9), T0 + 2_000_000).is_some());
    assert_eq!(s.live_entries(Area::Block, T0 + 2_000_000), 1);
    assert_summaries_exact(&s);
}

#[test]
fn a_network_block_is_carried_over_as_a_network_block() {
    let old = Store::create(65536).unwrap();
    let new = Store::create(131072).unwrap();
    let client = IpAddr::from([198, 51, 100, 9]);
    let key = old.client_key_in(client, [24, 0]);
    let guard = old.lock_site(&key, "example.org", "/").unwrap();
    let periods = |_: u32| 60;
    let b = guard
        .start_net_block(0, &info(), T0, &periods, 3600)
        .expect("started");
    drop(guard);
    assert_eq!((b.client, b.prefix), (IpAddr::from([198, 51, 100, 0]), 24));
    assert_eq!(new.copy_blocks_from(&old, T0 + 1), 1);
    let other = IpAddr::from([198, 51, 100, 200]);
    let got = new
        .active_block_of(&new.client_key_in(other, [24, 0]), T0 + SEC)
        .expect("the /24's block, in the new store");
    assert_eq!((got.client, got.prefix, got.generation), (b.client, 24, 1));
    // Not a block of the client 198.51.100.0, nor of an address without its network.
    assert!(new.active_block(b.client, T0 + SEC).is_none());
    assert!(new
        .active_block_of(&new.client_key(other), T0 + SEC)
        .is_none());
}

#[test]
fn a_scribbled_occupied_slots_word_only_steers_the_choice() {
    let s = Store::create(65536).unwrap();
    let clients = colliding(&s, Area::Site, SLOTS + 2, site);
    let word = |c: IpAddr| {
        let base = s.sub(Area::Site, s.key_id(Area::Site, &site(c))).base();
        s.region().u64_at(base + C_TAGS)
    };
    // Half full, the word says "all occupied": an empty slot is still found (a never-used
    // slot's expiry is 0, so the victim search takes it as expired), and no record is lost.
    for (i, c) in clients[..SLOTS / 2].iter().enumerate() {
        s.add(Counter::Site, &site(*c), 1 + i as i64, 100, T0)
            .unwrap();
    }
    word(clients[0]).store(u64::MAX, Ordering::Relaxed);
    s.add(Counter::Site, &site(clients[SLOTS]), 1, 100, T0 + 1)
        .unwrap();
    assert!(present(&s, Area::Site, &site(clients[SLOTS]), T0 + 1));
    for c in &clients[..SLOTS / 2] {
        assert!(present(&s, Area::Site, &site(*c), T0 + 1));
    }
    // Full (filling it evicted clients[0], score 1), the word says "all free": the tags are
    // scanned, and the lowest score goes (clients[SLOTS], the other score 1).
    for c in &clients[SLOTS / 2..SLOTS] {
        s.add(Counter::Site, &site(*c), 50, 100, T0 + 2).unwrap();
    }
    word(clients[0]).store(0, Ordering::Relaxed);
    let before = s.stats(Area::Site);
    s.add(Counter::Site, &site(clients[SLOTS + 1]), 1, 100, T0 + 3)
        .unwrap();
    assert_eq!(s.stats(Area::Site).evicted - before.evicted, 1);
    assert!(!present(&s, Area::Site, &site(clients[SLOTS]), T0 + 3));
    assert!(present(&s, Area::Site, &site(clients[SLOTS + 1]), T0 + 3));
    assert_eq!(s.stats(Area::Site).entries, SLOTS as u64);
}

#[test]
fn lanes_equal_finds_exactly_the_equal_words() {
    let region = Region::new(4096).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for round in 0..2000 {
        let off = 64 * (round % 64);
        // Words from a few values only, so that many lanes are equal.
        let words: Vec<u32> = (0..16)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                [0, 1, 0x8000_0001, u32::MAX, x as u32][(x >> 40) as usize % 5]
            })
            .collect();
        for (i, w) in words.iter().enumerate() {
            region.u32_at(off + 4 * i).store(*w, Ordering::Relaxed);
        }
        for value in [0, 1, 0x8000_0001, u32::MAX, words[round % 16]] {
            let want = words
                .iter()
                .enumerate()
                .fold(0, |acc, (i, w)| acc | u32::from(*w == value) << i);
            assert_eq!(
                region.lanes_equal(off, value),
                want,
                "{words:x?} {value:#x}"
            );
        }
    }
}

#[test]
fn records_of_one_decision_in_one_sub_cache_are_locked_once_and_released() {
    let client: IpAddr = "2001:db8:1:2::9".parse().unwrap();
    let mut seen = [false; 3];
    for i in 0..400 {
        // A small store (a new one each time, nothing evicted): few sub-caches, so the
        // client's and its networks' site records often share one.
        let s = Store::create(MIN_AREA_BYTES * 2).unwrap();
        let key = s.client_key_in(client, [56, 48]);
        let host = format!("h{i}.example");
        let guard = s.lock_site(&key, &host, "/").unwrap();
        let index = |id: [u64; 2]| s.sub_index(id);
        let ids = [
            guard.site_id,
            guard.nets[0].as_ref().unwrap().id,
            guard.nets[1].as_ref().unwrap().id,
        ];
        let shared = usize::from(index(ids[0]) == index(ids[1]))
            + usize::from(index(ids[1]) == index(ids[2]))
            + usize::from(index(ids[0]) == index(ids[2]));
        seen[shared.min(2)] = true;
        guard.add_site(1, 60, T0);
        for n in 0..2 {
            assert_eq!(guard.add_net(n, 1, 60, T0).unwrap().score, 1);
        }
        assert_eq!(guard.add_page(1, 60, T0).unwrap().score, 1);
        drop(guard);
        for id in ids {
            let word = s.sub(Area::Site, id).lock_word().load(Ordering::Relaxed);
            assert_eq!(word, 0, "{host}: every site lock released");
        }
        // And taken again at once, the counts where they were.
        let guard = s.lock_site(&key, &host, "/").unwrap();
        assert_eq!(guard.add_site(1, 60, T0).score, 2);
        assert_eq!(guard.add_net(0, 1, 60, T0).unwrap().score, 2);
        assert_eq!(guard.add_net(1, 1, 60, T0).unwrap().score, 2);
    }
    assert_eq!(
        seen, [true; 3],
        "no sharing, one pair, all three in one sub-cache"
    );
}
