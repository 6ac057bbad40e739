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
use cocoon_ton::contracts::{
    ClientContractState, ContractInit, ContractStatus, ProxyContractState, WorkerContractState,
};
use cocoon_ton::messages::{Body, ClientProxyPayload};
use cocoon_ton::settlement::{
    body_message, deploy_message, save_state_message, OPERATION_VALUE, PROXY_DEPLOY_VALUE,
    PROXY_WITHDRAW_VALUE,
};
use cocoon_ton::voucher::{Voucher, VoucherKind, VoucherSigner};
use cocoon_ton::wallet::InternalMessage;
use ed25519_dalek::SigningKey;
use tracing::{debug, info, warn};
use tycho_types::models::StdAddr;

use crate::chain::ChainContext;
use crate::ledger::{EpochStarts, Ledger, Party};

use super::billing::Reservations;
use crate::chain::wallet::{account, chain_err, data_of, ChainWallet, OnChain, SettleError};

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
        let next = Self::begin(
            self.chain.clone(),
            context,
            self.ledger.clone(),
            self.owner.clone(),
            key,
            self.reservations.clone(),
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
                // Requests run under the current epoch only.
                Arc::default(),
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
                        let idle = !self.reservations.has_running(owner);
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
