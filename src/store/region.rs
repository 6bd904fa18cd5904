//! The shared mapping itself: `MAP_SHARED | MAP_ANONYMOUS`, so children forked after it was
//! made see the same pages (memmap2's `map_anon` is `MAP_PRIVATE` and would not be shared), or
//! a file mapped `MAP_SHARED` (memmap2's `MmapRaw`, which never hands out a Rust slice of
//! memory other processes write to), so the tables outlive the server.

use memmap2::{MmapOptions, MmapRaw};
use std::fs::File;
use std::io;
#[cfg(not(target_arch = "x86_64"))]
use std::sync::atomic::Ordering;
use std::sync::atomic::{AtomicU32, AtomicU64};

/// Owns one shared mapping (anonymous, or of a file); dropping it unmaps it (in this process
/// only: other processes that inherited the mapping keep theirs).
pub struct Region {
    ptr: *mut u8,
    len: usize,
    /// The file mapping, when there is one (it unmaps itself); `None`: anonymous, or taken
    /// back with `from_raw` (unmapped with `munmap`).
    file: Option<MmapRaw>,
}

// SAFETY: the mapping is plain memory owned by this value; every access to its contents goes
// through atomics (see `u64_at`), so sharing or sending it between threads cannot race in the
// Rust sense.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Region {
    /// Maps `len` zeroed bytes shared with future children.
    pub fn new(len: usize) -> io::Result<Region> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty region"));
        }
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Region {
            ptr: ptr.cast(),
            len,
            file: None,
        })
    }

    /// Maps the first `len` bytes of `file` shared (`MAP_SHARED`, read-write); the file must
    /// already be that long (a shorter file would fault on access past its end).
    pub fn map_file(file: &File, len: usize) -> io::Result<Region> {
        check_file_len(file, len)?;
        let map = MmapOptions::new().len(len).map_raw(file)?;
        Ok(Region {
            ptr: map.as_mut_ptr(),
            len,
            file: Some(map),
        })
    }

    /// Maps the first `len` bytes of `file` copy-on-write (`MAP_PRIVATE`) for a reader that
    /// may not write the file (opened read-only): its pages show the file until this process
    /// writes one (a lock word, a counter), which then becomes its own copy. Nothing written
    /// here ever reaches the file or another process.
    pub fn map_file_private(file: &File, len: usize) -> io::Result<Region> {
        check_file_len(file, len)?;
        // SAFETY: memmap2 marks this unsafe because another process may change the file under
        // a Rust slice; the mapping is turned into a raw one at once and, like every region,
        // only ever read through atomics (see `u64_at`), never as a slice.
        let map: MmapRaw = unsafe { MmapOptions::new().len(len).map_copy(file)? }.into();
        Ok(Region {
            ptr: map.as_mut_ptr(),
            len,
            file: Some(map),
        })
    }

    /// Whether this is a file mapping.
    pub fn is_file(&self) -> bool {
        self.file.is_some()
    }

    /// Writes a file mapping back to its file (`msync`); a no-op for anonymous memory.
    pub fn flush(&self) -> io::Result<()> {
        match &self.file {
            Some(map) => map.flush(),
            None => Ok(()),
        }
    }

    /// Copies `bytes` to offset `off` of a mapping that no other process or thread can see
    /// yet (a fresh private copy being filled): `&mut self` proves nothing borrows it.
    pub(crate) fn fill_private(&mut self, off: usize, bytes: &[u8]) {
        assert!(
            off <= self.len && bytes.len() <= self.len - off,
            "fill outside the region"
        );
        // SAFETY: in bounds (checked); `&mut self` means no reference into the mapping exists
        // in this process, and callers only fill mappings they have not shared.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(off), bytes.len()) }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Gives up ownership without unmapping (e.g. to keep the mapping in httpd's retained
    /// data across a graceful restart).
    pub fn into_raw(self) -> (*mut u8, usize) {
        let mut me = std::mem::ManuallyDrop::new(self);
        // The mapping stays: its new owner unmaps it with `munmap` (see `Drop`).
        std::mem::forget(me.file.take());
        (me.ptr, me.len)
    }

    /// Takes ownership back.
    ///
    /// # Safety
    /// `ptr`/`len` must come from [`Region::into_raw`] of a mapping that is still mapped in
    /// this process and not owned by any other `Region`.
    pub unsafe fn from_raw(ptr: *mut u8, len: usize) -> Region {
        Region {
            ptr,
            len,
            file: None,
        }
    }

    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// The 8-byte word at `off`.
    ///
    /// Callers pass offsets computed from a `Geometry` that was checked against `len` when the
    /// `Store` was built, so they are in bounds and 8-aligned (the mapping is page-aligned).
    #[inline]
    pub(crate) fn u64_at(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= self.len);
        // SAFETY: in bounds and aligned (above); the mapping lives as long as `self`; the
        // memory is only ever accessed atomically, by this and other processes.
        unsafe { AtomicU64::from_ptr(self.ptr.add(off).cast()) }
    }

    /// Hints the CPU to start loading the cache line at `off` (no effect on correctness).
    #[inline]
    pub(crate) fn prefetch(&self, off: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            let ptr = self.ptr.wrapping_add(off.min(self.len.saturating_sub(1)));
            // SAFETY: a prefetch is only a hint: it never faults and reads nothing into Rust.
            #[allow(unused_unsafe)]
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    ptr.cast::<i8>(),
                );
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = off;
    }

    /// Which of the 16 u32 words from `off` (64 bytes, 64-aligned, same contract as
    /// `u64_at`) equal `value`, as a bit mask (bit `i`: the word at `off + 4 * i`). On x86_64
    /// four aligned 16-byte loads and SSE2 compares (in assembly: the loads of shared words
    /// stay outside Rust's memory model, like the atomics elsewhere; each 4-byte lane of an
    /// aligned load is read whole): 14 instructions instead of 16 compares and branches.
    #[inline(always)]
    pub(crate) fn lanes_equal(&self, off: usize, value: u32) -> u32 {
        debug_assert!(off.is_multiple_of(64) && off + 64 <= self.len);
        #[cfg(target_arch = "x86_64")]
        {
            let mask: u32;
            // SAFETY: `off` is in bounds and 64-aligned (the caller's contract, as for
            // u64_at); the mapping is page-aligned, so the four loads are aligned. The
            // assembly reads those 64 bytes and writes only its registers.
            unsafe {
                std::arch::asm!(
                    "movd {want}, {value:e}",
                    "pshufd {want}, {want}, 0",
                    "movdqa {a}, xmmword ptr [{p}]",
                    "pcmpeqd {a}, {want}",
                    "movdqa {b}, xmmword ptr [{p} + 16]",
                    "pcmpeqd {b}, {want}",
                    "packssdw {a}, {b}",
                    "movdqa {b}, xmmword ptr [{p} + 32]",
                    "pcmpeqd {b}, {want}",
                    "movdqa {c}, xmmword ptr [{p} + 48]",
                    "pcmpeqd {c}, {want}",
                    "packssdw {b}, {c}",
                    "packsswb {a}, {b}",
                    "pmovmskb {mask:e}, {a}",
                    p = in(reg) self.ptr.add(off),
                    value = in(reg) value,
                    mask = lateout(reg) mask,
                    want = out(xmm_reg) _,
                    a = out(xmm_reg) _,
                    b = out(xmm_reg) _,
                    c = out(xmm_reg) _,
                    options(readonly, nostack, preserves_flags),
                );
            }
            mask
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            (0..16).fold(0, |acc, i| {
                acc | u32::from(self.u32_at(off + 4 * i).load(Ordering::Relaxed) == value) << i
            })
        }
    }

    /// The 4-byte word at `off` (same contract as `u64_at`, 4-aligned).
    #[inline]
    pub(crate) fn u32_at(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off.is_multiple_of(4) && off + 4 <= self.len);
        // SAFETY: as for `u64_at`.
        unsafe { AtomicU32::from_ptr(self.ptr.add(off).cast()) }
    }

    /// The byte at `off` (tests use it to scribble on records).
    #[cfg(test)]
    pub(crate) fn u8_at(&self, off: usize) -> &std::sync::atomic::AtomicU8 {
        assert!(off < self.len, "offset outside the region");
        // SAFETY: in bounds (checked); alignment 1; accessed atomically only.
        unsafe { std::sync::atomic::AtomicU8::from_ptr(self.ptr.add(off)) }
    }
}

/// A file mapping of `len` bytes must be non-empty and within the file (a shorter file would
/// fault on access past its end).
fn check_file_len(file: &File, len: usize) -> io::Result<()> {
    if len == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty region"));
    }
    if file.metadata()?.len() < len as u64 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file shorter than the region",
        ));
    }
    Ok(())
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            return; // MmapRaw unmapped itself
        }
        // SAFETY: we own the mapping (new/from_raw contract) and nothing borrows it anymore.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("file", &self.file.is_some())
            .finish()
    }
}
