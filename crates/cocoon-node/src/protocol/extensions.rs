//! cocoon-rs additions to COCOON, negotiated apart from COCOON's version numbers so that an
//! official peer never sees them: a hello announces them with a flag bit COCOON does not use
//! ([`flags::PARAMS_COCOON_RS`]); the proxy answers with the same bit only to a peer that
//! announced it; a role sends an extension constructor only to a peer whose hello carried the
//! bit.
//!
//! | extension | what it allows |
//! |---|---|
//! | cancellation | `cocoonrs.cancelQuery`: client → proxy when an app hangs up, proxy → worker to stop the request |
//! | answer once | `client.runQueryEx` with flag bit [`flags::QUERY_ANSWER_ONCE`]: the proxy keeps the answer with the booking and answers the same request id sent again (after a crash) with it, never billing it twice |
//! | attestation | `cocoonrs.getAttestation`: client → proxy → workers, each party's certificate and its signature of an app's nonce (`GET /v1/attestation`) |
//! | endpoints | `cocoonrs.workerEndpoints`: worker → proxy before its handshake completes, the OpenAI paths it serves and the features it offers (`tools`); the proxy routes by them |

use super::version::flags;

/// The extensions a peer offered in its hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extensions {
    cocoon_rs: bool,
}

impl Extensions {
    /// A COCOON peer (or one of ours that offers nothing).
    pub const NONE: Extensions = Extensions { cocoon_rs: false };
    /// Everything this build offers.
    pub const OURS: Extensions = Extensions { cocoon_rs: true };

    /// What a hello with these params flags offers.
    pub fn offered(params_flags: u32) -> Self {
        Extensions {
            cocoon_rs: params_flags & flags::PARAMS_COCOON_RS != 0,
        }
    }

    /// The params flag bits that offer these extensions in a hello (or accept them in the
    /// answer to one).
    pub fn flags(self) -> u32 {
        if self.cocoon_rs {
            flags::PARAMS_COCOON_RS
        } else {
            0
        }
    }

    /// `cocoonrs.workerEndpoints` may be sent to (and is expected from) this peer.
    pub fn endpoints(self) -> bool {
        self.cocoon_rs
    }

    /// Requests may carry [`flags::QUERY_ANSWER_ONCE`] to this peer (a proxy).
    pub fn answer_once(self) -> bool {
        self.cocoon_rs
    }

    /// `cocoonrs.getAttestation` may be sent to this peer.
    pub fn attestation(self) -> bool {
        self.cocoon_rs
    }

    /// `cocoonrs.cancelQuery` may be sent to this peer.
    pub fn cancellation(self) -> bool {
        self.cocoon_rs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_flag_bit_offers_extensions() {
        // What COCOON's runners send: bits 0–2 only.
        for upstream in [0, 1, 2, 3, 7] {
            assert_eq!(Extensions::offered(upstream), Extensions::NONE);
            assert!(!Extensions::offered(upstream).cancellation());
        }
        let ours = 3 | Extensions::OURS.flags();
        assert!(Extensions::offered(ours).cancellation());
        assert_eq!(Extensions::NONE.flags(), 0);
        assert_eq!(
            Extensions::OURS.flags() & 7,
            0,
            "never one of COCOON's bits"
        );
    }
}
