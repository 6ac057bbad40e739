//! COCOON node roles (worker, proxy, client) and what they share: pricing of tokens,
//! metering of model answers, request validation and inference backends.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod bounds;
pub mod chain;
pub mod client;
pub mod config;
pub mod http_server;
pub mod keys;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod pricing;
pub mod protocol;
pub mod proxy;
pub mod runner;
pub mod transport;
pub mod util;
pub mod worker;
