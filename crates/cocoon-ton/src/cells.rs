//! Low-level cell helpers shared by every layout in this crate: COCOON's way of
//! storing addresses and coins, BOC encoding, strict end-of-cell checks.
//!
//! Layout facts (spec §5.4): an address in a cell is
//! `addr_std$10 anycast:0 workchain:int8 hash:bits256` (267 bits); coins are
//! `VarUInteger 16` (a 4-bit byte length, then that many big-endian bytes; zero
//! is stored as `0000`). Like the C++ runners we keep coin amounts in `u64`
//! nanoTON and refuse longer encodings.

use tycho_types::cell::{Cell, CellBuilder, CellSlice, HashBytes};
use tycho_types::models::StdAddr;
use tycho_types::prelude::Boc;

use crate::error::{Result, TonError};

/// Number of bits an address occupies in a cell (`addr_std` without anycast).
pub const ADDRESS_BITS: u16 = 267;

/// Appends `addr_std$10 anycast:0 workchain:int8 hash:bits256`.
///
/// Anycast information, if any, is dropped: COCOON never uses it.
pub fn store_address(b: &mut CellBuilder, addr: &StdAddr) -> Result<()> {
    b.store_small_uint(0b100, 3)?;
    b.store_u8(addr.workchain as u8)?;
    b.store_u256(&addr.address)?;
    Ok(())
}

/// Reads an address stored by [`store_address`]. Only `addr_std` without
/// anycast is accepted (tag `100`), as in the C++ `fetch_address`.
pub fn load_address(s: &mut CellSlice<'_>) -> Result<StdAddr> {
    let tag = s.load_small_uint(3)?;
    if tag != 0b100 {
        return Err(TonError::layout(
            "address",
            format!("expected addr_std without anycast (tag 100), found tag {tag:03b}"),
        ));
    }
    // The C++ reader takes the workchain as uint8; only workchain 0 is used, and
    // reading it as int8 gives the same value there (and the right one for -1).
    let workchain = s.load_u8()? as i8;
    let address = s.load_u256()?;
    Ok(StdAddr::new(workchain, address))
}

/// Appends a `VarUInteger 16` coin amount.
pub fn store_coins(b: &mut CellBuilder, amount: u64) -> Result<()> {
    if amount == 0 {
        b.store_zeros(4)?;
        return Ok(());
    }
    let len = 8 - (amount.leading_zeros() / 8) as u16;
    b.store_small_uint(len as u8, 4)?;
    b.store_uint(amount, len * 8)?;
    Ok(())
}

/// Reads a `VarUInteger 16` coin amount; lengths above 8 bytes are refused
/// (they cannot be held in a `u64`, and the C++ reader refuses them too).
pub fn load_coins(s: &mut CellSlice<'_>) -> Result<u64> {
    let len = s.load_small_uint(4)? as u16;
    if len == 0 {
        return Ok(0);
    }
    if len > 8 {
        return Err(TonError::Range(format!(
            "coin amount of {len} bytes does not fit in 64 bits"
        )));
    }
    Ok(s.load_uint(len * 8)?)
}

/// Appends a `Maybe ^Cell`.
pub fn store_maybe_ref(b: &mut CellBuilder, cell: Option<&Cell>) -> Result<()> {
    match cell {
        Some(c) => {
            b.store_bit_one()?;
            b.store_reference(c.clone())?;
        }
        None => b.store_bit_zero()?,
    }
    Ok(())
}

/// Reads a `Maybe ^Cell`.
pub fn load_maybe_ref(s: &mut CellSlice<'_>) -> Result<Option<Cell>> {
    if s.load_bit()? {
        Ok(Some(s.load_reference_cloned()?))
    } else {
        Ok(None)
    }
}

/// Fails with [`TonError::TrailingData`] unless the slice is fully consumed.
pub fn expect_end(s: &CellSlice<'_>, what: &'static str) -> Result<()> {
    if s.size_bits() != 0 || s.size_refs() != 0 {
        return Err(TonError::TrailingData(what));
    }
    Ok(())
}

/// Opens a cell for reading; exotic cells are refused.
pub fn open(cell: &Cell) -> Result<CellSlice<'_>> {
    Ok(cell.as_slice()?)
}

/// Serializes a cell tree as a standard BOC (no index, no CRC), like the C++
/// `std_boc_serialize` with mode 0.
pub fn to_boc(cell: &Cell) -> Vec<u8> {
    Boc::encode(cell)
}

/// Parses a BOC with exactly one root.
pub fn from_boc(bytes: &[u8]) -> Result<Cell> {
    Boc::decode(bytes).map_err(|e| TonError::Boc(e.to_string()))
}

/// Parses a hex-encoded BOC (as in COCOON's `*_sc_code` config fields).
pub fn from_boc_hex(hex_str: &str) -> Result<Cell> {
    let bytes = hex::decode(hex_str.trim()).map_err(|e| TonError::Boc(format!("bad hex: {e}")))?;
    from_boc(&bytes)
}

/// The representation hash of a cell as 32 bytes.
pub fn cell_hash(cell: &Cell) -> [u8; 32] {
    cell.repr_hash().0
}

/// Builds a 32-byte [`HashBytes`] from an array.
pub fn hash_bytes(bytes: [u8; 32]) -> HashBytes {
    HashBytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_coins(v: u64) -> u64 {
        let mut b = CellBuilder::new();
        store_coins(&mut b, v).unwrap();
        let c = b.build().unwrap();
        let mut s = c.as_slice().unwrap();
        let out = load_coins(&mut s).unwrap();
        expect_end(&s, "coins").unwrap();
        out
    }

    #[test]
    fn coins_layout() {
        let mut b = CellBuilder::new();
        store_coins(&mut b, 0).unwrap();
        assert_eq!(b.size_bits(), 4);
        let mut b = CellBuilder::new();
        store_coins(&mut b, 255).unwrap();
        assert_eq!(b.size_bits(), 12);
        let mut b = CellBuilder::new();
        store_coins(&mut b, 256).unwrap();
        assert_eq!(b.size_bits(), 20);
        for v in [0, 1, 255, 256, 1_000_000_000, u64::MAX] {
            assert_eq!(roundtrip_coins(v), v);
        }
    }

    #[test]
    fn address_layout() {
        let a = StdAddr::new(0, HashBytes([7; 32]));
        let mut b = CellBuilder::new();
        store_address(&mut b, &a).unwrap();
        assert_eq!(b.size_bits(), ADDRESS_BITS);
        let c = b.build().unwrap();
        let mut s = c.as_slice().unwrap();
        assert_eq!(load_address(&mut s).unwrap(), a);
    }
}
