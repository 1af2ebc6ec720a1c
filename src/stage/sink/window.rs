//! The ordered window of a sink that submits batches and confirms them
//! later (`Sink::window`, kafka): the workers gate and encode; one loop
//! submits each encoded batch in input order (so the service sees records
//! in input order) and keeps up to `size` submitted batches awaiting
//! confirmation, handing each on in input order as it is confirmed. The
//! sink's service is never idle between batches, and a key's records keep
//! their order across batches.
//!
//! A batch that fails stops the window: nothing more is submitted, the
//! batches submitted after it are awaited (a failed kafka write discards
//! its producer, which fails whatever that producer still held), and then
//! it and every batch after it are written again one at a time in input
//! order through the stage's retry — those confirmed already too, since
//! their records now precede the failed batch's in the service. Nothing is
//! lost, and the last copy of each record stands in input order (what a
//! compacted topic or a consumer keeping the latest value sees); records
//! delivered before the failure may be stored twice. Then the window opens
//! again.

use super::super::drive::Admitted;
use super::super::intake::{Intake, Taken};
use super::{HandOn, Outcome, SinkBatch, attempt, write};
use crate::components::{Pending, Sink};
use crate::controls::{Attempt, StageControls};
use crate::core::{Acks, Batch};
use crate::stage::Concurrency;
use crate::telemetry::ComponentMetrics;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A submitted batch and how its first attempt ended.
type Confirmed = (SinkBatch, Acks, usize, Outcome);
type Confirming = Pin<Box<dyn Future<Output = Confirmed> + Send>>;

/// Runs the stage: `work` (gate, encode) on up to `workers` tasks, results
/// in input order (when `ordered`) into the window, on this task. Like
/// `drive`, but a batch leaves the stage (the queue's gauge, what a
/// shutdown deadline reports undelivered) when it is handed on, not when
/// it is submitted.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run<W, WF>(
    intake: Intake,
    conc: Concurrency,
    metrics: &ComponentMetrics,
    work: W,
    sink: &dyn Sink,
    controls: &StageControls,
    hand_on: &HandOn<'_>,
    size: usize,
) where
    W: Fn(Batch, &Acks, Admitted) -> WF + Send + Sync + 'static,
    WF: Future<Output = SinkBatch> + Send + 'static,
{
    let gauge = intake.input.gauge();
    let parking = intake.parking.clone();
    let work = Arc::new(work);
    let on_tasks = conc.workers > 1;
    let encode = move |Taken { batch, acks, fresh }: Taken| {
        let (metrics, work) = (metrics.clone(), work.clone());
        // As in `drive`: a copy of the acknowledgements held here fails the
        // batch if the stage panics while its worker runs.
        let held = acks.clone();
        let job = async move {
            // Released parked events were counted when they arrived.
            let n = if fresh { batch.len() } else { 0 };
            metrics.events_in.inc_by(n as u64);
            metrics.workers_busy.inc();
            let started = Instant::now();
            let admitted = if fresh {
                Admitted::No
            } else {
                Admitted::ByRateLimit
            };
            let b = work(batch, &acks, admitted).await;
            metrics.processing.observe(started.elapsed().as_secs_f64());
            metrics.workers_busy.dec();
            Ready { b, acks, n }
        };
        async move {
            let ready = if on_tasks {
                match tokio::spawn(job).await {
                    Ok(ready) => ready,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => panic!("worker task cancelled: {e}"),
                }
            } else {
                job.await
            };
            drop(held);
            ready
        }
    };
    let batches = futures_util::stream::unfold(intake, |mut intake| async move {
        intake.next().await.map(|b| (b, intake))
    });
    let encoded: Pin<Box<dyn futures_util::Stream<Item = Ready> + Send + '_>> = if conc.ordered {
        Box::pin(batches.map(encode).buffered(conc.workers.max(1)))
    } else {
        Box::pin(batches.map(encode).buffer_unordered(conc.workers.max(1)))
    };
    let left = |n: usize| {
        gauge.settle(n);
        if let Some(limiter) = parking.as_ref().and_then(|c| c.parking()) {
            gauge.set_parked(limiter.parked());
        }
    };
    confirm(encoded, sink, controls, hand_on, &left, size.max(1)).await;
}

/// A batch as the workers left it.
struct Ready {
    b: SinkBatch,
    acks: Acks,
    /// Its events counted in (0 for events released from parking).
    n: usize,
}

/// The window: submits in order, hands on in order, recovers from a
/// failure before submitting anything more.
async fn confirm(
    mut encoded: Pin<Box<dyn futures_util::Stream<Item = Ready> + Send + '_>>,
    sink: &dyn Sink,
    controls: &StageControls,
    hand_on: &HandOn<'_>,
    left: &(dyn Fn(usize) + Sync),
    size: usize,
) {
    let mut window: FuturesOrdered<Confirming> = FuturesOrdered::new();
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            Some(done) = window.next(), if !window.is_empty() => match done {
                (mut b, acks, n, Attempt::Done(Ok(refused))) => {
                    if let Some(call) = b.call.as_mut() {
                        call.record(true);
                    }
                    hand_on.batch(b, Some(Ok(refused)), acks).await;
                    left(n);
                }
                failed => recover(failed, &mut window, sink, controls, hand_on, left).await,
            },
            next = encoded.next(), if open && window.len() < size => match next {
                Some(e) => window.push_back(submit(sink, controls.attempt_timeout(), e).await),
                None => open = false,
            },
            else => break,
        }
    }
}

/// Submits `b` (nothing when it has no events) and returns what resolves
/// with its confirmation, under the stage's `timeout`.
async fn submit(sink: &dyn Sink, timeout: Option<Duration>, e: Ready) -> Confirming {
    let Ready { b, acks, n } = e;
    let pending: Option<Pending> = if b.encoded.events.is_empty() {
        None
    } else {
        Some(match sink.submit(&b.encoded).await {
            Ok(pending) => pending,
            Err(e) => Box::pin(std::future::ready(Err(e))),
        })
    };
    Box::pin(async move {
        let outcome = match (pending, timeout) {
            (None, _) => Attempt::Done(Ok(Vec::new())),
            (Some(p), None) => attempt(p.await.map(|()| Vec::new())),
            (Some(p), Some(limit)) => match tokio::time::timeout(limit, p).await {
                Ok(r) => attempt(r.map(|()| Vec::new())),
                Err(_) => Attempt::Retryable(
                    format!("timed out after {}", humantime::format_duration(limit)),
                    "timeout",
                ),
            },
        };
        (b, acks, n, outcome)
    })
}

/// `failed` is the oldest batch in the window and did not get through:
/// awaits the rest, then writes it and every later batch again in order.
async fn recover(
    failed: Confirmed,
    window: &mut FuturesOrdered<Confirming>,
    sink: &dyn Sink,
    controls: &StageControls,
    hand_on: &HandOn<'_>,
    left: &(dyn Fn(usize) + Sync),
) {
    let mut batches = vec![failed];
    while let Some(done) = window.next().await {
        batches.push(done);
    }
    tracing::info!(
        "a submitted batch was not written; writing it and the {} submitted after it again, in order",
        batches.len() - 1
    );
    for (mut b, acks, n, outcome) in batches {
        if b.encoded.events.is_empty() {
            hand_on.batch(b, None, acks).await;
            left(n);
            continue;
        }
        let call = b.call.take();
        let result = match outcome {
            Attempt::Done(Ok(refused)) => {
                // Delivered once already: its events are written whatever
                // this copy does; it restores their order after the
                // failed batch's.
                if let Err((message, _, _)) = write(sink, controls, call, &b.encoded, None).await {
                    tracing::warn!(
                        "{} events written before an earlier batch failed could not be written again after it (their order after it is not restored): {message}",
                        b.encoded.events.len()
                    );
                }
                Ok(refused)
            }
            first => write(sink, controls, call, &b.encoded, Some(first)).await,
        };
        hand_on.batch(b, Some(result), acks).await;
        left(n);
    }
}
