//! [`KeyStore`]: the key manager's keys on disk (SQLite), each row signed with its
//! machine key so that an edited file is refused rather than served (COCOON signs its
//! RocksDB records the same way, cocoon-protocol-9060ce5.md §8).

use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rusqlite::{params, Connection, OptionalExtension};

use super::ring::public_of;

/// Why the key store failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// SQLite failed.
    #[error("key store database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A row does not verify under the machine key: the file was edited or belongs to
    /// another key manager.
    #[error("key store tampered: {0}")]
    Tampered(String),
    /// The file could not be prepared.
    #[error("key store file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// One key the key manager issued.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedKey {
    /// The Ed25519 seed (handed to attested proxies).
    pub seed: [u8; 32],
    /// Its public half (what apps encrypt to; registered on the root).
    pub public_key: [u8; 32],
    /// Kind of key (1: the hourly encryption keys).
    pub key_type: u8,
    /// When it was made (unix seconds).
    pub valid_since: u32,
    /// When it expires (unix seconds).
    pub valid_until: u32,
    /// Whether the root has confirmed its registration.
    pub registered: bool,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("public_key", &hex::encode(self.public_key))
            .field("key_type", &self.key_type)
            .field("valid_since", &self.valid_since)
            .field("valid_until", &self.valid_until)
            .field("registered", &self.registered)
            .finish_non_exhaustive()
    }
}

impl IssuedKey {
    /// A fresh random key of `key_type`, valid from `now` for `lifetime` seconds.
    pub fn generate(key_type: u8, now: u32, lifetime: u32) -> Self {
        let seed: [u8; 32] = rand::random();
        IssuedKey {
            seed,
            public_key: public_of(&seed),
            key_type,
            valid_since: now,
            valid_until: now.saturating_add(lifetime),
            registered: false,
        }
    }

    /// What the row signature covers: every column but `registered`, which changes.
    fn signed_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32 + 32 + 1 + 8 + 16);
        b.extend_from_slice(b"cocoon-rs key manager key v1");
        b.extend_from_slice(&self.public_key);
        b.extend_from_slice(&self.seed);
        b.push(self.key_type);
        b.extend_from_slice(&self.valid_since.to_be_bytes());
        b.extend_from_slice(&self.valid_until.to_be_bytes());
        b
    }
}

/// The key manager's keys in an SQLite file (mode 0600 on Unix).
pub struct KeyStore {
    conn: Connection,
    machine: SigningKey,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore").finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Opens (or creates) the store at `path`; rows are signed and checked with `machine`.
    pub fn open(path: &Path, machine: &SigningKey) -> Result<Self, KeyStoreError> {
        let file = |source| KeyStoreError::File {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(file)?;
        }
        let conn = Connection::open(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(file)?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Self::init(conn, machine)
    }

    /// A store in memory (tests).
    pub fn open_in_memory(machine: &SigningKey) -> Result<Self, KeyStoreError> {
        Self::init(Connection::open_in_memory()?, machine)
    }

    fn init(conn: Connection, machine: &SigningKey) -> Result<Self, KeyStoreError> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS keys (
                public_key BLOB PRIMARY KEY,
                seed BLOB NOT NULL,
                key_type INTEGER NOT NULL,
                valid_since INTEGER NOT NULL,
                valid_until INTEGER NOT NULL,
                registered INTEGER NOT NULL DEFAULT 0,
                signature BLOB NOT NULL
            );",
        )?;
        Ok(KeyStore {
            conn,
            machine: machine.clone(),
        })
    }

    /// Adds a key (one transaction).
    pub fn insert(&self, key: &IssuedKey) -> Result<(), KeyStoreError> {
        let signature = self.machine.sign(&key.signed_bytes()).to_bytes();
        self.conn.execute(
            "INSERT INTO keys (public_key, seed, key_type, valid_since, valid_until, registered, signature)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                key.public_key.as_slice(),
                key.seed.as_slice(),
                key.key_type,
                key.valid_since,
                key.valid_until,
                key.registered,
                signature.as_slice()
            ],
        )?;
        Ok(())
    }

    /// Records that the root lists `public_key`.
    pub fn mark_registered(&self, public_key: &[u8; 32]) -> Result<(), KeyStoreError> {
        self.conn.execute(
            "UPDATE keys SET registered = 1 WHERE public_key = ?1",
            params![public_key.as_slice()],
        )?;
        Ok(())
    }

    /// Removes one key; whether it was there.
    pub fn remove(&self, public_key: &[u8; 32]) -> Result<bool, KeyStoreError> {
        Ok(self.conn.execute(
            "DELETE FROM keys WHERE public_key = ?1",
            params![public_key.as_slice()],
        )? > 0)
    }

    /// Removes every key that expired before `now`; how many.
    pub fn remove_expired(&self, now: u32) -> Result<usize, KeyStoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM keys WHERE valid_until < ?1", params![now])?)
    }

    /// One key by public key.
    pub fn get(&self, public_key: &[u8; 32]) -> Result<Option<IssuedKey>, KeyStoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT public_key, seed, key_type, valid_since, valid_until, registered, signature
                 FROM keys WHERE public_key = ?1",
                params![public_key.as_slice()],
                raw_row,
            )
            .optional()?;
        row.map(|r| self.check(r)).transpose()
    }

    /// Every key, oldest first, each checked against its signature.
    pub fn all(&self) -> Result<Vec<IssuedKey>, KeyStoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT public_key, seed, key_type, valid_since, valid_until, registered, signature
             FROM keys ORDER BY valid_since, public_key",
        )?;
        let rows = stmt.query_map([], raw_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(self.check(row?)?);
        }
        Ok(out)
    }

    fn check(&self, raw: RawRow) -> Result<IssuedKey, KeyStoreError> {
        let bad = |what: &str| {
            KeyStoreError::Tampered(format!("key {}: {what}", hex::encode(&raw.public_key)))
        };
        let public_key: [u8; 32] = raw
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| bad("public key is not 32 bytes"))?;
        let seed: [u8; 32] = raw
            .seed
            .as_slice()
            .try_into()
            .map_err(|_| bad("seed is not 32 bytes"))?;
        let signature: [u8; 64] = raw
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| bad("signature is not 64 bytes"))?;
        let key = IssuedKey {
            seed,
            public_key,
            key_type: u8::try_from(raw.key_type).map_err(|_| bad("key type out of range"))?,
            valid_since: u32::try_from(raw.valid_since).map_err(|_| bad("time out of range"))?,
            valid_until: u32::try_from(raw.valid_until).map_err(|_| bad("time out of range"))?,
            registered: raw.registered != 0,
        };
        if public_of(&key.seed) != key.public_key {
            return Err(bad("public key does not belong to the seed"));
        }
        let verifying: VerifyingKey = self.machine.verifying_key();
        verifying
            .verify(&key.signed_bytes(), &Signature::from_bytes(&signature))
            .map_err(|_| bad("signature does not verify under this key manager's machine key"))?;
        Ok(key)
    }
}

struct RawRow {
    public_key: Vec<u8>,
    seed: Vec<u8>,
    key_type: i64,
    valid_since: i64,
    valid_until: i64,
    registered: i64,
    signature: Vec<u8>,
}

fn raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        public_key: r.get(0)?,
        seed: r.get(1)?,
        key_type: r.get(2)?,
        valid_since: r.get(3)?,
        valid_until: r.get(4)?,
        registered: r.get(5)?,
        signature: r.get(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_a_reopen_and_an_edited_row_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("km.sqlite");
        let machine = SigningKey::from_bytes(&[9; 32]);
        let a = IssuedKey::generate(1, 1000, 86_400);
        let b = IssuedKey::generate(1, 4600, 86_400);
        {
            let store = KeyStore::open(&path, &machine).expect("open");
            store.insert(&a).expect("a");
            store.insert(&b).expect("b");
            store.mark_registered(&a.public_key).expect("mark");
        }
        let store = KeyStore::open(&path, &machine).expect("reopen");
        let all = store.all().expect("all");
        assert_eq!(all.len(), 2);
        assert!(all[0].registered && !all[1].registered);
        assert_eq!(all[1], b);
        assert_eq!(store.remove_expired(1000 + 86_401).expect("expired"), 1);
        assert_eq!(store.all().expect("all").len(), 1);

        // Another machine key cannot read these rows as its own.
        let other = KeyStore::open(&path, &SigningKey::from_bytes(&[8; 32])).expect("open");
        assert!(matches!(other.all(), Err(KeyStoreError::Tampered(_))));
        // An edited expiry is refused.
        store
            .conn
            .execute("UPDATE keys SET valid_until = valid_until + 1", [])
            .expect("edit");
        assert!(matches!(store.all(), Err(KeyStoreError::Tampered(_))));
    }
}
