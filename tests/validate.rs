//! `flowgate validate` / `run` on broken files: every problem, with
//! file:line:col, a suggestion where one exists, and exit code 78.

mod common;
use common::*;

const BROKEN: &str = "\
name: shop
sources:
  web:
    type: generatr
  replay:
    type: file
    path: /tmp/x.ndjson
transforms:
  valid:
    type: filter
    inputs: [replay]
    condition: '.amount > 0'
    workrs: 4
  enrich:
    type: map
    inputs: [valdi]
    program: '.total = .amount *'
  shape:
    type: map
    inputs: [valid]
    program: '.x = 1'
    buffer: {size: 0, when_full: drop_new}
  loop_a:
    type: map
    inputs: [loop_b]
    program: '.'
  loop_b:
    type: map
    inputs: [loop_a]
    program: '.'
    on_error: route
sinks:
  out: {type: stdout, inputs: [shape, enrich, loop_b]}
";

#[test]
fn validate_reports_every_problem_with_positions_and_suggestions() {
    let s = Scratch::new();
    let file = s.write("shop.yaml", BROKEN);
    let f = file.to_str().unwrap();
    let out = run(&["validate", f], None);
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    let expected = [
        format!(
            "{f}:4:11: component 'web': unknown source type 'generatr' (did you mean 'generator'?)"
        ),
        format!("{f}:13:5: component 'valid': unknown field 'workrs' (did you mean 'workers'?)"),
        format!("{f}:16:14: component 'enrich': unknown input 'valdi' (did you mean 'valid'?)"),
        format!(
            "{f}:17:33: component 'enrich': program: invalid jq program: expected term at the end of the program"
        ),
        format!(
            "{f}:22:34: component 'shape': buffer.when_full: unknown variant 'drop_new', expected one of 'block', 'drop_newest', 'drop_oldest'"
        ),
        format!("{f}:25:5: component 'loop_a': cycle: loop_a -> loop_b -> loop_a"),
        format!(
            "{f}:31:15: component 'loop_b': on_error: route sends failed events to 'loop_b.errors', but no component reads it: add it to a sink's inputs (e.g. a dead-letter file)"
        ),
    ];
    for e in &expected {
        assert!(err.contains(e.as_str()), "missing:\n{e}\nin:\n{err}");
    }
    assert!(err.contains("7 problem(s)"), "{err}");
}

#[test]
fn zero_sizes_and_bad_durations_are_errors() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  g: {type: generator, events: []}\ntransforms:\n  m: {type: map, inputs: [g], program: '.', workers: 0, buffer: {size: 0}}\nsinks:\n  o: {type: blackhole, inputs: [m]}\n",
    );
    let out = run(&["validate", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    assert!(
        err.contains(":2:32: component 'g': events: needs at least one event"),
        "{err}"
    );
    assert!(
        err.contains("component 'm': workers must be between 1 and 1024, not 0"),
        "{err}"
    );
    assert!(
        err.contains("component 'm': buffer.size must be at least 1"),
        "{err}"
    );
    let out = run(
        &["run", file.to_str().unwrap(), "--shutdown-timeout", "5"],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "a duration without unit is a usage error"
    );
}

#[test]
fn run_refuses_invalid_config_with_78_and_starts_nothing() {
    let s = Scratch::new();
    let file = s.write("p.yaml", "sources:\n  g: {type: generator, events: [{a: 1}]}\nsinks:\n  o: {type: file, inputs: [g], path: $DIR/out.ndjson, colour: red}\n");
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        None,
    );
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    assert!(
        err.contains(":4:")
            && err
                .contains(": component 'o': unknown field 'colour' (expected one of: path, codec)"),
        "{err}"
    );
    assert!(!s.path("out.ndjson").exists());
}

#[test]
fn unset_variables_unknown_ports_and_yaml_syntax() {
    let s = Scratch::new();
    let file = s.write("p.yaml", "sources:\n  g: {type: file, path: \"${FLOWGATE_TEST_UNSET_VAR}\"}\nsinks:\n  o: {type: blackhole, inputs: [g]}\n");
    let out = run(&["validate", file.to_str().unwrap()], None);
    assert!(
        text(&out.stderr)
            .contains(":2:26: environment variable 'FLOWGATE_TEST_UNSET_VAR' is not set"),
        "{}",
        text(&out.stderr)
    );
    let file = s.write(
        "q.yaml",
        "sources:\n  g: {type: generator, events: [{a: 1}]}\ntransforms:\n  r: {type: route, inputs: [g], routes: {eu: '.a == 1'}}\nsinks:\n  o: {type: blackhole, inputs: [r, r.us, g.errors]}\n",
    );
    let err = text(&run(&["validate", file.to_str().unwrap()], None).stderr);
    assert!(
        err.contains(
            ":6:33: component 'o': 'r' has no default output; use one of: r.eu, r.unmatched"
        ),
        "{err}"
    );
    assert!(
        err.contains(":6:36: component 'o': 'r' has no output 'us'; outputs: r.eu, r.unmatched"),
        "{err}"
    );
    assert!(
        err.contains(":6:42: component 'o': 'g.errors' exists only with on_error: route on 'g'"),
        "{err}"
    );
    let file = s.write("y.yaml", "sources:\n  g: {type: generator\n");
    let err = text(&run(&["validate", file.to_str().unwrap()], None).stderr);
    assert!(err.contains("y.yaml:3:1: invalid YAML"), "{err}");
}

#[test]
fn warnings_do_not_fail_validation() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  g: {type: generator, events: [{a: 1}]}\ntransforms:\n  unused: {type: filter, inputs: [g], condition: '.a'}\nsinks:\n  o: {type: blackhole, inputs: [g]}\n",
    );
    let out = run(&["validate", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("warning: ")
            && text(&out.stderr).contains("output of 'unused' is not read by any component")
    );
}

#[test]
fn every_example_pipeline_declares_the_schema_and_validates_cleanly() {
    let mut seen = 0;
    for entry in std::fs::read_dir(repo().join("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        seen += 1;
        let text_ = std::fs::read_to_string(&path).unwrap();
        assert!(
            text_.starts_with("# yaml-language-server: $schema=../schemas/pipeline.schema.json\n"),
            "{} must start with the schema line",
            path.display()
        );
        let out = run(&["validate", path.to_str().unwrap()], None);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            text(&out.stderr)
        );
        assert!(
            !text(&out.stderr).contains("warning"),
            "{}: {}",
            path.display(),
            text(&out.stderr)
        );
    }
    assert!(seen >= 3);
}

#[test]
fn committed_schema_matches_flowgate_schema() {
    let out = run(&["schema"], None);
    assert_eq!(out.status.code(), Some(0));
    let committed = std::fs::read_to_string(repo().join("schemas/pipeline.schema.json")).unwrap();
    assert!(
        committed == text(&out.stdout),
        "schemas/pipeline.schema.json is stale: run `cargo run -- schema > schemas/pipeline.schema.json`"
    );
}

#[test]
fn graph_shows_controls_and_named_outputs() {
    let out = run(
        &[
            "graph",
            "pipelines/fanout_workers.yaml",
            "--format",
            "mermaid",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let g = text(&out.stdout);
    assert!(g.starts_with("flowchart LR\n"));
    assert!(
        g.contains("price[\"price (map)<br/>buffer 4000 block, workers 4 ordered\"]"),
        "{g}"
    );
    assert!(g.contains("    price --> large\n"));
    let out = run(&["graph", "pipelines/log_triage.yaml"], None);
    let g = text(&out.stdout);
    assert!(
        g.contains("\"by_level\" -> \"warnings_file\" [label=\"warnings\"];"),
        "{g}"
    );
    assert!(
        g.contains("\"app_log\" -> \"dead_letter\" [label=\"errors\"];"),
        "{g}"
    );
}

#[test]
fn unknown_inputs_are_reported_beside_the_other_errors_of_their_component() {
    let (code, lines) = validate_lines(
        "sources:\n  g: {type: generator, events: [{a: 1}]}\ntransforms:\n  f: {type: filter, inputs: [gne], condition: 'true', bufer: {size: 10}}\nsinks:\n  o: {type: blackhole, inputs: [f]}\n",
    );
    assert_eq!(code, Some(78));
    assert_eq!(
        lines,
        [
            "F:4:30: component 'f': unknown input 'gne' (did you mean 'g'?)",
            "F:4:55: component 'f': unknown field 'bufer' (did you mean 'buffer'?)",
            "F: 2 problem(s)",
        ]
    );
}

#[test]
fn broken_sources_transforms_and_sinks_have_their_inputs_checked_and_can_be_read() {
    // `src` and `t` are broken: reading them is not an error of `m` or
    // `o`; what `t` (unknown type) and `o` (unknown key) read still is.
    let (code, lines) = validate_lines(
        "sources:
  src: {type: generator, events: [{a: 1}], colour: red}
  other: {type: stdin}
transforms:
  t: {type: filtre, inputs: [src, othr]}
  m: {type: map, inputs: [t, src, other], program: '.'}
sinks:
  o: {type: blackhole, inputs: [m, t, mm], colour: red}
",
    );
    assert_eq!(code, Some(78));
    assert_eq!(
        lines,
        [
            "F:2:44: component 'src': unknown field 'colour' (expected one of: events, count, rate)",
            "F:5:13: component 't': unknown transform type 'filtre' (did you mean 'filter'?)",
            "F:5:35: component 't': unknown input 'othr' (did you mean 'other'?)",
            "F:8:39: component 'o': unknown input 'mm' (did you mean 'm'?)",
            "F:8:44: component 'o': unknown field 'colour'",
            "F: 5 problem(s)",
        ]
    );
}

#[test]
fn tests_naming_broken_components_and_sections_without_a_source_get_only_the_real_errors() {
    // `t` does not parse and `u`'s program does not compile: the tests
    // naming them get no errors of their own. The only source is broken
    // in `transforms:` by mistake, which does not count as a source.
    let (code, lines) = validate_lines(
        "transforms:
  g: {type: generator, events: [{a: 1}]}
  t: {type: filtr, inputs: [g]}
  u: {type: map, inputs: [g], program: '.x ='}
sinks:
  o: {type: blackhole, inputs: [t, u]}
tests:
  - name: one
    input: {component: t, events: [{a: 1}]}
    expect:
      - {output: u, events: [{a: 1}]}
      - {output: t.unmatched, events: []}
    faults:
      - {component: u, fail: 1}
",
    );
    assert_eq!(code, Some(78));
    assert_eq!(
        lines,
        [
            "F:2:13: component 'g': unknown transform type 'generator'",
            "F:3:13: component 't': unknown transform type 'filtr' (did you mean 'filter'?)",
            "F:4:45: component 'u': program: invalid jq program: expected term at the end of the program",
            "F: the pipeline has no sources: add at least one under 'sources:'",
            "F: 4 problem(s)",
        ]
    );
}

#[test]
fn pipeline_names_that_do_not_fit_the_name_rule_are_refused_by_validate_and_run() {
    let s = Scratch::new();
    let body = "sources:\n  g: {type: generator, events: [{a: 1}]}\nsinks:\n  o: {type: file, inputs: [g], path: $DIR/out.ndjson}\n";
    let escape = s.write("p.yaml", &format!("name: ../../escape\n{body}"));
    let f = escape.to_str().unwrap();
    let rule = "pipeline names match [a-z][a-z0-9_]* (they name directories under --data-dir)";
    let data_dir = s.path("data/deep");
    let data_dir = data_dir.to_str().unwrap();
    for args in [
        vec!["validate", f],
        vec!["run", f, "--metrics-address", "off", "--data-dir", data_dir],
    ] {
        let out = run(&args, None);
        assert_eq!(out.status.code(), Some(78), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "{f}:1:7: invalid pipeline name '../../escape': {rule}"
            )),
            "{err}"
        );
    }
    assert!(!s.path("out.ndjson").exists());
    assert!(!s.path("escape").exists() && !s.path("data").exists());

    // Without `name:`, the file stem, with `-` read as `_`.
    let dashed = s.write("my-pipeline.yaml", body);
    let out = run(&["validate", dashed.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok (pipeline 'my_pipeline', 2 components)"));
    let odd = s.write("Bad.Name.yaml", body);
    let f = odd.to_str().unwrap();
    for args in [
        vec!["validate", f],
        vec!["run", f, "--metrics-address", "off"],
    ] {
        let out = run(&args, None);
        assert_eq!(out.status.code(), Some(78), "{args:?}");
        assert!(text(&out.stderr).contains(&format!(
            "{f}:1:1: invalid pipeline name 'Bad.Name', taken from the file name: {rule}; \
             set one in the file with `name:`, e.g. `name: bad_name`"
        )));
    }
    assert!(!s.path("out.ndjson").exists());
}
