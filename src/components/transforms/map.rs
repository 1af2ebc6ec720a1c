//! `map`: rewrites each event with a jq program; zero outputs drop the
//! event, several split it.

use crate::components::{Transform, TransformOutput};
use crate::core::Batch;
use crate::core::Failed;
use crate::expr::Program;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Rewrites events with a jq program: `.total = .amount * .qty | del(.internal)`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MapConfig {
    /// jq program. Each output (which must be an object) becomes an event: `empty` drops the
    /// event, `.items[]` splits it. A runtime error sends the event to `on_error`.
    pub program: String,
}

impl MapConfig {
    pub fn build(&self) -> Result<Map, Vec<super::ProgramProblem>> {
        let mut problems = Vec::new();
        match super::compile(&self.program, &["program"], &mut problems) {
            Some(program) => Ok(Map { program }),
            None => Err(problems),
        }
    }
}

pub struct Map {
    program: Program,
}

impl Transform for Map {
    fn process(&self, batch: Batch, out: &mut TransformOutput) {
        let failed = &mut out.failed;
        self.program
            .map_batch(batch, &mut out.ports[0], |e, event| {
                failed.push(Failed::new(event, e.to_string(), "program"))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ev as json;

    #[test]
    fn maps_drops_splits_and_fails() {
        let m = MapConfig {
            program: "if .n == 0 then empty elif .n == 2 then (., .) else .x = 1 end".into(),
        }
        .build()
        .unwrap();
        let mut out = TransformOutput::with_ports(1, 4);
        m.process(
            vec![
                json!({"n": 0}),
                json!({"n": 1}),
                json!({"n": 2}),
                json!({"n": [1]}),
            ],
            &mut out,
        );
        assert_eq!(
            out.ports[0],
            vec![
                json!({"n": 1, "x": 1}),
                json!({"n": 2}),
                json!({"n": 2}),
                json!({"n": [1], "x": 1})
            ]
        );
        let m = MapConfig {
            program: ".a.b = 1".into(),
        }
        .build()
        .unwrap();
        let mut out = TransformOutput::with_ports(1, 1);
        m.process(vec![json!({"a": 3})], &mut out);
        assert_eq!(out.failed[0].event, json!({"a": 3}));
    }
}
