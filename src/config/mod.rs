//! Directives: parsing, validation, typed settings and merging.
//!
//! httpd hands every `DOS*` line to [`parse`] (all directives are registered RAW_ARGS), which
//! validates it completely and returns a [`Setting`]. The FFI applies it to the
//! [`ServerConfig`] or [`DirConfig`] of the section it appeared in ([`Setting::is_dir_scoped`]).
//! httpd merges those ([`ServerConfig::merge`] at startup, [`DirConfig::merge`] per request);
//! each server's settings are resolved once ([`ServerConfig::resolve`]) to concrete values.
//!
//! Nothing here touches httpd; `docs/directives.md` is the user-facing reference.

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
use std::fmt;

pub use cache::CacheSpec;
pub use canonical::canonical_lines;
pub use dir::DirConfig;
pub use parse::parse;
pub use server::{ServerConfig, ServerSettings};

use crate::client::WhitelistEntry;

/// Compiled defaults: mod_evasive's, so an evasive configuration behaves alike (SPEC §6).
pub const DEFAULT_PAGE_COUNT: u32 = 2;
pub const DEFAULT_PAGE_INTERVAL: u32 = 1;
pub const DEFAULT_SITE_COUNT: u32 = 50;
pub const DEFAULT_SITE_INTERVAL: u32 = 1;
pub const DEFAULT_BLOCKING_PERIOD: u32 = 10;
pub const DEFAULT_HTTP_STATUS: u16 = 429;
pub const DEFAULT_IPV6_PREFIX: u8 = 64;
pub const DEFAULT_LOG_DIR: &str = "/tmp";
/// Default size of each shared area (shmcb's own default).
pub const DEFAULT_CACHE_BYTES: usize = 524_288;
/// shmcb's minimum; smaller is a configuration error.
pub const MIN_CACHE_BYTES: usize = 8192;
/// Upper bound per area (1 GiB): far above any sane table, low enough to catch a typo.
pub const MAX_CACHE_BYTES: usize = 1 << 30;
/// Most `DOSBlockingPeriod` values (block generations).
pub const MAX_BLOCKING_PERIODS: usize = 16;
/// A blocked client's generation is remembered at least this long (SPEC §4).
pub const MIN_BLOCK_MEMORY_SECS: u32 = 86_400;

/// Where a directive may appear. The FFI maps: Global => RSRC_CONF plus a GLOBAL_ONLY check
/// (main server only, not `<VirtualHost>`); Server => RSRC_CONF (server config and
/// `<VirtualHost>`); All => RSRC_CONF|ACCESS_CONF|OR_ALL (also `<Directory>`, `<Location>`,
/// `<Files>`, `<If>`, `.htaccess`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Global,
    Server,
    All,
}

/// One entry of the directive table the FFI registers.
#[derive(Debug)]
pub struct DirectiveInfo {
    /// The name as documented (httpd matches it case-insensitively).
    pub name: &'static CStr,
    pub scope: Scope,
    /// One-line help httpd prints with a syntax error.
    pub usage: &'static CStr,
    /// For an alias, the canonical name it stands for.
    pub alias_of: Option<&'static str>,
}

const fn d(name: &'static CStr, scope: Scope, usage: &'static CStr) -> DirectiveInfo {
    DirectiveInfo {
        name,
        scope,
        usage,
        alias_of: None,
    }
}

const fn alias(
    name: &'static CStr,
    scope: Scope,
    usage: &'static CStr,
    of: &'static str,
) -> DirectiveInfo {
    DirectiveInfo {
        name,
        scope,
        usage,
        alias_of: Some(of),
    }
}

/// Every directive name including aliases, in a fixed order. (`DOSWhiteList` is not listed:
/// httpd matches names case-insensitively, so `DOSWhitelist` already covers it.)
pub const DIRECTIVES: &[DirectiveInfo] = &[
    d(c"DOSEnabled", Scope::All, c"on|off|monitor - count and block (default), exempt, or only log 'would block'"),
    d(c"DOSPageCount", Scope::All, c"N - block a client whose score for one page exceeds N within DOSPageInterval (default 2)"),
    d(c"DOSPageInterval", Scope::All, c"SECONDS - window of the page score (default 1)"),
    d(c"DOSPageStatus", Scope::All, c"STATUS SCORE | off - add SCORE to the page score when the final status is STATUS"),
    alias(c"DOSPageStatusPenalty", Scope::All, c"STATUS SCORE | off - alias of DOSPageStatus", "DOSPageStatus"),
    d(c"DOSPageDeadline", Scope::All, c"SECONDS SCORE | off - add SCORE to the page score when a request took at least SECONDS"),
    alias(c"DOSDeadlinePenalty", Scope::All, c"SECONDS SCORE | off - alias of DOSPageDeadline", "DOSPageDeadline"),
    d(c"DOSCanonical", Scope::All, c"on|off - on: the query string is not part of the page (default on)"),
    alias(c"DOSCanonicalize", Scope::All, c"on|off - alias of DOSCanonical", "DOSCanonical"),
    d(c"DOSSiteCount", Scope::Server, c"N - block a client whose score for one host exceeds N within DOSSiteInterval (default 50)"),
    d(c"DOSSiteInterval", Scope::Server, c"SECONDS - window of the site score (default 1)"),
    d(c"DOSBlockingPeriod", Scope::Server, c"S1 [S2 ... S16] - block length in seconds for each successive block (default 10)"),
    d(c"DOSHTTPStatus", Scope::Server, c"STATUS - 4xx/5xx status of a refused request (default 429)"),
    alias(c"DOSHTTPResponseCode", Scope::Server, c"STATUS - alias of DOSHTTPStatus", "DOSHTTPStatus"),
    alias(c"DOSBlockingHttpResponse", Scope::Server, c"STATUS - alias of DOSHTTPStatus", "DOSHTTPStatus"),
    d(c"DOSSiteStatusPenalty", Scope::Server, c"STATUS SCORE | off - add SCORE to the site score when the final status is STATUS"),
    d(c"DOSWhitelist", Scope::Server, c"ADDR ... - addresses, CIDR networks or a.b.*.* wildcards never counted or blocked"),
    d(c"DOSIPv6Prefix", Scope::Global, c"BITS - IPv6 clients are grouped by this prefix length, 1-128 (default 64)"),
    d(c"DOSLogDir", Scope::Global, c"DIR - absolute directory for the dos-<ip> block files (default /tmp)"),
    d(c"DOSSystemCommand", Scope::Global, c"COMMAND - run at each block start, %s replaced by the client address"),
    d(c"DOSEmailNotify", Scope::Global, c"ADDRESS - mail this address at each block start"),
    d(c"DOSCache", Scope::Global, c"shmcb[:none|:/path](BYTES) | PROVIDER:ARGS - shared store of each area, in memory or a file (default shmcb:none(524288))"),
    d(c"DOSHashTableSize", Scope::Global, c"N - mod_evasive compatibility; accepted and ignored"),
    d(c"DOSChallenge", Scope::Server, c"on|off - a blocked browser gets a proof-of-work page and, solved, a pass (default off)"),
    d(c"DOSChallengeDifficulty", Scope::Server, c"BITS [STEP] - leading zero bits asked in block generation 1, and more per generation (default 14 2)"),
    d(c"DOSChallengePassTime", Scope::Server, c"SECONDS - how long a pass lets its browser through (default 3600)"),
    d(c"DOSChallengeKey", Scope::Server, c"FILE - key shared by several servers for nonces and passes (default: random per server)"),
];

/// A configuration error. Displays as `DIRECTIVE: 'VALUE' why`, with the directive name as
/// the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

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
    ChallengeKey {
        path: String,
        key: crate::challenge::Key,
    },
}

impl Setting {
    /// True for the directives of [`Scope::All`]: they go into [`DirConfig`]; the others into
    /// [`ServerConfig`].
    pub fn is_dir_scoped(&self) -> bool {
        matches!(
            self,
            Setting::Enabled(_)
                | Setting::PageCount(_)
                | Setting::PageInterval(_)
                | Setting::PageStatus(_)
                | Setting::PageDeadline(_)
                | Setting::Canonical(_)
        )
    }

    /// True for a directive accepted only for compatibility and otherwise without effect.
    pub fn is_ignored(&self) -> bool {
        matches!(self, Setting::HashTableSize(_))
    }

    /// The canonical directive name (aliases resolved).
    pub fn directive(&self) -> &'static str {
        match self {
            Setting::Enabled(_) => "DOSEnabled",
            Setting::PageCount(_) => "DOSPageCount",
            Setting::PageInterval(_) => "DOSPageInterval",
            Setting::PageStatus(_) => "DOSPageStatus",
            Setting::PageDeadline(_) => "DOSPageDeadline",
            Setting::Canonical(_) => "DOSCanonical",
            Setting::SiteCount(_) => "DOSSiteCount",
            Setting::SiteInterval(_) => "DOSSiteInterval",
            Setting::BlockingPeriod(_) => "DOSBlockingPeriod",
            Setting::HttpStatus(_) => "DOSHTTPStatus",
            Setting::SiteStatusPenalty(_) => "DOSSiteStatusPenalty",
            Setting::Whitelist(_) => "DOSWhitelist",
            Setting::Ipv6Prefix(_) => "DOSIPv6Prefix",
            Setting::LogDir(_) => "DOSLogDir",
            Setting::SystemCommand(_) => "DOSSystemCommand",
            Setting::EmailNotify(_) => "DOSEmailNotify",
            Setting::Cache(_) => "DOSCache",
            Setting::HashTableSize(_) => "DOSHashTableSize",
            Setting::Challenge(_) => "DOSChallenge",
            Setting::ChallengeDifficulty(..) => "DOSChallengeDifficulty",
            Setting::ChallengePassTime(_) => "DOSChallengePassTime",
            Setting::ChallengeKey { .. } => "DOSChallengeKey",
        }
    }
}

/// The table entry for `name` (case-insensitive, aliases included; `DOSWhiteList` finds
/// `DOSWhitelist`).
pub fn lookup(name: &str) -> Option<&'static DirectiveInfo> {
    DIRECTIVES
        .iter()
        .find(|d| d.name.to_bytes().eq_ignore_ascii_case(name.as_bytes()))
}
