//! The state directory of a [`LocalChain`](super::LocalChain).
//!
//! * `chain.json`: logical time, clock, books, root address, the number of
//!   committed transactions and every account as a base64 BOC of its
//!   `ShardAccount`; replaced atomically (write to a temporary file, fsync,
//!   rename), so it is always a complete snapshot;
//! * `transactions.log`: one line per transaction, `<raw address> <base64 BOC
//!   of the Transaction cell>`, appended (and fsynced) **before** the snapshot
//!   that counts them; lines beyond the snapshot's count (a crash between the
//!   two writes) are dropped on load;
//! * `config.boc`: the blockchain config dictionary;
//! * `lock`: held with an exclusive OS file lock ([`DirLock`]) by the one
//!   [`LocalChain`](super::LocalChain) that has the directory open, and holding
//!   its process id for the error a second opener gets. The OS releases the
//!   lock when the holder drops it or its process ends (even killed), so a
//!   stale file never blocks anyone.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tycho_types::boc::{Boc, BocRepr};
use tycho_types::models::{ShardAccount, StdAddr};

use super::{Clock, ExecutedTx, Inner, Ledger, LocalChainError, LocalResult};

const SNAPSHOT: &str = "chain.json";
const TX_LOG: &str = "transactions.log";
const CONFIG: &str = "config.boc";
const LOCK: &str = "lock";
/// Tries to take a lock that is held (see [`DirLock::acquire`]) before giving up.
const LOCK_ATTEMPTS: u32 = 10;
/// Pause between those tries (0.5 s in all).
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(50);
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    lt: u64,
    clock: Clock,
    last_utime: u32,
    minted: String,
    fees: String,
    burned: String,
    root: Option<String>,
    tx_count: usize,
    max_transactions: usize,
    /// Raw address → base64 BOC of the `ShardAccount`.
    accounts: BTreeMap<String, String>,
}

fn err(path: &Path, reason: impl ToString) -> LocalChainError {
    LocalChainError::Persist {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The exclusive lock on a state directory: `dir/lock`, locked with
/// [`File::try_lock`] for as long as this value lives.
#[derive(Debug)]
pub(super) struct DirLock {
    // Closing the file releases the lock.
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir` (created if needed), or fails with
    /// [`LocalChainError::InUse`] naming the holder's process id.
    pub(super) fn acquire(dir: &Path) -> LocalResult<DirLock> {
        use std::fs::TryLockError;
        use std::io::{Read, Seek};
        fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        let path = dir.join(LOCK);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| err(&path, e))?;
        // A lock just released can look taken for a moment: a process that
        // forks (to start a child) shares every open file, locked ones too,
        // with the child until the child's exec closes them. So a refusal is
        // only final after a short while.
        let mut attempt = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if attempt < LOCK_ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(TryLockError::WouldBlock) => {
                    // The holder writes its pid right after locking; an empty or
                    // unreadable file only means it has not done so yet.
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    return Err(LocalChainError::InUse {
                        path,
                        pid: text.trim().parse().ok(),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(err(&path, e)),
            }
        }
        let mut write_pid = || -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(std::process::id().to_string().as_bytes())?;
            file.sync_all()
        };
        write_pid().map_err(|e| err(&path, e))?;
        Ok(DirLock { _file: file })
    }
}

/// Whether `dir` holds a chain.
pub(super) fn exists(dir: &Path) -> bool {
    dir.join(SNAPSHOT).is_file()
}

fn write_atomic(path: &Path, bytes: &[u8]) -> LocalResult<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| err(&tmp, e))?;
    f.sync_all().map_err(|e| err(&tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| err(path, e))?;
    if let Some(parent) = path.parent() {
        // Make the rename durable where the platform allows it.
        if let Ok(d) = File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn tx_line(tx: &ExecutedTx) -> String {
    format!(
        "{} {}\n",
        crate::address::to_raw(&tx.address),
        Boc::encode_base64(&tx.cell)
    )
}

/// Writes the state; `full` rewrites the transaction log and the config too.
pub(super) fn save(st: &mut Inner, full: bool) -> LocalResult<()> {
    let Some(dir) = st.dir.clone() else {
        return Ok(());
    };
    fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
    let log_path = dir.join(TX_LOG);
    let config_path = dir.join(CONFIG);
    if full || !config_path.is_file() {
        write_atomic(&config_path, &Boc::encode(&st.config_cell))?;
    }
    if full {
        let mut text = String::new();
        for tx in &st.log {
            text.push_str(&tx_line(tx));
        }
        write_atomic(&log_path, text.as_bytes())?;
    } else if st.persisted_txs < st.log.len() {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| err(&log_path, e))?;
        let mut text = String::new();
        for tx in &st.log[st.persisted_txs..] {
            text.push_str(&tx_line(tx));
        }
        f.write_all(text.as_bytes())
            .map_err(|e| err(&log_path, e))?;
        f.sync_all().map_err(|e| err(&log_path, e))?;
    }
    let mut accounts = BTreeMap::new();
    for (addr, sa) in &st.accounts {
        let boc = BocRepr::encode_base64(sa).map_err(|e| err(&dir.join(SNAPSHOT), e))?;
        accounts.insert(crate::address::to_raw(addr), boc);
    }
    let snap = Snapshot {
        format: FORMAT,
        lt: st.lt,
        clock: st.clock,
        last_utime: st.last_utime,
        minted: st.ledger.minted.to_string(),
        fees: st.ledger.fees.to_string(),
        burned: st.ledger.burned.to_string(),
        root: st.root.as_ref().map(crate::address::to_raw),
        tx_count: st.log.len(),
        max_transactions: st.max_transactions,
        accounts,
    };
    let snap_path = dir.join(SNAPSHOT);
    let json = serde_json::to_vec_pretty(&snap).map_err(|e| err(&snap_path, e))?;
    write_atomic(&snap_path, &json)?;
    st.persisted_txs = st.log.len();
    Ok(())
}

fn parse_addr(path: &Path, s: &str) -> LocalResult<StdAddr> {
    crate::address::parse_addr(s).map_err(|e| err(path, e))
}

fn parse_u128(path: &Path, s: &str) -> LocalResult<u128> {
    s.parse::<u128>()
        .map_err(|e| err(path, format!("bad amount {s:?}: {e}")))
}

/// Loads the chain persisted in `dir`.
pub(super) fn load(dir: &Path) -> LocalResult<Inner> {
    let snap_path = dir.join(SNAPSHOT);
    let bytes = fs::read(&snap_path).map_err(|e| err(&snap_path, e))?;
    let snap: Snapshot = serde_json::from_slice(&bytes).map_err(|e| err(&snap_path, e))?;
    if snap.format != FORMAT {
        return Err(err(
            &snap_path,
            format!("format {} (this build reads {FORMAT})", snap.format),
        ));
    }
    let config_path = dir.join(CONFIG);
    let config_bytes = fs::read(&config_path).map_err(|e| err(&config_path, e))?;
    let config_cell = Boc::decode(&config_bytes).map_err(|e| err(&config_path, e))?;
    let config = super::parse_config(&config_cell, snap.last_utime)?;

    let mut accounts = BTreeMap::new();
    for (addr, boc) in &snap.accounts {
        let address = parse_addr(&snap_path, addr)?;
        let sa: ShardAccount = BocRepr::decode_base64(boc).map_err(|e| err(&snap_path, e))?;
        accounts.insert(address, sa);
    }

    let log_path = dir.join(TX_LOG);
    let mut log = Vec::with_capacity(snap.tx_count);
    if snap.tx_count > 0 {
        let f = File::open(&log_path).map_err(|e| err(&log_path, e))?;
        for line in BufReader::new(f).lines() {
            if log.len() == snap.tx_count {
                break;
            }
            let line = line.map_err(|e| err(&log_path, e))?;
            let (addr, boc) = line
                .split_once(' ')
                .ok_or_else(|| err(&log_path, format!("line {}: no address", log.len() + 1)))?;
            let address = parse_addr(&log_path, addr)?;
            let bytes = B64.decode(boc.trim_end()).map_err(|e| err(&log_path, e))?;
            let cell = Boc::decode(&bytes).map_err(|e| err(&log_path, e))?;
            log.push(ExecutedTx::from_cell(address, cell)?);
        }
        if log.len() < snap.tx_count {
            return Err(err(
                &log_path,
                format!(
                    "holds {} transactions, the snapshot counts {}",
                    log.len(),
                    snap.tx_count
                ),
            ));
        }
    }

    let mut inner = Inner {
        config_cell,
        config,
        accounts,
        log,
        by_account: HashMap::new(),
        lt: snap.lt,
        clock: snap.clock,
        last_utime: snap.last_utime,
        ledger: Ledger {
            minted: parse_u128(&snap_path, &snap.minted)?,
            fees: parse_u128(&snap_path, &snap.fees)?,
            burned: parse_u128(&snap_path, &snap.burned)?,
        },
        root: match &snap.root {
            Some(r) => Some(parse_addr(&snap_path, r)?),
            None => None,
        },
        dir: Some(PathBuf::from(dir)),
        persisted_txs: 0,
        max_transactions: snap.max_transactions.max(1),
    };
    inner.index();
    // Rewrite the log so lines past the snapshot (an interrupted save) go away.
    save(&mut inner, true)?;
    Ok(inner)
}
