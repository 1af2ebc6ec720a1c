//! Keys every stage shares (SPEC §2 "Stage controls"): inputs, worker pool,
//! input buffer and error handling. Component-specific keys live with each
//! component in `components/`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

/// The stage's bounded input queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Events the input queue holds (at least 1).
    #[serde(default = "default_buffer_size")]
    #[schemars(range(min = 1))]
    pub size: usize,
    /// Policy when the queue is full: `block` (backpressure), `drop_newest`, `drop_oldest`.
    #[serde(default)]
    pub when_full: WhenFull,
}

fn default_buffer_size() -> usize {
    1000
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            size: default_buffer_size(),
            when_full: WhenFull::Block,
        }
    }
}

fn default_workers() -> usize {
    1
}

fn default_true() -> bool {
    true
}

/// Keys shared by every transform and sink.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageCommon {
    /// Components (or `component.port` outputs) this stage reads from. Several inputs are merged (fan-in).
    pub inputs: Vec<String>,
    /// Concurrent invocations of the stage (worker pool / fan-out width); at least 1.
    #[serde(default = "default_workers")]
    #[schemars(range(min = 1, max = 1024))]
    pub workers: usize,
    /// With `workers > 1`, emit results in input order.
    #[serde(default = "default_true")]
    pub ordered: bool,
    /// The stage's bounded input queue.
    #[serde(default)]
    pub buffer: BufferConfig,
    /// What happens to an event the stage fails on: `drop`, `route` (to `<name>.errors`) or `stop`.
    #[serde(default)]
    pub on_error: OnError,
}

/// Keys shared by every source.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceCommon {
    /// What happens to input that cannot be decoded: `drop`, `route` (to `<name>.errors`, the raw
    /// line in `.message`) or `stop`.
    #[serde(default)]
    pub on_error: OnError,
}

/// Names of the shared keys, used to split a component mapping.
pub const STAGE_KEYS: &[&str] = &["inputs", "workers", "ordered", "buffer", "on_error"];
pub const SOURCE_KEYS: &[&str] = &["on_error"];
