//! A fast mock OpenAI upstream: `GET /v1/models`, and `POST /v1/chat/completions` that
//! answers JSON with a usage object or, for `"stream": true`, an SSE stream of chunks.
//!
//! The request body may carry a `"mock"` object (passed through the network untouched):
//! `{"chunks": N, "interval_us": U}` makes a stream of N content chunks, one every U µs
//! (0 = as fast as the reader takes them); `{"delay_ms": D}` makes a JSON answer wait D ms
//! (a model's fixed time per answer, for the batch benchmark). Every stream chunk's `id` is
//! `ts-<unix nanoseconds when the chunk was produced>`, so a reader on the same machine
//! can tell how long each chunk took to reach it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The model the mock serves (what the worker discovers from `/v1/models`).
pub const MODEL: &str = "bench-model";

/// Content chunks of a stream when the request does not say.
pub const DEFAULT_CHUNKS: u64 = 16;

/// Largest number of chunks a request may ask for.
const MAX_CHUNKS: u64 = 100_000;

/// Unix time in nanoseconds (0 if the clock is before 1970).
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Usage the mock reports for every request.
fn usage() -> Value {
    json!({"prompt_tokens": 34, "completion_tokens": 100, "total_tokens": 134})
}

/// The router of the mock upstream.
pub fn router() -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]}))
}

async fn chat(Json(body): Json<Value>) -> Response {
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream {
        let delay = body
            .get("mock")
            .and_then(|m| m.get("delay_ms"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay.min(60_000))).await;
        }
        return Json(json!({
            "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?"}, "finish_reason": "stop"}],
            "usage": usage(),
        }))
        .into_response();
    }
    let mock = body.get("mock");
    let param = |name: &str| mock.and_then(|m| m.get(name)).and_then(Value::as_u64);
    let chunks = param("chunks").unwrap_or(DEFAULT_CHUNKS).min(MAX_CHUNKS);
    let interval = Duration::from_micros(param("interval_us").unwrap_or(0));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut ticker = (!interval.is_zero()).then(|| {
            let mut t = tokio::time::interval(interval);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        for i in 0..chunks {
            if let Some(t) = ticker.as_mut() {
                t.tick().await;
            }
            let event = format!(
                "data: {{\"id\":\"ts-{}\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"{MODEL}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}}}}]}}\n\n",
                unix_nanos()
            );
            if tx.send(Ok(Bytes::from(event))).await.is_err() {
                return; // the reader went away
            }
        }
        let last = json!({"id": "chatcmpl-bench-end", "object": "chat.completion.chunk", "created": 1,
                          "model": MODEL, "choices": [], "usage": usage()});
        let _ = tx
            .send(Ok(Bytes::from(format!("data: {last}\n\ndata: [DONE]\n\n"))))
            .await;
    });
    let body = Body::from_stream(tokio_stream_from(rx));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Turns a receiver into a stream without pulling in `tokio-stream`.
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

/// Serves the mock on `listener` until the task is dropped. Sockets get `TCP_NODELAY`,
/// as model servers set it (uvicorn/asyncio, vLLM), so stream chunks are not held back by
/// Nagle's algorithm.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router()).await
}

/// Binds `127.0.0.1:0`, serves the mock in a background task and returns its base URL
/// (`http://127.0.0.1:PORT`).
pub async fn spawn_local() -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = serve(listener).await;
    });
    Ok(format!("http://{addr}"))
}
