//! TON addresses as COCOON prints and reads them.
//!
//! In TL, JSON configs, database keys and logs COCOON writes addresses in the
//! user-friendly URL-safe base64 form, **non-bounceable** (`UQ…` on mainnet,
//! `0Q…` on testnet), with the testnet flag taken from the runner's config
//! (spec §1 conventions, §11 item 18). The C++ `rserialize(true)` form is the
//! one [`to_friendly`] produces by default; DB keys and map keys must use that
//! exact string, so always print through this module.
//!
//! Parsing accepts the raw form (`0:<64 hex>`) and both base64 alphabets.

use std::fmt;
use std::str::FromStr;

use tycho_types::cell::HashBytes;
pub use tycho_types::models::StdAddr;
use tycho_types::models::{Base64StdAddrFlags, DisplayBase64StdAddr, StdAddrFormat};

use crate::error::{Result, TonError};

/// How a user-friendly address string is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AddressFlags {
    /// The bounceable flag (`EQ…`/`kQ…` when set, `UQ…`/`0Q…` when clear).
    pub bounceable: bool,
    /// The testnet flag.
    pub testnet: bool,
    /// URL-safe alphabet (`-`, `_`) instead of the standard one (`+`, `/`).
    pub url_safe: bool,
}

impl AddressFlags {
    /// COCOON's default form: non-bounceable, URL-safe, with the given network flag.
    pub const fn cocoon(testnet: bool) -> Self {
        AddressFlags {
            bounceable: false,
            testnet,
            url_safe: true,
        }
    }
}

/// Prints `addr` in user-friendly form with the given flags.
pub fn to_friendly_with(addr: &StdAddr, flags: AddressFlags) -> String {
    DisplayBase64StdAddr {
        addr,
        flags: Base64StdAddrFlags {
            testnet: flags.testnet,
            base64_url: flags.url_safe,
            bounceable: flags.bounceable,
        },
    }
    .to_string()
}

/// Prints `addr` as COCOON does: non-bounceable, URL-safe base64, with the
/// testnet flag given (the C++ `rserialize(true)` with the runner's `is_testnet`).
pub fn to_friendly(addr: &StdAddr, testnet: bool) -> String {
    to_friendly_with(addr, AddressFlags::cocoon(testnet))
}

/// Prints `addr` in raw form: `<workchain>:<64 lowercase hex digits>`.
pub fn to_raw(addr: &StdAddr) -> String {
    format!("{}:{}", addr.workchain, hex::encode(addr.address.0))
}

/// Parses an address in raw or user-friendly form. For the raw form the
/// returned flags are all `false`.
pub fn parse(s: &str) -> Result<(StdAddr, AddressFlags)> {
    let s = s.trim();
    let bad = |reason: String| TonError::Address {
        input: s.to_owned(),
        reason,
    };
    if s.contains(':') {
        let (wc, hash) = s.split_once(':').ok_or_else(|| bad("no ':'".into()))?;
        let workchain: i8 = wc.parse().map_err(|e| bad(format!("bad workchain: {e}")))?;
        let bytes = hex::decode(hash).map_err(|e| bad(format!("bad hex: {e}")))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| bad("account id is not 32 bytes".into()))?;
        return Ok((
            StdAddr::new(workchain, HashBytes(arr)),
            AddressFlags::default(),
        ));
    }
    if s.len() != 48 {
        return Err(bad(format!("expected 48 characters, got {}", s.len())));
    }
    let (addr, f) = StdAddr::from_str_ext(
        s,
        StdAddrFormat {
            allow_raw: false,
            allow_base64: true,
            allow_base64_url: true,
        },
    )
    .map_err(|e| bad(e.to_string()))?;
    // A tag byte other than 0x11/0x51 (optionally | 0x80) is not a valid address;
    // tycho does not check it, so look at the first byte ourselves.
    let tag = first_byte(s).ok_or_else(|| bad("bad base64".into()))?;
    if tag & 0x7f != 0x11 && tag & 0x7f != 0x51 {
        return Err(bad(format!("bad tag byte {tag:#04x}")));
    }
    Ok((
        addr,
        AddressFlags {
            bounceable: f.bounceable,
            testnet: f.testnet,
            url_safe: f.base64_url,
        },
    ))
}

fn first_byte(s: &str) -> Option<u8> {
    use base64::Engine as _;
    let engine = if s.contains(['-', '_']) {
        &base64::engine::general_purpose::URL_SAFE
    } else {
        &base64::engine::general_purpose::STANDARD
    };
    engine.decode(s).ok()?.first().copied()
}

/// Parses an address in any accepted form and drops the flags.
pub fn parse_addr(s: &str) -> Result<StdAddr> {
    parse(s).map(|(a, _)| a)
}

/// An address together with the network it is printed for. Its `Display` is
/// COCOON's canonical string (non-bounceable, URL-safe).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    /// The address itself.
    pub addr: StdAddr,
    /// Whether it is printed with the testnet flag.
    pub testnet: bool,
}

impl Address {
    /// Wraps an address for the given network.
    pub fn new(addr: StdAddr, testnet: bool) -> Self {
        Address { addr, testnet }
    }

    /// The bounceable form (`EQ…`/`kQ…`), for display to humans who expect it.
    pub fn bounceable(&self) -> String {
        to_friendly_with(
            &self.addr,
            AddressFlags {
                bounceable: true,
                testnet: self.testnet,
                url_safe: true,
            },
        )
    }

    /// The raw form `0:<hex>`.
    pub fn raw(&self) -> String {
        to_raw(&self.addr)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_friendly(&self.addr, self.testnet))
    }
}

impl FromStr for Address {
    type Err = TonError;
    fn from_str(s: &str) -> Result<Self> {
        let (addr, flags) = parse(s)?;
        Ok(Address {
            addr,
            testnet: flags.testnet,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployed_root_roundtrip() {
        // The deployed COCOON root as given in the C++ repo's worker.conf.example.
        let s = "EQCns7bYSp0igFvS1wpb5wsZjCKCV19MD5AVzI4EyxsnU73k";
        let (a, f) = parse(s).unwrap();
        assert!(f.bounceable && !f.testnet);
        assert_eq!(to_friendly_with(&a, f), s);
        let nb = to_friendly(&a, false);
        assert!(nb.starts_with("UQ"));
        assert_eq!(parse_addr(&nb).unwrap(), a);
        assert_eq!(parse_addr(&to_raw(&a)).unwrap(), a);
    }

    #[test]
    fn testnet_form() {
        // Root owner of COCOON's fake-TON config: testnet, non-bounceable.
        let s = "0QBgPMq7ye2WRcudRHK_-yjHwMXjeN-UCzAuoo06TR6hmgHV";
        let a: Address = s.parse().unwrap();
        assert!(a.testnet);
        assert_eq!(a.to_string(), s);
        assert!(a.bounceable().starts_with("kQ"));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("").is_err());
        assert!(parse("0:zz").is_err());
        assert!(parse("EQCns7bYSp0igFvS1wpb5wsZjCKCV19MD5AVzI4EyxsnU73X").is_err());
    }
}
