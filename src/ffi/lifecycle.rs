//! Configuration passes and the shared store's life across them.
//!
//! httpd runs post_config twice at start (a preflight pass that is thrown away, then the real
//! one in the daemon) and once per graceful/full restart, in the same parent process, while
//! the DSO may be unloaded and reloaded in between. The store's mapping is
//! created by the parent in the first real pass, before the workers fork, and its address is
//! kept in `ap_retained_data`, which lives as long as the parent: every later pass re-attaches
//! to it (checking the layout version in its header), so counters, blocks and generations
//! survive `graceful` and `restart`. A changed DOSCache size creates a new region and carries
//! the blocks over.
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
use crate::store::{Region, Store};
use std::sync::OnceLock;

/// The store of this process. Set by the parent in post_config (single-threaded, before fork),
/// read-only in the workers, which inherit the mapping.
static STORE: AtomicPtr<Store> = AtomicPtr::new(std::ptr::null_mut());

/// What survives in the parent across passes: where the region is mapped.
#[repr(C)]
struct Retained {
    addr: *mut u8,
    len: usize,
}

const RETAINED_KEY: &std::ffi::CStr = c"mod_shield.store.v1";

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
            // Resolve the settings of every server (main and virtual hosts).
            let mut cur = s;
            while !cur.is_null() {
                let holder = ServerHolder::of(cur);
                holder.settings = Some(holder.config.resolve());
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
            let bytes = match &settings.cache {
                CacheSpec::Shmcb { bytes } => *bytes,
                // Remote providers keep a local shared tier of the default size in front.
                CacheSpec::Provider { .. } => 524_288,
            };
            // Map the would-be-block ring in the parent, so the workers share it.
            let _ = would_blocks();
            let shared_tier = || -> Result<(), String> {
                let cache = ServerHolder::of(s).socache.as_ref();
                socache::init(cache, health()?, s, pconf)
            };
            match attach_or_create(bytes, s).and_then(|()| shared_tier()) {
                Ok(()) => ap::OK as c_int,
                Err(msg) => {
                    log::server(s, Level::Crit, &msg);
                    ap::HTTP_INTERNAL_SERVER_ERROR as c_int
                }
            }
        },
    )
}

/// Re-attach to the region of an earlier pass, or create it; resize carrying blocks over.
unsafe fn attach_or_create(area_bytes: usize, s: *mut ap::server_rec) -> Result<(), String> {
    // SAFETY (whole fn): runs in the parent during post_config, single-threaded.
    unsafe {
        // Forget (without unmapping) any Store object of an earlier pass of this process: the
        // region itself is found again through the retained data.
        let old = STORE.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !old.is_null() {
            let _ = Box::from_raw(old).into_region().into_raw();
        }
        let mut retained = ap::ap_retained_data_get(RETAINED_KEY.as_ptr()) as *mut Retained;
        if retained.is_null() {
            retained = ap::ap_retained_data_create(
                RETAINED_KEY.as_ptr(),
                std::mem::size_of::<Retained>() as _,
            ) as *mut Retained;
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
        let store = match previous {
            Some(store) if store.area_bytes() == area_bytes => store,
            previous => {
                let fresh = Store::create(area_bytes).map_err(|e| {
                    format!("cannot map the shared store ({area_bytes} bytes per area): {e}")
                })?;
                if let Some(old) = previous {
                    let carried = fresh.copy_blocks_from(&old, now);
                    log::server(
                        s,
                        Level::Notice,
                        &format!(
                            "DOSCache size changed from {} to {} bytes per area; {carried} block records carried over",
                            old.area_bytes(),
                            area_bytes
                        ),
                    );
                    drop(old); // unmaps in the parent; old workers keep their own mapping
                }
                fresh
            }
        };
        let (addr, len) = store.into_region().into_raw();
        (*retained).addr = addr;
        (*retained).len = len;
        let store =
            Store::attach(Region::from_raw(addr, len)).map_err(|e| format!("shared store: {e}"))?;
        STORE.store(Box::into_raw(Box::new(store)), Ordering::Release);
        Ok(())
    }
}

pub unsafe extern "C" fn child_init(pchild: *mut ap::apr_pool_t, _s: *mut ap::server_rec) {
    quiet_panic_hook();
    guard("child_init", (), || unsafe { socache::child_init(pchild) });
}
