//! Stage drivers for transforms and sinks: pull batches from the stage's
//! input queue (`intake`), pass them through the stage's control stack
//! (`crate::controls`), run the work on `workers` concurrent tasks spread
//! over the runtime's threads (`drive`), restore input order when
//! `ordered`, and hand results on. Metrics are updated once per batch.

mod async_transform;
mod drive;
mod intake;
mod sink;
mod stateful;
mod transform;

pub use async_transform::run_async_transform;
pub use drive::Concurrency;
pub use sink::run_sink;
pub use transform::{PortOutput, StageParts, run_transform};
