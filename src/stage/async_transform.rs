//! The driver of I/O-bound transforms (`http`): every event of a batch is
//! its own unit through the control stack, `workers` at a time.

use super::drive::{Admitted, Concurrency, drive};
use super::intake::Intake;
use super::transform::{StageParts, emit_output};
use crate::components::{AsyncTransform, ComponentError, TransformOutput};
use crate::controls::{Attempt, StageControls};
use crate::core::{Acks, Batch, Event, Failed};
use futures_util::StreamExt;
use std::sync::Arc;

/// One event through an I/O-bound transform: breaker and rate limit for
/// this call, then attempts under timeout and retry.
async fn call_one(
    transform: &Arc<dyn AsyncTransform>,
    controls: &StageControls,
    event: Event,
) -> Result<Option<Event>, Failed> {
    let mut gated = controls.gate_in_place(vec![event]).await;
    if let Some(rejected) = gated.rejected.pop() {
        return Err(rejected);
    }
    let Some(event) = gated.batch.pop() else {
        return Ok(None); // rate-limited with `when_limited: drop`
    };
    let result = controls
        .run(
            gated.call,
            || async {
                match transform.call(&event).await {
                    Ok(out) => Attempt::Done(Ok(out)),
                    Err(e) if e.overloaded => Attempt::Overloaded(e.message, e.error_type),
                    Err(e) if e.retryable => Attempt::Retryable(e.message, e.error_type),
                    Err(e) => Attempt::Done(Err(e)),
                }
            },
            |r| r.is_ok(),
        )
        .await;
    match result {
        Ok((Ok(out), _)) => Ok(Some(out)),
        Ok((Err(e), attempts)) => Err(Failed {
            event,
            message: e.message,
            error_type: e.error_type,
            attempts,
        }),
        Err((message, error_type, attempts)) => Err(Failed {
            event,
            message,
            error_type,
            attempts,
        }),
    }
}

/// An I/O-bound transform: each batch's events are called `workers` at a
/// time (in input order when `ordered`), batches one after another.
pub async fn run_async_transform(
    transform: Arc<dyn AsyncTransform>,
    parts: StageParts,
) -> Result<(), ComponentError> {
    let StageParts {
        input,
        conc,
        ports,
        errors,
        metrics,
        controls,
    } = parts;
    let controls = Arc::new(controls);
    let work = move |batch: Batch, _: &Acks, _: Admitted| {
        let (transform, controls) = (transform.clone(), controls.clone());
        async move {
            let mut out = TransformOutput::with_ports(1, batch.len());
            let n = batch.len();
            let calls = futures_util::stream::iter(batch)
                .map(|event| call_one(&transform, &controls, event));
            let results: Vec<Result<Option<Event>, Failed>> = if conc.ordered {
                calls.buffered(conc.workers.max(1)).collect().await
            } else {
                calls.buffer_unordered(conc.workers.max(1)).collect().await
            };
            for r in results {
                match r {
                    Ok(Some(e)) => out.ports[0].push(e),
                    Ok(None) => out.rate_limited += 1,
                    Err(f) => out.failed.push(f),
                }
            }
            debug_assert_eq!(n, out.ports[0].len() + out.rate_limited + out.failed.len());
            out
        }
    };
    // Concurrency lives inside each batch; batches run one after another.
    let serial = Concurrency {
        workers: 1,
        ordered: true,
    };
    let (ports, errors, m) = (&ports, &errors, &metrics);
    let intake = Intake::unparked(input);
    drive(
        intake,
        serial,
        &metrics,
        work,
        |out: TransformOutput, acks| emit_output(out, acks, ports, errors, m),
    )
    .await;
    Ok(())
}
