//! The bot's SQLite file: the Bot API update offset (so that a restart never answers an
//! update twice), each chat's history, model, mode and spending. Every change is one
//! statement or one transaction.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::BotError;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// What a chat has spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spending {
    /// nanoTON, the sum of the answers' `total_cost`.
    pub nanoton: u64,
    /// Answers paid for (chat answers and transcriptions).
    pub requests: u64,
}

/// The store, shared by the tasks that handle updates.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

/// Estimated tokens of a text (4 characters a token, at least 1).
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count() / 4 + 1
}

impl Store {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, BotError> {
        let err = |source| BotError::Store {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS turns (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 chat_id INTEGER NOT NULL,
                 role TEXT NOT NULL,
                 content TEXT NOT NULL,
                 tokens INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS turns_by_chat ON turns (chat_id, id);
             CREATE TABLE IF NOT EXISTS chats (
                 chat_id INTEGER PRIMARY KEY,
                 model TEXT,
                 transcribe_only INTEGER NOT NULL DEFAULT 0,
                 spent_nanoton INTEGER NOT NULL DEFAULT 0,
                 requests INTEGER NOT NULL DEFAULT 0);",
        )
        .map_err(err)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, BotError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|source| BotError::Store {
            path: self.path.clone(),
            source,
        })
    }

    /// The next update id to ask for (0 at first).
    pub fn offset(&self) -> Result<i32, BotError> {
        self.with(|c| {
            c.query_row("SELECT value FROM meta WHERE key = 'offset'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
        })
        .map(|v| v.and_then(|v| i32::try_from(v).ok()).unwrap_or(0))
    }

    /// Records that every update before `offset` is taken (before it is handled: an
    /// update is answered at most once, even across a crash).
    pub fn set_offset(&self, offset: i32) -> Result<(), BotError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('offset', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
                params![i64::from(offset)],
            )
            .map(drop)
        })
    }

    /// The chat's history, oldest first.
    pub fn history(&self, chat: i64) -> Result<Vec<Turn>, BotError> {
        self.with(|c| {
            let mut s =
                c.prepare("SELECT role, content FROM turns WHERE chat_id = ?1 ORDER BY id")?;
            let rows = s.query_map(params![chat], |r| {
                Ok(Turn {
                    role: r.get(0)?,
                    content: r.get(1)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Appends a question and its answer, then drops the oldest turns until the chat's
    /// history is within `budget` estimated tokens (one transaction).
    pub fn add_exchange(
        &self,
        chat: i64,
        question: &str,
        answer: &str,
        budget: usize,
    ) -> Result<(), BotError> {
        self.with(|c| {
            let tx = c.transaction()?;
            for (role, content) in [("user", question), ("assistant", answer)] {
                tx.execute(
                    "INSERT INTO turns (chat_id, role, content, tokens) VALUES (?1, ?2, ?3, ?4)",
                    params![chat, role, content, estimate_tokens(content) as i64],
                )?;
            }
            let rows: Vec<(i64, i64)> = {
                let mut s =
                    tx.prepare("SELECT id, tokens FROM turns WHERE chat_id = ?1 ORDER BY id DESC")?;
                let rows = s.query_map(params![chat], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut total = 0i64;
            let mut cut = None;
            for (id, tokens) in rows {
                total += tokens;
                if total > budget as i64 {
                    cut = Some(id);
                    break;
                }
            }
            if let Some(id) = cut {
                tx.execute(
                    "DELETE FROM turns WHERE chat_id = ?1 AND id <= ?2",
                    params![chat, id],
                )?;
            }
            tx.commit()
        })
    }

    /// Forgets the chat's history.
    pub fn reset(&self, chat: i64) -> Result<(), BotError> {
        self.with(|c| {
            c.execute("DELETE FROM turns WHERE chat_id = ?1", params![chat])
                .map(drop)
        })
    }

    /// Adds an answer's cost to the chat's spending.
    pub fn add_cost(&self, chat: i64, nanoton: u64) -> Result<(), BotError> {
        let nanoton = i64::try_from(nanoton).unwrap_or(i64::MAX);
        self.with(|c| {
            c.execute(
                "INSERT INTO chats (chat_id, spent_nanoton, requests) VALUES (?1, ?2, 1)
                 ON CONFLICT (chat_id) DO UPDATE SET
                     spent_nanoton = spent_nanoton + excluded.spent_nanoton,
                     requests = requests + 1",
                params![chat, nanoton],
            )
            .map(drop)
        })
    }

    /// What the chat has spent, and what every chat has spent together.
    pub fn spending(&self, chat: i64) -> Result<(Spending, Spending), BotError> {
        self.with(|c| {
            let this = c
                .query_row(
                    "SELECT spent_nanoton, requests FROM chats WHERE chat_id = ?1",
                    params![chat],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()?
                .unwrap_or((0, 0));
            let all = c.query_row(
                "SELECT COALESCE(SUM(spent_nanoton), 0), COALESCE(SUM(requests), 0) FROM chats",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )?;
            let s = |(n, r): (i64, i64)| Spending {
                nanoton: n.max(0) as u64,
                requests: r.max(0) as u64,
            };
            Ok((s(this), s(all)))
        })
    }

    /// The chat's chosen model, if any.
    pub fn model(&self, chat: i64) -> Result<Option<String>, BotError> {
        self.with(|c| {
            c.query_row(
                "SELECT model FROM chats WHERE chat_id = ?1",
                params![chat],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
        })
    }

    /// Picks the chat's model.
    pub fn set_model(&self, chat: i64, model: &str) -> Result<(), BotError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO chats (chat_id, model) VALUES (?1, ?2)
                 ON CONFLICT (chat_id) DO UPDATE SET model = excluded.model",
                params![chat, model],
            )
            .map(drop)
        })
    }

    /// Whether voice in this chat is only transcribed (`/transcribe`), not answered.
    pub fn transcribe_only(&self, chat: i64) -> Result<bool, BotError> {
        self.with(|c| {
            c.query_row(
                "SELECT transcribe_only FROM chats WHERE chat_id = ?1",
                params![chat],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|v| v.unwrap_or(0) != 0)
        })
    }

    /// Sets the chat's voice mode.
    pub fn set_transcribe_only(&self, chat: i64, on: bool) -> Result<(), BotError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO chats (chat_id, transcribe_only) VALUES (?1, ?2)
                 ON CONFLICT (chat_id) DO UPDATE SET transcribe_only = excluded.transcribe_only",
                params![chat, i64::from(on)],
            )
            .map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_histories_and_costs_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("bot.sqlite");
        let store = Store::open(&path).expect("open");
        assert_eq!(store.offset().expect("offset"), 0);
        store.set_offset(42).expect("set");
        store.set_offset(7).expect("never backwards");
        store.add_exchange(1, "hi", "hello", 1000).expect("add");
        store.add_cost(1, 268).expect("cost");
        store.add_cost(1, 30).expect("cost");
        store.add_cost(2, 2).expect("cost");
        drop(store);

        let store = Store::open(&path).expect("reopen");
        assert_eq!(store.offset().expect("offset"), 42);
        assert_eq!(store.history(1).expect("history").len(), 2);
        let (chat, all) = store.spending(1).expect("spending");
        assert_eq!((chat.nanoton, chat.requests), (298, 2));
        assert_eq!((all.nanoton, all.requests), (300, 3));
        store.reset(1).expect("reset");
        assert!(store.history(1).expect("history").is_empty());
    }

    #[test]
    fn the_oldest_turns_go_first_when_over_budget() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(&dir.path().join("b.sqlite")).expect("open");
        let long = "x".repeat(396); // 100 tokens
        for i in 0..5 {
            store
                .add_exchange(9, &format!("q{i} {long}"), &format!("a{i} {long}"), 450)
                .expect("add");
        }
        let h = store.history(9).expect("history");
        assert_eq!(h.len(), 4, "two exchanges fit in 450 tokens");
        assert!(h[0].content.starts_with("q3"), "{:?}", h[0]);
        assert!(h[3].content.starts_with("a4"));
    }
}
