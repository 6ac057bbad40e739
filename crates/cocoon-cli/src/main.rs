//! `cocoon`: the one user-facing binary of cocoon-rs. Each role and tool is a subcommand.

use clap::{Parser, Subcommand};

mod attest;
mod devnet;
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
    /// Run a proxy: admits workers and clients, routes requests, books tokens.
    Proxy(roles::RoleArgs),
    /// Run a worker: serves a model to proxies and gets paid per token.
    Worker(roles::WorkerArgs),
    /// Run a client: the OpenAI-compatible HTTP API in front of the network.
    Client(roles::RoleArgs),
    /// Attestation tools: certificates, quotes, and what this machine can produce.
    #[command(subcommand)]
    Attest(attest::AttestCommand),
}

fn init_logging(filter: Option<&str>) {
    let filter = match filter {
        Some(f) => tracing_subscriber::EnvFilter::new(f),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log.as_deref());
    match cli.command {
        Command::Devnet(args) => runtime()?.block_on(devnet::run(args)),
        Command::Proxy(args) => runtime()?.block_on(roles::proxy(args)),
        Command::Worker(args) => runtime()?.block_on(roles::worker(args)),
        Command::Client(args) => runtime()?.block_on(roles::client(args)),
        Command::Attest(cmd) => attest::run(cmd),
    }
}
