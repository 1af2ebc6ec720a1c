//! The producing side of a disk queue: encode on the producer's task,
//! apply `when_full` against the files' bytes, hand the records to the I/O
//! thread in seq order, keep what fits in the in-memory window.

use super::{Cmd, PENDING_MAX, SPILL_WAIT, Shared, State};
use crate::config::controls::WhenFull;
use crate::core::sync::LockExt;
use crate::core::{Acks, Batch};
use crate::flow::buffer::Undelivered;
use crate::flow::buffer::storage::{EncodeError, EncodedBatch};
use crate::telemetry::DiscardReason;
use std::sync::{Arc, mpsc};

/// The producing side; clone it for each upstream (fan-in).
pub struct Sender {
    pub(super) shared: Arc<Shared>,
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.shared.state.lock_unpoisoned().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.shared.state.lock_unpoisoned().senders -= 1;
        self.shared.filled.notify_waiters();
    }
}

impl Sender {
    /// Whether about `n` more events fit now (the drop policies never wait).
    pub fn has_room(&self, n: usize) -> bool {
        let state = self.shared.state.lock_unpoisoned();
        state.policy != WhenFull::Block
            || state.disk_bytes + state.pending_bytes + n as u64 * state.mean_event
                <= state.max_bytes
    }

    /// Writes `batch` to the buffer under its `when_full` policy; its
    /// acknowledgements are released once it is durable.
    pub async fn send(&self, mut batch: Batch, acks: Acks) -> Result<(), Undelivered> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut encoded = self.encode(&mut batch, &acks);
        let shared = &*self.shared;
        let mut spill_at = None;
        loop {
            let room = shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let mut wait_until = None;
            {
                let mut state = shared.state.lock_unpoisoned();
                let used = state.disk_bytes + state.pending_bytes;
                let need = encoded.disk_bytes() as u64;
                // An empty buffer takes any batch, so one larger than
                // `max_bytes` cannot wait forever.
                let empty = state.next_seq - 1 <= state.acked_seq && state.pending_bytes == 0;
                let fits = used + need <= state.max_bytes || empty;
                let busy = state.pending_bytes > PENDING_MAX;
                match state.policy {
                    _ if busy => {}
                    WhenFull::DropNewest if !fits => {
                        let mut room = state.max_bytes.saturating_sub(used);
                        let keep = encoded
                            .disk_lens()
                            .take_while(|&l| {
                                let fits = l as u64 <= room;
                                room = room.saturating_sub(l as u64);
                                fits
                            })
                            .count();
                        shared
                            .metrics
                            .discard(DiscardReason::BufferFull, batch.len() - keep);
                        if keep == 0 {
                            return Ok(());
                        }
                        batch.truncate(keep);
                        encoded.truncate(keep);
                        return self.push(&mut state, batch, encoded, acks);
                    }
                    _ if fits => {
                        // The consumer keeps up but the window is full: give
                        // it a moment to take a batch rather than spill.
                        let n = batch.len();
                        let attached =
                            state.deliver_seq + state.window_events as u64 == state.next_seq;
                        let window_full = state.window_events + n > state.capacity;
                        if attached && window_full && n <= state.capacity {
                            let at = *spill_at
                                .get_or_insert_with(|| tokio::time::Instant::now() + SPILL_WAIT);
                            if tokio::time::Instant::now() < at {
                                wait_until = Some(at);
                            }
                        }
                        if wait_until.is_none() {
                            return self.push(&mut state, batch, encoded, acks);
                        }
                    }
                    _ => {}
                }
            }
            match wait_until {
                Some(at) => {
                    tokio::select! {
                        _ = room => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => room.await,
            }
        }
    }

    /// The batch as records; an event that cannot be one (larger than a
    /// record may be) fails the batch's acknowledgements and is left out.
    fn encode(&self, batch: &mut Batch, acks: &Acks) -> EncodedBatch {
        let mut encoded = EncodedBatch::with_capacity(batch.len(), batch.len() * 256);
        let mut refused = Vec::new();
        for (i, event) in batch.iter().enumerate() {
            if let Err(e) = encoded.push_with(|v| serde_json::to_writer(v, event)) {
                if refused.is_empty() {
                    let reason = match e {
                        EncodeError::TooLarge(n) => format!("an event of {n} bytes"),
                        EncodeError::Encode(e) => e.to_string(),
                    };
                    tracing::error!(
                        component = %self.shared.metrics.name(),
                        "disk buffer cannot store {reason}: its batch fails"
                    );
                }
                refused.push(i);
            }
        }
        if !refused.is_empty() {
            acks.fail();
            self.shared.metrics.errors("encode", refused.len());
            for &i in refused.iter().rev() {
                batch.remove(i);
            }
        }
        encoded
    }

    fn push(
        &self,
        state: &mut State,
        batch: Batch,
        encoded: EncodedBatch,
        acks: Acks,
    ) -> Result<(), Undelivered> {
        let shared = &*self.shared;
        let n = batch.len();
        if n == 0 {
            return Ok(());
        }
        let bytes = encoded.disk_bytes() as u64;
        // Sent under the lock: the channel's order is seq order.
        let append = Cmd::Append {
            batch: encoded,
            upstream: acks,
        };
        if let Err(mpsc::SendError(Cmd::Append { upstream, .. })) = shared.io.send(append) {
            // The I/O thread is gone (it panicked): nothing can be stored.
            upstream.fail();
            return Err(Undelivered(n));
        }
        let first = state.next_seq;
        state.next_seq += n as u64;
        state.pending_bytes += bytes;
        state.mean_event = (state.mean_event * 7 + bytes / n as u64) / 8;
        let window_end = state.deliver_seq + state.window_events as u64;
        if window_end == first && state.window_events + n <= state.capacity {
            state.window.push_back(batch);
            state.window_events += n;
        }
        shared.show(state);
        shared.filled.notify_waiters();
        Ok(())
    }
}
