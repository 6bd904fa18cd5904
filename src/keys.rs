//! The text parts of a record key: the host and the page. Both borrow their input when it is
//! already in canonical form, so the common request allocates nothing here.
#![forbid(unsafe_code)]

use std::borrow::Cow;

/// The `Host` of a request as the site key uses it: ASCII lower-case, port and trailing dots
/// removed (`Example.COM:8080` → `example.com`, `[::1]:80` → `[::1]`, `example.com.` →
/// `example.com`). `None` or empty gives `""`.
pub fn canonical_host(host: Option<&str>) -> Cow<'_, str> {
    let Some(host) = host else {
        return Cow::Borrowed("");
    };
    let host = host.trim_ascii();
    let name = strip_port(host).trim_end_matches('.');
    if name.as_bytes().iter().any(u8::is_ascii_uppercase) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// The site name of a virtual host: its ServerName, canonical as above, then `:port` when
/// the virtual host has one (`Example.COM`, 8080 → `example.com:8080`).
pub fn site_name(server_name: Option<&str>, port: u16) -> String {
    let name = canonical_host(server_name);
    if port == 0 {
        name.into_owned()
    } else {
        format!("{name}:{port}")
    }
}

/// `host[:port]`, `[v6][:port]`; a bare IPv6 literal (several colons, no brackets) is kept
/// whole since its last group is not a port.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    let b = host.as_bytes();
    match b.iter().position(|&c| c == b':') {
        Some(i) if !b[i + 1..].contains(&b':') => &host[..i],
        _ => host,
    }
}

/// The page part of a page key: with `canonical` on, the decoded path only (`r->uri`); off,
/// `uri?args` when there is a non-empty query string (an empty `?` is the same page).
pub fn page_path<'a>(uri: &'a str, args: Option<&'a str>, canonical: bool) -> Cow<'a, str> {
    match args {
        Some(q) if !canonical && !q.is_empty() => {
            let mut s = String::with_capacity(uri.len() + 1 + q.len());
            s.push_str(uri);
            s.push('?');
            s.push_str(q);
            Cow::Owned(s)
        }
        _ => Cow::Borrowed(uri),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn borrowed(c: Cow<'_, str>) -> bool {
        matches!(c, Cow::Borrowed(_))
    }

    #[test]
    fn host_lowercase_and_port() {
        assert_eq!(canonical_host(Some("Example.COM:8080")), "example.com");
        assert_eq!(canonical_host(Some("example.com:80")), "example.com");
        assert_eq!(canonical_host(Some("example.com")), "example.com");
        assert_eq!(canonical_host(Some("example.com.")), "example.com");
        assert_eq!(canonical_host(Some("Example.com.:443")), "example.com");
        assert_eq!(canonical_host(Some("[::1]:80")), "[::1]");
        assert_eq!(canonical_host(Some("[2001:DB8::1]")), "[2001:db8::1]");
        assert_eq!(canonical_host(Some("2001:db8::1")), "2001:db8::1");
        assert_eq!(canonical_host(Some("192.0.2.1:8443")), "192.0.2.1");
        assert_eq!(canonical_host(Some("[::1")), "[::1");
        assert_eq!(canonical_host(Some(" a.example ")), "a.example");
        assert_eq!(canonical_host(Some(":80")), "");
        assert_eq!(canonical_host(Some("")), "");
        assert_eq!(canonical_host(None), "");
    }

    #[test]
    fn host_borrows_unless_case_changes() {
        assert!(borrowed(canonical_host(Some("example.com"))));
        assert!(borrowed(canonical_host(Some("example.com:8080"))));
        assert!(borrowed(canonical_host(Some("[::1]:80"))));
        assert!(borrowed(canonical_host(None)));
        assert!(!borrowed(canonical_host(Some("Example.com"))));
    }

    #[test]
    fn host_keeps_non_ascii_bytes() {
        // Not lower-cased beyond ASCII (httpd does not either); never panics on UTF-8.
        assert_eq!(canonical_host(Some("ÄB.example:1")), "Äb.example");
    }

    #[test]
    fn site_name_is_the_vhost_name_and_port() {
        assert_eq!(
            site_name(Some("WWW.Example.com"), 443),
            "www.example.com:443"
        );
        assert_eq!(
            site_name(Some("example.com:8080"), 8080),
            "example.com:8080"
        );
        assert_eq!(site_name(Some("example.com"), 0), "example.com");
        assert_eq!(site_name(None, 80), ":80");
    }

    #[test]
    fn page_canonical_ignores_query() {
        let p = page_path("/index.php", Some("p=1"), true);
        assert_eq!(p, "/index.php");
        assert!(borrowed(p));
        assert!(borrowed(page_path("/a", None, false)));
        assert!(borrowed(page_path("/a", Some(""), false)));
        assert_eq!(page_path("/a", Some(""), false), "/a");
    }

    #[test]
    fn page_raw_includes_query() {
        assert_eq!(
            page_path("/index.php", Some("p=1&x=%20"), false),
            "/index.php?p=1&x=%20"
        );
        assert_eq!(page_path("/index.php", None, false), "/index.php");
    }
}
