//! What the roles say to each other beyond the TL schema, named once for every role: why a
//! request is refused ([`Refusal`]) and what each protocol version allows ([`Version`]).

pub mod answer;
mod refusal;
pub mod version;

pub use refusal::Refusal;
pub use version::Version;
