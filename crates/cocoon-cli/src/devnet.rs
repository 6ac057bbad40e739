//! `cocoon devnet`: a whole COCOON network in one process — chain, proxy, workers and
//! an OpenAI-compatible client — with all state under one directory.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use cocoon_attest::{PolicyConfig, PolicyKind};
use cocoon_node::chain::devnet_address_text;
use cocoon_node::config::{
    AttestationConfig, ChainConfig, ClientConfig, KeyManagerConfig, KeyManagerLink, ProxyConfig,
    WorkerConfig,
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
    /// Seconds to wait at start for --upstream's /v1/models to answer (the server may
    /// still be loading its weights). Every 5 s the devnet logs why it is waiting (e.g.
    /// "Connection refused"), how many tries so far and when it gives up; then it stops
    /// with the last error. 0 tries once.
    #[arg(long, default_value_t = cocoon_node::config::DEFAULT_UPSTREAM_WAIT_SECS, value_name = "SECONDS")]
    pub upstream_wait: u64,
    /// Run the workers on the embedded engine with this model instead of an upstream:
    /// a model directory (safetensors + tokenizer), a GGUF file or a Hugging Face id.
    /// Without --upstream and --model, a tiny random-weight Qwen3 is generated (a
    /// stand-in for real weights: the whole network runs, the answers are noise).
    #[arg(long, conflicts_with = "upstream")]
    pub model: Option<String>,
    /// Also serve speech to text (`/v1/audio/*`) with a Whisper model on one more worker
    /// (embedded engine): a model directory or Hugging Face id, or `tiny` for a generated
    /// tiny random-weight Whisper (a stand-in: the audio path runs, the words are noise).
    #[arg(long, value_name = "MODEL")]
    pub speech_model: Option<String>,
    /// Also serve embeddings (`/v1/embeddings`) with an embedding model on one more worker
    /// (embedded engine; Qwen3-Embedding layout), or `tiny` for a generated tiny
    /// random-weight one (a stand-in).
    #[arg(long, value_name = "MODEL")]
    pub embedding_model: Option<String>,
    /// Port of the OpenAI-compatible API (0 = any free port).
    #[arg(long, default_value_t = 10000)]
    pub http_port: u16,
    /// Port where the proxy accepts clients (0 = any free port).
    #[arg(long, default_value_t = 11002)]
    pub proxy_client_port: u16,
    /// Port where the proxy accepts workers (0 = any free port).
    #[arg(long, default_value_t = 11001)]
    pub proxy_worker_port: u16,
    /// Port where the key manager hands keys to the proxy (0 = any free port).
    #[arg(long, default_value_t = 13001)]
    pub key_manager_port: u16,
    /// Port of the chain's toncenter-compatible API (`http://127.0.0.1:PORT/api/v2`),
    /// what `cocoon wallet|root|client|worker|proxy --chain devnet` use while the devnet
    /// runs (0 = any free port).
    #[arg(long, default_value_t = 11003)]
    pub chain_api_port: u16,
    /// Directory for all state (keys, ledger); a restart with the same directory
    /// continues where it stopped.
    #[arg(long, default_value = DEFAULT_DIR)]
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
    /// What the client deposits into its contract, and tops up each time, in TON.
    #[arg(long, default_value = "10", value_parser = parse_ton_arg)]
    pub client_deposit: u64,
    /// Seconds between the proxy's on-chain anchors of its ledger (COCOON: 30–60); the
    /// devnet settles every anchored token at once (no thresholds).
    #[arg(long, default_value_t = 1)]
    pub anchor_interval: u64,
    /// Seconds a closing proxy contract waits before it may close (the root's
    /// proxy_delay_before_close; client contracts wait half of it). Fixed when the devnet
    /// chain is created. COCOON uses 600; the devnet closes old contracts within a minute
    /// after `cocoon root set-price` rotates them.
    #[arg(long, default_value_t = 60)]
    pub close_delay: u32,
}

/// The default `--dir` (of the devnet and of the money CLI).
pub const DEFAULT_DIR: &str = ".cocoon-devnet";

/// A text field of the devnet.json in `dir` (the devnet that runs or ran there).
pub(crate) fn info_text(dir: &std::path::Path, field: &str) -> Option<String> {
    let text = std::fs::read(dir.join("devnet.json")).ok()?;
    let info: serde_json::Value = serde_json::from_slice(&text).ok()?;
    info[field].as_str().map(str::to_owned)
}

fn parse_ton_arg(s: &str) -> Result<u64, String> {
    cocoon_ton::units::parse_ton(s).map_err(|e| e.to_string())
}

/// TON each devnet wallet gets at genesis.
const WALLET_FUNDS: u64 = 1000 * cocoon_ton::root::ONE_TON;

/// A devnet party's cocoon wallet: key file, owner and address.
struct DevnetWallet {
    name: String,
    key_file: PathBuf,
    owner: cocoon_ton::StdAddr,
    key: ed25519_dalek::SigningKey,
}

impl DevnetWallet {
    fn new(name: &str, key_file: PathBuf, owner_name: &str) -> anyhow::Result<Self> {
        let key = cocoon_node::config::load_or_create_key(&key_file)?;
        Ok(DevnetWallet {
            name: name.to_owned(),
            key_file,
            owner: cocoon_node::chain::devnet_address(owner_name),
            key,
        })
    }

    fn wallet(&self) -> anyhow::Result<cocoon_ton::wallet::CocoonWallet> {
        Ok(cocoon_ton::wallet::CocoonWallet::new(
            self.key.clone(),
            self.owner.clone(),
            &cocoon_ton::local::codes::wallet_code()?,
        )?)
    }
}

fn fake_tdx() -> PolicyConfig {
    PolicyConfig::new(PolicyKind::FakeTee)
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
    check_ports(&planned_ports(&args))?;
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
    // Workers beyond the main model's: speech and embeddings, on the embedded engine.
    let extras = extra_backends(&dir, &args).await?;
    let total_workers = args.workers + extras.len();
    let chain = ChainConfig {
        price_per_token: args.price_per_token,
        worker_fee_per_token: args.worker_fee_per_token,
        pseudo_client_tokens: args.client_tokens,
        ..ChainConfig::default()
    };
    // The parties' cocoon wallets (the proxy's is its node key, as COCOON's).
    let mut wallets = vec![
        DevnetWallet::new(
            "root-admin",
            keys.join("root_admin_key.pem"),
            "devnet-root-owner",
        )?,
        DevnetWallet::new("proxy", keys.join("proxy_key.pem"), "devnet-proxy-owner")?,
        DevnetWallet::new(
            "key-manager",
            keys.join("key_manager_key.pem"),
            "devnet-key-manager-owner",
        )?,
        DevnetWallet::new(
            "client",
            keys.join("client_wallet_key.pem"),
            "devnet-client",
        )?,
    ];
    for i in 0..total_workers {
        wallets.push(DevnetWallet::new(
            &format!("worker-{i}"),
            keys.join(format!("worker_{i}_wallet_key.pem")),
            &format!("devnet-worker-{i}"),
        )?);
    }

    let proxy_cfg = ProxyConfig {
        owner_address: devnet_address_text("devnet-proxy-owner"),
        client_listen: format!("127.0.0.1:{}", args.proxy_client_port),
        worker_listen: format!("127.0.0.1:{}", args.proxy_worker_port),
        // Its stats and demand (`cocoon worker demand`), on loopback.
        http_listen: "127.0.0.1:0".into(),
        http_access_hash: None,
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
        key_manager: None,
    };
    let (view, chain_name, root_address, local) = if args.fake_ton {
        (None, "fake-ton".to_owned(), String::new(), None)
    } else {
        let (view, root, local) = local_chain(&dir, &wallets, &args).await?;
        (Some(view), "local-tvm".to_owned(), root, Some(local))
    };
    let chain_api = match &local {
        Some(local) => Some(serve_chain_api(local.clone(), args.chain_api_port).await?),
        None => None,
    };
    // The key manager: the root names it (its machine key and address), it issues the
    // keys apps encrypt to and registers them on the root; the proxy follows it.
    let km_key = &wallets[2];
    let km_planned = format!("127.0.0.1:{}", args.key_manager_port);
    if let Some(local) = &local {
        register_key_manager(local, &wallets[0], &km_key.key, &km_planned)?;
    }
    let km = runner::start_key_manager(
        &KeyManagerConfig {
            owner_address: devnet_address_text("devnet-key-manager-owner"),
            listen: km_planned.clone(),
            http_listen: String::new(),
            db_path: dir.join("key-manager.sqlite"),
            is_test: true,
            rotation_secs: 3600,
            lifetime_secs: 86_400,
            attestation: attestation(
                "fake_tdx",
                Some(km_key.key_file.clone()),
                args.pow_difficulty,
            ),
            caller_policy: fake_tdx(),
            // Fake TDX images have no hash the root could list.
            check_root_hashes: Some(false),
            chain: chain.clone(),
        },
        view.as_ref(),
    )
    .await
    .context("starting the key manager (its port is set by --key-manager-port)")?;
    if let Some(local) = &local {
        if km.addr.to_string() != km_planned {
            register_key_manager(local, &wallets[0], &km_key.key, &km.addr.to_string())?;
        }
    }
    let proxy_cfg = ProxyConfig {
        key_manager: Some(KeyManagerLink {
            address: km.addr.to_string(),
            poll_secs: 5,
            policy: fake_tdx(),
        }),
        ..proxy_cfg
    };
    let proxy = runner::start_proxy(&proxy_cfg, view.as_ref())
        .await
        .context(
            "starting the proxy (its ports are set by --proxy-client-port and \
             --proxy-worker-port)",
        )?;
    if let Some(local) = &local {
        let info = format!("{} {}", proxy.worker_addr, proxy.client_addr);
        if let Err(e) = register_proxy(local, &wallets[0], &info) {
            tracing::warn!(
                error = %format!("{e:#}"),
                "cannot register the proxy in the root contract; `cocoon root show` will not \
                 list it (the devnet's roles connect to it directly and work regardless)"
            );
        }
    }

    let mut workers = Vec::new();
    for i in 0..total_workers {
        let (upstream, backend) = match i.checked_sub(args.workers) {
            None => (upstream.clone(), backend.clone()),
            Some(extra) => (String::new(), Some(extras[extra].backend.clone())),
        };
        let cfg = WorkerConfig {
            owner_address: devnet_address_text(&format!("devnet-worker-{i}")),
            upstream,
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
            voucher_dir: Some(dir.join(format!("worker-{i}")).join("vouchers")),
            upstream_wait_secs: args.upstream_wait,
            change_model_script: None,
            change_model_timeout_secs: 600,
            check_model_hashes: None,
        };
        workers.push(
            runner::start_worker(&cfg, backend, view.as_ref())
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
        chain: ChainConfig {
            wallet_key_file: Some(keys.join("client_wallet_key.pem")),
            ..chain
        },
        batch: Some(cocoon_node::config::BatchConfig::in_dir(
            dir.join("batches"),
        )),
        api_keys: Some(dir.join("client-keys.sqlite")),
        public_without_keys: false,
    };
    let client = runner::start_client(&client_cfg, view.as_ref())
        .await
        .with_context(|| {
            format!(
                "starting the client (its OpenAI API port is set by --http-port, now {})",
                args.http_port
            )
        })?;

    // Ready when every worker is routable and the client holds a session.
    let base = cocoon_node::protocol::http::base_model_name(&model).to_owned();
    let ready = async {
        loop {
            let ready = proxy.proxy.ready_workers();
            let workers_ready = ready.get(&base).copied().unwrap_or(0);
            let extras_ready = extras
                .iter()
                .all(|e| ready.get(&e.name).copied().unwrap_or(0) >= 1);
            if workers_ready >= args.workers
                && extras_ready
                && !client.node.open_sessions().is_empty()
                && !proxy.proxy.keys().is_empty()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), ready)
        .await
        .is_err()
    {
        // Say which part is missing.
        let ready = proxy.proxy.ready_workers();
        let missing: Vec<String> = extras
            .iter()
            .filter(|e| ready.get(&e.name).copied().unwrap_or(0) == 0)
            .map(|e| e.name.clone())
            .collect();
        bail!(
            "the network did not become ready within 60 s (see the log above): {} of {} workers \
             of {base} ready{}, client session to the proxy: {}, encryption keys held: {}",
            ready.get(&base).copied().unwrap_or(0),
            args.workers,
            if missing.is_empty() {
                String::new()
            } else {
                format!(", no ready worker of {}", missing.join(", "))
            },
            if client.node.open_sessions().is_empty() {
                "none"
            } else {
                "open"
            },
            proxy.proxy.keys().len(),
        );
    }

    let api = format!("http://{}/v1", client.http_addr);
    let text = |a: &cocoon_ton::StdAddr| cocoon_ton::address::to_friendly(a, true);
    let mut wallet_info = serde_json::Map::new();
    for w in &wallets {
        wallet_info.insert(
            w.name.clone(),
            json!({
                "key_file": w.key_file.display().to_string(),
                "owner": text(&w.owner),
                "address": text(w.wallet()?.address()),
            }),
        );
    }
    let proxy_sc = proxy.proxy.sc_address();
    let (voucher_root, worker_count) = (dir.clone(), total_workers);
    let worker_vouchers = move |proxy_sc: &str| -> serde_json::Map<String, serde_json::Value> {
        (0..worker_count)
            .map(|i| {
                let path = cocoon_node::worker::Worker::voucher_path(
                    &voucher_root.join(format!("worker-{i}")).join("vouchers"),
                    proxy_sc,
                );
                (format!("worker-{i}"), json!(path.display().to_string()))
            })
            .collect()
    };
    let mut info = json!({
        "client_api": api,
        "proxy_client_endpoint": proxy.client_addr.to_string(),
        "proxy_worker_endpoint": proxy.worker_addr.to_string(),
        "proxy_public_key": hex::encode(proxy.proxy.public_key()),
        // The proxy's stats port: /metrics, /jsonstats, /demand.
        "proxy_http": proxy.http_addr.map(|a| format!("http://{a}")),
        "key_manager": {
            "endpoint": km.addr.to_string(),
            "machine_key": hex::encode(km.key_manager.public_key()),
        },
        // What apps encrypt requests to (`cocoon encrypt --to`); each valid a day, a new
        // one hourly (`cocoon root show` lists the current ones).
        "encryption_keys": proxy.proxy.keys().public_keys().iter()
            .map(|(k, _)| hex::encode(k)).collect::<Vec<_>>(),
        "models": std::iter::once(base.clone())
            .chain(extras.iter().map(|e| e.name.clone()))
            .collect::<Vec<_>>(),
        // Workers of the main model; `extra_workers` serve the other kinds.
        "workers": args.workers,
        "extra_workers": extras.iter()
            .map(|e| json!({"model": e.name, "serves": e.serves}))
            .collect::<Vec<_>>(),
        "serving": serving,
        "chain": chain_name,
        "root_address": root_address,
        "chain_api": chain_api,
        "proxy_sc_address": proxy_sc,
        "params_version": proxy.proxy.params_version(),
        "wallets": wallet_info,
        "worker_vouchers": worker_vouchers(&proxy_sc),
        "dir": dir.display().to_string(),
    });
    let info_path = dir.join("devnet.json");
    std::fs::write(&info_path, serde_json::to_vec_pretty(&info)?)
        .with_context(|| format!("writing {}", info_path.display()))?;
    // A root parameter change moves the proxy to a new contract: keep devnet.json true.
    let mut rotations = proxy.proxy.rotations();
    let rotating_proxy = proxy.proxy.clone();
    let rotating_path = info_path.clone();
    let vouchers_of = worker_vouchers.clone();
    let _info_task = tokio::spawn(async move {
        while rotations.changed().await.is_ok() {
            let sc = rotating_proxy.sc_address();
            info["proxy_sc_address"] = json!(sc);
            info["params_version"] = json!(rotating_proxy.params_version());
            info["worker_vouchers"] = json!(vouchers_of(&sc));
            let written = serde_json::to_vec_pretty(&info)
                .map_err(|e| e.to_string())
                .and_then(|b| std::fs::write(&rotating_path, b).map_err(|e| e.to_string()));
            match written {
                Ok(()) => {
                    info!(proxy_sc = %sc, "devnet.json updated after a root parameter change")
                }
                Err(e) => tracing::warn!(error = %e, "cannot update devnet.json"),
            }
        }
    });

    println!("cocoon devnet is ready");
    println!("  OpenAI API:      {api}");
    println!("  model:           {base}");
    println!(
        "  proxy:           clients {} / workers {}",
        proxy.client_addr, proxy.worker_addr
    );
    println!("  workers:         {} serving {serving}", args.workers);
    for e in &extras {
        println!("                   1 serving {} ({})", e.name, e.serves);
    }
    println!(
        "  key manager:     {} (keys for end-to-end encryption: devnet.json encryption_keys)",
        km.addr
    );
    println!("                   (fake TDX attestation: a stand-in for TDX hardware)");
    if args.fake_ton {
        println!("  chain:           fake-TON (no chain; a stand-in for TON)");
    } else {
        println!(
            "  chain:           embedded TVM chain running our contracts; root {root_address}"
        );
        println!("                   (prices and contract codes come from the root contract)");
        if let Some(url) = &chain_api {
            println!("  chain API:       {url} (toncenter v2 subset)");
        }
    }
    println!("  state:           {}", dir.display());
    println!(
        "  batches:         cocoon batch run INPUT.jsonl -o OUTPUT.jsonl (OpenAI Batch API; files in {})",
        dir.join("batches").display()
    );
    if !args.fake_ton {
        let d = dir_flag(&args.dir, &dir);
        println!("  money:           cocoon client balance{d}");
        println!("                   cocoon worker balance --wallet worker-0{d}");
        println!("                   cocoon proxy balance{d}");
        println!("                   cocoon root show{d}");
        println!("                   cocoon wallet show --wallet client{d}");
    }
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
    if let Some(settlement) = proxy.proxy.settlement() {
        println!("settling on chain before stopping…");
        match settlement.settle_all(Duration::from_secs(60)).await {
            Ok(()) => {
                println!("settled: every client charged, every worker paid, commission withdrawn")
            }
            Err(e) => println!("not fully settled ({e}); the next start continues"),
        }
    }
    if let Some(local) = &local {
        // Every change is persisted as it happens; this only checks the books.
        match local.supply() {
            Ok(s) if s.is_conserved() => info!("chain state saved; value conserved"),
            Ok(s) => tracing::warn!(?s, "chain value not conserved"),
            Err(e) => tracing::warn!(error = %e, "cannot read the chain supply"),
        }
    }
    println!("cocoon devnet stopped");
    Ok(())
}

/// Serves the chain's toncenter-compatible API on 127.0.0.1:`port`; returns its base URL.
async fn serve_chain_api(
    chain: std::sync::Arc<cocoon_ton::local::LocalChain>,
    port: u16,
) -> anyhow::Result<String> {
    let router = axum::Router::new().nest("/api/v2", cocoon_ton::toncenter::server::router(chain));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| {
            format!("cannot listen on 127.0.0.1:{port} for the chain API (--chain-api-port)")
        })?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!(error = %e, "chain API stopped");
        }
    });
    Ok(format!("http://{addr}/api/v2"))
}

/// A worker beside the main model's: its backend, served name and endpoints.
struct ExtraWorker {
    backend: std::sync::Arc<dyn cocoon_node::worker::backend::InferenceBackend>,
    name: String,
    serves: &'static str,
}

/// The backends of `--speech-model` and `--embedding-model` (`tiny`: generated stand-ins).
async fn extra_backends(
    dir: &std::path::Path,
    args: &DevnetArgs,
) -> anyhow::Result<Vec<ExtraWorker>> {
    let mut out = Vec::new();
    for (model, serves) in [
        (
            &args.speech_model,
            "/v1/audio/transcriptions, /v1/audio/translations",
        ),
        (&args.embedding_model, "/v1/embeddings"),
    ] {
        let Some(model) = model else { continue };
        let speech = serves.starts_with("/v1/audio");
        let (path, name) = if model == "tiny" {
            let (path, name) = tiny_extra(dir, speech)?;
            (path.display().to_string(), Some(name))
        } else {
            (model.clone(), None)
        };
        let backend = crate::roles::embedded_backend(&path, name).await?;
        out.push(ExtraWorker {
            backend,
            name: name.unwrap_or(model).to_owned(),
            serves,
        });
    }
    Ok(out)
}

/// Generates the tiny speech (or embedding) stand-in under `dir/models` (once).
#[cfg(feature = "engine")]
fn tiny_extra(dir: &std::path::Path, speech: bool) -> anyhow::Result<(PathBuf, &'static str)> {
    use cocoon_node::worker::engine_backend::{ensure_tiny, TinyModel};
    let kind = if speech {
        TinyModel::Speech
    } else {
        TinyModel::Embedding
    };
    Ok((ensure_tiny(&dir.join("models"), kind)?, kind.name()))
}

#[cfg(not(feature = "engine"))]
fn tiny_extra(_dir: &std::path::Path, _speech: bool) -> anyhow::Result<(PathBuf, &'static str)> {
    bail!("this cocoon was built without the `engine` feature: no tiny stand-in models")
}

/// Served name of the generated stand-in model.
const TINY_MODEL: &str = "tiny-random-qwen3";

/// Generates the devnet's stand-in model under `dir/models` (once).
#[cfg(feature = "engine")]
fn tiny_model(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    Ok(cocoon_node::worker::engine_backend::ensure_tiny_model(
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
/// our root contract, owned by the devnet admin wallet, with the prices given on the
/// command line (they are fixed at genesis; a restart keeps the chain's), and every
/// party's cocoon wallet funded. Returns the root as the roles see it (read through the
/// chain backend, with on-chain settlement), its address and the chain.
async fn local_chain(
    dir: &std::path::Path,
    wallets: &[DevnetWallet],
    args: &DevnetArgs,
) -> anyhow::Result<(
    cocoon_node::chain::ChainView,
    String,
    std::sync::Arc<cocoon_ton::local::LocalChain>,
)> {
    use cocoon_ton::local::{GenesisConfig, GenesisRoot, GenesisWallet, LocalChain};
    let genesis_wallets: Vec<GenesisWallet> = wallets
        .iter()
        .map(|w| {
            GenesisWallet::new(
                w.key.verifying_key().to_bytes(),
                w.owner.clone(),
                WALLET_FUNDS,
            )
        })
        .collect();
    let admin = genesis_wallets
        .first()
        .context("the devnet has no root admin wallet")?;
    let mut root = GenesisRoot::devnet(admin.contract()?.address)?;
    root.config.params.price_per_token = args.price_per_token;
    root.config.params.worker_fee_per_token = args.worker_fee_per_token;
    root.config.params.proxy_delay_before_close = args.close_delay;
    root.config.params.client_delay_before_close = args.close_delay / 2;
    let genesis = GenesisConfig {
        root: Some(root),
        wallets: genesis_wallets,
        ..GenesisConfig::default()
    };
    let chain = std::sync::Arc::new(
        LocalChain::open_or_genesis(dir.join("chain"), genesis)
            .context("opening the devnet chain")?,
    );
    // A chain made before a wallet existed (e.g. more workers now): fund it from the faucet.
    for w in wallets {
        let address = w.wallet()?.address().clone();
        if chain.balance(&address)? == 0 {
            chain
                .fund(&address, WALLET_FUNDS)
                .with_context(|| format!("funding the {} wallet", w.name))?;
        }
    }
    let root_address = chain
        .root_address()
        .context("the devnet chain has no root contract")?;
    let mut view =
        cocoon_node::chain::ChainContext::from_chain(chain.as_ref(), &root_address, true).await?;
    view.settlement = Some(cocoon_node::chain::SettlementChain {
        backend: chain.clone(),
        wallet_code: cocoon_ton::local::codes::wallet_code()?,
        policy: cocoon_node::chain::wallet::SettlementPolicy {
            anchor_interval: Duration::from_secs(args.anchor_interval.max(1)),
            client_deposit: args.client_deposit,
            ..cocoon_node::chain::wallet::SettlementPolicy::devnet()
        },
    });
    let text = view.context.format(&root_address);
    Ok((view, text, chain))
}

/// The `--dir` argument the money CLI needs to find this devnet: none for the default
/// directory, else ` --dir <the devnet's directory>` (absolute, quoted for a shell when
/// it has to be), so that the printed commands work as they are.
pub fn dir_flag(given: &std::path::Path, canonical: &std::path::Path) -> String {
    if given == std::path::Path::new(DEFAULT_DIR) {
        return String::new();
    }
    format!(" --dir {}", shell_word(&canonical.display().to_string()))
}

/// `text` as one POSIX shell word: as it is when it is plain, else single-quoted.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// A port the devnet binds on 127.0.0.1, and the flag that sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPort {
    /// The flag, e.g. `--http-port`.
    pub flag: &'static str,
    /// The port; 0 means any free port.
    pub port: u16,
}

/// Every port this devnet will bind, with its flag.
fn planned_ports(args: &DevnetArgs) -> Vec<PlannedPort> {
    let mut ports = vec![
        PlannedPort {
            flag: "--http-port",
            port: args.http_port,
        },
        PlannedPort {
            flag: "--proxy-client-port",
            port: args.proxy_client_port,
        },
        PlannedPort {
            flag: "--proxy-worker-port",
            port: args.proxy_worker_port,
        },
        PlannedPort {
            flag: "--key-manager-port",
            port: args.key_manager_port,
        },
    ];
    if !args.fake_ton {
        ports.push(PlannedPort {
            flag: "--chain-api-port",
            port: args.chain_api_port,
        });
    }
    ports
}

/// Checks, before anything starts, that every port in `ports` can be bound on
/// 127.0.0.1 and that no two flags ask for the same one; reports every conflict at once,
/// each with the flag that sets it. Port 0 (any free port) never conflicts.
pub fn check_ports(ports: &[PlannedPort]) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        if p.port == 0 {
            continue;
        }
        if let Some(first) = ports[..i].iter().find(|q| q.port == p.port) {
            problems.push(format!(
                "{} {}: the same port as {} {}",
                p.flag, p.port, first.flag, first.port
            ));
            continue;
        }
        // Bound and closed at once: only whether it can be bound matters here.
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", p.port)) {
            problems.push(format!(
                "{} {}: cannot listen on 127.0.0.1:{}: {e}",
                p.flag, p.port, p.port
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "cannot start the devnet: {} of its ports cannot be used:\n  {}\npass free ports with \
         these flags (0 = any free port), or stop what holds them",
        problems.len(),
        problems.join("\n  ")
    )
}

/// Registers the devnet proxy in the root contract (`root_register_proxy`, sent by the
/// root's owner, the devnet's `root-admin` wallet) as `info`
/// (`"IP:PORT_FOR_WORKERS IP:PORT_FOR_CLIENTS"`), as COCOON's root owner registers each
/// proxy, so that `cocoon root show` lists it. Nothing is sent when the root lists `info`
/// already; an entry of an earlier run (other ports) is updated in place
/// (`root_update_proxy`), so restarts do not pile up stale entries.
fn register_proxy(
    chain: &cocoon_ton::local::LocalChain,
    admin: &DevnetWallet,
    info: &str,
) -> anyhow::Result<()> {
    use cocoon_ton::messages::Body;
    let before = chain.root_config()?;
    if before.registered_proxies.iter().any(|p| p.address == info) {
        return Ok(());
    }
    if admin.wallet()?.address() != &before.owner {
        bail!("the root's owner is not the devnet's root-admin wallet");
    }
    // An entry of an earlier run of this devnet: both its endpoints on this machine's
    // loopback, as only the devnet registers them.
    let earlier = before
        .registered_proxies
        .iter()
        .rev()
        .find(|p| {
            p.address.split(' ').count() == 2
                && p.address.split(' ').all(|e| e.starts_with("127.0.0.1:"))
        })
        .map(|p| p.seqno);
    let query_id = rand::random();
    let body = match earlier {
        Some(seqno) => Body::RootUpdateProxy {
            query_id,
            seqno,
            info: info.to_owned(),
        },
        None => Body::RootRegisterProxy {
            query_id,
            info: info.to_owned(),
        },
    };
    send_as_admin(chain, admin, &body)?;
    let after = chain.root_config()?;
    if !after.registered_proxies.iter().any(|p| p.address == info) {
        bail!("the root accepted the message but does not list {info:?}");
    }
    info!(proxy = info, "proxy registered in the root contract");
    Ok(())
}

/// Sends `body` to the root from the devnet's `root-admin` wallet (the root's owner) and
/// fails unless every transaction succeeded.
fn send_as_admin(
    chain: &cocoon_ton::local::LocalChain,
    admin: &DevnetWallet,
    body: &cocoon_ton::messages::Body,
) -> anyhow::Result<()> {
    let root = chain
        .root_address()
        .context("the devnet chain has no root contract")?;
    let wallet = admin.wallet()?;
    let msg = cocoon_ton::settlement::body_message(root, cocoon_ton::root::ONE_TON / 2, body)?;
    let seqno = match chain
        .get_method(wallet.address(), "seqno", vec![])?
        .stack
        .as_slice()
    {
        [cocoon_ton::chain::StackValue::Int(s)] => u32::try_from(*s)?,
        other => bail!("the root-admin wallet's seqno reads {other:?}"),
    };
    let mode = cocoon_ton::wallet::cocoon_send_mode(msg.value);
    let ext = wallet.external_message(seqno, chain.time().saturating_add(600), &[(mode, msg)])?;
    let report = chain.execute_external(&ext.to_boc()?)?;
    if !report.all_succeeded() {
        bail!("the root refused the message: {report:?}");
    }
    Ok(())
}

/// Names the devnet's key manager in the root (`root_change_key_manager`: its machine key,
/// no image hash (fake TDX), and `address`), unless the root names it so already.
fn register_key_manager(
    chain: &cocoon_ton::local::LocalChain,
    admin: &DevnetWallet,
    machine: &ed25519_dalek::SigningKey,
    address: &str,
) -> anyhow::Result<()> {
    let public_key = machine.verifying_key().to_bytes();
    let before = chain.root_config()?;
    if before.params.struct_version < 4 {
        bail!(
            "this devnet's chain was made with a root at struct_version {}, which has no key \
             manager; start over with a fresh --dir",
            before.params.struct_version
        );
    }
    let km = &before.key_manager;
    if km.public_key == public_key && km.address.as_deref() == Some(address) {
        return Ok(());
    }
    send_as_admin(
        chain,
        admin,
        &cocoon_ton::messages::Body::RootChangeKeyManager {
            query_id: rand::random(),
            public_key,
            image_hash: [0; 32],
            address: address.to_owned(),
        },
    )
    .context("naming the key manager in the root")?;
    info!(
        key_manager = address,
        "key manager named in the root contract"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_hints_name_the_dir_unless_it_is_the_default() {
        let canonical = std::path::Path::new("/home/me/.cocoon-devnet");
        assert_eq!(dir_flag(std::path::Path::new(DEFAULT_DIR), canonical), "");
        assert_eq!(
            dir_flag(
                std::path::Path::new("other"),
                std::path::Path::new("/tmp/other")
            ),
            " --dir /tmp/other"
        );
        assert_eq!(
            dir_flag(
                std::path::Path::new("x"),
                std::path::Path::new("/tmp/my devnet's")
            ),
            " --dir '/tmp/my devnet'\\''s'"
        );
    }

    #[test]
    fn every_taken_port_is_reported_with_its_flag_and_zero_never_conflicts() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let free = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let ports = [
            PlannedPort {
                flag: "--http-port",
                port,
            },
            PlannedPort {
                flag: "--proxy-client-port",
                port: 0,
            },
            PlannedPort {
                flag: "--proxy-worker-port",
                port: 0,
            },
            PlannedPort {
                flag: "--chain-api-port",
                port: free,
            },
            PlannedPort {
                flag: "--other-port",
                port: free,
            },
        ];
        let err = check_ports(&ports).expect_err("conflicts").to_string();
        assert!(err.contains(&format!("--http-port {port}")), "{err}");
        assert!(
            err.contains(&format!(
                "--other-port {free}: the same port as --chain-api-port"
            )),
            "{err}"
        );
        assert!(!err.contains("--proxy-client-port"), "{err}");
        assert!(err.contains("2 of its ports"), "{err}");
        let zeros = [
            PlannedPort {
                flag: "--http-port",
                port: 0,
            },
            PlannedPort {
                flag: "--chain-api-port",
                port: 0,
            },
        ];
        assert!(check_ports(&zeros).is_ok());
    }
}
