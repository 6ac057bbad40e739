//! [`KeyRing`]: the private keys a proxy holds for encrypted requests, by public key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::util::lock;

/// A private key received from a key manager: the Ed25519 seed apps' requests are
/// encrypted to (through its public half), and when it stops being valid.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HeldKey {
    /// The Ed25519 seed (the key manager's `private_key`).
    pub seed: [u8; 32],
    /// Unix time after which the key is dropped.
    pub valid_until: u32,
}

impl std::fmt::Debug for HeldKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the seed.
        f.debug_struct("HeldKey")
            .field("valid_until", &self.valid_until)
            .finish_non_exhaustive()
    }
}

/// The Ed25519 public key of a seed: what apps encrypt to and look the key up by.
pub fn public_of(seed: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(seed)
        .verifying_key()
        .to_bytes()
}

/// Private keys by public key, shared by the proxy's request path and its key fetcher.
/// Cheap to clone; all clones share the keys.
///
/// As COCOON's runners: a key is added once and never replaced by a later answer, and a
/// key past its `valid_until` is no longer found (and dropped by [`KeyRing::prune`]).
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: Arc<Mutex<HashMap<[u8; 32], HeldKey>>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &lock(&self.keys).len())
            .finish()
    }
}

impl KeyRing {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds keys not held yet (keyed by their derived public key); returns how many were new.
    pub fn merge(&self, keys: impl IntoIterator<Item = HeldKey>) -> usize {
        let mut held = lock(&self.keys);
        let mut added = 0;
        for key in keys {
            if let std::collections::hash_map::Entry::Vacant(e) = held.entry(public_of(&key.seed)) {
                e.insert(key);
                added += 1;
            }
        }
        added
    }

    /// The seed of `public_key`, if held and valid at `now` (unix seconds).
    pub fn seed_for(&self, public_key: &[u8; 32], now: u32) -> Option<[u8; 32]> {
        lock(&self.keys)
            .get(public_key)
            .filter(|k| k.valid_until >= now)
            .map(|k| k.seed)
    }

    /// Drops the keys that expired before `now`; returns how many.
    pub fn prune(&self, now: u32) -> usize {
        let mut held = lock(&self.keys);
        let before = held.len();
        held.retain(|_, k| k.valid_until >= now);
        before - held.len()
    }

    /// Public keys held, with their expiry, sorted by key (for stats).
    pub fn public_keys(&self) -> Vec<([u8; 32], u32)> {
        let mut out: Vec<_> = lock(&self.keys)
            .iter()
            .map(|(p, k)| (*p, k.valid_until))
            .collect();
        out.sort();
        out
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        lock(&self.keys).len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_by_public_key_until_they_expire_and_never_replaced() {
        let ring = KeyRing::new();
        let a = HeldKey {
            seed: [1; 32],
            valid_until: 100,
        };
        let b = HeldKey {
            seed: [2; 32],
            valid_until: 200,
        };
        assert_eq!(ring.merge([a, b]), 2);
        assert_eq!(ring.seed_for(&public_of(&[1; 32]), 100), Some([1; 32]));
        assert_eq!(ring.seed_for(&public_of(&[1; 32]), 101), None, "expired");
        assert_eq!(
            ring.seed_for(&[1; 32], 0),
            None,
            "looked up by public key, not seed"
        );
        // A later answer with the same key does not change it.
        let a_longer = HeldKey {
            valid_until: 1000,
            ..a
        };
        assert_eq!(ring.merge([a_longer]), 0);
        assert_eq!(ring.seed_for(&public_of(&[1; 32]), 101), None);
        assert_eq!(ring.prune(150), 1);
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.public_keys(), vec![(public_of(&[2; 32]), 200)]);
        assert!(
            !format!("{a:?}").contains("1, 1"),
            "the seed is never printed"
        );
    }
}
