//! Sources: components that make events.

pub mod checkpoint;
pub mod decode;
pub mod file;
pub mod framing;
pub mod generator;
pub mod http_listener;
pub mod http_server;
pub mod kafka;
pub mod kafka_consumer;
pub mod kafka_context;
pub mod kafka_offsets;
pub mod lines;
pub mod nats;
pub mod nats_acks;
pub mod socket;
pub mod socket_unix;
pub mod split;
pub mod stdin;
pub mod stream_server;
pub mod syslog;
pub mod tail;

use super::{Source, catalogue};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

catalogue!(
    /// Every source type.
    SourceKind {
        /// Emits configured events, cycled, optionally at a fixed rate.
        Generator(generator::GeneratorConfig) = "generator",
        /// Reads standard input, one event per line.
        Stdin(stdin::StdinConfig) = "stdin",
        /// Reads a file once, or follows it (`follow: true`), one event per line.
        File(file::FileSourceConfig) = "file",
        /// Accepts events over HTTP POST.
        HttpServer(http_server::HttpServerConfig) = "http_server",
        /// Consumes a NATS JetStream stream (durable pull consumer, acknowledged after the sinks wrote).
        Nats(nats::NatsSourceConfig) = "nats",
        /// Consumes Kafka topics in a consumer group (offsets committed after the sinks wrote).
        Kafka(kafka::KafkaSourceConfig) = "kafka",
        /// Listens on TCP, UDP or a unix socket; one event per line or octet-counted frame.
        Socket(socket::SocketSourceConfig) = "socket",
        /// Receives RFC 5424 and RFC 3164 syslog messages over TCP or UDP.
        Syslog(syslog::SyslogConfig) = "syslog",
    }
);

/// How a line of text becomes an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// Each line is one JSON object; anything else is a `decode` error of the source.
    #[default]
    Json,
    /// Each line becomes `{"message": "<line>"}`.
    Text,
}

impl SourceKind {
    pub fn build(&self) -> Box<dyn Source> {
        match self {
            Self::Generator(c) => Box::new(c.build()),
            Self::Stdin(c) => Box::new(c.build()),
            Self::File(c) => Box::new(c.build()),
            Self::HttpServer(c) => Box::new(c.build()),
            Self::Nats(c) => Box::new(c.build()),
            Self::Kafka(c) => Box::new(c.build()),
            Self::Socket(c) => Box::new(c.build()),
            Self::Syslog(c) => Box::new(c.build()),
        }
    }

    /// Problems with values serde accepted (e.g. an empty event list).
    pub fn check(&self) -> Vec<(Vec<&'static str>, String)> {
        match self {
            Self::Generator(c) => c.check(),
            Self::HttpServer(c) => c.check(),
            Self::File(c) => c.check(),
            Self::Nats(c) => c.check(),
            Self::Stdin(c) => c.check(),
            Self::Kafka(c) => c.check(),
            Self::Socket(c) => c.check(),
            Self::Syslog(c) => c.check(),
        }
    }
}
