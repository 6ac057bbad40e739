//! The client role's OpenAI-compatible HTTP API (cocoon-protocol.md §3.1), on axum.
//!
//! `POST /v1/chat/completions` and `/v1/completions` (streaming or not, SSE passed through
//! chunk by chunk), `GET /v1/models`, `GET /jsonstats`, `GET /metrics`. Requests go to
//! one of several proxy sessions with failover; a request that finds no session waits a
//! little for a link to reconnect, and one refused by a proxy that is switching to new
//! root parameters (§5.7) is sent again on the next session. Unlike COCOON's client, no call can hang:
//! every request has a timer, every proxy error becomes an OpenAI-style JSON error with a
//! meaningful status, and a caller that hangs up cancels its request upstream.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cocoon_net::{ConnectionConfig, RpcConnection};
use cocoon_tl::functions::http as http_fn;
use cocoon_tl::types::http;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tracing::{info, info_span, warn, Instrument};

use crate::client::answer_check::{check_json, SseCheck};
use crate::client::keys::{ApiKeys, Key};
use crate::client::{AnswerEvent, ClientSettings, ProxySession, QueryRequest};
use crate::limits::{
    BODY_READ_TIMEOUT, ENVELOPE_RESERVE, MAX_FRAME, MAX_MODEL_NAME, MAX_REQUEST_BODY,
};
use crate::metrics::{Histogram, MetricsText};
use crate::pricing::DEFAULT_MAX_TOKENS;
use crate::protocol::endpoint::Endpoints;
use crate::protocol::http::{is_hop_by_hop, is_server_identifying};
use crate::protocol::multipart::Form;
use crate::protocol::Refusal;
use crate::transport::Dialer;
use crate::util::{lock, unix_now};

/// How long a request waits for a proxy session when none is open (within its timeout).
const SESSION_WAIT: Duration = Duration::from_secs(30);
/// How often a waiting request looks for a session.
const SESSION_POLL: Duration = Duration::from_millis(100);

/// Tunables of the HTTP API.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Largest accepted request body (HTTP 413 above); at most
    /// [`MAX_REQUEST_BODY`](crate::limits::MAX_REQUEST_BODY), so that a request always
    /// fits one frame.
    pub max_body_bytes: usize,
    /// Request timeout when the body sets none (seconds).
    pub default_timeout: f64,
    /// Largest timeout a body may ask for (seconds).
    pub max_timeout: f64,
    /// Highest worker coefficient accepted when the body sets none (1000 = 1.0×).
    pub default_max_coefficient: u32,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            max_body_bytes: MAX_REQUEST_BODY,
            default_timeout: 120.0,
            max_timeout: 3600.0,
            default_max_coefficient: 4000,
        }
    }
}

/// Counters of the client.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Inference requests received.
    pub requests_received: AtomicU64,
    /// Requests answered completely.
    pub requests_success: AtomicU64,
    /// Requests that ended in an error, by HTTP status.
    pub requests_failed: Mutex<BTreeMap<u16, u64>>,
    /// Requests cancelled because the caller went away.
    pub requests_cancelled: AtomicU64,
    /// Adjusted tokens of completed requests.
    pub adjusted_tokens: AtomicU64,
    /// Request body bytes received.
    pub bytes_received: AtomicU64,
    /// Time to the response head.
    pub head_latency: Histogram,
    /// Time to the end of the answer.
    pub total_latency: Histogram,
}

/// The client node: proxy sessions and the HTTP API over them.
pub struct ClientNode {
    settings: GatewaySettings,
    sessions: Mutex<Vec<ProxySession>>,
    next: AtomicUsize,
    stats: ClientStats,
    started: Instant,
    /// When this gateway first listed each model (unix seconds): `/v1/models`' `created`.
    models_seen: Mutex<BTreeMap<String, u64>>,
    /// The API keys requests must carry, when the gateway has a key file.
    api_keys: std::sync::OnceLock<Arc<ApiKeys>>,
}

impl std::fmt::Debug for ClientNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientNode")
            .field("sessions", &self.open_sessions().len())
            .finish()
    }
}

impl ClientNode {
    /// A client node without proxy sessions yet.
    pub fn new(mut settings: GatewaySettings) -> Arc<Self> {
        if settings.max_body_bytes > MAX_REQUEST_BODY {
            warn!(
                configured = settings.max_body_bytes,
                limit = MAX_REQUEST_BODY,
                "max_body_bytes is above what one frame can carry; using the limit"
            );
            settings.max_body_bytes = MAX_REQUEST_BODY;
        }
        Arc::new(ClientNode {
            settings,
            sessions: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            stats: ClientStats::default(),
            started: Instant::now(),
            models_seen: Mutex::default(),
            api_keys: std::sync::OnceLock::new(),
        })
    }

    /// Makes every request of [`ClientNode::router_with`]'s API carry one of `keys`
    /// (once the key file holds a key); set once, at start.
    pub fn set_api_keys(&self, keys: Arc<ApiKeys>) {
        let _ = self.api_keys.set(keys);
    }

    /// The gateway's API keys, if it has a key file.
    pub fn api_keys(&self) -> Option<&Arc<ApiKeys>> {
        self.api_keys.get()
    }

    /// Adds what a request cost (`tokens` adjusted tokens at `session`'s price) to the
    /// key it was made with.
    fn charge(&self, key: Option<&Arc<Key>>, tokens: u64, session: &ProxySession) {
        if let (Some(key), Some(keys)) = (key, self.api_keys()) {
            keys.charge(key, tokens.saturating_mul(session.price_per_token()));
        }
    }

    /// The client's counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Adds an authorized proxy session.
    pub fn add_session(&self, session: ProxySession) {
        lock(&self.sessions).push(session);
    }

    /// Sessions that are still open (closed ones are dropped).
    pub fn open_sessions(&self) -> Vec<ProxySession> {
        let mut sessions = lock(&self.sessions);
        sessions.retain(ProxySession::is_open);
        sessions.clone()
    }

    /// Keeps a session to the proxy at `endpoint`: connects, authorizes, refreshes the
    /// payment status every 10–20 s, and reconnects with backoff when it drops.
    pub fn spawn_proxy_link(
        self: &Arc<Self>,
        endpoint: String,
        dialer: Arc<dyn Dialer>,
        settings: ClientSettings,
        connection: ConnectionConfig,
    ) -> tokio::task::JoinHandle<()> {
        let node = self.clone();
        let span = info_span!("proxy_link", proxy = %endpoint);
        tokio::spawn(
            async move {
                let mut backoff = Duration::from_millis(100);
                loop {
                    let attempt = async {
                        let stream = dialer.dial(&endpoint).await.map_err(|e| e.to_string())?;
                        let conn = RpcConnection::connect(stream, &connection, &endpoint)
                            .await
                            .map_err(|e| e.to_string())?;
                        ProxySession::connect(conn, settings.clone())
                            .await
                            .map_err(|e| e.to_string())
                    };
                    match attempt.await {
                        Ok(session) => {
                            backoff = Duration::from_millis(100);
                            node.add_session(session.clone());
                            while session.is_open() {
                                let wait =
                                    Duration::from_millis(10_000 + rand::random::<u64>() % 10_000);
                                tokio::select! {
                                    _ = tokio::time::sleep(wait) => {
                                        if let Err(e) = session.refresh_payment_status().await {
                                            warn!(error = %e, "payment status refresh failed");
                                        }
                                    }
                                    _ = session.closed() => break,
                                }
                            }
                            info!("proxy session ended; reconnecting");
                        }
                        Err(e) => warn!(error = %e, "cannot connect to proxy"),
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            .instrument(span),
        )
    }

    /// The next open session (round robin), leaving out those in `skip` (by
    /// [`ProxySession::key`]).
    fn pick(&self, skip: &[usize]) -> Option<ProxySession> {
        let sessions: Vec<ProxySession> = self
            .open_sessions()
            .into_iter()
            .filter(|s| !skip.contains(&s.key()))
            .collect();
        if sessions.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        sessions.get(start % sessions.len()).cloned()
    }

    /// The router of the HTTP API as it is served: with `uploads` beside it (routes that
    /// take large bodies and stream them themselves, the Batch API, outside the request
    /// body limit), and every request checked for an API key when the gateway has keys.
    pub fn router_with(self: &Arc<Self>, uploads: Router) -> Router {
        self.router()
            .merge(uploads)
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                authorize,
            ))
    }

    /// The router of the HTTP API without the API key check (what the gateway's own
    /// callers use: batch lines carry their batch's key as a request extension).
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(inference))
            .route("/v1/completions", post(inference))
            .route("/v1/embeddings", post(inference))
            .route("/v1/audio/transcriptions", post(inference))
            .route("/v1/audio/translations", post(inference))
            .route("/v1/models", get(models))
            .route("/v1/attestation", get(attestation))
            .route("/jsonstats", get(json_stats))
            .route("/metrics", get(metrics))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(self.settings.max_body_bytes))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                request_limits,
            ))
            .with_state(self.clone())
    }

    fn failed(&self, status: StatusCode) {
        *lock(&self.stats.requests_failed)
            .entry(status.as_u16())
            .or_default() += 1;
    }
}

/// An OpenAI-style error response.
pub fn error_response(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "code": code, "param": null}});
    (status, Json(body)).into_response()
}

/// The answer to a COCOON error (code and message, from the proxy or the worker): the
/// status and OpenAI error of its [`Refusal`].
fn cocoon_error(node: &ClientNode, code: i32, message: &str) -> Response {
    let (status, kind, short) = Refusal::classify(code, message).http();
    node.failed(status);
    error_response(
        status,
        kind,
        short,
        &format!("{message} (cocoon error {code})"),
    )
}

/// The answer to a refusal of the gateway's own.
fn refused(node: &ClientNode, refusal: Refusal, detail: &str) -> Response {
    cocoon_error(node, refusal.code().code(), &refusal.message(detail))
}

/// A request prepared for the network.
struct Prepared {
    request: QueryRequest,
    stream: bool,
}

fn too_large(node: &ClientNode, len: Option<u64>) -> Box<Response> {
    node.failed(StatusCode::PAYLOAD_TOO_LARGE);
    let size = len.map_or_else(|| "larger".to_owned(), |l| format!("{l} bytes"));
    Box::new(error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        "request_too_large",
        &format!(
            "the request body is {size}; this gateway accepts at most {} bytes (max_body_bytes)",
            node.settings.max_body_bytes
        ),
    ))
}

/// Bodies announced above the limit but at most this large are read and dropped before
/// the 413, so that clients that write before they read still get the answer.
const DRAIN_BEFORE_413: u64 = 4 * MAX_FRAME as u64;

/// Largest total size of a request's header lines (HTTP 431 above).
const MAX_HEADER_BYTES: usize = 64 << 10;

/// Refuses, before anything is read, a request that announces a body above the limit (413)
/// or carries too many header bytes (431), with an OpenAI-style JSON error.
async fn request_limits(
    State(node): State<Arc<ClientNode>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        node.failed(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        return error_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "invalid_request_error",
            "headers_too_large",
            &format!(
                "the request headers are {header_bytes} bytes; at most {MAX_HEADER_BYTES} are accepted"
            ),
        );
    }
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(len) = announced {
        if len > node.settings.max_body_bytes as u64 {
            // Most clients write the whole body before they read an answer: a body of a
            // plausible size is read and dropped (within the body timeout) so that they
            // see the 413 instead of a broken pipe; an absurd one gets it at once.
            if len <= DRAIN_BEFORE_413 {
                use http_body_util::BodyExt;
                let mut body = request.into_body();
                let _ = tokio::time::timeout(BODY_READ_TIMEOUT, async {
                    while let Some(Ok(_)) = body.frame().await {}
                })
                .await;
            }
            return *too_large(&node, Some(len));
        }
    }
    next.run(request).await
}

/// A method a route does not serve: 405 with a JSON error, except OPTIONS, which gets 204
/// and the methods the API serves (as COCOON 9060ce5's client does).
async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> Response {
    if method == axum::http::Method::OPTIONS {
        return (
            StatusCode::NO_CONTENT,
            [(axum::http::header::ALLOW, "GET, POST, OPTIONS")],
        )
            .into_response();
    }
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        &format!("{method} is not allowed on {}", uri.path()),
    )
}

fn bad_request(node: &ClientNode, message: &str) -> Box<Response> {
    node.failed(StatusCode::BAD_REQUEST);
    Box::new(error_response(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_request",
        message,
    ))
}

/// A COCOON envelope field as the app sent it: a JSON value, or a form field's text.
enum Field {
    Json(Value),
    Text(String),
}

impl Field {
    fn is_null(&self) -> bool {
        matches!(self, Field::Json(Value::Null))
    }

    fn as_u64(&self) -> Option<u64> {
        match self {
            Field::Json(v) => v.as_u64(),
            Field::Text(t) => t.trim().parse().ok(),
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Field::Json(v) => v.as_f64(),
            Field::Text(t) => t.trim().parse().ok(),
        }
    }

    fn as_bool(&self) -> Option<bool> {
        match self {
            Field::Json(Value::Bool(b)) => Some(*b),
            Field::Json(_) => None,
            Field::Text(t) => match t.trim() {
                "true" | "1" => Some(true),
                "false" | "0" | "" => Some(false),
                _ => None,
            },
        }
    }
}

/// What COCOON's envelope fields ask of the network for one request.
struct Envelope {
    max_coefficient: u32,
    timeout: f64,
    enable_debug: bool,
    max_tokens: u32,
}

/// Reads the envelope fields (taken out of the body, except `max_tokens`, which stays).
fn envelope(
    node: &ClientNode,
    max_coefficient: Option<Field>,
    timeout: Option<Field>,
    enable_debug: Option<Field>,
    max_tokens: Option<Field>,
) -> Result<Envelope, Box<Response>> {
    let s = &node.settings;
    let max_coefficient = match max_coefficient.filter(|f| !f.is_null()) {
        None => s.default_max_coefficient,
        Some(v) => v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| bad_request(node, "'max_coefficient' must be a non-negative integer"))?,
    };
    let timeout = match timeout.filter(|f| !f.is_null()) {
        None => s.default_timeout,
        Some(v) => match v.as_f64() {
            Some(t) if t > 0.0 && t.is_finite() => t.min(s.max_timeout),
            _ => {
                return Err(bad_request(
                    node,
                    "'timeout' must be a positive number of seconds",
                ))
            }
        },
    };
    let enable_debug = match enable_debug.filter(|f| !f.is_null()) {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| bad_request(node, "'enable_debug' must be a boolean"))?,
    };
    let max_tokens = max_tokens
        .map(|v| v.as_u64().ok_or(()))
        .transpose()
        .map_err(|_| bad_request(node, "'max_tokens' must be a non-negative integer"))?
        .unwrap_or(DEFAULT_MAX_TOKENS);
    // The wire carries `max_tokens` as a 32-bit int.
    let max_tokens = i32::try_from(max_tokens)
        .ok()
        .and_then(|m| u32::try_from(m).ok())
        .ok_or_else(|| {
            bad_request(
                node,
                &format!(
                    "'max_tokens' is {max_tokens}; at most {} tokens can be asked for",
                    i32::MAX
                ),
            )
        })?;
    Ok(Envelope {
        max_coefficient,
        timeout,
        enable_debug,
        max_tokens,
    })
}

/// Checks the model name an app asked for.
fn model_name(node: &ClientNode, model: Option<&str>) -> Result<String, Box<Response>> {
    let model = match model {
        Some(m) if !m.is_empty() => m.to_owned(),
        _ => return Err(bad_request(node, "'model' must be a non-empty string")),
    };
    if model.len() > MAX_MODEL_NAME {
        return Err(bad_request(
            node,
            &format!(
                "'model' is {} bytes long; model names are at most {MAX_MODEL_NAME} bytes",
                model.len()
            ),
        ));
    }
    Ok(model)
}

/// The `http.request` of a prepared body: `content_type`, the app's `accept` and
/// `user-agent`, and the payload (refused when it cannot fit in a frame).
#[allow(clippy::too_many_arguments)]
fn build_request(
    node: &ClientNode,
    uri: &Uri,
    headers: &HeaderMap,
    content_type: String,
    payload: Vec<u8>,
    model: String,
    envelope: Envelope,
    encrypted_to: Option<[u8; 32]>,
) -> Result<QueryRequest, Box<Response>> {
    // Re-encoded JSON can be longer than what was received (`1e5` becomes `100000.0`).
    if payload.len() + model.len() + ENVELOPE_RESERVE > MAX_FRAME {
        return Err(too_large(node, Some(payload.len() as u64)));
    }
    let mut forwarded = vec![http::Header {
        name: "Content-Type".into(),
        value: content_type,
    }];
    for name in ["accept", "user-agent"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            forwarded.push(http::Header {
                name: name.into(),
                value: v.to_owned(),
            });
        }
    }
    Ok(QueryRequest {
        model,
        http: http_fn::Request {
            method: "POST".into(),
            url: uri.path().to_owned(),
            http_version: "HTTP/1.1".into(),
            headers: forwarded,
            payload,
        },
        max_coefficient: envelope.max_coefficient,
        max_tokens: envelope.max_tokens,
        timeout: envelope.timeout,
        enable_debug: envelope.enable_debug,
        encrypted_to,
        answer_once: None,
    })
}

/// Reads a JSON body, takes out COCOON's extension fields and builds the `http.request`.
fn prepare(
    node: &ClientNode,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Prepared, Box<Response>> {
    let mut obj: Map<String, Value> = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err(bad_request(node, "request body must be a JSON object")),
        Err(e) => {
            return Err(bad_request(
                node,
                &format!("request body is not valid JSON: {e}"),
            ))
        }
    };
    let model = model_name(node, obj.get("model").and_then(Value::as_str))?;
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| obj.get(*k))
        .cloned()
        .map(Field::Json)
        // Embeddings generate nothing: only the input is reserved for.
        .or_else(|| (uri.path() == "/v1/embeddings").then(|| Field::Json(Value::from(0))));
    let envelope = envelope(
        node,
        obj.remove("max_coefficient").map(Field::Json),
        obj.remove("timeout").map(Field::Json),
        obj.remove("enable_debug").map(Field::Json),
        max_tokens,
    )?;
    obj.remove("request_guid");
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false)
        || obj.contains_key("stream_options");
    // An end-to-end encrypted body (COCOON protocol 3) travels untouched; its key goes in
    // the query so that the proxy can hand the worker the private half.
    let encrypted_to = if obj.contains_key("is_encrypted") {
        let key = obj
            .get("receiver_public_key")
            .and_then(Value::as_str)
            .ok_or_else(|| bad_request(node, "an encrypted body needs 'receiver_public_key'"))?;
        Some(
            cocoon_e2e::keys::parse_public_key(key.as_bytes())
                .map_err(|e| bad_request(node, &format!("'receiver_public_key': {e}")))?,
        )
    } else {
        None
    };
    let payload =
        serde_json::to_vec(&Value::Object(obj)).map_err(|e| bad_request(node, &e.to_string()))?;
    let request = build_request(
        node,
        uri,
        headers,
        "application/json".into(),
        payload,
        model,
        envelope,
        encrypted_to,
    )?;
    Ok(Prepared { request, stream })
}

/// Whether `path` takes a `multipart/form-data` form (audio) rather than JSON.
fn takes_form(path: &str) -> bool {
    matches!(path, "/v1/audio/transcriptions" | "/v1/audio/translations")
}

/// Reads an audio form (cocoon-protocol-9060ce5.md §3.1): takes out COCOON's extension
/// fields, keeps the rest, and writes it back as COCOON writes forms, with its boundary.
async fn prepare_form(
    node: &ClientNode,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Prepared, Box<Response>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut form = Form::parse(content_type, body)
        .await
        .map_err(|e| bad_request(node, &format!("{}: {e}", uri.path())))?;
    let take = |form: &mut Form, name: &str| -> Result<Option<Field>, Box<Response>> {
        match form.remove(name) {
            None => Ok(None),
            Some(part) => match part.text() {
                Some(t) => Ok(Some(Field::Text(t.to_owned()))),
                None => Err(bad_request(node, &format!("'{name}' must be text"))),
            },
        }
    };
    let model = match form.text("model") {
        Some(Ok(m)) => Some(m.trim().to_owned()),
        _ => None,
    };
    let model = model_name(node, model.as_deref())?;
    if form.get("file").is_none_or(|f| f.value.is_empty()) {
        return Err(bad_request(
            node,
            "'file' is required: the audio to transcribe",
        ));
    }
    if form.get("is_encrypted").is_some() {
        return Err(bad_request(
            node,
            "encrypted audio forms are not supported; send the form in plain text",
        ));
    }
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| form.text(k))
        .map(|t| t.map(|t| Field::Text(t.to_owned())))
        .transpose()
        .map_err(|_| bad_request(node, "'max_tokens' must be text"))?;
    let max_coefficient = take(&mut form, "max_coefficient")?;
    let timeout = take(&mut form, "timeout")?;
    let enable_debug = take(&mut form, "enable_debug")?;
    let envelope = envelope(node, max_coefficient, timeout, enable_debug, max_tokens)?;
    form.remove("request_guid");
    let stream = matches!(
        form.text("stream"),
        Some(Ok(t)) if matches!(t.trim(), "true" | "1")
    );
    let payload = form.to_bytes();
    let request = build_request(
        node,
        uri,
        headers,
        form.content_type(),
        payload,
        model,
        envelope,
        None,
    )?;
    Ok(Prepared { request, stream })
}

/// Reads a request body within the size limit and [`BODY_READ_TIMEOUT`].
async fn read_body(node: &ClientNode, body: Body) -> Result<Bytes, Box<Response>> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, node.settings.max_body_bytes);
    match tokio::time::timeout(BODY_READ_TIMEOUT, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(node, None)),
        Ok(Err(e)) => {
            node.failed(StatusCode::BAD_REQUEST);
            Err(Box::new(error_response(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_body",
                &format!("cannot read the request body: {e}"),
            )))
        }
        Err(_) => {
            node.failed(StatusCode::REQUEST_TIMEOUT);
            Err(Box::new(error_response(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "body_timeout",
                &format!(
                    "the request body did not arrive within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            )))
        }
    }
}

/// Cancels a request upstream if its caller goes away before the end.
struct CancelOnDrop {
    session: ProxySession,
    request_id: [u8; 32],
    armed: bool,
    node: Arc<ClientNode>,
}

impl CancelOnDrop {
    /// The request ended on its own: nothing to cancel.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.node
                .stats
                .requests_cancelled
                .fetch_add(1, Ordering::Relaxed);
            let session = self.session.clone();
            let id = self.request_id;
            tokio::spawn(async move { session.cancel(id).await });
        }
    }
}

/// Checks a request's API key ([`ApiKeys::check`]) and hands the key to the handler as a
/// request extension.
async fn authorize(
    State(node): State<Arc<ClientNode>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(keys) = node.api_keys() {
        match keys.check(request.headers()) {
            Ok(Some(key)) => {
                request.extensions_mut().insert(key);
            }
            Ok(None) => {}
            Err(denied) => {
                let response = denied.response();
                node.failed(response.status());
                return response;
            }
        }
    }
    next.run(request).await
}

/// Asks the network to answer a request at most once, under this request id (see
/// [`QueryRequest::answer_once`]). Set by the gateway's own callers (batch lines) as a
/// request extension; an HTTP client cannot set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerOnce(pub [u8; 32]);

async fn inference(
    State(node): State<Arc<ClientNode>>,
    once: Option<axum::Extension<AnswerOnce>>,
    key: Option<axum::Extension<Arc<Key>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = key.map(|axum::Extension(k)| k);
    if let Some(k) = &key {
        if let Err(denied) = k.usable() {
            let response = denied.response();
            node.failed(response.status());
            return response;
        }
    }
    let body = match read_body(&node, body).await {
        Ok(b) => b,
        Err(response) => return *response,
    };
    let started = Instant::now();
    let client_start = unix_now();
    node.stats.requests_received.fetch_add(1, Ordering::Relaxed);
    node.stats
        .bytes_received
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let prepared = if takes_form(uri.path()) {
        prepare_form(&node, &uri, &headers, body.clone()).await
    } else {
        prepare(&node, &uri, &headers, &body)
    };
    let mut prepared = match prepared {
        Ok(p) => p,
        Err(response) => return *response,
    };
    prepared.request.answer_once = once.map(|axum::Extension(AnswerOnce(id))| id);
    let span =
        info_span!("http_request", model = %prepared.request.model, stream = prepared.stream);
    async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(prepared.request.timeout);
        // A request that finds no proxy session waits for one (a link reconnecting) this
        // long at most.
        let session_wait = deadline.min(tokio::time::Instant::now() + SESSION_WAIT);
        let mut request = prepared.request.clone();
        // Sessions that could not take the request or whose proxy refused it while
        // rotating its contracts (§5.7); a reconnected link is a new session.
        let mut skip: Vec<usize> = Vec::new();
        // The last rotation refusal: nothing ran, so the request is sent again on the
        // next session, until the deadline.
        let mut rotating: Option<String> = None;
        let mut resend = false;
        let (mut guard, mut rx, first) = loop {
            let Some(session) = node.pick(&skip) else {
                let limit = if rotating.is_some() { deadline } else { session_wait };
                let now = tokio::time::Instant::now();
                if now >= limit {
                    if let Some(message) = rotating {
                        return cocoon_error(&node, Refusal::Rotating.code().code(), &message);
                    }
                    node.failed(StatusCode::SERVICE_UNAVAILABLE);
                    return error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "api_error",
                        "no_proxy",
                        "no proxy connection is ready",
                    );
                }
                tokio::time::sleep(SESSION_POLL.min(limit - now)).await;
                resend = true;
                continue;
            };
            if resend {
                // Whatever time is left of the caller's timeout.
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                request.timeout = left.as_secs_f64().max(0.001);
            }
            let (request_id, mut rx) = match session.run_query(request.clone()).await {
                Ok(sent) => sent,
                Err(e) => {
                    warn!(error = %e, "proxy refused the request; trying another");
                    skip.push(session.key());
                    continue;
                }
            };
            let mut guard = CancelOnDrop {
                session: session.clone(),
                request_id,
                armed: true,
                node: node.clone(),
            };
            let first = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) => {
                    guard.disarm();
                    return refused(&node, Refusal::Unavailable, "the connection to the proxy was lost");
                }
                Err(_) => return refused(&node, Refusal::Timeout, "the request timed out before the answer started"),
            };
            match first {
                AnswerEvent::Error { code, message, .. }
                    if Refusal::classify(code, &message) == Refusal::Rotating =>
                {
                    guard.disarm();
                    info!(proxy = %session.proxy_params().proxy_sc_address, "the proxy is switching to new root parameters; sending the request again on a new connection");
                    skip.push(session.key());
                    rotating = Some(message);
                    resend = true;
                }
                first => break (guard, rx, first),
            }
        };
        let head = match first {
            AnswerEvent::Head(head) => head,
            AnswerEvent::Error { code, message, .. } => {
                guard.disarm();
                return cocoon_error(&node, code, &message);
            }
            AnswerEvent::Chunk(_) | AnswerEvent::Done(_) => {
                guard.disarm();
                return refused(&node, Refusal::Failed, "the answer arrived without a head");
            }
        };
        node.stats.head_latency.observe(started.elapsed().as_secs_f64());
        let status = StatusCode::from_u16(u16::try_from(head.status_code).unwrap_or(502)).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut builder = Response::builder().status(status);
        let mut is_sse = false;
        let mut content_type = None;
        for h in &head.headers {
            if is_hop_by_hop(&h.name) || is_server_identifying(&h.name) {
                continue;
            }
            if h.name.eq_ignore_ascii_case("content-type") {
                is_sse = h.value.to_ascii_lowercase().starts_with("text/event-stream");
                content_type = Some(h.value.clone());
            }
            if let (Ok(name), Ok(value)) = (HeaderName::try_from(h.name.as_str()), HeaderValue::try_from(h.value.as_str())) {
                builder = builder.header(name, value);
            }
        }
        builder = builder.header("X-Cocoon-Client-Start", format!("{client_start:.6}"));

        if is_sse {
            // Stream: forward every event as it completes, checked; end with the proxy's
            // verdict, or with an error event if the model server sends garbage.
            let (tx, body_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
            let first_bytes = head.payload;
            let node2 = node.clone();
            tokio::spawn(async move {
                let mut check = SseCheck::new();
                let garbage = |node: &ClientNode, error: crate::client::answer_check::Garbage| {
                    warn!(%error, "the answer stream is not a valid event stream; ending it with an error");
                    node.failed(StatusCode::BAD_GATEWAY);
                    let event = json!({"error": {"message": error.to_string(), "type": "api_error", "code": "bad_upstream_answer"}});
                    Ok(Bytes::from(format!("data: {event}\n\n")))
                };
                let mut pending = Some(first_bytes);
                loop {
                    let event = match pending.take() {
                        Some(first) => Ok(Some(AnswerEvent::Chunk(first))),
                        None => tokio::select! {
                            e = tokio::time::timeout_at(deadline, rx.recv()) => e,
                            _ = tx.closed() => return,
                        },
                    };
                    match event {
                        Ok(Some(AnswerEvent::Chunk(c))) => {
                            match check.push(&c) {
                                Ok(events) if events.is_empty() => {}
                                Ok(events) => {
                                    if tx.send(Ok(Bytes::from(events))).await.is_err() {
                                        return; // caller gone: the guard cancels upstream
                                    }
                                }
                                Err(error) => {
                                    // The guard cancels the rest upstream.
                                    let _ = tx.send(garbage(&node2, error)).await;
                                    return;
                                }
                            }
                        }
                        Ok(Some(AnswerEvent::Done(info))) => {
                            guard.disarm();
                            node2.charge(key.as_ref(), info.tokens.total(), &guard.session);
                            match check.finish() {
                                Ok(rest) if rest.is_empty() => {}
                                Ok(rest) => {
                                    let _ = tx.send(Ok(Bytes::from(rest))).await;
                                }
                                Err(error) => {
                                    let _ = tx.send(garbage(&node2, error)).await;
                                    return;
                                }
                            }
                            node2.stats.requests_success.fetch_add(1, Ordering::Relaxed);
                            node2.stats.adjusted_tokens.fetch_add(info.tokens.total(), Ordering::Relaxed);
                            node2.stats.total_latency.observe(started.elapsed().as_secs_f64());
                            return;
                        }
                        Ok(Some(AnswerEvent::Error { code, message, .. })) => {
                            guard.disarm();
                            let (status, kind, short) = Refusal::classify(code, &message).http();
                            node2.failed(status);
                            let event = json!({"error": {"message": format!("{message} (cocoon error {code})"), "type": kind, "code": short}});
                            let _ = tx.send(Ok(Bytes::from(format!("data: {event}\n\n")))).await;
                            return;
                        }
                        Ok(Some(AnswerEvent::Head(_))) => {}
                        Ok(None) => {
                            guard.disarm();
                            node2.failed(StatusCode::SERVICE_UNAVAILABLE);
                            let event = json!({"error": {"message": "the connection to the proxy was lost in the middle of the answer", "type": "api_error", "code": "unavailable"}});
                            let _ = tx.send(Ok(Bytes::from(format!("data: {event}\n\n")))).await;
                            return;
                        }
                        Err(_) => {
                            // Timed out mid-stream: say so in-band and cancel upstream.
                            node2.failed(StatusCode::GATEWAY_TIMEOUT);
                            let event = json!({"error": {"message": "request timed out", "type": "timeout_error", "code": "timeout"}});
                            let _ = tx.send(Ok(Bytes::from(format!("data: {event}\n\n")))).await;
                            return;
                        }
                    }
                }
            });
            let stream = futures::stream::unfold(body_rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
            return builder
                .body(Body::from_stream(stream.boxed()))
                .unwrap_or_else(|_| error_response(StatusCode::BAD_GATEWAY, "api_error", "bad_head", "invalid answer head"));
        }

        // JSON: collect the whole answer, check it, then answer at once.
        let mut body = head.payload;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(AnswerEvent::Chunk(c))) => body.extend_from_slice(&c),
                Ok(Some(AnswerEvent::Done(info))) => {
                    guard.disarm();
                    node.charge(key.as_ref(), info.tokens.total(), &guard.session);
                    if let Err(error) = check_json(status.as_u16(), content_type.as_deref(), &body) {
                        warn!(%error, "the answer is not valid JSON; answering 502");
                        node.failed(StatusCode::BAD_GATEWAY);
                        return error_response(StatusCode::BAD_GATEWAY, "api_error", "bad_upstream_answer", &error.to_string());
                    }
                    node.stats.requests_success.fetch_add(1, Ordering::Relaxed);
                    node.stats.adjusted_tokens.fetch_add(info.tokens.total(), Ordering::Relaxed);
                    node.stats.total_latency.observe(started.elapsed().as_secs_f64());
                    builder = builder.header("X-Cocoon-Client-End", format!("{:.6}", unix_now()));
                    return builder
                        .header(header::CONTENT_LENGTH, body.len())
                        .body(Body::from(body))
                        .unwrap_or_else(|_| error_response(StatusCode::BAD_GATEWAY, "api_error", "bad_head", "invalid answer head"));
                }
                Ok(Some(AnswerEvent::Error { code, message, .. })) => {
                    guard.disarm();
                    return cocoon_error(&node, code, &message);
                }
                Ok(Some(AnswerEvent::Head(_))) => {}
                Ok(None) => {
                    guard.disarm();
                    return refused(&node, Refusal::Unavailable, "the connection to the proxy was lost");
                }
                Err(_) => return refused(&node, Refusal::Timeout, "the request timed out"),
            }
        }
    }
    .instrument(span)
    .await
}

async fn models(State(node): State<Arc<ClientNode>>) -> Response {
    let mut merged: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    // What each model serves, from cocoon-rs proxies (COCOON's do not say).
    let mut endpoints: BTreeMap<String, Endpoints> = BTreeMap::new();
    let sessions = node.open_sessions();
    if sessions.is_empty() {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "no_proxy",
            "no proxy connection is ready",
        );
    }
    for session in sessions {
        match session.worker_types().await {
            Ok(types) => {
                for t in types.types {
                    let entry = merged.entry(t.name).or_default();
                    for w in t.workers {
                        entry.push(json!({"coefficient": w.coefficient, "running_requests": w.active_requests, "max_running_requests": w.max_active_requests}));
                    }
                }
            }
            Err(e) => warn!(error = %e, "worker types query failed"),
        }
        match session.endpoints_of_models().await {
            Ok(Some(answer)) => {
                for m in answer.models {
                    let set = endpoints.entry(m.model).or_insert(Endpoints::of(&[]));
                    *set = set.union(Endpoints::from_announcement(&m.endpoints));
                }
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "endpoints query failed"),
        }
    }
    let data: Vec<Value> = merged
        .into_iter()
        .map(|(id, workers)| {
            let created = *lock(&node.models_seen).entry(id.clone()).or_insert_with(|| unix_now() as u64);
            let mut model = json!({"id": id, "object": "model", "created": created, "owned_by": "cocoon", "workers": workers});
            if let Some(set) = endpoints.get(&id) {
                model["endpoints"] = json!(set.paths());
                model["features"] = json!(set.features());
            }
            model
        })
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/attestation?nonce=HEX`: every proxy session's evidence and its serving
/// workers', fetched now, each signature checked here ([`crate::protocol::evidence`]).
async fn attestation(
    State(node): State<Arc<ClientNode>>,
    axum::extract::Query(query): axum::extract::Query<BTreeMap<String, String>>,
) -> Response {
    use crate::protocol::evidence::{self, MAX_NONCE};
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let nonce = match query.get("nonce").map(hex::decode) {
        Some(Ok(n)) if (1..=MAX_NONCE).contains(&n.len()) => n,
        _ => {
            return *bad_request(
                &node,
                &format!("give ?nonce= as 1 to {MAX_NONCE} bytes in hex (a fresh random value)"),
            )
        }
    };
    let sessions = node.open_sessions();
    if sessions.is_empty() {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "no_proxy",
            "no proxy connection is ready",
        );
    }
    let mut proxies = Vec::new();
    for session in sessions {
        let proxy_key = session.proxy_params().proxy_public_key;
        let mut entry = json!({
            "proxy_public_key": hex::encode(proxy_key),
            "proxy_sc_address": session.proxy_params().proxy_sc_address,
            "evidence": [],
        });
        match session.attestation(&nonce).await {
            Ok(Some(answer)) => {
                let items: Vec<Value> = answer
                    .evidence
                    .iter()
                    .map(|e| {
                        let mut checked = evidence::check(e, &nonce);
                        if e.role == "proxy" && checked.as_ref().is_ok_and(|k| *k != proxy_key) {
                            checked = Err(evidence::EvidenceError::KeyMismatch);
                        }
                        let cert = cocoon_attest::cert::parse_certificate(&e.certificate).ok();
                        let tee = match &cert {
                            Some(c) => match (&c.quote, &c.sev) {
                                (Some(q), _) if cocoon_attest::tee::parse_fake_quote(q).is_some() => "fake-tdx",
                                (Some(_), _) => "tdx",
                                (None, Some(sev)) if sev.is_fake() => "fake-sev-snp",
                                (None, Some(_)) => "sev-snp",
                                (None, None) => "none",
                            },
                            None => "unknown",
                        };
                        let verified = if e.role == "proxy" {
                            json!({"by": "client", "at": session.connected_at(),
                                   "what": "this gateway's RA-TLS session with the proxy, under its proxy_policy"})
                        } else {
                            json!({"by": "proxy", "policy": e.verified_policy, "at": e.verified_at,
                                   "public_key": hex::encode(e.verified_key),
                                   "image_hash": hex::encode(e.verified_image_hash)})
                        };
                        json!({
                            "role": e.role,
                            "model": e.model,
                            "public_key": cert.as_ref().map(|c| hex::encode(c.public_key)),
                            "tee": tee,
                            "certificate": b64(&e.certificate),
                            "signature": b64(&e.signature),
                            "valid": checked.is_ok(),
                            "error": checked.err().map(|err| err.to_string()),
                            "verified": verified,
                        })
                    })
                    .collect();
                entry["evidence"] = Value::Array(items);
            }
            Ok(None) => {
                entry["error"] =
                    json!("an official COCOON proxy: it serves no attestation evidence to apps");
            }
            Err(e) => entry["error"] = json!(e.to_string()),
        }
        proxies.push(entry);
    }
    Json(json!({
        "object": "cocoon.attestation",
        "nonce": hex::encode(&nonce),
        "signed_message": "\"cocoon-rs attestation v1\\0\" ++ nonce ++ SHA-256(certificate DER), Ed25519 by the certificate's key",
        "proxies": proxies,
    }))
    .into_response()
}

async fn json_stats(State(node): State<Arc<ClientNode>>) -> Response {
    let s = &node.stats;
    let proxies: Vec<Value> = node
        .open_sessions()
        .iter()
        .map(|p| {
            let pay = p.payments();
            json!({
                "proxy_sc_address": p.proxy_params().proxy_sc_address,
                "proxy_public_key": hex::encode(p.proxy_params().proxy_public_key),
                "protocol": p.proto().number(),
                "requests_sent": p.requests_sent(),
                "tokens_used_proxy_committed_to_db": pay.db_tokens,
                "tokens_used_proxy_max": pay.max_tokens,
                "tokens_billed": pay.tokens_billed,
            })
        })
        .collect();
    Json(json!({
        "status": {"enabled": true, "uptime_seconds": node.started.elapsed().as_secs()},
        "stats": {
            "queries": s.requests_received.load(Ordering::Relaxed),
            "success": s.requests_success.load(Ordering::Relaxed),
            "failed": lock(&s.requests_failed).values().sum::<u64>(),
            "cancelled": s.requests_cancelled.load(Ordering::Relaxed),
            "adjusted_tokens": s.adjusted_tokens.load(Ordering::Relaxed),
            "bytes_received": s.bytes_received.load(Ordering::Relaxed),
        },
        "proxies": proxies,
    }))
    .into_response()
}

async fn metrics(State(node): State<Arc<ClientNode>>) -> Response {
    let s = &node.stats;
    let mut m = MetricsText::new();
    m.counter(
        "cocoon_client_requests_total",
        "Inference requests received.",
        &[(&[], s.requests_received.load(Ordering::Relaxed))],
    );
    m.counter(
        "cocoon_client_requests_success_total",
        "Requests answered completely.",
        &[(&[], s.requests_success.load(Ordering::Relaxed))],
    );
    let failed: Vec<(String, u64)> = lock(&s.requests_failed)
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    let failed_values: Vec<([(&str, &str); 1], u64)> = failed
        .iter()
        .map(|(k, v)| ([("status", k.as_str())], *v))
        .collect();
    let failed_refs: Vec<(&[(&str, &str)], u64)> = failed_values
        .iter()
        .map(|(l, v)| (l.as_slice(), *v))
        .collect();
    m.counter(
        "cocoon_client_requests_failed_total",
        "Requests that failed, by HTTP status.",
        &failed_refs,
    );
    m.counter(
        "cocoon_client_requests_cancelled_total",
        "Requests whose caller went away.",
        &[(&[], s.requests_cancelled.load(Ordering::Relaxed))],
    );
    m.counter(
        "cocoon_client_adjusted_tokens_total",
        "Adjusted tokens of completed requests.",
        &[(&[], s.adjusted_tokens.load(Ordering::Relaxed))],
    );
    m.gauge(
        "cocoon_client_proxy_connections",
        "Open proxy sessions.",
        &[(&[], node.open_sessions().len() as f64)],
    );
    m.histogram(
        "cocoon_client_head_latency_seconds",
        "Time to the response head.",
        &s.head_latency,
    );
    m.histogram(
        "cocoon_client_request_latency_seconds",
        "Time to the end of the answer.",
        &s.total_latency,
    );
    if let Some(keys) = node.api_keys() {
        let usage = keys.usage();
        let labels: Vec<[(&str, &str); 1]> = usage
            .iter()
            .map(|(name, _, _)| [("key", name.as_str())])
            .collect();
        /// A counter per key: its name, help, and which figure of the key's usage.
        type Series = (&'static str, &'static str, fn(&(String, u64, u64)) -> u64);
        let series: [Series; 2] = [
            (
                "cocoon_client_api_key_spent_nanoton_total",
                "What each API key's requests cost (nanoTON).",
                |u| u.1,
            ),
            (
                "cocoon_client_api_key_requests_total",
                "Requests answered per API key.",
                |u| u.2,
            ),
        ];
        for (name, help, value) in series {
            let values: Vec<(&[(&str, &str)], u64)> = labels
                .iter()
                .zip(&usage)
                .map(|(l, u)| (&l[..], value(u)))
                .collect();
            m.counter(name, help, &values);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.finish(),
    )
        .into_response()
}

async fn not_found(uri: Uri) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "unknown_url",
        &format!("unknown endpoint {}", uri.path()),
    )
}
