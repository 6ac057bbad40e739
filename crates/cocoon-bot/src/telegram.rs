//! The bot's calls to the Bot API, made the way Telegram wants them: a 429 waits the
//! `retry_after` Telegram sends (a few times, then gives up), a message whose markup
//! Telegram refuses goes again as plain text, and an edit that changes nothing is not an
//! error. [`Streamer`] shows an answer while it is written: one message, edited at most
//! once per interval, continued in new messages past 4096 characters.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use teloxide_core::net::Download;
use teloxide_core::payloads::{EditMessageTextSetters, SendMessageSetters};
use teloxide_core::requests::Requester;
use teloxide_core::types::{ChatAction, ChatId, FileId, MessageId, ParseMode, ReplyParameters};
use teloxide_core::Bot;
use teloxide_core::{ApiError, RequestError};
use tracing::{debug, warn};

use crate::error::BotError;
use crate::render::{markdown_v2, split, MESSAGE_LIMIT};

/// How many times one call waits out a 429 before giving up.
const RETRIES: usize = 5;

/// Whether a message is sent as Markdown (MarkdownV2, plain when refused) or plain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Markup {
    /// The text as it is.
    Plain,
    /// Markdown as models write it, turned into MarkdownV2.
    Markdown,
}

/// The Bot API client.
#[derive(Clone)]
pub struct Telegram {
    bot: Bot,
}

/// Runs `call` again after each 429, waiting what Telegram asks.
async fn with_retry<T, F, Fut>(what: &str, mut call: F) -> Result<T, RequestError>
where
    F: FnMut() -> Fut,
    Fut: IntoFuture<Output = Result<T, RequestError>>,
{
    let mut tries = 0;
    loop {
        match call().await {
            Err(RequestError::RetryAfter(wait)) if tries < RETRIES => {
                tries += 1;
                warn!(%what, seconds = wait.seconds(), "Telegram asks to slow down (429)");
                tokio::time::sleep(wait.duration()).await;
            }
            other => return other,
        }
    }
}

fn refused_markup(e: &RequestError) -> bool {
    matches!(e, RequestError::Api(ApiError::CantParseEntities(_)))
}

impl Telegram {
    /// A client of the Bot API at `api` (e.g. `https://api.telegram.org`).
    pub fn new(token: &str, api: &str) -> Result<Telegram, BotError> {
        let url = reqwest::Url::parse(api)
            .map_err(|e| BotError::Config(format!("telegram_api {api:?}: {e}")))?;
        Ok(Telegram {
            bot: Bot::new(token).set_api_url(url),
        })
    }

    /// The underlying teloxide bot.
    pub fn bot(&self) -> &Bot {
        &self.bot
    }

    /// Sends `text` (one message; the caller splits), replying to `reply_to` if given.
    pub async fn send(
        &self,
        chat: ChatId,
        text: &str,
        reply_to: Option<MessageId>,
        markup: Markup,
    ) -> Result<MessageId, BotError> {
        if markup == Markup::Markdown {
            let rendered = markdown_v2(text);
            let sent = with_retry("sendMessage", || {
                let mut r = self
                    .bot
                    .send_message(chat, rendered.clone())
                    .parse_mode(ParseMode::MarkdownV2);
                if let Some(id) = reply_to {
                    r = r.reply_parameters(ReplyParameters::new(id).allow_sending_without_reply());
                }
                r
            })
            .await;
            match sent {
                Ok(m) => return Ok(m.id),
                Err(e) if refused_markup(&e) => debug!(error = %e, "markup refused, sending plain"),
                Err(e) => return Err(e.into()),
            }
        }
        let sent = with_retry("sendMessage", || {
            let mut r = self.bot.send_message(chat, text.to_owned());
            if let Some(id) = reply_to {
                r = r.reply_parameters(ReplyParameters::new(id).allow_sending_without_reply());
            }
            r
        })
        .await?;
        Ok(sent.id)
    }

    /// Sends a long text as as many messages as it takes; the first replies to `reply_to`.
    pub async fn send_long(
        &self,
        chat: ChatId,
        text: &str,
        reply_to: Option<MessageId>,
        markup: Markup,
    ) -> Result<(), BotError> {
        for (i, part) in split(text, MESSAGE_LIMIT).iter().enumerate() {
            self.send(chat, part, if i == 0 { reply_to } else { None }, markup)
                .await?;
        }
        Ok(())
    }

    /// Replaces a message's text; an edit that changes nothing is fine.
    pub async fn edit(
        &self,
        chat: ChatId,
        id: MessageId,
        text: &str,
        markup: Markup,
    ) -> Result<(), BotError> {
        let result = if markup == Markup::Markdown {
            let rendered = markdown_v2(text);
            match with_retry("editMessageText", || {
                self.bot
                    .edit_message_text(chat, id, rendered.clone())
                    .parse_mode(ParseMode::MarkdownV2)
            })
            .await
            {
                Err(e) if refused_markup(&e) => {
                    debug!(error = %e, "markup refused, editing plain");
                    with_retry("editMessageText", || {
                        self.bot.edit_message_text(chat, id, text.to_owned())
                    })
                    .await
                }
                other => other,
            }
        } else {
            with_retry("editMessageText", || {
                self.bot.edit_message_text(chat, id, text.to_owned())
            })
            .await
        };
        match result {
            Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Shows "typing…" in the chat (for about 5 seconds).
    pub async fn typing(&self, chat: ChatId) {
        if let Err(e) = self.bot.send_chat_action(chat, ChatAction::Typing).await {
            debug!(error = %e, "sendChatAction failed");
        }
    }

    /// Downloads a file the chat sent, by its id.
    pub async fn download(&self, file: &FileId) -> Result<Vec<u8>, BotError> {
        let meta = with_retry("getFile", || self.bot.get_file(file.clone())).await?;
        let mut bytes = Vec::new();
        self.bot.download_file(&meta.path, &mut bytes).await?;
        Ok(bytes)
    }
}

/// An answer shown while it is written.
pub struct Streamer<'a> {
    telegram: &'a Telegram,
    chat: ChatId,
    reply_to: MessageId,
    interval: Duration,
    /// The messages sent so far and the text each shows.
    messages: Vec<(MessageId, String)>,
    last_edit: Option<Instant>,
}

impl<'a> Streamer<'a> {
    /// A streamer answering `reply_to` in `chat`, editing at most once per `interval`.
    pub fn new(
        telegram: &'a Telegram,
        chat: ChatId,
        reply_to: MessageId,
        interval: Duration,
    ) -> Self {
        Streamer {
            telegram,
            chat,
            reply_to,
            interval,
            messages: Vec::new(),
            last_edit: None,
        }
    }

    /// Shows `text` (the whole answer so far) if the last update is at least an interval
    /// old; a failed intermediate update is only logged (the final one matters).
    pub async fn update(&mut self, text: &str) {
        if self.last_edit.is_some_and(|t| t.elapsed() < self.interval) {
            return;
        }
        if let Err(e) = self.show(text, Markup::Plain).await {
            debug!(error = %e, "intermediate update failed");
        }
        self.last_edit = Some(Instant::now());
    }

    /// Shows the finished answer, rendered as Markdown.
    pub async fn finish(&mut self, text: &str) -> Result<(), BotError> {
        if let Some(t) = self.last_edit {
            // Keep to the interval for the last edit too.
            let wait = self.interval.saturating_sub(t.elapsed());
            tokio::time::sleep(wait).await;
        }
        self.show(text, Markup::Markdown).await
    }

    async fn show(&mut self, text: &str, markup: Markup) -> Result<(), BotError> {
        let parts = split(text, MESSAGE_LIMIT);
        for (i, part) in parts.iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            match self.messages.get_mut(i) {
                Some((id, shown)) => {
                    if shown != part || markup == Markup::Markdown {
                        self.telegram.edit(self.chat, *id, part, markup).await?;
                        *shown = part.clone();
                    }
                }
                None => {
                    let reply = (i == 0).then_some(self.reply_to);
                    let id = self.telegram.send(self.chat, part, reply, markup).await?;
                    self.messages.push((id, part.clone()));
                }
            }
        }
        Ok(())
    }
}
