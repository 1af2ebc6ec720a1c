//! Pipeline text -> `RawPipeline`: interpolation, YAML parsing, and typed
//! component configs, with every problem collected and positioned.
//!
//! Components are deserialised one at a time (`component.rs`): serde never
//! sees a tagged enum, so unknown-field and type errors keep their paths,
//! which `Positions` turns into line:col (`errors.rs`).

mod component;
mod errors;
mod raw;

pub use raw::{RawBroken, RawPipeline, RawSource, RawStage, Section};

use crate::config::error::{ConfigError, did_you_mean};
use crate::config::interpolate::{Shift, interpolate_env, unshift};
use crate::config::positions::{Positions, Target};
use serde_yaml::{Mapping, Value};
use std::path::Path;

pub const TOP_LEVEL_KEYS: &[&str] = &["name", "sources", "transforms", "sinks", "tests"];

/// Reads and parses a pipeline file. `None` only when nothing could be read
/// or parsed; otherwise problems come back beside the partial pipeline.
pub fn load_file(path: &Path) -> (Option<RawPipeline>, Vec<ConfigError>) {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &file, &default_name(path)),
        Err(e) => (
            None,
            vec![ConfigError::new(
                &file,
                format!("cannot read the file: {e}"),
            )],
        ),
    }
}

/// The name of a pipeline whose file sets no `name:`: the file stem, with
/// `-` read as `_` (`my-pipeline.yaml` is `my_pipeline`), since pipeline
/// names follow the component-name rule and `-` is common in file names.
/// Whatever else does not fit the rule is refused by `graph::compile`.
pub fn default_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().replace('-', "_"))
        .unwrap_or_default()
}

/// Parses pipeline text; `default_name` is used when `name:` is absent.
pub fn parse(
    text: &str,
    file: &str,
    default_name: &str,
) -> (Option<RawPipeline>, Vec<ConfigError>) {
    let (text, shifts, root) = match read_yaml(text, file) {
        Ok(read) => read,
        Err(errors) => return (None, errors),
    };
    let positions = Positions::parse(&text, shifts);
    let mut raw = RawPipeline {
        name: default_name.to_string(),
        name_given: false,
        file: file.to_string(),
        text,
        sources: Vec::new(),
        transforms: Vec::new(),
        sinks: Vec::new(),
        broken: Vec::new(),
        tests: Vec::new(),
        positions,
    };
    let errors = parse_top_level(&mut raw, root);
    (Some(raw), errors)
}

/// Interpolated text, its shifts back to the file as written, and its YAML.
fn read_yaml(text: &str, file: &str) -> Result<(String, Vec<Shift>, Value), Vec<ConfigError>> {
    let (text, shifts) = interpolate_env(text).map_err(|errs| {
        errs.into_iter()
            .map(|e| ConfigError::new(file, e.message).at(Some((e.line, e.column))))
            .collect::<Vec<_>>()
    })?;
    match serde_yaml::from_str(&text) {
        Ok(root) => Ok((text, shifts, root)),
        Err(e) => {
            let pos = e
                .location()
                .map(|l| unshift(&shifts, (l.line(), l.column())));
            let msg = e.to_string();
            // serde_yaml appends " at line L column C"; the position prefix says it already.
            let mut msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            let tab_at_error = e.location().is_some_and(|l| {
                text.lines()
                    .nth(l.line().saturating_sub(1))
                    .is_some_and(|line| line.starts_with('\t'))
            });
            if tab_at_error {
                msg.push_str(" (YAML does not allow tabs for indentation: use spaces)");
            }
            Err(vec![
                ConfigError::new(file, format!("invalid YAML: {msg}")).at(pos),
            ])
        }
    }
}

/// Fills `raw` from the top-level mapping, key by key.
fn parse_top_level(raw: &mut RawPipeline, root: Value) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let top = match root {
        Value::Mapping(m) => m,
        Value::Null => Mapping::new(),
        _ => {
            return vec![
                raw.error("a pipeline file must be a mapping with sources, transforms and sinks")
                    .at(Some((1, 1))),
            ];
        }
    };
    for (key, value) in top {
        let Some(key) = key.as_str() else {
            errors.push(raw.error("top-level keys must be strings"));
            continue;
        };
        match key {
            "name" => match value {
                Value::String(s) => {
                    raw.name = s;
                    raw.name_given = true;
                }
                _ => errors.push(
                    raw.error("'name' must be a string")
                        .at(raw.positions.find(&["name"], Target::Value)),
                ),
            },
            "tests" => parse_tests(raw, value, &mut errors),
            other => match Section::from_key(other) {
                Some(section) => {
                    for (name, body) in section_entries(raw, section, value, &mut errors) {
                        if let Err(errs) = component::parse_component(raw, section, name, body) {
                            errors.extend(errs);
                        }
                    }
                }
                None => errors.push(
                    raw.error(format!(
                        "unknown top-level key '{other}'{}",
                        did_you_mean(other, TOP_LEVEL_KEYS.iter().copied())
                    ))
                    .at(raw.positions.find(&[other], Target::Key)),
                ),
            },
        }
    }
    errors
}

/// The `tests:` section into `raw.tests`, test by test.
fn parse_tests(raw: &mut RawPipeline, value: Value, errors: &mut Vec<ConfigError>) {
    match value {
        Value::Null => {}
        Value::Sequence(items) => {
            for (i, item) in items.into_iter().enumerate() {
                match serde_path_to_error::deserialize::<_, crate::config::tests::TestCase>(item) {
                    Ok(t) => raw.tests.push(t),
                    Err(e) => errors.push(errors::test_error(raw, i, &e)),
                }
            }
        }
        _ => errors.push(
            raw.error("'tests' must be a list of tests (see SPEC §9)")
                .at(raw.positions.find(&["tests"], Target::Value)),
        ),
    }
}

/// The components of one section, in file order.
fn section_entries(
    raw: &RawPipeline,
    section: Section,
    value: Value,
    errors: &mut Vec<ConfigError>,
) -> Vec<(String, Value)> {
    let key = section.key();
    match value {
        Value::Null => Vec::new(),
        Value::Mapping(m) => m
            .into_iter()
            .filter_map(|(k, v)| match k {
                Value::String(s) => Some((s, v)),
                other => {
                    errors.push(
                        raw.error(format!("component names must be strings, not {other:?}"))
                            .at(raw.positions.find(&[key], Target::Key)),
                    );
                    None
                }
            })
            .collect(),
        _ => {
            errors.push(
                raw.error(format!(
                    "'{key}' must be a mapping of component names to configs"
                ))
                .at(raw.positions.find(&[key], Target::Value)),
            );
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every problem `parse` finds in `text`, as printed.
    pub(crate) fn errors(text: &str) -> Vec<String> {
        parse(text, "p.yaml", "p")
            .1
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn parses_a_pipeline_and_defaults_the_name() {
        let (raw, errs) = parse(
            "sources:\n  g: {type: generator, events: [{a: 1}], count: 2}\ntransforms:\n  f: {type: filter, inputs: [g], condition: '.a > 0', workers: 2}\nsinks:\n  o: {type: blackhole, inputs: [f]}\n",
            "p.yaml",
            "stem",
        );
        assert!(errs.is_empty(), "{errs:?}");
        let raw = raw.unwrap();
        assert_eq!(raw.name, "stem");
        assert_eq!(
            raw.transforms[0].common.workers,
            crate::config::controls::Workers::Fixed(2)
        );
        assert_eq!(raw.sinks[0].kind.type_name(), "blackhole");
    }

    #[test]
    fn default_names_are_file_stems_with_dashes_as_underscores() {
        let name = |p: &str| default_name(Path::new(p));
        assert_eq!(name("/etc/flowgate/job_a.yaml"), "job_a");
        assert_eq!(name("my-pipeline.yaml"), "my_pipeline");
        assert_eq!(name("conf/Bad.Name.yml"), "Bad.Name");
        let (raw, _) = parse("name: given\n", "p.yaml", "p");
        assert!(raw.is_some_and(|r| r.name == "given" && r.name_given));
        let (raw, _) = parse("sources: {}\n", "p.yaml", "p");
        assert!(raw.is_some_and(|r| r.name == "p" && !r.name_given));
    }

    #[test]
    fn interpolation_and_yaml_errors_have_positions() {
        assert_eq!(
            errors("name: ${NOPE_NOT_SET_X}\n")[0],
            "p.yaml:1:7: environment variable 'NOPE_NOT_SET_X' is not set (set it, or give a default: '${NOPE_NOT_SET_X:-value}')"
        );
        assert!(errors("sources: [\n")[0].starts_with("p.yaml:2:1: invalid YAML"));
        assert!(
            errors("sources:\n\tin: {type: stdin}\n")[0]
                .ends_with("(YAML does not allow tabs for indentation: use spaces)")
        );
    }
}
