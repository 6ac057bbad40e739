//! The CLI for people holding money: cocoon wallets, the root contract and the
//! client / worker / proxy contracts (`cocoon wallet|root|client|worker|proxy …`).
//!
//! Every command reaches the chain through [`chain::Chain`]: the devnet's
//! embedded chain (its HTTP chain API when the devnet runs, else the state
//! directory opened directly) or toncenter. Money moves only through the
//! user's cocoon wallet, one signed external message per command; everything
//! is checked first (balances, contract states, ownership), so a command
//! either sends one complete request or nothing. Amounts are TON with
//! nanoTON precision.

pub mod chain;
pub mod client;
pub mod proxy;
pub mod root;
pub mod wallet;
pub mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use cocoon_ton::address::{parse_addr, to_friendly, to_raw};
use cocoon_ton::chain::AccountStatus;
use cocoon_ton::local::codes;
use cocoon_ton::root::RootConfig;
use cocoon_ton::units::{format_ton, parse_ton};
use cocoon_ton::wallet::{official_cocoon_wallet_code, CocoonWallet};
use cocoon_ton::{Cell, StdAddr};
use ed25519_dalek::SigningKey;
use serde::Deserialize;

use chain::Chain;

/// Default toncenter endpoint (TON testnet).
pub const TESTNET_TONCENTER: &str = cocoon_ton::toncenter::TESTNET_URL;

/// Which chain to talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChainKind {
    /// The devnet's embedded chain: its chain API when the devnet runs, else `DIR/chain`.
    Devnet,
    /// A toncenter HTTP API (`--toncenter-url`, `--api-key`).
    Toncenter,
}

/// Where the chain is (options shared by every money command).
#[derive(Debug, Clone, Args)]
pub struct ChainOpts {
    /// The chain: the devnet's (`devnet`) or a toncenter API (`toncenter`).
    #[arg(long, value_enum, default_value_t = ChainKind::Devnet)]
    pub chain: ChainKind,
    /// The devnet's state directory (holds devnet.json and chain/).
    #[arg(long, default_value = ".cocoon-devnet")]
    pub dir: PathBuf,
    /// toncenter API v2 URL (with --chain toncenter).
    #[arg(long, default_value = TESTNET_TONCENTER)]
    pub toncenter_url: String,
    /// toncenter API key (with --chain toncenter).
    #[arg(long, env = "TONCENTER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The root contract (default: the devnet's, from devnet.json or its chain).
    #[arg(long)]
    pub root: Option<String>,
    /// Seconds to wait for a sent request to show on chain.
    #[arg(long, default_value_t = 90)]
    pub timeout: u64,
}

/// Which cocoon wallet code a key's wallet runs (its address depends on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WalletCode {
    /// Our compiled Tolk wallet (the devnet's).
    Ours,
    /// The C++ runners' wallet (code hash 7a48f05c…).
    Official,
}

/// Which cocoon wallet signs (options shared by every money command).
#[derive(Debug, Clone, Args)]
pub struct WalletOpts {
    /// A wallet named in DIR/devnet.json (`root-admin`, `proxy`, `client`, `worker-0`, …).
    #[arg(long, conflicts_with_all = ["key", "owner"])]
    pub wallet: Option<String>,
    /// The wallet's Ed25519 key file (PEM, as `cocoon wallet new` and the roles write it).
    #[arg(long, requires = "owner")]
    pub key: Option<PathBuf>,
    /// The wallet's owner address (part of the wallet's address).
    #[arg(long, requires = "key")]
    pub owner: Option<String>,
    /// The wallet code (default: ours on the devnet, the C++ runners' on toncenter).
    #[arg(long, value_enum)]
    pub wallet_code: Option<WalletCode>,
}

/// One wallet entry of `devnet.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct DevnetWallet {
    /// Key file (PEM).
    pub key_file: PathBuf,
    /// Owner address.
    pub owner: String,
    /// The cocoon wallet's address, when the devnet wrote it.
    #[serde(default)]
    pub address: Option<String>,
}

/// What the money commands read from `DIR/devnet.json` (other keys are ignored).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DevnetInfo {
    /// The devnet's toncenter-compatible chain API, while it runs.
    #[serde(default)]
    pub chain_api: Option<String>,
    /// The root contract.
    #[serde(default)]
    pub root_address: Option<String>,
    /// The proxy's public key (hex): signs vouchers, part of contract addresses.
    #[serde(default)]
    pub proxy_public_key: Option<String>,
    /// The proxy contract.
    #[serde(default)]
    pub proxy_sc_address: Option<String>,
    /// Named wallets.
    #[serde(default)]
    pub wallets: BTreeMap<String, DevnetWallet>,
    /// Best payout voucher file per worker wallet name.
    #[serde(default)]
    pub worker_vouchers: BTreeMap<String, PathBuf>,
}

impl DevnetInfo {
    /// Reads `dir/devnet.json`; `None` when there is none. Relative file
    /// paths in it are taken relative to `dir`.
    pub fn read(dir: &Path) -> anyhow::Result<Option<DevnetInfo>> {
        let path = dir.join("devnet.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut info: DevnetInfo = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a devnet description", path.display()))?;
        let within = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        info.wallets
            .values_mut()
            .for_each(|w| within(&mut w.key_file));
        info.worker_vouchers.values_mut().for_each(within);
        Ok(Some(info))
    }

    fn text(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }
}

/// The chain and what the devnet says about it: the context of one command.
pub struct Ctx {
    /// The chain.
    pub chain: Chain,
    /// `DIR/devnet.json`, with `--chain devnet`.
    pub devnet: Option<DevnetInfo>,
    /// The options given.
    pub opts: ChainOpts,
}

impl Ctx {
    /// Connects as the options say.
    pub async fn open(opts: &ChainOpts) -> anyhow::Result<Ctx> {
        let timeout = Duration::from_secs(opts.timeout.max(1));
        let (chain, devnet) = match opts.chain {
            ChainKind::Devnet => {
                let devnet = DevnetInfo::read(&opts.dir)?;
                let api = devnet
                    .as_ref()
                    .and_then(|d| DevnetInfo::text(&d.chain_api))
                    .map(str::to_owned);
                (
                    Chain::devnet(&opts.dir, api.as_deref(), timeout).await?,
                    devnet,
                )
            }
            ChainKind::Toncenter => (
                Chain::toncenter(&opts.toncenter_url, opts.api_key.as_deref(), timeout).await?,
                None,
            ),
        };
        Ok(Ctx {
            chain,
            devnet,
            opts: opts.clone(),
        })
    }

    /// Prints an address as COCOON does (non-bounceable, with this chain's network flag).
    pub fn fmt(&self, a: &StdAddr) -> String {
        to_friendly(a, self.chain.testnet)
    }

    /// `friendly (raw)`.
    pub fn fmt_both(&self, a: &StdAddr) -> String {
        format!("{} ({})", self.fmt(a), to_raw(a))
    }

    /// The root contract: `--root`, else devnet.json, else the devnet chain's genesis root.
    pub fn root_address(&self) -> anyhow::Result<StdAddr> {
        if let Some(r) = &self.opts.root {
            return parse_address(r, "--root");
        }
        if let Some(r) = self
            .devnet
            .as_ref()
            .and_then(|d| DevnetInfo::text(&d.root_address))
        {
            return parse_address(r, "root_address in devnet.json");
        }
        if let Some(r) = self.chain.local().and_then(|c| c.root_address()) {
            return Ok(r);
        }
        bail!("which root contract? pass --root ADDR")
    }

    /// The root's current configuration.
    pub async fn root_config(&self) -> anyhow::Result<(StdAddr, RootConfig)> {
        let root = self.root_address()?;
        let state = self.chain.account(&root).await?;
        let Some(data) = state.data.filter(|_| state.status == AccountStatus::Active) else {
            bail!(
                "the root contract {} is not deployed on {}",
                self.fmt_both(&root),
                self.chain.description
            );
        };
        let cfg = RootConfig::from_data_cell(&data)
            .with_context(|| format!("reading the root contract {}", self.fmt(&root)))?;
        Ok((root, cfg))
    }

    /// The signing wallet: `--wallet NAME`, `--key FILE --owner ADDR`, or the
    /// devnet's wallet named `default` when neither is given.
    pub fn wallet(&self, opts: &WalletOpts, default: Option<&str>) -> anyhow::Result<Wallet> {
        let code_choice = opts.wallet_code.unwrap_or(match self.opts.chain {
            ChainKind::Devnet => WalletCode::Ours,
            ChainKind::Toncenter => WalletCode::Official,
        });
        if let (Some(key), Some(owner)) = (&opts.key, &opts.owner) {
            let owner = parse_address(owner, "--owner")?;
            let key = read_key(key)?;
            let w = CocoonWallet::new(key, owner, &wallet_code(code_choice)?)?;
            return Ok(Wallet {
                name: None,
                label: "wallet".into(),
                inner: w,
            });
        }
        let name = match (&opts.wallet, default) {
            (Some(n), _) => n.as_str(),
            (None, Some(d)) if self.devnet_wallet(d).is_some() => d,
            _ => bail!(
                "which wallet? pass --wallet NAME{} or --key FILE --owner ADDR",
                self.wallet_names()
            ),
        };
        let Some(entry) = self.devnet_wallet(name) else {
            bail!(
                "no wallet {name:?} in {}{}",
                self.opts.dir.join("devnet.json").display(),
                self.wallet_names()
            );
        };
        let owner = parse_address(&entry.owner, &format!("owner of wallet {name}"))?;
        let key = read_key(&entry.key_file)?;
        let expected = entry
            .address
            .as_deref()
            .map(|a| parse_address(a, &format!("address of wallet {name}")))
            .transpose()?;
        let mut choices = vec![code_choice];
        if opts.wallet_code.is_none() {
            // devnet.json names the address: find the code that gives it.
            choices.push(match code_choice {
                WalletCode::Ours => WalletCode::Official,
                WalletCode::Official => WalletCode::Ours,
            });
        }
        for choice in choices {
            let w = CocoonWallet::new(key.clone(), owner.clone(), &wallet_code(choice)?)?;
            if expected.as_ref().is_none_or(|e| e == w.address()) {
                return Ok(Wallet {
                    name: Some(name.to_owned()),
                    label: format!("wallet {name}"),
                    inner: w,
                });
            }
        }
        bail!(
            "wallet {name}: key {} and owner {} do not give the address {} that devnet.json names",
            entry.key_file.display(),
            entry.owner,
            entry.address.as_deref().unwrap_or_default()
        )
    }

    fn devnet_wallet(&self, name: &str) -> Option<&DevnetWallet> {
        self.devnet.as_ref().and_then(|d| d.wallets.get(name))
    }

    fn wallet_names(&self) -> String {
        match &self.devnet {
            Some(d) if !d.wallets.is_empty() => format!(
                " (devnet.json has {})",
                d.wallets.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            _ => String::new(),
        }
    }

    /// The proxy contract and key for client and worker contracts: the options,
    /// else devnet.json.
    pub fn proxy(&self, opts: &ProxyOpts) -> anyhow::Result<(StdAddr, [u8; 32])> {
        let d = self.devnet.as_ref();
        let sc = match (
            &opts.proxy_sc,
            d.and_then(|d| DevnetInfo::text(&d.proxy_sc_address)),
        ) {
            (Some(a), _) => parse_address(a, "--proxy-sc")?,
            (None, Some(a)) => parse_address(a, "proxy_sc_address in devnet.json")?,
            (None, None) => bail!("which proxy contract? pass --proxy-sc ADDR"),
        };
        let key = match (
            &opts.proxy_key,
            d.and_then(|d| DevnetInfo::text(&d.proxy_public_key)),
        ) {
            (Some(k), _) => parse_hash(k, "--proxy-key")?,
            (None, Some(k)) => parse_hash(k, "proxy_public_key in devnet.json")?,
            (None, None) => bail!("which proxy key? pass --proxy-key HEX"),
        };
        Ok((sc, key))
    }
}

/// The proxy a client or worker contract belongs to.
#[derive(Debug, Clone, Args)]
pub struct ProxyOpts {
    /// The proxy contract (default: proxy_sc_address in devnet.json).
    #[arg(long)]
    pub proxy_sc: Option<String>,
    /// The proxy's public key, hex (default: proxy_public_key in devnet.json).
    #[arg(long)]
    pub proxy_key: Option<String>,
}

/// A cocoon wallet with a label for the output.
pub struct Wallet {
    /// Its name in devnet.json, when chosen by name.
    pub name: Option<String>,
    /// `wallet NAME`, or `wallet` for one given by key file.
    pub label: String,
    /// The wallet.
    pub inner: CocoonWallet,
}

impl Wallet {
    /// Its address.
    pub fn address(&self) -> &StdAddr {
        self.inner.address()
    }
}

/// A per-party contract as read from its account: its parsed state when it is deployed,
/// and the root params it was derived with (the root's current ones before it exists).
pub fn party_contract<T>(
    account: &cocoon_ton::chain::AccountState,
    parse: impl Fn(&Cell) -> cocoon_ton::Result<T>,
    params_of: impl Fn(&T) -> &Cell,
    what: &str,
    root_params: &cocoon_ton::root::CocoonParams,
) -> anyhow::Result<(Option<T>, cocoon_ton::root::CocoonParams)> {
    match (&account.status, &account.data) {
        (AccountStatus::Active, Some(d)) => {
            let st = parse(d).with_context(|| format!("reading the {what} contract"))?;
            let params = cocoon_ton::root::CocoonParams::from_cell(params_of(&st))
                .with_context(|| format!("reading the {what} contract's params"))?;
            Ok((Some(st), params))
        }
        _ => Ok((None, root_params.clone())),
    }
}

/// Prints how a wallet's balance moved: `LABEL balance: BEFORE -> AFTER (DELTA)`.
pub fn print_wallet_change(label: &str, before: u64, after: u64) {
    println!(
        "{label} balance: {} -> {} ({})",
        ton(before),
        ton(after),
        ton_delta(before, after)
    );
}

/// The code of `choice`.
pub fn wallet_code(choice: WalletCode) -> anyhow::Result<Cell> {
    Ok(match choice {
        WalletCode::Ours => codes::wallet_code()?,
        WalletCode::Official => official_cocoon_wallet_code()?,
    })
}

/// Reads an Ed25519 key file (PEM) without ever creating one.
pub fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let pem = std::fs::read(path).with_context(|| format!("reading key {}", path.display()))?;
    cocoon_attest::cert::load_key_pem(&pem)
        .with_context(|| format!("{} is not an Ed25519 private key (PEM)", path.display()))
}

/// Parses an address (raw or user-friendly); `what` names it in errors.
pub fn parse_address(s: &str, what: &str) -> anyhow::Result<StdAddr> {
    parse_addr(s).with_context(|| format!("{what}: not a TON address: {s:?}"))
}

/// Parses 32 bytes of hex (an optional `0x` prefix is allowed).
pub fn parse_hash(s: &str, what: &str) -> anyhow::Result<[u8; 32]> {
    let t = s.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    let bytes = hex::decode(t).with_context(|| format!("{what}: not hex: {s:?}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| anyhow::anyhow!("{what}: {} bytes, expected 32", b.len()))
}

/// Parses a TON amount (`"1.5"`), as `what`.
pub fn parse_amount(s: &str, what: &str) -> anyhow::Result<u64> {
    parse_ton(s).with_context(|| format!("{what}: not a TON amount"))
}

/// `"1.5 TON"`, to the nanoTON.
pub fn ton(nano: u64) -> String {
    format!("{} TON", format_ton(nano))
}

/// `"1.5 TON"` for a signed change (`+1.5 TON`, `-0.2 TON`).
pub fn ton_delta(before: u64, after: u64) -> String {
    if after >= before {
        format!("+{}", ton(after - before))
    } else {
        format!("-{}", ton(before - after))
    }
}

/// What a TVM or COCOON contract exit code means (spec §6.4, contracts/src/common.tolk).
pub fn exit_code_meaning(code: i32) -> &'static str {
    match code {
        0 | 1 => "ok",
        2 => "stack underflow",
        5 => "integer out of range",
        7 => "type check error",
        8 => "cell overflow",
        9 => "cell underflow (malformed message)",
        13 => "out of gas",
        -14 => "out of gas",
        1000 => "old message (voucher not newer than what the contract has)",
        1001 => "low contract balance",
        1002 => "low balance",
        1003 => "attached value too low",
        1004 => "message format mismatch",
        1005 => "signed message format mismatch",
        1006 => "the contract's state forbids this (closed?)",
        1007 => "bad signature",
        1008 => "stored data damaged",
        1009 | 1010 => "expected a message from the owner",
        1011 => "not unlocked yet (the close delay has not passed)",
        1012 => "unknown op",
        1013 => "unknown text command",
        1014 => "contract address mismatch",
        1015 => "voucher for another contract",
        1030 => "wallet: request expired",
        1031 => "wallet: blocked by its owner",
        1032 => "wallet: wrong seqno",
        1033 => "wallet: wrong subwallet",
        1034 => "wallet: bad signature",
        1035 => "wallet: balance below 2 TON",
        1040 => "wallet: not the owner",
        1041 => "wallet: unknown text command",
        2000 => "unknown proxy",
        _ => "unknown exit code",
    }
}

/// A unix time as `T (in N s)` / `T (N s ago)` relative to `now`.
pub fn when(t: u32, now: u32) -> String {
    if t > now {
        format!("{t} (in {} s)", t - now)
    } else {
        format!("{t} ({} s ago)", now - t)
    }
}
