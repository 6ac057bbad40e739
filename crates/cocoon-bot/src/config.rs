//! The bot's settings: flags of `cocoon bot`, or the same keys in a `[bot]` TOML section.
//!
//! ```toml
//! [bot]
//! token = "123456:ABC…"                # or TELEGRAM_BOT_TOKEN
//! api = "http://127.0.0.1:10000/v1"    # the cocoon client gateway's OpenAI base URL
//! model = "Qwen/Qwen3-8B"              # default: the first model the gateway lists
//! speech_model = "openai/whisper-large-v3"  # default: the first that transcribes, else `model`
//! telegram_api = "https://api.telegram.org"
//! db = "cocoon-bot.sqlite"
//! system_prompt = "You are a helpful assistant."
//! allowed_users = [12345678]           # empty: everyone
//! requests_per_minute = 20             # per user
//! history_tokens = 3000                # per chat; the oldest turns are dropped
//! max_tokens = 1024                    # per answer
//! timeout_secs = 120
//! webhook_url = "https://bot.example.com/telegram"  # absent: long polling
//! webhook_listen = "127.0.0.1:8443"    # where the reverse proxy forwards it
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::BotError;

/// Where Telegram's Bot API lives unless told otherwise.
pub const TELEGRAM_API: &str = "https://api.telegram.org";

/// Everything the bot needs to run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    /// The bot token from @BotFather.
    #[serde(default)]
    pub token: String,
    /// The OpenAI base URL of a cocoon client gateway (`…/v1`).
    #[serde(default)]
    pub api: String,
    /// The gateway's API key (`cocoon client keys add`), if it requires one.
    #[serde(default)]
    pub api_key: Option<String>,
    /// The chat model; `None`: the first one the gateway lists.
    #[serde(default)]
    pub model: Option<String>,
    /// The speech model for voice messages; `None`: the first model whose workers serve
    /// `/v1/audio/transcriptions`, else the chat model.
    #[serde(default)]
    pub speech_model: Option<String>,
    /// The Bot API server (`https://api.telegram.org`, or a local `telegram-bot-api`).
    #[serde(default = "default_telegram_api")]
    pub telegram_api: String,
    /// The SQLite file: update offset, histories, costs, per-chat settings.
    #[serde(default = "default_db")]
    pub db: PathBuf,
    /// The system prompt put before every conversation.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// The users who may talk to the bot; empty: everyone.
    #[serde(default)]
    pub allowed_users: Vec<u64>,
    /// Requests a user may make per minute (text and voice together).
    #[serde(default = "default_rpm")]
    pub requests_per_minute: u32,
    /// The history kept per chat, in estimated tokens (4 characters a token).
    #[serde(default = "default_history")]
    pub history_tokens: usize,
    /// `max_tokens` of each answer; `None`: the gateway's default.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// How long one answer may take.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// The shortest time between two edits of a streamed answer (Telegram allows about
    /// one a second per chat).
    #[serde(default = "default_edit_interval_ms")]
    pub edit_interval_ms: u64,
    /// Long-polling timeout of `getUpdates`.
    #[serde(default = "default_poll_secs")]
    pub poll_timeout_secs: u32,
    /// Webhook mode: the public HTTPS URL Telegram posts updates to (normally a reverse
    /// proxy forwarding to `webhook_listen`); `None`: long polling.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Where the webhook server listens.
    #[serde(default = "default_webhook_listen")]
    pub webhook_listen: String,
}

fn default_webhook_listen() -> String {
    "127.0.0.1:8443".into()
}

fn default_telegram_api() -> String {
    TELEGRAM_API.into()
}
fn default_db() -> PathBuf {
    PathBuf::from("cocoon-bot.sqlite")
}
fn default_rpm() -> u32 {
    20
}
fn default_history() -> usize {
    3000
}
fn default_timeout() -> u64 {
    120
}
fn default_edit_interval_ms() -> u64 {
    1000
}
fn default_poll_secs() -> u32 {
    30
}

impl BotConfig {
    /// A configuration with every default and the given token and gateway.
    pub fn new(token: impl Into<String>, api: impl Into<String>) -> Self {
        BotConfig {
            token: token.into(),
            api: api.into(),
            api_key: None,
            model: None,
            speech_model: None,
            telegram_api: default_telegram_api(),
            db: default_db(),
            system_prompt: None,
            allowed_users: Vec::new(),
            requests_per_minute: default_rpm(),
            history_tokens: default_history(),
            max_tokens: None,
            timeout_secs: default_timeout(),
            edit_interval_ms: default_edit_interval_ms(),
            poll_timeout_secs: default_poll_secs(),
            webhook_url: None,
            webhook_listen: default_webhook_listen(),
        }
    }

    /// The `[bot]` section of a TOML file's text (absent: every default).
    pub fn from_toml(text: &str) -> Result<Self, BotError> {
        #[derive(Deserialize)]
        struct File {
            bot: Option<BotConfig>,
        }
        let file: File = toml::from_str(text).map_err(|e| BotError::Config(e.to_string()))?;
        Ok(file.bot.unwrap_or_else(|| BotConfig::new("", "")))
    }

    /// Checks what cannot be defaulted.
    pub fn validate(&self) -> Result<(), BotError> {
        if self.token.trim().is_empty() {
            return Err(BotError::Config(
                "no bot token: pass --token, set TELEGRAM_BOT_TOKEN or `token` in [bot]".into(),
            ));
        }
        if !self.token.contains(':') {
            return Err(BotError::Config(
                "the bot token should look like 123456:ABC… (as @BotFather gives it)".into(),
            ));
        }
        for (name, url) in [("api", &self.api), ("telegram_api", &self.telegram_api)] {
            if reqwest::Url::parse(url).is_err() {
                return Err(BotError::Config(format!("{name} is not a URL: {url:?}")));
            }
        }
        if let Some(url) = &self.webhook_url {
            if reqwest::Url::parse(url).is_err() {
                return Err(BotError::Config(format!(
                    "webhook_url is not a URL: {url:?}"
                )));
            }
        }
        if self.requests_per_minute == 0 {
            return Err(BotError::Config(
                "requests_per_minute must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// [`BotConfig::timeout_secs`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// [`BotConfig::edit_interval_ms`] as a duration.
    pub fn edit_interval(&self) -> Duration {
        Duration::from_millis(self.edit_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_section_and_checks() {
        let c = BotConfig::from_toml(
            "[bot]\ntoken = \"1:x\"\napi = \"http://127.0.0.1:1/v1\"\nallowed_users = [5]\n",
        )
        .expect("parse");
        assert_eq!(c.allowed_users, [5]);
        assert_eq!(c.telegram_api, TELEGRAM_API);
        c.validate().expect("valid");
        assert!(
            BotConfig::from_toml("[bot]\ntokn = 1\n").is_err(),
            "typos are named"
        );
        let err = BotConfig::new("", "http://x/v1")
            .validate()
            .expect_err("no token");
        assert!(err.to_string().contains("TELEGRAM_BOT_TOKEN"), "{err}");
        let err = BotConfig::new("1:x", "not a url")
            .validate()
            .expect_err("bad api");
        assert!(err.to_string().contains("api"), "{err}");
    }

    #[test]
    fn the_documented_example_parses() {
        let c = BotConfig::from_toml(include_str!("../../../configs/bot.toml")).expect("parse");
        assert_eq!(c.requests_per_minute, 20);
        assert_eq!(c.edit_interval_ms, 1000);
        assert!(c.system_prompt.is_some());
    }
}
