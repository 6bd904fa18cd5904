//! Unit tests of the status page: every format from one fixture store, escaping, dates.
use super::escape::label_escape;
use super::time::{iso, percent_text, permille, secs_until, utc, MICROS};
use super::*;
use crate::config::{DirConfig, ServerSettings};
use crate::metrics::Metrics;
use crate::monitor::WouldBlock;
use crate::remote::SharedTier;
use crate::store::{Counter, Micros, Store};

/// The page's sources without a shared tier, would-be blocks or counters (most tests).
fn src<'a>(
    server: &'a ServerSettings,
    dir: &'a DirConfig,
    store: Option<&'a Store>,
) -> Sources<'a> {
    Sources {
        server,
        dir,
        store,
        shared: None,
        memory_only: None,
        would_blocks: &[],
        metrics: None,
        now: NOW,
    }
}

fn page_(
    f: Format,
    server: &ServerSettings,
    dir: &DirConfig,
    store: Option<&Store>,
    _now: Micros,
) -> String {
    page(f, &src(server, dir, store))
}

#[test]
fn would_be_blocks_are_listed_in_every_format() {
    let store = Store::create(65536).unwrap();
    let server = server(&[]);
    let monitor = dir(&["DOSEnabled monitor"]);
    let would = [WouldBlock {
        prefix: 0,
        at: NOW - 5_000_000,
        client: "2001:db8::".parse().unwrap(),
        rule: Counter::Page,
        score: 3,
        count: 2,
    }];
    let a = page(
        Format::Auto,
        &Sources {
            shared: None,
            would_blocks: &would,
            ..src(&server, &monitor, Some(&store))
        },
    );
    assert!(
        a.contains("\nWouldBlocks: 1\nWouldBlock: 2001:db8:: rule=page score=3 count=2 ago=5\n"),
        "{a}"
    );
    let h = page(
        Format::Html,
        &Sources {
            shared: None,
            would_blocks: &would,
            ..src(&server, &monitor, Some(&store))
        },
    );
    assert!(
        h.contains("Would-be blocks (1)") && h.contains("<td>2001:db8::</td><td>page</td>"),
        "{h}"
    );
    let j = page(
        Format::Json,
        &Sources {
            shared: None,
            would_blocks: &would,
            ..src(&server, &monitor, None)
        },
    );
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["would_blocks"][0]["client"], "2001:db8::");
    assert_eq!(v["would_blocks"][0]["score"], 3);
    // In monitor mode the section is there even when empty.
    let h = page(
        Format::Html,
        &Sources {
            shared: None,
            would_blocks: &[],
            ..src(&server, &monitor, Some(&store))
        },
    );
    assert!(h.contains("Would-be blocks (0)"));
}

#[test]
fn shared_tier_health_is_shown() {
    let store = Store::create(65536).unwrap();
    let server = server(&["DOSCache redis:127.0.0.1:6379"]);
    let down = SharedTier {
        label: "redis:127.0.0.1:6379".into(),
        down_since: Some(NOW - 5_000_000),
        failures: 3,
        stats: Default::default(),
    };
    let a = page(
        Format::Auto,
        &Sources {
            shared: Some(&down),
            would_blocks: &[],
            ..src(&server, &dir(&[]), Some(&store))
        },
    );
    assert!(
        a.contains("\nBackend: redis:127.0.0.1:6379\nBackendState: down\nBackendFailures: 3\n"),
        "{a}"
    );
    assert!(!a.contains("StoreProviderUnused"));
    let h = page(
        Format::Html,
        &Sources {
            shared: Some(&down),
            would_blocks: &[],
            ..src(&server, &dir(&[]), Some(&store))
        },
    );
    assert!(h.contains("redis:127.0.0.1:6379 — down since"), "{h}");
    let up = SharedTier {
        down_since: None,
        ..down
    };
    let j = page(
        Format::Json,
        &Sources {
            shared: Some(&up),
            would_blocks: &[],
            ..src(&server, &dir(&[]), Some(&store))
        },
    );
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["store"]["shared_tier"]["state"], "up");
    assert_eq!(v["store"]["unused_provider"], serde_json::Value::Null);
}
use crate::store::{BlockInfo, KeyParts};
use std::net::IpAddr;

const NOW: Micros = 1_700_000_000_000_000; // 2023-11-14 22:13:20 UTC

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn server(lines: &[&str]) -> ServerSettings {
    crate::config::from_lines(lines).unwrap().0.resolve()
}

fn dir(lines: &[&str]) -> DirConfig {
    crate::config::from_lines(lines).unwrap().1
}

/// A store with two active blocks (one with a hostile host and URI), one ended block, and
/// some site/page scores.
fn fixture() -> (Store, ServerSettings, DirConfig) {
    let server = server(&[
        "DOSSiteCount 500",
        "DOSSiteStatusPenalty 404 50",
        "DOSBlockingPeriod 5 60 120",
    ]);
    let dir = dir(&["DOSPageCount 2", "DOSPageDeadline 0.5 5"]);
    let store = Store::create(65536).unwrap();
    let period = |g: u32| server.period_for_generation(g);
    let start = |client: &str, rule, score, host, uri, at: Micros| {
        store
            .start_block(
                ip(client),
                &BlockInfo {
                    rule,
                    score,
                    count: 2,
                    interval: 1,
                    host,
                    uri,
                },
                at,
                &period,
                86_400,
            )
            .expect("block starts")
    };
    // 192.0.2.7: generation 1 ended, generation 2 active (60 s from NOW - 5 s).
    start(
        "192.0.2.7",
        Counter::Page,
        3,
        "a.example",
        "/first",
        NOW - 100 * MICROS,
    );
    let b = start(
        "192.0.2.7",
        Counter::Page,
        7,
        "a.example",
        "/<script>alert(1)</script>",
        NOW - 5 * MICROS,
    );
    assert_eq!(b.generation, 2);
    // An IPv6 client blocked by the site rule, hostile host.
    start(
        "2001:db8::7",
        Counter::Site,
        501,
        "<b>evil\"host</b>",
        "/x\ny z",
        NOW - MICROS,
    );
    // Remembered, not active.
    start(
        "198.51.100.9",
        Counter::Page,
        3,
        "c.example",
        "/",
        NOW - 60 * MICROS,
    );
    // Scores: 203.0.113.1 has 4 on a page and 6 on the site.
    let page = KeyParts {
        client: ip("203.0.113.1"),
        host: "shop.example",
        path: "/cart?<x>",
    };
    let site = KeyParts { path: "", ..page };
    for _ in 0..4 {
        store.add(Counter::Page, &page, 1, 60, NOW).unwrap();
    }
    store.add(Counter::Site, &site, 6, 120, NOW).unwrap();
    (store, server, dir)
}

fn fixture_page(format: Format) -> String {
    let (store, server, dir) = fixture();
    page(
        format,
        &Sources {
            shared: None,
            would_blocks: &[],
            ..src(&server, &dir, Some(&store))
        },
    )
}

#[test]
fn escapes_markup_json_and_lines() {
    assert_eq!(
        html_escape("<script>\"&'\0"),
        "&lt;script&gt;&quot;&amp;&#39;\u{fffd}"
    );
    assert_eq!(
        json_escape("a\"b\\c\n\u{1}</"),
        "a\\\"b\\\\c\\n\\u0001\\u003c/"
    );
    assert_eq!(
        line_escape("/a b\\c\r\nd\u{85}\u{2028}é"),
        "/a\\x20b\\x5cc\\x0d\\x0ad\\x85\\u{2028}é"
    );
}

#[test]
fn format_from_query() {
    assert_eq!(Format::from_query(None), Format::Html);
    assert_eq!(Format::from_query(Some("auto")), Format::Auto);
    assert_eq!(Format::from_query(Some("x=1&json")), Format::Json);
    assert_eq!(Format::from_query(Some("autox")), Format::Html);
}

#[test]
fn utc_dates() {
    assert_eq!(utc(0, ' '), "1970-01-01 00:00:00");
    assert_eq!(iso(NOW), "2023-11-14T22:13:20Z");
    assert_eq!(iso(951_782_400 * MICROS), "2000-02-29T00:00:00Z");
    assert_eq!(iso(951_868_800 * MICROS), "2000-03-01T00:00:00Z");
    assert_eq!(iso(-MICROS), "1969-12-31T23:59:59Z");
    assert_eq!(iso(4_102_444_800 * MICROS), "2100-01-01T00:00:00Z");
    // Garbage from shared memory must not panic.
    let _ = iso(i64::MIN);
    let _ = iso(i64::MAX);
}

#[test]
fn seconds_left_round_up() {
    assert_eq!(secs_until(NOW + 1, NOW), 1);
    assert_eq!(secs_until(NOW + 2 * MICROS, NOW), 2);
    assert_eq!(secs_until(NOW - 1, NOW), 0);
    assert_eq!(secs_until(i64::MAX, i64::MIN), i64::MAX / MICROS + 1);
}

#[test]
fn html_summary() {
    let h = fixture_page(Format::Html);
    assert!(h.contains("2 clients blocked now"), "{h}");
    assert!(h.contains("class=\"alert\""));
    // Both blocks, with rule, generation, score, start and time left.
    assert!(h.contains("<td>192.0.2.7</td>"));
    assert!(h.contains("<td>2001:db8::7</td>"));
    assert!(!h.contains("<td>198.51.100.9</td>"), "ended block listed");
    assert!(h.contains("<span class=\"rule\">page</span>"));
    assert!(h.contains("<span class=\"rule\">site</span>"));
    assert!(h.contains("<td>2023-11-14 22:13:15</td>"), "start of gen 2");
    assert!(
        h.contains("<td class=\"n\">55 s</td>"),
        "60 s block started 5 s ago"
    );
    assert!(h.contains("<td class=\"n\">2</td><td class=\"n\">7</td>"));
    assert!(h.contains("Ended blocks remembered: 1 "));
    assert!(h.contains("<span class=\"note\">count 2 per 1 s</span>"));
    assert!(h.contains("store: shared memory, ok</p>"));
    // Hostile text is escaped, never markup.
    assert!(h.contains("/&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(h.contains("&lt;b&gt;evil&quot;host&lt;/b&gt;"));
    assert!(!h.contains("<script"));
    assert!(!h.contains("<b>"));
    // Settings as directives.
    for line in [
        "DOSSiteCount 500",
        "DOSSiteStatusPenalty 404 50",
        "DOSPageCount 2",
        "DOSPageDeadline 0.50 5",
        "DOSBlockingPeriod 5 60 120",
        "DOSCache shmcb:none(22020096)",
    ] {
        assert!(h.contains(&format!("{line}\n")), "missing {line}");
    }
    // Top scorers with their counts; areas and store health.
    assert!(h.contains("<td class=\"n\">6 / 500</td>"));
    assert!(h.contains("<td class=\"n\">4 / 2</td>"));
    assert!(h.contains("/cart?&lt;x&gt;"));
    assert!(h.contains("shared memory, 65536 bytes per area"));
    assert!(h.contains("created"));
    assert!(!h.contains("http:") && !h.contains("https:") && !h.contains("src="));
}

#[test]
fn html_balanced_tags() {
    assert_balanced(&fixture_page(Format::Html));
    // With the chart, whose SVG elements are closed explicitly too.
    assert_balanced(&with_metrics(Format::Html, None));
}

/// Every opened element that needs closing is closed, in order.
fn assert_balanced(h: &str) {
    let mut stack: Vec<String> = Vec::new();
    let void = ["meta", "br", "!DOCTYPE"];
    let mut rest = h;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').expect("unterminated tag");
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '!')
            .collect();
        if void.iter().any(|v| name.eq_ignore_ascii_case(v)) {
            continue;
        }
        if tag.starts_with('/') {
            assert_eq!(stack.pop().as_deref(), Some(name.as_str()), "at </{name}>");
        } else {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

#[test]
fn auto_lines() {
    let a = fixture_page(Format::Auto);
    let lines: Vec<&str> = a.lines().collect();
    let value = |key: &str| -> Vec<&str> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
            .collect()
    };
    assert_eq!(value("BlocksActive"), ["2"]);
    assert_eq!(value("BlocksRemembered"), ["1"]);
    assert_eq!(value("Verdict"), ["2 clients blocked now"]);
    assert_eq!(
        value("SiteCapacity"),
        [Store::create(65536).unwrap().capacity().to_string()]
    );
    assert_eq!(value("PageLive"), ["1"]);
    assert_eq!(value("SiteLive"), ["1"]);
    assert_eq!(value("BlockEntries"), ["3"]);
    assert_eq!(value("StoreState"), ["ok"]);
    assert_eq!(value("StoreAttaches"), ["0"]);
    assert!(value("Setting").contains(&"DOSPageDeadline 0.50 5"));
    assert!(value("Setting").contains(&"DOSBlockingPeriod 5 60 120"));
    let blocks = value("Block");
    assert_eq!(blocks.len(), 2, "{a}");
    assert_eq!(
        blocks[0],
        "192.0.2.7 rule=page gen=2 score=7 count=2 interval=1 \
         started=2023-11-14T22:13:15Z ends_in=55 host=a.example uri=/<script>alert(1)</script>"
    );
    assert_eq!(
        blocks[1],
        "2001:db8::7 rule=site gen=1 score=501 count=2 interval=1 \
         started=2023-11-14T22:13:19Z ends_in=4 host=<b>evil\"host</b> uri=/x\\x0ay\\x20z"
    );
    assert_eq!(
        value("TopPage"),
        ["203.0.113.1 score=4 count=2 interval=60 host=shop.example path=/cart?<x>"]
    );
    assert_eq!(
        value("TopSite"),
        ["203.0.113.1 score=6 count=500 interval=120 host=shop.example"]
    );
    // One record per line: every line is `Key: value`.
    for l in &lines {
        let (k, _) = l
            .split_once(": ")
            .unwrap_or_else(|| panic!("bad line {l:?}"));
        assert!(k.chars().all(|c| c.is_ascii_alphanumeric()), "{l:?}");
    }
}

#[test]
fn json_is_valid_and_complete() {
    let j = fixture_page(Format::Json);
    let v: serde_json::Value = serde_json::from_str(&j).unwrap_or_else(|e| panic!("{e}\n{j}"));
    assert_eq!(v["verdict"], "2 clients blocked now");
    assert_eq!(v["blocks_active"], 2);
    assert_eq!(v["blocks"]["active"], 2);
    assert_eq!(v["blocks"]["remembered"], 1);
    let listed = v["blocks"]["listed"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["client"], "2001:db8::7");
    assert_eq!(listed[1]["host"], "<b>evil\"host</b>");
    assert_eq!(listed[1]["uri"], "/x\ny z");
    assert_eq!(listed[1]["rule"], "site");
    assert_eq!(listed[0]["uri"], "/<script>alert(1)</script>");
    assert_eq!(listed[0]["generation"], 2);
    assert_eq!(listed[0]["score"], 7);
    assert_eq!(listed[0]["ends_in"], 55);
    assert_eq!(listed[0]["started"], "2023-11-14T22:13:15Z");
    assert_eq!(listed[0]["started_unix"], 1_699_999_995);
    assert!(!j.contains('<'), "markup characters are \\u-escaped");
    assert_eq!(v["areas"]["page"]["live"], 1);
    assert_eq!(v["areas"]["block"]["entries"], 3);
    assert!(v["areas"]["site"]["capacity"].as_u64().unwrap() > 0);
    assert_eq!(v["top"]["page"][0]["score"], 4);
    assert_eq!(v["top"]["page"][0]["count"], 2);
    assert_eq!(v["top"]["page"][0]["path"], "/cart?<x>");
    assert_eq!(v["top"]["site"][0]["count"], 500);
    assert_eq!(v["store"]["available"], true);
    assert_eq!(v["store"]["area_bytes"], 65536);
    let settings: Vec<&str> = v["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(settings.contains(&"DOSSiteStatusPenalty 404 50"));
    assert_eq!(settings[0], "DOSEnabled on");
}

#[test]
fn no_store_says_so_in_every_format() {
    let (server, dir) = (server(&[]), dir(&[]));
    let h = page_(Format::Html, &server, &dir, None, NOW);
    assert!(h.contains("Store unavailable"));
    assert!(h.contains("class=\"warn\""));
    assert!(h.contains("DOSPageCount 2\n"));
    let a = page_(Format::Auto, &server, &dir, None, NOW);
    assert!(a.contains("\nStoreState: unavailable\n"), "{a}");
    assert!(a.contains("\nBlocksActive: 0\n"));
    let j = page_(Format::Json, &server, &dir, None, NOW);
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["store"]["available"], false);
    assert!(v["blocks"].is_null());
}

#[test]
fn empty_store_and_monitor_mode() {
    let store = Store::create(65536).unwrap();
    let (server, on) = (server(&[]), dir(&[]));
    let h = page_(Format::Html, &server, &on, Some(&store), NOW);
    assert!(h.contains("No client is blocked"));
    assert!(h.contains("class=\"ok\""));
    assert!(h.contains("Nobody is scoring."));
    let monitor = dir(&["DOSEnabled monitor"]);
    let h = page_(Format::Html, &server, &monitor, Some(&store), NOW);
    assert!(h.contains("Monitor mode, nobody is refused"));
    assert!(h.contains("would block"));
    let a = page_(Format::Auto, &server, &monitor, Some(&store), NOW);
    assert!(a.contains("\nEnabled: monitor\n"));
    // `DOSEnabled off` on the status URL only exempts the page itself: no alarm.
    let off = dir(&["DOSEnabled off"]);
    let h = page_(Format::Html, &server, &off, Some(&store), NOW);
    assert!(h.contains("id=\"verdict\">No client is blocked</p>"));
    assert!(h.contains("class=\"ok\""));
    assert!(h.contains("DOSEnabled off (this URL)"));
}

#[test]
fn attached_store_says_so() {
    let created = Store::create(65536).unwrap();
    let at = created.created();
    let store = Store::attach(created.into_region()).unwrap();
    let h = page_(Format::Html, &server(&[]), &dir(&[]), Some(&store), NOW);
    let expect = format!(
        "shared memory, 65536 bytes per area ({} records each), attached; region created {} UTC",
        store.capacity(),
        utc(at, ' ')
    );
    assert!(h.contains(&expect), "{h}");
    let a = page_(Format::Auto, &server(&[]), &dir(&[]), Some(&store), NOW);
    assert!(a.contains("\nStoreAttaches: 1\n"), "{a}");
}

#[test]
fn provider_is_reported_unused() {
    let store = Store::create(65536).unwrap();
    let server = server(&["DOSCache memcache:127.0.0.1:11211"]);
    let h = page_(Format::Html, &server, &dir(&[]), Some(&store), NOW);
    assert!(h.contains("DOSCache names memcache:127.0.0.1:11211, but its shared tier"));
    let j = page_(Format::Json, &server, &dir(&[]), Some(&store), NOW);
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["store"]["unused_provider"], "memcache:127.0.0.1:11211");
}

#[test]
fn fill_percent() {
    assert_eq!(percent_text(permille(1, 3)), "33.3%");
    assert_eq!(percent_text(permille(0, 0)), "0.0%");
    assert_eq!(
        percent_text(permille(u64::MAX, 1)),
        format!("{}.{}%", u64::MAX / 10, u64::MAX % 10)
    );
}

/// The fixture with request counters: 5 counted two minutes ago, 3 counted, 2 refused (page)
/// and 1 block started (page) this minute, 1 site refusal, 1 would-be block.
fn with_metrics(format: Format, shared: Option<&SharedTier>) -> String {
    let (store, server, dir) = fixture();
    let m = Metrics::new().unwrap();
    for _ in 0..5 {
        m.counted(NOW - 120 * MICROS, 0);
    }
    for _ in 0..3 {
        m.counted(NOW, 0);
    }
    m.refused(Counter::Page, NOW);
    m.refused(Counter::Page, NOW);
    m.refused(Counter::Site, NOW - 61 * MICROS);
    m.block_started(Counter::Page, NOW);
    m.would_block();
    page(
        format,
        &Sources {
            shared,
            metrics: Some(&m),
            ..src(&server, &dir, Some(&store))
        },
    )
}

#[test]
fn format_from_query_metrics() {
    assert_eq!(Format::from_query(Some("metrics")), Format::Metrics);
    // Prometheus' `params: {metrics: ['']}` sends `?metrics=`.
    assert_eq!(Format::from_query(Some("metrics=")), Format::Metrics);
    assert_eq!(Format::from_query(Some("x=1;metrics=")), Format::Metrics);
    assert_eq!(Format::from_query(Some("metricsx")), Format::Html);
    assert!(Format::Metrics
        .content_type()
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
}

#[test]
fn metrics_exposition() {
    let tier = SharedTier {
        label: "redis:127.0.0.1:6379 \"x\"".into(),
        down_since: None,
        failures: 0,
        stats: Default::default(),
    };
    let m = with_metrics(Format::Metrics, Some(&tier));
    let capacity = Store::create(65536).unwrap().capacity();
    for line in [
        format!(
            "mod_shield_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
        "mod_shield_blocks_active 2".to_string(),
        "mod_shield_requests_counted_total 8".into(),
        "mod_shield_requests_refused_total{rule=\"site\"} 1".into(),
        "mod_shield_requests_refused_total{rule=\"page\"} 2".into(),
        "mod_shield_blocks_started_total{rule=\"site\"} 0".into(),
        "mod_shield_blocks_started_total{rule=\"page\"} 1".into(),
        "mod_shield_would_blocks_total 1".into(),
        "mod_shield_blocks_remembered 1".into(),
        format!("mod_shield_area_capacity{{area=\"site\"}} {capacity}"),
        "mod_shield_area_entries{area=\"block\"} 3".into(),
        "mod_shield_area_live{area=\"page\"} 1".into(),
        "mod_shield_area_inserted_total{area=\"block\"} 3".into(),
        "mod_shield_area_expired_total{area=\"site\"} 0".into(),
        "mod_shield_area_evicted_total{area=\"page\"} 0".into(),
        "mod_shield_store_up 1".into(),
        "mod_shield_lock_takeovers_total 0".into(),
        "mod_shield_fail_opens_total 0".into(),
        r#"mod_shield_backend_up{backend="redis:127.0.0.1:6379 \"x\""} 1"#.into(),
    ] {
        assert!(m.lines().any(|l| l == line), "no {line:?} in\n{m}");
    }
    // Every family: HELP, then TYPE, then its samples, each name once.
    let mut families = Vec::new();
    let lines: Vec<&str> = m.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let help = lines[i].strip_prefix("# HELP ").expect("HELP first");
        let name = help.split(' ').next().unwrap();
        let kind = lines[i + 1]
            .strip_prefix(&format!("# TYPE {name} "))
            .expect("TYPE second");
        assert_eq!(kind == "counter", name.ends_with("_total"), "{name} {kind}");
        assert!(!families.contains(&name), "{name} twice");
        families.push(name);
        i += 2;
        let mut samples = 0;
        while i < lines.len() && !lines[i].starts_with('#') {
            assert!(lines[i].starts_with(name), "{} in {name}", lines[i]);
            let value = lines[i].rsplit(' ').next().unwrap();
            assert!(value.parse::<u64>().is_ok(), "{}", lines[i]);
            samples += 1;
            i += 1;
        }
        assert!(samples > 0, "{name} has no sample");
    }
    // Down: 0. No backend configured: no line at all.
    let down = SharedTier {
        down_since: Some(NOW),
        ..tier
    };
    let m = with_metrics(Format::Metrics, Some(&down));
    assert!(m.contains(r#"mod_shield_backend_up{backend="redis:127.0.0.1:6379 \"x\""} 0"#));
    assert!(!with_metrics(Format::Metrics, None).contains("backend_up"));
    // Without a store: the gauges say so, the counters are still there.
    let (server, dir) = (server(&[]), dir(&[]));
    let m = page(Format::Metrics, &src(&server, &dir, None));
    assert!(m.contains("\nmod_shield_store_up 0\n"), "{m}");
    assert!(m.starts_with("# HELP mod_shield_build_info"));
    assert!(!m.contains("area"));
    // A store in memory by configuration has no persistence to report.
    assert!(!with_metrics(Format::Metrics, None).contains("store_persistent"));
}

#[test]
fn a_store_that_fell_back_to_memory_is_degraded_in_every_format() {
    let store = Store::create(65536).unwrap();
    let (server, dir) = (
        server(&["DOSCache shmcb:/var/lib/x/shield.store(65536)"]),
        dir(&[]),
    );
    let why = "cannot use store file /var/lib/x/shield.store: Permission denied <13>";
    let degraded = Sources {
        memory_only: Some(why),
        ..src(&server, &dir, Some(&store))
    };
    let state = format!("degraded (memory only: {why})");
    let a = page(Format::Auto, &degraded);
    assert!(a.contains(&format!("\nStoreState: {state}\n")), "{a}");
    let v: serde_json::Value = serde_json::from_str(&page(Format::Json, &degraded)).unwrap();
    let b = &v["store"];
    assert_eq!(
        (b["state"].as_str(), b["persistent"].as_bool()),
        (Some(state.as_str()), Some(false)),
        "{b}"
    );
    let h = page(Format::Html, &degraded);
    assert!(
        h.contains("Permission denied &lt;13&gt;") && !h.contains("<13>"),
        "{h}"
    );
    let m = page(Format::Metrics, &degraded);
    assert!(m.contains("\nmod_shield_store_persistent 0\n"), "{m}");
    assert!(m.contains("\nmod_shield_store_up 1\n"), "{m}");
    // The same file store, fine: persistent, ok.
    let fine = src(&server, &dir, Some(&store));
    assert!(page(Format::Metrics, &fine).contains("\nmod_shield_store_persistent 1\n"));
    assert!(page(Format::Auto, &fine).contains("\nStoreState: ok\n"));
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(label_escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
}

#[test]
fn activity_in_json_and_auto() {
    let j = with_metrics(Format::Json, None);
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    let a = &v["activity"];
    assert_eq!(a["since_start"]["counted"], 8);
    assert_eq!(a["since_start"]["refused_page"], 2);
    assert_eq!(a["since_start"]["refused_site"], 1);
    assert_eq!(a["since_start"]["blocks_started_page"], 1);
    assert_eq!(a["since_start"]["would_blocks"], 1);
    let minutes = a["per_minute"].as_array().unwrap();
    assert_eq!(minutes.len(), 60);
    let last = &minutes[59];
    assert_eq!(last["start"], "2023-11-14T22:13:00Z");
    assert_eq!(last["start_unix"], 1_699_999_980);
    assert_eq!(last["counted"], 3);
    assert_eq!(last["refused"], 2);
    assert_eq!(last["blocks_started"], 1);
    assert_eq!(minutes[57]["counted"], 5);
    assert_eq!(minutes[58]["refused"], 1);
    assert_eq!(minutes[0]["start"], "2023-11-14T21:14:00Z");
    let a = with_metrics(Format::Auto, None);
    for line in [
        "RequestsCounted: 8",
        "RequestsRefused: 3",
        "BlocksStarted: 1",
        "WouldBlocksTotal: 1",
        "LastHourCounted: 8",
        "LastHourRefused: 3",
        "LastHourBlocksStarted: 1",
    ] {
        assert!(a.lines().any(|l| l == line), "no {line:?} in\n{a}");
    }
    // Without counters: null, and no lines.
    let j = fixture_page(Format::Json);
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert!(v["activity"].is_null());
    assert!(!fixture_page(Format::Auto).contains("RequestsCounted"));
}

#[test]
fn html_chart_of_the_last_hour() {
    let h = with_metrics(Format::Html, None);
    let svg_at = h.find("<svg class=\"chart\" id=\"chart\"").expect("chart");
    assert!(
        svg_at < h.find("id=\"blocks\"").unwrap(),
        "chart comes before the blocks"
    );
    let svg = &h[svg_at..h.find("</svg>").unwrap()];
    assert!(svg.contains(
        "aria-label=\"Last 60 minutes: 8 requests counted, 3 refused, 1 blocks started\""
    ));
    // 60 minutes, each with its tooltip; the current one has both bars and a started mark.
    assert_eq!(svg.matches("<title>").count(), 61);
    assert!(svg.contains("<title>22:13 UTC: 3 counted, 2 refused, 1 blocks started</title>"));
    assert!(svg.contains("<title>22:11 UTC: 5 counted, 0 refused, 0 blocks started</title>"));
    // Scale 5: 5 counted is the full 140 px, 3 is 84 px, 2 refused 56 px.
    assert!(
        svg.contains("class=\"c-counted\" x=\"938\" y=\"66\" width=\"6\" height=\"84\""),
        "{svg}"
    );
    assert!(
        svg.contains("class=\"c-refused\" x=\"945\" y=\"94\" width=\"6\" height=\"56\""),
        "{svg}"
    );
    assert!(
        svg.contains("class=\"c-counted\" x=\"908\" y=\"10\" width=\"6\" height=\"140\""),
        "{svg}"
    );
    assert!(svg.contains(">1</text>"));
    assert_eq!(svg.matches("class=\"c-started\"").count(), 1);
    assert!(svg.contains(">now</text>") && svg.contains(">21:14</text>"));
    assert!(h.contains("8 requests counted, 3 refused, 1 block started in the last 60 minutes"));
    // No external reference of any kind.
    assert!(!h.contains("http:") && !h.contains("https:") && !h.contains("href=\"/"));
    assert!(!h.contains("xlink") && !h.contains("<image") && !h.contains("url("));
}

#[test]
fn every_css_class_used_is_defined() {
    let h = with_metrics(Format::Html, None);
    let monitor = {
        let store = Store::create(65536).unwrap();
        let (server, dir) = (server(&[]), dir(&["DOSEnabled monitor"]));
        let would = [WouldBlock {
            prefix: 0,
            at: NOW,
            client: "192.0.2.1".parse().unwrap(),
            rule: Counter::Site,
            score: 9,
            count: 2,
        }];
        page(
            Format::Html,
            &Sources {
                would_blocks: &would,
                ..src(&server, &dir, Some(&store))
            },
        )
    };
    for page in [h, monitor] {
        let css = &page[page.find("<style>").unwrap()..page.find("</style>").unwrap()];
        for part in page.split("class=\"").skip(1) {
            for class in part[..part.find('"').unwrap()].split(' ') {
                // The header's colour classes: "ok" is the default look.
                if class == "ok" {
                    continue;
                }
                assert!(
                    css.contains(&format!(".{class}")),
                    "class {class:?} has no CSS"
                );
            }
        }
    }
}

#[test]
fn every_format_follows_the_sections() {
    let j = with_metrics(Format::Json, None);
    let keys = [
        "verdict",
        "time",
        "now_unix",
        "enabled",
        "blocks_active",
        "activity",
        "would_blocks",
        "blocks",
        "top",
        "areas",
        "store",
        "settings",
    ];
    let at: Vec<usize> = keys
        .iter()
        .map(|k| {
            j.find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("no {k}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{keys:?} at {at:?}");
    let a = with_metrics(Format::Auto, None);
    let pos = |k: &str| {
        a.find(&format!("\n{k}: "))
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let order = [
        "Enabled",
        "RequestsCounted",
        "WouldBlocks",
        "Block",
        "TopSite",
        "SiteCapacity",
        "Store",
        "Setting",
    ];
    assert!(order.windows(2).all(|w| pos(w[0]) < pos(w[1])), "{a}");
    let h = with_metrics(Format::Html, None);
    let ids = [
        "verdict", "activity", "blocks", "top", "areas", "store", "settings",
    ];
    let at: Vec<usize> = ids
        .iter()
        .map(|i| h.find(&format!("id=\"{i}\"")).unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]));
}
