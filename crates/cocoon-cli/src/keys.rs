//! `cocoon client keys add|list|revoke`: the API keys of a client gateway, one per app,
//! with a spending limit and a request rate. A running gateway picks changes up within a
//! second.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use cocoon_node::client::keys::KeyStore;

/// `cocoon client keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Issue a key for an app (printed once; only its hash is kept).
    Add(AddArgs),
    /// The keys, their limits and what each has spent.
    List(Where),
    /// Revoke a key: requests with it get 401 from now on.
    Revoke(RevokeArgs),
}

/// Which gateway's keys.
#[derive(Debug, Args)]
pub struct Where {
    /// The devnet directory (its gateway keeps its keys in DIR/client-keys.sqlite).
    #[arg(long, default_value = crate::devnet::DEFAULT_DIR, conflicts_with = "config")]
    dir: PathBuf,
    /// A standalone client's config: its `api_keys` file.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

/// `cocoon client keys add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The app's name for the key (letters, digits, '-', '_', '.').
    #[arg(long)]
    name: String,
    /// Most the key may spend, in TON (requests stop with 402 once reached).
    #[arg(long)]
    limit_ton: Option<String>,
    /// Most requests per minute (429 above).
    #[arg(long)]
    rpm: Option<u32>,
    #[command(flatten)]
    place: Where,
}

/// `cocoon client keys revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The key's name.
    #[arg(long)]
    name: String,
    #[command(flatten)]
    place: Where,
}

/// The key file `place` names.
fn key_file(place: &Where) -> anyhow::Result<PathBuf> {
    if let Some(config) = &place.config {
        let cfg: cocoon_node::config::ClientConfig = cocoon_node::config::load(config)?;
        return cfg.api_keys.with_context(|| {
            format!(
                "{} sets no api_keys file: add `api_keys = \"client-keys.sqlite\"` to it",
                config.display()
            )
        });
    }
    if !place.dir.join("devnet.json").exists() && !place.dir.join("client-keys.sqlite").exists() {
        bail!(
            "{} holds no devnet (start `cocoon devnet` once), and no --config was given",
            place.dir.display()
        );
    }
    Ok(place.dir.join("client-keys.sqlite"))
}

fn open(path: &Path) -> anyhow::Result<KeyStore> {
    KeyStore::open(path).with_context(|| format!("opening {}", path.display()))
}

/// Runs a keys command.
pub fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Add(a) => {
            let limit = a
                .limit_ton
                .as_deref()
                .map(cocoon_ton::units::parse_ton)
                .transpose()
                .context("--limit-ton")?;
            let store = open(&key_file(&a.place)?)?;
            let key = store.add(&a.name, limit, a.rpm)?;
            println!("{key}");
            eprintln!(
                "key {:?} issued{}{}; it is shown only now. Apps send it as \
                 'Authorization: Bearer …' (the openai SDK's api_key).",
                a.name,
                limit
                    .map(|l| format!(", limit {}", crate::money::ton(l)))
                    .unwrap_or_default(),
                a.rpm
                    .map(|r| format!(", {r} requests/min"))
                    .unwrap_or_default(),
            );
            Ok(())
        }
        KeysCommand::List(place) => {
            let keys = open(&key_file(&place)?)?.list()?;
            if keys.is_empty() {
                println!("no keys: the gateway serves requests without one (on loopback only)");
            }
            for k in keys {
                println!(
                    "{:<20} {}…  {:<8} spent {} in {} requests  limit {}  rate {}",
                    k.name,
                    k.prefix,
                    if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    },
                    crate::money::ton(k.spent_nanoton),
                    k.requests,
                    k.limit_nanoton
                        .map(crate::money::ton)
                        .unwrap_or_else(|| "none".into()),
                    k.rpm
                        .map(|r| format!("{r}/min"))
                        .unwrap_or_else(|| "none".into()),
                );
            }
            Ok(())
        }
        KeysCommand::Revoke(r) => {
            open(&key_file(&r.place)?)?.revoke(&r.name)?;
            println!("key {:?} revoked", r.name);
            Ok(())
        }
    }
}
