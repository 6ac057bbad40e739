//! Error types of the engine: load-time failures ([`EngineError`]) and request-level
//! failures rendered as OpenAI error JSON ([`ApiError`]).

use std::path::PathBuf;

/// Errors raised while loading a model or running the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory that failed.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The model directory or file is malformed (missing file, bad config, …).
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// The model architecture is not one this engine implements.
    #[error("unsupported model architecture `{0}` (supported: qwen3, llama)")]
    UnsupportedArchitecture(String),
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// The tokenizer could not be loaded or failed to encode/decode.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// The chat template could not be compiled or rendered.
    #[error("chat template error: {0}")]
    Template(String),
    /// A Hugging Face model id could not be downloaded.
    #[error(
        "cannot download model `{repo}` from Hugging Face ({reason}); if this machine is offline or \
         cannot reach huggingface.co, download the model elsewhere and pass its local directory or \
         GGUF file with --model PATH"
    )]
    Download {
        /// The Hugging Face repository id.
        repo: String,
        /// Why the download failed.
        reason: String,
    },
    /// The engine's worker threads are gone.
    #[error("inference engine is shut down")]
    ShutDown,
}

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Convenience alias for results with [`EngineError`].
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// A request-level error, answered as OpenAI error JSON
/// `{"error":{"message","type","param","code"}}` with an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {kind}: {message}")]
pub struct ApiError {
    /// HTTP status code (400, 404, 429, 500, …).
    pub status: u16,
    /// Human-readable message.
    pub message: String,
    /// OpenAI error `type` (`invalid_request_error`, `server_error`, …).
    pub kind: &'static str,
    /// Optional OpenAI error `code` (`model_not_found`, …).
    pub code: Option<&'static str>,
    /// Optional name of the offending request parameter.
    pub param: Option<String>,
}

impl ApiError {
    /// A 400 `invalid_request_error`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            code: None,
            param: None,
        }
    }

    /// A 400 `invalid_request_error` naming the offending parameter.
    pub fn bad_param(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.to_string()),
            code: Some("invalid_value"),
            ..Self::bad_request(message)
        }
    }

    /// A 404 for an unknown model name.
    pub fn model_not_found(model: &str) -> Self {
        Self {
            status: 404,
            message: format!("The model `{model}` does not exist."),
            kind: "invalid_request_error",
            code: Some("model_not_found"),
            param: Some("model".to_string()),
        }
    }

    /// A 404 for an unknown path.
    pub fn not_found(path: &str) -> Self {
        Self {
            status: 404,
            message: format!("Unknown path `{path}`."),
            kind: "invalid_request_error",
            code: Some("unknown_url"),
            param: None,
        }
    }

    /// A 400 for an OpenAI endpoint the loaded model cannot serve (audio with a text model).
    pub fn unsupported_endpoint(path: &str, model: &str) -> Self {
        Self {
            status: 400,
            message: format!(
                "`{path}` is not served by the embedded engine's model {model} (a text \
                 generation model); serve such a model through an upstream server"
            ),
            kind: "invalid_request_error",
            code: Some("unsupported_endpoint"),
            param: None,
        }
    }

    /// A 429 when the request queue is full.
    pub fn overloaded() -> Self {
        Self {
            status: 429,
            message: "The engine is at capacity; retry later.".to_string(),
            kind: "rate_limit_error",
            code: Some("too_many_requests"),
            param: None,
        }
    }

    /// A 500 `server_error`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: 500,
            message: message.into(),
            kind: "server_error",
            code: None,
            param: None,
        }
    }

    /// The OpenAI error body as a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}
