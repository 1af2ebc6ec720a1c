//! `compile`: a `RawPipeline` through a fixed sequence of small checks to a
//! validated `Pipeline`. Each step returns its problems; all of them are
//! collected, so one run of `validate` shows everything wrong with a file.

use super::checks::{check_tests, find_cycle};
use super::components::{build_sink, build_source, build_transform, valid_name};
use super::inputs::{Reader, resolve_inputs};
use super::pipeline::{Component, InputRef, Pipeline};
use crate::config::positions::Target;
use crate::config::{ConfigError, ConfigWarning};
use crate::load::{RawPipeline, Section};
use std::collections::HashMap;

/// Validates `raw`. Errors and warnings come back in file order.
pub fn compile(raw: RawPipeline) -> Result<(Pipeline, Vec<ConfigWarning>), Vec<ConfigError>> {
    let mut errors: Vec<ConfigError> = check_pipeline_name(&raw).into_iter().collect();
    errors.extend(check_names(&raw));
    errors.extend(check_nonempty_sections(&raw));
    let (mut components, readers, build_errors) = build_components(&raw);
    errors.extend(build_errors);
    let (resolved, input_errors) = resolve_inputs(&raw, &components, &readers);
    errors.extend(input_errors);
    for (c, inputs) in components.iter_mut().zip(resolved) {
        c.inputs = inputs;
    }
    errors.extend(check_cycles(&raw, &components));
    let pipeline = Pipeline {
        name: raw.name.clone(),
        file: raw.file.clone(),
        components,
        tests: raw.tests.clone(),
    };
    errors.extend(check_tests(&raw, &pipeline));
    let (unread_errors, warnings) = check_unread_outputs(&raw, &pipeline);
    errors.extend(unread_errors);
    if errors.is_empty() {
        Ok((pipeline, warnings))
    } else {
        sort_in_file_order(&mut errors);
        Err(errors)
    }
}

/// Problems without a position go last; ties keep the order found.
pub(super) fn sort_in_file_order(errors: &mut [ConfigError]) {
    errors.sort_by_key(|e| e.position.unwrap_or((usize::MAX, 0)));
}

/// The pipeline's name follows the component-name rule: it names the
/// pipeline's directory under `--data-dir`, so `../../escape` must not
/// get there. A name written in the file is shown at its value; a name
/// taken from the file name at 1:1, with the `name:` that would fix it.
fn check_pipeline_name(raw: &RawPipeline) -> Option<ConfigError> {
    let name = &raw.name;
    if valid_name(name) {
        return None;
    }
    let rule = "pipeline names match [a-z][a-z0-9_]* (they name directories under --data-dir)";
    Some(if raw.name_given {
        raw.error(format!("invalid pipeline name '{name}': {rule}"))
            .at(raw.positions.find(&["name"], Target::Value))
    } else {
        raw.error(format!(
            "invalid pipeline name '{name}', taken from the file name: {rule}; \
             set one in the file with `name:`, e.g. `name: {}`",
            suggested_name(name)
        ))
        .at(Some((1, 1)))
    })
}

/// `name` made to fit the name rule: lower case, other characters as `_`,
/// `p_` in front of one that does not start with a letter.
fn suggested_name(name: &str) -> String {
    let fitted: String = name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .collect();
    if fitted.starts_with(|c: char| c.is_ascii_lowercase()) {
        fitted
    } else {
        format!("p_{fitted}")
    }
}

/// Names match `[a-z][a-z0-9_]*` and are unique across the three sections.
fn check_names(raw: &RawPipeline) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut seen: HashMap<&str, Section> = HashMap::new();
    for (section, name) in raw.component_names() {
        if !valid_name(name) {
            errors.push(raw.component_error(
                section,
                name,
                &[],
                Target::Key,
                format!("invalid name '{name}': names match [a-z][a-z0-9_]*"),
            ));
        }
        if let Some(first) = seen.insert(name, section) {
            errors.push(raw.component_error(section, name, &[], Target::Key, format!(
                "duplicate component name '{name}' (also in {}); names are unique across the file",
                first.key()
            )));
        }
    }
    errors
}

/// A pipeline has a source and a sink. A component of the section that
/// failed to parse may be the one meant to be there: its own errors are
/// reported instead. Broken components of other sections do not count.
fn check_nonempty_sections(raw: &RawPipeline) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let broken_in = |section| raw.broken.iter().any(|b| b.section == section);
    if raw.sources.is_empty() && !broken_in(Section::Sources) {
        errors.push(raw.error("the pipeline has no sources: add at least one under 'sources:'"));
    }
    if raw.sinks.is_empty() && !broken_in(Section::Sinks) {
        errors.push(raw.error("the pipeline has no sinks: add at least one under 'sinks:'"));
    }
    errors
}

/// The graph's components in id order (sources, transforms, sinks), each
/// checked on its own, and every transform's and sink's `inputs` to
/// resolve: those in the graph first, in id order, then those kept out of
/// it (programs that do not compile, configs that did not parse).
fn build_components(raw: &RawPipeline) -> (Vec<Component>, Vec<Reader<'_>>, Vec<ConfigError>) {
    let mut components = Vec::new();
    let mut readers = Vec::new();
    let mut outside = Vec::new();
    let mut errors = Vec::new();
    for s in &raw.sources {
        let (component, problems) = build_source(raw, s);
        errors.extend(problems);
        components.push(component);
    }
    for t in &raw.transforms {
        let (component, problems) = build_transform(raw, t);
        errors.extend(problems);
        let mut reader = Reader {
            section: Section::Transforms,
            name: &t.name,
            inputs: &t.common.inputs,
            id: None,
        };
        match component {
            Some(c) => {
                reader.id = Some(components.len());
                readers.push(reader);
                components.push(c);
            }
            None => outside.push(reader),
        }
    }
    for s in &raw.sinks {
        let (component, problems) = build_sink(raw, s);
        errors.extend(problems);
        readers.push(Reader {
            section: Section::Sinks,
            name: &s.name,
            inputs: &s.common.inputs,
            id: Some(components.len()),
        });
        components.push(component);
    }
    readers.extend(outside);
    readers.extend(raw.broken.iter().filter_map(Reader::broken));
    (components, readers, errors)
}

/// The graph is acyclic; a cycle is printed as its path, at the `inputs`
/// of the component it was found from.
fn check_cycles(raw: &RawPipeline, components: &[Component]) -> Option<ConfigError> {
    let cycle = find_cycle(components)?;
    let path: Vec<&str> = cycle.iter().map(|&i| components[i].name.as_str()).collect();
    let first = &components[cycle[0]];
    let at = raw.position(first.section(), &first.name, &["inputs"], Target::Key);
    Some(
        raw.error(format!("cycle: {}", path.join(" -> ")))
            .component(&first.name)
            .at(at),
    )
}

/// Outputs nobody reads: an error for routed failures (they would be lost
/// silently), a warning for events, nothing for `unmatched` (dropping them
/// is what an unread `unmatched` means). Returns `(errors, warnings)`.
fn check_unread_outputs(
    raw: &RawPipeline,
    pipeline: &Pipeline,
) -> (Vec<ConfigError>, Vec<ConfigWarning>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let consumers = pipeline.consumers();
    for (id, c) in pipeline.components.iter().enumerate() {
        let err = |path: &[&str], target, message: String| {
            raw.component_error(c.section(), &c.name, path, target, message)
        };
        for port in &c.ports {
            let read = InputRef {
                component: id,
                port: port.clone(),
            };
            if consumers.contains_key(&read) {
                continue;
            }
            match port.as_deref() {
                Some("errors") => errors.push(err(&["on_error"], Target::Value, format!(
                    "on_error: route sends failed events to '{}.errors', but no component reads it: add it to a sink's inputs (e.g. a dead-letter file)", c.name
                ))),
                // An unread `late` port counts its events as discarded (`late`).
                Some("unmatched" | "late") => {}
                Some(p) => warnings.push(err(&[], Target::Key, format!("output '{}.{p}' is not read by any component; its events are dropped", c.name))),
                None => warnings.push(err(&[], Target::Key, format!("output of '{}' is not read by any component; its events are dropped", c.name))),
            }
        }
    }
    (errors, warnings)
}

#[cfg(test)]
mod tests {
    use crate::graph::{InputRef, load_str};

    fn problems(text: &str) -> Vec<String> {
        match load_str(text, "p.yaml", "p") {
            Ok((_, w)) => w.iter().map(|w| format!("warning: {w}")).collect(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    const BODY: &str = "sources:\n  g: {type: generator, events: [{a: 1}]}\nsinks:\n  o: {type: blackhole, inputs: [g]}\n";

    #[test]
    fn pipeline_names_follow_the_component_name_rule() {
        let named = |name: &str| problems(&format!("name: {name}\n{BODY}"));
        assert_eq!(
            named("../../escape"),
            [
                "p.yaml:1:7: invalid pipeline name '../../escape': pipeline names match \
              [a-z][a-z0-9_]* (they name directories under --data-dir)"
            ]
        );
        assert_eq!(named("'Shop'").len(), 1);
        assert_eq!(named("\"\"").len(), 1);
        assert_eq!(named("shop_2"), Vec::<String>::new());
        let derived = |name: &str| match load_str(BODY, "x.yaml", name) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(
            derived("Bad.Name"),
            [
                "x.yaml:1:1: invalid pipeline name 'Bad.Name', taken from the file name: \
              pipeline names match [a-z][a-z0-9_]* (they name directories under --data-dir); \
              set one in the file with `name:`, e.g. `name: bad_name`"
            ]
        );
        assert!(derived("1st")[0].ends_with("e.g. `name: p_1st`"));
        assert_eq!(derived("job_c16"), Vec::<String>::new());
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

    #[test]
    fn components_that_fail_to_parse_still_have_their_inputs_checked() {
        let errs = problems(
            "sources:\n  gen: {type: generator, events: [{a: 1}]}\n  bad: {type: generatr}\ntransforms:\n  f: {type: filter, inputs: [gne], condition: 'true', bufer: {size: 10}}\n  t: {type: mapp, inputs: [f, bad, nope]}\nsinks:\n  o: {type: blackhole, inputs: [f, t, genn], colour: red}\n",
        );
        assert_eq!(
            errs,
            vec![
                "p.yaml:3:15: component 'bad': unknown source type 'generatr' (did you mean 'generator'?)",
                "p.yaml:5:30: component 'f': unknown input 'gne' (did you mean 'gen'?)",
                "p.yaml:5:55: component 'f': unknown field 'bufer' (did you mean 'buffer'?)",
                "p.yaml:6:13: component 't': unknown transform type 'mapp' (did you mean 'map'?)",
                "p.yaml:6:36: component 't': unknown input 'nope'",
                "p.yaml:8:39: component 'o': unknown input 'genn' (did you mean 'gen'?)",
                "p.yaml:8:46: component 'o': unknown field 'colour'",
            ]
        );
    }

    #[test]
    fn tests_may_name_components_kept_out_of_the_graph() {
        // `t` did not parse, `u`'s program does not compile, `s` is a
        // broken source: only their own errors, and what is wrong anyway
        // (a source as input, an unknown name).
        let errs = problems(
            "sources:\n  g: {type: generator, events: [{a: 1}]}\n  s: {type: generatr}\ntransforms:\n  t: {type: filtr, inputs: [g]}\n  u: {type: map, inputs: [g], program: '.x ='}\nsinks:\n  o: {type: blackhole, inputs: [t, u]}\ntests:\n  - name: one\n    input: {component: t, events: [{a: 1}]}\n    expect:\n      - {output: u, events: []}\n      - {output: t.unmatched, events: []}\n      - {output: s, events: []}\n      - {output: v, events: []}\n    faults:\n      - {component: u, fail: 1}\n  - name: two\n    input: {component: s, events: []}\n    expect: []\n",
        );
        assert_eq!(
            errs,
            vec![
                "p.yaml:3:13: component 's': unknown source type 'generatr' (did you mean 'generator'?)",
                "p.yaml:5:13: component 't': unknown transform type 'filtr' (did you mean 'filter'?)",
                "p.yaml:6:45: component 'u': program: invalid jq program: expected term at the end of the program",
                "p.yaml:16:18: test 'one': unknown component 'v'",
                "p.yaml:20:24: test 'two': input.component 's' is not a transform of this pipeline",
            ]
        );
    }

    #[test]
    fn no_sources_and_no_sinks_count_only_broken_components_of_their_section() {
        let broken_transform = "transforms:\n  t: {type: filtr}\n";
        assert_eq!(
            problems(broken_transform),
            vec![
                "p.yaml:2:13: component 't': unknown transform type 'filtr' (did you mean 'filter'?)",
                "p.yaml: the pipeline has no sources: add at least one under 'sources:'",
                "p.yaml: the pipeline has no sinks: add at least one under 'sinks:'",
            ]
        );
        let broken_source_and_sink =
            "sources:\n  g: {type: generatr}\nsinks:\n  o: {type: blackhol, inputs: [g]}\n";
        assert_eq!(
            problems(broken_source_and_sink),
            vec![
                "p.yaml:2:13: component 'g': unknown source type 'generatr' (did you mean 'generator'?)",
                "p.yaml:4:13: component 'o': unknown sink type 'blackhol' (did you mean 'blackhole'?)",
            ]
        );
        let broken_sink = "sinks:\n  o: {type: blackhole, inputs: [g], colour: red}\n";
        assert_eq!(
            problems(broken_sink),
            vec![
                "p.yaml:2:33: component 'o': unknown input 'g'",
                "p.yaml:2:37: component 'o': unknown field 'colour'",
                "p.yaml: the pipeline has no sources: add at least one under 'sources:'",
            ]
        );
    }
}
