//! The batch state in SQLite: uploaded files, batches with their counters, and the result
//! of every finished line until the batch's output files are written.
//!
//! A line's result and the batch's counters (done, failed, cost, tokens) change in one
//! transaction, so a gateway killed at any moment restarts with counters that equal the
//! results it holds; the files themselves live on disk beside the database.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::BatchError;
use crate::util::{from_sql_int as u, sql_int as i};

/// An uploaded (or produced) file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    /// `file-…`.
    pub id: String,
    /// The name it was uploaded with.
    pub filename: String,
    /// `batch` (uploaded input) or `batch_output` (a batch's output or error file).
    pub purpose: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Unix seconds.
    pub created_at: u64,
    /// Requests in it (input files).
    pub lines: u64,
    /// The endpoints its lines go to (input files).
    pub urls: Vec<String>,
}

/// Where a batch stands (OpenAI's statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Accepted, lines not started.
    Validating,
    /// Lines are running.
    InProgress,
    /// Every line ended; the output files are being written.
    Finalizing,
    /// Done: output files written.
    Completed,
    /// The batch could not run at all.
    Failed,
    /// The completion window ended first; unrun lines are in the error file.
    Expired,
    /// Cancelled: running lines are finishing.
    Cancelling,
    /// Cancelled: output files written.
    Cancelled,
}

impl Status {
    /// OpenAI's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Validating => "validating",
            Status::InProgress => "in_progress",
            Status::Finalizing => "finalizing",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Expired => "expired",
            Status::Cancelling => "cancelling",
            Status::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Status {
        match s {
            "validating" => Status::Validating,
            "in_progress" => Status::InProgress,
            "finalizing" => Status::Finalizing,
            "completed" => Status::Completed,
            "expired" => Status::Expired,
            "cancelling" => Status::Cancelling,
            "cancelled" => Status::Cancelled,
            _ => Status::Failed,
        }
    }

    /// Whether the batch still has work to do (lines or output files).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Status::Validating | Status::InProgress | Status::Finalizing | Status::Cancelling
        )
    }
}

/// A batch as stored.
#[derive(Debug, Clone)]
pub struct BatchRow {
    /// `batch_…`.
    pub id: String,
    /// Secret of the batch: every line's request id derives from it.
    pub secret: [u8; 32],
    /// The input file.
    pub input_file_id: String,
    /// The endpoint every line goes to.
    pub endpoint: String,
    /// As given (`24h`).
    pub completion_window: String,
    /// The app's metadata (a JSON object).
    pub metadata: Value,
    /// Where it stands.
    pub status: Status,
    /// Unix seconds of each transition (0: not yet).
    pub created_at: u64,
    /// See `created_at`.
    pub in_progress_at: u64,
    /// See `created_at`.
    pub finalizing_at: u64,
    /// See `created_at`.
    pub completed_at: u64,
    /// See `created_at`.
    pub failed_at: u64,
    /// See `created_at`.
    pub expired_at: u64,
    /// See `created_at`.
    pub cancelling_at: u64,
    /// See `created_at`.
    pub cancelled_at: u64,
    /// When the completion window ends.
    pub expires_at: u64,
    /// Written at the end.
    pub output_file_id: Option<String>,
    /// Written at the end (if any line failed).
    pub error_file_id: Option<String>,
    /// Lines in the input.
    pub total: u64,
    /// Lines answered with status 200.
    pub completed: u64,
    /// Lines that ended otherwise.
    pub failed: u64,
    /// What the answered lines cost (sum of their `usage.total_cost`, nanoTON).
    pub cost_nanoton: u64,
    /// Prompt tokens of the answered lines.
    pub input_tokens: u64,
    /// Completion tokens of the answered lines.
    pub output_tokens: u64,
    /// Lines before this index may have been sent (kept ahead of the sending, durable).
    pub dispatched: u64,
    /// Highest worker coefficient for its lines (1000 = 1.0×), if the batch set one.
    pub max_coefficient: Option<u32>,
    /// Most of its lines in flight at once, if the batch set it (else the gateway's).
    pub concurrency: Option<u32>,
    /// The API key it was created with: its lines are charged to it.
    pub api_key: Option<String>,
    /// Why the batch failed, if it did.
    pub failure: Option<String>,
}

/// One finished line.
#[derive(Debug, Clone)]
pub struct LineResult {
    /// Index of the request in the input (blank lines not counted).
    pub line: u64,
    /// Answered with status 200 (goes to the output file) or not (the error file).
    pub ok: bool,
    /// The output line (JSON, no newline).
    pub record: Vec<u8>,
    /// nanoTON it cost.
    pub cost: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

/// The store (one SQLite file).
pub struct Store {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, filename TEXT NOT NULL, purpose TEXT NOT NULL, bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL, lines INTEGER NOT NULL, urls TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, secret BLOB NOT NULL, input_file_id TEXT NOT NULL, endpoint TEXT NOT NULL,
    completion_window TEXT NOT NULL, metadata TEXT NOT NULL, status TEXT NOT NULL,
    created_at INTEGER NOT NULL, in_progress_at INTEGER NOT NULL DEFAULT 0,
    finalizing_at INTEGER NOT NULL DEFAULT 0, completed_at INTEGER NOT NULL DEFAULT 0,
    failed_at INTEGER NOT NULL DEFAULT 0, expired_at INTEGER NOT NULL DEFAULT 0,
    cancelling_at INTEGER NOT NULL DEFAULT 0, cancelled_at INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER NOT NULL, output_file_id TEXT, error_file_id TEXT,
    total INTEGER NOT NULL, completed INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
    cost_nanoton INTEGER NOT NULL DEFAULT 0, input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0, dispatched INTEGER NOT NULL DEFAULT 0,
    max_coefficient INTEGER, failure TEXT, concurrency INTEGER, api_key TEXT);
CREATE TABLE IF NOT EXISTS results (
    batch_id TEXT NOT NULL, line INTEGER NOT NULL, ok INTEGER NOT NULL, record BLOB NOT NULL,
    PRIMARY KEY (batch_id, line));
";

const BATCH_COLUMNS: &str =
    "id, secret, input_file_id, endpoint, completion_window, metadata, status,
    created_at, in_progress_at, finalizing_at, completed_at, failed_at, expired_at, cancelling_at,
    cancelled_at, expires_at, output_file_id, error_file_id, total, completed, failed, cost_nanoton,
    input_tokens, output_tokens, dispatched, max_coefficient, failure, concurrency, api_key";

fn batch_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BatchRow> {
    let secret: Vec<u8> = r.get(1)?;
    let metadata: String = r.get(5)?;
    let status: String = r.get(6)?;
    let max_coefficient: Option<i64> = r.get(25)?;
    Ok(BatchRow {
        id: r.get(0)?,
        secret: secret.try_into().unwrap_or([0; 32]),
        input_file_id: r.get(2)?,
        endpoint: r.get(3)?,
        completion_window: r.get(4)?,
        metadata: serde_json::from_str(&metadata).unwrap_or(Value::Null),
        status: Status::parse(&status),
        created_at: u(r.get(7)?),
        in_progress_at: u(r.get(8)?),
        finalizing_at: u(r.get(9)?),
        completed_at: u(r.get(10)?),
        failed_at: u(r.get(11)?),
        expired_at: u(r.get(12)?),
        cancelling_at: u(r.get(13)?),
        cancelled_at: u(r.get(14)?),
        expires_at: u(r.get(15)?),
        output_file_id: r.get(16)?,
        error_file_id: r.get(17)?,
        total: u(r.get(18)?),
        completed: u(r.get(19)?),
        failed: u(r.get(20)?),
        cost_nanoton: u(r.get(21)?),
        input_tokens: u(r.get(22)?),
        output_tokens: u(r.get(23)?),
        dispatched: u(r.get(24)?),
        max_coefficient: max_coefficient.and_then(|c| u32::try_from(c).ok()),
        failure: r.get(26)?,
        concurrency: r
            .get::<_, Option<i64>>(27)?
            .and_then(|c| u32::try_from(c).ok()),
        api_key: r.get(28)?,
    })
}

fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    let urls: String = r.get(6)?;
    Ok(FileRow {
        id: r.get(0)?,
        filename: r.get(1)?,
        purpose: r.get(2)?,
        bytes: u(r.get(3)?),
        created_at: u(r.get(4)?),
        lines: u(r.get(5)?),
        urls: serde_json::from_str(&urls).unwrap_or_default(),
    })
}

impl Store {
    /// Opens (creating) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, BatchError> {
        let conn = Connection::open(path)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a file.
    pub fn add_file(&self, f: &FileRow) -> Result<(), BatchError> {
        self.conn().execute(
            "INSERT INTO files (id, filename, purpose, bytes, created_at, lines, urls)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                f.id,
                f.filename,
                f.purpose,
                i(f.bytes),
                i(f.created_at),
                i(f.lines),
                serde_json::to_string(&f.urls).unwrap_or_else(|_| "[]".into())
            ],
        )?;
        Ok(())
    }

    /// A file by id.
    pub fn file(&self, id: &str) -> Result<Option<FileRow>, BatchError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, filename, purpose, bytes, created_at, lines, urls FROM files WHERE id = ?1",
                params![id],
                file_row,
            )
            .optional()?)
    }

    /// Every file, newest first (optionally of one purpose).
    pub fn files(&self, purpose: Option<&str>) -> Result<Vec<FileRow>, BatchError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, filename, purpose, bytes, created_at, lines, urls FROM files
             WHERE ?1 IS NULL OR purpose = ?1 ORDER BY created_at DESC, rowid DESC",
        )?;
        let rows = stmt.query_map(params![purpose], file_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets a file; `false` if there was none.
    pub fn delete_file(&self, id: &str) -> Result<bool, BatchError> {
        Ok(self
            .conn()
            .execute("DELETE FROM files WHERE id = ?1", params![id])?
            > 0)
    }

    /// An active batch that reads `file_id`, if any.
    pub fn active_batch_of(&self, file_id: &str) -> Result<Option<String>, BatchError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, status FROM batches WHERE input_file_id = ?1 ORDER BY created_at DESC",
        )?;
        let rows = stmt.query_map(params![file_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (id, status) = row?;
            if Status::parse(&status).is_active() {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Records a new batch.
    pub fn add_batch(&self, b: &BatchRow) -> Result<(), BatchError> {
        self.conn().execute(
            "INSERT INTO batches (id, secret, input_file_id, endpoint, completion_window, metadata,
                 status, created_at, in_progress_at, expires_at, total, max_coefficient, concurrency,
                 api_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                b.id,
                b.secret.as_slice(),
                b.input_file_id,
                b.endpoint,
                b.completion_window,
                b.metadata.to_string(),
                b.status.as_str(),
                i(b.created_at),
                i(b.in_progress_at),
                i(b.expires_at),
                i(b.total),
                b.max_coefficient.map(i64::from),
                b.concurrency.map(i64::from),
                b.api_key,
            ],
        )?;
        Ok(())
    }

    /// A batch by id.
    pub fn batch(&self, id: &str) -> Result<Option<BatchRow>, BatchError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?1"),
                params![id],
                batch_row,
            )
            .optional()?)
    }

    /// Every batch, newest first.
    pub fn batches(&self) -> Result<Vec<BatchRow>, BatchError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {BATCH_COLUMNS} FROM batches ORDER BY created_at DESC, rowid DESC"
        ))?;
        let rows = stmt.query_map([], batch_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Moves a batch to `status`, stamping the time of the transition.
    pub fn set_status(&self, id: &str, status: Status, now: u64) -> Result<(), BatchError> {
        let column = match status {
            Status::Validating => "created_at",
            Status::InProgress => "in_progress_at",
            Status::Finalizing => "finalizing_at",
            Status::Completed => "completed_at",
            Status::Failed => "failed_at",
            Status::Expired => "expired_at",
            Status::Cancelling => "cancelling_at",
            Status::Cancelled => "cancelled_at",
        };
        self.conn().execute(
            &format!("UPDATE batches SET status = ?2, {column} = ?3 WHERE id = ?1"),
            params![id, status.as_str(), i(now)],
        )?;
        Ok(())
    }

    /// Marks a batch failed with the reason.
    pub fn fail(&self, id: &str, reason: &str, now: u64) -> Result<(), BatchError> {
        self.conn().execute(
            "UPDATE batches SET status = 'failed', failed_at = ?2, failure = ?3 WHERE id = ?1",
            params![id, i(now), reason],
        )?;
        Ok(())
    }

    /// Asks an active batch to stop; returns the batch as it is now, `None` if unknown.
    pub fn cancel(&self, id: &str, now: u64) -> Result<Option<BatchRow>, BatchError> {
        self.conn().execute(
            "UPDATE batches SET status = 'cancelling', cancelling_at = ?2
             WHERE id = ?1 AND status IN ('validating', 'in_progress')",
            params![id, i(now)],
        )?;
        self.batch(id)
    }

    /// Lines before `upto` may be sent from now on (durable before any of them is).
    pub fn set_dispatched(&self, id: &str, upto: u64) -> Result<(), BatchError> {
        self.conn().execute(
            "UPDATE batches SET dispatched = MAX(dispatched, ?2) WHERE id = ?1",
            params![id, i(upto)],
        )?;
        Ok(())
    }

    /// The indices of the lines of batch `id` that have a result.
    pub fn done_lines(&self, id: &str) -> Result<Vec<u64>, BatchError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT line FROM results WHERE batch_id = ?1")?;
        let rows = stmt.query_map(params![id], |r| r.get::<_, i64>(0))?;
        rows.map(|r| r.map(u).map_err(BatchError::from)).collect()
    }

    /// Records finished lines and adds them to the batch's counters, in one transaction.
    /// A line that already has a result keeps it (and is not counted twice).
    pub fn record(&self, id: &str, results: &[LineResult]) -> Result<(), BatchError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for r in results {
            let added = tx.execute(
                "INSERT OR IGNORE INTO results (batch_id, line, ok, record) VALUES (?1, ?2, ?3, ?4)",
                params![id, i(r.line), r.ok, r.record],
            )?;
            if added == 0 {
                continue;
            }
            tx.execute(
                "UPDATE batches SET completed = completed + ?2, failed = failed + ?3,
                     cost_nanoton = cost_nanoton + ?4, input_tokens = input_tokens + ?5,
                     output_tokens = output_tokens + ?6
                 WHERE id = ?1",
                params![
                    id,
                    i64::from(r.ok),
                    i64::from(!r.ok),
                    i(r.cost),
                    i(r.input_tokens),
                    i(r.output_tokens)
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Calls `each(ok, record)` for every result of batch `id` in line order.
    pub fn each_result(
        &self,
        id: &str,
        mut each: impl FnMut(bool, &[u8]) -> std::io::Result<()>,
    ) -> Result<(), BatchError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT ok, record FROM results WHERE batch_id = ?1 ORDER BY line")?;
        let mut rows = stmt.query(params![id])?;
        while let Some(row) = rows.next()? {
            let ok: bool = row.get(0)?;
            let record = row.get_ref(1)?.as_blob().map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    1,
                    rusqlite::types::Type::Blob,
                    Box::new(e),
                )
            })?;
            each(ok, record)?;
        }
        Ok(())
    }

    /// The end of a batch: its output files recorded, its status set and its results
    /// dropped (they live in the files now), in one transaction.
    pub fn finish(
        &self,
        id: &str,
        status: Status,
        output: Option<&FileRow>,
        errors: Option<&FileRow>,
        now: u64,
    ) -> Result<(), BatchError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for f in [output, errors].into_iter().flatten() {
            tx.execute(
                "INSERT INTO files (id, filename, purpose, bytes, created_at, lines, urls)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, '[]')",
                params![
                    f.id,
                    f.filename,
                    f.purpose,
                    i(f.bytes),
                    i(f.created_at),
                    i(f.lines)
                ],
            )?;
        }
        let column = match status {
            Status::Expired => "expired_at",
            Status::Cancelled => "cancelled_at",
            _ => "completed_at",
        };
        tx.execute(
            &format!(
                "UPDATE batches SET status = ?2, {column} = ?3, output_file_id = ?4,
                     error_file_id = ?5 WHERE id = ?1"
            ),
            params![
                id,
                status.as_str(),
                i(now),
                output.map(|f| f.id.clone()),
                errors.map(|f| f.id.clone())
            ],
        )?;
        tx.execute("DELETE FROM results WHERE batch_id = ?1", params![id])?;
        tx.commit()?;
        Ok(())
    }
}
