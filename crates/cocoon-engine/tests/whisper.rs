//! Whisper in the engine: a WAV through the audio endpoints (decoded, resampled, turned
//! into log-mel windows, decoded token by token), answered as OpenAI's `json` and
//! `verbose_json`, with the duration as usage. The weights are tiny random ones (a
//! stand-in for a real checkpoint): what is checked is the pipeline and the API, not what
//! the model hears.

use cocoon_engine::testing::{wav_bytes, write_whisper_gguf, write_whisper_model, TinyModelConfig};
use cocoon_engine::{Engine, EngineResponse, EngineSpec};
use serde_json::Value;

async fn engine() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = TinyModelConfig::tiny_whisper();
    write_whisper_model(dir.path(), &cfg).expect("fixture");
    let mut spec = EngineSpec::new(dir.path().to_string_lossy());
    spec.served_model_name = Some("openai/whisper-tiny".into());
    let engine = Engine::load(spec).await.expect("load");
    (dir, engine)
}

fn tone(rate: u32, seconds: f32) -> Vec<f32> {
    (0..(rate as f32 * seconds) as usize)
        .map(|i| (i as f32 * 440.0 * 2.0 * std::f32::consts::PI / rate as f32).sin() * 0.3)
        .collect()
}

/// A multipart form with `file` (named `name`) and text fields.
fn form(file: &[u8], name: &str, fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let b = "whisper-test-boundary";
    let mut body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(b"\r\n");
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    // A small budget: random weights rarely say <|endoftext|>.
    body.extend_from_slice(
        format!("--{b}\r\nContent-Disposition: form-data; name=\"max_tokens\"\r\n\r\n6\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={b}"), body)
}

async fn call(engine: &Engine, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    match engine
        .handle_with_type(path, Some(content_type), body)
        .await
    {
        EngineResponse::Json { status, body } => {
            (status, serde_json::from_slice(&body).expect("json"))
        }
        EngineResponse::Stream(_) => panic!("audio answers are JSON"),
    }
}

#[tokio::test]
async fn a_wav_is_transcribed_into_json_and_verbose_json() {
    let (_dir, engine) = engine().await;
    assert!(engine.transcribes());
    let wav = wav_bytes(&tone(44_100, 3.0), 44_100);

    let (ct, body) = form(&wav, "hello.wav", &[("model", "openai/whisper-tiny")]);
    let (status, v) = call(&engine, "/v1/audio/transcriptions", &ct, &body).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["text"].is_string(), "{v}");
    assert_eq!(v["usage"]["type"], "duration");
    assert!(
        (v["usage"]["seconds"].as_f64().expect("seconds") - 3.0).abs() < 0.01,
        "{v}"
    );

    let (ct, body) = form(&wav, "hello.wav", &[("response_format", "verbose_json")]);
    let (status, v) = call(&engine, "/v1/audio/transcriptions", &ct, &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["task"], "transcribe");
    assert!(
        ["english", "german", "russian"].contains(&v["language"].as_str().expect("language")),
        "a detected language the tokenizer knows: {v}"
    );
    assert!((v["duration"].as_f64().expect("duration") - 3.0).abs() < 0.01);
    for s in v["segments"].as_array().expect("segments") {
        let (start, end) = (
            s["start"].as_f64().expect("start"),
            s["end"].as_f64().expect("end"),
        );
        assert!(0.0 <= start && start <= end && end <= 30.0, "{s}");
    }

    // A given language is used; translation says so.
    let (ct, body) = form(
        &wav,
        "hello.wav",
        &[("language", "de"), ("response_format", "verbose_json")],
    );
    let (status, v) = call(&engine, "/v1/audio/translations", &ct, &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["language"], "german");
    assert_eq!(v["task"], "translate");
}

#[tokio::test]
async fn long_audio_runs_in_30_second_windows() {
    let (_dir, engine) = engine().await;
    let wav = wav_bytes(&tone(16_000, 41.0), 16_000);
    let (ct, body) = form(&wav, "long.wav", &[("response_format", "verbose_json")]);
    let (status, v) = call(&engine, "/v1/audio/transcriptions", &ct, &body).await;
    assert_eq!(status, 200, "{v}");
    assert!((v["duration"].as_f64().expect("duration") - 41.0).abs() < 0.01);
    for s in v["segments"].as_array().expect("segments") {
        assert!(s["end"].as_f64().expect("end") <= 41.0 + 1e-6, "{s}");
    }
}

#[tokio::test]
async fn what_whisper_cannot_take_is_refused_clearly() {
    let (_dir, engine) = engine().await;
    let wav = wav_bytes(&tone(16_000, 1.0), 16_000);
    let (ct, body) = form(b"this is not audio", "notes.txt", &[]);
    let (status, v) = call(&engine, "/v1/audio/transcriptions", &ct, &body).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "file");

    let (ct, body) = form(&wav, "a.wav", &[("response_format", "srt")]);
    let (status, v) = call(&engine, "/v1/audio/transcriptions", &ct, &body).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "response_format");

    let (ct, body) = form(&wav, "a.wav", &[("language", "klingon")]);
    let (status, v) = call(&engine, "/v1/audio/transcriptions", &ct, &body).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .expect("message")
        .contains("unknown language"));

    let (status, v) = call(
        &engine,
        "/v1/audio/transcriptions",
        "application/json",
        b"{}",
    )
    .await;
    assert_eq!(status, 400, "{v}");

    let chat = br#"{"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, v) = call(&engine, "/v1/chat/completions", "application/json", chat).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .expect("message")
        .contains("speech recognition model"));
}

#[tokio::test]
async fn a_quantized_gguf_whisper_transcribes_too() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = TinyModelConfig::tiny_whisper();
    write_whisper_gguf(dir.path(), &cfg).expect("fixture");
    let engine = Engine::load(EngineSpec::new(dir.path().to_string_lossy()))
        .await
        .expect("load");
    assert!(engine.transcribes());
    assert_eq!(engine.info().format, "gguf/whisper");
    let wav = wav_bytes(&tone(16_000, 2.0), 16_000);
    let (ct, body) = form(&wav, "a.wav", &[("response_format", "verbose_json")]);
    let (status, v) = call(&engine, "/v1/audio/transcriptions", &ct, &body).await;
    assert_eq!(status, 200, "{v}");
    assert!((v["duration"].as_f64().expect("duration") - 2.0).abs() < 0.01);
    assert!(v["text"].is_string());
}
