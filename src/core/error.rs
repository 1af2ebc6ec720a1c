//! Stage errors: what a unit of work returns when it fails, and whether
//! trying again may help.

/// Why a call failed, and whether trying again may help.
#[derive(Debug, Clone)]
pub struct CallError {
    pub message: String,
    /// The `error_type` label: `http`, `io`, `decode`, `program`, ...
    pub error_type: &'static str,
    pub retryable: bool,
    /// The service said it is overloaded (HTTP 429, 503): an adaptive
    /// concurrency limit backs off.
    pub overloaded: bool,
}

/// A component's failure at run time.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
    /// A failure retrying cannot fix (e.g. an HTTP 4xx other than 408/429).
    #[error("{message}")]
    Permanent {
        message: String,
        error_type: &'static str,
    },
    /// A failure that may pass, of a given error type (e.g. an HTTP 5xx).
    #[error("{message}")]
    Transient {
        message: String,
        error_type: &'static str,
    },
    /// The service said it is overloaded (HTTP 429, 503): may pass, and an
    /// adaptive concurrency limit backs off.
    #[error("{message}")]
    Overloaded {
        message: String,
        error_type: &'static str,
    },
}

impl ComponentError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// The `error_type` label of this failure.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Io { .. } | Self::Other(_) => "io",
            Self::Permanent { error_type, .. }
            | Self::Transient { error_type, .. }
            | Self::Overloaded { error_type, .. } => error_type,
        }
    }
}
