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
}
