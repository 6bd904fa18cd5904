//! Configuration passes and the shared store's life across them.
//!
//! httpd runs post_config twice at start (a preflight pass that is thrown away, then the real
//! one in the daemon) and once per graceful/full restart, in the same parent process, while
//! the DSO may be unloaded and reloaded in between. The store's mapping is
//! created by the parent in the first real pass, before the workers fork, and its address is
//! kept in `ap_retained_data`, which lives as long as the parent: every later pass re-attaches
//! to it (checking the layout version in its header), so counters, blocks and generations
//! survive `graceful` and `restart`. A changed DOSCache size creates a new region and carries
//! the blocks over. With `DOSCache shmcb:/path(BYTES)` the region is that file, mapped shared
//! (`store::file` checks or replaces it), so a new parent after a full stop finds the tables
//! again; if no file can be used, the store falls back to anonymous memory.
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use apache_sys as ap;

use super::guard::{guard, quiet_panic_hook};
use super::log::{self, Level};
use super::retained::{retained, Slot};
use super::server::ServerHolder;
use crate::config::{CacheSpec, DEFAULT_CACHE_BYTES};
use crate::monitor::WouldBlocks;
use crate::remote::Health;
use crate::store::{file, Store};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// The store of this process. Set by the parent in post_config (single-threaded, before fork),
/// read-only in the workers, which inherit the mapping.
static STORE: AtomicPtr<Store> = AtomicPtr::new(std::ptr::null_mut());

/// What survives in the parent across passes: the store's mapping, and which file it maps
/// (device and inode; `is_file` 0 for anonymous memory). (`#[repr(C)]`: the layout earlier
/// images wrote under the same key.)
#[repr(C)]
struct KeptStore {
    region: Slot,
    is_file: u64,
    dev: u64,
    ino: u64,
}

const RETAINED_KEY: &std::ffi::CStr = c"mod_shield.store.v2";

/// Device and inode of the file at `path`, if any.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

pub fn store() -> Option<&'static Store> {
    // SAFETY: the pointer is either null or a leaked Box<Store> that is only replaced by the
    // parent during post_config, when no request is being served in this process.
    unsafe { STORE.load(Ordering::Acquire).as_ref() }
}

/// Microseconds since the epoch: what `apr_time_now` returns (it is gettimeofday's seconds
/// and microseconds, APR's unix/time.c), without APR's call in between.
#[inline]
pub fn now() -> i64 {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: a valid out pointer and no time zone.
    if unsafe { libc::gettimeofday(&mut tv, std::ptr::null_mut()) } != 0 {
        // SAFETY: plain function call.
        return unsafe { ap::apr_time_now() };
    }
    tv.tv_sec * 1_000_000 + tv.tv_usec
}

pub unsafe extern "C" fn pre_config(
    _pconf: *mut ap::apr_pool_t,
    _plog: *mut ap::apr_pool_t,
    _ptemp: *mut ap::apr_pool_t,
) -> c_int {
    quiet_panic_hook();
    guard("pre_config", ap::OK as c_int, || {
        crate::attack::reset_configured();
        ap::OK as c_int
    })
}

/// Monitor mode's recent would-be blocks: a small shared ring for the life of the parent, made
/// before the workers fork (a display aid, not configuration), or why it could not be made.
fn would_blocks_mapping() -> Result<&'static WouldBlocks, &'static std::io::Error> {
    static RING: OnceLock<std::io::Result<WouldBlocks>> = OnceLock::new();
    RING.get_or_init(WouldBlocks::new).as_ref()
}

/// The would-be block ring, if it is mapped.
pub fn would_blocks() -> Option<&'static WouldBlocks> {
    would_blocks_mapping().ok()
}

/// The shared tier's health: one small shared mapping for the life of the parent, made before
/// the workers fork (not configuration: it only says whether the backend answers).
fn health() -> Result<&'static Health, String> {
    static HEALTH: OnceLock<std::io::Result<Health>> = OnceLock::new();
    HEALTH
        .get_or_init(Health::new)
        .as_ref()
        .map_err(|e| format!("cannot map the shared tier's health word: {e}"))
}

/// Maps, in the parent before the workers fork, the small shared mappings that are not
/// configuration: the would-be block ring, the request counters and the challenge counters.
/// The server runs without any of them; one that cannot be made is logged, once per DSO image
/// (the ring and challenge counters are not tried again), saying what goes without it.
///
/// # Safety
/// Parent process, post_config (single-threaded).
unsafe fn map_displays(s: *mut ap::server_rec) {
    static REPORTED: AtomicBool = AtomicBool::new(false);
    // SAFETY: per the contract.
    if let Err(e) = unsafe { super::metrics::init() } {
        // Tried again at the next pass: logged at each.
        log::server(
            s,
            Level::Warning,
            &format!("{e}; the status page and ?metrics show no request counts"),
        );
    }
    let failed = [
        would_blocks_mapping().err().map(|e| {
            format!("cannot map monitor mode's would-be block list ({e}); the status page will not list would-be blocks")
        }),
        crate::challenge::stats::stats_mapping().err().map(|e| {
            format!("cannot map the challenge counters ({e}); the status page will show none")
        }),
    ];
    if REPORTED.swap(true, Ordering::Relaxed) {
        return;
    }
    for line in failed.iter().flatten() {
        log::server(s, Level::Warning, line);
    }
}

pub unsafe extern "C" fn post_config(
    pconf: *mut ap::apr_pool_t,
    _plog: *mut ap::apr_pool_t,
    _ptemp: *mut ap::apr_pool_t,
    s: *mut ap::server_rec,
) -> c_int {
    guard(
        "post_config",
        ap::HTTP_INTERNAL_SERVER_ERROR as c_int,
        || unsafe {
            // Resolve the settings of every server (main and virtual hosts). httpd hands a
            // virtual host without DOS* directives the main server's object itself; such a
            // host gets its own copy here, since its site name is its own.
            let mut seen = std::collections::HashSet::new();
            let mut cur = s;
            while !cur.is_null() {
                if !seen.insert(ServerHolder::of(cur) as *const ServerHolder) {
                    ServerHolder::own_copy(cur, pconf);
                }
                let holder = ServerHolder::of(cur);
                let mut settings = holder.config.resolve();
                settings.site_name = site_name(cur);
                holder.settings = Some(settings);
                cur = (*cur).next;
            }
            // The preflight pass is thrown away: map nothing there.
            if ap::ap_state_query(ap::AP_SQ_MAIN_STATE as c_int)
                == ap::AP_SQ_MS_CREATE_PRE_CONFIG as c_int
            {
                return ap::OK as c_int;
            }
            let Some(settings) = ServerHolder::settings(s) else {
                return ap::OK as c_int;
            };
            let (bytes, path) = match &settings.cache {
                CacheSpec::Shmcb { bytes } => (*bytes, None),
                CacheSpec::File { path, bytes } => (*bytes, Some(Path::new(path.as_str()))),
                // A farm keeps the built-in tables of the default size in front.
                CacheSpec::Farm(_) => (DEFAULT_CACHE_BYTES, None),
            };
            map_displays(s);
            let shared_tier = || -> Result<(), String> {
                let spec = match &settings.cache {
                    CacheSpec::Farm(spec) => Some(spec),
                    _ => None,
                };
                super::farm::configure(spec, health()?);
                Ok(())
            };
            let hints = (settings.ipv6_prefix, settings.block_memory_secs());
            match attach_or_create(bytes, path, hints, s).and_then(|()| shared_tier()) {
                Ok(()) => ap::OK as c_int,
                Err(msg) => {
                    log::server(s, Level::Crit, &msg);
                    ap::HTTP_INTERNAL_SERVER_ERROR as c_int
                }
            }
        },
    )
}

/// The site name of a server_rec (main server or virtual host): ServerName and port, the
/// port from `ServerName host:port`, else from the `<VirtualHost>` address.
unsafe fn site_name(s: *const ap::server_rec) -> String {
    // SAFETY: s is a live server_rec of this configuration pass; server_hostname is NULL or
    // a NUL-terminated string in the configuration pool; addrs is NULL or a live list.
    unsafe {
        let name = (!(*s).server_hostname.is_null())
            .then(|| std::ffi::CStr::from_ptr((*s).server_hostname).to_string_lossy());
        let mut port = (*s).port;
        if port == 0 && !(*s).addrs.is_null() {
            port = (*(*s).addrs).host_port;
        }
        crate::keys::site_name(name.as_deref(), port)
    }
}

/// Why the store is in anonymous memory although DOSCache names a file. Set by the parent in
/// post_config (before the workers fork, which inherit it), read by the status page.
static MEMORY_ONLY: Mutex<Option<String>> = Mutex::new(None);

fn set_memory_only(reason: Option<String>) {
    *MEMORY_ONLY.lock().unwrap_or_else(|p| p.into_inner()) = reason;
}

/// The reason the store fell back to memory, if it did (see [`MEMORY_ONLY`]).
pub(super) fn memory_only() -> Option<String> {
    MEMORY_ONLY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// A new region: the store file at `path` (checked, or replaced with one log line), else
/// anonymous memory.
fn create(area_bytes: usize, path: Option<&Path>, s: *mut ap::server_rec) -> Result<Store, String> {
    let anonymous = || {
        Store::create(area_bytes)
            .map_err(|e| format!("cannot map the shared store ({area_bytes} bytes per area): {e}"))
    };
    let Some(path) = path else {
        return anonymous();
    };
    match file::open(path, area_bytes, now()) {
        Ok((store, opened)) => {
            if let Some(line) = opened.log_line(path) {
                let level = match opened {
                    file::Opened::Created => Level::Notice,
                    _ => Level::Warning,
                };
                log::server(s, level, &line);
            }
            Ok(store)
        }
        Err(e) => {
            let reason = format!("cannot use store file {}: {e}", path.display());
            log::server(
                s,
                Level::Warning,
                &format!(
                    "{reason}; the store is degraded to anonymous memory (counting works, \
                     but blocks will not survive a stop)"
                ),
            );
            set_memory_only(Some(reason));
            anonymous()
        }
    }
}

/// Re-attaches to the store of an earlier pass, or creates it (resizing carries the blocks
/// over), and publishes it in [`STORE`]. The mapping passes linearly: out of the retained
/// slot, attached, kept or replaced, back into the slot (see `retained`).
///
/// # Safety
/// Parent process, post_config (single-threaded): no request is being served in it.
unsafe fn attach_or_create(
    area_bytes: usize,
    path: Option<&Path>,
    (ipv6_prefix, memory_secs): (u8, u32),
    s: *mut ap::server_rec,
) -> Result<(), String> {
    // Each pass decides afresh (a file that failed may be usable after a restart).
    set_memory_only(None);
    // SAFETY: per the contract; this key's block is a `KeptStore`, used only here.
    let kept = unsafe { retained::<KeptStore>(RETAINED_KEY) }
        .ok_or("cannot keep the store across restarts")?;
    // This image's Store of an earlier pass is a view of the mapping in the slot: forget it
    // (free the object, never unmap), so that `take` below gives the slot's only owner.
    let old = STORE.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if !old.is_null() {
        // SAFETY: a pointer in STORE is a leaked `&'static Store` of `Slot::keep`, read by
        // nothing in the parent between passes; its mapping is unmapped by nobody.
        std::mem::forget(unsafe { *Box::from_raw(old) });
    }
    let previous = kept
        .region
        .take()
        .and_then(|region| match Store::attach(region) {
            Ok(store) => Some(store),
            Err(e) => {
                let line = format!("shared store not reused after restart: {e}");
                log::server(s, Level::Warning, &line);
                None
            }
        });
    // The region of the earlier pass is reused only for the same backing: anonymous memory
    // again, or the very file (device and inode) still at the configured path.
    let same_backing = match path {
        None => kept.is_file == 0,
        Some(path) => kept.is_file != 0 && identity(path) == Some((kept.dev, kept.ino)),
    };
    // (A region taken back from the retained data does not know it maps a file.)
    let mut file_backed = kept.is_file != 0;
    let store = match previous {
        Some(store) if store.area_bytes() == area_bytes && same_backing => store,
        previous => {
            let fresh = create(area_bytes, path, s)?;
            file_backed = fresh.is_file_backed();
            if let Some(old) = previous {
                let carried = fresh.copy_blocks_from(&old, now());
                log::server(
                    s,
                    Level::Notice,
                    &format!(
                        "DOSCache size changed from {} to {} bytes per area{}; {carried} block records carried over",
                        old.area_bytes(),
                        area_bytes,
                        if fresh.is_file_backed() { " (file)" } else { "" },
                    ),
                );
                drop(old); // unmaps in the parent; old workers keep their own mapping
            }
            fresh
        }
    };
    let file_id = path.filter(|_| file_backed).and_then(identity);
    (kept.dev, kept.ino) = file_id.unwrap_or((0, 0));
    kept.is_file = u64::from(file_id.is_some());
    let store = kept.region.keep(store);
    store.set_hints(ipv6_prefix, memory_secs);
    STORE.store(std::ptr::from_ref(store).cast_mut(), Ordering::Release);
    Ok(())
}

pub unsafe extern "C" fn child_init(_pchild: *mut ap::apr_pool_t, _s: *mut ap::server_rec) {
    quiet_panic_hook();
    guard("child_init", (), super::farm::child_init);
}
