//! `Failed`: an event a stage gave up on, with why; what `on_error` acts on.
//! `Sampled`: a failure with the start of input too large to keep whole.

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

/// A failure with the first bytes of the input it came from, for input not
/// kept whole (a line over `max_line_bytes`): routed, the sample is
/// `.error.sample`. A wrapper, not a field of `Failed`, so the stages that
/// build `Failed` by name need not know about it.
#[derive(Debug)]
pub struct Sampled {
    pub failed: Failed,
    pub sample: Option<String>,
}

impl From<Failed> for Sampled {
    fn from(failed: Failed) -> Self {
        Self {
            failed,
            sample: None,
        }
    }
}
