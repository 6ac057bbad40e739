//! Clients and workers as the proxy contract's chain shows them: what each has committed,
//! a client's contract and balance when it connects, registrations for long auth.

use std::time::Duration;

use cocoon_ton::contracts::{ClientContractState, ContractStatus};
use tycho_types::models::StdAddr;

use super::{KnownClient, KnownWorker, ProxyChain};
use crate::chain::wallet::{account, data_of, SettleError};
use crate::ledger::Party;

impl ProxyChain {
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
}
