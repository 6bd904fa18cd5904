//! `DOSCache memcache:…` / `redis:…`: Apache's socache providers as the shared tier.
//!
//! The provider is looked up and its instance created when the directive is read (so a missing
//! `LoadModule socache_*` fails `apachectl -t`), initialised in post_config, and used by the
//! request hooks through [`backend`]. Providers flagged `AP_SOCACHE_FLAG_NOTMPSAFE` get a
//! global mutex (the `Mutex shield-cache` directive configures it); memcache and redis are
//! safe without one. What is stored and how it is merged is `crate::remote`.
use std::ffi::{c_char, c_uint, CStr, CString};
use std::net::IpAddr;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use apache_sys as ap;

use super::log;
use crate::remote::{self, Health, RemoteRecord, Transition};
use crate::store::Micros;

/// The mutex type name registered with httpd (`Mutex … shield-cache`).
pub const MUTEX_TYPE: &CStr = c"shield-cache";

/// A provider and its instance, as created when `DOSCache` was read.
pub struct Socache {
    provider: *const ap::ap_socache_provider_t,
    instance: *mut ap::ap_socache_instance_t,
    mutex: *mut ap::apr_global_mutex_t,
    /// `name:args` as configured, for log lines and the status page.
    pub label: String,
    /// mod_socache_dbm answers a key it does not hold with APR_EGENERAL when apr-util's DBM
    /// is Berkeley DB (the fetch succeeds with no data): from it, that status means "none".
    egeneral_is_absent: bool,
}

/// The tier the request hooks use: the socache and its health, shared by all workers.
pub struct Backend {
    cache: Socache,
    pub health: &'static Health,
}

// SAFETY: the provider table is static data of the provider module; the instance and mutex are
// used only through the provider's and APR's calls, which are safe across threads (a provider
// that is not is serialised by the global mutex).
unsafe impl Send for Backend {}
unsafe impl Sync for Backend {}

static BACKEND: AtomicPtr<Backend> = AtomicPtr::new(ptr::null_mut());

/// The shared tier of this generation, if `DOSCache` names a provider.
pub fn backend() -> Option<&'static Backend> {
    // SAFETY: null or a leaked Box set by the parent in post_config before the workers fork.
    unsafe { BACKEND.load(Ordering::Acquire).as_ref() }
}

/// Look the provider up and create its instance (directive time).
///
/// # Safety
/// `cmd` must be the live cmd_parms of the directive being read.
pub unsafe fn configure(
    cmd: *mut ap::cmd_parms,
    name: &str,
    args: &str,
) -> Result<Socache, String> {
    let label = format!("{name}:{args}");
    let c_name = CString::new(name)
        .map_err(|_| format!("DOSCache: '{label}' is not a valid provider name"))?;
    let c_args = CString::new(args).map_err(|_| format!("DOSCache: '{label}' has a NUL byte"))?;
    // SAFETY: httpd's provider registry is filled by the modules loaded before this line.
    unsafe {
        let provider = ap::ap_lookup_provider(
            ap::AP_SOCACHE_PROVIDER_GROUP.as_ptr().cast(),
            c_name.as_ptr(),
            ap::AP_SOCACHE_PROVIDER_VERSION.as_ptr().cast(),
        ) as *const ap::ap_socache_provider_t;
        if provider.is_null() {
            return Err(format!(
                "DOSCache: '{label}': no socache provider '{name}' is loaded; add `LoadModule socache_{name}_module modules/mod_socache_{name}.so` before this line"
            ));
        }
        let Some(create) = (*provider).create else {
            return Err(format!(
                "DOSCache: '{label}': provider '{name}' cannot create an instance"
            ));
        };
        let mut instance: *mut ap::ap_socache_instance_t = ptr::null_mut();
        let err = create(
            &mut instance,
            c_args.as_ptr(),
            (*cmd).temp_pool,
            (*cmd).pool,
        );
        if !err.is_null() {
            return Err(format!(
                "DOSCache: '{label}': {}",
                CStr::from_ptr(err).to_string_lossy()
            ));
        }
        Ok(Socache {
            provider,
            instance,
            mutex: ptr::null_mut(),
            label,
            egeneral_is_absent: name.eq_ignore_ascii_case("dbm"),
        })
    }
}

/// Register the mutex type (every pre_config pass).
///
/// # Safety
/// `pconf` is the configuration pool of the pass.
pub unsafe fn pre_config(pconf: *mut ap::apr_pool_t) {
    // SAFETY: per the contract; the type name is 'static.
    unsafe {
        ap::ap_mutex_register(
            pconf,
            MUTEX_TYPE.as_ptr(),
            ptr::null(),
            ap::apr_lockmech_e_APR_LOCK_DEFAULT,
            0,
        );
    }
}

/// Initialise the provider and publish the tier (post_config, real pass only).
///
/// # Safety
/// Called in the parent during post_config with the main server and pconf.
pub unsafe fn init(
    cache: Option<&Socache>,
    health: &'static Health,
    s: *mut ap::server_rec,
    pconf: *mut ap::apr_pool_t,
) -> Result<(), String> {
    BACKEND.store(ptr::null_mut(), Ordering::Release);
    let Some(cache) = cache else { return Ok(()) };
    // SAFETY: per the contract; the provider and instance were created for this pass.
    unsafe {
        let mut mutex = ptr::null_mut();
        if (*cache.provider).flags & ap::AP_SOCACHE_FLAG_NOTMPSAFE as c_uint != 0 {
            let rv = ap::ap_global_mutex_create(
                &mut mutex,
                ptr::null_mut(),
                MUTEX_TYPE.as_ptr(),
                ptr::null(),
                s,
                pconf,
                0,
            );
            if rv != 0 {
                return Err(format!(
                    "DOSCache {}: cannot create the shield-cache mutex (status {rv})",
                    cache.label
                ));
            }
        }
        let hints = ap::ap_socache_hints {
            avg_id_len: 23,
            avg_obj_size: remote::RECORD_BYTES as _,
            expiry_interval: 60 * 1_000_000,
        };
        if let Some(init) = (*cache.provider).init {
            let rv = init(cache.instance, c"mod_shield".as_ptr(), &hints, s, pconf);
            if rv != 0 {
                return Err(format!(
                    "DOSCache {}: the provider failed to initialise (status {rv})",
                    cache.label
                ));
            }
        }
        let backend = Backend {
            cache: Socache {
                provider: cache.provider,
                instance: cache.instance,
                mutex,
                label: cache.label.clone(),
                egeneral_is_absent: cache.egeneral_is_absent,
            },
            health,
        };
        BACKEND.store(Box::into_raw(Box::new(backend)), Ordering::Release);
    }
    Ok(())
}

/// Re-open the mutex in a new child (needed by file-based mechanisms).
///
/// # Safety
/// Called from child_init with the child's pool.
pub unsafe fn child_init(pchild: *mut ap::apr_pool_t) {
    let Some(b) = backend() else { return };
    if b.cache.mutex.is_null() {
        return;
    }
    // SAFETY: the mutex was created by the parent for this generation; child_init re-attaches.
    unsafe {
        let mut m = b.cache.mutex;
        ap::apr_global_mutex_child_init(&mut m, ap::apr_global_mutex_lockfile(m), pchild);
    }
}

impl Backend {
    pub fn label(&self) -> &str {
        &self.cache.label
    }

    /// Run one provider call, under the global mutex when the provider needs it.
    unsafe fn locked<T>(&self, call: impl FnOnce() -> T) -> Result<T, String> {
        // SAFETY: a live global mutex of this generation, or null.
        let _guard = unsafe { MutexGuard::lock(self.cache.mutex) }?;
        Ok(call())
    }

    /// Read a client's record. Ok(None): the backend answered that there is none.
    ///
    /// # Safety
    /// `s` and `pool` are the live server and request pool.
    pub unsafe fn retrieve(
        &self,
        s: *mut ap::server_rec,
        client: IpAddr,
        pool: *mut ap::apr_pool_t,
    ) -> Result<Option<RemoteRecord>, String> {
        let Some(retrieve) = (unsafe { (*self.cache.provider).retrieve }) else {
            return Err("provider cannot retrieve".into());
        };
        let id = remote::record_id(client);
        let mut buf = [0u8; remote::RECORD_BYTES + 64];
        let mut len = buf.len() as c_uint;
        // SAFETY: id and buf outlive the call; len tells the provider the buffer's size.
        let rv = unsafe {
            self.locked(|| {
                retrieve(
                    self.cache.instance,
                    s,
                    id.as_ptr(),
                    id.len() as c_uint,
                    buf.as_mut_ptr(),
                    &mut len,
                    pool,
                )
            })
        }?;
        match rv {
            0 => Ok(buf.get(..len as usize).and_then(RemoteRecord::decode)),
            rv if rv == ap::APR_NOTFOUND => Ok(None),
            rv if rv == ap::APR_EGENERAL && self.cache.egeneral_is_absent => Ok(None),
            rv => Err(status_text(rv)),
        }
    }

    /// Write a client's record back: Ok(true) when written, Ok(false) when this process's
    /// connection to the backend is not back yet.
    ///
    /// # Safety
    /// As for [`Backend::retrieve`].
    pub unsafe fn store(
        &self,
        s: *mut ap::server_rec,
        client: IpAddr,
        record: &RemoteRecord,
        now: Micros,
        pool: *mut ap::apr_pool_t,
    ) -> Result<bool, String> {
        let Some(store) = (unsafe { (*self.cache.provider).store }) else {
            return Err("provider cannot store".into());
        };
        let id = remote::record_id(client);
        let mut bytes = record.encode();
        // SAFETY: id and bytes outlive the call.
        let rv = unsafe {
            self.locked(|| {
                store(
                    self.cache.instance,
                    s,
                    id.as_ptr(),
                    id.len() as c_uint,
                    record.expiry(now),
                    bytes.as_mut_ptr(),
                    bytes.len() as c_uint,
                    pool,
                )
            })
        }?;
        match rv {
            0 => Ok(true),
            // The provider's client in this process still counts the server as dead (it retries
            // one after 5 s): nothing was written, but that is not news of an outage either.
            rv if rv == ap::APR_NOTFOUND => Ok(false),
            rv => Err(status_text(rv)),
        }
    }

    /// Log a change of the backend's health, once per outage and server.
    pub fn log_transition(&self, s: *const ap::server_rec, t: Transition, why: &str) {
        if let Some((level, msg)) = t.message(self.label(), why) {
            crate::log::Log::log(&log::ServerLog(s), level, &msg);
        }
    }
}

/// The held global mutex of a provider that needs one: unlocked when dropped, so every way out
/// of a provider call (a return, an early `?`, an unwind) releases it.
struct MutexGuard(*mut ap::apr_global_mutex_t);

impl MutexGuard {
    /// Lock `m`; a null `m` (a provider safe without one) locks nothing.
    ///
    /// # Safety
    /// `m` is null or a live global mutex of this generation, attached in this child.
    unsafe fn lock(m: *mut ap::apr_global_mutex_t) -> Result<MutexGuard, String> {
        if !m.is_null() {
            // SAFETY: per the contract.
            let rv = unsafe { ap::apr_global_mutex_lock(m) };
            if rv != 0 {
                return Err(format!(
                    "cannot lock the shield-cache mutex: {}",
                    status_text(rv)
                ));
            }
        }
        Ok(MutexGuard(m))
    }
}

impl Drop for MutexGuard {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: this guard locked the mutex in `lock` and unlocks it once.
            unsafe {
                ap::apr_global_mutex_unlock(self.0);
            }
        }
    }
}

fn status_text(rv: i32) -> String {
    let mut buf = [0 as c_char; 128];
    // SAFETY: apr_strerror writes a NUL-terminated message into the buffer it is given.
    unsafe {
        ap::apr_strerror(rv, buf.as_mut_ptr(), buf.len() as _);
        format!(
            "{} (status {rv})",
            CStr::from_ptr(buf.as_ptr()).to_string_lossy()
        )
    }
}
