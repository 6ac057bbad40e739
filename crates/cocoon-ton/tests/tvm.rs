//! Runs wallet code in a TVM (tycho-vm) to prove that the external messages we
//! build are accepted: the official C++ cocoon wallet code and our own wallet
//! code both accept our signed request, bump the seqno and emit exactly our
//! internal messages; bad seqno and bad signatures are refused.

mod common;

use cocoon_ton::tycho_types::cell::Cell;
use cocoon_ton::tycho_types::models::{CurrencyCollection, IntAddr, StdAddr};
use cocoon_ton::wallet::{
    network, official_cocoon_wallet_code, CocoonWallet, InternalMessage, WalletV5R1, V5R1_CODE_HASH,
};
use common::*;
use tycho_vm::{
    GasParams, OwnedCellSlice, RcStackValue, SafeRc, SmcInfoBase, Stack, VmStateBuilder,
};

const NOW: u32 = 1_800_000_000;
const BALANCE: u64 = 10_000_000_000;

struct Outcome {
    exit_code: i32,
    data: Option<Cell>,
    actions: Vec<(u8, Cell)>,
}

/// Executes `recv_external` of a contract with code/data on the given external
/// message (cell) and body.
fn run_external(code: &Cell, data: &Cell, addr: &StdAddr, msg: &Cell, body: &Cell) -> Outcome {
    let smc = SmcInfoBase::new()
        .with_now(NOW)
        .with_block_lt(1000)
        .with_tx_lt(1000)
        .with_account_balance(CurrencyCollection::new(u128::from(BALANCE)))
        .with_account_addr(IntAddr::Std(addr.clone()))
        .require_ton_v4()
        .with_code(code.clone());
    let stack: Vec<RcStackValue> = vec![
        RcStackValue::new_dyn_value(num_bigint_from(BALANCE as i64)),
        RcStackValue::new_dyn_value(num_bigint_from(0)),
        SafeRc::into_dyn_value(SafeRc::new(msg.clone())),
        RcStackValue::new_dyn_value(OwnedCellSlice::new_allow_exotic(body.clone())),
        RcStackValue::new_dyn_value(num_bigint_from(-1)),
    ];
    let mut vm = VmStateBuilder::new()
        .with_smc_info(smc)
        .with_code(code.clone())
        .with_data(data.clone())
        .with_init_selector(false)
        .with_raw_stack(SafeRc::new(Stack { items: stack }))
        .with_gas(GasParams::unlimited())
        .build();
    let exit_code = !vm.run();
    let committed = vm.committed_state.take();
    let mut actions = Vec::new();
    let mut out_data = None;
    if let Some(c) = committed {
        out_data = Some(c.c4.clone());
        let mut cur = c.c5.clone();
        loop {
            let mut s = cur.as_slice().unwrap();
            if s.size_bits() == 0 && s.size_refs() == 0 {
                break;
            }
            let prev = s.load_reference_cloned().unwrap();
            assert_eq!(s.load_u32().unwrap(), 0x0ec3_c86d, "action_send_msg");
            let mode = s.load_u8().unwrap();
            actions.push((mode, s.load_reference_cloned().unwrap()));
            cur = prev;
        }
        actions.reverse();
    }
    Outcome {
        exit_code,
        data: out_data,
        actions,
    }
}

fn num_bigint_from(v: i64) -> tycho_vm::__export::num_bigint::BigInt {
    tycho_vm::__export::num_bigint::BigInt::from(v)
}

fn seqno_of(data: &Cell) -> u32 {
    data.as_slice().unwrap().load_u32().unwrap()
}

fn with_seqno(data: &Cell, seqno: u32) -> Cell {
    let mut s = data.as_slice().unwrap();
    s.load_u32().unwrap();
    let mut b = cocoon_ton::tycho_types::cell::CellBuilder::new();
    b.store_u32(seqno).unwrap();
    b.store_slice(s).unwrap();
    b.build().unwrap()
}

fn check_wallet(code: &Cell, expected_mode_bits: u8) {
    let w = CocoonWallet::new(key(5), addr(0x55), code).unwrap();
    let msgs: Vec<(u8, InternalMessage)> = vec![
        (
            0,
            InternalMessage::cocoon(addr(0x71), 700_000_000, None, Some(Cell::default())),
        ),
        (
            1,
            InternalMessage::cocoon(addr(0x72), 1, Some(w.contract().state_init.clone()), None),
        ),
    ];
    let data0 = w.contract().data.clone();
    let data = with_seqno(&data0, 4);
    let ext = w.external_message(4, NOW + 3600, &msgs).unwrap();
    let msg_cell = ext.to_cell().unwrap();
    let out = run_external(code, &data, w.address(), &msg_cell, &ext.body);
    assert_eq!(out.exit_code, 0, "wallet refused our request");
    assert_eq!(seqno_of(out.data.as_ref().unwrap()), 5);
    assert_eq!(out.actions.len(), 2);
    for ((mode, m), (got_mode, got)) in msgs.iter().zip(&out.actions) {
        assert_eq!(got_mode & !expected_mode_bits, *mode);
        assert_eq!(got.repr_hash(), m.to_cell().unwrap().repr_hash());
    }

    // Wrong seqno.
    let stale = w.external_message(3, NOW + 3600, &msgs).unwrap();
    let out = run_external(
        code,
        &data,
        w.address(),
        &stale.to_cell().unwrap(),
        &stale.body,
    );
    assert_ne!(out.exit_code, 0);
    // Signed by another key.
    let other = CocoonWallet::new(key(6), addr(0x55), code).unwrap();
    let forged = other.external_message(4, NOW + 3600, &msgs).unwrap();
    let out = run_external(
        code,
        &data,
        w.address(),
        &forged.to_cell().unwrap(),
        &forged.body,
    );
    assert_ne!(out.exit_code, 0);
    // Expired.
    let old = w.external_message(4, NOW - 1, &msgs).unwrap();
    let out = run_external(code, &data, w.address(), &old.to_cell().unwrap(), &old.body);
    assert_ne!(out.exit_code, 0);
}

#[test]
fn official_cocoon_wallet_accepts_our_request() {
    check_wallet(&official_cocoon_wallet_code().unwrap(), 0);
}

#[test]
fn our_cocoon_wallet_accepts_our_request() {
    // Our Tolk wallet sends every message with `mode | 2`.
    check_wallet(&code("ours-wallet.boc"), 2);
}

#[test]
fn standard_v5r1_accepts_our_request() {
    let code = WalletV5R1::standard_code().unwrap();
    assert_eq!(hex::encode(code.repr_hash().0), V5R1_CODE_HASH);
    let w = WalletV5R1::standard(key(8), network::TESTNET).unwrap();
    let init = w.contract().unwrap();
    // Deployed state with seqno 7.
    let mut b = cocoon_ton::tycho_types::cell::CellBuilder::new();
    let mut s = init.data.as_slice().unwrap();
    b.store_bit(s.load_bit().unwrap()).unwrap();
    s.load_u32().unwrap();
    b.store_u32(7).unwrap();
    b.store_slice(s).unwrap();
    let data = b.build().unwrap();

    let msgs: Vec<(u8, InternalMessage)> = (1..=3)
        .map(|n| (3u8, InternalMessage::cocoon(addr(n), 1_000_000, None, None)))
        .collect();
    let ext = w.external_message(7, NOW + 60, &msgs).unwrap();
    let out = run_external(
        &code,
        &data,
        &init.address,
        &ext.to_cell().unwrap(),
        &ext.body,
    );
    assert_eq!(out.exit_code, 0, "v5r1 refused our request");
    let new_data = out.data.unwrap();
    let mut s = new_data.as_slice().unwrap();
    s.load_bit().unwrap();
    assert_eq!(s.load_u32().unwrap(), 8);
    assert_eq!(out.actions.len(), 3);
    for ((mode, m), (got_mode, got)) in msgs.iter().zip(&out.actions) {
        assert_eq!(got_mode, mode);
        assert_eq!(got.repr_hash(), m.to_cell().unwrap().repr_hash());
    }
    // Wrong key, wrong seqno, wrong wallet id are refused.
    let other = WalletV5R1::standard(key(9), network::TESTNET).unwrap();
    let forged = other.external_message(7, NOW + 60, &msgs).unwrap();
    let out = run_external(
        &code,
        &data,
        &init.address,
        &forged.to_cell().unwrap(),
        &forged.body,
    );
    assert_ne!(out.exit_code, 0);
    let stale = w.external_message(6, NOW + 60, &msgs).unwrap();
    let out = run_external(
        &code,
        &data,
        &init.address,
        &stale.to_cell().unwrap(),
        &stale.body,
    );
    assert_ne!(out.exit_code, 0);
    let mainnet = WalletV5R1::new(
        key(8),
        WalletV5R1::default_wallet_id(network::MAINNET, 0, 0),
        code.clone(),
    );
    let wrong_net = mainnet.external_message(7, NOW + 60, &msgs).unwrap();
    let out = run_external(
        &code,
        &data,
        &init.address,
        &wrong_net.to_cell().unwrap(),
        &wrong_net.body,
    );
    assert_ne!(out.exit_code, 0);
    // Modes without IGNORE_ERRORS are refused by the builder.
    assert!(w
        .sign_request(7, NOW + 60, &[(1, msgs[0].1.clone())])
        .is_err());
}
