//! Quote parsing against real data, and DCAP verification of dcap-qvl's sample quotes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cocoon_attest::dcap::{
    collateral_from_json, root_key_id, BoxFuture, CollateralSource, DcapError, DcapVerifier,
    StaticCollateral, INTEL_ROOT_CA_DER,
};
use cocoon_attest::quote::{parse_quote, BodyKind, QuoteBody, QuoteError};
use dcap_qvl::QuoteCollateralV3;

const COCOON_QUOTE: &[u8] = include_bytes!("data/tdx-quote-v4.dat");
const SAMPLE_QUOTE: &[u8] = include_bytes!("data/tdx_quote");
const SAMPLE_COLLATERAL: &[u8] = include_bytes!("data/tdx_quote_collateral.json");
const SGX_QUOTE: &[u8] = include_bytes!("data/sgx_quote");
/// QE identity issueDate of the sample collateral + 60 s: inside every validity window.
const PINNED_NOW: u64 = 1_750_329_147 + 60;
/// TCB info nextUpdate of the sample collateral.
const COLLATERAL_NEXT_UPDATE: u64 = 1_752_920_163;

fn h(b: &[u8]) -> String {
    hex::encode(b)
}

#[test]
fn cocoon_test_quote_matches_spec_7_5() {
    assert_eq!(COCOON_QUOTE.len(), 5010);
    let q = parse_quote(COCOON_QUOTE).unwrap();
    assert_eq!((q.version, q.att_key_type, q.tee_type), (4, 2, 0x81));
    assert_eq!(q.body_kind, BodyKind::Td10);
    assert_eq!(h(&q.qe_vendor_id), "939a7233f79c4ca9940a0db3957f0607");
    let QuoteBody::Tdx {
        measurements: m,
        extra,
    } = &q.body
    else {
        panic!("not TDX")
    };
    assert_eq!(h(&extra.td_attributes), "0000001000000000");
    assert_eq!(h(&extra.xfam), "e702060000000000");
    assert!(h(&extra.tee_tcb_svn).starts_with("07010300"));
    assert_eq!(h(&m.mrtd), "7357a10d2e2724dffe68813e3cc4cfcde6814d749f2fb62e3953e54f6e0b50a219786afe2cd478f684b52c61837e1114");
    assert_eq!(m.mr_config_id, [0; 48]);
    assert_eq!(m.mr_owner, [0; 48]);
    assert_eq!(m.mr_owner_config, [0; 48]);
    assert_eq!(h(&m.rtmr[0]), "251a7f3cfc68006349444307c686485986beea461740437dae618e22a7aaac4ec0233ae0190eb1ce92ab8e9966563acc");
    assert_eq!(h(&m.rtmr[1]), "7a6eb32a914226f429922564bb0ae0a7c7c413ba5a8ef055b481f6328108da335013b79c391dcc237f7e563674ce7787");
    assert_eq!(h(&m.rtmr[2]), "aaccda38cf2bdee9965664d6793c9eaa93349564a052f36db45da5db656abe7b909d92cad5a29287f2bb78761771fec4");
    assert_eq!(m.rtmr[3], [0; 48]);
    assert_eq!(h(&m.report_data), "d21efaa8d7de2b0f5601df8b24cfbca690c5231e677d0fe35954c8be00614bd27f467a5624a6667aa74506cb14c271a48894c3ef11d2d26b269a2926fc74f87b");
    assert_eq!(
        h(&m.image_hash()),
        "04b3afd931d28680af91a15b09d672c40ad6b141f7f9089a8d67d595220f7436"
    );
}

/// Rebuilds the v4 TD 1.0 test quote as a v5 quote with the given body type.
fn as_v5(body_type: u16, extra_body: usize) -> Vec<u8> {
    let mut q = COCOON_QUOTE[..48].to_vec();
    q[0] = 5;
    q.extend_from_slice(&body_type.to_le_bytes());
    q.extend_from_slice(&((584 + extra_body) as u32).to_le_bytes());
    q.extend_from_slice(&COCOON_QUOTE[48..632]);
    q.extend(std::iter::repeat_n(0xAB, extra_body));
    q.extend_from_slice(&[0; 4]);
    q
}

#[test]
fn v5_td10_and_td15_bodies_parse_like_v4() {
    let v4 = parse_quote(COCOON_QUOTE).unwrap();
    let td10 = parse_quote(&as_v5(2, 0)).unwrap();
    assert_eq!((td10.version, td10.body_kind), (5, BodyKind::Td10));
    assert_eq!(td10.tdx(), v4.tdx());
    let td15 = parse_quote(&as_v5(3, 64)).unwrap();
    assert_eq!(td15.body_kind, BodyKind::Td15);
    assert_eq!(td15.tdx(), v4.tdx());
    // Size must match the body type exactly.
    assert_eq!(
        parse_quote(&as_v5(3, 0)).unwrap_err(),
        QuoteError::BodySizeMismatch {
            body_type: 3,
            expected: 648,
            actual: 584
        }
    );
    assert_eq!(
        parse_quote(&as_v5(9, 0)).unwrap_err(),
        QuoteError::UnsupportedBodyType(9)
    );
    // SGX body type under a TDX header is refused.
    let mut bad = as_v5(1, 0);
    bad[50..54].copy_from_slice(&384u32.to_le_bytes());
    assert!(matches!(
        parse_quote(&bad),
        Err(QuoteError::BodyTeeMismatch { body_type: 1, .. })
    ));
}

#[test]
fn sample_quotes_parse() {
    let q = parse_quote(SAMPLE_QUOTE).unwrap();
    assert_eq!(
        (q.version, q.tee_type, q.body_kind),
        (4, 0x81, BodyKind::Td10)
    );
    // dcap-qvl's own parser agrees on MRTD.
    let theirs = dcap_qvl::quote::Quote::parse(SAMPLE_QUOTE).unwrap();
    let td = theirs.report.as_td10().unwrap();
    assert_eq!(td.mr_td, q.tdx().unwrap().mrtd);
    let sgx = parse_quote(SGX_QUOTE).unwrap();
    assert_eq!((sgx.tee_type, sgx.body_kind), (0, BodyKind::Sgx));
    assert!(sgx.tdx().is_none());
    // TD 1.5 "ex" bodies (type 4) are not part of COCOON's format.
    let ex = parse_quote(include_bytes!("data/tdx_quote_td15ex")).unwrap_err();
    assert_eq!(ex, QuoteError::UnsupportedBodyType(4));
}

fn collateral() -> QuoteCollateralV3 {
    collateral_from_json(SAMPLE_COLLATERAL).unwrap()
}

fn verifier_at(now: u64) -> DcapVerifier {
    DcapVerifier::new(Arc::new(StaticCollateral(collateral()))).with_clock(Arc::new(move || now))
}

#[test]
fn sample_quote_verifies_at_pinned_time() {
    let v = verifier_at(PINNED_NOW);
    let r = v
        .verify_with_collateral(SAMPLE_QUOTE, &collateral(), PINNED_NOW)
        .unwrap();
    assert_eq!(r.tcb_status, "UpToDate");
    assert_eq!(Some(r.root_key_id), root_key_id(INTEL_ROOT_CA_DER));
    assert!(r.expires_at >= PINNED_NOW && r.expires_at <= COLLATERAL_NEXT_UPDATE);
}

#[test]
fn flipped_byte_fails() {
    let v = verifier_at(PINNED_NOW);
    // One byte in REPORTDATA (signed by the QE) and one in the signature area.
    for pos in [600, SAMPLE_QUOTE.len() - 100] {
        let mut q = SAMPLE_QUOTE.to_vec();
        q[pos] ^= 0x01;
        let e = v
            .verify_with_collateral(&q, &collateral(), PINNED_NOW)
            .unwrap_err();
        assert!(matches!(e, DcapError::Verify(_)), "pos {pos}: {e}");
    }
}

#[test]
fn expired_collateral_fails() {
    let later = COLLATERAL_NEXT_UPDATE + 86_400;
    let e = verifier_at(later)
        .verify_with_collateral(SAMPLE_QUOTE, &collateral(), later)
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("expired"), "{msg}");
}

#[test]
fn root_key_not_allow_listed_fails() {
    let v = verifier_at(PINNED_NOW).with_allowed_root_key_ids(vec![[0x11; 48]]);
    let e = v
        .verify_with_collateral(SAMPLE_QUOTE, &collateral(), PINNED_NOW)
        .unwrap_err();
    assert!(matches!(e, DcapError::RootKeyNotAllowed(_)), "{e}");
    assert!(e.to_string().contains("is not allow-listed"));
}

#[test]
fn tcb_status_outside_allow_list_fails() {
    let v = verifier_at(PINNED_NOW).with_allowed_statuses(vec!["OutOfDate".into()]);
    let e = v
        .verify_with_collateral(SAMPLE_QUOTE, &collateral(), PINNED_NOW)
        .unwrap_err();
    assert_eq!(e.to_string(), "TCB status UpToDate is not allowed");
}

struct Counting(QuoteCollateralV3, AtomicUsize);
impl CollateralSource for Counting {
    fn fetch<'a>(
        &'a self,
        fmspc: &'a str,
        ca: &'a str,
    ) -> BoxFuture<'a, Result<QuoteCollateralV3, DcapError>> {
        assert_eq!(fmspc.len(), 12, "FMSPC is 6 bytes of upper-case hex");
        assert!(ca == "platform" || ca == "processor");
        self.1.fetch_add(1, Ordering::SeqCst);
        let c = self.0.clone();
        Box::pin(async move { Ok(c) })
    }
}

#[tokio::test]
async fn results_and_collateral_are_cached() {
    let src = Arc::new(Counting(collateral(), AtomicUsize::new(0)));
    let v = Arc::new(DcapVerifier::new(src.clone()).with_clock(Arc::new(|| PINNED_NOW)));
    assert!(v.cached(SAMPLE_QUOTE).is_none());
    let a = v.verify(SAMPLE_QUOTE).await.unwrap();
    assert_eq!(src.1.load(Ordering::SeqCst), 1);
    assert_eq!(v.cached(SAMPLE_QUOTE), Some(a.clone()));
    let b = v.verify(SAMPLE_QUOTE).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(
        src.1.load(Ordering::SeqCst),
        1,
        "second verify must hit the cache"
    );
    // A tampered quote is not served from the cache (different key) and fails.
    let mut q = SAMPLE_QUOTE.to_vec();
    q[600] ^= 1;
    assert!(v.verify(&q).await.is_err());
}

#[tokio::test]
async fn cached_result_expires_with_collateral() {
    let now = Arc::new(std::sync::atomic::AtomicU64::new(PINNED_NOW));
    let n2 = now.clone();
    let v = Arc::new(
        DcapVerifier::new(Arc::new(StaticCollateral(collateral())))
            .with_clock(Arc::new(move || n2.load(Ordering::SeqCst))),
    );
    v.verify(SAMPLE_QUOTE).await.unwrap();
    now.store(COLLATERAL_NEXT_UPDATE + 86_400, Ordering::SeqCst);
    assert!(v.cached(SAMPLE_QUOTE).is_none());
    assert!(v.verify(SAMPLE_QUOTE).await.is_err());
}

// ---- the `tdx` policy end to end on a real quote (REPORTDATA given explicitly) ----

fn sample_report_data() -> [u8; 64] {
    parse_quote(SAMPLE_QUOTE)
        .unwrap()
        .tdx()
        .unwrap()
        .report_data
}

fn tdx_policy() -> cocoon_attest::Policy {
    cocoon_attest::Policy::tdx(Arc::new(verifier_at(PINNED_NOW)))
}

#[tokio::test]
async fn tdx_policy_accepts_the_sample_quote() {
    let m = parse_quote(SAMPLE_QUOTE).unwrap().tdx().unwrap().clone();
    let p = tdx_policy()
        .with_mrtds(vec![m.mrtd])
        .with_rtmrs(vec![m.rtmr])
        .with_image_hashes(vec![m.image_hash()])
        .with_collateral_root_hashes(vec![root_key_id(INTEL_ROOT_CA_DER).unwrap()]);
    let id = p
        .verify_quote(Some(SAMPLE_QUOTE), &sample_report_data())
        .await
        .unwrap();
    assert_eq!(id.tee, cocoon_attest::PeerTee::Tdx);
    assert_eq!(id.tcb_status.as_deref(), Some("UpToDate"));
    assert_eq!(id.image_hash, m.image_hash());
    assert_eq!(
        Some(id.collateral_root_hash),
        root_key_id(INTEL_ROOT_CA_DER)
    );
    assert_eq!(id.measurements, Some(m));
}

#[tokio::test]
async fn tdx_policy_allow_lists_refuse_with_reasons() {
    let rd = sample_report_data();
    let e = tdx_policy()
        .with_mrtds(vec![[1; 48]])
        .verify_quote(Some(SAMPLE_QUOTE), &rd)
        .await
        .unwrap_err();
    assert!(
        e.to_string().starts_with("MRTD ") && e.to_string().ends_with(" is not allowed by policy"),
        "{e}"
    );
    let e = tdx_policy()
        .with_rtmrs(vec![[[0; 48]; 4]])
        .verify_quote(Some(SAMPLE_QUOTE), &rd)
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "RTMR values are not allowed by policy");
    let e = tdx_policy()
        .with_image_hashes(vec![[2; 32]])
        .verify_quote(Some(SAMPLE_QUOTE), &rd)
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("image hash "), "{e}");
    let e = tdx_policy()
        .with_collateral_root_hashes(vec![[3; 48]])
        .verify_quote(Some(SAMPLE_QUOTE), &rd)
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("collateral root hash "), "{e}");
    let e = tdx_policy()
        .verify_quote(Some(SAMPLE_QUOTE), &[0; 64])
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "quote REPORTDATA does not match SHA-512 of the certificate public key"
    );
    let e = tdx_policy().verify_quote(None, &rd).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "peer certificate carries no TEE evidence (TDX quote or SEV-SNP report), but policy tee requires it"
    );
    // DCAP failure surfaces through the policy: tampered signature area.
    // A flipped byte in the signed header (QE vendor id) breaks the ECDSA signature.
    let mut q = SAMPLE_QUOTE.to_vec();
    q[20] ^= 1;
    let e = tdx_policy().verify_quote(Some(&q), &rd).await.unwrap_err();
    assert!(matches!(e, cocoon_attest::AttestError::Dcap(_)), "{e}");
    assert!(e.to_string().starts_with("DCAP verification failed"), "{e}");
}

#[test]
fn every_dcap_sample_verifies_at_its_pinned_time_and_fails_when_tampered() {
    let all = [
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "TDRelaunchAdvised",
        "TDRelaunchAdvisedConfigurationNeeded",
    ]
    .map(String::from)
    .to_vec();
    let samples: [(&[u8], &[u8], u64); 3] = [
        (SAMPLE_QUOTE, SAMPLE_COLLATERAL, PINNED_NOW),
        (
            include_bytes!("data/tdx_quote_td15ex"),
            include_bytes!("data/tdx_quote_td15ex_collateral.json"),
            1_791_418_246,
        ),
        (
            SGX_QUOTE,
            include_bytes!("data/sgx_quote_collateral.json"),
            1_750_330_631,
        ),
    ];
    for (quote, col, now) in samples {
        let col = collateral_from_json(col).unwrap();
        let v = DcapVerifier::new(Arc::new(StaticCollateral(col.clone())))
            .with_allowed_statuses(all.clone());
        let r = v.verify_with_collateral(quote, &col, now).unwrap();
        assert!(all.contains(&r.tcb_status));
        assert!(r.expires_at >= now);
        let mut bad = quote.to_vec();
        bad[20] ^= 1;
        assert!(v.verify_with_collateral(&bad, &col, now).is_err());
        let late = r.expires_at + 1;
        assert!(v.verify_with_collateral(quote, &col, late).is_err());
    }
}
