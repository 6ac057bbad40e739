//! **The local chain: a real TVM running our contracts, in-process, for
//! development and tests.**
//!
//! [`LocalChain`] is a [`ChainBackend`] that executes transactions with
//! `tycho-executor` (a pure-Rust TON-compatible transaction executor and TVM)
//! on the compiled contract code committed in `contracts/build`. It is a
//! **single-node, in-memory chain without consensus, blocks, shards or
//! validators**: one process owns the state, and every external message is
//! executed to completion before [`ChainBackend::send_external`] returns.
//!
//! What it does:
//! * keeps accounts (`ShardAccount`s, exactly as a shard state would), one
//!   global logical time and a unix time ([`Clock`]: the system clock with an
//!   offset, or a fixed time tests move by hand);
//! * executes an inbound external message as an ordinary transaction; an
//!   external the contract does not accept is refused
//!   ([`LocalChainError::NotAccepted`], with the exit code), as a real
//!   validator would drop it;
//! * routes every outgoing internal message (bounces included) back to its
//!   destination as a new transaction, in order, until no message is left; a
//!   cascade longer than [`LocalChain::set_max_transactions`] is rolled back
//!   whole and reported as [`LocalChainError::Runaway`];
//! * records every transaction (the TL-B `Transaction` cell and a
//!   [`Transaction`] summary) per account, so [`TxFollower`](crate::chain::TxFollower)
//!   works as on a real chain;
//! * runs get-methods with `tycho-vm`;
//! * starts from a [`GenesisConfig`]: our root contract with its params and
//!   codes, cocoon wallets for given keys, funded accounts; a faucet
//!   ([`LocalChain::fund`]) mints coins later by delivering an internal message
//!   from [`FAUCET_ADDRESS`];
//! * keeps the books: every nanoTON minted is in an account balance, in the
//!   fees collected or burned ([`LocalChain::supply`]);
//! * persists to a directory and loads back ([`LocalChain::open`]), so
//!   `cocoon devnet --dir` continues where it stopped.
//!
//! Fees come from TON mainnet's config (see [`config`]). `tycho-vm` aims at
//! bit-for-bit TVM compatibility but is not the C++ TVM: contract paths that
//! matter are cross-checked against @ton/sandbox in this crate's tests.

pub mod codes;
pub mod config;
mod genesis;
mod persist;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tycho_executor::{Executor, ExecutorInspector, ExecutorParams, ParsedConfig, TxError};
use tycho_types::cell::{Cell, CellBuilder, CellFamily, HashBytes, Lazy};
use tycho_types::models::{
    Account, AccountState as TlbAccountState, CurrencyCollection, IntAddr, IntMsgInfo, MsgInfo,
    OptionalAccount, OwnedMessage, ShardAccount, StdAddr, StorageInfo, StorageUsed,
    Transaction as TlbTransaction, TxInfo,
};
use tycho_types::num::Tokens;
use tycho_vm::{OwnedCellSlice, RcStackValue, SafeRc, Stack, VmCaller, VmGetterArgs};

use crate::chain::{
    AccountState, AccountStatus, BoxFuture, ChainBackend, ChainError, ChainResult, GetMethodResult,
    StackValue, Transaction, TxId, TxPage,
};
use crate::error::TonError;
use crate::root::RootConfig;

pub use genesis::{GenesisConfig, GenesisRoot, GenesisWallet};

/// The sender of faucet messages ([`LocalChain::fund`]): `0:fa…fa`. No account
/// lives there; its messages create the coins they carry.
pub const FAUCET_ADDRESS: StdAddr = StdAddr {
    anycast: None,
    workchain: 0,
    address: HashBytes([0xfa; 32]),
};

/// Default bound on the transactions one message may cause ([`LocalChain::set_max_transactions`]).
pub const DEFAULT_MAX_TRANSACTIONS: usize = 1_000;

/// Errors of the local chain.
#[derive(Debug, Error)]
pub enum LocalChainError {
    /// The message could not be read or is not one the chain accepts.
    #[error("bad message: {0}")]
    BadMessage(String),
    /// The destination did not accept the external message (no transaction).
    #[error("external message not accepted by {address}: exit code {exit_code:?}")]
    NotAccepted {
        /// Destination (raw form).
        address: String,
        /// Compute phase exit code, when the VM ran.
        exit_code: Option<i32>,
    },
    /// A message caused more transactions than allowed; nothing was applied.
    #[error("message cascade did not settle within {0} transactions (runaway loop?); rolled back")]
    Runaway(usize),
    /// The executor failed (not a contract failure: those are transactions).
    #[error("executor: {0}")]
    Executor(String),
    /// The blockchain config could not be used.
    #[error("blockchain config: {0}")]
    Config(String),
    /// The account has no code (get-methods) or does not exist.
    #[error("account {0} is not active")]
    NotActive(String),
    /// A get-method could not be run or its result could not be read.
    #[error("get-method {method}: {reason}")]
    GetMethod {
        /// Method name.
        method: String,
        /// What went wrong.
        reason: String,
    },
    /// Reading or writing the state directory failed.
    #[error("state directory {path}: {reason}")]
    Persist {
        /// The file concerned.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Another [`LocalChain`] (in this or another process) has the state
    /// directory open: a directory has one owner at a time.
    #[error("state directory {path}: {}", in_use(*pid))]
    InUse {
        /// The lock file.
        path: PathBuf,
        /// The holder's process id, when it could be read.
        pid: Option<u32>,
    },
    /// A cell, BOC or layout problem.
    #[error(transparent)]
    Ton(#[from] TonError),
}

fn in_use(pid: Option<u32>) -> String {
    match pid {
        Some(p) if p == std::process::id() => format!("already open in this process (pid {p})"),
        Some(p) => format!("in use by another process (pid {p})"),
        None => "in use by another process".into(),
    }
}

impl From<tycho_types::error::Error> for LocalChainError {
    fn from(e: tycho_types::error::Error) -> Self {
        LocalChainError::Ton(TonError::Cell(e))
    }
}

impl From<LocalChainError> for ChainError {
    fn from(e: LocalChainError) -> Self {
        match e {
            LocalChainError::BadMessage(_)
            | LocalChainError::NotAccepted { .. }
            | LocalChainError::Runaway(_) => ChainError::Rejected(e.to_string()),
            LocalChainError::Ton(t) => ChainError::Ton(t),
            other => ChainError::Transport(other.to_string()),
        }
    }
}

/// Result of local chain operations.
pub type LocalResult<T> = std::result::Result<T, LocalChainError>;

/// Where the chain's unix time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    /// The system clock plus `offset` seconds (moved by [`LocalChain::advance_time`]).
    System {
        /// Seconds added to the system clock.
        offset: u32,
    },
    /// A fixed time, moved only by [`LocalChain::advance_time`] / [`LocalChain::set_time`].
    Fixed(u32),
}

impl Clock {
    /// The system clock.
    pub const SYSTEM: Clock = Clock::System { offset: 0 };

    fn read(&self) -> u32 {
        match *self {
            Clock::System { offset } => system_now().saturating_add(offset),
            Clock::Fixed(t) => t,
        }
    }
}

fn system_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

/// One executed transaction, as recorded by the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutedTx {
    /// Account of the transaction.
    pub address: StdAddr,
    /// The TL-B `Transaction` cell (its hash is the transaction hash).
    pub cell: Cell,
    /// Summary (what [`ChainBackend::transactions`] returns).
    pub summary: Transaction,
    /// Total fees of the transaction in nanoTON.
    pub total_fees: u64,
    /// Compute phase exit code (`None` when the compute phase was skipped).
    pub exit_code: Option<i32>,
    /// Action phase result code (`None` when there was no action phase).
    pub action_result: Option<i32>,
    /// Whether the transaction was aborted (compute or action phase failed).
    pub aborted: bool,
    /// Whether a bounce message was produced.
    pub bounced: bool,
}

impl ExecutedTx {
    fn from_cell(address: StdAddr, cell: Cell) -> LocalResult<Self> {
        let tx: TlbTransaction = cell.parse::<TlbTransaction>()?;
        let info = tx.load_info()?;
        let (exit_code, action_result, aborted, bounced) = match &info {
            TxInfo::Ordinary(o) => {
                let exit_code = match &o.compute_phase {
                    tycho_types::models::ComputePhase::Executed(c) => Some(c.exit_code),
                    tycho_types::models::ComputePhase::Skipped(_) => None,
                };
                (
                    exit_code,
                    o.action_phase.as_ref().map(|a| a.result_code),
                    o.aborted,
                    o.bounce_phase.is_some(),
                )
            }
            TxInfo::TickTock(_) => (None, None, false, false),
        };
        // The summary (messages, success) is read as any backend reads a
        // transaction cell.
        let summary = Transaction::from_cell(&cell)?;
        Ok(ExecutedTx {
            address,
            total_fees: tokens_u64(tx.total_fees.tokens)?,
            cell,
            summary,
            exit_code,
            action_result,
            aborted,
            bounced,
        })
    }
}

/// What one message (external or faucet) caused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionReport {
    /// Hash of the inbound message cell.
    pub message_hash: [u8; 32],
    /// Every transaction of the cascade, in execution order (the first is the
    /// one of the message's destination).
    pub transactions: Vec<ExecutedTx>,
}

impl ExecutionReport {
    /// The transactions of `address`.
    pub fn on<'a>(&'a self, address: &'a StdAddr) -> impl Iterator<Item = &'a ExecutedTx> + 'a {
        self.transactions
            .iter()
            .filter(move |t| &t.address == address)
    }

    /// Whether every transaction succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.transactions.iter().all(|t| t.summary.success)
    }
}

/// Where the coins are: `minted == balances + fees + burned` at all times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Supply {
    /// Coins created at genesis and by the faucet.
    pub minted: u128,
    /// Sum of all account balances.
    pub balances: u128,
    /// Fees collected: transaction fees plus the forwarding fees messages carried.
    pub fees: u128,
    /// Coins burned by the executor or sent where no account can live.
    pub burned: u128,
}

impl Supply {
    /// Whether the books balance to the nanoTON.
    pub fn is_conserved(&self) -> bool {
        self.minted == self.balances + self.fees + self.burned
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Ledger {
    minted: u128,
    fees: u128,
    burned: u128,
}

struct Inner {
    config_cell: Cell,
    config: ParsedConfig,
    accounts: BTreeMap<StdAddr, ShardAccount>,
    log: Vec<ExecutedTx>,
    by_account: HashMap<StdAddr, Vec<usize>>,
    lt: u64,
    clock: Clock,
    last_utime: u32,
    ledger: Ledger,
    root: Option<StdAddr>,
    dir: Option<PathBuf>,
    persisted_txs: usize,
    max_transactions: usize,
}

/// The embedded TVM chain. Cheap to share behind an `Arc`; every method takes
/// `&self` (one internal lock serialises execution, as one validator would).
///
/// A chain opened from a directory ([`LocalChain::open`],
/// [`LocalChain::genesis_in`], [`LocalChain::open_or_genesis`]) holds that
/// directory's exclusive lock until it is dropped: a second opener, in this or
/// another process, gets [`LocalChainError::InUse`].
pub struct LocalChain {
    inner: Mutex<Inner>,
    _dir_lock: Option<persist::DirLock>,
}

impl std::fmt::Debug for LocalChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("LocalChain")
            .field("accounts", &st.accounts.len())
            .field("transactions", &st.log.len())
            .field("lt", &st.lt)
            .field("dir", &st.dir)
            .finish()
    }
}

fn tokens_u64(t: Tokens) -> LocalResult<u64> {
    u64::try_from(t.into_inner())
        .map_err(|_| LocalChainError::BadMessage("amount above u64 nanoTON".into()))
}

fn empty_shard_account() -> LocalResult<ShardAccount> {
    Ok(ShardAccount {
        account: Lazy::new(&OptionalAccount::EMPTY)?,
        last_trans_hash: HashBytes::ZERO,
        last_trans_lt: 0,
    })
}

/// An account built directly into the state (genesis), with its storage
/// statistics computed as the executor would.
fn direct_account(
    address: &StdAddr,
    balance: u64,
    state: TlbAccountState,
    now: u32,
) -> LocalResult<ShardAccount> {
    let balance = CurrencyCollection::new(u128::from(balance));
    let mut storage = CellBuilder::new();
    storage.store_u64(0)?;
    tycho_types::cell::Store::store_into(&balance, &mut storage, Cell::empty_context())?;
    tycho_types::cell::Store::store_into(&state, &mut storage, Cell::empty_context())?;
    let mut stat = tycho_executor::OwnedExtStorageStat::unlimited();
    for r in storage.references() {
        stat.add_cell(r.clone());
    }
    let stats = stat.stats();
    let used = StorageUsed {
        cells: tycho_types::num::VarUint56::new(stats.cell_count.saturating_add(1)),
        bits: tycho_types::num::VarUint56::new(
            stats
                .bit_count
                .saturating_add(u64::from(storage.size_bits())),
        ),
    };
    let account = Account {
        address: IntAddr::Std(address.clone()),
        storage_stat: StorageInfo {
            used,
            storage_extra: Default::default(),
            last_paid: now,
            due_payment: None,
        },
        last_trans_lt: 0,
        balance,
        state,
    };
    Ok(ShardAccount {
        account: Lazy::new(&OptionalAccount(Some(account)))?,
        last_trans_hash: HashBytes::ZERO,
        last_trans_lt: 0,
    })
}

/// How much more `tycho-executor` charges than the C++ executor (TON node,
/// @ton/sandbox) for importing an inbound external message.
///
/// Both price the cells and bits of the message except its root cell; the C++
/// executor also leaves out the root cells of the StateInit and of the body
/// when they are stored as references (measured against @ton/sandbox 0.41 on
/// TON mainnet's config: 1 cell + 616 bits for a cocoon wallet body, plus
/// 1 cell + 5 bits with a StateInit). 0 when the message is malformed (the
/// executor refuses it anyway).
fn import_fee_excess(config: &ParsedConfig, msg: &Cell, masterchain: bool) -> LocalResult<u128> {
    use tycho_types::cell::{CellTreeStats, Load};
    let mut s = msg.as_slice()?;
    MsgInfo::load_from(&mut s)?;
    let limits = tycho_executor::StorageStatLimits {
        bit_count: config.size_limits.max_msg_bits,
        cell_count: config.size_limits.max_msg_cells,
    };
    let Some(all) = tycho_executor::ExtStorageStat::compute_for_slice(&s, limits) else {
        return Ok(0);
    };
    let tycho = CellTreeStats {
        cell_count: all.cell_count.saturating_sub(1),
        bit_count: all.bit_count.saturating_sub(u64::from(s.size_bits())),
    };
    let mut free_roots: Vec<Cell> = Vec::new();
    let mut rest = s;
    let parsed: Result<(), tycho_types::error::Error> = (|| {
        if rest.load_bit()? {
            if rest.load_bit()? {
                free_roots.push(rest.load_reference_cloned()?);
            } else {
                tycho_types::models::StateInit::load_from(&mut rest)?;
            }
        }
        if rest.load_bit()? {
            free_roots.push(rest.load_reference_cloned()?);
        }
        Ok(())
    })();
    if parsed.is_err() {
        return Ok(0);
    }
    free_roots.dedup_by(|a, b| a.repr_hash() == b.repr_hash());
    let cpp = CellTreeStats {
        cell_count: tycho.cell_count.saturating_sub(free_roots.len() as u64),
        bit_count: tycho.bit_count.saturating_sub(
            free_roots
                .iter()
                .map(|c| u64::from(c.bit_len()))
                .sum::<u64>(),
        ),
    };
    let prices = config.fwd_prices(masterchain);
    Ok(prices
        .compute_fwd_fee(tycho)
        .into_inner()
        .saturating_sub(prices.compute_fwd_fee(cpp).into_inner()))
}

/// `sa` with `amount` more nanoTON, its storage statistics kept consistent
/// (the balance is in the root cell of the account storage).
fn credit(sa: &ShardAccount, amount: u128) -> LocalResult<ShardAccount> {
    let Some(mut acc) = sa.load_account()? else {
        return Ok(sa.clone());
    };
    let root_bits = |a: &Account| -> LocalResult<u64> {
        let mut b = CellBuilder::new();
        b.store_u64(a.last_trans_lt)?;
        tycho_types::cell::Store::store_into(&a.balance, &mut b, Cell::empty_context())?;
        tycho_types::cell::Store::store_into(&a.state, &mut b, Cell::empty_context())?;
        Ok(u64::from(b.size_bits()))
    };
    let before = root_bits(&acc)?;
    acc.balance.tokens = Tokens::new(acc.balance.tokens.into_inner().saturating_add(amount));
    let after = root_bits(&acc)?;
    let used = acc.storage_stat.used.bits.into_inner();
    acc.storage_stat.used.bits =
        tycho_types::num::VarUint56::new(used.saturating_sub(before).saturating_add(after));
    Ok(ShardAccount {
        account: Lazy::new(&OptionalAccount(Some(acc)))?,
        last_trans_hash: sa.last_trans_hash,
        last_trans_lt: sa.last_trans_lt,
    })
}

fn account_balance(sa: &ShardAccount) -> LocalResult<u128> {
    Ok(match sa.load_account()? {
        Some(a) => a.balance.tokens.into_inner(),
        None => 0,
    })
}

impl Inner {
    fn tick_time(&mut self) -> u32 {
        let now = self.clock.read().max(self.last_utime);
        self.last_utime = now;
        now
    }

    fn now(&self) -> u32 {
        self.clock.read().max(self.last_utime)
    }

    fn index(&mut self) {
        self.by_account.clear();
        for (i, tx) in self.log.iter().enumerate() {
            self.by_account
                .entry(tx.address.clone())
                .or_default()
                .push(i);
        }
    }

    /// Executes `first` and everything it causes; applies it all or nothing.
    fn run(&mut self, first: Cell, is_external: bool) -> LocalResult<ExecutionReport> {
        let message_hash = first.repr_hash().0;
        let now = self.tick_time();
        let mut overlay: HashMap<StdAddr, ShardAccount> = HashMap::new();
        let mut done: Vec<ExecutedTx> = Vec::new();
        let mut lt = self.lt;
        let mut fees: u128 = 0;
        let mut burned: u128 = 0;
        let mut queue: VecDeque<(Cell, bool)> = VecDeque::from([(first, is_external)]);
        while let Some((msg, ext)) = queue.pop_front() {
            if done.len() >= self.max_transactions {
                return Err(LocalChainError::Runaway(self.max_transactions));
            }
            let info = msg.parse::<MsgInfo>()?;
            let dst = match &info {
                MsgInfo::Int(i) => {
                    fees += i.fwd_fee.into_inner();
                    i.dst.clone()
                }
                MsgInfo::ExtIn(e) if ext => e.dst.clone(),
                _ => {
                    return Err(LocalChainError::BadMessage(
                        "not an inbound message of the expected kind".into(),
                    ))
                }
            };
            let IntAddr::Std(dst) = dst else {
                if let MsgInfo::Int(i) = &info {
                    burned += i.value.tokens.into_inner();
                }
                continue;
            };
            if !self
                .config
                .workchains
                .contains_key(&i32::from(dst.workchain))
                && dst.workchain != -1
            {
                if ext {
                    return Err(LocalChainError::BadMessage(format!(
                        "no workchain {}",
                        dst.workchain
                    )));
                }
                if let MsgInfo::Int(i) = &info {
                    burned += i.value.tokens.into_inner();
                }
                continue;
            }
            let original = match overlay.get(&dst).or_else(|| self.accounts.get(&dst)) {
                Some(s) => s.clone(),
                None => empty_shard_account()?,
            };
            // Inbound externals: align the import fee with the C++ executor
            // (see `import_fee_excess`) by crediting the excess before
            // execution and taking it out of the recorded fees after.
            let excess = if ext && !self.config.is_special(&dst) {
                import_fee_excess(&self.config, &msg, dst.is_masterchain())?
            } else {
                0
            };
            let state = if excess > 0 {
                credit(&original, excess)?
            } else {
                original.clone()
            };
            let mut seed = Sha256::new();
            seed.update(lt.to_be_bytes());
            seed.update(message_hash);
            let params = ExecutorParams {
                block_unixtime: now,
                block_lt: lt,
                rand_seed: HashBytes(seed.finalize().into()),
                strict_extra_currency: true,
                ..Default::default()
            };
            let mut inspector = ExecutorInspector::default();
            let executed = Executor::new(&params, &self.config)
                .with_min_lt(lt)
                .begin_ordinary_ext(&dst, ext, msg.clone(), &state, Some(&mut inspector));
            let uncommitted = match executed {
                Ok(u) => u,
                Err(TxError::Skipped) if ext => {
                    return Err(LocalChainError::NotAccepted {
                        address: crate::address::to_raw(&dst),
                        exit_code: inspector.exit_code,
                    })
                }
                Err(TxError::Skipped) => {
                    return Err(LocalChainError::Executor(
                        "an internal message was skipped".into(),
                    ))
                }
                Err(TxError::Fatal(e)) => return Err(LocalChainError::Executor(format!("{e:#}"))),
            };
            let mut out = uncommitted
                .commit()
                .map_err(|e| LocalChainError::Executor(format!("{e:#}")))?;
            if excess > 0 {
                let mut tx = out.transaction.load()?;
                let charged = tx.total_fees.tokens.into_inner();
                tx.total_fees.tokens = Tokens::new(charged.saturating_sub(excess));
                let update = tx.state_update.load()?;
                tx.state_update = Lazy::new(&tycho_types::models::HashUpdate {
                    old: *original.account.repr_hash(),
                    new: update.new,
                })?;
                out.transaction = Lazy::new(&tx)?;
                out.new_state.last_trans_hash = *out.transaction.repr_hash();
                out.transaction_meta.total_fees = Tokens::new(
                    out.transaction_meta
                        .total_fees
                        .into_inner()
                        .saturating_sub(excess),
                );
            }
            lt = lt.max(out.transaction_meta.next_lt) + 1;
            fees += out.transaction_meta.total_fees.into_inner();
            burned += out.burned.into_inner();
            for m in &out.transaction_meta.out_msgs {
                let cell = m.inner().clone();
                if matches!(cell.parse::<MsgInfo>()?, MsgInfo::Int(_)) {
                    queue.push_back((cell, false));
                }
            }
            // A transaction's total fees hold only the first fraction of the
            // forward fees of what it sends; the rest travels in the message
            // (`fwd_fee`) and is counted when the message is delivered.
            let tx_cell = out.transaction.inner().clone();
            done.push(ExecutedTx::from_cell(dst.clone(), tx_cell)?);
            overlay.insert(dst, out.new_state);
        }
        // Commit.
        self.lt = lt;
        for (addr, sa) in overlay {
            let exists = sa.load_account()?.is_some();
            if exists {
                self.accounts.insert(addr, sa);
            } else {
                self.accounts.remove(&addr);
            }
        }
        // `fees`: the transactions' total fees plus the forward fees the
        // delivered internal messages carried.
        self.ledger.fees += fees;
        self.ledger.burned += burned;
        for tx in &done {
            self.by_account
                .entry(tx.address.clone())
                .or_default()
                .push(self.log.len());
            self.log.push(tx.clone());
        }
        Ok(ExecutionReport {
            message_hash,
            transactions: done,
        })
    }

    fn faucet_message(&self, to: &StdAddr, amount: u64, body: Option<Cell>) -> LocalResult<Cell> {
        let msg = OwnedMessage {
            info: MsgInfo::Int(IntMsgInfo {
                ihr_disabled: true,
                bounce: false,
                bounced: false,
                src: IntAddr::Std(FAUCET_ADDRESS),
                dst: IntAddr::Std(to.clone()),
                value: CurrencyCollection::new(u128::from(amount)),
                extra_flags: Default::default(),
                fwd_fee: Tokens::ZERO,
                created_lt: self.lt,
                created_at: self.now(),
            }),
            init: None,
            body: body.unwrap_or_else(Cell::empty_cell).into(),
            layout: None,
        };
        Ok(CellBuilder::build_from(msg)?)
    }

    fn supply(&self) -> LocalResult<Supply> {
        let mut balances = 0u128;
        for sa in self.accounts.values() {
            balances += account_balance(sa)?;
        }
        Ok(Supply {
            minted: self.ledger.minted,
            balances,
            fees: self.ledger.fees,
            burned: self.ledger.burned,
        })
    }

    fn account_state(&self, address: &StdAddr) -> LocalResult<AccountState> {
        let now = self.now();
        let Some(sa) = self.accounts.get(address) else {
            return Ok(AccountState::nonexistent(now));
        };
        let last_tx = self
            .by_account
            .get(address)
            .and_then(|v| v.last())
            .and_then(|&i| self.log.get(i))
            .map(|t| t.summary.id);
        Ok(match sa.load_account()? {
            None => AccountState::nonexistent(now),
            Some(acc) => {
                let balance = tokens_u64(acc.balance.tokens)?;
                let (status, code, data) = match acc.state {
                    TlbAccountState::Uninit => (AccountStatus::Uninit, None, None),
                    TlbAccountState::Frozen(_) => (AccountStatus::Frozen, None, None),
                    TlbAccountState::Active(si) => (AccountStatus::Active, si.code, si.data),
                };
                AccountState {
                    status,
                    balance,
                    code,
                    data,
                    last_tx,
                    sync_utime: now,
                }
            }
        })
    }

    fn get_method(
        &self,
        address: &StdAddr,
        method: &str,
        args: Vec<StackValue>,
    ) -> LocalResult<GetMethodResult> {
        let gm = |reason: String| LocalChainError::GetMethod {
            method: method.to_string(),
            reason,
        };
        let account = self
            .accounts
            .get(address)
            .map(|sa| sa.load_account())
            .transpose()?
            .flatten()
            .ok_or_else(|| LocalChainError::NotActive(crate::address::to_raw(address)))?;
        if !matches!(account.state, TlbAccountState::Active(_)) {
            return Err(LocalChainError::NotActive(crate::address::to_raw(address)));
        }
        let mut stack = Vec::with_capacity(args.len());
        for a in &args {
            stack.push(to_vm_value(a).map_err(gm)?);
        }
        let caller = VmCaller {
            libraries: Default::default(),
            behaviour_modifiers: Default::default(),
            config: self.config.raw.params.clone(),
        };
        let mut vm_args = VmGetterArgs::default();
        vm_args.now = self.now();
        let out = caller
            .call_getter_ext(&account, method, stack, &vm_args, None)
            .map_err(|e| gm(e.to_string()))?;
        let mut result = Vec::with_capacity(out.stack.len());
        for v in &out.stack {
            result.push(from_vm_value(v).map_err(gm)?);
        }
        Ok(GetMethodResult {
            exit_code: out.exit_code,
            stack: result,
        })
    }
}

fn to_vm_value(v: &StackValue) -> Result<RcStackValue, String> {
    use tycho_vm::__export::num_bigint::{BigInt, Sign};
    Ok(match v {
        StackValue::Int(i) => RcStackValue::new_dyn_value(BigInt::from(*i)),
        StackValue::Uint256(b) => RcStackValue::new_dyn_value(BigInt::from_bytes_be(Sign::Plus, b)),
        StackValue::Cell(c) => SafeRc::into_dyn_value(SafeRc::new(c.clone())),
        StackValue::Slice(c) => {
            RcStackValue::new_dyn_value(OwnedCellSlice::new_allow_exotic(c.clone()))
        }
        StackValue::Null => Stack::make_null(),
        StackValue::Tuple(items) => {
            let mut t: Vec<RcStackValue> = Vec::with_capacity(items.len());
            for i in items {
                t.push(to_vm_value(i)?);
            }
            RcStackValue::new_dyn_value(t)
        }
    })
}

fn from_vm_value(v: &RcStackValue) -> Result<StackValue, String> {
    use tycho_vm::__export::num_bigint::Sign;
    if v.is_null() {
        return Ok(StackValue::Null);
    }
    if let Some(i) = v.as_int() {
        if let Ok(small) = i128::try_from(i) {
            return Ok(StackValue::Int(small));
        }
        let (sign, bytes) = i.to_bytes_be();
        if sign == Sign::Minus || bytes.len() > 32 {
            return Err(format!("integer {i} does not fit the stack value types"));
        }
        let mut out = [0u8; 32];
        out[32 - bytes.len()..].copy_from_slice(&bytes);
        return Ok(StackValue::Uint256(out));
    }
    if let Some(c) = v.as_cell() {
        return Ok(StackValue::Cell(c.clone()));
    }
    if let Some(s) = v.as_cell_slice() {
        let mut b = CellBuilder::new();
        b.store_slice(s.apply()).map_err(|e| e.to_string())?;
        return Ok(StackValue::Slice(b.build().map_err(|e| e.to_string())?));
    }
    if let Some(items) = v.as_tuple() {
        let mut t = Vec::with_capacity(items.len());
        for i in items {
            t.push(from_vm_value(i)?);
        }
        return Ok(StackValue::Tuple(t));
    }
    Err("a stack value of an unsupported type (builder or continuation)".into())
}

impl LocalChain {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent state (commits are
        // applied after all fallible work), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn from_inner(inner: Inner) -> Self {
        LocalChain {
            inner: Mutex::new(inner),
            _dir_lock: None,
        }
    }

    /// A fresh chain in memory from `genesis` (see [`GenesisConfig`]).
    pub fn genesis(genesis: GenesisConfig) -> LocalResult<Self> {
        genesis::build(genesis).map(Self::from_inner)
    }

    /// A fresh chain from `genesis` that persists to `dir` (created if needed)
    /// after every change, holding the directory's lock. Fails if `dir`
    /// already holds a chain or is in use ([`LocalChainError::InUse`]).
    pub fn genesis_in(dir: impl AsRef<Path>, genesis: GenesisConfig) -> LocalResult<Self> {
        let dir = dir.as_ref();
        let lock = persist::DirLock::acquire(dir)?;
        Self::genesis_locked(dir, genesis, lock)
    }

    fn genesis_locked(
        dir: &Path,
        genesis: GenesisConfig,
        lock: persist::DirLock,
    ) -> LocalResult<Self> {
        if persist::exists(dir) {
            return Err(LocalChainError::Persist {
                path: dir.to_path_buf(),
                reason: "already holds a chain (open it instead)".into(),
            });
        }
        let mut chain = Self::genesis(genesis)?;
        chain.persist_unlocked(dir)?;
        chain._dir_lock = Some(lock);
        Ok(chain)
    }

    /// Loads the chain persisted in `dir`; it keeps persisting there and holds
    /// the directory's lock until dropped. Fails with
    /// [`LocalChainError::InUse`] while another chain has the directory open.
    pub fn open(dir: impl AsRef<Path>) -> LocalResult<Self> {
        let dir = dir.as_ref();
        if !persist::exists(dir) {
            return Err(LocalChainError::Persist {
                path: dir.to_path_buf(),
                reason: "holds no chain".into(),
            });
        }
        let lock = persist::DirLock::acquire(dir)?;
        Self::open_locked(dir, lock)
    }

    fn open_locked(dir: &Path, lock: persist::DirLock) -> LocalResult<Self> {
        let inner = persist::load(dir)?;
        let mut chain = Self::from_inner(inner);
        chain._dir_lock = Some(lock);
        Ok(chain)
    }

    /// Opens the chain in `dir` if there is one, else creates it from `genesis`
    /// (what `cocoon devnet --dir` does: restarts continue). Holds the
    /// directory's lock, as [`LocalChain::open`].
    pub fn open_or_genesis(dir: impl AsRef<Path>, genesis: GenesisConfig) -> LocalResult<Self> {
        let dir = dir.as_ref();
        let lock = persist::DirLock::acquire(dir)?;
        if persist::exists(dir) {
            Self::open_locked(dir, lock)
        } else {
            Self::genesis_locked(dir, genesis, lock)
        }
    }

    /// Writes the whole state to `dir` and keeps persisting there after every
    /// change.
    ///
    /// This does not keep `dir` locked (tests persist a chain built in memory
    /// and open the directory again beside it); it only refuses a directory
    /// that another chain holds ([`LocalChainError::InUse`]). Use
    /// [`LocalChain::genesis_in`] or [`LocalChain::open`] for a directory other
    /// processes may open.
    pub fn persist_to(&self, dir: impl AsRef<Path>) -> LocalResult<()> {
        let dir = dir.as_ref();
        let holds_it = self._dir_lock.is_some() && self.lock().dir.as_deref() == Some(dir);
        if !holds_it {
            drop(persist::DirLock::acquire(dir)?);
        }
        self.persist_unlocked(dir)
    }

    fn persist_unlocked(&self, dir: &Path) -> LocalResult<()> {
        let mut st = self.lock();
        st.dir = Some(dir.to_path_buf());
        st.persisted_txs = 0;
        persist::save(&mut st, true)
    }

    /// The directory the chain persists to, if any.
    pub fn dir(&self) -> Option<PathBuf> {
        self.lock().dir.clone()
    }

    fn after_change(st: &mut Inner) -> LocalResult<()> {
        if st.dir.is_some() {
            persist::save(st, false)?;
        }
        Ok(())
    }

    /// Executes an external message (BOC of a `Message` cell) and everything it
    /// causes. Refused without any change when the destination does not accept
    /// it or the cascade runs away.
    ///
    /// With a state directory, the result is persisted before returning; a
    /// [`LocalChainError::Persist`] error means the message **was** executed in
    /// memory but could not be written.
    pub fn execute_external(&self, boc: &[u8]) -> LocalResult<ExecutionReport> {
        let cell = crate::cells::from_boc(boc)?;
        let mut st = self.lock();
        let report = st.run(cell, true)?;
        Self::after_change(&mut st)?;
        Ok(report)
    }

    /// Mints `amount` nanoTON to `address` by delivering a non-bounceable
    /// internal message with an empty body from [`FAUCET_ADDRESS`]: an account
    /// without code just gets the balance (it is created uninit if needed), a
    /// contract runs its receive handler as for any top-up.
    pub fn fund(&self, address: &StdAddr, amount: u64) -> LocalResult<ExecutionReport> {
        self.fund_with_body(address, amount, None)
    }

    /// [`LocalChain::fund`] with a message body (e.g. a top-up op for a contract).
    pub fn fund_with_body(
        &self,
        address: &StdAddr,
        amount: u64,
        body: Option<Cell>,
    ) -> LocalResult<ExecutionReport> {
        let mut st = self.lock();
        let msg = st.faucet_message(address, amount, body)?;
        let before = st.ledger;
        st.ledger.minted += u128::from(amount);
        match st.run(msg, false) {
            Ok(report) => {
                Self::after_change(&mut st)?;
                Ok(report)
            }
            Err(e) => {
                st.ledger = before;
                Err(e)
            }
        }
    }

    /// The root contract deployed at genesis, if any.
    pub fn root_address(&self) -> Option<StdAddr> {
        self.lock().root.clone()
    }

    /// The root contract's current config, read from its data.
    pub fn root_config(&self) -> LocalResult<RootConfig> {
        let st = self.lock();
        let root = st
            .root
            .clone()
            .ok_or_else(|| LocalChainError::NotActive("no root contract at genesis".into()))?;
        let state = st.account_state(&root)?;
        let data = state
            .data
            .ok_or_else(|| LocalChainError::NotActive(crate::address::to_raw(&root)))?;
        Ok(RootConfig::from_data_cell(&data)?)
    }

    /// Balance of `address` in nanoTON (0 when it does not exist).
    pub fn balance(&self, address: &StdAddr) -> LocalResult<u64> {
        let st = self.lock();
        match st.accounts.get(address) {
            Some(sa) => u64::try_from(account_balance(sa)?)
                .map_err(|_| LocalChainError::BadMessage("balance above u64".into())),
            None => Ok(0),
        }
    }

    /// The current state of an account (synchronous form of
    /// [`ChainBackend::account_state`]).
    pub fn account(&self, address: &StdAddr) -> LocalResult<AccountState> {
        self.lock().account_state(address)
    }

    /// The raw `ShardAccount` of an address, if the account exists.
    pub fn shard_account(&self, address: &StdAddr) -> Option<ShardAccount> {
        self.lock().accounts.get(address).cloned()
    }

    /// Every existing account address, in order.
    pub fn addresses(&self) -> Vec<StdAddr> {
        self.lock().accounts.keys().cloned().collect()
    }

    /// Runs a get-method (synchronous form of [`ChainBackend::run_get_method`]);
    /// the result carries the exit code, whatever it is.
    pub fn get_method(
        &self,
        address: &StdAddr,
        method: &str,
        args: Vec<StackValue>,
    ) -> LocalResult<GetMethodResult> {
        self.lock().get_method(address, method, args)
    }

    /// All transactions of `address`, oldest first.
    pub fn transactions_of(&self, address: &StdAddr) -> Vec<ExecutedTx> {
        let st = self.lock();
        st.by_account
            .get(address)
            .map(|v| v.iter().filter_map(|&i| st.log.get(i).cloned()).collect())
            .unwrap_or_default()
    }

    /// Number of transactions executed since genesis.
    pub fn transaction_count(&self) -> usize {
        self.lock().log.len()
    }

    /// The chain's logical time (the next transaction's lower bound).
    pub fn logical_time(&self) -> u64 {
        self.lock().lt
    }

    /// Chain time (unix seconds).
    pub fn time(&self) -> u32 {
        self.lock().now()
    }

    /// The clock.
    pub fn clock(&self) -> Clock {
        self.lock().clock
    }

    /// Replaces the clock (time never goes back: the chain time is at least
    /// the time of the last transaction).
    pub fn set_clock(&self, clock: Clock) -> LocalResult<()> {
        let mut st = self.lock();
        st.clock = clock;
        Self::after_change(&mut st)
    }

    /// Fixes the time at `utime`.
    pub fn set_time(&self, utime: u32) -> LocalResult<()> {
        self.set_clock(Clock::Fixed(utime))
    }

    /// Moves the time forward by `secs` (the fixed time, or the offset of the
    /// system clock).
    pub fn advance_time(&self, secs: u32) -> LocalResult<()> {
        let mut st = self.lock();
        st.clock = match st.clock {
            Clock::Fixed(t) => Clock::Fixed(t.saturating_add(secs)),
            Clock::System { offset } => Clock::System {
                offset: offset.saturating_add(secs),
            },
        };
        Self::after_change(&mut st)
    }

    /// Where the coins are; [`Supply::is_conserved`] must always hold.
    pub fn supply(&self) -> LocalResult<Supply> {
        self.lock().supply()
    }

    /// Most transactions one message may cause before it is rolled back as a
    /// runaway loop (default [`DEFAULT_MAX_TRANSACTIONS`]).
    pub fn set_max_transactions(&self, max: usize) {
        self.lock().max_transactions = max.max(1);
    }

    /// The config dictionary the chain executes with.
    pub fn config_cell(&self) -> Cell {
        self.lock().config_cell.clone()
    }
}

impl ChainBackend for LocalChain {
    fn account_state<'a>(
        &'a self,
        address: &'a StdAddr,
    ) -> BoxFuture<'a, ChainResult<AccountState>> {
        Box::pin(async move { Ok(self.account(address)?) })
    }

    fn run_get_method<'a>(
        &'a self,
        address: &'a StdAddr,
        method: &'a str,
        args: Vec<StackValue>,
    ) -> BoxFuture<'a, ChainResult<GetMethodResult>> {
        Box::pin(async move {
            let r = self.get_method(address, method, args)?;
            if r.exit_code != 0 && r.exit_code != 1 {
                return Err(ChainError::GetMethodFailed {
                    method: method.to_string(),
                    exit_code: r.exit_code,
                });
            }
            Ok(r)
        })
    }

    fn send_external<'a>(&'a self, boc: Vec<u8>) -> BoxFuture<'a, ChainResult<[u8; 32]>> {
        Box::pin(async move { Ok(self.execute_external(&boc)?.message_hash) })
    }

    fn transactions<'a>(
        &'a self,
        address: &'a StdAddr,
        after: Option<TxId>,
        limit: usize,
    ) -> BoxFuture<'a, ChainResult<TxPage>> {
        Box::pin(async move {
            let st = self.lock();
            let after_lt = after.map_or(0, |t| t.lt);
            let newer: Vec<&ExecutedTx> = st
                .by_account
                .get(address)
                .map(|v| {
                    v.iter()
                        .filter_map(|&i| st.log.get(i))
                        .filter(|t| t.summary.id.lt > after_lt)
                        .collect()
                })
                .unwrap_or_default();
            let more = newer.len() > limit;
            let transactions: Vec<Transaction> = newer
                .into_iter()
                .take(limit)
                .map(|t| t.summary.clone())
                .collect();
            let cursor = transactions.last().map(|t| t.id).or(after);
            Ok(TxPage {
                transactions,
                cursor,
                more,
            })
        })
    }

    fn now(&self) -> BoxFuture<'_, ChainResult<u32>> {
        Box::pin(async move { Ok(self.time()) })
    }

    fn transaction_cell<'a>(
        &'a self,
        address: &'a StdAddr,
        id: TxId,
    ) -> BoxFuture<'a, ChainResult<Option<Cell>>> {
        Box::pin(async move {
            let st = self.lock();
            // An account's transactions are recorded in logical-time order.
            let cell = st
                .by_account
                .get(address)
                .and_then(|v| {
                    let at = v
                        .binary_search_by_key(&id.lt, |&i| {
                            st.log.get(i).map_or(0, |t| t.summary.id.lt)
                        })
                        .ok()?;
                    st.log.get(*v.get(at)?)
                })
                .filter(|t| t.summary.id == id)
                .map(|t| t.cell.clone());
            Ok(cell)
        })
    }
}

// Used by `genesis` and `persist`.
pub(crate) use self::config::parse_config;

// `LocalChain` is shared between the roles' tasks (`Arc<dyn ChainBackend>`).
const _: fn() = || {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<LocalChain>();
};
