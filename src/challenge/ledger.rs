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
use std::net::IpAddr;

use super::{Settings, NONCE_SECS};
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

/// Spends `nonce` of `client`: true for its first use only.
pub fn spend(store: &Store, client: IpAddr, nonce: &str, now: Micros) -> bool {
    let key = KeyParts {
        client,
        host: SPENT_HOST,
        path: nonce,
    };
    store
        .add(Counter::Page, &key, 1, SPENT_SECS, now)
        .is_some_and(|h| h.score == 1)
}

/// Counts one more pass for `client`: true while that stays within the cap.
pub fn earn(store: &Store, settings: &Settings, client: IpAddr, now: Micros) -> bool {
    store
        .add(Counter::Site, &passes(client), 1, settings.pass_secs, now)
        .is_some_and(|h| h.score <= i64::from(settings.pass_limit))
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
        assert!(spend(&store, c, "00ff", T0));
        assert!(!spend(&store, c, "00ff", T0 + SEC));
        assert!(!spend(&store, c, "00ff", T0 + 600 * SEC));
        // Another nonce, or the same nonce text of another client, is its own.
        assert!(spend(&store, c, "00fe", T0));
        assert!(spend(&store, other, "00ff", T0));
        // Long after the nonce went stale (it is refused as stale by then anyway).
        assert!(spend(&store, c, "00ff", T0 + i64::from(SPENT_SECS) * SEC));
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
            assert!(earn(&store, &settings, c, T0 + n));
            assert_eq!(passes_earned(&store, &settings, c, T0 + n), n as u32);
        }
        assert!(!earn(&store, &settings, c, T0 + 5));
        let other: IpAddr = "2001:db8:0:1::".parse().unwrap();
        assert!(earn(&store, &settings, other, T0 + 5));
        // A new lifetime, a new allowance.
        assert_eq!(passes_earned(&store, &settings, c, T0 + 100 * SEC), 0);
        assert!(earn(&store, &settings, c, T0 + 100 * SEC));
    }
}
