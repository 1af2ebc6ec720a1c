//! Delivery of one output port to every consumer.
//!
//! Semantics (also in the README):
//! - Every consumer receives every event (fan-out is a copy, not a split).
//! - Consumers are served one after another. A consumer whose buffer is
//!   `block` and full makes the producer wait, and so delays its siblings:
//!   nothing is lost, the slowest blocking consumer sets the pace.
//! - A consumer with `drop_newest`/`drop_oldest` never waits: it sheds
//!   (counted as `buffer_full` on that consumer) and its siblings go on.
//! - The last consumer gets the original batch; the others get copies.
//! - An output with no consumer discards what it is sent; the graph check
//!   warns about such outputs, and `route`'s `unmatched` port counts them as
//!   discarded with reason `unmatched`.

use super::buffer::{BufferSender, Undelivered};
use super::tap::TapPoint;
use crate::core::sync::RwLockExt;
use crate::core::{Acks, Batch};
use prometheus::IntCounter;
use std::sync::{Arc, RwLock};

/// A handle on one output; clones share it. The consumer list can be
/// replaced while events flow (reload rewires edges): a batch already being
/// sent finishes with the list it started with, so nothing is lost.
#[derive(Clone)]
pub struct Fanout {
    inner: Arc<Inner>,
}

struct Inner {
    consumers: RwLock<Arc<Vec<BufferSender>>>,
    sent: IntCounter,
    tap: Option<Arc<TapPoint>>,
}

impl Fanout {
    pub fn new(consumers: Vec<BufferSender>, sent: IntCounter) -> Self {
        Self {
            inner: Arc::new(Inner {
                consumers: RwLock::new(Arc::new(consumers)),
                sent,
                tap: None,
            }),
        }
    }

    /// Lets `flowgate tap` sample what this output sends.
    pub fn with_tap(self, tap: Arc<TapPoint>) -> Self {
        let consumers = self.current();
        let sent = self.inner.sent.clone();
        Self {
            inner: Arc::new(Inner {
                consumers: RwLock::new(consumers),
                sent,
                tap: Some(tap),
            }),
        }
    }

    fn current(&self) -> Arc<Vec<BufferSender>> {
        self.inner.consumers.read_unpoisoned().clone()
    }

    pub fn has_consumers(&self) -> bool {
        !self.current().is_empty()
    }

    /// Whether every consumer can take `n` events without waiting.
    pub fn has_room(&self, n: usize) -> bool {
        self.current().iter().all(|c| c.has_room(n))
    }

    /// Replaces who receives this output's events.
    pub fn set_consumers(&self, consumers: Vec<BufferSender>) {
        *self.inner.consumers.write_unpoisoned() = Arc::new(consumers);
    }

    /// Lets go of every consumer, so their queues can close once the
    /// producer is done (also on a panic, through `CloseOnDrop`).
    pub fn close(&self) {
        self.set_consumers(Vec::new());
    }

    /// Sends to every consumer; counts the batch as emitted. Returns the
    /// events that could not reach a consumer that is gone. Every copy
    /// carries the batch's acknowledgements; with no consumer they are
    /// released (the graph check warns about such outputs).
    pub async fn send(&self, batch: Batch, acks: Acks) -> Result<(), Undelivered> {
        if batch.is_empty() {
            return Ok(());
        }
        self.inner.sent.inc_by(batch.len() as u64);
        if let Some(tap) = &self.inner.tap {
            tap.offer(&batch);
        }
        // One read lock per batch; the send happens outside it.
        let consumers = self.current();
        let Some((last, rest)) = consumers.split_last() else {
            return Ok(());
        };
        let mut lost = 0;
        for consumer in rest {
            if let Err(Undelivered(n)) = consumer.send(batch.clone(), acks.clone()).await {
                lost += n;
            }
        }
        if let Err(Undelivered(n)) = last.send(batch, acks).await {
            lost += n;
        }
        if lost == 0 {
            Ok(())
        } else {
            Err(Undelivered(lost))
        }
    }
}

/// Closes a component's outputs when its task ends, however it ends.
pub struct CloseOnDrop(pub Vec<Fanout>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        for f in &self.0 {
            f.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::controls::WhenFull;
    use crate::flow::buffer::memory::tests::{events, make as consumer};
    use crate::telemetry::{DiscardReason, Metrics};

    #[tokio::test]
    async fn a_full_blocking_consumer_holds_back_its_siblings_without_loss() {
        let (full_tx, mut full_rx, _) = consumer(5, WhenFull::Block);
        let (free_tx, mut free_rx, _) = consumer(100, WhenFull::Block);
        let out = Fanout::new(
            vec![full_tx, free_tx],
            Metrics::new()
                .component("p", "src", "source", "generator")
                .output("default"),
        );
        out.send(events(5, 0), Acks::none()).await.unwrap();
        let second = tokio::spawn(async move {
            out.send(events(5, 0), Acks::none()).await.unwrap();
            out
        });
        tokio::task::yield_now().await;
        assert!(!second.is_finished());
        assert_eq!(
            free_rx.len(),
            5,
            "the sibling waits behind the full consumer"
        );
        assert_eq!(full_rx.recv().await.unwrap().0.len(), 5);
        let out = second.await.unwrap();
        drop(out);
        assert_eq!(full_rx.recv().await.unwrap().0.len(), 5);
        assert_eq!(free_rx.recv().await.unwrap().0.len(), 10);
    }

    #[tokio::test]
    async fn a_full_dropping_consumer_sheds_while_its_siblings_get_everything() {
        for policy in [WhenFull::DropNewest, WhenFull::DropOldest] {
            let (full_tx, mut full_rx, full_m) = consumer(5, policy);
            let (free_tx, mut free_rx, _) = consumer(100, WhenFull::Block);
            let out = Fanout::new(
                vec![full_tx, free_tx],
                Metrics::new()
                    .component("p", "src", "source", "generator")
                    .output("default"),
            );
            for _ in 0..4 {
                out.send(events(5, 0), Acks::none()).await.unwrap();
            }
            drop(out);
            assert_eq!(free_rx.recv().await.unwrap().0.len(), 20);
            let kept = full_rx.recv().await.unwrap().0;
            assert_eq!(kept.len(), 5);
            assert_eq!(full_m.families_discarded(DiscardReason::BufferFull), 15);
            let first = kept[0]["i"].as_u64().unwrap();
            assert_eq!(first, 0, "{policy:?} keeps whole batches of 0..5");
        }
    }
}
