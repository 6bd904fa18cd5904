//! Which of a client's counters: the site's or the page's. A block's rule is the counter
//! that crossed, so this one type is also what a block record stores, the log lines, block
//! file and status page name, and what the farm's keys spell.
#![forbid(unsafe_code)]

use super::Area;

/// The two counting areas (the block area is not counted: see [`super::SiteGuard`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    Site,
    Page,
}

impl Counter {
    /// The area this counter's records live in (never the block area).
    pub fn area(self) -> Area {
        match self {
            Counter::Site => Area::Site,
            Counter::Page => Area::Page,
        }
    }

    /// The counter's name in log lines, the block file and the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            Counter::Site => "site",
            Counter::Page => "page",
        }
    }

    /// The counter [`Counter::as_str`] names (the farm's block events carry it).
    pub fn from_name(name: &str) -> Option<Counter> {
        [Counter::Site, Counter::Page]
            .into_iter()
            .find(|c| c.as_str() == name)
    }

    /// The one encoding of a block's rule as a byte, wherever one is stored: a block record
    /// of the store (its meta word), the shared tier's record and monitor mode's would-be
    /// ring. 0 is no rule.
    pub const fn code(self) -> u8 {
        match self {
            Counter::Site => 1,
            Counter::Page => 2,
        }
    }

    /// The counter of a stored byte; `None` for 0 and for anything that is no counter.
    pub const fn from_code(code: u8) -> Option<Counter> {
        match code {
            1 => Some(Counter::Site),
            2 => Some(Counter::Page),
            _ => None,
        }
    }

    /// The counter's letter in the farm's keys (`crate::farm::counter_key`).
    pub(crate) fn letter(self) -> char {
        match self {
            Counter::Site => 's',
            Counter::Page => 'p',
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encodings are stored and shown: they never change.
    #[test]
    fn encodings_are_fixed() {
        assert_eq!((Counter::Site.code(), Counter::Page.code()), (1, 2));
        assert_eq!(
            (Counter::Site.as_str(), Counter::Page.as_str()),
            ("site", "page")
        );
        assert_eq!(
            (Counter::Site.area(), Counter::Page.area()),
            (Area::Site, Area::Page)
        );
        for c in [Counter::Site, Counter::Page] {
            assert_eq!(Counter::from_code(c.code()), Some(c));
            assert_eq!(Counter::from_name(c.as_str()), Some(c));
        }
        assert_eq!(Counter::from_name("admin"), None);
        assert_eq!(Counter::from_code(0), None);
        assert_eq!(Counter::from_code(3), None);
    }
}
