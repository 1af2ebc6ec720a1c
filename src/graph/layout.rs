//! The compiled graph as plain data with positions, for `/api/pipelines`
//! and the `/ui` page: laid out left to right as `flowgate graph`'s dot
//! output is (`rankdir=LR`), so the page draws boxes and edges and needs no
//! layout code of its own.
//!
//! The layout is a small layered (Sugiyama-style) one: a component's
//! column is the longest path from a source to it, and the order within a
//! column comes from a few barycenter sweeps, which removes most crossings
//! in graphs of the size pipelines have (tens of components).

use super::Pipeline;
use crate::config::controls::WhenFull;
use serde::{Deserialize, Serialize};

/// A box's size and the gaps between boxes, in the page's pixels.
pub const NODE_WIDTH: u32 = 230;
pub const NODE_HEIGHT: u32 = 118;
const GAP_X: u32 = 80;
const GAP_Y: u32 = 36;
/// Barycenter sweeps (each a forward and a backward pass).
const SWEEPS: usize = 4;

/// One pipeline's graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphView {
    /// The picture's size.
    pub width: u32,
    pub height: u32,
    /// Every box's size.
    pub node_width: u32,
    pub node_height: u32,
    pub components: Vec<NodeView>,
    pub edges: Vec<EdgeView>,
}

/// One component and where it is drawn (top-left corner).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    /// `source`, `transform` or `sink`.
    pub kind: String,
    /// The component's `type:`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Its outputs as `flowgate tap` names them (`name`, `name.port`).
    pub outputs: Vec<String>,
    /// `buffer.size` (stages only).
    pub buffer_size: Option<usize>,
    /// `buffer.when_full` (stages only).
    pub when_full: Option<String>,
    /// `workers:` as written, `"4"` or `"adaptive"` (stages only).
    pub workers: Option<String>,
    /// Whether a circuit breaker wraps the stage.
    pub breaker: bool,
    pub column: usize,
    pub x: u32,
    pub y: u32,
}

/// An edge from an output to a reader; `port` is `None` for the default
/// output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeView {
    pub from: String,
    pub to: String,
    pub port: Option<String>,
}

/// The column of every component: the longest path from a source.
fn columns(p: &Pipeline) -> Vec<usize> {
    fn column(p: &Pipeline, id: usize, memo: &mut [Option<usize>]) -> usize {
        if let Some(c) = memo[id] {
            return c;
        }
        // Validation rejects cycles, so the recursion ends.
        let c = p.components[id]
            .inputs
            .iter()
            .map(|i| column(p, i.component, memo) + 1)
            .max()
            .unwrap_or(0);
        memo[id] = Some(c);
        c
    }
    let mut memo = vec![None; p.components.len()];
    (0..p.components.len())
        .map(|id| column(p, id, &mut memo))
        .collect()
}

/// Components per column, ordered to keep edges from crossing.
fn order(p: &Pipeline, cols: &[usize]) -> Vec<Vec<usize>> {
    let n = cols.iter().max().map_or(0, |m| m + 1);
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (id, &c) in cols.iter().enumerate() {
        layers[c].push(id);
    }
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); p.components.len()];
    for (id, c) in p.components.iter().enumerate() {
        for i in &c.inputs {
            readers[i.component].push(id);
        }
    }
    let mut pos = vec![0f64; p.components.len()];
    let place = |layers: &[Vec<usize>], pos: &mut [f64]| {
        for layer in layers {
            for (i, &id) in layer.iter().enumerate() {
                pos[id] = i as f64;
            }
        }
    };
    place(&layers, &mut pos);
    for _ in 0..SWEEPS {
        for forward in [true, false] {
            let range: Vec<usize> = if forward {
                (1..n).collect()
            } else {
                (0..n.saturating_sub(1)).rev().collect()
            };
            for c in range {
                let key = |id: usize| {
                    let next: Vec<usize> = if forward {
                        p.components[id]
                            .inputs
                            .iter()
                            .map(|i| i.component)
                            .collect()
                    } else {
                        readers[id].clone()
                    };
                    if next.is_empty() {
                        pos[id]
                    } else {
                        next.iter().map(|&o| pos[o]).sum::<f64>() / next.len() as f64
                    }
                };
                let mut keyed: Vec<(f64, usize)> =
                    layers[c].iter().map(|&id| (key(id), id)).collect();
                // Stable: ties keep the file's order.
                keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
                layers[c] = keyed.into_iter().map(|(_, id)| id).collect();
                for (i, &id) in layers[c].iter().enumerate() {
                    pos[id] = i as f64;
                }
            }
        }
    }
    layers
}

fn when_full(w: WhenFull) -> &'static str {
    match w {
        WhenFull::Block => "block",
        WhenFull::DropNewest => "drop_newest",
        WhenFull::DropOldest => "drop_oldest",
    }
}

/// The graph of `p`, laid out.
pub fn layout(p: &Pipeline) -> GraphView {
    let cols = columns(p);
    let layers = order(p, &cols);
    let tallest = layers.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let row = NODE_HEIGHT + GAP_Y;
    let mut xy = vec![(0, 0); p.components.len()];
    for (c, layer) in layers.iter().enumerate() {
        // Shorter columns are centred against the tallest one.
        let offset = (tallest - layer.len() as u32) * row / 2;
        for (i, &id) in layer.iter().enumerate() {
            xy[id] = (c as u32 * (NODE_WIDTH + GAP_X), offset + i as u32 * row);
        }
    }
    let components = p
        .components
        .iter()
        .enumerate()
        .map(|(id, c)| {
            let stage = c.stage();
            NodeView {
                name: c.name.clone(),
                kind: c.kind_name().to_string(),
                type_name: c.type_name().to_string(),
                outputs: c.output_names(),
                buffer_size: stage.map(|s| s.buffer.size),
                when_full: stage.map(|s| when_full(s.buffer.when_full).to_string()),
                workers: stage.map(|s| s.workers.to_string()),
                breaker: stage.is_some_and(|s| s.circuit_breaker.is_some()),
                column: cols[id],
                x: xy[id].0,
                y: xy[id].1,
            }
        })
        .collect();
    let edges = p
        .components
        .iter()
        .flat_map(|c| {
            c.inputs.iter().map(|i| EdgeView {
                from: p.components[i.component].name.clone(),
                to: c.name.clone(),
                port: i.port.clone(),
            })
        })
        .collect();
    let columns = layers.len() as u32;
    GraphView {
        width: (columns * (NODE_WIDTH + GAP_X)).saturating_sub(GAP_X),
        height: (tallest * row).saturating_sub(GAP_Y),
        node_width: NODE_WIDTH,
        node_height: NODE_HEIGHT,
        components,
        edges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::load_str;

    fn view(yaml: &str) -> GraphView {
        layout(&load_str(yaml, "p.yaml", "p").unwrap().0)
    }

    fn node<'a>(v: &'a GraphView, name: &str) -> &'a NodeView {
        v.components.iter().find(|n| n.name == name).unwrap()
    }

    #[test]
    fn columns_follow_the_longest_path_and_edges_keep_their_ports() {
        let v = view(
            "sources:\n  a: {type: stdin}\ntransforms:\n  r: {type: route, inputs: [a], routes: {x: 'true'}, workers: 3}\n  f: {type: filter, inputs: [r.x], condition: 'true'}\nsinks:\n  o: {type: blackhole, inputs: [f, a]}\n  u: {type: blackhole, inputs: [r.unmatched]}\n",
        );
        let cols: Vec<(&str, usize)> = v
            .components
            .iter()
            .map(|n| (n.name.as_str(), n.column))
            .collect();
        assert_eq!(cols, [("a", 0), ("r", 1), ("f", 2), ("o", 3), ("u", 2)]);
        assert_eq!(node(&v, "r").outputs, ["r.x", "r.unmatched"]);
        assert_eq!(node(&v, "r").workers.as_deref(), Some("3"));
        assert_eq!(node(&v, "a").workers, None);
        assert!(v.edges.contains(&EdgeView {
            from: "r".into(),
            to: "u".into(),
            port: Some("unmatched".into())
        }));
        assert_eq!(v.width, 4 * NODE_WIDTH + 3 * GAP_X);
        // Every box lies inside the picture, and no two overlap.
        for a in &v.components {
            assert!(a.x + NODE_WIDTH <= v.width && a.y + NODE_HEIGHT <= v.height);
            for b in &v.components {
                if a.name != b.name {
                    assert!(
                        a.x != b.x || a.y.abs_diff(b.y) >= NODE_HEIGHT,
                        "{a:?} {b:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn barycenter_sweeps_uncross_edges() {
        // In file order, column 1 is [b2, a2] against sources [a, b]: the
        // edges cross until the sweep swaps them.
        let v = view(
            "sources:\n  a: {type: generator, events: [{n: 1}]}\n  b: {type: generator, events: [{n: 2}]}\nsinks:\n  b2: {type: blackhole, inputs: [b]}\n  a2: {type: blackhole, inputs: [a]}\n",
        );
        assert!(node(&v, "a").y < node(&v, "b").y);
        assert!(node(&v, "a2").y < node(&v, "b2").y);
    }
}
