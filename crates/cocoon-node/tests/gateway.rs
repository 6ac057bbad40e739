//! The client's OpenAI HTTP API over a real network on loopback.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cocoon_node::client::gateway::GatewaySettings;
use cocoon_node::ledger::Ledger;
use cocoon_node::protocol::Refusal;
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
    let net = start_network_with(&[solo], settings, proxy_start(), ledger).await;
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
    assert_eq!((s, error_of(&b).1.as_str()), (413, "request_too_large"));
    assert!(b.contains("max_body_bytes"), "{b}");
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

/// A proxy that takes clients as the real one does in fake-TON mode (short auth) but
/// refuses every request the way a proxy switching to new root parameters does (§5.7).
/// After each refusal, if `then` is set, it points `dialer` there and closes the
/// connection, as the rotating proxy closes all connections and comes back with its new
/// contract. Returns its address and the number of requests it refused.
async fn rotating_proxy(
    dialer: GatedDialer,
    then: Option<std::net::SocketAddr>,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicU64>) {
    use cocoon_net::{ConnectionConfig, Incoming, RpcConnection};
    use cocoon_tl::functions::client as client_fn;
    use cocoon_tl::types::client;
    use cocoon_tl::TlConstructor;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = refused.clone();
    tokio::spawn(async move {
        let key = ed25519_dalek::SigningKey::from_bytes(&[77; 32]);
        let owner = cocoon_node::chain::devnet_address("rotating-proxy");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (dialer, counter, key, owner) =
                (dialer.clone(), counter.clone(), key.clone(), owner.clone());
            tokio::spawn(async move {
                let Ok(conn) =
                    RpcConnection::accept(stream, &ConnectionConfig::default(), "client").await
                else {
                    return;
                };
                let (handle, mut incoming) = conn.split();
                while let Some(item) = incoming.recv().await {
                    match item {
                        Incoming::Query(q) => match q.function_id() {
                            Some(client_fn::ConnectToProxy::ID) => {
                                let hello: client_fn::ConnectToProxy = q.decode().expect("hello");
                                let answer = proxy_hello_answer(&hello, &key, &owner, 3, 3);
                                let _ = q.answer(&answer).await;
                            }
                            Some(client_fn::AuthorizeWithProxyShort::ID) => {
                                let answer = proxy_authorized();
                                let _ = q.answer(&answer).await;
                            }
                            _ => {
                                let _ = q.error(651, "not served here").await;
                            }
                        },
                        Incoming::Packet(data) => {
                            if cocoon_tl::peek_id(&data) != Some(client_fn::RunQueryEx::ID) {
                                continue;
                            }
                            let query: client_fn::RunQueryEx =
                                cocoon_tl::from_bytes(&data).expect("runQueryEx");
                            counter.fetch_add(1, Ordering::SeqCst);
                            let answer: cocoon_tl::enums::client::QueryAnswerEx =
                                client::QueryAnswerErrorEx {
                                    request_id: query.request_id,
                                    error_code: Refusal::Rotating.code().code(),
                                    error: Refusal::Rotating.message(""),
                                    flags: 0,
                                    final_info: None,
                                }
                                .into();
                            let _ = handle.send_packet(&answer).await;
                            if let Some(next) = then {
                                dialer.set(Some(next));
                                handle.close();
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, refused)
}

#[tokio::test]
async fn a_request_waits_for_a_proxy_session_instead_of_failing_at_once() {
    let net = start_network(&[WorkerSpec::new("w", 1000)]).await;
    // The client's link cannot reach the proxy yet.
    let dialer = GatedDialer::default();
    let node = cocoon_node::client::gateway::ClientNode::new(GatewaySettings::default());
    node.spawn_proxy_link(
        "proxy".into(),
        Arc::new(dialer.clone()),
        client_settings("http-client"),
        cocoon_net::ConnectionConfig::default(),
    );
    let base = serve_gateway(&node).await;
    let request = {
        let base = base.clone();
        tokio::spawn(async move {
            post(
                &base,
                "/v1/chat/completions",
                json!({"model": MODEL, "messages": [], "timeout": 60}),
            )
            .await
        })
    };
    wait_until(|| node.stats().requests_received.load(Ordering::Relaxed) == 1).await;
    assert!(
        node.open_sessions().is_empty(),
        "the request arrived while no session was open"
    );
    // The proxy becomes reachable; the waiting request goes through.
    dialer.set(Some(net.client_addr));
    let (status, _, body) = tokio::time::timeout(Duration::from_secs(60), request)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(status, 200, "{body}");
    assert_eq!(net.proxy.ledger().request_count().expect("count"), 1);
    assert_eq!(node.stats().requests_success.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn no_ready_proxy_is_a_503_with_an_openai_error() {
    // The client's only proxy cannot be reached.
    let node = cocoon_node::client::gateway::ClientNode::new(GatewaySettings::default());
    node.spawn_proxy_link(
        "proxy".into(),
        Arc::new(GatedDialer::default()),
        client_settings("http-client"),
        cocoon_net::ConnectionConfig::default(),
    );
    let base = serve_gateway(&node).await;
    // The request waits for a session until its own timeout (1 s here), then gives up
    // with 503 (COCOON 9060ce5 answers 503 "no working proxy connections" too), not 502.
    let (status, _, body) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [], "timeout": 1}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        error_of(&body),
        ("api_error".to_owned(), "no_proxy".to_owned())
    );
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["error"]["message"], "no proxy connection is ready");
    // The model list too, at once.
    let response = reqwest::get(format!("{base}/v1/models"))
        .await
        .expect("response");
    assert_eq!(response.status().as_u16(), 503);
    let body = response.text().await.expect("body");
    assert_eq!(
        error_of(&body),
        ("api_error".to_owned(), "no_proxy".to_owned())
    );
}

#[tokio::test]
async fn a_request_refused_during_contract_rotation_is_sent_again_after_reconnecting() {
    let net = start_network(&[WorkerSpec::new("w", 1000)]).await;
    let dialer = GatedDialer::default();
    // The client first meets a proxy that is rotating its contracts; after refusing the
    // request it closes the connection and the link reconnects to the working proxy.
    let (rotating, refused) = rotating_proxy(dialer.clone(), Some(net.client_addr)).await;
    dialer.set(Some(rotating));
    let node = cocoon_node::client::gateway::ClientNode::new(GatewaySettings::default());
    node.spawn_proxy_link(
        "proxy".into(),
        Arc::new(dialer.clone()),
        client_settings("http-client"),
        cocoon_net::ConnectionConfig::default(),
    );
    let node2 = node.clone();
    wait_until(move || node2.open_sessions().len() == 1).await;
    let base = serve_gateway(&node).await;
    let (status, _, body) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [], "timeout": 60}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(refused.load(Ordering::SeqCst), 1);
    assert_eq!(net.proxy.ledger().request_count().expect("count"), 1);
    assert_eq!(node.stats().requests_success.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_rotation_refusal_is_retried_only_within_the_request_timeout() {
    // A proxy that keeps refusing and never reconnects: the request ends at its
    // timeout with the refusal, and the refusing session is not asked again.
    let dialer = GatedDialer::default();
    let (rotating, refused) = rotating_proxy(dialer.clone(), None).await;
    dialer.set(Some(rotating));
    let node = cocoon_node::client::gateway::ClientNode::new(GatewaySettings::default());
    node.spawn_proxy_link(
        "proxy".into(),
        Arc::new(dialer.clone()),
        client_settings("http-client"),
        cocoon_net::ConnectionConfig::default(),
    );
    let node2 = node.clone();
    wait_until(move || node2.open_sessions().len() == 1).await;
    let base = serve_gateway(&node).await;
    let (status, _, body) = tokio::time::timeout(
        Duration::from_secs(60),
        post(
            &base,
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": [], "timeout": 1}),
        ),
    )
    .await
    .expect("answered");
    assert_eq!(
        (status, error_of(&body).1.as_str()),
        (503, "unavailable"),
        "{body}"
    );
    assert!(body.contains("new root parameters"), "{body}");
    assert_eq!(refused.load(Ordering::SeqCst), 1);
}

/// The HTTP edge refuses at once, in OpenAI's JSON shape: an announced body above the
/// limit, a method a route does not serve, oversized headers, an oversized model name and
/// a `max_tokens` the wire cannot carry; upstream server headers never reach the app.
#[tokio::test]
async fn the_http_edge_refuses_at_once_with_json_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let net = start_network(&[WorkerSpec::new("w", 1000)]).await;
    let (base, _) = start_gateway(&[net.client_addr], GatewaySettings::default()).await;
    let client = reqwest::Client::new();

    // Content-Length: 10^14 and no body: 413 before anything is read.
    let addr = base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000000000\r\n\r\n")
        .await
        .expect("write");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut answer))
        .await
        .expect("answered at once, not held open")
        .expect("read");
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("request_too_large"), "{text}");

    // Wrong method: 405 with a JSON body.
    let r = client
        .get(format!("{base}/v1/chat/completions"))
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 405);
    let b = r.text().await.expect("body");
    assert_eq!(error_of(&b).1, "method_not_allowed", "{b}");

    // OPTIONS: 204 with the methods served, as COCOON's client answers it.
    let r = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/v1/chat/completions"),
        )
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, POST, OPTIONS")
    );

    // 100 KB of headers: 431 with a JSON body.
    let r = client
        .post(format!("{base}/v1/chat/completions"))
        .header("x-padding", "p".repeat(100_000))
        .body("{}")
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 431);
    let b = r.text().await.expect("body");
    assert_eq!(error_of(&b).1, "headers_too_large", "{b}");

    // A 100 KB model name is refused, not relayed (nor logged in full).
    let (s, _, b) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "m".repeat(100_000), "messages": []}),
    )
    .await;
    assert_eq!(
        (s, error_of(&b).1.as_str()),
        (400, "invalid_request"),
        "{b}"
    );
    assert!(b.contains("at most 1024 bytes"), "{b}");

    // max_tokens beyond what the wire carries: a limit error, not "balance too low".
    let (s, _, b) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [], "max_tokens": 1_000_000_000_000u64}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b.contains("'max_tokens' is 1000000000000; at most 2147483647"),
        "{b}"
    );

    // The upstream's identifying headers are dropped (the mock sends `server`).
    let (s, headers, b) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": []}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(!headers.contains_key("x-powered-by"), "{headers:?}");
    assert!(
        headers
            .get("server")
            .is_none_or(|v| v != "mock-model-server"),
        "{headers:?}"
    );

    // /v1/models gives each model a real creation time.
    let models: Value = client
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    assert!(models["data"][0]["created"].as_u64().expect("created") > 1_700_000_000);
}

/// A client that trickles its headers is cut off after the header read timeout instead of
/// holding a connection open forever.
#[tokio::test]
async fn trickled_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = cocoon_node::client::gateway::ClientNode::new(GatewaySettings::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(cocoon_node::http_server::serve_with(
        listener,
        node.router(),
        Duration::from_millis(500),
    ));
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    let closed = async {
        loop {
            // One header byte every 100 ms: never a complete head.
            if tcp.write_all(b"X").await.is_err() {
                return;
            }
            match tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {} // hyper may answer 408 before closing
                Err(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("the connection is closed after the header timeout");
    assert!(started.elapsed() >= Duration::from_millis(400));
}
