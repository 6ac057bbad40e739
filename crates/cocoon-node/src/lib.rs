//! COCOON node roles (worker, proxy, client) and what they share: pricing of tokens,
//! metering of model answers, request validation and inference backends.

pub mod backend;
pub mod chain;
pub mod client;
pub mod config;
#[cfg(feature = "engine")]
pub mod engine_backend;
pub mod gateway;
pub mod ledger;
pub mod metering;
pub mod metrics;
pub mod pricing;
pub mod proxy;
pub mod request;
pub mod runner;
pub mod settle;
pub mod transport;
pub mod worker;
