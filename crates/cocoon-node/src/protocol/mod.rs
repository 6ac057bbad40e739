//! What the roles say to each other beyond the TL schema, named once for every role: why a
//! request is refused ([`Refusal`]), what each protocol version allows ([`Version`]), how
//! answers are written and read in each version ([`answer`]), and the rules for the HTTP
//! carried inside ([`http`]).

pub mod answer;
pub mod endpoint;
pub mod evidence;
pub mod extensions;
pub mod http;
pub mod multipart;
mod refusal;
pub mod version;

pub use extensions::Extensions;
pub use refusal::Refusal;
pub use version::Version;
