//! What the `http` sink and the `http` transform share as HTTP clients:
//! the TLS stack, configured headers, which answers are worth retrying and
//! how much of an error answer goes into a message.

use crate::config::duration::ConfigDuration;
use indexmap::IndexMap;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

/// Characters of an error answer's body quoted in the failure message:
/// enough to read the service's reason, not a whole error page.
const SNIPPET_CHARS: usize = 200;

/// `request_timeout` when unset: a service that accepts and never answers
/// fails the call instead of stalling the stage until shutdown.
pub fn default_request_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}

/// `connect_timeout` when unset.
pub fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}

/// A client whose every request is limited: `request` from connecting
/// until the whole response has arrived, `connect` for the connection.
pub fn client(request: Duration, connect: Duration) -> reqwest::Result<reqwest::Client> {
    install_tls();
    reqwest::Client::builder()
        .timeout(request)
        .connect_timeout(connect)
        .build()
}

/// The `error_type` of a request that failed without an answer: `timeout`
/// when a limit expired (the service may be overloaded: an adaptive limit
/// backs off), else `io`.
pub fn request_error_type(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() { "timeout" } else { "io" }
}

/// What went wrong with a request that got no (whole) answer, for the
/// failure message: reqwest's own text hides a timeout in its sources.
pub fn request_failure(what: &str, e: &reqwest::Error, request_timeout: Duration) -> String {
    if e.is_timeout() {
        format!(
            "{what}: timed out (no whole answer within request_timeout {})",
            humantime::format_duration(request_timeout)
        )
    } else {
        let mut message = format!("{what}: {e}");
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        message
    }
}

/// Problems with the two timeouts, as (key, message).
pub fn check_timeouts(
    request: &ConfigDuration,
    connect: &ConfigDuration,
) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if request.0.is_zero() {
        problems.push(("request_timeout", "must be longer than 0s".to_string()));
    }
    if connect.0.is_zero() {
        problems.push(("connect_timeout", "must be longer than 0s".to_string()));
    }
    problems
}

/// Installs one TLS stack (rustls with ring) for every client in the
/// process; later calls find it installed and change nothing.
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The configured headers as a `HeaderMap`, and the names of those that
/// are not valid HTTP (in file order), for the caller to report where it
/// reports problems.
pub fn headers(configured: &IndexMap<String, String>) -> (HeaderMap, Vec<&str>) {
    let mut map = HeaderMap::new();
    let mut invalid = Vec::new();
    for (name, value) in configured {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => {
                map.insert(n, v);
            }
            _ => invalid.push(name.as_str()),
        }
    }
    (map, invalid)
}

/// Whether an unsuccessful answer may pass on a later try: 5xx (the
/// service failed), 408 (it timed out) and 429 (it is shedding load) may;
/// other 4xx say the request itself is wrong and will not.
/// Statuses by which a service says it is overloaded: an adaptive
/// concurrency limit backs off on them.
pub fn overloaded(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 503)
}

pub fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// The start of an error answer's body, for the failure message.
pub fn snippet(body: &str) -> String {
    body.chars().take(SNIPPET_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_timeouts_and_throttling_are_retried_other_refusals_not() {
        for code in [500, 502, 503, 599, 408, 429] {
            assert!(retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 413, 422, 300, 304] {
            assert!(!retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn valid_headers_are_kept_and_invalid_ones_named_in_order() {
        let configured: IndexMap<String, String> = [
            ("X-Token", "abc"),
            ("bad name", "v"),
            ("X-Ok", "1"),
            ("X-Bad-Value", "a\nb"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (map, invalid) = headers(&configured);
        assert_eq!(invalid, vec!["bad name", "X-Bad-Value"]);
        assert_eq!(map.len(), 2);
        assert_eq!(map["x-token"], "abc");
        assert_eq!(map["x-ok"], "1");
    }

    #[test]
    fn snippets_stop_at_200_characters() {
        assert_eq!(snippet("short"), "short");
        assert_eq!(snippet(&"é".repeat(300)).chars().count(), 200);
    }
}
