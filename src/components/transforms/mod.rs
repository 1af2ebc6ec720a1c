//! Transforms: events in, zero or more events out.

pub mod aggregate;
mod aggregate_fns;
mod aggregate_state;
pub mod dedupe;
pub mod filter;
pub mod http;
pub mod map;
pub mod reduce;
pub mod route;
pub mod sample;

use super::{BuiltTransform, catalogue};
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
        /// Calls an HTTP service per event and adds the JSON response.
        Http(http::HttpConfig) = "http",
        /// Aggregates events per group and time window (count, sum, percentiles, ...).
        Aggregate(aggregate::AggregateConfig) = "aggregate",
        /// Drops repeats of a key seen within a ttl.
        Dedupe(dedupe::DedupeConfig) = "dedupe",
        /// Keeps one event in N, by arrival or by a hash of a key.
        Sample(sample::SampleConfig) = "sample",
        /// Merges consecutive events of a group into one (e.g. a multi-line stack trace).
        Reduce(reduce::ReduceConfig) = "reduce",
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
            Self::Filter(_)
            | Self::Map(_)
            | Self::Http(_)
            | Self::Dedupe(_)
            | Self::Sample(_)
            | Self::Reduce(_) => {
                vec![None]
            }
            Self::Route(c) => c
                .routes
                .keys()
                .cloned()
                .map(Some)
                .chain([Some("unmatched".to_string())])
                .collect(),
            Self::Aggregate(_) => vec![None, Some("late".to_string())],
        }
    }

    /// Every problem with the transform's programs, without building it
    /// (no clients: validation has no side effects).
    pub fn check(&self) -> Vec<ProgramProblem> {
        match self {
            Self::Http(c) => c.check(),
            _ => self.build().err().unwrap_or_default(),
        }
    }

    /// Problems with settings other than programs, as (key path, message).
    pub fn check_settings(&self) -> Vec<(Vec<&'static str>, String)> {
        match self {
            Self::Http(c) => crate::components::http_common::check_timeouts(
                &c.request_timeout,
                &c.connect_timeout,
            )
            .into_iter()
            .map(|(key, message)| (vec![key], message))
            .collect(),
            Self::Aggregate(c) => c.check_settings(),
            Self::Dedupe(c) => c.check_settings(),
            Self::Sample(c) => c.check_settings(),
            Self::Reduce(c) => c.check_settings(),
            _ => Vec::new(),
        }
    }

    /// Stage controls a stateful transform cannot honour (it runs on one
    /// task that owns its state), as (key path, message).
    pub fn check_controls(
        &self,
        common: &crate::config::controls::StageCommon,
    ) -> Vec<(Vec<&'static str>, String)> {
        if !matches!(
            self,
            Self::Aggregate(_) | Self::Dedupe(_) | Self::Sample(_) | Self::Reduce(_)
        ) {
            return Vec::new();
        }
        let why = "a stateful transform runs on one task that owns its state";
        let mut problems = Vec::new();
        if common.workers != crate::config::controls::Workers::Fixed(1) {
            problems.push((vec!["workers"], format!("must be 1: {why}")));
        }
        let unsupported = [
            ("rate_limit", common.rate_limit.is_some()),
            ("timeout", common.timeout.is_some()),
            ("retry", common.retry.is_some()),
            ("circuit_breaker", common.circuit_breaker.is_some()),
        ];
        for (key, set) in unsupported {
            if set {
                problems.push((vec![key], format!("does not apply here: {why}")));
            }
        }
        problems
    }

    /// Compiles the transform's programs and makes its clients; every
    /// problem is reported.
    pub fn build(&self) -> Result<BuiltTransform, Vec<ProgramProblem>> {
        match self {
            Self::Filter(c) => c.build().map(|t| BuiltTransform::Sync(Arc::new(t))),
            Self::Map(c) => c.build().map(|t| BuiltTransform::Sync(Arc::new(t))),
            Self::Route(c) => c.build().map(|t| BuiltTransform::Sync(Arc::new(t))),
            Self::Http(c) => c.build().map(|t| BuiltTransform::Async(Arc::new(t))),
            Self::Aggregate(c) => c.build().map(|t| BuiltTransform::Sync(Arc::new(t))),
            Self::Dedupe(c) => c.build().map(|t| BuiltTransform::Sync(Arc::new(t))),
            Self::Sample(c) => c.build().map(|t| BuiltTransform::Sync(Arc::new(t))),
            Self::Reduce(c) => c.build().map(|t| BuiltTransform::Sync(Arc::new(t))),
        }
    }

    /// Every jq program of the transform, for `jq -c` compatibility checks.
    pub fn programs(&self) -> Vec<&str> {
        match self {
            Self::Filter(c) => vec![c.condition.as_str()],
            Self::Map(c) => vec![c.program.as_str()],
            Self::Route(c) => c.routes.values().map(String::as_str).collect(),
            Self::Http(c) => {
                let mut programs: Vec<&str> = c
                    .url
                    .split("{{")
                    .skip(1)
                    .filter_map(|p| p.split("}}").next())
                    .map(str::trim)
                    .collect();
                programs.extend(c.body.as_deref());
                programs
            }
            Self::Aggregate(c) => {
                let mut programs: Vec<&str> = c.group_by.values().map(String::as_str).collect();
                programs.extend(c.time.as_deref());
                programs.extend(
                    c.aggregations
                        .values()
                        .filter_map(|a| a.parts().ok().and_then(|(_, code, _)| code)),
                );
                programs
            }
            Self::Dedupe(c) => vec![c.key.as_str()],
            Self::Sample(c) => c.key.iter().chain(&c.exclude).map(String::as_str).collect(),
            Self::Reduce(c) => c
                .group_by
                .values()
                .chain(&c.ends_when)
                .chain(&c.starts_when)
                .map(String::as_str)
                .collect(),
        }
    }
}
