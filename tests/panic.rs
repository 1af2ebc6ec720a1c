//! A component that panics is reported by name and ends its pipeline with a
//! failure, while the rest of the graph drains (library API with a mock).

use flowgate::components::{Transform, TransformOutput};
use flowgate::config::controls::{OnError, WhenFull};
use flowgate::controls::StageControls;
use flowgate::core::Batch;
use flowgate::flow::buffer;
use flowgate::flow::control::PipelineControl;
use flowgate::flow::fanout::Fanout;
use flowgate::flow::on_error::ErrorHandler;
use flowgate::plan::build::{Pieces, Task};
use flowgate::runtime::RunningPipeline;
use flowgate::stage::{Concurrency, PortOutput, StageParts, run_transform};
use flowgate::telemetry::Metrics;

use std::sync::Arc;

struct PanicsOnThird;

impl Transform for PanicsOnThird {
    fn process(&self, batch: Batch, out: &mut TransformOutput) {
        for e in batch {
            if e["n"] == 3 {
                panic!("boom on event 3");
            }
            out.ports[0].push(e);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_worker_is_caught_named_and_fails_the_pipeline() {
    for workers in [1, 4] {
        let metrics = Metrics::new();
        let m = metrics.component("p", "boom", "transform", "map");
        let (tx, rx) = buffer::channel(10, None, WhenFull::Block, m.clone());
        let (down_tx, mut down_rx) = buffer::channel(
            100,
            None,
            WhenFull::Block,
            metrics.component("p", "out", "sink", "blackhole"),
        );
        let control = PipelineControl::new();
        let errors = ErrorHandler {
            name: "boom".into(),
            on_error: OnError::Drop,
            errors: None,
            metrics: m.clone(),
            control: control.clone(),
        };
        let ports = vec![PortOutput {
            fanout: Fanout::new(vec![down_tx], m.output("default")),
            is_unmatched: false,
        }];
        let parts = StageParts {
            input: rx,
            conc: Concurrency {
                workers,
                ordered: true,
            },
            ports,
            errors,
            metrics: m.clone(),
            controls: StageControls::for_source(&Default::default(), &m),
        };
        let stage = run_transform(Arc::new(PanicsOnThird), parts);
        let pieces = Pieces {
            name: "p".into(),
            control: control.clone(),
            tasks: vec![Task {
                component: "boom".into(),
                future: Box::pin(stage),
            }],
            queues: Vec::new(),
            masters: Default::default(),
            outputs: Default::default(),
            source_stops: Default::default(),
            rewire: Vec::new(),
        };
        let running = RunningPipeline::spawn(pieces);
        for n in 0..5 {
            if tx
                .send(
                    vec![flowgate::ev!({ "n": n })],
                    flowgate::core::Acks::none(),
                )
                .await
                .is_err()
            {
                break;
            }
            tokio::task::yield_now().await;
        }
        let failure = running
            .wait()
            .await
            .expect_err("a panic fails the pipeline");
        assert_eq!(failure, "component 'boom': panicked: boom on event 3");
        assert!(
            control.source_token().is_cancelled(),
            "the sources are told to stop"
        );
        let mut got = 0;
        while let Some(b) = down_rx.recv().await {
            got += b.0.len();
        }
        assert!(
            got <= 3,
            "events before the panic may pass, none after: {got}"
        );
        // Upstream sends to the dead stage report the undelivered events.
        assert!(
            tx.send(vec![flowgate::ev!({"n": 9})], flowgate::core::Acks::none())
                .await
                .is_err()
        );
    }
}
