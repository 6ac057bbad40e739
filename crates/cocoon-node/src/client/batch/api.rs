//! The HTTP side of the Batch API: OpenAI's `/v1/files` and `/v1/batches` endpoints and
//! objects, so that the official SDKs work unchanged. Extensions: a batch object carries
//! `cost_nanoton` (what its answered lines cost, exact) and `usage`; `max_coefficient` (the
//! highest worker price for its lines) and `concurrency` (most lines in flight) may be given
//! when a batch is created.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::jsonl::BATCH_ENDPOINTS;
use super::store::{BatchRow, FileRow, Status};
use super::{new_id, now, BatchError, Batches};
use crate::client::gateway::error_response;

/// The routes, on `batches`.
pub(super) fn router(batches: Arc<Batches>) -> Router {
    Router::new()
        .route("/v1/files", post(upload).get(list_files))
        .route("/v1/files/{id}", get(get_file).delete(delete_file))
        .route("/v1/files/{id}/content", get(file_content))
        .route("/v1/batches", post(create).get(list_batches))
        .route("/v1/batches/{id}", get(get_batch))
        .route("/v1/batches/{id}/cancel", post(cancel))
        .with_state(batches)
}

/// The same routes on a gateway without `[batch]`: a 404 that says how to turn it on.
pub fn disabled_router() -> Router {
    async fn off() -> Response {
        error_response(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "batches_disabled",
            "the Batch API is off on this gateway: give it a directory with `[batch] dir = \"…\"` in client.toml",
        )
    }
    Router::new()
        .route("/v1/files", post(off).get(off))
        .route("/v1/files/{id}", get(off).delete(off))
        .route("/v1/files/{id}/content", get(off))
        .route("/v1/batches", post(off).get(off))
        .route("/v1/batches/{id}", get(off))
        .route("/v1/batches/{id}/cancel", post(off))
}

impl IntoResponse for BatchError {
    fn into_response(self) -> Response {
        let (status, kind, code) = match &self {
            BatchError::NotFound { .. } => {
                (StatusCode::NOT_FOUND, "invalid_request_error", "not_found")
            }
            BatchError::Invalid(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
            ),
            BatchError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "file_too_large",
            ),
            BatchError::Conflict(_) => (StatusCode::CONFLICT, "invalid_request_error", "conflict"),
            BatchError::Store(_) | BatchError::Io(_) => {
                tracing::warn!(error = %self, "batch API failure");
                (StatusCode::INTERNAL_SERVER_ERROR, "api_error", "internal")
            }
        };
        error_response(status, kind, code, &self.to_string())
    }
}

fn file_object(f: &FileRow) -> Value {
    json!({
        "id": f.id,
        "object": "file",
        "bytes": f.bytes,
        "created_at": f.created_at,
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
        "expires_at": null,
        "status_details": null,
    })
}

fn at(t: u64) -> Value {
    if t == 0 {
        Value::Null
    } else {
        json!(t)
    }
}

/// OpenAI's batch object, with the cost extension.
pub fn batch_object(b: &BatchRow) -> Value {
    let errors = b.failure.as_ref().map(|message| {
        json!({"object": "list", "data": [{"code": "batch_failed", "message": message, "param": null, "line": null}]})
    });
    json!({
        "id": b.id,
        "object": "batch",
        "endpoint": b.endpoint,
        "errors": errors,
        "input_file_id": b.input_file_id,
        "completion_window": b.completion_window,
        "status": b.status.as_str(),
        "output_file_id": b.output_file_id,
        "error_file_id": b.error_file_id,
        "created_at": b.created_at,
        "in_progress_at": at(b.in_progress_at),
        "expires_at": b.expires_at,
        "finalizing_at": at(b.finalizing_at),
        "completed_at": at(b.completed_at),
        "failed_at": at(b.failed_at),
        "expired_at": at(b.expired_at),
        "cancelling_at": at(b.cancelling_at),
        "cancelled_at": at(b.cancelled_at),
        "request_counts": {"total": b.total, "completed": b.completed, "failed": b.failed},
        "metadata": b.metadata,
        "usage": {
            "input_tokens": b.input_tokens,
            "output_tokens": b.output_tokens,
            "total_tokens": b.input_tokens + b.output_tokens,
        },
        "cost_nanoton": b.cost_nanoton,
        "max_coefficient": b.max_coefficient,
        "concurrency": b.concurrency,
    })
}

/// OpenAI's list object; `has_more` when `limit` cut it.
fn list(mut data: Vec<Value>, limit: Option<usize>, after: Option<&str>) -> Value {
    if let Some(after) = after {
        if let Some(pos) = data.iter().position(|v| v["id"] == after) {
            data.drain(..=pos);
        }
    }
    let limit = limit.unwrap_or(usize::MAX).max(1);
    let has_more = data.len() > limit;
    data.truncate(limit);
    json!({
        "object": "list",
        "first_id": data.first().map(|v| v["id"].clone()),
        "last_id": data.last().map(|v| v["id"].clone()),
        "has_more": has_more,
        "data": data,
    })
}

async fn upload(
    State(b): State<Arc<Batches>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, BatchError> {
    let row = b.upload(&headers, body).await?;
    Ok(Json(file_object(&row)))
}

#[derive(Deserialize)]
struct Page {
    limit: Option<usize>,
    after: Option<String>,
    purpose: Option<String>,
}

async fn list_files(
    State(b): State<Arc<Batches>>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, BatchError> {
    let files = b.store.files(page.purpose.as_deref())?;
    let data = files.iter().map(file_object).collect();
    Ok(Json(list(data, page.limit, page.after.as_deref())))
}

fn find_file(b: &Batches, id: &str) -> Result<FileRow, BatchError> {
    b.store.file(id)?.ok_or_else(|| BatchError::NotFound {
        kind: "file",
        id: id.to_owned(),
    })
}

async fn get_file(
    State(b): State<Arc<Batches>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, BatchError> {
    Ok(Json(file_object(&find_file(&b, &id)?)))
}

async fn delete_file(
    State(b): State<Arc<Batches>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, BatchError> {
    find_file(&b, &id)?;
    if let Some(batch) = b.store.active_batch_of(&id)? {
        return Err(BatchError::Conflict(format!(
            "file {id} is the input of batch {batch}, which is still running; cancel it first"
        )));
    }
    b.store.delete_file(&id)?;
    match tokio::fs::remove_file(b.file_path(&id)).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Json(json!({"id": id, "object": "file", "deleted": true})))
}

async fn file_content(
    State(b): State<Arc<Batches>>,
    Path(id): Path<String>,
) -> Result<Response, BatchError> {
    let row = find_file(&b, &id)?;
    let file = tokio::fs::File::open(b.file_path(&id)).await?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 16);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/jsonl")
        .header(header::CONTENT_LENGTH, row.bytes)
        .body(Body::from_stream(stream))
        .map_err(|e| BatchError::Io(std::io::Error::other(e)))
}

/// `completion_window` in seconds: `<hours>h`, 1 to 168 hours.
fn window_secs(w: &str) -> Option<u64> {
    let hours: u64 = w.strip_suffix('h')?.parse().ok()?;
    (1..=168).contains(&hours).then_some(hours * 3600)
}

async fn create(
    State(b): State<Arc<Batches>>,
    key: Option<axum::Extension<Arc<crate::client::keys::Key>>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, BatchError> {
    let req: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(Value::Object(o)) => o,
        _ => return Err(BatchError::Invalid("the body must be a JSON object".into())),
    };
    let text = |k: &str| -> Result<String, BatchError> {
        match req.get(k) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(BatchError::Invalid(format!("'{k}' must be a string"))),
            None => Err(BatchError::Invalid(format!("'{k}' is required"))),
        }
    };
    let input_file_id = text("input_file_id")?;
    let endpoint = text("endpoint")?;
    let completion_window = text("completion_window")?;
    if !BATCH_ENDPOINTS.contains(&endpoint.as_str()) {
        return Err(BatchError::Invalid(format!(
            "endpoint {endpoint:?} is not one batches can use ({})",
            BATCH_ENDPOINTS.join(", ")
        )));
    }
    let window = window_secs(&completion_window).ok_or_else(|| {
        BatchError::Invalid(format!(
            "completion_window {completion_window:?} is not a number of hours from 1h to 168h (OpenAI's is \"24h\")"
        ))
    })?;
    let metadata = match req.get("metadata") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Object(m)) if m.len() <= 16 && m.values().all(Value::is_string) => {
            Value::Object(m.clone())
        }
        Some(_) => {
            return Err(BatchError::Invalid(
                "'metadata' must be an object of at most 16 string values".into(),
            ))
        }
    };
    let max_coefficient = match req.get("max_coefficient") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|c| u32::try_from(c).ok())
                .ok_or_else(|| {
                    BatchError::Invalid(
                        "'max_coefficient' must be a whole number (1000 = 1.0×)".into(),
                    )
                })?,
        ),
    };
    let concurrency = match req.get("concurrency") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|c| u32::try_from(c).ok())
                .filter(|&c| c > 0)
                .ok_or_else(|| {
                    BatchError::Invalid("'concurrency' must be a whole number above 0".into())
                })?,
        ),
    };
    let file = b.store.file(&input_file_id)?.ok_or_else(|| {
        BatchError::Invalid(format!(
            "input_file_id {input_file_id:?} is not a file here"
        ))
    })?;
    if file.purpose != "batch" {
        return Err(BatchError::Invalid(format!(
            "file {input_file_id} has purpose {:?}; a batch reads a file uploaded with purpose \"batch\"",
            file.purpose
        )));
    }
    if let Some(other) = file.urls.iter().find(|u| **u != endpoint) {
        return Err(BatchError::Invalid(format!(
            "the file has lines for {other}, but the batch's endpoint is {endpoint}: every line must use the batch's endpoint"
        )));
    }
    let created = now();
    let row = BatchRow {
        id: new_id("batch_"),
        secret: rand::random(),
        input_file_id,
        endpoint,
        completion_window,
        metadata,
        status: Status::InProgress,
        created_at: created,
        in_progress_at: created,
        finalizing_at: 0,
        completed_at: 0,
        failed_at: 0,
        expired_at: 0,
        cancelling_at: 0,
        cancelled_at: 0,
        expires_at: created + window,
        output_file_id: None,
        error_file_id: None,
        total: file.lines,
        completed: 0,
        failed: 0,
        cost_nanoton: 0,
        input_tokens: 0,
        output_tokens: 0,
        dispatched: 0,
        max_coefficient,
        concurrency,
        api_key: key.map(|axum::Extension(k)| k.name.clone()),
        failure: None,
    };
    b.store.add_batch(&row)?;
    tracing::info!(batch = %row.id, lines = row.total, endpoint = %row.endpoint, "batch created");
    b.spawn(row.id.clone());
    Ok(Json(batch_object(&row)))
}

fn find_batch(b: &Batches, id: &str) -> Result<BatchRow, BatchError> {
    b.store.batch(id)?.ok_or_else(|| BatchError::NotFound {
        kind: "batch",
        id: id.to_owned(),
    })
}

async fn get_batch(
    State(b): State<Arc<Batches>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, BatchError> {
    Ok(Json(batch_object(&find_batch(&b, &id)?)))
}

async fn list_batches(
    State(b): State<Arc<Batches>>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, BatchError> {
    let data = b.store.batches()?.iter().map(batch_object).collect();
    Ok(Json(list(
        data,
        page.limit.or(Some(20)),
        page.after.as_deref(),
    )))
}

async fn cancel(
    State(b): State<Arc<Batches>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, BatchError> {
    let row = b
        .store
        .cancel(&id, now())?
        .ok_or_else(|| BatchError::NotFound {
            kind: "batch",
            id: id.clone(),
        })?;
    if row.status == Status::Cancelling {
        b.wake(&id);
    } else if !matches!(row.status, Status::Cancelled) {
        return Err(BatchError::Conflict(format!(
            "batch {id} is {} and can no longer be cancelled",
            row.status.as_str()
        )));
    }
    Ok(Json(batch_object(&row)))
}
