//! Small helpers every role uses, one copy each.

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Locks `m`, taking the value over from a holder that panicked: the roles' shared state
/// stays usable, and every mutation under these locks leaves it consistent.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Now, in whole unix seconds (key expiries, chain times).
pub fn unix_secs() -> u32 {
    unix_now() as u32
}

/// Now, in whole unix seconds as `u64` (stored times, ages).
pub fn unix_time() -> u64 {
    u64::from(unix_secs())
}

/// `v` as an SQLite integer (saturating: SQLite integers are signed).
pub fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An SQLite integer read back as a count (negative ones, never written, as 0).
pub fn from_sql_int(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Now, in unix seconds with a fraction (COCOON's timing fields and headers).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The first six bytes of a request id in hex, for logs.
pub fn hex_short(id: &[u8; 32]) -> String {
    hex::encode(&id[..6])
}

/// A fresh random `query_id` for a contract message.
pub fn random_query_id() -> u64 {
    rand::random()
}
