//! `cocoon worker balance|payout`: the worker contract of a worker's owner at a
//! proxy, paid with the proxy-signed vouchers the worker keeps (spec §5.4, §5.5).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use cocoon_ton::chain::{AccountState, AccountStatus};
use cocoon_ton::contracts::{
    worker_contract, ContractInit, ContractStatus, ProxyContractState, WorkerContractState,
};
use cocoon_ton::opcodes as op;
use cocoon_ton::root::CocoonParams;
use cocoon_ton::settlement::{deploy_message, voucher_message, WORKER_SELF_PAYOUT_VALUE};
use cocoon_ton::voucher::{SignedVoucher, VoucherKind, VoucherVerifier};
use cocoon_ton::wallet::cocoon_send_mode;
use cocoon_ton::StdAddr;

use super::chain::Names;
use super::{print_wallet_change, ton, ton_delta, ChainOpts, Ctx, ProxyOpts, Wallet, WalletOpts};

/// The devnet's name for the (first) worker's wallet.
const WORKER: &str = "worker-0";

/// `cocoon worker …` (money).
#[derive(Debug, Subcommand)]
pub enum WorkerMoney {
    /// The worker contract: tokens paid so far, and what the best voucher would pay now.
    Balance(WorkerOpts),
    /// Submit the best voucher: the proxy contract pays the new tokens × worker fee
    /// to the worker's owner (deploys the worker contract on first use).
    Payout(WorkerOpts),
}

/// Options of the worker commands.
#[derive(Debug, Args)]
pub struct WorkerOpts {
    #[command(flatten)]
    chain: ChainOpts,
    #[command(flatten)]
    wallet: WalletOpts,
    #[command(flatten)]
    proxy: ProxyOpts,
    /// The voucher file (a proxy-signed voucher BOC; default: the wallet's entry in
    /// worker_vouchers of devnet.json).
    #[arg(long)]
    voucher: Option<PathBuf>,
}

/// Runs a worker money command.
pub async fn run(cmd: WorkerMoney) -> anyhow::Result<()> {
    match cmd {
        WorkerMoney::Balance(o) => balance(o).await,
        WorkerMoney::Payout(o) => payout(o).await,
    }
}

struct Worker {
    ctx: Ctx,
    wallet: Wallet,
    proxy_sc: StdAddr,
    proxy_key: [u8; 32],
    init: ContractInit,
    account: AccountState,
    state: Option<WorkerContractState>,
    params: CocoonParams,
    voucher_file: Option<PathBuf>,
    names: Names,
}

impl Worker {
    async fn open(o: &WorkerOpts) -> anyhow::Result<Worker> {
        let ctx = Ctx::open(&o.chain).await?;
        let wallet = ctx.wallet(&o.wallet, Some(WORKER))?;
        let (proxy_sc, proxy_key) = ctx.proxy(&o.proxy)?;
        let (_, root) = ctx.root_config().await?;
        // The worker contract belongs to the worker's owner (its wallet's owner).
        let owner = wallet.inner.owner().clone();
        let init = worker_contract(&root.params, &owner, &proxy_sc, &proxy_key)
            .context("deriving the worker contract from the root params")?;
        let account = ctx.chain.account(&init.address).await?;
        let (state, params) = super::party_contract(
            &account,
            WorkerContractState::from_data,
            |st| &st.params,
            "worker",
            &root.params,
        )?;
        let voucher_file = o.voucher.clone().or_else(|| {
            let name = o.wallet.wallet.as_deref().unwrap_or(WORKER);
            ctx.devnet
                .as_ref()
                .and_then(|d| d.worker_vouchers.get(name).cloned())
        });
        let mut names = Names::default();
        names
            .add(wallet.address(), wallet.label.clone())
            .add(&init.address, "worker contract")
            .add(&proxy_sc, "proxy contract")
            .add(&owner, "worker owner");
        Ok(Worker {
            ctx,
            wallet,
            proxy_sc,
            proxy_key,
            init,
            account,
            state,
            params,
            voucher_file,
            names,
        })
    }

    fn owner(&self) -> &StdAddr {
        self.wallet.inner.owner()
    }

    fn paid_tokens(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.tokens)
    }

    /// Reads and checks the voucher file: kind, contract, signature.
    fn voucher(&self) -> anyhow::Result<SignedVoucher> {
        let path = self.voucher_file.as_ref().context(
            "which voucher? pass --voucher FILE (no worker_vouchers entry in devnet.json)",
        )?;
        let bytes =
            std::fs::read(path).with_context(|| format!("reading voucher {}", path.display()))?;
        let v = SignedVoucher::from_boc(&bytes)
            .with_context(|| format!("{} is not a signed voucher", path.display()))?;
        let kind = v.voucher.kind;
        if !matches!(
            kind,
            VoucherKind::WorkerPayout | VoucherKind::WorkerLastPayout
        ) {
            bail!(
                "{} is a {kind:?} voucher, not a worker payout",
                path.display()
            );
        }
        let verifier = VoucherVerifier::new(self.proxy_key, self.init.address.clone());
        verifier.check(&v, kind).with_context(|| {
            format!(
                "{}: not a valid voucher for worker contract {} signed by proxy key {}",
                path.display(),
                self.ctx.fmt(&self.init.address),
                hex::encode(self.proxy_key)
            )
        })?;
        Ok(v)
    }

    fn print_head(&self) {
        println!(
            "worker wallet: {} {}",
            self.wallet.label,
            self.ctx.fmt(self.wallet.address())
        );
        println!(
            "worker owner: {} (payouts go here)",
            self.ctx.fmt(self.owner())
        );
        println!("worker contract: {}", self.ctx.fmt_both(&self.init.address));
        println!("proxy contract: {}", self.ctx.fmt(&self.proxy_sc));
    }

    fn payable(&self, tokens: u64) -> (u64, u64) {
        let delta = tokens.saturating_sub(self.paid_tokens());
        (
            delta,
            delta.saturating_mul(self.params.worker_fee_per_token),
        )
    }
}

async fn balance(o: WorkerOpts) -> anyhow::Result<()> {
    let w = Worker::open(&o).await?;
    w.print_head();
    let owner_account = w.ctx.chain.account(w.owner()).await?;
    println!("owner balance: {}", ton(owner_account.balance));
    print_owner_books(&w, &owner_account).await?;
    match &w.state {
        None => println!("status:      not deployed (the first payout deploys it)"),
        Some(s) => {
            let status = match s.status {
                ContractStatus::Closed => "closed (after a last payout)",
                _ => "normal",
            };
            println!("status:      {status}");
            println!("contract account: {}", ton(w.account.balance));
        }
    }
    println!("tokens paid: {} (on chain)", w.paid_tokens());
    println!(
        "worker fee:  {} nanoTON per token",
        w.params.worker_fee_per_token
    );
    let missing = w.voucher_file.as_ref().is_some_and(|p| !p.exists());
    if missing {
        println!("voucher:     none yet (the worker saves the proxy's vouchers as they come)");
    } else if w.voucher_file.is_some() {
        let v = w.voucher()?;
        let (delta, amount) = w.payable(v.tokens());
        println!(
            "voucher:     {} tokens ({:?}, valid)",
            v.tokens(),
            v.voucher.kind
        );
        println!("payable now: {delta} tokens = {}", ton(amount));
    } else {
        println!("voucher:     (none: pass --voucher FILE)");
    }
    Ok(())
}

async fn payout(o: WorkerOpts) -> anyhow::Result<()> {
    let w = Worker::open(&o).await?;
    let v = w.voucher()?;
    let last = v.voucher.kind == VoucherKind::WorkerLastPayout;
    if let Some(s) = &w.state {
        if s.status == ContractStatus::Closed {
            bail!("refused: the worker contract is closed (exit code 1006)");
        }
        let newer = if last {
            v.tokens() >= s.tokens
        } else {
            v.tokens() > s.tokens
        };
        if !newer {
            bail!(
                "refused: nothing to pay: the voucher covers {} tokens and the worker contract \
                 has already been paid for {}; the contract would refuse it (exit code 1000)",
                v.tokens(),
                s.tokens
            );
        }
    }
    let (delta, amount) = w.payable(v.tokens());
    // The proxy contract pays from its TON balance; if it cannot, the worker
    // contract would have recorded the tokens for nothing.
    let proxy = w.ctx.chain.account(&w.proxy_sc).await?;
    let proxy_state = proxy
        .data
        .as_ref()
        .filter(|_| proxy.status == AccountStatus::Active)
        .map(ProxyContractState::from_data)
        .transpose()
        .context("reading the proxy contract")?;
    match proxy_state {
        None => bail!(
            "refused: the proxy contract {} is not deployed",
            w.ctx.fmt(&w.proxy_sc)
        ),
        Some(p) if p.status == ContractStatus::Closed => {
            bail!("refused: the proxy contract is closed; it would refuse the payout (exit code 1006)")
        }
        Some(_) if proxy.balance < amount => bail!(
            "refused: the proxy contract holds {}, less than the {} payout; it would refuse \
             (exit code 1001) after the worker contract recorded the tokens",
            ton(proxy.balance),
            ton(amount)
        ),
        Some(_) => {}
    }
    // Change goes back to the worker's own wallet, not to the proxy's.
    let repacked = v.repack(w.wallet.address().clone());
    let msg = match &w.state {
        Some(_) => voucher_message(&repacked, WORKER_SELF_PAYOUT_VALUE)?,
        None => deploy_message(&w.init, WORKER_SELF_PAYOUT_VALUE, Some(repacked.to_cell()?)),
    };
    let owner_before = w.ctx.chain.account(w.owner()).await?.balance;
    let wallet_before = w.ctx.chain.account(w.wallet.address()).await?.balance;
    let outcome = w
        .ctx
        .chain
        .send(
            &w.wallet,
            vec![(cocoon_send_mode(msg.value), msg)],
            &w.names,
        )
        .await?;
    outcome.print(&w.names, w.ctx.chain.testnet);
    outcome.ensure_ok(&w.names, w.ctx.chain.testnet)?;
    // When the cascade was not all seen (a chain API timing out), show what is due.
    let paid = if outcome.complete {
        outcome.received(w.owner(), Some(&w.proxy_sc), Some(op::PAYOUT))
    } else {
        amount
    };
    let owner_after = w.ctx.chain.account(w.owner()).await?.balance;
    let wallet_after = w.ctx.chain.account(w.wallet.address()).await?.balance;
    if w.state.is_none() {
        println!(
            "deployed:    worker contract {}",
            w.ctx.fmt_both(&w.init.address)
        );
    }
    println!(
        "paid:        {} to the worker owner ({delta} tokens x {} nanoTON)",
        ton(paid),
        w.params.worker_fee_per_token
    );
    if paid != amount && outcome.complete {
        bail!(
            "the owner received {} but {} was due",
            ton(paid),
            ton(amount)
        );
    }
    println!("tokens paid: {} -> {}", w.paid_tokens(), v.tokens());
    println!(
        "owner balance: {} -> {} ({})",
        ton(owner_before),
        ton(owner_after),
        ton_delta(owner_before, owner_after)
    );
    print_wallet_change(&w.wallet.label, wallet_before, wallet_after);
    if last {
        println!("This was a last payout: the worker contract is now closed.");
    }
    Ok(())
}

/// How many transactions of the owner account `worker balance` reads to explain its
/// balance; an owner with more (a busy wallet) gets no breakdown.
const OWNER_HISTORY_LIMIT: usize = 2000;

/// The owner's balance explained to the nanoTON: the payouts it received, less the fees
/// its own account paid. Why they differ (by 1–2 nanoTON on the devnet): the owner is a
/// plain address without code, and each payout is credited in a transaction of the
/// owner's account whose storage phase first charges the account's storage fee (rent)
/// for the time since its previous transaction, rounded up to a whole nanoTON. The
/// payouts themselves are exact (tokens × worker fee): the forwarding fees of the payout
/// messages are paid by the proxy contract, not taken from the value.
async fn print_owner_books(w: &Worker, owner: &AccountState) -> anyhow::Result<()> {
    let Some(history) = w.ctx.chain.history(w.owner(), OWNER_HISTORY_LIMIT).await? else {
        return Ok(());
    };
    if history.is_empty() {
        return Ok(());
    }
    let (mut payouts, mut payout_count, mut other_in, mut fees) = (0u64, 0usize, 0u64, 0u64);
    let mut fees_known = true;
    for t in &history {
        if t.op == Some(op::PAYOUT) && t.from.is_some() && !t.bounced {
            payouts = payouts.saturating_add(t.value_in);
            payout_count += 1;
        } else if t.from.is_some() {
            other_in = other_in.saturating_add(t.value_in);
        }
        match t.total_fees {
            Some(f) => fees = fees.saturating_add(f),
            None => fees_known = false,
        }
    }
    if !fees_known {
        println!(
            "  (received in {payout_count} payouts: {}; the chain API gives no fees to \
             explain the rest)",
            ton(payouts)
        );
        return Ok(());
    }
    println!(
        "  = {} received in {payout_count} payouts (tokens x worker fee, exact)",
        ton(payouts)
    );
    if other_in > 0 {
        println!("  + {} received otherwise", ton(other_in));
    }
    let why = if owner.status == AccountStatus::Active {
        "fees of the owner account's own transactions (storage, gas, forwarding)"
    } else {
        "storage fees charged to the owner account: it has no code, so each payout is \
         credited in a transaction that first pays the account's rent since its previous \
         transaction, rounded up to a whole nanoTON"
    };
    println!("  - {} {why}", ton(fees));
    let explained = i128::from(payouts) + i128::from(other_in) - i128::from(fees);
    let rest = i128::from(owner.balance) - explained;
    if rest != 0 {
        println!("  {rest:+} nanoTON other changes (messages the owner account sent)");
    }
    Ok(())
}
