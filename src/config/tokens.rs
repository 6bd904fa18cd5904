//! Splitting a directive's raw arguments into words the way httpd does (`ap_getword_conf`), and
//! quoting a word so that splitting gives it back (for `canonical_lines`).
//!
//! httpd's rules: words are separated by ASCII whitespace; a word that starts with `"` or `'`
//! runs to the matching quote (or to the end of the line when the quote is never closed), and
//! inside it `\<quote>` and `\\` stand for the quote and the backslash; outside quotes only
//! `\\` is special (it stands for one backslash).

use std::borrow::Cow;

/// httpd's `apr_isspace` (the C locale's isspace): includes vertical tab, unlike Rust's
/// `is_ascii_whitespace`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

fn skip_space(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_space(s[i]) {
        i += 1;
    }
    i
}

/// The words of `raw`, unquoted and unescaped.
pub(crate) fn words(raw: &str) -> Vec<String> {
    let s = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = skip_space(s, 0);
    while i < s.len() {
        let mut word = Vec::new();
        let quote = match s[i] {
            q @ (b'"' | b'\'') => Some(q),
            _ => None,
        };
        if let Some(q) = quote {
            i += 1;
            while i < s.len() && s[i] != q {
                if s[i] == b'\\' && i + 1 < s.len() && (s[i + 1] == q || s[i + 1] == b'\\') {
                    i += 1;
                }
                word.push(s[i]);
                i += 1;
            }
            // Step over the closing quote (absent when the line ended first).
            i = (i + 1).min(s.len());
        } else {
            while i < s.len() && !is_space(s[i]) {
                if s[i] == b'\\' && i + 1 < s.len() && s[i + 1] == b'\\' {
                    i += 1;
                }
                word.push(s[i]);
                i += 1;
            }
        }
        // Only ASCII bytes were dropped, so the bytes are still UTF-8; lossy never replaces.
        out.push(String::from_utf8_lossy(&word).into_owned());
        i = skip_space(s, i);
    }
    out
}

/// `word` as it must be written for [`words`] to give it back: unchanged when it is a plain
/// token, else double-quoted with `"` and `\` escaped.
pub(crate) fn quote(word: &str) -> Cow<'_, str> {
    let plain = !word.is_empty()
        && !word.starts_with(['"', '\''])
        && !word.bytes().any(|b| is_space(b) || b == b'\\');
    if plain {
        return Cow::Borrowed(word);
    }
    let mut q = String::with_capacity(word.len() + 2);
    q.push('"');
    for c in word.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    Cow::Owned(q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_like_httpd() {
        assert_eq!(words("  a  b\tc "), vec!["a", "b", "c"]);
        assert_eq!(words(""), Vec::<String>::new());
        assert_eq!(words("   "), Vec::<String>::new());
        assert_eq!(words(r#""a b" c"#), vec!["a b", "c"]);
        assert_eq!(words(r#"'a "b"' c"#), vec![r#"a "b""#, "c"]);
        assert_eq!(words(r#""say \"hi\"""#), vec![r#"say "hi""#]);
        assert_eq!(words(r#""back\\slash""#), vec![r"back\slash"]);
        assert_eq!(words(r#""keep \n""#), vec![r"keep \n"]);
        assert_eq!(words(r"a\\b c\d"), vec![r"a\b", r"c\d"]);
        assert_eq!(words(r#""""#), vec![""]);
        assert_eq!(words(r#""a"b"#), vec!["a", "b"]);
        assert_eq!(words(r#"a"b c"#), vec![r#"a"b"#, "c"]);
        // An unclosed quote runs to the end of the line, as in httpd.
        assert_eq!(words(r#""a b"#), vec!["a b"]);
        assert_eq!(words("x\x0by"), vec!["x", "y"]);
        assert_eq!(words("é ü"), vec!["é", "ü"]);
    }

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(quote("plain"), "plain");
        assert!(matches!(quote("plain"), Cow::Borrowed(_)));
        assert_eq!(quote("a b"), r#""a b""#);
        assert_eq!(quote(""), r#""""#);
        assert_eq!(quote(r#""x"#), r#""\"x""#);
        assert_eq!(quote(r"c:\x"), r#""c:\\x""#);
    }

    proptest! {
        #[test]
        fn quote_then_split_roundtrips(ws in proptest::collection::vec(".*", 0..5)) {
            let line: Vec<String> = ws.iter().map(|w| quote(w).into_owned()).collect();
            prop_assert_eq!(words(&line.join(" ")), ws);
        }
    }
}
