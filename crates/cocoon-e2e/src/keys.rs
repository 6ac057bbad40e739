//! Keys of COCOON's end-to-end encryption (reference §2.8.2–2.8.3): Ed25519 keys used for
//! X25519 agreement (as libsodium's `crypto_sign_ed25519_{sk,pk}_to_curve25519`), and the
//! per-message secret derived with the envelope's nonce and the direction.

use base64::Engine;
use curve25519_dalek::edwards::CompressedEdwardsY;
use sha2::{Digest, Sha256, Sha512};

/// Why a key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 32 raw bytes, 64 hex characters or 44 base64 characters.
    #[error("public_key bad length")]
    BadLength,
    /// Hex or base64 that does not decode.
    #[error("public key is not valid {0}")]
    BadEncoding(&'static str),
    /// Not a point of the curve.
    #[error("public key is not an Ed25519 point")]
    NotAPoint,
}

/// Which way a message travels; it enters the secret, so a request cannot be replayed as
/// an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the app (client side) to the worker (`'c'`).
    ToWorker,
    /// From the worker back to the app (`'w'`).
    ToApp,
}

impl Direction {
    fn byte(self) -> u8 {
        match self {
            Direction::ToWorker => b'c',
            Direction::ToApp => b'w',
        }
    }
}

/// The Ed25519 public key of `seed`.
pub fn public_key(seed: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(seed)
        .verifying_key()
        .to_bytes()
}

/// A public key as COCOON accepts it: 32 raw bytes, 64 hex characters or 44 base64
/// characters (standard alphabet, padded).
pub fn parse_public_key(text: &[u8]) -> Result<[u8; 32], KeyError> {
    let bytes = match text.len() {
        32 => text.to_vec(),
        64 => hex::decode(text).map_err(|_| KeyError::BadEncoding("hex"))?,
        44 => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| KeyError::BadEncoding("base64"))?,
        _ => return Err(KeyError::BadLength),
    };
    bytes.try_into().map_err(|_| KeyError::BadLength)
}

/// X25519 agreement between our Ed25519 `seed` and the peer's Ed25519 public key.
pub fn shared_secret(seed: &[u8; 32], peer_public: &[u8; 32]) -> Result<[u8; 32], KeyError> {
    let hash = Sha512::digest(seed);
    let mut scalar = [0; 32];
    scalar.copy_from_slice(&hash[..32]);
    let peer = CompressedEdwardsY(*peer_public)
        .decompress()
        .ok_or(KeyError::NotAPoint)?
        .to_montgomery();
    Ok(peer.mul_clamped(scalar).to_bytes())
}

/// The secret of one message: SHA-256 of the shared key, the envelope's nonce text as sent,
/// and the direction byte.
pub fn message_secret(shared: &[u8; 32], nonce_text: &str, direction: Direction) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(shared);
    h.update(nonce_text.as_bytes());
    h.update([direction.byte()]);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_in_every_form_cocoon_accepts() {
        let key = [0xab; 32];
        assert_eq!(parse_public_key(&key), Ok(key));
        assert_eq!(parse_public_key(hex::encode(key).as_bytes()), Ok(key));
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        assert_eq!(parse_public_key(b64.as_bytes()), Ok(key));
        assert_eq!(parse_public_key(b"abc"), Err(KeyError::BadLength));
        assert_eq!(
            parse_public_key(&[b'z'; 64]),
            Err(KeyError::BadEncoding("hex"))
        );
    }
}
