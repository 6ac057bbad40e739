//! `cocoon wallet new|show|send`: a runner's cocoon wallet.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use cocoon_ton::address::{to_friendly, to_raw};
use cocoon_ton::chain::AccountStatus;
use cocoon_ton::contracts::CocoonWalletState;
use cocoon_ton::messages::Body;
use cocoon_ton::wallet::{CocoonWallet, InternalMessage};

use super::chain::{Names, WALLET_MIN_BALANCE};
use super::{parse_address, parse_amount, ton, ton_delta, wallet_code, ChainOpts, Ctx};
use super::{WalletCode, WalletOpts};

/// `cocoon wallet …`.
#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Create a key file and print the address of its cocoon wallet.
    New(NewArgs),
    /// Address, status, balance and seqno of a cocoon wallet.
    Show(ShowArgs),
    /// Send TON from a cocoon wallet (the recipient gets exactly the amount).
    Send(SendArgs),
}

/// `cocoon wallet new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// Where to write the new Ed25519 key (PEM, the format of the roles' keys);
    /// an existing file is never overwritten.
    #[arg(long)]
    pub key: PathBuf,
    /// The wallet's owner: the address allowed to command it by internal messages
    /// (a worker's payouts go there too).
    #[arg(long)]
    pub owner: String,
    /// The wallet code (our Tolk wallet, as on the devnet, or the C++ runners').
    #[arg(long, value_enum, default_value_t = WalletCode::Ours)]
    pub wallet_code: WalletCode,
    /// Print the address for TON mainnet (default: testnet).
    #[arg(long)]
    pub mainnet: bool,
}

/// `cocoon wallet show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    chain: ChainOpts,
    #[command(flatten)]
    wallet: WalletOpts,
}

/// `cocoon wallet send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    chain: ChainOpts,
    #[command(flatten)]
    wallet: WalletOpts,
    /// Recipient address.
    #[arg(long)]
    pub to: String,
    /// Amount in TON (up to 9 decimals).
    #[arg(long)]
    pub amount: String,
    /// A text comment (at most 123 bytes).
    #[arg(long)]
    pub comment: Option<String>,
    /// Bounce the value back if the recipient refuses it (default: when the
    /// recipient is a deployed contract).
    #[arg(long)]
    pub bounce: Option<bool>,
}

/// Runs a wallet command.
pub async fn run(cmd: WalletCommand) -> anyhow::Result<()> {
    match cmd {
        WalletCommand::New(a) => new(a),
        WalletCommand::Show(a) => show(a).await,
        WalletCommand::Send(a) => send(a).await,
    }
}

fn new(a: NewArgs) -> anyhow::Result<()> {
    let owner = parse_address(&a.owner, "--owner")?;
    if a.key.exists() {
        bail!(
            "{} already exists: refusing to overwrite a key (a wallet's money depends on it)",
            a.key.display()
        );
    }
    let key = cocoon_node::config::load_or_create_key(&a.key)
        .with_context(|| format!("creating {}", a.key.display()))?;
    let w = CocoonWallet::new(key, owner.clone(), &wallet_code(a.wallet_code)?)?;
    let testnet = !a.mainnet;
    println!("key:         {} (new Ed25519 key)", a.key.display());
    println!("public key:  {}", hex::encode(w.public_key()));
    println!("owner:       {}", to_friendly(&owner, testnet));
    println!("address:     {}", to_friendly(w.address(), testnet));
    println!("raw:         {}", to_raw(w.address()));
    println!(
        "The wallet is not on chain yet: send it at least {} (it refuses requests below \
         that) and it deploys itself with its first request.",
        ton(WALLET_MIN_BALANCE)
    );
    Ok(())
}

async fn show(a: ShowArgs) -> anyhow::Result<()> {
    let ctx = Ctx::open(&a.chain).await?;
    let w = ctx.wallet(&a.wallet, None)?;
    let st = ctx.chain.account(w.address()).await?;
    match (&w.name, &a.wallet.key) {
        (Some(n), _) => println!("wallet:      {n} (devnet.json)"),
        (None, Some(k)) => println!("wallet:      of key {}", k.display()),
        (None, None) => println!("wallet:      (unnamed)"),
    }
    println!("address:     {}", ctx.fmt(w.address()));
    println!("raw:         {}", to_raw(w.address()));
    println!("owner:       {}", ctx.fmt(w.inner.owner()));
    println!("public key:  {}", hex::encode(w.inner.public_key()));
    let status = match st.status {
        AccountStatus::NonExist => "does not exist",
        AccountStatus::Uninit => "not deployed (deploys itself with its first request)",
        AccountStatus::Active => "active",
        AccountStatus::Frozen => "frozen",
    };
    println!("status:      {status}");
    println!("balance:     {}", ton(st.balance));
    let seqno = match (&st.status, &st.data) {
        (AccountStatus::Active, Some(d)) => {
            let ws = CocoonWalletState::from_data(d).context("not a cocoon wallet")?;
            if ws.status & 1 != 0 {
                println!("blocked:     yes (its owner blocked it: it refuses every request)");
            }
            ws.seqno
        }
        _ => 0,
    };
    println!("seqno:       {seqno}");
    if st.balance < WALLET_MIN_BALANCE {
        println!(
            "note:        below {}: the wallet refuses every request until topped up",
            ton(WALLET_MIN_BALANCE)
        );
    }
    Ok(())
}

async fn send(a: SendArgs) -> anyhow::Result<()> {
    let to = parse_address(&a.to, "--to")?;
    let amount = parse_amount(&a.amount, "--amount")?;
    if amount == 0 {
        bail!("--amount must be more than 0");
    }
    let body = match &a.comment {
        Some(text) => {
            if text.len() > 123 {
                bail!("--comment is {} bytes; at most 123 fit", text.len());
            }
            Some(Body::Text(text.clone()).to_cell()?)
        }
        None => None,
    };
    let ctx = Ctx::open(&a.chain).await?;
    let w = ctx.wallet(&a.wallet, None)?;
    let dest = ctx.chain.account(&to).await?;
    let bounce = a.bounce.unwrap_or(dest.status == AccountStatus::Active);
    let before = ctx.chain.account(w.address()).await?.balance;
    let msg = InternalMessage {
        dest: to.clone(),
        value: amount,
        bounce,
        state_init: None,
        body,
    };
    let mut names = Names::default();
    names.add(w.address(), w.label.clone());
    names.add(&to, format!("recipient {}", ctx.fmt(&to)));
    // Mode 1: the wallet pays the fees, so the recipient gets exactly the amount.
    let outcome = ctx.chain.send(&w, vec![(1, msg)], &names).await?;
    outcome.print(&names, ctx.chain.testnet);
    let after = ctx.chain.account(w.address()).await?.balance;
    println!(
        "sent:        {} to {} ({}bounceable)",
        ton(amount),
        ctx.fmt_both(&to),
        if bounce { "" } else { "non-" }
    );
    if let Some(first) = outcome.txs.first() {
        if let (Some(fees), Some(fwd)) = (first.total_fees, first.fwd_fees_out) {
            println!(
                "fees:        {} (wallet transaction {} + forwarding {})",
                ton(fees.saturating_add(fwd)),
                ton(fees),
                ton(fwd)
            );
        }
    }
    println!(
        "balance:     {} -> {} ({})",
        ton(before),
        ton(after),
        ton_delta(before, after)
    );
    outcome.ensure_ok(&names, ctx.chain.testnet)?;
    if after < WALLET_MIN_BALANCE {
        println!(
            "note:        the wallet now holds less than {}: it refuses further requests \
             until topped up",
            ton(WALLET_MIN_BALANCE)
        );
    }
    Ok(())
}
