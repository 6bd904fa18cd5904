//! `DOSChallenge` in post_read_request: the one place where a blocked client may be let
//! through (with a valid pass), shown the proof-of-work page (a browser navigation), or
//! answered a submitted solution. The decisions are `crate::challenge` (plain Rust); this only
//! reads the request and writes the response.
//!
//! With `DOSChallenge off` [`screen`] does exactly what post_read_request always did: refuse
//! a blocked client, pass the others.
use std::borrow::Cow;
use std::ffi::{c_char, c_int, CStr, CString};
use std::net::IpAddr;

use apache_sys as ap;

use super::lifecycle::{now, store};
use super::log::{self, Level};
use super::request::refuse;
use super::server::ServerHolder;
use crate::block;
use crate::challenge::{self, nonce, page, pass, pow, Key, Submission};
use crate::client;
use crate::config::ServerSettings;
use crate::policy::{self, Refusal};
use crate::store::Store;

/// What post_read_request does next.
pub enum Screen {
    /// Go on counting the request under this client (the pass holder's own address when a
    /// pass let it through a block).
    Serve(IpAddr),
    /// The response is decided: return this from the hook.
    Done(c_int),
}

/// A C string field of the request, borrowed.
unsafe fn text<'a>(p: *const c_char) -> Option<Cow<'a, str>> {
    // SAFETY: p is NULL or a NUL-terminated string in the request's pool.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy())
}

unsafe fn header<'a>(r: *const ap::request_rec, name: &CStr) -> Option<Cow<'a, str>> {
    // SAFETY: r is live; headers_in is its table of request headers.
    unsafe { text(ap::apr_table_get((*r).headers_in, name.as_ptr())) }
}

/// Sets a response header that survives an error response (copied into the request pool).
unsafe fn set_err_header(r: *mut ap::request_rec, name: &'static CStr, value: &str) {
    // SAFETY: r is live; the value is copied into its pool, the name is 'static.
    unsafe {
        let v = ap::apr_pstrmemdup((*r).pool, value.as_ptr().cast(), value.len() as _);
        ap::apr_table_setn((*r).err_headers_out, name.as_ptr(), v);
    }
}

/// The handler name a submission of an unblocked client is given in post_read_request.
pub const HANDLER: &CStr = c"shield-challenge";

/// The handler of a submission by a client that was not blocked in post_read_request (and
/// passed counting in fixups).
///
/// # Safety
/// `r` is the live request of the handler hook, its handler [`HANDLER`].
pub unsafe fn handler(r: *mut ap::request_rec) -> c_int {
    // SAFETY: r is live; useragent_ip is pool memory (mod_remoteip's result, or the peer).
    unsafe {
        let (Some(store), Some(server)) = (store(), ServerHolder::settings((*r).server)) else {
            return ap::DECLINED as c_int;
        };
        let ip = text((*r).useragent_ip).and_then(|t| client::parse_client(&t));
        let Some(ip) = ip.filter(|_| server.challenge.enabled) else {
            return ap::DECLINED as c_int;
        };
        let client = client::group(ip, server.ipv6_prefix);
        let key = server.challenge.key.unwrap_or(Key(store.challenge_key()));
        let now = now();
        let refusal = policy::blocked(store, server, client, now);
        submit(r, store, server, client, &key, refusal, now)
    }
}

fn counters() -> Option<&'static challenge::Stats> {
    challenge::stats()
}

/// Decide a request of `client` (normalised, grouped, not whitelisted).
///
/// # Safety
/// `r` is the live request of post_read_request.
pub unsafe fn screen(
    r: *mut ap::request_rec,
    store: &Store,
    server: &ServerSettings,
    client: IpAddr,
    now: i64,
) -> Screen {
    let refusal = policy::blocked(store, server, client, now);
    let ch = &server.challenge;
    if !ch.enabled {
        return match refusal {
            // SAFETY: r is live.
            Some(refusal) => Screen::Done(unsafe { refuse(r, &refusal, now) }),
            None => Screen::Serve(client),
        };
    }
    let key = ch.key.unwrap_or(Key(store.challenge_key()));
    let secs = now.div_euclid(1_000_000);
    // SAFETY (rest of fn): r is live; its fields are request-pool memory.
    unsafe {
        if text((*r).uri).as_deref() == Some(challenge::SUBMIT_PATH) {
            if refusal.is_some() {
                return Screen::Done(submit(r, store, server, client, &key, refusal, now));
            }
            // Not blocked (say, the block ended while the browser worked): counted like any
            // other request in fixups, then answered by [`handler`].
            (*r).handler = HANDLER.as_ptr();
            return Screen::Serve(client);
        }
        let Some(mut refusal) = refusal else {
            return Screen::Serve(client);
        };
        let cookies = header(r, c"Cookie");
        if let Some(p) = cookies.and_then(|h| pass::from_cookies(&key, client, &h, secs)) {
            let holder = challenge::pass_client(client, &p.id);
            match policy::blocked(store, server, holder, now) {
                None => {
                    if let Some(s) = counters() {
                        s.pass_request();
                    }
                    return Screen::Serve(holder);
                }
                // The pass holder flooded: its pass is blocked; it must solve again.
                Some(pass_block) => refusal = pass_block,
            }
        }
        let method = text((*r).method).unwrap_or_default();
        if challenge::is_navigation(&method, header(r, c"Accept").as_deref()) {
            return Screen::Done(challenge_page(
                r, store, server, client, &key, &refusal, now,
            ));
        }
        Screen::Done(refuse(r, &refusal, now))
    }
}

/// The proof-of-work page, with the refusal's status and headers.
unsafe fn challenge_page(
    r: *mut ap::request_rec,
    store: &Store,
    server: &ServerSettings,
    client: IpAddr,
    key: &Key,
    refusal: &Refusal,
    now: i64,
) -> c_int {
    let generation = store.active_block(client, now).map_or(1, |b| b.generation);
    let bits = server.challenge.bits_for_generation(generation);
    let secs = now.div_euclid(1_000_000);
    let nonce = nonce::issue(key, client, secs, bits);
    // SAFETY: r is live.
    let target = unsafe { text((*r).unparsed_uri) }.unwrap_or_default();
    let html = page::html(&page::Challenge {
        nonce: &nonce,
        issued: secs,
        bits,
        return_to: challenge::safe_return(&target),
        retry_after: refusal.retry_after(now),
    });
    // The page is ASCII without NULs; an error here would only mean the plain refusal.
    // ap_custom_response marks the text as a message (not a URL) with a leading quote itself.
    let Ok(html) = CString::new(html) else {
        // SAFETY: r is live.
        return unsafe { refuse(r, refusal, now) };
    };
    // SAFETY: r is live; ap_custom_response copies the text into the request pool, and
    // ap_die (which httpd runs with the status this hook returns) sends it as the body of the
    // error response, keeping err_headers_out.
    unsafe {
        let status = refuse(r, refusal, now);
        set_err_header(
            r,
            c"Content-Security-Policy",
            page::content_security_policy(),
        );
        set_err_header(r, c"X-Content-Type-Options", "nosniff");
        // The page declares UTF-8 itself; without this httpd adds charset=iso-8859-1.
        ap::apr_table_setn(
            (*r).subprocess_env,
            c"suppress-error-charset".as_ptr(),
            c"1".as_ptr(),
        );
        ap::ap_custom_response(r, status, html.as_ptr());
        if let Some(s) = counters() {
            s.issued();
        }
        status
    }
}

/// A submitted solution: one HMAC and one SHA-256. Valid: a pass and a 303 back to the page
/// that was refused. Anything else: the plain refusal (400 when the client is not blocked).
unsafe fn submit(
    r: *mut ap::request_rec,
    store: &Store,
    server: &ServerSettings,
    client: IpAddr,
    key: &Key,
    refusal: Option<Refusal>,
    now: i64,
) -> c_int {
    let ch = &server.challenge;
    let secs = now.div_euclid(1_000_000);
    // SAFETY: r is live.
    let args = unsafe { text((*r).args) }.unwrap_or_default();
    let generation = store.active_block(client, now).map_or(1, |b| b.generation);
    let required = ch.bits_for_generation(generation);
    let valid = Submission::parse(&args).filter(|s| {
        s.bits >= required
            && nonce::check(key, client, &s.nonce, s.issued, s.bits, secs).is_ok()
            && pow::check(&s.nonce, s.solution, s.bits)
    });
    let Some(sub) = valid else {
        if let Some(s) = counters() {
            s.failed();
        }
        return match refusal {
            // SAFETY: r is live.
            Some(refusal) => unsafe { refuse(r, &refusal, now) },
            None => ap::HTTP_BAD_REQUEST as c_int,
        };
    };
    let id = pass::id_for(key, &sub.nonce, sub.solution);
    let value = pass::issue(key, client, &id, secs + i64::from(ch.pass_secs));
    // SAFETY: r is live; the scheme string is static or pool memory.
    let secure = unsafe { text(ap::ap_run_http_scheme(r)) }.as_deref() == Some("https");
    // SAFETY: r is live.
    unsafe {
        set_err_header(
            r,
            c"Set-Cookie",
            &pass::set_cookie(&value, ch.pass_secs, secure),
        );
        set_err_header(r, c"Location", &sub.return_to);
        set_err_header(r, c"Cache-Control", "no-store");
    }
    log::request(
        r,
        Level::Info,
        &format!(
            "challenge passed by IP: {}",
            block::client_label(client, server.ipv6_prefix)
        ),
    );
    if let Some(s) = counters() {
        s.passed();
    }
    ap::HTTP_SEE_OTHER as c_int
}
