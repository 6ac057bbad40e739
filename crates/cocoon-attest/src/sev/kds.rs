//! Collateral from AMD's Key Distribution Service (KDS): a chip's VCEK for its TCB, and a
//! product's ASK + ARK chain, kept in a cache directory that works offline once filled
//! (cocoon-protocol-9060ce5.md §7.9, "KDS"). KDS answers 429 when asked too often: the
//! client waits as it says (`Retry-After`) or backs off, within a time budget.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{Product, SnpReport, Tcb, Vcek};
use crate::pccs::http_get;

/// AMD's KDS.
pub const KDS_URL: &str = "https://kdsintf.amd.com";

/// Why collateral could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KdsError {
    /// Files-only mode and the cache lacks the file.
    #[error("{0} is not in the collateral cache and fetching is off (files only)")]
    NotCached(PathBuf),
    /// KDS could not be reached or answered an error.
    #[error("AMD KDS: {0}")]
    Fetch(String),
    /// KDS kept refusing (429) past the time budget.
    #[error("AMD KDS rate limit: still refused after {0:?}")]
    RateLimited(Duration),
    /// What KDS or the cache holds does not parse.
    #[error("collateral {path}: {reason}")]
    Invalid {
        /// The cache file or URL.
        path: String,
        /// Why.
        reason: String,
    },
    /// The cache directory could not be written.
    #[error("collateral cache {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Where collateral comes from besides the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KdsSource {
    /// KDS at this base URL (normally [`KDS_URL`]).
    Online(String),
    /// The cache directory only (operators who place VCEKs and chains themselves).
    FilesOnly,
}

/// A KDS client with a cache directory laid out as `DIR/<Product>.cert_chain.pem` and
/// `DIR/vcek/<Product>/<hwID hex>-<fmc>-<bl>-<tee>-<snp>-<ucode>.der`.
#[derive(Debug, Clone)]
pub struct Kds {
    source: KdsSource,
    cache: PathBuf,
    /// How long one request may take.
    pub timeout: Duration,
    /// How long to keep retrying a rate-limited request (COCOON's image: 300 s).
    pub budget: Duration,
    /// The first back-off when KDS gives no `Retry-After` (COCOON's image: 10 s, doubling).
    pub backoff: Duration,
    /// A cached chain older than this is fetched again (COCOON's image: a 7-day timer).
    pub chain_max_age: Duration,
}

impl Kds {
    /// Collateral from `source`, cached in `cache`.
    pub fn new(source: KdsSource, cache: impl Into<PathBuf>) -> Self {
        Kds {
            source,
            cache: cache.into(),
            timeout: Duration::from_secs(30),
            budget: Duration::from_secs(300),
            backoff: Duration::from_secs(10),
            chain_max_age: Duration::from_secs(7 * 86_400),
        }
    }

    /// The VCEK's URL path for `report`'s chip at `tcb` (Turin: `fmcSPL` first, and its
    /// hwID is the first 8 bytes of the chip id).
    pub fn vcek_path(product: Product, chip_id: &[u8; 64], tcb: &Tcb) -> String {
        let (hw_id, fmc) = match product {
            Product::Turin => (
                hex::encode(&chip_id[..8]),
                format!("fmcSPL={:02}&", tcb.fmc.unwrap_or(0)),
            ),
            _ => (hex::encode(chip_id), String::new()),
        };
        format!(
            "/vcek/v1/{}/{hw_id}?{fmc}blSPL={:02}&teeSPL={:02}&snpSPL={:02}&ucodeSPL={:02}",
            product.name(),
            tcb.bootloader,
            tcb.tee,
            tcb.snp,
            tcb.microcode
        )
    }

    fn vcek_file(&self, product: Product, chip_id: &[u8; 64], tcb: &Tcb) -> PathBuf {
        let id = match product {
            Product::Turin => hex::encode(&chip_id[..8]),
            _ => hex::encode(chip_id),
        };
        self.cache.join("vcek").join(product.name()).join(format!(
            "{id}-{}-{}-{}-{}-{}.der",
            tcb.fmc.unwrap_or(0),
            tcb.bootloader,
            tcb.tee,
            tcb.snp,
            tcb.microcode
        ))
    }

    /// The VCEK that signed `report`, from the cache or KDS (then cached).
    pub async fn vcek(&self, report: &SnpReport, product: Product) -> Result<Vcek, KdsError> {
        let chip_id = report.chip_id();
        let tcb = report.reported_tcb(product);
        let file = self.vcek_file(product, &chip_id, &tcb);
        let parse = |bytes: &[u8], path: String| {
            Vcek::from_pem_or_der(bytes).map_err(|e| KdsError::Invalid {
                path,
                reason: e.to_string(),
            })
        };
        if let Ok(bytes) = std::fs::read(&file) {
            return parse(&bytes, file.display().to_string());
        }
        let KdsSource::Online(base) = &self.source else {
            return Err(KdsError::NotCached(file));
        };
        let url = format!(
            "{}{}",
            base.trim_end_matches('/'),
            Self::vcek_path(product, &chip_id, &tcb)
        );
        let bytes = self.get(&url).await?;
        let vcek = parse(&bytes, url)?;
        store(&file, &bytes)?;
        Ok(vcek)
    }

    /// `product`'s ASK and ARK (PEM each), from the cache unless older than
    /// [`Kds::chain_max_age`], else from KDS (then cached). Offline, a stale cached chain is
    /// still used.
    pub async fn chain(&self, product: Product) -> Result<(Vec<u8>, Vec<u8>), KdsError> {
        let file = self
            .cache
            .join(format!("{}.cert_chain.pem", product.name()));
        let bytes = self
            .refreshed(&file, product, "cert_chain", |bytes, url| {
                split_chain(bytes, url).map(|_| ())
            })
            .await?;
        split_chain(&bytes, &file.display().to_string())
    }

    /// `product`'s CRL (DER, as KDS serves it), cached as `DIR/<Product>.crl.der` and
    /// refetched as chains are; check it with [`super::SnpVerifier::with_crl`].
    pub async fn crl(&self, product: Product) -> Result<Vec<u8>, KdsError> {
        let file = self.cache.join(format!("{}.crl.der", product.name()));
        self.refreshed(&file, product, "crl", |_, _| Ok(())).await
    }

    /// A product-wide file (`/vcek/v1/<Product>/<what>`): the cached copy while younger
    /// than [`Kds::chain_max_age`], else KDS's (checked with `check`, then cached); offline
    /// or refused, a stale copy beats none.
    async fn refreshed(
        &self,
        file: &Path,
        product: Product,
        what: &str,
        check: impl Fn(&[u8], &str) -> Result<(), KdsError>,
    ) -> Result<Vec<u8>, KdsError> {
        let cached = std::fs::read(file).ok();
        let fresh = std::fs::metadata(file)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < self.chain_max_age);
        match (&self.source, cached) {
            (_, Some(bytes)) if fresh => Ok(bytes),
            (KdsSource::FilesOnly, Some(bytes)) => Ok(bytes),
            (KdsSource::FilesOnly, None) => Err(KdsError::NotCached(file.to_owned())),
            (KdsSource::Online(base), cached) => {
                let url = format!(
                    "{}/vcek/v1/{}/{what}",
                    base.trim_end_matches('/'),
                    product.name()
                );
                match self.get(&url).await {
                    Ok(bytes) => {
                        check(&bytes, &url)?;
                        store(file, &bytes)?;
                        Ok(bytes)
                    }
                    Err(e) => cached.ok_or(e),
                }
            }
        }
    }

    /// One GET, waiting out 429s within the budget.
    async fn get(&self, url: &str) -> Result<Vec<u8>, KdsError> {
        let start = tokio::time::Instant::now();
        let mut backoff = self.backoff;
        loop {
            let r = http_get(url, self.timeout).await.map_err(KdsError::Fetch)?;
            match r.status {
                200 => return Ok(r.body),
                429 | 503 => {
                    let wait = r
                        .header("retry-after")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs)
                        .unwrap_or(backoff)
                        .max(backoff);
                    if start.elapsed() + wait > self.budget {
                        return Err(KdsError::RateLimited(self.budget));
                    }
                    tracing::info!(url, ?wait, "AMD KDS asks to wait");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(self.budget);
                }
                other => {
                    return Err(KdsError::Fetch(format!(
                        "GET {url}: HTTP {other}: {}",
                        String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
                    )))
                }
            }
        }
    }
}

/// The two PEM certificates of a KDS `cert_chain`, naming `path` in the error.
fn split_chain(bytes: &[u8], path: &str) -> Result<(Vec<u8>, Vec<u8>), KdsError> {
    super::split_chain(bytes).map_err(|e| KdsError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Writes `bytes` to `file` atomically (a temporary file renamed into place).
fn store(file: &Path, bytes: &[u8]) -> Result<(), KdsError> {
    let io = |source| KdsError::Io {
        path: file.to_owned(),
        source,
    };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // One temporary name per write: two refreshers sharing a cache never trip each other.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = file.with_extension(format!("part-{}-{n}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, file).map_err(io)
}
