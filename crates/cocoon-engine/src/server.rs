//! axum 0.8 router serving the engine as an OpenAI-compatible HTTP server.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::engine::{Engine, EngineResponse};

/// Converts an [`EngineResponse`] into an HTTP response (`application/json` or
/// `text/event-stream`).
pub fn into_http(resp: EngineResponse) -> Response {
    let (status, ctype, body) = match resp {
        EngineResponse::Json { status, body } => (status, "application/json", Body::from(body)),
        EngineResponse::Stream(s) => (
            200,
            "text/event-stream",
            Body::from_stream(futures::StreamExt::map(
                s,
                Ok::<_, std::convert::Infallible>,
            )),
        ),
    };
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    if ctype == "text/event-stream" {
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache"),
        );
    }
    r
}

async fn completions(
    State(engine): State<Engine>,
    uri: Uri,
    headers: header::HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    into_http(
        engine
            .handle_with_type(uri.path(), content_type, &body)
            .await,
    )
}

async fn models(State(engine): State<Engine>) -> Response {
    into_http(engine.handle("/v1/models", b"").await)
}

async fn health() -> &'static str {
    ""
}

async fn fallback(uri: Uri) -> Response {
    into_http(EngineResponse::Json {
        status: 404,
        body: Bytes::from(crate::ApiError::not_found(uri.path()).to_json().to_string()),
    })
}

/// The OpenAI routes (`POST /v1/chat/completions`, `POST /v1/completions`,
/// `GET /v1/models`, `GET /health`) served by `engine`.
pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/completions", post(completions))
        // Whisper models serve these; text models refuse them with the reason.
        .route("/v1/audio/transcriptions", post(completions))
        .route("/v1/audio/translations", post(completions))
        .route("/v1/embeddings", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .fallback(fallback)
        .with_state(engine)
}
