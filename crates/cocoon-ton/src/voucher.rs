//! Signed payment vouchers (`proxy.signedPayment.data`, spec §5.4).
//!
//! ```text
//! wrapper: op:uint32 query_id:uint64 send_excesses_to:MsgAddressInt signature:bits512 ^payload
//! payload: op:uint32 query_id:uint64 [tokens:uint64] expected_my_address:MsgAddressInt
//! ```
//!
//! The proxy signs `repr_hash(payload)` with its machine key (Ed25519). The
//! wrapper repeats op and query_id; its `send_excesses_to` is not signed, so the
//! holder may repack it with its own address before submitting. Proxy close
//! vouchers carry no `tokens` field.
//!
//! A holder keeps the voucher with the highest token count: use
//! [`SignedVoucher::is_better_than`] or [`BestVoucher`], which never lets a lower
//! voucher replace a higher one.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use tycho_types::cell::{Cell, CellBuilder};
use tycho_types::models::StdAddr;

use crate::address::to_raw;
use crate::cells::{expect_end, from_boc, load_address, open, store_address, to_boc};
use crate::error::{Result, TonError};
use crate::opcodes;

/// What a voucher authorizes; each kind has its own opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VoucherKind {
    /// `ext_client_charge_signed` (0xbb63ff93): charge the client contract up to `tokens`.
    ClientCharge,
    /// `ext_client_grant_refund_signed` (0xefd711e1): final charge, then close and refund.
    ClientGrantRefund,
    /// `ext_worker_payout_request_signed` (0xa040ad28): pay the worker up to `tokens`.
    WorkerPayout,
    /// `ext_worker_last_payout_request_signed` (0xf5f26a36): final payout, then close.
    WorkerLastPayout,
    /// `ext_proxy_close_request_signed` (0x636a4391): start closing the proxy contract (no tokens).
    ProxyClose,
    /// `ext_proxy_close_complete_request_signed` (0xe511abc7): finish closing (no tokens).
    ProxyCloseComplete,
}

impl VoucherKind {
    /// All kinds.
    pub const ALL: [VoucherKind; 6] = [
        VoucherKind::ClientCharge,
        VoucherKind::ClientGrantRefund,
        VoucherKind::WorkerPayout,
        VoucherKind::WorkerLastPayout,
        VoucherKind::ProxyClose,
        VoucherKind::ProxyCloseComplete,
    ];

    /// The opcode of this kind.
    pub const fn op(self) -> u32 {
        match self {
            VoucherKind::ClientCharge => opcodes::EXT_CLIENT_CHARGE_SIGNED,
            VoucherKind::ClientGrantRefund => opcodes::EXT_CLIENT_GRANT_REFUND_SIGNED,
            VoucherKind::WorkerPayout => opcodes::EXT_WORKER_PAYOUT_REQUEST_SIGNED,
            VoucherKind::WorkerLastPayout => opcodes::EXT_WORKER_LAST_PAYOUT_REQUEST_SIGNED,
            VoucherKind::ProxyClose => opcodes::EXT_PROXY_CLOSE_REQUEST_SIGNED,
            VoucherKind::ProxyCloseComplete => opcodes::EXT_PROXY_CLOSE_COMPLETE_REQUEST_SIGNED,
        }
    }

    /// The kind of an opcode, if it is a voucher opcode.
    pub fn from_op(op: u32) -> Option<Self> {
        VoucherKind::ALL.into_iter().find(|k| k.op() == op)
    }

    /// Whether the payload carries `tokens:uint64` (all but the proxy close kinds).
    pub const fn has_tokens(self) -> bool {
        !matches!(
            self,
            VoucherKind::ProxyClose | VoucherKind::ProxyCloseComplete
        )
    }
}

/// The signed part of a voucher.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Voucher {
    /// What it authorizes.
    pub kind: VoucherKind,
    /// Query id (the C++ picks a random one; the contracts echo it).
    pub query_id: u64,
    /// Total adjusted tokens covered (cumulative, never decreasing). Always 0 for
    /// the proxy close kinds, whose payload has no token field.
    pub tokens: u64,
    /// The contract that must execute it (`expected_my_address`).
    pub contract: StdAddr,
}

impl Voucher {
    /// A voucher of `kind`; `tokens` is ignored (set to 0) for the proxy close kinds.
    pub fn new(kind: VoucherKind, query_id: u64, tokens: u64, contract: StdAddr) -> Self {
        let tokens = if kind.has_tokens() { tokens } else { 0 };
        Voucher {
            kind,
            query_id,
            tokens,
            contract,
        }
    }

    /// A client charge voucher for `tokens` total at client contract `contract`.
    pub fn client_charge(query_id: u64, tokens: u64, contract: StdAddr) -> Self {
        Self::new(VoucherKind::ClientCharge, query_id, tokens, contract)
    }

    /// A worker payout voucher for `tokens` total at worker contract `contract`.
    pub fn worker_payout(query_id: u64, tokens: u64, contract: StdAddr) -> Self {
        Self::new(VoucherKind::WorkerPayout, query_id, tokens, contract)
    }

    /// The payload cell: `op query_id [tokens] expected_my_address`.
    pub fn payload_cell(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        b.store_u32(self.kind.op())?;
        b.store_u64(self.query_id)?;
        if self.kind.has_tokens() {
            b.store_u64(self.tokens)?;
        }
        store_address(&mut b, &self.contract)?;
        Ok(b.build()?)
    }

    /// Parses a payload cell strictly (exact bits, no refs).
    pub fn from_payload_cell(cell: &Cell) -> Result<Self> {
        let mut s = open(cell)?;
        let op = s.load_u32()?;
        let kind = VoucherKind::from_op(op).ok_or_else(|| TonError::UnexpectedOp {
            found: op,
            expected: "a signed voucher op".into(),
        })?;
        let query_id = s.load_u64()?;
        let tokens = if kind.has_tokens() { s.load_u64()? } else { 0 };
        let contract = load_address(&mut s)?;
        expect_end(&s, "voucher payload")?;
        Ok(Voucher {
            kind,
            query_id,
            tokens,
            contract,
        })
    }

    /// The bytes the proxy signs: `repr_hash(payload)`.
    pub fn signing_hash(&self) -> Result<[u8; 32]> {
        Ok(self.payload_cell()?.repr_hash().0)
    }
}

/// A voucher with its signature and the (unsigned) excess address of the wrapper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedVoucher {
    /// The signed content.
    pub voucher: Voucher,
    /// Where the contract returns change; not covered by the signature.
    pub send_excesses_to: StdAddr,
    /// Ed25519 signature over `repr_hash(payload)`.
    pub signature: [u8; 64],
}

impl SignedVoucher {
    /// The wrapper cell (the message body sent to the contract).
    pub fn to_cell(&self) -> Result<Cell> {
        let payload = self.voucher.payload_cell()?;
        let mut b = CellBuilder::new();
        b.store_u32(self.voucher.kind.op())?;
        b.store_u64(self.voucher.query_id)?;
        store_address(&mut b, &self.send_excesses_to)?;
        b.store_raw(&self.signature, 512)?;
        b.store_reference(payload)?;
        Ok(b.build()?)
    }

    /// The wrapper as a standard BOC: the bytes of `proxy.signedPayment.data`.
    pub fn to_boc(&self) -> Result<Vec<u8>> {
        Ok(to_boc(&self.to_cell()?))
    }

    /// Parses a wrapper cell. Checks the layout as the contracts do: the wrapper
    /// has exactly `op qid address signature` and one ref, the payload has
    /// exactly its fields, and op and query_id agree. The signature is **not**
    /// checked here; use [`SignedVoucher::verify`] or [`VoucherVerifier`].
    pub fn from_cell(cell: &Cell) -> Result<Self> {
        let mut s = open(cell)?;
        let op = s.load_u32()?;
        let query_id = s.load_u64()?;
        let send_excesses_to = load_address(&mut s)?;
        let mut signature = [0u8; 64];
        s.load_raw(&mut signature, 512)?;
        if s.size_bits() != 0 || s.size_refs() != 1 {
            return Err(TonError::layout(
                "voucher wrapper",
                format!(
                    "expected no more bits and 1 ref, found {} bits and {} refs",
                    s.size_bits(),
                    s.size_refs()
                ),
            ));
        }
        let payload = s.load_reference_cloned()?;
        let voucher = Voucher::from_payload_cell(&payload)?;
        if voucher.kind.op() != op || voucher.query_id != query_id {
            return Err(TonError::layout(
                "voucher wrapper",
                "op or query_id differ between wrapper and payload",
            ));
        }
        // The payload is rebuilt from its fields when serialized again; make sure
        // that gives the very cell that was signed.
        if voucher.payload_cell()?.repr_hash() != payload.repr_hash() {
            return Err(TonError::layout("voucher payload", "non-canonical payload"));
        }
        Ok(SignedVoucher {
            voucher,
            send_excesses_to,
            signature,
        })
    }

    /// Parses BOC bytes (as carried in `proxy.signedPayment.data`).
    pub fn from_boc(bytes: &[u8]) -> Result<Self> {
        Self::from_cell(&from_boc(bytes)?)
    }

    /// The same voucher with another excess address (the signature stays valid).
    pub fn repack(&self, send_excesses_to: StdAddr) -> SignedVoucher {
        SignedVoucher {
            send_excesses_to,
            ..self.clone()
        }
    }

    /// Checks the Ed25519 signature with the proxy's public key.
    pub fn verify(&self, proxy_public_key: &[u8; 32]) -> Result<()> {
        let key = VerifyingKey::from_bytes(proxy_public_key)
            .map_err(|e| TonError::Signature(format!("bad public key: {e}")))?;
        let sig = Signature::from_bytes(&self.signature);
        key.verify(&self.voucher.signing_hash()?, &sig)
            .map_err(|e| TonError::Signature(e.to_string()))
    }

    /// Whether `self` should replace `other` in a holder's slot: same kind and
    /// contract, and strictly more tokens. A voucher for another contract or of
    /// another kind is never "better".
    pub fn is_better_than(&self, other: &SignedVoucher) -> bool {
        self.voucher.kind == other.voucher.kind
            && self.voucher.contract == other.voucher.contract
            && self.voucher.tokens > other.voucher.tokens
    }

    /// Token count covered.
    pub fn tokens(&self) -> u64 {
        self.voucher.tokens
    }
}

/// Signs vouchers with the proxy's machine key (held inside).
pub struct VoucherSigner {
    key: SigningKey,
    send_excesses_to: StdAddr,
}

impl std::fmt::Debug for VoucherSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoucherSigner")
            .field("public_key", &hex::encode(self.public_key()))
            .field("send_excesses_to", &to_raw(&self.send_excesses_to))
            .finish()
    }
}

impl VoucherSigner {
    /// A signer with the proxy key; wrappers get `send_excesses_to` (the proxy's
    /// cocoon wallet in the C++ runner).
    pub fn new(key: SigningKey, send_excesses_to: StdAddr) -> Self {
        VoucherSigner {
            key,
            send_excesses_to,
        }
    }

    /// The proxy public key (what contracts and peers verify with).
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Signs `repr_hash(payload)` and wraps it.
    pub fn sign(&self, voucher: Voucher) -> Result<SignedVoucher> {
        let signature = self.key.sign(&voucher.signing_hash()?).to_bytes();
        Ok(SignedVoucher {
            voucher,
            send_excesses_to: self.send_excesses_to.clone(),
            signature,
        })
    }

    /// Signs and serializes to BOC in one step (for `proxy.signedPayment.data`).
    pub fn sign_to_boc(&self, voucher: Voucher) -> Result<Vec<u8>> {
        self.sign(voucher)?.to_boc()
    }
}

/// Checks vouchers received by a client or worker for its own contract, as the
/// C++ `check_signed_pay_message` does: expected kind, strict layout, payload
/// address equal to the own contract, valid signature by the proxy key.
#[derive(Debug, Clone)]
pub struct VoucherVerifier {
    /// The proxy's public key.
    pub proxy_public_key: [u8; 32],
    /// This party's contract (client or worker contract address).
    pub contract: StdAddr,
}

impl VoucherVerifier {
    /// A verifier for vouchers to `contract` signed by `proxy_public_key`.
    pub fn new(proxy_public_key: [u8; 32], contract: StdAddr) -> Self {
        VoucherVerifier {
            proxy_public_key,
            contract,
        }
    }

    /// Parses and checks BOC bytes; returns the voucher if it is of `kind`,
    /// addressed to our contract and correctly signed.
    pub fn check_boc(&self, bytes: &[u8], kind: VoucherKind) -> Result<SignedVoucher> {
        let v = SignedVoucher::from_boc(bytes)?;
        self.check(&v, kind)?;
        Ok(v)
    }

    /// Checks an already parsed voucher.
    pub fn check(&self, v: &SignedVoucher, kind: VoucherKind) -> Result<()> {
        if v.voucher.kind != kind {
            return Err(TonError::UnexpectedOp {
                found: v.voucher.kind.op(),
                expected: format!("{:#010x}", kind.op()),
            });
        }
        if v.voucher.contract != self.contract {
            return Err(TonError::WrongContract {
                found: to_raw(&v.voucher.contract),
                expected: to_raw(&self.contract),
            });
        }
        v.verify(&self.proxy_public_key)
    }
}

/// The best voucher a holder has for one contract; offers of lower or equal
/// token counts (or other kinds/contracts) are refused.
#[derive(Debug, Clone, Default)]
pub struct BestVoucher {
    best: Option<SignedVoucher>,
}

impl BestVoucher {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers a voucher; returns `true` if it replaced the held one. The first
    /// voucher is always taken; later ones only if [`SignedVoucher::is_better_than`].
    pub fn offer(&mut self, v: SignedVoucher) -> bool {
        match &self.best {
            Some(cur) if !v.is_better_than(cur) => false,
            _ => {
                self.best = Some(v);
                true
            }
        }
    }

    /// The held voucher.
    pub fn get(&self) -> Option<&SignedVoucher> {
        self.best.as_ref()
    }

    /// Tokens of the held voucher (0 when empty).
    pub fn tokens(&self) -> u64 {
        self.best.as_ref().map_or(0, |v| v.voucher.tokens)
    }
}
