//! The smaller checks of `compile`: stage limits and controls, cycles,
//! and the `tests:` section's references.

use super::inputs::{resolve_output, split_port};
use super::pipeline::{Component, Pipeline, Role};
use crate::config::ConfigError;
use crate::config::controls::{StageCommon, Workers};
use crate::config::positions::Target;
use crate::controls::Problem;
use crate::load::{RawPipeline, Section};

const MAX_WORKERS: usize = 1024;

/// Tests name transforms that exist and outputs that exist. A component
/// kept out of the graph (its config did not parse, or a program of it
/// does not compile) exists: a test naming it gets no error of its own,
/// since the component's error is the one to fix.
pub(super) fn check_tests(raw: &RawPipeline, pipeline: &Pipeline) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let in_graph = |name: &str| {
        pipeline
            .components
            .iter()
            .any(|c| c.name == name && matches!(c.role, Role::Transform { .. }))
    };
    let outside = kept_out(raw, &in_graph);
    let is_transform =
        |name: &str| in_graph(name) || outside.contains(&(Section::Transforms, name));
    let is_outside = |name: &str| outside.iter().any(|&(_, n)| n == name);
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
            if is_outside(split_port(&e.output).0) {
                continue;
            }
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
    errors
}

/// The components of the file that are not in the graph, by section:
/// transforms whose programs do not compile (`in_graph` says which are),
/// and every component whose config did not parse.
fn kept_out<'a>(raw: &'a RawPipeline, in_graph: &dyn Fn(&str) -> bool) -> Vec<(Section, &'a str)> {
    let unbuilt = raw
        .transforms
        .iter()
        .map(|t| t.name.as_str())
        .filter(|name| !in_graph(name))
        .map(|name| (Section::Transforms, name));
    let broken = raw.broken.iter().map(|b| (b.section, b.name.as_str()));
    unbuilt.chain(broken).collect()
}

/// The shared keys of a transform or sink: worker count, controls, buffer.
/// `calls_service`: the stage calls a service per request (`http`), where
/// `workers: adaptive` has a latency to follow.
pub(super) fn check_stage(
    raw: &RawPipeline,
    section: Section,
    name: &str,
    common: &StageCommon,
    calls_service: bool,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut at = |key: &str, message: String| {
        errors.push(raw.component_error(section, name, &[key], Target::Value, message));
    };
    match common.workers {
        Workers::Fixed(n) if n == 0 || n > MAX_WORKERS => at(
            "workers",
            format!("workers must be between 1 and {MAX_WORKERS}, not {n}"),
        ),
        Workers::Adaptive if !calls_service => at(
            "workers",
            "workers: adaptive follows a service's latency: it is for the http transform and \
             the http sink; give a number of workers here"
                .to_string(),
        ),
        _ => {}
    }
    if common.max_workers == 0 || common.max_workers > MAX_WORKERS {
        at(
            "max_workers",
            format!(
                "max_workers must be between 1 and {MAX_WORKERS}, not {}",
                common.max_workers
            ),
        );
    }
    errors.extend(control_errors(
        raw,
        section,
        name,
        crate::controls::check_stage(common),
    ));
    if common.buffer.size == 0 {
        errors.push(raw.component_error(
            section,
            name,
            &["buffer", "size"],
            Target::Value,
            "buffer.size must be at least 1",
        ));
    }
    if common.buffer.max_bytes.is_some_and(|b| b.0 == 0) {
        errors.push(raw.component_error(
            section,
            name,
            &["buffer", "max_bytes"],
            Target::Value,
            "buffer.max_bytes must be at least 1 (leave it out for no byte limit)",
        ));
    }
    errors.extend(disk_buffer_errors(raw, section, name, &common.buffer));
    errors
}

/// The smallest `max_bytes` of a disk buffer: 16 segments of the smallest size.
const DISK_MIN_BYTES: u64 = 1 << 20;

/// `buffer.type: disk` needs a byte limit (it is what bounds the files)
/// and cannot drop its oldest events (they may be on disk, in a segment
/// that is freed only whole).
fn disk_buffer_errors(
    raw: &RawPipeline,
    section: Section,
    name: &str,
    buffer: &crate::config::controls::BufferConfig,
) -> Vec<ConfigError> {
    use crate::config::controls::{BufferType, WhenFull};
    let mut errors = Vec::new();
    if buffer.kind != BufferType::Disk {
        return errors;
    }
    match buffer.max_bytes {
        None => errors.push(raw.component_error(
            section,
            name,
            &["buffer", "type"],
            Target::Value,
            "buffer.type: disk needs buffer.max_bytes, the most its files may hold (e.g. max_bytes: 1GiB)",
        )),
        Some(b) if b.bytes() < DISK_MIN_BYTES as usize => errors.push(raw.component_error(
            section,
            name,
            &["buffer", "max_bytes"],
            Target::Value,
            format!(
                "a disk buffer's max_bytes must be at least 1MiB (its files are freed a segment at a time), not {} bytes",
                b.bytes()
            ),
        )),
        Some(_) => {}
    }
    if buffer.when_full == WhenFull::DropOldest {
        errors.push(raw.component_error(
            section,
            name,
            &["buffer", "when_full"],
            Target::Value,
            "when_full: drop_oldest is for memory buffers; a disk buffer can block or drop_newest",
        ));
    }
    errors
}

/// What `controls` found wrong with a component's control configs, each
/// at the value it names (the messages name their keys already).
pub(super) fn control_errors(
    raw: &RawPipeline,
    section: Section,
    name: &str,
    problems: Vec<Problem>,
) -> Vec<ConfigError> {
    problems
        .into_iter()
        .map(|(path, message)| raw.component_error(section, name, &path, Target::Value, message))
        .collect()
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
