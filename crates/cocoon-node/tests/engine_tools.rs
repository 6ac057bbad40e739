//! Tool calls need a worker that can make them: workers on the embedded engine announce
//! `tools` when their model's chat template presents tools (Qwen3's does, the tiny Llama's
//! does not), and the proxy sends chat requests that offer `tools` only to such workers,
//! refusing them with a clear 400 when there is none. The models are tiny random ones (a
//! stand-in for real weights).
#![cfg(feature = "engine")]

mod common;

use cocoon_engine::testing::{write_safetensors_model, TinyModelConfig};
use cocoon_engine::Architecture;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn tool_requests_go_only_to_workers_that_call_tools() {
    let llama = tempfile::tempdir().expect("tmp");
    write_safetensors_model(llama.path(), &TinyModelConfig::tiny(Architecture::Llama))
        .expect("fixture");
    let (mut net, base, _node) = engine_network(llama.path()).await;
    let http = reqwest::Client::new();
    let with_tools = json!({
        "model": MODEL,
        "max_tokens": 3,
        "messages": [{"role": "user", "content": "weather in Dubai?"}],
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
        }}],
    });

    // Only a worker without tools: the proxy refuses, naming why (the engine's own refusal
    // would name the chat template instead).
    let chat = format!("{base}/v1/chat/completions");
    let (status, v) = post_json(&http, &chat, &with_tools).await;
    assert_eq!(status, 400);
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no worker of model test-model calls tools"),
        "{v}"
    );
    // Plain chat still works, and an empty `tools` list is no tools.
    for body in [
        json!({"model": MODEL, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": MODEL, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}], "tools": []}),
    ] {
        let (status, _) = post_json(&http, &chat, &body).await;
        assert_eq!(status, 200, "{body}");
    }

    // A Qwen3 worker of the same model joins: it announces tools, /v1/models says so, and
    // every tool request goes to it.
    let qwen = tempfile::tempdir().expect("tmp");
    write_safetensors_model(qwen.path(), &TinyModelConfig::tiny(Architecture::Qwen3))
        .expect("fixture");
    let backend = cocoon_node::worker::engine_backend::EngineBackend::load(
        &qwen.path().to_string_lossy(),
        Some(MODEL),
    )
    .await
    .expect("engine");
    net.add_worker_on(
        worker_settings(&WorkerSpec::new("qwen", 1000)),
        std::sync::Arc::new(backend),
    )
    .await;
    net.wait_ready(2).await;
    let models = get_json(&http, &format!("{base}/v1/models")).await;
    assert_eq!(models["data"][0]["features"], json!(["tools"]), "{models}");
    for _ in 0..4 {
        let response = http
            .post(format!("{base}/v1/chat/completions"))
            .json(&with_tools)
            .send()
            .await
            .expect("response");
        assert_eq!(
            response.status(),
            200,
            "tool requests go to the Qwen3 worker"
        );
        let v: Value = response.json().await.expect("json");
        assert!(
            v["usage"]["total_cost"].as_u64().is_some_and(|c| c > 0),
            "{v}"
        );
    }
}
