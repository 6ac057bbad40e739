//! TOML configuration of the three roles, and what turns it into running settings.
//!
//! Every file has the same shape: role fields at the top, an `[attestation]` table (what
//! this node presents and which peers it accepts) and a `[chain]` table. Documented
//! examples live in `configs/` at the repository root.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cocoon_attest::dcap::{DcapConfig, DcapVerifier};
use cocoon_attest::{CertResolver, Policy, PolicyConfig, PolicyKind, TeeMode};

use crate::transport::{
    AttestedDialer, AttestedServer, Dialer, Listener, RouterDialer, RouterListener,
};
use ed25519_dalek::SigningKey;
use serde::Deserialize;

use crate::pricing::{Multipliers, Prices, MULTIPLIER_ONE};

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped fields.
    #[error("invalid configuration {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// The node key or certificate could not be prepared.
    #[error("attestation setup failed: {0}")]
    Attestation(String),
}

/// Reads and parses a TOML file.
pub fn load<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The `[chain]` table. Only fake-TON exists until the TON layer lands.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// `fake`: **fake-TON, a stand-in for the TON chain** (like COCOON's
    /// `--disable-ton`): prices come from this table, clients are pseudo-funded, nothing
    /// is settled on chain. `toncenter`: a real TON network through a toncenter v2 API
    /// (`toncenter_url`, `api_key`): prices, codes and settlement come from the root
    /// contract at `root_address`.
    #[serde(default = "default_chain_mode")]
    pub mode: String,
    /// nanoTON per adjusted token paid by clients.
    #[serde(default = "default_price")]
    pub price_per_token: u64,
    /// nanoTON per adjusted token earned by workers.
    #[serde(default = "default_fee")]
    pub worker_fee_per_token: u64,
    /// Token class multipliers, 10000 = 1.0×: prompt, cached, completion, reasoning.
    #[serde(default = "default_multipliers")]
    pub multipliers: [u32; 4],
    /// Fake-TON only: adjusted tokens each client may use.
    #[serde(default = "default_pseudo_tokens")]
    pub pseudo_client_tokens: u64,
    /// Root config version the node runs on (with `fake_ton_file`: the file's `version`).
    #[serde(default = "default_config_version")]
    pub config_version: i32,
    /// `fake` mode: COCOON's fake-TON root file, what the official roles' `--disable-ton`
    /// takes. Prices, the config version and the contract codes then come from it, and
    /// `root_address` names the root contract the addresses derive from (the official
    /// configs' `root_contract_address`), so that our roles and official ones started on
    /// the same file share one root.
    #[serde(default)]
    pub fake_ton_file: Option<PathBuf>,
    /// On chain: the key file of the role's cocoon wallet (PEM, created if missing).
    /// Default: the node's own key (`[attestation] key_file`).
    #[serde(default)]
    pub wallet_key_file: Option<PathBuf>,
    /// `toncenter` mode: the API base URL (default: testnet when `is_test`, else mainnet).
    #[serde(default)]
    pub toncenter_url: Option<String>,
    /// `toncenter` mode: the API key (raises the rate limit from 1 to 10 requests/s).
    #[serde(default)]
    pub api_key: Option<String>,
    /// `toncenter` mode: the root contract (raw `0:…` or user-friendly).
    #[serde(default)]
    pub root_address: Option<String>,
}

fn default_chain_mode() -> String {
    "fake".into()
}
fn default_price() -> u64 {
    2
}
fn default_fee() -> u64 {
    1
}
fn default_multipliers() -> [u32; 4] {
    [MULTIPLIER_ONE; 4]
}
fn default_pseudo_tokens() -> u64 {
    1_000_000_000_000
}
fn default_config_version() -> i32 {
    1
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            mode: default_chain_mode(),
            price_per_token: default_price(),
            worker_fee_per_token: default_fee(),
            multipliers: default_multipliers(),
            pseudo_client_tokens: default_pseudo_tokens(),
            config_version: default_config_version(),
            fake_ton_file: None,
            wallet_key_file: None,
            toncenter_url: None,
            api_key: None,
            root_address: None,
        }
    }
}

impl ChainConfig {
    /// Checks the table and returns the prices.
    pub fn prices(&self) -> Result<Prices, ConfigError> {
        if self.mode != "fake" {
            return Err(ConfigError::Invalid(format!(
                "unknown chain mode {:?}: use \"fake\" (fake-TON, a stand-in) or \"toncenter\"",
                self.mode
            )));
        }
        if self.worker_fee_per_token > self.price_per_token {
            return Err(ConfigError::Invalid(format!(
                "worker_fee_per_token {} exceeds price_per_token {}",
                self.worker_fee_per_token, self.price_per_token
            )));
        }
        let [prompt, cached, completion, reasoning] = self.multipliers;
        Ok(Prices {
            price_per_token: self.price_per_token,
            worker_fee_per_token: self.worker_fee_per_token,
            multipliers: Multipliers {
                prompt,
                cached,
                completion,
                reasoning,
            },
        })
    }
}

/// The `[attestation]` table: this node's identity and its TEE evidence.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    /// What this node presents: `none`, `fake_tdx` (a stand-in for TDX hardware) or
    /// `tdx` (a real quote; only inside a TD).
    #[serde(default = "default_tee")]
    pub tee: String,
    /// The node's Ed25519 key (PEM, PKCS#8). Created on first start if missing; keeps
    /// the proxy's identity and ledger signatures stable across restarts.
    pub key_file: Option<PathBuf>,
    /// Where the node's key comes from: `file` (default: `key_file`, or a new key each
    /// start without one) or `sealed`: derived again on every start from the TEE, so only
    /// this image on this machine has it (COCOON's `APP_KEY`, §8). `sealed` needs `tee =
    /// "sev"` (or `tee` on AMD) inside an SNP guest; with a fake or no TEE it is COCOON's
    /// public debug-image key, a stand-in that protects nothing.
    #[serde(default)]
    pub key_source: KeySource,
    /// DCAP settings for `tdx` policies.
    #[serde(default)]
    pub dcap: DcapConfig,
    /// Proof-of-work difficulty this node's listening ports demand (default 20).
    pub pow_difficulty: Option<u32>,
    /// Highest difficulty this node solves when dialing (default 28).
    pub max_pow_difficulty: Option<u32>,
    /// An official COCOON router in front of this node, as in COCOON's own images: it
    /// does PoW, RA-TLS and its policy check, and this node speaks plain TCP to it (its
    /// policies then judge what the router verified). Absent: the node does RA-TLS itself.
    pub router: Option<RouterFront>,
}

/// The `[attestation.router]` table: how this node reaches the official router in front
/// of it. Its listening ports take the router's reverse ports (`router -R
/// PORT:127.0.0.1:NODE_PORT@POLICY --serialize-info`); bind them to loopback.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterFront {
    /// The router's SOCKS5 port for outgoing connections (`router -S PORT@POLICY
    /// --serialize-info`; COCOON's images: `127.0.0.1:8116`). Needed by roles that dial
    /// (client, worker, a proxy following a key manager).
    pub socks5: Option<String>,
}

/// Where a node's Ed25519 key comes from (`[attestation] key_source`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// `key_file` (created on first start), or an ephemeral key without one.
    #[default]
    File,
    /// Sealed to this image on this machine (SEV-SNP derived key, `HMAC(…, "app")`).
    Sealed,
}

fn default_tee() -> String {
    "none".into()
}

impl Default for AttestationConfig {
    fn default() -> Self {
        AttestationConfig {
            tee: default_tee(),
            key_file: None,
            key_source: KeySource::File,
            dcap: DcapConfig::default(),
            pow_difficulty: None,
            max_pow_difficulty: None,
            router: None,
        }
    }
}

/// How often a role looks whether its SEV-SNP collateral is due for a refresh (a fetch
/// happens only when a cached file is 7 days old).
const SEV_COLLATERAL_CHECK: Duration = Duration::from_secs(3600);

/// The pieces a role needs for attested connections.
pub struct Identity {
    /// The node key.
    pub key: SigningKey,
    /// The certificate source (renewed in the background by the role).
    pub certs: Arc<CertResolver>,
    dcap: Option<Arc<DcapVerifier>>,
    attestation: AttestationConfig,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field(
                "public_key",
                &hex::encode(self.key.verifying_key().as_bytes()),
            )
            .finish()
    }
}

/// The node key sealed to this TEE: COCOON's `app` key as the Ed25519 seed.
fn sealed_node_key(tee: TeeMode) -> Result<SigningKey, ConfigError> {
    use cocoon_attest::seal::{sealed_key, SealSource, APP_KEY_NAME};
    let sealed = |e: cocoon_attest::seal::SealError| {
        ConfigError::Attestation(format!("attestation: key_source = \"sealed\": {e}"))
    };
    let source = SealSource::for_tee(tee).map_err(sealed)?;
    if source == SealSource::Debug {
        tracing::warn!(
            "key_source = \"sealed\" without a TEE: the node key is COCOON's public \
             debug-image key (a stand-in that protects nothing)"
        );
    }
    let seed = sealed_key(source, APP_KEY_NAME).map_err(sealed)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Loads the key from `path`, creating it (mode 0600) if the file does not exist.
pub fn load_or_create_key(path: &Path) -> Result<SigningKey, ConfigError> {
    if path.exists() {
        let pem = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        return cocoon_attest::cert::load_key_pem(&pem)
            .map_err(|e| ConfigError::Attestation(format!("{}: {e}", path.display())));
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&key)
        .map_err(|e| ConfigError::Attestation(e.to_string()))?;
    let pem = cocoon_attest::cert::pem_encode("PRIVATE KEY", der.as_bytes());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| ConfigError::Read {
            path: dir.to_owned(),
            source,
        })?;
    }
    write_private(path, pem.as_bytes())?;
    Ok(key)
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), ConfigError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    file.write_all(data).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

impl AttestationConfig {
    /// Prepares the node identity: key (loaded, created, or ephemeral) and certificate.
    pub fn identity(&self) -> Result<Identity, ConfigError> {
        let tee: TeeMode = self
            .tee
            .parse()
            .map_err(|e: String| ConfigError::Invalid(format!("attestation.tee: {e}")))?;
        let key = match (self.key_source, &self.key_file) {
            (KeySource::Sealed, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "attestation: key_source = \"sealed\" derives the key, so key_file must go"
                        .into(),
                ))
            }
            (KeySource::Sealed, None) => sealed_node_key(tee)?,
            (KeySource::File, Some(path)) => load_or_create_key(path)?,
            (KeySource::File, None) => SigningKey::generate(&mut rand::rngs::OsRng),
        };
        let certs = CertResolver::new(key.clone(), tee)
            .map_err(|e| ConfigError::Attestation(e.to_string()))?;
        Ok(Identity {
            key,
            certs,
            dcap: None,
            attestation: self.clone(),
        })
    }
}

impl Identity {
    /// The policy object for `cfg`, building the DCAP verifier on first need.
    pub fn policy(&mut self, cfg: &PolicyConfig) -> Result<Arc<Policy>, ConfigError> {
        let dcap = if cfg.kind == PolicyKind::Tee {
            if self.dcap.is_none() {
                let v = DcapVerifier::from_config(&self.attestation.dcap)
                    .map_err(|e| ConfigError::Attestation(e.to_string()))?;
                self.dcap = Some(Arc::new(v));
            }
            self.dcap.clone()
        } else {
            None
        };
        let policy = Policy::from_config(cfg, dcap)
            .map(Arc::new)
            .map_err(|e| ConfigError::Attestation(e.to_string()))?;
        // AMD's chains and CRLs, kept fresh while the role runs (`sev_collateral`).
        policy.spawn_collateral_refresh(SEV_COLLATERAL_CHECK);
        Ok(policy)
    }

    /// Server side of attested connections, checking peers with `policy`.
    pub fn server(
        &mut self,
        policy: &PolicyConfig,
    ) -> Result<cocoon_attest::ServerConfig, ConfigError> {
        self.server_with_pow(policy, None)
    }

    /// [`Identity::server`] with a port-specific PoW difficulty (falls back to
    /// `attestation.pow_difficulty`, then to the default 20).
    pub fn server_with_pow(
        &mut self,
        policy: &PolicyConfig,
        pow_difficulty: Option<u32>,
    ) -> Result<cocoon_attest::ServerConfig, ConfigError> {
        let policy = self.policy(policy)?;
        let cfg = cocoon_attest::ServerConfig::new(self.certs.clone(), policy)
            .map_err(|e| ConfigError::Attestation(e.to_string()))?;
        Ok(match pow_difficulty.or(self.attestation.pow_difficulty) {
            Some(d) => cfg.with_pow_difficulty(Some(d)),
            None => cfg,
        })
    }

    /// Client side of attested connections, checking the server with `policy`.
    pub fn client(
        &mut self,
        policy: &PolicyConfig,
    ) -> Result<cocoon_attest::ClientConfig, ConfigError> {
        let policy = self.policy(policy)?;
        let cfg = cocoon_attest::ClientConfig::new(self.certs.clone(), policy)
            .map_err(|e| ConfigError::Attestation(e.to_string()))?;
        Ok(match self.attestation.max_pow_difficulty {
            Some(d) => cfg.with_pow_max_difficulty(Some(d)),
            None => cfg,
        })
    }

    /// What a listening port with `policy` runs: RA-TLS with `pow_difficulty` (falling
    /// back as in [`Identity::server_with_pow`]), or plain TCP behind the router.
    pub fn listener(
        &mut self,
        policy: &PolicyConfig,
        pow_difficulty: Option<u32>,
    ) -> Result<ListenerSpec, ConfigError> {
        if self.attestation.router.is_some() {
            return Ok(ListenerSpec::BehindRouter(self.policy(policy)?));
        }
        Ok(ListenerSpec::Attested(
            self.server_with_pow(policy, pow_difficulty)?,
        ))
    }

    /// How this node dials peers judged by `policy`: RA-TLS itself, or through the
    /// router's SOCKS5 port.
    pub fn dialer(&mut self, policy: &PolicyConfig) -> Result<Arc<dyn Dialer>, ConfigError> {
        match &self.attestation.router {
            None => Ok(Arc::new(AttestedDialer::new(self.client(policy)?))),
            Some(RouterFront {
                socks5: Some(socks5),
            }) => {
                let socks5 = socks5.clone();
                Ok(Arc::new(RouterDialer::new(socks5, self.policy(policy)?)))
            }
            Some(RouterFront { socks5: None }) => Err(ConfigError::Invalid(
                "attestation.router.socks5 is needed for outgoing connections (the router's \
                 SOCKS5 port, e.g. \"127.0.0.1:8116\")"
                    .into(),
            )),
        }
    }

    /// Renews the certificate before it expires (it is valid for one day).
    pub fn spawn_renewal(&self) -> tokio::task::JoinHandle<()> {
        self.certs.spawn_renewal(Duration::from_secs(6 * 3600))
    }
}

/// A listening port, ready to bind: see [`Identity::listener`].
pub enum ListenerSpec {
    /// PoW and RA-TLS by this node.
    Attested(cocoon_attest::ServerConfig),
    /// Plain TCP from the official router in front, judged by this policy.
    BehindRouter(Arc<Policy>),
}

impl ListenerSpec {
    /// Binds `addr`.
    pub async fn bind(self, addr: &str) -> std::io::Result<Box<dyn Listener>> {
        Ok(match self {
            ListenerSpec::Attested(cfg) => Box::new(AttestedServer::bind(addr, cfg).await?),
            ListenerSpec::BehindRouter(policy) => {
                Box::new(RouterListener::bind(addr, policy).await?)
            }
        })
    }
}

fn policy_any() -> PolicyConfig {
    PolicyConfig::new(PolicyKind::Any)
}

/// `proxy.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Owner of the proxy (receives its earnings).
    pub owner_address: String,
    /// Where clients connect (`host:port`).
    #[serde(default = "default_client_listen")]
    pub client_listen: String,
    /// Where workers connect (`host:port`).
    #[serde(default = "default_worker_listen")]
    pub worker_listen: String,
    /// Stats and metrics HTTP (`host:port`); empty disables it. It also takes the
    /// admin action `POST /request/change_worker_model` (see [`crate::admin`]).
    #[serde(default = "default_proxy_http")]
    pub http_listen: String,
    /// COCOON's `http_access_hash`: when set, `/jsonstats` and `/request/*` of the HTTP
    /// port need `?access_hash=` with this text (`/metrics` stays open).
    #[serde(default)]
    pub http_access_hash: Option<String>,
    /// The SQLite ledger file.
    pub db_path: PathBuf,
    /// Test network mode (must match clients and workers).
    #[serde(default = "yes")]
    pub is_test: bool,
    /// Workers tried per request (1 disables retries).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// This node's identity and evidence.
    #[serde(default)]
    pub attestation: AttestationConfig,
    /// Which clients are accepted (default `any`).
    #[serde(default = "policy_any")]
    pub client_policy: PolicyConfig,
    /// Which workers are accepted (default `any`; production uses `tdx`).
    #[serde(default = "policy_any")]
    pub worker_policy: PolicyConfig,
    /// PoW difficulty of the client port (default: `attestation.pow_difficulty`).
    pub client_pow_difficulty: Option<u32>,
    /// PoW difficulty of the worker port (default: `attestation.pow_difficulty`).
    pub worker_pow_difficulty: Option<u32>,
    /// Chain access.
    #[serde(default)]
    pub chain: ChainConfig,
    /// The key manager this proxy takes private keys from, for requests apps encrypt
    /// end to end (COCOON protocol 3). None: every encrypted request is refused
    /// ("unknown public key").
    #[serde(default)]
    pub key_manager: Option<KeyManagerLink>,
}

/// The `[key_manager]` table of a proxy: where its key manager is and which one it trusts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyManagerLink {
    /// The key manager's attested port (`host:port`; COCOON: the root's
    /// `key_manager_address`, router port 13001).
    pub address: String,
    /// Seconds between key requests (a new key appears about hourly).
    #[serde(default = "default_key_poll")]
    pub poll_secs: u64,
    /// Which key managers are trusted (default `any`; production: `tdx` with the root's
    /// `key_manager_image_hash`).
    #[serde(default = "policy_any")]
    pub policy: PolicyConfig,
}

fn default_key_poll() -> u64 {
    30
}

/// `key-manager.toml`: the key manager role (cocoon-protocol-9060ce5.md §1.5, §2.9).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyManagerConfig {
    /// Owner of the key manager's cocoon wallet (which pays 0.4 TON per key registration).
    pub owner_address: String,
    /// The attested port proxies ask for keys (`host:port`; COCOON: 13001 through its router).
    #[serde(default = "default_km_listen")]
    pub listen: String,
    /// Stats, metrics and key administration HTTP (`host:port`); empty disables it.
    #[serde(default = "default_km_http")]
    pub http_listen: String,
    /// The SQLite key store (the private keys: keep it on an encrypted disk).
    pub db_path: PathBuf,
    /// Test network mode.
    #[serde(default = "yes")]
    pub is_test: bool,
    /// Seconds between new encryption keys (COCOON: 3600).
    #[serde(default = "default_rotation")]
    pub rotation_secs: u64,
    /// Seconds each key stays valid (COCOON: 86400).
    #[serde(default = "default_lifetime")]
    pub lifetime_secs: u64,
    /// This node's identity and evidence; its key is the machine key that signs key
    /// registrations (the root's `key_manager_public_key`).
    #[serde(default)]
    pub attestation: AttestationConfig,
    /// Which callers get keys (default `any`; production: `tdx` with the root's proxy
    /// image hashes).
    #[serde(default = "policy_any")]
    pub caller_policy: PolicyConfig,
    /// Whether a caller's image hash must also be among the root's proxy hashes (or worker
    /// hashes, for workers), as COCOON's `check_hashes`. Default: on unless `is_test`.
    pub check_root_hashes: Option<bool>,
    /// Chain access: with a chain, each key is registered on the root.
    #[serde(default)]
    pub chain: ChainConfig,
}

fn default_km_listen() -> String {
    "0.0.0.0:13001".into()
}
fn default_km_http() -> String {
    "127.0.0.1:13000".into()
}
fn default_rotation() -> u64 {
    3600
}
fn default_lifetime() -> u64 {
    86_400
}

fn default_client_listen() -> String {
    "0.0.0.0:11002".into()
}
fn default_worker_listen() -> String {
    "0.0.0.0:11001".into()
}
fn default_proxy_http() -> String {
    "127.0.0.1:11000".into()
}
fn yes() -> bool {
    true
}
fn default_attempts() -> u32 {
    3
}

/// `worker.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Payout recipient.
    pub owner_address: String,
    /// The OpenAI-compatible model server (`http://host:port`). May be empty when the
    /// worker runs the embedded engine (`cocoon worker --model`).
    #[serde(default)]
    pub upstream: String,
    /// Full model id `NAME@COMMIT:HASH`; read from the upstream's `/v1/models` if empty.
    #[serde(default)]
    pub model: String,
    /// Price coefficient (1000 = 1.0×).
    #[serde(default = "default_coefficient")]
    pub coefficient: u32,
    /// Requests run at once, over all proxies.
    #[serde(default = "default_max_active")]
    pub max_active_requests: u32,
    /// Proxies to serve (`host:port` of their worker ports).
    pub proxies: Vec<String>,
    /// Stats and metrics HTTP (`host:port`); empty disables it.
    #[serde(default = "default_worker_http")]
    pub http_listen: String,
    /// Test network mode.
    #[serde(default = "yes")]
    pub is_test: bool,
    /// This node's identity and evidence.
    #[serde(default)]
    pub attestation: AttestationConfig,
    /// Which proxies are accepted (default `any`; production uses `tdx`).
    #[serde(default = "policy_any")]
    pub proxy_policy: PolicyConfig,
    /// Chain access (prices for the cost fields).
    #[serde(default)]
    pub chain: ChainConfig,
    /// Where the best payout voucher from each proxy is kept (`<proxy contract>.boc`),
    /// for `cocoon worker payout`; unset keeps them in memory only.
    #[serde(default)]
    pub voucher_dir: Option<PathBuf>,
    /// How long to wait at start for the model server's `/v1/models` to answer, in
    /// seconds (it may still be loading its weights); then the worker gives up with
    /// the last error. 0 tries once.
    #[serde(default = "default_upstream_wait")]
    pub upstream_wait_secs: u64,
    /// The script a proxy's `worker.changeModel` runs (COCOON's `change_model_script`),
    /// with the new full model id as its only argument; it reconfigures or restarts the
    /// model server and exits 0 when the new model is served. Unset refuses every change.
    #[serde(default)]
    pub change_model_script: Option<PathBuf>,
    /// Seconds the change script may run before it is killed and the change refused.
    #[serde(default = "default_change_model_timeout")]
    pub change_model_timeout_secs: u64,
    /// Refuse a model change unless `sha256(NAME@COMMIT:HASH)` of the new model is among
    /// the root contract's `model_hashes` (as COCOON's worker when it checks image
    /// hashes). Default: on when `is_test` is false.
    #[serde(default)]
    pub check_model_hashes: Option<bool>,
}

fn default_change_model_timeout() -> u64 {
    crate::worker::change_model::DEFAULT_SCRIPT_TIMEOUT.as_secs()
}

impl WorkerConfig {
    /// How this worker serves a proxy's `worker.changeModel`.
    pub fn model_change(&self) -> crate::worker::ModelChangeSettings {
        crate::worker::ModelChangeSettings {
            script: self.change_model_script.clone(),
            check_model_hashes: self.check_model_hashes.unwrap_or(!self.is_test),
            timeout: Duration::from_secs(self.change_model_timeout_secs),
        }
    }
}

/// The default of [`WorkerConfig::upstream_wait_secs`]: two minutes.
pub const DEFAULT_UPSTREAM_WAIT_SECS: u64 = 120;

fn default_upstream_wait() -> u64 {
    DEFAULT_UPSTREAM_WAIT_SECS
}

fn default_coefficient() -> u32 {
    1000
}
fn default_max_active() -> u32 {
    60
}
fn default_worker_http() -> String {
    "127.0.0.1:12000".into()
}

/// `client.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The client's wallet address (how proxies know it).
    pub owner_address: String,
    /// The OpenAI-compatible HTTP API (`host:port`).
    #[serde(default = "default_client_http")]
    pub http_listen: String,
    /// Proxies to use, with failover (`host:port` of their client ports).
    pub proxies: Vec<String>,
    /// Shared secret for short authorization.
    #[serde(default)]
    pub secret_string: String,
    /// Test network mode.
    #[serde(default = "yes")]
    pub is_test: bool,
    /// Default highest worker coefficient per request (1000 = 1.0×).
    #[serde(default = "default_max_coefficient")]
    pub default_max_coefficient: u32,
    /// Default request timeout in seconds.
    #[serde(default = "default_timeout")]
    pub default_timeout: f64,
    /// This node's identity and evidence.
    #[serde(default)]
    pub attestation: AttestationConfig,
    /// Which proxies are accepted (default `any`; production uses `tdx`).
    #[serde(default = "policy_any")]
    pub proxy_policy: PolicyConfig,
    /// Chain access.
    #[serde(default)]
    pub chain: ChainConfig,
    /// The Batch API (`/v1/files`, `/v1/batches`): where its files and state live and its
    /// limits. Absent: the gateway answers those endpoints with a 404 that says so.
    #[serde(default)]
    pub batch: Option<BatchConfig>,
    /// The SQLite file of the gateway's API keys (`cocoon client keys add|list|revoke
    /// --config client.toml`). Once it holds a key, every request needs one.
    #[serde(default)]
    pub api_keys: Option<PathBuf>,
    /// Serve the API on an address other than loopback although no API key exists (the
    /// gateway refuses to start that way otherwise: anyone who reaches it spends the
    /// client's TON).
    #[serde(default)]
    pub public_without_keys: bool,
}

/// `[batch]` of `client.toml`: the OpenAI Batch API on the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Directory of the uploaded and produced files and of `batches.sqlite` (created).
    pub dir: PathBuf,
    /// Largest file accepted (bytes; HTTP 413 above). Default 1 GiB.
    #[serde(default = "default_batch_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Most requests in one file (HTTP 400 above). Default 1,000,000.
    #[serde(default = "default_batch_max_lines")]
    pub max_lines: u64,
    /// Most batch lines in flight at once, over all batches (they share it fairly: first
    /// come, first served). Default 64.
    #[serde(default = "default_batch_concurrency")]
    pub max_concurrency: usize,
    /// Times a line is sent before a transient failure (no free worker, a lost connection,
    /// a timeout) goes to the error file. Default 5.
    #[serde(default = "default_batch_attempts")]
    pub attempts: u32,
}

impl BatchConfig {
    /// The defaults, with files and state in `dir`.
    pub fn in_dir(dir: PathBuf) -> Self {
        BatchConfig {
            dir,
            max_file_bytes: default_batch_max_file_bytes(),
            max_lines: default_batch_max_lines(),
            max_concurrency: default_batch_concurrency(),
            attempts: default_batch_attempts(),
        }
    }
}

fn default_batch_max_file_bytes() -> u64 {
    1 << 30
}
fn default_batch_max_lines() -> u64 {
    1_000_000
}
fn default_batch_concurrency() -> usize {
    64
}
fn default_batch_attempts() -> u32 {
    5
}

fn default_client_http() -> String {
    "127.0.0.1:10000".into()
}
fn default_max_coefficient() -> u32 {
    4000
}
fn default_timeout() -> f64 {
    120.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker config with only what it must have.
    fn minimal_worker() -> WorkerConfig {
        toml::from_str(
            r#"
            owner_address = "UQworker"
            upstream = "http://127.0.0.1:8000"
            proxies = ["127.0.0.1:11001"]
            "#,
        )
        .expect("valid")
    }

    #[test]
    fn minimal_worker_config_gets_defaults() {
        let cfg: WorkerConfig = minimal_worker();
        assert_eq!(cfg.coefficient, 1000);
        assert_eq!(cfg.max_active_requests, 60);
        assert_eq!(cfg.proxy_policy.kind, PolicyKind::Any);
        assert_eq!(cfg.chain.prices().expect("prices").price_per_token, 2);
        let change = cfg.model_change();
        assert_eq!(change.script, None);
        assert!(
            !change.check_model_hashes,
            "a test network checks no hashes by default"
        );
        assert_eq!(change.timeout, Duration::from_secs(600));
    }

    #[tokio::test]
    async fn a_router_in_front_changes_listeners_and_dialers() {
        let behind: WorkerConfig = toml::from_str(
            r#"
            owner_address = "UQworker"
            upstream = "http://127.0.0.1:8000"
            proxies = ["127.0.0.1:11001"]
            [attestation.router]
            "#,
        )
        .expect("valid");
        let mut identity = behind.attestation.identity().expect("identity");
        let err = identity
            .dialer(&behind.proxy_policy)
            .err()
            .expect("no SOCKS5 port to dial through");
        assert!(
            err.to_string().contains("attestation.router.socks5"),
            "{err}"
        );
        let listener = identity
            .listener(&behind.proxy_policy, None)
            .expect("listener");
        assert!(matches!(listener, ListenerSpec::BehindRouter(_)));
        // Behind a router the port is plain TCP: the first bytes it expects are the
        // router's prefix, not a PoW request.
        let bound = listener.bind("127.0.0.1:0").await.expect("bind");
        assert!(bound.local_addr().is_ok());

        let own: WorkerConfig = minimal_worker();
        let mut identity = own.attestation.identity().expect("identity");
        assert!(identity.dialer(&own.proxy_policy).is_ok());
        assert!(matches!(
            identity
                .listener(&own.proxy_policy, None)
                .expect("listener"),
            ListenerSpec::Attested(_)
        ));
    }

    #[test]
    fn a_sealed_node_key_is_derived_again_on_every_start() {
        let sealed: AttestationConfig =
            toml::from_str("tee = \"fake_tee\"\nkey_source = \"sealed\"").expect("valid");
        let first = sealed.identity().expect("identity").key;
        let again = sealed.identity().expect("identity").key;
        assert_eq!(
            first.to_bytes(),
            again.to_bytes(),
            "the same key each start"
        );
        assert_eq!(
            first.to_bytes(),
            cocoon_attest::seal::DEBUG_SEAL_KEY,
            "without a TEE: COCOON's debug-image APP_KEY"
        );

        let both: AttestationConfig =
            toml::from_str("key_source = \"sealed\"\nkey_file = \"k.pem\"").expect("valid");
        let err = both.identity().expect_err("key_file and sealed");
        assert!(err.to_string().contains("key_file must go"), "{err}");

        let tdx: AttestationConfig =
            toml::from_str("tee = \"tdx\"\nkey_source = \"sealed\"").expect("valid");
        let err = tdx.identity().expect_err("no TDX sealing");
        assert!(err.to_string().contains("not available on TDX"), "{err}");

        if !std::path::Path::new(cocoon_attest::seal::SEV_GUEST_DEVICE).exists() {
            let sev: AttestationConfig =
                toml::from_str("tee = \"sev\"\nkey_source = \"sealed\"").expect("valid");
            let err = sev.identity().expect_err("not an SNP guest");
            assert!(err.to_string().contains("/dev/sev-guest"), "{err}");
        }
    }

    #[test]
    fn model_change_settings_follow_the_config() {
        let cfg: WorkerConfig = toml::from_str(
            r#"
            owner_address = "UQworker"
            proxies = []
            is_test = false
            change_model_script = "/opt/cocoon/change-model.sh"
            change_model_timeout_secs = 30
            "#,
        )
        .expect("valid");
        let change = cfg.model_change();
        assert_eq!(
            change.script.as_deref(),
            Some(Path::new("/opt/cocoon/change-model.sh"))
        );
        assert!(change.check_model_hashes, "production checks model hashes");
        assert_eq!(change.timeout, Duration::from_secs(30));
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let err = toml::from_str::<ProxyConfig>(
            "owner_address = \"x\"\ndb_path = \"l\"\nclient_port = 5",
        )
        .expect_err("unknown field");
        assert!(
            err.to_string().contains("unknown field `client_port`"),
            "{err}"
        );
        let chain = ChainConfig {
            worker_fee_per_token: 5,
            ..ChainConfig::default()
        };
        assert_eq!(
            chain.prices().expect_err("fee above price").to_string(),
            "invalid configuration: worker_fee_per_token 5 exceeds price_per_token 2"
        );
        let chain = ChainConfig {
            mode: "mainnet".into(),
            ..ChainConfig::default()
        };
        assert!(chain.prices().is_err());
    }

    #[test]
    fn key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/node_key.pem");
        let a = load_or_create_key(&path).expect("create");
        let b = load_or_create_key(&path).expect("load");
        assert_eq!(a.to_bytes(), b.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}

#[cfg(test)]
mod example_files {
    use super::*;

    fn example(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../configs")
            .join(name)
    }

    fn valid_address(s: &str) {
        cocoon_ton::address::parse(s).unwrap_or_else(|e| panic!("example address {s}: {e}"));
    }

    #[test]
    fn the_documented_examples_parse_and_validate() {
        let proxy: ProxyConfig = load(&example("proxy.toml")).expect("proxy.toml");
        assert_eq!(proxy.worker_policy.kind, PolicyKind::FakeTee);
        assert_eq!(proxy.attestation.pow_difficulty, Some(20));
        proxy.chain.prices().expect("proxy prices");
        valid_address(&proxy.owner_address);

        let worker: WorkerConfig = load(&example("worker.toml")).expect("worker.toml");
        assert_eq!(worker.coefficient, 1000);
        assert!(worker.change_model_script.is_some());
        assert_eq!(worker.proxies.len(), 1);
        worker.chain.prices().expect("worker prices");
        valid_address(&worker.owner_address);

        let km: KeyManagerConfig = load(&example("key-manager.toml")).expect("key-manager.toml");
        assert_eq!((km.rotation_secs, km.lifetime_secs), (3600, 86_400));
        assert_eq!(km.caller_policy.kind, PolicyKind::FakeTee);
        valid_address(&km.owner_address);
        assert!(proxy.key_manager.is_none(), "commented out in the example");

        let client: ClientConfig = load(&example("client.toml")).expect("client.toml");
        assert_eq!(client.http_listen, "127.0.0.1:10000");
        assert_eq!(client.proxy_policy.kind, PolicyKind::FakeTee);
        valid_address(&client.owner_address);
        assert!(client.api_keys.is_some() && !client.public_without_keys);
        let batch = client.batch.expect("[batch] in the example");
        let defaults = BatchConfig::in_dir(batch.dir.clone());
        assert_eq!(
            (
                batch.max_file_bytes,
                batch.max_lines,
                batch.max_concurrency,
                batch.attempts
            ),
            (
                defaults.max_file_bytes,
                defaults.max_lines,
                defaults.max_concurrency,
                defaults.attempts
            ),
            "the example shows the defaults"
        );
    }

    #[test]
    fn a_config_error_names_the_file_and_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "owner_address = \"x\"\nupstream = 5\nproxies = []\n")
            .expect("write");
        let err = load::<WorkerConfig>(&path)
            .expect_err("bad type")
            .to_string();
        assert!(err.contains("bad.toml"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }
}
