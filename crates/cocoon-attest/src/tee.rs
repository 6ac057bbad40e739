//! Producing attestation evidence: no TEE, fake TDX (a stand-in for real hardware), or a
//! real TDX quote through Linux configfs-tsm.

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
}

impl std::str::FromStr for TeeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "fake_tdx" | "fake-tdx" => Ok(Self::FakeTdx),
            "tdx" => Ok(Self::Tdx),
            other => Err(format!("unknown TEE mode {other:?} (none, fake_tdx, tdx)")),
        }
    }
}

impl std::fmt::Display for TeeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::FakeTdx => "fake_tdx",
            Self::Tdx => "tdx",
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
    /// configfs-tsm answered with a provider other than `tdx_guest`.
    #[error("configfs-tsm provider is {0:?}, not tdx_guest")]
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

/// "Verifies" a fake TDX quote: any 64-byte blob is REPORTDATA with zero measurements.
pub fn parse_fake_quote(quote: &[u8]) -> Option<TdMeasurements> {
    let rd: [u8; 64] = quote.try_into().ok()?;
    Some(TdMeasurements::zero_with_report_data(rd))
}

/// Produces evidence for `mode`: `None` for [`TeeMode::None`], the quote bytes otherwise.
pub fn make_quote(mode: TeeMode, report_data: &[u8; 64]) -> Result<Option<Vec<u8>>, TeeError> {
    match mode {
        TeeMode::None => Ok(None),
        TeeMode::FakeTdx => Ok(Some(fake_quote(report_data))),
        TeeMode::Tdx => ConfigfsTsm::default().quote(report_data).map(Some),
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
        self.probe()?;
        let mut suffix = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut suffix);
        let dir = self.root.join(format!("cocoon-{}", hex::encode(suffix)));
        std::fs::create_dir(&dir).map_err(io_err(&dir))?;
        let result = (|| {
            let provider_path = dir.join("provider");
            if let Ok(p) = std::fs::read_to_string(&provider_path) {
                let p = p.trim();
                if p != "tdx_guest" {
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
    /// `tdx` or `none`.
    pub can_produce: TeeMode,
    /// Human-readable explanation.
    pub reason: String,
}

/// Probes this machine for TDX quote generation.
pub fn self_report() -> SelfReport {
    self_report_at(&ConfigfsTsm::default())
}

/// [`self_report`] against a given configfs-tsm root (for tests).
pub fn self_report_at(tsm: &ConfigfsTsm) -> SelfReport {
    match tsm.probe() {
        Ok(()) => SelfReport {
            can_produce: TeeMode::Tdx,
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
