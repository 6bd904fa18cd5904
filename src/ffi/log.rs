//! Writing to httpd's error log with the module's tag (`[shield:info]`). `ap_log_*error_` are
//! the functions behind the C logging macros; they are variadic, so every message goes through
//! a fixed "%s" format and can never be read as a format string.
use std::ffi::{c_int, CString};
use std::ptr;

use apache_sys as ap;

use super::module::module_index;

pub use crate::log::Level;

/// httpd's number for a level.
fn code(level: Level) -> c_int {
    (match level {
        Level::Crit => ap::APLOG_CRIT,
        Level::Err => ap::APLOG_ERR,
        Level::Warning => ap::APLOG_WARNING,
        Level::Notice => ap::APLOG_NOTICE,
        Level::Info => ap::APLOG_INFO,
        Level::Debug => ap::APLOG_DEBUG,
    }) as c_int
}

/// A server's error log as a [`crate::log::Log`].
pub struct ServerLog(pub *const ap::server_rec);

impl crate::log::Log for ServerLog {
    fn log(&self, level: Level, msg: &str) {
        server(self.0, level, msg);
    }
}

fn c_message(msg: &str) -> CString {
    // Interior NULs cannot come from our own messages; replace them rather than fail.
    CString::new(msg.replace('\0', "\\0")).unwrap_or_default()
}

/// Whether `level` is enabled for this module on the request's server/directory.
pub fn request_enabled(r: *const ap::request_rec, level: Level) -> bool {
    // Levels at or below notice are always logged by httpd.
    if level <= Level::Notice {
        return true;
    }
    // SAFETY: `r` is the live request httpd passed to the hook.
    unsafe { ap::ap_get_request_module_loglevel(r, module_index()) >= code(level) }
}

/// Log for a request (adds httpd's `[client …]` prefix).
pub fn request(r: *const ap::request_rec, level: Level, msg: &str) {
    if !request_enabled(r, level) {
        return;
    }
    let msg = c_message(msg);
    // SAFETY: valid request pointer from httpd, NUL-terminated strings, "%s" consumes exactly one.
    unsafe {
        ap::ap_log_rerror_(
            c"mod_shield".as_ptr(),
            line!() as c_int,
            module_index(),
            code(level),
            0,
            r,
            c"%s".as_ptr(),
            msg.as_ptr(),
        );
    }
}

/// Log for a server (configuration and lifecycle messages).
pub fn server(s: *const ap::server_rec, level: Level, msg: &str) {
    let msg = c_message(msg);
    // SAFETY: `s` is a server_rec from httpd or NULL (allowed: the main server's log is used).
    unsafe {
        ap::ap_log_error_(
            c"mod_shield".as_ptr(),
            line!() as c_int,
            module_index(),
            code(level),
            0,
            s,
            c"%s".as_ptr(),
            msg.as_ptr(),
        );
    }
}

/// Log without a server at hand (panics caught by the guard).
pub fn global(level: Level, msg: &str) {
    server(ptr::null(), level, msg);
}
