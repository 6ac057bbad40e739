//! `cocoon root deploy|show|add-proxy|add-worker-hash|add-model|set-price|set-key-manager|add-key`:
//! the root contract, administered by its owner through the owner's cocoon wallet.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use cocoon_ton::address::to_raw;
use cocoon_ton::chain::AccountStatus;
use cocoon_ton::local::{codes, GenesisRoot};
use cocoon_ton::messages::{Body, KeyRegistration};
use cocoon_ton::opcodes as op;
use cocoon_ton::root::{RegisteredProxy, RootConfig, MULTIPLIER_ONE, ONE_TON};
use cocoon_ton::settlement::{body_message, deploy_message};
use cocoon_ton::wallet::cocoon_send_mode;
use cocoon_ton::{Cell, StdAddr};
use sha2::{Digest, Sha256};

use super::chain::Names;
use super::{
    parse_address, parse_amount, parse_hash, print_wallet_change, ton, ChainOpts, Ctx, WalletOpts,
};

/// The devnet's name for the root owner's wallet.
const ADMIN: &str = "root-admin";
/// Default value attached to an admin message (the root sends the change back).
const ADMIN_VALUE: &str = "0.5";

/// `cocoon root …`.
#[derive(Debug, Subcommand)]
pub enum RootCommand {
    /// Deploy a new root contract (our code) with the given params, from the owner's wallet.
    Deploy(DeployArgs),
    /// Print the root's configuration: owner, versions, prices, delays, stakes,
    /// registered proxies, allowed hashes, contract code hashes.
    Show(ShowArgs),
    /// Register a proxy: `"IP:PORT"` or `"IP:PORT_FOR_WORKERS IP:PORT_FOR_CLIENTS"`.
    AddProxy(AddProxyArgs),
    /// Allow a worker image hash.
    AddWorkerHash(AddHashArgs),
    /// Allow a model: its hash is sha256 of the full model string `NAME@COMMIT:VERITY`.
    AddModel(AddModelArgs),
    /// Change the price per token and the worker fee (and optionally delays and stakes).
    SetPrice(SetPriceArgs),
    /// Name the key manager (struct_version ≥ 4): its machine key, which signs the keys it
    /// registers, the image hash it must be attested with, and where proxies and workers
    /// reach it.
    SetKeyManager(SetKeyManagerArgs),
    /// Register a public key apps may encrypt requests to (struct_version ≥ 4). The key
    /// manager registers its own keys; this is the owner's manual way.
    AddKey(AddKeyArgs),
}

/// `cocoon root set-key-manager`.
#[derive(Debug, Args)]
pub struct SetKeyManagerArgs {
    #[command(flatten)]
    admin: AdminOpts,
    /// The key manager's machine public key (Ed25519, 64 hex digits): `cocoon key-manager`
    /// prints it at start-up.
    #[arg(long)]
    pub public_key: String,
    /// The image hash a key manager must be attested with (64 hex digits; zeros for none).
    #[arg(
        long,
        default_value = "0000000000000000000000000000000000000000000000000000000000000000"
    )]
    pub image_hash: String,
    /// `IP:PORT` where proxies and workers reach the key manager; empty for none.
    #[arg(long, default_value = "")]
    pub address: String,
}

/// `cocoon root add-key`.
#[derive(Debug, Args)]
pub struct AddKeyArgs {
    #[command(flatten)]
    admin: AdminOpts,
    /// The Ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// Key type (the key manager issues type 1).
    #[arg(long = "type", default_value_t = 1)]
    pub key_type: u8,
    /// Seconds from now until the key expires.
    #[arg(long, default_value_t = 86_400, conflicts_with = "expire_at")]
    pub expires_in: u32,
    /// Unix time when the key expires (instead of --expires-in).
    #[arg(long)]
    pub expire_at: Option<u32>,
}

/// Options of every admin op.
#[derive(Debug, Args)]
pub struct AdminOpts {
    #[command(flatten)]
    chain: ChainOpts,
    #[command(flatten)]
    wallet: WalletOpts,
    /// TON attached to the message (the root keeps nothing: the change comes back).
    #[arg(long, default_value = ADMIN_VALUE)]
    value: String,
}

/// `cocoon root show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    chain: ChainOpts,
}

/// `cocoon root add-proxy`.
#[derive(Debug, Args)]
pub struct AddProxyArgs {
    #[command(flatten)]
    admin: AdminOpts,
    /// `"IP:PORT"` (workers and clients) or `"IP:PORT_FOR_WORKERS IP:PORT_FOR_CLIENTS"`.
    pub address: String,
}

/// `cocoon root add-worker-hash`.
#[derive(Debug, Args)]
pub struct AddHashArgs {
    #[command(flatten)]
    admin: AdminOpts,
    /// The image hash, 64 hex digits.
    pub hash: String,
}

/// `cocoon root add-model`.
#[derive(Debug, Args)]
pub struct AddModelArgs {
    #[command(flatten)]
    admin: AdminOpts,
    /// The full model string (`NAME@COMMIT:VERITY`); its sha256 is registered.
    #[arg(required_unless_present = "hash", conflicts_with = "hash")]
    pub model: Option<String>,
    /// The model hash itself, 64 hex digits.
    #[arg(long)]
    pub hash: Option<String>,
}

/// `cocoon root set-price`.
#[derive(Debug, Args)]
pub struct SetPriceArgs {
    #[command(flatten)]
    admin: AdminOpts,
    /// TON per adjusted token paid by clients (e.g. 0.000001 = 1000 nanoTON).
    #[arg(long)]
    pub price: Option<String>,
    /// TON per adjusted token earned by workers (at most the price).
    #[arg(long)]
    pub worker_fee: Option<String>,
    /// Seconds between a proxy's close request and its completion.
    #[arg(long)]
    pub proxy_delay: Option<u32>,
    /// Seconds between a client's close request and its completion.
    #[arg(long)]
    pub client_delay: Option<u32>,
    /// Minimum proxy stake in TON.
    #[arg(long)]
    pub min_proxy_stake: Option<String>,
    /// Minimum client stake in TON (new client contracts start with it).
    #[arg(long)]
    pub min_client_stake: Option<String>,
}

/// `cocoon root deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    chain: ChainOpts,
    #[command(flatten)]
    wallet: WalletOpts,
    /// The root's owner (default: the sending wallet).
    #[arg(long)]
    pub root_owner: Option<String>,
    /// TON per adjusted token paid by clients.
    #[arg(long, default_value = "0.000001")]
    pub price: String,
    /// TON per adjusted token earned by workers.
    #[arg(long, default_value = "0.0000006")]
    pub worker_fee: String,
    /// Deployment id (part of the root's address).
    #[arg(long, default_value_t = 13)]
    pub unique_id: u32,
    /// Seconds between a proxy's close request and its completion.
    #[arg(long, default_value_t = 600)]
    pub proxy_delay: u32,
    /// Seconds between a client's close request and its completion.
    #[arg(long, default_value_t = 300)]
    pub client_delay: u32,
    /// Minimum proxy stake in TON.
    #[arg(long, default_value = "1")]
    pub min_proxy_stake: String,
    /// Minimum client stake in TON.
    #[arg(long, default_value = "1")]
    pub min_client_stake: String,
    /// Mark the deployment as production (`is_test = false`; every runner must agree).
    #[arg(long)]
    pub production: bool,
    /// TON sent with the deployment (the root's balance for storage).
    #[arg(long, default_value = "1")]
    pub value: String,
}

/// Runs a root command.
pub async fn run(cmd: RootCommand) -> anyhow::Result<()> {
    match cmd {
        RootCommand::Deploy(a) => deploy(a).await,
        RootCommand::Show(a) => {
            let ctx = Ctx::open(&a.chain).await?;
            let (root, cfg) = ctx.root_config().await?;
            let balance = ctx.chain.account(&root).await?.balance;
            let now = ctx.chain.now().await?;
            print_config(&ctx, &root, &cfg, balance, now);
            Ok(())
        }
        RootCommand::AddProxy(a) => add_proxy(a).await,
        RootCommand::AddWorkerHash(a) => {
            let hash = parse_hash(&a.hash, "worker hash")?;
            add_hash(a.admin, op::ROOT_ADD_WORKER_TYPE, hash, "worker hash").await
        }
        RootCommand::AddModel(a) => {
            let hash = match (&a.hash, &a.model) {
                (Some(h), _) => parse_hash(h, "--hash")?,
                (None, Some(m)) => {
                    let h: [u8; 32] = Sha256::digest(m.as_bytes()).into();
                    println!("model:       {m}");
                    h
                }
                (None, None) => bail!("pass the model string or --hash"),
            };
            add_hash(a.admin, op::ROOT_ADD_MODEL_TYPE, hash, "model hash").await
        }
        RootCommand::SetPrice(a) => set_price(a).await,
        RootCommand::SetKeyManager(a) => set_key_manager(a).await,
        RootCommand::AddKey(a) => add_key(a).await,
    }
}

/// The root must carry the key-manager cell (struct_version ≥ 4) for key ops.
fn needs_key_cell(cfg: &RootConfig) -> anyhow::Result<()> {
    if cfg.params.struct_version < 4 {
        bail!(
            "refused: this root is at struct_version {}, which has no key-manager cell (4 or \
             later needed); nothing sent",
            cfg.params.struct_version
        );
    }
    Ok(())
}

async fn set_key_manager(a: SetKeyManagerArgs) -> anyhow::Result<()> {
    let public_key = parse_hash(&a.public_key, "--public-key")?;
    let image_hash = parse_hash(&a.image_hash, "--image-hash")?;
    let address = a.address.trim().to_owned();
    if !address.is_empty() {
        let check = RegisteredProxy {
            seqno: 0,
            address: address.clone(),
        };
        match check.endpoints() {
            Some((w, c)) if w == c && !address.contains(' ') => {}
            _ => bail!("--address {address:?} is not \"IP:PORT\" (IPv4)"),
        }
    }
    let done = admin(&a.admin, |cfg, _| {
        needs_key_cell(cfg)?;
        Ok(Some(Body::RootChangeKeyManager {
            query_id: cocoon_node::util::random_query_id(),
            public_key,
            image_hash,
            address: address.clone(),
        }))
    })
    .await?;
    if let Some((_, _, after)) = done {
        let km = &after.key_manager;
        if km.public_key != public_key || km.image_hash != image_hash {
            bail!("the root accepted the message but does not list the new key manager");
        }
        println!("key manager: {}", hex::encode(km.public_key));
        println!("image hash:  {}", hex::encode(km.image_hash));
        println!("address:     {}", km.address.as_deref().unwrap_or("(none)"));
    }
    Ok(())
}

async fn add_key(a: AddKeyArgs) -> anyhow::Result<()> {
    let public_key = parse_hash(&a.public_key, "public key")?;
    let mut expire_at = 0;
    let done = admin(&a.admin, |cfg, now| {
        needs_key_cell(cfg)?;
        expire_at = a
            .expire_at
            .unwrap_or_else(|| now.saturating_add(a.expires_in));
        if expire_at < now {
            bail!(
                "refused: the key would already be expired (expire_at {expire_at} < the \
                 chain's time {now}); the root refuses that with exit code 1000. Nothing was sent."
            );
        }
        Ok(Some(Body::RootAddPublicKey {
            query_id: cocoon_node::util::random_query_id(),
            key: KeyRegistration {
                public_key,
                key_type: a.key_type,
                expire_at,
            },
        }))
    })
    .await?;
    if let Some((_, _, after)) = done {
        if !after
            .key_manager
            .public_keys
            .iter()
            .any(|k| k.public_key == public_key && k.expire_at == expire_at)
        {
            bail!("the root accepted the message but does not list the key");
        }
        println!(
            "key registered: {} (type {}, expires at {expire_at})",
            hex::encode(public_key),
            a.key_type
        );
    }
    Ok(())
}

/// Per-token prices are tiny: show TON and nanoTON.
fn per_token(nano: u64) -> String {
    format!("{} ({nano} nanoTON)", ton(nano))
}

fn multiplier(m: u32) -> String {
    format!("{}.{:04}", m / MULTIPLIER_ONE, m % MULTIPLIER_ONE)
}

fn code_hash(c: &Option<Cell>, ours: anyhow::Result<Cell>) -> String {
    match c {
        None => "(none)".into(),
        Some(c) => {
            let h = hex::encode(c.repr_hash().0);
            match ours {
                Ok(o) if o.repr_hash() == c.repr_hash() => format!("{h} (ours)"),
                _ => h,
            }
        }
    }
}

fn hashes(list: &[[u8; 32]]) -> String {
    if list.is_empty() {
        return "(none)".into();
    }
    list.iter()
        .map(hex::encode)
        .collect::<Vec<_>>()
        .join("\n             ")
}

/// Prints a root configuration.
/// `now` is the chain's time (for key validity).
pub fn print_config(ctx: &Ctx, root: &StdAddr, cfg: &RootConfig, balance: u64, now: u32) {
    let p = &cfg.params;
    println!("root:        {}", ctx.fmt_both(root));
    println!("balance:     {}", ton(balance));
    println!("owner:       {}", ctx.fmt_both(&cfg.owner));
    println!("version:     {}", cfg.version);
    println!(
        "params version: {} (struct version {})",
        p.params_version, p.struct_version
    );
    println!("unique id:   {}", p.unique_id);
    println!(
        "network:     {}",
        if p.is_test { "test" } else { "production" }
    );
    println!("price per token: {}", per_token(p.price_per_token));
    println!(
        "worker fee per token: {}",
        per_token(p.worker_fee_per_token)
    );
    println!(
        "proxy commission per token: {}",
        per_token(p.price_per_token.saturating_sub(p.worker_fee_per_token))
    );
    println!(
        "multipliers: prompt {} cached {} completion {} reasoning {}",
        multiplier(p.prompt_tokens_price_multiplier),
        multiplier(p.cached_tokens_price_multiplier),
        multiplier(p.completion_tokens_price_multiplier),
        multiplier(p.reasoning_tokens_price_multiplier)
    );
    println!("proxy close delay: {} s", p.proxy_delay_before_close);
    println!("client close delay: {} s", p.client_delay_before_close);
    println!("min proxy stake: {}", ton(p.min_proxy_stake));
    println!("min client stake: {}", ton(p.min_client_stake));
    if cfg.registered_proxies.is_empty() {
        println!("registered proxies: (none)");
    } else {
        println!("registered proxies:");
        for r in &cfg.registered_proxies {
            println!("  #{} {}", r.seqno, r.address);
        }
    }
    println!("last proxy seqno: {}", cfg.last_proxy_seqno);
    println!("proxy hashes: {}", hashes(&cfg.proxy_hashes));
    println!("worker hashes: {}", hashes(&cfg.worker_hashes));
    println!("model hashes: {}", hashes(&cfg.model_hashes));
    if p.struct_version >= 4 {
        let km = &cfg.key_manager;
        println!("key manager: {}", hex::encode(km.public_key));
        println!("key manager image hash: {}", hex::encode(km.image_hash));
        println!(
            "key manager address: {}",
            km.address.as_deref().unwrap_or("(none)")
        );
        if km.public_keys.is_empty() {
            println!("registered keys: (none)");
        } else {
            println!("registered keys:");
            for k in &km.public_keys {
                let state = if k.expire_at >= now {
                    "valid"
                } else {
                    "expired"
                };
                println!(
                    "  {} type {} expires at {} ({state})",
                    hex::encode(k.public_key),
                    k.key_type,
                    k.expire_at
                );
            }
        }
    }
    println!(
        "proxy code:  {}",
        code_hash(&p.proxy_sc_code, codes::proxy_code().map_err(Into::into))
    );
    println!(
        "worker code: {}",
        code_hash(&p.worker_sc_code, codes::worker_code().map_err(Into::into))
    );
    println!(
        "client code: {}",
        code_hash(&p.client_sc_code, codes::client_code().map_err(Into::into))
    );
}

/// Sends `body` (made from the root's config and the chain's time) to the root from the
/// owner's wallet; returns the config before and after.
async fn admin(
    a: &AdminOpts,
    make_body: impl FnOnce(&RootConfig, u32) -> anyhow::Result<Option<Body>>,
) -> anyhow::Result<Option<(Ctx, RootConfig, RootConfig)>> {
    let value = parse_amount(&a.value, "--value")?;
    let ctx = Ctx::open(&a.chain).await?;
    let (root, before) = ctx.root_config().await?;
    let now = ctx.chain.now().await?;
    let Some(body) = make_body(&before, now)? else {
        return Ok(None);
    };
    let w = ctx.wallet(&a.wallet, Some(ADMIN))?;
    if w.address() != &before.owner {
        bail!(
            "refused: {} ({}) is not the root's owner {}; the root would refuse it with exit \
             code 1010 (expected a message from the owner). Nothing was sent.",
            w.label,
            ctx.fmt(w.address()),
            ctx.fmt(&before.owner)
        );
    }
    let wallet_before = ctx.chain.account(w.address()).await?.balance;
    let msg = body_message(root.clone(), value, &body)?;
    let mut names = Names::default();
    names.add(w.address(), w.label.clone()).add(&root, "root");
    let outcome = ctx
        .chain
        .send(&w, vec![(cocoon_send_mode(value), msg)], &names)
        .await?;
    outcome.print(&names, ctx.chain.testnet);
    outcome.ensure_ok(&names, ctx.chain.testnet)?;
    let (_, after) = ctx.root_config().await?;
    let wallet_after = ctx.chain.account(w.address()).await?.balance;
    println!("root version: {} -> {}", before.version, after.version);
    print_wallet_change(&w.label, wallet_before, wallet_after);
    Ok(Some((ctx, before, after)))
}

async fn add_hash(a: AdminOpts, code: u32, hash: [u8; 32], what: &str) -> anyhow::Result<()> {
    let hex_hash = hex::encode(hash);
    let done = admin(&a, |cfg, _| {
        let present = match code {
            op::ROOT_ADD_WORKER_TYPE => cfg.has_worker_hash(&hash),
            op::ROOT_ADD_MODEL_TYPE => cfg.has_model_hash(&hash),
            _ => cfg.has_proxy_hash(&hash),
        };
        if present {
            println!("{what} {hex_hash} is already allowed by the root; nothing sent");
            return Ok(None);
        }
        Ok(Some(Body::RootHash {
            op: code,
            query_id: cocoon_node::util::random_query_id(),
            hash,
        }))
    })
    .await?;
    if let Some((_, _, after)) = done {
        let now = match code {
            op::ROOT_ADD_WORKER_TYPE => after.has_worker_hash(&hash),
            op::ROOT_ADD_MODEL_TYPE => after.has_model_hash(&hash),
            _ => after.has_proxy_hash(&hash),
        };
        if !now {
            bail!("the root accepted the message but does not list {what} {hex_hash}");
        }
        println!("{what} allowed: {hex_hash}");
    }
    Ok(())
}

async fn add_proxy(a: AddProxyArgs) -> anyhow::Result<()> {
    let text = a.address.trim().to_owned();
    if text.len() > 127 {
        bail!(
            "the proxy address text is {} bytes; at most 127 fit",
            text.len()
        );
    }
    let check = RegisteredProxy {
        seqno: 0,
        address: text.clone(),
    };
    if check.endpoints().is_none() {
        bail!(
            "{text:?} is not \"IP:PORT\" or \"IP:PORT_FOR_WORKERS IP:PORT_FOR_CLIENTS\" \
             (IPv4); runners would skip it"
        );
    }
    let done = admin(&a.admin, |_, _| {
        Ok(Some(Body::RootRegisterProxy {
            query_id: cocoon_node::util::random_query_id(),
            info: text.clone(),
        }))
    })
    .await?;
    if let Some((_, _, after)) = done {
        let seqno = after.last_proxy_seqno;
        match after.registered_proxies.iter().find(|p| p.seqno == seqno) {
            Some(p) if p.address == text => println!("proxy registered: #{seqno} {text}"),
            _ => bail!("the root accepted the message but does not list {text:?} as #{seqno}"),
        }
    }
    Ok(())
}

async fn set_price(a: SetPriceArgs) -> anyhow::Result<()> {
    let price = a
        .price
        .as_deref()
        .map(|p| parse_amount(p, "--price"))
        .transpose()?;
    let fee = a
        .worker_fee
        .as_deref()
        .map(|f| parse_amount(f, "--worker-fee"))
        .transpose()?;
    let min_proxy = a
        .min_proxy_stake
        .as_deref()
        .map(|s| parse_amount(s, "--min-proxy-stake"))
        .transpose()?;
    let min_client = a
        .min_client_stake
        .as_deref()
        .map(|s| parse_amount(s, "--min-client-stake"))
        .transpose()?;
    let more = a.proxy_delay.is_some()
        || a.client_delay.is_some()
        || min_proxy.is_some()
        || min_client.is_some();
    if price.is_none() && fee.is_none() && !more {
        bail!("nothing to change: pass --price, --worker-fee, --proxy-delay, --client-delay, --min-proxy-stake or --min-client-stake");
    }
    let done = admin(&a.admin, |cfg, _| {
        let p = &cfg.params;
        let price = price.unwrap_or(p.price_per_token);
        let fee = fee.unwrap_or(p.worker_fee_per_token);
        if fee > price {
            bail!(
                "refused: the worker fee {} would exceed the price {} (the root refuses that \
                 with exit code 1004)",
                per_token(fee),
                per_token(price)
            );
        }
        let query_id = cocoon_node::util::random_query_id();
        Ok(Some(if more {
            Body::RootChangeParams {
                query_id,
                price_per_token: price,
                worker_fee_per_token: fee,
                proxy_delay_before_close: a.proxy_delay.unwrap_or(p.proxy_delay_before_close),
                client_delay_before_close: a.client_delay.unwrap_or(p.client_delay_before_close),
                min_proxy_stake: min_proxy.unwrap_or(p.min_proxy_stake),
                min_client_stake: min_client.unwrap_or(p.min_client_stake),
            }
        } else {
            Body::RootChangePrice {
                query_id,
                price_per_token: price,
                worker_fee_per_token: fee,
            }
        }))
    })
    .await?;
    if let Some((_, before, after)) = done {
        let (b, n) = (&before.params, &after.params);
        println!(
            "price per token: {} -> {}",
            per_token(b.price_per_token),
            per_token(n.price_per_token)
        );
        println!(
            "worker fee per token: {} -> {}",
            per_token(b.worker_fee_per_token),
            per_token(n.worker_fee_per_token)
        );
        if more {
            println!(
                "close delays: proxy {} s -> {} s, client {} s -> {} s",
                b.proxy_delay_before_close,
                n.proxy_delay_before_close,
                b.client_delay_before_close,
                n.client_delay_before_close
            );
            println!(
                "min stakes: proxy {} -> {}, client {} -> {}",
                ton(b.min_proxy_stake),
                ton(n.min_proxy_stake),
                ton(b.min_client_stake),
                ton(n.min_client_stake)
            );
        }
        println!(
            "params version: {} -> {} (every proxy, client and worker contract address \
             depends on the params: runners move to new contracts)",
            b.params_version, n.params_version
        );
    }
    Ok(())
}

async fn deploy(a: DeployArgs) -> anyhow::Result<()> {
    let value = parse_amount(&a.value, "--value")?;
    let price = parse_amount(&a.price, "--price")?;
    let fee = parse_amount(&a.worker_fee, "--worker-fee")?;
    let min_proxy = parse_amount(&a.min_proxy_stake, "--min-proxy-stake")?;
    let min_client = parse_amount(&a.min_client_stake, "--min-client-stake")?;
    if fee > price {
        bail!(
            "the worker fee {} exceeds the price {}",
            per_token(fee),
            per_token(price)
        );
    }
    if value < ONE_TON / 10 {
        bail!(
            "--value {} is too little for the root's storage (at least 0.1 TON)",
            ton(value)
        );
    }
    let ctx = Ctx::open(&a.chain).await?;
    let w = ctx.wallet(&a.wallet, Some(ADMIN))?;
    let owner = match &a.root_owner {
        Some(o) => parse_address(o, "--root-owner")?,
        None => w.address().clone(),
    };
    let mut root = GenesisRoot::devnet(owner.clone())?;
    {
        let p = &mut root.config.params;
        p.unique_id = a.unique_id;
        p.is_test = !a.production;
        p.price_per_token = price;
        p.worker_fee_per_token = fee;
        p.proxy_delay_before_close = a.proxy_delay;
        p.client_delay_before_close = a.client_delay;
        p.min_proxy_stake = min_proxy;
        p.min_client_stake = min_client;
    }
    let init = root.contract().context("building the root contract")?;
    let existing = ctx.chain.account(&init.address).await?;
    if existing.status == AccountStatus::Active {
        bail!(
            "a root with exactly these params and owner is already deployed at {}; nothing sent",
            ctx.fmt_both(&init.address)
        );
    }
    let before = ctx.chain.account(w.address()).await?.balance;
    let mut names = Names::default();
    names
        .add(w.address(), w.label.clone())
        .add(&init.address, "new root");
    let outcome = ctx
        .chain
        .send(
            &w,
            vec![(cocoon_send_mode(value), deploy_message(&init, value, None))],
            &names,
        )
        .await?;
    outcome.print(&names, ctx.chain.testnet);
    outcome.ensure_ok(&names, ctx.chain.testnet)?;
    let after = ctx.chain.account(w.address()).await?.balance;
    let st = ctx.chain.account(&init.address).await?;
    let Some(data) = st.data.filter(|_| st.status == AccountStatus::Active) else {
        bail!(
            "the deployment was sent but {} is not active yet",
            to_raw(&init.address)
        );
    };
    let cfg = RootConfig::from_data_cell(&data)?;
    println!("deployed:    {}", ctx.fmt_both(&init.address));
    print_wallet_change(&w.label, before, after);
    print_config(
        &ctx,
        &init.address,
        &cfg,
        st.balance,
        ctx.chain.now().await?,
    );
    println!(
        "Use --root {} with the other commands to work with it.",
        ctx.fmt(&init.address)
    );
    Ok(())
}
