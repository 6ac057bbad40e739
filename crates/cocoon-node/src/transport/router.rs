//! A node behind an official COCOON `router`, as in COCOON's own images: the router does
//! PoW, RA-TLS and its policy check, and the node speaks plain TCP to it on loopback.
//!
//! Inbound, the router's reverse port (`-R PORT:127.0.0.1:NODE_PORT@POLICY
//! --serialize-info`) opens a connection to our listening port and writes the peer's
//! [`AttestedPeerInfo`] first. Outbound, we ask the router's SOCKS5 port (`-S
//! PORT@POLICY --serialize-info`) for the target; it answers once PoW and RA-TLS with the
//! target are done, then writes the target's peer info. Either way the node's policy is
//! applied to what the router verified ([`Policy::check_router_info`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cocoon_attest::router::AttestedPeerInfo;
use cocoon_attest::{AttestError, Policy};
use futures::future::BoxFuture;

use super::{BoxIo, Dialer, Listener, PeerInfo, PeerRefused, PendingPeer};

/// How long a router may take to write its peer info after the TCP connection opens.
const PEER_INFO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the SOCKS5 exchange may take (it includes the router's PoW and RA-TLS with
/// the target).
const SOCKS_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads the router's prefix from `stream` and judges it with `policy`.
async fn judge<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    policy: &Policy,
) -> Result<(AttestedPeerInfo, cocoon_attest::PeerIdentity), AttestError> {
    let info = tokio::time::timeout(PEER_INFO_TIMEOUT, AttestedPeerInfo::read_from(stream))
        .await
        .map_err(|_| AttestError::Timeout("router peer info", PEER_INFO_TIMEOUT))??;
    let identity = policy.check_router_info(&info)?;
    Ok((info, identity))
}

/// Accepts plain TCP connections from a local official router's reverse port, each
/// starting with the router's peer info.
pub struct RouterListener {
    inner: tokio::net::TcpListener,
    policy: Arc<Policy>,
}

impl std::fmt::Debug for RouterListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterListener")
            .field("addr", &self.inner.local_addr().ok())
            .field("policy", &self.policy.kind())
            .finish()
    }
}

impl RouterListener {
    /// Binds `addr` (loopback: only the router should reach it), judging peers with
    /// `policy`.
    pub async fn bind(addr: &str, policy: Arc<Policy>) -> io::Result<Self> {
        Ok(RouterListener {
            inner: tokio::net::TcpListener::bind(addr).await?,
            policy,
        })
    }
}

impl Listener for RouterListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<PendingPeer>> {
        Box::pin(async move {
            let (mut stream, addr) = self.inner.accept().await?;
            stream.set_nodelay(true)?;
            let policy = self.policy.clone();
            let pending: PendingPeer = Box::pin(async move {
                let (info, identity) = judge(&mut stream, &policy)
                    .await
                    .map_err(|source| PeerRefused { addr, source })?;
                let peer_addr = info.source_addr().unwrap_or(addr);
                tracing::debug!(
                    peer = %peer_addr,
                    tee = info.report.as_ref().map_or("none", |r| r.kind()),
                    image_hash = %hex::encode(identity.image_hash),
                    "peer admitted by the router"
                );
                Ok((
                    Box::new(stream) as BoxIo,
                    PeerInfo {
                        addr: peer_addr,
                        image_hash: Some(identity.image_hash),
                        public_key: Some(identity.public_key),
                    },
                ))
            });
            Ok(pending)
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Dials through a local official router's SOCKS5 port.
#[derive(Clone)]
pub struct RouterDialer {
    socks5: String,
    policy: Arc<Policy>,
}

impl std::fmt::Debug for RouterDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterDialer")
            .field("socks5", &self.socks5)
            .field("policy", &self.policy.kind())
            .finish()
    }
}

impl RouterDialer {
    /// Dials through the SOCKS5 port at `socks5` (`host:port`), judging the targets the
    /// router reaches with `policy`.
    pub fn new(socks5: String, policy: Arc<Policy>) -> Self {
        RouterDialer { socks5, policy }
    }
}

impl Dialer for RouterDialer {
    fn dial(&self, endpoint: &str) -> BoxFuture<'static, io::Result<BoxIo>> {
        let endpoint = endpoint.to_owned();
        let (socks5, policy) = (self.socks5.clone(), self.policy.clone());
        Box::pin(async move {
            let connect =
                tokio_socks::tcp::Socks5Stream::connect(socks5.as_str(), endpoint.as_str());
            let mut stream = tokio::time::timeout(SOCKS_TIMEOUT, connect)
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("router SOCKS5 {socks5} did not reach {endpoint} within {SOCKS_TIMEOUT:?}"),
                    )
                })?
                .map_err(|e| {
                    io::Error::other(format!(
                        "router SOCKS5 {socks5} could not reach {endpoint}: {e}"
                    ))
                })?;
            let (_, identity) = judge(&mut stream, &policy).await.map_err(|e| {
                io::Error::other(format!("{endpoint} through router {socks5} refused: {e}"))
            })?;
            tracing::debug!(
                tee = ?identity.tee,
                image_hash = %hex::encode(identity.image_hash),
                "proxy reached through the router"
            );
            Ok(Box::new(stream) as BoxIo)
        })
    }
}
