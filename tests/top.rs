//! `flowgate top` against a running daemon: the one-table snapshot when
//! stdout is not a terminal, and the live screen under a pseudo-terminal
//! (tmux), which shows every component and quits on `q`.
//!
//! tmux: Debian's package, installed by .ci/run; in CI a missing tmux fails.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

const PIPELINE: &str = "name: shop
sources:
  orders: {type: generator, rate: 500, events: [{n: 1, kind: a}, {n: 2, kind: b}]}
transforms:
  split: {type: route, inputs: [orders], routes: {b: '.kind == \"b\"'}, workers: 3}
sinks:
  bees: {type: blackhole, inputs: [split.b]}
  rest: {type: blackhole, inputs: [split.unmatched], buffer: {size: 300}}
";

#[test]
fn top_prints_one_snapshot_table_when_stdout_is_not_a_terminal() {
    let s = Scratch::new();
    let d = Daemon::start(&s.write("shop.yaml", PIPELINE), &[], Stdio::null());
    assert!(eventually(LONG, || {
        metric(
            &d.metrics(),
            "flowgate_events_in_total",
            &[("component", "rest")],
        )
        .unwrap_or(0.0)
            > 0.0
    }));
    let out = run(&["top", "--metrics-address", &d.address], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "COMPONENT",
            "TYPE",
            "IN/S",
            "OUT/S",
            "ERR/S",
            "BUFFER",
            "BUSY",
            "BREAKER",
            "IN",
            "OUT"
        ],
        "{table}"
    );
    let names: Vec<&str> = lines[1..].iter().map(|l| l[0]).collect();
    assert_eq!(names, ["orders", "split", "bees", "rest"], "{table}");
    let row = |name: &str| lines.iter().find(|l| l[0] == name).unwrap().clone();
    // The source at 500 events a second, read twice a second apart.
    let orders = row("orders");
    assert_eq!(&orders[1..3], ["source", "generator"], "{table}");
    let rate: f64 = orders[4]
        .parse()
        .unwrap_or_else(|_| panic!("a rate: {table}"));
    assert!(
        (100.0..=1000.0).contains(&rate),
        "orders out/s {rate}: {table}"
    );
    let split = row("split");
    assert_eq!(&split[1..3], ["transform", "route"]);
    assert!(split[8].ends_with("/3"), "three workers: {table}");
    // BUFFER is `events/capacity  fill%`.
    let rest = row("rest");
    assert!(rest[6].ends_with("/300"), "{table}");
    let total_in: u64 = rest[rest.len() - 2].parse().unwrap();
    assert!(total_in > 0, "{table}");

    let nobody = format!("127.0.0.1:{}", free_port());
    let out = run(&["top", "--metrics-address", &nobody], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("cannot reach a flowgate daemon at {nobody}")),
        "{}",
        text(&out.stderr)
    );
}

/// A tmux server of this test's own (`-L`), killed however the test ends.
struct Tmux(String);

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.0)
            .args(args)
            .output()
            .expect("tmux")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

#[test]
fn top_under_a_terminal_shows_every_component_and_quits_on_q() {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide tmux (.ci/run installs it)"
        );
        eprintln!("skipping: tmux is not installed");
        return;
    }
    let s = Scratch::new();
    let d = Daemon::start(&s.write("shop.yaml", PIPELINE), &[], Stdio::null());
    let tmux = Tmux(format!("flowgate-top-{}", std::process::id()));
    let status = s.path("status");
    let script = format!(
        "'{}' top --metrics-address {}; echo $? > '{}'",
        bin(),
        d.address,
        status.display()
    );
    let out = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "150",
        "-y",
        "30",
        &script,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut screen = String::new();
    let shown = eventually(LONG, || {
        screen = text(&tmux.cmd(&["capture-pane", "-p", "-t", "top"]).stdout);
        // Rates appear from the second read on.
        screen.contains("q quits")
            && ["orders", "split", "bees", "rest"]
                .iter()
                .all(|c| screen.contains(c))
            && screen.lines().any(|l| {
                let cells: Vec<String> = l
                    .replace('│', " ")
                    .split_whitespace()
                    .map(String::from)
                    .collect();
                // orders, source, generator, IN/S, OUT/S: a rate above zero.
                cells.first().is_some_and(|c| c == "orders")
                    && cells
                        .get(4)
                        .and_then(|r| r.parse::<f64>().ok())
                        .is_some_and(|r| r > 0.0)
            })
    });
    assert!(shown, "the screen:\n{screen}");
    // Down highlights the first row (reverse video), the way to scroll.
    assert!(
        tmux.cmd(&["send-keys", "-t", "top", "Down"])
            .status
            .success()
    );
    assert!(
        eventually(LONG, || {
            screen = text(&tmux.cmd(&["capture-pane", "-p", "-e", "-t", "top"]).stdout);
            screen
                .lines()
                .any(|l| l.contains("\u{1b}[7m") && l.contains("orders"))
        }),
        "no highlighted row:\n{screen}"
    );
    let out = tmux.cmd(&["send-keys", "-t", "top", "q"]);
    assert!(out.status.success());
    assert!(
        eventually(LONG, || std::fs::read_to_string(&status)
            .is_ok_and(|s| s.trim() == "0")),
        "top did not quit with 0 on q; screen:\n{}",
        text(&tmux.cmd(&["capture-pane", "-p", "-t", "top"]).stdout)
    );
}
