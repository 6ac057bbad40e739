//! A root parameter change on the running devnet (cocoon-protocol.md §5.7): the admin
//! raises the prices with `cocoon root set-price` while requests keep flowing. The proxy
//! drains, begins a new ledger epoch, deploys its new contract, and clients and workers
//! reconnect to new contracts at the new prices; the old contracts are closed out (the
//! client refunded, the workers paid their last payout, the old proxy contract closed).
//! Read back from the chain and the ledger, every epoch balances to the nanoTON at its
//! own prices, and no request failed during the switch.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cocoon_node::chain::{devnet_address, ChainContext};
use cocoon_node::ledger::Party;
use cocoon_ton::contracts::{
    ClientContractState, ContractStatus, ProxyContractState, WorkerContractState,
};
use cocoon_ton::local::LocalChain;
use cocoon_ton::root::ONE_TON;
use serde_json::Value;

mod common;
use common::{addr, chat, free_port, mock_upstream, received_from, stop, Proc};

const COCOON: &str = env!("CARGO_BIN_EXE_cocoon");
/// Adjusted tokens of one request of the mock upstream (all multipliers 1.0×).
const TOKENS: u64 = 134;
/// Prices before and after the change (nanoTON per token).
const PRICE_1: u64 = 3;
const FEE_1: u64 = 2;
const PRICE_2: u64 = 5;
const FEE_2: u64 = 4;
/// The devnet root's proxy close delay (client contracts: half).
const CLOSE_DELAY: &str = "24";

fn start_devnet(state: &Path, upstream: SocketAddr, port: u16, log: PathBuf) -> Proc {
    common::start_devnet(
        COCOON,
        state,
        upstream,
        port,
        log,
        PRICE_1,
        FEE_1,
        &["--close-delay", CLOSE_DELAY],
    )
}

fn devnet_info(state: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(state.join("devnet.json")).expect("devnet.json"))
        .expect("json")
}

fn cli(state: &Path, args: &[&str]) -> String {
    let out = Command::new(COCOON)
        .args(args)
        .args(["--dir", &state.display().to_string()])
        .output()
        .expect("cocoon");
    assert!(
        out.status.success(),
        "cocoon {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_change_rotates_every_contract_and_each_epoch_balances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let upstream = mock_upstream().await;
    let port = free_port();
    let http = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{port}/v1");
    let log = dir.path().join("devnet.log");
    let devnet = start_devnet(&state, upstream, port, log.clone());
    let devnet_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Epoch 1: requests at the first prices.
    for _ in 0..4 {
        assert_eq!(chat(&http, &api, 0).await, 200);
    }
    let before = devnet_info(&state);
    assert_eq!(before["params_version"], 1);
    let old_proxy_sc = addr(before["proxy_sc_address"].as_str().expect("proxy sc"));

    // Requests keep flowing while the admin changes the prices.
    let traffic = {
        let (http, api) = (http.clone(), api.clone());
        tokio::spawn(async move {
            let mut codes = Vec::new();
            for _ in 0..8 {
                codes.push(chat(&http, &api, 300).await);
            }
            codes
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let out = cli(
        &state,
        &[
            "root",
            "set-price",
            "--price",
            "0.000000005",
            "--worker-fee",
            "0.000000004",
        ],
    );
    assert!(out.contains("params version"), "{out}");
    let start = Instant::now();
    let after = loop {
        let info = devnet_info(&state);
        if info["params_version"] == 2 {
            break info;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the proxy rotates within a minute: {}",
            devnet_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let new_proxy_sc = addr(after["proxy_sc_address"].as_str().expect("proxy sc"));
    assert_ne!(old_proxy_sc, new_proxy_sc, "a new proxy contract");
    let codes = traffic.await.expect("traffic");
    assert!(
        codes.iter().all(|c| *c == 200),
        "no request failed during the rotation: {codes:?}\n{}",
        devnet_log()
    );
    // Epoch 2: requests at the new prices.
    for _ in 0..3 {
        assert_eq!(chat(&http, &api, 0).await, 200);
    }

    // The old proxy contract closes once its close delay has passed.
    let chain_api =
        cocoon_ton::toncenter::TonCenter::new(after["chain_api"].as_str().expect("api"), None)
            .expect("chain api");
    let start = Instant::now();
    loop {
        use cocoon_ton::chain::ChainBackend;
        let st = chain_api.account_state(&old_proxy_sc).await.expect("state");
        let parsed = ProxyContractState::from_data(st.data.as_ref().expect("data")).expect("parse");
        if parsed.status == ContractStatus::Closed {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the old proxy contract closes: {parsed:?}\n{}",
            devnet_log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::task::spawn_blocking(move || stop(devnet, "-INT"))
        .await
        .expect("stopped");

    // Read everything back.
    let chain = LocalChain::open(state.join("chain")).expect("chain");
    let proxy_key = cocoon_node::config::load_or_create_key(&state.join("keys/proxy_key.pem"))
        .expect("proxy key");
    let ledger = cocoon_node::ledger::Ledger::open(&state.join("proxy-ledger.sqlite"), &proxy_key)
        .expect("ledger opens and verifies");
    let epochs = ledger.epochs().expect("epochs");
    assert_eq!(
        epochs
            .iter()
            .map(|e| (e.params_version, e.closed))
            .collect::<Vec<_>>(),
        vec![(1, true), (2, false)],
        "the first epoch is closed"
    );
    let cut = ledger.epoch_starts(2).expect("starts");
    let totals = ledger.all_totals().expect("totals");
    assert_eq!(totals.clients.len(), 1);
    let (client_owner, client_total) = totals.clients[0].clone();
    let t1 = cut.of(&client_owner, Party::Client);
    let t2 = client_total - t1;
    assert!(
        t1 >= 4 * TOKENS && t1.is_multiple_of(TOKENS),
        "epoch 1: {t1}"
    );
    assert!(
        t2 >= 3 * TOKENS && t2.is_multiple_of(TOKENS),
        "epoch 2: {t2}"
    );
    assert_eq!(t1 + t2, 15 * TOKENS, "every request booked once");

    let root = chain.root_address().expect("root");
    let new_ctx = ChainContext::from_chain(&chain, &root, true)
        .await
        .expect("root")
        .context;
    assert_eq!(new_ctx.params().price_per_token, PRICE_2);
    let old_ctx = new_ctx
        .with_params_boc(&epochs[0].params)
        .expect("old params");
    assert_eq!(old_ctx.params().price_per_token, PRICE_1);
    let proxy_pk: [u8; 32] = proxy_key.verifying_key().to_bytes();
    let client_wallet = addr(
        after["wallets"]["client"]["address"]
            .as_str()
            .expect("client"),
    );
    let read_client = |sc| {
        ClientContractState::from_data(
            &chain
                .account(&sc)
                .expect("client contract")
                .data
                .expect("deployed"),
        )
        .expect("client state")
    };

    // The old client contract: charged epoch 1's tokens at the old price, then refunded.
    let old_client_sc = old_ctx
        .client_sc(&client_wallet, &old_proxy_sc, &proxy_pk)
        .expect("old client sc");
    let old_client = read_client(old_client_sc);
    assert_eq!(old_client.status, ContractStatus::Closed);
    assert_eq!(old_client.tokens_used, t1, "old contract charged epoch 1");
    assert_eq!(old_client.balance, 0);
    let deposit_1 = 10 * ONE_TON - (10 * ONE_TON) % PRICE_1;
    assert_eq!(
        received_from(&chain, &client_wallet, &old_proxy_sc),
        deposit_1 - t1 * PRICE_1,
        "the client got back its first deposit minus epoch 1 × old price"
    );

    // The new client contract: charged epoch 2's tokens at the new price.
    let new_client_sc = new_ctx
        .client_sc(&client_wallet, &new_proxy_sc, &proxy_pk)
        .expect("new client sc");
    let new_client = read_client(new_client_sc);
    assert_eq!(new_client.status, ContractStatus::Normal);
    assert_eq!(new_client.tokens_used, t2, "new contract charged epoch 2");
    let deposit_2 = 10 * ONE_TON - (10 * ONE_TON) % PRICE_2;
    assert_eq!(new_client.balance, deposit_2 - t2 * PRICE_2);

    // Workers: the last payout of epoch 1 at the old fee, epoch 2 at the new fee.
    let mut earned = 0;
    for i in 0..2 {
        let owner = devnet_address(&format!("devnet-worker-{i}"));
        let owner_text = totals
            .workers
            .iter()
            .map(|(o, _)| o)
            .find(|o| old_ctx.parse_address(o).expect("owner") == owner);
        let (w1, w2) = owner_text.map_or((0, 0), |o| {
            let total = totals.workers.iter().find(|(x, _)| x == o).expect("w").1;
            let start = cut.of(o, Party::Worker);
            (start, total - start)
        });
        assert_eq!(
            received_from(&chain, &owner, &old_proxy_sc),
            w1 * FEE_1,
            "worker {i}: epoch 1 × old fee"
        );
        assert_eq!(
            received_from(&chain, &owner, &new_proxy_sc),
            w2 * FEE_2,
            "worker {i}: epoch 2 × new fee"
        );
        if w1 > 0 {
            let old_worker_sc = old_ctx
                .worker_sc(&owner, &old_proxy_sc, &proxy_pk)
                .expect("old worker sc");
            let w = WorkerContractState::from_data(
                &chain
                    .account(&old_worker_sc)
                    .expect("worker contract")
                    .data
                    .expect("deployed"),
            )
            .expect("worker state");
            assert_eq!(w.status, ContractStatus::Closed, "worker {i}: last payout");
            assert_eq!(w.tokens, w1);
        }
        earned += w1 * FEE_1 + w2 * FEE_2;
    }

    // The proxy owner: epoch 2's commission withdrawn; the closed old contract paid out
    // epoch 1's commission together with what was left of its deployment value.
    let proxy_owner = devnet_address("devnet-proxy-owner");
    let commission_2 = received_from(&chain, &proxy_owner, &new_proxy_sc);
    assert_eq!(commission_2, t2 * (PRICE_2 - FEE_2), "epoch 2 commission");
    let from_old = received_from(&chain, &proxy_owner, &old_proxy_sc);
    assert!(
        from_old >= t1 * (PRICE_1 - FEE_1),
        "epoch 1 commission reached the owner: {from_old}"
    );
    let old_proxy = ProxyContractState::from_data(
        &chain
            .account(&old_proxy_sc)
            .expect("old proxy")
            .data
            .expect("data"),
    )
    .expect("old proxy state");
    assert_eq!(
        (old_proxy.status, old_proxy.balance, old_proxy.stake),
        (ContractStatus::Closed, 0, 0)
    );
    assert_eq!(
        t1 * PRICE_1 + t2 * PRICE_2,
        earned + t1 * (PRICE_1 - FEE_1) + commission_2,
        "client spend on usage = worker earnings + proxy commission, per epoch prices"
    );
    let supply = chain.supply().expect("supply");
    assert!(supply.is_conserved(), "{supply:?}");
}
