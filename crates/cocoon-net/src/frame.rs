//! The frame layer: `u32 LE length | u32 LE seqno | payload` (cocoon-protocol.md §2.1).
//!
//! Lengths count the payload only and must be in `4..=16 MiB`; seqnos count frames per
//! direction from 0. Any violation is fatal for the connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Smallest legal payload.
pub const MIN_FRAME_LEN: usize = 4;
/// Largest legal payload (16 MiB).
pub const MAX_FRAME_LEN: usize = 1 << 24;
const HEADER_LEN: usize = 8;

/// A frame-level failure.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length field is outside `4..=max`.
    #[error("frame length {len} outside the allowed range {min}..={max}")]
    BadLength {
        /// The declared payload length.
        len: usize,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
    },
    /// The sequence number is not the next one.
    #[error("frame seqno {got}, expected {expected}")]
    BadSeqno {
        /// The seqno that was expected.
        expected: u32,
        /// The seqno that arrived.
        got: u32,
    },
    /// The underlying stream failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// One outgoing frame payload, possibly wrapping a `bytes` body so that the body is copied
/// only once, straight into the output buffer.
#[derive(Debug)]
pub enum OutFrame {
    /// A complete payload (a boxed TL object).
    Raw(Vec<u8>),
    /// `head` followed by `body` encoded as TL `bytes` (length prefix and padding): the
    /// shape of `tcp.packet`, `tcp.query` and `tcp.queryAnswer`.
    Wrapped {
        /// The constructor id and any fields before `data` (e.g. the query id).
        head: [u8; 12],
        /// How many bytes of `head` to use.
        head_len: usize,
        /// The `data:bytes` field.
        body: Vec<u8>,
    },
}

impl OutFrame {
    /// `id` + `data:bytes`.
    pub fn wrapped(id: u32, body: Vec<u8>) -> Self {
        let mut head = [0u8; 12];
        head[..4].copy_from_slice(&id.to_le_bytes());
        OutFrame::Wrapped {
            head,
            head_len: 4,
            body,
        }
    }

    /// `id` + `query_id:long` + `data:bytes`.
    pub fn wrapped_with_query_id(id: u32, query_id: i64, body: Vec<u8>) -> Self {
        let mut head = [0u8; 12];
        head[..4].copy_from_slice(&id.to_le_bytes());
        head[4..].copy_from_slice(&query_id.to_le_bytes());
        OutFrame::Wrapped {
            head,
            head_len: 12,
            body,
        }
    }

    /// Payload length in bytes.
    pub fn payload_len(&self) -> usize {
        match self {
            OutFrame::Raw(p) => p.len(),
            OutFrame::Wrapped { head_len, body, .. } => {
                head_len + cocoon_tl::codec::bytes_len(body.len())
            }
        }
    }
}

/// Encoder and decoder of frames for one direction each.
///
/// Use one instance for reading and another for writing: each keeps the seqno of the
/// direction it is used for.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    next_recv_seqno: u32,
    next_send_seqno: u32,
    max_len: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(MAX_FRAME_LEN)
    }
}

impl FrameCodec {
    /// A codec accepting payloads up to `max_len` bytes (capped at 16 MiB).
    pub fn new(max_len: usize) -> Self {
        FrameCodec {
            next_recv_seqno: 0,
            next_send_seqno: 0,
            max_len: max_len.clamp(MIN_FRAME_LEN, MAX_FRAME_LEN),
        }
    }

    fn check_len(&self, len: usize) -> Result<(), FrameError> {
        if (MIN_FRAME_LEN..=self.max_len).contains(&len) {
            Ok(())
        } else {
            Err(FrameError::BadLength {
                len,
                min: MIN_FRAME_LEN,
                max: self.max_len,
            })
        }
    }

    fn put_header(&mut self, len: usize, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.check_len(len)?;
        dst.reserve(HEADER_LEN + len);
        dst.put_u32_le(len as u32);
        dst.put_u32_le(self.next_send_seqno);
        self.next_send_seqno = self.next_send_seqno.wrapping_add(1);
        Ok(())
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if src.len() < HEADER_LEN {
            src.reserve(HEADER_LEN - src.len());
            return Ok(None);
        }
        let len = u32::from_le_bytes([src[0], src[1], src[2], src[3]]) as usize;
        self.check_len(len)?;
        let seqno = u32::from_le_bytes([src[4], src[5], src[6], src[7]]);
        if seqno != self.next_recv_seqno {
            return Err(FrameError::BadSeqno {
                expected: self.next_recv_seqno,
                got: seqno,
            });
        }
        if src.len() < HEADER_LEN + len {
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        self.next_recv_seqno = self.next_recv_seqno.wrapping_add(1);
        Ok(Some(src.split_to(len).freeze()))
    }
}

impl Encoder<OutFrame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: OutFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = frame.payload_len();
        self.put_header(len, dst)?;
        match frame {
            OutFrame::Raw(payload) => dst.extend_from_slice(&payload),
            OutFrame::Wrapped {
                head,
                head_len,
                body,
            } => {
                dst.extend_from_slice(&head[..head_len]);
                let (prefix, prefix_len) = cocoon_tl::codec::bytes_header(body.len());
                dst.extend_from_slice(&prefix[..prefix_len]);
                dst.extend_from_slice(&body);
                let pad = cocoon_tl::codec::bytes_padding(body.len());
                dst.extend_from_slice(&[0u8; 3][..pad]);
            }
        }
        Ok(())
    }
}
