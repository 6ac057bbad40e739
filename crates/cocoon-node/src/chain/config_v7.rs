//! The root contract's configuration as COCOON 9060ce5's proxy stores it:
//! `rootConfig.configV7` (cocoon-protocol-9060ce5.md §6.3), every field the reader parses,
//! in TL order, codes as hex BOC. The proxy keeps the newest one it ran on in its ledger.

use cocoon_tl::types::root_config::{ConfigV7, RegisteredProxy as TlProxy, RegisteredPublicKey};
use cocoon_ton::root::{
    CocoonParams, KeyManagerInfo, RegisteredKey, RegisteredProxy, RootConfig, VerifiedKeys,
};

/// Why a stored configuration cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum ConfigV7Error {
    /// A number does not fit the field it stands for.
    #[error("rootConfig.configV7: {0} out of range")]
    Range(&'static str),
    /// The owner address or a contract code does not parse.
    #[error("rootConfig.configV7: {0}")]
    Invalid(String),
}

fn hex_code(code: &Option<cocoon_ton::Cell>) -> String {
    code.as_ref()
        .map(|c| hex::encode(cocoon_ton::cells::to_boc(c)))
        .unwrap_or_default()
}

fn code_of(text: &str, what: &str) -> Result<Option<cocoon_ton::Cell>, ConfigV7Error> {
    if text.is_empty() {
        return Ok(None);
    }
    cocoon_ton::cells::from_boc_hex(text)
        .map(Some)
        .map_err(|e| ConfigV7Error::Invalid(format!("{what}: {e}")))
}

/// `cfg` as `rootConfig.configV7`, the owner written for `testnet`. Unlike COCOON, prices
/// and stakes are written whole (COCOON casts prices through `int`).
pub fn to_config_v7(cfg: &RootConfig, testnet: bool) -> ConfigV7 {
    let p = &cfg.params;
    let int = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let long = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let km = &cfg.key_manager;
    ConfigV7 {
        root_owner_address: cocoon_ton::address::to_friendly(&cfg.owner, testnet),
        proxy_hashes: cfg.proxy_hashes.clone(),
        registered_proxies: cfg
            .registered_proxies
            .iter()
            .map(|r| TlProxy {
                seqno: int(r.seqno),
                address: r.address.clone(),
            })
            .collect(),
        last_proxy_seqno: int(cfg.last_proxy_seqno),
        worker_hashes: cfg.worker_hashes.clone(),
        model_hashes: cfg.model_hashes.clone(),
        version: int(cfg.version),
        struct_version: i32::from(p.struct_version),
        params_version: int(p.params_version),
        unique_id: int(p.unique_id),
        is_test: i32::from(p.is_test),
        price_per_token: long(p.price_per_token),
        worker_fee_per_token: long(p.worker_fee_per_token),
        prompt_tokens_price_multiplier: int(p.prompt_tokens_price_multiplier),
        cached_tokens_price_multiplier: int(p.cached_tokens_price_multiplier),
        completion_tokens_price_multiplier: int(p.completion_tokens_price_multiplier),
        reasoning_tokens_price_multiplier: int(p.reasoning_tokens_price_multiplier),
        proxy_delay_before_close: int(p.proxy_delay_before_close),
        client_delay_before_close: int(p.client_delay_before_close),
        min_proxy_stake: long(p.min_proxy_stake),
        min_client_stake: long(p.min_client_stake),
        registered_public_keys: km
            .public_keys
            .iter()
            .map(|k| RegisteredPublicKey {
                public_key: k.public_key,
                key_type: i32::from(k.key_type),
                expire_at: int(k.expire_at),
            })
            .collect(),
        key_manager_public_key: km.public_key,
        key_manager_image_hash: km.image_hash,
        key_manager_address: km.address.clone().unwrap_or_default(),
        verified_proxy_keys: cfg.verified_keys.proxy.clone(),
        verified_worker_keys: cfg.verified_keys.worker.clone(),
        verified_key_manager_keys: cfg.verified_keys.key_manager.clone(),
        proxy_sc_code: hex_code(&p.proxy_sc_code),
        worker_sc_code: hex_code(&p.worker_sc_code),
        client_sc_code: hex_code(&p.client_sc_code),
    }
}

/// A stored `rootConfig.configV7` read back.
pub fn from_config_v7(v: &ConfigV7) -> Result<RootConfig, ConfigV7Error> {
    let u32_of = |x: i32, what| u32::try_from(x).map_err(|_| ConfigV7Error::Range(what));
    let u64_of = |x: i64, what| u64::try_from(x).map_err(|_| ConfigV7Error::Range(what));
    let (owner, _) = cocoon_ton::address::parse(&v.root_owner_address)
        .map_err(|e| ConfigV7Error::Invalid(format!("root_owner_address: {e}")))?;
    let params = CocoonParams {
        struct_version: u8::try_from(v.struct_version)
            .map_err(|_| ConfigV7Error::Range("struct_version"))?,
        params_version: u32_of(v.params_version, "params_version")?,
        unique_id: u32_of(v.unique_id, "unique_id")?,
        is_test: v.is_test != 0,
        price_per_token: u64_of(v.price_per_token, "price_per_token")?,
        worker_fee_per_token: u64_of(v.worker_fee_per_token, "worker_fee_per_token")?,
        prompt_tokens_price_multiplier: u32_of(v.prompt_tokens_price_multiplier, "multiplier")?,
        cached_tokens_price_multiplier: u32_of(v.cached_tokens_price_multiplier, "multiplier")?,
        completion_tokens_price_multiplier: u32_of(
            v.completion_tokens_price_multiplier,
            "multiplier",
        )?,
        reasoning_tokens_price_multiplier: u32_of(
            v.reasoning_tokens_price_multiplier,
            "multiplier",
        )?,
        proxy_delay_before_close: u32_of(v.proxy_delay_before_close, "proxy_delay_before_close")?,
        client_delay_before_close: u32_of(
            v.client_delay_before_close,
            "client_delay_before_close",
        )?,
        min_proxy_stake: u64_of(v.min_proxy_stake, "min_proxy_stake")?,
        min_client_stake: u64_of(v.min_client_stake, "min_client_stake")?,
        proxy_sc_code: code_of(&v.proxy_sc_code, "proxy_sc_code")?,
        worker_sc_code: code_of(&v.worker_sc_code, "worker_sc_code")?,
        client_sc_code: code_of(&v.client_sc_code, "client_sc_code")?,
    };
    let mut public_keys = Vec::new();
    for k in &v.registered_public_keys {
        public_keys.push(RegisteredKey {
            public_key: k.public_key,
            key_type: u8::try_from(k.key_type).map_err(|_| ConfigV7Error::Range("key_type"))?,
            expire_at: u32_of(k.expire_at, "expire_at")?,
        });
    }
    let mut registered_proxies = Vec::new();
    for r in &v.registered_proxies {
        registered_proxies.push(RegisteredProxy {
            seqno: u32_of(r.seqno, "seqno")?,
            address: r.address.clone(),
        });
    }
    Ok(RootConfig {
        owner,
        version: u32_of(v.version, "version")?,
        proxy_hashes: v.proxy_hashes.clone(),
        registered_proxies,
        last_proxy_seqno: u32_of(v.last_proxy_seqno, "last_proxy_seqno")?,
        worker_hashes: v.worker_hashes.clone(),
        model_hashes: v.model_hashes.clone(),
        params,
        key_manager: KeyManagerInfo {
            public_keys,
            public_key: v.key_manager_public_key,
            image_hash: v.key_manager_image_hash,
            address: (!v.key_manager_address.is_empty()).then(|| v.key_manager_address.clone()),
        },
        verified_keys: VerifiedKeys {
            proxy: v.verified_proxy_keys.clone(),
            worker: v.verified_worker_keys.clone(),
            key_manager: v.verified_key_manager_keys.clone(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_ton::local::GenesisRoot;

    #[test]
    fn a_struct_version_5_root_round_trips_through_config_v7() {
        let owner = cocoon_ton::StdAddr::new(0, tycho_types::cell::HashBytes([7; 32]));
        let mut root = GenesisRoot::devnet(owner).expect("genesis");
        let cfg = &mut root.config;
        cfg.proxy_hashes = vec![[1; 32]];
        cfg.registered_proxies = vec![RegisteredProxy {
            seqno: 3,
            address: "10.0.0.1:1 10.0.0.1:2".into(),
        }];
        cfg.params.price_per_token = 5_000_000_000; // beyond i32: COCOON's cast would wrap it
        cfg.key_manager = KeyManagerInfo {
            public_keys: vec![RegisteredKey {
                public_key: [2; 32],
                key_type: 1,
                expire_at: 1_900_000_000,
            }],
            public_key: [3; 32],
            image_hash: [4; 32],
            address: Some("10.0.0.9:13001".into()),
        };
        cfg.verified_keys.worker = vec![[5; 32]];
        let v7 = to_config_v7(cfg, true);
        assert_eq!(v7.price_per_token, 5_000_000_000);
        assert_eq!(v7.struct_version, 5);
        let bytes = cocoon_tl::to_bytes(&v7);
        let back: ConfigV7 = cocoon_tl::from_bytes(&bytes).expect("TL");
        assert_eq!(from_config_v7(&back).expect("read back"), *cfg);
    }

    #[test]
    fn a_damaged_config_is_refused_with_the_field() {
        let owner = cocoon_ton::StdAddr::new(0, tycho_types::cell::HashBytes([7; 32]));
        let root = GenesisRoot::devnet(owner).expect("genesis");
        let mut v7 = to_config_v7(&root.config, true);
        v7.min_client_stake = -1;
        assert!(from_config_v7(&v7)
            .expect_err("negative")
            .to_string()
            .contains("min_client_stake"));
        let mut v7 = to_config_v7(&root.config, true);
        v7.proxy_sc_code = "zz".into();
        assert!(from_config_v7(&v7).is_err());
    }
}
