//! The directive table httpd reads (`command_rec[]`), generated at compile time from
//! `config::DIRECTIVES`, one `command_rec` per row. Every directive is RAW_ARGS and goes through
//! one handler, which finds its row by the index `cmd_data` carries, checks the row's scope and
//! hands the raw argument string to the row's parser; all validation lives in `config`.
use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;

use apache_sys as ap;

use super::guard::guard;
use super::log;
use super::server::{DirHolder, ServerHolder};
use crate::config::{Scope, DIRECTIVES};

const COUNT: usize = DIRECTIVES.len();

#[repr(transparent)]
pub struct Table([ap::command_struct; COUNT + 1]);
// SAFETY: the table holds pointers to 'static C strings and 'static functions only and is never
// written after compilation.
unsafe impl Sync for Table {}

impl Table {
    pub const fn as_ptr(&self) -> *const ap::command_struct {
        self.0.as_ptr()
    }
}

/// Where httpd accepts a row, from its scope (GLOBAL_ONLY is checked by the handler).
const fn req_override(scope: Scope) -> c_int {
    match scope {
        // httpd itself refuses these inside <Directory>, <Location>, <Files>, <If>.
        Scope::Global | Scope::Server => ap::RSRC_CONF as c_int,
        // Not OR_*: DOS* directives are never allowed in .htaccess (whatever AllowOverride
        // says), so a site's own files cannot turn protection off.
        Scope::All => (ap::RSRC_CONF | ap::ACCESS_CONF) as c_int,
    }
}

const EMPTY: ap::command_struct = ap::command_struct {
    name: ptr::null(),
    func: ap::cmd_func { raw_args: None },
    cmd_data: ptr::null_mut(),
    req_override: 0,
    args_how: 0,
    errmsg: ptr::null(),
};

const fn build() -> Table {
    let mut rows = [EMPTY; COUNT + 1];
    let mut i = 0;
    while i < COUNT {
        let d = &DIRECTIVES[i];
        rows[i] = ap::command_struct {
            name: d.name.as_ptr(),
            func: ap::cmd_func {
                raw_args: Some(set_directive),
            },
            // The row's index into DIRECTIVES, to find its scope again.
            cmd_data: i as *mut c_void,
            req_override: req_override(d.scope),
            args_how: ap::cmd_how_RAW_ARGS,
            errmsg: d.usage.as_ptr(),
        };
        i += 1;
    }
    Table(rows)
}

pub static TABLE: Table = build();

/// Turn an error message into a string httpd can keep (allocated in the command's pool).
unsafe fn pool_error(cmd: *mut ap::cmd_parms, msg: &str) -> *const c_char {
    let msg = std::ffi::CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // SAFETY: cmd->pool outlives the configuration pass that reports the message.
    unsafe { ap::apr_pstrdup((*cmd).pool, msg.as_ptr()) }
}

/// Whether the directive being read sits in a section httpd merges only in its directory walk
/// (or later): `<Directory>`, `<Files>`, `<Proxy>` and their Match forms, at any depth (and,
/// as httpd tells, `<If>`, which is merged before the walk too: taken as late, to be safe).
///
/// # Safety
/// `cmd` is the live cmd_parms of a directive being read.
unsafe fn in_directory_section(cmd: *mut ap::cmd_parms) -> bool {
    // SAFETY: (the caller's) ap_check_cmd_context only reads the directive tree; it returns
    // an error message (in cmd's pool) exactly when the directive is in such a section.
    let err = unsafe {
        ap::ap_check_cmd_context(
            cmd,
            (ap::NOT_IN_DIRECTORY | ap::NOT_IN_FILES | ap::NOT_IN_PROXY) as _,
        )
    };
    !err.is_null()
}

unsafe extern "C" fn set_directive(
    cmd: *mut ap::cmd_parms,
    mconfig: *mut c_void,
    args: *const c_char,
) -> *const c_char {
    guard(
        "directive parsing",
        c"mod_shield: internal error while reading a directive".as_ptr(),
        // SAFETY: httpd passes a live cmd_parms, the section's per-dir config created by
        // create_dir_config (or merge), and a NUL-terminated argument string.
        || unsafe {
            let index = (*cmd).info as usize;
            let Some(info) = DIRECTIVES.get(index) else {
                return c"mod_shield: unknown directive".as_ptr();
            };
            if info.scope == Scope::Global {
                let err = ap::ap_check_cmd_context(cmd, ap::GLOBAL_ONLY as _);
                if !err.is_null() {
                    return err;
                }
            }
            let name = info.name.to_string_lossy();
            let raw = if args.is_null() {
                String::new()
            } else {
                CStr::from_ptr(args).to_string_lossy().into_owned()
            };
            let setting = match info.parse(&name, &raw) {
                Ok(s) => s,
                Err(e) => return pool_error(cmd, &e.to_string()),
            };
            if setting.is_ignored() {
                log::server(
                    (*cmd).server,
                    log::Level::Notice,
                    &format!("{name} is accepted for compatibility and ignored: DOSCache sizes the shared tables"),
                );
            }
            let result = if info.scope == Scope::All {
                if setting.decides_under_attack() && in_directory_section(cmd) {
                    crate::attack::note_directory_scoped();
                }
                DirHolder::from_raw(mconfig).config.apply(setting)
            } else {
                ServerHolder::of((*cmd).server).config.apply(setting)
            };
            match result {
                Ok(()) => ptr::null(),
                Err(e) => pool_error(cmd, &e.to_string()),
            }
        },
    )
}
