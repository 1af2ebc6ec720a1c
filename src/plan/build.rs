//! `Pipeline` -> `Pieces`: the topology of a build (`topology`), then its
//! tasks (`tasks`), nothing spawned. A first start, a reload that keeps
//! components running and a `flowgate test` run are three callers of the
//! same two steps, differing only in their `Scope`.

use super::Host;
use super::tasks::Instantiate;
use super::topology::{Scope, Topology};
use crate::components::ComponentError;
use crate::config::tests::Fault;
use crate::flow::buffer::{BufferGauge, BufferReceiver, BufferSender};
use crate::flow::control::PipelineControl;
use crate::flow::fanout::{CloseOnDrop, Fanout};
use crate::graph::{InputRef, Pipeline, Role};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;

/// Every output of each component, by component name.
pub type Outputs = HashMap<String, Vec<(Option<String>, Fanout)>>;

pub type TaskFuture = Pin<Box<dyn Future<Output = Result<(), ComponentError>> + Send>>;

/// One component's task, not yet spawned.
pub struct Task {
    pub component: String,
    pub future: TaskFuture,
}

/// Held by every task: closes its outputs when it ends and, when it ends by
/// panicking, stops the sources (the supervisor reports the panic by name).
/// It is dropped with the task's future, which tokio drops while the panic
/// unwinds: the acknowledgements the task held fail at the same moment
/// (`Acks`), and its input queue fails what it still queues
/// (`BufferReceiver`).
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

impl Task {
    /// `future` as the task of `component`, guarded: however it ends,
    /// `outputs` let go of their downstream queues; a failure or a panic
    /// stops the pipeline's sources at once. Every task a build makes is
    /// made here (and so are tests' tasks around mock components).
    pub fn guarded(
        component: &str,
        control: &PipelineControl,
        outputs: Vec<Fanout>,
        future: TaskFuture,
    ) -> Task {
        let guard = TaskGuard {
            _outputs: CloseOnDrop(outputs),
            control: control.clone(),
        };
        let name = component.to_string();
        let future: TaskFuture = Box::pin(async move {
            let guard = guard;
            let result = future.await;
            if let Err(e) = &result {
                guard.control.fail(&name, e.to_string());
            }
            result
        });
        Task {
            component: component.to_string(),
            future,
        }
    }
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

/// A first start: every component of `pipeline`.
pub fn build(pipeline: &Pipeline, host: &Host) -> Pieces {
    let control = PipelineControl::for_pipeline(&pipeline.name);
    assemble(pipeline, host, &Scope::Whole, control).0
}

/// A reload: the components in `reuse.kept` keep running (and are rewired
/// to the new consumers); the others are made anew.
pub fn build_reusing(pipeline: &Pipeline, host: &Host, reuse: &Reuse) -> Pieces {
    assemble(pipeline, host, &Scope::Reuse(reuse), reuse.control.clone()).0
}

/// `flowgate test`: the graph downstream of `setup.inject`, captured.
pub fn build_test(pipeline: &Pipeline, host: &Host, setup: &TestSetup) -> (Pieces, TestHandles) {
    let control = PipelineControl::for_pipeline(&pipeline.name);
    let (pieces, mut topology_ends) = assemble(pipeline, host, &Scope::Test(setup), control);
    let handles = TestHandles {
        injector: topology_ends
            .senders
            .remove(&setup.inject)
            .expect("the injected component is an active transform"),
        captures: std::mem::take(&mut topology_ends.captures),
    };
    (pieces, handles)
}

/// What a build leaves of its topology for a test's handles.
struct Ends {
    senders: HashMap<usize, BufferSender>,
    captures: Vec<(InputRef, BufferReceiver)>,
}

fn assemble(
    pipeline: &Pipeline,
    host: &Host,
    scope: &Scope,
    control: PipelineControl,
) -> (Pieces, Ends) {
    let mut topology = Topology::new(pipeline, host, scope, &control);
    let receivers = std::mem::take(&mut topology.receivers);
    let faults = match scope {
        Scope::Test(t) => t.faults,
        _ => &[],
    };
    let mut make = Instantiate {
        topology: &topology,
        control: &control,
        taps: &host.taps,
        data_dir: &host.data_dir,
        faults,
        receivers,
        outputs: Outputs::new(),
    };
    let mut tasks = Vec::new();
    let mut source_stops = HashMap::new();
    for (id, c) in pipeline.components.iter().enumerate() {
        if !topology.makes(id) {
            continue;
        }
        let stop = matches!(c.role, Role::Source { .. }).then(|| {
            let stop = control.source_token().child_token();
            source_stops.insert(c.name.clone(), stop.clone());
            stop
        });
        tasks.push(make.task(id, stop));
    }
    let outputs = std::mem::take(&mut make.outputs);
    drop(make);
    let rewire = rewiring(&topology);
    let mut senders = std::mem::take(&mut topology.senders);
    let masters = match scope {
        // A test's queues close when the injector and the fan-outs are done.
        Scope::Test(_) => HashMap::new(),
        // A running pipeline keeps its new stages' masters (`Pieces::masters`).
        _ => senders
            .iter()
            .filter(|(id, _)| topology.makes(**id))
            .map(|(id, s)| (pipeline.components[*id].name.clone(), s.clone()))
            .collect(),
    };
    if !matches!(scope, Scope::Test(_)) {
        senders.clear();
    }
    topology.release_captures();
    let ends = Ends {
        senders,
        captures: std::mem::take(&mut topology.captures),
    };
    let pieces = Pieces {
        name: pipeline.name.clone(),
        control,
        tasks,
        queues: std::mem::take(&mut topology.queues),
        masters,
        outputs,
        source_stops,
        rewire,
    };
    (pieces, ends)
}

/// For a reload: each output of a kept component and its consumers now.
fn rewiring(topology: &Topology) -> Vec<(String, Option<String>, Vec<BufferSender>)> {
    let mut rewire = Vec::new();
    for (id, c) in topology.pipeline.components.iter().enumerate() {
        if !topology.keeps(id) {
            continue;
        }
        for port in &c.ports {
            rewire.push((c.name.clone(), port.clone(), topology.targets(id, port)));
        }
    }
    rewire
}
