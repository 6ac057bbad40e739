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

/// A mock OpenAI upstream: JSON answers with COCOON's benchmark usage (134 adjusted
/// tokens at 1.0×) after `mock.delay_ms`.
pub async fn mock_upstream() -> SocketAddr {
    async fn chat(Json(body): Json<Value>) -> Json<Value> {
        let delay = body["mock"]["delay_ms"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        Json(json!({
            "id": "x", "object": "chat.completion", "created": 0, "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 34, "completion_tokens": 100, "total_tokens": 134,
                      "prompt_tokens_details": {"cached_tokens": 11},
                      "completion_tokens_details": {"reasoning_tokens": 10}}
        }))
    }
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route(
            "/v1/models",
            get(|| async { Json(json!({"data": [{"id": MODEL}]})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
