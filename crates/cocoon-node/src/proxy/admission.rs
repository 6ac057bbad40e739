//! Admission: both hellos' common checks (version, addresses, contracts) and the client's
//! authorization, short or long (cocoon-protocol.md §2.5).

use std::time::Duration;

use cocoon_net::{ErrorCode, IncomingQuery};
use cocoon_tl::functions::client as client_fn;
use cocoon_tl::types::client;
use cocoon_tl::TlConstructor;
use sha2::{Digest, Sha256};
use tracing::info;
use tycho_types::models::StdAddr;

use super::connections::{hang_up, Hangup};
use super::{to_i64, Proxy, MAX_PROTO, MIN_PROTO};
use crate::chain::{ChainError, Owner};
use crate::ledger::Party;
use crate::protocol::version::{self, flags, VersionError};
use crate::protocol::{Extensions, Refusal, Version};

/// How long a long authorization waits for the client's register message (§2.5).
pub(super) const LONG_AUTH_TIMEOUT: Duration = Duration::from_secs(300);

/// An authorized client connection.
pub(super) struct ClientSession {
    /// The client's owner (its ledger key).
    pub(super) owner: Owner,
    pub(super) proto: Version,
    /// The cocoon-rs extensions it offered.
    pub(super) extensions: Extensions,
    /// Its client contract at this proxy.
    pub(super) sc: StdAddr,
    /// Nonce of the long authorization (on chain).
    pub(super) nonce: u64,
    /// The secret hash of its contract, when short authorization is possible.
    pub(super) secret_hash: Option<[u8; 32]>,
}

/// Where a client connection stands after a query of its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Authorization {
    /// Not authorized yet (connected, or asked something else first).
    Pending,
    /// Authorized: requests are served.
    Granted,
}

/// Why a hello is refused; its [`AdmissionError::code`] and text are the peer's answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum AdmissionError {
    /// The hello's parameters are refused (test mode, names, limits).
    #[error("{0}")]
    Params(String),
    /// The proxy is rotating its contracts.
    #[error("{}", Refusal::Rotating.message(""))]
    Rotating,
    /// No common protocol version.
    #[error(transparent)]
    Version(#[from] VersionError),
    /// The owner address is not usable.
    #[error("{} owner: {source}", party.name())]
    Owner {
        /// Whose owner.
        party: Party,
        /// Why.
        #[source]
        source: ChainError,
    },
}

impl AdmissionError {
    /// The COCOON error code the peer gets.
    pub(super) fn code(&self) -> ErrorCode {
        match self {
            AdmissionError::Params(_) | AdmissionError::Owner { .. } => ErrorCode::Error,
            AdmissionError::Rotating => Refusal::Rotating.code(),
            AdmissionError::Version(_) => ErrorCode::ProtocolViolation,
        }
    }
}

impl Proxy {
    /// What both hellos share: the refusal (if any), protocol negotiation from
    /// `(flags, min, max)`, and the party's address and contract at this proxy.
    pub(super) fn admit(
        &self,
        refuse: Option<String>,
        (flags, min, max): (u32, Option<i32>, Option<i32>),
        owner: &str,
        party: Party,
    ) -> Result<(Version, Owner, StdAddr), AdmissionError> {
        if let Some(reason) = refuse {
            return Err(AdmissionError::Params(reason));
        }
        if self.is_rotating() {
            return Err(AdmissionError::Rotating);
        }
        let proto = version::choose(
            MIN_PROTO..=MAX_PROTO,
            flags & flags::PARAMS_VERSIONS != 0,
            min,
            max,
        )?;
        let epoch = self.epoch();
        let chain = &epoch.chain;
        let refused = |source: ChainError| AdmissionError::Owner { party, source };
        let address = chain.parse_address(owner).map_err(refused)?;
        let pk = self.public_key();
        let sc = match party {
            Party::Client => chain.client_sc(&address, &epoch.sc, &pk),
            Party::Worker => chain.worker_sc(&address, &epoch.sc, &pk),
        }
        .map_err(refused)?;
        Ok((proto, chain.owner(&address), sc))
    }

    /// Handles a query before authorization; `Err` closes the connection.
    pub(super) async fn client_handshake_query(
        &self,
        q: IncomingQuery,
        session: &mut Option<ClientSession>,
    ) -> Result<Authorization, Hangup> {
        let s = &self.shared.settings;
        match q.function_id() {
            Some(client_fn::ConnectToProxy::ID) => {
                let req: client_fn::ConnectToProxy = match q.decode() {
                    Ok(r) => r,
                    Err(e) => {
                        return Err(hang_up(q, ErrorCode::ProtocolViolation, e.to_string()).await)
                    }
                };
                let p = &req.params;
                let refuse = if p.flags & flags::PARAMS_BASE == 0 {
                    Some("client params lack is_test".to_owned())
                } else if p.is_test.unwrap_or(false) != s.is_test {
                    Some(format!("is_test mismatch: proxy {}", s.is_test))
                } else if p.client_owner_address.is_empty() {
                    Some("empty client owner address".to_owned())
                } else if req.min_config_version > s.config_version {
                    Some(format!(
                        "client needs config version {}, proxy has {}",
                        req.min_config_version, s.config_version
                    ))
                } else {
                    None
                };
                let admitted = self.admit(
                    refuse,
                    (p.flags, p.min_proto_version, p.max_proto_version),
                    &p.client_owner_address,
                    Party::Client,
                );
                let (proto, owner, client_sc) = match admitted {
                    Ok(x) => x,
                    Err(e) => return Err(hang_up(q, e.code(), e.to_string()).await),
                };
                let epoch = self.epoch();
                let used = self.contract_tokens(&owner, Party::Client);
                let nonce: u64 = rand::random();
                let (auth, secret_hash) = match &epoch.settlement {
                    // Fake-TON: like COCOON, offer short auth with an unknown secret hash,
                    // so the client falls back to long auth, which succeeds at once.
                    None => (
                        client::ProxyConnectionAuthShort {
                            secret_hash: [0; 32],
                            nonce: 0,
                        }
                        .into(),
                        None,
                    ),
                    // On chain: short auth if the client contract has a secret hash,
                    // else long auth through a register message with this nonce.
                    Some(chain) => match chain.client_connected(&owner, &client_sc).await {
                        Ok(Some(hash)) => (
                            client::ProxyConnectionAuthShort {
                                secret_hash: hash,
                                // TL `long`: the same 64 bits the register message carries.
                                nonce: nonce as i64,
                            }
                            .into(),
                            Some(hash),
                        ),
                        Ok(None) => (
                            client::ProxyConnectionAuthLong {
                                nonce: nonce as i64,
                            }
                            .into(),
                            None,
                        ),
                        Err(e) => {
                            let message = format!("cannot read the client contract: {e}");
                            return Err(hang_up(q, ErrorCode::NotReady, message).await);
                        }
                    },
                };
                let answer = client::ConnectedToProxy {
                    params: self.params(proto, Extensions::offered(p.flags)),
                    client_sc_address: epoch.chain.format(&client_sc),
                    auth,
                    signed_payment: self.voucher_for(&owner, &client_sc, used, Party::Client),
                };
                let _ = q.answer(&answer).await;
                info!(%owner, %proto, "client connected");
                *session = Some(ClientSession {
                    owner,
                    proto,
                    extensions: Extensions::offered(p.flags),
                    sc: client_sc,
                    nonce,
                    secret_hash,
                });
                Ok(Authorization::Pending)
            }
            Some(
                client_fn::AuthorizeWithProxyLong::ID | client_fn::AuthorizeWithProxyShort::ID,
            ) => {
                let Some(ClientSession {
                    owner,
                    sc,
                    nonce,
                    secret_hash,
                    ..
                }) = session.as_ref()
                else {
                    let message = "authorization before connectToProxy".to_owned();
                    return Err(hang_up(q, ErrorCode::ProtocolViolation, message).await);
                };
                let epoch = self.epoch();
                if let Some(chain) = &epoch.settlement {
                    let refused = if q.function_id() == Some(client_fn::AuthorizeWithProxyShort::ID)
                    {
                        match q.decode::<client_fn::AuthorizeWithProxyShort>() {
                            Ok(req) => {
                                let got: [u8; 32] = Sha256::digest(&req.data).into();
                                (Some(got) != *secret_hash).then(|| "sha256 mismatch".to_owned())
                            }
                            Err(e) => Some(e.to_string()),
                        }
                    } else if chain.wait_registration(sc, *nonce, LONG_AUTH_TIMEOUT).await {
                        None
                    } else {
                        Some(format!(
                            "no owner_client_register with nonce {nonce} reached the proxy contract within {} s",
                            LONG_AUTH_TIMEOUT.as_secs()
                        ))
                    };
                    if let Some(reason) = refused {
                        info!(%owner, %reason, "client authorization refused");
                        return Err(hang_up(q, ErrorCode::Error, reason).await);
                    }
                    // Read the contract again: the registration may have deployed it.
                    if let Err(e) = chain.client_connected(owner, sc).await {
                        return Err(hang_up(q, ErrorCode::NotReady, e.to_string()).await);
                    }
                }
                let used = self.contract_tokens(owner, Party::Client);
                let answer = client::AuthorizationWithProxySuccess {
                    signed_payment: self.voucher_for(owner, sc, used, Party::Client),
                    tokens_committed_to_db: to_i64(used),
                    max_tokens: to_i64(used),
                };
                let _ = q.answer(&answer).await;
                Ok(Authorization::Granted)
            }
            _ => {
                let _ = q
                    .error(
                        ErrorCode::NotReady.code(),
                        "connection is not authorized yet",
                    )
                    .await;
                Ok(Authorization::Pending)
            }
        }
    }
}
