//! A stage that panics fails what it held (SPEC §10): the real
//! `http_server` source with `acknowledgements: true` feeds a transform
//! that panics on one event while more requests wait in its queue. No
//! client is told 200 for an event that was not written, none waits
//! forever, and the pipeline stops with the panic as its failure.
//!
//! No component of the catalogue can be made to panic, so the transform
//! and the sink are mocks driven by the real stage drivers, wired and
//! guarded as a build wires them (`Task::guarded`) and supervised by the
//! real runtime.

mod common;

use flowgate::components::sources::http_server::HttpServerConfig;
use flowgate::components::{
    ComponentError, Encoded, Sink, Source, SourceContext, Transform, TransformOutput,
};
use flowgate::config::controls::{OnError, WhenFull};
use flowgate::controls::StageControls;
use flowgate::core::{Batch, Event};
use flowgate::flow::buffer;
use flowgate::flow::control::PipelineControl;
use flowgate::flow::fanout::Fanout;
use flowgate::flow::on_error::ErrorHandler;
use flowgate::plan::build::{Pieces, Task};
use flowgate::runtime::RunningPipeline;
use flowgate::stage::{Concurrency, PortOutput, StageParts, run_sink, run_transform};
use flowgate::telemetry::{ComponentMetrics, Metrics};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

/// Passes events on; on `{"n": 3}` it waits until the test lets it go,
/// then panics with the batch in hand.
struct PanicsOnThree {
    release: Mutex<mpsc::Receiver<()>>,
}

impl Transform for PanicsOnThree {
    fn process(&self, batch: Batch, out: &mut TransformOutput) {
        for e in batch {
            if e["n"] == 3 {
                // Waiting parks this runtime worker; `block_in_place` hands
                // its queued and just-woken tasks to another thread, or the
                // server tasks the test then needs could wait behind it
                // (the test once timed out so on a loaded machine).
                let release = &self.release;
                let _ = tokio::task::block_in_place(|| release.lock().unwrap().recv_timeout(LONG));
                panic!("boom on event 3");
            }
            out.ports[0].push(e);
        }
    }
}

/// Keeps what it is given; written means kept.
struct Collect(Arc<Mutex<Vec<Event>>>);

#[async_trait::async_trait]
impl Sink for Collect {
    fn encode(&self, batch: Batch) -> Encoded {
        Encoded {
            events: batch,
            ..Encoded::default()
        }
    }
    async fn write(&self, encoded: &Encoded) -> Result<(), ComponentError> {
        self.0
            .lock()
            .unwrap()
            .extend(encoded.events.iter().cloned());
        Ok(())
    }
    async fn flush(&self) -> Result<(), ComponentError> {
        Ok(())
    }
}

fn errors(name: &str, m: &ComponentMetrics, control: &PipelineControl) -> ErrorHandler {
    ErrorHandler {
        name: name.into(),
        on_error: OnError::Drop,
        errors: None,
        metrics: m.clone(),
        control: control.clone(),
    }
}

fn parts(
    workers: usize,
    input: buffer::BufferReceiver,
    ports: Vec<PortOutput>,
    m: &ComponentMetrics,
    control: &PipelineControl,
    name: &str,
) -> StageParts {
    StageParts {
        input,
        conc: Concurrency {
            workers,
            ordered: true,
        },
        ports,
        errors: errors(name, m, control),
        metrics: m.clone(),
        controls: StageControls::for_source(&Default::default(), m),
    }
}

async fn post(url: &str, n: u64) -> Result<u16, String> {
    let client = reqwest::Client::new();
    match tokio::time::timeout(LONG, client.post(url).body(format!("{{\"n\":{n}}}")).send()).await {
        Ok(Ok(resp)) => Ok(resp.status().as_u16()),
        Ok(Err(e)) => Err(format!("request {n}: {e}")),
        Err(_) => Err(format!("request {n}: no answer within {LONG:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_stage_fails_the_requests_it_held_and_queued() {
    held_and_queued(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_worker_fails_the_requests_its_stage_held_and_queued() {
    held_and_queued(4).await;
}

async fn held_and_queued(workers: usize) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Metrics::new();
    let control = PipelineControl::for_pipeline("p");
    let m_web = metrics.component("p", "web", "source", "http_server");
    let m_boom = metrics.component("p", "boom", "transform", "map");
    let m_out = metrics.component("p", "out", "sink", "file");
    let (boom_tx, boom_rx) = buffer::channel(100, None, WhenFull::Block, m_boom.clone());
    let boom_queue = boom_rx.gauge();
    let (out_tx, out_rx) = buffer::channel(100, None, WhenFull::Block, m_out.clone());

    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let web_out = Fanout::new(vec![boom_tx], m_web.output("default"));
    let web = HttpServerConfig {
        address: format!("127.0.0.1:{port}"),
        path: "/".into(),
        max_body_bytes: 1 << 20,
        max_line_bytes: 1 << 20,
        auth_token: None,
        acknowledgements: true,
        max_connections: 1024,
        request_timeout: flowgate::config::duration::ConfigDuration(Duration::from_secs(30)),
    };
    let ctx = SourceContext {
        name: "web".into(),
        pipeline: "p".into(),
        state_dir: std::env::temp_dir(),
        downstream_capacity: 200,
        output: web_out.clone(),
        errors: errors("web", &m_web, &control),
        shutdown: control.source_token().child_token(),
        controls: StageControls::for_source(&Default::default(), &m_web),
        metrics: m_web.clone(),
    };
    let (release, released) = mpsc::channel();
    let boom_out = Fanout::new(vec![out_tx], m_boom.output("default"));
    let boom = run_transform(
        Arc::new(PanicsOnThree {
            release: Mutex::new(released),
        }),
        parts(
            workers,
            boom_rx,
            vec![PortOutput {
                fanout: boom_out.clone(),
                is_unmatched: false,
            }],
            &m_boom,
            &control,
            "boom",
        ),
    );
    let written = Arc::new(Mutex::new(Vec::new()));
    let out = run_sink(
        Arc::new(Collect(written.clone())),
        parts(1, out_rx, Vec::new(), &m_out, &control, "out"),
        m_out.output("default"),
    );
    let running = RunningPipeline::spawn(Pieces {
        name: "p".into(),
        control: control.clone(),
        tasks: vec![
            Task::guarded(
                "web",
                &control,
                vec![web_out],
                Box::new(web.build()).run(ctx),
            ),
            Task::guarded("boom", &control, vec![boom_out], Box::pin(boom)),
            Task::guarded("out", &control, Vec::new(), Box::pin(out)),
        ],
        queues: vec![boom_queue.clone()],
        masters: Default::default(),
        outputs: Default::default(),
        source_stops: Default::default(),
        rewire: Vec::new(),
    });
    common::wait_listening(port);

    // Written before the panic: answered 200.
    for n in 0..3 {
        assert_eq!(post(&url, n).await, Ok(200), "event {n}");
    }
    // Event 3 is in the stage's hands, 4 and 5 wait in its queue.
    let held = tokio::spawn({
        let url = url.clone();
        async move { post(&url, 3).await }
    });
    let deadline = tokio::time::Instant::now() + LONG;
    while boom_queue.events() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "event 3 never reached the stage"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let queued: Vec<_> = [4, 5]
        .map(|n| {
            let url = url.clone();
            tokio::spawn(async move { post(&url, n).await })
        })
        .into();
    while boom_queue.events() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events 4 and 5 were not queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    release.send(()).unwrap();

    assert_eq!(
        held.await.unwrap(),
        Ok(503),
        "the event the panicking stage held was not written: no 200"
    );
    for (n, q) in [4, 5].into_iter().zip(queued) {
        assert_eq!(
            q.await.unwrap(),
            Ok(503),
            "event {n} waited in the dead stage's queue: answered, and not 200"
        );
    }
    let failure = tokio::time::timeout(LONG, running.wait())
        .await
        .expect("the pipeline stops")
        .expect_err("a panic fails the pipeline");
    assert_eq!(failure, "component 'boom': panicked: boom on event 3");
    let got: Vec<u64> = written
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["n"].as_u64().unwrap())
        .collect();
    assert_eq!(got, vec![0, 1, 2]);
    let text = metrics.render();
    let count = |outcome| {
        common::metric(
            &text,
            "flowgate_acknowledged_events_total",
            &[("component", "web"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        (count("delivered"), count("failed")),
        (Some(3.0), Some(3.0)),
        "{text}"
    );
}
