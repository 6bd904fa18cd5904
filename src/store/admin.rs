//! What an administrator's tool (shieldctl) does to a running server's store: read one
//! client's records, start a block of a given length, end a block, forget a generation.
//! Each write is one record under its sub-cache's lock, like the server's own writes, so a
//! tool killed at any instant leaves at most a half-written record that the next locker
//! drops (see `lock`).

use super::layout::*;
use super::{secs, Area, BlockInfo, BlockState, Counter, Micros, RecordView, Store};
use std::net::IpAddr;

/// A sub-cache lock could not be had in time (the caller may try again).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the store is busy (a sub-cache lock could not be had in time)")]
pub struct Busy;

/// A client's block record: an active block, or a past one remembered for its generation.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockRecord {
    pub block: BlockState,
    pub active: bool,
    /// The generation is remembered until then.
    pub remembered_until: Micros,
}

/// What [`Store::end_block`] found and did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ended {
    /// The block that was active (and has now ended).
    pub ended: Option<BlockState>,
    /// The generation that was remembered (active or not), if any.
    pub generation: Option<u32>,
    /// The record was dropped (`forget`), so the next block is generation 1.
    pub forgotten: bool,
}

/// Why a text names no [`Target`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("not an IPv4 or IPv6 address")]
    NotAnAddress,
    #[error("the prefix is not a number")]
    BadPrefix,
    #[error("an IPv4 client is one address, a network /24")]
    NotV4Level,
    #[error(
        "the server groups IPv6 clients by /{ipv6_prefix} (see --ipv6-prefix) and counts networks by /56 or 48"
    )]
    NotV6Level { ipv6_prefix: u8 },
}

/// What an administrator names: a client (as the server keys it: normalised, IPv6 masked to
/// `DOSIPv6Prefix`), or a counted network (`2001:db8:aa::/48`, `192.0.2.0/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The client, or the network address.
    pub addr: IpAddr,
    /// 0 for a client; else the network's prefix length.
    pub prefix: u8,
}

impl Target {
    /// `ADDR` (a client; IPv6 grouped by `ipv6_prefix`), `ADDR/N` with N the group's length
    /// (the same client, as `list` prints groups), or `ADDR/LEN` with LEN a counted network
    /// level of the address's family (24 for IPv4; 56 or 48 for IPv6, when wider than the
    /// group). The error says why, for a message that names the text.
    pub fn parse(text: &str, ipv6_prefix: u8) -> Result<Target, TargetError> {
        let (addr, suffix) = match text.split_once('/') {
            Some((a, n)) => (a, Some(n)),
            None => (text, None),
        };
        let ip = crate::client::normalise(
            addr.parse::<IpAddr>()
                .map_err(|_| TargetError::NotAnAddress)?,
        );
        let client = Target {
            addr: crate::client::group(ip, ipv6_prefix),
            prefix: 0,
        };
        let Some(n) = suffix else {
            return Ok(client);
        };
        let n = n.parse::<u8>().map_err(|_| TargetError::BadPrefix)?;
        let whole = match ip {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => ipv6_prefix,
        };
        let level = crate::prefix::LEVELS.iter().any(|&(family, len, _)| {
            len == n && len < whole && (family == crate::prefix::Family::V4) == ip.is_ipv4()
        });
        if n == whole {
            Ok(client)
        } else if level {
            Ok(Target {
                addr: crate::prefix::network(ip, n),
                prefix: n,
            })
        } else {
            Err(match ip {
                IpAddr::V4(_) => TargetError::NotV4Level,
                IpAddr::V6(_) => TargetError::NotV6Level { ipv6_prefix },
            })
        }
    }

    /// How the server names it in its log line (`2001:db8:7:7::/64`, `2001:db8:aa::/48`).
    pub fn label(&self, ipv6_prefix: u8) -> String {
        crate::prefix::label(self.addr, self.prefix, ipv6_prefix)
    }

    /// The target of a block as stored.
    pub fn of(block: &BlockState) -> Target {
        Target {
            addr: block.client,
            prefix: block.prefix,
        }
    }
}

/// Manual blocks are stored as site blocks with count 0 (no automatic block has count 0:
/// `DOSSiteCount`/`DOSPageCount` are positive), so tools can tell them apart.
pub fn is_manual(block: &BlockState) -> bool {
    block.count == 0
}

impl Store {
    /// The client's block record, active or remembered (`expires > now`). `client` is the
    /// grouped client, as the server keys it. A look only (the caller may retry): a busy
    /// sub-cache is no fail-open, and a read-only tool's copy of a lock a worker held never
    /// makes it wait long (see `ToolAccess::ReadOnly`).
    pub fn block_record(&self, client: IpAddr, now: Micros) -> Result<Option<BlockRecord>, Busy> {
        self.block_record_net(client, 0, now)
    }

    /// The block record of network `net`/`len` (`len` 0: of the client `net`).
    pub fn block_record_net(
        &self,
        net: IpAddr,
        len: u8,
        now: Micros,
    ) -> Result<Option<BlockRecord>, Busy> {
        let client = net;
        let (id, _, _) = self.net_block_id(net, len);
        let sub = self.sub(Area::Block, id);
        let sub = self.peek_lock(sub, Area::Block).ok_or(Busy)?;
        let Some(slot) = sub.find(id, Area::Block) else {
            return Ok(None);
        };
        let f = sub.rec(slot).read();
        if f.expires <= now {
            return Ok(None);
        }
        Ok(Store::block_state(client, &f).map(|block| BlockRecord {
            active: f.until > now,
            remembered_until: f.expires,
            block,
        }))
    }

    /// Blocks `client` for `seconds` from now, whatever its scores (an administrator's
    /// block). An active block is replaced (same generation, new end); otherwise the
    /// generation is the remembered one + 1, or 1. Remembered until the end + `memory_secs`.
    pub fn block_manually(
        &self,
        client: IpAddr,
        seconds: u32,
        memory_secs: u32,
        now: Micros,
    ) -> Result<BlockState, Busy> {
        let (id, family, addr) = self.block_id(client);
        let sub = self.sub(Area::Block, id);
        let sub = self.lock(sub, Area::Block).ok_or(Busy)?;
        let (generation, slot) = match sub.find(id, Area::Block) {
            Some(slot) => {
                let f = sub.rec(slot).read();
                let generation = if f.expires <= now {
                    sub.bump(C_EXPIRED);
                    1
                } else if f.until > now {
                    f.generation.max(1)
                } else {
                    f.generation.saturating_add(1)
                };
                (generation, slot)
            }
            None => {
                let (slot, how) = sub.victim(Area::Block, now);
                Store::count_reclaim(&sub, how);
                (1, slot)
            }
        };
        let until = now.saturating_add(secs(seconds));
        // An administrator's block: no count crossed, no host or URI (see `is_manual`).
        let info = BlockInfo {
            rule: Counter::Site,
            score: 0,
            count: 0,
            interval: seconds,
            host: "",
            uri: "",
        };
        let fields = Store::block_fields(
            (id, family, addr),
            0,
            &info,
            (now, until, memory_secs),
            generation,
        );
        sub.put(slot, &fields);
        Store::block_state(client, &fields).ok_or(Busy)
    }

    /// Writes a block another server of the farm started (or a tool announced): the record
    /// as it was started there, unless this store already holds that block or a later one.
    /// `true` when it was written.
    #[allow(clippy::too_many_arguments)]
    pub fn adopt_block(
        &self,
        net: IpAddr,
        len: u8,
        info: &BlockInfo,
        (started, until): (Micros, Micros),
        generation: u32,
        memory_secs: u32,
        now: Micros,
    ) -> Result<bool, Busy> {
        if until <= now {
            return Ok(false);
        }
        let (id, family, addr) = self.net_block_id(net, len);
        let sub = self.sub(Area::Block, id);
        let sub = self.lock(sub, Area::Block).ok_or(Busy)?;
        let slot = match sub.find(id, Area::Block) {
            Some(slot) => {
                let f = sub.rec(slot).read();
                if f.until >= until && f.expires > now && f.generation >= generation {
                    return Ok(false);
                }
                slot
            }
            None => {
                let (slot, how) = sub.victim(Area::Block, now);
                Store::count_reclaim(&sub, how);
                slot
            }
        };
        let fields = Store::block_fields(
            (id, family, addr),
            len,
            info,
            (started, until, memory_secs),
            generation.max(1),
        );
        sub.put(slot, &fields);
        Ok(true)
    }

    /// Ends the client's active block now (its generation stays remembered), or with
    /// `forget` drops the record altogether (the next block is generation 1).
    pub fn end_block(&self, client: IpAddr, now: Micros, forget: bool) -> Result<Ended, Busy> {
        self.end_block_net(client, 0, now, forget)
    }

    /// [`Store::end_block`] of network `net`/`len` (`len` 0: of the client `net`).
    pub fn end_block_net(
        &self,
        net: IpAddr,
        len: u8,
        now: Micros,
        forget: bool,
    ) -> Result<Ended, Busy> {
        let client = net;
        let (id, _, _) = self.net_block_id(net, len);
        let sub = self.sub(Area::Block, id);
        let sub = self.lock(sub, Area::Block).ok_or(Busy)?;
        let Some(slot) = sub.find(id, Area::Block) else {
            return Ok(Ended::default());
        };
        let rec = sub.rec(slot);
        let f = rec.read();
        if f.expires <= now {
            return Ok(Ended::default());
        }
        let ended = (f.until > now)
            .then(|| Store::block_state(client, &f))
            .flatten();
        if forget {
            sub.remove(slot, Area::Block);
        } else if ended.is_some() {
            rec.set_i64(R_UNTIL, now);
        }
        Ok(Ended {
            ended,
            generation: Some(f.generation),
            forgotten: forget,
        })
    }

    /// The client's live site or page records (all hosts and pages), highest score first.
    /// Sub-caches whose lock cannot be had are skipped.
    pub fn records_of(&self, area: Area, client: IpAddr, now: Micros) -> Vec<RecordView> {
        self.records_of_net(area, client, 0, now)
    }

    /// [`Store::records_of`] for network `net`/`len` (its site records; `len` 0: the client).
    pub fn records_of_net(&self, area: Area, net: IpAddr, len: u8, now: Micros) -> Vec<RecordView> {
        let client = net;
        let mut out = Vec::new();
        for sub in self.subs(area) {
            let Some(sub) = self.peek_lock(sub, area) else {
                continue;
            };
            out.extend(
                sub.live(area, now)
                    .filter(|f| f.client() == client && f.meta.prefix == len)
                    .map(|f| super::view(area, &f)),
            );
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.score));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BlockInfo, Counter, KeyParts};

    const NOW: Micros = 1_700_000_000_000_000;
    const S: Micros = 1_000_000;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, n])
    }

    fn auto_block(store: &Store, client: IpAddr, now: Micros) -> BlockState {
        let info = BlockInfo {
            rule: Counter::Page,
            score: 7,
            count: 5,
            interval: 60,
            host: "h",
            uri: "/u",
        };
        store
            .start_block(client, &info, now, &|g| if g == 1 { 10 } else { 100 }, 600)
            .expect("started")
    }

    #[test]
    fn manual_blocks_take_the_next_generation_and_replace_an_active_one() {
        let store = Store::create(16_384).unwrap();
        let b = store.block_manually(ip(1), 30, 600, NOW).unwrap();
        assert_eq!(
            (b.generation, b.until, is_manual(&b)),
            (1, NOW + 30 * S, true)
        );
        assert_eq!(
            store.active_block(ip(1), NOW + 29 * S).map(|b| b.until),
            Some(b.until)
        );
        // Replacing an active block keeps its generation.
        let b = store.block_manually(ip(1), 5, 600, NOW + S).unwrap();
        assert_eq!((b.generation, b.until), (1, NOW + 6 * S));
        // After it ended (remembered), the next one is generation 2, like an automatic one.
        let b = store.block_manually(ip(1), 5, 600, NOW + 7 * S).unwrap();
        assert_eq!(b.generation, 2);
        assert_eq!(auto_block(&store, ip(1), NOW + 13 * S).generation, 3);
        // Forgotten after the memory: generation 1 again.
        let b = store
            .block_manually(ip(1), 5, 600, NOW + 10_000 * S)
            .unwrap();
        assert_eq!(b.generation, 1);
    }

    #[test]
    fn end_block_keeps_or_forgets_the_generation() {
        let store = Store::create(16_384).unwrap();
        auto_block(&store, ip(2), NOW);
        let e = store.end_block(ip(2), NOW + S, false).unwrap();
        assert_eq!(e.ended.map(|b| b.generation), Some(1));
        assert_eq!((e.generation, e.forgotten), (Some(1), false));
        assert!(store.active_block(ip(2), NOW + S).is_none());
        let r = store.block_record(ip(2), NOW + S).unwrap().unwrap();
        assert!(!r.active && r.block.generation == 1);
        // Not blocked any more: nothing ended, the generation is still known.
        let e = store.end_block(ip(2), NOW + 2 * S, false).unwrap();
        assert_eq!((e.ended, e.generation), (None, Some(1)));
        // The next block is the second (100 s); forgetting it makes the next one the first.
        assert_eq!(auto_block(&store, ip(2), NOW + 3 * S).until, NOW + 103 * S);
        let e = store.end_block(ip(2), NOW + 4 * S, true).unwrap();
        assert!(e.ended.is_some() && e.forgotten);
        assert_eq!(store.block_record(ip(2), NOW + 4 * S).unwrap(), None);
        assert_eq!(auto_block(&store, ip(2), NOW + 5 * S).generation, 1);
        // A forgotten record is not counted as a repair.
        assert_eq!(store.repairs(Area::Block).0, 0);
        assert_eq!(store.end_block(ip(3), NOW, true).unwrap(), Ended::default());
    }

    #[test]
    fn targets_are_clients_or_counted_networks() {
        let t = |s: &str| Target::parse(s, 64);
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            t("192.0.2.9"),
            Ok(Target {
                addr: v6("192.0.2.9"),
                prefix: 0
            })
        );
        assert_eq!(
            t("192.0.2.9/32"),
            Ok(Target {
                addr: v6("192.0.2.9"),
                prefix: 0
            })
        );
        assert_eq!(
            t("192.0.2.9/24"),
            Ok(Target {
                addr: v6("192.0.2.0"),
                prefix: 24
            })
        );
        assert_eq!(
            t("2001:db8:aa:bb:1::/64"),
            Ok(Target {
                addr: v6("2001:db8:aa:bb::"),
                prefix: 0
            })
        );
        assert_eq!(
            t("2001:db8:aa:bb:1::/56"),
            Ok(Target {
                addr: v6("2001:db8:aa::"),
                prefix: 56
            })
        );
        assert_eq!(
            t("2001:db8:aa:bb:1::/48").map(|t| t.label(64)),
            Ok("2001:db8:aa::/48".to_string())
        );
        for bad in [
            "192.0.2.9/16",
            "192.0.2.9/48",
            "2001:db8::/24",
            "2001:db8::/40",
            "x/24",
            "1.2.3.4/x",
        ] {
            assert!(t(bad).is_err(), "{bad}");
        }
        // A level no wider than the server's IPv6 group is no network of its own.
        assert!(Target::parse("2001:db8::/56", 48).is_err());
        assert_eq!(Target::parse("2001:db8::/48", 48).map(|t| t.prefix), Ok(0));
    }

    #[test]
    fn network_blocks_are_their_own_records() {
        let store = Store::create(16_384).unwrap();
        let net: IpAddr = "192.0.2.0".parse().unwrap();
        let key = store.client_key_in(IpAddr::from([192, 0, 2, 7]), [24, 0]);
        assert_eq!(key.nets().collect::<Vec<_>>(), [(net, 24)]);
        // A block of the client 192.0.2.0 is not the /24's, and the other way round.
        auto_block(&store, net, NOW);
        assert!(store.active_net_block(net, 24, NOW + S).is_none());
        assert!(store.active_block_of(&key, NOW + S).is_none());
        let e = store.end_block_net(net, 24, NOW + S, false).unwrap();
        assert_eq!(e, Ended::default());
        assert!(store.block_record_net(net, 0, NOW + S).unwrap().is_some());
    }

    #[test]
    fn records_of_lists_one_clients_site_and_page_records() {
        let store = Store::create(16_384).unwrap();
        for (client, path, n) in [(ip(4), "/a", 3), (ip(4), "/b", 1), (ip(5), "/a", 9)] {
            let key = KeyParts {
                client,
                host: "example.org",
                path,
            };
            for _ in 0..n {
                store.add(Counter::Page, &key, 1, 60, NOW).unwrap();
            }
        }
        let pages = store.records_of(Area::Page, ip(4), NOW + S);
        let got: Vec<(&str, i64)> = pages.iter().map(|r| (r.path.as_str(), r.score)).collect();
        assert_eq!(got, [("/a", 3), ("/b", 1)]);
        assert!(store.records_of(Area::Site, ip(4), NOW).is_empty());
        assert!(
            store.records_of(Area::Page, ip(4), NOW + 61 * S).is_empty(),
            "expired"
        );
    }
}
