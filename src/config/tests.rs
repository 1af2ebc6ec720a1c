//! The `tests:` section of a pipeline file (SPEC §9): events fed into a
//! component, the outputs expected from the graph downstream of it, and
//! faults to inject.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

type Object = serde_json::Map<String, serde_json::Value>;

/// One pipeline unit test, run by `flowgate test`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// What the test checks, shown in the report.
    pub name: String,
    /// Failures to inject into components (to exercise retries, breakers and error routes).
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// The events to feed and the transform that receives them.
    pub input: TestInput,
    /// What must arrive at each named output, in order.
    pub expect: Vec<Expectation>,
}

/// Events fed into one transform, as if they came from its inputs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestInput {
    /// The transform that receives the events.
    pub component: String,
    /// The events (JSON objects).
    pub events: Vec<Object>,
}

/// The events expected at one output.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// `component` (its default output) or `component.port` (a route, `unmatched`, `errors`).
    pub output: String,
    /// Expected events in order. Every field given must be equal; the actual event may carry
    /// extra fields only under `error`.
    pub events: Vec<Object>,
}

/// A fault injected into a component for one test.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// The transform to fail.
    pub component: String,
    /// Its first `fail` calls fail with a retryable error.
    #[serde(default)]
    pub fail: u32,
    /// Every call times out (a retryable failure of type `timeout`).
    #[serde(default)]
    pub timeout: bool,
}
