//! Root config: params of every struct version, strictness, the root data
//! cell, and COCOON's pseudo root config (JSON and TOML).

mod common;

use cocoon_ton::address::to_friendly;
use cocoon_ton::pseudo::{self, model_type_hash};
use cocoon_ton::root::{CocoonParams, CodeMask, RegisteredProxy, RootConfig, ONE_TON};
use cocoon_ton::tycho_types::cell::CellBuilder;
use common::*;
use sha2::{Digest, Sha256};

#[test]
fn params_every_struct_version() {
    for v in 0..=5u8 {
        let mut p = params("v3", "ours");
        p.struct_version = v;
        let cell = p.to_cell(CodeMask::ROOT).unwrap();
        let back = CocoonParams::from_cell(&cell).unwrap();
        let mut expected = p.clone();
        if v < 3 {
            expected.prompt_tokens_price_multiplier = 10000;
            expected.completion_tokens_price_multiplier = 10000;
        }
        if v < 2 {
            expected.cached_tokens_price_multiplier = 10000;
            expected.reasoning_tokens_price_multiplier = 10000;
        }
        if v < 1 {
            expected.min_proxy_stake = ONE_TON;
            expected.min_client_stake = ONE_TON;
        }
        assert_eq!(back, expected, "struct_version {v}");
        // Bits: 8+32+32+1 + 2 coins(price 1000 -> 4+16, fee 600 -> 4+16)
        //       + multipliers + 64 delays + stakes + 3 maybe bits.
        let mults = match v {
            3..=5 => 128,
            2 => 64,
            _ => 0,
        };
        let stakes = if v >= 1 { (4 + 32) + (4 + 32) } else { 0 };
        assert_eq!(
            cell.bit_len() as u32,
            73 + 40 + mults + 64 + stakes + 3,
            "struct_version {v}"
        );
    }
}

#[test]
fn params_refuse_bad_input() {
    let mut p = params("v3", "ours");
    p.struct_version = 6;
    assert!(p.to_cell(CodeMask::NONE).is_err());
    // A version-6 cell is refused by the reader.
    let mut b = CellBuilder::new();
    b.store_u8(6).unwrap();
    b.store_zeros(300).unwrap();
    assert!(CocoonParams::from_cell(&b.build().unwrap()).is_err());
    // Extra data is refused.
    let p = params("v1", "ours");
    let cell = p.to_cell(CodeMask::NONE).unwrap();
    let mut b = CellBuilder::new();
    b.store_slice(cell.as_slice().unwrap()).unwrap();
    b.store_bit_zero().unwrap();
    assert!(CocoonParams::from_cell(&b.build().unwrap()).is_err());
    // Truncated data is refused.
    let mut b = CellBuilder::new();
    b.store_u8(1).unwrap();
    b.store_u32(1).unwrap();
    assert!(CocoonParams::from_cell(&b.build().unwrap()).is_err());
}

#[test]
fn code_masks() {
    let p = params("v3", "ours");
    let refs = |m| p.to_cell(m).unwrap().reference_count();
    assert_eq!(refs(CodeMask::ROOT), 3);
    assert_eq!(refs(CodeMask::PROXY), 2);
    assert_eq!(refs(CodeMask::NONE), 0);
    let back = CocoonParams::from_cell(&p.to_cell(CodeMask::PROXY).unwrap()).unwrap();
    assert!(back.proxy_sc_code.is_none());
    assert_eq!(back.worker_sc_code, p.worker_sc_code);
    assert_eq!(back.client_sc_code, p.client_sc_code);
}

#[test]
fn root_data_round_trip_and_empty_dicts() {
    let cfg = RootConfig {
        owner: addr(0x99),
        version: 1,
        proxy_hashes: vec![],
        registered_proxies: vec![RegisteredProxy {
            seqno: 5,
            address: "127.0.0.1:1000".into(),
        }],
        last_proxy_seqno: 5,
        worker_hashes: vec![[1; 32]],
        model_hashes: vec![],
        params: params("v1", "fake_ton"),
        key_manager: Default::default(),
        verified_keys: Default::default(),
    };
    let back = RootConfig::from_data_cell(&cfg.to_data_cell().unwrap()).unwrap();
    assert_eq!(back, cfg);
    assert!(back.has_worker_hash(&[1; 32]));
    assert!(!back.has_proxy_hash(&[1; 32]));
}

/// Struct_version 4 adds the key-manager cell, 5 the verified-keys cell (9060ce5 §6.1);
/// both round-trip, the cell count is what the C++ reader expects, and an older version
/// neither writes nor reads them.
#[test]
fn root_data_key_manager_and_verified_keys() {
    use cocoon_ton::root::{KeyManagerInfo, RegisteredKey, VerifiedKeys};
    let key = |b: u8, t: u8, e: u32| RegisteredKey {
        public_key: [b; 32],
        key_type: t,
        expire_at: e,
    };
    let mut cfg = RootConfig {
        owner: addr(0x99),
        version: 9,
        proxy_hashes: vec![],
        registered_proxies: vec![],
        last_proxy_seqno: 0,
        worker_hashes: vec![],
        model_hashes: vec![],
        params: params("v5", "ours"),
        key_manager: KeyManagerInfo {
            public_keys: vec![key(1, 1, 100), key(2, 1, 200), key(3, 2, 300)],
            public_key: [0xaa; 32],
            image_hash: [0xbb; 32],
            address: Some("10.0.0.1:13001".into()),
        },
        verified_keys: VerifiedKeys {
            proxy: vec![[4; 32]],
            worker: vec![[5; 32], [6; 32]],
            key_manager: vec![],
        },
    };
    let cell = cfg.to_data_cell().unwrap();
    assert_eq!(cell.reference_count(), 4);
    assert_eq!(RootConfig::from_data_cell(&cell).unwrap(), cfg);
    let valid: Vec<u8> = cfg
        .key_manager
        .valid_keys(200)
        .map(|k| k.public_key[0])
        .collect();
    assert_eq!(
        valid,
        vec![2, 3],
        "a key is valid up to and including expire_at"
    );

    cfg.params.struct_version = 4;
    let cell = cfg.to_data_cell().unwrap();
    assert_eq!(cell.reference_count(), 3);
    let back = RootConfig::from_data_cell(&cell).unwrap();
    assert_eq!(back.key_manager, cfg.key_manager);
    assert_eq!(back.verified_keys, VerifiedKeys::default());

    cfg.params.struct_version = 3;
    let cell = cfg.to_data_cell().unwrap();
    assert_eq!(cell.reference_count(), 2);
    assert_eq!(
        RootConfig::from_data_cell(&cell).unwrap().key_manager,
        KeyManagerInfo::default()
    );

    // No address: written as a zero-length NetAddr and read back as None.
    cfg.params.struct_version = 5;
    cfg.key_manager.address = None;
    let back = RootConfig::from_data_cell(&cfg.to_data_cell().unwrap()).unwrap();
    assert_eq!(back.key_manager.address, None);

    // A struct_version 5 params cell without the two extra refs is refused, not misread.
    let mut v3 = cfg.clone();
    v3.params.struct_version = 3;
    let plain = v3.to_data_cell().unwrap();
    let mut s = plain.as_slice().unwrap();
    let data = s.load_reference_cloned().unwrap();
    let _v3_params = s.load_reference_cloned().unwrap();
    let mut tampered = CellBuilder::new();
    tampered.store_slice(s).unwrap();
    tampered.store_reference(data).unwrap();
    tampered
        .store_reference(cfg.params.to_cell(CodeMask::ROOT).unwrap())
        .unwrap();
    assert!(RootConfig::from_data_cell(&tampered.build().unwrap()).is_err());
}

fn substituted_fake_ton_json() -> String {
    let text = std::fs::read_to_string(data_path("fake-ton-config.json")).unwrap();
    let hex_of = |f: &str| hex::encode(std::fs::read(data_path(f)).unwrap());
    text.replace("$EXTERNAL_IP", "10.1.2.3")
        .replace("$EXTERNAL_WORKER_PORT", "8101")
        .replace("$EXTERNAL_CLIENT_PORT", "8102")
        .replace("$MODEL_NAME", "Qwen/Qwen3-0.6B")
        .replace("$PROXY_SC_CODE", &hex_of("fake-ton-proxy.boc"))
        .replace("$WORKER_SC_CODE", &hex_of("fake-ton-worker.boc"))
        .replace("$CLIENT_SC_CODE", &hex_of("fake-ton-client.boc"))
}

#[test]
fn cocoon_fake_ton_config() {
    let cfg = pseudo::root_config_from_json(&substituted_fake_ton_json()).unwrap();
    assert_eq!(cfg.version, 3);
    assert_eq!(cfg.last_proxy_seqno, 1);
    assert_eq!(cfg.params.params_version, 1);
    assert_eq!(cfg.params.price_per_token, 2);
    assert_eq!(cfg.params.worker_fee_per_token, 1);
    // The fixed values of the C++ pseudo loader.
    assert_eq!(cfg.params.struct_version, 1);
    assert_eq!(cfg.params.unique_id, 13);
    assert!(cfg.params.is_test);
    assert_eq!(cfg.params.proxy_delay_before_close, 600);
    assert_eq!(cfg.params.client_delay_before_close, 300);
    assert_eq!(cfg.params.min_client_stake, ONE_TON);
    assert_eq!(
        to_friendly(&cfg.owner, true),
        "0QBgPMq7ye2WRcudRHK_-yjHwMXjeN-UCzAuoo06TR6hmgHV"
    );
    // "ProxyProxy…Pro=" is base64 of 32 bytes.
    assert_eq!(cfg.proxy_hashes.len(), 1);
    assert_eq!(cfg.worker_hashes.len(), 1);
    // `model_names` is not a field of rootConfig.pseudo: ignored, as by the C++.
    assert!(cfg.model_hashes.is_empty());
    let (w, c) = cfg.registered_proxies[0].endpoints().unwrap();
    assert_eq!(w.to_string(), "10.1.2.3:8101");
    assert_eq!(c.to_string(), "10.1.2.3:8102");
    assert_eq!(
        cfg.params.worker_sc_code.as_ref().unwrap().repr_hash().0,
        common::code("fake-ton-worker.boc").repr_hash().0
    );
    // 9060ce5 additions: the static test key and the key manager's address.
    assert_eq!(cfg.key_manager.public_keys.len(), 1);
    let k = cfg.key_manager.public_keys[0];
    assert_eq!(
        hex::encode(k.public_key),
        "fb67d0fcd338f20e0d4957d9e82adc101d2e3513a448a3ab46052ee1b88c5818"
    );
    assert_eq!((k.key_type, k.expire_at), (1, 2_000_000_000));
    assert_eq!(
        cfg.key_manager.address.as_deref(),
        Some("10.1.2.3:$EXTERNAL_KEY_MANAGER_PORT")
    );
    // It survives the root data cell, except what struct_version 1 has no cell for.
    let mut without_keys = cfg.clone();
    without_keys.key_manager = Default::default();
    assert_eq!(
        RootConfig::from_data_cell(&cfg.to_data_cell().unwrap()).unwrap(),
        without_keys
    );
}

#[test]
fn tl_json_leniency() {
    let json = r#"{
        "price_per_token": "20", "worker_fee_per_token": 10, "version": "7",
        "params_version": 2, "unknown_key": {"x": 1},
        "model_types": ["Qwen/Qwen3-8B@abc:def"],
        "model_hashes": ["AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="],
        "root_owner_address": "EQCns7bYSp0igFvS1wpb5wsZjCKCV19MD5AVzI4EyxsnU73k"
    }"#;
    let cfg = pseudo::root_config_from_json(json).unwrap();
    assert_eq!(cfg.params.price_per_token, 20);
    assert_eq!(cfg.version, 7);
    assert_eq!(cfg.last_proxy_seqno, 0);
    let expected: [u8; 32] = Sha256::digest(b"Qwen/Qwen3-8B").into();
    assert_eq!(model_type_hash("Qwen/Qwen3-8B@abc:def"), expected);
    assert!(cfg.has_model_hash(&expected));
    assert!(cfg.has_model_hash(&[1; 32]));
    // Empty code strings give an empty code cell, as in the C++.
    assert_eq!(cfg.params.proxy_sc_code.as_ref().unwrap().bit_len(), 0);

    // Errors: bad int256 length, bad number, bad owner.
    assert!(pseudo::root_config_from_json(r#"{"proxy_hashes": ["AAAA"]}"#).is_err());
    assert!(pseudo::root_config_from_json(r#"{"version": "x"}"#).is_err());
    assert!(pseudo::root_config_from_json(r#"{"root_owner_address": "nope"}"#).is_err());
    assert!(pseudo::root_config_from_json("[]").is_err());
}

#[test]
fn toml_form() {
    let toml = r#"
        price_per_token = 3
        worker_fee_per_token = "1"
        version = 2
        root_owner_address = "0:6666666666666666666666666666666666666666666666666666666666666666"
        worker_hashes = ["AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="]
        [[registered_proxies]]
        seqno = 1
        address = "127.0.0.1:7000"
    "#;
    let cfg = pseudo::root_config_from_toml(toml).unwrap();
    assert_eq!(cfg.owner, addr(0x66));
    assert_eq!(cfg.params.price_per_token, 3);
    assert!(cfg.has_worker_hash(&[2; 32]));
    assert_eq!(cfg.registered_proxies[0].seqno, 1);
}
