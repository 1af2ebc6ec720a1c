//! `flowgate test`: runs a pipeline's `tests:` (SPEC §9). Each test feeds
//! its events into one transform, runs the graph downstream of it with
//! sources and sinks cut off and faults injected, captures every output,
//! and compares the outputs the test names with what it expects.

use crate::config::tests::TestCase;
use crate::core::{Batch, Event, Value};
use crate::graph::{InputRef, Pipeline, resolve_output};
use crate::plan::build::{TestSetup, build_test};
use crate::runtime::RunningPipeline;
use crate::telemetry::Metrics;
use std::collections::HashMap;
use std::time::Duration;

/// A test gets this long to drain.
const TEST_DEADLINE: Duration = Duration::from_secs(60);

/// Runs one test; `Err` explains every mismatch.
pub async fn run(pipeline: &Pipeline, case: &TestCase) -> Result<(), String> {
    let inject = pipeline
        .components
        .iter()
        .position(|c| c.name == case.input.component)
        .ok_or_else(|| format!("no transform '{}'", case.input.component))?;
    // Sources are cut off in a test build: nothing keeps state.
    let host = crate::plan::Host::new(Metrics::new(), std::env::temp_dir());
    let setup = TestSetup {
        inject,
        faults: &case.faults,
    };
    let (pieces, handles) = build_test(pipeline, &host, &setup);
    let collectors: Vec<(InputRef, tokio::task::JoinHandle<Batch>)> = handles
        .captures
        .into_iter()
        .map(|(key, mut rx)| {
            let task = tokio::spawn(async move {
                let mut all = Vec::new();
                while let Some((b, _)) = rx.recv().await {
                    all.extend(b);
                }
                all
            });
            (key, task)
        })
        .collect();
    let running = RunningPipeline::spawn(pieces);
    let events: Batch = case
        .input
        .events
        .iter()
        .map(|m| Value::from(serde_json::Value::Object(m.clone())))
        .collect();
    if !events.is_empty() {
        handles
            .injector
            .send(events, crate::core::Acks::none())
            .await
            .map_err(|_| "the tested transform stopped before taking the events".to_string())?;
    }
    drop(handles.injector);
    let ended = tokio::time::timeout(TEST_DEADLINE, running.wait()).await;
    match ended {
        Err(_) => {
            return Err(format!(
                "the graph did not drain within {}s",
                TEST_DEADLINE.as_secs()
            ));
        }
        Ok(Err(failure)) => return Err(format!("the pipeline stopped: {failure}")),
        Ok(Ok(())) => {}
    }
    let mut captured: HashMap<InputRef, Batch> = HashMap::new();
    for (key, task) in collectors {
        captured.insert(
            key,
            task.await.map_err(|e| format!("capturing outputs: {e}"))?,
        );
    }
    let mut problems = Vec::new();
    for e in &case.expect {
        let key = resolve_output(pipeline, &e.output)?;
        let actual = captured.remove(&key).unwrap_or_default();
        let expected: Vec<Value> = e
            .events
            .iter()
            .map(|m| Value::from(serde_json::Value::Object(m.clone())))
            .collect();
        if let Some(diff) = compare(&expected, &actual) {
            problems.push(format!("output '{}':\n{diff}", e.output));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Every field the expected event gives is equal; the actual event may
/// have extra fields only under `error` (where expected fields are a subset).
pub fn matches(expected: &Value, actual: &Event) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let extra_ok = a.keys().all(|k| k == "error" || e.contains_key(k));
            extra_ok
                && e.iter().all(|(k, ev)| match a.get(k) {
                    Some(av) if k == "error" => subset(ev, av),
                    Some(av) => av == ev,
                    None => false,
                })
        }
        _ => expected == actual,
    }
}

fn subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, ev)| a.get(k).is_some_and(|av| subset(ev, av))),
        _ => expected == actual,
    }
}

/// A readable diff when the events differ: `-` expected, `+` actual.
fn compare(expected: &[Value], actual: &[Event]) -> Option<String> {
    let same =
        expected.len() == actual.len() && expected.iter().zip(actual).all(|(e, a)| matches(e, a));
    if same {
        return None;
    }
    let mut lines = vec![format!(
        "  expected {} event(s), got {}",
        expected.len(),
        actual.len()
    )];
    for i in 0..expected.len().max(actual.len()) {
        match (expected.get(i), actual.get(i)) {
            (Some(e), Some(a)) if matches(e, a) => lines.push(format!("    {a}")),
            (Some(e), Some(a)) => {
                lines.push(format!("  - {e}"));
                lines.push(format!("  + {a}"));
            }
            (Some(e), None) => lines.push(format!("  - {e}")),
            (None, Some(a)) => lines.push(format!("  + {a}")),
            (None, None) => {}
        }
    }
    Some(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ev;

    #[test]
    fn extra_fields_are_allowed_only_under_error() {
        let expected = ev!({"id": 1, "error": {"component": "enrich", "attempts": 3}});
        assert!(matches(
            &expected,
            &ev!({"id": 1, "error": {"component": "enrich", "attempts": 3, "message": "x"}})
        ));
        assert!(!matches(
            &expected,
            &ev!({"id": 1, "extra": true, "error": {"component": "enrich", "attempts": 3}})
        ));
        assert!(!matches(
            &expected,
            &ev!({"id": 1, "error": {"component": "enrich", "attempts": 2}})
        ));
        assert!(matches(&ev!({"a": 1}), &ev!({"a": 1})));
        assert!(!matches(&ev!({"a": 1}), &ev!({"a": 2})));
    }
}
