//! `http`: calls an HTTP service once per event — URL built from a
//! template with `{{ jq }}` parts, optional JSON body — and puts the JSON
//! response into the event (`target`) or makes it the event. Meant to run
//! with `workers` (concurrent calls) and the stage controls (timeout,
//! retry, circuit breaker, rate limit).

use crate::components::{AsyncTransform, CallError, http_common};
use crate::config::duration::ConfigDuration;
use crate::core::{Event, Value};
use crate::expr::Program;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// HTTP methods the transform can use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

fn one_mib() -> usize {
    1024 * 1024
}

/// Calls an HTTP service per event and adds the JSON response to it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// URL template: `{{ jq }}` parts are replaced per event (strings as is, other values as
    /// JSON), percent-encoded, e.g. `http://127.0.0.1:9000/customers/{{ .customer_id }}`.
    pub url: String,
    /// `GET` (default), `POST`, `PUT`, `PATCH` or `DELETE`.
    #[serde(default)]
    pub method: HttpMethod,
    /// jq program whose first output is the JSON request body. Default: the event itself for
    /// POST, PUT and PATCH; no body for GET and DELETE.
    #[serde(default)]
    pub body: Option<String>,
    /// Request headers, e.g. `{Authorization: "Bearer ${TOKEN}"}`.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Field that receives the JSON response; absent: the response (an object) replaces the event.
    #[serde(default)]
    pub target: Option<String>,
    /// Largest response body accepted, in bytes (default 1 MiB); larger responses fail.
    #[serde(default = "one_mib")]
    #[schemars(range(min = 1))]
    pub max_response_bytes: usize,
    /// Limit for one request, from connecting until the whole response has arrived (default
    /// 30s); applies even without a stage `timeout`. An expired request fails with error type
    /// `timeout` and is retryable.
    #[serde(default = "http_common::default_request_timeout")]
    pub request_timeout: ConfigDuration,
    /// Limit for opening a connection (default 5s).
    #[serde(default = "http_common::default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
}

enum Piece {
    Text(String),
    Expr(Program),
}

pub struct Http {
    client: reqwest::Client,
    url: Vec<Piece>,
    method: reqwest::Method,
    body: Option<Program>,
    body_is_event: bool,
    headers: reqwest::header::HeaderMap,
    target: Option<String>,
    max_response_bytes: usize,
    request_timeout: std::time::Duration,
}

/// What validation compiles of an `http` transform: no client yet.
type Compiled = (Vec<Piece>, Option<Program>, reqwest::header::HeaderMap);

impl HttpConfig {
    /// The URL template, body program and headers, or every problem.
    fn compile(&self) -> Result<Compiled, Vec<super::ProgramProblem>> {
        let mut problems = Vec::new();
        let mut url = Vec::new();
        let mut rest = self.url.as_str();
        while let Some(start) = rest.find("{{") {
            url.push(Piece::Text(rest[..start].to_string()));
            let Some(len) = rest[start + 2..].find("}}") else {
                problems.push(super::ProgramProblem {
                    key: vec!["url".into()],
                    error: crate::expr::ProgramError {
                        span: 0..0,
                        message: "'{{' without a closing '}}'".into(),
                    },
                });
                break;
            };
            let code = rest[start + 2..start + 2 + len].trim();
            if let Some(p) = super::compile(code, &["url"], &mut problems) {
                url.push(Piece::Expr(p));
            }
            rest = &rest[start + 2 + len + 2..];
        }
        url.push(Piece::Text(rest.to_string()));
        let body = self
            .body
            .as_deref()
            .and_then(|b| super::compile(b, &["body"], &mut problems));
        let (headers, invalid) = http_common::headers(&self.headers);
        problems.extend(invalid.into_iter().map(|name| super::ProgramProblem {
            key: vec!["headers".into(), name.to_string()],
            error: crate::expr::ProgramError {
                span: 0..0,
                message: format!("invalid header '{name}'"),
            },
        }));
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok((url, body, headers))
    }

    /// Every problem validation finds; makes no client.
    pub fn check(&self) -> Vec<super::ProgramProblem> {
        self.compile().err().unwrap_or_default()
    }

    pub fn build(&self) -> Result<Http, Vec<super::ProgramProblem>> {
        let (url, body, headers) = self.compile()?;
        let client =
            http_common::client(self.request_timeout.0, self.connect_timeout.0).map_err(|e| {
                vec![super::ProgramProblem {
                    key: vec!["url".into()],
                    error: crate::expr::ProgramError {
                        span: 0..0,
                        message: format!("cannot create the HTTP client: {e}"),
                    },
                }]
            })?;
        let method = match self.method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Put => reqwest::Method::PUT,
            HttpMethod::Patch => reqwest::Method::PATCH,
            HttpMethod::Delete => reqwest::Method::DELETE,
        };
        let body_is_event = body.is_none()
            && matches!(
                self.method,
                HttpMethod::Post | HttpMethod::Put | HttpMethod::Patch
            );
        Ok(Http {
            client,
            url,
            method,
            body,
            body_is_event,
            headers,
            target: self.target.clone(),
            max_response_bytes: self.max_response_bytes,
            request_timeout: self.request_timeout.0,
        })
    }
}

fn fail(message: String, error_type: &'static str, retryable: bool) -> CallError {
    CallError {
        message,
        error_type,
        retryable,
        overloaded: false,
    }
}

fn first_output(p: &Program, event: &Event) -> Result<Value, CallError> {
    let mut out = Vec::with_capacity(1);
    p.outputs(event.clone(), &mut out)
        .map_err(|(e, _)| fail(e.to_string(), "program", false))?;
    Ok(out.into_iter().next().unwrap_or(Value::Null))
}

impl Http {
    fn url_for(&self, event: &Event) -> Result<String, CallError> {
        let mut url = String::new();
        for piece in &self.url {
            match piece {
                Piece::Text(t) => url.push_str(t),
                Piece::Expr(p) => {
                    let v = first_output(p, event)?;
                    let text = match &v {
                        Value::String(s) => s.to_string(),
                        other => other.to_string(),
                    };
                    url.extend(percent_encoding::utf8_percent_encode(
                        &text,
                        percent_encoding::NON_ALPHANUMERIC,
                    ));
                }
            }
        }
        Ok(url)
    }
}

impl Http {
    /// A request that got no (whole) answer: retryable; an expired limit is
    /// a `timeout`, which an adaptive limit takes as overload.
    fn request_failed(&self, what: &str, e: &reqwest::Error) -> CallError {
        let message = http_common::request_failure(what, e, self.request_timeout);
        CallError {
            overloaded: e.is_timeout(),
            ..fail(message, http_common::request_error_type(e), true)
        }
    }
}

#[async_trait::async_trait]
impl AsyncTransform for Http {
    async fn call(&self, event: &Event) -> Result<Event, CallError> {
        let url = self.url_for(event)?;
        let mut request = self
            .client
            .request(self.method.clone(), &url)
            .headers(self.headers.clone());
        let body = match &self.body {
            Some(p) => Some(first_output(p, event)?),
            None if self.body_is_event => Some(event.clone()),
            None => None,
        };
        if let Some(body) = body {
            let bytes =
                serde_json::to_vec(&body).map_err(|e| fail(e.to_string(), "encode", false))?;
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| self.request_failed(&format!("{} {url}", self.method), &e))?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.request_failed(&format!("reading the response of {url}"), &e))?
        {
            if bytes.len() + chunk.len() > self.max_response_bytes {
                return Err(fail(
                    format!(
                        "response of {url} exceeds max_response_bytes ({})",
                        self.max_response_bytes
                    ),
                    "http",
                    false,
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let snippet = http_common::snippet(&String::from_utf8_lossy(&bytes));
            return Err(CallError {
                overloaded: http_common::overloaded(status),
                ..fail(
                    format!("{} {url} returned {status}: {snippet}", self.method),
                    "http",
                    http_common::retryable(status),
                )
            });
        }
        let response: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            crate::core::from_json(&bytes).map_err(|e| {
                fail(
                    format!("response of {url} is not JSON: {e}"),
                    "decode",
                    false,
                )
            })?
        };
        match (&self.target, response) {
            (Some(field), response) => {
                let mut event = event.clone();
                if let Some(m) = event.as_object_mut() {
                    m.insert(field.as_str().into(), response);
                }
                Ok(event)
            }
            (None, response @ Value::Object(_)) => Ok(response),
            (None, other) => Err(fail(
                format!(
                    "response of {url} is {} (not an object); set `target` to keep it in a field",
                    crate::expr::value::type_name(&other)
                ),
                "decode",
                false,
            )),
        }
    }
}
