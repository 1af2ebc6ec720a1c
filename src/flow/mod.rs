//! The pipes between stages, handed to components in their contexts:
//! bounded input queues, fan-out to consumers, taps, `on_error` handling
//! and the pipeline's stop/fail control.

pub mod buffer;
pub mod control;
pub mod fanout;
pub mod on_error;
pub mod tap;
