//! The root contract's state: [`CocoonParams`] (the economic parameters and the
//! per-party contract codes) and [`RootConfig`] (everything the runners read from
//! the root's data cell), spec §6.1.
//!
//! The reader is tolerant of the params `struct_version` (0–5) exactly like the
//! C++ `RootContractConfig::load_from_state` of COCOON 9060ce5: multipliers missing in
//! older versions default to 10000, stakes to 1 TON; from 4 the root carries a
//! key-manager cell ([`KeyManagerInfo`]), from 5 a verified-keys cell ([`VerifiedKeys`]).

use std::collections::BTreeMap;
use std::net::SocketAddrV4;

use tycho_types::cell::{Cell, CellBuilder, CellFamily, HashBytes, Store};
use tycho_types::dict::{Dict, RawDict};
use tycho_types::models::StdAddr;

use crate::cells::{
    expect_end, load_address, load_coins, load_maybe_ref, open, store_address, store_coins,
    store_maybe_ref,
};
use crate::error::{Result, TonError};

/// One TON in nanoTON.
pub const ONE_TON: u64 = 1_000_000_000;
/// Multiplier meaning "×1.0" (multipliers are in 1/10000).
pub const MULTIPLIER_ONE: u32 = 10_000;
/// Highest params `struct_version` this crate (and the C++ reader) understands.
pub const MAX_STRUCT_VERSION: u8 = 5;

/// Which contract codes a params cell carries. The C++ names these by a bit
/// mask: 1 = proxy code, 2 = worker code, 4 = client code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeMask(pub u8);

impl CodeMask {
    /// All three codes: the root's own params cell (mask 7).
    pub const ROOT: CodeMask = CodeMask(7);
    /// Worker and client code, no proxy code: what the proxy contract stores (mask 6).
    pub const PROXY: CodeMask = CodeMask(6);
    /// No code: what client and worker contracts store (mask 0).
    pub const NONE: CodeMask = CodeMask(0);
}

/// `CocoonParams`: the economic parameters and contract codes kept by the root
/// and copied (without some codes) into every per-party contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CocoonParams {
    /// Layout version of this struct (0..=5; 4 and 5 keep the layout of 3 and add cells to
    /// the root's storage).
    pub struct_version: u8,
    /// Bumped whenever prices or codes change; per-party addresses depend on it.
    pub params_version: u32,
    /// Deployment id.
    pub unique_id: u32,
    /// Test deployment flag; must match every runner's `is_test`.
    pub is_test: bool,
    /// nanoTON per adjusted token, paid by clients.
    pub price_per_token: u64,
    /// nanoTON per adjusted token, received by workers.
    pub worker_fee_per_token: u64,
    /// Prompt-token multiplier in 1/10000 (v≥3, else 10000).
    pub prompt_tokens_price_multiplier: u32,
    /// Cached-token multiplier in 1/10000 (v≥2, else 10000).
    pub cached_tokens_price_multiplier: u32,
    /// Completion-token multiplier in 1/10000 (v≥3, else 10000).
    pub completion_tokens_price_multiplier: u32,
    /// Reasoning-token multiplier in 1/10000 (v≥2, else 10000).
    pub reasoning_tokens_price_multiplier: u32,
    /// Seconds between a proxy's close request and close completion.
    pub proxy_delay_before_close: u32,
    /// Seconds between a client's close request and close completion.
    pub client_delay_before_close: u32,
    /// Minimum proxy stake in nanoTON (v≥1, else 1 TON).
    pub min_proxy_stake: u64,
    /// Minimum client stake in nanoTON (v≥1, else 1 TON); the initial stake of a client contract.
    pub min_client_stake: u64,
    /// Proxy contract code.
    pub proxy_sc_code: Option<Cell>,
    /// Worker contract code.
    pub worker_sc_code: Option<Cell>,
    /// Client contract code.
    pub client_sc_code: Option<Cell>,
}

impl Default for CocoonParams {
    /// The fixed values of COCOON's fake-TON mode (§6.5) with price 0.
    fn default() -> Self {
        CocoonParams {
            struct_version: 1,
            params_version: 0,
            unique_id: 13,
            is_test: true,
            price_per_token: 0,
            worker_fee_per_token: 0,
            prompt_tokens_price_multiplier: MULTIPLIER_ONE,
            cached_tokens_price_multiplier: MULTIPLIER_ONE,
            completion_tokens_price_multiplier: MULTIPLIER_ONE,
            reasoning_tokens_price_multiplier: MULTIPLIER_ONE,
            proxy_delay_before_close: 600,
            client_delay_before_close: 300,
            min_proxy_stake: ONE_TON,
            min_client_stake: ONE_TON,
            proxy_sc_code: None,
            worker_sc_code: None,
            client_sc_code: None,
        }
    }
}

impl CocoonParams {
    /// Serializes the params cell with the codes selected by `mask`, exactly as
    /// the C++ `serialize_params_cell(mask)`: fields absent from
    /// `struct_version` are not written; a selected but missing code is written
    /// as an empty `Maybe`.
    pub fn to_cell(&self, mask: CodeMask) -> Result<Cell> {
        if self.struct_version > MAX_STRUCT_VERSION {
            return Err(TonError::Range(format!(
                "params struct_version {} > {MAX_STRUCT_VERSION}",
                self.struct_version
            )));
        }
        let v = self.struct_version;
        let mut b = CellBuilder::new();
        b.store_u8(v)?;
        b.store_u32(self.params_version)?;
        b.store_u32(self.unique_id)?;
        b.store_bit(self.is_test)?;
        store_coins(&mut b, self.price_per_token)?;
        store_coins(&mut b, self.worker_fee_per_token)?;
        if v >= 3 {
            b.store_u32(self.prompt_tokens_price_multiplier)?;
        }
        if v >= 2 {
            b.store_u32(self.cached_tokens_price_multiplier)?;
        }
        if v >= 3 {
            b.store_u32(self.completion_tokens_price_multiplier)?;
        }
        if v >= 2 {
            b.store_u32(self.reasoning_tokens_price_multiplier)?;
        }
        b.store_u32(self.proxy_delay_before_close)?;
        b.store_u32(self.client_delay_before_close)?;
        if v >= 1 {
            store_coins(&mut b, self.min_proxy_stake)?;
            store_coins(&mut b, self.min_client_stake)?;
        }
        let pick = |bit: u8, c: &Option<Cell>| if mask.0 & bit != 0 { c.clone() } else { None };
        store_maybe_ref(&mut b, pick(1, &self.proxy_sc_code).as_ref())?;
        store_maybe_ref(&mut b, pick(2, &self.worker_sc_code).as_ref())?;
        store_maybe_ref(&mut b, pick(4, &self.client_sc_code).as_ref())?;
        Ok(b.build()?)
    }

    /// Parses a params cell of any `struct_version` up to 5. Extra data is an error.
    pub fn from_cell(cell: &Cell) -> Result<Self> {
        let mut s = open(cell)?;
        let struct_version = s.load_u8()?;
        if struct_version > MAX_STRUCT_VERSION {
            return Err(TonError::layout(
                "params",
                format!("unexpected params struct version: {struct_version}"),
            ));
        }
        let v = struct_version;
        let params_version = s.load_u32()?;
        let unique_id = s.load_u32()?;
        let is_test = s.load_bit()?;
        let price_per_token = load_coins(&mut s)?;
        let worker_fee_per_token = load_coins(&mut s)?;
        let mut p = CocoonParams {
            struct_version,
            params_version,
            unique_id,
            is_test,
            price_per_token,
            worker_fee_per_token,
            ..CocoonParams::default()
        };
        if v >= 3 {
            p.prompt_tokens_price_multiplier = s.load_u32()?;
        }
        if v >= 2 {
            p.cached_tokens_price_multiplier = s.load_u32()?;
        }
        if v >= 3 {
            p.completion_tokens_price_multiplier = s.load_u32()?;
        }
        if v >= 2 {
            p.reasoning_tokens_price_multiplier = s.load_u32()?;
        }
        p.proxy_delay_before_close = s.load_u32()?;
        p.client_delay_before_close = s.load_u32()?;
        if v >= 1 {
            p.min_proxy_stake = load_coins(&mut s)?;
            p.min_client_stake = load_coins(&mut s)?;
        }
        p.proxy_sc_code = load_maybe_ref(&mut s)?;
        p.worker_sc_code = load_maybe_ref(&mut s)?;
        p.client_sc_code = load_maybe_ref(&mut s)?;
        expect_end(&s, "params cell")?;
        Ok(p)
    }

    /// `price / fee` helper from §5.1: `stake_tokens`-style division where a zero
    /// price counts as 10^12 tokens (the C++ `safe_div`).
    pub fn tokens_for(&self, nanoton: u64) -> u64 {
        nanoton
            .checked_div(self.price_per_token)
            .unwrap_or(1_000_000_000_000)
    }
}

/// A registered proxy: `seqno` (dict key) and its `ProxyInfo` text
/// `"ip:port[ ip:port]"` (first for workers, second for clients).
///
/// Entries read from the root whose text does not parse are kept here (with
/// [`RegisteredProxy::endpoints`] giving `None`); the C++ reader drops them,
/// so callers choosing a proxy should skip those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredProxy {
    /// Key in the root's registry.
    pub seqno: u32,
    /// The raw text.
    pub address: String,
}

impl RegisteredProxy {
    /// Parses the text into (address for workers, address for clients), as the
    /// C++ does: one address means both; surrounding `[..]` is stripped; IPv4 only.
    pub fn endpoints(&self) -> Option<(SocketAddrV4, SocketAddrV4)> {
        let parse = |t: &str| -> Option<SocketAddrV4> {
            let t = t
                .strip_prefix('[')
                .and_then(|x| x.strip_suffix(']'))
                .unwrap_or(t);
            t.parse().ok()
        };
        match self.address.split_once(' ') {
            None => {
                let a = parse(&self.address)?;
                Some((a, a))
            }
            Some((w, c)) => Some((parse(w)?, parse(c)?)),
        }
    }
}

/// Value of a registered-proxy dict entry: `type:bit(0) len:uint7 bytes[len]`.
struct ProxyInfoValue<'a>(&'a str);

impl Store for ProxyInfoValue<'_> {
    fn store_into(
        &self,
        b: &mut CellBuilder,
        _: &dyn tycho_types::cell::CellContext,
    ) -> Result<(), tycho_types::error::Error> {
        let bytes = self.0.as_bytes();
        if bytes.len() > 127 {
            return Err(tycho_types::error::Error::IntOverflow);
        }
        b.store_bit_zero()?;
        b.store_small_uint(bytes.len() as u8, 7)?;
        b.store_raw(bytes, bytes.len() as u16 * 8)
    }
}

/// Builds the `ProxyInfo` cell slice content used by `root_register_proxy`
/// (`type:bit(0) len:uint7 bytes[len]`), appended to `b`.
pub fn store_proxy_info(b: &mut CellBuilder, text: &str) -> Result<()> {
    ProxyInfoValue(text).store_into(b, tycho_types::cell::Cell::empty_context())?;
    Ok(())
}

/// Reads a `ProxyInfo` text; `Ok(None)` for entries of an unknown type (the
/// C++ skips those).
pub fn load_proxy_info(s: &mut tycho_types::cell::CellSlice<'_>) -> Result<Option<String>> {
    if s.load_bit()? {
        return Ok(None);
    }
    let len = s.load_small_uint(7)? as usize;
    let mut buf = vec![0u8; len];
    s.load_raw(&mut buf, len as u16 * 8)?;
    String::from_utf8(buf)
        .map(Some)
        .map_err(|e| TonError::layout("ProxyInfo", format!("not UTF-8: {e}")))
}

/// Everything the runners need from the root contract (the C++
/// `RootContractConfig`, TL `rootConfig.configV5`, `rootConfig.configV7` since 9060ce5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootConfig {
    /// Root owner (admin) address.
    pub owner: StdAddr,
    /// Bumped on every root change; runners adopt only higher versions.
    pub version: u32,
    /// Allowed proxy image hashes, sorted.
    pub proxy_hashes: Vec<[u8; 32]>,
    /// Registered proxies in seqno order.
    pub registered_proxies: Vec<RegisteredProxy>,
    /// Last seqno given to a registered proxy.
    pub last_proxy_seqno: u32,
    /// Allowed worker image hashes, sorted.
    pub worker_hashes: Vec<[u8; 32]>,
    /// Allowed model hashes, sorted.
    pub model_hashes: Vec<[u8; 32]>,
    /// Economic params and contract codes.
    pub params: CocoonParams,
    /// The keys apps may encrypt requests to and the key manager issuing them
    /// (`struct_version` ≥ 4; empty before).
    pub key_manager: KeyManagerInfo,
    /// Verified proxy, worker and key-manager keys (`struct_version` ≥ 5; empty before).
    pub verified_keys: VerifiedKeys,
}

/// A public key registered on the root for end-to-end encryption (COCOON
/// `PublicKeyInfo`: exactly 40 bits, `key_type:uint8 expire_at:uint32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisteredKey {
    /// Ed25519 public key (the dictionary key).
    pub public_key: [u8; 32],
    /// Kind of key; the key manager issues type 1.
    pub key_type: u8,
    /// Unix time after which the key is no longer valid.
    pub expire_at: u32,
}

/// The root's key-manager cell (`struct_version` ≥ 4, spec 9060ce5 §6.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyManagerInfo {
    /// Registered keys, sorted by public key, expired ones included until an op removes them.
    pub public_keys: Vec<RegisteredKey>,
    /// The key manager's machine key: it signs `root_add_public_key_signed`.
    pub public_key: [u8; 32],
    /// The image hash a key manager must be attested with.
    pub image_hash: [u8; 32],
    /// Where proxies and workers reach the key manager (`"ip:port"`); None when unset.
    pub address: Option<String>,
}

impl KeyManagerInfo {
    /// The registered keys still valid at `now` (unix seconds).
    pub fn valid_keys(&self, now: u32) -> impl Iterator<Item = &RegisteredKey> {
        self.public_keys.iter().filter(move |k| k.expire_at >= now)
    }
}

/// The root's verified-keys cell (`struct_version` ≥ 5): three sorted key sets. COCOON's
/// runners do not consult them yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifiedKeys {
    /// Verified proxy keys.
    pub proxy: Vec<[u8; 32]>,
    /// Verified worker keys.
    pub worker: Vec<[u8; 32]>,
    /// Verified key-manager keys.
    pub key_manager: Vec<[u8; 32]>,
}

/// Value of a `public_keys` entry: `key_type:uint8 expire_at:uint32`.
struct KeyInfoValue(u8, u32);

impl Store for KeyInfoValue {
    fn store_into(
        &self,
        b: &mut CellBuilder,
        _: &dyn tycho_types::cell::CellContext,
    ) -> Result<(), tycho_types::error::Error> {
        b.store_u8(self.0)?;
        b.store_u32(self.1)
    }
}

impl KeyManagerInfo {
    fn from_cell(cell: &Cell) -> Result<Self> {
        let mut s = open(cell)?;
        let keys_root = load_maybe_ref(&mut s)?;
        let mut public_key = [0u8; 32];
        s.load_raw(&mut public_key, 256)?;
        let mut image_hash = [0u8; 32];
        s.load_raw(&mut image_hash, 256)?;
        let address = load_proxy_info(&mut s)?
            .ok_or_else(|| TonError::layout("key manager", "address of an unknown type"))?;
        expect_end(&s, "key manager cell")?;
        let mut public_keys = Vec::new();
        let raw: RawDict<256> = RawDict::from(keys_root);
        for item in raw.iter() {
            let (key, mut value) = item?;
            let mut k = [0u8; 32];
            key.as_data_slice().load_raw(&mut k, 256)?;
            let key_type = value.load_u8()?;
            let expire_at = value.load_u32()?;
            expect_end(&value, "PublicKeyInfo")?;
            public_keys.push(RegisteredKey {
                public_key: k,
                key_type,
                expire_at,
            });
        }
        public_keys.sort_by_key(|k| k.public_key);
        Ok(KeyManagerInfo {
            public_keys,
            public_key,
            image_hash,
            address: (!address.is_empty()).then_some(address),
        })
    }

    fn to_cell(&self) -> Result<Cell> {
        let map: BTreeMap<HashBytes, KeyInfoValue> = self
            .public_keys
            .iter()
            .map(|k| {
                (
                    HashBytes(k.public_key),
                    KeyInfoValue(k.key_type, k.expire_at),
                )
            })
            .collect();
        let mut keys: Dict<HashBytes, KeyInfoValue> = Dict::new();
        for (k, v) in map {
            keys.set(k, v)?;
        }
        let mut b = CellBuilder::new();
        store_maybe_ref(&mut b, keys.root().as_ref())?;
        b.store_raw(&self.public_key, 256)?;
        b.store_raw(&self.image_hash, 256)?;
        store_proxy_info(&mut b, self.address.as_deref().unwrap_or(""))?;
        Ok(b.build()?)
    }
}

impl VerifiedKeys {
    fn from_cell(cell: &Cell) -> Result<Self> {
        let mut s = open(cell)?;
        let proxy = hash_keys(load_maybe_ref(&mut s)?)?;
        let worker = hash_keys(load_maybe_ref(&mut s)?)?;
        let key_manager = hash_keys(load_maybe_ref(&mut s)?)?;
        expect_end(&s, "verified keys cell")?;
        Ok(VerifiedKeys {
            proxy,
            worker,
            key_manager,
        })
    }

    fn to_cell(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        store_maybe_ref(&mut b, hash_dict(&self.proxy)?.as_ref())?;
        store_maybe_ref(&mut b, hash_dict(&self.worker)?.as_ref())?;
        store_maybe_ref(&mut b, hash_dict(&self.key_manager)?.as_ref())?;
        Ok(b.build()?)
    }
}

fn hash_keys(dict: Option<Cell>) -> Result<Vec<[u8; 32]>> {
    let d: Dict<HashBytes, ()> = Dict::from_raw(dict);
    let mut out = Vec::new();
    for k in d.keys() {
        out.push(k?.0);
    }
    out.sort();
    Ok(out)
}

fn hash_dict(keys: &[[u8; 32]]) -> Result<Option<Cell>> {
    let map: BTreeMap<HashBytes, ()> = keys.iter().map(|k| (HashBytes(*k), ())).collect();
    let d: Dict<HashBytes, ()> = Dict::try_from(map)?;
    Ok(d.into_root())
}

impl RootConfig {
    /// Parses the root contract's data cell.
    ///
    /// Layout: bits `owner:MsgAddressInt version:uint32`, refs `[data, params]`, then
    /// `key_manager` when params `struct_version` ≥ 4 and `verified_keys` when ≥ 5;
    /// `data = proxy_hashes:(HashmapE 256) registered_proxies:(HashmapE 32 ProxyInfo)
    /// last_proxy_seqno:uint32 worker_hashes:(HashmapE 256) model_hashes:(HashmapE 256)`.
    ///
    /// The dictionary order follows the C++ reader (`load_from_state`). The Tolk
    /// copy of the contracts swaps `registered_proxies` and `worker_hashes`
    /// (spec §6.1, §11 item 23); we follow the C++ reader, as our own contracts do.
    pub fn from_data_cell(root_data: &Cell) -> Result<Self> {
        let mut s = open(root_data)?;
        let owner = load_address(&mut s)?;
        let version = s.load_u32()?;
        let data_cell = s.load_reference_cloned()?;
        let params_cell = s.load_reference_cloned()?;
        let params = CocoonParams::from_cell(&params_cell)?;
        let key_manager = if params.struct_version >= 4 {
            KeyManagerInfo::from_cell(&s.load_reference_cloned()?)?
        } else {
            KeyManagerInfo::default()
        };
        let verified_keys = if params.struct_version >= 5 {
            VerifiedKeys::from_cell(&s.load_reference_cloned()?)?
        } else {
            VerifiedKeys::default()
        };
        expect_end(&s, "root data cell")?;

        let mut d = open(&data_cell)?;
        let proxy_hashes = hash_keys(load_maybe_ref(&mut d)?)?;
        let proxies_root = load_maybe_ref(&mut d)?;
        let last_proxy_seqno = d.load_u32()?;
        let worker_hashes = hash_keys(load_maybe_ref(&mut d)?)?;
        let model_hashes = hash_keys(load_maybe_ref(&mut d)?)?;
        expect_end(&d, "root data dictionaries")?;

        let mut registered_proxies = Vec::new();
        let raw: RawDict<32> = RawDict::from(proxies_root);
        for item in raw.iter() {
            let (key, mut value) = item?;
            let seqno = key.as_data_slice().load_u32()?;
            if let Some(address) = load_proxy_info(&mut value)? {
                registered_proxies.push(RegisteredProxy { seqno, address });
            }
        }
        registered_proxies.sort_by_key(|p| p.seqno);

        Ok(RootConfig {
            owner,
            version,
            proxy_hashes,
            registered_proxies,
            last_proxy_seqno,
            worker_hashes,
            model_hashes,
            params,
            key_manager,
            verified_keys,
        })
    }

    /// Builds the root data cell in the layout [`RootConfig::from_data_cell`]
    /// reads (for tests, the fake-TON stand-in and devnet deployment).
    pub fn to_data_cell(&self) -> Result<Cell> {
        let mut d = CellBuilder::new();
        store_maybe_ref(&mut d, hash_dict(&self.proxy_hashes)?.as_ref())?;
        let mut proxies: Dict<u32, ProxyInfoValue<'_>> = Dict::new();
        for p in &self.registered_proxies {
            proxies.set(p.seqno, ProxyInfoValue(&p.address))?;
        }
        store_maybe_ref(&mut d, proxies.root().as_ref())?;
        d.store_u32(self.last_proxy_seqno)?;
        store_maybe_ref(&mut d, hash_dict(&self.worker_hashes)?.as_ref())?;
        store_maybe_ref(&mut d, hash_dict(&self.model_hashes)?.as_ref())?;
        let data = d.build()?;

        let mut b = CellBuilder::new();
        store_address(&mut b, &self.owner)?;
        b.store_u32(self.version)?;
        b.store_reference(data)?;
        b.store_reference(self.params.to_cell(CodeMask::ROOT)?)?;
        if self.params.struct_version >= 4 {
            b.store_reference(self.key_manager.to_cell()?)?;
        }
        if self.params.struct_version >= 5 {
            b.store_reference(self.verified_keys.to_cell()?)?;
        }
        Ok(b.build()?)
    }

    /// Whether a proxy image hash is allowed.
    pub fn has_proxy_hash(&self, h: &[u8; 32]) -> bool {
        self.proxy_hashes.binary_search(h).is_ok()
    }

    /// Whether a worker image hash is allowed.
    pub fn has_worker_hash(&self, h: &[u8; 32]) -> bool {
        self.worker_hashes.binary_search(h).is_ok()
    }

    /// Whether a model hash is allowed.
    pub fn has_model_hash(&self, h: &[u8; 32]) -> bool {
        self.model_hashes.binary_search(h).is_ok()
    }
}
