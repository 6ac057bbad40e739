//! AMD SEV-SNP attestation (cocoon-protocol-9060ce5.md §7.9): the attestation report
//! ([`SnpReport`]), the chip's VCEK certificate ([`Vcek`]) and their verification against
//! AMD's roots ([`SnpVerifier`]).
//!
//! Beyond COCOON's verifier: the VCEK's product name may carry a stepping suffix
//! (`Genoa-B1`), the report's `REPORTED_TCB` must be the TCB the VCEK was issued for, a
//! minimum TCB can be required, and a guest whose policy allows debugging is refused
//! unless the policy says otherwise. The signature is checked over the report's bytes as
//! received, so no byte of the signed part can change unnoticed.

mod crl;
pub mod kds;
mod report;
mod vcek;

pub use crl::AmdCrl;
pub use report::{
    image_hash, SnpReport, ECDSA_P384_SHA384, POLICY_DEBUG_BIT, REPORT_LEN, SIGNED_LEN,
};
pub use vcek::Vcek;

use std::collections::BTreeMap;

use p384::ecdsa::signature::hazmat::PrehashVerifier;
use sha2::{Digest, Sha384};

/// The two PEM certificates of an AMD chain (KDS `cert_chain`): ASK, then ARK.
pub fn split_chain(pem: &[u8]) -> Result<(Vec<u8>, Vec<u8>), SnpError> {
    let text = String::from_utf8_lossy(pem);
    let certs: Vec<Vec<u8>> = text
        .split_inclusive("-----END CERTIFICATE-----")
        .filter(|c| c.contains("-----BEGIN CERTIFICATE-----"))
        .map(|c| c.trim().as_bytes().to_vec())
        .collect();
    match <[Vec<u8>; 2]>::try_from(certs) {
        Ok([ask, ark]) => Ok((ask, ark)),
        Err(v) => Err(SnpError::ChainFormat(v.len())),
    }
}

/// An AMD EPYC generation with its own root of trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Product {
    /// 3rd generation (Zen 3).
    Milan,
    /// 4th generation (Zen 4).
    Genoa,
    /// 4th generation, edge (Zen 4c); AMD publishes no chain for it.
    Siena,
    /// 5th generation (Zen 5).
    Turin,
}

impl Product {
    /// The product a VCEK's `productName` names, a `-stepping` suffix allowed
    /// (COCOON's remote check refuses `Genoa-B1`; AMD documents the suffix).
    pub fn from_vcek_name(name: &str) -> Result<Self, SnpError> {
        let base = name.split_once('-').map_or(name, |(b, _)| b);
        match base {
            "Milan" => Ok(Product::Milan),
            "Genoa" => Ok(Product::Genoa),
            "Siena" => Ok(Product::Siena),
            "Turin" => Ok(Product::Turin),
            _ => Err(SnpError::UnknownProduct(name.to_owned())),
        }
    }

    /// The name AMD's KDS uses in its paths.
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Siena => "Siena",
            Product::Turin => "Turin",
        }
    }
}

/// A TCB version: the security patch levels a VCEK is derived for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Tcb {
    /// PSP bootloader SPL.
    pub bootloader: u8,
    /// PSP OS (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
    /// FMC SPL (Turin only).
    pub fmc: Option<u8>,
}

impl Tcb {
    /// Decodes a `TCB_VERSION` with `product`'s layout: Milan/Genoa
    /// `bl[7:0] tee[15:8] snp[55:48] ucode[63:56]`, Turin
    /// `fmc[7:0] bl[15:8] tee[23:16] snp[31:24] ucode[63:56]`.
    pub fn decode(raw: u64, product: Product) -> Self {
        let b = raw.to_le_bytes();
        match product {
            Product::Turin => Tcb {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            },
            _ => Tcb {
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
                fmc: None,
            },
        }
    }

    /// Whether every component is at least `min`'s.
    pub fn at_least(&self, min: &Tcb) -> bool {
        self.bootloader >= min.bootloader
            && self.tee >= min.tee
            && self.snp >= min.snp
            && self.microcode >= min.microcode
            && self.fmc.unwrap_or(0) >= min.fmc.unwrap_or(0)
    }
}

/// Why an SNP report or its VCEK is not accepted; each names the check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnpError {
    /// The report is not 1184 bytes (or hex of them).
    #[error("an SNP attestation report is {REPORT_LEN} bytes, got {0}")]
    ReportLength(usize),
    /// The report's fields do not parse.
    #[error("SNP report: {0}")]
    Report(String),
    /// A report format this verifier does not know.
    #[error("SNP report version {0} (2 or later expected)")]
    ReportVersion(u32),
    /// Not ECDSA P-384 / SHA-384.
    #[error("SNP report signature algorithm {0} (1, ECDSA P-384 with SHA-384, expected)")]
    SignatureAlgorithm(u32),
    /// The VCEK does not parse or lacks an AMD extension.
    #[error("VCEK: {0}")]
    Vcek(String),
    /// The VCEK names a product this verifier does not know.
    #[error("VCEK product name {0:?} is not Milan, Genoa, Siena or Turin")]
    UnknownProduct(String),
    /// No root of trust is configured for the product.
    #[error("no AMD trust chain for {0:?}")]
    NoTrustChain(Product),
    /// The VCEK is not signed by the product's ASK, or the ASK not by its ARK.
    #[error("the VCEK does not chain to AMD's {product:?} root: {reason}")]
    Chain {
        /// The product whose roots were tried.
        product: Product,
        /// What failed.
        reason: String,
    },
    /// The VCEK was issued for another chip.
    #[error("the VCEK's hwID is not the report's chip_id (a VCEK of another chip)")]
    ChipMismatch,
    /// The report's `REPORTED_TCB` is not the TCB the VCEK was issued for.
    #[error("the report's reported TCB {report:?} is not the VCEK's {vcek:?}")]
    TcbMismatch {
        /// From the report.
        report: Tcb,
        /// From the VCEK.
        vcek: Tcb,
    },
    /// The platform's TCB is below the policy's minimum.
    #[error("the reported TCB {report:?} is below the required {min:?}")]
    TcbTooLow {
        /// From the report.
        report: Tcb,
        /// The policy's minimum.
        min: Tcb,
    },
    /// The guest policy allows debugging, and the verifier does not.
    #[error("the guest's policy allows debugging (the host can read its memory)")]
    DebugGuest,
    /// The ECDSA signature does not verify under the VCEK's key.
    #[error("the report's signature does not verify under the VCEK")]
    BadSignature,
    /// `REPORT_DATA` is not what the peer's key demands.
    #[error("the report's report_data is not the expected hash")]
    ReportDataMismatch,
    /// An AMD chain file is not two PEM certificates.
    #[error("a chain is two PEM certificates (ASK, ARK), found {0}")]
    ChainFormat(usize),
    /// A CRL is unusable.
    #[error("AMD CRL: {0}")]
    Crl(String),
    /// The VCEK or the ASK is on the product's CRL.
    #[error("the {0} is revoked by AMD's {1:?} CRL")]
    Revoked(&'static str, Product),
}

/// What a verifier requires of a guest beyond a valid signature.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnpRules {
    /// Accept guests whose policy allows debugging (off by default: such a guest's memory
    /// is readable by its host).
    pub allow_debug: bool,
    /// The lowest reported TCB accepted, if any.
    pub min_tcb: Option<Tcb>,
}

/// A report that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpVerified {
    /// The launch measurement.
    pub measurement: [u8; 48],
    /// The report data.
    pub report_data: [u8; 64],
    /// COCOON's image hash of the measurement.
    pub image_hash: [u8; 32],
    /// The chip's product.
    pub product: Product,
    /// The reported TCB.
    pub tcb: Tcb,
}

/// Verifies SNP reports against AMD's roots (ARK and ASK per product).
#[derive(Debug, Clone)]
pub struct SnpVerifier {
    roots: BTreeMap<Product, sev::certs::snp::ca::Chain>,
    crls: BTreeMap<Product, AmdCrl>,
    rules: SnpRules,
}

impl SnpVerifier {
    /// AMD's roots for Milan, Genoa and Turin as the `sev` crate carries them (Siena has
    /// no published chain), with `rules`.
    pub fn amd(rules: SnpRules) -> Result<Self, SnpError> {
        use sev::certs::snp::builtin::{genoa, milan, turin};
        let chain = |ark: std::io::Result<sev::certs::snp::Certificate>,
                     ask: std::io::Result<sev::certs::snp::Certificate>|
         -> Result<sev::certs::snp::ca::Chain, SnpError> {
            Ok(sev::certs::snp::ca::Chain {
                ark: ark.map_err(|e| SnpError::Vcek(format!("built-in ARK: {e}")))?,
                ask: ask.map_err(|e| SnpError::Vcek(format!("built-in ASK: {e}")))?,
            })
        };
        let mut roots = BTreeMap::new();
        roots.insert(Product::Milan, chain(milan::ark(), milan::ask())?);
        roots.insert(Product::Genoa, chain(genoa::ark(), genoa::ask())?);
        roots.insert(Product::Turin, chain(turin::ark(), turin::ask())?);
        Ok(SnpVerifier {
            roots,
            crls: BTreeMap::new(),
            rules,
        })
    }

    /// Replaces `product`'s roots with an ASK and ARK (PEM), e.g. AMD's KDS `cert_chain`.
    pub fn with_chain(
        mut self,
        product: Product,
        ask_pem: &[u8],
        ark_pem: &[u8],
    ) -> Result<Self, SnpError> {
        let cert = |pem: &[u8], what: &str| {
            sev::certs::snp::Certificate::from_pem(pem)
                .map_err(|e| SnpError::Vcek(format!("{what}: {e}")))
        };
        self.roots.insert(
            product,
            sev::certs::snp::ca::Chain {
                ark: cert(ark_pem, "ARK")?,
                ask: cert(ask_pem, "ASK")?,
            },
        );
        Ok(self)
    }

    /// Checks `product`'s VCEKs and ASK against `crl` (DER or PEM, as KDS serves
    /// `/vcek/v1/<Product>/crl`), which must be signed by the product's ARK.
    pub fn with_crl(mut self, product: Product, crl: &[u8]) -> Result<Self, SnpError> {
        let roots = self
            .roots
            .get(&product)
            .ok_or(SnpError::NoTrustChain(product))?;
        let ark = roots
            .ark
            .to_der()
            .map_err(|e| SnpError::Crl(format!("the ARK does not encode: {e}")))?;
        self.crls.insert(product, AmdCrl::verify(crl, &ark)?);
        Ok(self)
    }

    /// The rules in force.
    pub fn rules(&self) -> &SnpRules {
        &self.rules
    }

    /// Checks `report` against `vcek`: format, the guest policy and TCB rules, the VCEK's
    /// chain to AMD's root for its product, that the VCEK is this chip's at this TCB, the
    /// signature over the received bytes, and `report_data` when `expected` is given.
    pub fn verify(
        &self,
        report: &SnpReport,
        vcek: &Vcek,
        expected: Option<&[u8; 64]>,
    ) -> Result<SnpVerified, SnpError> {
        if report.version() < 2 {
            return Err(SnpError::ReportVersion(report.version()));
        }
        if report.signature_algo() != ECDSA_P384_SHA384 {
            return Err(SnpError::SignatureAlgorithm(report.signature_algo()));
        }
        if report.debug_allowed() && !self.rules.allow_debug {
            return Err(SnpError::DebugGuest);
        }
        let product = vcek.product;
        let tcb = report.reported_tcb(product);
        if let Some(min) = &self.rules.min_tcb {
            if !tcb.at_least(min) {
                return Err(SnpError::TcbTooLow {
                    report: tcb,
                    min: *min,
                });
            }
        }
        let roots = self
            .roots
            .get(&product)
            .ok_or(SnpError::NoTrustChain(product))?;
        use sev::certs::snp::Verifiable;
        let chain = sev::certs::snp::Chain {
            ca: roots.clone(),
            vek: vcek.cert.clone(),
        };
        (&chain).verify().map_err(|e| SnpError::Chain {
            product,
            reason: e.to_string(),
        })?;
        if let Some(crl) = self.crls.get(&product) {
            if crl.revokes(vcek.serial()) {
                return Err(SnpError::Revoked("VCEK", product));
            }
            let ask_serial = roots
                .ask
                .to_der()
                .ok()
                .and_then(|der| vcek::serial_of(&der));
            if ask_serial.is_some_and(|s| crl.revokes(&s)) {
                return Err(SnpError::Revoked("ASK", product));
            }
        }
        if !report.chip_id().starts_with(&vcek.hw_id) {
            return Err(SnpError::ChipMismatch);
        }
        let mut vcek_tcb = vcek.tcb;
        if product != Product::Turin {
            vcek_tcb.fmc = None;
        }
        if tcb != vcek_tcb {
            return Err(SnpError::TcbMismatch {
                report: tcb,
                vcek: vcek_tcb,
            });
        }
        let (r, s) = report.signature_rs();
        let signature =
            p384::ecdsa::Signature::from_scalars(r, s).map_err(|_| SnpError::BadSignature)?;
        let digest = Sha384::digest(report.signed_part());
        vcek.key()
            .verify_prehash(&digest, &signature)
            .map_err(|_| SnpError::BadSignature)?;
        let report_data = report.report_data();
        if let Some(expected) = expected {
            if &report_data != expected {
                return Err(SnpError::ReportDataMismatch);
            }
        }
        Ok(SnpVerified {
            measurement: report.measurement(),
            report_data,
            image_hash: report.image_hash(),
            product,
            tcb,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_names_with_and_without_a_stepping() {
        assert_eq!(Product::from_vcek_name("Genoa"), Ok(Product::Genoa));
        assert_eq!(Product::from_vcek_name("Genoa-B1"), Ok(Product::Genoa));
        assert_eq!(Product::from_vcek_name("Milan-B0"), Ok(Product::Milan));
        assert!(matches!(
            Product::from_vcek_name("Naples"),
            Err(SnpError::UnknownProduct(_))
        ));
    }

    #[test]
    fn tcb_layouts_per_generation() {
        let raw = u64::from_le_bytes([1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            Tcb::decode(raw, Product::Milan),
            Tcb {
                bootloader: 1,
                tee: 2,
                snp: 7,
                microcode: 8,
                fmc: None
            }
        );
        assert_eq!(
            Tcb::decode(raw, Product::Turin),
            Tcb {
                fmc: Some(1),
                bootloader: 2,
                tee: 3,
                snp: 4,
                microcode: 8
            }
        );
        let min = Tcb {
            bootloader: 1,
            tee: 2,
            snp: 7,
            microcode: 9,
            fmc: None,
        };
        assert!(!Tcb::decode(raw, Product::Milan).at_least(&min));
    }

    #[test]
    fn the_image_hash_of_a_zero_measurement_is_cocoons() {
        assert_eq!(
            hex::encode(image_hash(&[0; 48])),
            "b5fdab78d8947eacc864bfeecb4d2100780e5afe1cd8efafb124887913ac49fa"
        );
    }
}
