//! Input resolution: `name` and `name.port` as written -> `InputRef`s,
//! every mistake in a reader's `inputs` reported at the item. Also output
//! lookup for the `tests:` section and `flowgate test`.

use super::pipeline::{Component, InputRef, Pipeline, Port, Role};
use crate::config::ConfigError;
use crate::config::error::did_you_mean;
use crate::config::positions::Target;
use crate::load::{RawBroken, RawPipeline, Section};
use std::collections::HashMap;

/// A transform's or sink's `inputs` as written. `id` is its place in the
/// graph, `None` for a component kept out of it by errors in its config:
/// its inputs are still checked, so their mistakes show in the same run.
pub(super) struct Reader<'a> {
    pub section: Section,
    pub name: &'a str,
    pub inputs: &'a [String],
    pub id: Option<usize>,
}

impl<'a> Reader<'a> {
    /// A component that failed to parse, if its inputs could be read.
    pub fn broken(b: &'a RawBroken) -> Option<Self> {
        Some(Self {
            section: b.section,
            name: &b.name,
            inputs: b.inputs.as_deref()?,
            id: None,
        })
    }
}

/// What an input may name.
struct Lookup<'a> {
    components: &'a [Component],
    ids: HashMap<&'a str, usize>,
    /// Every component of the file, for suggestions.
    names: Vec<&'a str>,
    /// Components that exist but are not in the graph: reading them is no
    /// error of the reader (their own errors say what is wrong).
    outside: Vec<&'a str>,
}

/// Resolves every reader's inputs: `resolved[id]` for each component of
/// the graph, and the problems of all readers, in reader order.
pub(super) fn resolve_inputs(
    raw: &RawPipeline,
    components: &[Component],
    readers: &[Reader],
) -> (Vec<Vec<InputRef>>, Vec<ConfigError>) {
    let broken = raw.broken.iter().map(|b| b.name.as_str());
    let lookup = Lookup {
        components,
        ids: components
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect(),
        names: raw
            .component_names()
            .map(|(_, n)| n)
            .chain(broken.clone())
            .collect(),
        outside: readers
            .iter()
            .filter(|r| r.id.is_none())
            .map(|r| r.name)
            .chain(broken)
            .collect(),
    };
    let mut resolved = vec![Vec::new(); components.len()];
    let mut errors = Vec::new();
    for r in readers {
        let refs = resolve_reader(raw, &lookup, r, &mut errors);
        if let Some(id) = r.id {
            resolved[id] = refs;
        }
    }
    (resolved, errors)
}

/// One reader's inputs, in order; each mistake an error at its item.
fn resolve_reader(
    raw: &RawPipeline,
    lookup: &Lookup,
    r: &Reader,
    errors: &mut Vec<ConfigError>,
) -> Vec<InputRef> {
    if r.inputs.is_empty() {
        errors.push(raw.component_error(
            r.section,
            r.name,
            &["inputs"],
            Target::Key,
            "'inputs' is empty: name at least one component to read from",
        ));
    }
    let mut refs = Vec::new();
    for (i, input) in r.inputs.iter().enumerate() {
        let problem = match resolve_input(lookup, r, input) {
            Ok(Some(found)) if refs.contains(&found) => format!("input '{input}' is listed twice"),
            Ok(Some(found)) => {
                refs.push(found);
                continue;
            }
            Ok(None) => continue,
            Err(problem) => problem,
        };
        let at = ["inputs", &i.to_string()];
        errors.push(raw.component_error(r.section, r.name, &at, Target::Value, problem));
    }
    refs
}

/// One input: what it reads, `None` for a component outside the graph, or
/// what is wrong with it.
fn resolve_input(lookup: &Lookup, r: &Reader, input: &str) -> Result<Option<InputRef>, String> {
    let (target, port) = split_port(input);
    let Some(&id) = lookup.ids.get(target) else {
        if lookup.outside.contains(&target) {
            return Ok(None);
        }
        let candidates = lookup.names.iter().copied().filter(|n| *n != r.name);
        return Err(format!(
            "unknown input '{input}'{}",
            did_you_mean(target, candidates)
        ));
    };
    let c = &lookup.components[id];
    if matches!(c.role, Role::Sink { .. }) && port.is_none() {
        return Err(format!(
            "input '{input}' is a sink; sinks have no output to read (except '{target}.errors' with on_error: route)"
        ));
    }
    if r.id == Some(id) {
        return Err(format!("'{}' cannot read its own output", r.name));
    }
    if !c.ports.contains(&port) {
        return Err(no_such_port(c, &port));
    }
    Ok(Some(InputRef {
        component: id,
        port,
    }))
}

/// Why `port` of `c` cannot be read, with what can.
fn no_such_port(c: &Component, port: &Port) -> String {
    let name = &c.name;
    let available = c.output_names().join(", ");
    match port {
        Some(p) if p == "errors" => {
            format!("'{name}.errors' exists only with on_error: route on '{name}'")
        }
        Some(p) => format!(
            "'{name}' has no output '{p}'{}; outputs: {available}",
            did_you_mean(p, c.ports.iter().flatten().map(String::as_str)),
        ),
        None => format!("'{name}' has no default output; use one of: {available}"),
    }
}

/// `name.port` -> (`name`, `Some(port)`); `name` -> (`name`, `None`).
pub(super) fn split_port(text: &str) -> (&str, Port) {
    match text.split_once('.') {
        Some((c, p)) => (c, Some(p.to_string())),
        None => (text, None),
    }
}

/// Resolves `name` or `name.port` to an existing output.
pub fn resolve_output(pipeline: &Pipeline, text: &str) -> Result<InputRef, String> {
    let (name, port) = split_port(text);
    let names = pipeline.components.iter().map(|c| c.name.as_str());
    let Some(id) = pipeline.components.iter().position(|c| c.name == name) else {
        return Err(format!(
            "unknown component '{name}'{}",
            did_you_mean(name, names)
        ));
    };
    let c = &pipeline.components[id];
    if !c.ports.contains(&port) {
        return Err(format!(
            "'{text}' is not an output; outputs of '{name}': {}",
            c.output_names().join(", ")
        ));
    }
    Ok(InputRef {
        component: id,
        port,
    })
}
