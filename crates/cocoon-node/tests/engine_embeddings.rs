//! A worker on the embedded engine serving an embedding model: `/v1/embeddings` crosses
//! the network (client gateway, proxy, worker) and is billed as the prompt tokens the
//! engine counted; chat to it is refused with the reason. The model is a tiny random one
//! laid out as Qwen3-Embedding (a stand-in for real weights).
#![cfg(feature = "engine")]

mod common;

use cocoon_engine::testing::{write_embedding_model, TinyModelConfig};
use cocoon_engine::Architecture;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn embeddings_from_the_embedded_engine_through_the_network() {
    let dir = tempfile::tempdir().expect("tmp");
    write_embedding_model(dir.path(), &TinyModelConfig::tiny(Architecture::Qwen3))
        .expect("fixture");
    let (mut net, base, _node) = engine_network(dir.path()).await;
    let http = reqwest::Client::new();

    let response = http
        .post(format!("{base}/v1/embeddings"))
        .json(&json!({"model": MODEL, "input": ["hello", "world"], "dimensions": 32}))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    let v: Value = response.json().await.expect("json");
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["data"][0]["embedding"].as_array().map(Vec::len), Some(32));
    let tokens = v["usage"]["prompt_tokens"].as_u64().expect("tokens");
    assert!(tokens >= 2, "{v}");
    // Billed as prompt tokens at coefficient 1.0 and 2 nanoTON a token.
    assert_eq!(v["usage"]["total_cost"], tokens * 2, "{v}");

    // /v1/models says what the model's workers serve.
    let models = get_json(&http, &format!("{base}/v1/models")).await;
    assert_eq!(
        models["data"][0]["endpoints"],
        json!(["/v1/embeddings"]),
        "{models}"
    );

    // The worker announced what it serves: the proxy refuses chat for this model itself.
    let chat = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]});
    let chat_url = format!("{base}/v1/chat/completions");
    let (status, v) = post_json(&http, &chat_url, &chat).await;
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no worker of model test-model serves /v1/chat/completions"),
        "{v}"
    );

    // A second worker of the same model that can chat (an HTTP model server): every chat
    // goes to it, and embeddings still work.
    net.add_worker(&WorkerSpec::new("chatty", 1000)).await;
    net.wait_ready(2).await;
    for _ in 0..6 {
        let (status, _) = post_json(&http, &chat_url, &chat).await;
        assert_eq!(status, 200, "chat only goes to the worker that chats");
    }
    assert_eq!(
        net.upstream
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        6
    );
}
