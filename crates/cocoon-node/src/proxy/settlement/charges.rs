//! Charges, refunds, payouts and the commission (§5.5): what is due to and from every
//! party under the policy's thresholds, sent as signed vouchers through the wallet.

use std::collections::HashMap;

use cocoon_ton::contracts::{
    ClientContractState, ContractStatus, ProxyContractState, WorkerContractState,
};
use cocoon_ton::messages::Body;
use cocoon_ton::settlement::{body_message, OPERATION_VALUE, PROXY_WITHDRAW_VALUE};
use cocoon_ton::voucher::Voucher;
use cocoon_ton::wallet::InternalMessage;
use tracing::{info, warn};
use tycho_types::models::StdAddr;

use super::{KnownClient, KnownWorker, ProxyChain, Settlement};
use crate::chain::wallet::{account, data_of};
use crate::ledger::Party;

impl ProxyChain {
    /// Parties with anchored usage that did not connect since the start (e.g. after a
    /// restart) are settled too: their contracts are derived from their addresses.
    pub(super) fn adopt_ledger_parties(&self) {
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
    pub(super) fn voucher_message(
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
    pub(super) async fn refresh(&self, kind: Settlement, sc: &StdAddr) {
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
    pub(super) async fn settle(&self, force: bool) {
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
