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
//! * [`chain`]: the [`chain::ChainBackend`] trait the roles use, and
//!   [`fake::FakeTon`], a stand-in without a chain for development and tests (§6.5).

#![warn(missing_docs)]

pub mod address;
pub mod cells;
pub mod chain;
pub mod contracts;
pub mod error;
pub mod fake;
pub mod messages;
pub mod opcodes;
pub mod pseudo;
pub mod root;
pub mod voucher;
pub mod wallet;

pub use tycho_types;
pub use tycho_types::cell::Cell;
pub use tycho_types::models::StdAddr;

pub use error::{Result, TonError};
