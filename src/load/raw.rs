//! The parsed, unvalidated pipeline: components as written (inputs are
//! still strings), the ones that failed to parse, and the positions every
//! later message points at.

use crate::components::{SinkKind, SourceKind, TransformKind};
use crate::config::controls::{SourceCommon, StageCommon};
use crate::config::error::ConfigError;
use crate::config::positions::{Positions, Target};

/// The three component sections of a pipeline file, in component id order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Sources,
    Transforms,
    Sinks,
}

impl Section {
    pub fn from_key(key: &str) -> Option<Self> {
        match key {
            "sources" => Some(Self::Sources),
            "transforms" => Some(Self::Transforms),
            "sinks" => Some(Self::Sinks),
            _ => None,
        }
    }

    /// The top-level key, also the first segment of a position path.
    pub fn key(self) -> &'static str {
        match self {
            Self::Sources => "sources",
            Self::Transforms => "transforms",
            Self::Sinks => "sinks",
        }
    }

    /// What one component of the section is called in messages and metrics.
    pub fn singular(self) -> &'static str {
        match self {
            Self::Sources => "source",
            Self::Transforms => "transform",
            Self::Sinks => "sink",
        }
    }

    /// Transforms and sinks read `inputs`; sources read nothing.
    pub fn reads_inputs(self) -> bool {
        self != Self::Sources
    }
}

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

/// A component whose config failed to parse. It still exists, so reading
/// it is not an "unknown input"; and what it reads is still checked, so
/// every problem of the file shows in one run.
#[derive(Debug, Clone)]
pub struct RawBroken {
    pub section: Section,
    pub name: String,
    /// The transform's or sink's `inputs` when they are a list of names,
    /// whatever else is wrong with it; `None` for a source, or when
    /// `inputs` itself is what is wrong (that error already says so).
    pub inputs: Option<Vec<String>>,
}

/// A parsed but unvalidated pipeline: inputs are still strings.
pub struct RawPipeline {
    pub name: String,
    /// The file sets `name:`; otherwise `name` is the default the loader
    /// was given (from the file name, see `load::default_name`).
    pub name_given: bool,
    /// The file as the user named it, for messages.
    pub file: String,
    pub text: String,
    pub sources: Vec<RawSource>,
    pub transforms: Vec<RawStage<TransformKind>>,
    pub sinks: Vec<RawStage<SinkKind>>,
    /// Components that exist but failed to parse, in file order.
    pub broken: Vec<RawBroken>,
    /// The `tests:` section (run by `flowgate test`).
    pub tests: Vec<crate::config::tests::TestCase>,
    pub positions: Positions,
}

impl RawPipeline {
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(&self.file, message)
    }

    /// Where `path` (relative to component `name`) is written in the file,
    /// or the nearest enclosing key that is.
    pub fn position(
        &self,
        section: Section,
        name: &str,
        path: &[&str],
        target: Target,
    ) -> Option<(usize, usize)> {
        let mut full = vec![section.key(), name];
        full.extend_from_slice(path);
        self.positions.find(&full, target)
    }

    /// An error about component `name`, pointing at `path` under it.
    pub fn component_error(
        &self,
        section: Section,
        name: &str,
        path: &[&str],
        target: Target,
        message: impl Into<String>,
    ) -> ConfigError {
        self.error(message)
            .component(name)
            .at(self.position(section, name, path, target))
    }

    /// What a component type's own `check` found, each problem at the
    /// value it names and prefixed with that value's path.
    pub fn check_errors(
        &self,
        section: Section,
        name: &str,
        problems: Vec<(Vec<&'static str>, String)>,
    ) -> Vec<ConfigError> {
        problems
            .into_iter()
            .map(|(path, message)| {
                let message = format!("{}: {message}", path.join("."));
                self.component_error(section, name, &path, Target::Value, message)
            })
            .collect()
    }

    /// Every parsed component's section and name, in id order.
    pub fn component_names(&self) -> impl Iterator<Item = (Section, &str)> {
        let sources = self.sources.iter().map(|s| (Section::Sources, &s.name));
        let transforms = self
            .transforms
            .iter()
            .map(|t| (Section::Transforms, &t.name));
        let sinks = self.sinks.iter().map(|s| (Section::Sinks, &s.name));
        sources
            .chain(transforms)
            .chain(sinks)
            .map(|(section, name)| (section, name.as_str()))
    }
}
