//! What the fuzz targets (`fuzz/`, README "Fuzzing") found, each input run
//! through the library path its target runs.

use flowgate::core::Value;
use flowgate::expr::Program;
use std::time::{Duration, Instant};

/// Generous: every input here takes milliseconds.
const QUICK: Duration = Duration::from_secs(5);

fn event() -> Value {
    serde_json::from_str(r#"{"a":{"a":1},"msg":"x"}"#).unwrap()
}

/// fuzz/jq (`halt(3)\0{}`: "fuzz target exited"): `halt` and `halt_error`
/// went to jaq's `unwrap_valr`, which calls `std::process::exit`, so one
/// event through `map: {program: halt}` ended the daemon with the
/// program's exit code, nothing flushed or acknowledged. They are
/// evaluation errors now.
#[test]
fn halt_in_a_program_is_an_evaluation_error_not_an_exit() {
    // `halt(3)` first: were it to exit again, the test binary fails with
    // status 3 (`halt` exits with 0, which passes for success).
    for code in [
        "halt(3)",
        "halt",
        "halt(0)",
        "\"bye\" | halt_error",
        ".msg | halt_error(1)",
        ".a, halt",
        "[.[] | halt]",
    ] {
        let p = Program::compile(code).unwrap_or_else(|e| panic!("{code}: {e:?}"));
        // `test` stops at the first output: `.a, halt` is true.
        if let Err(e) = p.test(&event()) {
            assert!(e.to_string().contains("halt"), "{code}: {e}");
        }
        let mut out = Vec::new();
        let (e, back) = p.outputs(event(), &mut out).expect_err(code);
        assert!(
            e.to_string().contains("cannot stop the daemon"),
            "{code}: {e}"
        );
        assert_eq!((out.len(), back), (0, event()), "{code}");
        let mut events = Vec::new();
        assert!(p.map(event(), &mut events).is_err(), "{code}");
    }
}

/// `n` levels of each construct that nests. A few thousand levels of most
/// of them overflowed the stack in jaq's parser or compiler, which aborts
/// the process: found by running the fuzz/jq target on such inputs (its
/// 4 KiB mutations had not got there), reachable from any pipeline file.
fn deep(kind: &str, n: usize) -> String {
    match kind {
        "paren" => format!("{}.{}", "(".repeat(n), ")".repeat(n)),
        "array" => format!("{}.{}", "[".repeat(n), "]".repeat(n)),
        "object" => format!("{}1{}", "{a:".repeat(n), "}".repeat(n)),
        "neg" => format!("{}1", "-".repeat(n)),
        "try" => format!("{}.", "try ".repeat(n)),
        "if" => format!("{}.{}", "if . then ".repeat(n), " end".repeat(n)),
        "pipe" => format!(".a{}", "|.a".repeat(n)),
        "plus" => format!("1{}", "+1".repeat(n)),
        "comma" => format!("[1{}]", ",1".repeat(n)),
        "as" => format!("{}.", ". as $x | ".repeat(n)),
        "interp" => format!("{}1{}", "\"\\(".repeat(n), ")\"".repeat(n)),
        "path" => format!(".a{}", ".a".repeat(n)),
        "index" => format!(".{}", "[0]".repeat(n)),
        "def" => format!("{}.{}", "def f: ".repeat(n), "; f".repeat(n)),
        "reduce" => format!("{}.", "reduce . as $x (0; ".repeat(n)) + &")".repeat(n),
        _ => unreachable!("{kind}"),
    }
}

const KINDS: &[&str] = &[
    "paren", "array", "object", "neg", "try", "if", "pipe", "plus", "comma", "as", "interp",
    "path", "index", "def", "reduce",
];

#[test]
fn deeply_nested_programs_are_refused_not_a_stack_overflow() {
    for kind in KINDS {
        for n in [2_000, 100_000] {
            let code = deep(kind, n);
            let start = Instant::now();
            let errors = Program::compile(&code).expect_err(kind);
            assert!(
                start.elapsed() < QUICK,
                "{kind} x {n}: {:?}",
                start.elapsed()
            );
            assert_eq!(errors.len(), 1, "{kind}: {errors:?}");
            assert!(
                errors[0]
                    .message
                    .starts_with("the program nests too deeply"),
                "{kind}: {}",
                errors[0].message
            );
            assert!(errors[0].span.end <= code.len());
            assert!(Program::compile_interpreted(&code).is_err());
        }
    }
}

#[test]
fn a_deeply_nested_program_in_a_pipeline_file_is_a_positioned_error() {
    let yaml = format!(
        "sources:\n  g: {{type: generator, events: [{{a: 1}}]}}\n\
         transforms:\n  m: {{type: map, inputs: [g], program: '{}'}}\n\
         sinks:\n  out: {{type: stdout, inputs: [m]}}\n",
        deep("paren", 50_000)
    );
    let start = Instant::now();
    let Err(errors) = flowgate::graph::load_str(&yaml, "deep.yaml", "deep") else {
        panic!("a program nested 50,000 deep was accepted");
    };
    assert!(start.elapsed() < QUICK);
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(
        text[0].starts_with("deep.yaml:4:") && text[0].contains("nests too deeply"),
        "{}",
        text[0]
    );
}

/// The deepest program of each kind the check lets through still compiles
/// and runs, on the stack of a runtime worker (2 MiB) in a release build.
/// Debug builds' frames are several times larger: they get more.
#[test]
fn programs_at_the_nesting_limit_compile_and_run_on_a_worker_stack() {
    let stack = if cfg!(debug_assertions) {
        64 << 20
    } else {
        2 << 20
    };
    let limit = flowgate::expr::nesting::MAX_NESTING;
    let at_limit: Vec<String> = KINDS
        .iter()
        .map(|kind| {
            let n = (1..limit * 2)
                .take_while(|&n| flowgate::expr::nesting::check(&deep(kind, n), limit).is_ok())
                .last()
                .unwrap_or_else(|| panic!("{kind}: one level is refused"));
            assert!(n >= limit / 6, "{kind}: only {n} levels accepted");
            deep(kind, n)
        })
        .collect();
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || {
            for code in at_limit {
                let p = Program::compile(&code).unwrap_or_else(|e| panic!("{code}: {e:?}"));
                let _ = p.test(&event());
                let _ = p.outputs(event(), &mut Vec::new());
                let p = Program::compile_interpreted(&code).unwrap();
                let _ = p.outputs(event(), &mut Vec::new());
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
