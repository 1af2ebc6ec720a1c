//! The `flowgate` command line (SPEC §6). Exit codes: 0 success, 1 runtime
//! failure, 2 usage error (clap), 78 invalid configuration, 130 second
//! signal.

use crate::config::duration::ConfigDuration;
use crate::daemon::{self, Outcome, RunOptions, Watch};
use crate::graph::{self, Pipeline, render, schema};
use crate::telemetry::logging::{self, LogFormat};
use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

mod buffer_check;
mod completions;
mod man;
mod run_paths;
mod tap;
mod top;

pub const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "flowgate",
    version,
    about = "A declarative dataflow engine: YAML stage graphs run as a tokio task graph"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run pipelines (files, or directories of *.yaml) until their sources end or a signal stops them.
    Run {
        /// Pipeline files or directories; default /etc/flowgate/pipelines when it exists.
        paths: Vec<PathBuf>,
        /// Address for /metrics, /health, /ready, /ui and /api/pipelines; `off` disables the server.
        #[arg(long, default_value = "127.0.0.1:9717")]
        metrics_address: String,
        /// How long SIGINT/SIGTERM may take to drain and flush (e.g. 30s).
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        shutdown_timeout: ConfigDuration,
        /// Reload when the files (or the *.yaml files of the directories) change.
        #[arg(long)]
        watch: bool,
        /// Where checkpoints and other state are kept (one directory per pipeline).
        #[arg(long, default_value = crate::plan::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Log format; the level comes from RUST_LOG (default info).
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Check pipeline files and print every problem; runs nothing.
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the compiled graph of a pipeline, with buffers, workers and named outputs.
    Graph {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
    },
    /// Print the pipeline JSON Schema (the same as schemas/pipeline.schema.json).
    Schema,
    /// Print a sample (at most 100 events/s) of the events leaving COMPONENT[.PORT] of a running daemon, as NDJSON.
    Tap {
        /// `component`, `component.port`, or `pipeline/component` when several pipelines run.
        output: String,
        /// The daemon's --metrics-address.
        #[arg(long, default_value = "127.0.0.1:9717")]
        metrics_address: String,
        /// Stop after this many events (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Show each component's rates, buffer, workers and breaker of a running daemon, every second (q quits); one table when stdout is not a terminal.
    Top {
        /// The daemon's --metrics-address.
        #[arg(long, default_value = "127.0.0.1:9717")]
        metrics_address: String,
    },
    /// Show what a reload from OLD to NEW would keep, replace, add and remove.
    Plan { old: PathBuf, new: PathBuf },
    /// Run the `tests:` sections of pipeline files (events in, expected outputs, injected faults).
    Test {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the shell completion script (install it as bash, zsh or fish expects).
    Completions { shell: completions::Shell },
    /// Print the flowgate(1) man page; --out-dir writes it and one page per subcommand.
    Man {
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Inspect disk buffers.
    Buffer {
        #[command(subcommand)]
        command: BufferCommand,
    },
}

#[derive(Subcommand)]
enum BufferCommand {
    /// Read every disk buffer under the data directory without changing it; print per buffer its events, bytes and corrupt records; exit 1 if any is corrupt.
    Check {
        /// The daemon's --data-dir.
        #[arg(long, default_value = crate::plan::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
}

fn parse_duration(s: &str) -> Result<ConfigDuration, String> {
    ConfigDuration::parse(s)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Schema => {
            print!("{}", schema::pipeline_schema_text());
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { paths } => {
            let files = expand(&paths)?;
            let mut bad = 0;
            for file in &files {
                match graph::load(file) {
                    Ok((p, warnings)) => {
                        for w in &warnings {
                            eprintln!("warning: {w}");
                        }
                        println!(
                            "{}: ok (pipeline '{}', {} components)",
                            file.display(),
                            p.name,
                            p.components.len()
                        );
                    }
                    Err(errors) => {
                        bad += 1;
                        for e in &errors {
                            eprintln!("{e}");
                        }
                        eprintln!("{}: {} problem(s)", file.display(), errors.len());
                    }
                }
            }
            Ok(if bad > 0 {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Test { paths } => run_tests(&expand(&paths)?),
        Command::Completions { shell } => completions::print(shell, Cli::command()),
        Command::Man { out_dir } => man::print(Cli::command(), out_dir.as_deref()),
        Command::Buffer {
            command: BufferCommand::Check { data_dir },
        } => buffer_check::buffer_check(&data_dir),
        Command::Tap {
            output,
            metrics_address,
            count,
        } => tap::tap(&output, &metrics_address, count),
        Command::Top { metrics_address } => top::top(&metrics_address),
        Command::Plan { old, new } => {
            // Loaded one by one: OLD and NEW usually share a pipeline name.
            let (Some(old), Some(new)) = (load_one(&old), load_one(&new)) else {
                return Ok(ExitCode::from(EXIT_CONFIG));
            };
            println!(
                "plan: {} -> {} (pipeline '{}')",
                old.file, new.file, new.name
            );
            print!("{}", graph::diff::render(&graph::diff::diff(&old, &new)));
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph { file, format } => match graph::load(&file) {
            Ok((p, _)) => {
                print!(
                    "{}",
                    match format {
                        GraphFormat::Dot => render::dot(&p),
                        GraphFormat::Mermaid => render::mermaid(&p),
                    }
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                Ok(ExitCode::from(EXIT_CONFIG))
            }
        },
        Command::Run {
            paths,
            metrics_address,
            shutdown_timeout,
            watch,
            data_dir,
            log_format,
        } => {
            let paths = match run_paths::or_default(paths) {
                Ok(paths) => paths,
                Err(code) => return Ok(code),
            };
            logging::init(log_format);
            // Before reading: an edit made while we start is not missed.
            let watch_loaded = watch.then(|| fingerprint(&paths));
            let files = expand(&paths)?;
            let Some(pipelines) = load_all(&files) else {
                return Ok(ExitCode::from(EXIT_CONFIG));
            };
            let reload_paths = paths.clone();
            let options = RunOptions {
                metrics_address: (metrics_address != "off").then_some(metrics_address),
                shutdown_timeout: shutdown_timeout.0,
                reload: Arc::new(move || reload_all(&reload_paths)),
                watch: watch.then(|| {
                    let watched = paths.clone();
                    Arc::new(move || fingerprint(&watched)) as Watch
                }),
                watch_loaded,
                data_dir,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("flowgate-worker")
                .build()
                .context("starting the async runtime")?;
            let outcome = runtime.block_on(daemon::run(pipelines, options));
            // Reader threads blocked on stdin must not keep the process alive.
            runtime.shutdown_background();
            Ok(match outcome {
                Outcome::Clean => ExitCode::SUCCESS,
                Outcome::Failed(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
                Outcome::TimedOut { .. } => ExitCode::from(1),
                Outcome::Interrupted => ExitCode::from(130),
            })
        }
    }
}

/// `flowgate test`: every test of every file, a line each, diffs for
/// failures, and a closing `N passed, N failed` line.
fn run_tests(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let Some(pipelines) = load_all(files) else {
        return Ok(ExitCode::from(EXIT_CONFIG));
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (mut passed, mut failed) = (0, 0);
    for p in &pipelines {
        if p.tests.is_empty() {
            println!("{}: no tests", p.file);
        }
        for case in &p.tests {
            match runtime.block_on(crate::pipeline_tests::run(p, case)) {
                Ok(()) => {
                    passed += 1;
                    println!("test {} :: {} ... ok", p.file, case.name);
                }
                Err(why) => {
                    failed += 1;
                    println!("test {} :: {} ... FAILED\n{why}", p.file, case.name);
                }
            }
        }
    }
    runtime.shutdown_background();
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Names, sizes and modification times of the configuration files.
fn fingerprint(paths: &[PathBuf]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for file in expand(paths).unwrap_or_default() {
        file.hash(&mut h);
        if let Ok(meta) = std::fs::metadata(&file) {
            meta.len().hash(&mut h);
            meta.modified().ok().hash(&mut h);
        }
    }
    h.finish()
}

/// Reads the files given to `run` again (directories may have gained or
/// lost files); every problem comes back as a line.
fn reload_all(paths: &[PathBuf]) -> Result<Vec<Pipeline>, Vec<String>> {
    let files = expand(paths).map_err(|e| vec![format!("{e:#}")])?;
    let mut pipelines: Vec<Pipeline> = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        match graph::load(file) {
            Ok((p, _)) if pipelines.iter().any(|o| o.name == p.name) => {
                problems.push(format!(
                    "{}: pipeline name '{}' is used twice",
                    file.display(),
                    p.name
                ));
            }
            Ok((p, _)) => pipelines.push(p),
            Err(errors) => problems.extend(errors.iter().map(ToString::to_string)),
        }
    }
    if problems.is_empty() {
        Ok(pipelines)
    } else {
        Err(problems)
    }
}

/// Loads one file, printing its problems.
fn load_one(file: &Path) -> Option<Pipeline> {
    match graph::load(file) {
        Ok((p, _)) => Some(p),
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            None
        }
    }
}

/// Loads every file; prints all problems and returns `None` if any file is invalid.
fn load_all(files: &[PathBuf]) -> Option<Vec<Pipeline>> {
    let mut pipelines: Vec<Pipeline> = Vec::new();
    let mut ok = true;
    for file in files {
        match graph::load(file) {
            Ok((p, warnings)) => {
                for w in &warnings {
                    tracing::warn!("{w}");
                }
                if let Some(other) = pipelines.iter().find(|o| o.name == p.name) {
                    eprintln!(
                        "{}: pipeline name '{}' is already used by {}; set a unique `name:`",
                        file.display(),
                        p.name,
                        other.file
                    );
                    ok = false;
                }
                pipelines.push(p);
            }
            Err(errors) => {
                ok = false;
                for e in &errors {
                    eprintln!("{e}");
                }
            }
        }
    }
    ok.then_some(pipelines)
}

/// Files as given, and the `*.yaml`/`*.yml` files of directories (sorted).
fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading directory {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_yaml(p))
                .collect();
            found.sort();
            if found.is_empty() {
                anyhow::bail!("{}: no *.yaml files in this directory", path.display());
            }
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn is_yaml(p: &Path) -> bool {
    p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}
