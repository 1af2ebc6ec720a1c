//! What the NATS tests share: the server (from `FLOWGATE_TEST_NATS_URL`,
//! else a `nats-server` on PATH started once per test binary; in CI a
//! missing server fails), unique names and reading ids back.
#![allow(dead_code)]

use crate::common::*;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

pub struct Server {
    url: String,
    /// The write end of the keeper shell's stdin: it closes when the test
    /// binary exits, and the shell then stops the server.
    _keeper: Option<(Child, std::process::ChildStdin)>,
}

/// Starts `nats-server` under a shell that stops it and removes its store
/// once this process is gone: statics are never dropped, so a server owned
/// by one would outlive every test binary run outside CI.
const KEEPER: &str =
    r#"nats-server "$@" >/dev/null 2>&1 & pid=$!; read _; kill $pid; wait $pid; rm -rf "$STORE""#;

pub fn server() -> Option<&'static str> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            if let Ok(url) = std::env::var("FLOWGATE_TEST_NATS_URL") {
                return Some(Server { url, _keeper: None });
            }
            let in_ci = std::env::var_os("CI").is_some();
            if let Err(e) = Command::new("nats-server").arg("--version").output() {
                if in_ci {
                    panic!(
                        "CI must provide NATS: set FLOWGATE_TEST_NATS_URL or install nats-server ({e})"
                    );
                }
                return None;
            }
            let port = free_port();
            let store = tempfile::tempdir().unwrap().keep();
            let mut keeper = Command::new("sh")
                .args(["-c", KEEPER, "sh", "-js", "-a", "127.0.0.1", "-p"])
                .arg(port.to_string())
                .arg("-sd")
                .arg(&store)
                .env("STORE", &store)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("start a shell for nats-server");
            wait_listening(port);
            let stdin = keeper.stdin.take().expect("piped");
            Some(Server {
                url: format!("nats://127.0.0.1:{port}"),
                _keeper: Some((keeper, stdin)),
            })
        })
        .as_ref()
        .map(|s| s.url.as_str())
}

#[macro_export]
macro_rules! nats_or_skip {
    () => {
        match nats_common::server() {
            Some(url) => url,
            None => {
                eprintln!(
                    "skipped: no NATS server (set FLOWGATE_TEST_NATS_URL or install nats-server)"
                );
                return;
            }
        }
    };
}

pub fn ids(s: &Scratch, name: &str) -> Vec<u64> {
    s.read_lines(name)
        .iter()
        .map(|e| e["i"].as_u64().unwrap())
        .collect()
}

/// Publishes `{"i": from..to}` with a publisher pipeline (file source ->
/// nats sink with `sink_keys`), run to completion.
pub fn publish(
    s: &Scratch,
    url: &str,
    stream: &str,
    subject: &str,
    ids: std::ops::Range<u64>,
    sink_keys: &str,
) {
    let input: String = ids.map(|i| format!("{{\"i\":{i}}}\n")).collect();
    std::fs::write(s.path("input.ndjson"), input).unwrap();
    run_to_end(
        s,
        "publisher.yaml",
        &format!(
            "name: publisher\nsources:\n  in: {{type: file, path: $DIR/input.ndjson}}\nsinks:\n  bus: {{type: nats, inputs: [in], url: '{url}', subject: '{subject}', stream: {stream}{sink_keys}}}\n"
        ),
    );
}
