//! `?auto`: one `Key: value` line per fact (mod_status convention), every value on one line.
#![forbid(unsafe_code)]

use std::fmt::{Display, Write};

use super::escape::{line_escape, line_escape_controls};
use super::summary::{who, Summary};
use super::time::{iso, percent_number};
use super::{Section, SECTIONS};

pub fn page(s: &Summary) -> String {
    let mut out = String::with_capacity(4096);
    let mut kv = |k: &str, v: &dyn Display| {
        let _ = writeln!(out, "{k}: {v}");
    };
    for section in SECTIONS {
        match section {
            Section::Headline => {
                kv("Verdict", &s.verdict);
                kv("Time", &iso(s.now));
                kv("Enabled", &s.enabled.as_str());
                kv("BlocksActive", &s.blocks_active);
                if let Some(u) = &s.under_attack {
                    kv("UnderAttack", &u8::from(u.on));
                    kv("UnderAttackSwitch", &if u.switch { "on" } else { "off" });
                    kv("UnderAttackOverride", &u.forced.as_str());
                    kv("UnderAttackRate", &u.rate);
                    if let Some(b) = u.busy_percent {
                        kv("UnderAttackBusyPercent", &b);
                    }
                    if let Some(t) = u.changed {
                        kv("UnderAttackChanged", &iso(t));
                    }
                }
            }
            Section::Activity => {
                if let Some(a) = &s.activity {
                    let t = &a.since_start;
                    let (counted, refused, started) = a.last_hour();
                    kv("RequestsCounted", &t.counted);
                    kv(
                        "RequestsRefused",
                        &t.refused_site.saturating_add(t.refused_page),
                    );
                    kv(
                        "BlocksStarted",
                        &t.blocks_started_site.saturating_add(t.blocks_started_page),
                    );
                    kv("WouldBlocksTotal", &t.would_blocks);
                    kv("LastHourCounted", &counted);
                    kv("LastHourRefused", &refused);
                    kv("LastHourBlocksStarted", &started);
                }
            }
            Section::WouldBlocks => {
                kv("WouldBlocks", &s.would_blocks.len());
                for w in &s.would_blocks {
                    kv(
                        "WouldBlock",
                        &format!(
                            "{} rule={} score={} count={} ago={}",
                            who(w.client, w.prefix),
                            w.rule,
                            w.score,
                            w.count,
                            w.ago
                        ),
                    );
                }
            }
            Section::Challenge => {
                if let Some(c) = &s.challenges {
                    kv("ChallengesIssued", &c.issued);
                    kv("ChallengesPassed", &c.passed);
                    kv("ChallengesFailed", &c.failed);
                    kv("ChallengePassRequests", &c.pass_requests);
                }
            }
            Section::Blocks => {
                if let Some(st) = &s.store {
                    kv("BlocksRemembered", &st.blocks.remembered);
                    for (len, n) in &st.blocks.networks {
                        kv(&format!("NetworkBlocksActive{len}"), n);
                    }
                    for b in &st.blocks.listed {
                        kv(
                            "Block",
                            &format!(
                                "{} rule={} gen={} score={} count={} interval={} started={} \
                                 ends_in={} host={} uri={}",
                                who(b.client, b.prefix),
                                b.rule,
                                b.generation,
                                b.score,
                                b.count,
                                b.interval,
                                iso(b.started),
                                b.ends_in,
                                line_escape(&b.host),
                                line_escape(&b.uri)
                            ),
                        );
                    }
                }
            }
            Section::Top => {
                if let Some(st) = &s.store {
                    for r in &st.top.site {
                        kv(
                            "TopSite",
                            &format!(
                                "{} score={} count={} interval={} host={}",
                                who(r.client, r.prefix),
                                r.score,
                                r.count,
                                r.interval,
                                line_escape(&r.host)
                            ),
                        );
                    }
                    for r in &st.top.page {
                        kv(
                            "TopPage",
                            &format!(
                                "{} score={} count={} interval={} host={} path={}",
                                r.client,
                                r.score,
                                r.count,
                                r.interval,
                                line_escape(&r.host),
                                line_escape(r.path.as_deref().unwrap_or(""))
                            ),
                        );
                    }
                }
            }
            Section::Areas => {
                for a in s.store.iter().flat_map(|st| &st.areas) {
                    let k = a.key;
                    kv(&format!("{k}Capacity"), &a.capacity);
                    kv(&format!("{k}Entries"), &a.entries);
                    kv(&format!("{k}FillPercent"), &percent_number(a.fill_permille));
                    kv(&format!("{k}Live"), &a.live);
                    kv(&format!("{k}Inserted"), &a.inserted);
                    kv(&format!("{k}Expired"), &a.expired);
                    kv(&format!("{k}Evicted"), &a.evicted);
                    kv(&format!("{k}Hits"), &a.hits);
                    kv(&format!("{k}Misses"), &a.misses);
                }
            }
            Section::Store => {
                let Some(st) = &s.store else {
                    kv("StoreState", &"unavailable");
                    continue;
                };
                let b = &st.backend;
                kv("Store", &b.kind);
                kv("StoreState", &line_escape_controls(&b.state));
                kv("StoreAreaBytes", &b.area_bytes);
                kv("StoreAttaches", &b.attaches);
                kv("StoreCreated", &iso(b.created));
                kv("StoreDroppedRecords", &b.dropped);
                kv("StoreLockTakeovers", &b.takeovers);
                kv("StoreFailOpens", &b.fail_opens);
                kv("StoreBlocksEvicted", &b.blocks_evicted);
                if let Some(p) = &b.provider {
                    kv("StoreProviderUnused", &line_escape(p));
                }
                if let Some(t) = &b.shared {
                    kv("Backend", &line_escape(&t.label));
                    kv("BackendState", &t.state());
                    kv("BackendFailures", &t.failures);
                    kv("BackendRoundTrips", &t.stats.round_trips);
                    kv("BackendCounted", &t.stats.counted);
                    kv("BackendEvents", &t.stats.events);
                }
            }
            Section::Settings => {
                for line in &s.settings {
                    // Written by the administrator, but must still stay on one line.
                    kv("Setting", &line_escape_controls(line));
                }
            }
        }
    }
    out
}
