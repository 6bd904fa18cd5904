//! Request counters for `?metrics` and the status page's last-hour chart, in a small shared
//! mapping of their own that the parent makes before the workers fork.
//!
//! Layout: a 64-byte header (magic, length), then [`STRIPES`] stripes. A stripe is one line of
//! totals (counted, refused by site/page, blocks started by site/page, would-blocks) followed by
//! [`MINUTES`] per-minute buckets of four words (minute number + 1 with 0 = empty, counted,
//! refused, blocks started). Each thread writes mostly its own stripe (chosen from its process
//! and a per-process thread number; the per-request count from the connection's id, which
//! names the worker that accepted it, so the request path needs no thread-local lookup), so no
//! cache line is written by every worker; readers sum all stripes.
//!
//! A bucket holds one minute; the ring slot of minute `m` is `m % 60`. The first write of a
//! new minute switches the slot's minute by CAS and then zeroes its counts. Small race at the
//! boundary, accepted for a display: an increment by another thread of the same stripe in the
//! instant between the switch and the zeroing is lost, and a reader in that instant may see the
//! previous hour's counts in the new minute. Totals are plain relaxed counters (never lost).
// Only the fork test needs unsafe.
#![deny(unsafe_code)]

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::store::{Counter, Micros, Region};

/// Stripes of counters (threads map onto them; more threads than stripes share).
pub const STRIPES: usize = 32;
/// Minutes kept per stripe: the last hour.
pub const MINUTES: usize = 60;
const MINUTE: Micros = 60_000_000;
const HEADER: usize = 128;
const TOTALS: usize = 64;
const BUCKET: usize = 32;
const STRIPE: usize = TOTALS + MINUTES * BUCKET; // 1984 = 31 lines
/// Size of the mapping.
pub const BYTES: usize = HEADER + STRIPES * STRIPE;
const MAGIC: u64 = u64::from_le_bytes(*b"mshmet\x00\x03");
// Header words after magic and length: the store-pressure check (see `crate::pressure`).
// The next check is read by every counted request (a line written once per check, so it
// stays shared-clean); the mark is written only by the one thread that won that check.
const P_NEXT_CHECK: usize = 16;
const P_MARK_AT: usize = 24;
const P_MARK_LIVE: usize = 32;
const P_MARK_BLOCKS: usize = 40;
const P_WARNED: usize = 48;
// The second header line: the `DOSUnderAttack auto` switch (see `crate::attack`). The next
// step is read by every counted request and the state word by every request the mode could
// apply to; the rest is written only by the one thread that won that second's step.
const A_NEXT_STEP: usize = 64;
/// bit 0: the switch is on; bits 8..10: the run-time override; bits 16..24: busy percent
/// of the last sample, 255 none.
const A_STATE: usize = 72;
const A_ABOVE_SINCE: usize = 80;
const A_QUIET_SINCE: usize = 88;
const A_CHANGED_AT: usize = 96;
const A_RATE: usize = 104;
const A_LAST_AT: usize = 112;
const A_LAST_COUNTED: usize = 120;
/// How often the store's eviction counters are looked at (the warning itself is at most
/// once a minute).
pub const PRESSURE_CHECK_EVERY: Micros = 10_000_000;

// Totals line, word offsets.
const T_COUNTED: usize = 0;
const T_REFUSED_SITE: usize = 8;
const T_REFUSED_PAGE: usize = 16;
const T_STARTED_SITE: usize = 24;
const T_STARTED_PAGE: usize = 32;
const T_WOULD: usize = 40;
// Bucket, word offsets.
const B_MINUTE: usize = 0;
const B_COUNTED: usize = 8;
const B_REFUSED: usize = 16;
const B_STARTED: usize = 24;

/// The eviction totals of the last pressure mark, and when the last warning was logged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PressureMark {
    /// When the totals were taken (0: never).
    pub at: Micros,
    pub live_evicted: u64,
    pub blocks_evicted: u64,
    /// When the last warning was logged (0: never).
    pub warned: Micros,
}

/// Counts since the mapping was made (it survives graceful restarts; see `ffi::metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub counted: u64,
    pub refused_site: u64,
    pub refused_page: u64,
    pub started_site: u64,
    pub started_page: u64,
    pub would_blocks: u64,
}

impl Totals {
    pub fn refused(&self) -> u64 {
        self.refused_site.saturating_add(self.refused_page)
    }

    pub fn started(&self) -> u64 {
        self.started_site.saturating_add(self.started_page)
    }
}

/// One minute of the last hour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Minute {
    /// Start of the minute (µs since the epoch).
    pub start: Micros,
    pub counted: u64,
    pub refused: u64,
    pub blocks_started: u64,
}

pub struct Metrics {
    region: Region,
}

fn stripe_offset(stripe: usize) -> usize {
    HEADER + stripe * STRIPE
}

fn bucket_offset(stripe: usize, minute: i64) -> usize {
    stripe_offset(stripe) + TOTALS + (minute.rem_euclid(MINUTES as i64) as usize) * BUCKET
}

/// This thread's stripe: a hash of the pid plus a per-process thread number, so the threads
/// of one process spread over different stripes and processes start at different ones.
fn my_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: Cell<Option<usize>> = const { Cell::new(None) };
    }
    MINE.with(|mine| {
        if let Some(s) = mine.get() {
            return s;
        }
        let pid = u64::from(std::process::id());
        let spread = (pid.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize;
        let s = spread.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % STRIPES;
        mine.set(Some(s));
        s
    })
}

/// The stripe for `hint`, a number that mostly differs between workers running at once
/// (a connection id: consecutive for the worker slots of a child). Fibonacci hashing: the
/// product's top bits, which spread consecutive numbers over different stripes.
#[inline(always)]
fn stripe_of(hint: u64) -> usize {
    const { assert!(STRIPES.is_power_of_two()) };
    (hint.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - STRIPES.trailing_zeros())) as usize
}

impl Metrics {
    /// A fresh zeroed mapping shared with children forked later.
    pub fn new() -> std::io::Result<Metrics> {
        let region = Region::new(BYTES)?;
        region.u64_at(8).store(BYTES as u64, Ordering::Relaxed);
        region.u64_at(0).store(MAGIC, Ordering::Release);
        Ok(Metrics { region })
    }

    /// Re-uses a mapping made by [`Metrics::new`] (kept across a restart); `None` when it is
    /// not one (then it is dropped, i.e. unmapped in this process).
    pub fn attach(region: Region) -> Option<Metrics> {
        let ok = region.len() == BYTES
            && region.u64_at(0).load(Ordering::Acquire) == MAGIC
            && region.u64_at(8).load(Ordering::Relaxed) == BYTES as u64;
        ok.then_some(Metrics { region })
    }

    pub fn into_region(self) -> Region {
        self.region
    }

    /// The mapping the counters live in.
    pub fn region(&self) -> &Region {
        &self.region
    }

    fn add(&self, off: usize) {
        self.region.u64_at(off).fetch_add(1, Ordering::Relaxed);
    }

    /// Add one to `field` of the current minute's bucket of `stripe`.
    #[inline(always)]
    fn bump_minute(&self, stripe: usize, now: Micros, field: usize) {
        // Before the epoch: no minute (as `div_euclid` would put it below 0).
        let Ok(now) = u64::try_from(now) else {
            return;
        };
        // Unsigned: the division and remainder by constants without sign fix-ups (the
        // bucket_offset of this minute).
        let minute = now / MINUTE as u64;
        let o = stripe_offset(stripe) + TOTALS + (minute % MINUTES as u64) as usize * BUCKET;
        let tag = minute + 1;
        let word = self.region.u64_at(o + B_MINUTE);
        let seen = word.load(Ordering::Acquire);
        if seen != tag
            && word
                .compare_exchange(seen, tag, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for f in [B_COUNTED, B_REFUSED, B_STARTED] {
                self.region.u64_at(o + f).store(0, Ordering::Relaxed);
            }
        }
        self.add(o + field);
    }

    /// A request went through counting (fixups), on the stripe of `hint` (see
    /// [`counted`]). True when this request is the one of all workers to run this second's
    /// periodic work: the under-attack switch's step, and (every [`PRESSURE_CHECK_EVERY`],
    /// see [`Metrics::pressure_due`]) the store-pressure check.
    #[inline(always)]
    pub fn counted(&self, now: Micros, hint: u64) -> bool {
        let s = stripe_of(hint);
        self.add(stripe_offset(s) + T_COUNTED);
        self.bump_minute(s, now, B_COUNTED);
        self.attack_due(now)
    }

    /// Whether the under-attack switch is due a step at `now` (one caller a second).
    #[inline(always)]
    pub fn attack_due(&self, now: Micros) -> bool {
        let next = self.region.u64_at(A_NEXT_STEP);
        let due = next.load(Ordering::Relaxed);
        (now as u64) >= due && self.claim(A_NEXT_STEP, due, now, crate::attack::CHECK_EVERY)
    }

    /// Whether requests are under attack now: (the `auto` switch, the run-time override).
    #[inline(always)]
    pub fn attack_state(&self) -> (bool, crate::attack::Override) {
        let w = self.attack_word();
        (
            w & 1 != 0,
            crate::attack::Override::from_bits((w >> 8) as u8 & 3),
        )
    }

    /// The switch and override bits alone: 0 when the switch is off and nothing is forced
    /// (the request path's common case, one load).
    #[inline(always)]
    pub fn attack_word(&self) -> u64 {
        self.region.u64_at(A_STATE).load(Ordering::Relaxed) & 0xffff
    }

    /// The switch as the last step left it.
    pub fn attack_switch(&self) -> crate::attack::Switch {
        let w = |off: usize| self.region.u64_at(off).load(Ordering::Relaxed);
        let state = w(A_STATE);
        let busy = (state >> 16) as u8;
        crate::attack::Switch {
            on: state & 1 != 0,
            above_since: w(A_ABOVE_SINCE) as i64,
            quiet_since: w(A_QUIET_SINCE) as i64,
            changed_at: w(A_CHANGED_AT) as i64,
            rate: w(A_RATE),
            busy: (busy != u8::MAX).then_some(busy),
            last: crate::attack::Sample {
                at: w(A_LAST_AT) as i64,
                counted: w(A_LAST_COUNTED),
            },
        }
    }

    /// Only the winner of a step writes the switch (and the override it read).
    pub fn set_attack_switch(&self, sw: &crate::attack::Switch, forced: crate::attack::Override) {
        let w = |off: usize, v: u64| self.region.u64_at(off).store(v, Ordering::Relaxed);
        w(A_ABOVE_SINCE, sw.above_since as u64);
        w(A_QUIET_SINCE, sw.quiet_since as u64);
        w(A_CHANGED_AT, sw.changed_at as u64);
        w(A_RATE, sw.rate);
        w(A_LAST_AT, sw.last.at as u64);
        w(A_LAST_COUNTED, sw.last.counted);
        let state = u64::from(sw.on)
            | u64::from(forced.to_bits()) << 8
            | u64::from(sw.busy.unwrap_or(u8::MAX)) << 16;
        w(A_STATE, state);
    }

    /// Whether a store-pressure check is due at `now`; exactly one caller of all workers
    /// gets `true` per [`PRESSURE_CHECK_EVERY`] (it moved the next check on by CAS).
    #[inline(always)]
    pub fn pressure_due(&self, now: Micros) -> bool {
        let next = self.region.u64_at(P_NEXT_CHECK);
        let due = next.load(Ordering::Relaxed);
        (now as u64) >= due && self.claim(P_NEXT_CHECK, due, now, PRESSURE_CHECK_EVERY)
    }

    /// Moves the next check at `off` from `due` to `every` after `now`; true for the one
    /// caller whose CAS did it.
    #[cold]
    fn claim(&self, off: usize, due: u64, now: Micros, every: Micros) -> bool {
        let then = (now as u64).saturating_add(every as u64);
        self.region
            .u64_at(off)
            .compare_exchange(due, then, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    pub fn pressure_mark(&self) -> PressureMark {
        let w = |off: usize| self.region.u64_at(off).load(Ordering::Relaxed);
        PressureMark {
            at: w(P_MARK_AT) as i64,
            live_evicted: w(P_MARK_LIVE),
            blocks_evicted: w(P_MARK_BLOCKS),
            warned: w(P_WARNED) as i64,
        }
    }

    /// Only the winner of a check writes the mark.
    pub fn set_pressure_mark(&self, m: PressureMark) {
        let w = |off: usize, v: u64| self.region.u64_at(off).store(v, Ordering::Relaxed);
        w(P_MARK_AT, m.at as u64);
        w(P_MARK_LIVE, m.live_evicted);
        w(P_MARK_BLOCKS, m.blocks_evicted);
        w(P_WARNED, m.warned as u64);
    }

    /// A request was refused, by a block of `rule`.
    pub fn refused(&self, rule: Counter, now: Micros) {
        let s = my_stripe();
        let t = match rule {
            Counter::Site => T_REFUSED_SITE,
            Counter::Page => T_REFUSED_PAGE,
        };
        self.add(stripe_offset(s) + t);
        self.bump_minute(s, now, B_REFUSED);
    }

    /// A block of `rule` started.
    pub fn block_started(&self, rule: Counter, now: Micros) {
        let s = my_stripe();
        let t = match rule {
            Counter::Site => T_STARTED_SITE,
            Counter::Page => T_STARTED_PAGE,
        };
        self.add(stripe_offset(s) + t);
        self.bump_minute(s, now, B_STARTED);
    }

    /// Monitor mode: a block would have started.
    pub fn would_block(&self) {
        self.add(stripe_offset(my_stripe()) + T_WOULD);
    }

    pub fn totals(&self) -> Totals {
        let sum = |field: usize| {
            (0..STRIPES).fold(0u64, |acc, s| {
                acc.saturating_add(
                    self.region
                        .u64_at(stripe_offset(s) + field)
                        .load(Ordering::Relaxed),
                )
            })
        };
        Totals {
            counted: sum(T_COUNTED),
            refused_site: sum(T_REFUSED_SITE),
            refused_page: sum(T_REFUSED_PAGE),
            started_site: sum(T_STARTED_SITE),
            started_page: sum(T_STARTED_PAGE),
            would_blocks: sum(T_WOULD),
        }
    }

    /// The last [`MINUTES`] minutes up to and including the one of `now`, oldest first.
    pub fn last_hour(&self, now: Micros) -> Vec<Minute> {
        let current = now.div_euclid(MINUTE);
        (current - MINUTES as i64 + 1..=current)
            .map(|minute| {
                let mut m = Minute {
                    start: minute.saturating_mul(MINUTE),
                    ..Minute::default()
                };
                if minute < 0 {
                    return m;
                }
                for s in 0..STRIPES {
                    let o = bucket_offset(s, minute);
                    let w = |f: usize| self.region.u64_at(o + f).load(Ordering::Relaxed);
                    if self.region.u64_at(o + B_MINUTE).load(Ordering::Acquire) == minute as u64 + 1
                    {
                        m.counted = m.counted.saturating_add(w(B_COUNTED));
                        m.refused = m.refused.saturating_add(w(B_REFUSED));
                        m.blocks_started = m.blocks_started.saturating_add(w(B_STARTED));
                    }
                }
                m
            })
            .collect()
    }
}

/// The mapping of this server: set once by the parent before the workers fork.
static GLOBAL: OnceLock<&'static Metrics> = OnceLock::new();

/// Make `m` this process's counters; the first call wins, and the installed ones are returned.
pub fn install(m: &'static Metrics) -> &'static Metrics {
    GLOBAL.get_or_init(|| m)
}

#[inline(always)]
pub fn global() -> Option<&'static Metrics> {
    GLOBAL.get().copied()
}

/// Hooks call these; without a mapping they do nothing.
/// A request went through counting; `hint` spreads the writers over the stripes (the
/// request's connection id).
#[inline(always)]
pub fn counted(now: Micros, hint: u64) -> bool {
    match global() {
        Some(m) => m.counted(now, hint),
        None => false,
    }
}

pub fn refused(rule: Counter, now: Micros) {
    if let Some(m) = global() {
        m.refused(rule, now);
    }
}

pub fn block_started(rule: Counter, now: Micros) {
    if let Some(m) = global() {
        m.block_started(rule, now);
    }
}

pub fn would_block() {
    if let Some(m) = global() {
        m.would_block();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Micros = 1_800_000_000_000_000; // a minute boundary (30 000 000 minutes)

    #[test]
    fn layout_is_line_aligned() {
        assert_eq!(STRIPE % 64, 0);
        assert_eq!(HEADER % 64, 0);
        assert_eq!(T0 % MINUTE, 0);
    }

    #[test]
    fn totals_and_minutes_add_up() {
        let m = Metrics::new().unwrap();
        m.counted(T0, 0);
        m.counted(T0 + 1, 0);
        m.refused(Counter::Page, T0 + 2);
        m.block_started(Counter::Site, T0 + MINUTE);
        m.would_block();
        assert_eq!(
            m.totals(),
            Totals {
                counted: 2,
                refused_site: 0,
                refused_page: 1,
                started_site: 1,
                started_page: 0,
                would_blocks: 1,
            }
        );
        let hour = m.last_hour(T0 + MINUTE + 5);
        assert_eq!(hour.len(), MINUTES);
        assert_eq!(hour[MINUTES - 1].start, T0 + MINUTE);
        assert_eq!(hour[MINUTES - 1].blocks_started, 1);
        assert_eq!(hour[MINUTES - 1].counted, 0);
        assert_eq!(
            hour[MINUTES - 2],
            Minute {
                start: T0,
                counted: 2,
                refused: 1,
                blocks_started: 0
            }
        );
        assert!(hour[..MINUTES - 2].iter().all(|x| x.counted == 0));
    }

    #[test]
    fn an_hour_later_the_slot_starts_from_zero() {
        let m = Metrics::new().unwrap();
        for _ in 0..5 {
            m.counted(T0, 0);
        }
        // Same ring slot, 60 minutes later: the old counts are not carried into it.
        let later = T0 + MINUTES as i64 * MINUTE;
        m.counted(later, 0);
        let hour = m.last_hour(later);
        assert_eq!(hour[MINUTES - 1].counted, 1);
        assert_eq!(hour.iter().map(|x| x.counted).sum::<u64>(), 1);
        assert_eq!(m.totals().counted, 6);
        // Minutes older than an hour are not shown even when their slot was not reused.
        m.counted(later + MINUTE, 0);
        assert!(m
            .last_hour(later + 2 * MINUTES as i64 * MINUTE)
            .iter()
            .all(|x| x.counted == 0));
    }

    #[test]
    fn threads_spread_over_stripes_and_nothing_is_lost_within_a_minute() {
        let m = Metrics::new().unwrap();
        let stripes: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8u64)
                .map(|i| {
                    let m = &m;
                    s.spawn(move || {
                        for _ in 0..1000 {
                            m.counted(T0 + 10, i);
                        }
                        my_stripe()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut distinct = stripes.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            8,
            "threads of one process share a stripe: {stripes:?}"
        );
        assert_eq!(m.totals().counted, 8000);
        assert_eq!(m.last_hour(T0 + 20)[MINUTES - 1].counted, 8000);
    }

    #[test]
    fn consecutive_connection_ids_take_different_stripes() {
        let mut stripes: Vec<usize> = (0..16).map(stripe_of).collect();
        stripes.sort_unstable();
        stripes.dedup();
        assert_eq!(stripes.len(), 16);
        assert!((0..10_000).all(|h| stripe_of(h) < STRIPES));
    }

    #[test]
    fn attach_checks_the_header() {
        let m = Metrics::new().unwrap();
        m.counted(T0, 0);
        let again = Metrics::attach(m.into_region()).expect("same layout");
        assert_eq!(again.totals().counted, 1);
        assert!(Metrics::attach(Region::new(BYTES).unwrap()).is_none());
        assert!(Metrics::attach(Region::new(4096).unwrap()).is_none());
    }

    #[test]
    fn shared_with_a_forked_child() {
        let m = Metrics::new().unwrap();
        // SAFETY: the child only writes to the shared mapping and exits without unwinding.
        #[allow(unsafe_code)]
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                m.refused(Counter::Site, T0);
                libc::_exit(0);
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
        }
        assert_eq!(m.totals().refused_site, 1);
        assert_eq!(m.last_hour(T0)[MINUTES - 1].refused, 1);
    }
}
