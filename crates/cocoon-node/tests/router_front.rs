//! A node behind an official COCOON router: the listening side reads the router's peer
//! info before the runner's bytes, the dialing side goes through the router's SOCKS5 port.
//! The router here is a stand-in written for the test (a TCP peer writing the prefix, a
//! minimal SOCKS5 server); `crates/cocoon-cli/tests/interop.rs` runs the official one.

use std::sync::Arc;

use cocoon_attest::router::{AttestedPeerInfo, RouterReport};
use cocoon_attest::tee::report_data_for_key;
use cocoon_attest::{AttestError, Policy};
use cocoon_node::transport::{Dialer, Listener, RouterDialer, RouterListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn fake_sev_peer(key: [u8; 32]) -> AttestedPeerInfo {
    AttestedPeerInfo::new(
        RouterReport::Sev {
            measurement: [0; 48],
            report_data: report_data_for_key(&key),
        },
        key,
        "10.1.2.3:4567".parse().expect("addr"),
        "127.0.0.1:11001".parse().expect("addr"),
    )
}

#[tokio::test]
async fn the_listener_reads_the_routers_peer_info_then_the_runners_bytes() {
    let listener = RouterListener::bind("127.0.0.1:0", Arc::new(Policy::fake_tdx()))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let info = fake_sev_peer([5; 32]);
    let frame = info.to_frame();
    tokio::spawn(async move {
        let mut router = TcpStream::connect(addr).await.expect("connect");
        router.write_all(&frame).await.expect("prefix");
        router.write_all(b"tcp.packet bytes").await.expect("bytes");
        let mut reply = [0u8; 4];
        router.read_exact(&mut reply).await.expect("reply");
        assert_eq!(&reply, b"pong");
    });
    let (mut stream, peer) = listener
        .accept()
        .await
        .expect("accept")
        .await
        .expect("admitted");
    assert_eq!(peer.public_key, Some([5; 32]));
    assert_eq!(peer.image_hash, Some(info.image_hash()));
    assert_eq!(
        peer.addr,
        "10.1.2.3:4567".parse().expect("addr"),
        "the peer's address as the router saw it"
    );
    let mut bytes = [0u8; 16];
    stream.read_exact(&mut bytes).await.expect("bytes");
    assert_eq!(&bytes, b"tcp.packet bytes");
    stream.write_all(b"pong").await.expect("pong");
}

#[tokio::test]
async fn a_peer_the_policy_refuses_or_a_broken_prefix_never_becomes_a_connection() {
    let listener = RouterListener::bind("127.0.0.1:0", Arc::new(Policy::fake_tdx()))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");

    // The router let in a peer whose report belongs to another key.
    let mut stolen = fake_sev_peer([5; 32]);
    stolen.public_key = [6; 32];
    let frame = stolen.to_frame();
    let writer = tokio::spawn(async move {
        let mut router = TcpStream::connect(addr).await.expect("connect");
        router.write_all(&frame).await.expect("prefix");
        router
    });
    let refused = listener.accept().await.expect("accept").await;
    let Err(refused) = refused else {
        panic!("a report bound to another key was admitted")
    };
    assert!(
        matches!(refused.source, AttestError::ReportDataMismatch),
        "{}",
        refused.source
    );
    drop(writer.await);

    // Something that is not a router (a TL frame where the prefix should be).
    let writer = tokio::spawn(async move {
        let mut other = TcpStream::connect(addr).await.expect("connect");
        other
            .write_all(&[16, 0, 0, 0, 9, 9, 9, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
            .await
            .expect("bytes");
        other
    });
    let refused = listener.accept().await.expect("accept").await;
    let Err(refused) = refused else {
        panic!("garbage was admitted")
    };
    assert!(
        refused.source.to_string().contains("not a known format"),
        "{}",
        refused.source
    );
    drop(writer.await);
}

/// A SOCKS5 server that behaves as the official router's `-S` port does: the reply once
/// the target is "attested", then the target's peer info, then the target's bytes.
async fn socks5_router(info: AttestedPeerInfo) -> std::net::SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut s, _) = socket.accept().await.expect("accept");
        let mut greeting = [0u8; 3];
        s.read_exact(&mut greeting).await.expect("greeting");
        assert_eq!(greeting, [5, 1, 0], "no-auth SOCKS5");
        s.write_all(&[5, 0]).await.expect("method");
        let mut head = [0u8; 4];
        s.read_exact(&mut head).await.expect("request");
        assert_eq!(&head[..3], &[5, 1, 0], "CONNECT");
        let target = match head[3] {
            1 => {
                let mut a = [0u8; 6];
                s.read_exact(&mut a).await.expect("ipv4");
                format!(
                    "{}.{}.{}.{}:{}",
                    a[0],
                    a[1],
                    a[2],
                    a[3],
                    u16::from_be_bytes([a[4], a[5]])
                )
            }
            3 => {
                let mut n = [0u8; 1];
                s.read_exact(&mut n).await.expect("len");
                let mut host = vec![0u8; n[0] as usize + 2];
                s.read_exact(&mut host).await.expect("host");
                let port = u16::from_be_bytes([host[host.len() - 2], host[host.len() - 1]]);
                format!(
                    "{}:{port}",
                    String::from_utf8_lossy(&host[..host.len() - 2])
                )
            }
            other => panic!("address type {other}"),
        };
        assert_eq!(target, "127.0.0.1:11001");
        s.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0x2a, 0xf9])
            .await
            .expect("reply");
        s.write_all(&info.to_frame()).await.expect("prefix");
        s.write_all(b"proxy bytes").await.expect("bytes");
        let mut keep = [0u8; 1];
        let _ = s.read(&mut keep).await;
    });
    addr
}

#[tokio::test]
async fn the_dialer_goes_through_socks5_and_judges_the_target() {
    let router = socks5_router(fake_sev_peer([8; 32])).await;
    let dialer = RouterDialer::new(router.to_string(), Arc::new(Policy::fake_tdx()));
    let mut stream = dialer.dial("127.0.0.1:11001").await.expect("dialed");
    let mut bytes = [0u8; 11];
    stream.read_exact(&mut bytes).await.expect("bytes");
    assert_eq!(
        &bytes, b"proxy bytes",
        "the prefix is consumed, the rest passes"
    );

    // The same target is refused when the router reports an unattested peer (what a
    // router `any` port reports) to a `fake_tee` policy.
    let mut unattested = fake_sev_peer([8; 32]);
    unattested.report = Some(RouterReport::empty());
    let router = socks5_router(unattested).await;
    let dialer = RouterDialer::new(router.to_string(), Arc::new(Policy::fake_tdx()));
    let Err(e) = dialer.dial("127.0.0.1:11001").await else {
        panic!("an unattested proxy passed fake_tee")
    };
    assert!(e.to_string().contains("does not match SHA-512"), "{e}");

    // No router listening: a clear error naming it.
    let dialer = RouterDialer::new("127.0.0.1:1".into(), Arc::new(Policy::any()));
    let Err(e) = dialer.dial("127.0.0.1:11001").await else {
        panic!("dialed without a router")
    };
    assert!(e.to_string().contains("router SOCKS5 127.0.0.1:1"), "{e}");
}
