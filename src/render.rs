//! The status page (`SetHandler shield-handler`): HTML, `?auto` (mod_status-style `key: value`
//! lines) and `?json`. Every value that came from a request (hosts, URIs) is escaped.
use std::ffi::CStr;
use std::fmt::Write;

use crate::config::{canonical_lines, DirConfig, ServerSettings};
use crate::store::{Area, Micros, Store};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Html,
    Auto,
    Json,
}

impl Format {
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

const AREAS: [(Area, &str); 3] = [
    (Area::Site, "site"),
    (Area::Page, "page"),
    (Area::Block, "block"),
];

/// Escape text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escape text for a JSON string literal.
pub fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Render the page in `format`.
pub fn page(
    format: Format,
    server: &ServerSettings,
    dir: &DirConfig,
    store: Option<&Store>,
    now: Micros,
) -> String {
    let settings = canonical_lines(server, dir);
    let mut out = String::new();
    match format {
        Format::Auto => {
            for line in &settings {
                let _ = writeln!(out, "Setting: {line}");
            }
            if let Some(store) = store {
                for (area, name) in AREAS {
                    let s = store.stats(area);
                    let _ = writeln!(
                        out,
                        "{name}Capacity: {}\n{name}Entries: {}\n{name}Inserted: {}\n{name}Expired: {}\n{name}Evicted: {}\n{name}Hits: {}\n{name}Misses: {}",
                        s.capacity, s.entries, s.inserted, s.expired, s.evicted, s.hits, s.misses
                    );
                }
                for b in store
                    .snapshot(Area::Block, now, 100)
                    .iter()
                    .filter(|b| b.block_until > now)
                {
                    let _ = writeln!(
                        out,
                        "Block: {} gen {} ends in {} s",
                        b.client,
                        b.generation,
                        (b.block_until - now) / 1_000_000
                    );
                }
            }
        }
        Format::Json => {
            out.push_str("{\"settings\":[");
            let lines: Vec<String> = settings
                .iter()
                .map(|l| format!("\"{}\"", json_escape(l)))
                .collect();
            out.push_str(&lines.join(","));
            out.push_str("],\"areas\":{");
            if let Some(store) = store {
                let areas: Vec<String> = AREAS
                    .iter()
                    .map(|(area, name)| {
                        let s = store.stats(*area);
                        format!(
                            "\"{name}\":{{\"capacity\":{},\"entries\":{},\"inserted\":{},\"expired\":{},\"evicted\":{},\"hits\":{},\"misses\":{}}}",
                            s.capacity, s.entries, s.inserted, s.expired, s.evicted, s.hits, s.misses
                        )
                    })
                    .collect();
                out.push_str(&areas.join(","));
            }
            out.push_str("}}\n");
        }
        Format::Html => {
            out.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>mod_shield status</title></head><body>\n<h1>mod_shield status</h1>\n<h2>Settings</h2>\n<pre>");
            for line in &settings {
                let _ = writeln!(out, "{}", html_escape(line));
            }
            out.push_str("</pre>\n");
            if let Some(store) = store {
                out.push_str("<h2>Blocks</h2>\n<table>\n<tr><th>client</th><th>generation</th><th>host</th><th>URI</th><th>ends in</th></tr>\n");
                for b in store
                    .snapshot(Area::Block, now, 100)
                    .iter()
                    .filter(|b| b.block_until > now)
                {
                    let _ = writeln!(
                        out,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} s</td></tr>",
                        b.client,
                        b.generation,
                        html_escape(&b.host),
                        html_escape(&b.path),
                        (b.block_until - now) / 1_000_000
                    );
                }
                out.push_str("</table>\n");
            }
            out.push_str("</body></html>\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_json() {
        assert_eq!(
            html_escape("<script>\"&'"),
            "&lt;script&gt;&quot;&amp;&#39;"
        );
        assert_eq!(json_escape("a\"b\\c\n"), "a\\\"b\\\\c\\u000a");
    }

    #[test]
    fn format_from_query() {
        assert_eq!(Format::from_query(None), Format::Html);
        assert_eq!(Format::from_query(Some("auto")), Format::Auto);
        assert_eq!(Format::from_query(Some("x=1&json")), Format::Json);
    }
}
