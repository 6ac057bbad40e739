//! The fake-TON stand-in: root state readable as on chain, pseudo funding,
//! wallet requests checked and delivered at once, transaction cursors, clock.

mod common;

use std::sync::Arc;

use cocoon_ton::chain::{AccountStatus, ChainBackend, ChainError, StackValue};
use cocoon_ton::contracts::client_contract;
use cocoon_ton::fake::FakeTon;
use cocoon_ton::messages::Body;
use cocoon_ton::root::{RegisteredProxy, RootConfig};
use cocoon_ton::voucher::{Voucher, VoucherSigner};
use cocoon_ton::wallet::{cocoon_send_mode, CocoonWallet, InternalMessage};
use common::*;

fn root_config() -> RootConfig {
    RootConfig {
        owner: addr(0x99),
        version: 3,
        proxy_hashes: vec![[1; 32]],
        registered_proxies: vec![RegisteredProxy {
            seqno: 1,
            address: "127.0.0.1:9000".into(),
        }],
        last_proxy_seqno: 1,
        worker_hashes: vec![],
        model_hashes: vec![],
        params: params("v3", "ours"),
        key_manager: Default::default(),
        verified_keys: Default::default(),
    }
}

fn chain() -> Arc<FakeTon> {
    let f = FakeTon::new(addr(0xee), root_config(), true).unwrap();
    f.set_time(Some(1_800_000_000));
    Arc::new(f)
}

#[tokio::test]
async fn root_is_readable_like_on_chain() {
    let f = chain();
    let backend: Arc<dyn ChainBackend> = f.clone();
    let st = backend.account_state(&addr(0xee)).await.unwrap();
    assert!(st.is_active());
    let cfg = RootConfig::from_data_cell(st.data.as_ref().unwrap()).unwrap();
    assert_eq!(cfg, root_config());

    let mut newer = root_config();
    newer.version = 4;
    f.set_root_config(newer.clone()).unwrap();
    let st = backend.account_state(&addr(0xee)).await.unwrap();
    assert_eq!(
        RootConfig::from_data_cell(st.data.as_ref().unwrap())
            .unwrap()
            .version,
        4
    );
    assert_eq!(backend.now().await.unwrap(), 1_800_000_000);
    f.advance_time(10);
    assert_eq!(backend.now().await.unwrap(), 1_800_000_010);

    let via_helper = cocoon_ton::chain::read_root_config(backend.as_ref(), &addr(0xee))
        .await
        .unwrap();
    assert_eq!(via_helper.version, 4);
    assert!(
        cocoon_ton::chain::read_root_config(backend.as_ref(), &addr(0x01))
            .await
            .is_err()
    );

    let unknown = backend.account_state(&addr(0x01)).await.unwrap();
    assert_eq!(unknown.status, AccountStatus::NonExist);
}

#[tokio::test]
async fn wallet_request_is_checked_and_delivered() {
    let f = chain();
    let backend: Arc<dyn ChainBackend> = f.clone();
    let wallet_code = code("ours-wallet.boc");
    let wallet = CocoonWallet::new(key(5), addr(0x55), &wallet_code).unwrap();
    f.fund(wallet.address(), 50_000_000_000);
    let st = backend.account_state(wallet.address()).await.unwrap();
    assert_eq!(st.status, AccountStatus::Uninit);

    // The proxy signs a charge voucher and sends it, plus a save-state anchor.
    let cfg = root_config();
    let proxy_pk = key(1).verifying_key().to_bytes();
    let client = client_contract(&cfg.params, &addr(0x33), &addr(0x77), &proxy_pk).unwrap();
    let signer = VoucherSigner::new(key(1), wallet.address().clone());
    let voucher = signer
        .sign(Voucher::client_charge(11, 500, client.address.clone()))
        .unwrap();
    let save = Body::ProxySaveState {
        query_id: 12,
        seqno: 3,
        session_hash: [4; 32],
    };
    let msgs = vec![
        (
            cocoon_send_mode(700_000_000),
            InternalMessage::cocoon(
                client.address.clone(),
                700_000_000,
                Some(client.state_init.clone()),
                Some(voucher.to_cell().unwrap()),
            ),
        ),
        (
            cocoon_send_mode(1),
            InternalMessage::cocoon(addr(0x77), 1, None, Some(save.to_cell().unwrap())),
        ),
    ];
    let ext = wallet.external_message(0, 1_800_003_600, &msgs).unwrap();
    assert!(ext.state_init.is_some());
    backend.send_external(ext.to_boc().unwrap()).await.unwrap();

    // Deployed, seqno bumped, messages delivered and decoded.
    let st = backend.account_state(wallet.address()).await.unwrap();
    assert!(st.is_active());
    let seqno = backend
        .run_get_method(wallet.address(), "seqno", vec![])
        .await
        .unwrap();
    assert_eq!(seqno.stack, vec![StackValue::Int(1)]);
    let delivered = f.delivered();
    assert_eq!(delivered.len(), 2);
    assert_eq!(delivered[0].body, Some(Body::Signed(voucher.clone())));
    assert_eq!(delivered[1].body, Some(save));
    assert!(backend
        .account_state(&client.address)
        .await
        .unwrap()
        .is_active());
    // Pseudo-funded client, as COCOON's --disable-ton.
    let cst = backend.account_state(&client.address).await.unwrap();
    let cs =
        cocoon_ton::contracts::ClientContractState::from_data(cst.data.as_ref().unwrap()).unwrap();
    assert_eq!(cs.balance, FakeTon::PSEUDO_CLIENT_FUNDS);
    assert_eq!(cs.stake, FakeTon::PSEUDO_CLIENT_FUNDS);
    assert_eq!(
        hex::encode(cs.secret_hash),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(cs.owner, addr(0x33));
    // Tests may move a contract's state themselves.
    let mut closing = cs.clone();
    closing.status = cocoon_ton::contracts::ContractStatus::Closing;
    f.set_data(&client.address, closing.to_data().unwrap());
    let cst = backend.account_state(&client.address).await.unwrap();
    assert_eq!(
        cocoon_ton::contracts::ClientContractState::from_data(cst.data.as_ref().unwrap()).unwrap(),
        closing
    );
    assert_eq!(f.balance(wallet.address()), 50_000_000_000 - 700_000_001);
    assert_eq!(f.sent_externals().len(), 1);

    // Transactions of the proxy contract, followed with a cursor.
    let page = backend.transactions(&addr(0x77), None, 10).await.unwrap();
    assert_eq!(page.transactions.len(), 1);
    let tx = &page.transactions[0];
    assert_eq!(
        tx.in_msg.as_ref().unwrap().source.as_ref(),
        Some(wallet.address())
    );
    let again = backend
        .transactions(&addr(0x77), page.cursor, 10)
        .await
        .unwrap();
    assert!(again.transactions.is_empty());
    assert_eq!(again.cursor, page.cursor);

    // Replay (same seqno) and expired requests are refused.
    let replay = wallet.external_message(0, 1_800_003_600, &msgs).unwrap();
    assert!(matches!(
        backend.send_external(replay.to_boc().unwrap()).await,
        Err(ChainError::Rejected(_))
    ));
    let expired = wallet
        .external_message(1, 1_799_999_999, &msgs[1..])
        .unwrap();
    assert!(backend
        .send_external(expired.to_boc().unwrap())
        .await
        .is_err());
    // A request signed by another key is refused.
    let impostor = CocoonWallet::new(key(6), addr(0x55), &wallet_code).unwrap();
    let mut forged = impostor
        .external_message(1, 1_800_003_600, &msgs[1..])
        .unwrap();
    forged.dest = wallet.address().clone();
    forged.state_init = None;
    assert!(backend
        .send_external(forged.to_boc().unwrap())
        .await
        .is_err());
    // The next seqno goes through.
    let next = wallet
        .external_message(1, 1_800_003_600, &msgs[1..])
        .unwrap();
    assert!(next.state_init.is_none());
    backend.send_external(next.to_boc().unwrap()).await.unwrap();
    let page2 = backend
        .transactions(&addr(0x77), page.cursor, 10)
        .await
        .unwrap();
    assert_eq!(page2.transactions.len(), 1);
}

#[tokio::test]
async fn garbage_and_unsupported() {
    let f = chain();
    assert!(f.send_external(vec![1, 2, 3]).await.is_err());
    assert!(matches!(
        f.run_get_method(&addr(0xee), "get_cocoon_data", vec![])
            .await,
        Err(ChainError::Unsupported(_))
    ));
    // A StateInit that does not hash to the destination is refused.
    let wallet = CocoonWallet::new(key(5), addr(0x55), &code("ours-wallet.boc")).unwrap();
    let mut ext = wallet.external_message(0, 1_800_003_600, &[]).unwrap();
    ext.dest = addr(0x12);
    assert!(f.send_external(ext.to_boc().unwrap()).await.is_err());
}

#[tokio::test]
async fn pseudo_file() {
    let dir = std::env::temp_dir().join(format!("cocoon-ton-fake-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("root.toml");
    std::fs::write(
        &path,
        "price_per_token = 4\nworker_fee_per_token = 2\nversion = 9\nroot_owner_address = \"0QBgPMq7ye2WRcudRHK_-yjHwMXjeN-UCzAuoo06TR6hmgHV\"\n",
    )
    .unwrap();
    let f = FakeTon::from_pseudo_file(addr(0xee), &path, true).unwrap();
    assert_eq!(f.root_config().version, 9);
    assert_eq!(f.root_config().params.price_per_token, 4);
    assert!(f.is_testnet());
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn follower_pages_and_from_now() {
    use cocoon_ton::chain::TxFollower;
    let f = chain();
    let w = CocoonWallet::new(key(5), addr(0x55), &code("ours-wallet.boc")).unwrap();
    f.fund(w.address(), 500 * cocoon_ton::root::ONE_TON);
    let target = addr(0x70);
    let send = |seqno: u32, n: usize| {
        let msgs: Vec<_> = (0..n)
            .map(|i| {
                (
                    1u8,
                    InternalMessage::cocoon(target.clone(), 1 + i as u64, None, None),
                )
            })
            .collect();
        w.external_message(seqno, 1_800_003_600, &msgs)
            .unwrap()
            .to_boc()
            .unwrap()
    };
    f.send_external(send(0, 4)).await.unwrap();
    let mut from_start = TxFollower::from_start(target.clone());
    let mut from_now = TxFollower::from_now(f.as_ref(), target.clone())
        .await
        .unwrap();
    assert_eq!(from_start.poll(f.as_ref()).await.unwrap().len(), 4);
    assert!(from_now.poll(f.as_ref()).await.unwrap().is_empty());
    // More than a page at once: 100 transactions, then nothing new.
    for seqno in 1..=25 {
        f.send_external(send(seqno, 4)).await.unwrap();
    }
    let got = from_start.poll(f.as_ref()).await.unwrap();
    assert_eq!(got.len(), 100);
    assert!(got.windows(2).all(|p| p[0].id.lt < p[1].id.lt));
    assert_eq!(from_now.poll(f.as_ref()).await.unwrap().len(), 100);
    assert!(from_start.poll(f.as_ref()).await.unwrap().is_empty());
}
