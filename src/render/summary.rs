//! What the page shows, copied out of the store, the counters and the configuration once, so
//! that every format prints the same facts. Plain data: the writers only format it. The
//! `Serialize` derives give `?json` its shape (the top level is walked in `json.rs`).
#![forbid(unsafe_code)]

use std::net::IpAddr;

use serde::{Serialize, Serializer};

use super::time::{iso, permille, plural, secs_until, utc, MICROS};
use crate::attack::Override;
use crate::config::{canonical_lines, CacheSpec, DirConfig, Enabled, ServerSettings};
use crate::metrics::Metrics;
use crate::monitor::WouldBlock;
use crate::remote::SharedTier;
use crate::store::{Area, Counter, Micros, RecordView, Store};

/// Records listed per top-scorer table.
const TOP: usize = 10;
/// Active blocks listed at most (all of them are counted).
const BLOCKS_LISTED: usize = 1000;
/// At most this many would-be blocks are listed.
const WOULD_LISTED: usize = 50;

/// Where the page's facts come from (the handler fills this in).
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub server: &'a ServerSettings,
    pub dir: &'a DirConfig,
    /// `None` when the shared store could not be set up (requests are served uncounted).
    pub store: Option<&'a Store>,
    /// The shared tier (`DOSCache memcache:…`/`redis:…`) and its health, when running.
    pub shared: Option<&'a SharedTier>,
    /// Why the store is in anonymous memory although `DOSCache` names a file (the file could
    /// not be used), if it is.
    pub memory_only: Option<&'a str>,
    /// Recent would-be blocks of monitor mode, newest first.
    pub would_blocks: &'a [WouldBlock],
    /// The request counters; `None` when their mapping could not be made.
    pub metrics: Option<&'a Metrics>,
    pub now: Micros,
}

/// Everything the page shows.
pub struct Summary {
    pub now: Micros,
    /// The headline, e.g. "3 clients blocked now".
    pub verdict: String,
    pub enabled: Enabled,
    /// Monitor mode: what a would-be block does.
    pub monitor_note: Option<&'static str>,
    pub blocks_active: usize,
    pub activity: Option<Activity>,
    /// Newest first.
    pub would_blocks: Vec<WouldRow>,
    /// This server's site count and this URL's page count.
    pub site_count: u32,
    pub page_count: u32,
    /// `DOSChallenge on`: its counters.
    pub challenges: Option<Challenges>,
    /// `DOSUnderAttack`: the switch and its figures (`None` without the counters' mapping).
    pub under_attack: Option<UnderAttack>,
    pub store: Option<StoreSummary>,
    /// The effective settings as directive lines.
    pub settings: Vec<String>,
}

/// `DOSUnderAttack`, for the whole server.
#[derive(Serialize, Clone, Copy)]
pub struct UnderAttack {
    /// Browsers without a pass get the challenge now, in this URL's context (its
    /// `DOSUnderAttack`, the switch and the override).
    pub on: bool,
    /// The `auto` switch.
    pub switch: bool,
    /// `shieldctl under-attack`: `auto` (as configured), `on` or `off`.
    #[serde(rename = "override", serialize_with = "ser_override")]
    pub forced: crate::attack::Override,
    /// The switch's last transition (absent: never).
    #[serde(serialize_with = "ser_opt_iso")]
    pub changed: Option<Micros>,
    /// Counted requests a second over the last step.
    pub rate: u64,
    pub busy_percent: Option<u8>,
    pub threshold: u32,
    pub threshold_busy_percent: Option<u8>,
    /// Whether `DOSUnderAttack` is on or auto anywhere in the configuration.
    pub configured: bool,
}

impl UnderAttack {
    fn gather(m: &Metrics, src: &Sources) -> UnderAttack {
        let sw = m.attack_switch();
        let (_, forced) = m.attack_state();
        let t = &src.server.under_attack;
        UnderAttack {
            // As for a request of this URL's context (which inherits the server's).
            on: crate::attack::applies(src.dir.under_attack(), forced, sw.on),
            switch: sw.on,
            forced,
            changed: (sw.changed_at > 0).then_some(sw.changed_at),
            rate: sw.rate,
            busy_percent: sw.busy,
            threshold: t.rate,
            threshold_busy_percent: t.busy_percent,
            configured: crate::attack::configured(),
        }
    }

    /// One line for people: "on since …" / "off".
    pub fn describe(&self) -> String {
        let state = if self.on { "on" } else { "off" };
        let why = match self.forced {
            Override::On => " (forced on by shieldctl under-attack)",
            Override::Off => " (forced off by shieldctl under-attack)",
            Override::Auto => "",
        };
        let threshold = match self.threshold_busy_percent {
            Some(b) => format!("{} requests/s or {b}% busy workers", self.threshold),
            None => format!("{} requests/s", self.threshold),
        };
        let busy = self
            .busy_percent
            .map(|b| format!(", {b}% of workers busy"))
            .unwrap_or_default();
        format!(
            "Under attack: {state}{why} · {} counted requests/s{busy} (threshold {threshold})",
            self.rate
        )
    }
}

fn ser_override<S: Serializer>(o: &Override, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(o.as_str())
}

fn ser_opt_iso<S: Serializer>(us: &Option<Micros>, s: S) -> Result<S::Ok, S::Error> {
    us.map(iso).serialize(s)
}

/// The challenge's counters (`DOSChallenge on`).
#[derive(Serialize, Clone, Copy, Default)]
pub struct Challenges {
    /// Challenge pages served.
    pub issued: u64,
    /// Solutions accepted (passes handed out).
    pub passed: u64,
    /// Submissions refused (bad, stale or insufficient work).
    pub failed: u64,
    /// Requests let through a block by a valid pass.
    pub pass_requests: u64,
}

/// The request counters: since the counters were made, and per minute for the last hour.
#[derive(Serialize)]
pub struct Activity {
    pub since_start: SinceStart,
    /// Oldest first; the last one is the current (unfinished) minute.
    pub per_minute: Vec<MinuteRow>,
}

#[derive(Serialize, Clone, Copy, Default)]
pub struct SinceStart {
    pub counted: u64,
    pub refused_site: u64,
    pub refused_page: u64,
    pub blocks_started_site: u64,
    pub blocks_started_page: u64,
    pub would_blocks: u64,
}

#[derive(Serialize, Clone, Copy)]
pub struct MinuteRow {
    #[serde(serialize_with = "ser_iso")]
    pub start: Micros,
    pub start_unix: i64,
    pub counted: u64,
    pub refused: u64,
    pub blocks_started: u64,
}

impl Activity {
    /// (counted, refused, blocks started) over the last hour.
    pub fn last_hour(&self) -> (u64, u64, u64) {
        self.per_minute.iter().fold((0, 0, 0), |(c, r, b), m| {
            (
                c.saturating_add(m.counted),
                r.saturating_add(m.refused),
                b.saturating_add(m.blocks_started),
            )
        })
    }
}

/// Serde's test for fields shown only when set (a network's prefix length).
fn is_zero(n: &u8) -> bool {
    *n == 0
}

/// How a row names its client: the address, or a network `net/len`.
pub fn who(client: IpAddr, prefix: u8) -> String {
    if prefix == 0 {
        client.to_string()
    } else {
        format!("{client}/{prefix}")
    }
}

#[derive(Serialize)]
pub struct WouldRow {
    /// The client, or the network address of a network's would-be block.
    pub client: IpAddr,
    /// A network's prefix length (absent for a client).
    #[serde(skip_serializing_if = "is_zero")]
    pub prefix: u8,
    pub rule: &'static str,
    pub score: i64,
    pub count: u32,
    #[serde(serialize_with = "ser_iso")]
    pub at: Micros,
    /// Whole seconds before the page was made.
    #[serde(skip)]
    pub ago: i64,
}

pub struct StoreSummary {
    pub backend: Backend,
    pub areas: [AreaSummary; 3],
    pub blocks: Blocks,
    pub top: Top,
}

/// Health of the store behind the areas.
#[derive(Serialize)]
pub struct Backend {
    #[serde(rename = "backend")]
    pub kind: &'static str,
    /// `ok`; `repaired` when the store had to drop corrupt records or take over the lock
    /// of a dead worker (it kept working, but a worker died mid-update: worth a look);
    /// `degraded (memory only: REASON)` when `DOSCache` names a file that could not be used
    /// (counting works, but blocks and generations will not survive a stop).
    pub state: String,
    /// `DOSCache` names a file: whether the store is that file (`false`: degraded to
    /// memory). `None` when the store is in memory by configuration.
    pub persistent: Option<bool>,
    pub area_bytes: usize,
    pub records_per_area: usize,
    /// Times the region was attached since it was created (by configuration passes).
    pub attaches: u64,
    #[serde(serialize_with = "ser_iso")]
    pub created: Micros,
    /// Corrupt records dropped and locks taken over from dead workers, all areas.
    #[serde(rename = "dropped_records")]
    pub dropped: u64,
    #[serde(rename = "lock_takeovers")]
    pub takeovers: u64,
    /// Requests served unchecked because the store could not be used in time.
    pub fail_opens: u64,
    /// Active blocks evicted because their sub-cache held nothing else (a store too small).
    pub blocks_evicted: u64,
    /// A farm engine named by `DOSCache` whose client is not running.
    #[serde(rename = "unused_provider")]
    pub provider: Option<String>,
    #[serde(rename = "shared_tier", serialize_with = "ser_tier")]
    pub shared: Option<SharedTier>,
}

impl Backend {
    /// One line for the store section.
    pub fn describe(&self) -> String {
        // A region re-attached by a later configuration pass kept the state of the earlier
        // one; the creation time tells since when counts and blocks have been kept.
        format!(
            "{}, {} bytes per area ({} records each), {} {} UTC",
            self.kind,
            self.area_bytes,
            self.records_per_area,
            if self.attaches > 0 {
                "attached; region created"
            } else {
                "created"
            },
            utc(self.created, ' ')
        )
    }

    pub fn repairs(&self) -> String {
        if self.dropped == 0 && self.takeovers == 0 {
            "none".to_string()
        } else {
            format!(
                "{} corrupt records dropped, {} locks taken over from dead workers",
                self.dropped, self.takeovers
            )
        }
    }
}

#[derive(Serialize)]
pub struct AreaSummary {
    /// `site`, `page`, `block` (JSON keys, HTML rows, metric labels).
    #[serde(skip)]
    pub name: &'static str,
    /// `Site`, `Page`, `Block` (`?auto` key prefix).
    #[serde(skip)]
    pub key: &'static str,
    pub capacity: u64,
    /// Occupied slots (expired records not yet reclaimed included).
    pub entries: u64,
    /// Entries per capacity in tenths of a percent.
    #[serde(rename = "fill_percent", serialize_with = "ser_percent")]
    pub fill_permille: u64,
    /// Unexpired records now.
    pub live: u64,
    pub inserted: u64,
    pub expired: u64,
    pub evicted: u64,
    pub hits: u64,
    pub misses: u64,
}

#[derive(Serialize)]
pub struct Blocks {
    pub active: usize,
    /// Block records whose block ended but whose generation is still remembered.
    pub remembered: usize,
    /// Active blocks, latest-ending first, at most [`BLOCKS_LISTED`].
    pub listed: Vec<BlockRow>,
    /// Active blocks of networks, per prefix length (24, 56, 48), among `active`.
    pub networks: Vec<(u8, usize)>,
}

#[derive(Serialize)]
pub struct BlockRow {
    /// The client, or the network address of a network's block.
    pub client: IpAddr,
    /// A network's prefix length (absent for a client).
    #[serde(skip_serializing_if = "is_zero")]
    pub prefix: u8,
    pub rule: &'static str,
    pub generation: u32,
    pub score: i64,
    pub count: u32,
    pub interval: u32,
    pub host: String,
    pub uri: String,
    #[serde(serialize_with = "ser_iso")]
    pub started: Micros,
    pub started_unix: i64,
    /// Seconds left, rounded up.
    pub ends_in: i64,
}

#[derive(Serialize)]
pub struct Top {
    pub site: Vec<Scorer>,
    pub page: Vec<Scorer>,
}

#[derive(Serialize)]
pub struct Scorer {
    /// The client, or the network address of a network's site record.
    pub client: IpAddr,
    /// A network's prefix length (absent for a client).
    #[serde(skip_serializing_if = "is_zero")]
    pub prefix: u8,
    pub host: String,
    /// Page records only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub score: i64,
    /// The count of the rule (site count, or this URL's page count).
    pub count: u32,
    pub interval: u32,
}

fn ser_iso<S: Serializer>(us: &Micros, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&iso(*us))
}

fn ser_percent<S: Serializer>(permille: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(*permille as f64 / 10.0)
}

fn ser_tier<S: Serializer>(tier: &Option<SharedTier>, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Tier<'a> {
        backend: &'a str,
        state: &'static str,
        down_since: Option<String>,
        failures: u64,
        round_trips: u64,
        counted: u64,
        events: u64,
    }
    tier.as_ref()
        .map(|t| Tier {
            backend: &t.label,
            state: t.state(),
            down_since: t.down_since.map(iso),
            failures: t.failures,
            round_trips: t.stats.round_trips,
            counted: t.stats.counted,
            events: t.stats.events,
        })
        .serialize(s)
}

fn rule_name(rule: Option<Counter>) -> &'static str {
    rule.map_or("unknown", Counter::as_str)
}

impl Summary {
    pub fn gather(src: &Sources) -> Summary {
        let now = src.now;
        let enabled = src.dir.enabled();
        let store = src.store.map(|s| StoreSummary::gather(s, src, now));
        let blocks_active = store.as_ref().map_or(0, |s| s.blocks.active);
        Summary {
            now,
            verdict: verdict(store.as_ref(), enabled),
            enabled,
            // Would-be blocks are logged and kept in a small shared ring (listed below).
            monitor_note: (enabled == Enabled::Monitor).then_some(
                "DOSEnabled monitor: every rule runs, and a would-be block is logged \
                 (error log, \"would block\") and listed below instead of refusing. \
                 The top scorers show who is near a count.",
            ),
            blocks_active,
            activity: src.metrics.map(|m| Activity::gather(m, now)),
            challenges: src.server.challenge.enabled.then(|| {
                let c = crate::challenge::stats()
                    .map(|c| c.counts())
                    .unwrap_or_default();
                Challenges {
                    issued: c.issued,
                    passed: c.passed,
                    failed: c.failed,
                    pass_requests: c.pass_requests,
                }
            }),
            under_attack: src.metrics.map(|m| UnderAttack::gather(m, src)),
            would_blocks: src
                .would_blocks
                .iter()
                .take(WOULD_LISTED)
                .map(|w| WouldRow {
                    client: w.client,
                    prefix: w.prefix,
                    rule: w.rule.as_str(),
                    score: w.score,
                    count: w.count,
                    at: w.at,
                    ago: now.saturating_sub(w.at).max(0) / MICROS,
                })
                .collect(),
            site_count: src.server.site_count,
            page_count: src.dir.page_count(),
            store,
            settings: canonical_lines(src.server, src.dir),
        }
    }
}

/// The headline.
fn verdict(store: Option<&StoreSummary>, enabled: Enabled) -> String {
    let Some(store) = store else {
        return "Store unavailable: requests are served uncounted (fail open)".to_string();
    };
    let blocked = match store.blocks.active {
        0 => "No client is blocked".to_string(),
        n => format!("{} blocked now", plural(n, "client", "clients")),
    };
    // `DOSEnabled off` is often set on the status URL itself only to leave its own requests
    // uncounted; it says nothing about the rest of the site, so no headline.
    match enabled {
        Enabled::On | Enabled::Off => blocked,
        Enabled::Monitor => format!("Monitor mode, nobody is refused · {blocked}"),
    }
}

impl Activity {
    fn gather(m: &Metrics, now: Micros) -> Activity {
        let t = m.totals();
        Activity {
            since_start: SinceStart {
                counted: t.counted,
                refused_site: t.refused_site,
                refused_page: t.refused_page,
                blocks_started_site: t.started_site,
                blocks_started_page: t.started_page,
                would_blocks: t.would_blocks,
            },
            per_minute: m
                .last_hour(now)
                .into_iter()
                .map(|x| MinuteRow {
                    start: x.start,
                    start_unix: x.start.div_euclid(MICROS),
                    counted: x.counted,
                    refused: x.refused,
                    blocks_started: x.blocks_started,
                })
                .collect(),
        }
    }
}

impl StoreSummary {
    fn gather(store: &Store, src: &Sources, now: Micros) -> StoreSummary {
        let (server, dir, shared) = (src.server, src.dir, src.shared);
        let areas = [
            (Area::Site, "site", "Site"),
            (Area::Page, "page", "Page"),
            (Area::Block, "block", "Block"),
        ]
        .map(|(area, name, key)| {
            let s = store.stats(area);
            AreaSummary {
                name,
                key,
                capacity: s.capacity,
                entries: s.entries,
                fill_permille: permille(s.entries, s.capacity),
                live: store.live_entries(area, now),
                inserted: s.inserted,
                expired: s.expired,
                evicted: s.evicted,
                hits: s.hits,
                misses: s.misses,
            }
        });
        // Latest-ending first: the active blocks come before the remembered ones.
        let block_records = store.snapshot(Area::Block, now, usize::MAX);
        let active = block_records.iter().filter(|b| b.block_until > now).count();
        let remembered = block_records.len() - active;
        let networks = crate::prefix::LEVELS
            .iter()
            .map(|&(_, len, _)| {
                let n = block_records
                    .iter()
                    .filter(|b| b.block_until > now && b.prefix == len)
                    .count();
                (len, n)
            })
            .collect();
        let listed = block_records
            .into_iter()
            .filter(|b| b.block_until > now)
            .take(BLOCKS_LISTED)
            .map(|b| BlockRow {
                client: b.client,
                prefix: b.prefix,
                rule: rule_name(b.rule),
                generation: b.generation,
                score: b.score,
                count: b.count,
                interval: b.interval,
                started: b.origin,
                started_unix: b.origin.div_euclid(MICROS),
                ends_in: secs_until(b.block_until, now),
                host: b.host,
                uri: b.path,
            })
            .collect();
        // A window just restarted (score 0) is nobody's concern.
        let top = |area, count: u32| -> Vec<Scorer> {
            store
                .snapshot(area, now, TOP)
                .into_iter()
                .filter(|r| r.score > 0 && !crate::challenge::ledger::is_ledger_host(&r.host))
                .map(|r: RecordView| Scorer {
                    client: r.client,
                    prefix: r.prefix,
                    host: r.host,
                    path: (area == Area::Page).then_some(r.path),
                    score: r.score,
                    // A network's site record counts against its own threshold.
                    count: match r.prefix {
                        0 => count,
                        len => server.prefix_counts.count(len).unwrap_or(count),
                    },
                    interval: r.interval,
                })
                .collect()
        };
        let (dropped, takeovers) = Area::ALL.iter().fold((0u64, 0u64), |(d, t), a| {
            let (d2, t2) = store.repairs(*a);
            (d.saturating_add(d2), t.saturating_add(t2))
        });
        let cache = &server.cache;
        StoreSummary {
            backend: Backend {
                kind: "shared memory",
                state: match src.memory_only {
                    Some(reason) => format!("degraded (memory only: {reason})"),
                    None if dropped == 0 && takeovers == 0 => "ok".to_string(),
                    None => "repaired".to_string(),
                },
                persistent: matches!(cache, CacheSpec::File { .. })
                    .then_some(src.memory_only.is_none()),
                area_bytes: store.area_bytes(),
                records_per_area: store.capacity(),
                attaches: store.attaches(),
                created: store.created(),
                dropped,
                takeovers,
                fail_opens: store.fail_opens(),
                blocks_evicted: store.blocks_evicted(),
                provider: match (cache, shared) {
                    (CacheSpec::Farm(_), None) => Some(cache.to_string()),
                    _ => None,
                },
                shared: shared.cloned(),
            },
            areas,
            blocks: Blocks {
                active,
                remembered,
                listed,
                networks,
            },
            top: Top {
                site: top(Area::Site, server.site_count),
                page: top(Area::Page, dir.page_count()),
            },
        }
    }
}
