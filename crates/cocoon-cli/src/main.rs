//! `cocoon`: the one user-facing binary of cocoon-rs. Each role and tool is a subcommand.

use clap::{Parser, Subcommand};

mod attest;

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
    /// Run a whole COCOON network on this machine (not available yet; see README).
    Devnet,
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log.as_deref());
    match cli.command {
        Command::Devnet => {
            anyhow::bail!(
                "`cocoon devnet` is not available yet: it arrives with the client/devnet \
                 milestone (chain, proxy, workers and an OpenAI-compatible client in one \
                 process tree). What works today: the COCOON wire protocol (cocoon-tl, \
                 cocoon-net) and RA-TLS (`cocoon attest --help`)."
            )
        }
        Command::Attest(cmd) => attest::run(cmd),
    }
}
