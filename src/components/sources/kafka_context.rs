//! The kafka source's client context: the state its consumer thread and
//! librdkafka's callbacks share (offsets, batches handed out, the batch a
//! full pipeline has not taken, rewinds, lag gauges), how acknowledgements
//! settle and offsets are committed, and the rebalance callbacks: a
//! revocation blocks inside `poll` until the revoked partitions' events in
//! flight are written (up to `drain_timeout`), commits them, then releases.

use super::Codec;
use super::kafka_offsets::{Offsets, Outcome, Partition, Segment, Settled};
use crate::core::sync::LockExt;
use crate::core::{Acks, Batch, Delivery, Sampled, Value};
use crate::telemetry::{AckCounters, ComponentMetrics};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
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
    pub(super) id: u64,
    /// The messages' payloads, copied one after another: the source task
    /// decodes them (`take`) while the consumer thread polls the next batch.
    pub(super) payloads: Vec<u8>,
    /// Each message: its payload's range in `payloads` and, with
    /// `metadata_field`, its metadata.
    pub(super) messages: Vec<(std::ops::Range<usize>, Option<Value>)>,
    /// Messages refused on the thread (longer than `max_line_bytes`).
    pub(super) failed: Vec<Sampled>,
    pub(super) acks: Acks,
}

impl Fetched {
    /// The events (decoded here), the failures and their acknowledgements.
    pub fn take(
        mut self,
        codec: Codec,
        max_line_bytes: usize,
        metadata_field: Option<&str>,
    ) -> (Batch, Vec<Sampled>, Acks) {
        let mut events = Vec::with_capacity(self.messages.len());
        let mut failed = std::mem::take(&mut self.failed);
        for (range, meta) in std::mem::take(&mut self.messages) {
            let payload = &self.payloads[range];
            match super::decode::event_within(payload, codec, "message", max_line_bytes) {
                Ok(mut event) => {
                    if let (Some(field), Some(meta), Some(map)) =
                        (metadata_field, meta, event.as_object_mut())
                    {
                        map.insert(field.into(), meta);
                    }
                    events.push(event);
                }
                Err(f) => failed.push(f),
            }
        }
        (events, failed, std::mem::take(&mut self.acks))
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
pub(super) const REWIND_DELAY: Duration = Duration::from_secs(1);

/// The state the main loop and the rebalance callbacks share (both run
/// on the consumer thread, so the lock is never contended).
pub(super) struct Shared {
    pub(super) offsets: Offsets,
    /// Batches handed out: id -> (segments, messages).
    pub(super) batches: HashMap<u64, (Vec<Segment>, usize)>,
    /// A batch the full pipeline has not taken yet.
    pub(super) held: Option<Fetched>,
    /// Partitions to read again from an offset, at a time.
    pub(super) rewinds: HashMap<Partition, (i64, Instant)>,
    pub(super) lag: HashMap<Partition, prometheus::IntGauge>,
}

pub struct Context {
    pub(super) settings: Settings,
    pub(super) counters: AckCounters,
    pub(super) shared: Mutex<Shared>,
    pub(super) settled: Mutex<mpsc::Receiver<(u64, Delivery)>>,
    /// Whether the brokers were reported unreachable (warned once).
    pub(super) down: AtomicBool,
    /// Set by the source task when it stops: from then on nothing is read
    /// and a failed batch only stops the offset (shared with the task, so
    /// batches it fails while stopping never start a new epoch).
    pub(super) stopping: Arc<AtomicBool>,
    /// The last error `poll` returned (a repeated one is logged at debug).
    pub(super) last_poll_error: Mutex<String>,
    /// Counts rebalances: a batch being filled when one runs inside `poll`
    /// drops what it read of partitions whose epoch moved on.
    pub(super) rebalances: AtomicU64,
    /// Counts commit callbacks: the last commit on stop waits for one.
    pub(super) commits: AtomicU64,
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
            commits: AtomicU64::new(0),
        };
        (context, tx)
    }

    /// Applies the outcomes that arrived, waiting up to `wait` for the first.
    /// Returns false once every sender is gone.
    pub(super) fn settle(&self, wait: Duration) -> bool {
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
    pub(super) fn unhold(&self, release: Option<&[Partition]>) {
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

    /// Commits what moved, among `only` if given; false if nothing had.
    pub(super) fn commit(
        &self,
        consumer: &BaseConsumer<Self>,
        only: Option<&[Partition]>,
        mode: CommitMode,
    ) -> bool {
        let offsets = self.shared.lock_unpoisoned().offsets.to_commit(only);
        if offsets.is_empty() {
            return false;
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
        true
    }

    /// The last commit, on stop: sent asynchronously and awaited up to
    /// `wait`, because a synchronous commit waits for an unreachable
    /// coordinator for as long as it stays unreachable, past any shutdown
    /// deadline. What it could not commit is read again by the group.
    pub(super) fn commit_last(&self, consumer: &BaseConsumer<Self>, wait: Duration) {
        let before = self.commits.load(Ordering::Relaxed);
        if !self.commit(consumer, None, CommitMode::Async) {
            return;
        }
        let deadline = Instant::now() + wait;
        while self.commits.load(Ordering::Relaxed) == before {
            if Instant::now() >= deadline {
                tracing::warn!(component = %self.settings.name, "the last offset commit did not complete within {wait:?}; the group reads the uncommitted messages again");
                return;
            }
            // Serves the commit callback; a message is left unread.
            let _ = consumer.poll(Duration::from_millis(50));
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

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, list: &TopicPartitionList) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        let Err(e) = result else { return };
        // An asynchronous commit that failed (the coordinator gone) is sent
        // again with the next one; otherwise nothing would commit these
        // offsets until they moved, not even the last commit on stop.
        let mut shared = self.shared.lock_unpoisoned();
        for element in list.elements() {
            if let Offset::Offset(offset) = element.offset() {
                let partition = (Arc::from(element.topic()), element.partition());
                shared.offsets.commit_failed(&partition, offset);
            }
        }
        drop(shared);
        // Once per outage, as the client's own errors.
        if !self.down.load(Ordering::Relaxed) {
            tracing::warn!(component = %self.settings.name, "an offset commit failed: {e}; retrying with the next commit");
        } else {
            tracing::debug!(component = %self.settings.name, "an offset commit failed: {e}");
        }
    }
}

pub(super) fn partitions(list: &TopicPartitionList) -> Vec<Partition> {
    list.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}
