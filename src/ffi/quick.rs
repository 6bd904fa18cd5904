//! Refusing an answer mod_cache's quick handler is serving. httpd has chosen no handler and
//! sent nothing yet: mod_cache runs the insert_filter hook, then feeds the cached body through
//! the filter chain. The refusal filter sits below mod_cache's CACHE_OUT (which restores the
//! cached status and body): it drops that body and sends httpd's error response for the
//! refusal's status instead, so not a byte of the cached page leaves.
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};

use apache_sys as ap;

use super::guard::guard;
use super::req::Req;

/// The registered filter (NULL until register_hooks ran).
static FILTER: AtomicPtr<ap::ap_filter_rec_t> = AtomicPtr::new(std::ptr::null_mut());

/// Below CACHE_OUT (a content-set filter) and above the protocol filters that write the
/// status line and headers.
const FILTER_TYPE: ap::ap_filter_type = ap::ap_filter_type_AP_FTYPE_CONTENT_SET + 5;

/// Registers the refusal filter (from register_hooks).
pub fn register() {
    // SAFETY: called while httpd registers hooks (single-threaded); the name and function are
    // 'static.
    let rec = unsafe {
        ap::ap_register_output_filter(
            c"SHIELD_REFUSE_CACHED".as_ptr(),
            Some(refusal_filter),
            None,
            FILTER_TYPE,
        )
    };
    FILTER.store(rec, Ordering::Relaxed);
}

/// Puts the refusal filter on `req`'s response, carrying the refusal's status.
pub fn refuse_cached(req: &Req, status: c_int) {
    let rec = FILTER.load(Ordering::Relaxed);
    if rec.is_null() {
        return;
    }
    // SAFETY: the live request and its connection; the status travels as the filter's
    // context pointer (an integer, never dereferenced).
    unsafe {
        ap::ap_add_output_filter_handle(
            rec,
            status as isize as *mut c_void,
            req.raw(),
            (*req.raw()).connection,
        );
    }
}

unsafe extern "C" fn refusal_filter(
    f: *mut ap::ap_filter_t,
    bb: *mut ap::apr_bucket_brigade,
) -> ap::apr_status_t {
    guard("refusal filter", 0, || {
        // SAFETY: httpd's live filter and brigade for this call; f->r is its live request.
        // The filter removes itself before sending the error response, which then takes the
        // chain below it.
        unsafe {
            let r = (*f).r;
            let status = (*f).ctx as isize as c_int;
            ap::apr_brigade_cleanup(bb.cast());
            ap::ap_remove_output_filter(f);
            (*r).status = status;
            (*r).status_line = std::ptr::null();
            ap::ap_send_error_response(r, 0);
        }
        0
    })
}
