//! The smaller checks of `compile`: stage limits, cycles, and the
//! `tests:` section's references; and output resolution, shared with
//! `flowgate test`.

use super::{Component, InputRef, Pipeline, Role};
use crate::config::ConfigError;
use crate::config::controls::StageCommon;
use crate::config::error::did_you_mean;
use crate::config::positions::Target;
use crate::load::RawPipeline;

pub(super) const MAX_WORKERS: usize = 1024;

/// Resolves `name` or `name.port` to an existing output.
pub fn resolve_output(pipeline: &Pipeline, text: &str) -> Result<InputRef, String> {
    let (name, port) = match text.split_once('.') {
        Some((c, p)) => (c, Some(p.to_string())),
        None => (text, None),
    };
    let names = pipeline.components.iter().map(|c| c.name.as_str());
    let Some(id) = pipeline.components.iter().position(|c| c.name == name) else {
        return Err(format!(
            "unknown component '{name}'{}",
            did_you_mean(name, names)
        ));
    };
    let c = &pipeline.components[id];
    if !c.ports.contains(&port) {
        let available: Vec<String> = c
            .ports
            .iter()
            .map(|p| {
                p.as_ref()
                    .map_or(name.to_string(), |p| format!("{name}.{p}"))
            })
            .collect();
        return Err(format!(
            "'{text}' is not an output; outputs of '{name}': {}",
            available.join(", ")
        ));
    }
    Ok(InputRef {
        component: id,
        port,
    })
}

/// Tests name transforms that exist and outputs that exist.
pub(super) fn check_tests(raw: &RawPipeline, pipeline: &Pipeline, errors: &mut Vec<ConfigError>) {
    let is_transform = |name: &str| {
        pipeline
            .components
            .iter()
            .any(|c| c.name == name && matches!(c.role, Role::Transform { .. }))
    };
    for (i, t) in pipeline.tests.iter().enumerate() {
        let idx = i.to_string();
        let at = |path: &[&str]| {
            let mut full = vec!["tests", idx.as_str()];
            full.extend_from_slice(path);
            raw.positions.find(&full, Target::Value)
        };
        let err = |msg: String, path: &[&str]| {
            raw.error(format!("test '{}': {msg}", t.name)).at(at(path))
        };
        if !is_transform(&t.input.component) {
            errors.push(err(
                format!(
                    "input.component '{}' is not a transform of this pipeline",
                    t.input.component
                ),
                &["input", "component"],
            ));
        }
        for (j, e) in t.expect.iter().enumerate() {
            if let Err(msg) = resolve_output(pipeline, &e.output) {
                errors.push(err(msg, &["expect", &j.to_string(), "output"]));
            }
        }
        for (j, f) in t.faults.iter().enumerate() {
            if !is_transform(&f.component) {
                errors.push(err(
                    format!(
                        "faults: '{}' is not a transform of this pipeline",
                        f.component
                    ),
                    &["faults", &j.to_string(), "component"],
                ));
            }
        }
    }
}

pub(super) fn check_stage(
    common: &StageCommon,
    section: &str,
    name: &str,
    err: &impl Fn(&str, &str, &[&str], Target, String) -> ConfigError,
    errors: &mut Vec<ConfigError>,
) {
    if common.workers == 0 || common.workers > MAX_WORKERS {
        errors.push(err(
            section,
            name,
            &["workers"],
            Target::Value,
            format!(
                "workers must be between 1 and {MAX_WORKERS}, not {}",
                common.workers
            ),
        ));
    }
    for (path, message) in crate::controls::check_stage(common) {
        errors.push(err(section, name, &path, Target::Value, message));
    }
    if common.buffer.size == 0 {
        errors.push(err(
            section,
            name,
            &["buffer", "size"],
            Target::Value,
            "buffer.size must be at least 1".into(),
        ));
    }
}

/// A cycle as a closed path of ids (`a -> b -> a`), if any.
pub(super) fn find_cycle(components: &[Component]) -> Option<Vec<usize>> {
    // Colours: 0 unvisited, 1 on the stack, 2 done. Edges go input -> consumer.
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); components.len()];
    for (id, c) in components.iter().enumerate() {
        for i in &c.inputs {
            downstream[i.component].push(id);
        }
    }
    let mut colour = vec![0u8; components.len()];
    let mut stack = Vec::new();
    fn visit(
        n: usize,
        down: &[Vec<usize>],
        colour: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        colour[n] = 1;
        stack.push(n);
        for &m in &down[n] {
            if colour[m] == 1 {
                let start = stack
                    .iter()
                    .position(|&x| x == m)
                    .expect("m is on the stack");
                let mut cycle = stack[start..].to_vec();
                cycle.push(m);
                return Some(cycle);
            }
            if colour[m] == 0
                && let Some(c) = visit(m, down, colour, stack)
            {
                return Some(c);
            }
        }
        stack.pop();
        colour[n] = 2;
        None
    }
    (0..components.len()).find_map(|n| {
        if colour[n] == 0 {
            visit(n, &downstream, &mut colour, &mut stack)
        } else {
            None
        }
    })
}
