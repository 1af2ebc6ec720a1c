//! SPEC §10, jq programs run by events: a stage `timeout` stops the
//! evaluation itself (no thread keeps running for it), and nothing a
//! program does with an event ends the daemon.

mod common;
use common::*;
use std::process::Stdio;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the parenthesised command name; utime and stime are
    // the 14th and 15th fields of the line, in clock ticks (100 per second).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

#[test]
fn a_runaway_program_stops_at_the_stage_timeout() {
    let s = Scratch::new();
    let port = free_port();
    let file = s.write(
        "p.yaml",
        &format!(
            "name: runaway\nsources:\n  in: {{type: http_server, address: '127.0.0.1:{port}'}}\ntransforms:\n  m: {{type: map, inputs: [in], program: '.len = ([range(.n)] | length)', timeout: 1s, on_error: route}}\nsinks:\n  out: {{type: file, inputs: [m], path: $DIR/out.ndjson}}\n  bad: {{type: file, inputs: [m.errors], path: $DIR/bad.ndjson}}\n"
        ),
    );
    let d = Daemon::start(&file, &[], Stdio::null());
    let pid = d.child.id();
    wait_listening(port);
    let url = format!("http://127.0.0.1:{port}/");
    // 10^9 items: minutes of work and gigabytes if it were left running.
    assert_eq!(post(&url, r#"{"id":1,"n":1000000000}"#, None).0, 200);
    let failed = || {
        std::fs::read_to_string(s.path("bad.ndjson"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    assert!(eventually(LONG, || failed() == 1), "{}", d.log_text());
    let bad = s.read_lines("bad.ndjson");
    assert_eq!(bad[0]["id"], 1);
    assert_eq!(bad[0]["error"]["message"], "timed out after 1s");

    // The evaluation stopped: the daemon goes back to idle. Each check
    // measures one half-second window; before the fix every window was
    // a full core busy, for minutes.
    let idle = eventually(LONG, || {
        let before = cpu_seconds(pid);
        std::thread::sleep(Duration::from_millis(500));
        cpu_seconds(pid) - before < 0.15
    });
    assert!(
        idle,
        "still busy after the timeout: {:.1} s CPU",
        cpu_seconds(pid)
    );
    eprintln!("idle again; RSS {:.0} MiB", rss_mib(pid));

    // And it still serves.
    assert_eq!(post(&url, r#"{"id":2,"n":3}"#, None).0, 200);
    assert!(eventually(LONG, || {
        std::fs::read_to_string(s.path("out.ndjson")).is_ok_and(|t| t.lines().count() == 1)
    }));
    assert_eq!(
        s.read_lines("out.ndjson"),
        [serde_json::json!({"id": 2, "n": 3, "len": 3})]
    );
}

#[test]
fn halt_in_a_program_fails_the_event_and_the_daemon_keeps_running() {
    // jaq's `halt_error` used to end the whole process (exit 3 here).
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  in: {type: stdin}\ntransforms:\n  m: {type: map, inputs: [in], program: 'if .x == 2 then halt_error(3) else . end', on_error: route}\nsinks:\n  out: {type: file, inputs: [m], path: $DIR/out.ndjson}\n  bad: {type: file, inputs: [m.errors], path: $DIR/bad.ndjson}\n",
    );
    let out = run(
        &["run", file.to_str().unwrap()],
        Some("{\"x\":1}\n{\"x\":2}\n{\"x\":3}\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        s.read_lines("out.ndjson"),
        [serde_json::json!({"x": 1}), serde_json::json!({"x": 3})]
    );
    let bad = s.read_lines("bad.ndjson");
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["x"], 2);
    assert_eq!(
        bad[0]["error"]["message"],
        "halt (exit code 3): a pipeline program cannot stop the daemon"
    );
}
