//! Prefill and decode throughput of a Qwen3-0.6B-shaped model with random weights
//! (generated here, nothing downloaded) at F32, BF16 (safetensors) and Q8_0, Q4_K
//! (GGUF), each reported against a plain candle matmul baseline measured in the
//! same run on the same machine.
//!
//! ```text
//! cargo bench -p cocoon-engine --bench engine
//! RUSTFLAGS="-C target-cpu=native" cargo bench -p cocoon-engine --bench engine
//! BENCH_LAYERS=4 BENCH_PROMPT=64 BENCH_DECODE=16 BENCH_FORMATS=f32,q4k cargo bench ...
//! ```
//!
//! Baselines (re-measured right after each row): `matvec` is a (1 x 1024) *
//! (1024 x 3072)^T f32 candle matmul (the decode bottleneck shape), `matmul` the same
//! with as many rows as the prompt (prefill shape). The ratio
//! columns are the model's effective GFLOP/s (2 FLOPs per matmul parameter and token,
//! attention ignored; in prefill the LM head runs for the last position only)
//! divided by the baseline's GFLOP/s.

use std::time::Instant;

use candle_core::{Device, Tensor};
use cocoon_engine::testing::{write_gguf_model, write_safetensors_model, TinyModelConfig};
use cocoon_engine::{Engine, EngineSpec, GgmlDType, WeightDType};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn gflops_matmul(rows: usize) -> candle_core::Result<f64> {
    let dev = Device::Cpu;
    let a = Tensor::randn(0f32, 1.0, (rows, 1024), &dev)?;
    let w = Tensor::randn(0f32, 1.0, (3072, 1024), &dev)?;
    let wt = w.t()?;
    let _ = a.matmul(&wt)?; // warm-up
    let iters = if rows == 1 { 400 } else { 20 };
    let t = Instant::now();
    for _ in 0..iters {
        let _ = a.matmul(&wt)?;
    }
    let secs = t.elapsed().as_secs_f64();
    Ok(2.0 * (rows * 1024 * 3072 * iters) as f64 / secs / 1e9)
}

/// Matmul parameters of the decoder layers and of the LM head (the embedding lookup
/// is free).
fn params(cfg: &TinyModelConfig) -> (f64, f64) {
    let h = cfg.hidden;
    let per_layer = h * cfg.heads * cfg.head_dim * 2
        + h * cfg.kv_heads * cfg.head_dim * 2
        + 3 * h * cfg.intermediate;
    (
        (cfg.layers * per_layer) as f64,
        (cfg.vocab_size.unwrap_or(0) * h) as f64,
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful.
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let layers = env("BENCH_LAYERS", 28);
    let prompt_len = env("BENCH_PROMPT", 128);
    let decode = env("BENCH_DECODE", 32);
    let formats = std::env::var("BENCH_FORMATS").unwrap_or_else(|_| "f32,bf16,q8_0,q4k".into());
    let cfg = TinyModelConfig::qwen3_0_6b(layers);
    let (layer_params, head_params) = params(&cfg);
    // Decode runs every matmul per token; prefill runs the LM head only for the last
    // position.
    let decode_flop = 2.0 * (layer_params + head_params);
    let prefill_flop = 2.0 * (layer_params * prompt_len as f64 + head_params);

    println!("cocoon-engine benchmark: Qwen3-0.6B shape, {layers} layers, random weights");
    println!(
        "CPU threads: {}, prompt {prompt_len} tokens, decode {decode} tokens",
        candle_core::utils::get_num_threads()
    );
    #[cfg(target_arch = "x86_64")]
    println!(
        "CPU (runtime): avx2={} fma={} avx512f={}; compiled with target-cpu avx2={} fma={} \
         (RUSTFLAGS=\"-C target-cpu=native\" enables them at compile time)",
        std::arch::is_x86_feature_detected!("avx2"),
        std::arch::is_x86_feature_detected!("fma"),
        std::arch::is_x86_feature_detected!("avx512f"),
        cfg!(target_feature = "avx2"),
        cfg!(target_feature = "fma"),
    );
    println!(
        "baselines are re-measured after each row (candle f32 matvec 1x1024x3072 and \
         matmul {prompt_len}x1024x3072), so a busy machine skews rows less\n"
    );
    println!(
        "{:<6} {:>11} {:>10} {:>10} {:>11} {:>10} {:>10} {:>7}",
        "format", "prefill t/s", "mm GF/s", "ratio", "decode t/s", "mv GF/s", "ratio", "load s"
    );

    let dir = tempfile::tempdir()?;
    let st_dir = dir.path().join("st");
    let need_st = formats.contains("f32") || formats.contains("bf16");
    if need_st {
        write_safetensors_model(&st_dir, &cfg)?;
    }
    let prompt: Vec<u32> = (0..prompt_len as u32).map(|i| (i * 37) % 270).collect();
    let cont: Vec<u32> = (0..decode as u32).map(|i| (i * 11) % 270).collect();
    for fmt in formats.split(',') {
        let (path, dtype) = match fmt {
            "f32" => (st_dir.clone(), Some(WeightDType::F32)),
            "bf16" => (st_dir.clone(), Some(WeightDType::BF16)),
            "f16" => (st_dir.clone(), Some(WeightDType::F16)),
            "q8_0" => (write_gguf_model(dir.path(), &cfg, GgmlDType::Q8_0)?, None),
            "q4k" => (write_gguf_model(dir.path(), &cfg, GgmlDType::Q4K)?, None),
            other => {
                eprintln!("unknown format {other}");
                continue;
            }
        };
        let mut spec = EngineSpec::new(path.to_string_lossy());
        spec.dtype = dtype;
        let t = Instant::now();
        let engine = Engine::load_blocking(spec)?;
        let load_s = t.elapsed().as_secs_f64();
        let _ = engine.score(&prompt[..8], &[])?; // warm-up
                                                  // Best of two runs each. Prefill: the whole prompt in one forward pass.
                                                  // Decode: a 1-token prompt, then `decode` single-token steps through the KV
                                                  // cache (`decode + 1` forward passes of one token).
        let mut prefill_s = f64::MAX;
        let mut decode_s = f64::MAX;
        for _ in 0..2 {
            let t = Instant::now();
            let _ = engine.score(&prompt, &[])?;
            prefill_s = prefill_s.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let _ = engine.score(&prompt[..1], &cont)?;
            decode_s = decode_s.min(t.elapsed().as_secs_f64());
        }
        let prefill_tps = prompt_len as f64 / prefill_s;
        let decode_tps = (decode + 1) as f64 / decode_s;
        let mv = gflops_matmul(1)?;
        let mm = gflops_matmul(prompt_len)?;
        println!(
            "{:<6} {:>11.1} {:>10.1} {:>9.2}x {:>11.2} {:>10.1} {:>9.2}x {:>7.1}",
            fmt,
            prefill_tps,
            mm,
            prefill_flop / prefill_s / 1e9 / mm,
            decode_tps,
            mv,
            decode_tps * decode_flop / 1e9 / mv,
            load_s
        );
        if fmt == "bf16" {
            std::fs::remove_dir_all(&st_dir).ok();
        }
    }
    Ok(())
}
