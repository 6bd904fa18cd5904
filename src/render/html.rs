//! The HTML page: inline CSS and an inline SVG chart, no script, nothing loaded from elsewhere.
#![forbid(unsafe_code)]

use std::fmt::Write;

use super::escape::html_escape;
use super::summary::{who, Activity, Scorer, StoreSummary, Summary};
use super::time::{hour_minute, percent_text, plural, utc};
use super::{Section, SECTIONS};
use crate::config::Enabled;

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
svg.chart{display:block;width:100%;height:auto;margin:4px 0}\
.chart text{font-size:11px;fill:#5b6470}.chart .grid{stroke:#e4e7eb;stroke-width:1}\
.chart .c-counted{fill:#3b73b9}.chart .c-refused{fill:#c0392b}.chart .c-started{fill:#d08a00}\
.chart text.n-started{fill:#fff;font-size:10px;font-weight:700}\
.chart .hover{fill:transparent}.chart .hover:hover{fill:rgba(0,0,0,.05)}\
.key{display:inline-block;width:10px;height:10px;border-radius:2px;margin:0 4px 0 14px;vertical-align:middle}\
.key.c-counted{background:#3b73b9}.key.c-refused{background:#c0392b}.key.c-started{background:#d08a00}\
footer{color:#5b6470;font-size:13px}";

/// One table cell, escaped.
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

pub fn page(s: &Summary) -> String {
    let mut out = String::with_capacity(24 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\">\
         <title>mod_shield: {}</title><style>{CSS}</style></head>\n<body>\n",
        html_escape(&s.verdict)
    );
    for section in SECTIONS {
        match section {
            // Always first: the header, then the page's main part opens.
            Section::Headline => headline(&mut out, s),
            Section::Activity => activity(&mut out, s),
            Section::WouldBlocks => would_blocks(&mut out, s),
            Section::Challenge => challenge(&mut out, s),
            Section::Blocks => {
                if let Some(st) = &s.store {
                    blocks(&mut out, st);
                }
            }
            Section::Top => {
                if let Some(st) = &s.store {
                    top(&mut out, st, s);
                }
            }
            Section::Areas => {
                if let Some(st) = &s.store {
                    areas(&mut out, st);
                }
            }
            Section::Store => store(&mut out, s.store.as_ref()),
            Section::Settings => settings(&mut out, s),
        }
    }
    out.push_str(
        "<footer>Also as <a href=\"?auto\">key: value lines</a>, <a href=\"?json\">JSON</a> \
         and <a href=\"?metrics\">Prometheus metrics</a>.</footer>\n</main>\n</body></html>\n",
    );
    out
}

fn headline(out: &mut String, s: &Summary) {
    let class = match (&s.store, s.enabled) {
        (None, _) => "warn",
        (Some(st), _) if st.blocks.active > 0 => "alert",
        (Some(_), Enabled::Monitor) => "warn",
        (Some(_), _) => "ok",
    };
    let _ = write!(
        out,
        "<header class=\"{class}\"><h1>mod_shield status</h1>\
         <p class=\"verdict\" id=\"verdict\">{}</p><p class=\"meta\">{} UTC · DOSEnabled {} (this URL) · store: {}</p>\
         </header>\n<main>\n",
        html_escape(&s.verdict),
        utc(s.now, ' '),
        s.enabled.as_str(),
        match &s.store {
            Some(st) => html_escape(&format!("{}, {}", st.backend.kind, st.backend.state)),
            None => "unavailable".to_string(),
        }
    );
    if let Some(u) = s
        .under_attack
        .filter(|u| u.on || u.configured || u.forced != crate::attack::Override::Auto)
    {
        let _ = writeln!(
            out,
            "<section><p class=\"{}\" id=\"under-attack\">{}</p></section>",
            if u.on { "note alert" } else { "note" },
            html_escape(&u.describe())
        );
    }
    if let Some(note) = s.monitor_note {
        let _ = writeln!(
            out,
            "<section><p class=\"note\">{}</p></section>",
            html_escape(note)
        );
    }
}

fn activity(out: &mut String, s: &Summary) {
    out.push_str("<section id=\"activity\"><h2>Last hour</h2>");
    let Some(a) = &s.activity else {
        out.push_str("<p class=\"note\">The request counters are unavailable.</p></section>\n");
        return;
    };
    let (counted, refused, started) = a.last_hour();
    let t = &a.since_start;
    let _ = write!(
        out,
        "<p>{} counted, {} refused, {} in the last 60 minutes \
         <span class=\"note\">(since start: {} counted, {} refused, {} started, {} would-be)</span></p>",
        plural(counted as usize, "request", "requests"),
        refused,
        plural(started as usize, "block started", "blocks started"),
        t.counted,
        t.refused_site.saturating_add(t.refused_page),
        t.blocks_started_site.saturating_add(t.blocks_started_page),
        t.would_blocks
    );
    chart(out, a);
    out.push_str(
        "<p class=\"note\"><span class=\"key c-counted\"></span>requests counted\
         <span class=\"key c-refused\"></span>requests refused\
         <span class=\"key c-started\"></span>blocks started (per minute, UTC)</p></section>\n",
    );
}

/// The smallest 1, 2 or 5 × 10ⁿ at least `v` (the chart's top line), at least 1.
fn nice_ceiling(v: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            let c = step.saturating_mul(m);
            if c >= v || c == u64::MAX {
                return c;
            }
        }
        step = step.saturating_mul(10);
    }
}

/// Counted and refused as bars per minute on one scale, blocks started as numbered marks in a
/// lane below. Numbers and times only (nothing from requests), still escaped as text.
fn chart(out: &mut String, a: &Activity) {
    const W: u64 = 960;
    const LEFT: u64 = 52;
    const SLOT: u64 = 15;
    const TOP: u64 = 10;
    const PLOT: u64 = 140;
    const LANE: u64 = TOP + PLOT + 6;
    const H: u64 = LANE + 18 + 18;
    let minutes = &a.per_minute;
    let top = nice_ceiling(
        minutes
            .iter()
            .map(|m| m.counted.max(m.refused))
            .max()
            .unwrap_or(0),
    );
    let (counted, refused, started) = a.last_hour();
    let label = format!(
        "Last 60 minutes: {counted} requests counted, {refused} refused, {started} blocks started"
    );
    let _ = write!(
        out,
        "<svg class=\"chart\" id=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\"><title>{}</title>",
        html_escape(&label),
        html_escape(&label)
    );
    // Grid lines and their values: 0, half, top.
    for (value, y) in [(0, TOP + PLOT), (top / 2, TOP + PLOT / 2), (top, TOP)] {
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\"></line>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            LEFT + SLOT * minutes.len() as u64,
            LEFT - 6,
            y + 4,
            value
        );
    }
    let height = |v: u64| -> u64 {
        if v == 0 {
            0
        } else {
            // At least one pixel, so a single refusal shows.
            ((u128::from(v) * u128::from(PLOT) / u128::from(top)) as u64).clamp(1, PLOT)
        }
    };
    for (i, m) in minutes.iter().enumerate() {
        let x = LEFT + SLOT * i as u64;
        let tip = format!(
            "{} UTC: {} counted, {} refused, {} blocks started",
            hour_minute(m.start),
            m.counted,
            m.refused,
            m.blocks_started
        );
        let _ = write!(
            out,
            "<g><title>{}</title><rect class=\"hover\" x=\"{x}\" y=\"{TOP}\" width=\"{SLOT}\" height=\"{}\"></rect>",
            html_escape(&tip),
            LANE + 18 - TOP
        );
        for (class, v, dx) in [("c-counted", m.counted, 1), ("c-refused", m.refused, 8)] {
            let h = height(v);
            if h > 0 {
                let _ = write!(
                    out,
                    "<rect class=\"{class}\" x=\"{}\" y=\"{}\" width=\"6\" height=\"{h}\"></rect>",
                    x + dx,
                    TOP + PLOT - h
                );
            }
        }
        if m.blocks_started > 0 {
            let _ = write!(
                out,
                "<rect class=\"c-started\" x=\"{}\" y=\"{LANE}\" width=\"13\" height=\"15\" rx=\"3\"></rect>\
                 <text class=\"n-started\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + 1,
                x + 7,
                LANE + 11,
                html_escape(&if m.blocks_started > 99 {
                    "99+".to_string()
                } else {
                    m.blocks_started.to_string()
                })
            );
        }
        out.push_str("</g>");
    }
    // Time axis: every quarter of an hour, and the current minute.
    let last = minutes.len().saturating_sub(1);
    for (i, m) in minutes.iter().enumerate() {
        if i % 15 == 0 || i == last {
            let text = if i == last {
                "now".to_string()
            } else {
                hour_minute(m.start)
            };
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                LEFT + SLOT * i as u64 + SLOT / 2,
                H - 4,
                html_escape(&text)
            );
        }
    }
    out.push_str("</svg>\n");
}

/// Monitor mode's would-be blocks (shown whenever there are any, and in monitor mode always).
fn challenge(out: &mut String, s: &Summary) {
    let Some(c) = &s.challenges else {
        return;
    };
    let _ = writeln!(
        out,
        "<section id=\"challenge\"><h2>Challenge</h2><p>{} pages served, {} solved \
         (passes issued), {} solutions refused, {} requests let through by a pass.</p></section>",
        c.issued, c.passed, c.failed, c.pass_requests
    );
}

fn would_blocks(out: &mut String, s: &Summary) {
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
    out.push_str("<table>");
    header_row(out, &["client", "rule", "#score / count", "when (UTC)"]);
    out.push_str("<tbody>\n");
    for w in &s.would_blocks {
        out.push_str("<tr>");
        td(out, "", &who(w.client, w.prefix));
        td(out, "", w.rule);
        td(out, "n", &format!("{} / {}", w.score, w.count));
        td(out, "", &utc(w.at, ' '));
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></section>\n");
}

fn blocks(out: &mut String, st: &StoreSummary) {
    let b = &st.blocks;
    let _ = writeln!(
        out,
        "<section id=\"blocks\"><h2>Active blocks ({})</h2>",
        b.active
    );
    if b.listed.is_empty() {
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
        for r in &b.listed {
            out.push_str("<tr>");
            td(out, "", &who(r.client, r.prefix));
            let _ = write!(
                out,
                "<td><span class=\"rule\">{}</span> <span class=\"note\">count {} per {} s</span></td>",
                r.rule, r.count, r.interval
            );
            td(out, "n", &r.generation.to_string());
            td(out, "n", &r.score.to_string());
            td(out, "host", &r.host);
            td(out, "uri", &r.uri);
            td(out, "", &utc(r.started, ' '));
            td(out, "n", &format!("{} s", r.ends_in));
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody></table>\n");
        if b.active > b.listed.len() {
            let _ = writeln!(
                out,
                "<p class=\"note\">… and {} more.</p>",
                b.active - b.listed.len()
            );
        }
    }
    let _ = writeln!(
        out,
        "<p class=\"note\">Ended blocks remembered: {} (a client that returns gets the next \
         generation's longer block).</p></section>",
        b.remembered
    );
}

fn top(out: &mut String, st: &StoreSummary, s: &Summary) {
    out.push_str("<section id=\"top\"><h2>Top scorers</h2><div class=\"cols\">\n");
    let _ = write!(
        out,
        "<div><h3>Site (client + host), count {}</h3>",
        s.site_count
    );
    scorers(out, &st.top.site, false);
    let _ = write!(
        out,
        "</div>\n<div><h3>Page (client + host + path), count {}</h3>",
        s.page_count
    );
    scorers(out, &st.top.page, true);
    out.push_str(
        "</div>\n</div><p class=\"note\">A record blocks when its score exceeds its count \
         within its window (the page count shown is this URL's).</p></section>\n",
    );
}

fn scorers(out: &mut String, records: &[Scorer], page: bool) {
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
        td(out, "", &who(r.client, r.prefix));
        td(out, "host", &r.host);
        if let Some(path) = &r.path {
            td(out, "uri", path);
        }
        td(out, "n", &format!("{} / {}", r.score, r.count));
        td(out, "n", &format!("{} s", r.interval));
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>");
}

fn areas(out: &mut String, st: &StoreSummary) {
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
        out.push_str("<tr>");
        td(out, "", a.name);
        td(out, "n", &a.capacity.to_string());
        td(out, "n", &a.entries.to_string());
        out.push_str("<td class=\"n\">");
        fill_bar(out, a.fill_permille);
        out.push_str("</td>");
        for v in [a.live, a.inserted, a.expired, a.evicted, a.hits, a.misses] {
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

fn store(out: &mut String, st: Option<&StoreSummary>) {
    let Some(st) = st else {
        out.push_str(
            "<section><h2>Store</h2><p class=\"bad\">The shared store is unavailable: \
             nothing is counted and no client is blocked until it is back. \
             See the error log for why it could not be set up.</p></section>\n",
        );
        return;
    };
    let b = &st.backend;
    out.push_str("<section id=\"store\"><h2>Store</h2><dl>");
    let _ = write!(
        out,
        "<dt>backend</dt><dd>{}</dd>",
        html_escape(&b.describe())
    );
    let _ = write!(
        out,
        "<dt>state</dt><dd{}>{}</dd><dt>attached</dt><dd>{}</dd>",
        if b.persistent == Some(false) {
            " class=\"bad\""
        } else {
            ""
        },
        html_escape(&b.state),
        plural(b.attaches as usize, "time", "times")
    );
    let _ = write!(
        out,
        "<dt>repairs</dt><dd>{}</dd>",
        html_escape(&b.repairs())
    );
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

fn settings(out: &mut String, s: &Summary) {
    out.push_str(
        "<section id=\"settings\"><h2>Effective settings</h2>\
         <p class=\"note\">As they would be written in shield.conf, for this server and this URL.</p><pre>",
    );
    for line in &s.settings {
        let _ = writeln!(out, "{}", html_escape(line));
    }
    out.push_str("</pre></section>\n");
}

#[cfg(test)]
mod tests {
    use super::nice_ceiling;

    #[test]
    fn chart_scale_is_a_round_number() {
        assert_eq!(nice_ceiling(0), 1);
        assert_eq!(nice_ceiling(1), 1);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(7), 10);
        assert_eq!(nice_ceiling(11), 20);
        assert_eq!(nice_ceiling(4321), 5000);
        assert_eq!(nice_ceiling(u64::MAX), u64::MAX);
    }
}
