//! The embedded TVM chain ([`LocalChain`]) running our compiled contracts:
//! genesis (root + cocoon wallets), signed wallet externals that deploy and fund
//! per-party contracts, proxy-signed vouchers (client charge, worker payout),
//! refusals with the contracts' exit codes, get-methods, value conservation to
//! the nanoTON, and restarts from the state directory.

mod common;

use cocoon_ton::chain::{AccountStatus, ChainBackend, ChainError, StackValue, TxFollower};
use cocoon_ton::contracts::{
    client_contract, proxy_contract, worker_contract, ClientContractState, ContractInit,
    ContractStatus, ProxyContractState, WorkerContractState,
};
use cocoon_ton::local::{
    codes, Clock, ExecutionReport, GenesisConfig, GenesisRoot, GenesisWallet, LocalChain,
    LocalChainError, FAUCET_ADDRESS,
};
use cocoon_ton::messages::Body;
use cocoon_ton::root::{RootConfig, ONE_TON};
use cocoon_ton::settlement::{
    client_top_up_message, deploy_message, voucher_message, OPERATION_VALUE,
};
use cocoon_ton::tycho_types::models::{MsgInfo, Transaction};
use cocoon_ton::voucher::{Voucher, VoucherKind, VoucherSigner};
use cocoon_ton::wallet::{cocoon_send_mode, CocoonWallet, InternalMessage};
use cocoon_ton::StdAddr;
use common::*;

const T0: u32 = 1_800_000_000;

struct World {
    chain: LocalChain,
    root: StdAddr,
    root_cfg: RootConfig,
    admin: CocoonWallet,
    proxy_wallet: CocoonWallet,
    client_wallet: CocoonWallet,
    worker_wallet: CocoonWallet,
    proxy_owner: StdAddr,
    worker_owner: StdAddr,
    proxy: ContractInit,
    client: ContractInit,
    worker: ContractInit,
    signer: VoucherSigner,
}

fn wallet(k: u8, owner: StdAddr) -> CocoonWallet {
    CocoonWallet::new(key(k), owner, &codes::wallet_code().unwrap()).unwrap()
}

fn genesis_wallet(w: &CocoonWallet) -> GenesisWallet {
    GenesisWallet::new(w.public_key(), w.owner().clone(), 100 * ONE_TON)
}

fn world() -> World {
    let admin = wallet(9, addr(0x99));
    let proxy_wallet = wallet(1, addr(0x11));
    let client_wallet = wallet(3, addr(0x33));
    let worker_wallet = wallet(4, addr(0x44));
    let proxy_owner = addr(0x12);
    let worker_owner = addr(0x45);
    let groot = GenesisRoot::devnet(admin.address().clone()).unwrap();
    let root = groot.contract().unwrap().address;
    let chain = LocalChain::genesis(GenesisConfig {
        root: Some(groot),
        wallets: [&admin, &proxy_wallet, &client_wallet, &worker_wallet]
            .into_iter()
            .map(genesis_wallet)
            .collect(),
        funded: vec![
            (proxy_owner.clone(), ONE_TON),
            (worker_owner.clone(), ONE_TON),
        ],
        clock: Clock::Fixed(T0),
        config: None,
    })
    .unwrap();
    let root_cfg = chain.root_config().unwrap();
    let pk = key(1).verifying_key().to_bytes();
    let proxy = proxy_contract(&root_cfg.params, &root, &proxy_owner, &pk).unwrap();
    let client = client_contract(
        &root_cfg.params,
        client_wallet.address(),
        &proxy.address,
        &pk,
    )
    .unwrap();
    let worker = worker_contract(&root_cfg.params, &worker_owner, &proxy.address, &pk).unwrap();
    World {
        chain,
        root,
        root_cfg,
        admin,
        signer: VoucherSigner::new(key(1), proxy_wallet.address().clone()),
        proxy_wallet,
        client_wallet,
        worker_wallet,
        proxy_owner,
        worker_owner,
        proxy,
        client,
        worker,
    }
}

fn seqno(chain: &LocalChain, w: &CocoonWallet) -> u32 {
    let r = chain.get_method(w.address(), "seqno", vec![]).unwrap();
    assert_eq!(r.exit_code, 0);
    match r.stack.as_slice() {
        [StackValue::Int(s)] => u32::try_from(*s).unwrap(),
        other => panic!("seqno stack {other:?}"),
    }
}

/// Signs and sends one wallet request carrying `msgs`; returns what it caused.
fn send(chain: &LocalChain, w: &CocoonWallet, msgs: Vec<InternalMessage>) -> ExecutionReport {
    let s = seqno(chain, w);
    let msgs: Vec<(u8, InternalMessage)> = msgs
        .into_iter()
        .map(|m| (cocoon_send_mode(m.value), m))
        .collect();
    let ext = w
        .external_message(s, chain.time() + 3600, &msgs)
        .unwrap()
        .to_boc()
        .unwrap();
    let report = chain.execute_external(&ext).unwrap();
    assert_eq!(seqno(chain, w), s + 1);
    assert_conserved(chain);
    report
}

fn assert_conserved(chain: &LocalChain) {
    let s = chain.supply().unwrap();
    assert!(s.is_conserved(), "value not conserved: {s:?}");
}

fn tx_on<'a>(report: &'a ExecutionReport, on: &'a StdAddr) -> &'a cocoon_ton::local::ExecutedTx {
    report
        .on(on)
        .next()
        .unwrap_or_else(|| panic!("no transaction on {on}: {report:#?}"))
}

/// Every transaction succeeded, except those on `owner`: an account without
/// code, whose incoming payments are credited in transactions with a skipped
/// compute phase (aborted, as TON reports them).
fn assert_succeeded_but_on_owner(r: &ExecutionReport, owner: &StdAddr) {
    for t in &r.transactions {
        if &t.address == owner {
            assert_eq!(t.exit_code, None);
            assert!(!t.bounced);
        } else {
            assert!(t.summary.success, "{r:#?}");
        }
    }
    assert!(r.on(owner).count() > 0);
}

fn client_state(chain: &LocalChain, c: &ContractInit) -> ClientContractState {
    ClientContractState::from_data(&chain.account(&c.address).unwrap().data.unwrap()).unwrap()
}

/// Deploys the proxy contract, then the client contract with a top-up of 10 TON.
fn deploy_proxy_and_client(w: &World) {
    let r = send(
        &w.chain,
        &w.proxy_wallet,
        vec![deploy_message(&w.proxy, 3 * ONE_TON / 10, None)],
    );
    assert!(r.all_succeeded(), "{r:#?}");
    assert_eq!(
        w.chain.account(&w.proxy.address).unwrap().status,
        AccountStatus::Active
    );

    let top_up = client_top_up_message(
        w.client.address.clone(),
        2,
        10 * ONE_TON,
        w.client_wallet.address().clone(),
    )
    .unwrap();
    let deploy_and_top_up = deploy_message(&w.client, top_up.value, top_up.body.clone());
    let r = send(&w.chain, &w.client_wallet, vec![deploy_and_top_up]);
    assert!(r.all_succeeded(), "{r:#?}");
    assert_eq!(tx_on(&r, &w.client.address).exit_code, Some(0));
    // The client contract notified the proxy contract of the top-up.
    let note = tx_on(&r, &w.proxy.address);
    assert!(note.summary.success);
    assert!(matches!(
        Body::parse(&note.summary.in_msg.as_ref().unwrap().body).unwrap(),
        Body::ClientProxyRequest { .. }
    ));
    let st = client_state(&w.chain, &w.client);
    assert_eq!(st.balance, 10 * ONE_TON);
    assert_eq!(st.stake, ONE_TON);
    assert_eq!(st.tokens_used, 0);
}

#[test]
fn genesis_deploys_root_and_wallets_and_get_methods_read_them() {
    let w = world();
    assert_eq!(w.chain.root_address(), Some(w.root.clone()));
    assert_eq!(w.root_cfg.owner, *w.admin.address());
    assert_eq!(w.root_cfg.params.price_per_token, 1000);
    assert_eq!(
        w.root_cfg.params.client_sc_code,
        Some(codes::client_code().unwrap())
    );
    assert_conserved(&w.chain);
    assert_eq!(w.chain.supply().unwrap().minted, u128::from(412 * ONE_TON));

    // Wallet get-methods return what the data holds.
    assert_eq!(seqno(&w.chain, &w.proxy_wallet), 0);
    let pk = w
        .chain
        .get_method(w.proxy_wallet.address(), "get_public_key", vec![])
        .unwrap();
    assert_eq!(
        pk.stack,
        vec![StackValue::Uint256(w.proxy_wallet.public_key())]
    );
    let owner = w
        .chain
        .get_method(w.proxy_wallet.address(), "get_owner_address", vec![])
        .unwrap();
    match owner.stack.as_slice() {
        [StackValue::Slice(c)] => {
            let mut s = c.as_slice().unwrap();
            assert_eq!(cocoon_ton::cells::load_address(&mut s).unwrap(), addr(0x11));
        }
        other => panic!("owner stack {other:?}"),
    }

    // Root get-methods agree with RootConfig.
    let d = w
        .chain
        .get_method(&w.root, "get_cocoon_data", vec![])
        .unwrap();
    assert_eq!(d.exit_code, 0);
    assert_eq!(d.stack.len(), 10);
    assert_eq!(d.stack[0], StackValue::Int(1)); // version
    assert_eq!(d.stack[2], StackValue::Int(1)); // params_version
    assert_eq!(d.stack[3], StackValue::Int(13)); // unique_id
    assert_eq!(d.stack[4], StackValue::Int(-1)); // is_test
    assert_eq!(d.stack[5], StackValue::Int(1000));
    assert_eq!(d.stack[6], StackValue::Int(600));
    assert_eq!(d.stack[7], StackValue::Int(i128::from(ONE_TON)));
    let h = w
        .chain
        .get_method(
            &w.root,
            "proxy_hash_is_valid",
            vec![StackValue::Uint256([7; 32])],
        )
        .unwrap();
    assert_eq!(h.stack, vec![StackValue::Int(0)]);

    // An unknown get-method fails with TVM's exit code 11, through the trait too.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let err = rt
        .block_on(w.chain.run_get_method(&w.root, "no_such_method", vec![]))
        .unwrap_err();
    assert!(
        matches!(err, ChainError::GetMethodFailed { exit_code: 11, .. }),
        "{err}"
    );
    // A plain funded account exists, uninit.
    let st = rt.block_on(w.chain.account_state(&w.proxy_owner)).unwrap();
    assert_eq!(st.status, AccountStatus::Uninit);
    assert_eq!(st.balance, ONE_TON);
}

#[test]
fn client_top_up_charge_and_forged_voucher() {
    let w = world();
    deploy_proxy_and_client(&w);
    let before = client_state(&w.chain, &w.client);

    // The proxy charges 3M tokens (price 1000 = 3 TON) with a signed voucher,
    // sent through its own wallet.
    let v = w
        .signer
        .sign(Voucher::client_charge(
            3,
            3_000_000,
            w.client.address.clone(),
        ))
        .unwrap();
    let r = send(
        &w.chain,
        &w.proxy_wallet,
        vec![voucher_message(&v, OPERATION_VALUE).unwrap()],
    );
    let on_client = tx_on(&r, &w.client.address);
    assert_eq!(on_client.exit_code, Some(0), "{r:#?}");
    let st = client_state(&w.chain, &w.client);
    assert_eq!(st.tokens_used, 3_000_000);
    assert_eq!(st.balance, before.balance - 3 * ONE_TON);
    // The get-method agrees with the parsed data.
    let g = w
        .chain
        .get_method(&w.client.address, "get_cocoon_client_data", vec![])
        .unwrap();
    assert_eq!(g.stack[4], StackValue::Int(i128::from(7 * ONE_TON)));
    assert_eq!(g.stack[6], StackValue::Int(3_000_000));

    // A forged voucher (another key): the client contract refuses it with 1007
    // (as in contracts/tests/client.test.mjs), its state is unchanged and the
    // value bounces back to the proxy wallet.
    let forged = VoucherSigner::new(key(2), w.proxy_wallet.address().clone())
        .sign(Voucher::client_charge(
            4,
            5_000_000,
            w.client.address.clone(),
        ))
        .unwrap();
    let wallet_before = w.chain.balance(w.proxy_wallet.address()).unwrap();
    let r = send(
        &w.chain,
        &w.proxy_wallet,
        vec![voucher_message(&forged, OPERATION_VALUE).unwrap()],
    );
    let on_client = tx_on(&r, &w.client.address);
    assert_eq!(on_client.exit_code, Some(1007));
    assert!(!on_client.summary.success);
    assert!(on_client.bounced);
    assert_eq!(client_state(&w.chain, &w.client), st);
    let wallet_after = w.chain.balance(w.proxy_wallet.address()).unwrap();
    let spent = wallet_before - wallet_after;
    assert!(
        spent < ONE_TON / 10,
        "the bounce returned the value: spent {spent}"
    );
    // A replayed voucher: 1000.
    let r = send(
        &w.chain,
        &w.proxy_wallet,
        vec![voucher_message(&v, OPERATION_VALUE).unwrap()],
    );
    assert_eq!(tx_on(&r, &w.client.address).exit_code, Some(1000));
    assert_eq!(client_state(&w.chain, &w.client), st);
}

#[test]
fn worker_payout_pays_the_owner_and_the_proxy_commission() {
    let w = world();
    deploy_proxy_and_client(&w);
    let owner_before = w.chain.balance(&w.worker_owner).unwrap();

    // The worker deploys its contract with a payout voucher for 2M tokens
    // (fee 600/token to the worker, 400/token to the proxy).
    let v = w
        .signer
        .sign(Voucher::worker_payout(
            5,
            2_000_000,
            w.worker.address.clone(),
        ))
        .unwrap()
        .repack(w.worker_owner.clone());
    let r = send(
        &w.chain,
        &w.worker_wallet,
        vec![deploy_message(
            &w.worker,
            ONE_TON / 2,
            Some(v.to_cell().unwrap()),
        )],
    );
    assert_succeeded_but_on_owner(&r, &w.worker_owner);
    let paid: u64 = r
        .on(&w.worker_owner)
        .filter_map(|t| t.summary.in_msg.as_ref())
        .filter(|m| m.source.as_ref() == Some(&w.proxy.address))
        .filter(|m| {
            Body::peek_op_query_id(&m.body).map(|(op, _)| op) == Some(cocoon_ton::opcodes::PAYOUT)
        })
        .map(|m| m.value)
        .sum();
    assert_eq!(paid, 2_000_000 * 600);
    let ws =
        WorkerContractState::from_data(&w.chain.account(&w.worker.address).unwrap().data.unwrap())
            .unwrap();
    assert_eq!(ws.tokens, 2_000_000);
    let ps =
        ProxyContractState::from_data(&w.chain.account(&w.proxy.address).unwrap().data.unwrap())
            .unwrap();
    assert_eq!(ps.balance, 2_000_000 * 400);
    // The worker owner received the payout and the excesses.
    assert!(w.chain.balance(&w.worker_owner).unwrap() >= owner_before + paid);

    // The last payout closes the worker contract.
    let last = w
        .signer
        .sign(Voucher::new(
            VoucherKind::WorkerLastPayout,
            6,
            3_000_000,
            w.worker.address.clone(),
        ))
        .unwrap()
        .repack(w.worker_owner.clone());
    let r = send(
        &w.chain,
        &w.worker_wallet,
        vec![voucher_message(&last, ONE_TON / 2).unwrap()],
    );
    assert_succeeded_but_on_owner(&r, &w.worker_owner);
    let ws =
        WorkerContractState::from_data(&w.chain.account(&w.worker.address).unwrap().data.unwrap())
            .unwrap();
    assert_eq!(ws.status, ContractStatus::Closed);
    let ps =
        ProxyContractState::from_data(&w.chain.account(&w.proxy.address).unwrap().data.unwrap())
            .unwrap();
    assert_eq!(ps.balance, 3_000_000 * 400);
}

#[test]
fn conservation_is_exact_over_a_whole_flow() {
    let w = world();
    let minted = w.chain.supply().unwrap().minted;
    deploy_proxy_and_client(&w);
    w.chain.fund(w.admin.address(), 5 * ONE_TON).unwrap();
    w.chain.fund(&addr(0x77), 3 * ONE_TON).unwrap();
    let s = w.chain.supply().unwrap();
    assert_eq!(s.minted, minted + u128::from(8 * ONE_TON));
    assert!(s.is_conserved());
    // Fees equal the transactions' total fees plus the forward fees carried by
    // delivered internal messages, recomputed here from the transaction cells.
    let mut fees = 0u128;
    let mut balances = 0u128;
    for a in w.chain.addresses() {
        balances += u128::from(w.chain.balance(&a).unwrap());
        for t in w.chain.transactions_of(&a) {
            let tx = t.cell.parse::<Transaction>().unwrap();
            fees += tx.total_fees.tokens.into_inner();
            let in_msg = tx.in_msg.as_ref().unwrap().parse::<MsgInfo>().unwrap();
            if let MsgInfo::Int(i) = in_msg {
                fees += i.fwd_fee.into_inner();
            }
        }
    }
    assert_eq!(fees, s.fees);
    assert_eq!(balances, s.balances);
    assert_eq!(s.minted, balances + fees);
    assert_eq!(s.burned, 0);
    // The faucet's message shows in the receiver's transactions.
    let txs = w.chain.transactions_of(&addr(0x77));
    assert_eq!(txs.len(), 1);
    assert_eq!(
        txs[0].summary.in_msg.as_ref().unwrap().source,
        Some(FAUCET_ADDRESS)
    );
    assert_eq!(w.chain.balance(&addr(0x77)).unwrap(), 3 * ONE_TON);
}

#[test]
fn refused_externals_change_nothing() {
    let w = world();
    let before = w.chain.supply().unwrap();
    let count = w.chain.transaction_count();
    // Wrong seqno: the wallet throws 1032 before accepting; no transaction.
    let ext = w
        .proxy_wallet
        .external_message(5, T0 + 3600, &[])
        .unwrap()
        .to_boc()
        .unwrap();
    match w.chain.execute_external(&ext) {
        Err(LocalChainError::NotAccepted { exit_code, .. }) => assert_eq!(exit_code, Some(1032)),
        other => panic!("{other:?}"),
    }
    // Forged signature: 1034 (wallet.test.mjs).
    let forged = CocoonWallet::new(key(8), addr(0x11), &codes::wallet_code().unwrap()).unwrap();
    let body = forged.sign_request(0, T0 + 3600, &[]).unwrap();
    let ext = cocoon_ton::wallet::ExternalMessage {
        dest: w.proxy_wallet.address().clone(),
        state_init: None,
        body,
    }
    .to_boc()
    .unwrap();
    match w.chain.execute_external(&ext) {
        Err(LocalChainError::NotAccepted { exit_code, .. }) => assert_eq!(exit_code, Some(1034)),
        other => panic!("{other:?}"),
    }
    // Expired: 1030.
    let ext = w
        .proxy_wallet
        .external_message(0, T0 - 1, &[])
        .unwrap()
        .to_boc()
        .unwrap();
    match w.chain.execute_external(&ext) {
        Err(LocalChainError::NotAccepted { exit_code, .. }) => assert_eq!(exit_code, Some(1030)),
        other => panic!("{other:?}"),
    }
    // To an account that does not exist, without StateInit: not accepted.
    let ext = cocoon_ton::wallet::ExternalMessage {
        dest: addr(0x5a),
        state_init: None,
        body: cocoon_ton::Cell::default(),
    }
    .to_boc()
    .unwrap();
    assert!(w.chain.execute_external(&ext).is_err());
    // Garbage bytes.
    assert!(w.chain.execute_external(b"not a boc").is_err());
    assert_eq!(w.chain.supply().unwrap(), before);
    assert_eq!(w.chain.transaction_count(), count);
    assert_eq!(seqno(&w.chain, &w.proxy_wallet), 0);
}

#[test]
fn transactions_are_followed_through_the_trait() {
    let w = world();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let chain: &dyn ChainBackend = &w.chain;
    let mut follower = rt
        .block_on(TxFollower::from_now(
            chain,
            w.proxy_wallet.address().clone(),
        ))
        .unwrap();
    assert!(rt.block_on(follower.poll(chain)).unwrap().is_empty());
    deploy_proxy_and_client(&w);
    let seen = rt.block_on(follower.poll(chain)).unwrap();
    // The deploy external; the wallet's transactions are its own.
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].in_msg.as_ref().unwrap().source, None);
    assert_eq!(seen[0].out_msgs.len(), 1);
    assert_eq!(seen[0].out_msgs[0].dest, Some(w.proxy.address.clone()));
    // Through send_external too.
    let ext = w
        .proxy_wallet
        .external_message(1, T0 + 3600, &[])
        .unwrap()
        .to_boc()
        .unwrap();
    let hash = rt.block_on(chain.send_external(ext.clone())).unwrap();
    assert_eq!(
        hash,
        cocoon_ton::cells::from_boc(&ext).unwrap().repr_hash().0
    );
    let seen = rt.block_on(follower.poll(chain)).unwrap();
    assert_eq!(seen.len(), 1);
    // Replaying it: refused (seqno moved on).
    assert!(matches!(
        rt.block_on(chain.send_external(ext)),
        Err(ChainError::Rejected(_))
    ));
    assert_eq!(rt.block_on(chain.now()).unwrap(), T0);
    w.chain.advance_time(600).unwrap();
    assert_eq!(rt.block_on(chain.now()).unwrap(), T0 + 600);
}

#[test]
fn a_runaway_cascade_is_rolled_back() {
    let w = world();
    deploy_proxy_and_client(&w);
    w.chain.set_max_transactions(2);
    let before = w.chain.supply().unwrap();
    let count = w.chain.transaction_count();
    let top_up = client_top_up_message(
        w.client.address.clone(),
        9,
        ONE_TON,
        w.client_wallet.address().clone(),
    )
    .unwrap();
    let ext = w
        .client_wallet
        .external_message(1, T0 + 3600, &[(0, top_up)])
        .unwrap()
        .to_boc()
        .unwrap();
    assert!(matches!(
        w.chain.execute_external(&ext),
        Err(LocalChainError::Runaway(2))
    ));
    assert_eq!(w.chain.supply().unwrap(), before);
    assert_eq!(w.chain.transaction_count(), count);
    assert_eq!(seqno(&w.chain, &w.client_wallet), 1);
}

#[test]
fn a_restart_from_the_directory_gives_identical_state() {
    let dir = tempfile::tempdir().unwrap();
    let w = world();
    w.chain.persist_to(dir.path()).unwrap();
    deploy_proxy_and_client(&w);
    let v = w
        .signer
        .sign(Voucher::client_charge(
            3,
            1_000_000,
            w.client.address.clone(),
        ))
        .unwrap();
    send(
        &w.chain,
        &w.proxy_wallet,
        vec![voucher_message(&v, OPERATION_VALUE).unwrap()],
    );

    let reopened = LocalChain::open(dir.path()).unwrap();
    assert_eq!(reopened.addresses(), w.chain.addresses());
    for a in w.chain.addresses() {
        assert_eq!(reopened.shard_account(&a), w.chain.shard_account(&a));
        assert_eq!(reopened.account(&a).unwrap(), w.chain.account(&a).unwrap());
        assert_eq!(reopened.transactions_of(&a), w.chain.transactions_of(&a));
    }
    assert_eq!(reopened.supply().unwrap(), w.chain.supply().unwrap());
    assert_eq!(reopened.logical_time(), w.chain.logical_time());
    assert_eq!(reopened.time(), w.chain.time());
    assert_eq!(reopened.root_address(), w.chain.root_address());
    assert_eq!(reopened.root_config().unwrap(), w.root_cfg);

    // Both continue identically: the same message gives the same transactions.
    let v = w
        .signer
        .sign(Voucher::client_charge(
            4,
            2_000_000,
            w.client.address.clone(),
        ))
        .unwrap();
    let s = seqno(&w.chain, &w.proxy_wallet);
    let ext = w
        .proxy_wallet
        .external_message(
            s,
            T0 + 3600,
            &[(0, voucher_message(&v, OPERATION_VALUE).unwrap())],
        )
        .unwrap()
        .to_boc()
        .unwrap();
    let a = w.chain.execute_external(&ext).unwrap();
    let b = reopened.execute_external(&ext).unwrap();
    assert_eq!(a, b);
    assert_eq!(client_state(&reopened, &w.client).tokens_used, 2_000_000);

    // open_or_genesis opens the existing chain (the genesis given is ignored).
    drop(reopened);
    let again = LocalChain::open_or_genesis(dir.path(), GenesisConfig::default()).unwrap();
    assert_eq!(again.transaction_count(), w.chain.transaction_count());
    assert_eq!(again.root_address(), Some(w.root.clone()));
    // genesis_in refuses to overwrite it.
    assert!(LocalChain::genesis_in(dir.path(), GenesisConfig::default()).is_err());
}

#[test]
fn an_interrupted_save_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let w = world();
    w.chain.persist_to(dir.path()).unwrap();
    deploy_proxy_and_client(&w);
    let count = w.chain.transaction_count();
    // A crash after the log append but before the snapshot: extra lines.
    let log = dir.path().join("transactions.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let first = text.lines().next().unwrap().to_string();
    std::fs::write(&log, format!("{text}{first}\n")).unwrap();
    let reopened = LocalChain::open(dir.path()).unwrap();
    assert_eq!(reopened.transaction_count(), count);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().lines().count(),
        count
    );
    // A log shorter than the snapshot is an error, not silent loss (the directory
    // is released first, so the refusal is about the damage, not the lock).
    drop(reopened);
    std::fs::write(&log, "").unwrap();
    let err = LocalChain::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, LocalChainError::Persist { .. }),
        "damage reported: {err}"
    );
}

// ---- Cross-check with @ton/sandbox (the official C++ emulator in WASM) ----
//
// `tests/data/crosscheck-scenario.json` holds the genesis accounts (ShardAccount
// BOCs) and the external messages of a settlement scenario, as produced by
// this test (`COCOON_UPDATE_CROSSCHECK=1` rewrites it). `tests/golden/
// crosscheck.mjs` replays it on @ton/sandbox with the same mainnet config and
// writes `tests/data/crosscheck-sandbox.json`: per step, every transaction's
// account, exit code, abort flag and total fees, and every balance. Here the
// local chain must give the same, to the nanoTON.

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn external(
    chain: &LocalChain,
    w: &CocoonWallet,
    seqno: u32,
    msgs: Vec<InternalMessage>,
) -> Vec<u8> {
    let msgs: Vec<(u8, InternalMessage)> = msgs
        .into_iter()
        .map(|m| (cocoon_send_mode(m.value), m))
        .collect();
    w.external_message(seqno, chain.time() + 3600, &msgs)
        .unwrap()
        .to_boc()
        .unwrap()
}

fn crosscheck_scenario(w: &World) -> serde_json::Value {
    let mut accounts = Vec::new();
    for a in w.chain.addresses() {
        let sa = w.chain.shard_account(&a).unwrap();
        accounts.push(serde_json::json!({
            "address": cocoon_ton::address::to_raw(&a),
            "shard_account": b64(&cocoon_ton::tycho_types::boc::BocRepr::encode(&sa).unwrap()),
        }));
    }
    let charge = w
        .signer
        .sign(Voucher::client_charge(
            3,
            3_000_000,
            w.client.address.clone(),
        ))
        .unwrap();
    let forged = VoucherSigner::new(key(2), w.proxy_wallet.address().clone())
        .sign(Voucher::client_charge(
            4,
            5_000_000,
            w.client.address.clone(),
        ))
        .unwrap();
    let payout = w
        .signer
        .sign(Voucher::worker_payout(
            5,
            2_000_000,
            w.worker.address.clone(),
        ))
        .unwrap()
        .repack(w.worker_owner.clone());
    let last = w
        .signer
        .sign(Voucher::new(
            VoucherKind::WorkerLastPayout,
            6,
            3_000_000,
            w.worker.address.clone(),
        ))
        .unwrap()
        .repack(w.worker_owner.clone());
    let top_up = client_top_up_message(
        w.client.address.clone(),
        2,
        10 * ONE_TON,
        w.client_wallet.address().clone(),
    )
    .unwrap();
    let c = &w.chain;
    let steps: Vec<(&str, Vec<u8>)> = vec![
        (
            "deploy proxy",
            external(
                c,
                &w.proxy_wallet,
                0,
                vec![deploy_message(&w.proxy, 3 * ONE_TON / 10, None)],
            ),
        ),
        (
            "deploy client + top up 10 TON",
            external(
                c,
                &w.client_wallet,
                0,
                vec![deploy_message(&w.client, top_up.value, top_up.body.clone())],
            ),
        ),
        (
            "charge 3M tokens",
            external(
                c,
                &w.proxy_wallet,
                1,
                vec![voucher_message(&charge, OPERATION_VALUE).unwrap()],
            ),
        ),
        (
            "forged charge (1007)",
            external(
                c,
                &w.proxy_wallet,
                2,
                vec![voucher_message(&forged, OPERATION_VALUE).unwrap()],
            ),
        ),
        (
            "replayed charge (1000)",
            external(
                c,
                &w.proxy_wallet,
                3,
                vec![voucher_message(&charge, OPERATION_VALUE).unwrap()],
            ),
        ),
        (
            "deploy worker + payout 2M",
            external(
                c,
                &w.worker_wallet,
                0,
                vec![deploy_message(
                    &w.worker,
                    ONE_TON / 2,
                    Some(payout.to_cell().unwrap()),
                )],
            ),
        ),
        (
            "last payout 3M",
            external(
                c,
                &w.worker_wallet,
                1,
                vec![voucher_message(&last, ONE_TON / 2).unwrap()],
            ),
        ),
        (
            "wrong seqno (1032, not accepted)",
            external(c, &w.worker_wallet, 7, vec![]),
        ),
    ];
    let body = |dest: &StdAddr, value: u64, b: Body| {
        cocoon_ton::settlement::body_message(dest.clone(), value, &b).unwrap()
    };
    let proxy_wallet = w.proxy_wallet.address().clone();
    let client_wallet = w.client_wallet.address().clone();
    let close = w
        .signer
        .sign(Voucher::new(
            VoucherKind::ProxyClose,
            12,
            0,
            w.proxy.address.clone(),
        ))
        .unwrap();
    let close_complete = w
        .signer
        .sign(Voucher::new(
            VoucherKind::ProxyCloseComplete,
            13,
            0,
            w.proxy.address.clone(),
        ))
        .unwrap();
    // (name, seconds to advance first, external)
    let mut timed: Vec<(&str, u32, Vec<u8>)> = steps.into_iter().map(|(n, b)| (n, 0, b)).collect();
    timed.extend([
        (
            "proxy stakes 2 TON",
            0,
            external(
                c,
                &w.proxy_wallet,
                4,
                vec![body(
                    &w.proxy.address,
                    22 * ONE_TON / 10,
                    Body::ExtProxyIncreaseStake {
                        query_id: 8,
                        grams: 2 * ONE_TON,
                        send_excesses_to: proxy_wallet.clone(),
                    },
                )],
            ),
        ),
        (
            "proxy commission payout",
            0,
            external(
                c,
                &w.proxy_wallet,
                5,
                vec![body(
                    &w.proxy.address,
                    2 * ONE_TON / 10,
                    Body::ExtProxyPayoutRequest {
                        query_id: 9,
                        send_excesses_to: proxy_wallet.clone(),
                    },
                )],
            ),
        ),
        (
            "client withdraws above its stake",
            0,
            external(
                c,
                &w.client_wallet,
                1,
                vec![body(
                    &w.client.address,
                    OPERATION_VALUE,
                    Body::OwnerClientWithdraw {
                        query_id: 10,
                        send_excesses_to: client_wallet.clone(),
                    },
                )],
            ),
        ),
        (
            "client requests a refund (closing)",
            0,
            external(
                c,
                &w.client_wallet,
                2,
                vec![body(
                    &w.client.address,
                    OPERATION_VALUE,
                    Body::OwnerClientRequestRefund {
                        query_id: 11,
                        send_excesses_to: client_wallet.clone(),
                    },
                )],
            ),
        ),
        (
            "client refund too early (1011)",
            60,
            external(
                c,
                &w.client_wallet,
                3,
                vec![body(
                    &w.client.address,
                    OPERATION_VALUE,
                    Body::OwnerClientRequestRefund {
                        query_id: 12,
                        send_excesses_to: client_wallet.clone(),
                    },
                )],
            ),
        ),
        (
            "client refund after the delay (closed)",
            300,
            external(
                c,
                &w.client_wallet,
                4,
                vec![body(
                    &w.client.address,
                    OPERATION_VALUE,
                    Body::OwnerClientRequestRefund {
                        query_id: 13,
                        send_excesses_to: client_wallet.clone(),
                    },
                )],
            ),
        ),
        (
            "proxy close request",
            0,
            external(
                c,
                &w.proxy_wallet,
                6,
                vec![voucher_message(&close, ONE_TON).unwrap()],
            ),
        ),
        (
            "proxy close complete after the delay",
            601,
            external(
                c,
                &w.proxy_wallet,
                7,
                vec![voucher_message(&close_complete, ONE_TON).unwrap()],
            ),
        ),
    ]);
    serde_json::json!({
        "now": T0,
        "accounts": accounts,
        "steps": timed
            .into_iter()
            .map(|(name, advance, boc)| {
                serde_json::json!({"name": name, "advance": advance, "external": b64(&boc)})
            })
            .collect::<Vec<_>>(),
    })
}

#[test]
fn local_chain_matches_ton_sandbox_to_the_nanoton() {
    let w = world();
    let scenario = crosscheck_scenario(&w);
    let scenario_path = data_path("crosscheck-scenario.json");
    let text = serde_json::to_string_pretty(&scenario).unwrap() + "\n";
    if std::env::var_os("COCOON_UPDATE_CROSSCHECK").is_some() {
        std::fs::write(&scenario_path, &text).unwrap();
    }
    // Compared as JSON values, not text: serde_json's key order depends on whether a
    // workspace build enables its `preserve_order` feature.
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&scenario_path).expect("crosscheck scenario"),
    )
    .expect("crosscheck scenario is JSON");
    assert_eq!(
        committed, scenario,
        "the scenario changed: rerun with COCOON_UPDATE_CROSSCHECK=1, then \
         `node crates/cocoon-ton/tests/golden/crosscheck.mjs`"
    );
    let sandbox: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data_path("crosscheck-sandbox.json")).expect("sandbox results"),
    )
    .unwrap();
    let steps = scenario["steps"].as_array().unwrap();
    let expected = sandbox["steps"].as_array().unwrap();
    assert_eq!(steps.len(), expected.len());
    for (step, exp) in steps.iter().zip(expected) {
        use base64::Engine;
        let name = step["name"].as_str().unwrap();
        let advance = step["advance"].as_u64().unwrap();
        w.chain
            .advance_time(u32::try_from(advance).unwrap())
            .unwrap();
        let boc = base64::engine::general_purpose::STANDARD
            .decode(step["external"].as_str().unwrap())
            .unwrap();
        match w.chain.execute_external(&boc) {
            Ok(report) => {
                assert_eq!(
                    exp["accepted"], true,
                    "{name}: accepted here, not in the sandbox"
                );
                let got: Vec<serde_json::Value> = report
                    .transactions
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "account": cocoon_ton::address::to_raw(&t.address),
                            "exit_code": t.exit_code,
                            "aborted": t.aborted,
                            "total_fees": t.total_fees.to_string(),
                        })
                    })
                    .collect();
                assert_eq!(
                    serde_json::Value::Array(got),
                    exp["transactions"],
                    "{name}: transactions differ from the sandbox"
                );
            }
            Err(LocalChainError::NotAccepted { exit_code, .. }) => {
                assert_eq!(
                    exp["accepted"], false,
                    "{name}: refused here, not in the sandbox"
                );
                assert_eq!(
                    serde_json::json!(exit_code),
                    exp["exit_code"],
                    "{name}: exit code"
                );
            }
            Err(e) => panic!("{name}: {e}"),
        }
        for (addr, bal) in exp["balances"].as_object().unwrap() {
            let a = cocoon_ton::address::parse_addr(addr).unwrap();
            assert_eq!(
                w.chain.balance(&a).unwrap().to_string(),
                bal.as_str().unwrap(),
                "{name}: balance of {addr}"
            );
        }
        assert_conserved(&w.chain);
    }
}

#[test]
fn the_root_owner_administers_the_root_through_its_wallet() {
    let w = world();
    let add = Body::RootHash {
        op: cocoon_ton::opcodes::ROOT_ADD_WORKER_TYPE,
        query_id: 1,
        hash: [0xb1; 32],
    };
    let reg = Body::RootRegisterProxy {
        query_id: 2,
        info: "127.0.0.1:8801 127.0.0.1:8802".into(),
    };
    let r = send(
        &w.chain,
        &w.admin,
        vec![
            cocoon_ton::settlement::body_message(w.root.clone(), ONE_TON / 2, &add).unwrap(),
            cocoon_ton::settlement::body_message(w.root.clone(), ONE_TON / 2, &reg).unwrap(),
        ],
    );
    assert!(r.all_succeeded(), "{r:#?}");
    let cfg = w.chain.root_config().unwrap();
    assert_eq!(cfg.version, w.root_cfg.version + 2);
    assert_eq!(cfg.worker_hashes, vec![[0xb1; 32]]);
    assert_eq!(cfg.registered_proxies.len(), 1);
    assert_eq!(
        cfg.registered_proxies[0].address,
        "127.0.0.1:8801 127.0.0.1:8802"
    );
    // The get-methods read the same state.
    let valid = w
        .chain
        .get_method(
            &w.root,
            "worker_hash_is_valid",
            vec![StackValue::Uint256([0xb1; 32])],
        )
        .unwrap();
    assert_eq!(valid.stack, vec![StackValue::Int(-1)]);
    let seqno = w
        .chain
        .get_method(&w.root, "last_proxy_seqno", vec![])
        .unwrap();
    assert_eq!(
        seqno.stack,
        vec![StackValue::Int(i128::from(cfg.last_proxy_seqno))]
    );
    let info = w
        .chain
        .get_method(
            &w.root,
            "get_proxy_info",
            vec![StackValue::Int(i128::from(cfg.last_proxy_seqno))],
        )
        .unwrap();
    assert!(matches!(info.stack.as_slice(), [StackValue::Slice(_)]));

    // Anyone else is refused (1010), and the value comes back as a bounce.
    let r = send(
        &w.chain,
        &w.proxy_wallet,
        vec![cocoon_ton::settlement::body_message(w.root.clone(), ONE_TON / 2, &add).unwrap()],
    );
    let on_root = tx_on(&r, &w.root);
    assert_eq!(on_root.exit_code, Some(1010));
    assert!(on_root.bounced);
    assert_eq!(w.chain.root_config().unwrap(), cfg);
}

#[test]
fn storage_fees_accrue_with_time_and_the_books_still_balance() {
    let w = world();
    deploy_proxy_and_client(&w);
    let before = w.chain.balance(&w.client.address).unwrap();
    w.chain.advance_time(365 * 24 * 3600).unwrap();
    // A top-up a year later pays the client contract's storage for the year.
    let top_up = client_top_up_message(
        w.client.address.clone(),
        7,
        ONE_TON,
        w.client_wallet.address().clone(),
    )
    .unwrap();
    let r = send(&w.chain, &w.client_wallet, vec![top_up]);
    let on_client = tx_on(&r, &w.client.address);
    assert!(on_client.summary.success, "{r:#?}");
    let tx = on_client.cell.parse::<Transaction>().unwrap();
    let storage = match tx.load_info().unwrap() {
        cocoon_ton::tycho_types::models::TxInfo::Ordinary(o) => {
            o.storage_phase.unwrap().storage_fees_collected.into_inner()
        }
        other => panic!("{other:?}"),
    };
    assert!(storage > 0, "a year of storage costs something");
    assert!(storage < u128::from(ONE_TON / 10));
    assert_eq!(on_client.summary.utime, T0 + 365 * 24 * 3600);
    assert!(w.chain.balance(&w.client.address).unwrap() < before + ONE_TON);
    assert_conserved(&w.chain);
}

#[test]
fn the_system_clock_moves_and_never_goes_back() {
    let chain = LocalChain::genesis(GenesisConfig::default()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    assert!(chain.time().abs_diff(now) <= 5);
    chain.advance_time(1000).unwrap();
    assert!(chain.time() >= now + 1000);
    assert_eq!(chain.clock(), Clock::System { offset: 1000 });
    // Funding runs a transaction at the chain time; going back to a fixed time
    // in the past keeps the chain time at the last transaction's.
    let r = chain.fund(&addr(1), ONE_TON).unwrap();
    let t = r.transactions[0].summary.utime;
    chain.set_time(t - 5000).unwrap();
    assert_eq!(chain.time(), t);
    assert_eq!(chain.supply().unwrap().minted, u128::from(ONE_TON));
}

#[test]
fn a_wallet_funded_after_genesis_deploys_itself_with_its_first_external() {
    let w = world();
    // A runner key the genesis did not know: fund its wallet address, then its
    // first request (seqno 0) carries the StateInit, as the C++ runners do.
    let late = wallet(21, addr(0x21));
    assert_eq!(
        w.chain.account(late.address()).unwrap().status,
        AccountStatus::NonExist
    );
    w.chain.fund(late.address(), 10 * ONE_TON).unwrap();
    assert_eq!(
        w.chain.account(late.address()).unwrap().status,
        AccountStatus::Uninit
    );
    // Non-bounceable: a bounceable message to an account that does not exist
    // comes back (checked below).
    let pay = InternalMessage {
        bounce: false,
        ..InternalMessage::cocoon(addr(0x22), ONE_TON, None, None)
    };
    let ext = late
        .external_message(0, T0 + 3600, &[(cocoon_send_mode(pay.value), pay)])
        .unwrap()
        .to_boc()
        .unwrap();
    let r = w.chain.execute_external(&ext).unwrap();
    assert!(tx_on(&r, late.address()).summary.success, "{r:#?}");
    assert_eq!(
        w.chain.account(late.address()).unwrap().status,
        AccountStatus::Active
    );
    assert_eq!(seqno(&w.chain, &late), 1);
    // Mode 0: the forward fee came out of the value.
    let payee = addr(0x22);
    let got = tx_on(&r, &payee).summary.in_msg.as_ref().unwrap().value;
    assert!(got < ONE_TON && got > ONE_TON - ONE_TON / 1000);
    assert_eq!(w.chain.balance(&payee).unwrap(), got);
    assert_conserved(&w.chain);

    // Bounceable to nowhere: the value returns to the wallet, minus fees.
    let before = w.chain.balance(late.address()).unwrap();
    let lost = InternalMessage::cocoon(addr(0x23), ONE_TON, None, None);
    let ext = late
        .external_message(1, T0 + 3600, &[(0, lost)])
        .unwrap()
        .to_boc()
        .unwrap();
    let r = w.chain.execute_external(&ext).unwrap();
    let dead = addr(0x23);
    let nowhere = tx_on(&r, &dead);
    assert!(nowhere.bounced);
    assert_eq!(w.chain.balance(&addr(0x23)).unwrap(), 0);
    assert_eq!(
        w.chain.account(&addr(0x23)).unwrap().status,
        AccountStatus::NonExist
    );
    let after = w.chain.balance(late.address()).unwrap();
    assert!(before - after < ONE_TON / 100, "spent {}", before - after);
    assert_conserved(&w.chain);
}
