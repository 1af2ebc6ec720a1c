//! The sink driver: batches (gathered to the sink's batch size) through
//! the gate and the encoder on the workers, then written with retries —
//! one write at a time in input order, or, for sinks whose writes may
//! overlap (`concurrent_writes`: services such as http and nats), up to
//! `workers` writes in flight, or, for sinks with a `window` (kafka),
//! submitted one at a time in input order with up to `window` of them
//! awaiting confirmation (`window`). Either way results are handed on
//! (written counted, failures routed, acknowledgements released) in input
//! order when `ordered`.

use super::drive::{Admitted, drive};
use super::intake::Intake;
use super::transform::StageParts;
use crate::components::{ComponentError, Encoded, Refused, Sink};
use crate::controls::breaker::Call;
use crate::controls::{Attempt, GaveUp, StageControls};
use crate::core::{Acks, Batch, Failed};
use crate::telemetry::DiscardReason;
use std::sync::Arc;

mod window;

/// A sink's encoded batch, with what the controls did to it.
struct SinkBatch {
    encoded: Encoded,
    /// The breaker's guard, until the write uses it.
    call: Option<Call>,
    rejected: Vec<Failed>,
    rate_limited: usize,
    /// The write's result when a worker wrote it already.
    written: Option<Result<Vec<Refused>, GaveUp>>,
}

/// One write through the attempt layers. Most write errors may pass (I/O,
/// 5xx) and are retried; `Permanent` ones (a 4xx) are not. `first` is the
/// outcome of a first attempt made already (a submitted batch), which
/// counts as attempt 1.
async fn write(
    sink: &dyn Sink,
    controls: &StageControls,
    call: Option<Call>,
    encoded: &Encoded,
    first: Option<Outcome>,
) -> Result<Vec<Refused>, GaveUp> {
    let mut first = first;
    controls
        .run(
            call,
            || {
                let known = first.take();
                async move {
                    match known {
                        Some(outcome) => outcome,
                        None => attempt(sink.write_refusing(encoded).await),
                    }
                }
            },
            |r| r.is_ok(),
        )
        .await
        .and_then(|(r, attempts)| r.map_err(|(m, t)| (m, t, attempts)))
}

/// How one attempt at a write ended, for the attempt layers.
type Outcome = Attempt<Result<Vec<Refused>, (String, &'static str)>>;

fn attempt(result: Result<Vec<Refused>, ComponentError>) -> Outcome {
    match result {
        Ok(refused) => Attempt::Done(Ok(refused)),
        Err(ComponentError::Permanent {
            message,
            error_type,
        }) => Attempt::Done(Err((message, error_type))),
        Err(e @ ComponentError::Overloaded { .. }) => {
            Attempt::Overloaded(e.to_string(), e.error_type())
        }
        Err(e) => Attempt::Retryable(e.to_string(), e.error_type()),
    }
}

/// Where a sink's results go: failures to `on_error`, the written count.
struct HandOn<'a> {
    errors: &'a crate::flow::on_error::ErrorHandler,
    written: &'a prometheus::IntCounter,
    metrics: &'a crate::telemetry::ComponentMetrics,
}

impl HandOn<'_> {
    /// Hands on a batch whose write (if it had anything to write) ended
    /// with `result`; dropping `acks` then acknowledges what was written.
    async fn batch(&self, b: SinkBatch, result: Option<Result<Vec<Refused>, GaveUp>>, acks: Acks) {
        let (errors_ref, written_ref) = (self.errors, self.written);
        self.metrics
            .discard(DiscardReason::RateLimited, b.rate_limited);
        errors_ref.handle_unwritten(b.rejected, &acks).await;
        let encoded = b.encoded;
        if let Some(result) = result.filter(|_| !encoded.events.is_empty()) {
            match result {
                Ok(refused) if refused.is_empty() => {
                    written_ref.inc_by(encoded.events.len() as u64)
                }
                Ok(refused) => {
                    written_ref.inc_by(encoded.events.len().saturating_sub(refused.len()) as u64);
                    let mut events: Vec<_> = encoded.events.into_iter().map(Some).collect();
                    let failed = refused
                        .into_iter()
                        .filter_map(|r| {
                            let event = events.get_mut(r.index)?.take()?;
                            Some(Failed::new(event, r.message, r.error_type))
                        })
                        .collect();
                    errors_ref.handle(failed, &acks).await;
                }
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
    }
}

pub async fn run_sink(
    sink: Arc<dyn Sink>,
    parts: StageParts,
    written: prometheus::IntCounter,
) -> Result<(), ComponentError> {
    let StageParts {
        input,
        conc,
        errors,
        metrics,
        controls,
        ..
    } = parts;
    let controls = Arc::new(controls);
    sink.start().await?;
    let intake = Intake::new(input, &controls).with_batching(sink.batching());
    let windowed = sink.window();
    let on_workers = sink.concurrent_writes() && windowed.is_none();
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
                let encoded = sink.encode(gated.batch);
                let (call, written) = if on_workers && !encoded.events.is_empty() {
                    let result = write(&*sink, &controls, gated.call, &encoded, None).await;
                    (None, Some(result))
                } else {
                    (gated.call, None)
                };
                SinkBatch {
                    encoded,
                    call,
                    rejected: gated.rejected,
                    rate_limited: gated.rate_limited,
                    written,
                }
            }
        }
    };
    let hand_on = HandOn {
        errors: &errors,
        written: &written,
        metrics: &metrics,
    };
    if let Some(size) = windowed {
        window::run(
            intake, conc, &metrics, work, &*sink, &controls, &hand_on, size,
        )
        .await;
        return sink.flush().await;
    }
    let (sink_ref, h, c) = (&sink, &hand_on, &controls);
    drive(
        intake,
        conc,
        &metrics,
        work,
        |mut b: SinkBatch, acks| async move {
            let result = match b.written.take() {
                Some(result) => Some(result),
                None if b.encoded.events.is_empty() => None,
                None => Some(write(&**sink_ref, c, b.call.take(), &b.encoded, None).await),
            };
            h.batch(b, result, acks).await;
        },
    )
    .await;
    sink.flush().await
}
