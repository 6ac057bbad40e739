//! The worker role: connects to proxies, serves `proxy.runQueryEx` through an inference
//! backend, meters every answer (JSON and SSE) and streams it back
//! (cocoon-protocol.md §1.4, §2.5 worker side, §2.7, §3.2, §3.3).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_net::{CloseReason, ConnectionConfig, ErrorCode, Incoming, RpcConnection, RpcHandle};
use cocoon_tl::enums::proxy::SignedPayment;
use cocoon_tl::functions::worker as worker_fn;
use cocoon_tl::types::{proxy, worker};
use cocoon_tl::{enums, TlConstructor};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::chain::{ChainContext, ChainError, RootWatch, VoucherWallet};
use crate::pricing::AdjustedTokens;
use crate::protocol::answer::WorkerReply;
use crate::protocol::http::base_model_name;
use crate::protocol::version::{self, flags};
use crate::protocol::{Extensions, Refusal};
use crate::transport::Dialer;
use crate::util::{hex_short, lock, unix_now};
use crate::worker::backend::InferenceBackend;
use cocoon_ton::voucher::VoucherKind;
use tycho_types::models::StdAddr;

pub mod audio;
pub mod backend;
pub mod change_model;
#[cfg(feature = "engine")]
pub mod engine_backend;
mod execute;
pub mod metering;
pub mod validation;

use change_model::ServedModel;
pub use change_model::{ChangeModelError, ModelChangeSettings};
use execute::{run_request, Link};

/// Lowest and highest protocol versions this worker speaks.
pub const MIN_PROTO: i32 = 1;
/// See [`MIN_PROTO`]. From 3 a COCOON proxy may send encrypted requests, which this worker
/// opens with the key the proxy hands it (non-streamed answers; `cocoon_e2e`). 1..=4 joins
/// b75d444 proxies (at 2) and 9060ce5 ones (at 4). Cancellation is an extension, not a version.
pub const MAX_PROTO: i32 = 4;

/// Settings of a worker.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Payout recipient (`worker_owner_address`).
    pub owner_address: String,
    /// Full model id `NAME@COMMIT:HASH` at start (the part before `@` is routed on); a
    /// proxy may change it ([`ModelChangeSettings`], [`Worker::model`]).
    pub model: String,
    /// Price coefficient, 1000 = 1.0×.
    pub coefficient: u32,
    /// Requests this worker runs at once, over all proxies.
    pub max_active_requests: u32,
    /// How many proxies the worker connects to (`proxy_cnt`).
    pub proxy_connections: u32,
    /// Test network mode; must match the proxy's.
    pub is_test: bool,
    /// How often the backend's health (`GET /v1/models`) is checked.
    pub health_interval: Duration,
    /// Reconnect backoff, from `min` doubling to `max`.
    pub reconnect_min: Duration,
    /// See [`WorkerSettings::reconnect_min`].
    pub reconnect_max: Duration,
    /// Transport tunables for proxy connections.
    pub connection: ConnectionConfig,
    /// The root parameters as they change (§5.7): each proxy connection derives and
    /// checks the proxy's addresses and vouchers, and prices the cost fields of its
    /// answers, under the parameters current when it is made.
    pub chain: RootWatch,
    /// Where the best payout voucher from each proxy is kept, as
    /// `<proxy contract address>.boc` (what `cocoon worker payout` submits); None keeps
    /// them in memory only.
    pub voucher_dir: Option<std::path::PathBuf>,
    /// How a proxy's `worker.changeModel` is served.
    pub change_model: ModelChangeSettings,
}

/// Counters of a worker, for stats.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Requests received.
    pub requests_received: AtomicU64,
    /// Requests answered completely.
    pub requests_success: AtomicU64,
    /// Requests that ended in an error.
    pub requests_failed: AtomicU64,
    /// Adjusted tokens served, all classes.
    pub adjusted_tokens: AtomicU64,
    /// Answers whose model server reported more usage than the request could have
    /// produced (billed within the bound, [`crate::bounds`]).
    pub usage_clipped: AtomicU64,
}

/// What the worker remembers about one proxy (by proxy contract address).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyBalance {
    /// Tokens the proxy has anchored on chain for this worker.
    pub tokens_committed_to_blockchain: i64,
    /// Tokens the proxy has committed to its database.
    pub tokens_committed_to_db: i64,
    /// Everything the proxy has reported.
    pub max_tokens: i64,
    /// Tokens covered by the best valid voucher received.
    pub voucher_tokens: u64,
    /// The best valid voucher (BOC bytes), if any.
    pub best_voucher: Option<Vec<u8>>,
    /// Vouchers refused (bad signature, wrong contract).
    pub vouchers_refused: u64,
}

struct Shared {
    settings: WorkerSettings,
    owner: StdAddr,
    vouchers: Mutex<HashMap<String, VoucherWallet>>,
    /// The model served now; proxy links reconnect when it changes.
    model: watch::Sender<Arc<ServedModel>>,
    /// Held while a model change runs (one at a time).
    changing: tokio::sync::Mutex<()>,
    backend: Arc<dyn InferenceBackend>,
    active: AtomicU32,
    healthy: watch::Sender<bool>,
    draining: CancellationToken,
    stats: WorkerStats,
    balances: Mutex<HashMap<String, ProxyBalance>>,
    links: Mutex<Vec<RpcHandle>>,
    /// What the worker signs apps' attestation nonces with (`cocoonrs.getAttestation`).
    attester: std::sync::OnceLock<crate::protocol::evidence::Attester>,
}

/// A worker: shared state for all of its proxy links.
#[derive(Clone)]
pub struct Worker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("model", &self.model())
            .field("active", &self.active_requests())
            .finish()
    }
}

/// Why a proxy link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A query of the handshake failed.
    #[error("handshake with proxy failed: {0}")]
    Rpc(#[from] cocoon_net::RpcError),
    /// The proxy's answers break the rules of §2.5.
    #[error("proxy refused or broke the handshake: {0}")]
    Handshake(String),
    /// Dialing failed.
    #[error("cannot reach proxy: {0}")]
    Dial(String),
}

impl Worker {
    /// A worker serving `settings.model` through `backend`. It starts as unhealthy until
    /// the first health check passes (see [`Worker::spawn_health_monitor`]). Fails if
    /// the owner address is not a TON address.
    pub fn new(
        settings: WorkerSettings,
        backend: Arc<dyn InferenceBackend>,
    ) -> Result<Self, ChainError> {
        let model = watch::Sender::new(Arc::new(ServedModel::new(&settings.model)));
        let owner = settings
            .chain
            .context()
            .parse_address(&settings.owner_address)?;
        let (healthy, _) = watch::channel(false);
        Ok(Worker {
            shared: Arc::new(Shared {
                settings,
                owner,
                vouchers: Mutex::new(HashMap::new()),
                model,
                changing: tokio::sync::Mutex::new(()),
                backend,
                active: AtomicU32::new(0),
                healthy,
                draining: CancellationToken::new(),
                stats: WorkerStats::default(),
                balances: Mutex::new(HashMap::new()),
                links: Mutex::new(Vec::new()),
                attester: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Lets the worker answer apps' attestation requests (through its proxies) with the
    /// certificate and key `attester` holds.
    pub fn set_attester(&self, attester: crate::protocol::evidence::Attester) {
        let _ = self.shared.attester.set(attester);
    }

    /// The full model id served now (`NAME@COMMIT:HASH`).
    pub fn model(&self) -> String {
        self.shared.model.borrow().full.clone()
    }

    /// The base name of the model served now (what requests must name).
    fn base_model(&self) -> String {
        self.shared.model.borrow().base.clone()
    }

    /// Requests running now.
    pub fn active_requests(&self) -> u32 {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// The worker's counters.
    pub fn stats(&self) -> &WorkerStats {
        &self.shared.stats
    }

    /// Whether the backend passed its last health check.
    pub fn is_healthy(&self) -> bool {
        *self.shared.healthy.borrow()
    }

    /// Sets the backend health by hand (tests, or a backend without health checks).
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.healthy.send_replace(healthy);
    }

    /// Restores what the worker knew about a proxy (e.g. from its state file at start).
    pub fn restore_proxy_balance(&self, proxy_sc_address: &str, balance: ProxyBalance) {
        self.balances().insert(proxy_sc_address.to_owned(), balance);
    }

    /// Closes every open proxy connection; links started with
    /// [`Worker::spawn_proxy_link`] reconnect (e.g. after a root params change).
    pub fn disconnect_proxies(&self) {
        let links = std::mem::take(&mut *lock(&self.shared.links));
        for link in links {
            link.close();
        }
    }

    /// What the worker remembers about the proxy with this contract address.
    pub fn proxy_balance(&self, proxy_sc_address: &str) -> Option<ProxyBalance> {
        self.balances().get(proxy_sc_address).cloned()
    }

    fn balances(&self) -> std::sync::MutexGuard<'_, HashMap<String, ProxyBalance>> {
        self.shared
            .balances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Checks the backend every `health_interval`; changes are pushed to every proxy
    /// as `worker.enabledDisabled`. Ends when the worker drains.
    pub fn spawn_health_monitor(&self) -> tokio::task::JoinHandle<()> {
        let worker = self.clone();
        tokio::spawn(async move {
            let shared = &worker.shared;
            loop {
                let healthy = match shared.backend.models().await {
                    Ok(models) => {
                        let base = worker.base_model();
                        let serves =
                            models.is_empty() || models.iter().any(|m| base_model_name(m) == base);
                        if !serves {
                            warn!(?models, model = %base, "backend does not serve the configured model");
                        }
                        serves
                    }
                    Err(e) => {
                        debug!(error = %e, "backend health check failed");
                        false
                    }
                };
                let changed = shared.healthy.send_if_modified(|h| {
                    let changed = *h != healthy;
                    *h = healthy;
                    changed
                });
                if changed {
                    info!(healthy, backend = %shared.backend.describe(), "backend health changed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(shared.settings.health_interval) => {}
                    _ = shared.draining.cancelled() => return,
                }
            }
        })
    }

    /// Stops taking requests (new ones are refused with 602 and proxies are told the
    /// worker is disabled), then waits until every running request has finished.
    pub async fn drain(&self) {
        self.shared.draining.cancel();
        self.shared.healthy.send_replace(false);
        while self.active_requests() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Keeps a link to the proxy at `endpoint` up: dials, handshakes, serves, and
    /// reconnects with exponential backoff until the worker drains.
    pub fn spawn_proxy_link(
        &self,
        endpoint: String,
        dialer: Arc<dyn Dialer>,
    ) -> tokio::task::JoinHandle<()> {
        let worker = self.clone();
        let span = info_span!("proxy_link", proxy = %endpoint);
        tokio::spawn(
            async move {
                let settings = &worker.shared.settings;
                let mut backoff = settings.reconnect_min;
                while !worker.shared.draining.is_cancelled() {
                    let attempt = async {
                        let stream = dialer
                            .dial(&endpoint)
                            .await
                            .map_err(|e| WorkerError::Dial(e.to_string()))?;
                        let conn =
                            RpcConnection::connect(stream, &settings.connection, &endpoint).await?;
                        Ok::<_, WorkerError>(conn)
                    };
                    match attempt.await {
                        Ok(conn) => match worker.serve_proxy(conn).await {
                            Ok(reason) => {
                                info!(%reason, "proxy link ended");
                                backoff = settings.reconnect_min;
                            }
                            Err(e) => warn!(error = %e, "proxy link failed"),
                        },
                        Err(e) => warn!(error = %e, "cannot connect to proxy"),
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = worker.shared.draining.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(settings.reconnect_max);
                }
            }
            .instrument(span),
        )
    }

    /// Runs the worker handshake on an open connection, then serves it until it ends.
    ///
    /// When the worker's model changes ([`change_model`]), the link stops taking
    /// requests (the proxy is told it is disabled; requests that still arrive get a
    /// retryable refusal), lets the running ones finish, then closes, so that the
    /// reconnect announces the new model.
    pub async fn serve_proxy(&self, conn: RpcConnection) -> Result<CloseReason, WorkerError> {
        let handle = conn.handle();
        let mut model = self.shared.model.subscribe();
        let announced = model.borrow_and_update().clone();
        let (link, proxy_sc) = self.handshake(&handle, &announced.full).await?;
        info!(proto = %link.proto, proxy_sc = %proxy_sc, model = %announced.full, "proxy handshake complete");
        let (handle, mut incoming) = conn.split();
        {
            let mut links = lock(&self.shared.links);
            links.retain(|l| !l.is_closed());
            links.push(handle.clone());
        }
        let closed = handle.closed();
        let link_cancel = CancellationToken::new();
        let _cancel_on_exit = link_cancel.clone().drop_guard();

        // Push health changes to this proxy.
        let mut health = self.shared.healthy.subscribe();
        let health_handle = handle.clone();
        let health_cancel = link_cancel.child_token();
        let health_stop = health_cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = health.changed() => {
                        if changed.is_err() { return; }
                        let disabled = i32::from(!*health.borrow_and_update());
                        let msg = worker::EnabledDisabled { disabled };
                        if health_handle.send_packet(&msg).await.is_err() { return; }
                    }
                    _ = health_stop.cancelled() => return,
                }
            }
        });

        // Refresh the voucher periodically.
        let status_handle = handle.clone();
        let status_cancel = link_cancel.clone();
        let worker = self.clone();
        let status_proxy = proxy_sc.clone();
        tokio::spawn(async move {
            loop {
                let wait = Duration::from_millis(10_000 + rand::random::<u64>() % 10_000);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = status_cancel.cancelled() => return,
                }
                match status_handle
                    .query_with_timeout(&worker_fn::UpdatePaymentStatus {}, Duration::from_secs(60))
                    .await
                {
                    Ok(enums::worker::PaymentStatus::PaymentStatus(status)) => worker
                        .record_payment(
                            &status_proxy,
                            &status.signed_payment,
                            status.db_tokens,
                            status.max_tokens,
                        ),
                    Err(e) => debug!(error = %e, "payment status refresh failed"),
                }
            }
        });

        // Requests run under child tokens of `link_cancel`: when the link ends, the guard
        // above cancels them all (their answers could not be delivered anyway). The map
        // lets the proxy cancel one request (the cancellation extension).
        let running: Arc<Running> = Arc::default();
        // Set once the worker serves another model than this link announced.
        let mut retiring = false;
        // False if the model channel closed (it lives as long as the worker).
        let mut following = true;
        loop {
            let item = tokio::select! {
                item = incoming.recv() => match item {
                    Some(item) => item,
                    None => break,
                },
                changed = model.changed(), if following && !retiring => {
                    if changed.is_err() {
                        following = false;
                        continue;
                    }
                    if model.borrow_and_update().full == announced.full {
                        continue;
                    }
                    retiring = true;
                    health_cancel.cancel();
                    info!(
                        running = running.len(),
                        "the model changed: no new requests on this link; it reconnects once its running requests finish"
                    );
                    let disabled = worker::EnabledDisabled { disabled: 1 };
                    if let Err(e) = handle.send_packet(&disabled).await {
                        debug!(error = %e, "cannot tell the proxy that this link is disabled");
                    }
                    if running.is_empty() {
                        handle.close();
                    }
                    continue;
                }
                () = running.emptied.notified(), if retiring => {
                    if running.is_empty() {
                        handle.close();
                    }
                    continue;
                }
            };
            match item {
                Incoming::Packet(data) => match cocoon_tl::peek_id(&data) {
                    Some(cocoon_tl::functions::proxy::RunQueryEx::ID) => {
                        match cocoon_tl::from_bytes::<cocoon_tl::functions::proxy::RunQueryEx>(
                            &data,
                        ) {
                            Ok(query) => {
                                let token = link_cancel.child_token();
                                running.insert(query.request_id, token.clone());
                                self.start_request(
                                    handle.clone(),
                                    query,
                                    link,
                                    token,
                                    running.clone(),
                                    retiring,
                                );
                            }
                            Err(e) => warn!(error = %e, "malformed proxy.runQueryEx ignored"),
                        }
                    }
                    Some(proxy::WorkerRequestPayment::ID) => {
                        if let Ok(p) = cocoon_tl::from_bytes::<proxy::WorkerRequestPayment>(&data) {
                            self.record_payment(
                                &proxy_sc,
                                &p.signed_payment,
                                p.db_tokens,
                                p.max_tokens,
                            );
                        }
                    }
                    Some(cocoon_tl::types::cocoonrs::CancelQuery::ID)
                        if link.extensions.cancellation() =>
                    {
                        if let Ok(c) =
                            cocoon_tl::from_bytes::<cocoon_tl::types::cocoonrs::CancelQuery>(&data)
                        {
                            if running.cancel(&c.request_id) {
                                info!(request = %hex_short(&c.request_id), "request cancelled by the proxy");
                            }
                        }
                    }
                    other => debug!(id = ?other, "unhandled packet from proxy"),
                },
                Incoming::Query(query)
                    if query.function_id() == Some(worker_fn::ChangeModel::ID) =>
                {
                    self.spawn_change_model(query);
                }
                Incoming::Query(query)
                    if link.extensions.attestation()
                        && query.function_id()
                            == Some(cocoon_tl::functions::cocoonrs::GetAttestation::ID) =>
                {
                    self.answer_attestation(query).await;
                }
                Incoming::Query(query) => {
                    let name = query.function_id().and_then(cocoon_tl::constructor_name);
                    let message = format!("worker does not serve {}", name.unwrap_or("this query"));
                    let _ = query
                        .error(ErrorCode::ProtocolViolation.code(), &message)
                        .await;
                }
            }
        }
        Ok(closed.await)
    }

    /// `cocoonrs.getAttestation` from a proxy: this worker's evidence for the nonce.
    async fn answer_attestation(&self, query: cocoon_net::IncomingQuery) {
        use crate::protocol::evidence::MAX_NONCE;
        let asked =
            cocoon_tl::from_bytes::<cocoon_tl::functions::cocoonrs::GetAttestation>(query.data());
        let (Ok(ask), Some(attester)) = (asked, self.shared.attester.get()) else {
            let _ = query
                .error(
                    ErrorCode::ProtocolViolation.code(),
                    "this worker has no attestation to give",
                )
                .await;
            return;
        };
        if !(1..=MAX_NONCE).contains(&ask.nonce.len()) {
            let message = format!("getAttestation needs a nonce of 1 to {MAX_NONCE} bytes");
            let _ = query
                .error(ErrorCode::ProtocolViolation.code(), &message)
                .await;
            return;
        }
        let model = self.shared.model.borrow().base.clone();
        let answer = cocoon_tl::types::cocoonrs::Attestation {
            evidence: vec![attester.evidence("worker", &model, &ask.nonce)],
        };
        let _ = query.answer(&answer).await;
    }

    fn record_payment(
        &self,
        proxy_sc: &str,
        payment: &SignedPayment,
        db_tokens: i64,
        max_tokens: i64,
    ) {
        let offered = match payment {
            SignedPayment::SignedPayment(p) => {
                let mut wallets = lock(&self.shared.vouchers);
                wallets
                    .get_mut(proxy_sc)
                    .map(|w| (w.offer(&p.data), w.tokens(), p.data.clone()))
            }
            SignedPayment::SignedPaymentEmpty(_) => None,
        };
        let mut balances = self.balances();
        let entry = balances.entry(proxy_sc.to_owned()).or_default();
        entry.tokens_committed_to_db = entry.tokens_committed_to_db.max(db_tokens);
        entry.max_tokens = entry.max_tokens.max(max_tokens);
        match offered {
            Some((Ok(true), tokens, data)) => {
                if let Some(dir) = &self.shared.settings.voucher_dir {
                    if let Err(e) = save_voucher(dir, proxy_sc, &data) {
                        warn!(error = %e, dir = %dir.display(), "cannot save the payout voucher");
                    }
                }
                entry.voucher_tokens = tokens;
                entry.best_voucher = Some(data);
                // Fake-TON confirms at once: a voucher covers tokens committed on chain.
                entry.tokens_committed_to_blockchain = entry
                    .tokens_committed_to_blockchain
                    .max(i64::try_from(tokens).unwrap_or(i64::MAX));
            }
            Some((Ok(false), _, _)) | None => {}
            Some((Err(e), _, _)) => {
                entry.vouchers_refused += 1;
                warn!(error = %e, proxy = %proxy_sc, "voucher from proxy refused");
            }
        }
    }

    /// The file where the best voucher of the proxy contract `proxy_sc` is kept.
    pub fn voucher_path(dir: &std::path::Path, proxy_sc: &str) -> std::path::PathBuf {
        dir.join(format!("{proxy_sc}.boc"))
    }

    /// The handshake; returns the protocol, the proxy contract (text) and the prices of
    /// the root parameters the connection runs under.
    async fn handshake(
        &self,
        handle: &RpcHandle,
        model: &str,
    ) -> Result<(Link, String), WorkerError> {
        let s = &self.shared.settings;
        let hello = worker_fn::ConnectToProxy {
            params: worker::Params {
                flags: flags::PARAMS_ANY | Extensions::OURS.flags(),
                worker_owner_address: s.owner_address.clone(),
                model: model.to_owned(),
                coefficient: i32::try_from(s.coefficient).unwrap_or(i32::MAX),
                is_test: Some(s.is_test),
                proxy_cnt: Some(i32::try_from(s.proxy_connections.max(1)).unwrap_or(1)),
                max_active_requests: Some(
                    i32::try_from(s.max_active_requests.max(1)).unwrap_or(i32::MAX),
                ),
                min_proto_version: Some(MIN_PROTO),
                max_proto_version: Some(MAX_PROTO),
                machine_description_json: None,
            },
        };
        let enums::worker::ConnectedToProxy::ConnectedToProxy(connected) = handle
            .query_with_timeout(&hello, Duration::from_secs(30))
            .await?;
        let params = &connected.params;
        if params.flags & flags::PARAMS_ANY == 0 {
            return Err(WorkerError::Handshake("proxy is too old (no flags)".into()));
        }
        if params.is_test.unwrap_or(false) != s.is_test {
            return Err(WorkerError::Handshake(format!(
                "is_test mismatch: proxy {}, worker {}",
                params.is_test.unwrap_or(false),
                s.is_test
            )));
        }
        let proto = version::accept(MIN_PROTO..=MAX_PROTO, params.proto_version)
            .map_err(|e| WorkerError::Handshake(e.to_string()))?;
        // Recompute both contract addresses under the root parameters current now; a
        // proxy that announces others is lying, or has rotated to newer parameters
        // before this worker noticed (§5.7): read the root once and derive again.
        let mut view = s.chain.current();
        let mut derived = self.derive(&view.context, params)?;
        let (_, _, announced_matches) = &derived;
        if !announced_matches {
            if let Err(e) = s.chain.refresh().await {
                warn!(error = %e, "cannot read the root contract");
            }
            let now = s.chain.current();
            if now.context.params().params_version != view.context.params().params_version {
                info!(
                    from = view.context.params().params_version,
                    to = now.context.params().params_version,
                    "deriving the proxy's contracts again under new root parameters"
                );
                view = now;
                derived = self.derive(&view.context, params)?;
            }
        }
        let chain = &view.context;
        let (proxy_sc_addr, worker_sc, announced_matches) = derived;
        if !announced_matches {
            return Err(WorkerError::Handshake(format!(
                "proxy contract address mismatch: announced {}, derived {} (root params_version {})",
                params.proxy_sc_address,
                chain.format(&proxy_sc_addr),
                chain.params().params_version
            )));
        }
        if chain
            .parse_address(&connected.worker_sc_address)
            .ok()
            .as_ref()
            != Some(&worker_sc)
        {
            return Err(WorkerError::Handshake(format!(
                "worker contract address mismatch: proxy says {}, derived {}",
                connected.worker_sc_address,
                chain.format(&worker_sc)
            )));
        }
        let proxy_sc = chain.format(&proxy_sc_addr);
        lock(&self.shared.vouchers)
            .entry(proxy_sc.clone())
            .or_insert_with(|| {
                VoucherWallet::new(
                    params.proxy_public_key,
                    worker_sc,
                    VoucherKind::WorkerPayout,
                )
            });
        let known = self.proxy_balance(&proxy_sc).unwrap_or_default();
        let compare = worker_fn::CompareBalanceWithProxy {
            tokens_committed_to_blockchain: known.tokens_committed_to_blockchain,
            tokens_committed_to_db: known.tokens_committed_to_db,
            max_tokens: known.max_tokens,
        };
        let enums::worker::CompareBalanceWithProxyResult::CompareBalanceWithProxyResult(result) =
            handle
                .query_with_timeout(&compare, Duration::from_secs(30))
                .await?;
        if result.tokens_committed_to_db < known.tokens_committed_to_db {
            return Err(WorkerError::Handshake(format!(
                "proxy database is behind: it has {} tokens committed, this worker knows {}",
                result.tokens_committed_to_db, known.tokens_committed_to_db
            )));
        }
        self.record_payment(
            &proxy_sc,
            &result.signed_payment,
            result.tokens_committed_to_db,
            result.max_tokens,
        );
        // A cocoon-rs proxy routes by what this worker serves: say it before the link is
        // ready (the packet arrives before the query that completes the handshake).
        if Extensions::offered(params.flags).endpoints() {
            let endpoints = cocoon_tl::types::cocoonrs::WorkerEndpoints {
                endpoints: self
                    .shared
                    .backend
                    .endpoints()
                    .announcement()
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            };
            handle.send_packet(&endpoints).await?;
        }
        let complete = worker_fn::ProxyHandshakeComplete {
            is_disabled: !self.is_healthy() || self.shared.draining.is_cancelled(),
        };
        handle
            .query_with_timeout(&complete, Duration::from_secs(30))
            .await?;
        let link = Link {
            proto,
            extensions: Extensions::offered(params.flags),
            prices: view.prices,
        };
        Ok((link, proxy_sc))
    }

    /// The proxy's contract and this worker's contract at it under `chain`, and whether
    /// the proxy announced that proxy contract.
    fn derive(
        &self,
        chain: &ChainContext,
        params: &proxy::Params,
    ) -> Result<(StdAddr, StdAddr, bool), WorkerError> {
        let (proxy_sc, worker_sc) = chain
            .parse_address(&params.proxy_owner_address)
            .and_then(|owner| chain.proxy_sc(&owner, &params.proxy_public_key))
            .and_then(|sc| {
                let worker_sc =
                    chain.worker_sc(&self.shared.owner, &sc, &params.proxy_public_key)?;
                Ok((sc, worker_sc))
            })
            .map_err(|e| WorkerError::Handshake(e.to_string()))?;
        let announced = chain.parse_address(&params.proxy_sc_address).ok();
        let matches = announced.as_ref() == Some(&proxy_sc);
        Ok((proxy_sc, worker_sc, matches))
    }

    fn start_request(
        &self,
        handle: RpcHandle,
        query: cocoon_tl::functions::proxy::RunQueryEx,
        link: Link,
        cancel: CancellationToken,
        running: Arc<Running>,
        retiring: bool,
    ) {
        let shared = self.shared.clone();
        shared
            .stats
            .requests_received
            .fetch_add(1, Ordering::Relaxed);
        let span = info_span!("request", id = %hex_short(&query.request_id));
        let refused = if shared.draining.is_cancelled() {
            Some((Refusal::Unavailable, "the worker is shutting down"))
        } else if retiring {
            Some((Refusal::Unavailable, "the worker is changing its model"))
        } else if shared.active.fetch_add(1, Ordering::SeqCst)
            >= shared.settings.max_active_requests
        {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            Some((Refusal::WorkerBusy, ""))
        } else {
            None
        };
        if let Some((refusal, detail)) = refused {
            running.remove(&query.request_id);
            shared.stats.requests_failed.fetch_add(1, Ordering::Relaxed);
            let request_id = query.request_id;
            tokio::spawn(
                async move {
                    let reply = WorkerReply {
                        proto: link.proto,
                        request_id,
                        start: unix_now(),
                        debug: query.enable_debug.unwrap_or(false),
                    };
                    let answer = reply.error(
                        refusal.code().code(),
                        &refusal.message(detail),
                        AdjustedTokens::default(),
                    );
                    let _ = handle.send_packet(&answer).await;
                }
                .instrument(span),
            );
            return;
        }
        tokio::spawn(
            async move {
                let ok = run_request(&shared, &handle, &query, link, &cancel).await;
                running.remove(&query.request_id);
                shared.active.fetch_sub(1, Ordering::SeqCst);
                let counter = if ok {
                    &shared.stats.requests_success
                } else {
                    &shared.stats.requests_failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            .instrument(span),
        );
    }
}

/// The requests running on one proxy link, by request id, each with the token that stops
/// it (the cancellation extension, or the link's end).
#[derive(Default)]
struct Running {
    tokens: Mutex<HashMap<[u8; 32], CancellationToken>>,
    /// Woken when the last running request is removed (a retiring link then closes).
    emptied: tokio::sync::Notify,
}

impl Running {
    fn insert(&self, id: [u8; 32], token: CancellationToken) {
        lock(&self.tokens).insert(id, token);
    }

    /// Removes a request that ended.
    fn remove(&self, id: &[u8; 32]) {
        let mut tokens = lock(&self.tokens);
        tokens.remove(id);
        if tokens.is_empty() {
            self.emptied.notify_one();
        }
    }

    /// Stops request `id`; whether it was running.
    fn cancel(&self, id: &[u8; 32]) -> bool {
        match lock(&self.tokens).get(id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    fn len(&self) -> usize {
        lock(&self.tokens).len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes a voucher atomically (temporary file, then rename), so a crash never leaves a
/// torn file where the last good voucher was.
fn save_voucher(dir: &std::path::Path, proxy_sc: &str, data: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = Worker::voucher_path(dir, proxy_sc);
    let tmp = path.with_extension("boc.tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, &path)
}
