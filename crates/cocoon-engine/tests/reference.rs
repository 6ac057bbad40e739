//! Numerical check against an independent implementation: the logits of the tiny
//! deterministic checkpoints must match PyTorch/transformers' logits committed in
//! tests/data/reference_logits.json (produced by scripts/reference_logits.py).
//!
//! Tolerance: max |candle - torch| <= 1e-3 per logit (float32; observed ~1e-5).

use cocoon_engine::testing::{write_gguf_model, write_safetensors_model, TinyModelConfig};
use cocoon_engine::{Architecture, Engine, EngineSpec, GgmlDType};
use serde_json::Value;

const TOLERANCE: f32 = 1e-3;

fn reference() -> Value {
    let text = include_str!("data/reference_logits.json");
    serde_json::from_str(text).expect("reference json")
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
    let expected: Vec<Vec<f32>> = m["logits"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("f") as f32)
                .collect()
        })
        .collect();

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
