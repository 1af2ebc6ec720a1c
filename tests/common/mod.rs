//! Helpers for black-box tests: run the real binary on YAML pipelines.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_flowgate")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temp dir holding one pipeline file.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `text` to `name`, replacing `$DIR` with the scratch dir.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(
            &p,
            text.replace("$DIR", &self.dir.path().display().to_string()),
        )
        .expect("write");
        p
    }

    pub fn read_lines(&self, name: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.path(name)).unwrap_or_default();
        // Only whole lines: a poll may read while a line is being written.
        text.split_inclusive('\n')
            .filter_map(|l| l.strip_suffix('\n'))
            .map(|l| serde_json::from_str(l).expect("output line is JSON"))
            .collect()
    }
}

/// Runs `flowgate ARGS` to completion with optional stdin.
pub fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flowgate");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.unwrap_or("").to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(data.as_bytes());
    });
    let out = wait_with_timeout(child, Duration::from_secs(60));
    writer.join().expect("stdin writer");
    out
}

fn wait_with_timeout(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Output {
                status,
                stdout: out_t.join().unwrap(),
                stderr: err_t.join().unwrap(),
            };
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("flowgate did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A running daemon with its metrics address read from the log.
pub struct Daemon {
    pub child: Child,
    pub address: String,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
    /// The thread copying stderr into `log`; joined once the child exits,
    /// so the log holds every line the daemon wrote.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts `flowgate run FILE --metrics-address 127.0.0.1:0 EXTRA...`.
    pub fn start(file: &Path, extra: &[&str], stdout: Stdio) -> Self {
        let mut child = Command::new(bin())
            .arg("run")
            .arg(file)
            .args(["--metrics-address", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn flowgate");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log_w = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("on http://").nth(1) {
                    let _ = tx.send(rest.trim().to_string());
                }
                let mut l = log_w.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let address = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("daemon logged its metrics address");
        Self {
            child,
            address,
            log,
            reader: Some(reader),
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.address, path)
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics").1
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for exit; returns the exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // stderr reaches EOF once the child has exited (its
                // children, if any, hold no copy of it).
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return status.code();
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "flowgate did not exit within {limit:?}; log:\n{}",
                    self.log.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET (no client dependency needed for three endpoints).
pub fn http_get(address: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(address).expect("connect to metrics address");
    // Generous: on a machine loaded by the whole suite (and whatever else
    // runs), a daemon filling a disk buffer took over 10 s to answer once.
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// The value of one series in Prometheus text, matched by name and labels.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        if n != name {
            return None;
        }
        if labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        {
            value.parse().ok()
        } else {
            None
        }
    })
}

/// Polls `f` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// POSTs `body` (with an optional bearer token); returns status and body text.
pub fn post(url: &str, body: &str, token: Option<&str>) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut req = reqwest::Client::new().post(url).body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        let code = resp.status().as_u16();
        (code, resp.text().await.unwrap_or_default())
    })
}

/// Waits until something listens on the loopback `port`.
pub fn wait_listening(port: u16) {
    assert!(eventually(Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
}

/// Asserts `got == want` for long id lists, reporting lengths, the first
/// difference and the duplicates rather than printing both lists.
pub fn assert_ids(got: &[u64], want: &[u64], what: &str) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    let mut sorted = got.to_vec();
    sorted.sort_unstable();
    let dups = sorted.windows(2).filter(|w| w[0] == w[1]).count();
    let have: std::collections::HashSet<u64> = got.iter().copied().collect();
    let missing = want.iter().filter(|i| !have.contains(i)).count();
    panic!(
        "{what}: got {} ids, want {}; first difference at {first:?}; {dups} duplicates, {missing} missing",
        got.len(),
        want.len()
    );
}

/// `flowgate validate` on `yaml` (written to a scratch `p.yaml`): the exit
/// code and the stderr lines, with the file's path written as `F`.
pub fn validate_lines(yaml: &str) -> (Option<i32>, Vec<String>) {
    let s = Scratch::new();
    let file = s.write("p.yaml", yaml);
    let f = file.to_str().unwrap();
    let out = run(&["validate", f], None);
    let lines = text(&out.stderr)
        .lines()
        .map(|l| l.replacen(f, "F", 1))
        .collect();
    (out.status.code(), lines)
}

/// Serves `app` on 127.0.0.1 from its own runtime thread; returns the address.
pub fn serve_on_thread(app: axum::Router) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap().to_string()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

/// A name unique to this test run (pid and clock), so tests sharing a
/// server (topics, streams, groups) do not meet.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// Writes `yaml` as `name` in `s` and runs it to completion; it must succeed.
pub fn run_to_end(s: &Scratch, name: &str, yaml: &str) {
    let file = s.write(name, yaml);
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        None,
    );
    assert!(out.status.success(), "{name}: {}", text(&out.stderr));
}
