//! The cocoon-engine half of `scripts/bench_speech_embeddings.sh`: Whisper transcription
//! and embedding throughput on random-weight checkpoints of real models' shapes.
//!
//! ```text
//! cargo run --release -p cocoon-engine --example bench_speech -- write DIR [EMBED_LAYERS]
//! cargo run --release -p cocoon-engine --example bench_speech -- run DIR [REPEAT]
//! ```
//!
//! `write` puts into DIR: `whisper/` (Whisper tiny's shape: d_model 384, 4 + 4 layers,
//! 6 heads, vocab 51865, Whisper's token layout; the special tokens, `<|endoftext|>` among
//! them, suppressed so that every run decodes exactly the token budget), `embedding/` (Qwen3-Embedding-0.6B's shape with EMBED_LAYERS layers,
//! default 28), `audio.wav` (30 s of a synthetic signal, 16 kHz) and `texts.json` (the
//! texts to embed). `run` prints one JSON line per workload with the best of REPEAT
//! (default 3) timed runs after a warm-up.

use std::path::Path;
use std::time::Instant;

use cocoon_engine::testing::{
    wav_bytes, write_embedding_model, write_whisper_model, TinyModelConfig,
};
use cocoon_engine::{Architecture, Engine, EngineResponse, EngineSpec};
use serde_json::{json, Value};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Tokens each transcription decodes (the same budget is given to faster-whisper).
const DECODE_TOKENS: usize = 32;
/// Whisper's text tokens; `<|endoftext|>` comes next.
const WHISPER_TEXT_TOKENS: u64 = 50_257;
/// Texts per embedding request, and their length in characters.
const TEXTS: usize = 16;
const TEXT_CHARS: usize = 120;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["write", dir, rest @ ..] => {
            write(Path::new(dir), rest.first().map(|l| l.parse()).transpose()?)
        }
        ["run", dir, rest @ ..] => run(
            Path::new(dir),
            rest.first().map(|r| r.parse()).transpose()?.unwrap_or(3),
        ),
        _ => Err("usage: bench_speech write DIR [EMBED_LAYERS] | run DIR [REPEAT]".into()),
    }
}

fn signal(seconds: usize) -> Vec<f32> {
    (0..seconds * 16_000)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            let tau = 2.0 * std::f32::consts::PI;
            0.4 * (tau * 220.0 * t).sin() * (0.5 + 0.5 * (tau * 2.0 * t).sin())
                + 0.1 * (tau * 1500.0 * t).sin()
        })
        .collect()
}

fn write(dir: &Path, embed_layers: Option<usize>) -> Result<()> {
    let whisper = dir.join("whisper");
    let cfg = TinyModelConfig {
        hidden: 384,
        layers: 4,
        heads: 6,
        vocab_size: Some(51_865),
        ..TinyModelConfig::tiny_whisper()
    };
    write_whisper_model(&whisper, &cfg)?;
    // Whisper's real token layout: 50257 text tokens, then the special and timestamp
    // tokens (the test tokenizer's few text tokens are padded with fillers that decode to words),
    // so that both engines treat the ids a random model picks as Whisper's would be.
    let path = whisper.join("tokenizer.json");
    let mut tokenizer: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let text_tokens = tokenizer["model"]["vocab"]
        .as_object()
        .map_or(0, |v| v.len()) as u64;
    let shift = WHISPER_TEXT_TOKENS - text_tokens;
    if let Some(vocab) = tokenizer["model"]["vocab"].as_object_mut() {
        for id in text_tokens..WHISPER_TEXT_TOKENS {
            vocab.insert(filler(id), json!(id));
        }
    }
    for added in tokenizer["added_tokens"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        added["id"] = json!(added["id"].as_u64().unwrap_or(0) + shift);
    }
    std::fs::write(&path, serde_json::to_vec(&tokenizer)?)?;
    let path = whisper.join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    for key in [
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "decoder_start_token_id",
    ] {
        config[key] = json!(config[key].as_u64().unwrap_or(0) + shift);
    }
    // Every special token below the timestamps is suppressed (`<|endoftext|>` too, so
    // that the budget is always decoded in full); both engines get the same list.
    let first_timestamp = tokenizer["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["content"] == "<|0.00|>")
        .and_then(|t| t["id"].as_u64())
        .ok_or("no <|0.00|> token")?;
    config["suppress_tokens"] = json!((WHISPER_TEXT_TOKENS..first_timestamp).collect::<Vec<_>>());
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;

    let mut cfg = TinyModelConfig::qwen3_0_6b(embed_layers.unwrap_or(28));
    cfg.arch = Architecture::Qwen3;
    write_embedding_model(&dir.join("embedding"), &cfg)?;

    std::fs::write(dir.join("audio.wav"), wav_bytes(&signal(30), 16_000))?;
    let words = [
        "the", "network", "runs", "models", "for", "apps", "that", "pay", "in", "toncoin",
    ];
    let texts: Vec<String> = (0..TEXTS)
        .map(|i| {
            let mut t = String::new();
            let mut w = i;
            while t.len() < TEXT_CHARS {
                t.push_str(words[w % words.len()]);
                t.push(' ');
                w = w * 7 + 3;
            }
            t.truncate(TEXT_CHARS);
            t
        })
        .collect();
    std::fs::write(dir.join("texts.json"), serde_json::to_vec(&texts)?)?;
    println!("{}", dir.display());
    Ok(())
}

/// A text token that decodes to a word of its own: " zq" and the id in letters.
fn filler(mut id: u64) -> String {
    let mut word = String::from("Ġzq");
    while id > 0 {
        word.push(char::from(b'a' + (id % 26) as u8));
        id /= 26;
    }
    word
}

fn form(file: &[u8]) -> (String, Vec<u8>) {
    let b = "bench-boundary";
    let mut body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"audio.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(b"\r\n");
    for (k, v) in [
        ("model", "whisper".to_owned()),
        ("language", "en".to_owned()),
        ("temperature", "0".to_owned()),
        ("response_format", "json".to_owned()),
        ("max_tokens", DECODE_TOKENS.to_string()),
    ] {
        body.extend_from_slice(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={b}"), body)
}

async fn best_of<F, Fut>(repeat: usize, mut f: F) -> Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    f().await?; // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..repeat {
        let t = Instant::now();
        f().await?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn json_of(r: EngineResponse) -> Result<Value> {
    match r {
        EngineResponse::Json { status: 200, body } => Ok(serde_json::from_slice(&body)?),
        EngineResponse::Json { status, body } => {
            Err(format!("status {status}: {}", String::from_utf8_lossy(&body)).into())
        }
        EngineResponse::Stream(_) => Err("unexpected stream".into()),
    }
}

#[tokio::main]
async fn run(dir: &Path, repeat: usize) -> Result<()> {
    let mut spec = EngineSpec::new(dir.join("whisper").to_string_lossy());
    spec.served_model_name = Some("whisper".into());
    let engine = Engine::load(spec).await?;
    let (content_type, body) = form(&std::fs::read(dir.join("audio.wav"))?);
    let seconds = best_of(repeat, || async {
        let v = json_of(
            engine
                .handle_with_type("/v1/audio/transcriptions", Some(&content_type), &body)
                .await,
        )?;
        // `<|endoftext|>` is suppressed: the budget is always decoded in full.
        if v["text"].as_str().is_none_or(str::is_empty) {
            return Err(format!("no text: {v}").into());
        }
        Ok(())
    })
    .await?;
    println!(
        "{}",
        json!({"workload": "whisper", "seconds": seconds, "audio_seconds": 30,
               "decode_tokens": DECODE_TOKENS})
    );
    // The share of it before decoding: log-mel and the encoder (plus one decoder step).
    let samples = signal(30);
    let sot = engine.tokenize("<|startoftranscript|>")?;
    let seconds = best_of(repeat, || async {
        engine.speech_probe(&samples, &sot)?;
        Ok(())
    })
    .await?;
    println!(
        "{}",
        json!({"workload": "whisper_encoder", "seconds": seconds, "audio_seconds": 30})
    );
    drop(engine);

    let mut spec = EngineSpec::new(dir.join("embedding").to_string_lossy());
    spec.served_model_name = Some("embedding".into());
    let engine = Engine::load(spec).await?;
    let texts: Value = serde_json::from_slice(&std::fs::read(dir.join("texts.json"))?)?;
    let body =
        json!({"model": "embedding", "input": texts, "encoding_format": "float"}).to_string();
    let tokens = std::sync::atomic::AtomicU64::new(0);
    let seconds = best_of(repeat, || async {
        let v = json_of(engine.handle("/v1/embeddings", body.as_bytes()).await)?;
        let n = v["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
        tokens.store(n, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    })
    .await?;
    let tokens = tokens.into_inner();
    println!(
        "{}",
        json!({"workload": "embeddings", "seconds": seconds, "texts": TEXTS, "tokens": tokens})
    );
    Ok(())
}
