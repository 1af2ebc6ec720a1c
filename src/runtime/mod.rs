//! Buffers, fan-out and stage drivers; `build` makes a pipeline's pieces,
//! `run` spawns and supervises them.

pub mod buffer;
pub mod build;
pub mod control;
pub mod data_dir;
pub mod errors;
pub mod fanout;
pub mod faults;
pub mod run;
pub mod stage;
pub mod tap;

pub use run::RunningPipeline;
