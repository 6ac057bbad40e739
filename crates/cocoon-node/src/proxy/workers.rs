//! A worker connection's queries (hello, balance comparison, readiness, payment status), its
//! packets (availability, coefficient, answers) and its end.

use cocoon_net::{ErrorCode, IncomingQuery, RpcError, RpcHandle};
use cocoon_tl::functions::worker as worker_fn;
use cocoon_tl::types::{cocoonrs, proxy, worker};
use cocoon_tl::{enums, TlConstructor};
use tracing::{debug, info, warn};
use tycho_types::models::StdAddr;

use super::connections::{hang_up, not_served, Hangup};
use super::routing::{Reputation, WorkerLink};
use super::{log_text, to_i64, Proxy};
use crate::chain::Owner;
use crate::ledger::Party;
use crate::protocol::endpoint::Endpoints;
use crate::protocol::http::base_model_name;
use crate::protocol::version::flags;
use crate::protocol::{Extensions, Refusal};

/// One worker connection as the proxy's admin endpoints show it (`/jsonstats`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkerConnection {
    /// The proxy's id of the connection, stable while it lives (what
    /// [`Proxy::change_worker_model`] takes). A reconnect gets a new id.
    pub connection_id: u64,
    /// The worker's owner address.
    pub owner: String,
    /// The full model id it announced (`NAME@COMMIT:HASH`).
    pub model: String,
    /// The base model name requests are routed on.
    pub base_model: String,
    /// Its price coefficient (1000 = 1.0×).
    pub coefficient: u32,
    /// Requests running on it now.
    pub running: u32,
    /// Requests this proxy may run on it at once.
    pub max_active: u32,
    /// Its handshake is complete.
    pub ready: bool,
    /// It said it takes no requests now.
    pub disabled: bool,
    /// The negotiated protocol version.
    pub proto: i32,
}

/// Why a worker connection did not change its model
/// ([`Proxy::change_worker_model`]).
#[derive(Debug, thiserror::Error)]
pub enum ChangeWorkerModelError {
    /// No worker connection has this id (it may have reconnected under a new one).
    #[error("connection {0} not found")]
    NotFound(u64),
    /// The connection's handshake is not complete.
    #[error("connection {0} is not ready")]
    NotReady(u64),
    /// The worker answered with an error (COCOON's and ours: 602 `cannot change
    /// model: …`).
    #[error("the worker refused with code {code}: {message}")]
    Refused {
        /// The worker's error code.
        code: i32,
        /// The worker's message.
        message: String,
    },
    /// The worker did not answer in time.
    #[error("the worker did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The connection failed before the answer.
    #[error("the worker connection failed: {0}")]
    Connection(RpcError),
}

impl Proxy {
    /// Every worker connection, ready or not, in connection id order.
    pub fn worker_connections(&self) -> Vec<WorkerConnection> {
        self.state()
            .workers
            .all()
            .map(|(id, w)| WorkerConnection {
                connection_id: id,
                owner: w.owner.as_str().to_owned(),
                model: w.model_id.clone(),
                base_model: w.model.clone(),
                coefficient: w.coefficient,
                running: w.running,
                max_active: w.max_active,
                ready: w.ready,
                disabled: w.disabled,
                proto: w.proto.number(),
            })
            .collect()
    }

    /// Asks the worker on connection `connection_id` to serve `new_model` (a full
    /// `NAME@COMMIT:HASH` id) with `worker.changeModel` (COCOON 9060ce5, §2.10), and waits
    /// for its answer at most [`crate::limits::CHANGE_MODEL_TIMEOUT`]. A cocoon-rs worker
    /// that accepts reconnects under a new connection id announcing the new model, once
    /// its running requests finish.
    pub async fn change_worker_model(
        &self,
        connection_id: u64,
        new_model: &str,
    ) -> Result<(), ChangeWorkerModelError> {
        let handle = {
            let state = self.state();
            let w = state
                .workers
                .get(connection_id)
                .ok_or(ChangeWorkerModelError::NotFound(connection_id))?;
            if !w.ready {
                return Err(ChangeWorkerModelError::NotReady(connection_id));
            }
            w.handle.clone()
        };
        info!(connection = connection_id, new_model = %log_text(new_model), "asking a worker to change its model");
        let query = worker_fn::ChangeModel {
            new_model: new_model.to_owned(),
        };
        let result = handle
            .query_with_timeout(&query, crate::limits::CHANGE_MODEL_TIMEOUT)
            .await;
        match result {
            Ok(_) => {
                info!(connection = connection_id, "the worker changed its model");
                Ok(())
            }
            Err(e) => {
                warn!(connection = connection_id, error = %e, "the worker did not change its model");
                Err(match e {
                    RpcError::Remote { code, message } => {
                        ChangeWorkerModelError::Refused { code, message }
                    }
                    RpcError::Timeout(after) => ChangeWorkerModelError::Timeout(after),
                    other => ChangeWorkerModelError::Connection(other),
                })
            }
        }
    }

    /// Handles a worker query; Err means the connection must close.
    pub(super) async fn worker_query(
        &self,
        id: u64,
        handle: &RpcHandle,
        q: IncomingQuery,
    ) -> Result<(), Hangup> {
        let s = &self.shared.settings;
        match q.function_id() {
            Some(worker_fn::ConnectToProxy::ID) => {
                let req: worker_fn::ConnectToProxy = q.decode()?;
                let p = &req.params;
                let refuse = if p.flags & flags::PARAMS_BASE == 0 {
                    Some("worker params lack is_test".to_owned())
                } else if p.is_test.unwrap_or(false) != s.is_test {
                    Some(format!("is_test mismatch: proxy {}", s.is_test))
                } else if p.model.is_empty() {
                    Some("empty model name".into())
                } else if !(0..1_000_000_000).contains(&p.coefficient) {
                    Some(format!("coefficient {} out of range", p.coefficient))
                } else if p.max_active_requests.unwrap_or(0) < 1 || p.proxy_cnt.unwrap_or(0) < 1 {
                    Some("max_active_requests and proxy_cnt must be at least 1".into())
                } else {
                    None
                };
                let admitted = self.admit(
                    refuse,
                    (p.flags, p.min_proto_version, p.max_proto_version),
                    &p.worker_owner_address,
                    Party::Worker,
                );
                let (proto, owner, worker_sc) = match admitted {
                    Ok(x) => x,
                    Err(e) => return Err(hang_up(q, e.code(), e.to_string()).await),
                };
                let max_active = u32::try_from(p.max_active_requests.unwrap_or(1)).unwrap_or(1);
                let proxies = u32::try_from(p.proxy_cnt.unwrap_or(1)).unwrap_or(1).max(1);
                let epoch = self.epoch();
                let worker_sc_address = epoch.chain.format(&worker_sc);
                let link = WorkerLink {
                    owner,
                    sc: worker_sc,
                    model: base_model_name(&p.model).to_owned(),
                    model_id: p.model.clone(),
                    coefficient: u32::try_from(p.coefficient).unwrap_or(0),
                    max_active: max_active.div_ceil(proxies),
                    running: 0,
                    disabled: true,
                    ready: false,
                    proto,
                    extensions: Extensions::offered(p.flags),
                    // Ours announce theirs before the handshake completes.
                    endpoints: if Extensions::offered(p.flags).endpoints() {
                        Endpoints::ALL
                    } else {
                        Endpoints::COCOON
                    },
                    handle: handle.clone(),
                    reputation: Reputation::new(),
                };
                if let Some(chain) = &epoch.settlement {
                    let noted = epoch
                        .chain
                        .parse_address(&link.owner)
                        .map_err(|e| e.to_string())
                        .and_then(|a| {
                            chain
                                .worker_connected(&a, &link.owner)
                                .map_err(|e| e.to_string())
                        });
                    if let Err(e) = noted {
                        warn!(error = %e, "worker contract not derivable");
                    }
                }
                info!(owner = %link.owner, model = %log_text(&link.model), coefficient = link.coefficient, %proto, "worker connected");
                self.state().workers.insert(id, link);
                let answer = worker::ConnectedToProxy {
                    params: self.params(proto, Extensions::offered(p.flags)),
                    worker_sc_address,
                };
                q.answer(&answer).await.map_err(Hangup::from)
            }
            Some(worker_fn::CompareBalanceWithProxy::ID) => {
                let req: worker_fn::CompareBalanceWithProxy = q.decode()?;
                let Some((owner, sc)) = self.worker_identity(id) else {
                    let message = "compare before connectToProxy".to_owned();
                    return Err(hang_up(q, ErrorCode::ProtocolViolation, message).await);
                };
                let known = to_i64(self.contract_tokens(&owner, Party::Worker));
                if req.tokens_committed_to_blockchain > known || req.tokens_committed_to_db > known
                {
                    let reason = format!(
                        "worker reports {} tokens committed, this proxy knows {known}",
                        req.tokens_committed_to_blockchain
                            .max(req.tokens_committed_to_db)
                    );
                    warn!(%owner, %reason, "worker refused");
                    return Err(hang_up(q, ErrorCode::ProtocolViolation, reason).await);
                }
                let answer = worker::CompareBalanceWithProxyResult {
                    signed_payment: self.voucher_for(
                        &owner,
                        &sc,
                        u64::try_from(known).unwrap_or(0),
                        Party::Worker,
                    ),
                    tokens_committed_to_db: known,
                    max_tokens: known,
                    error_code: i32::from(req.max_tokens > known),
                };
                q.answer(&answer).await.map_err(Hangup::from)
            }
            Some(worker_fn::ExtendedCompareBalanceWithProxy::ID) => {
                let answer = worker::ExtendedCompareBalanceWithProxyResult { error_code: 0 };
                q.answer(&answer).await.map_err(Hangup::from)
            }
            Some(worker_fn::ProxyHandshakeComplete::ID) => {
                let req: worker_fn::ProxyHandshakeComplete = q.decode()?;
                {
                    let mut state = self.state();
                    let Some(w) = state.workers.get_mut(id) else {
                        return Err(Hangup::BeforeHello("proxyHandshakeComplete"));
                    };
                    w.ready = true;
                    w.disabled = req.is_disabled;
                }
                q.answer(&worker::ProxyHandshakeCompleted {})
                    .await
                    .map_err(Hangup::from)
            }
            Some(worker_fn::UpdatePaymentStatus::ID) => {
                let Some((owner, sc)) = self.worker_identity(id) else {
                    let message = "payment status before connectToProxy".to_owned();
                    return Err(hang_up(q, ErrorCode::ProtocolViolation, message).await);
                };
                let earned = self.contract_tokens(&owner, Party::Worker);
                let answer = worker::PaymentStatus {
                    signed_payment: self.voucher_for(&owner, &sc, earned, Party::Worker),
                    db_tokens: to_i64(earned),
                    max_tokens: to_i64(earned),
                };
                q.answer(&answer).await.map_err(Hangup::from)
            }
            _ => {
                not_served(q).await;
                Ok(())
            }
        }
    }

    /// The owner and contract of worker connection `id`, once its hello was admitted.
    fn worker_identity(&self, id: u64) -> Option<(Owner, StdAddr)> {
        let state = self.state();
        let w = state.workers.get(id)?;
        Some((w.owner.clone(), w.sc.clone()))
    }

    pub(super) async fn worker_packet(&self, id: u64, handle: &RpcHandle, data: &[u8]) {
        match cocoon_tl::peek_id(data) {
            Some(worker::EnabledDisabled::ID) => {
                if let Ok(m) = cocoon_tl::from_bytes::<worker::EnabledDisabled>(data) {
                    if let Some(w) = self.state().workers.get_mut(id) {
                        w.disabled = m.disabled != 0;
                        info!(disabled = w.disabled, "worker availability changed");
                    }
                }
            }
            Some(worker::NewCoefficient::ID) => {
                if let Ok(m) = cocoon_tl::from_bytes::<worker::NewCoefficient>(data) {
                    match u32::try_from(m.new_coefficient) {
                        Ok(c) => {
                            if let Some(w) = self.state().workers.get_mut(id) {
                                w.coefficient = c;
                            }
                        }
                        Err(_) => handle.close(),
                    }
                }
            }
            Some(cocoonrs::WorkerEndpoints::ID) => {
                if let Ok(m) = cocoon_tl::from_bytes::<cocoonrs::WorkerEndpoints>(data) {
                    if let Some(w) = self.state().workers.get_mut(id) {
                        if w.extensions.endpoints() {
                            w.endpoints = Endpoints::from_announcement(&m.endpoints);
                            info!(endpoints = ?w.endpoints.announcement(), "worker announced its endpoints");
                        }
                    }
                }
            }
            Some(
                proxy::QueryAnswerEx::ID
                | proxy::QueryAnswerPartEx::ID
                | proxy::QueryAnswerErrorEx::ID,
            ) => match cocoon_tl::from_bytes::<enums::proxy::QueryAnswerEx>(data) {
                Ok(answer) => self.worker_answer(id, answer).await,
                Err(e) => warn!(error = %e, "malformed worker answer ignored"),
            },
            other => debug!(id = ?other, "unhandled worker packet"),
        }
    }

    /// A worker connection ended: retry its unstarted requests, fail its started ones.
    pub(super) async fn worker_gone(&self, id: u64) {
        let affected: Vec<([u8; 32], bool)> = {
            let mut state = self.state();
            state.workers.remove(id);
            state.requests.on_worker(id)
        };
        info!(requests = affected.len(), "worker disconnected");
        for (rid, head_sent) in affected {
            if head_sent {
                self.fail_request(
                    rid,
                    Refusal::Unavailable,
                    "the worker disconnected in the middle of the answer",
                    None,
                )
                .await;
            } else {
                let refusal = Refusal::Unavailable;
                let message = refusal.message("the worker disconnected");
                self.retry_or_fail(rid, refusal.code().code(), &message)
                    .await;
            }
        }
    }
}
