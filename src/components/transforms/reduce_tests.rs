//! `reduce` driven directly with times given: stack traces joined by
//! `starts_when`, `ends_when`, expiry, `max_events`, `max_groups`, merges.

use super::*;
use crate::ev;

fn reduce(yaml: &str) -> Box<dyn Stateful> {
    let c: ReduceConfig = serde_yaml::from_str(yaml).unwrap();
    assert_eq!(c.check_settings(), vec![], "{yaml}");
    c.build().unwrap().stateful().unwrap()
}

fn feed(r: &mut Box<dyn Stateful>, events: Vec<Value>, now: i64) -> Vec<Value> {
    let mut out = StatefulOutput::with_ports(1);
    r.process(events, &Acks::none(), now, &mut out);
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    out.ports.swap_remove(0).0
}

fn flush(r: &mut Box<dyn Stateful>) -> Vec<Value> {
    let mut out = StatefulOutput::with_ports(1);
    r.flush(&mut out);
    out.ports.swap_remove(0).0
}

#[test]
fn a_stack_trace_becomes_one_event() {
    let mut r = reduce(
        "group_by: {host: .host}\nstarts_when: '.message | test(\"^\\\\s\") | not'\nmerge: {message: concat_newline}",
    );
    let lines = [
        ("a", "Exception in thread main"),
        ("b", "GET /"),
        ("a", "  at Foo.bar(Foo.java:1)"),
        ("a", "  at Main.main(Main.java:9)"),
        ("a", "next line"),
    ];
    let events = lines
        .iter()
        .map(|(h, m)| ev!({"host": h, "message": m}))
        .collect();
    assert_eq!(
        feed(&mut r, events, 0),
        vec![
            ev!({"host": "a", "message": "Exception in thread main\n  at Foo.bar(Foo.java:1)\n  at Main.main(Main.java:9)"})
        ]
    );
    assert_eq!(r.entries(), 2);
    assert_eq!(
        flush(&mut r),
        vec![
            ev!({"host": "b", "message": "GET /"}),
            ev!({"host": "a", "message": "next line"})
        ]
    );
}

#[test]
fn ends_when_max_events_and_default_merges() {
    let mut r = reduce(
        "group_by: {id: .id}\nends_when: .last == true\nmax_events: 3\nmerge: {tags: array, low: min, top: max, from: first}",
    );
    let out = feed(
        &mut r,
        vec![
            ev!({"id": 7, "n": 2, "s": "x", "tags": "a", "low": 5, "top": 5, "from": "p"}),
            ev!({"id": 7, "n": 3, "s": "y", "tags": "b", "low": 2, "top": 9, "from": "q", "last": true}),
            ev!({"id": 8, "n": 1}),
            ev!({"id": 8, "n": 1}),
            ev!({"id": 8, "n": 1}),
            ev!({"id": 8, "n": 1}),
        ],
        0,
    );
    assert_eq!(
        out,
        vec![
            // The numeric key is the group's value, not a sum; other numbers are summed.
            ev!({"id": 7, "n": 5, "s": "y", "tags": ["a", "b"], "low": 2, "top": 9, "from": "p", "last": true}),
            ev!({"id": 8, "n": 3}),
        ]
    );
    assert_eq!(flush(&mut r), vec![ev!({"id": 8, "n": 1})]);
}

#[test]
fn idle_groups_expire_and_max_groups_ends_the_least_recent() {
    let mut r = reduce("group_by: {k: .k}\nexpire_after: 10s\nmax_groups: 2\nmerge: {v: concat}");
    assert_eq!(
        feed(
            &mut r,
            vec![ev!({"k": 1, "v": "a"}), ev!({"k": 2, "v": "b"})],
            0
        ),
        Vec::<Value>::new()
    );
    assert_eq!(
        feed(&mut r, vec![ev!({"k": 1, "v": "c"})], 5_000),
        Vec::<Value>::new()
    );
    assert_eq!(r.next_deadline(), Some(10_000), "k=2 was last updated at 0");
    let mut out = StatefulOutput::with_ports(1);
    r.advance(10_000, &mut out);
    assert_eq!(out.ports[0].0, vec![ev!({"k": 2, "v": "b"})]);
    // A third group pushes out the least recently updated.
    let mut out = StatefulOutput::with_ports(1);
    r.process(
        vec![ev!({"k": 3, "v": "d"}), ev!({"k": 4, "v": "e"})],
        &Acks::none(),
        6_000,
        &mut out,
    );
    assert_eq!(
        (out.ports[0].0.clone(), out.evictions),
        (vec![ev!({"k": 1, "v": "a c"})], 1)
    );
    assert_eq!(r.entries(), 2);
}
