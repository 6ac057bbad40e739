//! `cocoon bot` end to end: the real binary against a stand-in Bot API server
//! (`common::bot_api`, a stand-in for Telegram's servers) and `cocoon devnet --upstream
//! <mock>`. Text is answered as a streamed, edited message; a long answer is split; a voice
//! message is fetched, transcribed through the network and answered with its transcript
//! quoted; `/cost` is the exact sum of the answers' costs; `/reset` empties the history;
//! group messages need a mention; a 429 is waited out; a restart answers nothing twice;
//! `/model`, `/transcribe`, an unreachable gateway, webhook mode and the allow-list.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::bot_api::BotApi;
use common::*;
use serde_json::{json, Value};

fn start_bot(
    telegram: std::net::SocketAddr,
    api: &str,
    db: &std::path::Path,
    log: &std::path::Path,
    extra: &[&str],
) -> Proc {
    let log = std::fs::File::create(log).expect("log");
    Proc(
        Command::new(env!("CARGO_BIN_EXE_cocoon"))
            .args([
                "bot",
                "--token",
                "123456:TEST",
                "--api",
                api,
                "--telegram-api",
                &format!("http://{telegram}"),
                "--db",
                &db.display().to_string(),
                "--system-prompt",
                "Be brief.",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn cocoon bot"),
    )
}

/// `cocoon devnet --upstream <mock>` in `dir`; its OpenAI base URL.
async fn devnet(dir: &std::path::Path) -> (Proc, String) {
    let upstream = mock_upstream().await;
    let port = free_port();
    let devnet = start_devnet(
        env!("CARGO_BIN_EXE_cocoon"),
        &dir.join("devnet"),
        upstream,
        port,
        dir.join("devnet.log"),
        2,
        1,
        &[],
    );
    (devnet, format!("http://127.0.0.1:{port}/v1"))
}

/// What one chat answer and one transcription cost on this devnet, asked of the gateway
/// directly with the requests the bot makes.
async fn unit_costs(api: &str) -> (u64, u64) {
    let http = reqwest::Client::new();
    let chat: Value = http
        .post(format!("{api}/chat/completions"))
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("chat")
        .json()
        .await
        .expect("json");
    let (content_type, body) = audio_form(b"x", &[("model", MODEL), ("response_format", "json")]);
    let audio: Value = http
        .post(format!("{api}/audio/transcriptions"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("audio")
        .json()
        .await
        .expect("json");
    (
        chat["usage"]["total_cost"].as_u64().expect("chat cost"),
        audio["usage"]["total_cost"].as_u64().expect("audio cost"),
    )
}

/// Prints the bot's logs when the test fails (its temporary directory goes away).
struct LogsOnFailure(std::path::PathBuf);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in ["bot1.log", "bot2.log", "bot3.log", "webhook.log"] {
                let text = std::fs::read_to_string(self.0.join(name)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                eprintln!("--- {name} (end) ---");
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_answers_text_and_voice_through_the_network() {
    let dir = tempfile::tempdir().expect("tmp");
    let _logs = LogsOnFailure(dir.path().to_owned());
    let (_devnet, api) = devnet(dir.path()).await;
    let (chat_cost, audio_cost) = unit_costs(&api).await;
    let (telegram, telegram_addr) = BotApi::start().await;
    let db = dir.path().join("bot.sqlite");
    let mut bot = start_bot(telegram_addr, &api, &db, &dir.path().join("bot1.log"), &[]);

    // A private text: the mock's streamed "o", "k" ends as the message "ok".
    telegram.text(1, "hello");
    telegram
        .wait_for(1, "the answer to hello", |m| m == ["ok"])
        .await;
    let calls = telegram.calls();
    assert!(calls
        .iter()
        .any(|c| c.method == "sendChatAction" && c.params["action"] == "typing"));
    let sent = calls
        .iter()
        .find(|c| c.method == "sendMessage")
        .expect("sent");
    assert!(
        sent.params["reply_parameters"]["message_id"].is_i64(),
        "{:?}",
        sent.params
    );

    // The next question carries the history and the system prompt.
    telegram.text(1, "and then?");
    telegram
        .wait_for(1, "the second answer", |m| m.len() == 2)
        .await;
    let last = last_chat_request();
    let roles: Vec<&str> = last["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["role"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"], "{last}");

    // /reset: the next request has no earlier turns.
    telegram.text(1, "/reset");
    telegram
        .wait_for(1, "the reset", |m| m.iter().any(|t| t.contains("forgot")))
        .await;
    telegram.text(1, "fresh start");
    telegram
        .wait_for(1, "the answer after reset", |m| m.len() == 4)
        .await;
    let last = last_chat_request();
    assert_eq!(
        last["messages"].as_array().map(Vec::len),
        Some(2),
        "system + the new question: {last}"
    );

    // A long answer, streamed slowly: edits on the way, split past 4096 characters, and
    // all of it shown in the end.
    telegram.text(2, "please give a long answer");
    let full = long_answer();
    let shown = telegram
        .wait_for(2, "the long answer", |m| {
            m.concat().replace(['\n', ' '], "") == full.replace(['\n', ' '], "")
        })
        .await;
    assert!(shown.len() >= 3, "{} messages", shown.len());
    assert!(shown.iter().all(|t| t.chars().count() <= 4096));
    let edits = telegram
        .calls()
        .iter()
        .filter(|c| c.method == "editMessageText" && c.params["chat_id"] == 2)
        .count();
    assert!(edits >= 1, "the answer was edited while it streamed");

    // /model lists what the gateway serves and refuses a name it does not.
    telegram.text(1, "/model");
    telegram
        .wait_for(1, "the model list", |m| {
            m.iter().any(|t| t.contains(&format!("• {MODEL} (")))
        })
        .await;
    telegram.text(1, "/model no-such-model");
    telegram
        .wait_for(1, "the refused model", |m| {
            m.iter().any(|t| t.contains("No chat model named"))
        })
        .await;

    // A voice message (a WAV): fetched, transcribed through the network, quoted, then
    // answered.
    let voice = wav(1.0);
    telegram.voice(3, &voice);
    let m = telegram
        .wait_for(3, "the voice answer", |m| m.len() == 2)
        .await;
    assert!(
        m[0].contains(&transcript_of(&voice)),
        "the transcript is quoted: {m:?}"
    );
    assert_eq!(m[1], "ok");
    // /transcribe: the next voice message gets its transcript only.
    telegram.text(3, "/transcribe");
    telegram
        .wait_for(3, "transcribe mode", |m| m.len() == 3)
        .await;
    let voice2 = wav(0.5);
    telegram.voice(3, &voice2);
    let m = telegram
        .wait_for(3, "the transcript", |m| m.len() == 4)
        .await;
    assert!(m[3].contains(&transcript_of(&voice2)), "{m:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(telegram.messages(3).len(), 4, "a transcript, no answer");

    // /cost: the exact sum of what the answers cost (chat 1: three answers).
    telegram.text(1, "/cost");
    let m = telegram
        .wait_for(1, "the cost", |m| {
            m.iter().any(|t| t.starts_with("This chat"))
        })
        .await;
    let report = m
        .iter()
        .find(|t| t.starts_with("This chat"))
        .expect("report");
    assert!(
        report.contains(&format!("This chat: {} nanoTON", 3 * chat_cost)),
        "{report}"
    );
    // Chat 1: three answers; chat 2: one; chat 3: a transcription and its answer, then a
    // transcription alone.
    let total = 3 * chat_cost + chat_cost + (audio_cost + chat_cost) + audio_cost;
    assert!(
        report.contains(&format!("All chats: {total} nanoTON")),
        "{report} (expected {total})"
    );

    // Groups: ignored without a mention, answered with one.
    telegram.group_text(-50, 4, "just chatting");
    telegram.group_text(-50, 4, "@cocoon_test_bot what do you think?");
    telegram
        .wait_for(-50, "the group answer", |m| m == ["ok"])
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        telegram.messages(-50).len(),
        1,
        "the message without a mention got nothing"
    );

    // Markup Telegram refuses: the answer is shown as plain text instead.
    telegram.refuse_next_markup(1);
    telegram.text(8, "hi");
    telegram
        .wait_for(8, "the plain answer", |m| m == ["ok"])
        .await;
    let calls = telegram.calls();
    let refused = calls
        .iter()
        .position(|c| c.markup_refused && c.params["chat_id"] == 8)
        .expect("markup refused");
    assert!(
        calls[refused..].iter().any(|c| c.params["chat_id"] == 8
            && !c.markup_refused
            && c.params.get("parse_mode").is_none_or(Value::is_null)
            && c.params["text"] == "ok"),
        "the same text went again without markup"
    );

    // A 429 on send: waited out, then delivered.
    telegram.throttle_next_sends(1);
    telegram.text(5, "hi");
    telegram
        .wait_for(5, "the answer after a 429", |m| m == ["ok"])
        .await;
    let calls = telegram.calls();
    let throttled = calls
        .iter()
        .find(|c| c.throttled)
        .expect("a 429 was served");
    let retry = calls
        .iter()
        .find(|c| c.method == "sendMessage" && c.params["chat_id"] == 5 && !c.throttled)
        .expect("retried");
    assert!(
        retry.at.duration_since(throttled.at) >= Duration::from_millis(900),
        "retry_after was waited out"
    );

    // A restart: nothing is answered twice; the store still knows the chat.
    let before: usize = telegram
        .calls()
        .iter()
        .filter(|c| c.method == "sendMessage")
        .count();
    let _ = bot.0.kill();
    let _ = bot.0.wait();
    bot = start_bot(telegram_addr, &api, &db, &dir.path().join("bot2.log"), &[]);
    telegram.text(6, "after the restart");
    telegram
        .wait_for(6, "the answer after the restart", |m| m == ["ok"])
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: usize = telegram
        .calls()
        .iter()
        .filter(|c| c.method == "sendMessage")
        .count();
    assert_eq!(after, before + 1, "only the new update was answered");

    // The gateway unreachable: a polite message, and the bot keeps serving.
    let _ = bot.0.kill();
    let _ = bot.0.wait();
    bot = start_bot(
        telegram_addr,
        &format!("http://127.0.0.1:{}/v1", free_port()),
        &db,
        &dir.path().join("bot3.log"),
        &[],
    );
    telegram.text(7, "anyone there?");
    telegram
        .wait_for(7, "the failure message", |m| {
            m.iter()
                .any(|t| t.contains("can't reach the COCOON network"))
        })
        .await;
    telegram.text(7, "/help");
    telegram
        .wait_for(7, "help after a failure", |m| {
            m.iter().any(|t| t.contains("/cost"))
        })
        .await;
    drop(bot);
}

/// A 16 kHz mono 16-bit WAV of a 440 Hz tone.
fn wav(seconds: f32) -> Vec<u8> {
    let samples: Vec<i16> = (0..(16_000.0 * seconds) as usize)
        .map(|i| ((i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin() * 8000.0) as i16)
        .collect();
    let data = (samples.len() * 2) as u32;
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&16_000u32.to_le_bytes());
    out.extend_from_slice(&32_000u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_webhook_mode_updates_come_from_telegram_with_the_secret() {
    let dir = tempfile::tempdir().expect("tmp");
    let _logs = LogsOnFailure(dir.path().to_owned());
    let (_devnet, api) = devnet(dir.path()).await;
    let (telegram, telegram_addr) = BotApi::start().await;
    let hook_port = free_port();
    let hook = format!("http://127.0.0.1:{hook_port}/telegram/hook");
    let _bot = start_bot(
        telegram_addr,
        &api,
        &dir.path().join("bot.sqlite"),
        &dir.path().join("webhook.log"),
        &[
            "--webhook-url",
            &hook,
            "--webhook-listen",
            &format!("127.0.0.1:{hook_port}"),
            "--allow-user",
            "2",
        ],
    );
    // The bot registers its URL with a secret token.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let secret = loop {
        if let Some(c) = telegram
            .calls()
            .into_iter()
            .find(|c| c.method == "setWebhook")
        {
            assert_eq!(c.params["url"], hook.as_str());
            break c.params["secret_token"]
                .as_str()
                .expect("a secret token")
                .to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no setWebhook");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(secret.len() >= 16);
    let http = reqwest::Client::new();
    let post = |update: &Value, secret: Option<&str>| {
        let mut r = http.post(&hook).json(update);
        if let Some(s) = secret {
            r = r.header("X-Telegram-Bot-Api-Secret-Token", s);
        }
        r.send()
    };
    // Without the secret: refused, nothing answered.
    let forged = telegram.text_update(1, "forged");
    assert_eq!(post(&forged, None).await.expect("post").status(), 401);
    assert_eq!(
        post(&forged, Some("wrong")).await.expect("post").status(),
        401
    );
    // With it: answered once, however often Telegram redelivers it.
    let update = telegram.text_update(2, "hello over the hook");
    for _ in 0..2 {
        assert_eq!(
            post(&update, Some(&secret)).await.expect("post").status(),
            200
        );
    }
    telegram
        .wait_for(2, "the webhook answer", |m| m == ["ok"])
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        telegram.messages(2).len(),
        1,
        "a redelivered update is not answered twice"
    );
    assert!(
        telegram.messages(1).is_empty(),
        "the forged update got nothing"
    );
    // Someone not on the allow-list gets told, not answered.
    let stranger = telegram.text_update(9, "let me in");
    assert_eq!(
        post(&stranger, Some(&secret)).await.expect("post").status(),
        200
    );
    telegram
        .wait_for(9, "the allow-list refusal", |m| {
            m.len() == 1 && m[0].contains("only answers the people its operator listed")
        })
        .await;
    assert!(
        !telegram.calls().iter().any(|c| c.method == "getUpdates"),
        "no polling in webhook mode"
    );
}
