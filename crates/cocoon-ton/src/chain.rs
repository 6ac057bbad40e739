//! The chain interface the proxy, worker and client roles use.
//!
//! [`ChainBackend`] is object safe (methods return boxed futures), so roles can
//! hold an `Arc<dyn ChainBackend>` and be run against a real chain client
//! (liteserver / toncenter), an embedded test chain, or [`crate::fake::FakeTon`].
//!
//! What the C++ runners do with tonlib maps onto it as follows:
//! * `raw.getAccountState` → [`ChainBackend::account_state`];
//! * `raw.getTransactionsV2` replay of new inbound messages →
//!   [`ChainBackend::transactions`] with a [`TxId`] cursor;
//! * `raw.sendMessage` → [`ChainBackend::send_external`];
//! * get-methods → [`ChainBackend::run_get_method`];
//! * `sync_utime` → [`ChainBackend::now`].

use std::future::Future;
use std::pin::Pin;

use thiserror::Error;
use tycho_types::cell::{Cell, CellBuilder, CellSliceParts};
use tycho_types::models::{
    ComputePhase, IntAddr, MsgInfo, OwnedMessage, StdAddr, Transaction as TlbTransaction, TxInfo,
};
use tycho_types::num::Tokens;

use crate::error::TonError;

/// A boxed, `Send` future (what every [`ChainBackend`] method returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Errors of a chain backend.
#[derive(Debug, Error)]
pub enum ChainError {
    /// The backend cannot do this (e.g. the fake chain runs no contract code).
    #[error("not supported by this backend: {0}")]
    Unsupported(String),
    /// The chain (or the stand-in) refused an external message.
    #[error("message rejected: {0}")]
    Rejected(String),
    /// A get-method ended with a non-zero exit code.
    #[error("get-method {method} failed with exit code {exit_code}")]
    GetMethodFailed {
        /// Method name.
        method: String,
        /// TVM exit code.
        exit_code: i32,
    },
    /// Network or server trouble.
    #[error("transport: {0}")]
    Transport(String),
    /// A cell, BOC or layout problem.
    #[error(transparent)]
    Ton(#[from] TonError),
}

/// Result of chain operations.
pub type ChainResult<T> = std::result::Result<T, ChainError>;

/// Account status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountStatus {
    /// Never seen on chain.
    NonExist,
    /// Has a balance but no code (not deployed yet).
    Uninit,
    /// Deployed.
    Active,
    /// Frozen for unpaid storage.
    Frozen,
}

/// A transaction id: logical time and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId {
    /// Logical time.
    pub lt: u64,
    /// Transaction hash.
    pub hash: [u8; 32],
}

/// The state of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    /// Status.
    pub status: AccountStatus,
    /// Balance in nanoTON.
    pub balance: u64,
    /// Code, when active.
    pub code: Option<Cell>,
    /// Data, when active (an empty/absent data means "not initialized" to the C++).
    pub data: Option<Cell>,
    /// Last transaction, if any.
    pub last_tx: Option<TxId>,
    /// Chain time of this snapshot (unix seconds).
    pub sync_utime: u32,
}

impl AccountState {
    /// The state of an account the chain has never seen.
    pub fn nonexistent(sync_utime: u32) -> Self {
        AccountState {
            status: AccountStatus::NonExist,
            balance: 0,
            code: None,
            data: None,
            last_tx: None,
            sync_utime,
        }
    }

    /// Whether the contract is deployed (has data), as the C++ `is_inited`.
    pub fn is_active(&self) -> bool {
        self.status == AccountStatus::Active && self.data.is_some()
    }
}

/// A message seen in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxMessage {
    /// Sender (`None` for inbound external messages).
    pub source: Option<StdAddr>,
    /// Destination (`None` for outbound external messages).
    pub dest: Option<StdAddr>,
    /// Value in nanoTON.
    pub value: u64,
    /// Body cell (empty cell when there is none).
    pub body: Cell,
}

impl TxMessage {
    /// `repr_hash(body)`: what the C++ wallet compares to find its own messages.
    pub fn body_hash(&self) -> [u8; 32] {
        self.body.repr_hash().0
    }

    /// Reads a TL-B `Message` cell (as found in a transaction): sender,
    /// destination, value and body (inline or in a reference). Addresses other
    /// than standard ones (`addr_var`, external addresses) read as `None`.
    pub fn from_cell(cell: &Cell) -> Result<Self, TonError> {
        let msg = cell.parse::<OwnedMessage>()?;
        let std = |a: &IntAddr| match a {
            IntAddr::Std(s) => Some(s.clone()),
            IntAddr::Var(_) => None,
        };
        let (source, dest, value) = match &msg.info {
            MsgInfo::Int(i) => (std(&i.src), std(&i.dst), tokens_u64(i.value.tokens)?),
            MsgInfo::ExtIn(e) => (None, std(&e.dst), 0),
            MsgInfo::ExtOut(e) => (std(&e.src), None, 0),
        };
        Ok(TxMessage {
            source,
            dest,
            value,
            body: body_cell(&msg.body)?,
        })
    }
}

fn tokens_u64(t: Tokens) -> Result<u64, TonError> {
    u64::try_from(t.into_inner()).map_err(|_| TonError::Range("amount above u64 nanoTON".into()))
}

/// A cell with exactly the contents of a message body slice.
fn body_cell(body: &CellSliceParts) -> Result<Cell, TonError> {
    let (range, cell) = body;
    if range.offset_bits() == 0
        && range.offset_refs() == 0
        && range.size_bits() == cell.bit_len()
        && range.size_refs() == cell.reference_count()
    {
        return Ok(cell.clone());
    }
    let slice = range.apply(cell)?;
    let mut b = CellBuilder::new();
    b.store_slice(slice)?;
    Ok(b.build()?)
}

/// A transaction of one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Id.
    pub id: TxId,
    /// Unix time.
    pub utime: u32,
    /// The inbound message.
    pub in_msg: Option<TxMessage>,
    /// Outbound messages.
    pub out_msgs: Vec<TxMessage>,
    /// Whether compute and action phases succeeded.
    pub success: bool,
}

impl Transaction {
    /// Reads a TL-B `Transaction` cell: the id (its logical time and the
    /// cell's hash), time, messages and outcome. `success` means an ordinary
    /// transaction whose compute and action phases both succeeded and which was
    /// not aborted (a skipped compute phase is not a success); tick-tock
    /// transactions count as successful.
    pub fn from_cell(cell: &Cell) -> Result<Self, TonError> {
        let tx = cell.parse::<TlbTransaction>()?;
        let success = match tx.load_info()? {
            TxInfo::Ordinary(o) => {
                let compute_ok = match &o.compute_phase {
                    ComputePhase::Executed(c) => c.success,
                    ComputePhase::Skipped(_) => false,
                };
                let action_ok = o.action_phase.as_ref().is_some_and(|a| a.success);
                compute_ok && action_ok && !o.aborted
            }
            TxInfo::TickTock(_) => true,
        };
        let in_msg = match &tx.in_msg {
            Some(c) => Some(TxMessage::from_cell(c)?),
            None => None,
        };
        let mut out_msgs = Vec::new();
        for item in tx.out_msgs.values() {
            out_msgs.push(TxMessage::from_cell(&item?)?);
        }
        Ok(Transaction {
            id: TxId {
                lt: tx.lt,
                hash: cell.repr_hash().0,
            },
            utime: tx.now,
            in_msg,
            out_msgs,
            success,
        })
    }
}

/// A page of transactions newer than a cursor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxPage {
    /// Transactions, oldest first.
    pub transactions: Vec<Transaction>,
    /// Cursor to pass next time (the newest transaction returned, or the cursor
    /// given when there was nothing new).
    pub cursor: Option<TxId>,
    /// Whether more transactions remain after this page.
    pub more: bool,
}

/// A TVM stack entry for get-methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackValue {
    /// An integer that fits in `i128`.
    Int(i128),
    /// A non-negative 256-bit integer (hashes, public keys), big-endian.
    Uint256([u8; 32]),
    /// A cell.
    Cell(Cell),
    /// A slice (as the cell it covers).
    Slice(Cell),
    /// `null`.
    Null,
    /// A tuple.
    Tuple(Vec<StackValue>),
}

/// Result of a get-method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetMethodResult {
    /// TVM exit code (0 or 1 on success).
    pub exit_code: i32,
    /// Result stack, bottom first.
    pub stack: Vec<StackValue>,
}

/// What the roles need from a TON chain.
pub trait ChainBackend: Send + Sync {
    /// Current state of an account.
    fn account_state<'a>(
        &'a self,
        address: &'a StdAddr,
    ) -> BoxFuture<'a, ChainResult<AccountState>>;

    /// Runs a get-method on an account.
    fn run_get_method<'a>(
        &'a self,
        address: &'a StdAddr,
        method: &'a str,
        args: Vec<StackValue>,
    ) -> BoxFuture<'a, ChainResult<GetMethodResult>>;

    /// Sends an external message (BOC of a `Message` cell); returns the hash of
    /// the message cell.
    fn send_external<'a>(&'a self, boc: Vec<u8>) -> BoxFuture<'a, ChainResult<[u8; 32]>>;

    /// Transactions of `address` newer than `after` (all when `None`), oldest
    /// first, at most `limit`. Follow an account by passing back the returned cursor.
    fn transactions<'a>(
        &'a self,
        address: &'a StdAddr,
        after: Option<TxId>,
        limit: usize,
    ) -> BoxFuture<'a, ChainResult<TxPage>>;

    /// Chain time (unix seconds) of the latest known block.
    fn now(&self) -> BoxFuture<'_, ChainResult<u32>>;

    /// The TL-B `Transaction` cell of the transaction `id` of `address` (its
    /// hash is `id.hash`), for backends that keep raw transactions; `Ok(None)`
    /// when the backend does not have it (the default).
    ///
    /// The toncenter server uses it to put the raw transaction into
    /// `getTransactions` answers, as toncenter does.
    fn transaction_cell<'a>(
        &'a self,
        address: &'a StdAddr,
        id: TxId,
    ) -> BoxFuture<'a, ChainResult<Option<Cell>>> {
        let _ = (address, id);
        Box::pin(async { Ok(None) })
    }
}

/// Follows the transactions of one account, as the C++ `TonScWrapper` does
/// with `raw.getTransactionsV2`: each [`TxFollower::poll`] returns the
/// transactions that appeared since the previous one, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxFollower {
    /// The account followed.
    pub address: StdAddr,
    /// The newest transaction already returned.
    pub cursor: Option<TxId>,
}

impl TxFollower {
    /// Page size used by [`TxFollower::poll`].
    pub const PAGE: usize = 64;

    /// Follows `address` from its first transaction.
    pub fn from_start(address: StdAddr) -> Self {
        TxFollower {
            address,
            cursor: None,
        }
    }

    /// Follows `address` from now on: transactions that already exist are skipped.
    pub async fn from_now(chain: &dyn ChainBackend, address: StdAddr) -> ChainResult<Self> {
        let state = chain.account_state(&address).await?;
        Ok(TxFollower {
            address,
            cursor: state.last_tx,
        })
    }

    /// New transactions since the last call, oldest first.
    pub async fn poll(&mut self, chain: &dyn ChainBackend) -> ChainResult<Vec<Transaction>> {
        let mut out = Vec::new();
        loop {
            let page = chain
                .transactions(&self.address, self.cursor, Self::PAGE)
                .await?;
            out.extend(page.transactions);
            self.cursor = page.cursor;
            if !page.more {
                return Ok(out);
            }
        }
    }
}

/// Reads and parses the root contract's state through any backend.
pub async fn read_root_config(
    chain: &dyn ChainBackend,
    root: &StdAddr,
) -> ChainResult<crate::root::RootConfig> {
    let state = chain.account_state(root).await?;
    let data = state.data.ok_or_else(|| {
        ChainError::Ton(TonError::Config(
            "root contract has no data (not deployed?)".into(),
        ))
    })?;
    Ok(crate::root::RootConfig::from_data_cell(&data)?)
}
