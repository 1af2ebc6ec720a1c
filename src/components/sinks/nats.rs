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

use super::{OutputCodec, encode_lines};
use crate::components::sources::nats as nats_source;
use crate::components::{ComponentError, Encoded, Sink};
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
        let mut start = 0;
        // One message per event (a `text` message may hold newlines);
        // slices share the batch's buffer.
        for (i, &end) in encoded.line_ends.iter().enumerate() {
            let payload = body.slice(start..end);
            start = end + 1;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("{:016x}-{i}", encoded.batch_id).as_str(),
            );
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
