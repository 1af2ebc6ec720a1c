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
//! filters, drop policies and `on_error: drop` on transforms need no code.
//!
//! Sources that do not acknowledge send `Acks::none()`: an empty vector,
//! no allocation, nothing to do per batch.

use super::Batch;
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
#[derive(Clone, Default)]
pub struct Acks(Vec<Arc<Notifier>>);

impl std::fmt::Debug for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Acks({})", self.0.len())
    }
}

impl Acks {
    /// Nothing to acknowledge.
    pub const fn none() -> Self {
        Self(Vec::new())
    }

    /// A new notifier: `done` runs once, when the last holder lets go.
    pub fn new(done: impl FnOnce(Delivery) + Send + Sync + 'static) -> Self {
        Self(vec![Arc::new(Notifier {
            failed: AtomicBool::new(false),
            done: Some(Box::new(done)),
        })])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Takes on `other`'s notifiers (batches merged into one).
    pub fn merge(&mut self, other: Acks) {
        if self.0.is_empty() {
            *self = other;
            return;
        }
        for n in other.0 {
            if !self.0.iter().any(|m| Arc::ptr_eq(m, &n)) {
                self.0.push(n);
            }
        }
    }

    /// Marks every notifier failed: these events were not written.
    pub fn fail(&self) {
        for n in &self.0 {
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
}

impl AckedChunks {
    /// `batch` in parts of at most `size` events (a size of 0 counts as 1:
    /// every part holds an event), in order, each carrying `acks`.
    pub fn new(batch: Batch, acks: Acks, size: usize) -> Self {
        Self {
            rest: batch,
            acks,
            size: size.max(1),
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
        let tail = if self.rest.len() > self.size {
            self.rest.split_off(self.size)
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
            merged.0.len(),
            1,
            "merging keeps one reference per notifier"
        );
        drop(merged);
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Delivered]);
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
        assert_eq!((batch.len(), only.0.len()), (3, 1));
        assert_eq!(Arc::strong_count(&only.0[0]), 1, "no clone for one part");
        assert!(fits.next().is_none());
        drop(only);
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Delivered]);

        let (seen, acks) = recorder();
        assert!(AckedChunks::new(Vec::new(), acks, 3).next().is_none());
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Delivered]);
    }
}
