//! `cocoon proxy balance|withdraw`: the proxy contract, where client deposits
//! sit and the proxy's commission accrues (spec §5.5, §6.4).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use cocoon_ton::chain::AccountStatus;
use cocoon_ton::contracts::{ContractStatus, ProxyContractState};
use cocoon_ton::messages::Body;
use cocoon_ton::opcodes as op;
use cocoon_ton::root::CocoonParams;
use cocoon_ton::settlement::{body_message, PROXY_WITHDRAW_VALUE};
use cocoon_ton::wallet::cocoon_send_mode;

use super::chain::Names;
use super::{parse_address, ton, ton_delta, when, ChainOpts, Ctx, DevnetInfo, WalletOpts};

/// The devnet's name for the proxy's wallet.
const PROXY: &str = "proxy";

/// `cocoon proxy …` (money).
#[derive(Debug, Subcommand)]
pub enum ProxyMoney {
    /// The proxy contract: state, earned commission, stake, unlock time.
    Balance(ProxyMoneyOpts),
    /// Pay the earned commission to the proxy's owner (`ext_proxy_payout_request`;
    /// any wallet may ask, the money always goes to the owner).
    Withdraw(ProxyMoneyOpts),
}

/// Options of the proxy commands.
#[derive(Debug, Args)]
pub struct ProxyMoneyOpts {
    #[command(flatten)]
    chain: ChainOpts,
    #[command(flatten)]
    wallet: WalletOpts,
    /// The proxy contract (default: proxy_sc_address in devnet.json).
    #[arg(long)]
    proxy_sc: Option<String>,
}

/// Runs a proxy money command.
pub async fn run(cmd: ProxyMoney) -> anyhow::Result<()> {
    match cmd {
        ProxyMoney::Balance(o) => balance(o).await,
        ProxyMoney::Withdraw(o) => withdraw(o).await,
    }
}

async fn open(
    o: &ProxyMoneyOpts,
) -> anyhow::Result<(Ctx, cocoon_ton::StdAddr, u64, ProxyContractState)> {
    let ctx = Ctx::open(&o.chain).await?;
    let from_devnet = ctx
        .devnet
        .as_ref()
        .and_then(|d| DevnetInfo::text(&d.proxy_sc_address))
        .map(str::to_owned);
    let sc = match (&o.proxy_sc, from_devnet) {
        (Some(a), _) => parse_address(a, "--proxy-sc")?,
        (None, Some(a)) => parse_address(&a, "proxy_sc_address in devnet.json")?,
        (None, None) => bail!("which proxy contract? pass --proxy-sc ADDR"),
    };
    let st = ctx.chain.account(&sc).await?;
    let Some(data) = st.data.filter(|_| st.status == AccountStatus::Active) else {
        bail!(
            "the proxy contract {} is not deployed on {}",
            ctx.fmt_both(&sc),
            ctx.chain.description
        );
    };
    let parsed = ProxyContractState::from_data(&data).context("reading the proxy contract")?;
    Ok((ctx, sc, st.balance, parsed))
}

fn status_text(p: &ProxyContractState, now: u32) -> String {
    match p.status {
        ContractStatus::Normal => "normal".into(),
        ContractStatus::Closing => format!("closing: unlocks at {}", when(p.unlock_ts, now)),
        ContractStatus::Closed => "closed".into(),
        ContractStatus::Unknown => "unknown (3)".into(),
    }
}

async fn balance(o: ProxyMoneyOpts) -> anyhow::Result<()> {
    let (ctx, sc, account, p) = open(&o).await?;
    let now = ctx.chain.now().await?;
    let owner_balance = ctx.chain.account(&p.owner).await?.balance;
    println!("proxy contract: {}", ctx.fmt_both(&sc));
    println!(
        "owner:       {} (holds {})",
        ctx.fmt(&p.owner),
        ton(owner_balance)
    );
    println!("public key:  {}", hex::encode(p.public_key));
    println!("root:        {}", ctx.fmt(&p.root));
    println!("status:      {}", status_text(&p, now));
    println!(
        "earned:      {} (commission ready to withdraw to the owner)",
        ton(p.balance)
    );
    println!(
        "stake:       {} (pays clients that close without the proxy's refund)",
        ton(p.stake)
    );
    println!(
        "contract account: {} (earned + stake + client deposits + fees reserve)",
        ton(account)
    );
    if let Ok(params) = CocoonParams::from_cell(&p.params) {
        println!(
            "prices:      {} nanoTON per token from clients, {} to workers, params version {}",
            params.price_per_token, params.worker_fee_per_token, params.params_version
        );
    }
    Ok(())
}

async fn withdraw(o: ProxyMoneyOpts) -> anyhow::Result<()> {
    let (ctx, sc, account, p) = open(&o).await?;
    if p.status == ContractStatus::Closed {
        bail!("refused: the proxy contract is closed (exit code 1006)");
    }
    if p.balance == 0 {
        bail!("refused: nothing to withdraw: the proxy contract has earned 0 TON so far");
    }
    if p.balance > account {
        bail!(
            "refused: the contract account holds {}, less than the {} earned; it would refuse \
             (exit code 1001)",
            ton(account),
            ton(p.balance)
        );
    }
    let w = ctx.wallet(&o.wallet, Some(PROXY))?;
    let mut names = Names::default();
    names
        .add(w.address(), w.label.clone())
        .add(&sc, "proxy contract")
        .add(&p.owner, "proxy owner");
    let owner_before = ctx.chain.account(&p.owner).await?.balance;
    let body = Body::ExtProxyPayoutRequest {
        query_id: rand::random(),
        send_excesses_to: w.address().clone(),
    };
    let msg = body_message(sc.clone(), PROXY_WITHDRAW_VALUE, &body)?;
    let outcome = ctx
        .chain
        .send(&w, vec![(cocoon_send_mode(msg.value), msg)], &names)
        .await?;
    outcome.print(&names, ctx.chain.testnet);
    outcome.ensure_ok(&names, ctx.chain.testnet)?;
    let owner_after = ctx.chain.account(&p.owner).await?.balance;
    if outcome.complete {
        let paid = outcome.received(&p.owner, Some(&sc), Some(op::PAYOUT));
        println!("withdrawn:   {} to the proxy owner", ton(paid));
        if paid != p.balance {
            bail!(
                "the owner received {} but {} was earned",
                ton(paid),
                ton(p.balance)
            );
        }
    } else {
        println!("withdrawing: {} to the proxy owner", ton(p.balance));
    }
    println!(
        "owner balance: {} -> {} ({})",
        ton(owner_before),
        ton(owner_after),
        ton_delta(owner_before, owner_after)
    );
    Ok(())
}
