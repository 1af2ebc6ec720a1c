//! The catalogue: every source, transform and sink, one file each, and the
//! interfaces the runtime drives them through.
//!
//! Each catalogue enum is closed and dispatched with `match`. Pipeline files
//! are deserialised per component (see `load::component`), so serde's tagged
//! enums never see a component mapping and positions are kept.

pub mod http_common;
pub mod sinks;
pub mod sources;
pub mod stateful;
pub mod transforms;

use crate::core::Failed;
use crate::core::{AckedChunks, Acks, Batch, Event};
use crate::flow::fanout::Fanout;
use crate::flow::on_error::ErrorHandler;
use crate::telemetry::ComponentMetrics;
use tokio_util::sync::CancellationToken;

/// Declares a catalogue enum: variants, their `type` names, per-type
/// deserialisation and per-type JSON schemas.
macro_rules! catalogue {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident($config:ty) = $tag:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Serialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant($config)),+ }

        impl $name {
            /// Every `type` name, for suggestions.
            pub const TYPES: &'static [&'static str] = &[$($tag),+];

            pub fn type_name(&self) -> &'static str {
                match self { $(Self::$variant(_) => $tag),+ }
            }

            /// Deserialises the type-specific keys of a component; `None`
            /// for an unknown type.
            pub fn from_value(
                type_name: &str,
                value: serde_yaml::Value,
            ) -> Option<Result<Self, serde_path_to_error::Error<serde_yaml::Error>>> {
                match type_name {
                    $($tag => Some(serde_path_to_error::deserialize(value).map(Self::$variant)),)+
                    _ => None,
                }
            }

            /// `(type, schema of its specific keys)` for each type.
            pub fn type_schemas(generator: &mut schemars::SchemaGenerator) -> Vec<(&'static str, schemars::Schema)> {
                vec![$(($tag, <$config as schemars::JsonSchema>::json_schema(generator))),+]
            }
        }
    };
}
pub(crate) use catalogue;

pub use sinks::SinkKind;
pub use sources::SourceKind;
pub use transforms::TransformKind;

/// What a source is given to run.
pub struct SourceContext {
    pub name: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// Where this pipeline's sources keep state between runs
    /// (`<--data-dir>/<pipeline>/`), e.g. file checkpoints.
    pub state_dir: std::path::PathBuf,
    /// Events the buffers downstream of this source hold in all (what an
    /// acknowledging source may have outstanding without overfilling them).
    pub downstream_capacity: usize,
    pub output: Fanout,
    pub errors: ErrorHandler,
    pub shutdown: CancellationToken,
    pub metrics: ComponentMetrics,
    /// The source's `rate_limit`, applied by `emit`.
    pub controls: crate::controls::StageControls,
}

impl SourceContext {
    /// Sends a batch downstream through the source's rate limit; waiting
    /// for the limit or for room downstream is backpressure.
    pub async fn emit(&self, batch: Batch) {
        self.emit_acked(batch, Acks::none()).await
    }

    /// `emit` for a source that acknowledges: `acks` are released once
    /// every event of `batch` is written or discarded downstream.
    pub async fn emit_acked(&self, batch: Batch, acks: Acks) {
        // Under a rate limit, events leave in bursts as the bucket allows
        // rather than all at once when the whole batch has been admitted.
        let chunk = self.controls.release_size().unwrap_or(batch.len());
        for (part, part_acks) in AckedChunks::new(batch, acks, chunk) {
            let gated = self.controls.gate_in_place(part).await;
            self.metrics.discard(
                crate::telemetry::DiscardReason::RateLimited,
                gated.rate_limited,
            );
            if let Err(lost) = self.output.send(gated.batch, part_acks).await {
                tracing::warn!(component = %self.name, "{} events could not be delivered: a consumer stopped", lost.0);
            }
        }
    }
}

/// A source ends when its input is exhausted or `shutdown` is cancelled.
#[async_trait::async_trait]
pub trait Source: Send + 'static {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), ComponentError>;
}

/// What a transform made of one batch. `ports[i]` is the i-th entry of
/// `TransformKind::ports`.
#[derive(Debug, Default)]
pub struct TransformOutput {
    pub ports: Vec<Batch>,
    pub failed: Vec<Failed>,
    /// Events dropped on purpose (a filter's `false`).
    pub filtered: usize,
    /// Events that matched no route and have nowhere to go.
    pub unmatched: usize,
    /// Events discarded by `rate_limit.when_limited: drop`.
    pub rate_limited: usize,
    /// The attempt as a whole failed retryably (message, error type); its
    /// events are in `failed` for when no retry follows.
    pub attempt_failure: Option<(String, &'static str)>,
}

impl TransformOutput {
    pub fn with_ports(n: usize, capacity: usize) -> Self {
        Self {
            ports: (0..n).map(|_| Vec::with_capacity(capacity)).collect(),
            ..Self::default()
        }
    }
}

/// A CPU-bound transform; `process` runs on the stage's workers in parallel.
pub trait Transform: Send + Sync + 'static {
    fn process(&self, batch: Batch, out: &mut TransformOutput);

    /// For a transform that keeps state across batches, a fresh state
    /// machine; the stage then drives it on one task (`stateful`), not
    /// through `process`.
    fn stateful(&self) -> Option<Box<dyn stateful::Stateful>> {
        None
    }
}

/// An I/O-bound transform called once per event; the stage runs up to
/// `workers` calls at once, each through the stage controls.
#[async_trait::async_trait]
pub trait AsyncTransform: Send + Sync + 'static {
    async fn call(&self, event: &Event) -> Result<Event, CallError>;
}

/// A transform ready to run.
#[derive(Clone)]
pub enum BuiltTransform {
    Sync(std::sync::Arc<dyn Transform>),
    Async(std::sync::Arc<dyn AsyncTransform>),
}

/// A batch encoded by a sink, ready to write.
#[derive(Debug, Default)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    /// The events in `bytes`, kept so a failed write can route them.
    pub events: Batch,
    /// With line codecs: where each event's line ends in `bytes` (its
    /// newline's offset), so a sink that sends events one by one splits
    /// at event boundaries, not at newlines inside a `text` message.
    pub line_ends: Vec<usize>,
    /// Names this encoded batch across its retries (set by sinks whose
    /// service drops duplicates by id; 0 otherwise).
    pub batch_id: u64,
    pub failed: Vec<Failed>,
}

/// A sink: `encode` runs on the stage's workers in parallel; `write` runs
/// one at a time in order, or with `concurrent_writes` on the workers too
/// (acknowledged in order all the same), or with a `window` batches are
/// `submit`ted in order and confirmed later; `flush` once at the end.
#[async_trait::async_trait]
pub trait Sink: Send + Sync + 'static {
    /// `(max_events, timeout)` for sinks that write in gathered batches.
    fn batching(&self) -> Option<(usize, std::time::Duration)> {
        None
    }
    /// Whether `write` may run on several batches at once (`workers: N`
    /// keeps N writes in flight): true for services that take requests
    /// concurrently, false where writes must not interleave (files, stdout).
    fn concurrent_writes(&self) -> bool {
        false
    }
    fn encode(&self, batch: Batch) -> Encoded;
    async fn write(&self, encoded: &Encoded) -> Result<(), ComponentError>;
    async fn flush(&self) -> Result<(), ComponentError>;

    /// Once before the first batch: checks that can only be made against
    /// the service (a database table's columns). An error stops the
    /// pipeline before anything is written.
    async fn start(&self) -> Result<(), ComponentError> {
        Ok(())
    }

    /// `write` for services that refuse single events while taking the
    /// rest of the batch (a database row breaking a constraint): what was
    /// refused, the rest being written. Default: `write`, refusing none.
    async fn write_refusing(&self, encoded: &Encoded) -> Result<Vec<Refused>, ComponentError> {
        self.write(encoded).await.map(|()| Vec::new())
    }

    /// For sinks that take a batch at once and confirm it later (Kafka's
    /// delivery reports): how many submitted batches may await their
    /// confirmation at once (`submit`). `None` (default): `write`.
    fn window(&self) -> Option<usize> {
        None
    }

    /// Hands `encoded` to the service now — called one batch at a time, in
    /// input order — and returns what resolves once all of it is written.
    /// Default: writes it before returning.
    async fn submit(&self, encoded: &Encoded) -> Result<Pending, ComponentError> {
        self.write(encoded).await?;
        Ok(Box::pin(std::future::ready(Ok(()))))
    }
}

/// A submitted batch's confirmation (`Sink::submit`).
pub type Pending =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ComponentError>> + Send>>;

/// An event of an encoded batch that the service refused on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// Its index in `Encoded::events`.
    pub index: usize,
    /// The service's reason.
    pub message: String,
    /// The `error_type` label.
    pub error_type: &'static str,
}

pub use crate::core::message_event as raw_line_event;
pub use crate::core::{CallError, ComponentError};
