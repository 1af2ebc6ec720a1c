//! End-to-end acknowledgements across the graph, seen from an
//! `http_server` source with `acknowledgements: true`: its 200 comes only
//! after every copy of every event was written — through a splitting map,
//! fan-out, a route, fan-in, a slow rate-limited sink and a dead-letter
//! route — and a reload that replaces the slow sink mid-request loses
//! nothing and still answers 200 after the write.

mod common;
use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn numbers(s: &Scratch, name: &str) -> Vec<u64> {
    let mut v: Vec<u64> = s
        .read_lines(name)
        .iter()
        .map(|e| e["n"].as_u64().unwrap())
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn a_200_means_every_copy_was_written_across_split_fanout_route_fanin_and_dead_letters() {
    let s = Scratch::new();
    let port = free_port();
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:
  web: {{type: http_server, address: '127.0.0.1:{port}', acknowledgements: true}}
transforms:
  split: {{type: map, inputs: [web], program: '.items[]'}}
  check: {{type: map, inputs: [split], program: 'if .bad then error(\"bad item\") else . end', on_error: route}}
  sort: {{type: route, inputs: [check], routes: {{big: '.n >= 10'}}}}
sinks:
  all: {{type: file, inputs: [check], path: $DIR/all.ndjson}}
  slow: {{type: file, inputs: [sort.big, check.errors], path: $DIR/slow.ndjson, rate_limit: {{rate: 40, burst: 1}}}}
"
        ),
    );
    let mut d = Daemon::start(&file, &[], Stdio::null());
    wait_listening(port);
    let items: Vec<String> = (0..20)
        .map(|n| {
            if n % 5 == 4 {
                format!("{{\"n\":{n},\"bad\":true}}")
            } else {
                format!("{{\"n\":{n}}}")
            }
        })
        .collect();
    let body = format!("{{\"items\":[{}]}}", items.join(","));
    let started = Instant::now();
    let (code, text) = post(&format!("http://127.0.0.1:{port}/"), &body, None);
    let took = started.elapsed();
    assert_eq!(code, 200, "{text}");
    // Written before the answer: no waiting needed here.
    let good: Vec<u64> = (0..20).filter(|n| n % 5 != 4).collect();
    assert_eq!(numbers(&s, "all.ndjson"), good);
    let slow_expected: Vec<u64> = (0..20).filter(|n| *n >= 10 || n % 5 == 4).collect();
    assert_eq!(
        numbers(&s, "slow.ndjson"),
        slow_expected,
        "routed and dead-lettered copies"
    );
    // 12 events through a 40/s limit with a burst of 1 take over 0.25 s.
    assert!(
        took >= Duration::from_millis(250),
        "the 200 waited for the slow sink: {took:?}"
    );
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), Some(0));
}

#[test]
fn a_reload_replacing_the_sink_mid_request_still_writes_everything_before_the_200() {
    let s = Scratch::new();
    let port = free_port();
    let pipeline = |out: &str| {
        format!(
            "sources:\n  web: {{type: http_server, address: '127.0.0.1:{port}', acknowledgements: true}}\nsinks:\n  out: {{type: file, inputs: [web], path: $DIR/{out}, rate_limit: {{rate: 20, burst: 1}}}}\n"
        )
    };
    let file = s.write("p.yaml", &pipeline("first.ndjson"));
    let mut d = Daemon::start(&file, &[], Stdio::null());
    wait_listening(port);
    let url = format!("http://127.0.0.1:{port}/");
    let body: String = (0..20).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let request = std::thread::spawn(move || post(&url, &body, None));
    assert!(eventually(Duration::from_secs(10), || {
        !s.read_lines("first.ndjson").is_empty()
    }));
    s.write("p.yaml", &pipeline("second.ndjson"));
    d.signal("HUP");
    let (code, text) = request.join().unwrap();
    assert_eq!(code, 200, "{text}");
    let mut all = numbers(&s, "first.ndjson");
    all.extend(numbers(&s, "second.ndjson"));
    all.sort_unstable();
    assert_eq!(all, (0..20).collect::<Vec<_>>(), "{}", d.log_text());
    assert!(
        eventually(Duration::from_secs(10), || d
            .log_text()
            .contains("1 replaced")),
        "{}",
        d.log_text()
    );
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), Some(0));
}

#[test]
fn sigterm_during_an_acknowledged_request_writes_it_and_answers_200() {
    let s = Scratch::new();
    let port = free_port();
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  web: {{type: http_server, address: '127.0.0.1:{port}', acknowledgements: true}}\nsinks:\n  out: {{type: file, inputs: [web], path: $DIR/out.ndjson, rate_limit: {{rate: 20, burst: 1}}}}\n"
        ),
    );
    let mut d = Daemon::start(&file, &[], Stdio::null());
    wait_listening(port);
    let url = format!("http://127.0.0.1:{port}/");
    let body: String = (0..10).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let request = std::thread::spawn(move || post(&url, &body, None));
    assert!(eventually(Duration::from_secs(10), || {
        !s.read_lines("out.ndjson").is_empty()
    }));
    d.signal("TERM");
    let (code, text) = request.join().unwrap();
    assert_eq!(code, 200, "{text}");
    assert_eq!(numbers(&s, "out.ndjson"), (0..10).collect::<Vec<_>>());
    assert_eq!(d.wait(Duration::from_secs(30)), Some(0));
}
