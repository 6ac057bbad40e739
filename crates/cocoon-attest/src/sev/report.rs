//! The SNP `ATTESTATION_REPORT` (AMD SEV-SNP ABI, 1184 bytes): every field, read with the
//! `sev` crate's report type, and the raw bytes the signature covers.

use sha2::{Digest, Sha256};

use super::{Product, SnpError, Tcb};

/// Length of an SNP attestation report.
pub const REPORT_LEN: usize = 1184;
/// The signature covers bytes `0..SIGNED_LEN`; it starts there.
pub const SIGNED_LEN: usize = 0x2A0;
/// `signature_algo` value of ECDSA P-384 with SHA-384, the only one defined.
pub const ECDSA_P384_SHA384: u32 = 1;
/// Bit of the guest policy that allows a debugger (the hypervisor can read the guest).
pub const POLICY_DEBUG_BIT: u64 = 1 << 19;

/// A parsed SNP attestation report, with its raw bytes.
#[derive(Clone)]
pub struct SnpReport {
    raw: Box<[u8; REPORT_LEN]>,
    parsed: sev::firmware::guest::AttestationReport,
}

impl std::fmt::Debug for SnpReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnpReport")
            .field("version", &self.version())
            .field("measurement", &hex::encode(self.measurement()))
            .finish_non_exhaustive()
    }
}

fn u32_at(raw: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&raw[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(raw: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&raw[at..at + 8]);
    u64::from_le_bytes(b)
}

impl SnpReport {
    /// Parses exactly [`REPORT_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SnpError> {
        let raw: [u8; REPORT_LEN] = bytes
            .try_into()
            .map_err(|_| SnpError::ReportLength(bytes.len()))?;
        use sev::parser::ByteParser;
        let parsed = sev::firmware::guest::AttestationReport::from_bytes(&raw)
            .map_err(|e| SnpError::Report(e.to_string()))?;
        Ok(SnpReport {
            raw: Box::new(raw),
            parsed,
        })
    }

    /// Parses a report given as raw bytes or as hex text (whitespace ignored).
    pub fn from_bytes_or_hex(bytes: &[u8]) -> Result<Self, SnpError> {
        if bytes.len() == REPORT_LEN {
            return Self::from_bytes(bytes);
        }
        let text: String = String::from_utf8_lossy(bytes)
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let decoded = hex::decode(&text).map_err(|_| SnpError::ReportLength(bytes.len()))?;
        Self::from_bytes(&decoded)
    }

    /// The raw report.
    pub fn raw(&self) -> &[u8; REPORT_LEN] {
        &self.raw
    }

    /// The bytes the signature covers (`0..0x2A0`), exactly as received.
    pub fn signed_part(&self) -> &[u8] {
        &self.raw[..SIGNED_LEN]
    }

    /// The report's fields as the `sev` crate reads them.
    pub fn fields(&self) -> &sev::firmware::guest::AttestationReport {
        &self.parsed
    }

    /// Report format version (2 and later).
    pub fn version(&self) -> u32 {
        u32_at(&self.raw[..], 0x00)
    }

    /// The guest policy (raw bits).
    pub fn policy(&self) -> u64 {
        u64_at(&self.raw[..], 0x08)
    }

    /// Whether the guest policy allows debugging (the host may read guest memory).
    pub fn debug_allowed(&self) -> bool {
        self.policy() & POLICY_DEBUG_BIT != 0
    }

    /// The VMPL the report was requested at.
    pub fn vmpl(&self) -> u32 {
        u32_at(&self.raw[..], 0x30)
    }

    /// `signature_algo` (1: ECDSA P-384 with SHA-384).
    pub fn signature_algo(&self) -> u32 {
        u32_at(&self.raw[..], 0x34)
    }

    /// The 64 bytes the guest bound into the report (COCOON: SHA-512 of the TLS key).
    pub fn report_data(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(&self.raw[0x50..0x90]);
        out
    }

    /// The launch measurement.
    pub fn measurement(&self) -> [u8; 48] {
        let mut out = [0u8; 48];
        out.copy_from_slice(&self.raw[0x90..0xC0]);
        out
    }

    /// The chip identifier (zero when the host masks it).
    pub fn chip_id(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(&self.raw[0x1A0..0x1E0]);
        out
    }

    /// The raw `REPORTED_TCB` (the TCB the VCEK that signed the report was derived for).
    pub fn reported_tcb_raw(&self) -> u64 {
        u64_at(&self.raw[..], 0x180)
    }

    /// `REPORTED_TCB` decoded with `product`'s bit layout.
    pub fn reported_tcb(&self, product: Product) -> Tcb {
        Tcb::decode(self.reported_tcb_raw(), product)
    }

    /// The signature's `r` and `s`, big-endian, 48 bytes each (the report stores them
    /// little-endian in 72-byte fields).
    pub fn signature_rs(&self) -> ([u8; 48], [u8; 48]) {
        let mut r = [0u8; 48];
        let mut s = [0u8; 48];
        for i in 0..48 {
            r[i] = self.raw[SIGNED_LEN + 47 - i];
            s[i] = self.raw[SIGNED_LEN + 72 + 47 - i];
        }
        (r, s)
    }

    /// COCOON's image hash of an SNP guest: `SHA-256(MEASUREMENT ‖ 0^64)`.
    pub fn image_hash(&self) -> [u8; 32] {
        image_hash(&self.measurement())
    }

    /// The report as JSON (what `cocoon attest inspect` prints).
    pub fn to_json(&self) -> serde_json::Value {
        let f = &self.parsed;
        let tcb = |t: &sev::firmware::host::TcbVersion| {
            serde_json::json!({
                "fmc": t.fmc, "bootloader": t.bootloader, "tee": t.tee, "snp": t.snp,
                "microcode": t.microcode,
            })
        };
        serde_json::json!({
            "tee": "sev-snp",
            "version": self.version(),
            "guest_svn": f.guest_svn,
            "policy": format!("{:#x}", self.policy()),
            "debug_allowed": self.debug_allowed(),
            "family_id": hex::encode(f.family_id),
            "image_id": hex::encode(f.image_id),
            "vmpl": self.vmpl(),
            "signature_algo": self.signature_algo(),
            "current_tcb": tcb(&f.current_tcb),
            "reported_tcb": tcb(&f.reported_tcb),
            "committed_tcb": tcb(&f.committed_tcb),
            "launch_tcb": tcb(&f.launch_tcb),
            "report_data": hex::encode(self.report_data()),
            "measurement": hex::encode(self.measurement()),
            "host_data": hex::encode(f.host_data),
            "id_key_digest": hex::encode(f.id_key_digest),
            "author_key_digest": hex::encode(f.author_key_digest),
            "report_id": hex::encode(f.report_id),
            "report_id_ma": hex::encode(f.report_id_ma),
            "chip_id": hex::encode(self.chip_id()),
            "current_version": format!("{}.{}.{}", f.current.major, f.current.minor, f.current.build),
            "committed_version": format!("{}.{}.{}", f.committed.major, f.committed.minor, f.committed.build),
            "image_hash": hex::encode(self.image_hash()),
        })
    }
}

/// COCOON's image hash of an SNP measurement: `SHA-256(measurement ‖ 0^64)`.
pub fn image_hash(measurement: &[u8; 48]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(measurement);
    h.update([0u8; 64]);
    h.finalize().into()
}
