//! The request hooks: post_read_request (refuse blocked clients early), fixups (count, with the
//! per-directory config known), log_transaction (penalties from the final status and duration).
use std::borrow::Cow;
use std::ffi::{c_char, c_int, CStr, CString};
use std::net::IpAddr;
use std::path::Path;

use apache_sys as ap;

use super::guard::guard;
use super::lifecycle::{now, store};
use super::log::{self, Level};
use super::module::module_ptr;
use super::server::{in_pool, DirHolder, ServerHolder};
use super::socache;
use crate::block;
use crate::client;
use crate::config::{DirConfig, ServerSettings};
use crate::keys;
use crate::policy::{self, Outcome, Refusal, Request};
use crate::remote::RemoteRecord;
use crate::store::{Rule, Store};

const DECLINED: c_int = ap::DECLINED as c_int;

/// Borrow a C string field of httpd's structures.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string that outlives the returned borrow (pool memory of the
/// request being handled).
unsafe fn text<'a>(p: *const c_char) -> Option<Cow<'a, str>> {
    // SAFETY: per the contract.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy())
}

/// The client of a request, normalised; None when whitelisted or unparsable (never counted).
unsafe fn client_of(r: *const ap::request_rec, server: &ServerSettings) -> Option<IpAddr> {
    // SAFETY: r is live; useragent_ip is set by httpd (and mod_remoteip) before our hooks run.
    let ip = client::parse_client(&unsafe { text((*r).useragent_ip) }?)?;
    if server.whitelist.contains(ip) {
        return None;
    }
    Some(client::group(ip, server.ipv6_prefix))
}

/// Store a string in the request pool (apr tables keep the pointer).
unsafe fn pool_str(r: *const ap::request_rec, s: &str) -> *const c_char {
    let c = CString::new(s.replace('\0', "")).unwrap_or_default();
    // SAFETY: r->pool lives as long as the response being built.
    unsafe { ap::apr_pstrdup((*r).pool, c.as_ptr()) }
}

/// Turn a refusal into the response: headers on err_headers_out, keep-alive off, the status.
unsafe fn refuse(r: *mut ap::request_rec, refusal: &Refusal, now: i64) -> c_int {
    // SAFETY: r is the live request of this hook; strings are copied into its pool.
    unsafe {
        for (name, value) in refusal.headers(now) {
            let name = pool_str(r, name);
            ap::apr_table_setn((*r).err_headers_out, name, pool_str(r, &value));
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
        if let Some(refusal) = policy::blocked(store, server, client, now) {
            return refuse(r, &refusal, now);
        }
        // The shared tier: the one network read of this request.
        if let Some(backend) = socache::backend() {
            if let Some(record) = fetch_shared(r, backend, client, now) {
                if let Some(refusal) = policy::blocked_remotely(server, &record, now) {
                    return refuse(r, &refusal, now);
                }
                ap::ap_set_module_config(
                    (*r).request_config,
                    module_ptr(),
                    in_pool((*r).pool, record),
                );
            }
        }
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

/// The shared record read for this request, if any.
unsafe fn shared_record<'a>(r: *const ap::request_rec) -> Option<&'a mut RemoteRecord> {
    // SAFETY: the slot is null or the RemoteRecord that post_read_request put in the request pool.
    unsafe {
        (ap::ap_get_module_config((*r).request_config, module_ptr()) as *mut RemoteRecord).as_mut()
    }
}

/// Write the shared record back after the response (log_transaction).
unsafe fn write_shared(r: *mut ap::request_rec, client: IpAddr, now: i64) {
    let (Some(backend), Some(record)) = (socache::backend(), unsafe { shared_record(r) }) else {
        return;
    };
    // A record exists only when this request was allowed to use the backend (while it is
    // down: this request is the probe), so the write-back needs no second permission.
    if !record.dirty {
        return;
    }
    // SAFETY: r is the live request; its server and pool outlive the call.
    match unsafe { backend.store((*r).server, client, record, now, (*r).pool) } {
        Ok(true) => {
            backend.log_transition(unsafe { (*r).server }, backend.health.succeeded(now), "")
        }
        Ok(false) => {}
        Err(e) => backend.log_transition(unsafe { (*r).server }, backend.health.failed(now), &e),
    }
}

/// The request's facts as the policy sees them.
struct Facts<'a> {
    client: IpAddr,
    host: Cow<'a, str>,
    path: Cow<'a, str>,
}

unsafe fn facts<'a>(
    r: *const ap::request_rec,
    server: &ServerSettings,
    dir: &DirConfig,
) -> Option<Facts<'a>> {
    // SAFETY: r is live; its string fields are request-pool memory.
    unsafe {
        let client = client_of(r, server)?;
        let host = keys::canonical_host(text((*r).hostname).as_deref()).into_owned();
        let uri = text((*r).uri).unwrap_or(Cow::Borrowed(""));
        let args = text((*r).args);
        let path = keys::page_path(&uri, args.as_deref(), dir.canonical()).into_owned();
        Some(Facts {
            client,
            host: Cow::Owned(host),
            path: Cow::Owned(path),
        })
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

/// Marks a request that fixups counted; log_transaction scores only those.
const COUNTED_NOTE: &CStr = c"shield-counted";

pub unsafe extern "C" fn fixups(r: *mut ap::request_rec) -> c_int {
    guard("fixups", DECLINED, || unsafe {
        // Only initial requests count: not subrequests, not internal redirects.
        if !(*r).main.is_null() || !(*r).prev.is_null() {
            return DECLINED;
        }
        let Some((store, server, dir)) = context(r) else {
            return DECLINED;
        };
        if dir.enabled() == crate::config::Enabled::Off {
            return DECLINED;
        }
        let Some(f) = facts(r, server, dir) else {
            return DECLINED;
        };
        let req = Request {
            client: f.client,
            host: &f.host,
            path: &f.path,
        };
        ap::apr_table_setn((*r).notes, COUNTED_NOTE.as_ptr(), c"1".as_ptr());
        let now = now();
        let outcome = policy::count(store, server, dir, &req, now, shared_record(r));
        act(r, server, &req, outcome, now, true)
    })
}

pub unsafe extern "C" fn log_transaction(r: *mut ap::request_rec) -> c_int {
    guard("log_transaction", DECLINED, || unsafe {
        if ap::apr_table_get((*r).notes, COUNTED_NOTE.as_ptr()).is_null() {
            return DECLINED;
        }
        let Some((store, server, dir)) = context(r) else {
            return DECLINED;
        };
        // The final status is the last request of an internal-redirect chain (ErrorDocument).
        let mut last = r;
        while !(*last).next.is_null() {
            last = (*last).next;
        }
        let status = u16::try_from((*last).status).unwrap_or(0);
        let now = now();
        let duration = (now - (*r).request_time).max(0) as u64;
        let p = policy::penalties(server, dir, status, duration);
        let Some(f) = facts(r, server, dir) else {
            return DECLINED;
        };
        if p.is_empty() {
            // Nothing to add: only owe the shared tier this request's count.
            write_shared(r, f.client, now);
            return DECLINED;
        }
        let req = Request {
            client: f.client,
            host: &f.host,
            path: &f.path,
        };
        if let Some(score) = p.site_status.or(p.page_status) {
            log::request(
                r,
                Level::Info,
                &format!("Request status {status} flagged with score {score}"),
            );
        }
        if let Some((limit, score)) = p.deadline {
            if log::request_enabled(r, Level::Notice) {
                let proto = text((*r).protocol).unwrap_or(Cow::Borrowed("-"));
                log::request(
                    r,
                    Level::Notice,
                    &format!(
                        "Request round-trip {} ms exceeds limit {} ms. Scoring {score} {} (proto: {proto})",
                        duration / 1000,
                        limit / 1000,
                        f.path
                    ),
                );
            }
        }
        let outcome = policy::score(store, server, dir, &req, &p, now, shared_record(r));
        // The response is gone: a block started here refuses the client's next request.
        act(r, server, &req, outcome, now, false);
        write_shared(r, f.client, now);
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
            log::request(
                r,
                Level::Notice,
                &format!(
                    "would block IP: {} ({} score {score} > {count}, monitor mode) {}",
                    req.client,
                    rule_name(rule),
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

fn rule_name(rule: Rule) -> &'static str {
    match rule {
        Rule::Site => "site",
        Rule::Page => "page",
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
