//! Spawns a pipeline's pieces, supervises its tasks and applies new
//! configurations by difference.

pub mod run;

pub use run::RunningPipeline;
