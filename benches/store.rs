//! The store's hot paths. The decision of one request (`decision_*`) is what the request
//! hooks do: the block check, then the locked tally (block re-check, page add, site add,
//! the comparison with the counts). Targets: ≤ 100 ns with the records in cache
//! (`decision_low_load`), ≤ 250 ns with full tables (`decision_full_table_*`).

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput};
use mod_shield::config::{DirConfig, ServerSettings};
use mod_shield::policy::{self, Outcome, Request};
use mod_shield::store::{Area, BlockInfo, Counter, KeyParts, Micros, Store};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

const T0: Micros = 1_700_000_000_000_000;
/// Default DOSCache size per area.
const AREA: usize = 524_288;

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

const PATHS: [&str; 4] = ["/", "/index.php", "/wp-login.php", "/static/app.css"];

/// The settings of conf/shield.conf (its counts raised so that nothing blocks: patrol).
fn settings() -> (ServerSettings, DirConfig) {
    let (server, dir) = mod_shield::config::from_lines(&[
        "DOSSiteCount 1000000000",
        "DOSSiteInterval 120",
        "DOSSiteStatusPenalty 404 50",
        "DOSPageCount 1000000000",
        "DOSPageInterval 60",
        "DOSPageDeadline 0.5 5",
    ])
    .unwrap();
    (server.resolve(), dir)
}

/// One request's decision as the hooks make it: post_read_request's block check (the
/// client's key hashed once), then fixups' locked tally (block re-check, page and site
/// additions, the comparison with the counts). Returns something so nothing is optimised
/// away.
fn decide(
    s: &Store,
    (server, dir): &(ServerSettings, DirConfig),
    client: IpAddr,
    path: &str,
    now: Micros,
) -> bool {
    let key = s.client_key(client);
    if policy::blocked_key(s, server, &key, now).is_some() {
        return false;
    }
    let req = Request {
        client,
        host: "www.example.org:80",
        path,
        key: Some(&key),
    };
    matches!(
        policy::count(s, server, dir, &req, now, None),
        Outcome::Pass
    )
}

/// Fills every area to capacity with live records (blocks: remembered, not active).
fn fill(s: &Store, conf: &(ServerSettings, DirConfig), clients: u32) {
    let info = BlockInfo {
        rule: Counter::Page,
        score: 91,
        count: 90,
        interval: 60,
        host: "www.example.org",
        uri: "/wp-login.php",
    };
    for c in 0..clients {
        decide(s, conf, ip(c), PATHS[(c % 4) as usize], T0);
        s.start_block(ip(1_000_000 + c), &info, T0, &|_| 0, 86_400);
    }
}

fn bench<M: Measurement>(c: &mut Criterion<M>) {
    let mut g = c.benchmark_group("store");
    g.measurement_time(Duration::from_secs(4));

    let key = KeyParts {
        client: ip(7),
        host: "www.example.org",
        path: "/wp-login.php",
    };
    let s = Store::create(AREA).unwrap();
    g.bench_function("key_id", |b| {
        b.iter(|| s.key_id(Area::Page, black_box(&key)))
    });

    // Low load: a few hundred clients, records in cache.
    let conf = settings();
    let low = Store::create(AREA).unwrap();
    fill(&low, &conf, 256);
    let mut n = 0u32;
    g.bench_function("decision_low_load", |b| {
        b.iter(|| {
            n = (n + 1) % 256;
            decide(&low, &conf, black_box(ip(n)), PATHS[(n % 4) as usize], T0)
        })
    });

    // Full table: every area at capacity (filled with 4x as many clients as it holds).
    // Known clients: the most recent 2048 of the fill, whose records are (mostly) present;
    // their records span more than this core's L2, as on a busy server.
    let full = Store::create(AREA).unwrap();
    let clients = 4 * full.capacity() as u32;
    fill(&full, &conf, clients);
    for area in [Area::Site, Area::Page, Area::Block] {
        let st = full.stats(area);
        assert_eq!(st.entries, st.capacity, "{area:?} is full");
    }
    let mut n = 0u32;
    g.bench_function("decision_full_table_known_client", |b| {
        b.iter(|| {
            n = (n + 7919) % 2048;
            let c = clients - 2048 + n;
            decide(&full, &conf, black_box(ip(c)), PATHS[(c % 4) as usize], T0)
        })
    });
    // New clients only (a flood): site and page records are inserted by evicting.
    let mut n = 20_000_000u32;
    g.bench_function("decision_full_table_new_client", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            decide(&full, &conf, black_box(ip(n)), PATHS[(n % 4) as usize], T0)
        })
    });

    // Eviction: every add is a new key landing in a full sub-cache of live records.
    let evict = Store::create(AREA).unwrap();
    fill(&evict, &conf, clients);
    let mut n = 10_000_000u32;
    g.bench_function("insert_unique_full_table", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let site = KeyParts {
                client: ip(n),
                host: "www.example.org",
                path: "",
            };
            evict.add(Counter::Site, black_box(&site), 1, 120, T0)
        })
    });
    assert!(evict.stats(Area::Site).evicted > 0);

    // The lock-free "not blocked" answer alone.
    g.bench_function("active_block_miss", |b| {
        b.iter(|| full.active_block(black_box(ip(3_000_000)), T0))
    });
    g.finish();
}

/// CPU time of the benchmarking thread: on a shared 2-core machine, time spent descheduled
/// (other jobs running) does not count. Chosen with `STORE_BENCH_CLOCK=thread`.
struct ThreadCpu;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanos
    }
}

struct Nanos;

impl ValueFormatter for Nanos {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns")
        } else if typical < 1e6 {
            (1e-3, "µs")
        } else {
            (1e-6, "ms")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(&self, _: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let per = match t {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => {
                *n as f64
            }
            _ => 1.0,
        };
        values.iter_mut().for_each(|v| *v = per * 1e9 / *v);
        "elem/s"
    }
    fn scale_for_machines(&self, _: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn main() {
    if std::env::var("STORE_BENCH_CLOCK").as_deref() == Ok("thread") {
        let mut c = Criterion::default()
            .with_measurement(ThreadCpu)
            .configure_from_args();
        bench(&mut c);
        c.final_summary();
    } else {
        let mut c = Criterion::default().configure_from_args();
        bench(&mut c);
        c.final_summary();
    }
}
