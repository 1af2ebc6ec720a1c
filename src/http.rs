//! `/metrics`, `/health` and `/ready` on `--metrics-address`.

use crate::telemetry::Metrics;
use axum::Router;
use axum::extract::State;
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
}

impl Status {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            ready: Arc::default(),
            failed: Arc::default(),
        }
    }
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
        .with_state(status);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics server stopped: {e}");
        }
    });
    Ok(bound)
}
