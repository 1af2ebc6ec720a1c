//! Drivers for transforms and sinks: pull batches from the stage's input
//! queue, run the work on `workers` concurrent tasks (spread over the
//! runtime's threads), restore input order when `ordered`, and hand results
//! on. Metrics are updated once per batch.

use super::buffer::BufferReceiver;
use super::errors::{ErrorHandler, Failed};
use super::fanout::Fanout;
use crate::components::{ComponentError, Encoded, Sink, Transform, TransformOutput};
use crate::event::Batch;
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

/// Runs `work` on every batch from `input` and passes each result to `emit`
/// (one at a time, in input order when `ordered`). A panic in `work` is
/// re-raised in the stage task, where the supervisor reports it by name.
async fn drive<T, W, E, F>(
    mut input: BufferReceiver,
    conc: Concurrency,
    metrics: &ComponentMetrics,
    work: W,
    mut emit: E,
) where
    T: Send + 'static,
    W: Fn(Batch) -> T + Send + Sync + 'static,
    E: FnMut(T) -> F,
    F: Future<Output = ()>,
{
    let gauge = input.gauge();
    let timed = {
        let metrics = metrics.clone();
        move |batch: Batch| {
            let n = batch.len();
            metrics.events_in.inc_by(n as u64);
            metrics.workers_busy.inc();
            let started = Instant::now();
            let result = work(batch);
            metrics.processing.observe(started.elapsed().as_secs_f64());
            metrics.workers_busy.dec();
            (result, n)
        }
    };
    let mut emit = move |(result, n): (T, usize)| {
        let done = emit(result);
        let gauge = gauge.clone();
        async move {
            done.await;
            gauge.settle(n);
        }
    };
    if conc.workers <= 1 {
        while let Some(batch) = input.recv().await {
            emit(timed(batch)).await;
        }
        return;
    }
    let work = Arc::new(timed);
    let batches =
        futures_util::stream::unfold(
            input,
            |mut rx| async move { rx.recv().await.map(|b| (b, rx)) },
        );
    let spawned = batches.map(move |batch| {
        let work = work.clone();
        async move {
            match tokio::spawn(async move { work(batch) }).await {
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

pub async fn run_transform(
    transform: Arc<dyn Transform>,
    input: BufferReceiver,
    conc: Concurrency,
    ports: Vec<PortOutput>,
    errors: ErrorHandler,
    metrics: ComponentMetrics,
) -> Result<(), ComponentError> {
    let n_ports = ports.len();
    let work = move |batch: Batch| {
        let mut out = TransformOutput::with_ports(n_ports, batch.len());
        transform.process(batch, &mut out);
        out
    };
    let (ports, errors, m) = (&ports, &errors, &metrics);
    drive(
        input,
        conc,
        &metrics,
        work,
        |out: TransformOutput| async move {
            m.discard(DiscardReason::Filtered, out.filtered);
            for (port, batch) in ports.iter().zip(out.ports) {
                if batch.is_empty() {
                    continue;
                }
                if port.is_unmatched && !port.fanout.has_consumers() {
                    m.discard(DiscardReason::Unmatched, batch.len());
                    continue;
                }
                if let Err(lost) = port.fanout.send(batch).await {
                    m.discard(DiscardReason::Error, lost.0);
                }
            }
            errors.handle(out.failed).await;
        },
    )
    .await;
    Ok(())
}

pub async fn run_sink(
    sink: Arc<dyn Sink>,
    input: BufferReceiver,
    conc: Concurrency,
    written: prometheus::IntCounter,
    errors: ErrorHandler,
    metrics: ComponentMetrics,
) -> Result<(), ComponentError> {
    let encoder = sink.clone();
    let work = move |batch: Batch| encoder.encode(batch);
    let (sink_ref, errors_ref, written_ref) = (&sink, &errors, &written);
    drive(input, conc, &metrics, work, |encoded: Encoded| async move {
        match sink_ref.write(&encoded).await {
            Ok(()) => written_ref.inc_by(encoded.events.len() as u64),
            Err(e) => {
                let message = e.to_string();
                let failed = encoded
                    .events
                    .into_iter()
                    .map(|ev| Failed::new(ev, message.clone(), "io"))
                    .collect();
                errors_ref.handle(failed).await;
            }
        }
        errors_ref.handle(encoded.failed).await;
    })
    .await;
    sink.flush().await
}
