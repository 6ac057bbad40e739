//! The proxy role: admits workers and clients, routes each request to a worker, relays
//! the streamed answer, and books the tokens (cocoon-protocol.md §1.3, §2.5, §2.7, §4, §5).
//!
//! Beyond COCOON's proxy: routing also weighs each worker's recent success rate and
//! latency; a request whose worker fails or disappears before the first answer byte is
//! retried on another worker; a failure after that ends the answer with a clean error; a
//! client that goes away cancels the request at a cocoon-rs worker (an extension COCOON peers never see); errors
//! reach protocol ≥ 1 clients as `…Ex` messages; a worker claiming more than the proxy
//! knows is refused while the proxy keeps running.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cocoon_net::ConnectionConfig;
use cocoon_tl::types::proxy;
use ed25519_dalek::SigningKey;

use crate::chain::{ChainContext, ChainError, ProxyVouchers};
use crate::ledger::Ledger;
use crate::pricing::Prices;
use crate::protocol::version::flags;
use crate::protocol::{Extensions, Version};

mod admission;
mod attest;
mod billing;
mod clients;
mod connections;
pub mod demand;
mod epoch;
mod relay;
mod replay;
mod routing;
pub mod settlement;
mod workers;

use billing::VoucherCache;
use epoch::Epoch;
use relay::RequestTable;
use routing::WorkerTable;

pub use billing::Reservations;
pub use epoch::RotationError;
pub use settlement::{ProxyChain, SettlementStats};
pub use workers::{ChangeWorkerModelError, WorkerConnection};

/// Protocol versions this proxy speaks (as COCOON 9060ce5's proxy: 0..=4).
pub const MIN_PROTO: i32 = 0;

/// See [`MIN_PROTO`].
pub const MAX_PROTO: i32 = 4;

/// Settings of a proxy.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Owner of the proxy (receives its earnings).
    pub owner_address: String,
    /// The machine key: signs ledger rows and (with the TON layer) vouchers.
    pub signing_key: SigningKey,
    /// Test network mode; must match clients' and workers'.
    pub is_test: bool,
    /// Version of the root config this proxy runs on.
    pub config_version: i32,
    /// Adjusted tokens each fake-TON client may use.
    pub pseudo_client_tokens: u64,
    /// Workers tried per request (1 = no retry).
    pub max_attempts: u32,
    /// Transport tunables.
    pub connection: ConnectionConfig,
}

/// The root parameters a proxy starts on: its first epoch. A rotation (§5.7) replaces
/// them inside the proxy ([`Proxy::prices`], [`Proxy::settlement`], [`Proxy::sc_address`]
/// answer for the current one); nothing else keeps a copy.
#[derive(Debug, Clone)]
pub struct ProxyStart {
    /// Root parameters and contract derivation.
    pub chain: ChainContext,
    /// Root prices.
    pub prices: Prices,
    /// On-chain settlement; `None` is fake-TON (a stand-in for the chain, for development
    /// and tests): clients are pseudo-funded and authorized at once, as COCOON's
    /// `--disable-ton`.
    pub settlement: Option<Arc<ProxyChain>>,
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
    /// Requests to be answered once that were sent again and answered with the kept
    /// answer (nothing billed).
    pub requests_replayed: AtomicU64,
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

#[derive(Default)]
struct State {
    workers: WorkerTable,
    requests: RequestTable,
    /// Ids of requests to be answered once ([`replay`]) from their arrival until their
    /// booking is durable: the same id arriving meanwhile is refused as still running.
    once_claims: std::collections::HashSet<[u8; 32]>,
    /// Each worker connection's verified peer and when it was admitted (unix seconds).
    peers: std::collections::HashMap<u64, (crate::transport::PeerInfo, u64)>,
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
    /// Signs vouchers, remembering the last one per contract.
    /// Tokens reserved by running requests, per client (shared with the settlement).
    reservations: Arc<Reservations>,
    vouchers: VoucherCache,
    state: Mutex<State>,
    next_id: AtomicU64,
    stats: ProxyStats,
    /// What clients asked for, per model ([`demand`]).
    demand: demand::Demand,
    /// What the proxy signs apps' attestation nonces with ([`attest`]).
    attester: std::sync::OnceLock<attest::ProxyAttester>,
    /// Private keys from the key manager, for requests encrypted to them (protocol 3).
    keys: crate::keys::KeyRing,
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

impl Proxy {
    /// A proxy on the root parameters of `start`, with its ledger; fails if the owner
    /// address is not a TON address.
    pub fn new(
        settings: ProxySettings,
        start: ProxyStart,
        ledger: Arc<Ledger>,
    ) -> Result<Self, ChainError> {
        let owner = start.chain.parse_address(&settings.owner_address)?;
        let key = settings.signing_key.verifying_key().to_bytes();
        let sc = start.chain.proxy_sc(&owner, &key)?;
        let reservations = match &start.settlement {
            Some(chain) => chain.reservations().clone(),
            None => Arc::default(),
        };
        let epoch = Epoch {
            sc_text: start.chain.format(&sc),
            sc,
            chain: start.chain,
            prices: start.prices,
            settlement: start.settlement,
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
                vouchers: VoucherCache::new(vouchers),
                reservations,
                state: Mutex::new(State::default()),
                next_id: AtomicU64::new(1),
                stats: ProxyStats::default(),
                demand: demand::Demand::default(),
                attester: std::sync::OnceLock::new(),
                keys: crate::keys::KeyRing::new(),
            }),
        };
        Ok(proxy)
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
    pub fn settlement(&self) -> Option<Arc<crate::proxy::settlement::ProxyChain>> {
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

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Demand per model: the serving workers' load and price, and what clients asked
    /// for since start and in the last [`demand::RECENT_MINUTES`] minutes (`/demand`,
    /// `/jsonstats`, `/metrics`).
    pub fn demand(&self) -> Vec<demand::ModelReport> {
        let minute = demand::unix_minute();
        let mut supply: std::collections::BTreeMap<String, demand::Supply> = Default::default();
        for w in self.state().workers.serving() {
            let s = supply.entry(w.model.clone()).or_default();
            s.workers += 1;
            s.running += u64::from(w.running);
            s.max_running += u64::from(w.max_active);
            s.lowest_coefficient = Some(
                s.lowest_coefficient
                    .map_or(w.coefficient, |c| c.min(w.coefficient)),
            );
            s.highest_coefficient = s.highest_coefficient.max(w.coefficient);
        }
        let mut asked = self.shared.demand.snapshot(minute);
        let names: std::collections::BTreeSet<String> =
            supply.keys().chain(asked.keys()).cloned().collect();
        names
            .into_iter()
            .map(|model| {
                let (total, recent) = asked.remove(&model).unwrap_or_default();
                demand::ModelReport {
                    supply: supply.remove(&model).unwrap_or_default(),
                    model,
                    total,
                    recent,
                }
            })
            .collect()
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

    /// The private keys this proxy holds for encrypted requests; a key fetcher
    /// ([`crate::keys::spawn_key_fetcher`]) fills it from the key manager.
    pub fn keys(&self) -> &crate::keys::KeyRing {
        &self.shared.keys
    }

    /// The proxy's public key (Ed25519).
    pub fn public_key(&self) -> [u8; 32] {
        self.shared.settings.signing_key.verifying_key().to_bytes()
    }

    /// Worker connections ready for requests, per base model.
    pub fn ready_workers(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for w in self.state().workers.serving() {
            *out.entry(w.model.clone()).or_default() += 1;
        }
        out
    }

    /// Requests in flight.
    pub fn running_requests(&self) -> usize {
        self.state().requests.len()
    }

    /// The proxy's hello answer for a peer at `proto` that offered `extensions` (the proxy
    /// accepts every extension offered, and names none to a peer that offered none).
    fn params(&self, proto: Version, extensions: Extensions) -> proxy::Params {
        let s = &self.shared.settings;
        let announced = proto.number() > 0;
        let versions = if announced { flags::PARAMS_VERSIONS } else { 0 };
        proxy::Params {
            flags: flags::PARAMS_BASE | versions | extensions.flags(),
            proxy_public_key: self.public_key(),
            proxy_owner_address: s.owner_address.clone(),
            proxy_sc_address: self.sc_address(),
            is_test: Some(s.is_test),
            proto_version: announced.then_some(proto.number()),
        }
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
