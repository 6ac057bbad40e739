//! Wallets: the runners' **cocoon wallet** (spec §6.3) and **wallet v5r1** for
//! operators, plus the internal and external message envelopes they need.
//!
//! Cocoon wallet external body (signature first):
//! `signature:bits512 subwallet:uint32 valid_until:uint32 seqno:uint32 (mode:uint8 ^message)*`
//! with at most 4 messages; the signature is Ed25519 over the hash of the cell
//! without the signature. Data: `seqno:32 subwallet:32 public_key:256 status:32 owner`.
//!
//! Wallet v5r1 external body (signature last):
//! `0x7369676e wallet_id:int32 valid_until:uint32 seqno:uint32
//! out_actions:(Maybe ^OutList) has_other_actions:(Maybe ActionList)=0 signature:bits512`,
//! signed over the hash of the cell without the signature.

use ed25519_dalek::{Signer, SigningKey};
use tycho_types::cell::{Cell, CellBuilder, CellFamily, HashBytes};
use tycho_types::models::StdAddr;

use crate::cells::{
    expect_end, from_boc, load_address, load_coins, open, store_address, store_coins,
};
use crate::contracts::{cocoon_wallet_contract, ContractInit};
use crate::error::{Result, TonError};

/// Most messages one cocoon wallet external message may carry.
pub const COCOON_WALLET_MAX_MESSAGES: usize = 4;
/// Lifetime the C++ gives external messages (`valid_until = now + 3600`).
pub const COCOON_WALLET_TTL_SECS: u32 = 3600;
/// Code hash of the C++ runners' cocoon wallet.
pub const OFFICIAL_COCOON_WALLET_CODE_HASH: &str =
    "7a48f05ceef40f06cabbaa39c1c5a67b24e8bb59d8cf8a74e49988a5f44cf66a";

static OFFICIAL_WALLET_BOC: &[u8] = include_bytes!("../data/cocoon-wallet-official.boc");

/// The cocoon wallet code the C++ runners embed (`CocoonWallet::code_boc`).
/// Use it to compute the address a C++ runner would use for the same key and owner.
pub fn official_cocoon_wallet_code() -> Result<Cell> {
    from_boc(OFFICIAL_WALLET_BOC)
}

/// An internal message as a wallet sends it (`MessageRelaxed` with `src:addr_none`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalMessage {
    /// Destination.
    pub dest: StdAddr,
    /// Value in nanoTON.
    pub value: u64,
    /// Bounce flag.
    pub bounce: bool,
    /// StateInit to deploy the destination, stored as a reference.
    pub state_init: Option<Cell>,
    /// Body, stored as a reference (absent = empty inline body).
    pub body: Option<Cell>,
}

impl InternalMessage {
    /// The message as the C++ cocoon wallet builds it: bounceable unless it
    /// carries a StateInit (header `0x18` vs `0x10`).
    pub fn cocoon(dest: StdAddr, value: u64, state_init: Option<Cell>, body: Option<Cell>) -> Self {
        InternalMessage {
            bounce: state_init.is_none(),
            dest,
            value,
            state_init,
            body,
        }
    }

    /// `int_msg_info$0 ihr_disabled:1 bounce bounced:0 src:addr_none dest value
    /// extra:0 ihr_fee:0 fwd_fee:0 created_lt:0 created_at:0 init body`.
    pub fn to_cell(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        b.store_bit_zero()?; // int_msg_info$0
        b.store_bit_one()?; // ihr_disabled
        b.store_bit(self.bounce)?;
        b.store_bit_zero()?; // bounced
        b.store_small_uint(0, 2)?; // src: addr_none
        store_address(&mut b, &self.dest)?;
        store_coins(&mut b, self.value)?;
        b.store_zeros(1 + 4 + 4 + 64 + 32)?; // no extra currencies, fees, lt, time
        match &self.state_init {
            Some(si) => {
                b.store_bit_one()?;
                b.store_bit_one()?; // as a reference
                b.store_reference(si.clone())?;
            }
            None => b.store_bit_zero()?,
        }
        match &self.body {
            Some(body) => {
                b.store_bit_one()?;
                b.store_reference(body.clone())?;
            }
            None => b.store_bit_zero()?,
        }
        Ok(b.build()?)
    }

    /// Parses a `MessageRelaxed` with `src:addr_none` (what wallets and contracts
    /// send). An inline StateInit is refused; an inline body is read into a cell
    /// of its own (so writing the message again stores it as a reference).
    pub fn from_cell(cell: &Cell) -> Result<Self> {
        let mut s = open(cell)?;
        if s.load_bit()? {
            return Err(TonError::layout("internal message", "not int_msg_info"));
        }
        let _ihr_disabled = s.load_bit()?;
        let bounce = s.load_bit()?;
        let _bounced = s.load_bit()?;
        if s.load_small_uint(2)? != 0 {
            return Err(TonError::layout("internal message", "src is not addr_none"));
        }
        let dest = load_address(&mut s)?;
        let value = load_coins(&mut s)?;
        if s.load_bit()? {
            return Err(TonError::layout("internal message", "extra currencies"));
        }
        let _ihr_fee = load_coins(&mut s)?;
        let _fwd_fee = load_coins(&mut s)?;
        let _lt = s.load_u64()?;
        let _at = s.load_u32()?;
        let state_init = if s.load_bit()? {
            if !s.load_bit()? {
                return Err(TonError::layout("internal message", "inline StateInit"));
            }
            Some(s.load_reference_cloned()?)
        } else {
            None
        };
        let body = if s.load_bit()? {
            let b = s.load_reference_cloned()?;
            expect_end(&s, "internal message")?;
            Some(b)
        } else if s.size_bits() == 0 && s.size_refs() == 0 {
            None
        } else {
            // An inline body (as contracts write short ones): copy it into a cell.
            let mut b = CellBuilder::new();
            b.store_slice(s)?;
            Some(b.build()?)
        };
        Ok(InternalMessage {
            dest,
            value,
            bounce,
            state_init,
            body,
        })
    }
}

/// An inbound external message: `ext_in_msg_info$10 src:addr_none dest
/// import_fee:0 init:(Maybe ^StateInit) body:^Cell`, as the C++ sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalMessage {
    /// Destination account.
    pub dest: StdAddr,
    /// StateInit, attached while the wallet is not deployed.
    pub state_init: Option<Cell>,
    /// Body (a signed wallet request).
    pub body: Cell,
}

impl ExternalMessage {
    /// Builds the message cell.
    pub fn to_cell(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        b.store_small_uint(0b10, 2)?;
        b.store_small_uint(0, 2)?;
        store_address(&mut b, &self.dest)?;
        store_coins(&mut b, 0)?;
        match &self.state_init {
            Some(si) => {
                b.store_bit_one()?;
                b.store_bit_one()?;
                b.store_reference(si.clone())?;
            }
            None => b.store_bit_zero()?,
        }
        b.store_bit_one()?;
        b.store_reference(self.body.clone())?;
        Ok(b.build()?)
    }

    /// The message as BOC bytes, ready for `ChainBackend::send_external`.
    pub fn to_boc(&self) -> Result<Vec<u8>> {
        Ok(crate::cells::to_boc(&self.to_cell()?))
    }

    /// Parses a message built by [`ExternalMessage::to_cell`] (StateInit and
    /// body as references).
    pub fn from_cell(cell: &Cell) -> Result<Self> {
        let mut s = open(cell)?;
        if s.load_small_uint(2)? != 0b10 {
            return Err(TonError::layout("external message", "not ext_in_msg_info"));
        }
        if s.load_small_uint(2)? != 0 {
            return Err(TonError::layout("external message", "src is not addr_none"));
        }
        let dest = load_address(&mut s)?;
        let _import_fee = load_coins(&mut s)?;
        let state_init = if s.load_bit()? {
            if !s.load_bit()? {
                return Err(TonError::layout("external message", "inline StateInit"));
            }
            Some(s.load_reference_cloned()?)
        } else {
            None
        };
        if !s.load_bit()? {
            return Err(TonError::layout("external message", "inline body"));
        }
        let body = s.load_reference_cloned()?;
        expect_end(&s, "external message")?;
        Ok(ExternalMessage {
            dest,
            state_init,
            body,
        })
    }
}

/// The send mode the C++ cocoon wallet uses: 0, or 1 (pay fees separately) when
/// the value is at most 1 nanoTON.
pub fn cocoon_send_mode(value: u64) -> u8 {
    if value > 1 {
        0
    } else {
        1
    }
}

/// A decoded cocoon wallet request (the external body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CocoonWalletRequest {
    /// Ed25519 signature.
    pub signature: [u8; 64],
    /// Subwallet id (always 0 in COCOON).
    pub subwallet: u32,
    /// Expiry (unix time).
    pub valid_until: u32,
    /// Wallet seqno.
    pub seqno: u32,
    /// `(mode, message cell)` pairs.
    pub messages: Vec<(u8, Cell)>,
    /// Hash of the unsigned part (what is signed).
    pub signed_hash: [u8; 32],
}

impl CocoonWalletRequest {
    /// Parses a signed cocoon wallet body.
    pub fn from_cell(cell: &Cell) -> Result<Self> {
        let mut s = open(cell)?;
        let mut signature = [0u8; 64];
        s.load_raw(&mut signature, 512)?;
        // Rebuild the unsigned cell to recover the signed hash.
        let mut u = CellBuilder::new();
        u.store_slice(s)?;
        let unsigned = u.build()?;
        let subwallet = s.load_u32()?;
        let valid_until = s.load_u32()?;
        let seqno = s.load_u32()?;
        let mut messages = Vec::new();
        while s.size_refs() > 0 {
            let mode = s.load_u8()?;
            messages.push((mode, s.load_reference_cloned()?));
        }
        expect_end(&s, "cocoon wallet request")?;
        Ok(CocoonWalletRequest {
            signature,
            subwallet,
            valid_until,
            seqno,
            messages,
            signed_hash: unsigned.repr_hash().0,
        })
    }

    /// Checks the signature with the wallet's public key.
    pub fn verify(&self, public_key: &[u8; 32]) -> Result<()> {
        verify_sig(public_key, &self.signed_hash, &self.signature)
    }
}

fn verify_sig(public_key: &[u8; 32], msg: &[u8; 32], sig: &[u8; 64]) -> Result<()> {
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    let key = VerifyingKey::from_bytes(public_key)
        .map_err(|e| TonError::Signature(format!("bad public key: {e}")))?;
    key.verify(msg, &Signature::from_bytes(sig))
        .map_err(|e| TonError::Signature(e.to_string()))
}

/// The runners' hot wallet: signs batches of up to 4 internal messages.
pub struct CocoonWallet {
    key: SigningKey,
    owner: StdAddr,
    init: ContractInit,
}

impl std::fmt::Debug for CocoonWallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CocoonWallet")
            .field("address", &crate::address::to_raw(&self.init.address))
            .finish()
    }
}

impl CocoonWallet {
    /// A wallet of `key` owned by `owner`, running `code` (the official code from
    /// [`official_cocoon_wallet_code`] or ours). The address depends on all three.
    pub fn new(key: SigningKey, owner: StdAddr, code: &Cell) -> Result<Self> {
        let init = cocoon_wallet_contract(code, &key.verifying_key().to_bytes(), &owner)?;
        Ok(CocoonWallet { key, owner, init })
    }

    /// The wallet address.
    pub fn address(&self) -> &StdAddr {
        &self.init.address
    }

    /// The owner address (allowed to send internal commands).
    pub fn owner(&self) -> &StdAddr {
        &self.owner
    }

    /// The public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Code, data, StateInit and address.
    pub fn contract(&self) -> &ContractInit {
        &self.init
    }

    /// The signed body: `signature || subwallet=0 valid_until seqno (mode ^msg)*`.
    pub fn sign_request(
        &self,
        seqno: u32,
        valid_until: u32,
        messages: &[(u8, InternalMessage)],
    ) -> Result<Cell> {
        if messages.len() > COCOON_WALLET_MAX_MESSAGES {
            return Err(TonError::Range(format!(
                "{} messages in one cocoon wallet request (max {COCOON_WALLET_MAX_MESSAGES})",
                messages.len()
            )));
        }
        let mut u = CellBuilder::new();
        u.store_u32(0)?;
        u.store_u32(valid_until)?;
        u.store_u32(seqno)?;
        for (mode, m) in messages {
            u.store_u8(*mode)?;
            u.store_reference(m.to_cell()?)?;
        }
        let unsigned = u.build()?;
        let sig = self.key.sign(unsigned.repr_hash().as_array()).to_bytes();
        let mut b = CellBuilder::new();
        b.store_raw(&sig, 512)?;
        b.store_slice(unsigned.as_slice()?)?;
        Ok(b.build()?)
    }

    /// The complete external message; the StateInit is attached when `seqno == 0`
    /// (the wallet may not be deployed yet), as the C++ does.
    pub fn external_message(
        &self,
        seqno: u32,
        valid_until: u32,
        messages: &[(u8, InternalMessage)],
    ) -> Result<ExternalMessage> {
        Ok(ExternalMessage {
            dest: self.init.address.clone(),
            state_init: (seqno == 0).then(|| self.init.state_init.clone()),
            body: self.sign_request(seqno, valid_until, messages)?,
        })
    }
}

/// Wallet v5r1 network ids (`global_id` of the chain).
pub mod network {
    /// TON mainnet.
    pub const MAINNET: i32 = -239;
    /// TON testnet.
    pub const TESTNET: i32 = -3;
}

/// Operator wallet v5r1 (the standard TON wallet): builds signed external
/// messages carrying up to 255 `action_send_msg` actions.
pub struct WalletV5R1 {
    key: SigningKey,
    wallet_id: i32,
    code: Cell,
}

impl std::fmt::Debug for WalletV5R1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalletV5R1")
            .field("wallet_id", &self.wallet_id)
            .finish()
    }
}

/// Opcode prefix of a signed external v5r1 request (`"sign"`).
pub const V5R1_SIGNED_EXTERNAL: u32 = 0x7369_676e;
/// `action_send_msg` tag.
pub const ACTION_SEND_MSG: u32 = 0x0ec3_c86d;

/// Code hash of the standard wallet v5r1 (`wallet-contract-v5`, W5R1).
pub const V5R1_CODE_HASH: &str = "20834b7b72b112147e1b2fb457b84e74d1a30f04f737d4f62a668e9552d2b72f";

static V5R1_BOC: &[u8] = include_bytes!("../data/wallet-v5r1.boc");

impl WalletV5R1 {
    /// The standard v5r1 code cell (checked against [`V5R1_CODE_HASH`] by the tests).
    pub fn standard_code() -> Result<Cell> {
        from_boc(V5R1_BOC)
    }

    /// A standard v5r1 wallet of `key` in workchain 0 with the default wallet id
    /// for the network `global_id` (see [`network`]).
    pub fn standard(key: SigningKey, global_id: i32) -> Result<Self> {
        Ok(Self::new(
            key,
            Self::default_wallet_id(global_id, 0, 0),
            Self::standard_code()?,
        ))
    }

    /// The default wallet id for `global_id` (see [`network`]), workchain and
    /// subwallet number: `global_id XOR (1<<31 | wc<<23 | version 0<<15 | subwallet)`.
    pub fn default_wallet_id(global_id: i32, workchain: i8, subwallet: u16) -> i32 {
        let context: u32 =
            (1u32 << 31) | ((workchain as u8 as u32) << 23) | (u32::from(subwallet) & 0x7fff);
        (global_id as u32 ^ context) as i32
    }

    /// A wallet with `key`, `wallet_id` and the v5r1 `code` (the standard code
    /// cell; this crate does not embed it).
    pub fn new(key: SigningKey, wallet_id: i32, code: Cell) -> Self {
        WalletV5R1 {
            key,
            wallet_id,
            code,
        }
    }

    /// The wallet id.
    pub fn wallet_id(&self) -> i32 {
        self.wallet_id
    }

    /// Initial data: `is_signature_allowed:1 seqno:32=0 wallet_id:32
    /// public_key:256 extensions:(HashmapE 256 int1)=empty`.
    pub fn data_cell(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        b.store_bit_one()?;
        b.store_u32(0)?;
        b.store_u32(self.wallet_id as u32)?;
        b.store_u256(&HashBytes(self.key.verifying_key().to_bytes()))?;
        b.store_bit_zero()?;
        Ok(b.build()?)
    }

    /// Code, data, StateInit and address.
    pub fn contract(&self) -> Result<ContractInit> {
        ContractInit::new(self.code.clone(), self.data_cell()?)
    }

    /// The signed body: `"sign" wallet_id valid_until seqno Maybe ^OutList 0 signature`.
    ///
    /// The v5r1 code refuses external requests whose send modes lack the
    /// `IGNORE_ERRORS` bit (2), so such modes are refused here already.
    pub fn sign_request(
        &self,
        seqno: u32,
        valid_until: u32,
        messages: &[(u8, InternalMessage)],
    ) -> Result<Cell> {
        if messages.len() > 255 {
            return Err(TonError::Range("more than 255 actions".into()));
        }
        if let Some((mode, _)) = messages.iter().find(|(m, _)| m & 2 == 0) {
            return Err(TonError::Range(format!(
                "send mode {mode} lacks IGNORE_ERRORS (2), required by v5r1 for external requests"
            )));
        }
        let mut list = Cell::empty_cell();
        for (mode, m) in messages {
            let mut a = CellBuilder::new();
            a.store_reference(list)?;
            a.store_u32(ACTION_SEND_MSG)?;
            a.store_u8(*mode)?;
            a.store_reference(m.to_cell()?)?;
            list = a.build()?;
        }
        let mut u = CellBuilder::new();
        u.store_u32(V5R1_SIGNED_EXTERNAL)?;
        u.store_u32(self.wallet_id as u32)?;
        u.store_u32(valid_until)?;
        u.store_u32(seqno)?;
        if messages.is_empty() {
            u.store_bit_zero()?;
        } else {
            u.store_bit_one()?;
            u.store_reference(list)?;
        }
        u.store_bit_zero()?; // no extended actions
        let unsigned = u.clone().build()?;
        let sig = self.key.sign(unsigned.repr_hash().as_array()).to_bytes();
        u.store_raw(&sig, 512)?;
        Ok(u.build()?)
    }

    /// The complete external message (StateInit attached when `seqno == 0`).
    pub fn external_message(
        &self,
        seqno: u32,
        valid_until: u32,
        messages: &[(u8, InternalMessage)],
    ) -> Result<ExternalMessage> {
        let init = self.contract()?;
        Ok(ExternalMessage {
            dest: init.address,
            state_init: (seqno == 0).then_some(init.state_init),
            body: self.sign_request(seqno, valid_until, messages)?,
        })
    }
}

/// A decoded v5r1 request (for checks and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V5R1Request {
    /// Wallet id.
    pub wallet_id: i32,
    /// Expiry.
    pub valid_until: u32,
    /// Seqno.
    pub seqno: u32,
    /// `(mode, message)` in sending order.
    pub messages: Vec<(u8, Cell)>,
    /// Signature.
    pub signature: [u8; 64],
    /// Hash of the unsigned part.
    pub signed_hash: [u8; 32],
}

impl V5R1Request {
    /// Parses a signed v5r1 external body.
    pub fn from_cell(cell: &Cell) -> Result<Self> {
        let s = open(cell)?;
        if s.size_bits() < 512 {
            return Err(TonError::layout("v5r1 request", "too short"));
        }
        let mut body = s;
        let mut sig_part = body.load_suffix(512, 0)?;
        let mut unsigned = CellBuilder::new();
        unsigned.store_slice(body)?;
        let signed_hash = unsigned.build()?.repr_hash().0;
        let mut signature = [0u8; 64];
        sig_part.load_raw(&mut signature, 512)?;

        if body.load_u32()? != V5R1_SIGNED_EXTERNAL {
            return Err(TonError::layout("v5r1 request", "no \"sign\" prefix"));
        }
        let wallet_id = body.load_u32()? as i32;
        let valid_until = body.load_u32()?;
        let seqno = body.load_u32()?;
        let mut messages = Vec::new();
        if body.load_bit()? {
            let mut cur = body.load_reference_cloned()?;
            loop {
                let mut a = open(&cur)?;
                if a.size_bits() == 0 && a.size_refs() == 0 {
                    break;
                }
                let prev = a.load_reference_cloned()?;
                if a.load_u32()? != ACTION_SEND_MSG {
                    return Err(TonError::layout("v5r1 request", "unknown action"));
                }
                let mode = a.load_u8()?;
                let msg = a.load_reference_cloned()?;
                expect_end(&a, "v5r1 action")?;
                messages.push((mode, msg));
                cur = prev;
            }
        }
        messages.reverse();
        if body.load_bit()? {
            return Err(TonError::layout("v5r1 request", "extended actions"));
        }
        expect_end(&body, "v5r1 request")?;
        Ok(V5R1Request {
            wallet_id,
            valid_until,
            seqno,
            messages,
            signature,
            signed_hash,
        })
    }

    /// Checks the signature.
    pub fn verify(&self, public_key: &[u8; 32]) -> Result<()> {
        verify_sig(public_key, &self.signed_hash, &self.signature)
    }
}
