//! Every way a request can be refused or fail on its way through the network, as one enum:
//! the COCOON error code our roles send for it, the message they send (a fixed prefix and
//! details), and the HTTP status and OpenAI error the client gateway answers with.
//!
//! COCOON's wire carries only a code and free text, and its codes are coarse (651 means
//! both "no worker free" and "balance too low"). [`Refusal::classify`] is therefore the one
//! place that reads a message: it recognizes the prefixes our roles write with
//! [`Refusal::message`] (a test checks every variant round-trips) and the texts COCOON's own
//! proxy sends. Nothing else looks at message text.

use std::fmt::Display;

use axum::http::StatusCode;
use cocoon_net::ErrorCode;

/// Why a request did not get its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No worker serves the model (and none ever did at this proxy).
    UnknownModel,
    /// The request is malformed (a worker or proxy validation failed).
    InvalidRequest,
    /// The client's available balance does not cover `max_tokens`.
    BalanceTooLow,
    /// The client's available balance does not cover the request's reservation.
    ReservationTooLarge,
    /// No worker of the model is connected and ready.
    NoWorker,
    /// Every worker of the model prices above the request's `max_coefficient`.
    PriceTooHigh,
    /// The worker is already running as many requests as it accepts.
    WorkerBusy,
    /// The proxy is moving to new root parameters; the request can be sent again.
    Rotating,
    /// A message does not fit one frame.
    TooLarge,
    /// The request's time ran out.
    Timeout,
    /// The model (server or embedded engine) failed or could not be reached.
    ModelFailed,
    /// A connection on the way (client–proxy, proxy–worker) was lost.
    Unavailable,
    /// The request was cancelled (its caller went away, or the worker is stopping it).
    Cancelled,
    /// The request is encrypted to a public key this proxy holds no private key for.
    UnknownKey,
    /// An encrypted request cannot be opened, or a plain one came with a key.
    Encryption,
    /// A request sent to be answered at most once is still running under the same id
    /// (its client reconnected and sent it again): send it again when it has ended.
    StillRunning,
    /// A request sent to be answered at most once was answered and billed before, and its
    /// answer was not kept (too large, or older than the proxy keeps answers).
    AnsweredBefore,
    /// Anything else.
    Failed,
}

impl Refusal {
    /// Every refusal, for tables and tests.
    pub const ALL: [Refusal; 18] = [
        Refusal::UnknownModel,
        Refusal::InvalidRequest,
        Refusal::BalanceTooLow,
        Refusal::ReservationTooLarge,
        Refusal::NoWorker,
        Refusal::PriceTooHigh,
        Refusal::WorkerBusy,
        Refusal::Rotating,
        Refusal::TooLarge,
        Refusal::Timeout,
        Refusal::ModelFailed,
        Refusal::Unavailable,
        Refusal::Cancelled,
        Refusal::UnknownKey,
        Refusal::Encryption,
        Refusal::StillRunning,
        Refusal::AnsweredBefore,
        Refusal::Failed,
    ];

    /// The COCOON error code our roles send for it.
    pub fn code(self) -> ErrorCode {
        match self {
            Refusal::UnknownModel | Refusal::InvalidRequest => ErrorCode::ProtocolViolation,
            Refusal::BalanceTooLow
            | Refusal::WorkerBusy
            | Refusal::TooLarge
            | Refusal::UnknownKey
            | Refusal::Encryption
            | Refusal::AnsweredBefore
            | Refusal::Failed => ErrorCode::Error,
            Refusal::ReservationTooLarge
            | Refusal::NoWorker
            | Refusal::PriceTooHigh
            | Refusal::Rotating
            | Refusal::ModelFailed
            | Refusal::Unavailable
            | Refusal::StillRunning => ErrorCode::NotReady,
            Refusal::Timeout => ErrorCode::Timeout,
            Refusal::Cancelled => ErrorCode::Cancelled,
        }
    }

    /// The fixed start of the message our roles send for it.
    pub fn prefix(self) -> &'static str {
        match self {
            Refusal::UnknownModel => "unknown model",
            Refusal::InvalidRequest => "invalid request",
            Refusal::BalanceTooLow => "client balance is too low for max_tokens",
            Refusal::ReservationTooLarge => "client balance is too low for this request",
            Refusal::NoWorker => "no ready workers for this model",
            Refusal::PriceTooHigh => "no worker within max_coefficient",
            Refusal::WorkerBusy => "too many active queries",
            Refusal::Rotating => {
                "proxy is switching to new root parameters (contract rotation); send the request again"
            }
            Refusal::TooLarge => "too large for one frame",
            Refusal::Timeout => "timeout",
            Refusal::ModelFailed => "model failed",
            Refusal::Unavailable => "unavailable",
            Refusal::Cancelled => "request cancelled",
            Refusal::UnknownKey => "unknown public key",
            Refusal::Encryption => "encrypted request refused",
            Refusal::StillRunning => "a request with this id is still running; send it again when it ends",
            Refusal::AnsweredBefore => "this request was answered and billed before and its answer was not kept",
            Refusal::Failed => "request failed",
        }
    }

    /// The message our roles send: the prefix, then `detail` (if not empty).
    pub fn message(self, detail: impl Display) -> String {
        let detail = detail.to_string();
        if detail.is_empty() {
            self.prefix().to_owned()
        } else {
            format!("{}: {detail}", self.prefix())
        }
    }

    /// The refusal a peer meant by `code` and `message`: our roles' prefixes, and the texts
    /// of COCOON's own roles.
    pub fn classify(code: i32, message: &str) -> Refusal {
        let m = message.to_ascii_lowercase();
        let starts = |r: Refusal| m.starts_with(r.prefix());
        if code == ErrorCode::Timeout.code() {
            return Refusal::Timeout;
        }
        if code == ErrorCode::Cancelled.code() {
            return Refusal::Cancelled;
        }
        if code == ErrorCode::ProtocolViolation.code() {
            return if starts(Refusal::UnknownModel) {
                Refusal::UnknownModel
            } else {
                Refusal::InvalidRequest
            };
        }
        // Ours first, by prefix.
        if let Some(r) = Refusal::ALL
            .into_iter()
            .filter(|r| !matches!(r, Refusal::Failed))
            .find(|&r| starts(r) && r.code().code() == code)
        {
            return r;
        }
        // COCOON's proxy and worker, by their words.
        if m.contains("frame limit") {
            Refusal::TooLarge
        } else if m.contains("balance") {
            Refusal::ReservationTooLarge
        } else if m.contains("no ready workers") || m.contains("coefficient") {
            Refusal::NoWorker
        } else if m.starts_with(Refusal::UnknownKey.prefix()) {
            Refusal::UnknownKey
        } else if m.contains("too many active") {
            Refusal::WorkerBusy
        } else if code == ErrorCode::NotReady.code() {
            Refusal::Unavailable
        } else {
            Refusal::Failed
        }
    }

    /// Whether another worker may answer where this one refused or failed before its first
    /// byte: not for a bad request, one too large, or one whose time ran out.
    pub fn another_worker_may_succeed(self) -> bool {
        !matches!(
            self,
            Refusal::UnknownModel
                | Refusal::InvalidRequest
                | Refusal::TooLarge
                | Refusal::Timeout
                | Refusal::Cancelled
                | Refusal::UnknownKey
                | Refusal::Encryption
                | Refusal::StillRunning
                | Refusal::AnsweredBefore
        )
    }

    /// The HTTP status, OpenAI error type and short code the client gateway answers with.
    pub fn http(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Refusal::UnknownModel => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
            ),
            Refusal::InvalidRequest => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
            ),
            Refusal::BalanceTooLow | Refusal::ReservationTooLarge => (
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_quota",
                "insufficient_balance",
            ),
            Refusal::NoWorker | Refusal::PriceTooHigh | Refusal::WorkerBusy => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "no_free_worker",
            ),
            Refusal::UnknownKey => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "unknown_public_key",
            ),
            Refusal::Encryption => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "encryption_refused",
            ),
            Refusal::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
            ),
            Refusal::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout_error", "timeout"),
            Refusal::StillRunning => (
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "request_in_progress",
            ),
            Refusal::AnsweredBefore => (
                StatusCode::CONFLICT,
                "invalid_request_error",
                "already_answered",
            ),
            Refusal::ModelFailed | Refusal::Failed => {
                (StatusCode::BAD_GATEWAY, "api_error", "upstream_error")
            }
            Refusal::Rotating | Refusal::Unavailable | Refusal::Cancelled => {
                (StatusCode::SERVICE_UNAVAILABLE, "api_error", "unavailable")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_survives_the_wire() {
        for r in Refusal::ALL {
            for detail in ["", "with details: 42 tokens", "Unknown Model in the middle"] {
                let message = r.message(detail);
                assert_eq!(
                    Refusal::classify(r.code().code(), &message),
                    r,
                    "{r:?} sent as {} {message:?}",
                    r.code().code()
                );
            }
        }
    }

    #[test]
    fn cocoon_texts_are_understood() {
        // What COCOON's C++ proxy says.
        assert_eq!(
            Refusal::classify(651, "balance is too low"),
            Refusal::ReservationTooLarge
        );
        assert_eq!(
            Refusal::classify(651, "no ready workers"),
            Refusal::NoWorker
        );
        assert_eq!(Refusal::classify(652, "anything"), Refusal::Timeout);
        assert_eq!(Refusal::classify(653, "cancelled"), Refusal::Cancelled);
        assert_eq!(Refusal::classify(621, "bad json"), Refusal::InvalidRequest);
        assert_eq!(Refusal::classify(601, "boom"), Refusal::Failed);
        let too_large = cocoon_net::RpcError::TooLarge { len: 20, max: 10 }.to_string();
        assert_eq!(Refusal::classify(602, &too_large), Refusal::TooLarge);
    }

    #[test]
    fn statuses() {
        let status = |r: Refusal| r.http().0.as_u16();
        assert_eq!(status(Refusal::UnknownModel), 404);
        assert_eq!(status(Refusal::InvalidRequest), 400);
        assert_eq!(status(Refusal::BalanceTooLow), 402);
        assert_eq!(status(Refusal::ReservationTooLarge), 402);
        assert_eq!(status(Refusal::PriceTooHigh), 429);
        assert_eq!(status(Refusal::TooLarge), 413);
        assert_eq!(status(Refusal::Timeout), 504);
        assert_eq!(status(Refusal::ModelFailed), 502);
        assert_eq!(status(Refusal::Rotating), 503);
    }
}
