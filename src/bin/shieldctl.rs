//! shieldctl: an administrator's hand on a running server's file-backed store
//! (`DOSCache shmcb:/path(BYTES)`): list, show, block, unblock, stats. It maps the same file
//! and goes through the store's own API, under the same per-sub-cache locks as the workers, so
//! it is safe while the server runs and a kill at any instant corrupts nothing (a lock left by
//! a dead shieldctl is taken over and its half-written record dropped). See docs/shieldctl.md.

use mod_shield::block;
use mod_shield::client;
use mod_shield::config::MIN_BLOCK_MEMORY_SECS;
use mod_shield::policy::Started;
use mod_shield::store::file::{open_for_tool, ToolOpenError};
use mod_shield::store::{is_manual, Area, BlockState, Busy, Micros, RecordView, Store, Target};
use serde::Serialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const DEFAULT_STORE: &str = "/var/lib/mod_shield/shield.store";
const DEFAULT_LOG_DIR: &str = "/tmp";
const DEFAULT_IPV6_PREFIX: u8 = 64;

const USAGE: &str = "\
Usage: shieldctl [OPTIONS] COMMAND [ARGS]

Works on the store file of a running (or stopped) mod_shield server.

Commands:
  list                     active blocks, one a line: client rule generation time-left host uri
  show ADDR                the client's block, generation and site/page scores
  block ADDR SECONDS       block the client now for SECONDS (its next request is refused)
  unblock ADDR [--forget]  end the client's block now and remove its block file;
                           --forget also drops its generation (the next block is the first)
  stats                    per-area figures: capacity, entries, inserted, expired, evicted, hits

ADDR is an IPv4 or IPv6 address; an IPv6 address stands for its group (DOSIPv6Prefix),
written as list prints it (2001:db8:7:7::/64) or as any address inside it. show and
unblock also take a counted network, ADDR/LEN (192.0.2.0/24, 2001:db8:aa::/48, /56).

Options:
  --store FILE       the store file (default /var/lib/mod_shield/shield.store)
  --json             print JSON instead of text
  --ipv6-prefix N    IPv6 group size, 1-128 (default: the server's DOSIPv6Prefix as recorded
                     in the store, else 64)
  --log-dir DIR      where the block files dos-<ip> are (DOSLogDir; default /tmp)
  -h, --help         this text

Exit status: 0 done; 1 not done (not blocked, store missing or not a store, store busy);
2 bad command line (unknown command, bad address, bad seconds).
";

/// A failure: exit code and the message (which names the thing at fault).
#[derive(Debug, PartialEq)]
struct Fail {
    code: u8,
    msg: String,
}

fn usage_error(msg: impl Into<String>) -> Fail {
    Fail {
        code: 2,
        msg: format!("{} (see shieldctl --help)", msg.into()),
    }
}

fn not_done(msg: impl Into<String>) -> Fail {
    Fail {
        code: 1,
        msg: msg.into(),
    }
}

#[derive(Debug, PartialEq)]
enum Command {
    List,
    Show(String),
    Block(String, String),
    Unblock { addr: String, forget: bool },
    Stats,
    Help,
}

#[derive(Debug, PartialEq)]
struct Args {
    store: PathBuf,
    json: bool,
    ipv6_prefix: Option<u8>,
    log_dir: PathBuf,
    command: Command,
}

fn parse_args(args: &[String]) -> Result<Args, Fail> {
    let mut store = PathBuf::from(DEFAULT_STORE);
    let mut log_dir = PathBuf::from(DEFAULT_LOG_DIR);
    let mut json = false;
    let mut forget = false;
    let mut ipv6_prefix = None;
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |what: &str| -> Result<String, Fail> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| usage_error(format!("{name} needs {what}")))
        };
        match name {
            "-h" | "--help" => {
                return Ok(Args {
                    store,
                    json,
                    ipv6_prefix,
                    log_dir,
                    command: Command::Help,
                })
            }
            "--json" => json = true,
            "--forget" => forget = true,
            "--store" => store = PathBuf::from(value("a FILE")?),
            "--log-dir" => log_dir = PathBuf::from(value("a DIR")?),
            "--ipv6-prefix" => {
                let v = value("a prefix length")?;
                ipv6_prefix = Some(
                    v.parse::<u8>()
                        .ok()
                        .filter(|p| (1..=128).contains(p))
                        .ok_or_else(|| {
                            usage_error(format!("bad --ipv6-prefix '{v}': not a number 1-128"))
                        })?,
                );
            }
            _ if name.starts_with('-') && name.len() > 1 => {
                return Err(usage_error(format!("unknown option '{arg}'")))
            }
            _ => words.push(arg.clone()),
        }
    }
    let mut words = words.into_iter();
    let command = match words.next().as_deref() {
        None => return Err(usage_error("no command given")),
        Some("list") => Command::List,
        Some("stats") => Command::Stats,
        Some("help") => Command::Help,
        Some("show") => Command::Show(words.next().ok_or_else(|| usage_error("show needs ADDR"))?),
        Some("block") => {
            let addr = words
                .next()
                .ok_or_else(|| usage_error("block needs ADDR SECONDS"))?;
            let secs = words
                .next()
                .ok_or_else(|| usage_error("block needs SECONDS after ADDR"))?;
            Command::Block(addr, secs)
        }
        Some("unblock") => Command::Unblock {
            addr: words
                .next()
                .ok_or_else(|| usage_error("unblock needs ADDR"))?,
            forget,
        },
        Some(other) => return Err(usage_error(format!("unknown command '{other}'"))),
    };
    if let Some(extra) = words.next() {
        return Err(usage_error(format!("unexpected argument '{extra}'")));
    }
    if forget && !matches!(command, Command::Unblock { .. }) {
        return Err(usage_error("--forget goes with unblock only"));
    }
    Ok(Args {
        store,
        json,
        ipv6_prefix,
        log_dir,
        command,
    })
}

/// The client the server keys `text` under: normalised, IPv6 masked to `prefix` bits. A
/// `/N` suffix (as `list` prints groups) must match the prefix in use.
fn parse_addr(text: &str, prefix: u8) -> Result<IpAddr, Fail> {
    let bad = |why: &str| usage_error(format!("bad address '{text}': {why}"));
    let (ip, suffix) = split_addr(text)?;
    if let Some(n) = suffix {
        let whole = match ip {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => prefix,
        };
        if n != whole {
            return Err(bad(&match ip {
                IpAddr::V4(_) => "IPv4 clients are single addresses (no /N)".to_string(),
                IpAddr::V6(_) => {
                    format!("the server groups IPv6 clients by /{prefix} (see --ipv6-prefix)")
                }
            }));
        }
    }
    Ok(client::group(ip, prefix))
}

/// A client as [`parse_addr`] reads it, or a counted network `ADDR/LEN` (see [`Target`]).
fn parse_target(text: &str, prefix: u8) -> Result<Target, Fail> {
    Target::parse(text, prefix).map_err(|why| usage_error(format!("bad address '{text}': {why}")))
}

/// The address (normalised) and the `/N` suffix of `text`, if any.
fn split_addr(text: &str) -> Result<(IpAddr, Option<u8>), Fail> {
    let bad = |why: &str| usage_error(format!("bad address '{text}': {why}"));
    let (addr, suffix) = match text.split_once('/') {
        Some((a, n)) => (a, Some(n)),
        None => (text, None),
    };
    let ip = addr
        .parse::<IpAddr>()
        .map_err(|_| bad("not an IPv4 or IPv6 address"))?;
    let suffix = suffix
        .map(|n| {
            n.parse::<u8>()
                .map_err(|_| bad("the prefix is not a number"))
        })
        .transpose()?;
    Ok((client::normalise(ip), suffix))
}

fn parse_seconds(text: &str) -> Result<u32, Fail> {
    text.parse::<u32>().ok().filter(|&s| s > 0).ok_or_else(|| {
        usage_error(format!(
            "bad SECONDS '{text}': not a whole number of seconds from 1 to {}",
            u32::MAX
        ))
    })
}

fn wall_clock() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Whole seconds from `now` to `until`, rounded up (as the server's Retry-After).
fn seconds_left(until: Micros, now: Micros) -> u64 {
    ((until - now).max(0) as u64).div_ceil(1_000_000)
}

/// Runs a store operation, retrying for about a second while its sub-cache is busy.
fn retry<T>(mut op: impl FnMut() -> Result<T, Busy>) -> Result<T, Fail> {
    for _ in 0..100 {
        match op() {
            Ok(v) => return Ok(v),
            Err(Busy) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    Err(not_done(Busy.to_string()))
}

fn open(path: &Path) -> Result<Store, Fail> {
    open_for_tool(path).map_err(|e| match e {
        ToolOpenError::Io(e) => not_done(format!("cannot open store {}: {e}", path.display())),
        e @ ToolOpenError::NotAStore(_) => not_done(format!("{}: {e}", path.display())),
    })
}

#[derive(Serialize)]
struct BlockJson {
    client: String,
    rule: &'static str,
    generation: u32,
    seconds_left: u64,
    started_us: Micros,
    until_us: Micros,
    score: i64,
    count: u32,
    interval: u32,
    host: String,
    uri: String,
}

fn rule_name(b: &BlockState) -> &'static str {
    if is_manual(b) {
        "manual"
    } else {
        b.rule.as_str()
    }
}

fn block_json(b: &BlockState, prefix: u8, now: Micros) -> BlockJson {
    BlockJson {
        client: Target::of(b).label(prefix),
        rule: rule_name(b),
        generation: b.generation,
        seconds_left: seconds_left(b.until, now),
        started_us: b.started,
        until_us: b.until,
        score: b.score,
        count: b.count,
        interval: b.interval,
        host: b.host.clone(),
        uri: b.uri.clone(),
    }
}

/// One `list` line: client, rule, generation, time left, host, URI (host and URI as one
/// field each: spaces and control characters percent-encoded, "-" when empty).
fn block_line(b: &BlockState, prefix: u8, now: Micros) -> String {
    format!(
        "{} {} {} {}s {} {}",
        Target::of(b).label(prefix),
        rule_name(b),
        b.generation,
        seconds_left(b.until, now),
        block::one_field(&b.host),
        block::one_field(&b.uri)
    )
}

#[derive(Serialize)]
struct RecordJson {
    host: String,
    path: String,
    score: i64,
    window_seconds: u64,
    seconds_left: u64,
}

fn record_json(r: &RecordView, now: Micros) -> RecordJson {
    RecordJson {
        host: r.host.clone(),
        path: r.path.clone(),
        score: r.score,
        window_seconds: seconds_left(r.expires, r.origin),
        seconds_left: seconds_left(r.expires, now),
    }
}

#[derive(Serialize)]
struct ShowJson {
    client: String,
    blocked: bool,
    block: Option<BlockJson>,
    /// The generation remembered (of the active block, or of a past one).
    generation: u32,
    remembered_until_us: Option<Micros>,
    site: Vec<RecordJson>,
    page: Vec<RecordJson>,
}

#[derive(Serialize)]
struct AreaJson {
    area: &'static str,
    capacity: u64,
    entries: u64,
    inserted: u64,
    expired: u64,
    evicted: u64,
    hits: u64,
    misses: u64,
}

#[derive(Serialize)]
struct StatsJson {
    store: String,
    area_bytes: usize,
    created_us: Micros,
    attaches: u64,
    ipv6_prefix: u8,
    areas: Vec<AreaJson>,
}

fn area_name(a: Area) -> &'static str {
    match a {
        Area::Site => "site",
        Area::Page => "page",
        Area::Block => "block",
    }
}

fn print_json(value: &impl Serialize) -> Result<(), Fail> {
    let text = serde_json::to_string(value).map_err(|e| not_done(format!("JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

fn run(args: &Args) -> Result<u8, Fail> {
    if args.command == Command::Help {
        print!("{USAGE}");
        return Ok(0);
    }
    let store = open(&args.store)?;
    let (hint_prefix, hint_memory) = store.hints();
    let prefix = args
        .ipv6_prefix
        .or(hint_prefix)
        .unwrap_or(DEFAULT_IPV6_PREFIX);
    let now = wall_clock();
    match &args.command {
        Command::Help => unreachable!("handled above"),
        Command::List => {
            let blocks = store.active_blocks(now, usize::MAX);
            if args.json {
                let out: Vec<BlockJson> =
                    blocks.iter().map(|b| block_json(b, prefix, now)).collect();
                print_json(&out)?;
            } else {
                for b in &blocks {
                    println!("{}", block_line(b, prefix, now));
                }
            }
        }
        Command::Show(addr) => {
            let t = parse_target(addr, prefix)?;
            let (ip, len) = (t.addr, t.prefix);
            let record = retry(|| store.block_record_net(ip, len, now))?;
            let site = store.records_of_net(Area::Site, ip, len, now);
            let page = store.records_of_net(Area::Page, ip, len, now);
            let label = t.label(prefix);
            if args.json {
                let active = record.as_ref().filter(|r| r.active);
                print_json(&ShowJson {
                    client: label,
                    blocked: active.is_some(),
                    block: active.map(|r| block_json(&r.block, prefix, now)),
                    generation: record.as_ref().map_or(0, |r| r.block.generation),
                    remembered_until_us: record.as_ref().map(|r| r.remembered_until),
                    site: site.iter().map(|r| record_json(r, now)).collect(),
                    page: page.iter().map(|r| record_json(r, now)).collect(),
                })?;
            } else {
                println!("client {label}");
                match &record {
                    Some(r) if r.active => println!(
                        "blocked: rule {}, generation {}, {}s left, score {}, host {}, uri {}",
                        rule_name(&r.block),
                        r.block.generation,
                        seconds_left(r.block.until, now),
                        r.block.score,
                        block::one_field(&r.block.host),
                        block::one_field(&r.block.uri)
                    ),
                    Some(r) => println!(
                        "not blocked; generation {} remembered for {}s more",
                        r.block.generation,
                        seconds_left(r.remembered_until, now)
                    ),
                    None => println!("not blocked; no generation remembered"),
                }
                for (name, records) in [("site", &site), ("page", &page)] {
                    for r in records {
                        let what = if name == "site" {
                            block::one_field(&r.host)
                        } else {
                            format!(
                                "{} {}",
                                block::one_field(&r.host),
                                block::one_field(&r.path)
                            )
                        };
                        println!(
                            "{name} {what} score {} (window {}s, {}s left)",
                            r.score,
                            seconds_left(r.expires, r.origin),
                            seconds_left(r.expires, now)
                        );
                    }
                }
            }
        }
        Command::Block(addr, secs) => {
            let ip = parse_addr(addr, prefix)?;
            let seconds = parse_seconds(secs)?;
            let memory = hint_memory.unwrap_or(MIN_BLOCK_MEMORY_SECS).max(seconds);
            let b = retry(|| store.block_manually(ip, seconds, memory, now))?;
            // The block file, as a block start writes it (the log line, DOSSystemCommand and
            // DOSEmailNotify are the server's: shieldctl does not run them).
            let contents = block::file_contents(
                std::process::id(),
                &Started {
                    block: b.clone(),
                    origin: now,
                },
                "-",
                "-",
            );
            let file_note = match block::write_file(&args.log_dir, ip, &contents) {
                Ok(path) => format!("block file {}", path.display()),
                Err(e) => {
                    eprintln!(
                        "shieldctl: warning: cannot write block file {}: {e}",
                        block::file_path(&args.log_dir, ip).display()
                    );
                    "no block file".to_string()
                }
            };
            if args.json {
                print_json(&block_json(&b, prefix, now))?;
            } else {
                println!(
                    "blocked {} for {seconds}s (generation {}); {file_note}",
                    block::client_label(ip, prefix),
                    b.generation
                );
            }
        }
        Command::Unblock { addr, forget } => {
            let t = parse_target(addr, prefix)?;
            let ip = t.addr;
            let ended = retry(|| store.end_block_net(ip, t.prefix, now, *forget))?;
            let label = t.label(prefix);
            let forgot = match (ended.forgotten, ended.generation) {
                (true, Some(g)) => format!("; generation {g} forgotten"),
                _ => String::new(),
            };
            if ended.ended.is_none() {
                return Err(not_done(format!("{label} is not blocked{forgot}")));
            }
            let path = block::net_file_path(&args.log_dir, ip, t.prefix);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => eprintln!(
                    "shieldctl: warning: cannot remove block file {}: {e}",
                    path.display()
                ),
            }
            if args.json {
                #[derive(Serialize)]
                struct UnblockJson {
                    client: String,
                    generation: Option<u32>,
                    forgotten: bool,
                }
                print_json(&UnblockJson {
                    client: label,
                    generation: ended.generation,
                    forgotten: ended.forgotten,
                })?;
            } else {
                println!("unblocked {label}{forgot}");
            }
        }
        Command::Stats => {
            let areas: Vec<AreaJson> = Area::ALL
                .iter()
                .map(|&a| {
                    let s = store.stats(a);
                    AreaJson {
                        area: area_name(a),
                        capacity: s.capacity,
                        entries: s.entries,
                        inserted: s.inserted,
                        expired: s.expired,
                        evicted: s.evicted,
                        hits: s.hits,
                        misses: s.misses,
                    }
                })
                .collect();
            if args.json {
                print_json(&StatsJson {
                    store: args.store.display().to_string(),
                    area_bytes: store.area_bytes(),
                    created_us: store.created(),
                    attaches: store.attaches(),
                    ipv6_prefix: prefix,
                    areas,
                })?;
            } else {
                println!(
                    "store {} ({} bytes per area, attached {} times)",
                    args.store.display(),
                    store.area_bytes(),
                    store.attaches()
                );
                println!("area capacity entries inserted expired evicted hits misses");
                for a in &areas {
                    println!(
                        "{} {} {} {} {} {} {} {}",
                        a.area,
                        a.capacity,
                        a.entries,
                        a.inserted,
                        a.expired,
                        a.evicted,
                        a.hits,
                        a.misses
                    );
                }
            }
        }
    }
    Ok(0)
}

/// Checks the address and seconds before the store is opened, so a typo is reported as such
/// whatever the state of the file (the grouping prefix is checked again once it is known).
fn precheck(args: &Args) -> Result<(), Fail> {
    match &args.command {
        Command::Block(addr, secs) => {
            split_addr(addr)?;
            parse_seconds(secs).map(|_| ())
        }
        Command::Show(addr) | Command::Unblock { addr, .. } => split_addr(addr).map(|_| ()),
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = parse_args(&argv).and_then(|args| {
        precheck(&args)?;
        run(&args)
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(fail) => {
            eprintln!("shieldctl: {}", fail.msg);
            ExitCode::from(fail.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<Args, Fail> {
        let v: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse_args(&v)
    }

    #[test]
    fn commands_and_options_parse_in_any_order() {
        let a = args("--store /x/s.store unblock 192.0.2.1 --forget --json").unwrap();
        assert_eq!(a.store, PathBuf::from("/x/s.store"));
        assert!(a.json);
        assert_eq!(
            a.command,
            Command::Unblock {
                addr: "192.0.2.1".into(),
                forget: true
            }
        );
        let a = args("block 2001:db8::1 60 --ipv6-prefix=48 --log-dir=/var/log/x").unwrap();
        assert_eq!(a.command, Command::Block("2001:db8::1".into(), "60".into()));
        assert_eq!(
            (a.ipv6_prefix, a.log_dir),
            (Some(48), PathBuf::from("/var/log/x"))
        );
        assert_eq!(args("list").unwrap().store, PathBuf::from(DEFAULT_STORE));
        assert_eq!(args("stats --help").unwrap().command, Command::Help);
    }

    #[test]
    fn bad_command_lines_name_the_culprit() {
        for (line, culprit) in [
            ("", "no command"),
            ("frobnicate", "'frobnicate'"),
            ("list --bogus", "'--bogus'"),
            ("show", "show needs ADDR"),
            ("block 192.0.2.1", "SECONDS"),
            ("list extra", "'extra'"),
            ("list --forget", "--forget"),
            ("list --store", "--store needs"),
            ("list --ipv6-prefix 129", "'129'"),
        ] {
            let e = args(line).unwrap_err();
            assert_eq!(e.code, 2, "{line}");
            assert!(e.msg.contains(culprit), "{line}: {}", e.msg);
        }
    }

    #[test]
    fn addresses_are_grouped_like_the_server_does() {
        let g = parse_addr("2001:db8:7:7:1:2:3:4", 64).unwrap();
        assert_eq!(g, "2001:db8:7:7::".parse::<IpAddr>().unwrap());
        assert_eq!(parse_addr("2001:db8:7:7::/64", 64).unwrap(), g);
        assert_eq!(block::client_label(g, 64), "2001:db8:7:7::/64");
        assert_eq!(
            parse_addr("::ffff:192.0.2.9", 64).unwrap(),
            "192.0.2.9".parse::<IpAddr>().unwrap()
        );
        assert!(parse_addr("2001:db8::/48", 64)
            .unwrap_err()
            .msg
            .contains("/64"));
        assert!(parse_addr("192.0.2.1/24", 64).is_err());
        assert!(parse_addr("192.0.2.1/32", 64).is_ok());
        let e = parse_addr("300.1.1.1", 64).unwrap_err();
        assert!(e.msg.contains("'300.1.1.1'") && e.code == 2);
    }

    #[test]
    fn seconds_are_positive_whole_numbers() {
        assert_eq!(parse_seconds("90"), Ok(90));
        for bad in ["0", "-5", "1.5", "abc", "99999999999"] {
            let e = parse_seconds(bad).unwrap_err();
            assert!(e.msg.contains(&format!("'{bad}'")), "{}", e.msg);
        }
        assert_eq!(seconds_left(2_000_001, 0), 3);
        assert_eq!(seconds_left(0, 5), 0);
    }
}
