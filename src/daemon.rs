//! Process lifecycle for `flowgate run`: start every pipeline, serve the
//! endpoints, and on SIGINT/SIGTERM stop sources, drain and flush within the
//! shutdown timeout; a second signal exits at once with 130.

use crate::graph::Pipeline;
use crate::http::{self, Status};
use crate::runtime::RunningPipeline;
use crate::telemetry::Metrics;
use futures_util::future::join_all;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

pub struct RunOptions {
    /// `None` disables the endpoints.
    pub metrics_address: Option<String>,
    pub shutdown_timeout: Duration,
}

/// How the run ended, mapped to the exit code by the CLI.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every pipeline finished or drained cleanly.
    Clean,
    /// A pipeline failed (on_error: stop, a panic, an I/O error), or the
    /// metrics address could not be bound.
    Failed(String),
    /// The shutdown deadline passed with events still in flight.
    TimedOut { undelivered: usize },
    /// A second signal asked to exit at once.
    Interrupted,
}

pub async fn run(pipelines: Vec<Pipeline>, options: RunOptions) -> Outcome {
    let metrics = Metrics::new();
    let status = Status::new(metrics.clone());
    if let Some(address) = &options.metrics_address {
        match http::serve(address, status.clone()).await {
            Ok(bound) => tracing::info!("serving /metrics, /health and /ready on http://{bound}"),
            Err(e) => {
                return Outcome::Failed(format!(
                    "cannot listen on --metrics-address {address}: {e}"
                ));
            }
        }
    }
    let (Ok(mut sigint), Ok(mut sigterm), Ok(mut sighup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return Outcome::Failed("cannot install signal handlers".into());
    };

    let running: Vec<RunningPipeline> = pipelines
        .into_iter()
        .map(|p| RunningPipeline::start(p, &metrics, &status.taps))
        .collect();
    let controls: Vec<_> = running.iter().map(|r| r.control()).collect();
    let names: Vec<String> = running.iter().map(|r| r.name.clone()).collect();
    let queue_readers: Vec<_> = running.iter().map(|r| r.queues()).collect();
    status.ready.store(true, Ordering::Relaxed);

    let failed = status.failed.clone();
    let all_done = join_all(running.into_iter().map(|r| {
        let failed = failed.clone();
        async move {
            let name = r.name.clone();
            let result = r.wait().await;
            match &result {
                Ok(()) => tracing::info!(pipeline = %name, "pipeline finished"),
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    tracing::error!(pipeline = %name, "pipeline failed: {e}");
                }
            }
            result
        }
    }));
    tokio::pin!(all_done);

    let first_signal = loop {
        tokio::select! {
            results = &mut all_done => return outcome(results),
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            _ = sighup.recv() => tracing::warn!("SIGHUP received: this version does not reload configuration; restart flowgate to apply changes"),
        }
    };
    tracing::info!(
        "{first_signal} received: stopping sources and draining {} pipeline(s) (deadline {:?}; a second signal exits at once)",
        names.len(),
        options.shutdown_timeout
    );
    for c in &controls {
        c.stop();
    }
    let deadline = tokio::time::sleep(options.shutdown_timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            results = &mut all_done => return outcome(results),
            _ = sigint.recv() => return Outcome::Interrupted,
            _ = sigterm.recv() => return Outcome::Interrupted,
            _ = sighup.recv() => {}
            _ = &mut deadline => {
                let undelivered: usize = queue_readers.iter().flatten().map(|q| q.events()).sum();
                for (name, queues) in names.iter().zip(&queue_readers) {
                    let n: usize = queues.iter().map(|q| q.events()).sum();
                    if n > 0 {
                        tracing::error!(pipeline = %name, "shutdown timeout: {n} events left undelivered in queues");
                    }
                }
                tracing::error!("shutdown timeout of {:?} expired with {undelivered} events undelivered", options.shutdown_timeout);
                return Outcome::TimedOut { undelivered };
            }
        }
    }
}

fn outcome(results: Vec<Result<(), String>>) -> Outcome {
    match results.into_iter().find_map(Result::err) {
        Some(e) => Outcome::Failed(e),
        None => Outcome::Clean,
    }
}
