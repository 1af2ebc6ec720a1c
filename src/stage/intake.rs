//! Where a stage's batches come from: its input queue, batches gathered
//! to a sink's batch size, and events a keyed rate limit parked.

use crate::controls::StageControls;
use crate::core::{Acks, Batch};
use crate::flow::buffer::BufferReceiver;
use std::sync::Arc;

/// Where a stage's batches come from: its input queue and, with a keyed
/// `wait` rate limit, the events the limiter parked and now lets go.
pub(super) struct Intake {
    pub(super) input: BufferReceiver,
    pub(super) parking: Option<Arc<StageControls>>,
    /// Stop taking input while this many events are parked (the buffer size).
    cap: usize,
    input_done: bool,
    /// For sinks that send batches (`batch.max_events`, `batch.timeout`):
    /// fresh events are gathered up to the size or until the timeout.
    batching: Option<(usize, std::time::Duration)>,
    carry: (Batch, Acks),
}

impl Intake {
    pub(super) fn new(input: BufferReceiver, controls: &Arc<StageControls>) -> Self {
        let cap = input.capacity();
        let parking = controls.parking().is_some().then(|| controls.clone());
        Self {
            input,
            parking,
            cap,
            input_done: false,
            batching: None,
            carry: (Vec::new(), Acks::none()),
        }
    }

    /// An intake that never parks: the `http` transform's limit waits
    /// in each event's own slot.
    pub(super) fn unparked(input: BufferReceiver) -> Self {
        Self {
            input,
            parking: None,
            cap: 0,
            input_done: false,
            batching: None,
            carry: (Vec::new(), Acks::none()),
        }
    }

    pub(super) fn with_batching(mut self, batching: Option<(usize, std::time::Duration)>) -> Self {
        self.batching = batching.map(|(n, t)| (n.max(1), t));
        self
    }

    /// The next batch, gathered to the configured size when batching.
    pub(super) async fn next(&mut self) -> Option<Taken> {
        let Some((max, timeout)) = self.batching else {
            return self.next_raw().await;
        };
        let (mut batch, mut acks) = std::mem::take(&mut self.carry);
        if batch.is_empty() {
            match self.next_raw().await {
                Some(t) if t.fresh => (batch, acks) = (t.batch, t.acks),
                other => return other,
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while batch.len() < max && !self.input_done {
            match tokio::time::timeout_at(deadline, self.input.recv()).await {
                Ok(Some((more, more_acks))) => {
                    batch.extend(more);
                    acks.merge(more_acks);
                }
                Ok(None) => self.input_done = true,
                Err(_) => break,
            }
        }
        if batch.len() > max {
            // Both parts hold the acknowledgements of what they mix.
            self.carry = (batch.split_off(max), acks.clone());
        }
        Some(Taken {
            batch,
            acks,
            fresh: true,
        })
    }

    /// The next batch and whether it is fresh from the queue (counted as
    /// received) or released from parking (counted already).
    async fn next_raw(&mut self) -> Option<Taken> {
        loop {
            let parked = self
                .parking
                .as_ref()
                .and_then(|c| c.parking())
                .filter(|l| l.parked() > 0);
            let Some(limiter) = parked else {
                if self.input_done {
                    return None;
                }
                match self.input.recv().await {
                    Some((batch, acks)) => return Some(Taken::fresh(batch, acks)),
                    None => {
                        self.input_done = true;
                        continue;
                    }
                }
            };
            let wait = limiter.next_ready_in().unwrap_or_default();
            let can_take = !self.input_done && limiter.parked() < self.cap;
            tokio::select! {
                b = self.input.recv(), if can_take => match b {
                    Some((batch, acks)) => return Some(Taken::fresh(batch, acks)),
                    None => self.input_done = true,
                },
                _ = tokio::time::sleep(wait) => {
                    let (batch, acks) = limiter.take_ready();
                    if !batch.is_empty() {
                        return Some(Taken { batch, acks, fresh: false });
                    }
                }
            }
        }
    }
}

/// A batch taken by a stage, with its acknowledgements; `fresh` when it
/// came from the queue (counted as received), not from parking.
pub(super) struct Taken {
    pub(super) batch: Batch,
    pub(super) acks: Acks,
    pub(super) fresh: bool,
}

impl Taken {
    pub(super) fn fresh(batch: Batch, acks: Acks) -> Self {
        Self {
            batch,
            acks,
            fresh: true,
        }
    }
}
