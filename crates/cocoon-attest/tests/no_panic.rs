//! Hostile bytes never panic the quote or certificate parsers (plain proptest mirror of
//! the cargo-fuzz targets in `fuzz/`).

use cocoon_attest::cert::{issue_certificate, parse_certificate, IssueOptions};
use cocoon_attest::quote::parse_quote;
use cocoon_attest::tee::{fake_quote, report_data_for_key};
use cocoon_attest::Policy;
use proptest::prelude::*;

const QUOTE: &[u8] = include_bytes!("data/tdx-quote-v4.dat");
const SNP_REPORT_HEX: &[u8] = include_bytes!("data/sev-snp/report_milan.hex");
const VCEK: &[u8] = include_bytes!("data/sev-snp/vcek_milan.der");

fn valid_cert() -> Vec<u8> {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let q = fake_quote(&report_data_for_key(&key.verifying_key().to_bytes()));
    issue_certificate(
        &key,
        &cocoon_attest::tee::Evidence::Tdx(q),
        &IssueOptions::default(),
    )
    .unwrap()
    .cert_der
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic_the_quote_parser(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_quote(&data);
    }

    #[test]
    fn mutated_quotes_never_panic(pos in 0usize..700, val in any::<u8>(), cut in 0usize..5010) {
        let mut q = QUOTE.to_vec();
        q[pos] = val;
        q.truncate(cut);
        match parse_quote(&q) {
            Ok(p) => prop_assert!(q.len() >= 632 || p.version == 5),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn mutated_snp_reports_and_vceks_never_panic(pos in 0usize..1184, val in any::<u8>(), cut in 0usize..1400) {
        use cocoon_attest::sev::{SnpReport, Vcek};
        let text: String = String::from_utf8_lossy(SNP_REPORT_HEX).split_whitespace().collect();
        let mut raw = hex::decode(text).expect("hex");
        raw[pos] = val;
        if let Ok(r) = SnpReport::from_bytes(&raw) {
            let _ = r.to_json();
        }
        raw.truncate(cut);
        let _ = SnpReport::from_bytes_or_hex(&raw);
        let mut v = VCEK.to_vec();
        let at = pos % v.len();
        v[at] = val;
        v.truncate(cut);
        let _ = Vcek::from_pem_or_der(&v);
    }

    #[test]
    fn random_bytes_never_panic_the_cert_parser(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert!(parse_certificate(&data).is_err());
    }

    #[test]
    fn mutated_certs_never_panic_and_never_pass_unnoticed(pos in any::<prop::sample::Index>(), val in any::<u8>()) {
        let mut der = valid_cert();
        let i = pos.index(der.len());
        let changed = der[i] != val;
        der[i] = val;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let r = Policy::fake_tdx().check_cert(&der, now);
        // Any real change breaks the DER, the self-signature or a policy rule.
        if changed {
            prop_assert!(r.is_err(), "byte {} changed to {:#x} but the cert still passed", i, val);
        } else {
            prop_assert!(r.is_ok());
        }
    }
}

/// Every byte of a valid certificate, flipped in its low bit, its high bit and its two
/// tag-class bits, must make the certificate fail: nothing outside the signed part may be
/// accepted in a non-canonical form (a lenient DER reader once let the outer tag change).
#[test]
fn every_single_byte_change_is_refused() {
    let der = valid_cert();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let policy = Policy::fake_tdx();
    assert!(policy.check_cert(&der, now).is_ok());
    let mut passed = Vec::new();
    for i in 0..der.len() {
        for mask in [0x01u8, 0x80, 0x40, 0xc0] {
            let mut bad = der.clone();
            bad[i] ^= mask;
            if policy.check_cert(&bad, now).is_ok() {
                passed.push((i, bad[i]));
            }
        }
    }
    assert!(passed.is_empty(), "changes that still passed: {passed:?}");
}
