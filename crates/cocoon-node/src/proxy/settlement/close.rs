//! The end of an epoch (§5.7): the next epoch's start, and the close-out of this one's
//! contracts, resumed after a restart.

use std::sync::Arc;

use cocoon_ton::contracts::{ContractStatus, ProxyContractState};
use ed25519_dalek::SigningKey;
use tracing::{debug, info, warn};
use tycho_types::models::StdAddr;

use super::{ProxyChain, Settlement};
use crate::chain::wallet::{account, chain_err, data_of, SettleError};
use crate::chain::ChainContext;
use crate::ledger::{EpochStarts, Party};

impl ProxyChain {
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
    pub(super) async fn close_round(&self) -> Result<bool, SettleError> {
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
    pub(super) fn epoch_closed(&self) -> Result<(), SettleError> {
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
}
