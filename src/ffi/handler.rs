//! `SetHandler shield-handler`: the status page. Rendering is `crate::render` (plain Rust);
//! this only checks the handler name and method and writes the bytes.
use std::ffi::{c_int, CStr};

use apache_sys as ap;

use super::guard::guard;
use super::lifecycle::{now, store};
use super::server::{DirHolder, ServerHolder};
use crate::render::{self, Format};

/// Whether a handler name starts with "shield-" (both of this module's handlers do).
///
/// # Safety
/// `name` is a NUL-terminated string (httpd's `r->handler`).
unsafe fn starts_shield(name: *const std::ffi::c_char) -> bool {
    const PREFIX: &[u8] = b"shield-";
    // SAFETY: reads stop at the first mismatch, so never past the NUL terminator.
    PREFIX
        .iter()
        .enumerate()
        .all(|(i, &b)| unsafe { *name.add(i) } as u8 == b)
}

pub unsafe extern "C" fn handler(r: *mut ap::request_rec) -> c_int {
    // Every request passes here: other handlers ("text/html", "php-fpm" ...) are told apart
    // by their first bytes, without measuring the string, before the panic barrier (nothing
    // in this test can panic).
    // SAFETY: `r` is NULL or httpd's live request; its handler is NULL or a C string.
    if r.is_null() || unsafe { (*r).handler.is_null() || !starts_shield((*r).handler) } {
        return ap::DECLINED as c_int;
    }
    guard(
        "shield-handler",
        ap::HTTP_INTERNAL_SERVER_ERROR as c_int,
        || unsafe {
            // r->handler is a C string here (tested above).
            if CStr::from_ptr((*r).handler) == super::challenge::HANDLER {
                // SAFETY: httpd's live request for this call.
                return match super::req::Req::from_raw(r) {
                    Some(req) => super::challenge::handler(&req),
                    None => ap::DECLINED as c_int,
                };
            }
            if CStr::from_ptr((*r).handler) != c"shield-handler" {
                return ap::DECLINED as c_int;
            }
            if (*r).method_number != ap::M_GET as c_int {
                return ap::HTTP_METHOD_NOT_ALLOWED as c_int;
            }
            let (Some(server), Some(dir)) = (
                ServerHolder::settings((*r).server),
                DirHolder::of_request(r),
            ) else {
                return ap::HTTP_INTERNAL_SERVER_ERROR as c_int;
            };
            let args = if (*r).args.is_null() {
                None
            } else {
                Some(CStr::from_ptr((*r).args).to_string_lossy())
            };
            let format = Format::from_query(args.as_deref());
            let shared = super::socache::backend().map(|b| crate::remote::SharedTier {
                label: b.label().to_string(),
                down_since: b.health.down_since(),
                failures: b.health.failures(),
            });
            let now = now();
            // The would-be blocks of the last hour.
            let would = super::lifecycle::would_blocks()
                .map(|ring| ring.recent(now, 3_600_000_000))
                .unwrap_or_default();
            let memory_only = super::lifecycle::memory_only();
            let page = render::page(
                format,
                &render::Sources {
                    server,
                    dir,
                    store: store(),
                    shared: shared.as_ref(),
                    memory_only: memory_only.as_deref(),
                    would_blocks: &would,
                    metrics: crate::metrics::global(),
                    now,
                },
            );
            ap::ap_set_content_type(r, format.content_type().as_ptr());
            if (*r).header_only == 0 {
                ap::ap_rwrite(page.as_ptr().cast(), page.len() as c_int, r);
            }
            ap::OK as c_int
        },
    )
}
