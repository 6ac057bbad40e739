//! The proof-of-work gate that runs on every connection before TLS (spec §7.1 step 2).
//!
//! The server sends a 24-byte challenge (`magic`, `difficulty_bits`, 16-byte salt); the
//! client answers with 12 bytes (`magic`, nonce). The answer is valid when
//! `SHA256(salt || nonce_le)` has at least `difficulty_bits` leading zero bits, where the
//! first 8 hash bytes are read as a **little-endian** `u64` and zeros are counted from its
//! most significant bit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Magic of the server's challenge (`cocoon.powSimple`).
pub const CHALLENGE_MAGIC: u32 = 0x418e_1291;
/// Magic of the client's answer.
pub const RESPONSE_MAGIC: u32 = 0x0182_7319;
/// Length of the challenge on the wire.
pub const CHALLENGE_LEN: usize = 24;
/// Length of the answer on the wire.
pub const RESPONSE_LEN: usize = 12;
/// Default difficulty a server asks for.
pub const DEFAULT_DIFFICULTY: u32 = 20;
/// Default highest difficulty a client agrees to solve.
pub const DEFAULT_MAX_DIFFICULTY: u32 = 28;
/// Default time a server waits for the answer (and a client for the challenge).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Difficulties above this are never meaningful (the check only looks at 64 bits).
pub const MAX_MEANINGFUL_DIFFICULTY: u32 = 64;

/// Why the PoW exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum PowError {
    /// The challenge did not start with [`CHALLENGE_MAGIC`].
    #[error("PoW challenge has wrong magic {0:#010x}")]
    BadChallengeMagic(u32),
    /// The answer did not start with [`RESPONSE_MAGIC`].
    #[error("PoW answer has wrong magic {0:#010x}")]
    BadResponseMagic(u32),
    /// The server asked for more work than this client allows.
    #[error("PoW difficulty {asked} exceeds the allowed maximum {max}")]
    TooDifficult {
        /// Difficulty the server asked for.
        asked: i32,
        /// Configured maximum.
        max: u32,
    },
    /// The nonce does not give enough leading zero bits.
    #[error("PoW answer does not meet difficulty {0}")]
    BadNonce(u32),
    /// The peer closed the connection before sending all bytes.
    #[error("PoW peer closed the connection early ({got} of {need} bytes)")]
    ShortRead {
        /// Bytes received.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The peer did not send its part in time.
    #[error("PoW timed out after {0:?}")]
    Timeout(Duration),
    /// The connection attempt was dropped while solving.
    #[error("PoW solving cancelled")]
    Cancelled,
    /// The solver searched the whole nonce space without success (impossible in practice).
    #[error("PoW solver exhausted the nonce space")]
    Exhausted,
    /// A socket error.
    #[error("PoW I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A challenge as sent by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowChallenge {
    /// Required leading zero bits.
    pub difficulty_bits: i32,
    /// Random salt.
    pub salt: [u8; 16],
}

impl PowChallenge {
    /// A fresh challenge with a random salt.
    pub fn random(difficulty_bits: u32) -> Self {
        let mut salt = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        Self {
            difficulty_bits: difficulty_bits.min(i32::MAX as u32) as i32,
            salt,
        }
    }

    /// The 24 wire bytes.
    pub fn encode(&self) -> [u8; CHALLENGE_LEN] {
        let mut out = [0u8; CHALLENGE_LEN];
        out[..4].copy_from_slice(&CHALLENGE_MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&self.difficulty_bits.to_le_bytes());
        out[8..].copy_from_slice(&self.salt);
        out
    }

    /// Parses the 24 wire bytes.
    pub fn decode(b: &[u8; CHALLENGE_LEN]) -> Result<Self, PowError> {
        let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if magic != CHALLENGE_MAGIC {
            return Err(PowError::BadChallengeMagic(magic));
        }
        let difficulty_bits = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&b[8..]);
        Ok(Self {
            difficulty_bits,
            salt,
        })
    }

    /// Whether `nonce` solves this challenge.
    pub fn verify(&self, nonce: i64) -> bool {
        leading_zero_bits(&pow_hash(&self.salt, nonce)) as i64 >= self.difficulty_bits as i64
    }

    /// Finds a nonce by brute force (CPU-bound; call it off the async threads).
    pub fn solve(&self) -> Result<i64, PowError> {
        self.solve_cancellable(&AtomicBool::new(false))
    }

    /// [`PowChallenge::solve`] that gives up ([`PowError::Cancelled`]) once `cancel` is set.
    pub fn solve_cancellable(&self, cancel: &AtomicBool) -> Result<i64, PowError> {
        let mut data = [0u8; 24];
        data[..16].copy_from_slice(&self.salt);
        let want = self.difficulty_bits.max(0) as u32;
        if want > MAX_MEANINGFUL_DIFFICULTY {
            return Err(PowError::Exhausted);
        }
        for nonce in 0..=i64::MAX {
            if nonce & 0xffff == 0 && cancel.load(Ordering::Relaxed) {
                return Err(PowError::Cancelled);
            }
            data[16..].copy_from_slice(&nonce.to_le_bytes());
            let h: [u8; 32] = Sha256::digest(data).into();
            if leading_zero_bits(&h) >= want {
                return Ok(nonce);
            }
        }
        Err(PowError::Exhausted)
    }
}

/// `SHA256(salt || nonce_le8)`.
pub fn pow_hash(salt: &[u8; 16], nonce: i64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(nonce.to_le_bytes());
    h.finalize().into()
}

/// Leading zero bits of a PoW hash in COCOON's bit order: the first 8 bytes are a
/// little-endian `u64`, counted from its most significant bit (byte 7, bit 7).
pub fn leading_zero_bits(hash: &[u8; 32]) -> u32 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(first).leading_zeros()
}

/// Encodes an answer.
pub fn encode_response(nonce: i64) -> [u8; RESPONSE_LEN] {
    let mut out = [0u8; RESPONSE_LEN];
    out[..4].copy_from_slice(&RESPONSE_MAGIC.to_le_bytes());
    out[4..].copy_from_slice(&nonce.to_le_bytes());
    out
}

/// Decodes an answer into its nonce.
pub fn decode_response(b: &[u8; RESPONSE_LEN]) -> Result<i64, PowError> {
    let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    if magic != RESPONSE_MAGIC {
        return Err(PowError::BadResponseMagic(magic));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&b[4..]);
    Ok(i64::from_le_bytes(n))
}

async fn read_full<S: AsyncRead + Unpin>(s: &mut S, buf: &mut [u8]) -> Result<(), PowError> {
    let mut got = 0;
    while got < buf.len() {
        let n = s.read(&mut buf[got..]).await?;
        if n == 0 {
            return Err(PowError::ShortRead {
                got,
                need: buf.len(),
            });
        }
        got += n;
    }
    Ok(())
}

/// Server side: sends a challenge and checks the answer within `timeout`.
pub async fn server_gate<S>(
    stream: &mut S,
    difficulty: u32,
    timeout: Duration,
) -> Result<(), PowError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let challenge = PowChallenge::random(difficulty);
    let run = async {
        stream.write_all(&challenge.encode()).await?;
        stream.flush().await?;
        let mut answer = [0u8; RESPONSE_LEN];
        read_full(stream, &mut answer).await?;
        let nonce = decode_response(&answer)?;
        if !challenge.verify(nonce) {
            return Err(PowError::BadNonce(difficulty));
        }
        Ok(())
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| PowError::Timeout(timeout))?
}

/// Client side: reads the challenge, solves it on the blocking pool (refusing more than
/// `max_difficulty`) and sends the answer.
pub async fn client_gate<S>(
    stream: &mut S,
    max_difficulty: u32,
    timeout: Duration,
) -> Result<(), PowError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut raw = [0u8; CHALLENGE_LEN];
    tokio::time::timeout(timeout, read_full(stream, &mut raw))
        .await
        .map_err(|_| PowError::Timeout(timeout))??;
    let challenge = PowChallenge::decode(&raw)?;
    if challenge.difficulty_bits as i64 > max_difficulty.min(MAX_MEANINGFUL_DIFFICULTY) as i64 {
        return Err(PowError::TooDifficult {
            asked: challenge.difficulty_bits,
            max: max_difficulty,
        });
    }
    // Stop the solver if this future is dropped (caller timeout, shutdown).
    struct CancelOnDrop(Arc<AtomicBool>);
    impl Drop for CancelOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let guard = CancelOnDrop(cancel.clone());
    let nonce = tokio::task::spawn_blocking(move || challenge.solve_cancellable(&cancel))
        .await
        .map_err(|e| PowError::Io(std::io::Error::other(e)))??;
    drop(guard);
    stream.write_all(&encode_response(nonce)).await?;
    stream.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_bit_order() {
        // Byte 7 is the most significant byte of the little-endian u64.
        let mut h = [0xffu8; 32];
        h[..8].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]);
        assert_eq!(leading_zero_bits(&h), 8);
        h[..8].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x00]);
        assert_eq!(leading_zero_bits(&h), 17);
        // Zeros at the *start* of the hash do not count under this order.
        h[..8].copy_from_slice(&[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80]);
        assert_eq!(leading_zero_bits(&h), 0);
        h[..8].copy_from_slice(&[0u8; 8]);
        assert_eq!(leading_zero_bits(&h), 64);
    }

    #[test]
    fn golden_solution() {
        // Fixed salt, difficulty 8: the first nonce whose hash byte 7 is zero.
        let c = PowChallenge {
            difficulty_bits: 8,
            salt: *b"cocoon-pow-salt!",
        };
        let n = c.solve().unwrap();
        let h = pow_hash(&c.salt, n);
        assert_eq!(h[7], 0);
        for earlier in 0..n {
            assert_ne!(pow_hash(&c.salt, earlier)[7], 0);
        }
        assert!(c.verify(n));
    }

    #[test]
    fn wire_roundtrip_and_magics() {
        let c = PowChallenge::random(20);
        let enc = c.encode();
        assert_eq!(&enc[..4], &[0x91, 0x12, 0x8e, 0x41]);
        assert_eq!(PowChallenge::decode(&enc).unwrap(), c);
        let r = encode_response(-5);
        assert_eq!(&r[..4], &[0x19, 0x73, 0x82, 0x01]);
        assert_eq!(decode_response(&r).unwrap(), -5);
        let mut bad = enc;
        bad[0] ^= 1;
        assert!(matches!(
            PowChallenge::decode(&bad),
            Err(PowError::BadChallengeMagic(_))
        ));
    }

    #[test]
    fn cancelled_solver_stops() {
        // Difficulty 60 would take forever; a pre-set flag stops it at once.
        let c = PowChallenge {
            difficulty_bits: 60,
            salt: [1; 16],
        };
        assert!(matches!(
            c.solve_cancellable(&AtomicBool::new(true)),
            Err(PowError::Cancelled)
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn solve_then_verify(salt in any::<[u8; 16]>(), d in 1i32..12) {
            let c = PowChallenge { difficulty_bits: d, salt };
            let n = c.solve().unwrap();
            prop_assert!(c.verify(n));
            // The first nonce that does not reach the difficulty must be refused.
            let wrong = (0..).find(|&k| leading_zero_bits(&pow_hash(&salt, k)) < d as u32).unwrap();
            prop_assert!(!c.verify(wrong));
        }

        #[test]
        fn nonce_failing_the_hash_is_rejected(salt in any::<[u8; 16]>(), nonce in any::<i64>()) {
            let c = PowChallenge { difficulty_bits: 16, salt };
            let lz = leading_zero_bits(&pow_hash(&salt, nonce));
            prop_assert_eq!(c.verify(nonce), lz >= 16);
        }
    }
}
