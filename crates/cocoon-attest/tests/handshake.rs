//! The RA-TLS handshake matrix over loopback, the PoW gate on real sockets, and
//! certificate renewal under live connections.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cocoon_attest::cert::{issue_certificate, IssueOptions, CERT_VALIDITY};
use cocoon_attest::dcap::{collateral_from_json, DcapVerifier, StaticCollateral};
use cocoon_attest::quote::FAKE_TDX_IMAGE_HASH_HEX;
use cocoon_attest::tee::{fake_quote, report_data_for_key};
use cocoon_attest::{
    dial, AttestError, AttestedListener, AttestedStream, CertResolver, ClientConfig, PeerIdentity,
    PeerTee, Policy, ServerConfig, TeeMode,
};
use ed25519_dalek::SigningKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

fn node(tee: TeeMode) -> (Arc<CertResolver>, [u8; 32]) {
    let k = key();
    let pk = k.verifying_key().to_bytes();
    (CertResolver::new(k, tee).unwrap(), pk)
}

/// A fixed certificate built from `key` with `quote` and `opts`.
fn custom(key: &SigningKey, quote: Option<&[u8]>, opts: IssueOptions) -> Arc<CertResolver> {
    let evidence = match quote {
        Some(q) => cocoon_attest::tee::Evidence::Tdx(q.to_vec()),
        None => cocoon_attest::tee::Evidence::None,
    };
    let c = issue_certificate(key, &evidence, &opts).unwrap();
    CertResolver::from_der(c.cert_der, c.key_pkcs8_der).unwrap()
}

fn fake_cert_with(opts: IssueOptions) -> Arc<CertResolver> {
    let k = key();
    let q = fake_quote(&report_data_for_key(&k.verifying_key().to_bytes()));
    custom(&k, Some(&q), opts)
}

fn tdx_policy() -> Policy {
    let col = collateral_from_json(include_bytes!("data/tdx_quote_collateral.json")).unwrap();
    Policy::tdx(Arc::new(DcapVerifier::new(Arc::new(StaticCollateral(col)))))
}

type Side = Result<(AttestedStream, PeerIdentity), AttestError>;

/// Runs one connection: server (identity, policy) vs client (identity, policy), with a
/// low PoW difficulty so tests stay quick. Returns (server result, client result).
async fn connect(
    server: Arc<CertResolver>,
    server_policy: Policy,
    client: Arc<CertResolver>,
    client_policy: Policy,
) -> (Side, Side) {
    let scfg = ServerConfig::new(server, Arc::new(server_policy))
        .unwrap()
        .with_pow_difficulty(Some(8));
    let l = AttestedListener::bind("127.0.0.1:0", scfg).await.unwrap();
    let addr = l.local_addr().unwrap();
    let srv = tokio::spawn(async move {
        let inc = l.accept().await?;
        inc.establish().await
    });
    let ccfg = ClientConfig::new(client, Arc::new(client_policy)).unwrap();
    let c = dial(addr, &ccfg).await;
    let s = srv.await.unwrap();
    (s, c)
}

fn err_text(r: &Side) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn fake_to_fake_is_accepted_and_carries_data() {
    let (sres, spk) = node(TeeMode::FakeTdx);
    let (cres, cpk) = node(TeeMode::FakeTdx);
    let (s, c) = connect(sres, Policy::fake_tdx(), cres, Policy::fake_tdx()).await;
    let (mut ss, sid) = s.unwrap();
    let (mut cs, cid) = c.unwrap();
    assert_eq!(sid.public_key, cpk, "server sees the client's key");
    assert_eq!(cid.public_key, spk, "client sees the server's key");
    for id in [&sid, &cid] {
        assert_eq!(id.tee, PeerTee::FakeTdx);
        assert_eq!(hex::encode(id.image_hash), FAKE_TDX_IMAGE_HASH_HEX);
        assert_eq!(id.measurements.as_ref().unwrap().rtmr[0], [0; 48]);
    }
    cs.write_all(b"ping").await.unwrap();
    cs.flush().await.unwrap();
    let mut buf = [0u8; 4];
    ss.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    ss.write_all(b"pong").await.unwrap();
    ss.flush().await.unwrap();
    cs.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
}

#[tokio::test]
async fn fake_image_hash_allow_list_accepts_the_fake_hash() {
    let hash: [u8; 32] = hex::decode(FAKE_TDX_IMAGE_HASH_HEX)
        .unwrap()
        .try_into()
        .unwrap();
    let (sres, _) = node(TeeMode::FakeTdx);
    let (cres, _) = node(TeeMode::FakeTdx);
    let (s, c) = connect(
        sres,
        Policy::fake_tdx().with_image_hashes(vec![hash]),
        cres,
        Policy::any(),
    )
    .await;
    assert_eq!(s.unwrap().1.tee, PeerTee::FakeTdx);
    assert_eq!(c.unwrap().1.tee, PeerTee::None);
}

#[tokio::test]
async fn any_peer_is_refused_by_fake_tdx_port() {
    let (sres, _) = node(TeeMode::FakeTdx);
    let (cres, _) = node(TeeMode::None);
    let (s, _c) = connect(sres, Policy::fake_tdx(), cres, Policy::any()).await;
    assert!(
        err_text(&s)
            .contains("peer certificate carries no TEE evidence (TDX quote or SEV-SNP report), but policy fake_tee requires it"),
        "{}",
        err_text(&s)
    );
}

#[tokio::test]
async fn any_peer_is_refused_by_tdx_port() {
    let (sres, _) = node(TeeMode::FakeTdx);
    let (cres, _) = node(TeeMode::None);
    let (s, _c) = connect(sres, tdx_policy(), cres, Policy::any()).await;
    assert!(
        err_text(&s).contains("peer certificate carries no TEE evidence (TDX quote or SEV-SNP report), but policy tee requires it"),
        "{}",
        err_text(&s)
    );
}

#[tokio::test]
async fn fake_quote_is_refused_by_tdx_port() {
    let (sres, _) = node(TeeMode::FakeTdx);
    let (cres, _) = node(TeeMode::FakeTdx);
    let (s, _c) = connect(sres, tdx_policy(), cres, Policy::any()).await;
    assert!(
        err_text(&s).contains("fake TDX quote is not accepted by policy tee"),
        "{}",
        err_text(&s)
    );
}

#[tokio::test]
async fn wrong_image_hash_is_refused() {
    let (sres, _) = node(TeeMode::FakeTdx);
    let (cres, _) = node(TeeMode::FakeTdx);
    let policy = Policy::fake_tdx().with_image_hashes(vec![[0x42; 32]]);
    let (s, _c) = connect(sres, policy, cres, Policy::fake_tdx()).await;
    assert!(
        err_text(&s).contains(&format!(
            "image hash {FAKE_TDX_IMAGE_HASH_HEX} is not allowed by policy"
        )),
        "{}",
        err_text(&s)
    );
}

#[tokio::test]
async fn wrong_mrtd_is_refused() {
    let (sres, _) = node(TeeMode::FakeTdx);
    let (cres, _) = node(TeeMode::FakeTdx);
    let policy = Policy::fake_tdx().with_mrtds(vec![[1; 48]]);
    let (s, _c) = connect(sres, policy, cres, Policy::fake_tdx()).await;
    assert!(
        err_text(&s).contains(&format!("MRTD {} is not allowed", "00".repeat(48))),
        "{}",
        err_text(&s)
    );
}

#[tokio::test]
async fn quote_copied_from_another_certificate_is_refused() {
    // The client's certificate carries the (valid) quote of some other key.
    let other = key();
    let stolen = fake_quote(&report_data_for_key(&other.verifying_key().to_bytes()));
    let cres = custom(&key(), Some(&stolen), IssueOptions::default());
    let (sres, _) = node(TeeMode::FakeTdx);
    let (s, _c) = connect(sres, Policy::fake_tdx(), cres, Policy::fake_tdx()).await;
    assert!(
        err_text(&s)
            .contains("quote REPORTDATA does not match SHA-512 of the certificate public key"),
        "{}",
        err_text(&s)
    );
}

#[tokio::test]
async fn real_quote_copied_into_a_certificate_is_refused() {
    let q = include_bytes!("data/tdx_quote");
    let cres = custom(&key(), Some(q), IssueOptions::default());
    let (sres, _) = node(TeeMode::FakeTdx);
    let (s, _c) = connect(sres, tdx_policy(), cres, Policy::fake_tdx()).await;
    assert!(
        err_text(&s).contains("quote REPORTDATA does not match"),
        "{}",
        err_text(&s)
    );
}

#[tokio::test]
async fn sgx_quote_is_refused() {
    let q = include_bytes!("data/sgx_quote");
    let cres = custom(&key(), Some(q), IssueOptions::default());
    let (sres, _) = node(TeeMode::FakeTdx);
    let (s, _c) = connect(sres, tdx_policy(), cres, Policy::fake_tdx()).await;
    assert!(
        err_text(&s).contains("SGX quotes are not accepted for TLS"),
        "{}",
        err_text(&s)
    );
}

#[tokio::test]
async fn expired_server_cert_is_refused_by_client() {
    let sres = fake_cert_with(IssueOptions {
        not_before: SystemTime::now() - 2 * CERT_VALIDITY,
        ..IssueOptions::default()
    });
    let (cres, _) = node(TeeMode::FakeTdx);
    let (_s, c) = connect(sres, Policy::fake_tdx(), cres, Policy::fake_tdx()).await;
    assert!(
        err_text(&c).contains("certificate has expired"),
        "{}",
        err_text(&c)
    );
}

#[tokio::test]
async fn not_yet_valid_client_cert_is_refused_by_server() {
    let cres = fake_cert_with(IssueOptions {
        not_before: SystemTime::now() + Duration::from_secs(3600),
        ..IssueOptions::default()
    });
    let (sres, _) = node(TeeMode::FakeTdx);
    let (s, _c) = connect(sres, Policy::fake_tdx(), cres, Policy::fake_tdx()).await;
    assert!(
        err_text(&s).contains("certificate is not yet valid"),
        "{}",
        err_text(&s)
    );
}

#[tokio::test]
async fn unknown_critical_extension_is_refused() {
    let mut opts = IssueOptions::default();
    opts.extra_extensions
        .push((vec![1, 3, 6, 1, 4, 1, 99999, 1], vec![0x05, 0x00], true));
    let cres = fake_cert_with(opts);
    let (sres, _) = node(TeeMode::FakeTdx);
    // Even policy `any` rejects it.
    let (s, _c) = connect(sres, Policy::any(), cres, Policy::any()).await;
    assert!(
        err_text(&s).contains("certificate has unknown critical extension 1.3.6.1.4.1.99999.1"),
        "{}",
        err_text(&s)
    );
}

fn rcgen_cert(kp: rcgen::KeyPair) -> Arc<CertResolver> {
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&kp).unwrap();
    CertResolver::from_der(cert.der().to_vec(), kp.serialize_der()).unwrap()
}

#[tokio::test]
async fn rsa_client_cert_is_refused_even_under_any() {
    let kp = rcgen::KeyPair::from_pem(include_str!("data/rsa_key.pem")).unwrap();
    let cres = rcgen_cert(kp);
    let (sres, _) = node(TeeMode::None);
    let (s, _c) = connect(sres, Policy::any(), cres, Policy::any()).await;
    assert!(
        err_text(&s).contains("certificate key is not Ed25519 (algorithm RSA"),
        "{}",
        err_text(&s)
    );
}

#[tokio::test]
async fn ecdsa_server_cert_is_refused_even_under_any() {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let sres = rcgen_cert(kp);
    let (cres, _) = node(TeeMode::None);
    let (_s, c) = connect(sres, Policy::any(), cres, Policy::any()).await;
    assert!(
        err_text(&c).contains("certificate key is not Ed25519 (algorithm ECDSA"),
        "{}",
        err_text(&c)
    );
}

// ---- PoW gate on real sockets ----

async fn pow_server(timeout: Duration) -> (std::net::SocketAddr, tokio::task::JoinHandle<Side>) {
    let (sres, _) = node(TeeMode::FakeTdx);
    let scfg = ServerConfig::new(sres, Arc::new(Policy::fake_tdx()))
        .unwrap()
        .with_pow_difficulty(Some(12))
        .with_pow_timeout(timeout);
    let l = AttestedListener::bind("127.0.0.1:0", scfg).await.unwrap();
    let addr = l.local_addr().unwrap();
    (
        addr,
        tokio::spawn(async move { l.accept().await?.establish().await }),
    )
}

async fn read_challenge(s: &mut tokio::net::TcpStream) -> cocoon_attest::pow::PowChallenge {
    let mut c = [0u8; 24];
    s.read_exact(&mut c).await.unwrap();
    cocoon_attest::pow::PowChallenge::decode(&c).unwrap()
}

#[tokio::test]
async fn pow_wrong_magic_is_refused() {
    let (addr, srv) = pow_server(Duration::from_secs(5)).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let ch = read_challenge(&mut s).await;
    assert_eq!(ch.difficulty_bits, 12);
    let mut ans = cocoon_attest::pow::encode_response(ch.solve().unwrap());
    ans[0] ^= 0xff;
    s.write_all(&ans).await.unwrap();
    let e = err_text(&srv.await.unwrap());
    assert!(e.contains("PoW answer has wrong magic"), "{e}");
}

#[tokio::test]
async fn pow_bad_nonce_is_refused() {
    let (addr, srv) = pow_server(Duration::from_secs(5)).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let ch = read_challenge(&mut s).await;
    let bad = (0..).find(|&n| !ch.verify(n)).unwrap();
    s.write_all(&cocoon_attest::pow::encode_response(bad))
        .await
        .unwrap();
    let e = err_text(&srv.await.unwrap());
    assert!(e.contains("PoW answer does not meet difficulty 12"), "{e}");
    // The server dropped the connection.
    let mut b = [0u8; 1];
    assert_eq!(s.read(&mut b).await.unwrap_or(0), 0);
}

#[tokio::test]
async fn pow_short_answer_is_refused() {
    let (addr, srv) = pow_server(Duration::from_secs(5)).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    read_challenge(&mut s).await;
    s.write_all(&[0x19, 0x73, 0x82]).await.unwrap();
    s.shutdown().await.unwrap();
    let e = err_text(&srv.await.unwrap());
    assert!(
        e.contains("PoW peer closed the connection early (3 of 12 bytes)"),
        "{e}"
    );
}

#[tokio::test]
async fn pow_silence_times_out() {
    let (addr, srv) = pow_server(Duration::from_millis(200)).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    read_challenge(&mut s).await;
    let e = err_text(&srv.await.unwrap());
    assert!(e.contains("PoW timed out"), "{e}");
}

#[tokio::test]
async fn missing_pow_is_refused() {
    // A client that skips the gate starts TLS at once; its ClientHello is not an answer.
    let (addr, srv) = pow_server(Duration::from_secs(5)).await;
    let (cres, _) = node(TeeMode::FakeTdx);
    let ccfg = ClientConfig::new(cres, Arc::new(Policy::fake_tdx()))
        .unwrap()
        .with_pow_max_difficulty(None);
    let c = dial(addr, &ccfg).await;
    assert!(c.is_err());
    let e = err_text(&srv.await.unwrap());
    assert!(e.contains("PoW answer has wrong magic"), "{e}");
}

#[tokio::test]
async fn client_refuses_too_difficult_pow() {
    let (sres, _) = node(TeeMode::FakeTdx);
    let scfg = ServerConfig::new(sres, Arc::new(Policy::fake_tdx()))
        .unwrap()
        .with_pow_difficulty(Some(30));
    let l = AttestedListener::bind("127.0.0.1:0", scfg).await.unwrap();
    let addr = l.local_addr().unwrap();
    let _srv = tokio::spawn(async move { l.accept().await?.establish().await });
    let (cres, _) = node(TeeMode::FakeTdx);
    let ccfg = ClientConfig::new(cres, Arc::new(Policy::fake_tdx())).unwrap();
    let e = dial(addr, &ccfg).await.unwrap_err().to_string();
    assert_eq!(e, "PoW difficulty 30 exceeds the allowed maximum 28");
}

// ---- certificate renewal ----

fn server_cert(s: &AttestedStream) -> Vec<u8> {
    match s {
        tokio_rustls::TlsStream::Client(c) => {
            c.get_ref().1.peer_certificates().unwrap()[0].to_vec()
        }
        tokio_rustls::TlsStream::Server(_) => unreachable!(),
    }
}

#[tokio::test]
async fn renewal_applies_to_new_handshakes_and_keeps_old_streams() {
    let (sres, _) = node(TeeMode::FakeTdx);
    let scfg = ServerConfig::new(sres.clone(), Arc::new(Policy::fake_tdx()))
        .unwrap()
        .with_pow_difficulty(Some(4));
    let l = Arc::new(AttestedListener::bind("127.0.0.1:0", scfg).await.unwrap());
    let addr = l.local_addr().unwrap();
    let l2 = l.clone();
    // Echo server for two connections.
    tokio::spawn(async move {
        for _ in 0..2 {
            let inc = l2.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut s, _) = inc.establish().await.unwrap();
                let mut buf = [0u8; 64];
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let _ = s.flush().await;
                }
            });
        }
    });
    let (cres, _) = node(TeeMode::FakeTdx);
    let ccfg = ClientConfig::new(cres, Arc::new(Policy::fake_tdx())).unwrap();
    let (mut first, _) = dial(addr, &ccfg).await.unwrap();
    let old = sres.cert_der();
    assert_eq!(server_cert(&first), old);

    sres.renew().unwrap();
    let new = sres.cert_der();
    assert_ne!(new, old, "renewal issues a new certificate");

    let (mut second, _) = dial(addr, &ccfg).await.unwrap();
    assert_eq!(
        server_cert(&second),
        new,
        "new handshakes see the renewed certificate"
    );

    // The connection made before the renewal still works.
    let mut buf = [0u8; 5];
    first.write_all(b"hello").await.unwrap();
    first.flush().await.unwrap();
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    second.write_all(b"world").await.unwrap();
    second.flush().await.unwrap();
    second.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"world");
}

#[tokio::test]
async fn background_renewal_swaps_the_certificate() {
    let (res, _) = node(TeeMode::FakeTdx);
    let before = res.cert_der();
    let task = res.spawn_renewal(Duration::from_millis(20));
    // Poll (generously) until the background task has swapped the certificate.
    let mut changed = false;
    for _ in 0..500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if res.cert_der() != before {
            changed = true;
            break;
        }
    }
    task.abort();
    assert!(changed, "the background task renewed the certificate");
}

/// A raw TCP "server" that sends `first` and then keeps the socket open.
async fn raw_server(first: Vec<u8>) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(&first).await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    addr
}

#[tokio::test]
async fn client_refuses_a_challenge_with_wrong_magic() {
    let addr = raw_server(vec![0xAA; 24]).await;
    let (cres, _) = node(TeeMode::FakeTdx);
    let ccfg = ClientConfig::new(cres, Arc::new(Policy::fake_tdx())).unwrap();
    let e = dial(addr, &ccfg).await.unwrap_err().to_string();
    assert_eq!(e, "PoW challenge has wrong magic 0xaaaaaaaa");
}

#[tokio::test]
async fn client_gives_up_on_a_silent_server() {
    let addr = raw_server(vec![]).await;
    let (cres, _) = node(TeeMode::FakeTdx);
    let mut ccfg = ClientConfig::new(cres, Arc::new(Policy::fake_tdx())).unwrap();
    ccfg.pow_timeout = Duration::from_millis(200);
    let e = dial(addr, &ccfg).await.unwrap_err().to_string();
    assert_eq!(e, "PoW timed out after 200ms");
}

#[tokio::test]
async fn fake_sev_peers_are_accepted_beside_fake_tdx_ones_under_fake_tee() {
    // One fake-TEE port, a fake SEV-SNP server and a fake TDX client: both kinds pass.
    let (sres, spk) = node(TeeMode::FakeSev);
    let (cres, cpk) = node(TeeMode::FakeTdx);
    let (s, c) = connect(sres, Policy::fake_tdx(), cres, Policy::fake_tdx()).await;
    let (_, sid) = s.expect("the server accepts a fake TDX client");
    let (_, cid) = c.expect("the client accepts a fake SEV-SNP server");
    assert_eq!(sid.public_key, cpk);
    assert_eq!(sid.tee, PeerTee::FakeTdx);
    assert_eq!(cid.public_key, spk);
    assert_eq!(cid.tee, PeerTee::FakeSev);
    assert_eq!(cid.sev_measurement, Some([0; 48]));
    assert_eq!(
        hex::encode(cid.image_hash),
        "b5fdab78d8947eacc864bfeecb4d2100780e5afe1cd8efafb124887913ac49fa",
        "COCOON's image hash of a zero SNP measurement"
    );
    // And SEV to SEV.
    let (sres, _) = node(TeeMode::FakeSev);
    let (cres, _) = node(TeeMode::FakeSev);
    let (s, c) = connect(sres, Policy::fake_tdx(), cres, Policy::fake_tdx()).await;
    assert_eq!(s.expect("server").1.tee, PeerTee::FakeSev);
    assert_eq!(c.expect("client").1.tee, PeerTee::FakeSev);
}

#[tokio::test]
async fn a_fake_sev_certificate_is_refused_by_a_tee_port() {
    let (sres, _) = node(TeeMode::FakeTdx);
    let (cres, _) = node(TeeMode::FakeSev);
    let (s, _c) = connect(sres, tdx_policy(), cres, Policy::any()).await;
    assert!(
        err_text(&s).contains("a fake SEV-SNP report is not accepted by policy tee"),
        "{}",
        err_text(&s)
    );
}

#[tokio::test]
async fn a_certificate_with_tdx_and_sev_evidence_is_refused() {
    let k = key();
    let rd = report_data_for_key(&k.verifying_key().to_bytes());
    let q = fake_quote(&rd);
    let opts = IssueOptions {
        extra_extensions: vec![
            (
                cocoon_attest::cert::OID_SEV_REPORT_DATA.to_vec(),
                rd.to_vec(),
                true,
            ),
            (
                cocoon_attest::cert::OID_SEV_REPORT.to_vec(),
                cocoon_attest::tee::fake_snp_report(&rd),
                true,
            ),
            (
                cocoon_attest::cert::OID_SEV_VCEK.to_vec(),
                b"-----BEGIN".to_vec(),
                true,
            ),
        ],
        ..IssueOptions::default()
    };
    let cres = custom(&k, Some(&q), opts);
    let (sres, _) = node(TeeMode::FakeTdx);
    let (s, _c) = connect(sres, Policy::any(), cres, Policy::any()).await;
    assert!(
        err_text(&s).contains("both TDX and SEV-SNP evidence"),
        "even policy any refuses it: {}",
        err_text(&s)
    );
}

#[tokio::test]
async fn a_fake_sev_report_bound_to_another_key_is_refused() {
    // The .100 extension matches the key, but the report inside was made for another key:
    // COCOON's fake policy never looks inside; ours does.
    let k = key();
    let rd = report_data_for_key(&k.verifying_key().to_bytes());
    let other = report_data_for_key(&[9; 32]);
    let evidence = cocoon_attest::tee::Evidence::Sev {
        report_data: rd,
        report: cocoon_attest::tee::fake_snp_report(&other),
        vcek_pem: b"-----BEGIN CERTIFICATE-----".to_vec(),
    };
    let c = issue_certificate(&k, &evidence, &IssueOptions::default()).unwrap();
    let cres = CertResolver::from_der(c.cert_der, c.key_pkcs8_der).unwrap();
    let (sres, _) = node(TeeMode::FakeTdx);
    let (s, _c) = connect(sres, Policy::fake_tdx(), cres, Policy::any()).await;
    assert!(
        err_text(&s).contains("REPORTDATA does not match"),
        "{}",
        err_text(&s)
    );
}

#[test]
fn a_real_snp_report_passes_policy_tee_with_its_image_hash_allowed_and_not_otherwise() {
    let text: String = String::from_utf8_lossy(include_bytes!("data/sev-snp/report_milan.hex"))
        .split_whitespace()
        .collect();
    let report = hex::decode(text).unwrap();
    let vcek = include_bytes!("data/sev-snp/vcek_milan.der");
    let parsed = cocoon_attest::sev::SnpReport::from_bytes(&report).unwrap();
    let rd = parsed.report_data();
    let toml = |hashes: &str| format!("kind = \"tee\"\nallowed_image_hashes = [{hashes}]\n");
    let compile = |text: &str| {
        let cfg: cocoon_attest::PolicyConfig = toml::from_str(text).unwrap();
        let col = collateral_from_json(include_bytes!("data/tdx_quote_collateral.json")).unwrap();
        let dcap = Arc::new(DcapVerifier::new(Arc::new(StaticCollateral(col))));
        Policy::from_config(&cfg, Some(dcap)).unwrap()
    };
    let allowed = compile(&toml(&format!(
        "\"sev@{}\"",
        hex::encode(parsed.image_hash())
    )));
    let id = allowed.verify_sev(&report, vcek, &rd).expect("accepted");
    assert_eq!(id.tee, PeerTee::SevSnp);
    assert_eq!(id.image_hash, parsed.image_hash());
    assert_eq!(id.sev_measurement, Some(parsed.measurement()));
    // The same hash allowed for TDX only: an SEV peer is refused.
    let tdx_only = compile(&toml(&format!(
        "\"tdx@{}\"",
        hex::encode(parsed.image_hash())
    )));
    let err = tdx_only
        .verify_sev(&report, vcek, &rd)
        .expect_err("refused");
    assert!(
        err.to_string().contains("is not allowed by policy"),
        "{err}"
    );
    // Another key's hash: refused before anything is trusted.
    let err = allowed
        .verify_sev(&report, vcek, &[1; 64])
        .expect_err("refused");
    assert!(
        err.to_string().contains("report_data is not the expected"),
        "{err}"
    );
    // AMD collateral from a directory (files only): the chain verifies the same report;
    // a CRL that AMD's ARK did not sign makes the policy fail to compile, loudly.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Milan.cert_chain.pem"),
        include_bytes!("data/sev-snp/cert_chain_milan"),
    )
    .unwrap();
    let with_files = compile(&format!(
        "kind = \"tee\"\nsev_kds = \"files\"\nsev_collateral = {:?}\n",
        dir.path().display().to_string()
    ));
    with_files
        .verify_sev(&report, vcek, &rd)
        .expect("accepted with the files' chain");
    std::fs::write(dir.path().join("Milan.crl.der"), b"not a CRL").unwrap();
    let cfg: cocoon_attest::PolicyConfig = toml::from_str(&format!(
        "kind = \"tee\"\nsev_kds = \"files\"\nsev_collateral = {:?}\n",
        dir.path().display().to_string()
    ))
    .unwrap();
    let col = collateral_from_json(include_bytes!("data/tdx_quote_collateral.json")).unwrap();
    let dcap = Arc::new(DcapVerifier::new(Arc::new(StaticCollateral(col))));
    let err = Policy::from_config(&cfg, Some(dcap)).expect_err("a bad CRL");
    assert!(err.to_string().contains("Milan.crl.der"), "{err}");
    // Old policy names still work.
    let old: cocoon_attest::PolicyConfig = toml::from_str("kind = \"tdx\"").unwrap();
    assert_eq!(old.kind, cocoon_attest::PolicyKind::Tee);
    let old: cocoon_attest::PolicyConfig = toml::from_str("kind = \"fake_tdx\"").unwrap();
    assert_eq!(old.kind, cocoon_attest::PolicyKind::FakeTee);
}
