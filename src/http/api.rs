//! `GET /api/pipelines`: the graph of every running pipeline (laid out,
//! as `/ui` draws it) and each component's current figures, read from the
//! registry `/metrics` encodes, so both always say the same.
//!
//! Counters are totals since start; readers (the page, `flowgate top`)
//! turn two reads into rates with `time_ms`.

use crate::core::sync::LockExt;
use crate::graph::Pipeline;
use crate::graph::layout::{GraphView, layout};
use crate::telemetry::Metrics;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// The graphs of the pipelines the daemon runs, by name; the daemon sets
/// one at start and on every applied reload, and removes it when the
/// pipeline has finished.
#[derive(Clone, Default)]
pub struct Graphs {
    inner: Arc<Mutex<BTreeMap<String, Arc<Laid>>>>,
}

struct Laid {
    file: String,
    graph: GraphView,
}

impl Graphs {
    /// Lays out `p` (call before handing it to the runtime).
    pub fn laid_out(p: &Pipeline) -> LaidOut {
        LaidOut {
            name: p.name.clone(),
            laid: Arc::new(Laid {
                file: p.file.clone(),
                graph: layout(p),
            }),
        }
    }

    pub fn set(&self, graph: LaidOut) {
        self.inner.lock_unpoisoned().insert(graph.name, graph.laid);
    }

    pub fn remove(&self, name: &str) {
        self.inner.lock_unpoisoned().remove(name);
    }

    fn snapshot(&self) -> Vec<(String, Arc<Laid>)> {
        let g = self.inner.lock_unpoisoned();
        g.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// A pipeline's graph, laid out, waiting to be `Graphs::set`.
pub struct LaidOut {
    name: String,
    laid: Arc<Laid>,
}

/// The body of `GET /api/pipelines`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiPipelines {
    /// When the figures were read, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub pipelines: Vec<PipelineView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineView {
    pub name: String,
    pub file: String,
    pub graph: GraphView,
    /// By component name; every component of `graph` has an entry.
    pub figures: BTreeMap<String, Figures>,
}

/// One component's figures, each the value of a `/metrics` series (sums
/// over the extra label where there is one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// `flowgate_events_in_total`.
    pub events_in: u64,
    /// `flowgate_events_out_total`, summed over `output`.
    pub events_out: u64,
    /// `flowgate_events_out_total` by `output`.
    pub outputs: BTreeMap<String, u64>,
    /// `flowgate_errors_total`, summed over `error_type`.
    pub errors: u64,
    /// `flowgate_events_discarded_total`, summed over `reason`.
    pub discarded: u64,
    /// `flowgate_retries_total`.
    pub retries: u64,
    /// `flowgate_buffer_events`.
    pub buffer_events: i64,
    /// `flowgate_buffer_capacity_events`.
    pub buffer_capacity: i64,
    /// `flowgate_workers_busy`.
    pub workers_busy: i64,
    /// `flowgate_workers_limit` (`workers: adaptive` only).
    pub workers_limit: Option<i64>,
    /// `flowgate_circuit_breaker_state` as `closed`, `open` or
    /// `half_open` (stages with a breaker only).
    pub breaker: Option<String>,
}

fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> &'a str {
    m.label
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

/// Every component's figures, by (pipeline, component).
fn figures(metrics: &Metrics) -> HashMap<(String, String), Figures> {
    let mut out: HashMap<(String, String), Figures> = HashMap::new();
    for family in metrics.gather() {
        let name = family.name();
        if !name.starts_with("flowgate_") {
            continue;
        }
        for m in &family.metric {
            let (pipeline, component) = (label(m, "pipeline"), label(m, "component"));
            if component.is_empty() {
                continue;
            }
            // Integer counters and gauges: the f64 holds them exactly.
            let counter = m.counter.value() as u64;
            let gauge = m.gauge.value() as i64;
            let fig = out
                .entry((pipeline.to_string(), component.to_string()))
                .or_default();
            match name {
                "flowgate_events_in_total" => fig.events_in += counter,
                "flowgate_events_out_total" => {
                    fig.events_out += counter;
                    *fig.outputs
                        .entry(label(m, "output").to_string())
                        .or_default() += counter;
                }
                "flowgate_errors_total" => fig.errors += counter,
                "flowgate_events_discarded_total" => fig.discarded += counter,
                "flowgate_retries_total" => fig.retries += counter,
                "flowgate_buffer_events" => fig.buffer_events = gauge,
                "flowgate_buffer_capacity_events" => fig.buffer_capacity = gauge,
                "flowgate_workers_busy" => fig.workers_busy = gauge,
                "flowgate_workers_limit" => fig.workers_limit = Some(gauge),
                "flowgate_circuit_breaker_state" => {
                    fig.breaker = Some(
                        match gauge {
                            0 => "closed",
                            1 => "open",
                            _ => "half_open",
                        }
                        .to_string(),
                    )
                }
                _ => {}
            }
        }
    }
    out
}

/// The body of `GET /api/pipelines` now.
pub fn pipelines(graphs: &Graphs, metrics: &Metrics) -> ApiPipelines {
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut all = figures(metrics);
    let pipelines = graphs
        .snapshot()
        .into_iter()
        .map(|(name, laid)| {
            let figures = laid
                .graph
                .components
                .iter()
                .map(|c| {
                    let key = (name.clone(), c.name.clone());
                    (c.name.clone(), all.remove(&key).unwrap_or_default())
                })
                .collect();
            PipelineView {
                name,
                file: laid.file.clone(),
                graph: laid.graph.clone(),
                figures,
            }
        })
        .collect();
    ApiPipelines { time_ms, pipelines }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_read_from_the_registry_per_component() {
        let metrics = Metrics::new();
        let (p, _) = crate::graph::load_str(
            "name: shop\nsources:\n  g: {type: generator, events: [{n: 1}]}\ntransforms:\n  r: {type: route, inputs: [g], routes: {b: 'true'}, circuit_breaker: {consecutive_failures: 3}}\nsinks:\n  o: {type: blackhole, inputs: [r.b]}\n",
            "p.yaml",
            "shop",
        )
        .unwrap();
        let graphs = Graphs::default();
        graphs.set(Graphs::laid_out(&p));
        let r = metrics.component("shop", "r", "transform", "route");
        r.events_in.inc_by(7);
        r.output("b").inc_by(5);
        r.output("unmatched").inc_by(2);
        r.errors("program", 3);
        r.buffer_capacity.set(500);
        r.breaker().state.set(1);
        // Another pipeline's component of the same name is not mixed in.
        metrics
            .component("other", "r", "transform", "route")
            .events_in
            .inc_by(100);
        let api = pipelines(&graphs, &metrics);
        assert_eq!(api.pipelines.len(), 1);
        let figs = &api.pipelines[0].figures;
        assert_eq!(figs.keys().collect::<Vec<_>>(), ["g", "o", "r"]);
        let r = &figs["r"];
        assert_eq!((r.events_in, r.events_out, r.errors), (7, 7, 3));
        assert_eq!(
            r.outputs,
            BTreeMap::from([("b".into(), 5), ("unmatched".into(), 2)])
        );
        assert_eq!(
            (r.buffer_capacity, r.breaker.as_deref()),
            (500, Some("open"))
        );
        assert_eq!(figs["o"], Figures::default());
        graphs.remove("shop");
        assert!(pipelines(&graphs, &metrics).pipelines.is_empty());
    }
}
