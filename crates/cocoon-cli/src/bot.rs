//! `cocoon bot`: a Telegram bot answering through a cocoon client gateway (the
//! `cocoon-bot` crate); flags, or the same keys in a `[bot]` TOML section.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use cocoon_bot::{BotConfig, CocoonBot};

/// The gateway when no devnet is running here and none is named.
const DEFAULT_API: &str = "http://127.0.0.1:10000/v1";

/// `cocoon bot` flags.
#[derive(Debug, Args)]
pub struct BotArgs {
    /// The bot token from @BotFather.
    #[arg(long, env = "TELEGRAM_BOT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The OpenAI base URL of a cocoon client gateway (default: the running devnet's, from
    /// DIR/devnet.json, else http://127.0.0.1:10000/v1).
    #[arg(long)]
    api: Option<String>,
    /// The gateway's API key, when it requires one (`cocoon client keys add`).
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The chat model (default: the first the gateway lists).
    #[arg(long)]
    model: Option<String>,
    /// The speech model for voice messages (default: the first that transcribes).
    #[arg(long)]
    speech_model: Option<String>,
    /// The Bot API server (default https://api.telegram.org; a local telegram-bot-api
    /// works too).
    #[arg(long)]
    telegram_api: Option<String>,
    /// The bot's SQLite file (update offset, histories, costs).
    #[arg(long)]
    db: Option<PathBuf>,
    /// The system prompt of every conversation.
    #[arg(long)]
    system_prompt: Option<String>,
    /// Only these Telegram user ids may use the bot (repeatable; default: everyone).
    #[arg(long = "allow-user")]
    allow_users: Vec<u64>,
    /// Requests per user per minute.
    #[arg(long)]
    requests_per_minute: Option<u32>,
    /// Webhook mode: the public HTTPS URL Telegram posts updates to (a reverse proxy
    /// forwarding to --webhook-listen). Default: long polling.
    #[arg(long)]
    webhook_url: Option<String>,
    /// Where the webhook server listens (default 127.0.0.1:8443).
    #[arg(long)]
    webhook_listen: Option<String>,
    /// A TOML file with a `[bot]` section (flags win over it).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The devnet directory whose devnet.json names the gateway.
    #[arg(long, default_value = crate::devnet::DEFAULT_DIR)]
    dir: PathBuf,
}

/// The devnet's gateway, if a devnet.json is in `dir`.
pub(crate) fn devnet_api(dir: &std::path::Path) -> Option<String> {
    crate::devnet::info_text(dir, "client_api")
}

impl BotArgs {
    fn config(self) -> anyhow::Result<BotConfig> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                BotConfig::from_toml(&text)?
            }
            None => BotConfig::new("", ""),
        };
        if let Some(t) = self.token {
            c.token = t;
        }
        match self.api {
            Some(api) => c.api = api,
            None if c.api.is_empty() => {
                c.api = devnet_api(&self.dir).unwrap_or_else(|| DEFAULT_API.into());
            }
            None => {}
        }
        c.api_key = self.api_key.or(c.api_key);
        c.model = self.model.or(c.model);
        c.speech_model = self.speech_model.or(c.speech_model);
        if let Some(t) = self.telegram_api {
            c.telegram_api = t;
        }
        if let Some(db) = self.db {
            c.db = db;
        }
        c.system_prompt = self.system_prompt.or(c.system_prompt);
        if !self.allow_users.is_empty() {
            c.allowed_users = self.allow_users;
        }
        if let Some(n) = self.requests_per_minute {
            c.requests_per_minute = n;
        }
        c.webhook_url = self.webhook_url.or(c.webhook_url);
        if let Some(listen) = self.webhook_listen {
            c.webhook_listen = listen;
        }
        Ok(c)
    }
}

/// Runs the bot until Ctrl-C.
pub async fn run(args: BotArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let api = config.api.clone();
    let bot = CocoonBot::start(config).await?;
    println!(
        "cocoon bot @{} is running against {api} (Ctrl-C stops it)",
        bot.username()
    );
    bot.run(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
