//! `?metrics`: Prometheus text exposition format 0.0.4. Every family has HELP and TYPE lines
//! and its samples together; label values are escaped.
#![forbid(unsafe_code)]

use std::fmt::Write;

use super::escape::label_escape;
use super::summary::Summary;
use super::{Section, SECTIONS};

#[derive(Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
}

struct Out(String);

impl Out {
    /// One family: `samples` are (labels, value), labels already in `{…}` form or empty.
    fn family(&mut self, name: &str, kind: Kind, help: &str, samples: &[(String, u64)]) {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(self.0, "{name}{labels} {value}");
        }
    }

    fn one(&mut self, name: &str, kind: Kind, help: &str, value: u64) {
        self.family(name, kind, help, &[(String::new(), value)]);
    }
}

fn label(name: &str, value: &str) -> String {
    format!("{{{name}=\"{}\"}}", label_escape(value))
}

fn by_rule(site: u64, page: u64) -> [(String, u64); 2] {
    [(label("rule", "site"), site), (label("rule", "page"), page)]
}

pub fn page(s: &Summary) -> String {
    let mut out = Out(String::with_capacity(4096));
    for section in SECTIONS {
        match section {
            Section::Headline => {
                out.family(
                    "mod_shield_build_info",
                    Kind::Gauge,
                    "Always 1; its label is the version of the module serving the page.",
                    &[(label("version", env!("CARGO_PKG_VERSION")), 1)],
                );
                out.one(
                    "mod_shield_blocks_active",
                    Kind::Gauge,
                    "Clients (or IPv6 groups) blocked now.",
                    s.blocks_active as u64,
                );
                if let Some(u) = &s.under_attack {
                    out.one(
                        "mod_shield_under_attack",
                        Kind::Gauge,
                        "1 while browsers without a pass get the challenge (DOSUnderAttack \
                         auto switched on, or shieldctl under-attack on).",
                        u64::from(u.on),
                    );
                    out.one(
                        "mod_shield_under_attack_rate",
                        Kind::Gauge,
                        "Counted requests a second, all clients, as the under-attack switch \
                         last measured them.",
                        u.rate,
                    );
                }
            }
            Section::Activity => {
                let Some(a) = &s.activity else { continue };
                let t = &a.since_start;
                out.one(
                    "mod_shield_requests_counted_total",
                    Kind::Counter,
                    "Requests counted against the site and page rules.",
                    t.counted,
                );
                out.family(
                    "mod_shield_requests_refused_total",
                    Kind::Counter,
                    "Requests refused, by the rule whose block refused them.",
                    &by_rule(t.refused_site, t.refused_page),
                );
                out.family(
                    "mod_shield_blocks_started_total",
                    Kind::Counter,
                    "Blocks started, by the rule whose count was crossed.",
                    &by_rule(t.blocks_started_site, t.blocks_started_page),
                );
                out.one(
                    "mod_shield_would_blocks_total",
                    Kind::Counter,
                    "Blocks monitor mode would have started.",
                    t.would_blocks,
                );
            }
            Section::Challenge => {
                let Some(c) = &s.challenges else { continue };
                for (name, help, v) in [
                    (
                        "mod_shield_challenges_issued_total",
                        "Challenge pages served to blocked browsers.",
                        c.issued,
                    ),
                    (
                        "mod_shield_challenges_passed_total",
                        "Challenges solved (passes issued).",
                        c.passed,
                    ),
                    (
                        "mod_shield_challenges_failed_total",
                        "Submitted solutions refused.",
                        c.failed,
                    ),
                    (
                        "mod_shield_challenge_pass_requests_total",
                        "Requests let through a block by a valid pass.",
                        c.pass_requests,
                    ),
                ] {
                    out.one(name, Kind::Counter, help, v);
                }
            }
            Section::WouldBlocks | Section::Top | Section::Settings => {}
            Section::Blocks => {
                if let Some(st) = &s.store {
                    out.one(
                        "mod_shield_blocks_remembered",
                        Kind::Gauge,
                        "Ended blocks whose generation is still remembered.",
                        st.blocks.remembered as u64,
                    );
                    let networks: Vec<(String, u64)> = st
                        .blocks
                        .networks
                        .iter()
                        .map(|(len, n)| (label("prefix", &len.to_string()), *n as u64))
                        .collect();
                    out.family(
                        "mod_shield_network_blocks_active",
                        Kind::Gauge,
                        "Networks (IPv4 /24, IPv6 /56 and /48) blocked now, by prefix length.",
                        &networks,
                    );
                }
            }
            Section::Areas => {
                let Some(st) = &s.store else { continue };
                let per_area = |f: fn(&super::summary::AreaSummary) -> u64| -> Vec<(String, u64)> {
                    st.areas
                        .iter()
                        .map(|a| (label("area", a.name), f(a)))
                        .collect()
                };
                out.family(
                    "mod_shield_area_capacity",
                    Kind::Gauge,
                    "Records an area can hold.",
                    &per_area(|a| a.capacity),
                );
                out.family(
                    "mod_shield_area_entries",
                    Kind::Gauge,
                    "Occupied slots of an area (expired records not yet reclaimed included).",
                    &per_area(|a| a.entries),
                );
                out.family(
                    "mod_shield_area_live",
                    Kind::Gauge,
                    "Unexpired records of an area.",
                    &per_area(|a| a.live),
                );
                out.family(
                    "mod_shield_area_inserted_total",
                    Kind::Counter,
                    "Records inserted into an area.",
                    &per_area(|a| a.inserted),
                );
                out.family(
                    "mod_shield_area_expired_total",
                    Kind::Counter,
                    "Expired records reclaimed in an area.",
                    &per_area(|a| a.expired),
                );
                out.family(
                    "mod_shield_area_evicted_total",
                    Kind::Counter,
                    "Live records pushed out because an area was full.",
                    &per_area(|a| a.evicted),
                );
            }
            Section::Store => {
                out.one(
                    "mod_shield_store_up",
                    Kind::Gauge,
                    "1 when the shared store is set up (else requests are served uncounted).",
                    u64::from(s.store.is_some()),
                );
                let Some(st) = &s.store else { continue };
                let b = &st.backend;
                if let Some(persistent) = b.persistent {
                    out.one(
                        "mod_shield_store_persistent",
                        Kind::Gauge,
                        "1 when the store is the file DOSCache names; 0 when that file could \
                         not be used and the store is in memory only (blocks will not survive a \
                         stop). Absent when DOSCache names no file.",
                        u64::from(persistent),
                    );
                }
                out.one(
                    "mod_shield_lock_takeovers_total",
                    Kind::Counter,
                    "Store locks taken over from dead or stuck holders.",
                    b.takeovers,
                );
                out.one(
                    "mod_shield_records_dropped_total",
                    Kind::Counter,
                    "Corrupt store records dropped.",
                    b.dropped,
                );
                out.one(
                    "mod_shield_fail_opens_total",
                    Kind::Counter,
                    "Requests served unchecked because the store could not be used in time.",
                    b.fail_opens,
                );
                out.one(
                    "mod_shield_blocks_evicted_total",
                    Kind::Counter,
                    "Active blocks evicted because the store was too small for the attack.",
                    b.blocks_evicted,
                );
                let backend = match (&b.shared, &b.provider) {
                    (Some(t), _) => Some((t.label.as_str(), t.down_since.is_none())),
                    // Named by DOSCache, but its shared tier is not running.
                    (None, Some(p)) => Some((p.as_str(), false)),
                    (None, None) => None,
                };
                if let Some(t) = &b.shared {
                    let name = label("backend", &t.label);
                    out.family(
                        "mod_shield_backend_round_trips_total",
                        Kind::Counter,
                        "Calls request threads made to the farm's engine (grants, block announcements).",
                        &[(name.clone(), t.stats.round_trips)],
                    );
                    out.family(
                        "mod_shield_backend_counted_total",
                        Kind::Counter,
                        "Requests and penalties counted through the farm (from a lease or a grant).",
                        &[(name.clone(), t.stats.counted)],
                    );
                    out.family(
                        "mod_shield_backend_events_total",
                        Kind::Counter,
                        "Blocks and unblocks heard from other servers of the farm.",
                        &[(name, t.stats.events)],
                    );
                }
                if let Some((name, up)) = backend {
                    out.family(
                        "mod_shield_backend_up",
                        Kind::Gauge,
                        "1 when the shared tier's backend (DOSCache memcache:/redis:) answers.",
                        &[(label("backend", name), u64::from(up))],
                    );
                }
            }
        }
    }
    out.0
}
