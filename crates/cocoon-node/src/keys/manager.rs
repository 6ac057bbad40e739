//! The key manager role (cocoon-protocol-9060ce5.md §2.9): it issues the keys apps encrypt
//! requests to, registers their public halves on the root, and hands the private halves to
//! attested proxies that ask.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_net::{ConnectionConfig, Incoming, RpcConnection};
use cocoon_tl::functions::key_manager as km_fn;
use cocoon_tl::types::key_manager;
use cocoon_tl::TlConstructor;
use cocoon_ton::messages::{Body, KeyRegistration};
use ed25519_dalek::SigningKey;
use tracing::{debug, info, info_span, warn, Instrument};
use tycho_types::models::StdAddr;

use super::store::{IssuedKey, KeyStore, KeyStoreError};
use crate::chain::wallet::OnChain;
use crate::transport::{Listener, PeerInfo};
use crate::util::lock;

/// The key type of the hourly encryption keys.
pub const ENCRYPTION_KEY_TYPE: u8 = 1;

/// How the key manager issues keys.
#[derive(Debug, Clone)]
pub struct KeyManagerSettings {
    /// A new encryption key once the newest is this old (COCOON: 3600 s).
    pub rotation: Duration,
    /// How long each key is valid (COCOON: 86 400 s, so about 24 keys are valid at once).
    pub lifetime: Duration,
    /// How often keys are checked for expiry and rotation (COCOON: 1–2 s).
    pub tick: Duration,
    /// nanoTON sent with each key registration (COCOON: 0.4 TON; the root returns the
    /// change).
    pub register_value: u64,
    /// At most one registration attempt per key in this interval.
    pub register_retry: Duration,
    /// Transport tunables for caller connections.
    pub connection: ConnectionConfig,
    /// Whether callers' image hashes are checked against the root's lists.
    pub caller_hashes: CallerHashes,
}

/// Which callers get keys, beyond passing the listener's attestation policy.
#[derive(Debug, Clone, Default)]
pub enum CallerHashes {
    /// Any caller the policy admits (test networks, as COCOON without `check_hashes`).
    #[default]
    Unchecked,
    /// As COCOON with `check_hashes`: a proxy's image hash must be among the root's
    /// `proxy_hashes`, a worker's among its `worker_hashes`; the lists are the root's as
    /// last read ([`RootHashes`]).
    Root(RootHashes),
}

/// The root's proxy and worker image hashes, as last read; shared with the task that
/// reads them.
#[derive(Debug, Clone, Default)]
pub struct RootHashes {
    lists: Arc<Mutex<Option<HashLists>>>,
}

/// The root's proxy image hashes and worker image hashes.
type HashLists = (Vec<[u8; 32]>, Vec<[u8; 32]>);

impl RootHashes {
    /// Adopts the lists of `root`.
    pub fn update(&self, root: &cocoon_ton::root::RootConfig) {
        *lock(&self.lists) = Some((root.proxy_hashes.clone(), root.worker_hashes.clone()));
    }

    /// Reads the root every `interval` through `backend` while the returned task runs.
    pub fn spawn_polling(
        &self,
        backend: Arc<dyn cocoon_ton::chain::ChainBackend>,
        root: StdAddr,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let hashes = self.clone();
        tokio::spawn(async move {
            loop {
                match cocoon_ton::chain::read_root_config(backend.as_ref(), &root).await {
                    Ok(cfg) => hashes.update(&cfg),
                    Err(e) => warn!(error = %e, "cannot read the root's image hashes"),
                }
                tokio::time::sleep(interval).await;
            }
        })
    }
}

/// Who asks for keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// `keyManager.getProxyPrivateKeys`.
    Proxy,
    /// `keyManager.getWorkerPrivateKeys`.
    Worker,
}

/// Whether `caller`, attested with `image_hash`, gets keys under `check`: the refusal
/// (COCOON's code and message) otherwise.
pub fn check_caller(
    check: &CallerHashes,
    caller: Caller,
    image_hash: Option<[u8; 32]>,
) -> Result<(), (i32, String)> {
    let CallerHashes::Root(root) = check else {
        return Ok(());
    };
    let refused = |what: &str| match caller {
        Caller::Proxy => (602, format!("unknown proxy hash{what}")),
        Caller::Worker => (602, format!("unknown worker hash{what}")),
    };
    let lists = lock(&root.lists);
    let Some((proxies, workers)) = lists.as_ref() else {
        return Err(refused(": the root's hashes have not been read yet"));
    };
    let Some(hash) = image_hash else {
        return Err(refused(": the caller is not attested"));
    };
    let allowed = match caller {
        Caller::Proxy => proxies,
        Caller::Worker => workers,
    };
    if allowed.contains(&hash) {
        Ok(())
    } else {
        Err(refused(&format!(" {}", hex::encode(hash))))
    }
}

impl Default for KeyManagerSettings {
    fn default() -> Self {
        KeyManagerSettings {
            rotation: Duration::from_secs(3600),
            lifetime: Duration::from_secs(86_400),
            tick: Duration::from_secs(1),
            register_value: cocoon_ton::root::ONE_TON * 4 / 10,
            register_retry: Duration::from_secs(30),
            connection: ConnectionConfig::default(),
            caller_hashes: CallerHashes::Unchecked,
        }
    }
}

/// Why the key manager could not act.
#[derive(Debug, thiserror::Error)]
pub enum KeyManagerError {
    /// The key store failed.
    #[error(transparent)]
    Store(#[from] KeyStoreError),
}

/// Where keys get registered: the root, through the key manager's cocoon wallet.
#[derive(Clone)]
pub struct Registrar {
    /// The key manager's wallet on the chain.
    pub chain: OnChain,
    /// The root contract.
    pub root: StdAddr,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar")
            .field("wallet", &self.chain.wallet.address_text())
            .finish_non_exhaustive()
    }
}

/// Counters of a key manager, for stats.
#[derive(Debug, Default)]
pub struct KeyManagerStats {
    /// Key requests answered.
    pub answered: AtomicU64,
    /// Queries refused (unknown function, or a caller the root does not list).
    pub refused: AtomicU64,
    /// Keys generated.
    pub generated: AtomicU64,
    /// Keys the root confirmed.
    pub registered: AtomicU64,
    /// Registration attempts that failed.
    pub registration_failures: AtomicU64,
}

struct Shared {
    store: Mutex<KeyStore>,
    machine: SigningKey,
    settings: KeyManagerSettings,
    registrar: Option<Registrar>,
    stats: KeyManagerStats,
    /// Public key → unix time of the last registration attempt.
    attempts: Mutex<std::collections::HashMap<[u8; 32], u32>>,
}

/// A key manager. Cheap to clone.
#[derive(Clone)]
pub struct KeyManager {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyManager")
            .field("public_key", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

/// One key as `/jsonstats` shows it (never the private half).
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyView {
    /// The public key, hex.
    pub public_key: String,
    /// Kind of key.
    pub key_type: u8,
    /// Made at (unix seconds).
    pub valid_since: u32,
    /// Expires at (unix seconds).
    pub valid_until: u32,
    /// Whether the root lists it.
    pub registered: bool,
}

impl KeyManager {
    /// A key manager over `store`. `machine` is its machine key: the root's
    /// `key_manager_public_key` must be its public half, since it signs registrations.
    /// Without a `registrar` keys are served but not registered (fake-TON).
    pub fn new(
        store: KeyStore,
        machine: SigningKey,
        settings: KeyManagerSettings,
        registrar: Option<Registrar>,
    ) -> Self {
        KeyManager {
            shared: Arc::new(Shared {
                store: Mutex::new(store),
                machine,
                settings,
                registrar,
                stats: KeyManagerStats::default(),
                attempts: Mutex::new(Default::default()),
            }),
        }
    }

    /// The machine public key (to be set on the root with `cocoon root set-key-manager`).
    pub fn public_key(&self) -> [u8; 32] {
        self.shared.machine.verifying_key().to_bytes()
    }

    /// Counters.
    pub fn stats(&self) -> &KeyManagerStats {
        &self.shared.stats
    }

    /// Every key held, oldest first.
    pub fn keys(&self) -> Result<Vec<KeyView>, KeyManagerError> {
        Ok(lock(&self.shared.store)
            .all()?
            .into_iter()
            .map(|k| KeyView {
                public_key: hex::encode(k.public_key),
                key_type: k.key_type,
                valid_since: k.valid_since,
                valid_until: k.valid_until,
                registered: k.registered,
            })
            .collect())
    }

    /// One round of upkeep at `now`: drops expired keys, issues a new encryption key when
    /// none is younger than the rotation period, and (with a registrar) registers every
    /// key the root does not list yet. Returns the key issued, if any.
    pub fn tick(&self, now: u32) -> Result<Option<[u8; 32]>, KeyManagerError> {
        let s = &self.shared;
        let (issued, pending) = {
            let store = lock(&s.store);
            let dropped = store.remove_expired(now)?;
            if dropped > 0 {
                info!(dropped, "expired keys removed");
            }
            let keys = store.all()?;
            let rotation = u32::try_from(s.settings.rotation.as_secs()).unwrap_or(u32::MAX);
            let fresh = keys.iter().any(|k| {
                k.key_type == ENCRYPTION_KEY_TYPE
                    && k.valid_since.saturating_add(rotation) > now
                    && k.valid_since <= now
            });
            let issued = if fresh {
                None
            } else {
                let key = self.issue(&store, ENCRYPTION_KEY_TYPE, now)?;
                Some(key)
            };
            let pending: Vec<IssuedKey> =
                store.all()?.into_iter().filter(|k| !k.registered).collect();
            (issued, pending)
        };
        if let Some(registrar) = &s.registrar {
            let retry = u32::try_from(s.settings.register_retry.as_secs()).unwrap_or(u32::MAX);
            for key in pending {
                let due = {
                    let mut attempts = lock(&s.attempts);
                    let last = attempts.get(&key.public_key).copied();
                    if last.is_some_and(|t| t.saturating_add(retry) > now) {
                        false
                    } else {
                        attempts.insert(key.public_key, now);
                        true
                    }
                };
                if due {
                    let km = self.clone();
                    let registrar = registrar.clone();
                    tokio::spawn(async move { km.register(&registrar, &key).await });
                }
            }
        }
        Ok(issued)
    }

    fn issue(&self, store: &KeyStore, key_type: u8, now: u32) -> Result<[u8; 32], KeyManagerError> {
        let lifetime = u32::try_from(self.shared.settings.lifetime.as_secs()).unwrap_or(u32::MAX);
        let key = IssuedKey::generate(key_type, now, lifetime);
        store.insert(&key)?;
        self.shared.stats.generated.fetch_add(1, Ordering::Relaxed);
        info!(public_key = %hex::encode(key.public_key), key_type, valid_until = key.valid_until, "key issued");
        Ok(key.public_key)
    }

    /// Issues a key of `key_type` now (the operator's `POST /request/generatekey`).
    pub fn generate(&self, key_type: u8, now: u32) -> Result<[u8; 32], KeyManagerError> {
        let store = lock(&self.shared.store);
        self.issue(&store, key_type, now)
    }

    /// Forgets a key (the operator's `POST /request/removekey`); whether it was held. The
    /// root keeps listing it until it expires.
    pub fn remove(&self, public_key: &[u8; 32]) -> Result<bool, KeyManagerError> {
        let removed = lock(&self.shared.store).remove(public_key)?;
        if removed {
            info!(public_key = %hex::encode(public_key), "key removed by the operator");
        }
        Ok(removed)
    }

    /// Sends `root_add_public_key_signed` for `key` from the wallet, then reads the root:
    /// the key counts as registered once the root lists it.
    async fn register(&self, registrar: &Registrar, key: &IssuedKey) {
        let s = &self.shared;
        let span = info_span!("register_key", public_key = %hex::encode(key.public_key));
        async {
            let body = Body::signed_key_registration(
                &s.machine,
                crate::util::random_query_id(),
                registrar.chain.wallet.address().clone(),
                KeyRegistration {
                    public_key: key.public_key,
                    key_type: key.key_type,
                    expire_at: key.valid_until,
                },
            );
            let sent = match body.and_then(|b| {
                cocoon_ton::settlement::body_message(registrar.root.clone(), s.settings.register_value, &b)
            }) {
                Ok(msg) => registrar.chain.wallet.send(vec![msg]).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = sent {
                s.stats.registration_failures.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "cannot send the key registration");
                return;
            }
            match cocoon_ton::chain::read_root_config(registrar.chain.backend.as_ref(), &registrar.root).await {
                Ok(cfg) if cfg.key_manager.public_keys.iter().any(|k| k.public_key == key.public_key) => {
                    match lock(&s.store).mark_registered(&key.public_key) {
                        Ok(()) => {
                            s.stats.registered.fetch_add(1, Ordering::Relaxed);
                            info!("key registered on the root");
                        }
                        Err(e) => warn!(error = %e, "cannot record the registration"),
                    }
                }
                Ok(cfg) => {
                    s.stats.registration_failures.fetch_add(1, Ordering::Relaxed);
                    let ours = cfg.key_manager.public_key == self.public_key();
                    warn!(
                        root_key_manager = %hex::encode(cfg.key_manager.public_key),
                        "the root did not take the key{}",
                        if ours { "" } else { ": its key_manager_public_key is not this key manager's machine key (set it with `cocoon root set-key-manager`)" }
                    );
                }
                Err(e) => {
                    s.stats.registration_failures.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, "cannot read the root after registering");
                }
            }
        }
        .instrument(span)
        .await
    }

    /// The answer to `keyManager.get{Proxy,Worker}PrivateKeys`: every key held and valid at
    /// `now` (COCOON hands both callers the same list).
    pub fn private_keys(&self, now: u32) -> Result<key_manager::PrivateKeys, KeyManagerError> {
        let keys = lock(&self.shared.store)
            .all()?
            .into_iter()
            .filter(|k| k.valid_until >= now)
            .map(|k| key_manager::PrivateKey {
                valid_until_utime: i32::try_from(k.valid_until).unwrap_or(i32::MAX),
                private_key: k.seed,
            })
            .collect();
        Ok(key_manager::PrivateKeys { keys })
    }

    /// Runs upkeep every `tick` until the returned task is dropped or aborted.
    pub fn spawn_upkeep(&self) -> tokio::task::JoinHandle<()> {
        let km = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = km.tick(crate::util::unix_secs()) {
                    warn!(error = %e, "key upkeep failed");
                }
                tokio::time::sleep(km.shared.settings.tick).await;
            }
        })
    }

    /// Accepts callers from `listener` (attested by its policy) and answers their key
    /// requests until the listener fails.
    pub fn serve<L: Listener>(&self, listener: L) -> tokio::task::JoinHandle<()> {
        let km = self.clone();
        tokio::spawn(async move {
            loop {
                let pending = match listener.accept().await {
                    Ok(p) => p,
                    Err(e) => {
                        warn!(error = %e, "key manager listener failed");
                        return;
                    }
                };
                let km = km.clone();
                tokio::spawn(async move {
                    let (stream, peer) = match pending.await {
                        Ok(x) => x,
                        Err(e) => {
                            info!(error = %e, "key request refused");
                            return;
                        }
                    };
                    let cfg = km.shared.settings.connection.clone();
                    match RpcConnection::accept(stream, &cfg, &peer.addr.to_string()).await {
                        Ok(conn) => km.serve_caller(conn, peer).await,
                        Err(e) => debug!(error = %e, "opening failed"),
                    }
                });
            }
        })
    }

    async fn serve_caller(&self, mut conn: RpcConnection, peer: PeerInfo) {
        let span = info_span!(
            "key_caller",
            peer = %peer.addr,
            image_hash = %peer.image_hash.map(hex::encode).unwrap_or_default()
        );
        async {
            info!("caller connected");
            while let Some(incoming) = conn.next_incoming().await {
                let Incoming::Query(query) = incoming else {
                    continue;
                };
                let caller = match query.function_id() {
                    Some(km_fn::GetProxyPrivateKeys::ID) => Some(Caller::Proxy),
                    Some(km_fn::GetWorkerPrivateKeys::ID) => Some(Caller::Worker),
                    _ => None,
                };
                if let Some(caller) = caller {
                    if let Err((code, message)) =
                        check_caller(&self.shared.settings.caller_hashes, caller, peer.image_hash)
                    {
                        self.shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                        warn!(code, %message, "key request refused");
                        let _ = query.error(code, &message).await;
                        continue;
                    }
                    match self.private_keys(crate::util::unix_secs()) {
                        Ok(keys) => {
                            self.shared.stats.answered.fetch_add(1, Ordering::Relaxed);
                            debug!(keys = keys.keys.len(), "keys handed out");
                            let answer: cocoon_tl::enums::key_manager::PrivateKeys = keys.into();
                            let _ = query.answer(&answer).await;
                        }
                        Err(e) => {
                            warn!(error = %e, "cannot read the key store");
                            let _ = query.error(500, "key store unavailable").await;
                        }
                    }
                } else {
                    self.shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                    let _ = query.error(601, "unknown query magic").await;
                }
            }
            info!("caller gone");
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager() -> KeyManager {
        let machine = SigningKey::from_bytes(&[5; 32]);
        let store = KeyStore::open_in_memory(&machine).expect("store");
        KeyManager::new(store, machine, KeyManagerSettings::default(), None)
    }

    #[test]
    fn one_new_key_per_rotation_period_and_expired_keys_dropped() {
        let km = manager();
        let t0 = 1_800_000_000;
        let first = km.tick(t0).expect("tick").expect("a first key");
        assert_eq!(
            km.tick(t0 + 1).expect("tick"),
            None,
            "no second key within the hour"
        );
        assert_eq!(km.tick(t0 + 3599).expect("tick"), None);
        let second = km
            .tick(t0 + 3600)
            .expect("tick")
            .expect("a key an hour later");
        assert_ne!(first, second);
        let keys = km.private_keys(t0 + 3600).expect("keys").keys;
        assert_eq!(keys.len(), 2, "both valid: each lives a day");
        assert!(keys
            .iter()
            .all(|k| k.valid_until_utime >= (t0 + 86_400) as i32));
        // A day later the first key is gone from answers and from the store.
        km.tick(t0 + 86_401).expect("tick");
        let views = km.keys().expect("views");
        assert!(views.iter().all(|v| v.public_key != hex::encode(first)));
        let held: Vec<[u8; 32]> = km
            .private_keys(t0 + 86_401)
            .expect("keys")
            .keys
            .iter()
            .map(|k| crate::keys::ring::public_of(&k.private_key))
            .collect();
        assert!(held.contains(&second) && !held.contains(&first));
    }

    #[test]
    fn callers_are_checked_against_the_root_hashes_when_asked_to() {
        assert_eq!(
            check_caller(&CallerHashes::Unchecked, Caller::Proxy, None),
            Ok(())
        );
        let hashes = RootHashes::default();
        let check = CallerHashes::Root(hashes.clone());
        let refused = check_caller(&check, Caller::Proxy, Some([1; 32])).expect_err("unread");
        assert!(refused.1.contains("not been read"), "{refused:?}");
        let mut root = cocoon_ton::local::GenesisRoot::devnet(StdAddr::new(
            0,
            tycho_types::cell::HashBytes([0; 32]),
        ))
        .expect("root")
        .config;
        root.proxy_hashes = vec![[1; 32]];
        root.worker_hashes = vec![[2; 32]];
        hashes.update(&root);
        assert_eq!(check_caller(&check, Caller::Proxy, Some([1; 32])), Ok(()));
        assert_eq!(check_caller(&check, Caller::Worker, Some([2; 32])), Ok(()));
        let (code, message) =
            check_caller(&check, Caller::Worker, Some([1; 32])).expect_err("a proxy's hash");
        assert_eq!(code, 602);
        assert!(message.starts_with("unknown worker hash"), "{message}");
        assert!(check_caller(&check, Caller::Proxy, None)
            .expect_err("unattested")
            .1
            .contains("not attested"));
    }

    #[test]
    fn operator_keys_and_removal() {
        let km = manager();
        let k = km.generate(2, 1_000).expect("generate");
        assert_eq!(km.keys().expect("views")[0].key_type, 2);
        // A type-2 key does not count as the hourly encryption key.
        assert!(km.tick(1_001).expect("tick").is_some());
        assert!(km.remove(&k).expect("remove"));
        assert!(!km.remove(&k).expect("remove again"));
    }
}
