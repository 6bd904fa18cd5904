//! The file-backed store (`DOSCache shmcb:/path(BYTES)`) against the real apache2: blocks and
//! generations survive a full stop/start; a scribbled or truncated file is replaced with one
//! log line naming it and the server starts cleanly; a file that cannot be made falls back to
//! anonymous memory.

mod common;

use common::{Apache, Client};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

const AREA: usize = 65_536;

fn server(periods: &str) -> Apache {
    Apache::builder()
        .remoteip()
        .config(&format!(
            "DOSCache shmcb:@ROOT@/state/shield.store({AREA})\n\
             DOSPageCount 2\nDOSPageInterval 30\nDOSSiteCount 1000\n\
             DOSBlockingPeriod {periods}\nDOSLogDir @BLOCKS@\n"
        ))
        .build()
}

fn store_path(apache: &Apache) -> PathBuf {
    apache.root().join("state/shield.store")
}

/// Requests /page.html until refused; returns the refusal's Retry-After.
fn get_blocked(client: &Client) -> u64 {
    for _ in 0..4 {
        let r = client.get("/page.html");
        if r.status == 429 {
            return r
                .header_u64("Retry-After")
                .expect("Retry-After on a refusal");
        }
        assert_eq!(r.status, 200);
    }
    panic!("not refused after 4 requests at DOSPageCount 2");
}

fn stop_start(apache: &mut Apache) -> usize {
    apache.stop();
    let before = apache.error_log().len();
    apache.start();
    before
}

/// Lines naming the store file logged since byte `from` of the error log.
fn lines_naming_file(apache: &Apache, from: usize) -> Vec<String> {
    let path = store_path(apache).display().to_string();
    apache
        .error_log()
        .get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains(&path))
        .map(String::from)
        .collect()
}

#[test]
fn block_and_generation_survive_a_full_stop_start() {
    let mut apache = server("1 60");
    fs::create_dir(apache.root().join("state")).unwrap();
    apache.start();
    let created = lines_naming_file(&apache, 0);
    assert_eq!(created.len(), 1, "{created:?}");
    assert!(created[0].contains("created"), "{created:?}");
    let client = Client::new(apache.port()).ip("192.0.2.7");
    // Generation 1 lasts 1 s; let it end (its generation stays remembered).
    assert!(get_blocked(&client) <= 1);
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(client.get("/page.html").status, 200);

    // After a full stop/start the next block is generation 2: 60 s.
    let from = stop_start(&mut apache);
    assert!(
        lines_naming_file(&apache, from).is_empty(),
        "a sound file is kept silently"
    );
    let retry = get_blocked(&client);
    assert!(
        (55..=60).contains(&retry),
        "generation 2 after restart: {retry}"
    );

    // And the block itself survives the next stop/start, with a true Retry-After.
    let from = stop_start(&mut apache);
    let r = client.get("/page.html");
    assert_eq!(r.status, 429, "block lost across stop/start");
    let left = r.header_u64("Retry-After").unwrap();
    assert!(left <= retry && left + 20 >= retry, "{left} vs {retry}");
    // Another client is served: the restart did not block everyone.
    assert_eq!(
        Client::new(apache.port()).ip("192.0.2.8").get("/").status,
        200
    );
    assert!(lines_naming_file(&apache, from).is_empty());
    let len = fs::metadata(store_path(&apache)).unwrap().len();
    assert_eq!(len, (AREA as u64 & !63) * 3 + 128);
}

#[test]
fn a_scribbled_file_is_replaced_with_one_log_line_and_its_blocks_kept() {
    let mut apache = server("300");
    fs::create_dir(apache.root().join("state")).unwrap();
    apache.start();
    let client = Client::new(apache.port()).ip("192.0.2.20");
    let retry = get_blocked(&client);
    apache.stop();
    // Scribble over the whole header: the areas are intact, their layout is told by the size.
    let f = OpenOptions::new()
        .write(true)
        .open(store_path(&apache))
        .unwrap();
    f.write_all_at(&[0xa5; 128], 0).unwrap();
    drop(f);
    let from = apache.error_log().len();
    apache.start();
    let lines = lines_naming_file(&apache, from);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("not a mod_shield store")
            && lines[0].contains("1 block records carried over"),
        "{}",
        lines[0]
    );
    let r = client.get("/page.html");
    assert_eq!(r.status, 429, "the block was carried over");
    assert!(r.header_u64("Retry-After").unwrap() <= retry);
    assert_eq!(
        Client::new(apache.port()).ip("192.0.2.21").get("/").status,
        200
    );
    // The next start finds a sound file: nothing to say.
    let from = stop_start(&mut apache);
    assert!(lines_naming_file(&apache, from).is_empty());
    assert_eq!(client.get("/page.html").status, 429);
}

#[test]
fn a_truncated_file_is_replaced_with_one_log_line() {
    let mut apache = server("300");
    fs::create_dir(apache.root().join("state")).unwrap();
    apache.start();
    let client = Client::new(apache.port()).ip("192.0.2.30");
    get_blocked(&client);
    apache.stop();
    let f = OpenOptions::new()
        .write(true)
        .open(store_path(&apache))
        .unwrap();
    f.set_len(1000).unwrap();
    drop(f);
    let from = apache.error_log().len();
    apache.start();
    let lines = lines_naming_file(&apache, from);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("truncated (1000 of"), "{}", lines[0]);
    // The block area was cut away: the client starts afresh, and is counted again.
    assert_eq!(client.get("/page.html").status, 200);
    assert_eq!(get_blocked(&client), 300);
    let len = fs::metadata(store_path(&apache)).unwrap().len();
    assert_eq!(len, (AREA as u64 & !63) * 3 + 128);
}

#[test]
fn graceful_restart_keeps_the_file_and_a_missing_dir_falls_back_to_memory() {
    let mut apache = server("300");
    fs::create_dir(apache.root().join("state")).unwrap();
    apache.start();
    let client = Client::new(apache.port()).ip("192.0.2.40");
    get_blocked(&client);
    let from = apache.error_log().len();
    apache.graceful();
    assert_eq!(client.get("/page.html").status, 429);
    assert!(lines_naming_file(&apache, from).is_empty());

    // A store file two levels below a missing directory cannot be made: the server starts on
    // anonymous memory and says so once.
    apache.set_config(
        "DOSCache shmcb:@ROOT@/missing/deeper/shield.store(65536)\n\
         DOSPageCount 2\nDOSPageInterval 30\nDOSBlockingPeriod 300\nDOSLogDir @BLOCKS@\n",
    );
    let from = stop_start(&mut apache);
    let path = apache.root().join("missing/deeper/shield.store");
    let log = apache.error_log();
    let lines: Vec<&str> = log[from..]
        .lines()
        .filter(|l| l.contains(&path.display().to_string()))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("anonymous memory"), "{}", lines[0]);
    let other = Client::new(apache.port()).ip("192.0.2.41");
    assert_eq!(other.get("/").status, 200);
    assert_eq!(
        get_blocked(&other),
        300,
        "the anonymous store counts and blocks"
    );
}

/// Store files written by earlier releases, kept as fixtures (`tests/fixtures/store-vN.bin`,
/// `DOSCache shmcb:…(8192)`, made with that release's `Store::block_manually`, on 2026-11-30
/// for versions 2 and 5, on 2026-12-03 for 6): three blocks that end in about 95 years, of
/// generations 1, 2 and 3. Layout version 6 is the release before this one, and the first
/// with networks' blocks: its file also holds the block of 203.0.113.0/24 (generation 1,
/// started through `SiteGuard::start_net_block`). Version 5 is the release before networks,
/// version 2 the first with a store file (its records keyed by SipHash). All three keep every
/// field in one 176-byte record. An upgrade keeps every block, with its generation, and says
/// so in at most one line.
fn an_older_store_file_keeps_its_blocks_and_generations(fixture: &str, with_network: bool) {
    let mut apache = Apache::builder()
        .remoteip()
        .config(
            "DOSCache shmcb:@ROOT@/state/shield.store(8192)\n\
             DOSPageCount 2\nDOSPageInterval 30\nDOSLogDir @BLOCKS@\n",
        )
        .build();
    fs::create_dir(apache.root().join("state")).unwrap();
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    fs::copy(&fixture, store_path(&apache)).unwrap();
    let from = apache.error_log().len();
    apache.start();
    let lines = lines_naming_file(&apache, from);
    assert!(lines.len() <= 1, "{lines:?}");
    let carried = if with_network { 4 } else { 3 };
    if let Some(line) = lines.first() {
        assert!(
            line.contains(&format!("{carried} block records carried over")),
            "{line}"
        );
    }
    if with_network {
        for ip in ["203.0.113.5", "203.0.113.200"] {
            let r = Client::new(apache.port()).ip(ip).get("/");
            assert_eq!(
                r.status, 429,
                "{ip}: its /24 is still blocked after the upgrade"
            );
        }
    }
    let blocked = ["192.0.2.7", "2001:db8:7:7::1", "198.51.100.9"];
    for ip in blocked {
        let r = Client::new(apache.port()).ip(ip).get("/");
        assert_eq!(r.status, 429, "{ip} is still blocked after the upgrade");
        assert!(r.header_u64("Retry-After").unwrap() > 86_400 * 365 * 90);
    }
    assert_eq!(
        Client::new(apache.port()).ip("192.0.2.8").get("/").status,
        200
    );
    apache.stop();
    let store = mod_shield::store::file::open_for_tool(
        &store_path(&apache),
        mod_shield::store::file::ToolAccess::ReadOnly,
    )
    .unwrap();
    let now = common::unix_now() as i64 * 1_000_000;
    for (ip, generation) in blocked.iter().zip([1, 2, 3]) {
        let client = mod_shield::client::group(ip.parse().unwrap(), 64);
        let record = store.block_record(client, now).unwrap().expect(ip);
        assert!(record.active, "{ip}");
        assert_eq!(record.block.generation, generation, "{ip}");
    }
    if with_network {
        let net: std::net::IpAddr = "203.0.113.0".parse().unwrap();
        let record = store
            .block_record_net(net, 24, now)
            .unwrap()
            .expect("203.0.113.0/24");
        assert!(record.active);
        assert_eq!((record.block.prefix, record.block.generation), (24, 1));
    }
}

#[test]
fn a_store_file_of_the_previous_release_keeps_its_blocks_and_generations() {
    an_older_store_file_keeps_its_blocks_and_generations("store-v6.bin", true);
}

#[test]
fn a_store_file_of_the_release_before_networks_keeps_its_blocks_and_generations() {
    an_older_store_file_keeps_its_blocks_and_generations("store-v5.bin", false);
}

#[test]
fn a_store_file_of_the_first_file_layout_keeps_its_blocks_and_generations() {
    an_older_store_file_keeps_its_blocks_and_generations("store-v2.bin", false);
}
