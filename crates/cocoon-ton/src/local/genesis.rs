//! The initial state of a [`LocalChain`](super::LocalChain).

use std::collections::{BTreeMap, HashMap};

use tycho_types::cell::Cell;
use tycho_types::models::{AccountState as TlbAccountState, StateInit, StdAddr};

use super::{codes, direct_account, Clock, Inner, Ledger, LocalChainError, LocalResult};
use crate::contracts::{cocoon_wallet_contract, ContractInit};
use crate::root::{CocoonParams, RootConfig, MULTIPLIER_ONE, ONE_TON};

/// The root contract deployed at genesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenesisRoot {
    /// Its initial state (owner, hashes, registered proxies, params). Contract
    /// codes absent from the params are filled with ours ([`codes`]).
    pub config: RootConfig,
    /// Its initial balance in nanoTON.
    pub balance: u64,
}

impl GenesisRoot {
    /// The devnet defaults (the same as the contract tests' defaults):
    /// struct version 5 (key-manager and verified-key cells, no key manager set), params version 1, unique id 13, test network,
    /// 1000 nanoTON per token for clients and 600 for workers, multipliers 1.0,
    /// close delays 600 s (proxy) and 300 s (client), minimum stakes 1 TON,
    /// our proxy/worker/client codes, no hashes, no proxies; 10 TON balance.
    pub fn devnet(owner: StdAddr) -> crate::Result<Self> {
        let params = codes::with_our_codes(CocoonParams {
            struct_version: 5,
            params_version: 1,
            unique_id: 13,
            is_test: true,
            price_per_token: 1000,
            worker_fee_per_token: 600,
            prompt_tokens_price_multiplier: MULTIPLIER_ONE,
            cached_tokens_price_multiplier: MULTIPLIER_ONE,
            completion_tokens_price_multiplier: MULTIPLIER_ONE,
            reasoning_tokens_price_multiplier: MULTIPLIER_ONE,
            proxy_delay_before_close: 600,
            client_delay_before_close: 300,
            min_proxy_stake: ONE_TON,
            min_client_stake: ONE_TON,
            proxy_sc_code: None,
            worker_sc_code: None,
            client_sc_code: None,
        })?;
        Ok(GenesisRoot {
            config: RootConfig {
                owner,
                version: 1,
                proxy_hashes: Vec::new(),
                registered_proxies: Vec::new(),
                last_proxy_seqno: 0,
                worker_hashes: Vec::new(),
                model_hashes: Vec::new(),
                params,
                key_manager: Default::default(),
                verified_keys: Default::default(),
            },
            balance: 10 * ONE_TON,
        })
    }

    /// Code (ours), data, StateInit and address of the root as it will be deployed.
    pub fn contract(&self) -> crate::Result<ContractInit> {
        let mut cfg = self.config.clone();
        cfg.params = codes::with_our_codes(cfg.params)?;
        ContractInit::new(codes::root_code()?, cfg.to_data_cell()?)
    }
}

/// A cocoon wallet deployed (active) at genesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenesisWallet {
    /// The runner key's public key.
    pub public_key: [u8; 32],
    /// The owner address (may send internal commands).
    pub owner: StdAddr,
    /// Initial balance in nanoTON (the wallet refuses externals below 2 TON).
    pub balance: u64,
    /// Wallet code; `None` = ours ([`codes::wallet_code`]).
    pub code: Option<Cell>,
}

impl GenesisWallet {
    /// A wallet with our code.
    pub fn new(public_key: [u8; 32], owner: StdAddr, balance: u64) -> Self {
        GenesisWallet {
            public_key,
            owner,
            balance,
            code: None,
        }
    }

    /// Code, data, StateInit and address of the wallet.
    pub fn contract(&self) -> crate::Result<ContractInit> {
        let code = match &self.code {
            Some(c) => c.clone(),
            None => codes::wallet_code()?,
        };
        cocoon_wallet_contract(&code, &self.public_key, &self.owner)
    }
}

/// Everything a fresh chain starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenesisConfig {
    /// The root contract, if any.
    pub root: Option<GenesisRoot>,
    /// Cocoon wallets deployed at genesis.
    pub wallets: Vec<GenesisWallet>,
    /// Plain accounts (no code) created with a balance, e.g. owners' addresses.
    pub funded: Vec<(StdAddr, u64)>,
    /// Where the time comes from.
    pub clock: Clock,
    /// The config dictionary; `None` = TON mainnet's ([`super::config`]).
    pub config: Option<Cell>,
}

impl Default for GenesisConfig {
    /// Nothing deployed, the system clock, TON mainnet's config.
    fn default() -> Self {
        GenesisConfig {
            root: None,
            wallets: Vec::new(),
            funded: Vec::new(),
            clock: Clock::SYSTEM,
            config: None,
        }
    }
}

pub(super) fn build(g: GenesisConfig) -> LocalResult<Inner> {
    let now = g.clock.read();
    let config_cell = match g.config {
        Some(c) => c,
        None => super::config::ton_mainnet_config()?,
    };
    let config = super::parse_config(&config_cell, now)?;
    let mut accounts = BTreeMap::new();
    let mut minted: u128 = 0;
    let mut put = |address: StdAddr, balance: u64, state: TlbAccountState| -> LocalResult<()> {
        if accounts.contains_key(&address) {
            return Err(LocalChainError::Config(format!(
                "genesis lists {} twice",
                crate::address::to_raw(&address)
            )));
        }
        let sa = direct_account(&address, balance, state, now)?;
        accounts.insert(address, sa);
        minted += u128::from(balance);
        Ok(())
    };
    let active = |c: &ContractInit| {
        TlbAccountState::Active(StateInit {
            split_depth: None,
            special: None,
            code: Some(c.code.clone()),
            data: Some(c.data.clone()),
            libraries: Default::default(),
        })
    };
    let mut root = None;
    if let Some(r) = &g.root {
        let c = r.contract()?;
        put(c.address.clone(), r.balance, active(&c))?;
        root = Some(c.address);
    }
    for w in &g.wallets {
        let c = w.contract()?;
        put(c.address.clone(), w.balance, active(&c))?;
    }
    for (addr, balance) in &g.funded {
        put(addr.clone(), *balance, TlbAccountState::Uninit)?;
    }
    Ok(Inner {
        config_cell,
        config,
        accounts,
        log: Vec::new(),
        by_account: HashMap::new(),
        lt: 1_000,
        clock: g.clock,
        last_utime: now,
        ledger: Ledger {
            minted,
            fees: 0,
            burned: 0,
        },
        root,
        dir: None,
        persisted_txs: 0,
        max_transactions: super::DEFAULT_MAX_TRANSACTIONS,
    })
}
