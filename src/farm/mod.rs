//! The farm: several servers counting as one through Redis (standalone, Cluster, Valkey) or
//! memcached (`DOSCache redis:…` / `memcache:…`), exactly, with local leases.
//!
//! Every counter a client has on a server (its site record, its record of a page) holds a
//! *lease* in this server's shared store: units of the client's farm-wide budget for the
//! current window, granted by the engine in one atomic step (a Lua script in Redis, `incr` in
//! memcached). A request spends one unit from the lease with no network call; only when the
//! lease is empty does it ask the engine for the next one, and the engine grants a part of what
//! is left ([`SHARE`]), never more than is left, down to 1. The sum of all grants in a window
//! never exceeds the count, so the farm never serves more than the count; a grant of 0 means
//! the count is crossed, and the request starts the block.
//!
//! A block (started by a count, a penalty or `shieldctl block`) is written into the engine and
//! announced to every server (Redis pub/sub; memcached: an event log the servers poll), each of
//! which writes it into its own store: a blocked client is answered locally, with no round
//! trip, until its block ends.
//!
//! While the engine cannot be reached, each server counts alone, exactly, in its own store (the
//! records count all along): [`Farm::grant`] answers `None` at once, a request never waits more
//! than the command timeout, and only this module's background thread reconnects.
#![forbid(unsafe_code)]

pub mod event;
mod memcached;
mod redis_engine;

pub use event::Event;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use siphasher::sip::SipHasher13;
use std::hash::Hasher;

use crate::log::Level;
use crate::remote::Health;
use crate::store::{Counter, Micros};

/// A lease is a 1/SHARE part of what is left of the budget (at least the request's own units):
/// large while the client is far below its count, 1 near it, so that the farm serves exactly
/// the count. A server that stops seeing the client holds at most this part unspent.
pub const SHARE: i64 = 8;
/// Default command (read/write) timeout: the most a request waits on a dead engine.
pub const COMMAND_TIMEOUT_MS: u32 = 50;
/// Default connect timeout (only the background thread connects).
pub const CONNECT_TIMEOUT_MS: u32 = 200;
/// How often the background thread tries a lost engine again (sharing resumes within this
/// much of its return, plus a connect).
const RETRY: Duration = Duration::from_millis(500);
/// How often an idle connection is checked while the engine is up.
const CHECK: Duration = Duration::from_millis(250);
/// Connections a process keeps at most (one per thread that is asking at the same instant).
const MAX_CONNECTIONS: usize = 64;
/// The pub/sub channel (Redis) of the farm's events.
pub const CHANNEL: &str = "shield:events";

/// Which engine `DOSCache` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Engine {
    /// One Redis (or Valkey): `redis:HOST:PORT`, `redis://[user:pass@]HOST:PORT`.
    Redis,
    /// A Redis Cluster, from a seed list of several nodes.
    RedisCluster,
    /// memcached, one or more servers (keys spread over them by hash).
    Memcache,
}

/// The farm's engine as configured: `DOSCache redis:…` or `memcache:…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FarmSpec {
    pub engine: Engine,
    /// `redis://…` URLs, or memcached `HOST:PORT`s.
    pub nodes: Vec<String>,
    /// As written after `DOSCache` (shown on the status page and in log lines; a password in
    /// it is masked).
    pub label: String,
    pub command_timeout_ms: u32,
    pub connect_timeout_ms: u32,
}

impl FarmSpec {
    /// Parses the value of `DOSCache` after `redis:` or `memcache:` (`name` is which).
    pub fn parse(name: &str, args: &str) -> Result<FarmSpec, String> {
        let args = args.trim();
        let is_redis = name.eq_ignore_ascii_case("redis") || name.eq_ignore_ascii_case("valkey");
        let is_memcache = name.eq_ignore_ascii_case("memcache");
        if !is_redis && !is_memcache {
            return Err(format!(
                "names the engine '{name}' (expected redis:HOST:PORT[,HOST:PORT...], \
                 redis://[user:pass@]HOST:PORT or memcache:HOST:PORT[,HOST:PORT...])"
            ));
        }
        if args.is_empty() {
            return Err(format!("needs servers: {name}:HOST:PORT[,HOST:PORT...]"));
        }
        let mut nodes = Vec::new();
        for part in args.split(',').map(str::trim) {
            // `redis://…` arrives as `//…` after the first ':'.
            let (auth, hostport) = match part.strip_prefix("//") {
                Some(url) if is_redis => match url.rsplit_once('@') {
                    Some((auth, hp)) => (Some(auth), hp),
                    None => (None, url),
                },
                Some(_) => return Err(format!("has '{part}': memcache takes HOST:PORT")),
                None => (None, part),
            };
            let hostport = hostport.trim_end_matches('/');
            let Some((host, port)) = hostport.rsplit_once(':') else {
                return Err(format!("has '{part}', which is not HOST:PORT"));
            };
            if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
                return Err(format!("has '{part}', which names no host"));
            }
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(format!("has '{part}', whose port '{port}' is not 1-65535"));
            }
            nodes.push(if is_redis {
                match auth {
                    Some(a) => format!("redis://{a}@{host}:{port}"),
                    None => format!("redis://{host}:{port}"),
                }
            } else {
                format!("{host}:{port}")
            });
        }
        let engine = match (is_redis, nodes.len()) {
            (false, _) => Engine::Memcache,
            (true, 1) => Engine::Redis,
            (true, _) => Engine::RedisCluster,
        };
        Ok(FarmSpec {
            engine,
            nodes,
            label: mask_password(&format!("{}:{args}", name.to_ascii_lowercase())),
            command_timeout_ms: COMMAND_TIMEOUT_MS,
            connect_timeout_ms: CONNECT_TIMEOUT_MS,
        })
    }
}

/// `redis://user:secret@h:1` → `redis://user:***@h:1`: a label never shows a password.
fn mask_password(s: &str) -> String {
    s.split(',')
        .map(|part| match (part.find("//"), part.rfind('@')) {
            (Some(start), Some(at)) if at > start => {
                let auth = &part[start + 2..at];
                match auth.split_once(':') {
                    Some((user, _)) => format!("{}//{user}:***{}", &part[..start], &part[at..]),
                    None => format!("{}//***{}", &part[..start], &part[at..]),
                }
            }
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The engine's name of one counter: the client in a hash tag (a Cluster keeps every key of
/// one client in one slot, so one script sees them all), which of its counters, and a hash of
/// its site and, for the page counter, of `path` (the site counter ignores it).
pub fn counter_key(client: &str, counter: Counter, host: &str, path: &str) -> String {
    let mut h = SipHasher13::new_with_keys(0x6d6f_645f_7368_6965, 0x6c64_2066_6172_6d31);
    h.write_usize(host.len());
    h.write(host.as_bytes());
    if counter == Counter::Page {
        h.write(path.as_bytes());
    }
    format!(
        "shield:{{{client}}}:{}:{:016x}",
        counter.letter(),
        h.finish()
    )
}

/// A client's (or network's) name in the engine: `192.0.2.7`, `2001:db8::/64`…
pub fn client_name(addr: IpAddr, prefix: u8) -> String {
    if prefix == 0 {
        addr.to_string()
    } else {
        format!("{addr}/{prefix}")
    }
}

/// What a request asks of one counter whose lease is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub key: String,
    /// The count (the window's budget).
    pub limit: u32,
    /// The window, in seconds.
    pub interval: u32,
    /// The units this request spends (1 for a request, its weight under attack, a penalty).
    pub delta: i64,
    /// Ask for a lease beyond `delta` (requests), or exactly `delta` (penalties).
    pub lease: bool,
    /// What this server last saw left of the budget (memcached sizes its lease from it; the
    /// Redis script sees the budget itself). `None`: nothing seen yet.
    pub left_seen: Option<i64>,
}

/// What the engine granted one counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Units granted, `delta` of them spent by this request; 0: the count is crossed.
    pub units: i64,
    /// What is left of the budget after the grant.
    pub left: i64,
    /// The window ends in this many milliseconds (the lease is good until then).
    pub ttl_ms: i64,
}

/// The size of the grant when `left` units are left and the request spends `delta` (what the
/// Redis script computes, and memcached's client from what it saw): `None` when `left` does
/// not cover `delta` (the count is crossed).
pub fn grant_size(left: i64, delta: i64, lease: bool) -> Option<i64> {
    if left < delta || delta < 0 {
        return None;
    }
    let want = if lease {
        (left / SHARE).max(delta)
    } else {
        delta
    };
    Some(want.min(left))
}

/// Counters kept in the server's health mapping for the status page, beside the health words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FarmStats {
    /// Calls to the engine by request threads (grants, block announcements).
    pub round_trips: u64,
    /// Requests and penalties counted through the farm (spent from a lease or granted).
    pub counted: u64,
    /// Events (blocks, unblocks) heard from other servers and written into this store.
    pub events: u64,
}

/// The engine's answers a connection can give; one per engine kind.
trait Conn: Send {
    /// Grants for `asks` (one atomic step each; all of one client in one call where the engine
    /// allows), and the client's remembered block generation in the engine (0: none).
    fn grant(&mut self, client: &str, asks: &[Ask]) -> Result<(Vec<Grant>, u32), String>;
    /// Writes an event (a block: its record, the reset of its counters; an unblock) and
    /// announces it to every server.
    fn announce(&mut self, ev: &Event, reset: &[String]) -> Result<(), String>;
    /// Whether the engine answers.
    fn ping(&mut self) -> Result<(), String>;
    /// Restarts counters (key, interval: memcached's key names its window).
    fn restart(&mut self, counters: &[(String, u32)]) -> Result<(), String>;
}

/// Opens one connection (background thread and tools only).
fn connect(spec: &FarmSpec) -> Result<Box<dyn Conn>, String> {
    match spec.engine {
        Engine::Redis | Engine::RedisCluster => redis_engine::connect(spec),
        Engine::Memcache => memcached::connect(spec).map(|c| Box::new(c) as Box<dyn Conn>),
    }
}

/// Follows the farm's events (blocking; returns on error, the caller reconnects): calls
/// `apply` with each event from another server.
fn listen(spec: &FarmSpec, apply: &dyn Fn(Event), stop: &dyn Fn() -> bool) -> Result<(), String> {
    match spec.engine {
        Engine::Redis | Engine::RedisCluster => redis_engine::listen(spec, apply, stop),
        Engine::Memcache => memcached::listen(spec, apply, stop),
    }
}

/// A connection of the pool, and when it was opened: a failure of a connection opened before
/// the engine was last seen back is a leftover of the outage that ended (another process saw
/// the return first), not a new outage.
struct Pooled {
    conn: Box<dyn Conn>,
    opened: Micros,
}

/// The connections of one process and its view of the engine's health.
struct Pool {
    idle: Mutex<Vec<Pooled>>,
    /// Signalled when a connection is returned or opened.
    returned: Condvar,
    /// Connections open (idle or in use).
    open: AtomicUsize,
    /// Requests that found no idle connection since the background thread last looked.
    starved: AtomicUsize,
    /// Woken when a request starved or a connection failed.
    wake: Condvar,
    wake_lock: Mutex<bool>,
}

/// One process's client of the farm: a pool of connections kept by a background thread, the
/// event listener, and the server's health (shared by all its processes).
pub struct Farm {
    spec: FarmSpec,
    pool: Arc<Pool>,
    health: &'static Health,
    /// This server's id in the events it announces (its own come back and are skipped).
    origin: u64,
    /// Where the farm's lines go (one per change of the engine's health).
    log: fn(Level, &str),
}

impl Farm {
    /// The farm's client for this process. Nothing connects yet: call [`Farm::start`] in the
    /// child (after fork), which starts the background threads.
    pub fn new(spec: FarmSpec, health: &'static Health, origin: u64, log: fn(Level, &str)) -> Farm {
        Farm {
            spec,
            pool: Arc::new(Pool {
                idle: Mutex::new(Vec::new()),
                returned: Condvar::new(),
                open: AtomicUsize::new(0),
                starved: AtomicUsize::new(0),
                wake: Condvar::new(),
                wake_lock: Mutex::new(false),
            }),
            health,
            origin,
            log,
        }
    }

    pub fn spec(&self) -> &FarmSpec {
        &self.spec
    }

    pub fn health(&self) -> &'static Health {
        self.health
    }

    /// Connects once, for a tool (shieldctl): a failure is an error, not a fallback.
    pub fn connect_now(&self) -> Result<(), String> {
        let opened = now_micros();
        let conn = connect(&self.spec)?;
        self.return_idle(Pooled { conn, opened }, false);
        self.pool.open.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Starts the keeper (connections, reconnects) and the listener (events into `apply`).
    pub fn start(&'static self, apply: Box<dyn Fn(Event) + Send + Sync>) -> std::io::Result<()> {
        // A panic in either thread must not leave the process without its farm: the body
        // runs again (each is a loop that never returns otherwise).
        let keep_going = |what: &'static str, body: &(dyn Fn() + Sync)| loop {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
                (self.log)(
                    Level::Err,
                    &format!(
                        "DOSCache {}: the farm's {what} thread failed; restarting it",
                        self.spec.label
                    ),
                );
            }
            std::thread::sleep(RETRY);
        };
        std::thread::Builder::new()
            .name("shield-farm-keeper".into())
            .spawn(move || keep_going("keeper", &|| self.keep()))?;
        let origin = self.origin;
        std::thread::Builder::new()
            .name("shield-farm-events".into())
            .spawn(move || {
                keep_going("events", &|| {
                    let own = |ev: Event| {
                        if ev.origin != origin {
                            bump(self.health, EVENTS);
                            apply(ev)
                        }
                    };
                    let _ = listen(&self.spec, &own, &|| false);
                })
            })?;
        Ok(())
    }

    /// The keeper: opens the first connection, one more whenever a request found none idle,
    /// and, while the engine is down, tries it again every [`RETRY`].
    fn keep(&self) {
        loop {
            let want = self.pool.open.load(Ordering::Acquire) == 0
                || self.pool.starved.swap(0, Ordering::AcqRel) > 0;
            let started = now_micros();
            if want && self.pool.open.load(Ordering::Acquire) < MAX_CONNECTIONS {
                match connect(&self.spec) {
                    Ok(conn) => {
                        self.pool.open.fetch_add(1, Ordering::AcqRel);
                        let opened = started;
                        self.return_idle(Pooled { conn, opened }, false);
                        self.report(Ok(()), started);
                    }
                    Err(e) => self.report(Err(&e), started),
                }
            } else {
                // A connection that died while idle (the engine restarted, a firewall dropped
                // it) is found here, not by a request: one idle connection is tried each round
                // (all of them in turn), and while the engine is down this is the probe.
                match self.checkout(Duration::ZERO, false) {
                    Some(mut c) => {
                        let r = c.conn.ping();
                        let since = started.min(c.opened);
                        self.report(r.as_ref().map(|_| ()).map_err(String::as_str), since);
                        if r.is_ok() {
                            self.return_idle(c, true);
                        } else {
                            self.pool.open.fetch_sub(1, Ordering::AcqRel);
                        }
                    }
                    None if self.pool.open.load(Ordering::Acquire) == 0 => {
                        self.pool.starved.fetch_add(1, Ordering::AcqRel);
                    }
                    None => {}
                }
            }
            let guard = self
                .pool
                .wake_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let pause = if self.pool.open.load(Ordering::Acquire) == 0
                || self.health.down_since().is_some()
            {
                RETRY
            } else {
                CHECK
            };
            // A wake-up sent while this thread was busy is not lost: the flag stays set, and the
            // next round starts at once (a failed request's probe follows it immediately).
            let (mut woken, _) = self
                .pool
                .wake
                .wait_timeout_while(guard, pause, |woken| !*woken)
                .unwrap_or_else(|p| p.into_inner());
            *woken = false;
        }
    }

    /// Reports how a call that began at `started` ended (for a call on a connection: the
    /// earlier of the call's start and the connection's opening). A failure of a call that
    /// began before the engine was last seen back (a probe or request caught in the outage,
    /// whose timeout ran out just after the return), or on a connection opened before it (one
    /// this process kept through the outage while another process saw the return), says
    /// nothing new and is not a second outage.
    fn report(&self, r: Result<(), &str>, started: Micros) {
        let now = now_micros();
        let t = match r {
            Ok(()) => self.health.succeeded(now),
            Err(_) => self.health.failed_since(started, now),
        };
        if let Some((level, line)) = t.message(&self.spec.label, r.err().unwrap_or("")) {
            (self.log)(level, &line);
        }
    }

    fn wake_keeper(&self) {
        let mut w = self
            .pool
            .wake_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *w = true;
        self.pool.wake.notify_one();
    }

    /// Returns a connection to the idle list: at its end (taken next), or with `far` at its
    /// far end, so that the keeper's next check takes another one.
    fn return_idle(&self, conn: Pooled, far: bool) {
        let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        if far {
            idle.insert(0, conn);
        } else {
            idle.push(conn);
        }
        drop(idle);
        self.pool.returned.notify_one();
    }

    /// An idle connection, waiting at most `wait` for one.
    /// `ask`: a request's wait, which asks the keeper for one more connection when none is
    /// idle (the keeper's own look does not).
    fn checkout(&self, wait: Duration, ask: bool) -> Option<Pooled> {
        let deadline = Instant::now() + wait;
        let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        let mut asked = !ask;
        loop {
            if let Some(c) = idle.pop() {
                return Some(c);
            }
            if !asked {
                asked = true;
                self.pool.starved.fetch_add(1, Ordering::AcqRel);
                self.wake_keeper();
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if left.is_zero() {
                return None;
            }
            idle = self
                .pool
                .returned
                .wait_timeout(idle, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Runs `f` on a connection: `None` when the engine is down or no connection came within
    /// the command timeout (the caller counts alone), or when `f` failed (then the connection
    /// is dropped, the failure reported, and the keeper woken).
    fn with_conn<R>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<R, String>) -> Option<R> {
        if self.health.down_since().is_some() {
            return None;
        }
        let timeout = Duration::from_millis(u64::from(self.spec.command_timeout_ms));
        let started = now_micros();
        let mut conn = self.checkout(timeout, true)?;
        bump(self.health, ROUND_TRIPS);
        match f(conn.conn.as_mut()) {
            Ok(r) => {
                self.return_idle(conn, false);
                Some(r)
            }
            Err(e) => {
                let since = started.min(conn.opened);
                drop(conn);
                self.pool.open.fetch_sub(1, Ordering::AcqRel);
                self.report(Err(&e), since);
                self.wake_keeper();
                None
            }
        }
    }

    /// Grants for a request's counters whose leases are empty, and the client's generation
    /// in the engine; `None`: the engine cannot answer now (count alone).
    pub fn grant(&self, client: &str, asks: &[Ask]) -> Option<(Vec<Grant>, u32)> {
        self.with_conn(|c| c.grant(client, asks))
    }

    /// Writes an event into the engine and announces it (a block this server started, or a
    /// tool's block or unblock). `reset`: the counter keys the block restarts.
    pub fn announce(&self, ev: &Event, reset: &[String]) -> bool {
        let mut ev = ev.clone();
        ev.origin = self.origin;
        self.with_conn(|c| c.announce(&ev, reset)).is_some()
    }

    /// For a tool: the same, with the engine's error.
    pub fn announce_now(&self, ev: &Event) -> Result<(), String> {
        let mut conn = self
            .checkout(
                Duration::from_millis(u64::from(self.spec.connect_timeout_ms)),
                true,
            )
            .ok_or_else(|| format!("{} did not answer", self.spec.label))?;
        conn.conn.announce(ev, &[])
    }

    /// Counts a request or penalty decided through the farm (for the status page).
    pub fn counted(&self) {
        bump(self.health, COUNTED);
    }

    pub fn stats(health: &Health) -> FarmStats {
        FarmStats {
            round_trips: health.extra(ROUND_TRIPS),
            counted: health.extra(COUNTED),
            events: health.extra(EVENTS),
        }
    }
}

impl crate::policy::Shared for Farm {
    fn grant(&self, client: &str, asks: &[Ask]) -> Option<(Vec<Grant>, u32)> {
        Farm::grant(self, client, asks)
    }

    fn counted(&self) {
        Farm::counted(self)
    }

    fn restart(&self, counters: &[(String, u32)]) {
        let _ = self.with_conn(|c| c.restart(counters));
    }
}

/// The farm's counters among the health mapping's spare words.
const ROUND_TRIPS: usize = 0;
const COUNTED: usize = 1;
const EVENTS: usize = 2;

fn bump(health: &Health, which: usize) {
    health.bump_extra(which);
}

fn now_micros() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as Micros)
}

/// A farm engine in memory for unit tests, as the Redis script keeps one: units used per
/// counter key, grants of [`grant_size`], the calls it answered;
/// while `down` it cannot answer.
#[cfg(test)]
#[derive(Default)]
pub struct FakeEngine {
    pub used: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    pub calls: std::sync::atomic::AtomicU64,
    pub down: std::sync::atomic::AtomicBool,
}

#[cfg(test)]
impl FakeEngine {
    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
impl crate::policy::Shared for FakeEngine {
    fn grant(&self, _client: &str, asks: &[Ask]) -> Option<(Vec<Grant>, u32)> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.down.load(Relaxed) {
            return None;
        }
        self.calls.fetch_add(1, Relaxed);
        let mut used = self.used.lock().unwrap();
        let grants = asks
            .iter()
            .map(|a| {
                let u = used.entry(a.key.clone()).or_default();
                let left = i64::from(a.limit) - *u;
                let g = grant_size(left, a.delta, a.lease).unwrap_or(0);
                *u += g;
                Grant {
                    units: g,
                    left: left - g,
                    ttl_ms: i64::from(a.interval) * 1000,
                }
            })
            .collect();
        Some((grants, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection whose every call fails (the engine restarted under it).
    struct Broken;

    impl Conn for Broken {
        fn grant(&mut self, _: &str, _: &[Ask]) -> Result<(Vec<Grant>, u32), String> {
            Err("broken pipe".into())
        }
        fn announce(&mut self, _: &Event, _: &[String]) -> Result<(), String> {
            Err("broken pipe".into())
        }
        fn ping(&mut self) -> Result<(), String> {
            Err("broken pipe".into())
        }
        fn restart(&mut self, _: &[(String, u32)]) -> Result<(), String> {
            Err("broken pipe".into())
        }
    }

    /// Another process saw the engine come back; this one still holds a connection from
    /// before the outage. Its failure is not a second outage (no line, the engine stays up);
    /// a connection opened after the return that fails is one.
    #[test]
    fn a_connection_kept_through_an_outage_does_not_start_another() {
        static LINES: AtomicUsize = AtomicUsize::new(0);
        fn log(_: Level, _: &str) {
            LINES.fetch_add(1, Ordering::Relaxed);
        }
        let health: &'static Health = Box::leak(Box::new(Health::new().unwrap()));
        let spec = FarmSpec::parse("redis", "127.0.0.1:1").unwrap();
        let farm = Farm::new(spec, health, 1, log);
        let before = now_micros() - 10_000_000;
        assert_eq!(
            health.failed(before + 1),
            crate::remote::Transition::WentDown
        );
        assert!(matches!(
            health.succeeded(now_micros() - 1),
            crate::remote::Transition::CameBack { .. }
        ));
        let kept = Pooled {
            conn: Box::new(Broken),
            opened: before,
        };
        farm.return_idle(kept, false);
        farm.pool.open.fetch_add(1, Ordering::AcqRel);
        assert!(farm.grant("192.0.2.7", &[]).is_none());
        assert!(health.down_since().is_none());
        assert_eq!(LINES.load(Ordering::Relaxed), 0);
        let fresh = Pooled {
            conn: Box::new(Broken),
            opened: now_micros(),
        };
        farm.return_idle(fresh, false);
        farm.pool.open.fetch_add(1, Ordering::AcqRel);
        assert!(farm.grant("192.0.2.7", &[]).is_none());
        assert!(health.down_since().is_some());
        assert_eq!(LINES.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn grants_shrink_to_one_and_never_pass_the_budget() {
        let mut left = 100;
        let mut total = 0;
        let mut sizes = Vec::new();
        while let Some(g) = grant_size(left, 1, true) {
            sizes.push(g);
            total += g;
            left -= g;
        }
        assert_eq!(total, 100);
        assert_eq!(sizes[0], 12);
        assert_eq!(*sizes.last().unwrap(), 1);
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]));
        assert_eq!(grant_size(0, 1, true), None);
        assert_eq!(grant_size(3, 4, true), None);
        assert_eq!(grant_size(10, 4, false), Some(4));
        // A count of 10 is granted one unit at a time: exact however the servers interleave.
        assert_eq!(grant_size(10, 1, true), Some(1));
    }

    #[test]
    fn specs_name_the_engine_and_mask_passwords() {
        let s = FarmSpec::parse("redis", "127.0.0.1:6379").unwrap();
        assert_eq!(s.engine, Engine::Redis);
        assert_eq!(s.nodes, ["redis://127.0.0.1:6379"]);
        let s = FarmSpec::parse("redis", "a:7001,b:7002,c:7003").unwrap();
        assert_eq!(s.engine, Engine::RedisCluster);
        assert_eq!(s.nodes.len(), 3);
        let s = FarmSpec::parse("redis", "//user:secret@h:6379").unwrap();
        assert_eq!(s.nodes, ["redis://user:secret@h:6379"]);
        assert_eq!(s.label, "redis://user:***@h:6379");
        assert!(!s.label.contains("secret"));
        let s = FarmSpec::parse("memcache", "m1:11211,m2:11211").unwrap();
        assert_eq!(s.engine, Engine::Memcache);
        assert_eq!(s.nodes, ["m1:11211", "m2:11211"]);
        for (name, bad) in [
            ("redis", ""),
            ("redis", "host"),
            ("redis", "host:0"),
            ("redis", "host:99999"),
            ("redis", ":6379"),
            ("memcache", "//h:1"),
            ("dbm", "/tmp/x"),
        ] {
            assert!(FarmSpec::parse(name, bad).is_err(), "{name}:{bad} accepted");
        }
    }

    #[test]
    fn one_clients_keys_share_a_hash_tag() {
        let a = counter_key("192.0.2.7", Counter::Page, "h:80", "/a");
        let b = counter_key("192.0.2.7", Counter::Site, "h:80", "");
        assert_eq!(b, counter_key("192.0.2.7", Counter::Site, "h:80", "/a"));
        assert!(a.starts_with("shield:{192.0.2.7}:p:"));
        assert!(b.starts_with("shield:{192.0.2.7}:s:"));
        assert_ne!(a, counter_key("192.0.2.7", Counter::Page, "h:80", "/b"));
    }
}
