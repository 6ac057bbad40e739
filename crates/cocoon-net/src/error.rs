//! COCOON's error codes (one table) and the errors of the transport.

use std::fmt;
use std::time::Duration;

use cocoon_tl::TlError;

/// COCOON error codes (TON `ErrorCode`), carried by `tcp.queryError` and answer errors.
///
/// This is the one table of codes in cocoon-rs; every role maps its errors onto it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrorCode {
    /// 601: a generic failure.
    Failure = 601,
    /// 602: a request error (e.g. bad parameters, worker overloaded).
    Error = 602,
    /// 603: a warning-level error.
    Warning = 603,
    /// 621: the peer broke the protocol.
    ProtocolViolation = 621,
    /// 651: the service is not ready (no connection, not initialised).
    NotReady = 651,
    /// 652: a timeout.
    Timeout = 652,
    /// 653: the operation was cancelled.
    Cancelled = 653,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 7] = [
        ErrorCode::Failure,
        ErrorCode::Error,
        ErrorCode::Warning,
        ErrorCode::ProtocolViolation,
        ErrorCode::NotReady,
        ErrorCode::Timeout,
        ErrorCode::Cancelled,
    ];

    /// The numeric code as sent on the wire.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The code for a number received from a peer, if it is one of COCOON's.
    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// A short lower-case name for logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Failure => "failure",
            ErrorCode::Error => "error",
            ErrorCode::Warning => "warning",
            ErrorCode::ProtocolViolation => "protocol violation",
            ErrorCode::NotReady => "not ready",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.name())
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// This side closed it ([`crate::RpcHandle::close`] or every handle dropped).
    Local,
    /// The peer closed the stream.
    PeerClosed,
    /// Nothing was received for this long.
    IdleTimeout(Duration),
    /// The peer broke the protocol; the message says how.
    ProtocolViolation(String),
    /// The stream failed.
    Io(String),
}

impl CloseReason {
    /// The COCOON error code that pending queries fail with.
    pub fn code(&self) -> ErrorCode {
        match self {
            CloseReason::Local => ErrorCode::Cancelled,
            CloseReason::PeerClosed | CloseReason::Io(_) => ErrorCode::NotReady,
            CloseReason::IdleTimeout(_) => ErrorCode::Timeout,
            CloseReason::ProtocolViolation(_) => ErrorCode::ProtocolViolation,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed locally"),
            CloseReason::PeerClosed => f.write_str("closed by peer"),
            CloseReason::IdleTimeout(d) => write!(f, "nothing received for {d:?}"),
            CloseReason::ProtocolViolation(m) => write!(f, "protocol violation: {m}"),
            CloseReason::Io(m) => write!(f, "I/O error: {m}"),
        }
    }
}

/// Why a query, a packet or a connection attempt failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RpcError {
    /// The peer answered with `tcp.queryError`.
    #[error("peer answered error {code}: {message}")]
    Remote {
        /// The code sent by the peer (normally one of [`ErrorCode`]).
        code: i32,
        /// The peer's message.
        message: String,
    },
    /// No answer arrived within the query's timeout.
    #[error("query timed out after {0:?}")]
    Timeout(Duration),
    /// The connection is closed.
    #[error("connection {0}")]
    Closed(CloseReason),
    /// The answer arrived but is not a valid value of the expected type.
    #[error("cannot decode answer: {0}")]
    Decode(#[from] TlError),
    /// The `tcp.connect` / `tcp.connected` opening failed.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// This message is larger than one frame can carry; it was not sent, and the
    /// connection and its other messages are unaffected.
    #[error("message of {len} bytes exceeds the {max}-byte frame limit")]
    TooLarge {
        /// The frame payload the message would need.
        len: usize,
        /// The largest frame payload of the connection.
        max: usize,
    },
}

impl RpcError {
    /// The COCOON error code for this error (the remote one for [`RpcError::Remote`]).
    pub fn code(&self) -> i32 {
        match self {
            RpcError::Remote { code, .. } => *code,
            RpcError::Timeout(_) => ErrorCode::Timeout.code(),
            RpcError::Closed(reason) => reason.code().code(),
            RpcError::Decode(_) | RpcError::Handshake(_) => ErrorCode::ProtocolViolation.code(),
            RpcError::TooLarge { .. } => ErrorCode::Error.code(),
        }
    }
}
