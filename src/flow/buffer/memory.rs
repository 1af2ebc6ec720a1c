//! The memory queue: a stage's bounded input queue, bounded in events (not messages) and,
//! with `buffer.max_bytes`, in the encoded JSON bytes of those events, with
//! the three `when_full` policies applied to whichever limit is reached
//! first. Batches go in and out whole; the lock is
//! taken once per batch, never per event.
//!
//! Several senders (fan-in) share one receiver. The queue closes for the
//! receiver once every sender is gone and the queue is empty; it closes for
//! senders when the receiver is gone (its stage ended or panicked): what it
//! still held is failed (counted as discarded with reason `error`, its
//! acknowledgements failed: the sources redeliver or refuse), blocked
//! senders wake, and every later send fails its acknowledgements and
//! reports how many events it could not deliver.

use super::Undelivered;
use crate::config::controls::WhenFull;
use crate::core::sync::LockExt;
use crate::core::{AckedChunks, Acks, Batch, MAX_BATCH};
use crate::telemetry::{ComponentMetrics, DiscardReason};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// A queued batch with the acknowledgements it carries and, when the queue
/// counts bytes, each event's encoded size.
struct Queued {
    batch: Batch,
    acks: Acks,
    sizes: Vec<u32>,
}

struct State {
    queue: VecDeque<Queued>,
    events: usize,
    /// Encoded bytes of the queued events (0 unless `max_bytes` is set).
    bytes: usize,
    /// Events the stage took from the queue and has not handed on yet.
    in_flight: usize,
    /// Events the stage's keyed rate limit holds back (parked).
    parked: usize,
    senders: usize,
    receiver_alive: bool,
}

struct Shared {
    /// Taken with `lock_unpoisoned`: after a panic while holding it the
    /// queue state is still consistent (every mutation is a single push/pop).
    state: Mutex<State>,
    capacity: usize,
    /// `buffer.max_bytes`: when set, event sizes are measured on the way in.
    max_bytes: Option<usize>,
    bytes_gauge: Option<prometheus::IntGauge>,
    policy: WhenFull,
    /// Wakes the receiver when a batch arrives or the last sender leaves.
    filled: Notify,
    /// Wakes blocked senders when room frees up or the receiver leaves.
    drained: Notify,
    metrics: ComponentMetrics,
}

/// Creates a queue holding up to `capacity` events (at least 1) and, with
/// `max_bytes`, up to that many bytes of them.
pub(super) fn queue(
    capacity: usize,
    max_bytes: Option<usize>,
    policy: WhenFull,
    metrics: ComponentMetrics,
) -> (Sender, Receiver) {
    let capacity = capacity.max(1);
    let max_bytes = max_bytes.map(|b| b.max(1));
    metrics.buffer_capacity.set(capacity as i64);
    let bytes_gauge = max_bytes.map(|max| {
        let (filled, capacity) = metrics.buffer_byte_gauges();
        capacity.set(max as i64);
        filled
    });
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            events: 0,
            bytes: 0,
            in_flight: 0,
            parked: 0,
            senders: 1,
            receiver_alive: true,
        }),
        capacity,
        max_bytes,
        bytes_gauge,
        policy,
        filled: Notify::new(),
        drained: Notify::new(),
        metrics,
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// The producing side; clone it for each upstream (fan-in).
pub struct Sender {
    shared: Arc<Shared>,
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
        let last = {
            let mut state = self.shared.state.lock_unpoisoned();
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.shared.filled.notify_one();
        }
    }
}

impl Sender {
    /// Whether `n` more events fit now (always true for the drop policies,
    /// which never wait). A hint for producers that answer "busy" rather
    /// than wait, like the http_server source.
    pub fn has_room(&self, n: usize) -> bool {
        let state = self.shared.state.lock_unpoisoned();
        self.shared.policy != WhenFull::Block
            || (state.events + n.min(self.shared.capacity) <= self.shared.capacity
                && self.shared.max_bytes.is_none_or(|max| state.bytes < max))
    }

    /// Queues `batch` under the queue's `when_full` policy. With `block` it
    /// waits for room; the drop policies never wait.
    /// A batch dropped by a policy releases its acknowledgements (a rule
    /// the user configured discarded it).
    pub async fn send(&self, batch: Batch, acks: Acks) -> Result<(), Undelivered> {
        if let Some(max) = self.shared.max_bytes {
            return self.send_measured(batch, acks, max).await;
        }
        // A batch larger than the whole queue goes in capacity-sized parts.
        let mut parts = AckedChunks::new(batch, acks, self.shared.capacity);
        while let Some((part, part_acks)) = parts.next() {
            if let Err(Undelivered(n)) = self.send_fitting(part, part_acks, Vec::new()).await {
                return Err(Undelivered(n + parts.remaining()));
            }
        }
        Ok(())
    }

    /// As `send`, measuring each event once (one serialization pass, paid
    /// only by queues with `max_bytes`) and splitting the batch into parts
    /// that fit the queue in events and bytes (an event larger than
    /// `max_bytes` goes alone, into an empty queue).
    async fn send_measured(&self, batch: Batch, acks: Acks, max: usize) -> Result<(), Undelivered> {
        let mut sizes: Vec<u32> = batch
            .iter()
            .map(|e| u32::try_from(crate::core::encoded_len(e)).unwrap_or(u32::MAX))
            .collect();
        let mut ends = Vec::new();
        let (mut n, mut bytes) = (0, 0usize);
        for (i, &size) in sizes.iter().enumerate() {
            if n > 0 && (n == self.shared.capacity || bytes + size as usize > max) {
                ends.push(i);
                (n, bytes) = (0, 0);
            }
            n += 1;
            bytes += size as usize;
        }
        if ends.is_empty() {
            return self.send_fitting(batch, acks, sizes).await;
        }
        let mut parts = AckedChunks::at(batch, acks, &ends);
        while let Some((part, part_acks)) = parts.next() {
            let part_sizes: Vec<u32> = sizes.drain(..part.len()).collect();
            if let Err(Undelivered(n)) = self.send_fitting(part, part_acks, part_sizes).await {
                return Err(Undelivered(n + parts.remaining()));
            }
        }
        Ok(())
    }

    async fn send_fitting(
        &self,
        mut batch: Batch,
        acks: Acks,
        mut sizes: Vec<u32>,
    ) -> Result<(), Undelivered> {
        let shared = &*self.shared;
        loop {
            let notified = shared.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = shared.state.lock_unpoisoned();
                if !state.receiver_alive {
                    acks.fail();
                    return Err(Undelivered(batch.len()));
                }
                let fit = shared.fitting(&state, &sizes, batch.len());
                match shared.policy {
                    // An empty queue takes any part: `send_measured` made
                    // it as small as it gets.
                    WhenFull::Block if fit < batch.len() && state.events > 0 => {}
                    WhenFull::Block => {
                        push(shared, &mut state, Queued { batch, acks, sizes });
                        return Ok(());
                    }
                    WhenFull::DropNewest => {
                        let dropped = batch.len() - fit;
                        batch.truncate(fit);
                        sizes.truncate(fit.min(sizes.len()));
                        shared.metrics.discard(DiscardReason::BufferFull, dropped);
                        if !batch.is_empty() {
                            push(shared, &mut state, Queued { batch, acks, sizes });
                        }
                        return Ok(());
                    }
                    WhenFull::DropOldest => {
                        let mut dropped = 0;
                        while shared.fitting(&state, &sizes, batch.len()) < batch.len() {
                            // By events, only as many as needed; by bytes, the
                            // front event at a time.
                            let over = (state.events + batch.len()).saturating_sub(shared.capacity);
                            let Some(front) = state.queue.front_mut() else {
                                break;
                            };
                            let take = over.max(1).min(front.batch.len());
                            front.batch.drain(..take);
                            let freed: usize = front
                                .sizes
                                .drain(..take.min(front.sizes.len()))
                                .map(|s| s as usize)
                                .sum();
                            if front.batch.is_empty() {
                                state.queue.pop_front();
                            }
                            state.events -= take;
                            state.bytes -= freed;
                            dropped += take;
                        }
                        shared.metrics.discard(DiscardReason::BufferFull, dropped);
                        push(shared, &mut state, Queued { batch, acks, sizes });
                        return Ok(());
                    }
                }
            }
            notified.await;
        }
    }
}

impl Shared {
    /// How many of the first events of a part (with `sizes`, when the queue
    /// counts bytes) fit in the room left now.
    fn fitting(&self, state: &State, sizes: &[u32], len: usize) -> usize {
        let by_events = len.min(self.capacity - state.events.min(self.capacity));
        let Some(max) = self.max_bytes else {
            return by_events;
        };
        let mut room = max.saturating_sub(state.bytes);
        sizes[..by_events.min(sizes.len())]
            .iter()
            .take_while(|&&s| {
                let fits = s as usize <= room;
                room = room.saturating_sub(s as usize);
                fits
            })
            .count()
    }
}

fn push(shared: &Shared, state: &mut State, q: Queued) {
    state.events += q.batch.len();
    let bytes: usize = q.sizes.iter().map(|&s| s as usize).sum();
    state.bytes += bytes;
    state.queue.push_back(q);
    shared.metrics.buffer_events.set(state.events as i64);
    if let Some(g) = &shared.bytes_gauge {
        g.set(state.bytes as i64);
    }
    shared.filled.notify_one();
}

/// What one look at the queue found.
enum Taken {
    /// The front batch and the queued ones merged into it.
    Parts((Batch, Acks), Vec<(Batch, Acks)>),
    /// Nothing yet; senders remain.
    Empty,
    /// Nothing, and no sender left.
    Closed,
}

/// The consuming side, owned by the stage.
pub struct Receiver {
    shared: Arc<Shared>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // A stage that ends cleanly has emptied its queue (`recv` returned
        // `None`); one that failed or panicked leaves batches its upstream
        // still holds handles on. They will never be read: fail them now,
        // or an acknowledging source waits for them forever.
        let orphans = {
            let mut state = self.shared.state.lock_unpoisoned();
            state.receiver_alive = false;
            state.events = 0;
            state.bytes = 0;
            std::mem::take(&mut state.queue)
        };
        self.shared.drained.notify_waiters();
        let lost: usize = orphans.iter().map(|q| q.batch.len()).sum();
        if lost > 0 {
            self.shared.metrics.buffer_events.set(0);
            self.shared.metrics.discard(DiscardReason::Error, lost);
        }
        for q in &orphans {
            q.acks.fail();
        }
        // The source callbacks run here, outside the lock.
        drop(orphans);
    }
}

impl Receiver {
    /// The next batch; small queued batches are merged up to `MAX_BATCH`
    /// events. `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<(Batch, Acks)> {
        let shared = &*self.shared;
        loop {
            let notified = shared.filled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.take() {
                Taken::Parts(first, more) => {
                    shared.drained.notify_waiters();
                    // The batches and their acknowledgements merge outside the lock.
                    let (mut batch, mut acks) = first;
                    for (next, next_acks) in more {
                        batch.extend(next);
                        acks.merge(next_acks);
                    }
                    return Some((batch, acks));
                }
                Taken::Closed => return None,
                Taken::Empty => notified.await,
            }
        }
    }

    /// Under the lock, only the queue's bookkeeping: the front batch and
    /// the ones that fit with it in `MAX_BATCH`.
    fn take(&self) -> Taken {
        let shared = &*self.shared;
        let mut state = shared.state.lock_unpoisoned();
        let Some(first) = state.queue.pop_front() else {
            return if state.senders == 0 {
                Taken::Closed
            } else {
                Taken::Empty
            };
        };
        let mut taken = first.batch.len();
        let mut bytes: usize = first.sizes.iter().map(|&s| s as usize).sum();
        let mut more = Vec::new();
        while let Some(next) = state.queue.front() {
            if taken + next.batch.len() > MAX_BATCH {
                break;
            }
            taken += next.batch.len();
            bytes += next.sizes.iter().map(|&s| s as usize).sum::<usize>();
            more.extend(state.queue.pop_front().map(|q| (q.batch, q.acks)));
        }
        state.events -= taken;
        state.bytes -= bytes;
        state.in_flight += taken;
        shared.metrics.buffer_events.set(state.events as i64);
        if let Some(g) = &shared.bytes_gauge {
            g.set(state.bytes as i64);
        }
        Taken::Parts((first.batch, first.acks), more)
    }

    /// Events the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Events queued right now (for the shutdown report).
    pub fn len(&self) -> usize {
        self.shared.state.lock_unpoisoned().events
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A handle that reads the queue length after the receiver moved into its task.
    pub fn gauge(&self) -> Gauge {
        Gauge {
            shared: self.shared.clone(),
        }
    }
}

/// Reads how many events a stage holds: queued, or taken and not yet
/// handed on.
#[derive(Clone)]
pub struct Gauge {
    shared: Arc<Shared>,
}

impl Gauge {
    /// Queued, in-flight and parked events (what a shutdown deadline
    /// leaves undelivered).
    pub fn events(&self) -> usize {
        let state = self.shared.state.lock_unpoisoned();
        state.events + state.in_flight + state.parked
    }

    /// How many events the stage's keyed rate limit holds now.
    pub fn set_parked(&self, n: usize) {
        self.shared.state.lock_unpoisoned().parked = n;
    }

    /// The stage has handed on (or dropped by rule) `n` events it received.
    pub fn settle(&self, n: usize) {
        let mut state = self.shared.state.lock_unpoisoned();
        state.in_flight = state.in_flight.saturating_sub(n);
    }
}

/// The queue's tests, and helpers the fan-out's tests use too.
#[cfg(test)]
pub(in crate::flow) mod tests;
