//! `/metrics`, `/health`, `/ready` and `/tap` on `--metrics-address`;
//! the live views' `/api/pipelines` (`api.rs`) and `/ui` (`ui.rs`).

pub mod api;
mod ui;

use crate::flow::tap::Taps;
use crate::telemetry::Metrics;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the endpoints report.
#[derive(Clone)]
pub struct Status {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub failed: Arc<AtomicBool>,
    pub taps: Taps,
    /// The running pipelines' graphs, for `/api/pipelines`.
    pub graphs: api::Graphs,
}

impl Status {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            ready: Arc::default(),
            failed: Arc::default(),
            taps: Taps::default(),
            graphs: api::Graphs::default(),
        }
    }
}

/// `GET /tap/{output}`: sampled events leaving an output, as NDJSON, for
/// as long as the client reads.
async fn tap(State(s): State<Status>, Path(output): Path<String>) -> axum::response::Response {
    let point = match s.taps.find(&output) {
        Ok(p) => p,
        Err(why) => return (StatusCode::NOT_FOUND, format!("{why}\n")).into_response(),
    };
    let listener = point.listen();
    let stream = futures_util::stream::unfold(listener, |mut l| async move {
        loop {
            match l.rx.recv().await {
                Ok(line) => {
                    let mut bytes = Vec::with_capacity(line.len() + 1);
                    bytes.extend_from_slice(line.as_bytes());
                    bytes.push(b'\n');
                    return Some((Ok::<_, std::convert::Infallible>(bytes), l));
                }
                // A slow reader skips what it missed.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

async fn metrics(State(s): State<Status>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn api_pipelines(State(s): State<Status>) -> impl IntoResponse {
    let body = serde_json::to_string(&api::pipelines(&s.graphs, &s.metrics))
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    ([(header::CONTENT_TYPE, "application/json")], body)
}

async fn health(State(s): State<Status>) -> impl IntoResponse {
    if s.failed.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "a pipeline has failed\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn ready(State(s): State<Status>) -> impl IntoResponse {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// Binds `address` and serves in the background; returns the bound address
/// (useful with port 0).
pub async fn serve(address: &str, status: Status) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/tap/{*output}", get(tap))
        .route("/api/pipelines", get(api_pipelines))
        .merge(ui::routes())
        .with_state(status);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics server stopped: {e}");
        }
    });
    Ok(bound)
}
