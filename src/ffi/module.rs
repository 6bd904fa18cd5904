//! The exported module record. httpd finds it with `dlsym("shield_module")`, checks the magic
//! cookie and MMN, and then writes into it (`module_index`, `next`, `name`,
//! `dynamic_load_handle`), so it must be a writable, exported Rust static: a symbol defined in
//! a C file linked in would not be exported from a cdylib.
use std::cell::UnsafeCell;
use std::ffi::{c_char, c_int, c_ulong};
use std::ptr;

use apache_sys as ap;

use super::guard::guard;
use super::server::{DirHolder, ServerHolder};
use super::{directives, handler, hooks, lifecycle, quick, server};

#[repr(transparent)]
pub struct ModuleCell(UnsafeCell<ap::module_struct>);

// SAFETY: httpd writes the record only while loading the module (single-threaded, before any
// worker exists); afterwards every access is a read.
unsafe impl Sync for ModuleCell {}

#[no_mangle]
#[allow(non_upper_case_globals)]
pub static shield_module: ModuleCell = ModuleCell(UnsafeCell::new(ap::module_struct {
    version: ap::MODULE_MAGIC_NUMBER_MAJOR as c_int,
    minor_version: ap::MODULE_MAGIC_NUMBER_MINOR as c_int,
    module_index: -1,
    // The name `<IfModule mod_shield.c>` and hook ordering match against.
    name: c"mod_shield.c".as_ptr(),
    dynamic_load_handle: ptr::null_mut(),
    next: ptr::null_mut(),
    magic: ap::MODULE_MAGIC_COOKIE as c_ulong,
    rewrite_args: None,
    create_dir_config: Some(server::create_config::<DirHolder, c_char>),
    merge_dir_config: Some(server::merge_config::<DirHolder>),
    create_server_config: Some(server::create_config::<ServerHolder, ap::server_rec>),
    merge_server_config: Some(server::merge_config::<ServerHolder>),
    cmds: directives::TABLE.as_ptr(),
    register_hooks: Some(register_hooks),
    flags: 0,
}));

/// The record as httpd sees it.
pub fn module_ptr() -> *mut ap::module_struct {
    shield_module.0.get()
}

/// This module's slot of a config vector: what httpd's `ap_get_module_config` returns (its
/// macro form indexes the vector the same way), read without a call on the request path.
///
/// # Safety
/// `v` is a live config vector of the running server, which has a slot for every module
/// index httpd assigned, this module's included.
#[inline(always)]
pub unsafe fn config_slot(v: *const ap::ap_conf_vector_t) -> *mut std::ffi::c_void {
    // SAFETY: per the contract: an aligned pointer-sized read inside the vector.
    unsafe { *(v as *const *mut std::ffi::c_void).add(module_index() as usize) }
}

/// httpd's index of this module (for config vectors and per-module log levels).
#[inline(always)]
pub fn module_index() -> c_int {
    // SAFETY: a plain read of a field httpd wrote at load time; no concurrent writer exists.
    unsafe { (*module_ptr()).module_index }
}

/// A NULL-terminated list of module names, as the hook API wants (stored by pointer: 'static).
#[repr(transparent)]
struct NameList<const N: usize>([*const c_char; N]);
// SAFETY: pointers to 'static C string literals, never written.
unsafe impl<const N: usize> Sync for NameList<N> {}

/// post_read_request runs after mod_remoteip has restored the client address.
static AFTER_REMOTEIP: NameList<2> = NameList([c"mod_remoteip.c".as_ptr(), ptr::null()]);
/// fixups runs after mod_dir's, which maps `/` to its DirectoryIndex file (`r->uri` becomes
/// `/index.html`): the two are one page.
static AFTER_DIR: NameList<2> = NameList([c"mod_dir.c".as_ptr(), ptr::null()]);

unsafe extern "C" fn register_hooks(_p: *mut ap::apr_pool_t) {
    let middle = ap::APR_HOOK_MIDDLE as c_int;
    // SAFETY: registering 'static function pointers and 'static name lists with httpd while it
    // builds its hook tables (single-threaded configuration phase).
    guard("register_hooks", (), || unsafe {
        ap::ap_hook_pre_config(
            Some(lifecycle::pre_config),
            ptr::null(),
            ptr::null(),
            middle,
        );
        ap::ap_hook_post_config(
            Some(lifecycle::post_config),
            ptr::null(),
            ptr::null(),
            middle,
        );
        ap::ap_hook_child_init(
            Some(lifecycle::child_init),
            ptr::null(),
            ptr::null(),
            middle,
        );
        ap::ap_hook_post_read_request(
            Some(hooks::post_read_request),
            AFTER_REMOTEIP.0.as_ptr(),
            ptr::null(),
            middle,
        );
        ap::ap_hook_fixups(
            Some(hooks::fixups),
            AFTER_DIR.0.as_ptr(),
            ptr::null(),
            middle,
        );
        // First of all translate hooks: a navigation challenged under attack needs no other.
        ap::ap_hook_translate_name(
            Some(hooks::translate_name),
            ptr::null(),
            ptr::null(),
            ap::APR_HOOK_REALLY_FIRST as c_int,
        );
        // Before core's map_to_storage, which answers a TRACE and an `OPTIONS *` itself (and
        // walks the directories, which a challenged navigation skips).
        ap::ap_hook_map_to_storage(
            Some(hooks::map_to_storage),
            ptr::null(),
            ptr::null(),
            ap::APR_HOOK_REALLY_FIRST as c_int,
        );
        // Before mod_mime: a challenged navigation needs no type.
        ap::ap_hook_type_checker(
            Some(hooks::type_checker),
            ptr::null(),
            ptr::null(),
            ap::APR_HOOK_REALLY_FIRST as c_int,
        );
        ap::ap_hook_insert_filter(Some(hooks::insert_filter), ptr::null(), ptr::null(), middle);
        quick::register();
        ap::ap_hook_insert_error_filter(
            Some(hooks::insert_error_filter),
            ptr::null(),
            ptr::null(),
            middle,
        );
        ap::ap_hook_log_transaction(
            Some(hooks::log_transaction),
            ptr::null(),
            ptr::null(),
            middle,
        );
        // First of all handlers: mod_proxy's (FIRST) answers any request its translate hook
        // marked for the backend, whatever r->handler says, so a challenge page named after
        // that would otherwise be proxied through. Other requests pass at one compare.
        ap::ap_hook_handler(
            Some(handler::handler),
            ptr::null(),
            ptr::null(),
            ap::APR_HOOK_REALLY_FIRST as c_int,
        );
    });
}
