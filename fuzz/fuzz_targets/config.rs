//! A pipeline file, as `flowgate validate` reads it: load (interpolation,
//! YAML, per-component configs) and compile (names, inputs, cycles, jq
//! programs). Errors are expected; a panic is a finding. The pipeline that
//! compiles is also rendered (`flowgate graph`) and diffed with itself
//! (`flowgate plan`).

#![no_main]

use flowgate::graph;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `validate` reads the file as UTF-8; anything else is refused there.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match graph::load_str(text, "fuzz.yaml", "fuzz") {
        Ok((pipeline, warnings)) => {
            for w in &warnings {
                let _ = w.to_string();
            }
            let _ = graph::render::dot(&pipeline);
            let _ = graph::render::mermaid(&pipeline);
            let changes = graph::diff::diff(&pipeline, &pipeline);
            let _ = graph::diff::render(&changes);
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "a refusal with no problem in it");
            for e in &errors {
                let _ = e.to_string();
            }
        }
    }
});
