//! The status page (`SetHandler shield-handler`): an executive summary an administrator reads
//! at a glance, as HTML, `?auto` (mod_status-style `Key: value` lines) or `?json`.
//!
//! The page is built in two steps: [`Summary::gather`] copies what is shown out of the store
//! once (so the three formats always agree), then one writer per format prints it.
//!
//! Hosts and URIs come from requests and are attacker-controlled: every one is escaped for
//! its format ([`html_escape`], [`json_escape`], [`line_escape`]). The HTML page has no
//! script and loads nothing from elsewhere (its CSS is inline).
use std::ffi::CStr;
use std::fmt::Write;

use crate::config::{canonical_lines, CacheSpec, DirConfig, Enabled, ServerSettings};
use crate::monitor::WouldBlock;
use crate::remote::SharedTier;
use crate::store::{Area, AreaStats, Micros, RecordView, Rule, Store};

/// Records listed per top-scorer table.
const TOP: usize = 10;
/// Active blocks listed at most (all of them are counted).
const BLOCKS_LISTED: usize = 1000;
const MICROS: i64 = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Html,
    Auto,
    Json,
}

impl Format {
    /// From the query string: a word `auto` or `json` among `&`/`;`-separated words
    /// (mod_status accepts `?auto` the same way); anything else is HTML.
    pub fn from_query(query: Option<&str>) -> Format {
        let mut format = Format::Html;
        for word in query.unwrap_or("").split(['&', ';']) {
            match word {
                "auto" => format = Format::Auto,
                "json" => format = Format::Json,
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
        }
    }
}

/// Render the page in `format`. `store` is `None` when the shared store could not be set up
/// (requests are then served uncounted; the page says so).
pub fn page(
    format: Format,
    server: &ServerSettings,
    dir: &DirConfig,
    store: Option<&Store>,
    shared: Option<&SharedTier>,
    would_blocks: &[WouldBlock],
    now: Micros,
) -> String {
    let summary = Summary::gather(server, dir, store, shared, would_blocks, now);
    match format {
        Format::Html => html(&summary),
        Format::Auto => auto(&summary),
        Format::Json => json(&summary),
    }
}

// ---------------------------------------------------------------------------------------------
// Escaping
// ---------------------------------------------------------------------------------------------

/// Escape text for HTML element content and (quoted) attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // NUL and other C0 controls are parse errors in HTML; show them as U+FFFD.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Escape text for the inside of a JSON string literal. Besides what JSON requires, `<`, `>`
/// and `&` are escaped too, so the output stays inert if someone pastes it into HTML.
pub fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20
                || c == '\u{7f}'
                || c == '\u{2028}'
                || c == '\u{2029}'
                || matches!(c, '<' | '>' | '&') =>
            {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Escape a value for one `?auto` field: backslash, space and every control or line-breaking
/// character become `\xNN` / `\u{N}`, so a record is one line and its fields split on spaces.
pub fn line_escape(s: &str) -> String {
    escape_line(s, true)
}

fn escape_line(s: &str, spaces: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\\'
            || (spaces && c == ' ')
            || c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}')
        {
            if (c as u32) < 0x100 {
                let _ = write!(out, "\\x{:02x}", c as u32);
            } else {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON string literal.
fn jstr(s: &str) -> String {
    format!("\"{}\"", json_escape(s))
}

// ---------------------------------------------------------------------------------------------
// Time and numbers
// ---------------------------------------------------------------------------------------------

/// A UTC time `YYYY-MM-DD<sep>HH:MM:SS` from µs since the epoch (any i64: values come from
/// shared memory and must not be able to overflow anything).
fn utc(us: Micros, sep: char) -> String {
    let secs = us.div_euclid(MICROS);
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_date(days);
    format!(
        "{y:04}-{m:02}-{d:02}{sep}{:02}:{:02}:{:02}",
        day_secs / 3600,
        day_secs % 3600 / 60,
        day_secs % 60
    )
}

/// ISO 8601 form for `?auto` and `?json`.
fn iso(us: Micros) -> String {
    utc(us, 'T') + "Z"
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01. Works on 400-year
/// cycles counted from 0000-03-01, so that leap days fall at the end of a cycle's year.
fn civil_date(days: i64) -> (i64, u32, u32) {
    const DAYS_PER_CYCLE: i64 = 146_097;
    // 0000-03-01 is 719 468 days before the epoch.
    let shifted = days + 719_468;
    let cycle = shifted.div_euclid(DAYS_PER_CYCLE);
    let day_of_cycle = shifted.rem_euclid(DAYS_PER_CYCLE); // 0..=146096
    let year_of_cycle =
        (day_of_cycle - day_of_cycle / 1460 + day_of_cycle / 36_524 - day_of_cycle / 146_096) / 365;
    let day_of_year =
        day_of_cycle - (365 * year_of_cycle + year_of_cycle / 4 - year_of_cycle / 100);
    let month_from_march = (5 * day_of_year + 2) / 153; // 0 = March … 11 = February
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = cycle * 400 + year_of_cycle + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// Whole seconds until `until`, rounded up (like `Retry-After`), never negative.
fn secs_until(until: Micros, now: Micros) -> i64 {
    let left = until.saturating_sub(now).max(0);
    left / MICROS + i64::from(left % MICROS != 0)
}

/// `part` of `whole` in tenths of a percent (0 when `whole` is 0).
fn permille(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        0
    } else {
        (u128::from(part) * 1000 / u128::from(whole)).min(u128::from(u64::MAX)) as u64
    }
}

fn percent_text(permille: u64) -> String {
    format!("{}.{}%", permille / 10, permille % 10)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn rule_name(rule: Option<Rule>) -> &'static str {
    rule.map_or("unknown", Rule::as_str)
}

// ---------------------------------------------------------------------------------------------
// What the page shows
// ---------------------------------------------------------------------------------------------

/// Everything the page shows, copied out of the store once.
struct Summary {
    now: Micros,
    /// Recent would-be blocks of monitor mode, newest first.
    would_blocks: Vec<WouldBlock>,
    enabled: Enabled,
    settings: Vec<String>,
    site_count: u32,
    page_count: u32,
    store: Option<StoreSummary>,
    /// `DOSChallenge on`: its counters.
    challenges: Option<crate::challenge::stats::Counts>,
}

struct StoreSummary {
    backend: Backend,
    areas: [AreaSummary; 3],
    blocks_active: usize,
    /// Block records whose block ended but whose generation is still remembered.
    blocks_remembered: usize,
    /// Active blocks, latest-ending first, at most [`BLOCKS_LISTED`].
    blocks: Vec<RecordView>,
    top_site: Vec<RecordView>,
    top_page: Vec<RecordView>,
}

/// Health of the store behind the areas.
struct Backend {
    area_bytes: usize,
    records_per_area: usize,
    /// Times the region was attached since it was created (by configuration passes).
    attaches: u64,
    created: Micros,
    /// Corrupt records dropped and locks taken over from dead workers, all areas.
    dropped: u64,
    takeovers: u64,
    /// A socache provider named by `DOSCache` whose shared tier is not running.
    provider: Option<String>,
    /// The shared tier (`DOSCache memcache:…`/`redis:…`) and its health, when running.
    shared: Option<SharedTier>,
}

impl Backend {
    /// `ok`, or `repaired` when the store had to drop corrupt records or take over the lock
    /// of a dead worker (it kept working, but a worker died mid-update: worth a look).
    fn state(&self) -> &'static str {
        if self.dropped == 0 && self.takeovers == 0 {
            "ok"
        } else {
            "repaired"
        }
    }

    /// One line for the HTML header and the store section.
    fn describe(&self) -> String {
        // A region re-attached by a later configuration pass kept the state of the earlier
        // one; the creation time tells since when counts and blocks have been kept.
        format!(
            "shared memory, {} bytes per area ({} records each), {} {} UTC",
            self.area_bytes,
            self.records_per_area,
            if self.attaches > 0 {
                "attached; region created"
            } else {
                "created"
            },
            utc(self.created, ' ')
        )
    }
}

struct AreaSummary {
    /// `site`, `page`, `block` (JSON keys, HTML rows).
    name: &'static str,
    /// `Site`, `Page`, `Block` (`?auto` key prefix).
    key: &'static str,
    stats: AreaStats,
    /// Unexpired records now (`stats.entries` also counts expired ones not yet reclaimed).
    live: u64,
}

impl AreaSummary {
    fn fill_permille(&self) -> u64 {
        permille(self.stats.entries, self.stats.capacity)
    }
}

impl Summary {
    fn gather(
        server: &ServerSettings,
        dir: &DirConfig,
        store: Option<&Store>,
        shared: Option<&SharedTier>,
        would_blocks: &[WouldBlock],
        now: Micros,
    ) -> Summary {
        Summary {
            now,
            would_blocks: would_blocks.iter().take(WOULD_LISTED).copied().collect(),
            enabled: dir.enabled(),
            settings: canonical_lines(server, dir),
            site_count: server.site_count,
            page_count: dir.page_count(),
            store: store.map(|s| StoreSummary::gather(s, &server.cache, shared, now)),
            challenges: server.challenge.enabled.then(|| {
                crate::challenge::stats()
                    .map(|c| c.counts())
                    .unwrap_or_default()
            }),
        }
    }

    fn blocks_active(&self) -> usize {
        self.store.as_ref().map_or(0, |s| s.blocks_active)
    }

    /// The headline, e.g. "3 clients blocked now".
    fn verdict(&self) -> String {
        let Some(store) = &self.store else {
            return "Store unavailable: requests are served uncounted (fail open)".to_string();
        };
        let blocked = match store.blocks_active {
            0 => "No client is blocked".to_string(),
            n => format!("{} blocked now", plural(n, "client", "clients")),
        };
        // `DOSEnabled off` is often set on the status URL itself only to leave its own
        // requests uncounted; it says nothing about the rest of the site, so no headline.
        match self.enabled {
            Enabled::On | Enabled::Off => blocked,
            Enabled::Monitor => format!("Monitor mode, nobody is refused · {blocked}"),
        }
    }

    /// Monitor mode: where would-be blocks are (they are logged, not stored).
    fn monitor_note(&self) -> Option<&'static str> {
        (self.enabled == Enabled::Monitor).then_some(
            "DOSEnabled monitor: every rule runs, and a would-be block is logged \
             (error log, \"would block\") and listed below instead of refusing. \
             The top scorers show who is near a count.",
        )
    }
}

impl StoreSummary {
    fn gather(
        store: &Store,
        cache: &CacheSpec,
        shared: Option<&SharedTier>,
        now: Micros,
    ) -> StoreSummary {
        let areas = [
            (Area::Site, "site", "Site"),
            (Area::Page, "page", "Page"),
            (Area::Block, "block", "Block"),
        ]
        .map(|(area, name, key)| AreaSummary {
            name,
            key,
            stats: store.stats(area),
            live: store.live_entries(area, now),
        });
        // Latest-ending first: the active blocks come before the remembered ones.
        let block_records = store.snapshot(Area::Block, now, usize::MAX);
        let blocks_active = block_records.iter().filter(|b| b.block_until > now).count();
        let blocks_remembered = block_records.len() - blocks_active;
        let blocks = block_records
            .into_iter()
            .filter(|b| b.block_until > now)
            .take(BLOCKS_LISTED)
            .collect();
        // A window just restarted (score 0) is nobody's concern.
        let top = |area| -> Vec<RecordView> {
            store
                .snapshot(area, now, TOP)
                .into_iter()
                .filter(|r| r.score > 0)
                .collect()
        };
        let (dropped, takeovers) = Area::ALL.iter().fold((0u64, 0u64), |(d, t), a| {
            let (d2, t2) = store.repairs(*a);
            (d.saturating_add(d2), t.saturating_add(t2))
        });
        StoreSummary {
            backend: Backend {
                area_bytes: store.area_bytes(),
                records_per_area: store.capacity(),
                attaches: store.attaches(),
                created: store.created(),
                dropped,
                takeovers,
                provider: match (cache, shared) {
                    (CacheSpec::Provider { .. }, None) => Some(cache.to_string()),
                    _ => None,
                },
                shared: shared.cloned(),
            },
            areas,
            blocks_active,
            blocks_remembered,
            blocks,
            top_site: top(Area::Site),
            top_page: top(Area::Page),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------------------------

const CSS: &str = "\
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;\
background:#f4f5f7;color:#1d2430}\
main{max-width:1200px;margin:0 auto;padding:0 20px 32px}\
header{padding:18px 20px;color:#fff;background:#2f7d4f}\
header.alert{background:#b3261e}header.warn{background:#8a5a00}\
header h1{margin:0;font-size:14px;font-weight:600;letter-spacing:.06em;text-transform:uppercase;opacity:.85}\
header .verdict{margin:4px 0 2px;font-size:30px;font-weight:700}\
header .meta{margin:0;opacity:.9}\
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;margin:18px 0;padding:4px 16px 12px}\
h2{font-size:18px;margin:12px 0 8px}h3{font-size:15px;margin:12px 0 6px}\
table{border-collapse:collapse;width:100%;font-size:14px}\
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eceff2;vertical-align:top}\
th{background:#f7f8fa;font-weight:600;white-space:nowrap}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
td.uri,td.host{word-break:break-all;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px}\
.rule{display:inline-block;padding:0 6px;border-radius:3px;background:#e8eaf6;font-size:12px}\
.bar{display:inline-block;width:80px;height:8px;background:#e4e7eb;border-radius:4px;\
vertical-align:middle;margin-right:6px;overflow:hidden}\
.bar span{display:block;height:100%;background:#3b73b9}\
.bar.hot span{background:#c0392b}\
pre{background:#f7f8fa;padding:10px;border-radius:4px;overflow-x:auto;margin:6px 0}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:6px 0}\
dt{font-weight:600}dd{margin:0}\
.note{color:#5b6470;font-size:13px}.bad{color:#b3261e;font-weight:600}\
.cols{display:grid;grid-template-columns:1fr 1fr;gap:18px}\
@media (max-width:900px){.cols{grid-template-columns:1fr}}\
footer{color:#5b6470;font-size:13px}";

/// One table cell (escaped unless `raw`).
fn td(out: &mut String, class: &str, text: &str) {
    if class.is_empty() {
        let _ = write!(out, "<td>{}</td>", html_escape(text));
    } else {
        let _ = write!(out, "<td class=\"{class}\">{}</td>", html_escape(text));
    }
}

fn header_row(out: &mut String, cols: &[&str]) {
    out.push_str("<thead><tr>");
    for c in cols {
        // A leading '#' marks a numeric (right-aligned) column.
        match c.strip_prefix('#') {
            Some(name) => {
                let _ = write!(out, "<th class=\"n\">{}</th>", html_escape(name));
            }
            None => {
                let _ = write!(out, "<th>{}</th>", html_escape(c));
            }
        }
    }
    out.push_str("</tr></thead>\n");
}

fn fill_bar(out: &mut String, permille: u64) {
    let width = permille.min(1000);
    let hot = if width >= 900 { " hot" } else { "" };
    let _ = write!(
        out,
        "<span class=\"bar{hot}\"><span style=\"width:{}.{}%\"></span></span>{}",
        width / 10,
        width % 10,
        percent_text(permille)
    );
}

fn html(s: &Summary) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let class = match (&s.store, s.enabled) {
        (None, _) => "warn",
        (Some(st), _) if st.blocks_active > 0 => "alert",
        (Some(_), Enabled::Monitor) => "warn",
        (Some(_), _) => "ok",
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\">\
         <title>mod_shield: {}</title><style>{CSS}</style></head>\n<body>\n",
        html_escape(&s.verdict())
    );
    let _ = write!(
        out,
        "<header class=\"{class}\"><h1>mod_shield status</h1>\
         <p class=\"verdict\" id=\"verdict\">{}</p><p class=\"meta\">{} UTC · DOSEnabled {} (this URL) · store: {}</p>\
         </header>\n<main>\n",
        html_escape(&s.verdict()),
        utc(s.now, ' '),
        s.enabled.as_str(),
        match &s.store {
            Some(st) => format!("shared memory, {}", st.backend.state()),
            None => "unavailable".to_string(),
        }
    );
    if let Some(note) = s.monitor_note() {
        let _ = writeln!(
            out,
            "<section><p class=\"note\">{}</p></section>",
            html_escape(note)
        );
    }
    html_would_blocks(&mut out, s);
    if let Some(c) = &s.challenges {
        let _ = writeln!(
            out,
            "<section id=\"challenge\"><h2>Challenge</h2><p>{} pages served, {} solved \
             (passes issued), {} solutions refused, {} requests let through by a pass.</p></section>",
            c.issued, c.passed, c.failed, c.pass_requests
        );
    }
    match &s.store {
        Some(st) => {
            html_blocks(&mut out, st, s.now);
            html_top(&mut out, st, s);
            html_areas(&mut out, st);
            html_backend(&mut out, st);
        }
        None => out.push_str(
            "<section><h2>Store</h2><p class=\"bad\">The shared store is unavailable: \
             nothing is counted and no client is blocked until it is back. \
             See the error log for why it could not be set up.</p></section>\n",
        ),
    }
    out.push_str(
        "<section id=\"settings\"><h2>Effective settings</h2>\
         <p class=\"note\">As they would be written in shield.conf, for this server and this URL.</p><pre>",
    );
    for line in &s.settings {
        let _ = writeln!(out, "{}", html_escape(line));
    }
    out.push_str(
        "</pre></section>\n<footer>Also as <a href=\"?auto\">key: value lines</a> \
         and <a href=\"?json\">JSON</a>.</footer>\n</main>\n</body></html>\n",
    );
    out
}

fn html_blocks(out: &mut String, st: &StoreSummary, now: Micros) {
    let _ = writeln!(
        out,
        "<section id=\"blocks\"><h2>Active blocks ({})</h2>",
        st.blocks_active
    );
    if st.blocks.is_empty() {
        out.push_str("<p>No client is blocked.</p>\n");
    } else {
        out.push_str("<table>");
        header_row(
            out,
            &[
                "client",
                "rule",
                "#generation",
                "#score",
                "host",
                "URI",
                "started (UTC)",
                "#ends in",
            ],
        );
        out.push_str("<tbody>\n");
        for b in &st.blocks {
            out.push_str("<tr>");
            td(out, "", &b.client.to_string());
            let _ = write!(
                out,
                "<td><span class=\"rule\">{}</span> <span class=\"note\">count {} per {} s</span></td>",
                rule_name(b.rule),
                b.count,
                b.interval
            );
            td(out, "n", &b.generation.to_string());
            td(out, "n", &b.score.to_string());
            td(out, "host", &b.host);
            td(out, "uri", &b.path);
            td(out, "", &utc(b.origin, ' '));
            td(out, "n", &format!("{} s", secs_until(b.block_until, now)));
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody></table>\n");
        if st.blocks_active > st.blocks.len() {
            let _ = writeln!(
                out,
                "<p class=\"note\">… and {} more.</p>",
                st.blocks_active - st.blocks.len()
            );
        }
    }
    let _ = writeln!(
        out,
        "<p class=\"note\">Ended blocks remembered: {} (a client that returns gets the next \
         generation's longer block).</p></section>",
        st.blocks_remembered
    );
}

fn html_top(out: &mut String, st: &StoreSummary, s: &Summary) {
    out.push_str("<section id=\"top\"><h2>Top scorers</h2><div class=\"cols\">\n");
    let _ = write!(
        out,
        "<div><h3>Site (client + host), count {}</h3>",
        s.site_count
    );
    html_scorers(out, &st.top_site, s.site_count, false);
    let _ = write!(
        out,
        "</div>\n<div><h3>Page (client + host + path), count {}</h3>",
        s.page_count
    );
    html_scorers(out, &st.top_page, s.page_count, true);
    out.push_str(
        "</div>\n</div><p class=\"note\">A record blocks when its score exceeds its count \
         within its window (the page count shown is this URL's).</p></section>\n",
    );
}

fn html_scorers(out: &mut String, records: &[RecordView], count: u32, page: bool) {
    if records.is_empty() {
        out.push_str("<p>Nobody is scoring.</p>");
        return;
    }
    out.push_str("<table>");
    if page {
        header_row(out, &["client", "host", "path", "#score", "#window"]);
    } else {
        header_row(out, &["client", "host", "#score", "#window"]);
    }
    out.push_str("<tbody>\n");
    for r in records {
        out.push_str("<tr>");
        td(out, "", &r.client.to_string());
        td(out, "host", &r.host);
        if page {
            td(out, "uri", &r.path);
        }
        td(out, "n", &format!("{} / {count}", r.score));
        td(out, "n", &format!("{} s", r.interval));
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>");
}

fn html_areas(out: &mut String, st: &StoreSummary) {
    out.push_str("<section id=\"areas\"><h2>Areas</h2><table>");
    header_row(
        out,
        &[
            "area",
            "#capacity",
            "#entries",
            "fill",
            "#live",
            "#inserted",
            "#expired",
            "#evicted",
            "#hits",
            "#misses",
        ],
    );
    out.push_str("<tbody>\n");
    for a in &st.areas {
        let s = &a.stats;
        out.push_str("<tr>");
        td(out, "", a.name);
        td(out, "n", &s.capacity.to_string());
        td(out, "n", &s.entries.to_string());
        out.push_str("<td class=\"n\">");
        fill_bar(out, a.fill_permille());
        out.push_str("</td>");
        for v in [a.live, s.inserted, s.expired, s.evicted, s.hits, s.misses] {
            td(out, "n", &v.to_string());
        }
        out.push_str("</tr>\n");
    }
    out.push_str(
        "</tbody></table><p class=\"note\">entries: occupied slots (expired ones are \
         reclaimed first); live: unexpired now; evicted: live records pushed out because an \
         area was full (raise DOSCache if this grows).</p></section>\n",
    );
}

fn html_backend(out: &mut String, st: &StoreSummary) {
    let b = &st.backend;
    out.push_str("<section id=\"store\"><h2>Store</h2><dl>");
    let _ = write!(
        out,
        "<dt>backend</dt><dd>{}</dd>",
        html_escape(&b.describe())
    );
    let _ = write!(
        out,
        "<dt>state</dt><dd>{}</dd><dt>attached</dt><dd>{}</dd>",
        b.state(),
        plural(b.attaches as usize, "time", "times")
    );
    let repairs = if b.dropped == 0 && b.takeovers == 0 {
        "none".to_string()
    } else {
        format!(
            "{} corrupt records dropped, {} locks taken over from dead workers",
            b.dropped, b.takeovers
        )
    };
    let _ = write!(out, "<dt>repairs</dt><dd>{}</dd>", html_escape(&repairs));
    if let Some(p) = &b.provider {
        let _ = write!(
            out,
            "<dt>provider</dt><dd class=\"bad\">DOSCache names {}, but its shared tier is not \
             running: counts and blocks are kept in local shared memory only.</dd>",
            html_escape(p)
        );
    }
    if let Some(t) = &b.shared {
        let _ = write!(
            out,
            "<dt>shared tier</dt><dd class=\"{}\">{} — {}</dd>",
            if t.down_since.is_some() {
                "bad"
            } else {
                "good"
            },
            html_escape(&t.label),
            html_escape(&t.describe())
        );
    }
    out.push_str("</dl></section>\n");
}

// ---------------------------------------------------------------------------------------------
// ?auto
// ---------------------------------------------------------------------------------------------

fn auto(s: &Summary) -> String {
    let mut out = String::with_capacity(4096);
    let mut kv = |k: &str, v: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{k}: {v}");
    };
    kv("Verdict", &s.verdict());
    kv("Time", &iso(s.now));
    kv("Enabled", &s.enabled.as_str());
    kv("BlocksActive", &s.blocks_active());
    kv("WouldBlocks", &s.would_blocks.len());
    if let Some(c) = &s.challenges {
        kv("ChallengesIssued", &c.issued);
        kv("ChallengesPassed", &c.passed);
        kv("ChallengesFailed", &c.failed);
        kv("ChallengePassRequests", &c.pass_requests);
    }
    for w in &s.would_blocks {
        kv(
            "WouldBlock",
            &format!(
                "{} rule={} score={} count={} ago={}",
                w.client,
                w.rule.as_str(),
                w.score,
                w.count,
                (s.now - w.at).max(0) / MICROS
            ),
        );
    }
    for line in &s.settings {
        // Settings are written by the administrator, but must still stay on one line.
        kv("Setting", &line_escape_controls(line));
    }
    let Some(st) = &s.store else {
        kv("StoreState", &"unavailable");
        return out;
    };
    let b = &st.backend;
    kv("Store", &"shared memory");
    kv("StoreState", &b.state());
    kv("StoreAreaBytes", &b.area_bytes);
    kv("StoreAttaches", &b.attaches);
    kv("StoreCreated", &iso(b.created));
    kv("StoreDroppedRecords", &b.dropped);
    kv("StoreLockTakeovers", &b.takeovers);
    if let Some(p) = &b.provider {
        kv("StoreProviderUnused", &line_escape(p));
    }
    if let Some(t) = &b.shared {
        kv("Backend", &line_escape(&t.label));
        kv("BackendState", &t.state());
        kv("BackendFailures", &t.failures);
    }
    for a in &st.areas {
        let st = &a.stats;
        let k = a.key;
        let p = a.fill_permille();
        let _ = writeln!(
            out,
            "{k}Capacity: {}\n{k}Entries: {}\n{k}FillPercent: {}.{}\n{k}Live: {}\n\
             {k}Inserted: {}\n{k}Expired: {}\n{k}Evicted: {}\n{k}Hits: {}\n{k}Misses: {}",
            st.capacity,
            st.entries,
            p / 10,
            p % 10,
            a.live,
            st.inserted,
            st.expired,
            st.evicted,
            st.hits,
            st.misses
        );
    }
    let _ = writeln!(out, "BlocksRemembered: {}", st.blocks_remembered);
    for b in &st.blocks {
        let _ = writeln!(
            out,
            "Block: {} rule={} gen={} score={} count={} interval={} started={} ends_in={} host={} uri={}",
            b.client,
            rule_name(b.rule),
            b.generation,
            b.score,
            b.count,
            b.interval,
            iso(b.origin),
            secs_until(b.block_until, s.now),
            line_escape(&b.host),
            line_escape(&b.path)
        );
    }
    for r in &st.top_site {
        let _ = writeln!(
            out,
            "TopSite: {} score={} count={} interval={} host={}",
            r.client,
            r.score,
            s.site_count,
            r.interval,
            line_escape(&r.host)
        );
    }
    for r in &st.top_page {
        let _ = writeln!(
            out,
            "TopPage: {} score={} count={} interval={} host={} path={}",
            r.client,
            r.score,
            s.page_count,
            r.interval,
            line_escape(&r.host),
            line_escape(&r.path)
        );
    }
    out
}

/// Like [`line_escape`] but keeps spaces (a settings line is one value).
fn line_escape_controls(s: &str) -> String {
    escape_line(s, false)
}

// ---------------------------------------------------------------------------------------------
// ?json
// ---------------------------------------------------------------------------------------------

fn json(s: &Summary) -> String {
    let mut out = String::with_capacity(4096);
    let settings: Vec<String> = s.settings.iter().map(|l| jstr(l)).collect();
    let _ = write!(
        out,
        "{{\"verdict\":{},\"time\":{},\"now_unix\":{},\"enabled\":{},\"blocks_active\":{},\"settings\":[{}]",
        jstr(&s.verdict()),
        jstr(&iso(s.now)),
        s.now.div_euclid(MICROS),
        jstr(s.enabled.as_str()),
        s.blocks_active(),
        settings.join(",")
    );
    let would: Vec<String> = s
        .would_blocks
        .iter()
        .map(|w| {
            format!(
                "{{\"client\":{},\"rule\":{},\"score\":{},\"count\":{},\"at\":{}}}",
                jstr(&w.client.to_string()),
                jstr(w.rule.as_str()),
                w.score,
                w.count,
                jstr(&iso(w.at))
            )
        })
        .collect();
    let _ = write!(out, ",\"would_blocks\":[{}]", would.join(","));
    let Some(st) = &s.store else {
        out.push_str(
            ",\"store\":{\"available\":false},\"areas\":null,\"blocks\":null,\"top\":null}\n",
        );
        return out;
    };
    let b = &st.backend;
    let _ = write!(
        out,
        ",\"store\":{{\"available\":true,\"backend\":\"shared memory\",\"state\":{},\
         \"area_bytes\":{},\"records_per_area\":{},\"attaches\":{},\"created\":{},\
         \"dropped_records\":{},\"lock_takeovers\":{},\"unused_provider\":{},\"shared_tier\":{}}}",
        jstr(b.state()),
        b.area_bytes,
        b.records_per_area,
        b.attaches,
        jstr(&iso(b.created)),
        b.dropped,
        b.takeovers,
        b.provider.as_deref().map_or("null".to_string(), jstr),
        b.shared.as_ref().map_or("null".to_string(), |t| format!(
            "{{\"backend\":{},\"state\":{},\"down_since\":{},\"failures\":{}}}",
            jstr(&t.label),
            jstr(t.state()),
            t.down_since.map_or("null".to_string(), |d| jstr(&iso(d))),
            t.failures
        ))
    );
    let areas: Vec<String> = st
        .areas
        .iter()
        .map(|a| {
            let x = &a.stats;
            let p = a.fill_permille();
            format!(
                "{}:{{\"capacity\":{},\"entries\":{},\"fill_percent\":{}.{},\"live\":{},\
                 \"inserted\":{},\"expired\":{},\"evicted\":{},\"hits\":{},\"misses\":{}}}",
                jstr(a.name),
                x.capacity,
                x.entries,
                p / 10,
                p % 10,
                a.live,
                x.inserted,
                x.expired,
                x.evicted,
                x.hits,
                x.misses
            )
        })
        .collect();
    let _ = write!(out, ",\"areas\":{{{}}}", areas.join(","));
    let blocks: Vec<String> = st
        .blocks
        .iter()
        .map(|b| {
            format!(
                "{{\"client\":{},\"rule\":{},\"generation\":{},\"score\":{},\"count\":{},\
                 \"interval\":{},\"host\":{},\"uri\":{},\"started\":{},\"started_unix\":{},\
                 \"ends_in\":{}}}",
                jstr(&b.client.to_string()),
                jstr(rule_name(b.rule)),
                b.generation,
                b.score,
                b.count,
                b.interval,
                jstr(&b.host),
                jstr(&b.path),
                jstr(&iso(b.origin)),
                b.origin.div_euclid(MICROS),
                secs_until(b.block_until, s.now)
            )
        })
        .collect();
    let _ = write!(
        out,
        ",\"blocks\":{{\"active\":{},\"remembered\":{},\"listed\":[{}]}}",
        st.blocks_active,
        st.blocks_remembered,
        blocks.join(",")
    );
    let scorers = |records: &[RecordView], count: u32, page: bool| -> String {
        let items: Vec<String> = records
            .iter()
            .map(|r| {
                let path = if page {
                    format!(",\"path\":{}", jstr(&r.path))
                } else {
                    String::new()
                };
                format!(
                    "{{\"client\":{},\"host\":{}{path},\"score\":{},\"count\":{count},\"interval\":{}}}",
                    jstr(&r.client.to_string()),
                    jstr(&r.host),
                    r.score,
                    r.interval
                )
            })
            .collect();
        format!("[{}]", items.join(","))
    };
    let _ = writeln!(
        out,
        ",\"top\":{{\"site\":{},\"page\":{}}}}}",
        scorers(&st.top_site, s.site_count, false),
        scorers(&st.top_page, s.page_count, true)
    );
    out
}

/// At most this many would-be blocks are listed.
const WOULD_LISTED: usize = 50;

/// Monitor mode's would-be blocks (shown whenever there are any, and in monitor mode always).
fn html_would_blocks(out: &mut String, s: &Summary) {
    if s.would_blocks.is_empty() && s.enabled != Enabled::Monitor {
        return;
    }
    let _ = write!(
        out,
        "<section id=\"would-blocks\"><h2>Would-be blocks ({})</h2>",
        s.would_blocks.len()
    );
    if s.would_blocks.is_empty() {
        out.push_str("<p>None in the last hour.</p></section>\n");
        return;
    }
    out.push_str(
        "<table><tr><th>client</th><th>rule</th><th class=\"num\">score / count</th><th>when (UTC)</th></tr>",
    );
    for w in &s.would_blocks {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{} / {}</td><td>{}</td></tr>",
            html_escape(&w.client.to_string()),
            w.rule.as_str(),
            w.score,
            w.count,
            utc(w.at, ' ')
        );
    }
    out.push_str("</table></section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page without a shared tier (most tests).
    fn page_(
        f: Format,
        server: &ServerSettings,
        dir: &DirConfig,
        store: Option<&Store>,
        now: Micros,
    ) -> String {
        page(f, server, dir, store, None, &[], now)
    }

    #[test]
    fn would_be_blocks_are_listed_in_every_format() {
        let store = Store::create(65536).unwrap();
        let server = server(&[]);
        let monitor = dir(&["DOSEnabled monitor"]);
        let would = [WouldBlock {
            at: NOW - 5_000_000,
            client: "2001:db8::".parse().unwrap(),
            rule: Rule::Page,
            score: 3,
            count: 2,
        }];
        let a = page(
            Format::Auto,
            &server,
            &monitor,
            Some(&store),
            None,
            &would,
            NOW,
        );
        assert!(
            a.contains(
                "\nWouldBlocks: 1\nWouldBlock: 2001:db8:: rule=page score=3 count=2 ago=5\n"
            ),
            "{a}"
        );
        let h = page(
            Format::Html,
            &server,
            &monitor,
            Some(&store),
            None,
            &would,
            NOW,
        );
        assert!(
            h.contains("Would-be blocks (1)") && h.contains("<td>2001:db8::</td><td>page</td>"),
            "{h}"
        );
        let j = page(Format::Json, &server, &monitor, None, None, &would, NOW);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["would_blocks"][0]["client"], "2001:db8::");
        assert_eq!(v["would_blocks"][0]["score"], 3);
        // In monitor mode the section is there even when empty.
        let h = page(
            Format::Html,
            &server,
            &monitor,
            Some(&store),
            None,
            &[],
            NOW,
        );
        assert!(h.contains("Would-be blocks (0)"));
    }

    #[test]
    fn shared_tier_health_is_shown() {
        let store = Store::create(65536).unwrap();
        let server = server(&["DOSCache redis:127.0.0.1:6379"]);
        let down = SharedTier {
            label: "redis:127.0.0.1:6379".into(),
            down_since: Some(NOW - 5_000_000),
            failures: 3,
        };
        let a = page(
            Format::Auto,
            &server,
            &dir(&[]),
            Some(&store),
            Some(&down),
            &[],
            NOW,
        );
        assert!(
            a.contains("\nBackend: redis:127.0.0.1:6379\nBackendState: down\nBackendFailures: 3\n"),
            "{a}"
        );
        assert!(!a.contains("StoreProviderUnused"));
        let h = page(
            Format::Html,
            &server,
            &dir(&[]),
            Some(&store),
            Some(&down),
            &[],
            NOW,
        );
        assert!(h.contains("redis:127.0.0.1:6379 — down since"), "{h}");
        let up = SharedTier {
            down_since: None,
            ..down
        };
        let j = page(
            Format::Json,
            &server,
            &dir(&[]),
            Some(&store),
            Some(&up),
            &[],
            NOW,
        );
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["store"]["shared_tier"]["state"], "up");
        assert_eq!(v["store"]["unused_provider"], serde_json::Value::Null);
    }
    use crate::config::{parse, ServerConfig};
    use crate::store::{BlockInfo, KeyParts};
    use std::net::IpAddr;

    const NOW: Micros = 1_700_000_000_000_000; // 2023-11-14 22:13:20 UTC

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn server(lines: &[&str]) -> ServerSettings {
        let mut c = ServerConfig::default();
        for l in lines {
            let (name, args) = l.split_once(' ').unwrap_or((l, ""));
            c.apply(parse(name, args).unwrap()).unwrap();
        }
        c.resolve()
    }

    fn dir(lines: &[&str]) -> DirConfig {
        let mut d = DirConfig::default();
        for l in lines {
            let (name, args) = l.split_once(' ').unwrap_or((l, ""));
            d.apply(parse(name, args).unwrap()).unwrap();
        }
        d
    }

    /// A store with two active blocks (one with a hostile host and URI), one ended block, and
    /// some site/page scores.
    fn fixture() -> (Store, ServerSettings, DirConfig) {
        let server = server(&[
            "DOSSiteCount 500",
            "DOSSiteStatusPenalty 404 50",
            "DOSBlockingPeriod 5 60 120",
        ]);
        let dir = dir(&["DOSPageCount 2", "DOSPageDeadline 0.5 5"]);
        let store = Store::create(65536).unwrap();
        let period = |g: u32| server.period_for_generation(g);
        let start = |client: &str, rule, score, host, uri, at: Micros| {
            store
                .start_block(
                    ip(client),
                    &BlockInfo {
                        rule,
                        score,
                        count: 2,
                        interval: 1,
                        host,
                        uri,
                    },
                    at,
                    &period,
                    86_400,
                )
                .expect("block starts")
        };
        // 192.0.2.7: generation 1 ended, generation 2 active (60 s from NOW - 5 s).
        start(
            "192.0.2.7",
            Rule::Page,
            3,
            "a.example",
            "/first",
            NOW - 100 * MICROS,
        );
        let b = start(
            "192.0.2.7",
            Rule::Page,
            7,
            "a.example",
            "/<script>alert(1)</script>",
            NOW - 5 * MICROS,
        );
        assert_eq!(b.generation, 2);
        // An IPv6 client blocked by the site rule, hostile host.
        start(
            "2001:db8::7",
            Rule::Site,
            501,
            "<b>evil\"host</b>",
            "/x\ny z",
            NOW - MICROS,
        );
        // Remembered, not active.
        start(
            "198.51.100.9",
            Rule::Page,
            3,
            "c.example",
            "/",
            NOW - 60 * MICROS,
        );
        // Scores: 203.0.113.1 has 4 on a page and 6 on the site.
        let page = KeyParts {
            client: ip("203.0.113.1"),
            host: "shop.example",
            path: "/cart?<x>",
        };
        let site = KeyParts { path: "", ..page };
        for _ in 0..4 {
            store.add(Area::Page, &page, 1, 60, NOW).unwrap();
        }
        store.add(Area::Site, &site, 6, 120, NOW).unwrap();
        (store, server, dir)
    }

    fn render(format: Format) -> String {
        let (store, server, dir) = fixture();
        page(format, &server, &dir, Some(&store), None, &[], NOW)
    }

    #[test]
    fn escapes_markup_json_and_lines() {
        assert_eq!(
            html_escape("<script>\"&'\0"),
            "&lt;script&gt;&quot;&amp;&#39;\u{fffd}"
        );
        assert_eq!(
            json_escape("a\"b\\c\n\u{1}</"),
            "a\\\"b\\\\c\\n\\u0001\\u003c/"
        );
        assert_eq!(
            line_escape("/a b\\c\r\nd\u{85}\u{2028}é"),
            "/a\\x20b\\x5cc\\x0d\\x0ad\\x85\\u{2028}é"
        );
    }

    #[test]
    fn format_from_query() {
        assert_eq!(Format::from_query(None), Format::Html);
        assert_eq!(Format::from_query(Some("auto")), Format::Auto);
        assert_eq!(Format::from_query(Some("x=1&json")), Format::Json);
        assert_eq!(Format::from_query(Some("autox")), Format::Html);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0, ' '), "1970-01-01 00:00:00");
        assert_eq!(iso(NOW), "2023-11-14T22:13:20Z");
        assert_eq!(iso(951_782_400 * MICROS), "2000-02-29T00:00:00Z");
        assert_eq!(iso(951_868_800 * MICROS), "2000-03-01T00:00:00Z");
        assert_eq!(iso(-MICROS), "1969-12-31T23:59:59Z");
        assert_eq!(iso(4_102_444_800 * MICROS), "2100-01-01T00:00:00Z");
        // Garbage from shared memory must not panic.
        let _ = iso(i64::MIN);
        let _ = iso(i64::MAX);
    }

    #[test]
    fn seconds_left_round_up() {
        assert_eq!(secs_until(NOW + 1, NOW), 1);
        assert_eq!(secs_until(NOW + 2 * MICROS, NOW), 2);
        assert_eq!(secs_until(NOW - 1, NOW), 0);
        assert_eq!(secs_until(i64::MAX, i64::MIN), i64::MAX / MICROS + 1);
    }

    #[test]
    fn html_summary() {
        let h = render(Format::Html);
        assert!(h.contains("2 clients blocked now"), "{h}");
        assert!(h.contains("class=\"alert\""));
        // Both blocks, with rule, generation, score, start and time left.
        assert!(h.contains("<td>192.0.2.7</td>"));
        assert!(h.contains("<td>2001:db8::7</td>"));
        assert!(!h.contains("<td>198.51.100.9</td>"), "ended block listed");
        assert!(h.contains("<span class=\"rule\">page</span>"));
        assert!(h.contains("<span class=\"rule\">site</span>"));
        assert!(h.contains("<td>2023-11-14 22:13:15</td>"), "start of gen 2");
        assert!(
            h.contains("<td class=\"n\">55 s</td>"),
            "60 s block started 5 s ago"
        );
        assert!(h.contains("<td class=\"n\">2</td><td class=\"n\">7</td>"));
        assert!(h.contains("Ended blocks remembered: 1 "));
        assert!(h.contains("<span class=\"note\">count 2 per 1 s</span>"));
        assert!(h.contains("store: shared memory, ok</p>"));
        // Hostile text is escaped, never markup.
        assert!(h.contains("/&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(h.contains("&lt;b&gt;evil&quot;host&lt;/b&gt;"));
        assert!(!h.contains("<script"));
        assert!(!h.contains("<b>"));
        // Settings as directives.
        for line in [
            "DOSSiteCount 500",
            "DOSSiteStatusPenalty 404 50",
            "DOSPageCount 2",
            "DOSPageDeadline 0.50 5",
            "DOSBlockingPeriod 5 60 120",
            "DOSCache shmcb:none(524288)",
        ] {
            assert!(h.contains(&format!("{line}\n")), "missing {line}");
        }
        // Top scorers with their counts; areas and store health.
        assert!(h.contains("<td class=\"n\">6 / 500</td>"));
        assert!(h.contains("<td class=\"n\">4 / 2</td>"));
        assert!(h.contains("/cart?&lt;x&gt;"));
        assert!(h.contains("shared memory, 65536 bytes per area"));
        assert!(h.contains("created"));
        assert!(!h.contains("http:") && !h.contains("https:") && !h.contains("src="));
    }

    #[test]
    fn html_balanced_tags() {
        // Every opened element that needs closing is closed, in order.
        let h = render(Format::Html);
        let mut stack: Vec<String> = Vec::new();
        let void = ["meta", "br", "!DOCTYPE"];
        let mut rest = h.as_str();
        while let Some(i) = rest.find('<') {
            rest = &rest[i + 1..];
            let end = rest.find('>').expect("unterminated tag");
            let tag = &rest[..end];
            rest = &rest[end + 1..];
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '!')
                .collect();
            if void.iter().any(|v| name.eq_ignore_ascii_case(v)) {
                continue;
            }
            if tag.starts_with('/') {
                assert_eq!(stack.pop().as_deref(), Some(name.as_str()), "at </{name}>");
            } else {
                stack.push(name);
            }
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    #[test]
    fn auto_lines() {
        let a = render(Format::Auto);
        let lines: Vec<&str> = a.lines().collect();
        let value = |key: &str| -> Vec<&str> {
            lines
                .iter()
                .filter_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
                .collect()
        };
        assert_eq!(value("BlocksActive"), ["2"]);
        assert_eq!(value("BlocksRemembered"), ["1"]);
        assert_eq!(value("Verdict"), ["2 clients blocked now"]);
        assert_eq!(
            value("SiteCapacity"),
            [Store::create(65536).unwrap().capacity().to_string()]
        );
        assert_eq!(value("PageLive"), ["1"]);
        assert_eq!(value("SiteLive"), ["1"]);
        assert_eq!(value("BlockEntries"), ["3"]);
        assert_eq!(value("StoreState"), ["ok"]);
        assert_eq!(value("StoreAttaches"), ["0"]);
        assert!(value("Setting").contains(&"DOSPageDeadline 0.50 5"));
        assert!(value("Setting").contains(&"DOSBlockingPeriod 5 60 120"));
        let blocks = value("Block");
        assert_eq!(blocks.len(), 2, "{a}");
        assert_eq!(
            blocks[0],
            "192.0.2.7 rule=page gen=2 score=7 count=2 interval=1 \
             started=2023-11-14T22:13:15Z ends_in=55 host=a.example uri=/<script>alert(1)</script>"
        );
        assert_eq!(
            blocks[1],
            "2001:db8::7 rule=site gen=1 score=501 count=2 interval=1 \
             started=2023-11-14T22:13:19Z ends_in=4 host=<b>evil\"host</b> uri=/x\\x0ay\\x20z"
        );
        assert_eq!(
            value("TopPage"),
            ["203.0.113.1 score=4 count=2 interval=60 host=shop.example path=/cart?<x>"]
        );
        assert_eq!(
            value("TopSite"),
            ["203.0.113.1 score=6 count=500 interval=120 host=shop.example"]
        );
        // One record per line: every line is `Key: value`.
        for l in &lines {
            let (k, _) = l
                .split_once(": ")
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            assert!(k.chars().all(|c| c.is_ascii_alphanumeric()), "{l:?}");
        }
    }

    #[test]
    fn json_is_valid_and_complete() {
        let j = render(Format::Json);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap_or_else(|e| panic!("{e}\n{j}"));
        assert_eq!(v["verdict"], "2 clients blocked now");
        assert_eq!(v["blocks_active"], 2);
        assert_eq!(v["blocks"]["active"], 2);
        assert_eq!(v["blocks"]["remembered"], 1);
        let listed = v["blocks"]["listed"].as_array().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1]["client"], "2001:db8::7");
        assert_eq!(listed[1]["host"], "<b>evil\"host</b>");
        assert_eq!(listed[1]["uri"], "/x\ny z");
        assert_eq!(listed[1]["rule"], "site");
        assert_eq!(listed[0]["uri"], "/<script>alert(1)</script>");
        assert_eq!(listed[0]["generation"], 2);
        assert_eq!(listed[0]["score"], 7);
        assert_eq!(listed[0]["ends_in"], 55);
        assert_eq!(listed[0]["started"], "2023-11-14T22:13:15Z");
        assert_eq!(listed[0]["started_unix"], 1_699_999_995);
        assert!(!j.contains('<'), "markup characters are \\u-escaped");
        assert_eq!(v["areas"]["page"]["live"], 1);
        assert_eq!(v["areas"]["block"]["entries"], 3);
        assert!(v["areas"]["site"]["capacity"].as_u64().unwrap() > 0);
        assert_eq!(v["top"]["page"][0]["score"], 4);
        assert_eq!(v["top"]["page"][0]["count"], 2);
        assert_eq!(v["top"]["page"][0]["path"], "/cart?<x>");
        assert_eq!(v["top"]["site"][0]["count"], 500);
        assert_eq!(v["store"]["available"], true);
        assert_eq!(v["store"]["area_bytes"], 65536);
        let settings: Vec<&str> = v["settings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert!(settings.contains(&"DOSSiteStatusPenalty 404 50"));
        assert_eq!(settings[0], "DOSEnabled on");
    }

    #[test]
    fn no_store_says_so_in_every_format() {
        let (server, dir) = (server(&[]), dir(&[]));
        let h = page_(Format::Html, &server, &dir, None, NOW);
        assert!(h.contains("Store unavailable"));
        assert!(h.contains("class=\"warn\""));
        assert!(h.contains("DOSPageCount 2\n"));
        let a = page_(Format::Auto, &server, &dir, None, NOW);
        assert!(a.contains("\nStoreState: unavailable\n"), "{a}");
        assert!(a.contains("\nBlocksActive: 0\n"));
        let j = page_(Format::Json, &server, &dir, None, NOW);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["store"]["available"], false);
        assert!(v["blocks"].is_null());
    }

    #[test]
    fn empty_store_and_monitor_mode() {
        let store = Store::create(65536).unwrap();
        let (server, on) = (server(&[]), dir(&[]));
        let h = page_(Format::Html, &server, &on, Some(&store), NOW);
        assert!(h.contains("No client is blocked"));
        assert!(h.contains("class=\"ok\""));
        assert!(h.contains("Nobody is scoring."));
        let monitor = dir(&["DOSEnabled monitor"]);
        let h = page_(Format::Html, &server, &monitor, Some(&store), NOW);
        assert!(h.contains("Monitor mode, nobody is refused"));
        assert!(h.contains("would block"));
        let a = page_(Format::Auto, &server, &monitor, Some(&store), NOW);
        assert!(a.contains("\nEnabled: monitor\n"));
        // `DOSEnabled off` on the status URL only exempts the page itself: no alarm.
        let off = dir(&["DOSEnabled off"]);
        let h = page_(Format::Html, &server, &off, Some(&store), NOW);
        assert!(h.contains("id=\"verdict\">No client is blocked</p>"));
        assert!(h.contains("class=\"ok\""));
        assert!(h.contains("DOSEnabled off (this URL)"));
    }

    #[test]
    fn attached_store_says_so() {
        let created = Store::create(65536).unwrap();
        let at = created.created();
        let store = Store::attach(created.into_region()).unwrap();
        let h = page_(Format::Html, &server(&[]), &dir(&[]), Some(&store), NOW);
        let expect = format!(
            "shared memory, 65536 bytes per area ({} records each), attached; region created {} UTC",
            store.capacity(),
            utc(at, ' ')
        );
        assert!(h.contains(&expect), "{h}");
        let a = page_(Format::Auto, &server(&[]), &dir(&[]), Some(&store), NOW);
        assert!(a.contains("\nStoreAttaches: 1\n"), "{a}");
    }

    #[test]
    fn provider_is_reported_unused() {
        let store = Store::create(65536).unwrap();
        let server = server(&["DOSCache memcache:127.0.0.1:11211"]);
        let h = page_(Format::Html, &server, &dir(&[]), Some(&store), NOW);
        assert!(h.contains("DOSCache names memcache:127.0.0.1:11211, but its shared tier"));
        let j = page_(Format::Json, &server, &dir(&[]), Some(&store), NOW);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["store"]["unused_provider"], "memcache:127.0.0.1:11211");
    }

    #[test]
    fn fill_percent() {
        assert_eq!(percent_text(permille(1, 3)), "33.3%");
        assert_eq!(percent_text(permille(0, 0)), "0.0%");
        assert_eq!(
            percent_text(permille(u64::MAX, 1)),
            format!("{}.{}%", u64::MAX / 10, u64::MAX % 10)
        );
    }
}
