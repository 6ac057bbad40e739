//! The proxy's ledger: who used and earned how many adjusted tokens, crash-safe in SQLite.
//!
//! - Every booking (one finished request) is one SQLite transaction that adds the request
//!   row and updates the client's and the worker's totals together; a request id is booked
//!   at most once, so replaying a booking after a crash cannot double-count.
//! - WAL journal with `synchronous=FULL`: a booking that returned is on disk.
//! - Every row is signed with the proxy's Ed25519 key; opening the ledger verifies every
//!   signature and that each total equals the sum of its requests, so an edited file is
//!   detected at start (cocoon-protocol.md §5.8 does the same for RocksDB records).
//! - The schema is versioned; `open` migrates older files forward.
//! - A request the client asked to be answered at most once (a cocoon-rs extension used by
//!   batches) keeps its answer beside its booking, written in the same transaction, so that
//!   the same request sent again after a crash gets the answer it paid for, not a second bill
//!   ([`Ledger::kept_answer`]). Kept answers are not money: they are not signed, and they are
//!   dropped after [`KEPT_ANSWER_DAYS`].
//! - Epochs (§5.7): each set of root parameters the proxy ran on is an epoch with its own
//!   proxy contract, and every client and worker contract of that epoch starts at zero
//!   tokens. The totals stay cumulative; an epoch records what each party's total was
//!   when it began, so a contract's tokens are `total − start` (capped by the next
//!   epoch's start once the epoch is over). Beginning an epoch is one transaction, so no
//!   booking falls between the two sides of the cut.

use std::path::Path;
use std::sync::Mutex;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rusqlite::{params, Connection, OptionalExtension};

/// Current schema version.
pub const SCHEMA_VERSION: i64 = 4;

/// How long a kept answer stays replayable (days).
pub const KEPT_ANSWER_DAYS: u64 = 7;

/// Domain separation for row signatures.
const SIGNING_CONTEXT: &[u8] = b"cocoon-rs ledger v1\0";

/// Why the ledger failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// SQLite failed.
    #[error("ledger database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A row's signature does not verify: the file was edited or belongs to another key.
    #[error("ledger tampered: {0}")]
    Tampered(String),
    /// The file was written by a newer cocoon-rs.
    #[error("ledger schema version {found} is newer than this build supports ({supported})")]
    TooNew {
        /// Version in the file.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// A total would overflow.
    #[error("ledger total overflow for {0}")]
    Overflow(String),
    /// An epoch cannot begin or end as asked.
    #[error("ledger epoch: {0}")]
    Epoch(String),
}

/// One set of root parameters the proxy ran on (§5.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    /// The root's `params_version`.
    pub params_version: u32,
    /// The proxy contract of this epoch (canonical text form).
    pub proxy_sc: String,
    /// The root parameters as a BOC of the params cell with all contract codes.
    pub params: Vec<u8>,
    /// Whether its contracts are all closed and settled.
    pub closed: bool,
}

/// The two sides a proxy books between: the client that pays and the worker that earns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    /// A client: its tokens are what it used.
    Client,
    /// A worker: its tokens are what it earned.
    Worker,
}

impl Party {
    /// `"client"` or `"worker"`, for logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Party::Client => "client",
            Party::Worker => "worker",
        }
    }
}

/// Every party's total when an epoch began (absent parties: 0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochStarts {
    /// Client owner → tokens used before the epoch.
    pub clients: std::collections::HashMap<String, u64>,
    /// Worker owner → tokens earned before the epoch.
    pub workers: std::collections::HashMap<String, u64>,
}

impl EpochStarts {
    /// The start of `owner` as `party`.
    pub fn of(&self, owner: &str, party: Party) -> u64 {
        let map = match party {
            Party::Client => &self.clients,
            Party::Worker => &self.workers,
        };
        map.get(owner).copied().unwrap_or(0)
    }
}

/// One finished request to book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    /// The proxy's id of the request (unique).
    pub request_id: [u8; 32],
    /// The paying client (its owner address as used in the protocol).
    pub client: String,
    /// The earning worker (its owner address).
    pub worker: String,
    /// Adjusted tokens of the request.
    pub tokens: u64,
    /// The answer as the client got it, kept for a replay of the same request (only for
    /// requests sent to be answered at most once).
    pub kept_answer: Option<Vec<u8>>,
}

/// Totals after a booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookingTotals {
    /// The client's total adjusted tokens used.
    pub client_tokens: u64,
    /// The worker's total adjusted tokens earned.
    pub worker_tokens: u64,
    /// False if this request id was already booked (nothing changed).
    pub newly_booked: bool,
}

/// The SQLite ledger of a proxy.
pub struct Ledger {
    conn: Mutex<Connection>,
    key: SigningKey,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("key", &hex::encode(self.key.verifying_key().as_bytes()))
            .finish()
    }
}

fn to_i64(v: u64, what: &str) -> Result<i64, LedgerError> {
    i64::try_from(v).map_err(|_| LedgerError::Overflow(what.to_owned()))
}

fn account_message(table: &str, owner: &str, tokens: i64) -> Vec<u8> {
    let mut m = SIGNING_CONTEXT.to_vec();
    m.extend_from_slice(table.as_bytes());
    m.push(0);
    m.extend_from_slice(owner.as_bytes());
    m.push(0);
    m.extend_from_slice(&tokens.to_le_bytes());
    m
}

fn epoch_message(version: i64, proxy_sc: &str, params: &[u8], closed: bool) -> Vec<u8> {
    let mut m = SIGNING_CONTEXT.to_vec();
    m.extend_from_slice(b"epochs\0");
    m.extend_from_slice(&version.to_le_bytes());
    m.extend_from_slice(proxy_sc.as_bytes());
    m.push(0);
    m.extend_from_slice(&(params.len() as u64).to_le_bytes());
    m.extend_from_slice(params);
    m.push(u8::from(closed));
    m
}

fn start_message(version: i64, table: &str, owner: &str, tokens: i64) -> Vec<u8> {
    let mut m = account_message(&format!("epoch_starts/{version}/{table}"), owner, tokens);
    m.extend_from_slice(b"\0start");
    m
}

/// Tables added by schema version 2 (epochs).
const EPOCH_TABLES: &str = "
    CREATE TABLE epochs (params_version INTEGER PRIMARY KEY, proxy_sc TEXT NOT NULL,
                         params BLOB NOT NULL, closed INTEGER NOT NULL, sig BLOB NOT NULL);
    CREATE TABLE epoch_starts (params_version INTEGER NOT NULL, kind TEXT NOT NULL,
                               owner TEXT NOT NULL, tokens INTEGER NOT NULL, sig BLOB NOT NULL,
                               PRIMARY KEY (params_version, kind, owner));";

/// Table added by schema version 3: the root configuration the proxy runs on, as COCOON
/// 9060ce5's proxy keeps it (`rootConfig.configV7`, TL bytes), one row.
const ROOT_CONFIG_TABLE: &str = "
    CREATE TABLE root_config (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL,
                              config BLOB NOT NULL, sig BLOB NOT NULL);";

/// Table added by schema version 4: answers kept for requests to be answered at most once.
const KEPT_ANSWERS_TABLE: &str = "
    CREATE TABLE IF NOT EXISTS kept_answers (id BLOB PRIMARY KEY, answer BLOB NOT NULL, kept_at INTEGER NOT NULL);";

fn root_config_message(version: i64, config: &[u8]) -> Vec<u8> {
    let mut m = SIGNING_CONTEXT.to_vec();
    m.extend_from_slice(b"root_config\0");
    m.extend_from_slice(&version.to_le_bytes());
    m.extend_from_slice(config);
    m
}

fn request_message(id: &[u8], client: &str, worker: &str, tokens: i64) -> Vec<u8> {
    let mut m = SIGNING_CONTEXT.to_vec();
    m.extend_from_slice(b"requests\0");
    m.extend_from_slice(id);
    m.extend_from_slice(client.as_bytes());
    m.push(0);
    m.extend_from_slice(worker.as_bytes());
    m.push(0);
    m.extend_from_slice(&tokens.to_le_bytes());
    m
}

impl Ledger {
    /// Opens (or creates) the ledger file at `path`, signed with `key`, and verifies it.
    pub fn open(path: &Path, key: &SigningKey) -> Result<Self, LedgerError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Self::init(conn, key)
    }

    /// A ledger that lives in memory only (tests and throwaway devnets).
    pub fn open_in_memory(key: &SigningKey) -> Result<Self, LedgerError> {
        Self::init(Connection::open_in_memory()?, key)
    }

    fn init(conn: Connection, key: &SigningKey) -> Result<Self, LedgerError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )?;
        let version: Option<i64> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match version {
            None => {
                conn.execute_batch(&format!(
                    "BEGIN;
                     CREATE TABLE clients (owner TEXT PRIMARY KEY, tokens INTEGER NOT NULL, sig BLOB NOT NULL);
                     CREATE TABLE workers (owner TEXT PRIMARY KEY, tokens INTEGER NOT NULL, sig BLOB NOT NULL);
                     CREATE TABLE requests (id BLOB PRIMARY KEY, client TEXT NOT NULL, worker TEXT NOT NULL,
                                            tokens INTEGER NOT NULL, sig BLOB NOT NULL);
                     {EPOCH_TABLES}
                     {ROOT_CONFIG_TABLE}
                     {KEPT_ANSWERS_TABLE}
                     INSERT INTO meta (key, value) VALUES ('schema_version', {SCHEMA_VERSION});
                     COMMIT;"
                ))?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(LedgerError::TooNew {
                    found: v,
                    supported: SCHEMA_VERSION,
                })
            }
            Some(1) => {
                // Version 1 had no epochs: everything booked so far belongs to the first.
                // Nor a stored root configuration: the running proxy stores one.
                conn.execute_batch(&format!(
                    "BEGIN;
                     {EPOCH_TABLES}
                     {ROOT_CONFIG_TABLE}
                     {KEPT_ANSWERS_TABLE}
                     UPDATE meta SET value = {SCHEMA_VERSION} WHERE key = 'schema_version';
                     COMMIT;"
                ))?;
            }
            Some(2) => {
                conn.execute_batch(&format!(
                    "BEGIN;
                     {ROOT_CONFIG_TABLE}
                     {KEPT_ANSWERS_TABLE}
                     UPDATE meta SET value = {SCHEMA_VERSION} WHERE key = 'schema_version';
                     COMMIT;"
                ))?;
            }
            Some(3) => {
                conn.execute_batch(&format!(
                    "BEGIN;
                     {KEPT_ANSWERS_TABLE}
                     UPDATE meta SET value = {SCHEMA_VERSION} WHERE key = 'schema_version';
                     COMMIT;"
                ))?;
            }
            Some(_) => {}
        }
        let ledger = Ledger {
            conn: Mutex::new(conn),
            key: key.clone(),
        };
        ledger.verify()?;
        ledger.prune_kept_answers(crate::util::unix_time())?;
        Ok(ledger)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).to_bytes().to_vec()
    }

    /// Checks every signature and that every total equals the sum of its requests.
    pub fn verify(&self) -> Result<(), LedgerError> {
        let public: VerifyingKey = self.key.verifying_key();
        let check = |what: String, message: &[u8], sig: &[u8]| -> Result<(), LedgerError> {
            let sig = Signature::from_slice(sig)
                .map_err(|_| LedgerError::Tampered(format!("{what}: malformed signature")))?;
            public
                .verify(message, &sig)
                .map_err(|_| LedgerError::Tampered(format!("{what}: signature does not match")))
        };
        let conn = self.conn();
        let mut sums: std::collections::HashMap<(String, String), i64> = Default::default();
        {
            let mut stmt = conn.prepare("SELECT id, client, worker, tokens, sig FROM requests")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let id: Vec<u8> = row.get(0)?;
                let client: String = row.get(1)?;
                let worker: String = row.get(2)?;
                let tokens: i64 = row.get(3)?;
                let sig: Vec<u8> = row.get(4)?;
                check(
                    format!("request {}", hex::encode(&id)),
                    &request_message(&id, &client, &worker, tokens),
                    &sig,
                )?;
                *sums.entry(("clients".into(), client)).or_default() += tokens;
                *sums.entry(("workers".into(), worker)).or_default() += tokens;
            }
        }
        for table in ["clients", "workers"] {
            let mut stmt = conn.prepare(&format!("SELECT owner, tokens, sig FROM {table}"))?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let owner: String = row.get(0)?;
                let tokens: i64 = row.get(1)?;
                let sig: Vec<u8> = row.get(2)?;
                check(
                    format!("{table} row {owner}"),
                    &account_message(table, &owner, tokens),
                    &sig,
                )?;
                let expected = sums.remove(&(table.to_owned(), owner.clone())).unwrap_or(0);
                if expected != tokens {
                    return Err(LedgerError::Tampered(format!(
                        "{table} row {owner}: total {tokens} but its requests add up to {expected}"
                    )));
                }
            }
        }
        if let Some(((table, owner), _)) = sums.into_iter().next() {
            return Err(LedgerError::Tampered(format!(
                "requests for {owner} have no {table} row"
            )));
        }
        {
            let mut stmt =
                conn.prepare("SELECT params_version, proxy_sc, params, closed, sig FROM epochs")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let version: i64 = row.get(0)?;
                let proxy_sc: String = row.get(1)?;
                let params: Vec<u8> = row.get(2)?;
                let closed: bool = row.get(3)?;
                let sig: Vec<u8> = row.get(4)?;
                check(
                    format!("epoch {version}"),
                    &epoch_message(version, &proxy_sc, &params, closed),
                    &sig,
                )?;
            }
        }
        if let Some((version, config, sig)) = conn
            .query_row(
                "SELECT version, config, sig FROM root_config WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                },
            )
            .optional()?
        {
            check(
                format!("root configuration version {version}"),
                &root_config_message(version, &config),
                &sig,
            )?;
        }
        let mut stmt =
            conn.prepare("SELECT params_version, kind, owner, tokens, sig FROM epoch_starts")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let version: i64 = row.get(0)?;
            let kind: String = row.get(1)?;
            let owner: String = row.get(2)?;
            let tokens: i64 = row.get(3)?;
            let sig: Vec<u8> = row.get(4)?;
            check(
                format!("epoch {version} start of {kind} {owner}"),
                &start_message(version, &kind, &owner, tokens),
                &sig,
            )?;
        }
        Ok(())
    }

    /// Keeps `config` as the root configuration the proxy runs on, unless the stored one is
    /// newer (a higher root `version`); returns whether it was stored. One signed row.
    pub fn save_root_config(
        &self,
        config: &cocoon_tl::types::root_config::ConfigV7,
    ) -> Result<bool, LedgerError> {
        let version = i64::from(config.version);
        let bytes = cocoon_tl::to_bytes(config);
        let sig = self.sign(&root_config_message(version, &bytes));
        let changed = self.conn().execute(
            "INSERT INTO root_config (id, version, config, sig) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET version = ?1, config = ?2, sig = ?3
             WHERE excluded.version >= root_config.version AND excluded.config != root_config.config",
            params![version, bytes, sig],
        )?;
        Ok(changed > 0)
    }

    /// The stored root configuration (signature checked), if any.
    pub fn root_config(
        &self,
    ) -> Result<Option<cocoon_tl::types::root_config::ConfigV7>, LedgerError> {
        let row = self
            .conn()
            .query_row(
                "SELECT version, config, sig FROM root_config WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                },
            )
            .optional()?;
        let Some((version, config, sig)) = row else {
            return Ok(None);
        };
        let sig = Signature::from_slice(&sig)
            .map_err(|_| LedgerError::Tampered("root configuration: malformed signature".into()))?;
        self.key
            .verifying_key()
            .verify(&root_config_message(version, &config), &sig)
            .map_err(|_| {
                LedgerError::Tampered("root configuration: signature does not match".into())
            })?;
        cocoon_tl::from_bytes(&config)
            .map(Some)
            .map_err(|e| LedgerError::Tampered(format!("root configuration: {e}")))
    }

    /// Every epoch, oldest first.
    pub fn epochs(&self) -> Result<Vec<Epoch>, LedgerError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT params_version, proxy_sc, params, closed FROM epochs ORDER BY params_version",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Epoch {
                params_version: u32::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                proxy_sc: r.get(1)?,
                params: r.get(2)?,
                closed: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Begins the epoch of `params_version` (newer than every known one) with proxy
    /// contract `proxy_sc` and root parameters `params` (a BOC). In the same transaction
    /// it records every party's total as the epoch's start — except for the very first
    /// epoch, which owns everything booked before it. Returns the starts.
    pub fn begin_epoch(
        &self,
        params_version: u32,
        proxy_sc: &str,
        params: &[u8],
    ) -> Result<EpochStarts, LedgerError> {
        let version = i64::from(params_version);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let latest: Option<i64> =
            tx.query_row("SELECT MAX(params_version) FROM epochs", [], |r| r.get(0))?;
        if let Some(latest) = latest {
            if latest >= version {
                return Err(LedgerError::Epoch(format!(
                    "epoch {params_version} is not newer than epoch {latest}"
                )));
            }
        }
        tx.execute(
            "INSERT INTO epochs (params_version, proxy_sc, params, closed, sig) VALUES (?1, ?2, ?3, 0, ?4)",
            params![
                version,
                proxy_sc,
                params,
                self.sign(&epoch_message(version, proxy_sc, params, false))
            ],
        )?;
        let mut starts = EpochStarts::default();
        if latest.is_some() {
            for table in ["clients", "workers"] {
                let totals: Vec<(String, i64)> = {
                    let mut stmt = tx.prepare(&format!("SELECT owner, tokens FROM {table}"))?;
                    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    rows.collect::<Result<Vec<_>, _>>()?
                };
                for (owner, tokens) in totals {
                    tx.execute(
                        "INSERT INTO epoch_starts (params_version, kind, owner, tokens, sig) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![
                            version,
                            table,
                            owner,
                            tokens,
                            self.sign(&start_message(version, table, &owner, tokens))
                        ],
                    )?;
                    let map = if table == "clients" {
                        &mut starts.clients
                    } else {
                        &mut starts.workers
                    };
                    map.insert(owner, tokens.max(0) as u64);
                }
            }
        }
        tx.commit()?;
        Ok(starts)
    }

    /// What every party had when the epoch of `params_version` began.
    pub fn epoch_starts(&self, params_version: u32) -> Result<EpochStarts, LedgerError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT kind, owner, tokens FROM epoch_starts WHERE params_version = ?1")?;
        let rows = stmt.query_map(params![i64::from(params_version)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut starts = EpochStarts::default();
        for row in rows {
            let (kind, owner, tokens) = row?;
            let map = if kind == "workers" {
                &mut starts.workers
            } else {
                &mut starts.clients
            };
            map.insert(owner, tokens.max(0) as u64);
        }
        Ok(starts)
    }

    /// Marks the epoch of `params_version` closed: its contracts are settled.
    pub fn close_epoch(&self, params_version: u32) -> Result<(), LedgerError> {
        let version = i64::from(params_version);
        let conn = self.conn();
        let row: Option<(String, Vec<u8>)> = conn
            .query_row(
                "SELECT proxy_sc, params FROM epochs WHERE params_version = ?1",
                params![version],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((proxy_sc, params)) = row else {
            return Err(LedgerError::Epoch(format!("no epoch {params_version}")));
        };
        conn.execute(
            "UPDATE epochs SET closed = 1, sig = ?2 WHERE params_version = ?1",
            params![
                version,
                self.sign(&epoch_message(version, &proxy_sc, &params, true))
            ],
        )?;
        Ok(())
    }

    /// Books one finished request: one transaction, at most once per request id.
    pub fn book(&self, booking: &Booking) -> Result<BookingTotals, LedgerError> {
        let mut totals = self.book_all(std::slice::from_ref(booking))?;
        totals
            .pop()
            .ok_or_else(|| LedgerError::Overflow("empty batch".into()))
    }

    /// Books several finished requests in one transaction (one disk sync for all of
    /// them), each at most once per request id; totals are returned in order.
    pub fn book_all(&self, bookings: &[Booking]) -> Result<Vec<BookingTotals>, LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(bookings.len());
        for booking in bookings {
            out.push(self.book_in(&tx, booking)?);
        }
        tx.commit()?;
        Ok(out)
    }

    fn book_in(
        &self,
        tx: &rusqlite::Transaction<'_>,
        booking: &Booking,
    ) -> Result<BookingTotals, LedgerError> {
        let tokens = to_i64(booking.tokens, "request")?;
        let exists: bool = tx
            .query_row(
                "SELECT 1 FROM requests WHERE id = ?1",
                params![booking.request_id.as_slice()],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false);
        let total = |tx: &rusqlite::Transaction<'_>,
                     table: &str,
                     owner: &str|
         -> Result<i64, LedgerError> {
            Ok(tx
                .query_row(
                    &format!("SELECT tokens FROM {table} WHERE owner = ?1"),
                    params![owner],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0))
        };
        if exists {
            let client_tokens = total(tx, "clients", &booking.client)?;
            let worker_tokens = total(tx, "workers", &booking.worker)?;
            return Ok(BookingTotals {
                client_tokens: client_tokens as u64,
                worker_tokens: worker_tokens as u64,
                newly_booked: false,
            });
        }
        tx.execute(
            "INSERT INTO requests (id, client, worker, tokens, sig) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                booking.request_id.as_slice(),
                booking.client,
                booking.worker,
                tokens,
                self.sign(&request_message(
                    &booking.request_id,
                    &booking.client,
                    &booking.worker,
                    tokens
                ))
            ],
        )?;
        if let Some(answer) = &booking.kept_answer {
            tx.execute(
                "INSERT OR REPLACE INTO kept_answers (id, answer, kept_at) VALUES (?1, ?2, ?3)",
                params![
                    booking.request_id.as_slice(),
                    answer,
                    i64::from(crate::util::unix_secs())
                ],
            )?;
        }
        let mut totals = [0i64; 2];
        for (i, (table, owner)) in [("clients", &booking.client), ("workers", &booking.worker)]
            .into_iter()
            .enumerate()
        {
            let new_total = total(tx, table, owner)?
                .checked_add(tokens)
                .ok_or_else(|| LedgerError::Overflow(owner.clone()))?;
            tx.execute(
                &format!(
                    "INSERT INTO {table} (owner, tokens, sig) VALUES (?1, ?2, ?3)
                     ON CONFLICT(owner) DO UPDATE SET tokens = excluded.tokens, sig = excluded.sig"
                ),
                params![
                    owner,
                    new_total,
                    self.sign(&account_message(table, owner, new_total))
                ],
            )?;
            totals[i] = new_total;
        }
        Ok(BookingTotals {
            client_tokens: totals[0] as u64,
            worker_tokens: totals[1] as u64,
            newly_booked: true,
        })
    }

    /// Total adjusted tokens a client has used.
    pub fn client_tokens(&self, owner: &str) -> Result<u64, LedgerError> {
        self.account_tokens("clients", owner)
    }

    /// Total adjusted tokens a worker has earned.
    pub fn worker_tokens(&self, owner: &str) -> Result<u64, LedgerError> {
        self.account_tokens("workers", owner)
    }

    fn account_tokens(&self, table: &str, owner: &str) -> Result<u64, LedgerError> {
        let tokens: Option<i64> = self
            .conn()
            .query_row(
                &format!("SELECT tokens FROM {table} WHERE owner = ?1"),
                params![owner],
                |r| r.get(0),
            )
            .optional()?;
        Ok(tokens.unwrap_or(0).max(0) as u64)
    }

    /// Whether request `id` is booked.
    pub fn is_booked(&self, id: &[u8; 32]) -> Result<bool, LedgerError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM requests WHERE id = ?1",
                params![id.as_slice()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// The answer kept with the booking of request `id`, if it was sent to be answered at
    /// most once and is not older than [`KEPT_ANSWER_DAYS`].
    pub fn kept_answer(&self, id: &[u8; 32]) -> Result<Option<Vec<u8>>, LedgerError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT answer FROM kept_answers WHERE id = ?1",
                params![id.as_slice()],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Drops kept answers older than [`KEPT_ANSWER_DAYS`] at `now` (unix seconds); returns
    /// how many.
    pub fn prune_kept_answers(&self, now: u64) -> Result<usize, LedgerError> {
        let cutoff = now.saturating_sub(KEPT_ANSWER_DAYS * 86_400);
        Ok(self.conn().execute(
            "DELETE FROM kept_answers WHERE kept_at < ?1",
            params![to_i64(cutoff, "time")?],
        )?)
    }

    /// Number of booked requests.
    pub fn request_count(&self) -> Result<u64, LedgerError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Every client's and every worker's total: `(clients, workers)`, each as
    /// `(owner, tokens)` pairs (what the proxy anchors on chain, §5.3).
    pub fn all_totals(&self) -> Result<AllTotals, LedgerError> {
        let conn = self.conn();
        let read = |table: &str| -> Result<Vec<(String, u64)>, LedgerError> {
            let mut stmt = conn.prepare(&format!("SELECT owner, tokens FROM {table}"))?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        };
        Ok(AllTotals {
            clients: read("clients")?,
            workers: read("workers")?,
        })
    }

    /// Sum of all client totals and of all worker totals (they must be equal).
    pub fn grand_totals(&self) -> Result<(u64, u64), LedgerError> {
        let conn = self.conn();
        let sum = |table: &str| -> Result<i64, LedgerError> {
            Ok(conn.query_row(
                &format!("SELECT COALESCE(SUM(tokens), 0) FROM {table}"),
                [],
                |r| r.get(0),
            )?)
        };
        Ok((sum("clients")?.max(0) as u64, sum("workers")?.max(0) as u64))
    }
}

/// Every party's total, from [`Ledger::all_totals`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllTotals {
    /// `(client owner, tokens used)`.
    pub clients: Vec<(String, u64)>,
    /// `(worker owner, tokens earned)`.
    pub workers: Vec<(String, u64)>,
}

/// Books requests on a dedicated thread with group commit: every booking waiting when a
/// transaction starts goes into it, so concurrent requests share one disk sync instead of
/// queueing for one each. A booking's future resolves once it is durable.
#[derive(Clone)]
pub struct LedgerWriter {
    queue: std::sync::mpsc::Sender<(
        Booking,
        tokio::sync::oneshot::Sender<Result<BookingTotals, BookingError>>,
    )>,
}

/// Why a booking did not become durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BookingError {
    /// The batch transaction it was part of failed (shared by every booking in it).
    #[error(transparent)]
    Ledger(#[from] std::sync::Arc<LedgerError>),
    /// The writer thread is gone.
    #[error("the ledger writer has stopped")]
    Stopped,
}

impl std::fmt::Debug for LedgerWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerWriter").finish_non_exhaustive()
    }
}

/// Most bookings in one transaction.
const MAX_BATCH: usize = 512;

impl LedgerWriter {
    /// Starts the writer thread for `ledger`; it ends when every handle is dropped.
    pub fn spawn(ledger: std::sync::Arc<Ledger>) -> Self {
        let (queue, rx) = std::sync::mpsc::channel::<(
            Booking,
            tokio::sync::oneshot::Sender<Result<BookingTotals, BookingError>>,
        )>();
        let spawned = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    let (bookings, waiters): (Vec<Booking>, Vec<_>) = batch.into_iter().unzip();
                    match ledger.book_all(&bookings) {
                        Ok(totals) => {
                            for (waiter, t) in waiters.into_iter().zip(totals) {
                                let _ = waiter.send(Ok(t));
                            }
                        }
                        Err(e) => {
                            let error = BookingError::Ledger(std::sync::Arc::new(e));
                            for waiter in waiters {
                                let _ = waiter.send(Err(error.clone()));
                            }
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the ledger writer thread");
        }
        LedgerWriter { queue }
    }

    /// Books one request; resolves when it is durable (or failed).
    pub async fn book(&self, booking: Booking) -> Result<BookingTotals, BookingError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue
            .send((booking, tx))
            .map_err(|_| BookingError::Stopped)?;
        rx.await.map_err(|_| BookingError::Stopped)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn booking(id: u8, tokens: u64) -> Booking {
        Booking {
            kept_answer: None,
            request_id: [id; 32],
            client: "client-a".into(),
            worker: "worker-b".into(),
            tokens,
        }
    }

    #[test]
    fn bookings_add_up_and_are_idempotent() {
        let ledger = Ledger::open_in_memory(&key(1)).expect("open");
        let t = ledger.book(&booking(1, 100)).expect("book");
        assert_eq!(
            (t.client_tokens, t.worker_tokens, t.newly_booked),
            (100, 100, true)
        );
        let t = ledger.book(&booking(2, 34)).expect("book");
        assert_eq!((t.client_tokens, t.worker_tokens), (134, 134));
        let again = ledger.book(&booking(2, 34)).expect("replay");
        assert!(!again.newly_booked);
        assert_eq!(again.client_tokens, 134);
        assert_eq!(ledger.request_count().expect("count"), 2);
        assert_eq!(ledger.grand_totals().expect("totals"), (134, 134));
        ledger.verify().expect("consistent");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_groups_concurrent_bookings_and_keeps_them_exact() {
        let ledger = std::sync::Arc::new(Ledger::open_in_memory(&key(4)).expect("open"));
        let writer = LedgerWriter::spawn(ledger.clone());
        let mut tasks = Vec::new();
        for i in 0..200u8 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(
                async move { writer.book(booking(i, 10)).await },
            ));
        }
        let mut newly = 0;
        for t in tasks {
            newly += u32::from(t.await.expect("task").expect("booked").newly_booked);
        }
        assert_eq!(newly, 200);
        // A replay through the writer changes nothing.
        let again = writer.book(booking(7, 10)).await.expect("replay");
        assert!(!again.newly_booked);
        assert_eq!(ledger.request_count().expect("count"), 200);
        assert_eq!(ledger.grand_totals().expect("totals"), (2000, 2000));
        ledger.verify().expect("consistent");
    }

    #[test]
    fn survives_reopen_and_detects_tampering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.sqlite");
        {
            let ledger = Ledger::open(&path, &key(7)).expect("open");
            ledger.book(&booking(1, 10)).expect("book");
            ledger.book(&booking(2, 20)).expect("book");
        }
        let ledger = Ledger::open(&path, &key(7)).expect("reopen");
        assert_eq!(ledger.client_tokens("client-a").expect("tokens"), 30);
        drop(ledger);

        // Another key cannot open it.
        let err = Ledger::open(&path, &key(8)).expect_err("wrong key");
        assert!(
            err.to_string().starts_with("ledger tampered: request"),
            "{err}"
        );

        // Lowering a total by hand is detected.
        let raw = Connection::open(&path).expect("raw");
        raw.execute("UPDATE clients SET tokens = 5 WHERE owner = 'client-a'", [])
            .expect("edit");
        drop(raw);
        let err = Ledger::open(&path, &key(7)).expect_err("tampered");
        assert_eq!(
            err.to_string(),
            "ledger tampered: clients row client-a: signature does not match"
        );
    }

    #[test]
    fn epochs_cut_the_totals_atomically_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.sqlite");
        {
            let ledger = Ledger::open(&path, &key(7)).expect("open");
            ledger.book(&booking(1, 10)).expect("book");
            // The first epoch owns what was booked before it: no starts.
            let first = ledger.begin_epoch(1, "sc-1", b"params-1").expect("epoch 1");
            assert_eq!(first, EpochStarts::default());
            ledger.book(&booking(2, 20)).expect("book");
            let second = ledger.begin_epoch(2, "sc-2", b"params-2").expect("epoch 2");
            assert_eq!(second.of("client-a", Party::Client), 30);
            assert_eq!(second.of("worker-b", Party::Worker), 30);
            assert_eq!(second.of("client-z", Party::Client), 0);
            // Versions only grow.
            assert!(matches!(
                ledger.begin_epoch(2, "sc-x", b"p"),
                Err(LedgerError::Epoch(_))
            ));
            ledger.book(&booking(3, 5)).expect("book");
            ledger.close_epoch(1).expect("close 1");
            assert!(ledger.close_epoch(9).is_err());
        }
        let ledger = Ledger::open(&path, &key(7)).expect("reopen verifies epoch rows");
        let epochs = ledger.epochs().expect("epochs");
        assert_eq!(
            epochs
                .iter()
                .map(|e| (e.params_version, e.proxy_sc.as_str(), e.closed))
                .collect::<Vec<_>>(),
            vec![(1, "sc-1", true), (2, "sc-2", false)]
        );
        assert_eq!(epochs[1].params, b"params-2");
        // The totals stay cumulative; the new epoch's contract sees total − start.
        let starts = ledger.epoch_starts(2).expect("starts");
        assert_eq!(ledger.client_tokens("client-a").expect("total"), 35);
        assert_eq!(
            ledger.client_tokens("client-a").expect("total") - starts.of("client-a", Party::Client),
            5
        );
        drop(ledger);
        // An edited start is detected.
        let raw = Connection::open(&path).expect("raw");
        raw.execute("UPDATE epoch_starts SET tokens = 0", [])
            .expect("edit");
        drop(raw);
        let err = Ledger::open(&path, &key(7)).expect_err("tampered");
        assert!(
            err.to_string().contains("signature does not match"),
            "{err}"
        );
    }

    #[test]
    fn a_version_1_file_is_migrated_with_its_bookings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.sqlite");
        {
            let ledger = Ledger::open(&path, &key(7)).expect("open");
            ledger.book(&booking(1, 10)).expect("book");
        }
        // Turn it back into a version 1 file.
        let raw = Connection::open(&path).expect("raw");
        raw.execute_batch(
            "DROP TABLE epochs; DROP TABLE epoch_starts; DROP TABLE root_config;
             UPDATE meta SET value = 1 WHERE key = 'schema_version';",
        )
        .expect("downgrade");
        drop(raw);
        let ledger = Ledger::open(&path, &key(7)).expect("migrate");
        assert_eq!(ledger.client_tokens("client-a").expect("tokens"), 10);
        assert!(ledger.epochs().expect("epochs").is_empty());
        ledger
            .begin_epoch(4, "sc", b"p")
            .expect("epoch after migration");
    }

    #[test]
    fn the_root_configuration_is_kept_newest_first_and_signed_and_version_2_files_migrate() {
        use cocoon_tl::types::root_config::ConfigV7;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.sqlite");
        {
            let ledger = Ledger::open(&path, &key(7)).expect("open");
            ledger.book(&booking(1, 10)).expect("book");
        }
        // A version 2 file (before 9060ce5's configV7) opens and gains the table.
        let raw = Connection::open(&path).expect("raw");
        raw.execute_batch(
            "DROP TABLE root_config; UPDATE meta SET value = 2 WHERE key = 'schema_version';",
        )
        .expect("downgrade");
        drop(raw);
        let ledger = Ledger::open(&path, &key(7)).expect("migrate");
        assert_eq!(ledger.client_tokens("client-a").expect("tokens"), 10);
        assert_eq!(ledger.root_config().expect("read"), None);
        let v = |version: i32, address: &str| ConfigV7 {
            version,
            key_manager_address: address.into(),
            ..ConfigV7::default()
        };
        assert!(ledger.save_root_config(&v(5, "a:1")).expect("save"));
        assert!(
            !ledger.save_root_config(&v(4, "b:1")).expect("older"),
            "older kept out"
        );
        assert!(
            !ledger.save_root_config(&v(5, "a:1")).expect("same"),
            "unchanged"
        );
        assert!(ledger.save_root_config(&v(6, "c:1")).expect("newer"));
        assert_eq!(ledger.root_config().expect("read"), Some(v(6, "c:1")));
        drop(ledger);
        let raw = Connection::open(&path).expect("raw");
        raw.execute("UPDATE root_config SET version = 9", [])
            .expect("edit");
        drop(raw);
        let err = Ledger::open(&path, &key(7)).expect_err("tampered");
        assert!(err.to_string().contains("root configuration"), "{err}");
    }

    #[test]
    fn a_kept_answer_is_written_with_its_booking_once_and_pruned_when_old() {
        let ledger = Ledger::open_in_memory(&key(7)).expect("open");
        let mut b = booking(9, 40);
        b.kept_answer = Some(b"the answer".to_vec());
        assert!(!ledger.is_booked(&b.request_id).expect("read"));
        assert!(ledger.book(&b).expect("book").newly_booked);
        assert!(ledger.is_booked(&b.request_id).expect("read"));
        assert_eq!(
            ledger.kept_answer(&b.request_id).expect("read").as_deref(),
            Some(&b"the answer"[..])
        );
        // Booked again (a replay raced it): nothing changes, the first answer stays.
        b.kept_answer = Some(b"another".to_vec());
        assert!(!ledger.book(&b).expect("book").newly_booked);
        assert_eq!(ledger.client_tokens("client-a").expect("total"), 40);
        assert_eq!(
            ledger.kept_answer(&b.request_id).expect("read").as_deref(),
            Some(&b"the answer"[..])
        );
        // Without a kept answer, none is stored.
        assert!(ledger.book(&booking(10, 1)).expect("book").newly_booked);
        assert_eq!(
            ledger
                .kept_answer(&booking(10, 1).request_id)
                .expect("read"),
            None
        );
        // A week later it is gone; the booking stays.
        let later = crate::util::unix_time() + KEPT_ANSWER_DAYS * 86_400 + 10;
        assert_eq!(ledger.prune_kept_answers(later).expect("prune"), 1);
        assert_eq!(ledger.kept_answer(&b.request_id).expect("read"), None);
        assert!(ledger.is_booked(&b.request_id).expect("read"));
        ledger.verify().expect("still verifies");
    }

    #[test]
    fn deleting_a_request_row_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.sqlite");
        {
            let ledger = Ledger::open(&path, &key(3)).expect("open");
            ledger.book(&booking(1, 10)).expect("book");
            ledger.book(&booking(2, 20)).expect("book");
        }
        let raw = Connection::open(&path).expect("raw");
        raw.execute("DELETE FROM requests WHERE tokens = 20", [])
            .expect("edit");
        drop(raw);
        let err = Ledger::open(&path, &key(3)).expect_err("tampered");
        assert_eq!(
            err.to_string(),
            "ledger tampered: clients row client-a: total 30 but its requests add up to 10"
        );
    }
}
