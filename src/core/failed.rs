//! `Failed`: an event a stage gave up on, with why; what `on_error` acts on.

use super::Event;

/// An event a stage could not process, with why.
#[derive(Debug)]
pub struct Failed {
    pub event: Event,
    pub message: String,
    /// `decode`, `program`, `io`, ... (the `error_type` label).
    pub error_type: &'static str,
    pub attempts: u32,
}

impl Failed {
    pub fn new(event: Event, message: impl Into<String>, error_type: &'static str) -> Self {
        Self {
            event,
            message: message.into(),
            error_type,
            attempts: 1,
        }
    }
}
