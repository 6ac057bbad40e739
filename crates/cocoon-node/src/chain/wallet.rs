//! A role's cocoon wallet on a chain: the connection to the chain ([`OnChain`]), the wallet
//! that queues internal messages and sends them in signed batches, waiting until each
//! batch is on chain ([`ChainWallet`]), the settlement policy, and the errors of every
//! settlement step.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cocoon_ton::chain::{AccountState, ChainBackend, TxFollower};
use cocoon_ton::contracts::CocoonWalletState;
use cocoon_ton::outbox::{Blocked, OutboxId, Poll, WalletOutbox};
use cocoon_ton::root::ONE_TON;
use cocoon_ton::wallet::{CocoonWallet, InternalMessage};
use ed25519_dalek::SigningKey;
use tracing::{debug, warn};
use tycho_types::models::StdAddr;

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

pub(crate) fn chain_err(e: impl std::fmt::Display) -> SettleError {
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
pub(crate) async fn account(
    backend: &dyn ChainBackend,
    a: &StdAddr,
) -> Result<AccountState, SettleError> {
    backend.account_state(a).await.map_err(chain_err)
}

pub(crate) fn data_of<T>(
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
    results: HashMap<OutboxId, Result<(), SettleError>>,
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
                        if let Some(Err(e)) = q.results.remove(id) {
                            outcome = Err(e);
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
        let refused = |reason: String| SettleError::Wallet {
            address: self.text.clone(),
            reason,
        };
        let fail_all = |q: &mut WalletQueue, reason: String| {
            let error = refused(reason);
            for id in q.outbox.abort_all() {
                q.results.insert(id, Err(error.clone()));
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
                    let error = refused(reason);
                    for id in q.outbox.abort_in_flight() {
                        q.results.insert(id, Err(error.clone()));
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
