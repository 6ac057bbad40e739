//! The bot: a long-polling loop whose update offset lives in SQLite, one queue per chat
//! (a chat's messages are answered in order, chats in parallel), and what each message
//! gets: commands, streamed answers to text, transcribed and answered voice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use teloxide_core::payloads::{GetUpdatesSetters, SetWebhookSetters};
use teloxide_core::requests::Requester;
use teloxide_core::types::{ChatId, FileId, Message, Update, UpdateKind};
use teloxide_core::RequestError;
use tokio::sync::mpsc;
use tracing::{info, info_span, warn, Instrument};

use crate::config::BotConfig;
use crate::error::{BotError, GatewayError};
use crate::gateway::{Gateway, Model};
use crate::limits::RateLimiter;
use crate::store::Store;
use crate::telegram::{Markup, Streamer, Telegram};

const HELP: &str = "I answer through COCOON, the confidential compute network on TON.\n\
Send me text or a voice message.\n\n\
/model — list models, /model NAME — pick one\n\
/cost — what this chat has spent\n\
/reset — forget this conversation\n\
/transcribe — voice messages: transcript only, or answered (toggle)";

/// nanoTON as TON with nine decimals, trailing zeros dropped.
pub fn ton(nanoton: u64) -> String {
    let whole = nanoton / 1_000_000_000;
    let frac = nanoton % 1_000_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    format!("{whole}.{frac:09}")
        .trim_end_matches('0')
        .to_owned()
}

/// A running bot.
pub struct CocoonBot {
    config: BotConfig,
    store: Store,
    gateway: Gateway,
    telegram: Telegram,
    limiter: RateLimiter,
    /// The bot's own user id and username (from getMe).
    me: (u64, String),
    /// One queue per chat.
    chats: Mutex<HashMap<i64, mpsc::UnboundedSender<Message>>>,
    /// The gateway's models, fetched when first needed.
    models: tokio::sync::Mutex<Option<Vec<Model>>>,
}

/// What a message asks of the bot.
enum Ask {
    Command(String, String),
    Text(String),
    Voice(FileId, &'static str, &'static str),
}

impl CocoonBot {
    /// Opens the store and checks the token with `getMe`.
    pub async fn start(config: BotConfig) -> Result<Arc<CocoonBot>, BotError> {
        config.validate()?;
        let store = Store::open(&config.db)?;
        let telegram = Telegram::new(&config.token, &config.telegram_api)?;
        let me = telegram.bot().get_me().await.map_err(|e| {
            BotError::Config(format!(
                "Telegram did not accept the bot token at {}: {e}",
                config.telegram_api
            ))
        })?;
        let username = me.user.username.clone().unwrap_or_default();
        info!(bot = %username, api = %config.api, "bot started");
        Ok(Arc::new(CocoonBot {
            gateway: Gateway::new(&config.api, config.timeout(), config.api_key.as_deref()),
            limiter: RateLimiter::new(config.requests_per_minute),
            me: (me.user.id.0, username),
            chats: Mutex::new(HashMap::new()),
            models: tokio::sync::Mutex::new(None),
            config,
            store,
            telegram,
        }))
    }

    /// The bot's username (without `@`).
    pub fn username(&self) -> &str {
        &self.me.1
    }

    /// Takes an update: stores its id as handled, then queues its message (an update
    /// whose id is already taken is dropped), so that a restart never answers it again.
    pub fn take(self: &Arc<Self>, update: Update) -> Result<(), BotError> {
        let id = i32::try_from(update.id.0).unwrap_or(i32::MAX);
        if id < self.store.offset()? {
            tracing::debug!(id, "an update already taken");
            return Ok(());
        }
        self.store.set_offset(id.saturating_add(1))?;
        match update.kind {
            UpdateKind::Message(m) => self.enqueue(m),
            _ => tracing::debug!(id, "update ignored (not a message)"),
        }
        Ok(())
    }

    /// Serves updates until `stop` resolves: from a webhook when `webhook_url` is set
    /// (registered with a fresh secret token), else by long polling (any webhook removed
    /// first, as Telegram refuses `getUpdates` while one is set).
    pub async fn run(
        self: Arc<Self>,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), BotError> {
        let Some(url) = self.config.webhook_url.clone() else {
            self.telegram.bot().delete_webhook().await?;
            return self.poll(stop).await;
        };
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| BotError::Config(format!("webhook_url {url:?}: {e}")))?;
        let secret: String = {
            use rand::Rng;
            let mut rng = rand::thread_rng();
            (0..32)
                .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.gen_range(0..36)]))
                .collect()
        };
        let path = parsed.path().to_owned();
        self.telegram
            .bot()
            .set_webhook(parsed)
            .secret_token(secret.clone())
            .await?;
        info!(%url, "webhook registered with Telegram");
        let listen = self.config.webhook_listen.clone();
        crate::webhook::serve(Arc::clone(&self), &listen, &path, secret, stop).await
    }

    /// Long polling until `stop` resolves.
    async fn poll(
        self: Arc<Self>,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), BotError> {
        tokio::pin!(stop);
        let mut backoff = Duration::from_secs(1);
        loop {
            let offset = self.store.offset()?;
            let poll = self
                .telegram
                .bot()
                .get_updates()
                .offset(offset)
                .timeout(self.config.poll_timeout_secs);
            let updates = tokio::select! {
                _ = &mut stop => return Ok(()),
                r = poll => r,
            };
            match updates {
                Ok(updates) => {
                    backoff = Duration::from_secs(1);
                    for update in updates {
                        self.take(update)?;
                    }
                }
                Err(RequestError::RetryAfter(wait)) => {
                    warn!(
                        seconds = wait.seconds(),
                        "getUpdates: Telegram asks to slow down"
                    );
                    tokio::time::sleep(wait.duration()).await;
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "getUpdates failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    fn enqueue(self: &Arc<Self>, message: Message) {
        let chat = message.chat.id.0;
        let mut chats = self.chats.lock().unwrap_or_else(|p| p.into_inner());
        let queue = chats.entry(chat).or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
            let bot = Arc::clone(self);
            tokio::spawn(
                async move {
                    while let Some(m) = rx.recv().await {
                        bot.handle(m).await;
                    }
                }
                .instrument(info_span!("chat", chat)),
            );
            tx
        });
        if let Err(mpsc::error::SendError(m)) = queue.send(message) {
            // The chat's task ended (it never does on its own): handle it here.
            let bot = Arc::clone(self);
            tokio::spawn(async move { bot.handle(m).await });
        }
    }

    /// What `message` asks, if it is for the bot.
    fn ask(&self, message: &Message) -> Option<Ask> {
        let private = message.chat.is_private();
        let mention = format!("@{}", self.me.1);
        let replies_to_me = message
            .reply_to_message()
            .and_then(|m| m.from.as_ref())
            .is_some_and(|u| u.id.0 == self.me.0);
        if let Some(text) = message.text() {
            if let Some(command) = text.strip_prefix('/') {
                let (head, args) = command
                    .split_once(char::is_whitespace)
                    .unwrap_or((command, ""));
                let (name, target) = head.split_once('@').unwrap_or((head, ""));
                if !target.is_empty() && !target.eq_ignore_ascii_case(&self.me.1) {
                    return None; // another bot's command
                }
                if private || target.eq_ignore_ascii_case(&self.me.1) || replies_to_me {
                    return Some(Ask::Command(
                        name.to_ascii_lowercase(),
                        args.trim().to_owned(),
                    ));
                }
                return None;
            }
            let addressed =
                private || replies_to_me || (!self.me.1.is_empty() && text.contains(&mention));
            if !addressed {
                return None;
            }
            let question = text.replace(&mention, "").trim().to_owned();
            return (!question.is_empty()).then_some(Ask::Text(question));
        }
        if !(private || replies_to_me) {
            return None;
        }
        if let Some(v) = message.voice() {
            return Some(Ask::Voice(v.file.id.clone(), "voice.ogg", "audio/ogg"));
        }
        if let Some(a) = message.audio() {
            return Some(Ask::Voice(a.file.id.clone(), "audio.mp3", "audio/mpeg"));
        }
        if let Some(v) = message.video_note() {
            return Some(Ask::Voice(v.file.id.clone(), "note.mp4", "video/mp4"));
        }
        None
    }

    async fn handle(&self, message: Message) {
        let chat = message.chat.id;
        let Some(ask) = self.ask(&message) else {
            return;
        };
        let user = message.from.as_ref().map_or(0, |u| u.id.0);
        if !self.config.allowed_users.is_empty() && !self.config.allowed_users.contains(&user) {
            info!(user, "a user not on the allow-list");
            if message.chat.is_private() {
                self.say(
                    chat,
                    "Sorry, this bot only answers the people its operator listed.",
                )
                .await;
            }
            return;
        }
        let result = match ask {
            Ask::Command(name, args) => self.command(&message, &name, &args).await,
            Ask::Text(question) => {
                if self.limited(user, chat).await {
                    return;
                }
                self.answer(&message, &question, None).await
            }
            Ask::Voice(file, name, mime) => {
                if self.limited(user, chat).await {
                    return;
                }
                self.voice(&message, &file, name, mime).await
            }
        };
        if let Err(e) = result {
            warn!(error = %e, "could not answer");
            let text = match &e {
                BotError::Gateway(g) => g.for_user(),
                BotError::Download(_) => "I could not fetch that file from Telegram.".into(),
                _ => "Something went wrong; please try again.".into(),
            };
            self.say(chat, &text).await;
        }
    }

    async fn limited(&self, user: u64, chat: ChatId) -> bool {
        if self.limiter.allow(user, Instant::now()) {
            return false;
        }
        info!(user, "rate limited");
        self.say(
            chat,
            "You are sending messages too fast; please wait a minute.",
        )
        .await;
        true
    }

    async fn say(&self, chat: ChatId, text: &str) {
        if let Err(e) = self.telegram.send(chat, text, None, Markup::Plain).await {
            warn!(error = %e, "could not send a message");
        }
    }

    async fn models(&self) -> Result<Vec<Model>, GatewayError> {
        let mut cached = self.models.lock().await;
        if let Some(m) = cached.as_ref() {
            return Ok(m.clone());
        }
        let models = self.gateway.models().await?;
        if !models.is_empty() {
            *cached = Some(models.clone());
        }
        Ok(models)
    }

    async fn chat_model(&self, chat: ChatId) -> Result<String, BotError> {
        if let Some(m) = self.store.model(chat.0)? {
            return Ok(m);
        }
        if let Some(m) = &self.config.model {
            return Ok(m.clone());
        }
        let models = self.models().await?;
        models
            .iter()
            .find(|m| m.chats)
            .map(|m| m.id.clone())
            .ok_or_else(|| {
                GatewayError::Refused {
                    status: 404,
                    code: "model_not_found".into(),
                    message: "the gateway lists no chat model".into(),
                }
                .into()
            })
    }

    async fn speech_model(&self, chat: ChatId) -> Result<String, BotError> {
        if let Some(m) = &self.config.speech_model {
            return Ok(m.clone());
        }
        let models = self.models().await?;
        match models
            .iter()
            .find(|m| m.transcribes && !m.chats)
            .or_else(|| models.iter().find(|m| m.transcribes))
        {
            Some(m) => Ok(m.id.clone()),
            None => self.chat_model(chat).await,
        }
    }

    /// Streams the answer to `question` (typing shown until the first words), books its
    /// cost and keeps the exchange in the chat's history.
    async fn answer(
        &self,
        message: &Message,
        question: &str,
        reply_to: Option<teloxide_core::types::MessageId>,
    ) -> Result<(), BotError> {
        let chat = message.chat.id;
        let model = self.chat_model(chat).await?;
        let history = self.store.history(chat.0)?;
        let mut streamer = Streamer::new(
            &self.telegram,
            chat,
            reply_to.unwrap_or(message.id),
            self.config.edit_interval(),
        );
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let request = self.gateway.chat(
            &model,
            self.config.system_prompt.as_deref(),
            &history,
            question,
            self.config.max_tokens,
            move |text| {
                let _ = tx.send(text.to_owned());
            },
        );
        tokio::pin!(request);
        self.telegram.typing(chat).await;
        let mut typing = tokio::time::interval(Duration::from_secs(4));
        typing.tick().await;
        let mut shown = false;
        let answer = loop {
            tokio::select! {
                r = &mut request => break r,
                Some(text) = rx.recv() => {
                    // Only the newest text matters.
                    let mut text = text;
                    while let Ok(t) = rx.try_recv() { text = t; }
                    streamer.update(&text).await;
                    shown = true;
                }
                _ = typing.tick(), if !shown => self.telegram.typing(chat).await,
            }
        };
        let answer = answer?;
        self.store.add_cost(chat.0, answer.cost)?;
        self.store
            .add_exchange(chat.0, question, &answer.text, self.config.history_tokens)?;
        info!(model = %model, cost = answer.cost, chars = answer.text.len(), "answered");
        streamer.finish(&answer.text).await
    }

    async fn voice(
        &self,
        message: &Message,
        file: &FileId,
        name: &str,
        mime: &str,
    ) -> Result<(), BotError> {
        let chat = message.chat.id;
        self.telegram.typing(chat).await;
        let bytes = self.telegram.download(file).await?;
        let model = self.speech_model(chat).await?;
        let transcript = self.gateway.transcribe(&model, bytes, name, mime).await?;
        self.store.add_cost(chat.0, transcript.cost)?;
        info!(model = %model, cost = transcript.cost, "transcribed");
        if transcript.text.is_empty() {
            self.say(chat, "I could not hear any words in that.").await;
            return Ok(());
        }
        let quoted = format!("🎤 “{}”", transcript.text);
        let quote = self
            .telegram
            .send(chat, &quoted, Some(message.id), Markup::Plain)
            .await?;
        if self.store.transcribe_only(chat.0)? {
            return Ok(());
        }
        self.answer(message, &transcript.text, Some(quote)).await
    }

    async fn command(&self, message: &Message, name: &str, args: &str) -> Result<(), BotError> {
        let chat = message.chat.id;
        match name {
            "reset" => {
                self.store.reset(chat.0)?;
                self.say(chat, "Done: I forgot this conversation.").await;
            }
            "cost" => {
                let (this, all) = self.store.spending(chat.0)?;
                let text = format!(
                    "This chat: {} nanoTON ({} TON) over {} answers.\nAll chats: {} nanoTON ({} TON) over {} answers.",
                    this.nanoton, ton(this.nanoton), this.requests,
                    all.nanoton, ton(all.nanoton), all.requests
                );
                self.say(chat, &text).await;
            }
            "model" => {
                let models = {
                    // A fresh list: workers come and go.
                    *self.models.lock().await = None;
                    self.models().await?
                };
                if args.is_empty() {
                    let current = self.chat_model(chat).await.unwrap_or_default();
                    let mut text = String::from("Models on the network:\n");
                    for m in &models {
                        let mark = if m.id == current {
                            " ← this chat"
                        } else {
                            ""
                        };
                        let kind = match (m.chats, m.transcribes) {
                            (true, true) => "chat, speech",
                            (false, true) => "speech",
                            _ => "chat",
                        };
                        text.push_str(&format!("• {} ({kind}){mark}\n", m.id));
                    }
                    text.push_str("\nPick one with /model NAME");
                    self.say(chat, &text).await;
                } else if models.iter().any(|m| m.id == args && m.chats) {
                    self.store.set_model(chat.0, args)?;
                    self.say(chat, &format!("This chat now talks to {args}."))
                        .await;
                } else {
                    self.say(
                        chat,
                        &format!(
                            "No chat model named {args:?} is on the network; /model lists them."
                        ),
                    )
                    .await;
                }
            }
            "transcribe" => {
                let on = !self.store.transcribe_only(chat.0)?;
                self.store.set_transcribe_only(chat.0, on)?;
                let text = if on {
                    "Voice messages are now transcribed only. /transcribe again to have them answered."
                } else {
                    "Voice messages are now transcribed and answered."
                };
                self.say(chat, text).await;
            }
            _ => self.say(chat, HELP).await,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanoton_reads_as_ton() {
        assert_eq!(ton(0), "0");
        assert_eq!(ton(268), "0.000000268");
        assert_eq!(ton(1_500_000_000), "1.5");
        assert_eq!(ton(2_000_000_000), "2");
    }
}
