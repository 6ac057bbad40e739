//! Wallet message layouts and signatures (cocoon wallet and v5r1), and the
//! internal/external message envelopes.

mod common;

use cocoon_ton::cells::{from_boc, to_boc};
use cocoon_ton::tycho_types::cell::CellBuilder;
use cocoon_ton::wallet::{
    network, CocoonWallet, CocoonWalletRequest, ExternalMessage, InternalMessage, V5R1Request,
    WalletV5R1, COCOON_WALLET_MAX_MESSAGES,
};
use cocoon_ton::Cell;
use common::*;

fn msg(n: u8) -> InternalMessage {
    InternalMessage::cocoon(
        addr(n),
        1_000_000 * u64::from(n),
        None,
        Some(CellBuilder::build_from(u32::from(n)).unwrap()),
    )
}

#[test]
fn internal_message_round_trip_and_header() {
    let m = msg(7);
    let c = m.to_cell().unwrap();
    assert_eq!(InternalMessage::from_cell(&c).unwrap(), m);
    // Header bits: 0 1 1 0 00 (bounceable, no StateInit) = 0x18 in 6 bits.
    assert_eq!(c.data()[0] >> 2, 0x18);
    let si = CellBuilder::build_from(1u8).unwrap();
    let m = InternalMessage::cocoon(addr(1), 5, Some(si), None);
    let c = m.to_cell().unwrap();
    assert_eq!(c.data()[0] >> 2, 0x10);
    assert_eq!(InternalMessage::from_cell(&c).unwrap(), m);
}

#[test]
fn cocoon_wallet_request_layout_and_signature() {
    let w = CocoonWallet::new(key(5), addr(0x55), &code("ours-wallet.boc")).unwrap();
    let msgs: Vec<_> = (1..=4).map(|n| (0u8, msg(n))).collect();
    let body = w.sign_request(9, 1_800_000_000, &msgs).unwrap();
    assert_eq!(body.bit_len(), 512 + 96 + 4 * 8);
    assert_eq!(body.reference_count(), 4);
    let req = CocoonWalletRequest::from_cell(&body).unwrap();
    assert_eq!(
        (req.subwallet, req.valid_until, req.seqno),
        (0, 1_800_000_000, 9)
    );
    assert_eq!(req.messages.len(), 4);
    assert_eq!(
        InternalMessage::from_cell(&req.messages[2].1).unwrap(),
        msg(3)
    );
    req.verify(&w.public_key()).unwrap();
    assert!(req.verify(&key(6).verifying_key().to_bytes()).is_err());
    // Flip a bit of the signed part: the signature no longer holds.
    let mut bad = req.clone();
    bad.signed_hash[0] ^= 1;
    assert!(bad.verify(&w.public_key()).is_err());
    // At most 4 messages.
    let five: Vec<_> = (1..=5).map(|n| (0u8, msg(n))).collect();
    assert!(five.len() > COCOON_WALLET_MAX_MESSAGES);
    assert!(w.sign_request(0, 0, &five).is_err());
    // Our wallet code gives another address than the official one.
    let official = CocoonWallet::new(
        key(5),
        addr(0x55),
        &cocoon_ton::wallet::official_cocoon_wallet_code().unwrap(),
    )
    .unwrap();
    assert_ne!(official.address(), w.address());
}

#[test]
fn external_message_round_trip() {
    let w = CocoonWallet::new(key(5), addr(0x55), &code("ours-wallet.boc")).unwrap();
    let ext = w
        .external_message(0, 1_800_000_000, &[(1, msg(2))])
        .unwrap();
    let back = ExternalMessage::from_cell(&from_boc(&ext.to_boc().unwrap()).unwrap()).unwrap();
    assert_eq!(back, ext);
    assert_eq!(ext.dest, *w.address());
    assert_eq!(
        ext.state_init.as_ref().unwrap().repr_hash(),
        &w.address().address
    );
}

#[test]
fn v5r1_wallet_id_and_request() {
    // The well-known default id of a mainnet v5r1 wallet in workchain 0.
    assert_eq!(
        WalletV5R1::default_wallet_id(network::MAINNET, 0, 0),
        2_147_483_409
    );
    assert_eq!(
        WalletV5R1::default_wallet_id(network::TESTNET, 0, 0),
        2_147_483_645
    );
    // The code cell is a parameter; any cell works for layout checks.
    let code: Cell = CellBuilder::build_from(0xc0deu16).unwrap();
    let id = WalletV5R1::default_wallet_id(network::TESTNET, 0, 0);
    let w = WalletV5R1::new(key(8), id, code);
    let data = w.data_cell().unwrap();
    assert_eq!(data.bit_len(), 1 + 32 + 32 + 256 + 1);
    let msgs: Vec<_> = (1..=3).map(|n| (3u8, msg(n))).collect();
    let body = w.sign_request(4, 1_800_000_000, &msgs).unwrap();
    let req = V5R1Request::from_cell(&body).unwrap();
    assert_eq!(
        (req.wallet_id, req.seqno, req.valid_until),
        (id, 4, 1_800_000_000)
    );
    assert_eq!(req.messages.len(), 3);
    for (i, (mode, m)) in req.messages.iter().enumerate() {
        assert_eq!(*mode, 3);
        assert_eq!(InternalMessage::from_cell(m).unwrap(), msg(i as u8 + 1));
    }
    req.verify(&key(8).verifying_key().to_bytes()).unwrap();
    assert!(req.verify(&key(9).verifying_key().to_bytes()).is_err());
    // Empty request.
    let empty = V5R1Request::from_cell(&w.sign_request(5, 1, &[]).unwrap()).unwrap();
    assert!(empty.messages.is_empty());
    let ext = w.external_message(0, 1, &msgs).unwrap();
    let back =
        ExternalMessage::from_cell(&from_boc(&to_boc(&ext.to_cell().unwrap())).unwrap()).unwrap();
    assert_eq!(back, ext);
}
