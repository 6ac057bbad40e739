//! The peer-info prefixes the official COCOON router really writes (captured from the
//! 9060ce5 binary, see `data/README.md`) are read as the router meant them.

use cocoon_attest::router::{AttestedPeerInfo, RouterReport};
use sha2::{Digest, Sha512};

fn captured(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/router/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("captured prefix")
}

async fn read(bytes: &[u8]) -> AttestedPeerInfo {
    let mut stream = bytes;
    let info = AttestedPeerInfo::read_from(&mut stream)
        .await
        .expect("official prefix parses");
    assert!(stream.is_empty(), "the frame is the whole capture");
    info
}

#[tokio::test]
async fn a_fake_sev_peer_through_the_official_router() {
    let bytes = captured("peer_info_fake_sev.bin");
    let info = read(&bytes).await;
    let Some(RouterReport::Sev {
        measurement,
        report_data,
    }) = &info.report
    else {
        panic!("expected an SEV-SNP report: {info:?}");
    };
    assert_eq!(measurement, &[0; 48], "fake SEV attests a zero measurement");
    // The report data binds the key the router saw: SHA-512 of it.
    assert_eq!(
        report_data.as_slice(),
        Sha512::digest(info.public_key).as_slice()
    );
    assert_eq!(
        hex::encode(info.image_hash()),
        "b5fdab78d8947eacc864bfeecb4d2100780e5afe1cd8efafb124887913ac49fa"
    );
    assert_eq!(info.source_ip, "127.0.0.1");
    assert_eq!(info.destination_port, 47102);
    assert!(info.source_addr().is_some());
    // What we write is byte for byte what the router wrote.
    assert_eq!(info.to_frame(), bytes);
}

#[tokio::test]
async fn an_unattested_peer_under_any_gets_the_empty_tdx_report() {
    let bytes = captured("peer_info_any.bin");
    let info = read(&bytes).await;
    assert_eq!(info.report, Some(RouterReport::empty()));
    assert_eq!(
        hex::encode(info.image_hash()),
        "5c55c8f4db4010ba9203d83536d0609856af8c847ac039e37e7dde8fbd574b61"
    );
    assert_eq!(info.to_frame(), bytes);
}

#[tokio::test]
async fn policies_judge_what_the_router_verified() {
    use cocoon_attest::policy::PeerTee;
    use cocoon_attest::{AttestError, Policy, PolicyConfig, PolicyKind};
    let sev = read(&captured("peer_info_fake_sev.bin")).await;
    let none = read(&captured("peer_info_any.bin")).await;

    let any = Policy::any();
    let peer = any.check_router_info(&none).expect("any takes every peer");
    assert_eq!(peer.public_key, none.public_key);
    assert_eq!(
        peer.image_hash,
        none.image_hash(),
        "as a COCOON runner takes it"
    );

    let fake = Policy::fake_tdx();
    let peer = fake
        .check_router_info(&sev)
        .expect("fake SEV under fake_tee");
    assert_eq!(peer.tee, PeerTee::FakeSev);
    assert_eq!(peer.sev_measurement, Some([0; 48]));
    // An unattested peer (what a router's `any` port lets in) proves no key binding.
    assert!(matches!(
        fake.check_router_info(&none),
        Err(AttestError::ReportDataMismatch)
    ));
    // A report that belongs to another key.
    let mut stolen = sev.clone();
    stolen.public_key[0] ^= 1;
    assert!(matches!(
        fake.check_router_info(&stolen),
        Err(AttestError::ReportDataMismatch)
    ));
    // Allow-lists apply per kind: a TDX-only list refuses the SEV peer.
    let mut cfg = PolicyConfig::new(PolicyKind::FakeTee);
    cfg.allowed_image_hashes = vec![format!("tdx@{}", "11".repeat(32))];
    let tdx_only = Policy::from_config(&cfg, None).expect("policy");
    assert!(matches!(
        tdx_only.check_router_info(&sev),
        Err(AttestError::ImageHashNotAllowed(_))
    ));
    cfg.allowed_image_hashes = vec![format!("sev@{}", hex::encode(sev.image_hash()))];
    let sev_listed = Policy::from_config(&cfg, None).expect("policy");
    sev_listed
        .check_router_info(&sev)
        .expect("the listed SEV image");

    // `tee` refuses the zero measurement of a fake SEV peer, which a lax router let in.
    let dcap = std::sync::Arc::new(
        cocoon_attest::dcap::DcapVerifier::from_config(&Default::default()).expect("dcap"),
    );
    let tee = Policy::from_config(&PolicyConfig::new(PolicyKind::Tee), Some(dcap)).expect("tee");
    assert!(matches!(
        tee.check_router_info(&sev),
        Err(AttestError::FakeSevRejected)
    ));
}

#[tokio::test]
async fn a_socks5_reply_is_followed_by_the_peer_info() {
    // What the official router's SOCKS5 port (`-S … --serialize-info`) sends back: the
    // SOCKS5 reply once PoW and RA-TLS with the target are done, then the prefix.
    let bytes = captured("socks5_reply_and_peer_info.bin");
    assert_eq!(
        &bytes[..4],
        &[5, 0, 0, 1],
        "SOCKS5 success, IPv4 bound address"
    );
    let info = read(&bytes[10..]).await;
    assert!(matches!(info.report, Some(RouterReport::Sev { .. })));
}
