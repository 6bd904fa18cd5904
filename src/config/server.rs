//! Per-server settings (main server and `<VirtualHost>`): what each context sets, how a vhost
//! inherits from the main server, and the concrete values resolved once at startup.

use super::lists::ScoreList;
use super::{
    CacheSpec, ConfigError, Penalty, Setting, DEFAULT_BLOCKING_PERIOD, DEFAULT_HTTP_STATUS,
    DEFAULT_IPV6_PREFIX, DEFAULT_LOG_DIR, DEFAULT_SITE_COUNT, DEFAULT_SITE_INTERVAL,
    MIN_BLOCK_MEMORY_SECS,
};
use crate::challenge::{self, Key};
use crate::client::Whitelist;
use crate::prefix::PrefixCounts;

/// What one server context sets; `None` / empty means "inherit" (or the compiled default).
#[derive(Clone, Debug, Default)]
pub struct ServerConfig {
    site_count: Option<u32>,
    site_interval: Option<u32>,
    /// `DOSPrefixCount`, per level in the order of [`crate::prefix::LEVELS`]: `Some(None)`
    /// is `off`, `None` inherits (or the default multiple of the site count).
    prefix_counts: [Option<Option<u32>>; 3],
    blocking_periods: Option<Vec<u32>>,
    http_status: Option<u16>,
    site_status: ScoreList<Penalty>,
    whitelist: Whitelist,
    ipv6_prefix: Option<u8>,
    log_dir: Option<String>,
    system_command: Option<String>,
    email_notify: Option<String>,
    cache: Option<CacheSpec>,
    cache_timeout: Option<(u32, u32)>,
    hash_table_size: Option<u32>,
    challenge: Option<bool>,
    challenge_difficulty: Option<(u8, u8)>,
    challenge_pass_time: Option<u32>,
    challenge_pass_limit: Option<(u32, u8)>,
    challenge_key: Option<(String, Key)>,
    under_attack_threshold: Option<crate::attack::Threshold>,
}

impl ServerConfig {
    /// Applies one server-level directive. Directory-level settings are refused (the FFI
    /// sends those to [`DirConfig`](super::DirConfig)).
    pub fn apply(&mut self, s: Setting) -> Result<(), ConfigError> {
        match s {
            Setting::SiteCount(v) => self.site_count = Some(v),
            Setting::SiteInterval(v) => self.site_interval = Some(v),
            Setting::PrefixCount(len, count) => {
                if let Some(i) = crate::prefix::LEVELS.iter().position(|l| l.1 == len) {
                    self.prefix_counts[i] = Some(count);
                }
            }
            Setting::BlockingPeriod(v) => self.blocking_periods = Some(v),
            Setting::HttpStatus(v) => self.http_status = Some(v),
            Setting::SiteStatusPenalty(item) => self.site_status.apply(item),
            Setting::Whitelist(entries) => {
                for e in entries {
                    self.whitelist.push(e);
                }
            }
            Setting::Ipv6Prefix(v) => self.ipv6_prefix = Some(v),
            Setting::LogDir(v) => self.log_dir = Some(v),
            Setting::SystemCommand(v) => self.system_command = Some(v),
            Setting::EmailNotify(v) => self.email_notify = Some(v),
            Setting::Cache(v) => self.cache = Some(v),
            Setting::CacheTimeout(c, k) => self.cache_timeout = Some((c, k)),
            Setting::HashTableSize(v) => self.hash_table_size = Some(v),
            Setting::Challenge(v) => self.challenge = Some(v),
            Setting::ChallengeDifficulty(b, s) => self.challenge_difficulty = Some((b, s)),
            Setting::ChallengePassTime(v) => self.challenge_pass_time = Some(v),
            Setting::ChallengePassLimit(n, b) => self.challenge_pass_limit = Some((n, b)),
            Setting::ChallengeKey { path, key } => self.challenge_key = Some((path, key)),
            Setting::UnderAttackThreshold(t) => self.under_attack_threshold = Some(t),
            other => {
                return Err(ConfigError(format!(
                    "{}: belongs to the directory configuration, not the server's",
                    other.directive()
                )))
            }
        }
        Ok(())
    }

    /// `child` (a `<VirtualHost>`) overrides only what it sets; its whitelist adds to the
    /// parent's; site status penalties merge entry by entry (`off` drops the parent's).
    pub fn merge(parent: &ServerConfig, child: &ServerConfig) -> ServerConfig {
        let mut whitelist = parent.whitelist.clone();
        whitelist.extend(&child.whitelist);
        ServerConfig {
            site_count: child.site_count.or(parent.site_count),
            site_interval: child.site_interval.or(parent.site_interval),
            prefix_counts: std::array::from_fn(|i| {
                child.prefix_counts[i].or(parent.prefix_counts[i])
            }),
            blocking_periods: child
                .blocking_periods
                .clone()
                .or_else(|| parent.blocking_periods.clone()),
            http_status: child.http_status.or(parent.http_status),
            site_status: ScoreList::merge(&parent.site_status, &child.site_status),
            whitelist,
            ipv6_prefix: child.ipv6_prefix.or(parent.ipv6_prefix),
            log_dir: child.log_dir.clone().or_else(|| parent.log_dir.clone()),
            system_command: child
                .system_command
                .clone()
                .or_else(|| parent.system_command.clone()),
            email_notify: child
                .email_notify
                .clone()
                .or_else(|| parent.email_notify.clone()),
            cache: child.cache.clone().or_else(|| parent.cache.clone()),
            cache_timeout: child.cache_timeout.or(parent.cache_timeout),
            hash_table_size: child.hash_table_size.or(parent.hash_table_size),
            challenge: child.challenge.or(parent.challenge),
            challenge_difficulty: child.challenge_difficulty.or(parent.challenge_difficulty),
            challenge_pass_time: child.challenge_pass_time.or(parent.challenge_pass_time),
            challenge_pass_limit: child.challenge_pass_limit.or(parent.challenge_pass_limit),
            challenge_key: child
                .challenge_key
                .clone()
                .or_else(|| parent.challenge_key.clone()),
            under_attack_threshold: child
                .under_attack_threshold
                .or(parent.under_attack_threshold),
        }
    }

    /// Concrete values, compiled defaults filling what nobody set.
    pub fn resolve(&self) -> ServerSettings {
        let site_count = self.site_count.unwrap_or(DEFAULT_SITE_COUNT);
        ServerSettings {
            site_count,
            prefix_counts: PrefixCounts::resolve(site_count, &self.prefix_counts),
            site_interval: self.site_interval.unwrap_or(DEFAULT_SITE_INTERVAL),
            blocking_periods: self
                .blocking_periods
                .clone()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| vec![DEFAULT_BLOCKING_PERIOD]),
            http_status: self.http_status.unwrap_or(DEFAULT_HTTP_STATUS),
            site_status_penalties: self.site_status.as_slice().to_vec(),
            whitelist: self.whitelist.clone(),
            ipv6_prefix: self.ipv6_prefix.unwrap_or(DEFAULT_IPV6_PREFIX),
            log_dir: self
                .log_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_LOG_DIR.to_string()),
            system_command: self.system_command.clone(),
            email_notify: self.email_notify.clone(),
            cache: match (self.cache.clone().unwrap_or_default(), self.cache_timeout) {
                (CacheSpec::Farm(mut spec), Some((command, connect))) => {
                    spec.command_timeout_ms = command;
                    spec.connect_timeout_ms = connect;
                    CacheSpec::Farm(spec)
                }
                (cache, _) => cache,
            },
            site_name: String::new(),
            challenge: self.challenge_settings(),
            under_attack: self.under_attack_threshold.unwrap_or_default(),
        }
    }

    fn challenge_settings(&self) -> challenge::Settings {
        let d = challenge::Settings::default();
        let (base_bits, step_bits) = self
            .challenge_difficulty
            .unwrap_or((d.base_bits, d.step_bits));
        let (pass_limit, pass_step_bits) = self
            .challenge_pass_limit
            .unwrap_or((d.pass_limit, d.pass_step_bits));
        challenge::Settings {
            enabled: self.challenge.unwrap_or(d.enabled),
            base_bits,
            step_bits,
            pass_secs: self.challenge_pass_time.unwrap_or(d.pass_secs),
            pass_limit,
            pass_step_bits,
            key_file: self.challenge_key.as_ref().map(|(p, _)| p.clone()),
            key: self.challenge_key.as_ref().map(|(_, k)| *k),
        }
    }

    /// The `DOSHashTableSize` value, if one was given (it has no effect).
    pub fn hash_table_size(&self) -> Option<u32> {
        self.hash_table_size
    }
}

/// The effective settings of one server, resolved once at startup and then only read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    pub site_count: u32,
    /// Seconds.
    pub site_interval: u32,
    /// The site thresholds of the client's wider networks (`DOSPrefixCount`), counted
    /// within `site_interval`.
    pub prefix_counts: PrefixCounts,
    /// 1..=16 values, each > 0: the block length of generation 1, 2, …
    pub blocking_periods: Vec<u32>,
    pub http_status: u16,
    /// Sorted by status, one entry per status.
    pub site_status_penalties: Vec<Penalty>,
    pub whitelist: Whitelist,
    pub ipv6_prefix: u8,
    pub log_dir: String,
    pub system_command: Option<String>,
    pub email_notify: Option<String>,
    pub cache: CacheSpec,
    /// The virtual host as the site key names it, `servername[:port]` (lower-case), filled
    /// in from httpd's server_rec at startup: every Host that httpd maps to this virtual host
    /// (its ServerAlias names, or any name for the default one) is the same site.
    pub site_name: String,
    pub challenge: challenge::Settings,
    /// `DOSUnderAttackThreshold` (the main server's: the switch is the whole server's).
    pub under_attack: crate::attack::Threshold,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerConfig::default().resolve()
    }
}

impl ServerSettings {
    /// The longest block this server gives, in seconds.
    pub fn longest_period(&self) -> u32 {
        self.blocking_periods
            .iter()
            .copied()
            .max()
            .unwrap_or(DEFAULT_BLOCKING_PERIOD)
    }

    /// Block length in seconds for a generation (1-based; 0 is treated as 1); past the last
    /// value the last one repeats.
    pub fn period_for_generation(&self, generation: u32) -> u32 {
        let i = (generation.max(1) - 1) as usize;
        self.blocking_periods
            .get(i)
            .or(self.blocking_periods.last())
            .copied()
            .unwrap_or(DEFAULT_BLOCKING_PERIOD)
    }

    /// How long a block record remembers its generation after the block ends: the longest
    /// period, and at least a day.
    pub fn block_memory_secs(&self) -> u32 {
        self.blocking_periods
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(MIN_BLOCK_MEMORY_SECS)
    }

    /// The site score added when the final status is `status`.
    #[inline]
    pub fn site_status_score(&self, status: u16) -> Option<i64> {
        super::lists::exact(&self.site_status_penalties, u64::from(status)).map(|p| p.score)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{from_lines, parse};

    #[test]
    fn compiled_defaults_are_mod_evasive_s() {
        let s = ServerConfig::default().resolve();
        assert_eq!(s.site_count, 50);
        assert_eq!(s.site_interval, 1);
        assert_eq!(s.blocking_periods, vec![10]);
        assert_eq!(s.http_status, 429);
        assert!(s.site_status_penalties.is_empty());
        assert!(s.whitelist.is_empty());
        assert_eq!(s.ipv6_prefix, 64);
        assert_eq!(s.log_dir, "/tmp");
        assert_eq!(s.system_command, None);
        assert_eq!(s.email_notify, None);
        assert_eq!(
            s.cache,
            CacheSpec::Shmcb {
                bytes: crate::config::DEFAULT_CACHE_BYTES
            }
        );
        assert_eq!(ServerSettings::default(), s);
    }

    #[test]
    fn refuses_dir_settings() {
        let mut s = ServerConfig::default();
        let e = s.apply(parse("DOSPageCount", "5").unwrap()).unwrap_err();
        assert!(e.0.contains("DOSPageCount"), "{e}");
    }

    #[test]
    fn generations() {
        let s = from_lines(&["DOSBlockingPeriod 5 60 120"])
            .unwrap()
            .0
            .resolve();
        assert_eq!(s.period_for_generation(0), 5);
        assert_eq!(s.period_for_generation(1), 5);
        assert_eq!(s.period_for_generation(2), 60);
        assert_eq!(s.period_for_generation(3), 120);
        assert_eq!(s.period_for_generation(4), 120);
        assert_eq!(s.period_for_generation(u32::MAX), 120);
        assert_eq!(s.block_memory_secs(), 86_400);
        let s = from_lines(&["DOSBlockingPeriod 5 172800 60"])
            .unwrap()
            .0
            .resolve();
        assert_eq!(s.block_memory_secs(), 172_800);
        assert_eq!(ServerSettings::default().period_for_generation(7), 10);
    }

    #[test]
    fn later_blocking_period_replaces() {
        let s = from_lines(&["DOSBlockingPeriod 5 60", "DOSBlockingPeriod 30"])
            .unwrap()
            .0
            .resolve();
        assert_eq!(s.blocking_periods, vec![30]);
    }

    #[test]
    fn vhost_overrides_only_what_it_sets() {
        let main = from_lines(&[
            "DOSSiteCount 500",
            "DOSSiteInterval 120",
            "DOSBlockingPeriod 5 60",
            "DOSHTTPStatus 403",
            "DOSLogDir /var/log/shield",
            "DOSWhitelist 127.0.0.1",
            "DOSSiteStatusPenalty 404 50",
            "DOSSiteStatusPenalty 301 25",
        ])
        .unwrap()
        .0;
        let vhost = from_lines(&[
            "DOSSiteCount 20",
            "DOSWhitelist 10.0.0.0/8",
            "DOSSiteStatusPenalty 404 5",
        ])
        .unwrap()
        .0;
        let s = ServerConfig::merge(&main, &vhost).resolve();
        assert_eq!(s.site_count, 20);
        assert_eq!(s.site_interval, 120);
        assert_eq!(s.blocking_periods, vec![5, 60]);
        assert_eq!(s.http_status, 403);
        assert_eq!(s.log_dir, "/var/log/shield");
        assert_eq!(s.whitelist.entries(), vec!["127.0.0.1", "10.0.0.0/8"]);
        assert_eq!(s.site_status_score(404), Some(5));
        assert_eq!(s.site_status_score(301), Some(25));
        assert_eq!(s.site_status_score(302), None);
        // The main server itself is unchanged by the merge.
        let m = main.resolve();
        assert_eq!(m.site_count, 500);
        assert_eq!(m.whitelist.entries(), vec!["127.0.0.1"]);
        // A vhost without DOS directives inherits everything (mod_evasive lost it).
        let plain = ServerConfig::merge(&main, &ServerConfig::default()).resolve();
        assert_eq!(plain, m);
    }

    #[test]
    fn prefix_counts_follow_the_site_count_unless_set() {
        let main = from_lines(&["DOSSiteCount 20", "DOSPrefixCount 48 100"])
            .unwrap()
            .0;
        let m = main.resolve();
        assert_eq!(
            (
                m.prefix_counts.count(24),
                m.prefix_counts.count(56),
                m.prefix_counts.count(48)
            ),
            (Some(160), Some(160), Some(100))
        );
        // A vhost with its own site count: the defaults follow it, the set level is kept.
        let vhost = from_lines(&["DOSSiteCount 5", "DOSPrefixCount 24 off"])
            .unwrap()
            .0;
        let v = ServerConfig::merge(&main, &vhost).resolve();
        assert_eq!(
            (
                v.prefix_counts.count(24),
                v.prefix_counts.count(56),
                v.prefix_counts.count(48)
            ),
            (None, Some(40), Some(100))
        );
    }

    #[test]
    fn vhost_off_drops_site_penalties() {
        let main = from_lines(&["DOSSiteStatusPenalty 404 50"]).unwrap().0;
        let vhost = from_lines(&["DOSSiteStatusPenalty off"]).unwrap().0;
        let s = ServerConfig::merge(&main, &vhost).resolve();
        assert_eq!(s.site_status_score(404), None);
    }

    #[test]
    fn globals_are_inherited_by_vhosts() {
        let main = from_lines(&[
            "DOSIPv6Prefix 56",
            "DOSSystemCommand \"/usr/local/bin/ban %s\"",
            "DOSEmailNotify root@localhost",
            "DOSCache shmcb:none(1048576)",
            "DOSHashTableSize 3097",
        ])
        .unwrap()
        .0;
        let s = ServerConfig::merge(&main, &from_lines(&["DOSSiteCount 9"]).unwrap().0);
        assert_eq!(s.hash_table_size(), Some(3097));
        let s = s.resolve();
        assert_eq!(s.ipv6_prefix, 56);
        assert_eq!(s.system_command.as_deref(), Some("/usr/local/bin/ban %s"));
        assert_eq!(s.email_notify.as_deref(), Some("root@localhost"));
        assert_eq!(s.cache, CacheSpec::Shmcb { bytes: 1_048_576 });
    }
}
