//! Per-sub-cache lock words in shared memory.
//!
//! A word is `0` when free, else `pid << 32 | waiters bit << 31 | coarse monotonic seconds`.
//! No thread is named: two threads of one process may write the same word, and need not be
//! told apart, because a holder releases only a word that still holds what it wrote, and a
//! word is only ever taken over from a dead process (another pid) or after being held for
//! [`STALE_SECS`] (another stamp), so a taken-over holder never finds its own value there. Why not a mutex: std and parking_lot mutexes use private futexes and
//! process-local wait queues (lost wake-ups across processes) and a dead holder keeps them
//! forever. Here a waiter spins briefly, then sets the waiters bit and sleeps on a
//! process-shared futex on the word's low half (the kernel compares it, so a release between
//! our look and our sleep is never missed); the holder that finds the bit at release wakes
//! every sleeper. A sleeper wakes at least every [`NAP`] to check the owner, and takes over a
//! word whose owner is gone (`ESRCH`, a zombie) or has held it for seconds (a reused pid, a
//! stopped process). Only after [`LOCK_TIMEOUT`] (far longer than any preemption of a live
//! holder on a loaded machine) does it give up, and the caller fails open (and counts it).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// How long an operation waits for a sub-cache before giving up (fail open). A legitimate
/// hold is well under a microsecond of CPU; even a holder preempted on a machine with every
/// core busy runs again within tens of milliseconds.
pub const LOCK_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a look that has a lock-free fallback or only displays (the block check before
/// counting, the status page, shieldctl's listings) waits before going without.
pub const PEEK_TIMEOUT: Duration = Duration::from_millis(2);
/// Longest single futex sleep: how often a sleeper re-checks whether the owner still lives.
const NAP: Duration = Duration::from_millis(5);
/// Busy-wait rounds before sleeping.
const SPINS: u32 = 64;
/// A word held this many coarse seconds (so at least one full second longer) is stale.
const STALE_SECS: u16 = 3;
/// Set in the word by a waiter that is going to sleep: the holder must wake it.
const WAITERS: u64 = 1 << 31;
/// Kept in a [`Held`]'s copy of its ident only, never in a word: the lock was taken over.
/// (A flag bit rather than a field keeps `Held` two words, which the hot path passes in
/// registers.)
const STOLEN: u64 = 1 << 30;
/// Kept in a [`Held`]'s copy of its ident only: a second handle on a lock another `Held` of
/// the same decision holds ([`Held::alias`]); it releases nothing.
const ALIAS: u64 = 1 << 29;

/// This process's pid, cached; forgotten in the child at every `fork` (atfork handler), so a
/// child never locks in its parent's name.
static PID: AtomicU32 = AtomicU32::new(0);
static ATFORK: Once = Once::new();

extern "C" fn forget_pid() {
    PID.store(0, Ordering::Relaxed);
}

/// Registers the fork handler; call before anything can fork (done by `Store` constructors).
pub fn init_process() {
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic (async-signal-safe).
        unsafe {
            libc::pthread_atfork(None, None, Some(forget_pid));
        }
    });
}

fn pid() -> u32 {
    let cached = PID.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    PID.store(pid, Ordering::Relaxed);
    pid
}

fn coarse_secs() -> u16 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and a valid out pointer; served by the vDSO (no syscall).
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts);
    }
    ts.tv_sec as u16
}

/// The word this thread writes into a lock it takes now.
pub fn ident() -> u64 {
    (u64::from(pid()) << 32) | u64::from(coarse_secs())
}

/// A held lock; released on drop (also on unwind).
pub struct Held<'a> {
    word: &'a AtomicU64,
    /// What this holder wrote, with [`STOLEN`] when it took the lock over.
    me: u64,
}

impl<'a> Held<'a> {
    /// The word this holder wrote (its [`ident`]).
    pub fn ident(&self) -> u64 {
        self.me & !(WAITERS | STOLEN | ALIAS)
    }

    /// A second handle on this lock, for a record of the same decision in the same
    /// sub-cache: it shows the lock held, and its drop releases nothing (this one does).
    #[inline(always)]
    pub fn alias(&self) -> Held<'a> {
        Held {
            word: self.word,
            me: (self.me & !STOLEN) | ALIAS,
        }
    }

    /// The previous owner was dead or stale: the protected data may be half-written.
    #[inline(always)]
    pub fn stolen(&self) -> bool {
        self.me & STOLEN != 0
    }

    /// Keeps the lock held forever (test hook: simulates a holder that dies).
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for Held<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if self.me & ALIAS != 0 {
            return;
        }
        let mine = self.me & !STOLEN;
        // The common case, one compare-exchange: still ours, and no sleeper announced.
        if self
            .word
            .compare_exchange(mine, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            release_contended(self.word, mine);
        }
    }
}

/// The rest of a release when the word is not exactly `mine`: a sleeper set the waiters bit
/// (release, then wake them), or a waiter took the lock over (leave it).
#[cold]
#[inline(never)]
fn release_contended(word: &AtomicU64, mine: u64) {
    let mut cur = word.load(Ordering::Relaxed);
    loop {
        // Only if still ours: a waiter may have judged us stale and taken over.
        if cur & !WAITERS != mine {
            return;
        }
        match word.compare_exchange_weak(cur, 0, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => cur = now,
        }
    }
    if cur & WAITERS != 0 {
        futex_wake_all(word);
    }
}

/// The low half of the word, which the futex calls name (little-endian: it comes first).
fn futex_addr(word: &AtomicU64) -> *mut u32 {
    const { assert!(cfg!(target_endian = "little")) };
    word.as_ptr().cast::<u32>()
}

/// Sleeps while the word's low half still reads `expected`, at most `nap`.
fn futex_wait(word: &AtomicU64, expected: u64, nap: Duration) {
    let ts = libc::timespec {
        tv_sec: nap.as_secs() as libc::time_t,
        tv_nsec: nap.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the address is a live, aligned u32 inside a shared mapping that outlives the
    // call; FUTEX_WAIT (not the private variant) keys it by the mapping, so sleepers of every
    // process that maps the region meet on it. The kernel only reads the word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            futex_addr(word),
            libc::FUTEX_WAIT,
            expected as u32,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

#[cold]
#[inline(never)]
fn futex_wake_all(word: &AtomicU64) {
    // SAFETY: as for futex_wait; waking has no effect on memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            futex_addr(word),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Takes the lock, or returns `None` after about `LOCK_TIMEOUT`.
#[inline]
pub fn acquire(word: &AtomicU64) -> Option<Held<'_>> {
    acquire_within(word, LOCK_TIMEOUT)
}

/// Takes the lock, or returns `None` after about `timeout`.
#[inline]
pub fn acquire_within(word: &AtomicU64, timeout: Duration) -> Option<Held<'_>> {
    acquire_as(word, ident(), timeout)
}

/// [`acquire_within`] writing `me`, an [`ident`] this thread took moments ago (the nested
/// locks of one decision share the ident of its first lock: one clock read, not three).
#[inline(always)]
pub fn acquire_as(word: &AtomicU64, me: u64, timeout: Duration) -> Option<Held<'_>> {
    if word
        .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        return Some(Held { word, me });
    }
    acquire_slow(word, me, timeout)
}

#[cold]
fn acquire_slow(word: &AtomicU64, me: u64, timeout: Duration) -> Option<Held<'_>> {
    let my_pid = (me >> 32) as u32;
    let mut started: Option<Instant> = None;
    let mut round: u32 = 0;
    loop {
        let cur = word.load(Ordering::Relaxed);
        if cur == 0 {
            // Every sleeper was woken when the word was released, so none is left behind
            // sleeping on a word taken without the waiters bit.
            if word
                .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Some(Held { word, me });
            }
            continue;
        }
        round = round.saturating_add(1);
        if round < SPINS {
            std::hint::spin_loop();
            continue;
        }
        if owner_gone(cur & !WAITERS, my_pid, coarse_secs())
            && word
                .compare_exchange(cur, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return Some(Held {
                word,
                me: me | STOLEN,
            });
        }
        let t0 = *started.get_or_insert_with(Instant::now);
        let waited = t0.elapsed();
        if waited >= timeout {
            return None;
        }
        // Announce a sleeper, then sleep unless the word changed meanwhile.
        let with_bit = cur | WAITERS;
        if cur == with_bit
            || word
                .compare_exchange(cur, with_bit, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            futex_wait(word, with_bit, NAP.min(timeout - waited));
        }
    }
}

/// Whether the owner recorded in `word` can no longer release it.
fn owner_gone(word: u64, my_pid: u32, now_secs: u16) -> bool {
    // Held for seconds: a live holder never takes that long (reused pid, stopped process or
    // a scribbled word). Wrapping arithmetic: a "future" stamp is corrupt and also stale.
    if now_secs.wrapping_sub(word as u16) >= STALE_SECS {
        return true;
    }
    let pid = (word >> 32) as u32;
    if pid == my_pid {
        return false; // another thread of this (live) process
    }
    if pid == 0 || pid > i32::MAX as u32 {
        return true; // not a pid at all; and kill(0 or -n) would signal groups
    }
    // SAFETY: signal 0 only checks existence and permission; nothing is delivered.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    if rc == -1 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // A killed worker stays a zombie until httpd's parent reaps it (up to a second later):
    // dead all the same.
    is_zombie(pid)
}

/// Whether `/proc/<pid>/stat` says the process has exited (state Z or X). Allocation-free,
/// so it is safe in any process; `false` if /proc cannot be read.
fn is_zombie(pid: u32) -> bool {
    let mut path = [0u8; 32];
    path[..6].copy_from_slice(b"/proc/");
    let mut at = 6;
    let mut digits = [0u8; 10];
    let mut n = pid;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for d in digits[..len].iter().rev() {
        path[at] = *d;
        at += 1;
    }
    path[at..at + 5].copy_from_slice(b"/stat");
    // path[at + 5] stays 0: the C string's terminator.
    let mut buf = [0u8; 512];
    // SAFETY: a NUL-terminated path in a local buffer; reads into a local buffer; the fd is
    // closed before returning.
    let read = unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    let Ok(read) = usize::try_from(read) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')' (comm may contain ')').
    let text = &buf[..read.min(buf.len())];
    text.iter()
        .rposition(|&b| b == b')')
        .and_then(|close| text.get(close + 2))
        .is_some_and(|&state| state == b'Z' || state == b'X')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_word_is_taken_and_released() {
        init_process();
        let word = AtomicU64::new(0);
        {
            let held = acquire(&word).expect("free lock");
            assert!(!held.stolen());
            assert_eq!(word.load(Ordering::Relaxed) >> 32, u64::from(pid()));
        }
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_alias_shows_the_lock_held_and_releases_nothing() {
        init_process();
        let word = AtomicU64::new(0);
        let held = acquire(&word).expect("free lock");
        let alias = held.alias();
        assert_eq!(alias.ident(), held.ident());
        assert!(!alias.stolen());
        drop(alias);
        assert_ne!(
            word.load(Ordering::Relaxed),
            0,
            "still held after the alias"
        );
        drop(held);
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn live_holder_times_out() {
        init_process();
        let word = AtomicU64::new(0);
        acquire(&word).expect("free").leak();
        let t0 = Instant::now();
        assert!(acquire(&word).is_none());
        let waited = t0.elapsed();
        assert!(waited >= LOCK_TIMEOUT && waited < LOCK_TIMEOUT + Duration::from_millis(300));
    }

    #[test]
    fn a_waiter_sleeps_through_a_long_hold_and_is_woken_at_release() {
        init_process();
        let word: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
        let held = acquire(word).expect("free");
        let waiter = std::thread::spawn(move || {
            let t0 = Instant::now();
            let got = acquire(word).map(|h| h.stolen());
            (got, t0.elapsed())
        });
        // Far longer than the old 2 ms bound: a preempted holder must not make others fail.
        std::thread::sleep(Duration::from_millis(120));
        assert_ne!(
            word.load(Ordering::Relaxed) & WAITERS,
            0,
            "waiter announced"
        );
        drop(held);
        let (got, waited) = waiter.join().expect("waiter");
        assert_eq!(got, Some(false), "acquired after release, not stolen");
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert_eq!(word.load(Ordering::Relaxed), 0, "released again");
    }

    #[test]
    fn many_threads_count_exactly_under_contention() {
        init_process();
        let word: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
        let total: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let _held = acquire(word).expect("no timeout under contention");
                        // A non-atomic read-modify-write: lost updates show a broken lock.
                        let v = total.load(Ordering::Relaxed);
                        std::hint::spin_loop();
                        total.store(v + 1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(total.load(Ordering::Relaxed), 160_000);
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn dead_or_garbage_owner_is_replaced() {
        init_process();
        let now = u64::from(coarse_secs());
        // pid 0 and a negative pid are not processes.
        for bad_pid in [0u64, 0xffff_fff0] {
            let word = AtomicU64::new((bad_pid << 32) | (7 << 16) | now);
            let held = acquire(&word).expect("stolen");
            assert!(held.stolen());
        }
        // A stamp far in the past is stale even when the pid is alive (ours, pid 1).
        let word = AtomicU64::new((1u64 << 32) | (7 << 16) | (now.wrapping_sub(10) & 0xffff));
        assert!(acquire(&word).expect("stale").stolen());
    }

    #[test]
    fn zombies_are_recognised() {
        assert!(!is_zombie(pid()), "this process runs");
        assert!(!is_zombie(u32::MAX >> 1), "no such process");
        // SAFETY: fork + immediate _exit in the child; the parent reaps it below.
        let child = unsafe { libc::fork() };
        if child == 0 {
            unsafe { libc::_exit(0) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_zombie(child as u32) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(is_zombie(child as u32));
        assert!(owner_gone(
            (u64::from(child as u32) << 32) | u64::from(coarse_secs()),
            pid(),
            coarse_secs()
        ));
        // SAFETY: reaps our own child.
        unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    }

    #[test]
    fn release_does_not_clear_a_thief() {
        init_process();
        let word = AtomicU64::new(0);
        let held = acquire(&word).expect("free");
        word.store(42, Ordering::Relaxed); // someone took over
        drop(held);
        assert_eq!(word.load(Ordering::Relaxed), 42);
    }
}
