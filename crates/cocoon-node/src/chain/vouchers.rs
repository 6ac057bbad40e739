//! Vouchers (§5.4): the proxy signs them ([`ProxyVouchers`]); clients and workers keep the
//! best valid one for their own contract ([`VoucherWallet`]).

use cocoon_ton::voucher::{
    BestVoucher, SignedVoucher, Voucher, VoucherKind, VoucherSigner, VoucherVerifier,
};
use ed25519_dalek::SigningKey;
use tycho_types::models::StdAddr;

use super::{ton, ChainError};

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
