//! The JSON envelope (reference §2.8.1, §2.8.5): which fields of a request or answer are
//! encrypted, how values are written (`ENC_<hex>`, or `DEC_…` for plaintext on purpose),
//! and the four envelope fields that name the keys and the nonce.

use base64::Engine;
use rand::RngCore;
use serde_json::{Map, Value};

use crate::cipher::{self, CipherError};
use crate::keys::{self, Direction, KeyError};

/// Keys whose values are never encrypted, at any depth.
pub const PLAIN_KEYS: [&str; 12] = [
    "is_encrypted",
    "sender_public_key",
    "receiver_public_key",
    "encryption_nonce",
    "model",
    "max_completion_tokens",
    "max_tokens",
    "max_coefficient",
    "timeout",
    "debug",
    "enable_debug",
    "request_guid",
];

/// Why a body could not be encrypted or decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The body is not a JSON object.
    #[error("an encrypted body must be a JSON object")]
    NotAnObject,
    /// A key is refused.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Our key is not the one the envelope names.
    #[error("public key mismatch")]
    PublicKeyMismatch,
    /// An envelope field is missing or not a string.
    #[error("not all encryption-related fields are present")]
    MissingFields,
    /// A value to decrypt is neither `ENC_<hex>` nor `DEC_<text>`.
    #[error("bad encryption method at {0}")]
    BadMethod(String),
    /// A value's ciphertext is refused.
    #[error("cannot decrypt {path}: {source}")]
    Cipher {
        /// Where in the body.
        path: String,
        /// Why.
        #[source]
        source: CipherError,
    },
    /// A decrypted value is not UTF-8.
    #[error("decrypted value at {0} is not UTF-8")]
    NotUtf8(String),
}

/// Whether a body carries the envelope (`is_encrypted` present).
pub fn is_encrypted(body: &Value) -> bool {
    body.get("is_encrypted").is_some()
}

/// A decrypted body and who sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    /// The body with every encrypted value in plain text (the envelope fields stay).
    pub body: Value,
    /// The sender's public key (`sender_public_key`): what to encrypt the answer to.
    pub sender: [u8; 32],
}

/// Encrypts `body` (a JSON object) from our Ed25519 `seed` to `peer`, with a fresh nonce and
/// random prefixes; adds the envelope fields.
pub fn seal(
    body: &Value,
    seed: &[u8; 32],
    peer: &[u8; 32],
    direction: Direction,
) -> Result<Value, EnvelopeError> {
    let mut nonce = [0; 32];
    rand::thread_rng().fill_bytes(&mut nonce);
    seal_with(body, seed, peer, direction, &nonce, &mut |n| {
        let mut prefix = vec![0; cipher::prefix_len(n)];
        rand::thread_rng().fill_bytes(&mut prefix);
        prefix
    })
}

/// [`seal`] with a given nonce and prefixes (`prefix(n)` for `n` bytes of data), for test
/// vectors.
pub fn seal_with(
    body: &Value,
    seed: &[u8; 32],
    peer: &[u8; 32],
    direction: Direction,
    nonce: &[u8; 32],
    prefix: &mut dyn FnMut(usize) -> Vec<u8>,
) -> Result<Value, EnvelopeError> {
    let Value::Object(fields) = body else {
        return Err(EnvelopeError::NotAnObject);
    };
    let nonce_text = base64::engine::general_purpose::STANDARD.encode(nonce);
    let shared = keys::shared_secret(seed, peer)?;
    let secret = keys::message_secret(&shared, &nonce_text, direction);
    let mut out = Map::new();
    for (key, value) in fields {
        let sealed = if PLAIN_KEYS.contains(&key.as_str()) {
            value.clone()
        } else {
            seal_value(value, &secret, prefix)
        };
        out.insert(key.clone(), sealed);
    }
    out.insert("is_encrypted".into(), "v1".into());
    out.insert(
        "sender_public_key".into(),
        hex::encode(keys::public_key(seed)).into(),
    );
    out.insert("receiver_public_key".into(), hex::encode(peer).into());
    out.insert("encryption_nonce".into(), nonce_text.into());
    Ok(Value::Object(out))
}

fn seal_value(value: &Value, secret: &[u8; 32], prefix: &mut dyn FnMut(usize) -> Vec<u8>) -> Value {
    match value {
        Value::String(s) => {
            let mut p = prefix(s.len());
            let c = cipher::encrypt_with_prefix(s.as_bytes(), secret, &mut p);
            Value::String(format!("ENC_{}", hex::encode(c)))
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| seal_value(v, secret, prefix))
                .collect(),
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    let v = if PLAIN_KEYS.contains(&k.as_str()) {
                        v.clone()
                    } else {
                        seal_value(v, secret, prefix)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Decrypts a body sealed to our Ed25519 `seed`. `expected_sender`, when given, must be the
/// envelope's sender (an app checks that the answer comes from the key it encrypted to).
pub fn open(
    body: &Value,
    seed: &[u8; 32],
    direction: Direction,
    expected_sender: Option<&[u8; 32]>,
) -> Result<Opened, EnvelopeError> {
    let Value::Object(fields) = body else {
        return Err(EnvelopeError::NotAnObject);
    };
    let text = |name: &str| {
        fields
            .get(name)
            .and_then(Value::as_str)
            .ok_or(EnvelopeError::MissingFields)
    };
    let _version = text("is_encrypted")?;
    let sender = keys::parse_public_key(text("sender_public_key")?.as_bytes())?;
    let receiver = keys::parse_public_key(text("receiver_public_key")?.as_bytes())?;
    let nonce_text = text("encryption_nonce")?;
    if receiver != keys::public_key(seed) {
        return Err(EnvelopeError::PublicKeyMismatch);
    }
    if expected_sender.is_some_and(|s| *s != sender) {
        return Err(EnvelopeError::PublicKeyMismatch);
    }
    let shared = keys::shared_secret(seed, &sender)?;
    let secret = keys::message_secret(&shared, nonce_text, direction);
    let mut out = Map::new();
    for (key, value) in fields {
        let opened = if PLAIN_KEYS.contains(&key.as_str()) {
            value.clone()
        } else {
            open_value(value, &secret, key)?
        };
        out.insert(key.clone(), opened);
    }
    Ok(Opened {
        body: Value::Object(out),
        sender,
    })
}

fn open_value(value: &Value, secret: &[u8; 32], path: &str) -> Result<Value, EnvelopeError> {
    match value {
        Value::String(s) => {
            if let Some(hex_text) = s.strip_prefix("ENC_") {
                let c =
                    hex::decode(hex_text).map_err(|_| EnvelopeError::BadMethod(path.to_owned()))?;
                let plain =
                    cipher::decrypt(&c, secret).map_err(|source| EnvelopeError::Cipher {
                        path: path.to_owned(),
                        source,
                    })?;
                String::from_utf8(plain)
                    .map(Value::String)
                    .map_err(|_| EnvelopeError::NotUtf8(path.to_owned()))
            } else if let Some(plain) = s.strip_prefix("DEC_") {
                Ok(Value::String(plain.to_owned()))
            } else {
                // Upstream's worker aborts on a selected string shorter than the prefix; any
                // such value is simply refused here.
                Err(EnvelopeError::BadMethod(path.to_owned()))
            }
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| open_value(v, secret, &format!("{path}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(fields) => {
            let mut out = Map::new();
            for (k, v) in fields {
                let opened = if PLAIN_KEYS.contains(&k.as_str()) {
                    v.clone()
                } else {
                    open_value(v, secret, &format!("{path}.{k}"))?
                };
                out.insert(k.clone(), opened);
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}
