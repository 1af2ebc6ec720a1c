//! Drivers for transforms and sinks: pull batches from the stage's input
//! queue, pass them through the stage's controls (breaker, rate limit),
//! run the work on `workers` concurrent tasks (spread over the runtime's
//! threads), restore input order when `ordered`, and hand results on.
//! Metrics are updated once per batch.

use crate::components::{
    AsyncTransform, ComponentError, Encoded, Sink, Transform, TransformOutput,
};
use crate::controls::breaker::Call;
use crate::controls::{Attempt, StageControls};
use crate::core::Failed;
use crate::core::{Acks, Batch, Event};
use crate::flow::buffer::BufferReceiver;
use crate::flow::fanout::Fanout;
use crate::flow::on_error::ErrorHandler;
use crate::telemetry::{ComponentMetrics, DiscardReason};
use futures_util::StreamExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// How a stage runs its work.
#[derive(Debug, Clone, Copy)]
pub struct Concurrency {
    pub workers: usize,
    pub ordered: bool,
}

/// Whether a batch has passed the rate limit already (released from parking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    No,
    ByRateLimit,
}

/// Where a stage's batches come from: its input queue and, with a keyed
/// `wait` rate limit, the events the limiter parked and now lets go.
struct Intake {
    input: BufferReceiver,
    parking: Option<Arc<StageControls>>,
    /// Stop taking input while this many events are parked (the buffer size).
    cap: usize,
    input_done: bool,
    /// For sinks that send batches (`batch.max_events`, `batch.timeout`):
    /// fresh events are gathered up to the size or until the timeout.
    batching: Option<(usize, std::time::Duration)>,
    carry: (Batch, Acks),
}

impl Intake {
    fn new(input: BufferReceiver, controls: &Arc<StageControls>) -> Self {
        let cap = input.capacity();
        let parking = controls.parking().is_some().then(|| controls.clone());
        Self {
            input,
            parking,
            cap,
            input_done: false,
            batching: None,
            carry: (Vec::new(), Acks::none()),
        }
    }

    fn with_batching(mut self, batching: Option<(usize, std::time::Duration)>) -> Self {
        self.batching = batching.map(|(n, t)| (n.max(1), t));
        self
    }

    /// The next batch, gathered to the configured size when batching.
    async fn next(&mut self) -> Option<Taken> {
        let Some((max, timeout)) = self.batching else {
            return self.next_raw().await;
        };
        let (mut batch, mut acks) = std::mem::take(&mut self.carry);
        if batch.is_empty() {
            match self.next_raw().await {
                Some(t) if t.fresh => (batch, acks) = (t.batch, t.acks),
                other => return other,
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while batch.len() < max && !self.input_done {
            match tokio::time::timeout_at(deadline, self.input.recv()).await {
                Ok(Some((more, more_acks))) => {
                    batch.extend(more);
                    acks.merge(more_acks);
                }
                Ok(None) => self.input_done = true,
                Err(_) => break,
            }
        }
        if batch.len() > max {
            // Both parts hold the acknowledgements of what they mix.
            self.carry = (batch.split_off(max), acks.clone());
        }
        Some(Taken {
            batch,
            acks,
            fresh: true,
        })
    }

    /// The next batch and whether it is fresh from the queue (counted as
    /// received) or released from parking (counted already).
    async fn next_raw(&mut self) -> Option<Taken> {
        loop {
            let parked = self
                .parking
                .as_ref()
                .and_then(|c| c.parking())
                .filter(|l| l.parked() > 0);
            let Some(limiter) = parked else {
                if self.input_done {
                    return None;
                }
                match self.input.recv().await {
                    Some((batch, acks)) => return Some(Taken::fresh(batch, acks)),
                    None => {
                        self.input_done = true;
                        continue;
                    }
                }
            };
            let wait = limiter.next_ready_in().unwrap_or_default();
            let can_take = !self.input_done && limiter.parked() < self.cap;
            tokio::select! {
                b = self.input.recv(), if can_take => match b {
                    Some((batch, acks)) => return Some(Taken::fresh(batch, acks)),
                    None => self.input_done = true,
                },
                _ = tokio::time::sleep(wait) => {
                    let (batch, acks) = limiter.take_ready();
                    if !batch.is_empty() {
                        return Some(Taken { batch, acks, fresh: false });
                    }
                }
            }
        }
    }
}

/// A batch taken by a stage, with its acknowledgements; `fresh` when it
/// came from the queue (counted as received), not from parking.
struct Taken {
    batch: Batch,
    acks: Acks,
    fresh: bool,
}

impl Taken {
    fn fresh(batch: Batch, acks: Acks) -> Self {
        Self {
            batch,
            acks,
            fresh: true,
        }
    }
}

/// Runs `work` on every batch from `input` and passes each result to `emit`
/// (one at a time, in input order when `ordered`) with the batch's
/// acknowledgements; `work` gets a copy of them for events the rate limit
/// parks. A panic in `work` is re-raised in the stage task, where the
/// supervisor reports it by name.
async fn drive<T, W, WF, E, F>(
    intake: Intake,
    conc: Concurrency,
    metrics: &ComponentMetrics,
    work: W,
    emit: E,
) where
    T: Send + 'static,
    W: Fn(Batch, &Acks, Admitted) -> WF + Send + Sync + 'static,
    WF: Future<Output = T> + Send + 'static,
    E: Fn(T, Acks) -> F,
    F: Future<Output = ()>,
{
    let gauge = intake.input.gauge();
    let work = Arc::new(work);
    let timed = {
        let metrics = metrics.clone();
        move |Taken { batch, acks, fresh }: Taken| {
            let (metrics, work) = (metrics.clone(), work.clone());
            async move {
                // Released parked events were counted when they arrived.
                let n = if fresh { batch.len() } else { 0 };
                metrics.events_in.inc_by(n as u64);
                metrics.workers_busy.inc();
                let started = Instant::now();
                let result = work(
                    batch,
                    &acks,
                    if fresh {
                        Admitted::No
                    } else {
                        Admitted::ByRateLimit
                    },
                )
                .await;
                metrics.processing.observe(started.elapsed().as_secs_f64());
                metrics.workers_busy.dec();
                (result, acks, n)
            }
        }
    };
    // Parked events have left their batch but not the stage: the gauge
    // counts them apart, as the limiter reports them after each batch.
    let parking = intake.parking.clone();
    let emit = |(result, acks, n): (T, Acks, usize)| {
        let done = emit(result, acks);
        let (gauge, parking) = (gauge.clone(), parking.clone());
        async move {
            done.await;
            gauge.settle(n);
            if let Some(limiter) = parking.as_ref().and_then(|c| c.parking()) {
                gauge.set_parked(limiter.parked());
            }
        }
    };
    let mut intake = intake;
    if conc.workers <= 1 {
        while let Some(next) = intake.next().await {
            emit(timed(next).await).await;
        }
        return;
    }
    let batches = futures_util::stream::unfold(intake, |mut intake| async move {
        intake.next().await.map(|b| (b, intake))
    });
    let spawned = batches.map(move |batch| {
        let job = timed(batch);
        async move {
            match tokio::spawn(job).await {
                Ok(result) => result,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("worker task cancelled: {e}"),
            }
        }
    });
    if conc.ordered {
        let mut results = std::pin::pin!(spawned.buffered(conc.workers));
        while let Some(r) = results.next().await {
            emit(r).await;
        }
    } else {
        let mut results = std::pin::pin!(spawned.buffer_unordered(conc.workers));
        while let Some(r) = results.next().await {
            emit(r).await;
        }
    }
}

/// One output port of a transform and where it goes.
pub struct PortOutput {
    pub fanout: Fanout,
    /// Events sent to an unread `unmatched` port count as discarded.
    pub is_unmatched: bool,
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
                async move {
                    match tokio::task::spawn_blocking(move || {
                        let mut o = TransformOutput::with_ports(n_ports, b.len());
                        t.process(b, &mut o);
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
async fn emit_output(
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
    let intake = Intake {
        input,
        parking: None,
        cap: 0,
        input_done: false,
        batching: None,
        carry: (Vec::new(), Acks::none()),
    };
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
