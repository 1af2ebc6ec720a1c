//! An `aggregate` over processing time, driven by the real stage driver
//! under paused tokio time: windows close when the clock passes their end
//! (not when events come), the input batches' acknowledgements are held
//! until the window's output is handed on, a stopping pipeline flushes,
//! and the state gauges follow.

use flowgate::components::Transform;
use flowgate::components::transforms::aggregate::AggregateConfig;
use flowgate::config::controls::{OnError, WhenFull};
use flowgate::controls::StageControls;
use flowgate::core::{Acks, Batch, Delivery};
use flowgate::flow::buffer::{self, BufferReceiver};
use flowgate::flow::control::PipelineControl;
use flowgate::flow::fanout::Fanout;
use flowgate::flow::on_error::ErrorHandler;
use flowgate::stage::{Concurrency, PortOutput, StageParts, run_transform};
use flowgate::telemetry::Metrics;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{Instant, timeout};

struct Rig {
    input: buffer::BufferSender,
    output: BufferReceiver,
    control: PipelineControl,
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
}

fn rig(yaml: &str) -> Rig {
    let metrics = Metrics::new();
    let control = PipelineControl::for_pipeline("p");
    let m = metrics.component("p", "agg", "transform", "aggregate");
    let m_out = metrics.component("p", "out", "sink", "blackhole");
    let (input, rx) = buffer::channel(100, None, WhenFull::Block, m.clone());
    let (out_tx, output) = buffer::channel(100, None, WhenFull::Block, m_out);
    let config: AggregateConfig = serde_yaml::from_str(yaml).unwrap();
    let built: Arc<dyn Transform> = Arc::new(config.build().unwrap());
    let parts = StageParts {
        input: rx,
        conc: Concurrency {
            workers: 1,
            ordered: true,
        },
        ports: vec![
            PortOutput {
                fanout: Fanout::new(vec![out_tx], m.output("default")),
                is_unmatched: false,
            },
            PortOutput {
                fanout: Fanout::new(vec![], m.output("late")),
                is_unmatched: false,
            },
        ],
        errors: ErrorHandler {
            name: "agg".into(),
            on_error: OnError::Drop,
            errors: None,
            metrics: m.clone(),
            control: control.clone(),
        },
        controls: StageControls::for_source(&Default::default(), &m),
        metrics: m,
    };
    let task = tokio::spawn(async move { run_transform(built, parts).await.unwrap() });
    Rig {
        input,
        output,
        control,
        task,
        metrics,
    }
}

fn recorder() -> (Arc<Mutex<Vec<Delivery>>>, Acks) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (seen, Acks::new(move |d| s.lock().unwrap().push(d)))
}

fn events(host: &str, n: usize) -> Batch {
    (0..n)
        .map(|i| flowgate::ev!({"host": host, "ms": i}))
        .collect()
}

fn gauge(metrics: &Metrics, name: &str) -> f64 {
    let text = metrics.render();
    text.lines()
        .find(|l| l.starts_with(name) && l.contains("component=\"agg\""))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(-1.0)
}

const MINUTE: &str = "group_by: {host: .host}\nwindow: {type: tumbling, size: 1m}\naggregations: {n: count, slowest: {max: .ms}}";

#[tokio::test(start_paused = true)]
async fn a_window_closes_when_the_clock_passes_its_end_and_releases_its_acks() {
    let mut r = rig(MINUTE);
    let t0 = Instant::now();
    let (seen, acks) = recorder();
    r.input.send(events("a", 3), acks.clone()).await.unwrap();
    r.input.send(events("b", 2), acks).await.unwrap();
    // Nothing is emitted while the window is open, however long that is
    // (time auto-advances while every task waits).
    let (batch, out_acks) = r.output.recv().await.unwrap();
    let waited = t0.elapsed();
    assert!(
        waited > Duration::ZERO && waited <= Duration::from_secs(60),
        "{waited:?}"
    );
    assert_eq!(batch.len(), 2, "{batch:?}");
    assert_eq!(
        (
            batch[0]["host"].as_str(),
            batch[0]["n"].as_u64(),
            batch[0]["slowest"].as_u64()
        ),
        (Some("a"), Some(3), Some(2))
    );
    assert_eq!(
        (batch[1]["host"].as_str(), batch[1]["n"].as_u64()),
        (Some("b"), Some(2))
    );
    let start = batch[0]["window_start"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap();
    let end = batch[0]["window_end"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap();
    assert_eq!(end.as_millisecond() - start.as_millisecond(), 60_000);
    assert_eq!(
        start.as_millisecond() % 60_000,
        0,
        "windows start on the minute"
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "held by the window's output until it is written"
    );
    assert_eq!(gauge(&r.metrics, "flowgate_state_entries"), 0.0);
    drop(out_acks);
    assert_eq!(*seen.lock().unwrap(), vec![Delivery::Delivered]);

    // The next window: open until the pipeline stops, then flushed.
    let (seen, acks) = recorder();
    r.input.send(events("a", 4), acks).await.unwrap();
    assert!(
        timeout(Duration::from_millis(10), r.output.recv())
            .await
            .is_err()
    );
    assert_eq!(gauge(&r.metrics, "flowgate_state_entries"), 1.0);
    r.control.stop();
    let (batch, out_acks) = r.output.recv().await.unwrap();
    assert_eq!(batch[0]["n"].as_u64(), Some(4));
    assert!(
        t0.elapsed() < waited + Duration::from_secs(60),
        "flushed at the stop, not at the window's end"
    );
    drop(out_acks);
    assert_eq!(*seen.lock().unwrap(), vec![Delivery::Delivered]);
    drop(r.input);
    r.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn sessions_close_a_gap_after_their_last_event() {
    let mut r =
        rig("group_by: {host: .host}\nwindow: {type: session, gap: 10s}\naggregations: {n: count}");
    let t0 = Instant::now();
    for _ in 0..3 {
        r.input.send(events("a", 1), Acks::none()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(8)).await;
    }
    let (batch, _) = r.output.recv().await.unwrap();
    // Last event at 16s; the session ends 10s later.
    let at = t0.elapsed();
    assert!(
        at >= Duration::from_secs(26) && at < Duration::from_secs(27),
        "{at:?}"
    );
    assert_eq!(batch[0]["n"].as_u64(), Some(3));
    let start = batch[0]["window_start"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap();
    let end = batch[0]["window_end"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap();
    let span = end.as_millisecond() - start.as_millisecond();
    assert!((26_000..26_100).contains(&span), "{span}");
    drop(r.input);
    r.task.await.unwrap();
    assert!(r.output.recv().await.is_none());
}
