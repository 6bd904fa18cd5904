//! Escaping for each format. Hosts and URIs come from requests and are attacker-controlled.
#![forbid(unsafe_code)]

use std::fmt::Write;
use std::io;

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

/// serde_json's compact output, plus `\u` escapes for `<`, `>`, `&`, DEL, U+2028 and U+2029,
/// so the JSON stays inert if someone pastes it into HTML or a script.
pub struct InertJson;

impl serde_json::ser::Formatter for InertJson {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if matches!(c, '<' | '>' | '&' | '\u{7f}' | '\u{2028}' | '\u{2029}') {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                write!(writer, "\\u{:04x}", c as u32)?;
                start = i + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// `value` as JSON with [`InertJson`] escaping.
pub fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(4096);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, InertJson);
    // Serializing plain data into a Vec cannot fail (no maps with non-string keys).
    if value.serialize(&mut ser).is_err() {
        return "null".to_string();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The inside of a JSON string literal for `s` (as `?json` writes it).
pub fn json_escape(s: &str) -> String {
    let quoted = to_json(s);
    quoted[1..quoted.len() - 1].to_string()
}

/// Escape a value for one `?auto` field: backslash, space and every control or line-breaking
/// character become `\xNN` / `\u{N}`, so a record is one line and its fields split on spaces.
pub fn line_escape(s: &str) -> String {
    escape_line(s, true)
}

/// Like [`line_escape`] but keeps spaces (a settings line is one value).
pub fn line_escape_controls(s: &str) -> String {
    escape_line(s, false)
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

/// A Prometheus label value: backslash, double quote and line feed escaped.
pub fn label_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}
