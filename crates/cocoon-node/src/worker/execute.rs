//! One request at the worker: validation, the call to the inference backend, metering of
//! the answer as it streams, and the answer written back to the proxy in parts, ending with
//! the usage it is billed (cocoon-protocol.md §3.2, §3.3).

use std::sync::atomic::Ordering;
use std::time::Duration;

use cocoon_net::RpcHandle;
use cocoon_tl::functions::http as http_fn;
use cocoon_tl::types::http;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::limits::MAX_ANSWER_PART;
use crate::pricing::{AdjustedTokens, Prices};
use crate::protocol::answer::WorkerReply;
use crate::protocol::http::{is_hop_by_hop, is_server_identifying};
use crate::protocol::version::Version;
use crate::protocol::Extensions;
use crate::protocol::Refusal;
use crate::util::unix_now;
use crate::worker::backend::BackendRequest;
use crate::worker::metering::{BodyFormat, UsageMeter};
use crate::worker::validation::validate_request;

use super::Shared;

/// What a request needs to know about the proxy link it came on.
#[derive(Debug, Clone, Copy)]
pub(super) struct Link {
    /// The protocol version of the link.
    pub(super) proto: Version,
    /// The cocoon-rs extensions the proxy accepted.
    pub(super) extensions: Extensions,
    /// The prices of the root parameters the link runs under.
    pub(super) prices: Prices,
}

/// Runs one request; returns whether it completed successfully.
pub(super) async fn run_request(
    shared: &Shared,
    handle: &RpcHandle,
    query: &cocoon_tl::functions::proxy::RunQueryEx,
    link: Link,
    cancel: &CancellationToken,
) -> bool {
    let start = unix_now();
    let request_id = query.request_id;
    let reply = WorkerReply {
        proto: link.proto,
        request_id,
        start,
        debug: query.enable_debug.unwrap_or(false),
    };
    let fail = |refusal: Refusal, detail: String, tokens: AdjustedTokens| {
        let (code, message) = (refusal.code().code(), refusal.message(detail));
        warn!(code, %message, "request failed");
        let answer = reply.error(code, &message, tokens);
        async move {
            let _ = handle.send_packet(&answer).await;
            false
        }
    };

    // A request encrypted to a key (COCOON protocol 3) needs decryption this worker does
    // not have yet; it speaks at most 2, so no proxy should send one.
    if query.private_key.is_some_and(|key| key != [0; 32]) {
        let detail = "encrypted requests are not supported by this worker".to_owned();
        return fail(Refusal::InvalidRequest, detail, AdjustedTokens::default()).await;
    }

    let http_request: http_fn::Request = match cocoon_tl::from_bytes(&query.query) {
        Ok(r) => r,
        Err(e) => {
            return fail(
                Refusal::InvalidRequest,
                format!("the query is not an http.request: {e}"),
                AdjustedTokens::default(),
            )
            .await
        }
    };
    let validated =
        match validate_request(&http_request.url, &http_request.payload, &shared.base_model) {
            Ok(v) => v,
            Err(e) => {
                return fail(
                    Refusal::InvalidRequest,
                    e.to_string(),
                    AdjustedTokens::default(),
                )
                .await
            }
        };
    let coefficient = u32::try_from(query.coefficient).unwrap_or(shared.settings.coefficient);
    let timeout = Duration::from_secs_f64((query.timeout * 0.95).clamp(0.001, 86_400.0));
    let headers = http_request
        .headers
        .iter()
        .filter(|h| !is_hop_by_hop(&h.name))
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    let max_completion = validated.max_completion;
    let backend_request = BackendRequest {
        method: http_request.method.clone(),
        path: validated.endpoint.path().to_owned(),
        headers,
        body: validated.body,
    };
    let request_bytes = backend_request.body.len() as u64;
    let deadline = tokio::time::Instant::now() + timeout;
    let sent = tokio::select! {
        r = tokio::time::timeout_at(deadline, shared.backend.send(backend_request, timeout)) => r,
        _ = cancel.cancelled() => {
            return fail(Refusal::Cancelled, String::new(), AdjustedTokens::default()).await
        }
    };
    let response = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) if e != crate::worker::backend::BackendError::Timeout => {
            return fail(
                Refusal::ModelFailed,
                e.to_string(),
                AdjustedTokens::default(),
            )
            .await
        }
        Ok(Err(_)) | Err(_) => {
            return fail(
                Refusal::Timeout,
                "the model did not answer in time".into(),
                AdjustedTokens::default(),
            )
            .await
        }
    };

    let content_type = response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.as_str());
    let mut meter = UsageMeter::new(
        BodyFormat::from_content_type(content_type),
        coefficient,
        link.prices,
    )
    .bounded(request_bytes, max_completion);
    let mut headers: Vec<http::Header> = response
        .headers
        .iter()
        .filter(|(n, _)| !is_hop_by_hop(n) && !is_server_identifying(n))
        .map(|(name, value)| http::Header {
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    headers.push(http::Header {
        name: "X-Cocoon-Worker-Start".into(),
        value: format!("{start:.6}"),
    });
    let head = http::Response {
        http_version: "HTTP/1.1".into(),
        status_code: i32::from(response.status),
        reason: response.reason.clone(),
        headers,
        payload: Vec::new(),
    };
    let head_answer = reply.head(cocoon_tl::to_bytes(&head));
    match handle.send_packet(&head_answer).await {
        Ok(()) => {}
        Err(e @ cocoon_net::RpcError::TooLarge { .. }) => {
            return fail(
                Refusal::TooLarge,
                format!("the model's answer head: {e}"),
                AdjustedTokens::default(),
            )
            .await
        }
        Err(_) => return false,
    }

    let mut body = response.body;
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, body.next()) => next,
            _ = cancel.cancelled() => {
                // Report what was delivered so far; the proxy bills exactly that.
                let tail = meter.finish();
                let _ = send_parts(handle, &reply, tail).await;
                return fail(Refusal::Cancelled, String::new(), billed(shared, &meter)).await;
            }
        };
        let chunk = match next {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return fail(Refusal::ModelFailed, e.to_string(), billed(shared, &meter)).await
            }
            Err(_) => {
                return fail(
                    Refusal::Timeout,
                    "the model's answer exceeded the request timeout".into(),
                    billed(shared, &meter),
                )
                .await
            }
        };
        let out = meter.push(&chunk);
        if send_parts(handle, &reply, out).await.is_err() {
            return false;
        }
    }
    let mut tail = meter.finish();
    // The last part carries the final info: what does not fit beside it goes first.
    if tail.len() > MAX_ANSWER_PART {
        let last = tail.split_off(tail.len() - MAX_ANSWER_PART);
        if send_parts(handle, &reply, tail).await.is_err() {
            return false;
        }
        tail = last;
    }
    let tokens = billed(shared, &meter);
    shared
        .stats
        .adjusted_tokens
        .fetch_add(tokens.total(), Ordering::Relaxed);
    let last = reply.last(tail, tokens);
    debug!(tokens = tokens.total(), "request complete");
    handle.send_packet(&last).await.is_ok()
}

/// Sends `bytes` as non-final answer parts of at most [`MAX_ANSWER_PART`] bytes each, so
/// that an answer of any size never ends the link (and every other request on it).
async fn send_parts(
    handle: &RpcHandle,
    reply: &WorkerReply,
    bytes: Vec<u8>,
) -> Result<(), cocoon_net::RpcError> {
    for piece in crate::limits::answer_parts(&bytes) {
        handle.send_packet(&reply.part(piece.to_vec())).await?;
    }
    Ok(())
}

/// The adjusted tokens to report for an answer: the metered usage within what the request
/// could have produced. A model server that claimed more is logged and counted.
fn billed(shared: &Shared, meter: &UsageMeter) -> AdjustedTokens {
    if meter.clipped() {
        shared.stats.usage_clipped.fetch_add(1, Ordering::Relaxed);
        warn!(
            reported = ?meter.reported(),
            billed = ?meter.usage(),
            "the model server reported more usage than the request could have produced; billing within the bound"
        );
    }
    meter.adjusted()
}
