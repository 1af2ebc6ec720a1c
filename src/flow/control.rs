//! Pipeline-wide control shared by every task of one pipeline: the source
//! cancellation token and the first failure, which decides the exit code.

use crate::core::sync::LockExt;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
pub struct PipelineControl {
    pipeline: Arc<str>,
    stop_sources: CancellationToken,
    failure: Arc<Mutex<Option<String>>>,
}

impl PipelineControl {
    pub fn new() -> Self {
        Self::default()
    }

    /// A control whose log lines name the pipeline.
    pub fn for_pipeline(name: &str) -> Self {
        Self {
            pipeline: Arc::from(name),
            ..Self::default()
        }
    }

    /// Sources watch this token and end when it is cancelled.
    pub fn source_token(&self) -> CancellationToken {
        self.stop_sources.clone()
    }

    /// A clean stop: sources end, everything downstream drains.
    pub fn stop(&self) {
        self.stop_sources.cancel();
    }

    /// Records the first failure, then stops the pipeline (drained, exit 1).
    pub fn fail(&self, component: &str, message: impl Into<String>) {
        let message = message.into();
        tracing::error!(pipeline = %self.pipeline, component, "{message}; stopping the pipeline");
        let mut failure = self.failure.lock_unpoisoned();
        if failure.is_none() {
            *failure = Some(format!("component '{component}': {message}"));
        }
        drop(failure);
        self.stop();
    }

    pub fn failure(&self) -> Option<String> {
        self.failure.lock_unpoisoned().clone()
    }
}
