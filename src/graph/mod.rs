//! `RawPipeline` -> validated `Pipeline`: names checked, inputs resolved to
//! component ids and ports, cycles rejected, programs compiled. Every
//! problem of a file is collected; warnings are separate. No tokio here.

mod checks;
pub mod diff;
pub mod render;
pub mod schema;

use crate::components::{SinkKind, SourceKind, TransformKind};
use crate::config::controls::{OnError, SourceCommon, StageCommon};
use crate::config::error::did_you_mean;
use crate::config::positions::Target;
use crate::config::{ConfigError, ConfigWarning};
use crate::load::RawPipeline;
pub use checks::resolve_output;
use checks::{check_stage, check_tests, find_cycle};
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
    pub fn kind_name(&self) -> &'static str {
        match self.role {
            Role::Source { .. } => "source",
            Role::Transform { .. } => "transform",
            Role::Sink { .. } => "sink",
        }
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

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Validates `raw`. Errors and warnings come back in file order.
pub fn compile(raw: RawPipeline) -> Result<(Pipeline, Vec<ConfigWarning>), Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let at = |section: &str, name: &str, path: &[&str], target: Target| {
        let mut full = vec![section, name];
        full.extend_from_slice(path);
        raw.positions.find(&full, target)
    };
    let err = |section: &str, name: &str, path: &[&str], target: Target, msg: String| {
        raw.error(msg)
            .component(name)
            .at(at(section, name, path, target))
    };

    // Names: syntax and uniqueness across sections.
    let mut all: Vec<(&str, &str)> = Vec::new();
    all.extend(raw.sources.iter().map(|s| ("sources", s.name.as_str())));
    all.extend(
        raw.transforms
            .iter()
            .map(|s| ("transforms", s.name.as_str())),
    );
    all.extend(raw.sinks.iter().map(|s| ("sinks", s.name.as_str())));
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for &(section, name) in &all {
        if !valid_name(name) {
            errors.push(err(
                section,
                name,
                &[],
                Target::Key,
                format!("invalid name '{name}': names match [a-z][a-z0-9_]*"),
            ));
        }
        if let Some(first) = seen.insert(name, section) {
            errors.push(err(section, name, &[], Target::Key, format!("duplicate component name '{name}' (also in {first}); names are unique across the file")));
        }
    }
    if raw.sources.is_empty() && !raw.broken.iter().any(|b| all.iter().all(|(_, n)| n != b)) {
        errors.push(raw.error("the pipeline has no sources: add at least one under 'sources:'"));
    }
    if raw.sinks.is_empty() && raw.broken.is_empty() {
        errors.push(raw.error("the pipeline has no sinks: add at least one under 'sinks:'"));
    }

    // Components in id order: sources, transforms, sinks.
    let mut components: Vec<Component> = Vec::new();
    let mut raw_inputs: Vec<(&str, &str, &[String])> = Vec::new();
    // Transforms whose programs failed: their inputs are still checked.
    let mut unbuilt: Vec<(&str, &str, &[String])> = Vec::new();
    for s in &raw.sources {
        for (path, message) in crate::controls::check_source(&s.common) {
            errors.push(err("sources", &s.name, &path, Target::Value, message));
        }
        let mut ports = vec![None];
        if s.common.on_error == OnError::Route {
            ports.push(Some("errors".to_string()));
        }
        components.push(Component {
            name: s.name.clone(),
            role: Role::Source {
                common: s.common.clone(),
                kind: s.kind.clone(),
            },
            inputs: Vec::new(),
            ports,
        });
        raw_inputs.push(("sources", &s.name, &[]));
    }
    for t in &raw.transforms {
        check_stage(&t.common, "transforms", &t.name, &err, &mut errors);
        let mut ports = t.kind.ports();
        if let TransformKind::Route(r) = &t.kind {
            for route in r.routes.keys() {
                if !valid_name(route) || route == "unmatched" || route == "errors" {
                    errors.push(err("transforms", &t.name, &["routes", route], Target::Key, format!(
                        "invalid route name '{route}': route names match [a-z][a-z0-9_]* and are not 'unmatched' or 'errors'"
                    )));
                }
            }
            if r.routes.is_empty() {
                errors.push(err(
                    "transforms",
                    &t.name,
                    &["routes"],
                    Target::Key,
                    "needs at least one route".into(),
                ));
            }
        }
        if t.common.on_error == OnError::Route {
            ports.push(Some("errors".to_string()));
        }
        let problems = t.kind.check();
        if !problems.is_empty() {
            for p in problems {
                let mut path = vec!["transforms", t.name.as_str()];
                path.extend(p.key.iter().map(String::as_str));
                let code = t.kind.programs().into_iter().find(|c| {
                    // The program text the error's span refers to.
                    p.error.span.end <= c.len()
                });
                let pos =
                    code.and_then(|c| raw.positions.inside_value(&path, c, p.error.span.start));
                let excerpt = code
                    .and_then(|c| c.get(p.error.span.clone()))
                    .filter(|s| !s.is_empty());
                let hint = excerpt.map(|s| format!(" at '{s}'")).unwrap_or_default();
                errors.push(
                    raw.error(format!(
                        "{}: invalid jq program{hint}: {}",
                        p.key.join("."),
                        p.error.message
                    ))
                    .component(&t.name)
                    .at(pos),
                );
            }
            unbuilt.push(("transforms", t.name.as_str(), t.common.inputs.as_slice()));
            continue;
        }
        components.push(Component {
            name: t.name.clone(),
            role: Role::Transform {
                common: t.common.clone(),
                kind: t.kind.clone(),
            },
            inputs: Vec::new(),
            ports,
        });
        raw_inputs.push(("transforms", &t.name, &t.common.inputs));
    }
    for s in &raw.sinks {
        check_stage(&s.common, "sinks", &s.name, &err, &mut errors);
        for (path, message) in s.kind.check() {
            errors.push(err(
                "sinks",
                &s.name,
                &path,
                Target::Value,
                format!("{}: {message}", path.join(".")),
            ));
        }
        let ports = if s.common.on_error == OnError::Route {
            vec![Some("errors".to_string())]
        } else {
            Vec::new()
        };
        components.push(Component {
            name: s.name.clone(),
            role: Role::Sink {
                common: s.common.clone(),
                kind: s.kind.clone(),
            },
            inputs: Vec::new(),
            ports,
        });
        raw_inputs.push(("sinks", &s.name, &s.common.inputs));
    }

    // Inputs: resolve `name` and `name.port`.
    let ids: HashMap<&str, usize> = components
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let names: Vec<&str> = all
        .iter()
        .map(|(_, n)| *n)
        .chain(raw.broken.iter().map(String::as_str))
        .collect();
    let mut resolved: Vec<Vec<InputRef>> = vec![Vec::new(); components.len() + unbuilt.len()];
    let unbuilt_names: Vec<&str> = unbuilt.iter().map(|(_, n, _)| *n).collect();
    raw_inputs.extend(unbuilt);
    for (id, (section, name, inputs)) in raw_inputs.iter().enumerate() {
        if *section != "sources" && inputs.is_empty() {
            errors.push(err(
                section,
                name,
                &["inputs"],
                Target::Key,
                "'inputs' is empty: name at least one component to read from".into(),
            ));
        }
        for (i, input) in inputs.iter().enumerate() {
            let idx = i.to_string();
            let e = |msg: String| err(section, name, &["inputs", &idx], Target::Value, msg);
            let (target, port) = match input.split_once('.') {
                Some((c, p)) => (c, Some(p.to_string())),
                None => (input.as_str(), None),
            };
            let Some(&tid) = ids.get(target) else {
                if !raw.broken.iter().any(|b| b == target) && !unbuilt_names.contains(&target) {
                    let candidates = names.iter().copied().filter(|n| n != name);
                    errors.push(e(format!(
                        "unknown input '{input}'{}",
                        did_you_mean(target, candidates)
                    )));
                }
                continue;
            };
            let tc = &components[tid];
            if matches!(tc.role, Role::Sink { .. }) && port.is_none() {
                errors.push(e(format!("input '{input}' is a sink; sinks have no output to read (except '{target}.errors' with on_error: route)")));
                continue;
            }
            if tid == id {
                errors.push(e(format!("'{name}' cannot read its own output")));
                continue;
            }
            if !tc.ports.contains(&port) {
                let available: Vec<String> = tc
                    .ports
                    .iter()
                    .map(|p| match p {
                        Some(p) => format!("{target}.{p}"),
                        None => target.to_string(),
                    })
                    .collect();
                let msg = match &port {
                    Some(p) if p == "errors" => {
                        format!("'{target}.errors' exists only with on_error: route on '{target}'")
                    }
                    Some(p) => format!(
                        "'{target}' has no output '{p}'{}; outputs: {}",
                        did_you_mean(p, tc.ports.iter().flatten().map(String::as_str)),
                        available.join(", ")
                    ),
                    None => format!(
                        "'{target}' has no default output; use one of: {}",
                        available.join(", ")
                    ),
                };
                errors.push(e(msg));
                continue;
            }
            let r = InputRef {
                component: tid,
                port,
            };
            if resolved[id].contains(&r) {
                errors.push(e(format!("input '{input}' is listed twice")));
                continue;
            }
            resolved[id].push(r);
        }
    }
    resolved.truncate(components.len());
    for (c, inputs) in components.iter_mut().zip(resolved) {
        c.inputs = inputs;
    }

    if let Some(cycle) = find_cycle(&components) {
        let path: Vec<&str> = cycle.iter().map(|&i| components[i].name.as_str()).collect();
        let first = &components[cycle[0]];
        errors.push(
            raw.error(format!("cycle: {}", path.join(" -> ")))
                .component(&first.name)
                .at(at("transforms", &first.name, &["inputs"], Target::Key)),
        );
    }

    // Outputs nobody reads.
    let pipeline = Pipeline {
        name: raw.name.clone(),
        file: raw.file.clone(),
        components,
        tests: raw.tests.clone(),
    };
    check_tests(&raw, &pipeline, &mut errors);
    let consumers = pipeline.consumers();
    for (id, c) in pipeline.components.iter().enumerate() {
        let section = match c.role {
            Role::Source { .. } => "sources",
            Role::Transform { .. } => "transforms",
            Role::Sink { .. } => "sinks",
        };
        for port in &c.ports {
            let r = InputRef {
                component: id,
                port: port.clone(),
            };
            if consumers.contains_key(&r) {
                continue;
            }
            match port.as_deref() {
                Some("errors") => errors.push(err(section, &c.name, &["on_error"], Target::Value, format!(
                    "on_error: route sends failed events to '{}.errors', but no component reads it: add it to a sink's inputs (e.g. a dead-letter file)", c.name
                ))),
                Some("unmatched") => {}
                Some(p) => warnings.push(err(section, &c.name, &[], Target::Key, format!("output '{}.{p}' is not read by any component; its events are dropped", c.name))),
                None => warnings.push(err(section, &c.name, &[], Target::Key, format!("output of '{}' is not read by any component; its events are dropped", c.name))),
            }
        }
    }

    if errors.is_empty() {
        Ok((pipeline, warnings))
    } else {
        errors.sort_by_key(|e| e.position.unwrap_or((usize::MAX, 0)));
        Err(errors)
    }
}

/// Loads, parses and validates one file: all problems of the file, or the
/// pipeline and its warnings.
pub fn load(path: &std::path::Path) -> Result<(Pipeline, Vec<ConfigWarning>), Vec<ConfigError>> {
    finish(crate::load::load_file(path))
}

/// Like `load`, from text.
pub fn load_str(
    text: &str,
    file: &str,
    default_name: &str,
) -> Result<(Pipeline, Vec<ConfigWarning>), Vec<ConfigError>> {
    finish(crate::load::parse(text, file, default_name))
}

/// Validates a parsed pipeline, merging parse and graph problems in file order.
fn finish(
    (raw, mut errors): (Option<RawPipeline>, Vec<ConfigError>),
) -> Result<(Pipeline, Vec<ConfigWarning>), Vec<ConfigError>> {
    let Some(raw) = raw else { return Err(errors) };
    match compile(raw) {
        Ok(ok) if errors.is_empty() => Ok(ok),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            errors.sort_by_key(|e| e.position.unwrap_or((usize::MAX, 0)));
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match load_str(text, "p.yaml", "p") {
            Ok((_, w)) => w.iter().map(|w| format!("warning: {w}")).collect(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

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

    #[test]
    fn resolves_inputs_and_ports() {
        let (p, w) = load_str(
            "sources:\n  g: {type: generator, events: [{a: 1}]}\ntransforms:\n  r: {type: route, inputs: [g], routes: {x: '.a == 1'}}\nsinks:\n  o: {type: blackhole, inputs: [r.x, r.unmatched]}\n",
            "p.yaml",
            "p",
        )
        .unwrap();
        assert!(w.is_empty());
        assert_eq!(
            p.components[2].inputs,
            vec![
                InputRef {
                    component: 1,
                    port: Some("x".into())
                },
                InputRef {
                    component: 1,
                    port: Some("unmatched".into())
                }
            ]
        );
    }

    #[test]
    fn reports_unknown_inputs_cycles_and_unread_error_outputs() {
        let errs = problems(
            "sources:\n  g: {type: generator, events: [{a: 1}]}\ntransforms:\n  valid: {type: filter, inputs: [g, b], condition: '.a'}\n  a: {type: map, inputs: [valdi], program: '.'}\n  b: {type: map, inputs: [c], program: '.', on_error: route}\n  c: {type: map, inputs: [b], program: '.', workers: 0}\nsinks:\n  o: {type: blackhole, inputs: [valid, a]}\n",
        );
        for e in &errs {
            eprintln!("{e}");
        }
        assert_eq!(
            errs,
            vec![
                "p.yaml:5:27: component 'a': unknown input 'valdi' (did you mean 'valid'?)",
                "p.yaml:6:18: component 'b': cycle: b -> c -> b",
                "p.yaml:6:55: component 'b': on_error: route sends failed events to 'b.errors', but no component reads it: add it to a sink's inputs (e.g. a dead-letter file)",
                "p.yaml:7:54: component 'c': workers must be between 1 and 1024, not 0",
            ]
        );
    }
}
