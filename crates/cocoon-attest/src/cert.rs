//! COCOON RA-TLS certificates (spec §7.2): self-signed Ed25519 X.509 v3 certificates
//! carrying the TDX quote and user claims as critical private extensions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use rand::RngCore;
use x509_parser::prelude::{FromDer, X509Certificate};

/// OID of the TDX quote extension, `1.3.6.1.4.1.12345.1`.
pub const OID_TDX_QUOTE: &[u64] = &[1, 3, 6, 1, 4, 1, 12345, 1];
/// OID of the user-claims extension, `1.3.6.1.4.1.12345.2`.
pub const OID_TDX_USER_CLAIMS: &[u64] = &[1, 3, 6, 1, 4, 1, 12345, 2];
/// OID of the SEV-SNP report-data extension (the 64-byte hash), `1.3.6.1.4.1.12345.100`.
pub const OID_SEV_REPORT_DATA: &[u64] = &[1, 3, 6, 1, 4, 1, 12345, 100];
/// OID of the SEV-SNP attestation report extension (1184 bytes), `1.3.6.1.4.1.12345.101`.
pub const OID_SEV_REPORT: &[u64] = &[1, 3, 6, 1, 4, 1, 12345, 101];
/// OID of the SEV-SNP VCEK extension (the certificate's PEM text), `1.3.6.1.4.1.12345.102`.
pub const OID_SEV_VCEK: &[u64] = &[1, 3, 6, 1, 4, 1, 12345, 102];
/// Validity period of a COCOON certificate.
pub const CERT_VALIDITY: Duration = Duration::from_secs(86_400);
/// Largest certificate accepted for parsing.
pub const MAX_CERT_LEN: usize = 64 * 1024;

const TDX_QUOTE_OID_STR: &str = "1.3.6.1.4.1.12345.1";
const TDX_USER_CLAIMS_OID_STR: &str = "1.3.6.1.4.1.12345.2";
const SEV_REPORT_DATA_OID_STR: &str = "1.3.6.1.4.1.12345.100";
const SEV_REPORT_OID_STR: &str = "1.3.6.1.4.1.12345.101";
const SEV_VCEK_OID_STR: &str = "1.3.6.1.4.1.12345.102";
/// Largest VCEK extension accepted (a PEM certificate is about 2 KiB).
const MAX_VCEK_LEN: usize = 16 * 1024;
const ED25519_OID_STR: &str = "1.3.101.112";
/// DER of `AlgorithmIdentifier { id-Ed25519 }` followed by the BIT STRING header of a
/// 64-byte signature: the fixed tail of every Ed25519 certificate.
const ED25519_SIG_TAIL: [u8; 10] = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x41, 0x00];
/// Critical extensions a verifier understands besides the two COCOON ones.
const KNOWN_CRITICAL: &[&str] = &[
    "2.5.29.14", // subjectKeyIdentifier
    "2.5.29.15", // keyUsage
    "2.5.29.17", // subjectAltName
    "2.5.29.19", // basicConstraints
    "2.5.29.35", // authorityKeyIdentifier
    "2.5.29.37", // extKeyUsage
];
/// DER of `SEQUENCE { id-kp-serverAuth, id-kp-clientAuth }`.
const EKU_SERVER_CLIENT: &[u8] = &[
    0x30, 0x14, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01, 0x06, 0x08, 0x2b, 0x06,
    0x01, 0x05, 0x05, 0x07, 0x03, 0x02,
];

/// Why a certificate is unacceptable or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// Not DER X.509, or trailing garbage.
    #[error("certificate is not valid X.509 DER: {0}")]
    Malformed(String),
    /// The certificate is larger than [`MAX_CERT_LEN`].
    #[error("certificate too large: {0} bytes")]
    TooLarge(usize),
    /// An X.509 version other than 1 (what COCOON's generator writes: the version field
    /// left out, the v3 extensions still present) or 3.
    #[error("certificate is X.509 version {0}: only versions 1 (as COCOON writes them) and 3 are accepted")]
    UnsupportedVersion(u32),
    /// The peer sent a chain instead of one self-signed certificate.
    #[error("certificate chain depth {0} is not allowed, only a single self-signed certificate")]
    ChainTooLong(usize),
    /// The public key algorithm is not Ed25519.
    #[error("certificate key is not Ed25519 (algorithm {0})")]
    NotEd25519(String),
    /// The signature algorithm is not Ed25519.
    #[error("certificate signature algorithm is not Ed25519 ({0})")]
    SignatureNotEd25519(String),
    /// The Ed25519 key is not 32 bytes or not a valid point.
    #[error("certificate has an invalid Ed25519 public key")]
    BadPublicKey,
    /// Issuer differs from subject.
    #[error("certificate is not self-signed: issuer differs from subject")]
    NotSelfIssued,
    /// The self-signature does not verify.
    #[error("certificate self-signature is invalid")]
    BadSignature,
    /// A critical extension the verifier does not know.
    #[error("certificate has unknown critical extension {0}")]
    UnknownCriticalExtension(String),
    /// The same extension appears twice.
    #[error("certificate has duplicate extension {0}")]
    DuplicateExtension(String),
    /// Quote extension larger than 32 KiB.
    #[error("certificate quote extension too large: {0} bytes")]
    QuoteTooLarge(usize),
    /// TDX and SEV-SNP evidence in one certificate.
    #[error("certificate carries both TDX and SEV-SNP evidence; they are mutually exclusive")]
    MixedTee,
    /// Some of the three SEV-SNP extensions are missing.
    #[error("certificate has an incomplete set of SEV-SNP extensions (missing {0})")]
    IncompleteSev(&'static str),
    /// An SEV-SNP extension of an impossible size.
    #[error("certificate SEV-SNP extension {0} is {1} bytes")]
    SevExtensionSize(&'static str, usize),
    /// `now` is before notBefore.
    #[error("certificate is not yet valid (notBefore {not_before}, now {now})")]
    NotYetValid {
        /// notBefore, unix seconds.
        not_before: i64,
        /// Verification time, unix seconds.
        now: i64,
    },
    /// `now` is after notAfter.
    #[error("certificate has expired (notAfter {not_after}, now {now})")]
    Expired {
        /// notAfter, unix seconds.
        not_after: i64,
        /// Verification time, unix seconds.
        now: i64,
    },
    /// rcgen failed to build a certificate.
    #[error("cannot build certificate: {0}")]
    Build(String),
}

/// What a verifier learns from a structurally valid COCOON certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The Ed25519 public key (the peer's identity in this connection).
    pub public_key: [u8; 32],
    /// notBefore, unix seconds.
    pub not_before: i64,
    /// notAfter, unix seconds.
    pub not_after: i64,
    /// Contents of the TDX quote extension, if present.
    pub quote: Option<Vec<u8>>,
    /// Contents of the user-claims extension, if present (ignored by verification).
    pub user_claims: Option<Vec<u8>>,
    /// The SEV-SNP evidence, if present (never together with a TDX quote).
    pub sev: Option<SevEvidence>,
}

/// The three SEV-SNP extensions of a certificate (cocoon-protocol-9060ce5.md §7.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SevEvidence {
    /// `.100`: the 64-byte hash the report was requested with (SHA-512 of the key).
    pub report_data: Vec<u8>,
    /// `.101`: the raw SNP attestation report.
    pub report: Vec<u8>,
    /// `.102`: the VCEK certificate, PEM text.
    pub vcek_pem: Vec<u8>,
}

impl SevEvidence {
    /// The report's `report_data` field, read from the raw bytes (fake reports, COCOON's
    /// too, do not parse as real ones). The report is [`crate::sev::REPORT_LEN`] bytes, as
    /// [`parse_certificate`] ensures.
    pub fn report_field_data(&self) -> Option<[u8; 64]> {
        self.report.get(0x50..0x90)?.try_into().ok()
    }

    /// The report's launch measurement, read from the raw bytes.
    pub fn measurement(&self) -> Option<[u8; 48]> {
        self.report.get(0x90..0xC0)?.try_into().ok()
    }

    /// Whether the report is a fake one (ours and COCOON's): zeros where the signature goes.
    pub fn is_fake(&self) -> bool {
        self.report
            .get(crate::sev::SIGNED_LEN..)
            .is_some_and(|s| s.iter().all(|b| *b == 0))
    }
}

impl CertInfo {
    /// Checks notBefore ≤ `now` ≤ notAfter.
    pub fn check_time(&self, now: i64) -> Result<(), CertError> {
        if now < self.not_before {
            return Err(CertError::NotYetValid {
                not_before: self.not_before,
                now,
            });
        }
        if now > self.not_after {
            return Err(CertError::Expired {
                not_after: self.not_after,
                now,
            });
        }
        Ok(())
    }
}

/// The canonical DER header of a SEQUENCE whose content is `len` bytes long.
fn der_sequence_header(len: usize) -> Vec<u8> {
    let mut out = vec![0x30];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out
}

/// Parses a certificate and applies every structural rule of spec §7.1 step 4 except the
/// time check and the policy: v3, Ed25519 key and signature, valid self-signature,
/// issuer = subject, no unknown critical extensions, quote ≤ 32 KiB. Never panics.
pub fn parse_certificate(der: &[u8]) -> Result<CertInfo, CertError> {
    if der.len() > MAX_CERT_LEN {
        return Err(CertError::TooLarge(der.len()));
    }
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| CertError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    // COCOON's certificate generator never sets the version field, so every official
    // certificate is version 1 (0) carrying v3 extensions; ours are version 3 (2).
    match cert.version().0 {
        0 | 2 => {}
        other => return Err(CertError::UnsupportedVersion(other + 1)),
    }
    let spki = cert.public_key();
    let key_alg = spki.algorithm.algorithm.to_id_string();
    if key_alg != ED25519_OID_STR {
        return Err(CertError::NotEd25519(describe_alg(&key_alg)));
    }
    let sig_alg = cert.signature_algorithm.algorithm.to_id_string();
    if sig_alg != ED25519_OID_STR {
        return Err(CertError::SignatureNotEd25519(describe_alg(&sig_alg)));
    }
    // The outer signatureAlgorithm and signature are not covered by the signature, so
    // demand their one canonical Ed25519 encoding instead of trusting a lenient parser.
    let tail_ok = der.len() > 74 && der[der.len() - 74..der.len() - 64] == ED25519_SIG_TAIL;
    if !tail_ok {
        return Err(CertError::Malformed(
            "signature part is not canonical Ed25519 DER".into(),
        ));
    }
    // The outer SEQUENCE header is not signed either: it must be the one canonical DER
    // header directly followed by the signed TBS bytes and the tail checked above.
    let tbs_raw = cert.tbs_certificate.as_ref();
    let header = der_sequence_header(tbs_raw.len() + 74);
    let canonical = der.len() == header.len() + tbs_raw.len() + 74
        && der[..header.len()] == header[..]
        && der[header.len()..header.len() + tbs_raw.len()] == *tbs_raw;
    if !canonical {
        return Err(CertError::Malformed(
            "outer certificate SEQUENCE is not canonical DER".into(),
        ));
    }
    let public_key: [u8; 32] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| CertError::BadPublicKey)?;
    let vk = VerifyingKey::from_bytes(&public_key).map_err(|_| CertError::BadPublicKey)?;
    if cert.issuer().as_raw() != cert.subject().as_raw() {
        return Err(CertError::NotSelfIssued);
    }
    let sig = Signature::from_slice(cert.signature_value.data.as_ref())
        .map_err(|_| CertError::BadSignature)?;
    vk.verify_strict(cert.tbs_certificate.as_ref(), &sig)
        .map_err(|_| CertError::BadSignature)?;

    let mut quote = None;
    let mut user_claims = None;
    let (mut sev_data, mut sev_report, mut sev_vcek) = (None, None, None);
    let mut seen: Vec<String> = Vec::new();
    for ext in cert.extensions() {
        let oid = ext.oid.to_id_string();
        if seen.contains(&oid) {
            return Err(CertError::DuplicateExtension(oid));
        }
        match oid.as_str() {
            TDX_QUOTE_OID_STR => {
                if ext.value.len() > crate::quote::MAX_QUOTE_LEN {
                    return Err(CertError::QuoteTooLarge(ext.value.len()));
                }
                quote = Some(ext.value.to_vec());
            }
            TDX_USER_CLAIMS_OID_STR => user_claims = Some(ext.value.to_vec()),
            SEV_REPORT_DATA_OID_STR => {
                if ext.value.len() != 64 {
                    return Err(CertError::SevExtensionSize("report data", ext.value.len()));
                }
                sev_data = Some(ext.value.to_vec());
            }
            SEV_REPORT_OID_STR => {
                if ext.value.len() != crate::sev::REPORT_LEN {
                    return Err(CertError::SevExtensionSize("report", ext.value.len()));
                }
                sev_report = Some(ext.value.to_vec());
            }
            SEV_VCEK_OID_STR => {
                if ext.value.len() > MAX_VCEK_LEN {
                    return Err(CertError::SevExtensionSize("VCEK", ext.value.len()));
                }
                sev_vcek = Some(ext.value.to_vec());
            }
            other if ext.critical && !KNOWN_CRITICAL.contains(&other) => {
                return Err(CertError::UnknownCriticalExtension(oid));
            }
            _ => {}
        }
        seen.push(oid);
    }
    let sev = match (sev_data, sev_report, sev_vcek) {
        (None, None, None) => None,
        (Some(report_data), Some(report), Some(vcek_pem)) => Some(SevEvidence {
            report_data,
            report,
            vcek_pem,
        }),
        (None, _, _) => return Err(CertError::IncompleteSev("report data (.100)")),
        (_, None, _) => return Err(CertError::IncompleteSev("report (.101)")),
        (_, _, None) => return Err(CertError::IncompleteSev("VCEK (.102)")),
    };
    if sev.is_some() && quote.is_some() {
        return Err(CertError::MixedTee);
    }
    Ok(CertInfo {
        public_key,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        quote,
        user_claims,
        sev,
    })
}

/// Extracts the Ed25519 public key of a certificate without checking anything else
/// (used for the TLS handshake signature, after [`parse_certificate`] already ran).
pub fn ed25519_public_key(der: &[u8]) -> Result<[u8; 32], CertError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| CertError::Malformed(e.to_string()))?;
    let spki = cert.public_key();
    let key_alg = spki.algorithm.algorithm.to_id_string();
    if key_alg != ED25519_OID_STR {
        return Err(CertError::NotEd25519(describe_alg(&key_alg)));
    }
    spki.subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| CertError::BadPublicKey)
}

fn describe_alg(oid: &str) -> String {
    let name = match oid {
        "1.2.840.113549.1.1.1" => "RSA",
        "1.2.840.10045.2.1" => "ECDSA",
        "1.2.840.113549.1.1.11" => "RSA-SHA256",
        "1.2.840.10045.4.3.2" => "ECDSA-SHA256",
        "1.2.840.10045.4.3.3" => "ECDSA-SHA384",
        "1.3.101.113" => "Ed448",
        _ => return oid.to_string(),
    };
    format!("{name}, {oid}")
}

/// Options for [`issue_certificate`].
#[derive(Debug, Clone)]
pub struct IssueOptions {
    /// notBefore (COCOON: now, or TON time with `gen-cert-synced`).
    pub not_before: SystemTime,
    /// notAfter − notBefore; COCOON uses one day.
    pub validity: Duration,
    /// Extra extensions `(oid, DER content, critical)`; used by tests to craft bad certs.
    pub extra_extensions: Vec<(Vec<u64>, Vec<u8>, bool)>,
}

impl Default for IssueOptions {
    fn default() -> Self {
        Self {
            not_before: SystemTime::now(),
            validity: CERT_VALIDITY,
            extra_extensions: Vec::new(),
        }
    }
}

/// A freshly issued certificate with its key, ready for files or rustls.
#[derive(Clone)]
pub struct IssuedCert {
    /// DER of the certificate.
    pub cert_der: Vec<u8>,
    /// PKCS#8 DER of the private key.
    pub key_pkcs8_der: Vec<u8>,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

impl IssuedCert {
    /// The certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert_der)
    }
    /// The private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        pem_encode("PRIVATE KEY", &self.key_pkcs8_der)
    }
}

/// Encodes DER as PEM with the given label.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Decodes the first PEM block with the given label.
pub fn pem_decode(label: &str, text: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let text = std::str::from_utf8(text).ok()?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let body: String = text[start..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Issues a COCOON certificate for `key` (spec §7.2). With `quote`, the quote and the
/// 32-byte public key (user claims) are added as critical private extensions.
pub fn issue_certificate(
    key: &SigningKey,
    evidence: &crate::tee::Evidence,
    opts: &IssueOptions,
) -> Result<IssuedCert, CertError> {
    use rcgen::{
        CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa, KeyPair,
        KeyUsagePurpose, SanType, SerialNumber,
    };
    let build = |e: rcgen::Error| CertError::Build(e.to_string());
    let pkcs8 = key
        .to_pkcs8_der()
        .map_err(|e| CertError::Build(e.to_string()))?;
    let key_pkcs8_der = pkcs8.as_bytes().to_vec();
    let pkcs8_ref = rustls::pki_types::PrivatePkcs8KeyDer::from(key_pkcs8_der.as_slice());
    let kp =
        KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8_ref, &rcgen::PKCS_ED25519).map_err(build)?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "AE");
    dn.push(DnType::StateOrProvinceName, "DUBAI");
    dn.push(DnType::OrganizationName, "TDLib Development");
    dn.push(DnType::OrganizationalUnitName, "Security");
    dn.push(DnType::CommonName, "localhost");
    params.distinguished_name = dn;
    let mut serial = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut serial);
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let nb = unix(opts.not_before);
    let na = nb.saturating_add(opts.validity.as_secs() as i64);
    params.not_before = time::OffsetDateTime::from_unix_timestamp(nb)
        .map_err(|e| CertError::Build(e.to_string()))?;
    params.not_after = time::OffsetDateTime::from_unix_timestamp(na)
        .map_err(|e| CertError::Build(e.to_string()))?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into().map_err(build)?),
        SanType::DnsName("127.0.0.1".try_into().map_err(build)?),
        SanType::IpAddress(std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
    ];
    let mut eku = CustomExtension::from_oid_content(&[2, 5, 29, 37], EKU_SERVER_CLIENT.to_vec());
    eku.set_criticality(true);
    params.custom_extensions.push(eku);
    let critical = |oid: &[u64], content: Vec<u8>| {
        let mut ext = CustomExtension::from_oid_content(oid, content);
        ext.set_criticality(true);
        ext
    };
    match evidence {
        crate::tee::Evidence::None => {}
        crate::tee::Evidence::Tdx(q) => {
            params
                .custom_extensions
                .push(critical(OID_TDX_QUOTE, q.clone()));
            params.custom_extensions.push(critical(
                OID_TDX_USER_CLAIMS,
                key.verifying_key().to_bytes().to_vec(),
            ));
        }
        crate::tee::Evidence::Sev {
            report_data,
            report,
            vcek_pem,
        } => {
            params
                .custom_extensions
                .push(critical(OID_SEV_REPORT_DATA, report_data.to_vec()));
            params
                .custom_extensions
                .push(critical(OID_SEV_REPORT, report.clone()));
            params
                .custom_extensions
                .push(critical(OID_SEV_VCEK, vcek_pem.clone()));
        }
    }
    for (oid, content, critical) in &opts.extra_extensions {
        let mut ext = CustomExtension::from_oid_content(oid, content.clone());
        ext.set_criticality(*critical);
        params.custom_extensions.push(ext);
    }
    let cert = params.self_signed(&kp).map_err(build)?;
    Ok(IssuedCert {
        cert_der: cert.der().to_vec(),
        key_pkcs8_der,
    })
}

/// Loads an Ed25519 key from PKCS#8 PEM (`*_key.pem`).
pub fn load_key_pem(text: &[u8]) -> Result<SigningKey, CertError> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let der = pem_decode("PRIVATE KEY", text)
        .ok_or_else(|| CertError::Malformed("no PRIVATE KEY PEM block".into()))?;
    SigningKey::from_pkcs8_der(&der).map_err(|e| CertError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_cert_parses_back() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let c = issue_certificate(
            &key,
            &crate::tee::Evidence::Tdx(b"quote-bytes".to_vec()),
            &IssueOptions::default(),
        )
        .unwrap();
        let info = parse_certificate(&c.cert_der).unwrap();
        assert_eq!(info.public_key, key.verifying_key().to_bytes());
        assert_eq!(info.quote.as_deref(), Some(&b"quote-bytes"[..]));
        assert_eq!(info.user_claims.as_deref(), Some(&info.public_key[..]));
        assert_eq!(info.not_after - info.not_before, 86_400);
        let pem = c.cert_pem();
        assert_eq!(
            pem_decode("CERTIFICATE", pem.as_bytes()).unwrap(),
            c.cert_der
        );
        let k2 = load_key_pem(c.key_pem().as_bytes()).unwrap();
        assert_eq!(k2.to_bytes(), key.to_bytes());
    }

    /// `der` rewritten as COCOON writes its certificates: the version field left out (X.509
    /// version 1) with every extension kept, signed again with `key`.
    fn as_version_1(der: &[u8], key: &SigningKey) -> Vec<u8> {
        use ed25519_dalek::Signer;
        fn header_len(der: &[u8]) -> usize {
            match der[1] {
                n if n < 0x80 => 2,
                0x81 => 3,
                0x82 => 4,
                n => panic!("length form {n:#x}"),
            }
        }
        let tbs_start = header_len(der);
        let tbs_content = &der[tbs_start + header_len(&der[tbs_start..])..];
        let version = [0xa0, 0x03, 0x02, 0x01, 0x02];
        assert_eq!(tbs_content[..5], version, "a version-3 certificate");
        let inner_len = tbs_content.len() - 74 - 5; // less the signature part and the version
        let new_tbs = [
            der_sequence_header(inner_len),
            tbs_content[5..5 + inner_len].to_vec(),
        ]
        .concat();
        let signature = key.sign(&new_tbs).to_bytes();
        let tail = [&ED25519_SIG_TAIL[..], &signature[..]].concat();
        let body = [new_tbs, tail].concat();
        [der_sequence_header(body.len()), body].concat()
    }

    #[test]
    fn version_1_certificates_with_extensions_are_accepted_as_cocoon_writes_them() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let c = issue_certificate(
            &key,
            &crate::tee::Evidence::Tdx(b"quote-bytes".to_vec()),
            &IssueOptions::default(),
        )
        .unwrap();
        let v1 = as_version_1(&c.cert_der, &key);
        let info = parse_certificate(&v1).expect("a COCOON-style version-1 certificate");
        assert_eq!(info.public_key, key.verifying_key().to_bytes());
        assert_eq!(info.quote.as_deref(), Some(&b"quote-bytes"[..]));
        // Its extensions are still checked: a version-1 certificate re-signed by another
        // key is refused.
        let other = SigningKey::from_bytes(&[6; 32]);
        let forged = as_version_1(&c.cert_der, &other);
        assert!(parse_certificate(&forged).is_err());
    }

    #[test]
    fn tampered_cert_is_rejected() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let c =
            issue_certificate(&key, &crate::tee::Evidence::None, &IssueOptions::default()).unwrap();
        let mut der = c.cert_der.clone();
        // Flip a byte inside the subject's CN ("localhost") so the signature breaks.
        let pos = der.windows(9).rposition(|w| w == b"localhost").unwrap();
        der[pos] ^= 0x20;
        let err = parse_certificate(&der).unwrap_err();
        assert!(
            matches!(err, CertError::BadSignature | CertError::NotSelfIssued),
            "{err}"
        );
    }

    #[test]
    fn unknown_critical_extension_is_rejected() {
        let key = SigningKey::from_bytes(&[4; 32]);
        let mut opts = IssueOptions::default();
        opts.extra_extensions
            .push((vec![1, 3, 6, 1, 4, 1, 99999, 7], vec![0x05, 0x00], true));
        let c = issue_certificate(&key, &crate::tee::Evidence::None, &opts).unwrap();
        assert_eq!(
            parse_certificate(&c.cert_der).unwrap_err(),
            CertError::UnknownCriticalExtension("1.3.6.1.4.1.99999.7".into())
        );
        // The same extension non-critical is fine.
        opts.extra_extensions[0].2 = false;
        let c = issue_certificate(&key, &crate::tee::Evidence::None, &opts).unwrap();
        assert!(parse_certificate(&c.cert_der).is_ok());
    }
}
