//! Sinks: components that write events somewhere.

pub mod blackhole;
pub mod file;
pub mod http;
pub mod kafka;
mod kafka_producer;
mod kafka_template;
pub mod nats;
pub mod postgres;
pub mod socket;
pub mod stdout;

use super::{Encoded, Sink, catalogue};
use crate::core::Batch;
use crate::core::Failed;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::io::Write;

catalogue!(
    /// Every sink type.
    SinkKind {
        /// Writes events to standard output.
        Stdout(stdout::StdoutConfig) = "stdout",
        /// Appends events to a file.
        File(file::FileSinkConfig) = "file",
        /// Counts events and writes nothing.
        Blackhole(blackhole::BlackholeConfig) = "blackhole",
        /// POSTs NDJSON batches to an HTTP endpoint.
        Http(http::HttpSinkConfig) = "http",
        /// Publishes events to NATS JetStream, waiting for each message's acknowledgement.
        Nats(nats::NatsSinkConfig) = "nats",
        /// Produces events to Kafka (`acks=all`, idempotent), a batch written once every message is acknowledged.
        Kafka(kafka::KafkaSinkConfig) = "kafka",
        /// Writes events to a TCP connection (one line each) or as UDP datagrams; reconnects with backoff.
        Socket(socket::SocketSinkConfig) = "socket",
        /// Writes events as rows of a PostgreSQL table, a transaction per batch (upserts optional).
        Postgres(postgres::PostgresSinkConfig) = "postgres",
    }
);

impl SinkKind {
    pub fn build(&self) -> Box<dyn Sink> {
        match self {
            Self::Stdout(c) => Box::new(c.build()),
            Self::File(c) => Box::new(c.build()),
            Self::Blackhole(c) => Box::new(c.build()),
            Self::Http(c) => Box::new(c.build()),
            Self::Nats(c) => Box::new(c.build()),
            Self::Kafka(c) => Box::new(c.build()),
            Self::Socket(c) => Box::new(c.build()),
            Self::Postgres(c) => Box::new(c.build()),
        }
    }

    /// Problems with values serde accepted.
    pub fn check(&self) -> Vec<(Vec<&'static str>, String)> {
        match self {
            Self::Http(c) => c.check(),
            Self::Nats(c) => c.check(),
            Self::Kafka(c) => c.check(),
            Self::Socket(c) => c.check(),
            Self::Postgres(c) => c.check(),
            _ => Vec::new(),
        }
    }
}

/// How an event becomes a line of output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputCodec {
    /// One JSON object per line (NDJSON).
    #[default]
    Json,
    /// The `.message` field as a line of text; events without a string `.message` fail (`encode`).
    Text,
}

/// Encodes a batch as lines; events that cannot be encoded fail one by one.
pub fn encode_lines(batch: Batch, codec: OutputCodec) -> Encoded {
    let mut out = Encoded {
        bytes: Vec::with_capacity(batch.len() * 192),
        events: Vec::with_capacity(batch.len()),
        line_ends: Vec::with_capacity(batch.len()),
        batch_id: 0,
        failed: Vec::new(),
    };
    for event in batch {
        match codec {
            OutputCodec::Json => {
                // Writing a Value into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut out.bytes, &event);
                out.bytes.push(b'\n');
            }
            OutputCodec::Text => match event.get("message") {
                Some(crate::core::Value::String(s)) => {
                    let _ = writeln!(out.bytes, "{s}");
                }
                _ => {
                    out.failed.push(Failed::new(
                        event,
                        "codec text needs a string field 'message'",
                        "encode",
                    ));
                    continue;
                }
            },
        }
        out.line_ends.push(out.bytes.len() - 1);
        out.events.push(event);
    }
    out
}
