//! Bounded property-based fuzzing of everything that reads untrusted input (docs/fuzzing.md):
//!
//! - directive lines (`config::parse` for every name of `config::DIRECTIVES`), applied to the
//!   right configuration and written back by `canonical_lines`;
//! - request keys: `keys::canonical_host`, `keys::page_path`, `client::parse_client`,
//!   `client::group` with every prefix 0..=255, `Whitelist::parse_entry`;
//! - the shared table's decoder: a filled `Store` whose region is scribbled on (header, control
//!   lines, tags, record fields, raw bytes) and attached again, then driven through every
//!   operation, the status page included.
//!
//! Each target first replays its seed corpus (`fuzz/corpus/<target>/`, one input per file),
//! then runs `PROPTEST_CASES` generated cases (default 256). Failing cases are shrunk and their
//! seeds saved in `proptest-regressions/fuzz_props.txt`, which later runs replay first.

use mod_shield::client::{self, Whitelist, WhitelistEntry};
use mod_shield::config::{self, canonical_lines, DirConfig, ServerConfig, ServerSettings, Setting};
use mod_shield::farm::{event::Op as EventOp, Event};
use mod_shield::keys;
use mod_shield::policy;
use mod_shield::render::{self, Format};
use mod_shield::store::layout::{
    field_offset, record_offset, tag_offset, Geometry, CONTROL_BYTES, C_TAGS, HEADER_BYTES,
    H_AREA_BYTES, H_GEOMETRY, H_KEY1, H_MAGIC, H_REGION_LEN, H_VERSION, MAGIC, RECORD_BYTES,
    R_ADDR0, R_ADDR1, R_EXPIRES, R_GEN_COUNT, R_ID0, R_ID1, R_INTERVAL, R_LAST_USED, R_META,
    R_ORIGIN, R_SCORE, R_TEXT, R_UNTIL, SLOTS, SUBCACHE_BYTES,
};
use mod_shield::store::lock::LOCK_TIMEOUT;
use mod_shield::store::{Area, BlockInfo, Counter, KeyParts, Region, Store};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use std::borrow::Cow;
use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Runner, corpus, watchdog
// ---------------------------------------------------------------------------------------------

/// Generated cases per target: `PROPTEST_CASES`, default 256 (what CI runs).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/fuzz_props.txt",
        ))),
        ..Config::default()
    })
}

/// Replays the corpus of `target`, then runs the generated cases; panics with the (shrunk)
/// failing input.
fn fuzz<S>(
    target: &str,
    strategy: S,
    replay: impl Fn(&[u8]) -> Result<(), TestCaseError>,
    check: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let t0 = Instant::now();
    let seeds = corpus(target);
    for (name, bytes) in &seeds {
        match catch_unwind(AssertUnwindSafe(|| replay(bytes))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{target}: corpus file {name} fails: {e}"),
            Err(p) => {
                eprintln!("{target}: corpus file {name} panics");
                resume_unwind(p)
            }
        }
    }
    let replayed = t0.elapsed();
    if let Err(e) = runner().run(&strategy, check) {
        panic!("{target}: {e}");
    }
    eprintln!(
        "{target}: {} corpus inputs in {replayed:?}, {} generated cases in {:?}",
        seeds.len(),
        cases(),
        t0.elapsed() - replayed
    );
}

/// The seed inputs of a target, sorted by file name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| {
            let e = e.expect("corpus entry");
            let bytes = std::fs::read(e.path()).expect("read corpus file");
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    out.sort();
    assert!(
        out.len() >= 15,
        "corpus {} has only {} inputs",
        dir.display(),
        out.len()
    );
    out
}

fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// Runs `f` on its own thread and fails if it has not finished within `limit` (a hang).
fn bounded<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let value = f();
        let _ = tx.send(());
        value
    });
    match rx.recv_timeout(limit) {
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: not finished within {limit:?}"),
        // Finished, or panicked (the sender was dropped): join tells which.
        _ => worker.join().unwrap_or_else(|p| resume_unwind(p)),
    }
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

// ---------------------------------------------------------------------------------------------
// Directive lines
// ---------------------------------------------------------------------------------------------

/// Words that mean something to some directive.
const VOCAB: &[&str] = &[
    "on",
    "off",
    "On",
    "OFF",
    "true",
    "FALSE",
    "monitor",
    "Monitor",
    "yes",
    "0",
    "1",
    "-1",
    "+1",
    "00",
    "404",
    "429",
    "999",
    "100",
    "099",
    "1000",
    "4O4",
    "shmcb",
    "shmcb:",
    "shmcb:none",
    "shmcb:none(8192)",
    "shmcb:none(8191)",
    "shmcb:/x/y(1073741824)",
    "memcache:h:1",
    "redis:127.0.0.1:6379",
    "redis",
    "dbm",
    "\"\"",
    "''",
    "\"",
    "'",
    "\\",
    "\\\\",
    "\\\"",
    "*",
    "*.*.*.*",
    "127.0.0.*",
    "::1",
    "::ffff:1.2.3.4",
    "::ffff:0:0/96",
    "fe80::1%eth0",
    "4294967295",
    "4294967296",
    "18446744073709.551615",
    "9223372036854775807",
    "-9223372036854775808",
    ".5",
    "0.5",
    "10.",
    ".",
    "%s",
    "/tmp",
    "/var/log/x",
    "root@localhost",
    "a@b.c,d@e.f",
    "\"/bin/echo %s\"",
    "'unclosed",
    "\"a b\" c",
];

const SEPARATORS: &[&str] = &[" ", "  ", "\t", "\x0b", "\x0c", " \r ", "\n"];

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        any::<u128>().prop_map(Ipv6Addr::from),
        // Mapped, compatible and link-local forms.
        any::<u32>().prop_map(|a| Ipv4Addr::from(a).to_ipv6_mapped()),
        any::<u32>().prop_map(|a| Ipv6Addr::from(u128::from(a))),
        any::<u64>().prop_map(|a| Ipv6Addr::from((0xfe80u128 << 112) | u128::from(a))),
    ]
}

fn address_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ipv4().prop_map(|a| a.to_string()),
        ipv6().prop_map(|a| a.to_string()),
        (ipv4(), 0u16..40).prop_map(|(a, p)| format!("{a}/{p}")),
        (ipv6(), 0u16..140).prop_map(|(a, p)| format!("{a}/{p}")),
        proptest::collection::vec(
            prop_oneof![
                Just("*".to_string()),
                (0u16..300).prop_map(|o| o.to_string()),
                select(&["", "**", "1*", "00", "007", "-1"][..]).prop_map(str::to_string),
            ],
            1..6
        )
        .prop_map(|parts| parts.join(".")),
        (ipv6(), "[a-z0-9]{0,6}").prop_map(|(a, z)| format!("{a}%{z}")),
        (ipv6()).prop_map(|a| format!("[{a}]")),
    ]
}

/// One word of a directive line: meaningful values most of the time, anything else sometimes.
fn token() -> impl Strategy<Value = String> {
    let plain = prop_oneof![
        4 => select(VOCAB).prop_map(str::to_string),
        2 => any::<u32>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        2 => (0u32..20).prop_map(|n| n.to_string()),
        2 => (100u32..1000).prop_map(|n| n.to_string()),
        2 => (0u64..100_000, 0u32..10_000_000).prop_map(|(a, b)| format!("{a}.{b}")),
        3 => address_text(),
        1 => "[a-z0-9.+%=_-]{1,8}@[a-z0-9-]{1,8}(\\.[a-z]{2,3}){0,2}",
        1 => "/[a-zA-Z0-9_./ é-]{0,20}",
        1 => (0usize..2_000_000).prop_map(|n| format!("shmcb:none({n})")),
        1 => "[a-z_-]{0,8}:[ -~]{0,12}",
        2 => "\\PC{0,12}",
        1 => ".{0,8}",
    ];
    (plain, 0u8..8).prop_map(|(word, how)| match how {
        // Quoted forms, with escapes, and an unclosed quote.
        0 => format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\"")),
        1 => format!("'{word}'"),
        2 => format!("\"{word}"),
        _ => word,
    })
}

fn args() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => proptest::collection::vec((token(), select(SEPARATORS)), 0..7).prop_map(|ws| {
            ws.into_iter().map(|(w, sep)| format!("{w}{sep}")).collect::<String>()
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => "\\PC{0,40}",
        1 => ".{0,40}",
    ]
}

/// A directive name: a real one in random letter case, or anything.
fn directive_name() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => (0..config::DIRECTIVES.len(), any::<u64>()).prop_map(|(i, mask)| {
            let name = config::DIRECTIVES[i].name.to_str().unwrap_or("DOSEnabled");
            name.chars()
                .enumerate()
                .map(|(k, c)| {
                    if mask >> (k % 64) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect()
        }),
        // Mostly-original names keep their case too.
        3 => (0..config::DIRECTIVES.len())
            .prop_map(|i| config::DIRECTIVES[i].name.to_str().unwrap_or("DOSEnabled").to_string()),
        1 => "\\PC{0,20}",
    ]
}

type Line = (String, String);

/// Arguments shaped for one directive (canonical name), so that most lines are accepted and
/// the settings, merging and `canonical_lines` get exercised, with edge values mixed in.
fn typed_args(canonical: &str) -> BoxedStrategy<String> {
    let number = || {
        prop_oneof![
            6 => (1u32..1000).prop_map(|n| n.to_string()),
            1 => Just("4294967295".to_string()),
            1 => Just("4294967296".to_string()),
            1 => Just("0".to_string()),
            1 => Just("007".to_string()),
        ]
    };
    let score = || {
        prop_oneof![
            4 => (-100i64..1000).prop_map(|n| n.to_string()),
            1 => any::<i64>().prop_map(|n| n.to_string()),
            1 => (0i64..100).prop_map(|n| format!("+{n}")),
        ]
    };
    let off = || select(&["off", "OFF", "Off"][..]).prop_map(str::to_string);
    match canonical {
        "DOSEnabled" | "DOSCanonical" => {
            select(&["on", "off", "true", "false", "monitor", "ON", "Monitor", "yes"][..])
                .prop_map(str::to_string)
                .boxed()
        }
        "DOSPageCount" | "DOSPageInterval" | "DOSSiteCount" | "DOSSiteInterval"
        | "DOSHashTableSize" => number().boxed(),
        "DOSPageStatus" | "DOSSiteStatusPenalty" => prop_oneof![
            6 => (prop_oneof![9 => 100u32..1000, 1 => 0u32..2000], score())
                .prop_map(|(st, sc)| format!("{st} {sc}")),
            1 => off(),
        ]
        .boxed(),
        "DOSPageDeadline" => prop_oneof![
            6 => (0u64..100, 0u32..1_000_000, 0usize..8, score()).prop_map(|(a, b, d, sc)| {
                let frac = format!("{b:06}");
                match d {
                    0 => format!("{a} {sc}"),
                    d => format!("{a}.{} {sc}", &frac[..d.min(6)]),
                }
            }),
            1 => (0u64..u64::MAX / 1_000_000, score()).prop_map(|(a, sc)| format!("{a}.999999 {sc}")),
            1 => off(),
        ]
        .boxed(),
        "DOSBlockingPeriod" => proptest::collection::vec(
            prop_oneof![9 => 1u32..100_000, 1 => 0u32..1],
            0..18,
        )
        .prop_map(|v| v.iter().map(u32::to_string).collect::<Vec<_>>().join(" "))
        .boxed(),
        "DOSHTTPStatus" => (390u32..610).prop_map(|n| n.to_string()).boxed(),
        "DOSWhitelist" => proptest::collection::vec(address_text(), 1..5)
            .prop_map(|v| v.join(" "))
            .boxed(),
        "DOSIPv6Prefix" => (0u32..140).prop_map(|n| n.to_string()).boxed(),
        "DOSLogDir" => prop_oneof![
            3 => "/[a-zA-Z0-9_.-]{0,10}(/[a-zA-Z0-9_. é-]{1,10}){0,3}"
                .prop_map(|d| config_quote(&d)),
            1 => "[a-z]{1,8}".prop_map(|d| d.to_string()),
        ]
        .boxed(),
        "DOSSystemCommand" => "[ -~]{0,30}".prop_map(|c| config_quote(&c)).boxed(),
        "DOSEmailNotify" => proptest::collection::vec(
            "[a-z0-9.+%=_-]{1,8}@[a-z0-9-]{1,8}(\\.[a-z]{2,3}){0,2}",
            1..3,
        )
        .prop_map(|v| v.join(","))
        .boxed(),
        "DOSCache" => prop_oneof![
            3 => (prop_oneof![7 => 8192usize..4_000_000, 1 => 0usize..8192, 1 => Just(1usize << 30), 1 => Just((1usize << 30) + 1)],
                  select(&["shmcb:none", "shmcb:", "shmcb:/run/x", "SHMCB:"][..]))
                .prop_map(|(n, p)| format!("{p}({n})")),
            1 => select(&["shmcb", "redis:127.0.0.1:6379", "memcache:a:1,b:2", "dbm", "redis", "\"redis:a b\""][..])
                .prop_map(str::to_string),
        ]
        .boxed(),
        _ => args().boxed(),
    }
}

/// `word` quoted like a configuration writer would when it holds spaces or quotes.
fn config_quote(word: &str) -> String {
    if word.is_empty() || word.contains(|c: char| c.is_ascii_whitespace() || c == '"' || c == '\\')
    {
        format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        word.to_string()
    }
}

/// A line for a real directive with arguments shaped for it.
fn typed_line() -> impl Strategy<Value = Line> {
    (0..config::DIRECTIVES.len()).prop_flat_map(|i| {
        let info = &config::DIRECTIVES[i];
        let name = info.name.to_str().unwrap_or("DOSEnabled").to_string();
        let canonical = info.alias_of.unwrap_or(&name).to_string();
        (Just(name), typed_args(&canonical))
    })
}

fn lines() -> impl Strategy<Value = Vec<Line>> {
    proptest::collection::vec(
        prop_oneof![3 => typed_line(), 1 => (directive_name(), args())],
        0..12,
    )
}

/// A corpus line: name, then the raw rest after the first run of whitespace.
fn split_line(line: &str) -> Line {
    let line = line.trim_start();
    match line.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (line[..i].to_string(), line[i..].to_string()),
        None => (line.to_string(), String::new()),
    }
}

fn apply(srv: &mut ServerConfig, dir: &mut DirConfig, s: Setting) -> Result<(), TestCaseError> {
    let what = format!("{s:?}");
    let r = if s.is_dir_scoped() {
        dir.apply(s)
    } else {
        srv.apply(s)
    };
    r.map_err(|e| fail(format!("{what} refused by its own context: {e}")))
}

/// The effective directory settings, comparable.
fn dir_view(d: &DirConfig) -> String {
    format!(
        "{:?} {} {} {} {:?} {:?}",
        d.enabled(),
        d.page_count(),
        d.page_interval(),
        d.canonical(),
        d.page_status_penalties(),
        d.page_deadlines()
    )
}

/// Properties of one line on its own.
fn check_line(name: &str, raw: &str) -> Result<(), TestCaseError> {
    let setting = match config::parse(name, raw) {
        Err(e) => {
            prop_assert!(
                e.0.starts_with(&format!("{name}:")),
                "error does not start with the directive as written: {e}"
            );
            return Ok(());
        }
        Ok(s) => s,
    };
    prop_assert!(
        config::lookup(name).is_some(),
        "{name} accepted but unknown"
    );
    let again = config::parse(name, raw).ok();
    prop_assert_eq!(again.as_ref(), Some(&setting));
    // Validated values only.
    match &setting {
        Setting::PageCount(n)
        | Setting::PageInterval(n)
        | Setting::SiteCount(n)
        | Setting::SiteInterval(n)
        | Setting::HashTableSize(n) => prop_assert!(*n > 0),
        Setting::BlockingPeriod(v) => {
            prop_assert!(
                (1..=16).contains(&v.len()) && v.iter().all(|&p| p > 0),
                "{v:?}"
            )
        }
        Setting::HttpStatus(s) => prop_assert!((400..=599).contains(s)),
        Setting::Ipv6Prefix(p) => prop_assert!((1..=128).contains(p)),
        Setting::PageStatus(config::ListItem::Entry(p))
        | Setting::SiteStatusPenalty(config::ListItem::Entry(p)) => {
            prop_assert!((100..=999).contains(&p.status))
        }
        Setting::LogDir(d) => prop_assert!(d.starts_with('/') && !d.contains('\0')),
        Setting::SystemCommand(c) => {
            prop_assert!(!c.trim().is_empty() && !c.contains(['\0', '\n', '\r']))
        }
        Setting::EmailNotify(m) => {
            prop_assert!(m.contains('@') && !m.contains(char::is_whitespace))
        }
        Setting::Whitelist(v) => prop_assert!(!v.is_empty()),
        _ => {}
    }
    // The right context takes it, the other one refuses it.
    let (mut srv, mut dir) = (ServerConfig::default(), DirConfig::default());
    if setting.is_dir_scoped() {
        prop_assert!(dir.apply(setting.clone()).is_ok());
        prop_assert!(srv.apply(setting).is_err());
    } else {
        prop_assert!(srv.apply(setting.clone()).is_ok());
        prop_assert!(dir.apply(setting).is_err());
    }
    roundtrip(&srv.resolve(), &dir)
}

/// `canonical_lines` parses back to the same effective settings.
fn roundtrip(server: &ServerSettings, dir: &DirConfig) -> Result<(), TestCaseError> {
    let lines = canonical_lines(server, dir);
    let (mut srv2, mut dir2) = (ServerConfig::default(), DirConfig::default());
    for line in &lines {
        let (name, args) = line.split_once(' ').unwrap_or((line, ""));
        let s = config::parse(name, args)
            .map_err(|e| fail(format!("canonical line {line:?} does not parse: {e}")))?;
        apply(&mut srv2, &mut dir2, s)?;
    }
    prop_assert_eq!(&srv2.resolve(), server, "canonical lines: {:#?}", lines);
    prop_assert_eq!(
        dir_view(&dir2),
        dir_view(dir),
        "canonical lines: {:#?}",
        lines
    );
    Ok(())
}

/// A server/directory configuration from `main`, a vhost/section from `child`, merged.
fn check_config(main: &[Line], child: &[Line]) -> Result<(), TestCaseError> {
    let build = |lines: &[Line]| -> Result<(ServerConfig, DirConfig), TestCaseError> {
        let (mut srv, mut dir) = (ServerConfig::default(), DirConfig::default());
        for (name, raw) in lines {
            check_line(name, raw)?;
            if let Ok(s) = config::parse(name, raw) {
                apply(&mut srv, &mut dir, s)?;
            }
        }
        Ok((srv, dir))
    };
    let (srv, dir) = build(main)?;
    let (csrv, cdir) = build(child)?;
    roundtrip(&srv.resolve(), &dir)?;
    let msrv = ServerConfig::merge(&srv, &csrv);
    let mdir = DirConfig::merge(&dir, &cdir);
    roundtrip(&msrv.resolve(), &mdir)?;
    // A section that sets nothing inherits everything.
    prop_assert_eq!(
        ServerConfig::merge(&srv, &ServerConfig::default()).resolve(),
        srv.resolve()
    );
    prop_assert_eq!(
        dir_view(&DirConfig::merge(&dir, &DirConfig::default())),
        dir_view(&dir)
    );
    // The child's own settings win over the parent's.
    let child_only = ServerConfig::merge(&ServerConfig::default(), &csrv).resolve();
    let merged = msrv.resolve();
    if child_only.site_count != ServerSettings::default().site_count {
        prop_assert_eq!(merged.site_count, child_only.site_count);
    }
    Ok(())
}

fn replay_directive(bytes: &[u8]) -> Result<(), TestCaseError> {
    let file = text(bytes);
    let lines: Vec<Line> = file
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(split_line)
        .collect();
    for (name, raw) in &lines {
        check_line(name, raw)?;
    }
    // The whole file as a server config, then again as a vhost of itself.
    check_config(&lines, &lines)
}

#[test]
fn fuzz_directive_lines() {
    fuzz(
        "directive",
        (lines(), lines()),
        replay_directive,
        |(main, child)| check_config(&main, &child),
    );
}

/// What `DOSIPv6Prefix` lets through: exactly 1..=128 (so `group` never sees 0 or > 128 from a
/// configuration; see `fuzz_client_and_group` for what it does with them anyway).
#[test]
fn ipv6_prefix_outside_1_to_128_is_refused() {
    for bad in ["0", "129", "255", "256", "-1", "64.5", ""] {
        assert!(
            config::parse("DOSIPv6Prefix", bad).is_err(),
            "DOSIPv6Prefix {bad:?} accepted"
        );
    }
    for p in 1..=128u8 {
        assert_eq!(
            config::parse("DOSIPv6Prefix", &p.to_string()),
            Ok(Setting::Ipv6Prefix(p))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Host and page keys, and their display text in a record
// ---------------------------------------------------------------------------------------------

/// Longest prefix of `s` of at most `max` bytes ending on a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The text a record keeps for (host, uri): host cut to 40 bytes, the URI to the rest of 80,
/// both on character boundaries, read back exactly.
fn check_record_text(
    store: &Store,
    seq: &AtomicU64,
    host: &str,
    uri: &str,
) -> Result<(), TestCaseError> {
    let n = seq.fetch_add(1, Ordering::Relaxed);
    let client = IpAddr::V6(Ipv6Addr::from((0x2001_0db8_00f0u128 << 80) | u128::from(n)));
    // Later blocks end later, so a full sub-cache evicts an older block, never this one.
    let now = NOW + n as i64;
    let info = BlockInfo {
        rule: Counter::Page,
        score: 3,
        count: 2,
        interval: 1,
        host,
        uri,
    };
    let started = store
        .start_block(client, &info, now, &|_| 600, 86_400)
        .ok_or_else(|| fail("start_block refused a new client".into()))?;
    let read = store
        .active_block(client, now)
        .ok_or_else(|| fail("a block just started is not active".into()))?;
    let want_host = prefix(host, 40);
    let want_uri = prefix(uri, 80 - want_host.len());
    prop_assert_eq!(&read.host, want_host);
    prop_assert_eq!(&read.uri, want_uri);
    prop_assert_eq!(read, started);
    Ok(())
}

fn check_host(store: &Store, seq: &AtomicU64, raw: &str) -> Result<(), TestCaseError> {
    let out = keys::canonical_host(Some(raw));
    prop_assert!(!out.bytes().any(|b| b.is_ascii_uppercase()), "{out:?}");
    prop_assert!(out.len() <= raw.len());
    prop_assert!(
        raw.to_ascii_lowercase().contains(&*out),
        "{out:?} not from {raw:?}"
    );
    prop_assert!(!out.ends_with('.'), "{out:?} keeps a trailing dot");
    if !out.starts_with('[') {
        // A port is always stripped: one colon left would be host:port.
        prop_assert!(out.matches(':').count() != 1, "{out:?} kept a port");
    }
    if !raw.bytes().any(|b| b.is_ascii_whitespace()) {
        // (With inner whitespace, `a \t:80` gives `a \t`, which trims further on a second
        // pass; httpd refuses such Host headers with 400 before any hook runs.)
        prop_assert_eq!(
            keys::canonical_host(Some(&out)),
            out.clone(),
            "not idempotent"
        );
    }
    check_record_text(store, seq, &out, raw)
}

/// Names that differ only in letter case, port and a trailing dot are one site.
fn host_variants() -> impl Strategy<Value = (String, u64, u32, bool)> {
    (
        prop_oneof![
            "[a-zA-Z0-9-]{1,20}(\\.[a-zA-Z0-9-]{1,20}){0,4}",
            ipv4().prop_map(|a| a.to_string()),
            ipv6().prop_map(|a| format!("[{a}]")),
        ],
        any::<u64>(),
        any::<u32>(),
        any::<bool>(),
    )
}

fn check_host_variants(name: &str, mask: u64, port: u32, dot: bool) -> Result<(), TestCaseError> {
    let base = keys::canonical_host(Some(name));
    let mangled: String = name
        .chars()
        .enumerate()
        .map(|(k, c)| {
            if mask >> (k % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    let dotted = if dot && !name.starts_with('[') {
        format!("{mangled}.")
    } else {
        mangled
    };
    let variant = format!("{dotted}:{port}");
    prop_assert_eq!(keys::canonical_host(Some(&variant)), base.clone());
    prop_assert_eq!(keys::canonical_host(Some(&dotted)), base);
    Ok(())
}

#[test]
fn fuzz_host_keys() {
    let store = Store::create(AREA).expect("store");
    let seq = AtomicU64::new(0);
    fuzz(
        "host",
        (
            prop_oneof![
                "\\PC{0,60}",
                ".{0,60}",
                proptest::collection::vec(any::<u8>(), 0..80)
                    .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
                "[\\[\\]:.a-zA-Z0-9 \t%-]{0,30}",
            ],
            host_variants(),
        ),
        |bytes| {
            check_host(&store, &seq, &text(bytes))?;
            assert_eq!(keys::canonical_host(None), "");
            Ok(())
        },
        |(raw, (name, mask, port, dot))| {
            check_host(&store, &seq, &raw)?;
            check_host_variants(&name, mask, port, dot)
        },
    );
}

fn check_page(
    store: &Store,
    seq: &AtomicU64,
    uri: &str,
    args: Option<&str>,
) -> Result<(), TestCaseError> {
    let on = keys::page_path(uri, args, true);
    prop_assert!(matches!(on, Cow::Borrowed(_)));
    prop_assert_eq!(&*on, uri);
    let off = keys::page_path(uri, args, false);
    match args {
        Some(q) if !q.is_empty() => prop_assert_eq!(off.to_string(), format!("{uri}?{q}")),
        _ => prop_assert_eq!(&*off, uri),
    }
    check_record_text(store, seq, "example.org", &off)
}

fn split_query(s: &str) -> (&str, Option<&str>) {
    match s.split_once('?') {
        Some((u, q)) => (u, Some(q)),
        None => (s, None),
    }
}

#[test]
fn fuzz_page_keys() {
    let store = Store::create(AREA).expect("store");
    let seq = AtomicU64::new(0);
    fuzz(
        "page",
        (
            prop_oneof![
                "/\\PC{0,120}",
                ".{0,120}",
                proptest::collection::vec(any::<u8>(), 0..200)
                    .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            ],
            proptest::option::of(".{0,40}"),
        ),
        |bytes| {
            let s = text(bytes);
            let (uri, args) = split_query(&s);
            check_page(&store, &seq, uri, args)
        },
        |(uri, args)| check_page(&store, &seq, &uri, args.as_deref()),
    );
}

// ---------------------------------------------------------------------------------------------
// Client addresses, grouping, whitelist entries
// ---------------------------------------------------------------------------------------------

fn check_client(raw: &str) -> Result<(), TestCaseError> {
    let parsed = client::parse_client(raw);
    if let Ok(direct) = raw.trim().parse::<IpAddr>() {
        prop_assert_eq!(parsed, Some(client::normalise(direct)));
    }
    let Some(ip) = parsed else {
        return Ok(());
    };
    // Normalised: never an IPv4-mapped IPv6 address; printing and parsing again is stable.
    if let IpAddr::V6(v6) = ip {
        prop_assert!(v6.to_ipv4_mapped().is_none(), "{ip} not normalised");
    }
    prop_assert_eq!(client::parse_client(&ip.to_string()), Some(ip));
    // A zone id is dropped: same identity as the address without it.
    if let Some((addr, _)) = raw.trim().split_once('%') {
        prop_assert!(addr.contains(':'));
        prop_assert_eq!(client::parse_client(addr), Some(ip));
    }
    check_group(ip)
}

/// `group` for every prefix a u8 can hold. Inside 1..=128 it masks; outside (refused by
/// `DOSIPv6Prefix`): 0 puts every IPv6 client into `::`, above 128 is the same as 128.
fn check_group(ip: IpAddr) -> Result<(), TestCaseError> {
    let norm = client::normalise(ip);
    for p in 0..=255u8 {
        let g = client::group(ip, p);
        prop_assert_eq!(client::group(g, p), g, "group not idempotent at /{}", p);
        match norm {
            IpAddr::V4(_) => prop_assert_eq!(g, norm, "IPv4 is never grouped"),
            IpAddr::V6(v6) => {
                let IpAddr::V6(g6) = g else {
                    return Err(fail(format!("{ip}/{p} grouped to IPv4 {g}")));
                };
                let (a, b) = (u128::from(v6), u128::from(g6));
                let mask = match p {
                    0 => 0,
                    p if p >= 128 => u128::MAX,
                    p => u128::MAX << (128 - u32::from(p)),
                };
                prop_assert_eq!(b, a & mask, "{}/{}", ip, p);
                if p == 0 {
                    prop_assert_eq!(g6, Ipv6Addr::UNSPECIFIED);
                }
                if p > 128 {
                    prop_assert_eq!(g, client::group(ip, 128));
                }
            }
        }
    }
    Ok(())
}

fn client_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => address_text(),
        1 => (address_text(), select(SEPARATORS)).prop_map(|(a, s)| format!("{s}{a}{s}")),
        1 => "[0-9a-fA-F:.%\\[\\]]{0,40}",
        1 => "\\PC{0,30}",
        1 => proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

#[test]
fn fuzz_client_and_group() {
    fuzz(
        "client",
        (
            client_text(),
            prop_oneof![ipv4().prop_map(IpAddr::V4), ipv6().prop_map(IpAddr::V6)],
        ),
        |bytes| check_client(&text(bytes)),
        |(raw, ip)| {
            check_client(&raw)?;
            check_group(ip)
        },
    );
}

/// Addresses an entry must match (its first and last address).
fn entry_edges(e: &WhitelistEntry) -> Vec<IpAddr> {
    match *e {
        WhitelistEntry::Exact(ip) => vec![ip],
        WhitelistEntry::Net(n) => vec![n.network(), n.broadcast()],
        WhitelistEntry::Wildcard(o) => {
            let low = o.map(|x| x.unwrap_or(0));
            let high = o.map(|x| x.unwrap_or(255));
            vec![
                IpAddr::V4(Ipv4Addr::from(low)),
                IpAddr::V4(Ipv4Addr::from(high)),
            ]
        }
    }
}

fn check_whitelist(raw: &str, probe: IpAddr) -> Result<(), TestCaseError> {
    let parsed = Whitelist::parse_entry(raw);
    // Through the directive, a single plain word gives the same verdict.
    let plain = !raw.is_empty()
        && !raw.starts_with(['"', '\''])
        && !raw.bytes().any(|b| b.is_ascii_whitespace() || b == b'\\');
    if plain {
        let via = config::parse("DOSWhitelist", raw);
        prop_assert_eq!(via.is_ok(), parsed.is_ok(), "{:?} vs {:?}", via, parsed);
    }
    let entry = match parsed {
        Err(e) => {
            let msg = e.to_string();
            if !raw.is_empty() {
                prop_assert!(msg.contains(raw), "error {msg:?} does not name the entry");
            }
            return Ok(());
        }
        Ok(e) => e,
    };
    // Printed back, it parses to the same entry.
    let printed = entry.to_string();
    prop_assert_eq!(
        Whitelist::parse_entry(&printed),
        Ok(entry),
        "printed as {}",
        printed
    );
    let mut w = Whitelist::default();
    w.push(entry);
    for edge in entry_edges(&entry) {
        // An IPv6 network that covers part of ::ffff:0:0/96 (e.g. `::/0`, `::ffff:0:0/95`)
        // does not match those addresses: clients are normalised to IPv4 before matching, and
        // only an entry of prefix >= 96 inside that range becomes an IPv4 entry.
        if client::normalise(edge).is_ipv6() == edge.is_ipv6() {
            prop_assert!(w.contains(edge), "{printed} does not match its own {edge}");
        } else {
            prop_assert!(!w.contains(edge), "{printed} matches {edge}");
        }
    }
    if let WhitelistEntry::Net(n) = entry {
        let probe = client::normalise(probe);
        prop_assert_eq!(
            w.contains(probe),
            n.contains(&probe),
            "{} vs {}",
            printed,
            probe
        );
    }
    if let WhitelistEntry::Exact(ip) = entry {
        prop_assert_eq!(w.contains(probe), client::normalise(probe) == ip);
    }
    Ok(())
}

#[test]
fn fuzz_whitelist_entries() {
    fuzz(
        "whitelist",
        (
            prop_oneof![
                4 => address_text(),
                1 => "[0-9*./:a-f%]{0,24}",
                1 => "\\PC{0,24}",
            ],
            prop_oneof![ipv4().prop_map(IpAddr::V4), ipv6().prop_map(IpAddr::V6)],
        ),
        |bytes| check_whitelist(&text(bytes), IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))),
        |(raw, probe)| check_whitelist(&raw, probe),
    );
}

// ---------------------------------------------------------------------------------------------
// The shared table: scribbled regions
// ---------------------------------------------------------------------------------------------

/// Area size of the fuzzed stores: 21 sub-caches (336 records) per area.
const AREA: usize = 65_536;
/// The fill's clock (µs since the epoch, November 2023).
const NOW: i64 = 1_700_000_000_000_000;
const SEC: i64 = 1_000_000;

fn geometry() -> Geometry {
    Geometry::for_area(AREA).expect("geometry")
}

/// Where a scribble lands.
#[derive(Clone, Copy, Debug)]
enum Word {
    Tag,
    /// Index of the 8-byte word inside a record (0..22).
    Field(usize),
}

/// One scribble on the raw region. Area, sub-cache and slot indexes wrap around.
#[derive(Clone, Debug)]
enum Op {
    Header {
        word: usize,
        value: u64,
    },
    Control {
        area: usize,
        sub: usize,
        word: usize,
        value: u64,
    },
    Slot {
        area: usize,
        sub: usize,
        slot: usize,
        word: Word,
        value: u64,
    },
    /// The same word in every slot of an area.
    Fill {
        area: usize,
        word: Word,
        value: u64,
    },
    /// Copies a record and its tag to another slot (maybe another area).
    Copy {
        from: [usize; 3],
        to: [usize; 3],
    },
    Raw {
        off: usize,
        bytes: Vec<u8>,
    },
}

const FIELDS: &[(&str, usize)] = &[
    ("id0", R_ID0),
    ("id1", R_ID1),
    ("addr0", R_ADDR0),
    ("addr1", R_ADDR1),
    ("meta", R_META),
    ("score", R_SCORE),
    ("origin", R_ORIGIN),
    ("expires", R_EXPIRES),
    ("last_used", R_LAST_USED),
    ("until", R_UNTIL),
    ("gen_count", R_GEN_COUNT),
    ("interval", R_INTERVAL),
];

fn sub_base(g: &Geometry, area: usize, sub: usize) -> usize {
    g.subcache_offset(area % 3, sub % g.subcaches)
}

fn word_offset(g: &Geometry, area: usize, sub: usize, slot: usize, word: Word) -> usize {
    let base = sub_base(g, area, sub);
    match word {
        Word::Tag => base + tag_offset(slot % SLOTS),
        Word::Field(w) => base + field_offset(slot % SLOTS, (w % (RECORD_BYTES / 8)) * 8),
    }
}

fn put_u64(mem: &mut [u8], off: usize, value: u64) {
    mem[off..off + 8].copy_from_slice(&value.to_ne_bytes());
}

fn get_u64(mem: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&mem[off..off + 8]);
    u64::from_ne_bytes(b)
}

impl Op {
    fn apply(&self, g: &Geometry, mem: &mut [u8]) {
        match *self {
            Op::Header { word, value } => put_u64(mem, (word % (HEADER_BYTES / 8)) * 8, value),
            Op::Control {
                area,
                sub,
                word,
                value,
            } => put_u64(
                mem,
                sub_base(g, area, sub) + (word % (CONTROL_BYTES / 8)) * 8,
                value,
            ),
            Op::Slot {
                area,
                sub,
                slot,
                word,
                value,
            } => put_u64(mem, word_offset(g, area, sub, slot, word), value),
            Op::Fill { area, word, value } => {
                for sub in 0..g.subcaches {
                    for slot in 0..SLOTS {
                        put_u64(mem, word_offset(g, area, sub, slot, word), value);
                    }
                }
            }
            Op::Copy { from, to } => {
                // A record is its body and its words in the columns.
                for w in 0..RECORD_BYTES / 8 {
                    let src = word_offset(g, from[0], from[1], from[2], Word::Field(w));
                    let dst = word_offset(g, to[0], to[1], to[2], Word::Field(w));
                    let value = get_u64(mem, src);
                    put_u64(mem, dst, value);
                }
                let tag = get_u64(mem, word_offset(g, from[0], from[1], from[2], Word::Tag));
                put_u64(mem, word_offset(g, to[0], to[1], to[2], Word::Tag), tag);
            }
            Op::Raw { off, ref bytes } => {
                let off = off % mem.len();
                let n = bytes.len().min(mem.len() - off);
                mem[off..off + n].copy_from_slice(&bytes[..n]);
            }
        }
    }
}

/// Corpus syntax, one scribble per line (`#` starts a comment):
/// `header W V`, `ctl AREA SUB W V`, `tag AREA SUB SLOT V`, `field AREA SUB SLOT NAME V`,
/// `fill AREA NAME|tag V`, `copy AREA SUB SLOT AREA SUB SLOT`, `raw OFFSET HEX`.
/// AREA is site/page/block; NAME a field (id0 … interval, text0 … text9) or a word index;
/// V decimal, 0x-hex, max/min (i64), umax (u64), now, now+S or now-S (seconds).
fn parse_script(text: &str) -> Result<Vec<Op>, String> {
    let mut ops = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        let bad = |why: &str| format!("line {}: {why}: {line}", n + 1);
        let num = |s: &str| s.parse::<usize>().map_err(|_| bad("not an index"));
        let area = |s: &str| match s {
            "site" => Ok(0),
            "page" => Ok(1),
            "block" => Ok(2),
            _ => Err(bad("not an area")),
        };
        let word = |s: &str| -> Result<Word, String> {
            if s == "tag" {
                return Ok(Word::Tag);
            }
            if let Some(i) = s.strip_prefix("text") {
                return Ok(Word::Field(R_TEXT / 8 + num(i)?));
            }
            match FIELDS.iter().find(|(name, _)| *name == s) {
                Some((_, off)) => Ok(Word::Field(off / 8)),
                None => Ok(Word::Field(num(s)?)),
            }
        };
        let value = |s: &str| -> Result<u64, String> {
            let v = match s {
                "max" => i64::MAX as u64,
                "min" => i64::MIN as u64,
                "umax" => u64::MAX,
                "now" => NOW as u64,
                _ if s.starts_with("now+") || s.starts_with("now-") => {
                    let secs: i64 = s[4..].parse().map_err(|_| bad("bad now±S"))?;
                    let sign = if s.as_bytes()[3] == b'+' { 1 } else { -1 };
                    (NOW + sign * secs * SEC) as u64
                }
                _ if s.starts_with("0x") => {
                    u64::from_str_radix(&s[2..], 16).map_err(|_| bad("bad hex"))?
                }
                _ => s
                    .parse::<i64>()
                    .map(|v| v as u64)
                    .or_else(|_| s.parse::<u64>())
                    .map_err(|_| bad("bad value"))?,
            };
            Ok(v)
        };
        let op = match w.as_slice() {
            ["header", i, v] => Op::Header {
                word: num(i)?,
                value: value(v)?,
            },
            ["ctl", a, s, i, v] => Op::Control {
                area: area(a)?,
                sub: num(s)?,
                word: num(i)?,
                value: value(v)?,
            },
            ["tag", a, s, slot, v] => Op::Slot {
                area: area(a)?,
                sub: num(s)?,
                slot: num(slot)?,
                word: Word::Tag,
                value: value(v)?,
            },
            ["field", a, s, slot, f, v] => Op::Slot {
                area: area(a)?,
                sub: num(s)?,
                slot: num(slot)?,
                word: word(f)?,
                value: value(v)?,
            },
            ["fill", a, f, v] => Op::Fill {
                area: area(a)?,
                word: word(f)?,
                value: value(v)?,
            },
            ["copy", a1, s1, l1, a2, s2, l2] => Op::Copy {
                from: [area(a1)?, num(s1)?, num(l1)?],
                to: [area(a2)?, num(s2)?, num(l2)?],
            },
            ["raw", off, hex] => {
                if hex.len() % 2 != 0 {
                    return Err(bad("odd hex length"));
                }
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| bad("bad hex"))?;
                Op::Raw {
                    off: num(off)?,
                    bytes,
                }
            }
            _ => return Err(bad("unknown scribble")),
        };
        ops.push(op);
    }
    Ok(ops)
}

/// Values that hit edge cases of the decoder.
fn value() -> impl Strategy<Value = u64> {
    let special = [
        0,
        1,
        u64::MAX,
        i64::MAX as u64,
        i64::MIN as u64,
        NOW as u64,
        (NOW + 3600 * SEC) as u64,
        (NOW - 3600 * SEC) as u64,
        u64::from(u32::MAX),
    ];
    prop_oneof![
        2 => select(special.to_vec()),
        2 => any::<u64>(),
        // A meta word: kind, family, rule, host length, path length.
        3 => (0u8..5, select(vec![0u8, 4, 5, 6, 255]), 0u8..4, any::<u8>(), any::<u8>())
            .prop_map(|(k, f, r, h, p)| {
                u64::from(k) | u64::from(f) << 8 | u64::from(r) << 16 | u64::from(h) << 24
                    | u64::from(p) << 32
            }),
        // Valid meta with other text lengths (the text gets reinterpreted).
        2 => (1u8..4, select(vec![4u8, 6]), 1u8..3, 0u8..=80)
            .prop_flat_map(|(k, f, r, h)| (Just((k, f, r, h)), 0u8..=(80 - h)))
            .prop_map(|((k, f, r, h), p)| {
                u64::from(k) | u64::from(f) << 8 | u64::from(r) << 16 | u64::from(h) << 24
                    | u64::from(p) << 32
            }),
        2 => (-200_000i64..200_000).prop_map(|s| (NOW + s * SEC) as u64),
        1 => 0u64..100,
    ]
}

fn word() -> impl Strategy<Value = Word> {
    prop_oneof![
        1 => Just(Word::Tag),
        4 => (0usize..RECORD_BYTES / 8).prop_map(Word::Field),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let idx = || (0usize..3, 0usize..64, 0usize..SLOTS);
    let len = Store::region_bytes(AREA);
    prop_oneof![
        1 => (0usize..HEADER_BYTES / 8, value()).prop_map(|(word, value)| Op::Header { word, value }),
        2 => (0usize..3, 0usize..64, 0usize..8, value())
            .prop_map(|(area, sub, word, value)| Op::Control { area, sub, word, value }),
        10 => (idx(), word(), value()).prop_map(|((area, sub, slot), word, value)| Op::Slot {
            area,
            sub,
            slot,
            word,
            value
        }),
        2 => (0usize..3, word(), value()).prop_map(|(area, word, value)| Op::Fill { area, word, value }),
        1 => (idx(), idx()).prop_map(|(a, b)| Op::Copy { from: [a.0, a.1, a.2], to: [b.0, b.1, b.2] }),
        2 => (HEADER_BYTES..len, proptest::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(off, bytes)| Op::Raw { off, bytes }),
        1 => (0usize..len, proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(off, bytes)| Op::Raw { off, bytes }),
    ]
}

const HOSTS: &[&str] = &[
    "example.org",
    "a.example",
    "ÄB.example",
    "",
    "[2001:db8::1]",
];

/// A block the fill started and that was active right after it.
#[derive(Clone, Copy, Debug)]
struct Active {
    client: IpAddr,
    until: i64,
    generation: u32,
    /// Byte offset of its sub-cache in the region.
    sub: usize,
}

fn site_client(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8))
}

fn block_client(i: usize) -> IpAddr {
    if i.is_multiple_of(3) {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2 + (i >> 8) as u8, i as u8))
    } else {
        IpAddr::V6(Ipv6Addr::from(
            (0x2001_0db8u128 << 96) | ((i as u128) << 64),
        ))
    }
}

fn periods(g: u32) -> u32 {
    [5, 60, 3600]
        .get(g.saturating_sub(1) as usize)
        .copied()
        .unwrap_or(86_400)
}

/// A store with every slot of every area in use: live and expired windows, active and
/// remembered blocks of several generations.
fn filled_store() -> Store {
    let store = Store::create(AREA).expect("create store");
    for i in 0..500usize {
        let client = site_client(i);
        let host = HOSTS[i % HOSTS.len()];
        let t = NOW - (i as i64 % 90) * SEC;
        let site = KeyParts {
            client,
            host,
            path: "",
        };
        store.add(Counter::Site, &site, 1 + i as i64 % 3, 60, t);
        let path = format!("/p/{i}/ü?q={}", i % 7);
        let page = KeyParts {
            client,
            host,
            path: &path,
        };
        store.add(Counter::Page, &page, 2, if i % 4 == 0 { 1 } else { 60 }, t);
    }
    for i in 0..420usize {
        let uri = format!("/wp-login.php?i={i}");
        let info = BlockInfo {
            rule: if i % 2 == 0 {
                Counter::Page
            } else {
                Counter::Site
            },
            score: 3 + i as i64,
            count: 2,
            interval: 1,
            host: HOSTS[i % HOSTS.len()],
            uri: &uri,
        };
        // Some blocks are over (remembered only), some are in their 2nd or 3rd generation.
        let start = NOW - (i as i64 % 40) * SEC;
        for g in 0..(i % 3) {
            store.start_block(
                block_client(i),
                &info,
                start - 7200 * SEC + g as i64 * 3601 * SEC,
                &periods,
                86_400,
            );
        }
        store.start_block(block_client(i), &info, start, &periods, 86_400);
    }
    store
}

/// Region offset of the sub-cache holding the record with this id, found by scanning.
fn find_sub(g: &Geometry, mem: &[u8], area: usize, id: [u64; 2]) -> Option<usize> {
    (0..g.subcaches).find_map(|sub| {
        let base = g.subcache_offset(area, sub);
        (0..SLOTS)
            .any(|slot| {
                let rec = base + record_offset(slot);
                get_u64(mem, rec + R_ID0) == id[0] && get_u64(mem, rec + R_ID1) == id[1]
            })
            .then_some(base)
    })
}

/// Whether `attach` must accept this header: the words it checks are unchanged, or describe
/// the same geometry, and the header checksum still matches.
fn header_consistent(g: &Geometry, before: &[u8], after: &[u8]) -> bool {
    let same = |off: usize| get_u64(before, off) == get_u64(after, off);
    let sealed = <&[u8; HEADER_BYTES]>::try_from(after).is_ok_and(mod_shield::store::file::sealed);
    sealed
        && get_u64(after, H_MAGIC) == MAGIC
        && same(H_VERSION)
        && same(H_GEOMETRY)
        && same(H_REGION_LEN)
        && usize::try_from(get_u64(after, H_AREA_BYTES))
            .ok()
            .and_then(Geometry::for_area)
            .is_some_and(|h| h.subcaches == g.subcaches && h.region_len == g.region_len)
}

/// Attached, refused by attach, blocks checked to be still enforced (printed by the test).
static STATS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

fn check_store(ops: &[Op]) -> Result<(), TestCaseError> {
    let g = geometry();
    let store = filled_store();
    // Blocks active after the fill, with their ids (found again in raw memory below).
    let actives: Vec<(IpAddr, i64, u32, [u64; 2])> = (0..420)
        .map(block_client)
        .filter_map(|c| {
            store.active_block(c, NOW).map(|b| {
                let id = store.key_id(
                    Area::Block,
                    &KeyParts {
                        client: c,
                        host: "",
                        path: "",
                    },
                );
                (c, b.until, b.generation, id)
            })
        })
        .collect();
    prop_assert!(
        actives.len() > 100,
        "fill left only {} active blocks",
        actives.len()
    );

    let (ptr, len) = store.into_region().into_raw();
    // SAFETY: the mapping is ours alone (no Store or Region refers to it until from_raw
    // below) and `len` bytes long; nothing else touches it meanwhile.
    let mem = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
    let before = mem.to_vec();
    let actives: Vec<Active> = actives
        .into_iter()
        .filter_map(|(client, until, generation, id)| {
            find_sub(&g, mem, 2, id).map(|sub| Active {
                client,
                until,
                generation,
                sub,
            })
        })
        .collect();
    for op in ops {
        op.apply(&g, mem);
    }
    let must_attach = header_consistent(&g, &before[..HEADER_BYTES], &mem[..HEADER_BYTES]);
    let key_kept = before[..H_KEY1 + 8] == mem[..H_KEY1 + 8];
    let untouched: Vec<Active> = actives
        .into_iter()
        .filter(|a| {
            // The block's lookup data: the tag summary (the control line's last word), the
            // tags and the records.
            let range = a.sub + C_TAGS..a.sub + SUBCACHE_BYTES;
            key_kept && before[range.clone()] == mem[range]
        })
        .collect();

    // SAFETY: ptr/len come from `into_raw` of a mapping still mapped and owned by nobody.
    let region = unsafe { Region::from_raw(ptr, len) };
    let store = match Store::attach(region) {
        Ok(s) => {
            prop_assert!(must_attach, "attach accepted a header it should refuse");
            STATS[0].fetch_add(1, Ordering::Relaxed);
            s
        }
        Err(e) => {
            prop_assert!(!must_attach, "attach refused a consistent header: {e}");
            STATS[1].fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
    };
    STATS[2].fetch_add(untouched.len() as u64, Ordering::Relaxed);
    prop_assert_eq!(store.capacity(), g.capacity());

    // Fail closed: scribbles elsewhere never release a block.
    for a in &untouched {
        let b = store.active_block(a.client, NOW);
        prop_assert!(
            b.as_ref()
                .is_some_and(|b| b.until == a.until && b.generation == a.generation),
            "block of {} (until {}, generation {}) lost or changed: {:?}",
            a.client,
            a.until,
            a.generation,
            b
        );
    }
    exercise(&store)
}

/// Every operation on a scribbled store, at several clocks including absurd ones.
fn exercise(store: &Store) -> Result<(), TestCaseError> {
    let server = ServerSettings::default();
    let cap = store.capacity();
    let clients: Vec<IpAddr> = (0..6)
        .map(|i| site_client(i * 37))
        .chain((0..6).map(|i| block_client(i * 41)))
        .chain([
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ])
        .collect();
    let nows = [NOW, NOW + 61 * SEC, NOW - 3600 * SEC, 0, i64::MAX, i64::MIN];
    for (k, &now) in nows.iter().enumerate() {
        let realistic = now > 0 && now < i64::MAX / 2;
        for area in Area::ALL {
            let s = store.stats(area);
            prop_assert!(s.entries as usize <= cap && s.capacity as usize == cap);
            prop_assert!(store.live_entries(area, now) as usize <= cap);
            let _ = store.repairs(area);
            prop_assert!(store.snapshot(area, now, 16).len() <= 16);
            let all = store.snapshot(area, now, usize::MAX);
            prop_assert!(all.len() <= cap);
            for v in &all {
                prop_assert!(v.expires > now);
                if area == Area::Block {
                    prop_assert!(v.rule.is_some());
                }
            }
        }
        let blocks = store.active_blocks(now, 1000);
        prop_assert!(blocks.iter().all(|b| b.until > now));
        prop_assert!(blocks.windows(2).all(|w| w[0].until >= w[1].until));

        for (i, &client) in clients.iter().enumerate() {
            let host = HOSTS[i % HOSTS.len()];
            let path = format!("/p/{}/ü?q={}", i * 37, (i * 37) % 7);
            let site = KeyParts {
                client,
                host,
                path: "",
            };
            let page = KeyParts {
                client,
                host,
                path: &path,
            };
            let delta = [1, -5, i64::MAX, i64::MIN, 0, 50, -1][(i + k) % 7];
            for (key, area) in [(&site, Counter::Site), (&page, Counter::Page)] {
                if let Some(hit) = store.add(area, key, delta, [1, 60, u32::MAX][i % 3], now) {
                    prop_assert!(hit.score >= 0, "{area:?} score {}", hit.score);
                }
                store.reset(area, key, now);
            }
            if let Some(b) = store.active_block(client, now) {
                prop_assert!(b.until > now);
                prop_assert_eq!(b.client, client);
            }
            if realistic {
                if let Some(r) = policy::blocked(store, &server, client, now) {
                    prop_assert!(r.retry_after(now) >= 1);
                    let _ = r.headers(now);
                }
            }
            let info = BlockInfo {
                rule: Counter::Site,
                score: delta,
                count: 50,
                interval: 1,
                host,
                uri: &path,
            };
            if let Some(b) = store.start_block(client, &info, now, &periods, 86_400) {
                prop_assert!(b.generation >= 1);
                if b.until > now {
                    let again = store.active_block(client, now);
                    prop_assert!(
                        again.as_ref().is_some_and(|a| a.until == b.until),
                        "block just started for {client} not enforced: {again:?}"
                    );
                }
            }
        }
    }
    // The status page prints whatever the records hold: it never panics and its JSON parses.
    // JSON at the fill's clock every time, and one more format/clock in turn (rendering is the
    // slow part of a case).
    static TURN: AtomicU64 = AtomicU64::new(0);
    let other = [
        (Format::Html, NOW),
        (Format::Auto, i64::MIN),
        (Format::Json, i64::MAX),
        (Format::Html, 0),
        (Format::Auto, NOW),
        (Format::Metrics, NOW),
    ][TURN.fetch_add(1, Ordering::Relaxed) as usize % 6];
    for (format, now) in [(Format::Json, NOW), other] {
        let page = render::page(
            format,
            &render::Sources {
                server: &server,
                dir: &DirConfig::default(),
                store: Some(store),
                shared: None,
                memory_only: None,
                would_blocks: &[],
                metrics: None,
                now,
            },
        );
        if format == Format::Json {
            serde_json::from_str::<serde_json::Value>(&page)
                .map_err(|e| fail(format!("status page JSON at {now}: {e}\n{page}")))?;
        }
    }
    let fresh = Store::create(AREA).map_err(|e| fail(format!("create: {e}")))?;
    prop_assert!(fresh.copy_blocks_from(store, NOW) <= cap);
    Ok(())
}

#[test]
fn fuzz_store_decoder() {
    let limit = Duration::from_secs(30);
    fuzz(
        "store",
        proptest::collection::vec(op(), 0..12),
        |bytes| {
            let ops = parse_script(&text(bytes)).map_err(fail)?;
            bounded("store corpus input", limit, move || check_store(&ops))
        },
        |ops| bounded("store case", limit, move || check_store(&ops)),
    );
    let [attached, refused, kept] = STATS.each_ref().map(|s| s.load(Ordering::Relaxed));
    eprintln!(
        "store: {attached} scribbled regions attached, {refused} refused; \
         {kept} blocks in untouched sub-caches checked still enforced"
    );
    assert!(attached > 0 && refused > 0 && kept > 0);
}

// ---------------------------------------------------------------------------------------------
// The farm's events (bytes from Redis or memcached: untrusted)
// ---------------------------------------------------------------------------------------------

/// A well-formed block event, to mutate.
fn farm_event() -> Event {
    Event {
        op: EventOp::Block,
        addr: "192.0.2.7".parse().unwrap(),
        prefix: 0,
        started: 1_800_000_000_000_000,
        until: 1_800_000_060_000_000,
        generation: 2,
        rule: "page".into(),
        count: 10,
        interval: 60,
        score: 11,
        host: "www.example.com:80".into(),
        uri: "/login".into(),
        memory_secs: 600,
        forget: false,
        origin: 7,
    }
}

/// Whatever the engine hands back, decoding never panics, and what it accepts is an event
/// a server can write into its store as it stands: a prefix within the family's width, a
/// block that ends after it starts, text of bounded length.
fn check_event_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Some(ev) = Event::decode(bytes) {
        let width = if ev.addr.is_ipv4() { 32 } else { 128 };
        prop_assert!(ev.prefix < width);
        prop_assert!(ev.host.len() <= 256 && ev.uri.len() <= 256);
        if ev.op == EventOp::Block {
            prop_assert!(ev.until > ev.started && ev.generation > 0);
        }
        // What is accepted encodes back to something accepted.
        prop_assert_eq!(Event::decode(ev.encode().as_bytes()), Some(ev));
    }
    Ok(())
}

#[test]
fn fuzz_farm_events() {
    let good = farm_event().encode().into_bytes();
    let mut runner = TestRunner::new(ProptestConfig::with_cases(2_000));
    runner
        .run(
            &(
                proptest::collection::vec(any::<u8>(), 0..400),
                proptest::collection::vec((0usize..400, any::<u8>()), 0..8),
            ),
            |(noise, flips)| {
                check_event_bytes(&noise)?;
                let mut mutated = good.clone();
                for (at, byte) in flips {
                    let i = at % mutated.len();
                    mutated[i] = byte;
                }
                check_event_bytes(&mutated)
            },
        )
        .unwrap();
    assert_eq!(Event::decode(&good), Some(farm_event()));
}

#[test]
fn generators_reach_accepted_values() {
    let mut runner = TestRunner::deterministic();
    let (mut ok, mut total) = (0, 0);
    for _ in 0..400 {
        let (name, raw) = lines()
            .prop_filter("one line", |v| !v.is_empty())
            .prop_map(|v| v[0].clone())
            .new_tree(&mut runner)
            .expect("tree")
            .current();
        total += 1;
        if config::parse(&name, &raw).is_ok() {
            ok += 1;
        }
    }
    assert!(
        ok * 20 >= total,
        "only {ok} of {total} generated lines parse"
    );
    let script = parse_script(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/store/zero-magic.txt"),
        )
        .expect("corpus"),
    )
    .expect("script");
    assert!(matches!(
        script.as_slice(),
        [Op::Header { word: 0, value: 0 }]
    ));
}

/// A lock held forever (a worker that died holding it) costs each operation at most the
/// lock timeout, and a known block is still enforced (read without the lock).
#[test]
fn stuck_locks_are_bounded_and_fail_closed() {
    bounded("stuck locks", Duration::from_secs(60), || {
        // Counting waits the full lock timeout (a preempted holder must not make it fail
        // open), then fails open, counted; never longer. (On a store of its own, right after
        // the hold: a word held for seconds is stale and taken over.)
        let small = Store::create(AREA).expect("create store");
        let site = KeyParts {
            client: site_client(0),
            host: HOSTS[0],
            path: "",
        };
        assert!(small.debug_hold_lock(Area::Site, &site));
        for _ in 0..2 {
            let t = Instant::now();
            assert!(small.add(Counter::Site, &site, 1, 60, NOW).is_none());
            assert!(
                t.elapsed() < LOCK_TIMEOUT + Duration::from_millis(400),
                "add on a stuck lock waited {:?}",
                t.elapsed()
            );
        }
        assert_eq!(small.fail_opens(), 2, "each give-up counted");

        let store = filled_store();
        let blocked: Vec<IpAddr> = (0..420)
            .map(block_client)
            .filter(|&c| store.active_block(c, NOW).is_some())
            .collect();
        assert!(blocked.len() > 100);
        // Hold the lock of every sub-cache a block client lives in, and of many others.
        for (i, &c) in blocked.iter().enumerate() {
            let key = KeyParts {
                client: c,
                host: "",
                path: "",
            };
            store.debug_hold_lock(Area::Block, &key);
            let site = KeyParts {
                client: site_client(i),
                host: HOSTS[i % HOSTS.len()],
                path: "",
            };
            store.debug_hold_lock(Area::Site, &site);
        }
        // Looks (the block check, listings) wait ~2 ms per stuck sub-cache, then read
        // without the lock or skip it.
        let t0 = Instant::now();
        let mut ops = 0u32;
        for &c in &blocked {
            assert!(
                store.active_block(c, NOW).is_some(),
                "block of {c} released by a stuck lock"
            );
            let _ = store.snapshot(Area::Block, NOW, 10);
            ops += 2;
        }
        let per_op = t0.elapsed() / ops;
        eprintln!("stuck locks: {ops} looks, {per_op:?} each");
        // A snapshot may wait for each of 21 sub-caches.
        assert!(
            t0.elapsed() < Duration::from_millis(u64::from(ops) * 25),
            "looks waited {:?} in total",
            t0.elapsed()
        );
    });
}
