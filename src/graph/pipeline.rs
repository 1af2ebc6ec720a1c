//! The validated pipeline: components with their inputs resolved to ids
//! and ports, and the questions later layers ask of the graph.

use crate::components::{SinkKind, SourceKind, TransformKind};
use crate::config::controls::{OnError, SourceCommon, StageCommon};
use crate::load::Section;
use std::collections::HashMap;

/// An output of a component: `None` is the default output.
pub type Port = Option<String>;

/// A resolved input: which component, which of its outputs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InputRef {
    pub component: usize,
    pub port: Port,
}

pub enum Role {
    Source {
        common: SourceCommon,
        kind: SourceKind,
    },
    Transform {
        common: StageCommon,
        kind: TransformKind,
    },
    Sink {
        common: StageCommon,
        kind: SinkKind,
    },
}

pub struct Component {
    pub name: String,
    pub role: Role,
    pub inputs: Vec<InputRef>,
    /// Every output, including `errors` with `on_error: route`.
    pub ports: Vec<Port>,
}

impl Component {
    /// The section the component is written under.
    pub fn section(&self) -> Section {
        match self.role {
            Role::Source { .. } => Section::Sources,
            Role::Transform { .. } => Section::Transforms,
            Role::Sink { .. } => Section::Sinks,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        self.section().singular()
    }

    pub fn type_name(&self) -> &'static str {
        match &self.role {
            Role::Source { kind, .. } => kind.type_name(),
            Role::Transform { kind, .. } => kind.type_name(),
            Role::Sink { kind, .. } => kind.type_name(),
        }
    }

    pub fn stage(&self) -> Option<&StageCommon> {
        match &self.role {
            Role::Source { .. } => None,
            Role::Transform { common, .. } | Role::Sink { common, .. } => Some(common),
        }
    }

    pub fn on_error(&self) -> OnError {
        match &self.role {
            Role::Source { common, .. } => common.on_error,
            Role::Transform { common, .. } | Role::Sink { common, .. } => common.on_error,
        }
    }

    /// Its outputs as an input names them (`name`, `name.port`), for
    /// messages that list what can be read.
    pub fn output_names(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| match p {
                Some(p) => format!("{}.{p}", self.name),
                None => self.name.clone(),
            })
            .collect()
    }
}

/// A validated pipeline. Component ids are indexes into `components`.
pub struct Pipeline {
    pub name: String,
    pub file: String,
    pub components: Vec<Component>,
    /// The `tests:` section, checked against the graph.
    pub tests: Vec<crate::config::tests::TestCase>,
}

impl Pipeline {
    /// Who reads each output: `(component, port) -> consumers`.
    pub fn consumers(&self) -> HashMap<InputRef, Vec<usize>> {
        let mut map: HashMap<InputRef, Vec<usize>> = HashMap::new();
        for (id, c) in self.components.iter().enumerate() {
            for input in &c.inputs {
                map.entry(input.clone()).or_default().push(id);
            }
        }
        map
    }

    /// Events the input buffers of every stage reachable from `from` hold
    /// in all (each stage counted once).
    pub fn downstream_capacity(&self, from: usize) -> usize {
        let mut seen = vec![false; self.components.len()];
        let mut todo = vec![from];
        let mut total = 0;
        while let Some(id) = todo.pop() {
            for (next, c) in self.components.iter().enumerate() {
                if !seen[next] && c.inputs.iter().any(|i| i.component == id) {
                    seen[next] = true;
                    total += c.stage().map_or(0, |s| s.buffer.size);
                    todo.push(next);
                }
            }
        }
        total
    }

    pub fn port_label(port: &Port) -> &str {
        port.as_deref().unwrap_or("default")
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::load_str;

    #[test]
    fn downstream_capacity_counts_each_reachable_buffer_once() {
        let (p, _) = load_str(
            "sources:\n  a: {type: stdin}\n  b: {type: stdin}\ntransforms:\n  f: {type: filter, inputs: [a], condition: 'true', buffer: {size: 10}}\n  r: {type: route, inputs: [f, b], routes: {x: 'true'}, buffer: {size: 20}}\nsinks:\n  o: {type: blackhole, inputs: [r.x, f], buffer: {size: 300}}\n  u: {type: blackhole, inputs: [r.unmatched], buffer: {size: 4000}}\n",
            "p.yaml",
            "p",
        )
        .unwrap();
        let id = |n: &str| p.components.iter().position(|c| c.name == n).unwrap();
        assert_eq!(p.downstream_capacity(id("a")), 10 + 20 + 300 + 4000);
        assert_eq!(p.downstream_capacity(id("b")), 20 + 300 + 4000);
    }
}
