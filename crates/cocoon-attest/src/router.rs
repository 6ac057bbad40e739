//! What an official COCOON `router` tells the runner behind it.
//!
//! In COCOON's own images the runners never speak TLS: a `router` process in the same VM
//! does the PoW gate, RA-TLS and the policy check, and hands the runner a plain stream. With
//! `--serialize-info` the stream starts with a framed [`AttestedPeerInfo`]: what the router
//! verified about the peer (its report, its Ed25519 key, the addresses). Reverse ports
//! (`-R`) send it on accepted connections, the SOCKS5 port (`-S`) after the SOCKS reply.
//!
//! Layout (cocoon-protocol-9060ce5.md §7.7, base §7.7 for v1): a `u32` little-endian
//! length (at most [`MAX_PEER_INFO`]) and a body in td's `tl_helpers` form (little-endian
//! `i32`s, TL-style strings). Version 2 (9060ce5) starts with the marker `2` and a variant
//! (0 = TDX, 1 = SEV-SNP); version 1 (b75d444) with `has_value` (0 or 1) and, when 1, a
//! variant (0 = TDX, 1 = SGX). We write v2 only, as upstream does, and read both: COCOON's
//! own v1 fallback crashes or misreads (§11 item 8), ours does not.

use std::net::SocketAddr;

use cocoon_tl::codec::{put_bytes, put_i32, Reader};
use cocoon_tl::TlError;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::quote::TdMeasurements;

/// The largest framed body a router sends (td's `MAX_FRAMED_MESSAGE_SIZE`).
pub const MAX_PEER_INFO: usize = 16_536;

/// The v2 format marker (upstream calls it a "kludge": v1 began with `has_value` 0 or 1).
const V2_MARKER: i32 = 2;

/// What the router's policy verified about the peer.
// One per connection, read once: boxing the TDX registers would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterReport {
    /// A TDX report (also what `any` peers and unattested peers get: all zero).
    Tdx {
        /// The measurement registers and report data.
        measurements: TdMeasurements,
        /// The DCAP collateral root key id (zero for fake TDX and `any`).
        collateral_root_hash: [u8; 48],
    },
    /// An SEV-SNP report (v2 only).
    Sev {
        /// The launch measurement.
        measurement: [u8; 48],
        /// The report data (SHA-512 of the peer's key).
        report_data: [u8; 64],
    },
    /// An SGX report (v1 only; COCOON never produced one for TLS peers).
    Sgx {
        /// MRENCLAVE.
        mr_enclave: [u8; 32],
        /// The report data.
        report_data: [u8; 64],
    },
}

impl RouterReport {
    /// The report of a peer that proved nothing (policy `any`): all-zero TDX.
    pub fn empty() -> Self {
        RouterReport::Tdx {
            measurements: TdMeasurements::zero_with_report_data([0; 64]),
            collateral_root_hash: [0; 48],
        }
    }

    /// The COCOON image hash of this report (§7.4): TDX and SEV-SNP as their verifiers
    /// compute it; SGX as COCOON's v1 runner did (SHA-256 of MRENCLAVE is not defined there,
    /// so all zero).
    pub fn image_hash(&self) -> [u8; 32] {
        match self {
            RouterReport::Tdx { measurements, .. } => measurements.image_hash(),
            RouterReport::Sev { measurement, .. } => crate::sev::image_hash(measurement),
            RouterReport::Sgx { .. } => [0; 32],
        }
    }

    /// The report data the peer's evidence carried.
    pub fn report_data(&self) -> &[u8; 64] {
        match self {
            RouterReport::Tdx { measurements, .. } => &measurements.report_data,
            RouterReport::Sev { report_data, .. } | RouterReport::Sgx { report_data, .. } => {
                report_data
            }
        }
    }

    /// `"tdx"`, `"sev-snp"` or `"sgx"`, for logs and stats.
    pub fn kind(&self) -> &'static str {
        match self {
            RouterReport::Tdx { .. } => "tdx",
            RouterReport::Sev { .. } => "sev-snp",
            RouterReport::Sgx { .. } => "sgx",
        }
    }
}

/// The attestation prefix an official router writes before a runner's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedPeerInfo {
    /// What the router verified; `None` only in v1's "no attestation" form.
    pub report: Option<RouterReport>,
    /// The peer's Ed25519 public key, from its certificate.
    pub public_key: [u8; 32],
    /// The peer's address as the router saw it.
    pub source_ip: String,
    /// The peer's port as the router saw it.
    pub source_port: i32,
    /// The address the router was reached at.
    pub destination_ip: String,
    /// The port the router was reached at.
    pub destination_port: i32,
}

/// Why a router's peer-info prefix was refused.
#[derive(Debug, thiserror::Error)]
pub enum PeerInfoError {
    /// The frame length exceeds what a router sends.
    #[error("router peer info is {0} bytes, more than the {MAX_PEER_INFO} a router sends")]
    TooLong(usize),
    /// The first word is neither v1's `has_value` (0, 1) nor v2's marker (2).
    #[error("router peer info starts with {0}, not a known format (0/1: v1, 2: v2)")]
    UnknownFormat(i32),
    /// An unknown report variant.
    #[error("router peer info has report variant {0}, not a known one")]
    UnknownVariant(i32),
    /// The public key is not 32 bytes.
    #[error("router peer info carries a {0}-byte public key, not 32")]
    KeyLength(usize),
    /// The body is malformed (truncated, bad string, trailing bytes).
    #[error("malformed router peer info: {0}")]
    Tl(#[from] TlError),
    /// The stream ended or failed before the prefix was read.
    #[error("reading the router's peer info: {0}")]
    Io(#[from] std::io::Error),
}

impl AttestedPeerInfo {
    /// The peer info of `peer` at `source`, reached at `destination`.
    pub fn new(
        report: RouterReport,
        public_key: [u8; 32],
        source: SocketAddr,
        destination: SocketAddr,
    ) -> Self {
        AttestedPeerInfo {
            report: Some(report),
            public_key,
            source_ip: source.ip().to_string(),
            source_port: i32::from(source.port()),
            destination_ip: destination.ip().to_string(),
            destination_port: i32::from(destination.port()),
        }
    }

    /// The peer's image hash as a COCOON runner takes it: of the report, or all zero when
    /// v1 said there was none.
    pub fn image_hash(&self) -> [u8; 32] {
        self.report
            .as_ref()
            .map_or([0; 32], RouterReport::image_hash)
    }

    /// The peer's socket address, when the router's text parses as one.
    pub fn source_addr(&self) -> Option<SocketAddr> {
        let ip = self.source_ip.parse().ok()?;
        let port = u16::try_from(self.source_port).ok()?;
        Some(SocketAddr::new(ip, port))
    }

    /// The body in v2 form, unframed. A v1 value without a report is written as v2 writes
    /// `any` peers: an empty TDX report.
    pub fn to_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(700);
        put_i32(&mut out, V2_MARKER);
        match self.report.clone().unwrap_or_else(RouterReport::empty) {
            RouterReport::Tdx {
                measurements,
                collateral_root_hash,
            } => {
                put_i32(&mut out, 0);
                put_td(&mut out, &measurements);
                out.extend_from_slice(&collateral_root_hash);
            }
            RouterReport::Sev {
                measurement,
                report_data,
            } => {
                put_i32(&mut out, 1);
                out.extend_from_slice(&measurement);
                out.extend_from_slice(&report_data);
            }
            // v2 has no SGX variant; an SGX report never attests a TLS peer.
            RouterReport::Sgx { report_data, .. } => {
                put_i32(&mut out, 0);
                put_td(
                    &mut out,
                    &TdMeasurements::zero_with_report_data(report_data),
                );
                out.extend_from_slice(&[0; 48]);
            }
        }
        put_bytes(&mut out, &self.public_key);
        put_bytes(&mut out, self.source_ip.as_bytes());
        put_i32(&mut out, self.source_port);
        put_bytes(&mut out, self.destination_ip.as_bytes());
        put_i32(&mut out, self.destination_port);
        out
    }

    /// The framed prefix a router writes: length, then [`Self::to_body`].
    pub fn to_frame(&self) -> Vec<u8> {
        let body = self.to_body();
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses a body (v1 or v2); the whole body must be consumed, as td's `unserialize`
    /// demands.
    pub fn parse(body: &[u8]) -> Result<Self, PeerInfoError> {
        if body.len() > MAX_PEER_INFO {
            return Err(PeerInfoError::TooLong(body.len()));
        }
        let mut r = Reader::new(body);
        let report = match r.read_i32()? {
            V2_MARKER => Some(match r.read_i32()? {
                0 => read_tdx(&mut r)?,
                1 => RouterReport::Sev {
                    measurement: r.read_array()?,
                    report_data: r.read_array()?,
                },
                other => return Err(PeerInfoError::UnknownVariant(other)),
            }),
            0 => {
                // v1 without a value still carries the collateral root hash.
                r.take(48)?;
                None
            }
            1 => {
                let report = match r.read_i32()? {
                    0 => RouterReport::Tdx {
                        measurements: read_td(&mut r)?,
                        collateral_root_hash: [0; 48],
                    },
                    1 => RouterReport::Sgx {
                        mr_enclave: r.read_array()?,
                        report_data: r.read_array()?,
                    },
                    other => return Err(PeerInfoError::UnknownVariant(other)),
                };
                let root: [u8; 48] = r.read_array()?;
                Some(match report {
                    RouterReport::Tdx { measurements, .. } => RouterReport::Tdx {
                        measurements,
                        collateral_root_hash: root,
                    },
                    other => other,
                })
            }
            other => return Err(PeerInfoError::UnknownFormat(other)),
        };
        let key = r.read_byte_slice()?;
        let public_key: [u8; 32] = key
            .try_into()
            .map_err(|_| PeerInfoError::KeyLength(key.len()))?;
        let source_ip = r.read_string()?;
        let source_port = r.read_i32()?;
        let destination_ip = r.read_string()?;
        let destination_port = r.read_i32()?;
        r.finish()?;
        Ok(AttestedPeerInfo {
            report,
            public_key,
            source_ip,
            source_port,
            destination_ip,
            destination_port,
        })
    }

    /// Reads the framed prefix from the start of `stream`, leaving the runner's bytes that
    /// follow it unread.
    pub async fn read_from<R: AsyncRead + Unpin>(stream: &mut R) -> Result<Self, PeerInfoError> {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_PEER_INFO {
            return Err(PeerInfoError::TooLong(len));
        }
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        Self::parse(&body)
    }
}

fn put_td(out: &mut Vec<u8>, m: &TdMeasurements) {
    out.extend_from_slice(&m.mrtd);
    out.extend_from_slice(&m.mr_config_id);
    out.extend_from_slice(&m.mr_owner);
    out.extend_from_slice(&m.mr_owner_config);
    for rtmr in &m.rtmr {
        out.extend_from_slice(rtmr);
    }
    out.extend_from_slice(&m.report_data);
}

fn read_td(r: &mut Reader<'_>) -> Result<TdMeasurements, TlError> {
    Ok(TdMeasurements {
        mrtd: r.read_array()?,
        mr_config_id: r.read_array()?,
        mr_owner: r.read_array()?,
        mr_owner_config: r.read_array()?,
        rtmr: [
            r.read_array()?,
            r.read_array()?,
            r.read_array()?,
            r.read_array()?,
        ],
        report_data: r.read_array()?,
    })
}

fn read_tdx(r: &mut Reader<'_>) -> Result<RouterReport, TlError> {
    Ok(RouterReport::Tdx {
        measurements: read_td(r)?,
        collateral_root_hash: r.read_array()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(report: Option<RouterReport>) -> AttestedPeerInfo {
        AttestedPeerInfo {
            report,
            public_key: [7; 32],
            source_ip: "10.0.0.2".into(),
            source_port: 51234,
            destination_ip: "127.0.0.1".into(),
            destination_port: 11001,
        }
    }

    #[test]
    fn v2_sev_layout_is_the_documented_one() {
        let info = sample(Some(RouterReport::Sev {
            measurement: [0xaa; 48],
            report_data: [0xbb; 64],
        }));
        let body = info.to_body();
        // marker, variant, measurement, report data
        assert_eq!(&body[..8], &[2, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&body[8..56], &[0xaa; 48]);
        assert_eq!(&body[56..120], &[0xbb; 64]);
        // the key as a TL string: length byte, 32 bytes, 3 bytes of padding
        assert_eq!(body[120], 32);
        assert_eq!(&body[121..153], &[7; 32]);
        assert_eq!(&body[153..156], &[0, 0, 0]);
        // "10.0.0.2": 1 + 8 bytes, padded to 12
        assert_eq!(body[156], 8);
        assert_eq!(&body[157..165], b"10.0.0.2");
        assert_eq!(&body[168..172], &51234i32.to_le_bytes());
        assert_eq!(body.len(), 172 + 12 + 4);
        assert_eq!(AttestedPeerInfo::parse(&body).expect("parse"), info);
    }

    #[test]
    fn v2_tdx_report_is_496_bytes_and_empty_hashes_as_cocoon_says() {
        let info = sample(Some(RouterReport::empty()));
        let body = info.to_body();
        assert_eq!(
            body[8 + 496],
            32,
            "key string right after the 496-byte report"
        );
        assert_eq!(
            hex::encode(info.image_hash()),
            "5c55c8f4db4010ba9203d83536d0609856af8c847ac039e37e7dde8fbd574b61"
        );
        let sev_zero = sample(Some(RouterReport::Sev {
            measurement: [0; 48],
            report_data: [0; 64],
        }));
        assert_eq!(
            hex::encode(sev_zero.image_hash()),
            "b5fdab78d8947eacc864bfeecb4d2100780e5afe1cd8efafb124887913ac49fa"
        );
    }

    #[test]
    fn v1_bodies_are_read() {
        // v1 "no value": has_value 0, the collateral root hash, then the claims.
        let mut body = Vec::new();
        put_i32(&mut body, 0);
        body.extend_from_slice(&[0; 48]);
        put_bytes(&mut body, &[9; 32]);
        put_bytes(&mut body, b"1.2.3.4");
        put_i32(&mut body, 5);
        put_bytes(&mut body, b"5.6.7.8");
        put_i32(&mut body, 6);
        let info = AttestedPeerInfo::parse(&body).expect("v1 empty");
        assert_eq!(info.report, None);
        assert_eq!(info.image_hash(), [0; 32]);
        assert_eq!(info.public_key, [9; 32]);
        assert_eq!(info.source_addr(), Some("1.2.3.4:5".parse().expect("addr")));

        // v1 TDX: has_value 1, variant 0, the 448-byte report, the root hash.
        let mut m = TdMeasurements::zero_with_report_data([3; 64]);
        m.mrtd = [1; 48];
        let mut body = Vec::new();
        put_i32(&mut body, 1);
        put_i32(&mut body, 0);
        put_td(&mut body, &m);
        body.extend_from_slice(&[4; 48]);
        put_bytes(&mut body, &[9; 32]);
        put_bytes(&mut body, b"");
        put_i32(&mut body, 0);
        put_bytes(&mut body, b"");
        put_i32(&mut body, 0);
        let info = AttestedPeerInfo::parse(&body).expect("v1 tdx");
        assert_eq!(
            info.report,
            Some(RouterReport::Tdx {
                measurements: m.clone(),
                collateral_root_hash: [4; 48]
            })
        );
        assert_eq!(info.image_hash(), m.image_hash());
    }

    #[test]
    fn malformed_bodies_are_refused_precisely() {
        let good = sample(Some(RouterReport::empty())).to_body();
        let mut unknown = good.clone();
        unknown[..4].copy_from_slice(&3i32.to_le_bytes());
        assert!(matches!(
            AttestedPeerInfo::parse(&unknown),
            Err(PeerInfoError::UnknownFormat(3))
        ));
        let mut variant = good.clone();
        variant[4..8].copy_from_slice(&7i32.to_le_bytes());
        assert!(matches!(
            AttestedPeerInfo::parse(&variant),
            Err(PeerInfoError::UnknownVariant(7))
        ));
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0; 4]);
        assert!(matches!(
            AttestedPeerInfo::parse(&trailing),
            Err(PeerInfoError::Tl(TlError::TrailingBytes { .. }))
        ));
        assert!(matches!(
            AttestedPeerInfo::parse(&good[..100]),
            Err(PeerInfoError::Tl(TlError::UnexpectedEof { .. }))
        ));
        let mut short_key = good[..8 + 496].to_vec();
        put_bytes(&mut short_key, &[1; 16]);
        assert!(matches!(
            AttestedPeerInfo::parse(&short_key),
            Err(PeerInfoError::KeyLength(16))
        ));
    }

    #[tokio::test]
    async fn the_prefix_is_read_and_the_stream_after_it_left_alone() {
        let info = sample(Some(RouterReport::empty()));
        let mut bytes = info.to_frame();
        bytes.extend_from_slice(b"runner bytes");
        let mut stream = &bytes[..];
        let read = AttestedPeerInfo::read_from(&mut stream)
            .await
            .expect("prefix");
        assert_eq!(read, info);
        assert_eq!(stream, b"runner bytes");

        let mut huge = &(MAX_PEER_INFO as u32 + 1).to_le_bytes()[..];
        assert!(matches!(
            AttestedPeerInfo::read_from(&mut huge).await,
            Err(PeerInfoError::TooLong(_))
        ));
        let mut cut = &info.to_frame()[..50];
        assert!(matches!(
            AttestedPeerInfo::read_from(&mut cut).await,
            Err(PeerInfoError::Io(_))
        ));
    }

    fn report() -> impl Strategy<Value = RouterReport> {
        prop_oneof![
            (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
                let mut m = TdMeasurements::zero_with_report_data([0; 64]);
                m.mrtd[..32].copy_from_slice(&a);
                m.rtmr[3][..32].copy_from_slice(&b);
                m.report_data[..32].copy_from_slice(&b);
                RouterReport::Tdx {
                    measurements: m,
                    collateral_root_hash: [a[0]; 48],
                }
            }),
            (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
                let mut measurement = [0; 48];
                measurement[..32].copy_from_slice(&a);
                let mut report_data = [0; 64];
                report_data[32..].copy_from_slice(&b);
                RouterReport::Sev {
                    measurement,
                    report_data,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn v2_round_trips(
            report in report(),
            key in any::<[u8; 32]>(),
            src in "[0-9a-f.:]{0,300}",
            dst in "[0-9.]{0,20}",
            ports in any::<(i32, i32)>(),
        ) {
            let info = AttestedPeerInfo {
                report: Some(report),
                public_key: key,
                source_ip: src,
                source_port: ports.0,
                destination_ip: dst,
                destination_port: ports.1,
            };
            prop_assert_eq!(AttestedPeerInfo::parse(&info.to_body()).expect("parse"), info);
        }

        #[test]
        fn any_bytes_parse_or_fail_without_panicking(body in proptest::collection::vec(any::<u8>(), 0..1200)) {
            let _ = AttestedPeerInfo::parse(&body);
        }
    }
}
