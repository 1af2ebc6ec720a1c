//! The latency a stage adds (issue 12, target p99 < 1 ms per stage), through
//! the real binary: a generator, a map that stamps `.t0 = now`, N maps
//! (`.hops += 1`), a map that stamps `.t1 = now`, a file. First the chain's
//! maximum rate (no `rate`, as fast as it goes), then, at half of it, the
//! distribution of `t1 - t0` with N = 4 and with N = 0; what the four stages
//! add is the difference, per stage a quarter of it.
//!
//! `cargo bench --bench stage_latency`; `LATENCY_SECONDS=10` runs each
//! measured chain that long (default 6), `LATENCY_RATE=N` skips the
//! maximum-rate run and uses N events/s.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const STAGES: usize = 4;

fn pipeline(dir: &Path, stages: usize, count: u64, rate: Option<u64>, out: &Path) -> PathBuf {
    let mut yaml = format!(
        "name: latency\nsources:\n  gen: {{type: generator, count: {count}{}, events: [{{msg: hello, status: 200, host: web-01}}]}}\ntransforms:\n  t0: {{type: map, inputs: [gen], program: '.t0 = now'}}\n",
        rate.map(|r| format!(", rate: {r}")).unwrap_or_default()
    );
    let mut last = "t0".to_string();
    for i in 1..=stages {
        yaml.push_str(&format!(
            "  s{i}: {{type: map, inputs: [{last}], program: '.hops += 1'}}\n"
        ));
        last = format!("s{i}");
    }
    yaml.push_str(&format!(
        "  t1: {{type: map, inputs: [{last}], program: '.t1 = now'}}\nsinks:\n  out: {{type: file, inputs: [t1], path: \"{}\"}}\n",
        out.display()
    ));
    let file = dir.join(format!("latency_{stages}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    file
}

fn run(file: &Path, state: &Path) -> f64 {
    let _ = std::fs::remove_dir_all(state);
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .args(["run", file.to_str().unwrap(), "--metrics-address", "off"])
        .arg("--data-dir")
        .arg(state)
        .env("RUST_LOG", "warn")
        .status()
        .expect("run flowgate");
    assert!(status.success(), "flowgate failed: {status}");
    started.elapsed().as_secs_f64()
}

/// Milliseconds from `t0` to `t1` of every event written, sorted.
fn latencies(out: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(out).unwrap();
    let mut d: Vec<f64> = text
        .lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            (e["t1"].as_f64().unwrap() - e["t0"].as_f64().unwrap()) * 1000.0
        })
        .collect();
    d.sort_by(f64::total_cmp);
    d
}

fn pct(d: &[f64], p: f64) -> f64 {
    d[((d.len() as f64 * p) as usize).min(d.len() - 1)]
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/bench/latency");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.ndjson");
    let state = dir.join("state");
    let seconds: u64 = std::env::var("LATENCY_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let rate = match std::env::var("LATENCY_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        Some(r) => r,
        None => {
            let count = 2_000_000;
            let _ = std::fs::remove_file(&out);
            let secs = run(&pipeline(&dir, STAGES, count, None, &out), &state);
            let max = count as f64 / secs;
            println!(
                "{STAGES}-stage chain, maximum: {max:.0} events/s ({count} events in {secs:.2} s)"
            );
            (max / 2.0) as u64
        }
    };
    println!("at {rate} events/s for {seconds} s:");
    let mut p = [(0.0, 0.0); 2];
    for (i, stages) in [0, STAGES].into_iter().enumerate() {
        let _ = std::fs::remove_file(&out);
        run(
            &pipeline(&dir, stages, rate * seconds, Some(rate), &out),
            &state,
        );
        let d = latencies(&out);
        p[i] = (pct(&d, 0.5), pct(&d, 0.99));
        println!(
            "  t0 -> {stages} maps -> t1: {} events  p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            d.len(),
            p[i].0,
            p[i].1,
            d[d.len() - 1]
        );
    }
    let per = |a: f64, b: f64| (b - a) / STAGES as f64;
    println!(
        "added per stage: p50 {:.3} ms  p99 {:.3} ms (target p99 < 1 ms)",
        per(p[0].0, p[1].0),
        per(p[0].1, p[1].1)
    );
}
