//! The open (group, window) entries of one `aggregate`, and when they close.
//!
//! Entries live in a slab; a hash table finds an entry by its group (and
//! window start) without building a key per event, and an ordered set
//! holds every entry by the time it closes, so closing and eviction take
//! the front. The clock is the largest event time seen (event time) or the
//! processing time; an entry closes once the clock reaches its end plus
//! `allowed_lateness`, and an event whose every window has closed is late:
//! closed windows are never reopened.

use super::aggregate_fns::Acc;
use crate::core::{Acks, Value};
use hashbrown::HashTable;
use std::collections::BTreeSet;
use std::hash::BuildHasher;

/// Window shapes, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Windows {
    Tumbling { size: i64 },
    Hopping { size: i64, every: i64 },
    Session { gap: i64 },
}

/// One (group, window): its bounds, accumulators and the acknowledgements
/// of the batches its events came in.
pub struct Entry {
    hash: u64,
    pub group: Vec<Value>,
    pub start: i64,
    /// Exclusive; a session's is its last event time plus the gap.
    pub end: i64,
    pub accs: Vec<Acc>,
    pub acks: Acks,
    /// The last batch whose acks were merged in (one merge per batch).
    batch: u64,
    seq: u64,
}

pub struct WindowState {
    windows: Windows,
    lateness: i64,
    max_groups: usize,
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    index: HashTable<usize>,
    closing: BTreeSet<(i64, u64, usize)>,
    clock: Option<i64>,
    seq: u64,
    batch: u64,
    hasher: hashbrown::DefaultHashBuilder,
}

impl WindowState {
    pub fn new(windows: Windows, lateness: i64, max_groups: usize) -> Self {
        Self {
            windows,
            lateness,
            max_groups: max_groups.max(1),
            slots: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            closing: BTreeSet::new(),
            clock: None,
            seq: 0,
            batch: 0,
            hasher: Default::default(),
        }
    }

    /// Open entries.
    pub fn len(&self) -> usize {
        self.closing.len()
    }

    pub fn begin_batch(&mut self) {
        self.batch += 1;
    }

    /// The hash of a group's values (computed once per event).
    pub fn group_hash(&self, group: &[Value]) -> u64 {
        let mut h = self.hasher.build_hasher();
        for v in group {
            crate::components::stateful::hash_value(v, &mut h);
        }
        std::hash::Hasher::finish(&h)
    }

    fn closed(&self, end: i64) -> bool {
        self.clock.is_some_and(|c| end + self.lateness <= c)
    }

    /// Whether an event at `t` falls only in windows that have closed.
    pub fn is_late(&self, t: i64) -> bool {
        match self.windows {
            Windows::Tumbling { size } => self.closed(t.div_euclid(size) * size + size),
            // The latest window holding t closes last.
            Windows::Hopping { size, every } => self.closed(t.div_euclid(every) * every + size),
            Windows::Session { gap } => self.closed(t + gap),
        }
    }

    /// Moves the clock to `t` if later.
    pub fn observe(&mut self, t: i64) {
        self.clock = Some(self.clock.map_or(t, |c| c.max(t)));
    }

    /// Adds an event at `t` (not late) of group `group` (with its hash) to every open
    /// window it falls in: `add(accs, first)` updates each window's
    /// accumulators (`first` for the first of them). Entries pushed out by
    /// `max_groups` go to `evicted`.
    pub fn add(
        &mut self,
        (group, hash): (&[Value], u64),
        t: i64,
        acks: &Acks,
        evicted: &mut Vec<Entry>,
        mut add: impl FnMut(&mut [Acc], bool),
        mut fresh: impl FnMut() -> Vec<Acc>,
    ) {
        let mut first = true;
        let mut each = |state: &mut Self, slot: usize| {
            let batch = state.batch;
            let e = state.slots[slot].as_mut().expect("indexed slots are full");
            if e.batch != batch {
                e.batch = batch;
                e.acks.merge(acks.clone());
            }
            add(&mut e.accs, first);
            first = false;
        };
        match self.windows {
            Windows::Tumbling { size } => {
                let start = t.div_euclid(size) * size;
                let slot = self.fixed(group, hash, start, start + size, &mut fresh);
                each(self, slot);
            }
            Windows::Hopping { size, every } => {
                // Windows start at multiples of `every`; the latest holding t first.
                let mut start = t.div_euclid(every) * every;
                while start > t - size {
                    if !self.closed(start + size) {
                        let slot = self.fixed(group, hash, start, start + size, &mut fresh);
                        each(self, slot);
                    }
                    start -= every;
                }
            }
            Windows::Session { gap } => {
                let slot = self.session(group, hash, t, gap, &mut fresh);
                each(self, slot);
            }
        }
        while self.len() > self.max_groups {
            let Some(&(_, _, slot)) = self.closing.first() else {
                break;
            };
            evicted.push(self.remove(slot));
        }
    }

    /// The entry of a fixed window, made if new.
    fn fixed(
        &mut self,
        group: &[Value],
        hash: u64,
        start: i64,
        end: i64,
        fresh: &mut impl FnMut() -> Vec<Acc>,
    ) -> usize {
        let hash = hash ^ (start as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let slots = &self.slots;
        let found = self.index.find(hash, |&s| {
            slots[s]
                .as_ref()
                .is_some_and(|e| e.start == start && e.group == group)
        });
        match found {
            Some(&slot) => slot,
            None => self.insert(hash, group, start, end, fresh()),
        }
    }

    /// The session an event at `t` extends (joining every session its gap
    /// touches into the oldest), made if none.
    fn session(
        &mut self,
        group: &[Value],
        hash: u64,
        t: i64,
        gap: i64,
        fresh: &mut impl FnMut() -> Vec<Acc>,
    ) -> usize {
        let slots = &self.slots;
        let (clock, lateness) = (self.clock, self.lateness);
        let closed = |end: i64| clock.is_some_and(|c| end + lateness <= c);
        let mut touching: Vec<usize> = self
            .index
            .iter_hash(hash)
            .copied()
            .filter(|&s| {
                // A session the clock has closed is not joined, though it
                // is only emitted at the end of the batch: batching does
                // not change the outputs.
                slots[s].as_ref().is_some_and(|e| {
                    e.group == group && t < e.end && e.start < t + gap && !closed(e.end)
                })
            })
            .collect();
        touching.sort_by_key(|&s| slots[s].as_ref().map(|e| e.seq));
        let Some((&keep, rest)) = touching.split_first() else {
            return self.insert(hash, group, t, t + gap, fresh());
        };
        let mut start = t;
        let mut end = t + gap;
        for &s in rest {
            let other = self.remove(s);
            start = start.min(other.start);
            end = end.max(other.end);
            let e = self.slots[keep].as_mut().expect("indexed slots are full");
            for (a, b) in e.accs.iter_mut().zip(other.accs) {
                a.merge(b);
            }
            e.acks.merge(other.acks);
        }
        let e = self.slots[keep].as_mut().expect("indexed slots are full");
        let old = (e.end + self.lateness, e.seq, keep);
        e.start = e.start.min(start);
        e.end = e.end.max(end);
        let new = (e.end + self.lateness, e.seq, keep);
        if new != old {
            self.closing.remove(&old);
            self.closing.insert(new);
        }
        keep
    }

    fn insert(
        &mut self,
        hash: u64,
        group: &[Value],
        start: i64,
        end: i64,
        accs: Vec<Acc>,
    ) -> usize {
        self.seq += 1;
        let entry = Entry {
            hash,
            group: group.to_vec(),
            start,
            end,
            accs,
            acks: Acks::none(),
            batch: 0,
            seq: self.seq,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s] = Some(entry);
                s
            }
            None => {
                self.slots.push(Some(entry));
                self.slots.len() - 1
            }
        };
        self.closing.insert((end + self.lateness, self.seq, slot));
        let slots = &self.slots;
        self.index
            .insert_unique(hash, slot, |&s| slots[s].as_ref().map_or(0, |e| e.hash));
        slot
    }

    fn remove(&mut self, slot: usize) -> Entry {
        let e = self.slots[slot].take().expect("removed slots are full");
        self.closing.remove(&(e.end + self.lateness, e.seq, slot));
        if let Ok(found) = self.index.find_entry(e.hash, |&s| s == slot) {
            found.remove();
        }
        self.free.push(slot);
        e
    }

    /// Entries whose end plus lateness the clock has reached, in the order
    /// they close.
    pub fn close_due(&mut self, out: &mut Vec<Entry>) {
        let Some(clock) = self.clock else { return };
        while let Some(&(at, _, slot)) = self.closing.first() {
            if at > clock {
                break;
            }
            out.push(self.remove(slot));
        }
    }

    /// When the next entry closes (clock time).
    pub fn next_close(&self) -> Option<i64> {
        self.closing.first().map(|&(at, _, _)| at)
    }

    /// Every entry, in the order they would close.
    pub fn drain(&mut self, out: &mut Vec<Entry>) {
        while let Some(&(_, _, slot)) = self.closing.first() {
            out.push(self.remove(slot));
        }
    }
}
