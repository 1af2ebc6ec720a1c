//! `http_server`: accepts events over HTTP POST — one JSON object, a JSON
//! array of objects, or NDJSON — and answers once they are accepted into
//! the pipeline. A body that does not parse is refused whole (400); a
//! missing or wrong bearer token gets 401; a body over `max_body_bytes`
//! 413; an NDJSON line over `max_line_bytes` is a `decode` error handled
//! by the source's `on_error` (the other lines are accepted); and when the
//! pipeline pushes back (a full `block` buffer
//! downstream) 429 with `Retry-After`, so clients slow down instead of
//! piling up requests. With `acknowledgements: true` the 200 waits until
//! the sinks wrote every event (503 if one could not be). On shutdown the listener closes and requests in
//! flight are answered.
//!
//! Bounded (SPEC §10, see `http_listener`): at most `max_connections`
//! open; a request whose head and body have not arrived within
//! `request_timeout` is answered 408 and its connection closed (counted
//! as an error of type `timeout`); idle keep-alive connections close after
//! 60s.

use super::decode::{NotAnEvent, check_max_line_bytes, default_max_line_bytes, json_object};
use super::http_listener::{ConnClock, IDLE_TIMEOUT, LimitedListener};
use crate::components::{ComponentError, Source, SourceContext};
use crate::config::duration::ConfigDuration;
use crate::core::{AckedChunks, Acks, Batch, Delivery, MAX_BATCH, Sampled, Value};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Request, State};
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

fn default_max_connections() -> usize {
    1024
}

fn default_request_timeout() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(30))
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
    /// Longest NDJSON line, in bytes (default 1 MiB = 1048576; at least 1).
    /// A longer line is a `decode` error of this source, handled by its
    /// `on_error` (a routed event carries its first 1 KiB in
    /// `.error.sample`), and is not decoded; the body's other lines are
    /// accepted. A body that is one JSON document is bounded by
    /// `max_body_bytes` only.
    #[serde(default = "default_max_line_bytes")]
    #[schemars(range(min = 1))]
    pub max_line_bytes: usize,
    /// Most client connections open at once (default 1024; at least 1).
    /// Further clients wait in the kernel's accept queue until one closes.
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 1))]
    pub max_connections: usize,
    /// Time a request's head and body have to arrive (default 30s; longer
    /// than 0s), from the connection's accept for its first request and
    /// from the first byte for the next ones; else 408 and the connection
    /// is closed. Delivering the events (`acknowledgements`) is not
    /// counted. Idle keep-alive connections are closed after 60s.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: ConfigDuration,
}

impl HttpServerConfig {
    pub fn check(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut problems = check_max_line_bytes(self.max_line_bytes);
        if self.address.parse::<std::net::SocketAddr>().is_err() {
            problems.push((
                vec!["address"],
                format!("'{}' is not an address like 127.0.0.1:8080", self.address),
            ));
        }
        if self.max_connections == 0 {
            problems.push((vec!["max_connections"], "must be at least 1".to_string()));
        }
        if self.request_timeout.0.is_zero() {
            problems.push((
                vec!["request_timeout"],
                "must be longer than 0s".to_string(),
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
    request_timeout: std::time::Duration,
    max_line_bytes: usize,
    max_body_bytes: usize,
    /// With `acknowledgements: true`, what became of the requests' events.
    acknowledged: Option<crate::telemetry::AckCounters>,
}

/// The events of a request body and its NDJSON lines over
/// `max_line_bytes` (not decoded), or why it does not parse.
#[doc(hidden)] // pub for fuzz/ (http_body)
pub fn decode(body: &[u8], max_line_bytes: usize) -> Result<(Batch, Vec<Sampled>), String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("the body is not UTF-8: {e}"))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    // One document (an object or an array of objects) ...
    match json_object(trimmed.as_bytes()) {
        Ok(event) => return Ok((vec![event], Vec::new())),
        Err(NotAnEvent::NotAnObject(Value::Array(items))) => {
            if let Some(i) = items.iter().position(|e| !e.is_object()) {
                return Err(format!("array element {i} is not a JSON object"));
            }
            return Ok((items, Vec::new()));
        }
        Err(other @ NotAnEvent::NotAnObject(_)) => return Err(other.describe("the body")),
        Err(NotAnEvent::Invalid(_)) => {}
    }
    // ... or NDJSON, one object per line.
    let (mut events, mut too_long) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > max_line_bytes {
            let (len, what) = (line.len() as u64, format!("line {}", n + 1));
            too_long.push(super::decode::too_long(
                line.as_bytes(),
                len,
                max_line_bytes,
                &what,
            ));
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
    Ok((events, too_long))
}

fn too_large(max: usize) -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        [(header::CONNECTION, "close")],
        format!("the request body is over max_body_bytes ({max})\n"),
    )
        .into_response()
}

async fn accept(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(clock): ConnectInfo<ConnClock>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    // A declared length over the limit is refused before any of the body
    // is read, not after request_timeout.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > shared.max_body_bytes as u64) {
        clock.body_read();
        return too_large(shared.max_body_bytes);
    }
    // The body by the request's deadline; what follows is not timed.
    let body = tokio::time::timeout_at(clock.body_due(), Bytes::from_request(request, &())).await;
    clock.body_read();
    let body = match body {
        Ok(Ok(body)) => body,
        // Too large (413), or the client went away. The rest of the body is
        // not read, so the connection cannot carry another request: say so.
        Ok(Err(refused)) => {
            let mut response = refused.into_response();
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return response;
        }
        Err(_) => {
            shared.ctx.metrics.errors("timeout", 1);
            tracing::debug!(component = %shared.ctx.name, "http_server: a request body did not arrive within request_timeout; answered 408");
            return (
                StatusCode::REQUEST_TIMEOUT,
                [(header::CONNECTION, "close")],
                format!(
                    "the request body did not arrive within request_timeout ({})\n",
                    humantime::format_duration(shared.request_timeout)
                ),
            )
                .into_response();
        }
    };
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
    let (events, too_long) = match decode(&body, shared.max_line_bytes) {
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
    shared
        .ctx
        .metrics
        .events_in
        .inc_by((n + too_long.len()) as u64);
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
    // Routed lines over the limit carry the request's acknowledgement too.
    shared.ctx.errors.handle_sampled(too_long, &acks).await;
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
        let listener = LimitedListener::new(
            listener,
            self.config.max_connections,
            self.config.request_timeout.0,
            IDLE_TIMEOUT,
            ctx.metrics.clone(),
        );
        tracing::info!(component = %ctx.name, "http_server listening on http://{}{}", self.config.address, self.config.path);
        let shutdown = ctx.shutdown.clone();
        let acknowledged = self
            .config
            .acknowledgements
            .then(|| ctx.metrics.acknowledged());
        let shared = Arc::new(Shared {
            ctx,
            token: self.config.auth_token.clone(),
            request_timeout: self.config.request_timeout.0,
            max_line_bytes: self.config.max_line_bytes,
            max_body_bytes: self.config.max_body_bytes,
            acknowledged,
        });
        let app = Router::new()
            .route(&self.config.path, post(accept))
            .layer(DefaultBodyLimit::max(self.config.max_body_bytes))
            .with_state(shared);
        // On shutdown the listener closes; requests in flight are answered.
        let app = app.into_make_service_with_connect_info::<ConnClock>();
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
        let decode = |body: &[u8]| {
            decode(body, 1 << 20).map(|(events, too_long)| {
                assert!(too_long.is_empty());
                events
            })
        };
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

    #[test]
    fn ndjson_lines_over_the_limit_are_set_apart_undecoded_and_the_rest_accepted() {
        let long = format!("{{\"a\":\"{}\"}}", "x".repeat(2000));
        let body = format!(
            "{{\"i\":1}}\n{long}\r\n{{\"i\":2}}\nnot json but too long: {}\n",
            "y".repeat(100)
        );
        let (events, too_long) = decode(body.as_bytes(), 100).unwrap();
        assert_eq!(events, vec![crate::ev!({"i": 1}), crate::ev!({"i": 2})]);
        let got: Vec<_> = too_long
            .iter()
            .map(|s| (s.failed.message.as_str(), s.sample.as_ref().unwrap().len()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("line 2 is 2008 bytes, over max_line_bytes (100)", 1024),
                ("line 4 is 123 bytes, over max_line_bytes (100)", 123),
            ]
        );
        assert_eq!(too_long[0].sample.as_deref(), Some(&long[..1024]));
        // A line within the limit that does not parse still refuses the body.
        assert!(decode(b"{\"i\":1}\nnope\n", 100).is_err());
    }
}
