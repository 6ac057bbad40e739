//! The wallet send queue against the fake chain: batching by 4, value limits,
//! resends, confirmation by body hash, and re-sending after a lost request.

mod common;

use cocoon_ton::chain::ChainBackend;
use cocoon_ton::fake::FakeTon;
use cocoon_ton::outbox::{Blocked, Poll, WalletOutbox};
use cocoon_ton::root::{RootConfig, ONE_TON};
use cocoon_ton::wallet::{CocoonWallet, InternalMessage};
use common::*;

const T0: u32 = 1_800_000_000;

fn setup() -> (FakeTon, CocoonWallet) {
    let cfg = RootConfig {
        owner: addr(0x99),
        version: 1,
        proxy_hashes: vec![],
        registered_proxies: vec![],
        last_proxy_seqno: 0,
        worker_hashes: vec![],
        model_hashes: vec![],
        params: params("v1", "ours"),
        key_manager: Default::default(),
        verified_keys: Default::default(),
    };
    let f = FakeTon::new(addr(0xee), cfg, false).unwrap();
    f.set_time(Some(T0));
    let w = CocoonWallet::new(key(5), addr(0x55), &code("ours-wallet.boc")).unwrap();
    (f, w)
}

fn msg(n: u8, value: u64) -> InternalMessage {
    InternalMessage::cocoon(addr(n), value, None, None)
}

async fn seqno(f: &FakeTon, w: &CocoonWallet) -> u32 {
    let st = f.account_state(w.address()).await.unwrap();
    st.data
        .map(|d| d.as_slice().unwrap().load_u32().unwrap())
        .unwrap_or(0)
}

#[tokio::test]
async fn batches_confirm_and_continue() {
    let (f, w) = setup();
    f.fund(w.address(), 100 * ONE_TON);
    let mut ob = WalletOutbox::new(2 * ONE_TON);
    let ids: Vec<_> = (1..=6).map(|n| ob.push(msg(n, ONE_TON))).collect();

    let Poll::Send(ext) = ob.poll(&w, 0, f.balance(w.address()), T0).unwrap() else {
        panic!("expected a request");
    };
    assert!(ext.state_init.is_some());
    f.send_external(ext.to_boc().unwrap()).await.unwrap();
    assert_eq!(
        ob.poll(&w, 0, 100 * ONE_TON, T0 + 1).unwrap(),
        Poll::Nothing(Blocked::Waiting)
    );

    let page = f.transactions(w.address(), None, 10).await.unwrap();
    let mut confirmed = Vec::new();
    for tx in &page.transactions {
        confirmed.extend(ob.on_transaction(tx));
    }
    assert_eq!(confirmed, ids[..4].to_vec());
    ob.on_seqno(seqno(&f, &w).await);
    assert_eq!(ob.len(), 2);

    let Poll::Send(ext) = ob
        .poll(&w, seqno(&f, &w).await, f.balance(w.address()), T0 + 2)
        .unwrap()
    else {
        panic!("expected a request");
    };
    assert!(ext.state_init.is_none());
    f.send_external(ext.to_boc().unwrap()).await.unwrap();
    let page = f.transactions(w.address(), page.cursor, 10).await.unwrap();
    let confirmed: Vec<_> = page
        .transactions
        .iter()
        .flat_map(|t| ob.on_transaction(t))
        .collect();
    assert_eq!(confirmed, ids[4..].to_vec());
    assert!(ob.is_empty());
    assert_eq!(f.delivered().len(), 6);
    assert_eq!(
        ob.poll(&w, 2, 100 * ONE_TON, T0 + 3).unwrap(),
        Poll::Nothing(Blocked::Idle)
    );
}

#[tokio::test]
async fn resend_and_lost_request() {
    let (_f, w) = setup();
    let mut ob = WalletOutbox::new(0);
    ob.push(msg(1, ONE_TON));
    let Poll::Send(first) = ob.poll(&w, 3, 10 * ONE_TON, T0).unwrap() else {
        panic!()
    };
    assert_eq!(
        ob.poll(&w, 3, 10 * ONE_TON, T0 + 29).unwrap(),
        Poll::Nothing(Blocked::Waiting)
    );
    // After 30 s the very same request is sent again.
    assert_eq!(
        ob.poll(&w, 3, 10 * ONE_TON, T0 + 30).unwrap(),
        Poll::Send(first.clone())
    );
    // The seqno moved on without our transaction: send the batch again, new seqno.
    ob.on_seqno(4);
    assert!(!ob.in_flight());
    let Poll::Send(again) = ob.poll(&w, 4, 10 * ONE_TON, T0 + 31).unwrap() else {
        panic!()
    };
    assert_ne!(again.body.repr_hash(), first.body.repr_hash());
    assert_eq!(ob.len(), 1);
}

#[test]
fn value_limits() {
    let (_f, w) = setup();
    let mut ob = WalletOutbox::new(2 * ONE_TON);
    ob.push(msg(1, 3 * ONE_TON));
    ob.push(msg(2, 3 * ONE_TON));
    // Below the low-balance mark: nothing.
    assert_eq!(
        ob.poll(&w, 0, ONE_TON, T0).unwrap(),
        Poll::Nothing(Blocked::LowBalance)
    );
    // First message does not fit with the 0.1 TON reserve.
    assert_eq!(
        ob.poll(&w, 0, 3 * ONE_TON, T0).unwrap(),
        Poll::Nothing(Blocked::TooExpensive)
    );
    // Only the first fits.
    let Poll::Send(ext) = ob.poll(&w, 0, 6 * ONE_TON, T0).unwrap() else {
        panic!()
    };
    let req = cocoon_ton::wallet::CocoonWalletRequest::from_cell(&ext.body).unwrap();
    assert_eq!(req.messages.len(), 1);
    assert_eq!(req.valid_until, T0 + 3600);
    // Tiny values are sent with mode 1 (pay fees separately).
    let mut ob = WalletOutbox::new(0);
    ob.push(msg(1, 1));
    let Poll::Send(ext) = ob.poll(&w, 0, ONE_TON, T0).unwrap() else {
        panic!()
    };
    let req = cocoon_ton::wallet::CocoonWalletRequest::from_cell(&ext.body).unwrap();
    assert_eq!(req.messages[0].0, 1);
}

#[tokio::test]
async fn settlement_messages_through_the_fake_chain() {
    use cocoon_ton::contracts::client_contract;
    use cocoon_ton::messages::Body;
    use cocoon_ton::settlement::*;
    use cocoon_ton::voucher::{Voucher, VoucherSigner};

    let (f, w) = setup();
    f.fund(w.address(), 100 * ONE_TON);
    let p = params("v1", "ours");
    let pk = key(1).verifying_key().to_bytes();
    let client = client_contract(&p, &addr(0x33), &addr(0x77), &pk).unwrap();
    let signer = VoucherSigner::new(key(1), w.address().clone());
    let v = signer
        .sign(Voucher::client_charge(1, 10, client.address.clone()))
        .unwrap();

    let mut ob = WalletOutbox::new(0);
    ob.push(deploy_message(&client, CLIENT_DEPLOY_VALUE, None));
    ob.push(voucher_message(&v, OPERATION_VALUE).unwrap());
    ob.push(save_state_message(addr(0x77), 2, 5, [6; 32]).unwrap());
    ob.push(
        client_top_up_message(
            client.address.clone(),
            3,
            client_top_up_amount(ONE_TON + 1, 2),
            w.address().clone(),
        )
        .unwrap(),
    );
    let Poll::Send(ext) = ob.poll(&w, 0, f.balance(w.address()), T0).unwrap() else {
        panic!()
    };
    f.send_external(ext.to_boc().unwrap()).await.unwrap();
    let d = f.delivered();
    assert_eq!(d.len(), 4);
    assert!(d[0].message.state_init.is_some() && !d[0].message.bounce);
    assert_eq!(d[1].body, Some(Body::Signed(v)));
    assert_eq!(d[2].message.value, 1);
    assert!(matches!(
        d[3].body,
        Some(Body::ExtClientTopUp {
            amount: 1_000_000_000,
            ..
        })
    ));
    assert_eq!(d[3].message.value, OPERATION_VALUE + ONE_TON);
    assert!(f.account_state(&client.address).await.unwrap().is_active());

    assert!(client_charge_due(600_000_000, 100_000_000, 2));
    assert!(!client_charge_due(600_000_000, 100_000_001, 2));
    assert!(worker_payout_due(10_000_000_000, 0, 1));
    assert!(!worker_payout_due(5, 10, 1));
    assert_eq!(client_top_up_amount(5, 0), 5);
}
