//! Repeatable score lists (status penalties, deadline steps): entries keyed by status or
//! threshold, sorted by key, shared behind an `Arc` so per-request merges copy a pointer.

use super::{Deadline, ListItem, Penalty};
use std::sync::Arc;

/// An entry with a key: a later entry with the same key replaces the earlier one.
pub(crate) trait Keyed: Copy {
    fn key(&self) -> u64;
}

impl Keyed for Penalty {
    fn key(&self) -> u64 {
        u64::from(self.status)
    }
}

impl Keyed for Deadline {
    fn key(&self) -> u64 {
        self.threshold_us
    }
}

/// The list of one context.
#[derive(Clone, Debug)]
pub(crate) struct ScoreList<T> {
    /// Sorted by key, no duplicate keys; `None` when empty (no allocation).
    items: Option<Arc<[T]>>,
    /// `off` appeared in this context (or a level above it merged in): the parent's entries
    /// are not inherited.
    cleared: bool,
}

impl<T> Default for ScoreList<T> {
    fn default() -> Self {
        ScoreList {
            items: None,
            cleared: false,
        }
    }
}

impl<T: Keyed> ScoreList<T> {
    /// Adds an entry (replacing one with the same key) or clears the list (`off`).
    pub(crate) fn apply(&mut self, item: ListItem<T>) {
        match item {
            ListItem::Off => {
                self.items = None;
                self.cleared = true;
            }
            ListItem::Entry(e) => {
                let mut v: Vec<T> = self.as_slice().to_vec();
                match v.binary_search_by_key(&e.key(), Keyed::key) {
                    Ok(i) => v[i] = e,
                    Err(i) => v.insert(i, e),
                }
                self.items = Some(v.into());
            }
        }
    }

    /// The child's entries override the parent's entries with the same key; a cleared child
    /// drops the parent's. Only when both sides have entries is a new list built.
    pub(crate) fn merge(parent: &Self, child: &Self) -> Self {
        if child.cleared {
            return child.clone();
        }
        let items = match (&parent.items, &child.items) {
            (_, None) => parent.items.clone(),
            (None, Some(_)) => child.items.clone(),
            (Some(p), Some(c)) => {
                let mut v: Vec<T> = Vec::with_capacity(p.len() + c.len());
                let (mut i, mut j) = (0, 0);
                while i < p.len() || j < c.len() {
                    let take_child = match (p.get(i), c.get(j)) {
                        (Some(a), Some(b)) => {
                            if a.key() == b.key() {
                                i += 1; // overridden by the child
                            }
                            b.key() <= a.key()
                        }
                        (None, _) => true,
                        (_, None) => false,
                    };
                    if take_child {
                        v.push(c[j]);
                        j += 1;
                    } else {
                        v.push(p[i]);
                        i += 1;
                    }
                }
                Some(v.into())
            }
        };
        ScoreList {
            items,
            cleared: parent.cleared,
        }
    }

    #[inline]
    pub(crate) fn as_slice(&self) -> &[T] {
        self.items.as_deref().unwrap_or(&[])
    }

    /// The entry with exactly this key (see [`exact`]).
    #[inline]
    pub(crate) fn get(&self, key: u64) -> Option<&T> {
        exact(self.as_slice(), key)
    }

    /// The entry with the largest key <= `key` (a step function). Below the first step (a
    /// fast response, the common case) without a search.
    #[inline]
    pub(crate) fn step(&self, key: u64) -> Option<&T> {
        let s = self.as_slice();
        if s.first().is_none_or(|first| key < first.key()) {
            return None;
        }
        let n = s.partition_point(|e| e.key() <= key);
        n.checked_sub(1).map(|i| &s[i])
    }
}

/// The entry of sorted `s` with exactly this key. A key outside the list's range (a 200
/// against penalties for 3xx/4xx, the common case on every request) is answered without a
/// search.
#[inline]
pub(crate) fn exact<T: Keyed>(s: &[T], key: u64) -> Option<&T> {
    match (s.first(), s.last()) {
        (Some(first), Some(last)) if first.key() <= key && key <= last.key() => {
            s.binary_search_by_key(&key, Keyed::key).ok().map(|i| &s[i])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(status: u16, score: i64) -> ListItem<Penalty> {
        ListItem::Entry(Penalty { status, score })
    }

    fn list(items: &[ListItem<Penalty>]) -> ScoreList<Penalty> {
        let mut l = ScoreList::default();
        for i in items {
            l.apply(*i);
        }
        l
    }

    fn pairs(l: &ScoreList<Penalty>) -> Vec<(u16, i64)> {
        l.as_slice().iter().map(|p| (p.status, p.score)).collect()
    }

    #[test]
    fn accumulate_sorted_and_replace() {
        let l = list(&[p(404, 50), p(301, 25), p(404, 60), p(302, 25)]);
        assert_eq!(pairs(&l), vec![(301, 25), (302, 25), (404, 60)]);
        assert_eq!(l.get(404).map(|e| e.score), Some(60));
        assert_eq!(l.get(500), None);
    }

    #[test]
    fn off_clears_then_accumulates_again() {
        let l = list(&[p(404, 50), ListItem::Off, p(302, 1)]);
        assert_eq!(pairs(&l), vec![(302, 1)]);
        assert!(l.cleared);
    }

    #[test]
    fn merge_overrides_same_key_and_keeps_others() {
        let parent = list(&[p(301, 25), p(404, 50), p(500, 5)]);
        let child = list(&[p(404, -1), p(403, 7), p(599, 2)]);
        let m = ScoreList::merge(&parent, &child);
        assert_eq!(
            pairs(&m),
            vec![(301, 25), (403, 7), (404, -1), (500, 5), (599, 2)]
        );
        let m = ScoreList::merge(&child, &parent);
        assert_eq!(
            pairs(&m),
            vec![(301, 25), (403, 7), (404, 50), (500, 5), (599, 2)]
        );
    }

    #[test]
    fn merge_cleared_child_drops_parent() {
        let parent = list(&[p(404, 50)]);
        let child = list(&[ListItem::Off, p(302, 3)]);
        assert_eq!(pairs(&ScoreList::merge(&parent, &child)), vec![(302, 3)]);
        let empty_cleared = list(&[ListItem::Off]);
        assert!(ScoreList::merge(&parent, &empty_cleared)
            .as_slice()
            .is_empty());
    }

    #[test]
    fn merge_shares_when_one_side_is_empty() {
        let parent = list(&[p(404, 50)]);
        let empty = ScoreList::default();
        let m = ScoreList::merge(&parent, &empty);
        assert!(Arc::ptr_eq(
            m.items.as_ref().unwrap(),
            parent.items.as_ref().unwrap()
        ));
        let m = ScoreList::merge(&empty, &parent);
        assert!(Arc::ptr_eq(
            m.items.as_ref().unwrap(),
            parent.items.as_ref().unwrap()
        ));
    }

    #[test]
    fn step_picks_largest_key_not_above() {
        let mut l: ScoreList<Deadline> = ScoreList::default();
        for (t, s) in [(1_000_000, 5), (500_000, 5), (5_000_000, 20)] {
            l.apply(ListItem::Entry(Deadline {
                threshold_us: t,
                score: s,
            }));
        }
        assert_eq!(l.step(499_999), None);
        assert_eq!(l.step(500_000).map(|d| d.threshold_us), Some(500_000));
        assert_eq!(l.step(999_999).map(|d| d.threshold_us), Some(500_000));
        assert_eq!(l.step(4_999_999).map(|d| d.threshold_us), Some(1_000_000));
        assert_eq!(l.step(u64::MAX).map(|d| d.threshold_us), Some(5_000_000));
    }
}
