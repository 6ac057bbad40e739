//! Sealed keys: secrets only this image on this machine can derive again, so that a role
//! keeps its machine key across restarts without a key file (cocoon-protocol-9060ce5.md §8).
//!
//! On AMD SEV-SNP the secure processor derives them (`SNP_GET_DERIVED_KEY` through
//! `/dev/sev-guest`): rooted in the chip's VCEK, mixed with the guest's launch measurement
//! and image id, at VMPL 1, as COCOON's images ask for it; a named key is
//! `HMAC-SHA256(derived, name)` (COCOON names `disk_encryption` and `app`, the latter being
//! the proxy's machine key seed). COCOON's debug images use one published constant for
//! every key instead; [`SealSource::Debug`] is that stand-in for machines without a TEE,
//! and protects nothing. TDX has no sealing of its own: COCOON asks an SGX enclave on the
//! host (`seal-server`), which is not supported here.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Every key of COCOON's debug images (`docs/seal-keys.md`): public, so it seals nothing.
pub const DEBUG_SEAL_KEY: [u8; 32] = *b"cococooncococooncococooncococoon";

/// The key name COCOON gives the role's machine key (`APP_KEY`).
pub const APP_KEY_NAME: &str = "app";

/// Where sealed keys come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealSource {
    /// The AMD secure processor of this SNP guest.
    Snp,
    /// **COCOON's debug-image constant: a stand-in for TEE sealing**, for test networks.
    Debug,
}

impl SealSource {
    /// The sealing that goes with evidence of kind `tee`: the SNP secure processor for
    /// `sev`, the debug constant for fake or no evidence; none for TDX.
    pub fn for_tee(tee: crate::TeeMode) -> Result<Self, SealError> {
        use crate::TeeMode;
        match tee {
            TeeMode::Sev => Ok(SealSource::Snp),
            TeeMode::Tdx => Err(SealError::NoTdxSealing),
            TeeMode::None | TeeMode::FakeTdx | TeeMode::FakeSev => Ok(SealSource::Debug),
        }
    }
}

/// Why a sealed key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// TDX has no sealing of its own.
    #[error(
        "sealed keys are not available on TDX (COCOON seals through an SGX enclave on the \
         host, which cocoon-rs does not run)"
    )]
    NoTdxSealing,
    /// The guest device is missing: this is not an SNP guest.
    #[error("{0} is missing: sealed keys need an AMD SEV-SNP guest")]
    NoSnpGuest(&'static str),
    /// The secure processor refused or the device failed.
    #[error("SNP_GET_DERIVED_KEY through {0}: {1}")]
    Firmware(&'static str, String),
}

/// The guest device the derived key is asked from.
pub const SEV_GUEST_DEVICE: &str = "/dev/sev-guest";

/// The secret all named keys of `source` derive from.
pub fn sealing_secret(source: SealSource) -> Result<[u8; 32], SealError> {
    match source {
        SealSource::Debug => Ok(DEBUG_SEAL_KEY),
        SealSource::Snp => snp_derived_key(),
    }
}

/// The sealed key called `name` (COCOON: `HMAC-SHA256(derived, name)`; the debug constant
/// itself in debug images).
pub fn sealed_key(source: SealSource, name: &str) -> Result<[u8; 32], SealError> {
    let secret = sealing_secret(source)?;
    Ok(match source {
        SealSource::Debug => secret,
        SealSource::Snp => named_key(&secret, name),
    })
}

/// `HMAC-SHA256(secret, name)`.
pub fn named_key(secret: &[u8; 32], name: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(name.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(target_os = "linux")]
fn snp_derived_key() -> Result<[u8; 32], SealError> {
    use sev::firmware::guest::{DerivedKey, Firmware, GuestFieldSelect};
    if !std::path::Path::new(SEV_GUEST_DEVICE).exists() {
        return Err(SealError::NoSnpGuest(SEV_GUEST_DEVICE));
    }
    let mut firmware =
        Firmware::open().map_err(|e| SealError::Firmware(SEV_GUEST_DEVICE, e.to_string()))?;
    let mut fields = GuestFieldSelect::default();
    fields.set_measurement(true);
    fields.set_image_id(true);
    // Root key VCEK (not VMRK), VMPL 1, guest SVN and TCB 0; message version 1 needs no
    // launch mitigation vector and every SNP firmware answers it.
    let request = DerivedKey::new(false, fields, 1, 0, 0, None);
    firmware
        .get_derived_key(Some(1), request)
        .map_err(|e| SealError::Firmware(SEV_GUEST_DEVICE, e.to_string()))
}

#[cfg(not(target_os = "linux"))]
fn snp_derived_key() -> Result<[u8; 32], SealError> {
    Err(SealError::NoSnpGuest(SEV_GUEST_DEVICE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_keys_are_cocoons_constant() {
        assert_eq!(
            sealed_key(SealSource::Debug, APP_KEY_NAME).expect("debug"),
            *b"cococooncococooncococooncococoon"
        );
        assert_eq!(
            sealed_key(SealSource::Debug, "disk_encryption").expect("debug"),
            DEBUG_SEAL_KEY
        );
    }

    #[test]
    fn named_keys_are_hmac_sha256_of_the_name() {
        // Checked against an independent computation (Python:
        // hmac.new(b"\x0b" * 32, b"app", hashlib.sha256).hexdigest()).
        assert_eq!(
            hex::encode(named_key(&[0x0b; 32], "app")),
            "b4a9526f3638c6a5b1fdb8c584fe14eade799f0ce40d22d3c077f8092819eb93"
        );
        assert_ne!(
            named_key(&[0x0b; 32], "app"),
            named_key(&[0x0b; 32], "disk_encryption")
        );
        assert_ne!(named_key(&[0x0b; 32], "app"), named_key(&[0x0c; 32], "app"));
    }

    #[test]
    fn without_an_snp_guest_the_error_says_so() {
        if std::path::Path::new(SEV_GUEST_DEVICE).exists() {
            return; // a real SNP guest: nothing to refuse
        }
        let err = sealed_key(SealSource::Snp, APP_KEY_NAME).expect_err("no SNP guest here");
        assert!(matches!(err, SealError::NoSnpGuest(_)), "{err}");
        assert!(err.to_string().contains("/dev/sev-guest"), "{err}");
    }
}
