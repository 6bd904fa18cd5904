//! `SetHandler shield-handler`: the status page. Rendering is `crate::render` (plain Rust);
//! this only checks the handler name and method and writes the bytes.
use std::ffi::c_int;

use apache_sys as ap;

use super::lifecycle::{now, store};
use super::req::Req;
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
    // SAFETY: httpd's live request for this call.
    unsafe {
        super::req::hook(
            "shield-handler",
            r,
            ap::HTTP_INTERNAL_SERVER_ERROR as c_int,
            status_handler,
        )
    }
}

/// The handler of a request whose handler name starts with "shield-".
fn status_handler(req: &Req) -> c_int {
    let Some(name) = req.handler() else {
        return ap::DECLINED as c_int;
    };
    if name == super::challenge::HANDLER {
        return super::challenge::handler(req);
    }
    if name == super::challenge::PAGE_HANDLER {
        return super::challenge::page_handler(req);
    }
    if name != c"shield-handler" {
        return ap::DECLINED as c_int;
    }
    if !req.is_get() {
        return ap::HTTP_METHOD_NOT_ALLOWED as c_int;
    }
    let (Some(server), Some(dir)) = (req.server(), req.dir()) else {
        return ap::HTTP_INTERNAL_SERVER_ERROR as c_int;
    };
    let format = Format::from_query(req.args().as_deref());
    let shared = super::farm::farm().map(|f| crate::remote::SharedTier {
        label: f.spec().label.clone(),
        down_since: f.health().down_since(),
        failures: f.health().failures(),
        stats: crate::farm::Farm::stats(f.health()),
    });
    let now = now();
    // The under-attack switch steps on counted requests; after a flood there may be none, so a
    // look at the page (a Prometheus scrape) steps it too, and the page is never stale.
    if let (Some(m), Some(st)) = (crate::metrics::global(), store()) {
        if m.attack_due(now) {
            super::hooks::periodic(req, st, server, now);
        }
    }
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
    req.set_content_type(format.content_type());
    if !req.header_only() {
        req.write(page.as_bytes());
    }
    ap::OK as c_int
}
