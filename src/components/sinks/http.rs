//! `http` sink: POSTs NDJSON batches (gzip optional) — gathered up to `batch.max_events` or
//! for `batch.timeout` — to a URL. A non-2xx answer is a failure for the
//! stage controls (5xx, 408, 429 and connection errors are retried; other
//! 4xx are not); a batch that finally fails follows `on_error` event by
//! event, so a dead-letter sink catches it.

use super::{OutputCodec, encode_lines};
use crate::components::{ComponentError, Encoded, Sink, http_common};
use crate::config::duration::ConfigDuration;
use crate::core::Batch;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

fn default_max_events() -> usize {
    500
}

fn one_second() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(1))
}

/// How events are gathered into requests.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpBatchConfig {
    /// Most events in one request.
    #[serde(default = "default_max_events")]
    #[schemars(range(min = 1))]
    pub max_events: usize,
    /// Longest wait to fill a request once its first event arrived.
    #[serde(default = "one_second")]
    pub timeout: ConfigDuration,
}

impl Default for HttpBatchConfig {
    fn default() -> Self {
        Self {
            max_events: default_max_events(),
            timeout: one_second(),
        }
    }
}

/// POSTs events as NDJSON batches to an HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// The URL to POST to.
    pub url: String,
    /// Request headers, e.g. `{Authorization: "Bearer ${TOKEN}"}`.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Batching: `max_events` (500) and `timeout` (1s).
    #[serde(default)]
    pub batch: HttpBatchConfig,
    /// `gzip` compresses each request body (`Content-Encoding: gzip`).
    #[serde(default)]
    pub compression: Compression,
    /// Limit for one request, from connecting until the whole answer has arrived (default 30s);
    /// applies even without a stage `timeout`. An expired request fails with error type
    /// `timeout` and is retried like a 5xx.
    #[serde(default = "http_common::default_request_timeout")]
    pub request_timeout: ConfigDuration,
    /// Limit for opening a connection (default 5s).
    #[serde(default = "http_common::default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
}

/// Request body compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

impl HttpSinkConfig {
    pub fn check(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut problems = Vec::new();
        if reqwest::Url::parse(&self.url).is_err() {
            problems.push((vec!["url"], format!("'{}' is not a URL", self.url)));
        }
        for name in http_common::headers(&self.headers).1 {
            problems.push((vec!["headers"], format!("invalid header '{name}'")));
        }
        for (key, message) in
            http_common::check_timeouts(&self.request_timeout, &self.connect_timeout)
        {
            problems.push((vec![key], message));
        }
        if self.batch.max_events == 0 {
            problems.push((
                vec!["batch", "max_events"],
                "batch.max_events must be at least 1".into(),
            ));
        }
        problems
    }

    pub fn build(&self) -> HttpSink {
        // Invalid headers were reported by `check` before anything is built.
        let (headers, _) = http_common::headers(&self.headers);
        let client = http_common::client(self.request_timeout.0, self.connect_timeout.0)
            .unwrap_or_else(|e| {
                // Only a TLS backend that cannot start fails here; requests
                // then fail (and are counted) rather than the process.
                tracing::error!("cannot configure the HTTP client ({e}); using the default one");
                reqwest::Client::new()
            });
        HttpSink {
            client,
            url: self.url.clone(),
            headers,
            batching: (self.batch.max_events, self.batch.timeout.0),
            compression: self.compression,
            request_timeout: self.request_timeout.0,
        }
    }
}

pub struct HttpSink {
    client: reqwest::Client,
    url: String,
    headers: reqwest::header::HeaderMap,
    batching: (usize, Duration),
    compression: Compression,
    request_timeout: Duration,
}

#[async_trait::async_trait]
impl Sink for HttpSink {
    fn batching(&self) -> Option<(usize, Duration)> {
        Some(self.batching)
    }

    fn concurrent_writes(&self) -> bool {
        true
    }

    /// Compresses here, on the stage's workers, so retries reuse the body.
    fn encode(&self, batch: Batch) -> Encoded {
        let mut encoded = encode_lines(batch, OutputCodec::Json);
        if self.compression == Compression::Gzip {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(encoded.bytes.len() / 4),
                flate2::Compression::fast(),
            );
            // Writing into a Vec cannot fail.
            let _ = std::io::Write::write_all(&mut gz, &encoded.bytes);
            encoded.bytes = gz.finish().unwrap_or_default();
        }
        encoded
    }

    async fn write(&self, encoded: &Encoded) -> Result<(), ComponentError> {
        let mut request = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson");
        if self.compression == Compression::Gzip {
            request = request.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        let response = request
            .body(encoded.bytes.clone())
            .send()
            .await
            .map_err(|e| {
                let message = http_common::request_failure(
                    &format!("POST {}", self.url),
                    &e,
                    self.request_timeout,
                );
                match http_common::request_error_type(&e) {
                    "timeout" => ComponentError::Overloaded {
                        message,
                        error_type: "timeout",
                    },
                    error_type => ComponentError::Transient {
                        message,
                        error_type,
                    },
                }
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = http_common::snippet(&response.text().await.unwrap_or_default());
        let message = format!("POST {} returned {status}: {body}", self.url);
        if http_common::overloaded(status) {
            Err(ComponentError::Overloaded {
                message,
                error_type: "http",
            })
        } else if http_common::retryable(status) {
            Err(ComponentError::Transient {
                message,
                error_type: "http",
            })
        } else {
            Err(ComponentError::Permanent {
                message,
                error_type: "http",
            })
        }
    }

    async fn flush(&self) -> Result<(), ComponentError> {
        Ok(())
    }
}
