//! A stand-in for Telegram's Bot API server, written for the tests (Telegram's servers
//! cannot be reached from here): `getMe`, `getUpdates` (long polling over updates the test
//! queues), `sendMessage`, `editMessageText`, `sendChatAction`, `getFile`, `setWebhook`,
//! `deleteWebhook` (method names case-insensitive, as Telegram's) and file download. It records every call, can answer the next sends with a 429 and
//! `retry_after`, and refuses MarkdownV2 with an unescaped `.` or `!` as Telegram does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The bot's own user.
pub const BOT_ID: u64 = 777;
/// The bot's username.
pub const BOT_USERNAME: &str = "cocoon_test_bot";

/// One call the bot made.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method (`sendMessage`, …).
    pub method: String,
    /// Its JSON parameters.
    pub params: Value,
    /// When it came.
    pub at: Instant,
    /// Whether it was answered with a 429.
    pub throttled: bool,
    /// Whether its markup was refused (400 "can't parse entities").
    pub markup_refused: bool,
}

#[derive(Default)]
struct Inner {
    updates: Vec<Value>,
    next_update: u64,
    next_message: i64,
    calls: Vec<Call>,
    files: HashMap<String, Vec<u8>>,
    throttle_sends: usize,
    refuse_markup: usize,
    /// The text each sent message shows now, by (chat, message id).
    texts: HashMap<(i64, i64), String>,
}

/// The stand-in server.
#[derive(Clone, Default)]
pub struct BotApi {
    inner: Arc<Mutex<Inner>>,
}

fn ok(result: Value) -> Response {
    Json(json!({"ok": true, "result": result})).into_response()
}

fn message(id: i64, chat: i64, text: &str) -> Value {
    json!({"message_id": id, "date": 0, "chat": {"id": chat, "type": "private", "first_name": "U"},
           "from": {"id": BOT_ID, "is_bot": true, "first_name": "Cocoon", "username": BOT_USERNAME},
           "text": text})
}

fn unescaped(text: &str, c: char) -> bool {
    let mut prev = ' ';
    let mut in_code = false;
    for ch in text.chars() {
        if ch == '`' && prev != '\\' {
            in_code = !in_code;
        }
        if ch == c && prev != '\\' && !in_code {
            return true;
        }
        prev = if prev == '\\' && ch == '\\' { ' ' } else { ch };
    }
    false
}

impl BotApi {
    /// Starts the server; its base URL is `http://{addr}`.
    pub async fn start() -> (BotApi, SocketAddr) {
        let api = BotApi::default();
        api.inner.lock().expect("lock").next_message = 1000;
        let app = Router::new()
            .route("/{bot}/{method}", post(Self::method).get(Self::method_get))
            .route("/file/{bot}/{*path}", get(Self::file))
            .with_state(api.clone());
        let addr = super::serve(app).await;
        (api, addr)
    }

    /// A new update whose `message` is `message` (`message_id` and `date` added), not
    /// queued (for a webhook).
    pub fn update(&self, mut message: Value) -> Value {
        let mut s = self.inner.lock().expect("lock");
        s.next_update += 1;
        s.next_message += 1;
        message["message_id"] = json!(s.next_message);
        message["date"] = json!(0);
        json!({"update_id": s.next_update, "message": message})
    }

    /// A private text message from `user`, as an update not queued (for a webhook).
    pub fn text_update(&self, user: i64, text: &str) -> Value {
        self.update(
            json!({"chat": {"id": user, "type": "private", "first_name": "A"},
                           "from": {"id": user, "is_bot": false, "first_name": "A"},
                           "text": text}),
        )
    }

    /// Queues an update whose `message` is `message` for `getUpdates`.
    pub fn push_message(&self, message: Value) -> u64 {
        let update = self.update(message);
        let id = update["update_id"].as_u64().unwrap_or(0);
        self.inner.lock().expect("lock").updates.push(update);
        id
    }

    /// A private text message from user `user` (chat id = user id).
    pub fn text(&self, user: i64, text: &str) -> u64 {
        self.push_message(
            json!({"chat": {"id": user, "type": "private", "first_name": "A"},
                                 "from": {"id": user, "is_bot": false, "first_name": "A"},
                                 "text": text}),
        )
    }

    /// A group message.
    pub fn group_text(&self, group: i64, user: i64, text: &str) -> u64 {
        self.push_message(json!({"chat": {"id": group, "type": "group", "title": "G"},
                                 "from": {"id": user, "is_bot": false, "first_name": "A"},
                                 "text": text}))
    }

    /// A private voice message whose file is `bytes`.
    pub fn voice(&self, user: i64, bytes: &[u8]) -> u64 {
        let file_id = format!("voice-{}", bytes.len());
        self.inner
            .lock()
            .expect("lock")
            .files
            .insert(file_id.clone(), bytes.to_vec());
        self.push_message(
            json!({"chat": {"id": user, "type": "private", "first_name": "A"},
                                 "from": {"id": user, "is_bot": false, "first_name": "A"},
                                 "voice": {"file_id": file_id, "file_unique_id": file_id,
                                           "duration": 1, "mime_type": "audio/ogg",
                                           "file_size": bytes.len()}}),
        )
    }

    /// Answers the next `n` sendMessage calls with a 429 (`retry_after` 1).
    pub fn throttle_next_sends(&self, n: usize) {
        self.inner.lock().expect("lock").throttle_sends = n;
    }

    /// Refuses the markup of the next `n` MarkdownV2 messages or edits, as Telegram does
    /// with entities it cannot parse.
    pub fn refuse_next_markup(&self, n: usize) {
        self.inner.lock().expect("lock").refuse_markup = n;
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().expect("lock").calls.clone()
    }

    /// The texts the bot's messages in `chat` show now, in the order they were sent.
    pub fn messages(&self, chat: i64) -> Vec<String> {
        let s = self.inner.lock().expect("lock");
        let mut m: Vec<(&(i64, i64), &String)> =
            s.texts.iter().filter(|((c, _), _)| *c == chat).collect();
        m.sort();
        m.into_iter().map(|(_, t)| t.clone()).collect()
    }

    /// Waits until `done` holds for the messages in `chat` (up to 30 s).
    pub async fn wait_for(
        &self,
        chat: i64,
        what: &str,
        done: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = self.messages(chat);
            if done(&m) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "waited 30 s for {what}; chat {chat} shows {m:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn method_get(state: State<BotApi>, path: Path<(String, String)>) -> Response {
        Self::method(
            state,
            path,
            axum::http::HeaderMap::new(),
            axum::body::Bytes::new(),
        )
        .await
    }

    /// The call's parameters: a JSON body, or the text fields of a multipart form (as
    /// teloxide sends `setWebhook`).
    async fn params(headers: &axum::http::HeaderMap, body: axum::body::Bytes) -> Value {
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("multipart/form-data") {
            return serde_json::from_slice(&body).unwrap_or(json!({}));
        }
        let Ok(form) = cocoon_node::protocol::multipart::Form::parse(content_type, body).await
        else {
            return json!({});
        };
        let fields: serde_json::Map<String, Value> = form
            .parts()
            .iter()
            .filter_map(|p| Some((p.name.clone(), json!(p.text()?))))
            .collect();
        Value::Object(fields)
    }

    async fn method(
        State(api): State<BotApi>,
        Path((_bot, method)): Path<(String, String)>,
        headers: axum::http::HeaderMap,
        body: axum::body::Bytes,
    ) -> Response {
        let params = Self::params(&headers, body).await;
        // Method names are case-insensitive (teloxide sends `SendMessage`): recorded as
        // the Bot API documents them.
        let method = [
            "setWebhook",
            "deleteWebhook",
            "getMe",
            "getUpdates",
            "sendMessage",
            "editMessageText",
            "sendChatAction",
            "getFile",
        ]
        .into_iter()
        .find(|m| m.eq_ignore_ascii_case(&method))
        .map_or(method, str::to_owned);
        if method == "getUpdates" {
            let offset = params["offset"].as_u64().unwrap_or(0);
            let wait = params["timeout"].as_u64().unwrap_or(0).min(1);
            let deadline = Instant::now() + Duration::from_secs(wait);
            loop {
                let ready: Vec<Value> = {
                    let mut s = api.inner.lock().expect("lock");
                    s.calls.push(Call {
                        method: method.clone(),
                        params: params.clone(),
                        at: Instant::now(),
                        throttled: false,
                        markup_refused: false,
                    });
                    s.updates
                        .iter()
                        .filter(|u| u["update_id"].as_u64().unwrap_or(0) >= offset)
                        .cloned()
                        .collect()
                };
                if !ready.is_empty() || Instant::now() >= deadline {
                    return ok(json!(ready));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let mut s = api.inner.lock().expect("lock");
        let throttled = method == "sendMessage" && s.throttle_sends > 0;
        let text = params["text"].as_str().unwrap_or("").to_owned();
        let markup_refused = params["parse_mode"] == "MarkdownV2"
            && !throttled
            && (s.refuse_markup > 0 || unescaped(&text, '.') || unescaped(&text, '!'));
        s.calls.push(Call {
            method: method.clone(),
            params: params.clone(),
            at: Instant::now(),
            throttled,
            markup_refused,
        });
        if throttled {
            s.throttle_sends -= 1;
            return (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                Json(json!({"ok": false, "error_code": 429,
                            "description": "Too Many Requests: retry after 1",
                            "parameters": {"retry_after": 1}})),
            )
                .into_response();
        }
        if markup_refused {
            s.refuse_markup = s.refuse_markup.saturating_sub(1);
            return (
                axum::http::StatusCode::BAD_REQUEST,
                Json(json!({"ok": false, "error_code": 400,
                            "description": "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'"})),
            )
                .into_response();
        }
        // What the chat shows: MarkdownV2 escapes and bold markers taken out.
        let shown = if params["parse_mode"] == "MarkdownV2" {
            let mut out = String::new();
            let mut chars = text.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    '*' => {}
                    c => out.push(c),
                }
            }
            out
        } else {
            text.clone()
        };
        let chat = params["chat_id"].as_i64().unwrap_or(0);
        match method.as_str() {
            "getMe" => ok(json!({"id": BOT_ID, "is_bot": true, "first_name": "Cocoon",
                                 "username": BOT_USERNAME, "can_join_groups": true,
                                 "can_read_all_group_messages": false,
                                 "supports_inline_queries": false, "has_main_web_app": false})),
            "sendMessage" => {
                s.next_message += 1;
                let id = s.next_message;
                s.texts.insert((chat, id), shown);
                ok(message(id, chat, &text))
            }
            "editMessageText" => {
                let id = params["message_id"].as_i64().unwrap_or(0);
                match s.texts.get_mut(&(chat, id)) {
                    Some(t) if *t == shown => (
                        axum::http::StatusCode::BAD_REQUEST,
                        Json(json!({"ok": false, "error_code": 400,
                                    "description": "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message"})),
                    )
                        .into_response(),
                    Some(t) => {
                        *t = shown;
                        ok(message(id, chat, &text))
                    }
                    None => (
                        axum::http::StatusCode::BAD_REQUEST,
                        Json(json!({"ok": false, "error_code": 400, "description": "Bad Request: message to edit not found"})),
                    )
                        .into_response(),
                }
            }
            "sendChatAction" | "setWebhook" | "deleteWebhook" => ok(json!(true)),
            "getFile" => {
                let id = params["file_id"].as_str().unwrap_or("").to_owned();
                let size = s.files.get(&id).map_or(0, Vec::len);
                ok(
                    json!({"file_id": id, "file_unique_id": id, "file_size": size,
                          "file_path": format!("voice/{id}.oga")}),
                )
            }
            _ => (
                axum::http::StatusCode::NOT_FOUND,
                Json(json!({"ok": false, "error_code": 404, "description": "Not Found"})),
            )
                .into_response(),
        }
    }

    async fn file(
        State(api): State<BotApi>,
        Path((_bot, path)): Path<(String, String)>,
    ) -> Response {
        let id = path
            .trim_start_matches("voice/")
            .trim_end_matches(".oga")
            .to_owned();
        match api.inner.lock().expect("lock").files.get(&id) {
            Some(bytes) => bytes.clone().into_response(),
            None => axum::http::StatusCode::NOT_FOUND.into_response(),
        }
    }
}
