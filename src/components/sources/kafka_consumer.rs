//! The kafka source's consumer thread: a librdkafka group member polled on
//! a thread of its own, because rebalance callbacks run inside `poll` and
//! a revocation blocks there while the pipeline drains the revoked
//! partitions — a wait that must not hold up a tokio worker.
//!
//! The thread makes batches of up to `MAX_BATCH` messages, registers their
//! per-partition segments (`kafka_offsets`) and hands them to the source
//! task; acknowledgements come back over a channel and move the
//! committable offsets, committed every `commit_interval`. A full pipeline
//! pauses every assigned partition (polling goes on, so rebalances are
//! served) until the batch is taken. A batch a sink could not write rewinds
//! its partition: it is read again from its first message a second later.

use super::kafka_offsets::{Offsets, Outcome, Partition, Segment, Settled};
use super::{Codec, decode};
use crate::core::sync::LockExt;
use crate::core::{Acks, Batch, Delivery, Map, Sampled, Value};
use crate::telemetry::{AckCounters, ComponentMetrics};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// A batch for the source task to emit. Dropped untaken (a full pipeline
/// at a rebalance, a stop, a channel dropped with batches in it) it fails
/// its acknowledgements: dropping plain `Acks` would count as delivered.
pub struct Fetched {
    /// The key of its segments in `Shared::batches`.
    id: u64,
    events: Batch,
    failed: Vec<Sampled>,
    acks: Acks,
}

impl Fetched {
    /// The events, the decode failures and their acknowledgements.
    pub fn take(mut self) -> (Batch, Vec<Sampled>, Acks) {
        (
            std::mem::take(&mut self.events),
            std::mem::take(&mut self.failed),
            std::mem::take(&mut self.acks),
        )
    }
}

impl Drop for Fetched {
    fn drop(&mut self) {
        self.acks.fail();
    }
}

/// What the consumer thread needs besides the client.
pub struct Settings {
    pub name: String,
    pub codec: Codec,
    pub max_line_bytes: usize,
    pub metadata_field: Option<String>,
    pub drain_timeout: Duration,
    pub commit_interval: Duration,
    pub metrics: ComponentMetrics,
}

/// How long a partition whose batch failed waits before it is read again,
/// so a failing sink is not hammered (as the nats source's nak delay).
const REWIND_DELAY: Duration = Duration::from_secs(1);
/// Longest wait in `poll`: how soon a stop or a full pipeline is noticed.
const POLL: Duration = Duration::from_millis(100);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The state the main loop and the rebalance callbacks share (both run
/// on the consumer thread, so the lock is never contended).
struct Shared {
    offsets: Offsets,
    /// Batches handed out: id -> (segments, messages).
    batches: HashMap<u64, (Vec<Segment>, usize)>,
    /// A batch the full pipeline has not taken yet.
    held: Option<Fetched>,
    /// Partitions to read again from an offset, at a time.
    rewinds: HashMap<Partition, (i64, Instant)>,
    lag: HashMap<Partition, prometheus::IntGauge>,
}

pub struct Context {
    settings: Settings,
    counters: AckCounters,
    shared: Mutex<Shared>,
    settled: Mutex<mpsc::Receiver<(u64, Delivery)>>,
    /// Whether the brokers were reported unreachable (warned once).
    down: AtomicBool,
    /// Set by the source task when it stops: from then on nothing is read
    /// and a failed batch only stops the offset (shared with the task, so
    /// batches it fails while stopping never start a new epoch).
    stopping: Arc<AtomicBool>,
    /// The last error `poll` returned (a repeated one is logged at debug).
    last_poll_error: Mutex<String>,
    /// Counts rebalances: a batch being filled when one runs inside `poll`
    /// drops what it read of partitions whose epoch moved on.
    rebalances: AtomicU64,
}

impl Context {
    /// The flag that stops the consumer thread.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stopping.clone()
    }

    pub fn new(settings: Settings) -> (Self, mpsc::Sender<(u64, Delivery)>) {
        let (tx, rx) = mpsc::channel();
        let counters = settings.metrics.acknowledged();
        let context = Self {
            settings,
            counters,
            shared: Mutex::new(Shared {
                offsets: Offsets::default(),
                batches: HashMap::new(),
                held: None,
                rewinds: HashMap::new(),
                lag: HashMap::new(),
            }),
            settled: Mutex::new(rx),
            down: AtomicBool::new(false),
            stopping: Arc::default(),
            last_poll_error: Mutex::new(String::new()),
            rebalances: AtomicU64::new(0),
        };
        (context, tx)
    }

    /// Applies the outcomes that arrived, waiting up to `wait` for the first.
    /// Returns false once every sender is gone.
    fn settle(&self, wait: Duration) -> bool {
        let rx = self.settled.lock_unpoisoned();
        let first = match rx.recv_timeout(wait) {
            Ok(first) => first,
            Err(mpsc::RecvTimeoutError::Timeout) => return true,
            Err(mpsc::RecvTimeoutError::Disconnected) => return false,
        };
        let mut shared = self.shared.lock_unpoisoned();
        for (id, delivery) in std::iter::once(first).chain(rx.try_iter()) {
            let Some((segments, messages)) = shared.batches.remove(&id) else {
                continue;
            };
            let delivered = delivery == Delivery::Delivered;
            self.counters.count(delivered, messages);
            // A member that stops reads nothing again: it commits up to
            // the first failure and leaves the rest to the group.
            let outcome = match (delivered, self.stopping.load(Ordering::Relaxed)) {
                (true, _) => Outcome::Delivered,
                (false, false) => Outcome::Failed,
                (false, true) => Outcome::Blocked,
            };
            for segment in &segments {
                if let Settled::Rewind(partition, offset) = shared.offsets.settle(segment, outcome)
                {
                    tracing::info!(component = %self.settings.name, "events of {} [{}] from offset {offset} were not acknowledged as written; reading them again", partition.0, partition.1);
                    shared
                        .rewinds
                        .insert(partition, (offset, Instant::now() + REWIND_DELAY));
                }
            }
        }
        true
    }

    /// Forgets the batch the full pipeline did not take: its segments of
    /// `release` (all if `None`) are blocked, the others read again.
    fn unhold(&self, release: Option<&[Partition]>) {
        let mut shared = self.shared.lock_unpoisoned();
        let Some(held) = shared.held.take() else {
            return;
        };
        let (segments, _) = shared.batches.remove(&held.id).unwrap_or_default();
        for segment in &segments {
            let outcome = match release {
                Some(r) if !r.contains(&segment.partition) => Outcome::Failed,
                _ => Outcome::Blocked,
            };
            if let Settled::Rewind(p, offset) = shared.offsets.settle(segment, outcome) {
                shared.rewinds.insert(p, (offset, Instant::now()));
            }
        }
        // Dropped here, its acknowledgement names no batch any more.
        drop(held);
    }

    /// Commits what moved, among `only` if given.
    fn commit(&self, consumer: &BaseConsumer<Self>, only: Option<&[Partition]>, mode: CommitMode) {
        let offsets = self.shared.lock_unpoisoned().offsets.to_commit(only);
        if offsets.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::with_capacity(offsets.len());
        for ((topic, partition), offset) in &offsets {
            // Adding an offset to a new list entry cannot fail.
            let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*offset));
        }
        if let Err(e) = consumer.commit(&list, mode) {
            tracing::warn!(component = %self.settings.name, "committing offsets: {e}; retrying with the next commit");
            let mut shared = self.shared.lock_unpoisoned();
            for (partition, offset) in &offsets {
                shared.offsets.commit_failed(partition, *offset);
            }
        }
    }
}

impl ClientContext for Context {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        // Connection failures are reported once through `error`.
        tracing::debug!(component = %self.settings.name, "librdkafka {level:?} {fac}: {message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(component = %self.settings.name, "Kafka: {error}: {reason}; retrying in the background");
        }
    }

    fn stats(&self, statistics: Statistics) {
        let shared = self.shared.lock_unpoisoned();
        for (partition, gauge) in &shared.lag {
            let Some(p) = statistics
                .topics
                .get(&*partition.0)
                .and_then(|t| t.partitions.get(&partition.1))
            else {
                continue;
            };
            // Before the group's first commit, everything the broker keeps
            // is still to be read.
            let from = match p.committed_offset {
                c if c >= 0 => c,
                _ => p.lo_offset,
            };
            if p.hi_offset >= 0 && from >= 0 {
                gauge.set((p.hi_offset - from).max(0));
            }
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let revoked = partitions(list);
        self.rebalances.fetch_add(1, Ordering::Relaxed);
        // What the full pipeline did not take goes back unread: for the
        // revoked partitions it only stops the offset (failing it would
        // start a new epoch and the drain would not wait for the batches
        // before it); the others read it again.
        self.unhold(Some(&revoked));
        // librdkafka keeps an application pause across unassign and assign:
        // a partition paused now would come back paused and never be read.
        if let Err(e) = consumer.resume(list) {
            tracing::warn!(component = %self.settings.name, "resuming revoked partitions: {e}");
        }
        let deadline = Instant::now() + self.settings.drain_timeout;
        loop {
            self.settle(Duration::ZERO);
            let shared = self.shared.lock_unpoisoned();
            let waiting: usize = revoked.iter().map(|p| shared.offsets.outstanding(p)).sum();
            drop(shared);
            if waiting == 0 {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(component = %self.settings.name, "rebalance: {waiting} batches of revoked partitions still in flight after drain_timeout; they will be read again by the new owner");
                break;
            }
            self.settle(Duration::from_millis(20));
        }
        self.commit(consumer, Some(&revoked), CommitMode::Sync);
        let mut shared = self.shared.lock_unpoisoned();
        for p in &revoked {
            shared.offsets.release(p);
            shared.rewinds.remove(p);
            if shared.lag.remove(p).is_some() {
                self.settings.metrics.remove_kafka_lag(&p.0, p.1);
            }
        }
        tracing::info!(component = %self.settings.name, "released {} partitions", revoked.len());
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let assigned = partitions(list);
                self.rebalances.fetch_add(1, Ordering::Relaxed);
                // As in `pre_rebalance`: no pause survives into an assignment.
                if let Err(e) = consumer.resume(list) {
                    tracing::warn!(component = %self.settings.name, "resuming assigned partitions: {e}");
                }
                let mut shared = self.shared.lock_unpoisoned();
                for p in &assigned {
                    shared.offsets.assign(p.clone());
                    let gauge = self.settings.metrics.kafka_lag(&p.0, p.1);
                    shared.lag.insert(p.clone(), gauge);
                }
                tracing::info!(component = %self.settings.name, "assigned {} partitions", assigned.len());
            }
            Rebalance::Error(e) => {
                tracing::warn!(component = %self.settings.name, "rebalance failed: {e}")
            }
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!(component = %self.settings.name, "an offset commit failed: {e}");
        }
    }
}

fn partitions(list: &TopicPartitionList) -> Vec<Partition> {
    list.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

/// Runs the consumer until its stop flag is set or the source task is gone; then
/// waits until every batch handed out is settled, commits and leaves the
/// group.
pub fn run(
    consumer: BaseConsumer<Context>,
    acks_tx: mpsc::Sender<(u64, Delivery)>,
    out: tokio::sync::mpsc::Sender<Fetched>,
) {
    let ctx = consumer.context().clone();
    let mut next_id = 0u64;
    let mut paused = false;
    let mut last_commit = Instant::now();
    while !ctx.stopping.load(Ordering::Relaxed) {
        ctx.settle(Duration::ZERO);
        rewind_due(&consumer);
        if last_commit.elapsed() >= ctx.settings.commit_interval {
            ctx.commit(&consumer, None, CommitMode::Async);
            last_commit = Instant::now();
        }
        let held = ctx.shared.lock_unpoisoned().held.take();
        if let Some(fetched) = held {
            match out.try_send(fetched) {
                Ok(()) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Full(fetched)) => {
                    ctx.shared.lock_unpoisoned().held = Some(fetched);
                    if !paused {
                        set_paused(&consumer, true);
                        paused = true;
                    }
                    // Serves rebalances and statistics; paused partitions
                    // deliver nothing (librdkafka drops what it prefetched
                    // and resumes from the last message handed out).
                    if let Some(Ok(m)) = consumer.poll(POLL) {
                        // Prefetched before the pause took effect: read it
                        // again from here, or the position would move past it.
                        let p = (Arc::from(m.topic()), m.partition());
                        tracing::debug!(component = %ctx.settings.name, "message at offset {} while paused: read again", m.offset());
                        ctx.shared
                            .lock_unpoisoned()
                            .rewinds
                            .insert(p, (m.offset(), Instant::now()));
                    }
                    continue;
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
        if paused {
            set_paused(&consumer, false);
            paused = false;
        }
        if let Some(fetched) = fill(&consumer, &ctx, &acks_tx, &mut next_id) {
            ctx.shared.lock_unpoisoned().held = Some(fetched);
        }
    }
    ctx.stopping.store(true, Ordering::Relaxed);
    ctx.unhold(None);
    drop(out);
    drop(acks_tx);
    // Every batch handed out settles (the pipeline drains on stop).
    while ctx.settle(POLL) {
        // Serves commit callbacks and statistics; a message is left unread.
        let _ = consumer.poll(Duration::ZERO);
    }
    ctx.commit(&consumer, None, CommitMode::Sync);
    // Dropping the consumer leaves the group (a last revocation runs with
    // nothing in flight).
}

/// Pauses or resumes every assigned partition.
fn set_paused(consumer: &BaseConsumer<Context>, pause: bool) {
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    let result = match pause {
        true => consumer.pause(&assignment),
        false => consumer.resume(&assignment),
    };
    if let Err(e) = result {
        tracing::warn!(component = %consumer.context().settings.name, "pausing/resuming partitions: {e}");
    }
}

/// Seeks the partitions whose rewind delay has passed.
fn rewind_due(consumer: &BaseConsumer<Context>) {
    let ctx = consumer.context();
    let now = Instant::now();
    let due: Vec<(Partition, i64)> = {
        let mut shared = ctx.shared.lock_unpoisoned();
        let due: Vec<_> = shared
            .rewinds
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(p, (offset, _))| (p.clone(), *offset))
            .collect();
        for (p, _) in &due {
            shared.rewinds.remove(p);
        }
        due
    };
    for ((topic, partition), offset) in due {
        if let Err(e) = consumer.seek(&topic, partition, Offset::Offset(offset), CLIENT_TIMEOUT) {
            tracing::warn!(component = %ctx.settings.name, "seeking {topic} [{partition}] back to {offset}: {e}; retrying");
            ctx.shared
                .lock_unpoisoned()
                .rewinds
                .insert((topic, partition), (offset, Instant::now() + REWIND_DELAY));
        }
    }
}

/// Polls up to `MAX_BATCH` messages into a batch (waiting up to `POLL`
/// for the first); `None` when nothing arrived.
fn fill(
    consumer: &BaseConsumer<Context>,
    ctx: &Context,
    acks_tx: &mpsc::Sender<(u64, Delivery)>,
    next_id: &mut u64,
) -> Option<Fetched> {
    let s = &ctx.settings;
    let mut events = Vec::new();
    let mut failed = Vec::new();
    // (partition, its epoch when read, first offset, last offset)
    let mut spans: Vec<(Partition, u64, i64, i64)> = Vec::new();
    // The span of each event and failure, to drop stale ones.
    let (mut event_span, mut failed_span) = (Vec::new(), Vec::new());
    let mut rebalances = ctx.rebalances.load(Ordering::Relaxed);
    let mut wait = POLL;
    while events.len() + failed.len() < crate::core::MAX_BATCH {
        let polled = consumer.poll(wait);
        let now = ctx.rebalances.load(Ordering::Relaxed);
        if now != rebalances {
            rebalances = now;
            let stale: Vec<bool> = {
                let shared = ctx.shared.lock_unpoisoned();
                spans
                    .iter()
                    .map(|(p, epoch, ..)| shared.offsets.epoch(p) != Some(*epoch))
                    .collect()
            };
            if stale.contains(&true) {
                drop_stale(&stale, &mut events, &mut event_span);
                drop_stale(&stale, &mut failed, &mut failed_span);
                let mut i = 0;
                spans.retain(|_| {
                    i += 1;
                    !stale[i - 1]
                });
            }
        }
        let m = match polled {
            None => break,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                use rdkafka::error::RDKafkaErrorCode::{AllBrokersDown, BrokerTransportFailure};
                if let KafkaError::MessageConsumption(AllBrokersDown | BrokerTransportFailure) = e {
                    // The client's `error` callback reported it once.
                    ctx.error(e, "retrying");
                    break;
                }
                let e = e.to_string();
                let mut last = ctx.last_poll_error.lock_unpoisoned();
                if *last != e {
                    tracing::warn!(component = %s.name, "Kafka: {e}");
                    *last = e;
                } else {
                    tracing::debug!(component = %s.name, "Kafka: {e}");
                }
                break;
            }
        };
        wait = Duration::ZERO;
        if ctx.down.swap(false, Ordering::Relaxed) {
            tracing::info!(component = %s.name, "Kafka is reachable again");
        }
        let at = spans
            .iter()
            .position(|(p, ..)| &*p.0 == m.topic() && p.1 == m.partition());
        let span = match at {
            Some(i) => {
                spans[i].3 = m.offset();
                i
            }
            None => {
                let p: Partition = (Arc::from(m.topic()), m.partition());
                let shared = ctx.shared.lock_unpoisoned();
                // Read again after a rewind; prefetched before a revocation.
                let epoch = shared.offsets.epoch(&p);
                let Some(epoch) = epoch.filter(|_| !shared.rewinds.contains_key(&p)) else {
                    continue;
                };
                drop(shared);
                spans.push((p, epoch, m.offset(), m.offset()));
                spans.len() - 1
            }
        };
        let payload = m.payload().unwrap_or_default();
        match decode::event_within(payload, s.codec, "message", s.max_line_bytes) {
            Ok(mut event) => {
                if let (Some(field), Some(map)) = (&s.metadata_field, event.as_object_mut()) {
                    map.insert(field.as_str().into(), metadata(&m));
                }
                events.push(event);
                event_span.push(span);
            }
            Err(f) => {
                failed.push(f);
                failed_span.push(span);
            }
        }
    }
    if spans.is_empty() {
        return None;
    }
    let messages = events.len() + failed.len();
    let mut shared = ctx.shared.lock_unpoisoned();
    let segments = spans
        .iter()
        .filter_map(|(p, epoch, first, last)| shared.offsets.segment(p, *epoch, *first, *last))
        .collect();
    let id = *next_id;
    *next_id += 1;
    shared.batches.insert(id, (segments, messages));
    let tx = acks_tx.clone();
    let acks = Acks::new(move |delivery| {
        let _ = tx.send((id, delivery));
    });
    Some(Fetched {
        id,
        events,
        failed,
        acks,
    })
}

/// Removes the items whose span is stale and renumbers the owners of the
/// rest for `stale`'s survivors: a rebalance ran while a batch was filled,
/// and what it read of released or re-assigned partitions is read again
/// from their committed offsets (emitted untracked, it would be written twice).
fn drop_stale<T>(stale: &[bool], items: &mut Vec<T>, owner: &mut Vec<usize>) {
    let mut renumber = Vec::with_capacity(stale.len());
    let mut kept = 0;
    for &s in stale {
        renumber.push(kept);
        kept += usize::from(!s);
    }
    let mut i = 0;
    items.retain(|_| {
        i += 1;
        !stale[owner[i - 1]]
    });
    owner.retain(|o| !stale[*o]);
    for o in owner.iter_mut() {
        *o = renumber[*o];
    }
}

/// `{topic, partition, offset, key, timestamp, headers}` of a message.
fn metadata(m: &BorrowedMessage<'_>) -> Value {
    let text = |b: &[u8]| Value::String(String::from_utf8_lossy(b).as_ref().into());
    let mut map = Map::with_capacity(6);
    map.insert("topic".into(), Value::String(m.topic().into()));
    map.insert("partition".into(), Value::Number(m.partition().into()));
    map.insert("offset".into(), Value::Number(m.offset().into()));
    map.insert("key".into(), m.key().map_or(Value::Null, text));
    let timestamp = m.timestamp().to_millis();
    map.insert(
        "timestamp".into(),
        timestamp.map_or(Value::Null, |t| Value::Number(t.into())),
    );
    let mut headers = Map::new();
    if let Some(hs) = m.headers() {
        for h in hs.iter() {
            headers.insert(h.key.into(), h.value.map_or(Value::Null, text));
        }
    }
    map.insert("headers".into(), Value::Object(headers));
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_of_stale_spans_are_dropped_and_the_rest_renumbered() {
        let stale = [false, true, false];
        let mut items = vec!["a0", "b1", "c2", "d0", "e1"];
        let mut owner = vec![0, 1, 2, 0, 1];
        drop_stale(&stale, &mut items, &mut owner);
        assert_eq!(items, vec!["a0", "c2", "d0"]);
        assert_eq!(owner, vec![0, 1, 0], "span 2 is now span 1");
    }
}
