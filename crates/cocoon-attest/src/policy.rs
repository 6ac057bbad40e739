//! Attestation policies (`any`, `fake_tee`, `tee`; formerly `fake_tdx`, `tdx`) with allow-lists, their TOML form, and
//! the verified identity of a peer.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::cert::{parse_certificate, CertInfo, SevEvidence};
use crate::dcap::{DcapConfig, DcapVerifier};
use crate::quote::{parse_quote, QuoteBody, TdMeasurements};
use crate::router::{AttestedPeerInfo, RouterReport};
use crate::sev::kds::{Kds, KdsSource, KDS_URL};
use crate::sev::{Product, SnpReport, SnpRules, SnpVerifier, Vcek};
use crate::tee::{parse_fake_quote, report_data_for_key};
use crate::AttestError;

/// Which kind of attestation a policy demands, named as COCOON 9060ce5 names them; the
/// older names `fake_tdx` and `tdx` are still read (deprecated: they now cover SEV-SNP too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PolicyKind {
    /// No evidence needed (the certificate must still be Ed25519).
    #[serde(rename = "any")]
    Any,
    /// Fake evidence (the stand-in for TEE hardware): a fake TDX quote or a fake SEV-SNP
    /// report, bound to the peer's key.
    #[serde(
        rename = "fake_tee",
        alias = "fake_tdx",
        alias = "fake-tdx",
        alias = "fake-tee"
    )]
    FakeTee,
    /// Real evidence: a TDX quote verified with DCAP, or an SEV-SNP report verified against
    /// AMD's roots.
    #[serde(rename = "tee", alias = "tdx")]
    Tee,
}

impl PolicyKind {
    /// Whether `name` is one of the pre-9060ce5 names (`fake_tdx`, `tdx`), kept for old
    /// configuration files.
    pub fn is_deprecated_name(name: &str) -> bool {
        matches!(name, "fake_tdx" | "fake-tdx" | "tdx")
    }
}

impl std::str::FromStr for PolicyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "any" => Ok(Self::Any),
            "fake_tee" | "fake-tee" | "fake_tdx" | "fake-tdx" => Ok(Self::FakeTee),
            "tee" | "tdx" => Ok(Self::Tee),
            other => Err(format!(
                "unknown policy {other:?} (any, fake_tee, tee; fake_tdx and tdx are the old names)"
            )),
        }
    }
}

impl std::fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Any => "any",
            Self::FakeTee => "fake_tee",
            Self::Tee => "tee",
        })
    }
}

/// One policy as written in TOML. Lists are lower- or upper-case hex; an empty list
/// means "no constraint".
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// `any`, `fake_tdx` or `tdx`.
    pub kind: PolicyKind,
    /// Allowed MRTD values (48-byte hex).
    #[serde(default)]
    pub allowed_mrtd: Vec<String>,
    /// Allowed `[RTMR0, RTMR1, RTMR2, RTMR3]` tuples (48-byte hex each).
    #[serde(default)]
    pub allowed_rtmr: Vec<[String; 4]>,
    /// Allowed image hashes (32-byte hex, spec §7.4), as COCOON's router writes them:
    /// `tdx@HEX` or `sev@HEX` for one kind, plain `HEX` for either.
    #[serde(default)]
    pub allowed_image_hashes: Vec<String>,
    /// Allowed SEV-SNP launch measurements (48-byte hex).
    #[serde(default)]
    pub allowed_measurements: Vec<String>,
    /// Accept SEV-SNP guests whose policy allows debugging (their host can read their
    /// memory); off by default. COCOON does not check this.
    #[serde(default)]
    pub sev_allow_debug: bool,
    /// AMD collateral for policy `tee`, a directory in the KDS cache layout (`cocoon
    /// attest inspect --kds-cache` fills one too): `<Product>.cert_chain.pem` replaces the
    /// built-in roots of that product, `<Product>.crl.der` (or `.crl.pem`) revokes VCEKs
    /// and ASKs. Read when the policy is compiled; a role then keeps it fresh from
    /// [`PolicyConfig::sev_kds`] (see [`Policy::spawn_collateral_refresh`]).
    #[serde(default)]
    pub sev_collateral: Option<std::path::PathBuf>,
    /// Where `sev_collateral` is refreshed from: AMD's KDS by default
    /// ([`crate::sev::kds::KDS_URL`]), another KDS-compatible base URL, or `"files"` to read
    /// the directory only (operators who place the files themselves).
    #[serde(default)]
    pub sev_kds: Option<String>,
    /// Allowed collateral root hashes (48-byte hex root key ids; `tdx` only).
    #[serde(default)]
    pub allowed_collateral_root_hashes: Vec<String>,
}

impl PolicyConfig {
    /// A policy of this kind with no allow-lists.
    pub fn new(kind: PolicyKind) -> Self {
        Self {
            kind,
            allowed_mrtd: Vec::new(),
            allowed_rtmr: Vec::new(),
            allowed_image_hashes: Vec::new(),
            allowed_measurements: Vec::new(),
            sev_allow_debug: false,
            sev_collateral: None,
            sev_kds: None,
            allowed_collateral_root_hashes: Vec::new(),
        }
    }
}

/// A whole attestation config file: DCAP settings, one policy per listening port and
/// one per outgoing connection (see `examples/attest-policies.toml`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesFile {
    /// DCAP verification settings used by every `tdx` policy.
    #[serde(default)]
    pub dcap: DcapConfig,
    /// Policy per listening port (key: the port number as a string).
    #[serde(default)]
    pub listen: BTreeMap<String, PolicyConfig>,
    /// Policy per outgoing connection (key: `host:port` or a peer name).
    #[serde(default)]
    pub connect: BTreeMap<String, PolicyConfig>,
}

impl PoliciesFile {
    /// Parses the TOML text of a policies file.
    pub fn from_toml(text: &str) -> Result<Self, AttestError> {
        toml::from_str(text).map_err(|e| AttestError::Config(format!("policy TOML: {e}")))
    }

    /// The policy for listening port `port`, if configured.
    pub fn listen_policy(&self, port: u16) -> Option<&PolicyConfig> {
        self.listen.get(&port.to_string())
    }

    /// The policy for outgoing connection `target`, if configured.
    pub fn connect_policy(&self, target: &str) -> Option<&PolicyConfig> {
        self.connect.get(target)
    }
}

/// Applies the AMD collateral files in `dir` (KDS cache layout) to `snp`.
fn load_collateral(
    mut snp: SnpVerifier,
    dir: &std::path::Path,
) -> Result<SnpVerifier, AttestError> {
    if !dir.is_dir() {
        return Err(AttestError::Config(format!(
            "sev_collateral {} is not a directory",
            dir.display()
        )));
    }
    for product in [Product::Milan, Product::Genoa, Product::Turin] {
        let chain = dir.join(format!("{}.cert_chain.pem", product.name()));
        if let Ok(bytes) = std::fs::read(&chain) {
            let (ask, ark) = crate::sev::split_chain(&bytes)
                .map_err(|e| AttestError::Config(format!("{}: {e}", chain.display())))?;
            snp = snp
                .with_chain(product, &ask, &ark)
                .map_err(|e| AttestError::Config(format!("{}: {e}", chain.display())))?;
        }
        for ext in ["crl.der", "crl.pem"] {
            let crl = dir.join(format!("{}.{ext}", product.name()));
            if let Ok(bytes) = std::fs::read(&crl) {
                snp = snp
                    .with_crl(product, &bytes)
                    .map_err(|e| AttestError::Config(format!("{}: {e}", crl.display())))?;
            }
        }
    }
    Ok(snp)
}

/// Decodes `N` bytes of hex, naming the field in the error.
pub fn parse_hex<const N: usize>(s: &str, field: &str) -> Result<[u8; N], AttestError> {
    let v = hex::decode(s.trim())
        .map_err(|e| AttestError::Config(format!("{field}: {s:?} is not hex: {e}")))?;
    v.as_slice().try_into().map_err(|_| {
        AttestError::Config(format!("{field}: {s:?} must be {N} bytes, got {}", v.len()))
    })
}

/// What kind of attestation the peer proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerTee {
    /// No attestation was required or checked (policy `any`).
    None,
    /// Fake TDX (the stand-in for real hardware).
    FakeTdx,
    /// Real TDX, DCAP-verified.
    Tdx,
    /// Fake SEV-SNP (the stand-in for AMD hardware).
    FakeSev,
    /// Real SEV-SNP, verified against AMD's roots.
    SevSnp,
}

/// The verified identity of the other end of an attested connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The peer's Ed25519 public key (from its certificate).
    pub public_key: [u8; 32],
    /// The kind of attestation checked.
    pub tee: PeerTee,
    /// Image hash (spec §7.4); all zero when no attestation was checked.
    pub image_hash: [u8; 32],
    /// TDX measurements, when a quote was checked.
    pub measurements: Option<TdMeasurements>,
    /// The SEV-SNP launch measurement, when a report was checked.
    pub sev_measurement: Option<[u8; 48]>,
    /// Root key id of the DCAP collateral (zero for fake TDX and `any`).
    pub collateral_root_hash: [u8; 48],
    /// DCAP TCB status for real TDX.
    pub tcb_status: Option<String>,
    /// notAfter of the peer certificate (unix seconds).
    pub cert_not_after: i64,
}

impl PeerIdentity {
    /// A peer known only by its key (nothing attested yet; policy `any` stops here).
    fn unattested(public_key: [u8; 32], cert_not_after: i64) -> Self {
        PeerIdentity {
            public_key,
            tee: PeerTee::None,
            image_hash: [0; 32],
            measurements: None,
            sev_measurement: None,
            collateral_root_hash: [0; 48],
            tcb_status: None,
            cert_not_after,
        }
    }

    /// JSON form used by the CLI and logs (hex strings, lower case).
    pub fn to_json(&self) -> serde_json::Value {
        let m = self.measurements.as_ref();
        serde_json::json!({
            "public_key": hex::encode(self.public_key),
            "tee": self.tee,
            "image_hash": hex::encode(self.image_hash),
            "mrtd": m.map(|m| hex::encode(m.mrtd)),
            "rtmr": m.map(|m| m.rtmr.iter().map(hex::encode).collect::<Vec<_>>()),
            "report_data": m.map(|m| hex::encode(m.report_data)),
            "sev_measurement": self.sev_measurement.map(hex::encode),
            "collateral_root_hash": hex::encode(self.collateral_root_hash),
            "tcb_status": self.tcb_status,
            "cert_not_after": self.cert_not_after,
        })
    }
}

/// A certificate that passed every synchronous check; real TDX still needs DCAP.
#[derive(Debug, Clone)]
pub struct PendingPeer {
    identity: PeerIdentity,
    quote_for_dcap: Option<Vec<u8>>,
}

/// A compiled policy: the rules one listening port or outgoing connection applies.
#[derive(Debug, Clone)]
pub struct Policy {
    kind: PolicyKind,
    mrtd: Vec<[u8; 48]>,
    rtmr: Vec<[[u8; 48]; 4]>,
    /// Image hashes allowed for TDX peers.
    image_hashes: Vec<[u8; 32]>,
    /// Image hashes allowed for SEV-SNP peers.
    sev_image_hashes: Vec<[u8; 32]>,
    sev_measurements: Vec<[u8; 48]>,
    root_hashes: Vec<[u8; 48]>,
    dcap: Option<Arc<DcapVerifier>>,
    /// The SEV-SNP verifier in force (swapped when fresh collateral arrives).
    snp: Option<Arc<RwLock<Arc<SnpVerifier>>>>,
    /// Where fresh SEV-SNP collateral comes from, when the policy keeps it fresh.
    collateral: Option<Arc<Collateral>>,
}

/// A `tee` policy's SEV-SNP collateral: the cache directory, its source and the rules the
/// verifier is rebuilt with.
#[derive(Debug)]
struct Collateral {
    dir: std::path::PathBuf,
    kds: Kds,
    rules: SnpRules,
}

impl Policy {
    /// Policy `any`: no quote needed.
    pub fn any() -> Self {
        Self::bare(PolicyKind::Any, None)
    }

    /// Policy `fake_tdx` without allow-lists.
    pub fn fake_tdx() -> Self {
        Self::bare(PolicyKind::FakeTee, None)
    }

    /// Policy `tdx` without allow-lists, verifying with `dcap`.
    pub fn tdx(dcap: Arc<DcapVerifier>) -> Self {
        Self::bare(PolicyKind::Tee, Some(dcap))
    }

    fn bare(kind: PolicyKind, dcap: Option<Arc<DcapVerifier>>) -> Self {
        Self {
            kind,
            mrtd: Vec::new(),
            rtmr: Vec::new(),
            image_hashes: Vec::new(),
            sev_image_hashes: Vec::new(),
            sev_measurements: Vec::new(),
            root_hashes: Vec::new(),
            dcap,
            snp: None,
            collateral: None,
        }
    }

    /// Compiles a [`PolicyConfig`]; `tdx` needs a DCAP verifier.
    pub fn from_config(
        cfg: &PolicyConfig,
        dcap: Option<Arc<DcapVerifier>>,
    ) -> Result<Self, AttestError> {
        let mut p = Self::bare(cfg.kind, None);
        match cfg.kind {
            PolicyKind::Any => {
                if !cfg.allowed_image_hashes.is_empty()
                    || !cfg.allowed_measurements.is_empty()
                    || !cfg.allowed_mrtd.is_empty()
                    || !cfg.allowed_rtmr.is_empty()
                    || !cfg.allowed_collateral_root_hashes.is_empty()
                {
                    return Err(AttestError::Config(
                        "policy any cannot have allow-lists (it checks no quote)".into(),
                    ));
                }
            }
            PolicyKind::FakeTee => {}
            PolicyKind::Tee => {
                p.dcap = Some(dcap.ok_or_else(|| {
                    AttestError::Config("policy tee needs a DCAP verifier for TDX quotes".into())
                })?);
                let rules = SnpRules {
                    allow_debug: cfg.sev_allow_debug,
                    min_tcb: None,
                };
                let mut snp = SnpVerifier::amd(rules.clone())?;
                if let Some(dir) = &cfg.sev_collateral {
                    let source = match cfg.sev_kds.as_deref() {
                        Some("files") => KdsSource::FilesOnly,
                        Some(url) => KdsSource::Online(url.to_owned()),
                        None => KdsSource::Online(KDS_URL.to_owned()),
                    };
                    if matches!(source, KdsSource::Online(_)) {
                        // A cache to fill may start empty.
                        std::fs::create_dir_all(dir).map_err(|e| {
                            AttestError::Config(format!("sev_collateral {}: {e}", dir.display()))
                        })?;
                    }
                    snp = load_collateral(snp, dir)?;
                    p.collateral = Some(Arc::new(Collateral {
                        dir: dir.clone(),
                        kds: Kds::new(source, dir.clone()),
                        rules,
                    }));
                } else if cfg.sev_kds.is_some() {
                    return Err(AttestError::Config(
                        "sev_kds needs sev_collateral (the directory it fills)".into(),
                    ));
                }
                p = p.with_snp_verifier(Arc::new(snp));
            }
        }
        for entry in &cfg.allowed_image_hashes {
            let (kinds, hex_text) = match entry.split_once('@') {
                Some(("tdx", h)) => ((true, false), h),
                Some(("sev", h)) => ((false, true), h),
                Some((other, _)) => {
                    return Err(AttestError::Config(format!(
                        "allowed_image_hashes: {entry:?} has prefix {other:?} (tdx@ or sev@)"
                    )))
                }
                None => ((true, true), entry.as_str()),
            };
            let hash = parse_hex::<32>(hex_text, "allowed_image_hashes")?;
            if kinds.0 {
                p.image_hashes.push(hash);
            }
            if kinds.1 {
                p.sev_image_hashes.push(hash);
            }
        }
        p.sev_measurements = cfg
            .allowed_measurements
            .iter()
            .map(|s| parse_hex::<48>(s, "allowed_measurements"))
            .collect::<Result<_, _>>()?;
        p.mrtd = cfg
            .allowed_mrtd
            .iter()
            .map(|s| parse_hex::<48>(s, "allowed_mrtd"))
            .collect::<Result<_, _>>()?;
        p.rtmr = cfg
            .allowed_rtmr
            .iter()
            .map(|t| -> Result<[[u8; 48]; 4], AttestError> {
                Ok([
                    parse_hex::<48>(&t[0], "allowed_rtmr")?,
                    parse_hex::<48>(&t[1], "allowed_rtmr")?,
                    parse_hex::<48>(&t[2], "allowed_rtmr")?,
                    parse_hex::<48>(&t[3], "allowed_rtmr")?,
                ])
            })
            .collect::<Result<_, _>>()?;
        p.root_hashes = cfg
            .allowed_collateral_root_hashes
            .iter()
            .map(|s| parse_hex::<48>(s, "allowed_collateral_root_hashes"))
            .collect::<Result<_, _>>()?;
        Ok(p)
    }

    /// Restricts accepted image hashes, of either kind (builder form of plain
    /// `allowed_image_hashes` entries).
    pub fn with_image_hashes(mut self, hashes: Vec<[u8; 32]>) -> Self {
        self.sev_image_hashes = hashes.clone();
        self.image_hashes = hashes;
        self
    }

    /// Restricts accepted SEV-SNP launch measurements.
    pub fn with_sev_measurements(mut self, measurements: Vec<[u8; 48]>) -> Self {
        self.sev_measurements = measurements;
        self
    }

    /// Verifies real SEV-SNP reports with `verifier` (policy `tee`; default: AMD's roots).
    pub fn with_snp_verifier(mut self, verifier: Arc<SnpVerifier>) -> Self {
        self.snp = Some(Arc::new(RwLock::new(verifier)));
        self
    }

    /// The SEV-SNP verifier in force, if the policy has one.
    fn snp_verifier(&self) -> Option<Arc<SnpVerifier>> {
        let cell = self.snp.as_ref()?;
        let guard = cell.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(guard.clone())
    }

    /// Fetches what is due of AMD's chains and CRLs (Milan, Genoa, Turin) into the
    /// `sev_collateral` directory (a cached file younger than 7 days is kept; KDS's 429s
    /// are waited out within a budget; offline, the cached files serve) and puts a verifier
    /// rebuilt from the directory in force. Returns what could not be fetched, product by
    /// product; if the directory no longer builds a verifier, the one in force stays and
    /// the error is returned. Nothing to do for policies without `sev_collateral`.
    pub async fn refresh_collateral(&self) -> Result<Vec<String>, AttestError> {
        let (Some(c), Some(cell)) = (&self.collateral, &self.snp) else {
            return Ok(Vec::new());
        };
        let mut missing = Vec::new();
        for product in [Product::Milan, Product::Genoa, Product::Turin] {
            if let Err(e) = c.kds.chain(product).await {
                missing.push(format!("{} chain: {e}", product.name()));
            }
            if let Err(e) = c.kds.crl(product).await {
                missing.push(format!("{} CRL: {e}", product.name()));
            }
        }
        let fresh = load_collateral(SnpVerifier::amd(c.rules.clone())?, &c.dir)?;
        *cell
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(fresh);
        Ok(missing)
    }

    /// Keeps the SEV-SNP collateral fresh in the background ([`Policy::refresh_collateral`]
    /// now, then every `every`), logging what fails; `None` when the policy has no
    /// `sev_collateral` or no Tokio runtime is running.
    pub fn spawn_collateral_refresh(
        self: &Arc<Self>,
        every: std::time::Duration,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.collateral.as_ref()?;
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let policy = Arc::downgrade(self);
        Some(runtime.spawn(async move {
            loop {
                let Some(p) = policy.upgrade() else { return };
                match p.refresh_collateral().await {
                    Ok(missing) if missing.is_empty() => {
                        tracing::debug!("SEV-SNP collateral fresh")
                    }
                    Ok(missing) => tracing::warn!(
                        missing = %missing.join("; "),
                        "SEV-SNP collateral partly unavailable (cached or built-in roots serve)"
                    ),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "SEV-SNP collateral refresh failed; the verifier in force stays"
                    ),
                }
                drop(p);
                tokio::time::sleep(every).await;
            }
        }))
    }

    /// Restricts accepted MRTDs.
    pub fn with_mrtds(mut self, mrtds: Vec<[u8; 48]>) -> Self {
        self.mrtd = mrtds;
        self
    }

    /// Restricts accepted RTMR tuples.
    pub fn with_rtmrs(mut self, rtmrs: Vec<[[u8; 48]; 4]>) -> Self {
        self.rtmr = rtmrs;
        self
    }

    /// Restricts accepted collateral root hashes.
    pub fn with_collateral_root_hashes(mut self, roots: Vec<[u8; 48]>) -> Self {
        self.root_hashes = roots;
        self
    }

    /// Whether image hashes are restricted at all: then a peer's hash must be among those
    /// allowed for its kind (a policy listing only TDX images refuses every SEV-SNP peer).
    fn images_restricted(&self) -> bool {
        !self.image_hashes.is_empty() || !self.sev_image_hashes.is_empty()
    }

    /// The policy kind.
    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// All synchronous checks of spec §7.1 step 4 on a peer certificate at `now` (unix
    /// seconds): structure, Ed25519, validity, quote presence, REPORTDATA binding and the
    /// measurement allow-lists. Real TDX quotes then go through [`Policy::finish`].
    pub fn check_cert(&self, der: &[u8], now: i64) -> Result<PendingPeer, AttestError> {
        let info = parse_certificate(der)?;
        info.check_time(now)?;
        let expected = report_data_for_key(&info.public_key);
        self.check_evidence(&info, &expected)
    }

    /// Verifies evidence that is not wrapped in a certificate: `quote` must carry
    /// `expected_report_data` and pass this policy (including DCAP for `tdx`). The
    /// returned identity has `public_key` all zero. Used for quotes exchanged outside TLS.
    pub async fn verify_quote(
        &self,
        quote: Option<&[u8]>,
        expected_report_data: &[u8; 64],
    ) -> Result<PeerIdentity, AttestError> {
        let info = CertInfo {
            public_key: [0; 32],
            not_before: 0,
            not_after: 0,
            quote: quote.map(<[u8]>::to_vec),
            user_claims: None,
            sev: None,
        };
        let pending = self.check_evidence(&info, expected_report_data)?;
        self.finish(pending).await
    }

    /// Verifies SEV-SNP evidence that is not wrapped in a certificate (as
    /// [`Policy::verify_quote`] for TDX): `report` must carry `expected_report_data` and pass
    /// this policy with `vcek` (PEM or DER). The returned identity has `public_key` all zero.
    pub fn verify_sev(
        &self,
        report: &[u8],
        vcek: &[u8],
        expected_report_data: &[u8; 64],
    ) -> Result<PeerIdentity, AttestError> {
        let identity = PeerIdentity::unattested([0; 32], 0);
        if self.kind == PolicyKind::Any {
            return Ok(identity);
        }
        let evidence = SevEvidence {
            report_data: expected_report_data.to_vec(),
            report: report.to_vec(),
            vcek_pem: vcek.to_vec(),
        };
        Ok(self
            .check_sev(&evidence, expected_report_data, identity)?
            .identity)
    }

    fn check_evidence(
        &self,
        info: &CertInfo,
        expected_report_data: &[u8; 64],
    ) -> Result<PendingPeer, AttestError> {
        let mut identity = PeerIdentity::unattested(info.public_key, info.not_after);
        if self.kind == PolicyKind::Any {
            return Ok(PendingPeer {
                identity,
                quote_for_dcap: None,
            });
        }
        let quote = match (info.quote.as_deref(), &info.sev) {
            (Some(quote), _) => quote,
            (None, Some(sev)) => return self.check_sev(sev, expected_report_data, identity),
            (None, None) => return Err(AttestError::MissingEvidence(self.kind)),
        };
        let m = match self.kind {
            PolicyKind::FakeTee => {
                identity.tee = PeerTee::FakeTdx;
                parse_fake_quote(quote).ok_or(AttestError::FakeQuoteSize(quote.len()))?
            }
            _ => {
                identity.tee = PeerTee::Tdx;
                if quote.len() == 64 {
                    return Err(AttestError::FakeQuoteRejected);
                }
                let parsed = parse_quote(quote)?;
                match parsed.body {
                    QuoteBody::Tdx { measurements, .. } => measurements,
                    QuoteBody::Sgx(_) => return Err(AttestError::SgxRejected),
                }
            }
        };
        if &m.report_data != expected_report_data {
            return Err(AttestError::ReportDataMismatch);
        }
        if !self.mrtd.is_empty() && !self.mrtd.contains(&m.mrtd) {
            return Err(AttestError::MrtdNotAllowed(hex::encode(m.mrtd)));
        }
        if !self.rtmr.is_empty() && !self.rtmr.contains(&m.rtmr) {
            return Err(AttestError::RtmrNotAllowed);
        }
        let image_hash = m.image_hash();
        if self.images_restricted() && !self.image_hashes.contains(&image_hash) {
            return Err(AttestError::ImageHashNotAllowed(hex::encode(image_hash)));
        }
        identity.image_hash = image_hash;
        identity.measurements = Some(m);
        if self.kind == PolicyKind::FakeTee {
            if !self.root_hashes.is_empty() && !self.root_hashes.contains(&[0; 48]) {
                return Err(AttestError::RootHashNotAllowed(hex::encode([0u8; 48])));
            }
            return Ok(PendingPeer {
                identity,
                quote_for_dcap: None,
            });
        }
        Ok(PendingPeer {
            identity,
            quote_for_dcap: Some(quote.to_vec()),
        })
    }

    /// The SEV-SNP path: the report-data extension and the report's own `report_data` bind
    /// the key; `fake_tee` reads the fake report's measurement, `tee` verifies the report
    /// and its VCEK against AMD's roots; then the measurement and image-hash allow-lists.
    fn check_sev(
        &self,
        sev: &SevEvidence,
        expected: &[u8; 64],
        mut identity: PeerIdentity,
    ) -> Result<PendingPeer, AttestError> {
        if sev.report_data.as_slice() != expected.as_slice() {
            return Err(AttestError::ReportDataMismatch);
        }
        let measurement = match self.kind {
            PolicyKind::Tee => {
                identity.tee = PeerTee::SevSnp;
                if sev.is_fake() {
                    return Err(AttestError::FakeSevRejected);
                }
                let report = SnpReport::from_bytes(&sev.report)?;
                let vcek = Vcek::from_pem_or_der(&sev.vcek_pem)?;
                let verifier = self.snp_verifier().ok_or_else(|| {
                    AttestError::Config("policy tee has no SEV-SNP verifier".into())
                })?;
                verifier.verify(&report, &vcek, Some(expected))?.measurement
            }
            _ => {
                identity.tee = PeerTee::FakeSev;
                // The fake report's own report_data must bind the key too (COCOON does not
                // look at a fake report at all).
                if sev.report_field_data().as_ref() != Some(expected) {
                    return Err(AttestError::ReportDataMismatch);
                }
                sev.measurement().ok_or(AttestError::ReportDataMismatch)?
            }
        };
        if !self.sev_measurements.is_empty() && !self.sev_measurements.contains(&measurement) {
            return Err(AttestError::MeasurementNotAllowed(hex::encode(measurement)));
        }
        let image_hash = crate::sev::image_hash(&measurement);
        if self.images_restricted() && !self.sev_image_hashes.contains(&image_hash) {
            return Err(AttestError::ImageHashNotAllowed(hex::encode(image_hash)));
        }
        identity.image_hash = image_hash;
        identity.sev_measurement = Some(measurement);
        Ok(PendingPeer {
            identity,
            quote_for_dcap: None,
        })
    }

    /// Judges what an official COCOON router in front of this node verified
    /// ([`AttestedPeerInfo`], `--serialize-info`): the router checked the evidence itself,
    /// so this applies what the runner can still check. `any` takes the peer as the router
    /// describes it; `fake_tee` and `tee` need a report bound to the peer's key
    /// (SHA-512), `tee` refuses the all-zero reports of fake or unattested peers (a COCOON
    /// `tee` port without hashes lets those through), and the allow-lists apply to the
    /// report's kind.
    pub fn check_router_info(&self, info: &AttestedPeerInfo) -> Result<PeerIdentity, AttestError> {
        let mut identity = PeerIdentity::unattested(info.public_key, 0);
        if self.kind == PolicyKind::Any {
            identity.image_hash = info.image_hash();
            return Ok(identity);
        }
        let report = info
            .report
            .as_ref()
            .ok_or(AttestError::MissingEvidence(self.kind))?;
        if report.report_data() != &report_data_for_key(&info.public_key) {
            return Err(AttestError::ReportDataMismatch);
        }
        let real = self.kind == PolicyKind::Tee;
        match report {
            RouterReport::Tdx {
                measurements: m,
                collateral_root_hash,
            } => {
                let zero = TdMeasurements::zero_with_report_data(m.report_data);
                if real && *m == zero {
                    return Err(AttestError::FakeQuoteRejected);
                }
                identity.tee = if real { PeerTee::Tdx } else { PeerTee::FakeTdx };
                if !self.mrtd.is_empty() && !self.mrtd.contains(&m.mrtd) {
                    return Err(AttestError::MrtdNotAllowed(hex::encode(m.mrtd)));
                }
                if !self.rtmr.is_empty() && !self.rtmr.contains(&m.rtmr) {
                    return Err(AttestError::RtmrNotAllowed);
                }
                if !self.root_hashes.is_empty() && !self.root_hashes.contains(collateral_root_hash)
                {
                    return Err(AttestError::RootHashNotAllowed(hex::encode(
                        collateral_root_hash,
                    )));
                }
                let image_hash = m.image_hash();
                if self.images_restricted() && !self.image_hashes.contains(&image_hash) {
                    return Err(AttestError::ImageHashNotAllowed(hex::encode(image_hash)));
                }
                identity.image_hash = image_hash;
                identity.measurements = Some(m.clone());
                identity.collateral_root_hash = *collateral_root_hash;
            }
            RouterReport::Sev { measurement, .. } => {
                if real && *measurement == [0; 48] {
                    return Err(AttestError::FakeSevRejected);
                }
                identity.tee = if real {
                    PeerTee::SevSnp
                } else {
                    PeerTee::FakeSev
                };
                if !self.sev_measurements.is_empty() && !self.sev_measurements.contains(measurement)
                {
                    return Err(AttestError::MeasurementNotAllowed(hex::encode(measurement)));
                }
                let image_hash = crate::sev::image_hash(measurement);
                if self.images_restricted() && !self.sev_image_hashes.contains(&image_hash) {
                    return Err(AttestError::ImageHashNotAllowed(hex::encode(image_hash)));
                }
                identity.image_hash = image_hash;
                identity.sev_measurement = Some(*measurement);
            }
            RouterReport::Sgx { .. } => return Err(AttestError::SgxRejected),
        }
        Ok(identity)
    }

    /// Completes verification: DCAP for real TDX (cached), then the collateral root
    /// allow-list. Immediate for `any` and `fake_tdx`.
    pub async fn finish(&self, pending: PendingPeer) -> Result<PeerIdentity, AttestError> {
        let PendingPeer {
            mut identity,
            quote_for_dcap,
        } = pending;
        let Some(quote) = quote_for_dcap else {
            return Ok(identity);
        };
        let dcap = self.dcap.as_ref().ok_or_else(|| {
            AttestError::Config("policy tee needs a DCAP verifier for TDX quotes".into())
        })?;
        let v = dcap.verify(&quote).await?;
        if !self.root_hashes.is_empty() && !self.root_hashes.contains(&v.root_key_id) {
            return Err(AttestError::RootHashNotAllowed(hex::encode(v.root_key_id)));
        }
        identity.collateral_root_hash = v.root_key_id;
        identity.tcb_status = Some(v.tcb_status);
        Ok(identity)
    }

    /// [`Policy::check_cert`] followed by [`Policy::finish`].
    pub async fn verify_cert(&self, der: &[u8], now: i64) -> Result<PeerIdentity, AttestError> {
        let pending = self.check_cert(der, now)?;
        self.finish(pending).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_toml_parses_and_compiles() {
        let text = include_str!("../examples/attest-policies.toml");
        let f = PoliciesFile::from_toml(text).unwrap();
        let p8443 = f.listen_policy(8443).unwrap();
        assert_eq!(p8443.kind, PolicyKind::Tee);
        assert_eq!(f.listen_policy(9000).unwrap().kind, PolicyKind::FakeTee);
        let dcap = Arc::new(DcapVerifier::from_config(&f.dcap).unwrap());
        for cfg in f.listen.values().chain(f.connect.values()) {
            Policy::from_config(cfg, Some(dcap.clone())).unwrap();
        }
    }

    #[test]
    fn config_errors_are_precise() {
        let mut c = PolicyConfig::new(PolicyKind::Any);
        c.allowed_image_hashes.push("00".repeat(32));
        let e = Policy::from_config(&c, None).unwrap_err();
        assert!(
            e.to_string().contains("policy any cannot have allow-lists"),
            "{e}"
        );
        let e = Policy::from_config(&PolicyConfig::new(PolicyKind::Tee), None).unwrap_err();
        assert!(e.to_string().contains("needs a DCAP verifier"), "{e}");
        let mut c = PolicyConfig::new(PolicyKind::FakeTee);
        c.allowed_mrtd.push("abcd".into());
        let e = Policy::from_config(&c, None).unwrap_err();
        assert!(e.to_string().contains("must be 48 bytes, got 2"), "{e}");
        let e = PoliciesFile::from_toml("[listen.1]\nkind = \"bogus\"\n").unwrap_err();
        assert!(e.to_string().contains("policy TOML"), "{e}");
    }
}
