//! Random values of every schema type, for property tests and fuzzing (feature `testing`).
//!
//! A [`Source`] turns a byte string (from proptest or a fuzzer) into choices, so the same
//! input always gives the same value and shrinking works on the bytes.

/// Deterministic source of random choices over a byte string; past its end it yields zeros.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Source<'a> {
    /// Draws choices from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Source { data, pos: 0 }
    }

    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// A random `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    /// A random `u64`.
    pub fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    /// A random finite `f64` (NaN would make equality checks meaningless).
    pub fn f64(&mut self) -> f64 {
        let v = f64::from_bits(self.u64());
        if v.is_finite() {
            v
        } else {
            0.0
        }
    }

    /// A random `bool`.
    pub fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// A number in `0..n` (`n > 0`).
    pub fn index(&mut self, n: usize) -> usize {
        self.byte() as usize % n.max(1)
    }

    /// A short collection length, 0 to 3.
    pub fn collection_len(&mut self) -> usize {
        self.index(4)
    }

    /// Random bytes; lengths around the 254-byte prefix switch are likely.
    pub fn bytes(&mut self) -> Vec<u8> {
        let n = match self.index(4) {
            0 => 0,
            1 => self.index(8),
            2 => 250 + self.index(8),
            _ => self.index(600),
        };
        (0..n).map(|_| self.byte()).collect()
    }

    /// A random UTF-8 string, multi-byte characters included.
    pub fn string(&mut self) -> String {
        let n = self.index(12);
        (0..n)
            .map(|_| match self.index(3) {
                0 => char::from(b'a' + self.index(26) as u8),
                1 => 'é',
                _ => '💸',
            })
            .collect()
    }

    /// A random fixed-size array.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.byte();
        }
        out
    }
}

/// A type that can produce a random value of itself.
pub trait Random {
    /// Builds a random value; flag bits and optional fields always agree.
    fn random(s: &mut Source<'_>) -> Self;
}
