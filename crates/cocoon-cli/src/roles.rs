//! `cocoon proxy|worker|client --config FILE`: run one role until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use cocoon_node::config;
use cocoon_node::runner;
use tracing::info;

/// Arguments shared by the role subcommands.
#[derive(Debug, Args)]
pub struct RoleArgs {
    /// The role's TOML configuration (see configs/ for documented examples).
    #[arg(long, short)]
    pub config: PathBuf,
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `cocoon proxy`.
pub async fn proxy(args: RoleArgs) -> anyhow::Result<()> {
    let cfg: config::ProxyConfig = config::load(&args.config)?;
    let running = runner::start_proxy(&cfg)
        .await
        .context("starting the proxy")?;
    println!(
        "proxy ready: clients {} workers {} public key {}",
        running.client_addr,
        running.worker_addr,
        hex::encode(running.proxy.public_key())
    );
    shutdown_signal().await;
    info!("proxy stopping");
    Ok(())
}

/// `cocoon worker`: on SIGTERM it drains (finishes running requests, takes no new ones).
pub async fn worker(args: RoleArgs) -> anyhow::Result<()> {
    let cfg: config::WorkerConfig = config::load(&args.config)?;
    let running = runner::start_worker(&cfg, None)
        .await
        .context("starting the worker")?;
    println!("worker ready: model {} via {}", running.model, cfg.upstream);
    shutdown_signal().await;
    info!("worker draining");
    if tokio::time::timeout(Duration::from_secs(300), running.worker.drain())
        .await
        .is_err()
    {
        anyhow::bail!("requests still running after 300 s of draining");
    }
    info!("worker stopped");
    Ok(())
}

/// `cocoon client`.
pub async fn client(args: RoleArgs) -> anyhow::Result<()> {
    let cfg: config::ClientConfig = config::load(&args.config)?;
    let running = runner::start_client(&cfg)
        .await
        .context("starting the client")?;
    println!(
        "client ready: OpenAI API at http://{}/v1",
        running.http_addr
    );
    shutdown_signal().await;
    info!("client stopping");
    Ok(())
}
