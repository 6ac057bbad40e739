//! Root parameter changes on the client and worker side (cocoon-protocol.md §5.7), on the
//! embedded TVM chain: connecting under parameters newer than the ones a role knew.

mod common;

use std::sync::Arc;

use cocoon_node::backend::HttpUpstream;
use cocoon_node::chain::{ChainContext, ChainView, RootWatch, SettlementChain};
use cocoon_node::ledger::Ledger;
use cocoon_node::settle::SettlementPolicy;
use cocoon_node::transport::TcpDialer;
use cocoon_node::worker::Worker;
use cocoon_ton::local::{codes, GenesisConfig, GenesisRoot, GenesisWallet, LocalChain};
use cocoon_ton::root::ONE_TON;
use common::*;
use ed25519_dalek::SigningKey;
use serde_json::json;

/// What a client deposits in the fallback tests.
const DEPOSIT: u64 = 5 * ONE_TON;

struct Chain {
    local: Arc<LocalChain>,
    /// The root as the chain has it (params_version 1), with settlement on the chain.
    view: ChainView,
}

/// A chain with a root (close delays `proxy_delay` and `client_delay` seconds) and the
/// cocoon wallets of `keys` (owned by `devnet_address(name)`), 50 TON each.
async fn chain_with(proxy_delay: u32, client_delay: u32, wallets: &[(&SigningKey, &str)]) -> Chain {
    let mut root =
        GenesisRoot::devnet(cocoon_node::chain::devnet_address("root-admin")).expect("root");
    root.config.params.proxy_delay_before_close = proxy_delay;
    root.config.params.client_delay_before_close = client_delay;
    let root_address = root.contract().expect("root contract").address;
    let local = Arc::new(
        LocalChain::genesis(GenesisConfig {
            root: Some(root),
            wallets: wallets
                .iter()
                .map(|(key, owner)| {
                    GenesisWallet::new(
                        key.verifying_key().to_bytes(),
                        cocoon_node::chain::devnet_address(owner),
                        50 * ONE_TON,
                    )
                })
                .collect(),
            ..GenesisConfig::default()
        })
        .expect("genesis"),
    );
    let mut view = ChainContext::from_chain(local.as_ref(), &root_address, true)
        .await
        .expect("root view");
    view.settlement = Some(SettlementChain {
        backend: local.clone(),
        wallet_code: codes::wallet_code().expect("wallet code"),
        policy: SettlementPolicy {
            client_deposit: DEPOSIT,
            ..SettlementPolicy::devnet()
        },
    });
    Chain { local, view }
}

/// `view` as it was before its parameters changed: params_version one lower and another
/// price, so every contract address differs. It keeps the settlement chain, so that a
/// role holding it can read the root again.
fn stale(view: &ChainView) -> ChainView {
    let mut params = view.context.params().clone();
    params.params_version -= 1;
    params.price_per_token += 1;
    let mut old =
        ChainContext::from_params(view.context.root().clone(), params, true).expect("old view");
    old.settlement = view.settlement.clone();
    old
}

#[tokio::test]
async fn client_and_worker_read_the_root_again_when_the_proxy_announces_another_contract() {
    let chain = chain_with(600, 300, &[]).await;
    let view = chain.view.clone();
    let on_chain = chain
        .local
        .root_config()
        .expect("root")
        .params
        .params_version;
    assert_eq!(view.context.params().params_version, on_chain);
    assert!(stale(&view).context.params().params_version < on_chain);
    // A fake-TON proxy that already runs under the chain's (newer) parameters.
    let mut settings = proxy_settings();
    settings.chain = view.context.clone();
    settings.prices = view.prices;
    let ledger = Arc::new(Ledger::open_in_memory(&settings.signing_key).expect("ledger"));
    let net = start_network_with(&[], settings, ledger).await;

    // A worker that still knows the old parameters reads the root and connects.
    let worker_watch = RootWatch::new(stale(&view));
    let mut ws = worker_settings(&WorkerSpec::new("w", 1000));
    ws.chain = worker_watch.clone();
    let backend = Arc::new(HttpUpstream::new(&net.upstream_url).expect("upstream"));
    let worker = Worker::new(ws, backend).expect("worker");
    worker.set_healthy(true);
    let _link = worker.spawn_proxy_link(net.worker_addr.to_string(), Arc::new(TcpDialer));
    net.wait_ready(1).await;
    assert_eq!(
        worker_watch.params_version(),
        view.context.params().params_version
    );

    // So does a client.
    let client_watch = RootWatch::new(stale(&view));
    let mut cs = client_settings("client-1");
    cs.chain = client_watch.clone();
    let stream = tokio::net::TcpStream::connect(net.client_addr)
        .await
        .expect("connect");
    let conn = cocoon_net::RpcConnection::connect(
        stream,
        &cocoon_net::ConnectionConfig::default(),
        "proxy",
    )
    .await
    .expect("open");
    let session = cocoon_node::client::ProxySession::connect(conn, cs)
        .await
        .expect("session after reading the root again");
    assert_eq!(
        client_watch.params_version(),
        view.context.params().params_version
    );

    // The worker prices its answers with the root's current prices (134 adjusted tokens).
    let out = collect(&session, chat_request(chat_body(false, json!({})), 1000)).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let expected = 134 * view.prices.price_per_token;
    assert_eq!(out.json()["usage"]["total_cost"], json!(expected));

    // Without a chain to read, old parameters are a mismatch.
    let mut blind = stale(&view);
    blind.settlement = None;
    let mut cs = client_settings("client-2");
    cs.chain = RootWatch::new(blind);
    let stream = tokio::net::TcpStream::connect(net.client_addr)
        .await
        .expect("connect");
    let conn = cocoon_net::RpcConnection::connect(
        stream,
        &cocoon_net::ConnectionConfig::default(),
        "proxy",
    )
    .await
    .expect("open");
    let err = cocoon_node::client::ProxySession::connect(conn, cs)
        .await
        .expect_err("old parameters");
    assert!(
        err.to_string().contains("proxy contract address mismatch"),
        "{err}"
    );
}
