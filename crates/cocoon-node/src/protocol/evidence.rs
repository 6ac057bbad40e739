//! Attestation evidence for apps (`GET /v1/attestation` on the client gateway): each
//! party — the proxy and every serving worker — signs the app's nonce with the Ed25519 key
//! its RA-TLS certificate attests, and sends the certificate with it. The signed message is
//! `"cocoon-rs attestation v1\0" ++ nonce ++ SHA-256(certificate DER)`, so an answer for
//! another nonce, or with another certificate, does not verify. An app checks it with any
//! Ed25519 library (the certificate's public key), the quote or report inside the
//! certificate with its TEE vendor's tools, and the verdicts of the roles that verified it.

use std::sync::Arc;

use cocoon_attest::CertResolver;
use cocoon_tl::types::cocoonrs;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// Domain separation of the signed message.
pub const CONTEXT: &[u8] = b"cocoon-rs attestation v1\0";

/// Longest nonce accepted (bytes).
pub const MAX_NONCE: usize = 64;

/// The message a party signs for `nonce` with `certificate`.
pub fn message(nonce: &[u8], certificate: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + nonce.len() + 32);
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(nonce);
    m.extend_from_slice(&Sha256::digest(certificate));
    m
}

/// Why a piece of evidence does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// The certificate does not parse or has no Ed25519 key.
    #[error("the certificate is not a COCOON certificate: {0}")]
    Certificate(String),
    /// The signature is not the certificate key's over this nonce.
    #[error("the nonce is not signed by the certificate's key")]
    Signature,
    /// The key the proxy verified at connection is not the certificate's.
    #[error("the certificate's key is not the one the proxy verified")]
    KeyMismatch,
}

/// Checks `e` for `nonce`: the signature is the certificate key's; returns that key.
pub fn check(e: &cocoonrs::Evidence, nonce: &[u8]) -> Result<[u8; 32], EvidenceError> {
    let key = cocoon_attest::cert::ed25519_public_key(&e.certificate)
        .map_err(|err| EvidenceError::Certificate(err.to_string()))?;
    let verifying = VerifyingKey::from_bytes(&key)
        .map_err(|err| EvidenceError::Certificate(err.to_string()))?;
    let signature = Signature::from_slice(&e.signature).map_err(|_| EvidenceError::Signature)?;
    verifying
        .verify(&message(nonce, &e.certificate), &signature)
        .map_err(|_| EvidenceError::Signature)?;
    if e.verified_key != [0; 32] && e.verified_key != key {
        return Err(EvidenceError::KeyMismatch);
    }
    Ok(key)
}

/// What a role answers `cocoonrs.getAttestation` with: its node key and its current
/// certificate.
#[derive(Clone)]
pub struct Attester {
    key: SigningKey,
    certs: Arc<CertResolver>,
}

impl std::fmt::Debug for Attester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attester").finish_non_exhaustive()
    }
}

impl Attester {
    /// An attester signing with `key`, whose certificate `certs` serves.
    pub fn new(key: SigningKey, certs: Arc<CertResolver>) -> Self {
        Attester { key, certs }
    }

    /// This party's evidence for `nonce` (verdict fields empty: a verifier fills them).
    pub fn evidence(&self, role: &str, model: &str, nonce: &[u8]) -> cocoonrs::Evidence {
        let certificate = self.certs.cert_der();
        let signature = self
            .key
            .sign(&message(nonce, &certificate))
            .to_bytes()
            .to_vec();
        cocoonrs::Evidence {
            role: role.into(),
            model: model.into(),
            certificate,
            signature,
            verified_key: [0; 32],
            verified_image_hash: [0; 32],
            verified_policy: String::new(),
            verified_at: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attester() -> Attester {
        let key = SigningKey::from_bytes(&[7; 32]);
        let certs = CertResolver::new(key.clone(), cocoon_attest::TeeMode::FakeTdx).expect("cert");
        Attester::new(key, certs)
    }

    #[test]
    fn evidence_verifies_for_its_nonce_only() {
        let a = attester();
        let e = a.evidence("worker", "m", b"nonce-1");
        let key = check(&e, b"nonce-1").expect("valid");
        assert_eq!(
            key,
            SigningKey::from_bytes(&[7; 32]).verifying_key().to_bytes()
        );
        assert_eq!(check(&e, b"nonce-2"), Err(EvidenceError::Signature));
        let mut other_cert = e.clone();
        other_cert.certificate.push(0);
        assert!(check(&other_cert, b"nonce-1").is_err());
        let mut verified = e.clone();
        verified.verified_key = key;
        assert!(check(&verified, b"nonce-1").is_ok());
        verified.verified_key = [1; 32];
        assert_eq!(
            check(&verified, b"nonce-1"),
            Err(EvidenceError::KeyMismatch)
        );
    }
}
