//! StateInit and address derivation of COCOON's per-party contracts (spec §6.3).
//!
//! Every contract lives at `addr_std(0, repr_hash(StateInit))` where the
//! StateInit cell is `split_depth:0 special:0 code:1 ^code data:1 ^data
//! library:0` (bits `00110`, refs `[code, data]`).
//!
//! The initial data cells follow the C++ runners field by field, because peers
//! recompute each other's addresses and must agree bit for bit (§11 item 8):
//! * proxy: params **with worker and client code** ([`CodeMask::PROXY`]);
//! * client and worker: params **without code** ([`CodeMask::NONE`]).
//!
//! Every function takes the contract code as given (in the params or as an
//! argument), so the same derivation works for the official BOCs and ours.

use tycho_types::cell::{Cell, CellBuilder, HashBytes};
use tycho_types::models::StdAddr;

use crate::cells::{expect_end, load_address, load_coins, open, store_address, store_coins};
use crate::error::{Result, TonError};
use crate::root::{CocoonParams, CodeMask};

/// A contract's code, initial data, StateInit cell and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractInit {
    /// Code cell.
    pub code: Cell,
    /// Initial data cell.
    pub data: Cell,
    /// The StateInit cell (attach it to the deploying message).
    pub state_init: Cell,
    /// The derived address (workchain 0).
    pub address: StdAddr,
}

impl ContractInit {
    /// Builds the StateInit from code and data and derives the address.
    pub fn new(code: Cell, data: Cell) -> Result<Self> {
        let state_init = state_init_cell(&code, &data)?;
        let address = StdAddr::new(0, *state_init.repr_hash());
        Ok(ContractInit {
            code,
            data,
            state_init,
            address,
        })
    }
}

/// Builds `split_depth:0 special:0 code:1 ^code data:1 ^data library:0`.
pub fn state_init_cell(code: &Cell, data: &Cell) -> Result<Cell> {
    let mut b = CellBuilder::new();
    b.store_small_uint(0b0011, 4)?;
    b.store_reference(code.clone())?;
    b.store_reference(data.clone())?;
    b.store_bit_zero()?;
    Ok(b.build()?)
}

/// `addr_std(0, repr_hash(StateInit{code, data}))`.
pub fn contract_address(code: &Cell, data: &Cell) -> Result<StdAddr> {
    Ok(StdAddr::new(0, *state_init_cell(code, data)?.repr_hash()))
}

/// Initial data of a proxy contract: `owner public_key:256 root state:uint2=0
/// balance:Coins=0 stake:Coins=0 unlock_ts:uint32=0 ^params(worker+client code)`.
pub fn proxy_data_cell(
    params: &CocoonParams,
    proxy_owner: &StdAddr,
    proxy_public_key: &[u8; 32],
    root_address: &StdAddr,
) -> Result<Cell> {
    let mut b = CellBuilder::new();
    store_address(&mut b, proxy_owner)?;
    b.store_u256(&HashBytes(*proxy_public_key))?;
    store_address(&mut b, root_address)?;
    b.store_small_uint(0, 2)?;
    store_coins(&mut b, 0)?;
    store_coins(&mut b, 0)?;
    b.store_u32(0)?;
    b.store_reference(params.to_cell(CodeMask::PROXY)?)?;
    Ok(b.build()?)
}

/// Initial data of a client contract: `state:uint2=0 balance:Coins=0
/// stake:Coins=min_client_stake tokens_used:uint64=0 unlock_ts:uint32=0
/// secret_hash:256=0 ^(owner proxy_sc proxy_pk:256) ^params(no code)`.
pub fn client_data_cell(
    params: &CocoonParams,
    client_owner: &StdAddr,
    proxy_sc: &StdAddr,
    proxy_public_key: &[u8; 32],
) -> Result<Cell> {
    let mut c = CellBuilder::new();
    store_address(&mut c, client_owner)?;
    store_address(&mut c, proxy_sc)?;
    c.store_u256(&HashBytes(*proxy_public_key))?;
    let consts = c.build()?;

    let mut b = CellBuilder::new();
    b.store_small_uint(0, 2)?;
    store_coins(&mut b, 0)?;
    store_coins(&mut b, params.min_client_stake)?;
    b.store_u64(0)?;
    b.store_u32(0)?;
    b.store_zeros(256)?;
    b.store_reference(consts)?;
    b.store_reference(params.to_cell(CodeMask::NONE)?)?;
    Ok(b.build()?)
}

/// Initial data of a worker contract: `owner proxy_sc proxy_pk:256 state:uint2=0
/// tokens:uint64=0 ^params(no code)`.
pub fn worker_data_cell(
    params: &CocoonParams,
    worker_owner: &StdAddr,
    proxy_sc: &StdAddr,
    proxy_public_key: &[u8; 32],
) -> Result<Cell> {
    let mut b = CellBuilder::new();
    store_address(&mut b, worker_owner)?;
    store_address(&mut b, proxy_sc)?;
    b.store_u256(&HashBytes(*proxy_public_key))?;
    b.store_small_uint(0, 2)?;
    b.store_u64(0)?;
    b.store_reference(params.to_cell(CodeMask::NONE)?)?;
    Ok(b.build()?)
}

/// Initial data of a cocoon wallet: `seqno:32=0 subwallet:32=0 public_key:256
/// status:32=0 owner:MsgAddress`.
pub fn cocoon_wallet_data_cell(public_key: &[u8; 32], owner: &StdAddr) -> Result<Cell> {
    let mut b = CellBuilder::new();
    b.store_u32(0)?;
    b.store_u32(0)?;
    b.store_u256(&HashBytes(*public_key))?;
    b.store_u32(0)?;
    store_address(&mut b, owner)?;
    Ok(b.build()?)
}

fn code<'a>(c: &'a Option<Cell>, what: &'static str) -> Result<&'a Cell> {
    c.as_ref().ok_or(TonError::MissingCode(what))
}

/// The proxy contract of (`proxy_owner`, `proxy_public_key`) under `root`,
/// using `params.proxy_sc_code`.
pub fn proxy_contract(
    params: &CocoonParams,
    root_address: &StdAddr,
    proxy_owner: &StdAddr,
    proxy_public_key: &[u8; 32],
) -> Result<ContractInit> {
    let data = proxy_data_cell(params, proxy_owner, proxy_public_key, root_address)?;
    ContractInit::new(code(&params.proxy_sc_code, "proxy")?.clone(), data)
}

/// Address of [`proxy_contract`].
pub fn proxy_contract_address(
    params: &CocoonParams,
    root_address: &StdAddr,
    proxy_owner: &StdAddr,
    proxy_public_key: &[u8; 32],
) -> Result<StdAddr> {
    Ok(proxy_contract(params, root_address, proxy_owner, proxy_public_key)?.address)
}

/// The client contract of `client_owner` (the client's cocoon wallet address,
/// §11 item 8) at proxy contract `proxy_sc`, using `params.client_sc_code`.
pub fn client_contract(
    params: &CocoonParams,
    client_owner: &StdAddr,
    proxy_sc: &StdAddr,
    proxy_public_key: &[u8; 32],
) -> Result<ContractInit> {
    let data = client_data_cell(params, client_owner, proxy_sc, proxy_public_key)?;
    ContractInit::new(code(&params.client_sc_code, "client")?.clone(), data)
}

/// Address of [`client_contract`].
pub fn client_contract_address(
    params: &CocoonParams,
    client_owner: &StdAddr,
    proxy_sc: &StdAddr,
    proxy_public_key: &[u8; 32],
) -> Result<StdAddr> {
    Ok(client_contract(params, client_owner, proxy_sc, proxy_public_key)?.address)
}

/// The worker contract of `worker_owner` (the worker's configured
/// `owner_address`) at proxy contract `proxy_sc`, using `params.worker_sc_code`.
pub fn worker_contract(
    params: &CocoonParams,
    worker_owner: &StdAddr,
    proxy_sc: &StdAddr,
    proxy_public_key: &[u8; 32],
) -> Result<ContractInit> {
    let data = worker_data_cell(params, worker_owner, proxy_sc, proxy_public_key)?;
    ContractInit::new(code(&params.worker_sc_code, "worker")?.clone(), data)
}

/// Address of [`worker_contract`].
pub fn worker_contract_address(
    params: &CocoonParams,
    worker_owner: &StdAddr,
    proxy_sc: &StdAddr,
    proxy_public_key: &[u8; 32],
) -> Result<StdAddr> {
    Ok(worker_contract(params, worker_owner, proxy_sc, proxy_public_key)?.address)
}

/// A cocoon wallet with the given code (the official one from
/// [`crate::wallet::official_cocoon_wallet_code`] or ours).
pub fn cocoon_wallet_contract(
    wallet_code: &Cell,
    public_key: &[u8; 32],
    owner: &StdAddr,
) -> Result<ContractInit> {
    ContractInit::new(
        wallet_code.clone(),
        cocoon_wallet_data_cell(public_key, owner)?,
    )
}

/// State of a per-party contract (`state:uint2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContractStatus {
    /// 0: normal, queries allowed.
    Normal,
    /// 1: closing (waiting for `unlock_ts`).
    Closing,
    /// 2: closed.
    Closed,
    /// 3: not used by the contracts.
    Unknown,
}

impl ContractStatus {
    /// From the 2-bit field.
    pub fn from_bits(v: u8) -> Self {
        match v {
            0 => ContractStatus::Normal,
            1 => ContractStatus::Closing,
            2 => ContractStatus::Closed,
            _ => ContractStatus::Unknown,
        }
    }

    /// The 2-bit value.
    pub fn bits(self) -> u8 {
        match self {
            ContractStatus::Normal => 0,
            ContractStatus::Closing => 1,
            ContractStatus::Closed => 2,
            ContractStatus::Unknown => 3,
        }
    }
}

/// The data of a proxy contract as read back by the runners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyContractState {
    /// Proxy owner.
    pub owner: StdAddr,
    /// Proxy public key.
    pub public_key: [u8; 32],
    /// Root contract.
    pub root: StdAddr,
    /// Status.
    pub status: ContractStatus,
    /// Commission earned and ready for withdrawal (nanoTON).
    pub balance: u64,
    /// Stake (nanoTON).
    pub stake: u64,
    /// When closing may complete.
    pub unlock_ts: u32,
    /// The params stored in the contract (with worker and client code).
    pub params: Cell,
}

impl ProxyContractState {
    /// Parses the data cell.
    pub fn from_data(data: &Cell) -> Result<Self> {
        let mut s = open(data)?;
        let st = ProxyContractState {
            owner: load_address(&mut s)?,
            public_key: s.load_u256()?.0,
            root: load_address(&mut s)?,
            status: ContractStatus::from_bits(s.load_small_uint(2)?),
            balance: load_coins(&mut s)?,
            stake: load_coins(&mut s)?,
            unlock_ts: s.load_u32()?,
            params: s.load_reference_cloned()?,
        };
        expect_end(&s, "proxy contract data")?;
        Ok(st)
    }

    /// Builds the data cell (the inverse of [`ProxyContractState::from_data`]).
    pub fn to_data(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        store_address(&mut b, &self.owner)?;
        b.store_u256(&HashBytes(self.public_key))?;
        store_address(&mut b, &self.root)?;
        b.store_small_uint(self.status.bits(), 2)?;
        store_coins(&mut b, self.balance)?;
        store_coins(&mut b, self.stake)?;
        b.store_u32(self.unlock_ts)?;
        b.store_reference(self.params.clone())?;
        Ok(b.build()?)
    }
}

/// The data of a client contract as read back by the runners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientContractState {
    /// Status.
    pub status: ContractStatus,
    /// Balance (bookkeeping, nanoTON).
    pub balance: u64,
    /// Stake (nanoTON).
    pub stake: u64,
    /// Tokens charged on chain.
    pub tokens_used: u64,
    /// When closing may complete.
    pub unlock_ts: u32,
    /// `sha256(secret)` or zero.
    pub secret_hash: [u8; 32],
    /// Owner (the client's cocoon wallet).
    pub owner: StdAddr,
    /// Proxy contract.
    pub proxy_sc: StdAddr,
    /// Proxy public key.
    pub proxy_public_key: [u8; 32],
    /// Params stored in the contract (no code).
    pub params: Cell,
}

impl ClientContractState {
    /// Parses the data cell.
    pub fn from_data(data: &Cell) -> Result<Self> {
        let mut s = open(data)?;
        let status = ContractStatus::from_bits(s.load_small_uint(2)?);
        let balance = load_coins(&mut s)?;
        let stake = load_coins(&mut s)?;
        let tokens_used = s.load_u64()?;
        let unlock_ts = s.load_u32()?;
        let secret_hash = s.load_u256()?.0;
        let consts = s.load_reference_cloned()?;
        let params = s.load_reference_cloned()?;
        expect_end(&s, "client contract data")?;
        let mut c = open(&consts)?;
        let owner = load_address(&mut c)?;
        let proxy_sc = load_address(&mut c)?;
        let proxy_public_key = c.load_u256()?.0;
        expect_end(&c, "client contract constants")?;
        Ok(ClientContractState {
            status,
            balance,
            stake,
            tokens_used,
            unlock_ts,
            secret_hash,
            owner,
            proxy_sc,
            proxy_public_key,
            params,
        })
    }

    /// Builds the data cell (the inverse of [`ClientContractState::from_data`]).
    pub fn to_data(&self) -> Result<Cell> {
        let mut c = CellBuilder::new();
        store_address(&mut c, &self.owner)?;
        store_address(&mut c, &self.proxy_sc)?;
        c.store_u256(&HashBytes(self.proxy_public_key))?;
        let mut b = CellBuilder::new();
        b.store_small_uint(self.status.bits(), 2)?;
        store_coins(&mut b, self.balance)?;
        store_coins(&mut b, self.stake)?;
        b.store_u64(self.tokens_used)?;
        b.store_u32(self.unlock_ts)?;
        b.store_u256(&HashBytes(self.secret_hash))?;
        b.store_reference(c.build()?)?;
        b.store_reference(self.params.clone())?;
        Ok(b.build()?)
    }
}

/// The data of a worker contract as read back by the runners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerContractState {
    /// Worker owner.
    pub owner: StdAddr,
    /// Proxy contract.
    pub proxy_sc: StdAddr,
    /// Proxy public key.
    pub proxy_public_key: [u8; 32],
    /// Status.
    pub status: ContractStatus,
    /// Tokens paid out so far.
    pub tokens: u64,
    /// Params stored in the contract (no code).
    pub params: Cell,
}

impl WorkerContractState {
    /// Parses the data cell.
    pub fn from_data(data: &Cell) -> Result<Self> {
        let mut s = open(data)?;
        let st = WorkerContractState {
            owner: load_address(&mut s)?,
            proxy_sc: load_address(&mut s)?,
            proxy_public_key: s.load_u256()?.0,
            status: ContractStatus::from_bits(s.load_small_uint(2)?),
            tokens: s.load_u64()?,
            params: s.load_reference_cloned()?,
        };
        expect_end(&s, "worker contract data")?;
        Ok(st)
    }

    /// Builds the data cell (the inverse of [`WorkerContractState::from_data`]).
    pub fn to_data(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        store_address(&mut b, &self.owner)?;
        store_address(&mut b, &self.proxy_sc)?;
        b.store_u256(&HashBytes(self.proxy_public_key))?;
        b.store_small_uint(self.status.bits(), 2)?;
        b.store_u64(self.tokens)?;
        b.store_reference(self.params.clone())?;
        Ok(b.build()?)
    }
}

/// The data of a cocoon wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CocoonWalletState {
    /// Next seqno to sign with.
    pub seqno: u32,
    /// Subwallet id.
    pub subwallet: u32,
    /// Public key.
    pub public_key: [u8; 32],
    /// Status bits (bit 0 = blocked).
    pub status: u32,
    /// Owner.
    pub owner: StdAddr,
}

impl CocoonWalletState {
    /// Parses the data cell.
    pub fn from_data(data: &Cell) -> Result<Self> {
        let mut s = open(data)?;
        let st = CocoonWalletState {
            seqno: s.load_u32()?,
            subwallet: s.load_u32()?,
            public_key: s.load_u256()?.0,
            status: s.load_u32()?,
            owner: load_address(&mut s)?,
        };
        expect_end(&s, "cocoon wallet data")?;
        Ok(st)
    }

    /// Builds the data cell (the inverse of [`CocoonWalletState::from_data`]).
    pub fn to_data(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        b.store_u32(self.seqno)?;
        b.store_u32(self.subwallet)?;
        b.store_u256(&HashBytes(self.public_key))?;
        b.store_u32(self.status)?;
        store_address(&mut b, &self.owner)?;
        Ok(b.build()?)
    }
}
