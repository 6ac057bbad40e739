//! Shared helpers for the integration tests (included with `mod common;`).
#![allow(dead_code)]

use cocoon_ton::cells::from_boc;
use cocoon_ton::root::{CocoonParams, ONE_TON};
use cocoon_ton::tycho_types::cell::HashBytes;
use cocoon_ton::{Cell, StdAddr};
use ed25519_dalek::SigningKey;

pub fn data_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
        .join(name)
}

pub fn code(name: &str) -> Cell {
    let bytes = std::fs::read(data_path(name)).expect("test data file");
    from_boc(&bytes).expect("valid BOC")
}

pub fn addr(b: u8) -> StdAddr {
    StdAddr::new(0, HashBytes([b; 32]))
}

pub fn key(b: u8) -> SigningKey {
    SigningKey::from_bytes(&[b; 32])
}

pub fn golden() -> serde_json::Value {
    let text = std::fs::read_to_string(data_path("golden.json")).expect("golden.json");
    serde_json::from_str(&text).expect("golden JSON")
}

/// The params of the golden vectors (`v3` or `v1`) with the given code set.
pub fn params(version: &str, codes: &str) -> CocoonParams {
    let (p, w, c) = match codes {
        "fake_ton" => (
            "fake-ton-proxy.boc",
            "fake-ton-worker.boc",
            "fake-ton-client.boc",
        ),
        _ => ("ours-proxy.boc", "ours-worker.boc", "ours-client.boc"),
    };
    let base = CocoonParams {
        proxy_sc_code: Some(code(p)),
        worker_sc_code: Some(code(w)),
        client_sc_code: Some(code(c)),
        ..CocoonParams::default()
    };
    match version {
        "v3" | "v5" => CocoonParams {
            struct_version: if version == "v5" { 5 } else { 3 },
            params_version: 7,
            unique_id: 13,
            is_test: true,
            price_per_token: 1000,
            worker_fee_per_token: 600,
            prompt_tokens_price_multiplier: 10000,
            cached_tokens_price_multiplier: 11000,
            completion_tokens_price_multiplier: 12000,
            reasoning_tokens_price_multiplier: 13000,
            proxy_delay_before_close: 600,
            client_delay_before_close: 300,
            min_proxy_stake: ONE_TON,
            min_client_stake: 2 * ONE_TON,
            ..base
        },
        _ => CocoonParams {
            struct_version: 1,
            params_version: 1,
            price_per_token: 2,
            worker_fee_per_token: 1,
            ..base
        },
    }
}
