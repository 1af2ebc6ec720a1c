//! `nats`: a JetStream durable pull consumer. Every flowgate process with
//! the same `durable` shares the stream's messages. A message is
//! acknowledged only once every sink it reached has written it (end-to-end
//! acknowledgements); if a sink could not, it is nak'ed and JetStream
//! redelivers it. Messages of a process that dies unacknowledged are
//! redelivered to the others after `ack_wait`. At-least-once.
//!
//! A message with the header `Flowgate-Events` (what a `nats` sink with
//! `events_per_message` above 1 publishes) holds several events as NDJSON
//! lines; it is split into them, and acknowledged once all of them are —
//! the events of a fetch share one acknowledgement, so a message is never
//! acknowledged for part of its events.

use super::Codec;
use super::decode::{check_max_line_bytes, default_max_line_bytes};
use super::nats_acks::Acker;
use crate::components::{ComponentError, Source, SourceContext};
use crate::config::duration::ConfigDuration;
use async_nats::Client;
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The header of a message packing several events as NDJSON lines: their
/// count.
pub const EVENTS_HEADER: &str = "Flowgate-Events";

fn default_batch() -> usize {
    500
}

fn default_ack_wait() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}

/// Consumes a NATS JetStream stream with a durable pull consumer.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceConfig {
    /// Server URL(s), e.g. `nats://127.0.0.1:4222` (comma-separated for a cluster).
    pub url: String,
    /// The JetStream stream; created with `subject` when missing.
    pub stream: String,
    /// Subject the consumer reads (and the stream is created with).
    pub subject: String,
    /// Durable consumer name: every process with the same name shares the work.
    pub durable: String,
    /// `json` (default): each message is a JSON object; `text`: it becomes `{"message": payload}`.
    #[serde(default)]
    pub codec: Codec,
    /// Messages fetched per pull request (a message packing several events
    /// brings all of them).
    #[serde(default = "default_batch")]
    #[schemars(range(min = 1))]
    pub batch: usize,
    /// Messages delivered and not yet acknowledged, at most (set on the
    /// consumer when it is created). Default: what the buffers downstream of
    /// this source hold (at least `batch`), so the pipeline is never handed
    /// more than it can queue. Bounds what a crash leaves to be redelivered.
    /// Counts messages: with packed messages, the events outstanding are
    /// this times the events per message.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_ack_pending: Option<i64>,
    /// How long JetStream waits for an acknowledgement before redelivering
    /// (set on the consumer when it is created).
    #[serde(default = "default_ack_wait")]
    pub ack_wait: ConfigDuration,
    /// Deliveries of a message at most (set on the consumer when it is
    /// created); after that JetStream stops redelivering it — for messages a
    /// sink will never take. Unlimited when absent.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_deliver: Option<i64>,
    /// Longest message, in bytes (default 1 MiB = 1048576; at least 1): a
    /// message is one line — in a message packing several events, each of
    /// its lines. A longer one is a `decode` error of this source, handled
    /// by its `on_error` (a routed event carries its first 1 KiB in
    /// `.error.sample`), and is not decoded.
    #[serde(default = "default_max_line_bytes")]
    #[schemars(range(min = 1))]
    pub max_line_bytes: usize,
}

impl NatsSourceConfig {
    pub fn check(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut problems = check_max_line_bytes(self.max_line_bytes);
        if let Some(problem) = name_problem("stream", &self.stream) {
            problems.push((vec!["stream"], problem));
        }
        if let Some(problem) = name_problem("durable", &self.durable) {
            problems.push((vec!["durable"], problem));
        }
        if self.max_deliver.is_some_and(|n| n < 1) {
            problems.push((vec!["max_deliver"], "must be at least 1".to_string()));
        }
        if self.subject.is_empty() {
            problems.push((vec!["subject"], "must not be empty".to_string()));
        }
        if let Some(max) = self.max_ack_pending
            && (max < 1 || self.batch as i64 > max)
        {
            problems.push((
                vec!["max_ack_pending"],
                format!(
                    "max_ack_pending {max} must be at least batch ({})",
                    self.batch
                ),
            ));
        }
        problems
    }

    pub fn build(&self) -> NatsSource {
        NatsSource {
            config: self.clone(),
        }
    }
}

/// What is wrong with a JetStream stream or consumer name (`kind` is
/// "stream" or "durable"), if anything: JetStream refuses empty names and
/// names with '.', ' ', '*' or '>', and validation should say so first.
pub fn name_problem(kind: &str, name: &str) -> Option<String> {
    (name.is_empty() || name.contains(['.', ' ', '*', '>']))
        .then(|| format!("{kind} name '{name}' must be non-empty, without '.', ' ', '*' or '>'"))
}

/// Connects, retrying in the background: a daemon starts (and keeps
/// running) while NATS is down, and catches up when it is back.
pub async fn connect(url: &str, component: &str) -> Result<Client, ComponentError> {
    // The client reports every failed reconnect attempt; say once that the
    // server is unreachable and once that it is back.
    let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (name, address) = (component.to_string(), url.to_string());
    async_nats::ConnectOptions::new()
        .name(format!("flowgate {component}"))
        .event_callback(move |event| {
            let (down, name, address) = (down.clone(), name.clone(), address.clone());
            async move {
                use std::sync::atomic::Ordering::Relaxed;
                match event {
                    async_nats::Event::Connected => {
                        if down.swap(false, Relaxed) {
                            tracing::info!(component = %name, "reconnected to NATS at {address}");
                        }
                    }
                    async_nats::Event::Disconnected | async_nats::Event::ClientError(_) => {
                        if !down.swap(true, Relaxed) {
                            tracing::warn!(component = %name, "NATS at {address} is unreachable ({event}); retrying in the background");
                        }
                    }
                    other => tracing::debug!(component = %name, "NATS: {other}"),
                }
            }
        })
        .retry_on_initial_connect()
        .connect(url)
        .await
        .map_err(|e| ComponentError::Other(format!("connecting to NATS at {url}: {e}")))
}

pub struct NatsSource {
    config: NatsSourceConfig,
}

impl NatsSource {
    /// The consumer's `max_ack_pending`: as configured, or what the
    /// pipeline's buffers downstream hold.
    fn max_ack_pending(&self, downstream_capacity: usize) -> i64 {
        self.config
            .max_ack_pending
            .unwrap_or_else(|| downstream_capacity.max(self.config.batch) as i64)
    }

    async fn consumer(
        &self,
        js: &jetstream::Context,
        max_ack_pending: i64,
    ) -> Result<consumer::PullConsumer, String> {
        let c = &self.config;
        let stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: c.stream.clone(),
                subjects: vec![c.subject.clone()],
                ..Default::default()
            })
            .await
            .map_err(|e| format!("stream '{}': {e}", c.stream))?;
        stream
            .get_or_create_consumer(
                &c.durable,
                consumer::pull::Config {
                    durable_name: Some(c.durable.clone()),
                    filter_subject: c.subject.clone(),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: c.ack_wait.0,
                    max_ack_pending,
                    max_deliver: c.max_deliver.unwrap_or(-1),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("consumer '{}': {e}", c.durable))
    }
}

#[async_trait::async_trait]
impl Source for NatsSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), ComponentError> {
        let c = &self.config;
        let client = tokio::select! {
            client = connect(&c.url, &ctx.name) => client?,
            _ = ctx.shutdown.cancelled() => return Ok(()),
        };
        let js = jetstream::new(client.clone());
        let mut acker = Acker::start(client, ctx.metrics.acknowledged(), c.ack_wait.0);
        let max_ack_pending = self.max_ack_pending(ctx.downstream_capacity);
        'session: while !ctx.shutdown.is_cancelled() {
            let subscribe = async {
                let consumer = self.consumer(&js, max_ack_pending).await?;
                consumer
                    .stream()
                    .max_messages_per_batch(c.batch)
                    .messages()
                    .await
                    .map_err(|e| e.to_string())
            };
            // Requests wait for a server that may be down: shutdown must not.
            let messages = tokio::select! {
                m = subscribe => m,
                _ = ctx.shutdown.cancelled() => break,
            };
            let messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(component = %ctx.name, "NATS: {e}; retrying in 1s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = ctx.shutdown.cancelled() => break,
                    }
                }
            };
            tracing::info!(component = %ctx.name, "consuming stream '{}' as '{}'", c.stream, c.durable);
            // Whatever has arrived, up to `batch` messages, travels as one batch.
            let mut chunks = std::pin::pin!(messages.ready_chunks(c.batch));
            loop {
                let chunk = tokio::select! {
                    biased;
                    _ = ctx.shutdown.cancelled() => {
                        // Messages the client holds but we have not taken go
                        // back now, not after `ack_wait`: the other members
                        // (or our restart) get them at once.
                        // Messages still in transit from a pull are caught
                        // by waiting until none arrives for a moment.
                        let mut held = Vec::new();
                        let give_up = tokio::time::Instant::now() + Duration::from_secs(2);
                        while let Ok(Some(chunk)) = tokio::time::timeout_at(
                            give_up.min(tokio::time::Instant::now() + Duration::from_millis(150)),
                            chunks.next(),
                        )
                        .await
                        {
                            held.extend(chunk.into_iter().flatten().filter_map(|m| m.message.reply.clone()));
                        }
                        if !held.is_empty() {
                            tracing::debug!(component = %ctx.name, "returning {} fetched messages", held.len());
                            acker.hand_back(held);
                        }
                        break 'session;
                    }
                    chunk = chunks.next() => chunk,
                };
                let Some(chunk) = chunk else {
                    continue 'session;
                };
                let mut events = Vec::with_capacity(chunk.len());
                let mut failed = Vec::new();
                let mut replies = Vec::with_capacity(chunk.len());
                for m in chunk {
                    match m {
                        Ok(m) => {
                            if let Some(reply) = m.message.reply.clone() {
                                replies.push(reply);
                            }
                            decode_message(&m.message, c, &mut events, &mut failed);
                        }
                        Err(e) => tracing::warn!(component = %ctx.name, "NATS: {e}"),
                    }
                }
                if replies.is_empty() && events.is_empty() {
                    continue;
                }
                ctx.metrics
                    .events_in
                    .inc_by((events.len() + failed.len()) as u64);
                let acks = acker.acks_for(replies, events.len() + failed.len());
                ctx.errors.handle_sampled(failed, &acks).await;
                ctx.emit_acked(events, acks).await;
            }
        }
        // What is in the pipeline drains and is acknowledged before we leave.
        ctx.output.close();
        acker.finish().await;
        Ok(())
    }
}

/// Adds a message's events (or failures) to `events` (`failed`): the
/// message as one event, or, with the `Flowgate-Events` header, each of its
/// non-empty lines (a trailing `\r` removed), every one within
/// `max_line_bytes`.
fn decode_message(
    message: &async_nats::Message,
    c: &NatsSourceConfig,
    events: &mut Vec<crate::core::Event>,
    failed: &mut Vec<crate::core::Sampled>,
) {
    let payload = &message.payload[..];
    let mut push = |bytes: &[u8], what| match super::decode::event_within(
        bytes,
        c.codec,
        what,
        c.max_line_bytes,
    ) {
        Ok(e) => events.push(e),
        Err(f) => failed.push(f),
    };
    let packed = message
        .headers
        .as_ref()
        .is_some_and(|h| h.get(EVENTS_HEADER).is_some());
    if !packed {
        return push(payload, "message");
    }
    for line in payload.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.is_empty() {
            push(line, "line");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &str, packed: bool) -> async_nats::Message {
        let mut headers = async_nats::HeaderMap::new();
        if packed {
            headers.insert(EVENTS_HEADER, "3");
        }
        async_nats::Message {
            subject: "s".into(),
            reply: None,
            payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
            headers: packed.then_some(headers),
            status: None,
            description: None,
            length: payload.len(),
        }
    }

    fn config(max_line_bytes: usize) -> NatsSourceConfig {
        serde_yaml::from_str(&format!(
            "{{url: 'nats://x', stream: S, subject: s, durable: d, max_line_bytes: {max_line_bytes}}}"
        ))
        .unwrap()
    }

    #[test]
    fn a_packed_message_is_split_into_its_lines_each_within_the_limit() {
        let (mut events, mut failed) = (Vec::new(), Vec::new());
        let body = "{\"i\":1}\n{\"i\":2}\r\n\n{\"long\":\"xxxxxxxxxx\"}\nnot json\n";
        decode_message(&message(body, true), &config(16), &mut events, &mut failed);
        assert_eq!(events, vec![crate::ev!({"i": 1}), crate::ev!({"i": 2})]);
        let why: Vec<_> = failed.iter().map(|f| f.failed.message.clone()).collect();
        assert_eq!(
            why,
            vec![
                "line is 21 bytes, over max_line_bytes (16)".to_string(),
                "line is not valid JSON: expected ident at line 1 column 2".to_string(),
            ]
        );
    }

    #[test]
    fn a_message_without_the_header_is_one_event_even_over_lines() {
        let (mut events, mut failed) = (Vec::new(), Vec::new());
        decode_message(
            &message("{\"i\":\n 1}", false),
            &config(100),
            &mut events,
            &mut failed,
        );
        assert_eq!(events, vec![crate::ev!({"i": 1})]);
        assert!(failed.is_empty());
    }

    #[test]
    fn jetstream_names_without_separators_or_wildcards_pass() {
        assert_eq!(name_problem("stream", "ORDERS_1"), None);
        for bad in ["", "a.b", "a b", "a*", "a>"] {
            assert_eq!(
                name_problem("durable", bad),
                Some(format!(
                    "durable name '{bad}' must be non-empty, without '.', ' ', '*' or '>'"
                ))
            );
        }
    }
}
