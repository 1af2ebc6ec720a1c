//! serde's deserialisation errors as a user reads them: at the line:col of
//! the failing key or value, in YAML words rather than Rust type names,
//! with a did-you-mean for misspelt keys.

use super::raw::{RawPipeline, Section};
use crate::config::error::{ConfigError, did_you_mean};
use crate::config::positions::Target;

pub(super) type PathError = serde_path_to_error::Error<serde_yaml::Error>;

/// The config path serde was at when it failed (`buffer.size`, `inputs.1`).
fn error_path(err: &PathError) -> Vec<String> {
    err.path()
        .iter()
        .filter_map(|seg| match seg {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
            _ => None,
        })
        .collect()
}

/// A serde error inside component `name`. `shared_keys` are the keys every
/// component of the section takes, suggested for a misspelt top-level key.
pub(super) fn serde_error(
    raw: &RawPipeline,
    section: Section,
    name: &str,
    err: &PathError,
    shared_keys: &[&str],
) -> ConfigError {
    let mut path = error_path(err);
    let inner = plain_types(&err.inner().to_string());
    let field_path = path.join(".");
    let (message, target) = if let Some(rest) = inner.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default().to_string();
        if path.last() == Some(&field) {
            path.pop();
        }
        let field_path = path.join(".");
        // serde lists the expected fields in backticks after "expected".
        let expected: Vec<&str> = rest.split_once("expected").map_or(Vec::new(), |(_, e)| {
            e.split('`').skip(1).step_by(2).collect()
        });
        let at_top = path.is_empty();
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
        let prefix = if path.is_empty() {
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
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    raw.component_error(section, name, &path, target, message)
}

/// A problem in test `i`, positioned at the failing field.
pub(super) fn test_error(raw: &RawPipeline, i: usize, err: &PathError) -> ConfigError {
    let mut path = vec!["tests".to_string(), i.to_string()];
    path.extend(error_path(err));
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
