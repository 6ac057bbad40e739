//! What can go wrong, by layer: the bot's configuration, its SQLite store, the COCOON
//! gateway, the Telegram Bot API.

use std::path::PathBuf;

/// An error the bot stops on (configuration, store) or reports (the rest).
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    /// The configuration is incomplete or inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// The SQLite store failed.
    #[error("store {path}: {source}")]
    Store {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The gateway failed or refused.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The Bot API failed.
    #[error("telegram: {0}")]
    Telegram(#[from] teloxide_core::RequestError),
    /// A file could not be downloaded from Telegram.
    #[error("telegram file download: {0}")]
    Download(#[from] teloxide_core::DownloadError),
}

/// Why a request to the COCOON client gateway gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The gateway could not be reached or the connection broke.
    #[error("cannot reach the gateway at {url}: {source}")]
    Unreachable {
        /// The URL requested.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The gateway answered with an OpenAI-shaped error.
    #[error("the gateway refused ({status}, {code}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// OpenAI's error `code` (e.g. `insufficient_balance`, `no_free_worker`).
        code: String,
        /// The error message.
        message: String,
    },
    /// The answer was not what the OpenAI API gives.
    #[error("unexpected answer from the gateway: {0}")]
    Malformed(String),
    /// The answer did not come in time.
    #[error("the gateway did not answer within {0} s")]
    Timeout(u64),
}

impl GatewayError {
    /// A short, polite sentence for the chat.
    pub fn for_user(&self) -> String {
        match self {
            GatewayError::Unreachable { .. } => {
                "I can't reach the COCOON network right now. Please try again in a minute.".into()
            }
            GatewayError::Timeout(_) => {
                "The network took too long to answer. Please try again.".into()
            }
            GatewayError::Refused { status: 402, .. } => {
                "The bot's COCOON balance is too low to answer. The operator has been told.".into()
            }
            GatewayError::Refused { code, .. } if code == "no_free_worker" => {
                "No worker is free to answer right now. Please try again shortly.".into()
            }
            GatewayError::Refused { status: 404, .. } => {
                "This model is not served on the network right now; pick another with /model."
                    .into()
            }
            GatewayError::Refused { status: 413, .. } => {
                "That file is too large for the network.".into()
            }
            GatewayError::Refused {
                status: 400,
                message,
                ..
            } => {
                format!("The network refused the request: {message}")
            }
            GatewayError::Refused { .. } | GatewayError::Malformed(_) => {
                "Something went wrong on the network side. Please try again.".into()
            }
        }
    }
}
