//! The client's side of a proxy connection (cocoon-protocol.md §2.5 client side, §2.7).
//!
//! A [`ProxySession`] does the handshake and authorization, sends requests as
//! `client.runQueryEx` packets and turns the proxy's answers — of either protocol
//! family, errors included — into a per-request stream of [`AnswerEvent`]s, so no
//! request can hang on an answer the client does not understand.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_net::{ErrorCode, Incoming, RpcConnection, RpcHandle};
use cocoon_tl::enums::client::{AuthorizationWithProxy, ConnectedToProxy, ProxyConnectionAuth};
use cocoon_tl::functions::client as client_fn;
use cocoon_tl::types::{client, proxy};
use cocoon_tl::TlConstructor;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::chain::{ChainContext, RootWatch, VoucherWallet};
use crate::protocol::version::{self, flags};
use crate::protocol::Extensions;
use crate::protocol::Version;
use crate::util::lock;
use cocoon_ton::voucher::VoucherKind;

/// Protocol versions this client speaks (as COCOON 9060ce5's client: 1..=4).
pub const MIN_PROTO: i32 = 1;
/// See [`MIN_PROTO`].
pub const MAX_PROTO: i32 = 4;

/// Settings of a client's proxy connections.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The client's cocoon wallet address (`client_owner_address`).
    pub owner_address: String,
    /// Test network mode; must match the proxy's.
    pub is_test: bool,
    /// Shared secret for short authorization.
    pub secret_string: String,
    /// Root config version the client runs on.
    pub config_version: i32,
    /// Highest protocol version to offer (normally [`MAX_PROTO`]).
    pub max_proto: i32,
    /// The root parameters as they change (§5.7): each connection derives and checks the
    /// proxy's addresses and vouchers under the parameters current when it is made.
    pub chain: RootWatch,
    /// On-chain settlement (None in fake-TON mode): the client contract is deployed,
    /// funded and registered through the client's cocoon wallet, whose address must be
    /// `owner_address`.
    pub onchain: Option<crate::client::settlement::ClientChain>,
}

/// One request for the network.
#[derive(Debug, Clone)]
pub struct QueryRequest {
    /// Base model name.
    pub model: String,
    /// The HTTP request to run at the worker.
    pub http: cocoon_tl::functions::http::Request,
    /// Highest worker coefficient accepted (1000 = 1.0×).
    pub max_coefficient: u32,
    /// Reservation size in tokens.
    pub max_tokens: u32,
    /// Seconds the whole request may take.
    pub timeout: f64,
    /// Ask for debug timings.
    pub enable_debug: bool,
    /// The public key the request's fields are encrypted to (COCOON protocol 3, the app's
    /// `receiver_public_key`); `None`: not encrypted.
    pub encrypted_to: Option<[u8; 32]>,
    /// Answer at most once: the request goes with this id, and a proxy that accepted the
    /// cocoon-rs extensions answers the same id sent again (after a crash of this client)
    /// with the answer it already billed instead of running it again. `None`: a fresh
    /// random id. Every batch line has its own.
    pub answer_once: Option<[u8; 32]>,
}

use crate::protocol::answer::answer_events;
pub use crate::protocol::answer::{AnswerEvent, FinalInfo};

/// Why a proxy session failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A query failed.
    #[error("{0}")]
    Rpc(#[from] cocoon_net::RpcError),
    /// The proxy's answer breaks the rules of §2.5.
    #[error("proxy handshake failed: {0}")]
    Handshake(String),
    /// An encrypted request on a connection whose version carries no key (before 3).
    #[error("the proxy speaks protocol {0}, which carries no encryption key (3 or more needed)")]
    CannotEncrypt(Version),
}

/// What the proxy has told this client about its usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaymentState {
    /// Tokens the proxy has committed to its database for this client.
    pub db_tokens: i64,
    /// Everything the proxy has counted.
    pub max_tokens: i64,
    /// Sum of `request_tokens` of the payment notices received.
    pub tokens_billed: u64,
    /// Payment notices received.
    pub notices: u64,
    /// Tokens covered by the best valid voucher.
    pub voucher_tokens: u64,
    /// The best valid voucher (BOC), if any.
    pub voucher: Option<Vec<u8>>,
    /// Vouchers refused (bad signature, wrong contract or kind).
    pub vouchers_refused: u64,
}

type Routes = Arc<Mutex<HashMap<[u8; 32], mpsc::UnboundedSender<AnswerEvent>>>>;

/// An authorized connection to one proxy.
#[derive(Clone)]
pub struct ProxySession {
    handle: RpcHandle,
    proto: Version,
    /// The cocoon-rs extensions the proxy accepted (none from a COCOON proxy).
    extensions: Extensions,
    params: proxy::Params,
    settings: ClientSettings,
    routes: Routes,
    payments: Arc<Mutex<PaymentState>>,
    vouchers: Arc<Mutex<VoucherWallet>>,
    sent: Arc<AtomicU64>,
    /// Unique per connection in this process (never reused, unlike an address).
    id: u64,
    /// Unix seconds when it was authorized.
    connected_at: u64,
}

/// Source of [`ProxySession`] ids.
static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

impl std::fmt::Debug for ProxySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxySession")
            .field("proto", &self.proto)
            .field("proxy", &self.params.proxy_sc_address)
            .finish()
    }
}

impl ProxySession {
    /// Runs the handshake and authorization on an open connection.
    pub async fn connect(
        conn: RpcConnection,
        settings: ClientSettings,
    ) -> Result<Self, ClientError> {
        let (handle, incoming) = conn.split();
        let max_proto = settings.max_proto.clamp(0, MAX_PROTO);
        let hello = client_fn::ConnectToProxy {
            params: client::Params {
                flags: flags::PARAMS_ANY | Extensions::OURS.flags(),
                client_owner_address: settings.owner_address.clone(),
                is_test: Some(settings.is_test),
                min_proto_version: Some(MIN_PROTO.min(max_proto)),
                max_proto_version: Some(max_proto),
            },
            min_config_version: settings.config_version,
        };
        let ConnectedToProxy::ConnectedToProxy(connected) = handle
            .query_with_timeout(&hello, Duration::from_secs(30))
            .await?;
        let params = connected.params;
        if params.flags & flags::PARAMS_ANY == 0 {
            return Err(ClientError::Handshake("proxy is too old".into()));
        }
        if params.is_test.unwrap_or(false) != settings.is_test {
            return Err(ClientError::Handshake("is_test mismatch".into()));
        }
        // Recompute the proxy's and our own contract addresses (§2.5 step 4) under the
        // root parameters current now. A proxy that announces another contract may have
        // rotated to newer parameters before this client noticed (§5.7): read the root
        // once and derive again before giving up.
        let mut chain = settings.chain.context();
        let mut derived = derive(&chain, &settings.owner_address, &params)?;
        if !derived.announced_matches {
            if let Err(e) = settings.chain.refresh().await {
                warn!(error = %e, "cannot read the root contract");
            }
            let now = settings.chain.context();
            if now.params().params_version != chain.params().params_version {
                info!(
                    from = chain.params().params_version,
                    to = now.params().params_version,
                    "deriving the proxy's contracts again under new root parameters"
                );
                chain = now;
                derived = derive(&chain, &settings.owner_address, &params)?;
            }
        }
        let Derived {
            proxy_sc,
            client_sc,
            announced_matches,
        } = derived;
        if !announced_matches {
            return Err(ClientError::Handshake(format!(
                "proxy contract address mismatch: announced {}, derived {} (root params_version {})",
                params.proxy_sc_address,
                chain.format(&proxy_sc),
                chain.params().params_version
            )));
        }
        let contract = match &settings.onchain {
            Some(oc) => Some(
                oc.contract_in(&chain, &proxy_sc, &params.proxy_public_key)
                    .map_err(|e| ClientError::Handshake(e.to_string()))?,
            ),
            None => None,
        };
        if chain
            .parse_address(&connected.client_sc_address)
            .ok()
            .as_ref()
            != Some(&client_sc)
        {
            return Err(ClientError::Handshake(format!(
                "client contract address mismatch: proxy says {}, derived {}",
                connected.client_sc_address,
                chain.format(&client_sc)
            )));
        }
        let vouchers = Arc::new(Mutex::new(VoucherWallet::new(
            params.proxy_public_key,
            client_sc.clone(),
            VoucherKind::ClientCharge,
        )));
        let proto = version::accept(0..=max_proto, params.proto_version)
            .map_err(|e| ClientError::Handshake(e.to_string()))?;
        let secret_hash: [u8; 32] = Sha256::digest(settings.secret_string.as_bytes()).into();
        let short = matches!(&connected.auth,
            ProxyConnectionAuth::ProxyConnectionAuthShort(s) if s.secret_hash == secret_hash);
        let auth = if short {
            handle
                .query_with_timeout(
                    &client_fn::AuthorizeWithProxyShort {
                        data: settings.secret_string.as_bytes().to_vec(),
                    },
                    Duration::from_secs(30),
                )
                .await?
        } else {
            // Long authorization: on chain, register the proxy's nonce through the client
            // contract first (deploying and funding it if needed); fake-TON proxies
            // accept at once.
            if let (Some(oc), Some(contract)) = (&settings.onchain, &contract) {
                let nonce = match &connected.auth {
                    ProxyConnectionAuth::ProxyConnectionAuthLong(l) => l.nonce,
                    ProxyConnectionAuth::ProxyConnectionAuthShort(s) => s.nonce,
                };
                // TL `long` to the contract's uint64: the same 64 bits.
                oc.register(contract, nonce as u64)
                    .await
                    .map_err(|e| ClientError::Handshake(format!("on-chain registration: {e}")))?;
            }
            handle
                .query_with_timeout(
                    &client_fn::AuthorizeWithProxyLong {},
                    Duration::from_secs(300),
                )
                .await?
        };
        let payments = Arc::new(Mutex::new(PaymentState::default()));
        match auth {
            AuthorizationWithProxy::AuthorizationWithProxySuccess(s) => {
                let mut p = lock(&payments);
                p.db_tokens = s.tokens_committed_to_db;
                p.max_tokens = s.max_tokens;
                offer_voucher(&mut p, &vouchers, &s.signed_payment);
            }
            AuthorizationWithProxy::AuthorizationWithProxyFailed(f) => {
                return Err(ClientError::Handshake(format!(
                    "authorization refused: {} {}",
                    f.error_code, f.error
                )))
            }
        }
        info!(%proto, proxy = %params.proxy_sc_address, "connected to proxy");
        if let (Some(oc), Some(contract)) = (settings.onchain.clone(), contract) {
            let payments = payments.clone();
            let handle = handle.clone();
            tokio::spawn(async move {
                oc.maintain(
                    &contract,
                    move || u64::try_from(lock(&payments).max_tokens).unwrap_or(0),
                    move || !handle.is_closed(),
                )
                .await;
            });
        }
        let routes: Routes = Arc::default();
        tokio::spawn(dispatch(
            incoming,
            routes.clone(),
            payments.clone(),
            vouchers.clone(),
        ));
        Ok(ProxySession {
            handle,
            proto,
            extensions: Extensions::offered(params.flags),
            params,
            settings,
            routes,
            payments,
            vouchers,
            sent: Arc::default(),
            id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
            connected_at: crate::util::unix_time(),
        })
    }

    /// The protocol version in use.
    pub fn proto(&self) -> Version {
        self.proto
    }

    /// The proxy's announced parameters.
    pub fn proxy_params(&self) -> &proxy::Params {
        &self.params
    }

    /// Identifies this session among the client's sessions (clones share it; a later
    /// connection never gets the same key).
    pub(crate) fn key(&self) -> usize {
        usize::try_from(self.id).unwrap_or(usize::MAX)
    }

    /// Whether the proxy answers a request sent with
    /// [`QueryRequest::answer_once`] at most once (a cocoon-rs proxy; COCOON's would run
    /// it again).
    pub fn answers_once(&self) -> bool {
        self.extensions.answer_once()
    }

    /// What the client pays per adjusted token now (nanoTON, the root's price).
    pub fn price_per_token(&self) -> u64 {
        self.settings.chain.context().params().price_per_token
    }

    /// Whether the connection is still open.
    pub fn is_open(&self) -> bool {
        !self.handle.is_closed()
    }

    /// Resolves when the connection ends.
    pub fn closed(
        &self,
    ) -> impl std::future::Future<Output = cocoon_net::CloseReason> + Send + 'static {
        self.handle.closed()
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.handle.close();
    }

    /// What the proxy has reported about this client's usage.
    pub fn payments(&self) -> PaymentState {
        lock(&self.payments).clone()
    }

    /// Requests sent on this session.
    pub fn requests_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Sends a request; its answer arrives on the returned channel. The channel always
    /// ends with `Done` or `Error` (an `Error` with code 651 if the connection drops).
    pub async fn run_query(
        &self,
        request: QueryRequest,
    ) -> Result<([u8; 32], mpsc::UnboundedReceiver<AnswerEvent>), ClientError> {
        if request.encrypted_to.is_some() && !self.proto.request_keys() {
            return Err(ClientError::CannotEncrypt(self.proto));
        }
        let request_id: [u8; 32] = request.answer_once.unwrap_or_else(rand::random);
        let once = match request.answer_once {
            Some(_) if self.extensions.answer_once() => flags::QUERY_ANSWER_ONCE,
            _ => 0,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.routes).insert(request_id, tx);
        let query = cocoon_tl::to_bytes(&request.http);
        let timeout = request.timeout * 0.95;
        let sent = if self.proto.ex_answers() {
            let msg = client_fn::RunQueryEx {
                model_name: request.model,
                query,
                max_coefficient: i32::try_from(request.max_coefficient).unwrap_or(i32::MAX),
                max_tokens: i32::try_from(request.max_tokens).unwrap_or(i32::MAX),
                timeout,
                request_id,
                min_config_version: self.settings.config_version,
                flags: 1 | once,
                enable_debug: Some(request.enable_debug),
                // Protocol 3: the key field travels, zero when not encrypted.
                public_key: self
                    .proto
                    .request_keys()
                    .then(|| request.encrypted_to.unwrap_or([0; 32])),
            };
            self.handle.send_packet(&msg).await
        } else {
            let msg = client_fn::RunQuery {
                model_name: request.model,
                query,
                max_coefficient: i32::try_from(request.max_coefficient).unwrap_or(i32::MAX),
                max_tokens: i32::try_from(request.max_tokens).unwrap_or(i32::MAX),
                timeout,
                request_id,
                min_config_version: self.settings.config_version,
            };
            self.handle.send_packet(&msg).await
        };
        if let Err(e) = sent {
            lock(&self.routes).remove(&request_id);
            return Err(e.into());
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok((request_id, rx))
    }

    /// Tells the proxy that the caller of a request went away, so the worker stops
    /// (a cocoon-rs extension: a COCOON proxy is not told and the request runs to its end).
    pub async fn cancel(&self, request_id: [u8; 32]) {
        lock(&self.routes).remove(&request_id);
        if self.extensions.cancellation() {
            let msg = cocoon_tl::types::cocoonrs::CancelQuery { request_id };
            let _ = self.handle.send_packet(&msg).await;
        }
    }

    /// The proxy's models with their workers (`getWorkerTypesV2`).
    pub async fn worker_types(&self) -> Result<client::WorkerTypesV2, ClientError> {
        let cocoon_tl::enums::client::WorkerTypesV2::WorkerTypesV2(types) = self
            .handle
            .query_with_timeout(&client_fn::GetWorkerTypesV2 {}, Duration::from_secs(10))
            .await?;
        Ok(types)
    }

    /// Per model, the endpoints its workers serve (`cocoonrs.getEndpointsOfModels`);
    /// `None` from a proxy without the cocoon-rs extensions (a COCOON proxy).
    pub async fn endpoints_of_models(
        &self,
    ) -> Result<Option<cocoon_tl::types::cocoonrs::EndpointsOfModels>, ClientError> {
        if !self.extensions.endpoints() {
            return Ok(None);
        }
        let cocoon_tl::enums::cocoonrs::EndpointsOfModels::EndpointsOfModels(answer) = self
            .handle
            .query_with_timeout(
                &cocoon_tl::functions::cocoonrs::GetEndpointsOfModels {},
                Duration::from_secs(10),
            )
            .await?;
        Ok(Some(answer))
    }

    /// The proxy's and its serving workers' evidence for `nonce`
    /// (`cocoonrs.getAttestation`); `None` from a proxy without the cocoon-rs extensions
    /// (a COCOON proxy serves none).
    pub async fn attestation(
        &self,
        nonce: &[u8],
    ) -> Result<Option<cocoon_tl::types::cocoonrs::Attestation>, ClientError> {
        if !self.extensions.attestation() {
            return Ok(None);
        }
        let cocoon_tl::enums::cocoonrs::Attestation::Attestation(answer) = self
            .handle
            .query_with_timeout(
                &cocoon_tl::functions::cocoonrs::GetAttestation {
                    nonce: nonce.to_vec(),
                },
                Duration::from_secs(15),
            )
            .await?;
        Ok(Some(answer))
    }

    /// When this session was authorized (unix seconds): its proxy's certificate was
    /// verified then.
    pub fn connected_at(&self) -> u64 {
        self.connected_at
    }

    /// Refreshes the payment state (`updatePaymentStatus`).
    pub async fn refresh_payment_status(&self) -> Result<PaymentState, ClientError> {
        let cocoon_tl::enums::client::PaymentStatus::PaymentStatus(s) = self
            .handle
            .query_with_timeout(&client_fn::UpdatePaymentStatus {}, Duration::from_secs(60))
            .await?;
        let mut p = lock(&self.payments);
        p.db_tokens = p.db_tokens.max(s.db_tokens);
        p.max_tokens = p.max_tokens.max(s.max_tokens);
        offer_voucher(&mut p, &self.vouchers, &s.signed_payment);
        Ok(p.clone())
    }
}

/// The contract addresses a client derives from a proxy's announced parameters.
struct Derived {
    proxy_sc: tycho_types::models::StdAddr,
    client_sc: tycho_types::models::StdAddr,
    /// Whether the proxy announced the proxy contract derived here.
    announced_matches: bool,
}

/// Derives the proxy's contract and the client's contract at it under `chain`.
fn derive(
    chain: &ChainContext,
    owner_address: &str,
    params: &proxy::Params,
) -> Result<Derived, ClientError> {
    let derived = chain
        .parse_address(&params.proxy_owner_address)
        .and_then(|owner| chain.proxy_sc(&owner, &params.proxy_public_key))
        .and_then(|proxy_sc| {
            let wallet = chain.parse_address(owner_address)?;
            let client_sc = chain.client_sc(&wallet, &proxy_sc, &params.proxy_public_key)?;
            Ok((proxy_sc, client_sc))
        })
        .map_err(|e| ClientError::Handshake(e.to_string()))?;
    let (proxy_sc, client_sc) = derived;
    let announced_matches =
        chain.parse_address(&params.proxy_sc_address).ok().as_ref() == Some(&proxy_sc);
    Ok(Derived {
        proxy_sc,
        client_sc,
        announced_matches,
    })
}

/// Routes the proxy's packets to the requests they belong to.
async fn dispatch(
    mut incoming: mpsc::Receiver<Incoming>,
    routes: Routes,
    payments: Arc<Mutex<PaymentState>>,
    vouchers: Arc<Mutex<VoucherWallet>>,
) {
    while let Some(item) = incoming.recv().await {
        let data = match item {
            Incoming::Packet(data) => data,
            Incoming::Query(q) => {
                let _ = q
                    .error(
                        ErrorCode::ProtocolViolation.code(),
                        "client serves no queries",
                    )
                    .await;
                continue;
            }
        };
        if cocoon_tl::peek_id(&data) == Some(proxy::ClientRequestPayment::ID) {
            match cocoon_tl::from_bytes::<proxy::ClientRequestPayment>(&data) {
                Ok(p) => record_payment(&payments, &vouchers, p),
                Err(e) => warn!(error = %e, "malformed payment notice ignored"),
            }
            continue;
        }
        match answer_events(&data) {
            Ok(Some((request_id, events))) => {
                let mut routes = lock(&routes);
                let mut open = true;
                for event in events {
                    let last = matches!(event, AnswerEvent::Done(_) | AnswerEvent::Error { .. });
                    open = routes
                        .get(&request_id)
                        .is_some_and(|tx| tx.send(event).is_ok())
                        && !last;
                    if !open {
                        break;
                    }
                }
                if !open {
                    routes.remove(&request_id);
                }
            }
            Ok(None) => debug!(id = ?cocoon_tl::peek_id(&data), "unhandled proxy packet"),
            Err(e) => warn!(error = %e, "malformed answer from proxy ignored"),
        }
    }
    // The connection is gone: every open request ends with an error.
    let open: Vec<_> = lock(&routes).drain().collect();
    for (_, tx) in open {
        let _ = tx.send(AnswerEvent::Error {
            code: ErrorCode::NotReady.code(),
            message: "connection to proxy lost".into(),
            info: FinalInfo::default(),
        });
    }
}

fn record_payment(
    payments: &Mutex<PaymentState>,
    vouchers: &Mutex<VoucherWallet>,
    p: proxy::ClientRequestPayment,
) {
    let mut state = lock(payments);
    state.db_tokens = state.db_tokens.max(p.db_tokens);
    state.max_tokens = state.max_tokens.max(p.max_tokens);
    state.tokens_billed += u64::try_from(p.request_tokens).unwrap_or(0);
    state.notices += 1;
    offer_voucher(&mut state, vouchers, &p.signed_payment);
}

/// Checks a voucher from the proxy and keeps it if it is valid and covers more.
fn offer_voucher(
    state: &mut PaymentState,
    vouchers: &Mutex<VoucherWallet>,
    payment: &cocoon_tl::enums::proxy::SignedPayment,
) {
    let cocoon_tl::enums::proxy::SignedPayment::SignedPayment(v) = payment else {
        return;
    };
    let mut wallet = lock(vouchers);
    match wallet.offer(&v.data) {
        Ok(true) => {
            state.voucher_tokens = wallet.tokens();
            state.voucher = Some(v.data.clone());
        }
        Ok(false) => {}
        Err(e) => {
            state.vouchers_refused += 1;
            warn!(error = %e, "voucher from proxy refused");
        }
    }
}
