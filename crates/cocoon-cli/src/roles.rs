//! `cocoon proxy|worker|client|key-manager --config FILE`: run one role until Ctrl-C or
//! SIGTERM.

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
    let running = runner::start_proxy(&cfg, None)
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

/// Arguments of `cocoon worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The worker's TOML configuration (see configs/worker.toml).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Run this model in the embedded engine instead of `upstream`: a model directory
    /// (safetensors + tokenizer), a GGUF file or a Hugging Face id.
    #[arg(long)]
    pub model: Option<String>,
}

/// `cocoon worker`: on SIGTERM it drains (finishes running requests, takes no new ones).
pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let cfg: config::WorkerConfig = config::load(&args.config)?;
    let backend = match &args.model {
        Some(model) => Some(embedded_backend(model, None).await?),
        None => None,
    };
    let running = runner::start_worker(&cfg, backend, None)
        .await
        .context("starting the worker")?;
    println!("worker ready: model {}", running.model);
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

/// Loads `model` into the embedded engine.
#[cfg(feature = "engine")]
pub async fn embedded_backend(
    model: &str,
    name: Option<&str>,
) -> anyhow::Result<std::sync::Arc<dyn cocoon_node::worker::backend::InferenceBackend>> {
    let backend = cocoon_node::worker::engine_backend::EngineBackend::load(model, name).await?;
    Ok(std::sync::Arc::new(backend))
}

/// Without the `engine` feature there is no embedded engine.
#[cfg(not(feature = "engine"))]
pub async fn embedded_backend(
    model: &str,
    _name: Option<&str>,
) -> anyhow::Result<std::sync::Arc<dyn cocoon_node::worker::backend::InferenceBackend>> {
    anyhow::bail!("cannot run {model}: this cocoon was built without the `engine` feature")
}

/// `cocoon client`.
pub async fn client(args: RoleArgs) -> anyhow::Result<()> {
    let cfg: config::ClientConfig = config::load(&args.config)?;
    let running = runner::start_client(&cfg, None)
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

/// `cocoon key-manager`.
pub async fn key_manager(args: RoleArgs) -> anyhow::Result<()> {
    let cfg: config::KeyManagerConfig = config::load(&args.config)?;
    let running = runner::start_key_manager(&cfg, None)
        .await
        .context("starting the key manager")?;
    println!(
        "key manager ready: proxies ask at {}; machine key {} (the root's key manager key: \
         `cocoon root set-key-manager --public-key {}`)",
        running.addr,
        hex::encode(running.key_manager.public_key()),
        hex::encode(running.key_manager.public_key())
    );
    shutdown_signal().await;
    info!("key manager stopping");
    Ok(())
}
