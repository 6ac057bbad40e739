//! The key-manager protocol over real connections: a proxy's key fetcher fills its ring from
//! a key manager; a caller the root does not list gets nothing (COCOON's `check_hashes`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cocoon_node::keys::manager::{CallerHashes, RootHashes};
use cocoon_node::keys::ring::public_of;
use cocoon_node::keys::{
    spawn_key_fetcher, KeyFetchSettings, KeyManager, KeyManagerSettings, KeyRing, KeyStore,
};
use cocoon_node::transport::{TcpDialer, TcpListener};
use ed25519_dalek::SigningKey;

async fn key_manager(caller_hashes: CallerHashes) -> (KeyManager, String) {
    let machine = SigningKey::from_bytes(&[3; 32]);
    let store = KeyStore::open_in_memory(&machine).expect("store");
    let settings = KeyManagerSettings {
        caller_hashes,
        ..KeyManagerSettings::default()
    };
    let km = KeyManager::new(store, machine, settings, None);
    km.tick(cocoon_node::util::unix_secs())
        .expect("a first key");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = cocoon_node::transport::Listener::local_addr(&listener).expect("addr");
    km.serve(listener);
    (km, addr.to_string())
}

fn fetch(endpoint: &str, ring: &KeyRing) -> tokio::task::JoinHandle<()> {
    let mut settings = KeyFetchSettings::new(endpoint);
    settings.interval = Duration::from_millis(100);
    settings.reconnect_min = Duration::from_millis(50);
    spawn_key_fetcher(settings, Arc::new(TcpDialer), ring.clone())
}

#[tokio::test]
async fn a_proxy_gets_the_key_managers_keys_and_finds_them_by_public_key() {
    let (km, endpoint) = key_manager(CallerHashes::Unchecked).await;
    let ring = KeyRing::new();
    let task = fetch(&endpoint, &ring);
    for _ in 0..100 {
        if !ring.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    let issued = km.keys().expect("keys");
    assert_eq!(ring.len(), issued.len());
    let public: [u8; 32] = hex::decode(&issued[0].public_key)
        .expect("hex")
        .try_into()
        .expect("32");
    let seed = ring
        .seed_for(&public, cocoon_node::util::unix_secs())
        .expect("the proxy holds the private half");
    assert_eq!(public_of(&seed), public);
    assert!(km.stats().answered.load(Ordering::Relaxed) >= 1);
}

#[tokio::test]
async fn a_caller_the_root_does_not_list_gets_no_key() {
    let hashes = RootHashes::default();
    let mut root = cocoon_ton::local::GenesisRoot::devnet(cocoon_ton::StdAddr::new(
        0,
        tycho_types::cell::HashBytes([0; 32]),
    ))
    .expect("root")
    .config;
    root.proxy_hashes = vec![[9; 32]];
    hashes.update(&root);
    let (km, endpoint) = key_manager(CallerHashes::Root(hashes)).await;
    let ring = KeyRing::new();
    let task = fetch(&endpoint, &ring);
    for _ in 0..100 {
        if km.stats().refused.load(Ordering::Relaxed) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    assert!(
        km.stats().refused.load(Ordering::Relaxed) >= 2,
        "asked and refused"
    );
    assert!(ring.is_empty(), "an unattested caller got no key");
    assert_eq!(km.stats().answered.load(Ordering::Relaxed), 0);
}
