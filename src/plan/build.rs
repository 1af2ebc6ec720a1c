//! `Pipeline` -> `Pieces`: every buffer, fan-out and task future of a
//! pipeline, made without spawning anything.

use crate::components::{BuiltTransform, ComponentError, SourceContext};
use crate::config::controls::WhenFull;
use crate::config::tests::Fault;
use crate::controls::StageControls;
use crate::flow::buffer::{self, BufferGauge, BufferReceiver, BufferSender};
use crate::flow::control::PipelineControl;
use crate::flow::fanout::{CloseOnDrop, Fanout};
use crate::flow::on_error::ErrorHandler;
use crate::graph::{InputRef, Pipeline, Role};
use crate::stage::{self, Concurrency, PortOutput, StageParts};
use crate::telemetry::ComponentMetrics;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Every output of each component, by component name.
pub type Outputs = HashMap<String, Vec<(Option<String>, Fanout)>>;

pub type TaskFuture = Pin<Box<dyn Future<Output = Result<(), ComponentError>> + Send>>;

/// One component's task, not yet spawned.
pub struct Task {
    pub component: String,
    pub future: TaskFuture,
}

/// Everything a pipeline needs to run.
pub struct Pieces {
    pub name: String,
    pub control: PipelineControl,
    pub tasks: Vec<Task>,
    /// Input queues, to report undelivered events at a shutdown deadline.
    pub queues: Vec<BufferGauge>,
    /// Each new stage's own sender to its queue, kept by the running
    /// pipeline so a reload can connect new producers; dropped once the
    /// sources are done, so queues close as their producers finish.
    pub masters: HashMap<String, BufferSender>,
    /// Every output of every new component, for rewiring on reload.
    pub outputs: Outputs,
    /// Each new source's own stop signal (a child of the pipeline's).
    pub source_stops: HashMap<String, tokio_util::sync::CancellationToken>,
    /// For a reload: the new consumer lists of components that keep running.
    pub rewire: Vec<(String, Option<String>, Vec<BufferSender>)>,
}

/// Held by every task: closes its outputs when it ends and, when it ends by
/// panicking, stops the sources (the supervisor reports the panic by name).
struct TaskGuard {
    _outputs: CloseOnDrop,
    control: PipelineControl,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.control.stop();
        }
    }
}

/// For a reload: the components that keep running and their queues.
pub struct Reuse<'a> {
    pub kept: HashSet<String>,
    pub masters: &'a HashMap<String, BufferSender>,
    pub control: PipelineControl,
}

/// What `flowgate test` changes in a build: events are fed into one
/// transform, only the graph downstream of it runs (sources and sinks are
/// cut off), every output is captured, and faults are injected.
pub struct TestSetup<'a> {
    pub inject: usize,
    pub faults: &'a [Fault],
}

/// The ends of a test build: where to feed events and what each output got.
pub struct TestHandles {
    pub injector: BufferSender,
    pub captures: Vec<(InputRef, BufferReceiver)>,
}

/// Events a capture holds: a test's whole output must fit.
const CAPTURE_CAPACITY: usize = 1 << 20;

/// Components downstream of `start` (itself included), sinks excluded.
fn downstream_transforms(pipeline: &Pipeline, start: usize) -> HashSet<usize> {
    let consumers = pipeline.consumers();
    let mut seen = HashSet::from([start]);
    let mut todo = vec![start];
    while let Some(id) = todo.pop() {
        for port in &pipeline.components[id].ports {
            let key = InputRef {
                component: id,
                port: port.clone(),
            };
            for &next in consumers.get(&key).into_iter().flatten() {
                if matches!(pipeline.components[next].role, Role::Transform { .. })
                    && seen.insert(next)
                {
                    todo.push(next);
                }
            }
        }
    }
    seen
}

pub fn build_with(
    pipeline: &Pipeline,
    host: &super::Host,
    test: Option<TestSetup>,
    reuse: Option<&Reuse>,
) -> (Pieces, Option<TestHandles>) {
    let (metrics, taps) = (&host.metrics, &host.taps);
    let control = reuse.map_or_else(
        || PipelineControl::for_pipeline(&pipeline.name),
        |r| r.control.clone(),
    );
    let kept = |id: usize| reuse.is_some_and(|r| r.kept.contains(&pipeline.components[id].name));
    let consumers = pipeline.consumers();
    let active: Option<HashSet<usize>> = test
        .as_ref()
        .map(|t| downstream_transforms(pipeline, t.inject));
    let is_active = |id: usize| active.as_ref().is_none_or(|a| a.contains(&id));
    let component_metrics: Vec<ComponentMetrics> = pipeline
        .components
        .iter()
        .map(|c| metrics.component(&pipeline.name, &c.name, c.kind_name(), c.type_name()))
        .collect();

    // Every transform and sink owns its input queue.
    let mut senders: HashMap<usize, BufferSender> = HashMap::new();
    let mut receivers = HashMap::new();
    let mut queues = Vec::new();
    let mut captures = Vec::new();
    let mut capture_senders: HashMap<InputRef, BufferSender> = HashMap::new();
    for (id, c) in pipeline.components.iter().enumerate() {
        if !is_active(id) {
            continue;
        }
        if kept(id) {
            if let Some(master) = reuse.and_then(|r| r.masters.get(&c.name)) {
                senders.insert(id, master.clone());
            }
            continue;
        }
        if test.is_some() {
            for port in &c.ports {
                let key = InputRef {
                    component: id,
                    port: port.clone(),
                };
                let (tx, rx) = buffer::channel(
                    CAPTURE_CAPACITY,
                    WhenFull::Block,
                    component_metrics[id].clone(),
                );
                capture_senders.insert(key.clone(), tx);
                captures.push((key, rx));
            }
        }
        if let Some(stage) = c.stage() {
            let (tx, rx) = buffer::channel(
                stage.buffer.size,
                stage.buffer.when_full,
                component_metrics[id].clone(),
            );
            queues.push(rx.gauge());
            senders.insert(id, tx);
            receivers.insert(id, rx);
        }
    }
    let outputs: std::cell::RefCell<Outputs> = Default::default();
    let mut source_stops = HashMap::new();
    let fanout = |id: usize, port: &Option<String>| {
        let key = InputRef {
            component: id,
            port: port.clone(),
        };
        let mut targets: Vec<BufferSender> = consumers
            .get(&key)
            .map(|ids| {
                ids.iter()
                    .filter(|t| senders.contains_key(t))
                    .map(|t| senders[t].clone())
                    .collect()
            })
            .unwrap_or_default();
        targets.extend(capture_senders.get(&key).cloned());
        let label = crate::graph::Pipeline::port_label(port);
        let output = match port {
            Some(p) => format!("{}.{p}", pipeline.components[id].name),
            None => pipeline.components[id].name.clone(),
        };
        let f = Fanout::new(targets, component_metrics[id].output(label))
            .with_tap(taps.point(&pipeline.name, &output));
        outputs
            .borrow_mut()
            .entry(pipeline.components[id].name.clone())
            .or_default()
            .push((port.clone(), f.clone()));
        f
    };
    let errors_for = |id: usize| {
        let c = &pipeline.components[id];
        let errors_port = Some("errors".to_string());
        ErrorHandler {
            name: c.name.clone(),
            on_error: c.on_error(),
            errors: c
                .ports
                .contains(&errors_port)
                .then(|| fanout(id, &errors_port)),
            metrics: component_metrics[id].clone(),
            control: control.clone(),
        }
    };

    let mut tasks = Vec::new();
    let mut rewire = Vec::new();
    for (id, c) in pipeline.components.iter().enumerate() {
        if !is_active(id) {
            continue;
        }
        if kept(id) {
            for port in &c.ports {
                let key = InputRef {
                    component: id,
                    port: port.clone(),
                };
                let targets: Vec<BufferSender> = consumers
                    .get(&key)
                    .into_iter()
                    .flatten()
                    .filter_map(|t| senders.get(t).cloned())
                    .collect();
                rewire.push((c.name.clone(), port.clone(), targets));
            }
            continue;
        }
        let m = component_metrics[id].clone();
        let future: TaskFuture = match &c.role {
            Role::Source { kind, common } => {
                let stop = control.source_token().child_token();
                source_stops.insert(c.name.clone(), stop.clone());
                let ctx = SourceContext {
                    name: c.name.clone(),
                    pipeline: pipeline.name.clone(),
                    state_dir: host.data_dir.join(&pipeline.name),
                    downstream_capacity: pipeline.downstream_capacity(id),
                    output: fanout(id, &None),
                    errors: errors_for(id),
                    shutdown: stop,
                    controls: StageControls::for_source(common, &m),
                    metrics: m,
                };
                kind.build().run(ctx)
            }
            Role::Transform { common, kind, .. } => {
                let ports = c
                    .ports
                    .iter()
                    .filter(|p| p.as_deref() != Some("errors"))
                    .map(|p| PortOutput {
                        fanout: fanout(id, p),
                        is_unmatched: p.as_deref() == Some("unmatched"),
                    })
                    .collect();
                let conc = Concurrency {
                    workers: common.workers,
                    ordered: common.ordered,
                };
                let input = receivers.remove(&id).expect("every transform has a queue");
                let controls = StageControls::for_stage(common, &m);
                let fault = test
                    .as_ref()
                    .and_then(|t| t.faults.iter().find(|f| f.component == c.name));
                // Programs were checked by `graph::compile`; a failure here
                // (the HTTP client) fails the task in order.
                let built = kind.build().map(|built| match fault {
                    Some(f) => super::faults::inject(&built, f),
                    None => built,
                });
                let parts = StageParts {
                    input,
                    conc,
                    ports,
                    errors: errors_for(id),
                    metrics: m,
                    controls,
                };
                match built {
                    Ok(BuiltTransform::Sync(t)) => Box::pin(stage::run_transform(t, parts)),
                    Ok(BuiltTransform::Async(t)) => Box::pin(stage::run_async_transform(t, parts)),
                    Err(problems) => {
                        let message = problems
                            .iter()
                            .map(|p| p.error.message.clone())
                            .collect::<Vec<_>>()
                            .join("; ");
                        Box::pin(async move { Err(ComponentError::Other(message)) })
                    }
                }
            }
            Role::Sink { common, kind } => {
                let conc = Concurrency {
                    workers: common.workers,
                    ordered: common.ordered,
                };
                let input = receivers.remove(&id).expect("every sink has a queue");
                let written = m.output("default");
                let controls = StageControls::for_stage(common, &m);
                Box::pin(stage::run_sink(
                    Arc::from(kind.build()),
                    input,
                    conc,
                    written,
                    errors_for(id),
                    m,
                    controls,
                ))
            }
        };
        // However the task ends, its outputs let go of downstream queues; a
        // failure or a panic stops the pipeline's sources at once.
        let guard = TaskGuard {
            _outputs: CloseOnDrop(
                outputs
                    .borrow()
                    .get(&c.name)
                    .map(|o| o.iter().map(|(_, f)| f.clone()).collect())
                    .unwrap_or_default(),
            ),
            control: control.clone(),
        };
        let name = c.name.clone();
        let future: TaskFuture = Box::pin(async move {
            let guard = guard;
            let result = future.await;
            if let Err(e) = &result {
                guard.control.fail(&name, e.to_string());
            }
            result
        });
        tasks.push(Task {
            component: c.name.clone(),
            future,
        });
    }
    let is_test = test.is_some();
    let handles = test.map(|t| TestHandles {
        injector: senders
            .get(&t.inject)
            .expect("the injected component is an active transform")
            .clone(),
        captures,
    });
    // A test's queues close when the injector and the fan-outs are done; a
    // running pipeline keeps its new stages' masters (see `Pieces::masters`).
    let masters: HashMap<String, BufferSender> = if is_test {
        HashMap::new()
    } else {
        senders
            .into_iter()
            .filter(|(id, _)| !kept(*id))
            .map(|(id, s)| (pipeline.components[id].name.clone(), s))
            .collect()
    };
    drop(capture_senders);
    let outputs = outputs.into_inner();
    (
        Pieces {
            name: pipeline.name.clone(),
            control,
            tasks,
            queues,
            masters,
            outputs,
            source_stops,
            rewire,
        },
        handles,
    )
}
