//! The money CLI end to end, through the real `cocoon` binary, on a devnet
//! state directory built here with the cocoon-ton library: a LocalChain with
//! our root (owned by an admin wallet), funded cocoon wallets for the proxy,
//! the client and a worker, a deployed and staked proxy contract, a
//! proxy-signed worker voucher, and a devnet.json without a chain API (so every
//! command opens the chain directory itself). Printed amounts and on-chain
//! balances are compared to the nanoTON; the books balance at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cocoon_ton::address::{parse_addr, to_friendly, to_raw};
use cocoon_ton::chain::AccountStatus;
use cocoon_ton::contracts::{
    client_contract, proxy_contract, worker_contract, ClientContractState, CocoonWalletState,
    ContractStatus, ProxyContractState, WorkerContractState,
};
use cocoon_ton::local::{
    codes, Clock, ExecutedTx, GenesisConfig, GenesisRoot, GenesisWallet, LocalChain,
};
use cocoon_ton::messages::Body;
use cocoon_ton::root::{RootConfig, ONE_TON};
use cocoon_ton::settlement::{body_message, deploy_message};
use cocoon_ton::tycho_types::cell::HashBytes;
use cocoon_ton::tycho_types::models::{MsgInfo, Transaction};
use cocoon_ton::units::parse_ton;
use cocoon_ton::voucher::{Voucher, VoucherSigner};
use cocoon_ton::wallet::{cocoon_send_mode, CocoonWallet};
use cocoon_ton::StdAddr;
use ed25519_dalek::SigningKey;

const T0: u32 = 1_800_000_000;
const WORKER_TOKENS: u64 = 2_000_000;

fn addr(b: u8) -> StdAddr {
    StdAddr::new(0, HashBytes([b; 32]))
}

fn friendly(a: &StdAddr) -> String {
    to_friendly(a, true)
}

/// A devnet directory: the chain (closed again), keys, devnet.json.
struct Devnet {
    dir: tempfile::TempDir,
    root: StdAddr,
    admin: CocoonWallet,
    proxy_wallet: CocoonWallet,
    client_wallet: CocoonWallet,
    worker_wallet: CocoonWallet,
    proxy_owner: StdAddr,
    worker_owner: StdAddr,
    proxy_sc: StdAddr,
    client_sc: StdAddr,
    worker_sc: StdAddr,
    proxy_key: SigningKey,
}

impl Devnet {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn chain(&self) -> LocalChain {
        LocalChain::open(self.path().join("chain")).expect("open the devnet chain")
    }

    /// Runs `cocoon ARGS --dir DIR`.
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cocoon"));
        cmd.args(args);
        if args[..2] != ["wallet", "new"] {
            cmd.arg("--dir").arg(self.path());
        }
        let out = cmd
            .env_remove("TONCENTER_API_KEY")
            .output()
            .expect("run cocoon");
        eprintln!(
            "$ cocoon {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "cocoon {args:?} failed");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail, changing nothing on chain; returns stderr.
    fn refused(&self, args: &[&str]) -> String {
        let (count, supply) = {
            let c = self.chain();
            (c.transaction_count(), c.supply().unwrap())
        };
        let out = self.run(args);
        assert!(!out.status.success(), "cocoon {args:?} succeeded");
        let c = self.chain();
        assert_eq!(
            c.transaction_count(),
            count,
            "cocoon {args:?} changed the chain"
        );
        assert_eq!(c.supply().unwrap(), supply);
        String::from_utf8(out.stderr).unwrap()
    }
}

fn key_file(dir: &Path, name: &str) -> (PathBuf, SigningKey) {
    let path = dir.join("keys").join(format!("{name}.pem"));
    let key = cocoon_node::config::load_or_create_key(&path).unwrap();
    (path, key)
}

fn devnet() -> Devnet {
    let dir = tempfile::tempdir().unwrap();
    let code = codes::wallet_code().unwrap();
    let mut entries = serde_json::Map::new();
    let mut wallet = |name: &str, owner: StdAddr| {
        let (path, key) = key_file(dir.path(), name);
        let w = CocoonWallet::new(key, owner.clone(), &code).unwrap();
        entries.insert(
            name.to_owned(),
            serde_json::json!({
                "key_file": path.display().to_string(),
                "owner": friendly(&owner),
                "address": friendly(w.address()),
            }),
        );
        w
    };
    let admin = wallet("root-admin", addr(0x99));
    let proxy_owner = addr(0x12);
    let worker_owner = addr(0x45);
    let proxy_wallet = wallet("proxy", proxy_owner.clone());
    let client_wallet = wallet("client", addr(0x33));
    let worker_wallet = wallet("worker-0", worker_owner.clone());
    let groot = GenesisRoot::devnet(admin.address().clone()).unwrap();
    let root = groot.contract().unwrap().address;
    let genesis = GenesisConfig {
        root: Some(groot),
        wallets: [&admin, &proxy_wallet, &client_wallet, &worker_wallet]
            .into_iter()
            .map(|w| GenesisWallet::new(w.public_key(), w.owner().clone(), 100 * ONE_TON))
            .collect(),
        clock: Clock::Fixed(T0),
        ..GenesisConfig::default()
    };
    let chain = LocalChain::genesis_in(dir.path().join("chain"), genesis).unwrap();
    let cfg = chain.root_config().unwrap();
    let proxy_key = SigningKey::from_bytes(&[7; 32]);
    let pk = proxy_key.verifying_key().to_bytes();
    let proxy = proxy_contract(&cfg.params, &root, &proxy_owner, &pk).unwrap();
    let client_sc = client_contract(&cfg.params, client_wallet.address(), &proxy.address, &pk)
        .unwrap()
        .address;
    let worker_sc = worker_contract(&cfg.params, &worker_owner, &proxy.address, &pk)
        .unwrap()
        .address;

    // The proxy deploys its contract and stakes 2 TON (forced client refunds come from it).
    let send = |w: &CocoonWallet, m: cocoon_ton::wallet::InternalMessage| {
        let data = chain.account(w.address()).unwrap().data.unwrap();
        let seqno = CocoonWalletState::from_data(&data).unwrap().seqno;
        let ext = w
            .external_message(seqno, T0 + 3600, &[(cocoon_send_mode(m.value), m)])
            .unwrap();
        let r = chain.execute_external(&ext.to_boc().unwrap()).unwrap();
        assert!(r.all_succeeded(), "{r:#?}");
    };
    send(
        &proxy_wallet,
        deploy_message(&proxy, 3 * ONE_TON / 10, None),
    );
    let stake = Body::ExtProxyIncreaseStake {
        query_id: 1,
        grams: 2 * ONE_TON,
        send_excesses_to: proxy_wallet.address().clone(),
    };
    send(
        &proxy_wallet,
        body_message(proxy.address.clone(), 2 * ONE_TON + ONE_TON / 5, &stake).unwrap(),
    );
    let ps = ProxyContractState::from_data(&chain.account(&proxy.address).unwrap().data.unwrap())
        .unwrap();
    assert_eq!(ps.stake, 2 * ONE_TON);
    drop(chain);

    // What the worker received from the proxy: a signed payout voucher file.
    let voucher = VoucherSigner::new(proxy_key.clone(), proxy_wallet.address().clone())
        .sign_to_boc(Voucher::worker_payout(42, WORKER_TOKENS, worker_sc.clone()))
        .unwrap();
    let voucher_path = dir.path().join("worker-0-voucher.boc");
    std::fs::write(&voucher_path, voucher).unwrap();

    let info = serde_json::json!({
        "root_address": friendly(&root),
        "proxy_public_key": hex::encode(pk),
        "proxy_sc_address": friendly(&proxy.address),
        "wallets": entries,
        // Relative paths are relative to the devnet directory.
        "worker_vouchers": { "worker-0": voucher_path.file_name().unwrap().to_str().unwrap() },
    });
    std::fs::write(
        dir.path().join("devnet.json"),
        serde_json::to_vec_pretty(&info).unwrap(),
    )
    .unwrap();
    Devnet {
        dir,
        root,
        admin,
        proxy_wallet,
        client_wallet,
        worker_wallet,
        proxy_owner,
        worker_owner,
        proxy_sc: proxy.address,
        client_sc,
        worker_sc,
        proxy_key,
    }
}

/// The value after `label` on the first line starting with it.
fn field<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{out}"))
        .trim()
}

/// The first `N TON` amount in `text`, in nanoTON.
fn amount(text: &str) -> u64 {
    let (n, _) = text
        .split_once(" TON")
        .unwrap_or_else(|| panic!("no amount in {text:?}"));
    let n = n.rsplit(' ').next().unwrap().trim_start_matches(['+', '-']);
    parse_ton(n).unwrap_or_else(|e| panic!("{n:?}: {e}"))
}

/// `A TON -> B TON (…)`.
fn before_after(text: &str) -> (u64, u64) {
    let (a, b) = text.split_once("->").unwrap();
    (amount(a), amount(b))
}

fn last_tx(chain: &LocalChain, a: &StdAddr) -> ExecutedTx {
    chain.transactions_of(a).pop().expect("a transaction")
}

/// Forward fees of the messages a transaction sent.
fn fwd_fees(t: &ExecutedTx) -> u64 {
    let tx = t.cell.parse::<Transaction>().unwrap();
    tx.out_msgs
        .values()
        .map(|m| match m.unwrap().parse::<MsgInfo>().unwrap() {
            MsgInfo::Int(i) => u64::try_from(i.fwd_fee.into_inner()).unwrap(),
            _ => 0,
        })
        .sum()
}

fn client_state(chain: &LocalChain, a: &StdAddr) -> ClientContractState {
    ClientContractState::from_data(&chain.account(a).unwrap().data.unwrap()).unwrap()
}

#[test]
fn wallets_new_show_send_and_refusals() {
    let d = devnet();
    let owner = addr(0x61);
    let key = d.path().join("mine.pem");
    let key_s = key.display().to_string();
    let owner_s = friendly(&owner);
    let out = d.ok(&["wallet", "new", "--key", &key_s, "--owner", &owner_s]);
    let mine = CocoonWallet::new(
        cocoon_attest::cert::load_key_pem(&std::fs::read(&key).unwrap()).unwrap(),
        owner.clone(),
        &codes::wallet_code().unwrap(),
    )
    .unwrap();
    assert_eq!(field(&out, "address:"), friendly(mine.address()));
    assert_eq!(field(&out, "raw:"), to_raw(mine.address()));
    // Never overwritten.
    let pem = std::fs::read(&key).unwrap();
    let err = d.refused(&["wallet", "new", "--key", &key_s, "--owner", &owner_s]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), pem);

    let out = d.ok(&["wallet", "show", "--wallet", "client"]);
    assert_eq!(field(&out, "address:"), friendly(d.client_wallet.address()));
    assert_eq!(field(&out, "status:"), "active");
    assert_eq!(amount(field(&out, "balance:")), 100 * ONE_TON);
    assert_eq!(field(&out, "seqno:"), "0");
    let out = d.ok(&["wallet", "show", "--key", &key_s, "--owner", &owner_s]);
    assert_eq!(field(&out, "status:"), "does not exist");

    // Send 5 TON: the recipient gets exactly 5 TON, the wallet pays value + fees.
    let out = d.ok(&[
        "wallet",
        "send",
        "--wallet",
        "client",
        "--to",
        &friendly(mine.address()),
        "--amount",
        "5",
        "--comment",
        "hello",
    ]);
    let chain = d.chain();
    assert_eq!(chain.balance(mine.address()).unwrap(), 5 * ONE_TON);
    let tx = last_tx(&chain, d.client_wallet.address());
    let fees = tx.total_fees + fwd_fees(&tx);
    let after = chain.balance(d.client_wallet.address()).unwrap();
    assert_eq!(100 * ONE_TON - after, 5 * ONE_TON + fees);
    assert_eq!(amount(field(&out, "fees:")), fees);
    assert_eq!(
        before_after(field(&out, "balance:")),
        (100 * ONE_TON, after)
    );
    // The comment arrived.
    let got = last_tx(&chain, mine.address());
    assert_eq!(
        Body::parse(&got.summary.in_msg.unwrap().body).unwrap(),
        Body::Text("hello".into())
    );
    drop(chain);
    let out = d.ok(&["wallet", "show", "--key", &key_s, "--owner", &owner_s]);
    assert!(field(&out, "status:").starts_with("not deployed"));
    assert_eq!(amount(field(&out, "balance:")), 5 * ONE_TON);

    // More than the balance: refused, nothing changes.
    let err = d.refused(&[
        "wallet", "send", "--wallet", "client", "--to", &owner_s, "--amount", "1000",
    ]);
    assert!(err.contains("cannot cover 1000.1 TON"), "{err}");
    assert!(
        err.contains(&format!(
            "short by {}",
            ton(1000 * ONE_TON + ONE_TON / 10 - after)
        )),
        "{err}"
    );

    // The new wallet deploys itself with its first request.
    let out = d.ok(&[
        "wallet", "send", "--key", &key_s, "--owner", &owner_s, "--to", &owner_s, "--amount", "3",
    ]);
    assert!(out.contains("exit code 0"), "{out}");
    let chain = d.chain();
    assert_eq!(
        chain.account(mine.address()).unwrap().status,
        AccountStatus::Active
    );
    assert_eq!(chain.balance(&owner).unwrap(), 3 * ONE_TON);
    assert!(chain.balance(mine.address()).unwrap() < 2 * ONE_TON);
    drop(chain);
    // Now under 2 TON: the wallet contract would refuse (1035); so does the CLI.
    let err = d.refused(&[
        "wallet", "send", "--key", &key_s, "--owner", &owner_s, "--to", &owner_s, "--amount", "0.1",
    ]);
    assert!(err.contains("below 2 TON"), "{err}");
    assert!(err.contains("exit code 1035"), "{err}");

    // A contract that refuses: the root takes no comment from a stranger (1010);
    // the value bounces back and the command fails with the exit code.
    let out = d.run(&[
        "wallet",
        "send",
        "--wallet",
        "client",
        "--to",
        &friendly(&d.root),
        "--amount",
        "0.5",
        "--comment",
        "hi",
    ]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("exit code 1010"), "{stdout}");
    assert!(stdout.contains("value bounced back"), "{stdout}");
    assert!(stderr.contains("exit code 1010"), "{stderr}");

    assert!(d.chain().supply().unwrap().is_conserved());
}

fn ton(n: u64) -> String {
    format!("{} TON", cocoon_ton::units::format_ton(n))
}

#[test]
fn the_whole_money_flow_through_the_cli() {
    let d = devnet();

    // ---- root ----
    let out = d.ok(&["root", "show"]);
    assert_eq!(
        field(&out, "root:"),
        format!("{} ({})", friendly(&d.root), to_raw(&d.root))
    );
    assert_eq!(
        field(&out, "owner:").split(' ').next(),
        Some(friendly(d.admin.address()).as_str())
    );
    assert_eq!(field(&out, "version:"), "1");
    assert_eq!(
        field(&out, "price per token:"),
        "0.000001 TON (1000 nanoTON)"
    );
    assert_eq!(
        field(&out, "worker fee per token:"),
        "0.0000006 TON (600 nanoTON)"
    );
    assert_eq!(field(&out, "client close delay:"), "300 s");
    assert_eq!(field(&out, "worker hashes:"), "(none)");
    assert!(field(&out, "client code:").ends_with("(ours)"));

    let worker_hash = "b1".repeat(32);
    let out = d.ok(&["root", "add-worker-hash", &worker_hash]);
    assert_eq!(field(&out, "root version:"), "1 -> 2");
    // The same again: nothing to send.
    let out = d.ok(&["root", "add-worker-hash", &worker_hash]);
    assert!(out.contains("already allowed"), "{out}");
    let model = "Qwen/Qwen3-0.6B@abc123:def456";
    let out = d.ok(&["root", "add-model", model]);
    assert_eq!(field(&out, "root version:"), "2 -> 3");
    let model_hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(model.as_bytes()))
    };
    let out = d.ok(&["root", "add-proxy", "127.0.0.1:8801 127.0.0.1:8802"]);
    assert_eq!(
        field(&out, "proxy registered:"),
        "#1 127.0.0.1:8801 127.0.0.1:8802"
    );
    let bad = d.refused(&["root", "add-proxy", "localhost"]);
    assert!(bad.contains("IPv4"), "{bad}");
    // Only the owner administers the root.
    let err = d.refused(&[
        "root",
        "add-worker-hash",
        &"c2".repeat(32),
        "--wallet",
        "client",
    ]);
    assert!(err.contains("exit code 1010"), "{err}");
    let out = d.ok(&["root", "show"]);
    assert_eq!(field(&out, "version:"), "4");
    assert_eq!(field(&out, "worker hashes:"), worker_hash);
    assert_eq!(field(&out, "model hashes:"), model_hash);
    assert!(out.contains("  #1 127.0.0.1:8801 127.0.0.1:8802"), "{out}");
    let cfg = d.chain().root_config().unwrap();
    assert_eq!(cfg.version, 4);
    assert_eq!(cfg.worker_hashes, vec![[0xb1; 32]]);

    // ---- client: top-up deploys the contract ----
    let out = d.ok(&["client", "balance"]);
    assert!(field(&out, "status:").starts_with("not deployed"), "{out}");
    let out = d.ok(&["client", "top-up", "--amount", "10"]);
    assert_eq!(
        field(&out, "deployed:"),
        format!(
            "client contract {} ({})",
            friendly(&d.client_sc),
            to_raw(&d.client_sc)
        )
    );
    assert_eq!(
        field(&out, "balance:"),
        "0 TON -> 10 TON = 10000000 tokens at 1000 nanoTON/token"
    );
    let chain = d.chain();
    let st = client_state(&chain, &d.client_sc);
    assert_eq!(
        (st.balance, st.stake, st.status),
        (10 * ONE_TON, ONE_TON, ContractStatus::Normal)
    );
    let wallet_now = chain.balance(d.client_wallet.address()).unwrap();
    assert_eq!(
        before_after(field(&out, "wallet client balance:")).1,
        wallet_now
    );
    drop(chain);
    let out = d.ok(&["client", "balance"]);
    assert_eq!(field(&out, "status:"), "normal (queries allowed)");
    assert_eq!(
        field(&out, "balance:"),
        "10 TON = 10000000 tokens at 1000 nanoTON/token"
    );
    assert!(field(&out, "stake:").starts_with("1 TON = 1000000 tokens"));
    assert_eq!(field(&out, "tokens used:"), "0 (charged on chain)");
    assert_eq!(amount(field(&out, "withdrawable:")), 9 * ONE_TON);

    // ---- worker payout with the proxy-signed voucher ----
    let out = d.ok(&["worker", "balance"]);
    assert_eq!(field(&out, "tokens paid:"), "0 (on chain)");
    assert_eq!(field(&out, "payable now:"), "2000000 tokens = 1.2 TON");
    let owner_before = d.chain().balance(&d.worker_owner).unwrap();
    assert_eq!(owner_before, 0);
    let out = d.ok(&["worker", "payout"]);
    let due = WORKER_TOKENS * 600;
    assert_eq!(amount(field(&out, "paid:")), due);
    let chain = d.chain();
    assert_eq!(chain.balance(&d.worker_owner).unwrap(), owner_before + due);
    assert_eq!(
        before_after(field(&out, "owner balance:")),
        (owner_before, owner_before + due)
    );
    let ws = WorkerContractState::from_data(&chain.account(&d.worker_sc).unwrap().data.unwrap())
        .unwrap();
    assert_eq!(ws.tokens, WORKER_TOKENS);
    // The change went back to the worker's own wallet, not the proxy's.
    assert!(chain
        .transactions_of(d.worker_wallet.address())
        .iter()
        .any(
            |t| t.summary.in_msg.as_ref().is_some_and(|m| m.source.is_some()
                && Body::peek_op_query_id(&m.body).map(|(o, _)| o)
                    == Some(cocoon_ton::opcodes::EXCESSES))
        ));
    drop(chain);
    let err = d.refused(&["worker", "payout"]);
    assert!(err.contains("nothing to pay"), "{err}");
    assert!(err.contains("exit code 1000"), "{err}");
    // A voucher signed by another key is refused before anything is sent.
    let forged = d.path().join("forged.boc");
    std::fs::write(
        &forged,
        VoucherSigner::new(
            SigningKey::from_bytes(&[8; 32]),
            d.proxy_wallet.address().clone(),
        )
        .sign_to_boc(Voucher::worker_payout(
            43,
            3 * WORKER_TOKENS,
            d.worker_sc.clone(),
        ))
        .unwrap(),
    )
    .unwrap();
    let err = d.refused(&[
        "worker",
        "payout",
        "--voucher",
        &forged.display().to_string(),
    ]);
    assert!(err.contains("not a valid voucher"), "{err}");
    let _ = &d.proxy_key;

    // ---- proxy: the commission from that payout ----
    let commission = WORKER_TOKENS * 400;
    let out = d.ok(&["proxy", "balance"]);
    assert_eq!(amount(field(&out, "earned:")), commission);
    assert_eq!(amount(field(&out, "stake:")), 2 * ONE_TON);
    let out = d.ok(&["proxy", "withdraw"]);
    assert_eq!(amount(field(&out, "withdrawn:")), commission);
    let chain = d.chain();
    assert_eq!(chain.balance(&d.proxy_owner).unwrap(), commission);
    let ps =
        ProxyContractState::from_data(&chain.account(&d.proxy_sc).unwrap().data.unwrap()).unwrap();
    assert_eq!(ps.balance, 0);
    drop(chain);
    let err = d.refused(&["proxy", "withdraw"]);
    assert!(err.contains("nothing to withdraw"), "{err}");

    // ---- client: withdraw above the stake, then close in two phases ----
    let before = d.chain().balance(d.client_wallet.address()).unwrap();
    let out = d.ok(&["client", "withdraw"]);
    assert_eq!(amount(field(&out, "withdrawn:")), 9 * ONE_TON);
    assert_eq!(
        field(&out, "balance:"),
        "10 TON -> 1 TON = 1000000 tokens at 1000 nanoTON/token"
    );
    let chain = d.chain();
    let after = chain.balance(d.client_wallet.address()).unwrap();
    assert_eq!(
        before_after(field(&out, "wallet client balance:")),
        (before, after)
    );
    let payout = last_payout(&chain, d.client_wallet.address(), &d.proxy_sc);
    assert_eq!(payout, 9 * ONE_TON);
    assert_eq!(client_state(&chain, &d.client_sc).balance, ONE_TON);
    drop(chain);
    let err = d.refused(&["client", "withdraw"]);
    assert!(err.contains("nothing to withdraw"), "{err}");

    let out = d.ok(&["client", "close"]);
    assert!(out.contains("phase 1 of 2 done"), "{out}");
    assert_eq!(amount(field(&out, "kept until unlock:")), ONE_TON);
    let unlock = T0 + 300;
    assert_eq!(field(&out, "unlocks at:"), format!("{unlock} (in 300 s)"));
    let st = client_state(&d.chain(), &d.client_sc);
    assert_eq!((st.status, st.unlock_ts), (ContractStatus::Closing, unlock));
    // Before the unlock: refused with the contract's exit code, nothing sent.
    let err = d.refused(&["client", "close"]);
    assert!(err.contains("exit code 1011"), "{err}");
    assert!(
        err.contains(&format!("unlocks at {unlock} (in 300 s)")),
        "{err}"
    );
    let err = d.refused(&["client", "withdraw"]);
    assert!(err.contains("exit code 1006"), "{err}");
    // Move the chain's clock past the unlock (the CLI reopens the directory each time).
    d.chain().advance_time(301).unwrap();
    let before = d.chain().balance(d.client_wallet.address()).unwrap();
    let out = d.ok(&["client", "close"]);
    assert!(out.contains("phase 2 of 2 done"), "{out}");
    assert_eq!(amount(field(&out, "refunded:")), ONE_TON);
    let chain = d.chain();
    let st = client_state(&chain, &d.client_sc);
    assert_eq!((st.status, st.balance), (ContractStatus::Closed, 0));
    assert_eq!(
        last_payout(&chain, d.client_wallet.address(), &d.proxy_sc),
        ONE_TON
    );
    let ps =
        ProxyContractState::from_data(&chain.account(&d.proxy_sc).unwrap().data.unwrap()).unwrap();
    assert_eq!(
        ps.stake, ONE_TON,
        "the forced refund came from the proxy's stake"
    );
    let after = chain.balance(d.client_wallet.address()).unwrap();
    assert_eq!(
        before_after(field(&out, "wallet client balance:")),
        (before, after)
    );
    drop(chain);
    let out = d.ok(&["client", "balance"]);
    assert_eq!(field(&out, "status:"), "closed");
    let err = d.refused(&["client", "close"]);
    assert!(err.contains("already closed"), "{err}");

    // ---- root: a price change bumps the params version ----
    let out = d.ok(&[
        "root",
        "set-price",
        "--price",
        "0.000002",
        "--worker-fee",
        "0.0000015",
    ]);
    assert_eq!(field(&out, "root version:"), "4 -> 5");
    assert!(field(&out, "params version:").starts_with("1 -> 2"));
    let err = d.refused(&["root", "set-price", "--worker-fee", "0.000003"]);
    assert!(err.contains("exit code 1004"), "{err}");
    let out = d.ok(&["root", "show"]);
    assert_eq!(
        field(&out, "price per token:"),
        "0.000002 TON (2000 nanoTON)"
    );
    assert_eq!(
        field(&out, "worker fee per token:"),
        "0.0000015 TON (1500 nanoTON)"
    );
    assert!(field(&out, "params version:").starts_with("2 "));
    let cfg = d.chain().root_config().unwrap();
    assert_eq!(
        (cfg.params.price_per_token, cfg.params.worker_fee_per_token),
        (2000, 1500)
    );

    // ---- root deploy: a second root owned by the admin ----
    let out = d.ok(&[
        "root",
        "deploy",
        "--unique-id",
        "99",
        "--price",
        "0.000003",
        "--worker-fee",
        "0.000002",
    ]);
    let deployed = field(&out, "deployed:")
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    let new_root = parse_addr(&deployed).unwrap();
    let chain = d.chain();
    let cfg = RootConfig::from_data_cell(&chain.account(&new_root).unwrap().data.unwrap()).unwrap();
    assert_eq!(cfg.owner, *d.admin.address());
    assert_eq!(
        (cfg.params.unique_id, cfg.params.price_per_token),
        (99, 3000)
    );
    drop(chain);
    let out = d.ok(&["root", "show", "--root", &deployed]);
    assert_eq!(field(&out, "unique id:"), "99");
    let err = d.refused(&[
        "root",
        "deploy",
        "--unique-id",
        "99",
        "--price",
        "0.000003",
        "--worker-fee",
        "0.000002",
    ]);
    assert!(err.contains("already deployed"), "{err}");

    assert!(d.chain().supply().unwrap().is_conserved());
}

/// The value of the last payout `to` received from `from`.
fn last_payout(chain: &LocalChain, to: &StdAddr, from: &StdAddr) -> u64 {
    chain
        .transactions_of(to)
        .iter()
        .rev()
        .filter_map(|t| t.summary.in_msg.as_ref())
        .find(|m| {
            m.source.as_ref() == Some(from)
                && Body::peek_op_query_id(&m.body).map(|(o, _)| o)
                    == Some(cocoon_ton::opcodes::PAYOUT)
        })
        .map(|m| m.value)
        .expect("a payout")
}

#[test]
fn a_running_devnet_without_a_chain_api_is_named() {
    let d = devnet();
    let held = d.chain();
    let err = d.refused_while_held(&["wallet", "show", "--wallet", "client"]);
    assert!(
        err.contains(&format!(
            "the devnet in {} is running (pid {}); its chain API is not reachable",
            d.path().display(),
            std::process::id()
        )),
        "{err}"
    );
    drop(held);
    d.ok(&["wallet", "show", "--wallet", "client"]);
    // No devnet at all.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(["wallet", "show", "--wallet", "client", "--dir"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no devnet chain in"), "{err}");
}

impl Devnet {
    /// Runs a command that must fail while the test holds the chain open.
    fn refused_while_held(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "cocoon {args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    }
}

/// Serves `chain` as the devnet does (the toncenter API at `/api/v2`) on a
/// free port of this machine; returns the API's URL.
fn serve_chain_api(chain: std::sync::Arc<LocalChain>) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app =
                axum::Router::new().nest("/api/v2", cocoon_ton::toncenter::server::router(chain));
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}/api/v2", rx.recv().unwrap())
}

fn set_chain_api(d: &Devnet, url: &str) {
    let path = d.path().join("devnet.json");
    let mut info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    info["chain_api"] = serde_json::json!(url);
    std::fs::write(&path, serde_json::to_vec_pretty(&info).unwrap()).unwrap();
}

/// While the devnet runs (it holds the chain directory), the CLI goes through
/// the chain API devnet.json names, and reports the same: every transaction
/// with its exit code and fees, amounts to the nanoTON, refusals before sending.
#[test]
fn a_running_devnet_is_reached_through_its_chain_api() {
    let d = devnet();
    let chain = std::sync::Arc::new(d.chain());
    set_chain_api(&d, &serve_chain_api(chain.clone()));

    let out = d.ok(&["wallet", "show", "--wallet", "client"]);
    assert_eq!(amount(field(&out, "balance:")), 100 * ONE_TON);

    let out = d.ok(&["client", "top-up", "--amount", "10"]);
    assert!(
        out.contains("1. wallet client: signed request (external): exit code 0"),
        "{out}"
    );
    assert!(
        out.contains("client contract: ext_client_top_up from wallet client"),
        "{out}"
    );
    assert!(
        !out.contains("more followed"),
        "the whole cascade is shown: {out}"
    );
    assert_eq!(
        field(&out, "balance:"),
        "0 TON -> 10 TON = 10000000 tokens at 1000 nanoTON/token"
    );
    assert_eq!(client_state(&chain, &d.client_sc).balance, 10 * ONE_TON);
    let wallet_now = chain.balance(d.client_wallet.address()).unwrap();
    assert_eq!(
        before_after(field(&out, "wallet client balance:")).1,
        wallet_now
    );

    let out = d.ok(&["worker", "payout"]);
    let due = WORKER_TOKENS * 600;
    assert_eq!(amount(field(&out, "paid:")), due);
    assert!(
        out.contains("worker owner: payout from proxy contract, 1.2 TON: credited (no code there)"),
        "{out}"
    );
    assert_eq!(chain.balance(&d.worker_owner).unwrap(), due);

    let out = d.ok(&["client", "withdraw"]);
    assert_eq!(amount(field(&out, "withdrawn:")), 9 * ONE_TON);
    let out = d.ok(&["client", "close"]);
    assert!(out.contains("phase 1 of 2 done"), "{out}");
    assert_eq!(amount(field(&out, "refunded now:")), 0);
    // The proxy contract's 1-nanoTON notification cannot pay for gas: reported, not a failure.
    assert!(
        out.contains("not run: the value cannot pay for any gas"),
        "{out}"
    );
    let count = chain.transaction_count();
    let err = d.refused_while_held(&["client", "close"]);
    assert!(err.contains("exit code 1011"), "{err}");
    assert_eq!(chain.transaction_count(), count);

    // A contract's refusal comes back with its exit code through the API too.
    let out = d.run(&[
        "wallet",
        "send",
        "--wallet",
        "client",
        "--to",
        &friendly(&d.root),
        "--amount",
        "0.5",
        "--comment",
        "hi",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("exit code 1010"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exit code 1010"));
    assert!(chain.supply().unwrap().is_conserved());
}

#[test]
fn a_running_devnet_whose_chain_api_does_not_answer_is_named() {
    let d = devnet();
    let _held = d.chain();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/api/v2");
    set_chain_api(&d, &url);
    let err = d.refused_while_held(&["wallet", "show", "--wallet", "client"]);
    assert!(
        err.contains(&format!(
            "the devnet in {} is running (pid {}); its chain API is not reachable ({url}",
            d.path().display(),
            std::process::id()
        )),
        "{err}"
    );
}

/// Struct_version 5 through the CLI: the owner names a key manager and registers a key;
/// `root show` lists both; a stranger, an expired key and a bad address are refused before
/// anything is sent or by the root.
#[test]
fn root_key_manager_and_keys_through_the_cli() {
    let d = devnet();
    let out = d.ok(&["root", "show"]);
    assert!(
        field(&out, "params version:").ends_with("(struct version 5)"),
        "{out}"
    );
    assert_eq!(field(&out, "key manager address:"), "(none)");
    assert_eq!(field(&out, "registered keys:"), "(none)");

    let km = "ab".repeat(32);
    let out = d.ok(&[
        "root",
        "set-key-manager",
        "--public-key",
        &km,
        "--image-hash",
        &"cd".repeat(32),
        "--address",
        "127.0.0.1:13001",
    ]);
    assert_eq!(field(&out, "root version:"), "1 -> 2");
    let bad = d.refused(&[
        "root",
        "set-key-manager",
        "--public-key",
        &km,
        "--address",
        "localhost:1",
    ]);
    assert!(bad.contains("IPv4"), "{bad}");

    let key = "0a".repeat(32);
    let out = d.ok(&["root", "add-key", &key, "--expires-in", "3600"]);
    assert!(field(&out, "key registered:").starts_with(&key), "{out}");
    let bad = d.refused(&["root", "add-key", &key, "--expire-at", "1000"]);
    assert!(bad.contains("already be expired"), "{bad}");
    let err = d.refused(&["root", "add-key", &"0b".repeat(32), "--wallet", "client"]);
    assert!(err.contains("exit code 1010"), "{err}");

    let out = d.ok(&["root", "show"]);
    assert_eq!(field(&out, "key manager:"), km);
    assert_eq!(field(&out, "key manager address:"), "127.0.0.1:13001");
    assert!(
        out.contains(&format!("  {key} type 1 expires at ")),
        "{out}"
    );
    assert!(out.contains("(valid)"), "{out}");
    let cfg = d.chain().root_config().unwrap();
    assert_eq!(cfg.key_manager.public_keys.len(), 1);
    assert_eq!(cfg.key_manager.image_hash, [0xcd; 32]);
    assert!(d.chain().supply().unwrap().is_conserved());
}
