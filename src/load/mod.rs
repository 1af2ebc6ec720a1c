//! Pipeline text -> `RawPipeline`: interpolation, YAML parsing, and typed
//! component configs, with every problem collected and positioned.
//!
//! Components are deserialised one at a time: the `type` key picks the
//! config struct, the shared keys (`inputs`, `workers`, ...) go to
//! `StageCommon`, the rest to the type's struct. serde never sees a tagged
//! enum, so unknown-field and type errors keep their paths, which
//! `Positions` turns into line:col.

use crate::components::{SinkKind, SourceKind, TransformKind};
use crate::config::controls::{SOURCE_KEYS, STAGE_KEYS, SourceCommon, StageCommon};
use crate::config::error::{ConfigError, did_you_mean};
use crate::config::interpolate::interpolate_env;
use crate::config::positions::{Positions, Target};
use serde_yaml::{Mapping, Value};
use std::path::Path;

pub const TOP_LEVEL_KEYS: &[&str] = &["name", "sources", "transforms", "sinks", "tests"];

/// A source as written: name, shared keys, type-specific config.
#[derive(Debug, Clone)]
pub struct RawSource {
    pub name: String,
    pub common: SourceCommon,
    pub kind: SourceKind,
}

/// A transform or sink as written.
#[derive(Debug, Clone)]
pub struct RawStage<K> {
    pub name: String,
    pub common: StageCommon,
    pub kind: K,
}

/// A parsed but unvalidated pipeline: inputs are still strings.
pub struct RawPipeline {
    pub name: String,
    /// The file as the user named it, for messages.
    pub file: String,
    pub text: String,
    pub sources: Vec<RawSource>,
    pub transforms: Vec<RawStage<TransformKind>>,
    pub sinks: Vec<RawStage<SinkKind>>,
    /// Components that exist but failed to parse: not "unknown" as inputs.
    pub broken: Vec<String>,
    /// The `tests:` section (run by `flowgate test`).
    pub tests: Vec<crate::config::tests::TestCase>,
    pub positions: Positions,
}

impl RawPipeline {
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(&self.file, message)
    }
}

/// Reads and parses a pipeline file. `Err` only when nothing could be read
/// or parsed; otherwise problems come back beside the partial pipeline.
pub fn load_file(path: &Path) -> (Option<RawPipeline>, Vec<ConfigError>) {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            parse(&text, &file, &stem)
        }
        Err(e) => (
            None,
            vec![ConfigError::new(
                &file,
                format!("cannot read the file: {e}"),
            )],
        ),
    }
}

/// Parses pipeline text; `default_name` is used when `name:` is absent.
pub fn parse(
    text: &str,
    file: &str,
    default_name: &str,
) -> (Option<RawPipeline>, Vec<ConfigError>) {
    let (text, shifts) = match interpolate_env(text) {
        Ok(t) => t,
        Err(errs) => {
            let errors = errs
                .into_iter()
                .map(|e| ConfigError::new(file, e.message).at(Some((e.line, e.column))))
                .collect();
            return (None, errors);
        }
    };
    let root: Value = match serde_yaml::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            let pos = e
                .location()
                .map(|l| crate::config::interpolate::unshift(&shifts, (l.line(), l.column())));
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
            return (
                None,
                vec![ConfigError::new(file, format!("invalid YAML: {msg}")).at(pos)],
            );
        }
    };
    let positions = Positions::parse(&text, shifts);
    let mut errors = Vec::new();
    let mut raw = RawPipeline {
        name: default_name.to_string(),
        file: file.to_string(),
        text: text.clone(),
        sources: Vec::new(),
        transforms: Vec::new(),
        sinks: Vec::new(),
        broken: Vec::new(),
        tests: Vec::new(),
        positions,
    };
    let top = match root {
        Value::Mapping(m) => m,
        Value::Null => Mapping::new(),
        _ => {
            errors.push(
                raw.error("a pipeline file must be a mapping with sources, transforms and sinks")
                    .at(Some((1, 1))),
            );
            return (Some(raw), errors);
        }
    };
    for (key, value) in top {
        let Some(key) = key.as_str().map(str::to_string) else {
            errors.push(raw.error("top-level keys must be strings"));
            continue;
        };
        match key.as_str() {
            "name" => match value {
                Value::String(s) => raw.name = s,
                _ => errors.push(
                    raw.error("'name' must be a string")
                        .at(raw.positions.find(&["name"], Target::Value)),
                ),
            },
            "tests" => match value {
                Value::Null => {}
                Value::Sequence(items) => {
                    for (i, item) in items.into_iter().enumerate() {
                        match serde_path_to_error::deserialize::<_, crate::config::tests::TestCase>(
                            item,
                        ) {
                            Ok(t) => raw.tests.push(t),
                            Err(e) => errors.push(test_error(&raw, i, &e)),
                        }
                    }
                }
                _ => errors.push(
                    raw.error("'tests' must be a list of tests (see SPEC §9)")
                        .at(raw.positions.find(&["tests"], Target::Value)),
                ),
            },
            "sources" | "transforms" | "sinks" => {
                for (name, body) in section(&raw, &key, value, &mut errors) {
                    let parsed = match key.as_str() {
                        "sources" => parse_source(&raw, &name, body).map(|s| raw.sources.push(s)),
                        "transforms" => parse_stage(
                            &raw,
                            "transforms",
                            &name,
                            body,
                            TransformKind::TYPES,
                            TransformKind::from_value,
                        )
                        .map(|s| raw.transforms.push(s)),
                        _ => parse_stage(
                            &raw,
                            "sinks",
                            &name,
                            body,
                            SinkKind::TYPES,
                            SinkKind::from_value,
                        )
                        .map(|s| raw.sinks.push(s)),
                    };
                    if let Err(errs) = parsed {
                        errors.extend(errs);
                        raw.broken.push(name);
                    }
                }
            }
            other => errors.push(
                raw.error(format!(
                    "unknown top-level key '{other}'{}",
                    did_you_mean(other, TOP_LEVEL_KEYS.iter().copied())
                ))
                .at(raw.positions.find(&[other], Target::Key)),
            ),
        }
    }
    (Some(raw), errors)
}

/// The components of one section, in file order.
fn section(
    raw: &RawPipeline,
    key: &str,
    value: Value,
    errors: &mut Vec<ConfigError>,
) -> Vec<(String, Value)> {
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

/// Splits a component mapping into `type`, the shared keys and the rest.
fn split(
    raw: &RawPipeline,
    section: &str,
    name: &str,
    body: Value,
    shared: &[&str],
    types: &[&str],
) -> Result<(String, Mapping, Mapping), Vec<ConfigError>> {
    let err = |msg: String, path: &[&str], target| {
        let mut full = vec![section, name];
        full.extend_from_slice(path);
        raw.error(msg)
            .component(name)
            .at(raw.positions.find(&full, target))
    };
    let Value::Mapping(map) = body else {
        return Err(vec![err(
            "a component must be a mapping with a 'type'".into(),
            &[],
            Target::Key,
        )]);
    };
    let type_name = match map.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(_) => {
            return Err(vec![err(
                "'type' must be a string".into(),
                &["type"],
                Target::Value,
            )]);
        }
        None => {
            return Err(vec![err(
                format!("missing 'type' (one of: {})", types.join(", ")),
                &[],
                Target::Key,
            )]);
        }
    };
    if !types.contains(&type_name.as_str()) {
        let kind = section.trim_end_matches('s');
        return Err(vec![err(
            format!(
                "unknown {kind} type '{type_name}'{}",
                did_you_mean(&type_name, types.iter().copied())
            ),
            &["type"],
            Target::Value,
        )]);
    }
    let (mut common, mut specific) = (Mapping::new(), Mapping::new());
    for (k, v) in map {
        match k.as_str() {
            Some("type") => {}
            Some(key) if shared.contains(&key) => {
                common.insert(k, v);
            }
            _ => {
                specific.insert(k, v);
            }
        }
    }
    Ok((type_name, common, specific))
}

fn parse_source(raw: &RawPipeline, name: &str, body: Value) -> Result<RawSource, Vec<ConfigError>> {
    let (type_name, common, specific) =
        split(raw, "sources", name, body, SOURCE_KEYS, SourceKind::TYPES)?;
    let common = serde_path_to_error::deserialize::<_, SourceCommon>(Value::Mapping(common));
    let kind = SourceKind::from_value(&type_name, Value::Mapping(specific))
        .expect("type checked in split");
    let mut errors = Vec::new();
    let all_keys: Vec<&str> = SOURCE_KEYS.iter().copied().chain(["type"]).collect();
    let common = common
        .map_err(|e| errors.push(serde_error(raw, "sources", name, &e, &all_keys)))
        .ok();
    let kind = kind
        .map_err(|e| errors.push(serde_error(raw, "sources", name, &e, &all_keys)))
        .ok();
    if let Some(kind) = &kind {
        for (path, message) in kind.check() {
            let mut full = vec!["sources", name];
            full.extend(path.iter().copied());
            errors.push(
                raw.error(format!("{}: {message}", path.join(".")))
                    .component(name)
                    .at(raw.positions.find(&full, Target::Value)),
            );
        }
    }
    match (common, kind) {
        (Some(common), Some(kind)) if errors.is_empty() => Ok(RawSource {
            name: name.to_string(),
            common,
            kind,
        }),
        _ => Err(errors),
    }
}

type FromValue<K> =
    fn(&str, Value) -> Option<Result<K, serde_path_to_error::Error<serde_yaml::Error>>>;

fn parse_stage<K>(
    raw: &RawPipeline,
    section: &str,
    name: &str,
    body: Value,
    types: &[&str],
    from_value: FromValue<K>,
) -> Result<RawStage<K>, Vec<ConfigError>> {
    let (type_name, common, specific) = split(raw, section, name, body, STAGE_KEYS, types)?;
    let all_keys: Vec<&str> = STAGE_KEYS.iter().copied().chain(["type"]).collect();
    let mut errors = Vec::new();
    let common = serde_path_to_error::deserialize::<_, StageCommon>(Value::Mapping(common))
        .map_err(|e| errors.push(serde_error(raw, section, name, &e, &all_keys)))
        .ok();
    let kind = from_value(&type_name, Value::Mapping(specific))
        .expect("type checked in split")
        .map_err(|e| errors.push(serde_error(raw, section, name, &e, &all_keys)))
        .ok();
    match (common, kind) {
        (Some(common), Some(kind)) => Ok(RawStage {
            name: name.to_string(),
            common,
            kind,
        }),
        _ => Err(errors),
    }
}

/// Turns a serde error at a path inside a component into a positioned,
/// actionable message.
fn serde_error(
    raw: &RawPipeline,
    section: &str,
    name: &str,
    err: &serde_path_to_error::Error<serde_yaml::Error>,
    shared_keys: &[&str],
) -> ConfigError {
    let mut path: Vec<String> = vec![section.to_string(), name.to_string()];
    for seg in err.path().iter() {
        match seg {
            serde_path_to_error::Segment::Map { key } => path.push(key.clone()),
            serde_path_to_error::Segment::Seq { index } => path.push(index.to_string()),
            _ => {}
        }
    }
    let inner = plain_types(&err.inner().to_string());
    let field_path = path[2..].join(".");
    let (message, target) = if let Some(rest) = inner.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default().to_string();
        if path.last() == Some(&field) {
            path.pop();
        }
        let field_path = path[2..].join(".");
        // serde lists the expected fields in backticks after "expected".
        let expected: Vec<&str> = rest.split_once("expected").map_or(Vec::new(), |(_, e)| {
            e.split('`').skip(1).step_by(2).collect()
        });
        let at_top = path.len() == 2;
        let candidates = expected.iter().copied().chain(if at_top {
            shared_keys.to_vec()
        } else {
            Vec::new()
        });
        let hint = did_you_mean(&field, candidates);
        let hint = if hint.is_empty() && !expected.is_empty() {
            format!(" (expected one of: {})", expected.join(", "))
        } else {
            hint
        };
        let prefix = if at_top {
            String::new()
        } else {
            format!("{field_path}: ")
        };
        path.push(field.clone());
        (
            format!("{prefix}unknown field '{field}'{hint}"),
            Target::Key,
        )
    } else if let Some(rest) = inner.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let prefix = if path.len() == 2 {
            String::new()
        } else {
            format!("{field_path}: ")
        };
        (format!("{prefix}missing field '{field}'"), Target::Key)
    } else if field_path.is_empty() {
        (inner.replace('`', "'"), Target::Key)
    } else {
        (
            format!("{field_path}: {}", inner.replace('`', "'")),
            Target::Value,
        )
    };
    raw.error(message)
        .component(name)
        .at(raw.positions.find(&path, target))
}

/// A problem in test `i`, positioned at the failing field.
fn test_error(
    raw: &RawPipeline,
    i: usize,
    err: &serde_path_to_error::Error<serde_yaml::Error>,
) -> ConfigError {
    let mut path = vec!["tests".to_string(), i.to_string()];
    for seg in err.path().iter() {
        match seg {
            serde_path_to_error::Segment::Map { key } => path.push(key.clone()),
            serde_path_to_error::Segment::Seq { index } => path.push(index.to_string()),
            _ => {}
        }
    }
    let inner = plain_types(&err.inner().to_string()).replace('`', "'");
    let target = if inner.starts_with("unknown field") || inner.starts_with("missing field") {
        Target::Key
    } else {
        Target::Value
    };
    raw.error(format!("tests[{i}]: {inner}"))
        .at(raw.positions.find(&path, target))
}

/// serde names Rust types in its messages; users wrote YAML.
fn plain_types(message: &str) -> String {
    [
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected u64", "expected a whole number (0 or more)"),
        ("expected u32", "expected a whole number (0 or more)"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected a list, e.g. [a, b]"),
        ("expected a map", "expected a mapping of keys to values"),
        ("invalid type: sequence", "invalid type: list"),
        ("invalid type: map", "invalid type: mapping"),
    ]
    .iter()
    .fold(message.to_string(), |m, (from, to)| m.replace(from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
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
        assert_eq!(raw.transforms[0].common.workers, 2);
        assert_eq!(raw.sinks[0].kind.type_name(), "blackhole");
    }

    #[test]
    fn reports_unknown_fields_types_and_bad_values_with_positions() {
        let errs = errors(
            "sources:\n  g:\n    type: generatr\ntransforms:\n  f:\n    type: filter\n    inputs: [g]\n    condition: '.a'\n    workrs: 2\n  m:\n    type: map\n    inputs: [f]\n    program: '.'\n    buffer: {size: many}\nsinks:\n  o: {type: blackhole, inputs: [m], colour: red}\nextra: 1\n",
        );
        assert_eq!(
            errs,
            vec![
                "p.yaml:3:11: component 'g': unknown source type 'generatr' (did you mean 'generator'?)",
                "p.yaml:9:5: component 'f': unknown field 'workrs' (did you mean 'workers'?)",
                "p.yaml:14:20: component 'm': buffer.size: invalid type: string \"many\", expected a whole number (0 or more)",
                "p.yaml:16:37: component 'o': unknown field 'colour'",
                "p.yaml:17:1: unknown top-level key 'extra'",
            ]
        );
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
