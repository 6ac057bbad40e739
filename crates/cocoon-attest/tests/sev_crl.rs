//! SEV-SNP revocation and guest policy on a synthetic AMD-shaped chain (AMD's real keys
//! cannot sign test data): an RSA-PSS "ARK" and "ASK", a P-384 "VCEK" with AMD's
//! extensions, a report signed by it, and CRLs signed by the ARK. The verifier is the one
//! the roles use, given this chain as Milan's.

use std::str::FromStr;
use std::time::Duration;

use cocoon_attest::sev::{Product, SnpError, SnpReport, SnpRules, SnpVerifier, Vcek};
use p384::pkcs8::EncodePublicKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use sha2::Digest;
use x509_cert::der::asn1::{BitString, Ia5String, OctetString};
use x509_cert::der::{Decode, Encode, EncodePem};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{DynSignatureAlgorithmIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

const CHIP: [u8; 64] = [0x5a; 64];
/// Milan TCB layout: bl, tee, _, _, _, _, snp, ucode.
const TCB_RAW: [u8; 8] = [3, 0, 0, 0, 0, 0, 8, 115];

struct Chain {
    ark_key: rsa::RsaPrivateKey,
    ark: Certificate,
    ask: Certificate,
    vcek: Certificate,
    vcek_key: p384::ecdsa::SigningKey,
}

fn rsa_key() -> rsa::RsaPrivateKey {
    rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("RSA key")
}

fn spki_of(der: &[u8]) -> SubjectPublicKeyInfoOwned {
    SubjectPublicKeyInfoOwned::from_der(der).expect("SPKI")
}

/// Signs `tbs` with `key` (RSA-PSS, SHA-384) into a certificate.
fn sign_cert(mut tbs: TbsCertificate, key: &rsa::RsaPrivateKey) -> Certificate {
    let signer = rsa::pss::SigningKey::<sha2::Sha384>::new(key.clone());
    let alg = signer.signature_algorithm_identifier().expect("alg");
    tbs.signature = alg.clone();
    let sig = signer.sign_with_rng(&mut rand::rngs::OsRng, &tbs.to_der().expect("tbs"));
    Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(&sig.to_vec()).expect("bits"),
    }
}

fn tbs(
    serial: u8,
    issuer: &str,
    subject: &str,
    spki: SubjectPublicKeyInfoOwned,
    extensions: Vec<Extension>,
) -> TbsCertificate {
    TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&[serial]).expect("serial"),
        signature: spki.algorithm.clone(), // replaced when signed
        issuer: Name::from_str(issuer).expect("issuer"),
        validity: Validity::from_now(Duration::from_secs(86_400)).expect("validity"),
        subject: Name::from_str(subject).expect("subject"),
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: (!extensions.is_empty()).then_some(extensions),
    }
}

fn amd_ext(tail: &str, value: Vec<u8>) -> Extension {
    Extension {
        extn_id: x509_cert::der::oid::ObjectIdentifier::new(&format!("1.3.6.1.4.1.3704.1.{tail}"))
            .expect("oid"),
        critical: false,
        extn_value: OctetString::new(value).expect("octets"),
    }
}

fn int(v: u8) -> Vec<u8> {
    // DER INTEGER of a small non-negative value.
    if v < 0x80 {
        vec![0x02, 1, v]
    } else {
        vec![0x02, 2, 0, v]
    }
}

fn chain() -> Chain {
    let ark_key = rsa_key();
    let ask_key = rsa_key();
    let ark_spki = spki_of(
        ark_key
            .to_public_key()
            .to_public_key_der()
            .expect("der")
            .as_bytes(),
    );
    let ask_spki = spki_of(
        ask_key
            .to_public_key()
            .to_public_key_der()
            .expect("der")
            .as_bytes(),
    );
    let ark = sign_cert(
        tbs(1, "CN=ARK-Milan", "CN=ARK-Milan", ark_spki, vec![]),
        &ark_key,
    );
    let ask = sign_cert(
        tbs(2, "CN=ARK-Milan", "CN=SEV-Milan", ask_spki, vec![]),
        &ark_key,
    );
    let vcek_key = p384::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let vcek_spki = spki_of(
        vcek_key
            .verifying_key()
            .to_public_key_der()
            .expect("der")
            .as_bytes(),
    );
    let name = Ia5String::new("Milan-B0")
        .expect("ia5")
        .to_der()
        .expect("der");
    let hw_id = OctetString::new(CHIP.to_vec())
        .expect("octets")
        .to_der()
        .expect("der");
    let vcek = sign_cert(
        tbs(
            3,
            "CN=SEV-Milan",
            "CN=SEV-VCEK",
            vcek_spki,
            vec![
                amd_ext("2", name),
                amd_ext("4", hw_id),
                amd_ext("3.1", int(TCB_RAW[0])),
                amd_ext("3.2", int(TCB_RAW[1])),
                amd_ext("3.3", int(TCB_RAW[6])),
                amd_ext("3.8", int(TCB_RAW[7])),
            ],
        ),
        &ask_key,
    );
    Chain {
        ark_key,
        ark,
        ask,
        vcek,
        vcek_key,
    }
}

/// A version-2 report for `CHIP` at `TCB_RAW` with `policy`, signed by the chain's VCEK.
fn report(c: &Chain, policy: u64) -> SnpReport {
    let mut r = vec![0u8; 1184];
    r[0x00] = 2;
    r[0x08..0x10].copy_from_slice(&policy.to_le_bytes());
    r[0x34] = 1;
    r[0x38..0x40].copy_from_slice(&TCB_RAW);
    r[0x50..0x90].copy_from_slice(&[0x11; 64]);
    r[0x90..0xC0].copy_from_slice(&[0x22; 48]);
    r[0x180..0x188].copy_from_slice(&TCB_RAW);
    r[0x1A0..0x1E0].copy_from_slice(&CHIP);
    r[0x1E0..0x1E8].copy_from_slice(&TCB_RAW);
    r[0x1F0..0x1F8].copy_from_slice(&TCB_RAW);
    use p384::ecdsa::signature::hazmat::PrehashSigner;
    let digest = sha2::Sha384::digest(&r[..0x2A0]);
    let sig: p384::ecdsa::Signature = c.vcek_key.sign_prehash(&digest).expect("sign");
    let (rr, ss) = sig.split_bytes();
    for i in 0..48 {
        r[0x2A0 + i] = rr[47 - i];
        r[0x2A0 + 72 + i] = ss[47 - i];
    }
    SnpReport::from_bytes(&r).expect("report")
}

fn pem(c: &Certificate) -> Vec<u8> {
    c.to_pem(x509_cert::der::pem::LineEnding::LF)
        .expect("pem")
        .into_bytes()
}

fn verifier(c: &Chain, rules: SnpRules) -> SnpVerifier {
    SnpVerifier::amd(rules)
        .expect("roots")
        .with_chain(Product::Milan, &pem(&c.ask), &pem(&c.ark))
        .expect("chain")
}

/// A CRL issued by `key` under the ARK's name, revoking `serials`.
fn crl(c: &Chain, key: &rsa::RsaPrivateKey, serials: &[&SerialNumber]) -> Vec<u8> {
    use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
    let signer = rsa::pss::SigningKey::<sha2::Sha384>::new(key.clone());
    let alg = signer.signature_algorithm_identifier().expect("alg");
    let now = Time::try_from(std::time::SystemTime::now()).expect("time");
    let tbs = TbsCertList {
        version: Version::V2,
        signature: alg.clone(),
        issuer: c.ark.tbs_certificate.subject.clone(),
        this_update: now,
        next_update: Some(now),
        revoked_certificates: (!serials.is_empty()).then(|| {
            serials
                .iter()
                .map(|s| RevokedCert {
                    serial_number: (*s).clone(),
                    revocation_date: now,
                    crl_entry_extensions: None,
                })
                .collect()
        }),
        crl_extensions: None,
    };
    let sig = signer.sign_with_rng(&mut rand::rngs::OsRng, &tbs.to_der().expect("tbs"));
    CertificateList {
        tbs_cert_list: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(&sig.to_vec()).expect("bits"),
    }
    .to_der()
    .expect("der")
}

#[test]
fn revoked_vceks_and_asks_are_refused_and_only_the_arks_crls_count() {
    let c = chain();
    let vcek = Vcek::from_pem_or_der(&c.vcek.to_der().expect("der")).expect("VCEK");
    let report = report(&c, 0x30000);
    let plain = verifier(&c, SnpRules::default());
    plain
        .verify(&report, &vcek, None)
        .expect("the synthetic chain verifies");

    // An empty CRL from the ARK: still accepted.
    let clean = verifier(&c, SnpRules::default())
        .with_crl(Product::Milan, &crl(&c, &c.ark_key, &[]))
        .expect("the ARK's CRL");
    clean.verify(&report, &vcek, None).expect("not revoked");
    // The VCEK revoked.
    let revoked = verifier(&c, SnpRules::default())
        .with_crl(
            Product::Milan,
            &crl(&c, &c.ark_key, &[&c.vcek.tbs_certificate.serial_number]),
        )
        .expect("CRL");
    assert_eq!(
        revoked.verify(&report, &vcek, None),
        Err(SnpError::Revoked("VCEK", Product::Milan))
    );
    // The ASK revoked (every VCEK under it falls).
    let ask_revoked = verifier(&c, SnpRules::default())
        .with_crl(
            Product::Milan,
            &crl(&c, &c.ark_key, &[&c.ask.tbs_certificate.serial_number]),
        )
        .expect("CRL");
    assert_eq!(
        ask_revoked.verify(&report, &vcek, None),
        Err(SnpError::Revoked("ASK", Product::Milan))
    );
    // A CRL signed by anyone else is refused, not trusted.
    let forged = crl(&c, &rsa_key(), &[&c.vcek.tbs_certificate.serial_number]);
    assert!(matches!(
        verifier(&c, SnpRules::default()).with_crl(Product::Milan, &forged),
        Err(SnpError::Crl(_))
    ));
    // Our ARK's CRL means nothing to AMD's real Milan root.
    assert!(matches!(
        SnpVerifier::amd(SnpRules::default())
            .expect("roots")
            .with_crl(Product::Milan, &crl(&c, &c.ark_key, &[])),
        Err(SnpError::Crl(_))
    ));
}

#[test]
fn a_correctly_signed_debug_guest_is_refused_unless_allowed() {
    let c = chain();
    let vcek = Vcek::from_pem_or_der(&c.vcek.to_der().expect("der")).expect("VCEK");
    let debug = report(&c, 0x30000 | cocoon_attest::sev::POLICY_DEBUG_BIT);
    assert!(debug.debug_allowed());
    assert_eq!(
        verifier(&c, SnpRules::default()).verify(&debug, &vcek, None),
        Err(SnpError::DebugGuest)
    );
    let lenient = verifier(
        &c,
        SnpRules {
            allow_debug: true,
            ..SnpRules::default()
        },
    );
    lenient
        .verify(&debug, &vcek, None)
        .expect("allowed when the rules say so, and the signature is genuine");
}

/// A stand-in for AMD's KDS serving `files` (URL path → body; others 404), closed by
/// dropping the returned sender.
async fn kds(
    files: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = tokio::select! {
                accepted = listener.accept() => match accepted { Ok(x) => x, Err(_) => return },
                _ = &mut stopped => return,
            };
            let mut buf = vec![0u8; 4096];
            let len = s.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..len]).to_string();
            let path = req.split_whitespace().nth(1).unwrap_or("").to_owned();
            let body = files.lock().expect("lock").get(&path).cloned();
            let (status, body) = match body {
                Some(b) => ("200 OK", b),
                None => ("404 Not Found", b"not found".to_vec()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&body).await;
        }
    });
    (format!("http://{addr}"), stop)
}

/// What a role does with `sev_collateral` and `sev_kds`: its `tee` policy fetches the
/// product's chain and CRL from KDS into the directory and verifies with them; a CRL that
/// later revokes the VCEK takes effect on the next refresh; with KDS gone, the cached files
/// keep serving.
#[tokio::test]
async fn a_tee_policy_keeps_its_amd_collateral_fresh_from_kds() {
    use cocoon_attest::{AttestError, Policy, PolicyConfig, PolicyKind};
    let c = chain();
    let report = report(&c, 0x30000);
    let vcek = c.vcek.to_der().expect("der");
    let files = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let mut chain_pem = pem(&c.ask);
    chain_pem.extend_from_slice(&pem(&c.ark));
    files
        .lock()
        .expect("lock")
        .insert("/vcek/v1/Milan/cert_chain".to_owned(), chain_pem);
    files
        .lock()
        .expect("lock")
        .insert("/vcek/v1/Milan/crl".to_owned(), crl(&c, &c.ark_key, &[]));
    let (url, stop) = kds(files.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("sev-collateral");
    let mut cfg = PolicyConfig::new(PolicyKind::Tee);
    cfg.sev_collateral = Some(cache.clone());
    cfg.sev_kds = Some(url);
    let dcap = std::sync::Arc::new(
        cocoon_attest::dcap::DcapVerifier::from_config(&Default::default()).expect("dcap"),
    );
    let policy = Policy::from_config(&cfg, Some(dcap)).expect("policy");
    let verify = |p: &Policy| p.verify_sev(report.raw(), &vcek, &[0x11; 64]);

    // Before the first refresh only AMD's built-in Milan root is known.
    assert!(matches!(verify(&policy), Err(AttestError::Snp(_))));
    let missing = policy.refresh_collateral().await.expect("refresh");
    assert!(
        missing.iter().any(|m| m.starts_with("Genoa chain"))
            && !missing.iter().any(|m| m.starts_with("Milan")),
        "{missing:?}"
    );
    assert!(cache.join("Milan.cert_chain.pem").exists());
    assert!(cache.join("Milan.crl.der").exists());
    verify(&policy).expect("verified with the chain and CRL from KDS");

    // AMD revokes the VCEK; the next refresh that fetches the CRL applies it.
    files.lock().expect("lock").insert(
        "/vcek/v1/Milan/crl".to_owned(),
        crl(&c, &c.ark_key, &[&c.vcek.tbs_certificate.serial_number]),
    );
    std::fs::remove_file(cache.join("Milan.crl.der")).expect("age the cached CRL out");
    policy.refresh_collateral().await.expect("refresh");
    assert!(
        matches!(
            verify(&policy),
            Err(AttestError::Snp(SnpError::Revoked("VCEK", Product::Milan)))
        ),
        "{:?}",
        verify(&policy)
    );

    // KDS gone: the cache serves, the revocation stands.
    drop(stop);
    policy.refresh_collateral().await.expect("offline refresh");
    assert!(matches!(
        verify(&policy),
        Err(AttestError::Snp(SnpError::Revoked("VCEK", Product::Milan)))
    ));

    // Files only: nothing is fetched, the directory is what counts.
    cfg.sev_kds = Some("files".into());
    let dcap = std::sync::Arc::new(
        cocoon_attest::dcap::DcapVerifier::from_config(&Default::default()).expect("dcap"),
    );
    let files_only = Policy::from_config(&cfg, Some(dcap)).expect("policy");
    assert!(matches!(
        verify(&files_only),
        Err(AttestError::Snp(SnpError::Revoked("VCEK", Product::Milan)))
    ));
}
