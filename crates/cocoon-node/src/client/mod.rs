//! The client role: an OpenAI-compatible HTTP gateway ([`gateway`]) in front of
//! authorized sessions with proxies ([`session`]), checking every answer before an app sees
//! it ([`answer_check`]) and paying through its client contracts ([`settlement`]); the
//! OpenAI Batch API runs datasets over the same gateway ([`batch`]).

pub mod answer_check;
pub mod batch;
pub mod gateway;
pub mod keys;
pub mod session;
pub mod settlement;

pub use gateway::{ClientNode, ClientStats, GatewaySettings};
pub use session::{
    AnswerEvent, ClientError, ClientSettings, FinalInfo, PaymentState, ProxySession, QueryRequest,
    MAX_PROTO, MIN_PROTO,
};
