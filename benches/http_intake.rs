//! Intake of the `http_server` source (issue 12): `benches/http_intake.sh`
//! run on the release binary — wrk's requests/s, events/s, p50 and p99
//! with `acknowledgements` off and on.
//!
//! `cargo bench --bench http_intake`; `CLIENTS` (default 64) and
//! `DURATION` (seconds per run, default 10). Needs wrk, python3 and curl;
//! without wrk it prints one line saying so.

#[path = "support/script.rs"]
mod script;

fn main() {
    // `cargo bench` passes `--bench`; there are no harness arguments to take.
    script::run(
        "http_intake",
        "http_intake.sh",
        &["wrk", "python3", "curl"],
        &[
            ("CLIENTS", script::var("CLIENTS", "64")),
            ("DURATION", script::var("DURATION", "10")),
        ],
    );
}
