//! AMD's certificate revocation lists (KDS `/vcek/v1/<Product>/crl`): signed by the
//! product's ARK with RSA-PSS/SHA-384, listing revoked ASKs and VCEKs by serial number.

use rsa::signature::Verifier;
use x509_cert::der::referenced::OwnedToRef as _;
use x509_cert::der::{Decode, Encode};

use super::SnpError;

/// A CRL whose signature verified under an ARK: the revoked serial numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmdCrl {
    revoked: Vec<Vec<u8>>,
    /// `nextUpdate` (unix seconds), if the CRL has one.
    pub next_update: Option<i64>,
}

/// A serial number without leading zero bytes (DER keeps one for the sign bit).
fn normalized(serial: &[u8]) -> Vec<u8> {
    let skip = serial.iter().take_while(|b| **b == 0).count();
    serial[skip..].to_vec()
}

impl AmdCrl {
    /// Parses a CRL (DER or PEM) and checks that `ark_der`'s key signed it.
    pub fn verify(crl: &[u8], ark_der: &[u8]) -> Result<Self, SnpError> {
        let bad = |what: String| SnpError::Crl(what);
        let der = if crl.starts_with(b"-----BEGIN") {
            let (_, pem) = x509_parser::pem::parse_x509_pem(crl)
                .map_err(|e| bad(format!("PEM does not parse: {e}")))?;
            pem.contents
        } else {
            crl.to_vec()
        };
        let list = x509_cert::crl::CertificateList::from_der(&der)
            .map_err(|e| bad(format!("does not parse: {e}")))?;
        let ark = x509_cert::Certificate::from_der(ark_der)
            .map_err(|e| bad(format!("the ARK does not parse: {e}")))?;
        if list.tbs_cert_list.issuer != ark.tbs_certificate.subject {
            return Err(bad("it was not issued by the ARK".into()));
        }
        let key =
            rsa::RsaPublicKey::try_from(ark.tbs_certificate.subject_public_key_info.owned_to_ref())
                .map_err(|e| bad(format!("the ARK's key is not RSA: {e}")))?;
        let tbs = list
            .tbs_cert_list
            .to_der()
            .map_err(|e| bad(format!("cannot encode: {e}")))?;
        let signature = rsa::pss::Signature::try_from(list.signature.raw_bytes())
            .map_err(|e| bad(format!("bad signature: {e}")))?;
        rsa::pss::VerifyingKey::<sha2::Sha384>::new(key)
            .verify(&tbs, &signature)
            .map_err(|_| bad("its signature does not verify under the ARK".into()))?;
        let revoked = list
            .tbs_cert_list
            .revoked_certificates
            .iter()
            .flatten()
            .map(|r| normalized(r.serial_number.as_bytes()))
            .collect();
        let next_update = list
            .tbs_cert_list
            .next_update
            .map(|t| t.to_unix_duration().as_secs() as i64);
        Ok(AmdCrl {
            revoked,
            next_update,
        })
    }

    /// Whether the certificate with serial number `serial` (DER bytes) is revoked.
    pub fn revokes(&self, serial: &[u8]) -> bool {
        let s = normalized(serial);
        self.revoked.contains(&s)
    }
}
