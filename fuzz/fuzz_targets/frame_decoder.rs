//! Bytes from a peer through the frame decoder (in fuzzer-chosen chunks), then each frame
//! payload through the `tcp.Packet` parser. Must never panic.
#![no_main]

use bytes::BytesMut;
use cocoon_net::frame::FrameCodec;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let mut codec = FrameCodec::new(1 << 16);
    let mut buf = BytesMut::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(payload)) => {
                    assert!(payload.len() >= 4);
                    let _ = cocoon_tl::from_bytes::<cocoon_tl::enums::tcp::Packet>(&payload);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
