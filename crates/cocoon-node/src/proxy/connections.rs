//! Connections: the accept loops and the per-connection loops of clients and workers, which
//! close every connection when the proxy moves to new root parameters.

use std::sync::atomic::{AtomicU64, Ordering};

use cocoon_net::{ErrorCode, Incoming, IncomingQuery, RpcConnection, RpcError, RpcHandle};
use tracing::{debug, info, info_span, warn, Instrument};

use super::admission::Authorization;
use super::admission::ClientSession;
use super::Proxy;
use crate::ledger::Party;
use crate::transport::{Listener, PeerInfo};

impl Proxy {
    /// Accepts client connections from `listener` until it fails.
    pub fn serve_clients<L: Listener>(&self, listener: L) -> tokio::task::JoinHandle<()> {
        self.serve(listener, Party::Client)
    }

    /// Accepts worker connections from `listener` until it fails.
    pub fn serve_workers<L: Listener>(&self, listener: L) -> tokio::task::JoinHandle<()> {
        self.serve(listener, Party::Worker)
    }

    /// The accept loop: each peer's handshake (PoW, TLS, opening) runs in its own task.
    pub(super) fn serve<L: Listener>(
        &self,
        listener: L,
        party: Party,
    ) -> tokio::task::JoinHandle<()> {
        let proxy = self.clone();
        tokio::spawn(async move {
            loop {
                let pending = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        warn!(error = %e, party = party.name(), "listener failed");
                        return;
                    }
                };
                let proxy = proxy.clone();
                tokio::spawn(async move {
                    let (stream, peer) = match pending.await {
                        Ok(x) => x,
                        Err(e) => {
                            info!(error = %e, party = party.name(), "peer refused");
                            return;
                        }
                    };
                    let cfg = proxy.shared.settings.connection.clone();
                    match RpcConnection::accept(stream, &cfg, &peer.addr.to_string()).await {
                        Ok(conn) => match party {
                            Party::Client => proxy.handle_client(conn, peer).await,
                            Party::Worker => proxy.handle_worker(conn, peer).await,
                        },
                        Err(e) => debug!(error = %e, party = party.name(), "opening failed"),
                    }
                });
            }
        })
    }

    /// Serves one client connection: handshake, authorization, then requests.
    pub async fn handle_client(&self, conn: RpcConnection, peer: PeerInfo) {
        let span = info_span!("client", peer = %peer.addr);
        async move {
            let (handle, incoming) = conn.split();
            let stats = &self.shared.stats;
            stats.client_connections.fetch_add(1, Ordering::Relaxed);
            struct Open<'a>(&'a AtomicU64);
            impl Drop for Open<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::Relaxed);
                }
            }
            let _open = Open(&stats.client_connections);
            let mut session: Option<ClientSession> = None;
            let mut authorized = false;
            let mut inbox = Inbox::new(handle.clone(), incoming, self.rotated());
            while let Some(item) = inbox.next().await {
                match item {
                    Incoming::Query(q) => {
                        if !authorized {
                            match self.client_handshake_query(q, &mut session).await {
                                Ok(stage) => authorized = stage == Authorization::Granted,
                                Err(reason) => {
                                    inbox.hang_up(&reason);
                                    break;
                                }
                            }
                        } else if let Some(session) = &session {
                            self.client_query(q, session).await;
                        }
                    }
                    Incoming::Packet(data) => match (&session, authorized) {
                        (Some(session), true) => self.client_packet(&handle, session, &data).await,
                        _ => debug!("packet before authorization ignored"),
                    },
                }
            }
            // The client went away: cancel its requests at the workers.
            self.cancel_requests(|r| r.client.is_closed()).await;
        }
        .instrument(span)
        .await
    }

    /// Serves one worker connection: handshake, then answers and status messages.
    pub async fn handle_worker(&self, conn: RpcConnection, peer: PeerInfo) {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let span = info_span!("worker", conn = id, peer = %peer.addr);
        async move {
            let now = crate::util::unix_time();
            self.state().peers.insert(id, (peer, now));
            let (handle, incoming) = conn.split();
            let mut inbox = Inbox::new(handle.clone(), incoming, self.rotated());
            while let Some(item) = inbox.next().await {
                match item {
                    Incoming::Query(q) => {
                        if let Err(reason) = self.worker_query(id, &handle, q).await {
                            inbox.hang_up(&reason);
                            break;
                        }
                    }
                    Incoming::Packet(data) => self.worker_packet(id, &handle, &data).await,
                }
            }
            self.worker_gone(id).await;
            self.state().peers.remove(&id);
        }
        .instrument(span)
        .await
    }
}

/// What arrives on one connection, until the peer leaves or the proxy moves to new root
/// parameters (then the connection closes, so that the peer reconnects to its new
/// contract).
struct Inbox {
    handle: RpcHandle,
    incoming: tokio::sync::mpsc::Receiver<Incoming>,
    rotated: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl Inbox {
    fn new(
        handle: RpcHandle,
        incoming: tokio::sync::mpsc::Receiver<Incoming>,
        rotated: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Self {
        Inbox {
            handle,
            incoming,
            rotated: Box::pin(rotated),
        }
    }

    /// The next message; `None` once the connection is over.
    async fn next(&mut self) -> Option<Incoming> {
        tokio::select! {
            item = self.incoming.recv() => item,
            () = &mut self.rotated => {
                info!("closing the connection: the proxy moved to new root parameters");
                self.handle.close();
                None
            }
        }
    }

    /// Closes the connection for `reason`.
    fn hang_up(&self, reason: &Hangup) {
        info!(%reason, "closing the connection");
        self.handle.close();
    }
}

/// Why the proxy ends a connection after one of its queries.
#[derive(Debug, thiserror::Error)]
pub(super) enum Hangup {
    /// The query was refused; the peer got this error as its answer.
    #[error("refused with code {}: {message}", code.code())]
    Refused {
        /// The COCOON error code sent.
        code: ErrorCode,
        /// The message sent.
        message: String,
    },
    /// The query does not decode.
    #[error("malformed query: {0}")]
    Malformed(#[from] cocoon_tl::TlError),
    /// A query that needs the hello came before it.
    #[error("{0} before connectToProxy")]
    BeforeHello(&'static str),
    /// The answer could not be sent.
    #[error("the answer could not be sent: {0}")]
    Unanswered(#[from] RpcError),
}

/// Answers a query the proxy does not serve (the connection lives on).
pub(super) async fn not_served(q: IncomingQuery) {
    let name = q
        .function_id()
        .and_then(cocoon_tl::constructor_name)
        .unwrap_or("unknown");
    let message = format!("proxy does not serve {name}");
    let _ = q.error(ErrorCode::ProtocolViolation.code(), &message).await;
}

/// Answers `q` with an error and returns the reason to close the connection.
pub(super) async fn hang_up(q: IncomingQuery, code: ErrorCode, message: String) -> Hangup {
    let _ = q.error(code.code(), &message).await;
    Hangup::Refused { code, message }
}
