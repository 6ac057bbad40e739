//! On-chain settlement: what the roles do on a TON chain (the devnet's embedded TVM chain
//! or a real network) instead of fake-TON's pseudo balances (cocoon-protocol.md §2.5
//! long/short auth, §5.3 save-state anchoring, §5.5 who triggers what, §5.6 balances).
//!
//! * [`ChainWallet`] — a role's cocoon wallet: queues internal messages, sends them in
//!   signed batches and waits until the wallet's transaction is on chain.
//! * [`ProxyChain`] — the proxy's side: deploys its contract, anchors its ledger with
//!   `proxy_save_state` so vouchers only ever cover anchored usage, watches its contract
//!   for client registrations (long auth) and client state reports, charges clients,
//!   pays workers and withdraws its commission when the thresholds are reached.
//! * [`ClientChain`] — the client's side: deploys and funds its client contract,
//!   registers with the proxy's nonce, publishes its secret hash (short auth next time)
//!   and tops up before the proxy runs out of balance for it; when the root parameters
//!   change, it closes its old client contracts itself if the proxy does not (§5.7).
//!
//! Workers need nothing on chain to be paid: the proxy's payout deploys their contract
//! if needed and the worker owner receives its fee directly.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cocoon_ton::chain::{AccountState, ChainBackend, TxFollower};
use cocoon_ton::contracts::{
    ClientContractState, CocoonWalletState, ContractInit, ContractStatus, ProxyContractState,
    WorkerContractState,
};
use cocoon_ton::messages::{Body, ClientProxyPayload};
use cocoon_ton::outbox::{Blocked, OutboxId, Poll, WalletOutbox};
use cocoon_ton::root::ONE_TON;
use cocoon_ton::settlement::{
    body_message, client_top_up_message, deploy_message, save_state_message, CLIENT_DEPLOY_VALUE,
    OPERATION_VALUE, PROXY_DEPLOY_VALUE, PROXY_WITHDRAW_VALUE,
};
use cocoon_ton::voucher::{Voucher, VoucherKind, VoucherSigner};
use cocoon_ton::wallet::{CocoonWallet, InternalMessage};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};
use tycho_types::models::StdAddr;

use crate::chain::{ChainContext, RootWatch};
use crate::ledger::{EpochStarts, Ledger, Party};

/// Why a settlement step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// The chain backend failed or refused.
    #[error("chain: {0}")]
    Chain(String),
    /// The wallet cannot send (balance, refusal).
    #[error("wallet {address}: {reason}")]
    Wallet {
        /// The wallet.
        address: String,
        /// Why.
        reason: String,
    },
    /// Nothing confirmed in time.
    #[error("no confirmation from the chain within {0:?}")]
    Timeout(Duration),
    /// A contract or address problem.
    #[error("{0}")]
    Contract(String),
}

fn chain_err(e: impl std::fmt::Display) -> SettleError {
    SettleError::Chain(e.to_string())
}

/// When and how much the roles settle. The defaults are COCOON's (§5.3, §5.5); the
/// devnet lowers the thresholds so that settlement happens within seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementPolicy {
    /// How often the proxy anchors a grown ledger on chain (COCOON: 30–60 s).
    pub anchor_interval: Duration,
    /// How often the roles look at the chain.
    pub poll_interval: Duration,
    /// The proxy charges a client once anchored, uncharged usage is worth this much
    /// (nanoTON; COCOON: 1 TON).
    pub charge_threshold: u64,
    /// The proxy pays a worker once anchored, unpaid fees reach this (nanoTON; COCOON: 10 TON).
    pub payout_threshold: u64,
    /// The proxy withdraws its commission once it reaches this (nanoTON; COCOON: 10 TON).
    pub withdraw_threshold: u64,
    /// What a client deposits when it deploys its contract and at each top-up
    /// (nanoTON; 0 = the root's minimum client stake, as COCOON).
    pub client_deposit: u64,
    /// How long a wallet waits for its message to appear on chain.
    pub confirm_timeout: Duration,
    /// How often the roles read the root contract for new parameters (COCOON: 30–60 s).
    pub root_poll_interval: Duration,
    /// When the root parameters change, how long the proxy lets running requests finish
    /// before it closes the connections and rotates its contracts (§5.7).
    pub drain_timeout: Duration,
}

impl Default for SettlementPolicy {
    fn default() -> Self {
        SettlementPolicy {
            anchor_interval: Duration::from_secs(30),
            poll_interval: Duration::from_secs(5),
            charge_threshold: cocoon_ton::settlement::CLIENT_CHARGE_THRESHOLD,
            payout_threshold: cocoon_ton::settlement::WORKER_PAYOUT_THRESHOLD,
            withdraw_threshold: cocoon_ton::settlement::PROXY_WITHDRAW_THRESHOLD,
            client_deposit: 0,
            confirm_timeout: Duration::from_secs(180),
            root_poll_interval: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(120),
        }
    }
}

impl SettlementPolicy {
    /// The devnet's policy: anchor every second, charge and pay any amount, withdraw
    /// the commission from 0.1 TON, read the root every second.
    pub fn devnet() -> Self {
        SettlementPolicy {
            anchor_interval: Duration::from_secs(1),
            poll_interval: Duration::from_millis(200),
            charge_threshold: 1,
            payout_threshold: 1,
            withdraw_threshold: ONE_TON / 10,
            client_deposit: 10 * ONE_TON,
            confirm_timeout: Duration::from_secs(60),
            root_poll_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// A role's connection to a chain: the backend, its cocoon wallet and the policy.
#[derive(Clone)]
pub struct OnChain {
    /// The chain.
    pub backend: Arc<dyn ChainBackend>,
    /// The role's cocoon wallet.
    pub wallet: Arc<ChainWallet>,
    /// Thresholds and intervals.
    pub policy: SettlementPolicy,
}

impl std::fmt::Debug for OnChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnChain")
            .field("wallet", &self.wallet.address_text())
            .field("policy", &self.policy)
            .finish()
    }
}

impl OnChain {
    /// Opens the wallet of `key` owned by `owner` (running `wallet_code`) on `backend`.
    pub async fn open(
        backend: Arc<dyn ChainBackend>,
        key: SigningKey,
        owner: StdAddr,
        wallet_code: &tycho_types::cell::Cell,
        policy: SettlementPolicy,
    ) -> Result<Self, SettleError> {
        let wallet = CocoonWallet::new(key, owner, wallet_code).map_err(chain_err)?;
        let wallet = Arc::new(
            ChainWallet::open(
                backend.clone(),
                wallet,
                policy.poll_interval,
                policy.confirm_timeout,
            )
            .await?,
        );
        Ok(OnChain {
            backend,
            wallet,
            policy,
        })
    }
}

/// Reads an account; a backend failure is a [`SettleError::Chain`].
async fn account(backend: &dyn ChainBackend, a: &StdAddr) -> Result<AccountState, SettleError> {
    backend.account_state(a).await.map_err(chain_err)
}

fn data_of<T>(
    state: &AccountState,
    parse: impl Fn(&tycho_types::cell::Cell) -> cocoon_ton::Result<T>,
) -> Result<Option<T>, SettleError> {
    match (&state.data, state.is_active()) {
        (Some(d), true) => parse(d).map(Some).map_err(chain_err),
        _ => Ok(None),
    }
}

// ------------------------------------------------------------------------ wallet

struct WalletQueue {
    outbox: WalletOutbox,
    follower: TxFollower,
    results: HashMap<OutboxId, Result<(), String>>,
}

/// A cocoon wallet on a chain (§6.3): messages are queued, sent in signed batches of up
/// to four, resent until the wallet's transaction appears, and each [`ChainWallet::send`]
/// returns once its messages were taken by the chain (or failed).
pub struct ChainWallet {
    backend: Arc<dyn ChainBackend>,
    wallet: CocoonWallet,
    text: String,
    queue: tokio::sync::Mutex<WalletQueue>,
    poll: Duration,
    timeout: Duration,
}

impl std::fmt::Debug for ChainWallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainWallet")
            .field("address", &self.text)
            .finish()
    }
}

/// The cocoon wallet refuses to act below this balance (exit code 1035).
pub const WALLET_FLOOR: u64 = 2 * ONE_TON;

impl ChainWallet {
    /// Follows `wallet` on `backend` from now on.
    pub async fn open(
        backend: Arc<dyn ChainBackend>,
        wallet: CocoonWallet,
        poll: Duration,
        timeout: Duration,
    ) -> Result<Self, SettleError> {
        let follower = TxFollower::from_now(backend.as_ref(), wallet.address().clone())
            .await
            .map_err(chain_err)?;
        let text = cocoon_ton::address::to_friendly(wallet.address(), true);
        Ok(ChainWallet {
            backend,
            text,
            wallet,
            queue: tokio::sync::Mutex::new(WalletQueue {
                outbox: WalletOutbox::new(WALLET_FLOOR),
                follower,
                results: HashMap::new(),
            }),
            poll,
            timeout,
        })
    }

    /// The wallet's address.
    pub fn address(&self) -> &StdAddr {
        self.wallet.address()
    }

    /// The wallet's address as text (user-friendly, testnet form).
    pub fn address_text(&self) -> &str {
        &self.text
    }

    /// The wallet's balance on chain (nanoTON).
    pub async fn balance(&self) -> Result<u64, SettleError> {
        Ok(account(self.backend.as_ref(), self.address())
            .await?
            .balance)
    }

    /// Sends `messages` and waits until the chain took them.
    pub async fn send(&self, messages: Vec<InternalMessage>) -> Result<(), SettleError> {
        if messages.is_empty() {
            return Ok(());
        }
        let ids: Vec<OutboxId> = {
            let mut q = self.queue.lock().await;
            messages.into_iter().map(|m| q.outbox.push(m)).collect()
        };
        let deadline = Instant::now() + self.timeout;
        debug!(wallet = %self.text, ?ids, "wallet send");
        loop {
            {
                let mut q = self.queue.lock().await;
                self.drive(&mut q).await;
                if ids.iter().all(|id| q.results.contains_key(id)) {
                    let mut outcome = Ok(());
                    for id in &ids {
                        if let Some(Err(reason)) = q.results.remove(id) {
                            outcome = Err(SettleError::Wallet {
                                address: self.text.clone(),
                                reason,
                            });
                        }
                    }
                    return outcome;
                }
            }
            if Instant::now() >= deadline {
                return Err(SettleError::Timeout(self.timeout));
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// One round: confirmations, then whatever the outbox wants to send.
    async fn drive(&self, q: &mut WalletQueue) {
        let backend = self.backend.as_ref();
        match q.follower.poll(backend).await {
            Ok(txs) => {
                for tx in &txs {
                    for id in q.outbox.on_transaction(tx) {
                        q.results.insert(id, Ok(()));
                    }
                }
            }
            Err(e) => {
                debug!(error = %e, wallet = %self.text, "cannot follow the wallet");
                return;
            }
        }
        let state = match backend.account_state(self.address()).await {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, wallet = %self.text, "cannot read the wallet");
                return;
            }
        };
        let seqno = match data_of(&state, CocoonWalletState::from_data) {
            Ok(s) => s.map_or(0, |s| s.seqno),
            Err(e) => {
                warn!(error = %e, wallet = %self.text, "unreadable wallet state");
                return;
            }
        };
        q.outbox.on_seqno(seqno);
        let now = backend.now().await.unwrap_or(state.sync_utime);
        let fail_all = |q: &mut WalletQueue, reason: String| {
            for id in q.outbox.abort_all() {
                q.results.insert(id, Err(reason.clone()));
            }
        };
        match q.outbox.poll(&self.wallet, seqno, state.balance, now) {
            Ok(Poll::Send(ext)) => {
                let sent = match ext.to_boc() {
                    Ok(boc) => backend.send_external(boc).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                debug!(wallet = %self.text, ?sent, "external sent");
                if let Err(reason) = sent {
                    for id in q.outbox.abort_in_flight() {
                        q.results.insert(id, Err(reason.clone()));
                    }
                }
            }
            Ok(Poll::Nothing(Blocked::LowBalance)) => fail_all(
                q,
                format!(
                    "balance {} TON is below the wallet's {} TON floor: fund the wallet",
                    cocoon_ton::units::format_ton(state.balance),
                    cocoon_ton::units::format_ton(WALLET_FLOOR)
                ),
            ),
            Ok(Poll::Nothing(Blocked::TooExpensive)) => fail_all(
                q,
                format!(
                    "balance {} TON cannot cover the queued message: fund the wallet",
                    cocoon_ton::units::format_ton(state.balance)
                ),
            ),
            Ok(Poll::Nothing(_)) => {}
            Err(e) => fail_all(q, e.to_string()),
        }
    }
}

// ------------------------------------------------------------------------- proxy

/// A client contract as the proxy knows it.
#[derive(Debug, Clone)]
struct KnownClient {
    sc: StdAddr,
    state: Option<ClientContractState>,
}

/// A worker contract as the proxy knows it.
#[derive(Debug, Clone)]
struct KnownWorker {
    init: ContractInit,
    /// Tokens paid out on chain (the worker contract's `tokens`); None until read.
    paid: Option<u64>,
    /// Whether the worker contract is closed (after its last payout).
    closed: bool,
    /// Whether the worker contract exists on chain.
    exists: bool,
}

/// What a proxy settles with a signed voucher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settlement {
    /// Charge a client contract for its anchored usage.
    Charge,
    /// Final charge of a closing client, refunding the rest.
    Refund,
    /// Pay a worker contract's owner for its anchored work.
    Payout,
    /// Final payout of a worker contract of a closing epoch, closing it.
    LastPayout,
    /// Start closing the proxy contract of a closing epoch.
    CloseProxy,
    /// Finish closing it once unlocked: everything left goes to the proxy owner.
    CompleteClose,
}

impl Settlement {
    fn voucher_kind(self) -> VoucherKind {
        match self {
            Settlement::Charge => VoucherKind::ClientCharge,
            Settlement::Refund => VoucherKind::ClientGrantRefund,
            Settlement::Payout => VoucherKind::WorkerPayout,
            Settlement::LastPayout => VoucherKind::WorkerLastPayout,
            Settlement::CloseProxy => VoucherKind::ProxyClose,
            Settlement::CompleteClose => VoucherKind::ProxyCloseComplete,
        }
    }

    fn is_worker(self) -> bool {
        matches!(self, Settlement::Payout | Settlement::LastPayout)
    }
}

/// A save-state in flight (§5.3): the ledger snapshot it anchors.
#[derive(Debug, Clone)]
struct PendingAnchor {
    seqno: i32,
    clients: HashMap<String, u64>,
    workers: HashMap<String, u64>,
    totals: (u64, u64),
    since: Instant,
}

#[derive(Debug, Default)]
struct ProxyBook {
    seqno: i32,
    pending: Option<PendingAnchor>,
    anchored_totals: (u64, u64),
    last_anchor: Option<Instant>,
    committed_clients: HashMap<String, u64>,
    committed_workers: HashMap<String, u64>,
    clients: HashMap<String, KnownClient>,
    workers: HashMap<String, KnownWorker>,
    registrations: HashSet<(StdAddr, u64)>,
    busy: HashSet<StdAddr>,
    contract: Option<ProxyContractState>,
    /// While closing: every party's usage up to the epoch's end is anchored.
    final_anchored: bool,
}

/// Counters of the proxy's settlement.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SettlementStats {
    /// Save-states confirmed on chain.
    pub anchors: u64,
    /// Charges sent to client contracts.
    pub charges: u64,
    /// Payouts sent to worker contracts.
    pub payouts: u64,
    /// Commission withdrawals.
    pub withdrawals: u64,
    /// Grant-refunds to closing clients.
    pub refunds: u64,
    /// Settlement messages the chain refused or that failed.
    pub failures: u64,
    /// Proxy contracts of past epochs closed (§5.7).
    pub closed_epochs: u64,
}

impl SettlementStats {
    fn sent(&mut self, kind: Settlement) {
        match kind {
            Settlement::Charge => self.charges += 1,
            Settlement::Refund => self.refunds += 1,
            Settlement::Payout | Settlement::LastPayout => self.payouts += 1,
            Settlement::CloseProxy | Settlement::CompleteClose => {}
        }
    }
}

/// The proxy's on-chain side (see the module docs).
pub struct ProxyChain {
    chain: OnChain,
    context: ChainContext,
    ledger: Arc<Ledger>,
    contract: ContractInit,
    owner: StdAddr,
    public_key: [u8; 32],
    signer: VoucherSigner,
    session_hash: [u8; 32],
    book: Mutex<ProxyBook>,
    stats: Mutex<SettlementStats>,
    follower: tokio::sync::Mutex<TxFollower>,
    registered: tokio::sync::Notify,
    running: std::sync::OnceLock<RunningProbe>,
    /// Every party's ledger total when this epoch began (its contracts start at 0).
    starts: EpochStarts,
    /// Set when a newer epoch began: every party's total at the cut. The epoch's
    /// contracts are then closed out (§5.7).
    end: std::sync::OnceLock<EpochStarts>,
}

/// Tells whether a client (by owner) has requests in flight at the proxy.
pub type RunningProbe = Box<dyn Fn(&str) -> bool + Send + Sync>;

impl std::fmt::Debug for ProxyChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyChain")
            .field(
                "contract",
                &cocoon_ton::address::to_raw(&self.contract.address),
            )
            .finish_non_exhaustive()
    }
}

impl ProxyChain {
    /// Starts the epoch of `context`'s root parameters: begins it in the ledger (cutting
    /// every party's total, §5.7) unless the ledger is already in it, deploys its proxy
    /// contract of (`owner`, `key`) if needed, takes the ledger's totals as committed (as
    /// COCOON does at load) and starts the settlement loop.
    pub async fn start(
        chain: OnChain,
        context: ChainContext,
        ledger: Arc<Ledger>,
        owner: StdAddr,
        key: &SigningKey,
    ) -> Result<Arc<Self>, SettleError> {
        let version = context.params().params_version;
        let contract = context
            .proxy_init(&owner, &key.verifying_key().to_bytes())
            .map_err(|e| SettleError::Contract(e.to_string()))?;
        let epochs = ledger.epochs().map_err(chain_err)?;
        let starts = match epochs.last() {
            Some(e) if e.params_version > version => {
                return Err(SettleError::Contract(format!(
                    "the ledger is at params_version {} but the root says {version}: \
                     another root, or a chain that was reset",
                    e.params_version
                )))
            }
            Some(e) if e.params_version == version => {
                ledger.epoch_starts(version).map_err(chain_err)?
            }
            _ => {
                let params = context
                    .params_boc()
                    .map_err(|e| SettleError::Contract(e.to_string()))?;
                let starts = ledger
                    .begin_epoch(version, &context.format(&contract.address), &params)
                    .map_err(chain_err)?;
                info!(params_version = version, "ledger epoch begun");
                starts
            }
        };
        let backend = chain.backend.clone();
        let state = account(backend.as_ref(), &contract.address).await?;
        if !state.is_active() {
            info!(contract = %context.format(&contract.address), "deploying the proxy contract");
            chain
                .wallet
                .send(vec![deploy_message(&contract, PROXY_DEPLOY_VALUE, None)])
                .await?;
            let state = account(backend.as_ref(), &contract.address).await?;
            if !state.is_active() {
                return Err(SettleError::Contract(format!(
                    "the proxy contract {} did not deploy",
                    context.format(&contract.address)
                )));
            }
        }
        let proxy = Self::open(chain, context, ledger, owner, key, starts).await?;
        let weak = Arc::downgrade(&proxy);
        let poll = proxy.chain.policy.poll_interval;
        tokio::spawn(async move {
            loop {
                let Some(p) = weak.upgrade() else { return };
                if p.end.get().is_some() {
                    return; // the epoch is over: its close-out runs on its own
                }
                p.tick().await;
                drop(p);
                tokio::time::sleep(poll).await;
            }
        });
        Ok(proxy)
    }

    /// The proxy's side of one epoch's contract, without deploying or looping.
    async fn open(
        chain: OnChain,
        context: ChainContext,
        ledger: Arc<Ledger>,
        owner: StdAddr,
        key: &SigningKey,
        starts: EpochStarts,
    ) -> Result<Arc<Self>, SettleError> {
        let public_key = key.verifying_key().to_bytes();
        let contract = context
            .proxy_init(&owner, &public_key)
            .map_err(|e| SettleError::Contract(e.to_string()))?;
        let follower = TxFollower::from_now(chain.backend.as_ref(), contract.address.clone())
            .await
            .map_err(chain_err)?;
        let totals = ledger.all_totals().map_err(chain_err)?;
        let mut book = ProxyBook {
            committed_clients: totals.clients.into_iter().collect(),
            committed_workers: totals.workers.into_iter().collect(),
            ..ProxyBook::default()
        };
        book.anchored_totals = ledger.grand_totals().map_err(chain_err)?;
        let signer = VoucherSigner::new(key.clone(), chain.wallet.address().clone());
        Ok(Arc::new(ProxyChain {
            chain,
            context,
            ledger,
            contract,
            owner,
            public_key,
            signer,
            session_hash: rand::random(),
            book: Mutex::new(book),
            stats: Mutex::new(SettlementStats::default()),
            follower: tokio::sync::Mutex::new(follower),
            registered: tokio::sync::Notify::new(),
            running: std::sync::OnceLock::new(),
            starts,
            end: std::sync::OnceLock::new(),
        }))
    }

    /// The root's `params_version` of this epoch.
    pub fn params_version(&self) -> u32 {
        self.context.params().params_version
    }

    /// The root parameters and derivation of this epoch.
    pub fn context(&self) -> &ChainContext {
        &self.context
    }

    /// A party's tokens on its contract of this epoch, from its cumulative ledger
    /// `total`: `total − start`, capped at the epoch's end once it is over.
    pub fn epoch_tokens(&self, owner: &str, party: Party, total: u64) -> u64 {
        let total = match self.end.get() {
            Some(end) => total.min(end.of(owner, party)),
            None => total,
        };
        total.saturating_sub(self.starts.of(owner, party))
    }

    /// Ends this epoch (a newer one began with `end` as its starts) and closes its
    /// contracts in the background (§5.7): a last anchor, the signed close request, a
    /// grant-refund to every client contract, a last payout to every worker contract,
    /// and once the close delay has passed the signed close completion, which pays what
    /// is left (stake, commission) to the proxy owner. The ledger marks the epoch closed
    /// when the chain shows the contract closed; a restart resumes with
    /// [`ProxyChain::close_past_epochs`].
    pub fn close_out(self: &Arc<Self>, end: EpochStarts) {
        if self.end.set(end).is_err() {
            return; // already closing
        }
        {
            let mut book = self.book();
            book.last_anchor = None;
            book.final_anchored = false;
        }
        info!(
            params_version = self.params_version(),
            contract = %self.context.format(&self.contract.address),
            "closing the contracts of the previous root parameters"
        );
        let me = self.clone();
        tokio::spawn(async move {
            let poll = me.chain.policy.poll_interval;
            loop {
                match me.close_round().await {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(e) => {
                        warn!(error = %e, params_version = me.params_version(), "closing an old epoch");
                        me.count(|s| s.failures += 1);
                    }
                }
                tokio::time::sleep(poll).await;
            }
        });
    }

    /// Starts the epoch of newer root parameters `context` (see [`ProxyChain::start`]:
    /// the ledger cut and the new proxy contract) with this epoch's wallet, owner and
    /// key, then closes this epoch out ([`ProxyChain::close_out`]).
    pub async fn next_epoch(
        self: &Arc<Self>,
        context: ChainContext,
        key: &SigningKey,
    ) -> Result<Arc<ProxyChain>, SettleError> {
        let next = Self::start(
            self.chain.clone(),
            context,
            self.ledger.clone(),
            self.owner.clone(),
            key,
        )
        .await?;
        self.close_out(next.starts.clone());
        Ok(next)
    }

    /// Resumes closing the ledger's epochs older than this one that are not closed yet
    /// (the proxy stopped while closing them, or while the root changed). Returns them.
    pub async fn close_past_epochs(
        &self,
        key: &SigningKey,
    ) -> Result<Vec<Arc<ProxyChain>>, SettleError> {
        let epochs = self.ledger.epochs().map_err(chain_err)?;
        let mut closing = Vec::new();
        for (i, e) in epochs.iter().enumerate() {
            if e.closed || e.params_version >= self.params_version() {
                continue;
            }
            let Some(next) = epochs.get(i + 1) else {
                continue;
            };
            let context = self
                .context
                .with_params_boc(&e.params)
                .map_err(|e| SettleError::Contract(e.to_string()))?;
            let starts = self
                .ledger
                .epoch_starts(e.params_version)
                .map_err(chain_err)?;
            let end = self
                .ledger
                .epoch_starts(next.params_version)
                .map_err(chain_err)?;
            let old = Self::open(
                self.chain.clone(),
                context,
                self.ledger.clone(),
                self.owner.clone(),
                key,
                starts,
            )
            .await?;
            old.close_out(end);
            closing.push(old);
        }
        Ok(closing)
    }

    /// One round of closing an ended epoch; true once its proxy contract is closed.
    async fn close_round(&self) -> Result<bool, SettleError> {
        let Some(end) = self.end.get() else {
            return Ok(false);
        };
        self.follow().await?;
        // 1. Everything up to the cut anchored (restarts take the ledger as anchored).
        let anchored = {
            let book = self.book();
            end.clients
                .iter()
                .all(|(o, t)| book.committed_clients.get(o).copied().unwrap_or(0) >= *t)
                && end
                    .workers
                    .iter()
                    .all(|(o, t)| book.committed_workers.get(o).copied().unwrap_or(0) >= *t)
        };
        if !anchored {
            self.anchor().await;
            return Ok(false);
        }
        if !self.book().final_anchored {
            self.book().final_anchored = true;
            debug!(
                params_version = self.params_version(),
                "old epoch fully anchored"
            );
        }
        // 2. The proxy contract.
        let backend = self.chain.backend.clone();
        let state = account(backend.as_ref(), &self.contract.address).await?;
        let Some(contract) = data_of(&state, ProxyContractState::from_data)? else {
            // Never deployed (or gone): nothing to close.
            self.ledger
                .close_epoch(self.params_version())
                .map_err(chain_err)?;
            return Ok(true);
        };
        let sc = self.contract.address.clone();
        match contract.status {
            ContractStatus::Closed => {
                self.epoch_closed()?;
                return Ok(true);
            }
            ContractStatus::Normal => {
                let msg = self.voucher_message(Settlement::CloseProxy, 0, &sc, None);
                self.chain.wallet.send(msg.into_iter().collect()).await?;
                return Ok(false);
            }
            _ => {}
        }
        // 3. Every client refunded and every worker paid, at the epoch's final counts.
        self.adopt_ledger_parties();
        let known: Vec<(Settlement, StdAddr)> = {
            let book = self.book();
            book.clients
                .values()
                .map(|c| (Settlement::Refund, c.sc.clone()))
                .chain(
                    book.workers
                        .values()
                        .map(|w| (Settlement::LastPayout, w.init.address.clone())),
                )
                .collect()
        };
        for (kind, sc) in &known {
            self.refresh(*kind, sc).await;
        }
        let mut due = Vec::new();
        let mut pending = 0usize;
        {
            let book = self.book();
            for (owner, c) in &book.clients {
                let Some(state) = &c.state else { continue }; // no contract: nothing held
                if state.status == ContractStatus::Closed && state.balance == 0 {
                    continue;
                }
                pending += 1;
                let tokens = self.epoch_tokens(owner, Party::Client, end.of(owner, Party::Client));
                if tokens < state.tokens_used {
                    warn!(%owner, tokens, charged = state.tokens_used, "client charged beyond the ledger");
                    continue;
                }
                due.extend(
                    self.voucher_message(Settlement::Refund, tokens, &c.sc, None)
                        .map(|m| (Settlement::Refund, m)),
                );
            }
            for (owner, w) in &book.workers {
                let tokens = self.epoch_tokens(owner, Party::Worker, end.of(owner, Party::Worker));
                if w.closed || (!w.exists && tokens == 0) {
                    continue;
                }
                pending += 1;
                due.extend(
                    self.voucher_message(
                        Settlement::LastPayout,
                        tokens,
                        &w.init.address,
                        Some(w.init.state_init.clone()),
                    )
                    .map(|m| (Settlement::LastPayout, m)),
                );
            }
        }
        if !due.is_empty() {
            let kinds: Vec<Settlement> = due.iter().map(|(k, _)| *k).collect();
            match self
                .chain
                .wallet
                .send(due.into_iter().map(|(_, m)| m).collect())
                .await
            {
                Ok(()) => self.count(|s| {
                    for k in &kinds {
                        s.sent(*k);
                    }
                }),
                Err(e) => {
                    warn!(error = %e, "old epoch refunds and payouts failed");
                    self.count(|s| s.failures += 1);
                }
            }
            return Ok(false);
        }
        // 4. Complete once unlocked; with parties still unsettled, wait one more delay.
        let now = backend.now().await.map_err(chain_err)?;
        let grace = if pending == 0 {
            0
        } else {
            self.context.params().proxy_delay_before_close
        };
        if now < contract.unlock_ts.saturating_add(grace) {
            return Ok(false);
        }
        if pending > 0 {
            warn!(pending, "completing the close with parties still unsettled");
        }
        let msg = self.voucher_message(Settlement::CompleteClose, 0, &sc, None);
        self.chain.wallet.send(msg.into_iter().collect()).await?;
        // The wallet waited for its transaction: the contract is closed by now.
        let state = account(backend.as_ref(), &self.contract.address).await?;
        let closed = data_of(&state, ProxyContractState::from_data)?
            .is_some_and(|c| c.status == ContractStatus::Closed);
        if closed {
            self.epoch_closed()?;
        }
        Ok(closed)
    }

    /// Records in the ledger that this epoch's proxy contract is closed.
    fn epoch_closed(&self) -> Result<(), SettleError> {
        self.ledger
            .close_epoch(self.params_version())
            .map_err(chain_err)?;
        self.count(|s| s.closed_epochs += 1);
        info!(
            params_version = self.params_version(),
            contract = %self.context.format(&self.contract.address),
            "old proxy contract closed; its stake and commission went to the owner"
        );
        Ok(())
    }

    /// How the proxy tells whether a client has requests in flight: a closing client is
    /// refunded only when it has none (their tokens could not be charged afterwards).
    pub fn set_running_probe(&self, probe: RunningProbe) {
        let _ = self.running.set(probe);
    }

    fn book(&self) -> std::sync::MutexGuard<'_, ProxyBook> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, f: impl FnOnce(&mut SettlementStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Settlement counters.
    pub fn stats(&self) -> SettlementStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The proxy contract.
    pub fn contract(&self) -> &StdAddr {
        &self.contract.address
    }

    /// The proxy's cocoon wallet.
    pub fn wallet(&self) -> &ChainWallet {
        &self.chain.wallet
    }

    /// Tokens of `owner` on its client contract of this epoch that are anchored on
    /// chain: what a client voucher may cover.
    pub fn committed_client(&self, owner: &str) -> u64 {
        let total = self
            .book()
            .committed_clients
            .get(owner)
            .copied()
            .unwrap_or(0);
        self.epoch_tokens(owner, Party::Client, total)
    }

    /// Tokens of worker `owner` on its contract of this epoch that are anchored on
    /// chain: what a payout voucher may cover.
    pub fn committed_worker(&self, owner: &str) -> u64 {
        let total = self
            .book()
            .committed_workers
            .get(owner)
            .copied()
            .unwrap_or(0);
        self.epoch_tokens(owner, Party::Worker, total)
    }

    /// Reads a client's contract (at connect): remembers it and returns its secret hash
    /// when it has one (short authorization is then possible).
    pub async fn client_connected(
        &self,
        owner: &str,
        sc: &StdAddr,
    ) -> Result<Option<[u8; 32]>, SettleError> {
        let state = account(self.chain.backend.as_ref(), sc).await?;
        let parsed = data_of(&state, ClientContractState::from_data)?;
        let secret = parsed
            .as_ref()
            .map(|s| s.secret_hash)
            .filter(|h| *h != [0; 32]);
        self.book().clients.insert(
            owner.to_owned(),
            KnownClient {
                sc: sc.clone(),
                state: parsed,
            },
        );
        Ok(secret)
    }

    /// Remembers a worker's contract (at connect).
    pub fn worker_connected(&self, owner: &StdAddr, owner_text: &str) -> Result<(), SettleError> {
        let init = self
            .context
            .worker_init(owner, &self.contract.address, &self.public_key)
            .map_err(|e| SettleError::Contract(e.to_string()))?;
        self.book()
            .workers
            .entry(owner_text.to_owned())
            .or_insert(KnownWorker {
                init,
                paid: None,
                closed: false,
                exists: false,
            });
        Ok(())
    }

    /// Waits until the client contract `sc` has sent `client_proxy_register{nonce}` to the
    /// proxy contract (long authorization, §2.5). False on timeout.
    pub async fn wait_registration(&self, sc: &StdAddr, nonce: u64, timeout: Duration) -> bool {
        let key = (sc.clone(), nonce);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.registered.notified();
            if self.book().registrations.remove(&key) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.book().registrations.remove(&key);
            }
        }
    }

    /// How many tokens `owner` may have used in all (a cumulative ledger total), from
    /// its contract of this epoch (§5.6): the epoch's start plus
    /// `min(balance / price + tokens_used, stake / price + tokens_used)`; 0 while unknown
    /// or when the contract is not in the normal state.
    pub fn client_token_limit(&self, owner: &str) -> u64 {
        let price = self.context.params().price_per_token;
        let book = self.book();
        let Some(state) = book.clients.get(owner).and_then(|c| c.state.as_ref()) else {
            return 0;
        };
        if state.status != ContractStatus::Normal {
            return 0;
        }
        let per = |v: u64| v.checked_div(price).unwrap_or(1_000_000_000_000);
        per(state.balance)
            .min(per(state.stake))
            .saturating_add(state.tokens_used)
            .saturating_add(self.starts.of(owner, Party::Client))
    }

    /// One round of the settlement loop.
    async fn tick(&self) {
        if let Err(e) = self.follow().await {
            debug!(error = %e, "cannot follow the proxy contract");
        }
        self.anchor().await;
        self.settle(false).await;
    }

    /// Settles everything now, whatever the thresholds: anchors the whole ledger, charges
    /// every client and pays every worker for all of it, and withdraws the commission.
    /// Returns once the chain shows it (`cocoon devnet` does this when it stops).
    pub async fn settle_all(&self, timeout: Duration) -> Result<(), SettleError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Err(e) = self.follow().await {
                debug!(error = %e, "cannot follow the proxy contract");
            }
            self.book().last_anchor = None;
            self.anchor().await;
            if let Err(e) = self.follow().await {
                debug!(error = %e, "cannot follow the proxy contract");
            }
            self.settle(true).await;
            match self.outstanding() {
                Ok(None) => return Ok(()),
                Ok(Some(what)) if Instant::now() >= deadline => {
                    return Err(SettleError::Contract(format!(
                        "not settled in time: {what}"
                    )))
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                _ => {}
            }
            tokio::time::sleep(self.chain.policy.poll_interval).await;
        }
    }

    /// What is not settled yet, if anything.
    fn outstanding(&self) -> Result<Option<String>, SettleError> {
        let totals = self.ledger.grand_totals().map_err(chain_err)?;
        let book = self.book();
        if book.anchored_totals != totals {
            return Ok(Some(format!(
                "ledger {totals:?} anchored {:?}",
                book.anchored_totals
            )));
        }
        for (owner, total) in &book.committed_clients {
            let committed = &self.epoch_tokens(owner, Party::Client, *total);
            let charged = book
                .clients
                .get(owner)
                .and_then(|c| c.state.as_ref())
                .map(|s| s.tokens_used);
            if *committed > 0 && charged < Some(*committed) {
                return Ok(Some(format!(
                    "client {owner}: {committed} tokens, {charged:?} charged"
                )));
            }
        }
        for (owner, total) in &book.committed_workers {
            let committed = &self.epoch_tokens(owner, Party::Worker, *total);
            let paid = book.workers.get(owner).and_then(|w| w.paid);
            if *committed > 0 && paid < Some(*committed) {
                return Ok(Some(format!(
                    "worker {owner}: {committed} tokens, {paid:?} paid"
                )));
            }
        }
        match &book.contract {
            Some(c) if c.balance == 0 => Ok(None),
            Some(c) => Ok(Some(format!("commission {} not withdrawn", c.balance))),
            None => Ok(Some("proxy contract not read yet".into())),
        }
    }

    /// Reads new transactions of the proxy contract: save-state confirmations, client
    /// registrations and client state reports.
    async fn follow(&self) -> Result<(), SettleError> {
        let txs = {
            let mut f = self.follower.lock().await;
            f.poll(self.chain.backend.as_ref())
                .await
                .map_err(chain_err)?
        };
        for tx in txs {
            let Some(msg) = &tx.in_msg else { continue };
            let body = match Body::parse(&msg.body) {
                Ok(b) => b,
                Err(e) => {
                    debug!(error = %e, "unparsed message to the proxy contract");
                    continue;
                }
            };
            debug!(
                op = body.op(),
                success = tx.success,
                "proxy contract transaction"
            );
            match body {
                Body::ProxySaveState {
                    seqno,
                    session_hash,
                    ..
                } if msg.source.as_ref() == Some(self.chain.wallet.address()) => {
                    self.on_save_state(seqno, session_hash);
                }
                // The source is set by the chain, so only the client contract itself can
                // send this. Its 1-nanoTON notifications cannot pay for the proxy
                // contract's gas: like COCOON, read them whether or not that succeeded.
                Body::ClientProxyRequest { state, payload, .. } => {
                    let Some(source) = msg.source.clone() else {
                        continue;
                    };
                    let mut book = self.book();
                    for c in book.clients.values_mut() {
                        if c.sc == source {
                            if let Some(s) = c.state.as_mut() {
                                s.status = ContractStatus::from_bits(state.state);
                                s.balance = state.balance;
                                s.stake = state.stake;
                                s.tokens_used = state.tokens_used;
                                s.secret_hash = state.secret_hash;
                            } else {
                                c.state = None; // read again at the next settle round
                            }
                        }
                    }
                    if let Some(ClientProxyPayload::Register { nonce }) = payload {
                        book.registrations.insert((source, nonce));
                        drop(book);
                        self.registered.notify_waiters();
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn on_save_state(&self, seqno: i32, session_hash: [u8; 32]) {
        let mut book = self.book();
        let Some(p) = book.pending.take() else { return };
        if p.seqno != seqno {
            book.pending = Some(p);
            return;
        }
        if session_hash != self.session_hash {
            // COCOON aborts here: another process signs with this proxy's key.
            warn!(
                seqno,
                "a save-state with another session hash: is a second instance running with this key?"
            );
            book.pending = Some(p);
            return;
        }
        for (owner, tokens) in p.clients {
            let e = book.committed_clients.entry(owner).or_default();
            *e = (*e).max(tokens);
        }
        for (owner, tokens) in p.workers {
            let e = book.committed_workers.entry(owner).or_default();
            *e = (*e).max(tokens);
        }
        book.anchored_totals = p.totals;
        drop(book);
        self.count(|s| s.anchors += 1);
        debug!(seqno, "ledger anchored on chain");
    }

    /// Sends a save-state when the ledger grew and none is in flight (§5.3).
    async fn anchor(&self) {
        let policy = &self.chain.policy;
        let totals = match self.ledger.grand_totals() {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "cannot read the ledger");
                return;
            }
        };
        let seqno = {
            let mut book = self.book();
            if let Some(p) = &book.pending {
                if p.since.elapsed() < policy.confirm_timeout {
                    return;
                }
                book.pending = None; // lost: anchor again
            }
            let due = book
                .last_anchor
                .is_none_or(|t| t.elapsed() >= policy.anchor_interval);
            if !due || totals == book.anchored_totals {
                return;
            }
            let all = match self.ledger.all_totals() {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "cannot read the ledger");
                    return;
                }
            };
            book.seqno = book.seqno.wrapping_add(1);
            book.last_anchor = Some(Instant::now());
            book.pending = Some(PendingAnchor {
                seqno: book.seqno,
                clients: all.clients.into_iter().collect(),
                workers: all.workers.into_iter().collect(),
                totals,
                since: Instant::now(),
            });
            book.seqno
        };
        let msg = match save_state_message(
            self.contract.address.clone(),
            crate::util::random_query_id(),
            seqno,
            self.session_hash,
        ) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "cannot build a save-state");
                return;
            }
        };
        if let Err(e) = self.chain.wallet.send(vec![msg]).await {
            warn!(error = %e, seqno, "save-state not sent");
            self.book().pending = None;
            self.count(|s| s.failures += 1);
        }
    }

    /// Parties with anchored usage that did not connect since the start (e.g. after a
    /// restart) are settled too: their contracts are derived from their addresses.
    fn adopt_ledger_parties(&self) {
        let mut book = self.book();
        let book = &mut *book;
        for (owner, total) in &book.committed_clients {
            if book.clients.contains_key(owner)
                || self.epoch_tokens(owner, Party::Client, *total) == 0
            {
                continue;
            }
            let sc = self.context.parse_address(owner).and_then(|a| {
                self.context
                    .client_sc(&a, &self.contract.address, &self.public_key)
            });
            match sc {
                Ok(sc) => {
                    book.clients
                        .insert(owner.clone(), KnownClient { sc, state: None });
                }
                Err(e) => warn!(%owner, error = %e, "client contract not derivable"),
            }
        }
        for (owner, total) in &book.committed_workers {
            if book.workers.contains_key(owner)
                || self.epoch_tokens(owner, Party::Worker, *total) == 0
            {
                continue;
            }
            let init = self.context.parse_address(owner).and_then(|a| {
                self.context
                    .worker_init(&a, &self.contract.address, &self.public_key)
            });
            match init {
                Ok(init) => {
                    book.workers.insert(
                        owner.clone(),
                        KnownWorker {
                            init,
                            paid: None,
                            closed: false,
                            exists: false,
                        },
                    );
                }
                Err(e) => warn!(%owner, error = %e, "worker contract not derivable"),
            }
        }
    }

    /// A signed voucher of `kind` for `tokens` on contract `sc`, as the message that
    /// submits it (with `state_init` to deploy the contract if needed).
    fn voucher_message(
        &self,
        kind: Settlement,
        tokens: u64,
        sc: &StdAddr,
        state_init: Option<tycho_types::cell::Cell>,
    ) -> Option<InternalMessage> {
        let voucher = Voucher::new(
            kind.voucher_kind(),
            crate::util::random_query_id(),
            tokens,
            sc.clone(),
        );
        let signed = self.signer.sign(voucher).and_then(|v| v.to_cell());
        match signed {
            Ok(body) => Some(InternalMessage::cocoon(
                sc.clone(),
                OPERATION_VALUE,
                state_init,
                Some(body),
            )),
            Err(e) => {
                warn!(error = %e, ?kind, "cannot sign a voucher");
                None
            }
        }
    }

    /// Reads the contract `sc` again (a client contract for charges and refunds, a
    /// worker contract for payouts) and remembers what it says; an unreadable contract
    /// is left as it was.
    async fn refresh(&self, kind: Settlement, sc: &StdAddr) {
        let Ok(state) = account(self.chain.backend.as_ref(), sc).await else {
            return;
        };
        if kind.is_worker() {
            let Ok(parsed) = data_of(&state, WorkerContractState::from_data) else {
                return;
            };
            for w in self.book().workers.values_mut() {
                if &w.init.address == sc {
                    w.paid = Some(parsed.as_ref().map_or(0, |p| p.tokens));
                    w.closed = parsed
                        .as_ref()
                        .is_some_and(|p| p.status == ContractStatus::Closed);
                    w.exists = parsed.is_some();
                }
            }
        } else {
            let Ok(Some(parsed)) = data_of(&state, ClientContractState::from_data) else {
                return;
            };
            for c in self.book().clients.values_mut() {
                if &c.sc == sc {
                    c.state = Some(parsed.clone());
                }
            }
        }
    }

    /// Charges clients, pays workers and withdraws the commission where due (§5.5).
    async fn settle(&self, force: bool) {
        let mut policy = self.chain.policy.clone();
        if force {
            policy.charge_threshold = 1;
            policy.payout_threshold = 1;
            policy.withdraw_threshold = 1;
        }
        let params = self.context.params().clone();
        let backend = self.chain.backend.clone();
        self.adopt_ledger_parties();
        // Contracts whose state is unknown are read first.
        let (clients, workers): (Vec<StdAddr>, Vec<StdAddr>) = {
            let book = self.book();
            (
                book.clients
                    .values()
                    .filter(|c| c.state.is_none())
                    .map(|c| c.sc.clone())
                    .collect(),
                book.workers
                    .values()
                    .filter(|w| w.paid.is_none())
                    .map(|w| w.init.address.clone())
                    .collect(),
            )
        };
        for sc in clients {
            self.refresh(Settlement::Charge, &sc).await;
        }
        for sc in workers {
            self.refresh(Settlement::Payout, &sc).await;
        }
        // Every party's booked total, only needed when a client is closing.
        let closing = self.book().clients.values().any(|c| {
            c.state
                .as_ref()
                .is_some_and(|s| s.status == ContractStatus::Closing)
        });
        let booked: HashMap<String, u64> = if closing {
            self.ledger
                .all_totals()
                .map(|t| t.clients.into_iter().collect())
                .unwrap_or_default()
        } else {
            HashMap::new()
        };
        let mut due: Vec<(Settlement, StdAddr, InternalMessage)> = Vec::new();
        {
            let book = self.book();
            for (owner, c) in &book.clients {
                let Some(state) = &c.state else { continue };
                if book.busy.contains(&c.sc) {
                    continue;
                }
                let total = book.committed_clients.get(owner).copied().unwrap_or(0);
                let committed = self.epoch_tokens(owner, Party::Client, total);
                let kind = match state.status {
                    // A closing client (§5.5): once all its usage is anchored and nothing
                    // runs, a signed grant-refund charges it and returns the rest at once,
                    // instead of the contract's delayed, stake-capped forced refund.
                    ContractStatus::Closing => {
                        let anchored = booked.get(owner).copied().unwrap_or(0) == total;
                        let idle = !self.running.get().is_some_and(|running| running(owner));
                        if !(anchored && idle && committed >= state.tokens_used) {
                            continue;
                        }
                        Settlement::Refund
                    }
                    ContractStatus::Normal if committed > state.tokens_used => {
                        let worth = u128::from(committed - state.tokens_used)
                            * u128::from(params.price_per_token);
                        if worth < u128::from(policy.charge_threshold) {
                            continue;
                        }
                        Settlement::Charge
                    }
                    _ => continue,
                };
                if let Some(m) = self.voucher_message(kind, committed, &c.sc, None) {
                    due.push((kind, c.sc.clone(), m));
                }
            }
            for (owner, w) in &book.workers {
                let total = book.committed_workers.get(owner).copied().unwrap_or(0);
                let committed = self.epoch_tokens(owner, Party::Worker, total);
                let Some(paid) = w.paid else { continue };
                if book.busy.contains(&w.init.address) || committed <= paid {
                    continue;
                }
                let worth = u128::from(committed - paid) * u128::from(params.worker_fee_per_token);
                if worth < u128::from(policy.payout_threshold) {
                    continue;
                }
                // The StateInit deploys the worker contract on its first payout; it is
                // ignored once the contract exists.
                let init = Some(w.init.state_init.clone());
                if let Some(m) =
                    self.voucher_message(Settlement::Payout, committed, &w.init.address, init)
                {
                    due.push((Settlement::Payout, w.init.address.clone(), m));
                }
            }
        }
        if !due.is_empty() {
            let sent: Vec<(Settlement, StdAddr)> = {
                let mut book = self.book();
                due.iter()
                    .map(|(kind, sc, _)| {
                        book.busy.insert(sc.clone());
                        (*kind, sc.clone())
                    })
                    .collect()
            };
            let result = self
                .chain
                .wallet
                .send(due.into_iter().map(|(_, _, m)| m).collect())
                .await;
            match &result {
                Ok(()) => self.count(|s| {
                    for (kind, _) in &sent {
                        s.sent(*kind);
                    }
                }),
                Err(e) => {
                    warn!(error = %e, "settlement messages failed");
                    self.count(|s| s.failures += 1);
                }
            }
            // Read back what the contracts now say.
            for (kind, sc) in &sent {
                self.refresh(*kind, sc).await;
                self.book().busy.remove(sc);
            }
        }
        // The commission.
        let Ok(state) = account(backend.as_ref(), &self.contract.address).await else {
            return;
        };
        let Ok(Some(contract)) = data_of(&state, ProxyContractState::from_data) else {
            return;
        };
        let earned = contract.balance;
        self.book().contract = Some(contract);
        if earned == 0 || earned < policy.withdraw_threshold {
            return;
        }
        let msg = body_message(
            self.contract.address.clone(),
            PROXY_WITHDRAW_VALUE,
            &Body::ExtProxyPayoutRequest {
                query_id: crate::util::random_query_id(),
                send_excesses_to: self.chain.wallet.address().clone(),
            },
        );
        match msg {
            Ok(m) => match self.chain.wallet.send(vec![m]).await {
                Ok(()) => {
                    self.count(|s| s.withdrawals += 1);
                    info!(
                        amount = %cocoon_ton::units::format_ton(earned),
                        owner = %self.context.format(&self.owner),
                        "commission withdrawn to the proxy owner"
                    );
                }
                Err(e) => {
                    warn!(error = %e, "withdrawal failed");
                    self.count(|s| s.failures += 1);
                }
            },
            Err(e) => warn!(error = %e, "cannot build a withdrawal"),
        }
    }
}

// ------------------------------------------------------------------------ client

/// How long the client waits before it sends the same refund request to an old contract
/// again (the first one may still be on its way: wallet → contract → proxy contract).
const RETIRED_RESEND_AFTER: Duration = Duration::from_secs(30);

/// A client contract under one version of the root parameters: its address depends on
/// them, so a params change gives the client a new contract at every proxy (§5.7).
#[derive(Debug, Clone)]
pub struct ClientContract {
    /// Code, data, StateInit and address.
    pub init: ContractInit,
    /// The derivation context (root parameters) it belongs to.
    pub context: ChainContext,
}

/// A client contract of older root parameters that the client closes itself if the
/// proxy does not (cocoon-protocol.md §5.7, client side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredContract {
    /// The contract.
    pub address: StdAddr,
    /// The `params_version` it was derived under.
    pub params_version: u32,
    /// That version's `proxy_delay_before_close` (seconds).
    pub proxy_delay_before_close: u32,
    /// That version's `client_delay_before_close` (seconds).
    pub client_delay_before_close: u32,
}

impl RetiredContract {
    /// How long the client leaves the proxy to close the contract with a grant-refund
    /// before it starts closing it itself: `0.5 × (proxy_delay − client_delay)`.
    pub fn grace(&self) -> Duration {
        let gap = self
            .proxy_delay_before_close
            .saturating_sub(self.client_delay_before_close);
        Duration::from_millis(u64::from(gap) * 500)
    }
}

/// How the client's fallback close of a retired contract ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetiredOutcome {
    /// The contract was never deployed: nothing to close.
    Missing,
    /// It was already closed when the fallback looked (normally by the proxy's
    /// grant-refund): nothing was sent.
    AlreadyClosed,
    /// It closed after the client sent `requests` `owner_client_request_refund` messages.
    Closed {
        /// Refund requests sent.
        requests: u32,
    },
    /// It reports a state the contracts never use (3): left alone.
    Abandoned,
}

/// The client contracts the client has derived, with the root parameters they belong to.
type UsedContracts = Arc<Mutex<HashMap<StdAddr, RetiredContract>>>;

/// The client's on-chain side (see the module docs).
#[derive(Debug, Clone)]
pub struct ClientChain {
    chain: OnChain,
    watch: RootWatch,
    secret_hash: [u8; 32],
    used: UsedContracts,
}

impl ClientChain {
    /// The client side of `chain` under the root parameters `watch` follows; `secret` is
    /// the short-auth secret it publishes.
    pub fn new(chain: OnChain, watch: RootWatch, secret: &str) -> Self {
        ClientChain {
            chain,
            watch,
            secret_hash: Sha256::digest(secret.as_bytes()).into(),
            used: Arc::default(),
        }
    }

    /// The client's cocoon wallet (its `client_owner_address`).
    pub fn wallet(&self) -> &ChainWallet {
        &self.chain.wallet
    }

    /// The root parameters the client follows.
    pub fn watch(&self) -> &RootWatch {
        &self.watch
    }

    /// What the client deposits at deployment and at each top-up under `params`.
    fn deposit(&self, params: &cocoon_ton::root::CocoonParams) -> u64 {
        let amount = if self.chain.policy.client_deposit > 0 {
            self.chain.policy.client_deposit
        } else {
            params.min_client_stake
        };
        cocoon_ton::settlement::client_top_up_amount(amount, params.price_per_token)
    }

    /// The client contract at the proxy (`proxy_sc`, `proxy_key`) under the current
    /// root parameters.
    pub fn contract(
        &self,
        proxy_sc: &StdAddr,
        proxy_key: &[u8; 32],
    ) -> Result<ClientContract, SettleError> {
        self.contract_in(&self.watch.context(), proxy_sc, proxy_key)
    }

    /// The client contract at the proxy (`proxy_sc`, `proxy_key`) under the root
    /// parameters of `context`. The client remembers it, so that it closes it once the
    /// parameters change (see [`ClientChain::spawn_retired_closer`]).
    pub fn contract_in(
        &self,
        context: &ChainContext,
        proxy_sc: &StdAddr,
        proxy_key: &[u8; 32],
    ) -> Result<ClientContract, SettleError> {
        let init = context
            .client_init(self.chain.wallet.address(), proxy_sc, proxy_key)
            .map_err(|e| SettleError::Contract(e.to_string()))?;
        let params = context.params();
        lock_used(&self.used).insert(
            init.address.clone(),
            RetiredContract {
                address: init.address.clone(),
                params_version: params.params_version,
                proxy_delay_before_close: params.proxy_delay_before_close,
                client_delay_before_close: params.client_delay_before_close,
            },
        );
        Ok(ClientContract {
            init,
            context: context.clone(),
        })
    }

    /// Reads the client contract.
    pub async fn state(&self, sc: &StdAddr) -> Result<Option<ClientContractState>, SettleError> {
        client_state(self.chain.backend.as_ref(), sc).await
    }

    /// Long authorization's on-chain part: deploys and funds the client contract if
    /// needed, then sends `owner_client_register{nonce}` (§2.5), in one wallet batch.
    pub async fn register(&self, contract: &ClientContract, nonce: u64) -> Result<(), SettleError> {
        let me = self.chain.wallet.address().clone();
        let init = &contract.init;
        let mut messages = Vec::new();
        if self.state(&init.address).await?.is_none() {
            let deposit = self.deposit(contract.context.params());
            let top_up = client_top_up_message(
                init.address.clone(),
                crate::util::random_query_id(),
                deposit,
                me.clone(),
            )
            .map_err(chain_err)?;
            info!(
                contract = %contract.context.format(&init.address),
                deposit = %cocoon_ton::units::format_ton(deposit),
                "deploying the client contract"
            );
            messages.push(deploy_message(
                init,
                top_up.value.max(CLIENT_DEPLOY_VALUE),
                top_up.body,
            ));
        }
        messages.push(
            body_message(
                init.address.clone(),
                OPERATION_VALUE,
                &Body::OwnerClientRegister {
                    query_id: crate::util::random_query_id(),
                    nonce,
                    send_excesses_to: me,
                },
            )
            .map_err(chain_err)?,
        );
        self.chain.wallet.send(messages).await
    }

    /// Keeps the client contract usable while the session lives: publishes the secret
    /// hash (so the next connection can use short auth) and tops up once the balance the
    /// proxy may still use falls under half the stake (§5.5), at the prices of the
    /// contract's root parameters. `used` reports the tokens the proxy has counted; the
    /// loop ends when `alive` turns false.
    pub async fn maintain(
        &self,
        contract: &ClientContract,
        used: impl Fn() -> u64 + Send,
        alive: impl Fn() -> bool + Send,
    ) {
        let me = self.chain.wallet.address().clone();
        let sc = contract.init.address.clone();
        let params = contract.context.params();
        let price = params.price_per_token.max(1);
        let deposit = self.deposit(params);
        while alive() {
            match self.state(&sc).await {
                Ok(Some(state)) if state.status == ContractStatus::Normal => {
                    let mut messages = Vec::new();
                    if state.secret_hash != self.secret_hash {
                        if let Ok(m) = body_message(
                            sc.clone(),
                            OPERATION_VALUE,
                            &Body::OwnerClientChangeSecretHash {
                                query_id: crate::util::random_query_id(),
                                secret_hash: self.secret_hash,
                                send_excesses_to: me.clone(),
                            },
                        ) {
                            messages.push(m);
                        }
                    }
                    // tokens_payed − tokens_used < stake_tokens / 2  →  top up.
                    let payed = (state.balance / price).saturating_add(state.tokens_used);
                    let left = payed.saturating_sub(used());
                    if left < state.stake / price / 2 {
                        if let Ok(m) = client_top_up_message(
                            sc.clone(),
                            crate::util::random_query_id(),
                            deposit,
                            me.clone(),
                        ) {
                            info!(
                                amount = %cocoon_ton::units::format_ton(deposit),
                                "topping up the client contract"
                            );
                            messages.push(m);
                        }
                    }
                    if let Err(e) = self.chain.wallet.send(messages).await {
                        warn!(error = %e, "client contract upkeep failed");
                    }
                }
                Ok(_) => {}
                Err(e) => debug!(error = %e, "cannot read the client contract"),
            }
            tokio::time::sleep(self.chain.policy.poll_interval).await;
        }
    }

    /// Takes out the remembered contracts of root parameters older than
    /// `params_version`: they are to be closed.
    pub fn take_retired(&self, params_version: u32) -> Vec<RetiredContract> {
        take_retired(&self.used, params_version)
    }

    /// The client's fallback close of an old contract (§5.7): after
    /// [`RetiredContract::grace`], a contract still in normal state gets
    /// `owner_client_request_refund` (it starts closing and refunds what is above the
    /// stake); once it is closing and the chain's time is past its `unlock_ts`, the
    /// same request again closes it and the proxy contract pays back the rest. Returns
    /// once the contract is closed or does not exist. Normally the proxy's grant-refund
    /// has closed it before, and nothing is sent.
    pub async fn close_retired(&self, contract: RetiredContract) -> RetiredOutcome {
        close_retired(&self.chain, &self.watch.context(), contract).await
    }

    /// Closes the client's old contracts whenever the root parameters change (see
    /// [`ClientChain::close_retired`]). The task ends when every clone of the
    /// [`RootWatch`] is gone.
    pub fn spawn_retired_closer(&self) -> tokio::task::JoinHandle<()> {
        // The task holds a receiver, not the watch, so the watch can go away.
        let mut rx = self.watch.subscribe();
        let chain = self.chain.clone();
        let used = self.used.clone();
        tokio::spawn(async move {
            loop {
                let context = rx.borrow_and_update().context.clone();
                let version = context.params().params_version;
                for contract in take_retired(&used, version) {
                    info!(
                        contract = %context.format(&contract.address),
                        from = contract.params_version,
                        to = version,
                        grace_s = contract.grace().as_secs_f64(),
                        "root parameters changed: the old client contract is closed after a grace period unless the proxy closes it"
                    );
                    let chain = chain.clone();
                    let context = context.clone();
                    tokio::spawn(async move {
                        close_retired(&chain, &context, contract).await;
                    });
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

fn lock_used(
    used: &Mutex<HashMap<StdAddr, RetiredContract>>,
) -> std::sync::MutexGuard<'_, HashMap<StdAddr, RetiredContract>> {
    used.lock().unwrap_or_else(|e| e.into_inner())
}

fn take_retired(used: &UsedContracts, params_version: u32) -> Vec<RetiredContract> {
    let mut used = lock_used(used);
    let old: Vec<StdAddr> = used
        .values()
        .filter(|c| c.params_version < params_version)
        .map(|c| c.address.clone())
        .collect();
    old.into_iter().filter_map(|a| used.remove(&a)).collect()
}

async fn client_state(
    backend: &dyn ChainBackend,
    sc: &StdAddr,
) -> Result<Option<ClientContractState>, SettleError> {
    let st = account(backend, sc).await?;
    data_of(&st, ClientContractState::from_data)
}

/// See [`ClientChain::close_retired`]; `context` only formats addresses for the logs.
async fn close_retired(
    chain: &OnChain,
    context: &ChainContext,
    contract: RetiredContract,
) -> RetiredOutcome {
    let backend = chain.backend.as_ref();
    let me = chain.wallet.address().clone();
    let name = context.format(&contract.address);
    tokio::time::sleep(contract.grace()).await;
    let mut requests = 0u32;
    // The phase last requested (the state it was sent in) and when.
    let mut last: Option<(ContractStatus, Instant)> = None;
    loop {
        let state = match client_state(backend, &contract.address).await {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, contract = %name, "cannot read the old client contract");
                tokio::time::sleep(chain.policy.poll_interval).await;
                continue;
            }
        };
        let Some(state) = state else {
            debug!(contract = %name, "the old client contract does not exist: nothing to close");
            return RetiredOutcome::Missing;
        };
        let due = match state.status {
            ContractStatus::Closed if requests == 0 => {
                info!(contract = %name, "the old client contract was closed by the proxy: no fallback needed");
                return RetiredOutcome::AlreadyClosed;
            }
            ContractStatus::Closed => {
                info!(contract = %name, requests, "the old client contract is closed");
                return RetiredOutcome::Closed { requests };
            }
            ContractStatus::Unknown => {
                warn!(contract = %name, "the old client contract is in an unknown state: left alone");
                return RetiredOutcome::Abandoned;
            }
            ContractStatus::Normal => true,
            // The contract accepts the second request once its time is past unlock_ts.
            ContractStatus::Closing => match backend.now().await {
                Ok(now) => now > state.unlock_ts,
                Err(e) => {
                    debug!(error = %e, "cannot read the chain's time");
                    false
                }
            },
        };
        let repeated = last.is_some_and(|(status, at)| {
            status == state.status && at.elapsed() < RETIRED_RESEND_AFTER
        });
        if due && !repeated {
            let phase = if state.status == ContractStatus::Normal {
                "start closing"
            } else {
                "close"
            };
            info!(contract = %name, phase, "the proxy did not close the old client contract: requesting a refund");
            let sent = body_message(
                contract.address.clone(),
                OPERATION_VALUE,
                &Body::OwnerClientRequestRefund {
                    query_id: crate::util::random_query_id(),
                    send_excesses_to: me.clone(),
                },
            )
            .map_err(chain_err);
            let sent = match sent {
                Ok(m) => chain.wallet.send(vec![m]).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => requests += 1,
                Err(e) => warn!(error = %e, contract = %name, "refund request failed"),
            }
            last = Some((state.status, Instant::now()));
            // Read the result at once (the chain may have run it already).
            continue;
        }
        tokio::time::sleep(chain.policy.poll_interval).await;
    }
}
