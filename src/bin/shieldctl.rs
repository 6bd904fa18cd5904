//! shieldctl: an administrator's hand on a running server's file-backed store
//! (`DOSCache shmcb:/path(BYTES)`): list, show, block, unblock, stats. It maps the same file
//! and goes through the store's own API, under the same per-sub-cache locks as the workers, so
//! it is safe while the server runs and a kill at any instant corrupts nothing (a lock left by
//! a dead shieldctl is taken over and its half-written record dropped). The command line is
//! `mod_shield::cli` (shared with shieldctl-gen, which writes the man page). See
//! docs/shieldctl.md.

use clap::error::ErrorKind;
use clap::Parser;
use mod_shield::cli::{Addr, Cli, Cmd};
use mod_shield::client;
use mod_shield::config::MIN_BLOCK_MEMORY_SECS;
use mod_shield::notify;
use mod_shield::policy::Started;
use mod_shield::render::rfc3339;
use mod_shield::store::file::{open_for_tool, ToolAccess, ToolOpenError};
use mod_shield::store::{is_manual, Area, BlockState, Busy, Micros, RecordView, Store, Target};
use serde::Serialize;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

const DEFAULT_IPV6_PREFIX: u8 = 64;

/// Exit status of a command that could not be done (the store, the client's state).
const NOT_DONE: u8 = 1;
/// Exit status of a bad command line (clap's own, for the errors it finds).
const USAGE: u8 = 2;

/// A failure: exit status and the message (which names the thing at fault).
#[derive(Debug, PartialEq)]
struct Fail {
    code: u8,
    msg: String,
}

fn not_done(msg: impl Into<String>) -> Fail {
    Fail {
        code: NOT_DONE,
        msg: msg.into(),
    }
}

fn usage_error(msg: impl Into<String>) -> Fail {
    Fail {
        code: USAGE,
        msg: format!("{} (see shieldctl --help)", msg.into()),
    }
}

/// The client the server keys `addr` under: IPv6 masked to `prefix` bits. A `/LEN` must be
/// the client's own size (as `list` prints groups).
fn client_of(addr: &Addr, prefix: u8) -> Result<IpAddr, Fail> {
    if !addr.is_client(prefix) {
        let why = match addr.ip {
            IpAddr::V4(_) => "an IPv4 client is a single address (no /LEN, or /32)".to_string(),
            IpAddr::V6(_) => {
                format!("the server groups IPv6 clients by /{prefix} (see --ipv6-prefix)")
            }
        };
        return Err(usage_error(format!(
            "bad address '{}': {why}",
            addr_text(addr)
        )));
    }
    Ok(client::group(addr.ip, prefix))
}

/// A client as [`client_of`] reads it, or a network the server counts and blocks as a whole
/// (`ADDR/24`, `ADDR/56`, `ADDR/48`: see [`Target`]).
fn target_of(addr: &Addr, prefix: u8) -> Result<Target, Fail> {
    let text = addr_text(addr);
    Target::parse(&text, prefix).map_err(|why| usage_error(format!("bad address '{text}': {why}")))
}

/// How `addr` was typed, for messages.
fn addr_text(addr: &Addr) -> String {
    match addr.len {
        Some(n) => format!("{}/{n}", addr.ip),
        None => addr.ip.to_string(),
    }
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

fn open(path: &Path, access: ToolAccess) -> Result<Store, Fail> {
    open_for_tool(path, access).map_err(|e| match e {
        ToolOpenError::Io(e) => {
            let hint = match e.kind() {
                std::io::ErrorKind::PermissionDenied => match access {
                    ToolAccess::ReadOnly => {
                        "; list, show and stats need read permission on the file and its \
                         directories (run as root, or as a user the file's mode lets read)"
                    }
                    ToolAccess::ReadWrite => {
                        "; block and unblock need write permission on the file (run as root)"
                    }
                },
                std::io::ErrorKind::NotFound => {
                    "; is DOSCache shmcb:FILE(BYTES) the server's setting and has the server \
                     started since? (--store FILE names another)"
                }
                _ => "",
            };
            not_done(format!("cannot open store {}: {e}{hint}", path.display()))
        }
        e @ ToolOpenError::NotAStore(_) => not_done(format!("{}: {e}", path.display())),
    })
}

#[derive(Serialize)]
struct BlockJson {
    client: String,
    rule: &'static str,
    generation: u32,
    seconds_left: u64,
    started: String,
    until: String,
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
        started: rfc3339(b.started),
        until: rfc3339(b.until),
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
        notify::one_field(&b.host),
        notify::one_field(&b.uri)
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
    remembered_until: Option<String>,
    site: Vec<RecordJson>,
    page: Vec<RecordJson>,
}

#[derive(Serialize)]
struct UnblockJson {
    client: String,
    /// Whether a block was active (and has now ended).
    was_blocked: bool,
    generation: Option<u32>,
    forgotten: bool,
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
    created: String,
    attaches: u64,
    ipv6_prefix: u8,
    areas: Vec<AreaJson>,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    error: &'a str,
    exit_status: u8,
}

fn area_name(a: Area) -> &'static str {
    match a {
        Area::Site => "site",
        Area::Page => "page",
        Area::Block => "block",
    }
}

/// The text printed on standard output: one JSON document, or lines.
fn json(value: &impl Serialize) -> String {
    // Plain structs of strings and numbers: serialising cannot fail.
    serde_json::to_string(value).unwrap_or_default() + "\n"
}

/// Runs the command; the text for standard output. Nothing is printed before the command
/// succeeded, so a failure leaves standard output empty (or holds only its JSON object).
fn run(cli: &Cli) -> Result<String, Fail> {
    if let Some(engine) = &cli.cache {
        return farm_wide(cli, engine);
    }
    // (clap checked the arguments' syntax; whether ADDR/LEN is a whole client depends on the
    // grouping prefix, known once the store is open.)
    let access = match cli.command {
        Cmd::List | Cmd::Show { .. } | Cmd::Stats => ToolAccess::ReadOnly,
        Cmd::UnderAttack { mode: None } => ToolAccess::ReadOnly,
        Cmd::Block { .. } | Cmd::Unblock { .. } | Cmd::UnderAttack { .. } => ToolAccess::ReadWrite,
    };
    let store = open(&cli.store, access)?;
    let (hint_prefix, hint_memory) = store.hints();
    let prefix = cli
        .ipv6_prefix
        .or(hint_prefix)
        .unwrap_or(DEFAULT_IPV6_PREFIX);
    let now = wall_clock();
    let out = match &cli.command {
        Cmd::List => list(cli, &store, prefix, now),
        Cmd::Show { addr } => show(cli, &store, target_of(addr, prefix)?, prefix, now)?,
        Cmd::Block { addr, duration } => {
            let ip = client_of(addr, prefix)?;
            block(cli, &store, ip, *duration, hint_memory, prefix, now)?
        }
        Cmd::Unblock { addr, forget } => {
            unblock(cli, &store, target_of(addr, prefix)?, *forget, prefix, now)?
        }
        Cmd::Stats => stats(cli, &store, prefix),
        Cmd::UnderAttack { mode } => under_attack(cli, &store, mode.as_deref()),
    };
    Ok(out)
}

fn list(cli: &Cli, store: &Store, prefix: u8, now: Micros) -> String {
    let blocks = store.active_blocks(now, usize::MAX);
    if cli.json {
        let out: Vec<BlockJson> = blocks.iter().map(|b| block_json(b, prefix, now)).collect();
        return json(&out);
    }
    blocks
        .iter()
        .map(|b| block_line(b, prefix, now) + "\n")
        .collect()
}

fn show(cli: &Cli, store: &Store, t: Target, prefix: u8, now: Micros) -> Result<String, Fail> {
    let (ip, len) = (t.addr, t.prefix);
    let record = retry(|| store.block_record_net(ip, len, now))?;
    let site = store.records_of_net(Area::Site, ip, len, now);
    let page = store.records_of_net(Area::Page, ip, len, now);
    let label = t.label(prefix);
    if cli.json {
        let active = record.as_ref().filter(|r| r.active);
        return Ok(json(&ShowJson {
            client: label,
            blocked: active.is_some(),
            block: active.map(|r| block_json(&r.block, prefix, now)),
            generation: record.as_ref().map_or(0, |r| r.block.generation),
            remembered_until: record.as_ref().map(|r| rfc3339(r.remembered_until)),
            site: site.iter().map(|r| record_json(r, now)).collect(),
            page: page.iter().map(|r| record_json(r, now)).collect(),
        }));
    }
    let mut out = format!("client {label}\n");
    out += &match &record {
        Some(r) if r.active => format!(
            "blocked: rule {}, generation {}, {}s left, score {}, host {}, uri {}\n",
            rule_name(&r.block),
            r.block.generation,
            seconds_left(r.block.until, now),
            r.block.score,
            notify::one_field(&r.block.host),
            notify::one_field(&r.block.uri)
        ),
        Some(r) => format!(
            "not blocked; generation {} remembered for {}s more\n",
            r.block.generation,
            seconds_left(r.remembered_until, now)
        ),
        None => "not blocked; no generation remembered\n".to_string(),
    };
    for (name, records) in [("site", &site), ("page", &page)] {
        for r in records {
            let what = if name == "site" {
                notify::one_field(&r.host)
            } else {
                format!(
                    "{} {}",
                    notify::one_field(&r.host),
                    notify::one_field(&r.path)
                )
            };
            out += &format!(
                "{name} {what} score {} (window {}s, {}s left)\n",
                r.score,
                seconds_left(r.expires, r.origin),
                seconds_left(r.expires, now)
            );
        }
    }
    Ok(out)
}

fn block(
    cli: &Cli,
    store: &Store,
    ip: IpAddr,
    seconds: u32,
    hint_memory: Option<u32>,
    prefix: u8,
    now: Micros,
) -> Result<String, Fail> {
    let memory = hint_memory.unwrap_or(MIN_BLOCK_MEMORY_SECS).max(seconds);
    let b = retry(|| store.block_manually(ip, seconds, memory, now))?;
    // The block file, as a block start writes it (the log line, DOSSystemCommand and
    // DOSEmailNotify are the server's: shieldctl does not run them).
    let contents = notify::file_contents(
        std::process::id(),
        &Started {
            block: b.clone(),
            origin: now,
        },
        "-",
        "-",
    );
    let file_note = match notify::write_file(&cli.log_dir, ip, &contents) {
        Ok(path) => format!("block file {}", path.display()),
        Err(e) => {
            eprintln!(
                "shieldctl: warning: cannot write block file {}: {e}",
                notify::file_path(&cli.log_dir, ip).display()
            );
            "no block file".to_string()
        }
    };
    if cli.json {
        return Ok(json(&block_json(&b, prefix, now)));
    }
    Ok(format!(
        "blocked {} for {seconds}s (generation {}); {file_note}\n",
        notify::client_label(ip, prefix),
        b.generation
    ))
}

fn unblock(
    cli: &Cli,
    store: &Store,
    t: Target,
    forget: bool,
    prefix: u8,
    now: Micros,
) -> Result<String, Fail> {
    let ended = retry(|| store.end_block_net(t.addr, t.prefix, now, forget))?;
    let label = t.label(prefix);
    // A block file left over (the block ended by itself) goes too.
    let path = notify::net_file_path(&cli.log_dir, t.addr, t.prefix);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => eprintln!(
            "shieldctl: warning: cannot remove block file {}: {e}",
            path.display()
        ),
    }
    if cli.json {
        return Ok(json(&UnblockJson {
            client: label,
            was_blocked: ended.ended.is_some(),
            generation: ended.generation,
            forgotten: ended.forgotten && ended.generation.is_some(),
        }));
    }
    let forgot = match (ended.forgotten, ended.generation) {
        (true, Some(g)) => format!("; generation {g} forgotten"),
        _ => String::new(),
    };
    Ok(match ended.ended {
        Some(_) => format!("unblocked {label}{forgot}\n"),
        None => format!("{label} was not blocked{forgot}\n"),
    })
}

/// `--cache ENGINE block|unblock`: the event goes into the farm's engine, and every server
/// writes it into its own store within moments (each server's listener).
fn farm_wide(cli: &Cli, engine: &str) -> Result<String, Fail> {
    use mod_shield::farm::{event::Op, Event, Farm, FarmSpec};
    let (name, args) = engine.split_once(':').unwrap_or((engine, ""));
    let spec =
        FarmSpec::parse(name, args).map_err(|e| usage_error(format!("--cache '{engine}' {e}")))?;
    let prefix = cli.ipv6_prefix.unwrap_or(DEFAULT_IPV6_PREFIX);
    let now = wall_clock();
    let (ev, done) = match &cli.command {
        Cmd::Block { addr, duration } => {
            let ip = client_of(addr, prefix)?;
            let ev = Event {
                op: Op::Block,
                addr: ip,
                prefix: 0,
                started: now,
                until: now.saturating_add(i64::from(*duration) * 1_000_000),
                generation: 1,
                rule: String::new(),
                count: 0,
                interval: *duration,
                score: 0,
                host: String::new(),
                uri: String::new(),
                memory_secs: MIN_BLOCK_MEMORY_SECS.max(*duration),
                forget: false,
                origin: 0,
            };
            let label = notify::client_label(ip, prefix);
            (
                ev,
                format!(
                    "blocked {label} for {duration}s on every server of {}",
                    spec.label
                ),
            )
        }
        Cmd::Unblock { addr, forget } => {
            let t = target_of(addr, prefix)?;
            let ev = Event {
                op: Op::Unblock,
                addr: t.addr,
                prefix: t.prefix,
                started: now,
                until: now,
                generation: 0,
                rule: String::new(),
                count: 0,
                interval: 0,
                score: 0,
                host: String::new(),
                uri: String::new(),
                memory_secs: 0,
                forget: *forget,
                origin: 0,
            };
            (
                ev,
                format!(
                    "unblocked {} on every server of {}",
                    t.label(prefix),
                    spec.label
                ),
            )
        }
        _ => {
            return Err(usage_error(
                "--cache acts on block and unblock; list, show, stats and under-attack read a \
                 server's store file (--store)",
            ))
        }
    };
    let health: &'static mod_shield::remote::Health = Box::leak(Box::new(
        mod_shield::remote::Health::new()
            .map_err(|e| not_done(format!("cannot map a health word: {e}")))?,
    ));
    let farm = Farm::new(spec, health, 0, |_, _| {});
    farm.connect_now()
        .map_err(|e| not_done(format!("{}: {e}", farm.spec().label)))?;
    farm.announce_now(&ev)
        .map_err(|e| not_done(format!("{}: {e}", farm.spec().label)))?;
    if cli.json {
        return Ok(json(&serde_json::json!({
            "farm": farm.spec().label,
            "client": notify::client_label(ev.addr, prefix),
            "prefix": ev.prefix,
            "op": if ev.op == Op::Block { "block" } else { "unblock" },
            "announced": true,
        })));
    }
    Ok(done + "\n")
}

/// `under-attack [on|off|auto]`: sets (or prints) the override the server reads each second.
fn under_attack(cli: &Cli, store: &Store, mode: Option<&str>) -> String {
    use mod_shield::attack::Override;
    let before = store.under_attack_override();
    let after = match mode.and_then(Override::parse) {
        Some(m) => {
            store.set_under_attack_override(m);
            m
        }
        None => before,
    };
    if cli.json {
        #[derive(Serialize)]
        struct UnderAttackJson {
            under_attack: &'static str,
            was: &'static str,
        }
        return json(&UnderAttackJson {
            under_attack: after.as_str(),
            was: before.as_str(),
        });
    }
    let meaning = match after {
        Override::Auto => "as configured (DOSUnderAttack, DOSUnderAttackThreshold)",
        Override::On => "forced on wherever DOSUnderAttack is not off",
        Override::Off => "forced off everywhere",
    };
    match mode {
        Some(_) if before == after => {
            format!("under-attack already {}: {meaning}\n", after.as_str())
        }
        Some(_) => format!(
            "under-attack {} (was {}): {meaning}; the server follows within a second\n",
            after.as_str(),
            before.as_str()
        ),
        None => format!("under-attack {}: {meaning}\n", after.as_str()),
    }
}

fn stats(cli: &Cli, store: &Store, prefix: u8) -> String {
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
    if cli.json {
        return json(&StatsJson {
            store: cli.store.display().to_string(),
            area_bytes: store.area_bytes(),
            created: rfc3339(store.created()),
            attaches: store.attaches(),
            ipv6_prefix: prefix,
            areas,
        });
    }
    let mut out = format!(
        "store {} ({} bytes per area, attached {} times)\n",
        cli.store.display(),
        store.area_bytes(),
        store.attaches()
    );
    out += "area capacity entries inserted expired evicted hits misses\n";
    for a in &areas {
        out += &format!(
            "{} {} {} {} {} {} {} {}\n",
            a.area, a.capacity, a.entries, a.inserted, a.expired, a.evicted, a.hits, a.misses
        );
    }
    out
}

/// Reports a failure: the message on standard error; with `--json`, also its JSON object
/// on standard output (a script reading standard output always gets one document).
fn fail(fail: &Fail, json_wanted: bool) -> ExitCode {
    eprintln!("shieldctl: {}", fail.msg);
    if json_wanted {
        print!(
            "{}",
            json(&ErrorJson {
                error: &fail.msg,
                exit_status: fail.code,
            })
        );
    }
    ExitCode::from(fail.code)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let wanted = std::env::args_os().skip(1).any(|a| a == "--json");
            let printed = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
            if printed || !wanted {
                e.exit();
            }
            // clap's first line, without its "error: " (the rest is usage advice).
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            let msg = first.strip_prefix("error: ").unwrap_or(first);
            return fail(
                &Fail {
                    code: USAGE,
                    msg: msg.to_string(),
                },
                true,
            );
        }
    };
    match run(&cli) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(f) => fail(&f, cli.json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_grouped_like_the_server_does() {
        let addr = |t| mod_shield::cli::parse_addr(t).unwrap();
        let g = client_of(&addr("2001:db8:7:7:1:2:3:4"), 64).unwrap();
        assert_eq!(g, "2001:db8:7:7::".parse::<IpAddr>().unwrap());
        assert_eq!(client_of(&addr("2001:db8:7:7::/64"), 64).unwrap(), g);
        assert_eq!(notify::client_label(g, 64), "2001:db8:7:7::/64");
        let e = client_of(&addr("2001:db8::/48"), 64).unwrap_err();
        assert!(e.msg.contains("/64") && e.msg.contains("'2001:db8::/48'") && e.code == 2);
        assert!(client_of(&addr("192.0.2.1/24"), 64).is_err());
        assert!(client_of(&addr("192.0.2.1/32"), 64).is_ok());
        assert_eq!(addr_text(&addr("10.0.0.0/8")), "10.0.0.0/8");
    }

    #[test]
    fn seconds_left_round_up() {
        assert_eq!(seconds_left(2_000_001, 0), 3);
        assert_eq!(seconds_left(0, 5), 0);
    }
}
