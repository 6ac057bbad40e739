//! Roles doing PoW and RA-TLS themselves (`cocoon-attest`).

use std::io;
use std::net::SocketAddr;

use futures::future::BoxFuture;

use super::{BoxIo, Dialer, Listener, PeerInfo, PeerRefused, PendingPeer};

/// Dials over the PoW gate and attested mutual TLS (`cocoon-attest`), checking the
/// peer against the configured policy.
#[derive(Clone)]
pub struct AttestedDialer {
    config: cocoon_attest::ClientConfig,
}

impl std::fmt::Debug for AttestedDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestedDialer").finish_non_exhaustive()
    }
}

impl AttestedDialer {
    /// A dialer presenting `config`'s certificate and enforcing its policy.
    pub fn new(config: cocoon_attest::ClientConfig) -> Self {
        AttestedDialer { config }
    }
}

impl Dialer for AttestedDialer {
    fn dial(&self, endpoint: &str) -> BoxFuture<'static, io::Result<BoxIo>> {
        let endpoint = endpoint.to_owned();
        let config = self.config.clone();
        Box::pin(async move {
            let (stream, peer) = cocoon_attest::dial(endpoint.as_str(), &config)
                .await
                .map_err(|e| {
                    io::Error::other(format!("attested connection to {endpoint} failed: {e}"))
                })?;
            tracing::debug!(peer = %peer.to_json(), "proxy attested");
            Ok(Box::new(stream) as BoxIo)
        })
    }
}

/// A listener that runs the PoW gate and attested mutual TLS on every connection.
pub struct AttestedServer {
    inner: cocoon_attest::AttestedListener,
}

impl std::fmt::Debug for AttestedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestedServer").finish_non_exhaustive()
    }
}

impl AttestedServer {
    /// Binds `addr` with `config` (certificate, policy, PoW difficulty).
    pub async fn bind(addr: &str, config: cocoon_attest::ServerConfig) -> io::Result<Self> {
        let inner = cocoon_attest::AttestedListener::bind(addr, config)
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(AttestedServer { inner })
    }
}

impl Listener for AttestedServer {
    fn accept(&self) -> BoxFuture<'_, io::Result<PendingPeer>> {
        Box::pin(async move {
            let incoming = self
                .inner
                .accept()
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
            let addr = incoming.peer_addr();
            let pending: PendingPeer = Box::pin(async move {
                let (stream, peer) = incoming
                    .establish()
                    .await
                    .map_err(|source| PeerRefused { addr, source })?;
                Ok((
                    Box::new(stream) as BoxIo,
                    PeerInfo {
                        addr,
                        image_hash: Some(peer.image_hash),
                        public_key: Some(peer.public_key),
                    },
                ))
            });
            Ok(pending)
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner
            .local_addr()
            .map_err(|e| io::Error::other(e.to_string()))
    }
}
