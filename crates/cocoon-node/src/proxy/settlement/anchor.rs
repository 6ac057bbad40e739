//! Anchoring (§5.3): `proxy_save_state` of the ledger's totals, and the proxy contract's
//! transactions followed for confirmations, registrations and client reports.

use std::time::Instant;

use cocoon_ton::contracts::ContractStatus;
use cocoon_ton::messages::{Body, ClientProxyPayload};
use cocoon_ton::settlement::save_state_message;
use tracing::{debug, warn};

use super::{PendingAnchor, ProxyChain};
use crate::chain::wallet::{chain_err, SettleError};

impl ProxyChain {
    /// Reads new transactions of the proxy contract: save-state confirmations, client
    /// registrations and client state reports.
    pub(super) async fn follow(&self) -> Result<(), SettleError> {
        let txs = {
            let mut f = self.follower.lock().await;
            f.poll(self.chain.backend.as_ref())
                .await
                .map_err(chain_err)?
        };
        for tx in txs {
            let Some(msg) = &tx.in_msg else { continue };
            let body = match Body::parse(&msg.body) {
                Ok(b) => b,
                Err(e) => {
                    debug!(error = %e, "unparsed message to the proxy contract");
                    continue;
                }
            };
            debug!(
                op = body.op(),
                success = tx.success,
                "proxy contract transaction"
            );
            match body {
                Body::ProxySaveState {
                    seqno,
                    session_hash,
                    ..
                } if msg.source.as_ref() == Some(self.chain.wallet.address()) => {
                    self.on_save_state(seqno, session_hash);
                }
                // The source is set by the chain, so only the client contract itself can
                // send this. Its 1-nanoTON notifications cannot pay for the proxy
                // contract's gas: like COCOON, read them whether or not that succeeded.
                Body::ClientProxyRequest { state, payload, .. } => {
                    let Some(source) = msg.source.clone() else {
                        continue;
                    };
                    let mut book = self.book();
                    for c in book.clients.values_mut() {
                        if c.sc == source {
                            if let Some(s) = c.state.as_mut() {
                                s.status = ContractStatus::from_bits(state.state);
                                s.balance = state.balance;
                                s.stake = state.stake;
                                s.tokens_used = state.tokens_used;
                                s.secret_hash = state.secret_hash;
                            } else {
                                c.state = None; // read again at the next settle round
                            }
                        }
                    }
                    if let Some(ClientProxyPayload::Register { nonce }) = payload {
                        book.registrations.insert((source, nonce));
                        drop(book);
                        self.registered.notify_waiters();
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub(super) fn on_save_state(&self, seqno: i32, session_hash: [u8; 32]) {
        let mut book = self.book();
        let Some(p) = book.pending.take() else { return };
        if p.seqno != seqno {
            book.pending = Some(p);
            return;
        }
        if session_hash != self.session_hash {
            // COCOON aborts here: another process signs with this proxy's key.
            warn!(
                seqno,
                "a save-state with another session hash: is a second instance running with this key?"
            );
            book.pending = Some(p);
            return;
        }
        for (owner, tokens) in p.clients {
            let e = book.committed_clients.entry(owner).or_default();
            *e = (*e).max(tokens);
        }
        for (owner, tokens) in p.workers {
            let e = book.committed_workers.entry(owner).or_default();
            *e = (*e).max(tokens);
        }
        book.anchored_totals = p.totals;
        drop(book);
        self.count(|s| s.anchors += 1);
        debug!(seqno, "ledger anchored on chain");
    }

    /// Sends a save-state when the ledger grew and none is in flight (§5.3).
    pub(super) async fn anchor(&self) {
        let policy = &self.chain.policy;
        let totals = match self.ledger.grand_totals() {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "cannot read the ledger");
                return;
            }
        };
        let seqno = {
            let mut book = self.book();
            if let Some(p) = &book.pending {
                if p.since.elapsed() < policy.confirm_timeout {
                    return;
                }
                book.pending = None; // lost: anchor again
            }
            let due = book
                .last_anchor
                .is_none_or(|t| t.elapsed() >= policy.anchor_interval);
            if !due || totals == book.anchored_totals {
                return;
            }
            let all = match self.ledger.all_totals() {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "cannot read the ledger");
                    return;
                }
            };
            book.seqno = book.seqno.wrapping_add(1);
            book.last_anchor = Some(Instant::now());
            book.pending = Some(PendingAnchor {
                seqno: book.seqno,
                clients: all.clients.into_iter().collect(),
                workers: all.workers.into_iter().collect(),
                totals,
                since: Instant::now(),
            });
            book.seqno
        };
        let msg = match save_state_message(
            self.contract.address.clone(),
            crate::util::random_query_id(),
            seqno,
            self.session_hash,
        ) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "cannot build a save-state");
                return;
            }
        };
        if let Err(e) = self.chain.wallet.send(vec![msg]).await {
            warn!(error = %e, seqno, "save-state not sent");
            self.book().pending = None;
            self.count(|s| s.failures += 1);
        }
    }
}
