//! flowgate: YAML stage graphs compiled into a running tokio task graph.
//!
//! The code follows the data, one layer per module:
//! - `core/`       what every layer shares: the event value
//!   (insertion-ordered objects, inline strings), batches, `Acks` (the
//!   end-to-end acknowledgements batches carry to their sinks), stage
//!   errors with their retryable flag, `Failed`
//! - `telemetry/`  metric definitions and logging setup (a leaf)
//! - `expr/`       jq programs: native closures for the common subset, the
//!   jaq interpreter for the rest
//! - `config/`     the vocabulary of pipeline files: stage-control configs,
//!   durations, env interpolation, positions and errors, the `tests:` section
//! - `controls/`   stage controls as layers around a unit of work: circuit
//!   breaker, rate limiter, timeout, retry, adaptive concurrency
//! - `flow/`       the pipes between stages, handed to components in their
//!   contexts: bounded queues in memory or on disk (`buffer/storage/`: the
//!   disk buffer's files, no tokio, and `flowgate buffer check`'s scan),
//!   fan-out, taps, `on_error`, pipeline control
//! - `components/` the catalogue: sources/, transforms/, sinks/ (one file
//!   each, config struct first; a stateful transform's state beside it,
//!   `stateful` the interface they share)
//! - `load/`       YAML text -> `RawPipeline`: per-component
//!   deserialisation that keeps positions
//! - `graph/`      `RawPipeline` -> validated `Pipeline` (plain data: no
//!   clients, no programs kept): inputs resolved to ids, every problem
//!   collected; the diff between two pipelines; dot/mermaid and the laid
//!   out graph the live views draw; the JSON Schema
//! - `stage/`      stage drivers: intake, the control stack, workers, order;
//!   stateful transforms on one task with their timers
//! - `plan/`       `Pipeline` -> `Pieces`: every queue, fan-out and task
//!   future, built without spawning; `flowgate test` builds and reload
//!   reuse are callers of it
//! - `runtime/`    spawns pieces, supervises tasks, applies new
//!   configurations by difference
//! - `http/`       /metrics, /health, /ready, /tap; the live views' /ui and
//!   /api/pipelines
//! - `daemon`      signals, reload, shutdown deadline
//! - `pipeline_tests` `flowgate test`
//! - `cli/`        clap commands (the only place with `anyhow`)
//!
//! Layers, lowest first. A module imports only from layers above its line
//! here; modules on one line are peers and do not import each other
//! (`tests/layers.rs` fails on an import that points up):
//!
//! ```text
//! core | telemetry
//! expr
//! config
//! controls
//! flow
//! components
//! load
//! graph
//! stage
//! plan
//! runtime
//! http
//! daemon
//! pipeline_tests
//! cli
//! ```

pub mod cli;
pub mod components;
pub mod config;
pub mod controls;
pub mod core;
pub mod daemon;
pub mod expr;
pub mod flow;
pub mod graph;
pub mod http;
pub mod load;
pub mod pipeline_tests;
pub mod plan;
pub mod runtime;
pub mod stage;
pub mod telemetry;
