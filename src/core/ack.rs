//! End-to-end acknowledgements: how a source learns that what it emitted
//! has been written by every sink it reached (or discarded by a rule the
//! user configured), so it can acknowledge, checkpoint or answer only then.
//!
//! Modelled on Vector's batch notifiers, at batch rather than event
//! granularity: a source that acknowledges makes one `Acks` per batch it
//! emits (a request, a fetch, a chunk of a file). Every copy of the batch —
//! fan-out, the ports of a route, a dead-letter route, a sink's gathered
//! batch, events parked by a rate limit — holds a clone. When the last
//! clone is dropped the source's callback runs with the outcome:
//! `Delivered`, or `Failed` if any holder marked it (a sink that finally
//! failed, a consumer that was gone). Dropping is acknowledging, so
//! filters, drop policies and `on_error: drop` on transforms need no code —
//! except while the thread unwinds from a panic: a copy dropped then fails
//! its batch, because the stage that held it never handed the events on
//! (SPEC §10).
//!
//! Sources that do not acknowledge send `Acks::none()`: an empty vector,
//! no allocation, nothing to do per batch.

use super::Batch;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What became of an acknowledged batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Every copy was written or discarded by a configured rule.
    Delivered,
    /// A copy could not be written (the source should redeliver or refuse).
    Failed,
}

type Callback = Box<dyn FnOnce(Delivery) + Send + Sync>;

struct Notifier {
    failed: AtomicBool,
    done: Option<Callback>,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let outcome = if *self.failed.get_mut() {
                Delivery::Failed
            } else {
                Delivery::Delivered
            };
            done(outcome);
        }
    }
}

/// The acknowledgements a batch carries; clone it for every copy.
///
/// A copy dropped while its thread unwinds from a panic marks its
/// notifiers failed: the stage that held it never handed the events on,
/// whatever the other copies do.
#[derive(Clone, Default)]
pub struct Acks {
    notifiers: Vec<Arc<Notifier>>,
    /// The addresses of `notifiers`, once there are more than `SCAN` of
    /// them: each merge then costs what it adds, however many merges a
    /// batch goes through (a sink gathering a thousand small requests).
    index: Option<HashSet<usize>>,
}

/// Up to this many notifiers a merge looks for duplicates by a scan.
const SCAN: usize = 8;

fn address(n: &Arc<Notifier>) -> usize {
    Arc::as_ptr(n) as usize
}

#[cfg(test)]
thread_local! {
    /// Comparisons and lookups `merge` made on this thread (the tests
    /// count them: a merge must not cost more the more it holds).
    static PROBES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn probed(_n: usize) {
    #[cfg(test)]
    PROBES.with(|p| p.set(p.get() + _n));
}

impl std::fmt::Debug for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Acks({})", self.notifiers.len())
    }
}

impl Drop for Acks {
    fn drop(&mut self) {
        // A holder unwinding from a panic did not deliver what it held.
        if !self.notifiers.is_empty() && std::thread::panicking() {
            self.fail();
        }
    }
}

impl Acks {
    /// Nothing to acknowledge.
    pub const fn none() -> Self {
        Self {
            notifiers: Vec::new(),
            index: None,
        }
    }

    /// A new notifier: `done` runs once, when the last holder lets go.
    pub fn new(done: impl FnOnce(Delivery) + Send + Sync + 'static) -> Self {
        Self {
            notifiers: vec![Arc::new(Notifier {
                failed: AtomicBool::new(false),
                done: Some(Box::new(done)),
            })],
            index: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.notifiers.is_empty()
    }

    /// Takes on `other`'s notifiers (batches merged into one), each once.
    /// Costs time linear in what `other` holds, not in what `self` does.
    pub fn merge(&mut self, mut other: Acks) {
        let incoming = std::mem::take(&mut other.notifiers);
        if self.notifiers.is_empty() {
            self.notifiers = incoming;
            self.index = other.index.take();
            return;
        }
        for n in incoming {
            self.add(n);
        }
    }

    fn add(&mut self, n: Arc<Notifier>) {
        if let Some(index) = &mut self.index {
            probed(1);
            if index.insert(address(&n)) {
                self.notifiers.push(n);
            }
            return;
        }
        probed(self.notifiers.len());
        if self.notifiers.iter().any(|m| Arc::ptr_eq(m, &n)) {
            return;
        }
        self.notifiers.push(n);
        if self.notifiers.len() > SCAN {
            probed(self.notifiers.len());
            self.index = Some(self.notifiers.iter().map(address).collect());
        }
    }

    /// Marks every notifier failed: these events were not written.
    pub fn fail(&self) {
        for n in &self.notifiers {
            n.failed.store(true, Ordering::Relaxed);
        }
    }
}

/// The parts of a batch too large to travel whole (a rate limit's burst, a
/// queue's capacity, `MAX_BATCH`), each with the batch's acknowledgements:
/// the source hears of the batch once every part is settled.
///
/// Parts are split off as they are taken, so a caller that sends each
/// before taking the next holds one part and the remainder, never all the
/// parts at once. Every part but the last gets a clone of the acks and the
/// last gets the original, so a batch that fits travels with no clone; a
/// remainder dropped untaken releases the acks with it.
#[derive(Debug)]
pub struct AckedChunks {
    rest: Batch,
    acks: Acks,
    size: usize,
    /// Part lengths, when the parts are not all `size` long (see `at`).
    lengths: std::collections::VecDeque<usize>,
}

impl AckedChunks {
    /// `batch` in parts of at most `size` events (a size of 0 counts as 1:
    /// every part holds an event), in order, each carrying `acks`.
    pub fn new(batch: Batch, acks: Acks, size: usize) -> Self {
        Self {
            rest: batch,
            acks,
            size: size.max(1),
            lengths: Default::default(),
        }
    }

    /// `batch` cut before each index in `ends` (increasing, in range).
    pub fn at(batch: Batch, acks: Acks, ends: &[usize]) -> Self {
        let mut prev = 0;
        let lengths = ends
            .iter()
            .map(|&end| end - std::mem::replace(&mut prev, end))
            .collect();
        Self {
            rest: batch,
            acks,
            size: usize::MAX,
            lengths,
        }
    }

    /// Events not yet taken (what a failed send leaves undelivered).
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }
}

impl Iterator for AckedChunks {
    type Item = (Batch, Acks);

    fn next(&mut self) -> Option<(Batch, Acks)> {
        if self.rest.is_empty() {
            return None;
        }
        let size = self.lengths.pop_front().unwrap_or(self.size).max(1);
        let tail = if self.rest.len() > size {
            self.rest.split_off(size)
        } else {
            Vec::new()
        };
        let part = std::mem::replace(&mut self.rest, tail);
        let acks = if self.rest.is_empty() {
            std::mem::take(&mut self.acks)
        } else {
            self.acks.clone()
        };
        Some((part, acks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn recorder() -> (Arc<Mutex<Vec<Delivery>>>, Acks) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        (seen, Acks::new(move |d| s.lock().unwrap().push(d)))
    }

    #[test]
    fn the_last_copy_decides_and_a_failure_anywhere_sticks() {
        let (seen, acks) = recorder();
        let copy = acks.clone();
        drop(acks);
        assert!(seen.lock().unwrap().is_empty(), "a copy is still out");
        copy.fail();
        drop(copy);
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Failed]);

        let (seen, acks) = recorder();
        let mut merged = Acks::none();
        merged.merge(acks.clone());
        merged.merge(acks);
        assert_eq!(
            merged.notifiers.len(),
            1,
            "merging keeps one reference per notifier"
        );
        drop(merged);
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Delivered]);
    }

    #[test]
    fn a_copy_dropped_while_its_holder_panics_fails_the_batch() {
        let unwind = |held: Acks| {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                let _held = held;
                panic!("the stage holding this copy panics");
            }));
            assert!(r.is_err());
        };
        // The panicking holder is not the last: the copy written later
        // does not make the batch delivered.
        let (seen, acks) = recorder();
        unwind(acks.clone());
        assert!(seen.lock().unwrap().is_empty(), "a copy is still out");
        drop(acks);
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Failed]);
        // The panicking holder is the last.
        let (seen, acks) = recorder();
        unwind(acks);
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Failed]);
    }

    #[test]
    fn a_merge_costs_what_it_adds_not_what_the_batch_holds() {
        const N: usize = 20_000;
        let delivered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let singles: Vec<Acks> = (0..N)
            .map(|_| {
                let d = delivered.clone();
                Acks::new(move |outcome| {
                    assert_eq!(outcome, Delivery::Delivered);
                    d.fetch_add(1, Ordering::Relaxed);
                })
            })
            .collect();
        let probes = || PROBES.with(|p| p.get());
        let before = probes();
        let mut merged = Acks::none();
        // One batch gathered from N small ones, then every one of them
        // merged again (copies of the same requests): 2N merges.
        for a in &singles {
            merged.merge(a.clone());
        }
        for a in &singles {
            merged.merge(a.clone());
        }
        // Two large merged batches merged into one.
        let mut halves = (Acks::none(), Acks::none());
        for (i, a) in singles.iter().enumerate() {
            if i % 2 == 0 {
                &mut halves.0
            } else {
                &mut halves.1
            }
            .merge(a.clone());
        }
        halves.0.merge(halves.1);
        let spent = probes() - before;
        assert!(
            spent <= 8 * N,
            "{spent} comparisons for {} merges: a merge must not scan what the batch holds",
            3 * N + 1
        );
        assert_eq!(merged.notifiers.len(), N, "one reference per notifier");
        assert_eq!(halves.0.notifiers.len(), N);
        drop((singles, merged, halves.0));
        assert_eq!(delivered.load(Ordering::Relaxed), N);
    }

    fn events(n: usize) -> Batch {
        (0..n).map(|i| crate::ev!({ "i": i })).collect()
    }

    #[test]
    fn chunks_keep_order_and_every_part_holds_the_acks() {
        let (seen, acks) = recorder();
        let mut parts = AckedChunks::new(events(7), acks, 3);
        let (first, first_acks) = parts.next().unwrap();
        assert_eq!(first, events(3));
        assert_eq!(parts.remaining(), 4);
        let rest: Vec<(Batch, Acks)> = parts.collect();
        let sizes: Vec<usize> = rest.iter().map(|(b, _)| b.len()).collect();
        assert_eq!(sizes, vec![3, 1]);
        assert_eq!(rest[1].0[0], crate::ev!({ "i": 6 }), "in order");
        drop(rest);
        assert!(seen.lock().unwrap().is_empty(), "the first part is out");
        drop(first_acks);
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Delivered]);
    }

    #[test]
    fn chunks_release_the_acks_with_the_last_part_or_an_untaken_rest() {
        let (seen, acks) = recorder();
        let mut parts = AckedChunks::new(events(5), acks, 2);
        let (_, a) = parts.next().unwrap();
        a.fail();
        drop(a);
        assert!(seen.lock().unwrap().is_empty(), "the rest holds them");
        drop(parts);
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Failed]);

        let (seen, acks) = recorder();
        let whole: Vec<(Batch, Acks)> = AckedChunks::new(events(2), acks, 0).collect();
        assert_eq!(whole.len(), 2, "a size of 0 means 1");
        drop(whole);
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Delivered]);

        let (seen, acks) = recorder();
        let mut fits = AckedChunks::new(events(3), acks, 3);
        let (batch, only) = fits.next().unwrap();
        assert_eq!((batch.len(), only.notifiers.len()), (3, 1));
        assert_eq!(
            Arc::strong_count(&only.notifiers[0]),
            1,
            "no clone for one part"
        );
        assert!(fits.next().is_none());
        drop(only);
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Delivered]);

        let (seen, acks) = recorder();
        assert!(AckedChunks::new(Vec::new(), acks, 3).next().is_none());
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Delivered]);
    }
}
