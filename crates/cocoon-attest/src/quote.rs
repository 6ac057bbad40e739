//! TDX quote parsing (quote v4 and v5, TD report 1.0 and 1.5) and the COCOON image hash.
//!
//! Only the parts COCOON needs are parsed: the 48-byte header and the TD report body. The
//! ECDSA signature data that follows the body is left to [`crate::dcap`].

use sha2::{Digest, Sha256};

/// Length of the quote header in bytes.
pub const HEADER_LEN: usize = 48;
/// Length of a TD report 1.0 body.
pub const TD10_BODY_LEN: usize = 584;
/// Length of a TD report 1.5 body (TD 1.0 + `tee_tcb_svn_2` + `mr_servicetd`).
pub const TD15_BODY_LEN: usize = 648;
/// Length of an SGX enclave report body.
pub const SGX_BODY_LEN: usize = 384;
/// `tee_type` value of a TDX quote.
pub const TEE_TYPE_TDX: u32 = 0x81;
/// `tee_type` value of an SGX quote.
pub const TEE_TYPE_SGX: u32 = 0;
/// Largest quote accepted anywhere (the COCOON certificate extension limit).
pub const MAX_QUOTE_LEN: usize = 32 * 1024;

/// A 48-byte measurement register (MRTD, RTMRn, …).
pub type Measurement = [u8; 48];

/// Why a byte string is not a quote COCOON can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// The input ended before a field that must be there.
    #[error("quote truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed to read the field.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The input is longer than [`MAX_QUOTE_LEN`].
    #[error("quote too large: {0} bytes (max {MAX_QUOTE_LEN})")]
    TooLarge(usize),
    /// Quote versions other than 3, 4 and 5 are not understood.
    #[error("unsupported quote version {0}")]
    UnsupportedVersion(u16),
    /// The header names a TEE other than TDX (0x81) or SGX (0).
    #[error("unsupported TEE type {0:#x}")]
    UnsupportedTeeType(u32),
    /// A v5 quote names a body type other than 1 (SGX), 2 (TD 1.0) or 3 (TD 1.5).
    #[error("unsupported quote v5 body type {0}")]
    UnsupportedBodyType(u16),
    /// A v5 body size does not match its body type.
    #[error("quote v5 body type {body_type} must be {expected} bytes, header says {actual}")]
    BodySizeMismatch {
        /// Body type from the v5 header.
        body_type: u16,
        /// Size required by that body type.
        expected: usize,
        /// Size written in the quote.
        actual: usize,
    },
    /// A v5 body type disagrees with the header's TEE type.
    #[error("quote v5 body type {body_type} does not match TEE type {tee_type:#x}")]
    BodyTeeMismatch {
        /// Body type from the v5 header.
        body_type: u16,
        /// TEE type from the header.
        tee_type: u32,
    },
}

/// The kind of TEE report carried by a quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyKind {
    /// SGX enclave report (rejected for TLS).
    Sgx,
    /// TDX TD report 1.0.
    Td10,
    /// TDX TD report 1.5.
    Td15,
}

/// The TDX measurement registers and report data: everything a policy looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdMeasurements {
    /// MRTD: measurement of the initial TD contents (firmware).
    pub mrtd: Measurement,
    /// MRCONFIGID: software-defined configuration id.
    pub mr_config_id: Measurement,
    /// MROWNER: software-defined owner id.
    pub mr_owner: Measurement,
    /// MROWNERCONFIG: software-defined owner configuration.
    pub mr_owner_config: Measurement,
    /// RTMR0..RTMR3: runtime-extendable measurement registers.
    pub rtmr: [Measurement; 4],
    /// REPORTDATA: 64 bytes chosen by the TD (COCOON: SHA-512 of the TLS public key).
    pub report_data: [u8; 64],
}

impl TdMeasurements {
    /// All-zero measurements with the given report data (what fake TDX "attests").
    pub fn zero_with_report_data(report_data: [u8; 64]) -> Self {
        Self {
            mrtd: [0; 48],
            mr_config_id: [0; 48],
            mr_owner: [0; 48],
            mr_owner_config: [0; 48],
            rtmr: [[0; 48]; 4],
            report_data,
        }
    }

    /// The COCOON image hash (spec §7.4): SHA-256 over MRTD, MRCONFIGID, MROWNER,
    /// MROWNERCONFIG, RTMR0..3 and 64 zero bytes.
    pub fn image_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.mrtd);
        h.update(self.mr_config_id);
        h.update(self.mr_owner);
        h.update(self.mr_owner_config);
        for r in &self.rtmr {
            h.update(r);
        }
        h.update([0u8; 64]);
        h.finalize().into()
    }
}

/// Extra TD report fields that policies do not use but `inspect` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdReportExtra {
    /// TEE_TCB_SVN.
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM: measurement of the TDX module.
    pub mr_seam: Measurement,
    /// MRSIGNERSEAM.
    pub mr_signer_seam: Measurement,
    /// SEAMATTRIBUTES.
    pub seam_attributes: [u8; 8],
    /// TDATTRIBUTES (bit 0 = debug).
    pub td_attributes: [u8; 8],
    /// XFAM.
    pub xfam: [u8; 8],
}

/// The SGX fields COCOON reads from an SGX quote (only to reject or print it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgxReport {
    /// MRENCLAVE.
    pub mr_enclave: [u8; 32],
    /// MRSIGNER.
    pub mr_signer: [u8; 32],
    /// Enclave REPORTDATA.
    pub report_data: [u8; 64],
}

/// The report inside a quote.
// TDX is the common case; boxing it would only add an allocation per parse.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuoteBody {
    /// A TDX TD report (1.0 or 1.5).
    Tdx {
        /// Measurements and report data.
        measurements: TdMeasurements,
        /// The remaining printed fields.
        extra: TdReportExtra,
    },
    /// An SGX enclave report.
    Sgx(SgxReport),
}

/// A parsed quote header and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedQuote {
    /// Quote format version (3, 4 or 5).
    pub version: u16,
    /// Attestation key type (2 = ECDSA-256-with-P-256).
    pub att_key_type: u16,
    /// TEE type (0x81 TDX, 0 SGX).
    pub tee_type: u32,
    /// QE vendor id.
    pub qe_vendor_id: [u8; 16],
    /// Which report body the quote holds.
    pub body_kind: BodyKind,
    /// The report.
    pub body: QuoteBody,
}

impl ParsedQuote {
    /// The TDX measurements, or `None` for SGX.
    pub fn tdx(&self) -> Option<&TdMeasurements> {
        match &self.body {
            QuoteBody::Tdx { measurements, .. } => Some(measurements),
            QuoteBody::Sgx(_) => None,
        }
    }
}

fn take<const N: usize>(data: &[u8], off: usize) -> Result<[u8; N], QuoteError> {
    let end = off.checked_add(N).ok_or(QuoteError::Truncated {
        need: usize::MAX,
        have: data.len(),
    })?;
    let slice = data.get(off..end).ok_or(QuoteError::Truncated {
        need: end,
        have: data.len(),
    })?;
    let mut out = [0u8; N];
    out.copy_from_slice(slice);
    Ok(out)
}

fn parse_td_body(data: &[u8], b: usize) -> Result<QuoteBody, QuoteError> {
    Ok(QuoteBody::Tdx {
        extra: TdReportExtra {
            tee_tcb_svn: take(data, b)?,
            mr_seam: take(data, b + 16)?,
            mr_signer_seam: take(data, b + 64)?,
            seam_attributes: take(data, b + 112)?,
            td_attributes: take(data, b + 120)?,
            xfam: take(data, b + 128)?,
        },
        measurements: TdMeasurements {
            mrtd: take(data, b + 136)?,
            mr_config_id: take(data, b + 184)?,
            mr_owner: take(data, b + 232)?,
            mr_owner_config: take(data, b + 280)?,
            rtmr: [
                take(data, b + 328)?,
                take(data, b + 376)?,
                take(data, b + 424)?,
                take(data, b + 472)?,
            ],
            report_data: take(data, b + 520)?,
        },
    })
}

fn parse_sgx_body(data: &[u8], b: usize) -> Result<QuoteBody, QuoteError> {
    Ok(QuoteBody::Sgx(SgxReport {
        mr_enclave: take(data, b + 64)?,
        mr_signer: take(data, b + 128)?,
        report_data: take(data, b + 320)?,
    }))
}

/// Parses the header and report body of a DCAP quote (v3/v4 SGX, v4 TDX, v5 any).
///
/// Never panics; trailing bytes (signature data, padding) are ignored.
pub fn parse_quote(data: &[u8]) -> Result<ParsedQuote, QuoteError> {
    if data.len() > MAX_QUOTE_LEN {
        return Err(QuoteError::TooLarge(data.len()));
    }
    let version = u16::from_le_bytes(take(data, 0)?);
    let att_key_type = u16::from_le_bytes(take(data, 2)?);
    let tee_type = u32::from_le_bytes(take(data, 4)?);
    let qe_vendor_id: [u8; 16] = take(data, 12)?;
    if data.len() < HEADER_LEN {
        return Err(QuoteError::Truncated {
            need: HEADER_LEN,
            have: data.len(),
        });
    }
    let (body_kind, body) = match version {
        3 | 4 => match tee_type {
            TEE_TYPE_TDX if version == 4 => (BodyKind::Td10, parse_td_body(data, HEADER_LEN)?),
            TEE_TYPE_SGX => (BodyKind::Sgx, parse_sgx_body(data, HEADER_LEN)?),
            other => return Err(QuoteError::UnsupportedTeeType(other)),
        },
        5 => {
            let body_type = u16::from_le_bytes(take(data, 48)?);
            let body_size = u32::from_le_bytes(take(data, 50)?) as usize;
            let (kind, expected, want_tee) = match body_type {
                1 => (BodyKind::Sgx, SGX_BODY_LEN, TEE_TYPE_SGX),
                2 => (BodyKind::Td10, TD10_BODY_LEN, TEE_TYPE_TDX),
                3 => (BodyKind::Td15, TD15_BODY_LEN, TEE_TYPE_TDX),
                other => return Err(QuoteError::UnsupportedBodyType(other)),
            };
            if tee_type != TEE_TYPE_SGX && tee_type != TEE_TYPE_TDX {
                return Err(QuoteError::UnsupportedTeeType(tee_type));
            }
            if tee_type != want_tee {
                return Err(QuoteError::BodyTeeMismatch {
                    body_type,
                    tee_type,
                });
            }
            if body_size != expected {
                return Err(QuoteError::BodySizeMismatch {
                    body_type,
                    expected,
                    actual: body_size,
                });
            }
            let need = 54 + expected;
            if data.len() < need {
                return Err(QuoteError::Truncated {
                    need,
                    have: data.len(),
                });
            }
            let body = match kind {
                BodyKind::Sgx => parse_sgx_body(data, 54)?,
                _ => parse_td_body(data, 54)?,
            };
            (kind, body)
        }
        other => return Err(QuoteError::UnsupportedVersion(other)),
    };
    Ok(ParsedQuote {
        version,
        att_key_type,
        tee_type,
        qe_vendor_id,
        body_kind,
        body,
    })
}

/// Image hash of fake TDX (all measurements zero), as published in spec §7.4.
pub const FAKE_TDX_IMAGE_HASH_HEX: &str =
    "5c55c8f4db4010ba9203d83536d0609856af8c847ac039e37e7dde8fbd574b61";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_image_hash_matches_spec() {
        let m = TdMeasurements::zero_with_report_data([7; 64]);
        assert_eq!(hex::encode(m.image_hash()), FAKE_TDX_IMAGE_HASH_HEX);
    }

    #[test]
    fn short_inputs_are_truncation_errors() {
        assert!(matches!(
            parse_quote(&[]),
            Err(QuoteError::Truncated { .. })
        ));
        let mut q = vec![0u8; 100];
        q[0] = 4;
        q[4] = 0x81;
        assert!(matches!(
            parse_quote(&q),
            Err(QuoteError::Truncated { need: _, have: 100 })
        ));
    }
}
