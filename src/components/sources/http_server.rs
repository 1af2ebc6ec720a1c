//! `http_server`: accepts events over HTTP POST — one JSON object, a JSON
//! array of objects, or NDJSON — and answers once they are accepted into
//! the pipeline. A body that does not parse is refused whole (400); a
//! missing or wrong bearer token gets 401; a body over `max_body_bytes`
//! 413; and when the pipeline pushes back (a full `block` buffer
//! downstream) 429 with `Retry-After`, so clients slow down instead of
//! piling up requests. With `acknowledgements: true` the 200 waits until
//! the sinks wrote every event (503 if one could not be). On shutdown the listener closes and requests in
//! flight are answered.

use super::decode::{NotAnEvent, json_object};
use crate::components::{ComponentError, Source, SourceContext};
use crate::core::{AckedChunks, Acks, Batch, Delivery, MAX_BATCH, Value};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

fn default_path() -> String {
    "/".into()
}

fn ten_mib() -> usize {
    10 * 1024 * 1024
}

/// Accepts events over HTTP POST: a JSON object, a JSON array of objects, or NDJSON.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Address to listen on, e.g. `127.0.0.1:8080`.
    pub address: String,
    /// URL path that takes POSTs (default `/`).
    #[serde(default = "default_path")]
    pub path: String,
    /// Largest request body, in bytes (default 10 MiB); larger ones get 413.
    #[serde(default = "ten_mib")]
    #[schemars(range(min = 1))]
    pub max_body_bytes: usize,
    /// When set, clients must send `Authorization: Bearer <auth_token>` (else 401).
    #[serde(default)]
    pub auth_token: Option<String>,
    /// Answer 200 only once every event of the request is written by the
    /// sinks it reaches (or discarded by a configured rule); 503 with
    /// `Retry-After` if some could not be written. Off: 200 once accepted.
    #[serde(default)]
    pub acknowledgements: bool,
}

impl HttpServerConfig {
    pub fn check(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut problems = Vec::new();
        if self.address.parse::<std::net::SocketAddr>().is_err() {
            problems.push((
                vec!["address"],
                format!("'{}' is not an address like 127.0.0.1:8080", self.address),
            ));
        }
        if !self.path.starts_with('/') {
            problems.push((
                vec!["path"],
                format!("path '{}' must start with '/'", self.path),
            ));
        }
        problems
    }

    pub fn build(&self) -> HttpServer {
        HttpServer {
            config: self.clone(),
        }
    }
}

pub struct HttpServer {
    config: HttpServerConfig,
}

struct Shared {
    ctx: SourceContext,
    token: Option<String>,
    /// With `acknowledgements: true`, what became of the requests' events.
    acknowledged: Option<crate::telemetry::AckCounters>,
}

/// The events of a request body, or why it does not parse.
fn decode(body: &[u8]) -> Result<Batch, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("the body is not UTF-8: {e}"))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    // One document (an object or an array of objects) ...
    match json_object(trimmed.as_bytes()) {
        Ok(event) => return Ok(vec![event]),
        Err(NotAnEvent::NotAnObject(Value::Array(items))) => {
            if let Some(i) = items.iter().position(|e| !e.is_object()) {
                return Err(format!("array element {i} is not a JSON object"));
            }
            return Ok(items);
        }
        Err(other @ NotAnEvent::NotAnObject(_)) => return Err(other.describe("the body")),
        Err(NotAnEvent::Invalid(_)) => {}
    }
    // ... or NDJSON, one object per line.
    let mut events = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        match json_object(line.as_bytes()) {
            Ok(event) => events.push(event),
            // This source's wording names no type; kept so clients see
            // the answers they always have.
            Err(NotAnEvent::NotAnObject(_)) => {
                return Err(format!("line {} is not a JSON object", n + 1));
            }
            Err(e @ NotAnEvent::Invalid(_)) => return Err(e.describe(&format!("line {}", n + 1))),
        }
    }
    Ok(events)
}

async fn accept(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(token) = &shared.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing or wrong bearer token\n",
            )
                .into_response();
        }
    }
    let events = match decode(&body) {
        Ok(e) => e,
        Err(why) => {
            shared.ctx.metrics.errors("decode", 1);
            return (
                StatusCode::BAD_REQUEST,
                format!("{why}; nothing was accepted\n"),
            )
                .into_response();
        }
    };
    let n = events.len();
    if !shared.ctx.output.has_room(n) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "the pipeline is busy; retry later\n",
        )
            .into_response();
    }
    shared.ctx.metrics.events_in.inc_by(n as u64);
    let (acks, written) = if let Some(counters) = shared.acknowledged.clone() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            Acks::new(move |d| {
                counters.count(d == Delivery::Delivered, n);
                let _ = tx.send(d);
            }),
            Some(rx),
        )
    } else {
        (Acks::none(), None)
    };
    // A large body travels as several batches; the answer waits for all.
    for (batch, batch_acks) in AckedChunks::new(events, acks, MAX_BATCH) {
        shared.ctx.emit_acked(batch, batch_acks).await;
    }
    if let Some(written) = written
        && written.await != Ok(Delivery::Delivered)
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "the events were accepted but not all could be written; retry\n",
        )
            .into_response();
    }
    (StatusCode::OK, format!("{{\"accepted\":{n}}}\n")).into_response()
}

#[async_trait::async_trait]
impl Source for HttpServer {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), ComponentError> {
        let listener = tokio::net::TcpListener::bind(&self.config.address)
            .await
            .map_err(|e| ComponentError::io(format!("listening on {}", self.config.address), e))?;
        tracing::info!(component = %ctx.name, "http_server listening on http://{}{}", self.config.address, self.config.path);
        let shutdown = ctx.shutdown.clone();
        let acknowledged = self
            .config
            .acknowledgements
            .then(|| ctx.metrics.acknowledged());
        let shared = Arc::new(Shared {
            ctx,
            token: self.config.auth_token.clone(),
            acknowledged,
        });
        let app = Router::new()
            .route(&self.config.path, post(accept))
            .layer(DefaultBodyLimit::max(self.config.max_body_bytes))
            .with_state(shared);
        // On shutdown the listener closes; requests in flight are answered.
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .map_err(|e| ComponentError::io("serving http_server", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_objects_arrays_and_ndjson_and_refuses_the_rest_whole() {
        assert_eq!(decode(b"{\"a\":1}").unwrap().len(), 1);
        assert_eq!(decode(b"[{\"a\":1},{\"a\":2}]").unwrap().len(), 2);
        assert_eq!(decode(b"{\"a\":1}\n\n{\"a\":2}\r\n").unwrap().len(), 2);
        assert_eq!(
            decode(b"[{\"a\":1}, 3]").unwrap_err(),
            "array element 1 is not a JSON object"
        );
        assert_eq!(
            decode(b"{\"a\":1}\nnope\n").unwrap_err().split(':').next(),
            Some("line 2 is not valid JSON")
        );
        assert_eq!(
            decode(b"42").unwrap_err(),
            "the body is a JSON number, not an object"
        );
        assert!(decode(b"").unwrap().is_empty());
    }
}
