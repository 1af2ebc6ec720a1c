//! The kafka sink's producer: its client context (an outage is one
//! warning), the delivery tally a batch's messages share (counted down by
//! the client's delivery reports on its polling thread: no future or
//! channel per message), waiting for a batch's reports, and replacing a
//! producer after a failure.

use crate::components::ComponentError;
use crate::core::sync::LockExt;
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

pub(super) type Producer = ThreadedProducer<Reporter>;
pub(super) type Slot = Arc<Mutex<Option<Arc<Producer>>>>;

/// What a submitted batch's confirmation needs of its sink once the
/// submitting call has returned.
pub(super) struct Handle {
    pub(super) producer: Slot,
    pub(super) down: Arc<AtomicBool>,
}

/// The delivery reports of one write's messages.
#[derive(Default)]
pub(super) struct Tally {
    /// Messages not yet reported.
    pub(super) left: AtomicUsize,
    /// The first failure reported (taken once, by the write).
    pub(super) failed: Mutex<Option<KafkaError>>,
    /// Notified once, when `left` reaches 0.
    pub(super) done: tokio::sync::Notify,
}

/// The producer's client context. librdkafka reports every failed
/// connection attempt while it retries in the background: an outage is one
/// warning (until a message is delivered again), the client's own log is
/// debug. Its callbacks run on the client's threads, so they carry the
/// span of the write that made the producer.
pub(super) struct Reporter {
    pub(super) span: tracing::Span,
    pub(super) down: Arc<AtomicBool>,
}

impl ClientContext for Reporter {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.span
            .in_scope(|| tracing::debug!("librdkafka {level:?} {fac}: {message}"));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.span.in_scope(|| {
            if !self.down.swap(true, Ordering::Relaxed) {
                tracing::warn!("Kafka: {error}: {reason}; retrying in the background");
            } else {
                tracing::debug!("Kafka: {error}: {reason}");
            }
        });
    }
}

impl ProducerContext for Reporter {
    type DeliveryOpaque = Arc<Tally>;

    fn delivery(&self, result: &DeliveryResult<'_>, tally: Arc<Tally>) {
        if let Err((e, _)) = result {
            tally
                .failed
                .lock_unpoisoned()
                .get_or_insert_with(|| e.clone());
        }
        if tally.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Stores a permit when the write is not waiting yet.
            tally.done.notify_one();
        }
    }
}

pub(super) fn transient(message: String) -> ComponentError {
    ComponentError::Transient {
        message,
        error_type: "kafka",
    }
}

/// After a failed write the next one gets a new producer: an idempotent
/// producer whose id the broker no longer knows (a broker that lost its
/// state, an expired producer id) or that hit a fatal error fails every
/// message from then on, and only a new one (a new id) gets through.
pub(super) fn discard(slot: &Slot, failed: &Arc<Producer>) {
    let old = {
        let mut slot = slot.lock_unpoisoned();
        match &*slot {
            Some(p) if Arc::ptr_eq(p, failed) => slot.take(),
            _ => None,
        }
    };
    if let Some(old) = old {
        tracing::debug!("a new Kafka producer for the next write");
        // Dropping purges its queue (failing what it held, so the batches
        // awaiting it end) and waits for its thread.
        tokio::task::spawn_blocking(move || drop(old));
    }
}

/// The first failure a tally's reports carried, taken.
pub(super) fn failure(tally: &Tally) -> Option<ComponentError> {
    let e = tally.failed.lock_unpoisoned().take()?;
    Some(transient(format!("Kafka did not take a message: {e}")))
}

impl Handle {
    /// Done when every message counted by `tally` is reported delivered;
    /// the first failed report fails it. A producer dropped with reports
    /// outstanding (discarded after another batch failed: its drop purges
    /// and reports, but waits only so long) fails it too.
    pub(super) async fn delivered(
        &self,
        tally: &Tally,
        producer: &Weak<Producer>,
    ) -> Result<(), ComponentError> {
        while tally.left.load(Ordering::Acquire) > 0 {
            let reported = tokio::time::timeout(Duration::from_secs(1), tally.done.notified());
            if reported.await.is_err()
                && producer.strong_count() == 0
                && tally.left.load(Ordering::Acquire) > 0
            {
                return Err(failure(tally).unwrap_or_else(|| {
                    transient(
                        "the Kafka producer was replaced before every message was reported".into(),
                    )
                }));
            }
        }
        if let Some(e) = failure(tally) {
            return Err(e);
        }
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("Kafka is reachable again");
        }
        Ok(())
    }
}
