//! Requests answered at most once (the cocoon-rs extension behind
//! [`flags::QUERY_ANSWER_ONCE`](crate::protocol::version::flags::QUERY_ANSWER_ONCE)).
//!
//! A client that must not pay twice for one piece of work (a batch line, sent again after
//! the client crashed) sends it with a fixed request id and the flag. The proxy then books
//! it under an id derived from the client and that request id, and keeps the messages the
//! client got, in the same ledger transaction as the booking. The same request sent again:
//! - still running → refused with [`Refusal::StillRunning`] (the client waits and resends);
//! - booked with its answer kept → the kept messages are sent again, nothing is billed;
//! - booked without one (too large to keep) → [`Refusal::AnsweredBefore`];
//! - never booked (the crash came before the answer ended) → it runs as a new request.
//!
//! A request that fails is booked under a fresh id instead (what the worker delivered is
//! still paid), so that the line can be sent again and answered.

use sha2::{Digest, Sha256};

use crate::protocol::Version;

/// Largest answer kept for a replay (bytes of client messages); a larger one is booked
/// without it and a replay is refused with [`crate::protocol::Refusal::AnsweredBefore`].
pub(super) const MAX_KEPT_ANSWER: usize = 8 << 20;

/// The proxy's id of a request to be answered once: the same for the same client and
/// request id, different for every other client.
pub(super) fn once_id(client_owner: &str, client_request_id: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cocoon-rs answer once\0");
    h.update((client_owner.len() as u64).to_le_bytes());
    h.update(client_owner.as_bytes());
    h.update(client_request_id);
    h.finalize().into()
}

/// The messages a request to be answered once sent to its client so far.
#[derive(Debug, Default)]
pub(super) struct Kept {
    packets: Vec<Vec<u8>>,
    bytes: usize,
    overflow: bool,
}

impl Kept {
    /// Notes one more message sent to the client.
    pub(super) fn push(&mut self, packet: &[u8]) {
        if self.overflow {
            return;
        }
        self.bytes += packet.len();
        if self.bytes > MAX_KEPT_ANSWER {
            self.overflow = true;
            self.packets = Vec::new();
            return;
        }
        self.packets.push(packet.to_vec());
    }

    /// The kept answer with its last message, as stored in the ledger; `None` when it grew
    /// too large.
    pub(super) fn seal(mut self, proto: Version, last: Option<&[u8]>) -> Option<Vec<u8>> {
        if let Some(last) = last {
            self.push(last);
        }
        if self.overflow {
            return None;
        }
        let mut out = Vec::with_capacity(self.bytes + 8 + 4 * self.packets.len());
        out.extend_from_slice(&proto.number().to_le_bytes());
        out.extend_from_slice(&(self.packets.len() as u32).to_le_bytes());
        for p in &self.packets {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
            out.extend_from_slice(p);
        }
        Some(out)
    }
}

/// A kept answer read back: the client's protocol version when it was sent and the
/// messages in order. `None` if the stored bytes are not one (never written by this code).
pub(super) fn unseal(stored: &[u8]) -> Option<(Version, Vec<Vec<u8>>)> {
    let mut rest = stored;
    let mut take = |n: usize| -> Option<&[u8]> {
        if rest.len() < n {
            return None;
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    };
    let proto = i32::from_le_bytes(take(4)?.try_into().ok()?);
    let count = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let mut packets = Vec::new();
    for _ in 0..count {
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        packets.push(take(len)?.to_vec());
    }
    if !rest.is_empty() {
        return None;
    }
    Some((Version::new(proto), packets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_per_client_and_request() {
        let a = once_id("client-a", &[1; 32]);
        assert_eq!(a, once_id("client-a", &[1; 32]));
        assert_ne!(a, once_id("client-b", &[1; 32]));
        assert_ne!(a, once_id("client-a", &[2; 32]));
        assert_ne!(a, [1; 32], "never the client's id itself");
    }

    #[test]
    fn a_kept_answer_reads_back_in_order() {
        let mut kept = Kept::default();
        kept.push(b"head");
        kept.push(b"");
        kept.push(b"part");
        let sealed = kept.seal(Version::new(4), Some(b"last")).expect("kept");
        let (proto, packets) = unseal(&sealed).expect("reads");
        assert_eq!(proto, Version::new(4));
        assert_eq!(
            packets,
            vec![b"head".to_vec(), vec![], b"part".to_vec(), b"last".to_vec()]
        );
        assert_eq!(unseal(&sealed[..sealed.len() - 1]), None);
        let mut longer = sealed.clone();
        longer.push(0);
        assert_eq!(unseal(&longer), None);
    }

    #[test]
    fn an_answer_too_large_is_not_kept() {
        let mut kept = Kept::default();
        kept.push(&vec![0; MAX_KEPT_ANSWER]);
        kept.push(b"x");
        assert_eq!(kept.seal(Version::new(4), None), None);
    }
}
