//! Process lifecycle for `flowgate run`: start every pipeline, serve the
//! endpoints, reload on SIGHUP, and on SIGINT/SIGTERM stop sources, drain
//! and flush within the shutdown timeout; a second signal exits at once
//! with 130.
//!
//! Reload: the files are read and validated again; an invalid set is
//! logged, counted (`flowgate_config_reloads_total{result="rejected"}`) and
//! ignored, so the old pipelines keep running. A valid set is applied by
//! difference per pipeline (see `RunningPipeline::apply`); pipelines new to
//! the set start, pipelines gone from it drain and stop. A pipeline added
//! back while its removed instance still drains starts anew, with fresh
//! sources, once that instance has finished (its sources are stopped for
//! good, and a second instance would contend for its ports and checkpoints).

use crate::flow::buffer::DiskRegistry;
use crate::graph::Pipeline;
use crate::http::api::Graphs;
use crate::http::{self, Status};
use crate::plan::Host;
use crate::runtime::RunningPipeline;
use crate::telemetry::Metrics;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

/// Reads and validates the pipeline files again; `Err` lists every problem.
/// It reads files and compiles programs, so it runs on a blocking thread.
pub type Loader = Arc<dyn Fn() -> Result<Vec<Pipeline>, Vec<String>> + Send + Sync>;

/// With `--watch`: a fingerprint of the configuration files (stat calls,
/// made on a blocking thread).
pub type Watch = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Runs blocking file work off the runtime's threads: a slow or hung
/// filesystem (NFS, a ConfigMap mount) must not stall the pipelines.
async fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

pub struct RunOptions {
    /// `None` disables the endpoints.
    pub metrics_address: Option<String>,
    pub shutdown_timeout: Duration,
    /// How SIGHUP re-reads the configuration.
    pub reload: Loader,
    /// With `--watch`: a fingerprint of the configuration files (names,
    /// sizes, modification times); a change that holds for one poll
    /// triggers a reload.
    pub watch: Option<Watch>,
    /// The fingerprint taken before the files were first read: a change
    /// made while the daemon starts is seen at the first poll.
    pub watch_loaded: Option<u64>,
    /// `--data-dir`: where pipelines keep state (checkpoints).
    pub data_dir: std::path::PathBuf,
}

/// How often `--watch` looks at the files. Polling (rather than inotify)
/// also sees changes on network filesystems and through symlink swaps,
/// as Kubernetes ConfigMaps do; it costs a few stat calls a second.
const WATCH_EVERY: Duration = Duration::from_millis(500);

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

type Waiting = Pin<Box<dyn Future<Output = (String, Result<(), String>)> + Send>>;

struct Daemon {
    metrics: Arc<Metrics>,
    host: Host,
    status: Status,
    running: HashMap<String, Arc<RunningPipeline>>,
    waits: FuturesUnordered<Waiting>,
    first_failure: Option<String>,
    /// Pipelines removed from the configuration, still draining.
    removed: HashSet<String>,
    /// Configurations of removed pipelines added back, started when the
    /// removed instance has finished.
    returning: HashMap<String, Pipeline>,
}

impl Daemon {
    fn start(&mut self, pipeline: Pipeline) {
        self.status.graphs.set(Graphs::laid_out(&pipeline));
        let running = Arc::new(RunningPipeline::start(pipeline, &self.host));
        let name = running.name.clone();
        let waiter = running.clone();
        self.running.insert(name.clone(), running);
        self.waits
            .push(Box::pin(async move { (name, waiter.wait().await) }));
    }

    fn finished(&mut self, name: String, result: Result<(), String>) {
        self.running.remove(&name);
        self.removed.remove(&name);
        self.status.graphs.remove(&name);
        match result {
            Ok(()) => tracing::info!(pipeline = %name, "pipeline finished"),
            Err(e) => {
                self.status.failed.store(true, Ordering::Relaxed);
                tracing::error!(pipeline = %name, "pipeline failed: {e}");
                self.first_failure.get_or_insert(e);
            }
        }
        if let Some(pipeline) = self.returning.remove(&name) {
            tracing::info!(pipeline = %name, "the removed instance has drained: starting the pipeline added back");
            self.start(pipeline);
        }
    }

    async fn reload(&mut self, loader: &Loader) {
        let load = loader.clone();
        let pipelines = match off_runtime(move || load()).await {
            Ok(p) => p,
            Err(problems) => {
                for p in &problems {
                    tracing::error!("reload rejected: {p}");
                }
                tracing::error!(
                    "the configuration has {} problem(s); the running pipelines are unchanged",
                    problems.len()
                );
                self.metrics.config_reload("rejected");
                return;
            }
        };
        let names: Vec<String> = pipelines.iter().map(|p| p.name.clone()).collect();
        let mut refused = false;
        for pipeline in pipelines {
            if self.removed.contains(&pipeline.name) {
                // Its sources are stopped for good: applying the new
                // configuration to it would start nothing.
                tracing::info!(pipeline = %pipeline.name, "added back while its removed instance drains: it starts once that has finished");
                self.returning.insert(pipeline.name.clone(), pipeline);
                continue;
            }
            match self.running.get(&pipeline.name) {
                Some(running) => {
                    let name = pipeline.name.clone();
                    let graph = Graphs::laid_out(&pipeline);
                    match running.apply(pipeline, &self.host) {
                        Ok(a) => {
                            self.status.graphs.set(graph);
                            tracing::info!(
                            pipeline = %name,
                            "reloaded: {} kept, {} replaced, {} added, {} removed",
                            a.kept,
                            a.replaced,
                            a.added,
                            a.removed
                            )
                        }
                        Err(e) => {
                            tracing::error!(pipeline = %name, "not reloaded: {e}; it keeps running unchanged");
                            self.metrics.config_reload("rejected");
                            refused = true;
                        }
                    }
                }
                None => self.start(pipeline),
            }
        }
        for (name, running) in &self.running {
            if !names.contains(name) {
                self.returning.remove(name);
                if self.removed.insert(name.clone()) {
                    tracing::info!(pipeline = %name, "removed from the configuration: draining and stopping");
                    running.stop();
                }
            }
        }
        if !refused {
            self.metrics.config_reload("applied");
        }
    }

    fn outcome(&self) -> Outcome {
        match &self.first_failure {
            Some(e) => Outcome::Failed(e.clone()),
            None => Outcome::Clean,
        }
    }

    fn undelivered(&self) -> usize {
        let mut total = 0;
        for (name, running) in &self.running {
            let n: usize = running.queues().iter().map(|q| q.events()).sum();
            if n > 0 {
                tracing::error!(pipeline = %name, "shutdown timeout: {n} events left undelivered in queues");
            }
            total += n;
        }
        total
    }
}

pub async fn run(pipelines: Vec<Pipeline>, options: RunOptions) -> Outcome {
    let disks = DiskRegistry::default();
    let outcome = run_with(pipelines, options, disks.clone()).await;
    // Every task is done: each disk buffer's thread writes its last sync
    // and ledger once the acknowledgements still in flight are gone. After
    // a deadline or a second signal, tasks may still hold some: what the
    // 10 ms commits recorded by then stands (the rest is redelivered).
    let wait = match outcome {
        Outcome::Interrupted | Outcome::TimedOut { .. } => Duration::from_millis(100),
        _ => DISK_CLOSE_TIMEOUT,
    };
    let late = off_runtime(move || disks.close(wait)).await;
    for dir in late {
        tracing::warn!(buffer = %dir.display(), "disk buffer still busy at exit: its newest acknowledgements will be delivered again");
    }
    outcome
}

/// How long a clean exit waits for disk buffers to write their ledgers.
const DISK_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

async fn run_with(pipelines: Vec<Pipeline>, options: RunOptions, disks: DiskRegistry) -> Outcome {
    // Signal handlers first: a SIGHUP or SIGTERM that arrives while the
    // daemon starts must not kill it with the default action.
    let (Ok(mut sigint), Ok(mut sigterm), Ok(mut sighup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return Outcome::Failed("cannot install signal handlers".into());
    };
    let metrics = Metrics::new();
    let status = Status::new(metrics.clone());
    if let Some(address) = &options.metrics_address {
        match http::serve(address, status.clone()).await {
            Ok(bound) => tracing::info!(
                "serving /metrics, /health, /ready, /api/pipelines and /ui on http://{bound}"
            ),
            Err(e) => {
                return Outcome::Failed(format!(
                    "cannot listen on --metrics-address {address}: {e}"
                ));
            }
        }
    }

    let host = Host {
        metrics: metrics.clone(),
        taps: status.taps.clone(),
        data_dir: options.data_dir.clone(),
        disks,
    };
    let mut d = Daemon {
        metrics,
        host,
        status,
        running: HashMap::new(),
        waits: FuturesUnordered::new(),
        first_failure: None,
        removed: HashSet::new(),
        returning: HashMap::new(),
    };
    for p in pipelines {
        d.start(p);
    }
    d.status.ready.store(true, Ordering::Relaxed);

    let mut watch_tick = tokio::time::interval(WATCH_EVERY);
    let fingerprint = |watch: &Option<Watch>| {
        let watch = watch.clone();
        async move {
            match watch {
                Some(f) => Some(off_runtime(move || f()).await),
                None => None,
            }
        }
    };
    let mut seen = match options.watch_loaded {
        Some(loaded) => Some(loaded),
        None => fingerprint(&options.watch).await,
    };
    let mut pending: Option<u64> = None;
    let first_signal = loop {
        tokio::select! {
            _ = watch_tick.tick(), if options.watch.is_some() => {
                let now = fingerprint(&options.watch).await;
                match (pending, now) {
                    // Changed, then unchanged for one poll: the edit is complete.
                    (Some(p), Some(n)) if p == n => {
                        pending = None;
                        seen = now;
                        tracing::info!("configuration files changed: reloading");
                        d.reload(&options.reload).await;
                    }
                    (_, n) if n != seen => pending = n,
                    _ => pending = None,
                }
            }
            next = d.waits.next() => match next {
                Some((name, result)) => d.finished(name, result),
                None => return d.outcome(),
            },
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            _ = sighup.recv() => {
                tracing::info!("SIGHUP received: reloading the configuration");
                d.reload(&options.reload).await;
            }
        }
    };
    tracing::info!(
        "{first_signal} received: stopping sources and draining {} pipeline(s) (deadline {:?}; a second signal exits at once)",
        d.running.len(),
        options.shutdown_timeout
    );
    // Nothing starts any more, not even a pipeline added back.
    d.returning.clear();
    for r in d.running.values() {
        r.stop();
    }
    let deadline = tokio::time::sleep(options.shutdown_timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = d.waits.next() => match next {
                Some((name, result)) => d.finished(name, result),
                None => return d.outcome(),
            },
            _ = sigint.recv() => return Outcome::Interrupted,
            _ = sigterm.recv() => return Outcome::Interrupted,
            _ = sighup.recv() => tracing::warn!("SIGHUP ignored: shutting down"),
            _ = &mut deadline => {
                let undelivered = d.undelivered();
                tracing::error!("shutdown timeout of {:?} expired with {undelivered} events undelivered", options.shutdown_timeout);
                return Outcome::TimedOut { undelivered };
            }
        }
    }
}
