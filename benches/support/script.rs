//! Runs one of the shell benchmarks in `benches/` against the binary
//! `cargo bench` built, so `cargo bench` prints its figures too. A bench
//! is not a test: when a tool the script needs is missing it says so in
//! one line and the bench ends with success.

use std::process::Command;

/// Whether `tool` starts (whatever it answers to `--version`).
fn installed(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

/// Runs `benches/<script>` with `env` (its output goes to ours), or prints
/// why not when one of `tools` is missing. Panics when the script fails:
/// its figures would be missing or wrong.
pub fn run(bench: &str, script: &str, tools: &[&str], env: &[(&str, String)]) {
    if let Some(missing) = tools.iter().find(|t| !installed(t)) {
        println!("{bench}: skipped, {missing} is not installed (Debian: apt install {missing})");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("bash")
        .arg(root.join("benches").join(script))
        .current_dir(root)
        .env("FLOWGATE", env!("CARGO_BIN_EXE_flowgate"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .status()
        .unwrap_or_else(|e| panic!("{bench}: running bash benches/{script}: {e}"));
    assert!(
        status.success(),
        "{bench}: benches/{script} failed: {status}"
    );
}

/// An environment variable, or `default`.
pub fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}
