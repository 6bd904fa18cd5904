//! Children started without waiting for them (`DOSSystemCommand`, `DOSEmailNotify`), at most a
//! few at once per process: a botnet crossing thresholds together must not fork thousands of
//! shells. Over the cap a start is dropped, and only the first drop of a burst is reported.
#![forbid(unsafe_code)]
use std::io::{self, Write};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Processes of one kind (`DOSSystemCommand`, `DOSEmailNotify`) that one httpd process runs at
/// once. Block starts beyond that are dropped: a botnet crossing thresholds together must not
/// fork thousands of shells.
pub const MAX_IN_FLIGHT: usize = 4;

/// What became of one start.
#[derive(Debug, PartialEq, Eq)]
pub enum Spawned {
    Started,
    /// Dropped silently: the drop that began this burst was already reported.
    Dropped,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The first drop of a burst; the caller logs it, later drops of the burst are silent.
    #[error(
        "{limit} already running in this process: this and further starts are dropped until one \
         ends ({dropped_before} dropped before)"
    )]
    Busy { limit: usize, dropped_before: u64 },
}

/// Caps the children of one kind in flight in this process.
///
/// Each started child gets a thread that waits for it (`waitpid` on its pid) and then gives its
/// slot back. That holds whatever httpd does with SIGCHLD: with the default disposition the
/// thread reaps the child; with SIGCHLD ignored the kernel reaps it and `waitpid` blocks until
/// the child is gone, then fails with ECHILD; if other code reaps it first, `waitpid` fails at
/// once. In every case the thread returns when the child has ended (or, in the last case, was
/// already reaped), so the count never leaks. The threads are bounded by the limit.
pub struct Spawner {
    limit: usize,
    in_flight: AtomicUsize,
    /// A burst of drops is under way (set by its first drop, cleared by the next start).
    dropping: AtomicBool,
    dropped: AtomicU64,
}

/// A slot in flight, given back on drop (also if the waiting thread unwinds).
struct Slot(&'static Spawner);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Spawner {
    pub const fn new(limit: usize) -> Spawner {
        Spawner {
            limit,
            in_flight: AtomicUsize::new(0),
            dropping: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        }
    }

    /// Children started and not yet ended.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn try_acquire(&'static self) -> Option<Slot> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self))
    }

    /// Start `cmd` without waiting for it, writing `input` to its stdin if given (then `cmd`
    /// must have a piped stdin). Over the limit the start is dropped: the first drop of a
    /// burst is `Err(Busy)`, the others `Ok(Dropped)`.
    pub fn spawn(
        &'static self,
        cmd: &mut Command,
        input: Option<Vec<u8>>,
    ) -> Result<Spawned, SpawnError> {
        let Some(slot) = self.try_acquire() else {
            let dropped_before = self.dropped.fetch_add(1, Ordering::AcqRel);
            if self.dropping.swap(true, Ordering::AcqRel) {
                return Ok(Spawned::Dropped);
            }
            return Err(SpawnError::Busy {
                limit: self.limit,
                dropped_before,
            });
        };
        self.dropping.store(false, Ordering::Release);
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        // Should no thread be had, the closure is dropped: the slot is given back and the child
        // runs on unwatched (a zombie until this process ends), reported as an error.
        std::thread::Builder::new()
            .name("shield-child".into())
            .spawn(move || {
                let _slot = slot;
                if let (Some(mut stdin), Some(input)) = (stdin, input) {
                    let _ = stdin.write_all(&input);
                }
                let _ = child.wait();
            })?;
        Ok(Spawned::Started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;
    use std::process::Stdio;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shield-spawn-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn wait_idle(spawner: &Spawner) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while spawner.in_flight() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "children not reaped: {} in flight",
                spawner.in_flight()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn at_most_the_limit_runs_and_each_burst_of_drops_is_reported_once() {
        static S: Spawner = Spawner::new(2);
        let dir = scratch("limit");
        let release = dir.join("release");
        // Each child runs until `release` exists.
        let held = || {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(format!(
                "while [ ! -e '{}' ]; do sleep 0.02; done",
                release.display()
            ));
            c
        };
        for round in 0..2u64 {
            let _ = fs::remove_file(&release);
            assert_eq!(S.spawn(&mut held(), None).unwrap(), Spawned::Started);
            assert_eq!(S.spawn(&mut held(), None).unwrap(), Spawned::Started);
            assert_eq!(S.in_flight(), 2);
            match S.spawn(&mut held(), None) {
                Err(SpawnError::Busy {
                    limit: 2,
                    dropped_before,
                }) => assert_eq!(dropped_before, 4 * round),
                other => panic!("round {round}: the first drop is not reported: {other:?}"),
            }
            for _ in 0..3 {
                assert_eq!(S.spawn(&mut held(), None).unwrap(), Spawned::Dropped);
            }
            assert_eq!(S.in_flight(), 2, "a dropped start took a slot");
            fs::write(&release, "").unwrap();
            wait_idle(&S);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn input_reaches_the_child_and_a_failed_start_gives_its_slot_back() {
        static S: Spawner = Spawner::new(1);
        let dir = scratch("input");
        let out = dir.join("out");
        let mut cat = Command::new("/bin/sh");
        cat.arg("-c")
            .arg(format!("cat > '{}'", out.display()))
            .stdin(Stdio::piped());
        let message = "To: root@localhost\nSubject: test\n\nbody\n".to_string();
        assert_eq!(
            S.spawn(&mut cat, Some(message.clone().into_bytes()))
                .unwrap(),
            Spawned::Started
        );
        wait_idle(&S);
        assert_eq!(fs::read_to_string(&out).unwrap(), message);

        let err = S
            .spawn(&mut Command::new("/nonexistent-shield-program"), None)
            .unwrap_err();
        assert!(matches!(err, SpawnError::Io(_)), "{err:?}");
        assert_eq!(S.in_flight(), 0, "a failed start kept its slot");
        fs::remove_dir_all(&dir).unwrap();
    }
}
