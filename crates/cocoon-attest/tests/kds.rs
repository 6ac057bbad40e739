//! AMD KDS collateral through a local stand-in for `kdsintf.amd.com`: the VCEK and chain are
//! fetched once (a 429 waited out), then served from the cache, offline too; files-only mode
//! never fetches; a KDS that keeps refusing ends in a clear error within the budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cocoon_attest::sev::kds::{Kds, KdsError, KdsSource};
use cocoon_attest::sev::{Product, SnpReport, SnpRules, SnpVerifier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REPORT_HEX: &[u8] = include_bytes!("data/sev-snp/report_milan.hex");
const VCEK_DER: &[u8] = include_bytes!("data/sev-snp/vcek_milan.der");
const CHAIN: &[u8] = include_bytes!("data/sev-snp/cert_chain_milan");

/// A KDS stand-in: the first request of each path is refused with 429 (`Retry-After: 0`)
/// when `rate_limit_first`, or every request when `always_429`.
async fn kds(
    rate_limit_first: bool,
    always_429: bool,
) -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let paths = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (h, p) = (hits.clone(), paths.clone());
    tokio::spawn(async move {
        let mut refused = std::collections::HashSet::new();
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let n = h.fetch_add(1, Ordering::SeqCst);
            let _ = n;
            let mut buf = vec![0u8; 4096];
            let len = s.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..len]).to_string();
            let path = req.split_whitespace().nth(1).unwrap_or("").to_owned();
            p.lock().expect("lock").push(path.clone());
            let refuse = always_429 || (rate_limit_first && refused.insert(path.clone()));
            let (status, body): (&str, Vec<u8>) = if refuse {
                ("429 Too Many Requests\r\nRetry-After: 0", Vec::new())
            } else if path.ends_with("/crl") {
                ("200 OK", b"crl-bytes".to_vec())
            } else if path.ends_with("/cert_chain") {
                ("200 OK", CHAIN.to_vec())
            } else if path.starts_with("/vcek/v1/Milan/") {
                ("200 OK", VCEK_DER.to_vec())
            } else {
                ("404 Not Found", b"not found".to_vec())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&body).await;
        }
    });
    (format!("http://{addr}"), hits, paths)
}

fn report() -> SnpReport {
    SnpReport::from_bytes_or_hex(REPORT_HEX).expect("report")
}

#[tokio::test]
async fn collateral_is_fetched_once_then_served_from_the_cache_even_offline() {
    let cache = tempfile::tempdir().expect("tempdir");
    let (url, hits, paths) = kds(true, false).await;
    let mut k = Kds::new(KdsSource::Online(url), cache.path());
    k.backoff = Duration::from_millis(10);
    let report = report();
    let vcek = k.vcek(&report, Product::Milan).await.expect("VCEK");
    let (ask, ark) = k.chain(Product::Milan).await.expect("chain");
    assert_eq!(hits.load(Ordering::SeqCst), 4, "each 429 waited out once");
    let first = paths.lock().expect("lock")[0].clone();
    assert!(
        first.starts_with(&format!(
            "/vcek/v1/Milan/{}?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115",
            hex::encode(report.chip_id())
        )),
        "{first}"
    );
    // What came from KDS verifies the report.
    let verifier = SnpVerifier::amd(SnpRules::default())
        .expect("roots")
        .with_chain(Product::Milan, &ask, &ark)
        .expect("chain");
    verifier.verify(&report, &vcek, None).expect("verifies");
    assert_eq!(k.crl(Product::Milan).await.expect("CRL"), b"crl-bytes");
    assert_eq!(hits.load(Ordering::SeqCst), 6);
    // Again: the cache answers, KDS is not asked.
    k.vcek(&report, Product::Milan).await.expect("cached VCEK");
    k.chain(Product::Milan).await.expect("cached chain");
    k.crl(Product::Milan).await.expect("cached CRL");
    assert_eq!(hits.load(Ordering::SeqCst), 6);
    // Offline (a KDS that is gone) and files-only: the filled cache still serves.
    let offline = Kds::new(KdsSource::Online("http://127.0.0.1:1".into()), cache.path());
    offline
        .vcek(&report, Product::Milan)
        .await
        .expect("offline VCEK");
    let files = Kds::new(KdsSource::FilesOnly, cache.path());
    files
        .vcek(&report, Product::Milan)
        .await
        .expect("files-only VCEK");
    files.chain(Product::Milan).await.expect("files-only chain");
}

#[tokio::test]
async fn files_only_never_fetches_and_a_refusing_kds_ends_within_the_budget() {
    let empty = tempfile::tempdir().expect("tempdir");
    let files = Kds::new(KdsSource::FilesOnly, empty.path());
    assert!(matches!(
        files.vcek(&report(), Product::Milan).await,
        Err(KdsError::NotCached(_))
    ));
    assert!(matches!(
        files.chain(Product::Genoa).await,
        Err(KdsError::NotCached(_))
    ));
    let (url, hits, _) = kds(false, true).await;
    let mut k = Kds::new(KdsSource::Online(url), empty.path());
    k.backoff = Duration::from_millis(20);
    k.budget = Duration::from_millis(200);
    let err = k
        .vcek(&report(), Product::Milan)
        .await
        .expect_err("refused");
    assert!(matches!(err, KdsError::RateLimited(_)), "{err}");
    assert!(hits.load(Ordering::SeqCst) >= 2, "retried before giving up");
}

#[test]
fn turin_urls_put_fmc_first_and_use_an_8_byte_hwid() {
    let tcb = cocoon_attest::sev::Tcb {
        bootloader: 1,
        tee: 2,
        snp: 3,
        microcode: 4,
        fmc: Some(5),
    };
    let chip = [0xab; 64];
    assert_eq!(
        Kds::vcek_path(Product::Turin, &chip, &tcb),
        "/vcek/v1/Turin/abababababababab?fmcSPL=05&blSPL=01&teeSPL=02&snpSPL=03&ucodeSPL=04"
    );
}
