//! AMD SEV-SNP verification on a real Milan report, its VCEK and AMD's chain: the genuine
//! article verifies; every single-byte change to the signed part, a foreign VCEK, another
//! product's roots and a debug guest are refused, each with the check that failed.

use cocoon_attest::sev::{Product, SnpError, SnpReport, SnpRules, SnpVerifier, Vcek, SIGNED_LEN};

const REPORT_HEX: &[u8] = include_bytes!("data/sev-snp/report_milan.hex");
const VCEK_DER: &[u8] = include_bytes!("data/sev-snp/vcek_milan.der");

fn report() -> SnpReport {
    SnpReport::from_bytes_or_hex(REPORT_HEX).expect("the Milan report parses")
}

fn vcek() -> Vcek {
    Vcek::from_pem_or_der(VCEK_DER).expect("the Milan VCEK parses")
}

fn verifier() -> SnpVerifier {
    SnpVerifier::amd(SnpRules::default()).expect("AMD roots")
}

#[test]
fn the_real_milan_report_verifies() {
    let report = report();
    let vcek = vcek();
    assert_eq!(vcek.product, Product::Milan);
    // AMD writes the stepping: COCOON's verifier matches the name exactly and refuses this
    // genuine VCEK ("Unexpected product name"); ours takes the part before '-'.
    assert_eq!(vcek.product_name, "Milan-B0");
    assert_eq!(report.version(), 2);
    let ok = verifier()
        .verify(&report, &vcek, Some(&report.report_data()))
        .expect("verifies");
    assert_eq!(ok.product, Product::Milan);
    assert_eq!(ok.measurement, report.measurement());
    assert_eq!(ok.image_hash, report.image_hash());
    assert_eq!(ok.tcb, vcek.tcb);
    // The report as JSON: every field, hex.
    let json = report.to_json();
    assert_eq!(json["tee"], "sev-snp");
    assert_eq!(json["measurement"], hex::encode(report.measurement()));
    assert_eq!(json["chip_id"], hex::encode(report.chip_id()));
}

#[test]
fn every_single_byte_change_to_the_signed_part_is_refused() {
    let genuine = report();
    let vcek = vcek();
    let v = verifier();
    for at in 0..SIGNED_LEN {
        let mut raw = *genuine.raw();
        raw[at] ^= 0x01;
        match SnpReport::from_bytes(&raw) {
            Err(_) => continue, // the report's own framing refuses it already
            Ok(tampered) => {
                let err = v
                    .verify(&tampered, &vcek, None)
                    .expect_err("a changed byte is refused");
                assert!(
                    matches!(
                        err,
                        SnpError::BadSignature
                            | SnpError::SignatureAlgorithm(_)
                            | SnpError::ReportVersion(_)
                            | SnpError::DebugGuest
                            | SnpError::ChipMismatch
                            | SnpError::TcbMismatch { .. }
                    ),
                    "byte {at:#x}: {err}"
                );
            }
        }
    }
    // A changed signature too.
    let mut raw = *genuine.raw();
    raw[SIGNED_LEN + 5] ^= 0x80;
    let tampered = SnpReport::from_bytes(&raw).expect("parses");
    assert_eq!(
        v.verify(&tampered, &vcek, None),
        Err(SnpError::BadSignature)
    );
}

#[test]
fn precise_refusals() {
    let report = report();
    let vcek = vcek();
    // Another report_data than the peer's key demands.
    assert_eq!(
        verifier().verify(&report, &vcek, Some(&[7; 64])),
        Err(SnpError::ReportDataMismatch)
    );
    // A chain from another product: Genoa's roots for a Milan VCEK.
    let genoa = sev_builtin(Product::Genoa);
    let crossed = verifier()
        .with_chain(Product::Milan, &genoa.0, &genoa.1)
        .expect("chain");
    assert!(matches!(
        crossed.verify(&report, &vcek, None),
        Err(SnpError::Chain {
            product: Product::Milan,
            ..
        })
    ));
    // A debug guest: refused by default, before anything else is trusted.
    let mut raw = *report.raw();
    raw[0x08 + 2] |= 0x08; // policy bit 19
    let debug = SnpReport::from_bytes(&raw).expect("parses");
    assert!(debug.debug_allowed());
    assert_eq!(
        verifier().verify(&debug, &vcek, None),
        Err(SnpError::DebugGuest)
    );
    // Allowed by the rules, the changed byte is then caught by the signature.
    let lenient = SnpVerifier::amd(SnpRules {
        allow_debug: true,
        ..SnpRules::default()
    })
    .expect("roots");
    assert_eq!(
        lenient.verify(&debug, &vcek, None),
        Err(SnpError::BadSignature)
    );
    // A minimum TCB above the chip's.
    let mut min = vcek.tcb;
    min.microcode = min.microcode.saturating_add(1);
    let strict = SnpVerifier::amd(SnpRules {
        min_tcb: Some(min),
        ..SnpRules::default()
    })
    .expect("roots");
    assert!(matches!(
        strict.verify(&report, &vcek, None),
        Err(SnpError::TcbTooLow { .. })
    ));
    // Wrong sizes.
    assert_eq!(
        SnpReport::from_bytes(&[0; 100]).map(|_| ()),
        Err(SnpError::ReportLength(100))
    );
}

/// Another product's ASK and ARK (PEM), from the roots the `sev` crate carries.
fn sev_builtin(product: Product) -> (Vec<u8>, Vec<u8>) {
    use sev::certs::snp::builtin::{genoa, milan, turin};
    match product {
        Product::Genoa => (genoa::ASK.to_vec(), genoa::ARK.to_vec()),
        Product::Turin => (turin::ASK.to_vec(), turin::ARK.to_vec()),
        _ => (milan::ASK.to_vec(), milan::ARK.to_vec()),
    }
}

/// A DER value: tag, short length, content.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag, u8::try_from(content.len()).expect("short")];
    v.extend_from_slice(content);
    v
}

/// A self-made "VCEK" for the report's chip and TCB, signed by nobody AMD knows.
fn foreign_vcek(report: &SnpReport, genuine: &Vcek) -> Vec<u8> {
    use rcgen::{CertificateParams, CustomExtension, KeyPair, PKCS_ECDSA_P384_SHA384};
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).expect("P-384 key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    let ext = |oid: &[u64], value: Vec<u8>| CustomExtension::from_oid_content(oid, value);
    let amd = |tail: &[u64]| -> Vec<u64> {
        let mut v = vec![1, 3, 6, 1, 4, 1, 3704, 1];
        v.extend_from_slice(tail);
        v
    };
    params.custom_extensions = vec![
        ext(&amd(&[2]), der(0x16, b"Milan")),
        ext(&amd(&[4]), der(0x04, &report.chip_id())),
        ext(&amd(&[3, 1]), der(0x02, &[genuine.tcb.bootloader])),
        ext(&amd(&[3, 2]), der(0x02, &[genuine.tcb.tee])),
        ext(&amd(&[3, 3]), der(0x02, &[genuine.tcb.snp])),
        ext(&amd(&[3, 8]), der(0x02, &[genuine.tcb.microcode])),
    ];
    params.self_signed(&key).expect("cert").der().to_vec()
}

#[test]
fn a_vcek_amd_did_not_issue_is_refused() {
    let report = report();
    let forged = Vcek::from_pem_or_der(&foreign_vcek(&report, &vcek())).expect("parses");
    assert_eq!(forged.product, Product::Milan);
    assert!(matches!(
        verifier().verify(&report, &forged, None),
        Err(SnpError::Chain {
            product: Product::Milan,
            ..
        })
    ));
}
