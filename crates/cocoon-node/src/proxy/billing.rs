//! Billing: what a client may still spend, the bound on what a worker may report, the
//! booking of a finished request before its last message, and the vouchers sent with it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use cocoon_net::RpcHandle;
use cocoon_tl::enums::proxy::SignedPayment;
use cocoon_tl::types::proxy;
use tracing::{debug, warn};
use tycho_types::models::StdAddr;

use super::relay::{Running, Send};
use super::routing::Outcome;
use super::{to_i64, Proxy};
use crate::bounds::AdjustedBound;
use crate::chain::ProxyVouchers;
use crate::ledger::Booking;
use crate::ledger::Party;
use crate::pricing::{AdjustedTokens, Multipliers};
use crate::protocol::answer::{ClientReply, Piece};
use crate::protocol::{Refusal, Version};
use crate::util::{hex_short, lock};

/// The tokens to book for a worker's final report on request `r`: the report within what
/// the request could have produced ([`crate::bounds`]). A report beyond the bound is
/// noted in `overclaim` as `(reported, booked)`.
pub(super) fn bounded(
    r: &Running,
    info: Option<&proxy::QueryFinalInfo>,
    multipliers: Multipliers,
    overclaim: &mut Option<(AdjustedTokens, AdjustedTokens)>,
) -> AdjustedTokens {
    let Some(info) = info else {
        return AdjustedTokens::default();
    };
    let reported = AdjustedTokens::from_tl(&info.tokens_used);
    let bound = AdjustedBound::new(
        r.query.len() as u64,
        r.relayed,
        r.coefficient,
        multipliers,
        r.reserved,
    );
    let (tokens, clipped) = bound.clip(reported);
    if clipped {
        *overclaim = Some((reported, tokens));
    }
    tokens
}

/// The proxy's voucher signer with the last voucher it signed per contract: a party that
/// asks again for the same total gets the same voucher without a new signature.
pub(super) struct VoucherCache {
    signer: ProxyVouchers,
    last: Mutex<HashMap<(Party, StdAddr), Signed>>,
}

/// A voucher's total and its BOC.
type Signed = (u64, Vec<u8>);

impl VoucherCache {
    /// An empty cache over `signer`.
    pub(super) fn new(signer: ProxyVouchers) -> Self {
        VoucherCache {
            signer,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// The latest voucher for a client (`ClientCharge`) or worker (`WorkerPayout`)
    /// contract covering `tokens`. A client owing nothing gets the empty payment; a worker
    /// always gets a signed one, for 0 tokens too: COCOON's worker takes an empty payment
    /// in the balance comparison for a proxy whose records were tampered with, and leaves.
    pub(super) fn payment(&self, sc: &StdAddr, tokens: u64, party: Party) -> SignedPayment {
        if tokens == 0 && party == Party::Client {
            return proxy::SignedPaymentEmpty {}.into();
        }
        let key = (party, sc.clone());
        if let Some((t, data)) = lock(&self.last).get(&key) {
            if *t == tokens {
                return proxy::SignedPayment { data: data.clone() }.into();
            }
        }
        let signed = match party {
            Party::Client => self.signer.client_charge(sc, tokens),
            Party::Worker => self.signer.worker_payout(sc, tokens),
        };
        match signed {
            Ok(data) => {
                lock(&self.last).insert(key, (tokens, data.clone()));
                proxy::SignedPayment { data }.into()
            }
            Err(e) => {
                warn!(error = %e, "cannot sign a voucher");
                proxy::SignedPaymentEmpty {}.into()
            }
        }
    }

    /// Forgets every voucher (the contracts changed).
    pub(super) fn clear(&self) {
        lock(&self.last).clear();
    }
}

/// Tokens reserved by running requests, per client owner: what admission subtracts from a
/// client's balance, and what settlement asks before it refunds a closing client. Shared
/// by the proxy and its settlement on chain (every epoch), so neither calls into the other.
#[derive(Debug, Default)]
pub struct Reservations {
    by_client: Mutex<HashMap<String, u64>>,
}

impl Reservations {
    /// What `owner`'s running requests reserve now.
    pub fn of(&self, owner: &str) -> u64 {
        lock(&self.by_client).get(owner).copied().unwrap_or(0)
    }

    /// Whether `owner` has a request running.
    pub fn has_running(&self, owner: &str) -> bool {
        self.of(owner) > 0
    }

    /// Reserves `tokens` for a request of `owner`.
    pub(super) fn reserve(&self, owner: &str, tokens: u64) {
        let mut map = lock(&self.by_client);
        let entry = map.entry(owner.to_owned()).or_default();
        *entry = entry.saturating_add(tokens);
    }

    /// Releases what a finished request of `owner` reserved.
    pub(super) fn release(&self, owner: &str, tokens: u64) {
        let mut map = lock(&self.by_client);
        if let Some(left) = map.get_mut(owner) {
            *left = left.saturating_sub(tokens);
            if *left == 0 {
                map.remove(owner);
            }
        }
    }
}

/// A request that ended, to be booked.
pub(super) struct Finished {
    pub(super) booking: Option<Booking>,
    /// A request to be answered once: its claim is given up after booking.
    pub(super) once: bool,
    pub(super) client: RpcHandle,
    pub(super) client_proto: Version,
    pub(super) client_request_id: [u8; 32],
    pub(super) worker: Option<RpcHandle>,
    pub(super) proxy_request_id: [u8; 32],
    pub(super) tokens: u64,
    pub(super) client_sc: StdAddr,
    pub(super) worker_sc: StdAddr,
}

impl Proxy {
    pub(super) fn available_tokens(&self, owner: &str) -> u64 {
        let used = self.shared.ledger.client_tokens(owner).unwrap_or(u64::MAX);
        let reserved = self.shared.reservations.of(owner);
        let limit = match &self.epoch().settlement {
            Some(chain) => chain.client_token_limit(owner),
            None => self.shared.settings.pseudo_client_tokens,
        };
        limit.saturating_sub(used).saturating_sub(reserved)
    }

    /// What a party has on its contract of the current epoch: its ledger total minus
    /// the epoch's start (§5.7). The one place the proxy reports tokens from.
    pub(super) fn contract_tokens(&self, owner: &str, party: Party) -> u64 {
        let ledger = &self.shared.ledger;
        let total = match party {
            Party::Client => ledger.client_tokens(owner),
            Party::Worker => ledger.worker_tokens(owner),
        };
        self.epoch().tokens(owner, party, total.unwrap_or(0))
    }

    /// The voucher for `owner`'s contract `sc`: on chain it covers the tokens anchored
    /// by a save-state (§5.3); in fake-TON, where anchoring is instant, `ledger_tokens`.
    pub(super) fn voucher_for(
        &self,
        owner: &str,
        sc: &StdAddr,
        ledger_tokens: u64,
        party: Party,
    ) -> SignedPayment {
        let tokens = match (&self.epoch().settlement, party) {
            (Some(chain), Party::Worker) => chain.committed_worker(owner),
            (Some(chain), Party::Client) => chain.committed_client(owner),
            (None, _) => ledger_tokens,
        };
        self.shared.vouchers.payment(sc, tokens, party)
    }

    /// A worker reported more usage than request `request_id` could have produced: it is
    /// booked within the bound; the report is logged with the worker's identity, counted
    /// in `/metrics` and held against the worker's reputation.
    pub(super) fn overclaimed(
        &self,
        request_id: [u8; 32],
        worker_id: u64,
        reported: AdjustedTokens,
        booked: AdjustedTokens,
    ) {
        let stats = &self.shared.stats;
        stats.usage_reports_clipped.fetch_add(1, Ordering::Relaxed);
        stats.usage_tokens_refused.fetch_add(
            reported.total().saturating_sub(booked.total()),
            Ordering::Relaxed,
        );
        let mut state = self.state();
        let owner = match state.workers.overclaimed(worker_id) {
            Some(owner) => owner.to_string(),
            None => String::from("(disconnected)"),
        };
        warn!(
            proxy_request = %hex_short(&request_id),
            worker_owner = %owner,
            worker_connection = worker_id,
            reported = reported.total(),
            booked = booked.total(),
            "worker reported more tokens than the request could have produced; booking within the bound"
        );
    }

    /// Removes a finished request, releases its reservation, books its tokens, and only
    /// then sends the client its last message (`last`) and both payment notices: a client
    /// that saw its answer complete is always billed, exactly once.
    pub(super) async fn finish(
        &self,
        request_id: [u8; 32],
        tokens: AdjustedTokens,
        ok: bool,
        last: Option<Vec<u8>>,
    ) {
        let done = {
            let mut state = self.state();
            let Some(r) = state.requests.remove(&request_id) else {
                return;
            };
            self.shared
                .reservations
                .release(&r.client_owner, r.reserved);
            let elapsed = r.started.elapsed().as_secs_f64();
            self.shared.stats.request_latency.observe(elapsed);
            let outcome = if ok {
                Outcome::Succeeded { secs: elapsed }
            } else {
                Outcome::Failed
            };
            let worker = state.workers.release(r.worker, outcome);
            let total = tokens.total();
            // A request to be answered once keeps its answer with the booking; if it
            // failed, what was delivered is booked under a fresh id, so that the request
            // can be sent again and answered.
            let once = r.kept.is_some();
            let (booking_id, kept_answer) = match r.kept {
                Some(kept) if ok => (request_id, kept.seal(r.client_proto, last.as_deref())),
                Some(_) => (rand::random(), None),
                None => (request_id, None),
            };
            Finished {
                booking: (total > 0).then(|| Booking {
                    request_id: booking_id,
                    client: r.client_owner.to_string(),
                    worker: r.worker_owner.to_string(),
                    tokens: total,
                    kept_answer,
                }),
                once,
                client: r.client.clone(),
                client_proto: r.client_proto,
                client_request_id: r.client_request_id,
                worker,
                proxy_request_id: request_id,
                tokens: total,
                client_sc: r.client_sc.clone(),
                worker_sc: r.worker_sc.clone(),
            }
        };
        let counter = if ok {
            &self.shared.stats.requests_success
        } else {
            &self.shared.stats.requests_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let Some(booking) = done.booking else {
            if done.once {
                self.state().once_claims.remove(&request_id);
            }
            if let Some(last) = last {
                let _ = Send::Client(done.client, last).run().await;
            }
            return;
        };
        let worker_owner = booking.worker.clone();
        let client_owner = booking.client.clone();
        let booked = self.shared.writer.book(booking).await;
        if done.once {
            self.state().once_claims.remove(&request_id);
        }
        let totals = match booked {
            Ok(t) => t,
            Err(error) => {
                // The answer cannot be confirmed without its booking: fail it instead.
                warn!(%error, "booking failed");
                let to = ClientReply {
                    proto: done.client_proto,
                    request_id: done.client_request_id,
                    trace: None,
                };
                let msg = to.error(
                    Piece::Head,
                    Refusal::Failed.code().code(),
                    &Refusal::Failed.message("the proxy could not book the request"),
                    AdjustedTokens::default(),
                );
                let _ = Send::Client(done.client, msg).run().await;
                return;
            }
        };
        if let Some(last) = last {
            let _ = Send::Client(done.client.clone(), last).run().await;
        }
        self.shared
            .stats
            .adjusted_tokens
            .fetch_add(done.tokens, Ordering::Relaxed);
        let by_class = &self.shared.stats.tokens_by_class;
        for (counter, n) in by_class.iter().zip([
            tokens.prompt,
            tokens.cached,
            tokens.completion,
            tokens.reasoning,
        ]) {
            counter.fetch_add(n, Ordering::Relaxed);
        }
        let client_msg = proxy::ClientRequestPayment {
            request_id: done.client_request_id,
            signed_payment: self.voucher_for(
                &client_owner,
                &done.client_sc,
                totals.client_tokens,
                Party::Client,
            ),
            db_tokens: to_i64(totals.client_tokens),
            max_tokens: to_i64(totals.client_tokens),
            request_tokens: to_i64(done.tokens),
        };
        let _ = Send::Client(done.client, cocoon_tl::to_bytes(&client_msg))
            .run()
            .await;
        if let Some(worker) = done.worker {
            let worker_msg = proxy::WorkerRequestPayment {
                request_id: done.proxy_request_id,
                signed_payment: self.voucher_for(
                    &worker_owner,
                    &done.worker_sc,
                    totals.worker_tokens,
                    Party::Worker,
                ),
                db_tokens: to_i64(totals.worker_tokens),
                max_tokens: to_i64(totals.worker_tokens),
                request_tokens: to_i64(done.tokens),
                request_client_owner: client_owner,
            };
            let _ = Send::Worker(worker, cocoon_tl::to_bytes(&worker_msg))
                .run()
                .await;
        }
        debug!(%worker_owner, tokens = done.tokens, "request booked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use tycho_types::cell::HashBytes;

    fn bytes(p: SignedPayment) -> Option<Vec<u8>> {
        match p {
            SignedPayment::SignedPayment(p) => Some(p.data),
            SignedPayment::SignedPaymentEmpty(_) => None,
        }
    }

    #[test]
    fn reservations_add_up_and_release_exactly() {
        let r = Reservations::default();
        assert!(!r.has_running("a"));
        r.reserve("a", 10);
        r.reserve("a", 5);
        r.reserve("b", 1);
        assert_eq!((r.of("a"), r.of("b")), (15, 1));
        r.release("a", 10);
        assert!(r.has_running("a"));
        r.release("a", 5);
        assert!(!r.has_running("a"), "all released");
        // A release beyond the reservation cannot go below zero or touch another client.
        r.release("b", 7);
        r.release("c", 1);
        assert_eq!((r.of("b"), r.of("c")), (0, 0));
    }

    #[test]
    fn the_voucher_cache_signs_once_per_total_and_party() {
        let owner = StdAddr::new(0, HashBytes([1; 32]));
        let cache = VoucherCache::new(ProxyVouchers::new(SigningKey::from_bytes(&[3; 32]), owner));
        let sc = StdAddr::new(0, HashBytes([2; 32]));
        assert_eq!(
            bytes(cache.payment(&sc, 0, Party::Client)),
            None,
            "nothing owed"
        );
        assert!(
            bytes(cache.payment(&sc, 0, Party::Worker)).is_some(),
            "a worker is always sent a signed payment (COCOON's worker needs one)"
        );
        let first = bytes(cache.payment(&sc, 10, Party::Client)).expect("signed");
        // Vouchers carry a time-based query id: equal bytes mean the cache answered.
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(
            bytes(cache.payment(&sc, 10, Party::Client)),
            Some(first.clone())
        );
        let more = bytes(cache.payment(&sc, 11, Party::Client)).expect("signed");
        assert_ne!(more, first, "a new total is signed anew");
        // The same contract and total as a worker payout is another voucher.
        let payout = bytes(cache.payment(&sc, 11, Party::Worker)).expect("signed");
        assert_ne!(payout, more);
        assert_eq!(
            bytes(cache.payment(&sc, 11, Party::Client)),
            Some(more.clone())
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
        cache.clear();
        assert_ne!(
            bytes(cache.payment(&sc, 11, Party::Client)),
            Some(more),
            "cleared"
        );
    }
}
