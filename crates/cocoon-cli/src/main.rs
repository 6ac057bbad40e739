//! `cocoon`: the one user-facing binary of cocoon-rs. Each role and tool is a subcommand.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod attest;
mod batch;
mod bot;
mod demand;
mod devnet;
mod e2e;
mod keys;
mod money;
mod roles;

/// cocoon-rs: a Rust implementation of COCOON, the Confidential Compute Open Network on TON.
#[derive(Debug, Parser)]
#[command(name = "cocoon", version, about, long_about = None)]
struct Cli {
    /// Log filter in `tracing` syntax (e.g. `info`, `cocoon_net=debug`); overrides RUST_LOG.
    #[arg(long, global = true, env = "COCOON_LOG")]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole COCOON network on this machine: chain, proxy, workers and an
    /// OpenAI-compatible client.
    Devnet(devnet::DevnetArgs),
    /// Run a proxy (`--config FILE`): admits workers and clients, routes requests, books
    /// tokens. Or its money: `balance`, `withdraw`.
    Proxy(ProxyCommand),
    /// Run a worker (`--config FILE`): serves a model to proxies and gets paid per token.
    /// Or its money: `balance`, `payout`.
    Worker(WorkerCommand),
    /// Run a client (`--config FILE`): the OpenAI-compatible HTTP API in front of the
    /// network. Or its money: `balance`, `top-up`, `withdraw`, `close`.
    Client(ClientCommand),
    /// Run a key manager (`--config FILE`): issues the keys apps encrypt requests to,
    /// registers them on the root, hands the private halves to attested proxies.
    KeyManager(roles::RoleArgs),
    /// Cocoon wallets: create a key, show a wallet, send TON.
    #[command(subcommand)]
    Wallet(money::wallet::WalletCommand),
    /// The root contract: show it, deploy one, administer it as its owner.
    #[command(subcommand)]
    Root(money::root::RootCommand),
    /// Attestation tools: certificates, quotes, and what this machine can produce.
    #[command(subcommand)]
    Attest(attest::AttestCommand),
    /// Encrypt JSON request bodies (stdin) end to end to a key manager's key, so that
    /// no gateway or proxy on the way reads them (COCOON protocol 3).
    Encrypt(e2e::EncryptArgs),
    /// Decrypt answer bodies (stdin, JSON or SSE) a worker encrypted to your key.
    Decrypt(e2e::DecryptArgs),
    /// Run a Telegram bot that answers text and voice through a client gateway (the
    /// devnet's by default), with what each chat spends.
    Bot(bot::BotArgs),
    /// Run a dataset (JSONL of OpenAI requests) through a client gateway's Batch API with
    /// a progress bar; list, follow, cancel and download batches.
    #[command(subcommand)]
    Batch(batch::BatchCommand),
}

/// `cocoon proxy`: run the role, or a money subcommand.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct ProxyCommand {
    /// The role's TOML configuration (see configs/ for documented examples).
    #[arg(long, short, required = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    money: Option<money::proxy::ProxyMoney>,
}

/// `cocoon worker`: run the role, or a money subcommand.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct WorkerCommand {
    /// The worker's TOML configuration (see configs/worker.toml).
    #[arg(long, short, required = true)]
    config: Option<PathBuf>,
    /// Run this model in the embedded engine instead of `upstream`: a model directory
    /// (safetensors + tokenizer), a GGUF file or a Hugging Face id.
    #[arg(long)]
    model: Option<String>,
    #[command(subcommand)]
    sub: Option<WorkerSub>,
}

/// `cocoon worker` subcommands: its money, and where workers are wanted.
#[derive(Debug, Subcommand)]
enum WorkerSub {
    #[command(flatten)]
    Money(Box<money::worker::WorkerMoney>),
    /// Which models a proxy is short of workers for, and at what price.
    Demand(demand::DemandArgs),
}

/// `cocoon client`: run the role, or a money subcommand.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct ClientCommand {
    /// The role's TOML configuration (see configs/ for documented examples).
    #[arg(long, short, required = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    sub: Option<ClientSub>,
}

/// `cocoon client` subcommands: its money, its API keys.
#[derive(Debug, Subcommand)]
enum ClientSub {
    #[command(flatten)]
    Money(money::client::ClientMoney),
    /// The gateway's API keys: one per app, with a spending limit and a rate.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
}

/// The config file of a role run (clap requires it when no subcommand is given).
fn config(c: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    c.ok_or_else(|| anyhow::anyhow!("pass --config FILE"))
}

/// Whether the log on stderr gets ANSI colours: only on a terminal, and never when
/// `NO_COLOR` is set to anything but the empty string (<https://no-color.org>).
fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn init_logging(filter: Option<&str>) {
    let filter = match filter {
        Some(f) => tracing_subscriber::EnvFilter::new(f),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    let colour = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs the command; a failure is printed as `error: ` and its chain of causes, without
/// a backtrace even under `RUST_BACKTRACE=1` (user errors are not bugs), and exits 1.
fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log.as_deref());
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Devnet(args) => runtime()?.block_on(devnet::run(args)),
        Command::Proxy(ProxyCommand {
            money: Some(cmd), ..
        }) => runtime()?.block_on(money::proxy::run(cmd)),
        Command::Proxy(ProxyCommand { config: c, .. }) => {
            let args = roles::RoleArgs { config: config(c)? };
            runtime()?.block_on(roles::proxy(args))
        }
        Command::Worker(WorkerCommand {
            sub: Some(WorkerSub::Money(cmd)),
            ..
        }) => runtime()?.block_on(money::worker::run(*cmd)),
        Command::Worker(WorkerCommand {
            sub: Some(WorkerSub::Demand(args)),
            ..
        }) => runtime()?.block_on(demand::run(args)),
        Command::Worker(WorkerCommand {
            config: c, model, ..
        }) => {
            let args = roles::WorkerArgs {
                config: config(c)?,
                model,
            };
            runtime()?.block_on(roles::worker(args))
        }
        Command::Client(ClientCommand {
            sub: Some(ClientSub::Money(cmd)),
            ..
        }) => runtime()?.block_on(money::client::run(cmd)),
        Command::Client(ClientCommand {
            sub: Some(ClientSub::Keys(cmd)),
            ..
        }) => keys::run(cmd),
        Command::Client(ClientCommand { config: c, .. }) => {
            let args = roles::RoleArgs { config: config(c)? };
            runtime()?.block_on(roles::client(args))
        }
        Command::KeyManager(args) => runtime()?.block_on(roles::key_manager(args)),
        Command::Wallet(cmd) => runtime()?.block_on(money::wallet::run(cmd)),
        Command::Root(cmd) => runtime()?.block_on(money::root::run(cmd)),
        Command::Attest(cmd) => attest::run(cmd),
        Command::Encrypt(args) => e2e::encrypt(args),
        Command::Decrypt(args) => e2e::decrypt(args),
        Command::Bot(args) => runtime()?.block_on(bot::run(args)),
        Command::Batch(command) => runtime()?.block_on(batch::run(command)),
    }
}

#[cfg(test)]
mod tests {
    use super::use_colour;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert!(use_colour(true, None));
        assert!(!use_colour(false, None));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, Some(OsStr::new("1"))));
        // NO_COLOR set but empty does not count (no-color.org).
        assert!(use_colour(true, Some(OsStr::new(""))));
    }
}
