//! Which offset the kafka source may commit, per partition.
//!
//! Batches are acknowledged in any order (fan-out, unordered workers), but
//! Kafka keeps one offset per partition: it may only move past a message
//! once that message and every earlier one of the partition were
//! acknowledged. The messages of one partition in one batch form a
//! *segment*; segments are sequenced per partition, and the committable
//! offset follows the longest prefix of acknowledged segments (the shape
//! of `checkpoint.rs`, with one sequence per partition).
//!
//! A partition's *epoch* changes when it is assigned again or rewound
//! after a failure: segments of an older epoch are forgotten, so a late
//! acknowledgement can never move a new owner's offset (backwards or
//! forwards). Plain data, no client: the consumer thread owns it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A partition: topic and number.
pub type Partition = (Arc<str>, i32);

/// The messages of one partition in one batch: offsets `first..=last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub partition: Partition,
    epoch: u64,
    seq: u64,
    pub first: i64,
    pub last: i64,
}

#[derive(Debug, Default)]
struct State {
    epoch: u64,
    next_seq: u64,
    /// The next segment whose acknowledgement moves the offset.
    next_done: u64,
    /// Acknowledged segments waiting for an earlier one: seq -> last offset.
    done: BTreeMap<u64, i64>,
    /// Segments handed out in this epoch and not yet settled.
    outstanding: usize,
    /// The offset after the acknowledged prefix: what a commit stores.
    acked: Option<i64>,
    /// What was last committed (or handed to the client to commit).
    committed: Option<i64>,
}

/// What became of a settled segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// Counted; the committable offset may have moved.
    Acked,
    /// Not written: the partition must be read again from this offset
    /// (its epoch has moved on; the caller seeks there).
    Rewind(Partition, i64),
    /// From an older epoch or a released partition: ignored.
    Stale,
}

/// The offsets of every assigned partition.
#[derive(Debug, Default)]
pub struct Offsets {
    partitions: HashMap<Partition, State>,
    epochs: u64,
}

impl Offsets {
    /// `partition` is ours from now on, in a new epoch.
    pub fn assign(&mut self, partition: Partition) {
        self.epochs += 1;
        let state = State {
            epoch: self.epochs,
            ..State::default()
        };
        self.partitions.insert(partition, state);
    }

    /// `partition` is no longer ours: its late acknowledgements are stale.
    pub fn release(&mut self, partition: &Partition) {
        self.partitions.remove(partition);
    }

    /// The current epoch of `partition`, if it is assigned.
    pub fn epoch(&self, partition: &Partition) -> Option<u64> {
        self.partitions.get(partition).map(|s| s.epoch)
    }

    /// Registers the messages `first..=last` of `partition`, read in
    /// `epoch`, as one segment; `None` if the partition is not assigned or
    /// its epoch has moved on since they were read (a rebalance or rewind
    /// in between: they are read again, and must not count in the new epoch).
    pub fn segment(
        &mut self,
        partition: &Partition,
        epoch: u64,
        first: i64,
        last: i64,
    ) -> Option<Segment> {
        let state = self
            .partitions
            .get_mut(partition)
            .filter(|s| s.epoch == epoch)?;
        let seq = state.next_seq;
        state.next_seq += 1;
        state.outstanding += 1;
        Some(Segment {
            partition: partition.clone(),
            epoch: state.epoch,
            seq,
            first,
            last,
        })
    }

    /// Records the outcome of a segment.
    pub fn settle(&mut self, segment: &Segment, delivered: bool) -> Settled {
        let Some(state) = self.partitions.get_mut(&segment.partition) else {
            return Settled::Stale;
        };
        if state.epoch != segment.epoch {
            return Settled::Stale;
        }
        if !delivered {
            // Everything from this segment on is read again; the segments
            // after it that are still in flight belong to the old epoch.
            self.epochs += 1;
            state.epoch = self.epochs;
            state.next_seq = 0;
            state.next_done = 0;
            state.done.clear();
            state.outstanding = 0;
            return Settled::Rewind(segment.partition.clone(), segment.first);
        }
        state.outstanding -= 1;
        state.done.insert(segment.seq, segment.last);
        while let Some(last) = state.done.remove(&state.next_done) {
            state.acked = Some(last + 1);
            state.next_done += 1;
        }
        Settled::Acked
    }

    /// Segments of `partition` in flight in its current epoch.
    pub fn outstanding(&self, partition: &Partition) -> usize {
        self.partitions.get(partition).map_or(0, |s| s.outstanding)
    }

    /// The offset after the acknowledged prefix of `partition`, if known.
    pub fn acked(&self, partition: &Partition) -> Option<i64> {
        self.partitions.get(partition).and_then(|s| s.acked)
    }

    /// Offsets to commit (those that moved since the last call), among
    /// `only` if given; they count as committed from now on.
    pub fn to_commit(&mut self, only: Option<&[Partition]>) -> Vec<(Partition, i64)> {
        let mut out = Vec::new();
        for (partition, state) in &mut self.partitions {
            if only.is_some_and(|only| !only.contains(partition)) {
                continue;
            }
            if let Some(acked) = state.acked
                && state.committed != Some(acked)
            {
                state.committed = Some(acked);
                out.push((partition.clone(), acked));
            }
        }
        out
    }

    /// A commit of `partition` at `offset` failed: commit it again next time.
    pub fn commit_failed(&mut self, partition: &Partition, offset: i64) {
        if let Some(state) = self.partitions.get_mut(partition)
            && state.committed == Some(offset)
        {
            state.committed = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> Partition {
        ("t".into(), n)
    }

    fn seg(o: &mut Offsets, n: i32, first: i64, last: i64) -> Option<Segment> {
        let epoch = o.epoch(&p(n))?;
        o.segment(&p(n), epoch, first, last)
    }

    #[test]
    fn the_offset_follows_the_acknowledged_prefix_of_each_partition() {
        let mut o = Offsets::default();
        o.assign(p(0));
        o.assign(p(1));
        let a = seg(&mut o, 0, 0, 9).unwrap();
        let b = seg(&mut o, 0, 10, 19).unwrap();
        let c = seg(&mut o, 1, 5, 5).unwrap();
        assert_eq!(o.settle(&b, true), Settled::Acked);
        assert_eq!(o.acked(&p(0)), None, "10..19 waits for 0..9");
        assert_eq!(o.settle(&c, true), Settled::Acked);
        assert_eq!(o.to_commit(None), vec![(p(1), 6)]);
        assert_eq!(o.settle(&a, true), Settled::Acked);
        assert_eq!(o.acked(&p(0)), Some(20));
        assert_eq!(o.to_commit(None), vec![(p(0), 20)]);
        assert_eq!(o.to_commit(None), vec![], "nothing moved since");
        assert_eq!(o.outstanding(&p(0)), 0);
    }

    #[test]
    fn a_failed_segment_rewinds_its_partition_and_later_ones_go_stale() {
        let mut o = Offsets::default();
        o.assign(p(0));
        let a = seg(&mut o, 0, 0, 9).unwrap();
        let b = seg(&mut o, 0, 10, 19).unwrap();
        let c = seg(&mut o, 0, 20, 29).unwrap();
        assert_eq!(o.settle(&a, true), Settled::Acked);
        assert_eq!(o.settle(&b, false), Settled::Rewind(p(0), 10));
        assert_eq!(o.settle(&c, true), Settled::Stale, "read again anyway");
        assert_eq!(o.acked(&p(0)), Some(10), "never past the failure");
        assert_eq!(o.outstanding(&p(0)), 0);
        let again = seg(&mut o, 0, 10, 29).unwrap();
        assert_eq!(o.settle(&again, true), Settled::Acked);
        assert_eq!(o.acked(&p(0)), Some(30));
    }

    #[test]
    fn acknowledgements_after_a_release_or_reassignment_are_stale() {
        let mut o = Offsets::default();
        o.assign(p(0));
        let a = seg(&mut o, 0, 0, 9).unwrap();
        o.release(&p(0));
        assert_eq!(o.settle(&a, true), Settled::Stale);
        assert_eq!(seg(&mut o, 0, 10, 19), None, "not assigned");
        o.assign(p(0));
        let old_epoch = a.epoch;
        assert_eq!(
            o.segment(&p(0), old_epoch, 10, 19),
            None,
            "read in the old epoch"
        );
        assert_eq!(o.settle(&a, false), Settled::Stale);
        assert_eq!(o.acked(&p(0)), None);
    }

    #[test]
    fn a_failed_commit_is_committed_again() {
        let mut o = Offsets::default();
        o.assign(p(0));
        let a = seg(&mut o, 0, 0, 0).unwrap();
        o.settle(&a, true);
        assert_eq!(o.to_commit(None), vec![(p(0), 1)]);
        o.commit_failed(&p(0), 1);
        assert_eq!(o.to_commit(Some(&[p(1)])), vec![], "only p1 asked for");
        assert_eq!(o.to_commit(Some(&[p(0)])), vec![(p(0), 1)]);
    }
}
