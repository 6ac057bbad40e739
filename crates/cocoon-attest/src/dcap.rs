//! Real TDX quote verification with `dcap-qvl`: collateral fetching and caching, Intel
//! root key allow-listing, an injectable clock, and an LRU of verification results.

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use dcap_qvl::QuoteCollateralV3;
use sha2::{Digest, Sha256, Sha384};

/// Intel SGX/TDX provisioning root CA (DER), the production trust anchor.
pub const INTEL_ROOT_CA_DER: &[u8] = include_bytes!("intel_sgx_root_ca.der");
/// Default PCCS: Intel's Provisioning Certification Service.
pub const DEFAULT_PCCS_URL: &str = "https://api.trustedservices.intel.com";
/// Default size of the verification-result LRU (as in COCOON).
pub const DEFAULT_CACHE_ENTRIES: usize = 10_000;

/// A boxed future, used by [`CollateralSource`] so it stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// The verification clock: unix seconds. Injectable so tests are deterministic.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Why a real quote did not verify.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DcapError {
    /// The quote could not be decoded by dcap-qvl (or lacks a PCK chain).
    #[error("cannot decode quote for DCAP: {0}")]
    Decode(String),
    /// Collateral could not be fetched from the PCCS.
    #[error("cannot fetch collateral: {0}")]
    Collateral(String),
    /// The signature chain, CRLs, TCB info or QE identity check failed.
    #[error("DCAP verification failed: {0}")]
    Verify(String),
    /// The collateral is expired at the verification time.
    #[error("DCAP collateral expired at {expired_at}, now {now}")]
    CollateralExpired {
        /// Earliest expiration among the collateral pieces (unix seconds).
        expired_at: u64,
        /// Verification time.
        now: u64,
    },
    /// The TCB status is not acceptable (COCOON requires `UpToDate`).
    #[error("TCB status {0} is not allowed")]
    TcbStatus(String),
    /// The quote chains to a root whose key id is not allow-listed.
    #[error("collateral root key id {0} is not allow-listed")]
    RootKeyNotAllowed(String),
}

/// The outcome of a successful DCAP verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedQuote {
    /// SHA-384 of the root CA public key (COCOON's `collateral_root_hash`).
    pub root_key_id: [u8; 48],
    /// TCB status, e.g. `UpToDate`.
    pub tcb_status: String,
    /// Intel security advisories that apply.
    pub advisory_ids: Vec<String>,
    /// When the collateral used expires (unix seconds); the result is stale after it.
    pub expires_at: u64,
}

/// Where collateral comes from: a PCCS over HTTP, or fixed data in tests.
pub trait CollateralSource: Send + Sync {
    /// Fetches collateral for a TDX quote whose PCK leaf has `fmspc` (upper-case hex) and
    /// was issued by `ca` (`processor` or `platform`).
    fn fetch<'a>(
        &'a self,
        fmspc: &'a str,
        ca: &'a str,
    ) -> BoxFuture<'a, Result<QuoteCollateralV3, DcapError>>;
}

/// Fixed collateral (tests, air-gapped deployments with a pre-fetched bundle).
pub struct StaticCollateral(pub QuoteCollateralV3);

impl CollateralSource for StaticCollateral {
    fn fetch<'a>(
        &'a self,
        _fmspc: &'a str,
        _ca: &'a str,
    ) -> BoxFuture<'a, Result<QuoteCollateralV3, DcapError>> {
        let c = self.0.clone();
        Box::pin(async move { Ok(c) })
    }
}

/// Parses dcap-qvl's collateral JSON (the format of its `sample/*_collateral.json`).
pub fn collateral_from_json(bytes: &[u8]) -> Result<QuoteCollateralV3, DcapError> {
    serde_json::from_slice(bytes).map_err(|e| DcapError::Collateral(e.to_string()))
}

/// SHA-384 of the raw public key of a root CA certificate (Intel's `root_key_id`).
pub fn root_key_id(root_ca_der: &[u8]) -> Option<[u8; 48]> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(root_ca_der).ok()?;
    Some(Sha384::digest(cert.public_key().subject_public_key.data.as_ref()).into())
}

struct CachedCollateral {
    collateral: QuoteCollateralV3,
    expires_at: Option<u64>,
}

/// Settings of a [`DcapVerifier`] (also the `[dcap]` table of the policy TOML).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DcapConfig {
    /// Base URL of the PCCS (Intel PCS or a local PCCS).
    #[serde(default = "default_pccs")]
    pub pccs_url: String,
    /// Hex SHA-384 root key ids accepted; empty = Intel's production root only.
    #[serde(default)]
    pub allowed_root_key_ids: Vec<String>,
    /// TCB statuses accepted; empty = `UpToDate` only (COCOON's rule).
    #[serde(default)]
    pub allowed_tcb_statuses: Vec<String>,
    /// Size of the verification-result LRU.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
}

fn default_pccs() -> String {
    DEFAULT_PCCS_URL.to_string()
}
fn default_cache_entries() -> usize {
    DEFAULT_CACHE_ENTRIES
}

impl Default for DcapConfig {
    fn default() -> Self {
        Self {
            pccs_url: default_pccs(),
            allowed_root_key_ids: Vec::new(),
            allowed_tcb_statuses: Vec::new(),
            cache_entries: DEFAULT_CACHE_ENTRIES,
        }
    }
}

/// Verifies real TDX quotes against Intel's chain with cached collateral and results.
pub struct DcapVerifier {
    root_ca_der: Vec<u8>,
    allowed_root_key_ids: Vec<[u8; 48]>,
    allowed_statuses: Vec<String>,
    source: Arc<dyn CollateralSource>,
    clock: Clock,
    collateral: Mutex<HashMap<(String, String), CachedCollateral>>,
    results: Mutex<lru::LruCache<[u8; 32], VerifiedQuote>>,
}

impl std::fmt::Debug for DcapVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DcapVerifier")
            .field("allowed_root_key_ids", &self.allowed_root_key_ids.len())
            .field("allowed_statuses", &self.allowed_statuses)
            .finish_non_exhaustive()
    }
}

fn system_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl DcapVerifier {
    /// A verifier trusting Intel's production root, accepting `UpToDate` only, with the
    /// system clock and [`DEFAULT_CACHE_ENTRIES`] cached results.
    pub fn new(source: Arc<dyn CollateralSource>) -> Self {
        let id = root_key_id(INTEL_ROOT_CA_DER).unwrap_or([0; 48]);
        Self {
            root_ca_der: INTEL_ROOT_CA_DER.to_vec(),
            allowed_root_key_ids: vec![id],
            allowed_statuses: vec!["UpToDate".into()],
            source,
            clock: Arc::new(system_clock),
            collateral: Mutex::new(HashMap::new()),
            results: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(DEFAULT_CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// Builds a verifier from configuration, fetching collateral from its PCCS URL.
    pub fn from_config(cfg: &DcapConfig) -> Result<Self, crate::AttestError> {
        let source = Arc::new(crate::pccs::PccsClient::new(&cfg.pccs_url)?);
        let mut v = Self::new(source).with_cache_entries(cfg.cache_entries);
        if !cfg.allowed_root_key_ids.is_empty() {
            let ids = cfg
                .allowed_root_key_ids
                .iter()
                .map(|s| crate::policy::parse_hex::<48>(s, "allowed_root_key_ids"))
                .collect::<Result<Vec<_>, _>>()?;
            v = v.with_allowed_root_key_ids(ids);
        }
        if !cfg.allowed_tcb_statuses.is_empty() {
            v = v.with_allowed_statuses(cfg.allowed_tcb_statuses.clone());
        }
        Ok(v)
    }

    /// Replaces the clock (tests pin it to the collateral's validity window).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces the allowed root key ids.
    pub fn with_allowed_root_key_ids(mut self, ids: Vec<[u8; 48]>) -> Self {
        self.allowed_root_key_ids = ids;
        self
    }

    /// Replaces the accepted TCB statuses (names as printed by dcap-qvl, e.g. `OutOfDate`).
    pub fn with_allowed_statuses(mut self, statuses: Vec<String>) -> Self {
        self.allowed_statuses = statuses;
        self
    }

    /// Replaces the trust anchor (tests with a synthetic PCK chain).
    pub fn with_root_ca(mut self, der: Vec<u8>) -> Self {
        self.root_ca_der = der;
        self
    }

    /// Resizes the verification-result LRU.
    pub fn with_cache_entries(self, n: usize) -> Self {
        let n = NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        if let Ok(mut c) = self.results.lock() {
            c.resize(n);
        }
        self
    }

    /// The current verification time.
    pub fn now(&self) -> u64 {
        (self.clock)()
    }

    /// Verifies `quote` with the given collateral at time `now`, without any cache.
    /// CPU-heavy (milliseconds): call from a blocking context.
    pub fn verify_with_collateral(
        &self,
        quote: &[u8],
        collateral: &QuoteCollateralV3,
        now: u64,
    ) -> Result<VerifiedQuote, DcapError> {
        let verifier = dcap_qvl::verify::QuoteVerifier::new(self.root_ca_der.clone());
        let claims = verifier
            .verify_with_policy(
                quote,
                collateral.clone(),
                now,
                &dcap_qvl::QuotePolicy::claims_only(now),
            )
            .map_err(|e| {
                let msg = format!("{e:#}");
                if msg.to_ascii_lowercase().contains("expired") {
                    DcapError::Verify(format!("collateral expired or not yet valid: {msg}"))
                } else {
                    DcapError::Verify(msg)
                }
            })?;
        if claims.earliest_expiration_date < now {
            return Err(DcapError::CollateralExpired {
                expired_at: claims.earliest_expiration_date,
                now,
            });
        }
        let root_key_id: [u8; 48] = claims
            .platform
            .root_key_id
            .as_slice()
            .try_into()
            .map_err(|_| DcapError::Verify("root key id is not 48 bytes".into()))?;
        if !self.allowed_root_key_ids.contains(&root_key_id) {
            return Err(DcapError::RootKeyNotAllowed(hex::encode(root_key_id)));
        }
        let status = claims.tcb.status.to_string();
        if !self.allowed_statuses.iter().any(|s| s == &status) {
            return Err(DcapError::TcbStatus(status));
        }
        Ok(VerifiedQuote {
            root_key_id,
            tcb_status: status,
            advisory_ids: claims.tcb.advisory_ids.clone(),
            expires_at: claims.earliest_expiration_date,
        })
    }

    /// A cached result for `quote` that is still fresh, if any (cheap).
    pub fn cached(&self, quote: &[u8]) -> Option<VerifiedQuote> {
        let key: [u8; 32] = Sha256::digest(quote).into();
        let now = self.now();
        let mut cache = self.results.lock().ok()?;
        match cache.get(&key) {
            Some(v) if v.expires_at >= now => Some(v.clone()),
            Some(_) => {
                cache.pop(&key);
                None
            }
            None => None,
        }
    }

    /// Verifies `quote`: result cache, then collateral cache or fetch, then dcap-qvl on
    /// the blocking pool.
    pub async fn verify(self: &Arc<Self>, quote: &[u8]) -> Result<VerifiedQuote, DcapError> {
        if let Some(v) = self.cached(quote) {
            return Ok(v);
        }
        let parsed = dcap_qvl::quote::Quote::parse(quote)
            .map_err(|e| DcapError::Decode(format!("{e:#}")))?;
        let fmspc = dcap_qvl::intel::quote_fmspc(&parsed)
            .map_err(|e| DcapError::Decode(format!("{e:#}")))?;
        let ca = dcap_qvl::intel::quote_ca(&parsed)
            .map_err(|e| DcapError::Decode(format!("{e:#}")))?
            .as_id_str();
        let key = (hex::encode_upper(fmspc), ca.to_string());
        let now = self.now();
        let cached = {
            let mut map = self
                .collateral
                .lock()
                .map_err(|_| DcapError::Collateral("collateral cache poisoned".into()))?;
            match map.get(&key) {
                Some(c) if c.expires_at.is_none_or(|t| t >= now) => Some(c.collateral.clone()),
                Some(_) => {
                    map.remove(&key);
                    None
                }
                None => None,
            }
        };
        let collateral = match cached {
            Some(c) => c,
            None => {
                let c = self.source.fetch(&key.0, &key.1).await?;
                tracing::debug!(fmspc = %key.0, ca = %key.1, "fetched DCAP collateral");
                c
            }
        };
        let this = Arc::clone(self);
        let q = quote.to_vec();
        let col = collateral.clone();
        let result =
            tokio::task::spawn_blocking(move || this.verify_with_collateral(&q, &col, now))
                .await
                .map_err(|e| DcapError::Verify(format!("verification task failed: {e}")))?;
        if let Ok(mut map) = self.collateral.lock() {
            match &result {
                Ok(v) => {
                    map.insert(
                        key,
                        CachedCollateral {
                            collateral,
                            expires_at: Some(v.expires_at),
                        },
                    );
                }
                Err(_) => {
                    map.remove(&key);
                }
            }
        }
        let v = result?;
        if let Ok(mut cache) = self.results.lock() {
            cache.put(Sha256::digest(quote).into(), v.clone());
        }
        Ok(v)
    }
}
