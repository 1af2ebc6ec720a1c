//! `flowgate test` on the example pipelines and on a file whose tests fail:
//! results per test, readable diffs, fault injection and exit codes.

mod common;
use common::*;

#[test]
fn the_example_pipelines_tests_pass() {
    let out = run(&["test", "pipelines"], None);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("test pipelines/enrich.yaml :: failed lookups go to the dead-letter output after three attempts ... ok"), "{stdout}");
    assert!(
        stdout.trim_end().ends_with("9 passed, 0 failed"),
        "{stdout}"
    );
}

#[test]
fn failing_tests_print_a_diff_and_exit_1() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  in: {type: stdin}\ntransforms:\n  double:\n    type: map\n    inputs: [in]\n    program: '.n = .n * 2'\n    retry: {attempts: 2, initial_backoff: 1ms, max_backoff: 1ms}\n    on_error: route\nsinks:\n  out: {type: blackhole, inputs: [double]}\n  dlq: {type: blackhole, inputs: [double.errors]}\ntests:\n  - name: doubles\n    input: {component: double, events: [{n: 1}, {n: 2}]}\n    expect:\n      - {output: double, events: [{n: 2}, {n: 5}]}\n  - name: a failing first attempt is retried\n    faults: [{component: double, fail: 1}]\n    input: {component: double, events: [{n: 3}]}\n    expect:\n      - {output: double, events: [{n: 6}]}\n      - {output: double.errors, events: []}\n  - name: two failures exhaust the retries\n    faults: [{component: double, fail: 2}]\n    input: {component: double, events: [{n: 3}]}\n    expect:\n      - {output: double.errors, events: [{n: 3, error: {message: injected failure, attempts: 2}}]}\n",
    );
    let out = run(&["test", file.to_str().unwrap()], None);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains(":: doubles ... FAILED"), "{stdout}");
    assert!(stdout.contains("output 'double':\n  expected 2 event(s), got 2\n    {\"n\":2}\n  - {\"n\":5}\n  + {\"n\":4}"), "{stdout}");
    assert!(
        stdout.contains(":: a failing first attempt is retried ... ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains(":: two failures exhaust the retries ... ok"),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("2 passed, 1 failed"),
        "{stdout}"
    );
}

#[test]
fn tests_naming_unknown_components_or_outputs_are_config_errors() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  in: {type: stdin}\ntransforms:\n  f: {type: filter, inputs: [in], condition: '.ok'}\nsinks:\n  out: {type: blackhole, inputs: [f]}\ntests:\n  - name: bad\n    input: {component: g, events: []}\n    expect:\n      - {output: f.errors, events: []}\n    faults: [{component: out, fail: 1}]\n  - name: typo\n    inputt: {component: f, events: []}\n    expect: []\n",
    );
    let out = run(&["validate", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    assert!(
        err.contains(":9:24: test 'bad': input.component 'g' is not a transform of this pipeline"),
        "{err}"
    );
    assert!(
        err.contains("test 'bad': 'f.errors' is not an output; outputs of 'f': f"),
        "{err}"
    );
    assert!(
        err.contains("test 'bad': faults: 'out' is not a transform of this pipeline"),
        "{err}"
    );
    assert!(
        err.contains(":14:5: tests[1]: unknown field 'inputt'"),
        "{err}"
    );
}
