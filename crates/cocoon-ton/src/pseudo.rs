//! COCOON's pseudo root config (`rootConfig.pseudo`, the `--disable-ton` file,
//! spec §6.5), read with the TL-JSON rules of §2.6: every field optional
//! (missing → zero/empty), unknown keys ignored, integers as JSON numbers or
//! numeric strings, `int256` values base64 (exactly 32 bytes), codes as hex BOC.
//!
//! The same fields may also be given as TOML.
//!
//! Fields: `proxy_hashes`, `worker_hashes`, `model_hashes` (base64),
//! `model_types` (strings, hashed as `sha256(name before '@')`),
//! `registered_proxies` (`[{seqno, address}]`), `price_per_token`,
//! `worker_fee_per_token`, `last_proxy_seqno`, `version`, `params_version`,
//! `proxy_sc_code`/`worker_sc_code`/`client_sc_code` (hex BOC; empty gives an
//! empty cell, as in the C++), `root_owner_address`, and since 9060ce5
//! `registered_public_keys` (`[{public_key (base64), key_type, expire_at}]`) and
//! `key_manager_address` (`"ip:port"`). The rest is fixed as in the
//! C++ `load_from_tl(rootConfig_pseudo)`: struct_version 1, unique_id 13,
//! is_test true, delays 600/300 s, stakes 1 TON, multipliers 10000.

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tycho_types::cell::{Cell, CellBuilder};
use tycho_types::models::StdAddr;

use crate::address::parse_addr;
use crate::cells::from_boc_hex;
use crate::error::{Result, TonError};
use crate::root::{
    CocoonParams, KeyManagerInfo, RegisteredKey, RegisteredProxy, RootConfig, VerifiedKeys,
};

fn cfg(msg: impl Into<String>) -> TonError {
    TonError::Config(msg.into())
}

fn int_of(v: &Value, name: &str) -> Result<i64> {
    match v {
        Value::Null => Ok(0),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().and_then(|u| i64::try_from(u).ok()))
            .ok_or_else(|| cfg(format!("{name}: not an integer"))),
        Value::String(s) if s.is_empty() => Ok(0),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|e| cfg(format!("{name}: {e}"))),
        Value::Bool(b) => Ok(i64::from(*b)),
        _ => Err(cfg(format!("{name}: expected a number"))),
    }
}

fn field<'a>(obj: &'a Value, name: &str) -> &'a Value {
    obj.get(name).unwrap_or(&Value::Null)
}

fn int_field(obj: &Value, name: &str) -> Result<i64> {
    int_of(field(obj, name), name)
}

fn u32_field(obj: &Value, name: &str) -> Result<u32> {
    u32::try_from(int_field(obj, name)?).map_err(|_| cfg(format!("{name}: out of range")))
}

fn u64_field(obj: &Value, name: &str) -> Result<u64> {
    u64::try_from(int_field(obj, name)?).map_err(|_| cfg(format!("{name}: negative")))
}

fn str_field(obj: &Value, name: &str) -> Result<String> {
    match field(obj, name) {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        _ => Err(cfg(format!("{name}: expected a string"))),
    }
}

fn array_field<'a>(obj: &'a Value, name: &str) -> Result<&'a [Value]> {
    match field(obj, name) {
        Value::Null => Ok(&[]),
        Value::Array(a) => Ok(a.as_slice()),
        _ => Err(cfg(format!("{name}: expected an array"))),
    }
}

/// Decodes a TL-JSON `int256` (base64 of exactly 32 bytes; both alphabets,
/// padding optional).
pub fn decode_int256(s: &str) -> Result<[u8; 32]> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let s = s.trim();
    let bytes = STANDARD
        .decode(s)
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .or_else(|_| URL_SAFE.decode(s))
        .or_else(|_| URL_SAFE_NO_PAD.decode(s))
        .map_err(|e| cfg(format!("int256 {s:?}: {e}")))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| cfg(format!("int256 {s:?}: {} bytes, expected 32", b.len())))
}

fn hashes(obj: &Value, name: &str) -> Result<Vec<[u8; 32]>> {
    array_field(obj, name)?
        .iter()
        .map(|v| match v {
            Value::String(s) => decode_int256(s),
            _ => Err(cfg(format!("{name}: expected base64 strings"))),
        })
        .collect()
}

fn code(obj: &Value, name: &str) -> Result<Cell> {
    let hex_str = str_field(obj, name)?;
    if hex_str.trim().is_empty() {
        return Ok(CellBuilder::new().build()?);
    }
    from_boc_hex(&hex_str).map_err(|e| cfg(format!("{name}: {e}")))
}

/// The model hash COCOON derives from a `model_types` entry: `sha256` of the
/// name up to the first `@`.
pub fn model_type_hash(model: &str) -> [u8; 32] {
    let name = model.split('@').next().unwrap_or(model);
    Sha256::digest(name.as_bytes()).into()
}

/// Builds a [`RootConfig`] from a parsed JSON value in `rootConfig.pseudo` form.
pub fn root_config_from_value(obj: &Value) -> Result<RootConfig> {
    if !obj.is_object() {
        return Err(cfg("pseudo root config must be an object"));
    }
    let mut model_hashes = hashes(obj, "model_hashes")?;
    for m in array_field(obj, "model_types")? {
        let Value::String(s) = m else {
            return Err(cfg("model_types: expected strings"));
        };
        model_hashes.push(model_type_hash(s));
    }
    let mut proxy_hashes = hashes(obj, "proxy_hashes")?;
    let mut worker_hashes = hashes(obj, "worker_hashes")?;
    proxy_hashes.sort();
    worker_hashes.sort();
    model_hashes.sort();

    let mut registered_proxies = Vec::new();
    for p in array_field(obj, "registered_proxies")? {
        let rp = RegisteredProxy {
            seqno: u32_field(p, "seqno")?,
            address: str_field(p, "address")?,
        };
        if rp.endpoints().is_none() {
            return Err(cfg(format!("cannot parse proxy address {:?}", rp.address)));
        }
        registered_proxies.push(rp);
    }

    let owner_str = str_field(obj, "root_owner_address")?;
    let owner: StdAddr =
        parse_addr(&owner_str).map_err(|e| cfg(format!("cannot parse root owner address: {e}")))?;

    let params = CocoonParams {
        params_version: u32_field(obj, "params_version")?,
        price_per_token: u64_field(obj, "price_per_token")?,
        worker_fee_per_token: u64_field(obj, "worker_fee_per_token")?,
        proxy_sc_code: Some(code(obj, "proxy_sc_code")?),
        worker_sc_code: Some(code(obj, "worker_sc_code")?),
        client_sc_code: Some(code(obj, "client_sc_code")?),
        ..CocoonParams::default()
    };
    let mut public_keys = Vec::new();
    for k in array_field(obj, "registered_public_keys")? {
        let Value::String(key) = field(k, "public_key") else {
            return Err(cfg(
                "registered_public_keys: public_key must be a base64 string",
            ));
        };
        let key_type = u32_field(k, "key_type")?;
        public_keys.push(RegisteredKey {
            public_key: decode_int256(key)?,
            key_type: u8::try_from(key_type)
                .map_err(|_| cfg(format!("registered_public_keys: key_type {key_type} > 255")))?,
            expire_at: u32_field(k, "expire_at")?,
        });
    }
    public_keys.sort_by_key(|k| k.public_key);
    let key_manager_address = str_field(obj, "key_manager_address")?;
    Ok(RootConfig {
        owner,
        version: u32_field(obj, "version")?,
        proxy_hashes,
        registered_proxies,
        last_proxy_seqno: u32_field(obj, "last_proxy_seqno")?,
        worker_hashes,
        model_hashes,
        params,
        key_manager: KeyManagerInfo {
            public_keys,
            address: (!key_manager_address.is_empty()).then_some(key_manager_address),
            ..KeyManagerInfo::default()
        },
        verified_keys: VerifiedKeys::default(),
    })
}

/// Parses a pseudo root config from JSON text.
pub fn root_config_from_json(text: &str) -> Result<RootConfig> {
    let v: Value = serde_json::from_str(text).map_err(|e| cfg(format!("bad JSON: {e}")))?;
    root_config_from_value(&v)
}

/// Parses a pseudo root config from TOML text (same field names).
pub fn root_config_from_toml(text: &str) -> Result<RootConfig> {
    let t: toml::Value = toml::from_str(text).map_err(|e| cfg(format!("bad TOML: {e}")))?;
    let v = serde_json::to_value(t).map_err(|e| cfg(format!("TOML to JSON: {e}")))?;
    root_config_from_value(&v)
}

/// Reads a pseudo root config file; `.toml` files are read as TOML, anything
/// else as JSON.
pub fn root_config_from_file(path: &std::path::Path) -> Result<RootConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| cfg(format!("cannot read {}: {e}", path.display())))?;
    if path.extension().is_some_and(|e| e == "toml") {
        root_config_from_toml(&text)
    } else {
        root_config_from_json(&text)
    }
}
