//! The proxy's settlement on chain (cocoon-protocol.md §5.3, §5.5, §5.7): deploys its
//! contract, anchors its ledger with `proxy_save_state` so that vouchers only ever cover
//! anchored usage, watches its contract for client registrations (long auth) and state
//! reports, charges clients, pays workers, withdraws its commission when the thresholds
//! are reached, and closes the contracts of past epochs.
//!
//! Workers need nothing on chain to be paid: the proxy's payout deploys their contract if
//! needed and the worker owner receives its fee directly.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cocoon_ton::chain::TxFollower;
use cocoon_ton::contracts::{ClientContractState, ContractInit, ProxyContractState};
use cocoon_ton::settlement::{deploy_message, PROXY_DEPLOY_VALUE};
use cocoon_ton::voucher::{VoucherKind, VoucherSigner};
use ed25519_dalek::SigningKey;
use tracing::{debug, info};
use tycho_types::models::StdAddr;

use super::billing::Reservations;
use crate::chain::wallet::{account, chain_err, ChainWallet, OnChain, SettleError};
use crate::chain::ChainContext;
use crate::ledger::{EpochStarts, Ledger, Party};

mod anchor;
mod charges;
mod close;
mod parties;

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
    /// Tokens reserved by running requests per client (the proxy's, shared with it): a
    /// closing client is refunded only once nothing of it runs.
    reservations: Arc<Reservations>,
    /// Every party's ledger total when this epoch began (its contracts start at 0).
    starts: EpochStarts,
    /// Set when a newer epoch began: every party's total at the cut. The epoch's
    /// contracts are then closed out (§5.7).
    end: std::sync::OnceLock<EpochStarts>,
}

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
        let reservations = Arc::new(Reservations::default());
        Self::begin(chain, context, ledger, owner, key, reservations).await
    }

    /// [`ProxyChain::start`] with the proxy's reservations (shared by its epochs).
    async fn begin(
        chain: OnChain,
        context: ChainContext,
        ledger: Arc<Ledger>,
        owner: StdAddr,
        key: &SigningKey,
        reservations: Arc<Reservations>,
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
        let proxy = Self::open(chain, context, ledger, owner, key, starts, reservations).await?;
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
        reservations: Arc<Reservations>,
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
            reservations,
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

    /// The proxy's reservations, shared by every epoch it starts from this one.
    pub fn reservations(&self) -> &Arc<Reservations> {
        &self.reservations
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
}
