//! flowgate: YAML stage graphs compiled into a running tokio task graph.
//!
//! The code follows the data:
//! - `config/`     YAML text -> `RawPipeline` (env interpolation, typed
//!   component configs, the `tests:` section, positions for errors)
//! - `graph/`      `RawPipeline` -> validated `Pipeline`: inputs resolved to
//!   ids, every problem collected; the diff between two pipelines (plan,
//!   reload); rendering as dot/mermaid; the JSON Schema
//! - `expr/`       jq programs: native closures for the common subset, the
//!   jaq interpreter for the rest
//! - `event/`      the event value: insertion-ordered objects, inline strings;
//!   `Acks`, the end-to-end acknowledgements batches carry to their sinks
//! - `components/` the catalogue: sources/, transforms/, sinks/ (one file each)
//! - `controls/`   circuit breaker, rate limiter, retry, and their order
//! - `runtime/`    buffers, fan-out, stage drivers, taps, faults, the data
//!   directory (checkpoints); `build`
//!   makes every channel and task future, `run` spawns, supervises and
//!   applies new configurations by difference
//! - `telemetry/`  metric definitions and logging setup
//! - `http`        /metrics, /health, /ready, /tap
//! - `daemon`      signals, reload, shutdown deadline
//! - `pipeline_tests` `flowgate test`
//! - `cli/`        clap commands (the only place with `anyhow`)

pub mod cli;
pub mod components;
pub mod config;
pub mod controls;
pub mod daemon;
pub mod event;
pub mod expr;
pub mod graph;
pub mod http;
pub mod pipeline_tests;
pub mod runtime;
pub mod telemetry;
