//! The topology of one build: which components get a task, the input
//! queue of each stage, and who sends to whom. Pure wiring: no task
//! futures here (see `tasks`).

use super::Host;
use super::build::{Reuse, TestSetup};
use crate::config::controls::{BufferConfig, BufferType, WhenFull};
use crate::flow::buffer::disk::{self, DiskConfig, DiskPlace};
use crate::flow::buffer::{self, BufferGauge, BufferReceiver, BufferSender};
use crate::flow::control::PipelineControl;
use crate::graph::{InputRef, Pipeline, Role};
use crate::telemetry::ComponentMetrics;
use std::collections::{HashMap, HashSet};

/// Events a capture holds: a test's whole output must fit.
const CAPTURE_CAPACITY: usize = 1 << 20;

/// What a build covers.
pub enum Scope<'a> {
    /// Every component (a first start).
    Whole,
    /// A reload: components in `reuse.kept` keep running and their queues.
    Reuse(&'a Reuse<'a>),
    /// `flowgate test`: the transforms downstream of the injected one, with
    /// every output captured.
    Test(&'a TestSetup<'a>),
}

/// The queues and wiring of a build.
pub struct Topology<'p> {
    pub pipeline: &'p Pipeline,
    consumers: HashMap<InputRef, Vec<usize>>,
    /// Per component: this build makes its task.
    made: Vec<bool>,
    /// Per component: it keeps running from before (a reload).
    kept: Vec<bool>,
    pub metrics: Vec<ComponentMetrics>,
    /// The queue of every stage that is part of the build, kept or made.
    pub senders: HashMap<usize, BufferSender>,
    /// The receiving ends of the queues of stages this build makes.
    pub receivers: HashMap<usize, BufferReceiver>,
    pub queues: Vec<BufferGauge>,
    /// `flowgate test`: a queue per output, read by the test.
    pub captures: Vec<(InputRef, BufferReceiver)>,
    capture_senders: HashMap<InputRef, BufferSender>,
    /// Stages whose disk buffer could not be opened: their task fails
    /// with this message.
    pub open_failures: HashMap<usize, String>,
}

impl<'p> Topology<'p> {
    pub fn new(
        pipeline: &'p Pipeline,
        host: &Host,
        scope: &Scope,
        control: &PipelineControl,
    ) -> Self {
        let metrics = &host.metrics;
        let n = pipeline.components.len();
        let active = match scope {
            Scope::Test(t) => Some(downstream_transforms(pipeline, t.inject)),
            _ => None,
        };
        let is_active = |id: usize| active.as_ref().is_none_or(|a| a.contains(&id));
        let is_kept = |id: usize| match scope {
            Scope::Reuse(r) => r.kept.contains(&pipeline.components[id].name),
            _ => false,
        };
        let mut topology = Self {
            pipeline,
            consumers: pipeline.consumers(),
            made: (0..n).map(|id| is_active(id) && !is_kept(id)).collect(),
            kept: (0..n).map(is_kept).collect(),
            metrics: pipeline
                .components
                .iter()
                .map(|c| metrics.component(&pipeline.name, &c.name, c.kind_name(), c.type_name()))
                .collect(),
            senders: HashMap::new(),
            receivers: HashMap::new(),
            queues: Vec::new(),
            captures: Vec::new(),
            capture_senders: HashMap::new(),
            open_failures: HashMap::new(),
        };
        for (id, c) in pipeline.components.iter().enumerate() {
            if let Scope::Reuse(r) = scope
                && is_kept(id)
            {
                if let Some(master) = r.masters.get(&c.name) {
                    topology.senders.insert(id, master.clone());
                }
                continue;
            }
            if !is_active(id) {
                continue;
            }
            if matches!(scope, Scope::Test(_)) {
                topology.capture(id);
            }
            if let Some(stage) = c.stage() {
                // `flowgate test` never touches the data directory.
                let on_disk = !matches!(scope, Scope::Test(_));
                let (tx, rx) =
                    topology.queue(id, &stage.buffer, on_disk.then_some((host, control)));
                topology.queues.push(rx.gauge());
                topology.senders.insert(id, tx);
                topology.receivers.insert(id, rx);
            }
        }
        topology
    }

    /// The input queue of stage `id`: on disk when configured so (and a
    /// host to keep it is given), else in memory. A disk buffer that cannot
    /// be opened is recorded in `open_failures` (the stage's task fails
    /// with it) and replaced by a memory queue so the build stays whole.
    fn queue(
        &mut self,
        id: usize,
        cfg: &BufferConfig,
        host: Option<(&Host, &PipelineControl)>,
    ) -> (BufferSender, BufferReceiver) {
        let metrics = self.metrics[id].clone();
        if let (BufferType::Disk, Some((host, control))) = (cfg.kind, host) {
            let name = &self.pipeline.components[id].name;
            let place = DiskPlace {
                dir: host.data_dir.join(&self.pipeline.name).join(name),
                registry: &host.disks,
                stop: control.source_token(),
            };
            let disk_cfg = DiskConfig {
                size: cfg.size,
                max_bytes: cfg.max_bytes.map_or(u64::MAX, |b| b.0),
                policy: cfg.when_full,
            };
            match disk::open(place, disk_cfg, metrics.clone()) {
                Ok((tx, rx)) => return (BufferSender::Disk(tx), BufferReceiver::Disk(rx)),
                Err(e) => {
                    self.open_failures.insert(id, e.to_string());
                }
            }
        }
        buffer::channel(
            cfg.size,
            cfg.max_bytes.map(|b| b.bytes()),
            cfg.when_full,
            metrics,
        )
    }

    /// A capture queue for each output of `id`.
    fn capture(&mut self, id: usize) {
        for port in &self.pipeline.components[id].ports {
            let key = InputRef {
                component: id,
                port: port.clone(),
            };
            let (tx, rx) = buffer::channel(
                CAPTURE_CAPACITY,
                None,
                WhenFull::Block,
                self.metrics[id].clone(),
            );
            self.capture_senders.insert(key.clone(), tx);
            self.captures.push((key, rx));
        }
    }

    /// Whether this build makes the task of `id`.
    pub fn makes(&self, id: usize) -> bool {
        self.made[id]
    }

    /// Whether `id` keeps running from before (a reload).
    pub fn keeps(&self, id: usize) -> bool {
        self.kept[id]
    }

    /// The queues the output `(id, port)` sends to: its consumers' in this
    /// build, and its capture in a test.
    pub fn targets(&self, id: usize, port: &Option<String>) -> Vec<BufferSender> {
        let key = InputRef {
            component: id,
            port: port.clone(),
        };
        let mut targets: Vec<BufferSender> = self
            .consumers
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|t| self.senders.get(t).cloned())
            .collect();
        targets.extend(self.capture_senders.get(&key).cloned());
        targets
    }

    /// Lets go of the capture senders: a test's captures close once the
    /// fan-outs that feed them are done.
    pub fn release_captures(&mut self) {
        self.capture_senders.clear();
    }
}

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
