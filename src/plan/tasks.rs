//! Instantiating a topology: the fan-out of every output and one task
//! future per component this build makes (not spawned), each guarded so
//! that however it ends its outputs close and a failure stops the pipeline.

use super::build::{Outputs, Task, TaskFuture};
use super::topology::Topology;
use crate::components::{BuiltTransform, ComponentError, SourceContext};
use crate::config::controls::StageCommon;
use crate::config::tests::Fault;
use crate::controls::StageControls;
use crate::flow::control::PipelineControl;
use crate::flow::fanout::Fanout;
use crate::flow::on_error::ErrorHandler;
use crate::flow::tap::Taps;
use crate::graph::{Pipeline, Role};
use crate::stage::{self, Concurrency, PortOutput, StageParts};
use std::path::Path;
use std::sync::Arc;

/// Makes the tasks of one build, recording every output it creates.
pub struct Instantiate<'a> {
    pub topology: &'a Topology<'a>,
    pub control: &'a PipelineControl,
    pub taps: &'a Taps,
    pub data_dir: &'a Path,
    pub faults: &'a [Fault],
    /// The receiving ends of the queues of the stages this build makes.
    pub receivers: std::collections::HashMap<usize, crate::flow::buffer::BufferReceiver>,
    pub outputs: Outputs,
}

fn concurrency(common: &StageCommon) -> Concurrency {
    Concurrency {
        workers: common.workers.most(common.max_workers),
        ordered: common.ordered,
    }
}

impl Instantiate<'_> {
    fn pipeline(&self) -> &Pipeline {
        self.topology.pipeline
    }

    /// The fan-out of output `(id, port)`, with its tap point.
    fn fanout(&mut self, id: usize, port: &Option<String>) -> Fanout {
        let pipeline = self.topology.pipeline;
        let name = &pipeline.components[id].name;
        let label = Pipeline::port_label(port);
        let output = match port {
            Some(p) => format!("{name}.{p}"),
            None => name.clone(),
        };
        let f = Fanout::new(
            self.topology.targets(id, port),
            self.topology.metrics[id].output(label),
        )
        .with_tap(self.taps.point(&pipeline.name, &output));
        self.outputs
            .entry(name.clone())
            .or_default()
            .push((port.clone(), f.clone()));
        f
    }

    fn errors_for(&mut self, id: usize) -> ErrorHandler {
        let c = &self.topology.pipeline.components[id];
        let errors_port = Some("errors".to_string());
        ErrorHandler {
            name: c.name.clone(),
            on_error: c.on_error(),
            errors: c
                .ports
                .contains(&errors_port)
                .then(|| self.fanout(id, &errors_port)),
            metrics: self.topology.metrics[id].clone(),
            control: self.control.clone(),
        }
    }

    /// The task of component `id`, guarded.
    pub fn task(
        &mut self,
        id: usize,
        source_stop: Option<tokio_util::sync::CancellationToken>,
    ) -> Task {
        let pipeline = self.topology.pipeline;
        let c = &pipeline.components[id];
        if let Some(message) = self.topology.open_failures.get(&id) {
            // Its queue is a stand-in: take it, so nothing waits on it.
            let _ = self.receivers.remove(&id);
            let message = message.clone();
            return self.guarded(
                id,
                Box::pin(async move { Err(ComponentError::Other(message)) }),
            );
        }
        let future = match &c.role {
            Role::Source { kind, common } => {
                let shutdown = source_stop.expect("a source task gets its stop signal");
                let metrics = self.topology.metrics[id].clone();
                let ctx = SourceContext {
                    name: c.name.clone(),
                    pipeline: pipeline.name.clone(),
                    state_dir: self.data_dir.join(&pipeline.name),
                    downstream_capacity: pipeline.downstream_capacity(id),
                    output: self.fanout(id, &None),
                    errors: self.errors_for(id),
                    shutdown,
                    controls: StageControls::for_source(common, &metrics),
                    metrics,
                };
                kind.build().run(ctx) as TaskFuture
            }
            Role::Transform { common, kind } => {
                let parts = self.stage_parts(id, common);
                let fault = self.faults.iter().find(|f| f.component == c.name);
                // Programs were checked by `graph::compile`; a failure here
                // (the HTTP client) fails the task in order.
                let built = kind.build().map(|built| match fault {
                    Some(f) => super::faults::inject(&built, f),
                    None => built,
                });
                match built {
                    Ok(BuiltTransform::Sync(t)) => {
                        Box::pin(stage::run_transform(t, parts)) as TaskFuture
                    }
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
                let parts = self.stage_parts(id, common);
                let written = parts.metrics.output("default");
                Box::pin(stage::run_sink(Arc::from(kind.build()), parts, written))
            }
        };
        self.guarded(id, future)
    }

    fn stage_parts(&mut self, id: usize, common: &StageCommon) -> StageParts {
        let c = &self.pipeline().components[id];
        let ports = c
            .ports
            .iter()
            .filter(|p| p.as_deref() != Some("errors"))
            .cloned()
            .collect::<Vec<_>>()
            .into_iter()
            .map(|p| PortOutput {
                is_unmatched: p.as_deref() == Some("unmatched"),
                fanout: self.fanout(id, &p),
            })
            .collect();
        let metrics = self.topology.metrics[id].clone();
        StageParts {
            input: self.take_input(id),
            conc: concurrency(common),
            ports,
            errors: self.errors_for(id),
            controls: StageControls::for_stage(common, &metrics),
            metrics,
        }
    }

    fn take_input(&mut self, id: usize) -> crate::flow::buffer::BufferReceiver {
        self.receivers
            .remove(&id)
            .expect("`Topology` makes a queue for every stage this build makes")
    }

    /// However the task ends, its outputs let go of downstream queues; a
    /// failure or a panic stops the pipeline's sources at once.
    fn guarded(&self, id: usize, future: TaskFuture) -> Task {
        let name = &self.pipeline().components[id].name;
        let outputs = self
            .outputs
            .get(name)
            .map(|o| o.iter().map(|(_, f)| f.clone()).collect())
            .unwrap_or_default();
        Task::guarded(name, self.control, outputs, future)
    }
}
