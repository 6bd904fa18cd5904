//! What the store remembers of a client's challenges, in records of the ordinary counting
//! tables under host names no request can have (a leading control character; a site name is
//! a server name and port):
//!
//! - a **spent nonce**: a page record `(client, SPENT_HOST, nonce)`, kept while the nonce
//!   could still be answered, so a challenge earns one pass however many solutions are found;
//! - the **passes earned**: a site record `(client, PASSES_HOST)` counting the passes issued
//!   within one pass lifetime (`DOSChallengePassTime`), which caps them and makes each
//!   further one dearer ([`Settings::bits_for`](super::Settings::bits_for)).
//!
//! Both are plain counters ([`Store::add`]), decided under their record's lock, so two
//! workers accepting solutions at once cannot both spend one nonce or both take the last
//! pass. When the store cannot be locked in time no pass is issued (fail closed: the client
//! stays as blocked as it was).
//!
//! In a farm (`DOSCache redis:…`/`memcache:…`, servers sharing `DOSChallengeKey`) a solution
//! one server accepted would open every other one, so both are also counters in the engine,
//! granted one at a time ([`Shared::grant`], exact like the farm's counts): a nonce is spent
//! once farm-wide, and the cap holds for the passes of all servers together. They are kept
//! under a name of their own (`<client>~ledger`): the client itself is blocked in the
//! engine while it is challenged, and a blocked name is granted nothing. The round trip that
//! spends a nonce also reads the farm's count of the client's passes: a solution must have
//! done the work that count owes (passes earned on other servers make it dearer, as this
//! server's own do), and this server's record is raised to it, so its next page asks that
//! work. While the engine cannot answer, this server's own ledger decides alone.
use std::net::IpAddr;

use super::{Settings, NONCE_SECS};
use crate::farm::{self, Ask};
use crate::policy::Shared;
use crate::store::{Counter, KeyParts, Micros, Store};

/// The host of spent-nonce records.
pub const SPENT_HOST: &str = "\u{1}challenge nonce";
/// The host of passes-earned records.
pub const PASSES_HOST: &str = "\u{1}challenge passes";
/// True for the host of a ledger record (not a site: kept out of the top scorers).
pub fn is_ledger_host(host: &str) -> bool {
    host.starts_with('\u{1}')
}

/// A spent nonce is remembered this long: its whole answerable life and the clock skew
/// workers may have.
const SPENT_SECS: u32 = NONCE_SECS as u32 + 60;

fn passes(client: IpAddr) -> KeyParts<'static> {
    KeyParts {
        client,
        host: PASSES_HOST,
        path: "",
    }
}

/// Passes `client` earned within the current pass lifetime (0 when the store cannot tell).
pub fn passes_earned(store: &Store, settings: &Settings, client: IpAddr, now: Micros) -> u32 {
    store
        .add(Counter::Site, &passes(client), 0, settings.pass_secs, now)
        .map_or(0, |h| u32::try_from(h.score).unwrap_or(u32::MAX))
}

/// What spending a nonce found out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spent {
    /// The passes the farm counts for the client within the pass lifetime (all servers'),
    /// asked in the same round trip as the nonce; `None` without a farm, or while it cannot
    /// answer.
    pub farm_passes: Option<u32>,
}

/// Spends `nonce` of `client`: `Some` for its first use only (farm-wide in a farm).
pub fn spend(
    store: &Store,
    farm: Option<&dyn Shared>,
    settings: &Settings,
    client: IpAddr,
    nonce: &str,
    now: Micros,
) -> Option<Spent> {
    let key = KeyParts {
        client,
        host: SPENT_HOST,
        path: nonce,
    };
    // This server's record first: a replay here costs no round trip.
    let first_here = store
        .add(Counter::Page, &key, 1, SPENT_SECS, now)
        .is_some_and(|h| h.score == 1);
    if !first_here {
        return None;
    }
    let Some(farm) = farm else {
        return Some(Spent { farm_passes: None });
    };
    let name = ledger_name(client);
    let asks = [
        ask(&name, Counter::Page, nonce, 1, SPENT_SECS, 1),
        // Looks at the passes without taking one (delta 0).
        ask(
            &name,
            Counter::Site,
            "",
            settings.pass_limit,
            settings.pass_secs,
            0,
        ),
    ];
    match farm.grant(&name, &asks) {
        Some((g, _)) if g.len() == 2 => (g[0].units >= 1).then(|| Spent {
            farm_passes: Some(settings.pass_limit.saturating_sub(clamp(g[1].left))),
        }),
        // The engine away: this server's ledger decides alone.
        _ => Some(Spent { farm_passes: None }),
    }
}

/// Counts one more pass for `client`: true while that stays within the cap (of the whole
/// farm, in a farm).
pub fn earn(
    store: &Store,
    farm: Option<&dyn Shared>,
    settings: &Settings,
    client: IpAddr,
    now: Micros,
) -> bool {
    let limit = settings.pass_limit;
    let Some(here) = store.add(Counter::Site, &passes(client), 1, settings.pass_secs, now) else {
        return false;
    };
    if here.score > i64::from(limit) {
        return false;
    }
    let Some(farm) = farm else {
        return true;
    };
    let name = ledger_name(client);
    let asks = [ask(&name, Counter::Site, "", limit, settings.pass_secs, 1)];
    let Some(g) = farm
        .grant(&name, &asks)
        .and_then(|(g, _)| g.first().copied())
    else {
        return true;
    };
    let granted = g.units >= 1;
    // The farm's count of passes (past the cap when it granted none) becomes this server's.
    let farm_count = if granted {
        limit.saturating_sub(clamp(g.left))
    } else {
        limit.saturating_add(1)
    };
    learn(store, settings, client, farm_count, now);
    granted
}

/// Raises this server's count of `client`'s passes to `passes` (the farm's), so that its
/// pages ask the work the farm's count owes.
pub fn learn(store: &Store, settings: &Settings, client: IpAddr, passes: u32, now: Micros) {
    let here = i64::from(passes_earned(store, settings, client, now));
    let missing = i64::from(passes) - here;
    if missing > 0 {
        store.add(
            Counter::Site,
            &self::passes(client),
            missing,
            settings.pass_secs,
            now,
        );
    }
}

/// The name the ledger's counters of `client` have in the farm's engine.
fn ledger_name(client: IpAddr) -> String {
    format!("{}~ledger", farm::client_name(client, 0))
}

/// A ledger counter of the engine: `delta` units of a count of `limit` per `interval`
/// seconds, exactly (no lease).
fn ask(name: &str, counter: Counter, path: &str, limit: u32, interval: u32, delta: i64) -> Ask {
    let host = match counter {
        Counter::Page => SPENT_HOST,
        Counter::Site => PASSES_HOST,
    };
    Ask {
        key: farm::counter_key(name, counter, host, path),
        limit,
        interval,
        delta,
        lease: false,
        left_seen: None,
    }
}

/// What is left of a budget, as a count of passes.
fn clamp(left: i64) -> u32 {
    u32::try_from(left.max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Micros = 1_800_000_000_000_000;
    const SEC: Micros = 1_000_000;

    #[test]
    fn a_nonce_is_spent_once_and_forgotten_after_it_could_be_answered() {
        let store = Store::create(65536).unwrap();
        let c: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let s = Settings::default();
        let spend = |client, nonce, now| spend_of(&store, None, &s, client, nonce, now).is_some();
        assert!(spend(c, "00ff", T0));
        assert!(!spend(c, "00ff", T0 + SEC));
        assert!(!spend(c, "00ff", T0 + 600 * SEC));
        // Another nonce, or the same nonce text of another client, is its own.
        assert!(spend(c, "00fe", T0));
        assert!(spend(other, "00ff", T0));
        // Long after the nonce went stale (it is refused as stale by then anyway).
        assert!(spend(c, "00ff", T0 + i64::from(SPENT_SECS) * SEC));
    }

    #[test]
    fn ledger_hosts_are_no_site_names() {
        assert!(is_ledger_host(SPENT_HOST) && is_ledger_host(PASSES_HOST));
        for name in [
            Some("example.com"),
            Some("[2001:db8::1]"),
            Some("192.0.2.1"),
            None,
        ] {
            let site = crate::keys::site_name(name, 80);
            assert!(!is_ledger_host(&site), "{site:?}");
        }
    }

    #[test]
    fn passes_are_capped_per_lifetime_and_counted_per_client() {
        let store = Store::create(65536).unwrap();
        let settings = Settings {
            pass_limit: 3,
            pass_secs: 100,
            ..Settings::default()
        };
        let c: IpAddr = "2001:db8::".parse().unwrap();
        assert_eq!(passes_earned(&store, &settings, c, T0), 0);
        for n in 1..=3 {
            assert!(earn(&store, None, &settings, c, T0 + n));
            assert_eq!(passes_earned(&store, &settings, c, T0 + n), n as u32);
        }
        assert!(!earn(&store, None, &settings, c, T0 + 5));
        let other: IpAddr = "2001:db8:0:1::".parse().unwrap();
        assert!(earn(&store, None, &settings, other, T0 + 5));
        // A new lifetime, a new allowance.
        assert_eq!(passes_earned(&store, &settings, c, T0 + 100 * SEC), 0);
        assert!(earn(&store, None, &settings, c, T0 + 100 * SEC));
    }

    use super::spend as spend_of;
    use crate::farm::FakeEngine as Engine;

    #[test]
    fn in_a_farm_a_nonce_is_spent_once_and_the_cap_holds_for_all_servers() {
        let servers = [Store::create(65536).unwrap(), Store::create(65536).unwrap()];
        let engine = Engine::default();
        let farm = Some(&engine as &dyn Shared);
        let settings = Settings {
            pass_limit: 3,
            pass_secs: 100,
            ..Settings::default()
        };
        let c: IpAddr = "192.0.2.9".parse().unwrap();
        let spend =
            |server: usize, nonce, now| spend(&servers[server], farm, &settings, c, nonce, now);
        let none_yet = Some(Spent {
            farm_passes: Some(0),
        });
        assert_eq!(spend(0, "00ff", T0), none_yet);
        assert_eq!(spend(1, "00ff", T0 + 1), None, "spent on the other server");
        assert_eq!(spend(1, "00fe", T0 + 1), none_yet);
        // Passes earned on either server count against one cap.
        assert!(earn(&servers[0], farm, &settings, c, T0));
        assert!(earn(&servers[0], farm, &settings, c, T0 + 1));
        assert!(earn(&servers[1], farm, &settings, c, T0 + 2));
        // The server that issued the third knows the farm's count: its next page costs more.
        assert_eq!(passes_earned(&servers[1], &settings, c, T0 + 3), 3);
        assert!(!earn(&servers[1], farm, &settings, c, T0 + 3));
        assert!(!earn(&servers[0], farm, &settings, c, T0 + 4));
        // The server refused by the farm is at the cap now: it gives no more pages.
        assert!(passes_earned(&servers[0], &settings, c, T0 + 5) >= settings.pass_limit);
        // Spending a nonce tells the farm's count of passes (what the work owed follows).
        let three = Some(Spent {
            farm_passes: Some(3),
        });
        assert_eq!(spend(0, "00fd", T0 + 6), three);
        // While the engine is away each server decides alone.
        engine
            .down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let d: IpAddr = "192.0.2.10".parse().unwrap();
        let alone = Some(Spent { farm_passes: None });
        assert_eq!(spend_of(&servers[0], farm, &settings, d, "00ff", T0), alone);
        assert_eq!(spend_of(&servers[1], farm, &settings, d, "00ff", T0), alone);
        assert!(earn(&servers[1], farm, &settings, d, T0));
    }
}
