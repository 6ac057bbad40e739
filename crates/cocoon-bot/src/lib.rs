//! `cocoon bot`: a Telegram bot that answers text and voice messages through a cocoon-rs
//! client gateway (its OpenAI API), paid per token, with what each chat spends visible.
//!
//! Layers: [`config`] (flags or a `[bot]` TOML section), [`store`] (SQLite: update offset,
//! histories, costs), [`gateway`] (the OpenAI API: streamed chat, transcription, models),
//! [`render`] (splitting, MarkdownV2), [`telegram`] (Bot API calls with 429 handling and
//! streamed edits, on teloxide's API layer), [`limits`] (per-user rate limits), [`bot`]
//! (polling and what each message gets) and [`webhook`] (the same updates, posted by
//! Telegram).

pub mod bot;
pub mod config;
pub mod error;
pub mod gateway;
pub mod limits;
pub mod render;
pub mod store;
pub mod telegram;
pub mod webhook;

pub use bot::CocoonBot;
pub use config::BotConfig;
pub use error::{BotError, GatewayError};
