//! Runs the reference jobs of `../shared/bench` through the real binary and
//! prints events/s and peak RSS for each (and for the single-thread limit
//! program when `LIMIT_BIN` points at it).
//!
//! `cargo bench --bench reference_jobs` — generates the 2,000,000-event data
//! set into target/bench/ on first use (needs python3); `BENCH_JOBS=a,c1`
//! picks jobs, `BENCH_RUNS=3` repeats each and reports the median.
//! Job `a-acked` is job A with `follow: true`: the same work with
//! end-to-end acknowledgements and checkpoints (timed until its output is
//! complete, then stopped), to compare with job A, which acknowledges nothing.
//! Job `agg` is job A's data through an `aggregate` (per host and status,
//! 1-minute tumbling windows on `.ts`, count + p99 + avg) into a blackhole,
//! to compare with job B (issue 13: target >= 0.7x job B's events/s).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const EVENTS: u64 = 2_000_000;

struct Measure {
    seconds: f64,
    peak_rss_kib: u64,
}

/// Runs a command under GNU time to read its peak RSS.
fn measure(cmd: &mut Command) -> Measure {
    let timing = std::env::temp_dir().join(format!("flowgate-bench-time-{}", std::process::id()));
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&timing)
        .arg(program)
        .args(args);
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            timed.env(k, v);
        }
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let started = Instant::now();
    let status = timed
        .status()
        .expect("run /usr/bin/time (apt-get install time)");
    let seconds = started.elapsed().as_secs_f64();
    assert!(status.success(), "benchmark command failed: {status}");
    let peak_rss_kib = std::fs::read_to_string(&timing)
        .ok()
        .and_then(|t| t.trim().lines().last()?.parse().ok())
        .unwrap_or(0);
    Measure {
        seconds,
        peak_rss_kib,
    }
}

fn data_file(root: &Path) -> PathBuf {
    let data = root.join("target/bench/data.ndjson");
    if !data.exists() {
        std::fs::create_dir_all(data.parent().unwrap()).unwrap();
        let generator = root.join("../shared/bench/gen_data.py");
        eprintln!("generating {} events into {} ...", EVENTS, data.display());
        let ok = Command::new("python3")
            .arg(generator)
            .arg(EVENTS.to_string())
            .arg(&data)
            .status()
            .map(|s| s.success());
        assert!(
            matches!(ok, Ok(true)),
            "could not generate the data set with ../shared/bench/gen_data.py"
        );
    }
    data
}

fn median(mut v: Vec<Measure>) -> Measure {
    v.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    v.swap_remove(v.len() / 2)
}

fn main() {
    // `cargo bench` passes `--bench`; ignore harness arguments.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = data_file(&root);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let jobs = std::env::var("BENCH_JOBS").unwrap_or_else(|_| "a,b,c1,c16".into());
    let out_dir = root.join("target/bench");
    println!(
        "{:<8} {:>10} {:>14} {:>12}",
        "job", "seconds", "events/s", "peak RSS"
    );
    let mut c1 = None;
    for job in jobs.split(',') {
        if job == "a-acked" {
            let m = median((0..runs).map(|_| acked_a(&root, &data)).collect());
            println!(
                "{:<8} {:>10.2} {:>14.0} {:>13}",
                "flowgate a-acked",
                m.seconds,
                EVENTS as f64 / m.seconds,
                "-"
            );
            continue;
        }
        let file = match job {
            "agg" => aggregate_job(&out_dir),
            "a-disk" | "a-disk-all" => disk_a(&root, job == "a-disk-all"),
            _ => root.join(format!("../shared/bench/jobs/job_{job}.yaml")),
        };
        let out = out_dir.join(format!("out_{job}.ndjson"));
        let state = out_dir.join(format!("state_{job}"));
        let results = (0..runs)
            .map(|_| {
                let _ = std::fs::remove_file(&out);
                let _ = std::fs::remove_dir_all(&state);
                measure(
                    Command::new(env!("CARGO_BIN_EXE_flowgate"))
                        .args(["run", file.to_str().unwrap(), "--metrics-address", "off"])
                        .arg("--data-dir")
                        .arg(&state)
                        .env("BENCH_DATA", &data)
                        .env("BENCH_OUT", &out)
                        .env("RUST_LOG", "warn"),
                )
            })
            .collect();
        let m = median(results);
        let eps = EVENTS as f64 / m.seconds;
        println!(
            "{:<8} {:>10.2} {:>14.0} {:>9} MiB",
            format!("flowgate {job}"),
            m.seconds,
            eps,
            m.peak_rss_kib / 1024
        );
        if job == "c1" {
            c1 = Some(eps);
        }
        if let (Some(c1), "c16") = (c1, job) {
            println!("c16 / c1 = {:.2}", eps / c1);
        }
    }
    if let Ok(limit) = std::env::var("LIMIT_BIN") {
        let out = out_dir.join("limit_a.ndjson");
        let m = measure(Command::new("sh").arg("-c").arg(format!(
            "{limit} filter {} < {}",
            out.display(),
            data.display()
        )));
        println!(
            "{:<8} {:>10.2} {:>14.0} {:>9} MiB",
            "limit a",
            m.seconds,
            EVENTS as f64 / m.seconds,
            m.peak_rss_kib / 1024
        );
        compare_outputs(&out, &out_dir.join("out_a.ndjson"));
    }
}

/// Job A's output must equal the limit program's line for line, as parsed JSON.
fn compare_outputs(limit: &Path, ours: &Path) {
    let (Ok(a), Ok(b)) = (
        std::fs::read_to_string(limit),
        std::fs::read_to_string(ours),
    ) else {
        return;
    };
    let parse = |t: &str| {
        t.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let (a, b) = (parse(&a), parse(&b));
    println!(
        "job a output equals the limit program's: {} ({} lines)",
        a == b,
        b.len()
    );
}

/// Job A with `buffer: {type: disk, max_bytes: 1GiB}` on its sink (the
/// ~10 % of events that pass the filter) or, `all`, on the filter too
/// (every event goes through a disk buffer).
fn disk_a(root: &Path, all: bool) -> PathBuf {
    let disk = "buffer: {type: disk, max_bytes: 1GiB}";
    let mut job = std::fs::read_to_string(root.join("../shared/bench/jobs/job_a.yaml"))
        .unwrap()
        .replace(
            "path: \"${BENCH_OUT}\"}",
            &format!("path: \"${{BENCH_OUT}}\", {disk}}}"),
        );
    if all {
        job = job.replace("inputs: [logs],", &format!("inputs: [logs], {disk},"));
    }
    assert_eq!(
        job.matches(disk).count(),
        1 + usize::from(all),
        "job A changed"
    );
    let file = root.join(format!(
        "target/bench/job_a_disk{}.yaml",
        if all { "_all" } else { "" }
    ));
    std::fs::write(&file, job).unwrap();
    file
}

/// Job A with `follow: true` (acknowledgements and checkpoints on): runs
/// until its output has job A's size, then stops it with SIGTERM.
fn acked_a(root: &Path, data: &Path) -> Measure {
    let out_dir = root.join("target/bench");
    let expected = std::fs::metadata(out_dir.join("out_a.ndjson"))
        .expect("run job a first (BENCH_JOBS=a,a-acked)")
        .len();
    let job = std::fs::read_to_string(root.join("../shared/bench/jobs/job_a.yaml"))
        .unwrap()
        .replace("codec: json}", "codec: json, follow: true}");
    assert!(job.contains("follow: true"), "job A's source line changed");
    let file = out_dir.join("job_a_acked.yaml");
    std::fs::write(&file, job).unwrap();
    let out = out_dir.join("out_a_acked.ndjson");
    let state = out_dir.join("state_a_acked");
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_dir_all(&state);
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .args([
            "run",
            file.to_str().unwrap(),
            "--metrics-address",
            "off",
            "--data-dir",
        ])
        .arg(&state)
        .env("BENCH_DATA", data)
        .env("BENCH_OUT", &out)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    while std::fs::metadata(&out).map_or(0, |m| m.len()) < expected {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    Measure {
        seconds,
        peak_rss_kib: 0,
    }
}

/// The `agg` job's pipeline (shared/ is read-only, so it is written here).
fn aggregate_job(out_dir: &Path) -> PathBuf {
    let file = out_dir.join("job_agg.yaml");
    std::fs::write(
        &file,
        "sources:\n  logs: {type: file, path: \"${BENCH_DATA}\", codec: json}\ntransforms:\n  per_minute:\n    type: aggregate\n    inputs: [logs]\n    group_by: {host: .host, status: .status}\n    window: {type: tumbling, size: 1m}\n    time: .ts\n    aggregations: {requests: count, p99_latency_ms: {percentile: .latency_ms, p: 0.99}, mean_latency_ms: {avg: .latency_ms}}\nsinks:\n  out: {type: blackhole, inputs: [per_minute]}\n",
    )
    .unwrap();
    file
}
