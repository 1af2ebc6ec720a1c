//! `kafka`: a consumer group member. Every flowgate process with the same
//! `group_id` shares the topics' partitions. Offsets are committed per
//! partition only up to the last message that it and every earlier one
//! were written by every sink they reached (at-least-once: after a
//! `kill -9` the group reads the uncommitted rest again). On a rebalance,
//! revoked partitions stop being fetched, their events in flight get up to
//! `drain_timeout` to be written, what was written is committed, and only
//! then are they released. A batch a sink could not write is read again.
//! The client runs on a thread of its own (`kafka_consumer`).

use super::Codec;
use super::decode::{check_max_line_bytes, default_max_line_bytes};
use super::kafka_consumer;
use super::kafka_context::{Context, Settings};
use crate::components::{ComponentError, Source, SourceContext};
use crate::config::duration::ConfigDuration;
use indexmap::IndexMap;
use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::time::Duration;

fn default_drain_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

fn default_commit_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(1))
}

/// Where a group without a committed offset starts reading a partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OffsetReset {
    /// The oldest message the broker keeps.
    #[default]
    Earliest,
    /// Only messages produced after the group joined.
    Latest,
}

/// Consumes Kafka topics as a member of a consumer group.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, e.g. `['127.0.0.1:9092']`.
    pub brokers: Vec<String>,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// Consumer group: every process with the same `group_id` shares the partitions.
    pub group_id: String,
    /// `earliest` (default) or `latest`: where a partition without a committed offset starts.
    #[serde(default)]
    pub auto_offset_reset: OffsetReset,
    /// `json` (default): each message is a JSON object; `text`: it becomes `{"message": payload}`.
    #[serde(default)]
    pub codec: Codec,
    /// A field to put `{topic, partition, offset, key, timestamp, headers}` of the message in
    /// (key and header values as text, timestamp in milliseconds); absent: none.
    #[serde(default)]
    pub metadata_field: Option<String>,
    /// On a rebalance, how long revoked partitions' events in flight may take to be written
    /// before what was written is committed and the partitions are released (default 10s);
    /// the rest is read again by the new owner.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: ConfigDuration,
    /// How often acknowledged offsets are committed (default 1s): a `kill -9` repeats at most
    /// what was acknowledged within it, besides what was not yet acknowledged.
    #[serde(default = "default_commit_interval")]
    pub commit_interval: ConfigDuration,
    /// Longest message, in bytes (default 1 MiB = 1048576; at least 1). A longer one is a
    /// `decode` error of this source, handled by its `on_error`, and is not decoded.
    #[serde(default = "default_max_line_bytes")]
    #[schemars(range(min = 1))]
    pub max_line_bytes: usize,
    /// librdkafka consumer properties passed through, e.g. `{session.timeout.ms: '6000'}`.
    /// The client fetches ahead up to `queued.max.messages.kbytes` (librdkafka's default:
    /// 64 MiB per partition set); the pipeline holds what its buffers hold. `debug` (e.g.
    /// `'cgrp,consumer'`) turns librdkafka's debug lines on; they are logged at debug level
    /// (`RUST_LOG=info,flowgate=debug`).
    #[serde(default)]
    pub options: ClientOptions,
}

/// A client property's value: text, a number or a boolean (librdkafka
/// takes every value as text).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum OptionValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl std::fmt::Display for OptionValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(s) => f.write_str(s),
            Self::Integer(n) => write!(f, "{n}"),
            Self::Float(n) => write!(f, "{n}"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Client properties passed through to librdkafka.
pub type ClientOptions = IndexMap<String, OptionValue>;

/// Sets `options` on `config`.
pub fn set_options(config: &mut ClientConfig, options: &ClientOptions) {
    for (key, value) in options {
        config.set(key, value.to_string());
    }
}

/// Properties flowgate sets itself: a user value would break its guarantees
/// or duplicate a key of the component.
const MANAGED: &[(&str, &str)] = &[
    ("bootstrap.servers", "brokers"),
    ("group.id", "group_id"),
    ("auto.offset.reset", "auto_offset_reset"),
    (
        "enable.auto.commit",
        "nothing: offsets are committed after the sinks wrote",
    ),
    (
        "enable.auto.offset.store",
        "nothing: offsets are committed after the sinks wrote",
    ),
];

/// The problem with options that set what the component manages.
pub fn managed_option_problems(
    options: &ClientOptions,
    managed: &[(&str, &str)],
) -> Vec<(Vec<&'static str>, String)> {
    options
        .keys()
        .filter_map(|k| managed.iter().find(|(m, _)| m == k))
        .map(|(k, instead)| {
            (
                vec!["options"],
                format!("option '{k}' is set by flowgate; use {instead}"),
            )
        })
        .collect()
}

impl KafkaSourceConfig {
    pub fn check(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut problems = check_max_line_bytes(self.max_line_bytes);
        if self.brokers.is_empty() {
            problems.push((vec!["brokers"], "needs at least one broker".into()));
        }
        if self.topics.is_empty() || self.topics.iter().any(String::is_empty) {
            problems.push((vec!["topics"], "needs at least one non-empty topic".into()));
        }
        if self.group_id.is_empty() {
            problems.push((vec!["group_id"], "must not be empty".into()));
        }
        if self.metadata_field.as_deref() == Some("") {
            problems.push((vec!["metadata_field"], "must not be empty".into()));
        }
        for (key, d) in [
            ("drain_timeout", &self.drain_timeout),
            ("commit_interval", &self.commit_interval),
        ] {
            if d.0.is_zero() {
                problems.push((vec![key], "must be longer than 0s".into()));
            }
        }
        problems.extend(managed_option_problems(&self.options, MANAGED));
        problems
    }

    pub fn build(&self) -> KafkaSource {
        KafkaSource {
            config: self.clone(),
        }
    }

    /// The client properties: defaults, the pass-through options, then
    /// what flowgate manages (which `check` refuses as options).
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("client.id", client_id)
            .set("enable.partition.eof", "false")
            // The lag gauges are read from the client's statistics.
            .set("statistics.interval.ms", "1000")
            // Fetch ahead up to `queued.max.messages.kbytes` (64 MiB), not
            // librdkafka's 100,000 messages: measured 2.3x the events/s into
            // a blackhole sink, 1.8x into a file (README "Throughput").
            .set("queued.min.messages", "1000000");
        set_options(&mut config, &self.options);
        // rdkafka lowers the client's log level to what the `librdkafka`
        // tracing target enables (info by default) after `debug` raised it:
        // asked for, the lines must reach the context's `log`.
        if self.options.contains_key("debug") {
            config.set_log_level(RDKafkaLogLevel::Debug);
        }
        config
            .set("bootstrap.servers", self.brokers.join(","))
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match self.auto_offset_reset {
                    OffsetReset::Earliest => "earliest",
                    OffsetReset::Latest => "latest",
                },
            );
        config
    }
}

pub struct KafkaSource {
    config: KafkaSourceConfig,
}

#[async_trait::async_trait]
impl Source for KafkaSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), ComponentError> {
        let c = &self.config;
        let (context, acks_tx) = Context::new(Settings {
            name: ctx.name.clone(),
            codec: c.codec,
            max_line_bytes: c.max_line_bytes,
            metadata_field: c.metadata_field.clone(),
            drain_timeout: c.drain_timeout.0,
            commit_interval: c.commit_interval.0,
            metrics: ctx.metrics.clone(),
        });
        let stop = context.stop_flag();
        let client_id = format!("flowgate-{}-{}", ctx.pipeline, ctx.name);
        let consumer: BaseConsumer<Context> = c
            .client_config(&client_id)
            .create_with_context(context)
            .map_err(|e| ComponentError::Other(format!("configuring the Kafka consumer: {e}")))?;
        let topics: Vec<&str> = c.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| ComponentError::Other(format!("subscribing to {topics:?}: {e}")))?;
        tracing::info!(component = %ctx.name, "consuming {topics:?} in group '{}'", c.group_id);
        // Two batches in hand: the client pauses rather than queueing more.
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        // The thread's lines (and the callbacks `poll` runs on it) carry
        // the component's span, as the lines of its task do.
        let span = tracing::Span::current();
        let thread = std::thread::Builder::new()
            .name(format!("kafka-{}", ctx.name))
            .spawn(move || span.in_scope(|| kafka_consumer::run(consumer, acks_tx, tx)))
            .map_err(|e| ComponentError::Other(format!("starting the Kafka consumer: {e}")))?;
        loop {
            let fetched = tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => break,
                f = rx.recv() => f,
            };
            let Some(fetched) = fetched else { break };
            let (events, failed, acks) =
                fetched.take(c.codec, c.max_line_bytes, c.metadata_field.as_deref());
            ctx.metrics
                .events_in
                .inc_by((events.len() + failed.len()) as u64);
            ctx.errors.handle_sampled(failed, &acks).await;
            ctx.emit_acked(events, acks).await;
        }
        stop.store(true, Ordering::Relaxed);
        // Batches handed over but not emitted fail (they are read again).
        rx.close();
        while rx.recv().await.is_some() {}
        // What is in the pipeline drains; the thread commits it and leaves.
        ctx.output.close();
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            return Err(ComponentError::Other(
                "the Kafka consumer thread failed".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_that_would_break_the_commit_guarantee_are_refused() {
        let config: KafkaSourceConfig = serde_yaml::from_str(
            "{brokers: [b:9092], topics: [t], group_id: g, options: {enable.auto.commit: 'true', session.timeout.ms: 6000}}",
        )
        .unwrap();
        assert_eq!(
            config.check(),
            vec![(
                vec!["options"],
                "option 'enable.auto.commit' is set by flowgate; use nothing: offsets are committed after the sinks wrote".to_string()
            )]
        );
        let client = config.client_config("c");
        assert_eq!(client.get("session.timeout.ms"), Some("6000"));
        assert_eq!(client.get("enable.auto.commit"), Some("false"));
    }

    #[test]
    fn the_debug_option_lets_librdkafka_debug_lines_through() {
        let config = |options: &str| -> KafkaSourceConfig {
            serde_yaml::from_str(&format!(
                "{{brokers: [b:9092], topics: [t], group_id: g, options: {options}}}"
            ))
            .unwrap()
        };
        let debug = config("{debug: 'cgrp,consumer'}").client_config("c");
        assert!(matches!(debug.log_level, RDKafkaLogLevel::Debug));
        assert_eq!(debug.get("debug"), Some("cgrp,consumer"));
        let plain = config("{}").client_config("c");
        assert!(!matches!(plain.log_level, RDKafkaLogLevel::Debug));
    }
}
