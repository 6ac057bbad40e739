//! The proxy's side of the key-manager protocol (cocoon-protocol-9060ce5.md §2.9): keep a
//! connection to the key manager, ask it for the private keys on a timer, merge the answer
//! into a [`KeyRing`] and drop expired keys.

use std::sync::Arc;
use std::time::Duration;

use cocoon_net::{ConnectionConfig, RpcConnection};
use cocoon_tl::functions::key_manager as km_fn;
use tracing::{debug, info, info_span, warn, Instrument};

use super::ring::{HeldKey, KeyRing};
use crate::transport::Dialer;

/// How a proxy follows its key manager.
#[derive(Debug, Clone)]
pub struct KeyFetchSettings {
    /// The key manager's attested endpoint (`host:port`).
    pub endpoint: String,
    /// How often the keys are asked for (a new key appears about hourly).
    pub interval: Duration,
    /// How long one answer may take (COCOON: 60 s).
    pub query_timeout: Duration,
    /// Reconnect backoff, from `min` doubling to `max`.
    pub reconnect_min: Duration,
    /// See [`KeyFetchSettings::reconnect_min`].
    pub reconnect_max: Duration,
    /// Transport tunables.
    pub connection: ConnectionConfig,
}

impl KeyFetchSettings {
    /// Defaults for `endpoint`: every 30 s, 60 s per answer, reconnecting after 1 s to 30 s.
    pub fn new(endpoint: impl Into<String>) -> Self {
        KeyFetchSettings {
            endpoint: endpoint.into(),
            interval: Duration::from_secs(30),
            query_timeout: Duration::from_secs(60),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            connection: ConnectionConfig::default(),
        }
    }
}

/// Keeps `ring` filled from the key manager until the task is aborted: dials through
/// `dialer` (attested: the key manager must pass the dialer's policy), asks with
/// `keyManager.getProxyPrivateKeys`, and reconnects with backoff when the link fails.
pub fn spawn_key_fetcher(
    settings: KeyFetchSettings,
    dialer: Arc<dyn Dialer>,
    ring: KeyRing,
) -> tokio::task::JoinHandle<()> {
    let span = info_span!("key_manager_link", key_manager = %settings.endpoint);
    tokio::spawn(
        async move {
            let mut backoff = settings.reconnect_min;
            loop {
                let attempt = async {
                    let stream = dialer
                        .dial(&settings.endpoint)
                        .await
                        .map_err(|e| e.to_string())?;
                    RpcConnection::connect(stream, &settings.connection, &settings.endpoint)
                        .await
                        .map_err(|e| e.to_string())
                };
                match attempt.await {
                    Ok(conn) => {
                        info!("connected to the key manager");
                        if follow(&conn, &settings, &ring, &mut backoff).await {
                            continue;
                        }
                    }
                    Err(e) => warn!(error = %e, "cannot reach the key manager"),
                }
                ring.prune(crate::util::unix_secs());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(settings.reconnect_max);
            }
        }
        .instrument(span),
    )
}

/// Asks on `conn` every interval until it fails. Returns whether to reconnect at once
/// (the connection had worked).
async fn follow(
    conn: &RpcConnection,
    settings: &KeyFetchSettings,
    ring: &KeyRing,
    backoff: &mut Duration,
) -> bool {
    let handle = conn.handle();
    let mut worked = false;
    loop {
        let asked = handle
            .query_with_timeout(
                &km_fn::GetProxyPrivateKeys { proto_version: 0 },
                settings.query_timeout,
            )
            .await;
        let now = crate::util::unix_secs();
        match asked {
            Ok(answer) => {
                let cocoon_tl::enums::key_manager::PrivateKeys::PrivateKeys(keys) = answer;
                let received = keys.keys.len();
                let added = ring.merge(keys.keys.into_iter().filter_map(|k| {
                    let valid_until = u32::try_from(k.valid_until_utime).ok()?;
                    (valid_until >= now).then_some(HeldKey {
                        seed: k.private_key,
                        valid_until,
                    })
                }));
                let dropped = ring.prune(now);
                if added > 0 || dropped > 0 {
                    info!(received, added, dropped, held = ring.len(), "keys updated");
                } else {
                    debug!(received, held = ring.len(), "keys unchanged");
                }
                worked = true;
                *backoff = settings.reconnect_min;
            }
            Err(e) => {
                warn!(error = %e, "the key manager did not answer");
                ring.prune(now);
                handle.close();
                return worked;
            }
        }
        tokio::time::sleep(settings.interval).await;
        if handle.is_closed() {
            return worked;
        }
    }
}
