//! The client's settlement on chain (cocoon-protocol.md §2.5, §5.6, §5.7): deploys and
//! funds its client contract, registers with the proxy's nonce, publishes its secret hash
//! (short auth next time), tops up before the proxy runs out of balance for it, and closes
//! its old client contracts itself when the root parameters change and the proxy does not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cocoon_ton::chain::ChainBackend;
use cocoon_ton::contracts::{ClientContractState, ContractInit, ContractStatus};
use cocoon_ton::messages::Body;
use cocoon_ton::settlement::{
    body_message, client_top_up_message, deploy_message, CLIENT_DEPLOY_VALUE, OPERATION_VALUE,
};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};
use tycho_types::models::StdAddr;

use crate::chain::{ChainContext, RootWatch};

use crate::chain::wallet::{account, chain_err, data_of, ChainWallet, OnChain, SettleError};

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
