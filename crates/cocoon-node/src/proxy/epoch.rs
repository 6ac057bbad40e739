//! Epochs: what the proxy derives from the root parameters it runs on, and the rotation to
//! newer ones (cocoon-protocol.md §5.7).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};
use tycho_types::models::StdAddr;

use super::Proxy;
use crate::chain::ChainContext;
use crate::ledger::Party;
use crate::pricing::Prices;

/// What the proxy derives from the root parameters it runs on. A root parameter change
/// (§5.7) replaces it: new prices, a new proxy contract, new client and worker contracts.
pub(super) struct Epoch {
    pub(super) chain: ChainContext,
    pub(super) prices: Prices,
    /// The proxy contract and its text form.
    pub(super) sc: StdAddr,
    pub(super) sc_text: String,
    pub(super) settlement: Option<Arc<crate::proxy::settlement::ProxyChain>>,
}

impl Epoch {
    /// A party's tokens on its contract of this epoch, from its cumulative ledger total.
    pub(super) fn tokens(&self, owner: &str, party: Party, total: u64) -> u64 {
        match &self.settlement {
            Some(chain) => chain.epoch_tokens(owner, party, total),
            None => total,
        }
    }
}

/// Why a rotation to newer root parameters failed (the proxy stays in rotation, refusing
/// requests, and tries again).
#[derive(Debug, thiserror::Error)]
#[error("starting the contracts of params_version {to}: {source}")]
pub struct RotationError {
    /// The `params_version` the proxy was moving to.
    pub to: u32,
    /// What failed on chain.
    #[source]
    pub source: crate::chain::SettleError,
}

impl Proxy {
    /// Switches to newer root parameters (cocoon-protocol.md §5.7): refuses new requests
    /// and connections, lets running requests finish (up to the policy's drain timeout,
    /// then closes the connections), begins the new epoch in the ledger and deploys the
    /// new proxy contract, closes every connection so that clients and workers reconnect
    /// to their new contracts, and closes the old contracts in the background. Does
    /// nothing in fake-TON mode or for parameters that are not newer. On failure the
    /// proxy stays in rotation (refusing requests) and the call may be repeated.
    pub async fn rotate(&self, view: &crate::chain::ChainView) -> Result<(), RotationError> {
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
            .map_err(|source| RotationError { to, source })?;
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
        self.shared.vouchers.clear();
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
    pub(super) fn rotated(
        &self,
    ) -> impl std::future::Future<Output = ()> + std::marker::Send + 'static {
        let mut rx = self.shared.rotations.subscribe();
        async move {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
