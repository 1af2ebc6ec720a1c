//! flowgate as an installed system tool: the completion scripts load in
//! bash, zsh and fish and complete what the binary accepts, the man pages
//! render with `man -l`, and `flowgate run` with no path runs the default
//! pipelines directory or says what to pass.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Steps aside (or, in CI, fails) when `tool` is not installed.
fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install {tool} (.ci/packaging.sh)"
        );
        eprintln!("{tool} is not installed here; .ci/packaging.sh installs it");
    }
    found
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {:?}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn script(s: &Scratch, shell: &str, name: &str) -> String {
    let out = run(&["completions", shell], None);
    let script = ok(&out, "flowgate completions");
    s.write(name, &script).display().to_string()
}

/// What bash offers for `words` (the last one being completed): calls the
/// function the script registered with `complete -F`, with the arguments
/// and COMP_ variables bash gives it.
fn bash_complete(file: &str, words: &[&str]) -> String {
    let program = r#"source "$0"
spec=$(complete -p flowgate) || exit 1
fn=${spec#*-F }; fn=${fn%% *}
COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
"$fn" flowgate "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
echo "${COMPREPLY[*]}""#;
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", program, file])
        .args(words)
        .output()
        .unwrap();
    ok(&out, "bash completion").trim().to_string()
}

#[test]
fn bash_completes_subcommands_flags_and_values() {
    if !have("bash") {
        return;
    }
    let s = Scratch::new();
    let file = script(&s, "bash", "flowgate.bash");
    assert_eq!(bash_complete(&file, &["flowgate", "va"]), "validate");
    assert_eq!(bash_complete(&file, &["flowgate", "co"]), "completions");
    assert_eq!(
        bash_complete(&file, &["flowgate", "run", "--me"]),
        "--metrics-address"
    );
    assert_eq!(
        bash_complete(&file, &["flowgate", "run", "--log-format", ""]),
        "text json"
    );
    assert_eq!(
        bash_complete(&file, &["flowgate", "completions", ""]),
        "-h --help bash zsh fish"
    );
    assert_eq!(
        bash_complete(&file, &["flowgate", "buffer", ""]),
        "-h --help check help"
    );
}

#[test]
fn fish_completes_subcommands_and_values() {
    if !have("fish") {
        return;
    }
    let s = Scratch::new();
    let file = script(&s, "fish", "flowgate.fish");
    let complete = |line: &str| {
        let out = Command::new("fish")
            .args(["--no-config", "-c"])
            .arg(format!("source {file}; complete -C '{line}'"))
            .output()
            .unwrap();
        // Each candidate is `word<TAB>description`.
        ok(&out, "fish completion")
            .lines()
            .map(|l| l.split('\t').next().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(complete("flowgate va"), ["validate"]);
    assert_eq!(complete("flowgate run --log-format "), ["json", "text"]);
    assert!(
        complete("flowgate ").contains(&"man".to_string()),
        "{:?}",
        complete("flowgate ")
    );
}

#[test]
fn zsh_loads_the_completion_function() {
    if !have("zsh") {
        return;
    }
    let s = Scratch::new();
    let file = script(&s, "zsh", "_flowgate");
    // compinit -D: no dump file; -u: the temp dir's owner is not checked.
    let out = Command::new("zsh")
        .args(["-f", "-c"])
        .arg(format!(
            "autoload -U compinit && compinit -u -D && source {file} && whence -w _flowgate && print -r -- ${{_comps[flowgate]}}"
        ))
        .output()
        .unwrap();
    let said = ok(&out, "zsh");
    assert_eq!(
        said,
        "_flowgate: function\n_flowgate\n",
        "{}",
        text(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "zsh: {}", text(&out.stderr));
}

/// `man -l FILE` as text, with groff's warnings; asserts there are none.
fn render(page: &Path) -> String {
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    let page_text = ok(&out, "man -l");
    assert!(
        out.stderr.is_empty(),
        "{} renders with warnings: {}",
        page.display(),
        text(&out.stderr)
    );
    page_text
}

#[test]
fn the_man_pages_render() {
    if !have("man") {
        return;
    }
    let s = Scratch::new();
    let top = ok(&run(&["man"], None), "flowgate man");
    let rendered = render(&s.write("flowgate.1", &top));
    for needle in [
        "flowgate - A declarative dataflow engine",
        "flowgate-run(1)",
        "flowgate-completions(1)",
        "EXIT STATUS",
        "78     Invalid configuration.",
        "/etc/flowgate/pipelines/",
        "FLOWGATE_PIPELINES_DIR",
        "SIGHUP",
    ] {
        assert!(rendered.contains(needle), "no {needle:?} in\n{rendered}");
    }

    let dir = s.path("man");
    let out = run(&["man", "--out-dir", dir.to_str().unwrap()], None);
    let mut written: Vec<String> = ok(&out, "flowgate man --out-dir")
        .lines()
        .map(|l| Path::new(l).file_name().unwrap().to_string_lossy().into())
        .collect();
    written.sort();
    for page in [
        "flowgate.1",
        "flowgate-run.1",
        "flowgate-validate.1",
        "flowgate-man.1",
        "flowgate-buffer.1",
        "flowgate-buffer-check.1",
    ] {
        assert!(
            written.contains(&page.to_string()),
            "{page} not in {written:?}"
        );
    }
    assert!(!written.iter().any(|p| p.contains("help")), "{written:?}");
    for page in &written {
        render(&dir.join(page));
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("flowgate.1")).unwrap(),
        top
    );
    let run_page = render(&dir.join("flowgate-run.1"));
    for needle in ["--metrics-address", "--data-dir", "/etc/flowgate/pipelines"] {
        assert!(run_page.contains(needle), "no {needle:?} in\n{run_page}");
    }
}

fn run_with_default_dir(dir: &Path, s: &Scratch) -> Output {
    Command::new(bin())
        .args(["run", "--metrics-address", "off", "--data-dir"])
        .arg(s.path("data"))
        .env("FLOWGATE_PIPELINES_DIR", dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn run_without_a_path_runs_the_default_directory() {
    let s = Scratch::new();
    let dir = s.path("pipelines");
    std::fs::create_dir(&dir).unwrap();
    for (name, count) in [("a", 3), ("b", 2)] {
        std::fs::write(
            dir.join(format!("{name}.yaml")),
            format!(
                "name: {name}\nsources:\n  g: {{type: generator, count: {count}, events: [{{n: 1}}]}}\nsinks:\n  out: {{type: file, inputs: [g], path: '{}'}}\n",
                s.path(&format!("{name}.ndjson")).display()
            ),
        )
        .unwrap();
    }
    let out = run_with_default_dir(&dir, &s);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(s.read_lines("a.ndjson").len(), 3);
    assert_eq!(s.read_lines("b.ndjson").len(), 2);
}

#[test]
fn run_without_a_path_and_no_default_directory_says_what_to_pass() {
    let s = Scratch::new();
    let missing = s.path("no-such-dir");
    let out = run_with_default_dir(&missing, &s);
    assert_eq!(out.status.code(), Some(2));
    let said = text(&out.stderr);
    assert!(said.contains("flowgate run PATH..."), "{said}");
    assert!(
        said.contains(&format!("{} does not exist", missing.display())),
        "{said}"
    );
    assert!(!s.path("data").exists(), "nothing runs, nothing is created");
}
