//! Audio transcription and translation through the network: the app's form reaches the
//! model server with COCOON's envelope fields taken out and the file byte for byte; the
//! answer is metered and priced like any other (token usage, or the audio's duration);
//! `text`, `srt` and `vtt` are rendered by the worker from `verbose_json`.

mod common;

use bytes::Bytes;
use cocoon_node::client::gateway::GatewaySettings;
use cocoon_node::protocol::multipart::{Form, Part};
use common::*;
use serde_json::Value;

/// A WAV-looking file with every byte value, so that nothing on the way may treat it as text.
fn audio_file() -> Vec<u8> {
    let mut file = b"RIFF\x24\x00\x00\x00WAVEfmt ".to_vec();
    file.extend((0..=255u8).cycle().take(4000));
    file
}

fn form(fields: &[(&str, &str)]) -> Form {
    let mut form = Form::new("cocoon-test-boundary");
    form.insert(Part {
        name: "file".into(),
        headers: vec![
            (
                "Content-Disposition".into(),
                "form-data; name=\"file\"; filename=\"hello.wav\"".into(),
            ),
            ("Content-Type".into(), "audio/wav".into()),
        ],
        value: Bytes::from(audio_file()),
    });
    for (name, value) in fields {
        form.set_text(name, value);
    }
    form
}

async fn send(base: &str, path: &str, form: &Form) -> (u16, String, String) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", form.content_type())
        .body(form.to_bytes())
        .send()
        .await
        .expect("response");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, content_type, response.text().await.expect("body"))
}

#[tokio::test]
async fn a_transcription_is_relayed_metered_and_priced() {
    let net = start_network(&[WorkerSpec::new("w", 1000)]).await;
    let (base, _node) = start_gateway(&[net.client_addr], GatewaySettings::default()).await;
    let (status, _, body) = send(
        &base,
        "/v1/audio/transcriptions",
        &form(&[
            ("model", MODEL),
            ("language", "en"),
            ("max_coefficient", "2000"),
            ("timeout", "30"),
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["text"], "Hello there.");
    assert_eq!(v["usage"]["input_tokens"], 40);
    assert!(
        v["usage"]["total_cost"].as_u64().is_some_and(|c| c > 0),
        "{v}"
    );
    let seen = net
        .upstream
        .last_form
        .lock()
        .expect("lock")
        .clone()
        .expect("form");
    assert_eq!(seen["file"], audio_file(), "the file arrives byte for byte");
    assert_eq!(seen["language"], b"en");
    assert_eq!(seen["model"], MODEL.as_bytes());
    assert!(
        !seen.contains_key("max_coefficient") && !seen.contains_key("timeout"),
        "COCOON's envelope fields are taken out: {:?}",
        seen.keys()
    );
    // Booked once, exactly the usage (40 + 6 tokens at 1.0×), both sides; the 10000-token
    // reservation is gone.
    let ledger = net.proxy.ledger();
    wait_until(|| ledger.client_tokens(&party("http-client")).unwrap_or(0) == 46).await;
    assert_eq!(ledger.worker_tokens(&party("w")).expect("ledger"), 46);
    assert_eq!(ledger.request_count().expect("ledger"), 1);
}

#[tokio::test]
async fn subtitles_are_rendered_by_the_worker_and_billed_by_duration() {
    let net = start_network(&[WorkerSpec::new("w", 1000)]).await;
    let (base, _node) = start_gateway(&[net.client_addr], GatewaySettings::default()).await;
    let (status, content_type, body) = send(
        &base,
        "/v1/audio/transcriptions",
        &form(&[("model", MODEL), ("response_format", "srt")]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert_eq!(body, "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n");
    let seen = net
        .upstream
        .last_form
        .lock()
        .expect("lock")
        .clone()
        .expect("form");
    assert_eq!(
        seen["response_format"], b"verbose_json",
        "asked for what can be metered"
    );

    let (status, content_type, body) = send(
        &base,
        "/v1/audio/translations",
        &form(&[("model", MODEL), ("response_format", "vtt")]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with("text/vtt"), "{content_type}");
    assert!(
        body.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\n"),
        "{body}"
    );

    // verbose_json passes through, with the usage its duration is billed by.
    let (status, _, body) = send(
        &base,
        "/v1/audio/transcriptions",
        &form(&[("model", MODEL), ("response_format", "verbose_json")]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["usage"]["type"], "duration");
    assert!(
        v["usage"]["total_cost"].as_u64().is_some_and(|c| c > 0),
        "{v}"
    );
}

#[tokio::test]
async fn bad_audio_requests_are_refused_clearly() {
    let net = start_network(&[WorkerSpec::new("w", 1000)]).await;
    let (base, _node) = start_gateway(&[net.client_addr], GatewaySettings::default()).await;
    let message = |body: &str| {
        let v: Value = serde_json::from_str(body).expect("JSON error");
        v["error"]["message"].as_str().expect("message").to_owned()
    };

    // Each refused with a 400 whose message names the field.
    let refused = |form: Form, field: &'static str| {
        let base = base.clone();
        async move {
            let (status, _, body) = send(&base, "/v1/audio/transcriptions", &form).await;
            assert_eq!(status, 400, "{body}");
            assert!(message(&body).contains(field), "{field}: {body}");
        }
    };
    let mut no_file = form(&[("model", MODEL)]);
    no_file.remove("file");
    refused(no_file, "'file' is required").await;
    refused(
        form(&[("model", MODEL), ("response_format", "mp3")]),
        "response_format",
    )
    .await;
    refused(
        form(&[("model", MODEL), ("max_coefficient", "lots")]),
        "max_coefficient",
    )
    .await;

    let response = reqwest::Client::new()
        .post(format!("{base}/v1/audio/transcriptions"))
        .header("content-type", "application/json")
        .body(r#"{"model":"test-model"}"#)
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), 400);
    let body = response.text().await.expect("body");
    assert!(message(&body).contains("multipart/form-data"), "{body}");
    assert_eq!(
        net.upstream
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing refused reached the model server"
    );
}

#[tokio::test]
async fn an_upload_over_the_limit_is_a_413_that_names_it() {
    let net = start_network(&[WorkerSpec::new("w", 1000)]).await;
    let settings = GatewaySettings {
        max_body_bytes: 3000,
        ..GatewaySettings::default()
    };
    let (base, _node) = start_gateway(&[net.client_addr], settings).await;
    let (status, _, body) = send(
        &base,
        "/v1/audio/transcriptions",
        &form(&[("model", MODEL)]),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("max_body_bytes"), "{body}");
    assert_eq!(
        net.upstream
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}
