//! The request hooks: post_read_request (refuse blocked clients early), fixups (count, with the
//! per-directory config known), map_to_storage (count a TRACE or `OPTIONS *`,
//! which httpd answers there),
//! insert_filter (count a response mod_cache's quick handler serves, and refuse it before a
//! byte leaves), insert_error_filter (count and score httpd's own error responses before they
//! leave), log_transaction (the deadline penalty, and whatever was not counted yet, also of a
//! request httpd rejected while reading it).
//!
//! Each hook turns its call into a [`crate::stage::Event`]; [`Stage::on`] says what it owes,
//! so every request counts exactly once wherever httpd ends it.
//!
//! post_read_request works out the client once (from the binary address mod_remoteip left) and
//! keeps it, with its hashed block key, in a
//! small per-request state in the request pool; the later hooks read it from there. Each hook
//! turns its raw pointer into a [`Req`] first; everything after that is safe code.
use std::cell::Cell;
use std::ffi::c_int;

use apache_sys as ap;

use super::challenge::Attack;
use super::farm;
use super::lifecycle::{now, store};
use super::log::Level;
use super::req::Req;
use crate::client;
use crate::config::{DirConfig, Enabled, ServerSettings};
use crate::keys;
use crate::log::Log;
use crate::monitor::WouldBlock;
use crate::notify;
use crate::policy::{self, Outcome, Penalties, Refusal, Request, Tally};
use crate::stage::{Duty, Event, Stage};
use crate::store::{ClientKey, Store};

const DECLINED: c_int = ap::DECLINED as c_int;

/// What post_read_request learned about a request, for the later hooks: the value of the
/// request's typed slot ([`Req::state`]). The hooks share it (`&`); what changes is in cells.
pub(super) struct RequestState<'r> {
    /// Normalised and grouped, with its block key hashed once.
    key: ClientKey,
    /// What is counted of it so far.
    stage: Cell<Stage>,
    /// Answered with the under-attack challenge in translate_name: its handler is the page's,
    /// whatever a later phase sets (fixups puts it back).
    challenged: Cell<bool>,
    /// The request pool's lifetime (the state lives there).
    _pool: std::marker::PhantomData<&'r ()>,
}

impl<'r> RequestState<'r> {
    /// This request as the policy sees it, on page `path` of `server`'s site.
    fn request<'a>(&'a self, server: &'a ServerSettings, path: &'a str) -> Request<'a> {
        Request {
            client: self.key.client(),
            host: &server.site_name,
            path,
            key: Some(&self.key),
        }
    }

    fn new(key: ClientKey) -> RequestState<'r> {
        RequestState {
            key,
            stage: Cell::new(Stage::Screened),
            challenged: Cell::new(false),
            _pool: std::marker::PhantomData,
        }
    }

    /// What `event` would owe, the stage unmoved.
    #[inline(always)]
    fn peek(&self, event: Event) -> Duty {
        self.stage.get().on(event).0
    }

    /// What `event` owes; the stage moves on.
    fn owes(&self, event: Event) -> Duty {
        let (duty, next) = self.stage.get().on(event);
        self.stage.set(next);
        duty
    }
}

/// What counting and scoring need: the store, the server's settings, the merged directory
/// config, and the state post_read_request left.
struct Counting<'r> {
    state: &'r RequestState<'r>,
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
    // SAFETY: httpd's live request for this call.
    unsafe {
        super::req::hook("post_read_request", r, DECLINED, |req| {
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
            let state = slot.write(RequestState::new(policy::client_key(store, server, client)));
            // Blocked clients are refused here (or, with DOSChallenge, challenged or let through
            // with a pass: then counted under the pass).
            match super::challenge::screen(req, store, server, &state.key, now) {
                super::challenge::Screen::Serve => {}
                super::challenge::Screen::ServeAs(holder) => state.key = *holder,
                super::challenge::Screen::Done(status) => return refused_early(req, state, status),
            }
            req.set_state(state);
            DECLINED
        })
    }
}

/// A request post_read_request answered itself (refused, challenged): its state says so, so
/// that log_transaction does not take it for one httpd rejected while reading it.
fn refused_early<'r>(req: &Req<'r>, state: &'r RequestState<'r>, status: c_int) -> c_int {
    state.stage.set(Stage::Refused);
    req.set_state(state);
    status
}

/// The page of a request (canonical path, or path and query with `DOSCanonical off`),
/// borrowed from the request when nothing needs changing.
#[inline]
fn page_of<'r>(req: &Req<'r>, dir: &DirConfig) -> std::borrow::Cow<'r, str> {
    use std::borrow::Cow;
    let uri = file_uri(req);
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

/// `r->uri` without the PATH_INFO httpd found after the file it maps to: `/xmlrpc.php/1` and
/// `/xmlrpc.php/2` are the one page `/xmlrpc.php` (a rule set for the file counts the file).
#[inline]
fn file_uri<'r>(req: &Req<'r>) -> std::borrow::Cow<'r, str> {
    use std::borrow::Cow;
    let uri = req.uri();
    let Some(info) = req.file_path_info().filter(|i| !i.is_empty()) else {
        return uri;
    };
    match uri {
        Cow::Borrowed(u) if u.len() > info.len() && u.ends_with(&*info) => {
            Cow::Borrowed(&u[..u.len() - info.len()])
        }
        Cow::Owned(u) if u.len() > info.len() && u.ends_with(&*info) => {
            Cow::Owned(u[..u.len() - info.len()].to_owned())
        }
        u => u,
    }
}

pub unsafe extern "C" fn fixups(r: *mut ap::request_rec) -> c_int {
    // SAFETY: httpd's live request for this call.
    unsafe { super::req::hook("fixups", r, DECLINED, |req| count_now(req, false)) }
}

/// Under attack, a browser navigation without a pass is answered with the challenge here, in
/// translate_name (first of all), before httpd maps it to a file: counted with the settings
/// merged so far (the server's, the virtual host's, `<Location>`), its handler set to the
/// page's, and map_to_storage then skips httpd's directory walk. So the challenge costs the
/// server no walk, no file lookup and none of the asked page's own work.
///
/// Where `DOSUnderAttack` or `DOSEnabled` is set in a `<Directory>`-like section (known at
/// configuration time) the walk decides, and fixups challenges as before.
pub unsafe extern "C" fn translate_name(r: *mut ap::request_rec) -> c_int {
    // No DOSUnderAttack anywhere and none forced (the common case): nothing to do, no call.
    if !super::challenge::attack_possible() || !crate::attack::early_answer() {
        return DECLINED;
    }
    // SAFETY: httpd's live request for this call.
    unsafe { super::req::hook("translate_name", r, DECLINED, challenge_early) }
}

/// A navigation challenged in translate_name needs no content type of the file it named
/// (mod_mime's lookup is most of this phase): the page's handler sets its own.
pub unsafe extern "C" fn type_checker(r: *mut ap::request_rec) -> c_int {
    // SAFETY: httpd's live request for this call; a plain field.
    if unsafe { (*r).handler } == super::challenge::PAGE_HANDLER.as_ptr() {
        return ap::OK as c_int;
    }
    DECLINED
}

/// [`translate_name`]'s work: a navigation under attack without a pass is counted and
/// answered; everything else goes on (and is counted in fixups).
fn challenge_early(req: &Req) -> c_int {
    let Some(event) = Event::of(Event::Count, req.is_initial()) else {
        return DECLINED;
    };
    let Some(c) = req
        .state()
        .filter(|s| s.peek(event).count)
        .and_then(|s| counting(req, s))
    else {
        return DECLINED;
    };
    let now = now();
    if under_attack(req, &c, now) != Attack::Navigation {
        return DECLINED;
    }
    let answer = count_as(req, &c, event, Attack::Navigation, false, now);
    if answer == DECLINED {
        c.state.challenged.set(true);
    }
    answer
}

/// What counting `state`'s request needs, unless the module is off in its context.
#[inline(always)]
fn counting<'r>(req: &Req<'r>, state: &'r RequestState<'r>) -> Option<Counting<'r>> {
    let c = Counting {
        state,
        store: store()?,
        server: req.server()?,
        dir: req.dir()?,
    };
    (c.dir.enabled() != Enabled::Off).then_some(c)
}

/// A TRACE or an `OPTIONS *`: httpd answers them in map_to_storage (before fixups), so they
/// are counted here, where they can still be refused like a GET.
pub unsafe extern "C" fn map_to_storage(r: *mut ap::request_rec) -> c_int {
    // SAFETY: httpd's live request for this call; plain fields.
    let (handler, method) = unsafe { ((*r).handler, (*r).method_number) };
    // Answered with the challenge in translate_name: no directory walk, no file.
    if handler == super::challenge::PAGE_HANDLER.as_ptr() {
        return ap::OK as c_int;
    }
    // Every other method goes on at once (the common case: two field reads, no panic possible).
    if method != ap::M_TRACE as c_int && method != ap::M_OPTIONS as c_int {
        return DECLINED;
    }
    // SAFETY: httpd's live request for this call.
    unsafe {
        super::req::hook("map_to_storage", r, DECLINED, |req| {
            if !req.is_answered_in_map_to_storage() {
                return DECLINED;
            }
            count_now(req, false)
        })
    }
}

/// The filters of a response are being chosen. For a normal request fixups counted it already
/// (nothing to do); for an answer from mod_cache's quick handler (which runs this hook itself,
/// before any byte) this is the first the module sees of it: count it now, with the server's
/// settings (httpd has walked no `<Location>`/`<Directory>` for it), and when refused replace
/// the cached answer with the refusal.
pub unsafe extern "C" fn insert_filter(r: *mut ap::request_rec) {
    // SAFETY: httpd's live request for this call.
    unsafe {
        super::req::hook("insert_filter", r, (), |req| {
            let status = count_now(req, true);
            if status != DECLINED {
                super::quick::refuse_cached(req, status);
            }
        })
    }
}

/// An [`Event::Count`]: count the request if nothing did yet, and refuse it when it crosses a
/// count — the refusal's status, else DECLINED. `cached`: an answer of mod_cache's quick
/// handler (no handler of ours can run; a challenge goes out as an error response).
#[inline(always)]
fn count_now(req: &Req, cached: bool) -> c_int {
    // Only initial requests count: not subrequests, not internal redirects.
    let Some(event) = Event::of(Event::Count, req.is_initial()) else {
        return DECLINED;
    };
    let Some(state) = req.state() else {
        return DECLINED;
    };
    // Counted already (insert_filter after fixups: the common case) or never to be: nothing
    // else to look up.
    if !state.peek(event).count {
        if state.challenged.get() && !cached {
            // Challenged in translate_name: a later translate hook (mod_proxy's, mod_rewrite's)
            // may have named another handler.
            req.set_handler(super::challenge::PAGE_HANDLER);
        }
        return DECLINED;
    }
    let Some(c) = counting(req, state) else {
        return DECLINED;
    };
    let now = now();
    let attack = under_attack(req, &c, now);
    count_as(req, &c, event, attack, cached, now)
}

/// Counts a request whose `DOSUnderAttack` kind is `attack` (the `event` still owes its
/// count), and refuses or challenges it: the hook's answer, or DECLINED.
#[inline(always)]
fn count_as(
    req: &Req,
    c: &Counting,
    event: Event,
    attack: Attack,
    cached: bool,
    now: i64,
) -> c_int {
    let (state, store, server, dir) = (c.state, c.store, c.server, c.dir);
    if !state.owes(event).count {
        return DECLINED;
    }
    let path = page_of(req, dir);
    let request = state.request(server, &path);
    // Counted when decided (see post_read_request).
    counted(req, store, server, now);
    let tally = match attack {
        Attack::Other => Tally::weighted(crate::attack::WEIGHT),
        _ => Tally::REQUEST,
    };
    let outcome = policy::tally(store, server, dir, &request, tally, now, farm::shared());
    let answer = act(req, server, &request, outcome, now, true);
    if answer != DECLINED {
        state.owes(Event::Refused);
        return answer;
    }
    if attack == Attack::Navigation {
        // Answered with the challenge (by its handler, or as an error response): nothing
        // more owed.
        state.owes(Event::Refused);
        return super::challenge::attack_page(req, store, server, state.key.client(), now, cached)
            .unwrap_or(DECLINED);
    }
    answer
}

/// What `DOSUnderAttack` makes of this request: [`Attack::Spared`] (the common case: the
/// mode does not apply here and now, one load of the switch) unless the mode applies.
#[inline(always)]
fn under_attack(req: &Req, c: &Counting, now: i64) -> Attack {
    let Some(m) = crate::metrics::global() else {
        return Attack::Spared;
    };
    let (store, server, dir) = (c.store, c.server, c.dir);
    let word = m.attack_word();
    let mode = dir.under_attack();
    // Switch off, nothing forced, and not `DOSUnderAttack on` here: the common case.
    if word == 0 && mode != Some(crate::attack::Mode::On) {
        return Attack::Spared;
    }
    let (on, forced) = m.attack_state();
    // Monitor mode refuses nobody: it challenges nobody either.
    if !crate::attack::applies(mode, forced, on) || dir.enabled() == Enabled::Monitor {
        return Attack::Spared;
    }
    super::challenge::attack_kind(req, store, server, &c.state.key, now)
}

/// An error response httpd is about to send (401 from authentication, 403 from `Require`,
/// 404 from a handler, 400/405/413 …): count the request and score its status now, before a
/// byte of it leaves, so the client's very next request already sees a block it starts.
/// (log_transaction runs only after the response is written, when the client may already
/// have sent its next request on another connection.)
pub unsafe extern "C" fn insert_error_filter(r: *mut ap::request_rec) {
    // SAFETY: httpd's live request for this call.
    unsafe {
        super::req::hook("insert_error_filter", r, (), |req| {
            // The original request only: an ErrorDocument's internal redirect is scored, with
            // the final status, in log_transaction.
            let Some(event) = Event::of(Event::ErrorResponse, req.is_initial()) else {
                return;
            };
            let Some(c) = context(req) else {
                return;
            };
            if c.dir.enabled() == Enabled::Off {
                return;
            }
            let duty = c.state.owes(event);
            if duty.is_nothing() {
                return;
            }
            let status = req.status();
            let p = Penalties {
                deadline: None,
                ..policy::penalties(c.server, c.dir, status, 0)
            };
            score(req, &c, duty, &p, status, 0, now());
        })
    }
}

pub unsafe extern "C" fn log_transaction(r: *mut ap::request_rec) -> c_int {
    // SAFETY: httpd's live request for this call.
    unsafe {
        super::req::hook("log_transaction", r, DECLINED, |req| {
            let Some(event) = Event::of(Event::Logged, req.is_initial()) else {
                return DECLINED;
            };
            let Some(c) = context(req).or_else(|| rejected_while_read(req)) else {
                return DECLINED;
            };
            let now = now();
            let duty = c.state.owes(event);
            let status = req.final_status();
            let duration = (now - req.request_time()).max(0) as u64;
            let mut p = policy::penalties(c.server, c.dir, status, duration);
            if !duty.status {
                (p.site_status, p.page_status) = (None, None);
            }
            if !duty.deadline {
                p.deadline = None;
            }
            // A request httpd ended before fixups without an error response of its own counts
            // here, once. (The common request: counted, no penalty, nothing to do.)
            if c.dir.enabled() != Enabled::Off && (duty.count || !p.is_empty()) {
                score(req, &c, duty, &p, status, duration, now);
            }
            DECLINED
        })
    }
}

/// A request httpd rejected while reading it (bad request line or header, 414, missing or
/// invalid Host, 417): post_read_request never ran, so no state exists. Its client is the
/// connection's peer (mod_remoteip runs in post_read_request too, so it never saw it). A
/// connection that sent nothing before it timed out (408) is no request.
#[cold]
#[inline(never)]
fn rejected_while_read<'r>(req: &Req<'r>) -> Option<Counting<'r>> {
    let (store, server, dir) = (store()?, req.server()?, req.dir()?);
    if req.status() == ap::HTTP_REQUEST_TIME_OUT as u16 {
        return None;
    }
    let ip = req.client_addr()?;
    if server.whitelist.contains(ip) {
        return None;
    }
    let client = client::group(ip, server.ipv6_prefix);
    let state = req.alloc(RequestState::new(policy::client_key(store, server, client)))?;
    Some(Counting {
        state,
        store,
        server,
        dir,
    })
}

/// Counts the request in the metrics; the one request of all workers whose turn it is runs
/// the store-pressure check (see `crate::pressure`), once per check period.
#[inline(always)]
fn counted(req: &Req, store: &Store, server: &ServerSettings, now: i64) {
    if crate::metrics::counted(now, req.conn_id()) {
        periodic(req, store, server, now);
    }
}

/// This second's periodic work (one request of all workers): the under-attack switch, and
/// the store-pressure check when its period is up.
#[cold]
#[inline(never)]
pub(super) fn periodic(req: &Req, store: &Store, server: &ServerSettings, now: i64) {
    attack_step(req, store, server, now);
    if crate::metrics::global().is_some_and(|m| m.pressure_due(now)) {
        pressure_check(req, store, server, now);
    }
}

/// The second's step of the `DOSUnderAttack auto` switch (one request of all workers): the
/// counted total, the scoreboard when the threshold names busy workers, and the override
/// `shieldctl under-attack` left in the store; each change logged once.
#[cold]
#[inline(never)]
fn attack_step(req: &Req, store: &Store, server: &ServerSettings, now: i64) {
    let Some(m) = crate::metrics::global() else {
        return;
    };
    let log = super::log::ServerLog(req.server_rec());
    let threshold = &crate::attack::effective_threshold(&server.under_attack);
    let busy = threshold
        .busy_percent
        .and_then(|_| super::scoreboard::busy_percent());
    let sample = crate::attack::Sample {
        at: now,
        counted: m.totals().counted,
    };
    let before = m.attack_switch();
    let (_, was_forced) = m.attack_state();
    let forced = store.under_attack_override();
    let (next, transition) = crate::attack::step(before, sample, busy, threshold);
    m.set_attack_switch(&next, forced);
    if let Some(t) = transition {
        let level = match t {
            crate::attack::Transition::On { .. } => Level::Warning,
            crate::attack::Transition::Off { .. } => Level::Notice,
        };
        log.log(level, &crate::attack::line(&t, threshold));
    }
    if forced != was_forced {
        log.log(
            Level::Notice,
            &format!(
                "under attack: shieldctl under-attack {} (the switch itself is {})",
                forced.as_str(),
                if next.on { "on" } else { "off" }
            ),
        );
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
fn score(req: &Req, c: &Counting, duty: Duty, p: &Penalties, status: u16, duration: u64, now: i64) {
    let (store, server, dir, state) = (c.store, c.server, c.dir, c.state);
    let tally = if duty.count {
        counted(req, store, server, now);
        Tally::late(p)
    } else {
        Tally::penalties(p)
    };
    if tally.is_empty() {
        return;
    }
    let path = page_of(req, dir);
    let request = state.request(server, &path);
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
    let outcome = policy::tally(store, server, dir, &request, tally, now, farm::shared());
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
        Outcome::WouldBlock {
            rule,
            client,
            prefix,
            score,
            count,
        } => {
            crate::metrics::would_block();
            if let Some(ring) = super::lifecycle::would_blocks() {
                ring.record(&WouldBlock {
                    at: now,
                    client,
                    prefix,
                    rule,
                    score,
                    count,
                });
            }
            let who = crate::prefix::label(client, prefix, server.ipv6_prefix);
            req.log(
                Level::Notice,
                &notify::would_block_line(&who, request, rule, score, count),
            );
            DECLINED
        }
        Outcome::Refuse(refusal) => {
            if let Some(started) = &refusal.started {
                crate::metrics::block_started(refusal.rule, now);
                notify::block_started(req, server, request, started, std::process::id());
                farm::announce_block(server, request, started);
            }
            if respond {
                refuse(req, &refusal, now)
            } else {
                DECLINED
            }
        }
    }
}
