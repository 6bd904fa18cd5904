//! The request counters' mapping across configuration passes. The parent makes it in the first
//! real pass, before the workers fork, and finds it again at every later pass through httpd's
//! retained data (which outlives an unload and reload of this DSO), so the counters and the
//! last-hour chart survive graceful and full restarts; a stop starts them from zero.
use std::ffi::CStr;

use crate::metrics::{self, Metrics};
use crate::store::Region;

const RETAINED_KEY: &CStr = c"mod_shield.metrics.v1";

#[repr(C)]
struct Retained {
    addr: *mut u8,
    len: usize,
}

/// Install this process's counters, re-attaching to the mapping of an earlier pass.
///
/// # Safety
/// Only from post_config in the parent (single-threaded, before the workers fork).
pub unsafe fn init() -> Result<(), String> {
    if metrics::global().is_some() {
        return Ok(());
    }
    // SAFETY: the retained block lives as long as the parent and is only touched here, in
    // post_config; a non-null address in it came from `Region::into_raw` of a mapping that is
    // still mapped in this process (never unmapped, see below) and owned by nothing else now
    // (the global of the DSO image that made it is gone with that image).
    unsafe {
        let retained = super::lifecycle::retained::<Retained>(RETAINED_KEY);
        if retained.is_null() {
            return Err("cannot keep the request counters across restarts".to_string());
        }
        let found = if (*retained).addr.is_null() {
            None
        } else {
            // A mapping of another layout (a new module version) is unmapped by attach.
            Metrics::attach(Region::from_raw((*retained).addr, (*retained).len))
        };
        let m = match found {
            Some(m) => m,
            None => Metrics::new().map_err(|e| format!("cannot map the request counters: {e}"))?,
        };
        let (addr, len) = m.into_region().into_raw();
        (*retained).addr = addr;
        (*retained).len = len;
        let Some(m) = Metrics::attach(Region::from_raw(addr, len)) else {
            // Unmapped by attach: forget it.
            (*retained).addr = std::ptr::null_mut();
            return Err("request counters: the new mapping has no header".to_string());
        };
        if let Err(m) = metrics::install(m) {
            // Never unmap what the retained data points at.
            let _ = m.into_region().into_raw();
        }
    }
    Ok(())
}
