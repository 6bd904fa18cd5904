//! Shared mappings the parent keeps across configuration passes, in httpd's retained data.
//!
//! httpd runs post_config again at every graceful or full restart, in the same parent, and may
//! unload and reload this DSO in between (its statics start afresh), while `ap_retained_data`
//! lives as long as the parent. A mapping the workers share (the store, the request counters)
//! is found again there at every pass. Ownership is linear:
//!
//! 1. [`Slot::take`]: the mapping kept by an earlier pass comes out of the slot as an owned
//!    [`Region`] (the slot is empty from then on; dropping the region unmaps it);
//! 2. the caller attaches it (or drops it and maps a new one);
//! 3. [`Slot::keep`]: the holder of the mapping to use is leaked for the rest of the parent's
//!    life and its address noted in the slot, for the next pass's `take`.
//!
//! So a mapping has one owner at every step, and a kept one is never unmapped in the parent.
use std::ffi::CStr;
use std::ptr::{self, NonNull};

use apache_sys as ap;

use crate::metrics::Metrics;
use crate::store::{Region, Store};

/// Something that holds one shared mapping.
pub(super) trait Mapped: Sync + 'static {
    fn region(&self) -> &Region;
}

impl Mapped for Store {
    fn region(&self) -> &Region {
        Store::region(self)
    }
}

impl Mapped for Metrics {
    fn region(&self) -> &Region {
        Metrics::region(self)
    }
}

/// Where one mapping is kept between passes: its address and length, or a null address.
/// (`#[repr(C)]`, two words: the layout older images of this module wrote under the same key.)
#[repr(C)]
pub(super) struct Slot {
    addr: *mut u8,
    len: usize,
}

impl Slot {
    /// The mapping kept by an earlier pass, now owned by the caller alone (the slot is empty).
    pub(super) fn take(&mut self) -> Option<Region> {
        let addr = std::mem::replace(&mut self.addr, ptr::null_mut());
        // SAFETY: a non-null address was written by `keep` (retained data starts zeroed, and
        // nothing else writes a slot), from the region of a holder leaked for the parent's
        // life: still mapped, and owned by no `Region` now that the slot is empty. (A holder
        // of this DSO image still reachable from its statics is forgotten before its slot is
        // taken: see `lifecycle::attach_or_create`.)
        (!addr.is_null()).then(|| unsafe { Region::from_raw(addr, self.len) })
    }

    /// Keeps `holder`'s mapping for later passes: the holder is leaked (so nothing in this
    /// process unmaps the mapping again) and returned for this pass to publish.
    pub(super) fn keep<T: Mapped>(&mut self, holder: T) -> &'static T {
        let holder: &'static T = Box::leak(Box::new(holder));
        let region = holder.region();
        self.addr = region.as_ptr().cast_mut();
        self.len = region.len();
        holder
    }
}

/// The parent's block of retained data under `key`, created zeroed on first use; `None` only
/// if httpd cannot make it.
///
/// # Safety
/// Parent process, post_config (single-threaded), and no other reference to the block is
/// alive; every user of one key uses one `T`, a `#[repr(C)]` struct for which all-zero bytes
/// are a valid value.
#[expect(
    clippy::mut_from_ref,
    reason = "the block is httpd's: it borrows nothing from the key"
)]
pub(super) unsafe fn retained<T>(key: &'static CStr) -> Option<&'static mut T> {
    // SAFETY: per the contract; httpd returns NULL or a zeroed block of the requested size,
    // aligned for any type (pool memory), that lives as long as the parent.
    unsafe {
        let mut found = ap::ap_retained_data_get(key.as_ptr()).cast::<T>();
        if found.is_null() {
            found = ap::ap_retained_data_create(key.as_ptr(), std::mem::size_of::<T>() as _)
                .cast::<T>();
        }
        NonNull::new(found).map(|mut p| p.as_mut())
    }
}
