//! Scale-out through NATS JetStream (issue 12): `benches/nats_throughput.sh`
//! run on the release binary — the publisher alone, one consumer alone and
//! `deploy/scaleout-demo.sh` (three workers), events/s and CPU per event,
//! with one event per JetStream message and with 100.
//!
//! `cargo bench --bench scaleout`; `SCALEOUT_EVENTS` (default 300000),
//! `BENCH_RUNS` (rounds in turn, default 1) and `EVENTS_PER_MESSAGE`
//! (default "1 100"). Needs nats-server, python3 and curl; without
//! nats-server it prints one line saying so.

#[path = "support/script.rs"]
mod script;

fn main() {
    // `cargo bench` passes `--bench`; there are no harness arguments to take.
    script::run(
        "scaleout",
        "nats_throughput.sh",
        &["nats-server", "python3", "curl"],
        &[
            ("EVENTS", script::var("SCALEOUT_EVENTS", "300000")),
            ("RUNS", script::var("BENCH_RUNS", "1")),
            (
                "EVENTS_PER_MESSAGE",
                script::var("EVENTS_PER_MESSAGE", "1 100"),
            ),
        ],
    );
}
