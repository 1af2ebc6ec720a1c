//! `${VAR}` and `${VAR:-default}` substitution on the raw pipeline text,
//! before YAML parsing (SPEC §2). `$${` escapes a literal `${`.

use std::collections::HashMap;

/// An unset variable without a default, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolationError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Replaces variables from `lookup`; collects every problem instead of
/// stopping at the first.
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<InterpolationError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    let mut consumed = 0usize;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if tail.starts_with("$${") {
            out.push_str("${");
            rest = &tail[3..];
            consumed += at + 3;
            continue;
        }
        if !tail.starts_with("${") {
            out.push('$');
            rest = &tail[1..];
            consumed += at + 1;
            continue;
        }
        let (line, column) = line_col(text, consumed + at);
        let Some(end) = tail.find('}') else {
            errors.push(InterpolationError {
                line,
                column,
                message: "unterminated '${': add the closing '}'".into(),
            });
            out.push_str(tail);
            rest = "";
            break;
        };
        let body = &tail[2..end];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        let valid_name = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            errors.push(InterpolationError {
                line,
                column,
                message: format!("invalid environment variable name '{name}' in '${{{body}}}'"),
            });
        } else {
            match (lookup(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => errors.push(InterpolationError {
                    line,
                    column,
                    message: format!(
                        "environment variable '{name}' is not set (set it, or give a default: '${{{name}:-value}}')"
                    ),
                }),
            }
        }
        rest = &tail[end + 1..];
        consumed += at + end + 1;
    }
    out.push_str(rest);
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// Interpolates from the process environment.
pub fn interpolate_env(text: &str) -> Result<String, Vec<InterpolationError>> {
    interpolate(text, |name| std::env::var(name).ok())
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// A lookup over a fixed map, for tests and embedding.
pub fn from_map(map: &HashMap<String, String>) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| map.get(name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> HashMap<String, String> {
        HashMap::from([("HOME".to_string(), "/home/u".to_string())])
    }

    #[test]
    fn replaces_set_variables_and_defaults() {
        let v = vars();
        let out = interpolate("a: ${HOME}/x\nb: ${NOPE:-dflt}\nc: $$x $${HOME}", from_map(&v));
        assert_eq!(out.unwrap(), "a: /home/u/x\nb: dflt\nc: $$x ${HOME}");
    }

    #[test]
    fn reports_every_unset_variable_with_position() {
        let v = vars();
        let errs = interpolate("a: ${A}\nb:  ${B}", from_map(&v)).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!((errs[0].line, errs[0].column), (1, 4));
        assert_eq!((errs[1].line, errs[1].column), (2, 5));
        assert!(errs[1].message.contains("'B' is not set"));
    }

    #[test]
    fn empty_default_is_allowed_and_bad_names_rejected() {
        let v = vars();
        assert_eq!(interpolate("x${E:-}y", from_map(&v)).unwrap(), "xy");
        assert!(interpolate("${1A}", from_map(&v)).is_err());
        assert!(interpolate("${A", from_map(&v)).is_err());
    }
}
