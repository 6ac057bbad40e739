//! Producing attestation evidence: no TEE, fake TDX or fake SEV-SNP (stand-ins for real
//! hardware), or real TDX quotes and SEV-SNP reports through Linux configfs-tsm.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha512};

use crate::quote::TdMeasurements;

/// Default configfs-tsm report directory.
pub const CONFIGFS_TSM_REPORT: &str = "/sys/kernel/config/tsm/report";

/// Which evidence this node puts into its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeeMode {
    /// No quote extension at all (only acceptable to peers with policy `any`).
    None,
    /// **Fake TDX: a stand-in for real TDX hardware.** The "quote" is just the 64-byte
    /// REPORTDATA, so every measurement reads as zero (spec §7.6). Test networks only.
    FakeTdx,
    /// A real TDX quote from the TDX module via configfs-tsm.
    Tdx,
    /// **Fake SEV-SNP: a stand-in for AMD hardware.** A zeroed 1184-byte report carrying
    /// only REPORTDATA, and a throw-away self-signed P-384 "VCEK" (as COCOON's fake SEV
    /// certificates). Test networks only.
    FakeSev,
    /// A real SEV-SNP report from the AMD secure processor via configfs-tsm, with the
    /// chip's VCEK from [`SEV_VCEK_PATH`].
    Sev,
}

/// Whose CPU this is, for COCOON's `fake_tee` / `tee` names (AMD: SEV-SNP, else TDX).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuVendor {
    /// `AuthenticAMD`.
    Amd,
    /// Anything else (Intel's `GenuineIntel` included).
    Other,
}

/// This machine's CPU vendor, read from `/proc/cpuinfo` (COCOON asks CPUID).
pub fn cpu_vendor() -> CpuVendor {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let amd = text
        .lines()
        .find(|l| l.starts_with("vendor_id"))
        .is_some_and(|l| l.contains("AuthenticAMD"));
    if amd {
        CpuVendor::Amd
    } else {
        CpuVendor::Other
    }
}

/// Where an SNP guest keeps its chip's VCEK (PEM), as COCOON's images do.
pub const SEV_VCEK_PATH: &str = "/etc/tee/sev/vcek.pem";

/// The evidence a certificate carries (cocoon-protocol-9060ce5.md §7.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// None: acceptable only to peers whose policy is `any`.
    None,
    /// A TDX quote (or a fake one).
    Tdx(Vec<u8>),
    /// An SEV-SNP report (or a fake one) with the hash it was requested with and the
    /// chip's VCEK as PEM.
    Sev {
        /// SHA-512 of the certificate's key.
        report_data: [u8; 64],
        /// The 1184-byte report.
        report: Vec<u8>,
        /// The VCEK certificate, PEM.
        vcek_pem: Vec<u8>,
    },
}

/// A fake SNP report: zeros but for version 2, signature algorithm 1 and `report_data`.
pub fn fake_snp_report(report_data: &[u8; 64]) -> Vec<u8> {
    let mut report = vec![0u8; crate::sev::REPORT_LEN];
    report[0x00] = 2;
    report[0x34] = 1;
    report[0x50..0x90].copy_from_slice(report_data);
    report
}

/// The throw-away self-signed P-384 "VCEK" of fake SEV certificates, made once per process.
fn fake_vcek_pem() -> Result<Vec<u8>, TeeError> {
    static PEM: std::sync::OnceLock<Result<Vec<u8>, String>> = std::sync::OnceLock::new();
    PEM.get_or_init(|| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
            .map_err(|e| e.to_string())?;
        let params = rcgen::CertificateParams::new(vec!["fake-vcek".to_owned()])
            .map_err(|e| e.to_string())?;
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        Ok(cert.pem().into_bytes())
    })
    .clone()
    .map_err(TeeError::Unavailable)
}

impl std::str::FromStr for TeeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "fake_tdx" | "fake-tdx" => Ok(Self::FakeTdx),
            "tdx" => Ok(Self::Tdx),
            "fake_sev" | "fake-sev" => Ok(Self::FakeSev),
            "sev" | "sev-snp" | "sev_snp" => Ok(Self::Sev),
            // COCOON 9060ce5's names: the kind follows this machine's CPU vendor.
            "fake_tee" | "fake-tee" => Ok(match cpu_vendor() {
                CpuVendor::Amd => Self::FakeSev,
                CpuVendor::Other => Self::FakeTdx,
            }),
            "tee" => Ok(match cpu_vendor() {
                CpuVendor::Amd => Self::Sev,
                CpuVendor::Other => Self::Tdx,
            }),
            other => Err(format!(
                "unknown TEE mode {other:?} (none, fake_tee, tee, or by kind: fake_tdx, tdx, fake_sev, sev)"
            )),
        }
    }
}

impl std::fmt::Display for TeeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::FakeTdx => "fake_tdx",
            Self::Tdx => "tdx",
            Self::FakeSev => "fake_sev",
            Self::Sev => "sev",
        })
    }
}

/// Why evidence could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum TeeError {
    /// configfs-tsm is not present (not a TD, old kernel, or configfs not mounted).
    #[error("TDX quote generation unavailable: {0}")]
    Unavailable(String),
    /// configfs-tsm is present but the TDX provider failed.
    #[error("TDX quote generation failed at {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// configfs-tsm answered with a provider other than the one asked for.
    #[error("configfs-tsm provider is {0:?}, not the one this TEE mode needs")]
    WrongProvider(String),
}

/// The REPORTDATA COCOON binds into a quote: `SHA-512(ed25519 public key)` (spec §7.2).
pub fn report_data_for_key(public_key: &[u8; 32]) -> [u8; 64] {
    Sha512::digest(public_key).into()
}

/// Makes a fake TDX quote: the 64 REPORTDATA bytes themselves (spec §7.6).
pub fn fake_quote(report_data: &[u8; 64]) -> Vec<u8> {
    report_data.to_vec()
}

/// Length of COCOON's serialized `tdx::RATLSAttestationReport`, what its fake TDX
/// certificates carry since 9060ce5: MRTD, MRCONFIGID, MROWNER, MROWNERCONFIG, RTMR0..3
/// (48 bytes each), REPORTDATA (64), collateral root hash (48).
pub const FAKE_TDX_REPORT_LEN: usize = 496;

/// "Verifies" a fake TDX quote: a 64-byte blob is REPORTDATA with zero measurements (ours,
/// and COCOON's before 9060ce5); a 496-byte one is COCOON's serialized report.
pub fn parse_fake_quote(quote: &[u8]) -> Option<TdMeasurements> {
    if quote.len() == FAKE_TDX_REPORT_LEN {
        let m = |i: usize| -> [u8; 48] {
            let mut out = [0u8; 48];
            out.copy_from_slice(&quote[i * 48..(i + 1) * 48]);
            out
        };
        let mut report_data = [0u8; 64];
        report_data.copy_from_slice(&quote[384..448]);
        return Some(TdMeasurements {
            mrtd: m(0),
            mr_config_id: m(1),
            mr_owner: m(2),
            mr_owner_config: m(3),
            rtmr: [m(4), m(5), m(6), m(7)],
            report_data,
        });
    }
    let rd: [u8; 64] = quote.try_into().ok()?;
    Some(TdMeasurements::zero_with_report_data(rd))
}

/// Produces evidence for `mode` over `report_data`.
pub fn make_evidence(mode: TeeMode, report_data: &[u8; 64]) -> Result<Evidence, TeeError> {
    match mode {
        TeeMode::None => Ok(Evidence::None),
        TeeMode::FakeTdx => Ok(Evidence::Tdx(fake_quote(report_data))),
        TeeMode::Tdx => ConfigfsTsm::default().quote(report_data).map(Evidence::Tdx),
        TeeMode::FakeSev => Ok(Evidence::Sev {
            report_data: *report_data,
            report: fake_snp_report(report_data),
            vcek_pem: fake_vcek_pem()?,
        }),
        TeeMode::Sev => {
            let report = ConfigfsTsm::default().report(report_data, "sev_guest")?;
            let path = Path::new(SEV_VCEK_PATH);
            let vcek_pem = std::fs::read(path).map_err(io_err(path))?;
            Ok(Evidence::Sev {
                report_data: *report_data,
                report,
                vcek_pem,
            })
        }
    }
}

/// Produces a TDX quote for `mode` (`None` without TDX evidence); kept for callers that
/// only deal with TDX.
pub fn make_quote(mode: TeeMode, report_data: &[u8; 64]) -> Result<Option<Vec<u8>>, TeeError> {
    match make_evidence(mode, report_data)? {
        Evidence::Tdx(q) => Ok(Some(q)),
        Evidence::None | Evidence::Sev { .. } => Ok(None),
    }
}

/// Real TDX quote generation through `/sys/kernel/config/tsm/report` (Linux ≥ 6.7).
#[derive(Debug, Clone)]
pub struct ConfigfsTsm {
    /// The configfs-tsm report directory.
    pub root: PathBuf,
}

impl Default for ConfigfsTsm {
    fn default() -> Self {
        Self {
            root: PathBuf::from(CONFIGFS_TSM_REPORT),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TeeError + '_ {
    move |source| TeeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl ConfigfsTsm {
    /// Checks whether quotes can be produced here, saying why not.
    pub fn probe(&self) -> Result<(), TeeError> {
        if Path::new("/sys/kernel/config").is_dir() && !self.root.is_dir() {
            return Err(TeeError::Unavailable(format!(
                "{} does not exist (not a TDX guest, or the kernel lacks CONFIG_TSM_REPORTS)",
                self.root.display()
            )));
        }
        if !self.root.is_dir() {
            return Err(TeeError::Unavailable(format!(
                "{} does not exist (configfs not mounted or not a TDX guest)",
                self.root.display()
            )));
        }
        Ok(())
    }

    /// Asks the TDX module for a quote over `report_data`.
    pub fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TeeError> {
        self.report(report_data, "tdx_guest")
    }

    /// Asks the configfs-tsm provider `provider` (`tdx_guest`, `sev_guest`) for evidence
    /// over `report_data`.
    pub fn report(&self, report_data: &[u8; 64], provider: &str) -> Result<Vec<u8>, TeeError> {
        self.probe()?;
        let mut suffix = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut suffix);
        let dir = self.root.join(format!("cocoon-{}", hex::encode(suffix)));
        std::fs::create_dir(&dir).map_err(io_err(&dir))?;
        let result = (|| {
            let provider_path = dir.join("provider");
            if let Ok(p) = std::fs::read_to_string(&provider_path) {
                let p = p.trim();
                if p != provider {
                    return Err(TeeError::WrongProvider(p.to_string()));
                }
            }
            let inblob = dir.join("inblob");
            std::fs::write(&inblob, report_data).map_err(io_err(&inblob))?;
            let outblob = dir.join("outblob");
            std::fs::read(&outblob).map_err(io_err(&outblob))
        })();
        let _ = std::fs::remove_dir(&dir);
        result
    }
}

/// What this machine can produce, for `cocoon attest self`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SelfReport {
    /// `tdx`, `sev` or `none`.
    pub can_produce: TeeMode,
    /// Human-readable explanation.
    pub reason: String,
}

/// Probes this machine for TDX quote or SEV-SNP report generation.
pub fn self_report() -> SelfReport {
    self_report_at(&ConfigfsTsm::default())
}

/// [`self_report`] against a given configfs-tsm root (for tests).
pub fn self_report_at(tsm: &ConfigfsTsm) -> SelfReport {
    match tsm.probe() {
        // The kernel's report interface serves the guest's own TEE: SEV-SNP on AMD.
        Ok(()) => SelfReport {
            can_produce: match cpu_vendor() {
                CpuVendor::Amd => TeeMode::Sev,
                CpuVendor::Other => TeeMode::Tdx,
            },
            reason: format!(
                "configfs-tsm report interface found at {}",
                tsm.root.display()
            ),
        },
        Err(e) => SelfReport {
            can_produce: TeeMode::None,
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_quote_roundtrip() {
        let rd = report_data_for_key(&[1; 32]);
        let q = make_quote(TeeMode::FakeTdx, &rd).unwrap().unwrap();
        assert_eq!(q.len(), 64);
        let m = parse_fake_quote(&q).unwrap();
        assert_eq!(m.report_data, rd);
        assert_eq!(m.rtmr[0], [0; 48]);
        assert!(parse_fake_quote(&q[..63]).is_none());
        assert!(make_quote(TeeMode::None, &rd).unwrap().is_none());
    }

    #[test]
    fn missing_configfs_is_a_clear_error() {
        let tsm = ConfigfsTsm {
            root: PathBuf::from("/nonexistent/tsm/report"),
        };
        let err = tsm.quote(&[0; 64]).unwrap_err();
        assert!(
            err.to_string().contains("TDX quote generation unavailable"),
            "{err}"
        );
        let r = self_report_at(&tsm);
        assert_eq!(r.can_produce, TeeMode::None);
        assert!(r.reason.contains("/nonexistent/tsm/report"));
    }

    #[test]
    fn configfs_protocol_against_a_fake_tree() {
        // A plain directory stands in for configfs: outblob must already exist there, so
        // pre-create the tree the way the kernel would and check inblob is written.
        let root = std::env::temp_dir().join(format!("cocoon-tsm-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let tsm = ConfigfsTsm { root: root.clone() };
        // On a plain fs, create_dir succeeds but outblob is missing → Io error naming it.
        let err = tsm.quote(&[5; 64]).unwrap_err();
        assert!(err.to_string().contains("outblob"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
