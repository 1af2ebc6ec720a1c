//! `aggregate`'s windows driven directly, with times given: every window
//! kind in order and out of order, late events, `max_groups`, and the
//! sketches' error bounds on a million values.

use super::*;
use crate::components::transforms::aggregate_fns::{Acc, Kind};
use crate::core::{Acks, Delivery};
use crate::ev;
use std::sync::Mutex;

fn aggregate(yaml: &str) -> Aggregating {
    let c: AggregateConfig = serde_yaml::from_str(yaml).unwrap();
    assert_eq!(c.check_settings(), vec![], "{yaml}");
    c.build().unwrap().start()
}

/// Feeds one batch; returns (outputs, late events).
fn feed(a: &mut Aggregating, events: Vec<Value>, now: i64) -> (Vec<Value>, Vec<Value>) {
    let mut out = StatefulOutput::with_ports(2);
    a.process(events, &Acks::none(), now, &mut out);
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    let mut ports = out.ports.into_iter();
    (ports.next().unwrap().0, ports.next().unwrap().0)
}

fn flush(a: &mut Aggregating) -> Vec<Value> {
    let mut out = StatefulOutput::with_ports(2);
    a.flush(&mut out);
    out.ports.swap_remove(0).0
}

fn at(t: i64, g: &str) -> Value {
    ev!({"t": t, "g": g, "v": t})
}

/// `1970-01-01T00:00:SSZ` for a second count under a minute.
fn ts(s: i64) -> String {
    if s >= 60 {
        format!("1970-01-01T00:{:02}:{:02}Z", s / 60, s % 60)
    } else {
        format!("1970-01-01T00:00:{s:02}Z")
    }
}

fn window(g: &str, start: i64, end: i64, n: u64, sum: i64) -> Value {
    ev!({"g": g, "window_start": ts(start), "window_end": ts(end), "n": n, "sum": sum})
}

const AGGS: &str = "group_by: {g: .g}\ntime: .t\naggregations: {n: count, sum: {sum: .v}}\n";

#[test]
fn tumbling_in_order_emits_each_window_once_the_clock_passes_it() {
    let mut a = aggregate(&format!("{AGGS}window: {{type: tumbling, size: 10s}}"));
    let (out, _) = feed(&mut a, vec![at(1, "a"), at(2, "a"), at(5, "b")], 0);
    assert_eq!(out, Vec::<Value>::new());
    let (out, _) = feed(&mut a, vec![at(11, "a")], 0);
    assert_eq!(
        out,
        vec![window("a", 0, 10, 2, 3), window("b", 0, 10, 1, 5)]
    );
    assert_eq!(a.entries(), 1);
    assert_eq!(flush(&mut a), vec![window("a", 10, 20, 1, 11)]);
    assert_eq!(a.entries(), 0);
}

#[test]
fn tumbling_out_of_order_within_lateness_counts_and_after_it_is_late() {
    let mut a = aggregate(&format!(
        "{AGGS}window: {{type: tumbling, size: 10s}}\nallowed_lateness: 5s"
    ));
    // 3 arrives after 12 but [0,10) stays open until the clock reaches 15.
    let (out, late) = feed(&mut a, vec![at(1, "a"), at(12, "a"), at(3, "a")], 0);
    assert_eq!((out, late), (vec![], Vec::<Value>::new()));
    let (out, late) = feed(&mut a, vec![at(16, "a"), at(4, "a"), at(9, "b")], 0);
    assert_eq!(out, vec![window("a", 0, 10, 2, 4)]);
    assert_eq!(
        late,
        vec![at(4, "a"), at(9, "b")],
        "[0,10) was emitted: never reopened"
    );
    assert_eq!(flush(&mut a), vec![window("a", 10, 20, 2, 28)]);
}

#[test]
fn hopping_windows_count_an_event_in_each_window_it_falls_in() {
    let mut a = aggregate(&format!(
        "{AGGS}window: {{type: hopping, size: 10s, every: 5s}}"
    ));
    let (out, _) = feed(&mut a, vec![at(7, "a"), at(12, "a")], 0);
    assert_eq!(
        out,
        vec![window("a", 0, 10, 1, 7)],
        "the clock (12) passed 10"
    );
    // 9 falls in [0,10) (emitted) and [5,15) (open): counted in the open one.
    let (out, late) = feed(&mut a, vec![at(9, "a"), at(16, "a")], 0);
    assert_eq!(out, vec![window("a", 5, 15, 3, 28)]);
    assert_eq!(late, Vec::<Value>::new());
    // 4 falls only in [0,10) and [-5,5): both emitted.
    let (_, late) = feed(&mut a, vec![at(4, "a")], 0);
    assert_eq!(late, vec![at(4, "a")]);
    assert_eq!(
        flush(&mut a),
        vec![window("a", 10, 20, 2, 28), window("a", 15, 25, 1, 16)]
    );
}

#[test]
fn sessions_close_after_the_gap_and_a_late_arrival_joins_two() {
    let mut a = aggregate(&format!(
        "{AGGS}window: {{type: session, gap: 5s}}\nallowed_lateness: 10s"
    ));
    let (out, _) = feed(&mut a, vec![at(1, "a"), at(3, "a"), at(2, "b")], 0);
    assert_eq!(out, Vec::<Value>::new());
    // The clock reaches 30: a [1,8) and b [2,7) close (end + 10 <= 30).
    let (out, _) = feed(&mut a, vec![at(30, "a"), at(38, "a")], 0);
    assert_eq!(out, vec![window("b", 2, 7, 1, 2), window("a", 1, 8, 2, 4)]);
    // 34 touches [30,35) and [38,43): one session [30,43).
    let (out, late) = feed(&mut a, vec![at(34, "a"), at(2, "a")], 0);
    assert_eq!(out, Vec::<Value>::new());
    assert_eq!(late, vec![at(2, "a")]);
    assert_eq!(a.entries(), 1);
    assert_eq!(flush(&mut a), vec![window("a", 30, 43, 3, 102)]);
}

#[test]
fn batching_does_not_change_the_outputs() {
    let events: Vec<Value> = [1, 3, 30, 38, 34, 2, 50, 41, 70]
        .iter()
        .map(|&t| at(t, if t % 2 == 0 { "a" } else { "b" }))
        .collect();
    for window in [
        "{type: session, gap: 5s}",
        "{type: hopping, size: 10s, every: 5s}",
        "{type: tumbling, size: 10s}",
    ] {
        let yaml = format!("{AGGS}window: {window}\nallowed_lateness: 4s");
        let (mut whole, mut single) = (aggregate(&yaml), aggregate(&yaml));
        let (mut a, late_a) = feed(&mut whole, events.clone(), 0);
        a.extend(flush(&mut whole));
        let (mut b, mut late_b) = (Vec::new(), Vec::new());
        for e in &events {
            let (o, l) = feed(&mut single, vec![e.clone()], 0);
            b.extend(o);
            late_b.extend(l);
        }
        b.extend(flush(&mut single));
        assert_eq!((a, late_a), (b, late_b), "{window}");
    }
}

#[test]
fn processing_time_windows_close_by_the_clock() {
    let mut a = aggregate(
        "group_by: {g: .g}\nwindow: {type: tumbling, size: 1s}\naggregations: {n: count}",
    );
    let (out, late) = feed(&mut a, vec![ev!({"g": "x"}), ev!({"g": "x"})], 1_500);
    assert_eq!((out, late), (vec![], Vec::<Value>::new()));
    assert_eq!(a.next_deadline(), Some(2_000));
    let mut out = StatefulOutput::with_ports(2);
    a.advance(1_999, &mut out);
    assert!(out.ports[0].0.is_empty());
    a.advance(2_000, &mut out);
    assert_eq!(
        out.ports[0].0,
        vec![
            ev!({"g": "x", "window_start": "1970-01-01T00:00:01Z", "window_end": "1970-01-01T00:00:02Z", "n": 2})
        ]
    );
    assert_eq!(a.next_deadline(), None);
}

#[test]
fn events_without_a_valid_time_fail_and_missing_values_are_skipped() {
    let mut a = aggregate(
        "time: .t\nwindow: {type: tumbling, size: 1m}\naggregations: {n: count, m: {max: .v}}",
    );
    let mut out = StatefulOutput::with_ports(2);
    a.process(
        vec![
            ev!({"t": "soon"}),
            ev!({"v": 1}),
            ev!({"t": 1, "v": "x"}),
            ev!({"t": 2, "v": 4}),
        ],
        &Acks::none(),
        0,
        &mut out,
    );
    assert_eq!(out.failed.len(), 2);
    assert_eq!(out.failed[0].error_type, "time");
    assert_eq!(out.skipped, 1, "the string value of .v");
    assert_eq!(
        flush(&mut a),
        vec![
            ev!({"window_start": "1970-01-01T00:00:00Z", "window_end": "1970-01-01T00:01:00Z", "n": 2, "m": 4})
        ]
    );
}

#[test]
fn acknowledgements_are_held_until_the_window_is_emitted() {
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let acks = |id: u32| {
        let s = seen.clone();
        Acks::new(move |d| s.lock().unwrap().push((id, d)))
    };
    let mut a = aggregate(&format!("{AGGS}window: {{type: tumbling, size: 10s}}"));
    let mut out = StatefulOutput::with_ports(2);
    a.process(vec![at(1, "a")], &acks(1), 0, &mut out);
    drop(out);
    let mut out = StatefulOutput::with_ports(2);
    a.process(vec![at(12, "a")], &acks(2), 0, &mut out);
    assert!(
        seen.lock().unwrap().is_empty(),
        "both batches are in open windows... until the output is handed on"
    );
    let (emitted, emitted_acks) = out.ports.swap_remove(0);
    assert_eq!(emitted.len(), 1);
    drop(emitted_acks);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(1, Delivery::Delivered)],
        "batch 2 is in [10,20)"
    );
    flush(&mut a);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn max_groups_keeps_state_flat_and_counts_every_event_once() {
    const MAX: usize = 100;
    let mut a = aggregate(&format!(
        "group_by: {{k: .k}}\ntime: .t\nwindow: {{type: tumbling, size: 1h}}\nmax_groups: {MAX}\naggregations: {{n: count}}"
    ));
    let (mut outputs, mut evictions, mut events) = (Vec::new(), 0, 0u64);
    for round in 0..5 {
        let batch: Vec<Value> = (0..10 * MAX).map(|k| ev!({"k": k, "t": round})).collect();
        events += batch.len() as u64;
        let mut out = StatefulOutput::with_ports(2);
        a.process(batch, &Acks::none(), 0, &mut out);
        evictions += out.evictions;
        outputs.extend(out.ports.swap_remove(0).0);
        assert!(a.entries() <= MAX, "{} entries", a.entries());
    }
    assert_eq!(
        evictions as usize,
        outputs.len(),
        "every early output is an eviction"
    );
    assert!(evictions >= (50 * MAX - MAX) as u64);
    outputs.extend(flush(&mut a));
    let counted: u64 = outputs.iter().map(|o| o["n"].as_u64().unwrap()).sum();
    assert_eq!(counted, events, "every event counted in exactly one output");
}

/// A deterministic generator: the same million values in every run.
fn values(n: usize) -> Vec<f64> {
    let mut rng = fastrand::Rng::with_seed(13);
    (0..n).map(|_| (rng.f64() * 8.0).exp()).collect()
}

#[test]
fn percentiles_are_within_one_percent_on_a_million_values() {
    let vals = values(1_000_000);
    let mut sorted = vals.clone();
    sorted.sort_by(f64::total_cmp);
    let mut acc = Acc::new(Kind::Percentile);
    for v in &vals {
        acc.add(
            Some(&Value::Number(crate::core::Number::from_f64(*v).unwrap())),
            0,
        );
    }
    let Acc::Percentile(sketch) = &acc else {
        unreachable!()
    };
    let n = sketch.count();
    for p in [0.5, 0.9, 0.99, 0.999] {
        let exact = sorted[(p * sorted.len() as f64).ceil() as usize - 1];
        let got = sketch
            .quantile(crate::components::transforms::aggregate_fns::nearest_rank(
                p, n,
            ))
            .unwrap()
            .unwrap();
        let err = (got - exact).abs() / exact;
        assert!(err <= 0.01, "p{p}: {got} vs {exact}: {err}");
    }
    let mut small = Acc::new(Kind::Percentile);
    for v in [100, 300] {
        small.add(Some(&ev!(v)), 0);
    }
    assert_eq!(
        small.finish(0.99),
        ev!(300.0),
        "nearest rank, clamped to what was seen"
    );
}

#[test]
fn distinct_counts_are_within_two_percent_on_a_million_values() {
    let mut rng = fastrand::Rng::with_seed(7);
    for range in [1_000u64, 50_000, 2_000_000] {
        let mut acc = Acc::new(Kind::CountDistinct);
        let mut exact = std::collections::HashSet::new();
        for _ in 0..1_000_000 {
            let v = rng.u64(0..range);
            exact.insert(v);
            // Half strings, half numbers: both kinds of value hash.
            let v = if v.is_multiple_of(2) {
                Value::from(v)
            } else {
                Value::String(v.to_string().into())
            };
            acc.add(Some(&v), 0);
        }
        let got = acc.finish(0.0).as_u64().unwrap() as f64;
        let err = (got - exact.len() as f64).abs() / exact.len() as f64;
        assert!(
            err <= 0.02,
            "{} distinct: estimated {got} ({err})",
            exact.len()
        );
    }
}

#[test]
fn an_event_falls_in_at_most_a_thousand_hopping_windows() {
    let check = |every: &str| {
        let c: AggregateConfig = serde_yaml::from_str(&format!(
            "window: {{type: hopping, size: 1h, every: {every}}}\naggregations: {{n: count}}"
        ))
        .unwrap();
        c.check_settings()
    };
    assert_eq!(check("3600ms"), vec![]);
    assert_eq!(check("3599ms").len(), 1);
}
