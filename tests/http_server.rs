//! The `http_server` source through the real binary: objects, arrays and
//! NDJSON accepted (200 after they are in the pipeline), bad bodies refused
//! whole (400), the bearer token (401), the size limit (413), pushback (429
//! with Retry-After), and a SIGTERM drain losing nothing that got a 200.

mod common;
use common::*;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn accepts_objects_arrays_and_ndjson_and_refuses_bad_requests() {
    let s = Scratch::new();
    let port = free_port();
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  web: {{type: http_server, address: '127.0.0.1:{port}', path: /events, max_body_bytes: 200, auth_token: sekrit}}\nsinks:\n  out: {{type: file, inputs: [web], path: $DIR/out.ndjson}}\n"
        ),
    );
    let mut d = Daemon::start(&file, &[], Stdio::null());
    wait_listening(port);
    let url = format!("http://127.0.0.1:{port}/events");
    assert_eq!(
        post(&url, "{\"n\":1}", Some("sekrit")),
        (200, "{\"accepted\":1}\n".to_string())
    );
    assert_eq!(post(&url, "[{\"n\":2},{\"n\":3}]", Some("sekrit")).0, 200);
    assert_eq!(post(&url, "{\"n\":4}\n{\"n\":5}\n", Some("sekrit")).0, 200);
    let (code, why) = post(&url, "{\"n\":6}\n{\"n\":", Some("sekrit"));
    assert_eq!(code, 400);
    assert!(
        why.contains("line 2 is not valid JSON") && why.contains("nothing was accepted"),
        "{why}"
    );
    assert_eq!(post(&url, "{\"n\":7}", None).0, 401);
    assert_eq!(post(&url, "{\"n\":8}", Some("wrong")).0, 401);
    assert_eq!(
        post(
            &url,
            &format!("{{\"pad\":\"{}\"}}", "x".repeat(300)),
            Some("sekrit")
        )
        .0,
        413
    );
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), Some(0), "{}", d.log_text());
    let ns: Vec<u64> = s
        .read_lines("out.ndjson")
        .iter()
        .map(|e| e["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, vec![1, 2, 3, 4, 5], "exactly the 200-answered events");
}

#[test]
fn a_full_pipeline_answers_429_with_retry_after() {
    let s = Scratch::new();
    let port = free_port();
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  web: {{type: http_server, address: '127.0.0.1:{port}'}}\nsinks:\n  slow:\n    type: file\n    inputs: [web]\n    path: $DIR/out.ndjson\n    buffer: {{size: 20}}\n    rate_limit: {{rate: 1, per: 1m, burst: 1}}\n"
        ),
    );
    let d = Daemon::start(&file, &[], Stdio::null());
    wait_listening(port);
    let url = format!("http://127.0.0.1:{port}/");
    let body: String = (0..10).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let mut accepted = 0;
    let mut busy = None;
    for _ in 0..20 {
        let (code, text) = post(&url, &body, None);
        match code {
            200 => accepted += 10,
            429 => {
                busy = Some(text);
                break;
            }
            other => panic!("unexpected {other}: {text}"),
        }
    }
    let busy = busy.expect("a full buffer must answer 429");
    assert!(busy.contains("busy"), "{busy}");
    assert!(
        (10..=40).contains(&accepted),
        "about the buffer's worth was accepted: {accepted}"
    );
    drop(d);
}

#[test]
fn with_acknowledgements_every_200_is_written_under_concurrent_load_and_a_slow_sink() {
    let s = Scratch::new();
    let port = free_port();
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  web: {{type: http_server, address: '127.0.0.1:{port}', acknowledgements: true}}\nsinks:\n  slow:\n    type: file\n    inputs: [web]\n    path: $DIR/out.ndjson\n    buffer: {{size: 50}}\n    rate_limit: {{rate: 500, burst: 20}}\n"
        ),
    );
    let mut d = Daemon::start(&file, &[], Stdio::null());
    wait_listening(port);
    let url = format!("http://127.0.0.1:{port}/");
    let clients: Vec<_> = (0..8u64)
        .map(|c| {
            let url = url.clone();
            std::thread::spawn(move || {
                let (mut written, mut busy) = (Vec::new(), 0);
                for r in 0..25u64 {
                    let ids: Vec<u64> = (0..20).map(|i| c * 10_000 + r * 100 + i).collect();
                    let body: String = ids.iter().map(|i| format!("{{\"i\":{i}}}\n")).collect();
                    match post(&url, &body, None).0 {
                        200 => written.extend(ids),
                        429 | 503 => busy += 1,
                        other => panic!("unexpected status {other}"),
                    }
                }
                (written, busy)
            })
        })
        .collect();
    let (mut answered, mut busy) = (Vec::new(), 0);
    for c in clients {
        let (w, b) = c.join().unwrap();
        answered.extend(w);
        busy += b;
    }
    // Every 200 was written before it was sent: the file has them already.
    let mut out: Vec<u64> = s
        .read_lines("out.ndjson")
        .iter()
        .map(|e| e["i"].as_u64().unwrap())
        .collect();
    answered.sort_unstable();
    out.sort_unstable();
    assert!(busy > 0, "a slow sink must push back on concurrent clients");
    assert!(!answered.is_empty());
    assert_eq!(
        out, answered,
        "written == answered 200, nothing else, nothing twice"
    );
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), Some(0));
}

#[test]
fn with_acknowledgements_events_a_sink_cannot_write_get_503() {
    let s = Scratch::new();
    let port = free_port();
    let dead = free_port();
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  web: {{type: http_server, address: '127.0.0.1:{port}', acknowledgements: true}}\nsinks:\n  down: {{type: http, inputs: [web], url: 'http://127.0.0.1:{dead}/', batch: {{max_events: 1, timeout: 10ms}}}}\n"
        ),
    );
    let d = Daemon::start(&file, &[], Stdio::null());
    wait_listening(port);
    let (code, text) = post(&format!("http://127.0.0.1:{port}/"), "{\"n\":1}", None);
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("not all could be written"), "{text}");
    let failed = metric(
        &d.metrics(),
        "flowgate_acknowledged_events_total",
        &[("component", "web"), ("outcome", "failed")],
    );
    assert_eq!(failed, Some(1.0));
    drop(d);
}
