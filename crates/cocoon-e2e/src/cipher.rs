//! The message cipher of COCOON's end-to-end encryption (reference §2.8.4, tde2e's
//! `MessageEncryption::encrypt_data` without additional data): a random-length random
//! prefix, an HMAC-SHA256 message id, and AES-256-CBC keyed from the id.

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

type Encryptor = cbc::Encryptor<aes::Aes256>;
type Decryptor = cbc::Decryptor<aes::Aes256>;

/// Why a ciphertext was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    /// Shorter than the message id, or not whole AES blocks.
    #[error("encrypted data of {0} bytes is not a message id and whole blocks")]
    BadLength(usize),
    /// The message id does not authenticate the data (wrong key, or tampered).
    #[error("msg_id mismatch")]
    MsgIdMismatch,
    /// The prefix length byte is out of range.
    #[error("invalid prefix size")]
    BadPrefix,
}

/// The length of the prefix for `n` bytes of data: 16 to 31, so that prefix and data fill
/// whole AES blocks.
pub fn prefix_len(n: usize) -> usize {
    ((16 + 15 + n) & !15) - n
}

fn hmac512(key: &[u8], msg: &[u8]) -> [u8; 64] {
    let mut mac = <Hmac<Sha512> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// The message id of the padded message `m`, under `mac_key`.
fn msg_id(mac_key: &[u8], m: &[u8]) -> [u8; 16] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(mac_key).expect("HMAC takes any key length");
    mac.update(m);
    mac.update(&0u32.to_le_bytes()); // the length of the (empty) additional data
    let full: [u8; 32] = mac.finalize().into_bytes().into();
    let mut id = [0; 16];
    id.copy_from_slice(&full[..16]);
    id
}

/// The AES key and IV for message id `id` under `enc_key`.
fn aes_key_iv(enc_key: &[u8], id: &[u8; 16]) -> ([u8; 32], [u8; 16]) {
    let a = hmac512(enc_key, id);
    let mut key = [0; 32];
    let mut iv = [0; 16];
    key.copy_from_slice(&a[..32]);
    iv.copy_from_slice(&a[32..48]);
    (key, iv)
}

/// Encrypts `data` under `secret` with a random prefix.
pub fn encrypt(data: &[u8], secret: &[u8; 32]) -> Vec<u8> {
    let mut prefix = vec![0; prefix_len(data.len())];
    rand::thread_rng().fill_bytes(&mut prefix);
    encrypt_with_prefix(data, secret, &mut prefix)
}

/// Encrypts `data` under `secret` with the given prefix bytes (whose first byte is set to
/// the prefix length). For test vectors; [`encrypt`] draws the prefix at random.
pub fn encrypt_with_prefix(data: &[u8], secret: &[u8; 32], prefix: &mut [u8]) -> Vec<u8> {
    debug_assert_eq!(prefix.len(), prefix_len(data.len()));
    // 16..=31, so it fits a byte.
    prefix[0] = u8::try_from(prefix.len()).unwrap_or(u8::MAX);
    let k = hmac512(secret, b"tde2e_encrypt_data");
    let (enc_key, mac_key) = k.split_at(32);
    let mut m = Vec::with_capacity(16 + prefix.len() + data.len());
    m.extend_from_slice(prefix);
    m.extend_from_slice(data);
    let id = msg_id(mac_key, &m);
    let (key, iv) = aes_key_iv(enc_key, &id);
    let len = m.len();
    let encrypted = Encryptor::new(&key.into(), &iv.into())
        .encrypt_padded_mut::<NoPadding>(&mut m, len)
        .map(<[u8]>::len)
        .unwrap_or(0);
    debug_assert_eq!(encrypted, len, "whole blocks by construction");
    let mut out = Vec::with_capacity(16 + len);
    out.extend_from_slice(&id);
    out.extend_from_slice(&m);
    out
}

/// Decrypts what [`encrypt`] made under `secret`.
pub fn decrypt(data: &[u8], secret: &[u8; 32]) -> Result<Vec<u8>, CipherError> {
    if data.len() < 16 || !data.len().is_multiple_of(16) {
        return Err(CipherError::BadLength(data.len()));
    }
    let (id, body) = data.split_at(16);
    let id: [u8; 16] = id
        .try_into()
        .map_err(|_| CipherError::BadLength(data.len()))?;
    let k = hmac512(secret, b"tde2e_encrypt_data");
    let (enc_key, mac_key) = k.split_at(32);
    let (key, iv) = aes_key_iv(enc_key, &id);
    let mut m = body.to_vec();
    Decryptor::new(&key.into(), &iv.into())
        .decrypt_padded_mut::<NoPadding>(&mut m)
        .map_err(|_| CipherError::BadLength(data.len()))?;
    if !bool::from(msg_id(mac_key, &m).ct_eq(&id)) {
        return Err(CipherError::MsgIdMismatch);
    }
    let p = usize::from(*m.first().ok_or(CipherError::BadPrefix)?);
    if p < 16 || p > m.len() {
        return Err(CipherError::BadPrefix);
    }
    Ok(m[p..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prefix_lengths_fill_whole_blocks() {
        for n in 0..100 {
            let p = prefix_len(n);
            assert!((16..=31).contains(&p), "{n}: {p}");
            assert_eq!((p + n) % 16, 0);
        }
    }

    #[test]
    fn tampering_and_wrong_keys_are_refused() {
        let secret = [7; 32];
        let mut c = encrypt(b"hello", &secret);
        assert_eq!(decrypt(&c, &secret).as_deref(), Ok(&b"hello"[..]));
        assert_eq!(decrypt(&c, &[8; 32]), Err(CipherError::MsgIdMismatch));
        c[20] ^= 1;
        assert_eq!(decrypt(&c, &secret), Err(CipherError::MsgIdMismatch));
        assert_eq!(decrypt(&c[..15], &secret), Err(CipherError::BadLength(15)));
        assert_eq!(decrypt(&c[..40], &secret), Err(CipherError::BadLength(40)));
        assert_eq!(decrypt(&[], &secret), Err(CipherError::BadLength(0)));
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..300), secret in any::<[u8; 32]>()) {
            let c = encrypt(&data, &secret);
            prop_assert_eq!(c.len(), 16 + prefix_len(data.len()) + data.len());
            prop_assert_eq!(decrypt(&c, &secret), Ok(data));
        }

        #[test]
        fn any_bytes_decrypt_to_an_error_or_data_never_a_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decrypt(&data, &[1; 32]);
        }
    }
}
