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
use std::sync::atomic::{AtomicPtr, Ordering};

use apache_sys as ap;

use super::guard::{guard, quiet_panic_hook};
use super::log::{self, Level};
use super::server::ServerHolder;
use super::socache;
use crate::config::CacheSpec;
use crate::monitor::WouldBlocks;
use crate::remote::Health;
use crate::store::{file, Region, Store};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// The store of this process. Set by the parent in post_config (single-threaded, before fork),
/// read-only in the workers, which inherit the mapping.
static STORE: AtomicPtr<Store> = AtomicPtr::new(std::ptr::null_mut());

/// What survives in the parent across passes: where the region is mapped, and which file it
/// maps (device and inode; `is_file` 0 for anonymous memory).
#[repr(C)]
struct Retained {
    addr: *mut u8,
    len: usize,
    is_file: u64,
    dev: u64,
    ino: u64,
}

const RETAINED_KEY: &std::ffi::CStr = c"mod_shield.store.v2";

/// The parent's block of retained data under `key` (kept across restarts), created zeroed
/// on first use; NULL only if it cannot be made.
///
/// # Safety
/// Parent process, post_config (single-threaded); every caller of one key uses one `T`,
/// a plain struct for which all-zero bytes are a valid value.
pub(super) unsafe fn retained<T>(key: &std::ffi::CStr) -> *mut T {
    // SAFETY: per the contract; httpd returns NULL or a block of the requested size.
    unsafe {
        let found = ap::ap_retained_data_get(key.as_ptr()) as *mut T;
        if !found.is_null() {
            return found;
        }
        ap::ap_retained_data_create(key.as_ptr(), std::mem::size_of::<T>() as _) as *mut T
    }
}

/// Device and inode of the file at `path`, if any.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

pub fn store() -> Option<&'static Store> {
    // SAFETY: the pointer is either null or a leaked Box<Store> that is only replaced by the
    // parent during post_config, when no request is being served in this process.
    unsafe { STORE.load(Ordering::Acquire).as_ref() }
}

pub fn now() -> i64 {
    // SAFETY: plain function call.
    unsafe { ap::apr_time_now() }
}

pub unsafe extern "C" fn pre_config(
    pconf: *mut ap::apr_pool_t,
    _plog: *mut ap::apr_pool_t,
    _ptemp: *mut ap::apr_pool_t,
) -> c_int {
    quiet_panic_hook();
    // SAFETY: pconf is this pass's configuration pool.
    guard("pre_config", ap::OK as c_int, || unsafe {
        socache::pre_config(pconf);
        crate::attack::reset_configured();
        ap::OK as c_int
    })
}

/// Monitor mode's recent would-be blocks: a small shared ring for the life of the parent, made
/// before the workers fork (a display aid, not configuration).
pub fn would_blocks() -> Option<&'static WouldBlocks> {
    static RING: OnceLock<Option<WouldBlocks>> = OnceLock::new();
    RING.get_or_init(|| WouldBlocks::new().ok()).as_ref()
}

/// The shared tier's health: one small shared mapping for the life of the parent, made before
/// the workers fork (not configuration: it only says whether the backend answers).
fn health() -> Result<&'static Health, String> {
    static HEALTH: OnceLock<Option<Health>> = OnceLock::new();
    HEALTH
        .get_or_init(|| Health::new().ok())
        .as_ref()
        .ok_or_else(|| "cannot map the shared tier's health word".to_string())
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
                // Remote providers keep a local shared tier of the default size in front.
                CacheSpec::Provider { .. } => (524_288, None),
            };
            // Map the would-be-block ring in the parent, so the workers share it.
            let _ = would_blocks();
            if let Err(msg) = super::metrics::init() {
                log::server(s, Level::Warning, &msg);
            }
            let _ = crate::challenge::stats();
            let shared_tier = || -> Result<(), String> {
                let cache = ServerHolder::of(s).socache.as_ref();
                socache::init(cache, health()?, s, pconf)
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

/// Re-attach to the region of an earlier pass, or create it; resize carrying blocks over.
unsafe fn attach_or_create(
    area_bytes: usize,
    path: Option<&Path>,
    (ipv6_prefix, memory_secs): (u8, u32),
    s: *mut ap::server_rec,
) -> Result<(), String> {
    // SAFETY (whole fn): runs in the parent during post_config, single-threaded.
    unsafe {
        // Forget (without unmapping) any Store object of an earlier pass of this process: the
        // region itself is found again through the retained data.
        let old = STORE.swap(std::ptr::null_mut(), Ordering::AcqRel);
        // Each pass decides afresh (a file that failed may be usable after a restart).
        set_memory_only(None);
        if !old.is_null() {
            let _ = Box::from_raw(old).into_region().into_raw();
        }
        let retained = retained::<Retained>(RETAINED_KEY);
        if retained.is_null() {
            return Err("cannot keep the store across restarts".to_string());
        }
        let now = super::lifecycle::now();
        let previous = if (*retained).addr.is_null() {
            None
        } else {
            match Store::attach(Region::from_raw((*retained).addr, (*retained).len)) {
                Ok(store) => Some(store),
                Err(e) => {
                    log::server(
                        s,
                        Level::Warning,
                        &format!("shared store not reused after restart: {e}"),
                    );
                    None
                }
            }
        };
        // The region of the earlier pass is reused only for the same backing: anonymous memory
        // again, or the very file (device and inode) still at the configured path.
        let same_backing = match path {
            None => (*retained).is_file == 0,
            Some(path) => {
                (*retained).is_file != 0
                    && identity(path) == Some(((*retained).dev, (*retained).ino))
            }
        };
        // (A region taken back from the retained data does not know it maps a file.)
        let mut file_backed = (*retained).is_file != 0;
        let store = match previous {
            Some(store) if store.area_bytes() == area_bytes && same_backing => store,
            previous => {
                let fresh = create(area_bytes, path, s)?;
                file_backed = fresh.is_file_backed();
                if let Some(old) = previous {
                    let carried = fresh.copy_blocks_from(&old, now);
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
        let (addr, len) = store.into_region().into_raw();
        (*retained).addr = addr;
        (*retained).len = len;
        (*retained).is_file = u64::from(file_id.is_some());
        let (dev, ino) = file_id.unwrap_or((0, 0));
        (*retained).dev = dev;
        (*retained).ino = ino;
        let store =
            Store::attach(Region::from_raw(addr, len)).map_err(|e| format!("shared store: {e}"))?;
        store.set_hints(ipv6_prefix, memory_secs);
        STORE.store(Box::into_raw(Box::new(store)), Ordering::Release);
        Ok(())
    }
}

pub unsafe extern "C" fn child_init(pchild: *mut ap::apr_pool_t, _s: *mut ap::server_rec) {
    quiet_panic_hook();
    guard("child_init", (), || unsafe { socache::child_init(pchild) });
}
