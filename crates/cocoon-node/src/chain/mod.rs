//! What the roles need from the TON side: the root parameters, the per-party contract
//! addresses (derived exactly as the contracts do) and the signed vouchers that settle
//! usage (cocoon-protocol.md §5.4, §6.3).
//!
//! In fake-TON mode (a stand-in for the chain, like COCOON's `--disable-ton`) the root
//! parameters come from the node's configuration and the contract codes are our own
//! compiled Tolk contracts from `contracts/build`, so every address and voucher is the
//! one a real deployment of those contracts would accept.

pub mod wallet;

pub use wallet::{ChainWallet, OnChain, SettleError, SettlementPolicy, WALLET_FLOOR};

use cocoon_ton::root::CocoonParams;
use cocoon_ton::voucher::{
    BestVoucher, SignedVoucher, Voucher, VoucherKind, VoucherSigner, VoucherVerifier,
};
use ed25519_dalek::SigningKey;
use tycho_types::models::StdAddr;

use crate::pricing::Prices;

/// Why an address or voucher operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// Not a TON address.
    #[error("invalid TON address {input:?}: {reason}")]
    Address {
        /// The text.
        input: String,
        /// Why.
        reason: String,
    },
    /// Deriving or signing failed.
    #[error("{0}")]
    Ton(String),
    /// A voucher failed verification.
    #[error("voucher refused: {0}")]
    Voucher(String),
}

fn ton(e: impl std::fmt::Display) -> ChainError {
    ChainError::Ton(e.to_string())
}

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
        Self::from_params(root.clone(), cfg.params, testnet)
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
        self.tx.borrow().context.params.params_version
    }

    /// A receiver that wakes up on every adopted change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<ChainView> {
        self.tx.subscribe()
    }

    /// Adopts `view` if its `params_version` is newer than the current one (tests and
    /// callers that read the root themselves). Returns whether it was adopted.
    pub fn offer(&self, view: ChainView) -> bool {
        self.tx.send_if_modified(|current| {
            if view.context.params.params_version > current.context.params.params_version {
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
        let known = current.context.params.params_version;
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
            current.context.root.clone(),
            cfg.params,
            current.context.testnet,
        )?;
        view.settlement = Some(settlement);
        tracing::info!(
            from = known,
            to = found,
            price_per_token = view.prices.price_per_token,
            worker_fee_per_token = view.prices.worker_fee_per_token,
            "root parameters changed"
        );
        Ok(self.offer(view))
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

/// Signs the proxy's vouchers.
pub struct ProxyVouchers {
    signer: VoucherSigner,
}

impl std::fmt::Debug for ProxyVouchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyVouchers").finish_non_exhaustive()
    }
}

fn query_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl ProxyVouchers {
    /// Vouchers signed with the proxy `key`; excesses go to `excesses_to`.
    pub fn new(key: SigningKey, excesses_to: StdAddr) -> Self {
        ProxyVouchers {
            signer: VoucherSigner::new(key, excesses_to),
        }
    }

    /// A signed charge of `tokens` (the client's total) on `client_sc`, as BOC.
    pub fn client_charge(&self, client_sc: &StdAddr, tokens: u64) -> Result<Vec<u8>, ChainError> {
        self.signer
            .sign_to_boc(Voucher::client_charge(
                query_id(),
                tokens,
                client_sc.clone(),
            ))
            .map_err(ton)
    }

    /// A signed payout of `tokens` (the worker's total) from `worker_sc`, as BOC.
    pub fn worker_payout(&self, worker_sc: &StdAddr, tokens: u64) -> Result<Vec<u8>, ChainError> {
        self.signer
            .sign_to_boc(Voucher::worker_payout(
                query_id(),
                tokens,
                worker_sc.clone(),
            ))
            .map_err(ton)
    }
}

/// What a client or worker keeps: the best valid voucher for its own contract.
#[derive(Debug)]
pub struct VoucherWallet {
    verifier: VoucherVerifier,
    kind: VoucherKind,
    best: BestVoucher,
    refused: u64,
}

impl VoucherWallet {
    /// Accepts vouchers of `kind` for `contract`, signed by `proxy_key`.
    pub fn new(proxy_key: [u8; 32], contract: StdAddr, kind: VoucherKind) -> Self {
        VoucherWallet {
            verifier: VoucherVerifier::new(proxy_key, contract),
            kind,
            best: BestVoucher::new(),
            refused: 0,
        }
    }

    /// Checks a voucher received from the proxy; keeps it if it covers more tokens.
    /// Returns whether it became the best one.
    pub fn offer(&mut self, boc: &[u8]) -> Result<bool, ChainError> {
        match self.verifier.check_boc(boc, self.kind) {
            Ok(v) => Ok(self.best.offer(v)),
            Err(e) => {
                self.refused += 1;
                Err(ChainError::Voucher(e.to_string()))
            }
        }
    }

    /// Tokens covered by the best voucher (0 without one).
    pub fn tokens(&self) -> u64 {
        self.best.tokens()
    }

    /// The best voucher, ready to submit (after repacking the excess address).
    pub fn best(&self) -> Option<&SignedVoucher> {
        self.best.get()
    }

    /// Vouchers refused so far (bad signature, wrong contract or kind).
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

/// A deterministic test-network address for a name (not a real wallet): workchain 0,
/// account id = SHA-256 of the name. Used by `cocoon devnet` and tests.
pub fn devnet_address(name: &str) -> StdAddr {
    use sha2::{Digest, Sha256};
    let hash: [u8; 32] = Sha256::digest(name.as_bytes()).into();
    StdAddr::new(0, tycho_types::cell::HashBytes(hash))
}

/// [`devnet_address`] as text: user-friendly, non-bounceable, testnet.
pub fn devnet_address_text(name: &str) -> String {
    cocoon_ton::address::to_friendly(&devnet_address(name), true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::Multipliers;

    fn ctx() -> ChainContext {
        ChainContext::fake(
            &Prices {
                price_per_token: 2,
                worker_fee_per_token: 1,
                multipliers: Multipliers::default(),
            },
            true,
        )
        .expect("context")
    }

    #[test]
    fn addresses_round_trip_and_derivation_is_deterministic() {
        let c = ctx();
        let owner = devnet_address("proxy-owner");
        let text = c.format(&owner);
        assert!(text.starts_with("0Q"), "testnet non-bounceable: {text}");
        assert_eq!(c.parse_address(&text).expect("parse"), owner);
        let key = SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes();
        let a = c.proxy_sc(&owner, &key).expect("derive");
        assert_eq!(a, c.proxy_sc(&owner, &key).expect("derive again"));
        let other = SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes();
        assert_ne!(a, c.proxy_sc(&owner, &other).expect("other key"));
        assert!(c.parse_address("client-1").is_err());
    }

    #[test]
    fn vouchers_verify_only_for_their_contract_and_only_grow() {
        let c = ctx();
        let key = SigningKey::from_bytes(&[5; 32]);
        let pk = key.verifying_key().to_bytes();
        let proxy_sc = c.proxy_sc(&devnet_address("p"), &pk).expect("proxy");
        let client_sc = c
            .client_sc(&devnet_address("c"), &proxy_sc, &pk)
            .expect("client");
        let other_sc = c
            .client_sc(&devnet_address("d"), &proxy_sc, &pk)
            .expect("other");
        let vouchers = ProxyVouchers::new(key, devnet_address("p"));
        let mut wallet = VoucherWallet::new(pk, client_sc.clone(), VoucherKind::ClientCharge);
        assert!(wallet
            .offer(&vouchers.client_charge(&client_sc, 134).expect("sign"))
            .expect("valid"));
        assert!(
            !wallet
                .offer(&vouchers.client_charge(&client_sc, 100).expect("sign"))
                .expect("valid"),
            "lower voucher kept out"
        );
        assert!(wallet
            .offer(&vouchers.client_charge(&client_sc, 268).expect("sign"))
            .expect("valid"));
        assert_eq!(wallet.tokens(), 268);
        // Another client's voucher, a worker voucher, a forged signature: refused.
        assert!(wallet
            .offer(&vouchers.client_charge(&other_sc, 999).expect("sign"))
            .is_err());
        assert!(wallet
            .offer(&vouchers.worker_payout(&client_sc, 999).expect("sign"))
            .is_err());
        let forger = ProxyVouchers::new(SigningKey::from_bytes(&[6; 32]), devnet_address("p"));
        assert!(wallet
            .offer(&forger.client_charge(&client_sc, 999).expect("sign"))
            .is_err());
        assert_eq!(wallet.refused(), 3);
        assert_eq!(wallet.tokens(), 268);
    }
}
