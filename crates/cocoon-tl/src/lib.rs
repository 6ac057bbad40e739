//! COCOON's TL API as Rust types, with a strict, byte-exact codec.
//!
//! The schema lives in `schema/cocoon_api.tl`; the build script turns it into:
//! - [`types`]: one struct per object constructor (`types::tcp::Ping` for `tcp.ping`),
//! - [`functions`]: one struct per function (`functions::client::RunQueryEx`), each with its
//!   answer type through [`TlFunction`],
//! - [`enums`]: one enum per boxed type (`enums::proxy::SignedPayment`),
//! - [`Object`]: every constructor, to decode a payload whose type is not known.
//!
//! Bare and boxed follow the schema (lower-case references are bare, upper-case boxed,
//! `vector` bare). TL `string` is a Rust [`String`] (invalid UTF-8 is a decode error),
//! `bytes` a `Vec<u8>`, `int256` a `[u8; 32]`, `flags.N?T` an `Option<T>`. Decoding is
//! strict: [`from_bytes`] rejects trailing bytes.
//!
//! ```
//! use cocoon_tl::{types::tcp, enums, from_bytes, to_bytes};
//! let bytes = to_bytes(&tcp::Connect { id: 1 });
//! assert_eq!(bytes, [0x61, 0x42, 0x7c, 0xa5, 1, 0, 0, 0, 0, 0, 0, 0]);
//! let packet: enums::tcp::Packet = from_bytes(&bytes).unwrap();
//! assert_eq!(packet, enums::tcp::Packet::Connect(tcp::Connect { id: 1 }));
//! ```

#![forbid(unsafe_code)]

pub mod codec;

pub use codec::Reader;

#[allow(clippy::all, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/cocoon_api.rs"));
}

pub use generated::{enums, functions, types, Object, CONSTRUCTORS};

#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "testing")]
pub use generated::random_object;

/// Why a TL payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlError {
    /// The payload ended in the middle of a value.
    #[error("truncated TL data: needed {needed} bytes at offset {offset}, {remaining} left")]
    UnexpectedEof {
        /// Offset where the value started.
        offset: usize,
        /// Bytes the value needed.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A constructor id that is not allowed at this place.
    #[error("unknown constructor id {id:#010x} at offset {offset}, expected {expected}")]
    UnknownConstructor {
        /// The id that was read.
        id: u32,
        /// Offset of the id.
        offset: usize,
        /// The TL type or constructor that was expected.
        expected: &'static str,
    },
    /// A TL `string` that is not UTF-8.
    #[error("invalid UTF-8 in TL string at offset {offset}")]
    InvalidUtf8 {
        /// Offset of the string's length prefix.
        offset: usize,
    },
    /// A vector whose element count cannot fit in the remaining bytes.
    #[error(
        "TL vector of {count} elements at offset {offset} cannot fit in the {remaining} bytes left"
    )]
    VectorTooLong {
        /// Offset of the count.
        offset: usize,
        /// The declared element count.
        count: usize,
        /// Bytes left after the count.
        remaining: usize,
    },
    /// Bytes left over after a complete object.
    #[error("{count} trailing bytes after the TL object at offset {offset}")]
    TrailingBytes {
        /// Offset where the object ended.
        offset: usize,
        /// Number of extra bytes.
        count: usize,
    },
}

/// A value encoded without its constructor id (a bare TL reference).
pub trait TlBare: Sized {
    /// Appends the fields of `self`.
    fn write_bare(&self, out: &mut Vec<u8>);
    /// Reads the fields of one value.
    fn read_bare(r: &mut Reader<'_>) -> Result<Self, TlError>;
}

/// A value encoded with its constructor id (a boxed TL reference, a message, a query).
pub trait TlBoxed: Sized {
    /// Appends the constructor id and the fields of `self`.
    fn write_boxed(&self, out: &mut Vec<u8>);
    /// Reads one boxed value, failing on an id this type does not accept.
    fn read_boxed(r: &mut Reader<'_>) -> Result<Self, TlError>;
}

/// One TL constructor (object or function) with its id.
pub trait TlConstructor {
    /// The constructor id: CRC32 of the normalized declaration, or its explicit `#id`.
    const ID: u32;
    /// The full TL name, e.g. `tcp.ping`.
    const NAME: &'static str;
}

/// A TL function: sent as a query, answered with a value of [`TlFunction::Answer`].
pub trait TlFunction: TlBoxed + TlConstructor {
    /// The boxed result type of the function.
    type Answer: TlBoxed;
}

/// Encodes `value` boxed (with its constructor id).
pub fn to_bytes<T: TlBoxed>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    value.write_boxed(&mut out);
    out
}

/// Appends `value` boxed to `out`, e.g. behind a frame header.
pub fn write_to<T: TlBoxed>(value: &T, out: &mut Vec<u8>) {
    value.write_boxed(out);
}

/// Decodes exactly one boxed value from `bytes`; trailing bytes are an error.
pub fn from_bytes<T: TlBoxed>(bytes: &[u8]) -> Result<T, TlError> {
    let mut r = Reader::new(bytes);
    let value = T::read_boxed(&mut r)?;
    r.finish()?;
    Ok(value)
}

/// Encodes `value` bare (without a constructor id).
pub fn to_bytes_bare<T: TlBare>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    value.write_bare(&mut out);
    out
}

/// Decodes exactly one bare value from `bytes`; trailing bytes are an error.
pub fn from_bytes_bare<T: TlBare>(bytes: &[u8]) -> Result<T, TlError> {
    let mut r = Reader::new(bytes);
    let value = T::read_bare(&mut r)?;
    r.finish()?;
    Ok(value)
}

/// The constructor id at the start of a boxed payload, if it has four bytes.
pub fn peek_id(bytes: &[u8]) -> Option<u32> {
    bytes
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The TL name of a constructor id of this schema.
pub fn constructor_name(id: u32) -> Option<&'static str> {
    CONSTRUCTORS
        .iter()
        .find(|(cid, _)| *cid == id)
        .map(|(_, name)| *name)
}
