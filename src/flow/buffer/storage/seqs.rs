//! A set of seqs kept as disjoint ranges: the store's record of seqs that
//! will never be read (lost to corruption, or of appends that failed).

use std::collections::BTreeMap;
use std::ops::Range;

#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    /// start -> end (exclusive); disjoint and never adjacent.
    ranges: BTreeMap<u64, u64>,
    len: u64,
}

impl SeqSet {
    /// Adds `r`; returns how many of its seqs were not in the set yet.
    pub fn insert(&mut self, r: Range<u64>) -> u64 {
        if r.is_empty() {
            return 0;
        }
        let (mut start, mut end) = (r.start, r.end);
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(..=r.end)
            .rev()
            .take_while(|&(_, &e)| e >= r.start)
            .map(|(&s, &e)| (s, e))
            .collect();
        let mut known = 0;
        for (s, e) in touching {
            known += e.min(r.end).saturating_sub(s.max(r.start));
            start = start.min(s);
            end = end.max(e);
            self.ranges.remove(&s);
        }
        self.ranges.insert(start, end);
        let added = (r.end - r.start) - known;
        self.len += added;
        added
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &e)| seq < e)
    }

    /// Forgets every seq at or below `through`.
    pub fn remove_through(&mut self, through: u64) {
        while let Some((&s, &e)) = self.ranges.first_key_value() {
            if s > through {
                break;
            }
            self.ranges.remove(&s);
            if e > through + 1 {
                self.ranges.insert(through + 1, e);
                self.len -= through + 1 - s;
                break;
            }
            self.len -= e - s;
        }
    }

    /// Seqs in the set.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_count_only_new_seqs_and_merge() {
        let mut set = SeqSet::default();
        assert_eq!(set.insert(10..20), 10);
        assert_eq!(set.insert(15..25), 5);
        assert_eq!(set.insert(10..25), 0);
        assert_eq!(set.insert(30..31), 1);
        assert_eq!(set.insert(25..30), 5); // joins both
        assert_eq!(set.ranges.len(), 1);
        assert_eq!(set.insert(5..40), 14);
        assert_eq!(set.len(), 35);
        assert!(set.contains(5) && set.contains(39) && !set.contains(40) && !set.contains(4));
    }

    #[test]
    fn removal_trims_the_front() {
        let mut set = SeqSet::default();
        set.insert(1..5);
        set.insert(10..20);
        set.remove_through(12);
        assert_eq!(set.len(), 7);
        assert!(!set.contains(12) && set.contains(13));
        set.remove_through(100);
        assert_eq!(set.len(), 0);
    }

    #[test]
    fn matches_a_plain_set_on_random_operations() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut set = SeqSet::default();
        let mut plain = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            if rng.u8(..10) == 0 {
                let t = rng.u64(..200);
                set.remove_through(t);
                plain.retain(|&s| s > t);
            } else {
                let s = rng.u64(..200);
                let r = s..s + rng.u64(..8);
                let fresh = r.clone().filter(|s| !plain.contains(s)).count() as u64;
                plain.extend(r.clone());
                assert_eq!(set.insert(r), fresh);
            }
            assert_eq!(set.len(), plain.len() as u64);
        }
        for s in 0..210 {
            assert_eq!(set.contains(s), plain.contains(&s), "seq {s}");
        }
    }
}
