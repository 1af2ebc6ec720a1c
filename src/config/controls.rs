//! Keys every stage shares (SPEC §2 "Stage controls"): inputs, worker pool,
//! input buffer and error handling. Component-specific keys live with each
//! component in `components/`.

use super::duration::ConfigDuration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a stage does with an event it failed to process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Count the event in `flowgate_events_discarded_total{reason="error"}` and drop it.
    #[default]
    Drop,
    /// Send it to the output `<name>.errors` with `.error = {message, component, attempts}` added.
    Route,
    /// Stop the pipeline; the process exits non-zero.
    Stop,
}

/// What a full input buffer does to a new batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room: backpressure reaches the producer. Nothing is lost.
    #[default]
    Block,
    /// Discard the incoming events that do not fit.
    DropNewest,
    /// Discard the oldest queued events to make room for the new ones.
    DropOldest,
}

/// Where a stage's input queue is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BufferType {
    /// In memory: lost on a crash; upstream hears "delivered" once the
    /// sinks wrote the events.
    #[default]
    Memory,
    /// In checksummed files under `<data-dir>/<pipeline>/<component>/`:
    /// upstream hears "delivered" once the events are fsynced (grouped
    /// every 10 ms); they are removed once acknowledged downstream, and
    /// survive `kill -9`, restarts and reloads.
    Disk,
}

/// The stage's bounded input queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// `memory` (default) or `disk` (durable; needs `max_bytes`).
    #[serde(rename = "type", default)]
    pub kind: BufferType,
    /// Events the input queue holds (at least 1). With `type: disk`, how
    /// many of its events are in memory at once: the buffer itself holds
    /// up to `max_bytes` on disk, and replaying a backlog of any size keeps
    /// memory bounded by `size`.
    #[serde(default = "default_buffer_size")]
    #[schemars(range(min = 1))]
    pub size: usize,
    /// Memory: bytes the input queue holds at most, counted as the events'
    /// encoded JSON size (`64MiB`, `512KiB` or plain bytes); `when_full`
    /// applies to whichever of `size` and `max_bytes` is reached first.
    /// Unset: only `size` bounds the queue. An event larger than
    /// `max_bytes` still passes, alone. Disk (required, at least 1MiB): the
    /// bytes of the buffer's files, which are freed a segment (1/16 of
    /// `max_bytes`, 256KiB to 64MiB) at a time as events are acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<super::size::ByteSize>,
    /// Policy when the queue is full: `block` (backpressure), `drop_newest`,
    /// `drop_oldest` (memory only).
    #[serde(default)]
    pub when_full: WhenFull,
}

fn default_buffer_size() -> usize {
    1000
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            kind: BufferType::Memory,
            size: default_buffer_size(),
            max_bytes: None,
            when_full: WhenFull::Block,
        }
    }
}

fn default_workers() -> Workers {
    Workers::Fixed(1)
}

fn default_max_workers() -> usize {
    64
}

/// `workers`: a fixed pool size, or `adaptive` — concurrency that grows
/// while the service's latency holds and halves when it rises or the
/// service answers 429/503 (`http` transform and sink), up to `max_workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    Fixed(usize),
    Adaptive,
}

impl Workers {
    /// The most units in flight at once.
    pub fn most(self, max_workers: usize) -> usize {
        match self {
            Workers::Fixed(n) => n,
            Workers::Adaptive => max_workers,
        }
    }
}

impl std::fmt::Display for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Workers::Fixed(n) => write!(f, "{n}"),
            Workers::Adaptive => f.write_str("adaptive"),
        }
    }
}

impl Serialize for Workers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Workers::Fixed(n) => s.serialize_u64(*n as u64),
            Workers::Adaptive => s.serialize_str("adaptive"),
        }
    }
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Workers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of workers (1 to 1024) or 'adaptive'")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Workers, E> {
                Ok(Workers::Fixed(usize::try_from(n).unwrap_or(usize::MAX)))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Workers, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::invalid_value(serde::de::Unexpected::Signed(n), &self)),
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Workers, E> {
                match v {
                    "adaptive" => Ok(Workers::Adaptive),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(Visit)
    }
}

impl JsonSchema for Workers {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Workers".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A fixed number of concurrent invocations, or `adaptive`.",
            "oneOf": [
                {"type": "integer", "minimum": 1, "maximum": 1024},
                {"const": "adaptive"}
            ]
        })
    }
}

fn default_true() -> bool {
    true
}

/// What a stage does with events over its rate limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhenLimited {
    /// Delay them until the bucket allows: backpressure reaches the source.
    #[default]
    Wait,
    /// Discard them (`flowgate_events_discarded_total{reason="rate_limited"}`).
    Drop,
}

fn one_second() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(1))
}

fn default_max_keys() -> usize {
    10_000
}

/// Token bucket: `rate` events per `per`, bursts up to `burst`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Events allowed per `per` (at least 1).
    #[schemars(range(min = 1))]
    pub rate: u32,
    /// The period `rate` refers to, e.g. `1s`, `1m`.
    #[serde(default = "one_second")]
    pub per: ConfigDuration,
    /// Largest burst (bucket size); default: `rate`.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub burst: Option<u32>,
    /// jq expression: one bucket per distinct value (per-key limits), e.g. `.customer_id`.
    #[serde(default)]
    pub key: Option<String>,
    /// Live keys kept; the least recently used is evicted beyond this.
    #[serde(default = "default_max_keys")]
    #[schemars(range(min = 1))]
    pub max_keys: usize,
    /// `wait` (delay, backpressure) or `drop`.
    #[serde(default)]
    pub when_limited: WhenLimited,
}

fn default_attempts() -> u32 {
    1
}

fn hundred_ms() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(100))
}

fn ten_seconds() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

/// Retries of failed attempts, with exponential backoff and full jitter.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Total attempts, the first included (1 = no retry).
    #[serde(default = "default_attempts")]
    #[schemars(range(min = 1))]
    pub attempts: u32,
    /// Backoff before the first retry; doubles each retry, randomised in [0, backoff).
    #[serde(default = "hundred_ms")]
    pub initial_backoff: ConfigDuration,
    /// Largest backoff.
    #[serde(default = "ten_seconds")]
    pub max_backoff: ConfigDuration,
}

/// What an open breaker does with new events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhenOpen {
    /// Fail them at once (error type `breaker_open`); they follow `on_error`.
    #[default]
    Reject,
    /// Hold them (backpressure) until a half-open trial succeeds.
    Wait,
}

fn default_min_calls() -> u32 {
    20
}

fn sixty_seconds() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(60))
}

fn thirty_seconds() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}

/// Stops calling a failing stage for a while, then tries again.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Open after this many failures in a row.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub consecutive_failures: Option<u32>,
    /// Or open when this fraction (0 < x <= 1) of at least `min_calls` calls in `window` failed.
    #[serde(default)]
    pub failure_rate: Option<f64>,
    /// Calls in the window before `failure_rate` applies.
    #[serde(default = "default_min_calls")]
    #[schemars(range(min = 1))]
    pub min_calls: u32,
    /// Sliding window for `failure_rate`.
    #[serde(default = "sixty_seconds")]
    pub window: ConfigDuration,
    /// Time open before a half-open trial.
    #[serde(default = "thirty_seconds")]
    pub open_for: ConfigDuration,
    /// Successful trial calls needed to close again.
    #[serde(default = "default_attempts")]
    #[schemars(range(min = 1))]
    pub half_open_calls: u32,
    /// `reject` (fail events at once) or `wait` (hold them until a trial succeeds).
    #[serde(default)]
    pub when_open: WhenOpen,
}

/// Keys shared by every transform and sink.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageCommon {
    /// Components (or `component.port` outputs) this stage reads from. Several inputs are merged (fan-in).
    pub inputs: Vec<String>,
    /// Concurrent invocations of the stage (worker pool / fan-out width), 1 to 1024; or
    /// `adaptive` (`http` transform and sink): concurrency that grows while the service's latency
    /// holds and halves when it rises or the service answers 429/503.
    #[serde(default = "default_workers")]
    pub workers: Workers,
    /// With `workers: adaptive`, the most concurrent invocations (1 to 1024).
    #[serde(default = "default_max_workers")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_workers: usize,
    /// With `workers > 1`, emit results in input order.
    #[serde(default = "default_true")]
    pub ordered: bool,
    /// The stage's bounded input queue.
    #[serde(default)]
    pub buffer: BufferConfig,
    /// What happens to an event the stage fails on: `drop`, `route` (to `<name>.errors`) or `stop`.
    #[serde(default)]
    pub on_error: OnError,
    /// Token-bucket rate limit on events entering the stage.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Limit for one attempt of the stage on a batch (sinks) or event; a timeout is a failure.
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// Retries of failed attempts (timeouts, I/O errors; not program errors).
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// Circuit breaker around the stage's work.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
}

/// Keys shared by every source.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceCommon {
    /// What happens to input that cannot be decoded: `drop`, `route` (to `<name>.errors`, the raw
    /// line in `.message`) or `stop`.
    #[serde(default)]
    pub on_error: OnError,
    /// Token-bucket rate limit on the events the source emits.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

/// Names of the shared keys, used to split a component mapping.
pub const STAGE_KEYS: &[&str] = &[
    "inputs",
    "workers",
    "max_workers",
    "ordered",
    "buffer",
    "on_error",
    "rate_limit",
    "timeout",
    "retry",
    "circuit_breaker",
];
pub const SOURCE_KEYS: &[&str] = &["on_error", "rate_limit"];
