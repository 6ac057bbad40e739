//! Every size and time limit on the request path, named in one place and consistent with
//! each other (README, "Limits").
//!
//! ```text
//! app ──HTTP body ≤ MAX_REQUEST_BODY──► client ──frame ≤ MAX_FRAME──► proxy ──frame──► worker
//! app ◄──any size, in parts ≤ MAX_ANSWER_PART── client ◄── proxy ◄── worker ◄── model server
//! ```
//!
//! A request travels in one frame (`client.runQueryEx`, then `proxy.runQueryEx`), so its
//! body must leave room in [`MAX_FRAME`] for the envelope: the model name (twice: in the
//! body and in the message), the `http.request` headers and the TL fields. An answer has no
//! size limit: it travels as a stream of parts, each well under a frame.

use std::time::Duration;

/// The largest frame payload a COCOON peer accepts (16 MiB).
pub const MAX_FRAME: usize = cocoon_net::frame::MAX_FRAME_LEN;

/// Room kept in a request's frame for everything but the body: the message's fields, the
/// `http.request` headers and the model name.
pub const ENVELOPE_RESERVE: usize = 64 << 10;

/// The longest model name a request may carry (bytes).
pub const MAX_MODEL_NAME: usize = 1024;

/// The largest request body the client gateway accepts by default (HTTP 413 above):
/// one frame less the envelope.
pub const MAX_REQUEST_BODY: usize = MAX_FRAME - ENVELOPE_RESERVE - 2 * MAX_MODEL_NAME;

/// The largest answer part the worker and the proxy send: larger chunks are split, so an
/// answer of any size passes without a frame ever nearing [`MAX_FRAME`].
pub const MAX_ANSWER_PART: usize = 1 << 20;

/// How long the client gateway waits for a request's headers before closing the
/// connection (slow-header clients).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the client gateway waits for a request's whole body (as COCOON's client: 60 s).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the proxy waits for a worker's answer to `worker.changeModel` (as COCOON's
/// proxy: 60 s). The worker's script may run longer; its result then only shows in the
/// worker's log and in the model it announces when it reconnects.
pub const CHANGE_MODEL_TIMEOUT: Duration = Duration::from_secs(60);

/// Splits `bytes` into pieces of at most [`MAX_ANSWER_PART`] bytes (none when empty).
pub fn answer_parts(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.chunks(MAX_ANSWER_PART)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_request_fits_one_frame() {
        // Body + model name twice + envelope.
        const { assert!(MAX_REQUEST_BODY + 2 * MAX_MODEL_NAME + ENVELOPE_RESERVE <= MAX_FRAME) };
        const { assert!(MAX_ANSWER_PART * 8 <= MAX_FRAME) };
    }
}
