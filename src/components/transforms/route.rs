//! `route`: sends each event to the outputs `<name>.<route>` whose predicate
//! matches, or to `<name>.unmatched`.

use crate::components::{Transform, TransformOutput};
use crate::core::Batch;
use crate::core::Failed;
use crate::expr::Program;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whether an event goes to every matching route or the first only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RouteMode {
    /// Every route whose predicate matches gets a copy.
    #[default]
    All,
    /// Only the first matching route (in file order) gets the event.
    First,
}

/// Routes events to named outputs `<name>.<route>`; events no route matches go to `<name>.unmatched`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Route name -> jq predicate, e.g. `eu: '.region == "eu"'`. Names match `[a-z][a-z0-9_]*`.
    pub routes: IndexMap<String, String>,
    /// `all` (default): every matching route gets the event; `first`: only the first match.
    #[serde(default)]
    pub mode: RouteMode,
}

impl RouteConfig {
    pub fn build(&self) -> Result<Route, Vec<super::ProgramProblem>> {
        let mut problems = Vec::new();
        let predicates: Vec<Option<Program>> = self
            .routes
            .iter()
            .map(|(name, code)| super::compile(code, &["routes", name], &mut problems))
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Route {
            predicates: predicates.into_iter().flatten().collect(),
            mode: self.mode,
        })
    }
}

pub struct Route {
    predicates: Vec<Program>,
    mode: RouteMode,
}

impl Transform for Route {
    fn process(&self, batch: Batch, out: &mut TransformOutput) {
        let unmatched = self.predicates.len();
        let mut matches = Vec::with_capacity(self.predicates.len());
        'events: for event in batch {
            matches.clear();
            for (i, p) in self.predicates.iter().enumerate() {
                match p.test(&event) {
                    Ok(true) => {
                        matches.push(i);
                        if self.mode == RouteMode::First {
                            break;
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        out.failed
                            .push(Failed::new(event, e.to_string(), "program"));
                        continue 'events;
                    }
                }
            }
            match matches.split_last() {
                None => out.ports[unmatched].push(event),
                Some((&last, rest)) => {
                    for &i in rest {
                        out.ports[i].push(event.clone());
                    }
                    out.ports[last].push(event);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ev as json;

    fn route(mode: RouteMode) -> Route {
        let routes = [("big", ".n > 10"), ("even", ".n % 2 == 0")]
            .map(|(k, v)| (k.to_string(), v.to_string()));
        RouteConfig {
            routes: routes.into_iter().collect(),
            mode,
        }
        .build()
        .unwrap()
    }

    #[test]
    fn all_and_first_modes() {
        let input = vec![json!({"n": 12}), json!({"n": 3}), json!({"n": 4})];
        let mut out = TransformOutput::with_ports(3, 4);
        route(RouteMode::All).process(input.clone(), &mut out);
        assert_eq!(out.ports[0], vec![json!({"n": 12})]);
        assert_eq!(out.ports[1], vec![json!({"n": 12}), json!({"n": 4})]);
        assert_eq!(out.ports[2], vec![json!({"n": 3})]);
        let mut out = TransformOutput::with_ports(3, 4);
        route(RouteMode::First).process(input, &mut out);
        assert_eq!(out.ports[1], vec![json!({"n": 4})]);
    }
}
