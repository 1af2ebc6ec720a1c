//! Every jq program in pipelines/, README.md and the tests gives what
//! `jq -c` prints for the same input, on the path flowgate runs it on
//! (native closures, or the jaq interpreter for the rest). Needs Debian's
//! `jq` (`.ci/run` installs it).

mod common;
use flowgate::expr::Program;
use flowgate::graph::{self, Role};
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};

/// Programs used by the tests, the SPEC and the reference benchmark jobs.
const EXTRA: &[&str] = &[
    ".amount > 0 and .currency != null",
    ".total = .amount * .qty | del(.internal)",
    ".region == \"eu\"",
    ".status >= 500",
    ".status >= 500 and .level == \"error\"",
    ".alert = true | del(.msg)",
    ".hops = ((.hops // 0) + 1)",
    ".n % 3 != 0",
    "if .n % 5 == 0 then .x.y = 1 else .ok = true end",
    ".n < 500",
    ".seen = true",
    ".a.b = 1",
    ".sq = .n * .n",
    ".message | test(\"a\")",
    "(.message | length) > 3",
    ".n > 10",
    ".n % 2 == 0",
    "true",
    ".a",
    ".a == 1",
    ".",
    ".missing.deeper = 1",
    "del(.msg, .status)",
    "{status, lvl: .level}",
    "\"\\(.service)/\\(.status)\"",
    ".latency_ms / 1000",
    "select(.status != 200) | .bad = true",
    ".tags // [] | length",
    ".items[]? | {item: .}",
    "if .n == 0 then empty elif .n == 2 then (., .) else .x = 1 end",
    ".ok |= not",
    ".n += 1",
    ".level |= ascii_upcase",
    ".a.b = (.a.b // 7)",
    ".a.b = .a.b + 1",
    ".n = .n * 2 - 1",
    ".n = (.n // 1.5) + 1",
    ".tags[0] = (.tags[0] // 0) + 1",
    ".tags[-1] = .tags[-1] * 2",
    ".n |= (. // 0) * 3",
    ".n * 2.7",
    ".n * 0",
];

fn programs_in_readme() -> Vec<String> {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap_or_default();
    let mut out = Vec::new();
    let mut in_yaml = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            in_yaml = line.trim_start().starts_with("```yaml");
            continue;
        }
        if !in_yaml {
            continue;
        }
        let Some((key, value)) = line.split_once(": '") else {
            continue;
        };
        let key = key.trim().trim_start_matches("- ");
        let value = value
            .trim_end()
            .trim_end_matches('}')
            .trim_end()
            .trim_end_matches(',');
        if let Some(program) = value.strip_suffix('\'')
            && (["condition", "program"].contains(&key) || program.starts_with('.'))
        {
            out.push(program.replace("''", "'"));
        }
    }
    out
}

fn programs_and_inputs() -> (Vec<String>, Vec<Value>) {
    let mut programs: Vec<String> = EXTRA.iter().map(|s| s.to_string()).collect();
    let mut inputs = vec![
        json!({"amount": 5, "qty": 3, "currency": "EUR", "internal": 1, "region": "eu"}),
        json!({"amount": 0, "currency": null, "region": "us"}),
        json!({"status": 503, "level": "error", "msg": "x", "hops": 2, "service": "api", "latency_ms": 1500}),
        json!({"status": 200, "level": "info", "tags": [1, 2], "items": ["a", "b"], "ok": false}),
        json!({"n": 0, "x": 5}),
        json!({"n": 2, "x": {}}),
        json!({"n": 15, "message": "banana"}),
        json!({"a": {"b": 2}, "message": "xyz"}),
        json!({"a": 3, "missing": null}),
        json!({}),
        json!({"n": "s"}),
        json!({"n": 1.5}),
    ];
    let mut pipelines: Vec<_> = std::fs::read_dir(common::repo().join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pipelines.sort();
    for path in pipelines
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
    {
        let (p, _) = graph::load(path).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        for c in &p.components {
            match &c.role {
                Role::Transform { kind, .. } => {
                    programs.extend(kind.programs().into_iter().map(String::from))
                }
                Role::Source {
                    kind: flowgate::components::SourceKind::Generator(g),
                    ..
                } => {
                    inputs.extend(g.events.iter().cloned().map(Value::Object));
                }
                _ => {}
            }
        }
    }
    let log =
        std::fs::read_to_string(common::repo().join("pipelines/data/app.log.ndjson")).unwrap();
    inputs.extend(
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .take(40),
    );
    programs.extend(programs_in_readme());
    programs.sort();
    programs.dedup();
    (programs, inputs)
}

/// One line per input: the array of all outputs, or "__error__".
fn jq_outputs(program: &str, inputs: &[Value]) -> Vec<String> {
    let wrapped = format!("try ([{program}]) catch \"__error__\"");
    let mut child = Command::new("jq")
        .args(["-c", &wrapped])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("jq must be installed (apt-get install jq); .ci/run installs it");
    let mut stdin = child.stdin.take().unwrap();
    for i in inputs {
        writeln!(stdin, "{i}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "jq failed on {program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn ours(program: &Program, input: &Value) -> String {
    let mut out = Vec::new();
    match program.outputs(input.clone().into(), &mut out) {
        Ok(()) => serde_json::to_string(&out).unwrap(),
        Err(_) => "\"__error__\"".to_string(),
    }
}

#[test]
fn every_program_matches_jq_on_every_input() {
    if Command::new("jq").arg("--version").output().is_err() {
        // CI installs Debian's jq (.ci/run); elsewhere say what is missing.
        assert!(std::env::var_os("CI").is_none(), "CI must install jq");
        eprintln!("jq is not installed: skipping the jq compatibility check (apt-get install jq)");
        return;
    }
    let (programs, inputs) = programs_and_inputs();
    assert!(programs.len() > 30, "found {} programs", programs.len());
    let mut failures = Vec::new();
    let mut native = 0;
    for code in &programs {
        let expected = jq_outputs(code, &inputs);
        let compiled = Program::compile(code).unwrap_or_else(|e| panic!("{code}: {e:?}"));
        native += usize::from(compiled.is_native());
        let path = if compiled.is_native() {
            "native"
        } else {
            "interpreter"
        };
        for (input, want) in inputs.iter().zip(&expected) {
            let got = ours(&compiled, input);
            if &got != want {
                failures.push(format!(
                    "{code} ({path}) on {input}:\n   jq: {want}\n  ours: {got}"
                ));
            }
        }
    }
    assert!(
        native * 2 > programs.len(),
        "most programs should run natively ({native} of {})",
        programs.len()
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
