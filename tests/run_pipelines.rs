//! Finite pipelines run by the real binary: outputs, counts and exit codes.

mod common;
use common::*;
use serde_json::json;

/// Runs an example pipeline from the repository with its outputs in `s`.
fn run_example(file: &str, s: &Scratch) -> std::process::Output {
    std::process::Command::new(bin())
        .args(["run", file, "--metrics-address", "off"])
        .env("OUT_DIR", s.dir.path())
        .current_dir(repo())
        .output()
        .unwrap()
}

#[test]
fn quickstart_prints_tagged_server_errors_and_exits_0() {
    let out = run(
        &[
            "run",
            "pipelines/quickstart.yaml",
            "--metrics-address",
            "off",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(
        lines[0],
        json!({"path": "/checkout", "status": 503, "ms": 2400, "alert": true, "slow": true})
    );
    assert!(
        lines
            .iter()
            .all(|e| e["status"].as_u64().unwrap() >= 500 && e.get("msg").is_none())
    );
}

#[test]
fn log_triage_routes_levels_and_dead_letters_bad_lines() {
    let s = Scratch::new();
    let out = run_example("pipelines/log_triage.yaml", &s);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let input = std::fs::read_to_string(repo().join("pipelines/data/app.log.ndjson")).unwrap();
    let events: Vec<serde_json::Value> = input
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let bad = input.lines().count() - events.len();
    let severe = events
        .iter()
        .filter(|e| e["level"] == "error" || e["status"].as_u64().unwrap() >= 500)
        .count();
    let warn = events
        .iter()
        .filter(|e| e["level"] == "warn" && e["status"].as_u64().unwrap() < 500)
        .count();
    let errors = s.read_lines("errors.ndjson");
    assert_eq!(errors.len(), severe);
    assert!(
        errors
            .iter()
            .all(|e| e["page"] == true && e.get("msg").is_none())
    );
    assert_eq!(s.read_lines("warnings.ndjson").len(), warn);
    let dead = s.read_lines("dead_letter.ndjson");
    assert_eq!(dead.len(), bad);
    assert_eq!(dead[0]["message"], "this line is not json at all");
    assert_eq!(dead[0]["error"]["component"], "app_log");
    assert_eq!(dead[0]["error"]["attempts"], 1);
}

#[test]
fn fan_out_and_fan_in_deliver_every_event_to_every_consumer() {
    let s = Scratch::new();
    let out = run_example("pipelines/fanout_workers.yaml", &s);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let audit = s.read_lines("audit.ndjson");
    // 20000 orders cycle over 4 events: lamps (total 160) and desk refunds reach the audit.
    assert_eq!(audit.len(), 10000);
    assert_eq!(audit.iter().filter(|e| e["kind"] == "refund").count(), 5000);
    assert!(
        audit
            .iter()
            .all(|e| e.get("unit_price").is_none() && e["total"].as_f64().unwrap() >= 100.0)
    );
}

#[test]
fn ordered_worker_pool_keeps_input_order_and_unordered_keeps_every_event() {
    let s = Scratch::new();
    let input: String = (0..30000).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    for (ordered, name) in [(true, "ordered"), (false, "unordered")] {
        let file = s.write(
            &format!("{name}.yaml"),
            &format!(
                "sources:\n  in: {{type: stdin}}\ntransforms:\n  sq:\n    type: map\n    inputs: [in]\n    workers: 8\n    ordered: {ordered}\n    buffer: {{size: 64}}\n    program: '.sq = .n * .n'\nsinks:\n  out: {{type: file, inputs: [sq], path: $DIR/{name}.ndjson}}\n"
            ),
        );
        let out = run(
            &["run", file.to_str().unwrap(), "--metrics-address", "off"],
            Some(&input),
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let lines = s.read_lines(&format!("{name}.ndjson"));
        let ns: Vec<u64> = lines.iter().map(|e| e["n"].as_u64().unwrap()).collect();
        if ordered {
            assert_ids(&ns, &(0..30000).collect::<Vec<_>>(), name);
        } else {
            let mut sorted = ns.clone();
            sorted.sort();
            assert_ids(&sorted, &(0..30000).collect::<Vec<_>>(), name);
        }
        assert!(
            lines
                .iter()
                .all(|e| e["sq"].as_u64() == e["n"].as_u64().map(|n| n * n))
        );
    }
}

#[test]
fn route_first_and_all_modes_and_text_codecs() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  in: {type: stdin, codec: text}\ntransforms:\n  r:\n    type: route\n    inputs: [in]\n    mode: all\n    routes:\n      has_a: '.message | test(\"a\")'\n      long: '(.message | length) > 3'\nsinks:\n  a: {type: file, inputs: [r.has_a], path: $DIR/a.txt, codec: text}\n  l: {type: file, inputs: [r.long], path: $DIR/l.txt, codec: text}\n  rest: {type: file, inputs: [r.unmatched], path: $DIR/rest.txt, codec: text}\n",
    );
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        Some("abc\r\nbanana\n\nxyz\nxyzzy\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let read = |n: &str| std::fs::read_to_string(s.path(n)).unwrap_or_default();
    assert_eq!(read("a.txt"), "abc\nbanana\n");
    assert_eq!(read("l.txt"), "banana\nxyzzy\n");
    assert_eq!(read("rest.txt"), "xyz\n");
}

#[test]
fn on_error_stop_ends_the_pipeline_with_exit_1() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  in: {type: stdin}\ntransforms:\n  m: {type: map, inputs: [in], program: '.a.b = 1', on_error: stop}\nsinks:\n  out: {type: file, inputs: [m], path: $DIR/out.ndjson}\n",
    );
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        Some("{\"a\":{}}\n{\"a\":5}\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("component 'm': program error: Cannot index number with \"b\""),
        "{err}"
    );
}

#[test]
fn on_error_drop_counts_and_continues() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  in: {type: stdin}\ntransforms:\n  m: {type: map, inputs: [in], program: '.a.b = 1'}\nsinks:\n  out: {type: file, inputs: [m], path: $DIR/out.ndjson}\n",
    );
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        Some("{\"a\":{}}\n{\"a\":5}\nnot json\n{\"a\":null}\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        s.read_lines("out.ndjson"),
        vec![json!({"a": {"b": 1}}), json!({"a": {"b": 1}})]
    );
}

#[test]
fn sink_write_errors_follow_on_error_route() {
    let s = Scratch::new();
    std::fs::create_dir(s.path("blocked")).unwrap();
    let file = s.write(
        "p.yaml",
        "sources:\n  in: {type: stdin}\nsinks:\n  bad: {type: file, inputs: [in], path: $DIR/blocked, on_error: route}\n  dlq: {type: file, inputs: [bad.errors], path: $DIR/dlq.ndjson}\n",
    );
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        Some("{\"n\":1}\n{\"n\":2}\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dlq = s.read_lines("dlq.ndjson");
    assert_eq!(dlq.len(), 2);
    assert_eq!(dlq[0]["n"], 1);
    assert_eq!(dlq[0]["error"]["component"], "bad");
    assert!(
        dlq[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("opening")
    );
}

#[test]
fn missing_input_file_is_a_runtime_failure_naming_the_component() {
    let s = Scratch::new();
    let file = s.write("p.yaml", "sources:\n  f: {type: file, path: $DIR/nope.ndjson}\nsinks:\n  o: {type: blackhole, inputs: [f]}\n");
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("component 'f'") && err.contains("nope.ndjson"),
        "{err}"
    );
}

#[test]
fn several_files_and_directories_run_in_one_process() {
    let s = Scratch::new();
    std::fs::create_dir(s.path("dir")).unwrap();
    for n in ["one", "two"] {
        s.write(
            &format!("dir/{n}.yaml"),
            &format!("sources:\n  g: {{type: generator, count: 5, events: [{{p: {n}}}]}}\nsinks:\n  o: {{type: file, inputs: [g], path: $DIR/{n}.ndjson}}\n"),
        );
    }
    let out = run(
        &[
            "run",
            s.path("dir").to_str().unwrap(),
            "--metrics-address",
            "off",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(s.read_lines("one.ndjson").len(), 5);
    assert_eq!(s.read_lines("two.ndjson"), vec![json!({"p": "two"}); 5]);
}
