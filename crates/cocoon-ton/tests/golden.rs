//! Golden vectors computed by an independent implementation (@ton/core and
//! @ton/crypto, see `tests/golden/gen.mjs`) from the layouts in the spec.
//! They pin: the params cell for each code mask, the StateInit/address
//! derivation of proxy, client and worker contracts (with the official
//! fake-TON code and with our contracts), the voucher payload hash and its
//! deterministic Ed25519 signature, the official cocoon wallet address and a
//! signed wallet request, and a root data cell with all dictionaries.

mod common;

use cocoon_ton::address::{parse_addr, to_friendly, to_raw};
use cocoon_ton::cells::{from_boc, to_boc};
use cocoon_ton::contracts::{
    client_contract_address, proxy_contract_address, worker_contract_address,
};
use cocoon_ton::root::{CodeMask, RootConfig};
use cocoon_ton::voucher::{SignedVoucher, Voucher, VoucherKind, VoucherSigner, VoucherVerifier};
use cocoon_ton::wallet::{official_cocoon_wallet_code, CocoonWallet, InternalMessage};
use cocoon_ton::Cell;
use common::*;

fn s<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("golden field {k}"))
}

fn h(c: &Cell) -> String {
    hex::encode(c.repr_hash().0)
}

#[test]
fn contract_address_derivation() {
    let g = golden();
    let cases = g["derivation"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    let proxy_pk = key(1).verifying_key().to_bytes();
    for case in cases {
        let p = params(s(case, "params"), s(case, "codes"));
        assert_eq!(
            h(&p.to_cell(CodeMask::ROOT).unwrap()),
            s(case, "root_params_hash")
        );
        assert_eq!(
            h(&p.to_cell(CodeMask::PROXY).unwrap()),
            s(case, "proxy_params_hash")
        );
        assert_eq!(
            h(&p.to_cell(CodeMask::NONE).unwrap()),
            s(case, "no_code_params_hash")
        );

        let proxy_sc = proxy_contract_address(&p, &addr(0x22), &addr(0x11), &proxy_pk).unwrap();
        assert_eq!(to_raw(&proxy_sc), s(case, "proxy_sc"), "{case}");
        assert_eq!(
            to_friendly(&proxy_sc, true),
            s(case, "proxy_sc_friendly_testnet")
        );
        let client_sc = client_contract_address(&p, &addr(0x33), &proxy_sc, &proxy_pk).unwrap();
        assert_eq!(to_raw(&client_sc), s(case, "client_sc"), "{case}");
        let worker_sc = worker_contract_address(&p, &addr(0x44), &proxy_sc, &proxy_pk).unwrap();
        assert_eq!(to_raw(&worker_sc), s(case, "worker_sc"), "{case}");

        // Round trip of the params cell through the tolerant reader.
        let back =
            cocoon_ton::root::CocoonParams::from_cell(&p.to_cell(CodeMask::ROOT).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}

#[test]
fn voucher_vector() {
    let g = golden();
    let v = &g["voucher"];
    let contract = parse_addr(s(v, "contract")).unwrap();
    let signer = VoucherSigner::new(key(1), addr(0x66));
    assert_eq!(hex::encode(signer.public_key()), s(v, "proxy_public_key"));
    let voucher = Voucher::client_charge(0x1122_3344_5566_7788, 123_456_789, contract.clone());
    assert_eq!(
        hex::encode(voucher.signing_hash().unwrap()),
        s(v, "payload_hash")
    );
    let signed = signer.sign(voucher).unwrap();
    assert_eq!(hex::encode(signed.signature), s(v, "signature"));
    assert_eq!(hex::encode(signed.to_boc().unwrap()), s(v, "wrapper_boc"));

    // The JS-built wrapper parses and verifies.
    let boc = hex::decode(s(v, "wrapper_boc")).unwrap();
    let parsed = SignedVoucher::from_boc(&boc).unwrap();
    assert_eq!(parsed, signed);
    let verifier = VoucherVerifier::new(signer.public_key(), contract);
    assert_eq!(
        verifier
            .check_boc(&boc, VoucherKind::ClientCharge)
            .unwrap()
            .tokens(),
        123_456_789
    );
}

#[test]
fn official_wallet_vector() {
    let g = golden();
    let w = &g["wallet"];
    let code = official_cocoon_wallet_code().unwrap();
    assert_eq!(h(&code), s(w, "code_hash"));
    assert_eq!(
        h(&code),
        cocoon_ton::wallet::OFFICIAL_COCOON_WALLET_CODE_HASH
    );
    let wallet = CocoonWallet::new(key(5), addr(0x55), &code).unwrap();
    assert_eq!(to_raw(wallet.address()), s(w, "address"));
    assert_eq!(
        to_friendly(wallet.address(), false),
        s(w, "address_friendly")
    );

    let body = cocoon_ton::messages::Body::Excesses { query_id: 9 }
        .to_cell()
        .unwrap();
    let msg = InternalMessage::cocoon(addr(0x77), 700_000_000, None, Some(body));
    assert_eq!(h(&msg.to_cell().unwrap()), s(w, "internal_message_hash"));
    let signed = wallet.sign_request(3, 1_800_000_000, &[(0, msg)]).unwrap();
    assert_eq!(h(&signed), s(w, "signed_body_hash"));
}

#[test]
fn root_data_vector() {
    let g = golden();
    let r = &g["root"];
    let cell = from_boc(&hex::decode(s(r, "data_boc")).unwrap()).unwrap();
    let cfg = RootConfig::from_data_cell(&cell).unwrap();
    assert_eq!(cfg.owner, addr(0x99));
    assert_eq!(cfg.version, 42);
    assert_eq!(cfg.proxy_hashes, vec![[0xa1; 32], [0xa2; 32]]);
    assert_eq!(cfg.worker_hashes, vec![[0xb1; 32]]);
    assert_eq!(cfg.model_hashes, vec![[0xc1; 32], [0xc2; 32], [0xc3; 32]]);
    assert_eq!(cfg.last_proxy_seqno, 3);
    assert_eq!(cfg.registered_proxies.len(), 2);
    assert_eq!(cfg.registered_proxies[0].seqno, 1);
    let (w, c) = cfg.registered_proxies[0].endpoints().unwrap();
    assert_eq!(w.to_string(), "10.0.0.1:8001");
    assert_eq!(c.to_string(), "10.0.0.1:8002");
    let (w, c) = cfg.registered_proxies[1].endpoints().unwrap();
    assert_eq!((w, c), (w, w));
    assert_eq!(cfg.params, params("v3", "ours"));
    assert!(cfg.has_model_hash(&[0xc2; 32]) && !cfg.has_model_hash(&[0xc4; 32]));
    // And our builder gives the very same cell.
    let rebuilt = cfg.to_data_cell().unwrap();
    assert_eq!(h(&rebuilt), s(r, "data_hash"));
    // (BOC bytes of multi-cell trees may order cells differently; only the
    // tree, hence the hash, is canonical. Ours must decode to the same tree.)
    assert_eq!(h(&from_boc(&to_boc(&rebuilt)).unwrap()), s(r, "data_hash"));
}
