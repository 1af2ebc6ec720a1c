//! `nats` sink: publishes each event as one JetStream message on `subject`
//! and waits for JetStream's acknowledgement of every message of the batch
//! (published back to back, then awaited together). A failed publish or a
//! missing acknowledgement fails the batch for the stage controls (retry,
//! breaker, timeout); a batch that finally fails follows `on_error`.
//!
//! Every message carries a `Nats-Msg-Id` made of a random id per encoded
//! batch and the event's index in it: a retried batch sends the same ids,
//! so JetStream drops the copies it already has (within the stream's
//! duplicate window, 2 minutes by default).

use super::{OutputCodec, encode_lines};
use crate::components::sources::nats as nats_source;
use crate::components::{ComponentError, Encoded, Sink};
use crate::core::Batch;
use async_nats::jetstream;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

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
        problems
    }

    pub fn build(&self) -> NatsSink {
        NatsSink {
            config: self.clone(),
            js: OnceCell::new(),
        }
    }
}

pub struct NatsSink {
    config: NatsSinkConfig,
    /// Connected on the first write (building a pipeline does no I/O).
    js: OnceCell<jetstream::Context>,
}

impl NatsSink {
    async fn context(&self) -> Result<&jetstream::Context, ComponentError> {
        self.js
            .get_or_try_init(|| async {
                let client = nats_source::connect(&self.config.url, "nats sink").await?;
                let js = jetstream::new(client);
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
        let mut pending = Vec::with_capacity(encoded.events.len());
        let mut start = 0;
        // One message per event (a `text` message may hold newlines);
        // slices share the batch's buffer.
        for (i, &end) in encoded.line_ends.iter().enumerate() {
            let payload = body.slice(start..end);
            start = end + 1;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                "Nats-Msg-Id",
                format!("{:016x}-{i}", encoded.batch_id).as_str(),
            );
            let ack = js
                .publish_with_headers(self.config.subject.clone(), headers, payload)
                .await
                .map_err(|e| transient(format!("publishing to '{}': {e}", self.config.subject)))?;
            pending.push(ack);
        }
        for ack in pending {
            ack.await.map_err(|e| {
                transient(format!(
                    "JetStream did not acknowledge a message on '{}': {e}",
                    self.config.subject
                ))
            })?;
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
