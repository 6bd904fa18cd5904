//! Per-server and per-directory configuration objects, living in httpd's pools.
//!
//! Each is a Rust value boxed and handed to httpd as a `void *`; a cleanup on the same pool
//! drops the box when httpd clears the pool, so nothing leaks across restarts. Merging is
//! `config::ServerConfig::merge` / `DirConfig::merge`; the server's resolved settings are
//! computed once in post_config (before the workers fork) and only read afterwards.
use std::ffi::c_void;

use apache_sys as ap;

use super::guard::guard;
use super::module::{config_slot, module_ptr};
use crate::config::{DirConfig, ServerConfig, ServerSettings};

pub struct ServerHolder {
    pub config: ServerConfig,
    /// Filled by post_config for every server_rec; None only before that.
    pub settings: Option<ServerSettings>,
}

pub struct DirHolder {
    pub config: DirConfig,
}

unsafe extern "C" fn drop_box<T>(data: *mut c_void) -> ap::apr_status_t {
    // SAFETY: registered only with a pointer from Box::<T>::into_raw, run once by the pool.
    guard("config cleanup", (), || unsafe {
        drop(Box::from_raw(data as *mut T))
    });
    0
}

/// Box `value` and tie its lifetime to `pool`.
pub unsafe fn in_pool<T>(pool: *mut ap::apr_pool_t, value: T) -> *mut c_void {
    let raw = Box::into_raw(Box::new(value)) as *mut c_void;
    // SAFETY: the pool is live; the cleanup frees exactly this allocation when it is cleared.
    unsafe {
        ap::apr_pool_cleanup_register(
            pool,
            raw,
            Some(drop_box::<T>),
            Some(ap::apr_pool_cleanup_null),
        )
    };
    raw
}

impl ServerHolder {
    /// The holder of a server_rec.
    ///
    /// # Safety
    /// `s` must be a live server_rec whose config vector holds our create_server_config result.
    pub unsafe fn of<'a>(s: *const ap::server_rec) -> &'a mut ServerHolder {
        // SAFETY: per the contract; the slot was filled by create/merge_server_config.
        unsafe { &mut *(config_slot((*s).module_config) as *mut ServerHolder) }
    }

    /// Gives `s` a holder of its own, a copy of the one it shares (configuration only).
    ///
    /// # Safety
    /// As for [`ServerHolder::of`]; configuration phase only (single-threaded), `pool`
    /// outlives the server_rec's use (the configuration pool).
    pub unsafe fn own_copy(s: *mut ap::server_rec, pool: *mut ap::apr_pool_t) {
        // SAFETY: per the contract; the new box is tied to `pool` like every holder.
        unsafe {
            let copy = ServerHolder {
                config: ServerHolder::of(s).config.clone(),
                settings: None,
            };
            ap::ap_set_module_config((*s).module_config, module_ptr(), in_pool(pool, copy));
        }
    }

    /// The resolved settings of a server, when post_config has run.
    ///
    /// # Safety
    /// As for [`ServerHolder::of`]; only called after configuration (read-only phase).
    pub unsafe fn settings<'a>(s: *const ap::server_rec) -> Option<&'a ServerSettings> {
        // SAFETY: per the contract.
        unsafe {
            let slot = config_slot((*s).module_config) as *const ServerHolder;
            slot.as_ref()?.settings.as_ref()
        }
    }
}

impl DirHolder {
    /// # Safety
    /// `p` must come from create_dir_config or merge_dir_config.
    pub unsafe fn from_raw<'a>(p: *mut c_void) -> &'a mut DirHolder {
        // SAFETY: per the contract.
        unsafe { &mut *(p as *mut DirHolder) }
    }

    /// The merged per-directory config of a request.
    ///
    /// # Safety
    /// `r` must be a live request whose per_dir_config has been merged by httpd.
    pub unsafe fn of_request<'a>(r: *const ap::request_rec) -> Option<&'a DirConfig> {
        // SAFETY: per the contract.
        unsafe {
            let slot = config_slot((*r).per_dir_config) as *const DirHolder;
            slot.as_ref().map(|h| &h.config)
        }
    }
}

/// A configuration object httpd creates per section and merges down the tree.
pub trait PoolConfig: Sized + 'static {
    /// The hooks' names, for the log line of a caught panic.
    const CREATE: &'static str;
    const MERGE: &'static str;
    fn create() -> Self;
    fn merge(base: &Self, new: &Self) -> Self;
}

impl PoolConfig for ServerHolder {
    const CREATE: &'static str = "create_server_config";
    const MERGE: &'static str = "merge_server_config";

    fn create() -> Self {
        ServerHolder {
            config: ServerConfig::default(),
            settings: None,
        }
    }

    fn merge(base: &Self, new: &Self) -> Self {
        ServerHolder {
            config: ServerConfig::merge(&base.config, &new.config),
            // DOSCache is global-only: virtual hosts use the main server's tier.
            settings: None,
        }
    }
}

impl PoolConfig for DirHolder {
    const CREATE: &'static str = "create_dir_config";
    const MERGE: &'static str = "merge_dir_config";

    fn create() -> Self {
        DirHolder {
            config: DirConfig::default(),
        }
    }

    fn merge(base: &Self, new: &Self) -> Self {
        DirHolder {
            config: DirConfig::merge(&base.config, &new.config),
        }
    }
}

/// `create_server_config` (`A` = server_rec) and `create_dir_config` (`A` = the section's
/// path): a fresh `T` in the pool.
pub unsafe extern "C" fn create_config<T: PoolConfig, A>(
    p: *mut ap::apr_pool_t,
    _about: *mut A,
) -> *mut c_void {
    // SAFETY: p is the live pool httpd creates the config in.
    guard(T::CREATE, std::ptr::null_mut(), || unsafe {
        in_pool(p, T::create())
    })
}

/// `merge_server_config` and `merge_dir_config`: `new` over `base`, in the pool.
pub unsafe extern "C" fn merge_config<T: PoolConfig>(
    p: *mut ap::apr_pool_t,
    base: *mut c_void,
    new: *mut c_void,
) -> *mut c_void {
    guard(T::MERGE, new, || unsafe {
        // SAFETY: httpd passes two objects made by create_config::<T> / merge_config::<T>.
        let (base, new) = (&*(base as *const T), &*(new as *const T));
        in_pool(p, T::merge(base, new))
    })
}
