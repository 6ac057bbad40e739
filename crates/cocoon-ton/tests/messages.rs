//! Every message body round-trips through `Body::to_cell` / `Body::parse`, and
//! a few layouts are pinned bit for bit against the spec.

mod common;

use cocoon_ton::cells::{from_boc, to_boc, ADDRESS_BITS};
use cocoon_ton::messages::{Body, ClientProxyPayload, ClientStateReport, WorkerPayoutPayload};
use cocoon_ton::opcodes as op;
use cocoon_ton::tycho_types::cell::CellBuilder;
use cocoon_ton::voucher::{Voucher, VoucherSigner};
use common::*;

fn all_bodies() -> Vec<Body> {
    let code = CellBuilder::build_from(0x1234u16).unwrap();
    let code2 = CellBuilder::build_from(0x5678u32).unwrap();
    let code3 = CellBuilder::build_from(0x9abcu16).unwrap();
    let signer = VoucherSigner::new(key(1), addr(0x66));
    let state = ClientStateReport {
        state: 1,
        balance: 5_000_000_000,
        stake: 1_000_000_000,
        tokens_used: 777,
        secret_hash: [9; 32],
    };
    let mut v = vec![
        Body::Excesses { query_id: 1 },
        Body::Payout { query_id: 2 },
        Body::ProxySaveState {
            query_id: 3,
            seqno: -5,
            session_hash: [0xab; 32],
        },
        Body::RootRegisterProxy {
            query_id: 4,
            info: "1.2.3.4:5 6.7.8.9:10".into(),
        },
        Body::RootUnregisterProxy {
            query_id: 5,
            seqno: 7,
        },
        Body::RootUpdateProxy {
            query_id: 6,
            seqno: 8,
            info: "[1.2.3.4]:5".into(),
        },
        Body::RootChangePrice {
            query_id: 7,
            price_per_token: 20,
            worker_fee_per_token: 10,
        },
        Body::RootChangeParams {
            query_id: 8,
            price_per_token: 20,
            worker_fee_per_token: 10,
            proxy_delay_before_close: 100,
            client_delay_before_close: 50,
            min_proxy_stake: 3,
            min_client_stake: 0,
        },
        Body::RootUpgradeContracts {
            query_id: 9,
            proxy_code: code.clone(),
            worker_code: code2.clone(),
            client_code: code3,
        },
        Body::RootUpgrade {
            query_id: 10,
            code: code.clone(),
        },
        Body::RootReset { query_id: 11 },
        Body::RootUpgradeFull {
            query_id: 12,
            data: code2,
            code: code.clone(),
        },
        Body::RootChangeOwner {
            query_id: 13,
            new_owner: addr(0x10),
        },
        Body::WorkerProxyRequest {
            query_id: 14,
            owner: addr(0x44),
            state: 2,
            tokens: 123,
            payload: None,
        },
        Body::WorkerProxyRequest {
            query_id: 15,
            owner: addr(0x44),
            state: 0,
            tokens: 124,
            payload: Some(WorkerPayoutPayload {
                worker_part: 600,
                proxy_part: 400,
                send_excesses_to: addr(0x45),
            }),
        },
        Body::ClientProxyRequest {
            query_id: 16,
            owner: addr(0x33),
            state: state.clone(),
            payload: None,
        },
        Body::ExtProxyIncreaseStake {
            query_id: 17,
            grams: 10,
            send_excesses_to: addr(1),
        },
        Body::ExtProxyPayoutRequest {
            query_id: 18,
            send_excesses_to: addr(2),
        },
        Body::OwnerProxyClose {
            query_id: None,
            send_excesses_to: addr(3),
        },
        Body::OwnerProxyClose {
            query_id: Some(19),
            send_excesses_to: addr(3),
        },
        Body::OwnerWorkerRegister {
            query_id: 20,
            send_excesses_to: addr(4),
        },
        Body::ExtClientTopUp {
            query_id: 21,
            amount: 1_000_000_000,
            send_excesses_to: addr(5),
        },
        Body::OwnerClientTopUpReopen {
            query_id: 22,
            amount: 1,
            send_excesses_to: addr(5),
        },
        Body::OwnerClientRegister {
            query_id: 23,
            nonce: u64::MAX,
            send_excesses_to: addr(5),
        },
        Body::OwnerClientChangeSecretHash {
            query_id: 24,
            secret_hash: [7; 32],
            send_excesses_to: addr(5),
        },
        Body::OwnerClientChangeSecretHashAndTopUp {
            query_id: 25,
            amount: 2,
            secret_hash: [8; 32],
            send_excesses_to: addr(5),
        },
        Body::OwnerClientRequestRefund {
            query_id: 26,
            send_excesses_to: addr(5),
        },
        Body::OwnerClientIncreaseStake {
            query_id: 27,
            new_stake: 3_000_000_000,
            send_excesses_to: addr(5),
        },
        Body::OwnerClientWithdraw {
            query_id: 28,
            send_excesses_to: addr(5),
        },
        Body::OwnerWalletSendMessage {
            query_id: 29,
            mode: 3,
            message: code,
        },
        Body::Text("c".into()),
        Body::Text("w".into()),
        Body::Signed(
            signer
                .sign(Voucher::client_charge(30, 1000, addr(0x33)))
                .unwrap(),
        ),
    ];
    for o in [
        op::ROOT_ADD_WORKER_TYPE,
        op::ROOT_DEL_WORKER_TYPE,
        op::ROOT_ADD_PROXY_TYPE,
        op::ROOT_DEL_PROXY_TYPE,
        op::ROOT_ADD_MODEL_TYPE,
        op::ROOT_DEL_MODEL_TYPE,
    ] {
        v.push(Body::RootHash {
            op: o,
            query_id: 31,
            hash: [0x5a; 32],
        });
    }
    for p in [
        ClientProxyPayload::TopUp {
            coins: 5,
            send_excesses_to: addr(6),
        },
        ClientProxyPayload::Register { nonce: 99 },
        ClientProxyPayload::RefundGranted {
            coins: 6,
            send_excesses_to: addr(6),
        },
        ClientProxyPayload::RefundForce {
            coins: 7,
            send_excesses_to: addr(6),
        },
    ] {
        v.push(Body::ClientProxyRequest {
            query_id: 32,
            owner: addr(0x33),
            state: state.clone(),
            payload: Some(p),
        });
    }
    v
}

#[test]
fn every_body_round_trips() {
    for body in all_bodies() {
        let cell = body.to_cell().unwrap();
        let back = Body::parse(&cell).unwrap_or_else(|e| panic!("{body:?}: {e}"));
        assert_eq!(back, body);
        // And through BOC bytes.
        let back = Body::parse(&from_boc(&to_boc(&cell)).unwrap()).unwrap();
        assert_eq!(back, body);
        if !matches!(
            body,
            Body::Text(_) | Body::OwnerProxyClose { query_id: None, .. }
        ) {
            assert_eq!(
                Body::peek_op_query_id(&cell).map(|(o, _)| o),
                Some(body.op())
            );
        }
    }
}

#[test]
fn trailing_data_is_refused() {
    for body in all_bodies() {
        if matches!(body, Body::Text(_)) {
            continue;
        }
        let cell = body.to_cell().unwrap();
        let mut b = CellBuilder::new();
        b.store_slice(cell.as_slice().unwrap()).unwrap();
        b.store_bit_one().unwrap();
        let longer = b.build().unwrap();
        assert!(Body::parse(&longer).is_err(), "{body:?}");
    }
}

#[test]
fn pinned_layouts() {
    // proxy_save_state: op qid inner_op seqno:int32 hash:256, no refs.
    let c = Body::ProxySaveState {
        query_id: 1,
        seqno: 2,
        session_hash: [3; 32],
    }
    .to_cell()
    .unwrap();
    assert_eq!(c.bit_len(), 32 + 64 + 32 + 32 + 256);
    assert_eq!(c.reference_count(), 0);
    // owner_proxy_close as the C++ builds it: op + address only.
    let c = Body::OwnerProxyClose {
        query_id: None,
        send_excesses_to: addr(1),
    }
    .to_cell()
    .unwrap();
    assert_eq!(c.bit_len(), 32 + ADDRESS_BITS);
    // owner_client_register: op qid nonce:64 address.
    let c = Body::OwnerClientRegister {
        query_id: 1,
        nonce: 2,
        send_excesses_to: addr(1),
    }
    .to_cell()
    .unwrap();
    assert_eq!(c.bit_len(), 32 + 64 + 64 + ADDRESS_BITS);
    // ext_client_top_up with 1 TON: coins take 4 + 32 bits.
    let c = Body::ExtClientTopUp {
        query_id: 1,
        amount: 1_000_000_000,
        send_excesses_to: addr(1),
    }
    .to_cell()
    .unwrap();
    assert_eq!(c.bit_len(), 32 + 64 + 4 + 32 + ADDRESS_BITS);
    // client_proxy_request: state in a ref, payload Maybe ^Cell.
    let c = Body::ClientProxyRequest {
        query_id: 1,
        owner: addr(1),
        state: ClientStateReport {
            state: 0,
            balance: 0,
            stake: 0,
            tokens_used: 0,
            secret_hash: [0; 32],
        },
        payload: Some(ClientProxyPayload::Register { nonce: 5 }),
    }
    .to_cell()
    .unwrap();
    assert_eq!(c.bit_len(), 32 + 64 + ADDRESS_BITS + 1);
    assert_eq!(c.reference_count(), 2);
    // Text commands.
    let c = Body::Text("w".into()).to_cell().unwrap();
    assert_eq!(c.bit_len(), 40);
}

#[test]
fn unknown_op_is_refused() {
    let c = CellBuilder::build_from((0x1111_2222u32, 5u64)).unwrap();
    assert!(Body::parse(&c).is_err());
    let short = CellBuilder::build_from(0x2565_934cu32).unwrap();
    assert!(Body::parse(&short).is_err());
    assert!(Body::RootHash {
        op: 1,
        query_id: 0,
        hash: [0; 32]
    }
    .to_cell()
    .is_err());
}

mod prop {
    use super::*;
    use cocoon_ton::tycho_types::cell::HashBytes;
    use cocoon_ton::StdAddr;
    use proptest::prelude::*;

    fn arb_addr() -> impl Strategy<Value = StdAddr> {
        (any::<i8>(), any::<[u8; 32]>()).prop_map(|(w, h)| StdAddr::new(w, HashBytes(h)))
    }

    fn arb_body() -> impl Strategy<Value = Body> {
        prop_oneof![
            (any::<u64>(), any::<u64>(), arb_addr()).prop_map(|(q, a, e)| Body::ExtClientTopUp {
                query_id: q,
                amount: a,
                send_excesses_to: e
            }),
            (any::<u64>(), any::<u64>(), arb_addr()).prop_map(|(q, n, e)| {
                Body::OwnerClientRegister {
                    query_id: q,
                    nonce: n,
                    send_excesses_to: e,
                }
            }),
            (any::<u64>(), any::<i32>(), any::<[u8; 32]>()).prop_map(|(q, s, h)| {
                Body::ProxySaveState {
                    query_id: q,
                    seqno: s,
                    session_hash: h,
                }
            }),
            (
                any::<u64>(),
                arb_addr(),
                0u8..4,
                any::<u64>(),
                proptest::option::of((any::<u64>(), any::<u64>(), arb_addr()))
            )
                .prop_map(|(q, o, s, t, p)| Body::WorkerProxyRequest {
                    query_id: q,
                    owner: o,
                    state: s,
                    tokens: t,
                    payload: p.map(|(w, pp, e)| WorkerPayoutPayload {
                        worker_part: w,
                        proxy_part: pp,
                        send_excesses_to: e,
                    }),
                }),
            (
                any::<u64>(),
                arb_addr(),
                (
                    0u8..4,
                    any::<u64>(),
                    any::<u64>(),
                    any::<u64>(),
                    any::<[u8; 32]>()
                ),
                proptest::option::of(any::<u64>())
            )
                .prop_map(|(q, o, (st, b, sk, t, h), n)| Body::ClientProxyRequest {
                    query_id: q,
                    owner: o,
                    state: ClientStateReport {
                        state: st,
                        balance: b,
                        stake: sk,
                        tokens_used: t,
                        secret_hash: h,
                    },
                    payload: n.map(|nonce| ClientProxyPayload::Register { nonce }),
                }),
            (any::<u64>(), "[ -~]{0,60}")
                .prop_map(|(q, info)| Body::RootRegisterProxy { query_id: q, info }),
        ]
    }

    proptest! {
        #[test]
        fn random_bodies_round_trip(body in arb_body()) {
            let cell = body.to_cell().unwrap();
            prop_assert_eq!(Body::parse(&from_boc(&to_boc(&cell)).unwrap()).unwrap(), body);
        }

        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), bits in 0u16..1023) {
            let bits = bits.min(bytes.len() as u16 * 8);
            if let Ok(cell) = CellBuilder::from_raw_data(&bytes, bits).and_then(|b| b.build()) {
                let _ = Body::parse(&cell);
                let _ = cocoon_ton::voucher::SignedVoucher::from_cell(&cell);
                let _ = cocoon_ton::root::RootConfig::from_data_cell(&cell);
                let _ = cocoon_ton::wallet::InternalMessage::from_cell(&cell);
            }
        }
    }
}
