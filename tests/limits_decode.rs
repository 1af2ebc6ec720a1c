//! SPEC §10, decoding: any JSON value decodes in time linear in its size,
//! duplicate keys keep the last value as jq does, and nesting deeper than
//! 128 levels is a `decode` error of the source.

mod common;
use common::*;
use flowgate::core::{Value, from_json};
use std::time::Instant;

/// `n` keys `k000000`.. with values `i + 1000000`: 200,000 of them make
/// the 3.6 MB object of the issue (each key decoded against all earlier
/// ones took 114 s in a release build).
fn big_object(n: usize) -> String {
    let body: Vec<String> = (0..n)
        .map(|i| format!("\"k{i:06}\":{}", i + 1_000_000))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn decode(text: &str) -> Value {
    serde_json::from_str(text).expect("valid JSON")
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn duplicate_keys_print_as_jq_prints_them() {
    // Each expectation is what `jq -c .` prints for the input.
    let cases = [
        (r#"{"a":1,"b":2,"a":3}"#, r#"{"a":3,"b":2}"#),
        (r#"{"b":1,"a":2,"b":3,"c":4}"#, r#"{"b":3,"a":2,"c":4}"#),
        (r#"{"a":{"x":1,"x":2},"a":{"y":3}}"#, r#"{"a":{"y":3}}"#),
        (r#"{"a":1,"a":null}"#, r#"{"a":null}"#),
    ];
    for (input, jq) in cases {
        assert_eq!(decode(input).to_string(), jq, "{input}");
    }
}

#[test]
fn duplicate_keys_in_a_large_object_keep_the_first_place_and_the_last_value() {
    // 100 keys (past the builder's switch to a hash index), then k000005
    // (inserted while it still scanned) and k000090 (inserted after it
    // switched) again: `jq -c .` keeps 100 keys, those two with new values
    // at their first places.
    let mut input = big_object(100);
    input.pop();
    input.push_str(r#","k000005":"five","k000090":"ninety","k000005":"last"}"#);
    let v = decode(&input);
    let m = v.as_object().expect("an object");
    assert_eq!(m.len(), 100);
    let keys: Vec<&str> = m.keys().map(|k| k.as_str()).collect();
    let want: Vec<String> = (0..100).map(|i| format!("k{i:06}")).collect();
    assert_eq!(keys, want);
    assert_eq!(v["k000005"], "last");
    assert_eq!(v["k000090"], "ninety");
    assert_eq!(v["k000091"], 1_000_091);
    let mut expected = big_object(100)
        .replace(r#""k000005":1000005"#, r#""k000005":"last""#)
        .replace(r#""k000090":1000090"#, r#""k000090":"ninety""#);
    assert_eq!(v.to_string(), expected);
    // The same object through the binary.
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  in: {type: stdin}\nsinks:\n  out: {type: file, inputs: [in], path: $DIR/out.ndjson}\n",
    );
    let input = format!("{input}\n{{\"a\":1,\"b\":2,\"a\":3}}\n");
    let out = run(&["run", file.to_str().unwrap()], Some(&input));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(s.path("out.ndjson")).unwrap();
    expected.push_str("\n{\"a\":3,\"b\":2}\n");
    assert_eq!(written, expected);
}

#[test]
fn an_object_of_200_000_keys_decodes_in_linear_time() {
    let text = big_object(200_000);
    let start = Instant::now();
    let v = decode(&text);
    eprintln!(
        "decoded {} bytes, 200,000 keys, in {:?}",
        text.len(),
        start.elapsed()
    );
    let m = v.as_object().expect("an object");
    assert_eq!(m.len(), 200_000);
    assert_eq!(v["k000000"], 1_000_000);
    assert_eq!(v["k123456"], 1_123_456);
    assert_eq!(v["k199999"], 1_199_999);
    assert_eq!(v.to_string(), text);

    // Every key twice: the second half replaces the first half's values.
    let mut twice = big_object(200_000);
    twice.pop();
    for i in 0..200_000 {
        twice.push_str(&format!(",\"k{i:06}\":{i}"));
    }
    twice.push('}');
    let start = Instant::now();
    let v = decode(&twice);
    eprintln!(
        "decoded {} bytes, 400,000 keys (200,000 distinct), in {:?}",
        twice.len(),
        start.elapsed()
    );
    let m = v.as_object().expect("an object");
    assert_eq!(m.len(), 200_000);
    assert!(
        m.iter()
            .enumerate()
            .all(|(i, (k, v))| { *k == format!("k{i:06}").as_str() && *v == i })
    );
}

/// 50,000 keys: 900 kB, under the 1 MiB `max_line_bytes` default of
/// SPEC §10, and still minutes of scanning in a debug build before.
#[test]
fn a_50_000_key_line_runs_through_a_pipeline() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  in: {type: stdin}\ntransforms:\n  n: {type: map, inputs: [in], program: '{n: length, last: .k049999}'}\nsinks:\n  out: {type: file, inputs: [n], path: $DIR/out.ndjson}\n",
    );
    let start = Instant::now();
    let out = run(
        &["run", file.to_str().unwrap()],
        Some(&format!("{}\n", big_object(50_000))),
    );
    eprintln!("flowgate run with a 50,000-key line: {:?}", start.elapsed());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        s.read_lines("out.ndjson"),
        [serde_json::json!({"n": 50000, "last": 1049999})]
    );
}

#[test]
fn nesting_deeper_than_128_is_a_decode_error() {
    // SPEC §10: 128 levels decode, 129 and more do not (serde_json alone
    // refuses 128 already; its limit is off for input and this one counts).
    assert!(from_json(nested(128).as_bytes()).is_ok());
    for depth in [129, 130, 100_000] {
        let err = from_json(nested(depth).as_bytes()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("nesting deeper than 128 levels"),
            "{depth}: {err}"
        );
    }
    let objects = format!("{}1{}", r#"{"a":"#.repeat(129), "}".repeat(129));
    assert!(from_json(objects.as_bytes()).is_err());
    assert!(from_json(&objects.as_bytes()[5..objects.len() - 1]).is_ok());

    // Through a source: the line is a `decode` failure, routed whole.
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  in: {type: stdin, on_error: route}\nsinks:\n  out: {type: file, inputs: [in], path: $DIR/out.ndjson}\n  bad: {type: file, inputs: [in.errors], path: $DIR/bad.ndjson}\n",
    );
    let ok = format!("{{\"a\":{}}}", nested(127));
    let deep = format!("{{\"a\":{}}}", nested(128));
    let out = run(
        &["run", file.to_str().unwrap()],
        Some(&format!("{ok}\n{deep}\n")),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(s.path("out.ndjson")).unwrap(),
        format!("{ok}\n")
    );
    let bad = s.read_lines("bad.ndjson");
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["message"], deep.as_str());
    let message = bad[0]["error"]["message"].as_str().unwrap();
    assert!(
        message
            .starts_with("line is not valid JSON: nesting deeper than 128 levels at line 1 column"),
        "{message}"
    );
}
