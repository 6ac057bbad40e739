//! The proxy role: admits workers and clients, routes each request to a worker, relays
//! the streamed answer, and books the tokens (cocoon-protocol.md §1.3, §2.5, §2.7, §4, §5).
//!
//! Beyond COCOON's proxy: routing also weighs each worker's recent success rate and
//! latency; a request whose worker fails or disappears before the first answer byte is
//! retried on another worker; a failure after that ends the answer with a clean error; a
//! client that goes away cancels the request at the worker (protocol 3 workers); errors
//! reach protocol ≥ 1 clients as `…Ex` messages; a worker claiming more than the proxy
//! knows is refused while the proxy keeps running.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cocoon_net::{
    ConnectionConfig, ErrorCode, Incoming, IncomingQuery, RpcConnection, RpcError, RpcHandle,
};
use cocoon_tl::enums::proxy::SignedPayment;
use cocoon_tl::functions::{client as client_fn, proxy as proxy_fn, worker as worker_fn};
use cocoon_tl::types::{client, cocoonrs, http, proxy, worker};
use cocoon_tl::{enums, TlConstructor};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use tracing::{debug, info, info_span, warn, Instrument};
use tycho_types::models::StdAddr;

use crate::bounds::AdjustedBound;
use crate::chain::{ChainContext, ChainError, ProxyVouchers};
use crate::ledger::{Booking, Ledger};
use crate::limits::MAX_ANSWER_PART;
use crate::pricing::{reservation, AdjustedTokens, Multipliers, Prices, DEFAULT_MAX_TOKENS};
use crate::protocol::answer::{ClientReply, FromWorker, Piece, Position, ProxyTrace};
use crate::protocol::version::{self, flags};
use crate::protocol::{Refusal, Version};
use crate::request::base_model_name;
use crate::transport::{Listener, PeerInfo};
use crate::util::{hex_short, lock, unix_now};

/// How long a long authorization waits for the client's register message (§2.5).
const LONG_AUTH_TIMEOUT: Duration = Duration::from_secs(300);

/// Protocol versions this proxy speaks: 0–2 as COCOON, 3 adds cocoon-rs extensions.
pub const MIN_PROTO: i32 = 0;
/// See [`MIN_PROTO`].
pub const MAX_PROTO: i32 = 3;

/// Settings of a proxy.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Owner of the proxy (receives its earnings).
    pub owner_address: String,
    /// Root parameters and contract derivation (fake-TON until the chain backends land).
    pub chain: ChainContext,
    /// The machine key: signs ledger rows and (with the TON layer) vouchers.
    pub signing_key: SigningKey,
    /// Test network mode; must match clients' and workers'.
    pub is_test: bool,
    /// Root prices.
    pub prices: Prices,
    /// Version of the root config this proxy runs on.
    pub config_version: i32,
    /// Fake-TON mode (no chain, a stand-in for development and tests): clients are
    /// pseudo-funded and authorized at once, as COCOON's `--disable-ton`.
    pub fake_ton: bool,
    /// On-chain settlement (None in fake-TON mode): client contracts fund requests,
    /// vouchers cover only usage anchored on chain.
    pub settlement: Option<Arc<crate::settle::ProxyChain>>,
    /// Adjusted tokens each fake-TON client may use.
    pub pseudo_client_tokens: u64,
    /// Workers tried per request (1 = no retry).
    pub max_attempts: u32,
    /// Transport tunables.
    pub connection: ConnectionConfig,
}

/// Counters of a proxy.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Requests received from clients.
    pub requests_received: AtomicU64,
    /// Requests refused before reaching a worker.
    pub requests_rejected: AtomicU64,
    /// Requests answered completely.
    pub requests_success: AtomicU64,
    /// Requests that ended in an error after reaching a worker.
    pub requests_failed: AtomicU64,
    /// Requests retried on another worker.
    pub requests_retried: AtomicU64,
    /// Adjusted tokens booked.
    pub adjusted_tokens: AtomicU64,
    /// Adjusted tokens booked per class: prompt, cached, completion, reasoning.
    pub tokens_by_class: [AtomicU64; 4],
    /// Time from forwarding a request to its end.
    pub request_latency: crate::metrics::Histogram,
    /// Client connections open now.
    pub client_connections: AtomicU64,
    /// Worker usage reports beyond what their request could have produced, clipped before
    /// booking ([`crate::bounds`]).
    pub usage_reports_clipped: AtomicU64,
    /// Adjusted tokens workers claimed beyond the bound (not booked).
    pub usage_tokens_refused: AtomicU64,
}

/// Decayed success rate and latency of one worker connection.
#[derive(Debug, Clone, Copy)]
struct Reputation {
    success: f64,
    avg_secs: f64,
    samples: u32,
}

impl Reputation {
    const ALPHA: f64 = 0.2;

    fn new() -> Self {
        Reputation {
            success: 1.0,
            avg_secs: 0.0,
            samples: 0,
        }
    }

    fn record(&mut self, ok: bool, secs: f64) {
        let a = if self.samples == 0 { 1.0 } else { Self::ALPHA };
        self.success += a * (f64::from(u8::from(ok)) - self.success);
        if ok {
            self.avg_secs += a * (secs - self.avg_secs);
        }
        self.samples = self.samples.saturating_add(1);
    }

    /// A usage report beyond what the request could have produced: weighs like several
    /// failures, so the worker gets little traffic until it behaves for a while.
    fn overclaimed(&mut self) {
        self.success *= 0.25;
        self.samples = self.samples.saturating_add(1);
    }

    /// Lower is better: expected time of one more request, inflated by failures.
    fn score(&self, running: u32) -> f64 {
        let expected = if self.samples == 0 {
            0.01
        } else {
            self.avg_secs.max(0.001)
        };
        f64::from(running + 1) * expected / self.success.max(0.05)
    }
}

/// The two kinds of parties a proxy admits.
#[derive(Debug, Clone, Copy)]
enum Party {
    Client,
    Worker,
}

impl Party {
    fn name(self) -> &'static str {
        match self {
            Party::Client => "client",
            Party::Worker => "worker",
        }
    }
}

/// An authorized client connection.
struct ClientSession {
    /// The client's wallet address, canonical text (its ledger key).
    owner: String,
    proto: Version,
    /// Its client contract at this proxy.
    sc: StdAddr,
    /// Nonce of the long authorization (on chain).
    nonce: u64,
    /// The secret hash of its contract, when short authorization is possible.
    secret_hash: Option<[u8; 32]>,
}

struct WorkerLink {
    owner: String,
    /// Its worker contract at this proxy.
    sc: StdAddr,
    model: String,
    coefficient: u32,
    max_active: u32,
    running: u32,
    disabled: bool,
    ready: bool,
    proto: Version,
    handle: RpcHandle,
    reputation: Reputation,
}

struct Running {
    client_owner: String,
    client_sc: StdAddr,
    client: RpcHandle,
    client_proto: Version,
    client_request_id: [u8; 32],
    query: Arc<Vec<u8>>,
    model: String,
    max_coefficient: u32,
    reserved: u64,
    timeout: f64,
    debug: bool,
    /// The coefficient the current worker prices at (sent to it in `proxy.runQueryEx`).
    coefficient: u32,
    /// Answer bytes relayed from the current worker.
    relayed: u64,
    worker: u64,
    worker_owner: String,
    worker_sc: StdAddr,
    tried: Vec<u64>,
    head_sent: bool,
    started: Instant,
    proxy_start: f64,
    client_gone: bool,
}

impl Running {
    /// How this request's answer is written to its client.
    fn reply(&self) -> ClientReply {
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
    fn after_head(&self) -> Piece {
        if self.head_sent {
            Piece::Part
        } else {
            Piece::Head
        }
    }
}

#[derive(Default)]
struct State {
    workers: BTreeMap<u64, WorkerLink>,
    requests: HashMap<[u8; 32], Running>,
    reserved: HashMap<String, u64>,
}

/// What the proxy derives from the root parameters it runs on. A root parameter change
/// (§5.7) replaces it: new prices, a new proxy contract, new client and worker contracts.
struct Epoch {
    chain: ChainContext,
    prices: Prices,
    /// The proxy contract and its text form.
    sc: StdAddr,
    sc_text: String,
    settlement: Option<Arc<crate::settle::ProxyChain>>,
}

impl Epoch {
    /// A party's tokens on its contract of this epoch, from its cumulative ledger total.
    fn tokens(&self, owner: &str, worker: bool, total: u64) -> u64 {
        match &self.settlement {
            Some(chain) => chain.epoch_tokens(owner, worker, total),
            None => total,
        }
    }
}

struct Shared {
    settings: ProxySettings,
    ledger: Arc<Ledger>,
    /// Books finished requests with group commit.
    writer: crate::ledger::LedgerWriter,
    epoch: std::sync::RwLock<Arc<Epoch>>,
    /// Set while the proxy rotates its contracts: new requests and connections wait.
    rotating: std::sync::atomic::AtomicBool,
    /// Bumped after each rotation: every open connection closes, so that clients and
    /// workers reconnect to the new contracts.
    rotations: tokio::sync::watch::Sender<u64>,
    vouchers: ProxyVouchers,
    /// The last voucher signed per contract: `(tokens, BOC)`.
    voucher_cache: Mutex<HashMap<StdAddr, (u64, Vec<u8>)>>,
    state: Mutex<State>,
    next_id: AtomicU64,
    stats: ProxyStats,
}

/// A proxy. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("sc_address", &self.sc_address())
            .finish()
    }
}

/// What to send once the state lock is released.
enum Send {
    Client(RpcHandle, Vec<u8>),
    Worker(RpcHandle, Vec<u8>),
}

impl Send {
    /// Sends the message; a failure is logged and returned (a message too large for a
    /// frame fails alone: the connection lives on).
    async fn run(self) -> Result<(), RpcError> {
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

/// The tokens to book for a worker's final report on request `r`: the report within what
/// the request could have produced ([`crate::bounds`]). A report beyond the bound is
/// noted in `overclaim` as `(reported, booked)`.
fn bounded(
    r: &Running,
    info: Option<&proxy::QueryFinalInfo>,
    multipliers: Multipliers,
    overclaim: &mut Option<(AdjustedTokens, AdjustedTokens)>,
) -> AdjustedTokens {
    let Some(info) = info else {
        return AdjustedTokens::default();
    };
    let reported = AdjustedTokens::from_tl(&info.tokens_used);
    let bound = AdjustedBound::new(
        r.query.len() as u64,
        r.relayed,
        r.coefficient,
        multipliers,
        r.reserved,
    );
    let (tokens, clipped) = bound.clip(reported);
    if clipped {
        *overclaim = Some((reported, tokens));
    }
    tokens
}

/// A request that ended, to be booked.
struct Finished {
    booking: Option<Booking>,
    client: RpcHandle,
    client_proto: Version,
    client_request_id: [u8; 32],
    worker: Option<RpcHandle>,
    proxy_request_id: [u8; 32],
    tokens: u64,
    client_sc: StdAddr,
    worker_sc: StdAddr,
}

impl Proxy {
    /// A proxy with its ledger; fails if the owner address is not a TON address.
    pub fn new(settings: ProxySettings, ledger: Arc<Ledger>) -> Result<Self, ChainError> {
        let owner = settings.chain.parse_address(&settings.owner_address)?;
        let key = settings.signing_key.verifying_key().to_bytes();
        let sc = settings.chain.proxy_sc(&owner, &key)?;
        let epoch = Epoch {
            sc_text: settings.chain.format(&sc),
            sc,
            chain: settings.chain.clone(),
            prices: settings.prices,
            settlement: settings.settlement.clone(),
        };
        let vouchers = ProxyVouchers::new(settings.signing_key.clone(), owner);
        let proxy = Proxy {
            shared: Arc::new(Shared {
                settings,
                writer: crate::ledger::LedgerWriter::spawn(ledger.clone()),
                ledger,
                epoch: std::sync::RwLock::new(Arc::new(epoch)),
                rotating: std::sync::atomic::AtomicBool::new(false),
                rotations: tokio::sync::watch::Sender::new(0),
                vouchers,
                voucher_cache: Mutex::new(HashMap::new()),
                state: Mutex::new(State::default()),
                next_id: AtomicU64::new(1),
                stats: ProxyStats::default(),
            }),
        };
        if let Some(chain) = &proxy.shared.settings.settlement {
            proxy.probe_running(chain);
        }
        Ok(proxy)
    }

    /// Lets `chain` see whether a client has requests in flight.
    fn probe_running(&self, chain: &crate::settle::ProxyChain) {
        let shared = Arc::downgrade(&self.shared);
        chain.set_running_probe(Box::new(move |owner| {
            shared
                .upgrade()
                .is_some_and(|s| lock(&s.state).reserved.get(owner).is_some_and(|r| *r > 0))
        }));
    }

    fn epoch(&self) -> Arc<Epoch> {
        self.shared
            .epoch
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The on-chain settlement of the current root parameters, when the proxy runs on
    /// a chain.
    pub fn settlement(&self) -> Option<Arc<crate::settle::ProxyChain>> {
        self.epoch().settlement.clone()
    }

    /// The current proxy contract address (canonical text form).
    pub fn sc_address(&self) -> String {
        self.epoch().sc_text.clone()
    }

    /// The root's `params_version` the proxy runs on.
    pub fn params_version(&self) -> u32 {
        self.epoch().chain.params().params_version
    }

    /// Whether the proxy is rotating its contracts right now.
    pub fn is_rotating(&self) -> bool {
        self.shared.rotating.load(Ordering::SeqCst)
    }

    /// Switches to newer root parameters (cocoon-protocol.md §5.7): refuses new requests
    /// and connections, lets running requests finish (up to the policy's drain timeout,
    /// then closes the connections), begins the new epoch in the ledger and deploys the
    /// new proxy contract, closes every connection so that clients and workers reconnect
    /// to their new contracts, and closes the old contracts in the background. Does
    /// nothing in fake-TON mode or for parameters that are not newer. On failure the
    /// proxy stays in rotation (refusing requests) and the call may be repeated.
    pub async fn rotate(&self, view: &crate::chain::ChainView) -> Result<(), String> {
        let old = self.epoch();
        let Some(old_chain) = old.settlement.clone() else {
            return Ok(());
        };
        let from = old.chain.params().params_version;
        let to = view.context.params().params_version;
        if to <= from {
            return Ok(());
        }
        info!(
            from,
            to, "root parameters changed: rotating the proxy's contracts"
        );
        self.shared.rotating.store(true, Ordering::SeqCst);
        let policy = view
            .settlement
            .as_ref()
            .map(|s| s.policy.clone())
            .unwrap_or_default();
        let drained = async {
            while self.running_requests() > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        if tokio::time::timeout(policy.drain_timeout, drained)
            .await
            .is_err()
        {
            warn!(
                running = self.running_requests(),
                "requests still running after the drain timeout: closing their connections"
            );
            self.shared.rotations.send_modify(|n| *n += 1);
            let ended = async {
                while self.running_requests() > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(10), ended).await;
        }
        let new_chain = old_chain
            .next_epoch(view.context.clone(), &self.shared.settings.signing_key)
            .await
            .map_err(|e| format!("starting the contracts of params_version {to}: {e}"))?;
        self.probe_running(&new_chain);
        let sc = new_chain.contract().clone();
        let epoch = Epoch {
            sc_text: view.context.format(&sc),
            sc,
            chain: view.context.clone(),
            prices: view.prices,
            settlement: Some(new_chain),
        };
        info!(from, to, contract = %epoch.sc_text, "now on the new proxy contract");
        *self.shared.epoch.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(epoch);
        lock(&self.shared.voucher_cache).clear();
        self.shared.rotating.store(false, Ordering::SeqCst);
        self.shared.rotations.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Rotates whenever `root` adopts newer parameters (retrying a failed rotation),
    /// while the proxy lives.
    pub fn follow_root(&self, root: crate::chain::RootWatch) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.shared);
        let mut changes = root.subscribe();
        tokio::spawn(async move {
            loop {
                let Some(shared) = weak.upgrade() else { return };
                let proxy = Proxy { shared };
                let view = root.current();
                if view.context.params().params_version > proxy.params_version() {
                    if let Err(e) = proxy.rotate(&view).await {
                        warn!(error = %e, "rotation failed; retrying");
                        drop(proxy);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
                drop(proxy);
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
    }

    /// A receiver that wakes up whenever the proxy moves to new root parameters (and
    /// when it closes connections after a drain timeout).
    pub fn rotations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.rotations.subscribe()
    }

    /// Resolves at the next rotation (see [`Proxy::rotations`]).
    fn rotated(&self) -> impl std::future::Future<Output = ()> + std::marker::Send + 'static {
        let mut rx = self.shared.rotations.subscribe();
        async move {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// What both hellos share: the refusal (if any), protocol negotiation from
    /// `(flags, min, max)`, and the party's address and contract at this proxy.
    fn admit(
        &self,
        refuse: Option<String>,
        (flags, min, max): (u32, Option<i32>, Option<i32>),
        owner: &str,
        party: Party,
    ) -> Result<(Version, String, StdAddr), (ErrorCode, String)> {
        if let Some(reason) = refuse {
            return Err((ErrorCode::Error, reason));
        }
        if self.is_rotating() {
            return Err((Refusal::Rotating.code(), Refusal::Rotating.message("")));
        }
        let proto = version::choose(
            MIN_PROTO..=MAX_PROTO,
            flags & flags::PARAMS_VERSIONS != 0,
            min,
            max,
        )
        .map_err(|e| (ErrorCode::ProtocolViolation, e.to_string()))?;
        let epoch = self.epoch();
        let chain = &epoch.chain;
        let refused = |e: ChainError| (ErrorCode::Error, format!("{} owner: {e}", party.name()));
        let address = chain.parse_address(owner).map_err(refused)?;
        let pk = self.public_key();
        let sc = match party {
            Party::Client => chain.client_sc(&address, &epoch.sc, &pk),
            Party::Worker => chain.worker_sc(&address, &epoch.sc, &pk),
        }
        .map_err(refused)?;
        Ok((proto, chain.format(&address), sc))
    }

    /// The latest voucher for a client (`ClientCharge`) or worker (`WorkerPayout`)
    /// contract covering `tokens`, or the empty payment when nothing is owed.
    fn payment(&self, sc: &StdAddr, tokens: u64, worker: bool) -> SignedPayment {
        if tokens == 0 {
            return proxy::SignedPaymentEmpty {}.into();
        }
        if let Some((t, data)) = lock(&self.shared.voucher_cache).get(sc) {
            if *t == tokens {
                return proxy::SignedPayment { data: data.clone() }.into();
            }
        }
        let v = &self.shared.vouchers;
        let signed = if worker {
            v.worker_payout(sc, tokens)
        } else {
            v.client_charge(sc, tokens)
        };
        match signed {
            Ok(data) => {
                lock(&self.shared.voucher_cache).insert(sc.clone(), (tokens, data.clone()));
                proxy::SignedPayment { data }.into()
            }
            Err(e) => {
                warn!(error = %e, "cannot sign a voucher");
                proxy::SignedPaymentEmpty {}.into()
            }
        }
    }

    /// The voucher for `owner`'s contract `sc`: on chain it covers the tokens anchored
    /// by a save-state (§5.3); in fake-TON, where anchoring is instant, `ledger_tokens`.
    fn voucher_for(
        &self,
        owner: &str,
        sc: &StdAddr,
        ledger_tokens: u64,
        worker: bool,
    ) -> SignedPayment {
        let tokens = match &self.epoch().settlement {
            Some(chain) if worker => chain.committed_worker(owner),
            Some(chain) => chain.committed_client(owner),
            None => ledger_tokens,
        };
        self.payment(sc, tokens, worker)
    }

    /// What a party has on its contract of the current epoch: its ledger total minus
    /// the epoch's start (§5.7). The one place the proxy reports tokens from.
    fn contract_tokens(&self, owner: &str, worker: bool) -> u64 {
        let ledger = &self.shared.ledger;
        let total = if worker {
            ledger.worker_tokens(owner)
        } else {
            ledger.client_tokens(owner)
        };
        self.epoch().tokens(owner, worker, total.unwrap_or(0))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The proxy's counters.
    pub fn stats(&self) -> &ProxyStats {
        &self.shared.stats
    }

    /// The root prices the proxy books with now.
    pub fn prices(&self) -> Prices {
        self.epoch().prices
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.shared.ledger
    }

    /// The proxy's public key (Ed25519).
    pub fn public_key(&self) -> [u8; 32] {
        self.shared.settings.signing_key.verifying_key().to_bytes()
    }

    /// Worker connections ready for requests, per base model.
    pub fn ready_workers(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for w in self.state().workers.values() {
            if w.ready && !w.disabled {
                *out.entry(w.model.clone()).or_default() += 1;
            }
        }
        out
    }

    /// Requests in flight.
    pub fn running_requests(&self) -> usize {
        self.state().requests.len()
    }

    fn params(&self, proto: Version) -> proxy::Params {
        let s = &self.shared.settings;
        let announced = proto.number() > 0;
        proxy::Params {
            flags: flags::PARAMS_BASE | if announced { flags::PARAMS_VERSIONS } else { 0 },
            proxy_public_key: self.public_key(),
            proxy_owner_address: s.owner_address.clone(),
            proxy_sc_address: self.sc_address(),
            is_test: Some(s.is_test),
            proto_version: announced.then_some(proto.number()),
        }
    }

    /// Accepts client connections from `listener` until it fails.
    pub fn serve_clients<L: Listener>(&self, listener: L) -> tokio::task::JoinHandle<()> {
        self.serve(listener, Party::Client)
    }

    /// Accepts worker connections from `listener` until it fails.
    pub fn serve_workers<L: Listener>(&self, listener: L) -> tokio::task::JoinHandle<()> {
        self.serve(listener, Party::Worker)
    }

    /// The accept loop: each peer's handshake (PoW, TLS, opening) runs in its own task.
    fn serve<L: Listener>(&self, listener: L, party: Party) -> tokio::task::JoinHandle<()> {
        let proxy = self.clone();
        tokio::spawn(async move {
            loop {
                let pending = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        warn!(error = %e, party = party.name(), "listener failed");
                        return;
                    }
                };
                let proxy = proxy.clone();
                tokio::spawn(async move {
                    let (stream, peer) = match pending.await {
                        Ok(x) => x,
                        Err(e) => {
                            info!(error = %e, party = party.name(), "peer refused");
                            return;
                        }
                    };
                    let cfg = proxy.shared.settings.connection.clone();
                    match RpcConnection::accept(stream, &cfg, &peer.addr.to_string()).await {
                        Ok(conn) => match party {
                            Party::Client => proxy.handle_client(conn, peer).await,
                            Party::Worker => proxy.handle_worker(conn, peer).await,
                        },
                        Err(e) => debug!(error = %e, party = party.name(), "opening failed"),
                    }
                });
            }
        })
    }

    // ------------------------------------------------------------------ clients

    /// Serves one client connection: handshake, authorization, then requests.
    pub async fn handle_client(&self, conn: RpcConnection, peer: PeerInfo) {
        let span = info_span!("client", peer = %peer.addr);
        async move {
            let (handle, mut incoming) = conn.split();
            let stats = &self.shared.stats;
            stats.client_connections.fetch_add(1, Ordering::Relaxed);
            struct Open<'a>(&'a AtomicU64);
            impl Drop for Open<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::Relaxed);
                }
            }
            let _open = Open(&stats.client_connections);
            let mut session: Option<ClientSession> = None;
            let mut authorized = false;
            let rotated = self.rotated();
            tokio::pin!(rotated);
            loop {
                let item = tokio::select! {
                    item = incoming.recv() => item,
                    () = &mut rotated => {
                        info!("closing the connection: the proxy moved to new root parameters");
                        handle.close();
                        break;
                    }
                };
                let Some(item) = item else { break };
                match item {
                    Incoming::Query(q) => {
                        if !authorized {
                            match self.client_handshake_query(q, &mut session).await {
                                Ok(done) => authorized = done,
                                Err(()) => {
                                    handle.close();
                                    break;
                                }
                            }
                        } else if let Some(session) = &session {
                            self.client_query(q, session).await;
                        }
                    }
                    Incoming::Packet(data) => match (&session, authorized) {
                        (Some(session), true) => self.client_packet(&handle, session, &data).await,
                        _ => debug!("packet before authorization ignored"),
                    },
                }
            }
            // The client went away: cancel its requests at the workers.
            self.cancel_requests(|r| r.client.is_closed()).await;
        }
        .instrument(span)
        .await
    }

    /// Handles a query before authorization. Ok(true) once authorized; Err to close.
    async fn client_handshake_query(
        &self,
        q: IncomingQuery,
        session: &mut Option<ClientSession>,
    ) -> Result<bool, ()> {
        let s = &self.shared.settings;
        match q.function_id() {
            Some(client_fn::ConnectToProxy::ID) => {
                let req: client_fn::ConnectToProxy = match q.decode() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = q
                            .error(ErrorCode::ProtocolViolation.code(), &e.to_string())
                            .await;
                        return Err(());
                    }
                };
                let p = &req.params;
                let refuse = if p.flags & flags::PARAMS_BASE == 0 {
                    Some("client params lack is_test".to_owned())
                } else if p.is_test.unwrap_or(false) != s.is_test {
                    Some(format!("is_test mismatch: proxy {}", s.is_test))
                } else if p.client_owner_address.is_empty() {
                    Some("empty client owner address".to_owned())
                } else if req.min_config_version > s.config_version {
                    Some(format!(
                        "client needs config version {}, proxy has {}",
                        req.min_config_version, s.config_version
                    ))
                } else {
                    None
                };
                let admitted = self.admit(
                    refuse,
                    (p.flags, p.min_proto_version, p.max_proto_version),
                    &p.client_owner_address,
                    Party::Client,
                );
                let (proto, owner, client_sc) = match admitted {
                    Ok(x) => x,
                    Err((code, reason)) => {
                        let _ = q.error(code.code(), &reason).await;
                        return Err(());
                    }
                };
                let epoch = self.epoch();
                let used = self.contract_tokens(&owner, false);
                let nonce: u64 = rand::random();
                let (auth, secret_hash) = match &epoch.settlement {
                    // Fake-TON: like COCOON, offer short auth with an unknown secret hash,
                    // so the client falls back to long auth, which succeeds at once.
                    None => (
                        client::ProxyConnectionAuthShort {
                            secret_hash: [0; 32],
                            nonce: 0,
                        }
                        .into(),
                        None,
                    ),
                    // On chain: short auth if the client contract has a secret hash,
                    // else long auth through a register message with this nonce.
                    Some(chain) => match chain.client_connected(&owner, &client_sc).await {
                        Ok(Some(hash)) => (
                            client::ProxyConnectionAuthShort {
                                secret_hash: hash,
                                // TL `long`: the same 64 bits the register message carries.
                                nonce: nonce as i64,
                            }
                            .into(),
                            Some(hash),
                        ),
                        Ok(None) => (
                            client::ProxyConnectionAuthLong {
                                nonce: nonce as i64,
                            }
                            .into(),
                            None,
                        ),
                        Err(e) => {
                            let _ = q
                                .error(
                                    ErrorCode::NotReady.code(),
                                    &format!("cannot read the client contract: {e}"),
                                )
                                .await;
                            return Err(());
                        }
                    },
                };
                let answer = client::ConnectedToProxy {
                    params: self.params(proto),
                    client_sc_address: epoch.chain.format(&client_sc),
                    auth,
                    signed_payment: self.voucher_for(&owner, &client_sc, used, false),
                };
                let _ = q.answer(&answer).await;
                info!(%owner, %proto, "client connected");
                *session = Some(ClientSession {
                    owner,
                    proto,
                    sc: client_sc,
                    nonce,
                    secret_hash,
                });
                Ok(false)
            }
            Some(
                client_fn::AuthorizeWithProxyLong::ID | client_fn::AuthorizeWithProxyShort::ID,
            ) => {
                let Some(ClientSession {
                    owner,
                    sc,
                    nonce,
                    secret_hash,
                    ..
                }) = session.as_ref()
                else {
                    let _ = q
                        .error(
                            ErrorCode::ProtocolViolation.code(),
                            "authorization before connectToProxy",
                        )
                        .await;
                    return Err(());
                };
                let epoch = self.epoch();
                if let Some(chain) = &epoch.settlement {
                    let refused = if q.function_id() == Some(client_fn::AuthorizeWithProxyShort::ID)
                    {
                        match q.decode::<client_fn::AuthorizeWithProxyShort>() {
                            Ok(req) => {
                                let got: [u8; 32] = Sha256::digest(&req.data).into();
                                (Some(got) != *secret_hash).then(|| "sha256 mismatch".to_owned())
                            }
                            Err(e) => Some(e.to_string()),
                        }
                    } else if chain.wait_registration(sc, *nonce, LONG_AUTH_TIMEOUT).await {
                        None
                    } else {
                        Some(format!(
                            "no owner_client_register with nonce {nonce} reached the proxy contract within {} s",
                            LONG_AUTH_TIMEOUT.as_secs()
                        ))
                    };
                    if let Some(reason) = refused {
                        info!(%owner, %reason, "client authorization refused");
                        let _ = q.error(ErrorCode::Error.code(), &reason).await;
                        return Err(());
                    }
                    // Read the contract again: the registration may have deployed it.
                    if let Err(e) = chain.client_connected(owner, sc).await {
                        let _ = q.error(ErrorCode::NotReady.code(), &e.to_string()).await;
                        return Err(());
                    }
                }
                let used = self.contract_tokens(owner, false);
                let answer = client::AuthorizationWithProxySuccess {
                    signed_payment: self.voucher_for(owner, sc, used, false),
                    tokens_committed_to_db: to_i64(used),
                    max_tokens: to_i64(used),
                };
                let _ = q.answer(&answer).await;
                Ok(true)
            }
            _ => {
                let _ = q
                    .error(
                        ErrorCode::NotReady.code(),
                        "connection is not authorized yet",
                    )
                    .await;
                Ok(false)
            }
        }
    }

    fn available_tokens(&self, owner: &str) -> u64 {
        let used = self.shared.ledger.client_tokens(owner).unwrap_or(u64::MAX);
        let reserved = self.state().reserved.get(owner).copied().unwrap_or(0);
        let limit = match &self.epoch().settlement {
            Some(chain) => chain.client_token_limit(owner),
            None => self.shared.settings.pseudo_client_tokens,
        };
        limit.saturating_sub(used).saturating_sub(reserved)
    }

    async fn client_query(&self, q: IncomingQuery, session: &ClientSession) {
        match q.function_id() {
            Some(client_fn::UpdatePaymentStatus::ID) => {
                let used = self.contract_tokens(&session.owner, false);
                let answer = client::PaymentStatus {
                    signed_payment: self.voucher_for(&session.owner, &session.sc, used, false),
                    db_tokens: to_i64(used),
                    max_tokens: to_i64(used),
                };
                let _ = q.answer(&answer).await;
            }
            Some(client_fn::GetWorkerTypesV2::ID) => {
                let answer = self.worker_types_v2();
                let _ = q.answer(&answer).await;
            }
            Some(client_fn::GetWorkerTypes::ID) => {
                let answer = self.worker_types_v1();
                let _ = q.answer(&answer).await;
            }
            other => {
                let name = other
                    .and_then(cocoon_tl::constructor_name)
                    .unwrap_or("unknown");
                let _ = q
                    .error(
                        ErrorCode::ProtocolViolation.code(),
                        &format!("proxy does not serve {name}"),
                    )
                    .await;
            }
        }
    }

    /// `client.getWorkerTypesV2`: ready connections per model, sorted by coefficient.
    pub fn worker_types_v2(&self) -> client::WorkerTypesV2 {
        let state = self.state();
        let mut models: BTreeMap<&str, Vec<client::WorkerInstanceV2>> = BTreeMap::new();
        for w in state.workers.values().filter(|w| w.ready && !w.disabled) {
            models
                .entry(&w.model)
                .or_default()
                .push(client::WorkerInstanceV2 {
                    flags: 0,
                    coefficient: i32::try_from(w.coefficient).unwrap_or(i32::MAX),
                    active_requests: i32::try_from(w.running).unwrap_or(i32::MAX),
                    max_active_requests: i32::try_from(w.max_active).unwrap_or(i32::MAX),
                });
        }
        client::WorkerTypesV2 {
            types: models
                .into_iter()
                .map(|(name, mut workers)| {
                    workers.sort_by_key(|w| w.coefficient);
                    client::WorkerTypeV2 {
                        name: name.to_owned(),
                        workers,
                    }
                })
                .collect(),
        }
    }

    /// `client.getWorkerTypes`: counts and coefficient min/median/max per model (over the
    /// real coefficients; COCOON also mixes in INT32_MAX, which we do not copy).
    pub fn worker_types_v1(&self) -> client::WorkerTypes {
        let v2 = self.worker_types_v2();
        client::WorkerTypes {
            types: v2
                .types
                .into_iter()
                .map(|t| {
                    let c: Vec<i32> = t.workers.iter().map(|w| w.coefficient).collect();
                    client::WorkerType {
                        name: t.name,
                        active_workers: i32::try_from(c.len()).unwrap_or(i32::MAX),
                        coefficient_min: c.first().copied().unwrap_or(0),
                        coefficient_bucket50: c.get(c.len() / 2).copied().unwrap_or(0),
                        coefficient_max: c.last().copied().unwrap_or(0),
                    }
                })
                .collect(),
        }
    }

    /// Marks the requests matching `which` as abandoned by their client and cancels them
    /// at workers that understand cancellation (protocol 3). Tokens the worker reports
    /// for the part it delivered are still booked.
    async fn cancel_requests(&self, which: impl Fn(&Running) -> bool) {
        let cancels = {
            let mut state = self.state();
            let State {
                requests, workers, ..
            } = &mut *state;
            let mut out = Vec::new();
            for (id, r) in requests.iter_mut() {
                if r.client_gone || !which(r) {
                    continue;
                }
                r.client_gone = true;
                if let Some(w) = workers.get(&r.worker).filter(|w| w.proto.cancellation()) {
                    let msg = cocoonrs::CancelQuery { request_id: *id };
                    out.push(Send::Worker(w.handle.clone(), cocoon_tl::to_bytes(&msg)));
                }
            }
            out
        };
        for c in cancels {
            let _ = c.run().await;
        }
    }

    async fn client_packet(&self, handle: &RpcHandle, session: &ClientSession, data: &[u8]) {
        let (owner, proto) = (session.owner.as_str(), session.proto);
        if cocoon_tl::peek_id(data) == Some(cocoonrs::CancelQuery::ID) && proto.cancellation() {
            if let Ok(c) = cocoon_tl::from_bytes::<cocoonrs::CancelQuery>(data) {
                debug!(request = %hex_short(&c.request_id), "client cancelled a request");
                let owner = owner.to_owned();
                self.cancel_requests(|r| {
                    r.client_request_id == c.request_id && r.client_owner == owner
                })
                .await;
            }
            return;
        }
        let request = match cocoon_tl::peek_id(data) {
            Some(client_fn::RunQueryEx::ID) => cocoon_tl::from_bytes::<client_fn::RunQueryEx>(data),
            Some(client_fn::RunQuery::ID) => cocoon_tl::from_bytes::<client_fn::RunQuery>(data)
                .map(|q| client_fn::RunQueryEx {
                    model_name: q.model_name,
                    query: q.query,
                    max_coefficient: q.max_coefficient,
                    max_tokens: q.max_tokens,
                    timeout: q.timeout,
                    request_id: q.request_id,
                    min_config_version: q.min_config_version,
                    flags: 0,
                    enable_debug: None,
                }),
            other => {
                debug!(id = ?other, "unhandled client packet");
                return;
            }
        };
        match request {
            Ok(request) => self.forward_query(handle.clone(), session, request).await,
            Err(e) => warn!(error = %e, "malformed client request ignored"),
        }
    }

    async fn forward_query(
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
        let proxy_request_id: [u8; 32] = rand::random();
        let model = base_model_name(&q.model_name).to_owned();
        let query = Arc::new(q.query);
        let timeout = if q.timeout > 0.0 && q.timeout.is_finite() {
            q.timeout
        } else {
            120.0
        };
        let chosen = {
            let mut state = self.state();
            match choose_worker(&state, &model, max_coefficient, &[]) {
                Err(e) => Err(e),
                Ok(worker) => {
                    *state.reserved.entry(owner.to_owned()).or_default() += to_reserve;
                    let link = state
                        .workers
                        .get_mut(&worker)
                        .expect("chosen worker exists");
                    link.running += 1;
                    let send = run_query_message(
                        link,
                        &query,
                        timeout,
                        proxy_request_id,
                        q.enable_debug.unwrap_or(false),
                    );
                    let (worker_owner, worker_sc, coefficient) =
                        (link.owner.clone(), link.sc.clone(), link.coefficient);
                    state.requests.insert(
                        proxy_request_id,
                        Running {
                            client_owner: owner.to_owned(),
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
                        },
                    );
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

    // ------------------------------------------------------------------ workers

    /// Serves one worker connection: handshake, then answers and status messages.
    pub async fn handle_worker(&self, conn: RpcConnection, peer: PeerInfo) {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let span = info_span!("worker", conn = id, peer = %peer.addr);
        async move {
            let (handle, mut incoming) = conn.split();
            let rotated = self.rotated();
            tokio::pin!(rotated);
            loop {
                let item = tokio::select! {
                    item = incoming.recv() => item,
                    () = &mut rotated => {
                        info!("closing the connection: the proxy moved to new root parameters");
                        handle.close();
                        break;
                    }
                };
                let Some(item) = item else { break };
                match item {
                    Incoming::Query(q) => {
                        if self.worker_query(id, &handle, q).await.is_err() {
                            handle.close();
                            break;
                        }
                    }
                    Incoming::Packet(data) => self.worker_packet(id, &handle, &data).await,
                }
            }
            self.worker_gone(id).await;
        }
        .instrument(span)
        .await
    }

    /// Handles a worker query; Err means the connection must close.
    async fn worker_query(&self, id: u64, handle: &RpcHandle, q: IncomingQuery) -> Result<(), ()> {
        let s = &self.shared.settings;
        match q.function_id() {
            Some(worker_fn::ConnectToProxy::ID) => {
                let req: worker_fn::ConnectToProxy = q.decode().map_err(|_| ())?;
                let p = &req.params;
                let refuse = if p.flags & flags::PARAMS_BASE == 0 {
                    Some("worker params lack is_test".to_owned())
                } else if p.is_test.unwrap_or(false) != s.is_test {
                    Some(format!("is_test mismatch: proxy {}", s.is_test))
                } else if p.model.is_empty() {
                    Some("empty model name".into())
                } else if !(0..1_000_000_000).contains(&p.coefficient) {
                    Some(format!("coefficient {} out of range", p.coefficient))
                } else if p.max_active_requests.unwrap_or(0) < 1 || p.proxy_cnt.unwrap_or(0) < 1 {
                    Some("max_active_requests and proxy_cnt must be at least 1".into())
                } else {
                    None
                };
                let admitted = self.admit(
                    refuse,
                    (p.flags, p.min_proto_version, p.max_proto_version),
                    &p.worker_owner_address,
                    Party::Worker,
                );
                let (proto, owner, worker_sc) = match admitted {
                    Ok(x) => x,
                    Err((code, reason)) => {
                        let _ = q.error(code.code(), &reason).await;
                        return Err(());
                    }
                };
                let max_active = u32::try_from(p.max_active_requests.unwrap_or(1)).unwrap_or(1);
                let proxies = u32::try_from(p.proxy_cnt.unwrap_or(1)).unwrap_or(1).max(1);
                let epoch = self.epoch();
                let worker_sc_address = epoch.chain.format(&worker_sc);
                let link = WorkerLink {
                    owner,
                    sc: worker_sc,
                    model: base_model_name(&p.model).to_owned(),
                    coefficient: u32::try_from(p.coefficient).unwrap_or(0),
                    max_active: max_active.div_ceil(proxies),
                    running: 0,
                    disabled: true,
                    ready: false,
                    proto,
                    handle: handle.clone(),
                    reputation: Reputation::new(),
                };
                if let Some(chain) = &epoch.settlement {
                    let noted = epoch
                        .chain
                        .parse_address(&link.owner)
                        .map_err(|e| e.to_string())
                        .and_then(|a| {
                            chain
                                .worker_connected(&a, &link.owner)
                                .map_err(|e| e.to_string())
                        });
                    if let Err(e) = noted {
                        warn!(error = %e, "worker contract not derivable");
                    }
                }
                info!(owner = %link.owner, model = %log_text(&link.model), coefficient = link.coefficient, %proto, "worker connected");
                self.state().workers.insert(id, link);
                let answer = worker::ConnectedToProxy {
                    params: self.params(proto),
                    worker_sc_address,
                };
                q.answer(&answer).await.map_err(|_| ())
            }
            Some(worker_fn::CompareBalanceWithProxy::ID) => {
                let req: worker_fn::CompareBalanceWithProxy = q.decode().map_err(|_| ())?;
                let Some((owner, sc)) = self
                    .state()
                    .workers
                    .get(&id)
                    .map(|w| (w.owner.clone(), w.sc.clone()))
                else {
                    let _ = q
                        .error(
                            ErrorCode::ProtocolViolation.code(),
                            "compare before connectToProxy",
                        )
                        .await;
                    return Err(());
                };
                let known = to_i64(self.contract_tokens(&owner, true));
                if req.tokens_committed_to_blockchain > known || req.tokens_committed_to_db > known
                {
                    let reason = format!(
                        "worker reports {} tokens committed, this proxy knows {known}",
                        req.tokens_committed_to_blockchain
                            .max(req.tokens_committed_to_db)
                    );
                    warn!(%owner, %reason, "worker refused");
                    let _ = q.error(ErrorCode::ProtocolViolation.code(), &reason).await;
                    return Err(());
                }
                let answer = worker::CompareBalanceWithProxyResult {
                    signed_payment: self.voucher_for(
                        &owner,
                        &sc,
                        u64::try_from(known).unwrap_or(0),
                        true,
                    ),
                    tokens_committed_to_db: known,
                    max_tokens: known,
                    error_code: i32::from(req.max_tokens > known),
                };
                q.answer(&answer).await.map_err(|_| ())
            }
            Some(worker_fn::ExtendedCompareBalanceWithProxy::ID) => {
                let answer = worker::ExtendedCompareBalanceWithProxyResult { error_code: 0 };
                q.answer(&answer).await.map_err(|_| ())
            }
            Some(worker_fn::ProxyHandshakeComplete::ID) => {
                let req: worker_fn::ProxyHandshakeComplete = q.decode().map_err(|_| ())?;
                {
                    let mut state = self.state();
                    let Some(w) = state.workers.get_mut(&id) else {
                        return Err(());
                    };
                    w.ready = true;
                    w.disabled = req.is_disabled;
                }
                q.answer(&worker::ProxyHandshakeCompleted {})
                    .await
                    .map_err(|_| ())
            }
            Some(worker_fn::UpdatePaymentStatus::ID) => {
                let Some((owner, sc)) = self
                    .state()
                    .workers
                    .get(&id)
                    .map(|w| (w.owner.clone(), w.sc.clone()))
                else {
                    let _ = q
                        .error(
                            ErrorCode::ProtocolViolation.code(),
                            "payment status before connectToProxy",
                        )
                        .await;
                    return Err(());
                };
                let earned = self.contract_tokens(&owner, true);
                let answer = worker::PaymentStatus {
                    signed_payment: self.voucher_for(&owner, &sc, earned, true),
                    db_tokens: to_i64(earned),
                    max_tokens: to_i64(earned),
                };
                q.answer(&answer).await.map_err(|_| ())
            }
            other => {
                let name = other
                    .and_then(cocoon_tl::constructor_name)
                    .unwrap_or("unknown");
                let _ = q
                    .error(
                        ErrorCode::ProtocolViolation.code(),
                        &format!("proxy does not serve {name}"),
                    )
                    .await;
                Ok(())
            }
        }
    }

    async fn worker_packet(&self, id: u64, handle: &RpcHandle, data: &[u8]) {
        match cocoon_tl::peek_id(data) {
            Some(worker::EnabledDisabled::ID) => {
                if let Ok(m) = cocoon_tl::from_bytes::<worker::EnabledDisabled>(data) {
                    if let Some(w) = self.state().workers.get_mut(&id) {
                        w.disabled = m.disabled != 0;
                        info!(disabled = w.disabled, "worker availability changed");
                    }
                }
            }
            Some(worker::NewCoefficient::ID) => {
                if let Ok(m) = cocoon_tl::from_bytes::<worker::NewCoefficient>(data) {
                    match u32::try_from(m.new_coefficient) {
                        Ok(c) => {
                            if let Some(w) = self.state().workers.get_mut(&id) {
                                w.coefficient = c;
                            }
                        }
                        Err(_) => handle.close(),
                    }
                }
            }
            Some(
                proxy::QueryAnswerEx::ID
                | proxy::QueryAnswerPartEx::ID
                | proxy::QueryAnswerErrorEx::ID,
            ) => match cocoon_tl::from_bytes::<enums::proxy::QueryAnswerEx>(data) {
                Ok(answer) => self.worker_answer(id, answer).await,
                Err(e) => warn!(error = %e, "malformed worker answer ignored"),
            },
            other => debug!(id = ?other, "unhandled worker packet"),
        }
    }

    async fn worker_answer(&self, worker_id: u64, message: enums::proxy::QueryAnswerEx) {
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

    /// A worker connection ended: retry its unstarted requests, fail its started ones.
    async fn worker_gone(&self, id: u64) {
        let affected: Vec<([u8; 32], bool)> = {
            let mut state = self.state();
            state.workers.remove(&id);
            state
                .requests
                .iter()
                .filter(|(_, r)| r.worker == id)
                .map(|(rid, r)| (*rid, r.head_sent))
                .collect()
        };
        info!(requests = affected.len(), "worker disconnected");
        for (rid, head_sent) in affected {
            if head_sent {
                self.fail_request(
                    rid,
                    Refusal::Unavailable,
                    "the worker disconnected in the middle of the answer",
                    None,
                )
                .await;
            } else {
                let refusal = Refusal::Unavailable;
                let message = refusal.message("the worker disconnected");
                self.retry_or_fail(rid, refusal.code().code(), &message)
                    .await;
            }
        }
    }

    /// Sends the request to another worker if one is left to try, else fails it.
    /// On failure the client gets the last worker's error code and message.
    async fn retry_or_fail(&self, request_id: [u8; 32], code: i32, reason: &str) {
        let send = {
            let mut state = self.state();
            let Some(r) = state.requests.get(&request_id) else {
                return;
            };
            let attempts = u32::try_from(r.tried.len()).unwrap_or(u32::MAX);
            let choice = if attempts < self.shared.settings.max_attempts {
                choose_worker(&state, &r.model, r.max_coefficient, &r.tried).ok()
            } else {
                None
            };
            match choice {
                Some(next) => {
                    let (query, timeout, debug, old) =
                        (r.query.clone(), r.timeout, r.debug, r.worker);
                    if let Some(w) = state.workers.get_mut(&old) {
                        w.running = w.running.saturating_sub(1);
                        w.reputation.record(false, 0.0);
                    }
                    let link = state.workers.get_mut(&next).expect("chosen worker exists");
                    link.running += 1;
                    let send = run_query_message(link, &query, timeout, request_id, debug);
                    let (owner, sc, coefficient) =
                        (link.owner.clone(), link.sc.clone(), link.coefficient);
                    let r = state.requests.get_mut(&request_id).expect("present");
                    r.worker = next;
                    r.coefficient = coefficient;
                    r.relayed = 0;
                    r.worker_owner = owner;
                    r.worker_sc = sc;
                    r.tried.push(next);
                    Some(send)
                }
                None => None,
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
    async fn fail_request(
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
    async fn fail_request_with_code(
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

    /// A worker reported more usage than request `request_id` could have produced: it is
    /// booked within the bound; the report is logged with the worker's identity, counted
    /// in `/metrics` and held against the worker's reputation.
    fn overclaimed(
        &self,
        request_id: [u8; 32],
        worker_id: u64,
        reported: AdjustedTokens,
        booked: AdjustedTokens,
    ) {
        let stats = &self.shared.stats;
        stats.usage_reports_clipped.fetch_add(1, Ordering::Relaxed);
        stats.usage_tokens_refused.fetch_add(
            reported.total().saturating_sub(booked.total()),
            Ordering::Relaxed,
        );
        let mut state = self.state();
        let owner = match state.workers.get_mut(&worker_id) {
            Some(link) => {
                link.reputation.overclaimed();
                link.owner.clone()
            }
            None => String::from("(disconnected)"),
        };
        warn!(
            proxy_request = %hex_short(&request_id),
            worker_owner = %owner,
            worker_connection = worker_id,
            reported = reported.total(),
            booked = booked.total(),
            "worker reported more tokens than the request could have produced; booking within the bound"
        );
    }

    /// Removes a finished request, releases its reservation, books its tokens, and only
    /// then sends the client its last message (`last`) and both payment notices: a client
    /// that saw its answer complete is always billed, exactly once.
    async fn finish(
        &self,
        request_id: [u8; 32],
        tokens: AdjustedTokens,
        ok: bool,
        last: Option<Vec<u8>>,
    ) {
        let done = {
            let mut state = self.state();
            let Some(r) = state.requests.remove(&request_id) else {
                return;
            };
            if let Some(res) = state.reserved.get_mut(&r.client_owner) {
                *res = res.saturating_sub(r.reserved);
            }
            let elapsed = r.started.elapsed().as_secs_f64();
            self.shared.stats.request_latency.observe(elapsed);
            let worker = state.workers.get_mut(&r.worker).map(|w| {
                w.running = w.running.saturating_sub(1);
                w.reputation.record(ok, elapsed);
                w.handle.clone()
            });
            let total = tokens.total();
            Finished {
                booking: (total > 0).then(|| Booking {
                    request_id,
                    client: r.client_owner.clone(),
                    worker: r.worker_owner.clone(),
                    tokens: total,
                }),
                client: r.client.clone(),
                client_proto: r.client_proto,
                client_request_id: r.client_request_id,
                worker,
                proxy_request_id: request_id,
                tokens: total,
                client_sc: r.client_sc.clone(),
                worker_sc: r.worker_sc.clone(),
            }
        };
        let counter = if ok {
            &self.shared.stats.requests_success
        } else {
            &self.shared.stats.requests_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let Some(booking) = done.booking else {
            if let Some(last) = last {
                let _ = Send::Client(done.client, last).run().await;
            }
            return;
        };
        let worker_owner = booking.worker.clone();
        let client_owner = booking.client.clone();
        let totals = match self.shared.writer.book(booking).await {
            Ok(t) => t,
            Err(error) => {
                // The answer cannot be confirmed without its booking: fail it instead.
                warn!(%error, "booking failed");
                let to = ClientReply {
                    proto: done.client_proto,
                    request_id: done.client_request_id,
                    trace: None,
                };
                let msg = to.error(
                    Piece::Head,
                    Refusal::Failed.code().code(),
                    &Refusal::Failed.message("the proxy could not book the request"),
                    AdjustedTokens::default(),
                );
                let _ = Send::Client(done.client, msg).run().await;
                return;
            }
        };
        if let Some(last) = last {
            let _ = Send::Client(done.client.clone(), last).run().await;
        }
        self.shared
            .stats
            .adjusted_tokens
            .fetch_add(done.tokens, Ordering::Relaxed);
        let by_class = &self.shared.stats.tokens_by_class;
        for (counter, n) in by_class.iter().zip([
            tokens.prompt,
            tokens.cached,
            tokens.completion,
            tokens.reasoning,
        ]) {
            counter.fetch_add(n, Ordering::Relaxed);
        }
        let client_msg = proxy::ClientRequestPayment {
            request_id: done.client_request_id,
            signed_payment: self.voucher_for(
                &client_owner,
                &done.client_sc,
                totals.client_tokens,
                false,
            ),
            db_tokens: to_i64(totals.client_tokens),
            max_tokens: to_i64(totals.client_tokens),
            request_tokens: to_i64(done.tokens),
        };
        let _ = Send::Client(done.client, cocoon_tl::to_bytes(&client_msg))
            .run()
            .await;
        if let Some(worker) = done.worker {
            let worker_msg = proxy::WorkerRequestPayment {
                request_id: done.proxy_request_id,
                signed_payment: self.voucher_for(
                    &worker_owner,
                    &done.worker_sc,
                    totals.worker_tokens,
                    true,
                ),
                db_tokens: to_i64(totals.worker_tokens),
                max_tokens: to_i64(totals.worker_tokens),
                request_tokens: to_i64(done.tokens),
                request_client_owner: client_owner,
            };
            let _ = Send::Worker(worker, cocoon_tl::to_bytes(&worker_msg))
                .run()
                .await;
        }
        debug!(%worker_owner, tokens = done.tokens, "request booked");
    }
}

/// A peer's text as a log field: at most 128 characters, so that a hostile multi-megabyte
/// name cannot flood the log.
fn log_text(text: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 128;
    match text.char_indices().nth(MAX) {
        None => text.into(),
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()).into(),
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Picks the worker connection for a request (§4, plus reputation): among ready,
/// enabled, non-full connections of the model with a coefficient within the client's
/// limit and not tried yet, the lowest expected completion time.
fn choose_worker(
    state: &State,
    model: &str,
    max_coefficient: u32,
    exclude: &[u64],
) -> Result<u64, (Refusal, String)> {
    let mut known = false;
    let mut best: Option<(f64, u64)> = None;
    let mut cheapest_too_expensive: Option<u32> = None;
    for (id, w) in &state.workers {
        if w.model != model || !w.ready {
            continue;
        }
        known = true;
        if w.disabled || w.running >= w.max_active || exclude.contains(id) {
            continue;
        }
        if w.coefficient > max_coefficient {
            cheapest_too_expensive =
                Some(cheapest_too_expensive.map_or(w.coefficient, |c| c.min(w.coefficient)));
            continue;
        }
        let score = w.reputation.score(w.running);
        if best.is_none_or(|(b, _)| score < b) {
            best = Some((score, *id));
        }
    }
    match (best, known, cheapest_too_expensive) {
        (Some((_, id)), _, _) => Ok(id),
        (None, false, _) => Err((Refusal::UnknownModel, log_text(model).into_owned())),
        (None, true, Some(c)) => Err((
            Refusal::PriceTooHigh,
            format!("can run this query with coefficient={c}"),
        )),
        (None, true, None) => Err((Refusal::NoWorker, String::new())),
    }
}

fn run_query_message(
    link: &WorkerLink,
    query: &[u8],
    timeout: f64,
    request_id: [u8; 32],
    debug: bool,
) -> Send {
    let msg = proxy_fn::RunQueryEx {
        query: query.to_vec(),
        signed_payment: proxy::SignedPaymentEmpty {}.into(),
        coefficient: i64::from(link.coefficient),
        timeout: timeout * 0.95,
        request_id,
        flags: 0, // the codec sets the bit of enable_debug
        enable_debug: Some(debug),
    };
    Send::Worker(link.handle.clone(), cocoon_tl::to_bytes(&msg))
}

/// Relays answer bytes as client parts of at most [`MAX_ANSWER_PART`] bytes, so that a
/// part too large for the client's frame travels as several: all but the last are pushed to
/// `sends`; the last, carrying `done` and the summary, is returned.
fn relay_parts(
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
fn add_proxy_header(answer: &[u8], proxy_start: f64) -> (Vec<u8>, Vec<u8>) {
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
