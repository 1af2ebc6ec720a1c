//! The compiled graph as Graphviz dot or Mermaid, with each stage's
//! controls (workers, buffer) and named outputs on the picture.

use super::{Pipeline, Role};
use crate::config::controls::{BufferType, WhenFull, Workers};

fn label(p: &Pipeline, id: usize) -> String {
    let c = &p.components[id];
    let mut parts = vec![format!("{} ({})", c.name, c.type_name())];
    if let Some(s) = c.stage() {
        let policy = match s.buffer.when_full {
            WhenFull::Block => "block",
            WhenFull::DropNewest => "drop_newest",
            WhenFull::DropOldest => "drop_oldest",
        };
        let mut controls = match (s.buffer.kind, s.buffer.max_bytes) {
            (BufferType::Disk, Some(bytes)) => {
                format!("disk buffer {bytes} ({} in memory) {policy}", s.buffer.size)
            }
            (_, Some(bytes)) => format!("buffer {} / {bytes} {policy}", s.buffer.size),
            (_, None) => format!("buffer {} {policy}", s.buffer.size),
        };
        if s.workers != Workers::Fixed(1) {
            controls.push_str(&format!(
                ", workers {}{}",
                s.workers,
                if s.ordered { " ordered" } else { " unordered" }
            ));
        }
        parts.push(controls);
    }
    parts.join("\\n")
}

fn edges(p: &Pipeline) -> Vec<(usize, usize, Option<String>)> {
    let mut out = Vec::new();
    for (id, c) in p.components.iter().enumerate() {
        for input in &c.inputs {
            out.push((input.component, id, input.port.clone()));
        }
    }
    out
}

pub fn dot(p: &Pipeline) -> String {
    let mut s = format!("digraph \"{}\" {{\n  rankdir=LR;\n", p.name);
    for (id, c) in p.components.iter().enumerate() {
        let shape = match c.role {
            Role::Source { .. } => "cds",
            Role::Transform { .. } => "box",
            Role::Sink { .. } => "house",
        };
        s.push_str(&format!(
            "  \"{}\" [shape={shape}, label=\"{}\"];\n",
            c.name,
            label(p, id)
        ));
    }
    for (from, to, port) in edges(p) {
        let attr = port
            .map(|p| format!(" [label=\"{p}\"]"))
            .unwrap_or_default();
        s.push_str(&format!(
            "  \"{}\" -> \"{}\"{attr};\n",
            p.components[from].name, p.components[to].name
        ));
    }
    s.push_str("}\n");
    s
}

pub fn mermaid(p: &Pipeline) -> String {
    let mut s = String::from("flowchart LR\n");
    for (id, c) in p.components.iter().enumerate() {
        let text = label(p, id).replace("\\n", "<br/>");
        let node = match c.role {
            Role::Source { .. } => format!("{}[/\"{text}\"/]", c.name),
            Role::Transform { .. } => format!("{}[\"{text}\"]", c.name),
            Role::Sink { .. } => format!("{}[(\"{text}\")]", c.name),
        };
        s.push_str(&format!("    {node}\n"));
    }
    for (from, to, port) in edges(p) {
        let (a, b) = (&p.components[from].name, &p.components[to].name);
        match port {
            Some(port) => s.push_str(&format!("    {a} -->|{port}| {b}\n")),
            None => s.push_str(&format!("    {a} --> {b}\n")),
        }
    }
    s
}
