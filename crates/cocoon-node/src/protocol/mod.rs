//! What the roles say to each other beyond the TL schema: why a request is refused
//! ([`Refusal`]), named once for every role.

mod refusal;

pub use refusal::Refusal;
