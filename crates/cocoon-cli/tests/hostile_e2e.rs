//! A devnet whose model server is hostile (`common::hostile_upstream`), driven through the
//! client's OpenAI API while honest streams run beside it. For each misbehaviour the test
//! asserts what the app gets, that the honest streams complete untouched, and at the end
//! that the money balances to the nanoTON: an absurd usage report moves no more money than
//! its request allowed, and nothing is parked in a contract without an owner.

use std::time::Duration;

use serde_json::{json, Value};

mod common;
use common::{free_port, hostile_upstream, stop, MODEL};

const COCOON: &str = env!("CARGO_BIN_EXE_cocoon");
const PRICE: u64 = 3;
const FEE: u64 = 2;

async fn post(http: &reqwest::Client, api: &str, body: Value) -> (u16, Vec<u8>) {
    let r = http
        .post(format!("{api}/chat/completions"))
        .json(&body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("an answer, never a hang");
    let status = r.status().as_u16();
    (status, r.bytes().await.expect("body").to_vec())
}

fn chat(hostile: &str) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "hostile": hostile})
}

fn error_message(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).expect("a JSON error body");
    v["error"]["message"].as_str().expect("message").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_model_server_moves_no_money_and_breaks_no_other_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let upstream = hostile_upstream().await;
    let port = free_port();
    let http = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{port}/v1");
    let devnet = common::start_devnet(
        COCOON,
        &state,
        upstream,
        port,
        dir.path().join("devnet.log"),
        PRICE,
        FEE,
        &[],
    );

    // Honest streams run through everything below.
    let streams: Vec<_> = (0..3)
        .map(|_| {
            let (http, api) = (http.clone(), api.clone());
            tokio::spawn(async move {
                let mut body = chat("slow_stream");
                body["stream"] = json!(true);
                body["chunks"] = json!(20);
                body["delay_ms"] = json!(150);
                post(&http, &api, body).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. Absurd usage, JSON: answered, billed within the request's bound.
    let (status, body) = post(&http, &api, chat("absurd_usage")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).expect("json");
    let cost = v["usage"]["total_cost"].as_u64().expect("total_cost");
    assert!(
        cost <= 4 * 2000 * PRICE,
        "an absurd report costs at most the reservation: {cost}"
    );

    // 2. Absurd usage, SSE: the stream completes, billed within the bound.
    let mut body = chat("absurd_usage_sse");
    body["stream"] = json!(true);
    let (status, sse) = post(&http, &api, body).await;
    assert_eq!(status, 200);
    let sse = String::from_utf8(sse).expect("utf8");
    assert!(sse.contains("[DONE]"), "{sse}");
    let usage_cost = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find_map(|v| v["usage"]["total_cost"].as_u64())
        .expect("the usage event carries its cost");
    assert!(usage_cost <= 4 * 2000 * PRICE, "{usage_cost}");

    // 3. A request body just under the 16 MiB frame: 413, alone.
    let big = json!({"model": MODEL, "messages": [{"role": "user", "content": "x".repeat((16 << 20) - 1000)}]});
    let (status, body) = post(&http, &api, big).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert!(error_message(&body).contains("max_body_bytes"));

    // 4. A 20 MB answer arrives whole, in parts.
    let (status, body) = post(&http, &api, chat("huge_answer")).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).expect("the whole answer is JSON");
    assert_eq!(
        v["choices"][0]["message"]["content"].as_str().map(str::len),
        Some(20_000_000)
    );

    // 5. Garbage answers become clear 502s (JSON) or an error event (SSE).
    for (hostile, needle) in [
        ("invalid_json", "not valid JSON"),
        ("binary", "not valid JSON"),
        ("html_500", "HTTP 500"),
    ] {
        let (status, body) = post(&http, &api, chat(hostile)).await;
        assert_eq!(status, 502, "{hostile}: {}", String::from_utf8_lossy(&body));
        let message = error_message(&body);
        assert!(message.contains(needle), "{hostile}: {message}");
    }
    let mut body = chat("binary_sse");
    body["stream"] = json!(true);
    let (status, sse) = post(&http, &api, body).await;
    assert_eq!(status, 200);
    let sse = String::from_utf8(sse).expect("only our error event reaches the app");
    assert!(sse.starts_with("data: {\"error\""), "{sse}");

    // The honest streams completed, every event intact.
    for s in streams {
        let (status, body) = s.await.expect("stream task");
        assert_eq!(status, 200);
        let text = String::from_utf8(body).expect("utf8");
        for i in 0..20 {
            assert!(
                text.contains(&format!("t{i} ")),
                "event {i} missing: {text}"
            );
        }
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    }

    tokio::task::spawn_blocking(move || stop(devnet, "-INT"))
        .await
        .expect("stopped");
    let tokens = common::assert_money_balances(&state, PRICE, FEE).await;
    assert!(tokens > 0, "the honest and bounded requests were billed");
    assert!(
        tokens < 100_000,
        "absurd reports were not booked: {tokens} tokens in all"
    );
}
