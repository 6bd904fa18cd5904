//! The request hooks: post_read_request (refuse blocked clients early), fixups (count, with the
//! per-directory config known), insert_error_filter (count and score httpd's own error
//! responses before they leave), log_transaction (the deadline penalty, and whatever was not
//! counted yet).
//!
//! post_read_request works out the client once (from the binary address mod_remoteip left) and
//! keeps it, with its hashed block key and the shared record when there is a shared tier, in a
//! small per-request state in the request pool; the later hooks read it from there. Each hook
//! turns its raw pointer into a [`Req`] first; everything after that is safe code.
use std::ffi::c_int;

use apache_sys as ap;

use super::guard::guard;
use super::lifecycle::{now, store};
use super::log::Level;
use super::req::Req;
use super::socache;
use crate::actions;
use crate::client;
use crate::config::{DirConfig, Enabled, ServerSettings};
use crate::keys;
use crate::log::Log;
use crate::monitor::WouldBlock;
use crate::policy::{self, Outcome, Penalties, Refusal, Request, Tally};
use crate::remote::RemoteRecord;
use crate::store::{ClientKey, Store};

const DECLINED: c_int = ap::DECLINED as c_int;

/// What post_read_request learned about a request, for the later hooks.
struct RequestState<'r> {
    /// Normalised and grouped, with its block key hashed once.
    key: ClientKey,
    /// fixups (or the error response) counted it; when false at log_transaction, it is
    /// counted there.
    counted: bool,
    /// Its status penalties are applied (by the error response, before it was sent).
    status_scored: bool,
    /// fixups refused it (a block another worker started): nothing more to count.
    refused: bool,
    /// The client's shared record, read once, when there is a shared tier (in the request
    /// pool beside the state, so the state itself stays a few words).
    shared: Option<&'r mut RemoteRecord>,
}

/// What counting and scoring need: the store, the server's settings, the merged directory
/// config, and the state post_read_request left.
struct Counting<'r> {
    state: &'r mut RequestState<'r>,
    store: &'static Store,
    server: &'r ServerSettings,
    dir: &'r DirConfig,
}

/// `None`: not a counted client (whitelisted, unknown, or no store).
fn context<'r>(req: &Req<'r>) -> Option<Counting<'r>> {
    Some(Counting {
        state: req.state()?,
        store: store()?,
        server: req.server()?,
        dir: req.dir()?,
    })
}

/// Turn a refusal into the response: headers on err_headers_out, keep-alive off, the status.
pub(super) fn refuse(req: &Req, refusal: &Refusal, now: i64) -> c_int {
    for (name, value) in refusal.headers(now) {
        req.set_err_header(name, &value);
    }
    req.close_connection();
    req.set_env(c"SHIELD", c"blocked");
    crate::metrics::refused(refusal.rule, now);
    c_int::from(refusal.status)
}

pub unsafe extern "C" fn post_read_request(r: *mut ap::request_rec) -> c_int {
    guard("post_read_request", DECLINED, || {
        // SAFETY: httpd's live request for this call.
        let Some(req) = (unsafe { Req::from_raw(r) }) else {
            return DECLINED;
        };
        // Internal redirects (e.g. the ErrorDocument of our own 429) run this hook again.
        if !req.is_initial() {
            return DECLINED;
        }
        let (Some(store), Some(server)) = (store(), req.server()) else {
            return DECLINED;
        };
        // Whitelisted or unknown clients are never counted.
        let Some(ip) = req.client_addr() else {
            return DECLINED;
        };
        if server.whitelist.contains(ip) {
            return DECLINED;
        }
        let client = client::group(ip, server.ipv6_prefix);
        // The time of the decision, not r->request_time: a request whose headers trickle in
        // must not be judged at its request line's arrival (an old time would land in a
        // long-gone window, or restart the current one).
        let now = now();
        // The request's state, with the client's key hashed straight into it in the request
        // pool. (It is kept for the later hooks only if the request goes on.)
        let Some(slot) = req.alloc_uninit() else {
            return DECLINED;
        };
        let state = slot.write(RequestState {
            key: store.client_key(client),
            counted: false,
            status_scored: false,
            refused: false,
            shared: None,
        });
        // Blocked clients are refused here (or, with DOSChallenge, challenged or let through
        // with a pass: then counted under the pass).
        match super::challenge::screen(&req, store, server, &state.key, now) {
            super::challenge::Screen::Serve => {}
            super::challenge::Screen::ServeAs(holder) => state.key = holder,
            super::challenge::Screen::Done(status) => return status,
        }
        // The shared tier: the one network read of this request.
        if let Some(backend) = socache::backend() {
            let shared = fetch_shared(&req, backend, state.key.client(), now);
            if let Some(refusal) = shared
                .as_ref()
                .and_then(|rec| policy::blocked_remotely(server, rec, now))
            {
                return refuse(&req, &refusal, now);
            }
            state.shared = shared.and_then(|record| req.alloc(record));
        }
        req.set_state(state);
        DECLINED
    })
}

/// Read the client's shared record, minding the backend's health (fail open).
fn fetch_shared(
    req: &Req,
    backend: &socache::Backend,
    client: std::net::IpAddr,
    now: i64,
) -> Option<RemoteRecord> {
    if !backend.health.may_try(now) {
        return None;
    }
    let s = req.server_rec();
    // SAFETY: the request's live server_rec and pool outlive the call.
    match unsafe { backend.retrieve(s, client, req.pool()) } {
        Ok(Some(record)) => {
            backend.log_transition(s, backend.health.succeeded(now), "");
            Some(record)
        }
        // "Not found" is no proof the backend is up: memcache's and redis's clients answer it
        // too for a server they have marked dead. Only data or a successful store count.
        Ok(None) => Some(RemoteRecord::default()),
        Err(e) => {
            backend.log_transition(s, backend.health.failed(now), &e);
            None
        }
    }
}

/// Write the shared record back after the response (log_transaction).
#[inline(always)]
fn write_shared(req: &Req, state: &RequestState<'_>, now: i64) {
    let (Some(backend), Some(record)) = (socache::backend(), state.shared.as_deref()) else {
        return;
    };
    // A record exists only when this request was allowed to use the backend (while it is
    // down: this request is the probe), so the write-back needs no second permission.
    if !record.dirty {
        return;
    }
    let s = req.server_rec();
    // SAFETY: the request's live server_rec and pool outlive the call.
    match unsafe { backend.store(s, state.key.client(), record, now, req.pool()) } {
        Ok(true) => backend.log_transition(s, backend.health.succeeded(now), ""),
        Ok(false) => {}
        Err(e) => backend.log_transition(s, backend.health.failed(now), &e),
    }
}

/// The page of a request (canonical path, or path and query with `DOSCanonical off`),
/// borrowed from the request when nothing needs changing.
#[inline]
fn page_of<'r>(req: &Req<'r>, dir: &DirConfig) -> std::borrow::Cow<'r, str> {
    use std::borrow::Cow;
    let uri = req.uri();
    // With DOSCanonical on (the default) the query string is not part of the page.
    if dir.canonical() {
        return uri;
    }
    match (uri, req.args()) {
        (Cow::Borrowed(u), Some(Cow::Borrowed(a))) => keys::page_path(u, Some(a), false),
        (Cow::Borrowed(u), None) => Cow::Borrowed(u),
        (u, a) => Cow::Owned(keys::page_path(&u, a.as_deref(), false).into_owned()),
    }
}

pub unsafe extern "C" fn fixups(r: *mut ap::request_rec) -> c_int {
    guard("fixups", DECLINED, || {
        // SAFETY: httpd's live request for this call.
        let Some(req) = (unsafe { Req::from_raw(r) }) else {
            return DECLINED;
        };
        // Only initial requests count: not subrequests, not internal redirects.
        if !req.is_initial() {
            return DECLINED;
        }
        let Some(Counting {
            state,
            store,
            server,
            dir,
        }) = context(&req)
        else {
            return DECLINED;
        };
        if dir.enabled() == Enabled::Off {
            return DECLINED;
        }
        let path = page_of(&req, dir);
        let request = Request {
            client: state.key.client(),
            host: &server.site_name,
            path: &path,
            key: Some(&state.key),
        };
        state.counted = true;
        // Counted when decided (see post_read_request).
        let now = now();
        counted(&req, store, server, now);
        let outcome = policy::count(
            store,
            server,
            dir,
            &request,
            now,
            state.shared.as_deref_mut(),
        );
        let answer = act(&req, server, &request, outcome, now, true);
        state.refused = answer != DECLINED;
        answer
    })
}

/// An error response httpd is about to send (401 from authentication, 403 from `Require`,
/// 404 from a handler, 400/405/413 …): count the request and score its status now, before a
/// byte of it leaves, so the client's very next request already sees a block it starts.
/// (log_transaction runs only after the response is written, when the client may already
/// have sent its next request on another connection.)
pub unsafe extern "C" fn insert_error_filter(r: *mut ap::request_rec) {
    guard("insert_error_filter", (), || {
        // SAFETY: httpd's live request for this call.
        let Some(req) = (unsafe { Req::from_raw(r) }) else {
            return;
        };
        // The original request only: an ErrorDocument's internal redirect is scored, with
        // the final status, in log_transaction.
        if !req.is_initial() {
            return;
        }
        let Some(mut c) = context(&req) else {
            return;
        };
        if c.state.refused || c.state.status_scored || c.dir.enabled() == Enabled::Off {
            return;
        }
        let status = req.status();
        let p = Penalties {
            deadline: None,
            ..policy::penalties(c.server, c.dir, status, 0)
        };
        c.state.status_scored = true;
        score(&req, &mut c, &p, status, 0, now());
    })
}

pub unsafe extern "C" fn log_transaction(r: *mut ap::request_rec) -> c_int {
    guard("log_transaction", DECLINED, || {
        // SAFETY: httpd's live request for this call.
        let Some(req) = (unsafe { Req::from_raw(r) }) else {
            return DECLINED;
        };
        let Some(mut c) = context(&req) else {
            return DECLINED;
        };
        let now = now();
        if c.state.refused {
            // A block this request started lives in its shared record too.
            write_shared(&req, c.state, now);
            return DECLINED;
        }
        let status = req.final_status();
        let duration = (now - req.request_time()).max(0) as u64;
        let mut p = policy::penalties(c.server, c.dir, status, duration);
        if c.state.status_scored {
            (p.site_status, p.page_status) = (None, None);
        }
        // A request httpd ended before fixups without an error response of its own counts
        // here, once. (The common request: counted, no penalty, nothing to do.)
        if c.dir.enabled() != Enabled::Off && !(c.state.counted && p.is_empty()) {
            score(&req, &mut c, &p, status, duration, now);
        }
        write_shared(&req, c.state, now);
        DECLINED
    })
}

/// Counts the request in the metrics; the one request of all workers whose turn it is runs
/// the store-pressure check (see `crate::pressure`), once per check period.
#[inline(always)]
fn counted(req: &Req, store: &Store, server: &ServerSettings, now: i64) {
    if crate::metrics::counted(now, req.conn_id()) {
        pressure_check(req, store, server, now);
    }
}

#[cold]
#[inline(never)]
fn pressure_check(req: &Req, store: &Store, server: &ServerSettings, now: i64) {
    if let Some(m) = crate::metrics::global() {
        let log = super::log::ServerLog(req.server_rec());
        crate::pressure::check(m, store, &server.cache, now, &log);
    }
}

/// Adds a finished (or finishing) request's penalties, and the request itself when fixups
/// never counted it (so it counts exactly once), with the penalty log lines; a block it
/// starts refuses the client's next request.
fn score(req: &Req, c: &mut Counting, p: &Penalties, status: u16, duration: u64, now: i64) {
    let (store, server, dir, state) = (c.store, c.server, c.dir, &mut *c.state);
    let tally = if state.counted {
        Tally::penalties(p)
    } else {
        counted(req, store, server, now);
        Tally::late(p)
    };
    state.counted = true;
    if tally.is_empty() {
        return;
    }
    let path = page_of(req, dir);
    let request = Request {
        client: state.key.client(),
        host: &server.site_name,
        path: &path,
        key: Some(&state.key),
    };
    if let Some(score) = p.site_status.or(p.page_status) {
        req.log(
            Level::Info,
            &format!("Request status {status} flagged with score {score}"),
        );
    }
    if let Some((limit, score)) = p.deadline {
        req.log(
            Level::Notice,
            &format!(
                "Request round-trip {} ms exceeds limit {} ms. Scoring {score} {path} (proto: {})",
                duration / 1000,
                limit / 1000,
                req.protocol(),
            ),
        );
    }
    let outcome = policy::tally(
        store,
        server,
        dir,
        &request,
        tally,
        now,
        state.shared.as_deref_mut(),
    );
    // The response is under way: a block started here refuses the client's next request.
    act(req, server, &request, outcome, now, false);
}

/// Carry out an outcome: start actions of a new block, monitor lines, the refusal itself.
#[inline(always)]
fn act(
    req: &Req,
    server: &ServerSettings,
    request: &Request,
    outcome: Outcome,
    now: i64,
    respond: bool,
) -> c_int {
    match outcome {
        Outcome::Pass => DECLINED,
        Outcome::WouldBlock { rule, score, count } => {
            crate::metrics::would_block();
            if let Some(ring) = super::lifecycle::would_blocks() {
                ring.record(&WouldBlock {
                    at: now,
                    client: request.client,
                    rule,
                    score,
                    count,
                });
            }
            req.log(
                Level::Notice,
                &actions::would_block_line(request, rule, score, count),
            );
            DECLINED
        }
        Outcome::Refuse(refusal) => {
            if let Some(started) = &refusal.started {
                crate::metrics::block_started(refusal.rule, now);
                actions::block_started(req, server, request, started, std::process::id());
            }
            if respond {
                refuse(req, &refusal, now)
            } else {
                DECLINED
            }
        }
    }
}
