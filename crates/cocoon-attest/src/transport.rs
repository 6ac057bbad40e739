//! Attested connections: TCP, then the PoW gate, then mutual RA-TLS, then the async
//! part of the policy (DCAP for real TDX). The result is a plain byte stream for the
//! framed RPC layer plus the peer's verified identity.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tracing::Instrument;

use crate::policy::{PeerIdentity, Policy};
use crate::pow;
use crate::tls::{client_config_with, provider, server_config_with, AttestVerifier, CertResolver};
use crate::AttestError;

/// An established attested connection: TLS 1.3 over `S` (TCP by default). Implements
/// tokio `AsyncRead + AsyncWrite + Unpin + Send`.
pub type AttestedStream<S = TcpStream> = tokio_rustls::TlsStream<S>;

/// Default limit for the TLS handshake plus verification.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Everything a listening port needs.
#[derive(Clone)]
pub struct ServerConfig {
    identity: Arc<CertResolver>,
    policy: Arc<Policy>,
    /// PoW difficulty asked of clients; `None` disables the gate (runner-internal use
    /// and benchmarks only; COCOON always runs it on router ports).
    pub pow_difficulty: Option<u32>,
    /// How long the client has to answer the PoW challenge.
    pub pow_timeout: Duration,
    /// Limit for TLS plus verification.
    pub handshake_timeout: Duration,
    tls: Arc<rustls::ServerConfig>,
    verifier: Arc<AttestVerifier>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("policy", &self.policy.kind())
            .field("pow_difficulty", &self.pow_difficulty)
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    /// A server config with PoW difficulty 20 and default timeouts.
    pub fn new(identity: Arc<CertResolver>, policy: Arc<Policy>) -> Result<Self, AttestError> {
        let verifier = Arc::new(AttestVerifier::new(policy.clone(), &provider()));
        let tls = Arc::new(server_config_with(identity.clone(), verifier.clone())?);
        Ok(Self {
            identity,
            policy,
            pow_difficulty: Some(pow::DEFAULT_DIFFICULTY),
            pow_timeout: pow::DEFAULT_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            tls,
            verifier,
        })
    }

    /// Our certificate (renewable; fixed for the life of this config).
    pub fn identity(&self) -> &Arc<CertResolver> {
        &self.identity
    }

    /// What we require of clients (fixed for the life of this config).
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Sets the PoW difficulty (`None`: no gate).
    pub fn with_pow_difficulty(mut self, d: Option<u32>) -> Self {
        self.pow_difficulty = d;
        self
    }

    /// Sets the PoW answer timeout.
    pub fn with_pow_timeout(mut self, t: Duration) -> Self {
        self.pow_timeout = t;
        self
    }
}

/// Everything an outgoing connection needs.
#[derive(Clone)]
pub struct ClientConfig {
    identity: Arc<CertResolver>,
    policy: Arc<Policy>,
    /// Highest PoW difficulty we solve; `None` means the server runs no gate.
    pub pow_max_difficulty: Option<u32>,
    /// How long we wait for the PoW challenge.
    pub pow_timeout: Duration,
    /// Limit for TLS plus verification.
    pub handshake_timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
    verifier: Arc<AttestVerifier>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("policy", &self.policy.kind())
            .field("pow_max_difficulty", &self.pow_max_difficulty)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// A client config with PoW maximum 28 and default timeouts.
    pub fn new(identity: Arc<CertResolver>, policy: Arc<Policy>) -> Result<Self, AttestError> {
        let verifier = Arc::new(AttestVerifier::new(policy.clone(), &provider()));
        let tls = Arc::new(client_config_with(identity.clone(), verifier.clone())?);
        Ok(Self {
            identity,
            policy,
            pow_max_difficulty: Some(pow::DEFAULT_MAX_DIFFICULTY),
            pow_timeout: pow::DEFAULT_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            tls,
            verifier,
        })
    }

    /// Our certificate (renewable; fixed for the life of this config).
    pub fn identity(&self) -> &Arc<CertResolver> {
        &self.identity
    }

    /// What we require of the server (fixed for the life of this config).
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Sets the highest PoW difficulty solved (`None`: expect no gate).
    pub fn with_pow_max_difficulty(mut self, d: Option<u32>) -> Self {
        self.pow_max_difficulty = d;
        self
    }
}

fn handshake_err(e: std::io::Error) -> AttestError {
    // rustls errors arrive wrapped in io::Error; surface the verifier's own message.
    let Some(inner) = e.get_ref() else {
        return AttestError::Handshake(e.to_string());
    };
    if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) =
        inner.downcast_ref::<rustls::Error>()
    {
        return AttestError::Handshake(format!("peer certificate rejected: {}", other.0));
    }
    AttestError::Handshake(inner.to_string())
}

async fn verify_peer(
    verifier: &AttestVerifier,
    certs: Option<&[rustls::pki_types::CertificateDer<'static>]>,
) -> Result<PeerIdentity, AttestError> {
    let cert = certs
        .and_then(|c| c.first())
        .ok_or_else(|| AttestError::Handshake("peer presented no certificate".into()))?;
    let policy = verifier.policy();
    match verifier.take_verified(cert.as_ref()) {
        // The in-handshake check already ran on exactly these bytes.
        Some(pending) => policy.finish(pending).await,
        None => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            policy.verify_cert(cert.as_ref(), now).await
        }
    }
}

/// Server side over any stream: PoW gate (if configured), TLS, verification.
pub async fn server_handshake<S>(
    mut stream: S,
    cfg: &ServerConfig,
) -> Result<(AttestedStream<S>, PeerIdentity), AttestError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    if let Some(d) = cfg.pow_difficulty {
        pow::server_gate(&mut stream, d, cfg.pow_timeout).await?;
    }
    let run = async {
        let tls = tokio_rustls::TlsAcceptor::from(cfg.tls.clone())
            .accept(stream)
            .await
            .map_err(handshake_err)?;
        let id = verify_peer(&cfg.verifier, tls.get_ref().1.peer_certificates()).await?;
        Ok((tokio_rustls::TlsStream::Server(tls), id))
    };
    tokio::time::timeout(cfg.handshake_timeout, run)
        .await
        .map_err(|_| AttestError::Timeout("TLS handshake", cfg.handshake_timeout))?
}

/// Client side over any stream: PoW gate (if configured), TLS, verification.
pub async fn client_handshake<S>(
    mut stream: S,
    cfg: &ClientConfig,
) -> Result<(AttestedStream<S>, PeerIdentity), AttestError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    if let Some(max) = cfg.pow_max_difficulty {
        pow::client_gate(&mut stream, max, cfg.pow_timeout).await?;
    }
    let run = async {
        // COCOON's SNI; rustls sends no SNI for an IP address, which is fine.
        let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let tls = tokio_rustls::TlsConnector::from(cfg.tls.clone())
            .connect(name, stream)
            .await
            .map_err(handshake_err)?;
        let id = verify_peer(&cfg.verifier, tls.get_ref().1.peer_certificates()).await?;
        Ok((tokio_rustls::TlsStream::Client(tls), id))
    };
    tokio::time::timeout(cfg.handshake_timeout, run)
        .await
        .map_err(|_| AttestError::Timeout("TLS handshake", cfg.handshake_timeout))?
}

/// Dials `addr` and establishes an attested connection.
pub async fn dial<A: ToSocketAddrs>(
    addr: A,
    cfg: &ClientConfig,
) -> Result<(AttestedStream, PeerIdentity), AttestError> {
    let tcp = TcpStream::connect(addr).await?;
    let peer = tcp.peer_addr()?;
    let _ = tcp.set_nodelay(true);
    let span = tracing::info_span!("attest_dial", %peer, policy = %cfg.policy.kind());
    async move {
        let r = client_handshake(tcp, cfg).await;
        match &r {
            Ok((_, id)) => tracing::info!(tee = ?id.tee, image_hash = %hex::encode(id.image_hash), "attested connection established"),
            Err(e) => tracing::warn!(error = %e, "attested dial failed"),
        }
        r
    }
    .instrument(span)
    .await
}

/// A TCP connection accepted by an [`AttestedListener`] but not yet attested.
#[derive(Debug)]
pub struct Incoming {
    tcp: TcpStream,
    peer: SocketAddr,
    cfg: ServerConfig,
}

impl Incoming {
    /// The remote address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Runs the PoW gate, TLS and verification (spawn this per connection).
    pub async fn establish(self) -> Result<(AttestedStream, PeerIdentity), AttestError> {
        let span = tracing::info_span!("attest_accept", peer = %self.peer, policy = %self.cfg.policy.kind());
        let cfg = self.cfg;
        let tcp = self.tcp;
        async move {
            let r = server_handshake(tcp, &cfg).await;
            match &r {
                Ok((_, id)) => tracing::info!(tee = ?id.tee, image_hash = %hex::encode(id.image_hash), "attested connection accepted"),
                Err(e) => tracing::warn!(error = %e, "attested accept failed"),
            }
            r
        }
        .instrument(span)
        .await
    }
}

/// A listening port that hands out attested connections.
#[derive(Debug)]
pub struct AttestedListener {
    tcp: TcpListener,
    cfg: ServerConfig,
}

impl AttestedListener {
    /// Binds `addr` with one policy for the whole port.
    pub async fn bind<A: ToSocketAddrs>(addr: A, cfg: ServerConfig) -> Result<Self, AttestError> {
        Ok(Self {
            tcp: TcpListener::bind(addr).await?,
            cfg,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, AttestError> {
        Ok(self.tcp.local_addr()?)
    }

    /// Accepts the next TCP connection; call [`Incoming::establish`] (usually in its own
    /// task) to attest it, so slow peers do not block the listener.
    pub async fn accept(&self) -> Result<Incoming, AttestError> {
        let (tcp, peer) = self.tcp.accept().await?;
        let _ = tcp.set_nodelay(true);
        Ok(Incoming {
            tcp,
            peer,
            cfg: self.cfg.clone(),
        })
    }

    /// Accepts and attests one connection inline (tools and tests).
    pub async fn accept_attested(
        &self,
    ) -> Result<(AttestedStream, PeerIdentity, SocketAddr), AttestError> {
        let inc = self.accept().await?;
        let peer = inc.peer;
        let (s, id) = inc.establish().await?;
        Ok((s, id, peer))
    }
}
