//! COCOON node roles (worker, proxy, client) and what they share: pricing of tokens,
//! metering of model answers, request validation and inference backends.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod answer_check;
pub mod backend;
pub mod bounds;
pub mod chain;
pub mod client;
pub mod config;
#[cfg(feature = "engine")]
pub mod engine_backend;
pub mod gateway;
pub mod http_server;
pub mod ledger;
pub mod limits;
pub mod metering;
pub mod metrics;
pub mod pricing;
pub mod protocol;
pub mod proxy;
pub mod request;
pub mod runner;
pub mod settle;
pub mod transport;
pub mod util;
pub mod worker;
