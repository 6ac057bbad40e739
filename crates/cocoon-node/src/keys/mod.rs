//! End-to-end encryption keys (cocoon-protocol-9060ce5.md §2.8, §2.9): the key manager
//! role that issues them ([`manager`], [`store`]), the proxy's ring of keys it received
//! ([`ring`]) and the fetcher that keeps the ring filled ([`fetch`]).

pub mod fetch;
pub mod manager;
pub mod ring;
pub mod store;

pub use fetch::{spawn_key_fetcher, KeyFetchSettings};
pub use manager::{KeyManager, KeyManagerSettings, Registrar};
pub use ring::{HeldKey, KeyRing};
pub use store::{IssuedKey, KeyStore};
