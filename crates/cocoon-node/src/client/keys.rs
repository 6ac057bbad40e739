//! API keys of the client gateway: one per app, each with an optional spending limit (TON)
//! and request rate, kept hashed in SQLite.
//!
//! `cocoon client keys add|list|revoke` write the file ([`KeyStore`]); a running gateway
//! ([`ApiKeys`]) reads it again within a second of any change, so keys take effect without
//! a restart. Once the file holds a key (revoked ones included, so that revoking the last
//! key never opens the gateway), every request needs `Authorization: Bearer <key>`:
//! unknown or revoked keys get 401, a key over its spending limit 402, over its rate 429,
//! all in OpenAI's error shape. A key's spending is what its requests cost the client
//! contract (adjusted tokens × the root's price per token), kept in the file.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::client::gateway::error_response;
use crate::util::{from_sql_int as u, lock, sql_int as i, unix_time as now};

/// The start of every key this gateway issues.
pub const KEY_PREFIX: &str = "sk-cocoon-";

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// SQLite failed.
    #[error("API key store: {0}")]
    Store(#[from] rusqlite::Error),
    /// A key of that name exists (and is not revoked).
    #[error("a key named {0:?} exists; revoke it first or pick another name")]
    Exists(String),
    /// No key of that name.
    #[error("no key named {0:?}")]
    Unknown(String),
    /// A name that cannot be one.
    #[error("a key name is 1 to 64 letters, digits, '-', '_' or '.'; not {0:?}")]
    BadName(String),
}

/// What `list` shows of a key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The app's name for it.
    pub name: String,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds, if revoked.
    pub revoked_at: Option<u64>,
    /// Spending limit (nanoTON).
    pub limit_nanoton: Option<u64>,
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Spent so far (nanoTON).
    pub spent_nanoton: u64,
    /// Requests answered so far.
    pub requests: u64,
}

/// The key file.
pub struct KeyStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore").finish_non_exhaustive()
    }
}

fn hash(key: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cocoon-rs api key\0");
    h.update(key.as_bytes());
    h.finalize().into()
}

type Row = (KeyInfo, [u8; 32]);

impl KeyStore {
    /// Opens (creating) the key file at `path`.
    pub fn open(path: &Path) -> Result<Self, KeyError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS keys (
                 name TEXT PRIMARY KEY, hash BLOB NOT NULL UNIQUE, prefix TEXT NOT NULL,
                 created_at INTEGER NOT NULL, revoked_at INTEGER, limit_nanoton INTEGER,
                 rpm INTEGER, spent_nanoton INTEGER NOT NULL DEFAULT 0,
                 requests INTEGER NOT NULL DEFAULT 0);",
        )?;
        Ok(KeyStore {
            conn: Mutex::new(conn),
        })
    }

    /// Issues a key named `name`; returns the key (shown once: only its hash is kept).
    /// A revoked key's name may be used again.
    pub fn add(
        &self,
        name: &str,
        limit_nanoton: Option<u64>,
        rpm: Option<u32>,
    ) -> Result<String, KeyError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(KeyError::BadName(name.to_owned()));
        }
        let key = format!("{KEY_PREFIX}{}", hex::encode(rand::random::<[u8; 24]>()));
        let mut conn = lock(&self.conn);
        let tx = conn.transaction()?;
        let revoked: Option<Option<i64>> = tx
            .query_row(
                "SELECT revoked_at FROM keys WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?;
        match revoked {
            Some(None) => return Err(KeyError::Exists(name.to_owned())),
            Some(Some(_)) => {
                tx.execute("DELETE FROM keys WHERE name = ?1", params![name])?;
            }
            None => {}
        }
        tx.execute(
            "INSERT INTO keys (name, hash, prefix, created_at, limit_nanoton, rpm)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                name,
                hash(&key).as_slice(),
                &key[..KEY_PREFIX.len() + 6],
                i(now()),
                limit_nanoton.map(i),
                rpm.map(i64::from)
            ],
        )?;
        tx.commit()?;
        Ok(key)
    }

    /// Revokes key `name`.
    pub fn revoke(&self, name: &str) -> Result<(), KeyError> {
        let n = lock(&self.conn).execute(
            "UPDATE keys SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
            params![name, i(now())],
        )?;
        if n == 0 {
            return Err(KeyError::Unknown(name.to_owned()));
        }
        Ok(())
    }

    /// Every key, by name.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        Ok(self.rows()?.into_iter().map(|(k, _)| k).collect())
    }

    fn rows(&self) -> Result<Vec<Row>, KeyError> {
        let conn = lock(&self.conn);
        let mut stmt = conn.prepare(
            "SELECT name, prefix, created_at, revoked_at, limit_nanoton, rpm, spent_nanoton,
                    requests, hash FROM keys ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            let h: Vec<u8> = r.get(8)?;
            Ok((
                KeyInfo {
                    name: r.get(0)?,
                    prefix: r.get(1)?,
                    created_at: u(r.get(2)?),
                    revoked_at: r.get::<_, Option<i64>>(3)?.map(u),
                    limit_nanoton: r.get::<_, Option<i64>>(4)?.map(u),
                    rpm: r
                        .get::<_, Option<i64>>(5)?
                        .and_then(|v| u32::try_from(v).ok()),
                    spent_nanoton: u(r.get(6)?),
                    requests: u(r.get(7)?),
                },
                h.try_into().unwrap_or([0; 32]),
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Changes by other connections (the CLI) since opening, as SQLite counts them.
    fn data_version(&self) -> Result<i64, KeyError> {
        Ok(lock(&self.conn).query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    fn add_spend(&self, name: &str, nanoton: u64) -> Result<(), KeyError> {
        lock(&self.conn).execute(
            "UPDATE keys SET spent_nanoton = spent_nanoton + ?2, requests = requests + 1
             WHERE name = ?1",
            params![name, i(nanoton)],
        )?;
        Ok(())
    }
}

/// One key as the gateway holds it.
#[derive(Debug)]
pub struct Key {
    /// Its name.
    pub name: String,
    limit_nanoton: AtomicU64,
    rpm: AtomicU64,
    revoked: std::sync::atomic::AtomicBool,
    spent: AtomicU64,
    requests: AtomicU64,
    recent: Mutex<VecDeque<Instant>>,
}

const NO_LIMIT: u64 = u64::MAX;

impl Key {
    fn from_info(k: &KeyInfo) -> Self {
        let key = Key {
            name: k.name.clone(),
            limit_nanoton: AtomicU64::new(NO_LIMIT),
            rpm: AtomicU64::new(NO_LIMIT),
            revoked: false.into(),
            spent: AtomicU64::new(k.spent_nanoton),
            requests: AtomicU64::new(k.requests),
            recent: Mutex::default(),
        };
        key.update(k);
        key
    }

    fn update(&self, k: &KeyInfo) {
        self.limit_nanoton
            .store(k.limit_nanoton.unwrap_or(NO_LIMIT), Ordering::Relaxed);
        self.rpm
            .store(k.rpm.map_or(NO_LIMIT, u64::from), Ordering::Relaxed);
        self.revoked
            .store(k.revoked_at.is_some(), Ordering::Relaxed);
    }

    /// Spent so far (nanoTON).
    pub fn spent(&self) -> u64 {
        self.spent.load(Ordering::Relaxed)
    }

    /// Whether the key may start a request now: not revoked (401), not over its
    /// spending limit (402).
    pub fn usable(&self) -> Result<(), Denied> {
        if self.revoked.load(Ordering::Relaxed) {
            return Err(Denied::Revoked);
        }
        self.within_limit()
    }

    /// 402 if the key has reached its spending limit.
    pub fn within_limit(&self) -> Result<(), Denied> {
        let limit = self.limit_nanoton.load(Ordering::Relaxed);
        let spent = self.spent();
        if limit != NO_LIMIT && spent >= limit {
            return Err(Denied::OverLimit {
                name: self.name.clone(),
                spent,
                limit,
            });
        }
        Ok(())
    }

    /// Counts a request against the rate; 429 with the wait if over it.
    fn take_rate(&self) -> Result<(), Denied> {
        let rpm = self.rpm.load(Ordering::Relaxed);
        if rpm == NO_LIMIT {
            return Ok(());
        }
        let now = Instant::now();
        let mut recent = lock(&self.recent);
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            recent.pop_front();
        }
        if recent.len() as u64 >= rpm {
            let wait = recent
                .front()
                .map(|t| Duration::from_secs(60).saturating_sub(now.duration_since(*t)))
                .unwrap_or_default();
            return Err(Denied::RateLimited {
                name: self.name.clone(),
                rpm,
                retry_after: wait.as_secs().max(1),
            });
        }
        recent.push_back(now);
        Ok(())
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A key this gateway never issued.
    Unknown,
    /// A revoked key.
    Revoked,
    /// Spent its limit.
    OverLimit {
        /// The key's name.
        name: String,
        /// Spent (nanoTON).
        spent: u64,
        /// Its limit (nanoTON).
        limit: u64,
    },
    /// Over its requests per minute.
    RateLimited {
        /// The key's name.
        name: String,
        /// Its rate.
        rpm: u64,
        /// Seconds until a request is allowed again.
        retry_after: u64,
    },
}

impl Denied {
    /// The OpenAI-style error response.
    pub fn response(&self) -> Response {
        let unauthorized = |code: &str, message: &str| {
            error_response(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                code,
                message,
            )
        };
        match self {
            Denied::Missing => unauthorized(
                "missing_api_key",
                "this gateway needs an API key: send 'Authorization: Bearer <key>' (keys come from `cocoon client keys add`)",
            ),
            Denied::Unknown => unauthorized("invalid_api_key", "the API key is not one of this gateway's"),
            Denied::Revoked => unauthorized("invalid_api_key", "the API key was revoked"),
            Denied::OverLimit { name, spent, limit } => error_response(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_quota",
                "key_limit_reached",
                &format!("API key {name:?} has spent {spent} of its {limit} nanoTON"),
            ),
            Denied::RateLimited {
                name,
                rpm,
                retry_after,
            } => {
                let mut r = error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "rate_limit_exceeded",
                    &format!("API key {name:?} is limited to {rpm} requests per minute; retry in {retry_after} s"),
                );
                if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
        }
    }
}

#[derive(Default)]
struct Loaded {
    version: Option<i64>,
    /// Whether the file holds any key (then every request needs one).
    any: bool,
    by_hash: HashMap<[u8; 32], Arc<Key>>,
}

/// The gateway's keys: checked on every request, reloaded when the file changes.
pub struct ApiKeys {
    store: KeyStore,
    loaded: RwLock<Loaded>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys").finish_non_exhaustive()
    }
}

/// How often the gateway looks for changes to the key file.
const RELOAD_EVERY: Duration = Duration::from_millis(500);

impl ApiKeys {
    /// Opens the key file at `path` and follows its changes (until dropped).
    pub fn open(path: &Path) -> Result<Arc<Self>, KeyError> {
        let keys = Arc::new(ApiKeys {
            store: KeyStore::open(path)?,
            loaded: RwLock::default(),
        });
        keys.reload()?;
        let weak = Arc::downgrade(&keys);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            loop {
                tick.tick().await;
                let Some(keys) = weak.upgrade() else { return };
                if let Err(e) = keys.reload() {
                    tracing::warn!(error = %e, "cannot read the API keys");
                }
            }
        });
        Ok(keys)
    }

    /// Reads the file again if another process changed it.
    fn reload(&self) -> Result<(), KeyError> {
        let version = self.store.data_version()?;
        if self
            .loaded
            .read()
            .map(|l| l.version == Some(version))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let rows = self.store.rows()?;
        let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        let mut by_hash = HashMap::new();
        for (info, h) in &rows {
            // A key the gateway already holds keeps its counters (the gateway is the only
            // one that adds to them); the CLI changes only limits and revocation.
            let key = match loaded.by_hash.get(h) {
                Some(k) => {
                    k.update(info);
                    k.clone()
                }
                None => Arc::new(Key::from_info(info)),
            };
            by_hash.insert(*h, key);
        }
        if loaded.version.is_some() {
            tracing::info!(keys = rows.len(), "API keys reloaded");
        }
        *loaded = Loaded {
            version: Some(version),
            any: !rows.is_empty(),
            by_hash,
        };
        Ok(())
    }

    /// Whether requests need a key (the file holds at least one).
    pub fn required(&self) -> bool {
        self.loaded.read().map(|l| l.any).unwrap_or(true)
    }

    /// The key of a request: `Ok(None)` when no key is needed, the key when it is valid
    /// and within its rate, else why not.
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<Arc<Key>>, Denied> {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        if !loaded.any {
            return Ok(None);
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(Denied::Missing)?;
        let key = loaded
            .by_hash
            .get(&hash(presented))
            .cloned()
            .ok_or(Denied::Unknown)?;
        drop(loaded);
        if key.revoked.load(Ordering::Relaxed) {
            return Err(Denied::Revoked);
        }
        key.take_rate()?;
        Ok(Some(key))
    }

    /// Adds what a request cost to its key (kept in the file).
    pub fn charge(self: &Arc<Self>, key: &Arc<Key>, nanoton: u64) {
        key.spent.fetch_add(nanoton, Ordering::Relaxed);
        key.requests.fetch_add(1, Ordering::Relaxed);
        let this = self.clone();
        let name = key.name.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = this.store.add_spend(&name, nanoton) {
                tracing::warn!(key = %name, error = %e, "cannot record an API key's spending");
            }
        });
    }

    /// Per key: name, spent (nanoTON), requests answered.
    pub fn usage(&self) -> Vec<(String, u64, u64)> {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = loaded
            .by_hash
            .values()
            .map(|k| {
                (
                    k.name.clone(),
                    k.spent(),
                    k.requests.load(Ordering::Relaxed),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// A key by name (for work started under it, such as a batch).
    pub fn by_name(&self, name: &str) -> Option<Arc<Key>> {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        loaded.by_hash.values().find(|k| k.name == name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}")).expect("header"),
        );
        h
    }

    #[tokio::test]
    async fn keys_are_checked_limited_and_picked_up_from_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.sqlite");
        let keys = ApiKeys::open(&path).expect("open");
        assert!(!keys.required(), "no key in the file: open");
        assert!(matches!(keys.check(&HeaderMap::new()), Ok(None)));

        // The CLI adds a key through its own connection.
        let cli = KeyStore::open(&path).expect("cli");
        let app = cli.add("app", Some(500), Some(2)).expect("add");
        assert!(app.starts_with(KEY_PREFIX));
        assert!(matches!(
            cli.add("app", None, None),
            Err(KeyError::Exists(_))
        ));
        assert!(matches!(
            cli.add("bad name", None, None),
            Err(KeyError::BadName(_))
        ));
        keys.reload().expect("reload");
        assert!(keys.required());
        assert_eq!(keys.check(&HeaderMap::new()).err(), Some(Denied::Missing));
        assert_eq!(
            keys.check(&bearer("sk-cocoon-nope")).err(),
            Some(Denied::Unknown)
        );
        let key = keys.check(&bearer(&app)).expect("valid").expect("a key");
        assert_eq!(key.name, "app");
        keys.check(&bearer(&app)).expect("second within the rate");
        assert!(matches!(
            keys.check(&bearer(&app)).err(),
            Some(Denied::RateLimited { rpm: 2, .. })
        ));
        key.within_limit().expect("nothing spent");
        keys.charge(&key, 300);
        keys.charge(&key, 300);
        assert!(matches!(
            key.within_limit(),
            Err(Denied::OverLimit {
                spent: 600,
                limit: 500,
                ..
            })
        ));
        assert_eq!(keys.usage(), vec![("app".to_string(), 600, 2)]);
        // Spending reaches the file.
        for _ in 0..100 {
            if cli.list().expect("list")[0].spent_nanoton == 600 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let listed = cli.list().expect("list");
        assert_eq!((listed[0].spent_nanoton, listed[0].requests), (600, 2));
        assert!(listed[0].prefix.starts_with(KEY_PREFIX) && app.starts_with(&listed[0].prefix));

        // Revoked: 401 at once after a reload; the gateway stays closed without keys.
        cli.revoke("app").expect("revoke");
        assert!(matches!(cli.revoke("app"), Err(KeyError::Unknown(_))));
        keys.reload().expect("reload");
        assert_eq!(keys.check(&bearer(&app)).err(), Some(Denied::Revoked));
        assert!(
            keys.required(),
            "revoking the last key does not open the gateway"
        );
        // The name can be issued again; the old key stays invalid.
        let again = cli.add("app", None, None).expect("re-add");
        keys.reload().expect("reload");
        assert_eq!(keys.check(&bearer(&app)).err(), Some(Denied::Unknown));
        assert!(keys.check(&bearer(&again)).expect("valid").is_some());
    }

    #[test]
    fn denials_are_openai_errors_with_their_status() {
        assert_eq!(Denied::Missing.response().status(), 401);
        assert_eq!(Denied::Revoked.response().status(), 401);
        let over = Denied::OverLimit {
            name: "a".into(),
            spent: 2,
            limit: 1,
        };
        assert_eq!(over.response().status(), 402);
        let rate = Denied::RateLimited {
            name: "a".into(),
            rpm: 1,
            retry_after: 7,
        }
        .response();
        assert_eq!(rate.status(), 429);
        assert_eq!(rate.headers()[header::RETRY_AFTER], "7");
    }
}
