//! How roles reach each other: a [`Dialer`] opens a byte stream to an endpoint and a
//! [`Listener`] accepts them. Plain TCP is here; the attested RA-TLS transport of
//! `cocoon-attest` implements the same traits (`attested.rs`), and so does a node behind an
//! official COCOON router (`router.rs`).

use std::io;
use std::net::SocketAddr;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream a connection can run on.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed [`Io`] stream.
pub type BoxIo = Box<dyn Io>;

/// What a listener knows about a peer it accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's socket address.
    pub addr: SocketAddr,
    /// The peer's verified TEE image hash, when the transport attests peers.
    pub image_hash: Option<[u8; 32]>,
    /// The peer's verified public key, when the transport attests peers.
    pub public_key: Option<[u8; 32]>,
}

/// Opens streams to `host:port` endpoints.
pub trait Dialer: Send + Sync + 'static {
    /// Opens a stream to `endpoint`.
    fn dial(&self, endpoint: &str) -> BoxFuture<'static, io::Result<BoxIo>>;
}

/// A peer whose connection was accepted but whose handshake (PoW, TLS, attestation)
/// still has to run; the accept loop spawns it so a slow peer cannot stall others.
pub type PendingPeer = BoxFuture<'static, Result<(BoxIo, PeerInfo), PeerRefused>>;

/// Why an accepted peer never became a connection.
#[derive(Debug, thiserror::Error)]
#[error("attestation of {addr} failed: {source}")]
pub struct PeerRefused {
    /// The peer's socket address.
    pub addr: SocketAddr,
    /// What failed: PoW, TLS or the attestation policy.
    #[source]
    pub source: cocoon_attest::AttestError,
}

/// Accepts incoming streams.
pub trait Listener: Send + Sync + 'static {
    /// Waits for the next connection. An `Err` means the listener itself failed; a
    /// failed handshake shows up when the returned [`PendingPeer`] resolves.
    fn accept(&self) -> BoxFuture<'_, io::Result<PendingPeer>>;

    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// Plain TCP, for tests and for nodes behind an external attesting router.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, endpoint: &str) -> BoxFuture<'static, io::Result<BoxIo>> {
        let endpoint = endpoint.to_owned();
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(&endpoint).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxIo)
        })
    }
}

/// A plain TCP listener.
#[derive(Debug)]
pub struct TcpListener {
    inner: tokio::net::TcpListener,
}

impl TcpListener {
    /// Binds `addr`.
    pub async fn bind(addr: &str) -> io::Result<Self> {
        Ok(TcpListener {
            inner: tokio::net::TcpListener::bind(addr).await?,
        })
    }
}

impl Listener for TcpListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<PendingPeer>> {
        Box::pin(async move {
            let (stream, addr) = self.inner.accept().await?;
            stream.set_nodelay(true)?;
            let ready: PendingPeer = Box::pin(async move {
                Ok((
                    Box::new(stream) as BoxIo,
                    PeerInfo {
                        addr,
                        image_hash: None,
                        public_key: None,
                    },
                ))
            });
            Ok(ready)
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

mod attested;
mod router;

pub use attested::{AttestedDialer, AttestedServer};
pub use router::{RouterDialer, RouterListener};

impl Listener for Box<dyn Listener> {
    fn accept(&self) -> BoxFuture<'_, io::Result<PendingPeer>> {
        (**self).accept()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        (**self).local_addr()
    }
}
