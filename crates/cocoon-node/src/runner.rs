//! Starting each role from its configuration: attested ports, proxy links, the role's
//! HTTP endpoints. Used by `cocoon proxy|worker|client` and by `cocoon devnet`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use cocoon_net::ConnectionConfig;
use serde_json::json;
use tracing::{info, warn};

use crate::chain::{ChainContext, ChainView, RootWatch};
use crate::client::gateway::{ClientNode, GatewaySettings};
use crate::client::ClientSettings;
use crate::config::{ChainConfig, ClientConfig, ConfigError, ProxyConfig, WorkerConfig};
use crate::ledger::Ledger;
use crate::metrics::MetricsText;
use crate::proxy::{Proxy, ProxySettings, ProxyStart};
use crate::transport::Listener;
use crate::worker::backend::{HttpUpstream, InferenceBackend};
use crate::worker::{Worker, WorkerSettings};

/// Why a role could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The ledger could not be opened.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    /// The backend (the model server at `upstream`, or the embedded engine) is
    /// unusable; the message names which.
    #[error("{0}")]
    Backend(String),
    /// The chain could not be used (wallet, contract deployment).
    #[error("chain: {0}")]
    Chain(String),
}

/// The key of the role's cocoon wallet: `[chain] wallet_key_file`, else the node key.
fn wallet_key(
    table: &ChainConfig,
    node_key: &ed25519_dalek::SigningKey,
) -> Result<ed25519_dalek::SigningKey, StartError> {
    match &table.wallet_key_file {
        Some(path) => Ok(crate::config::load_or_create_key(path)?),
        None => Ok(node_key.clone()),
    }
}

/// The chain the role works against, and the root config version it runs on: `chain`
/// when given (e.g. the devnet's embedded TVM chain), else the `[chain]` table: a
/// toncenter API (`mode = "toncenter"`), COCOON's fake-TON file, or fake-TON.
async fn chain_view(
    table: &ChainConfig,
    is_test: bool,
    chain: Option<&ChainView>,
) -> Result<(ChainView, i32), StartError> {
    let (view, config_version) = match chain {
        Some(view) => (view.clone(), table.config_version),
        None if table.mode == "toncenter" => {
            (toncenter_view(table, is_test).await?, table.config_version)
        }
        None if table.fake_ton_file.is_some() => fake_ton_file_view(table)?,
        None => {
            let prices = table.prices()?;
            let context = ChainContext::fake(&prices, is_test)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            let view = ChainView {
                context,
                prices,
                settlement: None,
                model_hashes: Vec::new(),
            };
            return Ok((view, table.config_version));
        }
    };
    if view.context.is_test() != is_test {
        return Err(ConfigError::Invalid(format!(
            "is_test = {is_test}, but the root contract is {} deployment",
            if view.context.is_test() {
                "a test"
            } else {
                "a production"
            }
        ))
        .into());
    }
    Ok((view, config_version))
}

/// Fake-TON on COCOON's own root file (shared with official roles started on it), and the
/// file's config version.
fn fake_ton_file_view(table: &ChainConfig) -> Result<(ChainView, i32), StartError> {
    let Some(path) = &table.fake_ton_file else {
        return Err(ConfigError::Invalid("no fake_ton_file".into()).into());
    };
    let pseudo =
        crate::chain::PseudoRoot::load(path).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let root = table.root_address.as_deref().ok_or_else(|| {
        ConfigError::Invalid(
            "[chain] fake_ton_file needs root_address: the root contract the official roles' \
             configs name as root_contract_address"
                .into(),
        )
    })?;
    // The root address is written for the network every address is written for (COCOON
    // compares address texts, flags included).
    let (root, flags) = cocoon_ton::address::parse(root)
        .map_err(|e| ConfigError::Invalid(format!("[chain] root_address {root:?}: {e}")))?;
    let view = pseudo
        .view(root, flags.testnet)
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Ok((view, pseudo.version))
}

/// A real network through toncenter: the root read from the chain, settlement with
/// COCOON's own cocoon wallet code and its thresholds.
async fn toncenter_view(table: &ChainConfig, is_test: bool) -> Result<ChainView, StartError> {
    let url = table.toncenter_url.clone().unwrap_or_else(|| {
        if is_test {
            cocoon_ton::toncenter::TESTNET_URL.to_owned()
        } else {
            cocoon_ton::toncenter::MAINNET_URL.to_owned()
        }
    });
    let root_text = table.root_address.as_deref().ok_or_else(|| {
        ConfigError::Invalid("[chain] mode = \"toncenter\" needs root_address".into())
    })?;
    let root = cocoon_ton::address::parse(root_text)
        .map_err(|e| ConfigError::Invalid(format!("[chain] root_address: {e}")))?
        .0;
    let backend: Arc<dyn cocoon_ton::chain::ChainBackend> = Arc::new(
        cocoon_ton::toncenter::TonCenter::new(&url, table.api_key.clone())
            .map_err(|e| StartError::Chain(format!("{url}: {e}")))?,
    );
    let mut view = ChainContext::from_chain(backend.as_ref(), &root, is_test)
        .await
        .map_err(|e| StartError::Chain(e.to_string()))?;
    view.settlement = Some(crate::chain::SettlementChain {
        backend,
        wallet_code: cocoon_ton::wallet::official_cocoon_wallet_code()
            .map_err(|e| StartError::Chain(e.to_string()))?,
        policy: crate::chain::wallet::SettlementPolicy::default(),
    });
    Ok(view)
}

/// The root parameters as they change: on a chain, the root is read every
/// `root_poll_interval` for as long as any clone of the watch lives (§5.7).
fn watch_root(view: &ChainView) -> RootWatch {
    let watch = RootWatch::new(view.clone());
    if let Some(settlement) = &view.settlement {
        // The poller holds only a weak reference: it stops when the watch is dropped.
        drop(watch.spawn_polling(settlement.policy.root_poll_interval));
    }
    watch
}

async fn serve_http(addr: &str, router: Router) -> Result<Option<SocketAddr>, StartError> {
    if addr.is_empty() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: addr.to_owned(),
            source,
        })?;
    let bound = listener.local_addr().ok();
    tokio::spawn(crate::http_server::serve(listener, router));
    Ok(bound)
}

/// A running proxy and its bound addresses.
#[derive(Debug)]
pub struct RunningProxy {
    /// The proxy.
    pub proxy: Proxy,
    /// Where clients connect.
    pub client_addr: SocketAddr,
    /// Where workers connect.
    pub worker_addr: SocketAddr,
    /// The stats/metrics HTTP address, if enabled.
    pub http_addr: Option<SocketAddr>,
}

/// Keeps the root configuration the proxy runs on in its ledger, as COCOON 9060ce5's proxy
/// does (`rootConfig.configV7`): on a chain it is read now and on every root poll (keys
/// change hourly); from COCOON's fake-TON file once. Plain fake-TON has none.
fn keep_root_config(table: &ChainConfig, view: &ChainView, ledger: Arc<Ledger>) {
    let testnet = view.context.is_testnet();
    let store = move |cfg: &cocoon_ton::root::RootConfig, ledger: &Ledger| {
        let v7 = crate::chain::config_v7::to_config_v7(cfg, testnet);
        match ledger.save_root_config(&v7) {
            Ok(true) => info!(version = cfg.version, "root configuration stored"),
            Ok(false) => {}
            Err(e) => warn!(error = %e, "cannot store the root configuration"),
        }
    };
    match (&view.settlement, &table.fake_ton_file) {
        (Some(chain), _) => {
            let (backend, root) = (chain.backend.clone(), view.context.root().clone());
            let interval = chain.policy.root_poll_interval;
            tokio::spawn(async move {
                loop {
                    match cocoon_ton::chain::read_root_config(backend.as_ref(), &root).await {
                        Ok(cfg) => store(&cfg, &ledger),
                        Err(e) => warn!(error = %e, "cannot read the root configuration"),
                    }
                    tokio::time::sleep(interval).await;
                }
            });
        }
        (None, Some(path)) => match cocoon_ton::pseudo::root_config_from_file(path) {
            Ok(cfg) => store(&cfg, &ledger),
            Err(e) => warn!(error = %e, "cannot read the fake-TON root file for the ledger"),
        },
        (None, None) => {}
    }
}

/// Starts a proxy from its configuration.
pub async fn start_proxy(
    cfg: &ProxyConfig,
    chain: Option<&ChainView>,
) -> Result<RunningProxy, StartError> {
    let (view, config_version) = chain_view(&cfg.chain, cfg.is_test, chain).await?;
    let prices = view.prices;
    let mut identity = cfg.attestation.identity()?;
    identity.spawn_renewal();
    if let Some(dir) = cfg.db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| ConfigError::Read {
            path: dir.to_owned(),
            source,
        })?;
    }
    let ledger = Arc::new(Ledger::open(&cfg.db_path, &identity.key)?);
    let settlement = match &view.settlement {
        None => None,
        Some(chain) => {
            let owner = view
                .context
                .parse_address(&cfg.owner_address)
                .map_err(|e| ConfigError::Invalid(format!("owner_address: {e}")))?;
            let key = wallet_key(&cfg.chain, &identity.key)?;
            let onchain = chain
                .open_wallet(key, owner.clone())
                .await
                .map_err(|e| StartError::Chain(e.to_string()))?;
            info!(wallet = %onchain.wallet.address_text(), "proxy wallet");
            let chain = crate::proxy::settlement::ProxyChain::start(
                onchain,
                view.context.clone(),
                ledger.clone(),
                owner,
                &identity.key,
            )
            .await
            .map_err(|e| StartError::Chain(format!("proxy contract: {e}")))?;
            // Contracts of older root parameters left open by an earlier run (§5.7).
            match chain.close_past_epochs(&identity.key).await {
                Ok(old) if !old.is_empty() => {
                    info!(
                        epochs = old.len(),
                        "closing contracts of older root parameters"
                    )
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "cannot resume closing older contracts"),
            }
            Some(chain)
        }
    };
    keep_root_config(&cfg.chain, &view, ledger.clone());
    let root = crate::chain::RootWatch::new(view.clone());
    let settings = ProxySettings {
        owner_address: cfg.owner_address.clone(),
        signing_key: identity.key.clone(),
        is_test: cfg.is_test,
        config_version,
        pseudo_client_tokens: cfg.chain.pseudo_client_tokens,
        max_attempts: cfg.max_attempts.max(1),
        connection: ConnectionConfig::default(),
    };
    let start = ProxyStart {
        chain: view.context.clone(),
        prices,
        settlement,
    };
    let proxy = Proxy::new(settings, start, ledger)
        .map_err(|e| ConfigError::Invalid(format!("owner_address: {e}")))?;
    proxy.set_attester(
        crate::protocol::evidence::Attester::new(identity.key.clone(), identity.certs.clone()),
        &cfg.worker_policy.kind.to_string(),
    );
    if let Some(chain) = &view.settlement {
        // The root is read for new parameters; a change rotates the contracts (§5.7).
        root.spawn_polling(chain.policy.root_poll_interval);
        proxy.follow_root(root);
    }
    let bind = |addr: &str, e: std::io::Error| StartError::Bind {
        addr: addr.to_owned(),
        source: e,
    };
    let clients = identity
        .listener(&cfg.client_policy, cfg.client_pow_difficulty)?
        .bind(&cfg.client_listen)
        .await
        .map_err(|e| bind(&cfg.client_listen, e))?;
    let workers = identity
        .listener(&cfg.worker_policy, cfg.worker_pow_difficulty)?
        .bind(&cfg.worker_listen)
        .await
        .map_err(|e| bind(&cfg.worker_listen, e))?;
    let client_addr = clients
        .local_addr()
        .map_err(|e| bind(&cfg.client_listen, e))?;
    let worker_addr = workers
        .local_addr()
        .map_err(|e| bind(&cfg.worker_listen, e))?;
    proxy.serve_clients(clients);
    proxy.serve_workers(workers);
    if let Some(km) = &cfg.key_manager {
        let dialer = identity.dialer(&km.policy)?;
        let mut fetch = crate::keys::KeyFetchSettings::new(km.address.clone());
        fetch.interval = Duration::from_secs(km.poll_secs.max(1));
        crate::keys::spawn_key_fetcher(fetch, dialer, proxy.keys().clone());
        info!(key_manager = %km.address, "following the key manager");
    }
    let access = crate::admin::AdminAccess {
        access_hash: cfg.http_access_hash.clone(),
    };
    let http_addr = serve_http(&cfg.http_listen, proxy_admin_router(proxy.clone(), access)).await?;
    info!(%client_addr, %worker_addr, ?http_addr, public_key = %hex::encode(proxy.public_key()), "proxy running");
    Ok(RunningProxy {
        proxy,
        client_addr,
        worker_addr,
        http_addr,
    })
}

/// The proxy's stats HTTP with no access hash: see [`proxy_admin_router`].
pub fn proxy_router(proxy: Proxy) -> Router {
    proxy_admin_router(proxy, crate::admin::AdminAccess::default())
}

/// The proxy's admin HTTP: `/jsonstats` (with every worker connection and its id),
/// Prometheus `/metrics`, and `POST /request/change_worker_model`; `access` guards
/// `/jsonstats` and `/request/*` ([`crate::admin`]).
pub fn proxy_admin_router(proxy: Proxy, access: crate::admin::AdminAccess) -> Router {
    async fn stats(State(p): State<Proxy>) -> impl IntoResponse {
        let s = p.stats();
        let (clients, workers) = p.ledger().grand_totals().unwrap_or((0, 0));
        Json(json!({
            "status": {"public_key": hex::encode(p.public_key()), "running_requests": p.running_requests()},
            "stats": {
                "requests_received": s.requests_received.load(Ordering::Relaxed),
                "requests_rejected": s.requests_rejected.load(Ordering::Relaxed),
                "requests_success": s.requests_success.load(Ordering::Relaxed),
                "requests_failed": s.requests_failed.load(Ordering::Relaxed),
                "requests_retried": s.requests_retried.load(Ordering::Relaxed),
                "requests_replayed": s.requests_replayed.load(Ordering::Relaxed),
                "adjusted_tokens_used": s.adjusted_tokens.load(Ordering::Relaxed),
            },
            "ledger": {"client_tokens": clients, "worker_tokens": workers},
            "models": p.ready_workers(),
            "root_contract_config": p.ledger().root_config().ok().flatten().map(|c| json!({
                "version": c.version,
                "struct_version": c.struct_version,
                "params_version": c.params_version,
                "price_per_token": c.price_per_token,
                "worker_fee_per_token": c.worker_fee_per_token,
                "registered_proxies": c.registered_proxies.len(),
                "registered_public_keys": c.registered_public_keys.len(),
                "key_manager_address": c.key_manager_address,
            })),
            "known_private_keys": p.keys().public_keys().iter().map(|(k, until)| {
                json!({"public_key": hex::encode(k), "expire_at": until})
            }).collect::<Vec<_>>(),
            "workers": p.worker_connections(),
            "demand": p.demand(),
        }))
    }
    async fn metrics(State(p): State<Proxy>) -> impl IntoResponse {
        let s = p.stats();
        let mut m = MetricsText::new();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        m.counter(
            "cocoon_proxy_requests_total",
            "Requests by outcome.",
            &[
                (&[("outcome", "success")], load(&s.requests_success)),
                (&[("outcome", "failed")], load(&s.requests_failed)),
                (&[("outcome", "rejected")], load(&s.requests_rejected)),
            ],
        );
        m.counter(
            "cocoon_proxy_requests_retried_total",
            "Requests retried on another worker.",
            &[(&[], load(&s.requests_retried))],
        );
        m.counter(
            "cocoon_proxy_requests_replayed_total",
            "Requests to be answered once, sent again and answered with the kept answer (not billed again).",
            &[(&[], load(&s.requests_replayed))],
        );
        m.counter(
            "cocoon_proxy_adjusted_tokens_total",
            "Adjusted tokens booked, by token class.",
            &[
                (&[("class", "prompt")], load(&s.tokens_by_class[0])),
                (&[("class", "cached")], load(&s.tokens_by_class[1])),
                (&[("class", "completion")], load(&s.tokens_by_class[2])),
                (&[("class", "reasoning")], load(&s.tokens_by_class[3])),
            ],
        );
        let (client_tokens, _) = p.ledger().grand_totals().unwrap_or((0, 0));
        let booked = crate::pricing::settle(client_tokens, &p.prices());
        let (pays, earns, commission) = booked
            .map(|b| (b.client_pays, b.worker_earns, b.proxy_commission))
            .unwrap_or_default();
        m.gauge_u64(
            "cocoon_proxy_booked_nanoton",
            "Booked money: owed by clients, owed to workers, proxy commission (exact nanoTON).",
            &[
                (&[("account", "clients")], pays),
                (&[("account", "workers")], earns),
                (&[("account", "commission")], commission),
            ],
        );
        m.gauge(
            "cocoon_proxy_client_connections",
            "Client connections open.",
            &[(&[], load(&s.client_connections) as f64)],
        );
        m.histogram(
            "cocoon_proxy_request_latency_seconds",
            "Time from forwarding a request to its end.",
            &s.request_latency,
        );
        m.gauge(
            "cocoon_proxy_running_requests",
            "Requests in flight.",
            &[(&[], p.running_requests() as f64)],
        );
        let models = p.ready_workers();
        let values: Vec<([(&str, &str); 1], f64)> = models
            .iter()
            .map(|(k, v)| ([("model", k.as_str())], *v as f64))
            .collect();
        let refs: Vec<(&[(&str, &str)], f64)> =
            values.iter().map(|(l, v)| (l.as_slice(), *v)).collect();
        m.gauge(
            "cocoon_proxy_ready_workers",
            "Ready worker connections per model.",
            &refs,
        );
        demand_metrics(&mut m, &p.demand());
        (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            m.finish(),
        )
    }
    async fn demand(State(p): State<Proxy>) -> impl IntoResponse {
        Json(json!({
            "recent_minutes": crate::proxy::demand::RECENT_MINUTES,
            "price_buckets": crate::proxy::demand::PRICE_BUCKETS,
            "models": p.demand(),
        }))
    }
    let guarded = Router::new()
        .route("/jsonstats", get(stats))
        .route(
            "/request/change_worker_model",
            post(crate::admin::change_worker_model),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::new(access),
            crate::admin::guard,
        ));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/demand", get(demand))
        .merge(guarded)
        .with_state(proxy)
}

/// Per model: the serving workers' load and what clients asked for (Prometheus), the
/// signals an autoscaler adds and drains workers by.
fn demand_metrics(m: &mut MetricsText, models: &[crate::proxy::demand::ModelReport]) {
    let labels: Vec<[(&str, &str); 1]> = models
        .iter()
        .map(|r| [("model", r.model.as_str())])
        .collect();
    let gauge = |m: &mut MetricsText,
                 name: &str,
                 help: &str,
                 f: &dyn Fn(&crate::proxy::demand::ModelReport) -> u64| {
        let values: Vec<(&[(&str, &str)], u64)> = labels
            .iter()
            .zip(models)
            .map(|(l, r)| (&l[..], f(r)))
            .collect();
        m.gauge_u64(name, help, &values);
    };
    gauge(
        m,
        "cocoon_proxy_model_running_requests",
        "Requests the serving workers of each model run now.",
        &|r| r.supply.running,
    );
    gauge(
        m,
        "cocoon_proxy_model_max_requests",
        "Requests the serving workers of each model take at most.",
        &|r| r.supply.max_running,
    );
    let mut refused: Vec<([(&str, &str); 2], u64)> = Vec::new();
    for r in models {
        for (reason, n) in [
            ("no_worker", r.total.refused_no_worker),
            ("busy", r.total.refused_busy),
            ("price", r.total.refused_price),
        ] {
            refused.push(([("model", r.model.as_str()), ("reason", reason)], n));
        }
    }
    let refs: Vec<(&[(&str, &str)], u64)> = refused.iter().map(|(l, n)| (&l[..], *n)).collect();
    m.counter(
        "cocoon_proxy_model_requests_refused_total",
        "Requests refused before any worker, per model and reason (no_worker: none connected; busy: all full; price: all above the client's max_coefficient).",
        &refs,
    );
    let routed: Vec<(&[(&str, &str)], u64)> = labels
        .iter()
        .zip(models)
        .map(|(l, r)| (&l[..], r.total.routed))
        .collect();
    m.counter(
        "cocoon_proxy_model_requests_routed_total",
        "Requests sent to a worker, per model.",
        &routed,
    );
    let mut accepted: Vec<([(&str, &str); 2], u64)> = Vec::new();
    let bounds: Vec<String> = crate::proxy::demand::PRICE_BUCKETS
        .iter()
        .map(|b| b.to_string())
        .chain(std::iter::once("+Inf".to_owned()))
        .collect();
    for r in models {
        let mut cumulative = 0;
        for (bound, n) in bounds.iter().zip(r.total.accepted_price) {
            cumulative += n;
            accepted.push((
                [("model", r.model.as_str()), ("le", bound.as_str())],
                cumulative,
            ));
        }
    }
    let refs: Vec<(&[(&str, &str)], u64)> = accepted.iter().map(|(l, n)| (&l[..], *n)).collect();
    m.counter(
        "cocoon_proxy_model_accepted_coefficient_bucket",
        "Requests per model whose client accepted a worker coefficient up to le (cumulative; 1000 = 1.0x).",
        &refs,
    );
}

/// A running key manager.
#[derive(Debug)]
pub struct RunningKeyManager {
    /// The key manager.
    pub key_manager: crate::keys::KeyManager,
    /// Where proxies ask for keys.
    pub addr: SocketAddr,
    /// The stats/admin HTTP address, if enabled.
    pub http_addr: Option<SocketAddr>,
}

/// Starts a key manager: its key store, the hourly keys, registration on the root (with a
/// chain) and the attested port proxies ask on.
pub async fn start_key_manager(
    cfg: &crate::config::KeyManagerConfig,
    chain: Option<&ChainView>,
) -> Result<RunningKeyManager, StartError> {
    let (view, _) = chain_view(&cfg.chain, cfg.is_test, chain).await?;
    let mut identity = cfg.attestation.identity()?;
    identity.spawn_renewal();
    let store = crate::keys::KeyStore::open(&cfg.db_path, &identity.key)
        .map_err(|e| ConfigError::Invalid(format!("db_path: {e}")))?;
    let registrar = match &view.settlement {
        None => None,
        Some(settlement) => {
            let owner = view
                .context
                .parse_address(&cfg.owner_address)
                .map_err(|e| ConfigError::Invalid(format!("owner_address: {e}")))?;
            let key = wallet_key(&cfg.chain, &identity.key)?;
            let onchain = settlement
                .open_wallet(key, owner)
                .await
                .map_err(|e| StartError::Chain(e.to_string()))?;
            info!(wallet = %onchain.wallet.address_text(), "key manager wallet");
            Some(crate::keys::Registrar {
                chain: onchain,
                root: view.context.root().clone(),
            })
        }
    };
    let caller_hashes = if cfg.check_root_hashes.unwrap_or(!cfg.is_test) {
        let hashes = crate::keys::manager::RootHashes::default();
        match (&view.settlement, &cfg.chain.fake_ton_file) {
            (Some(chain), _) => {
                hashes.spawn_polling(
                    chain.backend.clone(),
                    view.context.root().clone(),
                    chain.policy.root_poll_interval,
                );
            }
            (None, Some(path)) => hashes.update(
                &cocoon_ton::pseudo::root_config_from_file(path)
                    .map_err(|e| ConfigError::Invalid(format!("[chain] fake_ton_file: {e}")))?,
            ),
            (None, None) => {
                return Err(ConfigError::Invalid(
                    "check_root_hashes needs a root to read the hashes from: a chain or \
                     [chain] fake_ton_file (or set check_root_hashes = false)"
                        .into(),
                )
                .into())
            }
        }
        crate::keys::manager::CallerHashes::Root(hashes)
    } else {
        crate::keys::manager::CallerHashes::Unchecked
    };
    let settings = crate::keys::KeyManagerSettings {
        rotation: Duration::from_secs(cfg.rotation_secs.max(1)),
        lifetime: Duration::from_secs(cfg.lifetime_secs.max(1)),
        caller_hashes,
        ..crate::keys::KeyManagerSettings::default()
    };
    let km = crate::keys::KeyManager::new(store, identity.key.clone(), settings, registrar);
    km.tick(crate::util::unix_secs())
        .map_err(|e| ConfigError::Invalid(format!("db_path: {e}")))?;
    km.spawn_upkeep();
    let listener = identity
        .listener(&cfg.caller_policy, None)?
        .bind(&cfg.listen)
        .await
        .map_err(|e| StartError::Bind {
            addr: cfg.listen.clone(),
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| StartError::Bind {
        addr: cfg.listen.clone(),
        source: e,
    })?;
    km.serve(listener);
    let http_addr = serve_http(&cfg.http_listen, key_manager_router(km.clone())).await?;
    info!(%addr, ?http_addr, machine_key = %hex::encode(km.public_key()), "key manager running");
    Ok(RunningKeyManager {
        key_manager: km,
        addr,
        http_addr,
    })
}

/// The key manager's HTTP: `/jsonstats`, `/metrics`, and the operator's
/// `POST /request/generatekey?type=N` and `POST /request/removekey?key=HEX` (as COCOON's).
pub fn key_manager_router(km: crate::keys::KeyManager) -> Router {
    use axum::extract::Query;
    use axum::http::StatusCode;
    use axum::routing::post;
    use std::collections::HashMap;

    async fn stats(State(km): State<crate::keys::KeyManager>) -> impl IntoResponse {
        let s = km.stats();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let keys = km.keys().map_err(|e| e.to_string());
        Json(json!({
            "status": {"machine_key": hex::encode(km.public_key())},
            "stats": {
                "answered": load(&s.answered),
                "refused": load(&s.refused),
                "generated": load(&s.generated),
                "registered": load(&s.registered),
                "registration_failures": load(&s.registration_failures),
            },
            "keys": match keys { Ok(k) => json!(k), Err(e) => json!({"error": e}) },
        }))
    }
    async fn metrics(State(km): State<crate::keys::KeyManager>) -> impl IntoResponse {
        let s = km.stats();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let mut m = MetricsText::new();
        m.counter(
            "cocoon_key_manager_answers_total",
            "Key requests answered.",
            &[(&[], load(&s.answered))],
        );
        m.counter(
            "cocoon_key_manager_keys_generated_total",
            "Keys generated.",
            &[(&[], load(&s.generated))],
        );
        m.counter(
            "cocoon_key_manager_registrations_total",
            "Key registrations on the root, by outcome.",
            &[
                (&[("outcome", "registered")], load(&s.registered)),
                (&[("outcome", "failed")], load(&s.registration_failures)),
            ],
        );
        m.gauge(
            "cocoon_key_manager_keys",
            "Keys held.",
            &[(&[], km.keys().map(|k| k.len()).unwrap_or(0) as f64)],
        );
        (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            m.finish(),
        )
    }
    async fn generate(
        State(km): State<crate::keys::KeyManager>,
        Query(q): Query<HashMap<String, String>>,
    ) -> (StatusCode, Json<serde_json::Value>) {
        let key_type = match q.get("type").map(|t| t.parse::<u8>()) {
            None => crate::keys::manager::ENCRYPTION_KEY_TYPE,
            Some(Ok(t)) => t,
            Some(Err(_)) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": "type must be an integer 0..=255"})),
                )
            }
        };
        match km.generate(key_type, crate::util::unix_secs()) {
            Ok(k) => (
                StatusCode::OK,
                Json(json!({"public_key": hex::encode(k), "key_type": key_type})),
            ),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": e.to_string()})),
            ),
        }
    }
    async fn remove(
        State(km): State<crate::keys::KeyManager>,
        Query(q): Query<HashMap<String, String>>,
    ) -> (StatusCode, Json<serde_json::Value>) {
        let key = q
            .get("key")
            .and_then(|k| hex::decode(k).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        let Some(key) = key else {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "key must be 64 hex digits"})),
            );
        };
        match km.remove(&key) {
            Ok(true) => (StatusCode::OK, Json(json!({"removed": hex::encode(key)}))),
            Ok(false) => (StatusCode::NOT_FOUND, Json(json!({"error": "no such key"}))),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": e.to_string()})),
            ),
        }
    }
    Router::new()
        .route("/jsonstats", get(stats))
        .route("/metrics", get(metrics))
        .route("/request/generatekey", post(generate))
        .route("/request/removekey", post(remove))
        .with_state(km)
}

/// A running worker.
#[derive(Debug)]
pub struct RunningWorker {
    /// The worker.
    pub worker: Worker,
    /// The model it serves.
    pub model: String,
    /// The stats/metrics HTTP address, if enabled.
    pub http_addr: Option<SocketAddr>,
}

/// Starts a worker from its configuration, with the backend given (HTTP upstream from
/// the configuration when `backend` is `None`).
pub async fn start_worker(
    cfg: &WorkerConfig,
    backend: Option<Arc<dyn InferenceBackend>>,
    chain: Option<&ChainView>,
) -> Result<RunningWorker, StartError> {
    let (view, _) = chain_view(&cfg.chain, cfg.is_test, chain).await?;
    let watch = watch_root(&view);
    let backend: Arc<dyn InferenceBackend> = match backend {
        Some(b) => b,
        None if cfg.upstream.is_empty() => return Err(ConfigError::Invalid(
            "worker needs `upstream` (an OpenAI-compatible server) or an embedded model (--model)"
                .into(),
        )
        .into()),
        None => Arc::new(
            HttpUpstream::new(&cfg.upstream)
                .map_err(|e| StartError::Backend(format!("upstream {}: {e}", cfg.upstream)))?,
        ),
    };
    let model = if cfg.model.is_empty() {
        discover_model(
            backend.as_ref(),
            Duration::from_secs(cfg.upstream_wait_secs),
        )
        .await?
    } else {
        cfg.model.clone()
    };
    let mut identity = cfg.attestation.identity()?;
    identity.spawn_renewal();
    let dialer = identity.dialer(&cfg.proxy_policy)?;
    let settings = WorkerSettings {
        owner_address: cfg.owner_address.clone(),
        model: model.clone(),
        coefficient: cfg.coefficient,
        max_active_requests: cfg.max_active_requests.max(1),
        proxy_connections: u32::try_from(cfg.proxies.len().max(1)).unwrap_or(1),
        is_test: cfg.is_test,
        health_interval: Duration::from_secs(2),
        reconnect_min: Duration::from_millis(200),
        reconnect_max: Duration::from_secs(10),
        connection: ConnectionConfig::default(),
        chain: watch,
        voucher_dir: cfg.voucher_dir.clone(),
        change_model: cfg.model_change(),
    };
    let worker = Worker::new(settings, backend)
        .map_err(|e| ConfigError::Invalid(format!("owner_address: {e}")))?;
    worker.set_attester(crate::protocol::evidence::Attester::new(
        identity.key.clone(),
        identity.certs.clone(),
    ));
    worker.spawn_health_monitor();
    for proxy in &cfg.proxies {
        worker.spawn_proxy_link(proxy.clone(), dialer.clone());
    }
    let http_addr = serve_http(&cfg.http_listen, worker_router(worker.clone())).await?;
    info!(%model, coefficient = cfg.coefficient, proxies = ?cfg.proxies, "worker running");
    Ok(RunningWorker {
        worker,
        model,
        http_addr,
    })
}

/// How often [`discover_model`] says that it is still waiting.
const WAIT_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Reads the served model from the backend's `/v1/models`, trying once a second until
/// `wait` has passed (a model server may still be loading its weights). While it waits
/// it logs why (the last error), how many tries so far and when it gives up: at the
/// first failure and every [`WAIT_PROGRESS_EVERY`]. `wait` zero tries once.
async fn discover_model(
    backend: &dyn InferenceBackend,
    wait: Duration,
) -> Result<String, StartError> {
    let what = backend.describe();
    let start = tokio::time::Instant::now();
    let deadline = start + wait;
    let mut tries: u32 = 0;
    let mut reported: Option<tokio::time::Instant> = None;
    loop {
        tries = tries.saturating_add(1);
        let error = match backend.models().await {
            Ok(models) => {
                return match models.into_iter().next() {
                    Some(m) => {
                        if reported.is_some() {
                            info!(model = %m, tries, "{what} answers");
                        }
                        Ok(m)
                    }
                    None => Err(StartError::Backend(format!(
                        "{what} serves no model (its /v1/models lists none)"
                    ))),
                };
            }
            Err(e) => e,
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(StartError::Backend(format!(
                "{what} did not answer GET /v1/models within {} s ({tries} {}); last error: \
                 {error}. Is it running at that address? (`--upstream-wait SECONDS`, or \
                 `upstream_wait_secs` in worker.toml, sets how long to wait)",
                wait.as_secs(),
                if tries == 1 { "try" } else { "tries" },
            )));
        }
        if reported.is_none_or(|at| now.duration_since(at) >= WAIT_PROGRESS_EVERY) {
            warn!(
                "waiting for {what}: {error} (try {tries}; {:.0} s of {} s waited, giving up in \
                 {:.0} s)",
                now.duration_since(start).as_secs_f64(),
                wait.as_secs(),
                deadline.duration_since(now).as_secs_f64()
            );
            reported = Some(now);
        }
        tokio::time::sleep_until(deadline.min(now + Duration::from_secs(1))).await;
    }
}

fn worker_router(worker: Worker) -> Router {
    async fn stats(State(w): State<Worker>) -> impl IntoResponse {
        let s = w.stats();
        Json(json!({
            "status": {"healthy": w.is_healthy(), "active_requests": w.active_requests(), "model": w.model()},
            "stats": {
                "requests_received": s.requests_received.load(Ordering::Relaxed),
                "requests_success": s.requests_success.load(Ordering::Relaxed),
                "requests_failed": s.requests_failed.load(Ordering::Relaxed),
                "adjusted_tokens": s.adjusted_tokens.load(Ordering::Relaxed),
                "usage_clipped": s.usage_clipped.load(Ordering::Relaxed),
            },
        }))
    }
    async fn metrics(State(w): State<Worker>) -> impl IntoResponse {
        let s = w.stats();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let mut m = MetricsText::new();
        m.counter(
            "cocoon_worker_requests_total",
            "Requests by outcome.",
            &[
                (&[("outcome", "success")], load(&s.requests_success)),
                (&[("outcome", "failed")], load(&s.requests_failed)),
            ],
        );
        m.counter(
            "cocoon_worker_adjusted_tokens_total",
            "Adjusted tokens served.",
            &[(&[], load(&s.adjusted_tokens))],
        );
        m.counter(
            "cocoon_worker_usage_clipped_total",
            "Answers whose model server reported more usage than the request could have produced (billed within the bound).",
            &[(&[], load(&s.usage_clipped))],
        );
        m.gauge(
            "cocoon_worker_active_requests",
            "Requests running.",
            &[(&[], f64::from(w.active_requests()))],
        );
        m.gauge(
            "cocoon_worker_healthy",
            "1 when the model server passes its health check.",
            &[(&[], f64::from(u8::from(w.is_healthy())))],
        );
        (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            m.finish(),
        )
    }
    Router::new()
        .route("/jsonstats", get(stats))
        .route("/metrics", get(metrics))
        .with_state(worker)
}

/// A running client.
#[derive(Debug)]
pub struct RunningClient {
    /// The client node.
    pub node: Arc<ClientNode>,
    /// The OpenAI API address.
    pub http_addr: SocketAddr,
    /// The Batch API, when `[batch]` is configured.
    pub batches: Option<Arc<crate::client::batch::Batches>>,
}

/// Starts a client from its configuration.
pub async fn start_client(
    cfg: &ClientConfig,
    chain: Option<&ChainView>,
) -> Result<RunningClient, StartError> {
    let (view, config_version) = chain_view(&cfg.chain, cfg.is_test, chain).await?;
    let watch = watch_root(&view);
    if cfg.proxies.is_empty() {
        return Err(ConfigError::Invalid("client needs at least one proxy".into()).into());
    }
    let mut identity = cfg.attestation.identity()?;
    identity.spawn_renewal();
    let dialer = identity.dialer(&cfg.proxy_policy)?;
    let node = ClientNode::new(GatewaySettings {
        default_max_coefficient: cfg.default_max_coefficient,
        default_timeout: cfg.default_timeout,
        ..GatewaySettings::default()
    });
    if let Some(path) = &cfg.api_keys {
        let keys = crate::client::keys::ApiKeys::open(path)
            .map_err(|e| ConfigError::Invalid(format!("api_keys {}: {e}", path.display())))?;
        node.set_api_keys(keys);
    }
    let loopback = cfg
        .http_listen
        .parse::<SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or_else(|_| cfg.http_listen.starts_with("localhost:"));
    let keyed = node.api_keys().is_some_and(|k| k.required());
    if !loopback && !keyed && !cfg.public_without_keys {
        return Err(ConfigError::Invalid(format!(
            "http_listen {} is not a loopback address and the gateway has no API key: anyone who \
             reaches it would spend this client's TON. Set api_keys and add a key \
             (`cocoon client keys add --name APP --config …`), or set public_without_keys = true",
            cfg.http_listen
        ))
        .into());
    }
    // On chain, the client speaks as its cocoon wallet (`client_owner_address`), owned by
    // the configured owner.
    let (owner_address, onchain) = match &view.settlement {
        None => (cfg.owner_address.clone(), None),
        Some(chain) => {
            let owner = view
                .context
                .parse_address(&cfg.owner_address)
                .map_err(|e| ConfigError::Invalid(format!("owner_address: {e}")))?;
            let key = wallet_key(&cfg.chain, &identity.key)?;
            let onchain = chain
                .open_wallet(key, owner)
                .await
                .map_err(|e| StartError::Chain(e.to_string()))?;
            let address = view.context.format(onchain.wallet.address());
            info!(wallet = %address, "client wallet");
            let client_chain = crate::client::settlement::ClientChain::new(
                onchain,
                watch.clone(),
                &cfg.secret_string,
            );
            // When the root parameters change, the old client contracts are closed
            // (§5.7); the task ends with the watch.
            client_chain.spawn_retired_closer();
            (address, Some(client_chain))
        }
    };
    let settings = ClientSettings {
        owner_address,
        is_test: cfg.is_test,
        secret_string: cfg.secret_string.clone(),
        config_version,
        max_proto: crate::client::MAX_PROTO,
        chain: watch,
        onchain,
    };
    for proxy in &cfg.proxies {
        node.spawn_proxy_link(
            proxy.clone(),
            dialer.clone(),
            settings.clone(),
            ConnectionConfig::default(),
        );
    }
    let (batches, uploads) = match &cfg.batch {
        Some(batch) => {
            let batches = crate::client::batch::Batches::start(batch.clone(), node.clone())
                .map_err(|e| {
                    ConfigError::Invalid(format!("batch.dir {}: {e}", batch.dir.display()))
                })?;
            let router = batches.router();
            (Some(batches), router)
        }
        None => (None, crate::client::batch::api::disabled_router()),
    };
    let http_addr = serve_http(&cfg.http_listen, node.router_with(uploads))
        .await?
        .ok_or_else(|| ConfigError::Invalid("client needs http_listen".into()))?;
    info!(%http_addr, proxies = ?cfg.proxies, "client running: OpenAI API at http://{http_addr}/v1");
    Ok(RunningClient {
        node,
        http_addr,
        batches,
    })
}
