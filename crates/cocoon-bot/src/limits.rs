//! Per-user rate limits: at most N requests in any minute.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A sliding one-minute window per user.
pub struct RateLimiter {
    per_minute: usize,
    seen: Mutex<HashMap<u64, VecDeque<Instant>>>,
}

impl RateLimiter {
    /// At most `per_minute` requests per user per minute.
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute: per_minute.max(1) as usize,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request of `user` at `now`; `false` when it is one too many.
    pub fn allow(&self, user: u64, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let times = seen.entry(user).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            times.pop_front();
        }
        if times.len() >= self.per_minute {
            return false;
        }
        times.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_window_per_user() {
        let l = RateLimiter::new(2);
        let t = Instant::now();
        assert!(l.allow(1, t));
        assert!(l.allow(1, t + Duration::from_secs(1)));
        assert!(!l.allow(1, t + Duration::from_secs(2)), "third in a minute");
        assert!(l.allow(2, t + Duration::from_secs(2)), "users apart");
        assert!(l.allow(1, t + Duration::from_secs(61)), "the window slides");
    }
}
