//! The frame codec on its own: golden bytes, limits, seqnos, and arbitrary chunking.

use bytes::BytesMut;
use cocoon_net::frame::{FrameCodec, FrameError, OutFrame};
use cocoon_tl::enums::tcp::Packet;
use cocoon_tl::types::tcp;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

const GOLDEN: &str = "0c000000 00000000 61427ca5 0100000000000000";

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).expect("hex")
}

#[test]
fn tcp_connect_frame_encodes_to_the_spec_bytes() {
    let mut codec = FrameCodec::default();
    let mut out = BytesMut::new();
    let payload = cocoon_tl::to_bytes(&tcp::Connect { id: 1 });
    codec
        .encode(OutFrame::Raw(payload), &mut out)
        .expect("encode");
    assert_eq!(out.as_ref(), unhex(GOLDEN).as_slice());
}

#[test]
fn spec_bytes_decode_to_tcp_connect_with_seqno_zero() {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::from(unhex(GOLDEN).as_slice());
    let payload = codec.decode(&mut buf).expect("valid").expect("complete");
    assert!(buf.is_empty());
    let packet: Packet = cocoon_tl::from_bytes(&payload).expect("tl");
    assert_eq!(packet, Packet::Connect(tcp::Connect { id: 1 }));
    // The same bytes again carry seqno 0, but the next frame must be seqno 1.
    let mut again = BytesMut::from(unhex(GOLDEN).as_slice());
    match codec.decode(&mut again) {
        Err(FrameError::BadSeqno {
            expected: 1,
            got: 0,
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn wrapped_frames_equal_their_plain_tl_encoding() {
    for len in [0usize, 1, 3, 252, 253, 254, 255, 1000, 70_000] {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let plain = cocoon_tl::to_bytes(&tcp::Query {
            id: -5,
            data: data.clone(),
        });
        let mut out = BytesMut::new();
        FrameCodec::default()
            .encode(
                OutFrame::wrapped_with_query_id(
                    <tcp::Query as cocoon_tl::TlConstructor>::ID,
                    -5,
                    data,
                ),
                &mut out,
            )
            .expect("encode");
        assert_eq!(&out[8..], plain.as_slice(), "len {len}");
        assert_eq!(
            u32::from_le_bytes([out[0], out[1], out[2], out[3]]) as usize,
            plain.len()
        );
    }
}

#[test]
fn oversized_outgoing_payload_is_refused() {
    let mut codec = FrameCodec::new(1024);
    let mut out = BytesMut::new();
    match codec.encode(OutFrame::Raw(vec![0; 1025]), &mut out) {
        Err(FrameError::BadLength { len: 1025, .. }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(out.is_empty(), "nothing written for a refused frame");
}

proptest! {
    #[test]
    fn frames_survive_any_chunking(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 4..300), 1..20),
        cuts in proptest::collection::vec(1usize..64, 1..200),
    ) {
        let mut encoder = FrameCodec::default();
        let mut wire = BytesMut::new();
        for p in &payloads {
            encoder.encode(OutFrame::Raw(p.clone()), &mut wire).expect("encode");
        }
        let mut decoder = FrameCodec::default();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut rest = &wire[..];
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cut.next().expect("cycle")).min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            while let Some(frame) = decoder.decode(&mut buf).expect("valid stream") {
                decoded.push(frame.to_vec());
            }
        }
        prop_assert_eq!(decoded, payloads);
    }

    #[test]
    fn decoder_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut decoder = FrameCodec::default();
        let mut buf = BytesMut::from(bytes.as_slice());
        for _ in 0..8 {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => prop_assert!(frame.len() >= 4),
                Ok(None) | Err(_) => break,
            }
        }
    }
}
