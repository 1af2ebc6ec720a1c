//! The driver of CPU-bound transforms (filter, map, route): batches through
//! the gate, then attempts on the stage's workers; results to the ports.

use super::drive::{Admitted, Concurrency, drive};
use super::intake::Intake;
use crate::components::{ComponentError, Transform, TransformOutput};
use crate::controls::breaker::Call;
use crate::controls::{Attempt, StageControls};
use crate::core::{Acks, Batch, Failed};
use crate::expr::interruptible;
use crate::flow::buffer::BufferReceiver;
use crate::flow::fanout::Fanout;
use crate::flow::on_error::ErrorHandler;
use crate::telemetry::{ComponentMetrics, DiscardReason};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One output port of a transform and where it goes.
pub struct PortOutput {
    pub fanout: Fanout,
    /// Events sent to an unread `unmatched` port count as discarded.
    pub is_unmatched: bool,
}

/// Sets the interrupt flag of an attempt's jq programs when the attempt's
/// future goes away.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One attempt of a CPU-bound transform on a batch. With a timeout it runs
/// on a blocking thread so the timer can fire; a retry needs a copy of the
/// batch, made only when retries are configured.
async fn attempt_transform(
    transform: &Arc<dyn Transform>,
    controls: &StageControls,
    (batch, call): (Batch, Option<Call>),
    out: &mut TransformOutput,
    n_ports: usize,
) {
    if !controls.guards_attempts() {
        transform.process(batch, out);
        return;
    }
    let copy_for_errors = batch.clone();
    let result = controls
        .run(
            call,
            || {
                let (t, b) = (transform.clone(), batch.clone());
                let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
                let flag = stop.0.clone();
                async move {
                    // Dropped when the attempt ends or its timeout drops it;
                    // either way the blocking thread's jq stops.
                    let _stop = stop;
                    match tokio::task::spawn_blocking(move || {
                        let mut o = TransformOutput::with_ports(n_ports, b.len());
                        interruptible(flag, || t.process(b, &mut o));
                        o
                    })
                    .await
                    {
                        Ok(mut o) => match o.attempt_failure.take() {
                            Some((message, error_type)) => Attempt::Retryable(message, error_type),
                            None => Attempt::Done(o),
                        },
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(e) => Attempt::Retryable(e.to_string(), "cancelled"),
                    }
                }
            },
            |o: &TransformOutput| o.failed.is_empty(),
        )
        .await;
    match result {
        Ok((o, _)) => {
            out.ports = o.ports;
            out.failed.extend(o.failed);
            out.filtered += o.filtered;
            out.unmatched += o.unmatched;
        }
        Err((message, error_type, attempts)) => {
            out.failed
                .extend(copy_for_errors.into_iter().map(|e| Failed {
                    event: e,
                    message: message.clone(),
                    error_type,
                    attempts,
                }))
        }
    }
}

/// What every transform driver is given besides the transform itself.
pub struct StageParts {
    pub input: BufferReceiver,
    pub conc: Concurrency,
    pub ports: Vec<PortOutput>,
    pub errors: ErrorHandler,
    pub metrics: ComponentMetrics,
    pub controls: StageControls,
}

/// Hands a transform's results on: each port's events to its consumers
/// (an unread `unmatched` port counts them as discarded), failures to
/// `on_error`, and the discard counters, once per batch.
pub(super) async fn emit_output(
    out: TransformOutput,
    acks: Acks,
    ports: &[PortOutput],
    errors: &ErrorHandler,
    m: &ComponentMetrics,
) {
    m.discard(DiscardReason::Filtered, out.filtered);
    m.discard(DiscardReason::RateLimited, out.rate_limited);
    for (port, batch) in ports.iter().zip(out.ports) {
        if batch.is_empty() {
            continue;
        }
        if port.is_unmatched && !port.fanout.has_consumers() {
            m.discard(DiscardReason::Unmatched, batch.len());
            continue;
        }
        if let Err(lost) = port.fanout.send(batch, acks.clone()).await {
            m.discard(DiscardReason::Error, lost.0);
        }
    }
    errors.handle(out.failed, &acks).await;
}

pub async fn run_transform(
    transform: Arc<dyn Transform>,
    parts: StageParts,
) -> Result<(), ComponentError> {
    if let Some(state) = transform.stateful() {
        return super::stateful::run_stateful(state, parts).await;
    }
    let StageParts {
        input,
        conc,
        ports,
        errors,
        metrics,
        controls,
    } = parts;
    let n_ports = ports.len();
    let controls = Arc::new(controls);
    let intake = Intake::new(input, &controls);
    let work = move |batch: Batch, acks: &Acks, admitted: Admitted| {
        let (transform, controls) = (transform.clone(), controls.clone());
        let acks = controls.parking().is_some().then(|| acks.clone());
        async move {
            let mut out = TransformOutput::with_ports(n_ports, batch.len());
            let acks = acks.unwrap_or_default();
            let gated = controls
                .gate(batch, &acks, admitted == Admitted::ByRateLimit)
                .await;
            out.failed = gated.rejected;
            out.rate_limited = gated.rate_limited;
            if !gated.batch.is_empty() {
                let unit = (gated.batch, gated.call);
                attempt_transform(&transform, &controls, unit, &mut out, n_ports).await;
            }
            out
        }
    };
    let (ports, errors, m) = (&ports, &errors, &metrics);
    drive(
        intake,
        conc,
        &metrics,
        work,
        |out: TransformOutput, acks| emit_output(out, acks, ports, errors, m),
    )
    .await;
    Ok(())
}
