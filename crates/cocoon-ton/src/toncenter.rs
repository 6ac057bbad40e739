//! **toncenter's HTTP API v2: a chain backend over it, and the same API served
//! over any chain backend.**
//!
//! * `TonCenter` (feature `toncenter`) is a [`ChainBackend`](crate::chain::ChainBackend)
//!   that talks to [toncenter](https://toncenter.com/api/v2/) or any server of
//!   the same API: `getAddressInformation`, `runGetMethod`,
//!   `sendBocReturnHash` and `getTransactions` (see its docs for the mapping,
//!   the rate limiter and the retries). TLS is rustls with the ring provider
//!   and the Mozilla roots (no OpenSSL, no system store).
//! * `server::router` (feature `toncenter-server`) serves that subset over
//!   any backend, e.g. a [`LocalChain`](crate::local::LocalChain), so that a
//!   devnet is reachable as `http://127.0.0.1:PORT/api/v2` by `TonCenter`
//!   and by toncenter clients in other languages.
//!
//! Transactions are read from the raw transaction BOC toncenter puts in
//! `data` (with tycho-types: messages, values, bodies and the outcome exactly
//! as a [`LocalChain`](crate::local::LocalChain) reports them), checked against
//! the id and account they are given for; the JSON fields are the fallback
//! when a server sends no `data`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use cocoon_ton::chain::{ChainBackend, TxFollower};
//! use cocoon_ton::toncenter::{TonCenter, TESTNET_URL};
//! use cocoon_ton::address::parse_addr;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let chain: Arc<dyn ChainBackend> =
//!     Arc::new(TonCenter::new(TESTNET_URL, std::env::var("TONCENTER_API_KEY").ok())?);
//! let root = parse_addr("EQCD39VS5jcptHL8vMjEXrzGaRcCVYto7HUn4bpAOg8xqB2N")?;
//! let state = chain.account_state(&root).await?;
//! println!("{:?}, {} nanoTON, at {}", state.status, state.balance, state.sync_utime);
//!
//! // Follow the account's new transactions, oldest first.
//! let mut follower = TxFollower::from_now(chain.as_ref(), root).await?;
//! for tx in follower.poll(chain.as_ref()).await? {
//!     println!("{} {}", tx.id.lt, tx.success);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Serving a chain (the devnet nests the router at `/api/v2`):
//!
//! ```no_run
//! # async fn serve(chain: std::sync::Arc<cocoon_ton::local::LocalChain>) -> std::io::Result<()> {
//! let app = axum::Router::new().nest("/api/v2", cocoon_ton::toncenter::server::router(chain));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

#[cfg(feature = "toncenter")]
mod client;
#[cfg(feature = "toncenter-server")]
pub mod server;
mod wire;

#[cfg(feature = "toncenter")]
pub use client::{TonCenter, MAINNET_URL, MAX_BACKLOG, TESTNET_URL};
