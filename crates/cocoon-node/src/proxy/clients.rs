//! What an authorized client may ask besides requests: payment status, worker types, and
//! the packets that start or cancel a request.

use std::collections::BTreeMap;

use cocoon_net::{ErrorCode, IncomingQuery, RpcHandle};
use cocoon_tl::functions::client as client_fn;
use cocoon_tl::functions::cocoonrs as cocoonrs_fn;
use cocoon_tl::types::{client, cocoonrs};
use cocoon_tl::TlConstructor;
use tracing::{debug, warn};

use super::admission::ClientSession;
use super::connections::not_served;
use super::{to_i64, Proxy};
use crate::ledger::Party;
use crate::protocol::endpoint::Endpoints;
use crate::protocol::evidence::MAX_NONCE;
use crate::util::hex_short;

impl Proxy {
    pub(super) async fn client_query(&self, q: IncomingQuery, session: &ClientSession) {
        match q.function_id() {
            Some(client_fn::UpdatePaymentStatus::ID) => {
                let used = self.contract_tokens(&session.owner, Party::Client);
                let answer = client::PaymentStatus {
                    signed_payment: self.voucher_for(
                        &session.owner,
                        &session.sc,
                        used,
                        Party::Client,
                    ),
                    db_tokens: to_i64(used),
                    max_tokens: to_i64(used),
                };
                let _ = q.answer(&answer).await;
            }
            Some(client_fn::GetWorkerTypesV2::ID) => {
                let answer = self.worker_types_v2();
                let _ = q.answer(&answer).await;
            }
            Some(client_fn::GetWorkerTypes::ID) => {
                let answer = self.worker_types_v1();
                let _ = q.answer(&answer).await;
            }
            Some(cocoonrs_fn::GetEndpointsOfModels::ID) if session.extensions.endpoints() => {
                let answer = self.endpoints_of_models();
                let _ = q.answer(&answer).await;
            }
            Some(cocoonrs_fn::GetAttestation::ID) if session.extensions.attestation() => {
                match cocoon_tl::from_bytes::<cocoonrs_fn::GetAttestation>(q.data()) {
                    Ok(ask) if (1..=MAX_NONCE).contains(&ask.nonce.len()) => {
                        // Workers answer within seconds: not on the client's reading task.
                        let proxy = self.clone();
                        tokio::spawn(async move {
                            let answer = proxy.attestation(ask.nonce).await;
                            let _ = q.answer(&answer).await;
                        });
                    }
                    _ => {
                        let message =
                            format!("getAttestation needs a nonce of 1 to {MAX_NONCE} bytes");
                        let _ = q.error(ErrorCode::ProtocolViolation.code(), &message).await;
                    }
                }
            }
            _ => {
                not_served(q).await;
            }
        }
    }

    pub(super) async fn client_packet(
        &self,
        handle: &RpcHandle,
        session: &ClientSession,
        data: &[u8],
    ) {
        let owner = session.owner.as_str();
        let cancels = session.extensions.cancellation();
        if cocoon_tl::peek_id(data) == Some(cocoonrs::CancelQuery::ID) && cancels {
            if let Ok(c) = cocoon_tl::from_bytes::<cocoonrs::CancelQuery>(data) {
                debug!(request = %hex_short(&c.request_id), "client cancelled a request");
                self.cancel_requests(|r| {
                    r.client_request_id == c.request_id && *r.client_owner == *owner
                })
                .await;
            }
            return;
        }
        let request = match cocoon_tl::peek_id(data) {
            Some(client_fn::RunQueryEx::ID) => cocoon_tl::from_bytes::<client_fn::RunQueryEx>(data),
            Some(client_fn::RunQuery::ID) => cocoon_tl::from_bytes::<client_fn::RunQuery>(data)
                .map(|q| client_fn::RunQueryEx {
                    model_name: q.model_name,
                    query: q.query,
                    max_coefficient: q.max_coefficient,
                    max_tokens: q.max_tokens,
                    timeout: q.timeout,
                    request_id: q.request_id,
                    min_config_version: q.min_config_version,
                    flags: 0,
                    enable_debug: None,
                    public_key: None,
                }),
            other => {
                debug!(id = ?other, "unhandled client packet");
                return;
            }
        };
        match request {
            Ok(request) => self.forward_query(handle.clone(), session, request).await,
            Err(e) => warn!(error = %e, "malformed client request ignored"),
        }
    }

    /// `client.getWorkerTypesV2`: ready connections per model, sorted by coefficient.
    pub fn worker_types_v2(&self) -> client::WorkerTypesV2 {
        let state = self.state();
        let mut models: BTreeMap<&str, Vec<client::WorkerInstanceV2>> = BTreeMap::new();
        for w in state.workers.serving() {
            models
                .entry(&w.model)
                .or_default()
                .push(client::WorkerInstanceV2 {
                    flags: 0,
                    coefficient: i32::try_from(w.coefficient).unwrap_or(i32::MAX),
                    active_requests: i32::try_from(w.running).unwrap_or(i32::MAX),
                    max_active_requests: i32::try_from(w.max_active).unwrap_or(i32::MAX),
                });
        }
        client::WorkerTypesV2 {
            types: models
                .into_iter()
                .map(|(name, mut workers)| {
                    workers.sort_by_key(|w| w.coefficient);
                    client::WorkerTypeV2 {
                        name: name.to_owned(),
                        workers,
                    }
                })
                .collect(),
        }
    }

    /// `cocoonrs.getEndpointsOfModels`: per model, the endpoints its serving workers serve
    /// together, and the features any of them offers (as workers announce them).
    pub fn endpoints_of_models(&self) -> cocoonrs::EndpointsOfModels {
        let state = self.state();
        let mut models: BTreeMap<&str, Endpoints> = BTreeMap::new();
        for w in state.workers.serving() {
            let set = models.entry(&w.model).or_insert(Endpoints::of(&[]));
            *set = set.union(w.endpoints);
        }
        cocoonrs::EndpointsOfModels {
            models: models
                .into_iter()
                .map(|(model, set)| cocoonrs::ModelEndpoints {
                    model: model.to_owned(),
                    endpoints: set.announcement().into_iter().map(str::to_owned).collect(),
                })
                .collect(),
        }
    }

    /// `client.getWorkerTypes`: counts and coefficient min/median/max per model (over the
    /// real coefficients; COCOON also mixes in INT32_MAX, which we do not copy).
    pub fn worker_types_v1(&self) -> client::WorkerTypes {
        let v2 = self.worker_types_v2();
        client::WorkerTypes {
            types: v2
                .types
                .into_iter()
                .map(|t| {
                    let c: Vec<i32> = t.workers.iter().map(|w| w.coefficient).collect();
                    client::WorkerType {
                        name: t.name,
                        active_workers: i32::try_from(c.len()).unwrap_or(i32::MAX),
                        coefficient_min: c.first().copied().unwrap_or(0),
                        coefficient_bucket50: c.get(c.len() / 2).copied().unwrap_or(0),
                        coefficient_max: c.last().copied().unwrap_or(0),
                    }
                })
                .collect(),
        }
    }
}
