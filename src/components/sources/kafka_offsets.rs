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

/// Where a segment of the current epoch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stand {
    Pending,
    Done,
    /// Not written and not to be read again here (a stop, a revocation):
    /// the offset never moves past it.
    Blocked,
}

#[derive(Debug, Default)]
struct State {
    epoch: u64,
    next_seq: u64,
    /// Segments of this epoch past the acknowledged prefix:
    /// seq -> (first offset, last offset, stand).
    open: BTreeMap<u64, (i64, i64, Stand)>,
    /// Segments handed out in this epoch and not yet settled.
    outstanding: usize,
    /// The offset after the acknowledged prefix: what a commit stores.
    acked: Option<i64>,
    /// What was last committed (or handed to the client to commit).
    committed: Option<i64>,
}

/// The outcome of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written (or discarded by a configured rule).
    Delivered,
    /// Not written: read it again.
    Failed,
    /// Not written, and not to be read again by this member (it stops, or
    /// the partition is being released): the offset stops before it.
    Blocked,
}

/// What became of a settled segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// Counted; the committable offset may have moved.
    Acked,
    /// Not written: the partition must be read again from this offset,
    /// the first after the acknowledged prefix (segments before the failed
    /// one may still be in flight: they are read again too, and their
    /// acknowledgements, of the old epoch, are ignored; the caller seeks).
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
        state.open.insert(seq, (first, last, Stand::Pending));
        Some(Segment {
            partition: partition.clone(),
            epoch: state.epoch,
            seq,
            first,
            last,
        })
    }

    /// Records the outcome of a segment.
    pub fn settle(&mut self, segment: &Segment, outcome: Outcome) -> Settled {
        let Some(state) = self.partitions.get_mut(&segment.partition) else {
            return Settled::Stale;
        };
        if state.epoch != segment.epoch {
            return Settled::Stale;
        }
        let Some(entry) = state.open.get_mut(&segment.seq) else {
            return Settled::Stale;
        };
        match outcome {
            Outcome::Failed => {
                let from = state.open.values().next().map_or(segment.first, |e| e.0);
                self.epochs += 1;
                state.epoch = self.epochs;
                state.next_seq = 0;
                state.open.clear();
                state.outstanding = 0;
                return Settled::Rewind(segment.partition.clone(), from);
            }
            Outcome::Blocked => entry.2 = Stand::Blocked,
            Outcome::Delivered => entry.2 = Stand::Done,
        }
        state.outstanding -= 1;
        while let Some(entry) = state.open.first_entry() {
            if entry.get().2 != Stand::Done {
                break;
            }
            state.acked = Some(entry.remove().1 + 1);
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
        assert_eq!(o.settle(&b, Outcome::Delivered), Settled::Acked);
        assert_eq!(o.acked(&p(0)), None, "10..19 waits for 0..9");
        assert_eq!(o.settle(&c, Outcome::Delivered), Settled::Acked);
        assert_eq!(o.to_commit(None), vec![(p(1), 6)]);
        assert_eq!(o.settle(&a, Outcome::Delivered), Settled::Acked);
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
        assert_eq!(o.settle(&a, Outcome::Delivered), Settled::Acked);
        assert_eq!(o.settle(&b, Outcome::Failed), Settled::Rewind(p(0), 10));
        assert_eq!(
            o.settle(&c, Outcome::Delivered),
            Settled::Stale,
            "read again anyway"
        );
        assert_eq!(o.acked(&p(0)), Some(10), "never past the failure");
        assert_eq!(o.outstanding(&p(0)), 0);
        let again = seg(&mut o, 0, 10, 29).unwrap();
        assert_eq!(o.settle(&again, Outcome::Delivered), Settled::Acked);
        assert_eq!(o.acked(&p(0)), Some(30));
    }

    #[test]
    fn a_failure_rewinds_to_the_first_offset_not_yet_acknowledged() {
        let mut o = Offsets::default();
        o.assign(p(0));
        let a = seg(&mut o, 0, 0, 9).unwrap();
        let b = seg(&mut o, 0, 10, 19).unwrap();
        // `a` is still in flight when `b` fails: both are read again.
        assert_eq!(o.settle(&b, Outcome::Failed), Settled::Rewind(p(0), 0));
        assert_eq!(o.settle(&a, Outcome::Delivered), Settled::Stale);
        assert_eq!(o.acked(&p(0)), None);
    }

    #[test]
    fn a_blocked_segment_stops_the_offset_without_holding_up_a_drain() {
        let mut o = Offsets::default();
        o.assign(p(0));
        let a = seg(&mut o, 0, 0, 9).unwrap();
        let b = seg(&mut o, 0, 10, 19).unwrap();
        let c = seg(&mut o, 0, 20, 29).unwrap();
        assert_eq!(o.settle(&b, Outcome::Blocked), Settled::Acked);
        assert_eq!(o.settle(&c, Outcome::Delivered), Settled::Acked);
        assert_eq!(o.outstanding(&p(0)), 1, "only a is awaited");
        assert_eq!(o.settle(&a, Outcome::Delivered), Settled::Acked);
        assert_eq!(o.acked(&p(0)), Some(10), "never past the blocked segment");
        assert_eq!(o.outstanding(&p(0)), 0);
    }

    #[test]
    fn acknowledgements_after_a_release_or_reassignment_are_stale() {
        let mut o = Offsets::default();
        o.assign(p(0));
        let a = seg(&mut o, 0, 0, 9).unwrap();
        o.release(&p(0));
        assert_eq!(o.settle(&a, Outcome::Delivered), Settled::Stale);
        assert_eq!(seg(&mut o, 0, 10, 19), None, "not assigned");
        o.assign(p(0));
        let old_epoch = a.epoch;
        assert_eq!(
            o.segment(&p(0), old_epoch, 10, 19),
            None,
            "read in the old epoch"
        );
        assert_eq!(o.settle(&a, Outcome::Failed), Settled::Stale);
        assert_eq!(o.acked(&p(0)), None);
    }

    #[test]
    fn a_failed_commit_is_committed_again() {
        let mut o = Offsets::default();
        o.assign(p(0));
        let a = seg(&mut o, 0, 0, 0).unwrap();
        o.settle(&a, Outcome::Delivered);
        assert_eq!(o.to_commit(None), vec![(p(0), 1)]);
        o.commit_failed(&p(0), 1);
        assert_eq!(o.to_commit(Some(&[p(1)])), vec![], "only p1 asked for");
        assert_eq!(o.to_commit(Some(&[p(0)])), vec![(p(0), 1)]);
    }
}
