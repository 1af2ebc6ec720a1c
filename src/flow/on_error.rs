//! `on_error` for one stage: what happens to events it failed on.

use super::control::PipelineControl;
use super::fanout::Fanout;
use crate::config::controls::OnError;
use crate::core::{self, Acks, Failed, Sampled};
use crate::telemetry::{ComponentMetrics, DiscardReason};

/// Applies the stage's `on_error` to failed events, per batch.
pub struct ErrorHandler {
    pub name: String,
    pub on_error: OnError,
    /// The `<name>.errors` output (with `on_error: route`).
    pub errors: Option<Fanout>,
    pub metrics: ComponentMetrics,
    pub control: PipelineControl,
}

impl ErrorHandler {
    /// `acks` are those of the batch the failures came from. Dropping a
    /// failure is a configured rule discarding it: the source may
    /// acknowledge it (redelivering cannot fix a bad event).
    pub async fn handle(&self, failed: Vec<Failed>, acks: &Acks) {
        if failed.is_empty() {
            return;
        }
        let failed = failed.into_iter().map(Sampled::from).collect();
        self.handle_as(failed, acks, false).await
    }

    /// As `handle`, for failures that may carry a sample of their input
    /// (`.error.sample` when routed).
    pub async fn handle_sampled(&self, failed: Vec<Sampled>, acks: &Acks) {
        self.handle_as(failed, acks, false).await
    }

    /// For events a sink could not write though they may be fine (its
    /// service failed past the retries): unless they are routed, their
    /// acknowledgements fail so the source can redeliver or refuse them.
    pub async fn handle_unwritten(&self, failed: Vec<Failed>, acks: &Acks) {
        if failed.is_empty() {
            return;
        }
        let failed = failed.into_iter().map(Sampled::from).collect();
        self.handle_as(failed, acks, true).await
    }

    async fn handle_as(&self, failed: Vec<Sampled>, acks: &Acks, unwritten: bool) {
        if failed.is_empty() {
            return;
        }
        let mut by_type: Vec<(&'static str, usize)> = Vec::new();
        for Sampled { failed: f, .. } in &failed {
            match by_type.iter_mut().find(|(t, _)| *t == f.error_type) {
                Some((_, n)) => *n += 1,
                None => by_type.push((f.error_type, 1)),
            }
        }
        for (t, n) in by_type {
            self.metrics.errors(t, n);
        }
        match (self.on_error, &self.errors) {
            (OnError::Route, Some(out)) => {
                let batch = failed
                    .into_iter()
                    .map(|Sampled { failed: f, sample }| {
                        core::with_error(
                            f.event,
                            &f.message,
                            &self.name,
                            f.attempts,
                            sample.as_deref(),
                        )
                    })
                    .collect();
                if let Err(lost) = out.send(batch, acks.clone()).await {
                    self.metrics.discard(DiscardReason::Error, lost.0);
                }
            }
            (OnError::Stop, _) => {
                acks.fail();
                let first = &failed[0].failed;
                self.metrics.discard(DiscardReason::Error, failed.len());
                self.control.fail(
                    &self.name,
                    format!("{} error: {}", first.error_type, first.message),
                );
            }
            _ => {
                if unwritten {
                    acks.fail();
                }
                let first = &failed[0].failed;
                tracing::debug!(component = %self.name, "dropping {} failed events; first: {}", failed.len(), first.message);
                self.metrics.discard(DiscardReason::Error, failed.len());
            }
        }
    }
}
