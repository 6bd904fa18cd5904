//! shieldctl's command line, in one place for both binaries that need it: `shieldctl` parses
//! it, `shieldctl-gen` turns it into the man page and the shell completions, so the three
//! can never disagree. Also the parsing of its values (addresses, durations), which clap calls
//! so that a bad value is reported with the argument it was given for.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;

/// The store file of the shipped configuration and packages.
pub const DEFAULT_STORE: &str = "/var/lib/mod_shield/shield.store";
/// Where the block files are: the `DOSLogDir` of the shipped configuration and packages
/// (the module's compiled default is /tmp, where apache2.service's PrivateTmp hides them).
pub const DEFAULT_LOG_DIR: &str = "/var/log/mod_shield";

const ABOUT: &str = "Lists, shows, blocks and unblocks clients of mod_shield";

const LONG_ABOUT: &str = "\
Lists, shows, blocks and unblocks clients in the store file of an Apache httpd server running \
mod_shield with a file-backed store (DOSCache shmcb:FILE(BYTES)). It is safe while the server \
runs: it goes through the store's own per-sub-cache locks, like the server's workers.

ADDR is an IPv4 or IPv6 address, the client as the server counts it. IPv6 clients are counted \
per group of DOSIPv6Prefix bits (a /64 by default): an IPv6 address stands for its group, and \
the group as list prints it (2001:db8:7:7::/64) is accepted back.

list, show and stats open the store read-only: read permission on the file is enough.";

/// Exit statuses and where output goes (the help's last paragraph, the man page's EXIT STATUS).
pub const EXIT_STATUS: &str = "\
Exit status: 0 done (also: unblock of a client that was not blocked); 1 not done (store \
missing, unreadable or not a store, store busy); 2 bad command line.

With --json, every outcome is one JSON document on standard output, a failure too: \
{\"error\": MESSAGE, \"exit_status\": N}. Without it, a failure prints nothing on standard \
output and its message on standard error.";

#[derive(Parser, Debug)]
#[command(
    name = "shieldctl",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXIT_STATUS,
    propagate_version = true
)]
pub struct Cli {
    /// The store file (DOSCache shmcb:FILE(BYTES))
    #[arg(long, global = true, value_name = "FILE", default_value = DEFAULT_STORE)]
    pub store: PathBuf,

    /// Print JSON instead of text (times in RFC 3339, failures as {"error": ...})
    #[arg(long, global = true)]
    pub json: bool,

    /// IPv6 group size [default: the server's DOSIPv6Prefix, as recorded in the store, else 64]
    #[arg(
        long,
        global = true,
        value_name = "N",
        value_parser = clap::value_parser!(u8).range(1..=128)
    )]
    pub ipv6_prefix: Option<u8>,

    /// Act on a farm instead of a store file: block and unblock go to every server through
    /// its engine, as DOSCache names it (redis:HOST:PORT[,...], memcache:HOST:PORT[,...])
    #[arg(long, global = true, value_name = "ENGINE")]
    pub cache: Option<String>,

    /// Where the block files dos-ADDR are (the server's DOSLogDir)
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_LOG_DIR)]
    pub log_dir: PathBuf,

    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug, PartialEq)]
pub enum Cmd {
    /// Active blocks, one a line: client, rule, generation, time left, host, URI
    List,
    /// The client's block, generation and site/page scores
    Show {
        /// The client: an IPv4 or IPv6 address (an IPv6 one stands for its group), or the
        /// group as list prints it (2001:db8:7:7::/64), or a counted network (ADDR/24 for
        /// IPv4, ADDR/56 or ADDR/48 for IPv6: DOSPrefixCount)
        #[arg(value_name = "ADDR", value_parser = parse_addr)]
        addr: Addr,
    },
    /// Block the client now for DURATION (its next request is refused)
    Block {
        /// The client, as for show
        #[arg(value_name = "ADDR", value_parser = parse_addr)]
        addr: Addr,
        /// Seconds, or a number with a unit: 90s, 30m, 1h, 1d
        #[arg(value_name = "DURATION", value_parser = parse_duration)]
        duration: u32,
    },
    /// End the client's block now and remove its block file
    #[command(long_about = "End the client's block now and remove its block file. \
        ADDR may also be a counted network ADDR/LEN (24 for IPv4, 56 or 48 for IPv6: \
        DOSPrefixCount), blocked as a whole. A client that is not blocked is no error: the \
        command says so and exits 0.")]
    Unblock {
        /// The client or the network, as for show
        #[arg(value_name = "ADDR", value_parser = parse_addr)]
        addr: Addr,
        /// Also drop the client's generation (its next block is the first)
        #[arg(long)]
        forget: bool,
    },
    /// Per-area figures: capacity, entries, inserted, expired, evicted, hits, misses
    Stats,
    /// Force DOSUnderAttack on or off on the running server, or back to its configuration
    #[command(
        long_about = "Force DOSUnderAttack on or off on the running server (within a \
        second), or give it back to the configuration with auto. on: every browser without a \
        pass gets the challenge wherever DOSUnderAttack is not off; off: nowhere; auto: as \
        configured (DOSUnderAttack on, or auto following DOSUnderAttackThreshold). The \
        setting is kept in the store file, so it holds across restarts. Without a value, \
        prints the current one."
    )]
    UnderAttack {
        /// on, off or auto
        #[arg(value_name = "MODE", value_parser = ["on", "off", "auto"])]
        mode: Option<String>,
    },
}

/// An address as typed: normalised (IPv4-mapped IPv6 is IPv4), with its `/LEN`, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr {
    pub ip: IpAddr,
    pub len: Option<u8>,
}

impl Addr {
    /// The bits of a whole client: 32 for IPv4, the grouping prefix for IPv6.
    pub fn client_bits(ip: IpAddr, ipv6_prefix: u8) -> u8 {
        match ip {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => ipv6_prefix,
        }
    }

    /// Whether this names one client (no `/LEN`, or the client's own size).
    pub fn is_client(&self, ipv6_prefix: u8) -> bool {
        self.len
            .is_none_or(|n| n == Self::client_bits(self.ip, ipv6_prefix))
    }
}

/// Why a command-line address is none.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("not an IPv4 or IPv6 address")]
    NotAnAddress,
    #[error("the prefix length '{text}' is not a number from 0 to {max}")]
    BadLength { text: String, max: u8 },
}

/// A command-line duration that is none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a duration: seconds (90) or a whole number with a unit s, m, h or d (90s, 30m, 1h, 1d), from 1 s to {} s",
    u32::MAX
)]
pub struct DurationError;

/// `ADDR` or `ADDR/LEN`: an IPv4 or IPv6 address, LEN at most its family's width.
pub fn parse_addr(text: &str) -> Result<Addr, AddrError> {
    let (addr, len) = match text.split_once('/') {
        Some((a, n)) => (a, Some(n)),
        None => (text, None),
    };
    let ip = addr
        .parse::<IpAddr>()
        .map_err(|_| AddrError::NotAnAddress)?;
    let ip = crate::client::normalise(ip);
    let len = len
        .map(|n| {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            n.parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| AddrError::BadLength {
                    text: n.to_string(),
                    max,
                })
        })
        .transpose()?;
    Ok(Addr { ip, len })
}

/// Seconds (`90`), or a whole number with a unit: `90s`, `30m`, `1h`, `1d`; from 1 s to
/// u32::MAX s.
pub fn parse_duration(text: &str) -> Result<u32, DurationError> {
    let bad = || DurationError;
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let scale: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .and_then(|s| u32::try_from(s).ok())
        .filter(|&s| s > 0)
        .ok_or_else(bad)
}

/// The clap command, for the man page and the completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("shieldctl").chain(line.split_whitespace()))
    }

    #[test]
    fn the_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn options_go_before_or_after_the_command() {
        let a = parse("--store /x/s.store unblock 192.0.2.1 --forget --json").unwrap();
        assert_eq!(a.store, PathBuf::from("/x/s.store"));
        assert!(a.json);
        assert_eq!(
            a.command,
            Cmd::Unblock {
                addr: parse_addr("192.0.2.1").unwrap(),
                forget: true
            }
        );
        let a = parse("block 2001:db8::1 1h --ipv6-prefix=48 --log-dir=/var/log/x").unwrap();
        assert!(matches!(a.command, Cmd::Block { duration: 3600, .. }));
        assert_eq!(
            (a.ipv6_prefix, a.log_dir),
            (Some(48), PathBuf::from("/var/log/x"))
        );
        assert_eq!(parse("list").unwrap().store, PathBuf::from(DEFAULT_STORE));
    }

    #[test]
    fn bad_command_lines_name_the_culprit() {
        for (line, culprit) in [
            ("", "Usage"),
            ("frobnicate", "'frobnicate'"),
            ("list --bogus", "'--bogus'"),
            ("show", "<ADDR>"),
            ("block 192.0.2.1", "<DURATION>"),
            ("block 192.0.2.1 1x", "'1x'"),
            ("list extra", "'extra'"),
            ("list --forget", "'--forget'"),
            ("list --store", "--store"),
            ("list --ipv6-prefix 129", "'129'"),
            ("show 300.1.1.1", "'300.1.1.1'"),
            ("unblock 10.0.0.0/33", "'33'"),
        ] {
            let e = parse(line).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{line}");
            let text = e.to_string();
            assert!(text.contains(culprit), "{line}: {text}");
        }
    }

    #[test]
    fn durations_take_seconds_or_a_unit() {
        for (text, secs) in [("90", 90), ("90s", 90), ("30m", 1800), ("1h", 3600)] {
            assert_eq!(parse_duration(text), Ok(secs), "{text}");
        }
        assert_eq!(parse_duration("1d"), Ok(86_400));
        assert_eq!(parse_duration("4294967295"), Ok(u32::MAX));
        for bad in [
            "0",
            "0h",
            "-5",
            "1.5",
            "abc",
            "h",
            "",
            "1w",
            "99999999999",
            "49711d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_are_normalised_and_prefixes_checked() {
        let a = parse_addr("::ffff:192.0.2.9").unwrap();
        assert_eq!(a.ip, "192.0.2.9".parse::<IpAddr>().unwrap());
        let g = parse_addr("2001:db8:7:7::/64").unwrap();
        assert_eq!(g.len, Some(64));
        assert!(g.is_client(64) && !g.is_client(48));
        assert!(parse_addr("192.0.2.1/32").unwrap().is_client(64));
        assert!(!parse_addr("192.0.2.0/24").unwrap().is_client(64));
        assert!(parse_addr("2001:db8::1").unwrap().is_client(56));
        assert!(parse_addr("192.0.2.1/x").is_err());
        assert!(parse_addr("not-an-ip").is_err());
    }
}
