//! Webhook mode: Telegram POSTs each update to a public HTTPS URL (normally a reverse
//! proxy in front of [`serve`]'s listener) instead of the bot polling. Only requests that
//! carry the secret token the bot registered with `setWebhook` are taken; an update whose
//! id the store has already taken is acknowledged and dropped (Telegram redelivers on
//! errors), so that no update is answered twice.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use teloxide_core::types::Update;
use tracing::{info, warn};

use crate::bot::CocoonBot;
use crate::error::BotError;

/// The header Telegram sends the secret token in.
const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

struct Hook {
    bot: Arc<CocoonBot>,
    secret: String,
}

async fn update(State(hook): State<Arc<Hook>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let authentic = headers
        .get(SECRET_HEADER)
        .is_some_and(|v| v.as_bytes() == hook.secret.as_bytes());
    if !authentic {
        warn!("a webhook request without the secret token was refused");
        return StatusCode::UNAUTHORIZED;
    }
    match serde_json::from_slice::<Update>(&body) {
        Ok(update) => match hook.bot.take(update) {
            Ok(()) => StatusCode::OK,
            // Not stored: let Telegram deliver it again.
            Err(e) => {
                warn!(error = %e, "could not store the update offset");
                StatusCode::SERVICE_UNAVAILABLE
            }
        },
        Err(e) => {
            // Telegram would redeliver it forever: acknowledge and log.
            warn!(error = %e, "an update that does not parse was dropped");
            StatusCode::OK
        }
    }
}

/// Serves the webhook on `listen` at `path` until `stop` resolves.
pub async fn serve(
    bot: Arc<CocoonBot>,
    listen: &str,
    path: &str,
    secret: String,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), BotError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| BotError::Config(format!("webhook_listen {listen}: {e}")))?;
    info!(listen = %listener.local_addr().map_or_else(|_| listen.to_owned(), |a| a.to_string()), %path, "webhook listening");
    let app = Router::new()
        .route(path, post(update))
        .with_state(Arc::new(Hook { bot, secret }));
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
        .map_err(|e| BotError::Config(format!("webhook server: {e}")))
}
