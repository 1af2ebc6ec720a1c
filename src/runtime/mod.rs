//! Buffers, fan-out and stage drivers; building and running pipelines.

pub mod buffer;
pub mod control;
pub mod errors;
pub mod fanout;
