//! One sub-cache: lock, counters, tags and 16 records; lookup, victim choice and repair.
//! Everything here except `has_block_tag`, `peek` and the counters runs under the sub-cache lock;
//! a [`Locked`] is a sub-cache with its lock held.
#![forbid(unsafe_code)]

use super::layout::*;
use super::lock::Held;
use super::record::{Fields, Rec};
use super::region::Region;
use super::Area;
use std::ops::Deref;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The two halves of a sub-cache's repairs word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repair {
    /// Corrupt records dropped (low half).
    Dropped = 0,
    /// Locks taken over from dead holders (high half).
    Steals = 1,
}

/// How a slot was obtained for a new record (drives the statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reclaim {
    /// Empty, or holding a corrupt record that was dropped.
    Empty,
    /// Its record had expired.
    Expired,
    /// A live record was evicted (a site or page record, or a remembered block).
    Evicted,
    /// An active block was evicted (every slot held one).
    EvictedActive,
}

/// A sub-cache whose lock the caller holds (released on drop). The store's operations that
/// write records take one (`Store::add_held`, `reset_held`, `start_block_held`), so none of
/// them can run without the lock.
pub struct Locked<'r> {
    sub: Sub<'r>,
    held: Held<'r>,
}

impl<'r> Locked<'r> {
    pub fn new(sub: Sub<'r>, held: Held<'r>) -> Locked<'r> {
        Locked { sub, held }
    }

    /// The ident the lock was taken with (nested locks of one decision reuse it).
    pub fn ident(&self) -> u64 {
        self.held.ident()
    }

    /// A second handle on this held sub-cache, for another record of the same decision in
    /// it: dropping it releases nothing (see [`Held::alias`]).
    #[inline(always)]
    pub fn alias(&self) -> Locked<'r> {
        Locked {
            sub: self.sub,
            held: self.held.alias(),
        }
    }
}

impl<'r> Deref for Locked<'r> {
    type Target = Sub<'r>;

    fn deref(&self) -> &Sub<'r> {
        &self.sub
    }
}

#[derive(Clone, Copy)]
pub struct Sub<'r> {
    region: &'r Region,
    base: usize,
}

/// The tag stored for an id: 32 bits of it, never 0 (0 marks an empty slot).
#[inline]
pub fn tag_of(id: [u64; 2]) -> u32 {
    id[0] as u32 | 1
}

/// The bit of a tag in the sub-cache's tag summary (its top 6 bits pick one of 64).
#[inline]
fn summary_bit(tag: u32) -> u64 {
    1 << (tag >> 26)
}

impl<'r> Sub<'r> {
    pub fn new(region: &'r Region, base: usize) -> Sub<'r> {
        Sub { region, base }
    }

    /// The sub-cache's offset in the region.
    #[cfg(test)]
    pub fn base(&self) -> usize {
        self.base
    }

    /// Starts loading the tag line while the caller takes the lock (other line).
    #[inline]
    pub fn prefetch_tags(&self) {
        self.region.prefetch(self.base + CONTROL_BYTES);
    }

    #[inline]
    pub fn lock_word(&self) -> &'r AtomicU64 {
        self.region.u64_at(self.base + C_LOCK)
    }

    /// Adds 1 to a statistic, by the lock holder: a plain load and store (no locked
    /// read-modify-write on the hot path), exact because every writer of these counters
    /// holds the lock, except the lock-free lookups, which use [`Sub::bump_unlocked`] on
    /// counters no lock holder writes (the block area's hits and misses).
    #[inline]
    pub fn bump(&self, counter: usize) {
        let c = self.region.u64_at(self.base + counter);
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// Adds 1 to a u32 counter of the region header (rare events; an atomic add).
    #[inline]
    pub fn bump_header(&self, offset: usize) {
        self.region.u32_at(offset).fetch_add(1, Ordering::Relaxed);
    }

    /// Adds 1 to a statistic without holding the lock (an atomic add).
    #[inline]
    pub fn bump_unlocked(&self, counter: usize) {
        self.region
            .u64_at(self.base + counter)
            .fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn counter(&self, counter: usize) -> u64 {
        self.region
            .u64_at(self.base + counter)
            .load(Ordering::Relaxed)
    }

    #[inline]
    fn tag(&self, slot: usize) -> &'r AtomicU32 {
        self.region.u32_at(self.base + tag_offset(slot))
    }

    #[inline]
    pub fn rec(&self, slot: usize) -> Rec<'r> {
        Rec::new(self.region, self.base, slot)
    }

    /// The control line's last word: in the block area the tag summary, in the site and
    /// page areas the occupied slots (see `layout.rs`).
    #[inline]
    fn summary(&self) -> &'r AtomicU64 {
        self.region.u64_at(self.base + C_TAGS)
    }

    /// Whether the tag summary rules `tag` out (then no slot carries it). Meaningful in the
    /// block area only, the one whose summaries are kept (see `layout.rs`).
    #[inline]
    fn ruled_out(&self, tag: u32) -> bool {
        self.summary().load(Ordering::Acquire) & summary_bit(tag) == 0
    }

    /// Lock-free, in a block sub-cache: whether any slot carries this tag (a miss here means
    /// "absent" without taking the lock; a hit must be confirmed under the lock). Usually
    /// answered by the tag summary alone.
    #[inline(always)]
    pub fn has_block_tag(&self, tag: u32) -> bool {
        !self.ruled_out(tag) && (0..SLOTS).any(|slot| self.tag(slot).load(Ordering::Acquire) == tag)
    }

    /// The summary of the tags in the slots other than `except`.
    fn summary_without(&self, except: Option<usize>) -> u64 {
        (0..SLOTS)
            .filter(|&slot| Some(slot) != except)
            .map(|slot| self.tag(slot).load(Ordering::Relaxed))
            .filter(|&tag| tag != 0)
            .fold(0, |acc, tag| acc | summary_bit(tag))
    }

    /// The slots whose tag is set, as a bit mask (bit `slot`).
    fn occupied_slots(&self) -> u64 {
        (0..SLOTS)
            .filter(|&slot| self.tag(slot).load(Ordering::Relaxed) != 0)
            .fold(0, |acc, slot| acc | 1 << slot)
    }

    /// Recomputes the control line's last word from the tags (the lock holder, after
    /// clearing a tag; or when a region is taken over from a file): the tag summary of a
    /// block sub-cache, the occupied slots of a site or page sub-cache.
    pub fn resummarize(&self, kind: Area) {
        let word = if kind == Area::Block {
            self.summary_without(None)
        } else {
            self.occupied_slots()
        };
        self.summary().store(word, Ordering::Release);
    }

    /// Whether the record in `slot` is usable for area `kind` (tag set and consistent).
    fn usable(&self, slot: usize, kind: Area) -> bool {
        let tag = self.tag(slot).load(Ordering::Relaxed);
        let rec = self.rec(slot);
        tag != 0 && tag == tag_of(rec.id()) && rec.valid_for(kind)
    }

    /// Frees a slot holding a corrupt record of area `kind`.
    fn drop_slot(&self, slot: usize, kind: Area) {
        self.tag(slot).store(0, Ordering::Relaxed);
        self.rec(slot).set(R_META, 0);
        self.resummarize(kind);
        self.bump_repair(Repair::Dropped);
    }

    /// Frees a slot of area `kind` on purpose (a record forgotten by an administrator): not
    /// counted as a repair. The tag goes first, so a lock-free reader no longer finds it.
    pub fn remove(&self, slot: usize, kind: Area) {
        self.tag(slot).store(0, Ordering::Release);
        self.rec(slot).set(R_META, 0);
        self.resummarize(kind);
    }

    /// Sets the tag summary to all ones (when it cannot be recomputed under the lock).
    pub fn rule_nothing_out(&self) {
        self.summary().store(u64::MAX, Ordering::Release);
    }

    /// Adds 1 to one half of the repairs word (lock holder: load and store, as [`Sub::bump`]).
    #[inline]
    pub fn bump_repair(&self, half: Repair) {
        let c = self.region.u64_at(self.base + C_REPAIRS);
        let one = 1u64 << (half as u32 * 32);
        c.store(
            c.load(Ordering::Relaxed).wrapping_add(one),
            Ordering::Relaxed,
        );
    }

    /// One half of the repairs word.
    pub fn repairs(&self, half: Repair) -> u64 {
        (self.counter(C_REPAIRS) >> (half as u32 * 32)) & u64::from(u32::MAX)
    }

    /// The slots whose tag is `tag`, as a bit mask (bit `slot`), from one look at the tag
    /// line (see [`Region::lanes_equal`]).
    #[inline(always)]
    fn slots_tagged(&self, tag: u32) -> u32 {
        // 64-aligned, as lanes_equal's aligned loads need: the mapping is page-aligned, and
        // the header, every area stride (a multiple of 64, see Geometry) and every
        // sub-cache are multiples of 64 bytes, as is the tag line's offset.
        const {
            assert!(SLOTS == 16);
            assert!(HEADER_BYTES.is_multiple_of(64) && SUBCACHE_BYTES.is_multiple_of(64));
            assert!(tag_offset(0).is_multiple_of(64));
        };
        self.region.lanes_equal(self.base + tag_offset(0), tag)
    }

    /// Slot holding `id`, dropping corrupt records met on the way.
    #[inline(always)]
    pub fn find(&self, id: [u64; 2], kind: Area) -> Option<usize> {
        // (Not the tag summary: it may have been scribbled on, and a record missed here
        // would be inserted a second time.)
        let want = tag_of(id);
        // Slot 0 first, alone: a sub-cache fills from slot 0, so in one that holds few
        // records (most of them, until the area fills) that is where a record is. Only a
        // valid record of this id is taken here; anything else is left to the scan below.
        if self.tag(0).load(Ordering::Relaxed) == want
            && self.rec(0).id() == id
            && self.rec(0).valid_for(kind)
        {
            return Some(0);
        }
        let mut tagged = self.slots_tagged(want);
        while tagged != 0 {
            let slot = tagged.trailing_zeros() as usize;
            tagged &= tagged - 1;
            // The same id: then its tag is consistent, and only the meta can be bad.
            if self.rec(slot).id() == id {
                if self.rec(slot).valid_for(kind) {
                    return Some(slot);
                }
                self.drop_slot(slot, kind);
            } else if !self.usable(slot, kind) {
                self.drop_slot(slot, kind);
            }
        }
        None
    }

    /// Without the lock (fallback when it cannot be had): a copy of the record holding `id`,
    /// if one looks valid. Writes nothing.
    pub fn peek(&self, id: [u64; 2], kind: Area) -> Option<Fields> {
        let want = tag_of(id);
        (0..SLOTS)
            .filter(|&slot| self.tag(slot).load(Ordering::Acquire) == want)
            .map(|slot| self.rec(slot).read())
            .find(|f| f.id == id && f.meta.valid_for(kind))
    }

    /// The slot a new record goes to: empty (or corrupt), else expired, else the lowest
    /// ranked live record (see [`Sub::rank`]).
    pub fn victim(&self, kind: Area, now: i64) -> (usize, Reclaim) {
        if let Some(slot) = self.empty_slot(kind) {
            return (slot, Reclaim::Empty);
        }
        // One pass over the numbers only: a record's numbers may be garbage (scribbled), but
        // they are only compared here, and the chosen slot is overwritten whole; only that
        // one is validated, so a corrupt record still counts as dropped, not evicted.
        let mut best = (0, (true, i64::MAX, i64::MAX));
        let mut expired = false;
        for slot in 0..SLOTS {
            let rec = self.rec(slot);
            if rec.get_i64(R_EXPIRES) <= now {
                (best.0, expired) = (slot, true);
                break;
            }
            let rank = Self::rank(&rec, kind, now);
            if rank < best.1 {
                best = (slot, rank);
            }
        }
        let slot = best.0;
        if !self.usable(slot, kind) {
            self.drop_slot(slot, kind);
            return (slot, Reclaim::Empty);
        }
        let how = match (expired, best.1 .0) {
            (true, _) => Reclaim::Expired,
            (false, true) => Reclaim::EvictedActive,
            (false, false) => Reclaim::Evicted,
        };
        (slot, how)
    }

    /// The first slot with no tag. In a site or page sub-cache the occupied-slots word
    /// answers at once when it says "none" (a flood keeps every sub-cache full); a slot it
    /// calls free is taken only when its tag agrees, else the tags are scanned. (A word
    /// scribbled on can only steer the choice: a record that is overwritten is always
    /// validated or counted, as for any victim.)
    #[inline]
    fn empty_slot(&self, kind: Area) -> Option<usize> {
        if kind != Area::Block {
            let free = !self.summary().load(Ordering::Relaxed) & ((1 << SLOTS) - 1);
            if free == 0 {
                return None;
            }
            let slot = free.trailing_zeros() as usize;
            if self.tag(slot).load(Ordering::Relaxed) == 0 {
                return Some(slot);
            }
        }
        (0..SLOTS).find(|&slot| self.tag(slot).load(Ordering::Relaxed) == 0)
    }

    /// Eviction order of a live record, lowest first: (active block?, then for site and page
    /// records the score and the last use, for a remembered block its last use, for an active
    /// block its end).
    #[inline]
    fn rank(rec: &Rec, kind: Area, now: i64) -> (bool, i64, i64) {
        if kind != Area::Block {
            return (false, rec.get_i64(R_SCORE), rec.get_i64(R_LAST_USED));
        }
        let until = rec.get_i64(R_UNTIL);
        if until > now {
            (true, until, 0)
        } else {
            (false, 0, rec.get_i64(R_LAST_USED))
        }
    }

    /// Writes a whole record into `slot` and publishes it: the tag is cleared first and set
    /// last, so a lock-free `has_block_tag` never reports a half-written record as present. A
    /// block record's bit is in the tag summary before its tag appears (and an evicted
    /// tag's bit goes, unless another tag shares it).
    pub fn put(&self, slot: usize, fields: &Fields) {
        let tag = tag_of(fields.id);
        let old = self.tag(slot).load(Ordering::Relaxed);
        self.tag(slot).store(0, Ordering::Relaxed);
        self.rec(slot).write(fields);
        let word = self.summary().load(Ordering::Relaxed);
        if fields.meta.kind == Some(Area::Block) {
            // The bit is set whatever the mask held before (it may have been scribbled on).
            let others = if old == 0 || old == tag {
                word
            } else {
                self.summary_without(Some(slot))
            };
            self.summary()
                .store(others | summary_bit(tag), Ordering::Relaxed);
        } else if word & 1 << slot == 0 {
            self.summary().store(word | 1 << slot, Ordering::Relaxed);
        }
        self.tag(slot).store(tag, Ordering::Release);
    }

    /// After taking over the lock of a dead holder: drop whatever it left half-written.
    pub fn repair(&self, kind: Area) -> usize {
        let mut dropped = 0;
        for slot in 0..SLOTS {
            if self.tag(slot).load(Ordering::Relaxed) != 0 && !self.usable(slot, kind) {
                self.drop_slot(slot, kind);
                dropped += 1;
            }
        }
        // The dead holder may have stopped between a tag and its bit.
        self.resummarize(kind);
        dropped
    }

    /// Usable records, optionally only those unexpired at `now` (lock-free read).
    pub fn occupied(&self, kind: Area, now: Option<i64>) -> usize {
        (0..SLOTS)
            .filter(|&slot| {
                self.usable(slot, kind)
                    && now.is_none_or(|now| self.rec(slot).get_i64(R_EXPIRES) > now)
            })
            .count()
    }

    /// Copies of the usable records unexpired at `now`.
    pub fn live(&self, kind: Area, now: i64) -> impl Iterator<Item = Fields> + '_ {
        (0..SLOTS).filter_map(move |slot| {
            if !self.usable(slot, kind) {
                return None;
            }
            let fields = self.rec(slot).read();
            (fields.expires > now && fields.meta.valid_for(kind)).then_some(fields)
        })
    }
}
