//! Per-directory settings (the directives of [`Scope::All`](super::Scope::All)): merged by
//! httpd for every request, so merging copies a few words and at most two `Arc` pointers.

use super::lists::ScoreList;
use super::{
    ConfigError, Deadline, Enabled, Penalty, Setting, DEFAULT_PAGE_COUNT, DEFAULT_PAGE_INTERVAL,
};

/// What one section (server, `<VirtualHost>`, `<Directory>`, `<Location>`, `<Files>`, `<If>`;
/// never `.htaccess`) sets; `None` / empty means "inherit".
#[derive(Clone, Debug, Default)]
pub struct DirConfig {
    enabled: Option<Enabled>,
    page_count: Option<u32>,
    page_interval: Option<u32>,
    canonical: Option<bool>,
    page_status: ScoreList<Penalty>,
    deadlines: ScoreList<Deadline>,
    under_attack: Option<crate::attack::Mode>,
}

impl DirConfig {
    /// Applies one directive of this section. Server-level settings are refused (the FFI
    /// sends those to [`ServerConfig`](super::ServerConfig)).
    pub fn apply(&mut self, s: Setting) -> Result<(), ConfigError> {
        match s {
            Setting::Enabled(v) => self.enabled = Some(v),
            Setting::PageCount(v) => self.page_count = Some(v),
            Setting::PageInterval(v) => self.page_interval = Some(v),
            Setting::Canonical(v) => self.canonical = Some(v),
            Setting::PageStatus(item) => self.page_status.apply(item),
            Setting::PageDeadline(item) => self.deadlines.apply(item),
            Setting::UnderAttack(m) => {
                crate::attack::note_configured(m);
                self.under_attack = Some(m);
            }
            other => {
                return Err(ConfigError(format!(
                    "{}: not allowed in a directory context",
                    other.directive()
                )))
            }
        }
        Ok(())
    }

    /// `child` overrides only what it sets; lists merge entry by entry (see `ScoreList`).
    pub fn merge(parent: &DirConfig, child: &DirConfig) -> DirConfig {
        DirConfig {
            enabled: child.enabled.or(parent.enabled),
            page_count: child.page_count.or(parent.page_count),
            page_interval: child.page_interval.or(parent.page_interval),
            canonical: child.canonical.or(parent.canonical),
            page_status: ScoreList::merge(&parent.page_status, &child.page_status),
            deadlines: ScoreList::merge(&parent.deadlines, &child.deadlines),
            under_attack: child.under_attack.or(parent.under_attack),
        }
    }

    #[inline]
    pub fn enabled(&self) -> Enabled {
        self.enabled.unwrap_or(Enabled::On)
    }

    #[inline]
    pub fn page_count(&self) -> u32 {
        self.page_count.unwrap_or(DEFAULT_PAGE_COUNT)
    }

    /// Seconds.
    #[inline]
    pub fn page_interval(&self) -> u32 {
        self.page_interval.unwrap_or(DEFAULT_PAGE_INTERVAL)
    }

    /// `DOSUnderAttack` as set here or inherited (`None`: nowhere, which is off, but
    /// `shieldctl under-attack on` reaches it; an explicit `off` exempts the context).
    #[inline]
    pub fn under_attack(&self) -> Option<crate::attack::Mode> {
        self.under_attack
    }

    /// On: the query string is not part of the page key.
    #[inline]
    pub fn canonical(&self) -> bool {
        self.canonical.unwrap_or(true)
    }

    /// The page score added when the final status is `status`.
    #[inline]
    pub fn page_status_score(&self, status: u16) -> Option<i64> {
        self.page_status.get(u64::from(status)).map(|p| p.score)
    }

    /// The deadline step for a request that took `duration_us`: the entry with the largest
    /// threshold <= duration, as (threshold µs, score).
    #[inline]
    pub fn deadline_score(&self, duration_us: u64) -> Option<(u64, i64)> {
        self.deadlines
            .step(duration_us)
            .map(|d| (d.threshold_us, d.score))
    }

    /// Effective page status penalties, sorted by status.
    pub fn page_status_penalties(&self) -> &[Penalty] {
        self.page_status.as_slice()
    }

    /// Effective deadline steps, sorted by threshold.
    pub fn page_deadlines(&self) -> &[Deadline] {
        self.deadlines.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{from_lines, parse};

    #[test]
    fn defaults() {
        let d = DirConfig::default();
        assert_eq!(d.enabled(), Enabled::On);
        assert_eq!(d.page_count(), 2);
        assert_eq!(d.page_interval(), 1);
        assert!(d.canonical());
        assert_eq!(d.page_status_score(404), None);
        assert_eq!(d.deadline_score(u64::MAX), None);
    }

    #[test]
    fn refuses_server_settings() {
        let mut d = DirConfig::default();
        let e = d.apply(parse("DOSSiteCount", "5").unwrap()).unwrap_err();
        assert!(e.0.contains("DOSSiteCount"), "{e}");
    }

    #[test]
    fn child_overrides_only_what_it_sets() {
        let server = from_lines(&["DOSPageCount 90", "DOSPageInterval 60", "DOSCanonical off"])
            .unwrap()
            .1;
        let files = from_lines(&["DOSPageCount 3"]).unwrap().1;
        let iff = from_lines(&["DOSEnabled off"]).unwrap().1;
        let m = DirConfig::merge(&DirConfig::merge(&server, &files), &iff);
        assert_eq!(m.page_count(), 3);
        assert_eq!(m.page_interval(), 60);
        assert!(!m.canonical());
        assert_eq!(m.enabled(), Enabled::Off);
        let m2 = DirConfig::merge(&server, &files);
        assert_eq!(m2.enabled(), Enabled::On);
    }

    #[test]
    fn monitor_mode_inherits() {
        let server = from_lines(&["DOSEnabled monitor"]).unwrap().1;
        let loc = from_lines(&["DOSPageCount 4"]).unwrap().1;
        assert_eq!(DirConfig::merge(&server, &loc).enabled(), Enabled::Monitor);
    }

    #[test]
    fn status_penalties_merge() {
        let server = from_lines(&["DOSPageStatus 404 50", "DOSPageStatus 403 10"])
            .unwrap()
            .1;
        let loc = from_lines(&["DOSPageStatusPenalty 404 -2", "DOSPageStatus 418 9"])
            .unwrap()
            .1;
        let m = DirConfig::merge(&server, &loc);
        assert_eq!(m.page_status_score(404), Some(-2));
        assert_eq!(m.page_status_score(403), Some(10));
        assert_eq!(m.page_status_score(418), Some(9));
        assert_eq!(m.page_status_score(200), None);
        let off = from_lines(&["DOSPageStatus off"]).unwrap().1;
        let m = DirConfig::merge(&server, &off);
        assert_eq!(m.page_status_score(404), None);
        assert!(m.page_status_penalties().is_empty());
    }

    #[test]
    fn deadline_steps() {
        let d = from_lines(&[
            "DOSPageDeadline 0.5 5",
            "DOSPageDeadline 1 5",
            "DOSPageDeadline 2.5 10",
            "DOSPageDeadline 5 20",
            "DOSDeadlinePenalty 10 45",
        ])
        .unwrap()
        .1;
        assert_eq!(d.deadline_score(0), None);
        assert_eq!(d.deadline_score(499_999), None);
        assert_eq!(d.deadline_score(500_000), Some((500_000, 5)));
        assert_eq!(d.deadline_score(1_069_000), Some((1_000_000, 5)));
        assert_eq!(d.deadline_score(2_500_000), Some((2_500_000, 10)));
        assert_eq!(d.deadline_score(9_999_999), Some((5_000_000, 20)));
        assert_eq!(d.deadline_score(60_000_000), Some((10_000_000, 45)));
    }

    #[test]
    fn deadline_curve_with_negative_scores_and_off() {
        // The forum's curve: 0 -1, 0.05 0, 1.5 1.
        let d = from_lines(&[
            "DOSPageDeadline 0 -1",
            "DOSPageDeadline 0.05 0",
            "DOSPageDeadline 1.5 1",
        ])
        .unwrap()
        .1;
        assert_eq!(d.deadline_score(10_000), Some((0, -1)));
        assert_eq!(d.deadline_score(50_000), Some((50_000, 0)));
        assert_eq!(d.deadline_score(1_500_000), Some((1_500_000, 1)));
        // `off, 1 5, 5 15` in a child: < 1 s scores nothing, the parent's curve is gone.
        let child = from_lines(&[
            "DOSPageDeadline off",
            "DOSPageDeadline 1 5",
            "DOSPageDeadline 5 15",
        ])
        .unwrap()
        .1;
        let m = DirConfig::merge(&d, &child);
        assert_eq!(m.deadline_score(10_000), None);
        assert_eq!(m.deadline_score(999_999), None);
        assert_eq!(m.deadline_score(1_000_000), Some((1_000_000, 5)));
        assert_eq!(m.deadline_score(4_999_999), Some((1_000_000, 5)));
        assert_eq!(m.deadline_score(5_000_000), Some((5_000_000, 15)));
    }

    #[test]
    fn deadline_same_threshold_replaces() {
        let d = from_lines(&["DOSPageDeadline 1 5", "DOSPageDeadline 1.0 7"])
            .unwrap()
            .1;
        assert_eq!(d.page_deadlines().len(), 1);
        assert_eq!(d.deadline_score(1_000_000), Some((1_000_000, 7)));
        let child = from_lines(&["DOSPageDeadline 1.000 -3"]).unwrap().1;
        let m = DirConfig::merge(&d, &child);
        assert_eq!(m.deadline_score(2_000_000), Some((1_000_000, -3)));
    }
}
