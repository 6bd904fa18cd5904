//! What starting a block does outside the tables, once per block: the log line fail2ban reads,
//! the block file `<DOSLogDir>/dos-<ip>`, `DOSSystemCommand` and `DOSEmailNotify`.
//!
//! The client address reaches file names and commands only as a parsed [`IpAddr`] printed by
//! Rust (digits, hex, `.` and `:`), never as text from the request.
#![forbid(unsafe_code)]
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::policy::Started;

/// How a blocked client is named to the log line and `DOSSystemCommand`: the address, or for
/// IPv6 grouped by a prefix shorter than 128 the network (`2001:db8:1::/64`), so that a
/// firewall acting on it (fail2ban) covers the whole group the block covers.
pub fn client_label(ip: IpAddr, ipv6_prefix: u8) -> String {
    match ip {
        IpAddr::V6(_) if ipv6_prefix < 128 => format!("{ip}/{ipv6_prefix}"),
        _ => ip.to_string(),
    }
}

/// The error-log line of a block start (the shipped fail2ban filter matches it: keep it stable).
pub fn log_line(client: &str, until_us: i64) -> String {
    format!("blocking period started for IP: {client} (expiry: {until_us})")
}

/// Make request text safe for one line of the block file: control characters and spaces are
/// percent-encoded, so a URI cannot add lines or fields.
pub fn one_field(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || c == ' ' || c == '%' {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

/// The block file's contents: `<pid>\n<site|page> <generation> <score> <hostname> <origin>\n<uri>\n`.
pub fn file_contents(pid: u32, started: &Started, host: &str, uri: &str) -> String {
    let rule = started.block.rule.as_str();
    format!(
        "{pid}\n{rule} {} {} {} {}\n{}\n",
        started.block.generation,
        started.block.score,
        one_field(host),
        started.origin.div_euclid(1_000_000),
        one_field(uri)
    )
}

/// Path of a client's block file.
pub fn file_path(dir: &Path, ip: IpAddr) -> PathBuf {
    dir.join(format!("dos-{ip}"))
}

/// Write the block file atomically: a fresh temporary file (O_EXCL|O_NOFOLLOW) renamed over
/// `dos-<ip>`. rename(2) replaces the directory entry itself, so a symlink planted under that
/// name is replaced, never followed.
pub fn write_file(dir: &Path, ip: IpAddr, contents: &str) -> io::Result<PathBuf> {
    let target = file_path(dir, ip);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".dos-{ip}.{}.{nanos}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        fs::rename(&tmp, &target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| target)
}

/// Processes of one kind (`DOSSystemCommand`, `DOSEmailNotify`) that one httpd process runs at
/// once. Block starts beyond that are dropped: a botnet crossing thresholds together must not
/// fork thousands of shells.
pub const MAX_IN_FLIGHT: usize = 4;

static COMMANDS: Spawner = Spawner::new(MAX_IN_FLIGHT);
static MAILS: Spawner = Spawner::new(MAX_IN_FLIGHT);

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

/// Run `DOSSystemCommand` with `%s` replaced by the IP, without waiting for it (see
/// [`Spawner`]). `client` is a [`client_label`]: built from a parsed address, never from
/// request text.
pub fn run_command(template: &str, client: &str) -> Result<Spawned, SpawnError> {
    let line = template.replace("%s", client);
    COMMANDS.spawn(
        Command::new("/bin/sh")
            .arg("-c")
            .arg(line)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        None,
    )
}

/// The mail `DOSEmailNotify` sends (`sendmail -t` reads the recipients from the headers).
pub fn mail_message(to: &str, ip: IpAddr) -> String {
    format!("To: {to}\nSubject: HTTP BLACKLIST {ip}\n\nmod_shield HTTP Blacklisted {ip}\n")
}

/// Send the notification mail through `/usr/sbin/sendmail -t`, asynchronously.
pub fn send_mail(to: &str, ip: IpAddr) -> Result<Spawned, SpawnError> {
    MAILS.spawn(
        Command::new("/usr/sbin/sendmail")
            .arg("-t")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        Some(mail_message(to, ip).into_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_field_keeps_a_uri_on_one_line() {
        assert_eq!(one_field("/a b\nc%"), "/a%20b%0Ac%25");
        assert_eq!(one_field(""), "-");
        assert_eq!(one_field("/wp-login.php"), "/wp-login.php");
    }

    #[test]
    fn write_file_replaces_a_symlink_without_following_it() {
        let dir = std::env::temp_dir().join(format!("shield-block-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, "keep me").unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        std::os::unix::fs::symlink(&victim, file_path(&dir, ip)).unwrap();
        let written = write_file(&dir, ip, "123\npage 1 3 example.com 1700000000\n/x\n").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
        assert!(!fs::symlink_metadata(&written)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::read_to_string(&written).unwrap(),
            "123\npage 1 3 example.com 1700000000\n/x\n"
        );
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_file_reports_an_unwritable_dir() {
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(write_file(Path::new("/nonexistent-shield-dir"), ip, "x").is_err());
    }

    #[test]
    fn ipv6_groups_are_named_as_networks() {
        let v6: IpAddr = "2001:db8:1::".parse().unwrap();
        assert_eq!(client_label(v6, 64), "2001:db8:1::/64");
        assert_eq!(client_label(v6, 128), "2001:db8:1::");
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_label(v4, 64), "192.0.2.1");
        assert_eq!(
            log_line("192.0.2.1", 1_700_000_000_000_000),
            "blocking period started for IP: 192.0.2.1 (expiry: 1700000000000000)"
        );
    }

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
        let message = mail_message("root@localhost", "192.0.2.3".parse().unwrap());
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

    #[test]
    fn mail_names_the_ip_in_the_subject() {
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let m = mail_message("root@localhost", ip);
        assert!(m.starts_with("To: root@localhost\nSubject: HTTP BLACKLIST 198.51.100.1\n\n"));
    }
}
