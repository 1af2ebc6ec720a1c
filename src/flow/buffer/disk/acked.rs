//! The acknowledged prefix of a disk buffer: ranges of seqs settle in any
//! order (workers, fan-out, redeliveries), the prefix advances only over
//! seqs that are all settled. The same algorithm as a followed file's
//! checkpoint, over seqs instead of byte offsets.

use std::collections::BTreeMap;
use std::ops::Range;

#[derive(Debug)]
pub struct Prefix {
    /// Every seq at or below it is settled.
    through: u64,
    /// Settled ranges beyond the prefix: start -> end (exclusive).
    ahead: BTreeMap<u64, u64>,
}

impl Prefix {
    pub fn new(through: u64) -> Self {
        Self {
            through,
            ahead: BTreeMap::new(),
        }
    }

    pub fn through(&self) -> u64 {
        self.through
    }

    /// Ranges settled beyond a gap (bounded by the events in flight).
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.ahead.len()
    }

    /// Settles `r`; returns the new prefix. Settling a seq twice (a range
    /// delivered again) changes nothing.
    pub fn settle(&mut self, r: Range<u64>) -> u64 {
        if r.end <= self.through + 1 {
            return self.through;
        }
        if r.start > self.through + 1 {
            let end = self.ahead.entry(r.start).or_insert(r.end);
            *end = (*end).max(r.end);
            return self.through;
        }
        self.through = r.end - 1;
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() > self.through + 1 {
                break;
            }
            let (_, end) = entry.remove_entry();
            self.through = self.through.max(end - 1);
        }
        self.through
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_only_over_settled_seqs() {
        let mut p = Prefix::new(0);
        assert_eq!(p.settle(11..21), 0);
        assert_eq!(p.settle(31..41), 0);
        assert_eq!(p.settle(1..11), 20);
        assert_eq!(p.pending(), 1);
        assert_eq!(p.settle(21..31), 40);
        assert_eq!(p.pending(), 0);
        // Again, or a part of what is settled: nothing moves.
        assert_eq!(p.settle(5..15), 40);
        assert_eq!(p.settle(41..41), 40);
    }

    #[test]
    fn overlapping_and_repeated_ranges_ahead() {
        let mut p = Prefix::new(100);
        p.settle(111..121);
        p.settle(111..115);
        p.settle(115..131);
        assert_eq!(p.settle(101..111), 130);
    }

    #[test]
    fn any_order_gives_the_same_prefix() {
        let ranges: Vec<Range<u64>> = (0..50).map(|i| i * 7 + 1..i * 7 + 8).collect();
        for rotate in 0..ranges.len() {
            let mut order = ranges.clone();
            order.rotate_left(rotate);
            order.reverse();
            let mut p = Prefix::new(0);
            for r in order {
                p.settle(r);
            }
            assert_eq!(p.through(), 350);
            assert_eq!(p.pending(), 0);
        }
    }
}
