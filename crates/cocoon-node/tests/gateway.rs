//! The client's OpenAI HTTP API over a real network on loopback.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cocoon_node::gateway::GatewaySettings;
use cocoon_node::ledger::Ledger;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

async fn post(base: &str, path: &str, body: Value) -> (u16, reqwest::header::HeaderMap, String) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).expect("json"))
        .send()
        .await
        .expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body"))
}

fn error_of(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).expect("JSON error body");
    (
        v["error"]["type"].as_str().expect("type").to_owned(),
        v["error"]["code"].as_str().expect("code").to_owned(),
    )
}

#[tokio::test]
async fn chat_completion_with_cost_and_timing_headers() {
    let net = start_network(&[WorkerSpec::new("w", 1000)]).await;
    let (base, node) = start_gateway(&[net.client_addr], GatewaySettings::default()).await;
    let (status, headers, body) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_coefficient": 2000, "timeout": 30}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for h in [
        "x-cocoon-client-start",
        "x-cocoon-client-end",
        "x-cocoon-proxy-start",
        "x-cocoon-worker-start",
    ] {
        assert!(headers.contains_key(h), "missing {h}");
    }
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["usage"]["total_cost"], 268);
    // COCOON's extension fields were consumed, not forwarded.
    let seen = net
        .upstream
        .last_body
        .lock()
        .expect("lock")
        .clone()
        .expect("seen");
    assert!(seen.get("max_coefficient").is_none() && seen.get("timeout").is_none());
    assert_eq!(node.stats().requests_success.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn streamed_chat_arrives_chunk_by_chunk_with_usage() {
    let net = start_network(&[WorkerSpec::new("w", 1000)]).await;
    let (base, _) = start_gateway(&[net.client_addr], GatewaySettings::default()).await;
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": MODEL, "messages": [], "stream": true, "mock": {"chunks": 4, "delay_ms": 50}}))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut parts = 0;
    let mut text = String::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        parts += 1;
        text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
    }
    assert!(parts >= 3, "streamed in {parts} parts");
    let usage_line = text
        .lines()
        .find(|l| l.contains("\"usage\""))
        .expect("a usage event");
    let usage: Value = serde_json::from_str(usage_line.trim_start_matches("data: ")).expect("json");
    assert_eq!(usage["usage"]["total_cost"], 268);
    assert!(text.trim_end().ends_with("data: [DONE]"));
}

#[tokio::test]
async fn errors_are_openai_shaped_with_meaningful_statuses() {
    let mut settings = proxy_settings();
    settings.pseudo_client_tokens = 1500;
    let ledger = Arc::new(Ledger::open_in_memory(&settings.signing_key).expect("ledger"));
    let mut solo = WorkerSpec::new("solo", 1000);
    solo.max_active = 1;
    let net = start_network_with(&[solo], settings, ledger).await;
    let (base, _) = start_gateway(
        &[net.client_addr],
        GatewaySettings {
            max_body_bytes: 4096,
            ..GatewaySettings::default()
        },
    )
    .await;
    let client = reqwest::Client::new();
    // Malformed JSON.
    let r = client
        .post(format!("{base}/v1/chat/completions"))
        .body("{not json")
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 400);
    assert_eq!(
        error_of(&r.text().await.expect("t")).0,
        "invalid_request_error"
    );
    // Bad extension field.
    let (s, _, b) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [], "timeout": "soon"}),
    )
    .await;
    assert_eq!((s, error_of(&b).1.as_str()), (400, "invalid_request"));
    // Unknown model.
    let (s, _, b) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "nope", "messages": [], "max_coefficient": 100}),
    )
    .await;
    assert_eq!(
        (s, error_of(&b).1.as_str()),
        (404, "model_not_found"),
        "{b}"
    );
    // Balance too low for the reservation.
    let (s, _, b) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": []}),
    )
    .await;
    assert_eq!(
        (s, error_of(&b).1.as_str()),
        (402, "insufficient_balance"),
        "{b}"
    );
    // Worker-side validation (messages missing) comes back as 400.
    let (s, _, b) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": MODEL, "max_tokens": 100, "max_coefficient": 1000}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    // No free worker: the only slot is busy.
    let busy = {
        let base = base.clone();
        tokio::spawn(async move {
            post(&base, "/v1/chat/completions", json!({"model": MODEL, "messages": [], "max_tokens": 100, "max_coefficient": 1000, "mock": {"delay_ms": 600}})).await
        })
    };
    wait_until(|| net.proxy.running_requests() == 1).await;
    let (s, _, b) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [], "max_tokens": 100, "max_coefficient": 1000}),
    )
    .await;
    assert_eq!((s, error_of(&b).1.as_str()), (429, "no_free_worker"), "{b}");
    assert_eq!(busy.await.expect("task").0, 200);
    // Every worker above the caller's max_coefficient: also 429, naming the price.
    let (s, _, b) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [], "max_coefficient": 100}),
    )
    .await;
    assert_eq!((s, error_of(&b).1.as_str()), (429, "no_free_worker"), "{b}");
    assert!(b.contains("coefficient=1000"), "{b}");
    // Oversized body.
    let big =
        json!({"model": MODEL, "messages": [{"role": "user", "content": "x".repeat(10_000)}]});
    let (s, _, b) = post(&base, "/v1/chat/completions", big).await;
    assert_eq!((s, error_of(&b).1.as_str()), (413, "invalid_body"));
    // Unknown endpoint.
    let r = client
        .get(format!("{base}/v2/whatever"))
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn no_request_outlives_its_timeout() {
    let net = start_network(&[WorkerSpec::new("w", 1000)]).await;
    let (base, _) = start_gateway(&[net.client_addr], GatewaySettings::default()).await;
    let started = std::time::Instant::now();
    let (s, _, b) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [], "timeout": 0.5, "mock": {"delay_ms": 5000}}),
    )
    .await;
    assert_eq!((s, error_of(&b).1.as_str()), (504, "timeout"), "{b}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered at the timeout, not at the upstream's pace"
    );
}

#[tokio::test]
async fn hanging_up_cancels_upstream() {
    let net = start_network(&[WorkerSpec::new("w", 1000)]).await;
    let (base, node) = start_gateway(&[net.client_addr], GatewaySettings::default()).await;
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": MODEL, "messages": [], "stream": true, "mock": {"chunks": 200, "delay_ms": 30}}))
        .send()
        .await
        .expect("response");
    let mut stream = response.bytes_stream();
    stream.next().await.expect("first chunk").expect("ok");
    drop(stream);
    wait_until(|| net.upstream.streams_aborted.load(Ordering::SeqCst) == 1).await;
    wait_until(|| net.workers[0].active_requests() == 0).await;
    assert_eq!(node.stats().requests_cancelled.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn models_list_and_stats_endpoints() {
    let net = start_network(&[WorkerSpec::new("a", 1000), WorkerSpec::new("b", 2500)]).await;
    let (base, _) = start_gateway(&[net.client_addr], GatewaySettings::default()).await;
    let v: Value = reqwest::get(format!("{base}/v1/models"))
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert_eq!(v["data"][0]["id"], MODEL);
    let coefficients: Vec<i64> = v["data"][0]["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["coefficient"].as_i64().expect("c"))
        .collect();
    assert_eq!(coefficients, vec![1000, 2500]);
    post(
        &base,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": []}),
    )
    .await;
    let stats: Value = reqwest::get(format!("{base}/jsonstats"))
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["stats"]["success"], 1);
    assert_eq!(stats["proxies"][0]["protocol"], 3);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("r")
        .text()
        .await
        .expect("t");
    assert!(
        metrics.contains("cocoon_client_requests_success_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("cocoon_client_request_latency_seconds_count 1"));
}

#[tokio::test]
async fn failover_to_a_second_proxy() {
    // Two independent proxies, each with its own worker.
    let a = start_network(&[WorkerSpec::new("wa", 1000)]).await;
    let b = start_network(&[WorkerSpec::new("wb", 1000)]).await;
    let (base, node) =
        start_gateway(&[a.client_addr, b.client_addr], GatewaySettings::default()).await;
    for _ in 0..4 {
        let (s, _, body) = post(
            &base,
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": []}),
        )
        .await;
        assert_eq!(s, 200, "{body}");
    }
    // One proxy's session goes away; requests keep succeeding through the other.
    let sessions = node.open_sessions();
    sessions[0].close();
    wait_until(|| node.open_sessions().len() == 1).await;
    for _ in 0..4 {
        let (s, _, body) = post(
            &base,
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": []}),
        )
        .await;
        assert_eq!(s, 200, "{body}");
    }
    let total =
        a.proxy.ledger().request_count().expect("a") + b.proxy.ledger().request_count().expect("b");
    assert_eq!(total, 8);
}
