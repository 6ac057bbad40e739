//! Relay: a request from admission to its last message: reservation, the worker it runs on,
//! the answer relayed in the client's protocol, retries on another worker, cancellation and
//! failure.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cocoon_net::{RpcError, RpcHandle};
use cocoon_tl::enums;
use cocoon_tl::functions::{client as client_fn, http as http_fn, proxy as proxy_fn};
use cocoon_tl::types::{cocoonrs, http, proxy};
use tracing::{debug, info, info_span, warn, Instrument};
use tycho_types::models::StdAddr;

use super::admission::ClientSession;
use super::billing::bounded;
use super::demand::{unix_minute, Outcome as Asked};
use super::replay::{once_id, unseal, Kept};
use super::routing::{Assignment, Needs, Outcome};
use super::{log_text, Proxy};
use crate::chain::Owner;
use crate::limits::MAX_ANSWER_PART;
use crate::pricing::{reservation, AdjustedTokens, DEFAULT_MAX_TOKENS};
use crate::protocol::answer::{ClientReply, FromWorker, Piece, Position, ProxyTrace};
use crate::protocol::endpoint::Endpoint;
use crate::protocol::http::base_model_name;
use crate::protocol::version::flags;
use crate::protocol::{Refusal, Version};
use crate::util::{hex_short, unix_now};

pub(super) struct Running {
    pub(super) client_owner: Owner,
    pub(super) client_sc: StdAddr,
    pub(super) client: RpcHandle,
    pub(super) client_proto: Version,
    pub(super) client_request_id: [u8; 32],
    pub(super) query: Arc<Vec<u8>>,
    pub(super) model: String,
    pub(super) max_coefficient: u32,
    pub(super) reserved: u64,
    pub(super) timeout: f64,
    pub(super) debug: bool,
    /// The key manager's private key of the app's `receiver_public_key`, handed to the
    /// worker with the request; None for plain requests.
    pub(super) private_key: Option<[u8; 32]>,
    /// The coefficient the current worker prices at (sent to it in `proxy.runQueryEx`).
    pub(super) coefficient: u32,
    /// Answer bytes relayed from the current worker.
    pub(super) relayed: u64,
    pub(super) worker: u64,
    pub(super) worker_owner: Owner,
    pub(super) worker_sc: StdAddr,
    pub(super) tried: Vec<u64>,
    pub(super) head_sent: bool,
    pub(super) started: Instant,
    pub(super) proxy_start: f64,
    pub(super) client_gone: bool,
    /// For a request to be answered once: what its client got so far, to keep with the
    /// booking ([`super::replay`]).
    pub(super) kept: Option<Kept>,
}

/// The requests in flight, by the proxy's request id.
#[derive(Default)]
pub(super) struct RequestTable {
    by_id: HashMap<[u8; 32], Running>,
}

impl RequestTable {
    /// Adds a request that was just forwarded.
    pub(super) fn insert(&mut self, id: [u8; 32], request: Running) {
        self.by_id.insert(id, request);
    }

    /// A request by id.
    pub(super) fn get(&self, id: &[u8; 32]) -> Option<&Running> {
        self.by_id.get(id)
    }

    /// A request by id, to record progress.
    pub(super) fn get_mut(&mut self, id: &[u8; 32]) -> Option<&mut Running> {
        self.by_id.get_mut(id)
    }

    /// Takes a request that ended.
    pub(super) fn remove(&mut self, id: &[u8; 32]) -> Option<Running> {
        self.by_id.remove(id)
    }

    /// How many are in flight.
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The requests running on worker connection `worker`, each with whether its head
    /// already went to the client (then it cannot move to another worker).
    pub(super) fn on_worker(&self, worker: u64) -> Vec<([u8; 32], bool)> {
        self.by_id
            .iter()
            .filter(|(_, r)| r.worker == worker)
            .map(|(id, r)| (*id, r.head_sent))
            .collect()
    }

    /// Marks the requests matching `which` as abandoned by their client; returns those
    /// newly abandoned with the worker connection each runs on.
    pub(super) fn abandon(&mut self, which: impl Fn(&Running) -> bool) -> Vec<([u8; 32], u64)> {
        let mut out = Vec::new();
        for (id, r) in &mut self.by_id {
            if !r.client_gone && which(r) {
                r.client_gone = true;
                out.push((*id, r.worker));
            }
        }
        out
    }
}

impl Running {
    /// How this request's answer is written to its client.
    pub(super) fn reply(&self) -> ClientReply {
        ClientReply {
            proto: self.client_proto,
            request_id: self.client_request_id,
            trace: Some(ProxyTrace {
                debug: self.debug,
                proxy_start: self.proxy_start,
            }),
        }
    }

    /// Where an error would stand in the client's answer now.
    pub(super) fn after_head(&self) -> Piece {
        if self.head_sent {
            Piece::Part
        } else {
            Piece::Head
        }
    }
}

/// The claim of a request to be answered once, given up when dropped armed (the request
/// was refused before it ran); disarmed, `finish` gives it up after booking.
struct OnceClaim {
    proxy: Proxy,
    id: [u8; 32],
    armed: bool,
}

impl Drop for OnceClaim {
    fn drop(&mut self) {
        if self.armed {
            self.proxy.state().once_claims.remove(&self.id);
        }
    }
}

/// What to send once the state lock is released.
pub(super) enum Send {
    Client(RpcHandle, Vec<u8>),
    Worker(RpcHandle, Vec<u8>),
}

impl Send {
    /// Sends the message; a failure is logged and returned (a message too large for a
    /// frame fails alone: the connection lives on).
    pub(super) async fn run(self) -> Result<(), RpcError> {
        let (handle, data) = match self {
            Send::Client(h, d) | Send::Worker(h, d) => (h, d),
        };
        let sent = handle.send_packet_raw(data).await;
        if let Err(e) = &sent {
            debug!(error = %e, "could not deliver a message");
        }
        sent
    }
}

impl Proxy {
    pub(super) async fn forward_query(
        &self,
        client: RpcHandle,
        session: &ClientSession,
        q: client_fn::RunQueryEx,
    ) {
        let (owner, proto) = (session.owner.as_str(), session.proto);
        let stats = &self.shared.stats;
        stats.requests_received.fetch_add(1, Ordering::Relaxed);
        let s = &self.shared.settings;
        let span =
            info_span!("request", id = %hex_short(&q.request_id), model = %log_text(&q.model_name));
        let reject = |refusal: Refusal, detail: String| {
            let client = client.clone();
            let message = refusal.message(detail);
            let code = refusal.code().code();
            let to = ClientReply {
                proto,
                request_id: q.request_id,
                trace: None,
            };
            let msg = to.error(Piece::Head, code, &message, AdjustedTokens::default());
            async move {
                stats.requests_rejected.fetch_add(1, Ordering::Relaxed);
                info!(code, %message, "request rejected");
                let _ = client.send_packet_raw(msg).await;
            }
        };
        let max_tokens = u64::try_from(q.max_tokens)
            .ok()
            .filter(|&t| t > 0)
            .unwrap_or(DEFAULT_MAX_TOKENS);
        let max_coefficient = u32::try_from(q.max_coefficient).unwrap_or(0);
        if self.is_rotating() {
            return reject(Refusal::Rotating, String::new())
                .instrument(span)
                .await;
        }
        // A request to be answered once (a cocoon-rs extension): claimed by its id until
        // its booking is durable; answered from the ledger if it was answered before.
        let once = q.flags & flags::QUERY_ANSWER_ONCE != 0 && session.extensions.answer_once();
        let mut claim = None;
        if once {
            let id = once_id(owner, &q.request_id);
            if !self.state().once_claims.insert(id) {
                return reject(Refusal::StillRunning, String::new())
                    .instrument(span)
                    .await;
            }
            let guard = OnceClaim {
                proxy: self.clone(),
                id,
                armed: true,
            };
            match self.shared.ledger.kept_answer(&id) {
                Ok(Some(kept)) => match unseal(&kept) {
                    Some((kept_proto, packets)) if kept_proto == proto => {
                        stats.requests_replayed.fetch_add(1, Ordering::Relaxed);
                        info!(parent: &span, "answered again with the kept answer; nothing billed");
                        for packet in packets {
                            if client.send_packet_raw(packet).await.is_err() {
                                break;
                            }
                        }
                        return;
                    }
                    _ => {
                        drop(guard);
                        return reject(
                            Refusal::AnsweredBefore,
                            "it was kept for another protocol version".into(),
                        )
                        .instrument(span)
                        .await;
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    drop(guard);
                    return reject(Refusal::Failed, format!("the ledger cannot be read: {e}"))
                        .instrument(span)
                        .await;
                }
            }
            match self.shared.ledger.is_booked(&id) {
                Ok(false) => {}
                Ok(true) => {
                    drop(guard);
                    return reject(Refusal::AnsweredBefore, String::new())
                        .instrument(span)
                        .await;
                }
                Err(e) => {
                    drop(guard);
                    return reject(Refusal::Failed, format!("the ledger cannot be read: {e}"))
                        .instrument(span)
                        .await;
                }
            }
            claim = Some(guard);
        }
        // Encrypted to a key (protocol 3): the key manager's private key of it goes to the
        // worker with the request; a key this proxy does not hold is refused as COCOON does.
        let private_key = match q.public_key.filter(|k| *k != [0; 32]) {
            None => None,
            Some(key) => match self.shared.keys.seed_for(&key, crate::util::unix_secs()) {
                Some(seed) => Some(seed),
                None => {
                    return reject(Refusal::UnknownKey, hex::encode(key))
                        .instrument(span)
                        .await
                }
            },
        };
        let needs = query_needs(&q.query, private_key.is_some());
        let available = self.available_tokens(owner);
        if available < max_tokens {
            return reject(
                Refusal::BalanceTooLow,
                format!(
                    "{max_tokens} requested, {available} tokens available (lower max_tokens or top up)"
                ),
            )
            .instrument(span)
            .await;
        }
        if q.min_config_version > s.config_version {
            return reject(
                Refusal::Failed,
                format!(
                    "proxy config version {} is older than the client's {}",
                    s.config_version, q.min_config_version
                ),
            )
            .instrument(span)
            .await;
        }
        let to_reserve = reservation(max_tokens, q.query.len(), max_coefficient);
        if to_reserve > available {
            return reject(
                Refusal::ReservationTooLarge,
                format!(
                    "it reserves {to_reserve} tokens (max_tokens and request size at max_coefficient), {available} available"
                ),
            )
            .instrument(span)
            .await;
        }
        let proxy_request_id: [u8; 32] = match &claim {
            Some(c) => c.id,
            None => rand::random(),
        };
        let model = base_model_name(&q.model_name).to_owned();
        let query = Arc::new(q.query);
        let timeout = if q.timeout > 0.0 && q.timeout.is_finite() {
            q.timeout
        } else {
            120.0
        };
        let chosen = {
            let mut state = self.state();
            let assigned = state.workers.assign(&model, max_coefficient, &[], needs);
            let outcome = match &assigned {
                Ok(link) => Asked::Routed {
                    coefficient: link.coefficient,
                },
                // "No worker" while workers of the model are connected: all of them full.
                Err((Refusal::NoWorker, _))
                    if state
                        .workers
                        .serving()
                        .any(|w| w.model == model && w.running >= w.max_active) =>
                {
                    Asked::Refused(Refusal::WorkerBusy)
                }
                Err((refusal, _)) => Asked::Refused(*refusal),
            };
            self.shared
                .demand
                .record(&model, max_coefficient, outcome, unix_minute());
            match assigned {
                Err(e) => Err(e),
                Ok(link) => {
                    self.shared.reservations.reserve(owner, to_reserve);
                    let worker = link.id;
                    let send = run_query_message(
                        &link,
                        &query,
                        timeout,
                        proxy_request_id,
                        q.enable_debug.unwrap_or(false),
                        private_key,
                    );
                    let (worker_owner, worker_sc, coefficient) =
                        (link.owner, link.sc, link.coefficient);
                    state.requests.insert(
                        proxy_request_id,
                        Running {
                            client_owner: session.owner.clone(),
                            client_sc: session.sc.clone(),
                            client: client.clone(),
                            client_proto: proto,
                            client_request_id: q.request_id,
                            query,
                            model,
                            max_coefficient,
                            reserved: to_reserve,
                            timeout,
                            debug: q.enable_debug.unwrap_or(false),
                            private_key,
                            coefficient,
                            relayed: 0,
                            worker,
                            worker_owner,
                            worker_sc,
                            tried: vec![worker],
                            head_sent: false,
                            started: Instant::now(),
                            proxy_start: unix_now(),
                            client_gone: false,
                            kept: once.then(Kept::default),
                        },
                    );
                    // From here `finish` gives the claim up, once the booking is durable.
                    if let Some(c) = &mut claim {
                        c.armed = false;
                    }
                    Ok(send)
                }
            }
        };
        let send = match chosen {
            Ok(send) => send,
            Err((refusal, detail)) => return reject(refusal, detail).instrument(span).await,
        };
        debug!(parent: &span, proxy_request = %hex_short(&proxy_request_id), "forwarded to worker");
        if let Err(e @ RpcError::TooLarge { .. }) = send.run().await {
            return self
                .fail_request(proxy_request_id, Refusal::TooLarge, &e.to_string(), None)
                .instrument(span)
                .await;
        }
        // The proxy's own timer: the client's timeout.
        let proxy = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(timeout.min(86_400.0))).await;
            proxy
                .fail_request(
                    proxy_request_id,
                    Refusal::Timeout,
                    "the request's time ran out at the proxy",
                    None,
                )
                .await;
        });
    }

    /// Marks the requests matching `which` as abandoned by their client and cancels them
    /// at workers that offered the cancellation extension. Tokens the worker reports
    /// for the part it delivered are still booked.
    pub(super) async fn cancel_requests(&self, which: impl Fn(&Running) -> bool) {
        let cancels = {
            let mut state = self.state();
            let abandoned = state.requests.abandon(which);
            let mut out = Vec::new();
            for (request_id, worker) in abandoned {
                let link = state.workers.get(worker);
                if let Some(w) = link.filter(|w| w.extensions.cancellation()) {
                    let msg = cocoonrs::CancelQuery { request_id };
                    out.push(Send::Worker(w.handle.clone(), cocoon_tl::to_bytes(&msg)));
                }
            }
            out
        };
        for c in cancels {
            let _ = c.run().await;
        }
    }

    pub(super) async fn worker_answer(&self, worker_id: u64, message: enums::proxy::QueryAnswerEx) {
        let (request_id, message) = FromWorker::read(message);
        let mut sends = Vec::new();
        let mut finished = None;
        let mut retry = None;
        let mut out_of_order = false;
        let mut overclaim = None;
        let multipliers = self.prices().multipliers;
        'locked: {
            let mut state = self.state();
            let Some(r) = state.requests.get_mut(&request_id) else {
                debug!("answer for a finished request ignored");
                return;
            };
            if r.worker != worker_id {
                debug!("answer from a worker no longer in charge ignored");
                return;
            }
            match message {
                FromWorker::Answer {
                    piece,
                    answer,
                    last,
                } => {
                    let in_order = match piece {
                        Piece::Head => !r.head_sent,
                        Piece::Part => r.head_sent,
                    };
                    if !in_order {
                        out_of_order = true;
                        break 'locked;
                    }
                    r.head_sent = true;
                    r.relayed = r.relayed.saturating_add(answer.len() as u64);
                    let info = last.as_ref().and_then(|l| l.0.as_ref());
                    let tokens = bounded(r, info, multipliers, &mut overclaim);
                    let position = match &last {
                        Some(_) => Position::Last(info),
                        None => Position::More,
                    };
                    let msg = match piece {
                        Piece::Head => {
                            let (head, payload) = add_proxy_header(&answer, r.proxy_start);
                            if payload.is_empty() {
                                r.reply().answer(Piece::Head, head, tokens, position)
                            } else {
                                // A large body in the head travels as parts after it.
                                let head =
                                    r.reply().answer(Piece::Head, head, tokens, Position::More);
                                sends.push(Send::Client(r.client.clone(), head));
                                relay_parts(r, payload, tokens, position, &mut sends)
                            }
                        }
                        Piece::Part => relay_parts(r, answer, tokens, position, &mut sends),
                    };
                    if last.is_some() {
                        finished = Some((tokens, true, Some(msg)));
                    } else {
                        sends.push(Send::Client(r.client.clone(), msg));
                    }
                    // The last message is kept with the booking (`finish`).
                    if let Some(kept) = &mut r.kept {
                        for send in &sends {
                            if let Send::Client(_, packet) = send {
                                kept.push(packet);
                            }
                        }
                    }
                }
                FromWorker::Error {
                    code,
                    message,
                    info,
                } => {
                    let retryable = Refusal::classify(code, &message).another_worker_may_succeed()
                        && !r.client_gone;
                    if !r.head_sent && retryable {
                        retry = Some((code, message));
                    } else {
                        // Billed: what the worker reports it delivered (nothing before the head).
                        let (billed, instead_of) = if r.head_sent {
                            let billed = bounded(r, info.as_ref(), multipliers, &mut overclaim);
                            (billed, Piece::Part)
                        } else {
                            (AdjustedTokens::default(), Piece::Head)
                        };
                        let msg = r.reply().error(instead_of, code, &message, billed);
                        finished = Some((billed, false, Some(msg)));
                    }
                }
            }
        }
        if let Some((reported, billed)) = overclaim {
            self.overclaimed(request_id, worker_id, reported, billed);
        }
        if out_of_order {
            return self
                .fail_request(
                    request_id,
                    Refusal::Failed,
                    "the worker sent its answer parts out of order",
                    None,
                )
                .await;
        }
        for s in sends {
            if let Err(e @ RpcError::TooLarge { .. }) = s.run().await {
                return self
                    .fail_request(request_id, Refusal::TooLarge, &e.to_string(), None)
                    .await;
            }
        }
        if let Some((code, reason)) = retry {
            self.retry_or_fail(request_id, code, &reason).await;
        } else if let Some((tokens, ok, last)) = finished {
            self.finish(request_id, tokens, ok, last).await;
        }
    }

    /// Sends the request to another worker if one is left to try, else fails it.
    /// On failure the client gets the last worker's error code and message.
    pub(super) async fn retry_or_fail(&self, request_id: [u8; 32], code: i32, reason: &str) {
        let send = {
            let mut state = self.state();
            let Some(r) = state.requests.get(&request_id) else {
                return;
            };
            let attempts = u32::try_from(r.tried.len()).unwrap_or(u32::MAX);
            if attempts >= self.shared.settings.max_attempts {
                None
            } else {
                let (model, max_coefficient, tried) =
                    (r.model.clone(), r.max_coefficient, r.tried.clone());
                let (query, timeout, debug, old) = (r.query.clone(), r.timeout, r.debug, r.worker);
                let private_key = r.private_key;
                let needs = query_needs(&query, private_key.is_some());
                match state.workers.assign(&model, max_coefficient, &tried, needs) {
                    Err(_) => None,
                    Ok(next) => {
                        state.workers.release(old, Outcome::Failed);
                        let send = run_query_message(
                            &next,
                            &query,
                            timeout,
                            request_id,
                            debug,
                            private_key,
                        );
                        // Present: read under the same lock above.
                        if let Some(r) = state.requests.get_mut(&request_id) {
                            r.worker = next.id;
                            r.coefficient = next.coefficient;
                            r.relayed = 0;
                            r.worker_owner = next.owner;
                            r.worker_sc = next.sc;
                            r.tried.push(next.id);
                        }
                        Some(send)
                    }
                }
            }
        };
        match send {
            Some(send) => {
                self.shared
                    .stats
                    .requests_retried
                    .fetch_add(1, Ordering::Relaxed);
                info!(proxy_request = %hex_short(&request_id), %reason, "retrying on another worker");
                if let Err(e @ RpcError::TooLarge { .. }) = send.run().await {
                    self.fail_request(request_id, Refusal::TooLarge, &e.to_string(), None)
                        .await;
                }
            }
            None => {
                self.fail_request_with_code(request_id, code, reason, None)
                    .await
            }
        }
    }

    /// Ends a request with an error sent by the proxy itself (if it is still running).
    pub(super) async fn fail_request(
        &self,
        request_id: [u8; 32],
        refusal: Refusal,
        detail: &str,
        tokens: Option<AdjustedTokens>,
    ) {
        self.fail_request_with_code(
            request_id,
            refusal.code().code(),
            &refusal.message(detail),
            tokens,
        )
        .await
    }

    /// [`Proxy::fail_request`] with a raw code (e.g. one a worker sent).
    pub(super) async fn fail_request_with_code(
        &self,
        request_id: [u8; 32],
        code: i32,
        message: &str,
        tokens: Option<AdjustedTokens>,
    ) {
        let msg = {
            let state = self.state();
            let Some(r) = state.requests.get(&request_id) else {
                return;
            };
            r.reply()
                .error(r.after_head(), code, message, tokens.unwrap_or_default())
        };
        warn!(proxy_request = %hex_short(&request_id), code, %message, "request failed");
        self.finish(request_id, tokens.unwrap_or_default(), false, Some(msg))
            .await;
    }
}

/// The endpoint of a query's `http.request` (its url read without decoding the payload);
/// `None` when it is not one we know.
fn query_endpoint(query: &[u8]) -> Option<Endpoint> {
    let mut r = cocoon_tl::Reader::new(query);
    r.read_u32().ok()?; // the http.request constructor
    r.read_byte_slice().ok()?; // method
    let url = std::str::from_utf8(r.read_byte_slice().ok()?).ok()?;
    Endpoint::of_url(url).ok()
}

/// What a query (a serialized `http.request`) needs of a worker beyond its model, price
/// and a free slot. Chat requests that offer `tools` need a worker that calls tools; the
/// key names stay in clear in encrypted requests (§2.8 encrypts values), so this holds for
/// them too. The body is parsed only when the bytes `"tools"` occur in the query.
pub(super) fn query_needs(query: &[u8], request_keys: bool) -> Needs {
    let endpoint = query_endpoint(query);
    let tools = endpoint == Some(Endpoint::ChatCompletions)
        && memchr::memmem::find(query, b"\"tools\"").is_some()
        && offers_tools(query);
    Needs {
        request_keys,
        endpoint,
        tools,
    }
}

/// Whether the chat request in `query` has a non-empty `tools` array.
fn offers_tools(query: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        tools: Option<Vec<serde::de::IgnoredAny>>,
    }
    let Ok(request) = cocoon_tl::from_bytes::<http_fn::Request>(query) else {
        return false;
    };
    serde_json::from_slice::<Probe>(&request.payload)
        .ok()
        .and_then(|p| p.tools)
        .is_some_and(|t| !t.is_empty())
}

pub(super) fn run_query_message(
    link: &Assignment,
    query: &[u8],
    timeout: f64,
    request_id: [u8; 32],
    debug: bool,
    private_key: Option<[u8; 32]>,
) -> Send {
    let msg = proxy_fn::RunQueryEx {
        query: query.to_vec(),
        signed_payment: proxy::SignedPaymentEmpty {}.into(),
        coefficient: i64::from(link.coefficient),
        timeout: timeout * 0.95,
        request_id,
        flags: 0, // the codec sets the bits of the fields present
        enable_debug: Some(debug),
        // Protocol 3: the key field travels, zero for a plain request. Encrypted requests
        // only go to workers that take keys (`Needs::RequestKeys`).
        private_key: link
            .proto
            .request_keys()
            .then_some(private_key.unwrap_or([0; 32])),
    };
    Send::Worker(link.handle.clone(), cocoon_tl::to_bytes(&msg))
}

/// Relays answer bytes as client parts of at most [`MAX_ANSWER_PART`] bytes, so that a
/// part too large for the client's frame travels as several: all but the last are pushed to
/// `sends`; the last, carrying `done` and the summary, is returned.
pub(super) fn relay_parts(
    r: &Running,
    mut bytes: Vec<u8>,
    tokens: AdjustedTokens,
    position: Position<'_>,
    sends: &mut Vec<Send>,
) -> Vec<u8> {
    let to = r.reply();
    if bytes.len() > MAX_ANSWER_PART {
        let last = bytes.split_off(bytes.len() - MAX_ANSWER_PART);
        for piece in crate::limits::answer_parts(&bytes) {
            let msg = to.answer(Piece::Part, piece.to_vec(), tokens, Position::More);
            sends.push(Send::Client(r.client.clone(), msg));
        }
        bytes = last;
    }
    to.answer(Piece::Part, bytes, tokens, position)
}

/// Re-serializes a worker's `http.response` with the proxy's timing header added.
/// A body larger than [`MAX_ANSWER_PART`] is taken out of the head and returned beside it,
/// to be relayed as parts.
pub(super) fn add_proxy_header(answer: &[u8], proxy_start: f64) -> (Vec<u8>, Vec<u8>) {
    match cocoon_tl::from_bytes::<cocoon_tl::enums::http::Response>(answer) {
        Ok(cocoon_tl::enums::http::Response::Response(mut response)) => {
            response.headers.push(http::Header {
                name: "X-Cocoon-Proxy-Start".into(),
                value: format!("{proxy_start:.6}"),
            });
            let payload = if response.payload.len() > MAX_ANSWER_PART {
                std::mem::take(&mut response.payload)
            } else {
                Vec::new()
            };
            (cocoon_tl::to_bytes(&response), payload)
        }
        Err(_) => (answer.to_vec(), Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(url: &str, body: &str) -> Vec<u8> {
        cocoon_tl::to_bytes(&http_fn::Request {
            method: "POST".into(),
            url: url.into(),
            http_version: "HTTP/1.1".into(),
            headers: vec![],
            payload: body.as_bytes().to_vec(),
        })
    }

    #[test]
    fn chat_requests_offering_tools_need_a_worker_that_calls_them() {
        let chat = "/v1/chat/completions";
        let tools =
            r#"{"model":"m","messages":[],"tools":[{"type":"function","function":{"name":"f"}}]}"#;
        let needs = query_needs(&query(chat, tools), true);
        assert_eq!(
            (needs.endpoint, needs.tools, needs.request_keys),
            (Some(Endpoint::ChatCompletions), true, true)
        );
        // No tools, an empty or null list, the word in a message, or another endpoint.
        for (url, body) in [
            (chat, r#"{"model":"m","messages":[]}"#),
            (chat, r#"{"model":"m","messages":[],"tools":[]}"#),
            (chat, r#"{"model":"m","messages":[],"tools":null}"#),
            (
                chat,
                r#"{"model":"m","messages":[{"role":"user","content":"\"tools\""}]}"#,
            ),
            ("/v1/completions", tools),
            (chat, "not json \"tools\""),
        ] {
            assert!(!query_needs(&query(url, body), false).tools, "{url} {body}");
        }
    }
}
