//! Positions of keys and values in the pipeline text, for error messages.
//!
//! The config structs stay plain serde types; when something is wrong, the
//! config path of the failing field (`transforms.enrich.workers`) is looked
//! up in a spanned re-parse of the same text (marked-yaml).

use super::interpolate::{Shift, unshift};
use marked_yaml::Node;

pub struct Positions {
    root: Option<Node>,
    lines: Vec<String>,
    shifts: Vec<Shift>,
}

/// Where an error should point: at a key or at its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Key,
    Value,
}

impl Positions {
    /// `text` is the interpolated text; `shifts` map its positions back to
    /// the file as written.
    pub fn parse(text: &str, shifts: Vec<Shift>) -> Self {
        // marked-yaml rejects anchors and tags that serde_yaml accepts; then
        // errors carry the nearest position we can find (none).
        Self {
            root: marked_yaml::parse_yaml(0, text).ok(),
            lines: text.lines().map(String::from).collect(),
            shifts,
        }
    }

    /// A position in the interpolated text, as the user sees it in the file.
    pub fn user(&self, pos: (usize, usize)) -> (usize, usize) {
        unshift(&self.shifts, pos)
    }

    pub fn find<S: AsRef<str>>(&self, path: &[S], target: Target) -> Option<(usize, usize)> {
        self.find_raw(path, target).map(|p| self.user(p))
    }

    /// 1-based line and column of the key or value at `path`; falls back to
    /// the longest existing prefix of the path.
    fn find_raw<S: AsRef<str>>(&self, path: &[S], target: Target) -> Option<(usize, usize)> {
        let mut node = self.root.as_ref()?;
        let mut best = None;
        for (i, seg) in path.iter().enumerate() {
            let seg = seg.as_ref();
            let last = i + 1 == path.len();
            match node {
                Node::Mapping(m) => {
                    let Some((key, value)) = m.iter().find(|(k, _)| k.as_str() == seg) else {
                        return best;
                    };
                    best = mark(key.span()).or(best);
                    if last && target == Target::Value {
                        return mark(value.span()).or(best);
                    }
                    node = value;
                }
                Node::Sequence(s) => {
                    let Some(item) = seg.parse::<usize>().ok().and_then(|i| s.get(i)) else {
                        return best;
                    };
                    best = mark(item.span()).or(best);
                    node = item;
                }
                Node::Scalar(_) => return best,
            }
        }
        best
    }

    /// Position of the character `offset` (in bytes) inside the scalar at
    /// `path`, for errors inside jq programs. Exact for single-line scalars.
    pub fn inside_value<S: AsRef<str>>(
        &self,
        path: &[S],
        text: &str,
        offset: usize,
    ) -> Option<(usize, usize)> {
        let (line, col) = self.find_raw(path, Target::Value)?;
        let before = &text[..offset.min(text.len())];
        if before.contains('\n') {
            return Some(self.user((line, col)));
        }
        let quoted = self
            .lines
            .get(line - 1)
            .and_then(|l| l.chars().nth(col - 1))
            .is_some_and(|c| c == '\'' || c == '"');
        Some(self.user((line, col + usize::from(quoted) + before.chars().count())))
    }
}

fn mark(span: &marked_yaml::Span) -> Option<(usize, usize)> {
    span.start().map(|m| (m.line(), m.column()))
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Positions {
        fn parse_plain(text: &str) -> Self {
            Self::parse(text, Vec::new())
        }
    }

    #[test]
    fn finds_keys_values_and_sequence_items() {
        let p = Positions::parse_plain("transforms:\n  a:\n    workers: 3\n    inputs: [x, y]\n");
        assert_eq!(
            p.find(&["transforms", "a", "workers"], Target::Key),
            Some((3, 5))
        );
        assert_eq!(
            p.find(&["transforms", "a", "workers"], Target::Value),
            Some((3, 14))
        );
        assert_eq!(
            p.find(&["transforms", "a", "inputs", "1"], Target::Value),
            Some((4, 17))
        );
        assert_eq!(
            p.find(&["transforms", "a", "nope"], Target::Key),
            Some((2, 3))
        );
    }
}
