//! The whole network's money on the devnet's embedded TVM chain: requests through
//! `cocoon devnet`, a crash (kill -9) in the middle of a batch, a restart, a clean stop
//! that settles everything — then the chain and the ledger are read back and must agree
//! to the nanoTON:
//!
//! * the client contract was charged for exactly the tokens the ledger booked for it;
//! * each worker owner received exactly its booked tokens × the worker fee, the proxy
//!   owner exactly the tokens × (price − fee): what the client paid for usage is the
//!   workers' earnings plus the proxy's commission;
//! * every nanoTON minted is in an account or was burned as a chain fee;
//! * a client that closes its contract (`cocoon client close`, while the devnet runs) gets
//!   everything it did not spend back at once: the proxy grants the refund.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cocoon_node::chain::{devnet_address, ChainContext};
use cocoon_ton::contracts::ClientContractState;
use cocoon_ton::local::LocalChain;
use cocoon_ton::root::ONE_TON;
use serde_json::Value;

mod common;
use common::{addr, chat, free_port, mock_upstream, received_from, stop, Proc};

const COCOON: &str = env!("CARGO_BIN_EXE_cocoon");
/// Adjusted tokens of one request of the mock upstream (all multipliers 1.0×).
const TOKENS: u64 = 134;
const PRICE: u64 = 3;
const FEE: u64 = 2;

fn start_devnet(state: &Path, upstream: SocketAddr, port: u16, log: PathBuf) -> Proc {
    common::start_devnet(COCOON, state, upstream, port, log, PRICE, FEE, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_money_balances_to_the_nanoton_across_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let upstream = mock_upstream().await;
    let port = free_port();
    let http = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{port}/v1");

    // Phase 1: requests, then a crash in the middle of a slow batch.
    let devnet = start_devnet(&state, upstream, port, dir.path().join("devnet1.log"));
    for _ in 0..6 {
        assert_eq!(chat(&http, &api, 0).await, 200);
    }
    let batch: Vec<_> = (0..6)
        .map(|_| {
            let http = http.clone();
            let api = api.clone();
            tokio::spawn(async move { chat(&http, &api, 400).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let crash = tokio::task::spawn_blocking(move || stop(devnet, "-KILL"));
    for b in batch {
        let _ = b.await;
    }
    crash.await.expect("killed");

    // Phase 2: the restarted devnet continues; the client closes its contract through the
    // money CLI (over the devnet's chain API) and the proxy grants the refund; then the
    // devnet stops cleanly (settling everything).
    let devnet = start_devnet(&state, upstream, port, dir.path().join("devnet2.log"));
    for _ in 0..5 {
        assert_eq!(chat(&http, &api, 0).await, 200);
    }
    let info: Value =
        serde_json::from_slice(&std::fs::read(state.join("devnet.json")).expect("devnet.json"))
            .expect("json");
    let close = Command::new(COCOON)
        .args(["client", "close", "--dir", &state.display().to_string()])
        .output()
        .expect("cocoon client close");
    assert!(
        close.status.success(),
        "client close: {}{}",
        String::from_utf8_lossy(&close.stdout),
        String::from_utf8_lossy(&close.stderr)
    );
    let api_chain =
        cocoon_ton::toncenter::TonCenter::new(info["chain_api"].as_str().expect("chain api"), None)
            .expect("chain api client");
    let client_sc_text = {
        let out = Command::new(COCOON)
            .args(["client", "balance", "--dir", &state.display().to_string()])
            .output()
            .expect("client balance");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines()
            .find_map(|l| l.strip_prefix("client contract: "))
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .expect("client contract in `cocoon client balance`")
    };
    let client_sc_addr = addr(&client_sc_text);
    let start = Instant::now();
    loop {
        use cocoon_ton::chain::ChainBackend;
        let st = api_chain
            .account_state(&client_sc_addr)
            .await
            .expect("state");
        let parsed =
            ClientContractState::from_data(st.data.as_ref().expect("data")).expect("parse");
        if parsed.status == cocoon_ton::contracts::ContractStatus::Closed {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the proxy grants the closing client its refund"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(
        chat(&http, &api, 0).await,
        200,
        "a closed client contract funds no request"
    );
    tokio::task::spawn_blocking(move || stop(devnet, "-INT"))
        .await
        .expect("stopped");
    let log2 = std::fs::read_to_string(dir.path().join("devnet2.log")).unwrap_or_default();

    // Read everything back.
    let info: Value =
        serde_json::from_slice(&std::fs::read(state.join("devnet.json")).expect("devnet.json"))
            .expect("json");
    let chain = LocalChain::open(state.join("chain")).expect("chain");
    let proxy_key = cocoon_node::config::load_or_create_key(&state.join("keys/proxy_key.pem"))
        .expect("proxy key");
    let ledger = cocoon_node::ledger::Ledger::open(&state.join("proxy-ledger.sqlite"), &proxy_key)
        .expect("ledger opens and verifies");
    let totals = ledger.all_totals().expect("totals");
    assert_eq!(totals.clients.len(), 1, "one client: {totals:?}");
    let client_tokens = totals.clients[0].1;
    let worker_tokens: u64 = totals.workers.iter().map(|(_, t)| t).sum();
    assert_eq!(client_tokens, worker_tokens, "the ledger's two sides agree");
    assert_eq!(
        client_tokens % TOKENS,
        0,
        "whole requests only: {client_tokens}"
    );
    assert!(
        client_tokens >= 11 * TOKENS,
        "every request that answered 200 is booked: {client_tokens}"
    );

    // The client contract was charged for exactly the booked tokens.
    let root = chain.root_address().expect("root");
    let ctx = ChainContext::from_chain(&chain, &root, true)
        .await
        .expect("root")
        .context;
    let proxy_sc = addr(info["proxy_sc_address"].as_str().expect("proxy sc"));
    let client_wallet = addr(
        info["wallets"]["client"]["address"]
            .as_str()
            .expect("client"),
    );
    let (client_sc, client) = common::client_contract(&state, &chain).await;
    assert_eq!(
        client.tokens_used, client_tokens,
        "charged on chain = booked in the ledger (devnet log: {log2})"
    );
    // The deposit is rounded down to whole tokens, as COCOON's top-up.
    let deposit = 10 * ONE_TON - (10 * ONE_TON) % PRICE;
    assert_eq!(client.status, cocoon_ton::contracts::ContractStatus::Closed);
    assert_eq!(client.balance, 0, "everything was refunded");
    assert_eq!(client_sc, client_sc_addr);
    assert_eq!(
        received_from(&chain, &client_wallet, &proxy_sc),
        deposit - client_tokens * PRICE,
        "the client got back exactly its deposit minus tokens × price"
    );

    // Workers' earnings and the proxy's commission, received by their owners.
    let mut earned = 0;
    for i in 0..2 {
        let owner = devnet_address(&format!("devnet-worker-{i}"));
        let booked = totals
            .workers
            .iter()
            .find(|(o, _)| ctx.parse_address(o).expect("owner") == owner)
            .map_or(0, |(_, t)| *t);
        let received = received_from(&chain, &owner, &proxy_sc);
        assert_eq!(received, booked * FEE, "worker {i}: tokens × fee");
        earned += received;
    }
    let commission = received_from(&chain, &devnet_address("devnet-proxy-owner"), &proxy_sc);
    assert_eq!(
        commission,
        client_tokens * (PRICE - FEE),
        "proxy commission"
    );
    assert_eq!(
        client_tokens * PRICE,
        earned + commission,
        "client spend on usage = worker earnings + proxy commission"
    );
    let supply = chain.supply().expect("supply");
    assert!(supply.is_conserved(), "{supply:?}");
    assert!(supply.fees > 0, "chain fees were paid: {supply:?}");

    assert!(chain.supply().expect("supply").is_conserved());
}
