//! Voucher behaviour: sign → verify, tampering, wrong keys and contracts,
//! repacking, strict parsing, and the "never decrease" ordering.

mod common;

use cocoon_ton::cells::{from_boc, store_address, to_boc};
use cocoon_ton::tycho_types::cell::{CellBuilder, HashBytes};
use cocoon_ton::voucher::{
    BestVoucher, SignedVoucher, Voucher, VoucherKind, VoucherSigner, VoucherVerifier,
};
use cocoon_ton::{StdAddr, TonError};
use common::*;
use proptest::prelude::*;

fn signer() -> VoucherSigner {
    VoucherSigner::new(key(1), addr(0x66))
}

#[test]
fn sign_verify_each_kind() {
    let s = signer();
    for kind in VoucherKind::ALL {
        let v = Voucher::new(kind, 42, 1000, addr(0x33));
        let boc = s.sign_to_boc(v.clone()).unwrap();
        let verifier = VoucherVerifier::new(s.public_key(), addr(0x33));
        let got = verifier.check_boc(&boc, kind).unwrap();
        assert_eq!(got.voucher, v);
        let expected_tokens = if kind.has_tokens() { 1000 } else { 0 };
        assert_eq!(got.tokens(), expected_tokens);
        // Another kind is refused.
        let other = VoucherKind::ALL.into_iter().find(|k| *k != kind).unwrap();
        assert!(verifier.check_boc(&boc, other).is_err());
    }
}

#[test]
fn flipped_bit_fails() {
    let s = signer();
    let signed = s.sign(Voucher::client_charge(1, 500, addr(0x33))).unwrap();
    let pk = s.public_key();
    signed.verify(&pk).unwrap();
    for byte in [0usize, 17, 63] {
        let mut bad = signed.clone();
        bad.signature[byte] ^= 0x01;
        assert!(matches!(bad.verify(&pk), Err(TonError::Signature(_))));
    }
    let mut bad = signed.clone();
    bad.voucher.tokens += 1;
    assert!(bad.verify(&pk).is_err());
    let mut bad = signed.clone();
    bad.voucher.query_id ^= 1 << 40;
    assert!(bad.verify(&pk).is_err());
    let mut bad = signed;
    bad.voucher.contract.address.0[31] ^= 0x80;
    assert!(bad.verify(&pk).is_err());
}

#[test]
fn wrong_key_and_wrong_contract_fail() {
    let s = signer();
    let boc = s
        .sign_to_boc(Voucher::worker_payout(1, 10, addr(0x44)))
        .unwrap();
    let wrong_key = key(2).verifying_key().to_bytes();
    assert!(VoucherVerifier::new(wrong_key, addr(0x44))
        .check_boc(&boc, VoucherKind::WorkerPayout)
        .is_err());
    assert!(matches!(
        VoucherVerifier::new(s.public_key(), addr(0x45)).check_boc(&boc, VoucherKind::WorkerPayout),
        Err(TonError::WrongContract { .. })
    ));
}

#[test]
fn repack_keeps_signature_valid() {
    let s = signer();
    let signed = s.sign(Voucher::client_charge(7, 99, addr(0x33))).unwrap();
    let repacked = signed.repack(addr(0x77));
    assert_eq!(repacked.send_excesses_to, addr(0x77));
    repacked.verify(&s.public_key()).unwrap();
    let back = SignedVoucher::from_boc(&repacked.to_boc().unwrap()).unwrap();
    assert_eq!(back, repacked);
    assert_ne!(signed.to_boc().unwrap(), repacked.to_boc().unwrap());
}

#[test]
fn strict_wrapper_layout() {
    let s = signer();
    let signed = s.sign(Voucher::client_charge(7, 99, addr(0x33))).unwrap();
    let payload = signed.voucher.payload_cell().unwrap();

    // Extra bit in the wrapper.
    let mut b = CellBuilder::new();
    b.store_u32(signed.voucher.kind.op()).unwrap();
    b.store_u64(7).unwrap();
    store_address(&mut b, &addr(0x66)).unwrap();
    b.store_raw(&signed.signature, 512).unwrap();
    b.store_bit_one().unwrap();
    b.store_reference(payload.clone()).unwrap();
    assert!(SignedVoucher::from_cell(&b.build().unwrap()).is_err());

    // Query id differing between wrapper and payload.
    let mut b = CellBuilder::new();
    b.store_u32(signed.voucher.kind.op()).unwrap();
    b.store_u64(8).unwrap();
    store_address(&mut b, &addr(0x66)).unwrap();
    b.store_raw(&signed.signature, 512).unwrap();
    b.store_reference(payload).unwrap();
    assert!(SignedVoucher::from_cell(&b.build().unwrap()).is_err());

    // Garbage bytes.
    assert!(SignedVoucher::from_boc(&[0xb5, 0xee, 0x9c, 0x72, 1, 2, 3]).is_err());
    assert!(SignedVoucher::from_boc(&[]).is_err());
    // A BOC of something else.
    let other = CellBuilder::build_from(0xdeadbeefu32).unwrap();
    assert!(SignedVoucher::from_boc(&to_boc(&other)).is_err());
    // The proper wrapper still parses.
    assert!(SignedVoucher::from_cell(&from_boc(&signed.to_boc().unwrap()).unwrap()).is_ok());
}

#[test]
fn best_voucher_basic() {
    let s = signer();
    let mut slot = BestVoucher::new();
    assert_eq!(slot.tokens(), 0);
    assert!(slot.offer(s.sign(Voucher::client_charge(1, 10, addr(0x33))).unwrap()));
    assert!(!slot.offer(s.sign(Voucher::client_charge(2, 10, addr(0x33))).unwrap()));
    assert!(!slot.offer(s.sign(Voucher::client_charge(3, 9, addr(0x33))).unwrap()));
    // Another contract or kind is never better.
    assert!(!slot.offer(s.sign(Voucher::client_charge(4, 1000, addr(0x34))).unwrap()));
    assert!(!slot.offer(s.sign(Voucher::worker_payout(4, 1000, addr(0x33))).unwrap()));
    assert!(slot.offer(s.sign(Voucher::client_charge(5, 11, addr(0x33))).unwrap()));
    assert_eq!(slot.tokens(), 11);
}

fn arb_addr() -> impl Strategy<Value = StdAddr> {
    (any::<i8>(), any::<[u8; 32]>()).prop_map(|(wc, h)| StdAddr::new(wc, HashBytes(h)))
}

fn arb_voucher() -> impl Strategy<Value = Voucher> {
    (0usize..6, any::<u64>(), any::<u64>(), arb_addr())
        .prop_map(|(k, q, t, a)| Voucher::new(VoucherKind::ALL[k], q, t, a))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn encode_decode_identity(v in arb_voucher(), excess in arb_addr(), sig in any::<[u8; 32]>()) {
        // Arbitrary signature bytes: encoding must not care whether they verify.
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&sig);
        signature[32..].copy_from_slice(&sig);
        let sv = SignedVoucher { voucher: v, send_excesses_to: excess, signature };
        let boc = sv.to_boc().unwrap();
        prop_assert_eq!(SignedVoucher::from_boc(&boc).unwrap(), sv.clone());
        prop_assert_eq!(Voucher::from_payload_cell(&sv.voucher.payload_cell().unwrap()).unwrap(), sv.voucher);
    }

    #[test]
    fn signed_roundtrip_verifies(v in arb_voucher()) {
        let s = signer();
        let signed = s.sign(v).unwrap();
        let back = SignedVoucher::from_boc(&signed.to_boc().unwrap()).unwrap();
        prop_assert!(back.verify(&s.public_key()).is_ok());
    }

    #[test]
    fn ordering_never_lowers(offers in proptest::collection::vec((any::<u64>(), 0u64..50), 1..40)) {
        let s = signer();
        let mut slot = BestVoucher::new();
        let mut max_seen = 0u64;
        for (q, t) in offers {
            let v = s.sign(Voucher::client_charge(q, t, addr(0x33))).unwrap();
            let was_empty = slot.get().is_none();
            let before = slot.tokens();
            let replaced = slot.offer(v);
            prop_assert!(slot.tokens() >= before);
            prop_assert_eq!(replaced, was_empty || t > before);
            max_seen = max_seen.max(t);
            prop_assert_eq!(slot.tokens(), max_seen);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = SignedVoucher::from_boc(&bytes);
        let mut with_magic = vec![0xb5, 0xee, 0x9c, 0x72];
        with_magic.extend_from_slice(&bytes);
        let _ = SignedVoucher::from_boc(&with_magic);
    }

    #[test]
    fn mutated_voucher_boc_never_verifies_falsely(v in arb_voucher(), pos in any::<usize>(), bit in 0u8..8) {
        let s = signer();
        let signed = s.sign(v).unwrap();
        let mut boc = signed.to_boc().unwrap();
        let i = pos % boc.len();
        boc[i] ^= 1 << bit;
        if let Ok(parsed) = SignedVoucher::from_boc(&boc) {
            // Either the flip hit the unsigned excess address (still valid and
            // the same voucher), or verification must fail.
            if parsed.verify(&s.public_key()).is_ok() {
                prop_assert_eq!(parsed.voucher, signed.voucher);
                prop_assert_eq!(parsed.signature, signed.signature);
            }
        }
    }
}
