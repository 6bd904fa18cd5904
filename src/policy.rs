//! The decisions, in plain Rust over the store and the settings: is this client blocked, does
//! this request cross a count, what do the penalties add, when does a block start.
//! The FFI layer gathers the request's facts, calls these, and turns the answer into a
//! response; nothing here knows about httpd.
#![forbid(unsafe_code)]
use std::ffi::CStr;
use std::net::IpAddr;

use crate::config::{DirConfig, Enabled, ServerSettings};
use crate::remote::{RemoteBlock, RemoteRecord};
use crate::store::{Area, BlockInfo, BlockState, KeyParts, Micros, Rule, Store};

/// The facts of one request that the rules look at.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The client after normalisation and IPv6 grouping.
    pub client: IpAddr,
    /// Host, lower-cased, port stripped.
    pub host: &'a str,
    /// The page: canonical path (with the query string when DOSCanonical is off).
    pub path: &'a str,
}

impl<'a> Request<'a> {
    fn site_key(&self) -> KeyParts<'a> {
        KeyParts {
            client: self.client,
            host: self.host,
            path: "",
        }
    }
    fn page_key(&self) -> KeyParts<'a> {
        KeyParts {
            client: self.client,
            host: self.host,
            path: self.path,
        }
    }
}

/// A refused request: what to answer and why.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub status: u16,
    pub rule: Rule,
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
    /// Monitor mode: the rule would have blocked; nothing was refused.
    WouldBlock {
        rule: Rule,
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
    store
        .active_block(client, now)
        .map(|b| Refusal::from_block(server.http_status, &b))
}

/// post_read_request with a shared tier: a block another server started, as read from the
/// client's shared record.
pub fn blocked_remotely(
    server: &ServerSettings,
    record: &RemoteRecord,
    now: Micros,
) -> Option<Refusal> {
    record.active_block(now).map(|b| Refusal {
        status: server.http_status,
        rule: b.rule.unwrap_or(Rule::Site),
        count: b.count,
        interval: b.interval,
        // The backend is not trusted with more than this server would ever block for.
        until: b
            .until
            .min(now.saturating_add(i64::from(server.longest_period()) * 1_000_000)),
        started: None,
    })
}

/// fixups: add 1 to the site and page records; refuse at once when a count is crossed.
///
/// With a shared tier, the client's shared record (read in post_read_request) is counted too,
/// and the larger of this server's and the shared score decides.
pub fn count(
    store: &Store,
    server: &ServerSettings,
    dir: &DirConfig,
    req: &Request,
    now: Micros,
    mut remote: Option<&mut RemoteRecord>,
) -> Outcome {
    if dir.enabled() == Enabled::Off {
        return Outcome::Pass;
    }
    // A block another worker started after this request passed post_read_request: refuse it
    // uncounted (counting it would land in the window the block just restarted).
    if let Some(b) = store.active_block(req.client, now) {
        return Outcome::Refuse(Refusal::from_block(server.http_status, &b));
    }
    let hit = |area, key: &KeyParts, interval| {
        store
            .add(area, key, 1, interval, now)
            .map(|h| (h.score, h.origin))
    };
    let mut page = hit(Area::Page, &req.page_key(), dir.page_interval());
    let mut site = hit(Area::Site, &req.site_key(), server.site_interval);
    if let Some(rec) = remote.as_deref_mut() {
        let shared_page = rec.add(Rule::Page, req.host, req.path, 1, dir.page_interval(), now);
        let shared_site = rec.add(Rule::Site, req.host, "", 1, server.site_interval, now);
        page = Some(larger(page, shared_page, now));
        site = Some(larger(site, shared_site, now));
        raise_shared(rec, req, site, page);
    }
    judge(store, server, dir, req, site, page, now, remote)
}

/// Carry the decided (larger) scores into the shared record, so that a write-back never
/// reports less than this server counted itself.
fn raise_shared(
    rec: &mut RemoteRecord,
    req: &Request,
    site: Option<(i64, Micros)>,
    page: Option<(i64, Micros)>,
) {
    if let Some((score, _)) = site {
        rec.raise(Rule::Site, req.host, "", score);
    }
    if let Some((score, _)) = page {
        rec.raise(Rule::Page, req.host, req.path, score);
    }
}

/// This server's score or the shared one, whichever is larger.
fn larger(local: Option<(i64, Micros)>, shared: i64, now: Micros) -> (i64, Micros) {
    match local {
        Some((score, origin)) if score >= shared => (score, origin),
        Some((_, origin)) => (shared, origin),
        None => (shared, now),
    }
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
}

/// The penalties a finished request earns, from its final status and duration.
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

/// log_transaction: apply penalties; a record pushed over its count starts the block now, so
/// the client's next request is refused.
pub fn score(
    store: &Store,
    server: &ServerSettings,
    dir: &DirConfig,
    req: &Request,
    p: &Penalties,
    now: Micros,
    mut remote: Option<&mut RemoteRecord>,
) -> Outcome {
    if dir.enabled() == Enabled::Off || p.is_empty() {
        return Outcome::Pass;
    }
    let mut site = p
        .site_status
        .and_then(|s| store.add(Area::Site, &req.site_key(), s, server.site_interval, now))
        .map(|h| (h.score, h.origin));
    let page_delta = p.page_status.unwrap_or(0) + p.deadline.map(|d| d.1).unwrap_or(0);
    let page_penalised = p.page_status.is_some() || p.deadline.is_some();
    let mut page = if page_penalised {
        store
            .add(
                Area::Page,
                &req.page_key(),
                page_delta,
                dir.page_interval(),
                now,
            )
            .map(|h| (h.score, h.origin))
    } else {
        None
    };
    if let Some(rec) = remote.as_deref_mut() {
        if let Some(delta) = p.site_status {
            site = Some(larger(
                site,
                rec.add(Rule::Site, req.host, "", delta, server.site_interval, now),
                now,
            ));
        }
        if page_penalised {
            let shared = rec.add(
                Rule::Page,
                req.host,
                req.path,
                page_delta,
                dir.page_interval(),
                now,
            );
            page = Some(larger(page, shared, now));
        }
        raise_shared(rec, req, site, page);
    }
    judge(store, server, dir, req, site, page, now, remote)
}

/// Compare the updated records with their counts (block when score > count).
#[allow(clippy::too_many_arguments)]
fn judge(
    store: &Store,
    server: &ServerSettings,
    dir: &DirConfig,
    req: &Request,
    site: Option<(i64, Micros)>,
    page: Option<(i64, Micros)>,
    now: Micros,
    remote: Option<&mut RemoteRecord>,
) -> Outcome {
    let page_count = dir.page_count();
    let crossed = match (page, site) {
        (Some((score, origin)), _) if score > i64::from(page_count) => {
            Some((Rule::Page, score, origin, page_count, dir.page_interval()))
        }
        (_, Some((score, origin))) if score > i64::from(server.site_count) => Some((
            Rule::Site,
            score,
            origin,
            server.site_count,
            server.site_interval,
        )),
        _ => None,
    };
    let Some((rule, score, origin, count, interval)) = crossed else {
        return Outcome::Pass;
    };
    // Starting a block (or a would-be block) restarts the crossed window, so a client that
    // waits out Retry-After and then behaves is served again.
    let (area, key) = match rule {
        Rule::Page => (Area::Page, req.page_key()),
        Rule::Site => (Area::Site, req.site_key()),
    };
    store.reset(area, &key, now);
    let mut remote = remote;
    if let Some(rec) = remote.as_deref_mut() {
        rec.reset(
            rule,
            req.host,
            if rule == Rule::Page { req.path } else { "" },
            now,
        );
    }
    if dir.enabled() == Enabled::Monitor {
        return Outcome::WouldBlock { rule, score, count };
    }
    let info = BlockInfo {
        rule,
        score,
        count,
        interval,
        host: req.host,
        uri: req.path,
    };
    // With a shared tier, the generation another server reached counts too.
    let shared_generation = remote.as_deref().map_or(1, |r| r.next_generation(now));
    let period_for = |g: u32| server.period_for_generation(g.max(shared_generation));
    let started = store.start_block(
        req.client,
        &info,
        now,
        &period_for,
        server.block_memory_secs(),
    );
    if let (Some(rec), Some(block)) = (remote, started.as_ref()) {
        rec.set_block(RemoteBlock {
            until: block.until,
            started: block.started,
            generation: block.generation.max(shared_generation),
            rule: Some(rule),
            count,
            interval,
            score,
            remembered_until: block.until + i64::from(server.block_memory_secs()) * 1_000_000,
        });
    }
    match started {
        Some(block) => Outcome::Refuse(Refusal {
            status: server.http_status,
            rule,
            count,
            interval,
            until: block.until,
            started: Some(Started { block, origin }),
        }),
        // Another worker started it a moment ago, or the store is unavailable (fail open).
        None => match store.active_block(req.client, now) {
            Some(b) => Outcome::Refuse(Refusal::from_block(server.http_status, &b)),
            None => Outcome::Pass,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, ServerConfig};

    const T0: Micros = 1_800_000_000_000_000;

    fn settings(lines: &[&str]) -> (ServerSettings, DirConfig) {
        let (mut server, mut dir) = (ServerConfig::default(), DirConfig::default());
        for line in lines {
            let (name, args) = line.split_once(' ').unwrap();
            let setting = parse(name, args).unwrap();
            if setting.is_dir_scoped() {
                dir.apply(setting).unwrap();
            } else {
                server.apply(setting).unwrap();
            }
        }
        (server.resolve(), dir)
    }

    fn req(client: &str) -> Request<'static> {
        Request {
            client: client.parse().unwrap(),
            host: "example.com",
            path: "/page",
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
        let page = store.add(Area::Page, &r.page_key(), 0, 60, T0 + 4).unwrap();
        assert_eq!(page.score, 0);
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

    #[test]
    fn the_shared_record_counts_and_carries_the_block() {
        let store = Store::create(65536).unwrap();
        let (server, dir) = settings(&["DOSPageCount 3", "DOSPageInterval 60"]);
        let r = req("192.0.2.4");
        let mut shared = RemoteRecord::default();
        // Another server already counted 3 for this page.
        shared.add(Rule::Page, r.host, r.path, 3, 60, T0);
        match count(&store, &server, &dir, &r, T0 + 1, Some(&mut shared)) {
            Outcome::Refuse(refusal) => assert!(refusal.started.is_some()),
            other => panic!("{other:?}"),
        }
        assert!(shared.dirty);
        assert!(blocked_remotely(&server, &shared, T0 + 2).is_some());
    }
}
