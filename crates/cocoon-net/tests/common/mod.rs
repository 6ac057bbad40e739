//! Shared harness: an echo server over loopback and a raw-bytes client for hostile input.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use cocoon_net::{CloseReason, ConnectionConfig, Incoming, RpcConnection, RpcError};
use cocoon_tl::types::tcp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What happened to one accepted connection.
#[derive(Debug)]
pub enum ServerEvent {
    /// The opening failed.
    HandshakeFailed(RpcError),
    /// The connection ran and ended for this reason.
    Closed(CloseReason),
}

/// Starts an acceptor on loopback. Queries whose data starts with `b"wait"` are never
/// answered; `b"drop"` are dropped unanswered; `b"fail"` get error 602; everything else
/// is echoed. Packets are echoed back as packets.
pub async fn echo_server(
    config: ConnectionConfig,
) -> (SocketAddr, mpsc::UnboundedReceiver<ServerEvent>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let config = config.clone();
            let events = events_tx.clone();
            tokio::spawn(async move {
                let conn = match RpcConnection::accept(stream, &config, &peer.to_string()).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        let _ = events.send(ServerEvent::HandshakeFailed(e));
                        return;
                    }
                };
                let (handle, mut incoming) = conn.split();
                let closed = handle.closed();
                let mut parked = Vec::new();
                while let Some(item) = incoming.recv().await {
                    match item {
                        Incoming::Query(query) => {
                            let data = query.data().clone();
                            if data.starts_with(b"wait") {
                                parked.push(query);
                            } else if data.starts_with(b"drop") {
                                drop(query);
                            } else if data.starts_with(b"fail") {
                                let _ = query.error(602, "asked to fail").await;
                            } else {
                                // Answer from a separate task after a short random delay so
                                // answers come back out of order.
                                tokio::spawn(async move {
                                    let delay = u64::from(data.last().copied().unwrap_or(0) % 4);
                                    tokio::time::sleep(Duration::from_millis(delay)).await;
                                    let _ = query.answer_raw(data.to_vec()).await;
                                });
                            }
                        }
                        Incoming::Packet(data) => {
                            let _ = handle.send_packet_raw(data.to_vec()).await;
                        }
                    }
                }
                drop(parked);
                let _ = events.send(ServerEvent::Closed(closed.await));
            });
        }
    });
    (addr, events_rx)
}

/// Connects an initiator to `addr`.
pub async fn client(addr: SocketAddr, config: &ConnectionConfig) -> RpcConnection {
    let stream = TcpStream::connect(addr).await.expect("connect loopback");
    RpcConnection::connect(stream, config, "test-server")
        .await
        .expect("handshake")
}

/// Waits for the next server event, failing the test after 10 s.
pub async fn next_event(events: &mut mpsc::UnboundedReceiver<ServerEvent>) -> ServerEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("a server event within 10 s")
        .expect("server still running")
}

/// Encodes one frame by hand: `len | seqno | payload`.
pub fn raw_frame(seqno: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&seqno.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A raw TCP peer that has done the opening by hand and can then send anything.
pub struct RawPeer {
    pub stream: TcpStream,
    pub next_seqno: u32,
}

impl RawPeer {
    /// Connects and exchanges `tcp.connect` / `tcp.connected` by hand.
    pub async fn open(addr: SocketAddr) -> RawPeer {
        let mut stream = TcpStream::connect(addr).await.expect("connect loopback");
        let connect = cocoon_tl::to_bytes(&tcp::Connect { id: 42 });
        stream
            .write_all(&raw_frame(0, &connect))
            .await
            .expect("write");
        let mut answer = [0u8; 20];
        stream.read_exact(&mut answer).await.expect("tcp.connected");
        let expected = raw_frame(0, &cocoon_tl::to_bytes(&tcp::Connected { id: 42 }));
        assert_eq!(answer.as_slice(), expected.as_slice());
        RawPeer {
            stream,
            next_seqno: 1,
        }
    }

    /// Sends `payload` in a correctly numbered frame.
    pub async fn send(&mut self, payload: &[u8]) {
        let frame = raw_frame(self.next_seqno, payload);
        self.next_seqno += 1;
        self.stream.write_all(&frame).await.expect("write");
    }

    /// Reads until the server closes the stream; fails the test after 10 s.
    pub async fn expect_eof(&mut self) {
        let mut buf = [0u8; 1024];
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await
        .expect("server closes the connection");
    }
}
