//! The JSON shapes of toncenter's HTTP API v2, read and written by both the
//! client and the server: accounts (`raw.fullAccountState`), TVM stacks
//! (`smc.runResult`), transactions (`raw.transaction`, `ext.transaction`) and
//! the small value formats they are made of.
//!
//! Reading never panics: every malformed or hostile value is an error string
//! naming the field, which the caller wraps into a `ChainError`.

// Each side uses part of this module.
#![cfg_attr(
    not(all(feature = "toncenter", feature = "toncenter-server")),
    allow(dead_code)
)]

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use tycho_types::cell::{Cell, CellBuilder, CellFamily};
use tycho_types::models::{MsgInfo, OwnedMessage, StdAddr, Transaction as TlbTransaction, TxInfo};

use crate::address::{parse_addr, to_friendly_with, AddressFlags};
use crate::cells::{from_boc, to_boc};
use crate::chain::{AccountState, AccountStatus, StackValue, Transaction, TxId, TxMessage};

/// What reading a value gives.
pub(crate) type WireResult<T> = std::result::Result<T, String>;

/// The deepest tuple nesting accepted in a stack.
const MAX_STACK_DEPTH: usize = 64;
/// Most stack entries accepted in one answer, nested ones included.
const MAX_STACK_ENTRIES: usize = 16_384;
/// Longest `tvm.list` accepted (it becomes that many nested pairs).
const MAX_LIST_LEN: usize = 1_024;

// ---------------------------------------------------------------- scalars

/// A field of an object, or an error naming it.
pub(crate) fn field<'a>(v: &'a Value, name: &str) -> WireResult<&'a Value> {
    v.get(name).ok_or_else(|| format!("missing field `{name}`"))
}

/// A string field.
pub(crate) fn str_field<'a>(v: &'a Value, name: &str) -> WireResult<&'a str> {
    field(v, name)?
        .as_str()
        .ok_or_else(|| format!("field `{name}` is not a string"))
}

/// An unsigned integer written as a JSON number or a decimal string (toncenter
/// writes 64-bit values as strings).
pub(crate) fn u64_value(v: &Value, what: &str) -> WireResult<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("`{what}` is not an unsigned 64-bit integer: {n}")),
        Value::String(s) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("`{what}` is not an unsigned 64-bit integer: {s:?}")),
        other => Err(format!("`{what}` is not a number: {}", short(other))),
    }
}

/// A signed integer written as a JSON number or a decimal string.
pub(crate) fn i64_value(v: &Value, what: &str) -> WireResult<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("`{what}` is not a 64-bit integer: {n}")),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("`{what}` is not a 64-bit integer: {s:?}")),
        other => Err(format!("`{what}` is not a number: {}", short(other))),
    }
}

/// A value shortened for an error message.
pub(crate) fn short(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 120 {
        let mut cut = 120;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Bytes from base64 (standard or URL-safe alphabet, padding optional,
/// whitespace ignored).
pub(crate) fn b64_bytes(s: &str, what: &str) -> WireResult<Vec<u8>> {
    let clean: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let trimmed = clean.trim_end_matches('=');
    let padded = {
        let mut p = trimmed.to_string();
        while !p.len().is_multiple_of(4) {
            p.push('=');
        }
        p
    };
    STANDARD
        .decode(&padded)
        .or_else(|_| URL_SAFE.decode(&padded))
        .map_err(|e| format!("`{what}` is not base64: {e}"))
}

/// Standard base64 with padding (what toncenter writes).
pub(crate) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A cell from a base64 BOC.
pub(crate) fn b64_cell(s: &str, what: &str) -> WireResult<Cell> {
    let bytes = b64_bytes(s, what)?;
    from_boc(&bytes).map_err(|e| format!("`{what}`: {e}"))
}

/// A cell from a base64 BOC, `None` for the empty string (toncenter's "no cell").
pub(crate) fn opt_b64_cell(v: Option<&Value>, what: &str) -> WireResult<Option<Cell>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => b64_cell(s, what).map(Some),
        Some(other) => Err(format!("`{what}` is not a string: {}", short(other))),
    }
}

/// A base64 BOC of `cell`.
pub(crate) fn cell_b64(cell: &Cell) -> String {
    b64(&to_boc(cell))
}

/// A 32-byte hash written in base64 (either alphabet) or hex.
pub(crate) fn hash32(s: &str, what: &str) -> WireResult<[u8; 32]> {
    let s = s.trim();
    let bytes = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(s).map_err(|e| format!("`{what}` is not hex: {e}"))?
    } else {
        b64_bytes(s, what)?
    };
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("`{what}` is {} bytes, not 32", bytes.len()))
}

/// An `internal.transactionId`; `None` for toncenter's "no transaction"
/// (logical time 0).
pub(crate) fn tx_id(v: &Value) -> WireResult<Option<TxId>> {
    let lt = u64_value(field(v, "lt")?, "lt")?;
    if lt == 0 {
        return Ok(None);
    }
    let hash = hash32(str_field(v, "hash")?, "hash")?;
    Ok(Some(TxId { lt, hash }))
}

/// An `internal.transactionId` (lt 0 and a zero hash for "none").
pub(crate) fn tx_id_json(id: Option<TxId>) -> Value {
    let (lt, hash) = id.map_or((0, [0u8; 32]), |t| (t.lt, t.hash));
    json!({"@type": "internal.transactionId", "lt": lt.to_string(), "hash": b64(&hash)})
}

/// An address given as a string (raw or user-friendly; empty for "none") or as
/// an `accountAddress` object.
pub(crate) fn opt_address(v: Option<&Value>, what: &str) -> WireResult<Option<StdAddr>> {
    let s = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Object(o)) => match o.get("account_address") {
            Some(Value::String(s)) => s.as_str(),
            None | Some(Value::Null) => return Ok(None),
            Some(other) => return Err(format!("`{what}` is not an address: {}", short(other))),
        },
        Some(other) => return Err(format!("`{what}` is not an address: {}", short(other))),
    };
    if s.trim().is_empty() {
        return Ok(None);
    }
    parse_addr(s)
        .map(Some)
        .map_err(|e| format!("`{what}`: {e}"))
}

/// An address as toncenter prints it: user-friendly, bounceable, URL-safe.
pub(crate) fn address_json(addr: &StdAddr) -> String {
    to_friendly_with(
        addr,
        AddressFlags {
            bounceable: true,
            testnet: false,
            url_safe: true,
        },
    )
}

/// The block id put where toncenter names the masterchain block an answer was
/// read at. Backends here have no blocks, so it is a fixed placeholder
/// (masterchain, seqno 0, zero hashes).
pub(crate) fn placeholder_block_id() -> Value {
    let zero = b64(&[0u8; 32]);
    json!({
        "@type": "ton.blockIdExt",
        "workchain": -1,
        "shard": "-9223372036854775808",
        "seqno": 0,
        "root_hash": zero,
        "file_hash": zero,
    })
}

// ---------------------------------------------------------------- accounts

/// Reads a `raw.fullAccountState`.
///
/// toncenter reports an account that does not exist as `uninitialized` with
/// balance 0 (tonlib says -1, toncenter clamps it) and no transaction; that
/// is read as [`AccountStatus::NonExist`], as is an explicit `nonexist` state.
pub(crate) fn decode_account(v: &Value) -> WireResult<AccountState> {
    let balance_raw = match field(v, "balance")? {
        Value::String(s) if s.trim().starts_with('-') => -1,
        Value::Number(n) if n.as_i64().is_some_and(|i| i < 0) => -1,
        other => i128::from(u64_value(other, "balance")?),
    };
    let balance = u64::try_from(balance_raw.max(0)).unwrap_or(0);
    let code = opt_b64_cell(v.get("code"), "code")?;
    let data = opt_b64_cell(v.get("data"), "data")?;
    let last_tx = match v.get("last_transaction_id") {
        None | Some(Value::Null) => None,
        Some(t) => tx_id(t).map_err(|e| format!("last_transaction_id: {e}"))?,
    };
    let sync_utime = match v.get("sync_utime") {
        None | Some(Value::Null) => 0,
        Some(t) => u32::try_from(u64_value(t, "sync_utime")?)
            .map_err(|_| "`sync_utime` does not fit 32 bits".to_string())?,
    };
    let frozen = v
        .get("frozen_hash")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.trim().is_empty());
    let state = match v.get("state") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => {
            // toncenter's own rule (`address_state`).
            if code.is_some() {
                "active".into()
            } else if frozen {
                "frozen".into()
            } else {
                "uninitialized".into()
            }
        }
        Some(other) => return Err(format!("`state` is not a string: {}", short(other))),
    };
    let status = match state.as_str() {
        "active" => AccountStatus::Active,
        "frozen" => AccountStatus::Frozen,
        "nonexist" | "nonexistent" => AccountStatus::NonExist,
        "uninitialized" | "uninit" => {
            if balance_raw <= 0 && last_tx.is_none() {
                AccountStatus::NonExist
            } else {
                AccountStatus::Uninit
            }
        }
        other => return Err(format!("unknown account state {other:?}")),
    };
    let (code, data) = match status {
        AccountStatus::Active => (code, data),
        _ => (None, None),
    };
    Ok(AccountState {
        status,
        balance,
        code,
        data,
        last_tx,
        sync_utime,
    })
}

/// Writes a `raw.fullAccountState` as toncenter does (an account that does
/// not exist is `uninitialized` with balance 0).
pub(crate) fn encode_account(st: &AccountState) -> Value {
    let state = match st.status {
        AccountStatus::Active => "active",
        AccountStatus::Frozen => "frozen",
        AccountStatus::Uninit | AccountStatus::NonExist => "uninitialized",
    };
    let cell = |c: &Option<Cell>| c.as_ref().map(cell_b64).unwrap_or_default();
    json!({
        "@type": "raw.fullAccountState",
        "balance": st.balance.to_string(),
        "extra_currencies": [],
        "code": cell(&st.code),
        "data": cell(&st.data),
        "last_transaction_id": tx_id_json(st.last_tx),
        "block_id": placeholder_block_id(),
        "frozen_hash": "",
        "sync_utime": st.sync_utime,
        "state": state,
    })
}

// ---------------------------------------------------------------- big integers

/// A non-negative integer of up to 320 bits, little-endian 64-bit limbs.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
struct Big([u64; 5]);

impl Big {
    fn mul_add(&mut self, mul: u64, add: u64) -> bool {
        let mut carry = u128::from(add);
        for limb in &mut self.0 {
            let v = u128::from(*limb) * u128::from(mul) + carry;
            *limb = v as u64;
            carry = v >> 64;
        }
        carry == 0
    }

    /// Divides by `d`, returning the remainder.
    fn div_rem(&mut self, d: u64) -> u64 {
        let mut rem: u128 = 0;
        for limb in self.0.iter_mut().rev() {
            let cur = (rem << 64) | u128::from(*limb);
            *limb = (cur / u128::from(d)) as u64;
            rem = cur % u128::from(d);
        }
        rem as u64
    }

    fn is_zero(&self) -> bool {
        self.0.iter().all(|&l| l == 0)
    }

    fn from_be32(b: &[u8; 32]) -> Self {
        let mut out = Big::default();
        for (i, chunk) in b.chunks_exact(8).rev().enumerate() {
            let mut a = [0u8; 8];
            a.copy_from_slice(chunk);
            out.0[i] = u64::from_be_bytes(a);
        }
        out
    }

    /// The value if it is below 2^256.
    fn to_be32(self) -> Option<[u8; 32]> {
        if self.0[4] != 0 {
            return None;
        }
        let mut out = [0u8; 32];
        for i in 0..4 {
            out[(3 - i) * 8..(4 - i) * 8].copy_from_slice(&self.0[i].to_be_bytes());
        }
        Some(out)
    }

    /// The value if it is below 2^127 (fits a non-negative `i128`).
    fn to_i128(self) -> Option<i128> {
        if self.0[2] != 0 || self.0[3] != 0 || self.0[4] != 0 || self.0[1] >> 63 != 0 {
            return None;
        }
        Some(i128::from(self.0[0]) | (i128::from(self.0[1]) << 64))
    }

    fn to_decimal(mut self) -> String {
        if self.is_zero() {
            return "0".into();
        }
        let mut digits = Vec::new();
        while !self.is_zero() {
            let r = self.div_rem(10);
            digits.push(b'0' + r as u8);
        }
        digits.reverse();
        String::from_utf8(digits).unwrap_or_default()
    }
}

/// Reads an integer as toncenter writes it (`"0x1f"`, `"-0x1"`, decimal
/// strings, JSON numbers) into the stack value types: `Int` when it fits
/// `i128`, `Uint256` for larger non-negative values below 2^256.
pub(crate) fn parse_int(v: &Value) -> WireResult<StackValue> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        other => return Err(format!("not an integer: {}", short(other))),
    };
    let (neg, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(&text)),
    };
    let (radix, digits) = match rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X")) {
        Some(h) => (16u64, h),
        None => (10u64, rest),
    };
    if digits.is_empty() || digits.len() > 100 {
        return Err(format!("not an integer: {text:?}"));
    }
    let mut big = Big::default();
    for c in digits.chars() {
        let d = c
            .to_digit(radix as u32)
            .ok_or_else(|| format!("not an integer: {text:?}"))?;
        if !big.mul_add(radix, u64::from(d)) {
            return Err(format!("integer {text} is too large"));
        }
    }
    if neg {
        // Magnitudes up to 2^127 fit a negative i128.
        if let Some(m) = big.to_i128() {
            return Ok(StackValue::Int(-m));
        }
        let min = {
            let mut b = Big::default();
            b.0[1] = 1 << 63;
            b
        };
        if big == min {
            return Ok(StackValue::Int(i128::MIN));
        }
        return Err(format!("integer {text} does not fit the stack value types"));
    }
    if let Some(i) = big.to_i128() {
        return Ok(StackValue::Int(i));
    }
    big.to_be32()
        .map(StackValue::Uint256)
        .ok_or_else(|| format!("integer {text} does not fit the stack value types"))
}

/// `hex()` of Python, as toncenter writes `num` entries: `0x1f`, `-0x1`.
fn int_hex(i: i128) -> String {
    if i < 0 {
        format!("-0x{:x}", i.unsigned_abs())
    } else {
        format!("0x{i:x}")
    }
}

fn uint256_hex(b: &[u8; 32]) -> String {
    let h = hex::encode(b);
    let t = h.trim_start_matches('0');
    if t.is_empty() {
        "0x0".into()
    } else {
        format!("0x{t}")
    }
}

fn uint256_decimal(b: &[u8; 32]) -> String {
    Big::from_be32(b).to_decimal()
}

// ---------------------------------------------------------------- stacks

struct StackReader {
    entries: usize,
}

impl StackReader {
    fn count(&mut self) -> WireResult<()> {
        self.entries += 1;
        if self.entries > MAX_STACK_ENTRIES {
            return Err(format!("stack has more than {MAX_STACK_ENTRIES} entries"));
        }
        Ok(())
    }

    fn cell_bytes(v: &Value, what: &str) -> WireResult<Cell> {
        match v {
            Value::String(s) => b64_cell(s, what),
            Value::Object(o) => match o.get("bytes") {
                Some(Value::String(s)) => b64_cell(s, what),
                _ => Err(format!("{what} entry without `bytes`")),
            },
            other => Err(format!("bad {what} entry: {}", short(other))),
        }
    }

    /// A top-level entry: `[type, value]`.
    fn pair(&mut self, v: &Value, depth: usize) -> WireResult<StackValue> {
        self.count()?;
        let arr = v
            .as_array()
            .ok_or_else(|| format!("stack entry is not a [type, value] pair: {}", short(v)))?;
        let kind = arr
            .first()
            .and_then(Value::as_str)
            .ok_or_else(|| format!("stack entry without a type: {}", short(v)))?;
        let value = arr.get(1).unwrap_or(&Value::Null);
        match kind {
            "num" | "number" | "int" => parse_int(value),
            "cell" | "tvm.Cell" => Self::cell_bytes(value, "cell").map(StackValue::Cell),
            "slice" | "tvm.Slice" => Self::cell_bytes(value, "slice").map(StackValue::Slice),
            "null" => Ok(StackValue::Null),
            "tuple" | "tvm.Tuple" => self.elements(value, depth).map(StackValue::Tuple),
            "list" | "tvm.List" => {
                let items = self.elements(value, depth)?;
                cons_list(items)
            }
            other => Err(format!("unsupported stack entry type {other:?}")),
        }
    }

    /// The `elements` of a `tvm.tuple` / `tvm.list` object.
    fn elements(&mut self, v: &Value, depth: usize) -> WireResult<Vec<StackValue>> {
        if depth >= MAX_STACK_DEPTH {
            return Err(format!("stack nested deeper than {MAX_STACK_DEPTH}"));
        }
        let items = match v {
            Value::Object(o) => o
                .get("elements")
                .and_then(Value::as_array)
                .ok_or_else(|| "tuple or list without `elements`".to_string())?,
            Value::Array(a) => a,
            other => return Err(format!("bad tuple or list: {}", short(other))),
        };
        let mut out = Vec::with_capacity(items.len().min(256));
        for item in items {
            out.push(self.object(item, depth + 1)?);
        }
        Ok(out)
    }

    /// A nested entry: a `tvm.stackEntry*` object (or a bare `tvm.*` value).
    fn object(&mut self, v: &Value, depth: usize) -> WireResult<StackValue> {
        if v.is_array() {
            return self.pair(v, depth);
        }
        self.count()?;
        let kind = v
            .get("@type")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("stack entry without @type: {}", short(v)))?;
        match kind {
            "tvm.stackEntryNumber" => {
                let n = field(v, "number")?;
                self.entries -= 1;
                self.object(n, depth)
            }
            "tvm.numberDecimal" => parse_int(field(v, "number")?),
            "tvm.stackEntryCell" => {
                Self::cell_bytes(field(v, "cell")?, "cell").map(StackValue::Cell)
            }
            "tvm.cell" | "tvm.Cell" => Self::cell_bytes(v, "cell").map(StackValue::Cell),
            "tvm.stackEntrySlice" => {
                Self::cell_bytes(field(v, "slice")?, "slice").map(StackValue::Slice)
            }
            "tvm.slice" | "tvm.Slice" => Self::cell_bytes(v, "slice").map(StackValue::Slice),
            "tvm.stackEntryTuple" => self
                .elements(field(v, "tuple")?, depth)
                .map(StackValue::Tuple),
            "tvm.tuple" => self.elements(v, depth).map(StackValue::Tuple),
            "tvm.stackEntryList" => {
                let items = self.elements(field(v, "list")?, depth)?;
                cons_list(items)
            }
            "tvm.list" => {
                let items = self.elements(v, depth)?;
                cons_list(items)
            }
            "tvm.stackEntryUnsupported" => Err(
                "the stack holds a value toncenter cannot show (builder or continuation)".into(),
            ),
            other => Err(format!("unsupported stack entry type {other:?}")),
        }
    }
}

/// tonlib shows a TVM list (`[a, [b, … null]]`) as `tvm.list` with its items,
/// and `null` as the empty list; this rebuilds the pairs.
fn cons_list(items: Vec<StackValue>) -> WireResult<StackValue> {
    if items.len() > MAX_LIST_LEN {
        return Err(format!("list longer than {MAX_LIST_LEN}"));
    }
    let mut acc = StackValue::Null;
    for item in items.into_iter().rev() {
        acc = StackValue::Tuple(vec![item, acc]);
    }
    Ok(acc)
}

/// Reads a stack (`smc.runResult.stack`, or `runGetMethod`'s `stack`
/// argument): `[["num","0x2a"], ["cell",{"bytes":…}], ["tuple",{…}], …]`.
pub(crate) fn decode_stack(v: &Value) -> WireResult<Vec<StackValue>> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        other => return Err(format!("stack is not an array: {}", short(other))),
    };
    let mut r = StackReader { entries: 0 };
    let mut out = Vec::with_capacity(items.len().min(256));
    for item in items {
        out.push(r.pair(item, 0)?);
    }
    Ok(out)
}

/// The items of `v` if it is a TVM list (`null`, or a pair whose second item
/// is a list), as tonlib decides it.
fn as_list(v: &StackValue) -> Option<Vec<&StackValue>> {
    let mut out = Vec::new();
    let mut node = v;
    loop {
        match node {
            StackValue::Null => return Some(out),
            StackValue::Tuple(items) if items.len() == 2 => {
                out.push(&items[0]);
                node = &items[1];
            }
            _ => return None,
        }
    }
}

/// A nested stack entry as a tonlib object (`tvm.stackEntryNumber`, …).
fn entry_object(v: &StackValue) -> Value {
    match v {
        StackValue::Int(i) => json!({
            "@type": "tvm.stackEntryNumber",
            "number": {"@type": "tvm.numberDecimal", "number": i.to_string()},
        }),
        StackValue::Uint256(b) => json!({
            "@type": "tvm.stackEntryNumber",
            "number": {"@type": "tvm.numberDecimal", "number": uint256_decimal(b)},
        }),
        StackValue::Cell(c) => json!({
            "@type": "tvm.stackEntryCell",
            "cell": {"@type": "tvm.cell", "bytes": cell_b64(c)},
        }),
        StackValue::Slice(c) => json!({
            "@type": "tvm.stackEntrySlice",
            "slice": {"@type": "tvm.slice", "bytes": cell_b64(c)},
        }),
        StackValue::Null | StackValue::Tuple(_) => match as_list(v) {
            Some(items) => json!({
                "@type": "tvm.stackEntryList",
                "list": {"@type": "tvm.list", "elements": items.into_iter().map(entry_object).collect::<Vec<_>>()},
            }),
            None => {
                let items = match v {
                    StackValue::Tuple(items) => items.iter().map(entry_object).collect(),
                    _ => Vec::new(),
                };
                json!({
                    "@type": "tvm.stackEntryTuple",
                    "tuple": {"@type": "tvm.tuple", "elements": items},
                })
            }
        },
    }
}

/// Writes a result stack as toncenter does: numbers as `["num", hex]`, cells
/// as `["cell", {"bytes": …}]`, tuples and lists as tonlib objects (`null` is
/// the empty list). Slices are written as `["slice", {"bytes": …}]` (toncenter
/// itself labels them `cell`; `slice` keeps the distinction and is read by
/// toncenter clients such as `@ton/ton`).
pub(crate) fn encode_stack(stack: &[StackValue]) -> Value {
    Value::Array(
        stack
            .iter()
            .map(|v| match v {
                StackValue::Int(i) => json!(["num", int_hex(*i)]),
                StackValue::Uint256(b) => json!(["num", uint256_hex(b)]),
                StackValue::Cell(c) => json!(["cell", {"bytes": cell_b64(c)}]),
                StackValue::Slice(c) => json!(["slice", {"bytes": cell_b64(c)}]),
                StackValue::Null | StackValue::Tuple(_) => {
                    let obj = entry_object(v);
                    match (obj.get("list"), obj.get("tuple")) {
                        (Some(l), _) => json!(["list", l]),
                        (_, Some(t)) => json!(["tuple", t]),
                        _ => obj,
                    }
                }
            })
            .collect(),
    )
}

/// Writes get-method arguments as toncenter's `runGetMethod` takes them:
/// `["num", "…"]`, `["tvm.Cell", boc]`, `["tvm.Slice", boc]`. toncenter takes
/// no tuples or nulls as arguments.
pub(crate) fn encode_args(args: &[StackValue]) -> WireResult<Value> {
    let mut out = Vec::with_capacity(args.len());
    for a in args {
        out.push(match a {
            StackValue::Int(i) => json!(["num", i.to_string()]),
            StackValue::Uint256(b) => json!(["num", uint256_hex(b)]),
            StackValue::Cell(c) => json!(["tvm.Cell", cell_b64(c)]),
            StackValue::Slice(c) => json!(["tvm.Slice", cell_b64(c)]),
            StackValue::Null | StackValue::Tuple(_) => {
                return Err(
                    "toncenter's runGetMethod takes only numbers, cells and slices as arguments"
                        .into(),
                )
            }
        });
    }
    Ok(Value::Array(out))
}

// ---------------------------------------------------------------- transactions

/// Reads one transaction of `account` from a `getTransactions` answer
/// (`raw.transaction` or `ext.transaction`).
///
/// With the raw transaction in `data` (toncenter always sends it), everything
/// is read from that cell, which must hash to `transaction_id.hash` and
/// belong to `account`. Without it, the JSON fields are read: messages from
/// `msg_data` (checked against `body_hash` when given) and the outcome from
/// `success` or `exit_code` when given, else the transaction is taken as
/// successful (`raw.transaction` JSON carries no outcome).
pub(crate) fn decode_transaction(
    v: &Value,
    account: &StdAddr,
) -> WireResult<(Transaction, Option<Cell>)> {
    let id = tx_id(field(v, "transaction_id")?)
        .map_err(|e| format!("transaction_id: {e}"))?
        .ok_or_else(|| "transaction with logical time 0".to_string())?;
    let at = |e: String| format!("transaction {}: {e}", id.lt);
    if let Some(Value::String(data)) = v.get("data") {
        if !data.trim().is_empty() {
            let cell = b64_cell(data, "data").map_err(at)?;
            let tlb = cell
                .parse::<TlbTransaction>()
                .map_err(|e| at(format!("`data` is not a transaction: {e}")))?;
            if tlb.account != account.address {
                return Err(at(format!(
                    "`data` is a transaction of {}, not of {}",
                    hex::encode(tlb.account.0),
                    crate::address::to_raw(account)
                )));
            }
            let tx = Transaction::from_cell(&cell).map_err(|e| at(e.to_string()))?;
            if tx.id != id {
                return Err(at(format!(
                    "`data` is transaction {}:{}, not the one named by transaction_id",
                    tx.id.lt,
                    hex::encode(tx.id.hash)
                )));
            }
            return Ok((tx, Some(cell)));
        }
    }
    let utime = u32::try_from(u64_value(field(v, "utime")?, "utime").map_err(at)?)
        .map_err(|_| at("`utime` does not fit 32 bits".into()))?;
    let in_msg = match v.get("in_msg") {
        None | Some(Value::Null) => None,
        Some(m) => decode_message(m).map_err(|e| at(format!("in_msg: {e}")))?,
    };
    let mut out_msgs = Vec::new();
    if let Some(list) = v.get("out_msgs") {
        let list = list
            .as_array()
            .ok_or_else(|| at("`out_msgs` is not an array".into()))?;
        for m in list {
            if let Some(msg) = decode_message(m).map_err(|e| at(format!("out_msgs: {e}")))? {
                out_msgs.push(msg);
            }
        }
    }
    let success = match (v.get("success"), v.get("exit_code")) {
        (Some(Value::Bool(b)), _) => *b,
        (_, Some(code)) if !code.is_null() => {
            let c = i64_value(code, "exit_code").map_err(at)?;
            c == 0 || c == 1
        }
        _ => true,
    };
    Ok((
        Transaction {
            id,
            utime,
            in_msg,
            out_msgs,
            success,
        },
        None,
    ))
}

/// Reads a `raw.message` / `ext.message` from its JSON fields; `None` for the
/// empty message toncenter writes when a transaction has none.
fn decode_message(v: &Value) -> WireResult<Option<TxMessage>> {
    let source = opt_address(v.get("source"), "source")?;
    let dest = opt_address(v.get("destination"), "destination")?;
    if source.is_none() && dest.is_none() {
        return Ok(None);
    }
    let value = match v.get("value") {
        None | Some(Value::Null) => 0,
        Some(x) => u64_value(x, "value")?,
    };
    let body = match v.get("msg_data") {
        None | Some(Value::Null) => Cell::empty_cell(),
        Some(d) => match d.get("@type").and_then(Value::as_str) {
            Some("msg.dataRaw") => match d.get("body") {
                Some(Value::String(s)) if !s.trim().is_empty() => b64_cell(s, "msg_data.body")?,
                _ => Cell::empty_cell(),
            },
            Some("msg.dataText") => {
                let text = match d.get("text") {
                    Some(Value::String(s)) => b64_bytes(s, "msg_data.text")?,
                    _ => Vec::new(),
                };
                comment_cell(&text)?
            }
            Some(other) => return Err(format!("message data of type {other:?} cannot be read")),
            None => return Err("`msg_data` without @type".into()),
        },
    };
    if let Some(Value::String(h)) = v.get("body_hash") {
        if !h.trim().is_empty() {
            let expected = hash32(h, "body_hash")?;
            if body.repr_hash().0 != expected {
                return Err("the body does not hash to `body_hash`".into());
            }
        }
    }
    Ok(Some(TxMessage {
        source,
        dest,
        value,
        body,
    }))
}

/// A text comment body (`0x00000000` and the text), as toncenter's
/// `msg.dataText` stands for; texts longer than one cell continue in a chain
/// of references.
fn comment_cell(text: &[u8]) -> WireResult<Cell> {
    let mut chunks: Vec<&[u8]> = Vec::new();
    let first = text.len().min(123);
    chunks.push(&text[..first]);
    let mut rest = &text[first..];
    while !rest.is_empty() {
        let n = rest.len().min(127);
        chunks.push(&rest[..n]);
        rest = &rest[n..];
        if chunks.len() > 1024 {
            return Err("comment too long".into());
        }
    }
    let build = |prefix: bool, bytes: &[u8], next: Option<Cell>| -> WireResult<Cell> {
        let mut b = CellBuilder::new();
        if prefix {
            b.store_u32(0).map_err(|e| e.to_string())?;
        }
        b.store_raw(bytes, (bytes.len() * 8) as u16)
            .map_err(|e| e.to_string())?;
        if let Some(n) = next {
            b.store_reference(n).map_err(|e| e.to_string())?;
        }
        b.build().map_err(|e| e.to_string())
    };
    let mut next: Option<Cell> = None;
    for (i, chunk) in chunks.iter().enumerate().rev() {
        next = Some(build(i == 0, chunk, next)?);
    }
    next.ok_or_else(|| "empty comment".to_string())
}

/// Writes a `raw.message`. With the message cell, the forwarding fee,
/// creation time and StateInit come from it; without, they are 0 and empty.
fn encode_message(msg: Option<&TxMessage>, cell: Option<&Cell>) -> Value {
    let Some(m) = msg else {
        return json!({
            "@type": "raw.message",
            "source": "",
            "destination": "",
            "value": "0",
            "fwd_fee": "0",
            "ihr_fee": "0",
            "created_lt": "0",
            "body_hash": b64(&Cell::empty_cell().repr_hash().0),
            "msg_data": {"@type": "msg.dataRaw", "body": cell_b64(&Cell::empty_cell()), "init_state": ""},
            "message": "",
        });
    };
    let (mut fwd_fee, mut created_lt, mut init_state) = (0u128, 0u64, String::new());
    if let Some(parsed) = cell.and_then(|c| c.parse::<OwnedMessage>().ok()) {
        if let MsgInfo::Int(i) = &parsed.info {
            fwd_fee = i.fwd_fee.into_inner();
            created_lt = i.created_lt;
        } else if let MsgInfo::ExtOut(e) = &parsed.info {
            created_lt = e.created_lt;
        }
        if let Some(init) = &parsed.init {
            if let Ok(c) = CellBuilder::build_from(init) {
                init_state = cell_b64(&c);
            }
        }
    }
    let addr = |a: &Option<StdAddr>| a.as_ref().map(address_json).unwrap_or_default();
    let body_bits = {
        let d = m.body.data();
        b64(&d[..d.len().min(m.body.bit_len().div_ceil(8) as usize)])
    };
    json!({
        "@type": "raw.message",
        "source": addr(&m.source),
        "destination": addr(&m.dest),
        "value": m.value.to_string(),
        "fwd_fee": fwd_fee.to_string(),
        "ihr_fee": "0",
        "created_lt": created_lt.to_string(),
        "body_hash": b64(&m.body.repr_hash().0),
        "msg_data": {"@type": "msg.dataRaw", "body": cell_b64(&m.body), "init_state": init_state},
        "message": body_bits,
    })
}

/// Writes a `raw.transaction` of `account` as toncenter does; the raw
/// transaction goes into `data` when the backend has it, and then the fees
/// and message details are read from it.
pub(crate) fn encode_transaction(
    account: &StdAddr,
    tx: &Transaction,
    cell: Option<&Cell>,
) -> Value {
    let parsed = cell.and_then(|c| c.parse::<TlbTransaction>().ok());
    let (fee, storage_fee) = match &parsed {
        Some(t) => {
            let storage = match t.load_info() {
                Ok(TxInfo::Ordinary(o)) => o
                    .storage_phase
                    .as_ref()
                    .map_or(0, |s| s.storage_fees_collected.into_inner()),
                _ => 0,
            };
            (t.total_fees.tokens.into_inner(), storage)
        }
        None => (0, 0),
    };
    let in_cell = parsed.as_ref().and_then(|t| t.in_msg.clone());
    let out_cells: Vec<Cell> = parsed
        .as_ref()
        .map(|t| t.out_msgs.values().filter_map(|c| c.ok()).collect())
        .unwrap_or_default();
    let mut obj = Map::new();
    obj.insert("@type".into(), json!("raw.transaction"));
    obj.insert(
        "address".into(),
        json!({"@type": "accountAddress", "account_address": address_json(account)}),
    );
    obj.insert("utime".into(), json!(tx.utime));
    if let Some(c) = cell {
        obj.insert("data".into(), json!(cell_b64(c)));
    }
    obj.insert("transaction_id".into(), tx_id_json(Some(tx.id)));
    obj.insert("fee".into(), json!(fee.to_string()));
    obj.insert("storage_fee".into(), json!(storage_fee.to_string()));
    obj.insert(
        "other_fee".into(),
        json!(fee.saturating_sub(storage_fee).to_string()),
    );
    obj.insert(
        "in_msg".into(),
        encode_message(tx.in_msg.as_ref(), in_cell.as_ref()),
    );
    obj.insert(
        "out_msgs".into(),
        Value::Array(
            tx.out_msgs
                .iter()
                .enumerate()
                .map(|(i, m)| encode_message(Some(m), out_cells.get(i)))
                .collect(),
        ),
    );
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_read_as_toncenter_writes_them() {
        assert_eq!(parse_int(&json!("0x2a")).unwrap(), StackValue::Int(42));
        assert_eq!(parse_int(&json!("-0x1")).unwrap(), StackValue::Int(-1));
        assert_eq!(parse_int(&json!("-12")).unwrap(), StackValue::Int(-12));
        assert_eq!(parse_int(&json!(7)).unwrap(), StackValue::Int(7));
        let max = format!("0x{}", "f".repeat(64));
        assert_eq!(
            parse_int(&json!(max)).unwrap(),
            StackValue::Uint256([0xff; 32])
        );
        assert!(parse_int(&json!(format!("0x1{}", "0".repeat(64)))).is_err());
        assert_eq!(
            parse_int(&json!(format!("-{}", i128::MAX))).unwrap(),
            StackValue::Int(-i128::MAX)
        );
        assert_eq!(
            parse_int(&json!(i128::MIN.to_string())).unwrap(),
            StackValue::Int(i128::MIN)
        );
        assert!(parse_int(&json!(format!("-0x{}", "f".repeat(40)))).is_err());
        for bad in ["", "0x", "--1", "1e5", "0xg", "12 3"] {
            assert!(parse_int(&json!(bad)).is_err(), "{bad}");
        }
        assert!(parse_int(&json!("9".repeat(1000))).is_err());
    }

    #[test]
    fn numbers_round_trip_through_hex_and_decimal() {
        let mut b = [0u8; 32];
        b[0] = 0x80;
        b[31] = 5;
        for v in [
            StackValue::Int(0),
            StackValue::Int(-1),
            StackValue::Int(i128::MIN),
            StackValue::Int(i128::MAX),
            StackValue::Uint256(b),
        ] {
            let top = encode_stack(std::slice::from_ref(&v));
            assert_eq!(decode_stack(&top).unwrap(), vec![v.clone()]);
            let nested = encode_stack(&[StackValue::Tuple(vec![v.clone()])]);
            assert_eq!(
                decode_stack(&nested).unwrap(),
                vec![StackValue::Tuple(vec![v])]
            );
        }
    }

    #[test]
    fn lists_and_nulls_follow_tonlib() {
        let list = StackValue::Tuple(vec![
            StackValue::Int(1),
            StackValue::Tuple(vec![StackValue::Int(2), StackValue::Null]),
        ]);
        let stack = vec![
            StackValue::Null,
            list.clone(),
            StackValue::Tuple(vec![]),
            StackValue::Tuple(vec![StackValue::Int(1), StackValue::Int(2)]),
        ];
        let json = encode_stack(&stack);
        assert_eq!(json[0][0], "list");
        assert_eq!(json[1][0], "list");
        assert_eq!(json[1][1]["elements"].as_array().unwrap().len(), 2);
        assert_eq!(json[2][0], "tuple");
        assert_eq!(json[3][0], "tuple");
        assert_eq!(decode_stack(&json).unwrap(), stack);
    }

    #[test]
    fn hostile_stacks_are_errors() {
        let mut deep = json!({"@type": "tvm.tuple", "elements": []});
        for _ in 0..200 {
            deep = json!({"@type": "tvm.stackEntryTuple", "tuple": {"@type": "tvm.tuple", "elements": [deep]}});
        }
        assert!(decode_stack(&json!([["tuple", {"elements": [deep]}]])).is_err());
        let long: Vec<Value> = (0..5000)
            .map(|_| json!({"@type": "tvm.stackEntryNumber", "number": {"number": "1"}}))
            .collect();
        assert!(decode_stack(&json!([["list", {"elements": long}]])).is_err());
        for bad in [
            json!({}),
            json!([1]),
            json!([["num"]]),
            json!([["cell", {"bytes": "!!"}]]),
            json!([["cell", 5]]),
            json!([["builder", {}]]),
            json!([["tuple", {"elements": [{"@type": "tvm.stackEntryUnsupported"}]}]]),
        ] {
            assert!(decode_stack(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn comments_are_rebuilt_with_their_prefix() {
        let c = comment_cell(b"hi").unwrap();
        assert_eq!(c.bit_len(), 32 + 16);
        let long = vec![b'a'; 300];
        let c = comment_cell(&long).unwrap();
        assert_eq!(c.reference_count(), 1);
    }
}
