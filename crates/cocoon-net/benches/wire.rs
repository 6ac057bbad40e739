//! Frame + TL encode/decode throughput and a loopback query round trip.
//!
//! Reports time per message (criterion) and bytes per second (throughput); the baseline
//! in the same run is a plain `memcpy` of the same payload, so the ratio shows the cost
//! of framing and TL on top of touching the bytes once.

use std::time::Duration;

use bytes::BytesMut;
use cocoon_net::frame::{FrameCodec, OutFrame};
use cocoon_net::{ConnectionConfig, Incoming, RpcConnection};
use cocoon_tl::enums::client::QueryAnswerEx;
use cocoon_tl::functions::client::RunQueryEx;
use cocoon_tl::types::{client, tcp};
use cocoon_tl::{TlConstructor, TlFunction};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio_util::codec::{Decoder, Encoder};

fn run_query_ex(query_len: usize) -> RunQueryEx {
    RunQueryEx {
        model_name: "Qwen/Qwen3-0.6B".into(),
        query: vec![b'q'; query_len],
        max_coefficient: 4000,
        max_tokens: 1000,
        timeout: 120.0,
        request_id: [7; 32],
        min_config_version: 1,
        flags: 1,
        enable_debug: Some(false),
        public_key: None,
    }
}

fn answer_part(chunk_len: usize) -> QueryAnswerEx {
    QueryAnswerEx::QueryAnswerPartEx(client::QueryAnswerPartEx {
        request_id: [9; 32],
        answer: vec![b'a'; chunk_len],
        flags: 0,
        final_info: None,
    })
}

/// Encode as a `tcp.packet` frame, decode the frame, the packet and the message.
fn roundtrip<T: cocoon_tl::TlBoxed>(
    value: &T,
    enc: &mut FrameCodec,
    dec: &mut FrameCodec,
    buf: &mut BytesMut,
) -> T {
    let inner = cocoon_tl::to_bytes(value);
    enc.encode(OutFrame::wrapped(tcp::Packet::ID, inner), buf)
        .expect("encode");
    let payload = dec.decode(buf).expect("decode").expect("complete frame");
    let packet: tcp::Packet = cocoon_tl::from_bytes(&payload).expect("tcp.packet");
    cocoon_tl::from_bytes(&packet.data).expect("message")
}

fn bench_codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame+tl");
    let big = run_query_ex(4096);
    let small = answer_part(200 - 56);
    let big_len = cocoon_tl::to_bytes(&big).len();
    let small_len = cocoon_tl::to_bytes(&small).len();

    for (name, len) in [
        ("client.runQueryEx", big_len),
        ("client.queryAnswerPartEx", small_len),
    ] {
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::new("memcpy-baseline", name), |b| {
            let src = vec![1u8; len];
            b.iter(|| std::hint::black_box(src.clone()))
        });
    }

    group.throughput(Throughput::Bytes(big_len as u64));
    group.bench_function("client.runQueryEx 4KiB encode+decode", |b| {
        let (mut enc, mut dec, mut buf) = (
            FrameCodec::default(),
            FrameCodec::default(),
            BytesMut::new(),
        );
        b.iter(|| std::hint::black_box(roundtrip(&big, &mut enc, &mut dec, &mut buf)))
    });
    group.throughput(Throughput::Bytes(small_len as u64));
    group.bench_function("client.queryAnswerPartEx 200B encode+decode", |b| {
        let (mut enc, mut dec, mut buf) = (
            FrameCodec::default(),
            FrameCodec::default(),
            BytesMut::new(),
        );
        b.iter(|| std::hint::black_box(roundtrip(&small, &mut enc, &mut dec, &mut buf)))
    });
    let large = run_query_ex(1 << 20);
    group.throughput(Throughput::Bytes((1u64 << 20) + 100));
    group.bench_function("client.runQueryEx 1MiB encode+decode", |b| {
        let (mut enc, mut dec, mut buf) = (
            FrameCodec::default(),
            FrameCodec::default(),
            BytesMut::new(),
        );
        b.iter(|| std::hint::black_box(roundtrip(&large, &mut enc, &mut dec, &mut buf)))
    });
    group.finish();
}

fn bench_loopback(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (client_handle, _server) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            stream.set_nodelay(true).expect("nodelay");
            let mut conn = RpcConnection::accept(stream, &ConnectionConfig::default(), "bench")
                .await
                .expect("accept");
            while let Some(item) = conn.next_incoming().await {
                if let Incoming::Query(q) = item {
                    let data = q.data().to_vec();
                    let _ = q.answer_raw(data).await;
                }
            }
        });
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let conn = RpcConnection::connect(stream, &ConnectionConfig::default(), "bench")
            .await
            .expect("connect");
        (conn.handle(), (server, conn))
    });
    let mut group = c.benchmark_group("loopback");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("query round trip (64 B)", |b| {
        b.to_async(&rt).iter(|| {
            let h = client_handle.clone();
            async move {
                h.query_raw(vec![5u8; 64], Duration::from_secs(5))
                    .await
                    .expect("answer")
            }
        })
    });
    group.finish();
    // Keep the answer type checked: a round trip of the function's own answer type.
    fn _answer_type(_: <RunQueryEx as TlFunction>::Answer) {}
}

criterion_group!(benches, bench_codec, bench_loopback);
criterion_main!(benches);
