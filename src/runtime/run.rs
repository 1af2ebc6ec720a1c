//! Spawns a pipeline's tasks and supervises them: a task that fails or
//! panics is reported with its component name and stops the pipeline
//! (drained, exit 1). A running pipeline can be changed in place
//! (`apply`): unchanged components keep running, changed ones are replaced
//! once their old instance has drained, removed ones drain and stop.

use crate::components::ComponentError;
use crate::core::sync::LockExt;
use crate::flow::buffer::{BufferGauge, BufferSender};
use crate::flow::control::PipelineControl;
use crate::graph::Pipeline;
use crate::graph::diff::{Change, diff};
use crate::plan::Host;
use crate::plan::build::{Outputs, Pieces, Reuse, build_reusing};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

type Handle = JoinHandle<Result<(), ComponentError>>;

struct State {
    /// The configuration running now (for the next reload's diff).
    pipeline: Option<Pipeline>,
    /// (component, is a source, task) for every task not yet awaited.
    handles: Vec<(String, bool, Handle)>,
    masters: HashMap<String, BufferSender>,
    outputs: Outputs,
    source_stops: HashMap<String, CancellationToken>,
    /// Cancelled when a component's current task has ended, however it
    /// ended: a replacement waits on it even while `wait` holds the handle.
    ended: HashMap<String, CancellationToken>,
    queues: Vec<BufferGauge>,
    /// Set once the sources are done: no more reloads.
    finishing: bool,
}

pub struct RunningPipeline {
    pub name: String,
    control: PipelineControl,
    state: Mutex<State>,
}

/// What a reload did to one pipeline.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub kept: usize,
    pub replaced: usize,
    pub added: usize,
    pub removed: usize,
}

fn spawn_named(
    pipeline: &str,
    component: &str,
    future: crate::plan::build::TaskFuture,
) -> (Handle, CancellationToken) {
    // The span names the task in every log line it writes.
    let span = tracing::info_span!("component", pipeline = %pipeline, component = %component);
    let ended = CancellationToken::new();
    let guard = ended.clone().drop_guard();
    let task = async move {
        let _ended = guard;
        future.await
    };
    (tokio::spawn(task.instrument(span)), ended)
}

impl RunningPipeline {
    /// Builds and spawns every task of `pipeline` (on the current runtime).
    ///
    /// A first start is a reload from the empty pipeline: the same `apply`
    /// path adds every component.
    pub fn start(pipeline: Pipeline, host: &Host) -> Self {
        let name = pipeline.name.clone();
        let empty = Pipeline {
            name: name.clone(),
            file: pipeline.file.clone(),
            components: Vec::new(),
            tests: Vec::new(),
        };
        let state = State {
            pipeline: Some(empty),
            handles: Vec::new(),
            ended: HashMap::new(),
            masters: HashMap::new(),
            outputs: HashMap::new(),
            source_stops: HashMap::new(),
            queues: Vec::new(),
            finishing: false,
        };
        let running = Self {
            control: PipelineControl::for_pipeline(&name),
            name,
            state: Mutex::new(state),
        };
        running
            .apply(pipeline, host)
            .expect("an empty pipeline accepts any valid pipeline");
        tracing::info!(pipeline = %running.name, "pipeline started");
        running
    }

    /// Spawns already-built pieces.
    pub fn spawn(pieces: Pieces) -> Self {
        let Pieces {
            name,
            control,
            tasks,
            queues,
            masters,
            outputs,
            source_stops,
            ..
        } = pieces;
        let mut ended = HashMap::new();
        let handles = tasks
            .into_iter()
            .map(|t| {
                let is_source = source_stops.contains_key(&t.component);
                let (handle, done) = spawn_named(&name, &t.component, t.future);
                ended.insert(t.component.clone(), done);
                (t.component, is_source, handle)
            })
            .collect();
        tracing::info!(pipeline = %name, "pipeline started");
        let state = State {
            pipeline: None,
            handles,
            ended,
            masters,
            outputs,
            source_stops,
            queues,
            finishing: false,
        };
        Self {
            name,
            control,
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock_unpoisoned()
    }

    /// Stops the sources; everything downstream drains and ends.
    pub fn stop(&self) {
        self.control.stop();
    }

    pub fn control(&self) -> PipelineControl {
        self.control.clone()
    }

    /// Readers of this pipeline's input queues, for shutdown reports.
    pub fn queues(&self) -> Vec<BufferGauge> {
        self.lock().queues.clone()
    }

    /// Applies a new configuration of this pipeline by difference.
    pub fn apply(&self, new: Pipeline, host: &Host) -> Result<Applied, String> {
        let mut st = self.lock();
        if st.finishing {
            return Err("the pipeline is finishing; it takes no new configuration".into());
        }
        // New sources would get stop signals cancelled already (children
        // of the pipeline's) and end at once: nothing would restart.
        if self.control.source_token().is_cancelled() {
            return Err("the pipeline is stopping; it takes no new configuration".into());
        }
        let old = st
            .pipeline
            .take()
            .ok_or("the pipeline was not started from a configuration")?;
        let changes = diff(&old, &new);
        // Standard input cannot be handed from one reader to another
        // without losing what the old reader holds.
        if let Some(c) = changes.iter().find(|c| {
            c.type_name == "stdin" && matches!(c.change, Change::Replace(_) | Change::Remove)
        }) {
            st.pipeline = Some(old);
            return Err(format!(
                "source '{}' reads standard input, which cannot be replaced or removed without a restart",
                c.name
            ));
        }
        let kept: HashSet<String> = changes
            .iter()
            .filter(|c| c.change == Change::Keep)
            .map(|c| c.name.clone())
            .collect();
        let reuse = Reuse {
            kept,
            masters: &st.masters,
            control: self.control.clone(),
        };
        let pieces = build_reusing(&new, host, &reuse);
        // Kept components send to the new consumers from their next batch on.
        for (component, port, targets) in pieces.rewire {
            if let Some(f) = st
                .outputs
                .get(&component)
                .and_then(|o| o.iter().find(|(p, _)| *p == port))
            {
                f.1.set_consumers(targets);
            }
        }
        let mut applied = Applied::default();
        let mut retired: HashMap<String, Handle> = HashMap::new();
        // When `wait` holds a retired task's handle, its end is seen here.
        let mut retired_ended: HashMap<String, CancellationToken> = HashMap::new();
        for c in &changes {
            match c.change {
                Change::Keep => applied.kept += 1,
                Change::Add => applied.added += 1,
                Change::Replace(_) | Change::Remove => {
                    if matches!(c.change, Change::Remove) {
                        applied.removed += 1;
                    } else {
                        applied.replaced += 1;
                    }
                    // Nothing new reaches the old instance; it drains what it has.
                    st.masters.remove(&c.name);
                    st.outputs.remove(&c.name);
                    if let Some(stop) = st.source_stops.remove(&c.name) {
                        stop.cancel();
                    }
                    if let Some(i) = st.handles.iter().position(|(n, _, _)| *n == c.name) {
                        let (name, _, h) = st.handles.swap_remove(i);
                        retired.insert(name, h);
                    } else if let Some(ended) = st.ended.get(&c.name) {
                        retired_ended.insert(c.name.clone(), ended.clone());
                    }
                    st.ended.remove(&c.name);
                }
            }
        }
        for task in pieces.tasks {
            let is_source = pieces.source_stops.contains_key(&task.component);
            // A replacement starts once the old instance has handed on its
            // events, so order within the component is kept; meanwhile its
            // queue fills, which is backpressure, not loss.
            let future: crate::plan::build::TaskFuture = match retired.remove(&task.component) {
                Some(old) => {
                    let name = task.component.clone();
                    let next = task.future;
                    Box::pin(async move {
                        if let Ok(Err(e)) | Err(e) =
                            old.await.map_err(|e| ComponentError::Other(e.to_string()))
                        {
                            tracing::warn!(component = %name, "the replaced instance ended with: {e}");
                        }
                        next.await
                    })
                }
                None => match retired_ended.remove(&task.component) {
                    Some(ended) => {
                        let next = task.future;
                        Box::pin(async move {
                            ended.cancelled().await;
                            next.await
                        })
                    }
                    None => task.future,
                },
            };
            let (handle, ended) = spawn_named(&self.name, &task.component, future);
            st.ended.insert(task.component.clone(), ended);
            st.handles.push((task.component, is_source, handle));
        }
        // Removed components drain on their own; keep waiting for them.
        for (name, h) in retired {
            st.handles.push((name, false, h));
        }
        st.masters.extend(pieces.masters);
        st.outputs.extend(pieces.outputs);
        st.source_stops.extend(pieces.source_stops);
        st.queues.extend(pieces.queues);
        st.pipeline = Some(new);
        Ok(applied)
    }

    /// Takes the next task to await: sources first, then the rest once the
    /// sources are done (whose queues may then close).
    fn next_handle(&self, sources_only: bool) -> Option<(String, Handle)> {
        let mut st = self.lock();
        let i = st
            .handles
            .iter()
            .position(|(_, src, _)| *src || !sources_only)?;
        let (name, _, h) = st.handles.swap_remove(i);
        Some((name, h))
    }

    /// Waits for every task; `Err` carries the first failure.
    pub async fn wait(&self) -> Result<(), String> {
        for sources_only in [true, false] {
            while let Some((component, handle)) = self.next_handle(sources_only) {
                self.report(&component, handle.await);
            }
            if sources_only {
                let mut st = self.lock();
                st.finishing = true;
                st.masters.clear();
            }
        }
        match self.control.failure() {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    fn report(
        &self,
        component: &str,
        result: Result<Result<(), ComponentError>, tokio::task::JoinError>,
    ) {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.control.fail(component, e.to_string()),
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                self.control.fail(component, format!("panicked: {msg}"));
            }
            Err(e) => self
                .control
                .fail(component, format!("task ended abnormally: {e}")),
        }
    }
}
