//! Transforms: events in, zero or more events out.

pub mod filter;
pub mod map;
pub mod route;

use super::{Transform, catalogue};
use crate::expr::{Program, ProgramError};
use std::sync::Arc;

catalogue!(
    /// Every transform type.
    TransformKind {
        /// Keeps the events for which `condition` is true.
        Filter(filter::FilterConfig) = "filter",
        /// Rewrites each event with a jq program (may drop or split events).
        Map(map::MapConfig) = "map",
        /// Sends each event to the outputs whose predicate matches.
        Route(route::RouteConfig) = "route",
    }
);

/// A program that failed to compile: which key holds it and what is wrong.
#[derive(Debug, Clone)]
pub struct ProgramProblem {
    /// Path of the key under the component, e.g. `["routes", "eu"]`.
    pub key: Vec<String>,
    pub error: ProgramError,
}

/// Compiles `code`, recording problems under `key`.
pub(crate) fn compile(
    code: &str,
    key: &[&str],
    problems: &mut Vec<ProgramProblem>,
) -> Option<Program> {
    match Program::compile(code) {
        Ok(p) => Some(p),
        Err(errors) => {
            let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
            problems.extend(errors.into_iter().map(|error| ProgramProblem {
                key: key.clone(),
                error,
            }));
            None
        }
    }
}

impl TransformKind {
    /// Named outputs besides `errors`; `None` is the default output.
    pub fn ports(&self) -> Vec<Option<String>> {
        match self {
            Self::Filter(_) | Self::Map(_) => vec![None],
            Self::Route(c) => c
                .routes
                .keys()
                .cloned()
                .map(Some)
                .chain([Some("unmatched".to_string())])
                .collect(),
        }
    }

    /// Compiles the transform's programs; every problem is reported.
    pub fn build(&self) -> Result<Arc<dyn Transform>, Vec<ProgramProblem>> {
        match self {
            Self::Filter(c) => c.build().map(|t| Arc::new(t) as Arc<dyn Transform>),
            Self::Map(c) => c.build().map(|t| Arc::new(t) as Arc<dyn Transform>),
            Self::Route(c) => c.build().map(|t| Arc::new(t) as Arc<dyn Transform>),
        }
    }

    /// Every jq program of the transform, for `jq -c` compatibility checks.
    pub fn programs(&self) -> Vec<&str> {
        match self {
            Self::Filter(c) => vec![c.condition.as_str()],
            Self::Map(c) => vec![c.program.as_str()],
            Self::Route(c) => c.routes.values().map(String::as_str).collect(),
        }
    }
}
