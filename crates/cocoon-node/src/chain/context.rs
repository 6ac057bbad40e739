//! Contract derivation under one set of root parameters ([`ChainContext`]) and the
//! canonical owner address ([`Owner`]).

use cocoon_ton::root::CocoonParams;
use tycho_types::models::StdAddr;

use super::{ton, ChainError, ChainView};
use crate::pricing::Prices;

/// A party's owner: a TON address in the canonical text form the roles agree on (the
/// ledger's key). Made by [`ChainContext::owner`] from an address that parsed, so two
/// spellings of one address are one owner, and text a peer sent is never taken as one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(String);

impl Owner {
    /// The owner `address` on mainnet or testnet (user-friendly, non-bounceable).
    pub fn of(address: &StdAddr, testnet: bool) -> Owner {
        Owner(cocoon_ton::address::to_friendly(address, testnet))
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Owner {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Owner> for String {
    fn from(owner: Owner) -> String {
        owner.0
    }
}

/// The root parameters and address the roles derive contracts from.
#[derive(Debug, Clone)]
pub struct ChainContext {
    root: StdAddr,
    params: CocoonParams,
    testnet: bool,
}

impl ChainContext {
    /// The context of a root contract read through any chain backend (the embedded TVM
    /// chain, or a real network), with the prices it sets.
    pub async fn from_chain(
        chain: &dyn cocoon_ton::chain::ChainBackend,
        root: &StdAddr,
        testnet: bool,
    ) -> Result<ChainView, ChainError> {
        let cfg = cocoon_ton::chain::read_root_config(chain, root)
            .await
            .map_err(|e| ChainError::Ton(format!("reading the root contract: {e}")))?;
        let mut view = Self::from_params(root.clone(), cfg.params, testnet)?;
        view.model_hashes = cfg.model_hashes;
        Ok(view)
    }

    /// The context of root `root` with `params` (which must carry the contract codes).
    pub fn from_params(
        root: StdAddr,
        params: CocoonParams,
        testnet: bool,
    ) -> Result<ChainView, ChainError> {
        if params.proxy_sc_code.is_none()
            || params.worker_sc_code.is_none()
            || params.client_sc_code.is_none()
        {
            return Err(ChainError::Ton(
                "the root parameters lack contract codes".into(),
            ));
        }
        let prices = Prices {
            price_per_token: params.price_per_token,
            worker_fee_per_token: params.worker_fee_per_token,
            multipliers: crate::pricing::Multipliers {
                prompt: params.prompt_tokens_price_multiplier,
                cached: params.cached_tokens_price_multiplier,
                completion: params.completion_tokens_price_multiplier,
                reasoning: params.reasoning_tokens_price_multiplier,
            },
        };
        Ok(ChainView {
            context: ChainContext {
                root,
                params,
                testnet,
            },
            prices,
            settlement: None,
            model_hashes: Vec::new(),
        })
    }

    /// Whether the root is a test deployment (must match every role's `is_test`).
    pub fn is_test(&self) -> bool {
        self.params.is_test
    }

    /// Fake-TON: a fixed root address, root parameters from `prices`, and our compiled
    /// contract codes.
    pub fn fake(prices: &Prices, is_test: bool) -> Result<Self, ChainError> {
        let m = prices.multipliers;
        let params = cocoon_ton::local::codes::with_our_codes(CocoonParams {
            struct_version: 3,
            is_test,
            price_per_token: prices.price_per_token,
            worker_fee_per_token: prices.worker_fee_per_token,
            prompt_tokens_price_multiplier: m.prompt,
            cached_tokens_price_multiplier: m.cached,
            completion_tokens_price_multiplier: m.completion,
            reasoning_tokens_price_multiplier: m.reasoning,
            ..CocoonParams::default()
        })
        .map_err(ton)?;
        Ok(ChainContext {
            root: StdAddr::new(0, tycho_types::cell::HashBytes([0x0c; 32])),
            params,
            testnet: is_test,
        })
    }

    /// Whether addresses are written for the test network.
    pub fn is_testnet(&self) -> bool {
        self.testnet
    }

    /// The root parameters (prices, delays, stakes, contract codes).
    pub fn params(&self) -> &CocoonParams {
        &self.params
    }

    /// The root parameters with every contract code, as a BOC (what the proxy's ledger
    /// keeps per epoch to close its contracts later).
    pub fn params_boc(&self) -> Result<Vec<u8>, ChainError> {
        let cell = self
            .params
            .to_cell(cocoon_ton::root::CodeMask::ROOT)
            .map_err(ton)?;
        Ok(cocoon_ton::cells::to_boc(&cell))
    }

    /// The same root with the parameters of [`ChainContext::params_boc`] (an older epoch).
    pub fn with_params_boc(&self, boc: &[u8]) -> Result<ChainContext, ChainError> {
        let cell = cocoon_ton::cells::from_boc(boc).map_err(ton)?;
        let params = CocoonParams::from_cell(&cell).map_err(ton)?;
        Ok(ChainContext::from_params(self.root.clone(), params, self.testnet)?.context)
    }

    /// The root contract address.
    pub fn root(&self) -> &StdAddr {
        &self.root
    }

    /// Code, data and StateInit of the proxy contract of (`owner`, `public_key`).
    pub fn proxy_init(
        &self,
        owner: &StdAddr,
        public_key: &[u8; 32],
    ) -> Result<cocoon_ton::contracts::ContractInit, ChainError> {
        cocoon_ton::contracts::proxy_contract(&self.params, &self.root, owner, public_key)
            .map_err(ton)
    }

    /// Code, data and StateInit of the client contract of `client` at `proxy_sc`.
    pub fn client_init(
        &self,
        client: &StdAddr,
        proxy_sc: &StdAddr,
        proxy_key: &[u8; 32],
    ) -> Result<cocoon_ton::contracts::ContractInit, ChainError> {
        cocoon_ton::contracts::client_contract(&self.params, client, proxy_sc, proxy_key)
            .map_err(ton)
    }

    /// Code, data and StateInit of the worker contract of `worker` at `proxy_sc`.
    pub fn worker_init(
        &self,
        worker: &StdAddr,
        proxy_sc: &StdAddr,
        proxy_key: &[u8; 32],
    ) -> Result<cocoon_ton::contracts::ContractInit, ChainError> {
        cocoon_ton::contracts::worker_contract(&self.params, worker, proxy_sc, proxy_key)
            .map_err(ton)
    }

    /// Parses a TON address (raw `0:…` or user-friendly).
    pub fn parse_address(&self, s: &str) -> Result<StdAddr, ChainError> {
        cocoon_ton::address::parse(s)
            .map(|(a, _)| a)
            .map_err(|e| ChainError::Address {
                input: s.to_owned(),
                reason: e.to_string(),
            })
    }

    /// The canonical string of an address in the protocol: user-friendly,
    /// non-bounceable, testnet flag as configured (§11 item 18).
    pub fn format(&self, a: &StdAddr) -> String {
        cocoon_ton::address::to_friendly(a, self.testnet)
    }

    /// The owner `a`, in the canonical text form every role keys it by.
    pub fn owner(&self, a: &StdAddr) -> Owner {
        Owner::of(a, self.testnet)
    }

    /// The proxy contract of (`owner`, `public_key`).
    pub fn proxy_sc(&self, owner: &StdAddr, public_key: &[u8; 32]) -> Result<StdAddr, ChainError> {
        cocoon_ton::contracts::proxy_contract_address(&self.params, &self.root, owner, public_key)
            .map_err(ton)
    }

    /// The client contract of the client wallet `client` at `proxy_sc`.
    pub fn client_sc(
        &self,
        client: &StdAddr,
        proxy_sc: &StdAddr,
        proxy_key: &[u8; 32],
    ) -> Result<StdAddr, ChainError> {
        cocoon_ton::contracts::client_contract_address(&self.params, client, proxy_sc, proxy_key)
            .map_err(ton)
    }

    /// The worker contract of `worker` (its payout owner) at `proxy_sc`.
    pub fn worker_sc(
        &self,
        worker: &StdAddr,
        proxy_sc: &StdAddr,
        proxy_key: &[u8; 32],
    ) -> Result<StdAddr, ChainError> {
        cocoon_ton::contracts::worker_contract_address(&self.params, worker, proxy_sc, proxy_key)
            .map_err(ton)
    }
}
