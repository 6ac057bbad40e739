//! What the tests that run real `cocoon` processes share: a mock OpenAI upstream, child
//! processes killed on drop, free ports and one chat request.

#![allow(dead_code)] // each test binary uses its own part

use std::net::SocketAddr;
use std::process::Child;
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The model the mock upstream serves.
pub const MODEL: &str = "e2e-model";

pub mod bot_api;

/// The chat requests the mock upstreams of this process received, oldest first.
static CHAT_REQUESTS: std::sync::Mutex<Vec<Value>> = std::sync::Mutex::new(Vec::new());

/// The last chat request a mock upstream received.
pub fn last_chat_request() -> Value {
    CHAT_REQUESTS
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .unwrap_or(Value::Null)
}

/// Every chat request the mock upstreams of this process received, oldest first.
pub fn chat_requests() -> Vec<Value> {
    CHAT_REQUESTS.lock().expect("lock").clone()
}

/// What the mock answers, streamed slowly, when the last message asks for "a long answer":
/// 9000 characters in sentences.
pub fn long_answer() -> String {
    (0..150)
        .map(|i| format!("Sentence number {i:03} of a long answer, made to be split."))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A mock OpenAI upstream: answers with COCOON's benchmark usage (134 adjusted tokens at
/// 1.0×) after `mock.delay_ms`; JSON, or with `"stream": true` SSE ("o", "k", then the
/// usage chunk and `[DONE]`; [`long_answer`] in 30 chunks over 3 s when asked for one).
/// It keeps every chat request ([`last_chat_request`]).
pub async fn mock_upstream() -> SocketAddr {
    use axum::response::IntoResponse;
    async fn chat(Json(body): Json<Value>) -> axum::response::Response {
        use futures::StreamExt;
        CHAT_REQUESTS.lock().expect("lock").push(body.clone());
        let delay = body["mock"]["delay_ms"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let asks_long = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .is_some_and(|c| c.contains("a long answer"));
        if body["stream"] == json!(true) && asks_long {
            let chunk = |delta: Value, usage: Value| {
                json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": null}], "usage": usage})
            };
            let text = long_answer();
            let pieces: Vec<String> = text
                .chars()
                .collect::<Vec<_>>()
                .chunks(300)
                .map(|c| c.iter().collect())
                .collect();
            let stream = futures::stream::iter(pieces.into_iter().map(Some).chain([None]))
                .then(move |piece| async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let event = match piece {
                        Some(p) => format!("data: {}\n\n", chunk(json!({"content": p}), Value::Null)),
                        None => format!(
                            "data: {}\n\ndata: [DONE]\n\n",
                            chunk(json!({}), json!({"prompt_tokens": 34, "completion_tokens": 100, "total_tokens": 134,
                                                    "prompt_tokens_details": {"cached_tokens": 11},
                                                    "completion_tokens_details": {"reasoning_tokens": 10}}))
                        ),
                    };
                    Ok::<_, std::convert::Infallible>(event)
                });
            return (
                [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                axum::body::Body::from_stream(stream),
            )
                .into_response();
        }
        if body["stream"] == json!(true) {
            let chunk = |delta: Value, usage: Value| {
                json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": null}], "usage": usage})
            };
            let usage = json!({"prompt_tokens": 34, "completion_tokens": 100, "total_tokens": 134,
                               "prompt_tokens_details": {"cached_tokens": 11},
                               "completion_tokens_details": {"reasoning_tokens": 10}});
            let sse = format!(
                "data: {}\n\ndata: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
                chunk(json!({"role": "assistant", "content": "o"}), Value::Null),
                chunk(json!({"content": "k"}), Value::Null),
                chunk(json!({}), usage)
            );
            return (
                [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                sse,
            )
                .into_response();
        }
        Json(json!({
            "id": "x", "object": "chat.completion", "created": 0, "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 34, "completion_tokens": 100, "total_tokens": 134,
                      "prompt_tokens_details": {"cached_tokens": 11},
                      "completion_tokens_details": {"reasoning_tokens": 10}}
        }))
        .into_response()
    }
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/audio/transcriptions", post(transcription))
        .route(
            "/v1/models",
            get(|| async { Json(json!({"data": [{"id": MODEL}]})) }),
        );
    serve(app).await
}

/// The transcript the mock upstream gives `file`: names its SHA-256, so that a test can
/// tell the file crossed the network byte for byte.
pub fn transcript_of(file: &[u8]) -> String {
    use sha2::Digest;
    format!("heard {}", hex::encode(sha2::Sha256::digest(file)))
}

/// The mock's `/v1/audio/transcriptions`: [`transcript_of`] the form's `file`, with token
/// usage (40 in, 6 out).
async fn transcription(headers: axum::http::HeaderMap, body: axum::body::Bytes) -> Json<Value> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let text = match cocoon_node::protocol::multipart::Form::parse(content_type, body).await {
        Ok(form) => form
            .get("file")
            .map_or_else(|| "no file".to_owned(), |f| transcript_of(&f.value)),
        Err(e) => format!("not a form: {e}"),
    };
    Json(
        json!({"text": text, "usage": {"type": "tokens", "input_tokens": 40, "output_tokens": 6, "total_tokens": 46}}),
    )
}

/// A multipart form (`Content-Type`, body) with `file` and text `fields`, as an app sends
/// an audio request.
pub fn audio_form(file: &[u8], fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    use cocoon_node::protocol::multipart::{Form, Part};
    let mut form = Form::new("interop-audio-boundary");
    form.insert(Part {
        name: "file".into(),
        headers: vec![
            (
                "Content-Disposition".into(),
                "form-data; name=\"file\"; filename=\"a.wav\"".into(),
            ),
            ("Content-Type".into(), "audio/wav".into()),
        ],
        value: bytes::Bytes::copy_from_slice(file),
    });
    for (name, value) in fields {
        form.set_text(name, value);
    }
    (form.content_type(), form.to_bytes())
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serves `app` on a free loopback port for the rest of the test; its address.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A TCP port free right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// One chat request through the OpenAI API at `api`; its HTTP status (0 when it failed
/// before an answer).
pub async fn chat(http: &reqwest::Client, api: &str, delay_ms: u64) -> u16 {
    http.post(format!("{api}/chat/completions"))
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "mock": {"delay_ms": delay_ms}}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Starts `cocoon devnet` (binary `cocoon`) on the embedded chain with prices `price` and
/// `fee` (nanoTON per token), the mock `upstream`, the OpenAI API on `port`, state in
/// `state`, its log in `log`, and `extra` arguments; returns once it is ready.
#[allow(clippy::too_many_arguments)]
pub fn start_devnet(
    cocoon: &str,
    state: &std::path::Path,
    upstream: SocketAddr,
    port: u16,
    log: std::path::PathBuf,
    price: u64,
    fee: u64,
    extra: &[&str],
) -> Proc {
    // A port a test picked with `free_port` may be taken meanwhile by one of the devnet's
    // own `:0` binds (the OS hands out the same range): then the devnet exits with "address
    // in use", and one more start (its sockets closed again) gets the port.
    for attempt in 0..3 {
        match try_start_devnet(cocoon, state, upstream, port, &log, price, fee, extra) {
            Ok(proc) => return proc,
            Err(why) if attempt < 2 && why.contains("in use") => {
                eprintln!("the devnet could not bind a port; starting it again");
            }
            Err(why) => panic!("{why}"),
        }
    }
    unreachable!("the last attempt returns or panics")
}

#[allow(clippy::too_many_arguments)]
fn try_start_devnet(
    cocoon: &str,
    state: &std::path::Path,
    upstream: SocketAddr,
    port: u16,
    log: &std::path::Path,
    price: u64,
    fee: u64,
    extra: &[&str],
) -> Result<Proc, String> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let log_path = log.to_path_buf();
    let log = std::fs::File::create(log).expect("log file");
    let mut child = Command::new(cocoon)
        .args([
            "devnet",
            "--price-per-token",
            &price.to_string(),
            "--worker-fee-per-token",
            &fee.to_string(),
            "--upstream",
            &format!("http://{upstream}"),
            "--dir",
            &state.display().to_string(),
            "--workers",
            "2",
            "--http-port",
            &port.to_string(),
            "--proxy-client-port",
            "0",
            "--proxy-worker-port",
            "0",
            "--chain-api-port",
            "0",
            "--key-manager-port",
            "0",
            "--pow-difficulty",
            "8",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn cocoon devnet");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let proc = Proc(child);
    // The wait below blocks its thread. Called from a test's async body, that thread is a
    // runtime worker, and a task parked in its LIFO slot (the in-process mock upstream the
    // devnet's workers must reach) would starve until the wait ends: the devnet would never
    // get ready. `block_in_place` hands the worker's tasks to another thread first.
    let in_runtime = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let ready = if in_runtime {
        tokio::task::block_in_place(|| wait_ready(&rx, &log_path))
    } else {
        wait_ready(&rx, &log_path)
    };
    ready?;
    // Keep draining stdout so the devnet never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    Ok(proc)
}

/// Waits for the devnet's "ready" line on `rx`; else why not, with the end of its log.
fn wait_ready(
    rx: &std::sync::mpsc::Receiver<String>,
    log_path: &std::path::Path,
) -> Result<(), String> {
    use std::time::Instant;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("cocoon devnet is ready") => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                // Say why: the tail of the devnet's log (its temporary directory goes away).
                let text = std::fs::read_to_string(log_path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "the devnet did not get ready ({}); the end of its log:\n{}",
                    match e {
                        std::sync::mpsc::RecvTimeoutError::Timeout => "still starting after 90 s",
                        std::sync::mpsc::RecvTimeoutError::Disconnected => "it exited",
                    },
                    tail.join("\n")
                ));
            }
        }
    }
}

/// Sends `signal` (e.g. `-INT`, `-KILL`) to the devnet and waits until it exited.
pub fn stop(mut devnet: Proc, signal: &str) {
    use std::time::Instant;
    let pid = devnet.0.id().to_string();
    std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill");
    let start = Instant::now();
    while devnet.0.try_wait().expect("wait").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "devnet stops on {signal}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TON address from its text.
pub fn addr(text: &str) -> cocoon_ton::StdAddr {
    cocoon_ton::address::parse(text).expect("address").0
}

/// The payouts (`payout` op) `to` received from `from` (message values; the account's
/// balance is lower by the storage fees it paid, which are chain fees; excesses, the
/// change of the messages it sent, are not payouts).
pub fn received_from(
    chain: &cocoon_ton::local::LocalChain,
    to: &cocoon_ton::StdAddr,
    from: &cocoon_ton::StdAddr,
) -> u64 {
    chain
        .transactions_of(to)
        .iter()
        .filter_map(|t| t.summary.in_msg.as_ref())
        .filter(|m| m.source.as_ref() == Some(from))
        .filter(|m| {
            matches!(
                cocoon_ton::messages::Body::parse(&m.body),
                Ok(cocoon_ton::messages::Body::Payout { .. })
            )
        })
        .map(|m| m.value)
        .sum()
}

/// A hostile OpenAI upstream for the tests, serving [`MODEL`]. The request body's
/// `"hostile"` field picks the misbehaviour:
///
/// * `absurd_usage`: a JSON answer claiming 2^62 completion tokens;
/// * `absurd_usage_sse`: the same claim in the last event of an SSE stream;
/// * `huge_answer`: a valid JSON answer of 20 MB;
/// * `invalid_json`: `200 application/json` with a body that is not JSON;
/// * `binary`: `200 application/json` with binary bytes;
/// * `html_500`: `500 text/html`;
/// * `binary_sse`: `200 text/event-stream` with binary bytes;
/// * `slow_stream`: an honest SSE stream of `chunks` events, one every `delay_ms`.
///
/// Anything else gets the honest JSON answer of [`mock_upstream`].
pub async fn hostile_upstream() -> SocketAddr {
    use axum::http::{header, StatusCode};
    use axum::response::{IntoResponse, Response};
    use futures::StreamExt;
    async fn chat(Json(body): Json<Value>) -> Response {
        let absurd = json!({"prompt_tokens": 10, "completion_tokens": 1u64 << 62, "total_tokens": (1u64 << 62) + 10});
        let sse = |events: Vec<String>| {
            let stream = futures::stream::iter(
                events
                    .into_iter()
                    .map(|e| Ok::<_, std::io::Error>(format!("data: {e}\n\n"))),
            );
            (
                [(header::CONTENT_TYPE, "text/event-stream")],
                axum::body::Body::from_stream(stream),
            )
                .into_response()
        };
        let chunk = |text: &str| {
            json!({"id": "c", "object": "chat.completion.chunk", "model": MODEL, "choices": [{"index": 0, "delta": {"content": text}}]}).to_string()
        };
        match body["hostile"].as_str().unwrap_or("") {
            "absurd_usage" => Json(json!({
                "id": "x", "object": "chat.completion", "created": 1, "model": MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": absurd,
            }))
            .into_response(),
            "absurd_usage_sse" => sse(vec![
                chunk("ok"),
                json!({"id": "c", "object": "chat.completion.chunk", "model": MODEL, "choices": [], "usage": absurd}).to_string(),
                "[DONE]".into(),
            ]),
            "huge_answer" => Json(json!({
                "id": "x", "object": "chat.completion", "created": 1, "model": MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "y".repeat(20_000_000)}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
            }))
            .into_response(),
            "invalid_json" => (
                [(header::CONTENT_TYPE, "application/json")],
                "{\"id\": \"x\", \"choices\": [tru",
            )
                .into_response(),
            "binary" => (
                [(header::CONTENT_TYPE, "application/json")],
                vec![0xffu8, 0x00, 0xfe, 0x9c, 0x01],
            )
                .into_response(),
            "html_500" => (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body><h1>500 Internal Server Error</h1></body></html>",
            )
                .into_response(),
            "binary_sse" => (
                [(header::CONTENT_TYPE, "text/event-stream")],
                vec![0xffu8, 0x00, 0xfe, 0x9c, 0x01, b'\n', b'\n'],
            )
                .into_response(),
            "slow_stream" => {
                let chunks = body["chunks"].as_u64().unwrap_or(10);
                let delay = Duration::from_millis(body["delay_ms"].as_u64().unwrap_or(200));
                let mut events: Vec<String> = (0..chunks).map(|i| chunk(&format!("t{i} "))).collect();
                events.push(json!({"id": "c", "object": "chat.completion.chunk", "model": MODEL, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": chunks, "total_tokens": 5 + chunks}}).to_string());
                events.push("[DONE]".into());
                let stream = futures::stream::iter(events).then(move |e| async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, std::io::Error>(format!("data: {e}\n\n"))
                });
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    axum::body::Body::from_stream(stream),
                )
                    .into_response()
            }
            _ => Json(json!({
                "id": "x", "object": "chat.completion", "created": 0, "model": MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 34, "completion_tokens": 100, "total_tokens": 134},
            }))
            .into_response(),
        }
    }
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route(
            "/v1/models",
            get(|| async { Json(json!({"data": [{"id": MODEL}]})) }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20));
    serve(app).await
}

/// After a devnet in `state` stopped (and settled everything), checks its money to the
/// nanoTON: the ledger's two sides agree; each worker owner received its booked tokens ×
/// `fee` and the proxy owner tokens × (`price` − `fee`), so what clients were charged for
/// usage is exactly earnings plus commission; the chain's supply is conserved (every
/// nanoTON is in an account or was a fee). Returns the client tokens booked.
pub async fn assert_money_balances(state: &std::path::Path, price: u64, fee: u64) -> u64 {
    use cocoon_node::chain::{devnet_address, ChainContext};
    let chain = cocoon_ton::local::LocalChain::open(state.join("chain")).expect("chain");
    let info: Value =
        serde_json::from_slice(&std::fs::read(state.join("devnet.json")).expect("devnet.json"))
            .expect("json");
    let proxy_key = cocoon_node::config::load_or_create_key(&state.join("keys/proxy_key.pem"))
        .expect("proxy key");
    let ledger = cocoon_node::ledger::Ledger::open(&state.join("proxy-ledger.sqlite"), &proxy_key)
        .expect("ledger opens and verifies");
    let totals = ledger.all_totals().expect("totals");
    let client_tokens: u64 = totals.clients.iter().map(|(_, t)| t).sum();
    let worker_tokens: u64 = totals.workers.iter().map(|(_, t)| t).sum();
    assert_eq!(client_tokens, worker_tokens, "the ledger's two sides agree");
    let root = chain.root_address().expect("root");
    let ctx = ChainContext::from_chain(&chain, &root, true)
        .await
        .expect("root")
        .context;
    let proxy_sc = addr(info["proxy_sc_address"].as_str().expect("proxy sc"));
    let mut earned = 0;
    for (owner, booked) in &totals.workers {
        let owner = ctx.parse_address(owner).expect("owner");
        let received = received_from(&chain, &owner, &proxy_sc);
        assert_eq!(received, booked * fee, "worker {owner}: tokens × fee");
        earned += received;
    }
    let commission = received_from(&chain, &devnet_address("devnet-proxy-owner"), &proxy_sc);
    assert_eq!(
        commission,
        client_tokens * (price - fee),
        "proxy commission"
    );
    assert_eq!(
        client_tokens * price,
        earned + commission,
        "client spend on usage = worker earnings + proxy commission"
    );
    let supply = chain.supply().expect("supply");
    assert!(supply.is_conserved(), "{supply:?}");
    client_tokens
}

/// The devnet client's contract on the devnet's chain (state directory `state`, chain
/// opened as `chain`): its address and state.
pub async fn client_contract(
    state: &std::path::Path,
    chain: &cocoon_ton::local::LocalChain,
) -> (
    cocoon_ton::StdAddr,
    cocoon_ton::contracts::ClientContractState,
) {
    use cocoon_node::chain::ChainContext;
    let info: Value =
        serde_json::from_slice(&std::fs::read(state.join("devnet.json")).expect("devnet.json"))
            .expect("json");
    let root = chain.root_address().expect("root");
    let ctx = ChainContext::from_chain(chain, &root, true)
        .await
        .expect("root")
        .context;
    let proxy_sc = addr(info["proxy_sc_address"].as_str().expect("proxy sc"));
    let client_wallet = addr(
        info["wallets"]["client"]["address"]
            .as_str()
            .expect("client"),
    );
    let proxy_pk: [u8; 32] = hex::decode(info["proxy_public_key"].as_str().expect("pk"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let client_sc = ctx
        .client_sc(&client_wallet, &proxy_sc, &proxy_pk)
        .expect("client sc");
    let data = chain
        .account(&client_sc)
        .expect("client contract")
        .data
        .expect("deployed");
    let state = cocoon_ton::contracts::ClientContractState::from_data(&data).expect("client state");
    (client_sc, state)
}

/// Uploads `lines` (a batch input) and creates a batch for `/v1/chat/completions` on the
/// gateway whose OpenAI base URL is `api` (`…/v1`); the batch's id.
pub async fn submit_batch(http: &reqwest::Client, api: &str, lines: &[String]) -> String {
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::bytes(lines.join("\n").into_bytes()).file_name("input.jsonl"),
        );
    let file: Value = http
        .post(format!("{api}/files"))
        .multipart(form)
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("file");
    assert_eq!(file["purpose"], "batch", "{file}");
    let batch: Value = http
        .post(format!("{api}/batches"))
        .json(
            &json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                      "completion_window": "24h"}),
        )
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("batch");
    batch["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no batch: {batch}"))
        .to_owned()
}
