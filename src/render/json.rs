//! `?json`: serde over the summary; the top level walks [`SECTIONS`], so its keys come in the
//! order of the other formats. When the store is unavailable, `store` says so and `blocks`,
//! `top` and `areas` are `null`.
#![forbid(unsafe_code)]

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::escape::to_json;
use super::summary::{AreaSummary, Backend, Summary};
use super::time::{iso, MICROS};
use super::{Section, SECTIONS};

pub fn page(s: &Summary) -> String {
    to_json(s) + "\n"
}

/// `{"available": …}` followed by the backend's fields when there is a store.
#[derive(Serialize)]
struct StoreJson<'a> {
    available: bool,
    #[serde(flatten)]
    backend: Option<&'a Backend>,
}

/// The three areas as an object keyed by area name.
struct AreasJson<'a>(&'a [AreaSummary; 3]);

impl Serialize for AreasJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for a in self.0 {
            map.serialize_entry(a.name, a)?;
        }
        map.end()
    }
}

impl Serialize for Summary {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        let store = self.store.as_ref();
        for section in SECTIONS {
            match section {
                Section::Headline => {
                    map.serialize_entry("verdict", &self.verdict)?;
                    map.serialize_entry("time", &iso(self.now))?;
                    map.serialize_entry("now_unix", &self.now.div_euclid(MICROS))?;
                    map.serialize_entry("enabled", self.enabled.as_str())?;
                    map.serialize_entry("blocks_active", &self.blocks_active)?;
                    map.serialize_entry("under_attack", &self.under_attack)?;
                }
                Section::Activity => map.serialize_entry("activity", &self.activity)?,
                Section::WouldBlocks => map.serialize_entry("would_blocks", &self.would_blocks)?,
                Section::Challenge => map.serialize_entry("challenge", &self.challenges)?,
                Section::Blocks => map.serialize_entry("blocks", &store.map(|st| &st.blocks))?,
                Section::Top => map.serialize_entry("top", &store.map(|st| &st.top))?,
                Section::Areas => {
                    map.serialize_entry("areas", &store.map(|st| AreasJson(&st.areas)))?
                }
                Section::Store => map.serialize_entry(
                    "store",
                    &StoreJson {
                        available: store.is_some(),
                        backend: store.map(|st| &st.backend),
                    },
                )?,
                Section::Settings => map.serialize_entry("settings", &self.settings)?,
            }
        }
        map.end()
    }
}
