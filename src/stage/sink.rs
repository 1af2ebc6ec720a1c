//! The sink driver: batches (gathered to the sink's batch size) through
//! the gate and the encoder on the workers, then written with retries.

use super::drive::{Admitted, Concurrency, drive};
use super::intake::Intake;
use crate::components::{ComponentError, Encoded, Sink};
use crate::controls::breaker::Call;
use crate::controls::{Attempt, StageControls};
use crate::core::{Acks, Batch, Failed};
use crate::flow::buffer::BufferReceiver;
use crate::flow::on_error::ErrorHandler;
use crate::telemetry::{ComponentMetrics, DiscardReason};
use std::sync::Arc;

/// A sink's encoded batch, with what the controls did to it.
struct SinkBatch {
    encoded: Encoded,
    call: Option<Call>,
    rejected: Vec<Failed>,
    rate_limited: usize,
}

pub async fn run_sink(
    sink: Arc<dyn Sink>,
    input: BufferReceiver,
    conc: Concurrency,
    written: prometheus::IntCounter,
    errors: ErrorHandler,
    metrics: ComponentMetrics,
    controls: StageControls,
) -> Result<(), ComponentError> {
    let controls = Arc::new(controls);
    let intake = Intake::new(input, &controls).with_batching(sink.batching());
    let work = {
        let (sink, controls) = (sink.clone(), controls.clone());
        move |batch: Batch, acks: &Acks, admitted: Admitted| {
            let (sink, controls) = (sink.clone(), controls.clone());
            let acks = controls.parking().is_some().then(|| acks.clone());
            async move {
                let acks = acks.unwrap_or_default();
                let gated = controls
                    .gate(batch, &acks, admitted == Admitted::ByRateLimit)
                    .await;
                SinkBatch {
                    encoded: sink.encode(gated.batch),
                    call: gated.call,
                    rejected: gated.rejected,
                    rate_limited: gated.rate_limited,
                }
            }
        }
    };
    let (sink_ref, errors_ref, written_ref, m, c) = (&sink, &errors, &written, &metrics, &controls);
    drive(
        intake,
        conc,
        &metrics,
        work,
        |b: SinkBatch, acks| async move {
            m.discard(DiscardReason::RateLimited, b.rate_limited);
            errors_ref.handle_unwritten(b.rejected, &acks).await;
            let encoded = b.encoded;
            if !encoded.events.is_empty() {
                // Most write errors may pass (I/O, 5xx) and are retried;
                // `Permanent` ones (a 4xx) are not.
                let result = c
                    .run(
                        b.call,
                        || async {
                            match sink_ref.write(&encoded).await {
                                Ok(()) => Attempt::Done(Ok(())),
                                Err(ComponentError::Permanent {
                                    message,
                                    error_type,
                                }) => Attempt::Done(Err((message, error_type))),
                                Err(e) => Attempt::Retryable(e.to_string(), e.error_type()),
                            }
                        },
                        |r| r.is_ok(),
                    )
                    .await
                    .and_then(|(r, attempts)| r.map_err(|(m, t)| (m, t, attempts)));
                match result {
                    Ok(()) => written_ref.inc_by(encoded.events.len() as u64),
                    Err((message, error_type, attempts)) => {
                        let failed = encoded
                            .events
                            .into_iter()
                            .map(|ev| Failed {
                                event: ev,
                                message: message.clone(),
                                error_type,
                                attempts,
                            })
                            .collect();
                        errors_ref.handle_unwritten(failed, &acks).await;
                    }
                }
            }
            errors_ref.handle(encoded.failed, &acks).await;
            // Dropping `acks` here acknowledges what this sink wrote.
        },
    )
    .await;
    sink.flush().await
}
