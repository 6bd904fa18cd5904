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
//! engine while it is challenged, and a blocked name is granted nothing. This server's
//! record of the passes earned is raised to the farm's count on each pass, so the
//! difficulty follows the passes earned elsewhere (from the next challenge this server
//! gives). While the engine cannot answer, this server's own ledger decides alone.
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

/// Spends `nonce` of `client`: true for its first use only (farm-wide in a farm).
pub fn spend(
    store: &Store,
    farm: Option<&dyn Shared>,
    client: IpAddr,
    nonce: &str,
    now: Micros,
) -> bool {
    let key = KeyParts {
        client,
        host: SPENT_HOST,
        path: nonce,
    };
    // This server's record first: a replay here costs no round trip.
    let first_here = store
        .add(Counter::Page, &key, 1, SPENT_SECS, now)
        .is_some_and(|h| h.score == 1);
    first_here && farm_grant(farm, client, Counter::Page, nonce, 1, SPENT_SECS).is_none_or(|g| g.0)
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
    let limit = i64::from(settings.pass_limit);
    let Some(here) = store.add(Counter::Site, &passes(client), 1, settings.pass_secs, now) else {
        return false;
    };
    if here.score > limit {
        return false;
    }
    let Some((granted, farm_count)) = farm_grant(
        farm,
        client,
        Counter::Site,
        "",
        settings.pass_limit,
        settings.pass_secs,
    ) else {
        return true;
    };
    // The farm's count of passes (past the cap when it granted none) becomes this server's.
    let farm_count = if granted { farm_count } else { limit + 1 };
    if farm_count > here.score {
        store.add(
            Counter::Site,
            &passes(client),
            farm_count - here.score,
            settings.pass_secs,
            now,
        );
    }
    granted
}

/// One unit of a ledger counter of `client` in the farm's engine, whose count is `limit`
/// per `interval` seconds: (granted, the count after this grant), or `None` without a farm
/// or while it cannot answer.
fn farm_grant(
    farm: Option<&dyn Shared>,
    client: IpAddr,
    counter: Counter,
    path: &str,
    limit: u32,
    interval: u32,
) -> Option<(bool, i64)> {
    let farm = farm?;
    let name = format!("{}~ledger", farm::client_name(client, 0));
    let host = match counter {
        Counter::Page => SPENT_HOST,
        Counter::Site => PASSES_HOST,
    };
    let ask = Ask {
        key: farm::counter_key(&name, counter, host, path),
        limit,
        interval,
        delta: 1,
        lease: false,
        left_seen: None,
    };
    let (grants, _) = farm.grant(&name, std::slice::from_ref(&ask))?;
    let g = grants.first()?;
    Some((g.units >= 1, i64::from(limit) - g.left))
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
        assert!(spend(&store, None, c, "00ff", T0));
        assert!(!spend(&store, None, c, "00ff", T0 + SEC));
        assert!(!spend(&store, None, c, "00ff", T0 + 600 * SEC));
        // Another nonce, or the same nonce text of another client, is its own.
        assert!(spend(&store, None, c, "00fe", T0));
        assert!(spend(&store, None, other, "00ff", T0));
        // Long after the nonce went stale (it is refused as stale by then anyway).
        assert!(spend(
            &store,
            None,
            c,
            "00ff",
            T0 + i64::from(SPENT_SECS) * SEC
        ));
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

    /// An engine as the farm's are: each counter granted up to its limit, never more.
    #[derive(Default)]
    struct Engine {
        used: std::sync::Mutex<std::collections::HashMap<String, i64>>,
        up: std::sync::atomic::AtomicBool,
    }

    impl Shared for Engine {
        fn grant(&self, _client: &str, asks: &[Ask]) -> Option<(Vec<farm::Grant>, u32)> {
            if !self.up.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            let mut used = self.used.lock().unwrap();
            let grants = asks
                .iter()
                .map(|a| {
                    let used = used.entry(a.key.clone()).or_default();
                    let left = i64::from(a.limit) - *used;
                    let units = if left >= a.delta { a.delta } else { 0 };
                    *used += units;
                    farm::Grant {
                        units,
                        left: left - units,
                        ttl_ms: 1000,
                    }
                })
                .collect();
            Some((grants, 0))
        }
    }

    #[test]
    fn in_a_farm_a_nonce_is_spent_once_and_the_cap_holds_for_all_servers() {
        let servers = [Store::create(65536).unwrap(), Store::create(65536).unwrap()];
        let engine = Engine::default();
        engine.up.store(true, std::sync::atomic::Ordering::Relaxed);
        let farm = Some(&engine as &dyn Shared);
        let settings = Settings {
            pass_limit: 3,
            pass_secs: 100,
            ..Settings::default()
        };
        let c: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(spend(&servers[0], farm, c, "00ff", T0));
        assert!(
            !spend(&servers[1], farm, c, "00ff", T0 + 1),
            "spent on the other server"
        );
        assert!(spend(&servers[1], farm, c, "00fe", T0 + 1));
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
        // While the engine is away each server decides alone.
        engine.up.store(false, std::sync::atomic::Ordering::Relaxed);
        let d: IpAddr = "192.0.2.10".parse().unwrap();
        assert!(spend(&servers[0], farm, d, "00ff", T0));
        assert!(spend(&servers[1], farm, d, "00ff", T0));
        assert!(earn(&servers[1], farm, &settings, d, T0));
    }
}
