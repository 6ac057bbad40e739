//! The root contract as the roles see it ([`ChainView`]), the chain they settle on
//! ([`SettlementChain`]), and the root followed over time ([`RootWatch`], §5.7).

use ed25519_dalek::SigningKey;
use tycho_types::models::StdAddr;

use super::{ChainContext, ChainError};
use crate::pricing::Prices;

/// A root contract as the roles see it: derivation context and prices, and the chain
/// to settle on (None: fake-TON, nothing is settled).
#[derive(Debug, Clone)]
pub struct ChainView {
    /// Contract derivation.
    pub context: ChainContext,
    /// The root's prices.
    pub prices: Prices,
    /// Where and how the roles settle on chain.
    pub settlement: Option<SettlementChain>,
    /// The model hashes the root allows (`sha256` of a full `NAME@COMMIT:HASH` id),
    /// sorted, as read with this view; empty when the root lists none (and in plain
    /// fake-TON). [`RootWatch::model_hashes`] reads them fresh from a chain.
    pub model_hashes: Vec<[u8; 32]>,
}

impl ChainView {
    /// Whether the root allows the model with this full id (`NAME@COMMIT:HASH`): its
    /// SHA-256 is one of [`ChainView::model_hashes`] (cocoon-protocol.md §2.5, §2.10).
    pub fn allows_model(&self, model: &str) -> bool {
        model_allowed(&self.model_hashes, model)
    }
}

/// Whether `sha256(model)` is one of the sorted `hashes`.
pub fn model_allowed(hashes: &[[u8; 32]], model: &str) -> bool {
    use sha2::Digest;
    let hash: [u8; 32] = sha2::Sha256::digest(model.as_bytes()).into();
    hashes.binary_search(&hash).is_ok()
}

/// The chain the roles settle on, with the cocoon wallet code and the policy.
#[derive(Clone)]
pub struct SettlementChain {
    /// The chain.
    pub backend: std::sync::Arc<dyn cocoon_ton::chain::ChainBackend>,
    /// Code of the roles' cocoon wallets (ours on the devnet; COCOON's official code on
    /// a real network).
    pub wallet_code: tycho_types::cell::Cell,
    /// Thresholds and intervals.
    pub policy: crate::chain::wallet::SettlementPolicy,
}

impl std::fmt::Debug for SettlementChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettlementChain")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl SettlementChain {
    /// Opens the cocoon wallet of `key` owned by `owner` on this chain.
    pub async fn open_wallet(
        &self,
        key: SigningKey,
        owner: StdAddr,
    ) -> Result<crate::chain::wallet::OnChain, crate::chain::wallet::SettleError> {
        crate::chain::wallet::OnChain::open(
            self.backend.clone(),
            key,
            owner,
            &self.wallet_code,
            self.policy.clone(),
        )
        .await
    }
}

/// The root contract as it changes over time (cocoon-protocol.md §5.7). Roles read the
/// current view whenever they (re)connect; when the root's `params_version` grows (new
/// prices, delays or contract codes), every per-party contract address changes, so the
/// proxy rotates its contracts and clients and workers reconnect under the new view.
///
/// Cheap to clone; all clones share the view. In fake-TON mode the view never changes.
#[derive(Clone)]
pub struct RootWatch {
    tx: std::sync::Arc<tokio::sync::watch::Sender<ChainView>>,
}

impl std::fmt::Debug for RootWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootWatch")
            .field("params_version", &self.params_version())
            .finish()
    }
}

impl RootWatch {
    /// Starts from `view`.
    pub fn new(view: ChainView) -> Self {
        RootWatch {
            tx: std::sync::Arc::new(tokio::sync::watch::Sender::new(view)),
        }
    }

    /// The view now.
    pub fn current(&self) -> ChainView {
        self.tx.borrow().clone()
    }

    /// The derivation context now.
    pub fn context(&self) -> ChainContext {
        self.tx.borrow().context.clone()
    }

    /// The root's `params_version` now.
    pub fn params_version(&self) -> u32 {
        self.tx.borrow().context.params().params_version
    }

    /// A receiver that wakes up on every adopted change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<ChainView> {
        self.tx.subscribe()
    }

    /// Adopts `view` if its `params_version` is newer than the current one (tests and
    /// callers that read the root themselves). Returns whether it was adopted.
    pub fn offer(&self, view: ChainView) -> bool {
        self.tx.send_if_modified(|current| {
            if view.context.params().params_version > current.context.params().params_version {
                *current = view;
                true
            } else {
                false
            }
        })
    }

    /// Reads the root contract now and adopts its parameters if their version grew.
    /// Returns whether the view changed; always false without a chain (fake-TON).
    pub async fn refresh(&self) -> Result<bool, ChainError> {
        let current = self.current();
        let Some(settlement) = current.settlement.clone() else {
            return Ok(false);
        };
        let cfg = cocoon_ton::chain::read_root_config(
            settlement.backend.as_ref(),
            current.context.root(),
        )
        .await
        .map_err(|e| ChainError::Ton(format!("reading the root contract: {e}")))?;
        let known = current.context.params().params_version;
        let found = cfg.params.params_version;
        if found < known {
            return Err(ChainError::Ton(format!(
                "the root's params_version went back from {known} to {found}"
            )));
        }
        if found == known {
            return Ok(false);
        }
        if cfg.params.is_test != current.context.is_test() {
            return Err(ChainError::Ton(format!(
                "the root's is_test changed to {}",
                cfg.params.is_test
            )));
        }
        let mut view = ChainContext::from_params(
            current.context.root().clone(),
            cfg.params,
            current.context.is_testnet(),
        )?;
        view.settlement = Some(settlement);
        view.model_hashes = cfg.model_hashes;
        tracing::info!(
            from = known,
            to = found,
            price_per_token = view.prices.price_per_token,
            worker_fee_per_token = view.prices.worker_fee_per_token,
            "root parameters changed"
        );
        Ok(self.offer(view))
    }

    /// The model hashes the root allows now: read from the root contract when the roles
    /// run on a chain (they change with the root's `version`, which a view does not
    /// follow: only a new `params_version` replaces it), else those of the current view
    /// (a fake-TON root never changes).
    pub async fn model_hashes(&self) -> Result<Vec<[u8; 32]>, ChainError> {
        let current = self.current();
        let Some(settlement) = current.settlement.as_ref() else {
            return Ok(current.model_hashes);
        };
        let cfg = cocoon_ton::chain::read_root_config(
            settlement.backend.as_ref(),
            current.context.root(),
        )
        .await
        .map_err(|e| ChainError::Ton(format!("reading the root contract: {e}")))?;
        Ok(cfg.model_hashes)
    }

    /// Polls the root every `interval` while any clone of this watch lives (COCOON polls
    /// every 30–60 s).
    pub fn spawn_polling(&self, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let weak = std::sync::Arc::downgrade(&self.tx);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(tx) = weak.upgrade() else { return };
                let watch = RootWatch { tx };
                if let Err(e) = watch.refresh().await {
                    tracing::warn!(error = %e, "cannot read the root contract");
                }
            }
        })
    }
}
