//! **fake-TON: no chain; for development and tests.**
//!
//! [`FakeTon`] is a stand-in [`ChainBackend`] in the spirit of COCOON's
//! `--disable-ton` mode (spec §6.5). There is no blockchain and no contract code
//! runs. Instead:
//! * the root contract is an account whose data cell is built from a
//!   [`RootConfig`] (loaded from a pseudo root config file, see [`crate::pseudo`]),
//!   so roles read it the same way as on a real chain;
//! * accounts can be pseudo-funded ([`FakeTon::fund`]); an account deployed by a
//!   message with a StateInit gets [`FakeTon::DEFAULT_DEPLOY_BALANCE`] if it has none
//!   (the C++ pseudo-deploys with 100 TON);
//! * a client contract (code = the root's client code) deployed that way is
//!   pseudo-funded: booked balance and stake [`FakeTon::PSEUDO_CLIENT_FUNDS`],
//!   secret hash `sha256("")`, as the C++ pseudo state;
//! * an external message to an account without code (and without a StateInit)
//!   is refused, as on a real chain;
//! * every other external message is accepted at once and recorded
//!   ([`FakeTon::sent_externals`]); one addressed to a cocoon wallet is checked
//!   (signature, seqno) and its internal messages are delivered at once as
//!   transactions of their destinations ([`FakeTon::delivered`]), with the
//!   value moved between pseudo balances;
//! * get-methods: only `seqno` and `get_public_key` of cocoon wallets.
//!
//! Contract logic (charges, payouts, state changes of per-party contracts) is
//! **not** simulated; tests that need it should use a TVM-backed chain.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tycho_types::cell::{Cell, CellBuilder, CellFamily};
use tycho_types::models::StdAddr;

use crate::cells::{from_boc, open};
use crate::chain::{
    AccountState, AccountStatus, BoxFuture, ChainBackend, ChainError, ChainResult, GetMethodResult,
    StackValue, Transaction, TxId, TxMessage, TxPage,
};
use crate::contracts::ClientContractState;
use crate::messages::Body;
use crate::root::RootConfig;
use crate::wallet::{CocoonWalletRequest, ExternalMessage, InternalMessage};

#[derive(Debug, Clone)]
struct FakeAccount {
    balance: u64,
    code: Option<Cell>,
    data: Option<Cell>,
    txs: Vec<Transaction>,
}

impl FakeAccount {
    fn empty() -> Self {
        FakeAccount {
            balance: 0,
            code: None,
            data: None,
            txs: Vec::new(),
        }
    }
}

/// An external message the fake chain accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentExternal {
    /// The decoded message.
    pub message: ExternalMessage,
    /// Hash of the message cell.
    pub hash: [u8; 32],
    /// Chain time it was accepted at.
    pub utime: u32,
}

/// An internal message the fake chain delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Sender (the wallet).
    pub source: StdAddr,
    /// The message as sent.
    pub message: InternalMessage,
    /// The body decoded as a COCOON message, when it is one.
    pub body: Option<Body>,
}

#[derive(Debug)]
struct State {
    accounts: HashMap<StdAddr, FakeAccount>,
    sent: Vec<SentExternal>,
    delivered: Vec<Delivered>,
    lt: u64,
    clock: Option<u32>,
    root_address: StdAddr,
    root_config: RootConfig,
}

/// The fake-TON stand-in chain. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct FakeTon {
    state: Mutex<State>,
    testnet: bool,
}

fn system_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

fn parse_state_init(cell: &Cell) -> ChainResult<(Cell, Cell)> {
    let mut s = open(cell)?;
    let bad = |r: &str| ChainError::Rejected(format!("StateInit: {r}"));
    if s.load_bit().map_err(crate::TonError::from)? {
        return Err(bad("split_depth not supported"));
    }
    if s.load_bit().map_err(crate::TonError::from)? {
        return Err(bad("special not supported"));
    }
    let mut take = || -> ChainResult<Option<Cell>> {
        if s.load_bit().map_err(crate::TonError::from)? {
            Ok(Some(
                s.load_reference_cloned().map_err(crate::TonError::from)?,
            ))
        } else {
            Ok(None)
        }
    };
    let code = take()?.ok_or_else(|| bad("no code"))?;
    let data = take()?.ok_or_else(|| bad("no data"))?;
    Ok((code, data))
}

impl FakeTon {
    /// Balance given to an account deployed without funds (100 TON, as the C++).
    pub const DEFAULT_DEPLOY_BALANCE: u64 = 100 * crate::root::ONE_TON;
    /// Booked balance and stake of a pseudo-funded client contract (10^6 TON,
    /// as the C++ `ClientContract::init_pseudo_state`).
    pub const PSEUDO_CLIENT_FUNDS: u64 = 1_000_000 * crate::root::ONE_TON;

    /// A fake chain whose root at `root_address` holds `root_config`.
    /// `testnet` is only used when printing addresses in errors.
    pub fn new(
        root_address: StdAddr,
        root_config: RootConfig,
        testnet: bool,
    ) -> crate::Result<Self> {
        let mut accounts = HashMap::new();
        accounts.insert(
            root_address.clone(),
            FakeAccount {
                balance: Self::DEFAULT_DEPLOY_BALANCE,
                code: Some(Cell::empty_cell()),
                data: Some(root_config.to_data_cell()?),
                txs: Vec::new(),
            },
        );
        Ok(FakeTon {
            state: Mutex::new(State {
                accounts,
                sent: Vec::new(),
                delivered: Vec::new(),
                lt: 1_000,
                clock: None,
                root_address,
                root_config,
            }),
            testnet,
        })
    }

    /// A fake chain from a pseudo root config file (JSON or `.toml`).
    pub fn from_pseudo_file(
        root_address: StdAddr,
        path: &std::path::Path,
        testnet: bool,
    ) -> crate::Result<Self> {
        Self::new(
            root_address,
            crate::pseudo::root_config_from_file(path)?,
            testnet,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether addresses are meant for testnet.
    pub fn is_testnet(&self) -> bool {
        self.testnet
    }

    /// The root contract address.
    pub fn root_address(&self) -> StdAddr {
        self.lock().root_address.clone()
    }

    /// The current root config.
    pub fn root_config(&self) -> RootConfig {
        self.lock().root_config.clone()
    }

    /// Replaces the root config (simulates an admin change; bump `version`
    /// yourself, and `params_version` for a contract rotation).
    pub fn set_root_config(&self, cfg: RootConfig) -> crate::Result<()> {
        let data = cfg.to_data_cell()?;
        let mut st = self.lock();
        let root = st.root_address.clone();
        st.accounts
            .entry(root)
            .or_insert_with(FakeAccount::empty)
            .data = Some(data);
        st.root_config = cfg;
        Ok(())
    }

    /// Pseudo-funds an account (adds `amount` nanoTON; creates it if needed).
    pub fn fund(&self, address: &StdAddr, amount: u64) {
        let mut st = self.lock();
        let a = st
            .accounts
            .entry(address.clone())
            .or_insert_with(FakeAccount::empty);
        a.balance = a.balance.saturating_add(amount);
    }

    /// Replaces the data of an account (e.g. to simulate a contract state change
    /// that the fake chain does not compute, such as a charge or a closing).
    pub fn set_data(&self, address: &StdAddr, data: Cell) {
        let mut st = self.lock();
        st.accounts
            .entry(address.clone())
            .or_insert_with(FakeAccount::empty)
            .data = Some(data);
    }

    /// Marks an account deployed with `code` and `data` (pseudo-deploy).
    pub fn deploy(&self, address: &StdAddr, code: Cell, data: Cell) {
        let mut st = self.lock();
        let a = st
            .accounts
            .entry(address.clone())
            .or_insert_with(FakeAccount::empty);
        if a.balance == 0 {
            a.balance = Self::DEFAULT_DEPLOY_BALANCE;
        }
        a.code = Some(code);
        a.data = Some(data);
    }

    /// Fixes the chain clock (`None` = system time).
    pub fn set_time(&self, utime: Option<u32>) {
        self.lock().clock = utime;
    }

    /// Moves a fixed clock forward (starting from system time if none is set).
    pub fn advance_time(&self, secs: u32) {
        let mut st = self.lock();
        let now = st.clock.unwrap_or_else(system_now);
        st.clock = Some(now.saturating_add(secs));
    }

    /// All external messages accepted so far.
    pub fn sent_externals(&self) -> Vec<SentExternal> {
        self.lock().sent.clone()
    }

    /// All internal messages delivered so far (from cocoon wallet requests).
    pub fn delivered(&self) -> Vec<Delivered> {
        self.lock().delivered.clone()
    }

    /// Pseudo balance of an account (0 if unknown).
    pub fn balance(&self, address: &StdAddr) -> u64 {
        self.lock().accounts.get(address).map_or(0, |a| a.balance)
    }

    fn record_tx(st: &mut State, addr: &StdAddr, in_msg: TxMessage, utime: u32) -> TxId {
        st.lt += 1;
        let mut h = Sha256::new();
        h.update(st.lt.to_be_bytes());
        h.update(addr.address.0);
        h.update(in_msg.body.repr_hash().0);
        let id = TxId {
            lt: st.lt,
            hash: h.finalize().into(),
        };
        let acc = st
            .accounts
            .entry(addr.clone())
            .or_insert_with(FakeAccount::empty);
        acc.txs.push(Transaction {
            id,
            utime,
            in_msg: Some(in_msg),
            out_msgs: Vec::new(),
            success: true,
        });
        id
    }

    fn apply_state_init(st: &mut State, addr: &StdAddr, si: &Cell) -> ChainResult<()> {
        let expected = *si.repr_hash();
        if addr.address != expected {
            return Err(ChainError::Rejected(
                "StateInit hash does not match the destination address".into(),
            ));
        }
        let (code, mut data) = parse_state_init(si)?;
        // Clients are pseudo-funded, as in COCOON's --disable-ton mode.
        let is_client = st
            .root_config
            .params
            .client_sc_code
            .as_ref()
            .is_some_and(|c| c.repr_hash() == code.repr_hash());
        if is_client {
            if let Ok(mut cs) = ClientContractState::from_data(&data) {
                cs.balance = Self::PSEUDO_CLIENT_FUNDS;
                cs.stake = Self::PSEUDO_CLIENT_FUNDS;
                cs.secret_hash = Sha256::digest(b"").into();
                data = cs.to_data()?;
            }
        }
        let acc = st
            .accounts
            .entry(addr.clone())
            .or_insert_with(FakeAccount::empty);
        if acc.data.is_none() {
            acc.code = Some(code);
            acc.data = Some(data);
            if acc.balance == 0 {
                acc.balance = Self::DEFAULT_DEPLOY_BALANCE;
            }
        }
        Ok(())
    }

    fn apply_external(&self, boc: &[u8]) -> ChainResult<[u8; 32]> {
        let cell = from_boc(boc)?;
        let hash = cell.repr_hash().0;
        let msg = ExternalMessage::from_cell(&cell)?;
        let mut st = self.lock();
        let utime = st.clock.unwrap_or_else(system_now);
        if let Some(si) = &msg.state_init {
            Self::apply_state_init(&mut st, &msg.dest, si)?;
        }
        // Like a real chain, an external message to an account without code
        // (and no StateInit attached) is not accepted.
        let Some(wallet_data) = st.accounts.get(&msg.dest).and_then(|a| a.data.clone()) else {
            return Err(ChainError::Rejected(
                "external message to an undeployed account without StateInit".into(),
            ));
        };
        // A cocoon wallet request: check it as the wallet contract would, then
        // deliver its messages.
        let data = wallet_data;
        if let Ok(req) = CocoonWalletRequest::from_cell(&msg.body) {
            if let Some((seqno, pk)) = wallet_seqno_and_key(&data) {
                if req.valid_until <= utime {
                    return Err(ChainError::Rejected("wallet request expired".into()));
                }
                if req.seqno != seqno {
                    return Err(ChainError::Rejected(format!(
                        "wallet seqno {} != {}",
                        req.seqno, seqno
                    )));
                }
                req.verify(&pk)
                    .map_err(|e| ChainError::Rejected(format!("wallet signature: {e}")))?;
                let new_data = bump_seqno(&data)?;
                if let Some(acc) = st.accounts.get_mut(&msg.dest) {
                    acc.data = Some(new_data);
                }
                Self::record_tx(
                    &mut st,
                    &msg.dest,
                    TxMessage {
                        source: None,
                        dest: Some(msg.dest.clone()),
                        value: 0,
                        body: msg.body.clone(),
                    },
                    utime,
                );
                for (_mode, mcell) in &req.messages {
                    let m = InternalMessage::from_cell(mcell)?;
                    if let Some(si) = &m.state_init {
                        Self::apply_state_init(&mut st, &m.dest, si)?;
                    }
                    if let Some(w) = st.accounts.get_mut(&msg.dest) {
                        w.balance = w.balance.saturating_sub(m.value);
                    }
                    let d = st
                        .accounts
                        .entry(m.dest.clone())
                        .or_insert_with(FakeAccount::empty);
                    d.balance = d.balance.saturating_add(m.value);
                    let body = m.body.clone().unwrap_or_else(Cell::empty_cell);
                    Self::record_tx(
                        &mut st,
                        &m.dest,
                        TxMessage {
                            source: Some(msg.dest.clone()),
                            dest: Some(m.dest.clone()),
                            value: m.value,
                            body: body.clone(),
                        },
                        utime,
                    );
                    let parsed = m.body.as_ref().and_then(|b| Body::parse(b).ok());
                    st.delivered.push(Delivered {
                        source: msg.dest.clone(),
                        message: m,
                        body: parsed,
                    });
                }
                st.sent.push(SentExternal {
                    message: msg,
                    hash,
                    utime,
                });
                return Ok(hash);
            }
        }
        Self::record_tx(
            &mut st,
            &msg.dest.clone(),
            TxMessage {
                source: None,
                dest: Some(msg.dest.clone()),
                value: 0,
                body: msg.body.clone(),
            },
            utime,
        );
        st.sent.push(SentExternal {
            message: msg,
            hash,
            utime,
        });
        Ok(hash)
    }
}

/// Reads `seqno` and `public_key` from a cocoon-wallet-shaped data cell
/// (`seqno:32 subwallet:32 public_key:256 status:32 owner`).
fn wallet_seqno_and_key(data: &Cell) -> Option<(u32, [u8; 32])> {
    let mut s = data.as_slice().ok()?;
    if s.size_bits() != 32 + 32 + 256 + 32 + crate::cells::ADDRESS_BITS || s.size_refs() != 0 {
        return None;
    }
    let seqno = s.load_u32().ok()?;
    let _sub = s.load_u32().ok()?;
    let pk = s.load_u256().ok()?.0;
    Some((seqno, pk))
}

fn bump_seqno(data: &Cell) -> crate::Result<Cell> {
    let mut s = open(data)?;
    let seqno = s.load_u32()?;
    let mut b = CellBuilder::new();
    b.store_u32(seqno.wrapping_add(1))?;
    b.store_slice(s)?;
    Ok(b.build()?)
}

impl ChainBackend for FakeTon {
    fn account_state<'a>(
        &'a self,
        address: &'a StdAddr,
    ) -> BoxFuture<'a, ChainResult<AccountState>> {
        Box::pin(async move {
            let st = self.lock();
            let now = st.clock.unwrap_or_else(system_now);
            Ok(match st.accounts.get(address) {
                None => AccountState::nonexistent(now),
                Some(a) => AccountState {
                    status: if a.data.is_some() {
                        AccountStatus::Active
                    } else {
                        AccountStatus::Uninit
                    },
                    balance: a.balance,
                    code: a.code.clone(),
                    data: a.data.clone(),
                    last_tx: a.txs.last().map(|t| t.id),
                    sync_utime: now,
                },
            })
        })
    }

    fn run_get_method<'a>(
        &'a self,
        address: &'a StdAddr,
        method: &'a str,
        _args: Vec<StackValue>,
    ) -> BoxFuture<'a, ChainResult<GetMethodResult>> {
        Box::pin(async move {
            let st = self.lock();
            let data = st.accounts.get(address).and_then(|a| a.data.clone());
            let wallet = data.as_ref().and_then(wallet_seqno_and_key);
            match (method, wallet) {
                ("seqno", Some((seqno, _))) => Ok(GetMethodResult {
                    exit_code: 0,
                    stack: vec![StackValue::Int(seqno.into())],
                }),
                ("get_public_key", Some((_, pk))) => Ok(GetMethodResult {
                    exit_code: 0,
                    stack: vec![StackValue::Uint256(pk)],
                }),
                _ => Err(ChainError::Unsupported(format!(
                    "fake-TON runs no contract code (get-method {method})"
                ))),
            }
        })
    }

    fn send_external<'a>(&'a self, boc: Vec<u8>) -> BoxFuture<'a, ChainResult<[u8; 32]>> {
        Box::pin(async move { self.apply_external(&boc) })
    }

    fn transactions<'a>(
        &'a self,
        address: &'a StdAddr,
        after: Option<TxId>,
        limit: usize,
    ) -> BoxFuture<'a, ChainResult<TxPage>> {
        Box::pin(async move {
            let st = self.lock();
            let Some(acc) = st.accounts.get(address) else {
                return Ok(TxPage {
                    transactions: Vec::new(),
                    cursor: after,
                    more: false,
                });
            };
            let after_lt = after.map_or(0, |t| t.lt);
            let newer: Vec<&Transaction> = acc.txs.iter().filter(|t| t.id.lt > after_lt).collect();
            let more = newer.len() > limit;
            let transactions: Vec<Transaction> = newer.into_iter().take(limit).cloned().collect();
            let cursor = transactions.last().map(|t| t.id).or(after);
            Ok(TxPage {
                transactions,
                cursor,
                more,
            })
        })
    }

    fn now(&self) -> BoxFuture<'_, ChainResult<u32>> {
        Box::pin(async move { Ok(self.lock().clock.unwrap_or_else(system_now)) })
    }
}
