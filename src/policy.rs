//! The decisions, in plain Rust over the store and the settings: is this client blocked, does
//! this request cross a count, what do the penalties add, when does a block start.
//! The FFI layer gathers the request's facts, calls these, and turns the answer into a
//! response; nothing here knows about httpd.
#![forbid(unsafe_code)]
use std::ffi::CStr;
use std::net::IpAddr;

use crate::config::{DirConfig, Enabled, ServerSettings};
use crate::farm::{self, Ask, Grant};
use crate::store::{BlockInfo, BlockState, ClientKey, Counter, Lease, Micros, SiteGuard, Store};

/// The facts of one request that the rules look at.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The client after normalisation and IPv6 grouping.
    pub client: IpAddr,
    /// Host, lower-cased, port stripped.
    pub host: &'a str,
    /// The page: canonical path (with the query string when DOSCanonical is off).
    pub path: &'a str,
    /// The client's block key when already hashed this request (post_read_request did).
    pub key: Option<&'a ClientKey>,
}

/// A refused request: what to answer and why.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub status: u16,
    pub rule: Counter,
    pub count: u32,
    pub interval: u32,
    pub until: Micros,
    /// Set when this very request started the block (its start actions are owed once).
    pub started: Option<Started>,
}

/// A block this request started, with what the block file and the log line need.
#[derive(Clone, Debug)]
pub struct Started {
    pub block: BlockState,
    /// Origin of the window whose count was crossed (µs).
    pub origin: Micros,
}

/// What counting or scoring concluded.
#[derive(Clone, Debug)]
pub enum Outcome {
    Pass,
    Refuse(Refusal),
    /// Monitor mode: the rule would have blocked `client` (or the network `client`/`prefix`
    /// when `prefix` > 0); nothing was refused.
    WouldBlock {
        rule: Counter,
        client: IpAddr,
        prefix: u8,
        score: i64,
        count: u32,
    },
}

impl Refusal {
    fn from_block(status: u16, b: &BlockState) -> Refusal {
        Refusal {
            status,
            rule: b.rule,
            count: b.count,
            interval: b.interval,
            until: b.until,
            started: None,
        }
    }

    /// Whole seconds until the block ends, rounded up (at least 1): `Retry-After` is always true.
    pub fn retry_after(&self, now: Micros) -> u64 {
        let left = (self.until - now).max(0) as u64;
        left.div_ceil(1_000_000).max(1)
    }

    /// The response headers of a refusal (besides `Connection: close`, which the FFI sets by
    /// turning keep-alive off). Names are C strings so they can be handed to httpd as they are.
    pub fn headers(&self, now: Micros) -> [(&'static CStr, String); 4] {
        let t = self.retry_after(now);
        [
            (c"Retry-After", t.to_string()),
            (
                c"RateLimit-Policy",
                format!("\"shield\";q={};w={}", self.count, self.interval),
            ),
            (c"RateLimit", format!("\"shield\";r=0;t={t}")),
            (c"Cache-Control", "no-store".to_string()),
        ]
    }
}

/// post_read_request: refuse a client with an active block. Whitelisted clients never get here.
pub fn blocked(
    store: &Store,
    server: &ServerSettings,
    client: IpAddr,
    now: Micros,
) -> Option<Refusal> {
    blocked_key(store, server, &client_key(store, server, client), now)
}

/// The client's key, with the networks this server counts it in (`DOSPrefixCount`).
#[inline(always)]
pub fn client_key(store: &Store, server: &ServerSettings, client: IpAddr) -> ClientKey {
    store.client_key_in(
        client,
        server.prefix_counts.lens_for(client, server.ipv6_prefix),
    )
}

/// [`blocked`] with the client's key already hashed (kept for the request's later hooks).
#[inline(always)]
pub fn blocked_key(
    store: &Store,
    server: &ServerSettings,
    key: &ClientKey,
    now: Micros,
) -> Option<Refusal> {
    store
        .active_block_of(key, now)
        .map(|b| Refusal::from_block(server.http_status, &b))
}

/// The farm's engine as the decisions see it ([`crate::farm::Farm`] in the server; a map in
/// tests): grants for counters whose leases are empty, and the client's generation there.
pub trait Shared {
    /// `None`: the engine cannot answer now (the server counts alone, exactly).
    fn grant(&self, client: &str, asks: &[Ask]) -> Option<(Vec<Grant>, u32)>;

    /// An addition was decided through the farm (from a lease or a grant).
    fn counted(&self) {}

    /// Restarts these counters (key, interval) in the engine: a would-be block in monitor
    /// mode, which no announcement restarts.
    fn restart(&self, _counters: &[(String, u32)]) {}
}

/// What one request adds to its client's records; `None` leaves that record untouched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub site: Option<i64>,
    pub page: Option<i64>,
}

impl Tally {
    /// fixups: the request itself, 1 on each record.
    pub const REQUEST: Tally = Tally {
        site: Some(1),
        page: Some(1),
    };

    /// fixups under `DOSUnderAttack`: a request without a pass that is not a browser
    /// navigation counts `weight` times.
    pub const fn weighted(weight: i64) -> Tally {
        Tally {
            site: Some(weight),
            page: Some(weight),
        }
    }

    /// log_transaction, after fixups counted the request: the penalties alone.
    pub fn penalties(p: &Penalties) -> Tally {
        Tally {
            site: p.site_status,
            page: p.page_delta(),
        }
    }

    /// log_transaction for a request httpd ended before fixups (401, 403, 400, 405, 413 …):
    /// the request itself and its penalties, so it counts exactly once too.
    pub fn late(p: &Penalties) -> Tally {
        Tally {
            site: Some(p.site_status.unwrap_or(0).saturating_add(1)),
            page: Some(p.page_delta().unwrap_or(0).saturating_add(1)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.site.is_none() && self.page.is_none()
    }
}

/// fixups: add 1 to the site and page records; refuse at once when a count is crossed.
pub fn count(
    store: &Store,
    server: &ServerSettings,
    dir: &DirConfig,
    req: &Request,
    now: Micros,
    farm: Option<&dyn Shared>,
) -> Outcome {
    tally(store, server, dir, req, Tally::REQUEST, now, farm)
}

/// Adds a tally to the client's records and decides, all while holding the lock of the
/// client's site record ([`Store::lock_site`]): the block check, the additions and a block
/// start are one step, so concurrent requests of one client to one site are decided one
/// after the other and exactly the count is served.
///
/// A client blocked by the time its request is decided (another worker started the block
/// after this request passed post_read_request) is refused and not counted: counting it
/// would land in the window the block just restarted.
///
/// In a farm, the client's counts are the farm's: each addition is spent from this server's
/// lease of the client's budget, or granted by the engine (see [`crate::farm`]), and a count is
/// crossed when the engine has nothing left to grant. This server's records count all along,
/// and decide alone whenever the engine cannot answer.
pub fn tally(
    store: &Store,
    server: &ServerSettings,
    dir: &DirConfig,
    req: &Request,
    tally: Tally,
    now: Micros,
    farm: Option<&dyn Shared>,
) -> Outcome {
    if dir.enabled() == Enabled::Off || tally.is_empty() {
        return Outcome::Pass;
    }
    let owned;
    let key = match req.key {
        Some(key) => key,
        None => {
            owned = client_key(store, server, req.client);
            &owned
        }
    };
    // Fail open when the store cannot be locked in time (the store counts it).
    let Some(site) = store.lock_site(key, req.host, req.path) else {
        return Outcome::Pass;
    };
    if let Some(b) = site.block(now) {
        return Outcome::Refuse(Refusal::from_block(server.http_status, &b));
    }
    let mut page_score = tally.page.and_then(|d| {
        site.add_page(d, dir.page_interval(), now)
            .map(|h| (h.score, h.origin))
    });
    let mut site_score = tally.site.map(|d| {
        let h = site.add_site(d, server.site_interval, now);
        (h.score, h.origin)
    });
    // The client's networks count what its site record counts, each on this site.
    let mut nets = [None; 2];
    if let Some(d) = tally.site {
        for (i, net) in nets.iter_mut().enumerate() {
            if site.counts_net(i) {
                *net = site
                    .add_net(i, d, server.site_interval, now)
                    .map(|h| (h.score, h.origin));
            }
        }
    }
    // The farm decides the client's own counts while it answers (networks are this server's).
    let shared = farm.and_then(|f| spend_shared(&site, f, server, dir, req, tally, now));
    if let Some(v) = &shared {
        let cross = |crossed: bool, score: Option<(i64, Micros)>, count: u32| {
            score.map(|(s, origin)| {
                let over = i64::from(count).saturating_add(1);
                (
                    if crossed {
                        s.max(over)
                    } else {
                        s.min(over - 1)
                    },
                    origin,
                )
            })
        };
        site_score = cross(v.site, site_score, server.site_count);
        page_score = cross(v.page, page_score, dir.page_count());
        for (i, net) in nets.iter_mut().enumerate() {
            let count = site.net_len(i).and_then(|l| server.prefix_counts.count(l));
            if let (Some(crossed), Some(count)) = (v.nets[i], count) {
                *net = cross(crossed, *net, count);
            }
        }
    }
    let decision = Decision {
        site: &site,
        server,
        dir,
        req,
        now,
        farm: farm.filter(|_| shared.is_some()),
    };
    decision.judge(
        Scores {
            site: site_score,
            page: page_score,
            nets,
        },
        shared.map_or(0, |v| v.generation),
    )
}

/// What the farm said of one request's additions.
#[derive(Clone, Copy, Debug, Default)]
struct FarmVerdict {
    /// The site count (page count) is crossed farm-wide.
    site: bool,
    page: bool,
    /// Network `i`'s count (as [`SiteGuard::nets`] numbers them) is crossed farm-wide;
    /// `None` where this server decides the network alone.
    nets: [Option<bool>; 2],
    /// The client's generation remembered in the engine (0: none).
    generation: u32,
}

/// The farm's name of the client a decision is about (a pass holder counts apart from its
/// client, as in the store).
fn farm_name(site: &SiteGuard) -> String {
    let name = farm::client_name(site.client(), 0);
    if site.is_pass_holder() {
        format!("{name}~pass")
    } else {
        name
    }
}

/// Spends the tally from the farm's leases of the client and of its networks (see
/// [`spend_client`], [`spend_net`]); `None` when the engine cannot answer for the client
/// (this server decides alone).
fn spend_shared(
    site: &SiteGuard,
    farm: &dyn Shared,
    server: &ServerSettings,
    dir: &DirConfig,
    req: &Request,
    tally: Tally,
    now: Micros,
) -> Option<FarmVerdict> {
    let mut verdict = spend_client(site, farm, server, dir, req, tally, now)?;
    if let Some(delta) = tally.site.filter(|d| *d > 0) {
        for (i, crossed) in verdict.nets.iter_mut().enumerate() {
            *crossed = spend_net(site, farm, server, req, i, delta, now);
        }
    }
    Some(verdict)
}

/// Spends `delta` from the farm's lease of network `i`'s budget on this site, asking the
/// engine under the network's name (`192.0.2.0/24`) when it is empty: whether the count is
/// crossed farm-wide; `None` when the decision does not count in that network or the engine
/// cannot answer (this server's count decides). Pass holders count under the network's name
/// with `~pass` (`192.0.2.0/24~pass`), as a client's do: in the engine the blocked network's
/// own name is granted nothing, while its pass holders are let through its block.
fn spend_net(
    site: &SiteGuard,
    farm: &dyn Shared,
    server: &ServerSettings,
    req: &Request,
    i: usize,
    delta: i64,
    now: Micros,
) -> Option<bool> {
    let (_, net, len) = site.nets().find(|n| n.0 == i)?;
    let count = server.prefix_counts.count(len)?;
    let void_before = site.net_lease_void_before(i, now);
    let Some(lease) = site.spend_net_lease(i, delta, now, void_before) else {
        return Some(false);
    };
    let mut name = farm::client_name(net, len);
    if site.is_pass_holder() {
        name.push_str("~pass");
    }
    let ask = Ask {
        key: farm::counter_key(&name, Counter::Site, req.host, ""),
        limit: count,
        interval: server.site_interval,
        delta,
        lease: true,
        left_seen: lease.left_seen.map(i64::from),
    };
    let (grants, _) = farm.grant(&name, std::slice::from_ref(&ask))?;
    let g = grants.first()?;
    let crossed = g.units < delta;
    site.set_net_lease(i, granted_lease(g, delta, crossed, now));
    Some(crossed)
}

/// The lease a grant leaves after this request spent `delta` of it.
fn granted_lease(g: &Grant, delta: i64, crossed: bool, now: Micros) -> Lease {
    Lease {
        units: if crossed {
            0
        } else {
            (g.units - delta).clamp(0, i64::from(u32::MAX)) as u32
        },
        until: now.saturating_add(g.ttl_ms.saturating_mul(1000)),
        left_seen: Some(g.left.clamp(0, i64::from(u32::MAX)) as u32),
        granted: now,
    }
}

/// Spends the tally from the client's leases, asking the engine (one call for both counters)
/// for those that are empty; `None` when it cannot answer (this server decides alone).
/// Additions of 0 or less are this server's alone: the farm's budgets only shrink.
fn spend_client(
    site: &SiteGuard,
    farm: &dyn Shared,
    server: &ServerSettings,
    dir: &DirConfig,
    req: &Request,
    tally: Tally,
    now: Micros,
) -> Option<FarmVerdict> {
    let counters = [
        (
            Counter::Site,
            tally.site,
            server.site_count,
            server.site_interval,
            "",
        ),
        (
            Counter::Page,
            tally.page,
            dir.page_count(),
            dir.page_interval(),
            req.path,
        ),
    ];
    let mut asks = Vec::new();
    let mut asked = Vec::new();
    let mut name: Option<String> = None;
    let mut block_start: Option<Micros> = None;
    for (counter, delta, limit, interval, path) in counters {
        let Some(delta) = delta.filter(|d| *d > 0) else {
            continue;
        };
        let void_before = *block_start.get_or_insert_with(|| site.last_block_start());
        let Some(lease) = site.spend_lease(counter, delta, now, void_before) else {
            continue;
        };
        // The client's name is made only when the engine is asked (not on the lease path).
        let name = name.get_or_insert_with(|| farm_name(site));
        asks.push(Ask {
            key: farm::counter_key(name, counter, req.host, path),
            limit,
            interval,
            delta,
            // Requests and penalties alike take a lease: units are units.
            lease: true,
            left_seen: lease.left_seen.map(i64::from),
        });
        asked.push((counter, delta));
    }
    let mut verdict = FarmVerdict::default();
    if asks.is_empty() {
        farm.counted();
        return Some(verdict);
    }
    // A block that arrived since this decision looked (another server's, announced while this
    // request was on its way) voids the leases and refuses the request: no call needed.
    if site.block(now).is_some() {
        verdict.site = true;
        verdict.page = true;
        return Some(verdict);
    }
    let (grants, generation) = farm.grant(name.as_deref().unwrap_or_default(), &asks)?;
    farm.counted();
    verdict.generation = generation;
    for ((counter, delta), g) in asked.into_iter().zip(grants) {
        let crossed = g.units < delta;
        match counter {
            Counter::Site => verdict.site |= crossed,
            Counter::Page => verdict.page |= crossed,
        }
        site.set_lease(counter, granted_lease(&g, delta, crossed, now));
    }
    Some(verdict)
}

/// What the penalties of one finished request added.
#[derive(Clone, Debug, Default)]
pub struct Penalties {
    /// Site status penalty applied (score).
    pub site_status: Option<i64>,
    /// Page status penalty applied (score).
    pub page_status: Option<i64>,
    /// Deadline step applied: (threshold µs, score).
    pub deadline: Option<(u64, i64)>,
}

impl Penalties {
    pub fn is_empty(&self) -> bool {
        self.site_status.is_none() && self.page_status.is_none() && self.deadline.is_none()
    }

    /// What the page record gets: its status penalty plus the deadline step (saturating:
    /// scores may be as large as an i64).
    pub fn page_delta(&self) -> Option<i64> {
        match (self.page_status, self.deadline) {
            (None, None) => None,
            (status, deadline) => Some(
                status
                    .unwrap_or(0)
                    .saturating_add(deadline.map_or(0, |d| d.1)),
            ),
        }
    }
}

/// The penalties a finished request earns, from its final status and duration.
#[inline(always)]
pub fn penalties(
    server: &ServerSettings,
    dir: &DirConfig,
    status: u16,
    duration_us: u64,
) -> Penalties {
    Penalties {
        site_status: server.site_status_score(status),
        page_status: dir.page_status_score(status),
        deadline: dir.deadline_score(duration_us),
    }
}

/// log_transaction, for a request fixups counted: apply its penalties; a record pushed over
/// its count starts the block now, so the client's next request is refused.
pub fn score(
    store: &Store,
    server: &ServerSettings,
    dir: &DirConfig,
    req: &Request,
    p: &Penalties,
    now: Micros,
    farm: Option<&dyn Shared>,
) -> Outcome {
    tally(store, server, dir, req, Tally::penalties(p), now, farm)
}

/// The site and page scores a tally left: (score, window origin).
#[derive(Clone, Copy, Debug)]
struct Scores {
    site: Option<(i64, Micros)>,
    page: Option<(i64, Micros)>,
    /// The client's networks' site records, as [`SiteGuard::nets`] numbers them.
    nets: [Option<(i64, Micros)>; 2],
}

/// Which record crossed its count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Crossed {
    Page,
    Site,
    /// Network `i` of the decision (its site record).
    Net(usize),
}

/// A crossed count: which, the score, the window's origin, the count and its interval.
#[derive(Clone, Copy, Debug)]
struct Crossing {
    what: Crossed,
    score: i64,
    origin: Micros,
    count: u32,
    interval: u32,
}

/// One request's decision, under the lock of its client's site record.
struct Decision<'a, 's> {
    site: &'a SiteGuard<'s>,
    server: &'a ServerSettings,
    dir: &'a DirConfig,
    req: &'a Request<'a>,
    now: Micros,
    /// The farm, when it decided this request's counts.
    farm: Option<&'a dyn Shared>,
}

impl Decision<'_, '_> {
    /// The count the scores cross: the page first, then the client's site, then its
    /// networks, narrowest first (the narrowest block that stops the request).
    fn crossed(&self, scores: Scores) -> Option<Crossing> {
        let (server, dir) = (self.server, self.dir);
        let over = |what, score: Option<(i64, Micros)>, count: u32, interval| {
            score
                .filter(|(s, _)| *s > i64::from(count))
                .map(|(score, origin)| Crossing {
                    what,
                    score,
                    origin,
                    count,
                    interval,
                })
        };
        over(
            Crossed::Page,
            scores.page,
            dir.page_count(),
            dir.page_interval(),
        )
        .or_else(|| {
            over(
                Crossed::Site,
                scores.site,
                server.site_count,
                server.site_interval,
            )
        })
        .or_else(|| {
            // Only a network that was counted has a score (and so a count to cross).
            (0..scores.nets.len()).find_map(|i| {
                scores.nets[i]?;
                let count = server.prefix_counts.count(self.site.net_len(i)?)?;
                over(Crossed::Net(i), scores.nets[i], count, server.site_interval)
            })
        })
    }

    /// Compare the updated records with their counts (block when score > count); runs under
    /// the site lock, so no other decision of this client on this site runs meanwhile.
    /// `farm_generation`: the client's generation remembered in the farm's engine (0: none).
    fn judge(&self, scores: Scores, farm_generation: u32) -> Outcome {
        let Some(crossing) = self.crossed(scores) else {
            return Outcome::Pass;
        };
        let Crossing {
            what,
            score,
            origin,
            count,
            interval,
        } = crossing;
        let rule = if what == Crossed::Page {
            Counter::Page
        } else {
            Counter::Site
        };
        let (server, req, now) = (self.server, self.req, self.now);
        // Starting a block (or a would-be block) restarts the crossed window, so a client
        // that waits out Retry-After and then behaves is served again.
        match what {
            Crossed::Page => self.site.reset_page(now),
            Crossed::Site => self.site.reset_site(now),
            Crossed::Net(i) => return self.judge_net(i, crossing),
        }
        if self.dir.enabled() == Enabled::Monitor {
            // No block restarts the farm's count (a block's announcement does): restart it
            // here, so the would-be block is one line, not one per request that follows.
            if let Some(f) = self.farm {
                let name = farm_name(self.site);
                f.restart(&[(farm::counter_key(&name, rule, req.host, req.path), interval)]);
            }
            return Outcome::WouldBlock {
                rule,
                client: req.client,
                prefix: 0,
                score,
                count,
            };
        }
        let info = BlockInfo {
            rule,
            score,
            count,
            interval,
            host: req.host,
            uri: req.path,
        };
        // In a farm, the generation another server reached counts too.
        let shared_generation = farm_generation.saturating_add(1);
        let period_for = |g: u32| server.period_for_generation(g.max(shared_generation));
        let Some(block) =
            self.site
                .start_block(&info, now, &period_for, server.block_memory_secs())
        else {
            // A block is active after all (an administrator's, or one a decision of this
            // client on another site started since the check): refused by that one. Else the
            // block's lock could not be had: fail open.
            return match self.site.block(now) {
                Some(b) => Outcome::Refuse(Refusal::from_block(server.http_status, &b)),
                None => Outcome::Pass,
            };
        };
        Outcome::Refuse(Refusal {
            status: server.http_status,
            rule,
            count,
            interval,
            until: block.until,
            started: Some(Started { block, origin }),
        })
    }

    /// A network's count crossed (this server's, or the farm's): block the network; in a
    /// farm its block is announced like a client's, with the network's count restarted.
    fn judge_net(&self, i: usize, c: Crossing) -> Outcome {
        let (server, req, now) = (self.server, self.req, self.now);
        self.site.reset_net(i, now);
        let Some((_, net, len)) = self.site.nets().find(|n| n.0 == i) else {
            return Outcome::Pass;
        };
        if self.dir.enabled() == Enabled::Monitor {
            // As for a client: restart the farm's count, one would-be block line per window.
            if let Some(f) = self.farm {
                let name = farm::client_name(net, len);
                let key = farm::counter_key(&name, Counter::Site, req.host, "");
                f.restart(&[(key, c.interval)]);
            }
            return Outcome::WouldBlock {
                rule: Counter::Site,
                client: net,
                prefix: len,
                score: c.score,
                count: c.count,
            };
        }
        let info = BlockInfo {
            rule: Counter::Site,
            score: c.score,
            count: c.count,
            interval: c.interval,
            host: req.host,
            uri: req.path,
        };
        let period_for = |g: u32| server.period_for_generation(g);
        let Some(block) =
            self.site
                .start_net_block(i, &info, now, &period_for, server.block_memory_secs())
        else {
            return match self.site.block(now) {
                Some(b) => Outcome::Refuse(Refusal::from_block(server.http_status, &b)),
                None => Outcome::Pass,
            };
        };
        Outcome::Refuse(Refusal {
            status: server.http_status,
            rule: Counter::Site,
            count: c.count,
            interval: c.interval,
            until: block.until,
            started: Some(Started {
                block,
                origin: c.origin,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Counter;

    const T0: Micros = 1_800_000_000_000_000;

    fn settings(lines: &[&str]) -> (ServerSettings, DirConfig) {
        let (server, dir) = crate::config::from_lines(lines).unwrap();
        (server.resolve(), dir)
    }

    fn req(client: &str) -> Request<'static> {
        Request {
            client: client.parse().unwrap(),
            host: "example.com",
            path: "/page",
            key: None,
        }
    }

    #[test]
    fn the_request_after_the_count_is_refused_and_starts_one_block() {
        let store = Store::create(65536).unwrap();
        let (server, dir) = settings(&[
            "DOSPageCount 2",
            "DOSPageInterval 60",
            "DOSBlockingPeriod 30",
        ]);
        let r = req("192.0.2.1");
        assert!(matches!(
            count(&store, &server, &dir, &r, T0, None),
            Outcome::Pass
        ));
        assert!(matches!(
            count(&store, &server, &dir, &r, T0 + 1, None),
            Outcome::Pass
        ));
        match count(&store, &server, &dir, &r, T0 + 2, None) {
            Outcome::Refuse(refusal) => {
                let started = refusal
                    .started
                    .clone()
                    .expect("this request started the block");
                assert_eq!(started.block.generation, 1);
                assert_eq!(refusal.retry_after(T0 + 2), 30);
                assert_eq!(refusal.headers(T0 + 2)[1].1, "\"shield\";q=2;w=60");
            }
            other => panic!("{other:?}"),
        }
        // An in-flight request that passed post_read_request before the block: refused,
        // not counted into the window the block restarted.
        match count(&store, &server, &dir, &r, T0 + 3, None) {
            Outcome::Refuse(refusal) => assert!(refusal.started.is_none()),
            other => panic!("{other:?}"),
        }
        let page = store
            .add(
                Counter::Page,
                &crate::store::KeyParts {
                    client: r.client,
                    host: r.host,
                    path: r.path,
                },
                0,
                60,
                T0 + 4,
            )
            .unwrap();
        assert_eq!(page.score, 0);
    }

    #[test]
    fn huge_penalties_saturate_instead_of_wrapping() {
        let store = Store::create(65536).unwrap();
        let (server, dir) = settings(&[
            "DOSPageCount 5",
            "DOSPageStatus 404 9223372036854775807",
            "DOSPageDeadline 0.001 9223372036854775807",
            "DOSSiteStatusPenalty 404 9223372036854775807",
        ]);
        let p = penalties(&server, &dir, 404, 2_000);
        assert_eq!(p.page_delta(), Some(i64::MAX));
        let late = Tally::late(&p);
        assert_eq!(late.page, Some(i64::MAX));
        assert_eq!(late.site, Some(i64::MAX));
        let r = req("192.0.2.9");
        // Twice: the second addition lands on a score of i64::MAX already (a fresh window
        // after the first block restarted it, then more).
        match tally(&store, &server, &dir, &r, late, T0, None) {
            Outcome::Refuse(refusal) => assert_eq!(refusal.started.unwrap().block.score, i64::MAX),
            other => panic!("{other:?}"),
        }
        let other = req("192.0.2.10");
        let once = Tally {
            site: Some(i64::MAX),
            page: None,
        };
        for i in 0..2 {
            let _ = tally(&store, &server, &dir, &other, once, T0 + i, None);
        }
        let big = Tally {
            site: None,
            page: Some(i64::MIN),
        };
        // A huge negative score floors at 0, and never panics.
        assert!(matches!(
            tally(&store, &server, &dir, &req("192.0.2.11"), big, T0, None),
            Outcome::Pass
        ));
    }

    #[test]
    fn concurrent_requests_of_one_client_serve_exactly_the_count() {
        let store = std::sync::Arc::new(Store::create(65536).unwrap());
        // Every round's client is in one /24: that network is not counted here.
        let (server, dir) = settings(&[
            "DOSPageCount 10",
            "DOSPageInterval 60",
            "DOSBlockingPeriod 60",
            "DOSPrefixCount 24 off",
        ]);
        let (server, dir) = (std::sync::Arc::new(server), std::sync::Arc::new(dir));
        for round in 0..50u8 {
            let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let (store, server, dir, served) =
                        (store.clone(), server.clone(), dir.clone(), served.clone());
                    std::thread::spawn(move || {
                        let r = Request {
                            client: IpAddr::from([198, 51, 100, round]),
                            host: "example.com:80",
                            path: "/page",
                            key: None,
                        };
                        for i in 0..5 {
                            let now = T0 + i64::from(t) * 10 + i;
                            if matches!(count(&store, &server, &dir, &r, now, None), Outcome::Pass)
                            {
                                served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(
                served.load(std::sync::atomic::Ordering::Relaxed),
                10,
                "round {round}"
            );
        }
        assert_eq!(store.fail_opens(), 0);
    }

    #[test]
    fn a_block_started_on_one_site_refuses_the_client_on_another() {
        let store = Store::create(65536).unwrap();
        let (server, dir) = settings(&["DOSPageCount 1", "DOSBlockingPeriod 30"]);
        let a = Request {
            host: "a.example:80",
            ..req("192.0.2.20")
        };
        let b = Request {
            host: "b.example:80",
            ..req("192.0.2.20")
        };
        // Both requests passed post_read_request; then a's second request crosses and blocks.
        assert!(matches!(
            count(&store, &server, &dir, &b, T0, None),
            Outcome::Pass
        ));
        assert!(matches!(
            count(&store, &server, &dir, &a, T0, None),
            Outcome::Pass
        ));
        match count(&store, &server, &dir, &a, T0 + 1, None) {
            Outcome::Refuse(r) => assert!(r.started.is_some()),
            other => panic!("{other:?}"),
        }
        // b's decision, under b's own site lock, sees a's block: refused, not counted.
        match count(&store, &server, &dir, &b, T0 + 2, None) {
            Outcome::Refuse(r) => assert!(r.started.is_none()),
            other => panic!("{other:?}"),
        }
        let page = crate::store::KeyParts {
            client: b.client,
            host: b.host,
            path: b.path,
        };
        assert_eq!(
            store
                .add(Counter::Page, &page, 0, 60, T0 + 3)
                .unwrap()
                .score,
            1
        );
    }

    #[test]
    fn concurrent_requests_to_two_sites_never_serve_more_than_a_count_on_either() {
        let store = std::sync::Arc::new(Store::create(65536).unwrap());
        let (server, dir) = settings(&[
            "DOSPageCount 10",
            "DOSBlockingPeriod 60",
            "DOSPrefixCount 24 off",
        ]);
        let (server, dir) = (std::sync::Arc::new(server), std::sync::Arc::new(dir));
        for round in 0..50u8 {
            let served: std::sync::Arc<[std::sync::atomic::AtomicUsize; 2]> =
                std::sync::Arc::new(Default::default());
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let (store, server, dir, served) =
                        (store.clone(), server.clone(), dir.clone(), served.clone());
                    std::thread::spawn(move || {
                        let site = t % 2;
                        let r = Request {
                            client: IpAddr::from([198, 51, 101, round]),
                            host: ["a.example:80", "b.example:80"][site],
                            path: "/page",
                            key: None,
                        };
                        for i in 0..6 {
                            let now = T0 + i64::from(t as u8) * 10 + i;
                            if matches!(count(&store, &server, &dir, &r, now, None), Outcome::Pass)
                            {
                                served[site].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let n = served
                .iter()
                .map(|s| s.load(std::sync::atomic::Ordering::Relaxed))
                .collect::<Vec<_>>();
            // 24 requests per site: the first site to cross blocks the client everywhere.
            assert!(n.iter().all(|&n| n <= 10), "round {round}: {n:?}");
            assert!(n.contains(&10), "round {round}: {n:?}");
        }
        assert_eq!(store.fail_opens(), 0);
    }

    /// Requests of `clients` (one thread each, `per` requests each, truly parallel) at
    /// nearly the same time: how many were served.
    fn served_in_parallel(
        store: &std::sync::Arc<Store>,
        server: &std::sync::Arc<ServerSettings>,
        dir: &std::sync::Arc<DirConfig>,
        clients: Vec<IpAddr>,
        per: usize,
    ) -> usize {
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(t, client)| {
                let (store, server, dir, served) =
                    (store.clone(), server.clone(), dir.clone(), served.clone());
                std::thread::spawn(move || {
                    let r = Request {
                        client,
                        host: "example.com:80",
                        path: "/page",
                        key: None,
                    };
                    for i in 0..per {
                        let now = T0 + (t * per + i) as i64;
                        if blocked(&store, &server, client, now).is_none()
                            && matches!(count(&store, &server, &dir, &r, now, None), Outcome::Pass)
                        {
                            served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        served.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn a_slash24_rotating_through_its_addresses_is_served_exactly_its_prefix_count() {
        for area in [65536, 16384] {
            let store = std::sync::Arc::new(Store::create(area).unwrap());
            let (server, dir) = settings(&[
                "DOSSiteCount 20",
                "DOSSiteInterval 60",
                "DOSPageCount 1000",
                "DOSPrefixCount 24 50",
                "DOSBlockingPeriod 60",
            ]);
            let (server, dir) = (std::sync::Arc::new(server), std::sync::Arc::new(dir));
            // 16 addresses of one /24, 10 requests each: no address crosses its own 20.
            let clients = (0..16u8)
                .map(|i| IpAddr::from([203, 0, 113, i * 16]))
                .collect();
            assert_eq!(served_in_parallel(&store, &server, &dir, clients, 10), 50);
            // The whole /24 is blocked, as one network block; the next /24 is not.
            let b = blocked(&store, &server, IpAddr::from([203, 0, 113, 255]), T0 + 500)
                .expect("the /24 is blocked");
            assert_eq!((b.rule, b.count), (Counter::Site, 50));
            let nb = store
                .active_net_block(IpAddr::from([203, 0, 113, 0]), 24, T0 + 500)
                .unwrap();
            assert_eq!((nb.prefix, nb.generation), (24, 1));
            assert!(blocked(&store, &server, IpAddr::from([203, 0, 114, 1]), T0 + 500).is_none());
            assert_eq!(store.fail_opens(), 0);
        }
    }

    #[test]
    fn a_slash48_rotating_through_its_slash64s_is_served_exactly_its_prefix_count() {
        let store = std::sync::Arc::new(Store::create(65536).unwrap());
        let (server, dir) = settings(&[
            "DOSSiteCount 20",
            "DOSSiteInterval 60",
            "DOSPageCount 1000",
            "DOSPrefixCount 48 30",
            "DOSBlockingPeriod 60",
        ]);
        let (server, dir) = (std::sync::Arc::new(server), std::sync::Arc::new(dir));
        // 12 /64s spread over several /56s of one /48; the /56 threshold (8 x 20) is far.
        let v6 = |i: u16| IpAddr::from([0x2001, 0xdb8, 0xaa, i << 4 | i, 0, 0, 0, 0]);
        let clients = (0..12).map(v6).collect();
        assert_eq!(served_in_parallel(&store, &server, &dir, clients, 10), 30);
        let b = store
            .active_net_block("2001:db8:aa::".parse().unwrap(), 48, T0 + 500)
            .expect("the /48 is blocked");
        assert_eq!((b.prefix, b.count), (48, 30));
        assert!(store.active_net_block(v6(1), 56, T0 + 500).is_none());
        assert!(blocked(&store, &server, v6(999), T0 + 500).is_some());
    }

    #[test]
    fn the_narrower_network_blocks_first() {
        let store = Store::create(65536).unwrap();
        let (server, dir) = settings(&[
            "DOSSiteCount 100",
            "DOSPrefixCount 56 4",
            "DOSPrefixCount 48 6",
            "DOSSiteInterval 60",
            "DOSPageCount 100",
        ]);
        let v6 = |a: u16, b: u16| IpAddr::from([0x2001, 0xdb8, 0xbb, a, b, 0, 0, 0]);
        let mut refused = Vec::new();
        for i in 0..4 {
            // Two /64s of one /56, then of another /56.
            for (n, client) in [v6(0x100, i), v6(0x200, i)].into_iter().enumerate() {
                if let Outcome::Refuse(r) = count(
                    &store,
                    &server,
                    &dir,
                    &req_of(client),
                    T0 + i64::from(i) * 2 + n as i64,
                    None,
                ) {
                    refused.push((client, r.started.map(|s| (s.block.client, s.block.prefix))));
                }
            }
        }
        // Requests 1..8 alternate the two /56s; the /48 (6) crosses at the 7th request,
        // before either /56 (4 each) does.
        assert_eq!(
            refused[0].1,
            Some(("2001:db8:bb::".parse().unwrap(), 48)),
            "{refused:?}"
        );
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert_eq!(
            refused[1].1, None,
            "refused by the /48's block: {refused:?}"
        );
    }

    fn req_of(client: IpAddr) -> Request<'static> {
        Request {
            client,
            host: "example.com",
            path: "/page",
            key: None,
        }
    }

    #[test]
    fn monitor_mode_names_the_network_that_would_be_blocked() {
        let store = Store::create(65536).unwrap();
        let (server, dir) = settings(&[
            "DOSEnabled monitor",
            "DOSSiteCount 100",
            "DOSPageCount 100",
            "DOSPrefixCount 24 3",
        ]);
        let outcomes: Vec<_> = (0..5u8)
            .map(|i| {
                count(
                    &store,
                    &server,
                    &dir,
                    &req_of(IpAddr::from([192, 0, 2, i])),
                    T0 + i64::from(i),
                    None,
                )
            })
            .collect();
        assert!(
            matches!(outcomes[3], Outcome::WouldBlock { prefix: 24, client, .. } if client == IpAddr::from([192, 0, 2, 0])),
            "{outcomes:?}"
        );
        assert!(!outcomes.iter().any(|o| matches!(o, Outcome::Refuse(_))));
        assert!(blocked(&store, &server, IpAddr::from([192, 0, 2, 9]), T0 + 9).is_none());
    }

    #[test]
    fn networks_sharing_sub_caches_with_clients_never_deadlock() {
        // The smallest store (5 sub-caches per area): clients' and networks' site records
        // share sub-caches all the time, in every order. A deadlock would show as lock
        // give-ups (fail-opens) after 500 ms.
        let store = std::sync::Arc::new(Store::create(16384).unwrap());
        let (server, _) = settings(&["DOSSiteCount 1000000", "DOSPageCount 1000000"]);
        let server = std::sync::Arc::new(server);
        let threads: Vec<_> = (0..8u16)
            .map(|t| {
                let (store, server) = (store.clone(), server.clone());
                std::thread::spawn(move || {
                    let dir = DirConfig::default();
                    for i in 0..2000u16 {
                        let n = i.wrapping_mul(7919).wrapping_add(t * 131);
                        let client = if n % 2 == 0 {
                            IpAddr::from([10, (n % 7) as u8, (n % 5) as u8, (n % 251) as u8])
                        } else {
                            IpAddr::from([0x2001, 0xdb8, n % 3, n % 11, n % 13, 0, 0, 0])
                        };
                        let r = Request {
                            host: ["a.example", "b.example"][usize::from(n % 2)],
                            ..req_of(client)
                        };
                        let _ = count(&store, &server, &dir, &r, T0, None);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(store.fail_opens(), 0);
    }

    #[test]
    fn monitor_mode_never_refuses() {
        let store = Store::create(65536).unwrap();
        let (server, dir) = settings(&["DOSPageCount 1", "DOSEnabled monitor"]);
        let r = req("192.0.2.2");
        let outcomes: Vec<_> = (0..4)
            .map(|i| count(&store, &server, &dir, &r, T0 + i, None))
            .collect();
        assert!(outcomes
            .iter()
            .any(|o| matches!(o, Outcome::WouldBlock { .. })));
        assert!(!outcomes.iter().any(|o| matches!(o, Outcome::Refuse(_))));
        assert!(store.active_block(r.client, T0 + 5).is_none());
    }

    #[test]
    fn a_penalty_over_the_count_starts_the_block_for_the_next_request() {
        let store = Store::create(65536).unwrap();
        let (server, dir) = settings(&[
            "DOSSiteCount 100",
            "DOSSiteStatusPenalty 404 60",
            "DOSPageCount 50",
        ]);
        let r = req("192.0.2.3");
        assert!(matches!(
            count(&store, &server, &dir, &r, T0, None),
            Outcome::Pass
        ));
        let p = penalties(&server, &dir, 404, 1000);
        assert_eq!(p.site_status, Some(60));
        assert!(matches!(
            score(&store, &server, &dir, &r, &p, T0 + 1, None),
            Outcome::Pass
        ));
        assert!(matches!(
            count(&store, &server, &dir, &r, T0 + 2, None),
            Outcome::Pass
        ));
        assert!(matches!(
            score(&store, &server, &dir, &r, &p, T0 + 3, None),
            Outcome::Refuse(_)
        ));
        assert!(blocked(&store, &server, r.client, T0 + 4).is_some());
    }

    use crate::farm::FakeEngine as Engine;

    /// A network's count is the farm's: thirty members of one /24, one request each, in turn
    /// over three servers, are served the /24's count, and the server that finds it crossed
    /// blocks the /24 (alone, each server would serve its own ten). A pass holder's requests
    /// stay this server's count.
    #[test]
    fn a_farm_counts_a_network_exactly() {
        let (server, dir) = settings(&[
            "DOSPageCount 1000",
            "DOSSiteCount 1000",
            "DOSPrefixCount 24 10",
        ]);
        let engine = Engine::default();
        let stores: Vec<Store> = (0..3).map(|_| Store::create(65536).unwrap()).collect();
        let mut refusals = Vec::new();
        let served = (1..=30i64)
            .filter(|i| {
                let r = req(&format!("198.51.100.{i}"));
                let store = &stores[*i as usize % 3];
                match count(store, &server, &dir, &r, T0 + i, Some(&engine)) {
                    Outcome::Pass => true,
                    Outcome::Refuse(refusal) => {
                        refusals.push(refusal.started.map(|s| s.block.prefix));
                        false
                    }
                    _ => false,
                }
            })
            .count();
        assert_eq!(served, 10);
        // The 11th started the /24's block on its server (the others learn it from its
        // announcement; here each refuses on its own finding of the engine's count).
        assert_eq!(refusals.first(), Some(&Some(24)), "{refusals:?}");
        assert!(stores[11 % 3]
            .active_net_block(IpAddr::from([198, 51, 100, 0]), 24, T0 + 12)
            .is_some());
    }

    /// Three servers (three stores) over one engine serve exactly the count, one request at a
    /// time in turn, and from threads at once.
    #[test]
    fn a_farm_serves_exactly_the_count() {
        let (server, dir) =
            settings(&["DOSPageCount 10", "DOSPageInterval 60", "DOSSiteCount 1000"]);
        let engine = Engine::default();
        let stores: Vec<Store> = (0..3).map(|_| Store::create(65536).unwrap()).collect();
        let r = req("192.0.2.9");
        let served = (0..30i64)
            .filter(|i| {
                let store = &stores[*i as usize % 3];
                blocked(store, &server, r.client, T0 + i).is_none()
                    && matches!(
                        count(store, &server, &dir, &r, T0 + i, Some(&engine)),
                        Outcome::Pass
                    )
            })
            .count();
        assert_eq!(served, 10);
        // In parallel: 12 threads, 3 requests each, over the three servers.
        let engine = Engine::default();
        let r = req("192.0.2.10");
        let served = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..12usize {
                let (stores, server, dir, engine, served) =
                    (&stores, &server, &dir, &engine, &served);
                s.spawn(move || {
                    for i in 0..3usize {
                        let store = &stores[(t + i) % 3];
                        if matches!(
                            count(store, server, dir, &r, T0, Some(engine)),
                            Outcome::Pass
                        ) {
                            served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(served.into_inner(), 10);
    }

    /// A client far below a large count needs the engine for few of its requests: its leases
    /// cover the rest.
    #[test]
    fn leases_spare_round_trips_at_patrol() {
        let (server, dir) =
            settings(&["DOSPageCount 200", "DOSPageInterval 60", "DOSSiteCount 400"]);
        let engine = Engine::default();
        let store = Store::create(65536).unwrap();
        let r = req("192.0.2.11");
        for i in 0..40 {
            assert!(matches!(
                count(&store, &server, &dir, &r, T0 + i, Some(&engine)),
                Outcome::Pass
            ));
        }
        let calls = engine.calls();
        assert!(calls <= 4, "{calls} calls for 40 requests");
    }

    /// A lease held when the client is blocked elsewhere is void once the block is known
    /// here: after the block, the next request asks the engine again.
    #[test]
    fn no_lease_outlives_a_block() {
        let (server, dir) = settings(&[
            "DOSPageCount 200",
            "DOSPageInterval 600",
            "DOSSiteCount 400",
            "DOSPrefixCount 24 off",
        ]);
        let engine = Engine::default();
        let store = Store::create(65536).unwrap();
        let r = req("192.0.2.12");
        assert!(matches!(
            count(&store, &server, &dir, &r, T0, Some(&engine)),
            Outcome::Pass
        ));
        assert!(matches!(
            count(&store, &server, &dir, &r, T0 + 1, Some(&engine)),
            Outcome::Pass
        ));
        let calls = || engine.calls();
        assert_eq!(calls(), 1, "the second request spent the lease");
        // Another server's block, 2 s from now for 5 s, as its announcement writes it.
        let info = BlockInfo {
            rule: Counter::Page,
            score: 201,
            count: 200,
            interval: 600,
            host: r.host,
            uri: r.path,
        };
        let start = T0 + 2_000_000;
        assert!(store
            .adopt_block(r.client, 0, &info, (start, start + 5_000_000), 1, 60, start)
            .unwrap());
        assert!(blocked(&store, &server, r.client, start + 1).is_some());
        let after = start + 6_000_000;
        assert!(blocked(&store, &server, r.client, after).is_none());
        assert!(matches!(
            count(&store, &server, &dir, &r, after, Some(&engine)),
            Outcome::Pass
        ));
        assert_eq!(calls(), 2, "the lease from before the block was void");
        assert!(matches!(
            count(&store, &server, &dir, &r, after + 1, Some(&engine)),
            Outcome::Pass
        ));
        assert_eq!(calls(), 2, "the new lease is good");
    }
}
