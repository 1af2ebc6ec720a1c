//! The worker pool every stage runs on: up to `workers` units in flight,
//! results handed on in input order when `ordered`.

use super::intake::{Intake, Taken};
use crate::core::{Acks, Batch};
use crate::telemetry::ComponentMetrics;
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

/// Runs `work` on every batch from `input` and passes each result to `emit`
/// (one at a time, in input order when `ordered`) with the batch's
/// acknowledgements; `work` gets a copy of them for events the rate limit
/// parks. A panic in `work` is re-raised in the stage task, where the
/// supervisor reports it by name.
pub(super) async fn drive<T, W, WF, E, F>(
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
    let spawned = batches.map(move |batch: Taken| {
        // The stage holds a copy of the batch's acknowledgements until its
        // worker is done: if the stage panics meanwhile (a sibling worker
        // panicked), this copy drops while unwinding and fails the batch,
        // whatever the still-running worker does with it later.
        let held = batch.acks.clone();
        let job = timed(batch);
        async move {
            let result = match tokio::spawn(job).await {
                Ok(result) => result,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("worker task cancelled: {e}"),
            };
            drop(held);
            result
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
