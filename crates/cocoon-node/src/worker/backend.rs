//! Where a worker sends inference requests: an OpenAI-compatible HTTP server (vLLM,
//! SGLang, llama.cpp server, Ollama) or, through the same trait, the embedded engine.

use crate::protocol::http::is_hop_by_hop;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};

/// A stream of answer body chunks.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, BackendError>> + Send>>;

/// One request for the model server.
#[derive(Debug, Clone)]
pub struct BackendRequest {
    /// HTTP method, normally `POST`.
    pub method: String,
    /// Path, `/v1/chat/completions` or `/v1/completions`.
    pub path: String,
    /// Headers to pass on (hop-by-hop and length headers already removed).
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// The model server's answer: head first, body streamed.
pub struct BackendResponse {
    /// HTTP status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Response headers (hop-by-hop ones removed).
    pub headers: Vec<(String, String)>,
    /// The body, chunk by chunk as it arrives.
    pub body: BodyStream,
}

impl std::fmt::Debug for BackendResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

/// Why the model server could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// Connecting or sending failed.
    #[error("model server unreachable: {0}")]
    Unreachable(String),
    /// No complete answer within the request's time.
    #[error("model server did not answer in time")]
    Timeout,
    /// The answer broke off.
    #[error("model server answer broke off: {0}")]
    Body(String),
    /// The server answered, but not with what was asked (e.g. `/v1/models` not 200).
    #[error("model server answered unexpectedly: {0}")]
    Unexpected(String),
}

/// An inference backend of a worker.
pub trait InferenceBackend: Send + Sync + 'static {
    /// Sends one request; resolves when the response head is known.
    fn send(
        &self,
        request: BackendRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<BackendResponse, BackendError>>;

    /// The served model ids; used as the health check.
    fn models(&self) -> BoxFuture<'static, Result<Vec<String>, BackendError>>;

    /// The OpenAI endpoints it serves, which the worker announces to cocoon-rs proxies
    /// (default: all; an HTTP model server answers for itself).
    fn endpoints(&self) -> crate::protocol::endpoint::Endpoints {
        crate::protocol::endpoint::Endpoints::ALL
    }

    /// What it is, for logs and errors: "the model server at URL", "the embedded engine
    /// (model NAME, FORMAT)".
    fn describe(&self) -> String;
}

/// An OpenAI-compatible server reached over plain HTTP (normally on the same machine).
#[derive(Debug, Clone)]
pub struct HttpUpstream {
    base: String,
    client: reqwest::Client,
}

impl HttpUpstream {
    /// A backend at `base`, e.g. `http://127.0.0.1:8000` (a trailing `/v1` is accepted).
    pub fn new(base: &str) -> Result<Self, BackendError> {
        let mut base = base.trim_end_matches('/').to_owned();
        if let Some(stripped) = base.strip_suffix("/v1") {
            base = stripped.to_owned();
        }
        if !base.starts_with("http://") {
            return Err(BackendError::Unexpected(format!(
                "upstream URL must start with http:// (got {base})"
            )));
        }
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(100)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| BackendError::Unreachable(e.to_string()))?;
        Ok(HttpUpstream { base, client })
    }
}

fn classify(e: reqwest::Error) -> BackendError {
    if e.is_timeout() {
        BackendError::Timeout
    } else if e.is_body() || e.is_decode() {
        BackendError::Body(e.to_string())
    } else {
        BackendError::Unreachable(error_chain(&e))
    }
}

/// An error and its causes, `outer: inner: …` (reqwest's own text is only "error sending
/// request"; the reason, e.g. "Connection refused", is in its sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

impl InferenceBackend for HttpUpstream {
    fn send(
        &self,
        request: BackendRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<BackendResponse, BackendError>> {
        let url = format!("{}{}", self.base, request.path);
        let client = self.client.clone();
        Box::pin(async move {
            let method = reqwest::Method::from_bytes(request.method.as_bytes())
                .map_err(|_| BackendError::Unexpected(format!("bad method {}", request.method)))?;
            let mut builder = client.request(method, &url).timeout(timeout);
            for (name, value) in &request.headers {
                if !is_hop_by_hop(name) {
                    builder = builder.header(name.as_str(), value.as_str());
                }
            }
            let response = builder.body(request.body).send().await.map_err(classify)?;
            let status = response.status();
            let headers = response
                .headers()
                .iter()
                .filter(|(name, _)| !is_hop_by_hop(name.as_str()))
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = response.bytes_stream().map(|r| r.map_err(classify)).boxed();
            Ok(BackendResponse {
                status: status.as_u16(),
                reason: status.canonical_reason().unwrap_or("").to_owned(),
                headers,
                body,
            })
        })
    }

    fn models(&self) -> BoxFuture<'static, Result<Vec<String>, BackendError>> {
        let url = format!("{}/v1/models", self.base);
        let client = self.client.clone();
        Box::pin(async move {
            let response = client
                .get(&url)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .map_err(classify)?;
            if !response.status().is_success() {
                return Err(BackendError::Unexpected(format!(
                    "GET /v1/models answered {}",
                    response.status()
                )));
            }
            let bytes = response.bytes().await.map_err(classify)?;
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| BackendError::Unexpected(format!("/v1/models is not JSON: {e}")))?;
            let ids = value
                .get("data")
                .and_then(|d| d.as_array())
                .map(|models| {
                    models
                        .iter()
                        .filter_map(|m| m.get("id").and_then(|id| id.as_str()).map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            Ok(ids)
        })
    }

    fn describe(&self) -> String {
        format!("the model server at {}", self.base)
    }
}
