//! Runs our Tolk per-party contracts (contracts/build, copied to tests/data)
//! in tycho-vm on messages built by this crate, and parses what they send with
//! this crate's parsers. This checks, against real contract code:
//! * voucher layout and signature (worker and client accept our vouchers,
//!   refuse lower, forged and misaddressed ones with the documented exit codes);
//! * address derivation (the proxy contract recomputes the client/worker
//!   contract address from its own params and refuses a sender that does not
//!   match, exit 1014; our derived address is accepted);
//! * the notification bodies the contracts emit (`worker_proxy_request`,
//!   `client_proxy_request`) parse with [`Body::parse`].

mod common;

use cocoon_ton::cells::{store_address, store_coins};
use cocoon_ton::contracts::{client_contract, proxy_contract, worker_contract, ContractInit};
use cocoon_ton::messages::{Body, ClientProxyPayload, ClientStateReport};
use cocoon_ton::root::ONE_TON;
use cocoon_ton::tycho_types::cell::{Cell, CellBuilder};
use cocoon_ton::tycho_types::models::{CurrencyCollection, IntAddr, StdAddr};
use cocoon_ton::tycho_types::num::Tokens;
use cocoon_ton::voucher::{Voucher, VoucherKind, VoucherSigner};
use cocoon_ton::wallet::InternalMessage;
use common::*;
use tycho_vm::{
    GasParams, OwnedCellSlice, RcStackValue, SafeRc, SmcInfoBase, Stack, UnpackedInMsgSmcInfo,
    VmStateBuilder,
};

const NOW: u32 = 1_800_000_000;

struct Run {
    exit_code: i32,
    data: Option<Cell>,
    sent: Vec<InternalMessage>,
}

fn big(v: i128) -> tycho_vm::__export::num_bigint::BigInt {
    tycho_vm::__export::num_bigint::BigInt::from(v)
}

/// Full internal message cell with a source address (as the chain delivers it).
fn inbound(src: &StdAddr, dest: &StdAddr, value: u64, body: &Cell) -> Cell {
    let mut b = CellBuilder::new();
    b.store_small_uint(0b0110, 4).unwrap(); // int_msg_info, ihr_disabled, bounce, bounced=0
    store_address(&mut b, src).unwrap();
    store_address(&mut b, dest).unwrap();
    store_coins(&mut b, value).unwrap();
    b.store_bit_zero().unwrap();
    store_coins(&mut b, 0).unwrap();
    store_coins(&mut b, 0).unwrap();
    b.store_u64(1000).unwrap();
    b.store_u32(NOW).unwrap();
    b.store_bit_zero().unwrap();
    b.store_bit_one().unwrap();
    b.store_reference(body.clone()).unwrap();
    b.build().unwrap()
}

fn run_internal(c: &ContractInit, data: &Cell, src: &StdAddr, value: u64, body: &Cell) -> Run {
    let balance = 5 * ONE_TON;
    let mut src_b = CellBuilder::new();
    store_address(&mut src_b, src).unwrap();
    let src_cell = src_b.build().unwrap();
    let in_msg = UnpackedInMsgSmcInfo {
        bounce: true,
        bounced: false,
        src_addr: OwnedCellSlice::new_allow_exotic(src_cell),
        fwd_fee: Tokens::ZERO,
        created_lt: 1000,
        created_at: NOW,
        original_value: Tokens::new(u128::from(value)),
        remaining_value: CurrencyCollection::new(u128::from(value)),
        state_init: None,
    };
    let smc = SmcInfoBase::new()
        .with_now(NOW)
        .with_block_lt(2000)
        .with_tx_lt(2000)
        .with_account_balance(CurrencyCollection::new(u128::from(balance + value)))
        .with_account_addr(IntAddr::Std(c.address.clone()))
        .require_ton_v4()
        .with_code(c.code.clone())
        .with_message_balance(CurrencyCollection::new(u128::from(value)))
        .require_ton_v6()
        .with_unpacked_config(SafeRc::new(vec![]))
        .require_ton_v11()
        .with_unpacked_in_msg(Some(in_msg.into_tuple()));
    let msg = inbound(src, &c.address, value, body);
    let stack: Vec<RcStackValue> = vec![
        RcStackValue::new_dyn_value(big(i128::from(balance + value))),
        RcStackValue::new_dyn_value(big(i128::from(value))),
        SafeRc::into_dyn_value(SafeRc::new(msg)),
        RcStackValue::new_dyn_value(OwnedCellSlice::new_allow_exotic(body.clone())),
        RcStackValue::new_dyn_value(big(0)),
    ];
    let mut vm = VmStateBuilder::new()
        .with_smc_info(smc)
        .with_code(c.code.clone())
        .with_data(data.clone())
        .with_init_selector(false)
        .with_raw_stack(SafeRc::new(Stack { items: stack }))
        .with_gas(GasParams::unlimited())
        .build();
    let exit_code = !vm.run();
    let mut sent = Vec::new();
    let mut out_data = None;
    if let Some(cs) = vm.committed_state.take() {
        out_data = Some(cs.c4.clone());
        let mut cur = cs.c5.clone();
        loop {
            let mut s = cur.as_slice().unwrap();
            if s.size_bits() == 0 && s.size_refs() == 0 {
                break;
            }
            let prev = s.load_reference_cloned().unwrap();
            if s.load_u32().unwrap() == 0x0ec3_c86d {
                let _mode = s.load_u8().unwrap();
                let m = s.load_reference_cloned().unwrap();
                sent.push(InternalMessage::from_cell(&m).expect("outbound message layout"));
            }
            cur = prev;
        }
        sent.reverse();
    }
    Run {
        exit_code,
        data: out_data,
        sent,
    }
}

struct World {
    proxy: ContractInit,
    client: ContractInit,
    worker: ContractInit,
    signer: VoucherSigner,
}

fn world() -> World {
    let p = params("v3", "ours");
    let pk = key(1).verifying_key().to_bytes();
    let proxy = proxy_contract(&p, &addr(0x22), &addr(0x11), &pk).unwrap();
    let client = client_contract(&p, &addr(0x33), &proxy.address, &pk).unwrap();
    let worker = worker_contract(&p, &addr(0x44), &proxy.address, &pk).unwrap();
    World {
        proxy,
        client,
        worker,
        signer: VoucherSigner::new(key(1), addr(0x66)),
    }
}

#[test]
fn worker_contract_accepts_our_payout_voucher() {
    let w = world();
    let v = w
        .signer
        .sign(Voucher::worker_payout(5, 1000, w.worker.address.clone()))
        .unwrap()
        .repack(addr(0x44));
    let run = run_internal(
        &w.worker,
        &w.worker.data,
        &addr(0x01),
        ONE_TON,
        &v.to_cell().unwrap(),
    );
    assert_eq!(run.exit_code, 0, "worker refused our voucher");
    let st =
        cocoon_ton::contracts::WorkerContractState::from_data(run.data.as_ref().unwrap()).unwrap();
    assert_eq!(st.tokens, 1000);
    let to_proxy = run
        .sent
        .iter()
        .find(|m| m.dest == w.proxy.address)
        .expect("a message to the proxy contract");
    match Body::parse(to_proxy.body.as_ref().unwrap()).unwrap() {
        Body::WorkerProxyRequest {
            query_id,
            owner,
            tokens,
            payload: Some(p),
            ..
        } => {
            assert_eq!(query_id, 5);
            assert_eq!(owner, addr(0x44));
            assert_eq!(tokens, 1000);
            assert_eq!(p.worker_part, 1000 * 600);
            assert_eq!(p.proxy_part, 1000 * 400);
            assert_eq!(p.send_excesses_to, addr(0x44));
        }
        other => panic!("unexpected body {other:?}"),
    }

    // Refusals with the documented exit codes.
    let data = run.data.unwrap();
    let lower = w
        .signer
        .sign(Voucher::worker_payout(6, 999, w.worker.address.clone()))
        .unwrap();
    assert_eq!(
        run_internal(
            &w.worker,
            &data,
            &addr(1),
            ONE_TON,
            &lower.to_cell().unwrap()
        )
        .exit_code,
        1000
    );
    let forged = VoucherSigner::new(key(2), addr(0x66))
        .sign(Voucher::worker_payout(7, 2000, w.worker.address.clone()))
        .unwrap();
    assert_eq!(
        run_internal(
            &w.worker,
            &data,
            &addr(1),
            ONE_TON,
            &forged.to_cell().unwrap()
        )
        .exit_code,
        1007
    );
    let elsewhere = w
        .signer
        .sign(Voucher::worker_payout(8, 2000, addr(0x99)))
        .unwrap();
    assert_eq!(
        run_internal(
            &w.worker,
            &data,
            &addr(1),
            ONE_TON,
            &elsewhere.to_cell().unwrap()
        )
        .exit_code,
        1015
    );
    // The last payout with the same count closes the contract.
    let last = w
        .signer
        .sign(Voucher::new(
            VoucherKind::WorkerLastPayout,
            9,
            1000,
            w.worker.address.clone(),
        ))
        .unwrap();
    let run = run_internal(
        &w.worker,
        &data,
        &addr(1),
        ONE_TON,
        &last.to_cell().unwrap(),
    );
    assert_eq!(run.exit_code, 0);
    let st =
        cocoon_ton::contracts::WorkerContractState::from_data(run.data.as_ref().unwrap()).unwrap();
    assert_eq!(st.status, cocoon_ton::contracts::ContractStatus::Closed);
}

#[test]
fn client_contract_accepts_our_charge_voucher() {
    let w = world();
    // Give the client a booked balance first, by a top-up.
    let top_up = Body::ExtClientTopUp {
        query_id: 1,
        amount: 3 * ONE_TON,
        send_excesses_to: addr(0x33),
    };
    let run = run_internal(
        &w.client,
        &w.client.data,
        &addr(0x33),
        4 * ONE_TON,
        &top_up.to_cell().unwrap(),
    );
    assert_eq!(run.exit_code, 0, "client refused our top-up");
    let data = run.data.unwrap();
    let st = cocoon_ton::contracts::ClientContractState::from_data(&data).unwrap();
    assert_eq!(st.balance, 3 * ONE_TON);
    let note = run.sent.iter().find(|m| m.dest == w.proxy.address).unwrap();
    assert!(matches!(
        Body::parse(note.body.as_ref().unwrap()).unwrap(),
        Body::ClientProxyRequest { payload: Some(ClientProxyPayload::TopUp { coins, .. }), .. } if coins == 3 * ONE_TON
    ));

    let v = w
        .signer
        .sign(Voucher::client_charge(
            2,
            1_000_000,
            w.client.address.clone(),
        ))
        .unwrap();
    let run = run_internal(
        &w.client,
        &data,
        &addr(0x05),
        ONE_TON,
        &v.to_cell().unwrap(),
    );
    assert_eq!(run.exit_code, 0, "client refused our charge voucher");
    let st =
        cocoon_ton::contracts::ClientContractState::from_data(run.data.as_ref().unwrap()).unwrap();
    assert_eq!(st.tokens_used, 1_000_000);
    assert_eq!(st.balance, 3 * ONE_TON - 1_000_000 * 1000);
    let note = run.sent.iter().find(|m| m.dest == w.proxy.address).unwrap();
    match Body::parse(note.body.as_ref().unwrap()).unwrap() {
        Body::ClientProxyRequest {
            owner,
            state,
            payload,
            ..
        } => {
            assert_eq!(owner, addr(0x33));
            assert_eq!(state.tokens_used, 1_000_000);
            assert_eq!(payload, None);
        }
        other => panic!("unexpected body {other:?}"),
    }
    // Replaying the same voucher is refused (not newer).
    let again = run_internal(
        &w.client,
        run.data.as_ref().unwrap(),
        &addr(5),
        ONE_TON,
        &v.to_cell().unwrap(),
    );
    assert_eq!(again.exit_code, 1000);
}

#[test]
fn proxy_contract_recomputes_our_derived_addresses() {
    let w = world();
    let report = Body::ClientProxyRequest {
        query_id: 3,
        owner: addr(0x33),
        state: ClientStateReport {
            state: 0,
            balance: ONE_TON,
            stake: 2 * ONE_TON,
            tokens_used: 0,
            secret_hash: [0; 32],
        },
        payload: Some(ClientProxyPayload::Register { nonce: 77 }),
    }
    .to_cell()
    .unwrap();
    // From the client contract we derived: accepted.
    let ok = run_internal(&w.proxy, &w.proxy.data, &w.client.address, ONE_TON, &report);
    assert_eq!(ok.exit_code, 0, "proxy refused our derived client address");
    // From anyone else: 1014.
    let bad = run_internal(&w.proxy, &w.proxy.data, &addr(0x34), ONE_TON, &report);
    assert_eq!(bad.exit_code, 1014);

    let payout = Body::WorkerProxyRequest {
        query_id: 4,
        owner: addr(0x44),
        state: 0,
        tokens: 10,
        payload: Some(cocoon_ton::messages::WorkerPayoutPayload {
            worker_part: 6000,
            proxy_part: 4000,
            send_excesses_to: addr(0x44),
        }),
    }
    .to_cell()
    .unwrap();
    let ok = run_internal(&w.proxy, &w.proxy.data, &w.worker.address, ONE_TON, &payout);
    assert_eq!(ok.exit_code, 0, "proxy refused our derived worker address");
    let paid = ok
        .sent
        .iter()
        .find(|m| m.dest == addr(0x44))
        .expect("payout to the worker owner");
    assert_eq!(paid.value, 6000);
    let st =
        cocoon_ton::contracts::ProxyContractState::from_data(ok.data.as_ref().unwrap()).unwrap();
    assert_eq!(st.balance, 4000);
    let bad = run_internal(&w.proxy, &w.proxy.data, &addr(0x45), ONE_TON, &payout);
    assert_eq!(bad.exit_code, 1014);

    // The save-state anchor is ignored (do_not_process) without error.
    let save = Body::ProxySaveState {
        query_id: 1,
        seqno: 2,
        session_hash: [3; 32],
    }
    .to_cell()
    .unwrap();
    assert_eq!(
        run_internal(&w.proxy, &w.proxy.data, &addr(0x66), 1, &save).exit_code,
        0
    );
}

#[test]
fn root_contract_reads_and_writes_our_root_layout() {
    use cocoon_ton::root::RootConfig;
    let cfg = RootConfig {
        owner: addr(0x99),
        version: 10,
        proxy_hashes: vec![[0xa1; 32]],
        registered_proxies: vec![],
        last_proxy_seqno: 4,
        worker_hashes: vec![],
        model_hashes: vec![[0xc1; 32]],
        params: params("v5", "ours"),
        key_manager: Default::default(),
        verified_keys: Default::default(),
    };
    let root = ContractInit::new(code("ours-root.boc"), cfg.to_data_cell().unwrap()).unwrap();
    let owner = addr(0x99);

    let add = Body::RootHash {
        op: cocoon_ton::opcodes::ROOT_ADD_WORKER_TYPE,
        query_id: 1,
        hash: [0xb1; 32],
    };
    let run = run_internal(&root, &root.data, &owner, ONE_TON, &add.to_cell().unwrap());
    assert_eq!(run.exit_code, 0, "root refused add_worker_type");
    let after = RootConfig::from_data_cell(run.data.as_ref().unwrap()).unwrap();
    assert_eq!(after.version, 11);
    assert_eq!(after.worker_hashes, vec![[0xb1; 32]]);
    assert_eq!(after.proxy_hashes, cfg.proxy_hashes);
    assert_eq!(after.model_hashes, cfg.model_hashes);

    let reg = Body::RootRegisterProxy {
        query_id: 2,
        info: "10.0.0.7:8001 10.0.0.7:8002".into(),
    };
    let run = run_internal(
        &root,
        run.data.as_ref().unwrap(),
        &owner,
        ONE_TON,
        &reg.to_cell().unwrap(),
    );
    assert_eq!(run.exit_code, 0, "root refused register_proxy");
    let after = RootConfig::from_data_cell(run.data.as_ref().unwrap()).unwrap();
    assert_eq!(after.last_proxy_seqno, 5);
    assert_eq!(after.registered_proxies.len(), 1);
    assert_eq!(after.registered_proxies[0].seqno, 5);
    assert_eq!(
        after.registered_proxies[0].address,
        "10.0.0.7:8001 10.0.0.7:8002"
    );

    let price = Body::RootChangePrice {
        query_id: 3,
        price_per_token: 2000,
        worker_fee_per_token: 1500,
    };
    let run = run_internal(
        &root,
        run.data.as_ref().unwrap(),
        &owner,
        ONE_TON,
        &price.to_cell().unwrap(),
    );
    assert_eq!(run.exit_code, 0, "root refused change_price");
    let after = RootConfig::from_data_cell(run.data.as_ref().unwrap()).unwrap();
    assert_eq!(after.params.price_per_token, 2000);
    assert_eq!(after.params.worker_fee_per_token, 1500);
    assert_eq!(after.params.params_version, cfg.params.params_version + 1);
    assert_eq!(after.version, 13);
    assert_eq!(after.params.client_sc_code, cfg.params.client_sc_code);

    // Not the owner: 1010.
    let run = run_internal(
        &root,
        &root.data,
        &addr(0x98),
        ONE_TON,
        &add.to_cell().unwrap(),
    );
    assert_eq!(run.exit_code, 1010);
}

/// Struct_version 5 on the real TVM: the owner names a key manager, a key-manager-signed
/// registration built by [`Body::signed_key_registration`] is accepted from a stranger, a
/// forged one is refused, and [`RootConfig::from_data_cell`] reads what the contract wrote.
#[test]
fn root_contract_registers_keys_signed_by_the_key_manager() {
    use cocoon_ton::messages::KeyRegistration;
    use cocoon_ton::root::RootConfig;
    let cfg = RootConfig {
        owner: addr(0x99),
        version: 1,
        proxy_hashes: vec![],
        registered_proxies: vec![],
        last_proxy_seqno: 0,
        worker_hashes: vec![],
        model_hashes: vec![],
        params: params("v5", "ours"),
        key_manager: Default::default(),
        verified_keys: Default::default(),
    };
    let root = ContractInit::new(code("ours-root.boc"), cfg.to_data_cell().unwrap()).unwrap();
    let km = ed25519_dalek::SigningKey::from_bytes(&[0x42; 32]);

    let change = Body::RootChangeKeyManager {
        query_id: 1,
        public_key: km.verifying_key().to_bytes(),
        image_hash: [0xee; 32],
        address: "127.0.0.1:13001".into(),
    };
    let run = run_internal(
        &root,
        &root.data,
        &addr(0x99),
        ONE_TON,
        &change.to_cell().unwrap(),
    );
    assert_eq!(run.exit_code, 0, "root refused change_key_manager");
    let data = run.data.unwrap();
    let after = RootConfig::from_data_cell(&data).unwrap();
    assert_eq!(after.key_manager.public_key, km.verifying_key().to_bytes());
    assert_eq!(after.key_manager.image_hash, [0xee; 32]);
    assert_eq!(
        after.key_manager.address.as_deref(),
        Some("127.0.0.1:13001")
    );
    assert_eq!(after.params.struct_version, 5);

    let key = KeyRegistration {
        public_key: [0x0a; 32],
        key_type: 1,
        expire_at: NOW + 86_400,
    };
    let signed = Body::signed_key_registration(&km, 7, addr(0x55), key).unwrap();
    assert_eq!(
        Body::parse(&signed.to_cell().unwrap()).unwrap(),
        signed,
        "round trip"
    );
    let run = run_internal(
        &root,
        &data,
        &addr(0x77),
        ONE_TON,
        &signed.to_cell().unwrap(),
    );
    assert_eq!(run.exit_code, 0, "root refused a key-manager-signed key");
    let after = RootConfig::from_data_cell(run.data.as_ref().unwrap()).unwrap();
    assert_eq!(after.key_manager.public_keys.len(), 1);
    assert_eq!(after.key_manager.public_keys[0].public_key, [0x0a; 32]);
    assert_eq!(after.key_manager.public_keys[0].expire_at, NOW + 86_400);
    assert_eq!(after.version, 3);
    assert_eq!(
        after.to_data_cell().unwrap(),
        *run.data.as_ref().unwrap(),
        "our writer agrees"
    );

    let forged = Body::signed_key_registration(
        &ed25519_dalek::SigningKey::from_bytes(&[0x43; 32]),
        8,
        addr(0x55),
        key,
    )
    .unwrap();
    let run = run_internal(
        &root,
        &data,
        &addr(0x77),
        ONE_TON,
        &forged.to_cell().unwrap(),
    );
    assert_eq!(run.exit_code, 1007, "a key not signed by the key manager");

    let owner_key = Body::RootAddPublicKey {
        query_id: 9,
        key: KeyRegistration {
            expire_at: NOW - 1,
            ..key
        },
    };
    let run = run_internal(
        &root,
        &data,
        &addr(0x99),
        ONE_TON,
        &owner_key.to_cell().unwrap(),
    );
    assert_eq!(run.exit_code, 1000, "an expired key");
}
