//! `cocoonrs.getAttestation` at the proxy: its own evidence and, fetched now, every serving
//! worker's (cocoon-rs workers; an official one serves none), each worker's with the
//! proxy's verdict from when it connected: the key and image hash its attestation showed,
//! the policy that admitted it, and when ([`crate::protocol::evidence`]).

use std::time::Duration;

use cocoon_tl::functions::cocoonrs as cocoonrs_fn;
use cocoon_tl::types::cocoonrs;
use tracing::debug;

use super::Proxy;
use crate::protocol::evidence::Attester;

/// How long a worker has to answer with its evidence.
const WORKER_ANSWER: Duration = Duration::from_secs(5);

/// What the proxy answers with and judged its workers by.
#[derive(Debug, Clone)]
pub(super) struct ProxyAttester {
    pub(super) attester: Attester,
    /// The policy kind workers were admitted under (`fake_tdx`, `tdx`, …).
    pub(super) worker_policy: String,
}

impl Proxy {
    /// Lets the proxy answer apps' attestation requests: `attester` signs for the proxy;
    /// workers were admitted under `worker_policy`. Without it, the proxy answers with its
    /// workers' evidence only.
    pub fn set_attester(&self, attester: Attester, worker_policy: &str) {
        let _ = self.shared.attester.set(ProxyAttester {
            attester,
            worker_policy: worker_policy.to_owned(),
        });
    }

    /// The proxy's evidence and its serving workers' for `nonce`.
    pub(super) async fn attestation(&self, nonce: Vec<u8>) -> cocoonrs::Attestation {
        let policy = self
            .shared
            .attester
            .get()
            .map(|a| a.worker_policy.clone())
            .unwrap_or_default();
        let mut evidence = Vec::new();
        if let Some(a) = self.shared.attester.get() {
            evidence.push(a.attester.evidence("proxy", "", &nonce));
        }
        let asks: Vec<_> = {
            let state = self.state();
            state
                .workers
                .serving_links()
                .filter(|(_, w)| w.extensions.attestation())
                .map(|(id, w)| {
                    let (key, image, at) = match state.peers.get(id) {
                        Some((peer, at)) => (peer.public_key, peer.image_hash, *at),
                        None => (None, None, 0),
                    };
                    (w.handle.clone(), w.model.clone(), key, image, at)
                })
                .collect()
        };
        let answers =
            futures::future::join_all(asks.into_iter().map(|(handle, model, key, image, at)| {
                let nonce = nonce.clone();
                let policy = policy.clone();
                async move {
                    let ask = cocoonrs_fn::GetAttestation { nonce };
                    match handle.query_with_timeout(&ask, WORKER_ANSWER).await {
                        Ok(cocoon_tl::enums::cocoonrs::Attestation::Attestation(a)) => {
                            a.evidence.into_iter().next().map(|mut e| {
                                e.role = "worker".into();
                                e.model = model;
                                e.verified_key = key.unwrap_or([0; 32]);
                                e.verified_image_hash = image.unwrap_or([0; 32]);
                                e.verified_policy = policy;
                                e.verified_at = i64::try_from(at).unwrap_or(0);
                                e
                            })
                        }
                        Err(e) => {
                            debug!(error = %e, "a worker gave no attestation evidence");
                            None
                        }
                    }
                }
            }))
            .await;
        evidence.extend(answers.into_iter().flatten());
        cocoonrs::Attestation { evidence }
    }
}
