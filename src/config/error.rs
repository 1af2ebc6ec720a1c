//! Configuration errors as a user reads them:
//! `FILE:LINE:COL: component 'NAME': MESSAGE`.

use std::fmt;

/// One problem in a pipeline file. `validate` prints all of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    pub component: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            position: None,
            component: None,
            message: message.into(),
        }
    }

    pub fn at(mut self, position: Option<(usize, usize)>) -> Self {
        self.position = position;
        self
    }

    pub fn component(mut self, name: &str) -> Self {
        self.component = Some(name.to_string());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        write!(f, ": ")?;
        if let Some(name) = &self.component {
            write!(f, "component '{name}': ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// A problem that does not stop the pipeline (e.g. an output nobody reads).
pub type ConfigWarning = ConfigError;

/// Suggests the closest candidate by edit distance, for "did you mean" hints.
pub fn suggest<'a>(
    unknown: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(unknown, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3) && *d < c.len().max(unknown.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `" (did you mean 'x'?)"` or an empty string.
pub fn did_you_mean<'a>(unknown: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    suggest(unknown, candidates)
        .map(|s| format!(" (did you mean '{s}'?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_and_without_position() {
        let e = ConfigError::new("p.yaml", "bad")
            .at(Some((3, 5)))
            .component("x");
        assert_eq!(e.to_string(), "p.yaml:3:5: component 'x': bad");
        assert_eq!(ConfigError::new("p.yaml", "bad").to_string(), "p.yaml: bad");
    }

    #[test]
    fn suggests_close_names_only() {
        let names = ["workers", "ordered", "buffer"];
        assert_eq!(suggest("workrs", names), Some("workers"));
        assert_eq!(suggest("zzz", names), None);
        assert_eq!(
            did_you_mean("valdi", ["valid", "enrich"]),
            " (did you mean 'valid'?)"
        );
    }
}
