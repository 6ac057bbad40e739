//! The VCEK certificate (AMD's Versioned Chip Endorsement Key): the P-384 key that signs a
//! chip's reports, with the AMD extensions that say which chip and which TCB it is for.

use x509_parser::prelude::*;

use super::{Product, SnpError, Tcb};

const OID_PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";
const OID_HW_ID: &str = "1.3.6.1.4.1.3704.1.4";
const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";

/// A parsed VCEK certificate.
#[derive(Clone)]
pub struct Vcek {
    /// The certificate as the `sev` crate holds it (for the chain check).
    pub(super) cert: sev::certs::snp::Certificate,
    der: Vec<u8>,
    /// The product it was issued for.
    pub product: Product,
    /// The product name as written, a stepping suffix included (e.g. `Genoa-B1`).
    pub product_name: String,
    /// The chip id the certificate is for (compared with the report's `chip_id`).
    pub hw_id: Vec<u8>,
    /// The TCB it was derived for.
    pub tcb: Tcb,
    key: p384::ecdsa::VerifyingKey,
    serial: Vec<u8>,
}

impl std::fmt::Debug for Vcek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vcek")
            .field("product_name", &self.product_name)
            .field("tcb", &self.tcb)
            .finish_non_exhaustive()
    }
}

fn ext_bytes<'a>(cert: &'a X509Certificate<'_>, oid: &str) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == oid)
        .map(|e| e.value)
}

/// An SPL extension: a DER INTEGER of at most one byte's value.
fn spl(cert: &X509Certificate<'_>, oid: &'static str) -> Result<Option<u8>, SnpError> {
    let Some(value) = ext_bytes(cert, oid) else {
        return Ok(None);
    };
    let (_, int) = x509_parser::der_parser::der::parse_der_integer(value)
        .map_err(|_| SnpError::Vcek(format!("extension {oid} is not an INTEGER")))?;
    let n = int
        .as_u64()
        .map_err(|_| SnpError::Vcek(format!("extension {oid} is not a small INTEGER")))?;
    u8::try_from(n)
        .map(Some)
        .map_err(|_| SnpError::Vcek(format!("extension {oid} value {n} above 255")))
}

impl Vcek {
    /// Parses a VCEK from DER or PEM.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, SnpError> {
        let der = if bytes.starts_with(b"-----BEGIN") {
            let (_, pem) =
                parse_x509_pem(bytes).map_err(|e| SnpError::Vcek(format!("PEM: {e}")))?;
            pem.contents
        } else {
            bytes.to_vec()
        };
        let (_, cert) =
            X509Certificate::from_der(&der).map_err(|e| SnpError::Vcek(format!("X.509: {e}")))?;
        let name_raw = ext_bytes(&cert, OID_PRODUCT_NAME)
            .ok_or_else(|| SnpError::Vcek("no productName extension".into()))?;
        // IA5String: tag 0x16, short length (AMD's names are short).
        let product_name = match x509_parser::der_parser::der::parse_der_ia5string(name_raw) {
            Ok((_, obj)) => obj
                .as_str()
                .map_err(|_| SnpError::Vcek("productName is not text".into()))?
                .to_owned(),
            Err(_) => String::from_utf8(name_raw.to_vec())
                .map_err(|_| SnpError::Vcek("productName is not text".into()))?,
        };
        let product = Product::from_vcek_name(&product_name)?;
        let hw_id_raw = ext_bytes(&cert, OID_HW_ID)
            .ok_or_else(|| SnpError::Vcek("no hwID extension".into()))?;
        let hw_id = match x509_parser::der_parser::der::parse_der_octetstring(hw_id_raw) {
            Ok((_, obj)) => obj
                .as_slice()
                .map_err(|_| SnpError::Vcek("hwID is not an OCTET STRING".into()))?
                .to_vec(),
            Err(_) => hw_id_raw.to_vec(),
        };
        if hw_id.is_empty() || hw_id.len() > 64 {
            return Err(SnpError::Vcek(format!("hwID of {} bytes", hw_id.len())));
        }
        let need = |v: Option<u8>, what: &str| {
            v.ok_or_else(|| SnpError::Vcek(format!("no {what} extension")))
        };
        let tcb = Tcb {
            bootloader: need(spl(&cert, OID_BL_SPL)?, "blSPL")?,
            tee: need(spl(&cert, OID_TEE_SPL)?, "teeSPL")?,
            snp: need(spl(&cert, OID_SNP_SPL)?, "snpSPL")?,
            microcode: need(spl(&cert, OID_UCODE_SPL)?, "ucodeSPL")?,
            fmc: spl(&cert, OID_FMC_SPL)?,
        };
        let spki = cert.public_key();
        let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(&spki.subject_public_key.data)
            .map_err(|_| SnpError::Vcek("its key is not an ECDSA P-384 key".into()))?;
        let sev_cert = sev::certs::snp::Certificate::from_der(&der)
            .map_err(|e| SnpError::Vcek(format!("X.509: {e}")))?;
        let serial = cert.raw_serial().to_vec();
        Ok(Vcek {
            serial,
            cert: sev_cert,
            der,
            product,
            product_name,
            hw_id,
            tcb,
            key,
        })
    }

    /// The certificate, DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The key that signs the chip's reports.
    pub fn key(&self) -> &p384::ecdsa::VerifyingKey {
        &self.key
    }

    /// The certificate's serial number (DER content bytes).
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }
}

/// The serial number (DER content bytes) of a DER certificate.
pub(crate) fn serial_of(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.raw_serial().to_vec())
}
