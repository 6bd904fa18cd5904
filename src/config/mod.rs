//! Directives: the directive table, parsing, validation, typed settings and merging.
//!
//! [`DIRECTIVES`] is the one table of names, scopes and parsers. httpd hands every `DOS*` line
//! to the FFI (all directives are registered RAW_ARGS), which finds the line's row and calls
//! [`DirectiveInfo::parse`] ([`parse()`] does the same by name); it validates the line
//! completely and returns a [`Setting`]. The FFI applies it to the [`ServerConfig`] or
//! [`DirConfig`] of the section it appeared in, as the row's [`Scope`] says. httpd merges those
//! ([`ServerConfig::merge`] at startup, [`DirConfig::merge`] per request); each server's
//! settings are resolved once ([`ServerConfig::resolve`]) to concrete values.
//!
//! Nothing here touches httpd; `docs/directives.md` is the user-facing reference.
#![forbid(unsafe_code)]

mod cache;
mod canonical;
mod dir;
mod lists;
mod parse;
mod server;
mod tokens;

#[cfg(test)]
mod tests;

use std::ffi::CStr;

pub use cache::CacheSpec;
pub use canonical::canonical_lines;
pub use dir::DirConfig;
pub use parse::parse;
pub use server::{ServerConfig, ServerSettings};

use crate::client::WhitelistEntry;

/// Compiled defaults: mod_evasive's, so an evasive configuration behaves alike.
pub const DEFAULT_PAGE_COUNT: u32 = 2;
pub const DEFAULT_PAGE_INTERVAL: u32 = 1;
pub const DEFAULT_SITE_COUNT: u32 = 50;
pub const DEFAULT_SITE_INTERVAL: u32 = 1;
pub const DEFAULT_BLOCKING_PERIOD: u32 = 10;
pub const DEFAULT_HTTP_STATUS: u16 = 429;
pub const DEFAULT_IPV6_PREFIX: u8 = 64;
pub const DEFAULT_LOG_DIR: &str = "/tmp";
/// Default size of each shared area: 21 MiB, sized for an attack. 7,479 sub-caches of 16
/// records: 119,664 records per area, so 119,664 clients (each a site and a page record)
/// and as many blocks, 358,992 records in a 63 MiB region (docs/directives.md, DOSCache).
/// Anonymous memory is touched only where records are written.
pub const DEFAULT_CACHE_BYTES: usize = 22_020_096;
/// shmcb's minimum; smaller is a configuration error.
pub const MIN_CACHE_BYTES: usize = 8192;
/// Upper bound per area (1 GiB): far above any sane table, low enough to catch a typo.
pub const MAX_CACHE_BYTES: usize = 1 << 30;
/// Most `DOSBlockingPeriod` values (block generations).
pub const MAX_BLOCKING_PERIODS: usize = 16;
/// A blocked client's generation is remembered at least this long (a day).
pub const MIN_BLOCK_MEMORY_SECS: u32 = 86_400;

/// Where a directive may appear; the one statement of a directive's scope. The FFI derives
/// everything from it: Global => RSRC_CONF plus a GLOBAL_ONLY check (main server only, not
/// `<VirtualHost>`); Server => RSRC_CONF (server config and `<VirtualHost>`); All =>
/// RSRC_CONF|ACCESS_CONF (also `<Directory>`, `<Location>`, `<Files>`, `<If>`; never
/// `.htaccess`, whatever its AllowOverride). All goes into [`DirConfig`], the others into
/// [`ServerConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Global,
    Server,
    All,
}

/// Turns the words of one line into a validated [`Setting`].
pub(crate) type Parser = fn(&parse::Line<'_>) -> Result<Setting, ConfigError>;

/// One row of the directive table the FFI registers: name, scope, parser and help, as
/// nginx's `ngx_command_t` rows are.
#[derive(Debug)]
pub struct DirectiveInfo {
    /// The name as documented (httpd matches it case-insensitively).
    pub name: &'static CStr,
    pub scope: Scope,
    /// One-line help httpd prints with a syntax error.
    pub usage: &'static CStr,
    /// For an alias, the canonical name it stands for.
    pub alias_of: Option<&'static str>,
    parser: Parser,
}

impl DirectiveInfo {
    const fn new(name: &'static CStr, scope: Scope, parser: Parser, usage: &'static CStr) -> Self {
        DirectiveInfo {
            name,
            scope,
            usage,
            alias_of: None,
            parser,
        }
    }

    /// This row's name as text (`DOSPageCount`).
    pub const fn name_str(&self) -> &'static str {
        match self.name.to_str() {
            Ok(name) => name,
            Err(_) => panic!("directive names are ASCII"),
        }
    }

    /// Another name for this row's directive: same scope and parser.
    const fn alias(&self, name: &'static CStr, usage: &'static CStr) -> DirectiveInfo {
        let canonical = self.name_str();
        DirectiveInfo {
            name,
            scope: self.scope,
            usage,
            alias_of: Some(canonical),
            parser: self.parser,
        }
    }

    /// Parses a line of this directive: `written` is the name as the user wrote it (for
    /// messages), `raw_args` the unparsed rest of the line, tokenised like httpd does.
    pub fn parse(&self, written: &str, raw_args: &str) -> Result<Setting, ConfigError> {
        let args = tokens::words(raw_args);
        (self.parser)(&parse::Line::new(written, &args))
    }
}

/// Each directive's row, named: the one place its name is spelt. The table below lists them (the
/// alias rows copy theirs), and [`Setting::directive`] and [`canonical_lines`] read the names
/// from them.
#[rustfmt::skip]
pub mod rows {
    use super::parse as p;
    use super::DirectiveInfo;
    use super::Scope::{All, Global, Server};

    pub const ENABLED: DirectiveInfo = DirectiveInfo::new(c"DOSEnabled", All, p::enabled, c"on|off|monitor - count and block (default), exempt, or only log 'would block'");
    pub const PAGE_COUNT: DirectiveInfo = DirectiveInfo::new(c"DOSPageCount", All, p::page_count, c"N - block a client whose score for one page exceeds N within DOSPageInterval (default 2)");
    pub const PAGE_INTERVAL: DirectiveInfo = DirectiveInfo::new(c"DOSPageInterval", All, p::page_interval, c"SECONDS - window of the page score (default 1)");
    pub const PAGE_STATUS: DirectiveInfo = DirectiveInfo::new(c"DOSPageStatus", All, p::page_status, c"STATUS SCORE | off - add SCORE to the page score when the final status is STATUS");
    pub const PAGE_DEADLINE: DirectiveInfo = DirectiveInfo::new(c"DOSPageDeadline", All, p::page_deadline, c"SECONDS SCORE | off - add SCORE to the page score when a request took at least SECONDS");
    pub const CANONICAL: DirectiveInfo = DirectiveInfo::new(c"DOSCanonical", All, p::canonical, c"on|off - on: the query string is not part of the page (default on)");
    pub const SITE_COUNT: DirectiveInfo = DirectiveInfo::new(c"DOSSiteCount", Server, p::site_count, c"N - block a client whose score for one host exceeds N within DOSSiteInterval (default 50)");
    pub const PREFIX_COUNT: DirectiveInfo = DirectiveInfo::new(c"DOSPrefixCount", Server, p::prefix_count, c"24|56|48 N|off - block the whole IPv4 /24, IPv6 /56 or /48 whose site score exceeds N within DOSSiteInterval (default 8, 8, 32 x DOSSiteCount)");
    pub const SITE_INTERVAL: DirectiveInfo = DirectiveInfo::new(c"DOSSiteInterval", Server, p::site_interval, c"SECONDS - window of the site score (default 1)");
    pub const BLOCKING_PERIOD: DirectiveInfo = DirectiveInfo::new(c"DOSBlockingPeriod", Server, p::blocking_period, c"S1 [S2 ... S16] - block length in seconds for each successive block (default 10)");
    pub const HTTP_STATUS: DirectiveInfo = DirectiveInfo::new(c"DOSHTTPStatus", Server, p::http_status, c"STATUS - 4xx/5xx status of a refused request (default 429)");
    pub const SITE_STATUS_PENALTY: DirectiveInfo = DirectiveInfo::new(c"DOSSiteStatusPenalty", Server, p::site_status_penalty, c"STATUS SCORE | off - add SCORE to the site score when the final status is STATUS");
    pub const WHITELIST: DirectiveInfo = DirectiveInfo::new(c"DOSWhitelist", Server, p::whitelist, c"ADDR ... - addresses, CIDR networks or a.b.*.* wildcards never counted or blocked");
    pub const IPV6_PREFIX: DirectiveInfo = DirectiveInfo::new(c"DOSIPv6Prefix", Global, p::ipv6_prefix, c"BITS - IPv6 clients are grouped by this prefix length, 1-128 (default 64)");
    pub const LOG_DIR: DirectiveInfo = DirectiveInfo::new(c"DOSLogDir", Global, p::log_dir, c"DIR - absolute directory for the dos-<ip> block files (default /tmp)");
    pub const SYSTEM_COMMAND: DirectiveInfo = DirectiveInfo::new(c"DOSSystemCommand", Global, p::system_command, c"COMMAND - run at each block start, %s replaced by the client address");
    pub const EMAIL_NOTIFY: DirectiveInfo = DirectiveInfo::new(c"DOSEmailNotify", Global, p::email_notify, c"ADDRESS - mail this address at each block start");
    pub const CACHE: DirectiveInfo = DirectiveInfo::new(c"DOSCache", Global, p::cache, c"shmcb[:none|:/path](BYTES) | redis:HOST:PORT[,...] | memcache:HOST:PORT[,...] - shared store of each area, in memory or a file, or a farm's engine (default shmcb:none(22020096))");
    pub const CACHE_TIMEOUT: DirectiveInfo = DirectiveInfo::new(c"DOSCacheTimeout", Global, p::cache_timeout, c"COMMAND_MS [CONNECT_MS] - the most a request waits on the farm's engine, and a connection attempt (default 50 200)");
    pub const HASH_TABLE_SIZE: DirectiveInfo = DirectiveInfo::new(c"DOSHashTableSize", Global, p::hash_table_size, c"N - mod_evasive compatibility; accepted and ignored");
    pub const CHALLENGE: DirectiveInfo = DirectiveInfo::new(c"DOSChallenge", Server, p::challenge, c"on|off - a blocked browser gets a proof-of-work page and, solved, a pass (default off)");
    pub const CHALLENGE_DIFFICULTY: DirectiveInfo = DirectiveInfo::new(c"DOSChallengeDifficulty", Server, p::challenge_difficulty, c"BITS [STEP] - leading zero bits asked in block generation 1, and more per generation (default 14 2)");
    pub const CHALLENGE_PASS_TIME: DirectiveInfo = DirectiveInfo::new(c"DOSChallengePassTime", Server, p::challenge_pass_time, c"SECONDS - how long a pass lets its browser through (default 3600)");
    pub const CHALLENGE_PASS_LIMIT: DirectiveInfo = DirectiveInfo::new(c"DOSChallengePassLimit", Server, p::challenge_pass_limit, c"PASSES [BITS] - passes one client may earn per DOSChallengePassTime, and the bits each earned pass adds to the next (default 8 1)");
    pub const CHALLENGE_KEY: DirectiveInfo = DirectiveInfo::new(c"DOSChallengeKey", Server, p::challenge_key, c"FILE - key shared by several servers for nonces and passes (default: random per server)");
    pub const UNDER_ATTACK: DirectiveInfo = DirectiveInfo::new(c"DOSUnderAttack", All, p::under_attack, c"off|on|auto - every browser without a pass gets the challenge, always (on) or while the server is flooded (auto) (default off)");
    pub const UNDER_ATTACK_THRESHOLD: DirectiveInfo = DirectiveInfo::new(c"DOSUnderAttackThreshold", Global, p::under_attack_threshold, c"REQUESTS_PER_SECOND [BUSY_PERCENT] - when DOSUnderAttack auto switches on: the whole server's counted rate, or its busy workers (default 1000)");
}

/// Every directive name including aliases, in a fixed order: the single source of names,
/// scopes and parsers (see docs/directives.md, "Adding a directive"). The FFI registers one
/// `command_rec` per row and finds the row again by its index. (`DOSWhiteList` is not listed:
/// httpd matches names case-insensitively, so `DOSWhitelist` already covers it.)
#[rustfmt::skip]
pub const DIRECTIVES: &[DirectiveInfo] = &[
    rows::ENABLED,
    rows::PAGE_COUNT,
    rows::PAGE_INTERVAL,
    rows::PAGE_STATUS,
    rows::PAGE_STATUS.alias(c"DOSPageStatusPenalty", c"STATUS SCORE | off - alias of DOSPageStatus"),
    rows::PAGE_DEADLINE,
    rows::PAGE_DEADLINE.alias(c"DOSDeadlinePenalty", c"SECONDS SCORE | off - alias of DOSPageDeadline"),
    rows::CANONICAL,
    rows::CANONICAL.alias(c"DOSCanonicalize", c"on|off - alias of DOSCanonical"),
    rows::SITE_COUNT,
    rows::PREFIX_COUNT,
    rows::SITE_INTERVAL,
    rows::BLOCKING_PERIOD,
    rows::HTTP_STATUS,
    rows::HTTP_STATUS.alias(c"DOSHTTPResponseCode", c"STATUS - alias of DOSHTTPStatus"),
    rows::HTTP_STATUS.alias(c"DOSBlockingHttpResponse", c"STATUS - alias of DOSHTTPStatus"),
    rows::SITE_STATUS_PENALTY,
    rows::WHITELIST,
    rows::IPV6_PREFIX,
    rows::LOG_DIR,
    rows::SYSTEM_COMMAND,
    rows::EMAIL_NOTIFY,
    rows::CACHE,
    rows::CACHE_TIMEOUT,
    rows::HASH_TABLE_SIZE,
    rows::CHALLENGE,
    rows::CHALLENGE_DIFFICULTY,
    rows::CHALLENGE_PASS_TIME,
    rows::CHALLENGE_PASS_LIMIT,
    rows::CHALLENGE_KEY,
    rows::UNDER_ATTACK,
    rows::UNDER_ATTACK_THRESHOLD,
];

/// The server and directory configuration that directive lines (`Name args`, as in a config
/// file) make in one section, each line applied where its row's scope says, as the FFI does.
/// For tests, benches and tools.
pub fn from_lines(lines: &[&str]) -> Result<(ServerConfig, DirConfig), ConfigError> {
    let (mut server, mut dir) = (ServerConfig::default(), DirConfig::default());
    for line in lines {
        let line = line.trim();
        let (name, args) = match line.find(|c: char| c.is_ascii_whitespace()) {
            Some(i) => (&line[..i], line[i..].trim_start()),
            None => (line, ""),
        };
        let info = lookup(name).ok_or_else(|| ConfigError(format!("{name}: unknown directive")))?;
        let setting = info.parse(name, args)?;
        if info.scope == Scope::All {
            dir.apply(setting)?;
        } else {
            server.apply(setting)?;
        }
    }
    Ok((server, dir))
}

/// A configuration error. Displays as `DIRECTIVE: 'VALUE' why`, with the directive name as
/// the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// `DOSEnabled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enabled {
    On,
    Off,
    /// Every rule runs; a would-be block is logged instead of enforced.
    Monitor,
}

impl Enabled {
    pub fn as_str(self) -> &'static str {
        match self {
            Enabled::On => "on",
            Enabled::Off => "off",
            Enabled::Monitor => "monitor",
        }
    }
}

/// A status penalty: when the final status is `status`, add `score` (may be negative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Penalty {
    pub status: u16,
    pub score: i64,
}

/// A deadline step: a request that took at least `threshold_us` adds `score`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    pub threshold_us: u64,
    pub score: i64,
}

/// One line of a repeatable list directive: an entry, or `off` (clear the list here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListItem<T> {
    Entry(T),
    Off,
}

/// One parsed and validated directive line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Setting {
    Enabled(Enabled),
    PageCount(u32),
    PageInterval(u32),
    PageStatus(ListItem<Penalty>),
    PageDeadline(ListItem<Deadline>),
    Canonical(bool),
    SiteCount(u32),
    SiteInterval(u32),
    /// `DOSPrefixCount LEN N|off`: the level (24, 56 or 48) and its threshold (`None`: off).
    PrefixCount(u8, Option<u32>),
    /// 1..=16 values, each > 0.
    BlockingPeriod(Vec<u32>),
    HttpStatus(u16),
    SiteStatusPenalty(ListItem<Penalty>),
    /// One or more entries; they add to the context's whitelist.
    Whitelist(Vec<WhitelistEntry>),
    Ipv6Prefix(u8),
    LogDir(String),
    SystemCommand(String),
    EmailNotify(String),
    Cache(CacheSpec),
    /// `DOSHashTableSize`: validated, then ignored (the FFI logs that it is ignored).
    HashTableSize(u32),
    Challenge(bool),
    /// Bits for generation 1, bits added per generation.
    ChallengeDifficulty(u8, u8),
    ChallengePassTime(u32),
    ChallengePassLimit(u32, u8),
    ChallengeKey {
        path: String,
        key: crate::challenge::Key,
    },
    UnderAttack(crate::attack::Mode),
    UnderAttackThreshold(crate::attack::Threshold),
    /// `DOSCacheTimeout`: command and connect timeouts of the farm's engine, in ms.
    CacheTimeout(u32, u32),
}

impl Setting {
    /// Whether this setting decides if `DOSUnderAttack` applies to a request (its mode, or
    /// the module being on, off or in monitor mode there).
    pub fn decides_under_attack(&self) -> bool {
        matches!(self, Setting::UnderAttack(_) | Setting::Enabled(_))
    }

    /// True for the directives of [`Scope::All`] (read from the table): they go into
    /// [`DirConfig`]; the others into [`ServerConfig`].
    pub fn is_dir_scoped(&self) -> bool {
        lookup(self.directive()).is_some_and(|d| d.scope == Scope::All)
    }

    /// True for a directive accepted only for compatibility and otherwise without effect.
    pub fn is_ignored(&self) -> bool {
        matches!(self, Setting::HashTableSize(_))
    }

    /// The canonical directive name (aliases resolved).
    pub fn directive(&self) -> &'static str {
        let row = match self {
            Setting::Enabled(_) => rows::ENABLED,
            Setting::PageCount(_) => rows::PAGE_COUNT,
            Setting::PageInterval(_) => rows::PAGE_INTERVAL,
            Setting::PageStatus(_) => rows::PAGE_STATUS,
            Setting::PageDeadline(_) => rows::PAGE_DEADLINE,
            Setting::Canonical(_) => rows::CANONICAL,
            Setting::SiteCount(_) => rows::SITE_COUNT,
            Setting::SiteInterval(_) => rows::SITE_INTERVAL,
            Setting::PrefixCount(..) => rows::PREFIX_COUNT,
            Setting::BlockingPeriod(_) => rows::BLOCKING_PERIOD,
            Setting::HttpStatus(_) => rows::HTTP_STATUS,
            Setting::SiteStatusPenalty(_) => rows::SITE_STATUS_PENALTY,
            Setting::Whitelist(_) => rows::WHITELIST,
            Setting::Ipv6Prefix(_) => rows::IPV6_PREFIX,
            Setting::LogDir(_) => rows::LOG_DIR,
            Setting::SystemCommand(_) => rows::SYSTEM_COMMAND,
            Setting::EmailNotify(_) => rows::EMAIL_NOTIFY,
            Setting::Cache(_) => rows::CACHE,
            Setting::CacheTimeout(..) => rows::CACHE_TIMEOUT,
            Setting::HashTableSize(_) => rows::HASH_TABLE_SIZE,
            Setting::Challenge(_) => rows::CHALLENGE,
            Setting::ChallengeDifficulty(..) => rows::CHALLENGE_DIFFICULTY,
            Setting::ChallengePassTime(_) => rows::CHALLENGE_PASS_TIME,
            Setting::ChallengePassLimit(..) => rows::CHALLENGE_PASS_LIMIT,
            Setting::ChallengeKey { .. } => rows::CHALLENGE_KEY,
            Setting::UnderAttack(_) => rows::UNDER_ATTACK,
            Setting::UnderAttackThreshold(_) => rows::UNDER_ATTACK_THRESHOLD,
        };
        row.name_str()
    }
}

/// The table entry for `name` (case-insensitive, aliases included; `DOSWhiteList` finds
/// `DOSWhitelist`).
pub fn lookup(name: &str) -> Option<&'static DirectiveInfo> {
    DIRECTIVES
        .iter()
        .find(|d| d.name.to_bytes().eq_ignore_ascii_case(name.as_bytes()))
}
