//! COCOON node roles (worker, proxy, client) and what they share: pricing of tokens and
//! metering of model answers.

pub mod metering;
pub mod pricing;
