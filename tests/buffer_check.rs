//! `flowgate buffer check` on buffer directories written through the
//! library's `Store`: counts per buffer and in total, exit 1 once a record
//! is corrupt, nothing changed on disk, a buffer in use marked as such.

mod common;
use common::*;
use flowgate::flow::buffer::storage::{EncodedBatch, Store};
use std::path::Path;

fn payload(n: u64) -> Vec<u8> {
    format!(r#"{{"n":{n},"message":"GET /index.html 200"}}"#).into_bytes()
}

/// Writes `events` records into `<data>/<pipeline>/<component>/` in
/// batches of 100 and acknowledges the first `acked`.
fn fill(data: &Path, buffer: &str, events: u64, acked: u64) -> Store {
    let (mut store, _) = Store::open(&data.join(buffer), 1 << 20).unwrap();
    let mut batch = EncodedBatch::default();
    for n in 1..=events {
        batch.push(&payload(n)).unwrap();
        if batch.len() == 100 || n == events {
            store.append(&batch).unwrap();
            batch.clear();
        }
    }
    store.sync().unwrap();
    store.acknowledge(acked).unwrap();
    store
}

/// The `name events bytes corrupt [notes]` rows, header left out.
fn rows(stdout: &[u8]) -> Vec<Vec<String>> {
    String::from_utf8_lossy(stdout)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

fn check(data: &Path) -> std::process::Output {
    run(
        &["buffer", "check", "--data-dir", &data.display().to_string()],
        None,
    )
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn clean_buffers_are_counted_and_exit_zero() {
    let data = tempfile::tempdir().unwrap();
    let out = fill(data.path(), "logs/out", 1000, 300);
    let bytes_out = out.bytes();
    drop(out);
    let errors = fill(data.path(), "logs/errors", 50, 0);
    let bytes_errors = errors.bytes();
    drop(errors);
    // A source's checkpoint beside the buffers is no buffer.
    std::fs::write(data.path().join("logs").join("file.checkpoint"), "{}").unwrap();

    let output = check(data.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("pipeline/component"), "{stdout}");
    let b = |n: u64| n.to_string();
    assert_eq!(
        rows(&output.stdout),
        vec![
            vec!["logs/errors".into(), b(50), b(bytes_errors), b(0)],
            vec!["logs/out".into(), b(700), b(bytes_out), b(0)],
            vec!["total".into(), b(750), b(bytes_errors + bytes_out), b(0)],
        ],
        "{stdout}"
    );
}

#[test]
fn a_corrupt_record_is_reported_and_exits_one_changing_nothing() {
    let data = tempfile::tempdir().unwrap();
    drop(fill(data.path(), "shop/ok", 200, 0));
    drop(fill(data.path(), "shop/sink", 500, 100));
    let dir = data.path().join("shop").join("sink");
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    // One payload byte of record 321: header 8 bytes, then 16 + payload each.
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = 8 + (1..321).map(|n| 16 + payload(n).len()).sum::<usize>() + 16 + 5;
    bytes[at] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();
    let before = snapshot(&dir);

    let output = check(data.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let rows = rows(&output.stdout);
    assert_eq!(
        rows[0][..4],
        [
            "shop/ok",
            "200",
            bytes_of(data.path(), "shop/ok").as_str(),
            "0"
        ]
    );
    assert_eq!(
        rows[1][..4],
        ["shop/sink", "399", bytes.len().to_string().as_str(), "1"],
        "{stdout}"
    );
    assert_eq!(rows[2][0], "total");
    assert_eq!((rows[2][1].as_str(), rows[2][3].as_str()), ("599", "1"));
    assert_eq!(snapshot(&dir), before, "check changed the buffer");

    // Acknowledged past it, the damage no longer counts.
    let (mut store, _) = Store::open(&dir, 1 << 20).unwrap();
    store.acknowledge(321).unwrap();
    drop(store);
    let output = check(data.path());
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        rows_of(&output)[1][..4],
        ["shop/sink", "179", bytes.len().to_string().as_str(), "0"]
    );
}

#[test]
fn a_torn_tail_is_one_corrupt_record_and_a_held_buffer_is_in_use() {
    let data = tempfile::tempdir().unwrap();
    drop(fill(data.path(), "p/torn", 100, 0));
    let dir = data.path().join("p").join("torn");
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    std::fs::write(&segment, &bytes[..bytes.len() - 7]).unwrap();
    let held = fill(data.path(), "p/live", 10, 0);

    let output = check(data.path());
    assert_eq!(output.status.code(), Some(1));
    let rows = rows_of(&output);
    assert_eq!(
        rows[0],
        [
            "p/live",
            "10",
            held.bytes().to_string().as_str(),
            "0",
            "(in",
            "use)"
        ]
    );
    let torn_len = (bytes.len() - 7).to_string();
    assert_eq!(
        rows[1],
        ["p/torn", "99", torn_len.as_str(), "1", "torn", "tail"]
    );
    drop(held);
}

#[test]
fn an_empty_or_missing_data_dir_and_usage_errors() {
    let data = tempfile::tempdir().unwrap();
    let output = check(data.path());
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("no disk buffers"));
    let output = check(&data.path().join("missing"));
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing"));
    let output = run(&["buffer", "check", "--bogus"], None);
    assert_eq!(output.status.code(), Some(2));
    let output = run(&["buffer"], None);
    assert_eq!(output.status.code(), Some(2));
}

fn rows_of(output: &std::process::Output) -> Vec<Vec<String>> {
    rows(&output.stdout)
}

fn bytes_of(data: &Path, buffer: &str) -> String {
    std::fs::read_dir(data.join(buffer))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum::<u64>()
        .to_string()
}
