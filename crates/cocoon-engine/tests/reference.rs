//! Numerical check against an independent implementation: the logits of the tiny
//! deterministic checkpoints must match PyTorch/transformers' logits committed in
//! tests/data/reference_logits.json (produced by scripts/reference_logits.py); the tiny
//! Whisper's mel spectrogram, encoder output and decoder logits must match transformers'
//! (tests/data/reference_whisper.json) and the tiny Qwen3-Embedding's vectors
//! sentence-transformers' (tests/data/reference_embeddings.json), both produced by
//! scripts/reference_speech_embeddings.py.
//!
//! Tolerance: max |candle - torch| <= 1e-3 per value (float32; observed ~1e-5).

use cocoon_engine::testing::{
    write_embedding_model, write_gguf_model, write_safetensors_model, write_whisper_model,
    TinyModelConfig,
};
use cocoon_engine::{Architecture, Engine, EngineResponse, EngineSpec, GgmlDType};
use serde_json::Value;

const TOLERANCE: f32 = 1e-3;

fn reference() -> Value {
    let text = include_str!("data/reference_logits.json");
    serde_json::from_str(text).expect("reference json")
}

fn rows(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("f") as f32)
                .collect()
        })
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut m = 0f32;
    for (ra, rb) in a.iter().zip(b) {
        assert_eq!(ra.len(), rb.len());
        for (x, y) in ra.iter().zip(rb) {
            m = m.max((x - y).abs());
        }
    }
    m
}

fn check(arch: Architecture) {
    let r = reference();
    let m = &r["models"][arch.as_str()];
    let prompt = ids(&m["prompt"]);
    let cont = ids(&m["continuation"]);
    let expected = rows(&m["logits"]);

    let dir = tempfile::tempdir().expect("tmp");
    write_safetensors_model(dir.path(), &TinyModelConfig::tiny(arch)).expect("fixture");
    let engine =
        Engine::load_blocking(EngineSpec::new(dir.path().to_string_lossy())).expect("load");
    // The tokenizer must agree with transformers' too.
    let text = m["prompt_text"].as_str().expect("text");
    assert_eq!(engine.tokenize(text).expect("tokenize"), prompt);
    let got = engine.score(&prompt, &cont).expect("score");
    let d = max_diff(&got, &expected);
    eprintln!("{arch:?} safetensors/f32 vs transformers: max abs diff {d:e}");
    assert!(d <= TOLERANCE, "{arch:?}: max abs diff {d} > {TOLERANCE}");

    // GGUF F32 goes through candle's quantized model code (and, for Llama, the
    // llama.cpp q/k permutation): it must match the same reference.
    let gguf =
        write_gguf_model(dir.path(), &TinyModelConfig::tiny(arch), GgmlDType::F32).expect("gguf");
    let engine = Engine::load_blocking(EngineSpec::new(gguf.to_string_lossy())).expect("load");
    let got = engine.score(&prompt, &cont).expect("score");
    let d = max_diff(&got, &expected);
    eprintln!("{arch:?} gguf/F32 vs transformers: max abs diff {d:e}");
    assert!(
        d <= TOLERANCE,
        "{arch:?} gguf: max abs diff {d} > {TOLERANCE}"
    );
}

#[test]
fn qwen3_logits_match_transformers() {
    check(Architecture::Qwen3);
}

#[test]
fn llama_logits_match_transformers() {
    check(Architecture::Llama);
}

/// The synthetic signal of scripts/reference_speech_embeddings.py (computed in f64, then
/// rounded to f32 as numpy does).
fn signal(seconds: f64) -> Vec<f32> {
    let n = (16_000.0 * seconds) as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / 16_000.0;
            let tau = 2.0 * std::f64::consts::PI;
            let x = 0.5 * (tau * 440.0 * t).sin() * (0.5 + 0.5 * (tau * 3.0 * t).sin())
                + 0.2 * (tau * 1234.0 * t).sin();
            x as f32
        })
        .collect()
}

fn abs_sum(rows: &[Vec<f32>]) -> f64 {
    rows.iter().flatten().map(|x| f64::from(x.abs())).sum()
}

/// Checks `got` (rows) against each recorded slice: `{"start": s, "rows": [...]}`.
fn check_slices(what: &str, got: &[Vec<f32>], slices: &Value) {
    for slice in slices.as_array().expect("slices") {
        let start = slice["start"].as_u64().expect("start") as usize;
        let expected = rows(&slice["rows"]);
        let d = max_diff(&got[start..start + expected.len()], &expected);
        eprintln!("whisper {what} rows {start}..: max abs diff {d:e}");
        assert!(d <= TOLERANCE, "{what} from row {start}: max abs diff {d}");
    }
}

#[test]
fn whisper_matches_transformers() {
    let r: Value =
        serde_json::from_str(include_str!("data/reference_whisper.json")).expect("reference json");
    let dir = tempfile::tempdir().expect("tmp");
    write_whisper_model(dir.path(), &TinyModelConfig::tiny_whisper()).expect("fixture");
    let engine =
        Engine::load_blocking(EngineSpec::new(dir.path().to_string_lossy())).expect("load");
    let samples = signal(r["seconds"].as_f64().expect("seconds"));
    let probe = engine
        .speech_probe(&samples, &ids(&r["tokens"]))
        .expect("probe");

    // The log-mel spectrogram (our filters, candle's STFT) against transformers'
    // feature extractor, column slices by frame; then the whole of it by its sum.
    let frames: Vec<Vec<f32>> = (0..probe.mel[0].len())
        .map(|f| probe.mel.iter().map(|row| row[f]).collect())
        .collect();
    assert_eq!((probe.mel.len(), frames.len()), (80, 3000));
    check_slices("mel", &frames, &r["mel_columns"]);
    let relative = |got: f64, want: f64| (got - want).abs() / want.abs().max(1.0);
    let total = abs_sum(&probe.mel);
    let want = r["mel_abs_sum"].as_f64().expect("sum");
    assert!(relative(total, want) < 1e-4, "mel |sum| {total} vs {want}");

    // candle's Whisper computes GELU with the tanh approximation where the model was
    // trained with the exact one: against transformers running the same approximation the
    // encoder and logits match to float32 noise; against the model as trained they differ
    // by that approximation alone (~2e-4 in the encoder, ~1.3e-3 on logits of size ~30).
    assert_eq!(probe.encoder.len(), 1500);
    let tanh = &r["tanh_gelu"];
    check_slices("encoder (tanh GELU)", &probe.encoder, &tanh["encoder_rows"]);
    let d = max_diff(&probe.logits, &rows(&tanh["logits"]));
    eprintln!("whisper decoder logits (tanh GELU): max abs diff {d:e}");
    assert!(d <= TOLERANCE, "decoder logits: max abs diff {d}");

    const APPROXIMATION: f32 = 3e-3;
    for slice in r["encoder_rows"].as_array().expect("slices") {
        let start = slice["start"].as_u64().expect("start") as usize;
        let expected = rows(&slice["rows"]);
        let d = max_diff(&probe.encoder[start..start + expected.len()], &expected);
        assert!(d <= APPROXIMATION, "encoder (exact GELU) row {start}: {d}");
    }
    let total = abs_sum(&probe.encoder);
    let want = r["encoder_abs_sum"].as_f64().expect("sum");
    assert!(
        relative(total, want) < 1e-3,
        "encoder |sum| {total} vs {want}"
    );
    let d = max_diff(&probe.logits, &rows(&r["logits"]));
    eprintln!("whisper decoder logits (exact GELU, as trained): max abs diff {d:e}");
    assert!(
        d <= APPROXIMATION,
        "decoder logits (exact GELU): max abs diff {d}"
    );
}

#[tokio::test]
async fn embeddings_match_sentence_transformers() {
    let r: Value = serde_json::from_str(include_str!("data/reference_embeddings.json"))
        .expect("reference json");
    let dir = tempfile::tempdir().expect("tmp");
    write_embedding_model(dir.path(), &TinyModelConfig::tiny(Architecture::Qwen3))
        .expect("fixture");
    let mut spec = EngineSpec::new(dir.path().to_string_lossy());
    spec.served_model_name = Some("m".into());
    let engine = Engine::load(spec).await.expect("load");
    // One request with every text: batching must not change a vector.
    let body = serde_json::json!({"model": "m", "input": r["texts"], "encoding_format": "float"});
    let EngineResponse::Json { status, body } = engine
        .handle("/v1/embeddings", body.to_string().as_bytes())
        .await
    else {
        panic!("an embedding answer is never a stream");
    };
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).expect("json");
    let got: Vec<Vec<f32>> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| rows(&Value::Array(vec![d["embedding"].clone()])).remove(0))
        .collect();
    let d = max_diff(&got, &rows(&r["embeddings"]));
    eprintln!("embeddings vs sentence-transformers: max abs diff {d:e}");
    assert!(d <= TOLERANCE, "embeddings: max abs diff {d}");
}
