//! `nats` sink: publishes each event as one JetStream message on `subject`
//! and acknowledges a batch once JetStream acknowledged every message of
//! it. Messages go out back to back with up to `max_in_flight` of them
//! awaiting their JetStream acknowledgement (one window for the stage:
//! with `workers: N`, N batches' writes share it), so the rate is set by
//! the server's throughput, not by a round trip per message or per batch.
//! A failed publish or a missing acknowledgement fails the batch for the
//! stage controls (retry, breaker, timeout); a batch that finally fails
//! follows `on_error`. With `workers: 1` (the default) messages are stored
//! in the order of the events; with more, batches may interleave.
//!
//! Every message carries a `Nats-Msg-Id` made of a random id per encoded
//! batch and the event's index in it: a retried batch sends the same ids,
//! so JetStream drops the copies it already has (within the stream's
//! duplicate window, 2 minutes by default) — which also covers a server
//! restart that lost the acknowledgements of messages it had stored.
//!
//! With `events_per_message` above 1, consecutive events of a batch share a
//! message: NDJSON lines, at most `events_per_message` of them and at most
//! `max_message_bytes`, with a `Flowgate-Events: <count>` header that tells
//! the `nats` source to split it. JetStream's cost is per message (storing
//! it, its id, delivering it, its ack), so packing divides it. The packing
//! of an encoded batch is a function of its bytes, so a retry republishes
//! the same messages under the same ids (`<batch>-<first event>+<count>`).

use super::{OutputCodec, encode_lines};
use crate::components::sources::nats as nats_source;
use crate::components::{ComponentError, Encoded, Sink};
use crate::config::duration::ConfigDuration;
use crate::core::Batch;
use async_nats::jetstream::{self, context::PublishAckFuture, context::PublishError};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::future::IntoFuture;
use tokio::sync::OnceCell;

fn default_max_in_flight() -> usize {
    4096
}

fn default_events_per_message() -> usize {
    1
}

/// Under JetStream's default `max_payload` (1 MiB = 1048576) with room for
/// the headers.
fn default_max_message_bytes() -> usize {
    1_000_000
}

/// Room left under the server's `max_payload` for a message's headers
/// (`Nats-Msg-Id`, `Flowgate-Events` and the header line: under 100 bytes).
const HEADER_ROOM: usize = 512;

/// Publishes events to a NATS JetStream subject.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// Server URL(s), e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Subject each event is published to.
    pub subject: String,
    /// A stream to create with `subject` when it is missing (optional: without
    /// it, a stream covering `subject` must exist, or publishes fail).
    #[serde(default)]
    pub stream: Option<String>,
    /// `json` (default): the event as JSON; `text`: its `.message` field.
    #[serde(default)]
    pub codec: OutputCodec,
    /// Messages published and not yet acknowledged by JetStream, at most
    /// (default 4096; at least 1), over all the stage's workers. A full
    /// window waits for acknowledgements. Bounds the client's memory for
    /// outstanding publishes; a batch is acknowledged upstream only once
    /// every message of it is acknowledged.
    #[serde(default = "default_max_in_flight")]
    #[schemars(range(min = 1))]
    pub max_in_flight: usize,
    /// Events packed into one JetStream message, at most (default 1: one
    /// message per event, as a non-flowgate consumer expects). Above 1,
    /// consecutive events of a batch travel as NDJSON lines in one message
    /// with the header `Flowgate-Events: <count>`, which the `nats` source
    /// splits back into events (`codec: json` only; consumers must be a
    /// flowgate that knows the header). JetStream's work is per message, so
    /// this is what makes a stream carry several hundred thousand events/s;
    /// a consumer then redelivers, and dedups, whole messages.
    #[serde(default = "default_events_per_message")]
    #[schemars(range(min = 1))]
    pub events_per_message: usize,
    /// Payload of a packed message, in bytes, at most (default 1000000;
    /// at least 1): under JetStream's default `max_payload` of 1 MiB, and
    /// never above what the server announces (less room for headers). An
    /// event longer than this travels alone. Used with `events_per_message`
    /// above 1.
    #[serde(default = "default_max_message_bytes")]
    #[schemars(range(min = 1))]
    pub max_message_bytes: usize,
    /// The stream's duplicate window, set when this sink creates `stream`
    /// (absent: the server's default, 2 minutes). JetStream remembers every
    /// `Nats-Msg-Id` it stored for this long — memory in the server
    /// proportional to messages/s × window; retries within it are dropped
    /// as duplicates. Packing events divides the count of ids.
    #[serde(default)]
    pub duplicate_window: Option<ConfigDuration>,
}

impl NatsSinkConfig {
    pub fn check(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut problems = Vec::new();
        if self.subject.is_empty() || self.subject.contains(['*', '>', ' ']) {
            problems.push((
                vec!["subject"],
                format!(
                    "'{}' must be a subject to publish to (no wildcards or spaces)",
                    self.subject
                ),
            ));
        }
        if let Some(problem) = self
            .stream
            .as_deref()
            .and_then(|s| nats_source::name_problem("stream", s))
        {
            problems.push((vec!["stream"], problem));
        }
        if self.max_in_flight == 0 {
            problems.push((vec!["max_in_flight"], "must be at least 1".to_string()));
        }
        if self.events_per_message == 0 {
            problems.push((vec!["events_per_message"], "must be at least 1".to_string()));
        } else if self.events_per_message > 1 && self.codec == OutputCodec::Text {
            problems.push((
                vec!["events_per_message"],
                "packing several events per message needs codec json (a text message may hold newlines); set codec: json or events_per_message: 1".to_string(),
            ));
        }
        if self.max_message_bytes == 0 {
            problems.push((vec!["max_message_bytes"], "must be at least 1".to_string()));
        }
        if self.duplicate_window.is_some() && self.stream.is_none() {
            problems.push((
                vec!["duplicate_window"],
                "is set on the stream this sink creates: set `stream` too".to_string(),
            ));
        }
        problems
    }

    pub fn build(&self) -> NatsSink {
        NatsSink {
            subject: async_nats::Subject::from(self.subject.as_str()),
            config: self.clone(),
            js: OnceCell::new(),
        }
    }
}

pub struct NatsSink {
    config: NatsSinkConfig,
    /// Shared by every message (a clone is a reference count).
    subject: async_nats::Subject,
    /// Connected on the first write (building a pipeline does no I/O).
    js: OnceCell<jetstream::Context>,
}

impl NatsSink {
    async fn context(&self) -> Result<&jetstream::Context, ComponentError> {
        self.js
            .get_or_try_init(|| async {
                let client = nats_source::connect(&self.config.url, "nats sink").await?;
                // The window: publishing waits while `max_in_flight`
                // acknowledgements are outstanding, on every worker's write.
                // Places of a failed write's messages are freed when their
                // acknowledgement comes or after 5 s (the wait for one).
                let js = jetstream::context::ContextBuilder::new()
                    .ack_timeout(std::time::Duration::from_secs(5))
                    .max_ack_inflight(self.config.max_in_flight)
                    .backpressure_on_inflight(true)
                    .build(client);
                if let Some(stream) = &self.config.stream {
                    js.get_or_create_stream(jetstream::stream::Config {
                        name: stream.clone(),
                        subjects: vec![self.config.subject.clone()],
                        duplicate_window: self
                            .config
                            .duplicate_window
                            .map_or(std::time::Duration::ZERO, |d| d.0),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| transient(format!("creating stream '{stream}': {e}")))?;
                }
                Ok(js)
            })
            .await
    }

    fn not_acknowledged(&self, e: PublishError) -> ComponentError {
        transient(format!(
            "JetStream did not acknowledge a message on '{}': {e}",
            self.config.subject
        ))
    }
}

fn transient(message: String) -> ComponentError {
    ComponentError::Transient {
        message,
        error_type: "nats",
    }
}

#[async_trait::async_trait]
impl Sink for NatsSink {
    fn concurrent_writes(&self) -> bool {
        true
    }

    fn encode(&self, batch: Batch) -> Encoded {
        let mut encoded = encode_lines(batch, self.config.codec);
        encoded.batch_id = fastrand::u64(..);
        encoded
    }

    async fn write(&self, encoded: &Encoded) -> Result<(), ComponentError> {
        let js = self.context().await?;
        let body = bytes::Bytes::copy_from_slice(&encoded.bytes);
        let mut acks: FuturesUnordered<<PublishAckFuture as IntoFuture>::IntoFuture> =
            FuturesUnordered::new();
        let packing = self.config.events_per_message > 1;
        let max_bytes = self
            .config
            .max_message_bytes
            .min(js.client().max_payload().saturating_sub(HEADER_ROOM).max(1));
        let messages = Messages::new(
            &encoded.line_ends,
            self.config.events_per_message,
            max_bytes,
        );
        // Slices share the batch's buffer.
        for m in messages {
            let mut headers = async_nats::HeaderMap::new();
            let payload = if packing {
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    format!("{:016x}-{}+{}", encoded.batch_id, m.first, m.count).as_str(),
                );
                headers.insert(nats_source::EVENTS_HEADER, m.count.to_string().as_str());
                body.slice(m.bytes)
            } else {
                // One message per event, without its newline (a `text`
                // message may hold newlines of its own).
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    format!("{:016x}-{}", encoded.batch_id, m.first).as_str(),
                );
                body.slice(m.bytes.start..m.bytes.end - 1)
            };
            let publish = js.publish_with_headers(self.subject.clone(), headers, payload);
            let mut publish = std::pin::pin!(publish);
            // While the window is full, take this batch's acknowledgements
            // as they come: they free places (a write that held places
            // without polling them could wait for its own).
            let ack = loop {
                tokio::select! {
                    biased;
                    sent = &mut publish => break sent.map_err(|e| {
                        transient(format!("publishing to '{}': {e}", self.config.subject))
                    })?,
                    Some(done) = acks.next(), if !acks.is_empty() => {
                        done.map_err(|e| self.not_acknowledged(e))?;
                    }
                }
            };
            acks.push(ack.into_future());
        }
        while let Some(done) = acks.next().await {
            done.map_err(|e| self.not_acknowledged(e))?;
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), ComponentError> {
        if let Some(js) = self.js.get() {
            // Every message was acknowledged already; this only bounds the wait.
            match tokio::time::timeout(std::time::Duration::from_secs(5), js.client().flush()).await
            {
                Ok(r) => r.map_err(|e| transient(format!("flushing to NATS: {e}")))?,
                Err(_) => return Err(transient("flushing to NATS timed out".into())),
            }
        }
        Ok(())
    }
}

/// One message of a batch: events `first..first + count`, whose lines
/// (each with its newline) are `bytes` of the encoded batch.
#[derive(Debug, PartialEq)]
struct Message {
    first: usize,
    count: usize,
    bytes: std::ops::Range<usize>,
}

/// Cuts an encoded batch into messages of at most `per` events and
/// `max_bytes` bytes (an event longer than that alone), in order.
struct Messages<'a> {
    line_ends: &'a [usize],
    per: usize,
    max_bytes: usize,
    next: usize,
    start: usize,
}

impl<'a> Messages<'a> {
    fn new(line_ends: &'a [usize], per: usize, max_bytes: usize) -> Self {
        Self {
            line_ends,
            per: per.max(1),
            max_bytes,
            next: 0,
            start: 0,
        }
    }
}

impl Iterator for Messages<'_> {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        let first = self.next;
        let mut end = *self.line_ends.get(first)? + 1;
        let mut count = 1;
        while count < self.per
            && let Some(&next_end) = self.line_ends.get(first + count)
            && next_end + 1 - self.start <= self.max_bytes
        {
            end = next_end + 1;
            count += 1;
        }
        let bytes = self.start..end;
        self.start = end;
        self.next = first + count;
        Some(Message {
            first,
            count,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(line_ends: &[usize], per: usize, max_bytes: usize) -> Vec<(usize, usize, usize, usize)> {
        Messages::new(line_ends, per, max_bytes)
            .map(|m| (m.first, m.count, m.bytes.start, m.bytes.end))
            .collect()
    }

    #[test]
    fn a_batch_is_cut_into_messages_by_count_then_bytes() {
        // Lines of 10 bytes each (9 + newline).
        let ends: Vec<usize> = (0..7).map(|i| i * 10 + 9).collect();
        assert_eq!(
            cut(&ends, 1, 1000),
            (0..7)
                .map(|i| (i, 1, i * 10, i * 10 + 10))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            cut(&ends, 3, 1000),
            vec![(0, 3, 0, 30), (3, 3, 30, 60), (6, 1, 60, 70)]
        );
        // 25 bytes hold two whole lines.
        assert_eq!(
            cut(&ends, 100, 25),
            vec![
                (0, 2, 0, 20),
                (2, 2, 20, 40),
                (4, 2, 40, 60),
                (6, 1, 60, 70)
            ]
        );
        assert_eq!(cut(&[], 10, 100), vec![]);
    }

    #[test]
    fn an_event_longer_than_max_message_bytes_travels_alone() {
        // Lines of 5, 50 and 5 bytes.
        assert_eq!(
            cut(&[4, 54, 59], 10, 20),
            vec![(0, 1, 0, 5), (1, 1, 5, 55), (2, 1, 55, 60)]
        );
    }

    #[test]
    fn packing_text_is_refused_and_a_duplicate_window_needs_a_stream() {
        let config: NatsSinkConfig = serde_yaml::from_str(
            "{url: 'nats://x', subject: s, codec: text, events_per_message: 10, duplicate_window: 10s}",
        )
        .unwrap();
        let fields: Vec<_> = config.check().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            vec![vec!["events_per_message"], vec!["duplicate_window"]]
        );
    }
}
