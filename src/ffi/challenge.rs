//! `DOSChallenge` in post_read_request: the one place where a blocked client may be let
//! through (with a valid pass), shown the proof-of-work page (a browser navigation), or
//! answered a submitted solution. The decisions are `crate::challenge` (plain Rust); this only
//! reads the request and writes the response.
//!
//! With `DOSChallenge off` [`screen`] does exactly what post_read_request always did: refuse
//! a blocked client, pass the others.
use std::ffi::{c_int, CStr, CString};
use std::net::IpAddr;

use apache_sys as ap;

use super::hooks::refuse;
use super::lifecycle::{now, store};
use super::log::Level;
use super::req::{BodyPart, Req};
use crate::challenge::{self, ledger, nonce, page, pass, pow, Key, Submission};
use crate::client;
use crate::config::ServerSettings;
use crate::log::Log;
use crate::notify;
use crate::policy::{self, Refusal};
use crate::store::{ClientKey, Store};

/// What post_read_request does next.
pub enum Screen {
    /// Go on counting the request under the client's own key.
    Serve,
    /// Go on counting it under this key instead: the pass holder's own address, when a pass
    /// let it through a block (boxed: the rare answer, so the common ones stay small).
    ServeAs(Box<ClientKey>),
    /// The response is decided: return this from the hook.
    Done(c_int),
}

/// The handler name a submission of an unblocked client is given in post_read_request.
pub const HANDLER: &CStr = c"shield-challenge";

/// The handler of a submission by a client that was not blocked in post_read_request (and
/// passed counting in fixups).
pub fn handler(req: &Req) -> c_int {
    let (Some(store), Some(server)) = (store(), req.server()) else {
        return ap::DECLINED as c_int;
    };
    let Some(ip) = req
        .client_addr()
        .filter(|_| server.challenge.enabled || attack_possible())
    else {
        return ap::DECLINED as c_int;
    };
    let client = client::group(ip, server.ipv6_prefix);
    let key = server.challenge.key.unwrap_or(Key(store.challenge_key()));
    let now = now();
    let ckey = policy::client_key(store, server, client);
    let refusal = policy::blocked_key(store, server, &ckey, now);
    submit(req, store, server, &ckey, &key, refusal, now)
}

/// Whether `DOSUnderAttack` may challenge anyone in this server: configured somewhere, or
/// forced on by `shieldctl under-attack on`.
#[inline(always)]
pub(super) fn attack_possible() -> bool {
    crate::attack::configured()
        || crate::metrics::global()
            .is_some_and(|m| m.attack_state().1 == crate::attack::Override::On)
}

fn counters() -> Option<&'static challenge::Stats> {
    challenge::stats()
}

/// Decide a request of `client` (normalised, grouped, not whitelisted). Without
/// `DOSChallenge` (the request path's common case, kept inline): refused or served.
#[inline(always)]
pub fn screen(
    req: &Req,
    store: &Store,
    server: &ServerSettings,
    ckey: &ClientKey,
    now: i64,
) -> Screen {
    let refusal = policy::blocked_key(store, server, ckey, now);
    if !server.challenge.enabled {
        return match refusal {
            Some(refusal) => Screen::Done(refuse(req, &refusal, now)),
            None => {
                // DOSUnderAttack challenges with or without DOSChallenge.
                if attack_possible() && req.uri() == challenge::SUBMIT_PATH {
                    req.set_handler(HANDLER);
                }
                Screen::Serve
            }
        };
    }
    screen_challenged(req, store, server, ckey, refusal, now)
}

/// Whether the request's cookies carry a valid pass of `client` for the epoch stamp `stamp`
/// (see `Epoch::stamp`); such a request is counted as let through by a pass.
fn holds_pass(req: &Req, key: &Key, client: IpAddr, stamp: u32, secs: i64) -> bool {
    let cookies = req.header_in(c"Cookie");
    let valid = cookies.is_some_and(|h| pass::from_cookies(key, client, &h, stamp, secs).is_some());
    if valid {
        if let Some(s) = counters() {
            s.pass_request();
        }
    }
    valid
}

/// [`screen`] with `DOSChallenge` on: the submit path, a pass in the cookies, the page.
#[inline(never)]
fn screen_challenged(
    req: &Req,
    store: &Store,
    server: &ServerSettings,
    ckey: &ClientKey,
    refusal: Option<Refusal>,
    now: i64,
) -> Screen {
    let client = ckey.client();
    let ch = &server.challenge;
    let key = ch.key.unwrap_or(Key(store.challenge_key()));
    let secs = now.div_euclid(1_000_000);
    if req.uri() == challenge::SUBMIT_PATH {
        if refusal.is_some() {
            return Screen::Done(submit(req, store, server, ckey, &key, refusal, now));
        }
        // Not blocked (say, the block ended while the browser worked): counted like any
        // other request in fixups, then answered by [`handler`].
        req.set_handler(HANDLER);
        return Screen::Serve;
    }
    let Some(refusal) = refusal else {
        return Screen::Serve;
    };
    // A pass opens only the blocks of the client and its networks it was earned under, at
    // the generations they had.
    let epoch = store.epoch(ckey, now);
    if holds_pass(req, &key, client, epoch.stamp(), secs) {
        // Every pass of this client counts under one address and in the client's networks;
        // crossing a count moves the client's (or the network's) block on a generation.
        let holder = challenge::pass_client(&key, client);
        return Screen::ServeAs(Box::new(store.holder_key(holder, ckey, epoch)));
    }
    // A client at its cap of passes gets the plain refusal: no work could earn it anything.
    if challenge::is_navigation(&req.method(), req.header_in(c"Accept").as_deref())
        && ledger::passes_earned(store, ch, client, now) < ch.pass_limit
    {
        let target = req.unparsed_uri();
        let return_to = challenge::safe_return(&target);
        return Screen::Done(challenge_page(
            req, store, server, ckey, &refusal, return_to, now,
        ));
    }
    Screen::Done(refuse(req, &refusal, now))
}

/// The proof-of-work page, with the refusal's status and headers; solved, it leads back to
/// `return_to` (a safe local URL).
fn challenge_page(
    req: &Req,
    store: &Store,
    server: &ServerSettings,
    ckey: &ClientKey,
    refusal: &Refusal,
    return_to: &str,
    now: i64,
) -> c_int {
    let generation = store.epoch(ckey, now).generation();
    let html = page_pieces(
        store,
        server,
        ckey.client(),
        generation,
        return_to,
        refusal.retry_after(now),
        now,
    )
    .concat();
    let status = refuse(req, refusal, now);
    send_page(req, status, html)
}

/// The page for `client` at block generation `generation`: a fresh nonce at the difficulty
/// the client owes now.
fn page_pieces(
    store: &Store,
    server: &ServerSettings,
    client: IpAddr,
    generation: u32,
    return_to: &str,
    retry_after: u64,
    now: i64,
) -> page::Pieces {
    let key = server.challenge.key.unwrap_or(Key(store.challenge_key()));
    let earned = ledger::passes_earned(store, &server.challenge, client, now);
    let bits = server.challenge.bits_for(generation, earned);
    let secs = now.div_euclid(1_000_000);
    let nonce = nonce::issue(&key, client, secs, bits);
    page::pieces(&page::Challenge {
        nonce: &nonce,
        issued: secs,
        bits,
        return_to,
        retry_after,
    })
}

/// What `DOSUnderAttack` makes of a counted request of a client that is not blocked, while
/// the mode applies to its context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// Served as without the mode: a pass holder, or the submission of a solution.
    Spared,
    /// A browser navigation without a pass: the challenge page.
    Navigation,
    /// Anything else without a pass: counted [`crate::attack::WEIGHT`] times.
    Other,
}

/// Sorts a request under attack (one MAC per pass cookie it carries).
#[inline(never)]
pub fn attack_kind(
    req: &Req,
    store: &Store,
    server: &ServerSettings,
    ckey: &ClientKey,
    now: i64,
) -> Attack {
    if ckey.is_pass_holder() || req.uri() == challenge::SUBMIT_PATH {
        return Attack::Spared;
    }
    let key = server.challenge.key.unwrap_or(Key(store.challenge_key()));
    let secs = now.div_euclid(1_000_000);
    let client = ckey.client();
    // Not blocked: a pass of generation 1 (any pass it holds was earned outside a block, or
    // in a block of generation 1; a pass of a later block opened that block only).
    if holds_pass(req, &key, client, 1, secs) {
        return Attack::Spared;
    }
    if challenge::is_navigation(&req.method(), req.header_in(c"Accept").as_deref()) {
        Attack::Navigation
    } else {
        Attack::Other
    }
}

/// The handler that answers a browser navigation under attack with the challenge page.
pub const PAGE_HANDLER: &CStr = c"shield-challenge-page";

/// A browser navigation without a pass while under attack (in fixups): the challenge page,
/// served by [`page_handler`] (`None`: the handler is set), or for a client at its cap of
/// passes the bare 503 (`Some`: no work could earn it anything).
pub fn attack_page(
    req: &Req,
    store: &Store,
    server: &ServerSettings,
    client: IpAddr,
    now: i64,
    cached: bool,
) -> Option<c_int> {
    req.set_env(c"SHIELD", c"challenge");
    let status = ap::HTTP_TOO_MANY_REQUESTS as c_int;
    if ledger::passes_earned(store, &server.challenge, client, now) >= server.challenge.pass_limit {
        req.set_err_header(c"Cache-Control", "no-store");
        return Some(status);
    }
    if cached {
        // mod_cache's quick handler is answering: the page replaces the cached body as the
        // error response's text.
        req.set_err_header(c"Cache-Control", "no-store");
        let target = req.unparsed_uri();
        let return_to = challenge::safe_return(&target);
        return Some(send_page(
            req,
            status,
            page_pieces(store, server, client, 1, return_to, 0, now).concat(),
        ));
    }
    req.set_handler(PAGE_HANDLER);
    None
}

/// The challenge page as the response of a handler (status 429, never cached): the normal
/// response path, cheaper than httpd's error response, and one that keeps the connection
/// (httpd closes it after a 503), so that answering a flood of navigations costs less than
/// serving them a file, and a browser sends its solution on the same connection.
pub fn page_handler(req: &Req) -> c_int {
    let (Some(store), Some(server), Some(ip)) = (store(), req.server(), req.client_addr()) else {
        return ap::DECLINED as c_int;
    };
    let client = client::group(ip, server.ipv6_prefix);
    let now = now();
    let target = req.unparsed_uri();
    let return_to = challenge::safe_return(&target);
    // Not blocked: generation 1, and no Retry-After.
    let page = page_pieces(store, server, client, 1, return_to, 0, now);
    req.set_status(ap::HTTP_TOO_MANY_REQUESTS as u16);
    req.set_err_header_static(c"Cache-Control", c"no-store");
    page_headers(req);
    req.set_content_type(c"text/html; charset=utf-8");
    if !req.header_only() {
        req.send_body(&[
            BodyPart::Static(page.head.as_bytes()),
            BodyPart::Copied(page.middle.as_bytes()),
            BodyPart::Static(page.tail.as_bytes()),
        ]);
    }
    if let Some(s) = counters() {
        s.issued();
    }
    ap::OK as c_int
}

/// The headers every challenge page carries: its Content-Security-Policy (the page runs only
/// its own script) and no MIME sniffing.
fn page_headers(req: &Req) {
    req.set_err_header_static(c"Content-Security-Policy", content_security_policy());
    req.set_err_header_static(c"X-Content-Type-Options", c"nosniff");
}

/// The page's Content-Security-Policy as a C string, made once.
fn content_security_policy() -> &'static CStr {
    static CSP: std::sync::OnceLock<CString> = std::sync::OnceLock::new();
    // The policy is ASCII without NULs (tested in `challenge`); an empty one would only mean
    // no policy.
    CSP.get_or_init(|| CString::new(page::content_security_policy()).unwrap_or_default())
}

/// Sends `html` as the body of the error response `status` (the hook returns it).
fn send_page(req: &Req, status: c_int, html: String) -> c_int {
    // The page is ASCII without NULs; an error here would only mean the plain refusal.
    // ap_custom_response marks the text as a message (not a URL) with a leading quote itself.
    let Ok(html) = CString::new(html) else {
        return status;
    };
    page_headers(req);
    // The page declares UTF-8 itself; without this httpd adds charset=iso-8859-1.
    req.set_env(c"suppress-error-charset", c"1");
    // SAFETY: the live request of this hook; ap_custom_response copies the text into the
    // request pool, and ap_die (which httpd runs with the status this hook returns) sends it
    // as the body of the error response, keeping err_headers_out.
    unsafe { ap::ap_custom_response(req.raw(), status, html.as_ptr()) };
    if let Some(s) = counters() {
        s.issued();
    }
    status
}

/// A submitted solution: one MAC and one SHA-256, checked cheapest first (the cap, the shape,
/// the difficulty the client owes now, the nonce, the work), then its nonce spent and the
/// pass counted. Valid: a pass (of the current epoch of the client's and its networks'
/// blocks) and a 303 back to
/// the page that was refused. Anything else: a fresh challenge for a browser navigation under
/// the cap, else the plain refusal (400 when the client is not blocked).
fn submit(
    req: &Req,
    store: &Store,
    server: &ServerSettings,
    ckey: &ClientKey,
    key: &Key,
    refusal: Option<Refusal>,
    now: i64,
) -> c_int {
    let ch = &server.challenge;
    let client = ckey.client();
    let secs = now.div_euclid(1_000_000);
    let args = req.args().unwrap_or_default();
    let epoch = store.epoch(ckey, now);
    let earned = ledger::passes_earned(store, ch, client, now);
    let required = ch.bits_for(epoch.generation(), earned);
    let submission = Submission::parse(&args);
    let valid = submission
        .clone()
        .filter(|s| {
            earned < ch.pass_limit
                && s.bits >= required
                && nonce::check(key, client, &s.nonce, s.issued, s.bits, secs).is_ok()
                && pow::check(&s.nonce, s.solution, s.bits)
        })
        // One pass per nonce; within the cap (counted under the record's lock, so two
        // workers cannot both take the last one).
        .filter(|s| {
            let farm = super::farm::shared();
            let Some(spent) = ledger::spend(store, farm, ch, client, &s.nonce, now) else {
                return false;
            };
            // In a farm the work owed follows the passes of all servers.
            if let Some(n) = spent.farm_passes.filter(|&n| n > earned) {
                ledger::learn(store, ch, client, n, now);
                if n >= ch.pass_limit || s.bits < ch.bits_for(epoch.generation(), n) {
                    return false;
                }
            }
            ledger::earn(store, farm, ch, client, now)
        });
    let Some(sub) = valid else {
        if let Some(s) = counters() {
            s.failed();
        }
        let navigation =
            challenge::is_navigation(&req.method(), req.header_in(c"Accept").as_deref());
        // (What the ledger knows now: a farm's count of passes may have raised it.)
        let earned = ledger::passes_earned(store, ch, client, now);
        return match refusal {
            // A browser whose solution earns nothing (most often: another pass of its client
            // made the work dearer meanwhile, or it submitted twice) gets a fresh challenge,
            // not a dead end.
            // It leads back where the solution would have (not to the submission).
            Some(refusal) if navigation && earned < ch.pass_limit => {
                let return_to = submission.as_ref().map_or("/", |s| s.return_to.as_str());
                challenge_page(req, store, server, ckey, &refusal, return_to, now)
            }
            Some(refusal) => refuse(req, &refusal, now),
            None => ap::HTTP_BAD_REQUEST as c_int,
        };
    };
    let value = pass::issue(key, client, epoch.stamp(), secs + i64::from(ch.pass_secs));
    // SAFETY: the live request; the scheme string is static or pool memory.
    let scheme = unsafe { ap::ap_run_http_scheme(req.raw()) };
    // SAFETY: NULL or a NUL-terminated string that outlives this call.
    let secure = !scheme.is_null() && unsafe { CStr::from_ptr(scheme) } == c"https";
    req.set_err_header(
        c"Set-Cookie",
        &pass::set_cookie(&value, ch.pass_secs, secure),
    );
    req.set_err_header(c"Location", &sub.return_to);
    req.set_err_header(c"Cache-Control", "no-store");
    req.log(
        Level::Info,
        &format!(
            "challenge passed by IP: {}",
            notify::client_label(client, server.ipv6_prefix)
        ),
    );
    if let Some(s) = counters() {
        s.passed();
    }
    ap::HTTP_SEE_OTHER as c_int
}
