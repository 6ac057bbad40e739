//! COCOON's TL-over-TCP transport, used by every role.
//!
//! - [`frame`]: the `length | seqno | payload` frames with their limits.
//! - [`RpcConnection`]: the `tcp.connect` / `tcp.connected` opening, then queries
//!   (`tcp.query` → `tcp.queryAnswer` / `tcp.queryError`) with local timeouts, one-way
//!   packets (`tcp.packet`), keep-alive pings, bounded queues and graceful close.
//! - [`ErrorCode`]: COCOON's error code table.
//!
//! A connection runs over any byte stream: plain TCP in tests, the attested TLS stream
//! of `cocoon-attest` between nodes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cocoon_net::{ConnectionConfig, RpcConnection};
//! use cocoon_tl::functions::client::GetWorkerTypesV2;
//! let stream = tokio::net::TcpStream::connect("127.0.0.1:11102").await?;
//! let conn = RpcConnection::connect(stream, &ConnectionConfig::default(), "proxy").await?;
//! let types = conn.handle().query(&GetWorkerTypesV2 {}).await?;
//! println!("{types:?}");
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod connection;
mod error;
pub mod frame;

pub use connection::{ConnectionConfig, Incoming, IncomingQuery, RpcConnection, RpcHandle, Side};
pub use error::{CloseReason, ErrorCode, RpcError};
