//! Attestation policies (`any`, `fake_tdx`, `tdx`) with allow-lists, their TOML form, and
//! the verified identity of a peer.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cert::{parse_certificate, CertInfo};
use crate::dcap::{DcapConfig, DcapVerifier};
use crate::quote::{parse_quote, QuoteBody, TdMeasurements};
use crate::tee::{parse_fake_quote, report_data_for_key};
use crate::AttestError;

/// Which kind of attestation a policy demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// No quote needed (the certificate must still be Ed25519).
    Any,
    /// A fake TDX quote (the stand-in for real hardware) is required.
    FakeTdx,
    /// A real TDX quote verified with DCAP is required.
    Tdx,
}

impl std::str::FromStr for PolicyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "any" => Ok(Self::Any),
            "fake_tdx" | "fake-tdx" => Ok(Self::FakeTdx),
            "tdx" => Ok(Self::Tdx),
            other => Err(format!("unknown policy {other:?} (any, fake_tdx, tdx)")),
        }
    }
}

impl std::fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Any => "any",
            Self::FakeTdx => "fake_tdx",
            Self::Tdx => "tdx",
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
    /// Allowed image hashes (32-byte hex, spec §7.4).
    #[serde(default)]
    pub allowed_image_hashes: Vec<String>,
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
    /// Root key id of the DCAP collateral (zero for fake TDX and `any`).
    pub collateral_root_hash: [u8; 48],
    /// DCAP TCB status for real TDX.
    pub tcb_status: Option<String>,
    /// notAfter of the peer certificate (unix seconds).
    pub cert_not_after: i64,
}

impl PeerIdentity {
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
    image_hashes: Vec<[u8; 32]>,
    root_hashes: Vec<[u8; 48]>,
    dcap: Option<Arc<DcapVerifier>>,
}

impl Policy {
    /// Policy `any`: no quote needed.
    pub fn any() -> Self {
        Self::bare(PolicyKind::Any, None)
    }

    /// Policy `fake_tdx` without allow-lists.
    pub fn fake_tdx() -> Self {
        Self::bare(PolicyKind::FakeTdx, None)
    }

    /// Policy `tdx` without allow-lists, verifying with `dcap`.
    pub fn tdx(dcap: Arc<DcapVerifier>) -> Self {
        Self::bare(PolicyKind::Tdx, Some(dcap))
    }

    fn bare(kind: PolicyKind, dcap: Option<Arc<DcapVerifier>>) -> Self {
        Self {
            kind,
            mrtd: Vec::new(),
            rtmr: Vec::new(),
            image_hashes: Vec::new(),
            root_hashes: Vec::new(),
            dcap,
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
                    || !cfg.allowed_mrtd.is_empty()
                    || !cfg.allowed_rtmr.is_empty()
                    || !cfg.allowed_collateral_root_hashes.is_empty()
                {
                    return Err(AttestError::Config(
                        "policy any cannot have allow-lists (it checks no quote)".into(),
                    ));
                }
            }
            PolicyKind::FakeTdx => {}
            PolicyKind::Tdx => {
                p.dcap = Some(dcap.ok_or_else(|| {
                    AttestError::Config("policy tdx needs a DCAP verifier".into())
                })?);
            }
        }
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
        p.image_hashes = cfg
            .allowed_image_hashes
            .iter()
            .map(|s| parse_hex::<32>(s, "allowed_image_hashes"))
            .collect::<Result<_, _>>()?;
        p.root_hashes = cfg
            .allowed_collateral_root_hashes
            .iter()
            .map(|s| parse_hex::<48>(s, "allowed_collateral_root_hashes"))
            .collect::<Result<_, _>>()?;
        Ok(p)
    }

    /// Restricts accepted image hashes (builder form of `allowed_image_hashes`).
    pub fn with_image_hashes(mut self, hashes: Vec<[u8; 32]>) -> Self {
        self.image_hashes = hashes;
        self
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
        };
        let pending = self.check_evidence(&info, expected_report_data)?;
        self.finish(pending).await
    }

    fn check_evidence(
        &self,
        info: &CertInfo,
        expected_report_data: &[u8; 64],
    ) -> Result<PendingPeer, AttestError> {
        let mut identity = PeerIdentity {
            public_key: info.public_key,
            tee: PeerTee::None,
            image_hash: [0; 32],
            measurements: None,
            collateral_root_hash: [0; 48],
            tcb_status: None,
            cert_not_after: info.not_after,
        };
        if self.kind == PolicyKind::Any {
            return Ok(PendingPeer {
                identity,
                quote_for_dcap: None,
            });
        }
        let quote = info
            .quote
            .as_deref()
            .ok_or(AttestError::MissingQuote(self.kind))?;
        let m = match self.kind {
            PolicyKind::FakeTdx => {
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
        if !self.image_hashes.is_empty() && !self.image_hashes.contains(&image_hash) {
            return Err(AttestError::ImageHashNotAllowed(hex::encode(image_hash)));
        }
        identity.image_hash = image_hash;
        identity.measurements = Some(m);
        if self.kind == PolicyKind::FakeTdx {
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
        let dcap = self
            .dcap
            .as_ref()
            .ok_or_else(|| AttestError::Config("policy tdx needs a DCAP verifier".into()))?;
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
        assert_eq!(p8443.kind, PolicyKind::Tdx);
        assert_eq!(f.listen_policy(9000).unwrap().kind, PolicyKind::FakeTdx);
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
        let e = Policy::from_config(&PolicyConfig::new(PolicyKind::Tdx), None).unwrap_err();
        assert!(e.to_string().contains("needs a DCAP verifier"), "{e}");
        let mut c = PolicyConfig::new(PolicyKind::FakeTdx);
        c.allowed_mrtd.push("abcd".into());
        let e = Policy::from_config(&c, None).unwrap_err();
        assert!(e.to_string().contains("must be 48 bytes, got 2"), "{e}");
        let e = PoliciesFile::from_toml("[listen.1]\nkind = \"bogus\"\n").unwrap_err();
        assert!(e.to_string().contains("policy TOML"), "{e}");
    }
}
