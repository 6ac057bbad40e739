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
use crate::worker::validation::{validate_form, validate_request, Endpoint};

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

/// The base name of the model the worker serves now.
fn served_base(shared: &Shared) -> String {
    shared.model.borrow().base.clone()
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

    let mut http_request: http_fn::Request = match cocoon_tl::from_bytes(&query.query) {
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
    // A request the worker cannot take: refused before anything is spent.
    let invalid = |detail: String| fail(Refusal::InvalidRequest, detail, AdjustedTokens::default());
    let endpoint = match Endpoint::of_url(&http_request.url) {
        Ok(endpoint) => endpoint,
        Err(e) => return invalid(e.to_string()).await,
    };
    let encrypted = query.private_key.filter(|key| *key != [0; 32]);
    if encrypted.is_some() && endpoint.takes_form() {
        return fail(
            Refusal::Encryption,
            "encrypted audio forms are not supported; send the form in plain text".into(),
            AdjustedTokens::default(),
        )
        .await;
    }
    // Encrypted to a key (COCOON protocol 3): the proxy handed us its private half.
    let sealed = match encrypted {
        None => None,
        Some(key) => match open_request(&mut http_request.payload, &key) {
            Ok(opened) => Some(opened),
            Err(detail) => {
                return fail(Refusal::Encryption, detail, AdjustedTokens::default()).await
            }
        },
    };
    let validated = if endpoint.takes_form() {
        let content_type = http_request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-type"))
            .map_or("", |h| h.value.as_str());
        let payload = bytes::Bytes::from(std::mem::take(&mut http_request.payload));
        validate_form(endpoint, content_type, payload, &served_base(shared)).await
    } else {
        validate_request(
            &http_request.url,
            &http_request.payload,
            &served_base(shared),
        )
    };
    let validated = match validated {
        Ok(v) => v,
        Err(e) => return invalid(e.to_string()).await,
    };
    let coefficient = u32::try_from(query.coefficient).unwrap_or(shared.settings.coefficient);
    let timeout = Duration::from_secs_f64((query.timeout * 0.95).clamp(0.001, 86_400.0));
    let mut headers: Vec<(String, String)> = http_request
        .headers
        .iter()
        .filter(|h| !is_hop_by_hop(&h.name))
        .filter(|h| {
            // A re-written form goes with its own boundary line.
            validated.content_type.is_none() || !h.name.eq_ignore_ascii_case("content-type")
        })
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    if let Some(content_type) = &validated.content_type {
        headers.push(("Content-Type".into(), content_type.clone()));
    }
    let render = validated.render;
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
    let mut response = match sent {
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

    // A transcript the worker renders: the model server's verbose_json is read whole and
    // metered, and the app gets the text.
    let mut rendered_from: Option<Vec<u8>> = None;
    if let Some(format) = render.filter(|_| (200..300).contains(&response.status)) {
        let whole = tokio::select! {
            r = tokio::time::timeout_at(deadline, read_whole(&mut response.body)) => r,
            _ = cancel.cancelled() => {
                return fail(Refusal::Cancelled, String::new(), AdjustedTokens::default()).await
            }
        };
        let json = match whole {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return fail(Refusal::ModelFailed, e, AdjustedTokens::default()).await,
            Err(_) => {
                return fail(
                    Refusal::Timeout,
                    "the model did not answer in time".into(),
                    AdjustedTokens::default(),
                )
                .await
            }
        };
        let text = match serde_json::from_slice::<serde_json::Value>(&json) {
            Ok(verbose) => crate::worker::audio::render(format, &verbose),
            Err(e) => {
                return fail(
                    Refusal::ModelFailed,
                    format!("the model server's verbose_json transcript is not JSON: {e}"),
                    AdjustedTokens::default(),
                )
                .await
            }
        };
        response
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
        response
            .headers
            .push(("Content-Type".into(), format.content_type().into()));
        response.body = Box::pin(futures::stream::once(async move {
            Ok(bytes::Bytes::from(text))
        }));
        rendered_from = Some(json);
    }
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
    if let Some(json) = &rendered_from {
        meter.count_only(json);
    }
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
    // An encrypted request's answer: SSE is sealed event by event as it streams; any other
    // answer is held in plain text until it is sealed whole, value by value, at its end.
    let streamed = match BodyFormat::from_content_type(content_type) {
        BodyFormat::Sse => true,
        BodyFormat::Sniff => sealed.as_ref().is_some_and(|s| s.stream),
        BodyFormat::Json | BodyFormat::Opaque => false,
    };
    let mut held = Vec::new();
    let mut events = SseSealer::default();
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, body.next()) => next,
            _ = cancel.cancelled() => {
                // Report what was delivered so far; the proxy bills exactly that. (An
                // encrypted answer delivered nothing yet, and nothing leaves in plain text.)
                let tail = meter.finish();
                if sealed.is_none() {
                    let _ = send_parts(handle, &reply, tail).await;
                }
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
        let mut out = meter.push(&chunk);
        if let Some(s) = &sealed {
            if !streamed {
                held.extend_from_slice(&out);
                continue;
            }
            out = match events.push(s, &out) {
                Ok(sealed_events) => sealed_events,
                Err(detail) => {
                    return fail(Refusal::Encryption, detail, billed(shared, &meter)).await
                }
            };
        }
        if send_parts(handle, &reply, out).await.is_err() {
            return false;
        }
    }
    let mut tail = meter.finish();
    if let Some(s) = &sealed {
        let mut plain = std::mem::take(&mut held);
        plain.extend_from_slice(&tail);
        let sealed_tail = if streamed {
            events.finish(s, &plain)
        } else {
            s.seal(&plain)
        };
        tail = match sealed_tail {
            Ok(sealed) => sealed,
            Err(detail) => return fail(Refusal::Encryption, detail, billed(shared, &meter)).await,
        };
    }
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

/// Reads a whole (small) answer body, for transcripts the worker renders.
async fn read_whole(body: &mut crate::worker::backend::BodyStream) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if out.len() + chunk.len() > crate::worker::metering::MAX_PENDING {
            return Err("the model server's transcript is too large to render".into());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
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

/// An encrypted request, opened: what the answer is sealed with.
struct Sealed {
    /// The key manager's seed the request was encrypted to.
    key: [u8; 32],
    /// The app's public key (the envelope's sender).
    app: [u8; 32],
    /// Whether the app asked for a streamed answer (decides how an answer without a
    /// content type is sealed).
    stream: bool,
}

impl Sealed {
    /// The answer sealed to the app, one JSON value per line as COCOON writes it; an
    /// answer that is not JSON is refused rather than sent in plain text.
    fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for value in serde_json::Deserializer::from_slice(plain).into_iter::<serde_json::Value>() {
            let value = value.map_err(|e| {
                format!("the model's answer is not JSON, so it cannot be encrypted: {e}")
            })?;
            let sealed =
                cocoon_e2e::seal(&value, &self.key, &self.app, cocoon_e2e::Direction::ToApp)
                    .map_err(|e| e.to_string())?;
            out.extend_from_slice(sealed.to_string().as_bytes());
            out.push(b'\n');
        }
        Ok(out)
    }
}

/// Seals a streamed (SSE) answer event by event, so that it still streams: the JSON of
/// each `data:` line is replaced by its sealed envelope; `data: [DONE]`, comments and
/// other fields pass as they are (they carry nothing of the answer). A `data:` line that
/// is not JSON is refused rather than sent in plain text. (COCOON 9060ce5 drops SSE
/// bodies altogether, its reference §3.3; its apps decrypt line by line, and `cocoon
/// decrypt` reads this SSE form.)
#[derive(Default)]
struct SseSealer {
    /// Bytes of an event not complete yet.
    pending: Vec<u8>,
}

impl SseSealer {
    /// Adds plain bytes; returns the complete events among them, sealed.
    fn push(&mut self, sealed: &Sealed, plain: &[u8]) -> Result<Vec<u8>, String> {
        self.pending.extend_from_slice(plain);
        let mut out = Vec::new();
        while let Some(end) = event_end(&self.pending) {
            let event: Vec<u8> = self.pending.drain(..end).collect();
            out.extend(seal_event(sealed, &event)?);
        }
        Ok(out)
    }

    /// Adds the last plain bytes; returns every event left, sealed (an unterminated last
    /// event included).
    fn finish(&mut self, sealed: &Sealed, plain: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = self.push(sealed, plain)?;
        let rest = std::mem::take(&mut self.pending);
        if !rest.iter().all(u8::is_ascii_whitespace) {
            out.extend(seal_event(sealed, &rest)?);
        }
        Ok(out)
    }
}

/// The length of the first complete SSE event in `buf` (through its blank line).
fn event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One SSE event with the JSON of its `data:` lines sealed to the app.
fn seal_event(sealed: &Sealed, event: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(event)
        .map_err(|_| "the model's streamed answer is not UTF-8, so it cannot be encrypted")?;
    let mut out = String::with_capacity(event.len() * 2);
    for line in text.split_inclusive('\n') {
        let (content, ending) = match line.strip_suffix("\r\n") {
            Some(c) => (c, "\r\n"),
            None => match line.strip_suffix('\n') {
                Some(c) => (c, "\n"),
                None => (line, ""),
            },
        };
        match content.strip_prefix("data:") {
            Some(data) if data.trim() != "[DONE]" => {
                let value: serde_json::Value = serde_json::from_str(data.trim()).map_err(|e| {
                    format!(
                        "a streamed event of the model is not JSON, so it cannot be encrypted: {e}"
                    )
                })?;
                let envelope = cocoon_e2e::seal(
                    &value,
                    &sealed.key,
                    &sealed.app,
                    cocoon_e2e::Direction::ToApp,
                )
                .map_err(|e| e.to_string())?;
                out.push_str("data: ");
                out.push_str(&envelope.to_string());
            }
            _ => out.push_str(content),
        }
        out.push_str(ending);
    }
    Ok(out.into_bytes())
}

/// Opens an encrypted request body in place with the key manager's `key`.
fn open_request(payload: &mut Vec<u8>, key: &[u8; 32]) -> Result<Sealed, String> {
    let body: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| format!("the request body is not JSON: {e}"))?;
    if !cocoon_e2e::is_encrypted(&body) {
        return Err("encryption key is provided, but request is unencrypted".into());
    }
    let opened = cocoon_e2e::open(&body, key, cocoon_e2e::Direction::ToWorker, None)
        .map_err(|e| e.to_string())?;
    *payload = serde_json::to_vec(&opened.body).map_err(|e| e.to_string())?;
    let stream = opened
        .body
        .get("stream")
        .and_then(serde_json::Value::as_bool)
        == Some(true);
    Ok(Sealed {
        key: *key,
        app: opened.sender,
        stream,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_e2e::{open, public_key, seal, Direction};
    use serde_json::json;

    const KEY_MANAGER: [u8; 32] = [7; 32];
    const APP: [u8; 32] = [8; 32];

    fn sealed_request(body: serde_json::Value) -> Vec<u8> {
        let sealed =
            seal(&body, &APP, &public_key(&KEY_MANAGER), Direction::ToWorker).expect("sealed");
        serde_json::to_vec(&sealed).expect("json")
    }

    #[test]
    fn an_encrypted_request_opens_and_its_answer_is_sealed_to_the_app() {
        let mut payload = sealed_request(json!({
            "model": "m", "messages": [{"role": "user", "content": "a secret"}]
        }));
        let sealed = open_request(&mut payload, &KEY_MANAGER).expect("opened");
        let plain: serde_json::Value = serde_json::from_slice(&payload).expect("json");
        assert_eq!(plain["messages"][0]["content"], "a secret");
        assert_eq!(sealed.app, public_key(&APP));

        let answer = br#"{"choices":[{"message":{"role":"assistant","content":"an answer"}}],"usage":{"total_tokens":5}}"#;
        let out = sealed.seal(answer).expect("sealed answer");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(!text.contains("an answer"), "{text}");
        assert!(text.ends_with('\n'));
        let value: serde_json::Value = serde_json::from_str(text.trim()).expect("one value");
        assert_eq!(value["usage"]["total_tokens"], 5, "numbers stay readable");
        let opened = open(
            &value,
            &APP,
            Direction::ToApp,
            Some(&public_key(&KEY_MANAGER)),
        )
        .expect("the app opens it");
        assert_eq!(opened.body["choices"][0]["message"]["content"], "an answer");
    }

    /// COCOON's worker aborts on an encrypted string shorter than its `ENC_` prefix
    /// (cocoon-protocol-9060ce5.md §11.3); ours refuses the request and lives on.
    #[test]
    fn a_short_or_broken_enc_value_is_refused_not_a_crash() {
        for value in ["", "E", "EN", "ENC", "ENC_", "ENC_0", "ENC_zz", "DE"] {
            let sealed = sealed_request(json!({"model": "m", "prompt": "x"}));
            let mut body: serde_json::Value = serde_json::from_slice(&sealed).expect("json");
            body["prompt"] = json!(value);
            let mut payload = serde_json::to_vec(&body).expect("json");
            let refused = open_request(&mut payload, &KEY_MANAGER);
            assert!(refused.is_err(), "{value:?} was accepted");
        }
        // The worker still opens a good request afterwards.
        let mut payload = sealed_request(json!({"model": "m", "prompt": "x"}));
        assert!(open_request(&mut payload, &KEY_MANAGER).is_ok());
    }

    #[test]
    fn what_cannot_be_served_encrypted_is_refused() {
        // A plain body with a key.
        let mut plain = br#"{"model":"m","messages":[]}"#.to_vec();
        assert_eq!(
            open_request(&mut plain, &KEY_MANAGER).err().as_deref(),
            Some("encryption key is provided, but request is unencrypted")
        );
        // Encrypted to another key.
        let mut other = sealed_request(json!({"model": "m", "prompt": "x"}));
        assert!(open_request(&mut other, &[9; 32]).is_err());
        // An answer that is not JSON is never sent in plain text.
        let mut payload = sealed_request(json!({"model": "m", "prompt": "x"}));
        let sealed = open_request(&mut payload, &KEY_MANAGER).expect("opened");
        assert!(sealed.seal(b"plain text error").is_err());
        let mut events = SseSealer::default();
        assert!(events.push(&sealed, b"data: not json\n\n").is_err());
    }

    #[test]
    fn a_streamed_answer_is_sealed_event_by_event_as_it_arrives() {
        let mut payload = sealed_request(json!({"model": "m", "prompt": "x", "stream": true}));
        let sealed = open_request(&mut payload, &KEY_MANAGER).expect("opened");
        assert!(sealed.stream);
        let mut events = SseSealer::default();
        // An event split across chunks is sent once complete, still as SSE.
        let first = events
            .push(
                &sealed,
                b"data: {\"choices\":[{\"delta\":{\"content\":\"sec",
            )
            .expect("partial");
        assert!(first.is_empty(), "nothing before the event is complete");
        let first = events
            .push(&sealed, b"ret\"}}]}\n\n: keep-alive\n\n")
            .expect("complete");
        let text = String::from_utf8(first).expect("utf-8");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.ends_with(": keep-alive\n\n"), "comments pass: {text}");
        let data = text
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("a data line");
        let value: serde_json::Value = serde_json::from_str(data).expect("json");
        let opened = open(
            &value,
            &APP,
            Direction::ToApp,
            Some(&public_key(&KEY_MANAGER)),
        )
        .expect("the app opens it");
        assert_eq!(opened.body["choices"][0]["delta"]["content"], "secret");
        // The last event may lack its blank line; [DONE] stays as it is.
        let tail = events
            .finish(
                &sealed,
                b"data: {\"usage\":{\"total_tokens\":3}}\r\n\r\ndata: [DONE]",
            )
            .expect("tail");
        let text = String::from_utf8(tail).expect("utf-8");
        assert!(text.ends_with("data: [DONE]"), "{text}");
        assert!(text.contains("\r\n\r\n"), "CRLF framing kept: {text}");
        assert_eq!(text.matches("data: ").count(), 2);
    }
}
