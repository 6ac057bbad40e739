//! The TL codec runtime: primitive writers and a strict reader with precise errors.
//!
//! Rules (cocoon-protocol.md §2.2): integers little-endian, `int128`/`int256` raw bytes,
//! `string`/`bytes` with a 1- or 4-byte length prefix and zero padding to a multiple of
//! four, `Bool` boxed, `vector` bare (u32 count then the elements).

use crate::TlError;

/// `boolTrue` constructor id.
pub const BOOL_TRUE: u32 = 0x9972_75b5;
/// `boolFalse` constructor id.
pub const BOOL_FALSE: u32 = 0xbc79_9737;

/// Largest byte string TL can carry with the 4-byte (`0xfe`) length prefix.
const SHORT_LIMIT: usize = 254;
const MEDIUM_LIMIT: usize = 1 << 24;

/// Appends a `u32` (also `#` flags) in little-endian order.
#[inline]
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends an `int`.
#[inline]
pub fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a `long`.
#[inline]
pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a `double`.
#[inline]
pub fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a boxed `Bool`.
#[inline]
pub fn put_bool(out: &mut Vec<u8>, v: bool) {
    put_u32(out, if v { BOOL_TRUE } else { BOOL_FALSE });
}

/// Appends a vector length.
///
/// # Panics
/// If `len` does not fit in a `u32`; no COCOON message comes near that.
#[inline]
pub fn put_len(out: &mut Vec<u8>, len: usize) {
    put_u32(
        out,
        u32::try_from(len).expect("TL vector longer than 2^32 elements"),
    );
}

/// Appends a `string` or `bytes` value with its length prefix and padding.
pub fn put_bytes(out: &mut Vec<u8>, data: &[u8]) {
    let (header, header_len) = bytes_header(data.len());
    out.extend_from_slice(&header[..header_len]);
    out.extend_from_slice(data);
    out.extend_from_slice(&[0u8; 3][..bytes_padding(data.len())]);
}

/// The length prefix of a `string`/`bytes` value of `n` bytes: the buffer and how many of
/// its bytes to use. Lets a caller write the data itself, e.g. straight into a frame.
pub fn bytes_header(n: usize) -> ([u8; 8], usize) {
    let mut header = [0u8; 8];
    if n < SHORT_LIMIT {
        header[0] = n as u8;
        (header, 1)
    } else if n < MEDIUM_LIMIT {
        header[0] = 0xfe;
        header[1..4].copy_from_slice(&(n as u32).to_le_bytes()[..3]);
        (header, 4)
    } else {
        header[0] = 0xff;
        header[1..8].copy_from_slice(&(n as u64).to_le_bytes()[..7]);
        (header, 8)
    }
}

/// Zero bytes that follow a `string`/`bytes` value of `n` bytes.
pub fn bytes_padding(n: usize) -> usize {
    let header = bytes_header(n).1;
    (4 - (header + n) % 4) % 4
}

/// Encoded size of a `string`/`bytes` value of `n` bytes, prefix and padding included.
pub fn bytes_len(n: usize) -> usize {
    bytes_header(n).1 + n + bytes_padding(n)
}

/// A strict reader over one TL-encoded buffer.
///
/// Every method fails with a [`TlError`] that says what was wrong and at which byte;
/// nothing panics on malformed input.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Current byte offset from the start of the buffer.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails with [`TlError::TrailingBytes`] unless the whole buffer was consumed.
    pub fn finish(&self) -> Result<(), TlError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(TlError::TrailingBytes {
                offset: self.pos,
                count,
            }),
        }
    }

    /// Takes the next `n` bytes.
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], TlError> {
        if self.remaining() < n {
            return Err(TlError::UnexpectedEof {
                offset: self.pos,
                needed: n,
                remaining: self.remaining(),
            });
        }
        let slice = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    /// Reads a fixed-size byte array (`int128`, `int256`).
    #[inline]
    pub fn read_array<const N: usize>(&mut self) -> Result<[u8; N], TlError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads a `u32` (also `#` flags and constructor ids).
    #[inline]
    pub fn read_u32(&mut self) -> Result<u32, TlError> {
        Ok(u32::from_le_bytes(self.read_array::<4>()?))
    }

    /// Reads an `int`.
    #[inline]
    pub fn read_i32(&mut self) -> Result<i32, TlError> {
        Ok(i32::from_le_bytes(self.read_array::<4>()?))
    }

    /// Reads a `long`.
    #[inline]
    pub fn read_i64(&mut self) -> Result<i64, TlError> {
        Ok(i64::from_le_bytes(self.read_array::<8>()?))
    }

    /// Reads a `double`.
    #[inline]
    pub fn read_f64(&mut self) -> Result<f64, TlError> {
        Ok(f64::from_le_bytes(self.read_array::<8>()?))
    }

    /// Reads a boxed `Bool`.
    pub fn read_bool(&mut self) -> Result<bool, TlError> {
        let offset = self.pos;
        match self.read_u32()? {
            BOOL_TRUE => Ok(true),
            BOOL_FALSE => Ok(false),
            id => Err(TlError::UnknownConstructor {
                id,
                offset,
                expected: "Bool",
            }),
        }
    }

    /// Reads a constructor id and fails unless it is `id`.
    pub fn expect_id(&mut self, id: u32, expected: &'static str) -> Result<(), TlError> {
        let offset = self.pos;
        let got = self.read_u32()?;
        if got == id {
            Ok(())
        } else {
            Err(TlError::UnknownConstructor {
                id: got,
                offset,
                expected,
            })
        }
    }

    /// Reads a `string`/`bytes` value as a borrowed slice (padding is skipped, its
    /// content is not checked, as in the reference implementation).
    pub fn read_byte_slice(&mut self) -> Result<&'a [u8], TlError> {
        let first = self.take(1)?[0];
        let (header, len) = match first {
            0xfe => {
                let b = self.take(3)?;
                (4, u32::from_le_bytes([b[0], b[1], b[2], 0]) as usize)
            }
            0xff => {
                let b = self.take(7)?;
                let len = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], 0]);
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                (8, len)
            }
            n => (1, n as usize),
        };
        let data = self.take(len)?;
        let pad = (4 - (header + len) % 4) % 4;
        self.take(pad)?;
        Ok(data)
    }

    /// Reads a `bytes` value.
    pub fn read_bytes(&mut self) -> Result<Vec<u8>, TlError> {
        Ok(self.read_byte_slice()?.to_vec())
    }

    /// Reads a `string` value, which must be valid UTF-8.
    pub fn read_string(&mut self) -> Result<String, TlError> {
        let offset = self.pos;
        let data = self.read_byte_slice()?;
        match std::str::from_utf8(data) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(TlError::InvalidUtf8 { offset }),
        }
    }

    /// Reads a bare vector, calling `item` for each element.
    ///
    /// The element count is checked against the remaining bytes (every TL value takes
    /// at least four bytes) before anything is allocated.
    pub fn read_vec<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, TlError>,
    ) -> Result<Vec<T>, TlError> {
        let offset = self.pos;
        let count = self.read_u32()? as usize;
        if count > self.remaining() / 4 {
            return Err(TlError::VectorTooLong {
                offset,
                count,
                remaining: self.remaining(),
            });
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(item(self)?);
        }
        Ok(out)
    }
}
