//! Test network: a mock OpenAI upstream, a proxy, workers and protocol clients, all on
//! loopback in one process.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cocoon_net::{ConnectionConfig, RpcConnection};
use cocoon_node::client::{AnswerEvent, ClientSettings, FinalInfo, ProxySession, QueryRequest};
use cocoon_node::ledger::Ledger;
use cocoon_node::pricing::{Multipliers, Prices};
pub use cocoon_node::proxy::ProxyStart;
use cocoon_node::proxy::{Proxy, ProxySettings};
use cocoon_node::transport::{TcpDialer, TcpListener};
use cocoon_node::worker::backend::HttpUpstream;
use cocoon_node::worker::{Worker, WorkerSettings};
use cocoon_tl::functions::http as http_fn;
use cocoon_tl::types::http;
use serde_json::{json, Value};

pub const MODEL: &str = "test-model";

/// The canonical address string of a test party named `name`.
pub fn party(name: &str) -> String {
    chain().format(&cocoon_node::chain::devnet_address(name))
}

pub fn chain() -> cocoon_node::chain::ChainContext {
    cocoon_node::chain::ChainContext::fake(&prices(), true).expect("chain context")
}

/// The fake-TON root as the roles follow it (it never changes).
pub fn root_watch() -> cocoon_node::chain::RootWatch {
    cocoon_node::chain::RootWatch::new(cocoon_node::chain::ChainView {
        context: chain(),
        prices: prices(),
        settlement: None,
        model_hashes: Vec::new(),
    })
}

pub fn prices() -> Prices {
    Prices {
        price_per_token: 2,
        worker_fee_per_token: 1,
        multipliers: Multipliers::default(),
    }
}

/// What the mock upstream has seen.
#[derive(Default)]
pub struct MockState {
    pub requests: AtomicU64,
    pub streams_aborted: AtomicU64,
    pub last_body: Mutex<Option<Value>>,
    /// The last audio form: each field's bytes.
    pub last_form: Mutex<Option<std::collections::BTreeMap<String, Vec<u8>>>>,
}

/// An OpenAI-style embeddings endpoint: one vector of `dimensions` (default 8) per input,
/// `[i, i + 0.5, …]`, as floats or base64 (little-endian f32); 5 prompt tokens per input.
async fn embeddings(State(state): State<Arc<MockState>>, Json(body): Json<Value>) -> Response {
    use base64::Engine;
    state.requests.fetch_add(1, Ordering::SeqCst);
    *state.last_body.lock().expect("lock") = Some(body.clone());
    let count = match &body["input"] {
        Value::Array(items) if items.iter().all(|i| i.is_u64()) => 1,
        Value::Array(items) => items.len(),
        _ => 1,
    };
    let dims = body["dimensions"].as_u64().unwrap_or(8) as usize;
    let base64 = body["encoding_format"] == "base64";
    let data: Vec<Value> = (0..count)
        .map(|i| {
            let vector: Vec<f32> = (0..dims).map(|d| i as f32 + d as f32 * 0.5).collect();
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens = 5 * count;
    Json(json!({"object": "list", "model": MODEL, "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
    .into_response()
}

/// An OpenAI-style audio endpoint: answers a form's `response_format` (`json` with token
/// usage, `verbose_json` with segments and a duration but no usage, `text`).
async fn audio(
    State(state): State<Arc<MockState>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let form = match cocoon_node::protocol::multipart::Form::parse(content_type, body).await {
        Ok(form) => form,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"message": e.to_string()}})),
            )
                .into_response()
        }
    };
    let fields: std::collections::BTreeMap<String, Vec<u8>> = form
        .parts()
        .iter()
        .map(|p| (p.name.clone(), p.value.to_vec()))
        .collect();
    let format = fields.get("response_format").map_or_else(
        || "json".into(),
        |f| String::from_utf8_lossy(f).into_owned(),
    );
    *state.last_form.lock().expect("lock") = Some(fields);
    match format.as_str() {
        "verbose_json" => Json(json!({
            "task": "transcribe", "language": "english", "duration": 2.5, "text": " Hello there.",
            "segments": [{"id": 0, "start": 0.0, "end": 2.5, "text": " Hello there."}]
        }))
        .into_response(),
        "text" => "Hello there.\n".into_response(),
        _ => Json(json!({
            "text": "Hello there.",
            "usage": {"type": "tokens", "input_tokens": 40, "output_tokens": 6, "total_tokens": 46}
        }))
        .into_response(),
    }
}

/// Counts a stream as aborted if it is dropped before its end.
struct AbortProbe {
    state: Arc<MockState>,
    finished: bool,
}

impl Drop for AbortProbe {
    fn drop(&mut self) {
        if !self.finished {
            self.state.streams_aborted.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Usage the mock reports: COCOON's benchmark numbers (134 adjusted tokens at 1.0×).
pub fn usage() -> Value {
    json!({"prompt_tokens": 34, "completion_tokens": 100, "total_tokens": 134,
           "prompt_tokens_details": {"cached_tokens": 11},
           "completion_tokens_details": {"reasoning_tokens": 10}})
}

async fn chat(State(state): State<Arc<MockState>>, Json(body): Json<Value>) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    *state.last_body.lock().expect("lock") = Some(body.clone());
    let mock = body.get("mock").cloned().unwrap_or(Value::Null);
    if let Some(status) = mock.get("status").and_then(Value::as_u64) {
        let status =
            StatusCode::from_u16(status as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (
            status,
            Json(json!({"error": {"message": "mock failure", "type": "server_error"}})),
        )
            .into_response();
    }
    let delay = Duration::from_millis(mock.get("delay_ms").and_then(Value::as_u64).unwrap_or(0));
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream {
        tokio::time::sleep(delay).await;
        // Headers that name the software behind the answer, as real model servers send.
        return (
            [
                (header::SERVER, "mock-model-server"),
                (HeaderName::from_static("x-powered-by"), "mock"),
            ],
            Json(json!({
                "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
                "usage": usage(),
            })),
        )
            .into_response();
    }
    let chunks = mock.get("chunks").and_then(Value::as_u64).unwrap_or(5);
    let die_after = mock.get("die_after").and_then(Value::as_u64);
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<String, std::io::Error>>(1);
    let probe_state = state.clone();
    tokio::spawn(async move {
        use futures::SinkExt;
        let mut probe = AbortProbe {
            state: probe_state,
            finished: false,
        };
        for i in 0..chunks {
            if die_after == Some(i) {
                let _ = tx
                    .send(Err(std::io::Error::other("mock upstream died")))
                    .await;
                probe.finished = true;
                return;
            }
            tokio::time::sleep(delay).await;
            let event = json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": format!("t{i} ")}}]});
            if tx.send(Ok(format!("data: {event}\n\n"))).await.is_err() {
                return; // the reader went away: the probe counts an abort
            }
        }
        let last =
            json!({"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": usage()});
        let _ = tx
            .send(Ok(format!("data: {last}\n\ndata: [DONE]\n\n")))
            .await;
        probe.finished = true;
    });
    let body = Body::from_stream(rx);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(body)
        .expect("response")
}

/// Starts the mock upstream; returns its base URL and state.
pub async fn mock_upstream() -> (String, Arc<MockState>) {
    let state = Arc::new(MockState::default());
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/audio/transcriptions", post(audio))
        .route("/v1/audio/translations", post(audio))
        .route(
            "/v1/models",
            get(|| async {
                Json(json!({"object": "list", "data": [{"id": MODEL, "object": "model"}]}))
            }),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), state)
}

/// One worker to start.
#[derive(Clone)]
pub struct WorkerSpec {
    pub owner: String,
    pub coefficient: u32,
    pub max_active: u32,
    /// Upstream URL; `None` uses the network's mock.
    pub upstream: Option<String>,
    /// How the worker serves `worker.changeModel` (default: refuses, no script).
    pub change_model: cocoon_node::worker::ModelChangeSettings,
}

impl WorkerSpec {
    pub fn new(owner: &str, coefficient: u32) -> Self {
        WorkerSpec {
            owner: owner.into(),
            coefficient,
            max_active: 16,
            upstream: None,
            change_model: Default::default(),
        }
    }
}

pub struct Net {
    pub proxy: Proxy,
    pub client_addr: SocketAddr,
    pub worker_addr: SocketAddr,
    pub workers: Vec<Worker>,
    pub links: Vec<tokio::task::JoinHandle<()>>,
    pub upstream_url: String,
    pub upstream: Arc<MockState>,
}

pub fn worker_settings(spec: &WorkerSpec) -> WorkerSettings {
    WorkerSettings {
        owner_address: party(&spec.owner),
        model: format!("{MODEL}@commit:hash"),
        coefficient: spec.coefficient,
        max_active_requests: spec.max_active,
        proxy_connections: 1,
        is_test: true,
        health_interval: Duration::from_millis(200),
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(400),
        connection: ConnectionConfig::default(),
        chain: root_watch(),
        voucher_dir: None,
        change_model: spec.change_model.clone(),
    }
}

/// Fake-TON under the test root parameters.
pub fn proxy_start() -> ProxyStart {
    ProxyStart {
        chain: chain(),
        prices: prices(),
        settlement: None,
    }
}

pub fn proxy_settings() -> ProxySettings {
    ProxySettings {
        owner_address: party("proxy-owner"),
        signing_key: ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
        is_test: true,
        config_version: 1,
        pseudo_client_tokens: 1_000_000_000,
        max_attempts: 3,
        connection: ConnectionConfig::default(),
    }
}

/// Starts a proxy (with `ledger`) and the given workers, and waits until all are ready.
pub async fn start_network_with(
    specs: &[WorkerSpec],
    settings: ProxySettings,
    start: ProxyStart,
    ledger: Arc<Ledger>,
) -> Net {
    let (upstream_url, upstream) = mock_upstream().await;
    let proxy = Proxy::new(settings, start, ledger).expect("proxy");
    let clients = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let workers_l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    use cocoon_node::transport::Listener;
    let client_addr = clients.local_addr().expect("addr");
    let worker_addr = workers_l.local_addr().expect("addr");
    proxy.serve_clients(clients);
    proxy.serve_workers(workers_l);
    let mut net = Net {
        proxy,
        client_addr,
        worker_addr,
        workers: Vec::new(),
        links: Vec::new(),
        upstream_url,
        upstream,
    };
    for spec in specs {
        net.add_worker(spec).await;
    }
    net.wait_ready(specs.len()).await;
    net
}

pub async fn start_network(specs: &[WorkerSpec]) -> Net {
    let ledger = Arc::new(Ledger::open_in_memory(&proxy_settings().signing_key).expect("ledger"));
    start_network_with(specs, proxy_settings(), proxy_start(), ledger).await
}

impl Net {
    pub async fn add_worker(&mut self, spec: &WorkerSpec) -> Worker {
        let url = spec
            .upstream
            .clone()
            .unwrap_or_else(|| self.upstream_url.clone());
        self.add_worker_with(worker_settings(spec), &url).await
    }

    /// Adds a worker with these settings, served by the model server at `url`.
    pub async fn add_worker_with(&mut self, settings: WorkerSettings, url: &str) -> Worker {
        let backend = Arc::new(HttpUpstream::new(url).expect("upstream"));
        self.add_worker_on(settings, backend).await
    }

    /// Adds a worker with these settings on `backend` (e.g. the embedded engine).
    pub async fn add_worker_on(
        &mut self,
        settings: WorkerSettings,
        backend: Arc<dyn cocoon_node::worker::backend::InferenceBackend>,
    ) -> Worker {
        let worker = Worker::new(settings, backend).expect("worker");
        worker.set_healthy(true);
        let link = worker.spawn_proxy_link(self.worker_addr.to_string(), Arc::new(TcpDialer));
        self.workers.push(worker.clone());
        self.links.push(link);
        worker
    }

    pub async fn wait_ready(&self, n: usize) {
        wait_until(|| self.proxy.ready_workers().get(MODEL).copied().unwrap_or(0) >= n).await;
    }

    pub async fn client(&self, max_proto: i32) -> ProxySession {
        client_to(self.client_addr, max_proto, "client-1").await
    }
}

pub async fn client_to(addr: SocketAddr, max_proto: i32, owner: &str) -> ProxySession {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let conn = RpcConnection::connect(stream, &ConnectionConfig::default(), "proxy")
        .await
        .expect("opening");
    ProxySession::connect(
        conn,
        ClientSettings {
            owner_address: party(owner),
            is_test: true,
            secret_string: "secret".into(),
            config_version: 1,
            max_proto,
            chain: root_watch(),
            onchain: None,
        },
    )
    .await
    .expect("proxy session")
}

/// Polls `cond` every 10 ms for up to 10 s.
pub async fn wait_until(mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 10 s");
}

/// Everything a request produced.
#[derive(Debug, Default)]
pub struct Collected {
    pub head: Option<http::Response>,
    pub body: Vec<u8>,
    pub chunks: usize,
    pub done: Option<FinalInfo>,
    pub error: Option<(i32, String, FinalInfo)>,
}

impl Collected {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

pub fn chat_request(body: Value, max_coefficient: u32) -> QueryRequest {
    QueryRequest {
        model: MODEL.into(),
        http: http_fn::Request {
            method: "POST".into(),
            url: "/v1/chat/completions".into(),
            http_version: "HTTP/1.1".into(),
            headers: vec![http::Header {
                name: "Content-Type".into(),
                value: "application/json".into(),
            }],
            payload: serde_json::to_vec(&body).expect("json"),
        },
        max_coefficient,
        max_tokens: 1000,
        timeout: 30.0,
        enable_debug: false,
        encrypted_to: None,
        answer_once: None,
    }
}

pub fn chat_body(stream: bool, mock: Value) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream, "mock": mock, "top_k": 20})
}

pub async fn collect(session: &ProxySession, request: QueryRequest) -> Collected {
    let (_, mut rx) = session.run_query(request).await.expect("sent");
    let mut out = Collected::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let event = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("request finishes within 20 s");
        match event {
            Some(AnswerEvent::Head(h)) => {
                out.body.extend_from_slice(&h.payload);
                out.head = Some(h);
            }
            Some(AnswerEvent::Chunk(c)) => {
                out.chunks += 1;
                out.body.extend_from_slice(&c);
            }
            Some(AnswerEvent::Done(info)) => {
                out.done = Some(info);
                return out;
            }
            Some(AnswerEvent::Error {
                code,
                message,
                info,
            }) => {
                out.error = Some((code, message, info));
                return out;
            }
            None => panic!("answer channel closed without Done or Error"),
        }
    }
}

pub fn count_by_owner(net: &Net) -> BTreeMap<String, u64> {
    net.workers
        .iter()
        .map(|w| {
            (
                format!("{w:?}"),
                w.stats().requests_success.load(Ordering::Relaxed),
            )
        })
        .collect()
}

/// A client's settings on the fake-TON root, as the party `owner`.
pub fn client_settings(owner: &str) -> ClientSettings {
    ClientSettings {
        owner_address: party(owner),
        is_test: true,
        secret_string: "secret".into(),
        config_version: 1,
        max_proto: 3,
        chain: root_watch(),
        onchain: None,
    }
}

/// Starts a client node with sessions to the given proxies and serves its HTTP API;
/// returns the base URL (`http://127.0.0.1:PORT`) and the node.
pub async fn start_gateway(
    proxies: &[SocketAddr],
    settings: cocoon_node::client::gateway::GatewaySettings,
) -> (String, Arc<cocoon_node::client::gateway::ClientNode>) {
    let node = cocoon_node::client::gateway::ClientNode::new(settings);
    for addr in proxies {
        node.spawn_proxy_link(
            addr.to_string(),
            Arc::new(TcpDialer),
            client_settings("http-client"),
            ConnectionConfig::default(),
        );
    }
    let n = proxies.len();
    let node2 = node.clone();
    wait_until(move || node2.open_sessions().len() >= n).await;
    (serve_gateway(&node).await, node)
}

/// Serves the HTTP API of `node` on loopback; returns the base URL.
pub async fn serve_gateway(node: &Arc<cocoon_node::client::gateway::ClientNode>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(cocoon_node::http_server::serve(listener, node.router()));
    format!("http://{addr}")
}

/// A dialer whose target the test moves: it connects to the address set (whatever
/// endpoint is asked for) and refuses while none is.
#[derive(Clone, Default)]
pub struct GatedDialer {
    pub target: Arc<Mutex<Option<SocketAddr>>>,
}

impl GatedDialer {
    pub fn set(&self, target: Option<SocketAddr>) {
        *self.target.lock().expect("lock") = target;
    }
}

impl cocoon_node::transport::Dialer for GatedDialer {
    fn dial(
        &self,
        _endpoint: &str,
    ) -> futures::future::BoxFuture<'static, std::io::Result<cocoon_node::transport::BoxIo>> {
        let target = *self.target.lock().expect("lock");
        Box::pin(async move {
            let Some(addr) = target else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "gate closed",
                ));
            };
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as cocoon_node::transport::BoxIo)
        })
    }
}

/// A hand-written proxy's answer to a client's hello: the proxy of `key` owned by `owner`
/// under the test root, hello params `flags` at protocol `proto`, and short authorization
/// with the hash of the tests' secret.
pub fn proxy_hello_answer(
    hello: &cocoon_tl::functions::client::ConnectToProxy,
    key: &ed25519_dalek::SigningKey,
    owner: &tycho_types::models::StdAddr,
    flags: u32,
    proto: i32,
) -> cocoon_tl::types::client::ConnectedToProxy {
    use cocoon_tl::types::{client, proxy};
    use sha2::Digest;
    let ctx = chain();
    let public_key = key.verifying_key().to_bytes();
    let proxy_sc = ctx.proxy_sc(owner, &public_key).expect("proxy contract");
    let wallet = ctx
        .parse_address(&hello.params.client_owner_address)
        .expect("client address");
    let client_sc = ctx
        .client_sc(&wallet, &proxy_sc, &public_key)
        .expect("client contract");
    client::ConnectedToProxy {
        params: proxy::Params {
            flags,
            proxy_public_key: public_key,
            proxy_owner_address: ctx.format(owner),
            proxy_sc_address: ctx.format(&proxy_sc),
            is_test: Some(true),
            proto_version: Some(proto),
        },
        client_sc_address: ctx.format(&client_sc),
        auth: client::ProxyConnectionAuthShort {
            secret_hash: sha2::Sha256::digest(b"secret").into(),
            nonce: 1,
        }
        .into(),
        signed_payment: proxy::SignedPaymentEmpty {}.into(),
    }
}

/// A hand-written proxy's answer to a client's authorization: accepted, nothing owed.
pub fn proxy_authorized() -> cocoon_tl::types::client::AuthorizationWithProxySuccess {
    cocoon_tl::types::client::AuthorizationWithProxySuccess {
        signed_payment: cocoon_tl::types::proxy::SignedPaymentEmpty {}.into(),
        tokens_committed_to_db: 0,
        max_tokens: 0,
    }
}

/// A network whose one worker (`w`, serving [`MODEL`]) runs the embedded engine on the model
/// in `dir`, and a client gateway; returns them with the gateway's base URL.
#[cfg(feature = "engine")]
pub async fn engine_network(
    dir: &std::path::Path,
) -> (Net, String, Arc<cocoon_node::client::gateway::ClientNode>) {
    let backend = cocoon_node::worker::engine_backend::EngineBackend::load(
        &dir.to_string_lossy(),
        Some(MODEL),
    )
    .await
    .expect("engine");
    let mut net = start_network(&[]).await;
    net.add_worker_on(
        worker_settings(&WorkerSpec::new("w", 1000)),
        Arc::new(backend),
    )
    .await;
    net.wait_ready(1).await;
    let (base, node) = start_gateway(
        &[net.client_addr],
        cocoon_node::client::gateway::GatewaySettings::default(),
    )
    .await;
    (net, base, node)
}

/// `GET url`, the answer as JSON.
pub async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .send()
        .await
        .expect("response")
        .json()
        .await
        .expect("json")
}

/// `POST url` with a JSON `body`: the status and the answer as JSON (null if not JSON).
pub async fn post_json(http: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let response = http.post(url).json(body).send().await.expect("response");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Serves `node`'s API as the client role serves it (with the API key check) and
/// `batches`' routes; returns the OpenAI base URL (`http://127.0.0.1:PORT/v1`).
pub async fn serve_batch_gateway(
    node: &Arc<cocoon_node::client::gateway::ClientNode>,
    batches: &Arc<cocoon_node::client::batch::Batches>,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(cocoon_node::http_server::serve(
        listener,
        node.router_with(batches.router()),
    ));
    format!("http://{addr}/v1")
}
