//! Spawns a pipeline's tasks and supervises them: a task that fails or
//! panics is reported with its component name and stops the pipeline
//! (drained, exit 1).

use super::buffer::BufferGauge;
use super::build::{Pieces, build};
use super::control::PipelineControl;
use crate::graph::Pipeline;
use crate::telemetry::Metrics;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tracing::Instrument;

pub struct RunningPipeline {
    pub name: String,
    control: PipelineControl,
    tasks: Vec<(
        String,
        JoinHandle<Result<(), crate::components::ComponentError>>,
    )>,
    queues: Vec<BufferGauge>,
}

impl RunningPipeline {
    /// Builds and spawns every task of `pipeline` (on the current runtime).
    pub fn start(pipeline: Pipeline, metrics: &Arc<Metrics>, taps: &super::tap::Taps) -> Self {
        Self::spawn(build(&pipeline, metrics, taps))
    }

    /// Spawns already-built pieces.
    pub fn spawn(pieces: Pieces) -> Self {
        let Pieces {
            name,
            control,
            tasks,
            queues,
        } = pieces;
        let tasks = tasks
            .into_iter()
            .map(|t| {
                // The span names the task in every log line it writes.
                let span =
                    tracing::info_span!("component", pipeline = %name, component = %t.component);
                let handle = tokio::spawn(t.future.instrument(span));
                (t.component, handle)
            })
            .collect();
        tracing::info!(pipeline = %name, "pipeline started");
        Self {
            name,
            control,
            tasks,
            queues,
        }
    }

    /// Stops the sources; everything downstream drains and ends.
    pub fn stop(&self) {
        self.control.stop();
    }

    pub fn control(&self) -> PipelineControl {
        self.control.clone()
    }

    /// Readers of this pipeline's input queues, for shutdown reports.
    pub fn queues(&self) -> Vec<BufferGauge> {
        self.queues.clone()
    }

    /// Waits for every task; `Err` carries the first failure.
    pub async fn wait(self) -> Result<(), String> {
        for (component, handle) in self.tasks {
            match handle.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.control.fail(&component, e.to_string()),
                Err(e) if e.is_panic() => {
                    let payload = e.into_panic();
                    let msg = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    self.control.fail(&component, format!("panicked: {msg}"));
                }
                Err(e) => self
                    .control
                    .fail(&component, format!("task ended abnormally: {e}")),
            }
        }
        match self.control.failure() {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}
