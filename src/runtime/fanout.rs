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
use crate::event::Batch;
use prometheus::IntCounter;

pub struct Fanout {
    consumers: Vec<BufferSender>,
    sent: IntCounter,
}

impl Fanout {
    pub fn new(consumers: Vec<BufferSender>, sent: IntCounter) -> Self {
        Self { consumers, sent }
    }

    pub fn has_consumers(&self) -> bool {
        !self.consumers.is_empty()
    }

    /// Sends to every consumer; counts the batch as emitted. Returns the
    /// events that could not reach a consumer that is gone.
    pub async fn send(&self, batch: Batch) -> Result<(), Undelivered> {
        if batch.is_empty() {
            return Ok(());
        }
        self.sent.inc_by(batch.len() as u64);
        let Some((last, rest)) = self.consumers.split_last() else {
            return Ok(());
        };
        let mut lost = 0;
        for consumer in rest {
            if let Err(Undelivered(n)) = consumer.send(batch.clone()).await {
                lost += n;
            }
        }
        if let Err(Undelivered(n)) = last.send(batch).await {
            lost += n;
        }
        if lost == 0 { Ok(()) } else { Err(Undelivered(lost)) }
    }
}
