//! Embeddings through the network: text, batches and token ids reach the model server as
//! sent, the vectors come back (floats or base64), and the input is billed as prompt
//! tokens; nothing is reserved for a completion.

mod common;

use base64::Engine;
use cocoon_node::client::gateway::GatewaySettings;
use common::*;
use serde_json::{json, Value};

async fn embed(base: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/embeddings"))
        .json(&body)
        .send()
        .await
        .expect("response");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

#[tokio::test]
async fn embeddings_are_relayed_and_billed_as_prompt_tokens() {
    let net = start_network(&[WorkerSpec::new("w", 1000)]).await;
    let (base, _node) = start_gateway(&[net.client_addr], GatewaySettings::default()).await;

    let (status, v) = embed(&base, json!({"model": MODEL, "input": "hello"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"][0]["embedding"].as_array().map(Vec::len), Some(8));
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    // 5 prompt tokens at coefficient 1.0 and 2 nanoTON a token.
    assert_eq!(v["usage"]["total_cost"], 10, "{v}");
    let ledger = net.proxy.ledger();
    wait_until(|| ledger.client_tokens(&party("http-client")).unwrap_or(0) == 5).await;
    assert_eq!(ledger.worker_tokens(&party("w")).expect("ledger"), 5);

    let (status, v) = embed(
        &base,
        json!({"model": MODEL, "input": ["a", "b"], "encoding_format": "base64", "dimensions": 4}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let second = v["data"][1]["embedding"].as_str().expect("base64");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(second)
        .expect("decodes");
    let floats: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(floats, [1.0, 1.5, 2.0, 2.5]);
    assert_eq!(v["usage"]["total_cost"], 20);
    let seen = net
        .upstream
        .last_body
        .lock()
        .expect("lock")
        .clone()
        .expect("seen");
    assert_eq!(seen["dimensions"], 4, "dimensions reach the model server");

    let (status, v) = embed(&base, json!({"model": MODEL, "input": [[1, 2, 3], [4]]})).await;
    assert_eq!(status, 200, "token ids: {v}");

    let (status, v) = embed(&base, json!({"model": MODEL, "input": []})).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("message")
            .contains("input"),
        "{v}"
    );
}
