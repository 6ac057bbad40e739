//! The axum router over a real TCP socket: an OpenAI-shaped chat request answered as
//! JSON and as an SSE stream (parsed here), plus /v1/models and an error.

use cocoon_engine::testing::{write_safetensors_model, TinyModelConfig};
use cocoon_engine::{router, Architecture, Engine, EngineSpec};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Minimal HTTP/1.0 client (the server then delimits bodies by closing).
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .expect("status")
        .parse()
        .expect("num");
    (status, head, buf[split + 4..].to_vec())
}

#[tokio::test]
async fn router_serves_openai_json_and_sse() {
    let dir = tempfile::tempdir().expect("tmp");
    // Room for Qwen3's tool instructions in the prompt.
    let cfg = TinyModelConfig {
        max_position: 2048,
        ..TinyModelConfig::tiny(Architecture::Qwen3)
    };
    write_safetensors_model(dir.path(), &cfg).expect("fixture");
    let mut spec = EngineSpec::new(dir.path().to_string_lossy());
    spec.served_model_name = Some("Qwen/Qwen3-0.6B".into());
    let engine = Engine::load(spec).await.expect("load");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, router(engine)).await });

    let req = json!({
        "model": "Qwen/Qwen3-0.6B",
        "messages": [{"role": "user", "content": "What is COCOON?"}],
        "max_tokens": 10, "temperature": 0.7, "seed": 3, "ignore_eos": true,
    });
    let (status, head, body) = http(addr, "POST", "/v1/chat/completions", &req.to_string()).await;
    assert_eq!(status, 200);
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "Qwen/Qwen3-0.6B");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["usage"]["completion_tokens"], 10);
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string();

    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    sreq["stream_options"] = json!({"include_usage": true});
    let (status, head, body) = http(addr, "POST", "/v1/chat/completions", &sreq.to_string()).await;
    assert_eq!(status, 200);
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: text/event-stream"));
    let body = String::from_utf8(body).expect("utf8");
    let mut chunks = Vec::new();
    let mut done = false;
    for event in body.split("\n\n").filter(|e| !e.is_empty()) {
        assert!(!done, "data after [DONE]");
        let data = event.strip_prefix("data: ").expect("SSE data line");
        if data == "[DONE]" {
            done = true;
            continue;
        }
        chunks.push(serde_json::from_str::<Value>(data).expect("chunk"));
    }
    assert!(done, "missing [DONE]");
    let id = chunks[0]["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("chatcmpl-"));
    let mut streamed = String::new();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], id.as_str());
        assert!(c["created"].is_u64());
        if let Some(ch) = c["choices"].get(0) {
            assert_eq!(ch["index"], 0);
            assert!(ch.get("delta").is_some());
            if let Some(t) = ch["delta"]["content"].as_str() {
                streamed.push_str(t);
            }
        }
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let fin = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!(fin["finish_reason"], "length");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 10);
    assert_eq!(
        usage["usage"]["total_tokens"],
        usage["usage"]["prompt_tokens"].as_u64().expect("p") + 10
    );
    assert_eq!(streamed, text, "same seed: stream equals non-stream");

    let (status, _, body) = http(addr, "GET", "/v1/models", "").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["data"][0]["id"], "Qwen/Qwen3-0.6B");

    let (status, _, body) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        r#"{"model":"other","messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    assert_eq!(status, 404);
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"]["code"], "model_not_found");

    // Tools go to the chat template (Qwen3's knows them), the tool-call history too.
    let with_tools = json!({
        "messages": [
            {"role": "user", "content": "Weather in Dubai?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
              "function": {"name": "get_weather", "arguments": "{\"city\": \"Dubai\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "max_tokens": 4, "seed": 1
    });
    let (status, _, body) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        &with_tools.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert!(v["choices"][0]["message"]["tool_calls"].is_array());
    // A call cannot be forced: refused with the reason, not ignored.
    let mut forced = with_tools.clone();
    forced["tool_choice"] = json!("required");
    let (status, _, body) = http(addr, "POST", "/v1/chat/completions", &forced.to_string()).await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"]["param"], "tool_choice");
    let (status, _, body) = http(addr, "POST", "/v1/embeddings", r#"{"input":"x"}"#).await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"]["code"], "unsupported_endpoint");

    // Audio to a text model: a clear refusal, not a silent 404 or a wrong answer.
    let (status, _, body) = http(addr, "POST", "/v1/audio/transcriptions", "").await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"]["code"], "unsupported_endpoint");
    assert!(v["error"]["message"]
        .as_str()
        .expect("message")
        .contains("Qwen/Qwen3-0.6B"));
    server.abort();
}
