//! The request hooks: post_read_request (refuse blocked clients early), fixups (count, with the
//! per-directory config known), log_transaction (penalties from the final status and duration).
//!
//! post_read_request works out the client once (from the binary address mod_remoteip left) and
//! keeps it, with the shared record when there is a shared tier, in a small per-request state
//! in the request pool; the later hooks read it from there.
use std::borrow::Cow;
use std::ffi::{c_char, c_int, CStr};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use apache_sys as ap;

use super::guard::guard;
use super::lifecycle::{now, store};
use super::log::{self, Level};
use super::module::module_ptr;
use super::server::{DirHolder, ServerHolder};
use super::socache;
use crate::block;
use crate::client;
use crate::config::{DirConfig, Enabled, ServerSettings};
use crate::keys;
use crate::monitor::WouldBlock;
use crate::policy::{self, Outcome, Refusal, Request};
use crate::remote::RemoteRecord;
use crate::store::Store;

const DECLINED: c_int = ap::DECLINED as c_int;

/// What post_read_request learned about a request, for fixups and log_transaction.
struct RequestState {
    /// Normalised and grouped.
    client: IpAddr,
    /// fixups counted it (log_transaction scores only those).
    counted: bool,
    /// The client's shared record, read once, when there is a shared tier.
    shared: Option<RemoteRecord>,
}

// The state lives in pool memory that is freed without running destructors.
const _: () = assert!(!std::mem::needs_drop::<RequestState>());

/// Borrow a C string field of httpd's structures.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string that outlives the returned borrow (pool memory of the
/// request being handled).
unsafe fn text<'a>(p: *const c_char) -> Option<Cow<'a, str>> {
    // SAFETY: per the contract.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy())
}

/// The client address as mod_remoteip (or the connection) left it, from the binary form.
unsafe fn useragent_addr(r: *const ap::request_rec) -> Option<IpAddr> {
    // SAFETY: r is live; useragent_addr is NULL or an APR sockaddr whose ipaddr_ptr points at
    // ipaddr_len bytes of address inside it (checked to be 4 or 16 before reading).
    unsafe {
        let sa = (*r).useragent_addr;
        if sa.is_null() || (*sa).ipaddr_ptr.is_null() {
            return None;
        }
        let bytes = (*sa).ipaddr_ptr as *const u8;
        match (*sa).ipaddr_len {
            4 => Some(IpAddr::V4(Ipv4Addr::from(*(bytes as *const [u8; 4])))),
            16 => Some(IpAddr::V6(Ipv6Addr::from(*(bytes as *const [u8; 16])))),
            _ => None,
        }
    }
}

/// The client of a request, normalised and grouped; None when whitelisted or unknown (such a
/// request is never counted).
unsafe fn client_of(r: *const ap::request_rec, server: &ServerSettings) -> Option<IpAddr> {
    // SAFETY: r is live; the text form is the fallback when no binary address is set.
    let ip = match unsafe { useragent_addr(r) } {
        Some(ip) => client::normalise(ip),
        None => client::parse_client(&unsafe { text((*r).useragent_ip) }?)?,
    };
    if server.whitelist.contains(ip) {
        return None;
    }
    Some(client::group(ip, server.ipv6_prefix))
}

/// The per-request state post_read_request left, if it counted this request's client.
unsafe fn state_of<'a>(r: *const ap::request_rec) -> Option<&'a mut RequestState> {
    // SAFETY: the slot is NULL or the RequestState post_read_request wrote into the request
    // pool; hooks of one request run on one thread, one after the other.
    unsafe {
        (ap::ap_get_module_config((*r).request_config, module_ptr()) as *mut RequestState).as_mut()
    }
}

/// Turn a refusal into the response: headers on err_headers_out, keep-alive off, the status.
pub(super) unsafe fn refuse(r: *mut ap::request_rec, refusal: &Refusal, now: i64) -> c_int {
    // SAFETY: r is the live request of this hook; names are 'static, values are copied into
    // its pool (apr tables keep the pointers).
    unsafe {
        for (name, value) in refusal.headers(now) {
            let value = ap::apr_pstrmemdup((*r).pool, value.as_ptr().cast(), value.len() as _);
            ap::apr_table_setn((*r).err_headers_out, name.as_ptr(), value);
        }
        (*(*r).connection).keepalive = ap::ap_conn_keepalive_e_AP_CONN_CLOSE;
        ap::apr_table_setn((*r).subprocess_env, c"SHIELD".as_ptr(), c"blocked".as_ptr());
    }
    c_int::from(refusal.status)
}

pub unsafe extern "C" fn post_read_request(r: *mut ap::request_rec) -> c_int {
    guard("post_read_request", DECLINED, || unsafe {
        // Internal redirects (e.g. the ErrorDocument of our own 429) run this hook again.
        if !(*r).prev.is_null() || !(*r).main.is_null() {
            return DECLINED;
        }
        let (Some(store), Some(server)) = (store(), ServerHolder::settings((*r).server)) else {
            return DECLINED;
        };
        let Some(client) = client_of(r, server) else {
            return DECLINED;
        };
        let now = now();
        let client = match super::challenge::screen(r, store, server, client, now) {
            super::challenge::Screen::Serve(client) => client,
            super::challenge::Screen::Done(status) => return status,
        };
        // The shared tier: the one network read of this request.
        let mut shared = None;
        if let Some(backend) = socache::backend() {
            shared = fetch_shared(r, backend, client, now);
            if let Some(refusal) = shared
                .as_ref()
                .and_then(|rec| policy::blocked_remotely(server, rec, now))
            {
                return refuse(r, &refusal, now);
            }
        }
        let slot = ap::apr_palloc((*r).pool, std::mem::size_of::<RequestState>() as _)
            as *mut RequestState;
        if slot.is_null() {
            return DECLINED;
        }
        // SAFETY: fresh pool memory of the right size; APR aligns allocations for any type.
        slot.write(RequestState {
            client,
            counted: false,
            shared,
        });
        ap::ap_set_module_config((*r).request_config, module_ptr(), slot.cast());
        DECLINED
    })
}

/// Read the client's shared record, minding the backend's health (fail open).
unsafe fn fetch_shared(
    r: *mut ap::request_rec,
    backend: &socache::Backend,
    client: IpAddr,
    now: i64,
) -> Option<RemoteRecord> {
    if !backend.health.may_try(now) {
        return None;
    }
    // SAFETY: r is the live request; its server and pool outlive the call.
    match unsafe { backend.retrieve((*r).server, client, (*r).pool) } {
        Ok(Some(record)) => {
            backend.log_transition(unsafe { (*r).server }, backend.health.succeeded(now), "");
            Some(record)
        }
        // "Not found" is no proof the backend is up: memcache's and redis's clients answer it
        // too for a server they have marked dead. Only data or a successful store count.
        Ok(None) => Some(RemoteRecord::default()),
        Err(e) => {
            backend.log_transition(unsafe { (*r).server }, backend.health.failed(now), &e);
            None
        }
    }
}

/// Write the shared record back after the response (log_transaction).
unsafe fn write_shared(r: *mut ap::request_rec, state: &RequestState, now: i64) {
    let (Some(backend), Some(record)) = (socache::backend(), state.shared.as_ref()) else {
        return;
    };
    // A record exists only when this request was allowed to use the backend (while it is
    // down: this request is the probe), so the write-back needs no second permission.
    if !record.dirty {
        return;
    }
    // SAFETY: r is the live request; its server and pool outlive the call.
    match unsafe { backend.store((*r).server, state.client, record, now, (*r).pool) } {
        Ok(true) => {
            backend.log_transition(unsafe { (*r).server }, backend.health.succeeded(now), "")
        }
        Ok(false) => {}
        Err(e) => backend.log_transition(unsafe { (*r).server }, backend.health.failed(now), &e),
    }
}

/// What counting and scoring need: the store, the server's settings, the merged directory
/// config (None before post_config has run, or when the store could not be mapped).
unsafe fn context<'a>(
    r: *const ap::request_rec,
) -> Option<(&'a Store, &'a ServerSettings, &'a DirConfig)> {
    // SAFETY: r is the live request of the calling hook, past per-directory merging.
    unsafe {
        Some((
            store()?,
            ServerHolder::settings((*r).server)?,
            DirHolder::of_request(r)?,
        ))
    }
}

/// The host and page of a request, borrowed from the request when nothing needs changing.
unsafe fn host_and_page<'a>(
    r: *const ap::request_rec,
    dir: &DirConfig,
) -> (Cow<'a, str>, Cow<'a, str>) {
    // SAFETY: r is live; its string fields are request-pool memory.
    unsafe {
        let host = match text((*r).hostname) {
            Some(Cow::Borrowed(h)) => keys::canonical_host(Some(h)),
            Some(Cow::Owned(h)) => Cow::Owned(keys::canonical_host(Some(&h)).into_owned()),
            None => keys::canonical_host(None),
        };
        let uri = text((*r).uri).unwrap_or(Cow::Borrowed(""));
        let args = text((*r).args);
        let page = match (uri, args) {
            (Cow::Borrowed(u), Some(Cow::Borrowed(a))) => {
                keys::page_path(u, Some(a), dir.canonical())
            }
            (Cow::Borrowed(u), None) => keys::page_path(u, None, dir.canonical()),
            (u, a) => Cow::Owned(keys::page_path(&u, a.as_deref(), dir.canonical()).into_owned()),
        };
        (host, page)
    }
}

pub unsafe extern "C" fn fixups(r: *mut ap::request_rec) -> c_int {
    guard("fixups", DECLINED, || unsafe {
        // Only initial requests count: not subrequests, not internal redirects.
        if !(*r).main.is_null() || !(*r).prev.is_null() {
            return DECLINED;
        }
        let (Some(state), Some((store, server, dir))) = (state_of(r), context(r)) else {
            return DECLINED;
        };
        if dir.enabled() == Enabled::Off {
            return DECLINED;
        }
        let (host, path) = host_and_page(r, dir);
        let req = Request {
            client: state.client,
            host: &host,
            path: &path,
        };
        state.counted = true;
        let now = now();
        let outcome = policy::count(store, server, dir, &req, now, state.shared.as_mut());
        act(r, server, &req, outcome, now, true)
    })
}

pub unsafe extern "C" fn log_transaction(r: *mut ap::request_rec) -> c_int {
    guard("log_transaction", DECLINED, || unsafe {
        let (Some(state), Some((store, server, dir))) = (state_of(r), context(r)) else {
            return DECLINED;
        };
        if !state.counted {
            return DECLINED;
        }
        // The final status is the last request of an internal-redirect chain (ErrorDocument).
        let mut last = r;
        while !(*last).next.is_null() {
            last = (*last).next;
        }
        let status = u16::try_from((*last).status).unwrap_or(0);
        let now = now();
        let duration = (now - (*r).request_time).max(0) as u64;
        let p = policy::penalties(server, dir, status, duration);
        if !p.is_empty() {
            let (host, path) = host_and_page(r, dir);
            let req = Request {
                client: state.client,
                host: &host,
                path: &path,
            };
            if let Some(score) = p.site_status.or(p.page_status) {
                log::request(
                    r,
                    Level::Info,
                    &format!("Request status {status} flagged with score {score}"),
                );
            }
            if let Some((limit, score)) = p.deadline {
                let proto = text((*r).protocol).unwrap_or(Cow::Borrowed("-"));
                log::request(
                    r,
                    Level::Notice,
                    &format!(
                        "Request round-trip {} ms exceeds limit {} ms. Scoring {score} {path} (proto: {proto})",
                        duration / 1000,
                        limit / 1000,
                    ),
                );
            }
            let outcome = policy::score(store, server, dir, &req, &p, now, state.shared.as_mut());
            // The response is gone: a block started here refuses the client's next request.
            act(r, server, &req, outcome, now, false);
        }
        write_shared(r, state, now);
        DECLINED
    })
}

/// Carry out an outcome: start actions of a new block, monitor lines, the refusal itself.
unsafe fn act(
    r: *mut ap::request_rec,
    server: &ServerSettings,
    req: &Request,
    outcome: Outcome,
    now: i64,
    respond: bool,
) -> c_int {
    match outcome {
        Outcome::Pass => DECLINED,
        Outcome::WouldBlock { rule, score, count } => {
            if let Some(ring) = super::lifecycle::would_blocks() {
                ring.record(&WouldBlock {
                    at: now,
                    client: req.client,
                    rule,
                    score,
                    count,
                });
            }
            log::request(
                r,
                Level::Notice,
                &format!(
                    "would block IP: {} ({} score {score} > {count}, monitor mode) {}",
                    req.client,
                    rule.as_str(),
                    block::one_field(req.path)
                ),
            );
            DECLINED
        }
        Outcome::Refuse(refusal) => {
            if let Some(started) = &refusal.started {
                start_actions(r, server, req, started);
            }
            // SAFETY: r is the live request of the calling hook.
            if respond {
                unsafe { refuse(r, &refusal, now) }
            } else {
                DECLINED
            }
        }
    }
}

/// Once per block: the log line, the block file, the command and the mail.
fn start_actions(
    r: *const ap::request_rec,
    server: &ServerSettings,
    req: &Request,
    started: &policy::Started,
) {
    let ip = started.block.client;
    let label = block::client_label(ip, server.ipv6_prefix);
    log::request(
        r,
        Level::Info,
        &block::log_line(&label, started.block.until),
    );
    let contents = block::file_contents(std::process::id(), started, req.host, req.path);
    if let Err(e) = block::write_file(Path::new(&server.log_dir), ip, &contents) {
        log::request(
            r,
            Level::Warning,
            &format!(
                "cannot write block file {}: {e}",
                block::file_path(Path::new(&server.log_dir), ip).display()
            ),
        );
    }
    if let Some(cmd) = &server.system_command {
        if let Err(e) = block::run_command(cmd, &label) {
            log::request(
                r,
                Level::Warning,
                &format!("DOSSystemCommand failed to start: {e}"),
            );
        }
    }
    if let Some(to) = &server.email_notify {
        if let Err(e) = block::send_mail(to, ip) {
            log::request(
                r,
                Level::Warning,
                &format!("DOSEmailNotify: cannot run sendmail: {e}"),
            );
        }
    }
}
