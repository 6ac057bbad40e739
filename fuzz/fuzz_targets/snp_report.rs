//! Arbitrary bytes as an AMD SEV-SNP attestation report (binary or hex) and as a VCEK
//! certificate: the parsers must never panic; a parsed report's accessors and JSON never
//! panic either, and its image hash is stable.
#![no_main]

use cocoon_attest::sev::{SnpReport, Vcek};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = SnpReport::from_bytes_or_hex(data) {
        let _ = report.to_json();
        let _ = report.signature_rs();
        assert_eq!(report.image_hash(), report.clone().image_hash());
    }
    let _ = Vcek::from_pem_or_der(data);
});
