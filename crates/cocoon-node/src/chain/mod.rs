//! What the roles need from the TON side: the root parameters, the per-party contract
//! addresses (derived exactly as the contracts do) and the signed vouchers that settle
//! usage (cocoon-protocol.md §5.4, §6.3).
//!
//! In fake-TON mode (a stand-in for the chain, like COCOON's `--disable-ton`) the root
//! parameters come from the node's configuration and the contract codes are our own
//! compiled Tolk contracts from `contracts/build`, so every address and voucher is the
//! one a real deployment of those contracts would accept.

pub mod config_v7;
mod context;
pub mod pseudo;
mod root;
mod vouchers;
pub mod wallet;

pub use context::{ChainContext, Owner};
pub use pseudo::{PseudoRoot, PseudoRootError};
pub use root::{model_allowed, ChainView, RootWatch, SettlementChain};
pub use vouchers::{ProxyVouchers, VoucherWallet};
pub use wallet::{ChainWallet, OnChain, SettleError, SettlementPolicy, WALLET_FLOOR};

use tycho_types::models::StdAddr;

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
    use crate::pricing::{Multipliers, Prices};
    use cocoon_ton::voucher::VoucherKind;
    use ed25519_dalek::SigningKey;

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
