//! RA-TLS for COCOON: the PoW gate, attested mutual TLS with self-signed Ed25519
//! certificates carrying TDX quotes, quote parsing and verification, and policies.
//!
//! Roles use [`transport::AttestedListener`] and [`transport::dial`]; both return a
//! [`transport::AttestedStream`] (TLS over TCP) plus the peer's verified
//! [`policy::PeerIdentity`]. Certificates come from a [`tls::CertResolver`], which can
//! renew itself in the background without touching established connections.

#![forbid(unsafe_code)]

//! ```no_run
//! use std::sync::Arc;
//! use cocoon_attest::{dial, AttestedListener, CertResolver, ClientConfig, Policy, ServerConfig, TeeMode};
//! # async fn demo() -> Result<(), cocoon_attest::AttestError> {
//! let me = CertResolver::new(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng), TeeMode::FakeTdx)?;
//! let _renewal = me.spawn_renewal(std::time::Duration::from_secs(3600));
//! let listener = AttestedListener::bind("0.0.0.0:8443", ServerConfig::new(me.clone(), Arc::new(Policy::fake_tdx()))?).await?;
//! let (stream, peer) = listener.accept().await?.establish().await?;      // server side
//! let (stream2, peer2) = dial("10.0.0.2:8443", &ClientConfig::new(me, Arc::new(Policy::fake_tdx()))?).await?; // client side
//! println!("{} {}", hex::encode(peer.image_hash), peer2.to_json());
//! # drop((stream, stream2)); Ok(()) }
//! ```
//!
//! TLS 1.3 note: the client finishes its handshake before the server has judged the
//! client certificate, so a client learns that the server refused it on its first read.

#![warn(missing_docs)]

pub mod cert;
pub mod dcap;
pub mod pccs;
pub mod policy;
pub mod pow;
pub mod quote;
pub mod router;
pub mod seal;
pub mod sev;
pub mod tee;
pub mod tls;
pub mod transport;

pub use policy::{PeerIdentity, PeerTee, Policy, PolicyConfig, PolicyKind};
pub use tee::TeeMode;
pub use tls::CertResolver;
pub use transport::{dial, AttestedListener, AttestedStream, ClientConfig, ServerConfig};

/// Every error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The peer certificate is structurally unacceptable.
    #[error(transparent)]
    Cert(#[from] cert::CertError),
    /// The quote could not be parsed.
    #[error("invalid TDX quote: {0}")]
    Quote(#[from] quote::QuoteError),
    /// Real TDX verification failed.
    #[error(transparent)]
    Dcap(#[from] dcap::DcapError),
    /// The PoW gate failed.
    #[error(transparent)]
    Pow(#[from] pow::PowError),
    /// This node could not produce its own evidence.
    #[error(transparent)]
    Tee(#[from] tee::TeeError),
    /// The policy needs evidence but the certificate carries none.
    #[error("peer certificate carries no TEE evidence (TDX quote or SEV-SNP report), but policy {0} requires it")]
    MissingEvidence(PolicyKind),
    /// A fake TDX quote is 64 bytes (ours) or a 496-byte serialized report (COCOON's).
    #[error("fake TDX quote must be 64 or 496 bytes, got {0}")]
    FakeQuoteSize(usize),
    /// The SEV-SNP evidence did not verify.
    #[error("SEV-SNP: {0}")]
    Snp(#[from] sev::SnpError),
    /// A fake SEV-SNP report was offered to a port that requires real SEV-SNP.
    #[error("a fake SEV-SNP report is not accepted by policy tee")]
    FakeSevRejected,
    /// The launch measurement is not in the allow-list.
    #[error("SEV-SNP measurement {0} is not allowed by policy")]
    MeasurementNotAllowed(String),
    /// A fake TDX quote was offered to a port that requires real TDX.
    #[error("fake TDX quote is not accepted by policy tee")]
    FakeQuoteRejected,
    /// SGX quotes are not accepted for TLS.
    #[error("SGX quotes are not accepted for TLS")]
    SgxRejected,
    /// The quote is not bound to the certificate key.
    #[error("quote REPORTDATA does not match SHA-512 of the certificate public key")]
    ReportDataMismatch,
    /// MRTD not in the allow-list.
    #[error("MRTD {0} is not allowed by policy")]
    MrtdNotAllowed(String),
    /// RTMR tuple not in the allow-list.
    #[error("RTMR values are not allowed by policy")]
    RtmrNotAllowed,
    /// Image hash not in the allow-list.
    #[error("image hash {0} is not allowed by policy")]
    ImageHashNotAllowed(String),
    /// Collateral root hash not in the allow-list.
    #[error("collateral root hash {0} is not allowed by policy")]
    RootHashNotAllowed(String),
    /// An official COCOON router's peer-info prefix could not be read.
    #[error(transparent)]
    Router(#[from] router::PeerInfoError),
    /// Bad configuration (policy TOML, URLs, key files).
    #[error("configuration error: {0}")]
    Config(String),
    /// The TLS handshake failed (the message includes the verifier's reason).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// A phase did not finish in time.
    #[error("{0} timed out after {1:?}")]
    Timeout(&'static str, std::time::Duration),
    /// Socket error outside the PoW gate and TLS.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
