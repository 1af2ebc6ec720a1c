//! One component mapping -> its typed config. The `type` key picks the
//! config struct, the shared keys (`inputs`, `workers`, ...) go to the
//! section's common struct, the rest to the type's struct; each half is
//! deserialised on its own, so both report their problems in one run.

use super::errors::{PathError, serde_error};
use super::raw::{RawBroken, RawPipeline, RawSource, RawStage, Section};
use crate::components::{SinkKind, SourceKind, TransformKind};
use crate::config::controls::{SOURCE_KEYS, STAGE_KEYS, SourceCommon, StageCommon};
use crate::config::error::{ConfigError, did_you_mean};
use crate::config::positions::Target;
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

type FromValue<K> = fn(&str, Value) -> Option<Result<K, PathError>>;

/// Parses component `name` of `section` into `raw`. One that fails is
/// recorded in `raw.broken`, with the inputs it names if they can be read.
pub(super) fn parse_component(
    raw: &mut RawPipeline,
    section: Section,
    name: String,
    body: Value,
) -> Result<(), Vec<ConfigError>> {
    let inputs = if section.reads_inputs() {
        written_inputs(&body)
    } else {
        None
    };
    let parsed = match section {
        Section::Sources => parse_source(raw, &name, body).map(|s| raw.sources.push(s)),
        Section::Transforms => parse_stage(
            raw,
            section,
            &name,
            body,
            TransformKind::TYPES,
            TransformKind::from_value,
        )
        .map(|t| raw.transforms.push(t)),
        Section::Sinks => parse_stage(
            raw,
            section,
            &name,
            body,
            SinkKind::TYPES,
            SinkKind::from_value,
        )
        .map(|s| raw.sinks.push(s)),
    };
    if parsed.is_err() {
        raw.broken.push(RawBroken {
            section,
            name,
            inputs,
        });
    }
    parsed
}

/// `inputs` when it is a list of strings, read before (and regardless of)
/// the rest of the component's config.
fn written_inputs(body: &Value) -> Option<Vec<String>> {
    let Some(Value::Sequence(items)) = body.get("inputs") else {
        return None;
    };
    items
        .iter()
        .map(|item| item.as_str().map(str::to_string))
        .collect()
}

fn parse_source(raw: &RawPipeline, name: &str, body: Value) -> Result<RawSource, Vec<ConfigError>> {
    let (common, kind, mut errors) = parse_parts::<SourceCommon, _>(
        raw,
        Section::Sources,
        name,
        body,
        SOURCE_KEYS,
        SourceKind::TYPES,
        SourceKind::from_value,
    )?;
    if let Some(kind) = &kind {
        errors.extend(raw.check_errors(Section::Sources, name, kind.check()));
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

fn parse_stage<K>(
    raw: &RawPipeline,
    section: Section,
    name: &str,
    body: Value,
    types: &[&str],
    from_value: FromValue<K>,
) -> Result<RawStage<K>, Vec<ConfigError>> {
    let (common, kind, errors) =
        parse_parts::<StageCommon, _>(raw, section, name, body, STAGE_KEYS, types, from_value)?;
    match (common, kind) {
        (Some(common), Some(kind)) => Ok(RawStage {
            name: name.to_string(),
            common,
            kind,
        }),
        _ => Err(errors),
    }
}

/// The shared keys as `C` and the type's keys as `K`, each `None` when it
/// failed, with the errors of both.
type Parts<C, K> = (Option<C>, Option<K>, Vec<ConfigError>);

/// A component's two halves; `Err` when not even its type is known.
fn parse_parts<C: DeserializeOwned, K>(
    raw: &RawPipeline,
    section: Section,
    name: &str,
    body: Value,
    shared: &[&str],
    types: &[&str],
    from_value: FromValue<K>,
) -> Result<Parts<C, K>, Vec<ConfigError>> {
    let (type_name, common, specific) =
        split(raw, section, name, body, shared, types).map_err(|e| vec![e])?;
    let all_keys: Vec<&str> = shared.iter().copied().chain(["type"]).collect();
    let mut errors = Vec::new();
    let common = serde_path_to_error::deserialize::<_, C>(Value::Mapping(common))
        .map_err(|e| errors.push(serde_error(raw, section, name, &e, &all_keys)))
        .ok();
    let kind = from_value(&type_name, Value::Mapping(specific))
        .expect("type checked in split")
        .map_err(|e| errors.push(serde_error(raw, section, name, &e, &all_keys)))
        .ok();
    Ok((common, kind, errors))
}

/// Splits a component mapping into `type`, the shared keys and the rest.
fn split(
    raw: &RawPipeline,
    section: Section,
    name: &str,
    body: Value,
    shared: &[&str],
    types: &[&str],
) -> Result<(String, Mapping, Mapping), ConfigError> {
    let err =
        |msg: String, path: &[&str], target| raw.component_error(section, name, path, target, msg);
    let Value::Mapping(map) = body else {
        return Err(err(
            "a component must be a mapping with a 'type'".into(),
            &[],
            Target::Key,
        ));
    };
    let type_name = match map.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(_) => {
            return Err(err(
                "'type' must be a string".into(),
                &["type"],
                Target::Value,
            ));
        }
        None => {
            return Err(err(
                format!("missing 'type' (one of: {})", types.join(", ")),
                &[],
                Target::Key,
            ));
        }
    };
    if !types.contains(&type_name.as_str()) {
        return Err(err(
            format!(
                "unknown {} type '{type_name}'{}",
                section.singular(),
                did_you_mean(&type_name, types.iter().copied())
            ),
            &["type"],
            Target::Value,
        ));
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

#[cfg(test)]
mod tests {
    use super::Section;
    use crate::load::parse;
    use crate::load::tests::errors;

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
    fn a_broken_component_keeps_the_inputs_it_names() {
        let (raw, errs) = parse(
            "sources:\n  g: {type: generator, events: [{a: 1}], inputs: [x]}\ntransforms:\n  f: {type: filtr, inputs: [g, h]}\n  m: {type: map, inputs: [g, 7], program: '.'}\nsinks:\n  o: {type: blackhole, inputs: [f], colour: red}\n",
            "p.yaml",
            "p",
        );
        assert_eq!(errs.len(), 4, "{errs:?}");
        let broken: Vec<_> = raw
            .unwrap()
            .broken
            .into_iter()
            .map(|b| (b.section, b.name, b.inputs))
            .collect();
        let names = |n: &[&str]| Some(n.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            broken,
            vec![
                (Section::Sources, "g".into(), None),
                (Section::Transforms, "f".into(), names(&["g", "h"])),
                (Section::Transforms, "m".into(), None),
                (Section::Sinks, "o".into(), names(&["f"])),
            ]
        );
    }
}
