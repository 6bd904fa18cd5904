//! The status page (`SetHandler shield-handler`): an executive summary an administrator reads
//! at a glance, as HTML, `?auto` (mod_status-style `Key: value` lines), `?json`, or `?metrics`
//! (Prometheus text exposition).
//!
//! The page is built in two steps: [`Summary::gather`] copies what is shown out of the store
//! and the counters once (so the formats always agree), then one writer per format prints it.
//! Every writer walks the same ordered list, [`SECTIONS`], with an exhaustive `match`: a new
//! section is added to [`Section`] and then once in each writer, in the same place.
//!
//! - `summary`: the plain data and its gathering; `escape`, `time`: text and number helpers;
//! - `html`, `auto`, `json`, `prometheus`: the writers.
//!
//! Hosts and URIs come from requests and are attacker-controlled: every one is escaped for its
//! format ([`html_escape`], [`json_escape`], [`line_escape`]). The HTML page has no script and
//! loads nothing from elsewhere (its CSS and its chart are inline).
#![forbid(unsafe_code)]

use std::ffi::CStr;

mod auto;
mod escape;
mod html;
mod json;
mod prometheus;
mod summary;
mod time;

pub use escape::{html_escape, json_escape, line_escape};
pub use summary::{Sources, Summary};
/// RFC 3339 UTC time (`2026-12-03T08:45:00Z`) of µs since the epoch (also shieldctl's).
pub use time::iso as rfc3339;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Html,
    Auto,
    Json,
    Metrics,
}

impl Format {
    /// From the query string: a word `auto`, `json` or `metrics` among `&`/`;`-separated
    /// words (mod_status accepts `?auto` the same way); `metrics=` too, as Prometheus' scrape
    /// `params` send it. Anything else is HTML.
    pub fn from_query(query: Option<&str>) -> Format {
        let mut format = Format::Html;
        for word in query.unwrap_or("").split(['&', ';']) {
            match word {
                "auto" => format = Format::Auto,
                "json" => format = Format::Json,
                w if w == "metrics" || w.starts_with("metrics=") => format = Format::Metrics,
                _ => {}
            }
        }
        format
    }

    pub fn content_type(self) -> &'static CStr {
        match self {
            Format::Html => c"text/html; charset=utf-8",
            Format::Auto => c"text/plain; charset=utf-8",
            Format::Json => c"application/json",
            Format::Metrics => c"text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The parts of the page, in the order every format shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Verdict, time, DOSEnabled, active block count (and the monitor-mode note).
    Headline,
    /// Request counters since start and per minute for the last hour (the chart).
    Activity,
    /// Monitor mode's recent would-be blocks.
    WouldBlocks,
    /// `DOSChallenge on`: pages served, solved, refused, requests let through by a pass.
    Challenge,
    /// Active blocks.
    Blocks,
    /// Top scorers per site and page.
    Top,
    /// Per area capacity, entries, fill, counters.
    Areas,
    /// The store's health, the shared tier.
    Store,
    /// The effective settings as directive lines.
    Settings,
}

pub const SECTIONS: [Section; 9] = [
    Section::Headline,
    Section::Activity,
    Section::WouldBlocks,
    Section::Challenge,
    Section::Blocks,
    Section::Top,
    Section::Areas,
    Section::Store,
    Section::Settings,
];

/// The page in `format`.
pub fn render(format: Format, s: &Summary) -> String {
    match format {
        Format::Html => html::page(s),
        Format::Auto => auto::page(s),
        Format::Json => json::page(s),
        Format::Metrics => prometheus::page(s),
    }
}

/// Gather and render in one step.
pub fn page(format: Format, src: &Sources) -> String {
    render(format, &Summary::gather(src))
}

#[cfg(test)]
mod tests;
