//! The shared store: one shared-memory region with three shmcb-style tables (site, page,
//! blocks) of fixed 176-byte records, updated by every worker process and thread.
//!
//! - [`layout`]: byte layout and its invariants (read that first).
//! - [`region`]: the shared mapping (anonymous, or of a file).
//! - [`file`](mod@file): the header checksum and the store file (`DOSCache shmcb:/path(BYTES)`).
//! - `admin`: what shieldctl needs (list, show, block, unblock).
//! - [`lock`]: per-sub-cache lock words that survive a holder killed at any instant.
//! - `record`, `table`: one record, one sub-cache.
//! - `counter`: which of a client's counters (a block's rule is the one that crossed).
//!
//! Every operation touches one sub-cache of 16 records under that sub-cache's lock and gives
//! up (returns `None`: callers fail open, and the fail-open counter says so) if the lock
//! cannot be had within [`lock::LOCK_TIMEOUT`]. Decisions about one client on one site are
//! serialised by [`Store::lock_site`] (see `layout.rs`, "One client on one site, one
//! decision at a time").

mod admin;
mod counter;
pub mod file;
pub mod layout;
pub mod lock;
mod record;
pub mod region;
mod table;
#[cfg(test)]
mod tests;

pub use admin::{is_manual, BlockRecord, Busy, Ended, Target, TargetError};
pub use counter::Counter;
pub use region::Region;

use layout::*;
use record::{client_words, decode_client, encode_client, Fields, Meta, Text};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::num::NonZeroU64;
use std::sync::atomic::Ordering;
use table::{Locked, Reclaim, Repair, Sub};

/// µs since the Unix epoch (httpd's `apr_time_t`).
pub type Micros = i64;

const MICROS_PER_SEC: i64 = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    Site,
    Page,
    Block,
}

impl Area {
    pub const ALL: [Area; 3] = [Area::Site, Area::Page, Area::Block];

    fn index(self) -> usize {
        match self {
            Area::Site => 0,
            Area::Page => 1,
            Area::Block => 2,
        }
    }

    /// The byte a record's meta word stores for the area it belongs to: the area index + 1
    /// (0 is none).
    pub(crate) const fn code(self) -> u8 {
        match self {
            Area::Site => 1,
            Area::Page => 2,
            Area::Block => 3,
        }
    }

    /// The area of a stored meta byte; `None` for 0 and anything that is no area.
    pub(crate) const fn from_code(code: u8) -> Option<Area> {
        match code {
            1 => Some(Area::Site),
            2 => Some(Area::Page),
            3 => Some(Area::Block),
            _ => None,
        }
    }
}

/// What identifies a record. Site: `path` is ""; Block: `host` and `path` are "".
#[derive(Clone, Copy, Debug)]
pub struct KeyParts<'a> {
    pub client: IpAddr,
    pub host: &'a str,
    pub path: &'a str,
}

/// Result of [`Store::add`]: the window's score after the addition and its start.
#[derive(Clone, Copy, Debug)]
pub struct Hit {
    pub score: i64,
    pub origin: Micros,
}

/// The generations of the blocks a client is under at one instant: its own, then its
/// counted networks' (narrowest first; 0 where there is no active block). A challenge pass
/// carries the [`Epoch::stamp`] of the instant it was earned and opens nothing once any of
/// these blocks has started or moved on since: when a network is blocked, every client in
/// it solves again, and when pass holders cross a network's count, every pass of that
/// network stops working (see [`SiteGuard::start_net_block`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Epoch(pub [u32; 3]);

impl Epoch {
    /// The epoch in a pass: the client's generation (at least 1: a client that is not
    /// blocked, or in its first block, is at 1) in the low 16 bits, each network's in a
    /// byte above. An unblocked network adds 0, so where no network is blocked the stamp is
    /// the client's generation, as passes have always carried. (A stamp repeats only after
    /// 2^16 generations of the client or 256 of a network while one pass lives.)
    pub fn stamp(self) -> u32 {
        let [client, a, b] = self.0;
        (client.max(1) & 0xffff) | (a & 0xff) << 16 | (b & 0xff) << 24
    }

    /// The generation the challenge's difficulty follows: the highest (at least 1).
    pub fn generation(self) -> u32 {
        self.0.into_iter().max().unwrap_or(0).max(1)
    }
}

/// Why a block starts (stored with the block for the status page, block file and headers).
#[derive(Clone, Debug)]
pub struct BlockInfo<'a> {
    pub rule: Counter,
    pub score: i64,
    pub count: u32,
    pub interval: u32,
    pub host: &'a str,
    pub uri: &'a str,
}

/// A block as stored (host and URI truncated to fit the record).
#[derive(Clone, Debug, PartialEq)]
pub struct BlockState {
    /// The client, or for a network's block the network address.
    pub client: IpAddr,
    /// 0 for a client's block; else the prefix length of the blocked network
    /// (`crate::prefix`).
    pub prefix: u8,
    pub rule: Counter,
    pub generation: u32,
    pub started: Micros,
    pub until: Micros,
    pub score: i64,
    pub count: u32,
    pub interval: u32,
    pub host: String,
    pub uri: String,
}

/// Per-area statistics. `entries` counts occupied slots (expired ones not yet reclaimed
/// included; see [`Store::live_entries`] for a count at a given time).
#[derive(Clone, Copy, Debug, Default)]
pub struct AreaStats {
    pub capacity: u64,
    pub entries: u64,
    pub inserted: u64,
    pub expired: u64,
    pub evicted: u64,
    pub hits: u64,
    pub misses: u64,
}

/// A record copied out for display.
#[derive(Clone, Debug)]
pub struct RecordView {
    pub area: Area,
    pub client: IpAddr,
    /// 0 for a client's record; else the prefix length of the network it counts.
    pub prefix: u8,
    /// Host (site, page), or for blocks the host of the request that crossed the count.
    pub host: String,
    /// Path (page), or for blocks the URI that crossed the count; "" for site records.
    pub path: String,
    pub score: i64,
    /// Window start; for blocks, when the block started.
    pub origin: Micros,
    pub expires: Micros,
    pub generation: u32,
    pub block_until: Micros,
    /// Blocks only: the rule that blocked.
    pub rule: Option<Counter>,
    /// Blocks only: the count and interval of that rule.
    pub count: u32,
    pub interval: u32,
}

/// A state of the record-id hash stream (see [`Store::id_of`]).
#[derive(Clone)]
struct Chain(ahash::AHasher);

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Chain")
    }
}

/// The id of a record whose key ends where `chain` stands.
#[inline(always)]
fn id_from(chain: &Chain) -> [u64; 2] {
    widen(chain.0.finish())
}

/// The record id of a 64-bit hash: the hash, and a fixed bijection of it.
#[inline(always)]
fn widen(id: u64) -> [u64; 2] {
    [id, id.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31)]
}

#[inline(always)]
fn with_host(mut chain: Chain, host: &str) -> Chain {
    chain.0.write_u64(host.len() as u64);
    chain.0.write(host.as_bytes());
    chain
}

/// The id of the site record on `host` of the client or network whose hash stream is `chain`.
#[inline(always)]
fn site_id_after(chain: &Chain, host: &str) -> [u64; 2] {
    id_from(&with_host(chain.clone(), host))
}

#[inline(always)]
fn with_path(mut chain: Chain, path: &str) -> Chain {
    chain.0.write_u64(path.len() as u64);
    chain.0.write(path.as_bytes());
    chain
}

/// A client with the hash of its key taken once per request: its block record's identity,
/// and the hash stream from which its site and page ids continue (see
/// [`Store::client_key`]); and the same for the wider networks it is counted in.
///
/// A challenge pass holder's key ([`Store::holder_key`]) counts under its own address
/// (`client`, `chain`) and in its owner's networks, and its blocks are its owner's: `block`
/// is then the block identity of the pass's owner, and `pass` the [`Epoch`] the pass was
/// earned in. (Kept small because every request carries one.)
#[derive(Clone, Debug)]
pub struct ClientKey {
    client: IpAddr,
    block: ([u64; 2], u8, [u8; 16]),
    chain: Chain,
    /// The counted networks, narrowest first (see [`Store::client_key_in`]).
    nets: [Option<NetKey>; 2],
    pass: Option<Epoch>,
}

/// One network a client is counted in: the network and its prefix length, its block id,
/// and the hash stream of that id, from which its site ids continue, worked out once per
/// request in [`Store::client_key_in`]. (Kept small: a key lives in every request's state.)
#[derive(Clone, Debug)]
struct NetKey {
    /// The network's first 64 bits (an IPv4 network's 32 in the high half), with the prefix
    /// length in the low byte: no counted level is longer than 56 bits, so that byte of
    /// the network is 0, and the length never is (so an absent network takes no room).
    head: NonZeroU64,
    /// The first half of the block id (see [`widen`]).
    id: u64,
    chain: Chain,
}

const _: () = {
    let mut i = 0;
    while i < crate::prefix::LEVELS.len() {
        assert!(crate::prefix::LEVELS[i].1 > 0 && crate::prefix::LEVELS[i].1 <= 56);
        i += 1;
    }
};

impl NetKey {
    /// `None` for `len` 0 (no network). `len` is at most 56 (the counted levels).
    #[inline(always)]
    fn new(store: &Store, client: IpAddr, len: u8) -> Option<NetKey> {
        if len == 0 {
            return None;
        }
        let net = crate::prefix::network(client, len);
        let (family, addr) = encode_client(net);
        let chain = store.net_chain(family, &addr, len);
        let first = match net {
            IpAddr::V4(v4) => u64::from(u32::from(v4)) << 32,
            IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64,
        };
        Some(NetKey {
            head: NonZeroU64::new(first | u64::from(len))?,
            id: chain.0.finish(),
            chain,
        })
    }

    fn len(&self) -> u8 {
        self.head.get() as u8
    }

    /// The network's address (of the family of `client`, the client it was made for).
    fn net(&self, client: IpAddr) -> IpAddr {
        let first = self.head.get() & !0xff;
        match client {
            IpAddr::V4(_) => IpAddr::V4(((first >> 32) as u32).into()),
            IpAddr::V6(_) => IpAddr::V6((u128::from(first) << 64).into()),
        }
    }

    fn id(&self) -> [u64; 2] {
        widen(self.id)
    }

    /// The block id, and the family and address the network's records hold.
    fn block(&self, client: IpAddr) -> ([u64; 2], u8, [u8; 16]) {
        let (family, addr) = encode_client(self.net(client));
        (self.id(), family, addr)
    }
}

impl ClientKey {
    pub fn client(&self) -> IpAddr {
        self.client
    }

    /// The networks this key counts in: (network address, prefix length), narrowest first.
    pub fn nets(&self) -> impl Iterator<Item = (IpAddr, u8)> + '_ {
        let owner = self.block_owner();
        self.nets
            .iter()
            .flatten()
            .map(move |n| (n.net(owner), n.len()))
    }

    /// True for a pass holder's key ([`Store::holder_key`]).
    pub fn is_pass_holder(&self) -> bool {
        self.pass.is_some()
    }

    /// The address the blocks and networks belong to: the client, or a pass holder's owner.
    #[inline(always)]
    fn block_owner(&self) -> IpAddr {
        match self.pass {
            None => self.client,
            Some(_) => decode_client(self.block.1, client_words(&self.block.2)),
        }
    }
}

/// A record copied out for display.
fn view(area: Area, f: &Fields) -> RecordView {
    let (host, path) = f.text.strings();
    RecordView {
        area,
        client: f.client(),
        prefix: f.meta.prefix,
        host,
        path,
        score: f.score,
        origin: f.origin,
        expires: f.expires,
        generation: f.generation,
        block_until: f.until,
        rule: if area == Area::Block {
            f.meta.rule
        } else {
            None
        },
        count: f.count,
        interval: f.interval,
    }
}

/// One decision about one client on one site (virtual host) in progress: holds the lock of
/// the sub-cache of the client's *site record* (see [`Store::lock_site`]), and those of its
/// networks' site records on this site; released on drop. Everything one request adds or
/// starts is done through it: the site records in the held sub-caches, the page records and
/// the block records under nested locks (order: the site area's sub-caches in ascending
/// index, then page or block; never page and block together).
pub struct SiteGuard<'s> {
    store: &'s Store,
    key: &'s ClientKey,
    host: &'s str,
    site_id: [u64; 2],
    /// The request's page and the id of the client's record of it on this site (hashed with
    /// the site's, so the hash stream need not be kept).
    path: &'s str,
    page_id: [u64; 2],
    /// The site record's sub-cache, locked: the decision's lock. (When a network's site
    /// record lives in a sub-cache of lower index, that one was locked first.)
    locked: Locked<'s>,
    /// The site records of the client's networks on this site (as `key.nets`).
    nets: [Option<NetSite<'s>>; 2],
}

/// A network's site record within a decision: its id, and its sub-cache's lock (its own, or
/// an alias of the lock of an earlier record of the decision in the same sub-cache: two
/// records in one sub-cache are locked once).
struct NetSite<'s> {
    id: [u64; 2],
    locked: Locked<'s>,
}

impl<'s> SiteGuard<'s> {
    pub fn client(&self) -> IpAddr {
        self.key.client
    }

    /// Whether the decision is about a pass holder (counted apart from its client).
    pub fn is_pass_holder(&self) -> bool {
        self.key.is_pass_holder()
    }

    /// The active block (`until > now`) of the client, or of one of its networks. A block is
    /// written (under the block sub-cache's lock) by a decision holding this same site lock
    /// (the client's, or the network's, which every decision of a client in that network
    /// holds), or by an administrator; the tag scan after taking the site locks therefore
    /// sees every block an earlier decision started. Lock-free unless a tag matches.
    ///
    /// For a pass holder: its owner's blocks once one of them started or moved on since the
    /// pass's epoch (the pass no longer opens them).
    #[inline(always)]
    pub fn block(&self, now: Micros) -> Option<BlockState> {
        let Some(pass) = self.key.pass else {
            return self.store.active_block_key(self.key, now, false);
        };
        if self.store.epoch_key(self.key, now, false) == pass {
            return None;
        }
        self.store.active_block_key(self.key, now, false)
    }

    /// Adds `delta` to the client's site record (see [`Store::add`]); no second lock.
    #[inline(always)]
    pub fn add_site(&self, delta: i64, interval: u32, now: Micros) -> Hit {
        Store::add_held(
            &self.locked,
            Counter::Site,
            Ident {
                id: self.site_id,
                owner: Owner::Key(self.key),
                prefix: 0,
                host: self.host,
                path: "",
            },
            delta,
            interval,
            now,
        )
    }

    /// The networks this decision counts in: (network, prefix length), narrowest first; a
    /// network's index here is the one [`SiteGuard::add_net`] and the others take.
    pub fn nets(&self) -> impl Iterator<Item = (usize, IpAddr, u8)> + '_ {
        self.key.nets.iter().enumerate().filter_map(|(i, n)| {
            n.as_ref()
                .map(|n| (i, n.net(self.key.block_owner()), n.len()))
        })
    }

    /// The prefix length of the decision's network `i` (see [`SiteGuard::nets`]).
    #[inline(always)]
    pub fn net_len(&self, i: usize) -> Option<u8> {
        Some(self.key.nets.get(i)?.as_ref()?.len())
    }

    /// Whether the decision counts in a network `i` (see [`SiteGuard::nets`]).
    #[inline(always)]
    pub fn counts_net(&self, i: usize) -> bool {
        self.nets.get(i).is_some_and(Option::is_some)
    }

    /// The lock of network `i`'s site record's sub-cache (held by this decision).
    fn net_lock(&self, i: usize) -> Option<(&Locked<'s>, &NetSite<'s>)> {
        let site = self.nets.get(i)?.as_ref()?;
        Some((&site.locked, site))
    }

    /// Adds `delta` to network `i`'s site record on this site (its lock is held already).
    pub fn add_net(&self, i: usize, delta: i64, interval: u32, now: Micros) -> Option<Hit> {
        let (locked, site) = self.net_lock(i)?;
        let net = self.key.nets[i].as_ref()?;
        Some(Store::add_held(
            locked,
            Counter::Site,
            Ident {
                id: site.id,
                owner: Owner::Net(net, self.key.block_owner()),
                prefix: net.len(),
                host: self.host,
                path: "",
            },
            delta,
            interval,
            now,
        ))
    }

    /// Restarts the window of network `i`'s site record. Not for a pass holder (as
    /// [`SiteGuard::reset_site`]): what the passes of a network spent stays spent until the
    /// window ends.
    pub fn reset_net(&self, i: usize, now: Micros) {
        if self.key.is_pass_holder() {
            return;
        }
        if let Some((locked, site)) = self.net_lock(i) {
            Store::reset_held(locked, Counter::Site, site.id, now);
        }
    }

    /// Starts network `i`'s block (as [`SiteGuard::start_block`] does the client's). For a
    /// pass holder, the network's block still at the pass's epoch moves on a generation, and
    /// every pass earned in the network under the old one stops working.
    pub fn start_net_block(
        &self,
        i: usize,
        info: &BlockInfo,
        now: Micros,
        period_for: &dyn Fn(u32) -> u32,
        memory_secs: u32,
    ) -> Option<BlockState> {
        let net = self.key.nets.get(i)?.as_ref()?;
        let owner = self.key.block_owner();
        let block = net.block(owner);
        let sub = self.store.sub(Area::Block, block.0);
        let sub = self.store.lock_as(sub, Area::Block, self.locked.ident())?;
        Store::start_block_held(
            &sub,
            block,
            (net.net(owner), net.len()),
            info,
            now,
            period_for,
            memory_secs,
            self.key.pass.map(|p| p.0[1 + i]),
        )
    }

    /// Adds `delta` to the client's record of the request's page on this site (nested lock
    /// of the page's sub-cache; `None` when it cannot be had in time: counted, fail open).
    #[inline(always)]
    pub fn add_page(&self, delta: i64, interval: u32, now: Micros) -> Option<Hit> {
        let sub = self.lock_page()?;
        Some(Store::add_held(
            &sub,
            Counter::Page,
            Ident {
                id: self.page_id,
                owner: Owner::Key(self.key),
                prefix: 0,
                host: self.host,
                path: self.path,
            },
            delta,
            interval,
            now,
        ))
    }

    /// The sub-cache of the client's record of the request's page, locked inside the site
    /// lock (with the decision's ident).
    #[inline(always)]
    fn lock_page(&self) -> Option<Locked<'s>> {
        let sub = self.store.sub(Area::Page, self.page_id);
        self.store.lock_as(sub, Area::Page, self.locked.ident())
    }

    /// Restarts the window of the site record. Not a pass holder's: the budget all passes
    /// of one client share stays spent until its window ends, so solving again at once
    /// buys nothing.
    pub fn reset_site(&self, now: Micros) {
        if !self.key.is_pass_holder() {
            Store::reset_held(&self.locked, Counter::Site, self.site_id, now);
        }
    }

    /// Restarts the window of the record of the request's page (not a pass holder's, as
    /// [`SiteGuard::reset_site`]).
    pub fn reset_page(&self, now: Micros) {
        if self.key.is_pass_holder() {
            return;
        }
        if let Some(sub) = self.lock_page() {
            Store::reset_held(&sub, Counter::Page, self.page_id, now);
        }
    }

    /// The farm's lease of the client's site record or of its record of the request's page
    /// (see `crate::farm`) is spent by [`SiteGuard::spend_lease`] and renewed by
    /// [`SiteGuard::set_lease`].
    /// When the client's latest block started (active or remembered; 0: none known): a lease
    /// granted before it is void, so that no lease outlives a block. Lock-free unless the
    /// block sub-cache holds the client's tag.
    #[inline]
    pub fn last_block_start(&self) -> Micros {
        self.block_start_of(self.key.block.0)
    }

    /// A lease of network `i`'s budget granted before this is void (0: none is). The
    /// network's record keeps one lease for two budgets: its members' (the network's name)
    /// and its pass holders' (`~pass`), and each is granted only while the other cannot be:
    /// members only outside the network's block, holders only inside it. So a holder's lease
    /// is void if granted before the latest block started, and a member's if granted before
    /// it ended (neither spends the other's units).
    pub fn net_lease_void_before(&self, i: usize, now: Micros) -> Micros {
        let Some(net) = self.key.nets.get(i).and_then(Option::as_ref) else {
            return 0;
        };
        let (start, until) = self.block_span_of(net.block(self.key.block_owner()).0);
        if self.key.is_pass_holder() || until > now {
            start
        } else {
            until
        }
    }

    #[inline(always)]
    fn block_start_of(&self, id: [u64; 2]) -> Micros {
        self.block_span_of(id).0
    }

    /// When the latest block of `id` started and ends (active or remembered; 0, 0: none
    /// known).
    #[inline(always)]
    fn block_span_of(&self, id: [u64; 2]) -> (Micros, Micros) {
        let sub = self.store.sub(Area::Block, id);
        if !sub.has_block_tag(table::tag_of(id)) {
            return (0, 0);
        }
        match self.store.peek_lock(sub, Area::Block) {
            Some(locked) => locked
                .find(id, Area::Block)
                .map(|slot| locked.rec(slot).read()),
            None => sub.peek(id, Area::Block),
        }
        .map_or((0, 0), |f| (f.origin, f.until))
    }

    /// Spends `delta` units from that record's lease under one lock: `None` when spent,
    /// else the lease as it is (expired, or holding too few units; the default when the
    /// record or its lock cannot be had).
    #[inline]
    /// A lease granted before `void_before` (the client's latest block start) is void.
    pub fn spend_lease(
        &self,
        counter: Counter,
        delta: i64,
        now: Micros,
        void_before: Micros,
    ) -> Option<Lease> {
        match counter {
            Counter::Site => {
                spend_lease_in(&self.locked, self.site_id, counter, delta, now, void_before)
            }
            Counter::Page => match self.lock_page() {
                Some(sub) => spend_lease_in(&sub, self.page_id, counter, delta, now, void_before),
                None => Some(Lease::default()),
            },
        }
    }

    /// Keeps `lease` in that record (absent: nothing is kept, the units go unspent).
    pub fn set_lease(&self, counter: Counter, lease: Lease) {
        match counter {
            Counter::Site => set_lease_in(&self.locked, self.site_id, counter, lease),
            Counter::Page => {
                if let Some(sub) = self.lock_page() {
                    set_lease_in(&sub, self.page_id, counter, lease)
                }
            }
        }
    }

    /// [`SiteGuard::spend_lease`] of network `i`'s site record: the farm's lease of the
    /// network's budget (under the network's name).
    pub fn spend_net_lease(
        &self,
        i: usize,
        delta: i64,
        now: Micros,
        void_before: Micros,
    ) -> Option<Lease> {
        match self.net_lock(i) {
            Some((locked, site)) => {
                spend_lease_in(locked, site.id, Counter::Site, delta, now, void_before)
            }
            None => Some(Lease::default()),
        }
    }

    /// [`SiteGuard::set_lease`] of network `i`'s site record.
    pub fn set_net_lease(&self, i: usize, lease: Lease) {
        if let Some((locked, site)) = self.net_lock(i) {
            set_lease_in(locked, site.id, Counter::Site, lease);
        }
    }

    /// Starts the client's block (see [`Store::start_block`]); `None` when one is already
    /// active (an administrator's, or one a decision on another site started meanwhile) or
    /// the block sub-cache's lock cannot be had.
    ///
    /// A pass holder's block is its client's: the client's block, still at the pass's
    /// generation, moves on to the next generation (a new start, period and difficulty), and
    /// every pass of the old one stops working. No block record of its own is written, so
    /// pass holders cannot crowd their client's block out of the store.
    pub fn start_block(
        &self,
        info: &BlockInfo,
        now: Micros,
        period_for: &dyn Fn(u32) -> u32,
        memory_secs: u32,
    ) -> Option<BlockState> {
        let sub = self.store.sub(Area::Block, self.key.block.0);
        let sub = self.store.lock_as(sub, Area::Block, self.locked.ident())?;
        Store::start_block_held(
            &sub,
            self.key.block,
            (self.key.block_owner(), 0),
            info,
            now,
            period_for,
            memory_secs,
            self.key.pass.map(|p| p.0[0]),
        )
    }
}

/// Spends `delta` units from the lease of record `id` of a held sub-cache: `None` when
/// spent, else the lease as it is (expired, or holding too few units; the default when the
/// record is absent). A lease granted before `void_before` is void.
fn spend_lease_in(
    sub: &Locked,
    id: [u64; 2],
    counter: Counter,
    delta: i64,
    now: Micros,
    void_before: Micros,
) -> Option<Lease> {
    let Some(slot) = sub.find(id, counter.area()) else {
        return Some(Lease::default());
    };
    let rec = sub.rec(slot);
    let mut lease = Lease::unpack(
        rec.get_i64(R_UNTIL),
        rec.get(R_GEN_COUNT),
        rec.get(R_INTERVAL),
    );
    if void_before > 0 && lease.granted <= void_before {
        lease.units = 0;
    }
    if !lease.spend(delta, now) {
        return Some(lease);
    }
    rec.set(R_GEN_COUNT, lease.pack());
    None
}

/// Keeps `lease` in record `id` of a held sub-cache (absent: nothing is kept).
fn set_lease_in(sub: &Locked, id: [u64; 2], counter: Counter, lease: Lease) {
    if let Some(slot) = sub.find(id, counter.area()) {
        let rec = sub.rec(slot);
        rec.set_i64(R_UNTIL, lease.until);
        rec.set(R_GEN_COUNT, lease.pack());
        let interval = rec.get(R_INTERVAL) & u64::from(u32::MAX);
        rec.set(R_INTERVAL, interval | lease.granted_word() << 32);
    }
}

/// A counter's lease of the farm's budget: units this server may serve of the client's
/// count without asking the engine, until the engine's window ends. Kept in the fields of a
/// site or page record that only block records use otherwise (`until`, generation and count),
/// so it costs no space and the layout is unchanged; a new record starts with none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// Units left to spend.
    pub units: u32,
    /// Good until then (the engine's window end).
    pub until: Micros,
    /// What the engine said was left of the budget at the last grant (sizes memcached's next
    /// lease); `None` before the first grant.
    pub left_seen: Option<u32>,
    /// When it was granted, to the second (kept in the spare half of the interval word; read
    /// back as the second's start, so a lease granted in the second a block started counts
    /// as granted before it: void, one more call to the engine).
    pub granted: Micros,
}

impl Lease {
    fn unpack(until: Micros, word: u64, interval_word: u64) -> Lease {
        let seen = (word >> 32) as u32;
        Lease {
            units: word as u32,
            until,
            left_seen: seen.checked_sub(1),
            granted: i64::from((interval_word >> 32) as u32) * 1_000_000,
        }
    }

    fn granted_word(self) -> u64 {
        (self.granted / 1_000_000).clamp(0, i64::from(u32::MAX)) as u64
    }

    fn pack(self) -> u64 {
        u64::from(self.units) | u64::from(self.left_seen.map_or(0, |s| s.saturating_add(1))) << 32
    }

    /// Spends `delta` units if the lease is good now and holds them.
    pub fn spend(&mut self, delta: i64, now: Micros) -> bool {
        let ok = self.until > now && delta >= 0 && i64::from(self.units) >= delta;
        if ok {
            self.units -= delta as u32;
        }
        ok
    }
}

/// What a counting record is identified by, with its id already hashed.
#[derive(Clone, Copy)]
struct Ident<'a> {
    id: [u64; 2],
    /// Whose family and address a new record holds.
    owner: Owner<'a>,
    /// 0, or the prefix length of a network's record.
    prefix: u8,
    host: &'a str,
    path: &'a str,
}

/// The family and address a new counting record holds, worked out only when one is
/// written (a lookup that finds its record needs neither).
#[derive(Clone, Copy)]
enum Owner<'a> {
    /// Those of the key's block identity (the client's; a pass holder's owner's).
    Key(&'a ClientKey),
    /// Those of a network of the client.
    Net(&'a NetKey, IpAddr),
}

impl Owner<'_> {
    fn family_and_addr(self) -> (u8, [u8; 16]) {
        match self {
            Owner::Key(key) => (key.block.1, key.block.2),
            Owner::Net(net, client) => {
                let (_, family, addr) = net.block(client);
                (family, addr)
            }
        }
    }
}

/// Why an existing region cannot be attached.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Shorter than a header.
    #[error("shared region of {0} bytes is too small")]
    TooSmall(usize),
    /// Not a mod_shield region (or its header was overwritten).
    #[error("shared region has no mod_shield header")]
    BadMagic,
    /// Made by another layout version.
    #[error("shared region has layout version {0}, expected {VERSION}", VERSION = VERSION)]
    BadVersion(u32),
    /// Header geometry does not match its own area size or the mapping's length.
    #[error("shared region layout mismatch: {0}")]
    BadGeometry(String),
    /// The header's checksum does not match its fixed fields (damaged).
    #[error("shared region header checksum mismatch")]
    BadChecksum,
}

/// The three tables in one shared region. `Send + Sync`: all shared accesses are atomic.
pub struct Store {
    region: Region,
    geo: Geometry,
    /// The record hash, seeded from a process-local copy of the region's key (never re-read
    /// from shared memory).
    hasher: ahash::RandomState,
    /// Process-local copy of the region's challenge key.
    challenge_key: [u8; 32],
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("region", &self.region)
            .field("area_bytes", &self.geo.area_bytes)
            .field("subcaches", &self.geo.subcaches)
            .field("capacity", &self.geo.capacity())
            .finish()
    }
}

fn header_u64(region: &Region, off: usize) -> u64 {
    region.u64_at(off).load(Ordering::Relaxed)
}

fn wall_clock() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn read_challenge_key(region: &Region) -> [u8; 32] {
    let mut k = [0u8; 32];
    for (i, chunk) in k.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&header_u64(region, H_CHALLENGE_KEY + 8 * i).to_le_bytes());
    }
    k
}

fn secs(s: u32) -> i64 {
    i64::from(s) * MICROS_PER_SEC
}

fn random_key() -> std::io::Result<[u64; 2]> {
    let mut buf = [0u8; 16];
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: writes at most the remaining length into our buffer.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        } else {
            filled += n as usize;
        }
    }
    Ok([
        u64::from_le_bytes(buf[..8].try_into().unwrap_or_default()),
        u64::from_le_bytes(buf[8..].try_into().unwrap_or_default()),
    ])
}

/// The hints word's bits that hold the under-attack override.
const HINT_OVERRIDE_MASK: u64 = 0xff << 8;

impl Store {
    pub const RECORD_BYTES: usize = RECORD_BYTES;

    /// Total mapping size for three areas of `area_bytes` each, plus the header.
    pub fn region_bytes(area_bytes: usize) -> usize {
        layout::region_len(area_bytes)
    }

    /// A new region with a random hash key. `area_bytes` must be at least 8192 (and at most
    /// 4 GiB).
    pub fn create(area_bytes: usize) -> std::io::Result<Store> {
        let geo = Geometry::for_area(area_bytes).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "area size {area_bytes} is outside {MIN_AREA_BYTES}..={MAX_AREA_BYTES} bytes"
                ),
            )
        })?;
        Store::create_in(Region::new(geo.region_len)?, geo.area_bytes)
    }

    /// [`Store::create`] in a given zeroed mapping of `region_bytes(area_bytes)` bytes (a new
    /// store file).
    pub(crate) fn create_in(region: Region, area_bytes: usize) -> std::io::Result<Store> {
        let geo = Geometry::for_area(area_bytes)
            .filter(|g| g.region_len == region.len())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "area size {area_bytes} does not fit a {}-byte region",
                        region.len()
                    ),
                )
            })?;
        let key = random_key()?;
        lock::init_process();
        let set = |off: usize, v: u64| region.u64_at(off).store(v, Ordering::Relaxed);
        set(H_VERSION, u64::from(VERSION) | (RECORD_BYTES as u64) << 32);
        set(H_GEOMETRY, SLOTS as u64 | (geo.subcaches as u64) << 32);
        set(H_AREA_BYTES, area_bytes as u64);
        set(H_REGION_LEN, geo.region_len as u64);
        set(H_KEY0, key[0]);
        set(H_KEY1, key[1]);
        set(H_CREATED, wall_clock() as u64);
        let challenge_key = [random_key()?, random_key()?];
        for (i, word) in challenge_key.iter().flatten().enumerate() {
            set(H_CHALLENGE_KEY + 8 * i, *word);
        }
        let challenge_key = read_challenge_key(&region);
        set(H_MAGIC, MAGIC);
        // The checksum last: a header is sound only once it is complete.
        file::seal_header(&region);
        Ok(Store::with_keys(region, geo, key, challenge_key))
    }

    /// Re-uses a region made by [`Store::create`] (e.g. kept across a graceful restart),
    /// after checking magic, version and geometry. On error the region is dropped (unmapped).
    pub fn attach(region: Region) -> Result<Store, StoreError> {
        let store = Store::attach_uncounted(region)?;
        store
            .region
            .u64_at(H_ATTACHES)
            .fetch_add(1, Ordering::Relaxed);
        Ok(store)
    }

    /// [`Store::attach`] without counting an attach (a tool such as shieldctl).
    pub fn attach_uncounted(region: Region) -> Result<Store, StoreError> {
        if region.len() < HEADER_BYTES {
            return Err(StoreError::TooSmall(region.len()));
        }
        if region.u64_at(H_MAGIC).load(Ordering::Acquire) != MAGIC {
            return Err(StoreError::BadMagic);
        }
        let version = header_u64(&region, H_VERSION);
        if version as u32 != VERSION {
            return Err(StoreError::BadVersion(version as u32));
        }
        if (version >> 32) as usize != RECORD_BYTES {
            return Err(StoreError::BadGeometry(format!(
                "record size {}",
                version >> 32
            )));
        }
        let area_bytes = header_u64(&region, H_AREA_BYTES);
        let geo = usize::try_from(area_bytes)
            .ok()
            .and_then(Geometry::for_area)
            .ok_or_else(|| StoreError::BadGeometry(format!("area size {area_bytes}")))?;
        let geometry = header_u64(&region, H_GEOMETRY);
        let region_len = header_u64(&region, H_REGION_LEN);
        if geometry != (SLOTS as u64 | (geo.subcaches as u64) << 32)
            || region_len != geo.region_len as u64
            || region.len() != geo.region_len
        {
            return Err(StoreError::BadGeometry(format!(
                "area size {area_bytes}: header says {geometry:#x}/{region_len} bytes, \
                 mapping has {} bytes",
                region.len()
            )));
        }
        // Last: geometry errors say more; this catches the rest (key, creation time, the
        // reserved challenge key).
        if !file::sealed(&file::header_bytes(&region)) {
            return Err(StoreError::BadChecksum);
        }
        let key = [header_u64(&region, H_KEY0), header_u64(&region, H_KEY1)];
        lock::init_process();
        let challenge_key = read_challenge_key(&region);
        Ok(Store::with_keys(region, geo, key, challenge_key))
    }

    fn with_keys(region: Region, geo: Geometry, key: [u64; 2], challenge_key: [u8; 32]) -> Store {
        // aHash takes four seed words; the other two are derived from the 128 random bits.
        let hasher = ahash::RandomState::with_seeds(
            key[0],
            key[1],
            key[0].rotate_left(32) ^ 0x243f_6a88_85a3_08d3,
            key[1].rotate_left(32) ^ 0x1319_8a2e_0370_7344,
        );
        Store {
            region,
            geo,
            hasher,
            challenge_key,
        }
    }

    /// The region's random `DOSChallenge` key (read once, at create or attach).
    pub fn challenge_key(&self) -> [u8; 32] {
        self.challenge_key
    }

    /// A private copy of an old region whose header may be unusable, read with `geo` (only
    /// to carry its blocks over: the hash key is not needed for that).
    pub(crate) fn salvaged(region: Region, geo: Geometry) -> Store {
        let store = Store::with_keys(region, geo, [0, 0], [0; 32]);
        // Nobody holds a lock in a private copy: clear whatever the old owner left.
        for area in Area::ALL {
            for sub in store.subs(area) {
                sub.lock_word().store(0, Ordering::Relaxed);
            }
        }
        store
    }

    /// Whether the tables live in a file (`DOSCache shmcb:/path(BYTES)`).
    pub fn is_file_backed(&self) -> bool {
        self.region.is_file()
    }

    /// Writes a file-backed store's pages back to the file (no-op for anonymous memory).
    pub fn flush(&self) -> std::io::Result<()> {
        self.region.flush()
    }

    /// Records the server's `DOSIPv6Prefix` and block memory in the header for shieldctl
    /// (runtime part: not checksummed, rewritten at every configuration pass).
    pub fn set_hints(&self, ipv6_prefix: u8, block_memory_secs: u32) {
        let word = u64::from(ipv6_prefix) | u64::from(block_memory_secs) << 32;
        // Bits 8..16 are the under-attack override, which shieldctl sets: kept.
        let _ =
            self.region
                .u64_at(H_HINTS)
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                    Some(word | old & HINT_OVERRIDE_MASK)
                });
    }

    /// `shieldctl under-attack`'s override (bits 8..16 of the hints word; 0, as in every
    /// older file, is "as configured").
    pub fn under_attack_override(&self) -> crate::attack::Override {
        let word = header_u64(&self.region, H_HINTS);
        crate::attack::Override::from_bits((word >> 8) as u8)
    }

    pub fn set_under_attack_override(&self, o: crate::attack::Override) {
        let bits = u64::from(o.to_bits()) << 8;
        let _ =
            self.region
                .u64_at(H_HINTS)
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                    Some(old & !HINT_OVERRIDE_MASK | bits)
                });
    }

    /// The hints a server left: (DOSIPv6Prefix 1..=128, block memory seconds > 0), each
    /// `None` when absent or out of range.
    pub fn hints(&self) -> (Option<u8>, Option<u32>) {
        let word = header_u64(&self.region, H_HINTS);
        let prefix = (word as u8, (word >> 16) as u32 & 0xffff);
        let memory = (word >> 32) as u32;
        (
            (prefix.1 == 0 && (1..=128).contains(&prefix.0)).then_some(prefix.0),
            (memory > 0).then_some(memory),
        )
    }

    pub fn into_region(self) -> Region {
        self.region
    }

    /// The mapping the tables live in.
    pub fn region(&self) -> &Region {
        &self.region
    }

    pub fn area_bytes(&self) -> usize {
        self.geo.area_bytes
    }

    /// Records per area.
    pub fn capacity(&self) -> usize {
        self.geo.capacity()
    }

    /// When the region was created (µs since the epoch), as recorded in its header.
    pub fn created(&self) -> Micros {
        header_u64(&self.region, H_CREATED) as i64
    }

    /// Operations that gave up waiting for a lock (the caller failed open), since creation.
    pub fn fail_opens(&self) -> u64 {
        u64::from(self.region.u32_at(H_FAIL_OPENS).load(Ordering::Relaxed))
    }

    /// Active blocks evicted since creation because their sub-cache held nothing but active
    /// blocks (the store is too small for the attack).
    pub fn blocks_evicted(&self) -> u64 {
        u64::from(self.region.u32_at(H_BLOCKS_EVICTED).load(Ordering::Relaxed))
    }

    /// Live site and page records evicted since creation (all sub-caches summed: for the
    /// once-a-minute pressure check and the status page, not the request path).
    pub fn live_evicted(&self) -> u64 {
        [Area::Site, Area::Page]
            .into_iter()
            .flat_map(|a| self.subs(a))
            .map(|sub| sub.counter(C_EVICTED))
            .fold(0, u64::saturating_add)
    }

    /// How many times the region was attached (restarts that kept it).
    pub fn attaches(&self) -> u64 {
        header_u64(&self.region, H_ATTACHES)
    }

    /// 128-bit keyed identity of a record (length-prefixed fields).
    #[inline]
    pub fn key_id(&self, area: Area, key: &KeyParts) -> [u64; 2] {
        let (family, addr) = encode_client(key.client);
        self.id_of(area, family, &addr, key.host, key.path)
    }

    /// The ids of a client's records come from one keyed aHash stream, finished at three
    /// points: the family and the 16 address bytes (the block id); then `len(host)`, `host`
    /// (the site id); then `len(path)`, `path` (the page id). aHash's `finish` does not
    /// consume the state, so one request hashes its client, host and path once each. The
    /// length prefixes keep `("ab","c")` and `("a","bc")` apart; ids of different areas
    /// live in different tables. The 64-bit hash is the identity; the second word is a
    /// fixed bijection of it, which picks the sub-cache (so tag and sub-cache come from
    /// differently mixed bits).
    #[inline(always)]
    fn id_of(&self, area: Area, family: u8, addr: &[u8; 16], host: &str, path: &str) -> [u64; 2] {
        let client = self.client_chain(family, addr);
        match area {
            Area::Block => id_from(&client),
            Area::Site => id_from(&with_host(client, host)),
            Area::Page => id_from(&with_path(with_host(client, host), path)),
        }
    }

    /// The hash stream after the client (see [`Store::id_of`]).
    #[inline(always)]
    fn client_chain(&self, family: u8, addr: &[u8; 16]) -> Chain {
        self.net_chain(family, addr, 0)
    }

    /// The hash stream after a network (`len` > 0) or a client (`len` 0): the prefix length
    /// is hashed in the family's word, so `192.0.2.0/24` never has the ids of the client
    /// `192.0.2.0`, and a client's ids are what they were before networks were counted.
    #[inline(always)]
    fn net_chain(&self, family: u8, addr: &[u8; 16], len: u8) -> Chain {
        let mut h = self.hasher.build_hasher();
        h.write_u64(u64::from(family) | u64::from(len) << 8);
        h.write_u128(u128::from_le_bytes(*addr));
        Chain(h)
    }

    /// The sub-cache an id lives in (multiply-shift on the second hash half).
    #[inline(always)]
    fn sub(&self, area: Area, id: [u64; 2]) -> Sub<'_> {
        let offset = self.geo.subcache_offset(area.index(), self.sub_index(id));
        Sub::new(&self.region, offset)
    }

    #[inline(always)]
    fn sub_index(&self, id: [u64; 2]) -> usize {
        ((u128::from(id[1]) * self.geo.subcaches as u128) >> 64) as usize
    }

    fn subs(&self, area: Area) -> impl Iterator<Item = Sub<'_>> + '_ {
        (0..self.geo.subcaches)
            .map(move |i| Sub::new(&self.region, self.geo.subcache_offset(area.index(), i)))
    }

    /// Takes a sub-cache's lock; after taking over from a dead holder, drops whatever it left
    /// half-written. A give-up is counted in the header (fail-opens).
    #[inline]
    fn lock<'s>(&self, sub: Sub<'s>, area: Area) -> Option<Locked<'s>> {
        self.lock_as(sub, area, lock::ident())
    }

    /// [`Store::lock`] writing the ident `me` (see [`lock::acquire_as`]).
    #[inline(always)]
    fn lock_as<'s>(&self, sub: Sub<'s>, area: Area, me: u64) -> Option<Locked<'s>> {
        sub.prefetch_tags();
        let Some(held) = lock::acquire_as(sub.lock_word(), me, lock::LOCK_TIMEOUT) else {
            self.region
                .u32_at(H_FAIL_OPENS)
                .fetch_add(1, Ordering::Relaxed);
            return None;
        };
        if held.stolen() {
            sub.bump_repair(Repair::Steals);
            sub.repair(area);
        }
        Some(Locked::new(sub, held))
    }

    /// Like [`Store::lock`] for looks that can do without (a lock-free read, or skipping a
    /// sub-cache of a listing): waits only [`lock::PEEK_TIMEOUT`], and a give-up is no
    /// fail-open.
    #[inline]
    fn peek_lock<'s>(&self, sub: Sub<'s>, area: Area) -> Option<Locked<'s>> {
        sub.prefetch_tags();
        let held = lock::acquire_within(sub.lock_word(), lock::PEEK_TIMEOUT)?;
        if held.stolen() {
            sub.bump_repair(Repair::Steals);
            sub.repair(area);
        }
        Some(Locked::new(sub, held))
    }

    /// Recomputes every block sub-cache's tag summary, and every site and page sub-cache's
    /// occupied slots, under its lock, for a region taken over from a file (see
    /// `layout.rs`); where the lock cannot be had in time, a tag summary becomes all ones,
    /// which rules nothing out.
    pub(crate) fn resummarize(&self) {
        for area in Area::ALL {
            for sub in self.subs(area) {
                match self.peek_lock(sub, area) {
                    Some(locked) => locked.resummarize(area),
                    None if area == Area::Block => sub.rule_nothing_out(),
                    // (An occupied-slots word left as it is only steers evictions.)
                    None => {}
                }
            }
        }
    }

    fn count_reclaim(sub: &Sub, how: Reclaim) {
        match how {
            Reclaim::Empty => {}
            Reclaim::Expired => sub.bump(C_EXPIRED),
            Reclaim::Evicted => sub.bump(C_EVICTED),
            Reclaim::EvictedActive => {
                sub.bump(C_EVICTED);
                sub.bump_header(H_BLOCKS_EVICTED);
            }
        }
        sub.bump(C_INSERTED);
    }

    /// Adds `delta` (may be negative) to the site/page record of `key` within a fixed window
    /// of `interval` seconds: if absent or `now - origin >= interval`, the window restarts
    /// (origin = now, score 0) before adding. Scores never go below 0. The record expires at
    /// origin + interval. `None` when a sub-cache lock could not be had in time (callers
    /// fail open). Through the guard requests take ([`SiteGuard::add_site`],
    /// [`SiteGuard::add_page`]), for the client alone.
    pub fn add(
        &self,
        counter: Counter,
        key: &KeyParts,
        delta: i64,
        interval: u32,
        now: Micros,
    ) -> Option<Hit> {
        // The client alone (no networks): a write that is not a request's (the challenge
        // ledger, tools, tests) takes the request's path.
        let client = self.client_key_in(key.client, [0, 0]);
        let guard = self.lock_site(&client, key.host, key.path)?;
        match counter {
            Counter::Site => Some(guard.add_site(delta, interval, now)),
            Counter::Page => guard.add_page(delta, interval, now),
        }
    }

    /// The body of every addition; the caller holds `sub`'s lock.
    #[inline(always)]
    fn add_held(
        sub: &Locked,
        counter: Counter,
        key: Ident,
        delta: i64,
        interval: u32,
        now: Micros,
    ) -> Hit {
        let kind = counter.area();
        let span = secs(interval);
        if let Some(slot) = sub.find(key.id, kind) {
            let rec = sub.rec(slot);
            let origin = rec.get_i64(R_ORIGIN);
            let expires = rec.get_i64(R_EXPIRES);
            let age = now.saturating_sub(origin);
            // Same window: unexpired, younger than the interval, and not from far in the
            // future (a clock stepped back by more than one interval restarts it).
            let (origin, base) = if expires > now && age < span && age > -span.max(1) {
                sub.bump(C_HITS);
                (origin, rec.get_i64(R_SCORE).max(0))
            } else {
                sub.bump(C_MISSES);
                if expires <= now {
                    sub.bump(C_EXPIRED);
                }
                (now, 0)
            };
            let score = base.saturating_add(delta).max(0);
            rec.set_i64(R_SCORE, score);
            rec.set_i64(R_ORIGIN, origin);
            rec.set_i64(R_EXPIRES, origin.saturating_add(span));
            rec.set_i64(R_LAST_USED, now);
            if origin == now {
                // Cold line: only on a new window. (The spare half holds a farm lease's grant
                // time, which outlives the window of this server's own count.)
                let spare = rec.get(R_INTERVAL) & !u64::from(u32::MAX);
                rec.set(R_INTERVAL, spare | u64::from(interval));
            }
            return Hit { score, origin };
        }

        sub.bump(C_MISSES);
        let (slot, how) = sub.victim(kind, now);
        Self::count_reclaim(sub, how);
        let score = delta.max(0);
        let (family, addr) = key.owner.family_and_addr();
        sub.put(
            slot,
            &Fields {
                id: key.id,
                addr: client_words(&addr),
                meta: Meta {
                    kind: Some(kind),
                    family,
                    rule: None,
                    host_len: 0,
                    path_len: 0,
                    prefix: key.prefix,
                },
                score,
                origin: now,
                expires: now.saturating_add(span),
                last_used: now,
                until: 0,
                generation: 0,
                count: 0,
                interval,
                text: Text::new(key.host, key.path),
            },
        );
        Hit { score, origin: now }
    }

    /// Restarts the window of that record (score 0, origin now, same interval); no-op when
    /// absent or expired, or when a lock cannot be had. Through the guard requests take
    /// ([`SiteGuard::reset_site`], [`SiteGuard::reset_page`]).
    pub fn reset(&self, counter: Counter, key: &KeyParts, now: Micros) {
        let client = self.client_key_in(key.client, [0, 0]);
        if let Some(guard) = self.lock_site(&client, key.host, key.path) {
            match counter {
                Counter::Site => guard.reset_site(now),
                Counter::Page => guard.reset_page(now),
            }
        };
    }

    /// The body of every window restart; the caller holds `sub`'s lock.
    fn reset_held(sub: &Locked, counter: Counter, id: [u64; 2], now: Micros) {
        if let Some(slot) = sub.find(id, counter.area()) {
            let rec = sub.rec(slot);
            let (origin, expires) = (rec.get_i64(R_ORIGIN), rec.get_i64(R_EXPIRES));
            if expires > now {
                // expires = origin + interval (set together by `add`).
                let span = expires.saturating_sub(origin).max(0);
                rec.set_i64(R_SCORE, 0);
                rec.set_i64(R_ORIGIN, now);
                rec.set_i64(R_EXPIRES, now.saturating_add(span));
                rec.set_i64(R_LAST_USED, now);
            }
        }
    }

    fn block_id(&self, client: IpAddr) -> ([u64; 2], u8, [u8; 16]) {
        self.net_block_id(client, 0)
    }

    /// The block identity of network `net`/`len` (`len` 0: the client `net` itself).
    fn net_block_id(&self, net: IpAddr, len: u8) -> ([u64; 2], u8, [u8; 16]) {
        let (family, addr) = encode_client(net);
        (id_from(&self.net_chain(family, &addr, len)), family, addr)
    }

    fn block_state(client: IpAddr, f: &Fields) -> Option<BlockState> {
        let (host, uri) = f.text.strings();
        Some(BlockState {
            client,
            prefix: f.meta.prefix,
            rule: f.meta.rule?,
            generation: f.generation,
            started: f.origin,
            until: f.until,
            score: f.score,
            count: f.count,
            interval: f.interval,
            host,
            uri,
        })
    }

    /// The client's block if one is active (`until > now`). The common "no block" answer
    /// takes no lock and allocates nothing. If the lock cannot be had, the record is read
    /// without it (fail closed for known blocks).
    pub fn active_block(&self, client: IpAddr, now: Micros) -> Option<BlockState> {
        let (id, _, _) = self.block_id(client);
        self.active_block_id(|| client, id, now, true)
    }

    /// `counted`: the lookup counts in the block area's hits and misses (the re-check under
    /// a decision's lock does not, so each request counts one lookup). `client`: whose block
    /// it would be (worked out only when a tag matches).
    #[inline(always)]
    fn active_block_id(
        &self,
        client: impl FnOnce() -> IpAddr,
        id: [u64; 2],
        now: Micros,
        counted: bool,
    ) -> Option<BlockState> {
        let sub = self.sub(Area::Block, id);
        if !sub.has_block_tag(table::tag_of(id)) {
            if counted {
                sub.bump_unlocked(C_MISSES);
            }
            return None;
        }
        self.confirm_block(sub, client(), id, now, counted)
    }

    /// The rest of [`Store::active_block_id`] when a tag matched: read the record under the
    /// lock (without it when it cannot be had: fail closed for known blocks).
    #[cold]
    #[inline(never)]
    fn confirm_block(
        &self,
        sub: Sub<'_>,
        client: IpAddr,
        id: [u64; 2],
        now: Micros,
        counted: bool,
    ) -> Option<BlockState> {
        let bump = |counter| {
            if counted {
                sub.bump_unlocked(counter)
            }
        };
        let found = match self.peek_lock(sub, Area::Block) {
            Some(locked) => locked
                .find(id, Area::Block)
                .map(|slot| locked.rec(slot).read()),
            None => sub.peek(id, Area::Block),
        }
        .filter(|f| f.until > now && f.meta.valid_for(Area::Block));
        match found {
            Some(f) => {
                bump(C_HITS);
                Self::block_state(client, &f)
            }
            None => {
                bump(C_MISSES);
                None
            }
        }
    }

    /// Starts a block for `client` unless one is active. The generation is the remembered
    /// one + 1 while a block record is still remembered, else 1; the block lasts
    /// `period_for(generation)` seconds and is remembered until `until + memory_secs`.
    /// `Some` only for the one caller that started it; `None` when already blocked or when
    /// a lock could not be had. Through the guard requests take ([`SiteGuard::start_block`],
    /// under the client's site lock of `info.host`).
    pub fn start_block(
        &self,
        client: IpAddr,
        info: &BlockInfo,
        now: Micros,
        period_for: &dyn Fn(u32) -> u32,
        memory_secs: u32,
    ) -> Option<BlockState> {
        let key = self.client_key_in(client, [0, 0]);
        let guard = self.lock_site(&key, info.host, "")?;
        guard.start_block(info, now, period_for, memory_secs)
    }

    /// The body of every block start; the caller holds `sub`'s lock. `renew`: an
    /// active block of that generation is no obstacle but is followed by the next
    /// generation's (a pass holder crossed its count, see [`SiteGuard::start_block`]).
    #[allow(clippy::too_many_arguments)]
    fn start_block_held(
        sub: &Locked,
        (id, family, addr): ([u64; 2], u8, [u8; 16]),
        (client, prefix): (IpAddr, u8),
        info: &BlockInfo,
        now: Micros,
        period_for: &dyn Fn(u32) -> u32,
        memory_secs: u32,
        renew: Option<u32>,
    ) -> Option<BlockState> {
        let (generation, slot) = match sub.find(id, Area::Block) {
            Some(slot) => {
                let rec = sub.rec(slot);
                if rec.get_i64(R_UNTIL) > now && renew != Some(rec.get(R_GEN_COUNT) as u32) {
                    return None;
                }
                let remembered = if rec.get_i64(R_EXPIRES) > now {
                    rec.get(R_GEN_COUNT) as u32
                } else {
                    sub.bump(C_EXPIRED);
                    0
                };
                (remembered.saturating_add(1), slot)
            }
            None => {
                let (slot, how) = sub.victim(Area::Block, now);
                Self::count_reclaim(sub, how);
                (1, slot)
            }
        };
        let until = now.saturating_add(secs(period_for(generation)));
        let fields = Self::block_fields(
            (id, family, addr),
            prefix,
            info,
            (now, until, memory_secs),
            generation,
        );
        sub.put(slot, &fields);
        Self::block_state(client, &fields)
    }

    /// The block record of `generation` for the client or network `id`, started `now`,
    /// lasting until `until` and remembered `memory_secs` longer: the one shape of every
    /// block record (started by a count or by an administrator).
    fn block_fields(
        (id, family, addr): ([u64; 2], u8, [u8; 16]),
        prefix: u8,
        info: &BlockInfo,
        (now, until, memory_secs): (Micros, Micros, u32),
        generation: u32,
    ) -> Fields {
        Fields {
            id,
            addr: client_words(&addr),
            meta: Meta {
                kind: Some(Area::Block),
                family,
                rule: Some(info.rule),
                host_len: 0,
                path_len: 0,
                prefix,
            },
            score: info.score,
            origin: now,
            expires: until.saturating_add(secs(memory_secs)),
            last_used: now,
            until,
            generation,
            count: info.count,
            interval: info.interval,
            text: Text::new(info.host, info.uri),
        }
    }

    /// The client's block-record identity, hashed once per request and reused by
    /// [`Store::active_block_of`] and [`Store::lock_site`].
    #[inline(always)]
    pub fn client_key(&self, client: IpAddr) -> ClientKey {
        self.client_key_in(client, [0, 0])
    }

    /// [`Store::client_key`] of a client counted in the networks of prefix lengths `lens`
    /// too (narrowest first; 0 = none): their block identities and hash streams.
    #[inline(always)]
    pub fn client_key_in(&self, client: IpAddr, lens: [u8; 2]) -> ClientKey {
        let (family, addr) = encode_client(client);
        let chain = self.client_chain(family, &addr);
        ClientKey {
            client,
            block: (id_from(&chain), family, addr),
            chain,
            // (Not one closure for both: it would be called, not inlined.)
            nets: [
                NetKey::new(self, client, lens[0]),
                NetKey::new(self, client, lens[1]),
            ],
            pass: None,
        }
    }

    /// The key a challenge pass holder of `owner` is counted under: the records of
    /// `holder` (one address for all passes of the owner, so they share one budget), the
    /// networks and blocks of `owner` (see [`SiteGuard::block`] and
    /// [`SiteGuard::start_block`]), for a pass earned in `epoch` (see [`Store::epoch`]).
    pub fn holder_key(&self, holder: IpAddr, owner: &ClientKey, epoch: Epoch) -> ClientKey {
        ClientKey {
            block: owner.block,
            nets: owner.nets.clone(),
            pass: Some(epoch),
            ..self.client_key(holder)
        }
    }

    /// The generations of the active blocks of the key's client (a pass holder's owner) and
    /// of its networks: what a pass earned now is good for.
    pub fn epoch(&self, key: &ClientKey, now: Micros) -> Epoch {
        self.epoch_key(key, now, false)
    }

    fn epoch_key(&self, key: &ClientKey, now: Micros, counted: bool) -> Epoch {
        let owner = key.block_owner();
        let generation = |b: Option<BlockState>| b.map_or(0, |b| b.generation);
        let net = |i: usize| {
            key.nets[i].as_ref().map_or(0, |n| {
                generation(self.active_block_id(|| n.net(owner), n.id(), now, false))
            })
        };
        Epoch([
            generation(self.active_block_id(|| owner, key.block.0, now, counted)),
            net(0),
            net(1),
        ])
    }

    /// [`Store::active_block`] with the key already hashed, for the client and each of the
    /// networks the key counts in (the client's first). Each network costs one more load of
    /// a block sub-cache's tag summary when it is not blocked.
    #[inline(always)]
    pub fn active_block_of(&self, key: &ClientKey, now: Micros) -> Option<BlockState> {
        self.active_block_key(key, now, true)
    }

    /// The active block of `net`/`len` (a network's block; `len` 0: a client's).
    pub fn active_net_block(&self, net: IpAddr, len: u8, now: Micros) -> Option<BlockState> {
        let (id, _, _) = self.net_block_id(net, len);
        self.active_block_id(|| net, id, now, true)
    }

    /// The client's block or its networks'; only the client's lookup counts in the block
    /// area's hits and misses (one lookup per request, as before networks were counted).
    #[inline(always)]
    fn active_block_key(&self, key: &ClientKey, now: Micros, counted: bool) -> Option<BlockState> {
        let owner = || key.block_owner();
        if let Some(b) = self.active_block_id(owner, key.block.0, now, counted) {
            return Some(b);
        }
        for net in key.nets.iter().flatten() {
            if let Some(b) = self.active_block_id(|| net.net(owner()), net.id(), now, false) {
                return Some(b);
            }
        }
        None
    }

    /// Locks the sub-cache of the client's site record on `host` (its virtual host), for
    /// deciding one request of that client there, for page `path`: whether it is blocked,
    /// what it adds, whether it starts a block. Decisions about one client on one site are
    /// thus made one after the other (see `layout.rs`). `None` when the lock could not be had
    /// in time (counted; the caller fails open).
    #[inline(always)]
    pub fn lock_site<'s>(
        &'s self,
        key: &'s ClientKey,
        host: &'s str,
        path: &'s str,
    ) -> Option<SiteGuard<'s>> {
        let site = with_host(key.chain.clone(), host);
        let site_id = id_from(&site);
        let page_id = id_from(&with_path(site, path));
        let sub = self.sub(Area::Site, site_id);
        if key.nets[0].is_none() {
            let locked = self.lock(sub, Area::Site)?;
            return Some(SiteGuard {
                store: self,
                key,
                host,
                site_id,
                path,
                page_id,
                locked,
                nets: [None, None],
            });
        }
        self.lock_site_and_nets(key, host, path, (site_id, page_id))
    }

    /// [`Store::lock_site`] for a client counted in networks too: the client's site record
    /// and its networks' (up to three sub-caches of the site area) are locked in ascending
    /// sub-cache index, each sub-cache once. Every decision that holds more than one site
    /// lock takes them in that order, so two decisions never wait on each other in a cycle
    /// (a sub-cache may hold one client's own record and another's network record, so an
    /// order by role, client before network, would not be enough).
    #[inline(always)]
    fn lock_site_and_nets<'s>(
        &'s self,
        key: &'s ClientKey,
        host: &'s str,
        path: &'s str,
        (site_id, page_id): ([u64; 2], [u64; 2]),
    ) -> Option<SiteGuard<'s>> {
        // (One closure for both would be called, not inlined.)
        let net_ids = [
            key.nets[0].as_ref().map(|n| site_id_after(&n.chain, host)),
            key.nets[1].as_ref().map(|n| site_id_after(&n.chain, host)),
        ];
        // (sub-cache index, record): 0 the client, 1 and 2 its networks (absent: last).
        let slot =
            |id: Option<[u64; 2]>, r: usize| (id.map_or(usize::MAX, |id| self.sub_index(id)), r);
        let mut order = [
            slot(Some(site_id), 0),
            slot(net_ids[0], 1),
            slot(net_ids[1], 2),
        ];
        // Three compare-exchanges sort them; ties keep the lower record first, so the
        // client's record always takes the lock of a sub-cache it shares.
        let swap_if = |o: &mut [(usize, usize); 3], a: usize, b: usize| {
            if o[a] > o[b] {
                o.swap(a, b);
            }
        };
        swap_if(&mut order, 0, 1);
        swap_if(&mut order, 1, 2);
        swap_if(&mut order, 0, 1);
        let me = lock::ident();
        let mut locks: [Option<Locked<'s>>; 3] = [None, None, None];
        // The sub-cache locked last, and the record that took its lock.
        let mut previous = (usize::MAX, 0);
        for (index, r) in order {
            if index == usize::MAX {
                break;
            }
            locks[r] = Some(if index == previous.0 {
                locks[previous.1].as_ref()?.alias()
            } else {
                let sub = Sub::new(
                    &self.region,
                    self.geo.subcache_offset(Area::Site.index(), index),
                );
                previous = (index, r);
                self.lock_as(sub, Area::Site, me)?
            });
        }
        let [client_lock, first, second] = locks;
        let net = |id: Option<[u64; 2]>, locked: Option<Locked<'s>>| {
            Some(NetSite {
                id: id?,
                locked: locked?,
            })
        };
        Some(SiteGuard {
            store: self,
            key,
            host,
            site_id,
            path,
            page_id,
            // Never shared with an earlier record (ties go to the client), so always its own.
            locked: client_lock?,
            nets: [net(net_ids[0], first), net(net_ids[1], second)],
        })
    }

    /// Copies active blocks and remembered generations from `old` (e.g. a region of another
    /// size kept across a restart). Where both know a client, the higher generation (then the
    /// later end) wins. Returns how many records were copied.
    pub fn copy_blocks_from(&self, old: &Store, now: Micros) -> usize {
        if self.region.as_ptr() == old.region.as_ptr() {
            return 0;
        }
        let mut copied = 0;
        for old_sub in old.subs(Area::Block) {
            let Some(locked) = old.lock(old_sub, Area::Block) else {
                continue;
            };
            let records: Vec<Fields> = locked.live(Area::Block, now).collect();
            drop(locked);
            for mut f in records {
                f.id = self.net_block_id(f.client(), f.meta.prefix).0;
                let sub = self.sub(Area::Block, f.id);
                let Some(sub) = self.lock(sub, Area::Block) else {
                    continue;
                };
                let slot = match sub.find(f.id, Area::Block) {
                    Some(slot) => {
                        let mine = sub.rec(slot);
                        let mine = (mine.get(R_GEN_COUNT) as u32, mine.get_i64(R_UNTIL));
                        if (f.generation, f.until) <= mine {
                            continue;
                        }
                        slot
                    }
                    None => {
                        let (slot, how) = sub.victim(Area::Block, now);
                        Self::count_reclaim(&sub, how);
                        slot
                    }
                };
                sub.put(slot, &f);
                copied += 1;
            }
        }
        copied
    }

    pub fn stats(&self, area: Area) -> AreaStats {
        let mut s = AreaStats {
            capacity: self.geo.capacity() as u64,
            ..AreaStats::default()
        };
        // Counters live in shared memory: garbage must not overflow (saturate).
        for sub in self.subs(area) {
            s.entries += sub.occupied(area, None) as u64;
            s.inserted = s.inserted.saturating_add(sub.counter(C_INSERTED));
            s.expired = s.expired.saturating_add(sub.counter(C_EXPIRED));
            s.evicted = s.evicted.saturating_add(sub.counter(C_EVICTED));
            s.hits = s.hits.saturating_add(sub.counter(C_HITS));
            s.misses = s.misses.saturating_add(sub.counter(C_MISSES));
        }
        s
    }

    /// Records unexpired at `now` (for blocks: active or still remembered).
    pub fn live_entries(&self, area: Area, now: Micros) -> u64 {
        self.subs(area)
            .map(|sub| sub.occupied(area, Some(now)) as u64)
            .sum()
    }

    /// Corrupt records dropped and locks taken over from dead holders, for this area.
    pub fn repairs(&self, area: Area) -> (u64, u64) {
        self.subs(area).fold((0, 0), |(d, s), sub| {
            (
                d.saturating_add(sub.repairs(Repair::Dropped)),
                s.saturating_add(sub.repairs(Repair::Steals)),
            )
        })
    }

    /// Live (unexpired) records, most significant first (blocks by `until`, others by
    /// score), at most `limit`. Sub-caches whose lock cannot be had are skipped.
    pub fn snapshot(&self, area: Area, now: Micros, limit: usize) -> Vec<RecordView> {
        let mut out = Vec::new();
        for sub in self.subs(area) {
            let Some(sub) = self.peek_lock(sub, area) else {
                continue;
            };
            out.extend(sub.live(area, now).map(|f| view(area, &f)));
        }
        if area == Area::Block {
            out.sort_by_key(|r| std::cmp::Reverse(r.block_until));
        } else {
            out.sort_by_key(|r| std::cmp::Reverse(r.score));
        }
        out.truncate(limit);
        out
    }

    /// Active blocks (`until > now`), latest-ending first, at most `limit`.
    pub fn active_blocks(&self, now: Micros, limit: usize) -> Vec<BlockState> {
        let mut out = Vec::new();
        for sub in self.subs(Area::Block) {
            let Some(sub) = self.peek_lock(sub, Area::Block) else {
                continue;
            };
            out.extend(
                sub.live(Area::Block, now)
                    .filter(|f| f.until > now)
                    .filter_map(|f| Self::block_state(f.client(), &f)),
            );
        }
        out.sort_by_key(|b| std::cmp::Reverse(b.until));
        out.truncate(limit);
        out
    }

    /// Test hook: takes the lock of `key`'s sub-cache and never releases it (simulates a
    /// worker that dies while holding it). `false` if the lock could not be had.
    #[doc(hidden)]
    pub fn debug_hold_lock(&self, area: Area, key: &KeyParts) -> bool {
        let sub = self.sub(area, self.key_id(area, key));
        match lock::acquire_within(sub.lock_word(), lock::PEEK_TIMEOUT) {
            Some(held) => {
                held.leak();
                true
            }
            None => false,
        }
    }
}
