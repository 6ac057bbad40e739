//! The OpenAI Batch API on the client gateway: `/v1/files` and `/v1/batches`, run over the
//! network line by line.
//!
//! - [`upload`]: a file streams to disk while each line is checked ([`jsonl`]); nothing of
//!   it is held in memory.
//! - [`store`]: files, batches and finished lines in SQLite; a line's result and the
//!   batch's counters change in one transaction.
//! - [`run`]: one task per active batch reads its input from disk and sends each line
//!   through the gateway's own request path (the same metering, retries and errors as an
//!   app's request), a window of lines in flight that shrinks on refusals, shared fairly
//!   with other batches. Every line goes with its own fixed request id and asks the proxy
//!   to answer it at most once (a cocoon-rs extension): a gateway killed mid-batch resumes
//!   on restart, and a line whose answer was lost with it gets the same answer again from
//!   the proxy instead of a second bill. Behind an official proxy, which cannot do that, a
//!   line that may have run goes to the error file instead of being paid twice.
//! - [`api`]: the HTTP handlers and OpenAI's objects (plus the batch's cost in nanoTON).

pub mod api;
pub mod jsonl;
mod limiter;
pub mod run;
pub mod store;
pub mod upload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use tokio::sync::{Notify, Semaphore};

use crate::client::ClientNode;
pub use crate::config::BatchConfig;
use crate::util::{lock, unix_time as now};
use store::Store;

/// Why a Batch API call failed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The store failed.
    #[error("batch store: {0}")]
    Store(#[from] rusqlite::Error),
    /// A file could not be read or written.
    #[error("batch files: {0}")]
    Io(#[from] std::io::Error),
    /// No such file or batch.
    #[error("no {kind} with id {id:?}")]
    NotFound {
        /// `file` or `batch`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The request is wrong (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// Over a size limit (HTTP 413).
    #[error("{0}")]
    TooLarge(String),
    /// Not possible in the current state (HTTP 409).
    #[error("{0}")]
    Conflict(String),
}

/// The Batch API of one gateway: its store, its files and the batches running.
pub struct Batches {
    config: BatchConfig,
    store: Store,
    node: Arc<ClientNode>,
    /// The gateway's own API, where every line is sent.
    api: Router,
    /// Lines in flight over all batches (FIFO: batches share it fairly).
    permits: Arc<Semaphore>,
    /// Running batches, each with the signal that wakes it when cancelled.
    running: Mutex<HashMap<String, Arc<Notify>>>,
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("dir", &self.config.dir)
            .finish_non_exhaustive()
    }
}

impl Batches {
    /// Opens the Batch API in `config.dir` for `node` and resumes every batch that was
    /// running when the gateway stopped.
    pub fn start(config: BatchConfig, node: Arc<ClientNode>) -> Result<Arc<Self>, BatchError> {
        let files = config.dir.join("files");
        std::fs::create_dir_all(&files)?;
        // Uploads and outputs cut short by a crash: never recorded, never complete.
        for entry in std::fs::read_dir(&files)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "part") {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove a partial file");
                }
            }
        }
        let store = Store::open(&config.dir.join("batches.sqlite"))?;
        let batches = Arc::new(Batches {
            permits: Arc::new(Semaphore::new(config.max_concurrency.max(1))),
            api: node.router(),
            config,
            store,
            node,
            running: Mutex::default(),
        });
        for b in batches.store.batches()? {
            if b.status.is_active() {
                tracing::info!(batch = %b.id, status = b.status.as_str(), "resuming batch");
                batches.spawn(b.id);
            }
        }
        Ok(batches)
    }

    /// The `/v1/files` and `/v1/batches` routes (merged into the gateway's router).
    pub fn router(self: &Arc<Self>) -> Router {
        api::router(self.clone())
    }

    /// Where file `id`'s bytes are.
    fn file_path(&self, id: &str) -> PathBuf {
        self.config.dir.join("files").join(format!("{id}.jsonl"))
    }

    /// Starts the task of batch `id` unless it runs already.
    fn spawn(self: &Arc<Self>, id: String) {
        let wake = {
            let mut running = lock(&self.running);
            if running.contains_key(&id) {
                return;
            }
            let wake = Arc::new(Notify::new());
            running.insert(id.clone(), wake.clone());
            wake
        };
        let this = self.clone();
        tokio::spawn(async move {
            run::run_batch(this.clone(), id.clone(), wake).await;
            lock(&this.running).remove(&id);
        });
    }

    /// Wakes batch `id`'s task (it was cancelled).
    fn wake(&self, id: &str) {
        if let Some(w) = lock(&self.running).get(id) {
            w.notify_one();
        }
    }
}

/// A fresh id: `prefix` and 24 hex digits.
fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 12]>()))
}
