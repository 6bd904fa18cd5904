//! The request counters' mapping across configuration passes. The parent makes it in the first
//! real pass, before the workers fork, and finds it again at every later pass through httpd's
//! retained data (which outlives an unload and reload of this DSO), so the counters and the
//! last-hour chart survive graceful and full restarts; a stop starts them from zero.
use std::ffi::CStr;

use super::retained::{retained, Slot};
use crate::metrics::{self, Metrics};

const RETAINED_KEY: &CStr = c"mod_shield.metrics.v1";

/// Why the counters are not mapped (the status page and `?metrics` then show zeros).
#[derive(Debug, thiserror::Error)]
pub(super) enum MetricsError {
    #[error("cannot keep the request counters across restarts (no retained data)")]
    NoRetainedData,
    #[error("cannot map the request counters: {0}")]
    Map(#[from] std::io::Error),
}

/// Install this process's counters: the mapping of an earlier pass, else a new one.
///
/// # Safety
/// Only from post_config in the parent (single-threaded, before the workers fork).
pub(super) unsafe fn init() -> Result<(), MetricsError> {
    if metrics::global().is_some() {
        return Ok(()); // an earlier pass of this DSO image installed them
    }
    // SAFETY: per the contract; this key's block is a `Slot`, used only here.
    let slot = unsafe { retained::<Slot>(RETAINED_KEY) }.ok_or(MetricsError::NoRetainedData)?;
    // A mapping of another layout (a new module version) is unmapped by attach.
    let counters = match slot.take().and_then(Metrics::attach) {
        Some(kept) => kept,
        None => Metrics::new()?,
    };
    // None installed yet (checked above, single-threaded): these are.
    metrics::install(slot.keep(counters));
    Ok(())
}
