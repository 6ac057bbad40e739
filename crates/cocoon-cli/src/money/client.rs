//! `cocoon client balance|top-up|withdraw|close`: the client contract of a
//! client's cocoon wallet at a proxy (spec §5.5, §6.4).
//!
//! The client contract keeps the books (balance, stake, tokens charged); the
//! TON of a top-up sits in the proxy contract, which pays refunds back to the
//! client's wallet.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use cocoon_ton::chain::{AccountState, AccountStatus};
use cocoon_ton::contracts::{
    client_contract, ClientContractState, ContractInit, ContractStatus, ProxyContractState,
};
use cocoon_ton::messages::Body;
use cocoon_ton::opcodes as op;
use cocoon_ton::root::CocoonParams;
use cocoon_ton::settlement::{
    body_message, client_top_up_message, deploy_message, OPERATION_VALUE,
};
use cocoon_ton::wallet::cocoon_send_mode;
use cocoon_ton::StdAddr;

use super::chain::Names;
use super::{
    parse_amount, print_wallet_change, ton, when, ChainOpts, Ctx, ProxyOpts, Wallet, WalletOpts,
};

/// The devnet's name for the client's wallet.
const CLIENT: &str = "client";

/// `cocoon client …` (money).
#[derive(Debug, Subcommand)]
pub enum ClientMoney {
    /// The client contract: state, balance, stake, tokens used, in TON and in tokens.
    Balance(ClientOpts),
    /// Deposit TON for inference (deploys the client contract on first use).
    TopUp(TopUpArgs),
    /// Take back the balance above the stake.
    Withdraw(ClientOpts),
    /// Close the client contract in two phases and get the money back.
    Close(ClientOpts),
}

/// Options of every client command.
#[derive(Debug, Args)]
pub struct ClientOpts {
    #[command(flatten)]
    chain: ChainOpts,
    #[command(flatten)]
    wallet: WalletOpts,
    #[command(flatten)]
    proxy: ProxyOpts,
}

/// `cocoon client top-up`.
#[derive(Debug, Args)]
pub struct TopUpArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// TON to deposit (sent with 0.7 TON more for fees; the change comes back).
    #[arg(long)]
    pub amount: String,
}

/// Runs a client money command.
pub async fn run(cmd: ClientMoney) -> anyhow::Result<()> {
    match cmd {
        ClientMoney::Balance(o) => balance(o).await,
        ClientMoney::TopUp(a) => top_up(a).await,
        ClientMoney::Withdraw(o) => withdraw(o).await,
        ClientMoney::Close(o) => close(o).await,
    }
}

/// A client wallet, its client contract and their states.
struct Client {
    ctx: Ctx,
    wallet: Wallet,
    proxy_sc: StdAddr,
    init: ContractInit,
    account: AccountState,
    state: Option<ClientContractState>,
    /// The contract's params when deployed, else the root's.
    params: CocoonParams,
    names: Names,
}

impl Client {
    async fn open(o: &ClientOpts) -> anyhow::Result<Client> {
        let ctx = Ctx::open(&o.chain).await?;
        let wallet = ctx.wallet(&o.wallet, Some(CLIENT))?;
        let (proxy_sc, proxy_key) = ctx.proxy(&o.proxy)?;
        let (_, root) = ctx.root_config().await?;
        let init = client_contract(&root.params, wallet.address(), &proxy_sc, &proxy_key)
            .context("deriving the client contract from the root params")?;
        let account = ctx.chain.account(&init.address).await?;
        let (state, params) = super::party_contract(
            &account,
            ClientContractState::from_data,
            |st| &st.params,
            "client",
            &root.params,
        )?;
        let mut names = Names::default();
        names
            .add(wallet.address(), wallet.label.clone())
            .add(&init.address, "client contract")
            .add(&proxy_sc, "proxy contract");
        Ok(Client {
            ctx,
            wallet,
            proxy_sc,
            init,
            account,
            state,
            params,
            names,
        })
    }

    fn tokens(&self, nano: u64) -> String {
        format!(
            "{} tokens at {} nanoTON/token",
            self.params.tokens_for(nano),
            self.params.price_per_token
        )
    }

    fn deployed(&self) -> anyhow::Result<&ClientContractState> {
        self.state.as_ref().with_context(|| {
            format!(
                "the client contract {} is not deployed: `cocoon client top-up --amount TON` \
                 deploys it",
                self.ctx.fmt(&self.init.address)
            )
        })
    }

    /// The proxy contract's TON balance (what refunds are paid from).
    async fn proxy_funds(&self) -> anyhow::Result<(u64, Option<ProxyContractState>)> {
        let st = self.ctx.chain.account(&self.proxy_sc).await?;
        let parsed = st
            .data
            .as_ref()
            .filter(|_| st.status == AccountStatus::Active)
            .map(ProxyContractState::from_data)
            .transpose()
            .context("reading the proxy contract")?;
        Ok((st.balance, parsed))
    }

    async fn wallet_balance(&self) -> anyhow::Result<u64> {
        Ok(self.ctx.chain.account(self.wallet.address()).await?.balance)
    }

    /// Sends `body` to the client contract with the owner-op value.
    async fn send_owner_op(&self, body: Body) -> anyhow::Result<super::chain::Outcome> {
        let msg = body_message(self.init.address.clone(), OPERATION_VALUE, &body)?;
        let outcome = self
            .ctx
            .chain
            .send(
                &self.wallet,
                vec![(cocoon_send_mode(msg.value), msg)],
                &self.names,
            )
            .await?;
        outcome.print(&self.names, self.ctx.chain.testnet);
        outcome.ensure_ok(&self.names, self.ctx.chain.testnet)?;
        Ok(outcome)
    }

    async fn reread(&self) -> anyhow::Result<ClientContractState> {
        let st = self.ctx.chain.account(&self.init.address).await?;
        let data = st
            .data
            .filter(|_| st.status == AccountStatus::Active)
            .context("the client contract is not active")?;
        Ok(ClientContractState::from_data(&data)?)
    }
}

fn status_text(st: &ClientContractState, now: u32) -> String {
    match st.status {
        ContractStatus::Normal => "normal (queries allowed)".into(),
        ContractStatus::Closing => format!("closing: unlocks at {}", when(st.unlock_ts, now)),
        ContractStatus::Closed => "closed".into(),
        ContractStatus::Unknown => "unknown (3)".into(),
    }
}

async fn balance(o: ClientOpts) -> anyhow::Result<()> {
    let c = Client::open(&o).await?;
    let now = c.ctx.chain.now().await?;
    println!(
        "client wallet: {} {}",
        c.wallet.label,
        c.ctx.fmt(c.wallet.address())
    );
    println!("client contract: {}", c.ctx.fmt_both(&c.init.address));
    println!("proxy contract: {}", c.ctx.fmt(&c.proxy_sc));
    let Some(st) = &c.state else {
        println!("status:      not deployed (`cocoon client top-up --amount TON` deploys it)");
        println!(
            "price:       {} nanoTON per token; a new contract starts with a stake of {}",
            c.params.price_per_token,
            ton(c.params.min_client_stake)
        );
        return Ok(());
    };
    println!("status:      {}", status_text(st, now));
    println!(
        "balance:     {} = {}",
        ton(st.balance),
        c.tokens(st.balance)
    );
    println!(
        "stake:       {} = {} tokens (how far usage may run ahead of on-chain charges; \
         returned when the contract closes)",
        ton(st.stake),
        c.params.tokens_for(st.stake)
    );
    println!("tokens used: {} (charged on chain)", st.tokens_used);
    println!(
        "withdrawable: {} (the balance above the stake)",
        ton(st.balance.saturating_sub(st.stake))
    );
    println!(
        "contract account: {} (the contract's own TON, for fees; deposits sit in the proxy contract)",
        ton(c.account.balance)
    );
    Ok(())
}

async fn top_up(a: TopUpArgs) -> anyhow::Result<()> {
    let amount = parse_amount(&a.amount, "--amount")?;
    if amount == 0 {
        bail!("--amount must be more than 0");
    }
    let c = Client::open(&a.opts).await?;
    if let Some(st) = &c.state {
        if st.status == ContractStatus::Closed {
            bail!(
                "refused: the client contract {} is closed; it refuses top-ups (exit code 1006)",
                c.ctx.fmt(&c.init.address)
            );
        }
    }
    let (_, proxy) = c.proxy_funds().await?;
    if proxy.is_none() {
        bail!(
            "refused: the proxy contract {} is not deployed; the deposit would have nowhere to go",
            c.ctx.fmt(&c.proxy_sc)
        );
    }
    let top_up = client_top_up_message(
        c.init.address.clone(),
        rand::random(),
        amount,
        c.wallet.address().clone(),
    )?;
    let (msg, deploying) = match &c.state {
        Some(_) => (top_up, false),
        None => (deploy_message(&c.init, top_up.value, top_up.body), true),
    };
    let before = c.state.as_ref().map_or(0, |s| s.balance);
    let wallet_before = c.wallet_balance().await?;
    let outcome = c
        .ctx
        .chain
        .send(
            &c.wallet,
            vec![(cocoon_send_mode(msg.value), msg)],
            &c.names,
        )
        .await?;
    outcome.print(&c.names, c.ctx.chain.testnet);
    outcome.ensure_ok(&c.names, c.ctx.chain.testnet)?;
    let st = c.reread().await?;
    let wallet_after = c.wallet_balance().await?;
    if deploying {
        println!(
            "deployed:    client contract {}",
            c.ctx.fmt_both(&c.init.address)
        );
    }
    println!("deposited:   {}", ton(amount));
    println!(
        "balance:     {} -> {} = {}",
        ton(before),
        ton(st.balance),
        c.tokens(st.balance)
    );
    println!(
        "stake:       {} = {} tokens",
        ton(st.stake),
        c.params.tokens_for(st.stake)
    );
    print_wallet_change(&c.wallet.label, wallet_before, wallet_after);
    Ok(())
}

async fn withdraw(o: ClientOpts) -> anyhow::Result<()> {
    let c = Client::open(&o).await?;
    let st = c.deployed()?;
    if st.status != ContractStatus::Normal {
        bail!(
            "refused: the client contract is {}; withdraw works only in the normal state \
             (exit code 1006). `cocoon client close` finishes closing.",
            status_text(st, c.ctx.chain.now().await?)
        );
    }
    if st.balance <= st.stake {
        bail!(
            "refused: nothing to withdraw: the balance {} is not above the stake {} (the \
             stake stays until the contract closes: `cocoon client close`)",
            ton(st.balance),
            ton(st.stake)
        );
    }
    let refund = st.balance - st.stake;
    let (funds, _) = c.proxy_funds().await?;
    if funds < refund {
        bail!(
            "refused: the proxy contract holds {}, less than the {} to refund; it would refuse \
             (exit code 1001) after the client contract booked the withdrawal",
            ton(funds),
            ton(refund)
        );
    }
    let wallet_before = c.wallet_balance().await?;
    let outcome = c
        .send_owner_op(Body::OwnerClientWithdraw {
            query_id: rand::random(),
            send_excesses_to: c.wallet.address().clone(),
        })
        .await?;
    let after = c.reread().await?;
    let wallet_after = c.wallet_balance().await?;
    if outcome.complete {
        let paid = outcome.received(c.wallet.address(), Some(&c.proxy_sc), Some(op::PAYOUT));
        println!("withdrawn:   {} (paid by the proxy contract)", ton(paid));
    } else {
        println!(
            "withdrawing: {} (the proxy contract pays it to the wallet)",
            ton(refund)
        );
    }
    println!(
        "balance:     {} -> {} = {}",
        ton(st.balance),
        ton(after.balance),
        c.tokens(after.balance)
    );
    print_wallet_change(&c.wallet.label, wallet_before, wallet_after);
    Ok(())
}

async fn close(o: ClientOpts) -> anyhow::Result<()> {
    let c = Client::open(&o).await?;
    let st = c.deployed()?;
    let now = c.ctx.chain.now().await?;
    let (funds, proxy) = c.proxy_funds().await?;
    let phase = match st.status {
        ContractStatus::Normal => 1,
        ContractStatus::Closing => {
            if now <= st.unlock_ts {
                bail!(
                    "refused: phase 2 of closing is possible only after the contract unlocks at \
                     {} (chain time now {now}); the client contract would refuse with exit code \
                     1011 (not unlocked yet: the close delay has not passed). Nothing was sent; \
                     run `cocoon client close` again after that.",
                    when(st.unlock_ts, now)
                );
            }
            2
        }
        ContractStatus::Closed | ContractStatus::Unknown => bail!(
            "refused: the client contract {} is already closed (exit code 1006)",
            c.ctx.fmt(&c.init.address)
        ),
    };
    // What the proxy contract will have to pay, and whether it can.
    let owed = if phase == 1 {
        st.balance.saturating_sub(st.stake)
    } else {
        let stake = proxy.as_ref().map_or(0, |p| p.stake);
        st.balance.min(stake)
    };
    if owed > funds {
        bail!(
            "refused: the proxy contract holds {}, less than the {} it would have to refund; it \
             would refuse (exit code 1001) after the client contract booked the close",
            ton(funds),
            ton(owed)
        );
    }
    let wallet_before = c.wallet_balance().await?;
    let outcome = c
        .send_owner_op(Body::OwnerClientRequestRefund {
            query_id: rand::random(),
            send_excesses_to: c.wallet.address().clone(),
        })
        .await?;
    let after = c.reread().await?;
    let now = c.ctx.chain.now().await?;
    // When the cascade was not all seen (a chain API timing out), show what is due.
    let paid = if outcome.complete {
        outcome.received(c.wallet.address(), Some(&c.proxy_sc), Some(op::PAYOUT))
    } else {
        owed
    };
    let wallet_after = c.wallet_balance().await?;
    if phase == 1 {
        println!("phase 1 of 2 done: the client contract is closing");
        println!(
            "refunded now: {} (the balance above the stake, paid by the proxy contract)",
            ton(paid)
        );
        println!(
            "kept until unlock: {} (the stake: the proxy may still charge usage up to it)",
            ton(after.balance)
        );
        println!("unlocks at:  {}", when(after.unlock_ts, now));
        println!(
            "Next: after that time, run `cocoon client close` again (phase 2): the contract \
             closes and the proxy pays the rest back from its stake (at most its stake). Until \
             then the proxy may also close it itself with a signed final charge and refund."
        );
    } else {
        println!("phase 2 of 2 done: the client contract is closed");
        println!(
            "refunded:    {} (paid from the proxy's stake; it owed {})",
            ton(paid),
            ton(st.balance)
        );
        if paid < st.balance {
            println!(
                "note:        the proxy's stake did not cover the whole balance ({} short)",
                ton(st.balance - paid)
            );
        }
    }
    print_wallet_change(&c.wallet.label, wallet_before, wallet_after);
    Ok(())
}
