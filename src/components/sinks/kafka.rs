//! `kafka` sink: produces one message per event to a topic made from a
//! template (`{{ jq }}` parts, as in the http transform's url), with an
//! optional key from a jq expression and fixed headers. The producer is
//! idempotent and waits for every in-sync replica (`acks=all`); a batch is
//! written once every one of its messages is acknowledged: its messages
//! share one delivery tally, counted down by the client's delivery
//! reports on its polling thread (no future or channel per message).
//! Batches are submitted in input order, up to `max_in_flight_batches` of
//! them awaiting their reports at once (the stage's ordered window, see
//! `stage::sink::window`), so the producer is not idle between batches and
//! a key's messages keep their order. A failed delivery fails the batch
//! retryably (retry, breaker, timeout): it and the batches after it are
//! written again in order, one at a time, by a new producer (a new
//! producer id: the broker may have forgotten the old one); what was
//! delivered before the failure may be stored again. A broker outage is
//! one warning.
//!
//! Topic and key are evaluated in `encode`, on the stage's workers, so an
//! event whose program fails is routed by `on_error` alone. The encoded
//! batch keeps three ends per event in `line_ends`: its topic's, its key's
//! and its payload's (an empty key is no key).

use super::kafka_producer::{Handle, Producer, Reporter, Slot, Tally, discard, failure, transient};
use super::kafka_template::{Piece, compile, first_output, push_text, render, template};
use super::{OutputCodec, encode_lines};
use crate::components::{ComponentError, Encoded, Pending, Sink};
use crate::core::sync::LockExt;
use crate::core::{Batch, Event, Failed};
use crate::expr::Program;
use indexmap::IndexMap;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Compression of produced message batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KafkaCompression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl KafkaCompression {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

/// Produces events to Kafka.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, e.g. `['127.0.0.1:9092']`.
    pub brokers: Vec<String>,
    /// Topic template: `{{ jq }}` parts are replaced per event (strings as is, other values as
    /// JSON), e.g. `orders-{{ .region }}`.
    pub topic: String,
    /// jq expression whose first output is the message key (strings as is, other values as
    /// JSON; `null` or empty: no key, so the producer spreads messages over partitions).
    #[serde(default)]
    pub key: Option<String>,
    /// Headers every message carries, e.g. `{origin: flowgate}`.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// `none` (default), `gzip`, `snappy`, `lz4` or `zstd`.
    #[serde(default)]
    pub compression: KafkaCompression,
    /// `json` (default): the event as JSON; `text`: its `.message` field.
    #[serde(default)]
    pub codec: OutputCodec,
    /// Batches submitted to the producer and awaiting their delivery reports at once (default
    /// 8): each batch's messages are enqueued in input order as soon as the previous batch's are,
    /// so a key's messages stay in order across batches. After a failed batch, it and the ones
    /// after it are written again one at a time, in order (what had been delivered may be
    /// stored twice). At most this many batches (of the input's batch size) are held.
    #[serde(default = "default_max_in_flight_batches")]
    pub max_in_flight_batches: usize,
    /// librdkafka producer properties passed through, e.g. `{linger.ms: '20'}`. Defaults:
    /// `message.timeout.ms` 30000 (a message not delivered by then fails its batch) and
    /// `linger.ms` 0 (a write waits for all its messages, so lingering would only delay it).
    /// The producer queues at most `queue.buffering.max.messages` (librdkafka: 100000).
    #[serde(default)]
    pub options: crate::components::sources::kafka::ClientOptions,
}

fn default_max_in_flight_batches() -> usize {
    8
}

const MANAGED: &[(&str, &str)] = &[
    ("bootstrap.servers", "brokers"),
    ("acks", "nothing: every replica acknowledges"),
    (
        "request.required.acks",
        "nothing: every replica acknowledges",
    ),
    ("enable.idempotence", "nothing: the producer is idempotent"),
    ("compression.type", "compression"),
    ("compression.codec", "compression"),
];

impl KafkaSinkConfig {
    pub fn check(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut problems = Vec::new();
        if self.brokers.is_empty() {
            problems.push((vec!["brokers"], "needs at least one broker".into()));
        }
        if self.topic.is_empty() {
            problems.push((vec!["topic"], "must not be empty".into()));
        }
        if let Err(e) = template(&self.topic) {
            problems.push((vec!["topic"], e));
        }
        if self.max_in_flight_batches == 0 {
            problems.push((
                vec!["max_in_flight_batches"],
                "must be at least 1 (1: one batch at a time)".into(),
            ));
        }
        if let Some(Err(e)) = self.key.as_deref().map(compile) {
            problems.push((vec!["key"], e));
        }
        problems.extend(super::super::sources::kafka::managed_option_problems(
            &self.options,
            MANAGED,
        ));
        problems
    }

    pub fn build(&self) -> KafkaSink {
        // Validation compiled both before anything is built.
        let topic = template(&self.topic).unwrap_or_else(|_| vec![Piece::Text(self.topic.clone())]);
        let key = self.key.as_deref().and_then(|k| compile(k).ok());
        let headers = (!self.headers.is_empty()).then(|| {
            self.headers
                .iter()
                .fold(OwnedHeaders::new(), |h, (name, value)| {
                    h.insert(Header {
                        key: name,
                        value: Some(value),
                    })
                })
        });
        KafkaSink {
            config: self.clone(),
            topic,
            key,
            headers,
            producer: Arc::default(),
            down: Arc::default(),
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "0");
        crate::components::sources::kafka::set_options(&mut config, &self.options);
        // Last: `check` refuses these as options.
        config
            .set("bootstrap.servers", self.brokers.join(","))
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.codec", self.compression.as_str());
        config
    }
}

pub struct KafkaSink {
    config: KafkaSinkConfig,
    topic: Vec<Piece>,
    key: Option<Program>,
    headers: Option<OwnedHeaders>,
    /// Made on the first write (building a pipeline does no I/O); shared
    /// by concurrent writes, replaced after a failed one (`discard`).
    producer: Slot,
    /// Whether the brokers were reported unreachable (shared with `Reporter`).
    down: Arc<AtomicBool>,
}

impl KafkaSink {
    /// Appends the topic and key of `event` to `out`, with their ends.
    fn address(&self, event: &Event, out: &mut Encoded) -> Result<(), String> {
        render(&self.topic, event, &mut out.bytes)?;
        out.line_ends.push(out.bytes.len());
        if let Some(p) = &self.key {
            push_text(&mut out.bytes, &first_output(p, event)?);
        }
        out.line_ends.push(out.bytes.len());
        Ok(())
    }

    /// The producer, made on the first write and again after a failed one.
    fn producer(&self) -> Result<Arc<Producer>, ComponentError> {
        let mut slot = self.producer.lock_unpoisoned();
        if let Some(p) = &*slot {
            return Ok(p.clone());
        }
        let reporter = Reporter {
            span: tracing::Span::current(),
            down: self.down.clone(),
        };
        let producer: Producer = self
            .config
            .client_config()
            .create_with_context(reporter)
            .map_err(|e| ComponentError::Permanent {
                message: format!("configuring the Kafka producer: {e}"),
                error_type: "kafka",
            })?;
        let producer = Arc::new(producer);
        *slot = Some(producer.clone());
        Ok(producer)
    }

    fn handle(&self) -> Handle {
        Handle {
            producer: self.producer.clone(),
            down: self.down.clone(),
        }
    }
}

#[async_trait::async_trait]
impl Sink for KafkaSink {
    fn concurrent_writes(&self) -> bool {
        true
    }

    fn window(&self) -> Option<usize> {
        Some(self.config.max_in_flight_batches)
    }

    async fn submit(&self, encoded: &Encoded) -> Result<Pending, ComponentError> {
        let producer = self.producer()?;
        match self.enqueue(&producer, encoded).await {
            Ok(tally) => {
                let (sink, producer) = (self.handle(), Arc::downgrade(&producer));
                Ok(Box::pin(async move {
                    let delivered = sink.delivered(&tally, &producer).await;
                    if delivered.is_err()
                        && let Some(p) = producer.upgrade()
                    {
                        discard(&sink.producer, &p);
                    }
                    delivered
                }))
            }
            Err(e) => {
                discard(&self.producer, &producer);
                Err(e)
            }
        }
    }

    fn encode(&self, batch: Batch) -> Encoded {
        // Payloads as lines first, then each event's record rebuilt as
        // topic, key, payload in a second buffer.
        let lines = encode_lines(batch, self.config.codec);
        let mut out = Encoded {
            bytes: Vec::with_capacity(lines.bytes.len() + lines.events.len() * 32),
            events: Vec::with_capacity(lines.events.len()),
            line_ends: Vec::with_capacity(lines.events.len() * 3),
            batch_id: 0,
            failed: lines.failed,
        };
        let mut start = 0;
        for (event, end) in lines.events.into_iter().zip(lines.line_ends) {
            let payload = &lines.bytes[start..end];
            start = end + 1;
            let (bytes, ends) = (out.bytes.len(), out.line_ends.len());
            match self.address(&event, &mut out) {
                Ok(()) => {
                    out.bytes.extend_from_slice(payload);
                    out.line_ends.push(out.bytes.len());
                    out.events.push(event);
                }
                Err(message) => {
                    out.bytes.truncate(bytes);
                    out.line_ends.truncate(ends);
                    out.failed.push(Failed::new(event, message, "program"));
                }
            }
        }
        out
    }

    async fn write(&self, encoded: &Encoded) -> Result<(), ComponentError> {
        let producer = self.producer()?;
        let written = match self.enqueue(&producer, encoded).await {
            Ok(tally) => {
                self.handle()
                    .delivered(&tally, &Arc::downgrade(&producer))
                    .await
            }
            Err(e) => Err(e),
        };
        if written.is_err() {
            discard(&self.producer, &producer);
        }
        written
    }

    async fn flush(&self) -> Result<(), ComponentError> {
        // Every message of every batch was acknowledged before its write returned.
        Ok(())
    }
}

impl KafkaSink {
    /// Enqueues every message of `encoded` in the producer, in order; the
    /// returned tally counts their delivery reports.
    async fn enqueue(
        &self,
        producer: &Producer,
        encoded: &Encoded,
    ) -> Result<Arc<Tally>, ComponentError> {
        let tally = Arc::new(Tally::default());
        let messages = encoded.line_ends.len() / 3;
        tally.left.store(messages, Ordering::Relaxed);
        let mut start = 0;
        for ends in encoded.line_ends.chunks_exact(3) {
            let b = &encoded.bytes;
            let topic = std::str::from_utf8(&b[start..ends[0]])
                .map_err(|_| transient("a topic is not UTF-8".into()))?;
            let key = &b[ends[0]..ends[1]];
            let mut record =
                BaseRecord::<[u8], [u8], Arc<Tally>>::with_opaque_to(topic, tally.clone())
                    .payload(&b[ends[1]..ends[2]]);
            start = ends[2];
            if !key.is_empty() {
                record = record.key(key);
            }
            if let Some(h) = &self.headers {
                record = record.headers(h.clone());
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    // The producer's queue (`queue.buffering.max.messages`)
                    // is full: wait for deliveries rather than fail the batch,
                    // unless one of this write's messages failed already.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        if let Some(e) = failure(&tally) {
                            return Err(e);
                        }
                        record = r;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => {
                        return Err(transient(format!("producing to '{topic}': {e}")));
                    }
                }
            }
        }
        Ok(tally)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_and_key_are_evaluated_per_event_and_failures_routed() {
        let config: KafkaSinkConfig =
            serde_yaml::from_str("{brokers: [b:9092], topic: 'orders-{{ .region }}', key: '.id'}")
                .unwrap();
        assert!(config.check().is_empty());
        let sink = config.build();
        let encoded = sink.encode(vec![
            crate::ev!({"region": "eu", "id": 7}),
            crate::ev!({"region": "us"}),
            crate::ev!({"region": "eu", "id": "a"}),
        ]);
        assert_eq!(encoded.events.len(), 3);
        let parts: Vec<&[u8]> = std::iter::once(0)
            .chain(encoded.line_ends.iter().copied())
            .collect::<Vec<_>>()
            .windows(2)
            .map(|w| &encoded.bytes[w[0]..w[1]])
            .collect();
        let want: Vec<&[u8]> = vec![
            b"orders-eu",
            b"7",
            br#"{"region":"eu","id":7}"#,
            b"orders-us",
            b"",
            br#"{"region":"us"}"#,
            b"orders-eu",
            b"a",
            br#"{"region":"eu","id":"a"}"#,
        ];
        assert_eq!(parts, want);
    }

    #[test]
    fn bad_templates_and_managed_options_are_reported() {
        let config: KafkaSinkConfig = serde_yaml::from_str(
            "{brokers: [], topic: 'x-{{ .a', key: '.[', options: {acks: '1'}, max_in_flight_batches: 0}",
        )
        .unwrap();
        let keys: Vec<_> = config.check().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            vec![
                vec!["brokers"],
                vec!["topic"],
                vec!["max_in_flight_batches"],
                vec!["key"],
                vec!["options"]
            ]
        );
    }
}
