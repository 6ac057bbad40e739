//! End-to-end tests of the engine on tiny random-weight checkpoints written by the
//! test itself (safetensors and GGUF), loaded through the real loaders.

use std::path::PathBuf;
use std::sync::OnceLock;

use cocoon_engine::testing::{write_gguf_model, write_safetensors_model, TinyModelConfig};
use cocoon_engine::{Architecture, Engine, EngineResponse, EngineSpec, GgmlDType, HubOptions};
use serde_json::{json, Value};

struct Fixtures {
    _dir: tempfile::TempDir,
    qwen3: PathBuf,
    llama: PathBuf,
    qwen3_q8: PathBuf,
    llama_q8: PathBuf,
    qwen3_f16: PathBuf,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tmp");
        let qwen3 = dir.path().join("qwen3");
        let llama = dir.path().join("llama");
        write_safetensors_model(&qwen3, &TinyModelConfig::tiny(Architecture::Qwen3)).expect("q");
        write_safetensors_model(&llama, &TinyModelConfig::tiny(Architecture::Llama)).expect("l");
        let qwen3_q8 = write_gguf_model(
            &dir.path().join("qwen3-gguf"),
            &TinyModelConfig::tiny(Architecture::Qwen3),
            GgmlDType::Q8_0,
        )
        .expect("gguf");
        let qwen3_f16 = write_gguf_model(
            &dir.path().join("qwen3-gguf"),
            &TinyModelConfig::tiny(Architecture::Qwen3),
            GgmlDType::F16,
        )
        .expect("gguf");
        let llama_q8 = write_gguf_model(
            &dir.path().join("llama-gguf"),
            &TinyModelConfig::tiny(Architecture::Llama),
            GgmlDType::Q8_0,
        )
        .expect("gguf");
        Fixtures {
            _dir: dir,
            qwen3,
            llama,
            qwen3_q8,
            llama_q8,
            qwen3_f16,
        }
    })
}

fn load(path: &std::path::Path, workers: usize) -> Engine {
    let mut spec = EngineSpec::new(path.to_string_lossy());
    spec.served_model_name = Some("tiny".into());
    spec.workers = workers;
    Engine::load_blocking(spec).expect("load")
}

async fn call(engine: &Engine, path: &str, body: Value) -> (u16, Value) {
    let r = engine.handle(path, body.to_string().as_bytes()).await;
    let status = r.status();
    assert!(matches!(r, EngineResponse::Json { .. }), "expected JSON");
    let bytes = r.into_bytes().await;
    (status, serde_json::from_slice(&bytes).expect("json body"))
}

/// Parses an SSE body into its `data:` payloads (JSON values), checking framing and
/// the final `[DONE]`.
fn parse_sse(body: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(body).expect("utf8");
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(
        events.last().copied(),
        Some("data: [DONE]"),
        "stream must end with [DONE]"
    );
    events[..events.len() - 1]
        .iter()
        .map(|e| {
            let payload = e.strip_prefix("data: ").expect("data: prefix");
            serde_json::from_str(payload).expect("chunk json")
        })
        .collect()
}

async fn call_stream(engine: &Engine, path: &str, body: Value) -> Vec<Value> {
    let r = engine.handle(path, body.to_string().as_bytes()).await;
    assert!(matches!(r, EngineResponse::Stream(_)), "expected a stream");
    parse_sse(&r.into_bytes().await)
}

fn stream_text(chunks: &[Value], chat: bool) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"].get(0).cloned())
        .filter_map(|ch| {
            if chat {
                ch["delta"]["content"].as_str().map(str::to_string)
            } else {
                ch["text"].as_str().map(str::to_string)
            }
        })
        .collect()
}

fn chat_body(extra: Value) -> Value {
    let mut b = json!({
        "model": "tiny",
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": "the cat is on the mat"}],
        "temperature": 0,
        "max_tokens": 12,
        "ignore_eos": true,
    });
    for (k, v) in extra.as_object().expect("obj") {
        b[k] = v.clone();
    }
    b
}

async fn generation_basics(engine: &Engine) {
    // Non-streaming.
    let (status, v) = call(engine, "/v1/chat/completions", chat_body(json!({}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().expect("id").starts_with("chatcmpl-"));
    assert_eq!(v["model"], "tiny");
    assert!(v["created"].as_u64().expect("created") > 1_600_000_000);
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "length");
    let text = choice["message"]["content"]
        .as_str()
        .expect("content")
        .to_string();
    assert!(!text.is_empty());

    // Usage: prompt tokens are exactly the rendered template's tokens.
    let msgs = chat_body(json!({}))["messages"]
        .as_array()
        .cloned()
        .expect("m");
    let prompt = engine
        .render_chat(&msgs, &Default::default())
        .expect("render");
    let n_prompt = engine.tokenize(&prompt).expect("tok").len();
    let u = &v["usage"];
    assert_eq!(u["prompt_tokens"], n_prompt);
    assert_eq!(u["completion_tokens"], 12);
    assert_eq!(u["total_tokens"], n_prompt + 12);
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 0);

    // Streaming yields the same text, with chunk shapes and a final usage chunk.
    let chunks = call_stream(
        engine,
        "/v1/chat/completions",
        chat_body(json!({"stream": true, "stream_options": {"include_usage": true}})),
    )
    .await;
    assert_eq!(stream_text(&chunks, true), text);
    let first = &chunks[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let id = first["id"].as_str().expect("id");
    assert!(chunks.iter().all(|c| c["id"] == id && c["model"] == "tiny"));
    let fin = &chunks[chunks.len() - 2];
    assert_eq!(fin["choices"][0]["finish_reason"], "length");
    let last = chunks.last().expect("usage chunk");
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 12);
    assert_eq!(last["usage"]["prompt_tokens"], n_prompt);

    // Without include_usage there is no usage chunk.
    let chunks = call_stream(
        engine,
        "/v1/chat/completions",
        chat_body(json!({"stream": true})),
    )
    .await;
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(stream_text(&chunks, true), text);

    // max_tokens is honoured.
    let (_, v) = call(
        engine,
        "/v1/chat/completions",
        chat_body(json!({"max_tokens": 3})),
    )
    .await;
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    // A stop string cuts the text before it (streaming and not).
    let chars: Vec<char> = text.chars().collect();
    let k = chars.len() / 2;
    let stop: String = chars[k..(k + 2).min(chars.len())].iter().collect();
    let pos = text.find(&stop).expect("stop inside text");
    let (_, v) = call(
        engine,
        "/v1/chat/completions",
        chat_body(json!({"stop": [stop]})),
    )
    .await;
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["content"], text[..pos], "stop={stop:?}");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["stop_reason"], stop);
    let chunks = call_stream(
        engine,
        "/v1/chat/completions",
        chat_body(json!({"stop": stop, "stream": true})),
    )
    .await;
    assert_eq!(stream_text(&chunks, true), text[..pos]);

    // A fixed seed is deterministic under sampling; n choices are all returned.
    let sampled = chat_body(json!({"temperature": 1.0, "seed": 1234, "n": 2, "top_p": 0.9}));
    let (_, a) = call(engine, "/v1/chat/completions", sampled.clone()).await;
    let (_, b) = call(engine, "/v1/chat/completions", sampled).await;
    assert_eq!(a["choices"], b["choices"]);
    assert_eq!(a["choices"].as_array().expect("choices").len(), 2);
    assert_eq!(a["usage"]["completion_tokens"], 24);
    assert_eq!(a["usage"]["prompt_tokens"], n_prompt);

    // /v1/completions, plain text prompt, echo.
    let body = json!({"model": "tiny", "prompt": "the cat", "max_tokens": 5, "temperature": 0,
                      "ignore_eos": true, "echo": true});
    let (status, v) = call(engine, "/v1/completions", body.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().expect("id").starts_with("cmpl-"));
    let ctext = v["choices"][0]["text"].as_str().expect("text");
    assert!(ctext.starts_with("the cat"));
    assert_eq!(v["usage"]["completion_tokens"], 5);
    let mut sbody = body;
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let chunks = call_stream(engine, "/v1/completions", sbody).await;
    assert_eq!(stream_text(&chunks, false), ctext);
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    assert_eq!(
        chunks.last().expect("usage")["usage"]["completion_tokens"],
        5
    );
}

#[tokio::test]
async fn qwen3_safetensors_generation() {
    generation_basics(&load(&fixtures().qwen3, 1)).await;
}

#[tokio::test]
async fn llama_safetensors_generation() {
    generation_basics(&load(&fixtures().llama, 1)).await;
}

#[tokio::test]
async fn qwen3_gguf_q8_generation() {
    generation_basics(&load(&fixtures().qwen3_q8, 1)).await;
}

#[tokio::test]
async fn llama_gguf_q8_generation() {
    generation_basics(&load(&fixtures().llama_q8, 1)).await;
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn gguf_quantized_logits_track_f32() {
    let f = fixtures();
    let reference = load(&f.qwen3, 1);
    let prompt = reference
        .tokenize("<|im_start|>user\nhello there<|im_end|>")
        .expect("tok");
    let want = reference.score(&prompt, &[5, 6, 7]).expect("score");
    for (path, min_cos) in [(&f.qwen3_f16, 0.9999), (&f.qwen3_q8, 0.999)] {
        let got = load(path, 1).score(&prompt, &[5, 6, 7]).expect("score");
        for (g, w) in got.iter().zip(&want) {
            let c = cosine(g, w);
            assert!(c > min_cos, "{}: cosine {c}", path.display());
        }
    }
}

#[tokio::test]
async fn reasoning_tokens_counted_for_think_span() {
    let engine = load(&fixtures().qwen3, 1);
    // The prompt opens a <think> span: every generated token is reasoning until
    // </think>.
    let body = json!({"prompt": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n",
                      "max_tokens": 8, "temperature": 0, "ignore_eos": true});
    let (_, v) = call(&engine, "/v1/completions", body).await;
    let text = v["choices"][0]["text"].as_str().expect("text");
    assert!(
        !text.contains("</think>"),
        "fixture generated </think>: {text:?}"
    );
    assert_eq!(v["usage"]["completion_tokens"], 8);
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        8
    );

    // enable_thinking=false: the template closes the span, nothing is reasoning.
    let mut body = chat_body(json!({"chat_template_kwargs": {"enable_thinking": false}}));
    body["max_tokens"] = json!(8);
    let (_, v) = call(&engine, "/v1/chat/completions", body.clone()).await;
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("text");
    assert!(!text.contains("<think>"));
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        0
    );
    let msgs = body["messages"].as_array().cloned().expect("m");
    let mut kw = serde_json::Map::new();
    kw.insert("enable_thinking".into(), json!(false));
    let prompt = engine.render_chat(&msgs, &kw).expect("render");
    assert!(prompt.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
}

#[tokio::test]
async fn errors_are_openai_shaped() {
    let engine = load(&fixtures().qwen3, 1);
    let bad = engine.handle("/v1/chat/completions", b"{not json").await;
    assert_eq!(bad.status(), 400);
    let v: Value = serde_json::from_slice(&bad.into_bytes().await).expect("json");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].is_string());

    let (s, v) = call(
        &engine,
        "/v1/chat/completions",
        json!({"model": "nope", "messages": [{"role":"user","content":"x"}]}),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["code"], "model_not_found");

    let (s, v) = call(
        &engine,
        "/v1/chat/completions",
        json!({"model": "tiny", "messages": []}),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["param"], "messages");

    let (s, _) = call(
        &engine,
        "/v1/chat/completions",
        chat_body(json!({"max_tokens": 100000})),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = call(&engine, "/v1/nothing", json!({})).await;
    assert_eq!(s, 404);

    let (s, v) = call(&engine, "/v1/models", json!(null)).await;
    assert_eq!(s, 200);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "tiny");
    assert_eq!(v["data"][0]["max_model_len"], 512);
}

#[tokio::test]
async fn concurrent_requests_match_sequential() {
    let engine = load(&fixtures().llama, 2);
    let bodies: Vec<Value> = (0..4)
        .map(|i| {
            chat_body(json!({"messages": [{"role": "user", "content": format!("question {i}")}]}))
        })
        .collect();
    let mut sequential = Vec::new();
    for b in &bodies {
        sequential
            .push(call(&engine, "/v1/chat/completions", b.clone()).await.1["choices"].clone());
    }
    let futs = bodies.iter().map(|b| {
        let e = engine.clone();
        let b = b.clone();
        tokio::spawn(async move { call(&e, "/v1/chat/completions", b).await.1["choices"].clone() })
    });
    let concurrent: Vec<Value> = futures::future::join_all(futs)
        .await
        .into_iter()
        .map(|r| r.expect("join"))
        .collect();
    assert_eq!(sequential, concurrent);
}

#[tokio::test]
async fn hub_id_offline_error_names_model_path() {
    let cache = tempfile::tempdir().expect("tmp");
    let mut spec = EngineSpec::new("Qwen/Qwen3-0.6B");
    spec.hub = HubOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        // Nothing listens on the discard port: behaves like no network.
        endpoint: Some("http://127.0.0.1:9".into()),
        offline: false,
        progress: false,
    };
    let err = Engine::load(spec.clone()).await.err().expect("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("--model PATH") && msg.contains("Qwen/Qwen3-0.6B"),
        "{msg}"
    );
    spec.hub.offline = true;
    let msg = Engine::load(spec)
        .await
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        msg.contains("--model PATH") && msg.contains("offline"),
        "{msg}"
    );
}

#[tokio::test]
async fn missing_path_is_a_clear_error() {
    let err = Engine::load(EngineSpec::new("/definitely/not/here"))
        .await
        .err()
        .expect("fail");
    assert!(err.to_string().contains("/definitely/not/here"));
}

#[tokio::test]
async fn full_queue_answers_429() {
    use futures::StreamExt;
    let mut spec = EngineSpec::new(fixtures().qwen3.to_string_lossy());
    spec.served_model_name = Some("tiny".into());
    spec.workers = 1;
    spec.queue_capacity = 1;
    let engine = Engine::load_blocking(spec).expect("load");
    let long = chat_body(json!({"max_tokens": 400, "stream": true}));
    // The first request occupies the only worker (it has started streaming) ...
    let EngineResponse::Stream(mut first) = engine
        .handle("/v1/chat/completions", long.to_string().as_bytes())
        .await
    else {
        panic!("expected a stream");
    };
    assert!(first.next().await.is_some());
    // ... the second one fills the queue ...
    let second = engine
        .handle("/v1/chat/completions", long.to_string().as_bytes())
        .await;
    assert_eq!(second.status(), 200);
    // ... so the third is refused.
    let (status, v) = call(&engine, "/v1/chat/completions", chat_body(json!({}))).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["code"], "too_many_requests");
    drop(first);
    drop(second);
}

async fn prefix_cache_case(path: &std::path::Path) {
    let cached_engine = load(path, 1);
    let mut spec = EngineSpec::new(path.to_string_lossy());
    spec.served_model_name = Some("tiny".into());
    spec.prefix_cache_tokens = 0;
    let plain_engine = Engine::load_blocking(spec).expect("load");

    let first = chat_body(json!({"messages": [{"role": "user", "content": "hello"}]}));
    let second = chat_body(json!({"messages": [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "more"}]}));
    let (_, a) = call(&cached_engine, "/v1/chat/completions", first.clone()).await;
    assert_eq!(a["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let n_first = a["usage"]["prompt_tokens"].as_u64().expect("n");

    // The same prompt again: fully cached, same output.
    let (_, again) = call(&cached_engine, "/v1/chat/completions", first).await;
    assert_eq!(
        again["usage"]["prompt_tokens_details"]["cached_tokens"],
        n_first
    );
    assert_eq!(again["choices"], a["choices"]);

    // A longer conversation reuses the first prompt's KV state, and generates exactly
    // what an engine without a prefix cache generates.
    let (_, b) = call(&cached_engine, "/v1/chat/completions", second.clone()).await;
    assert_eq!(
        b["usage"]["prompt_tokens_details"]["cached_tokens"], n_first,
        "{b}"
    );
    let (_, want) = call(&plain_engine, "/v1/chat/completions", second).await;
    assert_eq!(want["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(b["choices"], want["choices"]);
    assert_eq!(b["usage"]["prompt_tokens"], want["usage"]["prompt_tokens"]);
}

#[tokio::test]
async fn prefix_cache_reuses_prompt_kv() {
    let f = fixtures();
    prefix_cache_case(&f.qwen3).await;
    prefix_cache_case(&f.llama).await;
    prefix_cache_case(&f.llama_q8).await;
}

#[tokio::test]
async fn q4k_gguf_loads_and_generates() {
    // K-quants need rows that are multiples of 256.
    let dir = tempfile::tempdir().expect("tmp");
    for arch in [Architecture::Qwen3, Architecture::Llama] {
        let cfg = TinyModelConfig {
            hidden: 256,
            layers: 1,
            heads: 4,
            kv_heads: 2,
            head_dim: 64,
            intermediate: 256,
            ..TinyModelConfig::tiny(arch)
        };
        let st = dir.path().join(format!("{}-st", arch.as_str()));
        write_safetensors_model(&st, &cfg).expect("st");
        let gguf =
            write_gguf_model(&dir.path().join(arch.as_str()), &cfg, GgmlDType::Q4K).expect("gguf");
        let q = load(&gguf, 1);
        assert_eq!(q.info().format, "gguf/Q4K");
        let (status, v) = call(
            &q,
            "/v1/chat/completions",
            chat_body(json!({"max_tokens": 4})),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["usage"]["completion_tokens"], 4);
        let reference = load(&st, 1);
        let prompt = reference.tokenize("the cat is on the mat").expect("tok");
        let want = reference.score(&prompt, &[9]).expect("score");
        let got = q.score(&prompt, &[9]).expect("score");
        for (g, w) in got.iter().zip(&want) {
            let c = cosine(g, w);
            assert!(c > 0.97, "{arch:?} Q4K cosine {c}");
        }
    }
}

#[test]
fn engine_is_shareable_across_tasks() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<Engine>();
    fn assert_send<T: Send>() {}
    assert_send::<EngineResponse>();
}

#[tokio::test]
async fn streaming_n_choices_are_indexed() {
    let engine = load(&fixtures().qwen3, 1);
    let body = json!({"model": "tiny", "prompt": ["a b", "c d"], "n": 2, "max_tokens": 3,
                      "temperature": 0.8, "seed": 9, "ignore_eos": true, "stream": true,
                      "stream_options": {"include_usage": true}});
    let chunks = call_stream(&engine, "/v1/completions", body.clone()).await;
    let mut finished: Vec<u64> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .filter(|ch| ch["finish_reason"] == "length")
        .map(|ch| ch["index"].as_u64().expect("index"))
        .collect();
    finished.sort();
    assert_eq!(finished, vec![0, 1, 2, 3]);
    let usage = &chunks.last().expect("usage")["usage"];
    assert_eq!(usage["completion_tokens"], 12);
    let mut plain = body;
    plain["stream"] = json!(false);
    plain.as_object_mut().expect("obj").remove("stream_options");
    let (_, v) = call(&engine, "/v1/completions", plain).await;
    assert_eq!(v["choices"].as_array().expect("choices").len(), 4);
    assert_eq!(v["usage"]["prompt_tokens"], usage["prompt_tokens"]);
    for i in 0..4u64 {
        let streamed: String = chunks
            .iter()
            .filter_map(|c| c["choices"].get(0))
            .filter(|ch| ch["index"] == i)
            .filter_map(|ch| ch["text"].as_str())
            .collect();
        assert_eq!(v["choices"][i as usize]["text"], streamed, "choice {i}");
    }
}
