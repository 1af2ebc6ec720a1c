//! A stage's bounded input queue, bounded in events (not messages) and,
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
pub fn channel(
    capacity: usize,
    max_bytes: Option<usize>,
    policy: WhenFull,
    metrics: ComponentMetrics,
) -> (BufferSender, BufferReceiver) {
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
        BufferSender {
            shared: shared.clone(),
        },
        BufferReceiver { shared },
    )
}

/// The producing side; clone it for each upstream (fan-in).
pub struct BufferSender {
    shared: Arc<Shared>,
}

impl Clone for BufferSender {
    fn clone(&self) -> Self {
        self.shared.state.lock_unpoisoned().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for BufferSender {
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

/// Events a send could not deliver because the consumer is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undelivered(pub usize);

impl BufferSender {
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
pub struct BufferReceiver {
    shared: Arc<Shared>,
}

impl Drop for BufferReceiver {
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

impl BufferReceiver {
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
    pub fn gauge(&self) -> BufferGauge {
        BufferGauge {
            shared: self.shared.clone(),
        }
    }
}

/// Reads how many events a stage holds: queued, or taken and not yet
/// handed on.
#[derive(Clone)]
pub struct BufferGauge {
    shared: Arc<Shared>,
}

impl BufferGauge {
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
pub(super) mod tests {
    use super::*;
    use crate::ev as json;
    use crate::telemetry::Metrics;

    /// `n` events `{"i": start..}`.
    pub(in crate::flow) fn events(n: usize, start: usize) -> Batch {
        (start..start + n).map(|i| json!({ "i": i })).collect()
    }

    fn ids(b: &Batch) -> Vec<u64> {
        b.iter().map(|e| e["i"].as_u64().unwrap()).collect()
    }

    /// A queue of `cap` events feeding a sink, with its metrics.
    pub(in crate::flow) fn make(
        cap: usize,
        policy: WhenFull,
    ) -> (BufferSender, BufferReceiver, ComponentMetrics) {
        let m = Metrics::new().component("p", "c", "sink", "blackhole");
        let (tx, rx) = channel(cap, None, policy, m.clone());
        (tx, rx, m)
    }

    #[tokio::test]
    async fn block_waits_for_room_and_loses_nothing() {
        let (tx, mut rx, _) = make(10, WhenFull::Block);
        tx.send(events(10, 0), Acks::none()).await.unwrap();
        let tx2 = tx.clone();
        let pending = tokio::spawn(async move { tx2.send(events(5, 10), Acks::none()).await });
        tokio::task::yield_now().await;
        assert!(!pending.is_finished(), "a full queue must block the sender");
        assert_eq!(rx.len(), 10);
        assert_eq!(
            ids(&rx.recv().await.unwrap().0),
            (0..10).collect::<Vec<_>>()
        );
        pending.await.unwrap().unwrap();
        drop(tx);
        assert_eq!(
            ids(&rx.recv().await.unwrap().0),
            (10..15).collect::<Vec<_>>()
        );
        assert!(rx.recv().await.is_none());
    }

    fn make_bytes(
        cap: usize,
        max_bytes: usize,
        policy: WhenFull,
    ) -> (BufferSender, BufferReceiver, ComponentMetrics) {
        let m = Metrics::new().component("p", "c", "sink", "blackhole");
        let (tx, rx) = channel(cap, Some(max_bytes), policy, m.clone());
        (tx, rx, m)
    }

    #[tokio::test]
    async fn max_bytes_blocks_at_whichever_limit_comes_first() {
        // `{"i":0}` is 7 bytes: 20 bytes hold two such events.
        let (tx, mut rx, _) = make_bytes(100, 20, WhenFull::Block);
        tx.send(events(2, 0), Acks::none()).await.unwrap();
        let tx2 = tx.clone();
        let pending = tokio::spawn(async move { tx2.send(events(1, 2), Acks::none()).await });
        tokio::task::yield_now().await;
        assert!(!pending.is_finished(), "14 + 7 bytes is over 20");
        assert_eq!(ids(&rx.recv().await.unwrap().0), vec![0, 1]);
        pending.await.unwrap().unwrap();
        // A batch over the byte limit goes in parts that fit: 5 events, 2 per part.
        let tx3 = tx.clone();
        let big = tokio::spawn(async move { tx3.send(events(5, 3), Acks::none()).await });
        let mut got = ids(&rx.recv().await.unwrap().0);
        while got.len() < 6 {
            let (b, _) = rx.recv().await.unwrap();
            assert!(b.len() <= 3, "at most 20 bytes queued at once: {b:?}");
            got.extend(ids(&b));
        }
        big.await.unwrap().unwrap();
        assert_eq!(got, (2..8).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn an_event_larger_than_max_bytes_passes_alone() {
        let (tx, mut rx, _) = make_bytes(100, 4, WhenFull::Block);
        tx.send(events(1, 0), Acks::none()).await.unwrap();
        let tx2 = tx.clone();
        let second = tokio::spawn(async move { tx2.send(events(1, 1), Acks::none()).await });
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "it waits for the queue to empty");
        assert_eq!(ids(&rx.recv().await.unwrap().0), vec![0]);
        second.await.unwrap().unwrap();
        assert_eq!(ids(&rx.recv().await.unwrap().0), vec![1]);
    }

    #[tokio::test]
    async fn max_bytes_drop_policies_shed_by_bytes() {
        let (tx, mut rx, m) = make_bytes(100, 20, WhenFull::DropNewest);
        tx.send(events(5, 0), Acks::none()).await.unwrap();
        drop(tx);
        assert_eq!(ids(&rx.recv().await.unwrap().0), vec![0, 1]);
        assert!(rx.recv().await.is_none());
        assert_eq!(m.families_discarded(DiscardReason::BufferFull), 3);

        let (tx, mut rx, m) = make_bytes(100, 20, WhenFull::DropOldest);
        tx.send(events(2, 0), Acks::none()).await.unwrap();
        tx.send(events(1, 2), Acks::none()).await.unwrap();
        tx.send(events(1, 3), Acks::none()).await.unwrap();
        drop(tx);
        assert_eq!(ids(&rx.recv().await.unwrap().0), vec![2, 3]);
        assert_eq!(m.families_discarded(DiscardReason::BufferFull), 2);
    }

    #[tokio::test]
    async fn drop_newest_keeps_the_first_events() {
        let (tx, mut rx, m) = make(4, WhenFull::DropNewest);
        tx.send(events(3, 0), Acks::none()).await.unwrap();
        tx.send(events(3, 3), Acks::none()).await.unwrap();
        drop(tx);
        assert_eq!(ids(&rx.recv().await.unwrap().0), vec![0, 1, 2, 3]);
        assert!(rx.recv().await.is_none());
        assert_eq!(m.families_discarded(DiscardReason::BufferFull), 2);
    }

    #[tokio::test]
    async fn drop_oldest_keeps_the_latest_events() {
        let (tx, mut rx, m) = make(4, WhenFull::DropOldest);
        tx.send(events(3, 0), Acks::none()).await.unwrap();
        tx.send(events(3, 3), Acks::none()).await.unwrap();
        tx.send(events(6, 6), Acks::none()).await.unwrap();
        drop(tx);
        assert_eq!(ids(&rx.recv().await.unwrap().0), vec![8, 9, 10, 11]);
        assert_eq!(m.families_discarded(DiscardReason::BufferFull), 8);
    }

    /// Acks recording their outcome under `name`.
    fn recorded(
        seen: &Arc<Mutex<Vec<(&'static str, crate::core::Delivery)>>>,
        name: &'static str,
    ) -> Acks {
        let seen = seen.clone();
        Acks::new(move |d| seen.lock().unwrap().push((name, d)))
    }

    #[tokio::test]
    async fn a_dead_receiver_fails_what_it_queued_and_every_later_send() {
        use crate::core::Delivery::Failed;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx, m) = make(4, WhenFull::Block);
        tx.send(events(2, 0), recorded(&seen, "a")).await.unwrap();
        tx.send(events(2, 2), recorded(&seen, "b")).await.unwrap();
        let blocked = {
            let (tx, acks) = (tx.clone(), recorded(&seen, "c"));
            tokio::spawn(async move { tx.send(events(1, 4), acks).await })
        };
        tokio::task::yield_now().await;
        assert!(!blocked.is_finished(), "the queue is full");
        // The stage ends abnormally; `tx` (an upstream) keeps the queue.
        drop(rx);
        assert_eq!(blocked.await.unwrap(), Err(Undelivered(1)));
        assert_eq!(
            tx.send(events(3, 5), recorded(&seen, "d")).await,
            Err(Undelivered(3))
        );
        let mut outcomes = seen.lock().unwrap().clone();
        outcomes.sort_by_key(|(name, _)| *name);
        assert_eq!(
            outcomes,
            vec![("a", Failed), ("b", Failed), ("c", Failed), ("d", Failed)],
            "what the queue held and what came later are failed, none waits"
        );
        assert_eq!(m.families_discarded(DiscardReason::Error), 4);
    }

    #[tokio::test]
    async fn oversized_batches_split_and_dead_receiver_reports_undelivered() {
        let (tx, mut rx, _) = make(3, WhenFull::Block);
        let send = tokio::spawn(async move {
            let r = tx.send(events(7, 0), Acks::none()).await;
            (r, tx)
        });
        assert_eq!(rx.recv().await.unwrap().0.len(), 3);
        assert_eq!(rx.recv().await.unwrap().0.len(), 3);
        drop(rx);
        let (r, _tx) = send.await.unwrap();
        assert_eq!(r, Err(Undelivered(1)));
    }
}
