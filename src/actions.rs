//! What a block start does outside the tables, once per block, in plain Rust: the log line
//! fail2ban reads, the block file, `DOSSystemCommand` and `DOSEmailNotify` (the pieces are in
//! [`crate::block`]); and the monitor-mode line of a would-be block.
#![forbid(unsafe_code)]

use std::path::Path;

use crate::block;
use crate::config::ServerSettings;
use crate::log::{Level, Log};
use crate::policy::{Request, Started};
use crate::store::Rule;

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
    log.log(Level::Info, &block::log_line(&label, started.block.until));
    let dir = Path::new(&server.log_dir);
    let contents = block::file_contents(pid, started, req.host, req.path);
    if let Err(e) = block::write_net_file(dir, ip, prefix, &contents) {
        log.log(
            Level::Warning,
            &format!(
                "cannot write block file {}: {e}",
                block::net_file_path(dir, ip, prefix).display()
            ),
        );
    }
    if let Some(cmd) = &server.system_command {
        if let Err(e) = block::run_command(cmd, &label) {
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
        if let Err(e) = block::send_mail(to, &who) {
            log.log(
                Level::Warning,
                &format!("DOSEmailNotify: cannot run sendmail: {e}"),
            );
        }
    }
}

/// Monitor mode's line for a rule that would have blocked `who` (the client, or a network
/// as [`crate::prefix::label`] names it).
pub fn would_block_line(who: &str, req: &Request, rule: Rule, score: i64, count: u32) -> String {
    format!(
        "would block IP: {who} ({} score {score} > {count}, monitor mode) {}",
        rule.as_str(),
        block::one_field(req.path)
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
                rule: Rule::Page,
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
            Rule::Site,
            51,
            50,
        );
        assert_eq!(
            line,
            "would block IP: 192.0.2.9 (site score 51 > 50, monitor mode) /a%20b%0Ac"
        );
    }
}
