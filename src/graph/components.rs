//! Each parsed component -> a graph `Component`, with the checks that need
//! only the component itself: controls, route names, jq programs, the
//! type's own `check`. Inputs are resolved later (`inputs.rs`).

use super::checks::{check_stage, control_errors};
use super::pipeline::{Component, Port, Role};
use crate::components::transforms::ProgramProblem;
use crate::components::transforms::route::RouteConfig;
use crate::components::{SinkKind, TransformKind};
use crate::config::ConfigError;
use crate::config::controls::OnError;
use crate::config::positions::Target;
use crate::load::{RawPipeline, RawSource, RawStage, Section};

/// Component and route names: `[a-z][a-z0-9_]*`.
pub(super) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `ports` plus `errors` when failed events are routed.
fn with_error_port(mut ports: Vec<Port>, on_error: OnError) -> Vec<Port> {
    if on_error == OnError::Route {
        ports.push(Some("errors".to_string()));
    }
    ports
}

/// A source's component, and the problems of its controls.
pub(super) fn build_source(raw: &RawPipeline, s: &RawSource) -> (Component, Vec<ConfigError>) {
    let problems = crate::controls::check_source(&s.common);
    let errors = control_errors(raw, Section::Sources, &s.name, problems);
    let component = Component {
        name: s.name.clone(),
        role: Role::Source {
            common: s.common.clone(),
            kind: s.kind.clone(),
        },
        inputs: Vec::new(),
        ports: with_error_port(vec![None], s.common.on_error),
    };
    (component, errors)
}

/// A transform's component, or `None` when a program of it does not
/// compile (the graph would miss the outputs it cannot say it has).
pub(super) fn build_transform(
    raw: &RawPipeline,
    t: &RawStage<TransformKind>,
) -> (Option<Component>, Vec<ConfigError>) {
    let mut errors = check_stage(
        raw,
        Section::Transforms,
        &t.name,
        &t.common,
        matches!(t.kind, TransformKind::Http(_)),
    );
    if let TransformKind::Route(r) = &t.kind {
        errors.extend(check_routes(raw, &t.name, r));
    }
    let mut settings = raw.check_errors(Section::Transforms, &t.name, t.kind.check_settings());
    settings.extend(raw.check_errors(
        Section::Transforms,
        &t.name,
        t.kind.check_controls(&t.common),
    ));
    let invalid_settings = !settings.is_empty();
    errors.extend(settings);
    let problems = t.kind.check();
    if !problems.is_empty() || invalid_settings {
        errors.extend(program_errors(raw, t, problems));
        return (None, errors);
    }
    let component = Component {
        name: t.name.clone(),
        role: Role::Transform {
            common: t.common.clone(),
            kind: t.kind.clone(),
        },
        inputs: Vec::new(),
        ports: with_error_port(t.kind.ports(), t.common.on_error),
    };
    (Some(component), errors)
}

/// A sink's component, and the problems of its controls and its type.
pub(super) fn build_sink(
    raw: &RawPipeline,
    s: &RawStage<SinkKind>,
) -> (Component, Vec<ConfigError>) {
    let mut errors = check_stage(
        raw,
        Section::Sinks,
        &s.name,
        &s.common,
        matches!(s.kind, SinkKind::Http(_)),
    );
    errors.extend(raw.check_errors(Section::Sinks, &s.name, s.kind.check()));
    let component = Component {
        name: s.name.clone(),
        role: Role::Sink {
            common: s.common.clone(),
            kind: s.kind.clone(),
        },
        inputs: Vec::new(),
        ports: with_error_port(Vec::new(), s.common.on_error),
    };
    (component, errors)
}

/// A route transform has routes, and none is named like the outputs
/// every route transform already has.
fn check_routes(raw: &RawPipeline, name: &str, config: &RouteConfig) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for route in config.routes.keys() {
        if !valid_name(route) || route == "unmatched" || route == "errors" {
            errors.push(raw.component_error(Section::Transforms, name, &["routes", route], Target::Key, format!(
                "invalid route name '{route}': route names match [a-z][a-z0-9_]* and are not 'unmatched' or 'errors'"
            )));
        }
    }
    if config.routes.is_empty() {
        errors.push(raw.component_error(
            Section::Transforms,
            name,
            &["routes"],
            Target::Key,
            "needs at least one route",
        ));
    }
    errors
}

/// jq compile errors, each at the character of the program it is about.
fn program_errors(
    raw: &RawPipeline,
    t: &RawStage<TransformKind>,
    problems: Vec<ProgramProblem>,
) -> Vec<ConfigError> {
    let programs = t.kind.programs();
    problems
        .into_iter()
        .map(|p| {
            let mut path = vec![Section::Transforms.key(), t.name.as_str()];
            path.extend(p.key.iter().map(String::as_str));
            // The program text the error's span refers to.
            let code = programs.iter().find(|c| p.error.span.end <= c.len());
            let pos = code.and_then(|c| raw.positions.inside_value(&path, c, p.error.span.start));
            let excerpt = code
                .and_then(|c| c.get(p.error.span.clone()))
                .filter(|s| !s.is_empty());
            let hint = excerpt.map(|s| format!(" at '{s}'")).unwrap_or_default();
            raw.error(format!(
                "{}: invalid jq program{hint}: {}",
                p.key.join("."),
                p.error.message
            ))
            .component(&t.name)
            .at(pos)
        })
        .collect()
}
