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

/// Where a substitution changed the length of a line: positions in the
/// expanded text after `column` (1-based, expanded) on `line` are off by
/// `delta` characters from the file the user wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shift {
    pub line: usize,
    pub column: usize,
    pub delta: isize,
}

/// Maps a position in the expanded text back to the file as written.
pub fn unshift(shifts: &[Shift], (line, column): (usize, usize)) -> (usize, usize) {
    let delta: isize = shifts
        .iter()
        .filter(|s| s.line == line && s.column <= column)
        .map(|s| s.delta)
        .sum();
    (line, (column as isize + delta).max(1) as usize)
}

/// Replaces variables from `lookup`; collects every problem instead of
/// stopping at the first.
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<InterpolationError>> {
    interpolate_with_shifts(text, lookup).map(|(t, _)| t)
}

/// `interpolate`, also returning the position shifts it made.
pub fn interpolate_with_shifts(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(String, Vec<Shift>), Vec<InterpolationError>> {
    let mut shifts = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    let mut consumed = 0usize;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
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
        let replaced_from = out.len();
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
        let written = out[replaced_from..].chars().count() as isize;
        let original = tail[..end + 1].chars().count() as isize;
        if written != original {
            let (_, column) = line_col(&out, out.len());
            shifts.push(Shift {
                line,
                column,
                delta: original - written,
            });
        }
        rest = &tail[end + 1..];
        consumed += at + end + 1;
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok((out, shifts))
    } else {
        Err(errors)
    }
}

/// Interpolates from the process environment.
pub fn interpolate_env(text: &str) -> Result<(String, Vec<Shift>), Vec<InterpolationError>> {
    interpolate_with_shifts(text, |name| std::env::var(name).ok())
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
        let out = interpolate(
            "a: ${HOME}/x\nb: ${NOPE:-dflt}\nc: $$x $${HOME}",
            from_map(&v),
        );
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
    fn positions_after_a_substitution_map_back_to_the_file() {
        let v = vars();
        let (out, shifts) = interpolate_with_shifts("a: ${NOPE:-d}, b: x", from_map(&v)).unwrap();
        assert_eq!(out, "a: d, b: x");
        // 'x' is at column 10 in the output and column 19 in the file.
        assert_eq!(unshift(&shifts, (1, 10)), (1, 19));
        assert_eq!(unshift(&shifts, (1, 2)), (1, 2));
    }

    #[test]
    fn empty_default_is_allowed_and_bad_names_rejected() {
        let v = vars();
        assert_eq!(interpolate("x${E:-}y", from_map(&v)).unwrap(), "xy");
        assert!(interpolate("${1A}", from_map(&v)).is_err());
        assert!(interpolate("${A", from_map(&v)).is_err());
    }
}
