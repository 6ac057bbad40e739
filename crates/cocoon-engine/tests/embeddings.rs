//! An embedding model (laid out as Qwen3-Embedding ships: base weights without `model.`,
//! no LM head, last-token pooling) served by the engine: `/v1/embeddings` answers unit
//! vectors of the hidden size, the same text gives the same vector alone or in a batch,
//! `dimensions` truncates and renormalises, base64 carries the same floats, and the usage
//! counts the input tokens. The weights are tiny random ones (a stand-in for a real
//! checkpoint); what is checked is the pooling and the API, not the model's quality.

use base64::Engine as _;
use cocoon_engine::testing::{write_embedding_model, TinyModelConfig};
use cocoon_engine::{Architecture, Engine, EngineResponse, EngineSpec};
use serde_json::{json, Value};

async fn engine() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().expect("tmp");
    write_embedding_model(dir.path(), &TinyModelConfig::tiny(Architecture::Qwen3))
        .expect("fixture");
    let mut spec = EngineSpec::new(dir.path().to_string_lossy());
    spec.served_model_name = Some("Qwen/Qwen3-Embedding-0.6B".into());
    let engine = Engine::load(spec).await.expect("load");
    (dir, engine)
}

async fn call(engine: &Engine, path: &str, body: Value) -> (u16, Value) {
    match engine.handle(path, body.to_string().as_bytes()).await {
        EngineResponse::Json { status, body } => {
            (status, serde_json::from_slice(&body).expect("json"))
        }
        EngineResponse::Stream(_) => panic!("an embedding answer is never a stream"),
    }
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[tokio::test]
async fn embeddings_are_pooled_normalised_and_batch_independent() {
    let (_dir, engine) = engine().await;
    assert!(engine.embeds());
    let (status, alone) = call(&engine, "/v1/embeddings", json!({"input": "hello world"})).await;
    assert_eq!(status, 200, "{alone}");
    let v = floats(&alone["data"][0]["embedding"]);
    assert_eq!(v.len(), 64, "the hidden size");
    assert!((norm(&v) - 1.0).abs() < 1e-4, "unit length: {}", norm(&v));
    let tokens = alone["usage"]["prompt_tokens"].as_u64().expect("usage");
    assert!(tokens >= 2, "{alone}");

    let (status, batch) = call(
        &engine,
        "/v1/embeddings",
        json!({"model": "Qwen/Qwen3-Embedding-0.6B", "input": ["something else", "hello world"]}),
    )
    .await;
    assert_eq!(status, 200, "{batch}");
    let in_batch = floats(&batch["data"][1]["embedding"]);
    assert!(
        v.iter().zip(&in_batch).all(|(a, b)| (a - b).abs() < 1e-5),
        "the same text, alone or in a batch"
    );
    assert_ne!(floats(&batch["data"][0]["embedding"]), in_batch);
    assert_eq!(batch["data"][1]["index"], 1);

    let (status, short) = call(
        &engine,
        "/v1/embeddings",
        json!({"input": "hello world", "dimensions": 16, "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(status, 200, "{short}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(short["data"][0]["embedding"].as_str().expect("base64"))
        .expect("decodes");
    let short: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(short.len(), 16);
    assert!((norm(&short) - 1.0).abs() < 1e-4);
    // Truncation then renormalisation: proportional to the first 16 values.
    let scale = short[0] / v[0];
    assert!(short
        .iter()
        .zip(&v)
        .all(|(s, f)| (s - f * scale).abs() < 1e-4));

    let (status, ids) = call(
        &engine,
        "/v1/embeddings",
        json!({"input": [[1, 2, 3], [4, 5]]}),
    )
    .await;
    assert_eq!(status, 200, "{ids}");
    assert_eq!(ids["usage"]["prompt_tokens"], 5);
}

#[tokio::test]
async fn an_embedding_model_refuses_what_it_cannot_do() {
    let (_dir, engine) = engine().await;
    let (status, v) = call(
        &engine,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(v["error"]["message"]
        .as_str()
        .expect("message")
        .contains("embedding model"));
    for (body, param) in [
        (json!({"input": "x", "dimensions": 65}), "dimensions"),
        (json!({"input": [999_999]}), "input"),
        (json!({"input": []}), "input"),
    ] {
        let (status, v) = call(&engine, "/v1/embeddings", body).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["param"], param, "{v}");
    }
    let (status, v) = call(
        &engine,
        "/v1/embeddings",
        json!({"model": "other", "input": "x"}),
    )
    .await;
    assert_eq!(status, 404, "{v}");
}
