//! Root parameter changes on the client and worker side (cocoon-protocol.md §5.7), on the
//! embedded TVM chain: connecting under parameters newer than the ones a role knew, and
//! the client's fallback close of its old client contracts.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cocoon_node::chain::wallet::OnChain;
use cocoon_node::chain::wallet::SettlementPolicy;
use cocoon_node::chain::{ChainContext, ChainView, RootWatch, SettlementChain};
use cocoon_node::client::settlement::ClientChain;
use cocoon_node::client::settlement::RetiredOutcome;
use cocoon_node::ledger::Ledger;
use cocoon_node::transport::TcpDialer;
use cocoon_node::worker::backend::HttpUpstream;
use cocoon_node::worker::Worker;
use cocoon_ton::contracts::ContractStatus;
use cocoon_ton::local::{codes, GenesisConfig, GenesisRoot, GenesisWallet, LocalChain};
use cocoon_ton::messages::Body;
use cocoon_ton::root::ONE_TON;
use cocoon_ton::settlement::{body_message, deploy_message, voucher_message, OPERATION_VALUE};
use cocoon_ton::voucher::{Voucher, VoucherKind, VoucherSigner};
use common::*;
use ed25519_dalek::SigningKey;
use serde_json::json;
use tycho_types::models::StdAddr;

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

/// `view` after a parameter change (params_version one higher).
fn newer(view: &ChainView) -> ChainView {
    let mut params = view.context.params().clone();
    params.params_version += 1;
    let mut new =
        ChainContext::from_params(view.context.root().clone(), params, true).expect("new view");
    new.settlement = view.settlement.clone();
    new
}

async fn open_wallet(view: &ChainView, key: &SigningKey, owner: &str) -> OnChain {
    view.settlement
        .as_ref()
        .expect("settlement")
        .open_wallet(key.clone(), cocoon_node::chain::devnet_address(owner))
        .await
        .expect("wallet")
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
    let settings = proxy_settings();
    let start = ProxyStart {
        chain: view.context.clone(),
        prices: view.prices,
        settlement: None,
    };
    let ledger = Arc::new(Ledger::open_in_memory(&settings.signing_key).expect("ledger"));
    let net = start_network_with(&[], settings, start, ledger).await;

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

/// A proxy contract with a stake (what a forced refund is paid from), and a client whose
/// contract at it is deployed with [`DEPOSIT`] and registered.
struct Deployed {
    chain: Chain,
    client: ClientChain,
    watch: RootWatch,
    proxy: OnChain,
    proxy_key: SigningKey,
    client_sc: StdAddr,
}

async fn deployed(proxy_delay: u32, client_delay: u32) -> Deployed {
    let proxy_key = SigningKey::from_bytes(&[31; 32]);
    let client_key = SigningKey::from_bytes(&[32; 32]);
    let chain = chain_with(
        proxy_delay,
        client_delay,
        &[(&proxy_key, "proxy-owner"), (&client_key, "client-owner")],
    )
    .await;
    let view = chain.view.clone();
    let proxy = open_wallet(&view, &proxy_key, "proxy-owner").await;
    let proxy_pk = proxy_key.verifying_key().to_bytes();
    let proxy_init = view
        .context
        .proxy_init(
            &cocoon_node::chain::devnet_address("proxy-owner"),
            &proxy_pk,
        )
        .expect("proxy contract");
    let proxy_sc = proxy_init.address.clone();
    proxy
        .wallet
        .send(vec![deploy_message(
            &proxy_init,
            cocoon_ton::settlement::PROXY_DEPLOY_VALUE,
            None,
        )])
        .await
        .expect("proxy deployed");
    let stake = body_message(
        proxy_sc.clone(),
        2 * ONE_TON + ONE_TON / 5,
        &Body::ExtProxyIncreaseStake {
            query_id: 1,
            grams: 2 * ONE_TON,
            send_excesses_to: proxy.wallet.address().clone(),
        },
    )
    .expect("stake message");
    proxy.wallet.send(vec![stake]).await.expect("proxy staked");

    let watch = RootWatch::new(view.clone());
    let client = ClientChain::new(
        open_wallet(&view, &client_key, "client-owner").await,
        watch.clone(),
        "secret",
    );
    let contract = client
        .contract(&proxy_sc, &proxy_pk)
        .expect("client contract");
    client.register(&contract, 42).await.expect("registered");
    let client_sc = contract.init.address.clone();
    let state = client
        .state(&client_sc)
        .await
        .expect("read")
        .expect("deployed");
    assert_eq!(state.status, ContractStatus::Normal);
    assert_eq!(state.balance, DEPOSIT);
    Deployed {
        chain,
        client,
        watch,
        proxy,
        proxy_key,
        client_sc,
    }
}

#[tokio::test]
async fn client_closes_its_old_contract_itself_when_no_proxy_refunds_it() {
    // Grace 0.5 × (6 − 2) = 2 s, then closing for 2 s.
    let d = deployed(6, 2).await;
    let before = d.client.wallet().balance().await.expect("balance");
    // The contracts of the current parameters are not retired.
    assert!(d.client.take_retired(d.watch.params_version()).is_empty());

    let _closer = d.client.spawn_retired_closer();
    assert!(d.watch.offer(newer(&d.chain.view)));
    // No proxy grants the refund: the client's two refund requests close the contract.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let state = d
            .client
            .state(&d.client_sc)
            .await
            .expect("read")
            .expect("exists");
        if state.status == ContractStatus::Closed {
            assert_eq!(state.balance, 0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old contract was not closed: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The deposit came back: what was above the stake at once, the stake (paid from the
    // proxy contract's stake) at the close; fees are well under 1 TON.
    let after = d.client.wallet().balance().await.expect("balance");
    assert!(
        after > before + DEPOSIT - ONE_TON,
        "wallet went from {before} to {after}"
    );
    let refunds = d
        .chain
        .local
        .transactions_of(&d.client_sc)
        .iter()
        .filter(|tx| {
            let op = tx
                .summary
                .in_msg
                .as_ref()
                .and_then(|m| m.body.as_slice().ok()?.load_u32().ok());
            op == Some(cocoon_ton::opcodes::OWNER_CLIENT_REQUEST_REFUND) && tx.summary.success
        })
        .count();
    assert_eq!(refunds, 2, "both phases ran on the contract");
}

#[tokio::test]
async fn client_fallback_leaves_contracts_the_proxy_closed_and_ones_never_deployed() {
    let d = deployed(6, 2).await;
    let proxy_pk = d.proxy_key.verifying_key().to_bytes();
    // A contract derived but never deployed (a proxy the client never registered with).
    let other_proxy = cocoon_node::chain::devnet_address("other-proxy-contract");
    let never = d.client.contract(&other_proxy, &proxy_pk).expect("derived");
    // The proxy closes the old client contract with a signed grant-refund (§5.5).
    let grant = VoucherSigner::new(d.proxy_key.clone(), d.proxy.wallet.address().clone())
        .sign(Voucher::new(
            VoucherKind::ClientGrantRefund,
            7,
            0,
            d.client_sc.clone(),
        ))
        .expect("signed");
    d.proxy
        .wallet
        .send(vec![
            voucher_message(&grant, OPERATION_VALUE).expect("message")
        ])
        .await
        .expect("grant-refund sent");
    let state = d
        .client
        .state(&d.client_sc)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(state.status, ContractStatus::Closed);

    assert!(d.watch.offer(newer(&d.chain.view)));
    let mut retired = d.client.take_retired(d.watch.params_version());
    retired.sort_by_key(|c| c.address != d.client_sc);
    assert_eq!(retired.len(), 2);
    assert_eq!(retired[0].address, d.client_sc);
    assert_eq!(retired[1].address, never.init.address);
    assert_eq!(retired[0].grace(), Duration::from_secs(2));
    let sent_before = d
        .chain
        .local
        .transactions_of(d.client.wallet().address())
        .len();
    assert_eq!(
        d.client.close_retired(retired[0].clone()).await,
        RetiredOutcome::AlreadyClosed
    );
    assert_eq!(
        d.client.close_retired(retired[1].clone()).await,
        RetiredOutcome::Missing
    );
    assert_eq!(
        d.chain
            .local
            .transactions_of(d.client.wallet().address())
            .len(),
        sent_before,
        "the fallback sent nothing"
    );
    // Taken once: nothing is left to retire.
    assert!(d.client.take_retired(d.watch.params_version()).is_empty());
}
