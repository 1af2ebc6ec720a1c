//! `/ui` in a real browser: headless Chromium, driven over the DevTools
//! protocol, loads the page of a daemon running `pipelines/fanout_workers.yaml`
//! (made endless), and the test reads the DOM: every component drawn, a
//! counter that moves, a component's live tap sample, a reload redrawn
//! with port labels; a screenshot is kept under target/; and every request
//! the page made went to the daemon, none to another host.
//!
//! The browser: `FLOWGATE_TEST_CHROMIUM`, else `/usr/bin/chromium` (Debian's
//! package, installed by .ci/chromium.sh). In CI a missing browser fails.

mod common;
use base64::Engine;
use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("FLOWGATE_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must provide Chromium: install Debian's chromium (.ci/chromium.sh) or set FLOWGATE_TEST_CHROMIUM"
    );
    eprintln!(
        "skipping: no Chromium at {} (set FLOWGATE_TEST_CHROMIUM)",
        path.display()
    );
    None
}

/// The browser process, killed however the test ends.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts headless Chromium; returns it and its DevTools port.
fn launch(bin: &PathBuf) -> (Browser, u16) {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            // Any other host resolves to nothing: a request to one fails
            // here even if the check below were wrong.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=1500,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("DevTools listening on ws://127.0.0.1:").nth(1) {
                let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let _ = tx.send(port.parse::<u16>().unwrap());
            }
        }
    });
    let port = rx
        .recv_timeout(LONG)
        .expect("chromium printed its DevTools address");
    (
        Browser {
            child,
            _profile: profile,
        },
        port,
    )
}

/// `GET /json/list` of the DevTools server, which keeps the connection
/// open: the body is read by its Content-Length.
fn devtools_list(address: &str) -> Option<Value> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(address).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET /json/list HTTP/1.1\r\nHost: {address}\r\n\r\n").ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().ok())
        })??;
        if body.len() >= length {
            return serde_json::from_str(&body[..length]).ok();
        }
    }
}

/// A DevTools protocol session with one page: commands wait for their
/// answer; events seen meanwhile are kept.
struct Page {
    ws: tungstenite::WebSocket<TcpStream>,
    next: u64,
    events: Vec<Value>,
}

impl Page {
    fn connect(port: u16) -> Self {
        let address = format!("127.0.0.1:{port}");
        let mut list = Value::Null;
        assert!(eventually(LONG, || {
            list = devtools_list(&address).unwrap_or(Value::Null);
            list.as_array()
                .is_some_and(|l| l.iter().any(|t| t["type"] == "page"))
        }));
        let page = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .unwrap();
        let url = page["webSocketDebuggerUrl"].as_str().unwrap().to_string();
        let stream = TcpStream::connect(&address).unwrap();
        stream.set_read_timeout(Some(LONG)).unwrap();
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("DevTools websocket");
        Self {
            ws,
            next: 0,
            events: Vec::new(),
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(tungstenite::Message::text(msg)).unwrap();
        loop {
            let msg = self.ws.read().unwrap_or_else(|e| panic!("{method}: {e}"));
            let Ok(text) = msg.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
            if v.get("method").is_some() {
                self.events.push(v);
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Evaluates until `ok` holds of the value; returns it.
    fn wait_for(&mut self, expression: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let v = self.eval(expression);
            if ok(&v) {
                return v;
            }
            assert!(
                start.elapsed() < LONG,
                "{what}: still {v} after {LONG:?}; page errors: {:?}",
                self.page_errors()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Exceptions the page's script threw and console errors, so far.
    fn page_errors(&self) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for e in &self.events {
            let text = match e["method"].as_str() {
                Some("Runtime.exceptionThrown") => {
                    e["params"]["exceptionDetails"]["exception"]["description"].to_string()
                }
                Some("Runtime.consoleAPICalled") if e["params"]["type"] == "error" => {
                    e["params"]["args"].to_string()
                }
                _ => continue,
            };
            if !seen.contains(&text) {
                seen.push(text);
            }
        }
        seen
    }

    fn screenshot(&mut self, path: &std::path::Path) {
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).unwrap();
    }
}

const NAMES: &str = "[...document.querySelectorAll('g.node')].map(n => n.dataset.component).sort()";

#[test]
fn ui_draws_the_running_graph_with_live_figures_and_talks_only_to_the_daemon() {
    let Some(bin) = chromium() else { return };
    let s = Scratch::new();
    // The example, endless at a steady rate so the figures keep moving.
    let example = std::fs::read_to_string(repo().join("pipelines/fanout_workers.yaml")).unwrap();
    let endless = example
        .replace("    count: 20000\n", "    rate: 800\n")
        .replace("${OUT_DIR:-out}", &s.dir.path().display().to_string());
    assert_ne!(endless, example);
    let file = s.write("fanout_workers.yaml", &endless);
    let d = Daemon::start(&file, &[], Stdio::null());
    let (_browser, port) = launch(&bin);
    let mut page = Page::connect(port);
    page.call("Network.enable", json!({}));
    page.call("Page.enable", json!({}));
    page.call("Runtime.enable", json!({}));
    let ui = format!("http://{}/ui", d.address);
    page.call("Page.navigate", json!({"url": ui}));

    // Every component is drawn, with its figures filled in.
    let want = json!(["audit", "count", "large", "orders", "price", "refunds"]);
    page.wait_for(NAMES, "the graph", |v| *v == want);
    assert_eq!(
        page.eval("document.querySelectorAll('path.edge').length"),
        6
    );
    let totals =
        "document.querySelector('g.node[data-component=\"orders\"] text.totals').textContent";
    let first = page.wait_for(totals, "the first figures", |v| {
        v.as_str().is_some_and(|t| t.ends_with(" out"))
    });
    page.wait_for(totals, "a counter that moves", |v| *v != first);
    page.wait_for(
        "document.querySelector('g.node[data-component=\"price\"] text.rates').textContent",
        "a rate",
        |v| {
            v.as_str().is_some_and(|t| {
                t.starts_with("in ") && t.contains("/s · out ") && !t.contains('…')
            })
        },
    );
    let busy = page
        .eval("document.querySelector('g.node[data-component=\"price\"] text.load').textContent");
    assert!(
        busy.as_str().unwrap().contains("/4"),
        "price has four workers: {busy}"
    );
    assert_eq!(
        page.eval("document.querySelectorAll('g.node[data-component=\"price\"] rect.bar').length"),
        1
    );

    // Selecting a component streams a sample of its output.
    page.eval("document.querySelector('g.node[data-component=\"price\"]').dispatchEvent(new MouseEvent('click', {bubbles: true}))");
    page.wait_for(
        "document.getElementById('detail-tap').textContent",
        "the tap sample",
        |v| {
            v.as_str().is_some_and(|t| {
                t.lines()
                    .any(|l| serde_json::from_str::<Value>(l).is_ok_and(|e| e["total"].is_number()))
            })
        },
    );
    page.wait_for(
        "document.querySelector('#detail-figures').textContent",
        "the figures table",
        |v| v.as_str().is_some_and(|t| t.contains("events in")),
    );
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-fanout_workers.png");
    page.screenshot(&shot);
    eprintln!("screenshot: {}", shot.display());

    // A reload adds a route: the graph is redrawn with its ports on the edges.
    s.write(
        "fanout_workers.yaml",
        &endless.replace(
            "sinks:\n",
            "  kinds:\n    type: route\n    inputs: [orders]\n    routes: {sale: '.kind == \"sale\"'}\nsinks:\n  sales:\n    type: blackhole\n    inputs: [kinds.sale, kinds.unmatched]\n    circuit_breaker: {consecutive_failures: 5}\n",
        ),
    );
    d.signal("HUP");
    page.wait_for(NAMES, "the redrawn graph", |v| {
        v.as_array().is_some_and(|a| a.len() == 8)
    });
    let labels = page
        .eval("[...document.querySelectorAll('text.edge-label')].map(t => t.textContent).sort()");
    assert_eq!(labels, json!(["sale", "unmatched"]));
    page.wait_for(
        "document.querySelector('g.node[data-component=\"sales\"] text.totals').textContent",
        "the new sink's figures",
        |v| v.as_str().is_some_and(|t| !t.starts_with("0 in")),
    );

    let breaker =
        "document.querySelector('g.node[data-component=\"sales\"] g.breaker').textContent";
    assert_eq!(page.eval(breaker), "closed");

    // Every request the page made went to the daemon.
    page.eval("1");
    let urls: Vec<String> = page
        .events
        .iter()
        .filter(|e| e["method"] == "Network.requestWillBeSent")
        .map(|e| e["params"]["request"]["url"].as_str().unwrap().to_string())
        .collect();
    let origin = format!("http://{}/", d.address);
    for path in [
        "ui",
        "ui/app.js",
        "ui/app.css",
        "api/pipelines",
        "tap/fanout_workers/price",
    ] {
        assert!(
            urls.contains(&format!("{origin}{path}")),
            "no request for /{path}: {urls:?}"
        );
    }
    let elsewhere: Vec<&String> = urls.iter().filter(|u| !u.starts_with(&origin)).collect();
    assert!(
        elsewhere.is_empty(),
        "requests to another host: {elsewhere:?}"
    );
}
