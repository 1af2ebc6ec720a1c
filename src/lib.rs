//! flowgate: YAML stage graphs compiled into a running tokio task graph.
//!
//! The code follows the data:
//! - `config/`     YAML text -> `RawPipeline` (env interpolation, typed
//!   component configs, positions for errors)
//! - `graph/`      `RawPipeline` -> validated `Pipeline`: inputs resolved to
//!   ids, every problem collected; rendering as dot/mermaid; the schema
//! - `expr/`       jq programs: native closures for the common subset, the
//!   jaq interpreter for the rest
//! - `components/` the catalogue: sources/, transforms/, sinks/ (one file each)
//! - `runtime/`    buffers, fan-out, stage drivers; `build` makes every
//!   channel and task future, `run` spawns and supervises them
//! - `telemetry/`  metric definitions and logging setup
//! - `http`        /metrics, /health, /ready
//! - `daemon`      signals and process lifecycle
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
