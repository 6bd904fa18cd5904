//! What starting a block tells the world, once per block: the error-log line fail2ban reads,
//! the block file `<DOSLogDir>/dos-<ip>`, `DOSSystemCommand` and `DOSEmailNotify` (started
//! through [`crate::spawn`], which caps them), in that order by [`block_started`]; and the
//! monitor-mode line of a would-be block. Plain Rust, logging to a [`Log`].
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

use crate::config::ServerSettings;
use crate::log::{Level, Log};
use crate::policy::{Request, Started};
use crate::spawn::{SpawnError, Spawned, Spawner, MAX_IN_FLIGHT};
use crate::store::Counter;

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
    net_file_path(dir, ip, 0)
}

/// Path of the block file of network `ip`/`prefix` (`prefix` 0: of the client `ip`). A file
/// name cannot hold the `/` of `2001:db8:aa::/48`, so a network's is `dos-2001:db8:aa::_48`
/// (and `dos-192.0.2.0_24`): never the name of a client's file.
pub fn net_file_path(dir: &Path, ip: IpAddr, prefix: u8) -> PathBuf {
    if prefix == 0 {
        dir.join(format!("dos-{ip}"))
    } else {
        dir.join(format!("dos-{ip}_{prefix}"))
    }
}

/// [`write_file`] for the block file of network `ip`/`prefix` ([`net_file_path`]).
pub fn write_net_file(dir: &Path, ip: IpAddr, prefix: u8, contents: &str) -> io::Result<PathBuf> {
    write_to(dir, net_file_path(dir, ip, prefix), contents)
}

/// Write the block file atomically: a fresh temporary file (O_EXCL|O_NOFOLLOW) renamed over
/// `dos-<ip>`. rename(2) replaces the directory entry itself, so a symlink planted under that
/// name is replaced, never followed.
pub fn write_file(dir: &Path, ip: IpAddr, contents: &str) -> io::Result<PathBuf> {
    write_to(dir, file_path(dir, ip), contents)
}

fn write_to(dir: &Path, target: PathBuf, contents: &str) -> io::Result<PathBuf> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().trim_start_matches("dos-").to_string())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".dos-{name}.{}.{nanos}", std::process::id()));
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

/// At most [`MAX_IN_FLIGHT`] commands and as many mails run at once per httpd process.
static COMMANDS: Spawner = Spawner::new(MAX_IN_FLIGHT);
static MAILS: Spawner = Spawner::new(MAX_IN_FLIGHT);

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
/// `who` is the client's address, or a blocked network as `net/len`.
pub fn mail_message(to: &str, who: &str) -> String {
    format!("To: {to}\nSubject: HTTP BLACKLIST {who}\n\nmod_shield HTTP Blacklisted {who}\n")
}

/// Send the notification mail through `/usr/sbin/sendmail -t`, asynchronously.
pub fn send_mail(to: &str, who: &str) -> Result<Spawned, SpawnError> {
    MAILS.spawn(
        Command::new("/usr/sbin/sendmail")
            .arg("-t")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        Some(mail_message(to, who).into_bytes()),
    )
}

/// Once per block: the log line, the block file, the command and the mail. Failures are
/// logged as warnings; the block itself stands whatever happens here.
pub fn block_started(
    log: &dyn Log,
    server: &ServerSettings,
    req: &Request,
    started: &Started,
    pid: u32,
) {
    let (ip, prefix) = (started.block.client, started.block.prefix);
    let label = crate::prefix::label(ip, prefix, server.ipv6_prefix);
    log.log(Level::Info, &log_line(&label, started.block.until));
    let dir = Path::new(&server.log_dir);
    let contents = file_contents(pid, started, req.host, req.path);
    if let Err(e) = write_net_file(dir, ip, prefix, &contents) {
        log.log(
            Level::Warning,
            &format!(
                "cannot write block file {}: {e}",
                net_file_path(dir, ip, prefix).display()
            ),
        );
    }
    if let Some(cmd) = &server.system_command {
        if let Err(e) = run_command(cmd, &label) {
            log.log(
                Level::Warning,
                &format!("DOSSystemCommand failed to start: {e}"),
            );
        }
    }
    if let Some(to) = &server.email_notify {
        // A client by its address, as ever; a network by `net/len`.
        let who = if prefix == 0 {
            ip.to_string()
        } else {
            label.clone()
        };
        if let Err(e) = send_mail(to, &who) {
            log.log(
                Level::Warning,
                &format!("DOSEmailNotify: cannot run sendmail: {e}"),
            );
        }
    }
}

/// Monitor mode's line for a rule that would have blocked `who` (the client, or a network
/// as [`crate::prefix::label`] names it).
pub fn would_block_line(who: &str, req: &Request, rule: Counter, score: i64, count: u32) -> String {
    format!(
        "would block IP: {who} ({} score {score} > {count}, monitor mode) {}",
        rule.as_str(),
        one_field(req.path)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Lines;
    use crate::store::BlockState;

    fn started(client: &str) -> Started {
        Started {
            block: BlockState {
                client: client.parse().unwrap(),
                prefix: 0,
                rule: Counter::Page,
                generation: 2,
                started: 1_800_000_000_000_000,
                until: 1_800_000_060_000_000,
                score: 11,
                count: 10,
                interval: 60,
                host: "www.example.com:443".into(),
                uri: "/search".into(),
            },
            origin: 1_799_999_990_000_000,
        }
    }

    fn req<'a>(client: &str, path: &'a str) -> Request<'a> {
        Request {
            client: client.parse().unwrap(),
            host: "www.example.com:443",
            path,
            key: None,
        }
    }

    #[test]
    fn a_block_start_logs_once_and_writes_the_block_file() {
        let dir = std::env::temp_dir().join(format!("shield-actions-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let server = ServerSettings {
            log_dir: dir.display().to_string(),
            ..ServerSettings::default()
        };
        let lines = Lines::default();
        block_started(
            &lines,
            &server,
            &req("192.0.2.5", "/search"),
            &started("192.0.2.5"),
            4242,
        );
        let logged = lines.take();
        assert_eq!(
            logged,
            vec![(
                Level::Info,
                "blocking period started for IP: 192.0.2.5 (expiry: 1800000060000000)".into()
            )]
        );
        let file = std::fs::read_to_string(dir.join("dos-192.0.2.5")).unwrap();
        assert_eq!(
            file,
            "4242\npage 2 11 www.example.com:443 1799999990\n/search\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_network_s_block_start_names_the_network_and_writes_its_own_file() {
        let dir = std::env::temp_dir().join(format!("shield-actions-net-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let server = ServerSettings {
            log_dir: dir.display().to_string(),
            ..ServerSettings::default()
        };
        let lines = Lines::default();
        let mut net = started("2001:db8:aa::");
        net.block.prefix = 48;
        block_started(&lines, &server, &req("2001:db8:aa:5::", "/"), &net, 7);
        assert_eq!(
            lines.take(),
            vec![(
                Level::Info,
                "blocking period started for IP: 2001:db8:aa::/48 (expiry: 1800000060000000)"
                    .into()
            )]
        );
        assert!(dir.join("dos-2001:db8:aa::_48").is_file());
        assert!(!dir.join("dos-2001:db8:aa::").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_block_dir_is_one_warning_and_the_ipv6_group_is_named() {
        let server = ServerSettings {
            log_dir: "/nonexistent/shield-blocks".into(),
            ..ServerSettings::default()
        };
        let lines = Lines::default();
        block_started(
            &lines,
            &server,
            &req("2001:db8:7:7::", "/"),
            &started("2001:db8:7:7::"),
            1,
        );
        let logged = lines.take();
        assert_eq!(logged.len(), 2, "{logged:?}");
        assert!(logged[0].1.contains("IP: 2001:db8:7:7::/64 "), "{logged:?}");
        assert_eq!(logged[1].0, Level::Warning);
        assert!(logged[1]
            .1
            .starts_with("cannot write block file /nonexistent/shield-blocks/"));
    }

    #[test]
    fn the_would_block_line_keeps_the_path_on_one_field() {
        let line = would_block_line(
            "192.0.2.9",
            &req("192.0.2.9", "/a b\nc"),
            Counter::Site,
            51,
            50,
        );
        assert_eq!(
            line,
            "would block IP: 192.0.2.9 (site score 51 > 50, monitor mode) /a%20b%0Ac"
        );
    }

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

    #[test]
    fn mail_names_the_ip_in_the_subject() {
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let m = mail_message("root@localhost", &ip.to_string());
        assert!(m.starts_with("To: root@localhost\nSubject: HTTP BLACKLIST 198.51.100.1\n\n"));
    }
}
