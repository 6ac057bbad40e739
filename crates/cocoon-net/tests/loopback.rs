//! Two real connections over loopback: the opening, interleaved traffic, keep-alive,
//! timeouts and close.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use cocoon_net::{CloseReason, ConnectionConfig, Incoming, RpcConnection, RpcError};
use cocoon_tl::enums::client::PaymentStatus;
use cocoon_tl::functions::client::UpdatePaymentStatus;
use cocoon_tl::types::{client, proxy};
use common::{client, echo_server, next_event, RawPeer, ServerEvent};
use futures::stream::{self, StreamExt};

#[tokio::test]
async fn ten_thousand_interleaved_queries_and_packets() {
    let (addr, _events) = echo_server(ConnectionConfig::default()).await;
    let mut conn = client(addr, &ConnectionConfig::default()).await;
    let handle = conn.handle();

    // Packets come back in order; collect them while queries run.
    let packets = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < 10_000 {
            match conn.next_incoming().await {
                Some(Incoming::Packet(data)) => seen.push(data),
                Some(Incoming::Query(_)) => panic!("the server sends no queries"),
                None => break,
            }
        }
        seen
    });

    let answers: Vec<(usize, Vec<u8>)> = stream::iter(0..10_000usize)
        .map(|i| {
            let handle = handle.clone();
            async move {
                let body = format!("query {i} {}", "x".repeat(i % 300)).into_bytes();
                handle
                    .send_packet_raw(format!("packet {i}").into_bytes())
                    .await
                    .expect("packet sent");
                let answer = handle
                    .query_raw(body.clone(), Duration::from_secs(30))
                    .await
                    .expect("answer");
                assert_eq!(
                    answer.as_ref(),
                    body.as_slice(),
                    "answer {i} matches its query"
                );
                (i, body)
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    assert_eq!(answers.len(), 10_000);
    let distinct: HashSet<usize> = answers.iter().map(|(i, _)| *i).collect();
    assert_eq!(distinct.len(), 10_000);

    let packets = packets.await.expect("packet task");
    assert_eq!(packets.len(), 10_000);
    // Packets are sent from concurrent tasks, so only their set is fixed.
    let packets: HashSet<Vec<u8>> = packets.into_iter().map(|p| p.to_vec()).collect();
    assert!((0..10_000).all(|i| packets.contains(format!("packet {i}").as_bytes())));
}

#[tokio::test]
async fn typed_query_and_remote_error() {
    let (addr, _events) = echo_server(ConnectionConfig::default()).await;
    let conn = client(addr, &ConnectionConfig::default()).await;
    let handle = conn.handle();

    // The echo server returns the function bytes; decoding them as the answer type fails
    // with a precise decode error, which proves the answer is parsed as the answer type.
    let err = handle
        .query(&UpdatePaymentStatus {})
        .await
        .expect_err("echoed function is not a payment status");
    assert!(matches!(err, RpcError::Decode(_)), "{err}");
    assert_eq!(err.code(), 621);

    // An answer of the right type decodes.
    let status = client::PaymentStatus {
        signed_payment: proxy::SignedPaymentEmpty {}.into(),
        db_tokens: 5,
        max_tokens: 9,
    };
    let bytes = handle
        .query_raw(cocoon_tl::to_bytes(&status), Duration::from_secs(5))
        .await
        .expect("echo");
    let decoded: PaymentStatus = cocoon_tl::from_bytes(&bytes).expect("payment status");
    assert_eq!(decoded, PaymentStatus::PaymentStatus(status));

    let err = handle
        .query_raw(b"fail please".to_vec(), Duration::from_secs(5))
        .await
        .expect_err("server fails it");
    assert_eq!(
        err,
        RpcError::Remote {
            code: 602,
            message: "asked to fail".into()
        }
    );
}

#[tokio::test]
async fn dropped_incoming_query_answers_cancelled() {
    let (addr, _events) = echo_server(ConnectionConfig::default()).await;
    let conn = client(addr, &ConnectionConfig::default()).await;
    let err = conn
        .handle()
        .query_raw(b"drop me".to_vec(), Duration::from_secs(5))
        .await
        .expect_err("dropped");
    assert_eq!(err.code(), 653);
}

#[tokio::test]
async fn query_timeout_is_local_and_late_answers_are_ignored() {
    let (addr, _events) = echo_server(ConnectionConfig::default()).await;
    let conn = client(addr, &ConnectionConfig::default()).await;
    let handle = conn.handle();
    let err = handle
        .query_raw(b"wait forever".to_vec(), Duration::from_millis(100))
        .await
        .expect_err("never answered");
    assert_eq!(err, RpcError::Timeout(Duration::from_millis(100)));
    assert_eq!(err.code(), 652);
    // The connection is still usable.
    let answer = handle
        .query_raw(b"still there".to_vec(), Duration::from_secs(5))
        .await
        .expect("answer after a timeout");
    assert_eq!(answer.as_ref(), b"still there");
    assert!(!handle.is_closed());
}

#[tokio::test]
async fn close_fails_pending_queries_and_the_peer_sees_it() {
    let (addr, mut events) = echo_server(ConnectionConfig::default()).await;
    let conn = client(addr, &ConnectionConfig::default()).await;
    let handle = conn.handle();
    let waiting = {
        let handle = handle.clone();
        tokio::spawn(async move {
            handle
                .query_raw(b"wait".to_vec(), Duration::from_secs(30))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    handle.close();
    let err = waiting.await.expect("task").expect_err("closed");
    assert_eq!(err, RpcError::Closed(CloseReason::Local));
    assert_eq!(handle.closed().await, CloseReason::Local);
    let err = handle
        .send_packet_raw(b"late".to_vec())
        .await
        .expect_err("closed");
    assert_eq!(err, RpcError::Closed(CloseReason::Local));
    match next_event(&mut events).await {
        ServerEvent::Closed(reason) => assert_eq!(reason, CloseReason::PeerClosed),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn dropping_every_handle_closes_the_connection() {
    let (addr, mut events) = echo_server(ConnectionConfig::default()).await;
    let conn = client(addr, &ConnectionConfig::default()).await;
    drop(conn);
    match next_event(&mut events).await {
        ServerEvent::Closed(reason) => assert_eq!(reason, CloseReason::PeerClosed),
        other => panic!("unexpected {other:?}"),
    }
}

fn fast_keepalive() -> ConnectionConfig {
    ConnectionConfig {
        ping_after: Duration::from_millis(100),
        initiator_idle_timeout: Duration::from_millis(600),
        acceptor_idle_timeout: Duration::from_millis(600),
        ..ConnectionConfig::default()
    }
}

#[tokio::test]
async fn pings_keep_an_idle_link_alive() {
    let (addr, mut events) = echo_server(fast_keepalive()).await;
    let conn = client(addr, &fast_keepalive()).await;
    let handle = conn.handle();
    // Four idle timeouts of silence from the application.
    tokio::time::sleep(Duration::from_millis(2400)).await;
    assert!(!handle.is_closed(), "pings kept the initiator alive");
    assert!(events.try_recv().is_err(), "the acceptor is still up");
    let answer = handle
        .query_raw(b"after idle".to_vec(), Duration::from_secs(5))
        .await
        .expect("link still works");
    assert_eq!(answer.as_ref(), b"after idle");
}

#[tokio::test]
async fn silence_closes_the_acceptor_side() {
    let (addr, mut events) = echo_server(fast_keepalive()).await;
    // A raw peer does the opening and then says nothing, not even pings.
    let mut peer = RawPeer::open(addr).await;
    match next_event(&mut events).await {
        ServerEvent::Closed(reason) => {
            assert_eq!(reason, CloseReason::IdleTimeout(Duration::from_millis(600)))
        }
        other => panic!("unexpected {other:?}"),
    }
    peer.expect_eof().await;
}

#[tokio::test]
async fn silence_closes_the_initiator_side() {
    // A raw acceptor answers the opening, then never answers pings.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut opening = [0u8; 20];
        stream.read_exact(&mut opening).await.expect("tcp.connect");
        let id = i64::from_le_bytes(opening[12..20].try_into().expect("8 bytes"));
        let connected = cocoon_tl::to_bytes(&cocoon_tl::types::tcp::Connected { id });
        stream
            .write_all(&common::raw_frame(0, &connected))
            .await
            .expect("write");
        // Read (and ignore) everything, e.g. the pings.
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink).await;
        sink
    });
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let conn = RpcConnection::connect(stream, &fast_keepalive(), "silent")
        .await
        .expect("handshake");
    let reason = tokio::time::timeout(Duration::from_secs(10), conn.handle().closed())
        .await
        .expect("closed within 10 s");
    assert_eq!(reason, CloseReason::IdleTimeout(Duration::from_millis(600)));
    let received = server.await.expect("server task");
    // At least one tcp.ping frame (20 bytes with header) was sent before giving up.
    let ping_id = <cocoon_tl::types::tcp::Ping as cocoon_tl::TlConstructor>::ID.to_le_bytes();
    assert!(
        received.windows(4).any(|w| w == ping_id.as_slice()),
        "the initiator pinged during the silence"
    );
}

#[tokio::test]
async fn an_oversized_message_fails_alone() {
    let (addr, _events) = echo_server(ConnectionConfig::default()).await;
    let config = ConnectionConfig {
        max_frame_len: 1024,
        ..ConnectionConfig::default()
    };
    let conn = client(addr, &config).await;
    let handle = conn.handle();

    // Too large for one frame: refused locally, nothing reaches the peer.
    let err = handle
        .send_packet_raw(vec![7; 2000])
        .await
        .expect_err("a 2000-byte packet does not fit a 1024-byte frame");
    assert!(
        matches!(err, RpcError::TooLarge { max: 1024, len } if len > 2000),
        "{err}"
    );
    let err = handle
        .query_raw(vec![7; 4096], Duration::from_secs(5))
        .await
        .expect_err("an oversized query is refused");
    assert!(matches!(err, RpcError::TooLarge { .. }), "{err}");

    // The connection and its other messages live on.
    assert!(!handle.is_closed());
    let answer = handle
        .query_raw(b"still here".to_vec(), Duration::from_secs(5))
        .await
        .expect("a small query after the refusals is answered");
    assert_eq!(answer.as_ref(), b"still here");
}
