//! A worker on the embedded engine's Whisper: audio crosses the network (client gateway,
//! proxy, worker), `srt` is rendered by the worker from the engine's `verbose_json`, and the
//! request is billed by the audio's duration (10 tokens a second). The model is a tiny
//! random Whisper (a stand-in for real weights): the pipeline is checked, not the words.
#![cfg(feature = "engine")]

mod common;

use bytes::Bytes;
use cocoon_engine::testing::{wav_bytes, write_whisper_model, TinyModelConfig};
use cocoon_node::protocol::multipart::{Form, Part};
use common::*;

#[tokio::test]
async fn speech_through_the_network_to_the_embedded_whisper() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = TinyModelConfig::tiny_whisper();
    write_whisper_model(dir.path(), &cfg).expect("fixture");
    let (net, base, _node) = engine_network(dir.path()).await;

    let samples: Vec<f32> = (0..48_000)
        .map(|i| ((i as f32) * 0.05).sin() * 0.3)
        .collect();
    let mut form = Form::new("engine-audio");
    form.insert(Part {
        name: "file".into(),
        headers: vec![(
            "Content-Disposition".into(),
            "form-data; name=\"file\"; filename=\"three-seconds.wav\"".into(),
        )],
        value: Bytes::from(wav_bytes(&samples, 16_000)),
    });
    form.set_text("model", MODEL);
    form.set_text("response_format", "srt");
    form.set_text("max_tokens", "6");
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/audio/transcriptions"))
        .header("content-type", form.content_type())
        .body(form.to_bytes())
        .send()
        .await
        .expect("response");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.text().await.expect("body");
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("text/plain"),
        "{content_type}: {body}"
    );
    assert!(
        body.is_empty() || body.starts_with("1\n00:00:"),
        "an SRT transcript: {body:?}"
    );
    // 3 s of audio: 30 tokens, booked once on both sides.
    let ledger = net.proxy.ledger();
    wait_until(|| ledger.client_tokens(&party("http-client")).unwrap_or(0) == 30).await;
    assert_eq!(ledger.worker_tokens(&party("w")).expect("ledger"), 30);
}
