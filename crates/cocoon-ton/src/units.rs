//! TON amounts: nanoTON integers and decimal TON strings (`"0.7"` → 700 000 000).

use crate::error::{Result, TonError};
use crate::root::ONE_TON;

/// Parses a decimal TON amount (up to 9 fractional digits) into nanoTON.
/// Accepts `"1"`, `"0.7"`, `".5"`, `"12.000000001"`; refuses signs, exponents,
/// more than 9 decimals and values above `u64::MAX` nanoTON.
pub fn parse_ton(s: &str) -> Result<u64> {
    let s = s.trim();
    let bad = |r: &str| TonError::Range(format!("TON amount {s:?}: {r}"));
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() {
        return Err(bad("empty"));
    }
    if !int.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad("not a decimal number"));
    }
    if frac.len() > 9 {
        return Err(bad("more than 9 decimals"));
    }
    let whole: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad("too large"))?
    };
    let frac_nano: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}")
            .parse()
            .map_err(|_| bad("bad decimals"))?
    };
    whole
        .checked_mul(ONE_TON)
        .and_then(|w| w.checked_add(frac_nano))
        .ok_or_else(|| bad("too large"))
}

/// Formats nanoTON as a decimal TON string without trailing zeros (`700000000` → `"0.7"`).
pub fn format_ton(nano: u64) -> String {
    let whole = nano / ONE_TON;
    let frac = nano % ONE_TON;
    if frac == 0 {
        return whole.to_string();
    }
    let f = format!("{frac:09}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        assert_eq!(parse_ton("0.7").unwrap(), 700_000_000);
        assert_eq!(parse_ton("1").unwrap(), ONE_TON);
        assert_eq!(parse_ton(".5").unwrap(), 500_000_000);
        assert_eq!(parse_ton("12.000000001").unwrap(), 12_000_000_001);
        for bad in [
            "",
            ".",
            "-1",
            "1e9",
            "0.0000000001",
            "99999999999999999999",
            "1.2.3",
        ] {
            assert!(parse_ton(bad).is_err(), "{bad}");
        }
        assert_eq!(format_ton(700_000_000), "0.7");
        assert_eq!(format_ton(12_000_000_001), "12.000000001");
        assert_eq!(format_ton(3 * ONE_TON), "3");
        for v in [0, 1, 999_999_999, ONE_TON, u64::MAX] {
            assert_eq!(parse_ton(&format_ton(v)).unwrap(), v);
        }
    }
}
