//! `filter`: keeps the events for which a jq condition is true.

use crate::components::{Transform, TransformOutput};
use crate::core::Batch;
use crate::core::Failed;
use crate::expr::Program;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Keeps events whose `condition` is true; the rest are counted as discarded (`filtered`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// jq condition, e.g. `.status >= 500 and .level == "error"`. `false`, `null`, no output
    /// drop the event; an error sends it to `on_error`.
    pub condition: String,
}

impl FilterConfig {
    pub fn build(&self) -> Result<Filter, Vec<super::ProgramProblem>> {
        let mut problems = Vec::new();
        match super::compile(&self.condition, &["condition"], &mut problems) {
            Some(condition) => Ok(Filter { condition }),
            None => Err(problems),
        }
    }
}

pub struct Filter {
    condition: Program,
}

impl Transform for Filter {
    fn process(&self, batch: Batch, out: &mut TransformOutput) {
        let kept = &mut out.ports[0];
        for event in batch {
            match self.condition.test(&event) {
                Ok(true) => kept.push(event),
                Ok(false) => out.filtered += 1,
                Err(e) => out
                    .failed
                    .push(Failed::new(event, e.to_string(), "program")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ev as json;

    #[test]
    fn keeps_matching_counts_filtered_and_fails_on_errors() {
        let f = FilterConfig {
            condition: ".n > 1".into(),
        }
        .build()
        .unwrap();
        let mut out = TransformOutput::with_ports(1, 4);
        f.process(
            vec![
                json!({"n": 1}),
                json!({"n": 2}),
                json!({"n": {"x": 1}}),
                json!(5),
            ],
            &mut out,
        );
        assert_eq!(out.ports[0], vec![json!({"n": 2}), json!({"n": {"x": 1}})]);
        assert_eq!(out.filtered, 1);
        assert_eq!(out.failed.len(), 1);
        assert_eq!(out.failed[0].message, "Cannot index number with \"n\"");
    }
}
