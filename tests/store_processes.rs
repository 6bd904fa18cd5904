//! The store across real processes (fork), as under the prefork MPM: children only touch
//! the shared mapping and leave with `_exit`.

mod common;

use mod_shield::store::lock::LOCK_TIMEOUT;
use mod_shield::store::{Area, BlockInfo, Counter, KeyParts, Micros, Store};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const T0: Micros = 1_700_000_000_000_000;

/// Tests here fork busy children; running them one at a time keeps timings meaningful on
/// two cores.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    common::one_test_at_a_time()
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

fn site(n: u32) -> KeyParts<'static> {
    KeyParts {
        client: ip(n),
        host: "example.org",
        path: "",
    }
}

fn info() -> BlockInfo<'static> {
    BlockInfo {
        rule: Counter::Site,
        score: 51,
        count: 50,
        interval: 1,
        host: "example.org",
        uri: "/",
    }
}

/// A forked child; killed and reaped on drop if the test did not reap it (a failing test
/// must not leave children behind).
struct Child(libc::pid_t);

impl Child {
    /// Exit status (or 128 + signal).
    fn reap(self) -> i32 {
        let mut status = 0;
        // SAFETY: waits for our own child.
        let rc = unsafe { libc::waitpid(self.0, &mut status, 0) };
        std::mem::forget(self);
        assert!(rc > 0, "waitpid failed");
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        }
    }

    fn kill(&self) {
        // SAFETY: signals our own child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
        // SAFETY: reaps our own child.
        unsafe {
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// Runs `body` in a child process; its return value is the exit status. The child never
/// returns into the test harness (a panic becomes status 101).
fn spawn(body: impl FnOnce() -> i32) -> Child {
    // SAFETY: the child runs only `body` (no allocation on the paths used, no locks of the
    // parent's other threads) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
        // SAFETY: terminates the child without running the parent's atexit handlers.
        unsafe { libc::_exit(status) }
    }
    Child(pid)
}

fn reap(child: Child) -> i32 {
    child.reap()
}

/// A start line in shared memory: children wait at it so they really run concurrently.
struct Gate(*mut AtomicU32);

impl Gate {
    fn new() -> Gate {
        // SAFETY: a fresh shared anonymous page, zeroed; leaked on purpose (test process).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        Gate(ptr.cast())
    }

    /// Arrives and waits (bounded) until `n` processes have arrived.
    fn wait(&self, n: u32) {
        // SAFETY: points into the live shared page made in `new`.
        let count = unsafe { &*self.0 };
        count.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        while count.load(Ordering::SeqCst) < n && Instant::now() < deadline {
            std::hint::spin_loop();
        }
    }
}

/// `add` until it is counted (a `None` changes nothing, so retrying keeps counts exact);
/// returns how many attempts timed out.
fn add_counted(s: &Store, area: Counter, key: &KeyParts, now: Micros) -> u32 {
    let mut timeouts = 0;
    while s.add(area, key, 1, 3600, now).is_none() {
        timeouts += 1;
    }
    timeouts
}

/// `processes` children, released together, each add 1 to one key `adds` times.
fn count_one_key(processes: u32, adds: u32) {
    let s = Store::create(65536).unwrap();
    let gate = Gate::new();
    let children: Vec<_> = (0..processes)
        .map(|_| {
            spawn(|| {
                gate.wait(processes);
                let timeouts: u32 = (0..adds)
                    .map(|_| add_counted(&s, Counter::Site, &site(1), T0))
                    .sum();
                timeouts.min(100) as i32
            })
        })
        .collect();
    let statuses: Vec<i32> = children.into_iter().map(reap).collect();
    assert!(
        statuses.iter().all(|&st| st < 100),
        "children died or kept timing out: {statuses:?}"
    );
    let expected = i64::from(processes) * i64::from(adds);
    let total = s.add(Counter::Site, &site(1), 0, 3600, T0).unwrap().score;
    assert_eq!(
        total, expected,
        "lost updates (lock timeouts retried: {statuses:?})"
    );
    let st = s.stats(Area::Site);
    assert_eq!(
        (st.entries, st.inserted, st.hits + st.misses),
        (1, 1, expected as u64 + 1)
    );
}

#[test]
fn eight_processes_count_one_key_exactly() {
    let _serial = serial();
    count_one_key(8, 1000);
}

/// Long enough that the children really overlap on both cores: without the lock this loses
/// thousands of updates (checked by removing the lock).
#[test]
fn eight_processes_hammer_one_key_exactly() {
    let _serial = serial();
    count_one_key(8, 25_000);
}

#[test]
fn processes_on_spread_keys_lose_nothing() {
    let _serial = serial();
    let s = Store::create(524_288).unwrap();
    let keys = 256u32;
    let paths = ["/a", "/b"];
    let gate = Gate::new();
    let children: Vec<_> = (0..6u32)
        .map(|child| {
            let (s, gate) = (&s, &gate);
            spawn(move || {
                gate.wait(6);
                let mut timeouts = 0;
                for round in 0..4 {
                    for k in 0..keys {
                        let k = (k + child * 37 + round) % keys;
                        timeouts += add_counted(s, Counter::Site, &site(k), T0);
                        let page = KeyParts {
                            path: paths[(k % 2) as usize],
                            ..site(k)
                        };
                        timeouts += add_counted(s, Counter::Page, &page, T0);
                    }
                }
                timeouts.min(100) as i32
            })
        })
        .collect();
    for pid in children {
        assert!(reap(pid) < 100);
    }
    for k in 0..keys {
        assert_eq!(
            s.add(Counter::Site, &site(k), 0, 3600, T0).unwrap().score,
            24
        );
        let page = KeyParts {
            path: paths[(k % 2) as usize],
            ..site(k)
        };
        assert_eq!(s.add(Counter::Page, &page, 0, 3600, T0).unwrap().score, 24);
    }
    assert_eq!(s.stats(Area::Site).entries, u64::from(keys));
    assert_eq!(s.stats(Area::Page).evicted, 0);
}

#[test]
fn racing_processes_start_each_block_once() {
    let _serial = serial();
    let s = Store::create(65536).unwrap();
    let clients = 30u32;
    let gate = Gate::new();
    let children: Vec<_> = (0..6)
        .map(|_| {
            spawn(|| {
                gate.wait(6);
                let mut started: u64 = 0;
                for c in 0..clients {
                    // Retry lock timeouts: None also means "already blocked", so ask again
                    // only while no block is visible.
                    loop {
                        if s.start_block(ip(c), &info(), T0, &|g| g * 10, 3600)
                            .is_some()
                        {
                            started |= 1 << c;
                            break;
                        }
                        if s.active_block(ip(c), T0).is_some() {
                            break;
                        }
                    }
                }
                // Report the bit set through a pipe-free channel: the shared store itself.
                for c in 0..clients {
                    if started & (1 << c) != 0 {
                        let tally = KeyParts {
                            client: ip(c),
                            host: "started",
                            path: "",
                        };
                        add_counted(&s, Counter::Site, &tally, T0);
                    }
                }
                0
            })
        })
        .collect();
    for pid in children {
        assert_eq!(reap(pid), 0);
    }
    for c in 0..clients {
        let tally = KeyParts {
            client: ip(c),
            host: "started",
            path: "",
        };
        assert_eq!(
            s.add(Counter::Site, &tally, 0, 3600, T0).unwrap().score,
            1,
            "client {c}"
        );
        assert_eq!(s.active_block(ip(c), T0).unwrap().generation, 1);
    }
}

#[test]
fn a_killed_lock_holder_blocks_nobody() {
    let _serial = serial();
    let s = Store::create(65536).unwrap();
    let key = site(1);
    // The parent locks once before forking, so a child that wrongly kept the parent's
    // identity (no fork handler) would look alive to the parent and never be taken over.
    assert!(s.add(Counter::Page, &site(2), 1, 1, T0).is_some());
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let holder = spawn(|| {
        if !s.debug_hold_lock(Area::Site, &key) {
            return 1;
        }
        // SAFETY: writes one byte from a valid buffer, then sleeps until killed (bounded,
        // should the test fail before killing it).
        unsafe {
            libc::write(fds[1], b"x".as_ptr().cast(), 1);
            libc::sleep(10);
        }
        0
    });
    let mut byte = [0u8; 1];
    // SAFETY: reads one byte into a valid buffer.
    assert_eq!(
        unsafe { libc::read(fds[0], byte.as_mut_ptr().cast(), 1) },
        1
    );

    // While the holder lives (a live holder may just be preempted): wait the full lock
    // timeout, then fail open, never longer.
    let t = Instant::now();
    assert!(s.add(Counter::Site, &key, 1, 3600, T0).is_none());
    let waited = t.elapsed();
    assert!(
        waited >= LOCK_TIMEOUT && waited < LOCK_TIMEOUT + Duration::from_millis(300),
        "{waited:?}"
    );

    // Workers that keep going meanwhile: no call waits much beyond the holder's death.
    let workers: Vec<_> = (0..3)
        .map(|_| {
            spawn(|| {
                let deadline = Instant::now() + Duration::from_secs(3);
                let (mut counted, mut slowest) = (0, Duration::ZERO);
                while counted < 300 && Instant::now() < deadline {
                    let t = Instant::now();
                    let hit = s.add(Counter::Site, &key, 1, 3600, T0);
                    slowest = slowest.max(t.elapsed());
                    counted += i32::from(hit.is_some());
                }
                // The first call sleeps until the holder is found dead (killed ~30 ms in; a
                // sleeper checks the owner every few ms); none waits much longer.
                match (counted == 300, slowest < Duration::from_millis(250)) {
                    (true, true) => 0,
                    (false, _) => 2,
                    (true, false) => 3,
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(30));
    // Killed but not reaped yet (httpd's parent reaps within a second): a zombie owner is
    // dead too.
    holder.kill();
    let t = Instant::now();
    let mut timeouts = 0;
    while s.add(Counter::Site, &key, 1, 3600, T0).is_none() {
        timeouts += 1; // only while the kill is still being delivered
    }
    let waited = t.elapsed();
    assert!(
        waited < Duration::from_millis(250) && timeouts == 0,
        "{waited:?}, {timeouts} timeouts"
    );
    assert_eq!(reap(holder), 128 + libc::SIGKILL);
    for pid in workers {
        assert_eq!(
            reap(pid),
            0,
            "a worker stalled or was slow (2: not done, 3: slow call)"
        );
    }
    assert_eq!(s.add(Counter::Site, &key, 0, 3600, T0).unwrap().score, 901);
    assert_eq!(s.repairs(Area::Site).1, 1, "exactly one takeover");
    // SAFETY: closing our own pipe fds.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
}

#[test]
fn workers_killed_at_random_instants_leave_a_working_store() {
    let _serial = serial();
    let store = Store::create(16384).unwrap();
    let s = &store;
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..12 {
        let children: Vec<_> = (0..3u32)
            .map(|child| {
                spawn(move || {
                    let mut i: u32 = 0;
                    let deadline = Instant::now() + Duration::from_secs(5); // safety net
                    while Instant::now() < deadline {
                        i = i.wrapping_add(1);
                        let now = T0 + Micros::from(i % 5000);
                        // Few hot keys plus a stream of new ones (insert/evict paths too).
                        let k = if i.is_multiple_of(4) {
                            1000 + (i % 400) + child * 400
                        } else {
                            i % 8
                        };
                        let _ = s.add(Counter::Site, &site(k), 1, 1, now);
                        let page = KeyParts {
                            path: "/p",
                            ..site(k)
                        };
                        let _ = s.add(Counter::Page, &page, 1, 1, now);
                        if i.is_multiple_of(64) {
                            let _ = s.start_block(ip(k), &info(), now, &|_| 1, 10);
                        }
                        let _ = s.active_block(ip(k), now);
                    }
                    0
                })
            })
            .collect();
        std::thread::sleep(Duration::from_micros(2000 + next() % 8000));
        for pid in children {
            pid.kill();
            assert_eq!(reap(pid), 128 + libc::SIGKILL, "round {round}");
        }
        // Every sub-cache a killed child may have held is usable again at once.
        let t = Instant::now();
        for k in 0..8 {
            assert!(s.add(Counter::Site, &site(k), 1, 1, T0).is_some());
            let page = KeyParts {
                path: "/p",
                ..site(k)
            };
            assert!(s.add(Counter::Page, &page, 1, 1, T0).is_some());
            assert!(
                s.start_block(ip(k), &info(), T0 + 20_000_000, &|_| 1, 10)
                    .is_some()
                    || s.active_block(ip(k), T0 + 20_000_000).is_some()
            );
        }
        assert!(
            t.elapsed() < Duration::from_millis(50),
            "round {round}: {:?}",
            t.elapsed()
        );
    }
    for area in [Area::Site, Area::Page, Area::Block] {
        let st = s.stats(area);
        assert!(st.entries <= st.capacity);
        let _ = s.snapshot(area, T0, 100);
    }
}
