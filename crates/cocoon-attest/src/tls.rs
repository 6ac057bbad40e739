//! rustls glue: TLS 1.3 / AES-GCM-only configs, the attestation verifier used on both
//! sides, and a certificate resolver that renews the node certificate in place.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use ed25519_dalek::SigningKey;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::cert::{issue_certificate, IssueOptions, IssuedCert, CERT_VALIDITY};
use crate::policy::{PendingPeer, Policy};
use sha2::{Digest, Sha256};

const VERIFIED_CACHE: NonZeroUsize = match NonZeroUsize::new(1024) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};
use crate::tee::{make_evidence, report_data_for_key, TeeMode};
use crate::AttestError;

/// The ring provider restricted to TLS 1.3 AES-GCM suites (COCOON's cipher list).
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    let mut p = default_provider();
    p.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
    ];
    Arc::new(p)
}

/// The certificate a node presents, renewable while connections stay up.
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
    cert_der: RwLock<Vec<u8>>,
    key: Option<SigningKey>,
    tee: TeeMode,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("tee", &self.tee)
            .finish_non_exhaustive()
    }
}

fn certified(
    provider: &CryptoProvider,
    cert_der: Vec<u8>,
    key_pkcs8: Vec<u8>,
) -> Result<CertifiedKey, AttestError> {
    let key = PrivateKeyDer::Pkcs8(key_pkcs8.into());
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| AttestError::Config(format!("unusable private key: {e}")))?;
    Ok(CertifiedKey::new(
        vec![CertificateDer::from(cert_der)],
        signer,
    ))
}

impl CertResolver {
    /// Issues a certificate for `key` with evidence of kind `tee` (blocking for real TDX).
    pub fn new(key: SigningKey, tee: TeeMode) -> Result<Arc<Self>, AttestError> {
        let issued = issue(&key, tee, SystemTime::now())?;
        let provider = provider();
        let ck = certified(&provider, issued.cert_der.clone(), issued.key_pkcs8_der)?;
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(ck)),
            cert_der: RwLock::new(issued.cert_der),
            key: Some(key),
            tee,
            provider,
        }))
    }

    /// A fixed certificate and PKCS#8 key (any algorithm rustls/ring can sign with); it
    /// cannot renew. Used for certificates loaded from files and for tests.
    pub fn from_der(cert_der: Vec<u8>, key_pkcs8_der: Vec<u8>) -> Result<Arc<Self>, AttestError> {
        let provider = provider();
        let ck = certified(&provider, cert_der.clone(), key_pkcs8_der)?;
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(ck)),
            cert_der: RwLock::new(cert_der),
            key: None,
            tee: TeeMode::None,
            provider,
        }))
    }

    /// Loads `NAME_cert.pem` / `NAME_key.pem` as written by `cocoon attest gen-cert`.
    /// Renewals re-issue with the same key and fresh evidence of kind `tee`.
    pub fn from_pem_files(
        cert_pem: &std::path::Path,
        key_pem: &std::path::Path,
        tee: TeeMode,
    ) -> Result<Arc<Self>, AttestError> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| AttestError::Config(format!("{}: {e}", p.display())))
        };
        let cert_der =
            crate::cert::pem_decode("CERTIFICATE", &read(cert_pem)?).ok_or_else(|| {
                AttestError::Config(format!("{}: no CERTIFICATE PEM block", cert_pem.display()))
            })?;
        let key = crate::cert::load_key_pem(&read(key_pem)?)?;
        let info = crate::cert::parse_certificate(&cert_der)?;
        if info.public_key != key.verifying_key().to_bytes() {
            return Err(AttestError::Config(format!(
                "{} does not belong to {}",
                key_pem.display(),
                cert_pem.display()
            )));
        }
        let provider = provider();
        let pkcs8 = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&key)
            .map_err(|e| AttestError::Config(e.to_string()))?;
        let ck = certified(&provider, cert_der.clone(), pkcs8.as_bytes().to_vec())?;
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(ck)),
            cert_der: RwLock::new(cert_der),
            key: Some(key),
            tee,
            provider,
        }))
    }

    /// The certificate currently presented (DER).
    pub fn cert_der(&self) -> Vec<u8> {
        self.cert_der.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Issues a fresh certificate (new validity window, new quote) and swaps it in; new
    /// handshakes use it, established connections are unaffected.
    pub fn renew(&self) -> Result<(), AttestError> {
        let key = self.key.as_ref().ok_or_else(|| {
            AttestError::Config("this certificate was loaded, it cannot renew".into())
        })?;
        let issued = issue(key, self.tee, SystemTime::now())?;
        let ck = certified(
            &self.provider,
            issued.cert_der.clone(),
            issued.key_pkcs8_der,
        )?;
        if let Ok(mut c) = self.current.write() {
            *c = Arc::new(ck);
        }
        if let Ok(mut c) = self.cert_der.write() {
            *c = issued.cert_der;
        }
        tracing::info!(tee = %self.tee, "renewed RA-TLS certificate");
        Ok(())
    }

    /// Renews every `every` (COCOON refreshes hourly; certificates last a day) until the
    /// returned task is aborted. Failures are logged and retried at the next tick.
    pub fn spawn_renewal(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let t = Arc::clone(&this);
                match tokio::task::spawn_blocking(move || t.renew()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "certificate renewal failed"),
                    Err(e) => tracing::warn!(error = %e, "certificate renewal task failed"),
                }
            }
        })
    }

    fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
}

/// Issues a COCOON certificate with fresh evidence (spec §7.2).
pub fn issue(
    key: &SigningKey,
    tee: TeeMode,
    not_before: SystemTime,
) -> Result<IssuedCert, AttestError> {
    let rd = report_data_for_key(&key.verifying_key().to_bytes());
    let evidence = make_evidence(tee, &rd)?;
    let opts = IssueOptions {
        not_before,
        validity: CERT_VALIDITY,
        extra_extensions: Vec::new(),
    };
    Ok(issue_certificate(key, &evidence, &opts)?)
}

impl rustls::server::ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

impl rustls::client::ResolvesClientCert for CertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.get()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The §7.1 step 4 verifier, for both directions: depth 0 only, then the synchronous
/// policy checks (Ed25519, validity, critical extensions, REPORTDATA, allow-lists).
pub(crate) struct AttestVerifier {
    policy: Arc<Policy>,
    schemes: Vec<SignatureScheme>,
    /// Results of the in-handshake check, keyed by SHA-256 of the certificate DER, so
    /// the transport does not parse and verify the certificate a second time.
    verified: Mutex<lru::LruCache<[u8; 32], PendingPeer>>,
}

impl fmt::Debug for AttestVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttestVerifier")
            .field("policy", &self.policy.kind())
            .finish()
    }
}

impl AttestVerifier {
    pub(crate) fn new(policy: Arc<Policy>, provider: &CryptoProvider) -> Self {
        // Advertise every scheme so a non-Ed25519 peer reaches the certificate check and
        // gets a precise error; only Ed25519 certificates ever pass it.
        Self {
            policy,
            schemes: provider
                .signature_verification_algorithms
                .supported_schemes(),
            verified: Mutex::new(lru::LruCache::new(VERIFIED_CACHE)),
        }
    }

    /// The policy this verifier applies.
    pub(crate) fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Takes the in-handshake result for `der`, if still cached.
    pub(crate) fn take_verified(&self, der: &[u8]) -> Option<PendingPeer> {
        let key: [u8; 32] = Sha256::digest(der).into();
        self.verified.lock().ok()?.pop(&key)
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let r = if intermediates.is_empty() {
            self.policy
                .check_cert(end_entity.as_ref(), now.as_secs() as i64)
                .map(|pending| {
                    let key: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
                    if let Ok(mut c) = self.verified.lock() {
                        c.put(key, pending);
                    }
                })
        } else {
            Err(crate::cert::CertError::ChainTooLong(intermediates.len()).into())
        };
        r.map_err(|e| {
            tracing::warn!(error = %e, "peer certificate rejected");
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        })
    }

    fn tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ));
        }
        let public_key = crate::cert::ed25519_public_key(cert.as_ref()).map_err(|e| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        })?;
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&public_key).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let sig = ed25519_dalek::Signature::from_slice(dss.signature()).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
        })?;
        vk.verify_strict(message, &sig).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
        })?;
        Ok(HandshakeSignatureValid::assertion())
    }
}

impl ServerCertVerifier for AttestVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

impl ClientCertVerifier for AttestVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// A rustls server config: TLS 1.3, AES-GCM, mandatory client certs, no tickets.
pub fn rustls_server_config(
    resolver: Arc<CertResolver>,
    policy: Arc<Policy>,
) -> Result<rustls::ServerConfig, AttestError> {
    let verifier = Arc::new(AttestVerifier::new(policy, &provider()));
    server_config_with(resolver, verifier)
}

pub(crate) fn server_config_with(
    resolver: Arc<CertResolver>,
    verifier: Arc<AttestVerifier>,
) -> Result<rustls::ServerConfig, AttestError> {
    let provider = provider();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| AttestError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    cfg.send_tls13_tickets = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(cfg)
}

/// A rustls client config: TLS 1.3, AES-GCM, client cert, no resumption.
pub fn rustls_client_config(
    resolver: Arc<CertResolver>,
    policy: Arc<Policy>,
) -> Result<rustls::ClientConfig, AttestError> {
    let verifier = Arc::new(AttestVerifier::new(policy, &provider()));
    client_config_with(resolver, verifier)
}

pub(crate) fn client_config_with(
    resolver: Arc<CertResolver>,
    verifier: Arc<AttestVerifier>,
) -> Result<rustls::ClientConfig, AttestError> {
    let provider = provider();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| AttestError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(resolver);
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[0x5a; 32])
    }

    #[test]
    fn chains_are_refused() {
        let issued = issue(&key(), TeeMode::FakeTdx, SystemTime::now()).unwrap();
        let v = AttestVerifier::new(Arc::new(Policy::fake_tdx()), &provider());
        let c = CertificateDer::from(issued.cert_der.clone());
        let now = UnixTime::now();
        assert!(ClientCertVerifier::verify_client_cert(&v, &c, &[], now).is_ok());
        let err = ClientCertVerifier::verify_client_cert(&v, &c, std::slice::from_ref(&c), now)
            .unwrap_err();
        let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) = err else {
            panic!("unexpected {err:?}")
        };
        assert_eq!(
            o.0.to_string(),
            "certificate chain depth 1 is not allowed, only a single self-signed certificate"
        );
    }

    #[test]
    fn pem_files_load_and_renew() {
        let dir = std::env::temp_dir().join(format!("cocoon-tls-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let issued = issue(&key(), TeeMode::FakeTdx, SystemTime::now()).unwrap();
        std::fs::write(dir.join("n_cert.pem"), issued.cert_pem()).unwrap();
        std::fs::write(dir.join("n_key.pem"), issued.key_pem()).unwrap();
        let r = CertResolver::from_pem_files(
            &dir.join("n_cert.pem"),
            &dir.join("n_key.pem"),
            TeeMode::FakeTdx,
        )
        .unwrap();
        assert_eq!(r.cert_der(), issued.cert_der);
        r.renew().unwrap();
        assert_ne!(r.cert_der(), issued.cert_der);
        // A key that does not match the certificate is refused.
        let other = issue(
            &SigningKey::from_bytes(&[1; 32]),
            TeeMode::None,
            SystemTime::now(),
        )
        .unwrap();
        std::fs::write(dir.join("o_key.pem"), other.key_pem()).unwrap();
        let e = CertResolver::from_pem_files(
            &dir.join("n_cert.pem"),
            &dir.join("o_key.pem"),
            TeeMode::FakeTdx,
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not belong to"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
