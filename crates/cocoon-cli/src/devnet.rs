//! `cocoon devnet`: a whole COCOON network in one process — chain, proxy, workers and
//! an OpenAI-compatible client — with all state under one directory.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use cocoon_attest::{PolicyConfig, PolicyKind};
use cocoon_node::chain::devnet_address_text;
use cocoon_node::config::{
    AttestationConfig, ChainConfig, ClientConfig, ProxyConfig, WorkerConfig,
};
use cocoon_node::runner;
use serde_json::json;
use tracing::info;

use crate::roles::shutdown_signal;

/// Options of `cocoon devnet`.
#[derive(Debug, Args)]
pub struct DevnetArgs {
    /// Number of workers.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// OpenAI-compatible model server for the workers (vLLM, SGLang, llama.cpp server,
    /// Ollama), e.g. `http://127.0.0.1:8000`; the model name is read from its /v1/models.
    #[arg(long)]
    pub upstream: Option<String>,
    /// Run the workers on the embedded engine with this model instead of an upstream:
    /// a model directory (safetensors + tokenizer), a GGUF file or a Hugging Face id.
    /// Without --upstream and --model, a tiny random-weight Qwen3 is generated (a
    /// stand-in for real weights: the whole network runs, the answers are noise).
    #[arg(long, conflicts_with = "upstream")]
    pub model: Option<String>,
    /// Port of the OpenAI-compatible API.
    #[arg(long, default_value_t = 10000)]
    pub http_port: u16,
    /// Port where the proxy accepts clients (0 = any free port).
    #[arg(long, default_value_t = 11002)]
    pub proxy_client_port: u16,
    /// Port where the proxy accepts workers (0 = any free port).
    #[arg(long, default_value_t = 11001)]
    pub proxy_worker_port: u16,
    /// Directory for all state (keys, ledger); a restart with the same directory
    /// continues where it stopped.
    #[arg(long, default_value = ".cocoon-devnet")]
    pub dir: PathBuf,
    /// Worker price coefficient (1000 = 1.0×).
    #[arg(long, default_value_t = 1000)]
    pub coefficient: u32,
    /// nanoTON per adjusted token paid by the client.
    #[arg(long, default_value_t = 2)]
    pub price_per_token: u64,
    /// nanoTON per adjusted token earned by workers.
    #[arg(long, default_value_t = 1)]
    pub worker_fee_per_token: u64,
    /// Fake-TON pseudo-balance of the devnet client, in adjusted tokens.
    #[arg(long, default_value_t = 1_000_000_000_000)]
    pub client_tokens: u64,
    /// Use fake-TON (no chain, a stand-in for TON) instead of the embedded TVM chain.
    #[arg(long)]
    pub fake_ton: bool,
    /// Proof-of-work difficulty of the proxy's ports (COCOON uses 20 in production).
    #[arg(long, default_value_t = 16)]
    pub pow_difficulty: u32,
}

fn fake_tdx() -> PolicyConfig {
    PolicyConfig::new(PolicyKind::FakeTdx)
}

fn attestation(tee: &str, key: Option<PathBuf>, pow: u32) -> AttestationConfig {
    AttestationConfig {
        tee: tee.into(),
        key_file: key,
        pow_difficulty: Some(pow),
        ..AttestationConfig::default()
    }
}

/// Runs the devnet until Ctrl-C.
pub async fn run(args: DevnetArgs) -> anyhow::Result<()> {
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    let keys = dir.join("keys");
    // What the workers serve: an upstream server, or the embedded engine.
    let (upstream, backend, serving) = match (&args.upstream, &args.model) {
        (Some(url), _) => (url.clone(), None, format!("upstream {url}")),
        (None, Some(model)) => (
            String::new(),
            Some(crate::roles::embedded_backend(model, None).await?),
            format!("embedded engine: {model}"),
        ),
        (None, None) => {
            let model = tiny_model(&dir)?.display().to_string();
            (
                String::new(),
                Some(crate::roles::embedded_backend(&model, Some(TINY_MODEL)).await?),
                "embedded engine: tiny random-weight Qwen3 (a stand-in for real weights; \
                 its answers are noise: pass --model or --upstream)"
                    .to_owned(),
            )
        }
    };
    let chain = ChainConfig {
        price_per_token: args.price_per_token,
        worker_fee_per_token: args.worker_fee_per_token,
        pseudo_client_tokens: args.client_tokens,
        ..ChainConfig::default()
    };

    let proxy_cfg = ProxyConfig {
        owner_address: devnet_address_text("devnet-proxy-owner"),
        client_listen: format!("127.0.0.1:{}", args.proxy_client_port),
        worker_listen: format!("127.0.0.1:{}", args.proxy_worker_port),
        http_listen: String::new(),
        db_path: dir.join("proxy-ledger.sqlite"),
        is_test: true,
        max_attempts: 3,
        attestation: attestation(
            "fake_tdx",
            Some(keys.join("proxy_key.pem")),
            args.pow_difficulty,
        ),
        client_policy: PolicyConfig::new(PolicyKind::Any),
        worker_policy: fake_tdx(),
        client_pow_difficulty: None,
        worker_pow_difficulty: None,
        chain: chain.clone(),
    };
    let (view, chain_name, root_address) = if args.fake_ton {
        (None, "fake-ton".to_owned(), String::new())
    } else {
        let (view, root) = local_chain(&dir, &keys, &args).await?;
        (Some(view), "local-tvm".to_owned(), root)
    };
    let proxy = runner::start_proxy(&proxy_cfg, view.as_ref())
        .await
        .context("starting the proxy")?;

    let mut workers = Vec::new();
    for i in 0..args.workers {
        let cfg = WorkerConfig {
            owner_address: devnet_address_text(&format!("devnet-worker-{i}")),
            upstream: upstream.clone(),
            model: String::new(),
            coefficient: args.coefficient,
            max_active_requests: 60,
            proxies: vec![proxy.worker_addr.to_string()],
            http_listen: String::new(),
            is_test: true,
            attestation: attestation(
                "fake_tdx",
                Some(keys.join(format!("worker_{i}_key.pem"))),
                args.pow_difficulty,
            ),
            proxy_policy: fake_tdx(),
            chain: chain.clone(),
        };
        workers.push(
            runner::start_worker(&cfg, backend.clone(), view.as_ref())
                .await
                .context("starting a worker")?,
        );
    }
    let model = workers[0].model.clone();

    let client_cfg = ClientConfig {
        owner_address: devnet_address_text("devnet-client"),
        http_listen: format!("127.0.0.1:{}", args.http_port),
        proxies: vec![proxy.client_addr.to_string()],
        secret_string: String::new(),
        is_test: true,
        default_max_coefficient: 4000,
        default_timeout: 120.0,
        attestation: attestation("none", None, args.pow_difficulty),
        proxy_policy: fake_tdx(),
        chain,
    };
    let client = runner::start_client(&client_cfg, view.as_ref())
        .await
        .context("starting the client")?;

    // Ready when every worker is routable and the client holds a session.
    let base = cocoon_node::request::base_model_name(&model).to_owned();
    let ready = async {
        loop {
            let workers_ready = proxy.proxy.ready_workers().get(&base).copied().unwrap_or(0);
            if workers_ready >= args.workers && !client.node.open_sessions().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), ready)
        .await
        .context("the network did not become ready within 60 s (see the log above)")?;

    let api = format!("http://{}/v1", client.http_addr);
    let info = json!({
        "client_api": api,
        "proxy_client_endpoint": proxy.client_addr.to_string(),
        "proxy_worker_endpoint": proxy.worker_addr.to_string(),
        "proxy_public_key": hex::encode(proxy.proxy.public_key()),
        "models": [base],
        "workers": args.workers,
        "serving": serving,
        "chain": chain_name,
        "root_address": root_address,
        "dir": dir.display().to_string(),
    });
    let info_path = dir.join("devnet.json");
    std::fs::write(&info_path, serde_json::to_vec_pretty(&info)?)
        .with_context(|| format!("writing {}", info_path.display()))?;

    println!("cocoon devnet is ready");
    println!("  OpenAI API:      {api}");
    println!("  model:           {base}");
    println!(
        "  proxy:           clients {} / workers {}",
        proxy.client_addr, proxy.worker_addr
    );
    println!("  workers:         {} serving {serving}", args.workers);
    println!("                   (fake TDX attestation: a stand-in for TDX hardware)");
    if args.fake_ton {
        println!("  chain:           fake-TON (no chain; a stand-in for TON)");
    } else {
        println!(
            "  chain:           embedded TVM chain running our contracts; root {root_address}"
        );
        println!("                   (prices and contract codes come from the root contract)");
    }
    println!("  state:           {}", dir.display());
    println!();
    println!("  curl {api}/chat/completions -H 'Content-Type: application/json' \\");
    println!("    -d '{{\"model\":\"{base}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}]}}'");
    println!();
    println!("Press Ctrl-C to stop.");

    shutdown_signal().await;
    info!("devnet stopping: draining workers");
    for w in &workers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w.worker.drain()).await;
    }
    println!("cocoon devnet stopped");
    Ok(())
}

/// Served name of the generated stand-in model.
const TINY_MODEL: &str = "tiny-random-qwen3";

/// Generates the devnet's stand-in model under `dir/models` (once).
#[cfg(feature = "engine")]
fn tiny_model(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    Ok(cocoon_node::engine_backend::ensure_tiny_model(
        &dir.join("models"),
    )?)
}

#[cfg(not(feature = "engine"))]
fn tiny_model(_dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    bail!(
        "this cocoon was built without the `engine` feature: pass --upstream URL (an \
         OpenAI-compatible server such as vLLM, SGLang, llama.cpp server or Ollama)"
    )
}

/// Opens (or creates at first start) the devnet's embedded TVM chain under `dir/chain`:
/// our root contract, owned by a devnet admin wallet, with the prices given on the
/// command line (they are fixed at genesis; a restart keeps the chain's). Returns the
/// root as the roles see it, read through the chain backend, and its address.
async fn local_chain(
    dir: &std::path::Path,
    keys: &std::path::Path,
    args: &DevnetArgs,
) -> anyhow::Result<(cocoon_node::chain::ChainView, String)> {
    use cocoon_ton::local::{GenesisConfig, GenesisRoot, GenesisWallet, LocalChain};
    let admin_key = cocoon_node::config::load_or_create_key(&keys.join("root_admin_key.pem"))?;
    let admin = GenesisWallet::new(
        admin_key.verifying_key().to_bytes(),
        cocoon_node::chain::devnet_address("devnet-root-owner"),
        100 * cocoon_ton::root::ONE_TON,
    );
    let mut root = GenesisRoot::devnet(admin.contract()?.address)?;
    root.config.params.price_per_token = args.price_per_token;
    root.config.params.worker_fee_per_token = args.worker_fee_per_token;
    let genesis = GenesisConfig {
        root: Some(root),
        wallets: vec![admin],
        ..GenesisConfig::default()
    };
    let chain = LocalChain::open_or_genesis(dir.join("chain"), genesis)
        .context("opening the devnet chain")?;
    let root_address = chain
        .root_address()
        .context("the devnet chain has no root contract")?;
    let view = cocoon_node::chain::ChainContext::from_chain(&chain, &root_address, true).await?;
    let text = view.context.format(&root_address);
    Ok((view, text))
}
