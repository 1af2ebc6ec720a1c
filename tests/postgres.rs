//! The `postgres` sink through the real binary and a real PostgreSQL 15,
//! every result read back with `psql`: 100,000 typed rows, upserts that
//! make a redelivered batch idempotent, a server stopped for 10 s mid-run,
//! rows the database refuses routed alone, unknown tables and columns
//! refused at start.
//!
//! The server: `FLOWGATE_TEST_POSTGRES_URL` (set by .ci/postgres.sh, which
//! starts Debian's PostgreSQL 15 in a temporary data directory); each test
//! uses its own table. The outage test stops a server, so it starts its
//! own cluster (initdb as the `postgres` user, binaries from
//! `FLOWGATE_TEST_POSTGRES_BIN`, default /usr/lib/postgresql/15/bin). In CI
//! (`CI` set) a missing server fails; elsewhere the tests step aside.

mod common;
use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Generous: CI runs every test binary at once on two cores.
const LONG: Duration = Duration::from_secs(300);

fn server() -> Option<String> {
    match std::env::var("FLOWGATE_TEST_POSTGRES_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!(
                "CI must provide PostgreSQL: FLOWGATE_TEST_POSTGRES_URL is not set (.ci/postgres.sh)"
            )
        }
        Err(_) => {
            eprintln!(
                "skipped: set FLOWGATE_TEST_POSTGRES_URL to a PostgreSQL server (see .ci/postgres.sh)"
            );
            None
        }
    }
}

/// Runs `sql` with `psql`; returns its unaligned, tuples-only output.
fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-X", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        .env("PGTZ", "UTC")
        .output()
        .expect("run psql");
    assert!(out.status.success(), "psql {sql}: {}", text(&out.stderr));
    text(&out.stdout).trim_end().to_string()
}

/// A table name unique to this test run.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

fn write_events(s: &Scratch, name: &str, lines: impl Iterator<Item = String>) -> String {
    let path = s.path(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for line in lines {
        writeln!(f, "{line}").unwrap();
    }
    f.flush().unwrap();
    path.display().to_string()
}

fn run_to_end(file: &std::path::Path) -> (Option<i32>, String) {
    let mut d = Daemon::start(
        file,
        &[
            "--data-dir",
            &file.with_extension("data").display().to_string(),
        ],
        Stdio::null(),
    );
    let code = d.wait(LONG);
    (code, d.log_text())
}

#[test]
fn a_hundred_thousand_events_become_typed_rows() {
    let Some(url) = server() else { return };
    let table = unique("typed");
    psql(
        &url,
        &format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, small smallint, name text, code varchar(8), \
             amount numeric(12,2), ratio double precision, ok boolean, at timestamptz, \
             day date, doc jsonb, uid uuid)"
        ),
    );
    let s = Scratch::new();
    let input = write_events(
        &s,
        "in.ndjson",
        (0..100_000u64).map(|i| {
            format!(
                r#"{{"id":{i},"small":{},"name":"user {i}","code":"c{}","amount":"{}.{:02}","ratio":{},"ok":{},"ts":{},"day":"2026-12-{:02}","doc":{{"k":{i},"tags":["a","b"]}},"uid":"00000000-0000-4000-8000-{i:012x}"}}"#,
                i % 30000,
                i % 1000,
                i / 100,
                i % 100,
                i as f64 / 4.0,
                i % 2 == 0,
                1_700_000_000 + i,
                i % 28 + 1
            )
        }),
    );
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  in: {{type: file, path: '{input}'}}\nsinks:\n  db:\n    type: postgres\n    inputs: [in]\n    url: '{url}'\n    table: {table}\n    workers: 2\n    batch: {{max_events: 1000}}\n    columns: {{id: .id, small: .small, name: .name, code: .code, amount: .amount, ratio: .ratio, ok: .ok, at: .ts, day: .day, doc: .doc, uid: .uid}}\n"
        ),
    );
    let (code, log) = run_to_end(&file);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        psql(
            &url,
            &format!(
                "SELECT count(*), count(DISTINCT id), sum(id), count(DISTINCT uid), sum(amount), sum(ratio), count(*) FILTER (WHERE ok) FROM {table}"
            )
        ),
        "100000|100000|4999950000|100000|49999500.00|1249987500|50000"
    );
    assert_eq!(
        psql(&url, &format!("SELECT id, small, name, code, amount, ratio, ok, at, day, doc, uid FROM {table} WHERE id IN (0, 12345, 99999) ORDER BY id")),
        [
            r#"0|0|user 0|c0|0.00|0|t|2023-11-14 22:13:20+00|2026-12-01|{"k": 0, "tags": ["a", "b"]}|00000000-0000-4000-8000-000000000000"#,
            r#"12345|12345|user 12345|c345|123.45|3086.25|f|2023-11-15 01:39:05+00|2026-12-26|{"k": 12345, "tags": ["a", "b"]}|00000000-0000-4000-8000-000000003039"#,
            r#"99999|9999|user 99999|c999|999.99|24999.75|f|2023-11-16 01:59:59+00|2026-12-12|{"k": 99999, "tags": ["a", "b"]}|00000000-0000-4000-8000-00000001869f"#,
        ]
        .join("\n")
    );
}

#[test]
fn upserts_make_a_redelivered_batch_idempotent() {
    let Some(url) = server() else { return };
    let table = unique("upsert");
    psql(
        &url,
        &format!("CREATE TABLE {table} (id integer PRIMARY KEY, v text NOT NULL, n integer)"),
    );
    let s = Scratch::new();
    let first = write_events(
        &s,
        "first.ndjson",
        (0..1000).map(|i| format!(r#"{{"id":{i},"v":"one","n":{i}}}"#)),
    );
    let second = write_events(
        &s,
        "second.ndjson",
        (0..1000).map(|i| format!(r#"{{"id":{i},"v":"two","n":{}}}"#, i * 2)),
    );
    let pipeline = |name: &str, input: &str| {
        s.write(
            name,
            &format!(
                "sources:\n  in: {{type: file, path: '{input}'}}\nsinks:\n  db:\n    type: postgres\n    inputs: [in]\n    url: '{url}'\n    table: {table}\n    columns: {{id: .id, v: .v, n: .n}}\n    on_conflict: {{columns: [id], action: update}}\n"
            ),
        )
    };
    for _ in 0..2 {
        let (code, log) = run_to_end(&pipeline("a.yaml", &first));
        assert_eq!(code, Some(0), "{log}");
        assert_eq!(
            psql(
                &url,
                &format!("SELECT count(*), count(*) FILTER (WHERE v = 'one'), sum(n) FROM {table}")
            ),
            "1000|1000|499500"
        );
    }
    // Redelivered with new values: the same rows, updated.
    let (code, log) = run_to_end(&pipeline("b.yaml", &second));
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        psql(
            &url,
            &format!("SELECT count(*), count(*) FILTER (WHERE v = 'two'), sum(n) FROM {table}")
        ),
        "1000|1000|999000"
    );
}

#[test]
fn refused_rows_go_to_errors_with_the_database_message_and_their_batch_mates_are_written() {
    let Some(url) = server() else { return };
    let table = unique("refused");
    psql(
        &url,
        &format!(
            "CREATE TABLE {table} (id integer PRIMARY KEY, amount integer NOT NULL CHECK (amount >= 0), note varchar(5))"
        ),
    );
    psql(
        &url,
        &format!("INSERT INTO {table} VALUES (1000, 1, 'old')"),
    );
    let s = Scratch::new();
    let events = [
        r#"{"id":1,"amount":10,"note":"a"}"#,
        r#"{"id":2,"amount":-5,"note":"neg"}"#,
        r#"{"id":3,"amount":30,"note":"c"}"#,
        r#"{"id":1000,"amount":1,"note":"dup"}"#,
        r#"{"id":4,"amount":"forty","note":"d"}"#,
        r#"{"id":5,"amount":50,"note":"too long"}"#,
        r#"{"id":6,"note":"none"}"#,
        r#"{"id":7,"amount":70,"note":"g"}"#,
    ];
    let input = write_events(&s, "in.ndjson", events.iter().map(|e| e.to_string()));
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  in: {{type: file, path: '{input}'}}\nsinks:\n  db:\n    type: postgres\n    inputs: [in]\n    url: '{url}'\n    table: {table}\n    columns: {{id: .id, amount: .amount, note: .note}}\n    on_error: route\n  dlq: {{type: file, inputs: [db.errors], path: $DIR/dlq.ndjson}}\n"
        ),
    );
    let (code, log) = run_to_end(&file);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        psql(
            &url,
            &format!("SELECT id, amount, note FROM {table} ORDER BY id")
        ),
        "1|10|a\n3|30|c\n7|70|g\n1000|1|old"
    );
    let mut dlq: Vec<(i64, String, String)> = s
        .read_lines("dlq.ndjson")
        .into_iter()
        .map(|e| {
            (
                e["id"].as_i64().unwrap(),
                e["error"]["message"].as_str().unwrap().to_string(),
                e["error"]["component"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    dlq.sort();
    let ids: Vec<i64> = dlq.iter().map(|d| d.0).collect();
    assert_eq!(ids, vec![2, 4, 5, 6, 1000], "{dlq:?}");
    assert!(dlq.iter().all(|d| d.2 == "db"));
    let message = |id: i64| &dlq.iter().find(|d| d.0 == id).unwrap().1;
    assert!(
        message(2).contains(&format!(
            "new row for relation \"{table}\" violates check constraint \"{table}_amount_check\""
        )),
        "{}",
        message(2)
    );
    assert!(
        message(1000).contains("duplicate key value violates unique constraint")
            && message(1000).contains("Key (id)=(1000) already exists."),
        "{}",
        message(1000)
    );
    assert_eq!(
        message(4),
        "column 'amount': cannot convert string \"forty\" to integer"
    );
    assert!(
        message(5).contains("value too long for type character varying(5)"),
        "{}",
        message(5)
    );
    assert!(
        message(6).contains("null value in column \"amount\""),
        "{}",
        message(6)
    );
}

#[test]
fn an_unknown_table_or_column_stops_the_pipeline_at_start_naming_the_field() {
    let Some(url) = server() else { return };
    let table = unique("known");
    psql(&url, &format!("CREATE TABLE {table} (id integer)"));
    let s = Scratch::new();
    let input = write_events(&s, "in.ndjson", std::iter::once(r#"{"id":1}"#.to_string()));
    for (columns, table, field, message) in [
        (
            "{id: .id}",
            format!("{table}_missing"),
            "field 'table'",
            format!("relation \"{table}_missing\" does not exist"),
        ),
        (
            "{id: .id, nope: .x}",
            table.clone(),
            "field 'columns'",
            format!("column \"nope\" of relation \"{table}\" does not exist"),
        ),
    ] {
        let file = s.write(
            "p.yaml",
            &format!("sources:\n  in: {{type: file, path: '{input}'}}\nsinks:\n  db: {{type: postgres, inputs: [in], url: '{url}', table: {table}, columns: {columns}}}\n"),
        );
        let (code, log) = run_to_end(&file);
        assert_ne!(code, Some(0), "{log}");
        assert!(
            log.contains("'db'")
                || log.contains("db:")
                || log.contains("component=db")
                || log.contains("\"db\""),
            "{log}"
        );
        assert!(log.contains(field) && log.contains(&message), "{log}");
    }
    assert_eq!(psql(&url, &format!("SELECT count(*) FROM {table}")), "0");
}

/// A private cluster (this test stops its server), run as `postgres`.
struct Cluster {
    dir: tempfile::TempDir,
    bin: String,
    port: u16,
}

impl Cluster {
    fn start() -> Self {
        let bin = std::env::var("FLOWGATE_TEST_POSTGRES_BIN")
            .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = |args: &[&str]| {
            let status = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("runuser");
            assert!(status.success(), "{args:?}");
        };
        Command::new("chown")
            .args(["postgres:", dir.path().to_str().unwrap()])
            .status()
            .unwrap();
        let data = dir.path().join("data").display().to_string();
        as_postgres(&[
            &format!("{bin}/initdb"),
            "-D",
            &data,
            "-U",
            "postgres",
            "--auth=trust",
        ]);
        let c = Self {
            dir,
            bin,
            port: free_port(),
        };
        c.pg_ctl("start");
        c
    }

    fn pg_ctl(&self, action: &str) {
        let data = self.dir.path().join("data").display().to_string();
        let log = self.dir.path().join("server.log").display().to_string();
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {}",
            self.port,
            self.dir.path().display()
        );
        let status = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &format!("{}/pg_ctl", self.bin),
                "-D",
                &data,
                "-l",
                &log,
                "-w",
                "-m",
                "fast",
                "-o",
                &opts,
                action,
            ])
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl");
        assert!(status.success(), "pg_ctl {action}");
    }

    fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &format!("{}/pg_ctl", self.bin),
                "-D",
                &data,
                "-m",
                "immediate",
                "stop",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn a_server_stopped_for_ten_seconds_mid_run_loses_nothing() {
    if server().is_none() {
        return;
    }
    let cluster = Cluster::start();
    let url = cluster.url();
    psql(&url, "CREATE TABLE outage (id integer PRIMARY KEY, v text)");
    let s = Scratch::new();
    let input = write_events(
        &s,
        "in.ndjson",
        (0..30_000).map(|i| format!(r#"{{"id":{i},"v":"x{i}"}}"#)),
    );
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  in: {{type: file, path: '{input}', rate_limit: {{rate: 2000, per: 1s}}}}\nsinks:\n  db:\n    type: postgres\n    inputs: [in]\n    url: '{url}'\n    table: outage\n    columns: {{id: .id, v: .v}}\n    batch: {{max_events: 200, timeout: 100ms}}\n    on_conflict: {{columns: [id], action: nothing}}\n    retry: {{attempts: 1000, initial_backoff: 100ms, max_backoff: 1s}}\n    on_error: stop\n"
        ),
    );
    let data = s.path("data").display().to_string();
    let mut d = Daemon::start(&file, &["--data-dir", &data], Stdio::null());
    assert!(
        eventually(LONG, || psql(&url, "SELECT count(*) FROM outage")
            .parse::<u64>()
            .unwrap()
            >= 2000),
        "rows arrive before the outage"
    );
    cluster.pg_ctl("stop");
    std::thread::sleep(Duration::from_secs(10));
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "flowgate stays up while the server is down"
    );
    cluster.pg_ctl("start");
    assert_eq!(d.wait(LONG), Some(0), "{}", d.log_text());
    assert_eq!(
        psql(
            &url,
            "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM outage"
        ),
        "30000|30000|0|29999"
    );
    let log = d.log_text();
    assert!(
        log.contains("WARN") && log.contains("postgres sink"),
        "{log}"
    );
    assert!(!log.contains("panic"), "{log}");
}

#[test]
fn validate_checks_programs_and_keys_without_a_server() {
    let (code, lines) = validate_lines(
        "sources:\n  in: {type: stdin}\nsinks:\n  db:\n    type: postgres\n    inputs: [in]\n    url: 'postgresql://u:secret@127.0.0.1:1/db'\n    table: t\n    columns: {id: '.id |', v: .v}\n    on_conflict: {columns: [key], action: update}\n",
    );
    assert_eq!(code, Some(78), "{lines:?}");
    assert_eq!(
        lines,
        vec![
            "F:9:14: component 'db': columns: column 'id': in jq program '.id |': expected term at the end of the program",
            "F:10:28: component 'db': on_conflict.columns: 'key' is not one of the mapped columns",
            "F: 2 problem(s)",
        ]
    );
}
