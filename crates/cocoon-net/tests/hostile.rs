//! Hostile input closes only the offending connection, with a protocol-violation reason,
//! while another connection to the same server keeps working.

mod common;

use std::time::Duration;

use cocoon_net::{CloseReason, ConnectionConfig, RpcError};
use cocoon_tl::types::tcp;
use cocoon_tl::TlConstructor;
use common::{client, echo_server, next_event, raw_frame, RawPeer, ServerEvent};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Runs one hostile exchange against a server that also serves a good connection, and
/// returns how the hostile connection ended on the server.
async fn against_server<F, Fut>(attack: F) -> ServerEvent
where
    F: FnOnce(std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let config = ConnectionConfig::default();
    let (addr, mut events) = echo_server(config.clone()).await;
    let good = client(addr, &config).await;
    attack(addr).await;
    let event = next_event(&mut events).await;
    // The good connection is unaffected.
    let answer = good
        .handle()
        .query_raw(b"still fine".to_vec(), Duration::from_secs(5))
        .await
        .expect("good connection still answered");
    assert_eq!(answer.as_ref(), b"still fine");
    assert!(!good.handle().is_closed());
    event
}

fn violation(event: ServerEvent) -> String {
    match event {
        ServerEvent::Closed(CloseReason::ProtocolViolation(message)) => message,
        other => panic!("expected a protocol violation, got {other:?}"),
    }
}

#[tokio::test]
async fn frame_length_below_four() {
    let event = against_server(|addr| async move {
        let mut peer = RawPeer::open(addr).await;
        let mut frame = raw_frame(1, &[1, 2]);
        frame.truncate(10);
        peer.stream.write_all(&frame).await.expect("write");
        peer.expect_eof().await;
    })
    .await;
    assert_eq!(
        violation(event),
        "frame length 2 outside the allowed range 4..=16777216"
    );
}

#[tokio::test]
async fn frame_length_above_sixteen_mib() {
    let event = against_server(|addr| async move {
        let mut peer = RawPeer::open(addr).await;
        let mut header = ((1u32 << 24) + 1).to_le_bytes().to_vec();
        header.extend_from_slice(&1u32.to_le_bytes());
        peer.stream.write_all(&header).await.expect("write");
        peer.expect_eof().await;
    })
    .await;
    assert_eq!(
        violation(event),
        "frame length 16777217 outside the allowed range 4..=16777216"
    );
}

#[tokio::test]
async fn wrong_seqno() {
    let event = against_server(|addr| async move {
        let mut peer = RawPeer::open(addr).await;
        let ping = cocoon_tl::to_bytes(&tcp::Ping { id: 1 });
        peer.stream
            .write_all(&raw_frame(5, &ping))
            .await
            .expect("write");
        peer.expect_eof().await;
    })
    .await;
    assert_eq!(violation(event), "frame seqno 5, expected 1");
}

#[tokio::test]
async fn first_frame_not_tcp_connect() {
    let event = against_server(|addr| async move {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let ping = cocoon_tl::to_bytes(&tcp::Ping { id: 1 });
        stream.write_all(&raw_frame(0, &ping)).await.expect("write");
        let mut peer = RawPeer {
            stream,
            next_seqno: 1,
        };
        peer.expect_eof().await;
    })
    .await;
    match event {
        ServerEvent::HandshakeFailed(RpcError::Handshake(message)) => assert!(
            message
                .starts_with("first frame is not tcp.connect: unknown constructor id 0xbbe9627c"),
            "{message}"
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn unknown_constructor() {
    let event = against_server(|addr| async move {
        let mut peer = RawPeer::open(addr).await;
        peer.send(&0xdeadbeefu32.to_le_bytes()).await;
        peer.expect_eof().await;
    })
    .await;
    assert_eq!(
        violation(event),
        "unknown tcp packet constructor 0xdeadbeef"
    );
}

#[tokio::test]
async fn object_that_is_not_a_tcp_packet() {
    let event = against_server(|addr| async move {
        let mut peer = RawPeer::open(addr).await;
        let not_a_packet = cocoon_tl::to_bytes(&cocoon_tl::functions::client::GetWorkerTypes {});
        peer.send(&not_a_packet).await;
        peer.expect_eof().await;
    })
    .await;
    assert_eq!(
        violation(event),
        "unknown tcp packet constructor 0x7f062bdb (client.getWorkerTypes)"
    );
}

#[tokio::test]
async fn truncated_tcp_packet() {
    let event = against_server(|addr| async move {
        let mut peer = RawPeer::open(addr).await;
        let mut payload = cocoon_tl::to_bytes(&tcp::Query {
            id: 7,
            data: vec![1; 40],
        });
        payload.truncate(20);
        peer.send(&payload).await;
        peer.expect_eof().await;
    })
    .await;
    let message = violation(event);
    assert!(
        message.starts_with("malformed tcp packet: truncated TL data"),
        "{message}"
    );
}

#[tokio::test]
async fn trailing_bytes_after_tcp_packet() {
    let event = against_server(|addr| async move {
        let mut peer = RawPeer::open(addr).await;
        let mut payload = cocoon_tl::to_bytes(&tcp::Ping { id: 7 });
        payload.extend_from_slice(&[0, 0, 0, 0]);
        peer.send(&payload).await;
        peer.expect_eof().await;
    })
    .await;
    assert_eq!(
        violation(event),
        "malformed tcp packet: 4 trailing bytes after the TL object at offset 12"
    );
}

#[tokio::test]
async fn answer_for_unknown_query_id() {
    let event = against_server(|addr| async move {
        let mut peer = RawPeer::open(addr).await;
        let answer = cocoon_tl::to_bytes(&tcp::QueryAnswer {
            id: 12345,
            data: vec![],
        });
        peer.send(&answer).await;
        peer.expect_eof().await;
    })
    .await;
    assert_eq!(violation(event), "answer for unknown query id 12345");
}

#[tokio::test]
async fn query_error_with_invalid_utf8() {
    let event = against_server(|addr| async move {
        let mut peer = RawPeer::open(addr).await;
        let mut payload = tcp::QueryError::ID.to_le_bytes().to_vec();
        payload.extend_from_slice(&1i64.to_le_bytes());
        payload.extend_from_slice(&602i32.to_le_bytes());
        payload.extend_from_slice(&[2, 0xff, 0xfe, 0]);
        peer.send(&payload).await;
        peer.expect_eof().await;
    })
    .await;
    assert_eq!(
        violation(event),
        "malformed tcp packet: invalid UTF-8 in TL string at offset 16"
    );
}

#[tokio::test]
async fn second_tcp_connect() {
    let event = against_server(|addr| async move {
        let mut peer = RawPeer::open(addr).await;
        peer.send(&cocoon_tl::to_bytes(&tcp::Connect { id: 1 }))
            .await;
        peer.expect_eof().await;
    })
    .await;
    assert_eq!(violation(event), "tcp.connect after the opening");
}

#[tokio::test]
async fn initiator_rejects_a_wrong_opening_answer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let pong = cocoon_tl::to_bytes(&tcp::Pong { id: 1 });
        let _ = stream.write_all(&raw_frame(0, &pong)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let stream = TcpStream::connect(addr).await.expect("connect");
    let err = cocoon_net::RpcConnection::connect(stream, &ConnectionConfig::default(), "bad")
        .await
        .expect_err("not tcp.connected");
    match err {
        RpcError::Handshake(message) => {
            assert!(
                message.starts_with("first frame is not tcp.connected"),
                "{message}"
            )
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn random_garbage_never_takes_the_server_down() {
    // A handful of deterministic garbage streams; the good connection must survive all.
    let config = ConnectionConfig::default();
    let (addr, mut events) = echo_server(config.clone()).await;
    let good = client(addr, &config).await;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for round in 0..20 {
        let mut peer = RawPeer::open(addr).await;
        let len = 8 + round * 13;
        let garbage: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut frame = raw_frame(1, &garbage);
        // Keep the header sane half of the time so the payload parser is exercised.
        if round % 2 == 0 {
            frame[..4].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
        }
        peer.stream.write_all(&frame).await.expect("write");
        peer.expect_eof().await;
        assert!(matches!(
            next_event(&mut events).await,
            ServerEvent::Closed(CloseReason::ProtocolViolation(_))
        ));
    }
    let answer = good
        .handle()
        .query_raw(b"alive".to_vec(), Duration::from_secs(5))
        .await
        .expect("good connection survived");
    assert_eq!(answer.as_ref(), b"alive");
}
