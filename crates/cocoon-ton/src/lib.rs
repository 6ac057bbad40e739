//! # cocoon-ton
//!
//! COCOON's TON layer, built on `tycho-types` cells:
//!
//! * [`address`]: raw and user-friendly addresses as COCOON prints them;
//! * [`contracts`]: StateInit and address derivation of the proxy, client,
//!   worker and wallet contracts (spec §6.3);
//! * [`voucher`]: signed payment vouchers (§5.4): build, sign, verify, repack,
//!   and the "never decrease" ordering;
//! * [`messages`]: builders and parsers of every contract message body (§6.2);
//! * [`root`]: the root contract state, tolerant of params struct versions (§6.1);
//! * [`wallet`]: the cocoon wallet and wallet v5r1 external messages;
//! * [`outbox`]: the cocoon wallet's send queue (batching, resends, confirmation);
//! * [`settlement`]: settlement amounts, thresholds and ready-made messages (§5.5);
//! * [`units`]: nanoTON ↔ decimal TON strings;
//! * [`chain`]: the [`chain::ChainBackend`] trait the roles use, and
//!   [`fake::FakeTon`], a stand-in without a chain for development and tests (§6.5);
//! * [`local`]: [`local::LocalChain`], a real TVM (`tycho-executor`) running our
//!   compiled contracts in-process: a single-node, in-memory chain without
//!   consensus, persisted to a directory, for the devnet and tests;
//! * `toncenter` (features `toncenter`, `toncenter-server`): `TonCenter`, a
//!   chain backend over toncenter's HTTP API v2, and a router serving that API
//!   over any backend (the devnet's `/api/v2`).
//!
//! ## Vouchers: proxy signs, client/worker checks and keeps the best
//!
//! ```
//! use cocoon_ton::contracts::client_contract_address;
//! use cocoon_ton::root::CocoonParams;
//! use cocoon_ton::voucher::{BestVoucher, Voucher, VoucherKind, VoucherSigner, VoucherVerifier};
//! use cocoon_ton::{Cell, StdAddr};
//! use ed25519_dalek::SigningKey;
//!
//! # fn main() -> Result<(), cocoon_ton::TonError> {
//! # let params = CocoonParams { client_sc_code: Some(Cell::default()), ..CocoonParams::default() };
//! # let (client_wallet, proxy_sc, proxy_wallet) = (StdAddr::default(), StdAddr::default(), StdAddr::default());
//! let proxy_key = SigningKey::from_bytes(&[7; 32]);
//! let proxy_pk = proxy_key.verifying_key().to_bytes();
//! // Both sides derive the client contract from the root params.
//! let client_sc = client_contract_address(&params, &client_wallet, &proxy_sc, &proxy_pk)?;
//!
//! // Proxy: sign `tokens_committed_to_blockchain` for this client; the bytes go
//! // into `proxy.signedPayment.data`.
//! let signer = VoucherSigner::new(proxy_key, proxy_wallet);
//! let data: Vec<u8> = signer.sign_to_boc(Voucher::client_charge(1, 1_500, client_sc.clone()))?;
//!
//! // Client: check it and keep it if it is the best so far.
//! let verifier = VoucherVerifier::new(proxy_pk, client_sc);
//! let mut best = BestVoucher::new();
//! let voucher = verifier.check_boc(&data, VoucherKind::ClientCharge)?;
//! assert!(best.offer(voucher));
//! // Before submitting it, put the own wallet as the excess address.
//! let body: Cell = best.get().unwrap().repack(client_wallet).to_cell()?;
//! # let _ = body;
//! # Ok(())
//! # }
//! ```
//!
//! ## FakeTon: a chain stand-in for development and tests
//!
//! ```
//! use std::sync::Arc;
//! use cocoon_ton::chain::ChainBackend;
//! use cocoon_ton::fake::FakeTon;
//! use cocoon_ton::root::RootConfig;
//! use cocoon_ton::StdAddr;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let json = r#"{"price_per_token": 2, "worker_fee_per_token": 1, "version": 3,
//!     "registered_proxies": [{"seqno": 1, "address": "127.0.0.1:8801 127.0.0.1:8802"}],
//!     "root_owner_address": "0QBgPMq7ye2WRcudRHK_-yjHwMXjeN-UCzAuoo06TR6hmgHV"}"#;
//! let root_cfg = cocoon_ton::pseudo::root_config_from_json(json)?;
//! let root = StdAddr::default();
//! let chain: Arc<dyn ChainBackend> = Arc::new(FakeTon::new(root.clone(), root_cfg, true)?);
//!
//! let rt = tokio::runtime::Builder::new_current_thread().build()?;
//! rt.block_on(async {
//!     // Roles read the root exactly as on a real chain.
//!     let state = chain.account_state(&root).await?;
//!     let cfg = RootConfig::from_data_cell(state.data.as_ref().unwrap())?;
//!     assert_eq!(cfg.params.price_per_token, 2);
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

//!
//! ## LocalChain: the devnet's chain
//!
//! ```
//! use std::sync::Arc;
//! use cocoon_ton::chain::{read_root_config, ChainBackend};
//! use cocoon_ton::local::{Clock, GenesisConfig, GenesisRoot, GenesisWallet, LocalChain};
//! use cocoon_ton::root::ONE_TON;
//! use cocoon_ton::StdAddr;
//! use ed25519_dalek::SigningKey;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let admin_key = SigningKey::from_bytes(&[9; 32]);
//! let admin = GenesisWallet::new(admin_key.verifying_key().to_bytes(), StdAddr::default(), 100 * ONE_TON);
//! let genesis = GenesisConfig {
//!     // Our root contract, owned by the admin's cocoon wallet, with the devnet params.
//!     root: Some(GenesisRoot::devnet(admin.contract()?.address)?),
//!     wallets: vec![admin],
//!     clock: Clock::SYSTEM,
//!     ..GenesisConfig::default()
//! };
//! // Restarts continue from the directory; the genesis only applies the first time.
//! let chain = Arc::new(LocalChain::open_or_genesis(dir.path(), genesis)?);
//! let root = chain.root_address().expect("deployed at genesis");
//! // Faucet: mint coins to any address (here a runner's wallet to be).
//! chain.fund(&StdAddr::default(), 50 * ONE_TON)?;
//!
//! // Roles see it as any other chain.
//! let backend: Arc<dyn ChainBackend> = chain.clone();
//! let rt = tokio::runtime::Builder::new_current_thread().build()?;
//! let cfg = rt.block_on(read_root_config(backend.as_ref(), &root))?;
//! assert_eq!(cfg.params.price_per_token, 1000);
//! assert!(chain.supply()?.is_conserved());
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod address;
pub mod cells;
pub mod chain;
pub mod contracts;
pub mod error;
pub mod fake;
pub mod local;
pub mod messages;
pub mod opcodes;
pub mod outbox;
pub mod pseudo;
pub mod root;
pub mod settlement;
#[cfg(any(feature = "toncenter", feature = "toncenter-server"))]
pub mod toncenter;
pub mod units;
pub mod voucher;
pub mod wallet;

pub use tycho_types;
pub use tycho_types::cell::Cell;
pub use tycho_types::models::StdAddr;

pub use error::{Result, TonError};
